//! Shake lotteries: an instant draw per shake against the prize table in
//! force (`schemas/draws/SPEC.md` §6).
//!
//! **Depleted prizes.** A prize slot's weight is in force while it has stock
//! left; when its stock reaches 0 its weight leaves the table (nothing is
//! redirected to "thanks", the other weights are not rescaled) and the
//! table's version goes up by one. The odds members are shown
//! ([`CampaignState::shake_odds`]) are computed from the same state the next
//! shake is decided with, and every draw records the `table_version`,
//! `total_weight` and `roll` it was decided with, so the odds shown are the
//! odds applied and an auditor can check each one. When no prize has stock
//! left, shaking is refused (`PrizesExhausted`): nobody spends a chance on a
//! table of only "thanks". A member who has won K prizes is refused further
//! shakes (`PrizeLimitReached`) rather than offered a thanks-only table.
//!
//! **Idempotency.** A shake names the member's chance it uses (`nonce`: 1
//! for their first shake in the campaign, 2 for the second, …), which is
//! also the HMAC nonce. A retried or concurrent duplicate of a chance is
//! refused `ChanceUsed`; the result of a member's n-th chance is fixed by
//! the seed and the table in force, so retrying cannot re-roll it.
//!
//! **One hot campaign.** Every shake of a campaign meets on this one stream,
//! which is what makes "never more prizes than stock" hold without locks.
//! To make that fast the application batches: [`Campaign::decide_shakes`]
//! decides up to [`SHAKES_PER_EVENT_MAX`] shakes of many members in order
//! as one event (one commit), like coupon issuing, and answers each ask.
//! If one stream is still too slow, the stock can be split into partitions,
//! each its own small campaign-like aggregate with a share of each slot's
//! stock and its own table in force (the same table shape and events here;
//! the odds shown are then per partition and a member is routed to one
//! partition by a hash of their id). Nothing here assumes a single partition.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::aggregate::{Campaign, CampaignError, CampaignEvent, CampaignState, Decision, Participation, Refusal};
use super::draw::{self, DrawSeed};
use super::{merchant_day, rules, AwardRef, Prize, ShakeTerms, Status, SHAKES_PER_EVENT_MAX};
use crate::invariant::{ensure, ensure_figure};
use crate::{Actor, InvariantViolation, MemberId};

/// One shake a member asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShakeAsk {
    pub member_id: MemberId,
    /// The chance this shake uses: the member's shakes so far + 1.
    pub nonce: u32,
    /// The member holds a card (read from the member stream by the caller).
    pub card_member: bool,
}

/// One shake's result, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShakeDraw {
    pub member_id: MemberId,
    /// The member's n-th shake (the HMAC nonce, and `member_total_after`).
    pub nonce: u32,
    pub merchant_day: NaiveDate,
    pub member_day_after: u32,
    /// The table in force: its version and total weight.
    pub table_version: u32,
    pub total_weight: u64,
    /// `0..total_weight`, from HMAC-SHA256(seed, member ‖ nonce ‖ counter).
    pub roll: u64,
    /// Index in the terms' slots.
    pub slot: u16,
    pub prize: Prize,
    /// The slot's stock after this draw (`None` for "thanks").
    pub stock_left_after: Option<u32>,
    /// Prizes the member has won, this one included.
    pub member_prizes_after: u32,
}

/// The outcome of deciding a batch: the event (when any shake was drawn)
/// and, per ask in order, its draw or refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShakeBatch {
    pub event: Option<CampaignEvent>,
    pub outcomes: Vec<Result<ShakeDraw, Refusal>>,
}

/// The odds in force, as members are shown them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct ShakeOdds {
    pub table_version: u32,
    /// Sum of the weights in force; a slot's chance is `weight / total_weight`.
    pub total_weight: u64,
    pub slots: Vec<SlotOdds>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct SlotOdds {
    pub slot: u16,
    pub prize: Prize,
    /// 0 once a prize's stock is gone.
    pub weight: u32,
    pub stock_left: Option<u32>,
}

/// Each slot's weight in force given the stock left.
fn weights_in_force(terms: &ShakeTerms, stock_left: &[Option<u32>]) -> Vec<u64> {
    terms
        .slots
        .iter()
        .zip(stock_left)
        .map(|(slot, left)| if left.is_none_or(|n| n > 0) { u64::from(slot.weight) } else { 0 })
        .collect()
}

fn any_prize_left(terms: &ShakeTerms, stock_left: &[Option<u32>]) -> bool {
    terms.slots.iter().zip(stock_left).any(|(slot, left)| !slot.prize.is_thanks() && left.is_some_and(|n| n > 0))
}

/// What a batch changes before its event is applied.
struct Work {
    stock_left: Vec<Option<u32>>,
    table_version: u32,
    members: BTreeMap<MemberId, Participation>,
    participants: usize,
}

impl CampaignState {
    /// The table in force now (the one the next shake is decided with).
    pub fn shake_odds(&self) -> Option<ShakeOdds> {
        let terms = self.shake_terms().ok()?;
        let weights = weights_in_force(terms, &self.stock_left);
        Some(ShakeOdds {
            table_version: self.table_version,
            total_weight: weights.iter().sum(),
            slots: (0u16..)
                .zip(&terms.slots)
                .zip(weights.iter().zip(&self.stock_left))
                .map(|((slot, s), (weight, left))| SlotOdds {
                    slot,
                    prize: s.prize.clone(),
                    weight: u32::try_from(*weight).unwrap_or(u32::MAX),
                    stock_left: *left,
                })
                .collect(),
        })
    }

    fn decide_one(
        &self,
        terms: &ShakeTerms,
        work: &mut Work,
        seed: &DrawSeed,
        ask: &ShakeAsk,
        now: DateTime<Utc>,
    ) -> Result<Result<ShakeDraw, Refusal>, CampaignError> {
        let before = work.members.get(&ask.member_id).or_else(|| self.participations.get(&ask.member_id)).copied();
        let used = before.map_or(0, |p| p.total);
        if ask.nonce <= used {
            return Ok(Err(Refusal::ChanceUsed));
        }
        if Some(ask.nonce) != used.checked_add(1) {
            return Ok(Err(Refusal::ChanceOutOfOrder));
        }
        let mut after = match self.admit(before.as_ref(), work.participants, ask.card_member, now) {
            Ok(after) => after,
            Err(why) => return Ok(Err(why)),
        };
        if after.prizes >= terms.prizes_per_member_max {
            return Ok(Err(Refusal::PrizeLimitReached));
        }
        if !any_prize_left(terms, &work.stock_left) {
            return Ok(Err(Refusal::PrizesExhausted));
        }
        let weights = weights_in_force(terms, &work.stock_left);
        let total_weight: u64 = weights.iter().sum();
        let roll = draw::shake_roll(seed, ask.member_id, u64::from(ask.nonce), total_weight)?;
        let index = draw::slot_for_roll(&weights, roll).ok_or(CampaignError::Draw(draw::DrawError::EmptyTable))?;
        let table_version = work.table_version;
        let prize = terms.slots[index].prize.clone();
        let stock_left_after = match work.stock_left[index] {
            None => None,
            Some(left) => {
                let rest = left.saturating_sub(1);
                work.stock_left[index] = Some(rest);
                if rest == 0 {
                    work.table_version += 1;
                }
                after.prizes += 1;
                Some(rest)
            }
        };
        if before.is_none() {
            work.participants += 1;
        }
        work.members.insert(ask.member_id, after);
        Ok(Ok(ShakeDraw {
            member_id: ask.member_id,
            nonce: ask.nonce,
            merchant_day: merchant_day(now),
            member_day_after: after.day_count,
            table_version,
            total_weight,
            roll,
            slot: u16::try_from(index).unwrap_or(u16::MAX),
            prize,
            stock_left_after,
            member_prizes_after: after.prizes,
        }))
    }

    pub(super) fn reveal(&self, seed: DrawSeed, actor: Actor, now: DateTime<Utc>) -> Decision {
        self.shake_terms()?;
        if let Some(revealed) = self.revealed_seed {
            return if revealed == seed { Ok(Vec::new()) } else { Err(CampaignError::AlreadyRevealed) };
        }
        if self.status != Status::Ended {
            return Err(CampaignError::NotEnded);
        }
        if !self.commitment.is_some_and(|c| c.opens_to(&seed)) {
            return Err(CampaignError::SeedMismatch);
        }
        Ok(vec![CampaignEvent::CampaignShakeSeedRevealed {
            algorithm: draw::ALGORITHM.to_owned(),
            seed,
            actor,
            revealed_at: now,
        }])
    }

    /// Applies one recorded shake, recomputing what it states.
    pub(super) fn apply_shake(&mut self, d: &ShakeDraw) -> Result<(), InvariantViolation> {
        let terms = self.shake_terms().map_err(|e| InvariantViolation::new(rules::TRANSITION, e.to_string()))?.clone();
        ensure(matches!(self.status, Status::Scheduled | Status::Ongoing), rules::TRANSITION, || {
            format!("a shake while {:?}", self.status)
        })?;
        let prizes_before = self.participations.get(&d.member_id).map_or(0, |p| p.prizes);
        ensure(prizes_before < terms.prizes_per_member_max, rules::WITHIN_LIMITS, || {
            format!("member {} shook with {prizes_before} prizes won", d.member_id)
        })?;
        ensure_figure(rules::SHAKE_IN_ORDER, "table_version", d.table_version, self.table_version)?;
        let weights = weights_in_force(&terms, &self.stock_left);
        ensure_figure(rules::SHAKE_IN_ORDER, "total_weight", d.total_weight, weights.iter().sum())?;
        ensure(any_prize_left(&terms, &self.stock_left), rules::WITHIN_STOCK, || "a shake with no prize left".into())?;
        let index = usize::from(d.slot);
        ensure(draw::slot_for_roll(&weights, d.roll) == Some(index), rules::DRAW_RECOMPUTES, || {
            format!("roll {} of {} does not land on slot {}", d.roll, d.total_weight, d.slot)
        })?;
        ensure(terms.slots[index].prize == d.prize, rules::DRAW_RECOMPUTES, || format!("slot {} prize", d.slot))?;
        let left = match self.stock_left[index] {
            None => None,
            Some(left) => {
                let rest = left.checked_sub(1).ok_or_else(|| {
                    InvariantViolation::new(rules::WITHIN_STOCK, format!("slot {index} given past its stock"))
                })?;
                Some(rest)
            }
        };
        ensure(left.is_some() != d.prize.is_thanks(), rules::WITHIN_STOCK, || "a prize slot without stock".into())?;
        ensure(d.stock_left_after == left, rules::WITHIN_STOCK, || format!("stock_left_after of slot {index}"))?;
        // The nonce is the member's next chance: the participation count after it.
        let mut after = self.count_participation(d.member_id, d.merchant_day, d.nonce, d.member_day_after)?;
        if let Some(rest) = left {
            self.stock_left[index] = Some(rest);
            if rest == 0 {
                self.table_version += 1;
            }
            after.prizes += 1;
        }
        ensure_figure(rules::COUNTS_AFTER, "member_prizes_after", d.member_prizes_after, after.prizes)?;
        self.participations.insert(d.member_id, after);
        self.award(AwardRef::Shake { member_id: d.member_id, nonce: d.nonce }, d.member_id, &d.prize)
    }
}

impl Campaign {
    /// Decides a batch of shakes in order against the table in force, each
    /// seeing the stock and counts the earlier ones left: each ask gets its
    /// draw or a refusal, and the draws are one event. The seed must open the
    /// commitment recorded when the campaign was scheduled.
    pub fn decide_shakes(
        &self,
        seed: &DrawSeed,
        asks: &[ShakeAsk],
        now: DateTime<Utc>,
    ) -> Result<ShakeBatch, CampaignError> {
        let state = self.state()?;
        let terms = state.shake_terms()?;
        if asks.is_empty() || asks.len() > SHAKES_PER_EVENT_MAX {
            return Err(CampaignError::BatchSize);
        }
        if !state.commitment.is_some_and(|c| c.opens_to(seed)) {
            return Err(CampaignError::SeedMismatch);
        }
        let mut work = Work {
            stock_left: state.stock_left.clone(),
            table_version: state.table_version,
            members: BTreeMap::new(),
            participants: state.participations.len(),
        };
        let mut outcomes = Vec::with_capacity(asks.len());
        for ask in asks {
            outcomes.push(state.decide_one(terms, &mut work, seed, ask, now)?);
        }
        let draws: Vec<ShakeDraw> = outcomes.iter().filter_map(|o| o.as_ref().ok().cloned()).collect();
        let event = (!draws.is_empty()).then_some(CampaignEvent::CampaignShakesDrawn { draws, drawn_at: now });
        Ok(ShakeBatch { event, outcomes })
    }
}
