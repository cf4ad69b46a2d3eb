//! Router tests. The `App` has no shards (nothing behind it, no database),
//! and sessions come from a fixed table, so these tests cover the edge
//! itself: a request that passes every check reaches the application layer,
//! which answers 404 `tenant_not_found`; a request refused at the edge gets
//! its own status, proving no command ran.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::{to_bytes, Body};
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use chrono::Utc;
use serde_json::{json, Value};
use tower::ServiceExt;
use wxcm_commands::auth::AuthError;
use wxcm_commands::ports::{AdminSession, PortError, Role, RouteError, SecretSealer, ShardRouter, ShardServices};
use wxcm_commands::{App, Limits, SystemClock};
use wxcm_domain::tenant::SealedSecret;
use wxcm_domain::{CardNumber, MemberId, TenantId};

use crate::extract::{CORRELATION_ID_HEADER, IDEMPOTENCY_KEY_HEADER, PATH_PARAM_BYTES_MAX};
use crate::permissions::{allowed, Permission};
use crate::state::SessionResolver;
use crate::{build, HttpSettings, Readiness};

const RESPONSE_BYTES_MAX: usize = 1 << 20;
const LIMITS: Limits = Limits { amount_fen_max: 10_000, points_max: 5_000, mall_pay_window_minutes: 15 };

struct NoShards;

impl ShardRouter for NoShards {
    fn route(&self, tenant: &TenantId) -> Result<Arc<ShardServices>, RouteError> {
        Err(RouteError::NoShard(tenant.to_string()))
    }
    fn shards(&self) -> Vec<Arc<ShardServices>> {
        Vec::new()
    }
    fn registry(&self) -> Result<Arc<ShardServices>, RouteError> {
        Err(RouteError::NoShard("registry".into()))
    }
}

struct OpaqueSealer;

impl SecretSealer for OpaqueSealer {
    fn seal(&self, _: &str) -> Result<SealedSecret, PortError> {
        Ok(SealedSecret::from_ciphertext("sealed".into()))
    }
    fn open(&self, _: &SealedSecret) -> Result<String, PortError> {
        Err(PortError::msg("not in tests"))
    }
}

/// Token `<role>` is a live session of tenant `acme` with that role,
/// `other-<role>` one of tenant `globex`, `expired-<role>` an expired one of
/// `acme` (which the real resolver never returns; the session layer refuses it too).
struct FixedSessions;

#[async_trait]
impl SessionResolver for FixedSessions {
    async fn resolve(&self, token: &str) -> Result<Option<AdminSession>, AuthError> {
        let (tenant, role, ttl) = if let Some(role) = token.strip_prefix("other-") {
            ("globex", role, chrono::Duration::hours(1))
        } else if let Some(role) = token.strip_prefix("expired-") {
            ("acme", role, -chrono::Duration::seconds(1))
        } else {
            ("acme", token, chrono::Duration::hours(1))
        };
        Ok(Role::parse(role).map(|role| AdminSession {
            tenant_id: TenantId::parse(tenant).unwrap(),
            username: format!("{}-user", role.as_str()),
            role,
            expires_at: Utc::now() + ttl,
        }))
    }
    async fn revoke(&self, _: &str) -> Result<(), AuthError> {
        Ok(())
    }
}

struct Ready(Result<(), String>);

#[async_trait]
impl Readiness for Ready {
    async fn check(&self) -> Result<(), String> {
        self.0.clone()
    }
}

/// A node whose API check passes and whose roles report as given.
struct WithRoles(Vec<wxcm_commands::health::PartReport>);

#[async_trait]
impl Readiness for WithRoles {
    async fn check(&self) -> Result<(), String> {
        Ok(())
    }
    async fn roles(&self) -> Vec<wxcm_commands::health::PartReport> {
        self.0.clone()
    }
}

struct Slow;

#[async_trait]
impl Readiness for Slow {
    async fn check(&self) -> Result<(), String> {
        tokio::time::sleep(Duration::from_secs(5)).await;
        Ok(())
    }
}

fn app() -> Arc<App> {
    Arc::new(App {
        router: Arc::new(NoShards),
        clock: Arc::new(SystemClock),
        sealer: Arc::new(OpaqueSealer),
        limits: LIMITS,
    })
}

pub(crate) fn edge(settings: HttpSettings) -> Router {
    build(app(), Arc::new(Ready(Ok(()))), settings, Arc::new(FixedSessions))
}

pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Value,
}

impl Reply {
    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_else(|| panic!("no error code in {}", self.body))
    }
}

pub(crate) async fn send(router: &Router, req: Request<Body>) -> Reply {
    let response = router.clone().oneshot(req).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = to_bytes(response.into_body(), RESPONSE_BYTES_MAX).await.unwrap();
    let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
    Reply { status, headers, body }
}

pub(crate) fn request(
    method: Method,
    uri: &str,
    token: Option<&str>,
    key: Option<&str>,
    body: Option<String>,
) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    if let Some(k) = key {
        b = b.header(IDEMPOTENCY_KEY_HEADER, k);
    }
    match body {
        Some(json) => b.header(header::CONTENT_TYPE, "application/json").body(Body::from(json)).unwrap(),
        None => b.body(Body::empty()).unwrap(),
    }
}

fn member_uri(suffix: &str) -> String {
    format!("/admin/api/v1/members/{}{suffix}", MemberId::new_random())
}

const KEY: Option<&str> = Some("key-00000001");

fn post_as(role: &str, uri: &str, body: Value) -> Request<Body> {
    request(Method::POST, uri, Some(role), KEY, Some(body.to_string()))
}

/// Every route, with a valid request and the permission it needs.
fn routes() -> Vec<(Method, String, Option<Value>, Permission)> {
    let card = CardNumber::from_serial(42).unwrap();
    let account = json!({
        "name": "Main account",
        "token": "callback-token",
        "encoding_aes_key": "a".repeat(43),
        "app_secret": "app-secret",
    });
    vec![
        (Method::GET, member_uri(""), None, Permission::MemberRead),
        (Method::GET, format!("/admin/api/v1/members/by-card/{card}"), None, Permission::MemberRead),
        (Method::GET, "/admin/api/v1/members/by-openid/oABCdef123456".into(), None, Permission::MemberRead),
        (Method::POST, "/admin/api/v1/members".into(), Some(json!({})), Permission::MemberRegister),
        (
            Method::POST,
            member_uri("/points/grants"),
            Some(json!({"points": 1, "expiry": {"kind": "never"}, "reason": "gift"})),
            Permission::PointsGrant,
        ),
        (
            Method::POST,
            member_uri("/points/deductions"),
            Some(json!({"points": 1, "reason": "fix"})),
            Permission::PointsDeduct,
        ),
        (
            Method::POST,
            member_uri("/cash/deposits"),
            Some(json!({"amount_fen": 1, "reason": "top up"})),
            Permission::CashDeposit,
        ),
        (
            Method::POST,
            member_uri("/cash/charges"),
            Some(json!({"amount_fen": 1, "reason": "coffee"})),
            Permission::CashCharge,
        ),
        (
            Method::POST,
            member_uri("/cash/refunds"),
            Some(json!({"charge_sequence": 2, "amount_fen": 1, "reason": "refund"})),
            Permission::CashRefund,
        ),
        (
            Method::PUT,
            member_uri("/card-level"),
            Some(json!({"card_level": "gold", "reason": "vip"})),
            Permission::CardLevelSet,
        ),
        (Method::GET, member_uri("/ledger?after=0&limit=10"), None, Permission::LedgerRead),
        (Method::GET, "/admin/api/v1/tenant".into(), None, Permission::TenantRead),
        (
            Method::PUT,
            "/admin/api/v1/tenant/official-accounts/wx0123456789abcdef".into(),
            Some(account),
            Permission::TenantSettings,
        ),
        (Method::GET, "/admin/api/v1/admin-users".into(), None, Permission::AdminUsers),
        (
            Method::POST,
            "/admin/api/v1/admin-users".into(),
            Some(json!({"username": "ann", "password": "a-long-enough-password", "role": "staff"})),
            Permission::AdminUsers,
        ),
        (
            Method::PUT,
            "/admin/api/v1/admin-users/ann/role".into(),
            Some(json!({"role": "manager"})),
            Permission::AdminUsers,
        ),
        (Method::POST, "/admin/api/v1/admin-users/ann/disable".into(), None, Permission::AdminUsers),
        (Method::POST, "/admin/api/v1/admin-users/ann/enable".into(), None, Permission::AdminUsers),
        (
            Method::POST,
            "/admin/api/v1/admin-users/ann/password-reset".into(),
            Some(json!({"new_password": "another-long-password"})),
            Permission::AdminUsers,
        ),
    ]
}

/// Writes send an idempotency key, reads none.
fn key_for(method: &Method) -> Option<&'static str> {
    if *method == Method::GET {
        None
    } else {
        KEY
    }
}

#[tokio::test]
async fn each_route_enforces_its_permission_for_each_role() {
    let router = edge(HttpSettings::default());
    for (method, uri, body, permission) in routes() {
        for role in [Role::Owner, Role::Manager, Role::Staff, Role::Auditor] {
            let key = key_for(&method);
            let req = request(method.clone(), &uri, Some(role.as_str()), key, body.as_ref().map(Value::to_string));
            let reply = send(&router, req).await;
            if allowed(role, permission) {
                // Past every check, into the application layer (which has no shard for `acme`).
                assert_eq!(
                    (reply.status, reply.code()),
                    (StatusCode::NOT_FOUND, "tenant_not_found"),
                    "{role:?} {method} {uri}"
                );
            } else {
                assert_eq!(
                    (reply.status, reply.code()),
                    (StatusCode::FORBIDDEN, "forbidden"),
                    "{role:?} {method} {uri}"
                );
            }
        }
    }
}

#[tokio::test]
async fn the_real_session_lookup_refuses_unknown_tokens() {
    let router = crate::router(app(), Arc::new(Ready(Ok(()))), HttpSettings::default());
    for token in ["acme.forged", "no-tenant", "UPPER.case"] {
        let reply = send(&router, request(Method::GET, "/admin/api/v1/tenant", Some(token), None, None)).await;
        assert_eq!((reply.status, reply.code()), (StatusCode::UNAUTHORIZED, "unauthenticated"));
    }
}

fn own_password_body() -> Value {
    json!({"current_password": "a-long-enough-password", "new_password": "another-long-password"})
}

#[tokio::test]
async fn every_role_may_change_its_own_password() {
    let router = edge(HttpSettings::default());
    for role in [Role::Owner, Role::Manager, Role::Staff, Role::Auditor] {
        let body = Some(own_password_body().to_string());
        let req = request(Method::PUT, "/admin/api/v1/me/password", Some(role.as_str()), KEY, body);
        let reply = send(&router, req).await;
        assert_eq!((reply.status, reply.code()), (StatusCode::NOT_FOUND, "tenant_not_found"), "{role:?}");
    }
}

#[tokio::test]
async fn admin_user_requests_are_validated_before_any_change() {
    let router = edge(HttpSettings::default());
    let users = "/admin/api/v1/admin-users";
    let create =
        |username: &str, password: &str, role: &str| json!({"username": username, "password": password, "role": role});
    let password = "a-long-enough-password";
    let cases = [
        (users.to_owned(), create("ann", password, "king"), "invalid_body"),
        (users.to_owned(), create("ann lee", password, "staff"), "invalid_username"),
        (users.to_owned(), create(&"u".repeat(65), password, "staff"), "invalid_username"),
        (users.to_owned(), create("ann", "short", "staff"), "invalid_password"),
        (users.to_owned(), create("ann", &"p".repeat(129), "staff"), "invalid_password"),
        (
            users.to_owned(),
            json!({"username": "ann", "password": password, "role": "staff", "admin": true}),
            "invalid_body",
        ),
        (format!("{users}/ann/role"), json!({"role": "root"}), "invalid_body"),
        (format!("{users}/ann/password-reset"), json!({"new_password": "short"}), "invalid_password"),
        (format!("{users}/ann/password-reset"), json!({"password": password}), "invalid_body"),
    ];
    for (uri, body, code) in cases {
        let method = if uri.ends_with("/role") { Method::PUT } else { Method::POST };
        let reply = send(&router, request(method, &uri, Some("owner"), KEY, Some(body.to_string()))).await;
        assert_eq!((reply.status, reply.code()), (StatusCode::UNPROCESSABLE_ENTITY, code), "{uri} {body}");
    }
    let short_new = json!({"current_password": password, "new_password": "short"}).to_string();
    let reply =
        send(&router, request(Method::PUT, "/admin/api/v1/me/password", Some("staff"), KEY, Some(short_new))).await;
    assert_eq!((reply.status, reply.code()), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_password"));
    // Usernames in the path: bounded, then validated.
    let bad =
        send(&router, request(Method::POST, &format!("{users}/ann%20lee/disable"), Some("owner"), KEY, None)).await;
    assert_eq!((bad.status, bad.code()), (StatusCode::BAD_REQUEST, "invalid_username"));
    let long = format!("{users}/{}/disable", "u".repeat(PATH_PARAM_BYTES_MAX + 1));
    let long = send(&router, request(Method::POST, &long, Some("owner"), KEY, None)).await;
    assert_eq!((long.status, long.code()), (StatusCode::BAD_REQUEST, "invalid_path"));
}

#[tokio::test]
async fn logout_answers_no_content() {
    let router = edge(HttpSettings::default());
    let reply = send(&router, request(Method::POST, "/admin/api/v1/logout", Some("staff"), None, None)).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn mutations_need_a_valid_idempotency_key() {
    let router = edge(HttpSettings::default());
    let mut writes: Vec<_> = routes().into_iter().filter(|r| r.0 != Method::GET).collect();
    writes.push((Method::PUT, "/admin/api/v1/me/password".into(), Some(own_password_body()), Permission::MemberRead));
    for (method, uri, body, _) in writes {
        let body = body.map(|b| b.to_string());
        let missing = send(&router, request(method.clone(), &uri, Some("owner"), None, body.clone())).await;
        assert_eq!((missing.status, missing.code()), (StatusCode::BAD_REQUEST, "idempotency_key_missing"), "{uri}");
        let bad = send(&router, request(method.clone(), &uri, Some("owner"), Some("has space"), body)).await;
        assert_eq!((bad.status, bad.code()), (StatusCode::BAD_REQUEST, "idempotency_key_invalid"), "{uri}");
    }
}

#[tokio::test]
async fn amounts_are_refused_before_any_command_runs() {
    let router = edge(HttpSettings::default());
    let deposit = member_uri("/cash/deposits");
    let cases = [
        (json!({"amount_fen": 0, "reason": "x"}), StatusCode::UNPROCESSABLE_ENTITY, "invalid_amount"),
        (json!({"amount_fen": -100, "reason": "x"}), StatusCode::UNPROCESSABLE_ENTITY, "invalid_amount"),
        (
            json!({"amount_fen": LIMITS.amount_fen_max + 1, "reason": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_amount",
        ),
        (json!({"amount_fen": 1.5, "reason": "x"}), StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        (json!({"amount_fen": "100", "reason": "x"}), StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        (json!({"reason": "x"}), StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        (json!({"amount_fen": 1, "reason": "x", "sign": -1}), StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
        (json!({"amount_fen": 1, "reason": ""}), StatusCode::UNPROCESSABLE_ENTITY, "invalid_text"),
        (json!({"amount_fen": LIMITS.amount_fen_max, "reason": "x"}), StatusCode::NOT_FOUND, "tenant_not_found"),
    ];
    for (body, status, code) in cases {
        let reply = send(&router, post_as("owner", &deposit, body.clone())).await;
        assert_eq!((reply.status, reply.code()), (status, code), "{body}");
    }
    let grants = member_uri("/points/grants");
    let points = |p: i64, expiry: Value| json!({"points": p, "expiry": expiry, "reason": "gift"});
    let cases = [
        (points(LIMITS.points_max, json!({"kind": "end_of_month"})), StatusCode::NOT_FOUND, "tenant_not_found"),
        (points(LIMITS.points_max + 1, json!({"kind": "never"})), StatusCode::UNPROCESSABLE_ENTITY, "invalid_amount"),
        (points(10, json!({"kind": "days", "days": 0})), StatusCode::UNPROCESSABLE_ENTITY, "invalid_expiry"),
        (points(10, json!({"kind": "days", "days": 30})), StatusCode::NOT_FOUND, "tenant_not_found"),
        (points(10, json!({"kind": "someday"})), StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
    ];
    for (body, status, code) in cases {
        let reply = send(&router, post_as("owner", &grants, body.clone())).await;
        assert_eq!((reply.status, reply.code()), (status, code), "{body}");
    }
}

#[tokio::test]
async fn json_rejections_have_the_error_shape() {
    let router = edge(HttpSettings::default());
    let uri = member_uri("/cash/charges");
    let malformed = send(&router, request(Method::POST, &uri, Some("staff"), KEY, Some("{not json".into()))).await;
    assert_eq!((malformed.status, malformed.code()), (StatusCode::BAD_REQUEST, "malformed_json"));
    let no_type = Request::builder()
        .method(Method::POST)
        .uri(&uri)
        .header(header::AUTHORIZATION, "Bearer staff")
        .header(IDEMPOTENCY_KEY_HEADER, KEY.unwrap())
        .body(Body::from(r#"{"amount_fen":1,"reason":"x"}"#))
        .unwrap();
    let no_type = send(&router, no_type).await;
    assert_eq!((no_type.status, no_type.code()), (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"));
}

#[tokio::test]
async fn bodies_are_limited() {
    let limit = 256;
    let router = edge(HttpSettings { body_bytes_max: limit, ..HttpSettings::default() });
    let uri = member_uri("/cash/deposits");
    let body_of = |len: usize| {
        let skeleton = json!({"amount_fen": 1, "reason": "r".repeat(100), "reference": ""}).to_string();
        json!({"amount_fen": 1, "reason": "r".repeat(100), "reference": "f".repeat(len - skeleton.len())}).to_string()
    };
    assert_eq!(body_of(limit).len(), limit);
    let at_limit = send(&router, request(Method::POST, &uri, Some("owner"), KEY, Some(body_of(limit)))).await;
    assert_eq!((at_limit.status, at_limit.code()), (StatusCode::NOT_FOUND, "tenant_not_found"));
    let past_limit = send(&router, request(Method::POST, &uri, Some("owner"), KEY, Some(body_of(limit + 1)))).await;
    assert_eq!((past_limit.status, past_limit.code()), (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"));
}

#[tokio::test]
async fn a_dispatch_takes_a_body_up_to_its_own_limit() {
    let router = edge(HttpSettings::default());
    let max = crate::resources::coupons::DISPATCH_BODY_BYTES_MAX;
    let uri = format!("/admin/api/v1/coupon-templates/{}/dispatches", uuid::Uuid::nil());
    let ids: Vec<String> = (0..wxcm_commands::coupons::dispatch::DISPATCH_LIST_MAX)
        .map(|n| uuid::Uuid::from_u128(n as u128 + 1).to_string())
        .collect();
    let body = json!({"target": {"kind": "members", "member_ids": ids}}).to_string();
    let padded = |len: usize| format!("{body}{}", " ".repeat(len - body.len()));
    let at_limit = send(&router, request(Method::POST, &uri, Some("owner"), KEY, Some(padded(max)))).await;
    assert_ne!(at_limit.status, StatusCode::PAYLOAD_TOO_LARGE, "{:?}", at_limit.code());
    let past_limit = send(&router, request(Method::POST, &uri, Some("owner"), KEY, Some(padded(max + 1)))).await;
    assert_eq!((past_limit.status, past_limit.code()), (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"));
}

#[tokio::test]
async fn path_and_query_parameters_are_bounded() {
    let router = edge(HttpSettings::default());
    let get = |uri: String| request(Method::GET, &uri, Some("auditor"), None, None);
    let long = "o".repeat(PATH_PARAM_BYTES_MAX + 1);
    let reply = send(&router, get(format!("/admin/api/v1/members/by-openid/{long}"))).await;
    assert_eq!((reply.status, reply.code()), (StatusCode::BAD_REQUEST, "invalid_path"));
    let reply = send(&router, get("/admin/api/v1/members/not-a-uuid".into())).await;
    assert_eq!((reply.status, reply.code()), (StatusCode::BAD_REQUEST, "invalid_member_id"));
    let reply = send(&router, get("/admin/api/v1/members/by-card/1234567890".into())).await;
    assert_eq!((reply.status, reply.code()), (StatusCode::BAD_REQUEST, "invalid_card_no"));
    let max = wxcm_commands::ports::LEDGER_PAGE_MAX;
    let reply = send(&router, get(member_uri(&format!("/ledger?limit={max}")))).await;
    assert_eq!((reply.status, reply.code()), (StatusCode::NOT_FOUND, "tenant_not_found"));
    let reply = send(&router, get(member_uri(&format!("/ledger?limit={}", max + 1)))).await;
    assert_eq!((reply.status, reply.code()), (StatusCode::BAD_REQUEST, "invalid_limit"));
    let reply = send(&router, get(member_uri("/ledger?after=-1"))).await;
    assert_eq!((reply.status, reply.code()), (StatusCode::BAD_REQUEST, "invalid_query"));
    let reply = send(&router, get(member_uri("/ledger?tenant=other"))).await;
    assert_eq!((reply.status, reply.code()), (StatusCode::BAD_REQUEST, "invalid_query"));
}

#[tokio::test]
async fn correlation_ids_are_echoed_or_made() {
    let router = edge(HttpSettings::default());
    let id = uuid::Uuid::new_v4();
    let mut req = request(Method::GET, "/healthz", None, None, None);
    req.headers_mut().insert(CORRELATION_ID_HEADER, id.to_string().parse().unwrap());
    let reply = send(&router, req).await;
    assert_eq!(reply.headers[CORRELATION_ID_HEADER], id.to_string().as_str());
    let reply = send(&router, request(Method::GET, "/admin/api/v1/tenant", None, None, None)).await;
    let made = reply.headers[CORRELATION_ID_HEADER].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(made).is_ok());
    let mut req = request(Method::GET, "/healthz", None, None, None);
    req.headers_mut().insert(CORRELATION_ID_HEADER, "nope".parse().unwrap());
    let reply = send(&router, req).await;
    assert_eq!((reply.status, reply.code()), (StatusCode::BAD_REQUEST, "invalid_correlation_id"));
}

#[tokio::test]
async fn health_readiness_and_the_document() {
    let router = edge(HttpSettings::default());
    let reply = send(&router, request(Method::GET, "/healthz", None, None, None)).await;
    assert_eq!((reply.status, reply.body), (StatusCode::OK, json!({"status": "ok"})));
    let reply = send(&router, request(Method::GET, "/readyz", None, None, None)).await;
    assert_eq!(reply.status, StatusCode::OK);
    let down = build(
        app(),
        Arc::new(Ready(Err("database unreachable".into()))),
        HttpSettings::default(),
        Arc::new(FixedSessions),
    );
    let reply = send(&down, request(Method::GET, "/readyz", None, None, None)).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.body["reason"], "database unreachable");
    let reply = send(&router, request(Method::GET, "/openapi.json", None, None, None)).await;
    assert_eq!(reply.status, StatusCode::OK);
    // The served document states this server's limits.
    assert_eq!(reply.body, serde_json::from_str::<Value>(&crate::openapi_json_for(&app().limits)).unwrap());
    assert_eq!(reply.body["components"]["schemas"]["CashBody"]["properties"]["amount_fen"]["maximum"], 10_000);
}

#[tokio::test]
async fn readiness_names_each_failing_role_and_the_api_view_ignores_them() {
    use wxcm_commands::health::{PartKey, PartReport};
    let part =
        |role: &'static str, shard: &str, name: &str, ready: bool, leader: Option<bool>, detail: &str| PartReport {
            key: PartKey { role, shard: shard.into(), name: name.into() },
            ready,
            leader,
            detail: detail.into(),
        };
    let roles = vec![
        part("relay", "main", "", true, Some(true), "leader: publishing"),
        part("projector", "east", "members", false, Some(true), "stalled: events wait but none arrived"),
        part("nats", "", "", false, None, "disconnected: reconnecting to the seed servers"),
    ];
    let router = build(app(), Arc::new(WithRoles(roles)), HttpSettings::default(), Arc::new(FixedSessions));
    let reply = send(&router, request(Method::GET, "/readyz", None, None, None)).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        reply.body["reason"],
        "projector east/members: stalled: events wait but none arrived; nats: disconnected: reconnecting to the seed servers"
    );
    let parts = reply.body["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 4, "the API's own check and three roles");
    assert_eq!(parts[0], json!({"role": "api", "shard": "", "name": "", "ready": true, "detail": "shards answer"}));
    assert_eq!(parts[1]["leader"], true);
    // What a load balancer asks: can this node serve requests?
    let reply = send(&router, request(Method::GET, "/readyz?role=api", None, None, None)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["parts"].as_array().unwrap().len(), 1);
    let reply = send(&router, request(Method::GET, "/readyz?role=relay", None, None, None)).await;
    assert_eq!((reply.status, reply.code()), (StatusCode::BAD_REQUEST, "invalid_role"));
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let router = edge(HttpSettings::default());
    let reply = send(&router, request(Method::GET, "/admin/api/v1/nothing-here", None, None, None)).await;
    assert_eq!((reply.status, reply.code()), (StatusCode::NOT_FOUND, "route_not_found"));
    let reply = send(&router, request(Method::DELETE, "/healthz", None, None, None)).await;
    assert_eq!((reply.status, reply.code()), (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"));
}

#[tokio::test]
async fn slow_requests_time_out() {
    let settings = HttpSettings { request_timeout_ms: 20, ..HttpSettings::default() };
    let router = build(app(), Arc::new(Slow), settings, Arc::new(FixedSessions));
    let reply = send(&router, request(Method::GET, "/readyz", None, None, None)).await;
    assert_eq!((reply.status, reply.code()), (StatusCode::SERVICE_UNAVAILABLE, "timeout"));
    assert!(reply.headers.contains_key(header::RETRY_AFTER));
    assert!(reply.headers.contains_key(CORRELATION_ID_HEADER));
}

fn login(tenant: &str, username: &str, from: Option<SocketAddr>) -> Request<Body> {
    let body = json!({"tenant_id": tenant, "username": username, "password": "wrong password"}).to_string();
    let mut req = request(Method::POST, "/admin/api/v1/login", None, None, Some(body));
    if let Some(addr) = from {
        req.extensions_mut().insert(ConnectInfo(addr));
    }
    req
}

#[tokio::test]
async fn failed_logins_look_alike() {
    let router = edge(HttpSettings::default());
    let addr: SocketAddr = "10.0.0.1:5000".parse().unwrap();
    let unknown_tenant = send(&router, login("nobody", "alice", Some(addr))).await;
    let bad_tenant = send(&router, login("NOT A TENANT", "alice", Some(addr))).await;
    let bad_user = send(&router, login("acme", "no spaces allowed", Some(addr))).await;
    for reply in [&unknown_tenant, &bad_tenant, &bad_user] {
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(reply.body, unknown_tenant.body);
    }
    assert_eq!(unknown_tenant.code(), "invalid_credentials");
    let extra = json!({"tenant_id": "acme", "username": "a", "password": "p", "role": "owner"}).to_string();
    let reply = send(&router, request(Method::POST, "/admin/api/v1/login", None, None, Some(extra))).await;
    assert_eq!((reply.status, reply.code()), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"));
}

#[tokio::test]
async fn logins_are_rate_limited_per_client() {
    let attempts = 3;
    let router = edge(HttpSettings { login_attempts_per_minute: attempts, ..HttpSettings::default() });
    let addr: SocketAddr = "10.0.0.1:5000".parse().unwrap();
    for i in 0..attempts {
        // Different users, same client.
        let reply = send(&router, login("acme", &format!("user{i}"), Some(addr))).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    let reply = send(&router, login("acme", "another", Some(addr))).await;
    assert_eq!((reply.status, reply.code()), (StatusCode::TOO_MANY_REQUESTS, "rate_limited"));
    let retry: u64 = reply.headers[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let elsewhere: SocketAddr = "10.0.0.2:5000".parse().unwrap();
    assert_eq!(send(&router, login("acme", "another", Some(elsewhere))).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn logins_are_rate_limited_per_user() {
    let attempts = 3;
    let router = edge(HttpSettings { login_attempts_per_minute: attempts, ..HttpSettings::default() });
    for i in 0..attempts {
        let from: SocketAddr = format!("10.0.1.{i}:5000").parse().unwrap();
        assert_eq!(send(&router, login("acme", "alice", Some(from))).await.status, StatusCode::UNAUTHORIZED);
    }
    let from: SocketAddr = "10.0.2.1:5000".parse().unwrap();
    let reply = send(&router, login("acme", "alice", Some(from))).await;
    assert_eq!((reply.status, reply.code()), (StatusCode::TOO_MANY_REQUESTS, "rate_limited"));
    assert_eq!(send(&router, login("acme", "bob", Some(from))).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn without_connect_info_all_clients_share_one_bucket() {
    let router = edge(HttpSettings { login_attempts_per_minute: 2, ..HttpSettings::default() });
    assert_eq!(send(&router, login("acme", "a1", None)).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(send(&router, login("acme", "a2", None)).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(send(&router, login("acme", "a3", None)).await.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn tenant_settings_answers_never_echo_secrets() {
    let router = edge(HttpSettings::default());
    let uri = "/admin/api/v1/tenant/official-accounts/wx0123456789abcdef";
    // Wrong-typed secret: the error names the problem without echoing other secrets.
    let body = json!({"name": "n", "token": "tok-SECRET-1", "encoding_aes_key": "short", "app_secret": "sec-SECRET-2"});
    let reply = send(&router, request(Method::PUT, uri, Some("owner"), KEY, Some(body.to_string()))).await;
    assert_eq!((reply.status, reply.code()), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_account"));
    assert!(!reply.body.to_string().contains("SECRET"), "{}", reply.body);
    let reply = send(
        &router,
        request(Method::PUT, "/admin/api/v1/tenant/official-accounts/nope", Some("owner"), KEY, Some(body.to_string())),
    )
    .await;
    assert_eq!((reply.status, reply.code()), (StatusCode::BAD_REQUEST, "invalid_appid"));
}

// ---------- the admin route table, walked for every role ----------

const ROLES: [Role; 4] = [Role::Owner, Role::Manager, Role::Staff, Role::Auditor];

/// The route's path under the prefix with a well-formed placeholder for each parameter.
fn concrete(path: &str) -> String {
    let card = CardNumber::from_serial(42).unwrap().to_string();
    let uuid = uuid::Uuid::new_v4().to_string();
    let mut out = format!("{}{path}", crate::ADMIN_API_PREFIX);
    for (param, value) in [
        ("{member_id}", MemberId::new_random().to_string()),
        ("{card_no}", card),
        ("{openid}", "oABCdef123456".to_owned()),
        ("{appid}", "wx0123456789abcdef".to_owned()),
        ("{username}", "ann".to_owned()),
        ("{template_id}", uuid.clone()),
        ("{coupon_id}", uuid.clone()),
        ("{product_id}", uuid.clone()),
        ("{mall_order_id}", uuid.clone()),
        ("{campaign_id}", uuid.clone()),
        ("{item_id}", uuid.clone()),
        ("{withdrawal_id}", uuid.clone()),
        ("{job_id}", uuid),
        ("{period_no}", "1".to_owned()),
        ("{order_id}", "rc0000000001".to_owned()),
    ] {
        out = out.replace(param, &value);
    }
    assert!(!out.contains('{'), "no placeholder for a parameter of {path}: add one to `concrete`");
    out
}

/// (method, full path) → whether the document gives it a request body, for every admin operation.
fn documented_admin_operations() -> std::collections::BTreeMap<(String, String), (bool, bool)> {
    let doc = crate::openapi::document();
    let mut out = std::collections::BTreeMap::new();
    for (path, item) in &doc.paths.paths {
        if !path.starts_with(crate::ADMIN_API_PREFIX) {
            continue;
        }
        let operations = [
            ("GET", &item.get),
            ("PUT", &item.put),
            ("POST", &item.post),
            ("DELETE", &item.delete),
            ("PATCH", &item.patch),
        ];
        for (method, operation) in operations {
            if let Some(op) = operation {
                let key = (method.to_owned(), path.clone());
                out.insert(key, (op.request_body.is_some(), op.security.is_some()));
            }
        }
    }
    out
}

fn table() -> Vec<crate::admin_routes::AdminRoute> {
    crate::admin_routes::admin_routes().table().to_vec()
}

/// A request to the route with placeholders for its parameters, an idempotency
/// key on writes and, unless given, the smallest body (`{}` on writes).
fn walk_request(route: &crate::admin_routes::AdminRoute, token: Option<&str>, body: Option<&str>) -> Request<Body> {
    walk(&route.method, route.path, token, body)
}

fn walk(method: &Method, path: &str, token: Option<&str>, body: Option<&str>) -> Request<Body> {
    let body = body.map(str::to_owned).or_else(|| (*method != Method::GET).then(|| "{}".to_owned()));
    request(method.clone(), &concrete(path), token, key_for(method), body)
}

#[test]
fn the_route_table_is_the_openapi_document() {
    let documented = documented_admin_operations();
    let mut registered = std::collections::BTreeMap::new();
    for route in table() {
        let key = (route.method.to_string(), format!("{}{}", crate::ADMIN_API_PREFIX, route.path));
        let public = route.access == crate::admin_routes::Access::Public;
        assert!(registered.insert(key.clone(), public).is_none(), "registered twice: {key:?}");
        let Some((_, secured)) = documented.get(&key) else { panic!("route not in the OpenAPI document: {key:?}") };
        assert_eq!(*secured, !public, "{key:?}: documented security differs from the table");
    }
    for key in documented.keys() {
        assert!(registered.contains_key(key), "documented but not routed: {key:?}");
    }
    // Only login is public.
    let public: Vec<_> = registered.iter().filter(|(_, public)| **public).map(|(k, _)| k.1.as_str()).collect();
    assert_eq!(public, ["/admin/api/v1/login"]);
}

#[tokio::test]
async fn every_documented_admin_operation_but_login_refuses_anonymous_callers() {
    // Probes the document against the router itself, so a route the table and
    // the document both lack would still show up here (as a 404, not a 401).
    let router = edge(HttpSettings::default());
    for ((method, path), (_, secured)) in documented_admin_operations() {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let relative = path.trim_start_matches(crate::ADMIN_API_PREFIX);
        for token in [None, Some("not-a-session"), Some("expired-owner"), Some("expired-staff")] {
            let reply = send(&router, walk(&method, relative, token, None)).await;
            if secured {
                assert_eq!(
                    (reply.status, reply.code()),
                    (StatusCode::UNAUTHORIZED, "unauthenticated"),
                    "{method} {path} {token:?}"
                );
                assert_eq!(reply.headers[header::WWW_AUTHENTICATE], "Bearer");
            } else {
                assert_ne!(reply.status, StatusCode::NOT_FOUND, "{method} {path}: not routed");
                assert_ne!(reply.body["error"]["code"], "unauthenticated", "{method} {path}");
            }
        }
    }
}

#[tokio::test]
async fn every_admin_route_answers_every_role_by_the_permission_table() {
    use crate::admin_routes::Access;
    let router = edge(HttpSettings::default());
    for route in table() {
        let what = format!("{} {}", route.method, route.path);
        for role in ROLES {
            let reply = send(&router, walk_request(&route, Some(role.as_str()), None)).await;
            let refused = match route.access {
                Access::Needs(permission) => !allowed(role, permission),
                Access::AnySession | Access::Public => false,
            };
            if refused {
                assert_eq!((reply.status, reply.code()), (StatusCode::FORBIDDEN, "forbidden"), "{role:?} {what}");
            } else if route.access == Access::Public {
                // Login with an empty body: refused as a login, never for the session.
                assert_ne!(reply.body["error"]["code"], "unauthenticated", "{role:?} {what}");
            } else {
                assert!(
                    reply.status != StatusCode::UNAUTHORIZED && reply.status != StatusCode::FORBIDDEN,
                    "{role:?} {what}: {} {}",
                    reply.status,
                    reply.body
                );
            }
            // Another tenant's session with the same role: the same check, and
            // never a success on this tenant's ids (only the caller's own
            // tenant is reachable; here it has no shard, so nothing succeeds
            // but logout, which ends the caller's own session).
            let other = format!("other-{}", role.as_str());
            let theirs = send(&router, walk_request(&route, Some(&other), None)).await;
            if refused {
                assert_eq!((theirs.status, theirs.code()), (StatusCode::FORBIDDEN, "forbidden"), "{other} {what}");
            } else if route.path != "/logout" {
                assert!(!theirs.status.is_success(), "{other} {what}: {} {}", theirs.status, theirs.body);
                assert!(
                    theirs.status != StatusCode::UNAUTHORIZED && theirs.status != StatusCode::FORBIDDEN
                        || route.access == Access::Public,
                    "{other} {what}: {}",
                    theirs.status
                );
            }
        }
    }
}

#[tokio::test]
async fn every_admin_body_must_be_one_json_object() {
    let router = edge(HttpSettings::default());
    let documented = documented_admin_operations();
    let not_objects = ["[]", r#"[1,"x",null]"#, r#""x""#, "1", "null", "  [ ]", "true"];
    let mut with_body = 0;
    for route in table() {
        let full = (route.method.to_string(), format!("{}{}", crate::ADMIN_API_PREFIX, route.path));
        let Some((takes_body, _)) = documented.get(&full).copied() else { panic!("undocumented {full:?}") };
        let what = format!("{} {}", route.method, route.path);
        if takes_body {
            with_body += 1;
            for body in not_objects {
                let reply = send(&router, walk_request(&route, Some("owner"), Some(body))).await;
                assert_eq!(
                    (reply.status, reply.code()),
                    (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
                    "{what} with {body}"
                );
            }
            let reply = send(&router, walk_request(&route, Some("owner"), Some("[1,"))).await;
            assert!(reply.status.is_client_error(), "{what} with an unparseable body: {}", reply.status);
        } else {
            // A route that documents no body ignores one: the same answer with or without it.
            let plain = send(&router, walk_request(&route, Some("owner"), Some(""))).await;
            let array = send(&router, walk_request(&route, Some("owner"), Some(r#"[1,"x",null]"#))).await;
            assert_eq!(
                (plain.status, plain.body["error"].clone()),
                (array.status, array.body["error"].clone()),
                "{what}"
            );
        }
    }
    assert!(with_body >= 20, "only {with_body} routes take a body?");
}
