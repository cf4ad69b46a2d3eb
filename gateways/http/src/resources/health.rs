//! Liveness, readiness and the OpenAPI document: no authentication.

use axum::extract::State;
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Liveness: answers without any I/O.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "Alive", body = HealthBody)))]
pub async fn healthz() -> Json<HealthBody> {
    Json(HealthBody { status: "ok".into(), reason: None })
}

/// Readiness: 200 when the composition root's check passes, else 503 with its reason.
#[utoipa::path(get, path = "/readyz", tag = "health", responses(
    (status = 200, description = "Ready", body = HealthBody),
    (status = 503, description = "Not ready; `reason` says why", body = HealthBody),
))]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<HealthBody>) {
    match state.readiness.check().await {
        Ok(()) => (StatusCode::OK, Json(HealthBody { status: "ok".into(), reason: None })),
        Err(reason) => {
            tracing::warn!(%reason, "not ready");
            let reason: String = reason.chars().take(READINESS_REASON_CHARS_MAX).collect();
            (StatusCode::SERVICE_UNAVAILABLE, Json(HealthBody { status: "unavailable".into(), reason: Some(reason) }))
        }
    }
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "health", responses(
    (status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json"),
))]
pub async fn openapi(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], state.openapi_json.to_string())
}
