//! Cross-cutting layers: correlation ids, the request timeout, JSON answers
//! for unknown routes, wrong methods and panics.

use std::any::Any;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use crate::error::ApiError;
use crate::extract::{parse_correlation_id, Correlation, CORRELATION_ID_HEADER};

/// Reads (or makes) the correlation id, puts it in the request's extensions
/// and the logging span, and echoes it on every response.
pub async fn correlation(mut req: Request, next: Next) -> Response {
    let id = match parse_correlation_id(req.headers()) {
        Ok(id) => id,
        Err(e) => return e.into_response(),
    };
    req.extensions_mut().insert(Correlation(id));
    let span = tracing::info_span!("request", correlation_id = %id);
    let mut response = next.run(req).instrument(span).await;
    if let Ok(value) = HeaderValue::from_str(&id.to_string()) {
        response.headers_mut().insert(CORRELATION_ID_HEADER, value);
    }
    response
}

/// Answers 503 `timeout` when the handler takes longer than the limit. A
/// command may still have committed: retrying with the same idempotency key
/// returns its result.
pub async fn timeout(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(timeout_ms = limit.as_millis() as u64, "request timed out");
            ApiError::Timeout.into_response()
        }
    }
}

pub async fn route_not_found() -> ApiError {
    ApiError::not_found("route_not_found", "no such route")
}

pub async fn method_not_allowed() -> Response {
    let body = crate::error::ErrorBody {
        error: crate::error::ErrorDetail {
            code: "method_not_allowed".into(),
            message: "method not allowed on this route".into(),
        },
    };
    (axum::http::StatusCode::METHOD_NOT_ALLOWED, axum::Json(body)).into_response()
}

pub fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into());
    ApiError::internal("handler panicked", &detail).into_response()
}
