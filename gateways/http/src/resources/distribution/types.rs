//! Request and response types of the distribution routes, with their
//! validation into application values.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use wxcm_commands::distribution::{BindOutcome, BindingRecord, DistributorView, Subordinate};
use wxcm_domain::distribution::binding::{
    BindingMode, BindingRoute, CommissionDepth, DistributorStanding, EnrolmentPolicy,
};
use wxcm_domain::distribution::{
    DistributionSettings, DistributionSettingsShape, DistributorLevelCode, LevelRates, RateBps, RATE_BPS_FULL,
};
use wxcm_domain::{AmountFen, MemberId, PointsAmount, Reference};

use crate::error::ApiError;

/// How a member becomes a distributor.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum EnrolmentDto {
    /// Every member: a member is enrolled the first time they apply or ask for their link, code or QR.
    Everyone,
    /// Members apply; an admin approves, or rejects with a reason.
    Application,
    /// Only an admin designates distributors (members' applications are refused).
    Designation,
    /// Members who paid at least `paid_fen` in cash for mall orders (balance or WeChat Pay, after
    /// coupons), counted net of refunds: a refunded order does not count. Checked when they apply.
    SpendingThreshold {
        #[schema(minimum = 1, maximum = 100000000)]
        paid_fen: i64,
    },
}

/// When a member already bound may be bound to another distributor.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum BindingModeDto {
    /// The first binding holds forever.
    FirstWins,
    /// A binding holds `days` days; after that a new arrival may replace it.
    ValidFor {
        #[schema(minimum = 1, maximum = 3660)]
        days: u16,
    },
    /// Every arrival through another distributor rebinds.
    LastWins,
}

/// Default commission rates in basis points (1/10,000): level 1 + level 2 ≤ 10,000.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RatesDto {
    #[schema(minimum = 0, maximum = 10000)]
    pub first_bps: u32,
    #[schema(minimum = 0, maximum = 10000)]
    pub second_bps: u32,
}

/// A tenant's distribution settings.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DistributionSettingsDto {
    pub enrolment: EnrolmentDto,
    pub binding_mode: BindingModeDto,
    /// Levels of a buyer's chain that earn commission: 1 or 2.
    #[schema(minimum = 1, maximum = 2)]
    pub commission_depth: u8,
    /// Default level 1 / level 2 rates of the commission rules (sum at most 100%); null: not set.
    pub default_rates: Option<RatesDto>,
    /// Points a distributor earns when a person binds for the first time in the tenant — once per
    /// openid, ever (a member deleted and re-created earns nothing again); null: no reward.
    #[schema(minimum = 1, maximum = 100000000)]
    pub new_member_reward_points: Option<i64>,
}

impl DistributionSettingsDto {
    pub fn validate(self) -> Result<DistributionSettings, ApiError> {
        let enrolment = match self.enrolment {
            EnrolmentDto::Everyone => EnrolmentPolicy::Everyone,
            EnrolmentDto::Application => EnrolmentPolicy::Application,
            EnrolmentDto::Designation => EnrolmentPolicy::Designation,
            EnrolmentDto::SpendingThreshold { paid_fen } => EnrolmentPolicy::SpendingThreshold {
                paid_fen: AmountFen::new(paid_fen)
                    .map_err(|e| ApiError::invalid("invalid_threshold", e.to_string()))?,
            },
        };
        let binding_mode = match self.binding_mode {
            BindingModeDto::FirstWins => BindingMode::FirstWins,
            BindingModeDto::ValidFor { days } => BindingMode::ValidFor { days },
            BindingModeDto::LastWins => BindingMode::LastWins,
        };
        let depth = match self.commission_depth {
            1 => CommissionDepth::One,
            2 => CommissionDepth::Two,
            _ => return Err(ApiError::invalid("invalid_depth", "commission_depth must be 1 or 2")),
        };
        let rate = |bps| RateBps::new(bps).map_err(|e| ApiError::invalid("invalid_rates", e.to_string()));
        let default_rates = self
            .default_rates
            .map(|r| {
                LevelRates::new(rate(r.first_bps)?, rate(r.second_bps)?)
                    .map_err(|e| ApiError::invalid("invalid_rates", e.to_string()))
            })
            .transpose()?;
        let new_member_reward_points = self
            .new_member_reward_points
            .map(|p| PointsAmount::new(p).map_err(|e| ApiError::invalid("invalid_points", e.to_string())))
            .transpose()?;
        DistributionSettings::new(DistributionSettingsShape {
            enrolment,
            binding_mode,
            depth,
            default_rates,
            new_member_reward_points,
        })
        .map_err(|e| ApiError::invalid("invalid_binding_mode", e.to_string()))
    }
}

impl From<DistributionSettings> for DistributionSettingsDto {
    fn from(s: DistributionSettings) -> Self {
        let shape: DistributionSettingsShape = s.into();
        Self {
            enrolment: match shape.enrolment {
                EnrolmentPolicy::Everyone => EnrolmentDto::Everyone,
                EnrolmentPolicy::Application => EnrolmentDto::Application,
                EnrolmentPolicy::Designation => EnrolmentDto::Designation,
                EnrolmentPolicy::SpendingThreshold { paid_fen } => {
                    EnrolmentDto::SpendingThreshold { paid_fen: paid_fen.get() }
                }
            },
            binding_mode: match shape.binding_mode {
                BindingMode::FirstWins => BindingModeDto::FirstWins,
                BindingMode::ValidFor { days } => BindingModeDto::ValidFor { days },
                BindingMode::LastWins => BindingModeDto::LastWins,
            },
            commission_depth: match shape.depth {
                CommissionDepth::One => 1,
                CommissionDepth::Two => 2,
            },
            default_rates: shape.default_rates.map(|r| RatesDto {
                first_bps: u32::from(r.rate(wxcm_domain::distribution::CommissionLevel::First)),
                second_bps: u32::from(r.rate(wxcm_domain::distribution::CommissionLevel::Second)),
            }),
            new_member_reward_points: shape.new_member_reward_points.map(PointsAmount::get),
        }
    }
}

/// Compile-time check that the documented maximum is the domain's.
const _: () = assert!(RATE_BPS_FULL == 10_000);

/// A distributor's standing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StandingDto {
    /// Applied; waiting for an admin.
    Applied,
    /// The application was rejected (the member may apply again).
    Rejected,
    Active,
    /// Binds nobody (and earns nothing) until reinstated.
    Suspended,
}

impl StandingDto {
    pub fn standing(self) -> DistributorStanding {
        match self {
            StandingDto::Applied => DistributorStanding::Applied,
            StandingDto::Rejected => DistributorStanding::Rejected,
            StandingDto::Active => DistributorStanding::Active,
            StandingDto::Suspended => DistributorStanding::Suspended,
        }
    }
}

/// The standing as the API names it (`not_distributor` never comes from the table).
pub fn standing_name(s: DistributorStanding) -> &'static str {
    match s {
        DistributorStanding::NotDistributor => "not_distributor",
        DistributorStanding::Applied => "applied",
        DistributorStanding::Rejected => "rejected",
        DistributorStanding::Active => "active",
        DistributorStanding::Suspended => "suspended",
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DistributorQrDto {
    pub appid: String,
    pub ticket: String,
    /// What the QR code encodes.
    pub url: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DistributorDto {
    pub member_id: uuid::Uuid,
    /// `applied`, `rejected`, `active` or `suspended`.
    pub standing: String,
    /// The distributor's short code (8 characters of Crockford's base 32).
    pub code: String,
    /// How they became one: `application`, `everyone`, `spending_threshold`, `designated`.
    pub route: Option<String>,
    /// Why the last rejection or suspension happened.
    pub reason: Option<String>,
    pub applied_at: Option<DateTime<Utc>>,
    pub enrolled_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    /// The scene QR code, once made (`GET /m/api/v1/distribution/promotion`).
    pub qr: Option<DistributorQrDto>,
    /// The distributor's level code (commission settings' `distributor_levels`); null: none.
    pub level: Option<String>,
}

/// A distributor's level.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DistributorLevelBody {
    /// A level code of the commission settings, or null for none.
    #[schema(pattern = "^[a-z0-9_-]{1,32}$", min_length = 1, max_length = 32)]
    pub level: Option<String>,
}

impl DistributorLevelBody {
    pub fn validate(&self) -> Result<Option<DistributorLevelCode>, ApiError> {
        self.level
            .as_deref()
            .map(|c| DistributorLevelCode::parse(c).map_err(|e| ApiError::invalid("invalid_level", e.to_string())))
            .transpose()
    }
}

impl From<DistributorView> for DistributorDto {
    fn from(v: DistributorView) -> Self {
        Self {
            member_id: v.member_id.as_uuid(),
            standing: standing_name(v.standing).to_owned(),
            code: v.code,
            route: v.route,
            reason: v.reason,
            applied_at: v.applied_at,
            enrolled_at: v.enrolled_at,
            updated_at: v.updated_at,
            qr: v.qr.map(|q| DistributorQrDto { appid: q.appid.to_string(), ticket: q.ticket, url: q.url }),
            level: v.level,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DistributorList {
    pub distributors: Vec<DistributorDto>,
    /// `after` of the next page, when this one is full.
    pub next_after: Option<uuid::Uuid>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DistributorPageQuery {
    /// Only distributors of this standing.
    pub standing: Option<StandingDto>,
    /// The last member id of the previous page.
    pub after: Option<uuid::Uuid>,
    /// 1..=100, default 50.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// The last member id of the previous page.
    pub after: Option<uuid::Uuid>,
    /// 1..=100, default 50.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SubordinateQuery {
    /// 1: members bound to the distributor; 2: members bound to those. Default 1.
    #[param(minimum = 1, maximum = 2)]
    pub level: Option<u8>,
    /// The last member id of the previous page.
    pub after: Option<uuid::Uuid>,
    /// 1..=100, default 50.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

/// Why (recorded with the event).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionReasonBody {
    #[schema(value_type = crate::doc::ShortText)]
    pub reason: String,
}

/// Longest reason, in characters.
pub const REASON_CHARS_MAX: usize = 64;

impl DecisionReasonBody {
    pub fn validate(&self) -> Result<Reference, ApiError> {
        let text = &self.reason;
        if text.trim().is_empty() || text.chars().count() > REASON_CHARS_MAX {
            return Err(ApiError::invalid(
                "invalid_reason",
                format!("reason must be 1..={REASON_CHARS_MAX} visible characters"),
            ));
        }
        Reference::parse(text).map_err(|e| ApiError::invalid("invalid_reason", e.to_string()))
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BindingDto {
    pub binding_id: i64,
    pub member_id: uuid::Uuid,
    pub distributor_id: uuid::Uuid,
    /// The distributor this binding replaced (validity window passed, or last wins).
    pub replaces: Option<uuid::Uuid>,
    /// `link`, `qr` or `code`.
    pub route: String,
    pub bound_at: DateTime<Utc>,
}

fn uuid_of(m: MemberId) -> uuid::Uuid {
    m.as_uuid()
}

impl From<BindingRecord> for BindingDto {
    fn from(r: BindingRecord) -> Self {
        Self {
            binding_id: r.binding_id,
            member_id: uuid_of(r.member_id),
            distributor_id: uuid_of(r.distributor_id),
            replaces: r.replaces.map(uuid_of),
            route: route_name(r.route).to_owned(),
            bound_at: r.bound_at,
        }
    }
}

fn route_name(r: BindingRoute) -> &'static str {
    r.as_str()
}

/// A member's binding: the current one and every binding made (newest first, at most 100).
#[derive(Debug, Serialize, ToSchema)]
pub struct MemberBindingDto {
    pub member_id: uuid::Uuid,
    pub current: Option<BindingDto>,
    pub history: Vec<BindingDto>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SubordinateDto {
    pub member_id: uuid::Uuid,
    /// Whom they are bound to (the distributor itself at level 1).
    pub bound_to: uuid::Uuid,
    pub bound_at: DateTime<Utc>,
}

impl From<Subordinate> for SubordinateDto {
    fn from(s: Subordinate) -> Self {
        Self { member_id: uuid_of(s.member_id), bound_to: uuid_of(s.distributor_id), bound_at: s.bound_at }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SubordinateList {
    pub level: u8,
    pub subordinates: Vec<SubordinateDto>,
    pub next_after: Option<uuid::Uuid>,
}

/// Bind to the distributor whose code the member typed.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BindByCodeBody {
    /// The distributor's code; case, `-` and spaces do not matter, O reads as 0, I and L as 1.
    #[schema(min_length = 1, max_length = 32)]
    pub code: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BindOutcomeDto {
    /// `bound` (a new binding), `already_bound` (to this distributor: nothing changed) or `replayed`
    /// (this Idempotency-Key bound before).
    pub outcome: String,
    pub binding: BindingDto,
    /// This binding earned the distributor the person's one new-member reward.
    pub new_member_reward: bool,
}

impl From<BindOutcome> for BindOutcomeDto {
    fn from(o: BindOutcome) -> Self {
        let (outcome, record, reward) = match o {
            BindOutcome::Bound { record, new_member_reward } => ("bound", record, new_member_reward),
            BindOutcome::AlreadyBound { record } => ("already_bound", record, false),
            BindOutcome::Replayed { record } => ("replayed", record, false),
        };
        Self { outcome: outcome.to_owned(), binding: record.into(), new_member_reward: reward }
    }
}

/// The member's own standing as a distributor.
#[derive(Debug, Serialize, ToSchema)]
pub struct MyDistributorDto {
    /// `not_distributor`, `applied`, `rejected`, `active` or `suspended`.
    pub standing: String,
    /// Present once the member applied or was enrolled.
    pub distributor: Option<DistributorDto>,
    /// The member's current binding (whom they are bound to).
    pub bound_to: Option<BindingDto>,
}

/// How an active distributor brings members in.
#[derive(Debug, Serialize, ToSchema)]
pub struct PromotionDto {
    /// `{public_base_url}/m/distribution/{tenant}/{code}`: opens WeChat OAuth, then binds.
    pub link: String,
    pub code: String,
    /// The scene QR code (scene `dist_<code>`): scanning or following through it binds.
    pub qr: DistributorQrDto,
}
