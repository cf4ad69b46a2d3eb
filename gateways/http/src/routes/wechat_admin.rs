//! The WeChat admin API: auto-reply rules, points rules, scene QR codes,
//! menus, members' referral links and the third-party authorization start;
//! plus the two public referral pages members' browsers go through
//! (`/m/referral/...`: WeChat OAuth, then the follow page).
//!
//! Calls to WeChat go through `AppState.wechat.outbound`; their failures are
//! `ApiError`s like any other (`From<OutboundError>`): 503
//! `wechat_not_configured`, 422 `wechat_rejected`, 429 `wechat_quota_exhausted`,
//! 502 `wechat_unavailable`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use tracing::instrument;
use wxcm_commands::members;
use wxcm_commands::ports::ShardServices;
use wxcm_commands::tenants::TenantOpError;
use wxcm_commands::wechat::{self as uc, AccountMode, SceneQrCode};
use wxcm_domain::tenant::{Tenant, TenantCommand};
use wxcm_domain::{AppId, MemberId, OpenId, TenantId};

use crate::dto::{
    AuthorizationBody, AuthorizationDto, MenuBody, MenuDto, PointsRulesBody, PointsRulesDto, QrCodeBody, QrCodeDto,
    QrCodeList, ReferralLinkDto, ReplyRulesBody, ReplyRulesDto,
};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, Authorized, Correlation, IdempotencyHeader};
use crate::permissions::perm;
use crate::state::AppState;
use crate::wechat_edge::{OutboundError, WechatOutbound};

/// Longest OAuth `code` and `state` accepted on the referral callback.
pub const OAUTH_CODE_BYTES_MAX: usize = 256;
pub const OAUTH_STATE_BYTES_MAX: usize = 128;
/// Path of the OAuth redirect, under the public base URL.
pub const REFERRAL_CALLBACK_PATH: &str = "/m/referral/callback";

fn outbound(state: &AppState) -> Result<Arc<dyn WechatOutbound>, ApiError> {
    state
        .wechat
        .outbound
        .clone()
        .ok_or_else(|| ApiError::from(OutboundError::Unavailable("no outbound WeChat client".into())))
}

fn public_base_url(outbound: &dyn WechatOutbound) -> Result<String, ApiError> {
    outbound
        .public_base_url()
        .map(|u| u.trim_end_matches('/').to_owned())
        .ok_or_else(|| ApiError::from(OutboundError::Unavailable("no public base URL configured".into())))
}

async fn tenant_state(shard: &ShardServices, tenant: &TenantId) -> Result<Tenant, ApiError> {
    let (state, _): (Tenant, u64) = shard.tenants.load(tenant.as_str()).await?;
    if state.tenant_id.is_none() {
        return Err(ApiError::not_found("tenant_not_found", "tenant not found"));
    }
    Ok(state)
}

/// How `appid` is bound to `tenant`; 404 `account_not_bound` when it is not.
fn account_mode(state: &Tenant, appid: &AppId) -> Result<AccountMode, ApiError> {
    if state.accounts.contains_key(appid.as_str()) {
        Ok(AccountMode::Direct)
    } else if state.component_accounts.contains_key(appid.as_str()) {
        Ok(AccountMode::Component)
    } else {
        Err(ApiError::not_found("account_not_bound", format!("official account {appid} is not bound")))
    }
}

// ---------- reply rules ----------

/// The auto-reply rules (empty with revision 0 before the first save).
#[utoipa::path(get, path = "/admin/api/v1/wechat/reply-rules", tag = "wechat",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The rules and their revision", body = ReplyRulesDto),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`tenant_not_found`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username))]
pub async fn get_reply_rules(
    State(state): State<AppState>,
    auth: Authorized<perm::WechatRead>,
) -> Result<Json<ReplyRulesDto>, ApiError> {
    let (rules, revision) = uc::reply_rules(&state.app, &auth.session.tenant_id).await?;
    Ok(Json(ReplyRulesDto { rules: rules.into(), revision }))
}

/// Replaces the whole rule set; answers with the new revision.
#[utoipa::path(put, path = "/admin/api/v1/wechat/reply-rules", tag = "wechat",
    security(("bearer" = [])),
    request_body = ReplyRulesBody,
    responses(
        (status = 200, description = "Saved", body = ReplyRulesDto),
        (status = 400, description = "`malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`tenant_not_found`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_reply_rules`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username))]
pub async fn put_reply_rules(
    State(state): State<AppState>,
    auth: Authorized<perm::WechatSettings>,
    body: ApiJson<ReplyRulesBody>,
) -> Result<Json<ReplyRulesDto>, ApiError> {
    let rules = body.0.validate()?;
    let tenant = &auth.session.tenant_id;
    let revision = uc::save_reply_rules(&state.app, tenant, &rules, &auth.actor().label()).await?;
    tracing::info!(revision, keyword_rules = rules.keywords.len(), "reply rules saved");
    Ok(Json(ReplyRulesDto { rules: rules.into(), revision }))
}

// ---------- points rules ----------

/// Initial and referral points, and their expiry.
#[utoipa::path(get, path = "/admin/api/v1/tenant/points-rules", tag = "wechat",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The points rules", body = PointsRulesDto),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`tenant_not_found`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username))]
pub async fn get_points_rules(
    State(state): State<AppState>,
    auth: Authorized<perm::WechatRead>,
) -> Result<Json<PointsRulesDto>, ApiError> {
    let tenant = &auth.session.tenant_id;
    let shard = state.app.router.route(tenant)?;
    Ok(Json(tenant_state(&shard, tenant).await?.points_rules.into()))
}

/// Sets the points granted at registration and for referrals (levels 1 and 2).
#[utoipa::path(put, path = "/admin/api/v1/tenant/points-rules", tag = "wechat",
    security(("bearer" = [])),
    params(("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters")),
    request_body = PointsRulesBody,
    responses(
        (status = 200, description = "The rules now in force", body = PointsRulesDto),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`tenant_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_points_rules`, `invalid_expiry`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username))]
pub async fn put_points_rules(
    State(state): State<AppState>,
    auth: Authorized<perm::WechatSettings>,
    key: IdempotencyHeader,
    correlation: Correlation,
    body: ApiJson<PointsRulesBody>,
) -> Result<Json<PointsRulesDto>, ApiError> {
    let rules = body.0.validate()?;
    let tenant = &auth.session.tenant_id;
    let shard = state.app.router.route(tenant)?;
    let ctx = auth.context(key.0, correlation);
    let command = TenantCommand::SetPointsRules { rules, actor: auth.actor() };
    shard
        .tenants
        .execute(tenant.as_str(), command, &("set-points-rules", rules), &ctx)
        .await
        .map_err(TenantOpError::from)?;
    tracing::info!("points rules set");
    Ok(Json(tenant_state(&shard, tenant).await?.points_rules.into()))
}

// ---------- scene QR codes ----------

/// Creates a scene QR code through WeChat and keeps it (with its statistics).
#[utoipa::path(post, path = "/admin/api/v1/wechat/qrcodes", tag = "wechat",
    security(("bearer" = [])),
    request_body = QrCodeBody,
    responses(
        (status = 201, description = "Created at WeChat and saved", body = QrCodeDto),
        (status = 400, description = "`malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`tenant_not_found`, `account_not_bound`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_appid`, `invalid_scene`, `invalid_name`, `invalid_expiry`, `wechat_rejected`", body = ErrorBody),
        (status = 429, description = "`wechat_quota_exhausted`", body = ErrorBody),
        (status = 502, description = "`wechat_unavailable`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username))]
pub async fn create_qr_code(
    State(state): State<AppState>,
    auth: Authorized<perm::WechatSettings>,
    body: ApiJson<QrCodeBody>,
) -> Result<(StatusCode, Json<QrCodeDto>), ApiError> {
    let request = body.0.validate()?;
    let tenant = &auth.session.tenant_id;
    let shard = state.app.router.route(tenant)?;
    let mode = account_mode(&tenant_state(&shard, tenant).await?, &request.appid)?;
    let outbound = outbound(&state)?;
    let created = outbound.create_qr_code(&request.appid, mode, &request.scene, request.expire_seconds).await?;
    let now = state.app.clock.now();
    let qr = SceneQrCode {
        tenant: tenant.clone(),
        appid: request.appid.clone(),
        scene: request.scene,
        name: request.name,
        permanent: request.expire_seconds.is_none(),
        ticket: Some(created.ticket),
        url: Some(created.url),
        expires_at: request
            .expire_seconds
            .map(|requested| now + chrono::Duration::seconds(created.expire_seconds.unwrap_or(i64::from(requested)))),
        created_at: now,
        landings: 0,
        follows: 0,
    };
    shard.wechat.save_scene(&qr).await?;
    tracing::info!(appid = %qr.appid, scene = %qr.scene, permanent = qr.permanent, "scene QR code created");
    Ok((StatusCode::CREATED, Json(qr.into())))
}

/// The tenant's scene QR codes with their landing and follow counts (newest first, at most 500).
#[utoipa::path(get, path = "/admin/api/v1/wechat/qrcodes", tag = "wechat",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The codes", body = QrCodeList),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`tenant_not_found`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username))]
pub async fn list_qr_codes(
    State(state): State<AppState>,
    auth: Authorized<perm::WechatRead>,
) -> Result<Json<QrCodeList>, ApiError> {
    let items = uc::list_scenes(&state.app, &auth.session.tenant_id).await?;
    Ok(Json(QrCodeList { items: items.into_iter().map(Into::into).collect() }))
}

// ---------- menus ----------

async fn stored_menu(state: &AppState, tenant: &TenantId, appid: &AppId) -> Result<MenuDto, ApiError> {
    let shard = state.app.router.route(tenant)?;
    let stored = shard
        .wechat
        .menu(tenant, appid)
        .await?
        .ok_or_else(|| ApiError::not_found("menu_not_found", format!("no menu saved for {appid}")))?;
    MenuDto::from_stored(appid, stored)
}

/// The menu saved for an account, and when it was published.
#[utoipa::path(get, path = "/admin/api/v1/wechat/menus/{appid}", tag = "wechat",
    security(("bearer" = [])),
    params(("appid" = String, Path, description = "`wx` followed by 16 hex digits")),
    responses(
        (status = 200, description = "The saved menu", body = MenuDto),
        (status = 400, description = "`invalid_appid`, `invalid_path`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`tenant_not_found`, `menu_not_found`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username, appid = %appid.0))]
pub async fn get_menu(
    State(state): State<AppState>,
    auth: Authorized<perm::WechatRead>,
    appid: ApiPath<AppId>,
) -> Result<Json<MenuDto>, ApiError> {
    Ok(Json(stored_menu(&state, &auth.session.tenant_id, &appid.0).await?))
}

/// Saves a menu (checked against WeChat's shape and limits); publish it separately.
#[utoipa::path(put, path = "/admin/api/v1/wechat/menus/{appid}", tag = "wechat",
    security(("bearer" = [])),
    params(("appid" = String, Path, description = "`wx` followed by 16 hex digits")),
    request_body = MenuBody,
    responses(
        (status = 200, description = "Saved (not yet published)", body = MenuDto),
        (status = 400, description = "`invalid_appid`, `invalid_path`, `malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`tenant_not_found`, `account_not_bound`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_menu`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username, appid = %appid.0))]
pub async fn put_menu(
    State(state): State<AppState>,
    auth: Authorized<perm::WechatSettings>,
    appid: ApiPath<AppId>,
    body: ApiJson<MenuBody>,
) -> Result<Json<MenuDto>, ApiError> {
    let menu = body.0.validate()?;
    let tenant = &auth.session.tenant_id;
    let shard = state.app.router.route(tenant)?;
    account_mode(&tenant_state(&shard, tenant).await?, &appid.0)?;
    shard.wechat.save_menu(tenant, &appid.0, &menu, &auth.actor().label(), state.app.clock.now()).await?;
    tracing::info!("menu saved");
    Ok(Json(stored_menu(&state, tenant, &appid.0).await?))
}

/// Publishes the saved menu to WeChat (`menu/create`) and records when.
#[utoipa::path(post, path = "/admin/api/v1/wechat/menus/{appid}/publish", tag = "wechat",
    security(("bearer" = [])),
    params(("appid" = String, Path, description = "`wx` followed by 16 hex digits")),
    responses(
        (status = 200, description = "Published", body = MenuDto),
        (status = 400, description = "`invalid_appid`, `invalid_path`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`tenant_not_found`, `account_not_bound`, `menu_not_found`", body = ErrorBody),
        (status = 422, description = "`wechat_rejected`", body = ErrorBody),
        (status = 429, description = "`wechat_quota_exhausted`", body = ErrorBody),
        (status = 502, description = "`wechat_unavailable`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username, appid = %appid.0))]
pub async fn publish_menu(
    State(state): State<AppState>,
    auth: Authorized<perm::WechatSettings>,
    appid: ApiPath<AppId>,
) -> Result<Json<MenuDto>, ApiError> {
    let tenant = &auth.session.tenant_id;
    let shard = state.app.router.route(tenant)?;
    let mode = account_mode(&tenant_state(&shard, tenant).await?, &appid.0)?;
    let menu = stored_menu(&state, tenant, &appid.0).await?;
    let json = serde_json::to_value(&menu.menu).map_err(|e| ApiError::internal("menu serialization", &e))?;
    outbound(&state)?.publish_menu(&appid.0, mode, &json).await?;
    shard.wechat.mark_menu_published(tenant, &appid.0, state.app.clock.now()).await?;
    tracing::info!("menu published");
    Ok(Json(stored_menu(&state, tenant, &appid.0).await?))
}

// ---------- referral links ----------

/// A member's referral link: whoever opens it and then follows the account is attributed to the member.
#[utoipa::path(get, path = "/admin/api/v1/members/{member_id}/referral-link", tag = "wechat",
    security(("bearer" = [])),
    params(("member_id" = uuid::Uuid, Path)),
    responses(
        (status = 200, description = "The link", body = ReferralLinkDto),
        (status = 400, description = "`invalid_member_id`, `invalid_path`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`member_not_found`", body = ErrorBody),
        (status = 503, description = "`wechat_not_configured` (no public base URL)", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username, member_id = %id.0))]
pub async fn referral_link(
    State(state): State<AppState>,
    auth: Authorized<perm::WechatRead>,
    id: ApiPath<MemberId>,
) -> Result<Json<ReferralLinkDto>, ApiError> {
    let tenant = &auth.session.tenant_id;
    members::get(&state.app, tenant, id.0).await?;
    let base = public_base_url(outbound(&state)?.as_ref())?;
    // Scene QR follows are attributed to the scene, not to a referrer, so no personal QR scene is offered.
    Ok(Json(ReferralLinkDto { url: format!("{base}/m/referral/{tenant}/{}", id.0), qr_scene: None }))
}

/// The OAuth `state` of a referral visit: `{tenant}.{member id, 32 hex}.{appid}`.
/// Unsigned on purpose: the referral link itself is public and names the
/// referrer, so a signature would not stop anyone from claiming a referrer;
/// the visitor's openid comes from WeChat's code exchange, never from the state.
pub fn referral_state(tenant: &TenantId, referrer: MemberId, appid: &AppId) -> String {
    format!("{tenant}.{}.{}", referrer.as_uuid().simple(), appid.as_str())
}

pub fn parse_referral_state(state: &str) -> Option<(TenantId, MemberId, AppId)> {
    if state.len() > OAUTH_STATE_BYTES_MAX {
        return None;
    }
    let mut parts = state.split('.');
    let (tenant, member, appid) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    Some((TenantId::parse(tenant).ok()?, MemberId::parse(member).ok()?, AppId::parse(appid).ok()?))
}

/// The account a referral goes through: the one asked for, else the first
/// developer-mode account, else the first authorized one.
fn referral_account(state: &Tenant, asked: Option<&str>) -> Result<(AppId, AccountMode), ApiError> {
    if let Some(asked) = asked {
        let appid = AppId::parse(asked).map_err(|e| ApiError::bad_request("invalid_appid", e.to_string()))?;
        let mode = account_mode(state, &appid)?;
        return Ok((appid, mode));
    }
    if let Some(account) = state.accounts.values().next() {
        return Ok((account.appid.clone(), AccountMode::Direct));
    }
    if let Some(account) = state.component_accounts.values().next() {
        return Ok((account.appid.clone(), AccountMode::Component));
    }
    Err(ApiError::not_found("account_not_bound", "the tenant has no official account"))
}

fn redirect(location: &str) -> Result<Response, ApiError> {
    let value = HeaderValue::from_str(location).map_err(|e| ApiError::internal("redirect location", &e))?;
    Ok((StatusCode::FOUND, [(header::LOCATION, value)]).into_response())
}

/// Public: a referral link. Sends the browser to WeChat OAuth (`snsapi_base`), which comes back to the callback.
#[utoipa::path(get, path = "/m/referral/{tenant}/{member_id}", tag = "wechat",
    params(("tenant" = String, Path), ("member_id" = uuid::Uuid, Path),
        ("appid" = Option<String>, Query, description = "The account to follow; defaults to the tenant's first")),
    responses(
        (status = 302, description = "To WeChat's OAuth page"),
        (status = 400, description = "`invalid_path`, `invalid_appid`", body = ErrorBody),
        (status = 404, description = "`tenant_not_found`, `member_not_found`, `account_not_bound`", body = ErrorBody),
        (status = 503, description = "`wechat_not_configured`", body = ErrorBody),
    ))]
#[instrument(skip_all)]
pub async fn referral_start(
    State(state): State<AppState>,
    Path((tenant, member)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let bad_path = || ApiError::bad_request("invalid_path", "unknown tenant or member in the link");
    let tenant = TenantId::parse(&tenant).map_err(|_| bad_path())?;
    let member = MemberId::parse(&member).map_err(|_| bad_path())?;
    members::get(&state.app, &tenant, member).await?;
    let shard = state.app.router.route(&tenant)?;
    let (appid, mode) =
        referral_account(&tenant_state(&shard, &tenant).await?, query.get("appid").map(String::as_str))?;
    let outbound = outbound(&state)?;
    let redirect_uri = format!("{}{REFERRAL_CALLBACK_PATH}", public_base_url(outbound.as_ref())?);
    let url = outbound.oauth_authorize_url(&appid, mode, &redirect_uri, &referral_state(&tenant, member, &appid))?;
    redirect(&url)
}

/// Public: WeChat's OAuth redirect. Records the visit (visitor openid → referrer), then sends the
/// visitor to the account's follow page.
#[utoipa::path(get, path = "/m/referral/callback", tag = "wechat",
    params(("code" = String, Query), ("state" = String, Query)),
    responses(
        (status = 302, description = "To the follow page"),
        (status = 200, description = "A page asking to follow the account (no follow page configured)"),
        (status = 400, description = "`invalid_query`, `invalid_state`", body = ErrorBody),
        (status = 404, description = "`tenant_not_found`, `account_not_bound`", body = ErrorBody),
        (status = 422, description = "`invalid_input` (unknown referrer), `wechat_rejected` (bad or used code)", body = ErrorBody),
        (status = 502, description = "`wechat_unavailable`", body = ErrorBody),
    ))]
#[instrument(skip_all)]
pub async fn referral_callback(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let code = query.get("code").filter(|c| !c.is_empty() && c.len() <= OAUTH_CODE_BYTES_MAX);
    let code = code.ok_or_else(|| ApiError::bad_request("invalid_query", "code must be 1..=256 bytes"))?;
    let (tenant, referrer, appid) = query
        .get("state")
        .and_then(|s| parse_referral_state(s))
        .ok_or_else(|| ApiError::bad_request("invalid_state", "state is not a referral state"))?;
    let shard = state.app.router.route(&tenant)?;
    let tenant_state = tenant_state(&shard, &tenant).await?;
    let mode = account_mode(&tenant_state, &appid)?;
    let app_secret = match (mode, tenant_state.accounts.get(appid.as_str())) {
        (AccountMode::Direct, Some(account)) => Some(state.app.sealer.open(&account.app_secret)?),
        _ => None,
    };
    let outbound = outbound(&state)?;
    let openid = outbound.oauth_openid(&appid, mode, app_secret.as_deref(), code).await?;
    let openid = OpenId::parse(&openid)
        .map_err(|e| ApiError::from(OutboundError::Failed(format!("WeChat returned a bad openid: {e}"))))?;
    uc::record_referral_visit(&state.app, &tenant, &openid, referrer).await?;
    tracing::info!(%tenant, %referrer, "referral visit recorded");
    match outbound.follow_page_url(&appid) {
        Some(url) => redirect(&url),
        None => Ok(Html(
            "<!doctype html><meta charset=utf-8><title>Follow</title>\
<p>Follow the official account in WeChat to join.</p>",
        )
        .into_response()),
    }
}

// ---------- third-party authorization ----------

/// Starts a third-party platform authorization (owner only): the URL the merchant opens.
#[utoipa::path(post, path = "/admin/api/v1/wechat/component/authorizations", tag = "wechat",
    security(("bearer" = [])),
    request_body = AuthorizationBody,
    responses(
        (status = 200, description = "The authorization page", body = AuthorizationDto),
        (status = 400, description = "`malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`tenant_not_found`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_redirect_uri`, `wechat_rejected`", body = ErrorBody),
        (status = 502, description = "`wechat_unavailable`", body = ErrorBody),
        (status = 503, description = "`wechat_not_configured` (no third-party platform)", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username))]
pub async fn start_authorization(
    State(state): State<AppState>,
    auth: Authorized<perm::TenantSettings>,
    body: ApiJson<AuthorizationBody>,
) -> Result<Json<AuthorizationDto>, ApiError> {
    let redirect_uri = body.0.validate()?;
    let tenant = &auth.session.tenant_id;
    let shard = state.app.router.route(tenant)?;
    tenant_state(&shard, tenant).await?;
    let start = outbound(&state)?.start_authorization(redirect_uri).await?;
    uc::save_auth_request(&state.app, tenant, &start.pre_auth_code).await?;
    tracing::info!("third-party authorization started");
    Ok(Json(AuthorizationDto { authorization_url: start.authorization_url, expires_in: start.expires_in_s }))
}

#[cfg(test)]
mod tests {
    //! Edge checks with an `App` without shards (see `crate::tests`): a request
    //! that passes the edge reaches the application and gets 404
    //! `tenant_not_found`; one refused at the edge gets its own answer.

    use std::sync::Arc;

    use async_trait::async_trait;
    use axum::body::{to_bytes, Body};
    use axum::http::{header, Method, Request, StatusCode};
    use axum::Router;
    use chrono::Utc;
    use serde_json::{json, Value};
    use tower::ServiceExt;
    use wxcm_commands::auth::AuthError;
    use wxcm_commands::ports::{AdminSession, PortError, Role, RouteError, SecretSealer, ShardRouter, ShardServices};
    use wxcm_commands::{App, Limits, SystemClock};
    use wxcm_domain::tenant::SealedSecret;
    use wxcm_domain::{AppId, MemberId, TenantId};

    use super::{parse_referral_state, referral_state};
    use crate::extract::IDEMPOTENCY_KEY_HEADER;
    use crate::state::SessionResolver;
    use crate::{build, HttpSettings, Readiness};

    struct NoShards;
    impl ShardRouter for NoShards {
        fn route(&self, tenant: &TenantId) -> Result<Arc<ShardServices>, RouteError> {
            Err(RouteError::NoShard(tenant.to_string()))
        }
        fn shards(&self) -> Vec<Arc<ShardServices>> {
            Vec::new()
        }
    }

    struct NoSealer;
    impl SecretSealer for NoSealer {
        fn seal(&self, _: &str) -> Result<SealedSecret, PortError> {
            Err(PortError::msg("not in tests"))
        }
        fn open(&self, _: &SealedSecret) -> Result<String, PortError> {
            Err(PortError::msg("not in tests"))
        }
    }

    /// Token `<role>` is a session of tenant `acme` with that role.
    struct RoleSessions;
    #[async_trait]
    impl SessionResolver for RoleSessions {
        async fn resolve(&self, token: &str) -> Result<Option<AdminSession>, AuthError> {
            Ok(Role::parse(token).map(|role| AdminSession {
                tenant_id: TenantId::parse("acme").unwrap(),
                username: format!("{}-user", role.as_str()),
                role,
                expires_at: Utc::now() + chrono::Duration::hours(1),
            }))
        }
        async fn revoke(&self, _: &str) -> Result<(), AuthError> {
            Ok(())
        }
    }

    struct Ready;
    #[async_trait]
    impl Readiness for Ready {
        async fn check(&self) -> Result<(), String> {
            Ok(())
        }
    }

    fn edge() -> Router {
        let app = Arc::new(App {
            router: Arc::new(NoShards),
            clock: Arc::new(SystemClock),
            sealer: Arc::new(NoSealer),
            limits: Limits { amount_fen_max: 10_000, points_max: 5_000 },
        });
        build(app, Arc::new(Ready), HttpSettings::default(), Arc::new(RoleSessions))
    }

    async fn call(method: Method, uri: &str, token: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
        let mut b = Request::builder().method(method).uri(uri).header(IDEMPOTENCY_KEY_HEADER, "key-00000001");
        if let Some(t) = token {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = match body {
            Some(v) => b.header(header::CONTENT_TYPE, "application/json").body(Body::from(v.to_string())).unwrap(),
            None => b.body(Body::empty()).unwrap(),
        };
        let response = edge().oneshot(req).await.unwrap();
        let status = response.status();
        let bytes = to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    const APPID: &str = "wx0123456789abcdef";

    /// Every admin route with a valid request, and whether it writes (owner and
    /// manager only) or reads (auditor too); staff never.
    fn routes() -> Vec<(Method, String, Option<Value>, bool)> {
        let member = MemberId::new_random();
        let menu = json!({"button": [{"type": "click", "name": "Points", "key": "POINTS"}]});
        let points = json!({"initial_points": 10, "referral_level1_points": 5, "referral_level2_points": 2,
                            "expiry": {"kind": "never"}});
        let qr = json!({"appid": APPID, "scene": "poster-1", "expire_seconds": 3600});
        vec![
            (Method::GET, "/admin/api/v1/wechat/reply-rules".into(), None, false),
            (Method::PUT, "/admin/api/v1/wechat/reply-rules".into(), Some(json!({})), true),
            (Method::GET, "/admin/api/v1/tenant/points-rules".into(), None, false),
            (Method::PUT, "/admin/api/v1/tenant/points-rules".into(), Some(points), true),
            (Method::GET, "/admin/api/v1/wechat/qrcodes".into(), None, false),
            (Method::POST, "/admin/api/v1/wechat/qrcodes".into(), Some(qr), true),
            (Method::GET, format!("/admin/api/v1/wechat/menus/{APPID}"), None, false),
            (Method::PUT, format!("/admin/api/v1/wechat/menus/{APPID}"), Some(menu), true),
            (Method::POST, format!("/admin/api/v1/wechat/menus/{APPID}/publish"), None, true),
            (Method::GET, format!("/admin/api/v1/members/{member}/referral-link"), None, false),
        ]
    }

    #[tokio::test]
    async fn roles_owner_and_manager_write_auditors_read_staff_nothing() {
        for (method, uri, body, writes) in routes() {
            for role in ["owner", "manager", "auditor", "staff"] {
                let (status, reply) = call(method.clone(), &uri, Some(role), body.clone()).await;
                let allowed = match role {
                    "owner" | "manager" => true,
                    "auditor" => !writes,
                    _ => false,
                };
                if allowed {
                    // Past the edge: the application has no shard for the tenant.
                    let code = reply["error"]["code"].as_str().unwrap_or_default().to_owned();
                    assert!(
                        code == "tenant_not_found" || code == "member_not_found",
                        "{role} {method} {uri}: {status} {reply}"
                    );
                } else {
                    assert_eq!(status, StatusCode::FORBIDDEN, "{role} {method} {uri}: {reply}");
                }
            }
            let (status, _) = call(method.clone(), &uri, None, body.clone()).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri}");
        }
    }

    #[tokio::test]
    async fn authorization_start_is_for_owners_only() {
        let uri = "/admin/api/v1/wechat/component/authorizations";
        let body = json!({"redirect_uri": "https://crm.example.com/authorized"});
        for role in ["manager", "auditor", "staff"] {
            assert_eq!(call(Method::POST, uri, Some(role), Some(body.clone())).await.0, StatusCode::FORBIDDEN);
        }
        let (_, reply) = call(Method::POST, uri, Some("owner"), Some(body)).await;
        assert_eq!(reply["error"]["code"], "tenant_not_found");
        let (status, reply) = call(Method::POST, uri, Some("owner"), Some(json!({"redirect_uri": "ftp://x"}))).await;
        assert_eq!(
            (status, reply["error"]["code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_redirect_uri"))
        );
    }

    #[tokio::test]
    async fn bodies_are_validated_before_anything_runs() {
        let cases = [
            (
                Method::PUT,
                "/admin/api/v1/wechat/reply-rules".to_owned(),
                json!({"default": {"type": "text", "content": ""}}),
                "invalid_reply_rules",
            ),
            (Method::PUT, "/admin/api/v1/wechat/reply-rules".to_owned(), json!({"nope": 1}), "invalid_body"),
            (
                Method::PUT,
                "/admin/api/v1/tenant/points-rules".to_owned(),
                json!({"initial_points": -1, "referral_level1_points": 0, "referral_level2_points": 0,
                    "expiry": {"kind": "never"}}),
                "invalid_points_rules",
            ),
            (
                Method::POST,
                "/admin/api/v1/wechat/qrcodes".to_owned(),
                json!({"appid": APPID, "scene": "s".repeat(65), "permanent": true}),
                "invalid_scene",
            ),
            (
                Method::POST,
                "/admin/api/v1/wechat/qrcodes".to_owned(),
                json!({"appid": APPID, "scene": "s", "expire_seconds": 59}),
                "invalid_expiry",
            ),
            (
                Method::POST,
                "/admin/api/v1/wechat/qrcodes".to_owned(),
                json!({"appid": "nope", "scene": "s", "permanent": true}),
                "invalid_appid",
            ),
            (
                Method::PUT,
                format!("/admin/api/v1/wechat/menus/{APPID}"),
                json!({"button": [{"type": "click", "name": "a", "key": "k"}, {"type": "click", "name": "b", "key": "k"},
                               {"type": "click", "name": "c", "key": "k"}, {"type": "click", "name": "d", "key": "k"}]}),
                "invalid_menu",
            ),
        ];
        for (method, uri, body, code) in cases {
            let (status, reply) = call(method.clone(), &uri, Some("owner"), Some(body)).await;
            assert_eq!(
                (status, reply["error"]["code"].as_str()),
                (StatusCode::UNPROCESSABLE_ENTITY, Some(code)),
                "{uri}"
            );
        }
        let (status, reply) = call(Method::GET, "/admin/api/v1/wechat/menus/not-an-appid", Some("owner"), None).await;
        assert_eq!((status, reply["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_appid")));
    }

    #[tokio::test]
    async fn points_rules_need_an_idempotency_key() {
        let body = json!({"initial_points": 1, "referral_level1_points": 0, "referral_level2_points": 0,
                          "expiry": {"kind": "never"}});
        let req = Request::builder()
            .method(Method::PUT)
            .uri("/admin/api/v1/tenant/points-rules")
            .header(header::AUTHORIZATION, "Bearer owner")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let response = edge().oneshot(req).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn public_referral_pages_check_their_input() {
        let (status, reply) = call(Method::GET, "/m/referral/acme/not-a-member", None, None).await;
        assert_eq!((status, reply["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_path")));
        let (status, reply) =
            call(Method::GET, &format!("/m/referral/acme/{}", MemberId::new_random()), None, None).await;
        assert_eq!((status, reply["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("tenant_not_found")));
        let (status, reply) = call(Method::GET, "/m/referral/callback?code=abc&state=forged", None, None).await;
        assert_eq!((status, reply["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_state")));
        let (status, reply) = call(Method::GET, "/m/referral/callback?state=x", None, None).await;
        assert_eq!((status, reply["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_query")));
    }

    #[test]
    fn referral_states_round_trip_and_are_bounded() {
        let tenant = TenantId::parse(&"t".repeat(TenantId::LEN_MAX)).unwrap();
        let member = MemberId::new_random();
        let appid = AppId::parse(APPID).unwrap();
        let state = referral_state(&tenant, member, &appid);
        assert!(state.len() <= super::OAUTH_STATE_BYTES_MAX);
        assert_eq!(parse_referral_state(&state), Some((tenant, member, appid)));
        assert_eq!(parse_referral_state("a.b.c.d"), None);
        assert_eq!(parse_referral_state(&"x".repeat(200)), None);
    }
}
