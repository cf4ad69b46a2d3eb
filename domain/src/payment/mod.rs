//! The payment order aggregate: one WeChat Pay order wxcm created, identified
//! by its `out_trade_no`.
//!
//! Invariants (checked in `handle`, asserted again in `apply`):
//! - an order is paid at most once, by one transaction, for exactly its amount;
//! - a paid order is never closed and a closed order is never paid (a payment
//!   arriving after the close is refused as `ClosedButPaid` for the application
//!   to flag);
//! - refunds only follow a payment, each `refund_no` applies once, and the
//!   refunded total never exceeds the amount;
//! - one command produces at most one event.

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::member::Provenance;
use crate::{AmountFen, AppId, DomainEventMeta, EventSourced, MemberId, OpenId, OutTradeNo, PayRef, TenantId};

/// Refunds of one order; WeChat Pay allows 50.
pub const REFUNDS_MAX: usize = 50;

/// What the money is for. More purposes (mall orders, donations, snatch
/// games) come later; readers must not assume this list is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PaymentPurpose {
    BalanceRecharge,
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
    pub amount_fen: i64,
    pub succeeded_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentOrder {
    pub version: u64,
    pub order: Option<OrderDetails>,
    pub payment: Option<Payment>,
    pub closed: Option<(CloseReason, DateTime<Utc>)>,
    /// refund_no → refund.
    pub refunds: BTreeMap<String, Refund>,
    pub refunded_total_fen: i64,
}

impl PaymentOrder {
    /// `None` before the order is created.
    pub fn status(&self) -> Option<PaymentStatus> {
        self.order.as_ref()?;
        Some(match (&self.payment, &self.closed) {
            (Some(_), _) => PaymentStatus::Paid,
            (None, Some(_)) => PaymentStatus::Closed,
            (None, None) => PaymentStatus::Created,
        })
    }

    pub fn fully_refunded(&self) -> bool {
        self.order.as_ref().is_some_and(|o| self.refunded_total_fen == o.amount_fen.get())
    }

    fn created(&self) -> Result<&OrderDetails, PaymentError> {
        self.order.as_ref().ok_or(PaymentError::NotFound)
    }

    fn handle_create(&self, command: PaymentCommand, now: DateTime<Utc>) -> Result<Vec<PaymentEvent>, PaymentError> {
        let PaymentCommand::Create {
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
        } = command
        else {
            return Err(PaymentError::NotFound);
        };
        if let Some(existing) = &self.order {
            let same = OrderDetails {
                order_id: order_id.clone(),
                tenant_id: tenant_id.clone(),
                member_id,
                openid: openid.clone(),
                appid: appid.clone(),
                mch_id: mch_id.clone(),
                purpose,
                amount_fen,
                api_version,
                expires_at,
                created_at: existing.created_at,
            };
            return if *existing == same { Ok(Vec::new()) } else { Err(PaymentError::AlreadyExists) };
        }
        if expires_at <= now {
            return Err(PaymentError::ExpiresInThePast);
        }
        Ok(vec![PaymentEvent::PaymentOrderCreated {
            order_id,
            tenant_id,
            member_id,
            openid,
            appid,
            mch_id,
            purpose,
            amount_fen,
            api_version,
            created_at: now,
            expires_at,
            provenance,
        }])
    }

    fn assert_invariants(&self) {
        let Some(order) = &self.order else {
            assert!(self.payment.is_none() && self.closed.is_none() && self.refunds.is_empty());
            return;
        };
        assert!(!(self.payment.is_some() && self.closed.is_some()), "order both paid and closed");
        assert!(self.refunds.is_empty() || self.payment.is_some(), "refund of an unpaid order");
        let total: i64 = self.refunds.values().map(|r| r.amount_fen).sum();
        assert_eq!(total, self.refunded_total_fen, "refunded total must equal the sum of refunds");
        assert!(self.refunded_total_fen <= order.amount_fen.get(), "refunded more than paid");
        assert!(self.refunds.len() <= REFUNDS_MAX);
    }
}

impl EventSourced for PaymentOrder {
    const TYPE: &'static str = "payment_order";
    const STATE_VERSION: i32 = 1;
    type Command = PaymentCommand;
    type Event = PaymentEvent;
    type Error = PaymentError;

    fn tenant(&self) -> Option<&TenantId> {
        self.order.as_ref().map(|o| &o.tenant_id)
    }

    fn handle(&self, command: PaymentCommand, now: DateTime<Utc>) -> Result<Vec<PaymentEvent>, PaymentError> {
        let event = match command {
            PaymentCommand::Create { .. } => return self.handle_create(command, now),
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
                if let Some(payment) = &self.payment {
                    return if payment.transaction_id == transaction_id {
                        Ok(Vec::new())
                    } else {
                        Err(PaymentError::PaidByAnotherTransaction)
                    };
                }
                if self.closed.is_some() {
                    return Err(PaymentError::ClosedButPaid(transaction_id.to_string()));
                }
                PaymentEvent::PaymentOrderPaid {
                    transaction_id,
                    total_fen: order.amount_fen,
                    paid_at,
                    via,
                    notification_id,
                }
            }
            PaymentCommand::Close { reason } => {
                self.created()?;
                if self.payment.is_some() {
                    return Err(PaymentError::AlreadyPaid);
                }
                if self.closed.is_some() {
                    return Ok(Vec::new());
                }
                PaymentEvent::PaymentOrderClosed { reason, closed_at: now }
            }
            PaymentCommand::RecordRefund { refund_no, refund_id, amount_fen, succeeded_at } => {
                let order = self.created()?;
                if self.payment.is_none() {
                    return Err(PaymentError::NotPaid);
                }
                if let Some(recorded) = self.refunds.get(refund_no.as_str()) {
                    return if recorded.amount_fen == amount_fen.get() {
                        Ok(Vec::new())
                    } else {
                        Err(PaymentError::RefundConflict(refund_no.to_string()))
                    };
                }
                if self.refunds.len() >= REFUNDS_MAX {
                    return Err(PaymentError::TooManyRefunds);
                }
                let refundable_fen = order.amount_fen.get() - self.refunded_total_fen;
                if amount_fen.get() > refundable_fen {
                    return Err(PaymentError::RefundExceedsPayment { refundable_fen, requested_fen: amount_fen.get() });
                }
                let refunded_total_fen = self.refunded_total_fen + amount_fen.get();
                PaymentEvent::PaymentOrderRefunded {
                    refund_no,
                    refund_id,
                    amount_fen,
                    refunded_total_fen,
                    fully_refunded: refunded_total_fen == order.amount_fen.get(),
                    succeeded_at,
                }
            }
        };
        Ok(vec![event])
    }

    fn apply(&mut self, event: &PaymentEvent) {
        assert!(
            self.order.is_some() || matches!(event, PaymentEvent::PaymentOrderCreated { .. }),
            "event {} for an order not created",
            event.event_type()
        );
        self.version += 1;
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
            } => {
                assert!(self.order.is_none(), "order created twice");
                self.order = Some(OrderDetails {
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
                });
            }
            PaymentEvent::PaymentOrderPaid { transaction_id, total_fen, paid_at, via, .. } => {
                assert!(self.payment.is_none(), "order paid twice");
                assert!(self.closed.is_none(), "closed order paid");
                assert_eq!(self.order.as_ref().map(|o| o.amount_fen), Some(*total_fen), "paid a different total");
                self.payment = Some(Payment { transaction_id: transaction_id.clone(), paid_at: *paid_at, via: *via });
            }
            PaymentEvent::PaymentOrderClosed { reason, closed_at } => {
                assert!(self.payment.is_none(), "paid order closed");
                assert!(self.closed.is_none(), "order closed twice");
                self.closed = Some((*reason, *closed_at));
            }
            PaymentEvent::PaymentOrderRefunded {
                refund_no,
                refund_id,
                amount_fen,
                refunded_total_fen,
                succeeded_at,
                ..
            } => {
                let refund =
                    Refund { refund_id: refund_id.clone(), amount_fen: amount_fen.get(), succeeded_at: *succeeded_at };
                let first = self.refunds.insert(refund_no.to_string(), refund).is_none();
                assert!(first, "refund {refund_no} recorded twice");
                self.refunded_total_fen += amount_fen.get();
                assert_eq!(self.refunded_total_fen, *refunded_total_fen, "refunded total disagrees");
            }
        }
        self.assert_invariants();
    }
}
