//! The points mall: a stream per product (its listing, price, stock and the
//! reservations orders hold on it) and a stream per order (one purchase, from
//! placement to its one end).
//!
//! Invariants (checked in `handle`, checked again in `apply`, see [`rules`]):
//! - a product never sells or reserves more than its finite stock, and
//!   neither its reserved nor its sold count ever goes negative;
//! - each order's reservation is ended once: released (expiry, cancel) or
//!   confirmed as sold, never both, never twice;
//! - an order carries a copy of the price it was placed at: editing the
//!   product never changes an order already placed;
//! - an order's totals are recomputed from its unit price, quantity and coupon
//!   (integer arithmetic, checked multiplication), the cash to pay is never
//!   negative, and a payment must match it to the fen;
//! - an order ends once (expired, cancelled, or paid then refunded), is
//!   delivered at most once and only when paid, refunded at most once.
//!
//! The intended flow (the application's process managers): reserve stock on
//! the product for a new order id (the product is the one place that decides
//! sold out and the per-member limit), place the order, hold its points on the
//! member ledger (hold id [`MallOrderId::hold_id`]), take the cash (balance
//! charge or WeChat Pay), record the payment on the order, then confirm the
//! sale on the product and spend the held points. An expiry or cancel
//! releases the reservation, the hold and the coupon; a refund gives back
//! points, cash and (undelivered) stock.

mod order;
#[cfg(test)]
mod order_tests;
mod product;
#[cfg(test)]
mod product_tests;

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use order::{
    AppliedCoupon, CashPayment, CashRefund, LatePayment, MallOrder, MallOrderCommand, MallOrderError, MallOrderEvent,
    OrderDelivery, OrderEnd, OrderRefund, OrderStatus, OrderTotals, PaymentMethod, PlacedOrder, PriceChange,
    RecordedPayment, RefundRequest, RefundRequestStatus, REFUND_REQUESTS_MAX,
};
pub use product::{
    Product, ProductCommand, ProductError, ProductEvent, ProductListing, ProductState, ReleaseReason, Reservation,
};

use crate::ids::{uuid_id, IdError};
use crate::{AmountFen, IdempotencyKey, MemberId, OutTradeNo, PointsAmount, Reference, TenantId};

/// Stable names of the mall invariants, as `InvariantViolation::rule`.
pub mod rules {
    pub const PRODUCT_EXISTS: &str = "mall_product.exists";
    pub const PRODUCT_CREATED_ONCE: &str = "mall_product.created_once";
    /// Reserved plus sold never exceeds a finite stock.
    pub const WITHIN_STOCK: &str = "mall_product.within_stock";
    /// `reserved_after` / `sold_after` are what the state gives (never negative).
    pub const COUNTS_AFTER: &str = "mall_product.counts_after";
    /// One open reservation per order.
    pub const RESERVATION_UNIQUE: &str = "mall_product.reservation_unique";
    /// A release or confirmation names an open reservation of that quantity:
    /// a reservation ends once.
    pub const RESERVATION_OPEN: &str = "mall_product.reservation_open";
    pub const RESERVATIONS_MAX: &str = "mall_product.reservations_max";
    /// A reservation keeps its member within the per-member limit.
    pub const WITHIN_MEMBER_LIMIT: &str = "mall_product.within_member_limit";
    pub const BUYERS_MAX: &str = "mall_product.buyers_max";
    pub const ORDER_EXISTS: &str = "mall_order.exists";
    pub const ORDER_PLACED_ONCE: &str = "mall_order.placed_once";
    /// Totals stated at placement are what price × quantity − coupon gives.
    pub const ORDER_TOTALS: &str = "mall_order.totals";
    /// The payment method fits what there is to pay.
    pub const ORDER_METHOD_FITS: &str = "mall_order.method_fits";
    /// Every change follows the state machine (no skipped or repeated step).
    pub const ORDER_TRANSITION: &str = "mall_order.transition";
    /// A payment or refund moves exactly the order's amounts.
    pub const ORDER_AMOUNTS: &str = "mall_order.amounts";
    /// Refund requests are numbered 1, 2, … one open at a time, each resolved once.
    pub const ORDER_REFUND_REQUESTS: &str = "mall_order.refund_requests";
    /// A price change happens before the member starts paying, states the
    /// cash due it replaces, and stays within 1..=the order's list cash.
    pub const ORDER_PRICE: &str = "mall_order.price";
}

/// Units one order may buy.
pub const QUANTITY_MAX: u32 = 99;
/// Units a product may ever sell (a finite stock's ceiling).
pub const STOCK_MAX: u32 = 1_000_000;
/// The per-member limit's ceiling (units per member, lifetime of the limit).
pub const PER_MEMBER_LIMIT_MAX: u32 = 99;
/// Images one product lists.
pub const IMAGES_MAX: usize = 9;
/// Unpaid orders holding stock of one product at once.
pub const OPEN_RESERVATIONS_MAX: usize = 10_000;
/// Members a product with a per-member limit keeps counts for; beyond it new
/// buyers are refused until an operator lifts the limit (see [`Product`]).
pub const LIMITED_BUYERS_MAX: usize = 10_000;
/// Longest time an order may wait for its payment.
pub const PAY_WINDOW_MAX_MINUTES: i64 = 48 * 60;

uuid_id!(
    /// A mall product.
    ProductId,
    "product id"
);
uuid_id!(
    /// A mall order.
    MallOrderId,
    "mall order id"
);

const ORDER_NAMESPACE: Uuid = Uuid::from_u128(0x6d41_4c4c_0a7e_4c3b_b5f2_11e0_93a7_c6d8);

impl MallOrderId {
    /// The order a member's request places: derived from its idempotency key,
    /// so a repeated request names the same stream.
    pub fn for_request(tenant: &TenantId, member: MemberId, key: &IdempotencyKey) -> Self {
        let name = format!("order\u{1f}{}\u{1f}{}\u{1f}{}", tenant.as_str(), member, key.as_str());
        Self(Uuid::new_v5(&ORDER_NAMESPACE, name.as_bytes()))
    }

    /// The member ledger hold of this order's points: fixed by the order, so
    /// an expiry can release it even if the order never recorded it.
    pub fn hold_id(&self) -> Reference {
        Reference::derived(format!("mall-order:{}", self.0))
    }

    /// The WeChat Pay order (`out_trade_no`) of this order's cash part:
    /// `mo` and the id in base 36 (27 characters, within Pay's 32), so one
    /// mall order has one Pay order and a Pay order names its mall order.
    pub fn pay_trade_no(&self) -> OutTradeNo {
        let mut digits = [b'0'; PAY_TRADE_DIGITS];
        let mut n = self.0.as_u128();
        for d in digits.iter_mut().rev() {
            *d = BASE36[(n % 36) as usize];
            n /= 36;
        }
        let text = format!("{PAY_TRADE_PREFIX}{}", String::from_utf8_lossy(&digits));
        // Prefix and base-36 digits: always a valid out_trade_no.
        OutTradeNo::parse(&text).unwrap_or_else(|_| OutTradeNo::generate_from(self.0))
    }

    /// The mall order a Pay order was made for (`None`: not a mall order's).
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

const PAY_TRADE_PREFIX: &str = "mo";
/// 36^25 > 2^128.
const PAY_TRADE_DIGITS: usize = 25;
const BASE36: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("quantity must be 1..={QUANTITY_MAX}, got {0}")]
    OutOfRange(i64),
}

/// Units of one order: 1..=[`QUANTITY_MAX`]. Zero, negative and huge
/// quantities never reach an aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[schemars(extend("minimum" = 1, "maximum" = QUANTITY_MAX))]
#[serde(try_from = "i64", into = "i64")]
pub struct Quantity(u32);

impl Quantity {
    pub fn new(value: i64) -> Result<Self, QuantityError> {
        match u32::try_from(value) {
            Ok(n) if (1..=QUANTITY_MAX).contains(&n) => Ok(Self(n)),
            _ => Err(QuantityError::OutOfRange(value)),
        }
    }
    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<i64> for Quantity {
    type Error = QuantityError;
    fn try_from(v: i64) -> Result<Self, QuantityError> {
        Self::new(v)
    }
}

impl From<Quantity> for i64 {
    fn from(q: Quantity) -> i64 {
        i64::from(q.0)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What one unit costs: points, fen, or both. Never a float, never zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Price {
    Points { points: PointsAmount },
    Fen { amount_fen: AmountFen },
    PointsAndFen { points: PointsAmount, amount_fen: AmountFen },
}

impl Price {
    /// Points per unit (0 when the price has none).
    pub fn points(&self) -> i64 {
        match self {
            Price::Points { points } | Price::PointsAndFen { points, .. } => points.get(),
            Price::Fen { .. } => 0,
        }
    }
    /// Fen per unit (0 when the price has none).
    pub fn fen(&self) -> i64 {
        match self {
            Price::Fen { amount_fen } | Price::PointsAndFen { amount_fen, .. } => amount_fen.get(),
            Price::Points { .. } => 0,
        }
    }
}

/// How many units a product may sell: a finite count or explicitly no limit
/// (never −1, the peer bug that broke limits above the stock).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Stock {
    /// Units the product may sell in all; a refund of undelivered units
    /// makes them sellable again.
    Finite {
        total: u32,
    },
    Unlimited,
}

/// A short product name (the order keeps a copy).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "String", into = "String")]
#[schemars(extend(
    "minLength" = 1,
    "maxLength" = 64,
    "pattern" = "^[^\\x00-\\x1F\\x7F-\\x9F]*[^\\s\\x00-\\x1F\\x7F-\\x9F][^\\x00-\\x1F\\x7F-\\x9F]*$"
))]
pub struct ProductName(String);

impl ProductName {
    pub const LEN_MAX: usize = 64;
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let len = s.chars().count();
        if len == 0 || len > Self::LEN_MAX {
            return Err(IdError::Length { what: "product name", min: 1, max: Self::LEN_MAX, len });
        }
        if s.chars().any(char::is_control) || s.trim().is_empty() {
            return Err(IdError::Charset { what: "product name", allowed: "visible text" });
        }
        Ok(Self(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ProductName {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(&s)
    }
}

impl From<ProductName> for String {
    fn from(t: ProductName) -> String {
        t.0
    }
}

/// A product's description: plain text, line breaks allowed, other control
/// characters not (they only ever hide things in admin screens).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "String", into = "String")]
#[schemars(extend("maxLength" = 2000, "pattern" = "^[^\\x00-\\x09\\x0B\\x0C\\x0E-\\x1F\\x7F-\\x9F]*$"))]
pub struct ProductDescription(String);

impl ProductDescription {
    pub const LEN_MAX: usize = 2_000;
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let len = s.chars().count();
        if len > Self::LEN_MAX {
            return Err(IdError::Length { what: "product description", min: 0, max: Self::LEN_MAX, len });
        }
        if s.chars().any(|c| c.is_control() && c != '\n' && c != '\r') {
            return Err(IdError::Charset { what: "product description", allowed: "text and line breaks" });
        }
        Ok(Self(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ProductDescription {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(&s)
    }
}

impl From<ProductDescription> for String {
    fn from(t: ProductDescription) -> String {
        t.0
    }
}

/// An image of a product by URL: `http://` or `https://` and a host, printable
/// ASCII without spaces, quotes or angle brackets (it ends up in HTML).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "String", into = "String")]
#[schemars(extend("maxLength" = 512, "pattern" = "^https?://[!$-&(-.0-;=@-\\[\\]-~]+[!#-&(-;=?-\\[\\]-~]*$"))]
pub struct ImageUrl(String);

impl ImageUrl {
    pub const LEN_MAX: usize = 512;
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let len = s.chars().count();
        if len > Self::LEN_MAX {
            return Err(IdError::Length { what: "image url", min: 1, max: Self::LEN_MAX, len });
        }
        let allowed = |c: char| c.is_ascii_graphic() && !matches!(c, '"' | '\'' | '<' | '>' | '\\');
        let rest = s.strip_prefix("https://").or_else(|| s.strip_prefix("http://"));
        let host_len = rest.map_or(0, |r| r.find(['/', '?', '#']).unwrap_or(r.len()));
        if rest.is_none() || host_len == 0 || !s.chars().all(allowed) {
            return Err(IdError::Charset { what: "image url", allowed: "an http(s) URL with a host" });
        }
        Ok(Self(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ImageUrl {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(&s)
    }
}

impl From<ImageUrl> for String {
    fn from(t: ImageUrl) -> String {
        t.0
    }
}
