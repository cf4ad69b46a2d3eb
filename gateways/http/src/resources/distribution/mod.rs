//! Distribution (tag `distribution`): the tenant's settings, distributors and
//! their audit queue, members' bindings and subordinates for admins
//! (`/admin/api/v1/…`); apply, my standing, my link / QR / code, bind by code
//! and my subordinates for members (`/m/api/v1/distribution/…`, tag
//! `member`); and the public promotion link (`/m/distribution/…`), which
//! goes through WeChat OAuth and binds the visitor.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use tracing::instrument;
use wxcm_commands::distribution::{
    self as uc, AdminChange, DistributionError, DistributorQr, DistributorQuery, DISTRIBUTOR_PAGE_MAX,
    SUBORDINATE_PAGE_MAX,
};
use wxcm_domain::distribution::binding::{BindingRefusal, BindingRoute, DistributorStanding, EnrolmentRefusal};
use wxcm_domain::distribution::DistributorError;
use wxcm_domain::{AppId, MemberId, TenantId};

use crate::error::{idempotency_key_reused, unknown_tenant, ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery, Authorized, Correlation, IdempotencyHeader};
use crate::permissions::perm;
use crate::resources::member_api::MemberAuth;
use crate::resources::referral::{
    oauth_visitor, redirect, referral_account, OAUTH_CODE_BYTES_MAX, OAUTH_STATE_BYTES_MAX,
};
use crate::resources::wechat::{account_mode, outbound, public_base_url, tenant_state};
use crate::state::AppState;

mod ranks;
mod types;
pub use ranks::*;
pub use types::*;

/// Default entries of one page.
pub const PAGE_DEFAULT: u32 = 50;
/// Path of the promotion link's OAuth redirect, under the public base URL.
pub const LINK_CALLBACK_PATH: &str = "/m/distribution/callback";

impl From<DistributionError> for ApiError {
    fn from(e: DistributionError) -> Self {
        let message = e.to_string();
        match e {
            DistributionError::NotFound("member") => ApiError::not_found("member_not_found", message),
            DistributionError::NotFound(_) => ApiError::not_found("distributor_not_found", message),
            DistributionError::Distributor(d) => distributor_rejection(&d),
            DistributionError::Binding(b) => binding_refusal(&b),
            DistributionError::UnknownCode => ApiError::not_found("distributor_code_not_found", message),
            DistributionError::NotDistributor => ApiError::conflict("not_distributor", message),
            DistributionError::UnknownLevel(_) => ApiError::conflict("unknown_distributor_level", message),
            DistributionError::IdempotencyMismatch => idempotency_key_reused(),
            DistributionError::Contention => ApiError::Contention,
            DistributionError::Route(r) => unknown_tenant(&r),
            DistributionError::Infra(detail) => ApiError::internal("distribution", &detail),
            DistributionError::Unavailable(detail) => ApiError::unavailable("distribution", &detail),
        }
    }
}

fn distributor_rejection(e: &DistributorError) -> ApiError {
    let message = e.to_string();
    match e {
        DistributorError::Enrolment(r) => match r {
            EnrolmentRefusal::DesignationOnly => ApiError::conflict("designation_only", message),
            EnrolmentRefusal::BelowThreshold { .. } => ApiError::conflict("below_threshold", message),
            EnrolmentRefusal::AlreadyDistributor => ApiError::conflict("already_distributor", message),
            EnrolmentRefusal::Suspended => ApiError::conflict("distributor_suspended", message),
            EnrolmentRefusal::ApplicationPending => ApiError::conflict("application_pending", message),
        },
        DistributorError::Standing(_) => ApiError::conflict("wrong_standing", message),
        DistributorError::WrongMember => ApiError::not_found("distributor_not_found", message),
    }
}

fn binding_refusal(e: &BindingRefusal) -> ApiError {
    let message = e.to_string();
    match e {
        BindingRefusal::SelfBinding => ApiError::conflict("self_binding", message),
        BindingRefusal::Cycle { .. } => ApiError::conflict("binding_cycle", message),
        BindingRefusal::NotActiveDistributor => ApiError::conflict("distributor_not_active", message),
        BindingRefusal::Bound(_) => ApiError::conflict("already_bound", message),
        // Settings are validated when saved and chains are written acyclic: ours, not the client's.
        BindingRefusal::WindowDays(_) | BindingRefusal::CorruptChain => ApiError::internal("binding", &message),
    }
}

fn page_limit(limit: Option<u32>, max: u32) -> Result<u32, ApiError> {
    let limit = limit.unwrap_or(PAGE_DEFAULT);
    if !(1..=max).contains(&limit) {
        return Err(ApiError::invalid("invalid_limit", format!("limit must be 1..={max}")));
    }
    Ok(limit)
}

fn distributor_list(views: Vec<uc::DistributorView>, limit: u32) -> DistributorList {
    let full = views.len() == limit as usize;
    let next_after = if full { views.last().map(|v| v.member_id.as_uuid()) } else { None };
    DistributorList { distributors: views.into_iter().map(Into::into).collect(), next_after }
}

async fn subordinate_page(
    state: &AppState,
    tenant: &TenantId,
    distributor: MemberId,
    query: SubordinateQuery,
) -> Result<SubordinateList, ApiError> {
    let level = query.level.unwrap_or(1);
    if !(1..=2).contains(&level) {
        return Err(ApiError::invalid("invalid_level", "level must be 1 or 2"));
    }
    let limit = page_limit(query.limit, SUBORDINATE_PAGE_MAX)?;
    let after = query.after.map(MemberId::from_uuid);
    let rows = uc::subordinates(&state.app, tenant, distributor, level, after, limit).await?;
    let full = rows.len() == limit as usize;
    let next_after = if full { rows.last().map(|s| s.member_id.as_uuid()) } else { None };
    Ok(SubordinateList { level, subordinates: rows.into_iter().map(Into::into).collect(), next_after })
}

// ---------------------------------------------------------------- admin: settings

/// The tenant's distribution settings (the defaults until an admin saves them: application,
/// first binding wins, one level, no rates, no reward).
#[utoipa::path(get, path = "/admin/api/v1/distribution/settings", tag = "distribution",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The settings", body = DistributionSettingsDto),
        (status = 403, description = "`forbidden`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id))]
pub async fn get_settings(
    State(state): State<AppState>,
    auth: Authorized<perm::DistributionRead>,
) -> Result<Json<DistributionSettingsDto>, ApiError> {
    Ok(Json(uc::settings(&state.app, &auth.session.tenant_id).await?.into()))
}

/// Replaces the tenant's distribution settings. Changes apply to what happens next: existing
/// distributors and bindings stay. Rules between fields: `default_rates.first_bps +
/// default_rates.second_bps` ≤ 10000.
#[utoipa::path(put, path = "/admin/api/v1/distribution/settings", tag = "distribution",
    security(("bearer" = [])),
    params(("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters")),
    request_body = DistributionSettingsDto,
    responses(
        (status = 200, description = "Saved (or replayed)", body = DistributionSettingsDto),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_threshold`, `invalid_binding_mode`, `invalid_depth`, `invalid_rates`, `invalid_points`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username))]
pub async fn put_settings(
    State(state): State<AppState>,
    auth: Authorized<perm::DistributionManage>,
    body: ApiJson<DistributionSettingsDto>,
) -> Result<Json<DistributionSettingsDto>, ApiError> {
    let settings = body.0.validate()?;
    Ok(Json(uc::put_settings(&state.app, &auth.session.tenant_id, &settings, &auth.actor()).await?.into()))
}

// ---------------------------------------------------------------- admin: distributors

/// The tenant's distributors (every standing, or one), in member id order.
#[utoipa::path(get, path = "/admin/api/v1/distributors", tag = "distribution",
    security(("bearer" = [])),
    params(DistributorPageQuery),
    responses(
        (status = 200, description = "One page", body = DistributorList),
        (status = 400, description = "`invalid_query`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 422, description = "`invalid_limit`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id))]
pub async fn list_distributors(
    State(state): State<AppState>,
    auth: Authorized<perm::DistributionRead>,
    query: ApiQuery<DistributorPageQuery>,
) -> Result<Json<DistributorList>, ApiError> {
    let limit = page_limit(query.0.limit, DISTRIBUTOR_PAGE_MAX)?;
    let q = DistributorQuery {
        standing: query.0.standing.map(StandingDto::standing),
        after: query.0.after.map(MemberId::from_uuid),
        limit,
    };
    let views = uc::list_distributors(&state.app, &auth.session.tenant_id, &q).await?;
    Ok(Json(distributor_list(views, limit)))
}

/// The audit queue: applications waiting for an admin, in member id order.
#[utoipa::path(get, path = "/admin/api/v1/distributor-applications", tag = "distribution",
    security(("bearer" = [])),
    params(PageQuery),
    responses(
        (status = 200, description = "One page of pending applications", body = DistributorList),
        (status = 400, description = "`invalid_query`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 422, description = "`invalid_limit`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id))]
pub async fn list_applications(
    State(state): State<AppState>,
    auth: Authorized<perm::DistributionRead>,
    query: ApiQuery<PageQuery>,
) -> Result<Json<DistributorList>, ApiError> {
    let limit = page_limit(query.0.limit, DISTRIBUTOR_PAGE_MAX)?;
    let q = DistributorQuery {
        standing: Some(DistributorStanding::Applied),
        after: query.0.after.map(MemberId::from_uuid),
        limit,
    };
    let views = uc::list_distributors(&state.app, &auth.session.tenant_id, &q).await?;
    Ok(Json(distributor_list(views, limit)))
}

/// One member's standing as a distributor.
#[utoipa::path(get, path = "/admin/api/v1/distributors/{member_id}", tag = "distribution",
    security(("bearer" = [])),
    params(("member_id" = uuid::Uuid, Path)),
    responses(
        (status = 200, description = "The distributor", body = DistributorDto),
        (status = 400, description = "`invalid_member_id`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`distributor_not_found`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, member_id = %id.0))]
pub async fn get_distributor(
    State(state): State<AppState>,
    auth: Authorized<perm::DistributionRead>,
    id: ApiPath<MemberId>,
) -> Result<Json<DistributorDto>, ApiError> {
    Ok(Json(uc::get_distributor(&state.app, &auth.session.tenant_id, id.0).await?.into()))
}

async fn change(
    state: &AppState,
    auth: &Authorized<perm::DistributionManage>,
    key: IdempotencyHeader,
    correlation: Correlation,
    member: MemberId,
    change: AdminChange,
) -> Result<Json<DistributorDto>, ApiError> {
    let ctx = auth.context(key.0, correlation);
    Ok(Json(uc::change_standing(&state.app, &ctx, member, change, auth.actor()).await?.into()))
}

/// Approves a pending application: the member becomes an active distributor.
#[utoipa::path(post, path = "/admin/api/v1/distributors/{member_id}/approve", tag = "distribution",
    security(("bearer" = [])),
    params(("member_id" = uuid::Uuid, Path), ("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters")),
    responses(
        (status = 200, description = "Approved (or replayed)", body = DistributorDto),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `invalid_member_id`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`member_not_found`, `distributor_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`, `wrong_standing` (no pending application)", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, member_id = %id.0))]
pub async fn approve(
    State(state): State<AppState>,
    auth: Authorized<perm::DistributionManage>,
    key: IdempotencyHeader,
    correlation: Correlation,
    id: ApiPath<MemberId>,
) -> Result<Json<DistributorDto>, ApiError> {
    change(&state, &auth, key, correlation, id.0, AdminChange::Approve).await
}

/// Rejects a pending application with a reason (the member may apply again).
#[utoipa::path(post, path = "/admin/api/v1/distributors/{member_id}/reject", tag = "distribution",
    security(("bearer" = [])),
    params(("member_id" = uuid::Uuid, Path), ("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters")),
    request_body = DecisionReasonBody,
    responses(
        (status = 200, description = "Rejected (or replayed)", body = DistributorDto),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `invalid_member_id`, `malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`member_not_found`, `distributor_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`, `wrong_standing` (no pending application)", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_reason`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, member_id = %id.0))]
pub async fn reject(
    State(state): State<AppState>,
    auth: Authorized<perm::DistributionManage>,
    key: IdempotencyHeader,
    correlation: Correlation,
    id: ApiPath<MemberId>,
    body: ApiJson<DecisionReasonBody>,
) -> Result<Json<DistributorDto>, ApiError> {
    let reason = body.0.validate()?;
    change(&state, &auth, key, correlation, id.0, AdminChange::Reject { reason }).await
}

/// Makes a member an active distributor whatever the enrolment policy (also a pending or
/// rejected applicant).
#[utoipa::path(post, path = "/admin/api/v1/distributors/{member_id}/designate", tag = "distribution",
    security(("bearer" = [])),
    params(("member_id" = uuid::Uuid, Path), ("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters")),
    responses(
        (status = 200, description = "Designated (or replayed)", body = DistributorDto),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `invalid_member_id`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`member_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`, `wrong_standing` (already active or suspended)", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, member_id = %id.0))]
pub async fn designate(
    State(state): State<AppState>,
    auth: Authorized<perm::DistributionManage>,
    key: IdempotencyHeader,
    correlation: Correlation,
    id: ApiPath<MemberId>,
) -> Result<Json<DistributorDto>, ApiError> {
    change(&state, &auth, key, correlation, id.0, AdminChange::Designate).await
}

/// Suspends an active distributor with a reason: nobody binds to them until reinstated.
#[utoipa::path(post, path = "/admin/api/v1/distributors/{member_id}/suspend", tag = "distribution",
    security(("bearer" = [])),
    params(("member_id" = uuid::Uuid, Path), ("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters")),
    request_body = DecisionReasonBody,
    responses(
        (status = 200, description = "Suspended (or replayed)", body = DistributorDto),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `invalid_member_id`, `malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`member_not_found`, `distributor_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`, `wrong_standing` (not active)", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_reason`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, member_id = %id.0))]
pub async fn suspend(
    State(state): State<AppState>,
    auth: Authorized<perm::DistributionManage>,
    key: IdempotencyHeader,
    correlation: Correlation,
    id: ApiPath<MemberId>,
    body: ApiJson<DecisionReasonBody>,
) -> Result<Json<DistributorDto>, ApiError> {
    let reason = body.0.validate()?;
    change(&state, &auth, key, correlation, id.0, AdminChange::Suspend { reason }).await
}

/// Reinstates a suspended distributor.
#[utoipa::path(post, path = "/admin/api/v1/distributors/{member_id}/reinstate", tag = "distribution",
    security(("bearer" = [])),
    params(("member_id" = uuid::Uuid, Path), ("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters")),
    responses(
        (status = 200, description = "Reinstated (or replayed)", body = DistributorDto),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `invalid_member_id`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`member_not_found`, `distributor_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`, `wrong_standing` (not suspended)", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, member_id = %id.0))]
pub async fn reinstate(
    State(state): State<AppState>,
    auth: Authorized<perm::DistributionManage>,
    key: IdempotencyHeader,
    correlation: Correlation,
    id: ApiPath<MemberId>,
) -> Result<Json<DistributorDto>, ApiError> {
    change(&state, &auth, key, correlation, id.0, AdminChange::Reinstate).await
}

/// Sets the distributor's level (a code of the commission settings' `distributor_levels`; 409
/// `unknown_distributor_level` otherwise), or none (null). A distributor at a level earns its
/// rates at the position they earn (1 or 2) unless the product has terms of its own; without a
/// level (or with a code removed from the catalog since) the tenant's default rates apply.
#[utoipa::path(put, path = "/admin/api/v1/distributors/{member_id}/level", tag = "distribution",
    security(("bearer" = [])),
    params(("member_id" = uuid::Uuid, Path), ("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters")),
    request_body = DistributorLevelBody,
    responses(
        (status = 200, description = "Set (or replayed, or unchanged)", body = DistributorDto),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `invalid_member_id`, `malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`member_not_found`, `distributor_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`, `unknown_distributor_level`, `wrong_standing`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_level`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, member_id = %id.0))]
pub async fn put_level(
    State(state): State<AppState>,
    auth: Authorized<perm::DistributionManage>,
    key: IdempotencyHeader,
    correlation: Correlation,
    id: ApiPath<MemberId>,
    body: ApiJson<DistributorLevelBody>,
) -> Result<Json<DistributorDto>, ApiError> {
    let level = body.0.validate()?;
    let ctx = auth.context(key.0, correlation);
    Ok(Json(uc::set_level(&state.app, &ctx, id.0, level, auth.actor()).await?.into()))
}

/// A distributor's subordinates: level 1 (bound to them) or level 2 (bound to those).
#[utoipa::path(get, path = "/admin/api/v1/distributors/{member_id}/subordinates", tag = "distribution",
    security(("bearer" = [])),
    params(("member_id" = uuid::Uuid, Path), SubordinateQuery),
    responses(
        (status = 200, description = "One page", body = SubordinateList),
        (status = 400, description = "`invalid_member_id`, `invalid_query`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`member_not_found`", body = ErrorBody),
        (status = 422, description = "`invalid_level`, `invalid_limit`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, member_id = %id.0))]
pub async fn admin_subordinates(
    State(state): State<AppState>,
    auth: Authorized<perm::DistributionRead>,
    id: ApiPath<MemberId>,
    query: ApiQuery<SubordinateQuery>,
) -> Result<Json<SubordinateList>, ApiError> {
    Ok(Json(subordinate_page(&state, &auth.session.tenant_id, id.0, query.0).await?))
}

/// A member's binding: whom they are bound to now, and every binding made (who, when, by which route).
#[utoipa::path(get, path = "/admin/api/v1/members/{member_id}/distribution-binding", tag = "distribution",
    security(("bearer" = [])),
    params(("member_id" = uuid::Uuid, Path)),
    responses(
        (status = 200, description = "The binding and its history", body = MemberBindingDto),
        (status = 400, description = "`invalid_member_id`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`member_not_found`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, member_id = %id.0))]
pub async fn member_binding(
    State(state): State<AppState>,
    auth: Authorized<perm::DistributionRead>,
    id: ApiPath<MemberId>,
) -> Result<Json<MemberBindingDto>, ApiError> {
    let (current, history) = uc::binding_of(&state.app, &auth.session.tenant_id, id.0).await?;
    Ok(Json(MemberBindingDto {
        member_id: id.0.as_uuid(),
        current: current.map(Into::into),
        history: history.into_iter().map(Into::into).collect(),
    }))
}

// ---------------------------------------------------------------- member

/// `POST /m/api/v1/distribution/application`: the member asks to become a distributor under the
/// tenant's policy: enrolled at once (`everyone`; `spending_threshold` when met: cash paid for mall
/// orders net of refunds, so a refunded order does not count) or queued for an admin (`application`).
#[utoipa::path(post, path = "/m/api/v1/distribution/application", tag = "member",
    security(("member_bearer" = [])),
    params(("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters")),
    responses(
        (status = 200, description = "Applied or enrolled (or replayed)", body = DistributorDto),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`", body = ErrorBody),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
        (status = 409, description = "`designation_only`, `below_threshold`, `already_distributor`, `distributor_suspended`, `application_pending`, `idempotency_key_reused`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.0.tenant_id, member_id = %auth.0.member_id))]
pub async fn member_apply(
    State(state): State<AppState>,
    auth: MemberAuth,
    key: IdempotencyHeader,
) -> Result<Json<DistributorDto>, ApiError> {
    let (_, ctx) = auth.command(key.0);
    Ok(Json(uc::apply(&state.app, &ctx, auth.0.member_id).await?.into()))
}

/// `GET /m/api/v1/distribution/me`: the member's standing and whom they are bound to. Under the
/// `everyone` policy a member is enrolled when they apply or first ask for their promotion.
#[utoipa::path(get, path = "/m/api/v1/distribution/me", tag = "member",
    security(("member_bearer" = [])),
    responses(
        (status = 200, description = "The member's standing", body = MyDistributorDto),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.0.tenant_id, member_id = %auth.0.member_id))]
pub async fn member_status(
    State(state): State<AppState>,
    auth: MemberAuth,
) -> Result<Json<MyDistributorDto>, ApiError> {
    let (tenant, member) = (&auth.0.tenant_id, auth.0.member_id);
    let distributor = uc::find_distributor(&state.app, tenant, member).await?;
    let (current, _) = uc::binding_of(&state.app, tenant, member).await?;
    Ok(Json(MyDistributorDto {
        standing: standing_name(distributor.as_ref().map_or(DistributorStanding::NotDistributor, |d| d.standing))
            .to_owned(),
        distributor: distributor.map(Into::into),
        bound_to: current.map(Into::into),
    }))
}

/// `GET /m/api/v1/distribution/promotion`: an active distributor's link, code and scene QR code
/// (made at WeChat the first time, then kept).
#[utoipa::path(get, path = "/m/api/v1/distribution/promotion", tag = "member",
    security(("member_bearer" = [])),
    params(("appid" = Option<String>, Query, description = "The account of the QR code; defaults to the tenant's first")),
    responses(
        (status = 200, description = "Link, code and QR", body = PromotionDto),
        (status = 400, description = "`invalid_appid`", body = ErrorBody),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
        (status = 404, description = "`account_not_bound`", body = ErrorBody),
        (status = 409, description = "`not_distributor` (not an active distributor)", body = ErrorBody),
        (status = 422, description = "`wechat_rejected`", body = ErrorBody),
        (status = 502, description = "`wechat_unavailable`", body = ErrorBody),
        (status = 503, description = "`wechat_not_configured`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.0.tenant_id, member_id = %auth.0.member_id))]
pub async fn member_promotion(
    State(state): State<AppState>,
    auth: MemberAuth,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<PromotionDto>, ApiError> {
    let (tenant, member) = (&auth.0.tenant_id, auth.0.member_id);
    let distributor = uc::ensure_everyone_enrolled(&state.app, tenant, member).await?;
    let Some(distributor) = distributor.filter(|d| d.standing == DistributorStanding::Active) else {
        return Err(DistributionError::NotDistributor.into());
    };
    let outbound = outbound(&state)?;
    let base = public_base_url(outbound.as_ref())?;
    let shard = state.app.router.route(tenant)?;
    let qr = match distributor.qr {
        Some(qr) => qr,
        None => {
            let tenant_settings = tenant_state(&shard, tenant).await?;
            let (appid, _) = referral_account(&tenant_settings, query.get("appid").map(String::as_str))?;
            let mode = account_mode(&tenant_settings, &appid)?;
            let scene = format!("{}{}", uc::QR_SCENE_PREFIX, distributor.code);
            let created = outbound.create_qr_code(&appid, mode, &scene, None).await?;
            let qr = DistributorQr { appid, ticket: created.ticket, url: created.url };
            shard.distribution.save_qr(tenant, member, &qr).await.map_err(DistributionError::from)?;
            tracing::info!(%tenant, %member, "distributor QR code created");
            qr
        }
    };
    Ok(Json(PromotionDto {
        link: format!("{base}/m/distribution/{tenant}/{}", distributor.code),
        code: distributor.code,
        qr: DistributorQrDto { appid: qr.appid.to_string(), ticket: qr.ticket, url: qr.url },
    }))
}

/// `POST /m/api/v1/distribution/bindings {code}`: the member binds to the distributor whose code
/// they typed, under the tenant's binding mode.
#[utoipa::path(post, path = "/m/api/v1/distribution/bindings", tag = "member",
    security(("member_bearer" = [])),
    params(("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters; the same key is the same binding")),
    request_body = BindByCodeBody,
    responses(
        (status = 200, description = "Bound, already bound to this distributor, or replayed", body = BindOutcomeDto),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `malformed_json`", body = ErrorBody),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
        (status = 404, description = "`distributor_code_not_found` (no active distributor has the code)", body = ErrorBody),
        (status = 409, description = "`self_binding`, `binding_cycle`, `already_bound`, `distributor_not_active`, `idempotency_key_reused`", body = ErrorBody),
        (status = 422, description = "`invalid_body`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.0.tenant_id, member_id = %auth.0.member_id))]
pub async fn member_bind(
    State(state): State<AppState>,
    auth: MemberAuth,
    key: IdempotencyHeader,
    body: ApiJson<BindByCodeBody>,
) -> Result<Json<BindOutcomeDto>, ApiError> {
    let (tenant, member) = (&auth.0.tenant_id, auth.0.member_id);
    // A text that cannot be a code is a code nobody has.
    let code = uc::parse_code(&body.0.code).ok_or_else(|| ApiError::from(DistributionError::UnknownCode))?;
    let request_key = format!("member:{}:{}", member, key.0.as_str());
    let outcome = uc::bind_by_code(&state.app, tenant, member, &code, BindingRoute::Code, &request_key).await?;
    Ok(Json(outcome.into()))
}

/// `GET /m/api/v1/distribution/subordinates`: the member's own subordinates (level 1 or 2).
#[utoipa::path(get, path = "/m/api/v1/distribution/subordinates", tag = "member",
    security(("member_bearer" = [])),
    params(SubordinateQuery),
    responses(
        (status = 200, description = "One page", body = SubordinateList),
        (status = 400, description = "`invalid_query`", body = ErrorBody),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
        (status = 422, description = "`invalid_level`, `invalid_limit`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.0.tenant_id, member_id = %auth.0.member_id))]
pub async fn member_subordinates(
    State(state): State<AppState>,
    auth: MemberAuth,
    query: ApiQuery<SubordinateQuery>,
) -> Result<Json<SubordinateList>, ApiError> {
    Ok(Json(subordinate_page(&state, &auth.0.tenant_id, auth.0.member_id, query.0).await?))
}

// ---------------------------------------------------------------- public link

/// The OAuth `state` of a promotion link: `{tenant}.{code}.{appid}`. Unsigned, as the link is:
/// the visitor's openid comes from WeChat's code exchange, never from the state.
pub fn link_state(tenant: &TenantId, code: &str, appid: &AppId) -> String {
    format!("{tenant}.{code}.{}", appid.as_str())
}

pub fn parse_link_state(state: &str) -> Option<(TenantId, String, AppId)> {
    if state.len() > OAUTH_STATE_BYTES_MAX {
        return None;
    }
    let mut parts = state.split('.');
    let (tenant, code, appid) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    Some((TenantId::parse(tenant).ok()?, uc::parse_code(code)?, AppId::parse(appid).ok()?))
}

/// Public: a distributor's promotion link. Sends the browser to WeChat OAuth (`snsapi_base`),
/// which comes back to the callback.
#[utoipa::path(get, path = "/m/distribution/{tenant}/{code}", tag = "member",
    params(("tenant" = String, Path), ("code" = String, Path),
        ("appid" = Option<String>, Query, description = "The account to authorize with; defaults to the tenant's first")),
    responses(
        (status = 302, description = "To WeChat's OAuth page"),
        (status = 400, description = "`invalid_path`, `invalid_appid`", body = ErrorBody),
        (status = 404, description = "`tenant_not_found`, `distributor_code_not_found`, `account_not_bound`", body = ErrorBody),
        (status = 503, description = "`wechat_not_configured`", body = ErrorBody),
    ))]
#[instrument(skip_all)]
pub async fn link_start(
    State(state): State<AppState>,
    Path((tenant, code)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let bad_path = || ApiError::bad_request("invalid_path", "unknown tenant or code in the link");
    let tenant = TenantId::parse(&tenant).map_err(|_| bad_path())?;
    let code = uc::parse_code(&code).ok_or_else(bad_path)?;
    let shard = state.app.router.route(&tenant)?;
    let distributor = shard.distribution.distributor_by_code(&tenant, &code).await.map_err(DistributionError::from)?;
    if distributor.is_none() {
        return Err(DistributionError::UnknownCode.into());
    }
    let (appid, mode) =
        referral_account(&tenant_state(&shard, &tenant).await?, query.get("appid").map(String::as_str))?;
    let outbound = outbound(&state)?;
    let redirect_uri = format!("{}{LINK_CALLBACK_PATH}", public_base_url(outbound.as_ref())?);
    let url = outbound.oauth_authorize_url(&appid, mode, &redirect_uri, &link_state(&tenant, &code, &appid))?;
    redirect(&url)
}

/// Public: WeChat's OAuth redirect of a promotion link. The visitor becomes a member (as a
/// sign-in would make them) and is bound to the distributor under the tenant's binding mode; the
/// page says what happened (`data-outcome`: `bound`, `already_bound`, `replayed`, `self_binding`,
/// `binding_cycle`, `kept_binding`, `not_active`).
#[utoipa::path(get, path = "/m/distribution/callback", tag = "member",
    params(("code" = String, Query), ("state" = String, Query)),
    responses(
        (status = 200, description = "A page saying whether the visitor was bound"),
        (status = 400, description = "`invalid_query`, `invalid_state`", body = ErrorBody),
        (status = 404, description = "`tenant_not_found`, `distributor_code_not_found`, `account_not_bound`", body = ErrorBody),
        (status = 422, description = "`wechat_rejected` (bad or used code)", body = ErrorBody),
        (status = 502, description = "`wechat_unavailable`", body = ErrorBody),
    ))]
#[instrument(skip_all)]
pub async fn link_callback(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let oauth_code = query.get("code").filter(|c| !c.is_empty() && c.len() <= OAUTH_CODE_BYTES_MAX);
    let oauth_code = oauth_code.ok_or_else(|| ApiError::bad_request("invalid_query", "code must be 1..=256 bytes"))?;
    let (tenant, code, appid) = query
        .get("state")
        .and_then(|s| parse_link_state(s))
        .ok_or_else(|| ApiError::bad_request("invalid_state", "state is not a promotion link's state"))?;
    let visitor = oauth_visitor(&state, &tenant, &appid, oauth_code).await?;
    // One visit (one OAuth code) is one request: a reload of the same callback replays it.
    let request_key = format!("link:{}:{}", visitor.as_str(), oauth_code);
    let outcome = match uc::arrive_through_link(&state.app, &tenant, &visitor, &code, &request_key).await {
        Ok(outcome) => BindOutcomeDto::from(outcome).outcome,
        Err(DistributionError::Binding(refusal)) => match refusal {
            BindingRefusal::SelfBinding => "self_binding".to_owned(),
            BindingRefusal::Cycle { .. } => "binding_cycle".to_owned(),
            BindingRefusal::Bound(_) => "kept_binding".to_owned(),
            BindingRefusal::NotActiveDistributor => "not_active".to_owned(),
            other => return Err(binding_refusal(&other)),
        },
        Err(e) => return Err(e.into()),
    };
    let words = match outcome.as_str() {
        "bound" | "already_bound" | "replayed" => "Welcome! You joined through your friend's link.",
        "kept_binding" => "Welcome back! You stay with the friend who invited you first.",
        _ => "Welcome! This link cannot invite you.",
    };
    // Fixed texts only: nothing from the request is echoed into the page.
    let page = format!(
        "<!doctype html><meta charset=utf-8><meta name=viewport content=\"width=device-width\">\
<title>Invitation</title><p id=outcome data-outcome=\"{outcome}\">{words}</p>"
    );
    Ok((StatusCode::OK, Html(page)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_states_round_trip_and_are_bounded() {
        let tenant = TenantId::parse("acme").unwrap();
        let appid = AppId::parse("wx0123456789abcdef").unwrap();
        let state = link_state(&tenant, "ABCDEFGH", &appid);
        assert_eq!(parse_link_state(&state), Some((tenant, "ABCDEFGH".to_owned(), appid)));
        assert_eq!(parse_link_state("acme.short.wx0123456789abcdef"), None);
        assert_eq!(parse_link_state(&"x".repeat(OAUTH_STATE_BYTES_MAX + 1)), None);
    }
}
