//! Coupons (tag `coupons`): templates, operator grants, the counter's
//! write-off and void (`/admin/api/v1/coupon-templates`, `/coupons`), and the
//! member's side (`/m/api/v1/coupon-templates`, `/coupons`, tag `member`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use tracing::instrument;
use wxcm_commands::coupons::{self, dispatch, CouponOpError, Recipient};
use wxcm_commands::ports::CouponSearch;
use wxcm_commands::CommandContext;
use wxcm_domain::coupon::{CouponError, CouponId, TemplateCommand, TemplateError, TemplateId};
use wxcm_domain::MemberId;

use crate::error::{idempotency_key_reused, unknown_tenant, ApiError, ErrorBody};

/// The body limit of a dispatch: its largest list (`dispatch::DISPATCH_LIST_MAX` ids of 36
/// characters, quoted, with separators and spaces) fits, whatever `http.body_bytes_max` says.
pub const DISPATCH_BODY_BYTES_MAX: usize = 1024 * 1024;
const _: () = assert!(dispatch::DISPATCH_LIST_MAX * 64 + 4096 <= DISPATCH_BODY_BYTES_MAX);
use crate::extract::{ApiJson, ApiPath, ApiQuery, Authorized, Correlation, IdempotencyHeader};
use crate::permissions::perm;
use crate::resources::member_api::MemberAuth;
use crate::state::AppState;

mod types;
pub use types::*;

/// Default templates of one page.
pub const TEMPLATE_PAGE_DEFAULT: u32 = 50;

impl From<CouponOpError> for ApiError {
    fn from(e: CouponOpError) -> Self {
        let message = e.to_string();
        match e {
            CouponOpError::NotFound("member") => ApiError::not_found("member_not_found", message),
            CouponOpError::NotFound("coupon template") => ApiError::not_found("template_not_found", message),
            CouponOpError::NotFound("dispatch job") => ApiError::not_found("dispatch_not_found", message),
            CouponOpError::NotFound(_) => ApiError::not_found("coupon_not_found", message),
            CouponOpError::Refused(why) => ApiError::conflict(why.code(), message),
            CouponOpError::Coupon(c) => coupon_rejection(&c),
            CouponOpError::Template(t) => template_rejection(&t),
            CouponOpError::InvalidCode(_) => ApiError::invalid("invalid_code", message),
            CouponOpError::InvalidDispatch(_) => ApiError::invalid("invalid_dispatch", message),
            CouponOpError::OtherTenant => ApiError::conflict("other_tenant_coupon", message),
            CouponOpError::IdempotencyMismatch => idempotency_key_reused(),
            CouponOpError::Contention => ApiError::Contention,
            CouponOpError::Route(r) => unknown_tenant(&r),
            CouponOpError::Infra(detail) => ApiError::internal("coupon operation", &detail),
            CouponOpError::Unavailable(detail) => ApiError::unavailable("coupon operation", &detail),
        }
    }
}

fn coupon_rejection(e: &CouponError) -> ApiError {
    let message = e.to_string();
    match e {
        CouponError::NotFound => ApiError::not_found("coupon_not_found", message),
        CouponError::AlreadyIssued => ApiError::conflict("already_issued", message),
        CouponError::AlreadyRedeemed => ApiError::conflict("already_redeemed", message),
        CouponError::Voided => ApiError::conflict("coupon_voided", message),
        CouponError::Expired => ApiError::conflict("coupon_expired", message),
        CouponError::NotYetValid(_) => ApiError::conflict("coupon_not_yet_valid", message),
        // The code was looked up, so a mismatch is our index disagreeing with the stream.
        CouponError::WrongCode => ApiError::not_found("coupon_not_found", "coupon not found"),
        CouponError::StillValid(_) => ApiError::conflict("coupon_still_valid", message),
        CouponError::HeldByOrder(_) => ApiError::conflict("coupon_held_by_order", message),
        // Only the mall's order steps move a coupon for an order.
        CouponError::NotHeldByOrder(_) => ApiError::internal("coupon", &message),
    }
}

fn template_rejection(e: &TemplateError) -> ApiError {
    let message = e.to_string();
    match e {
        TemplateError::NotFound => ApiError::not_found("template_not_found", message),
        TemplateError::AlreadyExists => ApiError::conflict("template_exists", message),
        TemplateError::InvalidTerms(_) => ApiError::invalid("invalid_terms", message),
        TemplateError::StockBelowIssued { .. } => ApiError::conflict("stock_below_issued", message),
        TemplateError::InvalidStock => ApiError::invalid("invalid_stock", message),
        TemplateError::SameSwitch(_) => ApiError::conflict("unchanged", message),
        TemplateError::Refused(why) => ApiError::conflict(why.code(), message),
        TemplateError::BatchSize => ApiError::internal("coupon issue", &message),
    }
}

/// Creates a coupon template (enabled at once).
#[utoipa::path(post, path = "/admin/api/v1/coupon-templates", tag = "coupons",
    security(("bearer" = [])),
    params(("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters; the same key is the same template")),
    request_body = CreateTemplateBody,
    responses(
        (status = 201, description = "Created (or replayed)", body = TemplateDto),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_terms`, `invalid_amount`, `invalid_text`, `invalid_card_level`, `invalid_stock`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username))]
pub async fn create_template(
    State(state): State<AppState>,
    auth: Authorized<perm::CouponSettings>,
    key: IdempotencyHeader,
    correlation: Correlation,
    body: ApiJson<CreateTemplateBody>,
) -> Result<(StatusCode, Json<TemplateDto>), ApiError> {
    let terms = body.0.terms.validate()?;
    let stock = body.0.stock.validate();
    let ctx = auth.context(key.0, correlation);
    let view = coupons::create_template(&state.app, &ctx, terms, stock, auth.actor()).await?;
    Ok((StatusCode::CREATED, Json(view.into())))
}

/// The tenant's coupon templates, in id order.
#[utoipa::path(get, path = "/admin/api/v1/coupon-templates", tag = "coupons",
    security(("bearer" = [])),
    params(TemplatePageQuery),
    responses(
        (status = 200, description = "One page", body = TemplateList),
        (status = 400, description = "`invalid_query`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 422, description = "`invalid_limit`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id))]
pub async fn list_templates(
    State(state): State<AppState>,
    auth: Authorized<perm::CouponRead>,
    query: ApiQuery<TemplatePageQuery>,
) -> Result<Json<TemplateList>, ApiError> {
    let limit = page_limit(query.0.limit)?;
    let after = query.0.after.map(TemplateId::from_uuid);
    let views = coupons::list_templates(&state.app, &auth.session.tenant_id, after, limit).await?;
    Ok(Json(TemplateList { templates: views.into_iter().map(Into::into).collect() }))
}

fn page_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    let limit = limit.unwrap_or(TEMPLATE_PAGE_DEFAULT);
    if !(1..=coupons::TEMPLATE_PAGE_MAX).contains(&limit) {
        return Err(ApiError::invalid("invalid_limit", "limit must be 1..=200"));
    }
    Ok(limit)
}

/// One template with its stock figures.
#[utoipa::path(get, path = "/admin/api/v1/coupon-templates/{template_id}", tag = "coupons",
    security(("bearer" = [])),
    params(("template_id" = uuid::Uuid, Path)),
    responses(
        (status = 200, description = "The template", body = TemplateDto),
        (status = 400, description = "`invalid_template_id`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`template_not_found`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, template_id = %id.0))]
pub async fn get_template(
    State(state): State<AppState>,
    auth: Authorized<perm::CouponRead>,
    id: ApiPath<TemplateId>,
) -> Result<Json<TemplateDto>, ApiError> {
    Ok(Json(coupons::get_template(&state.app, &auth.session.tenant_id, id.0).await?.into()))
}

/// A template's coupons (from the read model: may lag a moment): counts per
/// state and one page in serial order.
#[utoipa::path(get, path = "/admin/api/v1/coupon-templates/{template_id}/coupons", tag = "coupons",
    security(("bearer" = [])),
    params(("template_id" = uuid::Uuid, Path), CouponPageQuery),
    responses(
        (status = 200, description = "Counts and one page", body = TemplateCouponsPage),
        (status = 400, description = "`invalid_template_id`, `invalid_query`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`template_not_found`", body = ErrorBody),
        (status = 422, description = "`invalid_limit`, `invalid_state`, `invalid_after`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, template_id = %id.0))]
pub async fn template_coupons(
    State(state): State<AppState>,
    auth: Authorized<perm::CouponRead>,
    id: ApiPath<TemplateId>,
    query: ApiQuery<CouponPageQuery>,
) -> Result<Json<TemplateCouponsPage>, ApiError> {
    let limit = page_limit(query.0.limit)?;
    // Serials are stored as BIGINT: a larger `after` names no coupon and must not reach the query.
    let after_serial = match query.0.after {
        Some(after) if i64::try_from(after).is_err() => {
            return Err(ApiError::invalid("invalid_after", format!("after must be 0..={}", i64::MAX)))
        }
        after => after,
    };
    let search = CouponSearch { template_id: id.0, state: query.0.state()?, after_serial, limit };
    let (counts, rows) = coupons::template_coupons(&state.app, &auth.session.tenant_id, &search).await?;
    Ok(Json(TemplateCouponsPage::new(counts, rows, limit)))
}

async fn change(
    state: &AppState,
    ctx: &CommandContext,
    id: TemplateId,
    command: TemplateCommand,
) -> Result<Json<TemplateDto>, ApiError> {
    Ok(Json(coupons::change_template(&state.app, ctx, id, command).await?.into()))
}

/// Replaces the terms; coupons already issued keep theirs.
#[utoipa::path(put, path = "/admin/api/v1/coupon-templates/{template_id}/terms", tag = "coupons",
    security(("bearer" = [])),
    params(("template_id" = uuid::Uuid, Path), ("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters")),
    request_body = TermsDto,
    responses(
        (status = 200, description = "Changed (or replayed)", body = TemplateDto),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `invalid_template_id`, `malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`template_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_terms`, `invalid_amount`, `invalid_text`, `invalid_card_level`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, template_id = %id.0))]
pub async fn put_terms(
    State(state): State<AppState>,
    auth: Authorized<perm::CouponSettings>,
    key: IdempotencyHeader,
    correlation: Correlation,
    id: ApiPath<TemplateId>,
    body: ApiJson<TermsDto>,
) -> Result<Json<TemplateDto>, ApiError> {
    let terms = body.0.validate()?;
    let ctx = auth.context(key.0, correlation);
    change(&state, &ctx, id.0, TemplateCommand::Edit { terms, actor: auth.actor() }).await
}

/// Sets the stock; a finite stock cannot drop below what was issued.
#[utoipa::path(put, path = "/admin/api/v1/coupon-templates/{template_id}/stock", tag = "coupons",
    security(("bearer" = [])),
    params(("template_id" = uuid::Uuid, Path), ("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters")),
    request_body = TemplateStockBody,
    responses(
        (status = 200, description = "Changed (or replayed)", body = TemplateDto),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `invalid_template_id`, `malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`template_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`, `stock_below_issued`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_stock`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, template_id = %id.0))]
pub async fn put_stock(
    State(state): State<AppState>,
    auth: Authorized<perm::CouponSettings>,
    key: IdempotencyHeader,
    correlation: Correlation,
    id: ApiPath<TemplateId>,
    body: ApiJson<TemplateStockBody>,
) -> Result<Json<TemplateDto>, ApiError> {
    let stock = body.0.stock.validate();
    let ctx = auth.context(key.0, correlation);
    change(&state, &ctx, id.0, TemplateCommand::SetStock { stock, actor: auth.actor() }).await
}

/// Switches claiming and grants on or off.
#[utoipa::path(put, path = "/admin/api/v1/coupon-templates/{template_id}/enabled", tag = "coupons",
    security(("bearer" = [])),
    params(("template_id" = uuid::Uuid, Path), ("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters")),
    request_body = SwitchBody,
    responses(
        (status = 200, description = "Changed (or replayed)", body = TemplateDto),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `invalid_template_id`, `malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`template_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`, `unchanged`", body = ErrorBody),
        (status = 422, description = "`invalid_body`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, template_id = %id.0))]
pub async fn put_enabled(
    State(state): State<AppState>,
    auth: Authorized<perm::CouponSettings>,
    key: IdempotencyHeader,
    correlation: Correlation,
    id: ApiPath<TemplateId>,
    body: ApiJson<SwitchBody>,
) -> Result<Json<TemplateDto>, ApiError> {
    let actor = auth.actor();
    let command = if body.0.enabled { TemplateCommand::Enable { actor } } else { TemplateCommand::Disable { actor } };
    let ctx = auth.context(key.0, correlation);
    change(&state, &ctx, id.0, command).await
}

/// Makes the template a welcome coupon (given to every member registered from
/// now on, by the scheduler, once per member) or stops it.
#[utoipa::path(put, path = "/admin/api/v1/coupon-templates/{template_id}/welcome", tag = "coupons",
    security(("bearer" = [])),
    params(("template_id" = uuid::Uuid, Path), ("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters")),
    request_body = WelcomeBody,
    responses(
        (status = 200, description = "Changed (or replayed)", body = TemplateDto),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `invalid_template_id`, `malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`template_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`, `unchanged`", body = ErrorBody),
        (status = 422, description = "`invalid_body`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, template_id = %id.0))]
pub async fn put_welcome(
    State(state): State<AppState>,
    auth: Authorized<perm::CouponSettings>,
    key: IdempotencyHeader,
    correlation: Correlation,
    id: ApiPath<TemplateId>,
    body: ApiJson<WelcomeBody>,
) -> Result<Json<TemplateDto>, ApiError> {
    let command = TemplateCommand::SetWelcome { on: body.0.welcome, actor: auth.actor() };
    let ctx = auth.context(key.0, correlation);
    change(&state, &ctx, id.0, command).await
}

/// Gives a member one coupon of the template.
#[utoipa::path(post, path = "/admin/api/v1/coupon-templates/{template_id}/grants", tag = "coupons",
    security(("bearer" = [])),
    params(("template_id" = uuid::Uuid, Path), ("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters; the same key is the same coupon")),
    request_body = GrantBody,
    responses(
        (status = 201, description = "Issued (or replayed)", body = CouponDto),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `invalid_template_id`, `malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`template_not_found`, `member_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`, `sold_out`, `template_disabled`, `window_ended`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_text`", body = ErrorBody),
        (status = 503, description = "`contention`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, template_id = %id.0))]
pub async fn grant(
    State(state): State<AppState>,
    auth: Authorized<perm::CouponGrant>,
    key: IdempotencyHeader,
    correlation: Correlation,
    id: ApiPath<TemplateId>,
    body: ApiJson<GrantBody>,
) -> Result<(StatusCode, Json<CouponDto>), ApiError> {
    let (member_id, reason) = body.0.validate()?;
    let ctx = auth.context(key.0, correlation);
    let recipient = Recipient::Grant { member_id, reason };
    let view = coupons::issue(&state.app, &ctx, id.0, recipient, auth.actor()).await?;
    Ok((StatusCode::CREATED, Json(view.into())))
}

/// Starts a job giving one coupon of the template to each member of a list or
/// filter, in the background (the scheduler role runs it); at most one per
/// member and job, however often it is interrupted and resumed.
#[utoipa::path(post, path = "/admin/api/v1/coupon-templates/{template_id}/dispatches", tag = "coupons",
    security(("bearer" = [])),
    params(("template_id" = uuid::Uuid, Path), ("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters; the same key is the same job")),
    request_body = DispatchBody,
    responses(
        (status = 202, description = "Started (or replayed)", body = DispatchDto),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `invalid_template_id`, `malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`template_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: this route's limit is 1 MiB (10,000 ids fit)", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_dispatch`, `invalid_card_level`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, template_id = %id.0))]
pub async fn start_dispatch(
    State(state): State<AppState>,
    auth: Authorized<perm::CouponGrant>,
    key: IdempotencyHeader,
    correlation: Correlation,
    id: ApiPath<TemplateId>,
    body: ApiJson<DispatchBody>,
) -> Result<(StatusCode, Json<DispatchDto>), ApiError> {
    let target = body.0.validate()?;
    let ctx = auth.context(key.0, correlation);
    let job = dispatch::start(&state.app, &ctx, id.0, target, &auth.actor()).await?;
    Ok((StatusCode::ACCEPTED, Json(job.into())))
}

/// A dispatch job's progress and report.
#[utoipa::path(get, path = "/admin/api/v1/coupon-dispatches/{job_id}", tag = "coupons",
    security(("bearer" = [])),
    params(("job_id" = uuid::Uuid, Path)),
    responses(
        (status = 200, description = "The job", body = DispatchDto),
        (status = 400, description = "`invalid_job_id`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`dispatch_not_found`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id))]
pub async fn get_dispatch(
    State(state): State<AppState>,
    auth: Authorized<perm::CouponRead>,
    id: ApiPath<JobId>,
) -> Result<Json<DispatchDto>, ApiError> {
    Ok(Json(dispatch::get(&state.app, &auth.session.tenant_id, id.0 .0).await?.into()))
}

/// A dispatch job's id in a path.
pub struct JobId(pub uuid::Uuid);

impl crate::extract::PathValue for JobId {
    fn parse_segment(s: &str) -> Result<Self, ApiError> {
        uuid::Uuid::parse_str(s).map(JobId).map_err(|_| ApiError::bad_request("invalid_job_id", "not a job id"))
    }
}

/// One issued coupon.
#[utoipa::path(get, path = "/admin/api/v1/coupons/{coupon_id}", tag = "coupons",
    security(("bearer" = [])),
    params(("coupon_id" = uuid::Uuid, Path)),
    responses(
        (status = 200, description = "The coupon", body = CouponDto),
        (status = 400, description = "`invalid_coupon_id`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`coupon_not_found`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, coupon_id = %id.0))]
pub async fn get_coupon(
    State(state): State<AppState>,
    auth: Authorized<perm::CouponRead>,
    id: ApiPath<CouponId>,
) -> Result<Json<CouponDto>, ApiError> {
    Ok(Json(coupons::get_coupon(&state.app, &auth.session.tenant_id, id.0).await?.into()))
}

/// Voids an active coupon.
#[utoipa::path(post, path = "/admin/api/v1/coupons/{coupon_id}/void", tag = "coupons",
    security(("bearer" = [])),
    params(("coupon_id" = uuid::Uuid, Path), ("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters")),
    request_body = VoidBody,
    responses(
        (status = 200, description = "Voided (or replayed)", body = CouponDto),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `invalid_coupon_id`, `malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`coupon_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`, `already_redeemed`, `coupon_voided`, `coupon_expired`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_text`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, coupon_id = %id.0))]
pub async fn void_coupon(
    State(state): State<AppState>,
    auth: Authorized<perm::CouponVoid>,
    key: IdempotencyHeader,
    correlation: Correlation,
    id: ApiPath<CouponId>,
    body: ApiJson<VoidBody>,
) -> Result<Json<CouponDto>, ApiError> {
    let reason = body.0.validate()?;
    let ctx = auth.context(key.0, correlation);
    Ok(Json(coupons::void(&state.app, &ctx, id.0, reason, auth.actor()).await?.into()))
}

/// Writes a coupon off at the counter: by its QR payload or its typed code.
/// Exactly one of concurrent write-offs of a code succeeds.
#[utoipa::path(post, path = "/admin/api/v1/coupons/redemptions", tag = "coupons",
    security(("bearer" = [])),
    params(("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters")),
    request_body = RedeemBody,
    responses(
        (status = 200, description = "Written off (or replayed)", body = CouponDto),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`coupon_not_found` (no such code at this merchant)", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`, `already_redeemed`, `coupon_voided`, `coupon_expired`, `coupon_not_yet_valid`, `other_tenant_coupon`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_code`, `invalid_text`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username))]
pub async fn redeem(
    State(state): State<AppState>,
    auth: Authorized<perm::CouponRedeem>,
    key: IdempotencyHeader,
    correlation: Correlation,
    body: ApiJson<RedeemBody>,
) -> Result<Json<CouponDto>, ApiError> {
    let store = body.0.validate()?;
    let ctx = auth.context(key.0, correlation);
    Ok(Json(coupons::redeem(&state.app, &ctx, &body.0.code, store, auth.actor()).await?.into()))
}

/// A member's coupons, newest first (at most 200).
#[utoipa::path(get, path = "/admin/api/v1/members/{member_id}/coupons", tag = "coupons",
    security(("bearer" = [])),
    params(("member_id" = uuid::Uuid, Path)),
    responses(
        (status = 200, description = "The member's coupons", body = CouponList),
        (status = 400, description = "`invalid_member_id`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`member_not_found`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, member_id = %id.0))]
pub async fn member_coupons(
    State(state): State<AppState>,
    auth: Authorized<perm::CouponRead>,
    id: ApiPath<MemberId>,
) -> Result<Json<CouponList>, ApiError> {
    let views = coupons::member_coupons(&state.app, &auth.session.tenant_id, id.0).await?;
    Ok(Json(CouponList { coupons: views.into_iter().map(Into::into).collect() }))
}

// ---------------------------------------------------------------- member API

/// Templates the member may claim now (enabled; their audience admits the member).
#[utoipa::path(get, path = "/m/api/v1/coupon-templates", tag = "member",
    security(("member_bearer" = [])),
    responses(
        (status = 200, description = "Claimable templates", body = TemplateList),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
    ))]
pub async fn member_claimable(
    State(state): State<AppState>,
    MemberAuth(session): MemberAuth,
) -> Result<Json<TemplateList>, ApiError> {
    let me = wxcm_commands::members::get(&state.app, &session.tenant_id, session.member_id).await?;
    let views = coupons::list_templates(&state.app, &session.tenant_id, None, coupons::TEMPLATE_PAGE_MAX).await?;
    let level = wxcm_domain::member::CardLevel::parse(&me.card_level).ok();
    let now = state.app.clock.now();
    let claimable = views
        .into_iter()
        .filter(|v| v.enabled && v.stock_left != Some(0))
        .filter(|v| level.as_ref().is_some_and(|l| v.terms.audience.admits(l)))
        .filter(|v| match v.terms.validity {
            wxcm_domain::coupon::Validity::Window { until, .. } => now < until,
            wxcm_domain::coupon::Validity::DaysFromIssue { .. } => true,
        })
        .map(Into::into)
        .collect();
    Ok(Json(TemplateList { templates: claimable }))
}

/// Claims one coupon of a template (limit, audience and stock apply).
#[utoipa::path(post, path = "/m/api/v1/coupons/claims", tag = "member",
    security(("member_bearer" = [])),
    params(("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters; the same key is the same claim")),
    request_body = ClaimBody,
    responses(
        (status = 201, description = "Claimed (or replayed)", body = CouponDto),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `malformed_json`", body = ErrorBody),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
        (status = 404, description = "`template_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`, `sold_out`, `limit_reached`, `not_in_audience`, `template_disabled`, `window_ended`", body = ErrorBody),
        (status = 422, description = "`invalid_body`", body = ErrorBody),
        (status = 503, description = "`contention`", body = ErrorBody),
    ))]
pub async fn member_claim(
    State(state): State<AppState>,
    auth: MemberAuth,
    key: IdempotencyHeader,
    body: ApiJson<ClaimBody>,
) -> Result<(StatusCode, Json<CouponDto>), ApiError> {
    let (actor, ctx) = auth.command(key.0);
    let template_id = TemplateId::from_uuid(body.0.template_id);
    let recipient = Recipient::Claim { member_id: auth.0.member_id };
    let view = coupons::issue(&state.app, &ctx, template_id, recipient, actor).await?;
    Ok((StatusCode::CREATED, Json(view.into())))
}

/// The member's own coupons, newest first, with the QR payload to show.
#[utoipa::path(get, path = "/m/api/v1/coupons", tag = "member",
    security(("member_bearer" = [])),
    responses(
        (status = 200, description = "The member's coupons", body = CouponList),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
    ))]
pub async fn member_list(
    State(state): State<AppState>,
    MemberAuth(session): MemberAuth,
) -> Result<Json<CouponList>, ApiError> {
    let views = coupons::member_coupons(&state.app, &session.tenant_id, session.member_id).await?;
    Ok(Json(CouponList { coupons: views.into_iter().map(Into::into).collect() }))
}
