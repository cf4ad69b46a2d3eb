//! WeChat Pay for mall orders: the cash part of an order paid by JSAPI,
//! through the same payment orders, notifications, reconciliation and
//! expiry as balance recharges ([`crate::pay_flows`]).
//!
//! One mall order has one Pay order, `MallOrderId::pay_trade_no` (so a
//! repeated "pay" finds the same prepay at Pay, and a notification names its
//! mall order). The Pay order expires with the mall order. Before it is
//! created the order records `MallOrderPaymentStarted` for the cash due then:
//! an admin's price change after that is refused (Pay would keep the old
//! amount under the same `out_trade_no`; closing it could race a member
//! already paying in the Pay sheet).
//!
//! When Pay says "paid", the payment is recorded on the mall order under the
//! order's `pay` step key (once, however many notifications, queries and
//! scheduler passes say it). A payment arriving after the order expired or
//! was cancelled is refunded, never honoured (the policy of
//! [`super::orders`]): the order records the refund with its refund number
//! ([`pay_refund_no`]) and the request to Pay is made by the order's
//! settle due work, which the scheduler runs with the Pay client (Pay
//! refunds an `out_refund_no` once, however often it is asked). The
//! refund's notification is recorded on the payment order.

use serde::Serialize;
use uuid::Uuid;
use wxcm_domain::mall::{CashPayment, MallOrderEvent, MallOrderId, OrderStatus, PaymentMethod};
use wxcm_domain::member::Provenance;
use wxcm_domain::payment::{PaymentCommand, PaymentOrder, PaymentPurpose};
use wxcm_domain::{Actor, AmountFen, AppId, MemberId, OpenId, PayRef, Reference, TenantId};

use super::orders::{self, OrderView};
use super::MallOpError;
use crate::pay_flows::{self, Applied, PayFlowError};
use crate::pay_port::{JsapiOrderRequest, JsapiPayParams, PayGateway, RefundRequest};
use crate::payments::{self, PaymentView};
use crate::ports::App;

/// Who asks WeChat Pay for a refund a mall order decided.
#[derive(Clone, Copy)]
pub enum PayRefunds<'a> {
    /// Not here: the order's settle due work (written with the refund
    /// event) asks Pay.
    Later,
    /// Ask Pay now; its refund notification goes to `notify_base_url`.
    Now { pay: &'a dyn PayGateway, notify_base_url: &'a str },
    /// A scheduler without a Pay client: a refund due is an error (retried).
    Unavailable,
}

/// What the member's page needs to open WeChat Pay for an order.
#[derive(Debug, Clone, Serialize)]
pub struct StartedPay {
    pub order: OrderView,
    pub payment: PaymentView,
    pub pay_params: JsapiPayParams,
}

/// Input of [`start_wechat_pay`]: the member's session and this server.
#[derive(Debug, Clone)]
pub struct StartPay {
    pub member_id: MemberId,
    pub appid: AppId,
    pub openid: OpenId,
    /// Where this server is reached; Pay notifies `{base}/pay/notify/{v2|v3}/{appid}`.
    pub notify_base_url: String,
    pub client_ip: String,
}

/// The refund number of a mall order's Pay refund (one refund per order).
pub fn pay_refund_no(order_id: MallOrderId) -> Result<PayRef, MallOpError> {
    let trade_no = order_id.pay_trade_no();
    let digits =
        trade_no.as_str().strip_prefix("mo").ok_or_else(|| MallOpError::Infra("not a mall Pay order".into()))?;
    let refund_no = format!("rf{digits}");
    PayRef::parse(&refund_no).map_err(|e| MallOpError::Infra(e.to_string()))
}

/// Creates (or finds again) the Pay order of the member's order awaiting
/// payment and returns the JS-SDK parameters. Idempotent by the order:
/// asking again gives the same Pay order.
pub async fn start_wechat_pay(
    app: &App,
    pay: &dyn PayGateway,
    tenant: &TenantId,
    order_id: MallOrderId,
    request: &StartPay,
) -> Result<StartedPay, MallOpError> {
    let order = orders::load_placed(app, tenant, order_id, Some(request.member_id)).await?;
    let placed = order.placed.as_deref().ok_or(MallOpError::NotFound("order"))?.clone();
    if !matches!(placed.method, PaymentMethod::WechatPay | PaymentMethod::PointsAndWechatPay) {
        return Err(MallOpError::PaymentMethodMismatch("this order is not paid with WeChat Pay"));
    }
    match order.status {
        Some(OrderStatus::AwaitingPayment) if app.clock.now() >= placed.expires_at => {
            orders::settle(app, tenant, order_id, PayRefunds::Later).await?;
            return Err(MallOpError::Order(wxcm_domain::mall::MallOrderError::Ended(OrderStatus::Expired)));
        }
        Some(OrderStatus::AwaitingPayment) => {}
        Some(status) => return Err(MallOpError::Order(wxcm_domain::mall::MallOrderError::Ended(status))),
        None => return Err(MallOpError::NotFound("order")),
    }
    orders::ensure_hold_recorded(app, tenant, &order).await?;
    orders::ensure_coupon_held(app, tenant, &order).await?;
    // The price is fixed before the Pay order exists: Pay keeps an
    // `out_trade_no`'s amount, so an admin's price change after this is refused.
    let mut steps = orders::Steps::new(app, tenant, order_id, uuid::Uuid::new_v4())?;
    let due = orders::start_payment(&mut steps).await?;
    let amount_fen = AmountFen::new(due).map_err(|e| MallOpError::Infra(e.to_string()))?;
    let merchant = pay_flows::merchant_for(app, tenant, request.appid.as_str()).await?;
    let api = pay_flows::default_api(&merchant);
    let trade_no = order_id.pay_trade_no();
    let key = orders::step_key("wechat-pay-order", order_id)?;
    let reference = Reference::parse(&order_id.to_string()).map_err(|e| MallOpError::Infra(e.to_string()))?;
    let command = PaymentCommand::Create {
        order_id: trade_no.clone(),
        tenant_id: tenant.clone(),
        member_id: request.member_id,
        openid: request.openid.clone(),
        appid: request.appid.clone(),
        mch_id: PayRef::parse(&merchant.mch_id).map_err(|e| MallOpError::Infra(format!("mch_id: {e}")))?,
        purpose: PaymentPurpose::MallOrder,
        amount_fen,
        api_version: api,
        expires_at: placed.expires_at,
        provenance: Provenance {
            actor: Actor::Member { member_id: request.member_id },
            reason: orders::text("mall order")?,
            reference: Some(reference),
            idempotency_key: key.clone(),
        },
    };
    // The order decides everything; the first request's API and appid stand.
    let identity = (order_id, amount_fen.get());
    let ctx = crate::CommandContext::new(tenant.clone(), key, Actor::Member { member_id: request.member_id }.label());
    payments::execute(app, tenant, &trade_no, command, &identity, &ctx).await.map_err(PayFlowError::from)?;
    let payment = payments::get(app, tenant, &trade_no).await.map_err(PayFlowError::from)?;
    if payment.member_id != request.member_id {
        return Err(MallOpError::NotFound("order"));
    }
    let jsapi = JsapiOrderRequest {
        api: pay_flows::api_of(payment.api_version),
        out_trade_no: trade_no.to_string(),
        description: placed.product_name.as_str().chars().take(DESCRIPTION_CHARS_MAX).collect(),
        amount_fen: payment.amount_fen,
        payer_openid: payment.openid.to_string(),
        notify_url: pay_flows::notify_url(&request.notify_base_url, payment.api_version, &payment.appid),
        expires_at: payment.expires_at,
        client_ip: request.client_ip.clone(),
    };
    let pay_params = pay.create_jsapi_order(&merchant, &jsapi).await.map_err(pay_flows::pay_port_error)?;
    Ok(StartedPay { order: orders::get_order(app, tenant, order_id).await?, payment, pay_params })
}

/// Pay's limit for an order description is 127 bytes; product names are
/// shorter, but a description is never the reason a payment fails.
const DESCRIPTION_CHARS_MAX: usize = 40;

/// Records a paid Pay order on its mall order (once) and settles the order.
/// Called by the payment flows for a paid order of purpose `MallOrder`.
pub async fn record_wechat_payment(
    app: &App,
    tenant: &TenantId,
    payment: &PaymentOrder,
) -> Result<Applied, MallOpError> {
    let (Some(details), Some(paid)) = (payment.details(), payment.payment()) else {
        return Err(MallOpError::Infra("the payment order is not paid".into()));
    };
    let order_id = MallOrderId::from_pay_trade_no(&details.order_id).ok_or(MallOpError::NotFound("order"))?;
    let cash = CashPayment::WechatPay { amount_fen: details.amount_fen, transaction_id: paid.transaction_id.clone() };
    let outcome = orders::record_payment(app, tenant, order_id, cash, Uuid::new_v4()).await?;
    let late = outcome.iter().any(|e| matches!(e, MallOrderEvent::MallOrderPaymentArrivedLate { .. }));
    if late {
        tracing::warn!(%order_id, "a WeChat Pay payment arrived after the mall order ended; it is refunded");
    }
    orders::settle(app, tenant, order_id, PayRefunds::Later).await?;
    Ok(if outcome.is_empty() { Applied::AlreadyApplied } else { Applied::Applied })
}

/// Asks Pay to refund `amount_fen` of the order's Pay order under `refund_no`.
pub(super) async fn request_refund(
    app: &App,
    tenant: &TenantId,
    order_id: MallOrderId,
    refund_no: &PayRef,
    amount_fen: AmountFen,
    refunds: PayRefunds<'_>,
) -> Result<(), MallOpError> {
    let (pay, notify_base_url) = match refunds {
        PayRefunds::Later => return Ok(()),
        PayRefunds::Now { pay, notify_base_url } => (pay, notify_base_url),
        PayRefunds::Unavailable => {
            return Err(MallOpError::Pay(PayFlowError::Retry("no WeChat Pay client to ask for a refund".into())))
        }
    };
    let trade_no = order_id.pay_trade_no();
    let payment = payments::get(app, tenant, &trade_no).await.map_err(PayFlowError::from)?;
    let merchant = pay_flows::merchant_for(app, tenant, payment.appid.as_str()).await?;
    let refund = RefundRequest {
        api: pay_flows::api_of(payment.api_version),
        out_trade_no: trade_no.to_string(),
        out_refund_no: refund_no.to_string(),
        total_fen: payment.amount_fen,
        refund_fen: amount_fen.get(),
        notify_url: pay_flows::refund_notify_url(notify_base_url, payment.api_version, &payment.appid),
    };
    pay.refund(&merchant, &refund).await.map_err(pay_flows::pay_port_error)?;
    Ok(())
}
