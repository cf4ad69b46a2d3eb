//! WeChat Pay flows: what a verified notification, a query answer or an
//! expired order does to a payment order and to the member's balance.
//!
//! Exactly once: `MarkPaid` is idempotent by state (the same transaction
//! again writes nothing); the credit runs with an idempotency key derived
//! from the order id alone, so however many notifications, queries and
//! scheduler passes ask for it, the ledger credits once. The credit is also
//! durable: migration 0011 writes a `payment_credit` due_work row in the same
//! transaction as `PaymentOrderPaid`, so when the process dies between the
//! two the scheduler finishes it ([`credit_paid_order`]). Refunds work the
//! same way (`payment_reversal`).
//!
//! Code map: `recharge` (start a recharge), `notifications` (apply what Pay
//! says), `reconcile` (ask Pay), `orders` (read orders), `member_sessions`
//! (OAuth → member session), `platform_keys`; this file holds the errors, the
//! `PayStore` port and what they share.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use wxcm_domain::member::Provenance;
use wxcm_domain::payment::{PaidVia, PaymentOrder, PaymentStatus};
use wxcm_domain::{Actor, AppId, EventSourced, IdempotencyKey, MemberId, OpenId, OutTradeNo, Reference, TenantId};

use crate::executor::CommandContext;
use crate::members::MemberOpError;
use crate::payments::PaymentOpError;
use crate::ports::{App, PortError};

mod member_sessions;
mod notifications;
mod orders;
mod platform_keys;
mod recharge;
mod reconcile;
#[cfg(test)]
mod tests;

pub use member_sessions::*;
pub use notifications::*;
pub use orders::*;
pub use platform_keys::*;
pub use recharge::*;
pub use reconcile::*;

/// How long a recharge order can be paid.
pub const RECHARGE_EXPIRY_MINUTES: i64 = 15;
/// Notifications shown per order.
pub const NOTIFICATIONS_PER_ORDER_MAX: u32 = 100;
/// Orders per page of a listing.
pub const ORDERS_PAGE_MAX: u32 = 200;
/// Orders one reconciliation run looks at.
pub const RECONCILE_ORDERS_MAX: u32 = 10_000;
pub(super) const JOB: &str = "payments";

#[derive(Debug, thiserror::Error)]
pub enum PayFlowError {
    /// The input can never be applied (mismatch, unknown order): retrying does not help.
    #[error("refused: {0}")]
    Refused(String),
    /// Something on our side or at Pay failed; the same input may succeed later.
    #[error("temporarily failed: {0}")]
    Retry(String),
    /// The idempotency key was used with another request: nothing was done (permanent).
    #[error("idempotency key was already used with a different request")]
    KeyReused,
    /// No tenant has bound this official account (permanent).
    #[error("unknown official account: {0}")]
    UnknownAccount(String),
    /// WeChat refused the OAuth code (used, expired or never issued): the member signs in again.
    #[error("oauth code refused: {0}")]
    CodeRefused(String),
}

impl PayFlowError {
    pub fn is_permanent(&self) -> bool {
        !matches!(self, PayFlowError::Retry(_))
    }
}

impl From<PaymentOpError> for PayFlowError {
    fn from(e: PaymentOpError) -> Self {
        match e {
            PaymentOpError::IdempotencyMismatch => PayFlowError::KeyReused,
            PaymentOpError::NotFound | PaymentOpError::Rejected(_) | PaymentOpError::Invalid(_) => {
                PayFlowError::Refused(e.to_string())
            }
            PaymentOpError::Contention
            | PaymentOpError::Route(_)
            | PaymentOpError::Infra(_)
            | PaymentOpError::Unavailable(_) => PayFlowError::Retry(e.to_string()),
        }
    }
}

impl From<MemberOpError> for PayFlowError {
    fn from(e: MemberOpError) -> Self {
        match e {
            MemberOpError::IdempotencyMismatch => PayFlowError::KeyReused,
            MemberOpError::NotFound | MemberOpError::Rejected(_) => PayFlowError::Refused(e.to_string()),
            other => PayFlowError::Retry(other.to_string()),
        }
    }
}

impl From<PortError> for PayFlowError {
    fn from(e: PortError) -> Self {
        PayFlowError::Retry(e.to_string())
    }
}

/// Where a notification came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyChannel {
    V2,
    V3,
    RefundV2,
}

impl NotifyChannel {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyChannel::V2 => "v2",
            NotifyChannel::V3 => "v3",
            NotifyChannel::RefundV2 => "refund_v2",
        }
    }
}

/// One received notification, verified or not, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NotificationRecord {
    pub appid: String,
    pub tenant_id: Option<String>,
    pub order_id: Option<String>,
    pub channel: NotifyChannel,
    pub verified: bool,
    /// `applied`, `duplicate`, `refused`, `retry`.
    pub outcome: String,
    pub detail: String,
    /// Decoded, non-secret fields (transaction id, totals, event type).
    pub summary: serde_json::Value,
    pub received_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSession {
    pub tenant_id: TenantId,
    pub member_id: MemberId,
    pub appid: AppId,
    pub openid: OpenId,
    pub expires_at: DateTime<Utc>,
}

/// The payment tables of a shard (migration 0011).
#[async_trait]
pub trait PayStore: Send + Sync {
    async fn record_notification(&self, record: &NotificationRecord) -> Result<(), PortError>;
    /// Newest first, at most `limit`.
    async fn notifications(
        &self,
        tenant: &TenantId,
        order_id: &str,
        limit: u32,
    ) -> Result<Vec<NotificationRecord>, PortError>;
    /// The PEM public key of the platform certificate `serial` of merchant `mch_id`.
    /// The tenant's registered platform key `serial` of merchant `mch_id`.
    async fn platform_key(&self, tenant: &TenantId, mch_id: &str, serial: &str) -> Result<Option<String>, PortError>;
    async fn put_platform_key(
        &self,
        tenant: &TenantId,
        mch_id: &str,
        serial: &str,
        public_key_pem: &str,
    ) -> Result<(), PortError>;
    /// Order ids of a tenant by id, optionally in one status, after `after`.
    async fn order_ids(
        &self,
        tenant: &TenantId,
        status: Option<PaymentStatus>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, PortError>;
    async fn create_member_session(&self, token_hash: &[u8], session: &MemberSession) -> Result<(), PortError>;
    async fn find_member_session(&self, token_hash: &[u8]) -> Result<Option<MemberSession>, PortError>;
}

/// What a verified notification or a query says about a payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PaidReport {
    pub transaction_id: String,
    pub total_fen: i64,
    pub appid: String,
    pub mch_id: String,
    pub paid_at: DateTime<Utc>,
    #[serde(skip)]
    pub via: PaidVia,
    #[serde(skip)]
    pub notification_id: Option<String>,
}

/// A successful refund as Pay reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefundReport {
    pub out_refund_no: String,
    pub refund_id: String,
    pub refund_fen: i64,
    /// The order total as Pay reports it; must equal the order's.
    pub total_fen: i64,
    pub mch_id: String,
    pub succeeded_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Applied {
    /// This call changed the order or the balance.
    Applied,
    /// Everything it asks for was already done.
    AlreadyApplied,
}

pub(super) fn bad(what: &str, e: impl std::fmt::Display) -> PayFlowError {
    PayFlowError::Refused(format!("{what}: {e}"))
}

pub(super) fn infra(e: MemberOpError) -> PayFlowError {
    PayFlowError::Retry(e.to_string())
}

pub(super) fn system_ctx(tenant: &TenantId, key: IdempotencyKey) -> CommandContext {
    CommandContext::new(tenant.clone(), key, format!("system:{JOB}"))
}

pub(super) fn provenance(reason: &str, reference: &str, key: &IdempotencyKey) -> Result<Provenance, PayFlowError> {
    Ok(Provenance {
        actor: Actor::System { job: JOB.into() },
        reason: Reference::parse(reason).map_err(|e| bad("reason", e))?,
        reference: Some(Reference::parse(reference).map_err(|e| bad("reference", e))?),
        idempotency_key: key.clone(),
    })
}

pub(super) async fn load_order(
    app: &App,
    tenant: &TenantId,
    order_id: &OutTradeNo,
) -> Result<PaymentOrder, PayFlowError> {
    let shard = app.router.route(tenant).map_err(|e| PayFlowError::Retry(e.to_string()))?;
    let (state, _) = shard.payments.load(tenant, order_id.as_str()).await?;
    if state.tenant() != Some(tenant) {
        return Err(PayFlowError::Refused(format!("order {order_id} not found in this tenant")));
    }
    Ok(state)
}
