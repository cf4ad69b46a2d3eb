//! Member lookups (by id, card number, openid), the member list from the read
//! model and registration by hand (tag `members`). The session's tenant is the
//! tenant of every call: no route takes a tenant id. A member's points and
//! cash operations and its ledger are the `ledger` resource.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use tracing::instrument;
use utoipa::ToSchema;
use wxcm_commands::members;
use wxcm_domain::{CardNumber, MemberId, OpenId};

use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery, Authorized, Correlation, IdempotencyHeader};
use crate::permissions::perm;
use crate::state::AppState;

mod types;
pub use types::*;

/// A member by id.
#[utoipa::path(get, path = "/admin/api/v1/members/{member_id}", tag = "members",
    security(("bearer" = [])),
    params(("member_id" = uuid::Uuid, Path)),
    responses(
        (status = 200, description = "The member", body = MemberDto),
        (status = 400, description = "`invalid_member_id`, `invalid_path`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`member_not_found` (also for members of other tenants)", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username, member_id = %id.0))]
pub async fn get_member(
    State(state): State<AppState>,
    auth: Authorized<perm::MemberRead>,
    id: ApiPath<MemberId>,
) -> Result<Json<MemberDto>, ApiError> {
    Ok(Json(members::get(&state.app, &auth.session.tenant_id, id.0).await?.into()))
}

/// The member's events audited as `wxcm audit member` does: the hash chain,
/// a replay into the member (every rule of the domain) and every balance an
/// event states recomputed from the deltas before it. Reads the event store
/// (not the read model); streams of more than 100,000 events are left to the CLI.
#[utoipa::path(get, path = "/admin/api/v1/members/{member_id}/audit", tag = "members",
    security(("bearer" = [])),
    params(("member_id" = uuid::Uuid, Path)),
    responses(
        (status = 200, description = "The verdict (`ok` false with the findings when anything is wrong)", body = MemberAuditDto),
        (status = 400, description = "`invalid_member_id`, `invalid_path`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`member_not_found` (also for members of other tenants)", body = ErrorBody),
        (status = 409, description = "`stream_too_long`: audit it with `wxcm audit member`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username, member_id = %id.0))]
pub async fn audit_member(
    State(state): State<AppState>,
    auth: Authorized<perm::LedgerRead>,
    id: ApiPath<MemberId>,
) -> Result<Json<MemberAuditDto>, ApiError> {
    Ok(Json(members::audit(&state.app, &auth.session.tenant_id, &id.0).await?.into()))
}

/// Members from the read model (a moment behind the event store): filters,
/// sort and keyset pages. Card number and openid match exactly.
#[utoipa::path(get, path = "/admin/api/v1/members", tag = "members",
    security(("bearer" = [])),
    params(MemberListQuery),
    responses(
        (status = 200, description = "One page of members", body = MemberListPage),
        (status = 400, description = "`invalid_query`, `invalid_card_no`, `invalid_openid`, `invalid_card_level`, \
`invalid_source`, `invalid_follow_source`, `invalid_range`, `invalid_sort`, `invalid_order`, `invalid_limit`, `invalid_after`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username))]
pub async fn list_members(
    State(state): State<AppState>,
    auth: Authorized<perm::MemberRead>,
    query: ApiQuery<MemberListQuery>,
) -> Result<Json<MemberListPage>, ApiError> {
    let search = query.0.search()?;
    let tenant = &auth.session.tenant_id;
    let page = state.app.router.route(tenant)?.read_models.search_members(tenant, &search).await?;
    Ok(Json(page.into()))
}

/// A member by card number (10 digits with a Luhn check digit).
#[utoipa::path(get, path = "/admin/api/v1/members/by-card/{card_no}", tag = "members",
    security(("bearer" = [])),
    params(("card_no" = crate::doc::CardNumber, Path)),
    responses(
        (status = 200, description = "The member", body = MemberDto),
        (status = 400, description = "`invalid_card_no`, `invalid_path`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`member_not_found`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username))]
pub async fn get_member_by_card(
    State(state): State<AppState>,
    auth: Authorized<perm::MemberRead>,
    card: ApiPath<CardNumber>,
) -> Result<Json<MemberDto>, ApiError> {
    Ok(Json(members::find_by_card(&state.app, &auth.session.tenant_id, &card.0).await?.into()))
}

/// A member by WeChat openid.
#[utoipa::path(get, path = "/admin/api/v1/members/by-openid/{openid}", tag = "members",
    security(("bearer" = [])),
    params(("openid" = crate::doc::OpenId, Path)),
    responses(
        (status = 200, description = "The member", body = MemberDto),
        (status = 400, description = "`invalid_openid`, `invalid_path`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`member_not_found`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username))]
pub async fn get_member_by_openid(
    State(state): State<AppState>,
    auth: Authorized<perm::MemberRead>,
    openid: ApiPath<OpenId>,
) -> Result<Json<MemberDto>, ApiError> {
    Ok(Json(members::find_by_openid(&state.app, &auth.session.tenant_id, &openid.0).await?.into()))
}

/// Registers a member by hand (source `staff`). 201 when created (or when a
/// creation is replayed), 200 with the existing member when it already existed.
#[utoipa::path(post, path = "/admin/api/v1/members", tag = "members",
    security(("bearer" = [])),
    params(("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters")),
    request_body = RegisterBody,
    responses(
        (status = 201, description = "Registered", body = MemberDto),
        (status = 200, description = "Already registered (same openid)", body = MemberDto),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`, `already_registered`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_openid`, `invalid_card_level`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username))]
pub async fn register_member(
    State(state): State<AppState>,
    auth: Authorized<perm::MemberRegister>,
    key: IdempotencyHeader,
    correlation: Correlation,
    body: ApiJson<RegisterBody>,
) -> Result<(StatusCode, Json<MemberDto>), ApiError> {
    let request = body.0.validate()?;
    let ctx = auth.context(key.0, correlation);
    let (view, outcome) = members::register(&state.app, &auth.session.tenant_id, request, auth.actor(), &ctx).await?;
    let created = outcome.replayed || !outcome.events.is_empty();
    tracing::info!(member_id = %view.member_id, created, "member registration");
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(view.into())))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CardCodeLookup {
    /// What the member's card QR holds (from `GET /m/api/v1/card-code`).
    #[schema(value_type = crate::doc::CardCodeInput)]
    pub code: String,
}

/// The member whose card QR was scanned at the counter. A lookup (changes
/// nothing, no `Idempotency-Key`): a code is genuine, at most 5 minutes old
/// and this merchant's, or it is refused.
#[utoipa::path(post, path = "/admin/api/v1/members/card-code-lookups", tag = "members",
    security(("bearer" = [])),
    request_body = CardCodeLookup,
    responses(
        (status = 200, description = "The member", body = MemberDto),
        (status = 400, description = "`malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`member_not_found`, `card_code_not_found` (well formed, but not a code this \
server issued: its MAC does not verify)", body = ErrorBody),
        (status = 409, description = "`card_code_expired`, `other_tenant_card`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_card_code` (malformed)", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username))]
pub async fn lookup_card_code(
    State(state): State<AppState>,
    auth: Authorized<perm::MemberRead>,
    body: ApiJson<CardCodeLookup>,
) -> Result<Json<MemberDto>, ApiError> {
    use wxcm_commands::card_codes::{lookup, CardCodeError};
    match lookup(&state.app, &auth.session.tenant_id, &body.0.code).await {
        Ok(view) => Ok(Json(view.into())),
        Err(e) => Err(match e {
            CardCodeError::Malformed => ApiError::invalid("invalid_card_code", e.to_string()),
            // Like an unknown coupon code: no code of ours has this MAC.
            CardCodeError::Forged => ApiError::not_found("card_code_not_found", e.to_string()),
            CardCodeError::Expired => ApiError::conflict("card_code_expired", e.to_string()),
            CardCodeError::OtherTenant => ApiError::conflict("other_tenant_card", e.to_string()),
            CardCodeError::Member(m) => m.into(),
        }),
    }
}
