//! The commission account aggregate: one distributor's commissions and
//! withdrawals (see the module documentation for the accounting).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{rules, CommissionLevel, CommissionRule, WithdrawalId, WithdrawalPolicy, HOLD_DAYS_MAX};
use crate::invariant::{ensure, ensure_figure};
use crate::mall::{MallOrderId, Quantity};
use crate::{
    Actor, AmountFen, BalanceFen, DomainEventMeta, EventSourced, InvariantViolation, MemberId, Reference, TenantId,
};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommissionAccountError {
    #[error("commission account not found")]
    NotFound,
    #[error("the account belongs to another tenant or distributor")]
    WrongAccount,
    #[error("a distributor never earns on their own order")]
    OwnOrder,
    #[error("no commission for this order and level")]
    UnknownCommission,
    #[error("the order is not delivered yet")]
    NotDelivered,
    #[error("the holding period runs until {0}")]
    Holding(DateTime<Utc>),
    #[error("a refund of the order is open")]
    RefundOpen,
    #[error("the holding period must be 0..={HOLD_DAYS_MAX} days, got {0}")]
    HoldDays(u16),
    #[error("the commission was reversed")]
    Reversed,
    #[error("the commission was clawed back")]
    ClawedBack,
    #[error("withdrawals start at {0} fen")]
    BelowMinimum(i64),
    #[error("only {available} fen are withdrawable")]
    Insufficient { available: i64 },
    #[error("the fee leaves nothing to pay out")]
    NothingToPayOut,
    #[error("withdrawal not found")]
    UnknownWithdrawal,
    #[error("withdrawal already requested")]
    DuplicateWithdrawal,
    #[error("withdrawal is {0}")]
    WithdrawalState(&'static str),
    #[error("the withdrawal was paid with another reference")]
    OtherPayout,
    #[error("the withdrawal is paid out {0:?}, not by WeChat Pay transfer")]
    NotATransfer(PayoutMethod),
    #[error("a withdrawal takes at most {TRANSFER_ATTEMPTS_MAX} transfers")]
    TooManyTransfers,
    #[error("nearer levels cannot take {0} fen of the basis")]
    NearerLevels(i64),
    #[error("figures overflow")]
    Overflow,
}

/// One commission: an order's level-1 or level-2 share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommissionKey {
    pub order_id: MallOrderId,
    pub level: CommissionLevel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CommissionState {
    Pending,
    Settled,
    /// Refunded before settlement.
    Reversed,
    /// Refunded after settlement: taken back from the balance, or as debt.
    ClawedBack,
}

impl CommissionState {
    pub fn as_str(self) -> &'static str {
        match self {
            CommissionState::Pending => "pending",
            CommissionState::Settled => "settled",
            CommissionState::Reversed => "reversed",
            CommissionState::ClawedBack => "clawed_back",
        }
    }
}

/// How an approved withdrawal is paid out: to the member's cash balance (a
/// ledger credit) or to their WeChat change by a WeChat Pay transfer
/// (商家转账到零钱). Chosen by the tenant; fixed on the withdrawal when approved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PayoutMethod {
    #[default]
    Balance,
    WechatTransfer,
}

/// Transfers one withdrawal sends at most (a new one only after a failure).
pub const TRANSFER_ATTEMPTS_MAX: u32 = 10;

/// The current WeChat Pay transfer of a withdrawal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferAttempt {
    pub attempt: u32,
    pub out_batch_no: String,
    pub out_detail_no: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WithdrawalState {
    Requested,
    Approved,
    /// A WeChat Pay transfer was asked for: paid or failed when Pay says so
    /// (its notification or a query, whichever comes first).
    Transferring,
    Paid,
    /// Refused by an admin: the amount is back in the balance.
    Rejected,
    /// The payout failed: the amount is still held until retried or returned.
    Failed,
    /// Given back after a failure.
    Returned,
}

impl WithdrawalState {
    pub fn as_str(self) -> &'static str {
        match self {
            WithdrawalState::Requested => "requested",
            WithdrawalState::Approved => "approved",
            WithdrawalState::Transferring => "transferring",
            WithdrawalState::Paid => "paid",
            WithdrawalState::Rejected => "rejected",
            WithdrawalState::Failed => "failed",
            WithdrawalState::Returned => "returned",
        }
    }
    /// The amount has left the balance and not come back.
    pub fn holds_funds(self) -> bool {
        matches!(
            self,
            WithdrawalState::Requested
                | WithdrawalState::Approved
                | WithdrawalState::Transferring
                | WithdrawalState::Failed
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commission {
    pub amount_fen: i64,
    pub state: CommissionState,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Withdrawal {
    pub amount_fen: i64,
    pub fee_fen: i64,
    pub state: WithdrawalState,
    pub payout_ref: Option<Reference>,
    /// Set when approved.
    #[serde(default)]
    pub method: PayoutMethod,
    /// The latest WeChat Pay transfer, if any.
    #[serde(default)]
    pub transfer: Option<TransferAttempt>,
}

/// The account's running sums (see the module documentation).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommissionFigures {
    pub earned: i64,
    pub pending: i64,
    pub settled: i64,
    pub reversed: i64,
    pub clawed_back: i64,
    /// Requested, approved or failed withdrawals.
    pub in_flight: i64,
    pub paid_out: i64,
}

impl CommissionFigures {
    pub fn withdrawn(&self) -> i64 {
        self.in_flight.saturating_add(self.paid_out)
    }
    /// `settled − clawed_back − withdrawn`; the sums are bounded by `settled`.
    pub fn net(&self) -> i64 {
        self.settled.saturating_sub(self.clawed_back).saturating_sub(self.withdrawn())
    }
    pub fn withdrawable(&self) -> i64 {
        self.net().max(0)
    }
    pub fn debt(&self) -> i64 {
        self.net().min(0).saturating_neg()
    }
    /// The part of the claw-backs covered by settled money.
    pub fn debt_repaid(&self) -> i64 {
        self.clawed_back.saturating_sub(self.debt())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub tenant_id: TenantId,
    pub distributor_id: MemberId,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommissionAccount {
    pub owner: Option<Owner>,
    #[serde(with = "entries")]
    pub commissions: BTreeMap<CommissionKey, Commission>,
    pub withdrawals: BTreeMap<WithdrawalId, Withdrawal>,
    pub figures: CommissionFigures,
}

/// A map with struct keys, stored as a list of pairs (JSON keys are strings).
mod entries {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<K: Serialize, V: Serialize, S: Serializer>(map: &BTreeMap<K, V>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(map.iter())
    }

    pub fn deserialize<'de, K, V, D>(d: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(d)?.into_iter().collect())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum CommissionAccountCommand {
    /// A paid order earns the distributor their level's share. The first
    /// accrual opens the account; a repeated one (a duplicated Pay
    /// notification) changes nothing.
    Accrue {
        tenant_id: TenantId,
        distributor_id: MemberId,
        buyer_id: MemberId,
        key: CommissionKey,
        /// Cash paid for the goods after coupons (never points, never freight).
        basis_fen: AmountFen,
        quantity: Quantity,
        rule: CommissionRule,
        /// What nearer levels of the order earn (level 1's commission, for
        /// level 2; 0 for level 1): see [`super::split_order`].
        nearer_levels_fen: i64,
    },
    /// The scheduler (or an admin): settle once the order was delivered
    /// `hold_days` ago and no refund is open. The application passes what it
    /// knows of the order; the account refuses otherwise. Repeating a settled
    /// commission's settlement changes nothing.
    Settle {
        key: CommissionKey,
        delivered_at: Option<DateTime<Utc>>,
        hold_days: u16,
        refund_open: bool,
    },
    /// The order was refunded: reversed while pending, clawed back once
    /// settled. Repeating it changes nothing.
    Reverse {
        key: CommissionKey,
        refund: Reference,
    },
    /// Money leaves the withdrawable balance now.
    RequestWithdrawal {
        withdrawal_id: WithdrawalId,
        amount_fen: AmountFen,
        policy: WithdrawalPolicy,
        actor: Actor,
    },
    ApproveWithdrawal {
        withdrawal_id: WithdrawalId,
        actor: Actor,
        /// The tenant's payout method now: fixed on the withdrawal.
        #[serde(default)]
        method: PayoutMethod,
    },
    /// An approved withdrawal paid by transfer: its next transfer's numbers
    /// are recorded before Pay is asked, so a lost answer is resolved by
    /// asking about those numbers, never by a transfer under new ones. The
    /// same command while transferring changes nothing.
    RequestWithdrawalTransfer {
        withdrawal_id: WithdrawalId,
    },
    /// Refused: the amount returns to the balance.
    RejectWithdrawal {
        withdrawal_id: WithdrawalId,
        reason: Reference,
        actor: Actor,
    },
    /// The payout landed (a member ledger credit or a Pay transfer, named by
    /// `payout_ref`). The same reference again changes nothing.
    RecordWithdrawalPaid {
        withdrawal_id: WithdrawalId,
        payout_ref: Reference,
    },
    /// The payout failed: the amount stays held until retried or returned.
    RecordWithdrawalFailed {
        withdrawal_id: WithdrawalId,
        reason: Reference,
    },
    RetryWithdrawal {
        withdrawal_id: WithdrawalId,
        actor: Actor,
    },
    /// Give a failed withdrawal back to the balance.
    ReturnWithdrawal {
        withdrawal_id: WithdrawalId,
        actor: Actor,
    },
}

/// `withdrawable_after_fen` and `debt_after_fen` are what the account holds
/// after the event; `apply` recomputes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum CommissionAccountEvent {
    CommissionAccountOpened {
        tenant_id: TenantId,
        distributor_id: MemberId,
        opened_at: DateTime<Utc>,
    },
    CommissionAccrued {
        key: CommissionKey,
        buyer_id: MemberId,
        basis_fen: AmountFen,
        quantity: Quantity,
        rule: CommissionRule,
        #[schemars(range(min = 0, max = AmountFen::MAX))]
        nearer_levels_fen: i64,
        amount_fen: AmountFen,
        pending_after_fen: BalanceFen,
        accrued_at: DateTime<Utc>,
    },
    CommissionSettled {
        key: CommissionKey,
        amount_fen: AmountFen,
        delivered_at: DateTime<Utc>,
        withdrawable_after_fen: BalanceFen,
        debt_after_fen: BalanceFen,
        settled_at: DateTime<Utc>,
    },
    /// Refunded before settlement.
    CommissionReversed {
        key: CommissionKey,
        amount_fen: AmountFen,
        refund: Reference,
        pending_after_fen: BalanceFen,
        reversed_at: DateTime<Utc>,
    },
    /// Refunded after settlement: never clamped, the shortfall is debt.
    CommissionClawedBack {
        key: CommissionKey,
        amount_fen: AmountFen,
        refund: Reference,
        withdrawable_after_fen: BalanceFen,
        debt_after_fen: BalanceFen,
        clawed_back_at: DateTime<Utc>,
    },
    WithdrawalRequested {
        withdrawal_id: WithdrawalId,
        amount_fen: AmountFen,
        #[schemars(range(min = 0, max = AmountFen::MAX))]
        fee_fen: i64,
        payout_fen: AmountFen,
        withdrawable_after_fen: BalanceFen,
        actor: Actor,
        requested_at: DateTime<Utc>,
    },
    WithdrawalApproved {
        withdrawal_id: WithdrawalId,
        actor: Actor,
        approved_at: DateTime<Utc>,
        /// Absent in events from before transfers: the balance.
        #[serde(default)]
        method: PayoutMethod,
    },
    WithdrawalTransferRequested {
        withdrawal_id: WithdrawalId,
        #[schemars(range(min = 1, max = TRANSFER_ATTEMPTS_MAX))]
        attempt: u32,
        out_batch_no: String,
        out_detail_no: String,
        requested_at: DateTime<Utc>,
    },
    WithdrawalRejected {
        withdrawal_id: WithdrawalId,
        reason: Reference,
        actor: Actor,
        withdrawable_after_fen: BalanceFen,
        debt_after_fen: BalanceFen,
        rejected_at: DateTime<Utc>,
    },
    WithdrawalPaid {
        withdrawal_id: WithdrawalId,
        payout_ref: Reference,
        paid_at: DateTime<Utc>,
    },
    WithdrawalFailed {
        withdrawal_id: WithdrawalId,
        reason: Reference,
        failed_at: DateTime<Utc>,
    },
    WithdrawalRetried {
        withdrawal_id: WithdrawalId,
        actor: Actor,
        retried_at: DateTime<Utc>,
    },
    WithdrawalReturned {
        withdrawal_id: WithdrawalId,
        actor: Actor,
        withdrawable_after_fen: BalanceFen,
        debt_after_fen: BalanceFen,
        returned_at: DateTime<Utc>,
    },
}

impl DomainEventMeta for CommissionAccountEvent {
    fn event_type(&self) -> &'static str {
        match self {
            CommissionAccountEvent::CommissionAccountOpened { .. } => "CommissionAccountOpened",
            CommissionAccountEvent::CommissionAccrued { .. } => "CommissionAccrued",
            CommissionAccountEvent::CommissionSettled { .. } => "CommissionSettled",
            CommissionAccountEvent::CommissionReversed { .. } => "CommissionReversed",
            CommissionAccountEvent::CommissionClawedBack { .. } => "CommissionClawedBack",
            CommissionAccountEvent::WithdrawalRequested { .. } => "WithdrawalRequested",
            CommissionAccountEvent::WithdrawalApproved { .. } => "WithdrawalApproved",
            CommissionAccountEvent::WithdrawalTransferRequested { .. } => "WithdrawalTransferRequested",
            CommissionAccountEvent::WithdrawalRejected { .. } => "WithdrawalRejected",
            CommissionAccountEvent::WithdrawalPaid { .. } => "WithdrawalPaid",
            CommissionAccountEvent::WithdrawalFailed { .. } => "WithdrawalFailed",
            CommissionAccountEvent::WithdrawalRetried { .. } => "WithdrawalRetried",
            CommissionAccountEvent::WithdrawalReturned { .. } => "WithdrawalReturned",
        }
    }
    fn event_version(&self) -> &'static str {
        "1"
    }
}

fn balance(fen: i64) -> Result<BalanceFen, CommissionAccountError> {
    BalanceFen::new(fen).ok_or(CommissionAccountError::Overflow)
}

fn amount(fen: i64) -> Result<AmountFen, CommissionAccountError> {
    AmountFen::new(fen).map_err(|_| CommissionAccountError::Overflow)
}

impl CommissionAccount {
    pub fn withdrawable_fen(&self) -> i64 {
        self.figures.withdrawable()
    }
    pub fn debt_fen(&self) -> i64 {
        self.figures.debt()
    }

    fn commission(&self, key: &CommissionKey) -> Result<&Commission, CommissionAccountError> {
        self.owner.as_ref().ok_or(CommissionAccountError::NotFound)?;
        self.commissions.get(key).ok_or(CommissionAccountError::UnknownCommission)
    }

    fn withdrawal(&self, id: &WithdrawalId) -> Result<&Withdrawal, CommissionAccountError> {
        self.owner.as_ref().ok_or(CommissionAccountError::NotFound)?;
        self.withdrawals.get(id).ok_or(CommissionAccountError::UnknownWithdrawal)
    }

    /// The figures after moving `fen` by `change`: for the stated balances.
    fn after(
        &self,
        change: impl FnOnce(&mut CommissionFigures) -> Option<()>,
    ) -> Result<(BalanceFen, BalanceFen), CommissionAccountError> {
        let mut figures = self.figures;
        change(&mut figures).ok_or(CommissionAccountError::Overflow)?;
        Ok((balance(figures.withdrawable())?, balance(figures.debt())?))
    }

    #[allow(clippy::too_many_arguments)]
    fn accrue(
        &self,
        tenant_id: TenantId,
        distributor_id: MemberId,
        buyer_id: MemberId,
        key: CommissionKey,
        basis_fen: AmountFen,
        quantity: Quantity,
        rule: CommissionRule,
        nearer_levels_fen: i64,
        now: DateTime<Utc>,
    ) -> Result<Vec<CommissionAccountEvent>, CommissionAccountError> {
        if buyer_id == distributor_id {
            return Err(CommissionAccountError::OwnOrder);
        }
        let mut events = Vec::new();
        match &self.owner {
            Some(owner) if owner.tenant_id != tenant_id || owner.distributor_id != distributor_id => {
                return Err(CommissionAccountError::WrongAccount);
            }
            Some(_) => {}
            None => events.push(CommissionAccountEvent::CommissionAccountOpened {
                tenant_id,
                distributor_id,
                opened_at: now,
            }),
        }
        if self.commissions.contains_key(&key) {
            return Ok(vec![]);
        }
        let fen = rule
            .commission_fen_after(basis_fen.get(), quantity, nearer_levels_fen)
            .ok_or(CommissionAccountError::NearerLevels(nearer_levels_fen))?;
        if fen == 0 {
            // Nothing earned: no commission (and no account opened for it).
            return Ok(vec![]);
        }
        let amount_fen = amount(fen)?;
        let pending = self.figures.pending.checked_add(fen).ok_or(CommissionAccountError::Overflow)?;
        events.push(CommissionAccountEvent::CommissionAccrued {
            key,
            buyer_id,
            basis_fen,
            quantity,
            rule,
            nearer_levels_fen,
            amount_fen,
            pending_after_fen: balance(pending)?,
            accrued_at: now,
        });
        Ok(events)
    }

    fn settle(
        &self,
        key: CommissionKey,
        delivered_at: Option<DateTime<Utc>>,
        hold_days: u16,
        refund_open: bool,
        now: DateTime<Utc>,
    ) -> Result<Vec<CommissionAccountEvent>, CommissionAccountError> {
        let commission = self.commission(&key)?;
        match commission.state {
            CommissionState::Pending => {}
            CommissionState::Settled => return Ok(vec![]),
            CommissionState::Reversed => return Err(CommissionAccountError::Reversed),
            CommissionState::ClawedBack => return Err(CommissionAccountError::ClawedBack),
        }
        if hold_days > HOLD_DAYS_MAX {
            return Err(CommissionAccountError::HoldDays(hold_days));
        }
        let delivered_at = delivered_at.ok_or(CommissionAccountError::NotDelivered)?;
        let until = super::settles_at(delivered_at, hold_days);
        if now < until {
            return Err(CommissionAccountError::Holding(until));
        }
        if refund_open {
            return Err(CommissionAccountError::RefundOpen);
        }
        let fen = commission.amount_fen;
        let (withdrawable_after_fen, debt_after_fen) = self.after(|f| {
            f.pending = f.pending.checked_sub(fen)?;
            f.settled = f.settled.checked_add(fen)?;
            Some(())
        })?;
        Ok(vec![CommissionAccountEvent::CommissionSettled {
            key,
            amount_fen: amount(fen)?,
            delivered_at,
            withdrawable_after_fen,
            debt_after_fen,
            settled_at: now,
        }])
    }

    fn reverse(
        &self,
        key: CommissionKey,
        refund: Reference,
        now: DateTime<Utc>,
    ) -> Result<Vec<CommissionAccountEvent>, CommissionAccountError> {
        let commission = self.commission(&key)?;
        let fen = commission.amount_fen;
        match commission.state {
            CommissionState::Reversed | CommissionState::ClawedBack => Ok(vec![]),
            CommissionState::Pending => {
                let pending = self.figures.pending.checked_sub(fen).ok_or(CommissionAccountError::Overflow)?;
                Ok(vec![CommissionAccountEvent::CommissionReversed {
                    key,
                    amount_fen: amount(fen)?,
                    refund,
                    pending_after_fen: balance(pending)?,
                    reversed_at: now,
                }])
            }
            CommissionState::Settled => {
                let (withdrawable_after_fen, debt_after_fen) = self.after(|f| {
                    f.clawed_back = f.clawed_back.checked_add(fen)?;
                    Some(())
                })?;
                Ok(vec![CommissionAccountEvent::CommissionClawedBack {
                    key,
                    amount_fen: amount(fen)?,
                    refund,
                    withdrawable_after_fen,
                    debt_after_fen,
                    clawed_back_at: now,
                }])
            }
        }
    }

    fn request_withdrawal(
        &self,
        withdrawal_id: WithdrawalId,
        amount_fen: AmountFen,
        policy: WithdrawalPolicy,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Result<Vec<CommissionAccountEvent>, CommissionAccountError> {
        self.owner.as_ref().ok_or(CommissionAccountError::NotFound)?;
        if self.withdrawals.contains_key(&withdrawal_id) {
            return Err(CommissionAccountError::DuplicateWithdrawal);
        }
        if amount_fen < policy.min_amount_fen {
            return Err(CommissionAccountError::BelowMinimum(policy.min_amount_fen.get()));
        }
        let available = self.figures.withdrawable();
        if amount_fen.get() > available {
            return Err(CommissionAccountError::Insufficient { available });
        }
        let fee_fen = policy.fee_fen(amount_fen.get()).ok_or(CommissionAccountError::Overflow)?;
        let payout_fen =
            AmountFen::new(amount_fen.get() - fee_fen).map_err(|_| CommissionAccountError::NothingToPayOut)?;
        let (withdrawable_after_fen, _) = self.after(|f| {
            f.in_flight = f.in_flight.checked_add(amount_fen.get())?;
            Some(())
        })?;
        Ok(vec![CommissionAccountEvent::WithdrawalRequested {
            withdrawal_id,
            amount_fen,
            fee_fen,
            payout_fen,
            withdrawable_after_fen,
            actor,
            requested_at: now,
        }])
    }

    /// The withdrawal in `from`, or a refusal naming its state.
    fn withdrawal_in(
        &self,
        id: &WithdrawalId,
        from: &[WithdrawalState],
    ) -> Result<&Withdrawal, CommissionAccountError> {
        let withdrawal = self.withdrawal(id)?;
        if !from.contains(&withdrawal.state) {
            return Err(CommissionAccountError::WithdrawalState(withdrawal.state.as_str()));
        }
        Ok(withdrawal)
    }

    /// The balances after a held withdrawal's amount comes back.
    fn returned(&self, withdrawal: &Withdrawal) -> Result<(BalanceFen, BalanceFen), CommissionAccountError> {
        self.after(|f| {
            f.in_flight = f.in_flight.checked_sub(withdrawal.amount_fen)?;
            Some(())
        })
    }

    fn handle_withdrawal(
        &self,
        command: CommissionAccountCommand,
        now: DateTime<Utc>,
    ) -> Result<Vec<CommissionAccountEvent>, CommissionAccountError> {
        use CommissionAccountCommand as C;
        use CommissionAccountEvent as E;
        use WithdrawalState as S;
        let event = match command {
            C::ApproveWithdrawal { withdrawal_id, actor, method } => {
                self.withdrawal_in(&withdrawal_id, &[S::Requested])?;
                E::WithdrawalApproved { withdrawal_id, actor, approved_at: now, method }
            }
            C::RequestWithdrawalTransfer { withdrawal_id } => {
                let withdrawal = self.withdrawal(&withdrawal_id)?;
                if withdrawal.method != PayoutMethod::WechatTransfer {
                    return Err(CommissionAccountError::NotATransfer(withdrawal.method));
                }
                if withdrawal.state == S::Transferring {
                    return Ok(vec![]);
                }
                let withdrawal = self.withdrawal_in(&withdrawal_id, &[S::Approved])?;
                let attempt = withdrawal.transfer.as_ref().map_or(0, |t| t.attempt) + 1;
                if attempt > TRANSFER_ATTEMPTS_MAX {
                    return Err(CommissionAccountError::TooManyTransfers);
                }
                let (out_batch_no, out_detail_no) = withdrawal_id.transfer_nos(attempt);
                E::WithdrawalTransferRequested {
                    withdrawal_id,
                    attempt,
                    out_batch_no,
                    out_detail_no,
                    requested_at: now,
                }
            }
            C::RejectWithdrawal { withdrawal_id, reason, actor } => {
                let withdrawal = self.withdrawal_in(&withdrawal_id, &[S::Requested])?;
                let (withdrawable_after_fen, debt_after_fen) = self.returned(withdrawal)?;
                E::WithdrawalRejected {
                    withdrawal_id,
                    reason,
                    actor,
                    withdrawable_after_fen,
                    debt_after_fen,
                    rejected_at: now,
                }
            }
            C::RecordWithdrawalPaid { withdrawal_id, payout_ref } => {
                let withdrawal = self.withdrawal(&withdrawal_id)?;
                if withdrawal.state == S::Paid {
                    if withdrawal.payout_ref == Some(payout_ref) {
                        return Ok(vec![]);
                    }
                    return Err(CommissionAccountError::OtherPayout);
                }
                self.withdrawal_in(&withdrawal_id, &[S::Approved, S::Transferring])?;
                E::WithdrawalPaid { withdrawal_id, payout_ref, paid_at: now }
            }
            C::RecordWithdrawalFailed { withdrawal_id, reason } => {
                if self.withdrawal(&withdrawal_id)?.state == S::Failed {
                    return Ok(vec![]);
                }
                self.withdrawal_in(&withdrawal_id, &[S::Approved, S::Transferring])?;
                E::WithdrawalFailed { withdrawal_id, reason, failed_at: now }
            }
            C::RetryWithdrawal { withdrawal_id, actor } => {
                self.withdrawal_in(&withdrawal_id, &[S::Failed])?;
                E::WithdrawalRetried { withdrawal_id, actor, retried_at: now }
            }
            C::ReturnWithdrawal { withdrawal_id, actor } => {
                let withdrawal = self.withdrawal_in(&withdrawal_id, &[S::Failed])?;
                let (withdrawable_after_fen, debt_after_fen) = self.returned(withdrawal)?;
                E::WithdrawalReturned { withdrawal_id, actor, withdrawable_after_fen, debt_after_fen, returned_at: now }
            }
            C::Accrue { .. } | C::Settle { .. } | C::Reverse { .. } | C::RequestWithdrawal { .. } => {
                return Err(CommissionAccountError::WithdrawalState("not a withdrawal step"));
            }
        };
        Ok(vec![event])
    }
}

// ---------------------------------------------------------------- apply

fn overflow(what: &str) -> InvariantViolation {
    InvariantViolation::new(rules::FIGURES_FIT, format!("{what} overflows"))
}

impl CommissionAccount {
    fn owner_required(&self) -> Result<(), InvariantViolation> {
        ensure(self.owner.is_some(), rules::ACCOUNT_EXISTS, || "event before the account was opened".into())
    }

    fn move_commission(
        &mut self,
        key: &CommissionKey,
        amount_fen: AmountFen,
        from: CommissionState,
        to: CommissionState,
    ) -> Result<i64, InvariantViolation> {
        self.owner_required()?;
        let commission = self.commissions.get_mut(key).ok_or_else(|| {
            InvariantViolation::new(rules::COMMISSION_STATES, format!("{} for an unknown commission", to.as_str()))
        })?;
        ensure(commission.state == from, rules::COMMISSION_STATES, || {
            format!("{} → {} while {}", from.as_str(), to.as_str(), commission.state.as_str())
        })?;
        ensure_figure(rules::FIGURES, "amount_fen", amount_fen.get(), commission.amount_fen)?;
        commission.state = to;
        Ok(commission.amount_fen)
    }

    fn move_withdrawal(
        &mut self,
        id: &WithdrawalId,
        from: &[WithdrawalState],
        to: WithdrawalState,
    ) -> Result<&mut Withdrawal, InvariantViolation> {
        self.owner_required()?;
        let withdrawal = self.withdrawals.get_mut(id).ok_or_else(|| {
            InvariantViolation::new(rules::WITHDRAWAL_STATES, format!("{} for unknown withdrawal {id}", to.as_str()))
        })?;
        ensure(from.contains(&withdrawal.state), rules::WITHDRAWAL_STATES, || {
            format!("{id}: {} → {}", withdrawal.state.as_str(), to.as_str())
        })?;
        withdrawal.state = to;
        Ok(withdrawal)
    }

    fn give_back(&mut self, id: &WithdrawalId, to: WithdrawalState) -> Result<(), InvariantViolation> {
        let from: &[WithdrawalState] =
            if to == WithdrawalState::Rejected { &[WithdrawalState::Requested] } else { &[WithdrawalState::Failed] };
        let fen = self.move_withdrawal(id, from, to)?.amount_fen;
        self.figures.in_flight = self.figures.in_flight.checked_sub(fen).ok_or_else(|| overflow("in_flight"))?;
        Ok(())
    }

    fn check_balances(&self, withdrawable: BalanceFen, debt: BalanceFen) -> Result<(), InvariantViolation> {
        ensure_figure(rules::FIGURES, "withdrawable_after_fen", withdrawable.get(), self.figures.withdrawable())?;
        ensure_figure(rules::FIGURES, "debt_after_fen", debt.get(), self.figures.debt())
    }

    fn apply_accrued(
        &mut self,
        key: &CommissionKey,
        (basis_fen, quantity, rule, nearer_levels_fen): (AmountFen, Quantity, CommissionRule, i64),
        amount_fen: AmountFen,
        pending_after: BalanceFen,
    ) -> Result<(), InvariantViolation> {
        self.owner_required()?;
        ensure(!self.commissions.contains_key(key), rules::ACCRUED_ONCE, || {
            format!("order {} level {} accrued twice", key.order_id, key.level.number())
        })?;
        let recomputed = rule.commission_fen_after(basis_fen.get(), quantity, nearer_levels_fen).unwrap_or(-1);
        ensure_figure(rules::FIGURES, "amount_fen", amount_fen.get(), recomputed)?;
        let fen = amount_fen.get();
        let f = &mut self.figures;
        f.earned = f.earned.checked_add(fen).ok_or_else(|| overflow("earned"))?;
        f.pending = f.pending.checked_add(fen).ok_or_else(|| overflow("pending"))?;
        ensure_figure(rules::FIGURES, "pending_after_fen", pending_after.get(), f.pending)?;
        self.commissions.insert(*key, Commission { amount_fen: fen, state: CommissionState::Pending });
        Ok(())
    }

    fn apply_requested(
        &mut self,
        id: WithdrawalId,
        amount_fen: AmountFen,
        fee_fen: i64,
        payout_fen: AmountFen,
        withdrawable_after: BalanceFen,
    ) -> Result<(), InvariantViolation> {
        self.owner_required()?;
        ensure(!self.withdrawals.contains_key(&id), rules::WITHDRAWAL_STATES, || format!("{id} requested twice"))?;
        let fen = amount_fen.get();
        ensure(fen <= self.figures.withdrawable(), rules::WITHDRAWAL_COVERED, || {
            format!("{fen} fen requested with {} withdrawable", self.figures.withdrawable())
        })?;
        ensure(fee_fen >= 0 && fee_fen.checked_add(payout_fen.get()) == Some(fen), rules::WITHDRAWAL_SPLIT, || {
            format!("fee {fee_fen} + payout {payout_fen} ≠ amount {fen}")
        })?;
        self.figures.in_flight = self.figures.in_flight.checked_add(fen).ok_or_else(|| overflow("in_flight"))?;
        ensure_figure(rules::FIGURES, "withdrawable_after_fen", withdrawable_after.get(), self.figures.withdrawable())?;
        self.withdrawals.insert(
            id,
            Withdrawal {
                amount_fen: fen,
                fee_fen,
                state: WithdrawalState::Requested,
                payout_ref: None,
                method: PayoutMethod::Balance,
                transfer: None,
            },
        );
        Ok(())
    }
}

impl EventSourced for CommissionAccount {
    const TYPE: &'static str = "commission_account";
    const STATE_VERSION: i32 = 1;
    type Command = CommissionAccountCommand;
    type Event = CommissionAccountEvent;
    type Error = CommissionAccountError;

    fn handle(&self, command: Self::Command, now: DateTime<Utc>) -> Result<Vec<Self::Event>, Self::Error> {
        use CommissionAccountCommand as C;
        match command {
            C::Accrue { tenant_id, distributor_id, buyer_id, key, basis_fen, quantity, rule, nearer_levels_fen } => {
                self.accrue(tenant_id, distributor_id, buyer_id, key, basis_fen, quantity, rule, nearer_levels_fen, now)
            }
            C::Settle { key, delivered_at, hold_days, refund_open } => {
                self.settle(key, delivered_at, hold_days, refund_open, now)
            }
            C::Reverse { key, refund } => self.reverse(key, refund, now),
            C::RequestWithdrawal { withdrawal_id, amount_fen, policy, actor } => {
                self.request_withdrawal(withdrawal_id, amount_fen, policy, actor, now)
            }
            other => self.handle_withdrawal(other, now),
        }
    }

    fn apply(&mut self, event: &Self::Event) -> Result<(), InvariantViolation> {
        use CommissionAccountEvent as E;
        use CommissionState as CS;
        use WithdrawalState as S;
        match event {
            E::CommissionAccountOpened { tenant_id, distributor_id, .. } => {
                ensure(self.owner.is_none(), rules::ACCOUNT_OPENED_ONCE, || "opened twice".into())?;
                self.owner = Some(Owner { tenant_id: tenant_id.clone(), distributor_id: *distributor_id });
            }
            E::CommissionAccrued {
                key,
                basis_fen,
                quantity,
                rule,
                nearer_levels_fen,
                amount_fen,
                pending_after_fen,
                ..
            } => {
                let accrued = (*basis_fen, *quantity, *rule, *nearer_levels_fen);
                self.apply_accrued(key, accrued, *amount_fen, *pending_after_fen)?;
            }
            E::CommissionSettled { key, amount_fen, withdrawable_after_fen, debt_after_fen, .. } => {
                let fen = self.move_commission(key, *amount_fen, CS::Pending, CS::Settled)?;
                let f = &mut self.figures;
                f.pending = f.pending.checked_sub(fen).ok_or_else(|| overflow("pending"))?;
                f.settled = f.settled.checked_add(fen).ok_or_else(|| overflow("settled"))?;
                self.check_balances(*withdrawable_after_fen, *debt_after_fen)?;
            }
            E::CommissionReversed { key, amount_fen, pending_after_fen, .. } => {
                let fen = self.move_commission(key, *amount_fen, CS::Pending, CS::Reversed)?;
                let f = &mut self.figures;
                f.pending = f.pending.checked_sub(fen).ok_or_else(|| overflow("pending"))?;
                f.reversed = f.reversed.checked_add(fen).ok_or_else(|| overflow("reversed"))?;
                ensure_figure(rules::FIGURES, "pending_after_fen", pending_after_fen.get(), f.pending)?;
            }
            E::CommissionClawedBack { key, amount_fen, withdrawable_after_fen, debt_after_fen, .. } => {
                let fen = self.move_commission(key, *amount_fen, CS::Settled, CS::ClawedBack)?;
                let f = &mut self.figures;
                f.clawed_back = f.clawed_back.checked_add(fen).ok_or_else(|| overflow("clawed_back"))?;
                self.check_balances(*withdrawable_after_fen, *debt_after_fen)?;
            }
            E::WithdrawalRequested {
                withdrawal_id, amount_fen, fee_fen, payout_fen, withdrawable_after_fen, ..
            } => {
                self.apply_requested(*withdrawal_id, *amount_fen, *fee_fen, *payout_fen, *withdrawable_after_fen)?;
            }
            E::WithdrawalApproved { withdrawal_id, method, .. } => {
                self.move_withdrawal(withdrawal_id, &[S::Requested], S::Approved)?.method = *method;
            }
            E::WithdrawalTransferRequested { withdrawal_id, attempt, out_batch_no, out_detail_no, .. } => {
                let withdrawal = self.move_withdrawal(withdrawal_id, &[S::Approved], S::Transferring)?;
                let next = withdrawal.transfer.as_ref().map_or(0, |t| t.attempt) + 1;
                let expected = withdrawal_id.transfer_nos(next);
                let method = withdrawal.method;
                ensure(method == PayoutMethod::WechatTransfer, rules::WITHDRAWAL_STATES, || {
                    format!("{withdrawal_id}: a transfer of a withdrawal paid {method:?}")
                })?;
                ensure(
                    *attempt == next
                        && next <= TRANSFER_ATTEMPTS_MAX
                        && (out_batch_no, out_detail_no) == (&expected.0, &expected.1),
                    rules::WITHDRAWAL_STATES,
                    || format!("{withdrawal_id}: transfer {attempt} ({out_batch_no}) after {}", next - 1),
                )?;
                if let Some(w) = self.withdrawals.get_mut(withdrawal_id) {
                    w.transfer = Some(TransferAttempt {
                        attempt: *attempt,
                        out_batch_no: out_batch_no.clone(),
                        out_detail_no: out_detail_no.clone(),
                    });
                }
            }
            E::WithdrawalRetried { withdrawal_id, .. } => {
                self.move_withdrawal(withdrawal_id, &[S::Failed], S::Approved)?;
            }
            E::WithdrawalFailed { withdrawal_id, .. } => {
                self.move_withdrawal(withdrawal_id, &[S::Approved, S::Transferring], S::Failed)?;
            }
            E::WithdrawalPaid { withdrawal_id, payout_ref, .. } => {
                let withdrawal = self.move_withdrawal(withdrawal_id, &[S::Approved, S::Transferring], S::Paid)?;
                withdrawal.payout_ref = Some(payout_ref.clone());
                let fen = withdrawal.amount_fen;
                let f = &mut self.figures;
                f.in_flight = f.in_flight.checked_sub(fen).ok_or_else(|| overflow("in_flight"))?;
                f.paid_out = f.paid_out.checked_add(fen).ok_or_else(|| overflow("paid_out"))?;
            }
            E::WithdrawalRejected { withdrawal_id, withdrawable_after_fen, debt_after_fen, .. } => {
                self.give_back(withdrawal_id, S::Rejected)?;
                self.check_balances(*withdrawable_after_fen, *debt_after_fen)?;
            }
            E::WithdrawalReturned { withdrawal_id, withdrawable_after_fen, debt_after_fen, .. } => {
                self.give_back(withdrawal_id, S::Returned)?;
                self.check_balances(*withdrawable_after_fen, *debt_after_fen)?;
            }
        }
        Ok(())
    }

    fn tenant(&self) -> Option<&TenantId> {
        self.owner.as_ref().map(|o| &o.tenant_id)
    }
}
