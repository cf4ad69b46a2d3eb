//! Popularity lotteries: the admin's create, the member's share link, and
//! the two public pages a friend's browser opens (`/m/campaigns/...`, no
//! session): the share page sends the friend to WeChat OAuth (`snsapi_base`),
//! whose callback gives the member the friend's ticket and says so.
//!
//! The OAuth `state` names tenant, campaign, member and account, unsigned on
//! purpose (as referral links): the link itself is public; what cannot be
//! forged is the friend's openid, which comes from WeChat's code exchange.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use tracing::instrument;
use wxcm_commands::campaigns::popularity::{self, VisitOutcome};
use wxcm_commands::campaigns::{self, CampaignOpError};
use wxcm_commands::members;
use wxcm_domain::campaign::{CampaignError, CampaignId};
use wxcm_domain::{AppId, MemberId, TenantId};

use super::{CampaignDto, PopularityLotteryBody, ShareLinkDto};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, Authorized, Correlation, IdempotencyHeader};
use crate::permissions::perm;
use crate::resources::member_api::MemberAuth;
use crate::resources::referral::{
    oauth_visitor, redirect, referral_account, OAUTH_CODE_BYTES_MAX, OAUTH_STATE_BYTES_MAX,
};
use crate::resources::wechat::{outbound, public_base_url, tenant_state};
use crate::state::AppState;

/// Path of the OAuth redirect of share links, under the public base URL.
pub const SHARE_CALLBACK_PATH: &str = "/m/campaigns/share/callback";

/// Creates a popularity lottery as a draft: once scheduled, the scheduler opens its periods (each
/// committing to its own seed), draws each at its end weighted by tickets, and gives the winners
/// their prizes. Tickets come only from friends' visits to members' share links.
///
/// Rules between fields (422 `invalid_terms` otherwise): `ends_at` is after `starts_at` and at
/// most 366 days later; the tiers give at most 1,000 winners in all.
#[utoipa::path(post, path = "/admin/api/v1/popularity-campaigns", tag = "campaigns",
    security(("bearer" = [])),
    params(("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters; the same key is the same campaign")),
    request_body = PopularityLotteryBody,
    responses(
        (status = 201, description = "Created (or replayed)", body = CampaignDto),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`template_not_found` (a coupon prize names no template of this tenant)", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_text`, `invalid_prize`, `invalid_tiers`, `invalid_chances`, `invalid_entrants_max`, `invalid_terms`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username))]
pub async fn create_popularity_campaign(
    State(state): State<AppState>,
    auth: Authorized<perm::CampaignManage>,
    key: IdempotencyHeader,
    correlation: Correlation,
    body: ApiJson<PopularityLotteryBody>,
) -> Result<(StatusCode, Json<CampaignDto>), ApiError> {
    let terms = body.0.validate()?;
    let ctx = auth.context(key.0, correlation);
    let view = campaigns::create(&state.app, &ctx, terms, auth.actor()).await?;
    Ok((StatusCode::CREATED, Json(view.into())))
}

/// The member's share link of a popularity lottery: each distinct friend who opens it gives the
/// member one ticket in the open period (the member's own visits and repeated visits give none).
#[utoipa::path(get, path = "/m/api/v1/campaigns/{campaign_id}/share-link", tag = "member",
    security(("member_bearer" = [])),
    params(("campaign_id" = uuid::Uuid, Path)),
    responses(
        (status = 200, description = "The link", body = ShareLinkDto),
        (status = 400, description = "`invalid_campaign_id`", body = ErrorBody),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
        (status = 404, description = "`campaign_not_found`", body = ErrorBody),
        (status = 409, description = "`wrong_kind` (not a popularity lottery)", body = ErrorBody),
        (status = 503, description = "`wechat_not_configured` (no public base URL)", body = ErrorBody),
    ))]
pub async fn member_share_link(
    State(state): State<AppState>,
    MemberAuth(session): MemberAuth,
    id: ApiPath<CampaignId>,
) -> Result<Json<ShareLinkDto>, ApiError> {
    let tenant = &session.tenant_id;
    let view = campaigns::get(&state.app, tenant, id.0).await?;
    if !view.terms.kind.is_popularity() {
        return Err(CampaignOpError::Campaign(CampaignError::WrongKind("popularity_lottery")).into());
    }
    let base = public_base_url(outbound(&state)?.as_ref())?;
    campaigns::report::count_traffic(&state.app, tenant, id.0, 0, 1).await;
    Ok(Json(ShareLinkDto { url: format!("{base}/m/campaigns/{tenant}/{}/share/{}", id.0, session.member_id) }))
}

/// The OAuth `state` of a share visit: `{tenant}.{campaign, 32 hex}.{member, 32 hex}.{appid}`
/// (at most 125 bytes: WeChat allows 128).
pub fn share_state(tenant: &TenantId, campaign: CampaignId, member: MemberId, appid: &AppId) -> String {
    format!("{tenant}.{}.{}.{}", campaign.as_uuid().simple(), member.as_uuid().simple(), appid.as_str())
}

pub fn parse_share_state(state: &str) -> Option<(TenantId, CampaignId, MemberId, AppId)> {
    if state.len() > OAUTH_STATE_BYTES_MAX {
        return None;
    }
    let mut parts = state.split('.');
    let (tenant, campaign, member, appid) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    Some((
        TenantId::parse(tenant).ok()?,
        CampaignId::parse(campaign).ok()?,
        MemberId::parse(member).ok()?,
        AppId::parse(appid).ok()?,
    ))
}

/// Public: a member's share link. Sends the browser to WeChat OAuth (`snsapi_base`), which comes
/// back to the callback.
#[utoipa::path(get, path = "/m/campaigns/{tenant}/{campaign_id}/share/{member_id}", tag = "member",
    params(("tenant" = String, Path), ("campaign_id" = uuid::Uuid, Path), ("member_id" = uuid::Uuid, Path),
        ("appid" = Option<String>, Query, description = "The account to authorize with; defaults to the tenant's first")),
    responses(
        (status = 302, description = "To WeChat's OAuth page"),
        (status = 400, description = "`invalid_path`, `invalid_appid`", body = ErrorBody),
        (status = 404, description = "`tenant_not_found`, `campaign_not_found`, `member_not_found`, `account_not_bound`", body = ErrorBody),
        (status = 503, description = "`wechat_not_configured`", body = ErrorBody),
    ))]
#[instrument(skip_all)]
pub async fn share_start(
    State(state): State<AppState>,
    Path((tenant, campaign, member)): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let bad_path = || ApiError::bad_request("invalid_path", "unknown tenant, campaign or member in the link");
    let tenant = TenantId::parse(&tenant).map_err(|_| bad_path())?;
    let campaign = CampaignId::parse(&campaign).map_err(|_| bad_path())?;
    let member = MemberId::parse(&member).map_err(|_| bad_path())?;
    members::get(&state.app, &tenant, member).await?;
    campaigns::get(&state.app, &tenant, campaign).await?;
    campaigns::report::count_traffic(&state.app, &tenant, campaign, 1, 0).await;
    let shard = state.app.router.route(&tenant)?;
    let (appid, mode) =
        referral_account(&tenant_state(&shard, &tenant).await?, query.get("appid").map(String::as_str))?;
    let outbound = outbound(&state)?;
    let redirect_uri = format!("{}{SHARE_CALLBACK_PATH}", public_base_url(outbound.as_ref())?);
    let url =
        outbound.oauth_authorize_url(&appid, mode, &redirect_uri, &share_state(&tenant, campaign, member, &appid))?;
    redirect(&url)
}

/// Public: WeChat's OAuth redirect of a share link. Gives the member the friend's ticket (once per
/// friend and period) and answers a page saying what happened (`data-outcome`: `counted`,
/// `already_counted`, `self_visit`, `not_ongoing`, `limit_reached`).
#[utoipa::path(get, path = "/m/campaigns/share/callback", tag = "member",
    params(("code" = String, Query), ("state" = String, Query)),
    responses(
        (status = 200, description = "A page saying whether the visit gave a ticket"),
        (status = 400, description = "`invalid_query`, `invalid_state`", body = ErrorBody),
        (status = 404, description = "`tenant_not_found`, `campaign_not_found`, `member_not_found`, `account_not_bound`", body = ErrorBody),
        (status = 409, description = "`wrong_kind` (not a popularity lottery)", body = ErrorBody),
        (status = 422, description = "`wechat_rejected` (bad or used code)", body = ErrorBody),
        (status = 502, description = "`wechat_unavailable`", body = ErrorBody),
    ))]
#[instrument(skip_all)]
pub async fn share_callback(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let code = query.get("code").filter(|c| !c.is_empty() && c.len() <= OAUTH_CODE_BYTES_MAX);
    let code = code.ok_or_else(|| ApiError::bad_request("invalid_query", "code must be 1..=256 bytes"))?;
    let (tenant, campaign, member, appid) = query
        .get("state")
        .and_then(|s| parse_share_state(s))
        .ok_or_else(|| ApiError::bad_request("invalid_state", "state is not a share link's state"))?;
    let visitor = oauth_visitor(&state, &tenant, &appid, code).await?;
    let (outcome, words) = match popularity::record_visit(&state.app, &tenant, campaign, member, &visitor).await {
        Ok(VisitOutcome::Counted { tickets, .. }) => {
            ("counted", format!("Thank you! Your friend now holds {tickets} ticket(s) in this draw."))
        }
        Ok(VisitOutcome::AlreadyCounted { .. }) => {
            ("already_counted", "You have already given your friend a ticket in this draw.".to_owned())
        }
        Err(CampaignOpError::Campaign(CampaignError::Refused(refusal))) => {
            use wxcm_domain::campaign::Refusal;
            match refusal {
                Refusal::SelfVisit => {
                    ("self_visit", "Share this link with friends: your own visits give no ticket.".into())
                }
                Refusal::NotOngoing => ("not_ongoing", "This draw is not taking tickets now.".into()),
                _ => ("limit_reached", "Your friend cannot collect more tickets in this draw.".into()),
            }
        }
        Err(CampaignOpError::Campaign(CampaignError::PeriodNotOpen(_))) => {
            ("not_ongoing", "This draw is not taking tickets now.".to_owned())
        }
        Err(e) => return Err(e.into()),
    };
    // Fixed texts and a number only: nothing from the request is echoed into the page.
    let page = format!(
        "<!doctype html><meta charset=utf-8><meta name=viewport content=\"width=device-width\">\
<title>Popularity draw</title><p id=outcome data-outcome=\"{outcome}\">{words}</p>"
    );
    Ok(Html(page).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_states_round_trip_and_fit_wechats_128_bytes() {
        let tenant = TenantId::parse(&"t".repeat(TenantId::LEN_MAX)).unwrap();
        let (campaign, member) = (CampaignId::from_uuid(uuid::Uuid::new_v4()), MemberId::new_random());
        let appid = AppId::parse("wx0123456789abcdef").unwrap();
        let state = share_state(&tenant, campaign, member, &appid);
        assert!(state.len() <= OAUTH_STATE_BYTES_MAX, "{} bytes", state.len());
        assert_eq!(parse_share_state(&state), Some((tenant, campaign, member, appid)));
        assert_eq!(parse_share_state("a.b.c.d.e"), None);
        assert_eq!(parse_share_state(&"x".repeat(200)), None);
    }
}
