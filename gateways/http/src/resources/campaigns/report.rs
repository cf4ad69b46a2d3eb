//! A campaign's report (JSON or CSV): totals and, per merchant day, visits,
//! shares, participations, new participants and winners.

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use tracing::instrument;
use utoipa::{IntoParams, ToSchema};
use wxcm_commands::campaigns::report::{self, CampaignReport};
use wxcm_domain::campaign::CampaignId;

use super::CampaignDto;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiPath, ApiQuery, Authorized};
use crate::permissions::perm;
use crate::state::AppState;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CampaignReportQuery {
    /// Default `json`.
    #[param(value_type = Option<crate::doc::ReportFormat>)]
    pub format: Option<String>,
}

/// One merchant day (UTC+8) of a campaign.
#[derive(Debug, Serialize, ToSchema)]
pub struct CampaignReportDayDto {
    pub day: NaiveDate,
    /// Share-link pages opened (friends' visits).
    pub visits: i64,
    /// Share links members asked for.
    pub shares: i64,
    /// Entries, popularity tickets and shakes.
    pub participations: i64,
    /// Members taking part for the first time.
    pub participants_new: i64,
    /// Prizes won (not "thanks").
    pub winners: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CampaignReportDto {
    /// The campaign with its totals (participants, participations, winners) from its events.
    pub campaign: CampaignDto,
    pub visits: i64,
    pub shares: i64,
    /// Days with any activity, oldest first (from the read model: it may lag the totals by seconds).
    pub days: Vec<CampaignReportDayDto>,
    pub generated_at: DateTime<Utc>,
}

impl From<CampaignReport> for CampaignReportDto {
    fn from(r: CampaignReport) -> Self {
        Self {
            campaign: r.campaign.into(),
            visits: r.visits,
            shares: r.shares,
            days: r
                .days
                .into_iter()
                .map(|d| CampaignReportDayDto {
                    day: d.day,
                    visits: d.visits,
                    shares: d.shares,
                    participations: d.participations,
                    participants_new: d.participants_new,
                    winners: d.winners,
                })
                .collect(),
            generated_at: r.generated_at,
        }
    }
}

impl CampaignReportDto {
    /// `day,visits,shares,participations,participants_new,winners`, one row per day.
    pub fn to_csv(&self) -> String {
        let mut csv = String::from("day,visits,shares,participations,participants_new,winners\r\n");
        for d in &self.days {
            csv.push_str(&format!(
                "{},{},{},{},{},{}\r\n",
                d.day, d.visits, d.shares, d.participations, d.participants_new, d.winners
            ));
        }
        csv
    }
}

/// A campaign's report: totals (from its events) and its days (visits, shares, participations, new
/// participants, winners).
#[utoipa::path(get, path = "/admin/api/v1/campaigns/{campaign_id}/report", tag = "campaigns",
    security(("bearer" = [])),
    params(("campaign_id" = uuid::Uuid, Path), CampaignReportQuery),
    responses(
        (status = 200, description = "The report; CSV has the header `day,visits,shares,participations,participants_new,winners`",
            content((CampaignReportDto = "application/json"), (String = "text/csv"))),
        (status = 400, description = "`invalid_campaign_id`, `invalid_query`, `invalid_format`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`campaign_not_found`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id))]
pub async fn campaign_report(
    State(state): State<AppState>,
    auth: Authorized<perm::CampaignRead>,
    id: ApiPath<CampaignId>,
    query: ApiQuery<CampaignReportQuery>,
) -> Result<Response, ApiError> {
    let csv = match query.0.format.as_deref().unwrap_or("json") {
        "json" => false,
        "csv" => true,
        _ => return Err(ApiError::bad_request("invalid_format", "format must be json or csv")),
    };
    let dto = CampaignReportDto::from(report::report(&state.app, &auth.session.tenant_id, id.0).await?);
    if !csv {
        return Ok(Json(dto).into_response());
    }
    let mut response = dto.to_csv().into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
    Ok(response)
}
