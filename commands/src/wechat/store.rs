//! What the WeChat gateway keeps outside the event store, per shard.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use wxcm_domain::{AppId, MemberId, OpenId, TenantId};

use super::rules::ReplyRules;
use crate::ports::PortError;

/// Scene QR codes listed per page.
pub const SCENES_PAGE_MAX: u32 = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountMode {
    Direct,
    Component,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// This node handles the callback.
    Claimed,
    /// Another node is handling it right now.
    InProgress,
    /// Already handled; the passive reply it produced (plaintext), if any.
    Done { reply: Option<String> },
}

#[derive(Debug, Clone)]
pub struct StoredMessage {
    pub tenant: TenantId,
    pub appid: AppId,
    pub openid: OpenId,
    pub msg_type: String,
    pub event: Option<String>,
    pub event_key: Option<String>,
    pub sent_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    /// Every field of the message as received (bounded by the XML limits).
    pub fields: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SceneQrCode {
    pub tenant: TenantId,
    pub appid: AppId,
    pub scene: String,
    pub name: Option<String>,
    pub permanent: bool,
    pub ticket: Option<String>,
    pub url: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub landings: i64,
    pub follows: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SceneHit {
    /// A follower scanned the code (SCAN).
    Landing,
    /// Someone followed through the code (counts as a landing too).
    Follow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryKind {
    Template,
    Mass,
}

#[derive(Debug, Clone)]
pub struct DeliveryResult {
    pub tenant: TenantId,
    pub appid: AppId,
    pub kind: DeliveryKind,
    pub msg_id: u64,
    pub openid: OpenId,
    pub status: String,
    pub counts: Option<serde_json::Value>,
    pub received_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMenu {
    pub menu: serde_json::Value,
    pub updated_at: DateTime<Utc>,
    pub updated_by: String,
    pub published_at: Option<DateTime<Utc>>,
}

#[async_trait]
pub trait WechatStore: Send + Sync {
    /// The tenant an appid is bound to on this shard.
    async fn account_tenant(&self, appid: &AppId) -> Result<Option<(TenantId, AccountMode)>, PortError>;

    /// On the registry shard: claims `appid` for `tenant` across the cluster
    /// (one row per appid, the primary key decides concurrent claims). `None`
    /// when the claim is `tenant`'s; else the holder and when it claimed.
    async fn claim_appid(
        &self,
        appid: &AppId,
        tenant: &TenantId,
    ) -> Result<Option<(TenantId, chrono::DateTime<chrono::Utc>)>, PortError>;
    /// Takes over a stale claim of `holder` (only if it is still `holder`'s).
    async fn take_over_appid(&self, appid: &AppId, holder: &TenantId, tenant: &TenantId) -> Result<bool, PortError>;
    /// Releases `tenant`'s claim of `appid`, if it holds one.
    async fn release_appid(&self, appid: &AppId, tenant: &TenantId) -> Result<(), PortError>;

    /// Claims a callback for handling; a claim not done after `stale_after`
    /// (its handler died) is taken over. A new claim stores `message` in the
    /// same statement (the callback's history, once per claim).
    async fn claim_callback(
        &self,
        message: &StoredMessage,
        dedup_key: &str,
        stale_after: chrono::Duration,
    ) -> Result<ClaimOutcome, PortError>;
    async fn finish_callback(
        &self,
        appid: &AppId,
        dedup_key: &str,
        reply: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), PortError>;
    /// Gives an unfinished claim up so that WeChat's next try handles the
    /// callback (taking the claim over; its message is not stored again).
    async fn release_callback(&self, appid: &AppId, dedup_key: &str) -> Result<(), PortError>;
    /// Deletes claims older than `before`; returns how many.
    async fn prune_callbacks(&self, before: DateTime<Utc>) -> Result<u64, PortError>;

    async fn record_message(&self, message: &StoredMessage) -> Result<(), PortError>;
    /// Deletes stored messages received before `before`, at most `limit` of them; returns how many.
    async fn prune_messages(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, PortError>;

    async fn reply_rules(&self, tenant: &TenantId) -> Result<Option<(ReplyRules, i64)>, PortError>;
    /// Replaces the rules; returns the new revision.
    async fn save_reply_rules(
        &self,
        tenant: &TenantId,
        rules: &ReplyRules,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<i64, PortError>;

    async fn save_scene(&self, qr: &SceneQrCode) -> Result<(), PortError>;
    async fn list_scenes(&self, tenant: &TenantId, limit: u32) -> Result<Vec<SceneQrCode>, PortError>;
    async fn count_scene(
        &self,
        tenant: &TenantId,
        appid: &AppId,
        scene: &str,
        hit: SceneHit,
        now: DateTime<Utc>,
    ) -> Result<(), PortError>;

    async fn record_referral_visit(
        &self,
        tenant: &TenantId,
        openid: &OpenId,
        referrer: MemberId,
        at: DateTime<Utc>,
    ) -> Result<(), PortError>;
    /// The referrer of the last referral link `openid` opened at or after `since`.
    async fn referral_visit(
        &self,
        tenant: &TenantId,
        openid: &OpenId,
        since: DateTime<Utc>,
    ) -> Result<Option<MemberId>, PortError>;

    async fn record_delivery(&self, result: &DeliveryResult) -> Result<(), PortError>;

    async fn save_menu(
        &self,
        tenant: &TenantId,
        appid: &AppId,
        menu: &serde_json::Value,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<(), PortError>;
    async fn menu(&self, tenant: &TenantId, appid: &AppId) -> Result<Option<StoredMenu>, PortError>;
    async fn mark_menu_published(&self, tenant: &TenantId, appid: &AppId, at: DateTime<Utc>) -> Result<(), PortError>;

    async fn save_auth_request(
        &self,
        pre_auth_code: &str,
        tenant: &TenantId,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<(), PortError>;
    /// The tenant that started the authorization, if the code is known and not expired.
    async fn auth_request_tenant(&self, pre_auth_code: &str, now: DateTime<Utc>)
        -> Result<Option<TenantId>, PortError>;
}
