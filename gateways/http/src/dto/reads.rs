//! Queries and responses of the read-model routes: the member list and the
//! daily-operations report. Query strings are parsed here into the port's
//! types (`MemberSearch`, a bounded date range); bad values are 400.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;
use wxcm_commands::ports::{
    DailyOpsReport, MemberCursor, MemberFilter, MemberPage, MemberRow, MemberSearch, MemberSortKey, SortOrder,
    MEMBER_PAGE_MAX, REPORT_DAYS_MAX,
};
use wxcm_domain::member::{CardLevel, RegistrationSource};
use wxcm_domain::{CardNumber, OpenId};

use crate::error::ApiError;

/// Default members of one page.
pub const MEMBER_PAGE_DEFAULT: u32 = 50;
/// Follow sources a member search may filter on (`rm_members.follow_source`).
pub const FOLLOW_SOURCES: [&str; 3] = ["scene_qr", "referral", "other"];

/// Rows of a member filter value (card level, source, ...) are short; longer is refused.
pub const FILTER_TEXT_BYTES_MAX: usize = 128;

/// Filters (all optional, combined with AND; ranges inclusive), sort and page.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MemberListQuery {
    /// Exact card number.
    pub card_no: Option<String>,
    /// Exact WeChat openid.
    pub openid: Option<String>,
    pub card_level: Option<String>,
    /// Registration source: `subscribe`, `oauth` or `staff`.
    pub source: Option<String>,
    /// Following the official account now: `true` or `false`.
    pub followed: Option<bool>,
    /// Source of the latest follow: `scene_qr`, `referral` or `other`.
    pub follow_source: Option<String>,
    pub points_min: Option<i64>,
    pub points_max: Option<i64>,
    pub balance_min: Option<i64>,
    pub balance_max: Option<i64>,
    /// `registered_at` (default), `points` or `balance`.
    pub sort: Option<String>,
    /// `desc` (default) or `asc`.
    pub order: Option<String>,
    /// Members per page, 1..=200 (default 50).
    pub limit: Option<u32>,
    /// `next_after` of the previous page (same sort).
    pub after: Option<String>,
}

fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::bad_request(code, message)
}

fn bounded<'a>(field: &str, value: Option<&'a str>) -> Result<Option<&'a str>, ApiError> {
    match value {
        Some(v) if v.len() > FILTER_TEXT_BYTES_MAX => {
            Err(bad("invalid_query", format!("{field} is longer than {FILTER_TEXT_BYTES_MAX} bytes")))
        }
        v => Ok(v),
    }
}

fn range(field: &str, min: Option<i64>, max: Option<i64>) -> Result<(), ApiError> {
    if min.is_some_and(|m| m < 0) || max.is_some_and(|m| m < 0) || matches!((min, max), (Some(a), Some(b)) if a > b) {
        return Err(bad("invalid_range", format!("{field}_min and {field}_max must be >= 0 and min <= max")));
    }
    Ok(())
}

fn source_name(value: &str) -> Result<String, ApiError> {
    let source: RegistrationSource = serde_json::from_value(serde_json::Value::String(value.to_owned()))
        .map_err(|_| bad("invalid_source", "source must be subscribe, oauth or staff"))?;
    // Back to its wire name, the form the read model stores.
    match serde_json::to_value(source) {
        Ok(serde_json::Value::String(name)) => Ok(name),
        _ => Err(ApiError::internal("source name", &"registration source is not a string")),
    }
}

impl MemberListQuery {
    pub fn search(&self) -> Result<MemberSearch, ApiError> {
        let card_no = bounded("card_no", self.card_no.as_deref())?
            .map(|v| CardNumber::parse(v).map_err(|e| bad("invalid_card_no", e.to_string())))
            .transpose()?;
        let openid = bounded("openid", self.openid.as_deref())?
            .map(|v| OpenId::parse(v).map_err(|e| bad("invalid_openid", e.to_string())))
            .transpose()?;
        let card_level = bounded("card_level", self.card_level.as_deref())?
            .map(|v| CardLevel::parse(v).map(|l| l.as_str().to_owned()))
            .transpose()
            .map_err(|e| bad("invalid_card_level", e.to_string()))?;
        let source = bounded("source", self.source.as_deref())?.map(source_name).transpose()?;
        let follow_source = match bounded("follow_source", self.follow_source.as_deref())? {
            Some(v) if FOLLOW_SOURCES.contains(&v) => Some(v.to_owned()),
            Some(_) => return Err(bad("invalid_follow_source", "follow_source must be scene_qr, referral or other")),
            None => None,
        };
        range("points", self.points_min, self.points_max)?;
        range("balance", self.balance_min, self.balance_max)?;
        let sort = match self.sort.as_deref().unwrap_or("registered_at") {
            "registered_at" => MemberSortKey::RegisteredAt,
            "points" => MemberSortKey::Points,
            "balance" => MemberSortKey::Balance,
            _ => return Err(bad("invalid_sort", "sort must be registered_at, points or balance")),
        };
        let order = match self.order.as_deref().unwrap_or("desc") {
            "asc" => SortOrder::Asc,
            "desc" => SortOrder::Desc,
            _ => return Err(bad("invalid_order", "order must be asc or desc")),
        };
        let limit = self.limit.unwrap_or(MEMBER_PAGE_DEFAULT);
        if limit == 0 || limit > MEMBER_PAGE_MAX {
            return Err(bad("invalid_limit", format!("limit must be 1..={MEMBER_PAGE_MAX}")));
        }
        let after = bounded("after", self.after.as_deref())?
            .map(|v| {
                MemberCursor::parse(v, sort).ok_or_else(|| bad("invalid_after", "after is not a cursor of this sort"))
            })
            .transpose()?;
        let filter = MemberFilter {
            card_no,
            openid,
            card_level,
            source,
            followed: self.followed,
            follow_source,
            points_min: self.points_min,
            points_max: self.points_max,
            balance_fen_min: self.balance_min,
            balance_fen_max: self.balance_max,
        };
        Ok(MemberSearch { filter, sort, order, limit, after })
    }
}

/// A member as the read model holds it (may lag the event store by a moment).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MemberSummaryDto {
    pub member_id: Uuid,
    pub card_no: String,
    pub openid: Option<String>,
    pub card_level: String,
    /// `subscribe`, `oauth` or `staff`.
    pub source: String,
    pub registered_at: DateTime<Utc>,
    pub points: i64,
    pub held_points: i64,
    pub balance_fen: i64,
    pub lifetime_points: i64,
    /// Sequence of the last event applied to this row.
    pub version: i64,
    /// Following the official account now.
    pub followed: bool,
    /// What brought the latest follow: `scene_qr`, `referral` or `other`; absent when never followed.
    pub follow_source: Option<String>,
    /// The scene of the QR code of the latest follow (or of the registration).
    pub scene: Option<String>,
    /// The referring member of the latest follow (or of the registration).
    pub referrer_id: Option<String>,
}

impl From<MemberRow> for MemberSummaryDto {
    fn from(m: MemberRow) -> Self {
        Self {
            member_id: m.member_id.as_uuid(),
            card_no: m.card_no,
            openid: m.openid,
            card_level: m.card_level,
            source: m.source,
            registered_at: m.registered_at,
            points: m.points,
            held_points: m.held_points,
            balance_fen: m.balance_fen,
            lifetime_points: m.lifetime_points,
            version: m.version,
            followed: m.followed,
            follow_source: m.follow_source,
            scene: m.scene,
            referrer_id: m.referrer_id,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MemberListPage {
    pub members: Vec<MemberSummaryDto>,
    /// Pass as `after` (with the same filters and sort) for the next page; absent on the last.
    pub next_after: Option<String>,
}

impl From<MemberPage> for MemberListPage {
    fn from(page: MemberPage) -> Self {
        Self {
            members: page.members.into_iter().map(MemberSummaryDto::from).collect(),
            next_after: page.next_after.map(|c| c.encode()),
        }
    }
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
    /// First day, `YYYY-MM-DD`.
    pub from: String,
    /// Last day, `YYYY-MM-DD`, on or after `from`.
    pub to: String,
    /// `json` (default) or `csv`.
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
    /// `cash_credited_fen`, `cash_debited_fen`, `card_level_net`, `follows`, `unfollows`.
    pub metric: String,
    /// Registration source, cash kind (`deposit`, `recharge`, `refund`, `charge`,
    /// `recharge_reversal`), card level or follow source (`scene_qr`, `referral`, `other`);
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
    fn member_queries_are_validated() {
        let q = MemberListQuery::default();
        let s = q.search().unwrap();
        assert_eq!((s.sort, s.order, s.limit), (MemberSortKey::RegisteredAt, SortOrder::Desc, MEMBER_PAGE_DEFAULT));
        let code = |q: MemberListQuery| q.search().unwrap_err().code();
        assert_eq!(code(MemberListQuery { limit: Some(MEMBER_PAGE_MAX + 1), ..Default::default() }), "invalid_limit");
        assert!(MemberListQuery { limit: Some(MEMBER_PAGE_MAX), ..Default::default() }.search().is_ok());
        assert_eq!(code(MemberListQuery { limit: Some(0), ..Default::default() }), "invalid_limit");
        assert_eq!(code(MemberListQuery { sort: Some("name".into()), ..Default::default() }), "invalid_sort");
        assert_eq!(code(MemberListQuery { order: Some("up".into()), ..Default::default() }), "invalid_order");
        assert_eq!(code(MemberListQuery { source: Some("mall".into()), ..Default::default() }), "invalid_source");
        assert_eq!(
            code(MemberListQuery { follow_source: Some("poster".into()), ..Default::default() }),
            "invalid_follow_source"
        );
        let s = MemberListQuery { follow_source: Some("scene_qr".into()), followed: Some(false), ..Default::default() }
            .search()
            .unwrap();
        assert_eq!((s.filter.follow_source.as_deref(), s.filter.followed), (Some("scene_qr"), Some(false)));
        assert_eq!(
            code(MemberListQuery { points_min: Some(5), points_max: Some(4), ..Default::default() }),
            "invalid_range"
        );
        assert_eq!(code(MemberListQuery { balance_min: Some(-1), ..Default::default() }), "invalid_range");
        assert_eq!(code(MemberListQuery { after: Some("x".into()), ..Default::default() }), "invalid_after");
        let long = "a".repeat(FILTER_TEXT_BYTES_MAX + 1);
        assert_eq!(code(MemberListQuery { card_level: Some(long), ..Default::default() }), "invalid_query");
        let s = MemberListQuery { source: Some("staff".into()), ..Default::default() }.search().unwrap();
        assert_eq!(s.filter.source.as_deref(), Some("staff"));
    }

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
