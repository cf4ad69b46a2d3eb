//! Postgres implementation of the payment tables (migration 0011).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use wxcm_commands::pay_flows::{MemberSession, NotificationRecord, NotifyChannel, PayStore};
use wxcm_commands::ports::PortError;
use wxcm_domain::payment::PaymentStatus;
use wxcm_domain::{AppId, MemberId, OpenId, TenantId};

#[derive(Clone)]
pub struct PgPayStore {
    pool: PgPool,
}

impl PgPayStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

fn port(e: sqlx::Error) -> PortError {
    PortError::new(e)
}

fn status_text(s: PaymentStatus) -> &'static str {
    match s {
        PaymentStatus::Created => "created",
        PaymentStatus::Paid => "paid",
        PaymentStatus::Closed => "closed",
    }
}

fn channel_of(text: &str) -> Result<NotifyChannel, PortError> {
    match text {
        "v2" => Ok(NotifyChannel::V2),
        "v3" => Ok(NotifyChannel::V3),
        "refund_v2" => Ok(NotifyChannel::RefundV2),
        other => Err(PortError::msg(format!("stored notification channel {other:?}"))),
    }
}

type NotificationRow =
    (String, Option<String>, Option<String>, String, bool, String, String, serde_json::Value, DateTime<Utc>);

#[async_trait]
impl PayStore for PgPayStore {
    async fn record_notification(&self, r: &NotificationRecord) -> Result<(), PortError> {
        sqlx::query(
            "INSERT INTO pay_notifications (appid, tenant_id, order_id, channel, verified, outcome, detail, summary,
                                            received_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&r.appid)
        .bind(&r.tenant_id)
        .bind(&r.order_id)
        .bind(r.channel.as_str())
        .bind(r.verified)
        .bind(&r.outcome)
        .bind(&r.detail)
        .bind(&r.summary)
        .bind(r.received_at)
        .execute(&self.pool)
        .await
        .map_err(port)?;
        Ok(())
    }

    async fn notifications(
        &self,
        tenant: &TenantId,
        order_id: &str,
        limit: u32,
    ) -> Result<Vec<NotificationRecord>, PortError> {
        let rows: Vec<NotificationRow> = sqlx::query_as(
            "SELECT appid, tenant_id, order_id, channel, verified, outcome, detail, summary, received_at
             FROM pay_notifications WHERE tenant_id = $1 AND order_id = $2 ORDER BY id DESC LIMIT $3",
        )
        .bind(tenant.as_str())
        .bind(order_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(port)?;
        rows.into_iter()
            .map(|(appid, tenant_id, order_id, channel, verified, outcome, detail, summary, received_at)| {
                Ok(NotificationRecord {
                    appid,
                    tenant_id,
                    order_id,
                    channel: channel_of(&channel)?,
                    verified,
                    outcome,
                    detail,
                    summary,
                    received_at,
                })
            })
            .collect()
    }

    async fn platform_key(&self, tenant: &TenantId, mch_id: &str, serial: &str) -> Result<Option<String>, PortError> {
        sqlx::query_scalar(
            "SELECT public_key_pem FROM pay_platform_keys WHERE tenant_id = $1 AND mch_id = $2 AND serial = $3",
        )
        .bind(tenant.as_str())
        .bind(mch_id)
        .bind(serial)
        .fetch_optional(&self.pool)
        .await
        .map_err(port)
    }

    async fn put_platform_key(
        &self,
        tenant: &TenantId,
        mch_id: &str,
        serial: &str,
        public_key_pem: &str,
    ) -> Result<(), PortError> {
        sqlx::query(
            "INSERT INTO pay_platform_keys (tenant_id, mch_id, serial, public_key_pem) VALUES ($1, $2, $3, $4)
             ON CONFLICT (tenant_id, mch_id, serial)
             DO UPDATE SET public_key_pem = EXCLUDED.public_key_pem, added_at = now()",
        )
        .bind(tenant.as_str())
        .bind(mch_id)
        .bind(serial)
        .bind(public_key_pem)
        .execute(&self.pool)
        .await
        .map_err(port)?;
        Ok(())
    }

    async fn order_ids(
        &self,
        tenant: &TenantId,
        status: Option<PaymentStatus>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, PortError> {
        sqlx::query_scalar(
            "SELECT order_id FROM payment_orders_index
             WHERE tenant_id = $1 AND ($2::text IS NULL OR status = $2) AND ($3::text IS NULL OR order_id > $3)
             ORDER BY order_id LIMIT $4",
        )
        .bind(tenant.as_str())
        .bind(status.map(status_text))
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(port)
    }

    async fn create_member_session(&self, token_hash: &[u8], s: &MemberSession) -> Result<(), PortError> {
        sqlx::query(
            "INSERT INTO member_sessions (token_hash, tenant_id, member_id, appid, openid, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(token_hash)
        .bind(s.tenant_id.as_str())
        .bind(s.member_id.to_string())
        .bind(s.appid.as_str())
        .bind(s.openid.as_str())
        .bind(s.expires_at)
        .execute(&self.pool)
        .await
        .map_err(port)?;
        Ok(())
    }

    async fn find_member_session(&self, token_hash: &[u8]) -> Result<Option<MemberSession>, PortError> {
        let row: Option<(String, String, String, String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT tenant_id, member_id, appid, openid, expires_at FROM member_sessions
             WHERE token_hash = $1 AND expires_at > now()",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(port)?;
        let Some((tenant_id, member_id, appid, openid, expires_at)) = row else {
            return Ok(None);
        };
        let bad = |what: &str, e: String| PortError::msg(format!("stored member session {what}: {e}"));
        Ok(Some(MemberSession {
            tenant_id: TenantId::parse(&tenant_id).map_err(|e| bad("tenant", e.to_string()))?,
            member_id: MemberId::parse(&member_id).map_err(|e| bad("member", e.to_string()))?,
            appid: AppId::parse(&appid).map_err(|e| bad("appid", e.to_string()))?,
            openid: OpenId::parse(&openid).map_err(|e| bad("openid", e.to_string()))?,
            expires_at,
        }))
    }
}
