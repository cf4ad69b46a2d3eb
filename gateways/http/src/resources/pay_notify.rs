//! WeChat Pay notifications: `POST /pay/notify/v2/{appid}` (v2 XML, MD5 or
//! HMAC-SHA256 signed), `/pay/notify/v3/{appid}` (v3 JSON: RSA-SHA256 over
//! the raw body by the platform key of `Wechatpay-Serial`, AES-256-GCM
//! resource; payments, `REFUND.*` and the transfer batches of withdrawals,
//! `MCHTRANSFER.BATCH.*`) and `/pay/notify/refund/{appid}` (v2
//! refunds, `req_info` AES-256-ECB with the API key).
//!
//! Order of checks, before anything changes: appid known (→ tenant) → body
//! bounded → XML without DTD/entities (v2) → signature (v2 sign with the
//! tenant's key; v3 probe refused, timestamp window, key by serial) →
//! appid and mch_id equal the tenant's → the order exists in this tenant and
//! its amount equals the notified total (the use case checks these).
//!
//! Replies: Pay retries until it gets the "stop" answer (v2 SUCCESS XML, v3
//! 2xx), so the answer says whether a retry can help:
//! - applied now or before, or verified and needing nothing → stop;
//! - verified as Pay's (signature good) but never applicable here — another
//!   merchant or account, an amount that differs from the order's, an order
//!   this tenant does not have → stop too: a retry carries the same content.
//!   Nothing changes; the notification is recorded as `inapplicable` for an
//!   operator (and reconciliation asks Pay about the order itself);
//! - not verifiable — bad signature, stale timestamp, unknown platform key,
//!   signature probe, malformed or DTD-carrying body → FAIL (v2) / 4xx (v3):
//!   a fresh signature, a rotated key or an uncorrupted copy may pass;
//! - our side failed (database, a race) → FAIL / 5xx.
//!
//! Every notification whose tenant is known is recorded, verified or not.

use std::collections::{BTreeMap, HashMap};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeZone, Utc};
use serde_json::json;
use wxcm_commands::pay_flows::{
    self, Applied, NotificationRecord, NotifyChannel, PaidReport, PayFlowError, RefundReport,
};
use wxcm_commands::pay_port::MerchantCredentials;
use wxcm_domain::payment::PaidVia;
use wxcm_domain::{AppId, OutTradeNo, TenantId};

use crate::state::AppState;
use wxcm_protocol::pay::{v2, v3};
use wxcm_protocol::wechat::xml::{self, XmlLimits};

/// Largest notification body accepted (real ones are 1–3 KiB).
pub const PAY_NOTIFY_BODY_BYTES_MAX: usize = 64 * 1024;
/// Beijing time, in which v2 notifications give their times.
const BEIJING_OFFSET_S: i32 = 8 * 3600;

/// A v3 notification envelope (documentation only; see `pay::v3::NotificationEnvelope`).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct PayV3NotificationDoc {
    id: String,
    create_time: String,
    /// `TRANSACTION.SUCCESS`, `REFUND.SUCCESS`, `MCHTRANSFER.BATCH.FINISHED`,
    /// `MCHTRANSFER.BATCH.CLOSED`; others are acknowledged and ignored.
    event_type: String,
    resource_type: String,
    summary: String,
    resource: PayV3ResourceDoc,
}

/// The AES-256-GCM encrypted resource of a v3 notification (documentation only).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct PayV3ResourceDoc {
    /// `AEAD_AES_256_GCM`.
    algorithm: String,
    /// Base64 of ciphertext and tag, under the merchant's API v3 key.
    ciphertext: String,
    associated_data: Option<String>,
    original_type: String,
    nonce: String,
}

/// The v3 refusal answer (Pay retries).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct PayV3FailDoc {
    /// `FAIL`.
    code: String,
    message: String,
}

/// What handling a notification came to.
#[derive(Debug)]
enum Handled {
    /// Applied now or before: Pay may stop.
    Applied(String),
    /// Verified but nothing to do (e.g. a failed payment): Pay may stop.
    Ignored(String),
    /// Not verifiable as Pay's (signature, timestamp, key, body): never applied; a
    /// fresh or uncorrupted copy might pass, so Pay is told to retry.
    Refused(String),
    /// Verified as Pay's but never applicable here (merchant, account, amount,
    /// order): nothing changes, and a retry would carry the same content.
    Inapplicable(String),
    /// May succeed later.
    Retry(String),
}

impl Handled {
    fn outcome(&self) -> &'static str {
        match self {
            Handled::Applied(_) => "applied",
            Handled::Ignored(_) => "ignored",
            Handled::Refused(_) => "refused",
            Handled::Inapplicable(_) => "inapplicable",
            Handled::Retry(_) => "retry",
        }
    }
    fn detail(&self) -> &str {
        match self {
            Handled::Applied(d)
            | Handled::Ignored(d)
            | Handled::Refused(d)
            | Handled::Inapplicable(d)
            | Handled::Retry(d) => d,
        }
    }
}

impl From<PayFlowError> for Handled {
    fn from(e: PayFlowError) -> Self {
        match e {
            PayFlowError::Refused(d) => Handled::Refused(d),
            PayFlowError::KeyReused | PayFlowError::UnknownAccount(_) | PayFlowError::CodeRefused(_) => {
                Handled::Refused(e.to_string())
            }
            PayFlowError::Retry(d) => Handled::Retry(d),
        }
    }
}

impl From<Result<Applied, PayFlowError>> for Handled {
    fn from(r: Result<Applied, PayFlowError>) -> Self {
        match r {
            Ok(Applied::Applied) => Handled::Applied("applied".into()),
            Ok(Applied::AlreadyApplied) => Handled::Applied("already applied".into()),
            // Only verified notifications reach the use case: its refusals are about content.
            Err(PayFlowError::Refused(d)) => Handled::Inapplicable(d),
            Err(e) => e.into(),
        }
    }
}

fn v2_reply(h: &Handled) -> Response {
    let body = match h {
        Handled::Applied(_) | Handled::Ignored(_) | Handled::Inapplicable(_) => v2::REPLY_SUCCESS.to_owned(),
        Handled::Refused(_) => v2::reply_fail("refused"),
        Handled::Retry(_) => v2::reply_fail("try again"),
    };
    ([(header::CONTENT_TYPE, "application/xml; charset=utf-8")], body).into_response()
}

fn v3_reply(h: &Handled) -> Response {
    let (status, message) = match h {
        Handled::Applied(_) | Handled::Ignored(_) | Handled::Inapplicable(_) => {
            return StatusCode::NO_CONTENT.into_response()
        }
        Handled::Refused(_) => (StatusCode::BAD_REQUEST, "notification refused"),
        Handled::Retry(_) => (StatusCode::INTERNAL_SERVER_ERROR, "try again"),
    };
    (status, axum::Json(json!({ "code": "FAIL", "message": message }))).into_response()
}

/// The notification's context once its appid is known.
struct Ctx {
    appid: AppId,
    tenant: TenantId,
}

async fn tenant_of(state: &AppState, appid: &str) -> Result<Ctx, Handled> {
    let appid = AppId::parse(appid).map_err(|_| Handled::Refused("unknown appid".into()))?;
    match state.wechat.directory.lookup(&state.app, &appid).await {
        Ok(Some((tenant, _))) => Ok(Ctx { appid, tenant }),
        Ok(None) => Err(Handled::Refused("unknown appid".into())),
        Err(e) => Err(Handled::Retry(e.to_string())),
    }
}

/// Reads at most [`PAY_NOTIFY_BODY_BYTES_MAX`] bytes of a notification; a
/// larger body is not read further and is answered in Pay's format (and
/// recorded), never with the framework's plain-text 413.
async fn read_body(body: Body) -> Result<Bytes, Handled> {
    axum::body::to_bytes(body, PAY_NOTIFY_BODY_BYTES_MAX)
        .await
        .map_err(|_| Handled::Refused(format!("body larger than {PAY_NOTIFY_BODY_BYTES_MAX} bytes, or unreadable")))
}

async fn record(
    state: &AppState,
    ctx: &Ctx,
    channel: NotifyChannel,
    verified: bool,
    order_id: Option<&str>,
    summary: serde_json::Value,
    h: &Handled,
) {
    if !matches!(h, Handled::Applied(_) | Handled::Ignored(_)) {
        tracing::warn!(appid = %ctx.appid, channel = channel.as_str(), outcome = h.outcome(), detail = h.detail(),
            "pay notification not applied");
    }
    let rec = NotificationRecord {
        appid: ctx.appid.to_string(),
        tenant_id: Some(ctx.tenant.to_string()),
        order_id: order_id.map(str::to_owned),
        channel,
        verified,
        outcome: h.outcome().to_owned(),
        detail: h.detail().chars().take(500).collect(),
        summary,
        received_at: state.app.clock.now(),
    };
    pay_flows::record_notification(&state.app, &ctx.tenant, &rec).await;
}

fn xml_limits() -> XmlLimits {
    XmlLimits { body_bytes_max: PAY_NOTIFY_BODY_BYTES_MAX, ..XmlLimits::default() }
}

fn beijing_time(text: &str, format: &str) -> Option<DateTime<Utc>> {
    let naive = NaiveDateTime::parse_from_str(text, format).ok()?;
    let offset = FixedOffset::east_opt(BEIJING_OFFSET_S)?;
    offset.from_local_datetime(&naive).single().map(|t| t.with_timezone(&Utc))
}

fn order_id(text: Option<&str>) -> Result<OutTradeNo, Handled> {
    OutTradeNo::parse(text.unwrap_or_default()).map_err(|e| Handled::Inapplicable(format!("out_trade_no: {e}")))
}

/// The notification names the account of its URL and the tenant's merchant.
fn check_identity(merchant: &MerchantCredentials, path_appid: &str, appid: &str, mch_id: &str) -> Result<(), Handled> {
    if appid != path_appid {
        return Err(Handled::Inapplicable(format!("appid {appid} is not this account's")));
    }
    if mch_id != merchant.mch_id {
        return Err(Handled::Inapplicable(format!("mch_id {mch_id} is not this account's merchant")));
    }
    Ok(())
}

fn field<'a>(fields: &'a BTreeMap<String, String>, name: &str) -> Result<&'a str, Handled> {
    fields.get(name).map(String::as_str).ok_or_else(|| Handled::Refused(format!("{name} missing")))
}

/// `POST /pay/notify/v2/{appid}`
#[utoipa::path(post, path = "/pay/notify/v2/{appid}", tag = "pay-notify",
    params(("appid" = crate::doc::OfficialAccountAppId, Path, description = "The official account the order was paid on")),
    request_body(content = String, content_type = "text/xml",
        description = "Pay's v2 payment result: `<xml>` fields, signed (`sign`, MD5 or HMAC-SHA256) with the API v2 key"),
    responses(
        (status = 200, description = "`<xml><return_code>SUCCESS</return_code>…` when applied now or before, verified and needing nothing, or verified but never applicable here (merchant, account, amount or order differ: recorded as `inapplicable`, nothing changes); `FAIL` with `refused` (not verifiable) or `try again` (our side) otherwise, so Pay retries", body = String, content_type = "application/xml"),
    ))]
pub async fn notify_v2(State(state): State<AppState>, Path(appid): Path<String>, body: Body) -> Response {
    let ctx = match tenant_of(&state, &appid).await {
        Ok(c) => c,
        Err(h) => return v2_reply(&h),
    };
    let (verified, order, summary, h) = match read_body(body).await {
        Ok(body) => handle_v2(&state, &ctx, &body).await,
        Err(h) => (false, None, serde_json::Value::Null, h),
    };
    record(&state, &ctx, NotifyChannel::V2, verified, order.as_deref(), summary, &h).await;
    v2_reply(&h)
}

async fn handle_v2(state: &AppState, ctx: &Ctx, body: &[u8]) -> (bool, Option<String>, serde_json::Value, Handled) {
    let none = serde_json::Value::Null;
    let doc = match xml::parse(body, &xml_limits()) {
        Ok(d) => d,
        Err(e) => return (false, None, none, Handled::Refused(e.to_string())),
    };
    let fields: BTreeMap<String, String> = doc.fields.into_iter().collect();
    let merchant = match pay_flows::merchant_for(&state.app, &ctx.tenant, ctx.appid.as_str()).await {
        Ok(m) => m,
        Err(e) => return (false, None, none, e.into()),
    };
    let Some(key) = merchant.api_v2_key.as_deref() else {
        return (false, None, none, Handled::Refused("no API v2 key configured".into()));
    };
    if let Err(e) = v2::verify(&fields, key) {
        return (false, fields.get("out_trade_no").cloned(), none, Handled::Refused(format!("signature: {e}")));
    }
    let summary = json!({
        "return_code": fields.get("return_code"),
        "result_code": fields.get("result_code"),
        "transaction_id": fields.get("transaction_id"),
        "total_fee": fields.get("total_fee"),
        "mch_id": fields.get("mch_id"),
    });
    let order = fields.get("out_trade_no").cloned();
    let h = apply_v2(state, ctx, &merchant, &fields).await.unwrap_or_else(|h| h);
    (true, order, summary, h)
}

async fn apply_v2(
    state: &AppState,
    ctx: &Ctx,
    merchant: &MerchantCredentials,
    fields: &BTreeMap<String, String>,
) -> Result<Handled, Handled> {
    if field(fields, "return_code")? != "SUCCESS" || field(fields, "result_code")? != "SUCCESS" {
        return Ok(Handled::Ignored("not a successful payment".into()));
    }
    let appid = field(fields, "appid")?;
    let mch_id = field(fields, "mch_id")?;
    check_identity(merchant, ctx.appid.as_str(), appid, mch_id)?;
    let order_id = order_id(fields.get("out_trade_no").map(String::as_str))?;
    let total_fen: i64 =
        field(fields, "total_fee")?.parse().map_err(|_| Handled::Refused("total_fee is not an integer".into()))?;
    let paid_at =
        fields.get("time_end").and_then(|t| beijing_time(t, "%Y%m%d%H%M%S")).unwrap_or_else(|| state.app.clock.now());
    let report = PaidReport {
        transaction_id: field(fields, "transaction_id")?.to_owned(),
        total_fen,
        appid: appid.to_owned(),
        mch_id: mch_id.to_owned(),
        paid_at,
        via: PaidVia::NotifyV2,
        notification_id: None,
    };
    Ok(pay_flows::apply_paid(&state.app, &ctx.tenant, &order_id, &report).await.into())
}

/// `POST /pay/notify/refund/{appid}`
#[utoipa::path(post, path = "/pay/notify/refund/{appid}", tag = "pay-notify",
    params(("appid" = crate::doc::OfficialAccountAppId, Path, description = "The official account the order was paid on")),
    request_body(content = String, content_type = "text/xml",
        description = "Pay's v2 refund result: `<xml>` with `req_info` (AES-256-ECB under the MD5 of the API v2 key)"),
    responses(
        (status = 200, description = "`SUCCESS` XML when the refund is applied now or before; `FAIL` XML otherwise", body = String, content_type = "application/xml"),
    ))]
pub async fn notify_refund_v2(State(state): State<AppState>, Path(appid): Path<String>, body: Body) -> Response {
    let ctx = match tenant_of(&state, &appid).await {
        Ok(c) => c,
        Err(h) => return v2_reply(&h),
    };
    let (verified, order, summary, h) = match read_body(body).await {
        Ok(body) => handle_refund_v2(&state, &ctx, &body).await,
        Err(h) => (false, None, serde_json::Value::Null, h),
    };
    record(&state, &ctx, NotifyChannel::RefundV2, verified, order.as_deref(), summary, &h).await;
    v2_reply(&h)
}

async fn handle_refund_v2(
    state: &AppState,
    ctx: &Ctx,
    body: &[u8],
) -> (bool, Option<String>, serde_json::Value, Handled) {
    let none = serde_json::Value::Null;
    let doc = match xml::parse(body, &xml_limits()) {
        Ok(d) => d,
        Err(e) => return (false, None, none, Handled::Refused(e.to_string())),
    };
    let outer: BTreeMap<String, String> = doc.fields.into_iter().collect();
    let merchant = match pay_flows::merchant_for(&state.app, &ctx.tenant, ctx.appid.as_str()).await {
        Ok(m) => m,
        Err(e) => return (false, None, none, e.into()),
    };
    let Some(key) = merchant.api_v2_key.as_deref() else {
        return (false, None, none, Handled::Refused("no API v2 key configured".into()));
    };
    if outer.get("return_code").map(String::as_str) != Some("SUCCESS") {
        return (false, None, none, Handled::Ignored("return_code is not SUCCESS".into()));
    }
    // req_info is the authentication: only the API key decrypts it to XML that parses.
    let Some(req_info) = outer.get("req_info") else {
        return (false, None, none, Handled::Refused("req_info missing".into()));
    };
    let inner = match v2::decrypt_req_info(req_info, key) {
        Ok(x) => x,
        Err(e) => return (false, None, none, Handled::Refused(format!("req_info: {e}"))),
    };
    let inner = match xml::parse(inner.as_bytes(), &xml_limits()) {
        Ok(d) => d.fields.into_iter().collect::<BTreeMap<String, String>>(),
        Err(e) => return (false, None, none, Handled::Refused(format!("req_info xml: {e}"))),
    };
    let order = inner.get("out_trade_no").cloned();
    let summary = json!({
        "refund_status": inner.get("refund_status"),
        "out_refund_no": inner.get("out_refund_no"),
        "refund_id": inner.get("refund_id"),
        "refund_fee": inner.get("refund_fee"),
        "total_fee": inner.get("total_fee"),
    });
    let h = apply_refund_v2(state, ctx, &merchant, &outer, &inner).await.unwrap_or_else(|h| h);
    (true, order, summary, h)
}

async fn apply_refund_v2(
    state: &AppState,
    ctx: &Ctx,
    merchant: &MerchantCredentials,
    outer: &BTreeMap<String, String>,
    inner: &BTreeMap<String, String>,
) -> Result<Handled, Handled> {
    check_identity(merchant, ctx.appid.as_str(), field(outer, "appid")?, field(outer, "mch_id")?)?;
    if field(inner, "refund_status")? != "SUCCESS" {
        return Ok(Handled::Ignored("refund not successful".into()));
    }
    let order_id = order_id(inner.get("out_trade_no").map(String::as_str))?;
    let int = |name: &str| -> Result<i64, Handled> {
        field(inner, name)?.parse().map_err(|_| Handled::Refused(format!("{name} is not an integer")))
    };
    let report = RefundReport {
        out_refund_no: field(inner, "out_refund_no")?.to_owned(),
        refund_id: field(inner, "refund_id")?.to_owned(),
        refund_fen: int("refund_fee")?,
        total_fen: int("total_fee")?,
        mch_id: merchant.mch_id.clone(),
        succeeded_at: inner
            .get("success_time")
            .and_then(|t| beijing_time(t, "%Y-%m-%d %H:%M:%S"))
            .unwrap_or_else(|| state.app.clock.now()),
    };
    Ok(pay_flows::apply_refund(&state.app, &ctx.tenant, &order_id, &report).await.into())
}

fn header_text(headers: &HeaderMap, name: &str) -> Result<String, Handled> {
    let value = headers.get(name).ok_or_else(|| Handled::Refused(format!("{name} missing")))?;
    let text = value.to_str().map_err(|_| Handled::Refused(format!("{name} is not text")))?;
    if text.len() > v3::HEADER_CHARS_MAX {
        return Err(Handled::Refused(format!("{name} too long")));
    }
    Ok(text.to_owned())
}

/// `POST /pay/notify/v3/{appid}`
#[utoipa::path(post, path = "/pay/notify/v3/{appid}", tag = "pay-notify",
    params(
        ("appid" = crate::doc::OfficialAccountAppId, Path, description = "The official account the order was paid on"),
        ("Wechatpay-Timestamp" = String, Header, description = "Unix seconds; refused when more than 300 s away"),
        ("Wechatpay-Nonce" = String, Header),
        ("Wechatpay-Signature" = String, Header, description = "RSA-SHA256 by the platform key over timestamp, nonce and the raw body"),
        ("Wechatpay-Serial" = String, Header, description = "Serial of a platform key registered for the merchant"),
    ),
    request_body(content = PayV3NotificationDoc, content_type = "application/json"),
    responses(
        (status = 204, description = "Applied now or before, verified and needing nothing, or verified but never applicable here (merchant, account, amount or order differ: recorded as `inapplicable`, nothing changes, a retry could not help)"),
        (status = 400, description = "Not verifiable (signature, timestamp, platform key, probe, body); Pay retries, nothing changes", body = PayV3FailDoc),
        (status = 500, description = "Try again (our side)", body = PayV3FailDoc),
    ))]
pub async fn notify_v3(
    State(state): State<AppState>,
    Path(appid): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let ctx = match tenant_of(&state, &appid).await {
        Ok(c) => c,
        Err(h) => return v3_reply(&h),
    };
    let handled = match read_body(body).await {
        Ok(body) => handle_v3(&state, &ctx, &headers, &body).await,
        Err(h) => Err(h),
    };
    let (verified, order, summary, h) = handled.unwrap_or_else(|h| (false, None, serde_json::Value::Null, h));
    record(&state, &ctx, NotifyChannel::V3, verified, order.as_deref(), summary, &h).await;
    v3_reply(&h)
}

type V3Done = (bool, Option<String>, serde_json::Value, Handled);

async fn handle_v3(state: &AppState, ctx: &Ctx, headers: &HeaderMap, body: &[u8]) -> Result<V3Done, Handled> {
    let v3_headers = v3::V3Headers {
        timestamp: header_text(headers, "wechatpay-timestamp")?,
        nonce: header_text(headers, "wechatpay-nonce")?,
        signature_b64: header_text(headers, "wechatpay-signature")?,
        serial: header_text(headers, "wechatpay-serial")?,
    };
    if v3_headers.signature_b64.starts_with(v3::SIGNTEST_PREFIX) {
        return Err(Handled::Refused("signature probe".into()));
    }
    let merchant = pay_flows::merchant_for(&state.app, &ctx.tenant, ctx.appid.as_str()).await?;
    let pem = pay_flows::platform_key_pem(&state.app, &ctx.tenant, &merchant.mch_id, &v3_headers.serial)
        .await?
        .ok_or_else(|| Handled::Refused("unknown platform serial".into()))?;
    let key = v3::load_public_key_pem(&pem).map_err(|e| Handled::Retry(format!("stored platform key: {e}")))?;
    let keys = HashMap::from([(v3_headers.serial.clone(), key)]);
    v3::verify_notification(&v3_headers, body, &keys, state.app.clock.now().timestamp())
        .map_err(|e| Handled::Refused(format!("signature: {e}")))?;
    let envelope: v3::NotificationEnvelope =
        serde_json::from_slice(body).map_err(|e| Handled::Refused(format!("body: {e}")))?;
    let api_key = merchant.api_v3_key.as_deref().ok_or_else(|| Handled::Refused("no API v3 key configured".into()))?;
    let api_key = v3::api_v3_key(api_key).map_err(|e| Handled::Refused(format!("API v3 key: {e}")))?;
    let plain = envelope.resource.decrypt(&api_key).map_err(|e| Handled::Refused(format!("resource: {e}")))?;
    let notification_id = Some(envelope.id.clone());
    match envelope.event_type.as_str() {
        "TRANSACTION.SUCCESS" => {
            let t: v3::TransactionResource =
                serde_json::from_slice(&plain).map_err(|e| Handled::Refused(format!("transaction: {e}")))?;
            let summary = json!({ "event_type": envelope.event_type, "id": envelope.id,
                "transaction_id": t.transaction_id, "trade_state": t.trade_state, "total": t.amount.total_fen });
            let order = Some(t.out_trade_no.clone());
            let h = apply_v3_transaction(state, ctx, &merchant, t, notification_id).await.unwrap_or_else(|h| h);
            Ok((true, order, summary, h))
        }
        "REFUND.SUCCESS" => {
            let r: v3::RefundResource =
                serde_json::from_slice(&plain).map_err(|e| Handled::Refused(format!("refund: {e}")))?;
            let summary = json!({ "event_type": envelope.event_type, "id": envelope.id,
                "out_refund_no": r.out_refund_no, "refund_id": r.refund_id, "refund": r.amount.refund_fen });
            let order = Some(r.out_trade_no.clone());
            let h = apply_v3_refund(state, ctx, &merchant, r).await.unwrap_or_else(|h| h);
            Ok((true, order, summary, h))
        }
        "MCHTRANSFER.BATCH.FINISHED" | "MCHTRANSFER.BATCH.CLOSED" => {
            let b: v3::TransferBatchResource =
                serde_json::from_slice(&plain).map_err(|e| Handled::Refused(format!("transfer batch: {e}")))?;
            let summary = json!({ "event_type": envelope.event_type, "id": envelope.id,
                "out_batch_no": b.out_batch_no, "batch_status": b.batch_status,
                "success_num": b.success_num, "fail_num": b.fail_num });
            let batch = Some(b.out_batch_no.clone());
            let h = apply_v3_transfer(state, ctx, &merchant, b).await.unwrap_or_else(|h| h);
            Ok((true, batch, summary, h))
        }
        other => Ok((
            true,
            None,
            json!({ "event_type": other, "id": envelope.id }),
            Handled::Ignored(format!("event {other} needs no action")),
        )),
    }
}

async fn apply_v3_transaction(
    state: &AppState,
    ctx: &Ctx,
    merchant: &MerchantCredentials,
    t: v3::TransactionResource,
    notification_id: Option<String>,
) -> Result<Handled, Handled> {
    check_identity(merchant, ctx.appid.as_str(), &t.appid, &t.mchid)?;
    if t.trade_state != "SUCCESS" {
        return Ok(Handled::Ignored(format!("trade_state {}", t.trade_state)));
    }
    let order_id = order_id(Some(&t.out_trade_no))?;
    let paid_at = t
        .success_time
        .as_deref()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| state.app.clock.now());
    let report = PaidReport {
        transaction_id: t.transaction_id,
        total_fen: t.amount.total_fen,
        appid: t.appid,
        mch_id: t.mchid,
        paid_at,
        via: PaidVia::NotifyV3,
        notification_id,
    };
    Ok(pay_flows::apply_paid(&state.app, &ctx.tenant, &order_id, &report).await.into())
}

async fn apply_v3_refund(
    state: &AppState,
    ctx: &Ctx,
    merchant: &MerchantCredentials,
    r: v3::RefundResource,
) -> Result<Handled, Handled> {
    check_identity(merchant, ctx.appid.as_str(), ctx.appid.as_str(), &r.mchid)?;
    if r.refund_status != "SUCCESS" {
        return Ok(Handled::Ignored(format!("refund_status {}", r.refund_status)));
    }
    let order_id = order_id(Some(&r.out_trade_no))?;
    let report = RefundReport {
        out_refund_no: r.out_refund_no,
        refund_id: r.refund_id,
        refund_fen: r.amount.refund_fen,
        total_fen: r.amount.total_fen,
        mch_id: r.mchid,
        succeeded_at: r
            .success_time
            .as_deref()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(|| state.app.clock.now()),
    };
    Ok(pay_flows::apply_refund(&state.app, &ctx.tenant, &order_id, &report).await.into())
}

/// A verified transfer batch notification: the withdrawal's transfer paid or
/// failed, once (a copy, or one after the query told it, changes nothing).
async fn apply_v3_transfer(
    state: &AppState,
    ctx: &Ctx,
    merchant: &MerchantCredentials,
    b: v3::TransferBatchResource,
) -> Result<Handled, Handled> {
    use wxcm_commands::commissions::{self, CommissionError, TransferBatchFacts, TransferNotified};
    check_identity(merchant, ctx.appid.as_str(), ctx.appid.as_str(), &b.mchid)?;
    let facts = TransferBatchFacts {
        out_batch_no: b.out_batch_no,
        batch_status: b.batch_status,
        success_num: b.success_num,
        success_amount: b.success_amount,
        fail_num: b.fail_num,
        close_reason: b.close_reason,
    };
    Ok(match commissions::apply_transfer_notification(&state.app, &ctx.tenant, &facts).await {
        Ok(TransferNotified::Recorded) => Handled::Applied("applied".into()),
        Ok(TransferNotified::AlreadyRecorded) => Handled::Applied("already applied".into()),
        Ok(TransferNotified::Ignored(why)) => Handled::Ignored(why),
        Err(CommissionError::NotFound(what)) => Handled::Inapplicable(format!("no such {what} in this tenant")),
        // Pay's own word, so a retry would say the same: stored as inapplicable for an
        // operator (the withdrawal stays transferring), not a 500 that Pay repeats.
        Err(e @ CommissionError::TransferAmountMismatch { .. }) => {
            tracing::error!(tenant = %ctx.tenant, error = %e, "transfer notification with another amount");
            Handled::Inapplicable(e.to_string())
        }
        Err(e) => Handled::Retry(e.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beijing_times_convert_to_utc() {
        let t = beijing_time("20260310103000", "%Y%m%d%H%M%S").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-03-10T02:30:00+00:00");
        assert!(beijing_time("2026-03-10", "%Y%m%d%H%M%S").is_none());
    }

    #[test]
    fn only_applied_or_ignored_stop_the_retries() {
        let ok = v2_reply(&Handled::Applied("x".into()));
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(v3_reply(&Handled::Ignored("x".into())).status(), StatusCode::NO_CONTENT);
        assert_eq!(v3_reply(&Handled::Refused("x".into())).status(), StatusCode::BAD_REQUEST);
        assert_eq!(v3_reply(&Handled::Retry("x".into())).status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
