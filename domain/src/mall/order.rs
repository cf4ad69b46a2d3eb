//! The mall order aggregate: one purchase, from placement to its one end.
//!
//! ```text
//!                  ┌─ PointsHeld (points part only; status unchanged)
//! Placed ──► AwaitingPayment ──Paid──► Paid ──Delivered──► Delivered
//!                  │                    │                     │
//!                  │                    └──────Refunded───────┴──► Refunded
//!                  ├─Expired──► Expired ──┐
//!                  └─Cancelled► Cancelled ┴─PaymentArrivedLate─► RefundDue ──Refunded──► Refunded
//! ```
//!
//! A payment that arrives after the order expired or was cancelled is
//! refunded, never honoured: the expiry (or cancel) already gave the stock,
//! the points hold and the coupon back, and another member may have taken the
//! last unit since. The order records the money (`MallOrderPaymentArrivedLate`,
//! status `RefundDue`) so the refund process refunds it in full and the
//! order's history explains both movements. What decides is the order's own
//! history, not the clock: a payment recorded before the `MallOrderExpired`
//! event is honoured, since nothing had been released yet.
//!
//! **Price changes.** While the order awaits payment an admin may change the
//! cash due (`MallOrderPriceChanged`, old and new amount; 1..=the list cash,
//! unit fen × quantity, so a coupon's discount may be given back but never
//! more asked than the list price) until the member starts paying: the
//! payment paths record `MallOrderPaymentStarted` with the cash due before
//! any money moves (a balance charge, a WeChat Pay order, whose amount Pay
//! keeps), and from then the price is fixed. Payments, late payments and
//! refunds are checked against the cash due now ([`MallOrder::cash_due_fen`]).

use chrono::{DateTime, Duration, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{rules, MallOrderId, Price, ProductId, ProductName, Quantity, PAY_WINDOW_MAX_MINUTES};
use crate::coupon::{Benefit, CouponId, TemplateId};
use crate::invariant::{ensure, ensure_figure};
use crate::{
    Actor, AmountFen, DomainEventMeta, EventSourced, IdempotencyKey, InvariantViolation, MemberId, PayRef,
    PointsAmount, Reference, TenantId,
};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MallOrderError {
    #[error("order not found")]
    NotFound,
    #[error("order already placed")]
    AlreadyPlaced,
    #[error("the order must expire after now and within {PAY_WINDOW_MAX_MINUTES} minutes")]
    InvalidExpiry,
    #[error("the order's {0} exceeds what one order may carry")]
    TooLarge(&'static str),
    #[error("the coupon does not apply to this order")]
    CouponNotApplicable,
    #[error("payment method {method:?} does not fit an order of {points} points and {cash_fen} fen")]
    MethodMismatch { method: PaymentMethod, points: i64, cash_fen: i64 },
    #[error("the order has no points part")]
    NoPointsPart,
    #[error("hold of {held} points differs from the order's {points} points")]
    HoldMismatch { points: i64, held: i64 },
    #[error("the order's points are already held")]
    AlreadyHeld,
    #[error("the order's points are not held yet")]
    PointsNotHeld,
    #[error("payment of {paid_fen} fen differs from the {due_fen} fen due")]
    AmountMismatch { due_fen: i64, paid_fen: i64 },
    #[error("the order is already paid by another payment")]
    PaidByAnother,
    #[error("the order is not paid")]
    NotPaid,
    #[error("the order is paid; it cannot be cancelled")]
    AlreadyPaid,
    #[error("the order has ended ({0:?})")]
    Ended(OrderStatus),
    #[error("the order expires at {0}")]
    NotYetDue(DateTime<Utc>),
    #[error("the order is already delivered")]
    AlreadyDelivered,
    #[error("the order is already refunded")]
    AlreadyRefunded,
    #[error("only staff or an admin may deliver an order")]
    NotStaff,
    #[error("a member may only act on their own order")]
    NotYourOrder,
    #[error("a WeChat Pay refund needs its refund number; other refunds take none")]
    RefundNo,
    #[error("the order is paid; its price can no longer change")]
    PricePaid,
    #[error("the member started paying {0} fen; the price can no longer change")]
    PaymentStarted(i64),
    #[error("the order has no cash part to price")]
    NoCashPart,
    #[error("the new cash due must be 1..={list_fen} fen (the order's list price × quantity), got {got}")]
    PriceOutOfRange { list_fen: i64, got: i64 },
    /// What only an admin may do (change the price, decide a refund request).
    #[error("only an admin may {0}")]
    AdminOnly(&'static str),
    #[error("a refund request of this order is open")]
    RefundRequestOpen,
    #[error("no refund request of this order is open")]
    NoRefundRequest,
    #[error("an order takes at most {REFUND_REQUESTS_MAX} refund requests")]
    TooManyRefundRequests,
    #[error("only the order's member may request its refund")]
    NotMember,
}

/// Refund requests one order takes at most (a rejected request may be made again).
pub const REFUND_REQUESTS_MAX: u32 = 5;

/// Where a refund request (售后申请) stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RefundRequestStatus {
    /// Waiting for an admin: commissions of the order do not settle meanwhile.
    Open,
    /// Refused with a reason; the order stands.
    Rejected,
    /// Approved: the order was refunded.
    Approved,
}

/// The order's latest refund request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRequest {
    /// 1-based: the order's n-th request.
    pub request_no: u32,
    pub reason: Reference,
    pub requested_at: DateTime<Utc>,
    pub status: RefundRequestStatus,
    /// Who rejected or approved it, why (rejections), and when.
    pub resolved_by: Option<Actor>,
    pub resolution: Option<Reference>,
    pub resolved_at: Option<DateTime<Utc>>,
}

/// How the order is paid: the points part by a ledger hold, the cash part by
/// the member's balance or WeChat Pay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentMethod {
    PointsOnly,
    Balance,
    WechatPay,
    PointsAndBalance,
    PointsAndWechatPay,
}

impl PaymentMethod {
    fn has_points(self) -> bool {
        matches!(self, PaymentMethod::PointsOnly | PaymentMethod::PointsAndBalance | PaymentMethod::PointsAndWechatPay)
    }

    /// Whether `cash` is paid the way the method says (`None`: no cash part).
    fn takes(self, cash: Option<&CashPayment>) -> bool {
        matches!(
            (self, cash),
            (PaymentMethod::PointsOnly, None)
                | (PaymentMethod::Balance | PaymentMethod::PointsAndBalance, Some(CashPayment::Balance { .. }))
                | (PaymentMethod::WechatPay | PaymentMethod::PointsAndWechatPay, Some(CashPayment::WechatPay { .. }))
        )
    }

    /// Whether the method pays exactly the parts `totals` has.
    pub fn fits(self, totals: &OrderTotals) -> bool {
        let has_cash = !matches!(self, PaymentMethod::PointsOnly);
        self.has_points() == (totals.points_total > 0) && has_cash == (totals.cash_due_fen > 0)
    }
}

/// A coupon applied to the order: its id and a copy of its benefit (the
/// application checks the coupon is the member's and usable).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AppliedCoupon {
    pub coupon_id: CouponId,
    pub benefit: Benefit,
}

/// What the order costs, computed from its unit price, quantity and coupon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderTotals {
    #[schemars(range(min = 0, max = PointsAmount::MAX))]
    pub points_total: i64,
    /// Unit fen × quantity, before the coupon.
    #[schemars(range(min = 0, max = AmountFen::MAX))]
    pub cash_fen: i64,
    #[schemars(range(min = 0, max = AmountFen::MAX))]
    pub discount_fen: i64,
    /// What the member pays in cash: never negative.
    #[schemars(range(min = 0, max = AmountFen::MAX))]
    pub cash_due_fen: i64,
}

impl OrderTotals {
    /// Price × quantity with checked multiplication, less the coupon's
    /// discount on the cash part. The discount never exceeds the cash part;
    /// when the order has no points part it leaves at least 1 fen to pay
    /// (WeChat Pay's minimum), so every order has a payment to record.
    pub fn compute(
        unit_price: Price,
        quantity: Quantity,
        coupon: Option<&Benefit>,
    ) -> Result<OrderTotals, MallOrderError> {
        let q = i64::from(quantity.get());
        let points_total = unit_price.points().checked_mul(q).filter(|p| *p <= PointsAmount::MAX);
        let points_total = points_total.ok_or(MallOrderError::TooLarge("points"))?;
        let cash_fen = unit_price.fen().checked_mul(q).filter(|f| *f <= AmountFen::MAX);
        let cash_fen = cash_fen.ok_or(MallOrderError::TooLarge("cash"))?;
        let discount_fen = match coupon {
            None => 0,
            Some(benefit) => {
                let off = benefit.discount_on(cash_fen).ok_or(MallOrderError::CouponNotApplicable)?;
                let off = if points_total == 0 { off.min(cash_fen - 1) } else { off };
                if off <= 0 {
                    // A coupon that takes nothing off would be used up for nothing.
                    return Err(MallOrderError::CouponNotApplicable);
                }
                off
            }
        };
        Ok(OrderTotals { points_total, cash_fen, discount_fen, cash_due_fen: cash_fen - discount_fen })
    }
}

/// Everything a placed order is: its copy of the price included.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlacedOrder {
    pub order_id: MallOrderId,
    pub tenant_id: TenantId,
    pub member_id: MemberId,
    pub product_id: ProductId,
    pub product_name: ProductName,
    pub quantity: Quantity,
    pub unit_price: Price,
    pub coupon: Option<AppliedCoupon>,
    /// The coupon template the product gave with a paid order when this one
    /// was placed: one coupon of it is issued once the order is paid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gift_coupon: Option<TemplateId>,
    pub totals: OrderTotals,
    pub method: PaymentMethod,
    pub placed_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub actor: Actor,
    pub idempotency_key: IdempotencyKey,
}

/// The cash part as paid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum CashPayment {
    /// Charged to the member's balance: the member ledger's charge, by sequence
    /// (what `RefundCharge` names).
    Balance { amount_fen: AmountFen, charge_sequence: u64 },
    /// Paid through WeChat Pay: the verified transaction.
    WechatPay { amount_fen: AmountFen, transaction_id: PayRef },
}

impl CashPayment {
    pub fn amount_fen(&self) -> AmountFen {
        match self {
            CashPayment::Balance { amount_fen, .. } | CashPayment::WechatPay { amount_fen, .. } => *amount_fen,
        }
    }

    /// The refund that gives this payment back.
    fn refund(&self, refund_no: Option<PayRef>) -> Result<CashRefund, MallOrderError> {
        match (self, refund_no) {
            (CashPayment::Balance { amount_fen, charge_sequence }, None) => {
                Ok(CashRefund::Balance { amount_fen: *amount_fen, charge_sequence: *charge_sequence })
            }
            (CashPayment::WechatPay { amount_fen, transaction_id }, Some(refund_no)) => {
                Ok(CashRefund::WechatPay { amount_fen: *amount_fen, transaction_id: transaction_id.clone(), refund_no })
            }
            _ => Err(MallOrderError::RefundNo),
        }
    }
}

/// The cash part given back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum CashRefund {
    Balance {
        amount_fen: AmountFen,
        charge_sequence: u64,
    },
    /// Refunded through WeChat Pay's refund path under `refund_no` (`out_refund_no`).
    WechatPay {
        amount_fen: AmountFen,
        transaction_id: PayRef,
        refund_no: PayRef,
    },
}

/// A payment the order took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedPayment {
    pub points: Option<PointsAmount>,
    pub cash: Option<CashPayment>,
    pub paid_at: DateTime<Utc>,
}

/// A cash payment that arrived after the order ended: refunded in full.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatePayment {
    pub cash: CashPayment,
    pub after: OrderEnd,
    pub arrived_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderDelivery {
    pub actor: Actor,
    pub store: Reference,
    pub delivered_at: DateTime<Utc>,
}

/// How an unpaid order ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderEnd {
    Expired,
    Cancelled,
}

/// What a refund gives back: everything the order took, once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderRefund {
    /// Spent points, granted back to the member.
    pub points_back: Option<PointsAmount>,
    pub cash_back: Option<CashRefund>,
    /// Units back to the product's stock: undelivered orders only (delivered
    /// goods left the store; an operator restocks returned goods by hand).
    pub quantity_back: Option<Quantity>,
    /// The coupon goes back to the member (or expires if its window ended).
    pub coupon_back: Option<CouponId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    AwaitingPayment,
    Paid,
    Delivered,
    Expired,
    Cancelled,
    /// Paid after it expired or was cancelled: the payment is to be refunded.
    RefundDue,
    Refunded,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum MallOrderCommand {
    /// Places an order whose stock the product already reserved at `unit_price`.
    Place {
        order_id: MallOrderId,
        tenant_id: TenantId,
        member_id: MemberId,
        product_id: ProductId,
        product_name: ProductName,
        quantity: Quantity,
        unit_price: Price,
        coupon: Option<AppliedCoupon>,
        gift_coupon: Option<TemplateId>,
        method: PaymentMethod,
        expires_at: DateTime<Utc>,
        actor: Actor,
        idempotency_key: IdempotencyKey,
    },
    /// The member ledger holds the order's points under `hold_id`.
    RecordPointsHeld {
        hold_id: Reference,
        points: PointsAmount,
    },
    /// The order is paid: the held points (if any) and the cash part (if any).
    RecordPayment {
        cash: Option<CashPayment>,
    },
    /// The scheduler, at or after `expires_at`.
    Expire,
    Cancel {
        actor: Actor,
        reason: Reference,
    },
    /// Staff hand the goods over at a store.
    Deliver {
        actor: Actor,
        store: Reference,
    },
    /// Gives back everything the order took (`pay_refund_no` for a WeChat Pay
    /// cash part, chosen by the caller so a retried refund reuses it).
    Refund {
        actor: Actor,
        reason: Reference,
        pay_refund_no: Option<PayRef>,
    },
    /// The member asks for a refund of their paid or delivered order (售后).
    RequestRefund {
        actor: Actor,
        reason: Reference,
    },
    /// An admin refuses the open refund request (approving it is [`MallOrderCommand::Refund`]).
    RejectRefundRequest {
        actor: Actor,
        reason: Reference,
    },
    /// An admin changes the cash the member pays (after coupons), while the
    /// order awaits payment and the member has not started paying:
    /// 1..=the order's list cash (unit fen × quantity). The same price again
    /// changes nothing.
    ChangePrice {
        cash_due_fen: AmountFen,
        actor: Actor,
        reason: Reference,
    },
    /// The member starts paying the cash part (a balance charge or a WeChat
    /// Pay order for the amount due now): from here the price is fixed.
    /// Repeating it changes nothing; an order without a cash part records
    /// nothing.
    StartPayment,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum MallOrderEvent {
    MallOrderPlaced(Box<PlacedOrder>),
    MallOrderPointsHeld {
        hold_id: Reference,
        points: PointsAmount,
        held_at: DateTime<Utc>,
    },
    MallOrderPaid {
        points: Option<PointsAmount>,
        cash: Option<CashPayment>,
        paid_at: DateTime<Utc>,
    },
    MallOrderExpired {
        expired_at: DateTime<Utc>,
    },
    MallOrderCancelled {
        actor: Actor,
        reason: Reference,
        cancelled_at: DateTime<Utc>,
    },
    MallOrderDelivered {
        actor: Actor,
        store: Reference,
        delivered_at: DateTime<Utc>,
    },
    MallOrderPaymentArrivedLate {
        cash: CashPayment,
        after: OrderEnd,
        arrived_at: DateTime<Utc>,
    },
    MallOrderRefunded {
        refund: OrderRefund,
        actor: Actor,
        reason: Reference,
        refunded_at: DateTime<Utc>,
        /// The open refund request this refund approves (`None`: none was open).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(range(min = 1, max = REFUND_REQUESTS_MAX))]
        approves_request: Option<u32>,
    },
    MallOrderRefundRequested {
        #[schemars(range(min = 1, max = REFUND_REQUESTS_MAX))]
        request_no: u32,
        actor: Actor,
        reason: Reference,
        requested_at: DateTime<Utc>,
    },
    MallOrderRefundRequestRejected {
        #[schemars(range(min = 1, max = REFUND_REQUESTS_MAX))]
        request_no: u32,
        actor: Actor,
        reason: Reference,
        rejected_at: DateTime<Utc>,
    },
    /// An admin changed the cash due (what the member pays after coupons)
    /// from `old_cash_due_fen` to `new_cash_due_fen` before payment.
    MallOrderPriceChanged {
        old_cash_due_fen: AmountFen,
        new_cash_due_fen: AmountFen,
        actor: Actor,
        reason: Reference,
        changed_at: DateTime<Utc>,
    },
    /// The member started paying `cash_due_fen`; the price is fixed from here.
    MallOrderPaymentStarted {
        cash_due_fen: AmountFen,
        started_at: DateTime<Utc>,
    },
}

impl DomainEventMeta for MallOrderEvent {
    fn event_type(&self) -> &'static str {
        match self {
            MallOrderEvent::MallOrderPlaced(_) => "MallOrderPlaced",
            MallOrderEvent::MallOrderPointsHeld { .. } => "MallOrderPointsHeld",
            MallOrderEvent::MallOrderPaid { .. } => "MallOrderPaid",
            MallOrderEvent::MallOrderExpired { .. } => "MallOrderExpired",
            MallOrderEvent::MallOrderCancelled { .. } => "MallOrderCancelled",
            MallOrderEvent::MallOrderDelivered { .. } => "MallOrderDelivered",
            MallOrderEvent::MallOrderPaymentArrivedLate { .. } => "MallOrderPaymentArrivedLate",
            MallOrderEvent::MallOrderRefunded { .. } => "MallOrderRefunded",
            MallOrderEvent::MallOrderRefundRequested { .. } => "MallOrderRefundRequested",
            MallOrderEvent::MallOrderRefundRequestRejected { .. } => "MallOrderRefundRequestRejected",
            MallOrderEvent::MallOrderPriceChanged { .. } => "MallOrderPriceChanged",
            MallOrderEvent::MallOrderPaymentStarted { .. } => "MallOrderPaymentStarted",
        }
    }
    fn event_version(&self) -> &'static str {
        "1"
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MallOrder {
    /// Number of events applied: the sequence of the last event.
    pub version: u64,
    pub placed: Option<Box<PlacedOrder>>,
    /// `None` before placement.
    pub status: Option<OrderStatus>,
    pub hold_id: Option<Reference>,
    pub payment: Option<RecordedPayment>,
    pub delivery: Option<OrderDelivery>,
    pub late_payment: Option<LatePayment>,
    pub refund: Option<OrderRefund>,
    /// The latest refund request (`None`: never asked).
    #[serde(default)]
    pub refund_request: Option<RefundRequest>,
    /// The last price change (`None`: the price as placed).
    #[serde(default)]
    pub price_change: Option<PriceChange>,
    /// The member started paying the cash part: the price is fixed.
    #[serde(default)]
    pub payment_started: bool,
}

/// An admin's change of the cash due before payment (the last one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceChange {
    pub old_cash_due_fen: i64,
    pub new_cash_due_fen: i64,
    pub actor: Actor,
    pub reason: Reference,
    pub changed_at: DateTime<Utc>,
}

fn violation(rule: &'static str, detail: impl Into<String>) -> InvariantViolation {
    InvariantViolation::new(rule, detail)
}

impl MallOrder {
    fn order(&self) -> Result<(&PlacedOrder, OrderStatus), MallOrderError> {
        match (&self.placed, self.status) {
            (Some(order), Some(status)) => Ok((order, status)),
            _ => Err(MallOrderError::NotFound),
        }
    }

    /// The cash the member pays now: the placed `cash_due_fen`, or what the
    /// last price change set. `None` before placement.
    pub fn cash_due_fen(&self) -> Option<i64> {
        let placed = self.placed.as_deref()?;
        Some(Self::due_of(placed, self.price_change.as_ref()))
    }

    fn due_of(order: &PlacedOrder, change: Option<&PriceChange>) -> i64 {
        change.map_or(order.totals.cash_due_fen, |c| c.new_cash_due_fen)
    }

    fn due(&self, order: &PlacedOrder) -> i64 {
        Self::due_of(order, self.price_change.as_ref())
    }

    fn change_price(
        &self,
        cash_due_fen: AmountFen,
        actor: Actor,
        reason: Reference,
        now: DateTime<Utc>,
    ) -> Result<Vec<MallOrderEvent>, MallOrderError> {
        let (order, status) = self.order()?;
        if !matches!(actor, Actor::Admin { .. }) {
            return Err(MallOrderError::AdminOnly("change an order's price"));
        }
        match status {
            OrderStatus::AwaitingPayment => {}
            OrderStatus::Paid | OrderStatus::Delivered | OrderStatus::RefundDue => {
                return Err(MallOrderError::PricePaid)
            }
            OrderStatus::Refunded if self.payment.is_some() || self.late_payment.is_some() => {
                return Err(MallOrderError::PricePaid)
            }
            OrderStatus::Expired | OrderStatus::Cancelled | OrderStatus::Refunded => {
                return Err(MallOrderError::Ended(status))
            }
        }
        let current = self.due(order);
        if self.payment_started {
            return Err(MallOrderError::PaymentStarted(current));
        }
        if order.method == PaymentMethod::PointsOnly || order.totals.cash_fen <= 0 {
            return Err(MallOrderError::NoCashPart);
        }
        let new = cash_due_fen.get();
        if new > order.totals.cash_fen {
            return Err(MallOrderError::PriceOutOfRange { list_fen: order.totals.cash_fen, got: new });
        }
        if new == current {
            return Ok(Vec::new());
        }
        let old_cash_due_fen = AmountFen::new(current).map_err(|_| MallOrderError::NoCashPart)?;
        Ok(vec![MallOrderEvent::MallOrderPriceChanged {
            old_cash_due_fen,
            new_cash_due_fen: cash_due_fen,
            actor,
            reason,
            changed_at: now,
        }])
    }

    fn start_payment(&self, now: DateTime<Utc>) -> Result<Vec<MallOrderEvent>, MallOrderError> {
        let (order, status) = self.order()?;
        if status != OrderStatus::AwaitingPayment {
            return Err(MallOrderError::Ended(status));
        }
        if self.payment_started || order.method == PaymentMethod::PointsOnly {
            return Ok(Vec::new());
        }
        let cash_due_fen = AmountFen::new(self.due(order)).map_err(|_| MallOrderError::NoCashPart)?;
        Ok(vec![MallOrderEvent::MallOrderPaymentStarted { cash_due_fen, started_at: now }])
    }

    /// The points the order's payment spends (`None`: no points part).
    fn points_part(order: &PlacedOrder) -> Option<PointsAmount> {
        PointsAmount::new(order.totals.points_total).ok()
    }

    /// What a refund in the current state gives back.
    pub fn refund_due(&self, refund_no: Option<PayRef>) -> Result<OrderRefund, MallOrderError> {
        let (order, status) = self.order()?;
        match (status, &self.payment, &self.late_payment) {
            (OrderStatus::Paid | OrderStatus::Delivered, Some(payment), _) => Ok(OrderRefund {
                points_back: payment.points,
                cash_back: match &payment.cash {
                    Some(cash) => Some(cash.refund(refund_no)?),
                    None if refund_no.is_some() => return Err(MallOrderError::RefundNo),
                    None => None,
                },
                quantity_back: (status == OrderStatus::Paid).then_some(order.quantity),
                coupon_back: order.coupon.as_ref().map(|c| c.coupon_id),
            }),
            (OrderStatus::Paid | OrderStatus::Delivered, None, _) => Err(MallOrderError::NotPaid),
            // The expiry or cancel already gave back the stock, the points and the coupon.
            (OrderStatus::RefundDue, _, Some(late)) => Ok(OrderRefund {
                points_back: None,
                cash_back: Some(late.cash.refund(refund_no)?),
                quantity_back: None,
                coupon_back: None,
            }),
            (OrderStatus::RefundDue, _, None) => Err(MallOrderError::NotPaid),
            (OrderStatus::Refunded, _, _) => Err(MallOrderError::AlreadyRefunded),
            (OrderStatus::AwaitingPayment | OrderStatus::Expired | OrderStatus::Cancelled, _, _) => {
                Err(MallOrderError::NotPaid)
            }
        }
    }

    fn place(&self, order: PlacedOrder, now: DateTime<Utc>) -> Result<Vec<MallOrderEvent>, MallOrderError> {
        if self.placed.is_some() {
            return Err(MallOrderError::AlreadyPlaced);
        }
        if order.expires_at <= now || order.expires_at > now + Duration::minutes(PAY_WINDOW_MAX_MINUTES) {
            return Err(MallOrderError::InvalidExpiry);
        }
        if let Actor::Member { member_id } = &order.actor {
            if *member_id != order.member_id {
                return Err(MallOrderError::NotYourOrder);
            }
        }
        let totals = order.totals;
        if !order.method.fits(&totals) {
            return Err(MallOrderError::MethodMismatch {
                method: order.method,
                points: totals.points_total,
                cash_fen: totals.cash_due_fen,
            });
        }
        Ok(vec![MallOrderEvent::MallOrderPlaced(Box::new(order))])
    }

    fn record_points_held(
        &self,
        hold_id: Reference,
        points: PointsAmount,
        now: DateTime<Utc>,
    ) -> Result<Vec<MallOrderEvent>, MallOrderError> {
        let (order, status) = self.order()?;
        let part = Self::points_part(order).ok_or(MallOrderError::NoPointsPart)?;
        if let Some(held) = &self.hold_id {
            // A retried record of the same hold changes nothing.
            return if *held == hold_id { Ok(Vec::new()) } else { Err(MallOrderError::AlreadyHeld) };
        }
        if status != OrderStatus::AwaitingPayment {
            return Err(MallOrderError::Ended(status));
        }
        if points != part {
            return Err(MallOrderError::HoldMismatch { points: part.get(), held: points.get() });
        }
        Ok(vec![MallOrderEvent::MallOrderPointsHeld { hold_id, points, held_at: now }])
    }

    fn record_payment(
        &self,
        cash: Option<CashPayment>,
        now: DateTime<Utc>,
    ) -> Result<Vec<MallOrderEvent>, MallOrderError> {
        let (order, status) = self.order()?;
        // A payment that does not match the order is refused whatever the state.
        if !order.method.takes(cash.as_ref()) {
            let (points, cash_fen) = (order.totals.points_total, cash.as_ref().map_or(0, |c| c.amount_fen().get()));
            return Err(MallOrderError::MethodMismatch { method: order.method, points, cash_fen });
        }
        let paid_fen = cash.as_ref().map_or(0, |c| c.amount_fen().get());
        let due_fen = self.due(order);
        if paid_fen != due_fen {
            return Err(MallOrderError::AmountMismatch { due_fen, paid_fen });
        }
        // A retried notification (or a retried points-only payment) changes nothing.
        let same_as = |recorded: Option<&CashPayment>| recorded == cash.as_ref();
        match status {
            OrderStatus::AwaitingPayment => {
                let points = Self::points_part(order);
                if points.is_some() && self.hold_id.is_none() {
                    return Err(MallOrderError::PointsNotHeld);
                }
                Ok(vec![MallOrderEvent::MallOrderPaid { points, cash, paid_at: now }])
            }
            OrderStatus::Paid | OrderStatus::Delivered | OrderStatus::Refunded
                if same_as(self.payment.as_ref().and_then(|p| p.cash.as_ref())) =>
            {
                Ok(Vec::new())
            }
            OrderStatus::RefundDue | OrderStatus::Refunded if same_as(self.late_payment.as_ref().map(|l| &l.cash)) => {
                Ok(Vec::new())
            }
            OrderStatus::Paid | OrderStatus::Delivered | OrderStatus::RefundDue | OrderStatus::Refunded => {
                Err(MallOrderError::PaidByAnother)
            }
            OrderStatus::Expired | OrderStatus::Cancelled => {
                let after = if status == OrderStatus::Expired { OrderEnd::Expired } else { OrderEnd::Cancelled };
                match cash {
                    Some(cash) => {
                        Ok(vec![MallOrderEvent::MallOrderPaymentArrivedLate { cash, after, arrived_at: now }])
                    }
                    // Points are spent only after the order says paid: nothing moved.
                    None => Err(MallOrderError::Ended(status)),
                }
            }
        }
    }

    fn expire(&self, now: DateTime<Utc>) -> Result<Vec<MallOrderEvent>, MallOrderError> {
        let (order, status) = self.order()?;
        match status {
            OrderStatus::AwaitingPayment if now < order.expires_at => Err(MallOrderError::NotYetDue(order.expires_at)),
            OrderStatus::AwaitingPayment => Ok(vec![MallOrderEvent::MallOrderExpired { expired_at: now }]),
            // Due work may run for an order that was paid or ended: nothing to do.
            OrderStatus::Paid
            | OrderStatus::Delivered
            | OrderStatus::Expired
            | OrderStatus::Cancelled
            | OrderStatus::RefundDue
            | OrderStatus::Refunded => Ok(Vec::new()),
        }
    }

    fn cancel(
        &self,
        actor: Actor,
        reason: Reference,
        now: DateTime<Utc>,
    ) -> Result<Vec<MallOrderEvent>, MallOrderError> {
        let (order, status) = self.order()?;
        if let Actor::Member { member_id } = &actor {
            if *member_id != order.member_id {
                return Err(MallOrderError::NotYourOrder);
            }
        }
        match status {
            OrderStatus::AwaitingPayment => {
                Ok(vec![MallOrderEvent::MallOrderCancelled { actor, reason, cancelled_at: now }])
            }
            OrderStatus::Paid | OrderStatus::Delivered => Err(MallOrderError::AlreadyPaid),
            OrderStatus::Expired | OrderStatus::Cancelled | OrderStatus::RefundDue | OrderStatus::Refunded => {
                Err(MallOrderError::Ended(status))
            }
        }
    }

    fn deliver(
        &self,
        actor: Actor,
        store: Reference,
        now: DateTime<Utc>,
    ) -> Result<Vec<MallOrderEvent>, MallOrderError> {
        let (_, status) = self.order()?;
        if !matches!(actor, Actor::Staff { .. } | Actor::Admin { .. }) {
            return Err(MallOrderError::NotStaff);
        }
        match status {
            OrderStatus::Paid => Ok(vec![MallOrderEvent::MallOrderDelivered { actor, store, delivered_at: now }]),
            OrderStatus::Delivered => Err(MallOrderError::AlreadyDelivered),
            OrderStatus::Refunded => Err(MallOrderError::AlreadyRefunded),
            OrderStatus::AwaitingPayment => Err(MallOrderError::NotPaid),
            OrderStatus::Expired | OrderStatus::Cancelled | OrderStatus::RefundDue => {
                Err(MallOrderError::Ended(status))
            }
        }
    }
}

impl MallOrder {
    /// The open refund request's number, if one is open.
    pub fn open_refund_request(&self) -> Option<u32> {
        self.refund_request.as_ref().filter(|r| r.status == RefundRequestStatus::Open).map(|r| r.request_no)
    }

    fn request_refund(
        &self,
        actor: Actor,
        reason: Reference,
        now: DateTime<Utc>,
    ) -> Result<Vec<MallOrderEvent>, MallOrderError> {
        let (order, status) = self.order()?;
        match &actor {
            Actor::Member { member_id } if *member_id == order.member_id => {}
            Actor::Member { .. } => return Err(MallOrderError::NotYourOrder),
            _ => return Err(MallOrderError::NotMember),
        }
        match status {
            OrderStatus::Paid | OrderStatus::Delivered => {}
            OrderStatus::Refunded => return Err(MallOrderError::AlreadyRefunded),
            OrderStatus::AwaitingPayment => return Err(MallOrderError::NotPaid),
            OrderStatus::Expired | OrderStatus::Cancelled | OrderStatus::RefundDue => {
                return Err(MallOrderError::Ended(status))
            }
        }
        if self.open_refund_request().is_some() {
            return Err(MallOrderError::RefundRequestOpen);
        }
        let request_no = self.refund_request.as_ref().map_or(0, |r| r.request_no) + 1;
        if request_no > REFUND_REQUESTS_MAX {
            return Err(MallOrderError::TooManyRefundRequests);
        }
        Ok(vec![MallOrderEvent::MallOrderRefundRequested { request_no, actor, reason, requested_at: now }])
    }

    fn reject_refund_request(
        &self,
        actor: Actor,
        reason: Reference,
        now: DateTime<Utc>,
    ) -> Result<Vec<MallOrderEvent>, MallOrderError> {
        self.order()?;
        if !matches!(actor, Actor::Admin { .. }) {
            return Err(MallOrderError::AdminOnly("decide a refund request"));
        }
        let request_no = self.open_refund_request().ok_or(MallOrderError::NoRefundRequest)?;
        Ok(vec![MallOrderEvent::MallOrderRefundRequestRejected { request_no, actor, reason, rejected_at: now }])
    }

    fn apply_refund_request(&mut self, event: &MallOrderEvent) -> Result<(), InvariantViolation> {
        let open = self.open_refund_request();
        match event {
            MallOrderEvent::MallOrderRefundRequested { request_no, reason, requested_at, .. } => {
                ensure(open.is_none(), rules::ORDER_REFUND_REQUESTS, || "a refund request while one is open".into())?;
                let next = self.refund_request.as_ref().map_or(0, |r| r.request_no) + 1;
                ensure(*request_no == next && next <= REFUND_REQUESTS_MAX, rules::ORDER_REFUND_REQUESTS, || {
                    format!("refund request {request_no} after {}", next - 1)
                })?;
                self.refund_request = Some(RefundRequest {
                    request_no: *request_no,
                    reason: reason.clone(),
                    requested_at: *requested_at,
                    status: RefundRequestStatus::Open,
                    resolved_by: None,
                    resolution: None,
                    resolved_at: None,
                });
            }
            MallOrderEvent::MallOrderRefundRequestRejected { request_no, actor, reason, rejected_at } => {
                self.resolve_request(
                    open,
                    *request_no,
                    RefundRequestStatus::Rejected,
                    actor,
                    Some(reason),
                    *rejected_at,
                )?;
            }
            MallOrderEvent::MallOrderRefunded { approves_request, actor, refunded_at, .. } => {
                ensure(*approves_request == open, rules::ORDER_REFUND_REQUESTS, || {
                    format!("refund approves request {approves_request:?} while {open:?} is open")
                })?;
                if let Some(no) = open {
                    self.resolve_request(open, no, RefundRequestStatus::Approved, actor, None, *refunded_at)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn resolve_request(
        &mut self,
        open: Option<u32>,
        request_no: u32,
        status: RefundRequestStatus,
        actor: &Actor,
        reason: Option<&Reference>,
        at: DateTime<Utc>,
    ) -> Result<(), InvariantViolation> {
        ensure(open == Some(request_no), rules::ORDER_REFUND_REQUESTS, || {
            format!("request {request_no} resolved while {open:?} is open")
        })?;
        if let Some(request) = self.refund_request.as_mut() {
            request.status = status;
            request.resolved_by = Some(actor.clone());
            request.resolution = reason.cloned();
            request.resolved_at = Some(at);
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- applying

impl MallOrder {
    fn status_for(&self, event: &MallOrderEvent) -> Result<(&PlacedOrder, OrderStatus), InvariantViolation> {
        let order = self.placed.as_deref().ok_or_else(|| {
            violation(rules::ORDER_EXISTS, format!("{} before the order was placed", event.event_type()))
        })?;
        let status = self.status.ok_or_else(|| violation(rules::ORDER_EXISTS, "a placed order without a status"))?;
        Ok((order, status))
    }

    /// The status `event` leads to from `status`, or the rule it breaks.
    fn transition(status: OrderStatus, event: &MallOrderEvent) -> Result<OrderStatus, InvariantViolation> {
        use OrderStatus as S;
        let next = match (status, event) {
            (S::AwaitingPayment, MallOrderEvent::MallOrderPointsHeld { .. }) => Some(S::AwaitingPayment),
            (S::AwaitingPayment, MallOrderEvent::MallOrderPriceChanged { .. }) => Some(S::AwaitingPayment),
            (S::AwaitingPayment, MallOrderEvent::MallOrderPaymentStarted { .. }) => Some(S::AwaitingPayment),
            (S::AwaitingPayment, MallOrderEvent::MallOrderPaid { .. }) => Some(S::Paid),
            (S::AwaitingPayment, MallOrderEvent::MallOrderExpired { .. }) => Some(S::Expired),
            (S::AwaitingPayment, MallOrderEvent::MallOrderCancelled { .. }) => Some(S::Cancelled),
            (S::Paid, MallOrderEvent::MallOrderDelivered { .. }) => Some(S::Delivered),
            (S::Expired | S::Cancelled, MallOrderEvent::MallOrderPaymentArrivedLate { .. }) => Some(S::RefundDue),
            (S::Paid | S::Delivered | S::RefundDue, MallOrderEvent::MallOrderRefunded { .. }) => Some(S::Refunded),
            (
                S::Paid | S::Delivered,
                MallOrderEvent::MallOrderRefundRequested { .. } | MallOrderEvent::MallOrderRefundRequestRejected { .. },
            ) => Some(status),
            _ => None,
        };
        next.ok_or_else(|| violation(rules::ORDER_TRANSITION, format!("{} while {status:?}", event.event_type())))
    }

    fn check_placed(order: &PlacedOrder) -> Result<(), InvariantViolation> {
        let coupon = order.coupon.as_ref().map(|c| &c.benefit);
        let totals = OrderTotals::compute(order.unit_price, order.quantity, coupon)
            .map_err(|e| violation(rules::ORDER_TOTALS, e.to_string()))?;
        ensure(totals == order.totals, rules::ORDER_TOTALS, || {
            format!("stated {:?} but price × quantity − coupon gives {totals:?}", order.totals)
        })?;
        ensure(order.method.fits(&totals), rules::ORDER_METHOD_FITS, || {
            format!("{:?} for {} points and {} fen", order.method, totals.points_total, totals.cash_due_fen)
        })
    }

    fn check_paid(
        &self,
        order: &PlacedOrder,
        points: Option<PointsAmount>,
        cash: Option<&CashPayment>,
    ) -> Result<(), InvariantViolation> {
        ensure(points == Self::points_part(order), rules::ORDER_AMOUNTS, || {
            format!("paid {points:?} points of an order of {}", order.totals.points_total)
        })?;
        ensure(points.is_none() || self.hold_id.is_some(), rules::ORDER_AMOUNTS, || {
            "points paid without a hold".into()
        })?;
        ensure(order.method.takes(cash), rules::ORDER_METHOD_FITS, || format!("{cash:?} for {:?}", order.method))?;
        let paid_fen = cash.map_or(0, |c| c.amount_fen().get());
        ensure_figure(rules::ORDER_AMOUNTS, "cash amount_fen", paid_fen, self.due(order))
    }
}

impl EventSourced for MallOrder {
    const TYPE: &'static str = "mall_order";
    const STATE_VERSION: i32 = 1;
    type Command = MallOrderCommand;
    type Event = MallOrderEvent;
    type Error = MallOrderError;

    fn tenant(&self) -> Option<&TenantId> {
        self.placed.as_ref().map(|o| &o.tenant_id)
    }

    fn handle(&self, command: MallOrderCommand, now: DateTime<Utc>) -> Result<Vec<MallOrderEvent>, MallOrderError> {
        match command {
            MallOrderCommand::Place {
                order_id,
                tenant_id,
                member_id,
                product_id,
                product_name,
                quantity,
                unit_price,
                coupon,
                gift_coupon,
                method,
                expires_at,
                actor,
                idempotency_key,
            } => {
                let totals = OrderTotals::compute(unit_price, quantity, coupon.as_ref().map(|c| &c.benefit))?;
                let order = PlacedOrder {
                    order_id,
                    tenant_id,
                    member_id,
                    product_id,
                    product_name,
                    quantity,
                    unit_price,
                    coupon,
                    gift_coupon,
                    totals,
                    method,
                    placed_at: now,
                    expires_at,
                    actor,
                    idempotency_key,
                };
                self.place(order, now)
            }
            MallOrderCommand::RecordPointsHeld { hold_id, points } => self.record_points_held(hold_id, points, now),
            MallOrderCommand::RecordPayment { cash } => self.record_payment(cash, now),
            MallOrderCommand::Expire => self.expire(now),
            MallOrderCommand::Cancel { actor, reason } => self.cancel(actor, reason, now),
            MallOrderCommand::Deliver { actor, store } => self.deliver(actor, store, now),
            MallOrderCommand::Refund { actor, reason, pay_refund_no } => {
                let refund = self.refund_due(pay_refund_no)?;
                let approves_request = self.open_refund_request();
                Ok(vec![MallOrderEvent::MallOrderRefunded {
                    refund,
                    actor,
                    reason,
                    refunded_at: now,
                    approves_request,
                }])
            }
            MallOrderCommand::RequestRefund { actor, reason } => self.request_refund(actor, reason, now),
            MallOrderCommand::RejectRefundRequest { actor, reason } => self.reject_refund_request(actor, reason, now),
            MallOrderCommand::ChangePrice { cash_due_fen, actor, reason } => {
                self.change_price(cash_due_fen, actor, reason, now)
            }
            MallOrderCommand::StartPayment => self.start_payment(now),
        }
    }

    fn apply(&mut self, event: &MallOrderEvent) -> Result<(), InvariantViolation> {
        self.version += 1;
        if let MallOrderEvent::MallOrderPlaced(order) = event {
            ensure(self.placed.is_none(), rules::ORDER_PLACED_ONCE, || "order placed twice".into())?;
            Self::check_placed(order)?;
            self.placed = Some(order.clone());
            self.status = Some(OrderStatus::AwaitingPayment);
            return Ok(());
        }
        let (order, status) = self.status_for(event).map(|(o, s)| (o.clone(), s))?;
        let next = Self::transition(status, event)?;
        let order = &order;
        match event {
            // Applied above.
            MallOrderEvent::MallOrderPlaced(_) => {}
            MallOrderEvent::MallOrderPointsHeld { hold_id, points, .. } => {
                ensure(self.hold_id.is_none(), rules::ORDER_TRANSITION, || "points held twice".into())?;
                ensure(Self::points_part(order) == Some(*points), rules::ORDER_AMOUNTS, || {
                    format!("held {points} points of an order of {}", order.totals.points_total)
                })?;
                self.hold_id = Some(hold_id.clone());
            }
            MallOrderEvent::MallOrderPaid { points, cash, paid_at } => {
                self.check_paid(order, *points, cash.as_ref())?;
                self.payment = Some(RecordedPayment { points: *points, cash: cash.clone(), paid_at: *paid_at });
            }
            MallOrderEvent::MallOrderExpired { expired_at } => {
                ensure(*expired_at >= order.expires_at, rules::ORDER_TRANSITION, || {
                    format!("expired at {expired_at}, before {}", order.expires_at)
                })?;
            }
            MallOrderEvent::MallOrderCancelled { .. } => {}
            MallOrderEvent::MallOrderDelivered { actor, store, delivered_at } => {
                let delivery =
                    OrderDelivery { actor: actor.clone(), store: store.clone(), delivered_at: *delivered_at };
                self.delivery = Some(delivery);
            }
            MallOrderEvent::MallOrderPaymentArrivedLate { cash, after, arrived_at } => {
                let ended_as = if status == OrderStatus::Expired { OrderEnd::Expired } else { OrderEnd::Cancelled };
                ensure(*after == ended_as, rules::ORDER_TRANSITION, || format!("late after {after:?} but {status:?}"))?;
                ensure(order.method.takes(Some(cash)), rules::ORDER_METHOD_FITS, || format!("{cash:?}"))?;
                let paid_fen = cash.amount_fen().get();
                ensure_figure(rules::ORDER_AMOUNTS, "cash amount_fen", paid_fen, self.due(order))?;
                self.late_payment = Some(LatePayment { cash: cash.clone(), after: *after, arrived_at: *arrived_at });
            }
            MallOrderEvent::MallOrderRefundRequested { .. } | MallOrderEvent::MallOrderRefundRequestRejected { .. } => {
                self.apply_refund_request(event)?;
            }
            MallOrderEvent::MallOrderRefunded { refund, .. } => {
                self.apply_refund_request(event)?;
                let refund_no = match &refund.cash_back {
                    Some(CashRefund::WechatPay { refund_no, .. }) => Some(refund_no.clone()),
                    Some(CashRefund::Balance { .. }) | None => None,
                };
                let due = self.refund_due(refund_no).map_err(|e| violation(rules::ORDER_AMOUNTS, e.to_string()))?;
                ensure(due == *refund, rules::ORDER_AMOUNTS, || {
                    format!("refunded {refund:?} but the order took {due:?}")
                })?;
                self.refund = Some(refund.clone());
            }
            MallOrderEvent::MallOrderPriceChanged { old_cash_due_fen, new_cash_due_fen, actor, reason, changed_at } => {
                ensure(!self.payment_started, rules::ORDER_PRICE, || "price changed after payment started".into())?;
                ensure_figure(rules::ORDER_PRICE, "old_cash_due_fen", old_cash_due_fen.get(), self.due(order))?;
                let new = new_cash_due_fen.get();
                ensure(
                    order.method != PaymentMethod::PointsOnly && new <= order.totals.cash_fen,
                    rules::ORDER_PRICE,
                    || format!("{new} fen due of an order listing {} fen ({:?})", order.totals.cash_fen, order.method),
                )?;
                self.price_change = Some(PriceChange {
                    old_cash_due_fen: old_cash_due_fen.get(),
                    new_cash_due_fen: new,
                    actor: actor.clone(),
                    reason: reason.clone(),
                    changed_at: *changed_at,
                });
            }
            MallOrderEvent::MallOrderPaymentStarted { cash_due_fen, .. } => {
                ensure(!self.payment_started, rules::ORDER_PRICE, || "payment started twice".into())?;
                ensure_figure(rules::ORDER_PRICE, "cash_due_fen", cash_due_fen.get(), self.due(order))?;
                self.payment_started = true;
            }
        }
        self.status = Some(next);
        Ok(())
    }
}
