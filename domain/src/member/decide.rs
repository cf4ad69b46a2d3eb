//! Deciding: each command checked against the state, into the events it causes (`handle`).

use chrono::{DateTime, Utc};

use crate::card_levels::{decide_level, CardLevelCatalog, LevelSource, Progress};
use crate::{AmountFen, BalanceFen, PointsAmount, PointsBalance, Reference};

use super::*;

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

    pub(super) fn registered(&self) -> Result<&Registration, MemberError> {
        self.registration.as_ref().ok_or(MemberError::NotRegistered)
    }

    /// Takes `points` from live lots, oldest first.
    pub(super) fn take_oldest_first(
        &self,
        points: PointsAmount,
        now: DateTime<Utc>,
    ) -> Result<Vec<LotTake>, MemberError> {
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

    pub(super) fn points_minus(&self, points: PointsAmount) -> Result<PointsBalance, MemberError> {
        let available = self.points.get();
        self.points.checked_sub(points).ok_or(MemberError::InsufficientPoints { available, requested: points.get() })
    }

    /// The lot takes of a deduction or a spend, and the points after it.
    pub(super) fn take_points(
        &self,
        points: PointsAmount,
        now: DateTime<Utc>,
    ) -> Result<(Vec<LotTake>, PointsBalance), MemberError> {
        self.registered()?;
        let taken = self.take_oldest_first(points, now)?;
        Ok((taken, self.points_minus(points)?))
    }

    pub(super) fn register(
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

    pub(super) fn follow(
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

    pub(super) fn unfollow(&self, provenance: Provenance, now: DateTime<Utc>) -> Result<Vec<MemberEvent>, MemberError> {
        self.registered()?;
        if !self.followed {
            return Ok(Vec::new());
        }
        Ok(vec![MemberEvent::MemberUnfollowed { unfollowed_at: now, provenance }])
    }

    pub(super) fn set_card_level(
        &self,
        card_level: CardLevel,
        provenance: Provenance,
    ) -> Result<Vec<MemberEvent>, MemberError> {
        let current = &self.registered()?.card_level;
        if *current == card_level {
            return Err(MemberError::SameCardLevel(card_level.as_str().to_owned()));
        }
        Ok(vec![MemberEvent::CardLevelChanged {
            from: current.clone(),
            to: card_level,
            source: LevelSource::Manual,
            provenance,
        }])
    }

    /// The figures the card level rule reads.
    pub fn progress(&self) -> Progress {
        Progress { lifetime_points: self.lifetime_points.get(), total_paid_fen: self.total_paid.get() }
    }

    /// `command`, then the card level rule on what its events leave (see
    /// `MemberCommand::WithLevelRule`). The rule's figures are folded from
    /// the events here, not by applying them to a copy (a member holds up to
    /// `LOTS_MAX` lots); `apply` recomputes them from the same events.
    pub(super) fn with_level_rule(
        &self,
        command: MemberCommand,
        catalog: &CardLevelCatalog,
        now: DateTime<Utc>,
    ) -> Result<Vec<MemberEvent>, MemberError> {
        let mut command = command;
        while let MemberCommand::WithLevelRule { inner, .. } = command {
            command = *inner;
        }
        if let MemberCommand::SetCardLevel { card_level, .. } = &command {
            if catalog.level(card_level).is_none() {
                return Err(MemberError::UnknownCardLevel(card_level.as_str().to_owned()));
            }
        }
        let idempotency_key = command.provenance().idempotency_key.clone();
        let mut events = self.handle(command, now)?;
        if let Some(change) = self.level_rule_after(&events, catalog, idempotency_key) {
            events.push(change);
        }
        Ok(events)
    }

    /// The rule's level change after `events`, if they moved a figure it reads.
    fn level_rule_after(
        &self,
        events: &[MemberEvent],
        catalog: &CardLevelCatalog,
        idempotency_key: crate::IdempotencyKey,
    ) -> Option<MemberEvent> {
        let mut progress = self.progress();
        let mut level = self.registration.as_ref().map(|r| (r.card_level.clone(), self.card_level_source));
        let mut moved = false;
        for event in events {
            match event {
                MemberEvent::MemberRegistered { card_level, .. } => {
                    level = Some((card_level.clone(), LevelSource::Manual));
                }
                // The command set a level itself: the rule waits for the next figure.
                MemberEvent::CardLevelChanged { .. } => return None,
                MemberEvent::PointsGranted { points, .. } => {
                    progress.lifetime_points = progress.lifetime_points.saturating_add(points.get());
                    moved = true;
                }
                MemberEvent::CashCharged { amount_fen, .. } => {
                    progress.total_paid_fen = progress.total_paid_fen.saturating_add(amount_fen.get());
                    moved = true;
                }
                MemberEvent::PurchasePaid { total_paid_after_fen, .. }
                | MemberEvent::PurchaseRefunded { total_paid_after_fen, .. } => {
                    progress.total_paid_fen = total_paid_after_fen.get();
                    moved = true;
                }
                MemberEvent::ChargeRefunded { amount_fen, .. } => {
                    progress.total_paid_fen = progress.total_paid_fen.saturating_sub(amount_fen.get()).max(0);
                    moved = true;
                }
                _ => {}
            }
        }
        let (current, source) = level?;
        if !moved {
            return None;
        }
        let to = decide_level(catalog, &current, source, progress)?;
        Some(MemberEvent::CardLevelChanged {
            from: current,
            to,
            source: LevelSource::Rule,
            provenance: Provenance {
                actor: crate::Actor::System { job: "card_level_rule".to_owned() },
                reason: Reference::fixed("card_level_rule"),
                reference: None,
                idempotency_key,
            },
        })
    }

    pub(super) fn grant_points(
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

    pub(super) fn hold_points(
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

    pub(super) fn hold(&self, hold_id: &Reference) -> Result<&Hold, MemberError> {
        self.registered()?;
        self.holds.get(hold_id.as_str()).ok_or_else(|| MemberError::HoldNotFound(hold_id.to_string()))
    }

    pub(super) fn held_without(&self, hold: &Hold) -> Result<i64, MemberError> {
        Ok(self.held.checked_sub(hold.points).ok_or(MemberError::Overflow)?.get())
    }

    pub(super) fn spend_held_points(
        &self,
        hold_id: Reference,
        provenance: Provenance,
    ) -> Result<Vec<MemberEvent>, MemberError> {
        let hold = self.hold(&hold_id)?;
        let held_after = self.held_without(hold)?;
        let points = hold.points;
        Ok(vec![MemberEvent::HeldPointsSpent { hold_id, points, provenance, points_after: self.points, held_after }])
    }

    pub(super) fn release_held_points(
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

    pub(super) fn expire_points(
        &self,
        provenance: Provenance,
        now: DateTime<Utc>,
    ) -> Result<Vec<MemberEvent>, MemberError> {
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

    pub(super) fn credit(&self, amount_fen: AmountFen) -> Result<BalanceFen, MemberError> {
        self.registered()?;
        self.balance.checked_add(amount_fen).ok_or(MemberError::Overflow)
    }

    pub(super) fn charge_cash(
        &self,
        amount_fen: AmountFen,
        provenance: Provenance,
    ) -> Result<Vec<MemberEvent>, MemberError> {
        self.registered()?;
        let balance_after_fen = self.balance.checked_sub(amount_fen).ok_or(MemberError::InsufficientBalance {
            balance_fen: self.balance.get(),
            requested_fen: amount_fen.get(),
        })?;
        Ok(vec![MemberEvent::CashCharged { amount_fen, provenance, balance_after_fen }])
    }

    pub(super) fn refund_charge(
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

    pub(super) fn reverse_recharge(
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
pub(super) fn points_plus(balance: PointsBalance, points: i64) -> Option<PointsBalance> {
    balance.get().checked_add(points).and_then(PointsBalance::new)
}
