//! Referrals: a member's referral link (admin, `GET
//! /admin/api/v1/members/{member_id}/referral-link`) and the two public pages
//! the link opens in the visitor's browser (`/m/referral/...`, no session):
//! the start page sends the visitor to WeChat OAuth, whose callback records
//! the visit (visitor openid → referrer) and sends the visitor on to the
//! account's follow page. A follow within 30 days is then attributed to the
//! referrer by `commands::wechat`. All tagged `wechat` in the document.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use tracing::instrument;
use utoipa::ToSchema;
use wxcm_commands::members;
use wxcm_commands::wechat::{self as uc, AccountMode};
use wxcm_domain::tenant::Tenant;
use wxcm_domain::{AppId, MemberId, OpenId, TenantId};

use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiPath, Authorized};
use crate::permissions::perm;
use crate::resources::wechat::{account_mode, outbound, public_base_url, tenant_state};
use crate::state::AppState;
use crate::wechat_edge::OutboundError;

/// Longest OAuth `code` and `state` accepted on the referral callback.
pub const OAUTH_CODE_BYTES_MAX: usize = 256;
pub const OAUTH_STATE_BYTES_MAX: usize = 128;
/// Path of the OAuth redirect, under the public base URL.
pub const REFERRAL_CALLBACK_PATH: &str = "/m/referral/callback";

#[derive(Debug, Serialize, ToSchema)]
pub struct ReferralLinkDto {
    /// `{public_base_url}/m/referral/{tenant}/{member_id}`: opens WeChat OAuth, then the follow page.
    pub url: String,
    /// A scene usable for a personal QR code (`ref_<member id>`), when one fits WeChat's 64 characters.
    pub qr_scene: Option<String>,
}

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
pub(crate) fn referral_account(state: &Tenant, asked: Option<&str>) -> Result<(AppId, AccountMode), ApiError> {
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

pub(crate) fn redirect(location: &str) -> Result<Response, ApiError> {
    let value = HeaderValue::from_str(location).map_err(|e| ApiError::internal("redirect location", &e))?;
    Ok((StatusCode::FOUND, [(header::LOCATION, value)]).into_response())
}

/// The visitor's openid for an OAuth `code` WeChat sent back through `appid`
/// (from WeChat's code exchange: never from anything the browser says).
pub(crate) async fn oauth_visitor(
    state: &AppState,
    tenant: &TenantId,
    appid: &AppId,
    code: &str,
) -> Result<OpenId, ApiError> {
    let shard = state.app.router.route(tenant)?;
    let tenant_state = tenant_state(&shard, tenant).await?;
    let mode = account_mode(&tenant_state, appid)?;
    let app_secret = match (mode, tenant_state.accounts.get(appid.as_str())) {
        (AccountMode::Direct, Some(account)) => Some(state.app.sealer.open(&account.app_secret)?),
        _ => None,
    };
    let openid = outbound(state)?.oauth_openid(appid, mode, app_secret.as_deref(), code).await?;
    OpenId::parse(&openid)
        .map_err(|e| ApiError::from(OutboundError::Failed(format!("WeChat returned a bad openid: {e}"))))
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
    let openid = oauth_visitor(&state, &tenant, &appid, code).await?;
    uc::record_referral_visit(&state.app, &tenant, &openid, referrer).await?;
    tracing::info!(%tenant, %referrer, "referral visit recorded");
    match outbound(&state)?.follow_page_url(&appid) {
        Some(url) => redirect(&url),
        None => Ok(Html(
            "<!doctype html><meta charset=utf-8><title>Follow</title>\
<p>Follow the official account in WeChat to join.</p>",
        )
        .into_response()),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{Method, StatusCode};

    use super::*;
    use crate::tests::{edge, request, send};
    use crate::HttpSettings;

    const APPID: &str = "wx0123456789abcdef";

    #[tokio::test]
    async fn public_referral_pages_check_their_input() {
        let call = |uri: String| async move {
            let reply = send(&edge(HttpSettings::default()), request(Method::GET, &uri, None, None, None)).await;
            (reply.status, reply.body["error"]["code"].as_str().map(str::to_owned))
        };
        let code = |c: &str| Some(c.to_owned());
        assert_eq!(call("/m/referral/acme/not-a-member".into()).await, (StatusCode::BAD_REQUEST, code("invalid_path")));
        let page = format!("/m/referral/acme/{}", MemberId::new_random());
        assert_eq!(call(page).await, (StatusCode::NOT_FOUND, code("tenant_not_found")));
        let forged = "/m/referral/callback?code=abc&state=forged".to_owned();
        assert_eq!(call(forged).await, (StatusCode::BAD_REQUEST, code("invalid_state")));
        let no_code = "/m/referral/callback?state=x".to_owned();
        assert_eq!(call(no_code).await, (StatusCode::BAD_REQUEST, code("invalid_query")));
    }

    #[test]
    fn referral_states_round_trip_and_are_bounded() {
        let tenant = TenantId::parse(&"t".repeat(TenantId::LEN_MAX)).unwrap();
        let member = MemberId::new_random();
        let appid = AppId::parse(APPID).unwrap();
        let state = referral_state(&tenant, member, &appid);
        assert!(state.len() <= OAUTH_STATE_BYTES_MAX);
        assert_eq!(parse_referral_state(&state), Some((tenant, member, appid)));
        assert_eq!(parse_referral_state("a.b.c.d"), None);
        assert_eq!(parse_referral_state(&"x".repeat(200)), None);
    }
}
