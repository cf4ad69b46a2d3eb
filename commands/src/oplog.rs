//! The operation log: every write an admin or staff member makes through the
//! admin API — who (username, role), which tenant, when, from which client
//! address, which route and target, and the outcome — recorded by the HTTP
//! edge after the handler answered, on the tenant's shard. Owners and
//! auditors read it with filters and pages. Ledger writes carry the stream
//! and sequences of the events they committed, so an auditor goes from the
//! log line to the hash-chained events.
//!
//! The log is append-only for the application (its database role may insert
//! and read, and delete only what is older than the retention); the events,
//! not this log, are the ledger's truth.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use wxcm_domain::TenantId;

use crate::ports::{App, PortError, Role, RouteError};

/// Entries per page, at most.
pub const OPLOG_PAGE_MAX: u32 = 100;
/// Longest text kept in one field (routes, targets, keys, addresses).
pub const OPLOG_TEXT_MAX: usize = 256;
/// Entries are kept this long (an auditor's year, and a margin).
pub const OPLOG_RETENTION_DAYS: i64 = 400;

/// The events a write committed: one stream, `first_sequence..=last_sequence`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventLink {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub first_sequence: i64,
    pub last_sequence: i64,
}

/// 2xx succeeded, 4xx refused (nothing changed), 5xx failed (503: unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationOutcome {
    Succeeded,
    Refused,
    Failed,
}

impl OperationOutcome {
    pub fn of_status(status: u16) -> Self {
        match status {
            200..=399 => OperationOutcome::Succeeded,
            400..=499 => OperationOutcome::Refused,
            _ => OperationOutcome::Failed,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OperationOutcome::Succeeded => "succeeded",
            OperationOutcome::Refused => "refused",
            OperationOutcome::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "succeeded" => Some(OperationOutcome::Succeeded),
            "refused" => Some(OperationOutcome::Refused),
            "failed" => Some(OperationOutcome::Failed),
            _ => None,
        }
    }
}

/// One write as the edge saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationRecord {
    pub tenant_id: TenantId,
    pub at: DateTime<Utc>,
    pub username: String,
    pub role: Role,
    pub client_ip: Option<String>,
    pub method: String,
    /// The route's template (`/admin/api/v1/members/{member_id}/cash/deposits`).
    pub route: String,
    /// The path as called (names the member, coupon, user… written to).
    pub target: String,
    pub status: u16,
    pub outcome: OperationOutcome,
    pub idempotency_key: Option<String>,
    pub correlation_id: Option<String>,
    pub events: Option<EventLink>,
}

impl OperationRecord {
    /// Cuts every text field to [`OPLOG_TEXT_MAX`] characters.
    pub fn bounded(mut self) -> Self {
        let cut = |s: &mut String| {
            if s.chars().count() > OPLOG_TEXT_MAX {
                *s = s.chars().take(OPLOG_TEXT_MAX).collect();
            }
        };
        cut(&mut self.username);
        cut(&mut self.method);
        cut(&mut self.route);
        cut(&mut self.target);
        for field in [&mut self.client_ip, &mut self.idempotency_key, &mut self.correlation_id] {
            if let Some(s) = field.as_mut() {
                cut(s);
            }
        }
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationEntry {
    /// Increasing with the time of recording (the page cursor).
    pub id: i64,
    pub record: OperationRecord,
}

/// Filters of a page, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OperationQuery {
    pub username: Option<String>,
    pub route: Option<String>,
    pub outcome: Option<OperationOutcome>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// Entries with a smaller id only (the previous page's `next_before`).
    pub before_id: Option<i64>,
    pub limit: u32,
}

/// The log on one shard.
#[async_trait::async_trait]
pub trait OperationLog: Send + Sync {
    async fn record(&self, record: &OperationRecord) -> Result<(), PortError>;
    /// Up to `query.limit` entries of `tenant`, newest first.
    async fn list(&self, tenant: &TenantId, query: &OperationQuery) -> Result<Vec<OperationEntry>, PortError>;
    /// Deletes up to `batch` entries recorded before `before`; returns how many.
    async fn prune(&self, before: DateTime<Utc>, batch: u32) -> Result<u64, PortError>;
}

#[derive(Debug, thiserror::Error)]
pub enum OplogError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error("infrastructure failure: {0}")]
    Infra(String),
    /// The database is unreachable for now.
    #[error("infrastructure unavailable: {0}")]
    Unavailable(String),
}

impl From<PortError> for OplogError {
    fn from(e: PortError) -> Self {
        if e.is_transient() {
            OplogError::Unavailable(e.to_string())
        } else {
            OplogError::Infra(e.to_string())
        }
    }
}

/// Records `record` on its tenant's shard.
pub async fn record(app: &App, record: OperationRecord) -> Result<(), OplogError> {
    let shard = app.router.route(&record.tenant_id)?;
    shard.oplog.record(&record.bounded()).await?;
    Ok(())
}

/// A page of `tenant`'s log and the cursor of the next one (None: the last page).
pub async fn list(
    app: &App,
    tenant: &TenantId,
    query: OperationQuery,
) -> Result<(Vec<OperationEntry>, Option<i64>), OplogError> {
    if query.limit == 0 || query.limit > OPLOG_PAGE_MAX {
        return Err(OplogError::Invalid(format!("limit must be 1..={OPLOG_PAGE_MAX}")));
    }
    if let (Some(from), Some(to)) = (query.from, query.to) {
        if from > to {
            return Err(OplogError::Invalid("from must not be after to".into()));
        }
    }
    let shard = app.router.route(tenant)?;
    let entries = shard.oplog.list(tenant, &query).await?;
    let next = (entries.len() == query.limit as usize).then(|| entries.last().map(|e| e.id)).flatten();
    Ok((entries, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_follow_the_status_class() {
        assert_eq!(OperationOutcome::of_status(200), OperationOutcome::Succeeded);
        assert_eq!(OperationOutcome::of_status(201), OperationOutcome::Succeeded);
        assert_eq!(OperationOutcome::of_status(409), OperationOutcome::Refused);
        assert_eq!(OperationOutcome::of_status(503), OperationOutcome::Failed);
        for o in [OperationOutcome::Succeeded, OperationOutcome::Refused, OperationOutcome::Failed] {
            assert_eq!(OperationOutcome::parse(o.as_str()), Some(o));
        }
        assert_eq!(OperationOutcome::parse("maybe"), None);
    }

    #[test]
    fn long_fields_are_cut() {
        let record = OperationRecord {
            tenant_id: TenantId::parse("acme").unwrap(),
            at: Utc::now(),
            username: "u".into(),
            role: Role::Staff,
            client_ip: None,
            method: "POST".into(),
            route: "/r".into(),
            target: "x".repeat(10_000),
            status: 200,
            outcome: OperationOutcome::Succeeded,
            idempotency_key: Some("k".repeat(1_000)),
            correlation_id: None,
            events: None,
        }
        .bounded();
        assert_eq!(record.target.chars().count(), OPLOG_TEXT_MAX);
        assert_eq!(record.idempotency_key.map(|k| k.len()), Some(OPLOG_TEXT_MAX));
    }
}
