//! Bodies and answers of the campaign routes, and their validation into the
//! domain's terms (checked once here; the aggregate checks them again).

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use wxcm_commands::campaigns::periods::MemberPeriod;
use wxcm_commands::campaigns::shakes::{PrizeStatus, ShakeResult};
use wxcm_commands::campaigns::CampaignView;
use wxcm_domain::campaign::{
    CampaignId, CampaignKind, CampaignTerms, CampaignText, Cycle, Limits, PeriodicTerms, Prize, PrizeTier, ShakeDraw,
    ShakeSlot, ShakeTerms, Status, TicketSource, PARTICIPATIONS_MAX, PRIZES_PER_MEMBER_MAX, SLOTS_MAX, STOCK_MAX,
    TIERS_MAX, WEIGHT_MAX,
};
use wxcm_domain::coupon::TemplateId;
use wxcm_domain::PointsAmount;

use crate::error::ApiError;
use crate::extract::PathValue;

impl PathValue for CampaignId {
    fn parse_segment(s: &str) -> Result<Self, ApiError> {
        CampaignId::parse(s).map_err(|e| ApiError::bad_request("invalid_campaign_id", e.to_string()))
    }
}

/// What a slot gives.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PrizeDto {
    /// Points granted on the member ledger (never expiring).
    Points {
        #[schema(minimum = 1, maximum = 100_000_000)]
        points: i64,
    },
    /// One coupon of this template (one per campaign and award).
    Coupon { template_id: uuid::Uuid },
    /// An item handed over once at the store.
    Physical {
        #[schema(value_type = crate::doc::ShortText)]
        item: String,
    },
    /// No prize ("thank you for taking part").
    Thanks,
}

impl PrizeDto {
    pub(super) fn validate(&self) -> Result<Prize, ApiError> {
        Ok(match self {
            PrizeDto::Points { points } => Prize::Points {
                points: PointsAmount::new(*points).map_err(|e| ApiError::invalid("invalid_prize", e.to_string()))?,
            },
            PrizeDto::Coupon { template_id } => Prize::Coupon { template_id: TemplateId::from_uuid(*template_id) },
            PrizeDto::Physical { item } => Prize::Physical {
                item: CampaignText::parse(item).map_err(|e| ApiError::invalid("invalid_text", e.to_string()))?,
            },
            PrizeDto::Thanks => Prize::Thanks,
        })
    }
}

impl From<&Prize> for PrizeDto {
    fn from(p: &Prize) -> Self {
        match p {
            Prize::Points { points } => PrizeDto::Points { points: points.get() },
            Prize::Coupon { template_id } => PrizeDto::Coupon { template_id: template_id.as_uuid() },
            Prize::Physical { item } => PrizeDto::Physical { item: item.as_str().to_owned() },
            Prize::Thanks => PrizeDto::Thanks,
        }
    }
}

/// One slot of the prize table: its chance is `weight / total weight in force`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SlotBody {
    pub prize: PrizeDto,
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub weight: i64,
    /// Units to give: required for a prize (1..=1,000,000), absent for thanks.
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub stock: Option<i64>,
}

/// How often a member may shake; absent: no limit of that kind.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChancesBody {
    /// Shakes over the whole campaign.
    #[schema(minimum = 1, maximum = 1_000)]
    pub lifetime: Option<i64>,
    /// Shakes per merchant day (UTC+8).
    #[schema(minimum = 1, maximum = 1_000)]
    pub per_day: Option<i64>,
}

/// A shake lottery: each shake draws at once from the prize table in force.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShakeLotteryBody {
    #[schema(value_type = crate::doc::ShortText)]
    pub name: String,
    pub starts_at: DateTime<Utc>,
    /// After `starts_at`, at most 366 days later.
    pub ends_at: DateTime<Utc>,
    /// Only card-holding members may shake.
    #[serde(default)]
    pub members_only: bool,
    #[serde(default)]
    pub chances: ChancesBody,
    /// K: prizes (not thanks) one member may win.
    #[schema(minimum = 1, maximum = 100)]
    pub prizes_per_member_max: i64,
    /// The table in order; at least one prize slot.
    #[schema(min_items = 1, max_items = 32)]
    pub slots: Vec<SlotBody>,
}

fn bounded(value: i64, max: u32, code: &'static str, what: &str) -> Result<u32, ApiError> {
    match u32::try_from(value) {
        Ok(v) if (1..=max).contains(&v) => Ok(v),
        _ => Err(ApiError::invalid(code, format!("{what} must be 1..={max}"))),
    }
}

impl ShakeLotteryBody {
    pub fn validate(&self) -> Result<CampaignTerms, ApiError> {
        if self.slots.is_empty() || self.slots.len() > SLOTS_MAX {
            return Err(ApiError::invalid("invalid_slots", format!("a prize table has 1..={SLOTS_MAX} slots")));
        }
        let mut slots = Vec::with_capacity(self.slots.len());
        for slot in &self.slots {
            let prize = slot.prize.validate()?;
            let weight = bounded(slot.weight, WEIGHT_MAX, "invalid_weight", "a slot's weight")?;
            let stock = match (&prize, slot.stock) {
                (Prize::Thanks, None) => None,
                (Prize::Thanks, Some(_)) => {
                    return Err(ApiError::invalid("invalid_stock", "a thanks slot has no stock"));
                }
                (_, Some(stock)) => Some(bounded(stock, STOCK_MAX, "invalid_stock", "a prize slot's stock")?),
                (_, None) => return Err(ApiError::invalid("invalid_stock", "a prize slot needs a stock")),
            };
            slots.push(ShakeSlot { prize, weight, stock });
        }
        let limit =
            |v: Option<i64>, what| v.map(|v| bounded(v, PARTICIPATIONS_MAX, "invalid_chances", what)).transpose();
        let terms = CampaignTerms {
            name: CampaignText::parse(&self.name).map_err(|e| ApiError::invalid("invalid_text", e.to_string()))?,
            starts_at: self.starts_at,
            ends_at: self.ends_at,
            members_only: self.members_only,
            limits: Limits {
                lifetime: limit(self.chances.lifetime, "chances.lifetime")?,
                per_day: limit(self.chances.per_day, "chances.per_day")?,
                per_period: None,
            },
            kind: CampaignKind::ShakeLottery(ShakeTerms {
                slots,
                prizes_per_member_max: bounded(
                    self.prizes_per_member_max,
                    PRIZES_PER_MEMBER_MAX,
                    "invalid_prizes_per_member_max",
                    "prizes_per_member_max",
                )?,
            }),
        };
        terms.check().map_err(|e| ApiError::invalid("invalid_terms", e.to_string()))?;
        Ok(terms)
    }
}

/// How a periodic lottery's periods are cut (merchant days and weeks, UTC+8).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CycleDto {
    Daily,
    Weekly,
    /// Periods opened by an operator (`POST …/campaigns/{id}/periods`), each with any window
    /// inside the campaign and optionally a beacon round.
    Manual,
    /// One period from `starts_at` to `ends_at`, drawn when the campaign ends.
    WholeCampaign,
}

/// `count` winners get `prize`; tiers go by rank in order.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TierBody {
    /// A prize (not thanks).
    pub prize: PrizeDto,
    #[schema(minimum = 1, maximum = 1_000)]
    pub count: i64,
}

/// How often a member may enter; absent: no limit of that kind.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EntryLimitsBody {
    #[schema(minimum = 1, maximum = 1_000)]
    pub lifetime: Option<i64>,
    #[schema(minimum = 1, maximum = 1_000)]
    pub per_day: Option<i64>,
    /// Entries (tickets) per period.
    #[schema(minimum = 1, maximum = 1_000)]
    pub per_period: Option<i64>,
}

/// A periodic lottery: one period per merchant day or week, drawn by the
/// scheduler at its end; entries are free or cost `entry_cost_points`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PeriodicLotteryBody {
    #[schema(value_type = crate::doc::ShortText)]
    pub name: String,
    pub starts_at: DateTime<Utc>,
    /// After `starts_at`, at most 366 days later.
    pub ends_at: DateTime<Utc>,
    #[serde(default)]
    pub members_only: bool,
    #[serde(default)]
    pub limits: EntryLimitsBody,
    pub cycle: CycleDto,
    /// Distinct members one period accepts.
    #[schema(minimum = 1, maximum = 100_000)]
    pub entrants_max: i64,
    /// Points one entry costs, spent from the member's ledger (absent: free);
    /// refunded when the period is cancelled.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub entry_cost_points: Option<i64>,
    /// At most 1,000 winners in all.
    #[schema(min_items = 1, max_items = 10)]
    pub tiers: Vec<TierBody>,
}

impl PeriodicLotteryBody {
    pub fn validate(&self) -> Result<CampaignTerms, ApiError> {
        if self.tiers.is_empty() || self.tiers.len() > TIERS_MAX {
            return Err(ApiError::invalid("invalid_tiers", format!("a periodic lottery has 1..={TIERS_MAX} tiers")));
        }
        let mut tiers = Vec::with_capacity(self.tiers.len());
        for tier in &self.tiers {
            let prize = tier.prize.validate()?;
            if prize.is_thanks() {
                return Err(ApiError::invalid("invalid_prize", "a tier's prize is not thanks"));
            }
            let count = bounded(tier.count, draw_winners_max(), "invalid_tiers", "a tier's count")?;
            tiers.push(PrizeTier { prize, count });
        }
        let limit =
            |v: Option<i64>, what| v.map(|v| bounded(v, PARTICIPATIONS_MAX, "invalid_chances", what)).transpose();
        let terms = CampaignTerms {
            name: CampaignText::parse(&self.name).map_err(|e| ApiError::invalid("invalid_text", e.to_string()))?,
            starts_at: self.starts_at,
            ends_at: self.ends_at,
            members_only: self.members_only,
            limits: Limits {
                lifetime: limit(self.limits.lifetime, "limits.lifetime")?,
                per_day: limit(self.limits.per_day, "limits.per_day")?,
                per_period: limit(self.limits.per_period, "limits.per_period")?,
            },
            kind: CampaignKind::PeriodicLottery(PeriodicTerms {
                cycle: match self.cycle {
                    CycleDto::Daily => Cycle::Daily,
                    CycleDto::Weekly => Cycle::Weekly,
                    CycleDto::Manual => Cycle::Manual,
                    CycleDto::WholeCampaign => Cycle::WholeCampaign,
                },
                tickets: TicketSource::Entries,
                entry_cost: self.entry_cost_points.map(entry_cost).transpose()?,
                entrants_max: bounded(self.entrants_max, ENTRANTS_MAX, "invalid_entrants_max", "entrants_max")?,
                tiers,
            }),
        };
        terms.check().map_err(|e| ApiError::invalid("invalid_terms", e.to_string()))?;
        Ok(terms)
    }
}

/// A popularity lottery: each distinct friend who opens a member's share link
/// gives the member one ticket in the open period; the scheduler draws each
/// period at its end (weighted by tickets) and gives the winners their prizes.
/// `limits` count a member's tickets.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PopularityLotteryBody {
    #[schema(value_type = crate::doc::ShortText)]
    pub name: String,
    pub starts_at: DateTime<Utc>,
    /// After `starts_at`, at most 366 days later.
    pub ends_at: DateTime<Utc>,
    /// Only card-holding members collect tickets (friends need not be members).
    #[serde(default)]
    pub members_only: bool,
    #[serde(default)]
    pub limits: EntryLimitsBody,
    pub cycle: CycleDto,
    /// Distinct members (ticket holders) one period accepts.
    #[schema(minimum = 1, maximum = 100_000)]
    pub entrants_max: i64,
    /// At most 1,000 winners in all.
    #[schema(min_items = 1, max_items = 10)]
    pub tiers: Vec<TierBody>,
}

impl PopularityLotteryBody {
    pub fn validate(&self) -> Result<CampaignTerms, ApiError> {
        let as_periodic = PeriodicLotteryBody {
            name: self.name.clone(),
            starts_at: self.starts_at,
            ends_at: self.ends_at,
            members_only: self.members_only,
            limits: self.limits.clone(),
            cycle: self.cycle,
            entrants_max: self.entrants_max,
            entry_cost_points: None,
            tiers: self.tiers.clone(),
        };
        let mut terms = as_periodic.validate()?;
        if let CampaignKind::PeriodicLottery(periodic) = &mut terms.kind {
            periodic.tickets = TicketSource::FriendVisits;
        }
        terms.check().map_err(|e| ApiError::invalid("invalid_terms", e.to_string()))?;
        Ok(terms)
    }
}

/// A member's share link of a popularity lottery.
#[derive(Debug, Serialize, ToSchema)]
pub struct ShareLinkDto {
    /// `{public_base_url}/m/campaigns/{tenant}/{campaign_id}/share/{member_id}`: opens WeChat OAuth
    /// (`snsapi_base`); each distinct friend who comes back through it gives the member one ticket.
    pub url: String,
}

const ENTRANTS_MAX: u32 = 100_000;

fn entry_cost(points: i64) -> Result<PointsAmount, ApiError> {
    let max = wxcm_domain::campaign::ENTRY_COST_POINTS_MAX;
    if !(1..=max).contains(&points) {
        return Err(ApiError::invalid("invalid_entry_cost", format!("entry_cost_points must be 1..={max}")));
    }
    PointsAmount::new(points).map_err(|e| ApiError::invalid("invalid_entry_cost", e.to_string()))
}

fn draw_winners_max() -> u32 {
    wxcm_domain::campaign::draw::WINNERS_MAX
}

/// Which win a physical prize was won by: a member's shake (its chance number)
/// or a period's rank.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AwardBody {
    Shake {
        member_id: uuid::Uuid,
        #[schema(minimum = 1, maximum = 4_294_967_295_i64)]
        nonce: i64,
    },
    Period {
        #[schema(minimum = 1, maximum = 4_294_967_295_i64)]
        period_no: i64,
        #[schema(minimum = 1, maximum = 4_294_967_295_i64)]
        rank: i64,
    },
}

/// A physical prize handed over at the store.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HandOverBody {
    pub award: AwardBody,
}

impl HandOverBody {
    pub fn validate(&self) -> Result<wxcm_domain::campaign::AwardRef, ApiError> {
        use wxcm_domain::campaign::AwardRef;
        let positive = |v: i64, what: &str| match u32::try_from(v) {
            Ok(v) if v >= 1 => Ok(v),
            _ => Err(ApiError::invalid("invalid_award", format!("{what} must be 1..=4294967295"))),
        };
        Ok(match &self.award {
            AwardBody::Shake { member_id, nonce } => AwardRef::Shake {
                member_id: wxcm_domain::MemberId::from_uuid(*member_id),
                nonce: positive(*nonce, "nonce")?,
            },
            AwardBody::Period { period_no, rank } => {
                AwardRef::Period { period_no: positive(*period_no, "period_no")?, rank: positive(*rank, "rank")? }
            }
        })
    }
}

/// The member's entry: the period it went into.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EntryDto {
    pub campaign_id: uuid::Uuid,
    pub period_no: u32,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CampaignStatusDto {
    Draft,
    Scheduled,
    Ongoing,
    Ended,
}

impl From<Status> for CampaignStatusDto {
    fn from(s: Status) -> Self {
        match s {
            Status::Draft => CampaignStatusDto::Draft,
            Status::Scheduled => CampaignStatusDto::Scheduled,
            Status::Ongoing => CampaignStatusDto::Ongoing,
            Status::Ended => CampaignStatusDto::Ended,
        }
    }
}

/// A slot with the stock it has left and its weight in force (0 once its stock is gone).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SlotDto {
    pub slot: u16,
    pub prize: PrizeDto,
    pub weight: u32,
    pub stock: Option<u32>,
    pub stock_left: Option<u32>,
    pub weight_in_force: u32,
}

/// A campaign: terms, the step it is at, the odds in force and counts.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CampaignDto {
    pub campaign_id: uuid::Uuid,
    /// `shake_lottery`, `periodic_lottery`, `popularity_lottery`, `snatch` or `voting`.
    pub kind: String,
    pub name: String,
    /// The recorded step.
    pub status: CampaignStatusDto,
    /// The step a shake meets now (the clock moves a campaign on before the scheduler records it).
    pub phase: CampaignStatusDto,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub members_only: bool,
    pub chances: ChancesBody,
    pub prizes_per_member_max: Option<u32>,
    pub slots: Vec<SlotDto>,
    /// The prize table version in force (1 when scheduled, +1 per depleted prize).
    pub table_version: u32,
    pub total_weight: u64,
    /// SHA-256 of the seed (64 hex digits), from scheduling on.
    pub commitment: Option<String>,
    /// The seed, only once the campaign ended and revealed it.
    pub revealed_seed: Option<String>,
    pub participants: u64,
    pub shakes: u64,
    pub winners: u64,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    /// A periodic lottery's cycle, tiers and periods (absent for a shake lottery).
    pub periodic: Option<PeriodicDto>,
    /// A 1-yuan snatch's shares and periods (absent for the other kinds).
    pub snatch: Option<super::SnatchDto>,
    /// A voting campaign's terms and item count (absent for the lotteries).
    pub voting: Option<super::voting::VotingDto>,
}

impl From<CampaignView> for CampaignDto {
    fn from(v: CampaignView) -> Self {
        let (slots, k) = match &v.terms.kind {
            CampaignKind::ShakeLottery(terms) => {
                let odds = v.odds.as_ref();
                let slots = (0u16..)
                    .zip(&terms.slots)
                    .map(|(i, s)| {
                        let in_force = odds.and_then(|o| o.slots.get(usize::from(i)));
                        SlotDto {
                            slot: i,
                            prize: (&s.prize).into(),
                            weight: s.weight,
                            stock: s.stock,
                            stock_left: in_force.map_or(s.stock, |o| o.stock_left),
                            weight_in_force: in_force.map_or(s.weight, |o| o.weight),
                        }
                    })
                    .collect();
                (slots, Some(terms.prizes_per_member_max))
            }
            CampaignKind::PeriodicLottery(_) | CampaignKind::Snatch(_) | CampaignKind::Voting(_) => (Vec::new(), None),
        };
        let limits = v.terms.limits;
        let periodic = match &v.terms.kind {
            CampaignKind::PeriodicLottery(terms) => Some(PeriodicDto {
                cycle: match terms.cycle {
                    Cycle::Daily => "daily",
                    Cycle::Weekly => "weekly",
                    Cycle::Manual => "manual",
                    Cycle::WholeCampaign => "whole_campaign",
                }
                .to_owned(),
                entrants_max: terms.entrants_max,
                entry_cost_points: terms.entry_cost.map(|c| c.get()),
                per_period: limits.per_period,
                tiers: terms.tiers.iter().map(|t| TierDto { prize: (&t.prize).into(), count: t.count }).collect(),
                periods: v
                    .periods
                    .iter()
                    .map(|p| PeriodDto {
                        period_no: p.period_no,
                        starts_at: p.starts_at,
                        ends_at: p.ends_at,
                        commitment: p.commitment.to_hex(),
                        entries: p.entries,
                        entrants: p.entrants,
                        state: p.state.to_owned(),
                        seed: p.seed.map(|s| s.to_hex()),
                        winners: p.winners,
                        beacon: p
                            .beacon
                            .as_ref()
                            .map(|b| BeaconRoundDto { source: b.source.as_str().to_owned(), round: b.round }),
                    })
                    .collect(),
            }),
            CampaignKind::ShakeLottery(_) | CampaignKind::Snatch(_) | CampaignKind::Voting(_) => None,
        };
        let voting = super::voting::VotingDto::of(&v);
        Self {
            periodic,
            snatch: v.snatch.map(Into::into),
            voting,
            campaign_id: v.campaign_id.as_uuid(),
            kind: v.terms.kind.name().to_owned(),
            name: v.terms.name.as_str().to_owned(),
            status: v.status.into(),
            phase: v.phase.into(),
            starts_at: v.terms.starts_at,
            ends_at: v.terms.ends_at,
            members_only: v.terms.members_only,
            chances: ChancesBody { lifetime: limits.lifetime.map(i64::from), per_day: limits.per_day.map(i64::from) },
            prizes_per_member_max: k,
            table_version: v.odds.as_ref().map_or(0, |o| o.table_version),
            total_weight: v.odds.as_ref().map_or(0, |o| o.total_weight),
            slots,
            commitment: v.commitment.map(|c| c.to_hex()),
            revealed_seed: v.revealed_seed.map(|s| s.to_hex()),
            participants: v.participants,
            shakes: v.shakes,
            winners: v.winners,
            created_at: v.created_at,
            started_at: v.started_at,
            ended_at: v.ended_at,
        }
    }
}

/// One period of a periodic lottery.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PeriodDto {
    pub period_no: u32,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    /// SHA-256 of the period's seed (64 hex digits), from its opening on.
    pub commitment: String,
    pub entries: u32,
    pub entrants: u32,
    /// `open`, `drawn` or `cancelled`.
    pub state: String,
    /// The seed, once the period is drawn.
    pub seed: Option<String>,
    pub winners: u32,
    /// The beacon round named when the period opened (`source`, `round`).
    pub beacon: Option<BeaconRoundDto>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BeaconRoundDto {
    pub source: String,
    pub round: u64,
}

/// A periodic lottery's terms and periods.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PeriodicDto {
    pub cycle: String,
    pub entrants_max: u32,
    /// Points one entry costs (absent: free).
    pub entry_cost_points: Option<i64>,
    pub per_period: Option<u32>,
    pub tiers: Vec<TierDto>,
    pub periods: Vec<PeriodDto>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TierDto {
    pub prize: PrizeDto,
    pub count: u32,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CampaignList {
    pub campaigns: Vec<CampaignDto>,
}

/// One recorded shake: everything an auditor needs to recompute it once the seed is revealed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ShakeDto {
    /// The member's n-th shake (the chance it used).
    pub nonce: u32,
    pub merchant_day: NaiveDate,
    pub table_version: u32,
    pub total_weight: u64,
    /// `0..total_weight`, HMAC-SHA256(seed, member ‖ nonce ‖ counter).
    pub roll: u64,
    pub slot: u16,
    pub prize: PrizeDto,
    /// Not thanks.
    pub won: bool,
    pub stock_left_after: Option<u32>,
    pub member_prizes_after: u32,
}

impl From<&ShakeDraw> for ShakeDto {
    fn from(d: &ShakeDraw) -> Self {
        Self {
            nonce: d.nonce,
            merchant_day: d.merchant_day,
            table_version: d.table_version,
            total_weight: d.total_weight,
            roll: d.roll,
            slot: d.slot,
            prize: (&d.prize).into(),
            won: !d.prize.is_thanks(),
            stock_left_after: d.stock_left_after,
            member_prizes_after: d.member_prizes_after,
        }
    }
}

/// What became of the prize: `none` (thanks), `issued`, `pending` (the
/// scheduler issues it shortly), `at_store` (physical), `not_issued` (the
/// coupon template refused).
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PrizeStatusDto {
    None,
    Issued,
    Pending,
    AtStore,
    NotIssued,
}

impl From<PrizeStatus> for PrizeStatusDto {
    fn from(s: PrizeStatus) -> Self {
        match s {
            PrizeStatus::None => PrizeStatusDto::None,
            PrizeStatus::Issued => PrizeStatusDto::Issued,
            PrizeStatus::Pending => PrizeStatusDto::Pending,
            PrizeStatus::AtStore => PrizeStatusDto::AtStore,
            PrizeStatus::NotIssued => PrizeStatusDto::NotIssued,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ShakeResultDto {
    pub campaign_id: uuid::Uuid,
    pub shake: ShakeDto,
    pub prize_status: PrizeStatusDto,
}

impl From<ShakeResult> for ShakeResultDto {
    fn from(r: ShakeResult) -> Self {
        Self { campaign_id: r.campaign_id.as_uuid(), shake: (&r.draw).into(), prize_status: r.prize_status.into() }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ShakeList {
    pub shakes: Vec<ShakeDto>,
}

/// A prize the member won in a period's draw.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MemberPrizeDto {
    /// 1 for the first winner drawn.
    pub rank: u32,
    pub prize: PrizeDto,
    /// A physical prize: when staff handed it over; absent while it waits at the store.
    pub handed_over_at: Option<DateTime<Utc>>,
}

/// A period the member took part in.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MemberPeriodDto {
    pub period_no: u32,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    /// `open`, `drawn` or `cancelled` (paid entries of a cancelled period are refunded).
    pub state: String,
    /// The member's tickets: entries, friends' visits (popularity) or paid shares (snatch).
    pub tickets: u32,
    /// Everyone's tickets in the period (while open: so far).
    pub period_tickets: u32,
    /// What the member won, once drawn; absent when they did not win.
    pub won: Option<MemberPrizeDto>,
}

impl From<&MemberPeriod> for MemberPeriodDto {
    fn from(p: &MemberPeriod) -> Self {
        Self {
            period_no: p.period_no,
            starts_at: p.starts_at,
            ends_at: p.ends_at,
            state: p.state.to_owned(),
            tickets: p.tickets,
            period_tickets: p.period_tickets,
            won: p.won.as_ref().map(|w| MemberPrizeDto {
                rank: w.rank,
                prize: (&w.prize).into(),
                handed_over_at: w.handed_over_at,
            }),
        }
    }
}

/// The member's entries and prizes, newest period first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MemberEntriesDto {
    pub periods: Vec<MemberPeriodDto>,
}

/// A page of campaigns.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CampaignPageQuery {
    /// The last campaign id of the previous page.
    pub after: Option<uuid::Uuid>,
    /// 1..=100, default 50.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}
