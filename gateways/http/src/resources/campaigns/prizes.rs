//! A member's physical campaign prizes for the counter: what is waiting at the
//! store and what was handed over (the hand-over itself is
//! `POST /campaigns/{id}/hand-overs`).

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::instrument;
use utoipa::{IntoParams, ToSchema};
use wxcm_commands::campaigns::{self, PhysicalAwardRecord};
use wxcm_domain::campaign::AwardRef;
use wxcm_domain::MemberId;

use super::AwardBody;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiPath, ApiQuery, Authorized};
use crate::permissions::perm;
use crate::state::AppState;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CampaignPrizesQuery {
    /// `waiting` (not handed over yet) or `all` (default).
    #[param(value_type = Option<PrizeFilter>)]
    pub state: Option<String>,
}

/// Which of a member's prizes to list.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PrizeFilter {
    Waiting,
    All,
}

/// A physical prize a member won.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CampaignPrizeDto {
    pub campaign_id: uuid::Uuid,
    /// The campaign's name when the prize was won.
    pub campaign_name: String,
    /// What to send to `POST /campaigns/{campaign_id}/hand-overs`.
    pub award: AwardBody,
    pub item: String,
    pub won_at: DateTime<Utc>,
    /// Absent while the prize waits at the store.
    pub handed_over_at: Option<DateTime<Utc>>,
}

impl From<&PhysicalAwardRecord> for CampaignPrizeDto {
    fn from(r: &PhysicalAwardRecord) -> Self {
        let award = match r.award {
            AwardRef::Shake { member_id, nonce } => {
                AwardBody::Shake { member_id: member_id.as_uuid(), nonce: i64::from(nonce) }
            }
            AwardRef::Period { period_no, rank } => {
                AwardBody::Period { period_no: i64::from(period_no), rank: i64::from(rank) }
            }
        };
        Self {
            campaign_id: r.campaign_id.as_uuid(),
            campaign_name: r.campaign_name.clone(),
            award,
            item: r.item.clone(),
            won_at: r.won_at,
            handed_over_at: r.handed_over_at,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CampaignPrizeList {
    pub prizes: Vec<CampaignPrizeDto>,
}

/// The member's physical prizes across the tenant's campaigns, newest first (at most 200): what
/// staff hand over at the counter.
#[utoipa::path(get, path = "/admin/api/v1/members/{member_id}/campaign-prizes", tag = "campaigns",
    security(("bearer" = [])),
    params(("member_id" = uuid::Uuid, Path), CampaignPrizesQuery),
    responses(
        (status = 200, description = "The member's physical prizes", body = CampaignPrizeList),
        (status = 400, description = "`invalid_member_id`, `invalid_query`, `invalid_state`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`member_not_found`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id))]
pub async fn member_campaign_prizes(
    State(state): State<AppState>,
    auth: Authorized<perm::CampaignRead>,
    id: ApiPath<MemberId>,
    query: ApiQuery<CampaignPrizesQuery>,
) -> Result<Json<CampaignPrizeList>, ApiError> {
    let waiting_only = match query.0.state.as_deref().unwrap_or("all") {
        "waiting" => true,
        "all" => false,
        _ => return Err(ApiError::bad_request("invalid_state", "state must be waiting or all")),
    };
    let prizes = campaigns::member_awards(&state.app, &auth.session.tenant_id, id.0, waiting_only).await?;
    Ok(Json(CampaignPrizeList { prizes: prizes.iter().map(Into::into).collect() }))
}
