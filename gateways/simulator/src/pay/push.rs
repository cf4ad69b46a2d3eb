//! Notifications the simulator pushes to `notify_url`: built like Pay's
//! (v2 signed XML, v2 refund `req_info`, v3 signed JSON with an encrypted
//! resource), optionally tampered, delivered in copies and recorded.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use wxcm_commands::pay_port::PayApi;

use super::{
    random_alnum, DeliveryPlan, Merchant, Order, PaySandbox, Refund, SandboxRefusal, RETRY_ATTEMPTS_MAX, RETRY_DELAY_MS,
};
use wxcm_outbound::pay::time_expire_v2;
use wxcm_protocol::pay::v2::{self, SignType};
use wxcm_protocol::pay::v3;
use wxcm_protocol::wechat::xml::{self, XmlLimits};

/// Longest part of an answer kept in a delivery record, in characters (read: bytes).
const ANSWER_CHARS_KEPT_MAX: usize = 4096;
/// How far in the past a `timestamp_stale` notification is dated (the limit is 300 s).
const STALE_TIMESTAMP_SECS: i64 = 600;
/// The XXE probe of 2018, prepended by `tamper: doctype`.
const DOCTYPE_PROLOGUE: &str =
    "<?xml version=\"1.0\" encoding=\"utf-8\"?><!DOCTYPE xml [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]>";

/// What to break in a notification (each check of the receiver has one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tamper {
    #[default]
    None,
    /// A validly signed notification whose amount differs from the order.
    Amount,
    /// A validly signed notification naming another merchant.
    MchId,
    /// A validly signed notification naming another appid.
    Appid,
    /// A signature that does not verify.
    Signature,
    /// v3: a validly signed notification dated 10 minutes ago.
    TimestampStale,
    /// v3: a `WECHATPAY/SIGNTEST/` probe signature.
    Signtest,
    /// v3 resource / v2 `req_info` ciphertext altered.
    Ciphertext,
    /// v2: a DOCTYPE/ENTITY (XXE) prologue in the body.
    Doctype,
}

impl Tamper {
    fn as_str(self) -> &'static str {
        match self {
            Tamper::None => "none",
            Tamper::Amount => "amount",
            Tamper::MchId => "mch_id",
            Tamper::Appid => "appid",
            Tamper::Signature => "signature",
            Tamper::TimestampStale => "timestamp_stale",
            Tamper::Signtest => "signtest",
            Tamper::Ciphertext => "ciphertext",
            Tamper::Doctype => "doctype",
        }
    }
}

/// One delivery attempt and the receiver's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delivery {
    pub seq: u64,
    /// `transaction`, `refund` or `transfer`.
    pub kind: String,
    /// `v2` or `v3`.
    pub api: String,
    /// out_trade_no, out_refund_no or out_batch_no.
    pub reference: String,
    pub notify_url: String,
    pub tamper: Tamper,
    /// 1-based copy number and attempt number within the copy.
    pub copy: u32,
    pub attempt: u32,
    /// HTTP status of the answer; `None` when the request failed.
    pub status: Option<u16>,
    /// The answer body (first 4096 characters) or the transport error.
    pub body: String,
    /// Whether Pay would stop re-sending after this answer.
    pub accepted: bool,
    pub delivered_at: DateTime<Utc>,
}

/// Header names and values of a notification.
type Headers = Vec<(&'static str, String)>;

/// A notification ready to send.
#[derive(Clone)]
pub(super) struct Notification {
    kind: &'static str,
    api: PayApi,
    reference: String,
    url: String,
    tamper: Tamper,
    pub(super) headers: Headers,
    pub(super) body: String,
}

fn china() -> FixedOffset {
    match FixedOffset::east_opt(8 * 3600) {
        Some(offset) => offset,
        None => unreachable!("+08:00 is a valid offset"),
    }
}

/// RFC 3339 in China Standard Time, as v3 writes times.
pub(super) fn china_time_rfc3339(at: DateTime<Utc>) -> String {
    at.with_timezone(&china()).to_rfc3339_opts(SecondsFormat::Secs, false)
}

fn not_applicable(tamper: Tamper, what: &str) -> SandboxRefusal {
    SandboxRefusal::unprocessable(format!("tamper {} does not apply to {what}", tamper.as_str()))
}

fn other_id(id: &str) -> String {
    format!("{id}9")
}

fn v2_key(merchant: &Merchant) -> Result<&str, SandboxRefusal> {
    merchant.api_v2_key.as_deref().ok_or_else(|| SandboxRefusal::conflict("merchant has no API v2 key"))
}

fn v3_key(merchant: &Merchant) -> Result<&[u8; v3::API_V3_KEY_BYTES], SandboxRefusal> {
    merchant.api_v3_key.as_ref().ok_or_else(|| SandboxRefusal::conflict("merchant has no API v3 key"))
}

/// The payment notification of `order` (which is paid).
pub(super) fn transaction_notification(
    sandbox: &PaySandbox,
    order: &Order,
    merchant: &Merchant,
    tamper: Tamper,
    now: DateTime<Utc>,
) -> Result<Notification, SandboxRefusal> {
    let transaction_id = order.transaction_id.clone().unwrap_or_default();
    let paid_at = order.paid_at.unwrap_or(now);
    let mut total_fen = order.total_fen;
    let (mut appid, mut mch_id) = (order.appid.clone(), order.mch_id.clone());
    match tamper {
        Tamper::Amount => total_fen += 1,
        Tamper::Appid => appid = other_id(&appid),
        Tamper::MchId => mch_id = other_id(&mch_id),
        _ => {}
    }
    let (headers, body) = match order.api {
        PayApi::V2 => {
            if matches!(tamper, Tamper::TimestampStale | Tamper::Signtest | Tamper::Ciphertext) {
                return Err(not_applicable(tamper, "v2 payment notifications"));
            }
            let key = v2_key(merchant)?;
            let mut f = BTreeMap::from([
                ("return_code".to_owned(), "SUCCESS".to_owned()),
                ("return_msg".to_owned(), "OK".to_owned()),
                ("result_code".to_owned(), "SUCCESS".to_owned()),
                ("appid".to_owned(), appid),
                ("mch_id".to_owned(), mch_id),
                ("nonce_str".to_owned(), random_alnum(32)),
                ("openid".to_owned(), order.openid.clone()),
                ("is_subscribe".to_owned(), "N".to_owned()),
                ("trade_type".to_owned(), "JSAPI".to_owned()),
                ("bank_type".to_owned(), "OTHERS".to_owned()),
                ("total_fee".to_owned(), total_fen.to_string()),
                ("cash_fee".to_owned(), total_fen.to_string()),
                ("fee_type".to_owned(), "CNY".to_owned()),
                ("transaction_id".to_owned(), transaction_id),
                ("out_trade_no".to_owned(), order.out_trade_no.clone()),
                ("time_end".to_owned(), time_expire_v2(paid_at)),
            ]);
            // Pay names the algorithm when it is not the default MD5.
            if order.sign_type == SignType::HmacSha256 {
                f.insert(v2::SIGN_TYPE_FIELD.to_owned(), order.sign_type.as_str().to_owned());
            }
            let sign = if tamper == Tamper::Signature {
                v2::sign(&f, &format!("{key}-not-the-key"), order.sign_type)
            } else {
                v2::sign(&f, key, order.sign_type)
            };
            f.insert(v2::SIGN_FIELD.to_owned(), sign);
            (v2_headers(), v2_body(&f, tamper))
        }
        PayApi::V3 => {
            if tamper == Tamper::Doctype {
                return Err(not_applicable(tamper, "v3 notifications"));
            }
            let resource = v3::TransactionResource {
                appid,
                mchid: mch_id,
                out_trade_no: order.out_trade_no.clone(),
                transaction_id,
                trade_type: Some("JSAPI".into()),
                trade_state: "SUCCESS".into(),
                trade_state_desc: Some("支付成功".into()),
                bank_type: Some("OTHERS".into()),
                attach: Some(String::new()),
                success_time: Some(china_time_rfc3339(paid_at)),
                amount: v3::TransactionAmount {
                    total_fen,
                    payer_total_fen: Some(total_fen),
                    currency: "CNY".into(),
                    payer_currency: Some("CNY".into()),
                },
                payer: v3::Payer { openid: order.openid.clone() },
            };
            let plain = serde_json::to_vec(&resource).map_err(|e| SandboxRefusal::conflict(e.to_string()))?;
            v3_envelope(sandbox, merchant, "TRANSACTION.SUCCESS", "支付成功", "transaction", &plain, tamper, now)?
        }
    };
    Ok(Notification {
        kind: "transaction",
        api: order.api,
        reference: order.out_trade_no.clone(),
        url: order.notify_url.clone(),
        tamper,
        headers,
        body,
    })
}

/// The refund notification of `refund`.
pub(super) fn refund_notification(
    sandbox: &PaySandbox,
    refund: &Refund,
    order: &Order,
    merchant: &Merchant,
    tamper: Tamper,
    now: DateTime<Utc>,
) -> Result<Notification, SandboxRefusal> {
    let url = refund.notify_url.clone().ok_or_else(|| SandboxRefusal::conflict("refund has no notify_url"))?;
    let transaction_id = order.transaction_id.clone().unwrap_or_default();
    let refund_fen = if tamper == Tamper::Amount { refund.refund_fen + 1 } else { refund.refund_fen };
    let mch_id = if tamper == Tamper::MchId { other_id(&refund.mch_id) } else { refund.mch_id.clone() };
    let (headers, body) = match refund.api {
        PayApi::V2 => {
            if matches!(tamper, Tamper::TimestampStale | Tamper::Signtest | Tamper::Signature) {
                return Err(not_applicable(tamper, "v2 refund notifications (they carry no signature)"));
            }
            let key = v2_key(merchant)?;
            let inner = BTreeMap::from([
                ("out_refund_no".to_owned(), refund.out_refund_no.clone()),
                ("out_trade_no".to_owned(), refund.out_trade_no.clone()),
                ("refund_account".to_owned(), "REFUND_SOURCE_RECHARGE_FUNDS".to_owned()),
                ("refund_fee".to_owned(), refund_fen.to_string()),
                ("refund_id".to_owned(), refund.refund_id.clone()),
                ("refund_recv_accout".to_owned(), "支付用户零钱".to_owned()),
                ("refund_request_source".to_owned(), "API".to_owned()),
                ("refund_status".to_owned(), "SUCCESS".to_owned()),
                ("settlement_refund_fee".to_owned(), refund_fen.to_string()),
                ("settlement_total_fee".to_owned(), refund.total_fen.to_string()),
                ("success_time".to_owned(), now.with_timezone(&china()).format("%Y-%m-%d %H:%M:%S").to_string()),
                ("total_fee".to_owned(), refund.total_fen.to_string()),
                ("transaction_id".to_owned(), transaction_id),
            ]);
            let root = v2::build_xml(&inner);
            let root = format!("<root>{}</root>", root.trim_start_matches("<xml>").trim_end_matches("</xml>"));
            let mut req_info = v2::encrypt_req_info(&root, key);
            if tamper == Tamper::Ciphertext {
                req_info = flip_last_block(&req_info);
            }
            let appid = if tamper == Tamper::Appid { other_id(&order.appid) } else { order.appid.clone() };
            let outer = BTreeMap::from([
                ("return_code".to_owned(), "SUCCESS".to_owned()),
                ("appid".to_owned(), appid),
                ("mch_id".to_owned(), mch_id),
                ("nonce_str".to_owned(), random_alnum(32)),
                ("req_info".to_owned(), req_info),
            ]);
            (v2_headers(), v2_body(&outer, tamper))
        }
        PayApi::V3 => {
            if matches!(tamper, Tamper::Doctype | Tamper::Appid) {
                return Err(not_applicable(tamper, "v3 refund notifications"));
            }
            let resource = v3::RefundResource {
                mchid: mch_id,
                out_trade_no: refund.out_trade_no.clone(),
                transaction_id,
                out_refund_no: refund.out_refund_no.clone(),
                refund_id: refund.refund_id.clone(),
                refund_status: "SUCCESS".into(),
                success_time: Some(china_time_rfc3339(now)),
                user_received_account: Some("支付用户零钱".into()),
                amount: v3::RefundAmount {
                    total_fen: refund.total_fen,
                    refund_fen,
                    payer_total_fen: refund.total_fen,
                    payer_refund_fen: refund_fen,
                },
            };
            let plain = serde_json::to_vec(&resource).map_err(|e| SandboxRefusal::conflict(e.to_string()))?;
            v3_envelope(sandbox, merchant, "REFUND.SUCCESS", "退款成功", "refund", &plain, tamper, now)?
        }
    };
    Ok(Notification {
        kind: "refund",
        api: refund.api,
        reference: refund.out_refund_no.clone(),
        url,
        tamper,
        headers,
        body,
    })
}

/// The `MCHTRANSFER.BATCH.FINISHED` / `.CLOSED` notification of a finished batch.
pub(super) fn transfer_notification(
    sandbox: &PaySandbox,
    batch: &super::pay_api::TransferBatch,
    merchant: &Merchant,
    tamper: Tamper,
    now: DateTime<Utc>,
) -> Result<Notification, SandboxRefusal> {
    if matches!(tamper, Tamper::Doctype | Tamper::Appid) {
        return Err(not_applicable(tamper, "transfer notifications"));
    }
    let url = batch.notify_url.clone().ok_or_else(|| SandboxRefusal::conflict("batch has no notify_url"))?;
    let (event_type, summary) = match batch.batch_status.as_str() {
        "FINISHED" => ("MCHTRANSFER.BATCH.FINISHED", "商家转账批次完成通知"),
        "CLOSED" => ("MCHTRANSFER.BATCH.CLOSED", "商家转账批次关闭通知"),
        _ => return Err(SandboxRefusal::conflict("batch is not finished")),
    };
    let (mut success_num, mut success_amount, mut fail_num, mut fail_amount) = (0i64, 0i64, 0i64, 0i64);
    for d in &batch.details {
        if d.status == "SUCCESS" {
            success_num += 1;
            success_amount += d.amount_fen;
        } else {
            fail_num += 1;
            fail_amount += d.amount_fen;
        }
    }
    if tamper == Tamper::Amount {
        success_amount += 1;
    }
    let total_amount: i64 = batch.details.iter().map(|d| d.amount_fen).sum();
    let resource = v3::TransferBatchResource {
        mchid: if tamper == Tamper::MchId { other_id(&batch.mch_id) } else { batch.mch_id.clone() },
        out_batch_no: batch.out_batch_no.clone(),
        batch_id: batch.batch_id.clone(),
        batch_status: batch.batch_status.clone(),
        total_num: batch.details.len() as i64,
        total_amount,
        success_amount,
        success_num,
        fail_amount,
        fail_num,
        update_time: china_time_rfc3339(batch.updated_at),
        close_reason: batch.close_reason.clone(),
    };
    let plain = serde_json::to_vec(&resource).map_err(|e| SandboxRefusal::conflict(e.to_string()))?;
    let (headers, body) = v3_envelope(sandbox, merchant, event_type, summary, "mch_payment", &plain, tamper, now)?;
    Ok(Notification {
        kind: "transfer",
        api: PayApi::V3,
        reference: batch.out_batch_no.clone(),
        url,
        tamper,
        headers,
        body,
    })
}

fn v2_headers() -> Headers {
    vec![("content-type", "text/xml; charset=utf-8".to_owned())]
}

fn v2_body(fields: &BTreeMap<String, String>, tamper: Tamper) -> String {
    let xml = v2::build_xml(fields);
    if tamper == Tamper::Doctype {
        // The entity is referenced too, as the 2018 attack did.
        let with_ref = xml.replacen("</xml>", "<attach>&xxe;</attach></xml>", 1);
        format!("{DOCTYPE_PROLOGUE}{with_ref}")
    } else {
        xml
    }
}

/// Flips a bit of the last ciphertext byte (base64 in, base64 out).
fn flip_last_block(b64: &str) -> String {
    match BASE64.decode(b64) {
        Ok(mut data) if !data.is_empty() => {
            let last = data.len() - 1;
            data[last] ^= 0x01;
            BASE64.encode(data)
        }
        _ => format!("{b64}AAAA"),
    }
}

/// A v3 notification: resource sealed with the merchant's APIv3 key, body
/// signed with the platform key, tampered as asked.
#[allow(clippy::too_many_arguments)] // the envelope's parts
fn v3_envelope(
    sandbox: &PaySandbox,
    merchant: &Merchant,
    event_type: &str,
    summary: &str,
    original_type: &str,
    plain: &[u8],
    tamper: Tamper,
    now: DateTime<Utc>,
) -> Result<(Headers, String), SandboxRefusal> {
    let key = v3_key(merchant)?;
    let nonce = random_alnum(v3::RESOURCE_NONCE_BYTES);
    let mut ciphertext =
        v3::encrypt_resource(key, &nonce, original_type, plain).map_err(|e| SandboxRefusal::conflict(e.to_string()))?;
    if tamper == Tamper::Ciphertext {
        ciphertext = flip_last_block(&ciphertext);
    }
    let envelope = v3::NotificationEnvelope {
        id: uuid::Uuid::new_v4().to_string(),
        create_time: china_time_rfc3339(now),
        event_type: event_type.to_owned(),
        resource_type: "encrypt-resource".to_owned(),
        resource: v3::EncryptedResource {
            algorithm: v3::RESOURCE_ALGORITHM.to_owned(),
            ciphertext,
            associated_data: original_type.to_owned(),
            original_type: original_type.to_owned(),
            nonce,
        },
        summary: summary.to_owned(),
    };
    let body = serde_json::to_string(&envelope).map_err(|e| SandboxRefusal::conflict(e.to_string()))?;
    let timestamp_unix =
        if tamper == Tamper::TimestampStale { now.timestamp() - STALE_TIMESTAMP_SECS } else { now.timestamp() };
    let timestamp = timestamp_unix.to_string();
    let header_nonce = random_alnum(32);
    let platform_key = &sandbox.shared.platform_key;
    let signature = match tamper {
        Tamper::Signtest => format!("{}{}", v3::SIGNTEST_PREFIX, BASE64.encode(random_alnum(32))),
        // A real signature, of another body: valid base64 that does not verify.
        Tamper::Signature => v3::sign_message(platform_key, &timestamp, &header_nonce, format!("{body} ").as_bytes())
            .map_err(|e| SandboxRefusal::conflict(e.to_string()))?,
        _ => v3::sign_message(platform_key, &timestamp, &header_nonce, body.as_bytes())
            .map_err(|e| SandboxRefusal::conflict(e.to_string()))?,
    };
    let headers = vec![
        ("content-type", "application/json".to_owned()),
        ("wechatpay-timestamp", timestamp),
        ("wechatpay-nonce", header_nonce),
        ("wechatpay-signature", signature),
        ("wechatpay-serial", sandbox.shared.platform_serial.clone()),
        ("wechatpay-signature-type", v3::AUTH_SCHEME.to_owned()),
    ];
    Ok((headers, body))
}

/// Delivers `copies` of the notification as planned and returns every attempt.
pub(super) async fn deliver(sandbox: &PaySandbox, notification: Notification, plan: DeliveryPlan) -> Vec<Delivery> {
    if plan.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(plan.delay_ms)).await;
    }
    let mut out = Vec::new();
    if plan.concurrent {
        let mut tasks = tokio::task::JoinSet::new();
        for copy in 1..=plan.copies {
            let (sandbox, notification) = (sandbox.clone(), notification.clone());
            tasks.spawn(async move { deliver_copy(&sandbox, &notification, copy, plan.retry_until_success).await });
        }
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok(deliveries) => out.extend(deliveries),
                Err(e) => tracing::error!(error = %e, "pay sandbox delivery task failed"),
            }
        }
        out.sort_by_key(|d| d.seq);
    } else {
        for copy in 1..=plan.copies {
            if copy > 1 && plan.delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(plan.delay_ms)).await;
            }
            out.extend(deliver_copy(sandbox, &notification, copy, plan.retry_until_success).await);
        }
    }
    out
}

async fn deliver_copy(sandbox: &PaySandbox, n: &Notification, copy: u32, retry: bool) -> Vec<Delivery> {
    let mut out = Vec::new();
    for attempt in 1..=RETRY_ATTEMPTS_MAX {
        let mut request = sandbox.shared.http.post(&n.url).body(n.body.clone());
        for (name, value) in &n.headers {
            request = request.header(*name, value);
        }
        let (status, body) = match request.send().await {
            Ok(response) => (Some(response.status().as_u16()), read_capped(response).await),
            Err(e) => (None, format!("delivery failed: {}", e.without_url())),
        };
        let accepted = status.is_some_and(|s| is_accepted(n.api, s, &body));
        let delivery = sandbox.record(Delivery {
            seq: 0,
            kind: n.kind.to_owned(),
            api: if n.api == PayApi::V2 { "v2" } else { "v3" }.to_owned(),
            reference: n.reference.clone(),
            notify_url: n.url.clone(),
            tamper: n.tamper,
            copy,
            attempt,
            status,
            body,
            accepted,
            delivered_at: Utc::now(),
        });
        out.push(delivery);
        if accepted || !retry {
            break;
        }
        tokio::time::sleep(Duration::from_millis(RETRY_DELAY_MS * u64::from(attempt))).await;
    }
    out
}

/// The start of an answer body: reading stops past [`ANSWER_CHARS_KEPT_MAX`] bytes.
async fn read_capped(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() <= ANSWER_CHARS_KEPT_MAX {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    String::from_utf8_lossy(&bytes).chars().take(ANSWER_CHARS_KEPT_MAX).collect()
}

/// Pay stops re-sending on: v3 HTTP 200/204; v2 HTTP 2xx with `return_code` SUCCESS.
fn is_accepted(api: PayApi, status: u16, body: &str) -> bool {
    match api {
        PayApi::V3 => status == 200 || status == 204,
        PayApi::V2 => {
            (200..300).contains(&status)
                && xml::parse(body.as_bytes(), &XmlLimits::default())
                    .is_ok_and(|doc| doc.get("return_code") == Some("SUCCESS"))
        }
    }
}
