//! Asking Pay about open orders and applying the answers through the same commands as notifications.

use serde::Serialize;
use wxcm_domain::payment::{CloseReason, PaidVia, PayApiVersion, PaymentCommand, PaymentError, PaymentStatus};
use wxcm_domain::tenant::{PaySettings, Tenant};
use wxcm_domain::{OutTradeNo, TenantId};

use crate::members::system_key;
use crate::pay_port::{MerchantCredentials, PayApi, PayGateway, RemoteTradeState};
use crate::payments::{self, PaymentOpError};
use crate::ports::App;

use super::*;

/// The tenant's merchant settings for `appid`, secrets opened.
pub async fn merchant_for(app: &App, tenant: &TenantId, appid: &str) -> Result<MerchantCredentials, PayFlowError> {
    let shard = app.router.route(tenant).map_err(|e| PayFlowError::Retry(e.to_string()))?;
    let (state, _): (Tenant, u64) = shard.tenants.load(tenant, tenant.as_str()).await?;
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

pub fn api_of(v: PayApiVersion) -> PayApi {
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
