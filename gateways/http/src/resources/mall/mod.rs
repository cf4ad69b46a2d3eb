//! The points mall (tag `mall`): products and orders for admins
//! (`/admin/api/v1/mall/…`), delivery at the counter (staff), and the
//! member's side (`/m/api/v1/mall/…`, tag `member`): products on sale, place,
//! pay, cancel, my orders. A member session only ever sees its own orders.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use tracing::instrument;
use wxcm_commands::mall::{self, orders, MallOpError, OrderQuery, ORDER_PAGE_MAX, PRODUCT_PAGE_MAX};
use wxcm_commands::pay_flows::PayFlowError;
use wxcm_commands::CommandContext;
use wxcm_domain::coupon::TemplateId;
use wxcm_domain::mall::{MallOrderError, MallOrderId, ProductCommand, ProductError, ProductId};
use wxcm_domain::MemberId;

use crate::error::{idempotency_key_reused, member_rejection, unknown_tenant, ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery, Authorized, Correlation, IdempotencyHeader};
use crate::permissions::perm;
use crate::resources::member_api::MemberAuth;
use crate::state::AppState;

mod types;
pub use types::*;

/// Default entries of one page.
pub const PAGE_DEFAULT: u32 = 50;

impl From<MallOpError> for ApiError {
    fn from(e: MallOpError) -> Self {
        let message = e.to_string();
        match e {
            MallOpError::NotFound("member") => ApiError::not_found("member_not_found", message),
            MallOpError::NotFound("product") => ApiError::not_found("product_not_found", message),
            MallOpError::NotFound("coupon") => ApiError::not_found("coupon_not_found", message),
            MallOpError::NotFound("coupon template") => ApiError::not_found("template_not_found", message),
            MallOpError::Coupon(_) => ApiError::conflict("coupon_not_usable", message),
            MallOpError::NotFound(_) => ApiError::not_found("order_not_found", message),
            MallOpError::Product(p) => product_rejection(&p),
            MallOpError::Order(o) => order_rejection(&o),
            MallOpError::Member(m) => member_rejection(&m),
            MallOpError::InsufficientPoints { .. } => ApiError::conflict("insufficient_points", message),
            MallOpError::PaidTooLate => ApiError::conflict("order_ended_payment_refunded", message),
            MallOpError::Abandoned => ApiError::conflict("order_abandoned", message),
            MallOpError::Unsupported(_) => ApiError::invalid("payment_method_unsupported", message),
            MallOpError::PaymentMethodMismatch(_) => ApiError::conflict("payment_method_mismatch", message),
            MallOpError::InvalidOrderNo(_) => ApiError::invalid("invalid_order_no", message),
            MallOpError::OtherTenant => ApiError::conflict("other_tenant_order", message),
            MallOpError::IdempotencyMismatch => idempotency_key_reused(),
            MallOpError::Contention => ApiError::Contention,
            MallOpError::Route(r) => unknown_tenant(&r),
            MallOpError::Pay(PayFlowError::Refused(_)) => ApiError::invalid("pay_refused", message),
            MallOpError::Pay(PayFlowError::Retry(detail)) => ApiError::unavailable("wechat pay", &detail),
            MallOpError::Pay(PayFlowError::KeyReused) => idempotency_key_reused(),
            MallOpError::Pay(PayFlowError::UnknownAccount(_) | PayFlowError::CodeRefused(_)) => {
                ApiError::invalid("pay_refused", message)
            }
            MallOpError::Infra(detail) => ApiError::internal("mall operation", &detail),
            MallOpError::Unavailable(detail) => ApiError::unavailable("mall operation", &detail),
        }
    }
}

fn product_rejection(e: &ProductError) -> ApiError {
    let message = e.to_string();
    match e {
        ProductError::NotFound => ApiError::not_found("product_not_found", message),
        ProductError::AlreadyExists => ApiError::conflict("product_exists", message),
        ProductError::TooManyImages => ApiError::invalid("invalid_images", message),
        ProductError::InvalidStock => ApiError::invalid("invalid_stock", message),
        ProductError::InvalidLimit => ApiError::invalid("invalid_limit", message),
        ProductError::StockBelowCommitted { .. } => ApiError::conflict("stock_below_committed", message),
        ProductError::SameSwitch(_) => ApiError::conflict("unchanged", message),
        ProductError::NotOnSale => ApiError::conflict("not_on_sale", message),
        ProductError::SoldOut { .. } => ApiError::conflict("sold_out", message),
        ProductError::LimitReached { .. } => ApiError::conflict("limit_reached", message),
        ProductError::TooManyBuyers => ApiError::conflict("too_many_buyers", message),
        ProductError::PriceChanged { .. } => ApiError::conflict("price_changed", message),
        ProductError::TooManyReservations => ApiError::conflict("too_many_unpaid_orders", message),
        ProductError::CommissionAboveUnitPrice { .. } => ApiError::conflict("commission_above_unit_price", message),
        // The application chooses these; a refusal is ours, not the client's.
        ProductError::InvalidExpiry
        | ProductError::ReservationConflict(_)
        | ProductError::ReservationNotOpen(_)
        | ProductError::ReservationStillValid(..)
        | ProductError::ReturnExceedsSold { .. } => ApiError::internal("mall product", &message),
    }
}

fn order_rejection(e: &MallOrderError) -> ApiError {
    let message = e.to_string();
    match e {
        MallOrderError::NotFound | MallOrderError::NotYourOrder => ApiError::not_found("order_not_found", message),
        MallOrderError::TooLarge(_) => ApiError::invalid("order_too_large", message),
        MallOrderError::AlreadyPaid => ApiError::conflict("already_paid", message),
        MallOrderError::Ended(_) => ApiError::conflict("order_ended", message),
        MallOrderError::AlreadyDelivered => ApiError::conflict("already_delivered", message),
        MallOrderError::AlreadyRefunded => ApiError::conflict("already_refunded", message),
        MallOrderError::NotPaid => ApiError::conflict("not_paid", message),
        MallOrderError::PaidByAnother => ApiError::conflict("paid_by_another", message),
        MallOrderError::CouponNotApplicable => ApiError::invalid("coupon_not_applicable", message),
        MallOrderError::RefundRequestOpen => ApiError::conflict("refund_request_open", message),
        MallOrderError::NoRefundRequest => ApiError::conflict("no_refund_request", message),
        MallOrderError::TooManyRefundRequests => ApiError::conflict("too_many_refund_requests", message),
        MallOrderError::PricePaid => ApiError::conflict("order_paid_price_fixed", message),
        MallOrderError::PaymentStarted(_) => ApiError::conflict("payment_started_price_fixed", message),
        MallOrderError::NoCashPart => ApiError::conflict("order_has_no_cash_part", message),
        MallOrderError::PriceOutOfRange { .. } => ApiError::conflict("price_above_list", message),
        // Sessions of the admin API act as staff or admin: a refusal is ours.
        MallOrderError::NotStaff
        | MallOrderError::AlreadyPlaced
        | MallOrderError::InvalidExpiry
        | MallOrderError::MethodMismatch { .. }
        | MallOrderError::NoPointsPart
        | MallOrderError::HoldMismatch { .. }
        | MallOrderError::AlreadyHeld
        | MallOrderError::PointsNotHeld
        | MallOrderError::AmountMismatch { .. }
        | MallOrderError::NotYetDue(_)
        | MallOrderError::NotMember
        | MallOrderError::AdminOnly(_)
        | MallOrderError::RefundNo => ApiError::internal("mall order", &message),
    }
}

fn page_limit(limit: Option<u32>, max: u32) -> Result<u32, ApiError> {
    let limit = limit.unwrap_or(PAGE_DEFAULT);
    if !(1..=max).contains(&limit) {
        return Err(ApiError::invalid("invalid_limit", format!("limit must be 1..={max}")));
    }
    Ok(limit)
}

/// Order numbers start at 1: a page ends below one of them.
fn page_before(before: Option<i64>) -> Result<Option<i64>, ApiError> {
    match before {
        Some(b) if b < 1 => Err(ApiError::invalid("invalid_before", "before must be an order number (>= 1)")),
        other => Ok(other),
    }
}

fn order_list(views: Vec<orders::OrderView>, limit: u32) -> OrderList {
    let full = views.len() == limit as usize;
    let next_before = if full { views.last().map(|v| v.order_no) } else { None };
    OrderList { orders: views.into_iter().map(Into::into).collect(), next_before }
}

// ---------------------------------------------------------------- admin: products

/// Creates a product (on sale unless `on_sale` is false).
#[utoipa::path(post, path = "/admin/api/v1/mall/products", tag = "mall",
    security(("bearer" = [])),
    params(("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters; the same key is the same product")),
    request_body = CreateProductBody,
    responses(
        (status = 201, description = "Created (or replayed)", body = ProductDto),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_text`, `invalid_images`, `invalid_price`, `invalid_stock`, `invalid_limit`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username))]
pub async fn create_product(
    State(state): State<AppState>,
    auth: Authorized<perm::MallSettings>,
    key: IdempotencyHeader,
    correlation: Correlation,
    body: ApiJson<CreateProductBody>,
) -> Result<(StatusCode, Json<ProductDto>), ApiError> {
    let product = body.0.validate()?;
    let ctx = auth.context(key.0, correlation);
    let view = mall::create_product(&state.app, &ctx, product, auth.actor()).await?;
    Ok((StatusCode::CREATED, Json(view.into())))
}

/// The tenant's products, in id order (on sale or not).
#[utoipa::path(get, path = "/admin/api/v1/mall/products", tag = "mall",
    security(("bearer" = [])),
    params(ProductPageQuery),
    responses(
        (status = 200, description = "One page", body = ProductList),
        (status = 400, description = "`invalid_query`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 422, description = "`invalid_limit`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id))]
pub async fn list_products(
    State(state): State<AppState>,
    auth: Authorized<perm::MallRead>,
    query: ApiQuery<ProductPageQuery>,
) -> Result<Json<ProductList>, ApiError> {
    let limit = page_limit(query.0.limit, PRODUCT_PAGE_MAX)?;
    let after = query.0.after.map(ProductId::from_uuid);
    let views = mall::list_products(&state.app, &auth.session.tenant_id, after, limit, false).await?;
    Ok(Json(ProductList { products: views.into_iter().map(Into::into).collect() }))
}

/// One product with its stock figures.
#[utoipa::path(get, path = "/admin/api/v1/mall/products/{product_id}", tag = "mall",
    security(("bearer" = [])),
    params(("product_id" = uuid::Uuid, Path)),
    responses(
        (status = 200, description = "The product", body = ProductDto),
        (status = 400, description = "`invalid_product_id`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`product_not_found`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, product_id = %id.0))]
pub async fn get_product(
    State(state): State<AppState>,
    auth: Authorized<perm::MallRead>,
    id: ApiPath<ProductId>,
) -> Result<Json<ProductDto>, ApiError> {
    Ok(Json(mall::get_product(&state.app, &auth.session.tenant_id, id.0).await?.into()))
}

async fn change(
    state: &AppState,
    ctx: &CommandContext,
    product_id: ProductId,
    command: ProductCommand,
) -> Result<Json<ProductDto>, ApiError> {
    Ok(Json(mall::change_product(&state.app, ctx, product_id, command).await?.into()))
}

/// Changes the name, description and images (orders keep the name they were placed with).
#[utoipa::path(put, path = "/admin/api/v1/mall/products/{product_id}/listing", tag = "mall",
    security(("bearer" = [])),
    params(("product_id" = uuid::Uuid, Path), ("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters")),
    request_body = ListingBody,
    responses(
        (status = 200, description = "Changed (or replayed)", body = ProductDto),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `invalid_product_id`, `malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`product_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_text`, `invalid_images`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, product_id = %id.0))]
pub async fn put_listing(
    State(state): State<AppState>,
    auth: Authorized<perm::MallSettings>,
    key: IdempotencyHeader,
    correlation: Correlation,
    id: ApiPath<ProductId>,
    body: ApiJson<ListingBody>,
) -> Result<Json<ProductDto>, ApiError> {
    let command = ProductCommand::EditListing { listing: body.0.validate()?, actor: auth.actor() };
    let ctx = auth.context(key.0, correlation);
    change(&state, &ctx, id.0, command).await
}

/// Sets the price of new orders (orders placed keep theirs).
#[utoipa::path(put, path = "/admin/api/v1/mall/products/{product_id}/price", tag = "mall",
    security(("bearer" = [])),
    params(("product_id" = uuid::Uuid, Path), ("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters")),
    request_body = PriceBody,
    responses(
        (status = 200, description = "Changed (or replayed)", body = ProductDto),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `invalid_product_id`, `malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`product_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_price`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, product_id = %id.0))]
pub async fn put_price(
    State(state): State<AppState>,
    auth: Authorized<perm::MallSettings>,
    key: IdempotencyHeader,
    correlation: Correlation,
    id: ApiPath<ProductId>,
    body: ApiJson<PriceBody>,
) -> Result<Json<ProductDto>, ApiError> {
    let command = ProductCommand::SetPrice { price: body.0.price.validate()?, actor: auth.actor() };
    let ctx = auth.context(key.0, correlation);
    change(&state, &ctx, id.0, command).await
}

/// Sets the stock (never below what is reserved and sold).
#[utoipa::path(put, path = "/admin/api/v1/mall/products/{product_id}/stock", tag = "mall",
    security(("bearer" = [])),
    params(("product_id" = uuid::Uuid, Path), ("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters")),
    request_body = ProductStockBody,
    responses(
        (status = 200, description = "Changed (or replayed)", body = ProductDto),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `invalid_product_id`, `malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`product_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`, `stock_below_committed`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_stock`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, product_id = %id.0))]
pub async fn put_stock(
    State(state): State<AppState>,
    auth: Authorized<perm::MallSettings>,
    key: IdempotencyHeader,
    correlation: Correlation,
    id: ApiPath<ProductId>,
    body: ApiJson<ProductStockBody>,
) -> Result<Json<ProductDto>, ApiError> {
    let command = ProductCommand::SetStock { stock: body.0.stock.validate()?, actor: auth.actor() };
    let ctx = auth.context(key.0, correlation);
    change(&state, &ctx, id.0, command).await
}

/// Sets or lifts the per-member limit.
#[utoipa::path(put, path = "/admin/api/v1/mall/products/{product_id}/member-limit", tag = "mall",
    security(("bearer" = [])),
    params(("product_id" = uuid::Uuid, Path), ("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters")),
    request_body = MemberLimitBody,
    responses(
        (status = 200, description = "Changed (or replayed)", body = ProductDto),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `invalid_product_id`, `malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`product_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_limit`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, product_id = %id.0))]
pub async fn put_member_limit(
    State(state): State<AppState>,
    auth: Authorized<perm::MallSettings>,
    key: IdempotencyHeader,
    correlation: Correlation,
    id: ApiPath<ProductId>,
    body: ApiJson<MemberLimitBody>,
) -> Result<Json<ProductDto>, ApiError> {
    let command = ProductCommand::SetMemberLimit { per_member_limit: body.0.validate()?, actor: auth.actor() };
    let ctx = auth.context(key.0, correlation);
    change(&state, &ctx, id.0, command).await
}

/// Sets the coupon template one coupon of which comes with every paid order
/// of the product, or none (null). Orders placed before keep their gift.
#[utoipa::path(put, path = "/admin/api/v1/mall/products/{product_id}/gift-coupon", tag = "mall",
    security(("bearer" = [])),
    params(("product_id" = uuid::Uuid, Path), ("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters")),
    request_body = GiftCouponBody,
    responses(
        (status = 200, description = "Changed (or replayed)", body = ProductDto),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `invalid_product_id`, `malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`product_not_found`, `template_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`", body = ErrorBody),
        (status = 422, description = "`invalid_body`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, product_id = %id.0))]
pub async fn put_gift_coupon(
    State(state): State<AppState>,
    auth: Authorized<perm::MallSettings>,
    key: IdempotencyHeader,
    correlation: Correlation,
    id: ApiPath<ProductId>,
    body: ApiJson<GiftCouponBody>,
) -> Result<Json<ProductDto>, ApiError> {
    let gift_coupon = body.0.template_id.map(TemplateId::from_uuid);
    let command = ProductCommand::SetGiftCoupon { gift_coupon, actor: auth.actor() };
    let ctx = auth.context(key.0, correlation);
    change(&state, &ctx, id.0, command).await
}

/// Sets the product's own commission terms, or none (null: the distributor's level or the
/// tenant's default rates apply). Rates: level 1 + level 2 ≤ 10,000 basis points. Fixed amounts
/// are per unit (× quantity), level 1 + level 2 at most the unit's cash price now (409
/// `commission_above_unit_price`); a commission never exceeds the cash the order paid for the
/// goods. Read when an order's commission accrues (right after payment).
#[utoipa::path(put, path = "/admin/api/v1/mall/products/{product_id}/commission", tag = "mall",
    security(("bearer" = [])),
    params(("product_id" = uuid::Uuid, Path), ("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters")),
    request_body = ProductCommissionBody,
    responses(
        (status = 200, description = "Changed (or replayed)", body = ProductDto),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `invalid_product_id`, `malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`product_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`, `commission_above_unit_price`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_rates`, `invalid_fen`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, product_id = %id.0))]
pub async fn put_commission(
    State(state): State<AppState>,
    auth: Authorized<perm::MallSettings>,
    key: IdempotencyHeader,
    correlation: Correlation,
    id: ApiPath<ProductId>,
    body: ApiJson<ProductCommissionBody>,
) -> Result<Json<ProductDto>, ApiError> {
    let commission = body.0.validate()?;
    let command = ProductCommand::SetCommission { commission, actor: auth.actor() };
    let ctx = auth.context(key.0, correlation);
    change(&state, &ctx, id.0, command).await
}

/// Puts the product on sale or takes it off (unpaid orders keep their stock).
#[utoipa::path(put, path = "/admin/api/v1/mall/products/{product_id}/on-sale", tag = "mall",
    security(("bearer" = [])),
    params(("product_id" = uuid::Uuid, Path), ("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters")),
    request_body = OnSaleBody,
    responses(
        (status = 200, description = "Changed (or replayed)", body = ProductDto),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `invalid_product_id`, `malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`product_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`, `unchanged`", body = ErrorBody),
        (status = 422, description = "`invalid_body`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, product_id = %id.0))]
pub async fn put_on_sale(
    State(state): State<AppState>,
    auth: Authorized<perm::MallSettings>,
    key: IdempotencyHeader,
    correlation: Correlation,
    id: ApiPath<ProductId>,
    body: ApiJson<OnSaleBody>,
) -> Result<Json<ProductDto>, ApiError> {
    let actor = auth.actor();
    let command =
        if body.0.on_sale { ProductCommand::PutOnSale { actor } } else { ProductCommand::TakeOffSale { actor } };
    let ctx = auth.context(key.0, correlation);
    change(&state, &ctx, id.0, command).await
}

// ---------------------------------------------------------------- admin: orders

/// Placed orders, newest first; optionally one member's.
#[utoipa::path(get, path = "/admin/api/v1/mall/orders", tag = "mall",
    security(("bearer" = [])),
    params(OrderPageQuery),
    responses(
        (status = 200, description = "One page", body = OrderList),
        (status = 400, description = "`invalid_query`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 422, description = "`invalid_limit`, `invalid_before`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id))]
pub async fn list_orders(
    State(state): State<AppState>,
    auth: Authorized<perm::MallRead>,
    query: ApiQuery<OrderPageQuery>,
) -> Result<Json<OrderList>, ApiError> {
    let limit = page_limit(query.0.limit, ORDER_PAGE_MAX)?;
    let before_no = page_before(query.0.before)?;
    let q = OrderQuery {
        member_id: query.0.member_id.map(MemberId::from_uuid),
        before_no,
        limit,
        refund_request: query.0.refund_request.map(Into::into),
    };
    let views = orders::list_orders(&state.app, &auth.session.tenant_id, &q).await?;
    Ok(Json(order_list(views, limit)))
}

/// One order.
#[utoipa::path(get, path = "/admin/api/v1/mall/orders/{mall_order_id}", tag = "mall",
    security(("bearer" = [])),
    params(("mall_order_id" = uuid::Uuid, Path)),
    responses(
        (status = 200, description = "The order", body = OrderDto),
        (status = 400, description = "`invalid_order_id`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`order_not_found`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, order_id = %id.0))]
pub async fn get_order(
    State(state): State<AppState>,
    auth: Authorized<perm::MallRead>,
    id: ApiPath<MallOrderId>,
) -> Result<Json<OrderDto>, ApiError> {
    Ok(Json(orders::get_order(&state.app, &auth.session.tenant_id, id.0).await?.into()))
}

/// Refunds a paid order: points and balance back, undelivered stock back.
/// (Orders paid through WeChat Pay cannot be placed yet.)
#[utoipa::path(post, path = "/admin/api/v1/mall/orders/{mall_order_id}/refund", tag = "mall",
    security(("bearer" = [])),
    params(("mall_order_id" = uuid::Uuid, Path), ("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters")),
    request_body = ReasonBody,
    responses(
        (status = 200, description = "Refunded (or replayed)", body = OrderDto),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `invalid_order_id`, `malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`order_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`, `not_paid`, `already_refunded`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_text`, `payment_method_unsupported`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, order_id = %id.0))]
pub async fn refund_order(
    State(state): State<AppState>,
    auth: Authorized<perm::MallRefund>,
    key: IdempotencyHeader,
    correlation: Correlation,
    id: ApiPath<MallOrderId>,
    body: ApiJson<ReasonBody>,
) -> Result<Json<OrderDto>, ApiError> {
    let reason = body.0.validate()?;
    let ctx = auth.context(key.0, correlation);
    Ok(Json(orders::refund(&state.app, &ctx, id.0, reason, auth.actor()).await?.into()))
}

/// Approves the order's open refund request (售后): the order is refunded as by
/// `…/refund`, and the refund names the request.
#[utoipa::path(post, path = "/admin/api/v1/mall/orders/{mall_order_id}/refund-request/approve", tag = "mall",
    security(("bearer" = [])),
    params(("mall_order_id" = uuid::Uuid, Path), ("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters")),
    responses(
        (status = 200, description = "Approved and refunded (or replayed)", body = OrderDto),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `invalid_order_id`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`order_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`, `no_refund_request`, `already_refunded`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, order_id = %id.0))]
pub async fn approve_refund_request(
    State(state): State<AppState>,
    auth: Authorized<perm::MallRefund>,
    key: IdempotencyHeader,
    correlation: Correlation,
    id: ApiPath<MallOrderId>,
) -> Result<Json<OrderDto>, ApiError> {
    let ctx = auth.context(key.0, correlation);
    Ok(Json(orders::approve_refund_request(&state.app, &ctx, id.0, auth.actor()).await?.into()))
}

/// Rejects the order's open refund request with a reason: the order stands,
/// its commissions settle (at once when the holding period is over).
#[utoipa::path(post, path = "/admin/api/v1/mall/orders/{mall_order_id}/refund-request/reject", tag = "mall",
    security(("bearer" = [])),
    params(("mall_order_id" = uuid::Uuid, Path), ("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters")),
    request_body = ReasonBody,
    responses(
        (status = 200, description = "Rejected (or replayed)", body = OrderDto),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `invalid_order_id`, `malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`order_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`, `no_refund_request`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_text`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, order_id = %id.0))]
pub async fn reject_refund_request(
    State(state): State<AppState>,
    auth: Authorized<perm::MallRefund>,
    key: IdempotencyHeader,
    correlation: Correlation,
    id: ApiPath<MallOrderId>,
    body: ApiJson<ReasonBody>,
) -> Result<Json<OrderDto>, ApiError> {
    let reason = body.0.validate()?;
    let ctx = auth.context(key.0, correlation);
    Ok(Json(orders::reject_refund_request(&state.app, &ctx, id.0, reason, auth.actor()).await?.into()))
}

/// Changes the cash an unpaid order costs (what the member pays after coupons): 1..=the order's
/// list cash (unit fen × quantity; 409 `price_above_list` beyond it). Only while the order awaits
/// payment and the member has not started paying: once paid 409 `order_paid_price_fixed`; once a
/// balance charge or a WeChat Pay order was started for it 409 `payment_started_price_fixed`
/// (WeChat Pay keeps the amount of a Pay order). The member then pays the new price, and the
/// order's commission is computed on the cash finally paid.
#[utoipa::path(post, path = "/admin/api/v1/mall/orders/{mall_order_id}/price", tag = "mall",
    security(("bearer" = [])),
    params(("mall_order_id" = uuid::Uuid, Path), ("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters")),
    request_body = OrderPriceBody,
    responses(
        (status = 200, description = "Changed (or replayed, or the same price: unchanged)", body = OrderDto),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `invalid_order_id`, `malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`order_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`, `order_paid_price_fixed`, `payment_started_price_fixed`, `order_ended`, `order_has_no_cash_part`, `price_above_list`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_text`, `invalid_fen`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, order_id = %id.0))]
pub async fn change_order_price(
    State(state): State<AppState>,
    auth: Authorized<perm::MallRefund>,
    key: IdempotencyHeader,
    correlation: Correlation,
    id: ApiPath<MallOrderId>,
    body: ApiJson<OrderPriceBody>,
) -> Result<Json<OrderDto>, ApiError> {
    let request = body.0.validate()?;
    let ctx = auth.context(key.0, correlation);
    Ok(Json(orders::change_price(&state.app, &ctx, id.0, request, auth.actor()).await?.into()))
}

/// Hands a paid order over at the counter: by its QR payload, its number or its
/// id. Once: a second delivery is refused.
#[utoipa::path(post, path = "/admin/api/v1/mall/deliveries", tag = "mall",
    security(("bearer" = [])),
    params(("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters")),
    request_body = DeliverBody,
    responses(
        (status = 200, description = "Delivered (or replayed)", body = OrderDto),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`order_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`, `already_delivered`, `already_refunded`, `not_paid`, `order_ended`, `other_tenant_order`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_order_no`, `invalid_text`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username))]
pub async fn deliver(
    State(state): State<AppState>,
    auth: Authorized<perm::MallDeliver>,
    key: IdempotencyHeader,
    correlation: Correlation,
    body: ApiJson<DeliverBody>,
) -> Result<Json<OrderDto>, ApiError> {
    let store = body.0.validate()?;
    let ctx = auth.context(key.0, correlation);
    Ok(Json(orders::deliver(&state.app, &ctx, &body.0.order, store, auth.actor()).await?.into()))
}

// ---------------------------------------------------------------- member API

/// Products on sale, in id order.
#[utoipa::path(get, path = "/m/api/v1/mall/products", tag = "member",
    security(("member_bearer" = [])),
    params(ProductPageQuery),
    responses(
        (status = 200, description = "Products on sale", body = ProductList),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
        (status = 422, description = "`invalid_limit`", body = ErrorBody),
    ))]
pub async fn member_products(
    State(state): State<AppState>,
    MemberAuth(session): MemberAuth,
    query: ApiQuery<ProductPageQuery>,
) -> Result<Json<ProductList>, ApiError> {
    let limit = page_limit(query.0.limit, PRODUCT_PAGE_MAX)?;
    let after = query.0.after.map(ProductId::from_uuid);
    let views = mall::list_products(&state.app, &session.tenant_id, after, limit, true).await?;
    Ok(Json(ProductList { products: views.into_iter().map(Into::into).collect() }))
}

/// Places an order: stock reserved, points held, until it is paid or expires.
///
/// The quoted unit price times the quantity is at most 100,000,000 points and fen
/// (422 `order_too_large` otherwise).
#[utoipa::path(post, path = "/m/api/v1/mall/orders", tag = "member",
    security(("member_bearer" = [])),
    params(("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters; the same key is the same order")),
    request_body = PlaceOrderBody,
    responses(
        (status = 201, description = "Placed (or replayed)", body = OrderDto),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `malformed_json`", body = ErrorBody),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
        (status = 404, description = "`product_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`, `sold_out`, `limit_reached`, `not_on_sale`, `price_changed`, `insufficient_points`, `order_abandoned`, `too_many_unpaid_orders`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_quantity`, `invalid_price`, `payment_method_unsupported`, `order_too_large`", body = ErrorBody),
        (status = 503, description = "`contention`", body = ErrorBody),
    ))]
pub async fn member_place_order(
    State(state): State<AppState>,
    auth: MemberAuth,
    key: IdempotencyHeader,
    body: ApiJson<PlaceOrderBody>,
) -> Result<(StatusCode, Json<OrderDto>), ApiError> {
    let request = body.0.validate()?;
    let (actor, ctx) = auth.command(key.0);
    let view = orders::place(&state.app, &ctx, auth.0.member_id, request, actor).await?;
    Ok((StatusCode::CREATED, Json(view.into())))
}

/// The member's own orders, newest first.
#[utoipa::path(get, path = "/m/api/v1/mall/orders", tag = "member",
    security(("member_bearer" = [])),
    params(MemberOrderPageQuery),
    responses(
        (status = 200, description = "The member's orders", body = OrderList),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
        (status = 422, description = "`invalid_limit`, `invalid_before`", body = ErrorBody),
    ))]
pub async fn member_orders(
    State(state): State<AppState>,
    MemberAuth(session): MemberAuth,
    query: ApiQuery<MemberOrderPageQuery>,
) -> Result<Json<OrderList>, ApiError> {
    let limit = page_limit(query.0.limit, ORDER_PAGE_MAX)?;
    let before_no = page_before(query.0.before)?;
    let q = OrderQuery { member_id: Some(session.member_id), before_no, limit, refund_request: None };
    let views = orders::list_orders(&state.app, &session.tenant_id, &q).await?;
    Ok(Json(order_list(views, limit)))
}

/// One of the member's own orders (another member's is not found).
#[utoipa::path(get, path = "/m/api/v1/mall/orders/{order_id}", tag = "member",
    security(("member_bearer" = [])),
    params(("order_id" = uuid::Uuid, Path)),
    responses(
        (status = 200, description = "The order", body = OrderDto),
        (status = 400, description = "`invalid_order_id`", body = ErrorBody),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
        (status = 404, description = "`order_not_found`", body = ErrorBody),
    ))]
pub async fn member_order(
    State(state): State<AppState>,
    MemberAuth(session): MemberAuth,
    id: ApiPath<MallOrderId>,
) -> Result<Json<OrderDto>, ApiError> {
    Ok(Json(orders::member_order(&state.app, &session.tenant_id, session.member_id, id.0).await?.into()))
}

/// Pays the member's order: the held points, and the cash part from the
/// balance. An order that ended before its payment arrived is not honoured:
/// the payment is refunded (`order_ended_payment_refunded`).
#[utoipa::path(post, path = "/m/api/v1/mall/orders/{order_id}/payment", tag = "member",
    security(("member_bearer" = [])),
    params(("order_id" = uuid::Uuid, Path), ("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters")),
    responses(
        (status = 200, description = "Paid (or already paid)", body = OrderDto),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `invalid_order_id`", body = ErrorBody),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
        (status = 404, description = "`order_not_found`", body = ErrorBody),
        (status = 409, description = "`order_ended`, `order_ended_payment_refunded`, `insufficient_balance`, `payment_method_mismatch` (a WeChat Pay order)", body = ErrorBody),
    ))]
pub async fn member_pay(
    State(state): State<AppState>,
    auth: MemberAuth,
    key: IdempotencyHeader,
    id: ApiPath<MallOrderId>,
) -> Result<Json<OrderDto>, ApiError> {
    let (actor, ctx) = auth.command(key.0);
    Ok(Json(orders::pay(&state.app, &ctx, id.0, actor).await?.into()))
}

/// Pays the cash part of the member's order with WeChat Pay: creates (or
/// finds again: one Pay order per order) the JSAPI order at Pay and returns
/// the parameters for `WeixinJSBridge.invoke('getBrandWCPayRequest')`. The
/// order is paid when Pay's notification arrives (and its held points are
/// spent then); a payment arriving after the order ended is refunded.
#[utoipa::path(post, path = "/m/api/v1/mall/orders/{order_id}/wechat-pay", tag = "member",
    security(("member_bearer" = [])),
    params(("order_id" = uuid::Uuid, Path), ("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters")),
    responses(
        (status = 200, description = "The order, its Pay order and the JSAPI parameters", body = WechatPayStartedDoc),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `invalid_order_id`", body = ErrorBody),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
        (status = 404, description = "`order_not_found`", body = ErrorBody),
        (status = 409, description = "`order_ended`, `member_api_unavailable` (no Pay port on this node), `payment_method_mismatch` (not a WeChat Pay order)", body = ErrorBody),
        (status = 422, description = "`pay_refused`", body = ErrorBody),
        (status = 503, description = "`unavailable`: WeChat Pay or the store cannot be reached; retry", body = ErrorBody),
    ))]
pub async fn member_wechat_pay(
    State(state): State<AppState>,
    MemberAuth(session): MemberAuth,
    _key: IdempotencyHeader,
    id: ApiPath<MallOrderId>,
    crate::extract::ClientIp(peer): crate::extract::ClientIp,
) -> Result<Json<serde_json::Value>, ApiError> {
    let pay = state.member.pay.clone().ok_or_else(crate::resources::member_api::unavailable)?;
    let request = mall::pay::StartPay {
        member_id: session.member_id,
        appid: session.appid.clone(),
        openid: session.openid.clone(),
        notify_base_url: state.member.notify_base_url.clone(),
        client_ip: peer.map_or_else(|| "127.0.0.1".to_owned(), |ip| ip.to_string()),
    };
    let started = mall::pay::start_wechat_pay(&state.app, pay.as_ref(), &session.tenant_id, id.0, &request).await?;
    let order: OrderDto = started.order.into();
    Ok(Json(serde_json::json!({ "order": order, "payment": started.payment, "pay_params": started.pay_params })))
}

/// What `POST …/wechat-pay` answers (documentation only).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct WechatPayStartedDoc {
    order: OrderDto,
    payment: crate::resources::payments::PaymentOrderDoc,
    pay_params: crate::resources::member_api::JsapiPayParamsDoc,
}

/// Asks for a refund of the member's paid or delivered order (售后), with a
/// reason: open until an admin approves (refunds) or rejects it. One request
/// open at a time, at most 5 per order.
#[utoipa::path(post, path = "/m/api/v1/mall/orders/{order_id}/refund-request", tag = "member",
    security(("member_bearer" = [])),
    params(("order_id" = uuid::Uuid, Path), ("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters")),
    request_body = ReasonBody,
    responses(
        (status = 200, description = "Requested (or replayed)", body = OrderDto),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `invalid_order_id`, `malformed_json`", body = ErrorBody),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
        (status = 404, description = "`order_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`, `not_paid`, `already_refunded`, `order_ended`, `refund_request_open`, `too_many_refund_requests`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_text`", body = ErrorBody),
    ))]
pub async fn member_request_refund(
    State(state): State<AppState>,
    auth: MemberAuth,
    key: IdempotencyHeader,
    id: ApiPath<MallOrderId>,
    body: ApiJson<ReasonBody>,
) -> Result<Json<OrderDto>, ApiError> {
    let reason = body.0.validate()?;
    let member = auth.0.member_id;
    let (_, ctx) = auth.command(key.0);
    Ok(Json(orders::request_refund_of_order(&state.app, &ctx, id.0, member, reason).await?.into()))
}

/// Cancels the member's unpaid order: stock and points go back.
#[utoipa::path(post, path = "/m/api/v1/mall/orders/{order_id}/cancel", tag = "member",
    security(("member_bearer" = [])),
    params(("order_id" = uuid::Uuid, Path), ("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters")),
    responses(
        (status = 200, description = "Cancelled (or replayed)", body = OrderDto),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `invalid_order_id`", body = ErrorBody),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
        (status = 404, description = "`order_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`, `already_paid`, `order_ended`", body = ErrorBody),
    ))]
pub async fn member_cancel(
    State(state): State<AppState>,
    auth: MemberAuth,
    key: IdempotencyHeader,
    id: ApiPath<MallOrderId>,
) -> Result<Json<OrderDto>, ApiError> {
    let (actor, ctx) = auth.command(key.0);
    let reason =
        wxcm_domain::Reference::parse("cancelled by the member").map_err(|e| ApiError::internal("mall order", &e))?;
    Ok(Json(orders::cancel(&state.app, &ctx, id.0, reason, actor).await?.into()))
}
