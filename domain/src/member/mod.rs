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
//! - `total_paid` (cash paid net of refunds) is never negative and is what
//!   `PurchasePaid`/`PurchaseRefunded` state;
//! - initial points are granted once per member (a decision rule newer than
//!   some streams: `handle` refuses a second grant, `apply` does not).

mod commands;
mod decide;
mod events;
mod evolve;
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

use crate::card_levels::LevelSource;
use crate::invariant::ensure;
use crate::{
    AmountFen, BalanceFen, CardNumber, DomainEventMeta, EventSourced, InvariantViolation, MemberId, OpenId,
    PointsAmount, PointsBalance, TenantId,
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
    #[error("card level {0} is not in the tenant's catalog")]
    UnknownCardLevel(String),
    #[error("a purchase refund of {requested_fen} fen exceeds the {paid_fen} fen paid in total")]
    PurchaseRefundExceedsPaid { paid_fen: i64, requested_fen: i64 },
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
    /// Refunds never give back more than was charged: the total paid stays ≥ 0.
    pub const TOTAL_PAID_COVERS_REFUND: &str = "member.total_paid_covers_refund";
    /// `total_paid_after_fen` is what the state gives.
    pub const TOTAL_PAID_AFTER: &str = "member.total_paid_after";
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
    /// Cash charged from the balance (counter, mall, snatch) and purchases
    /// paid by WeChat Pay (`PurchasePaid`), net of refunds: what the card
    /// level rule's `total_paid` thresholds read.
    pub total_paid: BalanceFen,
    /// How the current card level was set (the rule may downgrade only as the
    /// tenant's policy allows for this source).
    pub card_level_source: LevelSource,
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

impl EventSourced for Member {
    const TYPE: &'static str = "member";
    // 2: follow state, attribution and credited recharges.
    /// 3: `initial_points_granted`.
    /// 4: `total_paid`, `card_level_source`.
    const STATE_VERSION: i32 = 4;
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
            MemberCommand::RecordPurchasePaid { amount_fen, payment, provenance } => {
                self.registered()?;
                let total_paid_after_fen = self.total_paid.checked_add(amount_fen).ok_or(MemberError::Overflow)?;
                Ok(vec![MemberEvent::PurchasePaid { amount_fen, payment, provenance, total_paid_after_fen }])
            }
            MemberCommand::RecordPurchaseRefunded { amount_fen, payment, provenance } => {
                self.registered()?;
                let total_paid_after_fen =
                    self.total_paid.checked_sub(amount_fen).ok_or(MemberError::PurchaseRefundExceedsPaid {
                        paid_fen: self.total_paid.get(),
                        requested_fen: amount_fen.get(),
                    })?;
                Ok(vec![MemberEvent::PurchaseRefunded { amount_fen, payment, provenance, total_paid_after_fen }])
            }
            MemberCommand::WithLevelRule { inner, catalog } => self.with_level_rule(*inner, &catalog, now),
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
