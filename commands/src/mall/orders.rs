//! Mall orders as processes over the product, the member ledger and the order.
//!
//! Placement: reserve the stock on the product (which decides sold out and
//! the per-member limit; the reservation's trigger indexes the order and
//! writes its expiry as due work, migration 0020), hold the points on the
//! member ledger (hold id [`MallOrderId::hold_id`]), place the order under the
//! request's key, record the hold on it. A step refused for good undoes the
//! earlier ones (release hold, release reservation); a step whose outcome is
//! unknown (store unavailable) undoes nothing: the expiry due work finds what
//! is left ([`settle`]).
//!
//! After the order decided (paid, expired, cancelled, paid late, refunded)
//! [`settle`] makes the other streams follow, each step under a key derived
//! from the order and the step, so it happens once however often settle runs
//! (inline after the member's call, and again from due work written with the
//! order's event, so a crash between the two finishes later).
//!
//! Policy for a payment that arrives after the order expired or was
//! cancelled: refunded, never honoured (the domain's `MallOrderPaymentArrivedLate`).
//! A balance charge is made under a key derived from the order, so an expiry
//! that finds the charge without a recorded payment records it as late and
//! refunds it: a crash between charge and record loses no money.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use tracing::{info, warn};
use uuid::Uuid;
use wxcm_domain::coupon::{CouponCommand, CouponError, CouponEvent, CouponId, TemplateId};
use wxcm_domain::mall::{
    AppliedCoupon, CashPayment, CashRefund, MallOrder, MallOrderCommand, MallOrderError, MallOrderEvent, MallOrderId,
    OrderRefund, OrderStatus, OrderTotals, PaymentMethod, PlacedOrder, Price, PriceChange, ProductCommand,
    ProductError, ProductId, Quantity, RefundRequest, RefundRequestStatus, ReleaseReason, PAY_WINDOW_MAX_MINUTES,
};
use wxcm_domain::member::{ExpiryPolicy, MemberCommand, MemberError, MemberEvent, PointsSource, Provenance};
use wxcm_domain::{Actor, AmountFen, EventSourced, IdempotencyKey, MemberId, PointsAmount, Reference, TenantId};

use super::pay::{pay_refund_no, request_refund, PayRefunds};
use super::{coupon_error, MallOpError, OrderEntry, OrderQuery, ORDER_PAGE_MAX, PAY_WINDOW_DEFAULT_MINUTES};
use crate::executor::{ExecuteError, Outcome};
use crate::members;
use crate::ports::{App, ShardServices};
use crate::CommandContext;

/// The prefix of an order's QR payload; the tenant is part of it, so an order
/// scanned at another merchant is refused as theirs.
pub const QR_PREFIX: &str = "wxcm:order:";

/// How the member pays the cash part (the points part is always the hold).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CashMethod {
    Balance,
    WechatPay,
}

/// What a member asks to buy (hashed for idempotency: no server-made values).
#[derive(Debug, Clone, Serialize)]
pub struct PlaceOrder {
    pub product_id: ProductId,
    pub quantity: Quantity,
    /// How the cash part is paid; needed only when the product costs fen.
    pub pay_with: Option<CashMethod>,
    /// The unit price the member saw; refused if the product's changed since.
    pub unit_price: Option<Price>,
    /// One of the member's coupons, taking its benefit off the cash part
    /// (held by the order until it is paid or ends).
    pub coupon_id: Option<CouponId>,
}

/// An order as admins, staff and its member see it.
#[derive(Debug, Clone, Serialize)]
pub struct OrderView {
    pub order_id: MallOrderId,
    pub order_no: i64,
    /// What the member's QR code holds: the tenant and the order.
    pub qr_payload: String,
    pub member_id: MemberId,
    pub product_id: ProductId,
    pub product_name: String,
    pub quantity: Quantity,
    pub unit_price: Price,
    /// The totals as placed.
    pub totals: OrderTotals,
    /// What the member pays in cash now: `totals.cash_due_fen`, or what an
    /// admin's price change set.
    pub cash_due_fen: i64,
    /// The last price change before payment.
    pub price_change: Option<PriceChange>,
    /// The member started paying: the price is fixed.
    pub payment_started: bool,
    pub coupon_id: Option<CouponId>,
    /// The coupon template the order comes with once paid, and the coupon it
    /// becomes (issued when the payment is settled; see the member's coupons).
    pub gift_coupon_template_id: Option<TemplateId>,
    pub gift_coupon_id: Option<CouponId>,
    pub method: PaymentMethod,
    pub status: OrderStatus,
    pub placed_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub points_held: bool,
    pub paid_at: Option<DateTime<Utc>>,
    pub cash_paid: Option<CashPayment>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub delivered_by: Option<String>,
    pub store: Option<String>,
    /// A payment that arrived after the order ended (refunded).
    pub late_payment: Option<CashPayment>,
    pub refund: Option<OrderRefund>,
    /// The latest refund request (售后), open or decided.
    pub refund_request: Option<RefundRequestView>,
}

/// A refund request as admins and its member see it.
#[derive(Debug, Clone, Serialize)]
pub struct RefundRequestView {
    pub request_no: u32,
    pub status: RefundRequestStatus,
    pub reason: String,
    pub requested_at: DateTime<Utc>,
    /// Who rejected or approved it.
    pub resolved_by: Option<String>,
    /// Why it was rejected.
    pub resolution: Option<String>,
    pub resolved_at: Option<DateTime<Utc>>,
}

impl From<&RefundRequest> for RefundRequestView {
    fn from(r: &RefundRequest) -> Self {
        Self {
            request_no: r.request_no,
            status: r.status,
            reason: r.reason.as_str().to_owned(),
            requested_at: r.requested_at,
            resolved_by: r.resolved_by.as_ref().map(Actor::label),
            resolution: r.resolution.as_ref().map(|x| x.as_str().to_owned()),
            resolved_at: r.resolved_at,
        }
    }
}

impl OrderView {
    fn of(order: &MallOrder, tenant: &TenantId, order_no: i64) -> Option<Self> {
        let placed = order.placed.as_deref().filter(|p| &p.tenant_id == tenant)?;
        let status = order.status?;
        Some(Self {
            order_id: placed.order_id,
            order_no,
            qr_payload: format!("{QR_PREFIX}{}:{}", placed.tenant_id, placed.order_id),
            member_id: placed.member_id,
            product_id: placed.product_id,
            product_name: placed.product_name.as_str().to_owned(),
            quantity: placed.quantity,
            unit_price: placed.unit_price,
            totals: placed.totals,
            cash_due_fen: order.cash_due_fen().unwrap_or(placed.totals.cash_due_fen),
            price_change: order.price_change.clone(),
            payment_started: order.payment_started,
            coupon_id: placed.coupon.as_ref().map(|c| c.coupon_id),
            gift_coupon_template_id: placed.gift_coupon,
            gift_coupon_id: placed
                .gift_coupon
                .map(|t| crate::coupons::gift_coupon_id(tenant, t, placed.member_id, placed.order_id)),
            method: placed.method,
            status,
            placed_at: placed.placed_at,
            expires_at: placed.expires_at,
            points_held: order.hold_id.is_some(),
            paid_at: order.payment.as_ref().map(|p| p.paid_at),
            cash_paid: order.payment.as_ref().and_then(|p| p.cash.clone()),
            delivered_at: order.delivery.as_ref().map(|d| d.delivered_at),
            delivered_by: order.delivery.as_ref().map(|d| d.actor.label()),
            store: order.delivery.as_ref().map(|d| d.store.as_str().to_owned()),
            late_payment: order.late_payment.as_ref().map(|l| l.cash.clone()),
            refund: order.refund.clone(),
            refund_request: order.refund_request.as_ref().map(Into::into),
        })
    }
}

fn infra(e: impl std::fmt::Display) -> MallOpError {
    MallOpError::Infra(e.to_string())
}

pub(super) fn text(s: &str) -> Result<Reference, MallOpError> {
    Reference::parse(s).map_err(infra)
}

/// The key of an order's balance charge: one charge per order, however often
/// payment is asked (an expiry that finds it unrecorded refunds it).
pub fn charge_key(order_id: MallOrderId) -> Result<IdempotencyKey, MallOpError> {
    step_key("charge", order_id)
}

pub(super) fn step_key(step: &str, order_id: MallOrderId) -> Result<IdempotencyKey, MallOpError> {
    Ok(members::system_key(&["mall-order", step, &order_id.to_string()])?)
}

/// The steps of one order's processes, each under a key derived from the
/// order and the step (so each happens once), counted when they wrote.
pub(super) struct Steps {
    shard: Arc<ShardServices>,
    tenant: TenantId,
    order_id: MallOrderId,
    correlation: Uuid,
    written: u32,
}

impl Steps {
    pub(super) fn new(
        app: &App,
        tenant: &TenantId,
        order_id: MallOrderId,
        correlation: Uuid,
    ) -> Result<Self, MallOpError> {
        Ok(Self { shard: app.router.route(tenant)?, tenant: tenant.clone(), order_id, correlation, written: 0 })
    }

    fn key(&self, step: &str) -> Result<IdempotencyKey, MallOpError> {
        step_key(step, self.order_id)
    }

    fn ctx(&self, step: &str, actor: &Actor) -> Result<CommandContext, MallOpError> {
        let mut ctx = CommandContext::new(self.tenant.clone(), self.key(step)?, actor.label());
        ctx.correlation_id = self.correlation;
        Ok(ctx)
    }

    fn count<E>(&mut self, outcome: &Outcome<E>) {
        if !outcome.replayed {
            self.written += outcome.events.len() as u32;
        }
    }

    async fn product(
        &mut self,
        step: &str,
        product_id: ProductId,
        command: ProductCommand,
    ) -> Result<Outcome<wxcm_domain::mall::ProductEvent>, ExecuteError<ProductError>> {
        let ctx = self.ctx(step, &system()).map_err(|e| ExecuteError::Store(e.to_string()))?;
        let request = serde_json::json!({ "mall_order": self.order_id, "step": step });
        let outcome = self.shard.products.execute(&product_id.to_string(), command, &request, &ctx).await?;
        self.count(&outcome);
        Ok(outcome)
    }

    async fn member(
        &mut self,
        step: &str,
        member_id: MemberId,
        actor: Actor,
        reason: &str,
        command: impl FnOnce(Provenance) -> MemberCommand,
    ) -> Result<Outcome<MemberEvent>, MallOpError> {
        let ctx = self.ctx(step, &actor)?;
        let provenance = Provenance {
            actor,
            reason: text(reason)?,
            reference: Some(text(&format!("mall-order:{}", self.order_id))?),
            idempotency_key: ctx.idempotency_key.clone(),
        };
        let request = serde_json::json!({ "mall_order": self.order_id, "step": step });
        let outcome = self.shard.members.execute(&member_id.to_string(), command(provenance), &request, &ctx).await;
        let outcome = outcome.map_err(crate::members::MemberOpError::from)?;
        self.count(&outcome);
        Ok(outcome)
    }

    async fn coupon(
        &mut self,
        step: &str,
        coupon_id: CouponId,
        command: CouponCommand,
    ) -> Result<Outcome<CouponEvent>, ExecuteError<CouponError>> {
        let ctx = self.ctx(step, &system()).map_err(|e| ExecuteError::Store(e.to_string()))?;
        let request = serde_json::json!({ "mall_order": self.order_id, "step": step });
        let outcome = self.shard.coupons.execute(&coupon_id.to_string(), command, &request, &ctx).await?;
        self.count(&outcome);
        Ok(outcome)
    }

    async fn order(
        &mut self,
        step: &str,
        command: MallOrderCommand,
    ) -> Result<Outcome<MallOrderEvent>, ExecuteError<MallOrderError>> {
        let ctx = self.ctx(step, &system()).map_err(|e| ExecuteError::Store(e.to_string()))?;
        let request = serde_json::json!({ "mall_order": self.order_id, "step": step, "command": &command });
        let outcome = self.shard.mall_orders.execute(&self.order_id.to_string(), command, &request, &ctx).await?;
        self.count(&outcome);
        Ok(outcome)
    }

    /// Ends the reservation (once): a reservation already ended is done.
    async fn release_stock(&mut self, product_id: ProductId, reason: ReleaseReason) -> Result<(), MallOpError> {
        let command = ProductCommand::Release { order_id: self.order_id, reason };
        match self.product("release-stock", product_id, command).await {
            Ok(_) | Err(ExecuteError::Domain(ProductError::ReservationNotOpen(_))) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Gives the held points back (once): a hold already ended is done.
    async fn release_points(&mut self, member_id: MemberId) -> Result<(), MallOpError> {
        let hold_id = self.order_id.hold_id();
        let released = self
            .member("release-points", member_id, system(), "mall order ended unpaid", |provenance| {
                MemberCommand::ReleaseHeldPoints { hold_id, provenance }
            })
            .await;
        match released {
            Ok(_) | Err(MallOpError::Member(MemberError::HoldNotFound(_))) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn system() -> Actor {
    Actor::System { job: "mall-orders".into() }
}

fn pay_window(app: &App) -> Duration {
    let minutes = app.limits.mall_pay_window_minutes;
    let minutes = if minutes > 0 { minutes.min(PAY_WINDOW_MAX_MINUTES) } else { PAY_WINDOW_DEFAULT_MINUTES };
    Duration::minutes(minutes)
}

/// The payment method of an order of `totals` paying its cash part `with`.
fn method_for(totals: &OrderTotals, with: Option<CashMethod>) -> Result<PaymentMethod, MallOpError> {
    let points = totals.points_total > 0;
    match (points, totals.cash_due_fen > 0, with) {
        (true, false, _) => Ok(PaymentMethod::PointsOnly),
        (_, true, None) => Err(MallOpError::Unsupported("this product costs fen: say how to pay (pay_with)")),
        (true, true, Some(CashMethod::WechatPay)) => Ok(PaymentMethod::PointsAndWechatPay),
        (false, true, Some(CashMethod::WechatPay)) => Ok(PaymentMethod::WechatPay),
        (true, true, Some(CashMethod::Balance)) => Ok(PaymentMethod::PointsAndBalance),
        (false, true, Some(CashMethod::Balance)) => Ok(PaymentMethod::Balance),
        (false, false, _) => Err(infra("an order with nothing to pay")),
    }
}

/// Places an order for `member_id`: the same key and request gives the same
/// order; never more than the stock nor the member's limit, however many
/// order at once.
pub async fn place(
    app: &App,
    ctx: &CommandContext,
    member_id: MemberId,
    request: PlaceOrder,
    actor: Actor,
) -> Result<OrderView, MallOpError> {
    let tenant = &ctx.tenant_id;
    let order_id = MallOrderId::for_request(tenant, member_id, &ctx.idempotency_key);
    let mut steps = Steps::new(app, tenant, order_id, ctx.correlation_id)?;
    let shard = steps.shard.clone();

    let (order, _) = shard.mall_orders.load(tenant, &order_id.to_string()).await?;
    if let Some(placed) = &order.placed {
        if &placed.tenant_id != tenant
            || placed.product_id != request.product_id
            || placed.quantity != request.quantity
            || placed.coupon.as_ref().map(|c| c.coupon_id) != request.coupon_id
        {
            return Err(MallOpError::IdempotencyMismatch);
        }
        // A repeated request: finish what the first may have left.
        record_hold(&mut steps, &order).await?;
        hold_coupon_or_cancel(app, &mut steps, &order).await?;
        return get_order(app, tenant, order_id).await;
    }
    if shard.event_log.find_idempotency(tenant, steps.key("release-stock")?.as_str()).await?.is_some() {
        return Err(MallOpError::Abandoned);
    }

    let now = app.clock.now();
    let (member, _) = shard.members.load(tenant, &member_id.to_string()).await.map_err(MallOpError::from)?;
    if member.tenant() != Some(tenant) {
        return Err(MallOpError::NotFound("member"));
    }
    let (product, _) = shard.products.load(tenant, &request.product_id.to_string()).await?;
    let state = product.created.as_ref().filter(|s| &s.tenant_id == tenant).ok_or(MallOpError::NotFound("product"))?;
    let unit_price = request.unit_price.unwrap_or(state.price);
    let coupon = match request.coupon_id {
        Some(coupon_id) => Some(usable_coupon(&shard, tenant, order_id, member_id, coupon_id, now).await?),
        None => None,
    };
    let benefit = coupon.as_ref().map(|c| &c.benefit);
    let totals = OrderTotals::compute(unit_price, request.quantity, benefit).map_err(MallOpError::Order)?;
    let method = method_for(&totals, request.pay_with)?;
    // Checked again by the hold; refusing here spares the product a
    // reservation and its release.
    let spendable = member.spendable_points(now);
    if totals.points_total > spendable {
        return Err(MallOpError::InsufficientPoints { spendable, needed: totals.points_total });
    }
    let product_name = state.listing.name.clone();
    let gift_coupon = state.gift_coupon;
    let expires_at = now + pay_window(app);

    let reserve = ProductCommand::Reserve { order_id, member_id, quantity: request.quantity, unit_price, expires_at };
    steps.product("reserve", request.product_id, reserve).await?;

    let points = PointsAmount::new(totals.points_total).ok();
    if let Some(points) = points {
        let hold_id = order_id.hold_id();
        let held = steps
            .member("hold-points", member_id, actor.clone(), "mall order", |provenance| MemberCommand::HoldPoints {
                hold_id,
                points,
                provenance,
            })
            .await;
        match held {
            Ok(_) => {}
            Err(MallOpError::Member(MemberError::InsufficientPoints { available, requested })) => {
                undo_placement(&mut steps, request.product_id, member_id).await;
                return Err(MallOpError::InsufficientPoints { spendable: available, needed: requested });
            }
            Err(e @ (MallOpError::Member(_) | MallOpError::NotFound(_))) => {
                undo_placement(&mut steps, request.product_id, member_id).await;
                return Err(e);
            }
            Err(e) => return Err(e),
        }
    }

    let place = MallOrderCommand::Place {
        order_id,
        tenant_id: tenant.clone(),
        member_id,
        product_id: request.product_id,
        product_name,
        quantity: request.quantity,
        unit_price,
        coupon,
        gift_coupon,
        method,
        expires_at,
        actor,
        idempotency_key: ctx.idempotency_key.clone(),
    };
    let hashed = serde_json::json!({ "place": &request, "member": member_id });
    match shard.mall_orders.execute(&order_id.to_string(), place, &hashed, ctx).await {
        Ok(_) => {}
        Err(e @ (ExecuteError::Domain(_) | ExecuteError::IdempotencyMismatch | ExecuteError::ForeignAggregate)) => {
            undo_placement(&mut steps, request.product_id, member_id).await;
            return Err(e.into());
        }
        Err(e) => return Err(e.into()),
    }
    let (order, _) = shard.mall_orders.load(tenant, &order_id.to_string()).await?;
    record_hold(&mut steps, &order).await?;
    hold_coupon_or_cancel(app, &mut steps, &order).await?;
    get_order(app, tenant, order_id).await
}

/// The coupon `coupon_id` as the order applies it, if the member may use it
/// on this order now (the coupon's own rules decide; the hold checks again).
async fn usable_coupon(
    shard: &ShardServices,
    tenant: &TenantId,
    order_id: MallOrderId,
    member_id: MemberId,
    coupon_id: CouponId,
    now: DateTime<Utc>,
) -> Result<AppliedCoupon, MallOpError> {
    let (coupon, _) = shard.coupons.load(tenant, &coupon_id.to_string()).await?;
    coupon.handle(CouponCommand::HoldForOrder { order_id, member_id }, now).map_err(coupon_error)?;
    let (issued, _) = coupon.issued.as_ref().ok_or(MallOpError::NotFound("coupon"))?;
    Ok(AppliedCoupon { coupon_id, benefit: issued.benefit.clone() })
}

/// Holds the order's coupon for it (once). A coupon no longer usable (used
/// or voided meanwhile) cancels the order, which gives everything back.
async fn hold_coupon_or_cancel(app: &App, steps: &mut Steps, order: &MallOrder) -> Result<(), MallOpError> {
    let Some(placed) = order.placed.as_deref() else { return Ok(()) };
    let Some(applied) = &placed.coupon else { return Ok(()) };
    if order.status != Some(OrderStatus::AwaitingPayment) {
        return Ok(());
    }
    let command = CouponCommand::HoldForOrder { order_id: placed.order_id, member_id: placed.member_id };
    match steps.coupon("hold-coupon", applied.coupon_id, command).await {
        Ok(_) => Ok(()),
        Err(ExecuteError::Domain(refusal)) => {
            let cancel = MallOrderCommand::Cancel { actor: system(), reason: text("the coupon is no longer usable")? };
            steps.order("cancel-coupon", cancel).await?;
            settle(app, &steps.tenant, placed.order_id, PayRefunds::Later).await?;
            Err(coupon_error(refusal))
        }
        Err(e) => Err(e.into()),
    }
}

/// What the order's payment or end does to its coupon (each once).
#[derive(Clone, Copy)]
enum CouponStep {
    Use,
    Release,
    Return,
}

async fn follow_coupon(steps: &mut Steps, order: &MallOrder, what: CouponStep) -> Result<(), MallOpError> {
    let Some(applied) = order.placed.as_deref().and_then(|p| p.coupon.as_ref()) else { return Ok(()) };
    let order_id = steps.order_id;
    let (step, command) = match what {
        CouponStep::Use => ("use-coupon", CouponCommand::UseOnOrder { order_id }),
        CouponStep::Release => ("release-coupon", CouponCommand::ReleaseFromOrder { order_id }),
        CouponStep::Return => ("return-coupon", CouponCommand::ReturnFromOrder { order_id }),
    };
    match steps.coupon(step, applied.coupon_id, command).await {
        Ok(_) => Ok(()),
        // Paid although the hold was lost (a crash between placement and the
        // hold, then the coupon used elsewhere): the discount stands, logged.
        Err(ExecuteError::Domain(CouponError::NotHeldByOrder(_))) => {
            warn!(%order_id, coupon = %applied.coupon_id, "a paid order's coupon was not held by it");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Records the order's points hold on the order (the ledger holds it since
/// placement).
async fn record_hold(steps: &mut Steps, order: &MallOrder) -> Result<(), MallOpError> {
    let (Some(placed), None) = (order.placed.as_deref(), &order.hold_id) else { return Ok(()) };
    let Ok(points) = PointsAmount::new(placed.totals.points_total) else { return Ok(()) };
    if order.status != Some(OrderStatus::AwaitingPayment) {
        return Ok(());
    }
    let command = MallOrderCommand::RecordPointsHeld { hold_id: steps.order_id.hold_id(), points };
    steps.order("record-hold", command).await?;
    Ok(())
}

/// Undoes a placement refused for good after the reservation: best effort;
/// what it cannot undo now the expiry due work does.
async fn undo_placement(steps: &mut Steps, product_id: ProductId, member_id: MemberId) {
    if let Err(e) = steps.release_points(member_id).await {
        warn!(order_id = %steps.order_id, error = %e, "could not release a failed order's points; expiry will");
    }
    if let Err(e) = steps.release_stock(product_id, ReleaseReason::Cancelled).await {
        warn!(order_id = %steps.order_id, error = %e, "could not release a failed order's stock; expiry will");
    }
}

/// The order, if it is `tenant`'s (and `member`'s, when a member asks).
pub(super) async fn load_placed(
    app: &App,
    tenant: &TenantId,
    order_id: MallOrderId,
    member: Option<MemberId>,
) -> Result<MallOrder, MallOpError> {
    let shard = app.router.route(tenant)?;
    let (order, _) = shard.mall_orders.load(tenant, &order_id.to_string()).await?;
    let placed = order.placed.as_deref().ok_or(MallOpError::NotFound("order"))?;
    // Another member's order is as unknown as another tenant's.
    if &placed.tenant_id != tenant || member.is_some_and(|m| m != placed.member_id) {
        return Err(MallOpError::NotFound("order"));
    }
    Ok(order)
}

/// Records the points hold on an order awaiting payment, if not yet (a
/// placement that died after holding).
pub(super) async fn ensure_hold_recorded(app: &App, tenant: &TenantId, order: &MallOrder) -> Result<(), MallOpError> {
    let Some(placed) = order.placed.as_deref() else { return Ok(()) };
    let mut steps = Steps::new(app, tenant, placed.order_id, Uuid::new_v4())?;
    record_hold(&mut steps, order).await
}

/// Holds the order's coupon for it, if not yet; a coupon no longer usable
/// cancels the order (see `hold_coupon_or_cancel`).
pub(super) async fn ensure_coupon_held(app: &App, tenant: &TenantId, order: &MallOrder) -> Result<(), MallOpError> {
    let Some(placed) = order.placed.as_deref() else { return Ok(()) };
    let mut steps = Steps::new(app, tenant, placed.order_id, Uuid::new_v4())?;
    hold_coupon_or_cancel(app, &mut steps, order).await
}

/// Records the order's cash payment (its `pay` step: once per order) and
/// returns the events written now (none when it was recorded before).
pub(super) async fn record_payment(
    app: &App,
    tenant: &TenantId,
    order_id: MallOrderId,
    cash: CashPayment,
    correlation: Uuid,
) -> Result<Vec<MallOrderEvent>, MallOpError> {
    let mut steps = Steps::new(app, tenant, order_id, correlation)?;
    let (order, _) = steps.shard.mall_orders.load(tenant, &order_id.to_string()).await?;
    if order.placed.is_none() {
        return Err(MallOpError::NotFound("order"));
    }
    record_hold(&mut steps, &order).await?;
    let outcome = steps.order("pay", MallOrderCommand::RecordPayment { cash: Some(cash) }).await?;
    Ok(if outcome.replayed { Vec::new() } else { outcome.events.into_iter().map(|e| e.event).collect() })
}

fn member_of(actor: &Actor) -> Option<MemberId> {
    match actor {
        Actor::Member { member_id } => Some(*member_id),
        Actor::Staff { .. } | Actor::Admin { .. } | Actor::System { .. } | Actor::Wechat { .. } => None,
    }
}

/// Pays an order awaiting payment: the held points, and the cash part from
/// the member's balance. Paying a paid order again changes nothing.
pub async fn pay(
    app: &App,
    ctx: &CommandContext,
    order_id: MallOrderId,
    actor: Actor,
) -> Result<OrderView, MallOpError> {
    let tenant = &ctx.tenant_id;
    let order = load_placed(app, tenant, order_id, member_of(&actor)).await?;
    let placed = order.placed.as_deref().ok_or(MallOpError::NotFound("order"))?.clone();
    let mut steps = Steps::new(app, tenant, order_id, ctx.correlation_id)?;
    match order.status {
        // Past its window the order is over even if the scheduler has not
        // expired it yet: expire it now rather than take a payment late.
        Some(OrderStatus::AwaitingPayment) if app.clock.now() >= placed.expires_at => {
            settle(app, tenant, order_id, PayRefunds::Later).await?;
            return Err(MallOpError::Order(MallOrderError::Ended(OrderStatus::Expired)));
        }
        Some(OrderStatus::AwaitingPayment) => {}
        Some(OrderStatus::Paid | OrderStatus::Delivered) => {
            settle(app, tenant, order_id, PayRefunds::Later).await?;
            return get_order(app, tenant, order_id).await;
        }
        Some(status) => return Err(MallOpError::Order(MallOrderError::Ended(status))),
        None => return Err(MallOpError::NotFound("order")),
    }
    record_hold(&mut steps, &order).await?;
    hold_coupon_or_cancel(app, &mut steps, &order).await?;
    let cash = match placed.method {
        PaymentMethod::PointsOnly => None,
        PaymentMethod::Balance | PaymentMethod::PointsAndBalance => {
            // Refused before the price is fixed when the balance cannot pay
            // it (the charge checks again): a failed attempt leaves the
            // price open to change.
            let due = order.cash_due_fen().unwrap_or(placed.totals.cash_due_fen);
            let (member, _) = steps.shard.members.load(tenant, &placed.member_id.to_string()).await?;
            if !order.payment_started && member.balance.get() < due {
                let balance_fen = member.balance.get();
                return Err(MallOpError::Member(MemberError::InsufficientBalance { balance_fen, requested_fen: due }));
            }
            // The price is fixed before any money moves (an admin's price
            // change and this payment meet at the order stream's version).
            let due = start_payment(&mut steps).await?;
            Some(charge_balance(&mut steps, placed.member_id, due, actor.clone()).await?)
        }
        PaymentMethod::WechatPay | PaymentMethod::PointsAndWechatPay => {
            return Err(MallOpError::PaymentMethodMismatch(
                "this order is paid with WeChat Pay: start it with POST …/wechat-pay",
            ))
        }
    };
    let outcome = steps.order("pay", MallOrderCommand::RecordPayment { cash }).await?;
    let late = outcome.events.iter().any(|e| matches!(e.event, MallOrderEvent::MallOrderPaymentArrivedLate { .. }));
    settle(app, tenant, order_id, PayRefunds::Later).await?;
    if late {
        return Err(MallOpError::PaidTooLate);
    }
    get_order(app, tenant, order_id).await
}

/// Records that the member starts paying (once; the price is fixed from
/// here) and returns the cash due, read back from the order after it.
pub(super) async fn start_payment(steps: &mut Steps) -> Result<i64, MallOpError> {
    steps.order("start-payment", MallOrderCommand::StartPayment).await?;
    let shard = steps.shard.clone();
    let (order, _) = shard.mall_orders.load(&steps.tenant, &steps.order_id.to_string()).await?;
    if !order.payment_started {
        return Err(infra("the order's payment did not start"));
    }
    order.cash_due_fen().ok_or(MallOpError::NotFound("order"))
}

/// What an admin's price change asks (hashed for idempotency).
#[derive(Debug, Clone, Serialize)]
pub struct PriceChangeRequest {
    /// The new cash due (what the member pays after coupons).
    pub cash_due_fen: AmountFen,
    pub reason: Reference,
}

/// An admin changes the cash an unpaid order costs (before the member
/// started paying). Refused once paid, or once a payment started: the
/// `MallOrderPaymentStarted` event, or — for orders from before that event
/// existed — a WeChat Pay order or a balance charge already made for it
/// (the Pay order's amount cannot change under its `out_trade_no`). The
/// accrued commission follows the cash finally paid.
pub async fn change_price(
    app: &App,
    ctx: &CommandContext,
    order_id: MallOrderId,
    request: PriceChangeRequest,
    actor: Actor,
) -> Result<OrderView, MallOpError> {
    let tenant = &ctx.tenant_id;
    let order = load_placed(app, tenant, order_id, None).await?;
    let shard = app.router.route(tenant)?;
    if order.status == Some(OrderStatus::AwaitingPayment) && !order.payment_started {
        let mut started = false;
        for key in [charge_key(order_id)?, step_key("wechat-pay-order", order_id)?] {
            started |= shard.event_log.find_idempotency(tenant, key.as_str()).await?.is_some();
        }
        if started {
            let due = order.cash_due_fen().unwrap_or_default();
            return Err(MallOpError::Order(MallOrderError::PaymentStarted(due)));
        }
    }
    let hashed = serde_json::json!({ "change_price": order_id, "request": &request });
    let command =
        MallOrderCommand::ChangePrice { cash_due_fen: request.cash_due_fen, actor, reason: request.reason.clone() };
    shard.mall_orders.execute(&order_id.to_string(), command, &hashed, ctx).await?;
    info!(%tenant, %order_id, cash_due_fen = request.cash_due_fen.get(), "mall order price changed");
    get_order(app, tenant, order_id).await
}

/// Charges the order's cash part to the balance, once per order.
async fn charge_balance(
    steps: &mut Steps,
    member_id: MemberId,
    amount_fen: i64,
    actor: Actor,
) -> Result<CashPayment, MallOpError> {
    let amount_fen = AmountFen::new(amount_fen).map_err(infra)?;
    let outcome = steps
        .member("charge", member_id, actor, "mall order", |provenance| MemberCommand::ChargeCash {
            amount_fen,
            provenance,
        })
        .await?;
    let charge_sequence = outcome
        .events
        .iter()
        .find(|e| matches!(e.event, MemberEvent::CashCharged { .. }))
        .map(|e| e.sequence)
        .ok_or_else(|| infra("a balance charge without its event"))?;
    Ok(CashPayment::Balance { amount_fen, charge_sequence })
}

/// The member (or an admin) cancels an unpaid order; stock and points go back.
pub async fn cancel(
    app: &App,
    ctx: &CommandContext,
    order_id: MallOrderId,
    reason: Reference,
    actor: Actor,
) -> Result<OrderView, MallOpError> {
    let tenant = &ctx.tenant_id;
    load_placed(app, tenant, order_id, member_of(&actor)).await?;
    let shard = app.router.route(tenant)?;
    let command = MallOrderCommand::Cancel { actor, reason };
    let request = serde_json::json!({ "cancel": order_id });
    shard.mall_orders.execute(&order_id.to_string(), command, &request, ctx).await?;
    settle(app, tenant, order_id, PayRefunds::Later).await?;
    get_order(app, tenant, order_id).await
}

/// The order a counter scanned or typed: its QR payload, its id or its number.
pub async fn scanned_order(app: &App, tenant: &TenantId, scanned: &str) -> Result<MallOrderId, MallOpError> {
    let scanned = scanned.trim();
    let invalid = || MallOpError::InvalidOrderNo(scanned.chars().take(64).collect());
    if let Some(rest) = scanned.strip_prefix(QR_PREFIX) {
        let (owner, id) = rest.split_once(':').ok_or_else(invalid)?;
        if owner != tenant.as_str() {
            return Err(MallOpError::OtherTenant);
        }
        return MallOrderId::parse(id).map_err(|_| invalid());
    }
    if !scanned.is_empty() && scanned.len() <= 18 && scanned.bytes().all(|b| b.is_ascii_digit()) {
        let no: i64 = scanned.parse().map_err(|_| invalid())?;
        let shard = app.router.route(tenant)?;
        let entry = shard.mall_store.order_by_no(tenant, no).await?;
        return entry.map(|e| e.order_id).ok_or(MallOpError::NotFound("order"));
    }
    MallOrderId::parse(scanned).map_err(|_| invalid())
}

/// Staff hand a paid order over at a store: once.
pub async fn deliver(
    app: &App,
    ctx: &CommandContext,
    scanned: &str,
    store: Reference,
    actor: Actor,
) -> Result<OrderView, MallOpError> {
    let tenant = &ctx.tenant_id;
    let order_id = scanned_order(app, tenant, scanned).await?;
    load_placed(app, tenant, order_id, None).await?;
    let shard = app.router.route(tenant)?;
    let request = serde_json::json!({ "deliver": order_id, "store": &store });
    let command = MallOrderCommand::Deliver { actor, store };
    shard.mall_orders.execute(&order_id.to_string(), command, &request, ctx).await?;
    get_order(app, tenant, order_id).await
}

/// Refunds a paid order (admin): points and balance back, undelivered stock back.
pub async fn refund(
    app: &App,
    ctx: &CommandContext,
    order_id: MallOrderId,
    reason: Reference,
    actor: Actor,
) -> Result<OrderView, MallOpError> {
    let tenant = &ctx.tenant_id;
    let order = load_placed(app, tenant, order_id, None).await?;
    // Paid by WeChat Pay: the order names the refund; the settle due work asks Pay.
    let by_pay = matches!(order.payment.as_ref().and_then(|p| p.cash.as_ref()), Some(CashPayment::WechatPay { .. }));
    let shard = app.router.route(tenant)?;
    let request = serde_json::json!({ "refund": order_id, "reason": &reason });
    let pay_refund_no = if by_pay { Some(pay_refund_no(order_id)?) } else { None };
    let command = MallOrderCommand::Refund { actor, reason, pay_refund_no };
    shard.mall_orders.execute(&order_id.to_string(), command, &request, ctx).await?;
    settle(app, tenant, order_id, PayRefunds::Later).await?;
    get_order(app, tenant, order_id).await
}

/// The member asks for a refund of their paid or delivered order (售后):
/// the request stays open until an admin approves (refunds) or rejects it;
/// meanwhile the order's commissions do not settle.
pub async fn request_refund_of_order(
    app: &App,
    ctx: &CommandContext,
    order_id: MallOrderId,
    member: MemberId,
    reason: Reference,
) -> Result<OrderView, MallOpError> {
    let tenant = &ctx.tenant_id;
    load_placed(app, tenant, order_id, Some(member)).await?;
    let shard = app.router.route(tenant)?;
    let request = serde_json::json!({ "request_refund": order_id, "reason": &reason });
    let command = MallOrderCommand::RequestRefund { actor: Actor::Member { member_id: member }, reason };
    shard.mall_orders.execute(&order_id.to_string(), command, &request, ctx).await?;
    info!(%tenant, order = %order_id, "refund requested");
    get_order(app, tenant, order_id).await
}

/// An admin refuses the open refund request, with a reason; the order stands
/// and its commissions settle (at once when the holding period is over).
pub async fn reject_refund_request(
    app: &App,
    ctx: &CommandContext,
    order_id: MallOrderId,
    reason: Reference,
    actor: Actor,
) -> Result<OrderView, MallOpError> {
    let tenant = &ctx.tenant_id;
    load_placed(app, tenant, order_id, None).await?;
    let shard = app.router.route(tenant)?;
    let request = serde_json::json!({ "reject_refund_request": order_id, "reason": &reason });
    let command = MallOrderCommand::RejectRefundRequest { actor, reason };
    shard.mall_orders.execute(&order_id.to_string(), command, &request, ctx).await?;
    info!(%tenant, order = %order_id, "refund request rejected");
    get_order(app, tenant, order_id).await
}

/// An admin approves the open refund request: the order is refunded (the
/// refund names the request it approves).
pub async fn approve_refund_request(
    app: &App,
    ctx: &CommandContext,
    order_id: MallOrderId,
    actor: Actor,
) -> Result<OrderView, MallOpError> {
    let tenant = &ctx.tenant_id;
    let order = load_placed(app, tenant, order_id, None).await?;
    // A replay of this key finds the request approved: let the refund replay it.
    let approved = order.refund_request.as_ref().is_some_and(|r| r.status == RefundRequestStatus::Approved);
    if order.open_refund_request().is_none() && !approved {
        return Err(MallOpError::Order(MallOrderError::NoRefundRequest));
    }
    refund(app, ctx, order_id, text("refund request approved")?, actor).await
}

/// Makes the product and the member ledger follow what the order decided
/// (and expires it when due). Idempotent: every step is keyed by order and
/// step, and a step whose effect is already there is done. Returns the
/// events written.
pub async fn settle(
    app: &App,
    tenant: &TenantId,
    order_id: MallOrderId,
    refunds: PayRefunds<'_>,
) -> Result<u32, MallOpError> {
    let mut steps = Steps::new(app, tenant, order_id, Uuid::new_v4())?;
    let shard = steps.shard.clone();
    let now = app.clock.now();
    let (mut order, _) = shard.mall_orders.load(tenant, &order_id.to_string()).await?;
    let Some(placed) = order.placed.clone() else {
        // Never placed: the reservation (and a hold) may be left from a
        // placement that died; swept once the reservation expired.
        let Some(entry) = shard.mall_store.order_entry(tenant, order_id).await? else { return Ok(0) };
        if now < entry.expires_at {
            return Err(MallOpError::Order(MallOrderError::NotYetDue(entry.expires_at)));
        }
        match steps.product("release-stock", entry.product_id, release(order_id, ReleaseReason::NotPlaced)).await {
            Ok(_)
            | Err(ExecuteError::Domain(
                ProductError::ReservationNotOpen(_) | ProductError::ReservationStillValid(..),
            )) => {}
            Err(e) => return Err(e.into()),
        }
        steps.release_points(entry.member_id).await?;
        return Ok(steps.written);
    };
    if &placed.tenant_id != tenant {
        return Err(MallOpError::NotFound("order"));
    }
    if order.status == Some(OrderStatus::AwaitingPayment) && now >= placed.expires_at {
        steps.order("expire", MallOrderCommand::Expire).await?;
        order = shard.mall_orders.load(tenant, &order_id.to_string()).await?.0;
    }
    let status = order.status.ok_or(MallOpError::NotFound("order"))?;
    let unpaid_end = |o: &MallOrder| o.payment.is_none();
    match status {
        OrderStatus::AwaitingPayment => {}
        OrderStatus::Paid | OrderStatus::Delivered => {
            sold(&mut steps, &placed.product_id, placed.member_id).await?;
            count_paid(&mut steps, &order, placed.member_id).await?;
            follow_coupon(&mut steps, &order, CouponStep::Use).await?;
            give_gift(app, &mut steps, &placed).await?;
        }
        OrderStatus::Expired | OrderStatus::Cancelled => {
            let reason = if status == OrderStatus::Expired { ReleaseReason::Expired } else { ReleaseReason::Cancelled };
            steps.release_stock(placed.product_id, reason).await?;
            steps.release_points(placed.member_id).await?;
            follow_coupon(&mut steps, &order, CouponStep::Release).await?;
            // A balance charge made for the order but never recorded on it
            // (the payer died, or the order ended in between): paid late.
            let charge_key = steps.key("charge")?;
            if let Some(record) = shard.event_log.find_idempotency(tenant, charge_key.as_str()).await? {
                let due = order.cash_due_fen().unwrap_or(placed.totals.cash_due_fen);
                let amount_fen = AmountFen::new(due).map_err(infra)?;
                let cash = CashPayment::Balance { amount_fen, charge_sequence: record.first_sequence };
                steps.order("pay", MallOrderCommand::RecordPayment { cash: Some(cash) }).await?;
                order = shard.mall_orders.load(tenant, &order_id.to_string()).await?.0;
                refund_late(app, &mut steps, &mut order, refunds).await?;
            }
        }
        OrderStatus::RefundDue => {
            let reason = if order.late_payment.as_ref().map(|l| l.after) == Some(wxcm_domain::mall::OrderEnd::Expired) {
                ReleaseReason::Expired
            } else {
                ReleaseReason::Cancelled
            };
            steps.release_stock(placed.product_id, reason).await?;
            steps.release_points(placed.member_id).await?;
            follow_coupon(&mut steps, &order, CouponStep::Release).await?;
            refund_late(app, &mut steps, &mut order, refunds).await?;
        }
        OrderStatus::Refunded => {
            if unpaid_end(&order) {
                // Refunded late payment: the release happened when it ended.
                steps.release_stock(placed.product_id, ReleaseReason::Expired).await?;
                steps.release_points(placed.member_id).await?;
                follow_coupon(&mut steps, &order, CouponStep::Release).await?;
            } else {
                sold(&mut steps, &placed.product_id, placed.member_id).await?;
                follow_coupon(&mut steps, &order, CouponStep::Use).await?;
                take_back_gift(&mut steps, &placed).await?;
                count_paid(&mut steps, &order, placed.member_id).await?;
                count_refunded(&mut steps, &order, placed.member_id).await?;
            }
            give_back(app, &mut steps, &order, placed.product_id, placed.member_id, refunds).await?;
        }
    }
    Ok(steps.written)
}

/// A paid order's gift coupon (once per order). A template sold out or
/// switched off meanwhile gives nothing: the order stands without it.
async fn give_gift(app: &App, steps: &mut Steps, placed: &PlacedOrder) -> Result<(), MallOpError> {
    let Some(template_id) = placed.gift_coupon else { return Ok(()) };
    crate::coupons::issue_with_order(app, &steps.tenant, template_id, placed.member_id, placed.order_id)
        .await
        .map_err(gift_error)?;
    Ok(())
}

/// A refunded order's gift coupon is voided while the member has not used
/// it; one already redeemed (or ended) stays as it is: the refund does not
/// claw back what the member consumed. Never issued after the refund: the
/// gift follows only a paid order's settlement.
async fn take_back_gift(steps: &mut Steps, placed: &PlacedOrder) -> Result<(), MallOpError> {
    let Some(template_id) = placed.gift_coupon else { return Ok(()) };
    let coupon_id = crate::coupons::gift_coupon_id(&steps.tenant, template_id, placed.member_id, placed.order_id);
    let shard = steps.shard.clone();
    let (coupon, _) = shard.coupons.load(&steps.tenant, &coupon_id.to_string()).await?;
    if coupon.issued.is_none() {
        return Ok(());
    }
    let void = CouponCommand::Void { reason: text("mall order refunded")?, actor: system() };
    match steps.coupon("void-gift-coupon", coupon_id, void).await {
        Ok(_) => Ok(()),
        Err(ExecuteError::Domain(
            CouponError::AlreadyRedeemed | CouponError::Voided | CouponError::Expired | CouponError::HeldByOrder(_),
        )) => {
            info!(order_id = %placed.order_id, %coupon_id, "a refunded order's gift coupon is used or ended; left as it is");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

fn gift_error(e: crate::coupons::CouponOpError) -> MallOpError {
    match e {
        crate::coupons::CouponOpError::Unavailable(why) => MallOpError::Unavailable(why),
        other => MallOpError::Infra(format!("gift coupon: {other}")),
    }
}

fn release(order_id: MallOrderId, reason: ReleaseReason) -> ProductCommand {
    ProductCommand::Release { order_id, reason }
}

/// A paid order's stock is sold and its held points spent (once).
async fn sold(steps: &mut Steps, product_id: &ProductId, member_id: MemberId) -> Result<(), MallOpError> {
    let order_id = steps.order_id;
    match steps.product("confirm-sale", *product_id, ProductCommand::ConfirmSale { order_id }).await {
        Ok(_) => {}
        Err(ExecuteError::Domain(ProductError::ReservationNotOpen(_))) => {
            warn!(%order_id, "a paid order's reservation was not open; nothing to confirm")
        }
        Err(e) => return Err(e.into()),
    }
    let hold_id = order_id.hold_id();
    let spent = steps
        .member("spend-points", member_id, system(), "mall order paid", |provenance| MemberCommand::SpendHeldPoints {
            hold_id,
            provenance,
        })
        .await;
    match spent {
        Ok(_) => Ok(()),
        // A points-free order has no hold.
        Err(MallOpError::Member(MemberError::HoldNotFound(_))) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The order refunds a payment that arrived after it ended (in full).
async fn refund_late(
    app: &App,
    steps: &mut Steps,
    order: &mut MallOrder,
    refunds: PayRefunds<'_>,
) -> Result<(), MallOpError> {
    if order.status == Some(OrderStatus::RefundDue) {
        let by_pay = order.late_payment.as_ref().is_some_and(|l| matches!(l.cash, CashPayment::WechatPay { .. }));
        let command = MallOrderCommand::Refund {
            actor: system(),
            reason: text("payment arrived after the order ended")?,
            pay_refund_no: if by_pay { Some(pay_refund_no(steps.order_id)?) } else { None },
        };
        steps.order("refund", command).await?;
        let shard = steps.shard.clone();
        *order = shard.mall_orders.load(&steps.tenant, &steps.order_id.to_string()).await?.0;
    }
    let (product_id, member_id) = match order.placed.as_deref() {
        Some(p) => (p.product_id, p.member_id),
        None => return Ok(()),
    };
    give_back(app, steps, order, product_id, member_id, refunds).await
}

/// Cash paid for the order by WeChat Pay, counted once in the member's total
/// paid (which the card level rule reads; a balance payment is counted by its
/// charge). A late payment, refunded and never honoured, is not counted.
async fn count_paid(steps: &mut Steps, order: &MallOrder, member_id: MemberId) -> Result<(), MallOpError> {
    let Some(CashPayment::WechatPay { amount_fen, .. }) = order.payment.as_ref().and_then(|p| p.cash.as_ref()) else {
        return Ok(());
    };
    let (amount_fen, payment) = (*amount_fen, text(&format!("mall-order:{}", steps.order_id))?);
    steps
        .member("paid-total", member_id, system(), "mall order paid", |provenance| MemberCommand::RecordPurchasePaid {
            amount_fen,
            payment,
            provenance,
        })
        .await?;
    Ok(())
}

/// A Pay refund of a paid order, taken off the member's total paid once
/// (after `count_paid`, so never more than was counted).
async fn count_refunded(steps: &mut Steps, order: &MallOrder, member_id: MemberId) -> Result<(), MallOpError> {
    let Some(CashRefund::WechatPay { amount_fen, .. }) = order.refund.as_ref().and_then(|r| r.cash_back.as_ref())
    else {
        return Ok(());
    };
    let (amount_fen, payment) = (*amount_fen, text(&format!("mall-order:{}", steps.order_id))?);
    steps
        .member("refund-total", member_id, system(), "mall order refunded", |provenance| {
            MemberCommand::RecordPurchaseRefunded { amount_fen, payment, provenance }
        })
        .await?;
    Ok(())
}

/// What a refund gives back, each once: points, balance, stock.
async fn give_back(
    app: &App,
    steps: &mut Steps,
    order: &MallOrder,
    product_id: ProductId,
    member_id: MemberId,
    refunds: PayRefunds<'_>,
) -> Result<(), MallOpError> {
    let Some(refund) = &order.refund else { return Ok(()) };
    if let Some(points) = refund.points_back {
        // The spent lots are gone; the points come back as a new lot that
        // does not expire (the member's loss is not theirs to carry).
        steps
            .member("refund-points", member_id, system(), "mall order refunded", |provenance| {
                MemberCommand::GrantPoints {
                    points,
                    source: PointsSource::Manual,
                    expiry: ExpiryPolicy::Never,
                    provenance,
                }
            })
            .await?;
    }
    match &refund.cash_back {
        Some(CashRefund::Balance { amount_fen, charge_sequence }) => {
            let (amount_fen, charge_sequence) = (*amount_fen, *charge_sequence);
            steps
                .member("refund-cash", member_id, system(), "mall order refunded", |provenance| {
                    MemberCommand::RefundCharge { charge_sequence, amount_fen, provenance }
                })
                .await?;
        }
        Some(CashRefund::WechatPay { amount_fen, refund_no, .. }) => {
            request_refund(app, &steps.tenant, steps.order_id, refund_no, *amount_fen, refunds).await?;
        }
        None => {}
    }
    if refund.coupon_back.is_some() {
        follow_coupon(steps, order, CouponStep::Return).await?;
    }
    if let Some(quantity) = refund.quantity_back {
        let order_id = steps.order_id;
        steps.product("return-stock", product_id, ProductCommand::ReturnSold { order_id, member_id, quantity }).await?;
    }
    Ok(())
}

pub async fn get_order(app: &App, tenant: &TenantId, order_id: MallOrderId) -> Result<OrderView, MallOpError> {
    let shard = app.router.route(tenant)?;
    let entry = shard.mall_store.order_entry(tenant, order_id).await?.ok_or(MallOpError::NotFound("order"))?;
    let (order, _) = shard.mall_orders.load(tenant, &order_id.to_string()).await?;
    OrderView::of(&order, tenant, entry.order_no).ok_or(MallOpError::NotFound("order"))
}

/// A member's own order (another member's is not found).
pub async fn member_order(
    app: &App,
    tenant: &TenantId,
    member_id: MemberId,
    order_id: MallOrderId,
) -> Result<OrderView, MallOpError> {
    let view = get_order(app, tenant, order_id).await?;
    if view.member_id != member_id {
        return Err(MallOpError::NotFound("order"));
    }
    Ok(view)
}

/// A page of placed orders, newest first, read from the event store through
/// the order index (an order is listed as soon as it is placed).
pub async fn list_orders(app: &App, tenant: &TenantId, query: &OrderQuery) -> Result<Vec<OrderView>, MallOpError> {
    let shard = app.router.route(tenant)?;
    let query = OrderQuery { limit: query.limit.clamp(1, ORDER_PAGE_MAX), ..query.clone() };
    let entries: Vec<OrderEntry> = shard.mall_store.orders(tenant, &query).await?;
    let mut views = Vec::with_capacity(entries.len());
    for entry in entries {
        let (order, _) = shard.mall_orders.load(tenant, &entry.order_id.to_string()).await?;
        views.extend(OrderView::of(&order, tenant, entry.order_no));
    }
    Ok(views)
}

/// Due work: an order's expiry or what its last event asks of other streams.
/// A Pay refund the order decided is asked for here (`refunds`).
pub async fn due(
    app: &App,
    tenant: &TenantId,
    order_id: MallOrderId,
    refunds: PayRefunds<'_>,
) -> Result<u32, MallOpError> {
    settle(app, tenant, order_id, refunds).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(points_total: i64, cash_due_fen: i64) -> OrderTotals {
        OrderTotals { points_total, cash_fen: cash_due_fen, discount_fen: 0, cash_due_fen }
    }

    #[test]
    fn the_method_follows_the_price_and_the_members_choice() {
        assert_eq!(method_for(&totals(100, 0), None).unwrap(), PaymentMethod::PointsOnly);
        assert_eq!(method_for(&totals(100, 0), Some(CashMethod::Balance)).unwrap(), PaymentMethod::PointsOnly);
        assert_eq!(method_for(&totals(0, 50), Some(CashMethod::Balance)).unwrap(), PaymentMethod::Balance);
        assert_eq!(method_for(&totals(10, 50), Some(CashMethod::Balance)).unwrap(), PaymentMethod::PointsAndBalance);
        assert!(matches!(method_for(&totals(0, 50), None), Err(MallOpError::Unsupported(_))));
        assert_eq!(method_for(&totals(0, 50), Some(CashMethod::WechatPay)).unwrap(), PaymentMethod::WechatPay);
        assert_eq!(
            method_for(&totals(10, 50), Some(CashMethod::WechatPay)).unwrap(),
            PaymentMethod::PointsAndWechatPay
        );
    }
}
