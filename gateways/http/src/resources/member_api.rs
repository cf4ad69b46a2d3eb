//! The member API `/m/api/v1` (pages inside WeChat): sessions from WeChat
//! OAuth, the member's own card/points/balance, balance recharges paid with
//! WeChat Pay. A member session reaches only its own member and orders.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;
use wxcm_commands::members;
use wxcm_commands::pay_flows::{self, MemberSession, OauthExchange, RechargeRequest};
use wxcm_commands::pay_port::PayGateway;
use wxcm_commands::CommandContext;
use wxcm_domain::payment::PayApiVersion;
use wxcm_domain::{Actor, AmountFen, AppId, OutTradeNo};

use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ClientIp, IdempotencyHeader};
use crate::resources::members::MemberDto;
use crate::state::AppState;

/// What the member API needs beyond the application (absent: 503 `member_api_unavailable`).
#[derive(Clone, Default)]
pub struct MemberPorts {
    pub oauth: Option<Arc<dyn OauthExchange>>,
    pub pay: Option<Arc<dyn PayGateway>>,
    /// Public base URL Pay notifications go to, e.g. `https://wxcm.example.com`.
    pub notify_base_url: String,
}

pub(crate) fn unavailable() -> ApiError {
    ApiError::conflict("member_api_unavailable", "the member API is not configured on this node")
}

/// The member session of the request: an extractor listed before the
/// idempotency key and the body, so a request without a live session is 401
/// whatever else is wrong with it.
pub struct MemberAuth(pub MemberSession);

impl MemberAuth {
    /// The member acting, and the context of a command it sends under `key`.
    pub(crate) fn command(&self, key: wxcm_domain::IdempotencyKey) -> (Actor, wxcm_commands::CommandContext) {
        let actor = Actor::Member { member_id: self.0.member_id };
        let ctx = wxcm_commands::CommandContext::new(self.0.tenant_id.clone(), key, actor.label());
        (actor, ctx)
    }
}

impl axum::extract::FromRequestParts<AppState> for MemberAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &AppState) -> Result<Self, ApiError> {
        member(state, &parts.headers).await.map(MemberAuth)
    }
}

async fn member(state: &AppState, headers: &HeaderMap) -> Result<MemberSession, ApiError> {
    let unauthorized = || ApiError::Unauthenticated;
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(unauthorized)?;
    pay_flows::member_session(&state.app, token).await?.ok_or_else(unauthorized)
}

#[derive(Deserialize, ToSchema)]
pub struct SessionRequest {
    /// The official account the page runs in.
    #[schema(value_type = crate::doc::OfficialAccountAppId)]
    appid: String,
    /// The WeChat OAuth `code` the page was given: 1..=128 printable ASCII characters without spaces.
    #[schema(min_length = 1, max_length = 128, pattern = "^[!-~]+$")]
    code: String,
}

// Leaves out the OAuth code: until it is exchanged it is a credential. (Not a
// doc comment on the struct: that would become the OpenAPI description.)
impl std::fmt::Debug for SessionRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRequest").field("appid", &self.appid).finish_non_exhaustive()
    }
}

/// A new member session (documentation only).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct SessionCreatedDoc {
    /// `Authorization: Bearer <token>` for the other member routes.
    token: String,
    member_id: uuid::Uuid,
    expires_at: DateTime<Utc>,
}

/// What a JSAPI page passes to `WeixinJSBridge.invoke('getBrandWCPayRequest', …)` (documentation only).
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct JsapiPayParamsDoc {
    app_id: String,
    time_stamp: String,
    nonce_str: String,
    /// `prepay_id=<id>`.
    package: String,
    /// `MD5` or `HMAC-SHA256` (v2), `RSA` (v3).
    sign_type: String,
    pay_sign: String,
}

/// A recharge order created at Pay (documentation only).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RechargeCreatedDoc {
    order_id: String,
    order: crate::resources::payments::PaymentOrderDoc,
    pay_params: JsapiPayParamsDoc,
}

/// `POST /m/api/v1/sessions {appid, code}`
#[utoipa::path(post, path = "/m/api/v1/sessions", tag = "member",
    request_body = SessionRequest,
    responses(
        (status = 201, description = "Signed in: the member found or registered for the OAuth openid", body = SessionCreatedDoc),
        (status = 400, description = "`invalid_appid`, `malformed_json`", body = ErrorBody),
        (status = 401, description = "`invalid_oauth_code`: WeChat refused the code (used, expired or never issued)", body = ErrorBody),
        (status = 404, description = "`account_not_found`: no tenant has bound this official account", body = ErrorBody),
        (status = 409, description = "`member_api_unavailable` (no OAuth port on this node)", body = ErrorBody),
        (status = 422, description = "`refused`, `invalid_body`", body = ErrorBody),
    ))]
pub async fn create_session(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<SessionRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let oauth = state.member.oauth.clone().ok_or_else(unavailable)?;
    let appid = AppId::parse(&body.appid).map_err(|e| ApiError::bad_request("invalid_appid", e.to_string()))?;
    let (token, session) =
        pay_flows::member_login(&state.app, &state.wechat.directory, oauth.as_ref(), &appid, &body.code).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "token": token, "member_id": session.member_id, "expires_at": session.expires_at })),
    ))
}

/// `GET /m/api/v1/me`
#[utoipa::path(get, path = "/m/api/v1/me", tag = "member",
    security(("member_bearer" = [])),
    responses(
        (status = 200, description = "The session's member: card, points, balance", body = MemberDto),
    ))]
pub async fn me(
    State(state): State<AppState>,
    MemberAuth(s): MemberAuth,
) -> Result<Json<members::MemberView>, ApiError> {
    Ok(Json(members::get(&state.app, &s.tenant_id, s.member_id).await?))
}

/// A member's card code (documentation only).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct CardCodeDoc {
    /// What the card QR holds; staff look it up at `POST /admin/api/v1/members/card-code-lookups`.
    payload: String,
    expires_at: DateTime<Utc>,
}

/// `GET /m/api/v1/card-code`: a fresh code for the member's card QR (valid 5 minutes).
#[utoipa::path(get, path = "/m/api/v1/card-code", tag = "member",
    security(("member_bearer" = [])),
    responses(
        (status = 200, description = "The code and when it expires", body = CardCodeDoc),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
    ))]
pub async fn card_code(
    State(state): State<AppState>,
    MemberAuth(s): MemberAuth,
) -> Result<Json<wxcm_commands::card_codes::CardCode>, ApiError> {
    Ok(Json(wxcm_commands::card_codes::issue(&state.app, &s.tenant_id, s.member_id).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RechargeBody {
    /// Fen, > 0 and at most the configured limit.
    #[schema(minimum = 1)]
    amount_fen: i64,
    /// `v2` or `v3`; by default v3 when the merchant's v3 settings are complete, else v2.
    #[schema(value_type = Option<crate::doc::PayApi>)]
    api: Option<String>,
}

/// `POST /m/api/v1/recharges {amount_fen}` (Idempotency-Key)
#[utoipa::path(post, path = "/m/api/v1/recharges", tag = "member",
    security(("member_bearer" = [])),
    params(("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters; the same key is the same order")),
    request_body = RechargeBody,
    responses(
        (status = 201, description = "The order, created at Pay, and the JSAPI parameters to pay it", body = RechargeCreatedDoc),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `malformed_json`", body = ErrorBody),
        (status = 409, description = "`member_api_unavailable` (no Pay port on this node)", body = ErrorBody),
        (status = 422, description = "`invalid_amount` (not 1..=the configured limit), `invalid_api`, `refused` (Pay \
refused the order), `invalid_body`", body = ErrorBody),
    ))]
pub async fn create_recharge(
    State(state): State<AppState>,
    MemberAuth(s): MemberAuth,
    IdempotencyHeader(key): IdempotencyHeader,
    ClientIp(peer): ClientIp,
    ApiJson(body): ApiJson<RechargeBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let pay = state.member.pay.clone().ok_or_else(unavailable)?;
    let amount_fen = AmountFen::new_with_limit(body.amount_fen, state.app.limits.amount_fen_max)
        .map_err(|e| ApiError::invalid("invalid_amount", e.to_string()))?;
    let api = match body.api.as_deref() {
        Some("v3") => Some(PayApiVersion::V3),
        Some("v2") => Some(PayApiVersion::V2),
        Some(_) => return Err(ApiError::invalid("invalid_api", "api must be v2 or v3")),
        // Not asked: what the merchant has settings for (v2-only merchants get v2).
        None => None,
    };
    let request = RechargeRequest {
        member_id: s.member_id,
        appid: s.appid.clone(),
        openid: s.openid.clone(),
        amount_fen,
        api,
        notify_base_url: state.member.notify_base_url.clone(),
        // Pay wants the payer's address (spbill_create_ip / payer_client_ip): the
        // peer, or behind trusted proxies the forwarded client. Without connect
        // info (in-process callers) there is none to give.
        client_ip: peer.map_or_else(|| "127.0.0.1".to_owned(), |ip| ip.to_string()),
    };
    let ctx = CommandContext::new(s.tenant_id.clone(), key, format!("member:{}", s.member_id));
    let created = pay_flows::create_recharge(&state.app, pay.as_ref(), &s.tenant_id, &request, &ctx).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "order_id": created.order.order_id, "order": created.order, "pay_params": created.pay_params })),
    ))
}

/// `GET /m/api/v1/recharges/{order_id}`: the member's own orders only.
#[utoipa::path(get, path = "/m/api/v1/recharges/{order_id}", tag = "member",
    security(("member_bearer" = [])),
    params(("order_id" = crate::doc::PayOrderId, Path)),
    responses(
        (status = 200, description = "The order (its status tells whether the payment arrived)", body = crate::resources::payments::PaymentOrderDoc),
        (status = 400, description = "`invalid_order_id`", body = ErrorBody),
        (status = 404, description = "`payment_not_found` (also another member's order)", body = ErrorBody),
    ))]
pub async fn get_recharge(
    State(state): State<AppState>,
    MemberAuth(s): MemberAuth,
    Path(order_id): Path<String>,
) -> Result<Json<wxcm_commands::payments::PaymentView>, ApiError> {
    let order_id =
        OutTradeNo::parse(&order_id).map_err(|e| ApiError::bad_request("invalid_order_id", e.to_string()))?;
    Ok(Json(pay_flows::member_order(&state.app, &s.tenant_id, &s.member_id, &order_id).await?))
}
