//! What happened to a member. Past tense; every change carries its provenance
//! and the balance after it, so an auditor can explain each figure.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::commands::{Attribution, CardLevel, PointsSource, Provenance, RegistrationSource, SpendPurpose};
use crate::card_levels::LevelSource;
use crate::{
    Actor, AmountFen, BalanceFen, CardNumber, DomainEventMeta, IdempotencyKey, MemberId, OpenId, PointsAmount,
    PointsBalance, Reference, TenantId,
};

/// Points taken from (or returned to) one lot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LotTake {
    pub lot_no: u64,
    pub points: PointsAmount,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum MemberEvent {
    MemberRegistered {
        member_id: MemberId,
        tenant_id: TenantId,
        card_no: CardNumber,
        openid: Option<OpenId>,
        source: RegistrationSource,
        card_level: CardLevel,
        registered_at: DateTime<Utc>,
        actor: Actor,
        idempotency_key: IdempotencyKey,
        /// Absent in events written before attribution was recorded.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attribution: Option<Attribution>,
    },
    MemberFollowed {
        attribution: Attribution,
        followed_at: DateTime<Utc>,
        #[serde(flatten)]
        provenance: Provenance,
    },
    MemberUnfollowed {
        unfollowed_at: DateTime<Utc>,
        #[serde(flatten)]
        provenance: Provenance,
    },
    CardLevelChanged {
        from: CardLevel,
        to: CardLevel,
        /// `rule` when the card level rule moved the member; absent (manual)
        /// for staff and for every event written before the rule existed.
        #[serde(default, skip_serializing_if = "LevelSource::is_manual")]
        source: LevelSource,
        #[serde(flatten)]
        provenance: Provenance,
    },
    PointsGranted {
        lot_no: u64,
        points: PointsAmount,
        source: PointsSource,
        granted_at: DateTime<Utc>,
        expires_at: Option<DateTime<Utc>>,
        #[serde(flatten)]
        provenance: Provenance,
        points_after: PointsBalance,
    },
    PointsDeducted {
        points: PointsAmount,
        taken: Vec<LotTake>,
        #[serde(flatten)]
        provenance: Provenance,
        points_after: PointsBalance,
    },
    PointsSpent {
        points: PointsAmount,
        purpose: SpendPurpose,
        taken: Vec<LotTake>,
        #[serde(flatten)]
        provenance: Provenance,
        points_after: PointsBalance,
    },
    PointsHeld {
        hold_id: Reference,
        points: PointsAmount,
        taken: Vec<LotTake>,
        #[serde(flatten)]
        provenance: Provenance,
        points_after: PointsBalance,
        #[schemars(range(min = 0))]
        held_after: i64,
    },
    HeldPointsSpent {
        hold_id: Reference,
        points: PointsAmount,
        #[serde(flatten)]
        provenance: Provenance,
        points_after: PointsBalance,
        #[schemars(range(min = 0))]
        held_after: i64,
    },
    /// Held points go back to their lots; lots that expired meanwhile expire
    /// the returned points in the same event (`expired`).
    PointsHoldReleased {
        hold_id: Reference,
        points: PointsAmount,
        returned: Vec<LotTake>,
        expired: Vec<LotTake>,
        #[serde(flatten)]
        provenance: Provenance,
        points_after: PointsBalance,
        #[schemars(range(min = 0))]
        held_after: i64,
    },
    PointsExpired {
        points: PointsAmount,
        lots: Vec<LotTake>,
        as_of: DateTime<Utc>,
        #[serde(flatten)]
        provenance: Provenance,
        points_after: PointsBalance,
    },
    CashDeposited {
        amount_fen: AmountFen,
        #[serde(flatten)]
        provenance: Provenance,
        balance_after_fen: BalanceFen,
    },
    CashCharged {
        amount_fen: AmountFen,
        #[serde(flatten)]
        provenance: Provenance,
        balance_after_fen: BalanceFen,
    },
    RechargeCredited {
        amount_fen: AmountFen,
        order_id: Reference,
        #[serde(flatten)]
        provenance: Provenance,
        balance_after_fen: BalanceFen,
    },
    /// A credit reversing (part of) the charge at `reverses_sequence`.
    ChargeRefunded {
        amount_fen: AmountFen,
        reverses_sequence: u64,
        #[serde(flatten)]
        provenance: Provenance,
        balance_after_fen: BalanceFen,
    },
    /// A WeChat Pay refund of the recharge `order_id` taken back from the balance.
    RechargeReversed {
        amount_fen: AmountFen,
        order_id: Reference,
        refund_no: Reference,
        #[serde(flatten)]
        provenance: Provenance,
        balance_after_fen: BalanceFen,
    },
    /// A refund the balance could not cover (already spent): the balance is
    /// untouched and an operator must resolve it.
    RechargeReversalFlagged {
        amount_fen: AmountFen,
        order_id: Reference,
        refund_no: Reference,
        balance_fen: BalanceFen,
        #[serde(flatten)]
        provenance: Provenance,
    },
    /// A purchase paid by WeChat Pay (not from the balance), counted in the
    /// total paid; `total_paid_after_fen` is the total with it.
    PurchasePaid {
        amount_fen: AmountFen,
        payment: Reference,
        #[serde(flatten)]
        provenance: Provenance,
        total_paid_after_fen: BalanceFen,
    },
    /// A Pay refund of such a purchase, taken off the total paid.
    PurchaseRefunded {
        amount_fen: AmountFen,
        payment: Reference,
        #[serde(flatten)]
        provenance: Provenance,
        total_paid_after_fen: BalanceFen,
    },
}

/// One ledger line as an auditor reads it: signed deltas derived from the
/// kind of event (never from client input).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedgerLine {
    pub points_delta: i64,
    pub held_delta: i64,
    pub cash_delta_fen: i64,
    pub points_after: Option<i64>,
    pub balance_after_fen: Option<i64>,
    pub actor: String,
    pub reason: String,
    pub reference: Option<String>,
    pub idempotency_key: String,
}

impl MemberEvent {
    pub fn provenance(&self) -> Option<&Provenance> {
        match self {
            MemberEvent::MemberRegistered { .. } => None,
            MemberEvent::CardLevelChanged { provenance, .. }
            | MemberEvent::PointsGranted { provenance, .. }
            | MemberEvent::PointsDeducted { provenance, .. }
            | MemberEvent::PointsSpent { provenance, .. }
            | MemberEvent::PointsHeld { provenance, .. }
            | MemberEvent::HeldPointsSpent { provenance, .. }
            | MemberEvent::PointsHoldReleased { provenance, .. }
            | MemberEvent::PointsExpired { provenance, .. }
            | MemberEvent::CashDeposited { provenance, .. }
            | MemberEvent::CashCharged { provenance, .. }
            | MemberEvent::RechargeCredited { provenance, .. }
            | MemberEvent::ChargeRefunded { provenance, .. }
            | MemberEvent::MemberFollowed { provenance, .. }
            | MemberEvent::MemberUnfollowed { provenance, .. }
            | MemberEvent::RechargeReversed { provenance, .. }
            | MemberEvent::RechargeReversalFlagged { provenance, .. }
            | MemberEvent::PurchasePaid { provenance, .. }
            | MemberEvent::PurchaseRefunded { provenance, .. } => Some(provenance),
        }
    }

    pub fn ledger_line(&self) -> LedgerLine {
        let (points_delta, held_delta, cash_delta_fen, points_after, balance_after_fen) = match self {
            MemberEvent::MemberRegistered { .. }
            | MemberEvent::CardLevelChanged { .. }
            | MemberEvent::MemberFollowed { .. }
            | MemberEvent::MemberUnfollowed { .. }
            // Paid outside the balance: neither points nor the balance move.
            | MemberEvent::PurchasePaid { .. }
            | MemberEvent::PurchaseRefunded { .. } => (0, 0, 0, None, None),
            MemberEvent::PointsGranted { points, points_after, .. } => (points.get(), 0, 0, Some(*points_after), None),
            MemberEvent::PointsDeducted { points, points_after, .. }
            | MemberEvent::PointsSpent { points, points_after, .. }
            | MemberEvent::PointsExpired { points, points_after, .. } => {
                (-points.get(), 0, 0, Some(*points_after), None)
            }
            MemberEvent::PointsHeld { points, points_after, .. } => {
                (-points.get(), points.get(), 0, Some(*points_after), None)
            }
            MemberEvent::HeldPointsSpent { points, points_after, .. } => {
                (0, -points.get(), 0, Some(*points_after), None)
            }
            MemberEvent::PointsHoldReleased { points, returned, points_after, .. } => {
                let back: i64 = returned.iter().map(|t| t.points.get()).sum();
                (back, -points.get(), 0, Some(*points_after), None)
            }
            MemberEvent::CashDeposited { amount_fen, balance_after_fen, .. }
            | MemberEvent::RechargeCredited { amount_fen, balance_after_fen, .. }
            | MemberEvent::ChargeRefunded { amount_fen, balance_after_fen, .. } => {
                (0, 0, amount_fen.get(), None, Some(*balance_after_fen))
            }
            MemberEvent::CashCharged { amount_fen, balance_after_fen, .. }
            | MemberEvent::RechargeReversed { amount_fen, balance_after_fen, .. } => {
                (0, 0, -amount_fen.get(), None, Some(*balance_after_fen))
            }
            // Nothing moved; the line states the untouched balance for the auditor.
            MemberEvent::RechargeReversalFlagged { balance_fen, .. } => (0, 0, 0, None, Some(*balance_fen)),
        };
        let (actor, reason, reference, idempotency_key) = match self {
            MemberEvent::MemberRegistered { actor, idempotency_key, .. } => {
                (actor.label(), "registered".to_owned(), None, idempotency_key.to_string())
            }
            other => match other.provenance() {
                Some(p) => (
                    p.actor.label(),
                    p.reason.to_string(),
                    p.reference.as_ref().map(ToString::to_string),
                    p.idempotency_key.to_string(),
                ),
                None => (String::new(), String::new(), None, String::new()),
            },
        };
        LedgerLine {
            points_delta,
            held_delta,
            cash_delta_fen,
            points_after: points_after.map(PointsBalance::get),
            balance_after_fen: balance_after_fen.map(BalanceFen::get),
            actor,
            reason,
            reference,
            idempotency_key,
        }
    }
}

impl DomainEventMeta for MemberEvent {
    fn event_type(&self) -> &'static str {
        match self {
            MemberEvent::MemberRegistered { .. } => "MemberRegistered",
            MemberEvent::CardLevelChanged { .. } => "CardLevelChanged",
            MemberEvent::PointsGranted { .. } => "PointsGranted",
            MemberEvent::PointsDeducted { .. } => "PointsDeducted",
            MemberEvent::PointsSpent { .. } => "PointsSpent",
            MemberEvent::PointsHeld { .. } => "PointsHeld",
            MemberEvent::HeldPointsSpent { .. } => "HeldPointsSpent",
            MemberEvent::PointsHoldReleased { .. } => "PointsHoldReleased",
            MemberEvent::PointsExpired { .. } => "PointsExpired",
            MemberEvent::CashDeposited { .. } => "CashDeposited",
            MemberEvent::CashCharged { .. } => "CashCharged",
            MemberEvent::RechargeCredited { .. } => "RechargeCredited",
            MemberEvent::ChargeRefunded { .. } => "ChargeRefunded",
            MemberEvent::MemberFollowed { .. } => "MemberFollowed",
            MemberEvent::MemberUnfollowed { .. } => "MemberUnfollowed",
            MemberEvent::RechargeReversed { .. } => "RechargeReversed",
            MemberEvent::RechargeReversalFlagged { .. } => "RechargeReversalFlagged",
            MemberEvent::PurchasePaid { .. } => "PurchasePaid",
            MemberEvent::PurchaseRefunded { .. } => "PurchaseRefunded",
        }
    }
    fn event_version(&self) -> &'static str {
        "1"
    }
}
