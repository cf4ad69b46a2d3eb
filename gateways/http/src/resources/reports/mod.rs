//! Reports over the read models, for a range of merchant days (UTC+8), as JSON
//! or CSV. The session's tenant is the only tenant a report covers.

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use tracing::instrument;

use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiQuery, Authorized};
use crate::permissions::perm;
use crate::state::AppState;

mod types;
pub use types::*;

/// Daily operations: registrations by source, points granted, spent, deducted
/// and expired, cash credited and debited (recharges reversed by WeChat Pay
/// refunds are debits of kind `recharge_reversal`), card level changes, members
/// per card level at the end of the range, and follows of the official account:
/// `follows` by follow source (`scene_qr`, `referral`, `other`; a registration by
/// a subscribe is a follow with its attribution), `unfollows` by the follow
/// source the member had, and per source and in total over the range
/// (`follows_by_source`: follows, unfollows, net = follows - unfollows). Distribution
/// (the session's tenant only): commissions accrued, settled and reversed (before and after
/// settlement), withdrawals requested, paid and given back, new distributors and applications,
/// and bindings and rebindings (counted from the binding history when asked).
#[utoipa::path(get, path = "/admin/api/v1/reports/daily-ops", tag = "reports",
    security(("bearer" = [])),
    params(ReportQuery),
    responses(
        (status = 200, description = "The report; CSV has the header `day,metric,dimension,value` and the members \
per card level as rows of metric `members_by_card_level` on day `to`, then `follows_by_source` as rows of metrics \
`follows_in_range`, `unfollows_in_range` and `follows_net_in_range` on day `to` (dimension: follow source or `total`)",
            content((DailyOpsReportDto = "application/json"), (String = "text/csv"))),
        (status = 400, description = "`invalid_query`, `invalid_date`, `invalid_range` (more than 366 days or \
`to` before `from`), `invalid_format`", body = ErrorBody),
        (status = 403, description = "`forbidden` (staff)", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username))]
pub async fn daily_ops(
    State(state): State<AppState>,
    auth: Authorized<perm::ReportRead>,
    query: ApiQuery<ReportQuery>,
) -> Result<Response, ApiError> {
    let (from, to, format) = query.0.validate()?;
    let tenant = &auth.session.tenant_id;
    let report = state.app.router.route(tenant)?.read_models.daily_ops(tenant, from, to).await?;
    let report = DailyOpsReportDto::new(from, to, report);
    Ok(match format {
        ReportFormat::Json => Json(report).into_response(),
        ReportFormat::Csv => {
            let mut response = report.to_csv().into_response();
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
            response
        }
    })
}
