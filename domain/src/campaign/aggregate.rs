//! The campaign aggregate: the lifecycle every kind shares, participation
//! counts, and dispatch to the kinds (`periodic`, `shake`).

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::draw::{BeaconValue, DrawError, DrawSeed, EntrantsHash, SeedCommitment};
use super::periodic::Period;
use super::shake::{ShakeAsk, ShakeDraw};
use super::snatch::{PurchaseId, SharePayMethod, SharePayment, ShareRefund, SnatchBook};
use super::voting::{VoteError, VoteItemId, VoteItemText, VotingBoard};
use super::{
    rules, BeaconRound, CampaignId, CampaignKind, CampaignTerms, EntryId, InvalidTerms, Limits, Prize,
    PARTICIPANTS_MAX, SHAKES_PER_EVENT_MAX,
};
use crate::invariant::{ensure, ensure_figure};
use crate::{Actor, DomainEventMeta, EventSourced, InvariantViolation, MemberId, OpenId, PointsAmount, TenantId};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CampaignError {
    #[error("campaign not found")]
    NotFound,
    #[error("campaign already exists")]
    AlreadyExists,
    #[error("invalid campaign terms: {0}")]
    InvalidTerms(InvalidTerms),
    #[error("the campaign is {0:?}, not a draft: its terms are fixed")]
    NotDraft(Status),
    #[error("the campaign is {0:?}")]
    WrongStatus(Status),
    #[error("this is not a {0}")]
    WrongKind(&'static str),
    #[error("the campaign has already ended")]
    AlreadyEnded,
    #[error("a shake lottery commits to its seed when scheduled")]
    CommitmentRequired,
    #[error("a periodic lottery commits to a seed per period, not when scheduled")]
    CommitmentPerPeriod,
    #[error("the seed does not open the commitment")]
    SeedMismatch,
    #[error("period {0} does not exist")]
    PeriodNotFound(u32),
    #[error("the next period is number {expected}")]
    PeriodOutOfOrder { expected: u32 },
    #[error("period {0} already exists with other terms")]
    PeriodConflict(u32),
    #[error("invalid period window: {0}")]
    InvalidPeriod(&'static str),
    #[error("period {0} is not accepting entries")]
    PeriodNotOpen(u32),
    #[error("period {0} ends at {1}: it cannot be drawn before")]
    PeriodStillOpen(u32, DateTime<Utc>),
    #[error("period {0} was already drawn or cancelled")]
    PeriodClosed(u32),
    #[error("period {0} names a beacon round: its value is needed")]
    BeaconValueRequired(u32),
    #[error("period {0} names no beacon round")]
    UnexpectedBeacon(u32),
    #[error("entry {0} was already recorded differently")]
    EntryConflict(EntryId),
    #[error("{0}")]
    Refused(Refusal),
    #[error("a shake decision carries 1..={SHAKES_PER_EVENT_MAX} shakes")]
    BatchSize,
    #[error("the shake seed can be revealed only after the campaign ended")]
    NotEnded,
    #[error("the seed was already revealed")]
    AlreadyRevealed,
    #[error("no physical prize {0}")]
    AwardNotFound(String),
    #[error("prize {0} was already handed over")]
    AlreadyHandedOver(String),
    #[error("draw: {0}")]
    Draw(DrawError),
    #[error("a purchase asks for 1 to the campaign's maximum of shares, not {0}")]
    InvalidQuantity(u32),
    #[error("purchase {0} was already made differently")]
    PurchaseConflict(PurchaseId),
    #[error("only {0} shares are left in this period")]
    SharesLeft(u32),
    #[error("the payment for purchase {0} is not its price or method")]
    PaymentMismatch(PurchaseId),
    #[error("{0}")]
    Vote(VoteError),
}

/// Why one participation (an entry or a shake) is refused; the rest of a
/// shake batch goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    #[error("the campaign is not ongoing")]
    NotOngoing,
    #[error("only card-holding members may take part")]
    MembersOnly,
    #[error("the member has taken part as often as the campaign allows")]
    LifetimeLimitReached,
    #[error("the member has taken part as often as allowed today")]
    DailyLimitReached,
    #[error("the member has entered this period as often as allowed")]
    PeriodLimitReached,
    #[error("the campaign has as many participants as it can count")]
    TooManyParticipants,
    #[error("the period has its maximum of entrants")]
    PeriodFull,
    #[error("this chance was already used")]
    ChanceUsed,
    #[error("this is not the member's next chance")]
    ChanceOutOfOrder,
    #[error("the member has won as many prizes as allowed")]
    PrizeLimitReached,
    #[error("every prize has been given")]
    PrizesExhausted,
    #[error("a member's own visit gives no ticket")]
    SelfVisit,
}

impl Refusal {
    /// Stable name, as API error codes and report keys use it.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::NotOngoing => "not_ongoing",
            Refusal::MembersOnly => "members_only",
            Refusal::LifetimeLimitReached => "lifetime_limit_reached",
            Refusal::DailyLimitReached => "daily_limit_reached",
            Refusal::PeriodLimitReached => "period_limit_reached",
            Refusal::TooManyParticipants => "too_many_participants",
            Refusal::PeriodFull => "period_full",
            Refusal::ChanceUsed => "chance_used",
            Refusal::ChanceOutOfOrder => "chance_out_of_order",
            Refusal::PrizeLimitReached => "prize_limit_reached",
            Refusal::PrizesExhausted => "prizes_exhausted",
            Refusal::SelfVisit => "self_visit",
        }
    }
}

impl From<Refusal> for CampaignError {
    fn from(r: Refusal) -> Self {
        CampaignError::Refused(r)
    }
}

impl From<DrawError> for CampaignError {
    fn from(e: DrawError) -> Self {
        CampaignError::Draw(e)
    }
}

/// Where a physical prize was won.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AwardRef {
    /// The winner of `rank` in period `period_no`.
    Period { period_no: u32, rank: u32 },
    /// The member's `nonce`-th shake.
    Shake { member_id: MemberId, nonce: u32 },
}

impl AwardRef {
    /// The state's key of this award (JSON maps need string keys).
    pub fn key(&self) -> String {
        match self {
            AwardRef::Period { period_no, rank } => format!("period:{period_no}:rank:{rank}"),
            AwardRef::Shake { member_id, nonce } => format!("shake:{member_id}:{nonce}"),
        }
    }
}

/// A physical prize won and waiting at the store (or handed over).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhysicalAward {
    pub member_id: MemberId,
    pub item: super::CampaignText,
    pub handed_over_at: Option<DateTime<Utc>>,
}

/// The winner of one rank of a periodic draw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PeriodWinner {
    pub rank: u32,
    pub member_id: MemberId,
    pub prize: Prize,
}

/// Points to give back for an entry of a cancelled period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EntryRefund {
    pub entry_id: EntryId,
    pub member_id: MemberId,
    pub points: PointsAmount,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum CampaignCommand {
    Create {
        campaign_id: CampaignId,
        tenant_id: TenantId,
        terms: CampaignTerms,
        actor: Actor,
    },
    /// Replaces the terms; only while draft.
    Edit {
        terms: CampaignTerms,
        actor: Actor,
    },
    /// Fixes the terms. A shake lottery commits to its seed here.
    Schedule {
        commitment: Option<SeedCommitment>,
        actor: Actor,
    },
    /// By the scheduler at `starts_at`, or by hand earlier.
    Start {
        actor: Actor,
    },
    /// By the scheduler at `ends_at`, or by hand earlier.
    End {
        actor: Actor,
    },
    OpenPeriod {
        period_no: u32,
        starts_at: DateTime<Utc>,
        ends_at: DateTime<Utc>,
        commitment: SeedCommitment,
        beacon: Option<BeaconRound>,
        actor: Actor,
    },
    Enter {
        entry_id: EntryId,
        member_id: MemberId,
        period_no: u32,
        /// The member holds a card (read from the member stream by the caller).
        card_member: bool,
    },
    /// A friend's visit through `member_id`'s share link (popularity
    /// lotteries): one ticket per distinct visitor and period.
    GrantTicket {
        member_id: MemberId,
        period_no: u32,
        visitor_openid: OpenId,
        /// The member's own openids (read from the member stream by the
        /// caller): a visit by one of them is the member's own.
        member_openids: Vec<OpenId>,
        card_member: bool,
    },
    /// The seed is unsealed by the caller; checked against the commitment.
    DrawPeriod {
        period_no: u32,
        seed: DrawSeed,
        beacon_value: Option<BeaconValue>,
        actor: Actor,
    },
    CancelPeriod {
        period_no: u32,
        actor: Actor,
    },
    /// Decides shakes in order (see [`Campaign::decide_shakes`]).
    Shake {
        seed: DrawSeed,
        asks: Vec<ShakeAsk>,
    },
    RevealShakeSeed {
        seed: DrawSeed,
        actor: Actor,
    },
    HandOverPrize {
        award: AwardRef,
        actor: Actor,
    },
    /// A snatch purchase reserves shares of the open period.
    ReserveShares {
        purchase_id: PurchaseId,
        member_id: MemberId,
        quantity: u32,
        method: SharePayMethod,
        card_member: bool,
    },
    /// A reservation past its expiry gives its shares back.
    ReleaseShares {
        purchase_id: PurchaseId,
    },
    /// A purchase's payment: confirms the shares (late: to be refunded).
    /// `seed` (the open period's, unsealed) and `next_commitment` are used
    /// when this sells the period out: the draw and the next period.
    ConfirmShares {
        purchase_id: PurchaseId,
        member_id: MemberId,
        payment: SharePayment,
        seed: DrawSeed,
        next_commitment: SeedCommitment,
    },
    /// An item of a voting campaign, by an operator (`member_id` absent) or a member.
    SubmitVoteItem {
        item_id: VoteItemId,
        title: super::CampaignText,
        description: Option<VoteItemText>,
        member_id: Option<MemberId>,
        /// The member holds a card (read from the member stream by the caller).
        card_member: bool,
        actor: Actor,
    },
    ApproveVoteItem {
        item_id: VoteItemId,
        actor: Actor,
    },
    RejectVoteItem {
        item_id: VoteItemId,
        reason: super::CampaignText,
        actor: Actor,
    },
    CastVote {
        member_id: MemberId,
        item_id: VoteItemId,
        /// The member holds a card (read from the member stream by the caller).
        card_member: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum CampaignEvent {
    CampaignCreated {
        campaign_id: CampaignId,
        tenant_id: TenantId,
        terms: CampaignTerms,
        actor: Actor,
        created_at: DateTime<Utc>,
    },
    CampaignEdited {
        terms: CampaignTerms,
        actor: Actor,
        edited_at: DateTime<Utc>,
    },
    CampaignScheduled {
        /// SHA-256 of the shake lottery's seed (`None` for a periodic lottery,
        /// whose periods commit one each).
        commitment: Option<SeedCommitment>,
        actor: Actor,
        scheduled_at: DateTime<Utc>,
    },
    CampaignStarted {
        actor: Actor,
        started_at: DateTime<Utc>,
    },
    CampaignEnded {
        actor: Actor,
        ended_at: DateTime<Utc>,
    },
    CampaignPeriodOpened {
        period_no: u32,
        starts_at: DateTime<Utc>,
        ends_at: DateTime<Utc>,
        /// SHA-256 of the period's seed, recorded before its first entry.
        commitment: SeedCommitment,
        beacon: Option<BeaconRound>,
        actor: Actor,
        opened_at: DateTime<Utc>,
    },
    CampaignEntryRecorded {
        entry_id: EntryId,
        member_id: MemberId,
        period_no: u32,
        /// Points the entry costs (the application spends them on the member ledger).
        cost_points: Option<PointsAmount>,
        /// The merchant day (UTC+8) the per-day limit counts in.
        merchant_day: NaiveDate,
        /// The member's participations in the campaign, this one included.
        member_total_after: u32,
        member_day_after: u32,
        /// The member's entries (tickets) in the period, this one included.
        member_period_after: u32,
        /// Entries and distinct entrants of the period, this one included.
        period_entries_after: u32,
        period_entrants_after: u32,
        entered_at: DateTime<Utc>,
        /// A popularity ticket's friend (absent for a periodic lottery's entry).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        visitor_openid: Option<OpenId>,
    },
    CampaignPeriodDrawn {
        period_no: u32,
        /// `wxcm-draw-v1`.
        algorithm: String,
        /// The revealed seed: SHA-256 of it is the period's commitment.
        seed: DrawSeed,
        beacon: Option<BeaconRound>,
        beacon_value: Option<BeaconValue>,
        /// Hash of the frozen entrant list (`schemas/draws/SPEC.md` §3).
        entrants_hash: EntrantsHash,
        entrants: u32,
        total_tickets: u64,
        /// In rank order (rank 1 first), with the prize of each rank.
        winners: Vec<PeriodWinner>,
        actor: Actor,
        drawn_at: DateTime<Utc>,
    },
    CampaignPeriodCancelled {
        period_no: u32,
        /// Every entry that cost points, to give back.
        refunds: Vec<EntryRefund>,
        actor: Actor,
        cancelled_at: DateTime<Utc>,
    },
    CampaignShakesDrawn {
        draws: Vec<ShakeDraw>,
        drawn_at: DateTime<Utc>,
    },
    CampaignShakeSeedRevealed {
        /// `wxcm-draw-v1`.
        algorithm: String,
        seed: DrawSeed,
        actor: Actor,
        revealed_at: DateTime<Utc>,
    },
    CampaignPrizeHandedOver {
        award: AwardRef,
        member_id: MemberId,
        item: super::CampaignText,
        actor: Actor,
        handed_over_at: DateTime<Utc>,
    },
    SnatchSharesReserved {
        purchase_id: PurchaseId,
        member_id: MemberId,
        period_no: u32,
        quantity: u32,
        /// The shares' price (1 yuan each), to pay before `expires_at`.
        amount_fen: crate::AmountFen,
        method: SharePayMethod,
        /// The member's shares in the period, reserved or paid, this purchase included.
        member_held_after: u32,
        /// The period's shares reserved or sold, this purchase included (≤ N).
        period_taken_after: u32,
        expires_at: DateTime<Utc>,
        reserved_at: DateTime<Utc>,
    },
    SnatchSharesReleased {
        purchase_id: PurchaseId,
        member_id: MemberId,
        period_no: u32,
        quantity: u32,
        period_taken_after: u32,
        released_at: DateTime<Utc>,
    },
    SnatchSharesConfirmed {
        purchase_id: PurchaseId,
        member_id: MemberId,
        period_no: u32,
        quantity: u32,
        payment: SharePayment,
        /// The member's paid shares (tickets) in the period, these included.
        member_shares_after: u32,
        /// The period's paid shares, these included (N: sold out, drawn in the same append).
        period_sold_after: u32,
        confirmed_at: DateTime<Utc>,
    },
    /// A payment for a purchase whose reservation was gone: refunded, never honoured.
    SnatchPaymentArrivedLate {
        purchase_id: PurchaseId,
        member_id: MemberId,
        payment: SharePayment,
        /// Shares of a reservation still counted that this gives back (0 when released before).
        released_shares: u32,
        recorded_at: DateTime<Utc>,
    },
    /// A snatch period not sold out when the campaign ended: never drawn,
    /// every paid purchase refunded.
    SnatchPeriodCancelled {
        period_no: u32,
        refunds: Vec<ShareRefund>,
        cancelled_at: DateTime<Utc>,
    },
    CampaignVoteItemSubmitted {
        item_id: VoteItemId,
        title: super::CampaignText,
        description: Option<VoteItemText>,
        /// The member who submitted it (absent: an operator).
        member_id: Option<MemberId>,
        /// An operator's item is approved as it is submitted.
        approved: bool,
        /// Items of the campaign, this one included.
        items_after: u32,
        actor: Actor,
        submitted_at: DateTime<Utc>,
    },
    CampaignVoteItemApproved {
        item_id: VoteItemId,
        member_id: Option<MemberId>,
        /// Points the member earns (the terms' reward; granted once by the application).
        reward: Option<PointsAmount>,
        actor: Actor,
        approved_at: DateTime<Utc>,
    },
    CampaignVoteItemRejected {
        item_id: VoteItemId,
        reason: super::CampaignText,
        actor: Actor,
        rejected_at: DateTime<Utc>,
    },
    CampaignVoteCast {
        item_id: VoteItemId,
        member_id: MemberId,
        /// The merchant day (UTC+8) the per-day limit and a daily vote period count in.
        merchant_day: NaiveDate,
        /// The member's votes in the campaign and on the day, this one included.
        member_total_after: u32,
        member_day_after: u32,
        /// The item's votes, this one included.
        item_votes_after: u32,
        voted_at: DateTime<Utc>,
    },
}

impl DomainEventMeta for CampaignEvent {
    fn event_type(&self) -> &'static str {
        match self {
            CampaignEvent::CampaignCreated { .. } => "CampaignCreated",
            CampaignEvent::CampaignEdited { .. } => "CampaignEdited",
            CampaignEvent::CampaignScheduled { .. } => "CampaignScheduled",
            CampaignEvent::CampaignStarted { .. } => "CampaignStarted",
            CampaignEvent::CampaignEnded { .. } => "CampaignEnded",
            CampaignEvent::CampaignPeriodOpened { .. } => "CampaignPeriodOpened",
            CampaignEvent::CampaignEntryRecorded { .. } => "CampaignEntryRecorded",
            CampaignEvent::CampaignPeriodDrawn { .. } => "CampaignPeriodDrawn",
            CampaignEvent::CampaignPeriodCancelled { .. } => "CampaignPeriodCancelled",
            CampaignEvent::CampaignShakesDrawn { .. } => "CampaignShakesDrawn",
            CampaignEvent::CampaignShakeSeedRevealed { .. } => "CampaignShakeSeedRevealed",
            CampaignEvent::CampaignPrizeHandedOver { .. } => "CampaignPrizeHandedOver",
            CampaignEvent::SnatchSharesReserved { .. } => "SnatchSharesReserved",
            CampaignEvent::SnatchSharesReleased { .. } => "SnatchSharesReleased",
            CampaignEvent::SnatchSharesConfirmed { .. } => "SnatchSharesConfirmed",
            CampaignEvent::SnatchPaymentArrivedLate { .. } => "SnatchPaymentArrivedLate",
            CampaignEvent::SnatchPeriodCancelled { .. } => "SnatchPeriodCancelled",
            CampaignEvent::CampaignVoteItemSubmitted { .. } => "CampaignVoteItemSubmitted",
            CampaignEvent::CampaignVoteItemApproved { .. } => "CampaignVoteItemApproved",
            CampaignEvent::CampaignVoteItemRejected { .. } => "CampaignVoteItemRejected",
            CampaignEvent::CampaignVoteCast { .. } => "CampaignVoteCast",
        }
    }
    fn event_version(&self) -> &'static str {
        "1"
    }
}

/// The recorded lifecycle step. What a participation sees is
/// [`CampaignState::phase_at`], which also follows the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Draft,
    Scheduled,
    Ongoing,
    Ended,
}

/// One member's participations in the campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Participation {
    /// Entries or shakes in the whole campaign (a shake's nonce is this count).
    pub total: u32,
    /// The merchant day of the last participation and the count in it.
    pub day: NaiveDate,
    pub day_count: u32,
    /// Prizes won (not "thanks").
    pub prizes: u32,
}

impl Participation {
    /// The counts after one more participation on `day` (`None` past u32).
    pub(super) fn after(before: Option<&Participation>, day: NaiveDate) -> Option<Participation> {
        Some(match before {
            None => Participation { total: 1, day, day_count: 1, prizes: 0 },
            Some(p) => Participation {
                total: p.total.checked_add(1)?,
                day,
                day_count: if p.day == day { p.day_count.checked_add(1)? } else { 1 },
                prizes: p.prizes,
            },
        })
    }

    pub(super) fn within(&self, limits: &Limits) -> Result<(), Refusal> {
        if limits.lifetime.is_some_and(|l| self.total > l) {
            return Err(Refusal::LifetimeLimitReached);
        }
        if limits.per_day.is_some_and(|l| self.day_count > l) {
            return Err(Refusal::DailyLimitReached);
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Campaign {
    pub created: Option<CampaignState>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignState {
    pub campaign_id: CampaignId,
    pub tenant_id: TenantId,
    pub terms: CampaignTerms,
    pub status: Status,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    /// A shake lottery's seed commitment (from scheduling).
    pub commitment: Option<SeedCommitment>,
    /// A shake lottery's seed, once revealed after the end.
    pub revealed_seed: Option<DrawSeed>,
    pub participations: BTreeMap<MemberId, Participation>,
    /// Entries (periodic) or shakes (shake) recorded.
    pub participations_total: u64,
    /// Prizes won (not "thanks").
    pub winners_total: u64,
    pub periods: BTreeMap<u32, Period>,
    /// A shake lottery's stock left per slot (`None`: a thanks slot).
    pub stock_left: Vec<Option<u32>>,
    /// A shake lottery's prize table version (1 when scheduled, +1 per depleted slot).
    pub table_version: u32,
    /// Physical prizes by [`AwardRef::key`].
    pub awards: BTreeMap<String, PhysicalAward>,
    /// A snatch's open period: purchases and counts.
    #[serde(default)]
    pub snatch: SnatchBook,
    /// A voting campaign's items and ballots.
    #[serde(default)]
    pub voting: VotingBoard,
}

impl CampaignState {
    /// The step a participation at `now` meets: the recorded status, moved
    /// on by the clock (a campaign past `ends_at` takes no more entries even
    /// before the scheduler records its end; one past `starts_at` takes them
    /// before the scheduler records its start).
    pub fn phase_at(&self, now: DateTime<Utc>) -> Status {
        match self.status {
            Status::Draft | Status::Ended => self.status,
            _ if now >= self.terms.ends_at => Status::Ended,
            Status::Ongoing => Status::Ongoing,
            Status::Scheduled if now >= self.terms.starts_at => Status::Ongoing,
            Status::Scheduled => Status::Scheduled,
        }
    }

    /// Counters of the per-campaign report.
    pub fn participants(&self) -> usize {
        self.participations.len()
    }

    /// The common admission of a participation at `now`, before the kind's
    /// own checks: ongoing, members-only, room for a new participant, and the
    /// counts after it within the lifetime and daily limits.
    pub(super) fn admit(
        &self,
        before: Option<&Participation>,
        participants: usize,
        card_member: bool,
        now: DateTime<Utc>,
    ) -> Result<Participation, Refusal> {
        if self.phase_at(now) != Status::Ongoing {
            return Err(Refusal::NotOngoing);
        }
        if self.terms.members_only && !card_member {
            return Err(Refusal::MembersOnly);
        }
        if before.is_none() && participants >= PARTICIPANTS_MAX {
            return Err(Refusal::TooManyParticipants);
        }
        let after = Participation::after(before, super::merchant_day(now)).ok_or(Refusal::LifetimeLimitReached)?;
        after.within(&self.terms.limits)?;
        Ok(after)
    }

    /// Records a participation decided on `day` and checks what the event
    /// states about it against the state.
    pub(super) fn count_participation(
        &mut self,
        member: MemberId,
        day: NaiveDate,
        total_after: u32,
        day_after: u32,
    ) -> Result<Participation, InvariantViolation> {
        let before = self.participations.get(&member);
        ensure(before.is_some() || self.participations.len() < PARTICIPANTS_MAX, rules::PARTICIPANTS_MAX, || {
            format!("a participant past {PARTICIPANTS_MAX}")
        })?;
        let after = Participation::after(before, day)
            .ok_or_else(|| InvariantViolation::new(rules::COUNTS_AFTER, "participation count overflow"))?;
        ensure_figure(rules::COUNTS_AFTER, "member_total_after", total_after, after.total)?;
        ensure_figure(rules::COUNTS_AFTER, "member_day_after", day_after, after.day_count)?;
        ensure(after.within(&self.terms.limits).is_ok(), rules::WITHIN_LIMITS, || {
            format!("member {member} at {} in all and {} on {day}", after.total, after.day_count)
        })?;
        self.participations.insert(member, after);
        self.participations_total += 1;
        Ok(after)
    }

    pub(super) fn periodic(&self) -> Result<&super::PeriodicTerms, CampaignError> {
        match &self.terms.kind {
            CampaignKind::PeriodicLottery(terms) => Ok(terms),
            CampaignKind::ShakeLottery(_) | CampaignKind::Snatch(_) | CampaignKind::Voting(_) => {
                Err(CampaignError::WrongKind("periodic_lottery"))
            }
        }
    }

    pub(super) fn shake_terms(&self) -> Result<&super::ShakeTerms, CampaignError> {
        match &self.terms.kind {
            CampaignKind::ShakeLottery(terms) => Ok(terms),
            CampaignKind::PeriodicLottery(_) | CampaignKind::Snatch(_) | CampaignKind::Voting(_) => {
                Err(CampaignError::WrongKind("shake_lottery"))
            }
        }
    }

    fn schedule(&self, commitment: Option<SeedCommitment>, actor: Actor, now: DateTime<Utc>) -> Decision {
        if self.status != Status::Draft {
            return Err(CampaignError::NotDraft(self.status));
        }
        if now >= self.terms.ends_at {
            return Err(CampaignError::InvalidTerms(InvalidTerms("the campaign would end before it is scheduled")));
        }
        match (&self.terms.kind, commitment) {
            (CampaignKind::ShakeLottery(_), None) => Err(CampaignError::CommitmentRequired),
            (CampaignKind::PeriodicLottery(_) | CampaignKind::Snatch(_), Some(_)) => {
                Err(CampaignError::CommitmentPerPeriod)
            }
            (CampaignKind::Voting(_), Some(_)) => Err(CampaignError::WrongKind("shake_lottery")),
            (_, commitment) => Ok(vec![CampaignEvent::CampaignScheduled { commitment, actor, scheduled_at: now }]),
        }
    }

    fn start(&self, actor: Actor, now: DateTime<Utc>) -> Decision {
        match self.status {
            Status::Scheduled if now < self.terms.ends_at => {
                Ok(vec![CampaignEvent::CampaignStarted { actor, started_at: now }])
            }
            Status::Scheduled | Status::Ended => Err(CampaignError::AlreadyEnded),
            status => Err(CampaignError::WrongStatus(status)),
        }
    }

    fn end(&self, actor: Actor, now: DateTime<Utc>) -> Decision {
        match self.status {
            Status::Scheduled | Status::Ongoing => Ok(vec![CampaignEvent::CampaignEnded { actor, ended_at: now }]),
            Status::Ended => Err(CampaignError::AlreadyEnded),
            Status::Draft => Err(CampaignError::WrongStatus(Status::Draft)),
        }
    }

    fn hand_over(&self, award: AwardRef, actor: Actor, now: DateTime<Utc>) -> Decision {
        let key = award.key();
        let won = self.awards.get(&key).ok_or_else(|| CampaignError::AwardNotFound(key.clone()))?;
        if won.handed_over_at.is_some() {
            return Err(CampaignError::AlreadyHandedOver(key));
        }
        Ok(vec![CampaignEvent::CampaignPrizeHandedOver {
            award,
            member_id: won.member_id,
            item: won.item.clone(),
            actor,
            handed_over_at: now,
        }])
    }

    /// Records a physical prize won (others are issued by the application).
    pub(super) fn award(&mut self, award: AwardRef, member: MemberId, prize: &Prize) -> Result<(), InvariantViolation> {
        if let Prize::Physical { item } = prize {
            let key = award.key();
            ensure(!self.awards.contains_key(&key), rules::HANDED_OVER_ONCE, || format!("award {key} won twice"))?;
            self.awards.insert(key, PhysicalAward { member_id: member, item: item.clone(), handed_over_at: None });
        }
        if !prize.is_thanks() {
            self.winners_total += 1;
        }
        Ok(())
    }
}

pub(super) type Decision = Result<Vec<CampaignEvent>, CampaignError>;

impl Campaign {
    pub(super) fn state(&self) -> Result<&CampaignState, CampaignError> {
        self.created.as_ref().ok_or(CampaignError::NotFound)
    }

    fn existing(&mut self) -> Result<&mut CampaignState, InvariantViolation> {
        self.created
            .as_mut()
            .ok_or_else(|| InvariantViolation::new(rules::EXISTS, "event before the campaign was created"))
    }
}

fn transition(state: &CampaignState, allowed: bool, what: &str) -> Result<(), InvariantViolation> {
    ensure(allowed, rules::TRANSITION, || format!("{what} while {:?}", state.status))
}

impl EventSourced for Campaign {
    const TYPE: &'static str = "campaign";
    const STATE_VERSION: i32 = 1;
    type Command = CampaignCommand;
    type Event = CampaignEvent;
    type Error = CampaignError;

    fn handle(&self, command: CampaignCommand, now: DateTime<Utc>) -> Decision {
        match command {
            CampaignCommand::Create { campaign_id, tenant_id, terms, actor } => {
                if self.created.is_some() {
                    return Err(CampaignError::AlreadyExists);
                }
                terms.check().map_err(CampaignError::InvalidTerms)?;
                Ok(vec![CampaignEvent::CampaignCreated { campaign_id, tenant_id, terms, actor, created_at: now }])
            }
            CampaignCommand::Edit { terms, actor } => {
                let state = self.state()?;
                if state.status != Status::Draft {
                    return Err(CampaignError::NotDraft(state.status));
                }
                // The kind is fixed at creation: an edit of another kind's terms would
                // turn a periodic draft into a shake lottery (or back).
                if terms.kind.name() != state.terms.kind.name() {
                    return Err(CampaignError::WrongKind(terms.kind.name()));
                }
                terms.check().map_err(CampaignError::InvalidTerms)?;
                state.check_voting_edit(&terms)?;
                Ok(vec![CampaignEvent::CampaignEdited { terms, actor, edited_at: now }])
            }
            CampaignCommand::Schedule { commitment, actor } => self.state()?.schedule(commitment, actor, now),
            CampaignCommand::Start { actor } => self.state()?.start(actor, now),
            CampaignCommand::End { actor } => self.state()?.end(actor, now),
            CampaignCommand::OpenPeriod { period_no, starts_at, ends_at, commitment, beacon, actor } => {
                let state = self.state()?;
                if state.is_snatch() {
                    // A snatch's window is the campaign's; later periods open at each sell-out.
                    return state.open_first_snatch_period(period_no, commitment, actor, now);
                }
                state.open_period(period_no, starts_at, ends_at, commitment, beacon, actor, now)
            }
            CampaignCommand::Enter { entry_id, member_id, period_no, card_member } => {
                self.state()?.enter(entry_id, member_id, period_no, card_member, now)
            }
            CampaignCommand::GrantTicket { member_id, period_no, visitor_openid, member_openids, card_member } => {
                self.state()?.grant_ticket(member_id, period_no, visitor_openid, &member_openids, card_member, now)
            }
            CampaignCommand::DrawPeriod { period_no, seed, beacon_value, actor } => {
                self.state()?.draw_period(period_no, &seed, beacon_value, actor, now)
            }
            CampaignCommand::CancelPeriod { period_no, actor } => {
                let state = self.state()?;
                if state.is_snatch() {
                    return state.cancel_snatch_period(period_no, now);
                }
                state.cancel_period(period_no, actor, now)
            }
            CampaignCommand::Shake { seed, asks } => {
                let batch = self.decide_shakes(&seed, &asks, now)?;
                match batch.event {
                    Some(event) => Ok(vec![event]),
                    None => {
                        let why = batch.outcomes.into_iter().find_map(Result::err).unwrap_or(Refusal::NotOngoing);
                        Err(CampaignError::Refused(why))
                    }
                }
            }
            CampaignCommand::RevealShakeSeed { seed, actor } => self.state()?.reveal(seed, actor, now),
            CampaignCommand::HandOverPrize { award, actor } => self.state()?.hand_over(award, actor, now),
            CampaignCommand::ReserveShares { purchase_id, member_id, quantity, method, card_member } => {
                self.state()?.reserve_shares(purchase_id, member_id, quantity, method, card_member, now)
            }
            CampaignCommand::ReleaseShares { purchase_id } => self.state()?.release_shares(purchase_id, now),
            CampaignCommand::ConfirmShares { purchase_id, member_id, payment, seed, next_commitment } => {
                self.state()?.confirm_shares(purchase_id, member_id, payment, &seed, next_commitment, now)
            }
            CampaignCommand::SubmitVoteItem { item_id, title, description, member_id, card_member, actor } => {
                self.state()?.submit_vote_item(item_id, title, description, member_id, card_member, actor, now)
            }
            CampaignCommand::ApproveVoteItem { item_id, actor } => self.state()?.approve_vote_item(item_id, actor, now),
            CampaignCommand::RejectVoteItem { item_id, reason, actor } => {
                self.state()?.reject_vote_item(item_id, reason, actor, now)
            }
            CampaignCommand::CastVote { member_id, item_id, card_member } => {
                self.state()?.cast_vote(member_id, item_id, card_member, now)
            }
        }
    }

    fn apply(&mut self, event: &CampaignEvent) -> Result<(), InvariantViolation> {
        match event {
            CampaignEvent::CampaignCreated { campaign_id, tenant_id, terms, created_at, .. } => {
                ensure(self.created.is_none(), rules::CREATED_ONCE, || "created twice".into())?;
                self.created = Some(CampaignState {
                    campaign_id: *campaign_id,
                    tenant_id: tenant_id.clone(),
                    terms: terms.clone(),
                    status: Status::Draft,
                    created_at: *created_at,
                    started_at: None,
                    ended_at: None,
                    commitment: None,
                    revealed_seed: None,
                    participations: BTreeMap::new(),
                    participations_total: 0,
                    winners_total: 0,
                    periods: BTreeMap::new(),
                    stock_left: Vec::new(),
                    table_version: 0,
                    awards: BTreeMap::new(),
                    snatch: SnatchBook::default(),
                    voting: VotingBoard::default(),
                });
            }
            CampaignEvent::CampaignEdited { terms, .. } => {
                let state = self.existing()?;
                transition(state, state.status == Status::Draft, "edited")?;
                state.terms = terms.clone();
            }
            CampaignEvent::CampaignScheduled { commitment, .. } => {
                let state = self.existing()?;
                transition(state, state.status == Status::Draft, "scheduled")?;
                let shake = matches!(state.terms.kind, CampaignKind::ShakeLottery(_));
                ensure(shake == commitment.is_some(), rules::SEED_OPENS_COMMITMENT, || {
                    "a shake lottery, and only it, commits when scheduled".into()
                })?;
                state.status = Status::Scheduled;
                state.commitment = *commitment;
                if let CampaignKind::ShakeLottery(terms) = &state.terms.kind {
                    state.stock_left = terms.slots.iter().map(|s| s.stock).collect();
                    state.table_version = 1;
                }
            }
            CampaignEvent::CampaignStarted { started_at, .. } => {
                let state = self.existing()?;
                transition(state, state.status == Status::Scheduled, "started")?;
                state.status = Status::Ongoing;
                state.started_at = Some(*started_at);
            }
            CampaignEvent::CampaignEnded { ended_at, .. } => {
                let state = self.existing()?;
                transition(state, matches!(state.status, Status::Scheduled | Status::Ongoing), "ended")?;
                state.status = Status::Ended;
                state.ended_at = Some(*ended_at);
            }
            CampaignEvent::CampaignPeriodOpened { .. } | CampaignEvent::CampaignPeriodDrawn { .. }
                if self.created.as_ref().is_some_and(CampaignState::is_snatch) =>
            {
                self.existing()?.apply_snatch(event)?
            }
            CampaignEvent::SnatchSharesReserved { .. }
            | CampaignEvent::SnatchSharesReleased { .. }
            | CampaignEvent::SnatchSharesConfirmed { .. }
            | CampaignEvent::SnatchPaymentArrivedLate { .. }
            | CampaignEvent::SnatchPeriodCancelled { .. } => self.existing()?.apply_snatch(event)?,
            CampaignEvent::CampaignPeriodOpened { .. }
            | CampaignEvent::CampaignEntryRecorded { .. }
            | CampaignEvent::CampaignPeriodDrawn { .. }
            | CampaignEvent::CampaignPeriodCancelled { .. } => self.existing()?.apply_periodic(event)?,
            CampaignEvent::CampaignShakesDrawn { draws, .. } => {
                let state = self.existing()?;
                for draw in draws {
                    state.apply_shake(draw)?;
                }
            }
            CampaignEvent::CampaignShakeSeedRevealed { seed, .. } => {
                let state = self.existing()?;
                transition(state, state.status == Status::Ended, "seed revealed")?;
                ensure(state.revealed_seed.is_none(), rules::SEED_OPENS_COMMITMENT, || "revealed twice".into())?;
                ensure(state.commitment.is_some_and(|c| c.opens_to(seed)), rules::SEED_OPENS_COMMITMENT, || {
                    "the revealed seed does not open the commitment".into()
                })?;
                state.revealed_seed = Some(*seed);
            }
            CampaignEvent::CampaignPrizeHandedOver { award, member_id, handed_over_at, .. } => {
                let state = self.existing()?;
                let key = award.key();
                let won = state.awards.get_mut(&key).ok_or_else(|| {
                    InvariantViolation::new(rules::HANDED_OVER_ONCE, format!("no physical prize {key}"))
                })?;
                ensure(won.handed_over_at.is_none() && won.member_id == *member_id, rules::HANDED_OVER_ONCE, || {
                    format!("prize {key} handed over twice or to another member")
                })?;
                won.handed_over_at = Some(*handed_over_at);
            }
            CampaignEvent::CampaignVoteItemSubmitted { .. }
            | CampaignEvent::CampaignVoteItemApproved { .. }
            | CampaignEvent::CampaignVoteItemRejected { .. }
            | CampaignEvent::CampaignVoteCast { .. } => self.existing()?.apply_voting(event)?,
        }
        Ok(())
    }

    fn tenant(&self) -> Option<&TenantId> {
        self.created.as_ref().map(|s| &s.tenant_id)
    }
}
