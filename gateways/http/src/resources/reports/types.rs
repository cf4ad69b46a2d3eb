//! Query and answer of the daily-operations report: a bounded range of
//! merchant days, JSON or CSV.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use wxcm_commands::ports::{DailyOpsReport, REPORT_DAYS_MAX};

use crate::error::ApiError;
use crate::resources::members::FOLLOW_SOURCES;

fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::bad_request(code, message)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    Json,
    Csv,
}

/// A range of merchant days (UTC+8), both ends included, at most 366 days.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReportQuery {
    /// First day.
    #[param(format = Date)]
    pub from: String,
    /// Last day: on or after `from`, at most 365 days after it (the range covers 1..=366 days).
    #[param(format = Date)]
    pub to: String,
    /// Default `json`.
    #[param(value_type = Option<crate::doc::ReportFormat>)]
    pub format: Option<String>,
}

fn date(field: &str, value: &str) -> Result<NaiveDate, ApiError> {
    let parsed = (value.len() == 10).then(|| NaiveDate::parse_from_str(value, "%Y-%m-%d").ok()).flatten();
    parsed.ok_or_else(|| bad("invalid_date", format!("{field} must be a date YYYY-MM-DD")))
}

impl ReportQuery {
    pub fn validate(&self) -> Result<(NaiveDate, NaiveDate, ReportFormat), ApiError> {
        let (from, to) = (date("from", &self.from)?, date("to", &self.to)?);
        let days = (to - from).num_days() + 1;
        if !(1..=REPORT_DAYS_MAX).contains(&days) {
            return Err(bad("invalid_range", format!("from..=to must cover 1..={REPORT_DAYS_MAX} days")));
        }
        let format = match self.format.as_deref().unwrap_or("json") {
            "json" => ReportFormat::Json,
            "csv" => ReportFormat::Csv,
            _ => return Err(bad("invalid_format", "format must be json or csv")),
        };
        Ok((from, to, format))
    }
}

/// One counter of one merchant day.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DailyOpsRowDto {
    pub day: NaiveDate,
    /// `registrations`, `points_granted`, `points_spent`, `points_deducted`, `points_expired`,
    /// `cash_credited_fen`, `cash_debited_fen`, `card_level_net`, `follows`, `unfollows`,
    /// `coupons_issued` (by channel: `member_claim`, `operator_grant`, `dispatch`, `mall_purchase`,
    /// `campaign_prize`), `coupons_redeemed`,
    /// `coupons_voided`, `coupons_expired`, `mall_orders_paid`, `mall_orders_delivered`,
    /// `mall_points_spent`, `mall_fen_taken`, `campaign_participations`, `campaign_participants_new`,
    /// `campaign_winners`; distribution: `commissions_accrued` and `commission_accrued_fen` (pending,
    /// by level), `commission_settled_fen` (by level), `commission_reversed_fen` (`reversed` before
    /// settlement, `clawed_back` after it), `withdrawals_requested`, `withdrawals_requested_fen`,
    /// `withdrawals_paid`, `withdrawals_paid_fen` (the requested amounts; the payout is that less the
    /// fee), `withdrawals_returned_fen` (`rejected`, or `returned` after a failed payout),
    /// `distributors_new` (by route), `distributor_applications`, `distribution_bindings` (members bound
    /// for the first time) and `distribution_rebindings` (members moved to another distributor), both
    /// by binding route.
    pub metric: String,
    /// Registration source, cash kind (`deposit`, `recharge`, `refund`, `charge`,
    /// `recharge_reversal`), card level or follow source (`scene_qr`, `referral`, `other`);
    /// commission level (`1`, `2`); distributor route (`everyone`, `spending_threshold`,
    /// `designated`, `application`); binding route (`link`, `qr`, `code`);
    /// empty when the metric has none.
    pub dimension: String,
    pub value: i64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CardLevelCount {
    pub card_level: String,
    pub members: i64,
}

/// Follows of the official account over the whole range, for one follow source or `total`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FollowCount {
    /// `scene_qr`, `referral`, `other` or `total`.
    pub source: String,
    pub follows: i64,
    pub unfollows: i64,
    /// `follows - unfollows`.
    pub net: i64,
}

/// The `source` of the sum over all follow sources in [`FollowCount`].
pub const FOLLOW_TOTAL: &str = "total";

impl FollowCount {
    /// Sums the `follows` / `unfollows` rows per source (every source listed, then `total`).
    fn of(rows: &[DailyOpsRowDto]) -> Vec<Self> {
        let mut counts: Vec<Self> = FOLLOW_SOURCES
            .iter()
            .chain([&FOLLOW_TOTAL])
            .map(|s| Self { source: (*s).to_owned(), follows: 0, unfollows: 0, net: 0 })
            .collect();
        for row in rows {
            let follows = match row.metric.as_str() {
                "follows" => true,
                "unfollows" => false,
                _ => continue,
            };
            for count in counts.iter_mut().filter(|c| c.source == row.dimension || c.source == FOLLOW_TOTAL) {
                if follows {
                    count.follows = count.follows.saturating_add(row.value);
                } else {
                    count.unfollows = count.unfollows.saturating_add(row.value);
                }
                count.net = count.follows.saturating_sub(count.unfollows);
            }
        }
        counts
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DailyOpsReportDto {
    pub from: NaiveDate,
    pub to: NaiveDate,
    /// Non-zero counters, by day, metric and dimension.
    pub rows: Vec<DailyOpsRowDto>,
    /// Members per card level at the end of `to`.
    pub members_by_card_level: Vec<CardLevelCount>,
    /// Follows, unfollows and net over the range per follow source, then in `total`.
    pub follows_by_source: Vec<FollowCount>,
}

impl DailyOpsReportDto {
    pub fn new(from: NaiveDate, to: NaiveDate, report: DailyOpsReport) -> Self {
        let rows: Vec<DailyOpsRowDto> = report
            .rows
            .into_iter()
            .map(|r| DailyOpsRowDto { day: r.day, metric: r.metric, dimension: r.dimension, value: r.value })
            .collect();
        Self {
            from,
            to,
            follows_by_source: FollowCount::of(&rows),
            rows,
            members_by_card_level: report
                .members_by_card_level
                .into_iter()
                .map(|(card_level, members)| CardLevelCount { card_level, members })
                .collect(),
        }
    }

    /// `day,metric,dimension,value` with a header row; the members per card level
    /// follow as rows of metric `members_by_card_level` on day `to`, then the
    /// range's follows as rows of `follows_in_range`, `unfollows_in_range` and
    /// `follows_net_in_range` on day `to` (dimension: follow source or `total`).
    pub fn to_csv(&self) -> String {
        let mut csv = String::from("day,metric,dimension,value\r\n");
        let levels =
            self.members_by_card_level.iter().map(|c| (self.to, "members_by_card_level", &c.card_level, c.members));
        let follows = self.follows_by_source.iter().flat_map(|c| {
            [
                (self.to, "follows_in_range", &c.source, c.follows),
                (self.to, "unfollows_in_range", &c.source, c.unfollows),
                (self.to, "follows_net_in_range", &c.source, c.net),
            ]
        });
        let rows =
            self.rows.iter().map(|r| (r.day, r.metric.as_str(), &r.dimension, r.value)).chain(levels).chain(follows);
        for (day, metric, dimension, value) in rows {
            csv.push_str(&format!("{day},{},{},{value}\r\n", csv_text(metric), csv_text(dimension)));
        }
        csv
    }
}

/// A text cell: quoted when it holds a separator, a quote or a line break, and
/// prefixed with `'` when a spreadsheet would read it as a formula.
fn csv_text(value: &str) -> String {
    let value =
        if value.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{value}") } else { value.to_owned() };
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

#[cfg(test)]
mod tests {
    use wxcm_commands::ports::DailyOpsRow;

    use super::*;

    #[test]
    fn report_ranges_are_bounded() {
        let q = |from: &str, to: &str, format: Option<&str>| ReportQuery {
            from: from.into(),
            to: to.into(),
            format: format.map(Into::into),
        };
        assert!(q("2025-01-01", "2025-01-01", None).validate().is_ok());
        // 2024 is a leap year: 366 days is the limit, 367 one past it.
        assert!(q("2024-01-01", "2024-12-31", Some("csv")).validate().is_ok());
        assert_eq!(q("2024-01-01", "2025-01-01", None).validate().unwrap_err().code(), "invalid_range");
        assert_eq!(q("2025-01-02", "2025-01-01", None).validate().unwrap_err().code(), "invalid_range");
        assert_eq!(q("2025-13-01", "2025-01-01", None).validate().unwrap_err().code(), "invalid_date");
        assert_eq!(q("2025-1-1", "2025-01-01", None).validate().unwrap_err().code(), "invalid_date");
        assert_eq!(q("2025-01-01", "2025-01-01", Some("xml")).validate().unwrap_err().code(), "invalid_format");
    }

    #[test]
    fn follows_are_summed_per_source_and_in_total() {
        let day = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        let row = |metric: &str, dimension: &str, value| DailyOpsRow {
            day,
            metric: metric.into(),
            dimension: dimension.into(),
            value,
        };
        let report = DailyOpsReport {
            rows: vec![
                row("follows", "scene_qr", 3),
                row("follows", "referral", 2),
                row("unfollows", "scene_qr", 1),
                row("registrations", "subscribe", 5),
            ],
            members_by_card_level: Vec::new(),
        };
        let dto = DailyOpsReportDto::new(day, day, report);
        let count = |source: &str, follows, unfollows| FollowCount {
            source: source.into(),
            follows,
            unfollows,
            net: follows - unfollows,
        };
        assert_eq!(
            dto.follows_by_source,
            vec![count("scene_qr", 3, 1), count("referral", 2, 0), count("other", 0, 0), count("total", 5, 1)]
        );
        let csv = dto.to_csv();
        assert!(csv.contains("2026-03-01,follows_net_in_range,scene_qr,2\r\n"), "{csv}");
        assert!(csv.contains("2026-03-01,follows_net_in_range,total,4\r\n"), "{csv}");
    }

    #[test]
    fn csv_cells_are_quoted_and_defused() {
        assert_eq!(csv_text("gold"), "gold");
        assert_eq!(csv_text("a,b"), "\"a,b\"");
        assert_eq!(csv_text("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_text("=SUM(A1)"), "'=SUM(A1)");
    }
}
