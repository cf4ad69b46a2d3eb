//! Coupon dispatch jobs (`coupon_dispatch_jobs`, migration 0017).

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use uuid::Uuid;
use wxcm_commands::coupons::dispatch::{ChunkOutcome, DispatchJob, DispatchState, DispatchStore, DispatchTarget};
use wxcm_commands::ports::PortError;
use wxcm_domain::coupon::TemplateId;
use wxcm_domain::TenantId;

pub struct PgDispatchStore {
    pool: PgPool,
}

impl PgDispatchStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

const COLUMNS: &str = "job_id, tenant_id, template_id, target, request_hash, state, cursor, processed, issued, \
                       refused, last_error, created_by, created_at, finished_at";

fn job(row: &PgRow) -> Result<(DispatchJob, String), PortError> {
    let target: serde_json::Value = row.try_get("target").map_err(PortError::new)?;
    let refused: serde_json::Value = row.try_get("refused").map_err(PortError::new)?;
    let state: String = row.try_get("state").map_err(PortError::new)?;
    let tenant: String = row.try_get("tenant_id").map_err(PortError::new)?;
    let template: String = row.try_get("template_id").map_err(PortError::new)?;
    let job = DispatchJob {
        job_id: row.try_get("job_id").map_err(PortError::new)?,
        tenant_id: TenantId::parse(&tenant).map_err(PortError::new)?,
        template_id: TemplateId::parse(&template).map_err(PortError::new)?,
        target: serde_json::from_value::<DispatchTarget>(target).map_err(PortError::new)?,
        state: DispatchState::parse(&state).ok_or_else(|| PortError::msg(format!("dispatch state {state}")))?,
        cursor: row.try_get("cursor").map_err(PortError::new)?,
        processed: row.try_get("processed").map_err(PortError::new)?,
        issued: row.try_get("issued").map_err(PortError::new)?,
        refused: serde_json::from_value::<BTreeMap<String, i64>>(refused).map_err(PortError::new)?,
        last_error: row.try_get("last_error").map_err(PortError::new)?,
        created_by: row.try_get("created_by").map_err(PortError::new)?,
        created_at: row.try_get("created_at").map_err(PortError::new)?,
        finished_at: row.try_get("finished_at").map_err(PortError::new)?,
    };
    Ok((job, row.try_get("request_hash").map_err(PortError::new)?))
}

#[async_trait]
impl DispatchStore for PgDispatchStore {
    async fn create(&self, new: &DispatchJob, request_hash: &str) -> Result<(DispatchJob, String), PortError> {
        let target = serde_json::to_value(&new.target).map_err(PortError::new)?;
        sqlx::query(
            "INSERT INTO coupon_dispatch_jobs (job_id, tenant_id, template_id, target, request_hash, state,
                                               created_by, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, 'running', $6, $7, $7)
             ON CONFLICT (job_id) DO NOTHING",
        )
        .bind(new.job_id)
        .bind(new.tenant_id.as_str())
        .bind(new.template_id.to_string())
        .bind(target)
        .bind(request_hash)
        .bind(&new.created_by)
        .bind(new.created_at)
        .execute(&self.pool)
        .await
        .map_err(PortError::new)?;
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM coupon_dispatch_jobs WHERE job_id = $1"))
            .bind(new.job_id)
            .fetch_one(&self.pool)
            .await
            .map_err(PortError::new)?;
        job(&row)
    }

    async fn get(&self, tenant: &TenantId, job_id: Uuid) -> Result<Option<DispatchJob>, PortError> {
        let row =
            sqlx::query(&format!("SELECT {COLUMNS} FROM coupon_dispatch_jobs WHERE job_id = $1 AND tenant_id = $2"))
                .bind(job_id)
                .bind(tenant.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(PortError::new)?;
        row.map(|r| job(&r).map(|(j, _)| j)).transpose()
    }

    async fn running(&self, limit: u32) -> Result<Vec<DispatchJob>, PortError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM coupon_dispatch_jobs WHERE state = 'running' ORDER BY created_at, job_id LIMIT $1"
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(PortError::new)?;
        rows.iter().map(|r| job(r).map(|(j, _)| j)).collect()
    }

    async fn advance(
        &self,
        job_id: Uuid,
        processed_before: i64,
        outcome: &ChunkOutcome,
        now: DateTime<Utc>,
    ) -> Result<bool, PortError> {
        let refused = serde_json::to_value(&outcome.refused).map_err(PortError::new)?;
        // Refusal counts merge key by key: the stored map plus this chunk's.
        let done = sqlx::query(
            "UPDATE coupon_dispatch_jobs j
                SET cursor = $3, processed = processed + $4, issued = issued + $5,
                    refused = (SELECT coalesce(jsonb_object_agg(k, to_jsonb(v)), '{}'::jsonb) FROM (
                                 SELECT k, sum(v)::bigint AS v FROM (
                                   SELECT key AS k, value::bigint AS v FROM jsonb_each_text(j.refused)
                                   UNION ALL
                                   SELECT key, value::bigint FROM jsonb_each_text($6::jsonb)) parts
                                 GROUP BY k) sums),
                    state = CASE WHEN $7 THEN 'done' ELSE 'running' END,
                    finished_at = CASE WHEN $7 THEN $8 ELSE NULL END,
                    last_error = NULL, updated_at = $8
              WHERE job_id = $1 AND processed = $2 AND state = 'running'",
        )
        .bind(job_id)
        .bind(processed_before)
        .bind(&outcome.cursor)
        .bind(outcome.processed)
        .bind(outcome.issued)
        .bind(refused)
        .bind(outcome.done)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(PortError::new)?;
        Ok(done.rows_affected() == 1)
    }

    async fn record_error(&self, job_id: Uuid, error: &str) -> Result<(), PortError> {
        sqlx::query("UPDATE coupon_dispatch_jobs SET last_error = $2, updated_at = now() WHERE job_id = $1")
            .bind(job_id)
            .bind(error)
            .execute(&self.pool)
            .await
            .map_err(PortError::new)?;
        Ok(())
    }
}
