//! The draw audit view: a campaign's draws recomputed from its events alone
//! (`schemas/draws/SPEC.md`), the same checks as `wxcm audit draw`.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use tracing::instrument;
use utoipa::{IntoParams, ToSchema};
use wxcm_commands::campaigns;
use wxcm_commands::ports::DrawAuditVerdict;
use wxcm_domain::campaign::CampaignId;

use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiPath, ApiQuery, Authorized};
use crate::permissions::perm;
use crate::state::AppState;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DrawAuditQuery {
    /// Only this period's draw (its commitment, entrant list and winners).
    #[param(minimum = 1)]
    pub period: Option<u32>,
}

/// One disagreement between an event and the recomputation.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DrawDifferenceDto {
    /// The event's sequence on the campaign stream; absent for the campaign as a whole.
    pub sequence: Option<i64>,
    pub detail: String,
}

/// A campaign's draws recomputed.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DrawAuditDto {
    /// Every draw checked gives what its event states.
    pub ok: bool,
    /// The shake seed is revealed (a shake lottery's shakes are recomputable once it has ended).
    pub revealed: bool,
    pub shakes_checked: u64,
    pub periods_checked: u64,
    pub differences: Vec<DrawDifferenceDto>,
}

impl From<DrawAuditVerdict> for DrawAuditDto {
    fn from(v: DrawAuditVerdict) -> Self {
        Self {
            ok: v.ok,
            revealed: v.revealed,
            shakes_checked: v.shakes_checked,
            periods_checked: v.periods_checked,
            differences: v
                .differences
                .into_iter()
                .map(|d| DrawDifferenceDto { sequence: d.sequence, detail: d.detail })
                .collect(),
        }
    }
}

/// The campaign's draws recomputed from its events as `wxcm audit draw` does: each period's seed
/// against its commitment, its entrant list against the recorded hash, its winners against the
/// ChaCha20 draw; each shake's roll, slot and stock against the revealed seed.
#[utoipa::path(get, path = "/admin/api/v1/campaigns/{campaign_id}/draw-audit", tag = "campaigns",
    security(("bearer" = [])),
    params(("campaign_id" = uuid::Uuid, Path), DrawAuditQuery),
    responses(
        (status = 200, description = "The verdict (`ok` false with the differences when a draw does not recompute)", body = DrawAuditDto),
        (status = 400, description = "`invalid_campaign_id`, `invalid_query`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`campaign_not_found`", body = ErrorBody),
        (status = 409, description = "`period_not_drawn`; `stream_too_long`: audit it with `wxcm audit draw`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id))]
pub async fn draw_audit(
    State(state): State<AppState>,
    auth: Authorized<perm::CampaignRead>,
    id: ApiPath<CampaignId>,
    query: ApiQuery<DrawAuditQuery>,
) -> Result<Json<DrawAuditDto>, ApiError> {
    let verdict = campaigns::audit_draws(&state.app, &auth.session.tenant_id, id.0, query.0.period).await?;
    Ok(Json(verdict.into()))
}
