//! The operation log: every write an admin or staff member made through this
//! API (recorded by `middleware::require_session`), for owners and auditors.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::instrument;
use utoipa::{IntoParams, ToSchema};
use wxcm_commands::oplog::{self, OperationEntry, OperationOutcome, OperationQuery, OplogError, OPLOG_PAGE_MAX};

use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiQuery, Authorized};
use crate::permissions::perm;
use crate::state::AppState;

/// Entries per page when `limit` is not given.
pub const OPLOG_PAGE_DEFAULT: u32 = 50;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OperationLogQuery {
    /// Only this user's writes.
    #[param(min_length = 1, max_length = 256)]
    pub username: Option<String>,
    /// Only this route template, e.g. `/admin/api/v1/members/{member_id}/cash/deposits`.
    #[param(min_length = 1, max_length = 256)]
    pub route: Option<String>,
    #[param(value_type = Option<crate::doc::OperationOutcome>)]
    pub outcome: Option<String>,
    /// Recorded at or after (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    pub from: Option<String>,
    /// Recorded at or before (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    pub to: Option<String>,
    /// The previous page's `next_before`.
    #[param(minimum = 1)]
    pub before: Option<i64>,
    /// Default 50.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::bad_request(code, message)
}

fn instant(field: &str, value: &Option<String>) -> Result<Option<DateTime<Utc>>, ApiError> {
    value
        .as_deref()
        .map(|v| {
            DateTime::parse_from_rfc3339(v)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| bad("invalid_time", format!("{field} must be an RFC 3339 time")))
        })
        .transpose()
}

impl OperationLogQuery {
    fn validate(self) -> Result<OperationQuery, ApiError> {
        let limit = self.limit.unwrap_or(OPLOG_PAGE_DEFAULT);
        if !(1..=OPLOG_PAGE_MAX).contains(&limit) {
            return Err(bad("invalid_limit", format!("limit must be 1..={OPLOG_PAGE_MAX}")));
        }
        let outcome = match self.outcome.as_deref() {
            None => None,
            Some(text) => Some(
                OperationOutcome::parse(text)
                    .ok_or_else(|| bad("invalid_outcome", "outcome must be succeeded, refused or failed"))?,
            ),
        };
        let bounded = |field: &str, value: Option<String>| match value {
            // Characters, as the message and the document say.
            Some(v) if v.is_empty() || v.chars().count() > oplog::OPLOG_TEXT_MAX => {
                Err(bad("invalid_query", format!("{field} must be 1..={} characters", oplog::OPLOG_TEXT_MAX)))
            }
            other => Ok(other),
        };
        if self.before.is_some_and(|b| b <= 0) {
            return Err(bad("invalid_query", "before must be a positive entry id"));
        }
        Ok(OperationQuery {
            username: bounded("username", self.username)?,
            route: bounded("route", self.route)?,
            outcome,
            from: instant("from", &self.from)?,
            to: instant("to", &self.to)?,
            before_id: self.before,
            limit,
        })
    }
}

/// The events a ledger write committed.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventLinkDto {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub first_sequence: i64,
    pub last_sequence: i64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OperationEntryDto {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub username: String,
    /// `owner`, `manager`, `staff` or `auditor`, at the time of the write.
    pub role: String,
    pub client_ip: Option<String>,
    pub method: String,
    /// The route's template.
    pub route: String,
    /// The path as called.
    pub target: String,
    pub status: u16,
    /// `succeeded` (2xx), `refused` (4xx: nothing changed) or `failed` (5xx; 503: outcome unknown).
    pub outcome: String,
    pub idempotency_key: Option<String>,
    pub correlation_id: Option<String>,
    /// Ledger writes: the member stream and sequences they committed.
    pub events: Option<EventLinkDto>,
}

impl From<OperationEntry> for OperationEntryDto {
    fn from(e: OperationEntry) -> Self {
        let r = e.record;
        Self {
            id: e.id,
            at: r.at,
            username: r.username,
            role: r.role.as_str().to_owned(),
            client_ip: r.client_ip,
            method: r.method,
            route: r.route,
            target: r.target,
            status: r.status,
            outcome: r.outcome.as_str().to_owned(),
            idempotency_key: r.idempotency_key,
            correlation_id: r.correlation_id,
            events: r.events.map(|l| EventLinkDto {
                aggregate_type: l.aggregate_type,
                aggregate_id: l.aggregate_id,
                first_sequence: l.first_sequence,
                last_sequence: l.last_sequence,
            }),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OperationLogPage {
    /// Newest first.
    pub entries: Vec<OperationEntryDto>,
    /// Pass as `before` for the next page; absent on the last page.
    pub next_before: Option<i64>,
}

impl From<OplogError> for ApiError {
    fn from(e: OplogError) -> Self {
        match e {
            OplogError::Invalid(message) => ApiError::bad_request("invalid_query", message),
            OplogError::Route(r) => crate::error::unknown_tenant(&r),
            OplogError::Infra(detail) => ApiError::internal("operation log", &detail),
            OplogError::Unavailable(detail) => ApiError::unavailable("operation log", &detail),
        }
    }
}

/// Every admin and staff write of the session's tenant: who, role, when,
/// client address, route and target, status and outcome, newest first.
#[utoipa::path(get, path = "/admin/api/v1/operation-log", tag = "operation-log",
    security(("bearer" = [])),
    params(OperationLogQuery),
    responses(
        (status = 200, description = "A page of entries", body = OperationLogPage),
        (status = 400, description = "`invalid_query`, `invalid_limit`, `invalid_outcome`, `invalid_time`", body = ErrorBody),
        (status = 403, description = "`forbidden` (manager, staff)", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username))]
pub async fn list_operations(
    State(state): State<AppState>,
    auth: Authorized<perm::OperationLogRead>,
    query: ApiQuery<OperationLogQuery>,
) -> Result<Json<OperationLogPage>, ApiError> {
    let query = query.0.validate()?;
    let (entries, next_before) = oplog::list(&state.app, &auth.session.tenant_id, query).await?;
    Ok(Json(OperationLogPage { entries: entries.into_iter().map(Into::into).collect(), next_before }))
}
