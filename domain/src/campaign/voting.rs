//! Voting campaigns: items submitted by operators and/or members, a member's
//! item approved (with an optional points reward, stated once on the
//! approval) or rejected, and members' votes for approved items.
//!
//! **Limits.** A vote is a participation: the campaign's `lifetime` and
//! `per_day` limits count votes, in the same decision that records the vote
//! (`per_period` has no meaning here and is refused). Besides, a member votes
//! for one item at most once per vote period ([`VotePeriod`]: the whole
//! campaign, or each merchant day, UTC+8).
//!
//! **Items.** An operator's item is approved as it is submitted (the
//! operator is the approver) and never earns a reward; a member's item waits
//! for an operator's decision, made once: approved (the event states the
//! reward the terms give, which the application grants once under a key of
//! campaign and item) or rejected with a reason. Only approved items take
//! votes. Items are bounded per campaign ([`VOTE_ITEMS_MAX`]) and per member.
//!
//! **State bound.** Each voter keeps the items voted for in the current vote
//! period only (a new merchant day starts an empty ballot for daily periods),
//! so a ballot never holds more than the campaign's items.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::aggregate::{CampaignError, CampaignEvent, CampaignState, Decision, Refusal, Status};
use super::{merchant_day, rules, CampaignId, CampaignKind, CampaignText, InvalidTerms, Limits};
use crate::ids::{uuid_id, IdError};
use crate::invariant::{ensure, ensure_figure};
use crate::{Actor, IdempotencyKey, InvariantViolation, MemberId, PointsAmount, TenantId};

/// Items one voting campaign holds (approved, pending and rejected).
pub const VOTE_ITEMS_MAX: u32 = 200;
/// Items one member may submit to one campaign, at most.
pub const ITEMS_PER_MEMBER_MAX: u32 = 10;
/// Highest points an approved item may earn its member.
pub const APPROVAL_REWARD_POINTS_MAX: i64 = 1_000_000;

/// Stable names of the voting invariants, as `InvariantViolation::rule`.
pub mod vote_rules {
    /// An item is submitted once, by a submitter the terms allow, within the bounds.
    pub const ITEM_SUBMITTED_ONCE: &str = "campaign.vote_item_submitted_once";
    /// A member's item is approved or rejected once; an operator's is approved on submission.
    pub const ITEM_DECIDED_ONCE: &str = "campaign.vote_item_decided_once";
    /// The reward stated on an approval is what the terms give.
    pub const REWARD_AS_TERMS: &str = "campaign.vote_reward_as_terms";
    /// Votes go to approved items, while the campaign runs.
    pub const VOTE_FOR_APPROVED: &str = "campaign.vote_for_approved";
    /// One vote per item, member and vote period.
    pub const ONE_VOTE_PER_PERIOD: &str = "campaign.one_vote_per_period";
}

uuid_id!(
    /// One item of a voting campaign.
    VoteItemId,
    "vote item id"
);

const ITEM_NAMESPACE: Uuid = Uuid::from_u128(0x7c55_2e0b_9a41_4d7e_b3f6_0d18_c2a9_64e1);

impl VoteItemId {
    /// The item a request submits: derived from its idempotency key and
    /// submitter (`operator` or the member's id), so a repeated request names
    /// the same item.
    pub fn for_request(tenant: &TenantId, campaign: CampaignId, submitter: &str, key: &IdempotencyKey) -> Self {
        let name = format!("vote-item\u{1f}{}\u{1f}{campaign}\u{1f}{submitter}\u{1f}{}", tenant.as_str(), key.as_str());
        Self(Uuid::new_v5(&ITEM_NAMESPACE, name.as_bytes()))
    }
}

/// An item's description: visible text and line breaks, 1..=500 characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "String", into = "String")]
#[schemars(extend(
    "minLength" = 1,
    "maxLength" = 500,
    "pattern" = "^[^\\x00-\\x09\\x0B-\\x1F\\x7F-\\x9F]*[^\\s\\x00-\\x1F\\x7F-\\x9F][^\\x00-\\x09\\x0B-\\x1F\\x7F-\\x9F]*$"
))]
pub struct VoteItemText(String);

impl VoteItemText {
    pub const LEN_MAX: usize = 500;
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let len = s.chars().count();
        if len == 0 || len > Self::LEN_MAX {
            return Err(IdError::Length { what: "vote item text", min: 1, max: Self::LEN_MAX, len });
        }
        if s.chars().any(|c| c.is_control() && c != '\n') || s.trim().is_empty() {
            return Err(IdError::Charset { what: "vote item text", allowed: "visible text and line breaks" });
        }
        Ok(Self(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for VoteItemText {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(&s)
    }
}

impl From<VoteItemText> for String {
    fn from(t: VoteItemText) -> String {
        t.0
    }
}

impl fmt::Display for VoteItemText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who may submit items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ItemSubmitters {
    Operators,
    Members,
    /// Operators and members.
    Anyone,
}

impl ItemSubmitters {
    pub fn members(self) -> bool {
        matches!(self, ItemSubmitters::Members | ItemSubmitters::Anyone)
    }
    pub fn operators(self) -> bool {
        matches!(self, ItemSubmitters::Operators | ItemSubmitters::Anyone)
    }
}

/// The window of "one vote per item per member".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum VotePeriod {
    /// One vote per item over the whole campaign.
    Campaign,
    /// One vote per item per merchant day (UTC+8).
    Day,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VotingTerms {
    pub submitters: ItemSubmitters,
    /// Points a member's item earns when approved (`None`: no reward).
    pub approval_reward: Option<PointsAmount>,
    pub vote_period: VotePeriod,
    /// Items the campaign holds, 1..=[`VOTE_ITEMS_MAX`].
    pub items_max: u32,
    /// Items one member may submit, 1..=[`ITEMS_PER_MEMBER_MAX`].
    pub items_per_member_max: u32,
}

pub(super) fn check_voting(terms: &VotingTerms, limits: &Limits) -> Result<(), InvalidTerms> {
    if limits.per_period.is_some() {
        return Err(InvalidTerms("a voting campaign limits votes per lifetime or per day, not per period"));
    }
    if terms.items_max == 0 || terms.items_max > VOTE_ITEMS_MAX {
        return Err(InvalidTerms("items_max must be 1..=200"));
    }
    if terms.items_per_member_max == 0 || terms.items_per_member_max > ITEMS_PER_MEMBER_MAX {
        return Err(InvalidTerms("items_per_member_max must be 1..=10"));
    }
    if terms.approval_reward.is_some_and(|r| r.get() > APPROVAL_REWARD_POINTS_MAX) {
        return Err(InvalidTerms("an approval reward is at most 1000000 points"));
    }
    if terms.approval_reward.is_some() && !terms.submitters.members() {
        return Err(InvalidTerms("only a member's item earns an approval reward: members must be able to submit"));
    }
    Ok(())
}

/// Why a voting command is refused (beyond the participation refusals).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VoteError {
    #[error("vote item {0} not found")]
    ItemNotFound(VoteItemId),
    #[error("vote item {0} is not approved: it takes no votes")]
    ItemNotApproved(VoteItemId),
    #[error("vote item {0} was rejected")]
    ItemRejected(VoteItemId),
    #[error("vote item {0} was approved: it can no longer be rejected")]
    ItemApproved(VoteItemId),
    #[error("the member already voted for this item in this vote period")]
    AlreadyVoted,
    #[error("the campaign holds as many items as its terms allow")]
    ItemsFull,
    #[error("the member has submitted as many items as allowed")]
    MemberItemsLimitReached,
    #[error("{0} may not submit items to this campaign")]
    NotASubmitter(&'static str),
    #[error("vote item {0} was already submitted differently")]
    ItemConflict(VoteItemId),
}

impl VoteError {
    /// Stable name, as API error codes use it.
    pub fn code(&self) -> &'static str {
        match self {
            VoteError::ItemNotFound(_) => "vote_item_not_found",
            VoteError::ItemNotApproved(_) => "vote_item_not_approved",
            VoteError::ItemRejected(_) => "vote_item_rejected",
            VoteError::ItemApproved(_) => "vote_item_approved",
            VoteError::AlreadyVoted => "already_voted",
            VoteError::ItemsFull => "vote_items_full",
            VoteError::MemberItemsLimitReached => "member_items_limit_reached",
            VoteError::NotASubmitter(_) => "not_a_submitter",
            VoteError::ItemConflict(_) => "vote_item_conflict",
        }
    }
}

impl From<VoteError> for CampaignError {
    fn from(e: VoteError) -> Self {
        CampaignError::Vote(e)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum VoteItemStatus {
    Pending,
    Approved,
    Rejected,
}

impl VoteItemStatus {
    pub fn name(self) -> &'static str {
        match self {
            VoteItemStatus::Pending => "pending",
            VoteItemStatus::Approved => "approved",
            VoteItemStatus::Rejected => "rejected",
        }
    }
}

/// One item as the campaign's state keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteItem {
    pub title: CampaignText,
    pub description: Option<VoteItemText>,
    /// The member who submitted it (`None`: an operator).
    pub member_id: Option<MemberId>,
    pub status: VoteItemStatus,
    pub votes: u32,
    pub submitted_at: DateTime<Utc>,
}

/// A member's votes in the current vote period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ballot {
    /// The merchant day of the member's last vote.
    pub day: NaiveDate,
    /// Items voted for in the current vote period.
    pub items: BTreeSet<VoteItemId>,
}

/// A voting campaign's items and ballots (empty for other kinds).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VotingBoard {
    pub items: BTreeMap<VoteItemId, VoteItem>,
    pub ballots: BTreeMap<MemberId, Ballot>,
}

impl VotingBoard {
    fn items_of(&self, member: MemberId) -> usize {
        self.items.values().filter(|i| i.member_id == Some(member)).count()
    }

    /// Whether `member` voted for `item` in the vote period of `day`.
    fn voted(&self, period: VotePeriod, member: MemberId, item: VoteItemId, day: NaiveDate) -> bool {
        self.ballots.get(&member).is_some_and(|b| {
            let same_period = match period {
                VotePeriod::Campaign => true,
                VotePeriod::Day => b.day == day,
            };
            same_period && b.items.contains(&item)
        })
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn broken(rule: &'static str) -> impl Fn(CampaignError) -> InvariantViolation {
    move |e| InvariantViolation::new(rule, e.to_string())
}

impl CampaignState {
    /// A voting campaign's terms (`WrongKind` for other kinds).
    pub fn voting_terms(&self) -> Result<&VotingTerms, CampaignError> {
        match &self.terms.kind {
            CampaignKind::Voting(terms) => Ok(terms),
            CampaignKind::PeriodicLottery(_) | CampaignKind::ShakeLottery(_) | CampaignKind::Snatch(_) => {
                Err(CampaignError::WrongKind("voting"))
            }
        }
    }

    /// A draft's new terms keep the items an operator already submitted.
    pub(super) fn check_voting_edit(&self, terms: &super::CampaignTerms) -> Result<(), CampaignError> {
        match &terms.kind {
            CampaignKind::Voting(v) if self.voting.items.len() > v.items_max as usize => {
                // The draft holds more items than the new terms would.
                Err(VoteError::ItemsFull.into())
            }
            CampaignKind::Voting(_)
            | CampaignKind::PeriodicLottery(_)
            | CampaignKind::ShakeLottery(_)
            | CampaignKind::Snatch(_) => Ok(()),
        }
    }

    /// Items in ranking order: votes (most first), then submission time, then id.
    pub fn vote_ranking(&self) -> Vec<(VoteItemId, &VoteItem)> {
        let mut items: Vec<(VoteItemId, &VoteItem)> = self.voting.items.iter().map(|(id, i)| (*id, i)).collect();
        items.sort_by(|a, b| {
            b.1.votes.cmp(&a.1.votes).then(a.1.submitted_at.cmp(&b.1.submitted_at)).then(a.0.cmp(&b.0))
        });
        items
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn submit_vote_item(
        &self,
        item_id: VoteItemId,
        title: CampaignText,
        description: Option<VoteItemText>,
        member_id: Option<MemberId>,
        card_member: bool,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Decision {
        let terms = self.voting_terms()?;
        if let Some(item) = self.voting.items.get(&item_id) {
            // The same submission retried changes nothing.
            let same = item.title == title && item.description == description && item.member_id == member_id;
            return if same { Ok(Vec::new()) } else { Err(VoteError::ItemConflict(item_id).into()) };
        }
        match member_id {
            Some(member) => {
                if !terms.submitters.members() {
                    return Err(VoteError::NotASubmitter("members").into());
                }
                if self.phase_at(now) != Status::Ongoing {
                    return Err(Refusal::NotOngoing.into());
                }
                if self.terms.members_only && !card_member {
                    return Err(Refusal::MembersOnly.into());
                }
                if self.voting.items_of(member) >= terms.items_per_member_max as usize {
                    return Err(VoteError::MemberItemsLimitReached.into());
                }
            }
            None => {
                if !terms.submitters.operators() {
                    return Err(VoteError::NotASubmitter("operators").into());
                }
                if self.phase_at(now) == Status::Ended {
                    return Err(CampaignError::AlreadyEnded);
                }
            }
        }
        if self.voting.items.len() >= terms.items_max as usize {
            return Err(VoteError::ItemsFull.into());
        }
        Ok(vec![CampaignEvent::CampaignVoteItemSubmitted {
            item_id,
            title,
            description,
            member_id,
            approved: member_id.is_none(),
            items_after: count(self.voting.items.len() + 1),
            actor,
            submitted_at: now,
        }])
    }

    pub(super) fn approve_vote_item(&self, item_id: VoteItemId, actor: Actor, now: DateTime<Utc>) -> Decision {
        let terms = self.voting_terms()?;
        let item = self.voting.items.get(&item_id).ok_or(VoteError::ItemNotFound(item_id))?;
        match item.status {
            // Approving again changes nothing (and rewards nothing again).
            VoteItemStatus::Approved => return Ok(Vec::new()),
            VoteItemStatus::Rejected => return Err(VoteError::ItemRejected(item_id).into()),
            VoteItemStatus::Pending => {}
        }
        if self.phase_at(now) == Status::Ended {
            return Err(CampaignError::AlreadyEnded);
        }
        Ok(vec![CampaignEvent::CampaignVoteItemApproved {
            item_id,
            member_id: item.member_id,
            reward: item.member_id.and(terms.approval_reward),
            actor,
            approved_at: now,
        }])
    }

    pub(super) fn reject_vote_item(
        &self,
        item_id: VoteItemId,
        reason: CampaignText,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Decision {
        self.voting_terms()?;
        let item = self.voting.items.get(&item_id).ok_or(VoteError::ItemNotFound(item_id))?;
        match item.status {
            VoteItemStatus::Rejected => return Ok(Vec::new()),
            VoteItemStatus::Approved => return Err(VoteError::ItemApproved(item_id).into()),
            VoteItemStatus::Pending => {}
        }
        if self.phase_at(now) == Status::Ended {
            return Err(CampaignError::AlreadyEnded);
        }
        Ok(vec![CampaignEvent::CampaignVoteItemRejected { item_id, reason, actor, rejected_at: now }])
    }

    pub(super) fn cast_vote(
        &self,
        member_id: MemberId,
        item_id: VoteItemId,
        card_member: bool,
        now: DateTime<Utc>,
    ) -> Decision {
        let terms = self.voting_terms()?;
        if self.phase_at(now) != Status::Ongoing {
            return Err(Refusal::NotOngoing.into());
        }
        let item = self.voting.items.get(&item_id).ok_or(VoteError::ItemNotFound(item_id))?;
        if item.status != VoteItemStatus::Approved {
            return Err(VoteError::ItemNotApproved(item_id).into());
        }
        let day = merchant_day(now);
        if self.voting.voted(terms.vote_period, member_id, item_id, day) {
            return Err(VoteError::AlreadyVoted.into());
        }
        let after = self.admit(self.participations.get(&member_id), self.participations.len(), card_member, now)?;
        Ok(vec![CampaignEvent::CampaignVoteCast {
            item_id,
            member_id,
            merchant_day: day,
            member_total_after: after.total,
            member_day_after: after.day_count,
            item_votes_after: item.votes.saturating_add(1),
            voted_at: now,
        }])
    }

    /// Applies the voting events (the caller matched them).
    pub(super) fn apply_voting(&mut self, event: &CampaignEvent) -> Result<(), InvariantViolation> {
        let terms = self.voting_terms().map_err(broken(rules::TRANSITION))?.clone();
        match event {
            CampaignEvent::CampaignVoteItemSubmitted {
                item_id,
                title,
                description,
                member_id,
                approved,
                items_after,
                submitted_at,
                ..
            } => {
                ensure(self.status != Status::Ended, rules::TRANSITION, || "item submitted after the end".into())?;
                ensure(!self.voting.items.contains_key(item_id), vote_rules::ITEM_SUBMITTED_ONCE, || {
                    format!("item {item_id} submitted twice")
                })?;
                let allowed = match member_id {
                    Some(member) => {
                        terms.submitters.members()
                            && self.voting.items_of(*member) < terms.items_per_member_max as usize
                    }
                    None => terms.submitters.operators(),
                };
                ensure(allowed, vote_rules::ITEM_SUBMITTED_ONCE, || {
                    format!("item {item_id} from a submitter the terms do not allow, or past their items")
                })?;
                ensure_figure(rules::COUNTS_AFTER, "items_after", *items_after, count(self.voting.items.len() + 1))?;
                ensure(*items_after <= terms.items_max, rules::WITHIN_LIMITS, || {
                    format!("{items_after} items past the terms' {}", terms.items_max)
                })?;
                ensure(*approved == member_id.is_none(), vote_rules::ITEM_DECIDED_ONCE, || {
                    "an operator's item, and only it, is approved on submission".into()
                })?;
                self.voting.items.insert(
                    *item_id,
                    VoteItem {
                        title: title.clone(),
                        description: description.clone(),
                        member_id: *member_id,
                        status: if *approved { VoteItemStatus::Approved } else { VoteItemStatus::Pending },
                        votes: 0,
                        submitted_at: *submitted_at,
                    },
                );
            }
            CampaignEvent::CampaignVoteItemApproved { item_id, member_id, reward, .. } => {
                let item = self.pending_item(*item_id)?;
                ensure(item.member_id == *member_id, vote_rules::ITEM_DECIDED_ONCE, || {
                    format!("item {item_id}'s approval names another member")
                })?;
                ensure(*reward == member_id.and(terms.approval_reward), vote_rules::REWARD_AS_TERMS, || {
                    format!("item {item_id}'s reward is not the terms'")
                })?;
                item.status = VoteItemStatus::Approved;
            }
            CampaignEvent::CampaignVoteItemRejected { item_id, .. } => {
                self.pending_item(*item_id)?.status = VoteItemStatus::Rejected;
            }
            CampaignEvent::CampaignVoteCast {
                item_id,
                member_id,
                merchant_day: day,
                member_total_after,
                member_day_after,
                item_votes_after,
                voted_at,
            } => {
                ensure(
                    matches!(self.status, Status::Scheduled | Status::Ongoing)
                        && self.terms.starts_at <= *voted_at
                        && *voted_at < self.terms.ends_at,
                    rules::TRANSITION,
                    || format!("vote at {voted_at} while {:?}", self.status),
                )?;
                ensure_figure(rules::COUNTS_AFTER, "merchant_day", *day, merchant_day(*voted_at))?;
                let votes = match self.voting.items.get(item_id) {
                    Some(item) if item.status == VoteItemStatus::Approved => item.votes,
                    _ => {
                        return Err(InvariantViolation::new(
                            vote_rules::VOTE_FOR_APPROVED,
                            format!("vote for {item_id}, which is not an approved item"),
                        ))
                    }
                };
                ensure(
                    !self.voting.voted(terms.vote_period, *member_id, *item_id, *day),
                    vote_rules::ONE_VOTE_PER_PERIOD,
                    || format!("member {member_id} voted for {item_id} twice in one vote period"),
                )?;
                let votes_after = votes
                    .checked_add(1)
                    .ok_or_else(|| InvariantViolation::new(rules::COUNTS_AFTER, "item vote count overflow"))?;
                ensure_figure(rules::COUNTS_AFTER, "item_votes_after", *item_votes_after, votes_after)?;
                self.count_participation(*member_id, *day, *member_total_after, *member_day_after)?;
                let ballot = self
                    .voting
                    .ballots
                    .entry(*member_id)
                    .or_insert_with(|| Ballot { day: *day, items: BTreeSet::new() });
                if ballot.day != *day {
                    ballot.day = *day;
                    if terms.vote_period == VotePeriod::Day {
                        ballot.items.clear();
                    }
                }
                ballot.items.insert(*item_id);
                if let Some(item) = self.voting.items.get_mut(item_id) {
                    item.votes = votes_after;
                }
            }
            CampaignEvent::CampaignCreated { .. }
            | CampaignEvent::CampaignEdited { .. }
            | CampaignEvent::CampaignScheduled { .. }
            | CampaignEvent::CampaignStarted { .. }
            | CampaignEvent::CampaignEnded { .. }
            | CampaignEvent::CampaignPeriodOpened { .. }
            | CampaignEvent::CampaignEntryRecorded { .. }
            | CampaignEvent::CampaignPeriodDrawn { .. }
            | CampaignEvent::CampaignPeriodCancelled { .. }
            | CampaignEvent::CampaignShakesDrawn { .. }
            | CampaignEvent::CampaignShakeSeedRevealed { .. }
            | CampaignEvent::SnatchSharesReserved { .. }
            | CampaignEvent::SnatchSharesReleased { .. }
            | CampaignEvent::SnatchSharesConfirmed { .. }
            | CampaignEvent::SnatchPaymentArrivedLate { .. }
            | CampaignEvent::SnatchPeriodCancelled { .. }
            | CampaignEvent::CampaignPrizeHandedOver { .. } => {}
        }
        Ok(())
    }

    fn pending_item(&mut self, item_id: VoteItemId) -> Result<&mut VoteItem, InvariantViolation> {
        let ended = self.status == Status::Ended;
        let item = self.voting.items.get_mut(&item_id).ok_or_else(|| {
            InvariantViolation::new(vote_rules::ITEM_DECIDED_ONCE, format!("no item {item_id} to decide"))
        })?;
        ensure(item.status == VoteItemStatus::Pending && !ended, vote_rules::ITEM_DECIDED_ONCE, || {
            format!("item {item_id} decided twice or after the end")
        })?;
        Ok(item)
    }
}
