//! Distributor ranks: by commission settled, or by new subordinates, over a
//! week (Monday to Sunday) or a month of merchant days (UTC+8).

use axum::extract::State;
use axum::Json;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use tracing::instrument;
use utoipa::{IntoParams, ToSchema};
use wxcm_commands::commissions::{self as uc, RankBy, RankPeriod, Ranking, RANK_LIMIT_MAX};

use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiQuery, Authorized};
use crate::permissions::perm;
use crate::state::AppState;

/// What distributors are ranked by.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DistributorRankBy {
    /// Fen of commissions settled in the window (and not clawed back since).
    SettledCommission,
    /// Members bound to the distributor in the window, each once.
    NewSubordinates,
}

/// The window: the week (Monday to Sunday) or the month containing `date`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DistributorRankPeriod {
    Week,
    Month,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DistributorRankQuery {
    pub by: DistributorRankBy,
    pub period: DistributorRankPeriod,
    /// A merchant day (UTC+8) in the window; default today.
    pub date: Option<NaiveDate>,
    /// 1..=100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DistributorRankRowDto {
    /// 1 for the highest value; equal values are ordered by distributor id.
    pub rank: u32,
    pub distributor_id: uuid::Uuid,
    /// Fen (settled commission) or members (new subordinates).
    pub value: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DistributorRankingDto {
    pub by: DistributorRankBy,
    pub period: DistributorRankPeriod,
    /// First and last merchant day of the window.
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub rows: Vec<DistributorRankRowDto>,
}

impl From<Ranking> for DistributorRankingDto {
    fn from(r: Ranking) -> Self {
        Self {
            by: match r.by {
                RankBy::SettledCommission => DistributorRankBy::SettledCommission,
                RankBy::NewSubordinates => DistributorRankBy::NewSubordinates,
            },
            period: match r.period {
                RankPeriod::Week => DistributorRankPeriod::Week,
                RankPeriod::Month => DistributorRankPeriod::Month,
            },
            from: r.from,
            to: r.to,
            rows: r
                .rows
                .into_iter()
                .map(|(rank, distributor, value)| DistributorRankRowDto {
                    rank,
                    distributor_id: distributor.as_uuid(),
                    value,
                })
                .collect(),
        }
    }
}

/// Distributors ranked by settled commission or by new subordinates over a week or a month.
#[utoipa::path(get, path = "/admin/api/v1/distribution/ranks", tag = "distribution",
    security(("bearer" = [])),
    params(DistributorRankQuery),
    responses(
        (status = 200, description = "The ranking, highest first", body = DistributorRankingDto),
        (status = 400, description = "`invalid_query`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 422, description = "`invalid_limit`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id))]
pub async fn ranks(
    State(state): State<AppState>,
    auth: Authorized<perm::DistributionRead>,
    query: ApiQuery<DistributorRankQuery>,
) -> Result<Json<DistributorRankingDto>, ApiError> {
    let q = query.0;
    let limit = q.limit.unwrap_or(20);
    if !(1..=RANK_LIMIT_MAX).contains(&limit) {
        return Err(ApiError::invalid("invalid_limit", format!("limit must be 1..={RANK_LIMIT_MAX}")));
    }
    let by = match q.by {
        DistributorRankBy::SettledCommission => RankBy::SettledCommission,
        DistributorRankBy::NewSubordinates => RankBy::NewSubordinates,
    };
    let period = match q.period {
        DistributorRankPeriod::Week => RankPeriod::Week,
        DistributorRankPeriod::Month => RankPeriod::Month,
    };
    let ranking = uc::ranking(&state.app, &auth.session.tenant_id, by, period, q.date, limit).await?;
    Ok(Json(ranking.into()))
}
