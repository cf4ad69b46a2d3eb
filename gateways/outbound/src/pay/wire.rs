//! The wire side of the Pay client: request fields and bodies, signatures on
//! requests and answers, the checks before sending, and answers mapped to the
//! `PayGateway` port's types.

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset, NaiveDateTime, SecondsFormat, TimeZone, Utc};
use rand::distr::{Alphanumeric, SampleString};
use reqwest::header::HeaderMap;
use serde::Deserialize;
use subtle::ConstantTimeEq;
use wxcm_commands::pay_port::{
    JsapiOrderRequest, JsapiPayParams, MerchantCredentials, PayPortError, RefundRequest, RemoteTradeState,
    RemoteTransferState, TransferRequest,
};

use wxcm_protocol::pay::v2::{self, SignType};
use wxcm_protocol::pay::v3::{self, V3Headers};
use wxcm_protocol::pay::JsapiParams;
use wxcm_protocol::wechat::xml::{self, XmlLimits};

use super::*;

/// An answer as received.
pub(super) struct RawAnswer {
    pub(super) status: u16,
    pub(super) headers: HeaderMap,
    pub(super) body: Vec<u8>,
}

/// A checked v2 answer: its fields, or the business refusal it carries.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum V2Answer {
    Success(BTreeMap<String, String>),
    Failed { err_code: String, err_code_des: String },
}

/// A v3 answer that is not a transport or server failure.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum V3Answer {
    Success { body: Vec<u8> },
    Failed { status: u16, code: String, message: String },
}

pub(super) fn transport_error(e: reqwest::Error) -> String {
    // Never the URL (none of Pay's carries secrets, but reqwest's text would
    // show it; the WeChat client's do carry them).
    if e.is_timeout() {
        "timeout".to_owned()
    } else if e.is_connect() {
        "connection failed".to_owned()
    } else {
        format!("transport: {}", crate::redact::transport_text(e))
    }
}

pub(super) fn excerpt(body: &[u8]) -> String {
    String::from_utf8_lossy(body).chars().take(ANSWER_EXCERPT_CHARS_MAX).collect()
}

pub(super) fn nonce() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), NONCE_CHARS)
}

pub(super) fn v2_key(merchant: &MerchantCredentials) -> Result<&str, PayPortError> {
    merchant.api_v2_key.as_deref().filter(|k| !k.is_empty()).ok_or_else(|| PayPortError::Settings("api_v2_key".into()))
}

pub(super) fn v3_signer(merchant: &MerchantCredentials) -> Result<(&str, v3::PrivateKey), PayPortError> {
    let serial = merchant
        .merchant_cert_serial
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| PayPortError::Settings("merchant_cert_serial".into()))?;
    let pem = merchant
        .merchant_private_key_pem
        .as_deref()
        .ok_or_else(|| PayPortError::Settings("merchant_private_key_pem".into()))?;
    let key =
        v3::load_private_key_pem(pem).map_err(|e| PayPortError::Settings(format!("merchant private key: {e}")))?;
    Ok((serial, key))
}

/// The request fields with the merchant's ids, a nonce, `sign_type=HMAC-SHA256` and the signature.
pub(super) fn signed_v2_request(
    merchant: &MerchantCredentials,
    key: &str,
    mut fields: BTreeMap<String, String>,
    nonce: &str,
) -> BTreeMap<String, String> {
    fields.insert("appid".into(), merchant.appid.clone());
    fields.insert("mch_id".into(), merchant.mch_id.clone());
    fields.insert("nonce_str".into(), nonce.to_owned());
    fields.insert(v2::SIGN_TYPE_FIELD.into(), SignType::HmacSha256.as_str().into());
    let sign = v2::sign(&fields, key, SignType::HmacSha256);
    fields.insert(v2::SIGN_FIELD.into(), sign);
    fields
}

/// Checks a v2 answer: HTTP status, XML, `return_code`, the signature (Pay
/// signs answers with the request's algorithm, HMAC-SHA256 here, without a
/// `sign_type` field), the merchant ids, then `result_code`.
pub(super) fn read_v2_answer(
    answer: &RawAnswer,
    merchant: &MerchantCredentials,
    key: &str,
) -> Result<V2Answer, PayPortError> {
    if answer.status >= 500 {
        return Err(PayPortError::Unavailable(format!("HTTP {}", answer.status)));
    }
    if !(200..300).contains(&answer.status) {
        return Err(PayPortError::BadAnswer(format!("HTTP {}: {}", answer.status, excerpt(&answer.body))));
    }
    let limits = XmlLimits { body_bytes_max: answer.body.len().max(1), ..XmlLimits::default() };
    let doc = xml::parse(&answer.body, &limits).map_err(|e| PayPortError::BadAnswer(format!("xml: {e}")))?;
    if doc.root != "xml" {
        return Err(PayPortError::BadAnswer("xml root is not <xml>".into()));
    }
    let fields: BTreeMap<String, String> = doc.fields.into_iter().collect();
    map_v2_fields(fields, merchant, key)
}

pub(super) fn map_v2_fields(
    fields: BTreeMap<String, String>,
    merchant: &MerchantCredentials,
    key: &str,
) -> Result<V2Answer, PayPortError> {
    let get = |k: &str| fields.get(k).map(String::as_str).unwrap_or("");
    if get("return_code") != "SUCCESS" {
        let message = get("return_msg").to_owned();
        if message.contains("SYSTEMERROR") {
            return Err(PayPortError::Unavailable(message));
        }
        return Err(PayPortError::Refused { code: "FAIL".into(), message });
    }
    verify_v2_sign(&fields, key)?;
    for (field, ours) in [("appid", &merchant.appid), ("mch_id", &merchant.mch_id)] {
        if fields.get(field).is_some_and(|theirs| theirs != ours) {
            return Err(PayPortError::BadAnswer(format!("answer {field} is not ours")));
        }
    }
    if get("result_code") == "SUCCESS" {
        return Ok(V2Answer::Success(fields));
    }
    let err_code = get("err_code").to_owned();
    let err_code_des = get("err_code_des").to_owned();
    if err_code == "SYSTEMERROR" {
        return Err(PayPortError::Unavailable(format!("SYSTEMERROR: {err_code_des}")));
    }
    Ok(V2Answer::Failed { err_code, err_code_des })
}

/// Constant-time check of an answer's `sign` with HMAC-SHA256.
pub(super) fn verify_v2_sign(fields: &BTreeMap<String, String>, key: &str) -> Result<(), PayPortError> {
    let bad = || PayPortError::BadAnswer("answer signature does not verify".into());
    let received = fields.get(v2::SIGN_FIELD).filter(|s| !s.is_empty()).ok_or_else(bad)?;
    // An answer naming another algorithm is checked with it (v2::verify reads the field).
    if fields.contains_key(v2::SIGN_TYPE_FIELD) {
        return v2::verify(fields, key).map_err(|_| bad());
    }
    let expected = v2::sign(fields, key, SignType::HmacSha256);
    if bool::from(expected.as_bytes().ct_eq(received.to_ascii_uppercase().as_bytes())) {
        Ok(())
    } else {
        Err(bad())
    }
}

#[derive(Deserialize)]
pub(super) struct V3ErrorBody {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

pub(super) fn map_v3_status(status: u16, body: Vec<u8>) -> Result<V3Answer, PayPortError> {
    if (200..300).contains(&status) {
        return Ok(V3Answer::Success { body });
    }
    let parsed: Option<V3ErrorBody> = serde_json::from_slice(&body).ok();
    let (code, message) = match parsed {
        Some(e) if !e.code.is_empty() => (e.code, e.message),
        _ => return Err(PayPortError::BadAnswer(format!("HTTP {status}: {}", excerpt(&body)))),
    };
    if code == "SYSTEM_ERROR" || code == "SYSTEMERROR" {
        return Err(PayPortError::Unavailable(format!("{code}: {message}")));
    }
    Ok(V3Answer::Failed { status, code, message })
}

pub(super) fn v3_answer_headers(headers: &HeaderMap) -> Result<V3Headers, PayPortError> {
    let get = |name: &'static str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| PayPortError::BadAnswer(format!("answer without {name}")))
    };
    Ok(V3Headers {
        timestamp: get("wechatpay-timestamp")?,
        nonce: get("wechatpay-nonce")?,
        signature_b64: get("wechatpay-signature")?,
        serial: get("wechatpay-serial")?,
    })
}

pub(super) fn refused(code: String, message: String) -> PayPortError {
    PayPortError::Refused { code, message }
}

/// A request refused before sending, with the code Pay would have used.
pub(super) fn param_error(message: impl Into<String>) -> PayPortError {
    PayPortError::Refused { code: "PARAM_ERROR".into(), message: format!("checked before sending: {}", message.into()) }
}

pub(super) fn china_offset() -> FixedOffset {
    match FixedOffset::east_opt(CHINA_OFFSET_SECS) {
        Some(offset) => offset,
        None => unreachable!("+08:00 is a valid offset"),
    }
}

/// v2 `time_expire`: `yyyyMMddHHmmss` in China Standard Time.
pub fn time_expire_v2(at: DateTime<Utc>) -> String {
    at.with_timezone(&china_offset()).format("%Y%m%d%H%M%S").to_string()
}

/// v3 `time_expire`: RFC 3339 with the +08:00 offset.
pub fn time_expire_v3(at: DateTime<Utc>) -> String {
    at.with_timezone(&china_offset()).to_rfc3339_opts(SecondsFormat::Secs, false)
}

/// Parses v2 `time_end` / `time_expire` (`yyyyMMddHHmmss`, China Standard Time).
pub fn parse_time_v2(s: &str) -> Option<DateTime<Utc>> {
    if s.len() != 14 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let naive = NaiveDateTime::parse_from_str(s, "%Y%m%d%H%M%S").ok()?;
    china_offset().from_local_datetime(&naive).single().map(|t| t.with_timezone(&Utc))
}

/// Parses an amount in fen: decimal digits only, positive.
pub fn parse_fen(s: &str) -> Option<i64> {
    if s.is_empty() || s.len() > 15 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Characters Pay accepts in `out_trade_no` / `out_refund_no`.
pub(super) fn is_trade_no_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '|' | '*')
}

pub(super) fn check_trade_no(what: &str, no: &str, chars_min: usize, chars_max: usize) -> Result<(), PayPortError> {
    if no.len() < chars_min || no.len() > chars_max || !no.chars().all(is_trade_no_char) {
        return Err(param_error(format!("{what} must be {chars_min}..={chars_max} of [A-Za-z0-9_-|*]")));
    }
    Ok(())
}

pub(super) fn check_short_text(what: &str, value: &str, chars_max: usize) -> Result<(), PayPortError> {
    if value.is_empty() || value.len() > chars_max || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(param_error(format!("{what} must be 1..={chars_max} printable ASCII characters")));
    }
    Ok(())
}

pub(super) fn check_notify_url(url: &str) -> Result<(), PayPortError> {
    check_short_text("notify_url", url, NOTIFY_URL_CHARS_MAX)?;
    if !(url.starts_with("https://") || url.starts_with("http://")) || url.contains('?') {
        return Err(param_error("notify_url must be an http(s) URL without a query"));
    }
    Ok(())
}

/// Checks an order before anything is sent.
pub fn check_order(order: &JsapiOrderRequest, now: DateTime<Utc>) -> Result<(), PayPortError> {
    check_trade_no("out_trade_no", &order.out_trade_no, OUT_TRADE_NO_CHARS_MIN, OUT_TRADE_NO_CHARS_MAX)?;
    if order.description.is_empty() || order.description.len() > DESCRIPTION_BYTES_MAX {
        return Err(param_error(format!("description must be 1..={DESCRIPTION_BYTES_MAX} bytes")));
    }
    if order.amount_fen < 1 || order.amount_fen > AMOUNT_FEN_MAX {
        return Err(param_error(format!("amount_fen must be 1..={AMOUNT_FEN_MAX}")));
    }
    check_short_text("payer_openid", &order.payer_openid, OPENID_CHARS_MAX)?;
    check_notify_url(&order.notify_url)?;
    check_short_text("client_ip", &order.client_ip, CLIENT_IP_CHARS_MAX)?;
    if order.expires_at <= now {
        return Err(param_error("expires_at is in the past"));
    }
    Ok(())
}

/// Checks a refund before anything is sent.
pub fn check_refund(refund: &RefundRequest) -> Result<(), PayPortError> {
    check_trade_no("out_trade_no", &refund.out_trade_no, OUT_TRADE_NO_CHARS_MIN, OUT_TRADE_NO_CHARS_MAX)?;
    check_trade_no("out_refund_no", &refund.out_refund_no, 1, OUT_REFUND_NO_CHARS_MAX)?;
    if refund.total_fen < 1 || refund.total_fen > AMOUNT_FEN_MAX {
        return Err(param_error(format!("total_fen must be 1..={AMOUNT_FEN_MAX}")));
    }
    if refund.refund_fen < 1 || refund.refund_fen > refund.total_fen {
        return Err(param_error("refund_fen must be 1..=total_fen"));
    }
    check_notify_url(&refund.notify_url)
}

pub(super) fn fields(pairs: &[(&str, String)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
}

/// The business fields of a v2 `unifiedorder` (signing adds the rest).
pub fn unifiedorder_fields(order: &JsapiOrderRequest) -> BTreeMap<String, String> {
    fields(&[
        ("body", order.description.clone()),
        ("out_trade_no", order.out_trade_no.clone()),
        ("total_fee", order.amount_fen.to_string()),
        ("spbill_create_ip", order.client_ip.clone()),
        ("notify_url", order.notify_url.clone()),
        ("trade_type", "JSAPI".into()),
        ("openid", order.payer_openid.clone()),
        ("time_expire", time_expire_v2(order.expires_at)),
    ])
}

/// The JSON body of a v3 `transactions/jsapi`.
pub fn v3_jsapi_body(merchant: &MerchantCredentials, order: &JsapiOrderRequest) -> serde_json::Value {
    serde_json::json!({
        "appid": merchant.appid,
        "mchid": merchant.mch_id,
        "description": order.description,
        "out_trade_no": order.out_trade_no,
        "time_expire": time_expire_v3(order.expires_at),
        "notify_url": order.notify_url,
        "amount": {"total": order.amount_fen, "currency": "CNY"},
        "payer": {"openid": order.payer_openid},
        "scene_info": {"payer_client_ip": order.client_ip},
    })
}

/// The JSON body of a v3 refund.
pub fn v3_refund_body(refund: &RefundRequest) -> serde_json::Value {
    serde_json::json!({
        "out_trade_no": refund.out_trade_no,
        "out_refund_no": refund.out_refund_no,
        "notify_url": refund.notify_url,
        "amount": {"refund": refund.refund_fen, "total": refund.total_fen, "currency": "CNY"},
    })
}

/// Maps a v2 `orderquery` answer.
pub(super) fn map_v2_query(answer: V2Answer) -> Result<RemoteTradeState, PayPortError> {
    let fields = match answer {
        V2Answer::Success(fields) => fields,
        V2Answer::Failed { err_code, .. } if err_code == "ORDERNOTEXIST" => return Ok(RemoteTradeState::NotFound),
        V2Answer::Failed { err_code, err_code_des } => return Err(refused(err_code, err_code_des)),
    };
    let get = |k: &str| fields.get(k).cloned().unwrap_or_default();
    let state = get("trade_state");
    Ok(match state.as_str() {
        "SUCCESS" => {
            let total_fen = parse_fen(&get("total_fee")).ok_or_else(|| bad_field("total_fee"))?;
            let paid_at = parse_time_v2(&get("time_end")).ok_or_else(|| bad_field("time_end"))?;
            let transaction_id = get("transaction_id");
            if transaction_id.is_empty() {
                return Err(bad_field("transaction_id"));
            }
            RemoteTradeState::Success { transaction_id, total_fen, appid: get("appid"), mch_id: get("mch_id"), paid_at }
        }
        _ => trade_state(state),
    })
}

pub(super) fn trade_state(state: String) -> RemoteTradeState {
    match state.as_str() {
        "NOTPAY" => RemoteTradeState::NotPay,
        "CLOSED" => RemoteTradeState::Closed,
        "REFUND" => RemoteTradeState::Refund,
        _ => RemoteTradeState::Pending(state),
    }
}

pub(super) fn bad_field(field: &str) -> PayPortError {
    PayPortError::BadAnswer(format!("answer field {field} missing or malformed"))
}

#[derive(Deserialize)]
pub(super) struct V3Transaction {
    #[serde(default)]
    appid: String,
    #[serde(default)]
    mchid: String,
    trade_state: String,
    #[serde(default)]
    transaction_id: Option<String>,
    #[serde(default)]
    success_time: Option<String>,
    #[serde(default)]
    amount: Option<V3Amount>,
}

#[derive(Deserialize)]
pub(super) struct V3Amount {
    #[serde(default)]
    total: Option<i64>,
}

/// Maps a v3 transaction query answer.
pub(super) fn map_v3_query(answer: V3Answer) -> Result<RemoteTradeState, PayPortError> {
    let body = match answer {
        V3Answer::Success { body } => body,
        V3Answer::Failed { code, .. } if code == "ORDER_NOT_EXIST" || code == "ORDERNOTEXIST" => {
            return Ok(RemoteTradeState::NotFound)
        }
        V3Answer::Failed { code, message, .. } => return Err(refused(code, message)),
    };
    let tx: V3Transaction =
        serde_json::from_slice(&body).map_err(|e| PayPortError::BadAnswer(format!("transaction json: {e}")))?;
    if tx.trade_state != "SUCCESS" {
        return Ok(trade_state(tx.trade_state));
    }
    let total_fen = tx.amount.and_then(|a| a.total).filter(|t| *t > 0).ok_or_else(|| bad_field("amount.total"))?;
    let paid_at = tx
        .success_time
        .as_deref()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| bad_field("success_time"))?;
    let transaction_id = tx.transaction_id.filter(|t| !t.is_empty()).ok_or_else(|| bad_field("transaction_id"))?;
    Ok(RemoteTradeState::Success { transaction_id, total_fen, appid: tx.appid, mch_id: tx.mchid, paid_at })
}

pub(super) fn port_params(p: JsapiParams) -> JsapiPayParams {
    JsapiPayParams {
        app_id: p.app_id,
        time_stamp: p.time_stamp,
        nonce_str: p.nonce_str,
        package: p.package,
        sign_type: p.sign_type,
        pay_sign: p.pay_sign,
    }
}

/// A prepay id as Pay returns it: short, printable, safe inside `package`.
pub(super) fn check_prepay_id(id: Option<&str>) -> Result<String, PayPortError> {
    match id {
        Some(id) if !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') => {
            Ok(id.to_owned())
        }
        _ => Err(bad_field("prepay_id")),
    }
}

// ---------------------------------------------------------------- transfers (商家转账到零钱)

/// Pay's limits on transfer numbers: 5..=32 letters and digits.
pub(super) fn check_transfer_no(what: &'static str, no: &str) -> Result<(), PayPortError> {
    if !(5..=32).contains(&no.len()) || !no.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(PayPortError::Settings(format!("{what} must be 5..=32 letters or digits")));
    }
    Ok(())
}

/// Remarks and batch names: at most 32 characters.
const TRANSFER_TEXT_CHARS_MAX: usize = 32;

/// The body of `POST /v3/transfer/batches`: one batch of one detail.
pub fn transfer_body(
    merchant: &MerchantCredentials,
    t: &TransferRequest,
) -> Result<v3::TransferBatchRequest, PayPortError> {
    check_transfer_no("out_batch_no", &t.out_batch_no)?;
    check_transfer_no("out_detail_no", &t.out_detail_no)?;
    if t.amount_fen <= 0 || t.amount_fen > AMOUNT_FEN_MAX {
        return Err(PayPortError::Settings(format!("transfer amount must be 1..={AMOUNT_FEN_MAX} fen")));
    }
    check_short_text("openid", &t.openid, OPENID_CHARS_MAX)?;
    check_short_text("notify_url", &t.notify_url, NOTIFY_URL_CHARS_MAX)?;
    let remark: String = t.remark.chars().take(TRANSFER_TEXT_CHARS_MAX).collect();
    Ok(v3::TransferBatchRequest {
        appid: merchant.appid.clone(),
        out_batch_no: t.out_batch_no.clone(),
        batch_name: remark.clone(),
        batch_remark: remark.clone(),
        total_amount: t.amount_fen,
        total_num: 1,
        transfer_detail_list: vec![v3::TransferDetailInput {
            out_detail_no: t.out_detail_no.clone(),
            transfer_amount: t.amount_fen,
            transfer_remark: remark,
            openid: t.openid.clone(),
            user_name: None,
        }],
        transfer_scene_id: None,
        notify_url: Some(t.notify_url.clone()),
    })
}

/// A transfer detail answer as the port's state; another merchant's or
/// another detail's answer is refused.
pub(super) fn map_transfer_query(
    answer: V3Answer,
    merchant: &MerchantCredentials,
    out_detail_no: &str,
) -> Result<RemoteTransferState, PayPortError> {
    let body = match answer {
        V3Answer::Success { body } => body,
        V3Answer::Failed { code, .. } if code == "NOT_FOUND" || code == "RESOURCE_NOT_EXISTS" => {
            return Ok(RemoteTransferState::NotFound)
        }
        V3Answer::Failed { code, message, .. } => return Err(refused(code, message)),
    };
    let d: v3::TransferDetail =
        serde_json::from_slice(&body).map_err(|e| PayPortError::BadAnswer(format!("transfer detail json: {e}")))?;
    if d.mchid != merchant.mch_id || d.out_detail_no != out_detail_no {
        return Err(PayPortError::BadAnswer("the answer names another merchant or transfer".into()));
    }
    Ok(match d.detail_status.as_str() {
        "SUCCESS" => {
            RemoteTransferState::Success { detail_id: d.detail_id, amount_fen: d.transfer_amount, openid: d.openid }
        }
        "FAIL" => RemoteTransferState::Failed { reason: d.fail_reason.unwrap_or_else(|| "FAIL".into()) },
        other => RemoteTransferState::Pending(other.to_owned()),
    })
}
