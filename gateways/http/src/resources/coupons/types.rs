//! Bodies and answers of the coupon routes, and their validation into the
//! domain's terms (checked once here; the template checks them again).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use wxcm_commands::coupons::dispatch::{DispatchFilter, DispatchJob, DispatchState, DispatchTarget};
use wxcm_commands::coupons::{CouponView, TemplateView};
use wxcm_commands::ports::{CouponCounts, CouponRow};
use wxcm_domain::coupon::{
    Audience, Benefit, CouponState, CouponTerms, CouponText, Stock, Validity, AUDIENCE_LEVELS_MAX,
};
use wxcm_domain::member::CardLevel;
use wxcm_domain::{AmountFen, MemberId, Reference};

use crate::error::ApiError;

fn invalid(code: &'static str) -> impl Fn(String) -> ApiError {
    move |message| ApiError::invalid(code, message)
}

fn fen(value: i64) -> Result<AmountFen, ApiError> {
    AmountFen::new(value).map_err(|e| ApiError::invalid("invalid_amount", e.to_string()))
}

fn text(value: &str) -> Result<CouponText, ApiError> {
    CouponText::parse(value).map_err(|e| ApiError::invalid("invalid_text", e.to_string()))
}

/// What a coupon gives.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum BenefitDto {
    /// Money off, in fen; on a spend of at least `min_spend_fen` when set.
    Cash {
        #[schema(minimum = 1, maximum = 100_000_000)]
        value_fen: i64,
        /// At least `value_fen`.
        #[schema(minimum = 1, maximum = 100_000_000)]
        min_spend_fen: Option<i64>,
    },
    /// A percentage off (1..=99), at most `cap_fen` when set.
    Discount {
        #[schema(minimum = 1, maximum = 99)]
        percent_off: u8,
        #[schema(minimum = 1, maximum = 100_000_000)]
        cap_fen: Option<i64>,
    },
    /// A named item handed over at the counter.
    Gift {
        #[schema(value_type = crate::doc::ShortText)]
        item: String,
    },
}

impl BenefitDto {
    fn validate(&self) -> Result<Benefit, ApiError> {
        Ok(match self {
            BenefitDto::Cash { value_fen, min_spend_fen } => {
                Benefit::Cash { value_fen: fen(*value_fen)?, min_spend_fen: min_spend_fen.map(fen).transpose()? }
            }
            BenefitDto::Discount { percent_off, cap_fen } => {
                Benefit::Discount { percent_off: *percent_off, cap_fen: cap_fen.map(fen).transpose()? }
            }
            BenefitDto::Gift { item } => Benefit::Gift { item: text(item)? },
        })
    }
}

impl From<&Benefit> for BenefitDto {
    fn from(b: &Benefit) -> Self {
        match b {
            Benefit::Cash { value_fen, min_spend_fen } => {
                BenefitDto::Cash { value_fen: value_fen.get(), min_spend_fen: min_spend_fen.map(AmountFen::get) }
            }
            Benefit::Discount { percent_off, cap_fen } => {
                BenefitDto::Discount { percent_off: *percent_off, cap_fen: cap_fen.map(AmountFen::get) }
            }
            Benefit::Gift { item } => BenefitDto::Gift { item: item.as_str().to_owned() },
        }
    }
}

/// When an issued coupon may be used.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ValidityDto {
    /// The same window for every coupon (`from` < `until`).
    Window { from: DateTime<Utc>, until: DateTime<Utc> },
    /// From the moment of issue, for `days` days.
    DaysFromIssue {
        #[schema(minimum = 1, maximum = 3660)]
        days: u16,
    },
}

impl From<&Validity> for ValidityDto {
    fn from(v: &Validity) -> Self {
        match v {
            Validity::Window { from, until } => ValidityDto::Window { from: *from, until: *until },
            Validity::DaysFromIssue { days } => ValidityDto::DaysFromIssue { days: *days },
        }
    }
}

/// Who may claim the coupon themselves.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AudienceDto {
    AllMembers {},
    /// Members of these card levels (1..=32 levels).
    CardLevels {
        #[schema(min_items = 1, max_items = 32, value_type = Vec<crate::doc::CardLevelName>)]
        levels: Vec<String>,
    },
}

/// How many coupons the template may issue.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum StockDto {
    Finite {
        #[schema(minimum = 1, maximum = 10_000_000)]
        total: u32,
    },
    Unlimited {},
}

impl StockDto {
    pub fn validate(self) -> Stock {
        match self {
            StockDto::Finite { total } => Stock::Finite { total },
            StockDto::Unlimited {} => Stock::Unlimited,
        }
    }
}

impl From<Stock> for StockDto {
    fn from(s: Stock) -> Self {
        match s {
            Stock::Finite { total } => StockDto::Finite { total },
            Stock::Unlimited => StockDto::Unlimited {},
        }
    }
}

/// A template's editable terms.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TermsDto {
    #[schema(value_type = crate::doc::ShortText)]
    pub name: String,
    pub benefit: BenefitDto,
    pub validity: ValidityDto,
    /// Claims per member (1..=100); absent: no per-member limit.
    #[schema(minimum = 1, maximum = 100)]
    pub per_member_limit: Option<u16>,
    pub audience: AudienceDto,
}

impl TermsDto {
    pub fn validate(&self) -> Result<CouponTerms, ApiError> {
        let audience = match &self.audience {
            AudienceDto::AllMembers {} => Audience::AllMembers,
            AudienceDto::CardLevels { levels } => {
                if levels.is_empty() || levels.len() > AUDIENCE_LEVELS_MAX {
                    return Err(ApiError::invalid("invalid_terms", "audience names 1..=32 card levels"));
                }
                let levels = levels
                    .iter()
                    .map(|l| CardLevel::parse(l).map_err(|e| ApiError::invalid("invalid_card_level", e.to_string())))
                    .collect::<Result<_, _>>()?;
                Audience::CardLevels { levels }
            }
        };
        let validity = match self.validity {
            ValidityDto::Window { from, until } => Validity::Window { from, until },
            ValidityDto::DaysFromIssue { days } => Validity::DaysFromIssue { days },
        };
        let terms = CouponTerms {
            name: text(&self.name)?,
            benefit: self.benefit.validate()?,
            validity,
            per_member_limit: self.per_member_limit,
            audience,
        };
        terms.check().map_err(|e| invalid("invalid_terms")(e.to_string()))?;
        Ok(terms)
    }
}

impl From<&CouponTerms> for TermsDto {
    fn from(t: &CouponTerms) -> Self {
        Self {
            name: t.name.as_str().to_owned(),
            benefit: (&t.benefit).into(),
            validity: (&t.validity).into(),
            per_member_limit: t.per_member_limit,
            audience: match &t.audience {
                Audience::AllMembers => AudienceDto::AllMembers {},
                Audience::CardLevels { levels } => {
                    AudienceDto::CardLevels { levels: levels.iter().map(|l| l.as_str().to_owned()).collect() }
                }
            },
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTemplateBody {
    pub terms: TermsDto,
    pub stock: StockDto,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateStockBody {
    pub stock: StockDto,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SwitchBody {
    pub enabled: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WelcomeBody {
    /// Give one to every member registered from now on.
    pub welcome: bool,
}

fn reason(value: &str) -> Result<Reference, ApiError> {
    Reference::parse(value).map_err(|e| ApiError::invalid("invalid_text", e.to_string()))
}

/// An operator gives a member a coupon (the stock applies, the per-member limit and audience do not).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantBody {
    pub member_id: uuid::Uuid,
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]+$")]
    pub reason: String,
}

impl GrantBody {
    pub fn validate(&self) -> Result<(MemberId, Reference), ApiError> {
        Ok((MemberId::from_uuid(self.member_id), reason(&self.reason)?))
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VoidBody {
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]+$")]
    pub reason: String,
}

impl VoidBody {
    pub fn validate(&self) -> Result<Reference, ApiError> {
        reason(&self.reason)
    }
}

/// A write-off at the counter.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedeemBody {
    #[schema(value_type = crate::doc::CouponCodeInput)]
    pub code: String,
    /// The store or counter (1..=200 characters).
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]+$")]
    pub store: Option<String>,
}

impl RedeemBody {
    pub const CODE_BYTES_MAX: usize = 80;
    pub fn validate(&self) -> Result<Option<Reference>, ApiError> {
        if self.code.is_empty() || self.code.len() > Self::CODE_BYTES_MAX {
            return Err(ApiError::invalid("invalid_code", "code must be 1..=80 bytes"));
        }
        self.store.as_deref().map(reason).transpose()
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimBody {
    pub template_id: uuid::Uuid,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TemplatePageQuery {
    /// The last template id of the previous page.
    pub after: Option<uuid::Uuid>,
    /// 1..=200, default 50.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateDto {
    pub template_id: uuid::Uuid,
    pub terms: TermsDto,
    pub stock: StockDto,
    pub enabled: bool,
    /// Given to every newly registered member.
    pub welcome: bool,
    pub issued: u64,
    /// Absent for an unlimited stock.
    pub stock_left: Option<u64>,
    pub created_at: DateTime<Utc>,
}

impl From<TemplateView> for TemplateDto {
    fn from(v: TemplateView) -> Self {
        Self {
            template_id: v.template_id.as_uuid(),
            terms: (&v.terms).into(),
            stock: v.stock.into(),
            enabled: v.enabled,
            welcome: v.welcome,
            issued: v.issued,
            stock_left: v.stock_left,
            created_at: v.created_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateList {
    pub templates: Vec<TemplateDto>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CouponDto {
    pub coupon_id: uuid::Uuid,
    pub template_id: uuid::Uuid,
    pub member_id: uuid::Uuid,
    /// 1-based position among the template's issues.
    pub serial: u64,
    pub name: String,
    pub benefit: BenefitDto,
    /// `active`, `redeemed`, `voided` or `expired`.
    pub state: String,
    pub valid_from: DateTime<Utc>,
    pub valid_until: DateTime<Utc>,
    /// `member_claim`, `operator_grant`, `dispatch`, `mall_purchase` or `campaign_prize`.
    pub channel: String,
    pub issued_at: DateTime<Utc>,
    /// The 16-character code to type at the counter.
    pub code: String,
    /// What the member's QR code holds.
    pub qr_payload: String,
}

impl From<CouponView> for CouponDto {
    fn from(v: CouponView) -> Self {
        let state: CouponState = v.state;
        Self {
            coupon_id: v.coupon_id.as_uuid(),
            template_id: v.template_id.as_uuid(),
            member_id: v.member_id.as_uuid(),
            serial: v.serial,
            name: v.name,
            benefit: (&v.benefit).into(),
            state: state.as_str().to_owned(),
            valid_from: v.valid_from,
            valid_until: v.valid_until,
            channel: v.channel.name().to_owned(),
            issued_at: v.issued_at,
            code: v.code,
            qr_payload: v.qr_payload,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CouponList {
    pub coupons: Vec<CouponDto>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CouponPageQuery {
    #[param(value_type = Option<crate::doc::CouponState>)]
    pub state: Option<String>,
    /// The last serial of the previous page.
    #[param(minimum = 0, maximum = 9_223_372_036_854_775_807_u64)]
    pub after: Option<u64>,
    /// 1..=200, default 50.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
}

impl CouponPageQuery {
    pub fn state(&self) -> Result<Option<CouponState>, ApiError> {
        let Some(state) = self.state.as_deref() else { return Ok(None) };
        let parsed =
            [CouponState::Active, CouponState::Held, CouponState::Redeemed, CouponState::Voided, CouponState::Expired]
                .into_iter()
                .find(|s| s.as_str() == state);
        parsed
            .map(Some)
            .ok_or_else(|| ApiError::invalid("invalid_state", "state is active, held, redeemed, voided or expired"))
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CouponCountsDto {
    pub active: i64,
    /// Held by mall orders awaiting payment.
    pub held: i64,
    pub redeemed: i64,
    pub voided: i64,
    pub expired: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CouponRowDto {
    pub coupon_id: String,
    pub member_id: String,
    pub serial: i64,
    pub state: String,
    /// `member_claim`, `operator_grant`, `dispatch`, `mall_purchase` or `campaign_prize`.
    pub channel: String,
    pub issued_at: DateTime<Utc>,
    pub valid_until: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    /// Who redeemed or voided it (`staff:<name>`, `admin:<name>`).
    pub ended_by: Option<String>,
    pub store: Option<String>,
}

/// A template's coupons from the read model: counts per state and one page.
#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateCouponsPage {
    pub counts: CouponCountsDto,
    pub coupons: Vec<CouponRowDto>,
    /// Present when more may follow (pass as `after`).
    pub next_after: Option<i64>,
}

impl TemplateCouponsPage {
    pub fn new(counts: CouponCounts, rows: Vec<CouponRow>, limit: u32) -> Self {
        let next_after = if rows.len() as u32 == limit { rows.last().map(|r| r.serial) } else { None };
        Self {
            counts: CouponCountsDto {
                active: counts.active,
                held: counts.held,
                redeemed: counts.redeemed,
                voided: counts.voided,
                expired: counts.expired,
            },
            coupons: rows
                .into_iter()
                .map(|r| CouponRowDto {
                    coupon_id: r.coupon_id,
                    member_id: r.member_id,
                    serial: r.serial,
                    state: r.state,
                    channel: r.channel,
                    issued_at: r.issued_at,
                    valid_until: r.valid_until,
                    ended_at: r.ended_at,
                    ended_by: r.ended_by,
                    store: r.store,
                })
                .collect(),
            next_after,
        }
    }
}

/// Which members a dispatch gives a coupon to.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DispatchTargetDto {
    /// These members (1..=10000 distinct ids), in this order.
    Members {
        #[schema(schema_with = crate::doc::distinct_member_ids)]
        member_ids: Vec<uuid::Uuid>,
    },
    /// The members matching every given condition, in registration order.
    Filter { filter: DispatchFilterDto },
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DispatchFilterDto {
    #[schema(value_type = Option<crate::doc::CardLevelName>)]
    pub card_level: Option<String>,
    #[schema(value_type = Option<crate::doc::RegistrationSource>)]
    pub source: Option<String>,
    pub followed: Option<bool>,
    #[schema(value_type = Option<crate::doc::FollowSource>)]
    pub follow_source: Option<String>,
    pub points_min: Option<i64>,
    pub points_max: Option<i64>,
    pub balance_fen_min: Option<i64>,
    pub balance_fen_max: Option<i64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DispatchBody {
    pub target: DispatchTargetDto,
}

impl DispatchBody {
    pub fn validate(self) -> Result<DispatchTarget, ApiError> {
        Ok(match self.target {
            DispatchTargetDto::Members { member_ids } => {
                DispatchTarget::Members { member_ids: member_ids.into_iter().map(MemberId::from_uuid).collect() }
            }
            DispatchTargetDto::Filter { filter: f } => {
                if let Some(level) = &f.card_level {
                    CardLevel::parse(level).map_err(|e| ApiError::invalid("invalid_card_level", e.to_string()))?;
                }
                let bad = |what: &str| ApiError::invalid("invalid_dispatch", format!("{what} is not a known value"));
                if f.source.as_deref().is_some_and(|s| !["subscribe", "oauth", "staff"].contains(&s)) {
                    return Err(bad("source"));
                }
                if f.follow_source.as_deref().is_some_and(|s| !["scene_qr", "referral", "other"].contains(&s)) {
                    return Err(bad("follow_source"));
                }
                DispatchTarget::Filter {
                    filter: DispatchFilter {
                        card_level: f.card_level,
                        source: f.source,
                        followed: f.followed,
                        follow_source: f.follow_source,
                        points_min: f.points_min,
                        points_max: f.points_max,
                        balance_fen_min: f.balance_fen_min,
                        balance_fen_max: f.balance_fen_max,
                    },
                }
            }
        })
    }
}

/// A dispatch job and its report so far.
#[derive(Debug, Serialize, ToSchema)]
pub struct DispatchDto {
    pub job_id: uuid::Uuid,
    pub template_id: uuid::Uuid,
    /// `running` or `done`.
    pub state: String,
    /// Members handled so far (issued, refused or not found).
    pub processed: i64,
    /// Members in the list; absent for a filter (known when done).
    pub total: Option<i64>,
    pub issued: i64,
    /// Refusals by reason (`sold_out`, `template_disabled`, `window_ended`, `member_not_found`).
    pub refused: std::collections::BTreeMap<String, i64>,
    /// Why the last chunk stopped early (it runs again).
    pub last_error: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<DispatchJob> for DispatchDto {
    fn from(j: DispatchJob) -> Self {
        let total = match &j.target {
            DispatchTarget::Members { member_ids } => Some(member_ids.len() as i64),
            DispatchTarget::Filter { .. } => (j.state == DispatchState::Done).then_some(j.processed),
        };
        Self {
            job_id: j.job_id,
            template_id: j.template_id.as_uuid(),
            state: j.state.as_str().to_owned(),
            processed: j.processed,
            total,
            issued: j.issued,
            refused: j.refused,
            last_error: j.last_error,
            created_by: j.created_by,
            created_at: j.created_at,
            finished_at: j.finished_at,
        }
    }
}
