//! Points mall use cases: products (admin), and orders as processes over
//! three kinds of stream — the product (stock and the per-member limit), the
//! member ledger (points hold, balance charge) and the order itself
//! ([`orders`]).

pub mod orders;
pub mod pay;

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;
use wxcm_domain::coupon::{CouponError, TemplateId};
use wxcm_domain::mall::{
    MallOrderError, Price, Product, ProductCommand, ProductError, ProductId, ProductListing, Stock,
};
use wxcm_domain::member::MemberError;
use wxcm_domain::{Actor, EventSourced, IdempotencyKey, MemberId, TenantId};

use crate::members::MemberOpError;
use crate::ports::{PortError, RouteError};
use crate::{App, CommandContext, ExecuteError};

/// Products per page of a product list.
pub const PRODUCT_PAGE_MAX: u32 = 100;
/// Orders per page of an order list.
pub const ORDER_PAGE_MAX: u32 = 100;
/// How long an unpaid order holds stock and points unless configured
/// (`limits.mall_pay_window_minutes`).
pub const PAY_WINDOW_DEFAULT_MINUTES: i64 = 15;
/// How old a cached product may be in a list (a list may be a moment old;
/// an order always decides on the product's latest event).
const PRODUCT_STATE_AGE_MAX: Duration = Duration::from_secs(2);

/// An order as the order index knows it (migration 0020: written with the
/// reservation, so an order that was never placed is known too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderEntry {
    pub order_id: wxcm_domain::mall::MallOrderId,
    /// The short number staff type at the counter (unique per shard).
    pub order_no: i64,
    pub product_id: ProductId,
    pub member_id: MemberId,
    /// When the reservation (and so the unpaid order) expires.
    pub expires_at: DateTime<Utc>,
    pub placed: bool,
}

/// A page of placed orders, newest (highest number) first.
#[derive(Debug, Clone)]
pub struct OrderQuery {
    pub member_id: Option<MemberId>,
    /// Orders numbered below this one.
    pub before_no: Option<i64>,
    /// Only orders whose latest refund request is in this state.
    pub refund_request: Option<wxcm_domain::mall::RefundRequestStatus>,
    /// 1..=[`ORDER_PAGE_MAX`].
    pub limit: u32,
}

/// What the mall use cases need from the shard's database beside the events.
#[async_trait]
pub trait MallStore: Send + Sync {
    async fn order_entry(
        &self,
        tenant: &TenantId,
        order_id: wxcm_domain::mall::MallOrderId,
    ) -> Result<Option<OrderEntry>, PortError>;
    async fn order_by_no(&self, tenant: &TenantId, order_no: i64) -> Result<Option<OrderEntry>, PortError>;
    /// Placed orders only.
    async fn orders(&self, tenant: &TenantId, query: &OrderQuery) -> Result<Vec<OrderEntry>, PortError>;
}

#[derive(Debug, thiserror::Error)]
pub enum MallOpError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error(transparent)]
    Product(ProductError),
    #[error(transparent)]
    Order(MallOrderError),
    #[error(transparent)]
    Member(MemberError),
    /// The coupon applied to an order cannot be used (taken, used, expired).
    #[error(transparent)]
    Coupon(CouponError),
    /// The member has fewer spendable points than the order costs.
    #[error("not enough points: {spendable} spendable, {needed} needed")]
    InsufficientPoints { spendable: i64, needed: i64 },
    /// The cash part arrived after the order expired or was cancelled: it was
    /// given back, the order is not honoured.
    #[error("the order ended before its payment arrived; the payment was refunded")]
    PaidTooLate,
    /// An earlier request with this key failed after reserving and was undone.
    #[error("an earlier request with this idempotency key failed; use a new key")]
    Abandoned,
    #[error("{0}")]
    Unsupported(&'static str),
    /// The order is paid another way than the one asked (balance vs WeChat
    /// Pay): a conflict with the order's state, not a malformed request.
    #[error("{0}")]
    PaymentMethodMismatch(&'static str),
    #[error("not an order number: {0}")]
    InvalidOrderNo(String),
    #[error("this order belongs to another merchant")]
    OtherTenant,
    #[error("idempotency key was already used with a different request")]
    IdempotencyMismatch,
    #[error("too much contention, try again")]
    Contention,
    #[error(transparent)]
    Route(#[from] RouteError),
    /// WeChat Pay refused or could not be reached (`Retry`: try again).
    #[error("wechat pay: {0}")]
    Pay(#[from] crate::pay_flows::PayFlowError),
    #[error("infrastructure failure: {0}")]
    Infra(String),
    /// The database or broker is unreachable for now; a write's outcome is unknown.
    #[error("infrastructure unavailable: {0}")]
    Unavailable(String),
}

impl From<PortError> for MallOpError {
    fn from(e: PortError) -> Self {
        if e.is_transient() {
            MallOpError::Unavailable(e.to_string())
        } else {
            MallOpError::Infra(e.to_string())
        }
    }
}

impl From<MemberOpError> for MallOpError {
    fn from(e: MemberOpError) -> Self {
        match e {
            MemberOpError::NotFound => MallOpError::NotFound("member"),
            MemberOpError::Rejected(r) => MallOpError::Member(r),
            MemberOpError::IdempotencyMismatch => MallOpError::IdempotencyMismatch,
            MemberOpError::Contention => MallOpError::Contention,
            MemberOpError::Route(r) => MallOpError::Route(r),
            MemberOpError::Infra(s) => MallOpError::Infra(s),
            MemberOpError::Unavailable(s) => MallOpError::Unavailable(s),
        }
    }
}

/// The executor's errors other than the aggregate's own.
fn execute_error<E: std::error::Error>(e: ExecuteError<E>, domain: impl FnOnce(E) -> MallOpError) -> MallOpError {
    match e {
        ExecuteError::Domain(d) => domain(d),
        ExecuteError::ForeignAggregate => MallOpError::NotFound("order"),
        ExecuteError::IdempotencyMismatch => MallOpError::IdempotencyMismatch,
        ExecuteError::Contention => MallOpError::Contention,
        ExecuteError::Invariant(b) => MallOpError::Infra(b.to_string()),
        ExecuteError::Store(s) => MallOpError::Infra(s),
        ExecuteError::Unavailable(s) => MallOpError::Unavailable(s),
    }
}

impl From<ExecuteError<ProductError>> for MallOpError {
    fn from(e: ExecuteError<ProductError>) -> Self {
        match e {
            ExecuteError::ForeignAggregate => MallOpError::NotFound("product"),
            other => execute_error(other, |d| match d {
                ProductError::NotFound => MallOpError::NotFound("product"),
                d => MallOpError::Product(d),
            }),
        }
    }
}

impl From<ExecuteError<CouponError>> for MallOpError {
    fn from(e: ExecuteError<CouponError>) -> Self {
        match e {
            ExecuteError::ForeignAggregate => MallOpError::NotFound("coupon"),
            other => execute_error(other, coupon_error),
        }
    }
}

/// A coupon refusal as the mall answers it (another member's coupon is not found).
pub(crate) fn coupon_error(e: CouponError) -> MallOpError {
    match e {
        CouponError::NotFound => MallOpError::NotFound("coupon"),
        e => MallOpError::Coupon(e),
    }
}

impl From<ExecuteError<MallOrderError>> for MallOpError {
    fn from(e: ExecuteError<MallOrderError>) -> Self {
        execute_error(e, |d| match d {
            MallOrderError::NotFound => MallOpError::NotFound("order"),
            d => MallOpError::Order(d),
        })
    }
}

/// A product as admins and members see it.
#[derive(Debug, Clone, Serialize)]
pub struct ProductView {
    pub product_id: ProductId,
    pub listing: ProductListing,
    pub price: Price,
    pub stock: Stock,
    pub per_member_limit: Option<u32>,
    /// One coupon of this template comes with every paid order.
    pub gift_coupon: Option<TemplateId>,
    /// The product's own commission terms (`None`: the rates apply).
    pub commission: Option<wxcm_domain::distribution::ProductCommission>,
    pub on_sale: bool,
    /// Units unpaid orders hold.
    pub reserved: u64,
    pub sold: u64,
    /// `None` for an unlimited stock.
    pub available: Option<u64>,
    pub created_at: DateTime<Utc>,
}

impl ProductView {
    fn of(product: &Product, tenant: &TenantId) -> Option<Self> {
        let state = product.created.as_ref().filter(|s| &s.tenant_id == tenant)?;
        Some(Self {
            product_id: state.product_id,
            listing: state.listing.clone(),
            price: state.price,
            stock: state.stock,
            per_member_limit: state.per_member_limit,
            gift_coupon: state.gift_coupon,
            commission: state.commission,
            on_sale: state.on_sale,
            reserved: state.reserved,
            sold: state.sold,
            available: state.available(),
            created_at: state.created_at,
        })
    }
}

/// What a new product is.
#[derive(Debug, Clone, Serialize)]
pub struct NewProduct {
    pub listing: ProductListing,
    pub price: Price,
    pub stock: Stock,
    pub per_member_limit: Option<u32>,
    pub on_sale: bool,
}

fn product_id_for(tenant: &TenantId, key: &IdempotencyKey) -> ProductId {
    const NAMESPACE: Uuid = Uuid::from_u128(0x3c9a_51e2_77d0_4b8f_a0e4_5d16_2b9c_e871);
    let name = format!("{}\u{1f}{}", tenant.as_str(), key.as_str());
    ProductId::from_uuid(Uuid::new_v5(&NAMESPACE, name.as_bytes()))
}

/// Creates a product; its id derives from the key, so a retried request
/// creates nothing new.
pub async fn create_product(
    app: &App,
    ctx: &CommandContext,
    product: NewProduct,
    actor: Actor,
) -> Result<ProductView, MallOpError> {
    let tenant = &ctx.tenant_id;
    let product_id = product_id_for(tenant, &ctx.idempotency_key);
    let request = serde_json::json!({ "create_product": &product });
    let NewProduct { listing, price, stock, per_member_limit, on_sale } = product;
    let command = ProductCommand::Create {
        product_id,
        tenant_id: tenant.clone(),
        listing,
        price,
        stock,
        per_member_limit,
        on_sale,
        actor,
    };
    run_product(app, ctx, product_id, command, &request).await
}

/// An operator's change: listing, price, stock, limit, on/off sale.
pub async fn change_product(
    app: &App,
    ctx: &CommandContext,
    product_id: ProductId,
    command: ProductCommand,
) -> Result<ProductView, MallOpError> {
    let operator = matches!(
        command,
        ProductCommand::EditListing { .. }
            | ProductCommand::SetPrice { .. }
            | ProductCommand::SetStock { .. }
            | ProductCommand::SetMemberLimit { .. }
            | ProductCommand::SetGiftCoupon { .. }
            | ProductCommand::SetCommission { .. }
            | ProductCommand::PutOnSale { .. }
            | ProductCommand::TakeOffSale { .. }
    );
    if !operator {
        return Err(MallOpError::Infra("orders move stock through their own use cases".into()));
    }
    // The product must be this tenant's before anything is written to it.
    get_product(app, &ctx.tenant_id, product_id).await?;
    if let ProductCommand::SetGiftCoupon { gift_coupon: Some(template_id), .. } = &command {
        // Only a template of this tenant; a template switched off or sold out
        // later simply gives nothing with an order.
        let shard = app.router.route(&ctx.tenant_id)?;
        let (template, _) = shard.coupon_templates.load(&ctx.tenant_id, &template_id.to_string()).await?;
        if template.tenant() != Some(&ctx.tenant_id) {
            return Err(MallOpError::NotFound("coupon template"));
        }
    }
    let request = command.clone();
    run_product(app, ctx, product_id, command, &request).await
}

async fn run_product(
    app: &App,
    ctx: &CommandContext,
    product_id: ProductId,
    command: ProductCommand,
    request: &(impl Serialize + Sync),
) -> Result<ProductView, MallOpError> {
    let shard = app.router.route(&ctx.tenant_id)?;
    shard.products.execute(&product_id.to_string(), command, request, ctx).await?;
    get_product(app, &ctx.tenant_id, product_id).await
}

pub async fn get_product(app: &App, tenant: &TenantId, product_id: ProductId) -> Result<ProductView, MallOpError> {
    let shard = app.router.route(tenant)?;
    let (state, _) = shard.products.load(tenant, &product_id.to_string()).await?;
    ProductView::of(&state, tenant).ok_or(MallOpError::NotFound("product"))
}

/// A page of the tenant's products in id order, after `after`.
pub async fn list_products(
    app: &App,
    tenant: &TenantId,
    after: Option<ProductId>,
    limit: u32,
    on_sale_only: bool,
) -> Result<Vec<ProductView>, MallOpError> {
    let shard = app.router.route(tenant)?;
    let after = after.map(|a| a.to_string());
    let ids =
        shard.event_log.stream_ids(tenant, Product::TYPE, after.as_deref(), limit.clamp(1, PRODUCT_PAGE_MAX)).await?;
    let mut views = Vec::with_capacity(ids.len());
    for id in ids {
        let (state, _) = shard.products.load_recent(tenant, &id, PRODUCT_STATE_AGE_MAX).await?;
        views.extend(ProductView::of(&state, tenant).filter(|v| v.on_sale || !on_sale_only));
    }
    Ok(views)
}
