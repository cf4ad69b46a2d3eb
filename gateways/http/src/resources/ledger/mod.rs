//! Points and cash operations on a member, and the member's ledger
//! (`/admin/api/v1/members/{member_id}/points|cash|card-level|ledger`, tag
//! `ledger`). Each operation's body is validated into the application's
//! [`LedgerRequest`](wxcm_commands::ledger_requests::LedgerRequest) and run by
//! [`ledger_requests::execute`], which hashes that request for idempotency.

use axum::extract::State;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::Json;
use tracing::instrument;
use wxcm_commands::ledger_requests::{self, LedgerRequest};
use wxcm_commands::members;
use wxcm_domain::MemberId;

use crate::error::{ApiError, ErrorBody};
use crate::extract::{
    ApiJson, ApiPath, ApiQuery, Authorized, Correlation, IdempotencyHeader, IDEMPOTENT_REPLAYED_HEADER,
};
use crate::permissions::{perm, Requires};
use crate::state::AppState;

mod types;
pub use types::*;

/// Runs a validated ledger request and answers with its entries and the member after it.
async fn run<P: Requires>(
    state: &AppState,
    auth: &Authorized<P>,
    key: IdempotencyHeader,
    correlation: Correlation,
    member_id: MemberId,
    request: LedgerRequest,
) -> Result<Response, ApiError> {
    let tenant = &auth.session.tenant_id;
    let ctx = auth.context(key.0, correlation);
    let outcome = ledger_requests::execute(&state.app, tenant, member_id, request, auth.actor(), &ctx).await?;
    let member = members::get(&state.app, tenant, member_id).await?;
    tracing::info!(replayed = outcome.replayed, events = outcome.events.len(), "ledger operation");
    let replayed = outcome.replayed;
    // The operation log links this write to its events.
    let link = match (outcome.events.first(), outcome.events.last()) {
        (Some(first), Some(last)) => Some(wxcm_commands::oplog::EventLink {
            aggregate_type: <wxcm_domain::member::Member as wxcm_domain::EventSourced>::TYPE.into(),
            aggregate_id: outcome.aggregate_id.clone(),
            first_sequence: i64::try_from(first.sequence).unwrap_or(i64::MAX),
            last_sequence: i64::try_from(last.sequence).unwrap_or(i64::MAX),
        }),
        _ => None,
    };
    let entries = outcome.events.into_iter().map(LedgerEntryDto::from).collect();
    let mut response = Json(OperationResponse { entries, member: member.into() }).into_response();
    if let Some(link) = link {
        response.extensions_mut().insert(link);
    }
    if replayed {
        response.headers_mut().insert(IDEMPOTENT_REPLAYED_HEADER, HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// Grants points by hand (source `manual`) as a new lot with an expiry policy.
#[utoipa::path(post, path = "/admin/api/v1/members/{member_id}/points/grants", tag = "ledger",
    security(("bearer" = [])),
    params(("member_id" = uuid::Uuid, Path), ("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters")),
    request_body = GrantPointsBody,
    responses(
        (status = 200, description = "Done (or replayed)", body = OperationResponse, headers(("Idempotent-Replayed" = bool, description = "Set on a replay"))),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `invalid_member_id`, `malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`member_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`, `too_many_lots`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_amount`, `invalid_expiry`, `invalid_text`, `overflow`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username, member_id = %id.0))]
pub async fn grant_points(
    State(state): State<AppState>,
    auth: Authorized<perm::PointsGrant>,
    key: IdempotencyHeader,
    correlation: Correlation,
    id: ApiPath<MemberId>,
    body: ApiJson<GrantPointsBody>,
) -> Result<Response, ApiError> {
    let request = body.0.validate(&state.app.limits)?;
    run(&state, &auth, key, correlation, id.0, request).await
}

/// Deducts points (a correction), oldest lots first.
#[utoipa::path(post, path = "/admin/api/v1/members/{member_id}/points/deductions", tag = "ledger",
    security(("bearer" = [])),
    params(("member_id" = uuid::Uuid, Path), ("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters")),
    request_body = DeductPointsBody,
    responses(
        (status = 200, description = "Done (or replayed)", body = OperationResponse, headers(("Idempotent-Replayed" = bool, description = "Set on a replay"))),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `invalid_member_id`, `malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`member_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`, `insufficient_points`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_amount`, `invalid_text`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username, member_id = %id.0))]
pub async fn deduct_points(
    State(state): State<AppState>,
    auth: Authorized<perm::PointsDeduct>,
    key: IdempotencyHeader,
    correlation: Correlation,
    id: ApiPath<MemberId>,
    body: ApiJson<DeductPointsBody>,
) -> Result<Response, ApiError> {
    let request = body.0.validate(&state.app.limits)?;
    run(&state, &auth, key, correlation, id.0, request).await
}

/// Credits cash paid at the counter.
#[utoipa::path(post, path = "/admin/api/v1/members/{member_id}/cash/deposits", tag = "ledger",
    security(("bearer" = [])),
    params(("member_id" = uuid::Uuid, Path), ("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters")),
    request_body = CashBody,
    responses(
        (status = 200, description = "Done (or replayed)", body = OperationResponse, headers(("Idempotent-Replayed" = bool, description = "Set on a replay"))),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `invalid_member_id`, `malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`member_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_amount`, `invalid_text`, `overflow`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username, member_id = %id.0))]
pub async fn deposit_cash(
    State(state): State<AppState>,
    auth: Authorized<perm::CashDeposit>,
    key: IdempotencyHeader,
    correlation: Correlation,
    id: ApiPath<MemberId>,
    body: ApiJson<CashBody>,
) -> Result<Response, ApiError> {
    let request = body.0.validate(CashOp::Deposit, &state.app.limits)?;
    run(&state, &auth, key, correlation, id.0, request).await
}

/// Debits the balance at the counter; never below zero.
#[utoipa::path(post, path = "/admin/api/v1/members/{member_id}/cash/charges", tag = "ledger",
    security(("bearer" = [])),
    params(("member_id" = uuid::Uuid, Path), ("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters")),
    request_body = CashBody,
    responses(
        (status = 200, description = "Charged; the entry's `sequence` is what a refund names", body = OperationResponse,
            headers(("Idempotent-Replayed" = bool, description = "Set on a replay"))),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `invalid_member_id`, `malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`member_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`, `insufficient_balance`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_amount`, `invalid_text`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username, member_id = %id.0))]
pub async fn charge_cash(
    State(state): State<AppState>,
    auth: Authorized<perm::CashCharge>,
    key: IdempotencyHeader,
    correlation: Correlation,
    id: ApiPath<MemberId>,
    body: ApiJson<CashBody>,
) -> Result<Response, ApiError> {
    let request = body.0.validate(CashOp::Charge, &state.app.limits)?;
    run(&state, &auth, key, correlation, id.0, request).await
}

/// Refunds (part of) an earlier counter charge, named by its ledger sequence.
#[utoipa::path(post, path = "/admin/api/v1/members/{member_id}/cash/refunds", tag = "ledger",
    security(("bearer" = [])),
    params(("member_id" = uuid::Uuid, Path), ("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters")),
    request_body = RefundBody,
    responses(
        (status = 200, description = "Done (or replayed)", body = OperationResponse, headers(("Idempotent-Replayed" = bool, description = "Set on a replay"))),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `invalid_member_id`, `malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`member_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`, `refund_exceeds_charge`, `charge_not_found` (no \
charge of this member at `charge_sequence`)", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_amount`, `invalid_text`, `overflow`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username, member_id = %id.0))]
pub async fn refund_charge(
    State(state): State<AppState>,
    auth: Authorized<perm::CashRefund>,
    key: IdempotencyHeader,
    correlation: Correlation,
    id: ApiPath<MemberId>,
    body: ApiJson<RefundBody>,
) -> Result<Response, ApiError> {
    let request = body.0.validate(&state.app.limits)?;
    run(&state, &auth, key, correlation, id.0, request).await
}

/// Sets the member's card level.
#[utoipa::path(put, path = "/admin/api/v1/members/{member_id}/card-level", tag = "ledger",
    security(("bearer" = [])),
    params(("member_id" = uuid::Uuid, Path), ("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters")),
    request_body = CardLevelBody,
    responses(
        (status = 200, description = "Done (or replayed)", body = OperationResponse, headers(("Idempotent-Replayed" = bool, description = "Set on a replay"))),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `invalid_member_id`, `malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`member_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`, `same_card_level`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_card_level`, `invalid_text`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username, member_id = %id.0))]
pub async fn set_card_level(
    State(state): State<AppState>,
    auth: Authorized<perm::CardLevelSet>,
    key: IdempotencyHeader,
    correlation: Correlation,
    id: ApiPath<MemberId>,
    body: ApiJson<CardLevelBody>,
) -> Result<Response, ApiError> {
    let request = body.0.validate()?;
    run(&state, &auth, key, correlation, id.0, request).await
}

/// The member's ledger from the read model (a moment behind the event store),
/// oldest first, one page after `after`: one entry per event that moved points or
/// cash. `projected_through_sequence` says how far the read model has got for this
/// member; a member registered a moment ago answers 200 with no entries yet.
#[utoipa::path(get, path = "/admin/api/v1/members/{member_id}/ledger", tag = "ledger",
    security(("bearer" = [])),
    params(("member_id" = uuid::Uuid, Path), LedgerQuery),
    responses(
        (status = 200, description = "One page of the ledger read model", body = LedgerPage),
        (status = 400, description = "`invalid_member_id`, `invalid_limit`, `invalid_query`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`member_not_found` (also for members of other tenants)", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username, member_id = %id.0))]
pub async fn ledger(
    State(state): State<AppState>,
    auth: Authorized<perm::LedgerRead>,
    id: ApiPath<MemberId>,
    query: ApiQuery<LedgerQuery>,
) -> Result<Json<LedgerPage>, ApiError> {
    let (after, limit) = query.0.page()?;
    let page = members::ledger(&state.app, &auth.session.tenant_id, id.0, after, limit).await?;
    Ok(Json(page.try_into()?))
}
