//! Starting a recharge: the payment order here, the JSAPI order at Pay, the JS-SDK parameters for the page.

use chrono::Duration;
use serde::Serialize;
use wxcm_domain::member::Provenance;
use wxcm_domain::payment::{PayApiVersion, PaymentCommand, PaymentPurpose};
use wxcm_domain::{Actor, AmountFen, AppId, IdempotencyKey, MemberId, OpenId, OutTradeNo, PayRef, Reference, TenantId};

use crate::executor::CommandContext;
use crate::pay_port::{JsapiOrderRequest, JsapiPayParams, MerchantCredentials, PayGateway};
use crate::payments::{self, PaymentView};
use crate::ports::App;

use super::*;

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
    /// `None`: what the merchant has settings for ([`default_api`]).
    pub api: Option<PayApiVersion>,
    /// Where this server is reached; Pay notifies `{base}/pay/notify/{v2|v3}/{appid}`.
    pub notify_base_url: String,
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
    let api = request.api.unwrap_or_else(|| default_api(&merchant));
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
        api_version: api,
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
        notify_url: notify_url(&request.notify_base_url, view.api_version, &request.appid),
        expires_at: view.expires_at,
        client_ip: request.client_ip.clone(),
    };
    let pay_params = pay.create_jsapi_order(&merchant, &jsapi).await.map_err(pay_port_error)?;
    Ok(CreatedRecharge { order: view, pay_params })
}

/// What Pay's answer means for the caller: a refusal or missing settings
/// never change by retrying; anything else may.
pub fn pay_port_error(e: crate::pay_port::PayPortError) -> PayFlowError {
    match e {
        crate::pay_port::PayPortError::Refused { .. } | crate::pay_port::PayPortError::Settings(_) => {
            PayFlowError::Refused(e.to_string())
        }
        other => PayFlowError::Retry(other.to_string()),
    }
}

/// Pay's refund notification endpoint of `api` on this server (v3 refunds
/// notify the payment endpoint).
pub fn refund_notify_url(base_url: &str, api: PayApiVersion, appid: &AppId) -> String {
    let base = base_url.trim_end_matches('/');
    match api {
        PayApiVersion::V2 => format!("{base}/pay/notify/refund/{appid}"),
        PayApiVersion::V3 => format!("{base}/pay/notify/v3/{appid}"),
    }
}

/// Pay's notification endpoint of `api` on this server (the routes of `wxcm-http`).
pub fn notify_url(base_url: &str, api: PayApiVersion, appid: &AppId) -> String {
    let path = match api {
        PayApiVersion::V2 => "v2",
        PayApiVersion::V3 => "v3",
    };
    format!("{}/pay/notify/{path}/{appid}", base_url.trim_end_matches('/'))
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

/// The API a recharge uses when the member did not ask for one: v3 when the
/// merchant's v3 settings are complete (key, certificate serial, private key),
/// else v2 when it has a v2 key, else v3 (whose creation then says which
/// settings are missing).
pub fn default_api(merchant: &MerchantCredentials) -> PayApiVersion {
    let v3_complete = merchant.api_v3_key.is_some()
        && merchant.merchant_cert_serial.is_some()
        && merchant.merchant_private_key_pem.is_some();
    if !v3_complete && merchant.api_v2_key.is_some() {
        PayApiVersion::V2
    } else {
        PayApiVersion::V3
    }
}
