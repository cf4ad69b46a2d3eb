//! Cross-cutting layers: correlation ids, the request timeout, the admin
//! API's session, JSON answers for unknown routes, wrong methods and panics.

use std::any::Any;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use crate::error::ApiError;
use axum::extract::{MatchedPath, OriginalUri};
use axum::http::Method;
use wxcm_commands::keyed_requests::{Claim, KEYED_ANSWER_BYTES_MAX};
use wxcm_commands::oplog::{EventLink, OperationOutcome, OperationRecord};

use crate::extract::{
    bearer_token, parse_correlation_id, ClientIp, Correlation, Session, CORRELATION_ID_HEADER, IDEMPOTENCY_KEY_HEADER,
};
use crate::state::AppState;

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

/// Resolves the bearer session once for every protected admin route (all but
/// login, see `admin_routes`): 401 `unauthenticated` without a live one, so no
/// handler runs for an anonymous caller even if it forgot its `Authorized<P>`.
/// The session goes into the request's extensions, where `Authorized<P>` takes
/// it to check the route's permission.
pub async fn require_session(
    State(state): State<AppState>,
    ClientIp(client_ip): ClientIp,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(token) = bearer_token(req.headers()).map(str::to_owned) else {
        return ApiError::Unauthenticated.into_response();
    };
    let session = match state.sessions.resolve(&token).await {
        Ok(Some(session)) => session,
        Ok(None) => return ApiError::Unauthenticated.into_response(),
        Err(e) => return ApiError::from(e).into_response(),
    };
    // The resolver filters expired sessions; checked again here so no resolver
    // can let one through. Wall-clock time, as `commands::auth` sets and checks
    // expiry (the application's clock may be simulated, sessions are not).
    if session.expires_at <= chrono::Utc::now() {
        return ApiError::Unauthenticated.into_response();
    }
    // Writes are recorded in the operation log after the handler answered.
    let write = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let pending = write.then(|| PendingOperation {
        session: session.clone(),
        client_ip: client_ip.map(|ip| ip.to_string()),
        method: req.method().to_string(),
        route: req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_default(),
        // Inside the nested admin router the URI lost its prefix; the original has it.
        target: req.extensions().get::<OriginalUri>().map_or_else(|| req.uri().path(), |u| u.path()).to_owned(),
        idempotency_key: req.headers().get(IDEMPOTENCY_KEY_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned),
        correlation_id: req.extensions().get::<Correlation>().map(|c| c.0.to_string()),
    });
    req.extensions_mut().insert(Session { session, token });
    let response = next.run(req).await;
    if let Some(pending) = pending {
        // Read before awaiting: a response (its body) is not `Sync`.
        let status = response.status().as_u16();
        let events = response.extensions().get::<EventLink>().cloned();
        pending.record(&state, status, events).await;
    }
    response
}

/// A write on its way through, to be recorded with its answer.
struct PendingOperation {
    session: wxcm_commands::ports::AdminSession,
    client_ip: Option<String>,
    method: String,
    route: String,
    target: String,
    idempotency_key: Option<String>,
    correlation_id: Option<String>,
}

impl PendingOperation {
    /// Awaited before the answer leaves, so an acknowledged write is in the
    /// log; a failure to record is logged (the write itself stands).
    async fn record(self, state: &AppState, status: u16, events: Option<EventLink>) {
        let record = OperationRecord {
            tenant_id: self.session.tenant_id,
            at: state.app.clock.now(),
            username: self.session.username,
            role: self.session.role,
            client_ip: self.client_ip,
            method: self.method,
            route: self.route,
            target: self.target,
            status,
            outcome: OperationOutcome::of_status(status),
            idempotency_key: self.idempotency_key,
            correlation_id: self.correlation_id,
            events,
        };
        if let Err(e) = wxcm_commands::oplog::record(&state.app, record).await {
            tracing::error!(error = %e, "the operation could not be recorded in the operation log");
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

/// Routes made idempotent by [`replay_by_key`]: (method, full route template)
/// → the permission the route needs (checked before a key is claimed).
pub(crate) type KeyedRoutes =
    std::sync::Arc<std::collections::HashMap<(Method, String), Option<crate::permissions::Permission>>>;

/// Idempotency by key for the admin routes whose writes are not events
/// (`admin_routes` marks them `keyed`): the `Idempotency-Key` header is
/// required; the first request with a key runs and its answer (2xx or 4xx)
/// is kept; the same key with the same request (method, path, body) replays
/// it with `Idempotent-Replayed: true`; with another request it answers 409
/// `idempotency_key_reused`; while the first still runs, 409
/// `request_in_progress`. A 5xx answer (outcome unknown) gives the key back,
/// so a retry runs the request again. Runs after the session layer.
pub async fn replay_by_key(
    State((state, keyed)): State<(AppState, KeyedRoutes)>,
    req: Request,
    next: Next,
) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_default();
    let Some(permission) = keyed.get(&(req.method().clone(), route.clone())).copied() else {
        return next.run(req).await;
    };
    let Some(session) = req.extensions().get::<Session>().map(|s| s.session.clone()) else {
        return ApiError::Unauthenticated.into_response();
    };
    // As the handler's `Authorized<P>` would: a caller without the permission
    // never claims a key.
    if let Some(permission) = permission {
        if !crate::permissions::allowed(session.role, permission) {
            return ApiError::Forbidden { role: session.role, permission }.into_response();
        }
    }
    let key = match crate::extract::parse_idempotency_key(req.headers()) {
        Ok(key) => key,
        Err(e) => return e.into_response(),
    };
    let tenant = session.tenant_id;
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, state.body_bytes_max).await {
        Ok(bytes) => bytes,
        Err(_) => return ApiError::PayloadTooLarge.into_response(),
    };
    let target = parts.extensions.get::<OriginalUri>().map_or_else(|| parts.uri.path(), |u| u.path()).to_owned();
    let request_hash = {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for part in [parts.method.as_str().as_bytes(), route.as_bytes(), target.as_bytes()] {
            h.update(part);
            h.update([0x1f]);
        }
        h.update(&bytes);
        hex::encode(h.finalize())
    };
    let shard = match state.app.router.route(&tenant) {
        Ok(shard) => shard,
        // A tenant without a shard: the handler refuses it the same way, writing nothing.
        Err(_) => return next.run(Request::from_parts(parts, axum::body::Body::from(bytes))).await,
    };
    let store = shard.keyed_requests.clone();
    let claim = match store.claim(&tenant, key.as_str(), &request_hash, state.app.clock.now()).await {
        Ok(claim) => claim,
        Err(e) => return ApiError::from(e).into_response(),
    };
    match claim {
        Claim::Won => {}
        Claim::Replay { status, body } => return replayed(status, body),
        Claim::Mismatch => return crate::error::idempotency_key_reused().into_response(),
        Claim::InFlight => {
            return ApiError::conflict("request_in_progress", "a request with this idempotency key is still running")
                .into_response()
        }
    }
    let response = next.run(Request::from_parts(parts, axum::body::Body::from(bytes))).await;
    let status = response.status();
    if status.is_server_error() {
        if let Err(e) = store.release(&tenant, key.as_str()).await {
            tracing::warn!(error = %e, "could not give an idempotency key back");
        }
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(body) = axum::body::to_bytes(body, KEYED_ANSWER_BYTES_MAX).await else {
        tracing::error!("answer too large to keep for replay");
        return ApiError::internal("keyed answer", &"answer larger than the replay limit").into_response();
    };
    if let Err(e) = store.complete(&tenant, key.as_str(), status.as_u16(), &body).await {
        // The write happened; its answer is still sent. A retry would run it again.
        tracing::warn!(error = %e, "could not keep the answer for replay");
    }
    Response::from_parts(parts, axum::body::Body::from(body))
}

fn replayed(status: u16, body: Vec<u8>) -> Response {
    let status = axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::OK);
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(axum::http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(crate::extract::IDEMPOTENT_REPLAYED_HEADER, HeaderValue::from_static("true"));
    response
}
