//! 1-yuan snatch: a prize split into N shares of 1 yuan per period; members
//! buy shares with their balance or WeChat Pay; when the last share of a
//! period is paid, one share wins (chance proportional to shares held) and
//! the next period opens.
//!
//! Every share is decided on the campaign stream, in the same decision that
//! records it, never from a count read outside it: a purchase **reserves**
//! shares (never more reserved + sold than N, never more than the member's
//! per-period maximum), payment **confirms** them, a reservation not paid by
//! its expiry is **released**. A payment for a purchase whose reservation is
//! gone (released, its period sold out to others meanwhile, the campaign
//! over) is recorded as **late** and refunded, never honoured.
//!
//! The confirmation that sells out a period carries that period's unsealed
//! seed and the next period's commitment, so the same decision records the
//! sale, the draw (`CampaignPeriodDrawn`, `wxcm-draw-v1` with tickets =
//! shares and one winner, checked like a periodic draw) and the next period
//! (`CampaignPeriodOpened`): one append, so a period is drawn exactly once
//! and never sells a share more than N.
//!
//! A period's purchases are kept in state while it is open (they are the
//! reservations and the entrant list), then dropped; late payments are
//! remembered by purchase, so one is recorded once.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::aggregate::{CampaignError, CampaignEvent, CampaignState, Decision, Refusal, Status};
use super::draw::{self, DrawSeed, SeedCommitment};
use super::periodic::{Period, PeriodEnd};
use super::{rules, AwardRef, CampaignId, CampaignKind, PeriodWinner, Prize, PERIODS_MAX};
use crate::ids::uuid_id;
use crate::invariant::{ensure, ensure_figure};
use crate::{
    Actor, AmountFen, DomainEventMeta, IdempotencyKey, InvariantViolation, MemberId, OutTradeNo, PayRef, TenantId,
};

/// One share costs 1 yuan.
pub const SHARE_PRICE_FEN: i64 = 100;
/// Ceiling of N, the shares of one period (an entrant list's row count and
/// tickets stay within `wxcm-draw-v1`'s bounds).
pub const SHARES_PER_PERIOD_MAX: u32 = 100_000;
/// Ceiling of the shares one purchase may ask for.
pub const SHARES_PER_PURCHASE_MAX: u32 = 10_000;
/// How long a reservation waits for its payment.
pub const RESERVATION_MINUTES: i64 = 5;
/// Late payments one campaign remembers (each is refunded; past it the
/// campaign takes no more purchases rather than forget one).
pub const LATE_PAYMENTS_MAX: usize = 100_000;

uuid_id!(
    /// One purchase of snatch shares.
    PurchaseId,
    "share purchase id"
);

const PURCHASE_NAMESPACE: Uuid = Uuid::from_u128(0x5e1c_2a7b_90d3_4f18_a6e2_3b7c_d41f_0a92);
const PAY_TRADE_PREFIX: &str = "sn";
const REFUND_PREFIX: &str = "sr";
/// 36^25 > 2^128.
const PAY_TRADE_DIGITS: usize = 25;
const BASE36: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

impl PurchaseId {
    /// The purchase a member's request makes: derived from its idempotency
    /// key, so a repeated request names the same purchase.
    pub fn for_request(tenant: &TenantId, campaign: CampaignId, member: MemberId, key: &IdempotencyKey) -> Self {
        let name = format!("purchase\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}", tenant.as_str(), campaign, member, key.as_str());
        Self(Uuid::new_v5(&PURCHASE_NAMESPACE, name.as_bytes()))
    }

    fn base36(&self) -> String {
        let mut digits = [b'0'; PAY_TRADE_DIGITS];
        let mut n = self.0.as_u128();
        for d in digits.iter_mut().rev() {
            *d = BASE36[(n % 36) as usize];
            n /= 36;
        }
        String::from_utf8_lossy(&digits).into_owned()
    }

    /// The WeChat Pay order of this purchase: `sn` and the id in base 36 (27
    /// characters), so a purchase has one Pay order and a Pay order names it.
    pub fn pay_trade_no(&self) -> OutTradeNo {
        let text = format!("{PAY_TRADE_PREFIX}{}", self.base36());
        // Prefix and base-36 digits: always a valid out_trade_no.
        OutTradeNo::parse(&text).unwrap_or_else(|_| OutTradeNo::generate_from(self.0))
    }

    /// The refund number of this purchase's Pay refund (one per purchase).
    pub fn pay_refund_no(&self) -> Option<PayRef> {
        PayRef::parse(&format!("{REFUND_PREFIX}{}", self.base36())).ok()
    }

    /// The purchase a Pay order was made for (`None`: not a purchase's).
    pub fn from_pay_trade_no(trade_no: &OutTradeNo) -> Option<Self> {
        let digits = trade_no.as_str().strip_prefix(PAY_TRADE_PREFIX)?;
        if digits.len() != PAY_TRADE_DIGITS {
            return None;
        }
        let mut n: u128 = 0;
        for b in digits.bytes() {
            let d = BASE36.iter().position(|c| *c == b)? as u128;
            n = n.checked_mul(36)?.checked_add(d)?;
        }
        Some(Self(Uuid::from_u128(n)))
    }
}

/// A 1-yuan snatch's terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SnatchTerms {
    /// What each period's winner gets (points, a coupon or a physical item).
    pub prize: Prize,
    /// N: shares of 1 yuan each period sells, 1..=100000.
    pub shares_per_period: u32,
    /// Shares one member may hold (reserved or paid) in one period, 1..=N.
    pub shares_per_member_max: u32,
    /// Shares one purchase may ask for, 1..=10000.
    pub shares_per_purchase_max: u32,
}

pub(super) fn check_snatch(terms: &SnatchTerms) -> Result<(), super::InvalidTerms> {
    use super::InvalidTerms;
    if terms.prize.is_thanks() {
        return Err(InvalidTerms("a snatch's prize is a prize, not thanks"));
    }
    if !(1..=SHARES_PER_PERIOD_MAX).contains(&terms.shares_per_period) {
        return Err(InvalidTerms("shares_per_period must be 1..=100000"));
    }
    if !(1..=terms.shares_per_period).contains(&terms.shares_per_member_max) {
        return Err(InvalidTerms("shares_per_member_max must be 1..=shares_per_period"));
    }
    if !(1..=SHARES_PER_PURCHASE_MAX).contains(&terms.shares_per_purchase_max) {
        return Err(InvalidTerms("shares_per_purchase_max must be 1..=10000"));
    }
    Ok(())
}

/// How a purchase is to be paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SharePayMethod {
    Balance,
    WechatPay,
}

/// A payment made for a purchase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SharePayment {
    /// Charged to the member's balance (`CashCharged` at `charge_sequence`).
    Balance { amount_fen: AmountFen, charge_sequence: u64 },
    /// Paid through WeChat Pay (the purchase's Pay order).
    WechatPay { amount_fen: AmountFen, transaction_id: PayRef },
}

impl SharePayment {
    pub fn amount_fen(&self) -> AmountFen {
        match self {
            SharePayment::Balance { amount_fen, .. } | SharePayment::WechatPay { amount_fen, .. } => *amount_fen,
        }
    }
    pub fn method(&self) -> SharePayMethod {
        match self {
            SharePayment::Balance { .. } => SharePayMethod::Balance,
            SharePayment::WechatPay { .. } => SharePayMethod::WechatPay,
        }
    }
}

/// A purchase of the open period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purchase {
    pub member_id: MemberId,
    pub quantity: u32,
    pub method: SharePayMethod,
    pub expires_at: DateTime<Utc>,
    pub status: PurchaseStatus,
    /// The payment that confirmed it (what a cancelled period refunds).
    #[serde(default)]
    pub payment: Option<SharePayment>,
}

/// A paid purchase of a period cancelled undrawn, to refund.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShareRefund {
    pub purchase_id: PurchaseId,
    pub member_id: MemberId,
    pub payment: SharePayment,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PurchaseStatus {
    Reserved,
    Confirmed,
    Released,
}

/// The snatch's open period: its purchases and counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnatchBook {
    pub purchases: BTreeMap<PurchaseId, Purchase>,
    /// Shares reserved and not yet paid.
    pub reserved: u32,
    /// Shares paid (the period's `tickets` hold them per member).
    pub sold: u32,
    /// Per member: shares reserved or paid.
    pub held: BTreeMap<MemberId, u32>,
    /// Purchases whose payment arrived late (every period).
    pub late: BTreeSet<PurchaseId>,
}

fn price(quantity: u32) -> Result<AmountFen, CampaignError> {
    AmountFen::new(i64::from(quantity) * SHARE_PRICE_FEN).map_err(|_| CampaignError::InvalidQuantity(quantity))
}

fn violation(rule: &'static str) -> impl FnOnce(CampaignError) -> InvariantViolation {
    move |e| InvariantViolation::new(rule, e.to_string())
}

impl CampaignState {
    pub(super) fn snatch_terms(&self) -> Result<&SnatchTerms, CampaignError> {
        match &self.terms.kind {
            CampaignKind::Snatch(terms) => Ok(terms),
            CampaignKind::PeriodicLottery(_) | CampaignKind::ShakeLottery(_) | CampaignKind::Voting(_) => {
                Err(CampaignError::WrongKind("snatch"))
            }
        }
    }

    pub fn is_snatch(&self) -> bool {
        matches!(self.terms.kind, CampaignKind::Snatch(_))
    }

    /// The snatch's open period (`None` before the first opened, after the
    /// last was drawn, or for another kind).
    pub fn open_snatch_period(&self) -> Option<(u32, &Period)> {
        if !self.is_snatch() {
            return None;
        }
        self.periods.iter().next_back().filter(|(_, p)| p.end.is_none()).map(|(n, p)| (*n, p))
    }

    /// Opens period 1 (the whole campaign's window); the others open when
    /// the one before sells out.
    pub(super) fn open_first_snatch_period(
        &self,
        period_no: u32,
        commitment: SeedCommitment,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Decision {
        self.snatch_terms()?;
        if let Some(open) = self.periods.get(&period_no) {
            // The same opening retried changes nothing.
            return if open.commitment == commitment {
                Ok(Vec::new())
            } else {
                Err(CampaignError::PeriodConflict(period_no))
            };
        }
        if period_no != 1 || !self.periods.is_empty() {
            return Err(CampaignError::PeriodOutOfOrder {
                expected: self.periods.keys().next_back().map_or(1, |n| n + 1),
            });
        }
        match self.phase_at(now) {
            Status::Scheduled | Status::Ongoing => {}
            Status::Ended => return Err(CampaignError::AlreadyEnded),
            Status::Draft => return Err(CampaignError::WrongStatus(Status::Draft)),
        }
        Ok(vec![CampaignEvent::CampaignPeriodOpened {
            period_no: 1,
            starts_at: self.terms.starts_at,
            ends_at: self.terms.ends_at,
            commitment,
            beacon: None,
            actor,
            opened_at: now,
        }])
    }

    pub(super) fn reserve_shares(
        &self,
        purchase_id: PurchaseId,
        member_id: MemberId,
        quantity: u32,
        method: SharePayMethod,
        card_member: bool,
        now: DateTime<Utc>,
    ) -> Decision {
        let terms = self.snatch_terms()?;
        if let Some(p) = self.snatch.purchases.get(&purchase_id) {
            // The same purchase asked again changes nothing.
            let same = (p.member_id, p.quantity, p.method) == (member_id, quantity, method);
            return if same { Ok(Vec::new()) } else { Err(CampaignError::PurchaseConflict(purchase_id)) };
        }
        if quantity == 0 || quantity > terms.shares_per_purchase_max {
            return Err(CampaignError::InvalidQuantity(quantity));
        }
        if self.phase_at(now) != Status::Ongoing {
            return Err(Refusal::NotOngoing.into());
        }
        if self.terms.members_only && !card_member {
            return Err(Refusal::MembersOnly.into());
        }
        let Some((period_no, period)) = self.open_snatch_period() else { return Err(Refusal::NotOngoing.into()) };
        if now < period.starts_at {
            return Err(Refusal::NotOngoing.into());
        }
        if self.snatch.late.len() >= LATE_PAYMENTS_MAX {
            return Err(Refusal::TooManyParticipants.into());
        }
        let taken = self.snatch.reserved + self.snatch.sold;
        if taken + quantity > terms.shares_per_period {
            return Err(CampaignError::SharesLeft(terms.shares_per_period - taken));
        }
        let held = self.snatch.held.get(&member_id).copied().unwrap_or(0);
        if held + quantity > terms.shares_per_member_max {
            return Err(Refusal::PeriodLimitReached.into());
        }
        let expires_at = (now + Duration::minutes(RESERVATION_MINUTES)).min(self.terms.ends_at);
        Ok(vec![CampaignEvent::SnatchSharesReserved {
            purchase_id,
            member_id,
            period_no,
            quantity,
            amount_fen: price(quantity)?,
            method,
            member_held_after: held + quantity,
            period_taken_after: taken + quantity,
            expires_at,
            reserved_at: now,
        }])
    }

    /// Releases a reservation: the application asks at its expiry, or when
    /// its payment was refused; anything else (paid, released, of a period
    /// gone) writes nothing. A payment arriving after is late.
    pub(super) fn release_shares(&self, purchase_id: PurchaseId, now: DateTime<Utc>) -> Decision {
        self.snatch_terms()?;
        let Some((period_no, _)) = self.open_snatch_period() else { return Ok(Vec::new()) };
        let Some(p) = self.snatch.purchases.get(&purchase_id) else { return Ok(Vec::new()) };
        if p.status != PurchaseStatus::Reserved {
            return Ok(Vec::new());
        }
        Ok(vec![CampaignEvent::SnatchSharesReleased {
            purchase_id,
            member_id: p.member_id,
            period_no,
            quantity: p.quantity,
            period_taken_after: self.snatch.reserved + self.snatch.sold - p.quantity,
            released_at: now,
        }])
    }

    /// Records a payment for a purchase: confirms its shares while its
    /// reservation stands (drawing and opening the next period when this
    /// sells the period out), else records it as late, to be refunded (once).
    pub(super) fn confirm_shares(
        &self,
        purchase_id: PurchaseId,
        member_id: MemberId,
        payment: SharePayment,
        seed: &DrawSeed,
        next_commitment: SeedCommitment,
        now: DateTime<Utc>,
    ) -> Decision {
        let terms = self.snatch_terms()?;
        if self.snatch.late.contains(&purchase_id) {
            return Ok(Vec::new());
        }
        let purchase = self.snatch.purchases.get(&purchase_id);
        if let Some(p) = purchase {
            if p.member_id != member_id {
                return Err(CampaignError::PurchaseConflict(purchase_id));
            }
            if payment.amount_fen() != price(p.quantity)? || payment.method() != p.method {
                return Err(CampaignError::PaymentMismatch(purchase_id));
            }
        }
        let (period_no, period, purchase) = match (self.open_snatch_period(), purchase) {
            (Some((n, period)), Some(p)) => match p.status {
                PurchaseStatus::Confirmed => return Ok(Vec::new()),
                PurchaseStatus::Reserved
                    if now < p.expires_at && self.phase_at(now) == Status::Ongoing && self.status != Status::Ended =>
                {
                    (n, period, p)
                }
                PurchaseStatus::Reserved | PurchaseStatus::Released => {
                    return Ok(vec![self.late(purchase_id, member_id, payment, now)])
                }
            },
            // Its period is over (sold out to others, or the campaign ended).
            _ => return Ok(vec![self.late(purchase_id, member_id, payment, now)]),
        };
        let shares_after = period.tickets.get(&member_id).copied().unwrap_or(0) + purchase.quantity;
        let sold_after = self.snatch.sold + purchase.quantity;
        let mut events = vec![CampaignEvent::SnatchSharesConfirmed {
            purchase_id,
            member_id,
            period_no,
            quantity: purchase.quantity,
            payment,
            member_shares_after: shares_after,
            period_sold_after: sold_after,
            confirmed_at: now,
        }];
        if sold_after < terms.shares_per_period {
            return Ok(events);
        }
        // Sold out: the draw and the next period, in the same decision.
        if !period.commitment.opens_to(seed) {
            return Err(CampaignError::SeedMismatch);
        }
        let mut tickets = period.tickets.clone();
        tickets.insert(member_id, shares_after);
        let list = draw::EntrantList::new(
            tickets.iter().map(|(m, t)| draw::Entrant { member_id: *m, tickets: *t }).collect(),
        )?;
        let drawn = draw::draw_winners(seed, None, &list, 1)?;
        let winners =
            drawn.iter().map(|m| PeriodWinner { rank: 1, member_id: *m, prize: terms.prize.clone() }).collect();
        let actor = Actor::System { job: "snatch".into() };
        events.push(CampaignEvent::CampaignPeriodDrawn {
            period_no,
            algorithm: draw::ALGORITHM.to_owned(),
            seed: *seed,
            beacon: None,
            beacon_value: None,
            entrants_hash: list.hash(),
            entrants: u32::try_from(tickets.len()).unwrap_or(u32::MAX),
            total_tickets: list.total_tickets(),
            winners,
            actor: actor.clone(),
            drawn_at: now,
        });
        if now < self.terms.ends_at && period_no < PERIODS_MAX {
            events.push(CampaignEvent::CampaignPeriodOpened {
                period_no: period_no + 1,
                starts_at: now,
                ends_at: self.terms.ends_at,
                commitment: next_commitment,
                beacon: None,
                actor,
                opened_at: now,
            });
        }
        Ok(events)
    }

    /// Cancels the open period undrawn once the campaign is over (it did not
    /// sell out): every paid purchase is refunded; a payment arriving after is late.
    pub(super) fn cancel_snatch_period(&self, period_no: u32, now: DateTime<Utc>) -> Decision {
        self.snatch_terms()?;
        let period = self.periods.get(&period_no).ok_or(CampaignError::PeriodNotFound(period_no))?;
        match &period.end {
            Some(PeriodEnd::Cancelled { .. }) => return Ok(Vec::new()),
            Some(PeriodEnd::Drawn { .. }) => return Err(CampaignError::PeriodClosed(period_no)),
            None => {}
        }
        if self.phase_at(now) != Status::Ended {
            return Err(CampaignError::PeriodStillOpen(period_no, self.terms.ends_at));
        }
        Ok(vec![CampaignEvent::SnatchPeriodCancelled { period_no, refunds: self.share_refunds(), cancelled_at: now }])
    }

    fn share_refunds(&self) -> Vec<ShareRefund> {
        self.snatch
            .purchases
            .iter()
            .filter_map(|(id, p)| {
                let payment = p.payment.clone().filter(|_| p.status == PurchaseStatus::Confirmed)?;
                Some(ShareRefund { purchase_id: *id, member_id: p.member_id, payment })
            })
            .collect()
    }

    fn late(
        &self,
        purchase_id: PurchaseId,
        member_id: MemberId,
        payment: SharePayment,
        now: DateTime<Utc>,
    ) -> CampaignEvent {
        let released_shares = self
            .snatch
            .purchases
            .get(&purchase_id)
            .filter(|p| p.status == PurchaseStatus::Reserved)
            .map_or(0, |p| p.quantity);
        CampaignEvent::SnatchPaymentArrivedLate { purchase_id, member_id, payment, released_shares, recorded_at: now }
    }

    /// Applies the snatch's events and its periods' openings and draws (the caller matched them).
    pub(super) fn apply_snatch(&mut self, event: &CampaignEvent) -> Result<(), InvariantViolation> {
        let terms = self.snatch_terms().map_err(violation(rules::TRANSITION))?.clone();
        match event {
            CampaignEvent::CampaignPeriodOpened { period_no, starts_at, ends_at, commitment, .. } => {
                let expected = self.periods.keys().next_back().map_or(1, |n| n + 1);
                let previous_end = self.periods.values().next_back().map(|p| (p.end.is_some(), p.ends_at));
                let in_order = match previous_end {
                    None => *starts_at == self.terms.starts_at,
                    Some((closed, ended)) => closed && *starts_at == ended,
                };
                ensure(*period_no == expected && *period_no <= PERIODS_MAX && in_order, rules::PERIOD_ORDER, || {
                    format!("snatch period {period_no} opened out of order")
                })?;
                ensure(starts_at < ends_at && *ends_at == self.terms.ends_at, rules::PERIOD_ORDER, || {
                    format!("snatch period {period_no} from {starts_at} to {ends_at}")
                })?;
                ensure(matches!(self.status, Status::Scheduled | Status::Ongoing), rules::TRANSITION, || {
                    format!("period opened while {:?}", self.status)
                })?;
                self.periods.insert(
                    *period_no,
                    Period {
                        starts_at: *starts_at,
                        ends_at: *ends_at,
                        commitment: *commitment,
                        beacon: None,
                        entries: BTreeMap::new(),
                        tickets: BTreeMap::new(),
                        entries_total: 0,
                        entrants: 0,
                        end: None,
                    },
                );
                let late = std::mem::take(&mut self.snatch.late);
                self.snatch = SnatchBook { late, ..SnatchBook::default() };
            }
            CampaignEvent::SnatchSharesReserved {
                purchase_id,
                member_id,
                period_no,
                quantity,
                amount_fen,
                method,
                member_held_after,
                period_taken_after,
                expires_at,
                reserved_at,
            } => {
                self.open_period_no(*period_no, *reserved_at)?;
                ensure(!self.snatch.purchases.contains_key(purchase_id), rules::SHARES_ONCE, || {
                    format!("purchase {purchase_id} reserved twice")
                })?;
                ensure(
                    (1..=terms.shares_per_purchase_max).contains(quantity)
                        && price(*quantity).ok() == Some(*amount_fen)
                        && expires_at > reserved_at,
                    rules::WITHIN_SHARES,
                    || format!("purchase {purchase_id} of {quantity} shares for {amount_fen:?}"),
                )?;
                let held = self.snatch.held.get(member_id).copied().unwrap_or(0) + quantity;
                let taken = self.snatch.reserved + self.snatch.sold + quantity;
                ensure_figure(rules::COUNTS_AFTER, "member_held_after", *member_held_after, held)?;
                ensure_figure(rules::COUNTS_AFTER, "period_taken_after", *period_taken_after, taken)?;
                ensure(
                    held <= terms.shares_per_member_max && taken <= terms.shares_per_period,
                    rules::WITHIN_SHARES,
                    || format!("member {member_id} at {held} shares, period at {taken} of {}", terms.shares_per_period),
                )?;
                self.snatch.purchases.insert(
                    *purchase_id,
                    Purchase {
                        member_id: *member_id,
                        quantity: *quantity,
                        method: *method,
                        expires_at: *expires_at,
                        status: PurchaseStatus::Reserved,
                        payment: None,
                    },
                );
                self.snatch.held.insert(*member_id, held);
                self.snatch.reserved += quantity;
            }
            CampaignEvent::SnatchSharesReleased {
                purchase_id,
                member_id,
                period_no,
                quantity,
                period_taken_after,
                released_at,
            } => {
                self.open_period_no(*period_no, *released_at)?;
                let p = self.reserved_purchase(purchase_id)?;
                ensure(p.member_id == *member_id && p.quantity == *quantity, rules::SHARES_ONCE, || {
                    format!("purchase {purchase_id} released as another")
                })?;
                let taken = self.snatch.reserved + self.snatch.sold - quantity;
                ensure_figure(rules::COUNTS_AFTER, "period_taken_after", *period_taken_after, taken)?;
                self.set_status(purchase_id, PurchaseStatus::Released);
                self.snatch.reserved -= quantity;
                if let Some(held) = self.snatch.held.get_mut(member_id) {
                    *held = held.saturating_sub(*quantity);
                }
            }
            CampaignEvent::SnatchSharesConfirmed {
                purchase_id,
                member_id,
                period_no,
                quantity,
                payment,
                member_shares_after,
                period_sold_after,
                confirmed_at,
            } => {
                self.open_period_no(*period_no, *confirmed_at)?;
                let p = self.reserved_purchase(purchase_id)?;
                ensure(
                    p.member_id == *member_id
                        && p.quantity == *quantity
                        && *confirmed_at < p.expires_at
                        && self.status != Status::Ended
                        && payment.method() == p.method
                        && price(*quantity).ok() == Some(payment.amount_fen()),
                    rules::SHARES_ONCE,
                    || format!("purchase {purchase_id} confirmed after its expiry or for another payment"),
                )?;
                let sold = self.snatch.sold + quantity;
                ensure_figure(rules::COUNTS_AFTER, "period_sold_after", *period_sold_after, sold)?;
                ensure(sold <= terms.shares_per_period, rules::WITHIN_SHARES, || format!("{sold} shares sold"))?;
                self.set_status(purchase_id, PurchaseStatus::Confirmed);
                if let Some(p) = self.snatch.purchases.get_mut(purchase_id) {
                    p.payment = Some(payment.clone());
                }
                self.snatch.reserved -= quantity;
                self.snatch.sold = sold;
                let period = self.periods.get_mut(period_no).ok_or_else(|| {
                    InvariantViolation::new(rules::ENTRY_OPEN_PERIOD, format!("no period {period_no}"))
                })?;
                let shares = period.tickets.get(member_id).copied().unwrap_or(0) + quantity;
                ensure_figure(rules::COUNTS_AFTER, "member_shares_after", *member_shares_after, shares)?;
                if shares == *quantity {
                    period.entrants += 1;
                }
                period.tickets.insert(*member_id, shares);
                period.entries_total = sold;
            }
            CampaignEvent::SnatchPaymentArrivedLate {
                purchase_id, member_id, released_shares, recorded_at, ..
            } => {
                let ended = self.status == Status::Ended;
                let p = self.snatch.purchases.get(purchase_id).cloned();
                let stands = p.as_ref().is_some_and(|p| {
                    p.status == PurchaseStatus::Confirmed
                        || (p.status == PurchaseStatus::Reserved && *recorded_at < p.expires_at && !ended)
                });
                ensure(!self.snatch.late.contains(purchase_id) && !stands, rules::SHARES_ONCE, || {
                    format!("purchase {purchase_id}'s payment recorded late twice or while its reservation stands")
                })?;
                ensure(p.as_ref().is_none_or(|p| p.member_id == *member_id), rules::SHARES_ONCE, || {
                    format!("purchase {purchase_id}'s late payment names another member")
                })?;
                // A reservation still counted goes back with it.
                let release = p.filter(|p| p.status == PurchaseStatus::Reserved).map_or(0, |p| p.quantity);
                ensure_figure(rules::COUNTS_AFTER, "released_shares", *released_shares, release)?;
                if release > 0 {
                    self.set_status(purchase_id, PurchaseStatus::Released);
                    self.snatch.reserved -= release;
                    if let Some(held) = self.snatch.held.get_mut(member_id) {
                        *held = held.saturating_sub(release);
                    }
                }
                self.snatch.late.insert(*purchase_id);
            }
            CampaignEvent::CampaignPeriodDrawn {
                period_no,
                algorithm,
                seed,
                entrants_hash,
                entrants,
                total_tickets,
                winners,
                drawn_at,
                beacon,
                beacon_value,
                ..
            } => {
                ensure(beacon.is_none() && beacon_value.is_none(), rules::DRAW_RECOMPUTES, || {
                    "a snatch draw names no beacon".into()
                })?;
                ensure(algorithm == draw::ALGORITHM, rules::DRAW_RECOMPUTES, || {
                    format!("unknown algorithm {algorithm}")
                })?;
                ensure_figure(
                    rules::WITHIN_SHARES,
                    "shares sold at the draw",
                    self.snatch.sold,
                    terms.shares_per_period,
                )?;
                let period = self.periods.get_mut(period_no).ok_or_else(|| {
                    InvariantViolation::new(rules::ENTRY_OPEN_PERIOD, format!("no period {period_no}"))
                })?;
                ensure(period.end.is_none(), rules::PERIOD_ENDS_ONCE, || format!("period {period_no} drawn twice"))?;
                ensure(period.commitment.opens_to(seed), rules::SEED_OPENS_COMMITMENT, || {
                    format!("the seed of period {period_no} does not open its commitment")
                })?;
                let list = period
                    .entrant_list()
                    .map_err(|e| InvariantViolation::new(rules::DRAW_RECOMPUTES, e.to_string()))?;
                ensure_figure(rules::DRAW_RECOMPUTES, "entrants_hash", entrants_hash.to_hex(), list.hash().to_hex())?;
                ensure_figure(rules::COUNTS_AFTER, "entrants", *entrants, period.entrants)?;
                ensure_figure(rules::COUNTS_AFTER, "total_tickets", *total_tickets, list.total_tickets())?;
                let drawn = draw::draw_winners(seed, None, &list, 1)
                    .map_err(|e| InvariantViolation::new(rules::DRAW_RECOMPUTES, e.to_string()))?;
                let expected: Vec<PeriodWinner> =
                    drawn.iter().map(|m| PeriodWinner { rank: 1, member_id: *m, prize: terms.prize.clone() }).collect();
                ensure(*winners == expected, rules::DRAW_RECOMPUTES, || {
                    format!("the stated winner of period {period_no} is not what {} gives", draw::ALGORITHM)
                })?;
                // The period ends at its draw: the next one starts there.
                period.ends_at = *drawn_at;
                period.tickets.clear();
                period.entries.clear();
                period.end = Some(PeriodEnd::Drawn {
                    seed: *seed,
                    entrants_hash: *entrants_hash,
                    winners: drawn,
                    drawn_at: *drawn_at,
                });
                let late = std::mem::take(&mut self.snatch.late);
                self.snatch = SnatchBook { late, ..SnatchBook::default() };
                for w in winners {
                    self.award(AwardRef::Period { period_no: *period_no, rank: w.rank }, w.member_id, &w.prize)?;
                }
            }
            CampaignEvent::SnatchPeriodCancelled { period_no, refunds, cancelled_at } => {
                ensure(
                    self.open_snatch_period().is_some_and(|(n, _)| n == *period_no),
                    rules::PERIOD_ENDS_ONCE,
                    || format!("snatch period {period_no} cancelled while not open"),
                )?;
                ensure(self.status == Status::Ended || *cancelled_at >= self.terms.ends_at, rules::TRANSITION, || {
                    format!("snatch period {period_no} cancelled before the campaign ended")
                })?;
                let recomputed = self.share_refunds();
                ensure(*refunds == recomputed, rules::COUNTS_AFTER, || {
                    format!("{} refunds stated, {} paid purchases to refund", refunds.len(), recomputed.len())
                })?;
                if let Some(period) = self.periods.get_mut(period_no) {
                    period.tickets.clear();
                    period.entries.clear();
                    period.end = Some(PeriodEnd::Cancelled { cancelled_at: *cancelled_at });
                }
                let late = std::mem::take(&mut self.snatch.late);
                self.snatch = SnatchBook { late, ..SnatchBook::default() };
            }
            CampaignEvent::CampaignCreated { .. }
            | CampaignEvent::CampaignEdited { .. }
            | CampaignEvent::CampaignScheduled { .. }
            | CampaignEvent::CampaignStarted { .. }
            | CampaignEvent::CampaignEnded { .. }
            | CampaignEvent::CampaignEntryRecorded { .. }
            | CampaignEvent::CampaignPeriodCancelled { .. }
            | CampaignEvent::CampaignShakesDrawn { .. }
            | CampaignEvent::CampaignShakeSeedRevealed { .. }
            | CampaignEvent::CampaignVoteItemSubmitted { .. }
            | CampaignEvent::CampaignVoteItemApproved { .. }
            | CampaignEvent::CampaignVoteItemRejected { .. }
            | CampaignEvent::CampaignVoteCast { .. }
            | CampaignEvent::CampaignPrizeHandedOver { .. } => {
                return Err(InvariantViolation::new(rules::TRANSITION, format!("{} in a snatch", event.event_type())));
            }
        }
        Ok(())
    }

    fn open_period_no(&self, period_no: u32, at: DateTime<Utc>) -> Result<(), InvariantViolation> {
        let open = self.open_snatch_period().map(|(n, p)| (n, p.starts_at));
        ensure(open.is_some_and(|(n, starts_at)| n == period_no && at >= starts_at), rules::ENTRY_OPEN_PERIOD, || {
            format!("shares of period {period_no}, which is not open")
        })
    }

    fn reserved_purchase(&self, purchase_id: &PurchaseId) -> Result<Purchase, InvariantViolation> {
        let p = self.snatch.purchases.get(purchase_id).filter(|p| p.status == PurchaseStatus::Reserved);
        p.cloned().ok_or_else(|| {
            InvariantViolation::new(rules::SHARES_ONCE, format!("purchase {purchase_id} is not reserved"))
        })
    }

    fn set_status(&mut self, purchase_id: &PurchaseId, status: PurchaseStatus) {
        if let Some(p) = self.snatch.purchases.get_mut(purchase_id) {
            p.status = status;
        }
    }
}
