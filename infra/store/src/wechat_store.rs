//! Postgres implementation of the WeChat gateway's store (migration 0009).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::batcher::{BatchStatement, Batcher, WORKERS_SHORT};
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use wxcm_commands::ports::PortError;
use wxcm_commands::wechat::{
    AccountMode, ClaimOutcome, DeliveryKind, DeliveryResult, ReplyRules, SceneHit, SceneQrCode, StoredMenu,
    StoredMessage, WechatStore,
};
use wxcm_domain::{AppId, MemberId, OpenId, TenantId};

/// Reply rules are read by every callback that may answer; an edit reaches
/// the other nodes within this (this node's own edits at once).
pub const REPLY_RULES_CACHE_TTL_MS: u64 = 2_000;
pub const REPLY_RULES_CACHE_ENTRIES_MAX: usize = 10_000;

type CachedRules = (Instant, Option<(ReplyRules, i64)>);

#[derive(Clone)]
pub struct PgWechatStore {
    pool: PgPool,
    /// `synchronous_commit = off` (`shards::relaxed_pool_for`): callback claims
    /// and their completion. Losing the last of them in a server crash only
    /// makes WeChat's retry handle the callback again, and every command it
    /// runs is keyed by the callback, so nothing happens twice. Events never
    /// go through it.
    relaxed: PgPool,
    reply_rules: Arc<Mutex<HashMap<TenantId, CachedRules>>>,
    /// Completions of concurrent callbacks, written as one UPDATE.
    finishes: Arc<Batcher<FinishCallbacks>>,
    /// Claims of concurrent callbacks, taken in one statement.
    claims: Arc<Batcher<ClaimCallbacks>>,
    referral_lookups: Arc<Batcher<ReferralLookups>>,
}

/// A released claim is backdated this far: stale for any takeover window
/// (`CLAIM_STALE_AFTER_S` is 15 s), yet far inside the claims' retention (48 h).
pub const RELEASED_CLAIM_BACKDATE_S: i64 = 3_600;

/// One finished callback: its claim gets `done_at` and the passive reply.
pub struct CallbackDone {
    appid: String,
    dedup_key: String,
    done_at: DateTime<Utc>,
    reply: Option<String>,
}

pub struct FinishCallbacks {
    relaxed: PgPool,
}

#[async_trait]
impl BatchStatement for FinishCallbacks {
    type Item = CallbackDone;
    type Output = ();

    async fn run(&self, items: &[CallbackDone]) -> Result<Vec<()>, PortError> {
        sqlx::query(
            "UPDATE wechat_callback_claims c SET done_at = f.done_at, reply = f.reply
               FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[]) AS f(appid, dedup_key, done_at, reply)
              WHERE c.appid = f.appid AND c.dedup_key = f.dedup_key",
        )
        .bind(items.iter().map(|i| i.appid.as_str()).collect::<Vec<_>>())
        .bind(items.iter().map(|i| i.dedup_key.as_str()).collect::<Vec<_>>())
        .bind(items.iter().map(|i| i.done_at).collect::<Vec<_>>())
        .bind(items.iter().map(|i| i.reply.as_deref()).collect::<Vec<_>>())
        // Planned for each batch with the table as it is now: a generic plan
        // made while the table was small would keep scanning all of it.
        .persistent(false)
        .execute(&self.relaxed)
        .await
        .map_err(port)?;
        Ok(vec![(); items.len()])
    }
}

/// Who referred `openid`, if it opened a referral link at or after `since`.
pub struct ReferralLookup {
    tenant: String,
    openid: String,
    since: DateTime<Utc>,
}

/// Referral lookups of concurrent subscribes, in one statement.
pub struct ReferralLookups {
    pool: PgPool,
}

#[async_trait]
impl BatchStatement for ReferralLookups {
    type Item = ReferralLookup;
    /// The referrer's member id as stored.
    type Output = Option<String>;

    async fn run(&self, items: &[ReferralLookup]) -> Result<Vec<Option<String>>, PortError> {
        let rows: Vec<(i64, String)> = sqlx::query_as(
            // A fenced LATERAL probe per item, as the cold loads: a generic plan
            // made while the table was small must not become a scan of it.
            "SELECT i.ord, v.referrer_id
               FROM unnest($1::text[], $2::text[], $3::timestamptz[]) WITH ORDINALITY AS i(tenant_id, openid, since, ord)
              CROSS JOIN LATERAL (
                  SELECT referrer_id FROM referral_visits
                   WHERE tenant_id = i.tenant_id AND openid = i.openid AND visited_at >= i.since
                  OFFSET 0
              ) v",
        )
        .bind(items.iter().map(|i| i.tenant.as_str()).collect::<Vec<_>>())
        .bind(items.iter().map(|i| i.openid.as_str()).collect::<Vec<_>>())
        .bind(items.iter().map(|i| i.since).collect::<Vec<_>>())
        .fetch_all(&self.pool)
        .await
        .map_err(port)?;
        let mut referrers = vec![None; items.len()];
        for (ord, referrer) in rows {
            if let Some(slot) = usize::try_from(ord - 1).ok().and_then(|i| referrers.get_mut(i)) {
                *slot = Some(referrer);
            }
        }
        Ok(referrers)
    }
}

/// A callback to claim; its message is stored if the claim is new.
pub struct NewClaim {
    message: StoredMessage,
    dedup_key: String,
}

pub struct ClaimCallbacks {
    relaxed: PgPool,
}

#[async_trait]
impl BatchStatement for ClaimCallbacks {
    type Item = NewClaim;
    /// Whether this item took the claim.
    type Output = bool;

    async fn run(&self, items: &[NewClaim]) -> Result<Vec<bool>, PortError> {
        // A key twice in one batch: the first item claims; the second then
        // finds that claim in progress, as it would one statement later.
        let mut first = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            first.entry((item.message.appid.as_str(), item.dedup_key.as_str())).or_insert(i);
        }
        let mut distinct: Vec<&NewClaim> = first.values().map(|&i| &items[i]).collect();
        // One insertion order in every batch: concurrent batches wait, never deadlock.
        distinct
            .sort_by(|a, b| (a.message.appid.as_str(), &a.dedup_key).cmp(&(b.message.appid.as_str(), &b.dedup_key)));
        let claimed: Vec<(String, String)> = sqlx::query_as(
            "WITH input AS (
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::text[],
                                      $7::text[], $8::text[], $9::timestamptz[], $10::jsonb[]) WITH ORDINALITY
                     AS i(appid, dedup_key, tenant_id, claimed_at, openid, msg_type, event, event_key, sent_at, fields, ord)
             ), claimed AS (
                 INSERT INTO wechat_callback_claims (appid, dedup_key, tenant_id, claimed_at)
                 SELECT appid, dedup_key, tenant_id, claimed_at FROM input ORDER BY ord
                 ON CONFLICT DO NOTHING
                 RETURNING appid, dedup_key
             ), stored AS (
                 INSERT INTO wechat_messages (tenant_id, appid, openid, msg_type, event, event_key, sent_at, received_at, fields)
                 SELECT i.tenant_id, i.appid, i.openid, i.msg_type, i.event, i.event_key, i.sent_at, i.claimed_at, i.fields
                   FROM input i JOIN claimed c ON c.appid = i.appid AND c.dedup_key = i.dedup_key
             )
             SELECT appid, dedup_key FROM claimed",
        )
        .bind(distinct.iter().map(|c| c.message.appid.as_str()).collect::<Vec<_>>())
        .bind(distinct.iter().map(|c| c.dedup_key.as_str()).collect::<Vec<_>>())
        .bind(distinct.iter().map(|c| c.message.tenant.as_str()).collect::<Vec<_>>())
        .bind(distinct.iter().map(|c| c.message.received_at).collect::<Vec<_>>())
        .bind(distinct.iter().map(|c| c.message.openid.as_str()).collect::<Vec<_>>())
        .bind(distinct.iter().map(|c| c.message.msg_type.as_str()).collect::<Vec<_>>())
        .bind(distinct.iter().map(|c| c.message.event.as_deref()).collect::<Vec<_>>())
        .bind(distinct.iter().map(|c| c.message.event_key.as_deref()).collect::<Vec<_>>())
        .bind(distinct.iter().map(|c| c.message.sent_at).collect::<Vec<_>>())
        .bind(distinct.iter().map(|c| &c.message.fields).collect::<Vec<_>>())
        .fetch_all(&self.relaxed)
        .await
        .map_err(port)?;
        let claimed: std::collections::HashSet<(String, String)> = claimed.into_iter().collect();
        Ok(items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let key = (item.message.appid.as_str(), item.dedup_key.as_str());
                first.get(&key) == Some(&i) && claimed.contains(&(key.0.to_owned(), key.1.to_owned()))
            })
            .collect())
    }
}

impl PgWechatStore {
    pub fn new(pool: PgPool, relaxed: PgPool) -> Self {
        let finishes = Arc::new(Batcher::new(FinishCallbacks { relaxed: relaxed.clone() }, WORKERS_SHORT));
        let claims = Arc::new(Batcher::new(ClaimCallbacks { relaxed: relaxed.clone() }, WORKERS_SHORT));
        let referral_lookups = Arc::new(Batcher::new(ReferralLookups { pool: pool.clone() }, WORKERS_SHORT));
        Self { pool, relaxed, reply_rules: Arc::default(), finishes, claims, referral_lookups }
    }

    fn cached_rules(&self, tenant: &TenantId) -> Option<Option<(ReplyRules, i64)>> {
        let ttl = Duration::from_millis(REPLY_RULES_CACHE_TTL_MS);
        let cache = self.reply_rules.lock().ok()?;
        cache.get(tenant).filter(|(at, _)| at.elapsed() < ttl).map(|(_, rules)| rules.clone())
    }

    fn remember_rules(&self, tenant: &TenantId, rules: Option<(ReplyRules, i64)>) {
        if let Ok(mut cache) = self.reply_rules.lock() {
            if cache.len() >= REPLY_RULES_CACHE_ENTRIES_MAX {
                cache.clear();
            }
            cache.insert(tenant.clone(), (Instant::now(), rules));
        }
    }

    fn forget_rules(&self, tenant: &TenantId) {
        if let Ok(mut cache) = self.reply_rules.lock() {
            cache.remove(tenant);
        }
    }
}

fn port(e: sqlx::Error) -> PortError {
    PortError::new(e)
}

fn tenant_of(text: String) -> Result<TenantId, PortError> {
    TenantId::parse(&text).map_err(|e| PortError::msg(format!("stored tenant id {text:?}: {e}")))
}

type SceneRow = (
    String,
    String,
    String,
    Option<String>,
    bool,
    Option<String>,
    Option<String>,
    Option<DateTime<Utc>>,
    DateTime<Utc>,
    i64,
    i64,
);

#[async_trait]
impl WechatStore for PgWechatStore {
    async fn account_tenant(&self, appid: &AppId) -> Result<Option<(TenantId, AccountMode)>, PortError> {
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT tenant_id, mode FROM official_account_directory WHERE appid = $1")
                .bind(appid.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(port)?;
        row.map(|(tenant, mode)| {
            let mode = if mode == "component" { AccountMode::Component } else { AccountMode::Direct };
            Ok((tenant_of(tenant)?, mode))
        })
        .transpose()
    }

    async fn claim_appid(
        &self,
        appid: &AppId,
        tenant: &TenantId,
    ) -> Result<Option<(TenantId, chrono::DateTime<chrono::Utc>)>, PortError> {
        // Inserted, or already this tenant's: nothing returned but our own row.
        let row: (String, chrono::DateTime<chrono::Utc>) = sqlx::query_as(
            "INSERT INTO appid_claims AS c (appid, tenant_id) VALUES ($1, $2)
             ON CONFLICT (appid) DO UPDATE SET tenant_id = c.tenant_id
             RETURNING tenant_id, claimed_at",
        )
        .bind(appid.as_str())
        .bind(tenant.as_str())
        .fetch_one(&self.pool)
        .await
        .map_err(port)?;
        if row.0 == tenant.as_str() {
            return Ok(None);
        }
        Ok(Some((tenant_of(row.0)?, row.1)))
    }

    async fn take_over_appid(&self, appid: &AppId, holder: &TenantId, tenant: &TenantId) -> Result<bool, PortError> {
        let done = sqlx::query(
            "UPDATE appid_claims SET tenant_id = $3, claimed_at = now() WHERE appid = $1 AND tenant_id = $2",
        )
        .bind(appid.as_str())
        .bind(holder.as_str())
        .bind(tenant.as_str())
        .execute(&self.pool)
        .await
        .map_err(port)?;
        Ok(done.rows_affected() == 1)
    }

    async fn release_appid(&self, appid: &AppId, tenant: &TenantId) -> Result<(), PortError> {
        sqlx::query("DELETE FROM appid_claims WHERE appid = $1 AND tenant_id = $2")
            .bind(appid.as_str())
            .bind(tenant.as_str())
            .execute(&self.pool)
            .await
            .map_err(port)?;
        Ok(())
    }

    async fn claim_callback(
        &self,
        message: &StoredMessage,
        dedup_key: &str,
        stale_after: chrono::Duration,
    ) -> Result<ClaimOutcome, PortError> {
        let (appid, now) = (&message.appid, message.received_at);
        // One statement (shared with concurrent callbacks): the message is
        // stored exactly when the claim is new.
        let new_claim = NewClaim { message: message.clone(), dedup_key: dedup_key.to_owned() };
        if self.claims.submit(new_claim).await? {
            return Ok(ClaimOutcome::Claimed);
        }
        let row: Option<(DateTime<Utc>, Option<DateTime<Utc>>, Option<String>)> = sqlx::query_as(
            "SELECT claimed_at, done_at, reply FROM wechat_callback_claims WHERE appid = $1 AND dedup_key = $2",
        )
        .bind(appid.as_str())
        .bind(dedup_key)
        .fetch_optional(&self.relaxed)
        .await
        .map_err(port)?;
        let Some((claimed_at, done_at, reply)) = row else {
            // Pruned between the two statements: treat as handled long ago.
            return Ok(ClaimOutcome::Done { reply: None });
        };
        if done_at.is_some() {
            return Ok(ClaimOutcome::Done { reply });
        }
        if now - claimed_at < stale_after {
            return Ok(ClaimOutcome::InProgress);
        }
        // Take over a dead handler's claim; compare-and-set so only one retry wins.
        let taken = sqlx::query(
            "UPDATE wechat_callback_claims SET claimed_at = $3
              WHERE appid = $1 AND dedup_key = $2 AND claimed_at = $4 AND done_at IS NULL",
        )
        .bind(appid.as_str())
        .bind(dedup_key)
        .bind(now)
        .bind(claimed_at)
        .execute(&self.relaxed)
        .await
        .map_err(port)?
        .rows_affected();
        Ok(if taken == 1 { ClaimOutcome::Claimed } else { ClaimOutcome::InProgress })
    }

    async fn finish_callback(
        &self,
        appid: &AppId,
        dedup_key: &str,
        reply: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), PortError> {
        let done = CallbackDone {
            appid: appid.as_str().to_owned(),
            dedup_key: dedup_key.to_owned(),
            done_at: now,
            reply: reply.map(str::to_owned),
        };
        self.finishes.submit(done).await
    }

    async fn release_callback(&self, appid: &AppId, dedup_key: &str) -> Result<(), PortError> {
        // Backdated, not deleted: the next try takes the claim over as a dead
        // handler's, without storing the message a second time.
        sqlx::query(
            "UPDATE wechat_callback_claims SET claimed_at = claimed_at - make_interval(secs => $3)
              WHERE appid = $1 AND dedup_key = $2 AND done_at IS NULL",
        )
        .bind(appid.as_str())
        .bind(dedup_key)
        .bind(RELEASED_CLAIM_BACKDATE_S as f64)
        .execute(&self.relaxed)
        .await
        .map_err(port)?;
        Ok(())
    }

    async fn prune_callbacks(&self, before: DateTime<Utc>) -> Result<u64, PortError> {
        Ok(sqlx::query("DELETE FROM wechat_callback_claims WHERE claimed_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await
            .map_err(port)?
            .rows_affected())
    }

    async fn record_message(&self, m: &StoredMessage) -> Result<(), PortError> {
        sqlx::query(
            "INSERT INTO wechat_messages (tenant_id, appid, openid, msg_type, event, event_key, sent_at, received_at, fields)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(m.tenant.as_str())
        .bind(m.appid.as_str())
        .bind(m.openid.as_str())
        .bind(&m.msg_type)
        .bind(&m.event)
        .bind(&m.event_key)
        .bind(m.sent_at)
        .bind(m.received_at)
        .bind(&m.fields)
        .execute(&self.pool)
        .await
        .map_err(port)?;
        Ok(())
    }

    async fn prune_messages(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, PortError> {
        // Bounded batches: one prune never holds locks on a large part of the table.
        Ok(sqlx::query(
            "DELETE FROM wechat_messages WHERE id IN
                (SELECT id FROM wechat_messages WHERE received_at < $1 ORDER BY id LIMIT $2)",
        )
        .bind(before)
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await
        .map_err(port)?
        .rows_affected())
    }

    async fn reply_rules(&self, tenant: &TenantId) -> Result<Option<(ReplyRules, i64)>, PortError> {
        if let Some(hit) = self.cached_rules(tenant) {
            return Ok(hit);
        }
        let row: Option<(serde_json::Value, i64)> =
            sqlx::query_as("SELECT rules, revision FROM wechat_reply_rules WHERE tenant_id = $1")
                .bind(tenant.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(port)?;
        let rules = row
            .map(|(rules, revision)| {
                let rules: ReplyRules =
                    serde_json::from_value(rules).map_err(|e| PortError::msg(format!("stored reply rules: {e}")))?;
                Ok::<_, PortError>((rules, revision))
            })
            .transpose()?;
        self.remember_rules(tenant, rules.clone());
        Ok(rules)
    }

    async fn save_reply_rules(
        &self,
        tenant: &TenantId,
        rules: &ReplyRules,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<i64, PortError> {
        let json = serde_json::to_value(rules).map_err(PortError::new)?;
        let (revision,): (i64,) = sqlx::query_as(
            "INSERT INTO wechat_reply_rules (tenant_id, rules, revision, updated_at, updated_by)
             VALUES ($1, $2, 1, $3, $4)
             ON CONFLICT (tenant_id) DO UPDATE
                SET rules = EXCLUDED.rules, revision = wechat_reply_rules.revision + 1,
                    updated_at = EXCLUDED.updated_at, updated_by = EXCLUDED.updated_by
             RETURNING revision",
        )
        .bind(tenant.as_str())
        .bind(json)
        .bind(now)
        .bind(actor)
        .fetch_one(&self.pool)
        .await
        .map_err(port)?;
        self.forget_rules(tenant);
        Ok(revision)
    }

    async fn save_scene(&self, qr: &SceneQrCode) -> Result<(), PortError> {
        sqlx::query(
            "INSERT INTO wechat_scene_qrcodes
                 (tenant_id, appid, scene, name, permanent, ticket, url, expires_at, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (tenant_id, appid, scene) DO UPDATE
                SET name = EXCLUDED.name, permanent = EXCLUDED.permanent, ticket = EXCLUDED.ticket,
                    url = EXCLUDED.url, expires_at = EXCLUDED.expires_at",
        )
        .bind(qr.tenant.as_str())
        .bind(qr.appid.as_str())
        .bind(&qr.scene)
        .bind(&qr.name)
        .bind(qr.permanent)
        .bind(&qr.ticket)
        .bind(&qr.url)
        .bind(qr.expires_at)
        .bind(qr.created_at)
        .execute(&self.pool)
        .await
        .map_err(port)?;
        Ok(())
    }

    async fn list_scenes(&self, tenant: &TenantId, limit: u32) -> Result<Vec<SceneQrCode>, PortError> {
        let rows: Vec<SceneRow> = sqlx::query_as(
            "SELECT tenant_id, appid, scene, name, permanent, ticket, url, expires_at, created_at, landings, follows
               FROM wechat_scene_qrcodes WHERE tenant_id = $1 ORDER BY created_at DESC, scene LIMIT $2",
        )
        .bind(tenant.as_str())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(port)?;
        rows.into_iter()
            .map(|(t, appid, scene, name, permanent, ticket, url, expires_at, created_at, landings, follows)| {
                Ok(SceneQrCode {
                    tenant: tenant_of(t)?,
                    appid: AppId::parse(&appid).map_err(|e| PortError::msg(format!("stored appid: {e}")))?,
                    scene,
                    name,
                    permanent,
                    ticket,
                    url,
                    expires_at,
                    created_at,
                    landings,
                    follows,
                })
            })
            .collect()
    }

    async fn count_scene(
        &self,
        tenant: &TenantId,
        appid: &AppId,
        scene: &str,
        hit: SceneHit,
        now: DateTime<Utc>,
    ) -> Result<(), PortError> {
        let follows = i64::from(hit == SceneHit::Follow);
        // Codes made outside wxcm still get counted, under a row without a ticket.
        sqlx::query(
            "INSERT INTO wechat_scene_qrcodes (tenant_id, appid, scene, created_at, landings, follows)
             VALUES ($1, $2, $3, $4, 1, $5)
             ON CONFLICT (tenant_id, appid, scene) DO UPDATE
                SET landings = wechat_scene_qrcodes.landings + 1,
                    follows = wechat_scene_qrcodes.follows + EXCLUDED.follows",
        )
        .bind(tenant.as_str())
        .bind(appid.as_str())
        .bind(scene)
        .bind(now)
        .bind(follows)
        .execute(&self.pool)
        .await
        .map_err(port)?;
        Ok(())
    }

    async fn record_referral_visit(
        &self,
        tenant: &TenantId,
        openid: &OpenId,
        referrer: MemberId,
        at: DateTime<Utc>,
    ) -> Result<(), PortError> {
        sqlx::query(
            "INSERT INTO referral_visits (tenant_id, openid, referrer_id, visited_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (tenant_id, openid) DO UPDATE
                SET referrer_id = EXCLUDED.referrer_id, visited_at = EXCLUDED.visited_at",
        )
        .bind(tenant.as_str())
        .bind(openid.as_str())
        .bind(referrer.to_string())
        .bind(at)
        .execute(&self.pool)
        .await
        .map_err(port)?;
        Ok(())
    }

    async fn referral_visit(
        &self,
        tenant: &TenantId,
        openid: &OpenId,
        since: DateTime<Utc>,
    ) -> Result<Option<MemberId>, PortError> {
        let visit = ReferralLookup { tenant: tenant.as_str().to_owned(), openid: openid.as_str().to_owned(), since };
        let referrer = self.referral_lookups.submit(visit).await?;
        referrer
            .map(|id| MemberId::parse(&id).map_err(|e| PortError::msg(format!("stored referrer id: {e}"))))
            .transpose()
    }

    async fn record_delivery(&self, r: &DeliveryResult) -> Result<(), PortError> {
        let kind = match r.kind {
            DeliveryKind::Template => "template",
            DeliveryKind::Mass => "mass",
        };
        sqlx::query(
            "INSERT INTO wechat_delivery_results (tenant_id, appid, kind, msg_id, openid, status, counts, received_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (appid, kind, msg_id, openid) DO UPDATE
                SET status = EXCLUDED.status, counts = EXCLUDED.counts, received_at = EXCLUDED.received_at",
        )
        .bind(r.tenant.as_str())
        .bind(r.appid.as_str())
        .bind(kind)
        // WeChat's ids are 64-bit unsigned; the column keeps the same bits.
        .bind(r.msg_id as i64)
        .bind(r.openid.as_str())
        .bind(&r.status)
        .bind(&r.counts)
        .bind(r.received_at)
        .execute(&self.pool)
        .await
        .map_err(port)?;
        Ok(())
    }

    async fn save_menu(
        &self,
        tenant: &TenantId,
        appid: &AppId,
        menu: &serde_json::Value,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<(), PortError> {
        sqlx::query(
            "INSERT INTO wechat_menus (tenant_id, appid, menu, updated_at, updated_by) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (tenant_id, appid) DO UPDATE
                SET menu = EXCLUDED.menu, updated_at = EXCLUDED.updated_at, updated_by = EXCLUDED.updated_by",
        )
        .bind(tenant.as_str())
        .bind(appid.as_str())
        .bind(menu)
        .bind(now)
        .bind(actor)
        .execute(&self.pool)
        .await
        .map_err(port)?;
        Ok(())
    }

    async fn menu(&self, tenant: &TenantId, appid: &AppId) -> Result<Option<StoredMenu>, PortError> {
        let row: Option<(serde_json::Value, DateTime<Utc>, String, Option<DateTime<Utc>>)> = sqlx::query_as(
            "SELECT menu, updated_at, updated_by, published_at FROM wechat_menus WHERE tenant_id = $1 AND appid = $2",
        )
        .bind(tenant.as_str())
        .bind(appid.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(port)?;
        Ok(row.map(|(menu, updated_at, updated_by, published_at)| StoredMenu {
            menu,
            updated_at,
            updated_by,
            published_at,
        }))
    }

    async fn mark_menu_published(&self, tenant: &TenantId, appid: &AppId, at: DateTime<Utc>) -> Result<(), PortError> {
        sqlx::query("UPDATE wechat_menus SET published_at = $3 WHERE tenant_id = $1 AND appid = $2")
            .bind(tenant.as_str())
            .bind(appid.as_str())
            .bind(at)
            .execute(&self.pool)
            .await
            .map_err(port)?;
        Ok(())
    }

    async fn save_auth_request(
        &self,
        pre_auth_code: &str,
        tenant: &TenantId,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<(), PortError> {
        // Expired requests go as new ones come, so the table stays small.
        sqlx::query("DELETE FROM component_auth_requests WHERE expires_at < $1")
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(port)?;
        sqlx::query(
            "INSERT INTO component_auth_requests (pre_auth_code, tenant_id, created_at, expires_at)
             VALUES ($1, $2, $3, $4) ON CONFLICT (pre_auth_code) DO NOTHING",
        )
        .bind(pre_auth_code)
        .bind(tenant.as_str())
        .bind(now)
        .bind(expires_at)
        .execute(&self.pool)
        .await
        .map_err(port)?;
        Ok(())
    }

    async fn auth_request_tenant(
        &self,
        pre_auth_code: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<TenantId>, PortError> {
        let row: Option<(String,)> = sqlx::query_as(
            "SELECT tenant_id FROM component_auth_requests WHERE pre_auth_code = $1 AND expires_at >= $2",
        )
        .bind(pre_auth_code)
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(port)?;
        row.map(|(t,)| tenant_of(t)).transpose()
    }
}
