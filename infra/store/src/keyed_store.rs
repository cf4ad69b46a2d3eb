//! Answers of writes idempotent by key that are not events (`keyed_requests`, migration 0022).

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use sqlx::{PgPool, Row};
use wxcm_commands::keyed_requests::{Claim, KeyedRequests, KEYED_CLAIM_STALE_SECS};
use wxcm_commands::ports::PortError;
use wxcm_domain::TenantId;

pub struct PgKeyedRequests {
    pool: PgPool,
}

impl PgKeyedRequests {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl KeyedRequests for PgKeyedRequests {
    async fn claim(
        &self,
        tenant: &TenantId,
        key: &str,
        request_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Claim, PortError> {
        let stale_before = now - Duration::seconds(KEYED_CLAIM_STALE_SECS);
        // One statement decides: a new key is inserted; an unfinished claim of the
        // same request older than the stale limit is taken over; anything else is
        // left as it is and read below.
        let won = sqlx::query(
            "INSERT INTO keyed_requests (tenant_id, idempotency_key, request_hash, claimed_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (tenant_id, idempotency_key) DO UPDATE SET claimed_at = EXCLUDED.claimed_at
              WHERE keyed_requests.completed_at IS NULL
                AND keyed_requests.request_hash = EXCLUDED.request_hash
                AND keyed_requests.claimed_at < $5
             RETURNING 1",
        )
        .bind(tenant.as_str())
        .bind(key)
        .bind(request_hash)
        .bind(now)
        .bind(stale_before)
        .fetch_optional(&self.pool)
        .await
        .map_err(PortError::new)?;
        if won.is_some() {
            return Ok(Claim::Won);
        }
        let row = sqlx::query(
            "SELECT request_hash, status, body FROM keyed_requests WHERE tenant_id = $1 AND idempotency_key = $2",
        )
        .bind(tenant.as_str())
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(PortError::new)?;
        let Some(row) = row else {
            // Released between the two statements: the caller retries.
            return Ok(Claim::InFlight);
        };
        let hash: String = row.try_get("request_hash").map_err(PortError::new)?;
        if hash != request_hash {
            return Ok(Claim::Mismatch);
        }
        let status: Option<i16> = row.try_get("status").map_err(PortError::new)?;
        let body: Option<Vec<u8>> = row.try_get("body").map_err(PortError::new)?;
        Ok(match status {
            Some(status) => {
                Claim::Replay { status: u16::try_from(status).map_err(PortError::new)?, body: body.unwrap_or_default() }
            }
            None => Claim::InFlight,
        })
    }

    async fn complete(&self, tenant: &TenantId, key: &str, status: u16, body: &[u8]) -> Result<(), PortError> {
        sqlx::query(
            "UPDATE keyed_requests SET status = $3, body = $4, completed_at = now()
              WHERE tenant_id = $1 AND idempotency_key = $2 AND completed_at IS NULL",
        )
        .bind(tenant.as_str())
        .bind(key)
        .bind(i16::try_from(status).map_err(PortError::new)?)
        .bind(body)
        .execute(&self.pool)
        .await
        .map_err(PortError::new)?;
        Ok(())
    }

    async fn release(&self, tenant: &TenantId, key: &str) -> Result<(), PortError> {
        sqlx::query(
            "DELETE FROM keyed_requests WHERE tenant_id = $1 AND idempotency_key = $2 AND completed_at IS NULL",
        )
        .bind(tenant.as_str())
        .bind(key)
        .execute(&self.pool)
        .await
        .map_err(PortError::new)?;
        Ok(())
    }

    async fn prune(&self, before: DateTime<Utc>, batch: u32) -> Result<u64, PortError> {
        let done = sqlx::query(
            "DELETE FROM keyed_requests WHERE (tenant_id, idempotency_key) IN (
                 SELECT tenant_id, idempotency_key FROM keyed_requests
                  WHERE claimed_at < $1 ORDER BY claimed_at LIMIT $2)",
        )
        .bind(before)
        .bind(i64::from(batch))
        .execute(&self.pool)
        .await
        .map_err(PortError::new)?;
        Ok(done.rows_affected())
    }
}
