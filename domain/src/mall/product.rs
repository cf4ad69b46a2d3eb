//! The product aggregate: a listing, its price, its stock, and the stock each
//! unpaid order holds.
//!
//! Stock is counted, not decremented by read-modify-write: `reserved` (units
//! unpaid orders hold) and `sold` (units paid for) only change through events
//! on this stream, so concurrent orders meet at its sequence and only one of
//! two racing for the last unit commits.
//!
//! The per-member limit is kept on this stream too, in the same decision as
//! the stock: while a product has a limit it counts, per member, the units of
//! open reservations and sales (`member_units`), so a member's orders racing
//! each other meet here like everyone else's. (Coupons use one stream per
//! claim slot instead; a mall limit counts units, not orders, so it has no
//! fixed slots.) The count starts when the limit is set and is dropped when it
//! is lifted; it holds at most [`LIMITED_BUYERS_MAX`] members, beyond which
//! new buyers are refused (`TooManyBuyers`) rather than the state growing
//! without bound. A refund frees the member's units again.
//!
//! The product forgets a reservation once it ends (remembering every order
//! would grow without bound). So a `Reserve` retried after its order was
//! cancelled reserves again; that reservation is swept after its own expiry
//! (`ReleaseReason::NotPlaced`, which a reservation before its expiry
//! refuses). Returns are one per order because the order stream refunds
//! once; here they only never take `sold` below zero.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    rules, ImageUrl, MallOrderId, Price, ProductDescription, ProductId, ProductName, Quantity, Stock, IMAGES_MAX,
    LIMITED_BUYERS_MAX, OPEN_RESERVATIONS_MAX, PAY_WINDOW_MAX_MINUTES, PER_MEMBER_LIMIT_MAX, STOCK_MAX,
};
use crate::coupon::TemplateId;
use crate::distribution::ProductCommission;
use crate::invariant::{ensure, ensure_figure};
use crate::{Actor, DomainEventMeta, EventSourced, InvariantViolation, MemberId, TenantId};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProductError {
    #[error("product not found")]
    NotFound,
    #[error("product already exists")]
    AlreadyExists,
    #[error("a product lists at most {IMAGES_MAX} images")]
    TooManyImages,
    #[error("stock must be 0..={STOCK_MAX}")]
    InvalidStock,
    #[error("per-member limit must be 1..={PER_MEMBER_LIMIT_MAX}")]
    InvalidLimit,
    #[error("stock of {requested} is below the {committed} units reserved or sold")]
    StockBelowCommitted { requested: u32, committed: u64 },
    #[error("product is already {0}")]
    SameSwitch(&'static str),
    #[error("product is not on sale")]
    NotOnSale,
    #[error("sold out: {available} left")]
    SoldOut { available: u64 },
    #[error("the member may buy {limit} of this product and already has {held}")]
    LimitReached { limit: u32, held: u32 },
    #[error("too many members hold a limited product (max {LIMITED_BUYERS_MAX})")]
    TooManyBuyers,
    #[error("the price changed; the order must be placed at the current price")]
    PriceChanged { current: Price },
    #[error("the reservation must expire after now and within the pay window")]
    InvalidExpiry,
    #[error("order {0} already holds a different reservation")]
    ReservationConflict(MallOrderId),
    #[error("order {0} holds no open reservation")]
    ReservationNotOpen(MallOrderId),
    #[error("the reservation of order {0} is valid until {1}")]
    ReservationStillValid(MallOrderId, DateTime<Utc>),
    #[error("too many unpaid orders hold this product (max {OPEN_RESERVATIONS_MAX})")]
    TooManyReservations,
    #[error("return of {requested} exceeds the {sold} units sold")]
    ReturnExceedsSold { sold: u64, requested: u32 },
    #[error("fixed commissions of {fixed_fen} fen per unit exceed the unit's {unit_fen} fen")]
    CommissionAboveUnitPrice { unit_fen: i64, fixed_fen: i64 },
}

/// What a product shows. Orders copy only its name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductListing {
    pub name: ProductName,
    pub description: ProductDescription,
    #[schemars(length(max = IMAGES_MAX))]
    pub images: Vec<ImageUrl>,
}

impl ProductListing {
    fn check(&self) -> Result<(), ProductError> {
        if self.images.len() > IMAGES_MAX {
            return Err(ProductError::TooManyImages);
        }
        Ok(())
    }
}

/// Why a reservation ends without a sale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseReason {
    /// The order was not paid in time.
    Expired,
    /// The member or an operator cancelled the order.
    Cancelled,
    /// The order was never placed (the application failed between reserving
    /// and placing); only once the reservation's own expiry has passed.
    NotPlaced,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum ProductCommand {
    Create {
        product_id: ProductId,
        tenant_id: TenantId,
        listing: ProductListing,
        price: Price,
        stock: Stock,
        per_member_limit: Option<u32>,
        on_sale: bool,
        actor: Actor,
    },
    EditListing {
        listing: ProductListing,
        actor: Actor,
    },
    SetPrice {
        price: Price,
        actor: Actor,
    },
    SetStock {
        stock: Stock,
        actor: Actor,
    },
    SetMemberLimit {
        per_member_limit: Option<u32>,
        actor: Actor,
    },
    /// One coupon of this template comes with every paid order of the
    /// product (`None`: none). Orders placed before keep what they placed with.
    SetGiftCoupon {
        gift_coupon: Option<TemplateId>,
        actor: Actor,
    },
    /// The product's own commission terms (`None`: the distributor's level
    /// or the tenant's rates apply). Fixed amounts per unit, levels 1 and 2
    /// together, must not exceed the unit's cash price when set (a
    /// commission is capped at the order's cash basis anyway).
    SetCommission {
        commission: Option<ProductCommission>,
        actor: Actor,
    },
    PutOnSale {
        actor: Actor,
    },
    TakeOffSale {
        actor: Actor,
    },
    /// Holds `quantity` units for an order about to be placed at `unit_price`
    /// (refused when the price changed since the member saw it).
    Reserve {
        order_id: MallOrderId,
        member_id: MemberId,
        quantity: Quantity,
        unit_price: Price,
        expires_at: DateTime<Utc>,
    },
    Release {
        order_id: MallOrderId,
        reason: ReleaseReason,
    },
    /// The order was paid: its reserved units are sold.
    ConfirmSale {
        order_id: MallOrderId,
    },
    /// A refunded, undelivered order gives its units back (the order stream
    /// refunds once, so it asks once).
    ReturnSold {
        order_id: MallOrderId,
        member_id: MemberId,
        quantity: Quantity,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ProductEvent {
    ProductCreated {
        product_id: ProductId,
        tenant_id: TenantId,
        listing: ProductListing,
        price: Price,
        stock: Stock,
        per_member_limit: Option<u32>,
        on_sale: bool,
        actor: Actor,
        created_at: DateTime<Utc>,
    },
    ProductListingEdited {
        listing: ProductListing,
        actor: Actor,
        edited_at: DateTime<Utc>,
    },
    ProductPriceSet {
        price: Price,
        actor: Actor,
        set_at: DateTime<Utc>,
    },
    ProductStockSet {
        stock: Stock,
        actor: Actor,
        set_at: DateTime<Utc>,
    },
    ProductMemberLimitSet {
        per_member_limit: Option<u32>,
        actor: Actor,
        set_at: DateTime<Utc>,
    },
    ProductGiftCouponSet {
        gift_coupon: Option<TemplateId>,
        actor: Actor,
        set_at: DateTime<Utc>,
    },
    ProductCommissionSet {
        commission: Option<ProductCommission>,
        actor: Actor,
        set_at: DateTime<Utc>,
    },
    ProductSaleSwitched {
        on_sale: bool,
        actor: Actor,
        switched_at: DateTime<Utc>,
    },
    ProductStockReserved {
        order_id: MallOrderId,
        member_id: MemberId,
        quantity: Quantity,
        unit_price: Price,
        expires_at: DateTime<Utc>,
        /// Units the product's unpaid orders hold, these included.
        reserved_after: u64,
        /// The member's units under the per-member limit (`None`: no limit).
        member_units_after: Option<u32>,
        reserved_at: DateTime<Utc>,
    },
    ProductReservationReleased {
        order_id: MallOrderId,
        quantity: Quantity,
        reason: ReleaseReason,
        reserved_after: u64,
        member_units_after: Option<u32>,
        released_at: DateTime<Utc>,
    },
    ProductSaleConfirmed {
        order_id: MallOrderId,
        quantity: Quantity,
        reserved_after: u64,
        sold_after: u64,
        confirmed_at: DateTime<Utc>,
    },
    ProductSaleReturned {
        order_id: MallOrderId,
        member_id: MemberId,
        quantity: Quantity,
        sold_after: u64,
        member_units_after: Option<u32>,
        returned_at: DateTime<Utc>,
    },
}

impl DomainEventMeta for ProductEvent {
    fn event_type(&self) -> &'static str {
        match self {
            ProductEvent::ProductCreated { .. } => "ProductCreated",
            ProductEvent::ProductListingEdited { .. } => "ProductListingEdited",
            ProductEvent::ProductPriceSet { .. } => "ProductPriceSet",
            ProductEvent::ProductStockSet { .. } => "ProductStockSet",
            ProductEvent::ProductMemberLimitSet { .. } => "ProductMemberLimitSet",
            ProductEvent::ProductGiftCouponSet { .. } => "ProductGiftCouponSet",
            ProductEvent::ProductCommissionSet { .. } => "ProductCommissionSet",
            ProductEvent::ProductSaleSwitched { .. } => "ProductSaleSwitched",
            ProductEvent::ProductStockReserved { .. } => "ProductStockReserved",
            ProductEvent::ProductReservationReleased { .. } => "ProductReservationReleased",
            ProductEvent::ProductSaleConfirmed { .. } => "ProductSaleConfirmed",
            ProductEvent::ProductSaleReturned { .. } => "ProductSaleReturned",
        }
    }
    fn event_version(&self) -> &'static str {
        "1"
    }
}

/// Units an unpaid order holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub member_id: MemberId,
    pub quantity: Quantity,
    pub expires_at: DateTime<Utc>,
    /// Counted in `member_units` (made while the product had a limit).
    pub counted: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    pub created: Option<ProductState>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductState {
    pub product_id: ProductId,
    pub tenant_id: TenantId,
    pub listing: ProductListing,
    pub price: Price,
    pub stock: Stock,
    pub per_member_limit: Option<u32>,
    /// The coupon template a paid order of the product comes with.
    #[serde(default)]
    pub gift_coupon: Option<TemplateId>,
    /// The product's own commission terms (`None`: the rates apply).
    #[serde(default)]
    pub commission: Option<ProductCommission>,
    pub on_sale: bool,
    pub created_at: DateTime<Utc>,
    /// Units open reservations hold (the sum of `reservations`).
    pub reserved: u64,
    /// Units paid for and not given back.
    pub sold: u64,
    pub reservations: BTreeMap<MallOrderId, Reservation>,
    /// Member → units reserved or sold since the limit was set; empty
    /// without a limit; a member at zero is removed.
    pub member_units: BTreeMap<MemberId, u32>,
}

impl ProductState {
    /// Units still to sell; `None` for an unlimited stock.
    pub fn available(&self) -> Option<u64> {
        match self.stock {
            Stock::Finite { total } => Some(u64::from(total).saturating_sub(self.reserved + self.sold)),
            Stock::Unlimited => None,
        }
    }

    fn units_of(&self, member: MemberId) -> u32 {
        self.member_units.get(&member).copied().unwrap_or(0)
    }

    fn reserve(
        &self,
        order_id: MallOrderId,
        member_id: MemberId,
        quantity: Quantity,
        unit_price: Price,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<ProductEvent>, ProductError> {
        if let Some(open) = self.reservations.get(&order_id) {
            // A retried reservation of the same order changes nothing.
            return if open.member_id == member_id && open.quantity == quantity {
                Ok(Vec::new())
            } else {
                Err(ProductError::ReservationConflict(order_id))
            };
        }
        if !self.on_sale {
            return Err(ProductError::NotOnSale);
        }
        if unit_price != self.price {
            return Err(ProductError::PriceChanged { current: self.price });
        }
        if expires_at <= now || expires_at > now + Duration::minutes(PAY_WINDOW_MAX_MINUTES) {
            return Err(ProductError::InvalidExpiry);
        }
        if self.reservations.len() >= OPEN_RESERVATIONS_MAX {
            return Err(ProductError::TooManyReservations);
        }
        if let Some(available) = self.available() {
            if available < u64::from(quantity.get()) {
                return Err(ProductError::SoldOut { available });
            }
        }
        let member_units_after = match self.per_member_limit {
            None => None,
            Some(limit) => {
                let held = self.units_of(member_id);
                if held + quantity.get() > limit {
                    return Err(ProductError::LimitReached { limit, held });
                }
                if held == 0 && self.member_units.len() >= LIMITED_BUYERS_MAX {
                    return Err(ProductError::TooManyBuyers);
                }
                Some(held + quantity.get())
            }
        };
        Ok(vec![ProductEvent::ProductStockReserved {
            order_id,
            member_id,
            quantity,
            unit_price,
            expires_at,
            reserved_after: self.reserved + u64::from(quantity.get()),
            member_units_after,
            reserved_at: now,
        }])
    }

    fn open(&self, order_id: MallOrderId) -> Result<&Reservation, ProductError> {
        self.reservations.get(&order_id).ok_or(ProductError::ReservationNotOpen(order_id))
    }

    fn release(
        &self,
        order_id: MallOrderId,
        reason: ReleaseReason,
        now: DateTime<Utc>,
    ) -> Result<Vec<ProductEvent>, ProductError> {
        let open = self.open(order_id)?;
        if reason == ReleaseReason::NotPlaced && now < open.expires_at {
            return Err(ProductError::ReservationStillValid(order_id, open.expires_at));
        }
        let quantity = open.quantity;
        Ok(vec![ProductEvent::ProductReservationReleased {
            order_id,
            quantity,
            reason,
            reserved_after: self.reserved.saturating_sub(u64::from(quantity.get())),
            member_units_after: self.units_after_release(open),
            released_at: now,
        }])
    }

    fn units_after_release(&self, open: &Reservation) -> Option<u32> {
        self.per_member_limit.map(|_| {
            let held = self.units_of(open.member_id);
            if open.counted {
                held.saturating_sub(open.quantity.get())
            } else {
                held
            }
        })
    }

    fn confirm(&self, order_id: MallOrderId, now: DateTime<Utc>) -> Result<Vec<ProductEvent>, ProductError> {
        let quantity = self.open(order_id)?.quantity;
        Ok(vec![ProductEvent::ProductSaleConfirmed {
            order_id,
            quantity,
            reserved_after: self.reserved.saturating_sub(u64::from(quantity.get())),
            sold_after: self.sold + u64::from(quantity.get()),
            confirmed_at: now,
        }])
    }

    fn return_sold(
        &self,
        order_id: MallOrderId,
        member_id: MemberId,
        quantity: Quantity,
        now: DateTime<Utc>,
    ) -> Result<Vec<ProductEvent>, ProductError> {
        if self.sold < u64::from(quantity.get()) {
            return Err(ProductError::ReturnExceedsSold { sold: self.sold, requested: quantity.get() });
        }
        Ok(vec![ProductEvent::ProductSaleReturned {
            order_id,
            member_id,
            quantity,
            sold_after: self.sold - u64::from(quantity.get()),
            // Saturating: the sale may predate the limit's count.
            member_units_after: self.per_member_limit.map(|_| self.units_of(member_id).saturating_sub(quantity.get())),
            returned_at: now,
        }])
    }
}

fn check_stock(stock: Stock) -> Result<(), ProductError> {
    match stock {
        Stock::Finite { total } if total > STOCK_MAX => Err(ProductError::InvalidStock),
        _ => Ok(()),
    }
}

fn check_limit(limit: Option<u32>) -> Result<(), ProductError> {
    match limit {
        Some(l) if l == 0 || l > PER_MEMBER_LIMIT_MAX => Err(ProductError::InvalidLimit),
        _ => Ok(()),
    }
}

fn switch(
    state: &ProductState,
    on_sale: bool,
    actor: Actor,
    now: DateTime<Utc>,
) -> Result<Vec<ProductEvent>, ProductError> {
    if state.on_sale == on_sale {
        return Err(ProductError::SameSwitch(if on_sale { "on sale" } else { "off sale" }));
    }
    Ok(vec![ProductEvent::ProductSaleSwitched { on_sale, actor, switched_at: now }])
}

impl Product {
    fn state(&self) -> Result<&ProductState, ProductError> {
        self.created.as_ref().ok_or(ProductError::NotFound)
    }

    fn existing(&mut self) -> Result<&mut ProductState, InvariantViolation> {
        self.created
            .as_mut()
            .ok_or_else(|| InvariantViolation::new(rules::PRODUCT_EXISTS, "event before the product was created"))
    }
}

impl EventSourced for Product {
    const TYPE: &'static str = "mall_product";
    const STATE_VERSION: i32 = 2;
    type Command = ProductCommand;
    type Event = ProductEvent;
    type Error = ProductError;

    fn handle(&self, command: ProductCommand, now: DateTime<Utc>) -> Result<Vec<ProductEvent>, ProductError> {
        match command {
            ProductCommand::Create {
                product_id,
                tenant_id,
                listing,
                price,
                stock,
                per_member_limit,
                on_sale,
                actor,
            } => {
                if self.created.is_some() {
                    return Err(ProductError::AlreadyExists);
                }
                listing.check()?;
                check_stock(stock)?;
                check_limit(per_member_limit)?;
                Ok(vec![ProductEvent::ProductCreated {
                    product_id,
                    tenant_id,
                    listing,
                    price,
                    stock,
                    per_member_limit,
                    on_sale,
                    actor,
                    created_at: now,
                }])
            }
            ProductCommand::EditListing { listing, actor } => {
                self.state()?;
                listing.check()?;
                Ok(vec![ProductEvent::ProductListingEdited { listing, actor, edited_at: now }])
            }
            ProductCommand::SetPrice { price, actor } => {
                self.state()?;
                Ok(vec![ProductEvent::ProductPriceSet { price, actor, set_at: now }])
            }
            ProductCommand::SetStock { stock, actor } => {
                let state = self.state()?;
                check_stock(stock)?;
                if let Stock::Finite { total } = stock {
                    let committed = state.reserved + state.sold;
                    if u64::from(total) < committed {
                        return Err(ProductError::StockBelowCommitted { requested: total, committed });
                    }
                }
                Ok(vec![ProductEvent::ProductStockSet { stock, actor, set_at: now }])
            }
            ProductCommand::SetMemberLimit { per_member_limit, actor } => {
                self.state()?;
                check_limit(per_member_limit)?;
                Ok(vec![ProductEvent::ProductMemberLimitSet { per_member_limit, actor, set_at: now }])
            }
            ProductCommand::SetGiftCoupon { gift_coupon, actor } => {
                self.state()?;
                Ok(vec![ProductEvent::ProductGiftCouponSet { gift_coupon, actor, set_at: now }])
            }
            ProductCommand::SetCommission { commission, actor } => {
                let state = self.state()?;
                if let Some(ProductCommission::FixedPerUnit { first_fen, second_fen }) = commission {
                    let fixed_fen = first_fen.get().saturating_add(second_fen.map_or(0, |f| f.get()));
                    if fixed_fen > state.price.fen() {
                        return Err(ProductError::CommissionAboveUnitPrice { unit_fen: state.price.fen(), fixed_fen });
                    }
                }
                Ok(vec![ProductEvent::ProductCommissionSet { commission, actor, set_at: now }])
            }
            ProductCommand::PutOnSale { actor } => switch(self.state()?, true, actor, now),
            ProductCommand::TakeOffSale { actor } => switch(self.state()?, false, actor, now),
            ProductCommand::Reserve { order_id, member_id, quantity, unit_price, expires_at } => {
                self.state()?.reserve(order_id, member_id, quantity, unit_price, expires_at, now)
            }
            ProductCommand::Release { order_id, reason } => self.state()?.release(order_id, reason, now),
            ProductCommand::ConfirmSale { order_id } => self.state()?.confirm(order_id, now),
            ProductCommand::ReturnSold { order_id, member_id, quantity } => {
                self.state()?.return_sold(order_id, member_id, quantity, now)
            }
        }
    }

    fn apply(&mut self, event: &ProductEvent) -> Result<(), InvariantViolation> {
        match event {
            ProductEvent::ProductCreated {
                product_id,
                tenant_id,
                listing,
                price,
                stock,
                per_member_limit,
                on_sale,
                created_at,
                ..
            } => {
                ensure(self.created.is_none(), rules::PRODUCT_CREATED_ONCE, || "created twice".into())?;
                self.created = Some(ProductState {
                    product_id: *product_id,
                    tenant_id: tenant_id.clone(),
                    listing: listing.clone(),
                    price: *price,
                    stock: *stock,
                    per_member_limit: *per_member_limit,
                    gift_coupon: None,
                    commission: None,
                    on_sale: *on_sale,
                    created_at: *created_at,
                    reserved: 0,
                    sold: 0,
                    reservations: BTreeMap::new(),
                    member_units: BTreeMap::new(),
                });
            }
            ProductEvent::ProductListingEdited { listing, .. } => self.existing()?.listing = listing.clone(),
            ProductEvent::ProductPriceSet { price, .. } => self.existing()?.price = *price,
            ProductEvent::ProductStockSet { stock, .. } => {
                let state = self.existing()?;
                state.stock = *stock;
                check_within_stock(state)?;
            }
            ProductEvent::ProductMemberLimitSet { per_member_limit, .. } => {
                let state = self.existing()?;
                if per_member_limit.is_none() {
                    // Lifting the limit drops the count; a later limit counts afresh.
                    state.member_units.clear();
                    state.reservations.values_mut().for_each(|r| r.counted = false);
                }
                state.per_member_limit = *per_member_limit;
            }
            ProductEvent::ProductGiftCouponSet { gift_coupon, .. } => self.existing()?.gift_coupon = *gift_coupon,
            ProductEvent::ProductCommissionSet { commission, .. } => self.existing()?.commission = *commission,
            ProductEvent::ProductSaleSwitched { on_sale, .. } => self.existing()?.on_sale = *on_sale,
            ProductEvent::ProductStockReserved {
                order_id,
                member_id,
                quantity,
                expires_at,
                reserved_after,
                member_units_after,
                ..
            } => {
                let state = self.existing()?;
                apply_reserved(
                    state,
                    *order_id,
                    *member_id,
                    *quantity,
                    *expires_at,
                    *reserved_after,
                    *member_units_after,
                )?;
            }
            ProductEvent::ProductReservationReleased {
                order_id, quantity, reserved_after, member_units_after, ..
            } => {
                let state = self.existing()?;
                let open = take_open(state, *order_id, *quantity)?;
                let units = state.units_after_release(&open);
                ensure_figure(rules::COUNTS_AFTER, "member_units_after", Units(*member_units_after), Units(units))?;
                set_units(state, open.member_id, units);
                state.reserved = less(state.reserved, *quantity, "reserved")?;
                ensure_figure(rules::COUNTS_AFTER, "reserved_after", *reserved_after, state.reserved)?;
            }
            ProductEvent::ProductSaleConfirmed { order_id, quantity, reserved_after, sold_after, .. } => {
                let state = self.existing()?;
                take_open(state, *order_id, *quantity)?;
                state.reserved = less(state.reserved, *quantity, "reserved")?;
                state.sold += u64::from(quantity.get());
                ensure_figure(rules::COUNTS_AFTER, "reserved_after", *reserved_after, state.reserved)?;
                ensure_figure(rules::COUNTS_AFTER, "sold_after", *sold_after, state.sold)?;
                check_within_stock(state)?;
            }
            ProductEvent::ProductSaleReturned { member_id, quantity, sold_after, member_units_after, .. } => {
                let state = self.existing()?;
                state.sold = less(state.sold, *quantity, "sold")?;
                ensure_figure(rules::COUNTS_AFTER, "sold_after", *sold_after, state.sold)?;
                let units = state.per_member_limit.map(|_| state.units_of(*member_id).saturating_sub(quantity.get()));
                ensure_figure(rules::COUNTS_AFTER, "member_units_after", Units(*member_units_after), Units(units))?;
                set_units(state, *member_id, units);
            }
        }
        Ok(())
    }

    fn tenant(&self) -> Option<&TenantId> {
        self.created.as_ref().map(|s| &s.tenant_id)
    }
}

/// An optional count, printable for `ensure_figure`.
#[derive(PartialEq)]
struct Units(Option<u32>);

impl std::fmt::Display for Units {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(n) => n.fmt(f),
            None => f.write_str("none"),
        }
    }
}

/// `count − quantity`, never below zero.
fn less(count: u64, quantity: Quantity, what: &str) -> Result<u64, InvariantViolation> {
    count
        .checked_sub(u64::from(quantity.get()))
        .ok_or_else(|| InvariantViolation::new(rules::COUNTS_AFTER, format!("{quantity} taken from {count} {what}")))
}

fn check_within_stock(state: &ProductState) -> Result<(), InvariantViolation> {
    if let Stock::Finite { total } = state.stock {
        let committed = state.reserved + state.sold;
        ensure(committed <= u64::from(total), rules::WITHIN_STOCK, || {
            format!("{} reserved and {} sold of a stock of {total}", state.reserved, state.sold)
        })?;
    }
    Ok(())
}

fn set_units(state: &mut ProductState, member: MemberId, units: Option<u32>) {
    match units {
        Some(n) if n > 0 => {
            state.member_units.insert(member, n);
        }
        _ => {
            state.member_units.remove(&member);
        }
    }
}

/// Removes an open reservation of exactly `quantity`: a second end of the
/// same reservation finds none.
fn take_open(
    state: &mut ProductState,
    order_id: MallOrderId,
    quantity: Quantity,
) -> Result<Reservation, InvariantViolation> {
    let open = state.reservations.remove(&order_id).ok_or_else(|| {
        InvariantViolation::new(rules::RESERVATION_OPEN, format!("order {order_id} holds no open reservation"))
    })?;
    ensure_figure(rules::RESERVATION_OPEN, "quantity", quantity, open.quantity)?;
    Ok(open)
}

fn apply_reserved(
    state: &mut ProductState,
    order_id: MallOrderId,
    member_id: MemberId,
    quantity: Quantity,
    expires_at: DateTime<Utc>,
    reserved_after: u64,
    member_units_after: Option<u32>,
) -> Result<(), InvariantViolation> {
    ensure(!state.reservations.contains_key(&order_id), rules::RESERVATION_UNIQUE, || {
        format!("order {order_id} reserved twice")
    })?;
    ensure(state.reservations.len() < OPEN_RESERVATIONS_MAX, rules::RESERVATIONS_MAX, || {
        format!("a reservation past {OPEN_RESERVATIONS_MAX}")
    })?;
    state.reserved += u64::from(quantity.get());
    ensure_figure(rules::COUNTS_AFTER, "reserved_after", reserved_after, state.reserved)?;
    check_within_stock(state)?;
    let units = match state.per_member_limit {
        None => None,
        Some(limit) => {
            let held = state.units_of(member_id);
            let units = held + quantity.get();
            ensure(units <= limit, rules::WITHIN_MEMBER_LIMIT, || format!("{units} units under a limit of {limit}"))?;
            ensure(held > 0 || state.member_units.len() < LIMITED_BUYERS_MAX, rules::BUYERS_MAX, || {
                format!("a buyer past {LIMITED_BUYERS_MAX}")
            })?;
            Some(units)
        }
    };
    ensure_figure(rules::COUNTS_AFTER, "member_units_after", Units(member_units_after), Units(units))?;
    set_units(state, member_id, units);
    let counted = units.is_some();
    state.reservations.insert(order_id, Reservation { member_id, quantity, expires_at, counted });
    Ok(())
}
