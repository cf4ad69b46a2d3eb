//! A manual periodic lottery's periods, opened by hand, and the beacon
//! values of periods that named a beacon round.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::instrument;
use utoipa::ToSchema;
use wxcm_commands::campaigns::periods;
use wxcm_domain::campaign::{BeaconRound, BeaconValue, CampaignId, CampaignText};

use super::{parse_period_no, CampaignDto};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{parse_path_segment, ApiJson, ApiPath, Authorized, Correlation, IdempotencyHeader};
use crate::permissions::perm;
use crate::state::AppState;

/// An external randomness beacon round, named before entries close.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BeaconRoundBody {
    /// Which beacon, e.g. `drand-quicknet`, `drand-mainnet`, `nist`.
    #[schema(value_type = crate::doc::ShortText)]
    pub source: String,
    #[schema(minimum = 1)]
    pub round: i64,
}

impl BeaconRoundBody {
    fn validate(&self) -> Result<BeaconRound, ApiError> {
        let source =
            CampaignText::parse(&self.source).map_err(|e| ApiError::invalid("invalid_beacon", e.to_string()))?;
        let round = u64::try_from(self.round)
            .ok()
            .filter(|r| *r >= 1)
            .ok_or_else(|| ApiError::invalid("invalid_beacon", "a beacon round is 1 or more"))?;
        Ok(BeaconRound { source, round })
    }
}

/// The next period of a manual periodic lottery.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenPeriodBody {
    /// Inside the campaign, not before the last period's end.
    pub starts_at: DateTime<Utc>,
    /// After `starts_at` and after now.
    pub ends_at: DateTime<Utc>,
    /// A beacon round whose value (published after entries close) is mixed into the draw.
    #[serde(default)]
    pub beacon: Option<BeaconRoundBody>,
}

/// The value a beacon published for the round a period named.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BeaconValueBody {
    /// 1..=64 bytes as lowercase hex (for drand: the round's 32-byte `randomness`).
    #[schema(pattern = "^([0-9a-f]{2}){1,64}$")]
    pub value: String,
}

/// Opens the next period of a manual periodic (or popularity) lottery: a fresh seed is sealed for
/// it and only its commitment published, before any entry.
#[utoipa::path(post, path = "/admin/api/v1/campaigns/{campaign_id}/periods", tag = "campaigns",
    security(("bearer" = [])),
    params(
        ("campaign_id" = uuid::Uuid, Path),
        ("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters; the same key is the same period"),
    ),
    request_body = OpenPeriodBody,
    responses(
        (status = 201, description = "Opened (or replayed)", body = CampaignDto),
        (status = 400, description = "`invalid_campaign_id`, `idempotency_key_missing`, `idempotency_key_invalid`, `malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`campaign_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`, `periods_by_cycle` (the scheduler opens this campaign's periods), `period_window_conflict` (outside the campaign, overlapping the last period, or already over), `wrong_kind`, `wrong_status`, `already_ended`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_beacon`, `invalid_period` (`ends_at` not after `starts_at`)", body = ErrorBody),
        (status = 503, description = "`contention`, `unavailable`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id))]
pub async fn open_period(
    State(state): State<AppState>,
    auth: Authorized<perm::CampaignManage>,
    key: IdempotencyHeader,
    correlation: Correlation,
    id: ApiPath<CampaignId>,
    body: ApiJson<OpenPeriodBody>,
) -> Result<(StatusCode, Json<CampaignDto>), ApiError> {
    if body.0.starts_at >= body.0.ends_at {
        return Err(ApiError::invalid("invalid_period", "a period must end after it starts"));
    }
    let beacon = body.0.beacon.as_ref().map(BeaconRoundBody::validate).transpose()?;
    let ctx = auth.context(key.0, correlation);
    let window = (body.0.starts_at, body.0.ends_at);
    let view = periods::open_period_by_hand(&state.app, &ctx, id.0, window, beacon, auth.actor()).await?;
    Ok((StatusCode::CREATED, Json(view.into())))
}

/// Records the value the beacon published for the round a period named (first writer wins: the
/// same value again changes nothing, another is refused). A period already over is drawn at once;
/// until the value is recorded its draw waits. Auditors check the value against the beacon.
#[utoipa::path(put, path = "/admin/api/v1/campaigns/{campaign_id}/periods/{period_no}/beacon-value", tag = "campaigns",
    security(("bearer" = [])),
    params(
        ("campaign_id" = uuid::Uuid, Path),
        ("period_no" = u32, Path, minimum = 1, maximum = 400),
        ("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters"),
    ),
    request_body = BeaconValueBody,
    responses(
        (status = 200, description = "Recorded (the period drawn if it was over)", body = CampaignDto),
        (status = 400, description = "`invalid_campaign_id`, `invalid_period_no`, `idempotency_key_missing`, `idempotency_key_invalid`, `malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`campaign_not_found`, `period_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`, `no_beacon` (the period named no round), `beacon_value_conflict`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_beacon_value`", body = ErrorBody),
        (status = 503, description = "`contention`, `unavailable`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id))]
pub async fn put_beacon_value(
    State(state): State<AppState>,
    auth: Authorized<perm::CampaignManage>,
    path: Result<Path<(String, String)>, PathRejection>,
    body: ApiJson<BeaconValueBody>,
) -> Result<Json<CampaignDto>, ApiError> {
    let Path((campaign, period)) = path?;
    let campaign_id: CampaignId = parse_path_segment(&campaign)?;
    let period_no = parse_period_no(&period)?;
    let value =
        BeaconValue::parse(&body.0.value).map_err(|e| ApiError::invalid("invalid_beacon_value", e.to_string()))?;
    let tenant = &auth.session.tenant_id;
    let who = auth.session.username.clone();
    let view = periods::record_beacon_value(&state.app, tenant, campaign_id, period_no, &value, &who).await?;
    Ok(Json(view.into()))
}
