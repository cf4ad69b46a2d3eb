//! Evolving: each event applied to the state, every stated figure recomputed and checked (`apply`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::invariant::{ensure, ensure_figure};
use crate::{AmountFen, BalanceFen, InvariantViolation, PointsAmount, PointsBalance, Reference};

use super::decide::points_plus;
use super::*;
use crate::card_levels::LevelSource;

pub(super) fn violation(rule: &'static str, detail: impl Into<String>) -> InvariantViolation {
    InvariantViolation::new(rule, detail)
}

pub(super) fn overflow(what: &str) -> InvariantViolation {
    violation(rules::NO_OVERFLOW, format!("{what} overflows"))
}

pub(super) fn sum_takes(takes: &[LotTake]) -> Result<i64, InvariantViolation> {
    takes.iter().try_fold(0i64, |sum, t| sum.checked_add(t.points.get())).ok_or_else(|| overflow("the lot takes"))
}

pub(super) fn ensure_takes_add_up(points: PointsAmount, takes: &[LotTake]) -> Result<(), InvariantViolation> {
    let sum = sum_takes(takes)?;
    ensure(sum == points.get(), rules::TAKES_ADD_UP, || format!("points is {points} but its lot takes add up to {sum}"))
}

impl Member {
    pub(super) fn apply_registered(
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

    pub(super) fn apply_card_level(
        &mut self,
        from: &CardLevel,
        to: &CardLevel,
        source: LevelSource,
    ) -> Result<(), InvariantViolation> {
        let registration =
            self.registration.as_mut().ok_or_else(|| violation(rules::REGISTERED_FIRST, "no registration"))?;
        let current = &registration.card_level;
        ensure(current == from, rules::CARD_LEVEL_FROM, || {
            format!("from is {} but the level is {}", from.as_str(), current.as_str())
        })?;
        registration.card_level = to.clone();
        self.card_level_source = source;
        Ok(())
    }

    pub(super) fn apply_follow(&mut self, followed: bool, at: DateTime<Utc>) -> Result<(), InvariantViolation> {
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

    pub(super) fn apply_granted(
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
    pub(super) fn take_from_lots(&mut self, taken: &[LotTake]) -> Result<(), InvariantViolation> {
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
    pub(super) fn points_minus_taken(&self, points: PointsAmount) -> Result<PointsBalance, InvariantViolation> {
        self.points.checked_sub(points).ok_or_else(|| {
            violation(rules::POINTS_IN_LOTS, format!("{points} points taken out of {} on the books", self.points))
        })
    }

    /// A deduction, a spend or an expiry: points out of lots.
    pub(super) fn apply_taken(
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

    pub(super) fn apply_held(
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
    pub(super) fn end_hold(&mut self, hold_id: &Reference, points: PointsAmount) -> Result<Hold, InvariantViolation> {
        let hold = self
            .holds
            .remove(hold_id.as_str())
            .ok_or_else(|| violation(rules::HOLD_KNOWN, format!("hold {hold_id} does not exist")))?;
        ensure(hold.points == points, rules::TAKES_ADD_UP, || {
            format!("points is {points} but hold {hold_id} holds {}", hold.points)
        })?;
        Ok(hold)
    }

    pub(super) fn held_after_end(&self, hold: &Hold, held_after: i64) -> Result<PointsBalance, InvariantViolation> {
        let held_now = self.held.checked_sub(hold.points).ok_or_else(|| {
            violation(rules::HELD_IN_HOLDS, format!("a hold of {} out of {} held", hold.points, self.held))
        })?;
        ensure_figure(rules::HELD_AFTER, "held_after", held_after, held_now.get())?;
        Ok(held_now)
    }

    pub(super) fn apply_held_spent(
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
    pub(super) fn apply_released(
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

    pub(super) fn apply_credit(
        &mut self,
        amount_fen: AmountFen,
        balance_after_fen: BalanceFen,
    ) -> Result<(), InvariantViolation> {
        let balance = self.balance.checked_add(amount_fen).ok_or_else(|| overflow("the balance"))?;
        ensure_figure(rules::BALANCE_AFTER, "balance_after_fen", balance_after_fen, balance)?;
        self.balance = balance;
        Ok(())
    }

    pub(super) fn apply_debit(
        &mut self,
        amount_fen: AmountFen,
        balance_after_fen: BalanceFen,
    ) -> Result<(), InvariantViolation> {
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

    pub(super) fn remember_recharge(
        &mut self,
        order_id: &Reference,
        amount_fen: AmountFen,
    ) -> Result<(), InvariantViolation> {
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

    pub(super) fn remember_charge(&mut self, amount_fen: AmountFen) {
        self.refundable_charges.insert(self.version, amount_fen);
        while self.refundable_charges.len() > REFUNDABLE_CHARGES_MAX {
            self.refundable_charges.pop_first();
        }
    }

    /// A charge no longer remembered (beyond `REFUNDABLE_CHARGES_MAX`) is not
    /// checked: `handle` refused refunds of it, and the limit may have been
    /// larger when an old refund was written.
    pub(super) fn apply_charge_refund(
        &mut self,
        sequence: u64,
        amount_fen: AmountFen,
    ) -> Result<(), InvariantViolation> {
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

    pub(super) fn apply_reversal(
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

    pub(super) fn apply_flagged(
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
    pub(super) fn check_sums(&self) -> Result<(), InvariantViolation> {
        let in_lots = self.lots.values().try_fold(0i64, |sum, l| sum.checked_add(l.remaining.get()));
        ensure(in_lots == Some(self.points.get()), rules::POINTS_IN_LOTS, || {
            format!("points is {} but the lots hold {in_lots:?}", self.points)
        })?;
        let in_holds = self.holds.values().try_fold(0i64, |sum, h| sum.checked_add(h.points.get()));
        ensure(in_holds == Some(self.held.get()), rules::HELD_IN_HOLDS, || {
            format!("held is {} but the holds hold {in_holds:?}", self.held)
        })
    }

    pub(super) fn apply_event(&mut self, event: &MemberEvent) -> Result<(), InvariantViolation> {
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
            MemberEvent::CardLevelChanged { from, to, source, .. } => self.apply_card_level(from, to, *source),
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
                self.total_paid = self.total_paid.checked_add(*amount_fen).ok_or_else(|| overflow("total paid"))?;
                Ok(())
            }
            MemberEvent::ChargeRefunded { amount_fen, reverses_sequence, balance_after_fen, .. } => {
                self.apply_charge_refund(*reverses_sequence, *amount_fen)?;
                self.apply_credit(*amount_fen, *balance_after_fen)?;
                self.total_paid = self.total_paid.checked_sub(*amount_fen).ok_or_else(|| {
                    violation(
                        rules::TOTAL_PAID_COVERS_REFUND,
                        format!("a refund of {amount_fen} fen with {} fen paid in total", self.total_paid),
                    )
                })?;
                Ok(())
            }
            MemberEvent::RechargeReversed { amount_fen, order_id, refund_no, balance_after_fen, .. } => {
                self.apply_reversal(order_id, refund_no, *amount_fen, false)?;
                self.apply_debit(*amount_fen, *balance_after_fen)
            }
            MemberEvent::RechargeReversalFlagged { amount_fen, order_id, refund_no, balance_fen, .. } => {
                self.apply_flagged(order_id, refund_no, *amount_fen, *balance_fen)
            }
            MemberEvent::PurchasePaid { amount_fen, total_paid_after_fen, .. } => {
                let total = self.total_paid.checked_add(*amount_fen).ok_or_else(|| overflow("total paid"))?;
                ensure_figure(rules::TOTAL_PAID_AFTER, "total_paid_after_fen", *total_paid_after_fen, total)?;
                self.total_paid = total;
                Ok(())
            }
            MemberEvent::PurchaseRefunded { amount_fen, total_paid_after_fen, .. } => {
                let total = self.total_paid.checked_sub(*amount_fen).ok_or_else(|| {
                    violation(
                        rules::TOTAL_PAID_COVERS_REFUND,
                        format!("a refund of {amount_fen} fen with {} fen paid in total", self.total_paid),
                    )
                })?;
                ensure_figure(rules::TOTAL_PAID_AFTER, "total_paid_after_fen", *total_paid_after_fen, total)?;
                self.total_paid = total;
                Ok(())
            }
        }
    }
}

/// `returned` and `expired` together are the hold's takes, lot by lot.
pub(super) fn ensure_release_matches(
    hold: &Hold,
    returned: &[LotTake],
    expired: &[LotTake],
) -> Result<(), InvariantViolation> {
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
