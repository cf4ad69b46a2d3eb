//! The merchant endpoints of the simulator, v2 (XML) and v3 (JSON), with
//! Pay's checks: signatures, merchant ids, integer amounts, order rules
//! (ORDERPAID, ORDERCLOSED, refunds within the paid amount).

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::Deserialize;
use wxcm_commands::pay_port::PayApi;

use super::{
    prepay_id, random_alnum, refund_id, Merchant, Order, PaySandbox, Refund, TradeState, ORDERS_MAX,
    ORDER_LIFETIME_SECS_DEFAULT, REFUNDS_MAX,
};
use wxcm_outbound::pay::{parse_fen, parse_time_v2, time_expire_v2};
use wxcm_protocol::pay::v2::{self, SignType};
use wxcm_protocol::pay::v3;
use wxcm_protocol::wechat::xml::{self, XmlLimits};

type Fields = BTreeMap<String, String>;

/// A business refusal: v2 `err_code` / v3 `code`, with the v3 HTTP status.
struct BizError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

fn biz(status: StatusCode, code: &'static str, message: impl Into<String>) -> BizError {
    BizError { status, code, message: message.into() }
}

/// What a new order asks for, whichever API it came through.
struct NewOrder {
    api: PayApi,
    sign_type: SignType,
    out_trade_no: String,
    total_fen: i64,
    openid: String,
    notify_url: String,
    time_expire: Option<DateTime<Utc>>,
}

fn short_ok(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max
}

impl PaySandbox {
    /// Creates the order, or returns the existing one's prepay id when the same
    /// order is asked again (Pay's idempotent unified order).
    fn create_order(&self, merchant: &Merchant, new: NewOrder, now: DateTime<Utc>) -> Result<String, BizError> {
        if !short_ok(&new.out_trade_no, 32) || !short_ok(&new.openid, 128) || !short_ok(&new.notify_url, 256) {
            return Err(biz(StatusCode::BAD_REQUEST, "PARAM_ERROR", "out_trade_no, openid or notify_url invalid"));
        }
        if new.total_fen < 1 {
            return Err(biz(StatusCode::BAD_REQUEST, "PARAM_ERROR", "total must be a positive integer (fen)"));
        }
        let time_expire = new.time_expire.unwrap_or(now + ChronoDuration::seconds(ORDER_LIFETIME_SECS_DEFAULT));
        if time_expire <= now {
            return Err(biz(StatusCode::BAD_REQUEST, "PARAM_ERROR", "time_expire is in the past"));
        }
        let mut state = self.state();
        if let Some(existing) = state.orders.get(&new.out_trade_no) {
            return match existing.state {
                TradeState::Success => Err(biz(StatusCode::FORBIDDEN, "ORDERPAID", "order already paid")),
                TradeState::Closed => Err(biz(StatusCode::BAD_REQUEST, "ORDERCLOSED", "order closed")),
                TradeState::NotPay
                    if existing.mch_id == merchant.mch_id
                        && existing.api == new.api
                        && existing.total_fen == new.total_fen
                        && existing.openid == new.openid =>
                {
                    Ok(existing.prepay_id.clone())
                }
                TradeState::NotPay => {
                    Err(biz(StatusCode::FORBIDDEN, "OUT_TRADE_NO_USED", "out_trade_no used with other parameters"))
                }
            };
        }
        if state.orders.len() >= ORDERS_MAX {
            return Err(biz(StatusCode::TOO_MANY_REQUESTS, "FREQUENCY_LIMITED", "sandbox order store is full"));
        }
        let prepay = prepay_id(now);
        let order = Order {
            api: new.api,
            sign_type: new.sign_type,
            mch_id: merchant.mch_id.clone(),
            appid: merchant.appid.clone(),
            out_trade_no: new.out_trade_no.clone(),
            total_fen: new.total_fen,
            openid: new.openid,
            notify_url: new.notify_url,
            time_expire,
            prepay_id: prepay.clone(),
            state: TradeState::NotPay,
            transaction_id: None,
            paid_at: None,
            refunded_fen: 0,
            created_at: now,
        };
        state.orders.insert(new.out_trade_no, order);
        Ok(prepay)
    }

    /// The merchant's order (another merchant's is "not found").
    fn find_order(&self, merchant: &Merchant, out_trade_no: &str) -> Result<Order, BizError> {
        self.state()
            .orders
            .get(out_trade_no)
            .filter(|o| o.mch_id == merchant.mch_id)
            .cloned()
            .ok_or_else(|| biz(StatusCode::NOT_FOUND, "ORDERNOTEXIST", "order does not exist"))
    }

    fn close_order(&self, merchant: &Merchant, out_trade_no: &str) -> Result<(), BizError> {
        let mut state = self.state();
        let order = state
            .orders
            .get_mut(out_trade_no)
            .filter(|o| o.mch_id == merchant.mch_id)
            .ok_or_else(|| biz(StatusCode::NOT_FOUND, "ORDERNOTEXIST", "order does not exist"))?;
        match order.state {
            TradeState::Success => Err(biz(StatusCode::BAD_REQUEST, "ORDERPAID", "order already paid")),
            TradeState::Closed => Err(biz(StatusCode::BAD_REQUEST, "ORDERCLOSED", "order already closed")),
            TradeState::NotPay => {
                order.state = TradeState::Closed;
                Ok(())
            }
        }
    }

    /// Records a refund of a paid order: the total must match and all refunds
    /// together stay within the paid amount. The same refund asked again is
    /// answered again.
    #[allow(clippy::too_many_arguments)] // the refund request's fields
    fn create_refund(
        &self,
        api: PayApi,
        merchant: &Merchant,
        out_trade_no: &str,
        out_refund_no: &str,
        total_fen: i64,
        refund_fen: i64,
        notify_url: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<(Refund, Order), BizError> {
        if !short_ok(out_refund_no, 64) || notify_url.as_deref().is_some_and(|u| !short_ok(u, 256)) {
            return Err(biz(StatusCode::BAD_REQUEST, "PARAM_ERROR", "out_refund_no or notify_url invalid"));
        }
        let mut state = self.state();
        let order = state
            .orders
            .get(out_trade_no)
            .filter(|o| o.mch_id == merchant.mch_id)
            .cloned()
            .ok_or_else(|| biz(StatusCode::NOT_FOUND, "ORDERNOTEXIST", "order does not exist"))?;
        if let Some(existing) = state.refunds.get(out_refund_no) {
            if existing.out_trade_no == out_trade_no && existing.refund_fen == refund_fen {
                return Ok((existing.clone(), order));
            }
            return Err(biz(StatusCode::FORBIDDEN, "INVALID_REQUEST", "out_refund_no used with other parameters"));
        }
        if order.state != TradeState::Success {
            return Err(biz(StatusCode::FORBIDDEN, "TRADE_STATE_ERROR", "order is not paid"));
        }
        if total_fen != order.total_fen || refund_fen < 1 {
            return Err(biz(StatusCode::BAD_REQUEST, "PARAM_ERROR", "total differs from the order or refund < 1"));
        }
        if refund_fen > order.total_fen - order.refunded_fen {
            return Err(biz(StatusCode::FORBIDDEN, "NOTENOUGH", "refund exceeds what is left of the paid amount"));
        }
        if state.refunds.len() >= REFUNDS_MAX {
            return Err(biz(StatusCode::TOO_MANY_REQUESTS, "FREQUENCY_LIMITED", "sandbox refund store is full"));
        }
        let refund = Refund {
            api,
            mch_id: merchant.mch_id.clone(),
            out_trade_no: out_trade_no.to_owned(),
            out_refund_no: out_refund_no.to_owned(),
            refund_id: refund_id(now),
            refund_fen,
            total_fen,
            notify_url,
            created_at: now,
        };
        state.refunds.insert(out_refund_no.to_owned(), refund.clone());
        let order = match state.orders.get_mut(out_trade_no) {
            Some(o) => {
                o.refunded_fen += refund_fen;
                o.clone()
            }
            None => order,
        };
        Ok((refund, order))
    }
}

// ---------------------------------------------------------------- v2 (XML)

/// An authenticated v2 request: its fields, the merchant, the algorithm it was signed with.
struct V2Request {
    fields: Fields,
    merchant: Merchant,
    key: String,
    sign_type: SignType,
}

impl V2Request {
    fn get(&self, k: &str) -> &str {
        self.fields.get(k).map(String::as_str).unwrap_or("")
    }
}

fn xml_response(body: String) -> Response {
    (StatusCode::OK, [("content-type", "text/xml; charset=utf-8")], body).into_response()
}

/// `return_code=FAIL`: the request itself is wrong (unsigned answer, like Pay).
fn v2_return_fail(message: &str) -> Response {
    let f = Fields::from([("return_code".into(), "FAIL".into()), ("return_msg".into(), message.into())]);
    xml_response(v2::build_xml(&f))
}

/// A signed answer (with the request's algorithm and, like Pay, no `sign_type`
/// field): `result_code` SUCCESS with `extra`, or FAIL with the error.
fn v2_answer(req: &V2Request, result: Result<Fields, BizError>) -> Response {
    let mut f = Fields::from([
        ("return_code".into(), "SUCCESS".into()),
        ("return_msg".into(), "OK".into()),
        ("appid".into(), req.merchant.appid.clone()),
        ("mch_id".into(), req.merchant.mch_id.clone()),
        ("nonce_str".into(), random_alnum(32)),
    ]);
    match result {
        Ok(extra) => {
            f.insert("result_code".into(), "SUCCESS".into());
            f.extend(extra);
        }
        Err(e) => {
            f.insert("result_code".into(), "FAIL".into());
            f.insert("err_code".into(), e.code.into());
            f.insert("err_code_des".into(), e.message);
        }
    }
    let sign = v2::sign(&f, &req.key, req.sign_type);
    f.insert(v2::SIGN_FIELD.into(), sign);
    xml_response(v2::build_xml(&f))
}

/// Parses and authenticates a v2 request; the error is the `return_msg` of the `FAIL` answer.
fn v2_authenticate(sandbox: &PaySandbox, body: &[u8]) -> Result<V2Request, String> {
    let doc = xml::parse(body, &XmlLimits::default()).map_err(|e| format!("XML format error: {e}"))?;
    if doc.root != "xml" {
        return Err("XML root must be <xml>".into());
    }
    let fields: Fields = doc.fields.into_iter().collect();
    let mch_id = fields.get("mch_id").cloned().unwrap_or_default();
    let merchant = sandbox.state().merchants.get(&mch_id).cloned().ok_or("mch_id does not exist")?;
    let key = merchant.api_v2_key.clone().ok_or("merchant has no API v2 key")?;
    let sign_type = SignType::from_fields(&fields).map_err(|_| "sign_type invalid")?;
    v2::verify(&fields, &key).map_err(|_| "signature error")?;
    if fields.get("appid") != Some(&merchant.appid) {
        return Err("appid and mch_id do not match".into());
    }
    Ok(V2Request { fields, merchant, key, sign_type })
}

pub(super) async fn v2_unifiedorder(State(sandbox): State<PaySandbox>, body: Bytes) -> Response {
    let req = match v2_authenticate(&sandbox, &body) {
        Ok(req) => req,
        Err(message) => return v2_return_fail(&message),
    };
    let now = Utc::now();
    let result = (|| {
        if req.get("trade_type") != "JSAPI" {
            return Err(biz(StatusCode::BAD_REQUEST, "PARAM_ERROR", "trade_type must be JSAPI"));
        }
        if req.get("body").is_empty() || req.get("spbill_create_ip").is_empty() {
            return Err(biz(StatusCode::BAD_REQUEST, "PARAM_ERROR", "body and spbill_create_ip are required"));
        }
        let total_fen = parse_fen(req.get("total_fee"))
            .ok_or_else(|| biz(StatusCode::BAD_REQUEST, "PARAM_ERROR", "total_fee must be an integer (fen)"))?;
        let time_expire = match req.get("time_expire") {
            "" => None,
            s => Some(
                parse_time_v2(s)
                    .ok_or_else(|| biz(StatusCode::BAD_REQUEST, "PARAM_ERROR", "time_expire is not yyyyMMddHHmmss"))?,
            ),
        };
        let new = NewOrder {
            api: PayApi::V2,
            sign_type: req.sign_type,
            out_trade_no: req.get("out_trade_no").to_owned(),
            total_fen,
            openid: req.get("openid").to_owned(),
            notify_url: req.get("notify_url").to_owned(),
            time_expire,
        };
        let prepay = sandbox.create_order(&req.merchant, new, now)?;
        Ok(Fields::from([("prepay_id".into(), prepay), ("trade_type".into(), "JSAPI".into())]))
    })();
    v2_answer(&req, result)
}

pub(super) async fn v2_orderquery(State(sandbox): State<PaySandbox>, body: Bytes) -> Response {
    let req = match v2_authenticate(&sandbox, &body) {
        Ok(req) => req,
        Err(message) => return v2_return_fail(&message),
    };
    let result = sandbox.find_order(&req.merchant, req.get("out_trade_no")).map(|o| {
        let mut f = Fields::from([
            ("out_trade_no".into(), o.out_trade_no.clone()),
            ("trade_state".into(), o.trade_state().into()),
            ("trade_state_desc".into(), o.trade_state().into()),
            ("openid".into(), o.openid.clone()),
            ("trade_type".into(), "JSAPI".into()),
        ]);
        if let (Some(tx), Some(paid_at)) = (&o.transaction_id, o.paid_at) {
            f.insert("transaction_id".into(), tx.clone());
            f.insert("total_fee".into(), o.total_fen.to_string());
            f.insert("cash_fee".into(), o.total_fen.to_string());
            f.insert("fee_type".into(), "CNY".into());
            f.insert("bank_type".into(), "OTHERS".into());
            f.insert("is_subscribe".into(), "N".into());
            f.insert("time_end".into(), time_expire_v2(paid_at));
        }
        f
    });
    v2_answer(&req, result)
}

pub(super) async fn v2_closeorder(State(sandbox): State<PaySandbox>, body: Bytes) -> Response {
    let req = match v2_authenticate(&sandbox, &body) {
        Ok(req) => req,
        Err(message) => return v2_return_fail(&message),
    };
    let result = sandbox.close_order(&req.merchant, req.get("out_trade_no")).map(|()| Fields::new());
    v2_answer(&req, result)
}

pub(super) async fn v2_refund(State(sandbox): State<PaySandbox>, body: Bytes) -> Response {
    let req = match v2_authenticate(&sandbox, &body) {
        Ok(req) => req,
        Err(message) => return v2_return_fail(&message),
    };
    let result = (|| {
        let fen = |k: &str| {
            parse_fen(req.get(k))
                .ok_or_else(|| biz(StatusCode::BAD_REQUEST, "PARAM_ERROR", format!("{k} must be an integer (fen)")))
        };
        let notify_url = Some(req.get("notify_url").to_owned()).filter(|u| !u.is_empty());
        let (refund, order) = sandbox.create_refund(
            PayApi::V2,
            &req.merchant,
            req.get("out_trade_no"),
            req.get("out_refund_no"),
            fen("total_fee")?,
            fen("refund_fee")?,
            notify_url,
            Utc::now(),
        )?;
        Ok(Fields::from([
            ("transaction_id".into(), order.transaction_id.unwrap_or_default()),
            ("out_trade_no".into(), refund.out_trade_no),
            ("out_refund_no".into(), refund.out_refund_no),
            ("refund_id".into(), refund.refund_id),
            ("refund_fee".into(), refund.refund_fen.to_string()),
            ("total_fee".into(), refund.total_fen.to_string()),
            ("cash_fee".into(), refund.total_fen.to_string()),
        ]))
    })();
    v2_answer(&req, result)
}

// ---------------------------------------------------------------- v3 (JSON)

impl PaySandbox {
    /// A v3 answer signed with the platform key, like every answer of Pay.
    fn v3_response(&self, status: StatusCode, body: Option<serde_json::Value>) -> Response {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let timestamp = Utc::now().timestamp().to_string();
        let nonce = random_alnum(32);
        let mut headers = HeaderMap::new();
        match v3::sign_message(&self.shared.platform_key, &timestamp, &nonce, body.as_bytes()) {
            Ok(signature) => {
                for (name, value) in [
                    ("wechatpay-timestamp", timestamp),
                    ("wechatpay-nonce", nonce),
                    ("wechatpay-signature", signature),
                    ("wechatpay-serial", self.shared.platform_serial.clone()),
                    ("request-id", random_alnum(24)),
                ] {
                    if let Ok(v) = HeaderValue::from_str(&value) {
                        headers.insert(name, v);
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "pay sandbox could not sign an answer"),
        }
        if !body.is_empty() {
            headers.insert("content-type", HeaderValue::from_static("application/json"));
        }
        (status, headers, body).into_response()
    }

    fn v3_error(&self, e: BizError) -> Response {
        self.v3_response(e.status, Some(serde_json::json!({"code": e.code, "message": e.message})))
    }

    /// Checks the merchant `Authorization` of a v3 request.
    fn v3_authenticate(
        &self,
        method: &Method,
        uri: &axum::http::Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Merchant, BizError> {
        let sign_error = |m: &str| biz(StatusCode::UNAUTHORIZED, "SIGN_ERROR", m);
        let header = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| sign_error("Authorization header missing"))?;
        let auth = v3::parse_authorization_header(header).map_err(|e| sign_error(&e.to_string()))?;
        let merchant = self
            .state()
            .merchants
            .get(&auth.mchid)
            .cloned()
            .ok_or_else(|| biz(StatusCode::BAD_REQUEST, "MCH_NOT_EXISTS", "mchid does not exist"))?;
        let key = merchant.public_key.as_ref().ok_or_else(|| sign_error("merchant public key not registered"))?;
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        v3::verify_authorization(&auth, key, method.as_str(), path, body, Utc::now().timestamp())
            .map_err(|e| sign_error(&e.to_string()))?;
        Ok(merchant)
    }
}

fn param_error(message: impl Into<String>) -> BizError {
    biz(StatusCode::BAD_REQUEST, "PARAM_ERROR", message)
}

fn parse_json<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, BizError> {
    serde_json::from_slice(body).map_err(|e| param_error(format!("body: {e}")))
}

#[derive(Deserialize)]
struct V3JsapiBody {
    appid: String,
    mchid: String,
    description: String,
    out_trade_no: String,
    #[serde(default)]
    time_expire: Option<String>,
    notify_url: String,
    amount: V3OrderAmount,
    payer: V3Payer,
}

#[derive(Deserialize)]
struct V3OrderAmount {
    total: i64,
    #[serde(default)]
    currency: Option<String>,
}

#[derive(Deserialize)]
struct V3Payer {
    openid: String,
}

#[derive(Deserialize)]
struct V3CloseBody {
    mchid: String,
}

#[derive(Deserialize)]
struct V3RefundBody {
    out_trade_no: String,
    out_refund_no: String,
    #[serde(default)]
    notify_url: Option<String>,
    amount: V3RefundAmount,
}

#[derive(Deserialize)]
struct V3RefundAmount {
    refund: i64,
    total: i64,
    currency: String,
}

fn check_currency(currency: Option<&str>) -> Result<(), BizError> {
    match currency {
        None | Some("CNY") => Ok(()),
        Some(_) => Err(param_error("currency must be CNY")),
    }
}

/// Request parts every v3 handler needs to authenticate.
type V3Parts = (Method, OriginalUri, HeaderMap, Bytes);

fn v3_run(
    sandbox: &PaySandbox,
    (method, OriginalUri(uri), headers, body): V3Parts,
    handle: impl FnOnce(&Merchant, &[u8]) -> Result<(StatusCode, Option<serde_json::Value>), BizError>,
) -> Response {
    let result = sandbox.v3_authenticate(&method, &uri, &headers, &body).and_then(|m| handle(&m, &body));
    match result {
        Ok((status, body)) => sandbox.v3_response(status, body),
        Err(e) => sandbox.v3_error(e),
    }
}

pub(super) async fn v3_jsapi(
    State(sandbox): State<PaySandbox>,
    method: Method,
    uri: OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = Utc::now();
    v3_run(&sandbox, (method, uri, headers, body), |merchant, body| {
        let req: V3JsapiBody = parse_json(body)?;
        if req.mchid != merchant.mch_id {
            return Err(param_error("mchid differs from the Authorization mchid"));
        }
        if req.appid != merchant.appid {
            return Err(biz(StatusCode::BAD_REQUEST, "APPID_MCHID_NOT_MATCH", "appid and mchid do not match"));
        }
        if req.description.is_empty() || req.description.len() > 127 {
            return Err(param_error("description must be 1..=127 bytes"));
        }
        check_currency(req.amount.currency.as_deref())?;
        let time_expire = match req.time_expire.as_deref() {
            None => None,
            Some(s) => Some(
                DateTime::parse_from_rfc3339(s)
                    .map_err(|_| param_error("time_expire is not RFC 3339"))?
                    .with_timezone(&Utc),
            ),
        };
        let new = NewOrder {
            api: PayApi::V3,
            sign_type: SignType::Md5,
            out_trade_no: req.out_trade_no,
            total_fen: req.amount.total,
            openid: req.payer.openid,
            notify_url: req.notify_url,
            time_expire,
        };
        let prepay = sandbox.create_order(merchant, new, now)?;
        Ok((StatusCode::OK, Some(serde_json::json!({"prepay_id": prepay}))))
    })
}

#[derive(Deserialize)]
pub(super) struct MchidQuery {
    #[serde(default)]
    mchid: String,
}

pub(super) async fn v3_query(
    State(sandbox): State<PaySandbox>,
    Path(out_trade_no): Path<String>,
    axum::extract::Query(query): axum::extract::Query<MchidQuery>,
    method: Method,
    uri: OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    v3_run(&sandbox, (method, uri, headers, body), |merchant, _| {
        if query.mchid != merchant.mch_id {
            return Err(param_error("mchid query parameter differs from the Authorization mchid"));
        }
        let o = sandbox
            .find_order(merchant, &out_trade_no)
            .map_err(|_| biz(StatusCode::NOT_FOUND, "ORDER_NOT_EXIST", "order does not exist"))?;
        let mut tx = serde_json::json!({
            "appid": o.appid,
            "mchid": o.mch_id,
            "out_trade_no": o.out_trade_no,
            "trade_type": "JSAPI",
            "trade_state": o.trade_state(),
            "trade_state_desc": o.trade_state(),
            "payer": {"openid": o.openid},
            "amount": {"total": o.total_fen, "currency": "CNY"},
        });
        if let (Some(id), Some(paid_at)) = (&o.transaction_id, o.paid_at) {
            tx["transaction_id"] = id.clone().into();
            tx["success_time"] = super::push::china_time_rfc3339(paid_at).into();
            tx["bank_type"] = "OTHERS".into();
            tx["amount"] = serde_json::json!({
                "total": o.total_fen, "payer_total": o.total_fen, "currency": "CNY", "payer_currency": "CNY"
            });
        }
        Ok((StatusCode::OK, Some(tx)))
    })
}

pub(super) async fn v3_close(
    State(sandbox): State<PaySandbox>,
    Path(out_trade_no): Path<String>,
    method: Method,
    uri: OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    v3_run(&sandbox, (method, uri, headers, body), |merchant, body| {
        let req: V3CloseBody = parse_json(body)?;
        if req.mchid != merchant.mch_id {
            return Err(param_error("mchid differs from the Authorization mchid"));
        }
        match sandbox.close_order(merchant, &out_trade_no) {
            // Closing a closed order again is harmless.
            Ok(()) => Ok((StatusCode::NO_CONTENT, None)),
            Err(e) if e.code == "ORDERCLOSED" => Ok((StatusCode::NO_CONTENT, None)),
            Err(e) if e.code == "ORDERNOTEXIST" => {
                Err(biz(StatusCode::NOT_FOUND, "ORDER_NOT_EXIST", "order does not exist"))
            }
            Err(e) => Err(e),
        }
    })
}

pub(super) async fn v3_refund(
    State(sandbox): State<PaySandbox>,
    method: Method,
    uri: OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    v3_run(&sandbox, (method, uri, headers, body), |merchant, body| {
        let req: V3RefundBody = parse_json(body)?;
        check_currency(Some(&req.amount.currency))?;
        let now = Utc::now();
        let (refund, order) = sandbox
            .create_refund(
                PayApi::V3,
                merchant,
                &req.out_trade_no,
                &req.out_refund_no,
                req.amount.total,
                req.amount.refund,
                req.notify_url,
                now,
            )
            .map_err(|e| match e.code {
                "NOTENOUGH" => biz(e.status, "NOT_ENOUGH", e.message),
                "ORDERNOTEXIST" => biz(e.status, "RESOURCE_NOT_EXISTS", e.message),
                _ => e,
            })?;
        Ok((
            StatusCode::OK,
            Some(serde_json::json!({
                "refund_id": refund.refund_id,
                "out_refund_no": refund.out_refund_no,
                "transaction_id": order.transaction_id,
                "out_trade_no": refund.out_trade_no,
                "channel": "ORIGINAL",
                "user_received_account": "支付用户零钱",
                "create_time": super::push::china_time_rfc3339(refund.created_at),
                "status": "PROCESSING",
                "amount": {
                    "total": refund.total_fen, "refund": refund.refund_fen,
                    "payer_total": refund.total_fen, "payer_refund": refund.refund_fen, "currency": "CNY"
                },
            })),
        ))
    })
}

// ---------------------------------------------------------------- v3 merchant transfers (商家转账到零钱)

/// Details one batch takes at most (Pay's limit).
const TRANSFER_DETAILS_MAX: usize = 1_000;
/// Batch names, remarks: at most 32 characters.
const TRANSFER_TEXT_CHARS_MAX: usize = 32;

fn transfer_no_ok(s: &str) -> bool {
    (5..=32).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn transfer_text_ok(s: &str) -> bool {
    let n = s.chars().count();
    (1..=TRANSFER_TEXT_CHARS_MAX).contains(&n)
}

impl PaySandbox {
    /// Creates a transfer batch, or answers the same batch again for the same
    /// request under a known `out_batch_no` (another request under it is refused).
    fn create_transfer(
        &self,
        merchant: &Merchant,
        req: v3::TransferBatchRequest,
        fingerprint: serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<(TransferBatch, bool), BizError> {
        if req.appid != merchant.appid {
            return Err(biz(StatusCode::BAD_REQUEST, "INVALID_REQUEST", "appid and mchid do not match"));
        }
        if !transfer_no_ok(&req.out_batch_no) {
            return Err(param_error("out_batch_no must be 5..=32 letters or digits"));
        }
        if !transfer_text_ok(&req.batch_name) || !transfer_text_ok(&req.batch_remark) {
            return Err(param_error("batch_name and batch_remark must be 1..=32 characters"));
        }
        let n = req.transfer_detail_list.len();
        if n == 0 || n > TRANSFER_DETAILS_MAX || req.total_num != n as i64 {
            return Err(param_error("total_num must equal the 1..=1000 details"));
        }
        let mut sum: i64 = 0;
        let mut seen = std::collections::HashSet::new();
        for d in &req.transfer_detail_list {
            if !transfer_no_ok(&d.out_detail_no) || !seen.insert(d.out_detail_no.clone()) {
                return Err(param_error("out_detail_no must be 5..=32 letters or digits, unique in the batch"));
            }
            if d.transfer_amount < 1 || !transfer_text_ok(&d.transfer_remark) || !short_ok(&d.openid, 128) {
                return Err(param_error("each detail needs an amount ≥ 1 fen, a 1..=32 character remark, an openid"));
            }
            sum = sum.checked_add(d.transfer_amount).ok_or_else(|| param_error("total_amount overflows"))?;
        }
        if sum != req.total_amount {
            return Err(param_error("total_amount must equal the sum of the details"));
        }
        let mut state = self.state();
        if let Some(existing) = state.transfers.get(&req.out_batch_no) {
            if existing.mch_id == merchant.mch_id && existing.fingerprint == fingerprint {
                return Ok((existing.clone(), false));
            }
            return Err(biz(StatusCode::BAD_REQUEST, "INVALID_REQUEST", "out_batch_no already used by another batch"));
        }
        if state.transfers.len() >= super::TRANSFERS_MAX {
            return Err(biz(StatusCode::TOO_MANY_REQUESTS, "FREQUENCY_LIMITED", "simulator transfer store is full"));
        }
        let batch = TransferBatch {
            mch_id: merchant.mch_id.clone(),
            appid: req.appid.clone(),
            out_batch_no: req.out_batch_no.clone(),
            batch_id: super::transfer_batch_id(now),
            batch_status: "PROCESSING".into(),
            close_reason: None,
            notify_url: req.notify_url.clone(),
            details: req
                .transfer_detail_list
                .iter()
                .map(|d| TransferDetailState {
                    out_detail_no: d.out_detail_no.clone(),
                    detail_id: super::transfer_detail_id(now),
                    amount_fen: d.transfer_amount,
                    remark: d.transfer_remark.clone(),
                    openid: d.openid.clone(),
                    status: "PROCESSING".into(),
                    fail_reason: None,
                })
                .collect(),
            fingerprint,
            created_at: now,
            updated_at: now,
        };
        state.transfers.insert(batch.out_batch_no.clone(), batch.clone());
        Ok((batch, true))
    }
}

pub(super) async fn v3_transfer_batches(
    State(sandbox): State<PaySandbox>,
    method: Method,
    uri: OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = Utc::now();
    let mut lost = false;
    let response = v3_run(&sandbox, (method, uri, headers, body), |merchant, body| {
        let req: v3::TransferBatchRequest = parse_json(body)?;
        let fingerprint: serde_json::Value = serde_json::from_slice(body).map_err(|e| param_error(e.to_string()))?;
        let (batch, _created) = sandbox.create_transfer(merchant, req, fingerprint, now)?;
        // A fault asked for: the batch is made, its answer lost.
        lost = sandbox.take_lost_transfer_answer();
        Ok((
            StatusCode::OK,
            Some(serde_json::json!({
                "out_batch_no": batch.out_batch_no,
                "batch_id": batch.batch_id,
                "create_time": super::push::china_time_rfc3339(batch.created_at),
                "batch_status": "ACCEPTED",
            })),
        ))
    });
    if lost {
        return sandbox.v3_error(biz(StatusCode::INTERNAL_SERVER_ERROR, "SYSTEM_ERROR", "answer lost (simulated)"));
    }
    response
}

pub(super) async fn v3_transfer_detail(
    State(sandbox): State<PaySandbox>,
    Path((out_batch_no, out_detail_no)): Path<(String, String)>,
    method: Method,
    uri: OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    v3_run(&sandbox, (method, uri, headers, body), |merchant, _| {
        let not_found = || biz(StatusCode::NOT_FOUND, "NOT_FOUND", "no such transfer detail");
        let state = sandbox.state();
        let batch = state.transfers.get(&out_batch_no).filter(|b| b.mch_id == merchant.mch_id).ok_or_else(not_found)?;
        let d = batch.details.iter().find(|d| d.out_detail_no == out_detail_no).ok_or_else(not_found)?;
        let mut detail = serde_json::json!({
            "mchid": batch.mch_id,
            "out_batch_no": batch.out_batch_no,
            "batch_id": batch.batch_id,
            "appid": batch.appid,
            "out_detail_no": d.out_detail_no,
            "detail_id": d.detail_id,
            "detail_status": d.status,
            "transfer_amount": d.amount_fen,
            "transfer_remark": d.remark,
            "openid": d.openid,
            "initiate_time": super::push::china_time_rfc3339(batch.created_at),
            "update_time": super::push::china_time_rfc3339(batch.updated_at),
        });
        if let Some(reason) = &d.fail_reason {
            detail["fail_reason"] = reason.clone().into();
        }
        Ok((StatusCode::OK, Some(detail)))
    })
}

/// A transfer batch as the simulator keeps it.
#[derive(Clone)]
pub(super) struct TransferBatch {
    pub(super) mch_id: String,
    pub(super) appid: String,
    pub(super) out_batch_no: String,
    pub(super) batch_id: String,
    /// `PROCESSING` until finished: `FINISHED` or `CLOSED`.
    pub(super) batch_status: String,
    pub(super) close_reason: Option<String>,
    pub(super) notify_url: Option<String>,
    pub(super) details: Vec<TransferDetailState>,
    /// The request as sent: the same number with another request is refused.
    fingerprint: serde_json::Value,
    pub(super) created_at: DateTime<Utc>,
    pub(super) updated_at: DateTime<Utc>,
}

#[derive(Clone)]
pub(super) struct TransferDetailState {
    pub(super) out_detail_no: String,
    pub(super) detail_id: String,
    pub(super) amount_fen: i64,
    remark: String,
    openid: String,
    /// `PROCESSING`, then `SUCCESS` or `FAIL`.
    pub(super) status: String,
    pub(super) fail_reason: Option<String>,
}
