//! Bodies and answers of the mall routes, and their validation into the
//! domain's values (checked once here; the aggregates check them again).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use wxcm_commands::mall::orders::{CashMethod, OrderView, PriceChangeRequest};
use wxcm_commands::mall::{NewProduct, ProductView};
use wxcm_domain::distribution::{CommissionLevel, LevelRates, ProductCommission, RateBps};
use wxcm_domain::mall::{
    CashPayment, CashRefund, ImageUrl, MallOrderId, OrderStatus, PaymentMethod, Price, ProductDescription, ProductId,
    ProductListing, ProductName, Quantity, RefundRequestStatus, Stock, IMAGES_MAX, PER_MEMBER_LIMIT_MAX, QUANTITY_MAX,
    STOCK_MAX,
};
use wxcm_domain::{AmountFen, PointsAmount, Reference};

use crate::error::ApiError;
use crate::extract::PathValue;

impl PathValue for ProductId {
    fn parse_segment(s: &str) -> Result<Self, ApiError> {
        ProductId::parse(s).map_err(|e| ApiError::bad_request("invalid_product_id", e.to_string()))
    }
}

impl PathValue for MallOrderId {
    fn parse_segment(s: &str) -> Result<Self, ApiError> {
        MallOrderId::parse(s).map_err(|e| ApiError::bad_request("invalid_order_id", e.to_string()))
    }
}

fn reference(value: &str) -> Result<Reference, ApiError> {
    Reference::parse(value).map_err(|e| ApiError::invalid("invalid_text", e.to_string()))
}

/// What one unit costs: points, fen, or both.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ProductPriceDto {
    Points {
        #[schema(minimum = 1, maximum = 100_000_000)]
        points: i64,
    },
    Fen {
        #[schema(minimum = 1, maximum = 100_000_000)]
        amount_fen: i64,
    },
    PointsAndFen {
        #[schema(minimum = 1, maximum = 100_000_000)]
        points: i64,
        #[schema(minimum = 1, maximum = 100_000_000)]
        amount_fen: i64,
    },
}

impl ProductPriceDto {
    pub fn validate(&self) -> Result<Price, ApiError> {
        let points = |p: i64| PointsAmount::new(p).map_err(|e| ApiError::invalid("invalid_price", e.to_string()));
        let fen = |f: i64| AmountFen::new(f).map_err(|e| ApiError::invalid("invalid_price", e.to_string()));
        Ok(match self {
            ProductPriceDto::Points { points: p } => Price::Points { points: points(*p)? },
            ProductPriceDto::Fen { amount_fen } => Price::Fen { amount_fen: fen(*amount_fen)? },
            ProductPriceDto::PointsAndFen { points: p, amount_fen } => {
                Price::PointsAndFen { points: points(*p)?, amount_fen: fen(*amount_fen)? }
            }
        })
    }
}

impl From<Price> for ProductPriceDto {
    fn from(p: Price) -> Self {
        match p {
            Price::Points { points } => ProductPriceDto::Points { points: points.get() },
            Price::Fen { amount_fen } => ProductPriceDto::Fen { amount_fen: amount_fen.get() },
            Price::PointsAndFen { points, amount_fen } => {
                ProductPriceDto::PointsAndFen { points: points.get(), amount_fen: amount_fen.get() }
            }
        }
    }
}

/// Units a product may sell: a finite count or explicitly no limit.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ProductStockDto {
    Finite {
        #[schema(minimum = 0, maximum = 1_000_000)]
        total: i64,
    },
    /// A struct variant (not a unit one), so a stray field is refused like in `finite`.
    Unlimited {},
}

impl ProductStockDto {
    pub fn validate(&self) -> Result<Stock, ApiError> {
        match self {
            ProductStockDto::Finite { total } => match u32::try_from(*total) {
                Ok(total) if total <= STOCK_MAX => Ok(Stock::Finite { total }),
                _ => Err(ApiError::invalid("invalid_stock", format!("stock must be 0..={STOCK_MAX}"))),
            },
            ProductStockDto::Unlimited {} => Ok(Stock::Unlimited),
        }
    }
}

impl From<Stock> for ProductStockDto {
    fn from(s: Stock) -> Self {
        match s {
            Stock::Finite { total } => ProductStockDto::Finite { total: i64::from(total) },
            Stock::Unlimited => ProductStockDto::Unlimited {},
        }
    }
}

fn member_limit(limit: Option<i64>) -> Result<Option<u32>, ApiError> {
    limit
        .map(|l| match u32::try_from(l) {
            Ok(l) if (1..=PER_MEMBER_LIMIT_MAX).contains(&l) => Ok(l),
            _ => {
                Err(ApiError::invalid("invalid_limit", format!("per_member_limit must be 1..={PER_MEMBER_LIMIT_MAX}")))
            }
        })
        .transpose()
}

/// A product's name, description and images.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListingBody {
    #[schema(value_type = crate::doc::ShortText)]
    pub name: String,
    #[serde(default)]
    #[schema(value_type = crate::doc::ProductDescription)]
    pub description: String,
    /// At most 9.
    #[serde(default)]
    #[schema(value_type = Vec<crate::doc::ImageUrl>, max_items = 9)]
    pub images: Vec<String>,
}

impl ListingBody {
    pub fn validate(&self) -> Result<ProductListing, ApiError> {
        if self.images.len() > IMAGES_MAX {
            return Err(ApiError::invalid("invalid_images", format!("at most {IMAGES_MAX} images")));
        }
        let text = |e: wxcm_domain::IdError| ApiError::invalid("invalid_text", e.to_string());
        Ok(ProductListing {
            name: ProductName::parse(&self.name).map_err(text)?,
            description: ProductDescription::parse(&self.description).map_err(text)?,
            images: self
                .images
                .iter()
                .map(|u| ImageUrl::parse(u).map_err(|e| ApiError::invalid("invalid_images", e.to_string())))
                .collect::<Result<_, _>>()?,
        })
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProductBody {
    #[schema(value_type = crate::doc::ShortText)]
    pub name: String,
    #[serde(default)]
    #[schema(value_type = crate::doc::ProductDescription)]
    pub description: String,
    /// At most 9.
    #[serde(default)]
    #[schema(value_type = Vec<crate::doc::ImageUrl>, max_items = 9)]
    pub images: Vec<String>,
    pub price: ProductPriceDto,
    pub stock: ProductStockDto,
    /// Units one member may hold (unpaid or bought), 1..=99; none: no limit.
    #[schema(minimum = 1, maximum = 99)]
    pub per_member_limit: Option<i64>,
    /// Default true.
    pub on_sale: Option<bool>,
}

impl CreateProductBody {
    pub fn validate(&self) -> Result<NewProduct, ApiError> {
        Ok(NewProduct {
            listing: ListingBody {
                name: self.name.clone(),
                description: self.description.clone(),
                images: self.images.clone(),
            }
            .validate()?,
            price: self.price.validate()?,
            stock: self.stock.validate()?,
            per_member_limit: member_limit(self.per_member_limit)?,
            on_sale: self.on_sale.unwrap_or(true),
        })
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceBody {
    pub price: ProductPriceDto,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductStockBody {
    pub stock: ProductStockDto,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberLimitBody {
    /// 1..=99, or null to lift the limit.
    #[schema(minimum = 1, maximum = 99)]
    pub per_member_limit: Option<i64>,
}

impl MemberLimitBody {
    pub fn validate(&self) -> Result<Option<u32>, ApiError> {
        member_limit(self.per_member_limit)
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GiftCouponBody {
    /// A coupon template of this tenant, or null for no gift. Orders placed
    /// before keep the gift they were placed with.
    pub template_id: Option<uuid::Uuid>,
}

/// A product's own commission terms.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ProductCommissionDto {
    /// Rates of its own in basis points (1/10,000): level 1 + level 2 ≤ 10,000.
    Rates {
        #[schema(minimum = 0, maximum = 10000)]
        first_bps: u32,
        #[schema(minimum = 0, maximum = 10000)]
        second_bps: u32,
    },
    /// A fixed amount per unit (× quantity) for level 1 and optionally level 2; level 1 + level 2
    /// at most the unit's cash price.
    FixedPerUnit {
        #[schema(minimum = 1, maximum = 100_000_000)]
        first_fen: i64,
        #[schema(minimum = 1, maximum = 100_000_000)]
        second_fen: Option<i64>,
    },
    /// The product earns no commission (a struct variant, so a stray field is refused).
    Excluded {},
}

impl From<ProductCommission> for ProductCommissionDto {
    fn from(c: ProductCommission) -> Self {
        match c {
            ProductCommission::Rates { rates } => ProductCommissionDto::Rates {
                first_bps: u32::from(rates.rate(CommissionLevel::First)),
                second_bps: u32::from(rates.rate(CommissionLevel::Second)),
            },
            ProductCommission::FixedPerUnit { first_fen, second_fen } => ProductCommissionDto::FixedPerUnit {
                first_fen: first_fen.get(),
                second_fen: second_fen.map(AmountFen::get),
            },
            ProductCommission::Excluded => ProductCommissionDto::Excluded {},
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductCommissionBody {
    /// null: the product has no terms of its own.
    pub commission: Option<ProductCommissionDto>,
}

impl ProductCommissionBody {
    pub fn validate(&self) -> Result<Option<ProductCommission>, ApiError> {
        let rate = |bps: u32| RateBps::new(bps).map_err(|e| ApiError::invalid("invalid_rates", e.to_string()));
        let fen = |f: i64| AmountFen::new(f).map_err(|e| ApiError::invalid("invalid_fen", e.to_string()));
        Ok(match &self.commission {
            None => None,
            Some(ProductCommissionDto::Rates { first_bps, second_bps }) => Some(ProductCommission::Rates {
                rates: LevelRates::new(rate(*first_bps)?, rate(*second_bps)?)
                    .map_err(|e| ApiError::invalid("invalid_rates", e.to_string()))?,
            }),
            Some(ProductCommissionDto::FixedPerUnit { first_fen, second_fen }) => {
                Some(ProductCommission::FixedPerUnit {
                    first_fen: fen(*first_fen)?,
                    second_fen: second_fen.map(fen).transpose()?,
                })
            }
            Some(ProductCommissionDto::Excluded {}) => Some(ProductCommission::Excluded),
        })
    }
}

/// An admin's price change of an unpaid order.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderPriceBody {
    /// The new cash due (what the member pays after coupons), in fen: 1..=the order's list cash.
    #[schema(minimum = 1, maximum = 100_000_000)]
    pub cash_due_fen: i64,
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]+$")]
    pub reason: String,
}

impl OrderPriceBody {
    pub fn validate(&self) -> Result<PriceChangeRequest, ApiError> {
        let cash_due_fen =
            AmountFen::new(self.cash_due_fen).map_err(|e| ApiError::invalid("invalid_fen", e.to_string()))?;
        Ok(PriceChangeRequest { cash_due_fen, reason: reference(&self.reason)? })
    }
}

/// The last price change of an order before payment.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderPriceChangeDto {
    pub old_cash_due_fen: i64,
    pub new_cash_due_fen: i64,
    /// Who changed it (`admin:<username>`).
    pub by: String,
    pub reason: String,
    pub changed_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OnSaleBody {
    pub on_sale: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProductDto {
    pub product_id: uuid::Uuid,
    pub name: String,
    pub description: String,
    pub images: Vec<String>,
    pub price: ProductPriceDto,
    pub stock: ProductStockDto,
    pub per_member_limit: Option<u32>,
    /// One coupon of this template comes with every paid order; null: none.
    pub gift_coupon_template_id: Option<uuid::Uuid>,
    /// The product's own commission terms; null: the distributor's level or the tenant's rates.
    pub commission: Option<ProductCommissionDto>,
    pub on_sale: bool,
    /// Units unpaid orders hold.
    pub reserved: u64,
    pub sold: u64,
    /// Units left to order; null for an unlimited stock.
    pub available: Option<u64>,
    pub created_at: DateTime<Utc>,
}

impl From<ProductView> for ProductDto {
    fn from(v: ProductView) -> Self {
        Self {
            product_id: v.product_id.as_uuid(),
            name: v.listing.name.as_str().to_owned(),
            description: v.listing.description.as_str().to_owned(),
            images: v.listing.images.iter().map(|i| i.as_str().to_owned()).collect(),
            price: v.price.into(),
            stock: v.stock.into(),
            per_member_limit: v.per_member_limit,
            gift_coupon_template_id: v.gift_coupon.map(|t| t.as_uuid()),
            commission: v.commission.map(Into::into),
            on_sale: v.on_sale,
            reserved: v.reserved,
            sold: v.sold,
            available: v.available,
            created_at: v.created_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProductList {
    pub products: Vec<ProductDto>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ProductPageQuery {
    /// The last product id of the previous page.
    pub after: Option<uuid::Uuid>,
    /// 1..=100, default 50.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

/// How the member pays the cash part of an order.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PayWithDto {
    Balance,
    /// Paid through WeChat Pay (JSAPI): `POST /m/api/v1/mall/orders/{order_id}/wechat-pay`
    /// gives the parameters for the member page.
    WechatPay,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrderBody {
    pub product_id: uuid::Uuid,
    /// Units, 1..=99.
    #[schema(minimum = 1, maximum = 99)]
    pub quantity: i64,
    /// How the cash part is paid: required when the product costs fen (without it the order is
    /// refused with 422 `payment_method_unsupported`); ignored for a product priced in points only.
    pub pay_with: Option<PayWithDto>,
    /// The unit price the member saw: refused with `price_changed` if it is no longer the price.
    pub unit_price: Option<ProductPriceDto>,
    /// One of the member's active coupons: its benefit comes off the cash part (never below
    /// 0; at least 1 fen stays when the order has no points part). Held by the order until it
    /// is paid (used) or ends (given back). `coupon_not_found`, `coupon_not_usable`,
    /// `coupon_not_applicable`.
    pub coupon_id: Option<uuid::Uuid>,
}

impl PlaceOrderBody {
    pub fn validate(&self) -> Result<wxcm_commands::mall::orders::PlaceOrder, ApiError> {
        let quantity = Quantity::new(self.quantity)
            .map_err(|_| ApiError::invalid("invalid_quantity", format!("quantity must be 1..={QUANTITY_MAX}")))?;
        Ok(wxcm_commands::mall::orders::PlaceOrder {
            product_id: ProductId::from_uuid(self.product_id),
            quantity,
            pay_with: self.pay_with.map(|p| match p {
                PayWithDto::Balance => CashMethod::Balance,
                PayWithDto::WechatPay => CashMethod::WechatPay,
            }),
            unit_price: self.unit_price.as_ref().map(ProductPriceDto::validate).transpose()?,
            coupon_id: self.coupon_id.map(wxcm_domain::coupon::CouponId::from_uuid),
        })
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]+$")]
    pub reason: String,
}

impl ReasonBody {
    pub fn validate(&self) -> Result<Reference, ApiError> {
        reference(&self.reason)
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeliverBody {
    #[schema(value_type = crate::doc::MallOrderInput)]
    pub order: String,
    /// The store handing the goods over.
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]+$")]
    pub store: String,
}

impl DeliverBody {
    pub fn validate(&self) -> Result<Reference, ApiError> {
        if self.order.len() > 200 {
            return Err(ApiError::invalid("invalid_order_no", "at most 200 characters"));
        }
        reference(&self.store)
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OrderPageQuery {
    /// Only this member's orders.
    pub member_id: Option<uuid::Uuid>,
    /// Orders numbered below this one (the last `order_no` of the previous page).
    #[param(minimum = 1)]
    pub before: Option<i64>,
    /// 1..=100, default 50.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// Only orders whose latest refund request is in this state (`open`: the
    /// requests waiting for a decision).
    #[param(inline)]
    pub refund_request: Option<RefundRequestStateDto>,
}

/// Where a refund request (售后) stands.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RefundRequestStateDto {
    /// Waiting for an admin: the order's commissions do not settle meanwhile.
    Open,
    Rejected,
    /// Approved: the order was refunded.
    Approved,
}

impl From<RefundRequestStateDto> for RefundRequestStatus {
    fn from(s: RefundRequestStateDto) -> Self {
        match s {
            RefundRequestStateDto::Open => RefundRequestStatus::Open,
            RefundRequestStateDto::Rejected => RefundRequestStatus::Rejected,
            RefundRequestStateDto::Approved => RefundRequestStatus::Approved,
        }
    }
}

impl From<RefundRequestStatus> for RefundRequestStateDto {
    fn from(s: RefundRequestStatus) -> Self {
        match s {
            RefundRequestStatus::Open => RefundRequestStateDto::Open,
            RefundRequestStatus::Rejected => RefundRequestStateDto::Rejected,
            RefundRequestStatus::Approved => RefundRequestStateDto::Approved,
        }
    }
}

/// The order's latest refund request.
#[derive(Debug, Serialize, ToSchema)]
pub struct RefundRequestDto {
    /// 1-based: the order's n-th request (at most 5).
    pub request_no: u32,
    pub status: RefundRequestStateDto,
    /// The member's reason.
    pub reason: String,
    pub requested_at: DateTime<Utc>,
    /// Who rejected or approved it.
    pub resolved_by: Option<String>,
    /// Why it was rejected.
    pub resolution: Option<String>,
    pub resolved_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MemberOrderPageQuery {
    /// Orders numbered below this one (the last `order_no` of the previous page).
    #[param(minimum = 1)]
    pub before: Option<i64>,
    /// 1..=100, default 50.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

/// The cash part as paid or refunded.
#[derive(Debug, Serialize, ToSchema)]
pub struct CashDto {
    /// `balance` or `wechat_pay`.
    pub kind: String,
    pub amount_fen: i64,
}

impl From<&CashPayment> for CashDto {
    fn from(c: &CashPayment) -> Self {
        match c {
            CashPayment::Balance { amount_fen, .. } => CashDto { kind: "balance".into(), amount_fen: amount_fen.get() },
            CashPayment::WechatPay { amount_fen, .. } => {
                CashDto { kind: "wechat_pay".into(), amount_fen: amount_fen.get() }
            }
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RefundDto {
    pub points_back: Option<i64>,
    pub cash_back: Option<CashDto>,
    pub quantity_back: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderDto {
    pub order_id: uuid::Uuid,
    /// What staff type at the counter.
    pub order_no: i64,
    /// What the member's QR code holds.
    pub qr_payload: String,
    pub member_id: uuid::Uuid,
    pub product_id: uuid::Uuid,
    pub product_name: String,
    pub quantity: u32,
    /// The price the order was placed at (a later price change does not touch it).
    pub unit_price: ProductPriceDto,
    pub points_total: i64,
    /// The cash part before the coupon.
    pub cash_fen: i64,
    /// What the coupon took off the cash part (0 without one).
    pub discount_fen: i64,
    /// What the member pays in cash: `cash_fen - discount_fen` (never negative), or what an
    /// admin's price change before payment set (see `price_change`).
    pub cash_due_fen: i64,
    /// The last price change before payment; null: the price as placed.
    pub price_change: Option<OrderPriceChangeDto>,
    /// The coupon applied to the order (held by it until it is paid or ends).
    pub coupon_id: Option<uuid::Uuid>,
    /// The coupon template the order comes with once paid (the product's gift
    /// when the order was placed), and the coupon that gift is or will be:
    /// issued when the payment is settled, voided by a refund unless used.
    pub gift_coupon_template_id: Option<uuid::Uuid>,
    pub gift_coupon_id: Option<uuid::Uuid>,
    /// `points_only`, `balance`, `wechat_pay`, `points_and_balance`, `points_and_wechat_pay`.
    pub method: String,
    /// `awaiting_payment`, `paid`, `delivered`, `expired`, `cancelled`, `refund_due`, `refunded`.
    pub status: String,
    pub placed_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
    pub cash_paid: Option<CashDto>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub delivered_by: Option<String>,
    pub store: Option<String>,
    /// A payment that arrived after the order ended (it is refunded).
    pub late_payment: Option<CashDto>,
    pub refund: Option<RefundDto>,
    /// The latest refund request (售后), open or decided.
    pub refund_request: Option<RefundRequestDto>,
}

fn snake<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

impl From<OrderView> for OrderDto {
    fn from(v: OrderView) -> Self {
        let status: OrderStatus = v.status;
        let method: PaymentMethod = v.method;
        Self {
            order_id: v.order_id.as_uuid(),
            order_no: v.order_no,
            qr_payload: v.qr_payload,
            member_id: v.member_id.as_uuid(),
            product_id: v.product_id.as_uuid(),
            product_name: v.product_name,
            quantity: v.quantity.get(),
            unit_price: v.unit_price.into(),
            points_total: v.totals.points_total,
            cash_fen: v.totals.cash_fen,
            discount_fen: v.totals.discount_fen,
            cash_due_fen: v.cash_due_fen,
            price_change: v.price_change.map(|c| OrderPriceChangeDto {
                old_cash_due_fen: c.old_cash_due_fen,
                new_cash_due_fen: c.new_cash_due_fen,
                by: c.actor.label(),
                reason: c.reason.as_str().to_owned(),
                changed_at: c.changed_at,
            }),
            coupon_id: v.coupon_id.map(|c| c.as_uuid()),
            gift_coupon_template_id: v.gift_coupon_template_id.map(|t| t.as_uuid()),
            gift_coupon_id: v.gift_coupon_id.map(|c| c.as_uuid()),
            method: snake(&method),
            status: snake(&status),
            placed_at: v.placed_at,
            expires_at: v.expires_at,
            paid_at: v.paid_at,
            cash_paid: v.cash_paid.as_ref().map(Into::into),
            delivered_at: v.delivered_at,
            delivered_by: v.delivered_by,
            store: v.store,
            late_payment: v.late_payment.as_ref().map(Into::into),
            refund: v.refund.map(|r| RefundDto {
                points_back: r.points_back.map(PointsAmount::get),
                cash_back: r.cash_back.map(|c| match c {
                    CashRefund::Balance { amount_fen, .. } => {
                        CashDto { kind: "balance".into(), amount_fen: amount_fen.get() }
                    }
                    CashRefund::WechatPay { amount_fen, .. } => {
                        CashDto { kind: "wechat_pay".into(), amount_fen: amount_fen.get() }
                    }
                }),
                quantity_back: r.quantity_back.map(Quantity::get),
            }),
            refund_request: v.refund_request.map(|r| RefundRequestDto {
                request_no: r.request_no,
                status: r.status.into(),
                reason: r.reason,
                requested_at: r.requested_at,
                resolved_by: r.resolved_by,
                resolution: r.resolution,
                resolved_at: r.resolved_at,
            }),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderList {
    pub orders: Vec<OrderDto>,
    /// Pass as `before` for the next page; null when this page was the last.
    pub next_before: Option<i64>,
}
