//! Campaigns: lotteries whose draws anyone can recompute from the events
//! (`schemas/draws/SPEC.md`, algorithm `wxcm-draw-v1`).
//!
//! One stream per campaign ([`Campaign`]). The framework every kind shares:
//! draft → scheduled → ongoing → ended, by time or by hand (terms editable
//! only while draft); participation limits per lifetime, per merchant day
//! (UTC+8) and per period, counted on this stream in the same decision that
//! records the participation, never outside it; a members-only option;
//! prizes: points, a coupon template, a physical item handed over once at
//! the store, or "thanks".
//!
//! Kinds implemented: [`CampaignKind::PeriodicLottery`] — which is also the
//! popularity lottery: periods, commitments and the ticket-weighted draw are
//! the same, only where tickets come from differs ([`TicketSource`]: a
//! member's own entries, or one per distinct friend who opens the member's
//! share link) — [`CampaignKind::ShakeLottery`], [`CampaignKind::Snatch`]
//! (1-yuan snatch, `snatch.rs`) and [`CampaignKind::Voting`] (`voting.rs`).
//!
//! Commit–reveal: the domain never generates a seed and never stores one
//! before its reveal. The application seals a CSPRNG seed at rest and records
//! only its commitment (`CampaignScheduled` for a shake lottery,
//! `CampaignPeriodOpened` for each period); the seed reaches the domain only
//! as a command argument — at a period's draw, at each shake, and at the
//! shake lottery's reveal — and is checked against the commitment there.
//! It appears in an event only in `CampaignPeriodDrawn` and
//! `CampaignShakeSeedRevealed`.
//!
//! Invariants (checked in `handle`, checked again in `apply`, see [`rules`]):
//! participations within every limit; a period drawn at most once, with a
//! seed that opens its commitment and the winners the draw function gives
//! for the frozen entrant list (apply recomputes them); never more prizes
//! than a slot's stock; a physical prize handed over once.
//!
//! What the application layer does around it: spend the entry's points on
//! the member ledger (the entry event records the cost; a cancelled period
//! lists its refunds), issue points and coupon prizes from the draw events,
//! run the scheduler (start, end, open the next period, draw at period end —
//! a second draw is refused, so two schedulers draw once), seal seeds, fetch
//! beacon values, and serve the odds in force ([`ShakeOdds`]).

mod aggregate;
pub mod draw;
mod periodic;
mod shake;
mod snatch;
#[cfg(test)]
mod snatch_tests;
#[cfg(test)]
mod tests;
mod voting;
#[cfg(test)]
mod voting_tests;

use std::fmt;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use aggregate::{
    AwardRef, Campaign, CampaignCommand, CampaignError, CampaignEvent, CampaignState, EntryRefund, Participation,
    PeriodWinner, PhysicalAward, Refusal, Status,
};
pub use draw::{BeaconValue, DrawSeed, EntrantsHash, SeedCommitment};
pub use periodic::{Period, PeriodEnd};
pub use shake::{ShakeAsk, ShakeBatch, ShakeDraw, ShakeOdds, SlotOdds};
pub use snatch::{
    Purchase, PurchaseId, PurchaseStatus, SharePayMethod, SharePayment, ShareRefund, SnatchBook, SnatchTerms,
    LATE_PAYMENTS_MAX, RESERVATION_MINUTES, SHARES_PER_PERIOD_MAX, SHARES_PER_PURCHASE_MAX, SHARE_PRICE_FEN,
};
pub use voting::{
    vote_rules, Ballot, ItemSubmitters, VoteError, VoteItem, VoteItemId, VoteItemStatus, VoteItemText, VotePeriod,
    VotingBoard, VotingTerms, APPROVAL_REWARD_POINTS_MAX, ITEMS_PER_MEMBER_MAX, VOTE_ITEMS_MAX,
};

use crate::coupon::TemplateId;
use crate::ids::{uuid_id, IdError};
use crate::{IdempotencyKey, MemberId, PointsAmount, TenantId};

/// Stable names of the campaign invariants, as `InvariantViolation::rule`.
pub mod rules {
    pub const EXISTS: &str = "campaign.exists";
    pub const CREATED_ONCE: &str = "campaign.created_once";
    /// Every change follows the lifecycle (terms edited only while draft, …).
    pub const TRANSITION: &str = "campaign.transition";
    /// Counts stated on an event are what the state gives.
    pub const COUNTS_AFTER: &str = "campaign.counts_after";
    /// A participation keeps its member within every limit.
    pub const WITHIN_LIMITS: &str = "campaign.within_limits";
    pub const PARTICIPANTS_MAX: &str = "campaign.participants_max";
    /// Periods are numbered 1, 2, … and never overlap.
    pub const PERIOD_ORDER: &str = "campaign.period_order";
    /// An entry goes to an open period, once per entry id.
    pub const ENTRY_OPEN_PERIOD: &str = "campaign.entry_open_period";
    /// A period is drawn or cancelled once, never both.
    pub const PERIOD_ENDS_ONCE: &str = "campaign.period_ends_once";
    /// A revealed seed opens the commitment recorded before the entries.
    pub const SEED_OPENS_COMMITMENT: &str = "campaign.seed_opens_commitment";
    /// The stated winners / roll / slot are what `wxcm-draw-v1` gives.
    pub const DRAW_RECOMPUTES: &str = "campaign.draw_recomputes";
    /// A prize slot never gives more than its stock.
    pub const WITHIN_STOCK: &str = "campaign.within_stock";
    /// A shake uses the member's next nonce and the table in force.
    pub const SHAKE_IN_ORDER: &str = "campaign.shake_in_order";
    /// A popularity ticket names its visitor and is the one ticket
    /// ([`EntryId::for_visit`]) of that visitor for that member and period;
    /// an entry of a periodic lottery names none.
    pub const TICKET_PER_VISITOR: &str = "campaign.ticket_per_visitor";
    /// A physical prize is handed over once, to an award that exists.
    pub const HANDED_OVER_ONCE: &str = "campaign.handed_over_once";
    /// A snatch's shares: reserved, then confirmed or released, once each;
    /// a late payment recorded once and only when no reservation stands.
    pub const SHARES_ONCE: &str = "campaign.shares_once";
    /// Never more shares reserved and sold than N, or held by a member than allowed.
    pub const WITHIN_SHARES: &str = "campaign.within_shares";
}

/// Ceiling of every participation limit (lifetime, per day, per period).
pub const PARTICIPATIONS_MAX: u32 = 1_000;
/// Members one campaign keeps participation counts for; past it new
/// participants are refused (a bigger campaign needs per-member streams).
pub const PARTICIPANTS_MAX: usize = 100_000;
/// Entries one period holds.
pub const ENTRIES_PER_PERIOD_MAX: usize = 100_000;
/// Periods one campaign may open (a year of daily periods and some).
pub const PERIODS_MAX: u32 = 400;
/// Prize tiers of a periodic lottery.
pub const TIERS_MAX: usize = 10;
/// Slots of a shake lottery's prize table (`schemas/draws/SPEC.md` §7).
pub const SLOTS_MAX: usize = 32;
/// A slot's weight ceiling.
pub const WEIGHT_MAX: u32 = 1_000_000;
/// A prize slot's stock ceiling.
pub const STOCK_MAX: u32 = 1_000_000;
/// Prizes one member may win of one shake lottery (K's ceiling).
pub const PRIZES_PER_MEMBER_MAX: u32 = 100;
/// Shakes one decision (one event) may carry.
pub const SHAKES_PER_EVENT_MAX: usize = 256;
/// Longest campaign.
pub const CAMPAIGN_DAYS_MAX: i64 = 366;
/// Highest points one entry of a periodic lottery may cost.
pub const ENTRY_COST_POINTS_MAX: i64 = 1_000_000;

/// Merchants run on China Standard Time (UTC+8, no daylight saving): a
/// "day" is a merchant day.
const MERCHANT_UTC_OFFSET_HOURS: i64 = 8;

/// The merchant day (UTC+8) of an instant.
pub fn merchant_day(at: DateTime<Utc>) -> NaiveDate {
    (at + Duration::hours(MERCHANT_UTC_OFFSET_HOURS)).date_naive()
}

/// Midnight (UTC+8) starting `day`, as an instant.
pub fn merchant_midnight(day: NaiveDate) -> Option<DateTime<Utc>> {
    Some(day.and_hms_opt(0, 0, 0)?.and_utc() - Duration::hours(MERCHANT_UTC_OFFSET_HOURS))
}

uuid_id!(
    /// A campaign.
    CampaignId,
    "campaign id"
);
uuid_id!(
    /// One entry into a period of a periodic lottery.
    EntryId,
    "campaign entry id"
);

const ENTRY_NAMESPACE: Uuid = Uuid::from_u128(0x43a1_7d20_5b9e_4f61_8c3a_e2d4_19f0_7b56);

impl EntryId {
    /// The entry a member's request makes: derived from its idempotency key,
    /// so a repeated request names the same entry (which the period refuses
    /// to record twice).
    pub fn for_request(tenant: &TenantId, campaign: CampaignId, member: MemberId, key: &IdempotencyKey) -> Self {
        let name = format!("entry\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}", tenant.as_str(), campaign, member, key.as_str());
        Self(Uuid::new_v5(&ENTRY_NAMESPACE, name.as_bytes()))
    }

    /// The ticket a friend's visit gives a member in a popularity lottery:
    /// one per (period, member, visitor), so a repeated visit names the same
    /// ticket, which the period records once. Auditors recompute it
    /// (`schemas/draws/SPEC.md` §3, "Popularity lotteries").
    pub fn for_visit(
        tenant: &TenantId,
        campaign: CampaignId,
        period_no: u32,
        member: MemberId,
        visitor: &crate::OpenId,
    ) -> Self {
        let name = format!(
            "visit\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}",
            tenant.as_str(),
            campaign,
            period_no,
            member,
            visitor.as_str()
        );
        Self(Uuid::new_v5(&ENTRY_NAMESPACE, name.as_bytes()))
    }
}

/// A short visible text: a campaign's name, a physical prize's item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "String", into = "String")]
#[schemars(extend(
    "minLength" = 1,
    "maxLength" = 64,
    "pattern" = "^[^\\x00-\\x1F\\x7F-\\x9F]*[^\\s\\x00-\\x1F\\x7F-\\x9F][^\\x00-\\x1F\\x7F-\\x9F]*$"
))]
pub struct CampaignText(String);

impl CampaignText {
    pub const LEN_MAX: usize = 64;
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let len = s.chars().count();
        if len == 0 || len > Self::LEN_MAX {
            return Err(IdError::Length { what: "campaign text", min: 1, max: Self::LEN_MAX, len });
        }
        if s.chars().any(char::is_control) || s.trim().is_empty() {
            return Err(IdError::Charset { what: "campaign text", allowed: "visible text" });
        }
        Ok(Self(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for CampaignText {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(&s)
    }
}

impl From<CampaignText> for String {
    fn from(t: CampaignText) -> String {
        t.0
    }
}

impl fmt::Display for CampaignText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a winner gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Prize {
    /// Points granted on the member ledger.
    Points { points: PointsAmount },
    /// A coupon of this template, issued as an operator grant.
    Coupon { template_id: TemplateId },
    /// An item claimed at the store; staff hand it over once.
    Physical { item: CampaignText },
    /// No prize ("thank you for taking part"): a slot of its own in a shake
    /// table, never what a depleted prize turns into.
    Thanks,
}

impl Prize {
    pub fn is_thanks(&self) -> bool {
        matches!(self, Prize::Thanks)
    }
}

/// How often a member may take part (entries or shakes); `None`: no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Over the whole campaign.
    pub lifetime: Option<u32>,
    /// Per merchant day (UTC+8).
    pub per_day: Option<u32>,
    /// Per period (periodic lotteries only).
    pub per_period: Option<u32>,
}

/// How a periodic lottery's periods are cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Cycle {
    /// One period per merchant day (UTC+8), clipped to the campaign.
    Daily,
    /// One period per merchant week (Monday 00:00 UTC+8), clipped to the campaign.
    Weekly,
    /// Periods opened by hand with any window inside the campaign.
    Manual,
    /// One period spanning the whole campaign, drawn at its end.
    WholeCampaign,
}

/// `count` winners of a periodic draw get `prize`; tiers go by rank in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PrizeTier {
    pub prize: Prize,
    pub count: u32,
}

/// Where a periodic lottery's tickets come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TicketSource {
    /// The member enters (a periodic lottery); each entry is a ticket.
    #[default]
    Entries,
    /// Each distinct friend (openid) who opens the member's share link gives
    /// the member one ticket per period (a popularity lottery); the member's
    /// own visits and repeated visits never count.
    FriendVisits,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PeriodicTerms {
    pub cycle: Cycle,
    /// Absent in campaigns created before popularity lotteries: entries.
    #[serde(default)]
    pub tickets: TicketSource,
    /// Points one entry costs (`None`: free).
    pub entry_cost: Option<PointsAmount>,
    /// Distinct members one period accepts.
    pub entrants_max: u32,
    pub tiers: Vec<PrizeTier>,
}

impl PeriodicTerms {
    /// Winners each period draws (N).
    pub fn winners(&self) -> u32 {
        self.tiers.iter().map(|t| t.count).sum()
    }

    /// The prize of the winner of `rank` (1-based).
    pub fn prize_of_rank(&self, rank: u32) -> Option<&Prize> {
        let mut last = 0u32;
        for tier in &self.tiers {
            last = last.saturating_add(tier.count);
            if rank <= last {
                return Some(&tier.prize);
            }
        }
        None
    }
}

/// One slot of a shake table: a prize (with its stock) or "thanks" (no stock).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShakeSlot {
    pub prize: Prize,
    pub weight: u32,
    /// Units to give: required for a prize, absent for "thanks".
    pub stock: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShakeTerms {
    /// The table in its canonical order (`schemas/draws/SPEC.md` §6).
    pub slots: Vec<ShakeSlot>,
    /// K: prizes (not "thanks") one member may win.
    pub prizes_per_member_max: u32,
}

/// A campaign kind with its own terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CampaignKind {
    PeriodicLottery(PeriodicTerms),
    ShakeLottery(ShakeTerms),
    /// 1-yuan snatch (`snatch.rs`).
    Snatch(SnatchTerms),
    Voting(VotingTerms),
}

impl CampaignKind {
    pub fn name(&self) -> &'static str {
        match self {
            CampaignKind::PeriodicLottery(PeriodicTerms { tickets: TicketSource::Entries, .. }) => "periodic_lottery",
            CampaignKind::PeriodicLottery(PeriodicTerms { tickets: TicketSource::FriendVisits, .. }) => {
                "popularity_lottery"
            }
            CampaignKind::ShakeLottery(_) => "shake_lottery",
            CampaignKind::Snatch(_) => "snatch",
            CampaignKind::Voting(_) => "voting",
        }
    }

    /// A periodic lottery whose tickets are friends' visits to members' share links.
    pub fn is_popularity(&self) -> bool {
        matches!(self, CampaignKind::PeriodicLottery(t) if t.tickets == TicketSource::FriendVisits)
    }
}

/// Everything an operator sets while the campaign is a draft.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignTerms {
    pub name: CampaignText,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    /// Only card-holding members may take part.
    pub members_only: bool,
    pub limits: Limits,
    pub kind: CampaignKind,
}

/// Why terms are refused (a stable text for the API's 422).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidTerms(pub &'static str);

fn limit_ok(limit: Option<u32>) -> bool {
    limit.is_none_or(|l| (1..=PARTICIPATIONS_MAX).contains(&l))
}

impl CampaignTerms {
    pub fn check(&self) -> Result<(), InvalidTerms> {
        if self.starts_at >= self.ends_at {
            return Err(InvalidTerms("the campaign must end after it starts"));
        }
        if self.ends_at - self.starts_at > Duration::days(CAMPAIGN_DAYS_MAX) {
            return Err(InvalidTerms("a campaign lasts at most 366 days"));
        }
        let Limits { lifetime, per_day, per_period } = self.limits;
        if !(limit_ok(lifetime) && limit_ok(per_day) && limit_ok(per_period)) {
            return Err(InvalidTerms("participation limits must be 1..=1000"));
        }
        match &self.kind {
            CampaignKind::PeriodicLottery(terms) => check_periodic(terms),
            CampaignKind::ShakeLottery(terms) => {
                if per_period.is_some() {
                    return Err(InvalidTerms("a shake lottery has no periods: use lifetime or per_day"));
                }
                check_shake(terms)
            }
            CampaignKind::Snatch(terms) => {
                if lifetime.is_some() || per_day.is_some() || per_period.is_some() {
                    return Err(InvalidTerms("a snatch limits shares with shares_per_member_max, not limits"));
                }
                snatch::check_snatch(terms)
            }
            CampaignKind::Voting(terms) => voting::check_voting(terms, &self.limits),
        }
    }
}

fn check_periodic(terms: &PeriodicTerms) -> Result<(), InvalidTerms> {
    if terms.tiers.is_empty() || terms.tiers.len() > TIERS_MAX {
        return Err(InvalidTerms("a periodic lottery has 1..=10 prize tiers"));
    }
    for tier in &terms.tiers {
        if tier.prize.is_thanks() {
            return Err(InvalidTerms("a periodic lottery's tiers are prizes, not thanks"));
        }
        if tier.count == 0 {
            return Err(InvalidTerms("a prize tier has at least one winner"));
        }
    }
    let winners: u64 = terms.tiers.iter().map(|t| u64::from(t.count)).sum();
    if winners > u64::from(draw::WINNERS_MAX) {
        return Err(InvalidTerms("a period draws at most 1000 winners"));
    }
    if terms.entrants_max == 0 || terms.entrants_max as usize > draw::ENTRANTS_MAX {
        return Err(InvalidTerms("entrants_max must be 1..=100000"));
    }
    if terms.tickets == TicketSource::FriendVisits && terms.entry_cost.is_some() {
        return Err(InvalidTerms("a popularity lottery's tickets come from friends' visits: no entry cost"));
    }
    if terms.entry_cost.is_some_and(|c| c.get() > ENTRY_COST_POINTS_MAX) {
        return Err(InvalidTerms("an entry costs at most 1000000 points"));
    }
    Ok(())
}

fn check_shake(terms: &ShakeTerms) -> Result<(), InvalidTerms> {
    if terms.slots.is_empty() || terms.slots.len() > SLOTS_MAX {
        return Err(InvalidTerms("a shake table has 1..=32 slots"));
    }
    for slot in &terms.slots {
        if slot.weight == 0 || slot.weight > WEIGHT_MAX {
            return Err(InvalidTerms("slot weights must be 1..=1000000"));
        }
        match (slot.prize.is_thanks(), slot.stock) {
            (true, None) => {}
            (true, Some(_)) => return Err(InvalidTerms("a thanks slot has no stock")),
            (false, Some(stock)) if (1..=STOCK_MAX).contains(&stock) => {}
            (false, _) => return Err(InvalidTerms("a prize slot has a stock of 1..=1000000")),
        }
    }
    if terms.slots.iter().all(|s| s.prize.is_thanks()) {
        return Err(InvalidTerms("a shake table has at least one prize slot"));
    }
    if terms.prizes_per_member_max == 0 || terms.prizes_per_member_max > PRIZES_PER_MEMBER_MAX {
        return Err(InvalidTerms("prizes_per_member_max must be 1..=100"));
    }
    Ok(())
}

/// An external randomness beacon round named before entries close.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BeaconRound {
    /// Which beacon (`drand-quicknet`, `drand-mainnet`, `nist`).
    pub source: CampaignText,
    pub round: u64,
}
