//! Bodies, queries and answers of the member routes: registration, lookups
//! and the member list. Query strings and bodies are parsed here into the
//! application's types (`RegisterRequest`, the read-model port's
//! `MemberSearch`); bad query values are 400, bad body values 422.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;
use wxcm_commands::members::{MemberView, RegisterRequest};
use wxcm_commands::ports::{
    MemberCursor, MemberFilter, MemberPage, MemberRow, MemberSearch, MemberSortKey, SortOrder, MEMBER_PAGE_MAX,
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

// ---------- registration ----------

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    /// The member's WeChat openid, if known; registering an openid twice returns the existing member.
    #[schema(min_length = 6, max_length = 64, pattern = "^[A-Za-z0-9_-]+$")]
    pub openid: Option<String>,
    /// Defaults to `standard`.
    #[schema(min_length = 1, max_length = 32, pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]+$")]
    pub card_level: Option<String>,
}

pub fn card_level(value: &str) -> Result<CardLevel, ApiError> {
    CardLevel::parse(value).map_err(|e| ApiError::invalid("invalid_card_level", e.to_string()))
}

pub fn openid(value: &str) -> Result<OpenId, ApiError> {
    OpenId::parse(value).map_err(|e| ApiError::invalid("invalid_openid", e.to_string()))
}

impl RegisterBody {
    /// A registration by hand (source `staff`), `standard` unless a card level is given.
    pub fn validate(self) -> Result<RegisterRequest, ApiError> {
        Ok(RegisterRequest {
            openid: self.openid.as_deref().map(openid).transpose()?,
            source: RegistrationSource::Staff,
            card_level: self.card_level.as_deref().map(card_level).transpose()?.unwrap_or_else(CardLevel::standard),
        })
    }
}

/// A member (mirrors `commands::members::MemberView`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MemberDto {
    pub member_id: Uuid,
    pub tenant_id: String,
    pub card_no: String,
    pub openid: Option<String>,
    pub card_level: String,
    pub registered_at: DateTime<Utc>,
    /// Points in lots, including lots due but not yet expired by the scheduler.
    pub points: i64,
    /// Points that can be spent now.
    pub spendable_points: i64,
    pub held_points: i64,
    pub lifetime_points: i64,
    pub balance_fen: i64,
    /// Sequence of the member's last ledger event.
    pub version: u64,
}

impl From<MemberView> for MemberDto {
    fn from(v: MemberView) -> Self {
        Self {
            member_id: v.member_id.as_uuid(),
            tenant_id: v.tenant_id.to_string(),
            card_no: v.card_no.to_string(),
            openid: v.openid.map(String::from),
            card_level: v.card_level,
            registered_at: v.registered_at,
            points: v.points,
            spendable_points: v.spendable_points,
            held_points: v.held_points,
            lifetime_points: v.lifetime_points,
            balance_fen: v.balance_fen,
            version: v.version,
        }
    }
}

// ---------- the audit of a member's events ----------

/// One finding (mirrors `commands::ports::AuditFinding`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditFindingDto {
    /// The event it concerns, when it concerns one.
    pub sequence: Option<i64>,
    /// `hash_mismatch`, `prev_hash_mismatch`, `sequence_gap`, `balance_after_mismatch`, ...
    pub code: String,
    /// The domain rule an event breaks (e.g. `member.balance_after`) when replay refuses it.
    pub rule: Option<String>,
    pub message: String,
}

/// A member's events audited.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MemberAuditDto {
    /// The hash chain is intact, every event replays and every stated balance adds up.
    pub ok: bool,
    pub events: u64,
    pub head_sequence: Option<i64>,
    /// Hex SHA-256 of the last event (compare with `wxcm audit member`).
    pub head_hash: Option<String>,
    pub violations: Vec<AuditFindingDto>,
}

impl From<wxcm_commands::ports::MemberAuditVerdict> for MemberAuditDto {
    fn from(v: wxcm_commands::ports::MemberAuditVerdict) -> Self {
        Self {
            ok: v.ok,
            events: v.events,
            head_sequence: v.head_sequence,
            head_hash: v.head_hash,
            violations: v
                .findings
                .into_iter()
                .map(|f| AuditFindingDto { sequence: f.sequence, code: f.code, rule: f.rule, message: f.message })
                .collect(),
        }
    }
}

// ---------- the member list ----------

/// Filters (all optional, combined with AND; ranges inclusive), sort and page.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MemberListQuery {
    /// Exact card number.
    #[param(value_type = Option<crate::doc::CardNumber>)]
    pub card_no: Option<String>,
    /// Exact WeChat openid.
    #[param(value_type = Option<crate::doc::OpenId>)]
    pub openid: Option<String>,
    #[param(value_type = Option<crate::doc::CardLevelName>)]
    pub card_level: Option<String>,
    /// Registration source.
    #[param(value_type = Option<crate::doc::RegistrationSource>)]
    pub source: Option<String>,
    /// Following the official account now: `true` or `false`.
    pub followed: Option<bool>,
    /// Source of the latest follow.
    #[param(value_type = Option<crate::doc::FollowSource>)]
    pub follow_source: Option<String>,
    /// At least this many points (`points_min` <= `points_max` when both are given).
    #[param(minimum = 0)]
    pub points_min: Option<i64>,
    #[param(minimum = 0)]
    pub points_max: Option<i64>,
    /// At least this balance in fen (`balance_min` <= `balance_max` when both are given).
    #[param(minimum = 0)]
    pub balance_min: Option<i64>,
    #[param(minimum = 0)]
    pub balance_max: Option<i64>,
    /// Default `registered_at`.
    #[param(value_type = Option<crate::doc::MemberSort>)]
    pub sort: Option<String>,
    /// Default `desc`.
    #[param(value_type = Option<crate::doc::SortOrder>)]
    pub order: Option<String>,
    /// Members per page (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    #[param(value_type = Option<crate::doc::MemberCursor>)]
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

#[cfg(test)]
mod tests {
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
    fn registration_bodies_are_checked() {
        let body = |openid: Option<&str>, card_level: Option<&str>| RegisterBody {
            openid: openid.map(Into::into),
            card_level: card_level.map(Into::into),
        };
        let request = body(None, None).validate().unwrap();
        assert_eq!((request.openid, request.source), (None, RegistrationSource::Staff));
        assert_eq!(request.card_level, CardLevel::standard());
        assert_eq!(body(Some("bad openid!"), None).validate().unwrap_err().code(), "invalid_openid");
        assert_eq!(body(None, Some("gold\n")).validate().unwrap_err().code(), "invalid_card_level");
    }
}
