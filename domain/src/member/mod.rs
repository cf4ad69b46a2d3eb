//! The member aggregate: card, points in lots, holds and the cash balance.
//!
//! Invariants (checked in `handle`, checked again in `apply`, which returns
//! the broken rule, see [`rules`]):
//! - the cash balance and every lot's remaining points are never negative;
//! - `points` equals the sum of the lots' remaining points, `held` the sum of holds;
//! - every figure an event states (`points_after`, `held_after`,
//!   `balance_after_fen`, the sum of its lot takes) is what the state gives;
//! - every event after registration belongs to a registered member;
//! - one command produces at most one event, except a registration with
//!   welcome points (`MemberRegistered`, then `PointsGranted`);
//! - initial points are granted once per member (a decision rule newer than
//!   some streams: `handle` refuses a second grant, `apply` does not).

mod commands;
mod events;
mod policy;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use commands::{
    Attribution, CardLevel, MemberCommand, PointsSource, Provenance, RegistrationSource, SpendPurpose, WelcomePoints,
};
pub use events::{LedgerLine, LotTake, MemberEvent};
pub use policy::{ExpiryPolicy, EXPIRY_DAYS_MAX};

use crate::invariant::{ensure, ensure_figure};
use crate::{
    AmountFen, BalanceFen, CardNumber, DomainEventMeta, EventSourced, InvariantViolation, MemberId, OpenId,
    PointsAmount, PointsBalance, Reference, TenantId,
};

/// Open lots per member; beyond it grants are refused (an operator merges).
pub const LOTS_MAX: usize = 20_000;
/// Concurrent point holds per member (unpaid orders).
pub const HOLDS_MAX: usize = 200;
/// Counter charges remembered for refunds; the oldest are forgotten first.
pub const REFUNDABLE_CHARGES_MAX: usize = 5_000;
/// Credited recharges remembered for reversals; the oldest are forgotten first.
pub const CREDITED_RECHARGES_MAX: usize = 5_000;
/// Reversals (WeChat Pay refunds) of one recharge; WeChat Pay allows 50 refunds per order.
pub const REVERSALS_PER_RECHARGE_MAX: usize = 50;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemberError {
    #[error("member is not registered")]
    NotRegistered,
    #[error("member is already registered with another identity")]
    AlreadyRegistered,
    #[error("insufficient balance: {balance_fen} fen available, {requested_fen} fen requested")]
    InsufficientBalance { balance_fen: i64, requested_fen: i64 },
    #[error("insufficient points: {available} available, {requested} requested")]
    InsufficientPoints { available: i64, requested: i64 },
    #[error("balance would overflow")]
    Overflow,
    #[error("invalid expiry policy")]
    InvalidExpiry,
    #[error("too many open points lots (max {LOTS_MAX})")]
    TooManyLots,
    #[error("too many open holds (max {HOLDS_MAX})")]
    TooManyHolds,
    #[error("hold {0} already exists")]
    HoldExists(String),
    #[error("hold {0} not found")]
    HoldNotFound(String),
    #[error("card level is already {0}")]
    SameCardLevel(String),
    #[error("no refundable charge at sequence {0}")]
    ChargeNotFound(u64),
    #[error("refund of {requested_fen} fen exceeds the {refundable_fen} fen still refundable")]
    RefundExceedsCharge { refundable_fen: i64, requested_fen: i64 },
    #[error("a member cannot refer themselves")]
    SelfReferral,
    #[error("initial points were already granted to this member")]
    InitialPointsGranted,
    #[error("no credited recharge for order {0}")]
    RechargeNotFound(String),
    #[error("reversal of {requested_fen} fen exceeds the {reversible_fen} fen of the recharge not yet reversed")]
    ReversalExceedsRecharge { reversible_fen: i64, requested_fen: i64 },
    #[error("refund {0} was already applied with a different amount")]
    RefundNoConflict(String),
    #[error("too many reversals of one recharge (max {REVERSALS_PER_RECHARGE_MAX})")]
    TooManyReversals,
}

/// Names of the rules [`Member::apply`] checks. Stable: reports and tests match on them.
pub mod rules {
    /// Only a registration may start the stream.
    pub const REGISTERED_FIRST: &str = "member.registered_first";
    pub const REGISTERED_ONCE: &str = "member.registered_once";
    pub const NO_SELF_REFERRAL: &str = "member.no_self_referral";
    /// `CardLevelChanged.from` is the level the member has.
    pub const CARD_LEVEL_FROM: &str = "member.card_level_from";
    /// A follow only when not following, an unfollow only when following.
    pub const FOLLOW_TOGGLES: &str = "member.follow_toggles";
    /// A grant opens the lot numbered after the last one.
    pub const LOT_NO_NEXT: &str = "member.lot_no_next";
    pub const LOT_KNOWN: &str = "member.lot_known";
    pub const LOT_COVERS_TAKE: &str = "member.lot_covers_take";
    /// An event's `points` is the sum of its lot takes, or the points of its hold.
    pub const TAKES_ADD_UP: &str = "member.takes_add_up";
    pub const POINTS_AFTER: &str = "member.points_after";
    pub const POINTS_IN_LOTS: &str = "member.points_in_lots";
    pub const HOLD_UNIQUE: &str = "member.hold_unique";
    pub const HOLD_KNOWN: &str = "member.hold_known";
    /// A release gives back (or expires) exactly what the hold took, lot by lot.
    pub const RELEASE_MATCHES_HOLD: &str = "member.release_matches_hold";
    pub const HELD_AFTER: &str = "member.held_after";
    pub const HELD_IN_HOLDS: &str = "member.held_in_holds";
    pub const BALANCE_AFTER: &str = "member.balance_after";
    pub const BALANCE_COVERS_DEBIT: &str = "member.balance_covers_debit";
    pub const REFUND_WITHIN_CHARGE: &str = "member.refund_within_charge";
    pub const RECHARGE_KNOWN: &str = "member.recharge_known";
    pub const REFUND_NO_ONCE: &str = "member.refund_no_once";
    pub const REVERSAL_WITHIN_RECHARGE: &str = "member.reversal_within_recharge";
    /// A reversal is flagged only when the balance cannot cover it.
    pub const FLAG_ONLY_WHEN_SHORT: &str = "member.flag_only_when_short";
    /// A figure past what its type holds.
    pub const NO_OVERFLOW: &str = "member.no_overflow";
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub member_id: MemberId,
    pub tenant_id: TenantId,
    pub card_no: CardNumber,
    pub openid: Option<OpenId>,
    pub card_level: CardLevel,
    pub registered_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lot {
    pub granted: PointsBalance,
    /// Zero never stays: an emptied lot is closed.
    pub remaining: PointsBalance,
    pub granted_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl Lot {
    fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|e| e <= now)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub points: PointsAmount,
    /// The lots the points came from, with their dates, so a release can
    /// restore a lot that a hold emptied.
    pub taken: Vec<HeldTake>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldTake {
    pub lot_no: u64,
    pub points: PointsAmount,
    pub granted_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A recharge credited to the balance, remembered so that refunds can reverse it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditedRecharge {
    pub amount_fen: BalanceFen,
    /// Taken back from the balance.
    pub reversed_fen: BalanceFen,
    /// Refunded by WeChat Pay but not covered by the balance (an operator resolves).
    pub flagged_fen: BalanceFen,
    /// refund_no → amount, reversed or flagged: each refund applies once.
    pub refunds: BTreeMap<String, AmountFen>,
    /// Member sequence of the credit; the oldest are forgotten first.
    pub credited_sequence: u64,
}

impl CreditedRecharge {
    /// Never negative: `apply` refuses a reversal beyond it.
    pub fn reversible_fen(&self) -> i64 {
        self.amount_fen.get() - self.reversed_fen.get() - self.flagged_fen.get()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Member {
    /// Number of events applied: the sequence of the last event.
    pub version: u64,
    pub registration: Option<Registration>,
    /// Open lots by lot number; lower numbers are older.
    pub lots: BTreeMap<u64, Lot>,
    pub next_lot_no: u64,
    pub holds: BTreeMap<String, Hold>,
    /// Points in lots (not held), including lots due but not yet expired.
    pub points: PointsBalance,
    pub held: PointsBalance,
    pub lifetime_points: PointsBalance,
    pub balance: BalanceFen,
    /// Charge sequence → fen still refundable.
    pub refundable_charges: BTreeMap<u64, AmountFen>,
    /// Order id → recharge, for reversals by WeChat Pay refunds.
    pub credited_recharges: BTreeMap<String, CreditedRecharge>,
    /// Whether the member follows the official account now.
    pub followed: bool,
    pub followed_at: Option<DateTime<Utc>>,
    pub unfollowed_at: Option<DateTime<Utc>>,
    /// What brought the member in, as recorded at registration; never changes.
    pub attribution: Option<Attribution>,
    /// Level 1 of the referral chain (from the registration only). Level 2 is
    /// the referrer's own `referrer`: load that member and read it.
    pub referrer: Option<MemberId>,
    /// A lot of source `initial` was granted: initial points come once per member.
    pub initial_points_granted: bool,
}

/// A registration as asked for (the fields of `MemberCommand::Register`
/// except the welcome points).
struct NewMember {
    member_id: MemberId,
    tenant_id: TenantId,
    card_no: CardNumber,
    openid: Option<OpenId>,
    source: RegistrationSource,
    card_level: CardLevel,
    provenance: Provenance,
    attribution: Option<Attribution>,
}

/// The expiry date of a lot granted at `now`; a policy whose date cannot be
/// represented must not silently become "never".
fn expiry_date(expiry: ExpiryPolicy, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, MemberError> {
    if !expiry.is_valid() {
        return Err(MemberError::InvalidExpiry);
    }
    let expires_at = expiry.expires_at(now);
    if expiry != ExpiryPolicy::Never && expires_at.is_none() {
        return Err(MemberError::InvalidExpiry);
    }
    Ok(expires_at)
}

// ---------------------------------------------------------------- deciding

impl Member {
    /// Points that can be spent at `now` (lots not yet expired).
    pub fn spendable_points(&self, now: DateTime<Utc>) -> i64 {
        self.lots.values().filter(|l| !l.is_expired(now)).map(|l| l.remaining.get()).sum()
    }

    /// Lots due for expiry at `now` that still hold points.
    pub fn due_lots(&self, now: DateTime<Utc>) -> Vec<LotTake> {
        self.lots
            .iter()
            .filter(|(_, l)| l.is_expired(now))
            .filter_map(|(no, l)| {
                PointsAmount::new(l.remaining.get()).ok().map(|points| LotTake { lot_no: *no, points })
            })
            .collect()
    }

    fn registered(&self) -> Result<&Registration, MemberError> {
        self.registration.as_ref().ok_or(MemberError::NotRegistered)
    }

    /// Takes `points` from live lots, oldest first.
    fn take_oldest_first(&self, points: PointsAmount, now: DateTime<Utc>) -> Result<Vec<LotTake>, MemberError> {
        let available = self.spendable_points(now);
        if available < points.get() {
            return Err(MemberError::InsufficientPoints { available, requested: points.get() });
        }
        let mut left = points.get();
        let mut taken = Vec::new();
        for (no, lot) in self.lots.iter().filter(|(_, l)| !l.is_expired(now)) {
            if left == 0 {
                break;
            }
            let take = lot.remaining.get().min(left);
            left -= take;
            if let Ok(points) = PointsAmount::new(take) {
                taken.push(LotTake { lot_no: *no, points });
            }
        }
        debug_assert_eq!(left, 0);
        Ok(taken)
    }

    fn points_minus(&self, points: PointsAmount) -> Result<PointsBalance, MemberError> {
        let available = self.points.get();
        self.points.checked_sub(points).ok_or(MemberError::InsufficientPoints { available, requested: points.get() })
    }

    /// The lot takes of a deduction or a spend, and the points after it.
    fn take_points(
        &self,
        points: PointsAmount,
        now: DateTime<Utc>,
    ) -> Result<(Vec<LotTake>, PointsBalance), MemberError> {
        self.registered()?;
        let taken = self.take_oldest_first(points, now)?;
        Ok((taken, self.points_minus(points)?))
    }

    fn register(
        &self,
        new: NewMember,
        welcome: Option<WelcomePoints>,
        now: DateTime<Utc>,
    ) -> Result<Vec<MemberEvent>, MemberError> {
        if let Some(existing) = &self.registration {
            // A duplicate registration of the same identity is a no-op.
            return if existing.member_id == new.member_id
                && existing.tenant_id == new.tenant_id
                && existing.openid == new.openid
            {
                Ok(Vec::new())
            } else {
                Err(MemberError::AlreadyRegistered)
            };
        }
        if new.attribution.as_ref().and_then(Attribution::referrer) == Some(new.member_id) {
            return Err(MemberError::SelfReferral);
        }
        let welcome_grant = match welcome {
            Some(welcome) => Some(MemberEvent::PointsGranted {
                lot_no: 1,
                points: welcome.points,
                source: PointsSource::Initial,
                granted_at: now,
                expires_at: expiry_date(welcome.expiry, now)?,
                provenance: Provenance {
                    actor: new.provenance.actor.clone(),
                    reason: Reference::fixed("initial"),
                    reference: Reference::parse(&new.member_id.to_string()).ok(),
                    idempotency_key: new.provenance.idempotency_key.clone(),
                },
                points_after: PointsBalance::ZERO.checked_add(welcome.points).ok_or(MemberError::Overflow)?,
            }),
            None => None,
        };
        let registered = MemberEvent::MemberRegistered {
            member_id: new.member_id,
            tenant_id: new.tenant_id,
            card_no: new.card_no,
            openid: new.openid,
            source: new.source,
            card_level: new.card_level,
            registered_at: now,
            actor: new.provenance.actor,
            idempotency_key: new.provenance.idempotency_key,
            attribution: new.attribution,
        };
        Ok(std::iter::once(registered).chain(welcome_grant).collect())
    }

    fn follow(
        &self,
        attribution: Attribution,
        provenance: Provenance,
        now: DateTime<Utc>,
    ) -> Result<Vec<MemberEvent>, MemberError> {
        let registration = self.registered()?;
        if attribution.referrer() == Some(registration.member_id) {
            return Err(MemberError::SelfReferral);
        }
        if self.followed {
            return Ok(Vec::new());
        }
        Ok(vec![MemberEvent::MemberFollowed { attribution, followed_at: now, provenance }])
    }

    fn unfollow(&self, provenance: Provenance, now: DateTime<Utc>) -> Result<Vec<MemberEvent>, MemberError> {
        self.registered()?;
        if !self.followed {
            return Ok(Vec::new());
        }
        Ok(vec![MemberEvent::MemberUnfollowed { unfollowed_at: now, provenance }])
    }

    fn set_card_level(&self, card_level: CardLevel, provenance: Provenance) -> Result<Vec<MemberEvent>, MemberError> {
        let current = &self.registered()?.card_level;
        if *current == card_level {
            return Err(MemberError::SameCardLevel(card_level.as_str().to_owned()));
        }
        Ok(vec![MemberEvent::CardLevelChanged { from: current.clone(), to: card_level, provenance }])
    }

    fn grant_points(
        &self,
        points: PointsAmount,
        source: PointsSource,
        expiry: ExpiryPolicy,
        provenance: Provenance,
        now: DateTime<Utc>,
    ) -> Result<Vec<MemberEvent>, MemberError> {
        self.registered()?;
        let expires_at = expiry_date(expiry, now)?;
        if source == PointsSource::Initial && self.initial_points_granted {
            return Err(MemberError::InitialPointsGranted);
        }
        if self.lots.len() >= LOTS_MAX {
            return Err(MemberError::TooManyLots);
        }
        let points_after = self.points.checked_add(points).ok_or(MemberError::Overflow)?;
        self.lifetime_points.checked_add(points).ok_or(MemberError::Overflow)?;
        Ok(vec![MemberEvent::PointsGranted {
            lot_no: self.next_lot_no + 1,
            points,
            source,
            granted_at: now,
            expires_at,
            provenance,
            points_after,
        }])
    }

    fn hold_points(
        &self,
        hold_id: Reference,
        points: PointsAmount,
        provenance: Provenance,
        now: DateTime<Utc>,
    ) -> Result<Vec<MemberEvent>, MemberError> {
        self.registered()?;
        if self.holds.contains_key(hold_id.as_str()) {
            return Err(MemberError::HoldExists(hold_id.to_string()));
        }
        if self.holds.len() >= HOLDS_MAX {
            return Err(MemberError::TooManyHolds);
        }
        let taken = self.take_oldest_first(points, now)?;
        let held_after = self.held.checked_add(points).ok_or(MemberError::Overflow)?.get();
        let points_after = self.points_minus(points)?;
        Ok(vec![MemberEvent::PointsHeld { hold_id, points, taken, provenance, points_after, held_after }])
    }

    fn hold(&self, hold_id: &Reference) -> Result<&Hold, MemberError> {
        self.registered()?;
        self.holds.get(hold_id.as_str()).ok_or_else(|| MemberError::HoldNotFound(hold_id.to_string()))
    }

    fn held_without(&self, hold: &Hold) -> Result<i64, MemberError> {
        Ok(self.held.checked_sub(hold.points).ok_or(MemberError::Overflow)?.get())
    }

    fn spend_held_points(&self, hold_id: Reference, provenance: Provenance) -> Result<Vec<MemberEvent>, MemberError> {
        let hold = self.hold(&hold_id)?;
        let held_after = self.held_without(hold)?;
        let points = hold.points;
        Ok(vec![MemberEvent::HeldPointsSpent { hold_id, points, provenance, points_after: self.points, held_after }])
    }

    fn release_held_points(
        &self,
        hold_id: Reference,
        provenance: Provenance,
        now: DateTime<Utc>,
    ) -> Result<Vec<MemberEvent>, MemberError> {
        let hold = self.hold(&hold_id)?;
        let (expired, returned): (Vec<&HeldTake>, Vec<&HeldTake>) =
            hold.taken.iter().partition(|take| take.expires_at.is_some_and(|e| e <= now));
        let lot_takes = |takes: Vec<&HeldTake>| -> Vec<LotTake> {
            takes.into_iter().map(|t| LotTake { lot_no: t.lot_no, points: t.points }).collect()
        };
        let (returned, expired) = (lot_takes(returned), lot_takes(expired));
        let back: i64 = returned.iter().map(|t| t.points.get()).sum();
        let points_after = points_plus(self.points, back).ok_or(MemberError::Overflow)?;
        let held_after = self.held_without(hold)?;
        let points = hold.points;
        Ok(vec![MemberEvent::PointsHoldReleased {
            hold_id,
            points,
            returned,
            expired,
            provenance,
            points_after,
            held_after,
        }])
    }

    fn expire_points(&self, provenance: Provenance, now: DateTime<Utc>) -> Result<Vec<MemberEvent>, MemberError> {
        self.registered()?;
        // One event carries at most `PointsAmount::MAX` points (each lot holds
        // at most that much, so at least one due lot always fits); lots left
        // over stay due and expire on the next run.
        let mut lots = Vec::new();
        let mut total: i64 = 0;
        for lot in self.due_lots(now) {
            if total + lot.points.get() > PointsAmount::MAX {
                break;
            }
            total += lot.points.get();
            lots.push(lot);
        }
        let Ok(points) = PointsAmount::new(total) else {
            return Ok(Vec::new()); // nothing due: expiry is naturally idempotent
        };
        let points_after = self.points_minus(points).map_err(|_| MemberError::Overflow)?;
        Ok(vec![MemberEvent::PointsExpired { points, lots, as_of: now, provenance, points_after }])
    }

    fn credit(&self, amount_fen: AmountFen) -> Result<BalanceFen, MemberError> {
        self.registered()?;
        self.balance.checked_add(amount_fen).ok_or(MemberError::Overflow)
    }

    fn charge_cash(&self, amount_fen: AmountFen, provenance: Provenance) -> Result<Vec<MemberEvent>, MemberError> {
        self.registered()?;
        let balance_after_fen = self.balance.checked_sub(amount_fen).ok_or(MemberError::InsufficientBalance {
            balance_fen: self.balance.get(),
            requested_fen: amount_fen.get(),
        })?;
        Ok(vec![MemberEvent::CashCharged { amount_fen, provenance, balance_after_fen }])
    }

    fn refund_charge(
        &self,
        charge_sequence: u64,
        amount_fen: AmountFen,
        provenance: Provenance,
    ) -> Result<Vec<MemberEvent>, MemberError> {
        self.registered()?;
        let refundable_fen =
            self.refundable_charges.get(&charge_sequence).ok_or(MemberError::ChargeNotFound(charge_sequence))?.get();
        if amount_fen.get() > refundable_fen {
            return Err(MemberError::RefundExceedsCharge { refundable_fen, requested_fen: amount_fen.get() });
        }
        let balance_after_fen = self.credit(amount_fen)?;
        Ok(vec![MemberEvent::ChargeRefunded {
            amount_fen,
            reverses_sequence: charge_sequence,
            provenance,
            balance_after_fen,
        }])
    }

    fn reverse_recharge(
        &self,
        order_id: Reference,
        refund_no: Reference,
        amount_fen: AmountFen,
        provenance: Provenance,
    ) -> Result<Vec<MemberEvent>, MemberError> {
        self.registered()?;
        let recharge = self
            .credited_recharges
            .get(order_id.as_str())
            .ok_or_else(|| MemberError::RechargeNotFound(order_id.to_string()))?;
        if let Some(applied) = recharge.refunds.get(refund_no.as_str()) {
            // A redelivered refund notification: applied once, either way.
            return if *applied == amount_fen {
                Ok(Vec::new())
            } else {
                Err(MemberError::RefundNoConflict(refund_no.to_string()))
            };
        }
        if recharge.refunds.len() >= REVERSALS_PER_RECHARGE_MAX {
            return Err(MemberError::TooManyReversals);
        }
        let reversible_fen = recharge.reversible_fen();
        if amount_fen.get() > reversible_fen {
            return Err(MemberError::ReversalExceedsRecharge { reversible_fen, requested_fen: amount_fen.get() });
        }
        let event = match self.balance.checked_sub(amount_fen) {
            Some(balance_after_fen) => {
                MemberEvent::RechargeReversed { amount_fen, order_id, refund_no, provenance, balance_after_fen }
            }
            None => MemberEvent::RechargeReversalFlagged {
                amount_fen,
                order_id,
                refund_no,
                balance_fen: self.balance,
                provenance,
            },
        };
        Ok(vec![event])
    }
}

/// `balance + points`, for points that may be zero.
fn points_plus(balance: PointsBalance, points: i64) -> Option<PointsBalance> {
    balance.get().checked_add(points).and_then(PointsBalance::new)
}

// ---------------------------------------------------------------- applying

fn violation(rule: &'static str, detail: impl Into<String>) -> InvariantViolation {
    InvariantViolation::new(rule, detail)
}

fn overflow(what: &str) -> InvariantViolation {
    violation(rules::NO_OVERFLOW, format!("{what} overflows"))
}

fn sum_takes(takes: &[LotTake]) -> Result<i64, InvariantViolation> {
    takes.iter().try_fold(0i64, |sum, t| sum.checked_add(t.points.get())).ok_or_else(|| overflow("the lot takes"))
}

fn ensure_takes_add_up(points: PointsAmount, takes: &[LotTake]) -> Result<(), InvariantViolation> {
    let sum = sum_takes(takes)?;
    ensure(sum == points.get(), rules::TAKES_ADD_UP, || format!("points is {points} but its lot takes add up to {sum}"))
}

impl Member {
    fn apply_registered(
        &mut self,
        registration: Registration,
        source: RegistrationSource,
        attribution: Option<&Attribution>,
    ) -> Result<(), InvariantViolation> {
        ensure(self.registration.is_none(), rules::REGISTERED_ONCE, || "a second registration".into())?;
        let referrer = attribution.and_then(Attribution::referrer);
        ensure(referrer != Some(registration.member_id), rules::NO_SELF_REFERRAL, || {
            format!("member {} refers itself", registration.member_id)
        })?;
        self.followed = source == RegistrationSource::Subscribe;
        self.followed_at = self.followed.then_some(registration.registered_at);
        self.attribution = attribution.cloned();
        self.referrer = referrer;
        self.registration = Some(registration);
        Ok(())
    }

    fn apply_card_level(&mut self, from: &CardLevel, to: &CardLevel) -> Result<(), InvariantViolation> {
        let registration =
            self.registration.as_mut().ok_or_else(|| violation(rules::REGISTERED_FIRST, "no registration"))?;
        let current = &registration.card_level;
        ensure(current == from, rules::CARD_LEVEL_FROM, || {
            format!("from is {} but the level is {}", from.as_str(), current.as_str())
        })?;
        registration.card_level = to.clone();
        Ok(())
    }

    fn apply_follow(&mut self, followed: bool, at: DateTime<Utc>) -> Result<(), InvariantViolation> {
        ensure(self.followed != followed, rules::FOLLOW_TOGGLES, || {
            String::from(if followed { "followed twice" } else { "unfollowed without following" })
        })?;
        self.followed = followed;
        if followed {
            self.followed_at = Some(at);
        } else {
            self.unfollowed_at = Some(at);
        }
        Ok(())
    }

    fn apply_granted(
        &mut self,
        lot_no: u64,
        lot: Lot,
        source: PointsSource,
        points: PointsAmount,
        points_after: PointsBalance,
    ) -> Result<(), InvariantViolation> {
        let next = self.next_lot_no.saturating_add(1);
        ensure(lot_no == next, rules::LOT_NO_NEXT, || format!("lot_no is {lot_no} but the next lot is {next}"))?;
        let points_now = self.points.checked_add(points).ok_or_else(|| overflow("points"))?;
        ensure_figure(rules::POINTS_AFTER, "points_after", points_after, points_now)?;
        self.lifetime_points = self.lifetime_points.checked_add(points).ok_or_else(|| overflow("lifetime points"))?;
        self.next_lot_no = lot_no;
        self.initial_points_granted |= source == PointsSource::Initial;
        self.lots.insert(lot_no, lot);
        self.points = points_now;
        Ok(())
    }

    /// Takes points out of their lots; an emptied lot is closed.
    fn take_from_lots(&mut self, taken: &[LotTake]) -> Result<(), InvariantViolation> {
        for take in taken {
            let lot_no = take.lot_no;
            let lot = self
                .lots
                .get_mut(&lot_no)
                .ok_or_else(|| violation(rules::LOT_KNOWN, format!("take from lot {lot_no}, which is not open")))?;
            let remaining = lot.remaining;
            lot.remaining = remaining.checked_sub(take.points).ok_or_else(|| {
                violation(
                    rules::LOT_COVERS_TAKE,
                    format!("take of {} from lot {lot_no} holding {remaining}", take.points),
                )
            })?;
            if lot.remaining == PointsBalance::ZERO {
                self.lots.remove(&lot_no);
            }
        }
        Ok(())
    }

    /// `points` out of the books (the lots already gave them up).
    fn points_minus_taken(&self, points: PointsAmount) -> Result<PointsBalance, InvariantViolation> {
        self.points.checked_sub(points).ok_or_else(|| {
            violation(rules::POINTS_IN_LOTS, format!("{points} points taken out of {} on the books", self.points))
        })
    }

    /// A deduction, a spend or an expiry: points out of lots.
    fn apply_taken(
        &mut self,
        points: PointsAmount,
        taken: &[LotTake],
        points_after: PointsBalance,
    ) -> Result<(), InvariantViolation> {
        ensure_takes_add_up(points, taken)?;
        self.take_from_lots(taken)?;
        let points_now = self.points_minus_taken(points)?;
        ensure_figure(rules::POINTS_AFTER, "points_after", points_after, points_now)?;
        self.points = points_now;
        Ok(())
    }

    fn apply_held(
        &mut self,
        hold_id: &Reference,
        points: PointsAmount,
        taken: &[LotTake],
        points_after: PointsBalance,
        held_after: i64,
    ) -> Result<(), InvariantViolation> {
        ensure(!self.holds.contains_key(hold_id.as_str()), rules::HOLD_UNIQUE, || format!("hold {hold_id} exists"))?;
        ensure_takes_add_up(points, taken)?;
        let held_takes = taken
            .iter()
            .map(|t| {
                let lot = self.lots.get(&t.lot_no).ok_or_else(|| {
                    violation(rules::LOT_KNOWN, format!("hold from lot {}, which is not open", t.lot_no))
                })?;
                Ok(HeldTake {
                    lot_no: t.lot_no,
                    points: t.points,
                    granted_at: lot.granted_at,
                    expires_at: lot.expires_at,
                })
            })
            .collect::<Result<Vec<_>, InvariantViolation>>()?;
        self.take_from_lots(taken)?;
        let points_now = self.points_minus_taken(points)?;
        ensure_figure(rules::POINTS_AFTER, "points_after", points_after, points_now)?;
        let held_now = self.held.checked_add(points).ok_or_else(|| overflow("held points"))?;
        ensure_figure(rules::HELD_AFTER, "held_after", held_after, held_now.get())?;
        self.holds.insert(hold_id.to_string(), Hold { points, taken: held_takes });
        self.points = points_now;
        self.held = held_now;
        Ok(())
    }

    /// Removes the hold an event ends; its points must be the event's.
    fn end_hold(&mut self, hold_id: &Reference, points: PointsAmount) -> Result<Hold, InvariantViolation> {
        let hold = self
            .holds
            .remove(hold_id.as_str())
            .ok_or_else(|| violation(rules::HOLD_KNOWN, format!("hold {hold_id} does not exist")))?;
        ensure(hold.points == points, rules::TAKES_ADD_UP, || {
            format!("points is {points} but hold {hold_id} holds {}", hold.points)
        })?;
        Ok(hold)
    }

    fn held_after_end(&self, hold: &Hold, held_after: i64) -> Result<PointsBalance, InvariantViolation> {
        let held_now = self.held.checked_sub(hold.points).ok_or_else(|| {
            violation(rules::HELD_IN_HOLDS, format!("a hold of {} out of {} held", hold.points, self.held))
        })?;
        ensure_figure(rules::HELD_AFTER, "held_after", held_after, held_now.get())?;
        Ok(held_now)
    }

    fn apply_held_spent(
        &mut self,
        hold_id: &Reference,
        points: PointsAmount,
        points_after: PointsBalance,
        held_after: i64,
    ) -> Result<(), InvariantViolation> {
        let hold = self.end_hold(hold_id, points)?;
        ensure_figure(rules::POINTS_AFTER, "points_after", points_after, self.points)?;
        self.held = self.held_after_end(&hold, held_after)?;
        Ok(())
    }

    /// Points of lots that expired while held are dropped (`expired`); the
    /// others go back to their lots, reopening a lot the hold emptied.
    fn apply_released(
        &mut self,
        hold_id: &Reference,
        points: PointsAmount,
        returned: &[LotTake],
        expired: &[LotTake],
        points_after: PointsBalance,
        held_after: i64,
    ) -> Result<(), InvariantViolation> {
        let hold = self.end_hold(hold_id, points)?;
        ensure_release_matches(&hold, returned, expired)?;
        let back = sum_takes(returned)?;
        let points_now = points_plus(self.points, back).ok_or_else(|| overflow("points"))?;
        ensure_figure(rules::POINTS_AFTER, "points_after", points_after, points_now)?;
        self.held = self.held_after_end(&hold, held_after)?;
        for take in returned {
            let Some(origin) = hold.taken.iter().find(|t| t.lot_no == take.lot_no) else {
                return Err(violation(rules::RELEASE_MATCHES_HOLD, format!("lot {} is not in the hold", take.lot_no)));
            };
            let lot = self.lots.entry(take.lot_no).or_insert(Lot {
                granted: PointsBalance::ZERO,
                remaining: PointsBalance::ZERO,
                granted_at: origin.granted_at,
                expires_at: origin.expires_at,
            });
            lot.remaining = lot.remaining.checked_add(take.points).ok_or_else(|| overflow("a lot"))?;
            lot.granted = lot.granted.max(lot.remaining);
        }
        self.points = points_now;
        Ok(())
    }

    fn apply_credit(&mut self, amount_fen: AmountFen, balance_after_fen: BalanceFen) -> Result<(), InvariantViolation> {
        let balance = self.balance.checked_add(amount_fen).ok_or_else(|| overflow("the balance"))?;
        ensure_figure(rules::BALANCE_AFTER, "balance_after_fen", balance_after_fen, balance)?;
        self.balance = balance;
        Ok(())
    }

    fn apply_debit(&mut self, amount_fen: AmountFen, balance_after_fen: BalanceFen) -> Result<(), InvariantViolation> {
        let balance = self.balance.checked_sub(amount_fen).ok_or_else(|| {
            violation(
                rules::BALANCE_COVERS_DEBIT,
                format!("a debit of {amount_fen} fen from a balance of {} fen", self.balance),
            )
        })?;
        ensure_figure(rules::BALANCE_AFTER, "balance_after_fen", balance_after_fen, balance)?;
        self.balance = balance;
        Ok(())
    }

    fn remember_recharge(&mut self, order_id: &Reference, amount_fen: AmountFen) -> Result<(), InvariantViolation> {
        let sequence = self.version;
        let recharge = self
            .credited_recharges
            .entry(order_id.to_string())
            .or_insert_with(|| CreditedRecharge { credited_sequence: sequence, ..CreditedRecharge::default() });
        recharge.amount_fen = recharge.amount_fen.checked_add(amount_fen).ok_or_else(|| overflow("a recharge"))?;
        if self.credited_recharges.len() > CREDITED_RECHARGES_MAX {
            let oldest = self
                .credited_recharges
                .iter()
                .min_by_key(|(_, r)| r.credited_sequence)
                .map(|(order_id, _)| order_id.clone());
            if let Some(oldest) = oldest {
                self.credited_recharges.remove(&oldest);
            }
        }
        Ok(())
    }

    fn remember_charge(&mut self, amount_fen: AmountFen) {
        self.refundable_charges.insert(self.version, amount_fen);
        while self.refundable_charges.len() > REFUNDABLE_CHARGES_MAX {
            self.refundable_charges.pop_first();
        }
    }

    /// A charge no longer remembered (beyond `REFUNDABLE_CHARGES_MAX`) is not
    /// checked: `handle` refused refunds of it, and the limit may have been
    /// larger when an old refund was written.
    fn apply_charge_refund(&mut self, sequence: u64, amount_fen: AmountFen) -> Result<(), InvariantViolation> {
        let Some(left) = self.refundable_charges.get(&sequence).copied() else {
            return Ok(());
        };
        let rest = left.get() - amount_fen.get();
        ensure(rest >= 0, rules::REFUND_WITHIN_CHARGE, || {
            format!("a refund of {amount_fen} fen of charge {sequence} with {left} fen refundable")
        })?;
        match AmountFen::new(rest) {
            Ok(rest) => self.refundable_charges.insert(sequence, rest),
            // Nothing left to refund.
            Err(_) => self.refundable_charges.remove(&sequence),
        };
        Ok(())
    }

    fn apply_reversal(
        &mut self,
        order_id: &Reference,
        refund_no: &Reference,
        amount_fen: AmountFen,
        flagged: bool,
    ) -> Result<(), InvariantViolation> {
        let recharge = self.credited_recharges.get_mut(order_id.as_str()).ok_or_else(|| {
            violation(rules::RECHARGE_KNOWN, format!("reversal of recharge {order_id}, which was not credited"))
        })?;
        ensure(!recharge.refunds.contains_key(refund_no.as_str()), rules::REFUND_NO_ONCE, || {
            format!("refund {refund_no} of recharge {order_id} applied twice")
        })?;
        let reversible_fen = recharge.reversible_fen();
        ensure(amount_fen.get() <= reversible_fen, rules::REVERSAL_WITHIN_RECHARGE, || {
            format!("a reversal of {amount_fen} fen of recharge {order_id} with {reversible_fen} fen reversible")
        })?;
        let total = if flagged { &mut recharge.flagged_fen } else { &mut recharge.reversed_fen };
        *total = total.checked_add(amount_fen).ok_or_else(|| overflow("a reversal"))?;
        recharge.refunds.insert(refund_no.to_string(), amount_fen);
        Ok(())
    }

    fn apply_flagged(
        &mut self,
        order_id: &Reference,
        refund_no: &Reference,
        amount_fen: AmountFen,
        balance_fen: BalanceFen,
    ) -> Result<(), InvariantViolation> {
        ensure_figure(rules::BALANCE_AFTER, "balance_fen", balance_fen, self.balance)?;
        ensure(self.balance.checked_sub(amount_fen).is_none(), rules::FLAG_ONLY_WHEN_SHORT, || {
            format!("a reversal of {amount_fen} fen flagged though the balance holds {} fen", self.balance)
        })?;
        self.apply_reversal(order_id, refund_no, amount_fen, true)
    }

    /// The sums the events keep in step; a mismatch is a bug in `apply`.
    fn check_sums(&self) -> Result<(), InvariantViolation> {
        let in_lots = self.lots.values().try_fold(0i64, |sum, l| sum.checked_add(l.remaining.get()));
        ensure(in_lots == Some(self.points.get()), rules::POINTS_IN_LOTS, || {
            format!("points is {} but the lots hold {in_lots:?}", self.points)
        })?;
        let in_holds = self.holds.values().try_fold(0i64, |sum, h| sum.checked_add(h.points.get()));
        ensure(in_holds == Some(self.held.get()), rules::HELD_IN_HOLDS, || {
            format!("held is {} but the holds hold {in_holds:?}", self.held)
        })
    }

    fn apply_event(&mut self, event: &MemberEvent) -> Result<(), InvariantViolation> {
        match event {
            MemberEvent::MemberRegistered {
                member_id,
                tenant_id,
                card_no,
                openid,
                source,
                card_level,
                registered_at,
                attribution,
                ..
            } => {
                let registration = Registration {
                    member_id: *member_id,
                    tenant_id: tenant_id.clone(),
                    card_no: card_no.clone(),
                    openid: openid.clone(),
                    card_level: card_level.clone(),
                    registered_at: *registered_at,
                };
                self.apply_registered(registration, *source, attribution.as_ref())
            }
            MemberEvent::CardLevelChanged { from, to, .. } => self.apply_card_level(from, to),
            MemberEvent::MemberFollowed { followed_at, .. } => self.apply_follow(true, *followed_at),
            MemberEvent::MemberUnfollowed { unfollowed_at, .. } => self.apply_follow(false, *unfollowed_at),
            MemberEvent::PointsGranted { lot_no, points, source, granted_at, expires_at, points_after, .. } => {
                let lot = Lot {
                    granted: PointsBalance::ZERO.checked_add(*points).ok_or_else(|| overflow("a lot"))?,
                    remaining: PointsBalance::ZERO.checked_add(*points).ok_or_else(|| overflow("a lot"))?,
                    granted_at: *granted_at,
                    expires_at: *expires_at,
                };
                self.apply_granted(*lot_no, lot, *source, *points, *points_after)
            }
            MemberEvent::PointsDeducted { points, taken, points_after, .. }
            | MemberEvent::PointsSpent { points, taken, points_after, .. }
            | MemberEvent::PointsExpired { points, lots: taken, points_after, .. } => {
                self.apply_taken(*points, taken, *points_after)
            }
            MemberEvent::PointsHeld { hold_id, points, taken, points_after, held_after, .. } => {
                self.apply_held(hold_id, *points, taken, *points_after, *held_after)
            }
            MemberEvent::HeldPointsSpent { hold_id, points, points_after, held_after, .. } => {
                self.apply_held_spent(hold_id, *points, *points_after, *held_after)
            }
            MemberEvent::PointsHoldReleased {
                hold_id, points, returned, expired, points_after, held_after, ..
            } => self.apply_released(hold_id, *points, returned, expired, *points_after, *held_after),
            MemberEvent::CashDeposited { amount_fen, balance_after_fen, .. } => {
                self.apply_credit(*amount_fen, *balance_after_fen)
            }
            MemberEvent::RechargeCredited { amount_fen, order_id, balance_after_fen, .. } => {
                self.apply_credit(*amount_fen, *balance_after_fen)?;
                self.remember_recharge(order_id, *amount_fen)
            }
            MemberEvent::CashCharged { amount_fen, balance_after_fen, .. } => {
                self.apply_debit(*amount_fen, *balance_after_fen)?;
                self.remember_charge(*amount_fen);
                Ok(())
            }
            MemberEvent::ChargeRefunded { amount_fen, reverses_sequence, balance_after_fen, .. } => {
                self.apply_charge_refund(*reverses_sequence, *amount_fen)?;
                self.apply_credit(*amount_fen, *balance_after_fen)
            }
            MemberEvent::RechargeReversed { amount_fen, order_id, refund_no, balance_after_fen, .. } => {
                self.apply_reversal(order_id, refund_no, *amount_fen, false)?;
                self.apply_debit(*amount_fen, *balance_after_fen)
            }
            MemberEvent::RechargeReversalFlagged { amount_fen, order_id, refund_no, balance_fen, .. } => {
                self.apply_flagged(order_id, refund_no, *amount_fen, *balance_fen)
            }
        }
    }
}

/// `returned` and `expired` together are the hold's takes, lot by lot.
fn ensure_release_matches(hold: &Hold, returned: &[LotTake], expired: &[LotTake]) -> Result<(), InvariantViolation> {
    let mut left: BTreeMap<u64, i64> = BTreeMap::new();
    for take in &hold.taken {
        *left.entry(take.lot_no).or_default() += take.points.get();
    }
    for take in returned.iter().chain(expired) {
        let lot_left = left
            .get_mut(&take.lot_no)
            .ok_or_else(|| violation(rules::RELEASE_MATCHES_HOLD, format!("lot {} is not in the hold", take.lot_no)))?;
        *lot_left -= take.points.get();
    }
    let unmatched: Vec<u64> = left.into_iter().filter(|(_, points)| *points != 0).map(|(lot_no, _)| lot_no).collect();
    ensure(unmatched.is_empty(), rules::RELEASE_MATCHES_HOLD, || {
        format!("what goes back to lots {unmatched:?} differs from what the hold took")
    })
}

impl EventSourced for Member {
    const TYPE: &'static str = "member";
    // 2: follow state, attribution and credited recharges.
    /// 3: `initial_points_granted`.
    const STATE_VERSION: i32 = 3;
    type Command = MemberCommand;
    type Event = MemberEvent;
    type Error = MemberError;

    fn tenant(&self) -> Option<&TenantId> {
        self.registration.as_ref().map(|r| &r.tenant_id)
    }

    fn handle(&self, command: MemberCommand, now: DateTime<Utc>) -> Result<Vec<MemberEvent>, MemberError> {
        match command {
            MemberCommand::Register {
                member_id,
                tenant_id,
                card_no,
                openid,
                source,
                card_level,
                provenance,
                attribution,
                welcome,
            } => {
                let new =
                    NewMember { member_id, tenant_id, card_no, openid, source, card_level, provenance, attribution };
                self.register(new, welcome, now)
            }
            MemberCommand::Follow { attribution, provenance } => self.follow(attribution, provenance, now),
            MemberCommand::Unfollow { provenance } => self.unfollow(provenance, now),
            MemberCommand::SetCardLevel { card_level, provenance } => self.set_card_level(card_level, provenance),
            MemberCommand::GrantPoints { points, source, expiry, provenance } => {
                self.grant_points(points, source, expiry, provenance, now)
            }
            MemberCommand::DeductPoints { points, provenance } => {
                let (taken, points_after) = self.take_points(points, now)?;
                Ok(vec![MemberEvent::PointsDeducted { points, taken, provenance, points_after }])
            }
            MemberCommand::SpendPoints { points, purpose, provenance } => {
                let (taken, points_after) = self.take_points(points, now)?;
                Ok(vec![MemberEvent::PointsSpent { points, purpose, taken, provenance, points_after }])
            }
            MemberCommand::HoldPoints { hold_id, points, provenance } => {
                self.hold_points(hold_id, points, provenance, now)
            }
            MemberCommand::SpendHeldPoints { hold_id, provenance } => self.spend_held_points(hold_id, provenance),
            MemberCommand::ReleaseHeldPoints { hold_id, provenance } => {
                self.release_held_points(hold_id, provenance, now)
            }
            MemberCommand::ExpirePoints { provenance } => self.expire_points(provenance, now),
            MemberCommand::DepositCash { amount_fen, provenance } => {
                let balance_after_fen = self.credit(amount_fen)?;
                Ok(vec![MemberEvent::CashDeposited { amount_fen, provenance, balance_after_fen }])
            }
            MemberCommand::CreditRecharge { amount_fen, order_id, provenance } => {
                let balance_after_fen = self.credit(amount_fen)?;
                Ok(vec![MemberEvent::RechargeCredited { amount_fen, order_id, provenance, balance_after_fen }])
            }
            MemberCommand::ChargeCash { amount_fen, provenance } => self.charge_cash(amount_fen, provenance),
            MemberCommand::RefundCharge { charge_sequence, amount_fen, provenance } => {
                self.refund_charge(charge_sequence, amount_fen, provenance)
            }
            MemberCommand::ReverseRecharge { order_id, refund_no, amount_fen, provenance } => {
                self.reverse_recharge(order_id, refund_no, amount_fen, provenance)
            }
        }
    }

    fn apply(&mut self, event: &MemberEvent) -> Result<(), InvariantViolation> {
        let registration_first = self.registration.is_some() || matches!(event, MemberEvent::MemberRegistered { .. });
        ensure(registration_first, rules::REGISTERED_FIRST, || {
            format!("{} for an unregistered member", event.event_type())
        })?;
        self.version += 1;
        self.apply_event(event)?;
        self.check_sums()
    }
}
