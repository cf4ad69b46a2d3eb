//! The member aggregate: card, points in lots, holds and the cash balance.
//!
//! Invariants (checked in `handle`, asserted again in `apply`):
//! - the cash balance and every lot's remaining points are never negative;
//! - `points` equals the sum of the lots' remaining points, `held` the sum of holds;
//! - every event after registration belongs to a registered member;
//! - one command produces at most one event, except a registration with
//!   welcome points (`MemberRegistered`, then `PointsGranted`);
//! - initial points are granted once per member.

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

use crate::{
    BalanceFen, CardNumber, DomainEventMeta, EventSourced, MemberId, OpenId, PointsAmount, PointsBalance, Reference,
    TenantId,
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
    pub granted: i64,
    pub remaining: i64,
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
    pub points: i64,
    /// The lots the points came from, with their dates, so a release can
    /// restore a lot that a hold emptied.
    pub taken: Vec<HeldTake>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldTake {
    pub lot_no: u64,
    pub points: i64,
    pub granted_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A recharge credited to the balance, remembered so that refunds can reverse it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditedRecharge {
    pub amount_fen: i64,
    /// Taken back from the balance.
    pub reversed_fen: i64,
    /// Refunded by WeChat Pay but not covered by the balance (an operator resolves).
    pub flagged_fen: i64,
    /// refund_no → amount, reversed or flagged: each refund applies once.
    pub refunds: BTreeMap<String, i64>,
    /// Member sequence of the credit; the oldest are forgotten first.
    pub credited_sequence: u64,
}

impl CreditedRecharge {
    pub fn reversible_fen(&self) -> i64 {
        self.amount_fen - self.reversed_fen - self.flagged_fen
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
    pub held: i64,
    pub lifetime_points: i64,
    pub balance: BalanceFen,
    /// Charge sequence → fen still refundable.
    pub refundable_charges: BTreeMap<u64, i64>,
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

impl Member {
    /// Points that can be spent at `now` (lots not yet expired).
    pub fn spendable_points(&self, now: DateTime<Utc>) -> i64 {
        self.lots.values().filter(|l| !l.is_expired(now)).map(|l| l.remaining).sum()
    }

    /// Lots due for expiry at `now` that still hold points.
    pub fn due_lots(&self, now: DateTime<Utc>) -> Vec<LotTake> {
        self.lots
            .iter()
            .filter(|(_, l)| l.is_expired(now) && l.remaining > 0)
            .filter_map(|(no, l)| PointsAmount::new(l.remaining).ok().map(|points| LotTake { lot_no: *no, points }))
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
        for (no, lot) in self.lots.iter().filter(|(_, l)| !l.is_expired(now) && l.remaining > 0) {
            if left == 0 {
                break;
            }
            let take = lot.remaining.min(left);
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

    fn handle_points(&self, command: MemberCommand, now: DateTime<Utc>) -> Result<Vec<MemberEvent>, MemberError> {
        self.registered()?;
        let event = match command {
            MemberCommand::GrantPoints { points, source, expiry, provenance } => {
                let expires_at = expiry_date(expiry, now)?;
                if source == PointsSource::Initial && self.initial_points_granted {
                    return Err(MemberError::InitialPointsGranted);
                }
                if self.lots.len() >= LOTS_MAX {
                    return Err(MemberError::TooManyLots);
                }
                let points_after = self.points.checked_add(points).ok_or(MemberError::Overflow)?;
                self.lifetime_points.checked_add(points.get()).ok_or(MemberError::Overflow)?;
                MemberEvent::PointsGranted {
                    lot_no: self.next_lot_no + 1,
                    points,
                    source,
                    granted_at: now,
                    expires_at,
                    provenance,
                    points_after,
                }
            }
            MemberCommand::DeductPoints { points, provenance } => {
                let taken = self.take_oldest_first(points, now)?;
                MemberEvent::PointsDeducted { points, taken, provenance, points_after: self.points_minus(points)? }
            }
            MemberCommand::SpendPoints { points, purpose, provenance } => {
                let taken = self.take_oldest_first(points, now)?;
                MemberEvent::PointsSpent {
                    points,
                    purpose,
                    taken,
                    provenance,
                    points_after: self.points_minus(points)?,
                }
            }
            MemberCommand::HoldPoints { hold_id, points, provenance } => {
                if self.holds.contains_key(hold_id.as_str()) {
                    return Err(MemberError::HoldExists(hold_id.to_string()));
                }
                if self.holds.len() >= HOLDS_MAX {
                    return Err(MemberError::TooManyHolds);
                }
                let taken = self.take_oldest_first(points, now)?;
                let held_after = self.held.checked_add(points.get()).ok_or(MemberError::Overflow)?;
                let points_after = self.points_minus(points)?;
                MemberEvent::PointsHeld { hold_id, points, taken, provenance, points_after, held_after }
            }
            MemberCommand::SpendHeldPoints { hold_id, provenance } => {
                let hold =
                    self.holds.get(hold_id.as_str()).ok_or_else(|| MemberError::HoldNotFound(hold_id.to_string()))?;
                let points =
                    PointsAmount::new(hold.points).map_err(|_| MemberError::HoldNotFound(hold_id.to_string()))?;
                let held_after = self.held - hold.points;
                MemberEvent::HeldPointsSpent { hold_id, points, provenance, points_after: self.points, held_after }
            }
            MemberCommand::ReleaseHeldPoints { hold_id, provenance } => {
                let hold =
                    self.holds.get(hold_id.as_str()).ok_or_else(|| MemberError::HoldNotFound(hold_id.to_string()))?;
                let points =
                    PointsAmount::new(hold.points).map_err(|_| MemberError::HoldNotFound(hold_id.to_string()))?;
                let (mut returned, mut expired) = (Vec::new(), Vec::new());
                for take in &hold.taken {
                    let Ok(points) = PointsAmount::new(take.points) else {
                        continue;
                    };
                    let lot_take = LotTake { lot_no: take.lot_no, points };
                    if take.expires_at.is_some_and(|e| e <= now) {
                        expired.push(lot_take);
                    } else {
                        returned.push(lot_take);
                    }
                }
                let back: i64 = returned.iter().map(|t| t.points.get()).sum();
                let points_after =
                    PointsBalance::new(self.points.get().checked_add(back).ok_or(MemberError::Overflow)?)
                        .ok_or(MemberError::Overflow)?;
                let held_after = self.held - hold.points;
                MemberEvent::PointsHoldReleased {
                    hold_id,
                    points,
                    returned,
                    expired,
                    provenance,
                    points_after,
                    held_after,
                }
            }
            MemberCommand::ExpirePoints { provenance } => {
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
                let points_after = PointsBalance::new(self.points.get() - total).ok_or(MemberError::Overflow)?;
                MemberEvent::PointsExpired { points, lots, as_of: now, provenance, points_after }
            }
            other => return unreachable_command(other),
        };
        Ok(vec![event])
    }

    fn handle_cash(&self, command: MemberCommand) -> Result<Vec<MemberEvent>, MemberError> {
        self.registered()?;
        let event = match command {
            MemberCommand::DepositCash { amount_fen, provenance } => {
                let balance_after_fen = self.balance.checked_add(amount_fen).ok_or(MemberError::Overflow)?;
                MemberEvent::CashDeposited { amount_fen, provenance, balance_after_fen }
            }
            MemberCommand::CreditRecharge { amount_fen, order_id, provenance } => {
                let balance_after_fen = self.balance.checked_add(amount_fen).ok_or(MemberError::Overflow)?;
                MemberEvent::RechargeCredited { amount_fen, order_id, provenance, balance_after_fen }
            }
            MemberCommand::ChargeCash { amount_fen, provenance } => {
                let balance_after_fen =
                    self.balance.checked_sub(amount_fen).ok_or(MemberError::InsufficientBalance {
                        balance_fen: self.balance.get(),
                        requested_fen: amount_fen.get(),
                    })?;
                MemberEvent::CashCharged { amount_fen, provenance, balance_after_fen }
            }
            MemberCommand::ReverseRecharge { order_id, refund_no, amount_fen, provenance } => {
                let recharge = self
                    .credited_recharges
                    .get(order_id.as_str())
                    .ok_or_else(|| MemberError::RechargeNotFound(order_id.to_string()))?;
                if let Some(applied) = recharge.refunds.get(refund_no.as_str()) {
                    // A redelivered refund notification: applied once, either way.
                    return if *applied == amount_fen.get() {
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
                    return Err(MemberError::ReversalExceedsRecharge {
                        reversible_fen,
                        requested_fen: amount_fen.get(),
                    });
                }
                match self.balance.checked_sub(amount_fen) {
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
                }
            }
            MemberCommand::RefundCharge { charge_sequence, amount_fen, provenance } => {
                let refundable_fen = *self
                    .refundable_charges
                    .get(&charge_sequence)
                    .ok_or(MemberError::ChargeNotFound(charge_sequence))?;
                if amount_fen.get() > refundable_fen {
                    return Err(MemberError::RefundExceedsCharge { refundable_fen, requested_fen: amount_fen.get() });
                }
                let balance_after_fen = self.balance.checked_add(amount_fen).ok_or(MemberError::Overflow)?;
                MemberEvent::ChargeRefunded {
                    amount_fen,
                    reverses_sequence: charge_sequence,
                    provenance,
                    balance_after_fen,
                }
            }
            other => return unreachable_command(other),
        };
        Ok(vec![event])
    }

    fn handle_card(&self, command: MemberCommand, now: DateTime<Utc>) -> Result<Vec<MemberEvent>, MemberError> {
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
                if let Some(existing) = &self.registration {
                    // A duplicate registration of the same identity is a no-op.
                    return if existing.member_id == member_id
                        && existing.tenant_id == tenant_id
                        && existing.openid == openid
                    {
                        Ok(Vec::new())
                    } else {
                        Err(MemberError::AlreadyRegistered)
                    };
                }
                if attribution.as_ref().and_then(Attribution::referrer) == Some(member_id) {
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
                            actor: provenance.actor.clone(),
                            reason: Reference::fixed("initial"),
                            reference: Reference::parse(&member_id.to_string()).ok(),
                            idempotency_key: provenance.idempotency_key.clone(),
                        },
                        points_after: PointsBalance::ZERO.checked_add(welcome.points).ok_or(MemberError::Overflow)?,
                    }),
                    None => None,
                };
                let registered = MemberEvent::MemberRegistered {
                    member_id,
                    tenant_id,
                    card_no,
                    openid,
                    source,
                    card_level,
                    registered_at: now,
                    actor: provenance.actor,
                    idempotency_key: provenance.idempotency_key,
                    attribution,
                };
                Ok(std::iter::once(registered).chain(welcome_grant).collect())
            }
            MemberCommand::Follow { attribution, provenance } => {
                let registration = self.registered()?;
                if attribution.referrer() == Some(registration.member_id) {
                    return Err(MemberError::SelfReferral);
                }
                if self.followed {
                    return Ok(Vec::new());
                }
                Ok(vec![MemberEvent::MemberFollowed { attribution, followed_at: now, provenance }])
            }
            MemberCommand::Unfollow { provenance } => {
                self.registered()?;
                if !self.followed {
                    return Ok(Vec::new());
                }
                Ok(vec![MemberEvent::MemberUnfollowed { unfollowed_at: now, provenance }])
            }
            MemberCommand::SetCardLevel { card_level, provenance } => {
                let current = &self.registered()?.card_level;
                if *current == card_level {
                    return Err(MemberError::SameCardLevel(card_level.as_str().to_owned()));
                }
                Ok(vec![MemberEvent::CardLevelChanged { from: current.clone(), to: card_level, provenance }])
            }
            other => unreachable_command(other),
        }
    }

    fn apply_take(&mut self, taken: &[LotTake]) {
        for take in taken {
            let lot = self.lots.get_mut(&take.lot_no);
            assert!(lot.is_some(), "take from unknown lot {}", take.lot_no);
            if let Some(lot) = lot {
                lot.remaining -= take.points.get();
                assert!(lot.remaining >= 0, "lot {} went negative", take.lot_no);
                if lot.remaining == 0 {
                    self.lots.remove(&take.lot_no);
                }
            }
        }
    }

    fn apply_return(&mut self, hold: &Hold, returned: &[LotTake]) {
        for take in returned {
            let origin = hold.taken.iter().find(|t| t.lot_no == take.lot_no);
            assert!(origin.is_some(), "return to lot {} not in the hold", take.lot_no);
            let Some(origin) = origin else { continue };
            let lot = self.lots.entry(take.lot_no).or_insert(Lot {
                granted: 0,
                remaining: 0,
                granted_at: origin.granted_at,
                expires_at: origin.expires_at,
            });
            lot.remaining += take.points.get();
            // A lot emptied by the hold was removed; it is restored with what comes back.
            lot.granted = lot.granted.max(lot.remaining);
        }
    }

    fn apply_reversal(&mut self, order_id: &Reference, refund_no: &Reference, amount_fen: i64, flagged: bool) {
        let recharge = self.credited_recharges.get_mut(order_id.as_str());
        assert!(recharge.is_some(), "reversal of unknown recharge {order_id}");
        let Some(recharge) = recharge else { return };
        let first = recharge.refunds.insert(refund_no.to_string(), amount_fen).is_none();
        assert!(first, "refund {refund_no} applied twice");
        if flagged {
            recharge.flagged_fen += amount_fen;
        } else {
            recharge.reversed_fen += amount_fen;
        }
    }

    fn assert_invariants(&self) {
        let in_lots: i64 = self.lots.values().map(|l| l.remaining).sum();
        assert_eq!(in_lots, self.points.get(), "points must equal the sum of lots");
        let in_holds: i64 = self.holds.values().map(|h| h.points).sum();
        assert_eq!(in_holds, self.held, "held must equal the sum of holds");
        for (order_id, r) in &self.credited_recharges {
            assert!(r.reversed_fen >= 0 && r.flagged_fen >= 0, "recharge {order_id} reversed negatively");
            assert!(r.reversible_fen() >= 0, "recharge {order_id} reversed beyond its amount");
        }
        assert!(self.held >= 0 && self.balance.get() >= 0);
    }
}

fn unreachable_command(command: MemberCommand) -> Result<Vec<MemberEvent>, MemberError> {
    // Dispatch in `handle` routes every variant; reaching here is a programming error.
    debug_assert!(false, "command routed to the wrong handler: {command:?}");
    Err(MemberError::NotRegistered)
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
            MemberCommand::Register { .. }
            | MemberCommand::SetCardLevel { .. }
            | MemberCommand::Follow { .. }
            | MemberCommand::Unfollow { .. } => self.handle_card(command, now),
            MemberCommand::DepositCash { .. }
            | MemberCommand::ChargeCash { .. }
            | MemberCommand::CreditRecharge { .. }
            | MemberCommand::RefundCharge { .. }
            | MemberCommand::ReverseRecharge { .. } => self.handle_cash(command),
            _ => self.handle_points(command, now),
        }
    }

    fn apply(&mut self, event: &MemberEvent) {
        assert!(
            self.registration.is_some() || matches!(event, MemberEvent::MemberRegistered { .. }),
            "event {} for an unregistered member",
            event.event_type()
        );
        self.version += 1;
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
                assert!(self.registration.is_none(), "registered twice");
                let referrer = attribution.as_ref().and_then(Attribution::referrer);
                assert!(referrer != Some(*member_id), "member refers itself");
                self.followed = *source == RegistrationSource::Subscribe;
                self.followed_at = self.followed.then_some(*registered_at);
                self.attribution = attribution.clone();
                self.referrer = referrer;
                self.registration = Some(Registration {
                    member_id: *member_id,
                    tenant_id: tenant_id.clone(),
                    card_no: card_no.clone(),
                    openid: openid.clone(),
                    card_level: card_level.clone(),
                    registered_at: *registered_at,
                });
            }
            MemberEvent::CardLevelChanged { to, .. } => {
                if let Some(r) = self.registration.as_mut() {
                    r.card_level = to.clone();
                }
            }
            MemberEvent::PointsGranted { lot_no, points, source, granted_at, expires_at, points_after, .. } => {
                self.next_lot_no = *lot_no;
                self.initial_points_granted |= *source == PointsSource::Initial;
                self.lots.insert(
                    *lot_no,
                    Lot {
                        granted: points.get(),
                        remaining: points.get(),
                        granted_at: *granted_at,
                        expires_at: *expires_at,
                    },
                );
                self.lifetime_points += points.get();
                self.points = *points_after;
            }
            MemberEvent::PointsDeducted { taken, points_after, .. }
            | MemberEvent::PointsSpent { taken, points_after, .. } => {
                self.apply_take(taken);
                self.points = *points_after;
            }
            MemberEvent::PointsHeld { hold_id, points, taken, points_after, held_after, .. } => {
                let held_takes = taken
                    .iter()
                    .filter_map(|t| {
                        self.lots.get(&t.lot_no).map(|lot| HeldTake {
                            lot_no: t.lot_no,
                            points: t.points.get(),
                            granted_at: lot.granted_at,
                            expires_at: lot.expires_at,
                        })
                    })
                    .collect();
                self.apply_take(taken);
                self.holds.insert(hold_id.to_string(), Hold { points: points.get(), taken: held_takes });
                self.points = *points_after;
                self.held = *held_after;
            }
            MemberEvent::HeldPointsSpent { hold_id, held_after, .. } => {
                self.holds.remove(hold_id.as_str());
                self.held = *held_after;
            }
            MemberEvent::PointsHoldReleased { hold_id, returned, points_after, held_after, .. } => {
                // Points of lots that expired while held are dropped (`expired` in the event).
                if let Some(hold) = self.holds.remove(hold_id.as_str()) {
                    self.apply_return(&hold, returned);
                }
                self.points = *points_after;
                self.held = *held_after;
            }
            MemberEvent::PointsExpired { lots, points_after, .. } => {
                self.apply_take(lots);
                self.points = *points_after;
            }
            MemberEvent::MemberFollowed { followed_at, .. } => {
                assert!(!self.followed, "followed twice");
                self.followed = true;
                self.followed_at = Some(*followed_at);
            }
            MemberEvent::MemberUnfollowed { unfollowed_at, .. } => {
                assert!(self.followed, "unfollowed without following");
                self.followed = false;
                self.unfollowed_at = Some(*unfollowed_at);
            }
            MemberEvent::CashDeposited { balance_after_fen, .. } => self.balance = *balance_after_fen,
            MemberEvent::RechargeCredited { amount_fen, order_id, balance_after_fen, .. } => {
                self.balance = *balance_after_fen;
                let sequence = self.version;
                let recharge = self
                    .credited_recharges
                    .entry(order_id.to_string())
                    .or_insert_with(|| CreditedRecharge { credited_sequence: sequence, ..CreditedRecharge::default() });
                recharge.amount_fen += amount_fen.get();
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
            }
            MemberEvent::RechargeReversed { amount_fen, order_id, refund_no, balance_after_fen, .. } => {
                self.balance = *balance_after_fen;
                self.apply_reversal(order_id, refund_no, amount_fen.get(), false);
            }
            MemberEvent::RechargeReversalFlagged { amount_fen, order_id, refund_no, .. } => {
                self.apply_reversal(order_id, refund_no, amount_fen.get(), true);
            }
            MemberEvent::CashCharged { amount_fen, balance_after_fen, .. } => {
                self.balance = *balance_after_fen;
                self.refundable_charges.insert(self.version, amount_fen.get());
                while self.refundable_charges.len() > REFUNDABLE_CHARGES_MAX {
                    self.refundable_charges.pop_first();
                }
            }
            MemberEvent::ChargeRefunded { amount_fen, reverses_sequence, balance_after_fen, .. } => {
                self.balance = *balance_after_fen;
                if let Some(left) = self.refundable_charges.get_mut(reverses_sequence) {
                    *left -= amount_fen.get();
                    assert!(*left >= 0, "refund exceeded its charge");
                    if *left == 0 {
                        self.refundable_charges.remove(reverses_sequence);
                    }
                }
            }
        }
        self.assert_invariants();
    }
}
