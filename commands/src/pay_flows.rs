//! WeChat Pay flows: what a verified notification, a query answer or an
//! expired order does to a payment order and to the member's balance.
//!
//! Exactly once: `MarkPaid` is idempotent by state (the same transaction
//! again writes nothing); the credit runs with an idempotency key derived
//! from the order id alone, so however many notifications, queries and
//! scheduler passes ask for it, the ledger credits once. The credit is also
//! durable: migration 0011 writes a `payment_credit` due_work row in the same
//! transaction as `PaymentOrderPaid`, so when the process dies between the
//! two the scheduler finishes it ([`credit_paid_order`]). Refunds work the
//! same way (`payment_reversal`).

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use wxcm_domain::member::{MemberCommand, MemberError, Provenance};
use wxcm_domain::payment::{
    CloseReason, PaidVia, PayApiVersion, PaymentCommand, PaymentError, PaymentOrder, PaymentPurpose, PaymentStatus,
};
use wxcm_domain::tenant::{PaySettings, Tenant};
use wxcm_domain::{
    Actor, AmountFen, AppId, EventSourced, IdempotencyKey, MemberId, OpenId, OutTradeNo, PayRef, Reference, TenantId,
};

use crate::executor::CommandContext;
use crate::members::{self, system_key, MemberOpError};
use crate::pay_port::{JsapiOrderRequest, JsapiPayParams, MerchantCredentials, PayApi, PayGateway, RemoteTradeState};
use crate::payments::{self, PaymentOpError, PaymentView};
use crate::ports::{App, PortError};

/// How long a recharge order can be paid.
pub const RECHARGE_EXPIRY_MINUTES: i64 = 15;
/// Notifications shown per order.
pub const NOTIFICATIONS_PER_ORDER_MAX: u32 = 100;
/// Orders per page of a listing.
pub const ORDERS_PAGE_MAX: u32 = 200;
/// Orders one reconciliation run looks at.
pub const RECONCILE_ORDERS_MAX: u32 = 10_000;
const JOB: &str = "payments";

#[derive(Debug, thiserror::Error)]
pub enum PayFlowError {
    /// The input can never be applied (mismatch, unknown order): retrying does not help.
    #[error("refused: {0}")]
    Refused(String),
    /// Something on our side or at Pay failed; the same input may succeed later.
    #[error("temporarily failed: {0}")]
    Retry(String),
}

impl PayFlowError {
    pub fn is_permanent(&self) -> bool {
        matches!(self, PayFlowError::Refused(_))
    }
}

impl From<PaymentOpError> for PayFlowError {
    fn from(e: PaymentOpError) -> Self {
        match e {
            PaymentOpError::NotFound
            | PaymentOpError::Rejected(_)
            | PaymentOpError::Invalid(_)
            | PaymentOpError::IdempotencyMismatch => PayFlowError::Refused(e.to_string()),
            PaymentOpError::Contention | PaymentOpError::Route(_) | PaymentOpError::Infra(_) => {
                PayFlowError::Retry(e.to_string())
            }
        }
    }
}

impl From<MemberOpError> for PayFlowError {
    fn from(e: MemberOpError) -> Self {
        match e {
            MemberOpError::NotFound | MemberOpError::Rejected(_) | MemberOpError::IdempotencyMismatch => {
                PayFlowError::Refused(e.to_string())
            }
            other => PayFlowError::Retry(other.to_string()),
        }
    }
}

impl From<PortError> for PayFlowError {
    fn from(e: PortError) -> Self {
        PayFlowError::Retry(e.to_string())
    }
}

/// Where a notification came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyChannel {
    V2,
    V3,
    RefundV2,
}

impl NotifyChannel {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyChannel::V2 => "v2",
            NotifyChannel::V3 => "v3",
            NotifyChannel::RefundV2 => "refund_v2",
        }
    }
}

/// One received notification, verified or not, as recorded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NotificationRecord {
    pub appid: String,
    pub tenant_id: Option<String>,
    pub order_id: Option<String>,
    pub channel: NotifyChannel,
    pub verified: bool,
    /// `applied`, `duplicate`, `refused`, `retry`.
    pub outcome: String,
    pub detail: String,
    /// Decoded, non-secret fields (transaction id, totals, event type).
    pub summary: serde_json::Value,
    pub received_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSession {
    pub tenant_id: TenantId,
    pub member_id: MemberId,
    pub appid: AppId,
    pub openid: OpenId,
    pub expires_at: DateTime<Utc>,
}

/// The payment tables of a shard (migration 0011).
#[async_trait]
pub trait PayStore: Send + Sync {
    async fn record_notification(&self, record: &NotificationRecord) -> Result<(), PortError>;
    /// Newest first, at most `limit`.
    async fn notifications(
        &self,
        tenant: &TenantId,
        order_id: &str,
        limit: u32,
    ) -> Result<Vec<NotificationRecord>, PortError>;
    /// The PEM public key of the platform certificate `serial` of merchant `mch_id`.
    async fn platform_key(&self, mch_id: &str, serial: &str) -> Result<Option<String>, PortError>;
    async fn put_platform_key(&self, mch_id: &str, serial: &str, public_key_pem: &str) -> Result<(), PortError>;
    /// Order ids of a tenant by id, optionally in one status, after `after`.
    async fn order_ids(
        &self,
        tenant: &TenantId,
        status: Option<PaymentStatus>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, PortError>;
    async fn create_member_session(&self, token_hash: &[u8], session: &MemberSession) -> Result<(), PortError>;
    async fn find_member_session(&self, token_hash: &[u8]) -> Result<Option<MemberSession>, PortError>;
}

/// What a verified notification or a query says about a payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PaidReport {
    pub transaction_id: String,
    pub total_fen: i64,
    pub appid: String,
    pub mch_id: String,
    pub paid_at: DateTime<Utc>,
    #[serde(skip)]
    pub via: PaidVia,
    #[serde(skip)]
    pub notification_id: Option<String>,
}

/// A successful refund as Pay reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefundReport {
    pub out_refund_no: String,
    pub refund_id: String,
    pub refund_fen: i64,
    /// The order total as Pay reports it; must equal the order's.
    pub total_fen: i64,
    pub mch_id: String,
    pub succeeded_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Applied {
    /// This call changed the order or the balance.
    Applied,
    /// Everything it asks for was already done.
    AlreadyApplied,
}

fn bad(what: &str, e: impl std::fmt::Display) -> PayFlowError {
    PayFlowError::Refused(format!("{what}: {e}"))
}

fn infra(e: MemberOpError) -> PayFlowError {
    PayFlowError::Retry(e.to_string())
}

fn system_ctx(tenant: &TenantId, key: IdempotencyKey) -> CommandContext {
    CommandContext::new(tenant.clone(), key, format!("system:{JOB}"))
}

fn provenance(reason: &str, reference: &str, key: &IdempotencyKey) -> Result<Provenance, PayFlowError> {
    Ok(Provenance {
        actor: Actor::System { job: JOB.into() },
        reason: Reference::parse(reason).map_err(|e| bad("reason", e))?,
        reference: Some(Reference::parse(reference).map_err(|e| bad("reference", e))?),
        idempotency_key: key.clone(),
    })
}

async fn load_order(app: &App, tenant: &TenantId, order_id: &OutTradeNo) -> Result<PaymentOrder, PayFlowError> {
    let shard = app.router.route(tenant).map_err(|e| PayFlowError::Retry(e.to_string()))?;
    let (state, _) = shard.payments.load(order_id.as_str()).await?;
    if state.tenant() != Some(tenant) {
        return Err(PayFlowError::Refused(format!("order {order_id} not found in this tenant")));
    }
    Ok(state)
}

/// Marks the order paid (once) and credits the member (once).
pub async fn apply_paid(
    app: &App,
    tenant: &TenantId,
    order_id: &OutTradeNo,
    report: &PaidReport,
) -> Result<Applied, PayFlowError> {
    let order = load_order(app, tenant, order_id).await?;
    let already_paid = order.payment().is_some_and(|p| p.transaction_id.as_str() == report.transaction_id);
    let command = PaymentCommand::MarkPaid {
        transaction_id: PayRef::parse(&report.transaction_id).map_err(|e| bad("transaction_id", e))?,
        total_fen: report.total_fen,
        appid: AppId::parse(&report.appid).map_err(|e| bad("appid", e))?,
        mch_id: PayRef::parse(&report.mch_id).map_err(|e| bad("mch_id", e))?,
        paid_at: report.paid_at,
        via: report.via,
        notification_id: report.notification_id.as_deref().map(PayRef::parse).transpose().map_err(|e| bad("id", e))?,
    };
    // The key names what must match, so a differing report is checked by the domain
    // instead of replaying an earlier answer; the request is the same fields.
    let total = report.total_fen.to_string();
    let key =
        system_key(&["pay-paid", order_id.as_str(), &report.transaction_id, &total, &report.appid, &report.mch_id])
            .map_err(infra)?;
    let identity = (order_id.as_str(), &report.transaction_id, report.total_fen, &report.appid, &report.mch_id);
    let outcome = payments::execute(app, tenant, order_id, command, &identity, &system_ctx(tenant, key)).await?;
    let marked = !outcome.replayed && !outcome.events.is_empty();
    let credited = credit_paid_order(app, tenant, order_id).await?;
    Ok(if marked || credited == Applied::Applied || !already_paid { Applied::Applied } else { Applied::AlreadyApplied })
}

fn credit_key(order_id: &OutTradeNo) -> Result<IdempotencyKey, PayFlowError> {
    system_key(&["pay-credit", order_id.as_str()]).map_err(infra)
}

/// Credits the member for a paid recharge order; a no-op when already
/// credited (the key derives from the order id) or when the order is not paid.
pub async fn credit_paid_order(app: &App, tenant: &TenantId, order_id: &OutTradeNo) -> Result<Applied, PayFlowError> {
    let order = load_order(app, tenant, order_id).await?;
    let (Some(details), Some(_)) = (order.details(), order.payment()) else {
        return Err(PayFlowError::Refused(format!("order {order_id} is not paid")));
    };
    if details.purpose != PaymentPurpose::BalanceRecharge {
        return Ok(Applied::AlreadyApplied);
    }
    let key = credit_key(order_id)?;
    let command = MemberCommand::CreditRecharge {
        amount_fen: details.amount_fen,
        order_id: Reference::parse(order_id.as_str()).map_err(|e| bad("order id", e))?,
        provenance: provenance("wechat pay recharge", order_id.as_str(), &key)?,
    };
    let outcome =
        members::execute(app, tenant, details.member_id, command.clone(), &command, &system_ctx(tenant, key)).await?;
    Ok(if outcome.replayed || outcome.events.is_empty() { Applied::AlreadyApplied } else { Applied::Applied })
}

/// Records a successful refund on the order (once) and reverses the credit (once;
/// flagged for an operator instead of going negative when the balance is short).
pub async fn apply_refund(
    app: &App,
    tenant: &TenantId,
    order_id: &OutTradeNo,
    report: &RefundReport,
) -> Result<Applied, PayFlowError> {
    let order = load_order(app, tenant, order_id).await?;
    let Some(details) = order.details() else {
        return Err(PayFlowError::Refused(format!("order {order_id} not found")));
    };
    if report.total_fen != details.amount_fen.get() {
        return Err(PayFlowError::Refused(format!(
            "refund names total {} fen, the order is {} fen",
            report.total_fen,
            details.amount_fen.get()
        )));
    }
    if report.mch_id != details.mch_id.as_str() {
        return Err(PayFlowError::Refused(format!("refund is for merchant {}", report.mch_id)));
    }
    let command = PaymentCommand::RecordRefund {
        refund_no: PayRef::parse(&report.out_refund_no).map_err(|e| bad("out_refund_no", e))?,
        refund_id: PayRef::parse(&report.refund_id).map_err(|e| bad("refund_id", e))?,
        amount_fen: AmountFen::new(report.refund_fen).map_err(|e| bad("refund amount", e))?,
        succeeded_at: report.succeeded_at,
    };
    let refund_fen = report.refund_fen.to_string();
    let key = system_key(&["pay-refund", order_id.as_str(), &report.out_refund_no, &report.refund_id, &refund_fen])
        .map_err(infra)?;
    let identity = (order_id.as_str(), &report.out_refund_no, &report.refund_id, report.refund_fen);
    let outcome = payments::execute(app, tenant, order_id, command, &identity, &system_ctx(tenant, key)).await?;
    let recorded = !outcome.replayed && !outcome.events.is_empty();
    let reversed = reverse_refunds(app, tenant, order_id).await?;
    Ok(if recorded || reversed > 0 { Applied::Applied } else { Applied::AlreadyApplied })
}

/// Reverses every refund recorded on the order that the ledger has not
/// reversed yet; returns how many reversals this call wrote.
pub async fn reverse_refunds(app: &App, tenant: &TenantId, order_id: &OutTradeNo) -> Result<u32, PayFlowError> {
    let order = load_order(app, tenant, order_id).await?;
    let Some(details) = order.details() else {
        return Ok(0);
    };
    if details.purpose != PaymentPurpose::BalanceRecharge {
        return Ok(0);
    }
    let mut written = 0;
    for (refund_no, refund) in order.refunds() {
        let key = system_key(&["pay-reverse", order_id.as_str(), refund_no]).map_err(infra)?;
        let command = MemberCommand::ReverseRecharge {
            order_id: Reference::parse(order_id.as_str()).map_err(|e| bad("order id", e))?,
            refund_no: Reference::parse(refund_no).map_err(|e| bad("refund no", e))?,
            amount_fen: refund.amount_fen,
            provenance: provenance("wechat pay refund", order_id.as_str(), &key)?,
        };
        let ctx = system_ctx(tenant, key);
        match members::execute(app, tenant, details.member_id, command.clone(), &command, &ctx).await {
            Ok(outcome) => {
                if !outcome.replayed && !outcome.events.is_empty() {
                    written += 1;
                }
            }
            // The credit is still due (crash between paid and credited): credit first, then reverse.
            Err(MemberOpError::Rejected(MemberError::RechargeNotFound(_))) => {
                credit_paid_order(app, tenant, order_id).await?;
                let outcome = members::execute(app, tenant, details.member_id, command.clone(), &command, &ctx).await?;
                if !outcome.replayed && !outcome.events.is_empty() {
                    written += 1;
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(written)
}

/// The tenant's merchant settings for `appid`, secrets opened.
pub async fn merchant_for(app: &App, tenant: &TenantId, appid: &str) -> Result<MerchantCredentials, PayFlowError> {
    let shard = app.router.route(tenant).map_err(|e| PayFlowError::Retry(e.to_string()))?;
    let (state, _): (Tenant, u64) = shard.tenants.load(tenant.as_str()).await?;
    let account = state
        .accounts
        .get(appid)
        .ok_or_else(|| PayFlowError::Refused(format!("appid {appid} is not bound to this tenant")))?;
    let pay: &PaySettings =
        account.pay.as_ref().ok_or_else(|| PayFlowError::Refused(format!("appid {appid} has no pay settings")))?;
    let open = |s: &Option<wxcm_domain::tenant::SealedSecret>| -> Result<Option<String>, PayFlowError> {
        s.as_ref().map(|s| app.sealer.open(s)).transpose().map_err(PayFlowError::from)
    };
    Ok(MerchantCredentials {
        appid: appid.to_owned(),
        mch_id: pay.mch_id.clone(),
        api_v2_key: open(&pay.api_v2_key)?,
        api_v3_key: open(&pay.api_v3_key)?,
        merchant_cert_serial: pay.merchant_cert_serial.clone(),
        merchant_private_key_pem: open(&pay.merchant_private_key)?,
    })
}

fn api_of(v: PayApiVersion) -> PayApi {
    match v {
        PayApiVersion::V2 => PayApi::V2,
        PayApiVersion::V3 => PayApi::V3,
    }
}

/// What reconciling one order found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum Reconciled {
    /// Paid (now or before) and credited.
    Paid,
    /// Closed (now or before).
    Closed,
    /// Still open at Pay and not yet expired, or Pay is undecided; ask later.
    Open { detail: String },
}

/// Asks Pay about an order and applies the answer through the same commands
/// as a notification: paid → mark paid and credit; not paid after expiry →
/// close at Pay, then close here.
pub async fn reconcile_order(
    app: &App,
    pay: &dyn PayGateway,
    tenant: &TenantId,
    order_id: &OutTradeNo,
) -> Result<Reconciled, PayFlowError> {
    let order = load_order(app, tenant, order_id).await?;
    let details =
        order.details().cloned().ok_or_else(|| PayFlowError::Refused(format!("order {order_id} not found")))?;
    match order.status() {
        Some(PaymentStatus::Paid) => {
            credit_paid_order(app, tenant, order_id).await?;
            reverse_refunds(app, tenant, order_id).await?;
            return Ok(Reconciled::Paid);
        }
        Some(PaymentStatus::Closed) => return Ok(Reconciled::Closed),
        _ => {}
    }
    let merchant = merchant_for(app, tenant, details.appid.as_str()).await?;
    let api = api_of(details.api_version);
    let state =
        pay.query_order(&merchant, api, order_id.as_str()).await.map_err(|e| PayFlowError::Retry(e.to_string()))?;
    let expired = app.clock.now() >= details.expires_at;
    let close = |reason: CloseReason| async move {
        let key = system_key(&["pay-close", order_id.as_str()]).map_err(infra)?;
        let command = PaymentCommand::Close { reason };
        match payments::execute(app, tenant, order_id, command, &order_id.as_str(), &system_ctx(tenant, key)).await {
            Ok(_) => Ok(Reconciled::Closed),
            // Paid meanwhile (a notification won the race): that is the answer.
            Err(PaymentOpError::Rejected(PaymentError::AlreadyPaid)) => {
                credit_paid_order(app, tenant, order_id).await?;
                Ok(Reconciled::Paid)
            }
            Err(e) => Err(PayFlowError::from(e)),
        }
    };
    match state {
        RemoteTradeState::Success { transaction_id, total_fen, appid, mch_id, paid_at } => {
            let report = PaidReport {
                transaction_id,
                total_fen,
                appid,
                mch_id,
                paid_at,
                via: PaidVia::Query,
                notification_id: None,
            };
            apply_paid(app, tenant, order_id, &report).await?;
            Ok(Reconciled::Paid)
        }
        RemoteTradeState::Closed => close(CloseReason::ByQuery).await,
        RemoteTradeState::NotPay if expired => {
            // Close at Pay first so the member cannot pay an order we consider closed.
            pay.close_order(&merchant, api, order_id.as_str()).await.map_err(|e| PayFlowError::Retry(e.to_string()))?;
            close(CloseReason::Expired).await
        }
        RemoteTradeState::NotFound if expired => close(CloseReason::Expired).await,
        RemoteTradeState::NotPay | RemoteTradeState::NotFound => Ok(Reconciled::Open { detail: "not paid yet".into() }),
        RemoteTradeState::Refund => {
            Ok(Reconciled::Open { detail: "Pay reports REFUND without a known payment".into() })
        }
        RemoteTradeState::Pending(s) => Ok(Reconciled::Open { detail: s }),
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct ReconcileReport {
    pub orders: u32,
    pub paid: u32,
    pub closed: u32,
    pub open: u32,
    pub failed: u32,
}

/// `wxcm pay reconcile --tenant T`: every order of the tenant still open here.
pub async fn reconcile_tenant(
    app: &App,
    pay: &dyn PayGateway,
    tenant: &TenantId,
) -> Result<ReconcileReport, PayFlowError> {
    let shard = app.router.route(tenant).map_err(|e| PayFlowError::Retry(e.to_string()))?;
    let mut report = ReconcileReport::default();
    let mut after: Option<String> = None;
    while report.orders < RECONCILE_ORDERS_MAX {
        let ids = shard.pay.order_ids(tenant, Some(PaymentStatus::Created), after.as_deref(), ORDERS_PAGE_MAX).await?;
        let Some(last) = ids.last().cloned() else { break };
        for id in ids {
            report.orders += 1;
            let order_id = OutTradeNo::parse(&id).map_err(|e| bad("stored order id", e))?;
            match reconcile_order(app, pay, tenant, &order_id).await {
                Ok(Reconciled::Paid) => report.paid += 1,
                Ok(Reconciled::Closed) => report.closed += 1,
                Ok(Reconciled::Open { .. }) => report.open += 1,
                Err(e) => {
                    tracing::warn!(order = %order_id, error = %e, "reconciliation of an order failed");
                    report.failed += 1;
                }
            }
        }
        after = Some(last);
    }
    Ok(report)
}

/// A recharge order just created (or found again by its idempotency key).
#[derive(Debug, Clone, Serialize)]
pub struct CreatedRecharge {
    pub order: PaymentView,
    pub pay_params: JsapiPayParams,
}

/// Input of [`create_recharge`].
#[derive(Debug, Clone)]
pub struct RechargeRequest {
    pub member_id: MemberId,
    pub appid: AppId,
    pub openid: OpenId,
    pub amount_fen: AmountFen,
    pub api: PayApiVersion,
    /// Where Pay must send the notification (`…/pay/notify/v2/{appid}` or v3).
    pub notify_url: String,
    pub client_ip: String,
}

/// Creates a balance-recharge order and its JSAPI order at Pay. The order id
/// derives from the request's idempotency key, so a retried request finds the
/// same order (and Pay answers the same prepay for the same `out_trade_no`).
pub async fn create_recharge(
    app: &App,
    pay: &dyn PayGateway,
    tenant: &TenantId,
    request: &RechargeRequest,
    ctx: &CommandContext,
) -> Result<CreatedRecharge, PayFlowError> {
    if request.amount_fen.get() > app.limits.amount_fen_max {
        return Err(PayFlowError::Refused(format!("amount above the limit of {} fen", app.limits.amount_fen_max)));
    }
    let merchant = merchant_for(app, tenant, request.appid.as_str()).await?;
    let order_id = recharge_order_id(tenant, &request.member_id, &ctx.idempotency_key)?;
    let now = app.clock.now();
    let command = PaymentCommand::Create {
        order_id: order_id.clone(),
        tenant_id: tenant.clone(),
        member_id: request.member_id,
        openid: request.openid.clone(),
        appid: request.appid.clone(),
        mch_id: PayRef::parse(&merchant.mch_id).map_err(|e| bad("mch_id", e))?,
        purpose: PaymentPurpose::BalanceRecharge,
        amount_fen: request.amount_fen,
        api_version: request.api,
        expires_at: now + Duration::minutes(RECHARGE_EXPIRY_MINUTES),
        provenance: Provenance {
            actor: Actor::Member { member_id: request.member_id },
            reason: Reference::parse("balance recharge").map_err(|e| bad("reason", e))?,
            reference: None,
            idempotency_key: ctx.idempotency_key.clone(),
        },
    };
    let identity = (request.member_id, request.appid.as_str(), request.amount_fen.get(), request.api);
    payments::execute(app, tenant, &order_id, command, &identity, ctx).await?;
    let view = payments::get(app, tenant, &order_id).await?;
    let jsapi = JsapiOrderRequest {
        api: api_of(view.api_version),
        out_trade_no: order_id.to_string(),
        description: "Balance recharge".into(),
        amount_fen: view.amount_fen,
        payer_openid: view.openid.to_string(),
        notify_url: request.notify_url.clone(),
        expires_at: view.expires_at,
        client_ip: request.client_ip.clone(),
    };
    let pay_params = pay.create_jsapi_order(&merchant, &jsapi).await.map_err(|e| match e {
        crate::pay_port::PayPortError::Refused { .. } | crate::pay_port::PayPortError::Settings(_) => {
            PayFlowError::Refused(e.to_string())
        }
        other => PayFlowError::Retry(other.to_string()),
    })?;
    Ok(CreatedRecharge { order: view, pay_params })
}

/// `rc` + 30 hex digits of a hash of (tenant, member, idempotency key).
pub fn recharge_order_id(
    tenant: &TenantId,
    member: &MemberId,
    key: &IdempotencyKey,
) -> Result<OutTradeNo, PayFlowError> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in [tenant.as_str(), &member.to_string(), key.as_str()] {
        h.update(part.as_bytes());
        h.update([0x1f]);
    }
    let hex = hex::encode(h.finalize());
    OutTradeNo::parse(&format!("rc{}", &hex[..30])).map_err(|e| PayFlowError::Retry(e.to_string()))
}

/// A member's own order; another member's order is "not found".
pub async fn member_order(
    app: &App,
    tenant: &TenantId,
    member: &MemberId,
    order_id: &OutTradeNo,
) -> Result<PaymentView, PaymentOpError> {
    let view = payments::get(app, tenant, order_id).await?;
    if view.member_id != *member {
        return Err(PaymentOpError::NotFound);
    }
    Ok(view)
}

/// Orders of a tenant for the admin list: views, by order id after `after`.
pub async fn list_orders(
    app: &App,
    tenant: &TenantId,
    status: Option<PaymentStatus>,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<PaymentView>, PaymentOpError> {
    let shard = app.router.route(tenant)?;
    let ids = shard.pay.order_ids(tenant, status, after, limit.clamp(1, ORDERS_PAGE_MAX)).await?;
    let mut views = Vec::with_capacity(ids.len());
    for id in ids {
        let order_id = OutTradeNo::parse(&id).map_err(|e| PaymentOpError::Infra(e.to_string()))?;
        views.push(payments::get(app, tenant, &order_id).await?);
    }
    Ok(views)
}

/// An order with its notification history (newest first).
#[derive(Debug, Clone, Serialize)]
pub struct OrderDetail {
    pub order: PaymentView,
    pub notifications: Vec<NotificationRecord>,
}

pub async fn order_detail(app: &App, tenant: &TenantId, order_id: &OutTradeNo) -> Result<OrderDetail, PaymentOpError> {
    let order = payments::get(app, tenant, order_id).await?;
    let shard = app.router.route(tenant)?;
    let notifications = shard.pay.notifications(tenant, order_id.as_str(), NOTIFICATIONS_PER_ORDER_MAX).await?;
    Ok(OrderDetail { order, notifications })
}

/// Member sessions last this long.
pub const MEMBER_SESSION_TTL_HOURS: i64 = 2;
/// Longest OAuth code accepted.
pub const OAUTH_CODE_LEN_MAX: usize = 128;

/// WeChat web OAuth: a `code` from the member's browser → the member's openid
/// for `appid` (wired by the composition root to the WeChat client).
#[async_trait]
pub trait OauthExchange: Send + Sync {
    async fn openid_for_code(&self, appid: &AppId, code: &str) -> Result<OpenId, PayFlowError>;
}

/// `POST /m/api/v1/sessions {appid, code}`: exchanges the code, finds or
/// registers the member (source OAuth) and opens a session. The token is
/// `<tenant>.<random>`; only its SHA-256 is stored.
pub async fn member_login(
    app: &App,
    directory: &crate::wechat::AccountDirectory,
    oauth: &dyn OauthExchange,
    appid: &AppId,
    code: &str,
) -> Result<(String, MemberSession), PayFlowError> {
    if code.is_empty() || code.len() > OAUTH_CODE_LEN_MAX || !code.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(PayFlowError::Refused("invalid code".into()));
    }
    let (tenant, _) = directory
        .lookup(app, appid)
        .await
        .map_err(|e| PayFlowError::Retry(e.to_string()))?
        .ok_or_else(|| PayFlowError::Refused("unknown appid".into()))?;
    let openid = oauth.openid_for_code(appid, code).await?;
    let key = system_key(&["oauth-register", tenant.as_str(), openid.as_str()]).map_err(infra)?;
    let request = members::RegisterRequest {
        openid: Some(openid.clone()),
        source: wxcm_domain::member::RegistrationSource::Oauth,
        card_level: wxcm_domain::member::CardLevel::standard(),
    };
    let (view, _) = members::register(
        app,
        &tenant,
        request,
        Actor::Wechat { source: "oauth".into() },
        &CommandContext::new(tenant.clone(), key, "system:oauth".into()),
    )
    .await?;
    let mut random = [0u8; 32];
    rand::fill(&mut random);
    let token = format!("{}.{}", tenant, hex::encode(random));
    let session = MemberSession {
        tenant_id: tenant.clone(),
        member_id: view.member_id,
        appid: appid.clone(),
        openid,
        expires_at: app.clock.now() + Duration::hours(MEMBER_SESSION_TTL_HOURS),
    };
    let shard = app.router.route(&tenant).map_err(|e| PayFlowError::Retry(e.to_string()))?;
    shard.pay.create_member_session(&crate::auth::token_hash(&token), &session).await?;
    Ok((token, session))
}

/// The live member session behind a bearer token, if any.
pub async fn member_session(app: &App, token: &str) -> Result<Option<MemberSession>, PayFlowError> {
    let Some(tenant) = crate::auth::token_tenant(token) else { return Ok(None) };
    let Ok(shard) = app.router.route(&tenant) else { return Ok(None) };
    let session = shard.pay.find_member_session(&crate::auth::token_hash(token)).await?;
    Ok(session.filter(|s| s.tenant_id == tenant && s.expires_at > app.clock.now()))
}

/// The PEM public key of WeChat Pay's platform certificate `serial` for `mch_id`
/// (stored in the tenant's shard).
pub async fn platform_key_pem(
    app: &App,
    tenant: &TenantId,
    mch_id: &str,
    serial: &str,
) -> Result<Option<String>, PayFlowError> {
    let shard = app.router.route(tenant).map_err(|e| PayFlowError::Retry(e.to_string()))?;
    Ok(shard.pay.platform_key(mch_id, serial).await?)
}

/// Registers a platform key (operators, tests with the simulator's key).
pub async fn put_platform_key(
    app: &App,
    tenant: &TenantId,
    mch_id: &str,
    serial: &str,
    public_key_pem: &str,
) -> Result<(), PayFlowError> {
    if mch_id.is_empty()
        || mch_id.len() > 32
        || serial.is_empty()
        || serial.len() > 128
        || public_key_pem.len() > 16_384
    {
        return Err(PayFlowError::Refused("platform key fields out of bounds".into()));
    }
    let shard = app.router.route(tenant).map_err(|e| PayFlowError::Retry(e.to_string()))?;
    Ok(shard.pay.put_platform_key(mch_id, serial, public_key_pem).await?)
}

/// Records a notification in the tenant's shard; failures are logged, never fatal
/// (the record is for people, the order's events are the truth).
pub async fn record_notification(app: &App, tenant: &TenantId, record: &NotificationRecord) {
    let result = match app.router.route(tenant) {
        Ok(shard) => shard.pay.record_notification(record).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = result {
        tracing::warn!(appid = %record.appid, error = %e, "could not record a pay notification");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recharge_order_ids_are_valid_stable_and_distinct() {
        let tenant = TenantId::parse("acme").unwrap();
        let member = MemberId::new_random();
        let a = IdempotencyKey::parse("key-00000001").unwrap();
        let b = IdempotencyKey::parse("key-00000002").unwrap();
        let id = recharge_order_id(&tenant, &member, &a).unwrap();
        assert_eq!(id.as_str().len(), 32);
        assert!(OutTradeNo::parse(id.as_str()).is_ok());
        assert_eq!(id, recharge_order_id(&tenant, &member, &a).unwrap());
        assert_ne!(id, recharge_order_id(&tenant, &member, &b).unwrap());
    }

    #[test]
    fn only_refusals_are_permanent() {
        assert!(PayFlowError::from(PaymentOpError::NotFound).is_permanent());
        assert!(PayFlowError::from(PaymentOpError::Rejected(PaymentError::TotalMismatch {
            amount_fen: 1,
            paid_fen: 2
        }))
        .is_permanent());
        assert!(!PayFlowError::from(PaymentOpError::Contention).is_permanent());
        assert!(!PayFlowError::from(PaymentOpError::Infra("db down".into())).is_permanent());
    }
}
