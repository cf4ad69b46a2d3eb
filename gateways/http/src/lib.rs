//! The HTTP edge of wxcm: the admin API over the application layer
//! (`wxcm-commands`). It parses and bounds every input, authenticates the
//! bearer session, checks the role, and maps every outcome to one JSON error
//! shape. It never talks to a database: everything goes through `commands`.
//!
//! Code map:
//! - [`router`] and [`HttpSettings`]: the public entry points (the
//!   composition root in `infra` serves the router, with
//!   `into_make_service_with_connect_info::<SocketAddr>()` so login is rate
//!   limited per client address);
//! - `resources`: the HTTP surface by resource, one module per OpenAPI tag,
//!   each with its handlers (`#[utoipa::path]`) and its own request and
//!   response types and their validation into application values
//!   (`resources::<resource>` or, for larger ones, `<resource>/mod.rs` with the
//!   handlers and `<resource>/types.rs` with the types):
//!   - `session` (login, logout), `members` (lookups, the member list,
//!     registration), `ledger` (points and cash operations, the member ledger:
//!     bodies become `wxcm_commands::ledger_requests::LedgerRequest`, the value
//!     idempotency hashes), `reports`, `tenant`, `payments`;
//!   - `wechat`: WeChat settings, one module each (`reply_rules`,
//!     `points_rules`, `qr_codes`, `menus`, `authorization`);
//!   - `referral`: members' referral links and the public pages they open
//!     (`/m/referral/...`);
//!   - `health`, `member_api` (`/m/api/v1`), and the inbound protocol
//!     endpoints `wechat_callback` and `pay_notify`, which answer in WeChat's
//!     and Pay's own formats rather than with `ApiError`;
//! - `extract`: extractors that reject with `ApiError` (JSON, path, query,
//!   session + permission, idempotency key, correlation id);
//! - `permissions`: the role × permission table;
//! - `admin_routes`: the admin API's routes as one table (method, path,
//!   access), the only way a route is registered; every route but login is
//!   behind the session layer (`middleware::require_session`);
//! - `error`: `ApiError`, the one mapping of every failure (application
//!   errors, failed WeChat calls, rejections) to a status and the JSON error body;
//! - `ratelimit`: bounded keyed login limiters;
//! - `middleware`: correlation ids, timeout, JSON fallbacks, panics;
//! - `openapi`: the document behind [`openapi_json`] (committed copy:
//!   `schemas/openapi.json`);
//! - [`wechat_edge`]: the callback endpoints' settings and the
//!   [`WechatOutbound`] port (late replies, QR codes, menus, OAuth);
//! - [`wechat_outbound`]: [`ClientOutbound`], the [`WechatOutbound`] of a node
//!   over the real client (callbacks' late replies, component chain, and the
//!   admin API's QR codes, menus, OAuth and authorization start).
//!
//! Invariants: the session's tenant is the only tenant a request can reach;
//! no handler runs a command before its input is validated; no response
//! carries a secret, a token other than the one just issued, or an internal
//! error detail.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

mod admin_routes;
mod doc;
mod error;
mod extract;
mod middleware;
mod openapi;
mod permissions;
mod ratelimit;
mod resources;
mod state;
#[cfg(test)]
mod tests;
pub mod wechat_edge;
pub mod wechat_outbound;
mod whole_numbers;

use ratelimit::LoginLimiter;
pub use resources::member_api::MemberPorts;
use resources::{
    campaigns, card_levels, commissions, coupons, distribution, health, mall, member_api, pay_notify, referral,
    wechat_callback,
};
use state::{AppSessions, AppState, SessionResolver};
pub use wechat_edge::{ComponentCredentials, WechatEdge, WechatOutbound, WechatSettings};
pub use wechat_outbound::ClientOutbound;

/// Default request body limit (64 KiB).
pub const BODY_BYTES_MAX_DEFAULT: usize = 64 * 1024;
/// Default login attempts per minute, per client address and per user.
pub const LOGIN_ATTEMPTS_PER_MINUTE_DEFAULT: u32 = 10;
/// Default time a request may take before it is answered 503 `timeout`.
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Prefix of the admin API.
pub const ADMIN_API_PREFIX: &str = "/admin/api/v1";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    /// Largest accepted request body; beyond it 413.
    pub body_bytes_max: usize,
    /// Login attempts per minute per client address and per (tenant, username);
    /// beyond it 429. Zero is treated as one.
    pub login_attempts_per_minute: u32,
    /// Time a request may take; beyond it 503 `timeout`.
    pub request_timeout_ms: u64,
    /// Reverse proxies whose `X-Forwarded-For` is believed (`extract::ClientIp`).
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            body_bytes_max: BODY_BYTES_MAX_DEFAULT,
            login_attempts_per_minute: LOGIN_ATTEMPTS_PER_MINUTE_DEFAULT,
            request_timeout_ms: REQUEST_TIMEOUT_MS_DEFAULT,
            trusted_proxies: Vec::new(),
        }
    }
}

/// Whether the node can serve (database reachable, migrations applied, ...);
/// implemented by the composition root.
#[async_trait]
pub trait Readiness: Send + Sync {
    /// The API's own check: can requests be served (the shards answer)?
    async fn check(&self) -> Result<(), String>;
    /// The node's long-lived roles (relay, scheduler, projectors, NATS), each
    /// ready or not, with why. None on a node without them.
    async fn roles(&self) -> Vec<wxcm_commands::health::PartReport> {
        Vec::new()
    }
}

/// The HTTP application: health, readiness, the OpenAPI document and the admin API.
pub fn router(app: Arc<wxcm_commands::App>, readiness: Arc<dyn Readiness>, settings: HttpSettings) -> Router {
    let edge = Arc::new(WechatEdge::new(WechatSettings::default(), None, app.clock.clone()));
    router_with(app, readiness, settings, edge)
}

/// [`router`] with the WeChat callback endpoints' settings and outbound side.
pub fn router_with(
    app: Arc<wxcm_commands::App>,
    readiness: Arc<dyn Readiness>,
    settings: HttpSettings,
    wechat: Arc<WechatEdge>,
) -> Router {
    router_with_member(app, readiness, settings, wechat, MemberPorts::default())
}

/// [`router_with`] plus the member API's ports (OAuth, Pay, notify base URL).
pub fn router_with_member(
    app: Arc<wxcm_commands::App>,
    readiness: Arc<dyn Readiness>,
    settings: HttpSettings,
    wechat: Arc<WechatEdge>,
    member: MemberPorts,
) -> Router {
    let sessions = Arc::new(AppSessions(app.clone()));
    build_with(app, readiness, settings, sessions, wechat, member)
}

/// The pretty-printed OpenAPI document with the default limits (the committed
/// `schemas/openapi.json`).
pub fn openapi_json() -> String {
    openapi_json_for(&wxcm_commands::ports::Limits::default())
}

/// The document of a server with these limits (served at `/openapi.json`).
fn openapi_json_for(limits: &wxcm_commands::ports::Limits) -> String {
    openapi::document_for(limits).to_pretty_json().expect("the OpenAPI document serializes")
}

#[cfg(test)]
fn build(
    app: Arc<wxcm_commands::App>,
    readiness: Arc<dyn Readiness>,
    settings: HttpSettings,
    sessions: Arc<dyn SessionResolver>,
) -> Router {
    let edge = Arc::new(WechatEdge::new(WechatSettings::default(), None, app.clock.clone()));
    build_with(app, readiness, settings, sessions, edge, MemberPorts::default())
}

fn build_with(
    app: Arc<wxcm_commands::App>,
    readiness: Arc<dyn Readiness>,
    settings: HttpSettings,
    sessions: Arc<dyn SessionResolver>,
    wechat: Arc<WechatEdge>,
    member: MemberPorts,
) -> Router {
    let attempts = NonZeroU32::new(settings.login_attempts_per_minute).unwrap_or_else(|| {
        tracing::warn!("login_attempts_per_minute is 0; using 1");
        NonZeroU32::MIN
    });
    let openapi_json = openapi_json_for(&app.limits).into();
    let state = AppState {
        app,
        sessions,
        readiness,
        login_limits: Arc::new(LoginLimiter::new(attempts)),
        openapi_json,
        wechat: wechat.clone(),
        member,
        body_bytes_max: settings.body_bytes_max,
    };
    let admin = admin_routes::admin_routes().into_router(state.clone());
    let timeout = Duration::from_millis(settings.request_timeout_ms);
    // Layers wrap from the bottom up: trace sees everything, the correlation id
    // is on every response (timeouts and panics included), the body limit is
    // enforced by the JSON extractor so a 413 has the JSON error shape.
    // Callback bodies have their own cap (checked in the handler with a WeChat-style
    // answer); the layer only stops bodies far beyond any callback.
    let callbacks = Router::new()
        .route("/mp/{appid}", get(wechat_callback::verify_url).post(wechat_callback::receive))
        .route("/component/mp/{appid}", post(wechat_callback::receive_component))
        .route("/component/events", post(wechat_callback::component_events))
        .layer(DefaultBodyLimit::max(wechat.settings.body_bytes_max.saturating_add(1)));
    // Pay notification handlers read their body themselves, at most
    // PAY_NOTIFY_BODY_BYTES_MAX: a larger one is answered in Pay's format and
    // recorded, never with the framework's plain-text 413.
    let pay_notifications = Router::new()
        .route("/v2/{appid}", post(pay_notify::notify_v2))
        .route("/v3/{appid}", post(pay_notify::notify_v3))
        .route("/refund/{appid}", post(pay_notify::notify_refund_v2));
    let member_api = Router::new()
        .route("/sessions", post(member_api::create_session))
        .route("/me", get(member_api::me))
        .route("/recharges", post(member_api::create_recharge))
        .route("/recharges/{order_id}", get(member_api::get_recharge))
        .route("/coupon-templates", get(coupons::member_claimable))
        .route("/coupons", get(coupons::member_list))
        .route("/coupons/claims", post(coupons::member_claim))
        .route("/mall/products", get(mall::member_products))
        .route("/mall/orders", get(mall::member_orders).post(mall::member_place_order))
        .route("/mall/orders/{order_id}", get(mall::member_order))
        .route("/mall/orders/{order_id}/payment", post(mall::member_pay))
        .route("/mall/orders/{order_id}/wechat-pay", post(mall::member_wechat_pay))
        .route("/mall/orders/{order_id}/cancel", post(mall::member_cancel))
        .route("/mall/orders/{order_id}/refund-request", post(mall::member_request_refund))
        .route("/card-code", get(member_api::card_code))
        .route("/card-level", get(card_levels::member_card_level))
        .route("/campaigns", get(campaigns::member_campaigns))
        .route("/campaigns/{campaign_id}/shakes", get(campaigns::member_shakes).post(campaigns::member_shake))
        .route("/campaigns/{campaign_id}/entries", get(campaigns::member_entries).post(campaigns::member_enter))
        .route("/campaigns/{campaign_id}/share-link", get(campaigns::member_share_link))
        .route(
            "/campaigns/{campaign_id}/share-purchases",
            get(campaigns::member_purchases).post(campaigns::member_purchase),
        )
        .route("/campaigns/{campaign_id}/snatch", get(campaigns::member_snatch))
        .route("/campaigns/{campaign_id}/vote-items", get(campaigns::member_items).post(campaigns::member_submit_item))
        .route("/campaigns/{campaign_id}/vote-items/{item_id}/votes", post(campaigns::member_vote))
        .route("/campaigns/{campaign_id}/ranking", get(campaigns::member_ranking))
        .route("/distribution/application", post(distribution::member_apply))
        .route("/distribution/me", get(distribution::member_status))
        .route("/distribution/promotion", get(distribution::member_promotion))
        .route("/distribution/bindings", post(distribution::member_bind))
        .route("/distribution/subordinates", get(distribution::member_subordinates))
        .route("/distribution/centre", get(commissions::member_centre))
        .route("/distribution/commissions", get(commissions::member_commissions))
        .route("/distribution/withdrawals", get(commissions::member_withdrawals).post(commissions::member_withdraw));
    Router::new()
        .route("/healthz", get(health::healthz))
        .nest("/m/api/v1", member_api)
        .nest("/wechat", callbacks)
        .route(referral::REFERRAL_CALLBACK_PATH, get(referral::referral_callback))
        .route("/m/referral/{tenant}/{member_id}", get(referral::referral_start))
        .route(campaigns::SHARE_CALLBACK_PATH, get(campaigns::share_callback))
        .route(distribution::LINK_CALLBACK_PATH, get(distribution::link_callback))
        .route("/m/distribution/{tenant}/{code}", get(distribution::link_start))
        .route("/m/campaigns/{tenant}/{campaign_id}/share/{member_id}", get(campaigns::share_start))
        .nest("/pay/notify", pay_notifications)
        .route("/readyz", get(health::readyz))
        .route("/openapi.json", get(health::openapi))
        .nest(ADMIN_API_PREFIX, admin)
        .merge(wxcm_console::router())
        .fallback(middleware::route_not_found)
        .method_not_allowed_fallback(middleware::method_not_allowed)
        .layer(DefaultBodyLimit::max(settings.body_bytes_max))
        .layer(axum::Extension(extract::TrustedProxies(settings.trusted_proxies.clone().into())))
        .layer(CatchPanicLayer::custom(middleware::panic_response))
        .layer(axum::middleware::from_fn_with_state(timeout, middleware::timeout))
        .layer(axum::middleware::from_fn(middleware::correlation))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
