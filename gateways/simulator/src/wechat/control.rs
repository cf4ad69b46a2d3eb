//! `/sandbox/...`: the control API tests and developers drive the simulator
//! with, and the middleware that logs WeChat calls and injects faults.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::{to_bytes, Body};
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::api::wx_error;
use super::state::{random_token, unix_ms, Fault, LoggedRequest, WxErr};
use super::{lock, Shared, SANDBOX_BODY_BYTES_MAX};

/// Longest injected delay.
pub const FAULT_DELAY_MS_MAX: u64 = 60_000;
/// Most requests one `GET /sandbox/requests` returns (newest last).
pub const REQUESTS_PAGE_MAX: usize = 1_000;
/// Longest appid, secret, openid or ticket the control API accepts.
const CONTROL_FIELD_CHARS_MAX: usize = 256;

fn bad_request(message: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": message}))).into_response()
}

fn valid(value: &str) -> bool {
    !value.is_empty() && value.len() <= CONTROL_FIELD_CHARS_MAX
}

/// Logs every WeChat call, then applies an injected fault for its path:
/// waits `delay_ms`, then answers `errcode` (0: only slow, the call proceeds).
pub async fn record_and_inject(State(s): State<Shared>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    if path.starts_with("/sandbox/") {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let Ok(bytes) = to_bytes(body, SANDBOX_BODY_BYTES_MAX).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "body too large").into_response();
    };
    let fault = {
        let mut sim = lock(&s);
        let keep = sim.config.body_logged_bytes_max.min(bytes.len());
        sim.record(LoggedRequest {
            method: parts.method.to_string(),
            path: path.clone(),
            query: parts.uri.query().unwrap_or("").to_owned(),
            body: String::from_utf8_lossy(&bytes[..keep]).into_owned(),
            at_unix_ms: unix_ms(),
        });
        sim.take_fault(&path)
    };
    if let Some(fault) = fault {
        if fault.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(fault.delay_ms)).await;
        }
        if fault.errcode != 0 {
            return wx_error(&WxErr(fault.errcode, "injected by the sandbox"));
        }
    }
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}

#[derive(Deserialize)]
pub struct AppBody {
    appid: String,
    secret: String,
}

/// `POST /sandbox/apps {appid, secret}`: an official account or a component.
pub async fn register_app(State(s): State<Shared>, Json(body): Json<AppBody>) -> Response {
    if !valid(&body.appid) || !valid(&body.secret) {
        return bad_request("appid and secret must be 1..=256 characters");
    }
    let mut sim = lock(&s);
    if !sim.apps.contains_key(&body.appid) {
        if let Err(e) = sim.room(sim.apps.len()) {
            return wx_error(&e);
        }
    }
    sim.apps.insert(body.appid, body.secret);
    Json(json!({"ok": true})).into_response()
}

#[derive(Deserialize)]
pub struct FaultBody {
    path: String,
    errcode: i64,
    count: u32,
    #[serde(default)]
    delay_ms: u64,
}

/// `POST /sandbox/faults {path, errcode, count, delay_ms}`: the next `count`
/// calls of `path` wait `delay_ms` and then answer `errcode` (0 = only slow).
pub async fn add_fault(State(s): State<Shared>, Json(body): Json<FaultBody>) -> Response {
    if !body.path.starts_with('/') || !valid(&body.path) {
        return bad_request("path must start with / and be at most 256 characters");
    }
    if body.delay_ms > FAULT_DELAY_MS_MAX {
        return bad_request("delay_ms is at most 60000");
    }
    let mut sim = lock(&s);
    if sim.faults.len() >= 1_000 && !sim.faults.contains_key(&body.path) {
        return bad_request("too many faults");
    }
    sim.faults.insert(body.path, Fault { errcode: body.errcode, count: body.count, delay_ms: body.delay_ms });
    Json(json!({"ok": true})).into_response()
}

pub async fn clear_faults(State(s): State<Shared>) -> Response {
    lock(&s).faults.clear();
    Json(json!({"ok": true})).into_response()
}

/// `GET /sandbox/requests?path=`: the logged calls (of one path), oldest first.
pub async fn requests(State(s): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let sim = lock(&s);
    let path = q.get("path");
    let matching: Vec<&LoggedRequest> = sim.log.iter().filter(|r| path.is_none_or(|p| *p == r.path)).collect();
    let skip = matching.len().saturating_sub(REQUESTS_PAGE_MAX);
    let page: Vec<Value> = matching[skip..].iter().map(|r| json!(r)).collect();
    Json(json!({"total": matching.len(), "requests": page})).into_response()
}

pub async fn stats(State(s): State<Shared>) -> Response {
    Json(json!(lock(&s).stats)).into_response()
}

#[derive(Deserialize)]
pub struct OAuthCodeBody {
    appid: String,
    openid: String,
}

/// `POST /sandbox/oauth/codes {appid, openid}` → `{code}` (works once).
pub async fn mint_oauth_code(State(s): State<Shared>, Json(body): Json<OAuthCodeBody>) -> Response {
    if !valid(&body.appid) || !valid(&body.openid) {
        return bad_request("appid and openid must be 1..=256 characters");
    }
    let mut sim = lock(&s);
    if let Err(e) = sim.room(sim.oauth_codes.len()) {
        return wx_error(&e);
    }
    let code = random_token();
    sim.oauth_codes.insert(code.clone(), (body.appid, body.openid));
    Json(json!({"code": code})).into_response()
}

#[derive(Deserialize)]
pub struct TicketBody {
    component_appid: String,
    ticket: Option<String>,
}

/// `POST /sandbox/component/ticket {component_appid, ticket?}`: the verify
/// ticket the component token call must present (a new random one if absent).
pub async fn component_ticket(State(s): State<Shared>, Json(body): Json<TicketBody>) -> Response {
    let ticket = body.ticket.unwrap_or_else(|| format!("ticket@@@{}", random_token()));
    if !valid(&body.component_appid) || !valid(&ticket) {
        return bad_request("component_appid and ticket must be 1..=256 characters");
    }
    let mut sim = lock(&s);
    if !sim.verify_tickets.contains_key(&body.component_appid) {
        if let Err(e) = sim.room(sim.verify_tickets.len()) {
            return wx_error(&e);
        }
    }
    sim.verify_tickets.insert(body.component_appid, ticket.clone());
    Json(json!({"ticket": ticket})).into_response()
}

#[derive(Deserialize)]
pub struct AuthorizationBody {
    component_appid: String,
    authorizer_appid: String,
}

/// `POST /sandbox/component/authorizations {component_appid, authorizer_appid}`
/// → `{authorization_code}`: as if the merchant had approved the authorization page.
pub async fn mint_authorization(State(s): State<Shared>, Json(body): Json<AuthorizationBody>) -> Response {
    if !valid(&body.component_appid) || !valid(&body.authorizer_appid) {
        return bad_request("component_appid and authorizer_appid must be 1..=256 characters");
    }
    let mut sim = lock(&s);
    if let Err(e) = sim.room(sim.auth_codes.len()) {
        return wx_error(&e);
    }
    let code = format!("queryauthcode@@@{}", random_token());
    sim.auth_codes.insert(code.clone(), (body.component_appid, body.authorizer_appid));
    Json(json!({"authorization_code": code})).into_response()
}

/// `GET /sandbox/qrcodes/{ticket}` → `{appid, scene, permanent}`: what a scan of that QR code means.
pub async fn qrcode(State(s): State<Shared>, Path(ticket): Path<String>) -> Response {
    match lock(&s).qr_tickets.get(&ticket) {
        Some((appid, scene, permanent)) => {
            Json(json!({"appid": appid, "scene": scene, "permanent": permanent})).into_response()
        }
        None => (StatusCode::NOT_FOUND, Json(json!({"error": "unknown ticket"}))).into_response(),
    }
}
