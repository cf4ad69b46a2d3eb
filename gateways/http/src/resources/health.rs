//! Liveness, readiness and the OpenAPI document: no authentication.

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::state::AppState;

/// Characters of a readiness failure reason sent back (the rest is logged).
pub const READINESS_REASON_CHARS_MAX: usize = 200;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HealthBody {
    /// `ok`, or `unavailable` with a `reason`.
    pub status: String,
    /// Every failing part, `role shard/name: why`, separated by `; `.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `/readyz` only: each part of this node (the API's database check, and
    /// the relay, scheduler, projectors and NATS connection where this node runs them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<PartBody>,
}

/// One part of the node.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PartBody {
    /// `api`, `relay`, `scheduler`, `projector` or `nats`.
    pub role: String,
    /// The shard the part works on (empty for node-wide parts).
    pub shard: String,
    /// The projector's name; empty for roles with one part per shard.
    pub name: String,
    pub ready: bool,
    /// True: this node leads the role on the shard; false: it stands by.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader: Option<bool>,
    /// What it does, or why it is not ready.
    pub detail: String,
}

/// `?role=api` asks only whether this node can serve API requests (what a
/// load balancer should route on); without it every role on the node counts.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReadyQuery {
    /// `api`: only the API's own check.
    pub role: Option<String>,
}

/// Liveness: answers without any I/O.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "Alive", body = HealthBody)))]
pub async fn healthz() -> Json<HealthBody> {
    Json(HealthBody { status: "ok".into(), reason: None, parts: Vec::new() })
}

/// Readiness: 200 when every part of this node is ready (with `?role=api`,
/// when the API can serve), else 503 naming each failing part.
#[utoipa::path(get, path = "/readyz", tag = "health", params(ReadyQuery), responses(
    (status = 200, description = "Ready", body = HealthBody),
    (status = 400, description = "Unknown `role`", body = crate::error::ErrorBody),
    (status = 503, description = "Not ready; `reason` and `parts` say why", body = HealthBody),
))]
pub async fn readyz(
    State(state): State<AppState>,
    Query(query): Query<ReadyQuery>,
) -> Result<(StatusCode, Json<HealthBody>), crate::error::ApiError> {
    let api_only = match query.role.as_deref() {
        None => false,
        Some("api") => true,
        Some(_) => return Err(crate::error::ApiError::bad_request("invalid_role", "role must be api or absent")),
    };
    let api = state.readiness.check().await;
    let mut parts = vec![PartBody {
        role: "api".into(),
        shard: String::new(),
        name: String::new(),
        ready: api.is_ok(),
        leader: None,
        detail: match &api {
            Ok(()) => "shards answer".into(),
            Err(reason) => reason.chars().take(READINESS_REASON_CHARS_MAX).collect(),
        },
    }];
    if !api_only {
        parts.extend(state.readiness.roles().await.into_iter().map(|p| PartBody {
            role: p.key.role.to_owned(),
            shard: p.key.shard,
            name: p.key.name,
            ready: p.ready,
            leader: p.leader,
            detail: p.detail,
        }));
    }
    let failing: Vec<String> = parts
        .iter()
        .filter(|p| !p.ready)
        .map(|p| match (p.shard.is_empty(), p.name.is_empty()) {
            (true, _) if p.role == "api" => p.detail.clone(),
            (true, _) => format!("{}: {}", p.role, p.detail),
            (false, true) => format!("{} {}: {}", p.role, p.shard, p.detail),
            (false, false) => format!("{} {}/{}: {}", p.role, p.shard, p.name, p.detail),
        })
        .collect();
    if failing.is_empty() {
        return Ok((StatusCode::OK, Json(HealthBody { status: "ok".into(), reason: None, parts })));
    }
    let reason = failing.join("; ");
    tracing::warn!(%reason, "not ready");
    let reason: String = reason.chars().take(READINESS_REASON_CHARS_MAX * 4).collect();
    Ok((
        StatusCode::SERVICE_UNAVAILABLE,
        Json(HealthBody { status: "unavailable".into(), reason: Some(reason), parts }),
    ))
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "health", responses(
    (status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json"),
))]
pub async fn openapi(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], state.openapi_json.to_string())
}
