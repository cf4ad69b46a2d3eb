//! Campaigns (tag `campaigns`): shake lotteries for admins
//! (`/admin/api/v1/campaigns/…`: create, edit while draft, schedule, start,
//! end) and members (`/m/api/v1/campaigns/…`, tag `member`: ongoing
//! campaigns, shake, my shakes). Another tenant's campaign is 404.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use tracing::instrument;
use wxcm_commands::campaigns::{self, shakes, CampaignOpError};
use wxcm_domain::campaign::{CampaignError, CampaignId};

use crate::error::{idempotency_key_reused, unknown_tenant, ApiError, ErrorBody};
use crate::extract::{parse_path_segment, ApiJson, ApiPath, ApiQuery, Authorized, Correlation, IdempotencyHeader};
use crate::permissions::perm;
use crate::resources::member_api::MemberAuth;
use crate::state::AppState;

mod draw_audit;
mod periods;
mod popularity;
mod prizes;
mod report;
mod snatch;
mod types;
mod voting;
pub use draw_audit::*;
pub use periods::*;
pub use popularity::*;
pub use prizes::*;
pub use report::*;
pub use snatch::*;
pub use types::*;
pub use voting::*;

impl From<CampaignOpError> for ApiError {
    fn from(e: CampaignOpError) -> Self {
        let message = e.to_string();
        match e {
            CampaignOpError::NotFound => ApiError::not_found("campaign_not_found", message),
            CampaignOpError::MemberNotFound => ApiError::not_found("member_not_found", message),
            CampaignOpError::PeriodNotFound(_) => ApiError::not_found("period_not_found", message),
            CampaignOpError::PeriodsByCycle => ApiError::conflict("periods_by_cycle", message),
            CampaignOpError::NoBeacon(_) => ApiError::conflict("no_beacon", message),
            CampaignOpError::BeaconValueConflict(_) => ApiError::conflict("beacon_value_conflict", message),
            // The scheduler retries a draw waiting for its beacon; no request waits for one.
            CampaignOpError::BeaconPending(_) => ApiError::conflict("beacon_pending", message),
            CampaignOpError::TemplateNotFound(_) => ApiError::not_found("template_not_found", message),
            CampaignOpError::Campaign(c) => campaign_rejection(&c),
            CampaignOpError::IdempotencyMismatch => idempotency_key_reused(),
            CampaignOpError::Contention => ApiError::Contention,
            CampaignOpError::Unsupported(_) => ApiError::conflict("unsupported", message),
            CampaignOpError::InsufficientPoints { .. } => ApiError::conflict("insufficient_points", message),
            CampaignOpError::EntryAbandoned => ApiError::conflict("entry_abandoned", message),
            CampaignOpError::Route(r) => unknown_tenant(&r),
            CampaignOpError::Infra(detail) => ApiError::internal("campaign operation", &detail),
            CampaignOpError::Unavailable(detail) => ApiError::unavailable("campaign operation", &detail),
            CampaignOpError::InsufficientBalance { .. } => ApiError::conflict("insufficient_balance", message),
            CampaignOpError::PurchaseAbandoned => ApiError::conflict("purchase_abandoned", message),
            CampaignOpError::PaidTooLate => ApiError::conflict("paid_too_late", message),
            CampaignOpError::Pay(_) => ApiError::invalid("pay_refused", message),
        }
    }
}

fn campaign_rejection(e: &CampaignError) -> ApiError {
    let message = e.to_string();
    match e {
        CampaignError::NotFound => ApiError::not_found("campaign_not_found", message),
        CampaignError::AwardNotFound(_) => ApiError::not_found("award_not_found", message),
        CampaignError::AlreadyExists => ApiError::conflict("campaign_exists", message),
        // Bodies are checked at the edge (422): the domain's refusal is the clock's, at
        // scheduling (the window has passed), a state that refuses a valid request.
        CampaignError::InvalidTerms(_) => ApiError::conflict("window_ended", message),
        CampaignError::NotDraft(_) => ApiError::conflict("not_draft", message),
        CampaignError::WrongStatus(_) => ApiError::conflict("wrong_status", message),
        CampaignError::WrongKind(_) => ApiError::conflict("wrong_kind", message),
        CampaignError::AlreadyEnded => ApiError::conflict("already_ended", message),
        CampaignError::AlreadyHandedOver(_) => ApiError::conflict("already_handed_over", message),
        CampaignError::Refused(r) => ApiError::conflict(r.code(), message),
        CampaignError::PeriodNotOpen(_) => ApiError::conflict("not_ongoing", message),
        // An admin names the period to cancel.
        CampaignError::PeriodNotFound(_) => ApiError::not_found("period_not_found", message),
        CampaignError::PeriodClosed(_) => ApiError::conflict("period_drawn", message),
        // An operator's window that the campaign's own window or periods leave no room for
        // (the body's order is checked at the edge, 422 `invalid_period`).
        CampaignError::InvalidPeriod(_) => ApiError::conflict("period_window_conflict", message),
        CampaignError::InvalidQuantity(_) => ApiError::invalid("invalid_quantity", message),
        CampaignError::SharesLeft(_) => ApiError::conflict("shares_left", message),
        CampaignError::PurchaseConflict(_) => idempotency_key_reused(),
        CampaignError::Vote(v) => voting::vote_rejection(v),
        // The application chooses these values; a refusal is ours, not the client's.
        CampaignError::CommitmentRequired
        | CampaignError::CommitmentPerPeriod
        | CampaignError::SeedMismatch
        | CampaignError::PeriodOutOfOrder { .. }
        | CampaignError::PeriodConflict(_)
        | CampaignError::PeriodStillOpen(..)
        | CampaignError::BeaconValueRequired(_)
        | CampaignError::UnexpectedBeacon(_)
        | CampaignError::EntryConflict(_)
        | CampaignError::BatchSize
        | CampaignError::NotEnded
        | CampaignError::AlreadyRevealed
        | CampaignError::PaymentMismatch(_)
        | CampaignError::Draw(_) => ApiError::internal("campaign", &message),
    }
}

// ---------------------------------------------------------------- admin

/// Creates a shake lottery as a draft (its terms can change until it is scheduled).
///
/// Rules between fields (422 `invalid_terms` or `invalid_stock` otherwise): `ends_at` is after
/// `starts_at` and at most 366 days later; a prize slot has a `stock`, a thanks slot none; at
/// least one slot is a prize.
#[utoipa::path(post, path = "/admin/api/v1/campaigns", tag = "campaigns",
    security(("bearer" = [])),
    params(("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters; the same key is the same campaign")),
    request_body = ShakeLotteryBody,
    responses(
        (status = 201, description = "Created (or replayed)", body = CampaignDto),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`template_not_found` (a coupon prize names no template of this tenant)", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_text`, `invalid_prize`, `invalid_slots`, `invalid_weight`, `invalid_stock`, `invalid_chances`, `invalid_prizes_per_member_max`, `invalid_terms`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username))]
pub async fn create_campaign(
    State(state): State<AppState>,
    auth: Authorized<perm::CampaignManage>,
    key: IdempotencyHeader,
    correlation: Correlation,
    body: ApiJson<ShakeLotteryBody>,
) -> Result<(StatusCode, Json<CampaignDto>), ApiError> {
    let terms = body.0.validate()?;
    let ctx = auth.context(key.0, correlation);
    let view = campaigns::create(&state.app, &ctx, terms, auth.actor()).await?;
    Ok((StatusCode::CREATED, Json(view.into())))
}

/// Creates a periodic lottery as a draft (entries free, or `entry_cost_points` each): once scheduled, the
/// scheduler opens a period per merchant day or week (each committing to its own
/// seed), draws it at its end and gives the winners their prizes.
///
/// Rules between fields (422 `invalid_terms` otherwise): `ends_at` is after `starts_at` and at
/// most 366 days later; the tiers give at most 1,000 winners in all.
#[utoipa::path(post, path = "/admin/api/v1/periodic-campaigns", tag = "campaigns",
    security(("bearer" = [])),
    params(("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters; the same key is the same campaign")),
    request_body = PeriodicLotteryBody,
    responses(
        (status = 201, description = "Created (or replayed)", body = CampaignDto),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`template_not_found` (a coupon prize names no template of this tenant)", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_text`, `invalid_prize`, `invalid_tiers`, `invalid_chances`, `invalid_entrants_max`, `invalid_entry_cost`, `invalid_terms`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username))]
pub async fn create_periodic_campaign(
    State(state): State<AppState>,
    auth: Authorized<perm::CampaignManage>,
    key: IdempotencyHeader,
    correlation: Correlation,
    body: ApiJson<PeriodicLotteryBody>,
) -> Result<(StatusCode, Json<CampaignDto>), ApiError> {
    let terms = body.0.validate()?;
    let ctx = auth.context(key.0, correlation);
    let view = campaigns::create(&state.app, &ctx, terms, auth.actor()).await?;
    Ok((StatusCode::CREATED, Json(view.into())))
}

/// One campaign with its odds in force, counts and seed commitment.
#[utoipa::path(get, path = "/admin/api/v1/campaigns/{campaign_id}", tag = "campaigns",
    security(("bearer" = [])),
    params(("campaign_id" = uuid::Uuid, Path)),
    responses(
        (status = 200, description = "The campaign", body = CampaignDto),
        (status = 400, description = "`invalid_campaign_id`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`campaign_not_found`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, campaign_id = %id.0))]
pub async fn get_campaign(
    State(state): State<AppState>,
    auth: Authorized<perm::CampaignRead>,
    id: ApiPath<CampaignId>,
) -> Result<Json<CampaignDto>, ApiError> {
    Ok(Json(campaigns::get(&state.app, &auth.session.tenant_id, id.0).await?.into()))
}

/// The tenant's campaigns in id order, every kind and status.
#[utoipa::path(get, path = "/admin/api/v1/campaigns", tag = "campaigns",
    security(("bearer" = [])),
    params(CampaignPageQuery),
    responses(
        (status = 200, description = "One page", body = CampaignList),
        (status = 400, description = "`invalid_query`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 422, description = "`invalid_limit`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id))]
pub async fn list_campaigns(
    State(state): State<AppState>,
    auth: Authorized<perm::CampaignRead>,
    query: ApiQuery<CampaignPageQuery>,
) -> Result<Json<CampaignList>, ApiError> {
    let limit = query.0.limit.unwrap_or(50);
    if !(1..=campaigns::CAMPAIGN_PAGE_MAX).contains(&limit) {
        let message = format!("limit must be 1..={}", campaigns::CAMPAIGN_PAGE_MAX);
        return Err(ApiError::invalid("invalid_limit", message));
    }
    let after = query.0.after.map(CampaignId::from_uuid);
    let views = campaigns::list(&state.app, &auth.session.tenant_id, after, limit).await?;
    Ok(Json(CampaignList { campaigns: views.into_iter().map(Into::into).collect() }))
}

/// Replaces a shake lottery draft's terms (the same rules between fields as at creation).
#[utoipa::path(put, path = "/admin/api/v1/campaigns/{campaign_id}/terms", tag = "campaigns",
    security(("bearer" = [])),
    params(("campaign_id" = uuid::Uuid, Path)),
    request_body = ShakeLotteryBody,
    responses(
        (status = 200, description = "Changed (or replayed)", body = CampaignDto),
        (status = 400, description = "`invalid_campaign_id`, `idempotency_key_missing`, `idempotency_key_invalid`, `malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`campaign_not_found`, `template_not_found` (a coupon prize names no template of this tenant)", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`, `not_draft`, `wrong_kind` (a shake lottery's terms for a periodic draft: the kind is fixed at creation)", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_text`, `invalid_prize`, `invalid_slots`, `invalid_weight`, `invalid_stock`, `invalid_chances`, `invalid_prizes_per_member_max`, `invalid_terms`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, campaign_id = %id.0))]
pub async fn put_terms(
    State(state): State<AppState>,
    auth: Authorized<perm::CampaignManage>,
    key: IdempotencyHeader,
    correlation: Correlation,
    id: ApiPath<CampaignId>,
    body: ApiJson<ShakeLotteryBody>,
) -> Result<Json<CampaignDto>, ApiError> {
    let terms = body.0.validate()?;
    let ctx = auth.context(key.0, correlation);
    Ok(Json(campaigns::edit(&state.app, &ctx, id.0, terms, auth.actor()).await?.into()))
}

/// Fixes the terms and commits to the draw seed (its SHA-256 is published now,
/// the seed itself when the campaign ends). The campaign starts at `starts_at`.
#[utoipa::path(post, path = "/admin/api/v1/campaigns/{campaign_id}/schedule", tag = "campaigns",
    security(("bearer" = [])),
    params(("campaign_id" = uuid::Uuid, Path)),
    responses(
        (status = 200, description = "Scheduled (or replayed)", body = CampaignDto),
        (status = 400, description = "`invalid_campaign_id`, `idempotency_key_missing`, `idempotency_key_invalid`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`campaign_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`, `not_draft`, `window_ended` (it would end before it is scheduled)", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, campaign_id = %id.0))]
pub async fn schedule_campaign(
    State(state): State<AppState>,
    auth: Authorized<perm::CampaignManage>,
    key: IdempotencyHeader,
    correlation: Correlation,
    id: ApiPath<CampaignId>,
) -> Result<Json<CampaignDto>, ApiError> {
    let ctx = auth.context(key.0, correlation);
    Ok(Json(campaigns::schedule(&state.app, &ctx, id.0, auth.actor()).await?.into()))
}

/// Starts a scheduled campaign before its `starts_at`.
#[utoipa::path(post, path = "/admin/api/v1/campaigns/{campaign_id}/start", tag = "campaigns",
    security(("bearer" = [])),
    params(("campaign_id" = uuid::Uuid, Path)),
    responses(
        (status = 200, description = "Started (or replayed)", body = CampaignDto),
        (status = 400, description = "`invalid_campaign_id`, `idempotency_key_missing`, `idempotency_key_invalid`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`campaign_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`, `wrong_status`, `already_ended`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, campaign_id = %id.0))]
pub async fn start_campaign(
    State(state): State<AppState>,
    auth: Authorized<perm::CampaignManage>,
    key: IdempotencyHeader,
    correlation: Correlation,
    id: ApiPath<CampaignId>,
) -> Result<Json<CampaignDto>, ApiError> {
    let ctx = auth.context(key.0, correlation);
    Ok(Json(campaigns::start(&state.app, &ctx, id.0, auth.actor()).await?.into()))
}

/// Ends the campaign now and reveals a shake lottery's seed, with which anyone
/// can recompute every shake (`wxcm audit draw`).
#[utoipa::path(post, path = "/admin/api/v1/campaigns/{campaign_id}/end", tag = "campaigns",
    security(("bearer" = [])),
    params(("campaign_id" = uuid::Uuid, Path)),
    responses(
        (status = 200, description = "Ended (or replayed)", body = CampaignDto),
        (status = 400, description = "`invalid_campaign_id`, `idempotency_key_missing`, `idempotency_key_invalid`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`campaign_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`, `wrong_status` (a draft), `already_ended`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, campaign_id = %id.0))]
pub async fn end_campaign(
    State(state): State<AppState>,
    auth: Authorized<perm::CampaignManage>,
    key: IdempotencyHeader,
    correlation: Correlation,
    id: ApiPath<CampaignId>,
) -> Result<Json<CampaignDto>, ApiError> {
    let ctx = auth.context(key.0, correlation);
    Ok(Json(campaigns::end(&state.app, &ctx, id.0, auth.actor()).await?.into()))
}

/// Cancels a period of a periodic lottery before its draw: it is never drawn
/// nor entered again, and every paid entry gets its points back once (an
/// ordinary ledger credit referencing the entry, issued by due work that
/// survives restarts). Cancelling again changes nothing.
#[utoipa::path(post, path = "/admin/api/v1/campaigns/{campaign_id}/periods/{period_no}/cancel", tag = "campaigns",
    security(("bearer" = [])),
    params(
        ("campaign_id" = uuid::Uuid, Path),
        ("period_no" = u32, Path, minimum = 1, maximum = 400),
        ("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters"),
    ),
    responses(
        (status = 200, description = "Cancelled (or already cancelled)", body = CampaignDto),
        (status = 400, description = "`invalid_campaign_id`, `invalid_period_no`, `idempotency_key_missing`, `idempotency_key_invalid`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`campaign_not_found`, `period_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`, `period_drawn`, `wrong_kind`", body = ErrorBody),
        (status = 503, description = "`contention`, `unavailable`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id))]
pub async fn cancel_period(
    State(state): State<AppState>,
    auth: Authorized<perm::CampaignManage>,
    key: IdempotencyHeader,
    correlation: Correlation,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<CampaignDto>, ApiError> {
    let Path((campaign, period)) = path?;
    let campaign_id: CampaignId = parse_path_segment(&campaign)?;
    let period_no = parse_period_no(&period)?;
    let ctx = auth.context(key.0, correlation);
    campaigns::periods::cancel_period(&state.app, &ctx, campaign_id, period_no, auth.actor()).await?;
    Ok(Json(campaigns::get(&state.app, &ctx.tenant_id, campaign_id).await?.into()))
}

pub(crate) fn parse_period_no(raw: &str) -> Result<u32, ApiError> {
    let max = wxcm_domain::campaign::PERIODS_MAX;
    match raw.parse::<u32>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(ApiError::bad_request("invalid_period_no", format!("a period number is 1..={max}"))),
    }
}

/// Hands a won physical prize over at the store (once).
#[utoipa::path(post, path = "/admin/api/v1/campaigns/{campaign_id}/hand-overs", tag = "campaigns",
    security(("bearer" = [])),
    params(("campaign_id" = uuid::Uuid, Path)),
    request_body = HandOverBody,
    responses(
        (status = 200, description = "Handed over (or replayed)", body = CampaignDto),
        (status = 400, description = "`invalid_campaign_id`, `idempotency_key_missing`, `idempotency_key_invalid`, `malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`campaign_not_found`, `award_not_found` (no physical prize was won so)", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`, `already_handed_over`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_award`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, campaign_id = %id.0))]
pub async fn hand_over(
    State(state): State<AppState>,
    auth: Authorized<perm::CampaignHandOver>,
    key: IdempotencyHeader,
    correlation: Correlation,
    id: ApiPath<CampaignId>,
    body: ApiJson<HandOverBody>,
) -> Result<Json<CampaignDto>, ApiError> {
    let award = body.0.validate()?;
    let ctx = auth.context(key.0, correlation);
    Ok(Json(campaigns::hand_over(&state.app, &ctx, id.0, award, auth.actor()).await?.into()))
}

// ---------------------------------------------------------------- member API

/// Campaigns the member can take part in now, with the odds in force.
#[utoipa::path(get, path = "/m/api/v1/campaigns", tag = "member",
    security(("member_bearer" = [])),
    responses(
        (status = 200, description = "Ongoing campaigns", body = CampaignList),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
    ))]
pub async fn member_campaigns(
    State(state): State<AppState>,
    MemberAuth(session): MemberAuth,
) -> Result<Json<CampaignList>, ApiError> {
    let views = campaigns::ongoing(&state.app, &session.tenant_id).await?;
    Ok(Json(CampaignList { campaigns: views.into_iter().map(Into::into).collect() }))
}

/// Shakes once: the member's next chance, drawn at once against the table in
/// force; a prize of points or a coupon is issued with it.
#[utoipa::path(post, path = "/m/api/v1/campaigns/{campaign_id}/shakes", tag = "member",
    security(("member_bearer" = [])),
    params(
        ("campaign_id" = uuid::Uuid, Path),
        ("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters; the same key is the same shake"),
    ),
    responses(
        (status = 201, description = "Drawn (or replayed)", body = ShakeResultDto),
        (status = 400, description = "`invalid_campaign_id`, `idempotency_key_missing`, `idempotency_key_invalid`", body = ErrorBody),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
        (status = 404, description = "`campaign_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`, `not_ongoing`, `members_only`, `lifetime_limit_reached`, `daily_limit_reached`, `prize_limit_reached`, `prizes_exhausted`, `too_many_participants`, `wrong_kind`", body = ErrorBody),
        (status = 503, description = "`contention`", body = ErrorBody),
    ))]
pub async fn member_shake(
    State(state): State<AppState>,
    auth: MemberAuth,
    key: IdempotencyHeader,
    id: ApiPath<CampaignId>,
) -> Result<(StatusCode, Json<ShakeResultDto>), ApiError> {
    let (_, ctx) = auth.command(key.0);
    let result = shakes::shake(&state.app, &ctx, id.0, auth.0.member_id).await?;
    Ok((StatusCode::CREATED, Json(result.into())))
}

/// Enters the open period of a periodic lottery once (one more ticket).
#[utoipa::path(post, path = "/m/api/v1/campaigns/{campaign_id}/entries", tag = "member",
    security(("member_bearer" = [])),
    params(
        ("campaign_id" = uuid::Uuid, Path),
        ("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters; the same key is the same entry"),
    ),
    responses(
        (status = 201, description = "Entered (or replayed)", body = EntryDto),
        (status = 400, description = "`invalid_campaign_id`, `idempotency_key_missing`, `idempotency_key_invalid`", body = ErrorBody),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
        (status = 404, description = "`campaign_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`, `not_ongoing`, `members_only`, `lifetime_limit_reached`, `daily_limit_reached`, `period_limit_reached`, `period_full`, `too_many_participants`, `wrong_kind`, `insufficient_points` (nothing recorded), `entry_abandoned` (this key's entry was refused and its points released)", body = ErrorBody),
        (status = 503, description = "`contention`", body = ErrorBody),
    ))]
pub async fn member_enter(
    State(state): State<AppState>,
    auth: MemberAuth,
    key: IdempotencyHeader,
    id: ApiPath<CampaignId>,
) -> Result<(StatusCode, Json<EntryDto>), ApiError> {
    let (_, ctx) = auth.command(key.0);
    let period_no = campaigns::periods::enter(&state.app, &ctx, id.0, auth.0.member_id).await?;
    Ok((StatusCode::CREATED, Json(EntryDto { campaign_id: id.0.as_uuid(), period_no })))
}

/// The member's entries and prizes in a periodic lottery, a popularity lottery or a 1-yuan snatch:
/// per period (newest first, at most 400) their tickets and, once drawn, what they won (a physical
/// prize with its hand-over).
#[utoipa::path(get, path = "/m/api/v1/campaigns/{campaign_id}/entries", tag = "member",
    security(("member_bearer" = [])),
    params(("campaign_id" = uuid::Uuid, Path)),
    responses(
        (status = 200, description = "The member's periods", body = MemberEntriesDto),
        (status = 400, description = "`invalid_campaign_id`", body = ErrorBody),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
        (status = 404, description = "`campaign_not_found`", body = ErrorBody),
        (status = 409, description = "`wrong_kind`: a shake lottery (see its shakes) or a vote", body = ErrorBody),
    ))]
pub async fn member_entries(
    State(state): State<AppState>,
    MemberAuth(session): MemberAuth,
    id: ApiPath<CampaignId>,
) -> Result<Json<MemberEntriesDto>, ApiError> {
    let periods = campaigns::periods::member_entries(&state.app, &session.tenant_id, id.0, session.member_id).await?;
    Ok(Json(MemberEntriesDto { periods: periods.iter().map(Into::into).collect() }))
}

/// The member's own shakes in the campaign, in chance order.
#[utoipa::path(get, path = "/m/api/v1/campaigns/{campaign_id}/shakes", tag = "member",
    security(("member_bearer" = [])),
    params(("campaign_id" = uuid::Uuid, Path)),
    responses(
        (status = 200, description = "The member's shakes", body = ShakeList),
        (status = 400, description = "`invalid_campaign_id`", body = ErrorBody),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
        (status = 404, description = "`campaign_not_found`", body = ErrorBody),
    ))]
pub async fn member_shakes(
    State(state): State<AppState>,
    MemberAuth(session): MemberAuth,
    id: ApiPath<CampaignId>,
) -> Result<Json<ShakeList>, ApiError> {
    let draws = shakes::member_shakes(&state.app, &session.tenant_id, id.0, session.member_id).await?;
    Ok(Json(ShakeList { shakes: draws.iter().map(Into::into).collect() }))
}
