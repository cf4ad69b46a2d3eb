//! The payment order aggregate: one WeChat Pay order wxcm created, identified
//! by its `out_trade_no`.
//!
//! The state is an [`OrderState`]: not created, created, paid (with its
//! refunds) or closed. Invariants (checked in `handle`, checked again in
//! `apply`, which returns the broken rule, see [`rules`]):
//! - an order is paid at most once, by one transaction, for exactly its amount;
//! - a paid order is never closed and a closed order is never paid (a payment
//!   arriving after the close is refused as `ClosedButPaid` for the application
//!   to flag);
//! - refunds only follow a payment, each `refund_no` applies once, and the
//!   refunded total never exceeds the amount; the refunded total and the
//!   "fully refunded" flag a refund event states are what the state gives;
//! - one command produces at most one event.

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::invariant::{ensure, ensure_figure};
use crate::member::Provenance;
use crate::{
    AmountFen, AppId, DomainEventMeta, EventSourced, InvariantViolation, MemberId, OpenId, OutTradeNo, PayRef, TenantId,
};

/// Refunds of one order; WeChat Pay allows 50.
pub const REFUNDS_MAX: usize = 50;

/// What the money is for. More purposes (donations, snatch games) may come:
/// readers of the events must not assume this list is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentPurpose {
    BalanceRecharge,
    /// The cash part of a points-mall order; the order is the one
    /// `MallOrderId::from_pay_trade_no` names.
    MallOrder,
    /// Shares of a 1-yuan snatch; the purchase is the one
    /// `campaign::PurchaseId::from_pay_trade_no` names.
    SnatchPurchase,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PayApiVersion {
    V2,
    V3,
}

/// How wxcm learned of the payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaidVia {
    NotifyV2,
    NotifyV3,
    Query,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    Expired,
    ByQuery,
    ByMerchant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    Created,
    Paid,
    Closed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum PaymentCommand {
    Create {
        order_id: OutTradeNo,
        tenant_id: TenantId,
        member_id: MemberId,
        openid: OpenId,
        appid: AppId,
        mch_id: PayRef,
        purpose: PaymentPurpose,
        amount_fen: AmountFen,
        api_version: PayApiVersion,
        expires_at: DateTime<Utc>,
        provenance: Provenance,
    },
    /// A verified notification or query says the order was paid.
    MarkPaid {
        transaction_id: PayRef,
        /// As WeChat Pay reports it; checked against the order's amount.
        total_fen: i64,
        appid: AppId,
        mch_id: PayRef,
        paid_at: DateTime<Utc>,
        via: PaidVia,
        notification_id: Option<PayRef>,
    },
    Close {
        reason: CloseReason,
    },
    RecordRefund {
        refund_no: PayRef,
        refund_id: PayRef,
        amount_fen: AmountFen,
        succeeded_at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PaymentEvent {
    PaymentOrderCreated {
        order_id: OutTradeNo,
        tenant_id: TenantId,
        member_id: MemberId,
        openid: OpenId,
        appid: AppId,
        mch_id: PayRef,
        purpose: PaymentPurpose,
        amount_fen: AmountFen,
        api_version: PayApiVersion,
        created_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        #[serde(flatten)]
        provenance: Provenance,
    },
    PaymentOrderPaid {
        transaction_id: PayRef,
        total_fen: AmountFen,
        paid_at: DateTime<Utc>,
        via: PaidVia,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        notification_id: Option<PayRef>,
    },
    PaymentOrderClosed {
        reason: CloseReason,
        closed_at: DateTime<Utc>,
    },
    PaymentOrderRefunded {
        refund_no: PayRef,
        refund_id: PayRef,
        amount_fen: AmountFen,
        #[schemars(range(min = 1, max = AmountFen::MAX))]
        refunded_total_fen: i64,
        fully_refunded: bool,
        succeeded_at: DateTime<Utc>,
    },
}

impl DomainEventMeta for PaymentEvent {
    fn event_type(&self) -> &'static str {
        match self {
            PaymentEvent::PaymentOrderCreated { .. } => "PaymentOrderCreated",
            PaymentEvent::PaymentOrderPaid { .. } => "PaymentOrderPaid",
            PaymentEvent::PaymentOrderClosed { .. } => "PaymentOrderClosed",
            PaymentEvent::PaymentOrderRefunded { .. } => "PaymentOrderRefunded",
        }
    }
    fn event_version(&self) -> &'static str {
        "1"
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    #[error("payment order does not exist")]
    NotFound,
    #[error("payment order already exists with other details")]
    AlreadyExists,
    #[error("payment order must expire after it is created")]
    ExpiresInThePast,
    #[error("paid total {paid_fen} fen differs from the order amount {amount_fen} fen")]
    TotalMismatch { amount_fen: i64, paid_fen: i64 },
    #[error("payment is for appid {0}, not the order's")]
    AppIdMismatch(String),
    #[error("payment is for merchant {0}, not the order's")]
    MchIdMismatch(String),
    #[error("order is already paid by another transaction")]
    PaidByAnotherTransaction,
    #[error("order was closed but WeChat Pay reports transaction {0} paid it")]
    ClosedButPaid(String),
    #[error("order is paid; it cannot be closed")]
    AlreadyPaid,
    #[error("order is not paid; nothing to refund")]
    NotPaid,
    #[error("refund {0} was already recorded with a different amount")]
    RefundConflict(String),
    #[error("refund of {requested_fen} fen exceeds the {refundable_fen} fen still refundable")]
    RefundExceedsPayment { refundable_fen: i64, requested_fen: i64 },
    #[error("too many refunds of one order (max {REFUNDS_MAX})")]
    TooManyRefunds,
}

/// Names of the rules [`PaymentOrder::apply`] checks. Stable: reports and tests match on them.
pub mod rules {
    /// Only the creation may start the stream.
    pub const CREATED_FIRST: &str = "payment.created_first";
    pub const CREATED_ONCE: &str = "payment.created_once";
    pub const PAID_ONCE: &str = "payment.paid_once";
    /// The paid total is the order's amount.
    pub const PAID_TOTAL: &str = "payment.paid_total";
    /// A closed order is never paid, a paid one never closed.
    pub const PAID_OR_CLOSED: &str = "payment.paid_or_closed";
    pub const CLOSED_ONCE: &str = "payment.closed_once";
    pub const REFUND_AFTER_PAYMENT: &str = "payment.refund_after_payment";
    pub const REFUND_NO_ONCE: &str = "payment.refund_no_once";
    pub const REFUNDS_MAX: &str = "payment.refunds_max";
    pub const REFUNDS_WITHIN_AMOUNT: &str = "payment.refunds_within_amount";
    pub const REFUNDED_TOTAL: &str = "payment.refunded_total";
    pub const FULLY_REFUNDED: &str = "payment.fully_refunded";
}

/// The order as created: what a duplicate `Create` must match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderDetails {
    pub order_id: OutTradeNo,
    pub tenant_id: TenantId,
    pub member_id: MemberId,
    pub openid: OpenId,
    pub appid: AppId,
    pub mch_id: PayRef,
    pub purpose: PaymentPurpose,
    pub amount_fen: AmountFen,
    pub api_version: PayApiVersion,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    pub transaction_id: PayRef,
    pub paid_at: DateTime<Utc>,
    pub via: PaidVia,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    pub refund_id: PayRef,
    pub amount_fen: AmountFen,
    pub succeeded_at: DateTime<Utc>,
}

/// refund_no → refund.
pub type Refunds = BTreeMap<String, Refund>;

static NO_REFUNDS: Refunds = BTreeMap::new();

/// Where an order stands; each state holds what it has.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum OrderState {
    #[default]
    NotCreated,
    Created {
        order: OrderDetails,
    },
    Paid {
        order: OrderDetails,
        payment: Payment,
        refunds: Refunds,
    },
    Closed {
        order: OrderDetails,
        reason: CloseReason,
        closed_at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentOrder {
    /// Number of events applied: the sequence of the last event.
    pub version: u64,
    pub state: OrderState,
}

fn refunded_total_fen(refunds: &Refunds) -> i64 {
    refunds.values().map(|r| r.amount_fen.get()).sum()
}

impl PaymentOrder {
    /// `None` before the order is created.
    pub fn status(&self) -> Option<PaymentStatus> {
        match self.state {
            OrderState::NotCreated => None,
            OrderState::Created { .. } => Some(PaymentStatus::Created),
            OrderState::Paid { .. } => Some(PaymentStatus::Paid),
            OrderState::Closed { .. } => Some(PaymentStatus::Closed),
        }
    }

    /// The order as created, once it is.
    pub fn details(&self) -> Option<&OrderDetails> {
        match &self.state {
            OrderState::NotCreated => None,
            OrderState::Created { order } | OrderState::Paid { order, .. } | OrderState::Closed { order, .. } => {
                Some(order)
            }
        }
    }

    pub fn payment(&self) -> Option<&Payment> {
        match &self.state {
            OrderState::Paid { payment, .. } => Some(payment),
            OrderState::NotCreated | OrderState::Created { .. } | OrderState::Closed { .. } => None,
        }
    }

    pub fn closed(&self) -> Option<(CloseReason, DateTime<Utc>)> {
        match &self.state {
            OrderState::Closed { reason, closed_at, .. } => Some((*reason, *closed_at)),
            OrderState::NotCreated | OrderState::Created { .. } | OrderState::Paid { .. } => None,
        }
    }

    /// Refunds recorded (only a paid order has any).
    pub fn refunds(&self) -> &Refunds {
        match &self.state {
            OrderState::Paid { refunds, .. } => refunds,
            OrderState::NotCreated | OrderState::Created { .. } | OrderState::Closed { .. } => &NO_REFUNDS,
        }
    }

    pub fn refunded_total_fen(&self) -> i64 {
        refunded_total_fen(self.refunds())
    }

    pub fn fully_refunded(&self) -> bool {
        self.details().is_some_and(|o| self.refunded_total_fen() == o.amount_fen.get())
    }

    fn created(&self) -> Result<&OrderDetails, PaymentError> {
        self.details().ok_or(PaymentError::NotFound)
    }

    fn create(
        &self,
        details: OrderDetails,
        provenance: Provenance,
        now: DateTime<Utc>,
    ) -> Result<Vec<PaymentEvent>, PaymentError> {
        if let Some(existing) = self.details() {
            let same = *existing == OrderDetails { created_at: existing.created_at, ..details };
            return if same { Ok(Vec::new()) } else { Err(PaymentError::AlreadyExists) };
        }
        if details.expires_at <= now {
            return Err(PaymentError::ExpiresInThePast);
        }
        Ok(vec![PaymentEvent::PaymentOrderCreated {
            order_id: details.order_id,
            tenant_id: details.tenant_id,
            member_id: details.member_id,
            openid: details.openid,
            appid: details.appid,
            mch_id: details.mch_id,
            purpose: details.purpose,
            amount_fen: details.amount_fen,
            api_version: details.api_version,
            created_at: now,
            expires_at: details.expires_at,
            provenance,
        }])
    }

    fn close(&self, reason: CloseReason, now: DateTime<Utc>) -> Result<Vec<PaymentEvent>, PaymentError> {
        match self.state {
            OrderState::NotCreated => Err(PaymentError::NotFound),
            OrderState::Created { .. } => Ok(vec![PaymentEvent::PaymentOrderClosed { reason, closed_at: now }]),
            OrderState::Paid { .. } => Err(PaymentError::AlreadyPaid),
            OrderState::Closed { .. } => Ok(Vec::new()),
        }
    }

    fn record_refund(
        &self,
        refund_no: PayRef,
        refund_id: PayRef,
        amount_fen: AmountFen,
        succeeded_at: DateTime<Utc>,
    ) -> Result<Vec<PaymentEvent>, PaymentError> {
        let (order, refunds) = match &self.state {
            OrderState::NotCreated => return Err(PaymentError::NotFound),
            OrderState::Created { .. } | OrderState::Closed { .. } => return Err(PaymentError::NotPaid),
            OrderState::Paid { order, refunds, .. } => (order, refunds),
        };
        if let Some(recorded) = refunds.get(refund_no.as_str()) {
            return if recorded.amount_fen == amount_fen {
                Ok(Vec::new())
            } else {
                Err(PaymentError::RefundConflict(refund_no.to_string()))
            };
        }
        if refunds.len() >= REFUNDS_MAX {
            return Err(PaymentError::TooManyRefunds);
        }
        let refunded_fen = refunded_total_fen(refunds);
        let refundable_fen = order.amount_fen.get() - refunded_fen;
        if amount_fen.get() > refundable_fen {
            return Err(PaymentError::RefundExceedsPayment { refundable_fen, requested_fen: amount_fen.get() });
        }
        let refunded_total_fen = refunded_fen + amount_fen.get();
        Ok(vec![PaymentEvent::PaymentOrderRefunded {
            refund_no,
            refund_id,
            amount_fen,
            refunded_total_fen,
            fully_refunded: refunded_total_fen == order.amount_fen.get(),
            succeeded_at,
        }])
    }
}

// ---------------------------------------------------------------- applying

fn violation(rule: &'static str, detail: impl Into<String>) -> InvariantViolation {
    InvariantViolation::new(rule, detail)
}

impl OrderState {
    fn on_created(self, order: OrderDetails) -> Result<Self, InvariantViolation> {
        match self {
            OrderState::NotCreated => Ok(OrderState::Created { order }),
            OrderState::Created { .. } | OrderState::Paid { .. } | OrderState::Closed { .. } => {
                Err(violation(rules::CREATED_ONCE, "order created twice"))
            }
        }
    }

    fn on_paid(self, payment: Payment, total_fen: AmountFen) -> Result<Self, InvariantViolation> {
        match self {
            OrderState::NotCreated => Err(violation(rules::CREATED_FIRST, "payment of an order not created")),
            OrderState::Created { order } => {
                ensure_figure(rules::PAID_TOTAL, "total_fen", total_fen, order.amount_fen)?;
                Ok(OrderState::Paid { order, payment, refunds: Refunds::new() })
            }
            OrderState::Paid { payment: first, .. } => Err(violation(
                rules::PAID_ONCE,
                format!("paid by {} after {}", payment.transaction_id, first.transaction_id),
            )),
            OrderState::Closed { .. } => Err(violation(rules::PAID_OR_CLOSED, "a closed order paid")),
        }
    }

    fn on_closed(self, reason: CloseReason, closed_at: DateTime<Utc>) -> Result<Self, InvariantViolation> {
        match self {
            OrderState::NotCreated => Err(violation(rules::CREATED_FIRST, "close of an order not created")),
            OrderState::Created { order } => Ok(OrderState::Closed { order, reason, closed_at }),
            OrderState::Paid { .. } => Err(violation(rules::PAID_OR_CLOSED, "a paid order closed")),
            OrderState::Closed { .. } => Err(violation(rules::CLOSED_ONCE, "order closed twice")),
        }
    }

    fn on_refunded(
        self,
        refund_no: &PayRef,
        refund: Refund,
        refunded_total_fen_stated: i64,
        fully_refunded: bool,
    ) -> Result<Self, InvariantViolation> {
        let (order, payment, mut refunds) = match self {
            OrderState::NotCreated => return Err(violation(rules::CREATED_FIRST, "refund of an order not created")),
            OrderState::Created { .. } | OrderState::Closed { .. } => {
                return Err(violation(rules::REFUND_AFTER_PAYMENT, format!("refund {refund_no} of an unpaid order")))
            }
            OrderState::Paid { order, payment, refunds } => (order, payment, refunds),
        };
        ensure(!refunds.contains_key(refund_no.as_str()), rules::REFUND_NO_ONCE, || {
            format!("refund {refund_no} recorded twice")
        })?;
        ensure(refunds.len() < REFUNDS_MAX, rules::REFUNDS_MAX, || format!("a refund past {REFUNDS_MAX}"))?;
        refunds.insert(refund_no.to_string(), refund);
        let total = refunded_total_fen(&refunds);
        let amount = order.amount_fen.get();
        ensure(total <= amount, rules::REFUNDS_WITHIN_AMOUNT, || {
            format!("{total} fen refunded of an order of {amount} fen")
        })?;
        ensure_figure(rules::REFUNDED_TOTAL, "refunded_total_fen", refunded_total_fen_stated, total)?;
        ensure_figure(rules::FULLY_REFUNDED, "fully_refunded", fully_refunded, total == amount)?;
        Ok(OrderState::Paid { order, payment, refunds })
    }

    fn next(self, event: &PaymentEvent) -> Result<Self, InvariantViolation> {
        match event {
            PaymentEvent::PaymentOrderCreated {
                order_id,
                tenant_id,
                member_id,
                openid,
                appid,
                mch_id,
                purpose,
                amount_fen,
                api_version,
                created_at,
                expires_at,
                ..
            } => self.on_created(OrderDetails {
                order_id: order_id.clone(),
                tenant_id: tenant_id.clone(),
                member_id: *member_id,
                openid: openid.clone(),
                appid: appid.clone(),
                mch_id: mch_id.clone(),
                purpose: *purpose,
                amount_fen: *amount_fen,
                api_version: *api_version,
                expires_at: *expires_at,
                created_at: *created_at,
            }),
            PaymentEvent::PaymentOrderPaid { transaction_id, total_fen, paid_at, via, .. } => {
                let payment = Payment { transaction_id: transaction_id.clone(), paid_at: *paid_at, via: *via };
                self.on_paid(payment, *total_fen)
            }
            PaymentEvent::PaymentOrderClosed { reason, closed_at } => self.on_closed(*reason, *closed_at),
            PaymentEvent::PaymentOrderRefunded {
                refund_no,
                refund_id,
                amount_fen,
                refunded_total_fen,
                fully_refunded,
                succeeded_at,
            } => {
                let refund =
                    Refund { refund_id: refund_id.clone(), amount_fen: *amount_fen, succeeded_at: *succeeded_at };
                self.on_refunded(refund_no, refund, *refunded_total_fen, *fully_refunded)
            }
        }
    }
}

impl EventSourced for PaymentOrder {
    const TYPE: &'static str = "payment_order";
    /// 2: the state is an `OrderState` (was three options and a refunded total).
    const STATE_VERSION: i32 = 2;
    type Command = PaymentCommand;
    type Event = PaymentEvent;
    type Error = PaymentError;

    fn tenant(&self) -> Option<&TenantId> {
        self.details().map(|o| &o.tenant_id)
    }

    fn handle(&self, command: PaymentCommand, now: DateTime<Utc>) -> Result<Vec<PaymentEvent>, PaymentError> {
        match command {
            PaymentCommand::Create {
                order_id,
                tenant_id,
                member_id,
                openid,
                appid,
                mch_id,
                purpose,
                amount_fen,
                api_version,
                expires_at,
                provenance,
            } => {
                let details = OrderDetails {
                    order_id,
                    tenant_id,
                    member_id,
                    openid,
                    appid,
                    mch_id,
                    purpose,
                    amount_fen,
                    api_version,
                    expires_at,
                    created_at: now,
                };
                self.create(details, provenance, now)
            }
            PaymentCommand::MarkPaid { transaction_id, total_fen, appid, mch_id, paid_at, via, notification_id } => {
                let order = self.created()?;
                // A notification that does not match the order is refused whatever the state.
                if total_fen != order.amount_fen.get() {
                    return Err(PaymentError::TotalMismatch {
                        amount_fen: order.amount_fen.get(),
                        paid_fen: total_fen,
                    });
                }
                if appid != order.appid {
                    return Err(PaymentError::AppIdMismatch(appid.to_string()));
                }
                if mch_id != order.mch_id {
                    return Err(PaymentError::MchIdMismatch(mch_id.to_string()));
                }
                match &self.state {
                    OrderState::NotCreated | OrderState::Created { .. } => Ok(vec![PaymentEvent::PaymentOrderPaid {
                        transaction_id,
                        total_fen: order.amount_fen,
                        paid_at,
                        via,
                        notification_id,
                    }]),
                    OrderState::Paid { payment, .. } if payment.transaction_id == transaction_id => Ok(Vec::new()),
                    OrderState::Paid { .. } => Err(PaymentError::PaidByAnotherTransaction),
                    OrderState::Closed { .. } => Err(PaymentError::ClosedButPaid(transaction_id.to_string())),
                }
            }
            PaymentCommand::Close { reason } => self.close(reason, now),
            PaymentCommand::RecordRefund { refund_no, refund_id, amount_fen, succeeded_at } => {
                self.record_refund(refund_no, refund_id, amount_fen, succeeded_at)
            }
        }
    }

    fn apply(&mut self, event: &PaymentEvent) -> Result<(), InvariantViolation> {
        self.version += 1;
        // On an error the state is left behind as not created: it must be discarded anyway.
        self.state = std::mem::take(&mut self.state).next(event)?;
        Ok(())
    }
}
