//! The operation log (`operation_log`, migration 0021) on a shard.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Postgres, QueryBuilder, Row};
use wxcm_commands::oplog::{
    EventLink, OperationEntry, OperationLog, OperationOutcome, OperationQuery, OperationRecord,
};
use wxcm_commands::ports::{PortError, Role};
use wxcm_domain::TenantId;

pub struct PgOperationLog {
    pool: PgPool,
}

impl PgOperationLog {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

const COLUMNS: &str = "id, tenant_id, at, username, role, client_ip, method, route, target, status, outcome, \
                       idempotency_key, correlation_id, event_aggregate_type, event_aggregate_id, \
                       event_first_sequence, event_last_sequence";

fn entry(row: &PgRow) -> Result<OperationEntry, PortError> {
    let get_text = |name: &str| row.try_get::<String, _>(name).map_err(PortError::new);
    let tenant = get_text("tenant_id")?;
    let role = get_text("role")?;
    let outcome = get_text("outcome")?;
    let status: i16 = row.try_get("status").map_err(PortError::new)?;
    let events = match (
        row.try_get::<Option<String>, _>("event_aggregate_type").map_err(PortError::new)?,
        row.try_get::<Option<String>, _>("event_aggregate_id").map_err(PortError::new)?,
        row.try_get::<Option<i64>, _>("event_first_sequence").map_err(PortError::new)?,
        row.try_get::<Option<i64>, _>("event_last_sequence").map_err(PortError::new)?,
    ) {
        (Some(aggregate_type), Some(aggregate_id), Some(first_sequence), Some(last_sequence)) => {
            Some(EventLink { aggregate_type, aggregate_id, first_sequence, last_sequence })
        }
        _ => None,
    };
    Ok(OperationEntry {
        id: row.try_get("id").map_err(PortError::new)?,
        record: OperationRecord {
            tenant_id: TenantId::parse(&tenant).map_err(PortError::new)?,
            at: row.try_get::<DateTime<Utc>, _>("at").map_err(PortError::new)?,
            username: get_text("username")?,
            role: Role::parse(&role).ok_or_else(|| PortError::msg(format!("stored role {role:?}")))?,
            client_ip: row.try_get("client_ip").map_err(PortError::new)?,
            method: get_text("method")?,
            route: get_text("route")?,
            target: get_text("target")?,
            status: u16::try_from(status).map_err(PortError::new)?,
            outcome: OperationOutcome::parse(&outcome)
                .ok_or_else(|| PortError::msg(format!("stored outcome {outcome:?}")))?,
            idempotency_key: row.try_get("idempotency_key").map_err(PortError::new)?,
            correlation_id: row.try_get("correlation_id").map_err(PortError::new)?,
            events,
        },
    })
}

#[async_trait]
impl OperationLog for PgOperationLog {
    async fn record(&self, r: &OperationRecord) -> Result<(), PortError> {
        let status = i16::try_from(r.status).map_err(PortError::new)?;
        sqlx::query(
            "INSERT INTO operation_log (tenant_id, at, username, role, client_ip, method, route, target, status,
                 outcome, idempotency_key, correlation_id, event_aggregate_type, event_aggregate_id,
                 event_first_sequence, event_last_sequence)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        )
        .bind(r.tenant_id.as_str())
        .bind(r.at)
        .bind(&r.username)
        .bind(r.role.as_str())
        .bind(&r.client_ip)
        .bind(&r.method)
        .bind(&r.route)
        .bind(&r.target)
        .bind(status)
        .bind(r.outcome.as_str())
        .bind(&r.idempotency_key)
        .bind(&r.correlation_id)
        .bind(r.events.as_ref().map(|e| e.aggregate_type.clone()))
        .bind(r.events.as_ref().map(|e| e.aggregate_id.clone()))
        .bind(r.events.as_ref().map(|e| e.first_sequence))
        .bind(r.events.as_ref().map(|e| e.last_sequence))
        .execute(&self.pool)
        .await
        .map_err(PortError::new)?;
        Ok(())
    }

    async fn list(&self, tenant: &TenantId, q: &OperationQuery) -> Result<Vec<OperationEntry>, PortError> {
        let mut sql: QueryBuilder<Postgres> =
            QueryBuilder::new(format!("SELECT {COLUMNS} FROM operation_log WHERE tenant_id = "));
        sql.push_bind(tenant.as_str());
        if let Some(username) = &q.username {
            sql.push(" AND username = ").push_bind(username);
        }
        if let Some(route) = &q.route {
            sql.push(" AND route = ").push_bind(route);
        }
        if let Some(outcome) = q.outcome {
            sql.push(" AND outcome = ").push_bind(outcome.as_str());
        }
        if let Some(from) = q.from {
            sql.push(" AND at >= ").push_bind(from);
        }
        if let Some(to) = q.to {
            sql.push(" AND at <= ").push_bind(to);
        }
        if let Some(before) = q.before_id {
            sql.push(" AND id < ").push_bind(before);
        }
        sql.push(" ORDER BY id DESC LIMIT ").push_bind(i64::from(q.limit));
        let rows = sql.build().fetch_all(&self.pool).await.map_err(PortError::new)?;
        rows.iter().map(entry).collect()
    }

    async fn prune(&self, before: DateTime<Utc>, batch: u32) -> Result<u64, PortError> {
        let done = sqlx::query(
            "DELETE FROM operation_log WHERE id IN (
                 SELECT id FROM operation_log WHERE at < $1 ORDER BY at LIMIT $2)",
        )
        .bind(before)
        .bind(i64::from(batch))
        .execute(&self.pool)
        .await
        .map_err(PortError::new)?;
        Ok(done.rows_affected())
    }
}
