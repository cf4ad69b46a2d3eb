//! WeChat Pay simulator: the v2 and v3 merchant endpoints wxcm calls
//! (unified order / JSAPI transactions, query, close, refund) with real
//! checks, plus control endpoints under `/sandbox/pay` that pay orders and
//! push signed (v2) or signed-and-encrypted (v3) notifications to the order's
//! `notify_url` — with copies, concurrency, delays, tampering and lost
//! notifications on request. Everything is in memory and bounded.
//!
//! Control endpoints:
//! - `POST /sandbox/pay/merchants` `{mch_id, appid, api_v2_key?, api_v3_key?, merchant_public_key_pem?}`
//! - `GET /sandbox/pay/platform` → `{serial, public_key_pem}` (the simulator's platform key)
//! - `GET /sandbox/pay/orders/{out_trade_no}` → the order as the simulator sees it
//! - `POST /sandbox/pay/orders/{out_trade_no}/pay` [`PayOrderBody`] → the deliveries made
//! - `POST /sandbox/pay/refunds/{out_refund_no}/notify` [`NotifyRefundBody`] → the deliveries made
//! - `GET /sandbox/pay/deliveries` → every delivery and its answer, oldest first
//! - `GET /sandbox/pay/transfers/{out_batch_no}` → a transfer batch as the simulator sees it
//! - `POST /sandbox/pay/transfers/{out_batch_no}/finish` [`FinishTransferBody`] → the batch
//!   `FINISHED` (every detail `SUCCESS` or `FAIL`) or `CLOSED`, and the `MCHTRANSFER.BATCH.*`
//!   notification pushed as asked → the deliveries made
//! - `POST /sandbox/pay/transfer-faults` `{lose_answers}` → the next `lose_answers` transfer
//!   requests make their batch but answer `500 SYSTEM_ERROR` (an answer lost)
//!
//! Simplifications, on purpose: order numbers are unique across merchants
//! here (wxcm generates them), refunds succeed at once (the notification is
//! pushed when asked), and `/secapi/pay/refund` does not ask for the
//! merchant's TLS client certificate as real Pay does.

mod pay_api;
mod push;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use rand::distr::{Alphanumeric, SampleString};
use rand::Rng;
use serde::{Deserialize, Serialize};
use wxcm_commands::pay_port::PayApi;

use wxcm_protocol::pay::v2::SignType;
use wxcm_protocol::pay::v3::{self, PrivateKey, PublicKey};

pub use push::{Delivery, Tamper};

/// Registered merchants kept at most.
pub const MERCHANTS_MAX: usize = 100;
/// Orders kept at most (creating more is refused).
pub const ORDERS_MAX: usize = 10_000;
/// Refunds kept at most (creating more is refused).
pub const REFUNDS_MAX: usize = 10_000;
/// Transfer batches kept at most (creating more is refused).
pub const TRANSFERS_MAX: usize = 10_000;
/// Transfer answers one fault request may lose.
pub const LOST_ANSWERS_MAX: u32 = 10;
/// Deliveries kept (the oldest are dropped).
pub const DELIVERIES_MAX: usize = 1_000;
/// Copies of one notification per request.
pub const COPIES_MAX: u32 = 50;
/// Longest delay before delivering.
pub const DELAY_MS_MAX: u64 = 10_000;
/// Attempts per copy when `retry_until_success` is set.
pub const RETRY_ATTEMPTS_MAX: u32 = 6;
/// Wait before a retry, times the attempt number (Pay waits 15 s, 15 s, 30 s, …; tests cannot).
pub const RETRY_DELAY_MS: u64 = 50;
/// Largest request body the simulator reads.
pub const REQUEST_BYTES_MAX: usize = 64 * 1024;
/// Timeout of one notification delivery.
pub const PUSH_TIMEOUT_MS: u64 = 5_000;
/// Default lifetime of an order created without `time_expire` (Pay's default is 2 hours).
pub const ORDER_LIFETIME_SECS_DEFAULT: i64 = 2 * 3600;
/// Serial of the built-in platform key.
pub const PLATFORM_SERIAL_DEFAULT: &str = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1";

/// The built-in platform key pair: a fixed test key (committed with the v3 tests), so
/// the simulator starts instantly and its signatures are reproducible. Never a real key.
const PLATFORM_PRIVATE_PEM_DEFAULT: &str = include_str!("../../../testdata/platform_private.pem");
const PLATFORM_PUBLIC_PEM_DEFAULT: &str = include_str!("../../../testdata/platform_public.pem");

/// Why the simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("platform key: {0}")]
    Key(#[from] v3::KeyError),
    #[error("platform key encoding: {0}")]
    KeyEncoding(String),
    #[error("http client: {0}")]
    Http(String),
}

/// The Pay simulator. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct PaySandbox {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<SandboxState>,
    platform_key: PrivateKey,
    platform_public_pem: String,
    platform_serial: String,
    http: reqwest::Client,
}

#[derive(Default)]
struct SandboxState {
    merchants: HashMap<String, Merchant>,
    orders: HashMap<String, Order>,
    refunds: HashMap<String, Refund>,
    transfers: HashMap<String, pay_api::TransferBatch>,
    lost_transfer_answers: u32,
    deliveries: VecDeque<Delivery>,
    delivery_seq: u64,
}

#[derive(Clone)]
struct Merchant {
    mch_id: String,
    appid: String,
    api_v2_key: Option<String>,
    api_v3_key: Option<[u8; v3::API_V3_KEY_BYTES]>,
    public_key: Option<PublicKey>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TradeState {
    NotPay,
    Success,
    Closed,
}

#[derive(Clone)]
struct Order {
    api: PayApi,
    /// v2: the algorithm the order was created with (its notifications use it too).
    sign_type: SignType,
    mch_id: String,
    appid: String,
    out_trade_no: String,
    total_fen: i64,
    openid: String,
    notify_url: String,
    time_expire: DateTime<Utc>,
    prepay_id: String,
    state: TradeState,
    transaction_id: Option<String>,
    paid_at: Option<DateTime<Utc>>,
    refunded_fen: i64,
    created_at: DateTime<Utc>,
}

impl Order {
    /// Pay's `trade_state`: a paid order with refunds reads `REFUND`.
    fn trade_state(&self) -> &'static str {
        match self.state {
            TradeState::NotPay => "NOTPAY",
            TradeState::Closed => "CLOSED",
            TradeState::Success if self.refunded_fen > 0 => "REFUND",
            TradeState::Success => "SUCCESS",
        }
    }
}

#[derive(Clone)]
struct Refund {
    api: PayApi,
    mch_id: String,
    out_trade_no: String,
    out_refund_no: String,
    refund_id: String,
    refund_fen: i64,
    total_fen: i64,
    notify_url: Option<String>,
    created_at: DateTime<Utc>,
}

impl PaySandbox {
    /// A simulator with the built-in test platform key.
    pub fn new() -> Result<Self, SandboxError> {
        Self::with_platform_key(PLATFORM_PRIVATE_PEM_DEFAULT, PLATFORM_SERIAL_DEFAULT)
    }

    /// A simulator signing with the given platform private key (PEM) under `serial`.
    pub fn with_platform_key(private_key_pem: &str, serial: &str) -> Result<Self, SandboxError> {
        use rsa::pkcs8::{EncodePublicKey, LineEnding};
        let platform_key = v3::load_private_key_pem(private_key_pem)?;
        let platform_public_pem = if private_key_pem == PLATFORM_PRIVATE_PEM_DEFAULT {
            PLATFORM_PUBLIC_PEM_DEFAULT.to_owned()
        } else {
            platform_key
                .to_public_key()
                .to_public_key_pem(LineEnding::LF)
                .map_err(|e| SandboxError::KeyEncoding(e.to_string()))?
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(PUSH_TIMEOUT_MS))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| SandboxError::Http(e.to_string()))?;
        Ok(Self {
            shared: Arc::new(Shared {
                state: Mutex::new(SandboxState::default()),
                platform_key,
                platform_public_pem,
                platform_serial: serial.to_owned(),
                http,
            }),
        })
    }

    pub fn platform_serial(&self) -> &str {
        &self.shared.platform_serial
    }

    pub fn platform_public_key_pem(&self) -> &str {
        &self.shared.platform_public_pem
    }

    /// Registers (or replaces) a merchant.
    pub fn register_merchant(&self, m: MerchantRegistration) -> Result<(), SandboxRefusal> {
        let merchant = m.into_merchant()?;
        let mut state = self.state();
        if !state.merchants.contains_key(&merchant.mch_id) && state.merchants.len() >= MERCHANTS_MAX {
            return Err(SandboxRefusal::conflict(format!("at most {MERCHANTS_MAX} merchants")));
        }
        state.merchants.insert(merchant.mch_id.clone(), merchant);
        Ok(())
    }

    /// Every delivery recorded, oldest first.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.state().deliveries.iter().cloned().collect()
    }

    fn state(&self) -> MutexGuard<'_, SandboxState> {
        // A panic while holding the lock leaves plain data behind: keep serving.
        self.shared.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// `POST /sandbox/pay/merchants`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MerchantRegistration {
    pub mch_id: String,
    pub appid: String,
    #[serde(default)]
    pub api_v2_key: Option<String>,
    #[serde(default)]
    pub api_v3_key: Option<String>,
    #[serde(default)]
    pub merchant_public_key_pem: Option<String>,
}

impl MerchantRegistration {
    fn into_merchant(self) -> Result<Merchant, SandboxRefusal> {
        let id_ok = |s: &str| !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_alphanumeric());
        if !id_ok(&self.mch_id) || !id_ok(&self.appid) {
            return Err(SandboxRefusal::bad_request("mch_id and appid must be 1..=32 ASCII letters or digits"));
        }
        if self.api_v2_key.as_deref().is_some_and(|k| k.is_empty() || k.len() > 64) {
            return Err(SandboxRefusal::bad_request("api_v2_key must be 1..=64 characters"));
        }
        let api_v3_key = match self.api_v3_key.as_deref() {
            Some(k) => Some(v3::api_v3_key(k).map_err(|e| SandboxRefusal::bad_request(e.to_string()))?),
            None => None,
        };
        let public_key = match self.merchant_public_key_pem.as_deref() {
            Some(pem) => Some(v3::load_public_key_pem(pem).map_err(|e| SandboxRefusal::bad_request(e.to_string()))?),
            None => None,
        };
        Ok(Merchant { mch_id: self.mch_id, appid: self.appid, api_v2_key: self.api_v2_key, api_v3_key, public_key })
    }
}

/// `POST /sandbox/pay/orders/{out_trade_no}/pay`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayOrderBody {
    /// Copies of the notification, 1..=50.
    #[serde(default = "one")]
    pub copies: u32,
    /// Send the copies at once instead of one after the other.
    #[serde(default)]
    pub concurrent: bool,
    /// Wait before the first delivery (and between sequential copies).
    #[serde(default)]
    pub delay_ms: u64,
    #[serde(default)]
    pub tamper: Tamper,
    /// `false`: mark the order paid but send nothing (a lost notification).
    #[serde(default = "yes")]
    pub deliver: bool,
    /// Re-send each copy (short delays, bounded) until it is accepted.
    #[serde(default)]
    pub retry_until_success: bool,
}

/// `POST /sandbox/pay/refunds/{out_refund_no}/notify`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyRefundBody {
    #[serde(default = "one")]
    pub copies: u32,
    #[serde(default)]
    pub concurrent: bool,
    #[serde(default)]
    pub delay_ms: u64,
    #[serde(default)]
    pub tamper: Tamper,
    #[serde(default)]
    pub retry_until_success: bool,
}

fn one() -> u32 {
    1
}

fn yes() -> bool {
    true
}

/// How a push is delivered.
#[derive(Debug, Clone, Copy)]
struct DeliveryPlan {
    copies: u32,
    concurrent: bool,
    delay_ms: u64,
    retry_until_success: bool,
}

impl DeliveryPlan {
    fn checked(copies: u32, concurrent: bool, delay_ms: u64, retry: bool) -> Result<Self, SandboxRefusal> {
        if copies == 0 || copies > COPIES_MAX {
            return Err(SandboxRefusal::bad_request(format!("copies must be 1..={COPIES_MAX}")));
        }
        if delay_ms > DELAY_MS_MAX {
            return Err(SandboxRefusal::bad_request(format!("delay_ms must be at most {DELAY_MS_MAX}")));
        }
        Ok(Self { copies, concurrent, delay_ms, retry_until_success: retry })
    }
}

/// A control request the simulator refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxRefusal {
    pub status: StatusCode,
    pub message: String,
}

impl SandboxRefusal {
    fn bad_request(message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, message: message.into() }
    }
    fn not_found(message: impl Into<String>) -> Self {
        Self { status: StatusCode::NOT_FOUND, message: message.into() }
    }
    fn conflict(message: impl Into<String>) -> Self {
        Self { status: StatusCode::CONFLICT, message: message.into() }
    }
    fn unprocessable(message: impl Into<String>) -> Self {
        Self { status: StatusCode::UNPROCESSABLE_ENTITY, message: message.into() }
    }
}

impl IntoResponse for SandboxRefusal {
    fn into_response(self) -> Response {
        (self.status, Json(serde_json::json!({"error": self.message}))).into_response()
    }
}

/// What a pay or notify request did.
#[derive(Debug, Clone, Serialize)]
pub struct PushReport {
    pub reference: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    pub deliveries: Vec<Delivery>,
}

/// The simulator's routes: Pay's merchant endpoints and `/sandbox/pay/*`.
pub fn router(sandbox: PaySandbox) -> Router {
    Router::new()
        .route("/pay/unifiedorder", post(pay_api::v2_unifiedorder))
        .route("/pay/orderquery", post(pay_api::v2_orderquery))
        .route("/pay/closeorder", post(pay_api::v2_closeorder))
        .route("/secapi/pay/refund", post(pay_api::v2_refund))
        .route("/v3/pay/transactions/jsapi", post(pay_api::v3_jsapi))
        .route("/v3/pay/transactions/out-trade-no/{out_trade_no}", get(pay_api::v3_query))
        .route("/v3/pay/transactions/out-trade-no/{out_trade_no}/close", post(pay_api::v3_close))
        .route("/v3/refund/domestic/refunds", post(pay_api::v3_refund))
        .route("/v3/transfer/batches", post(pay_api::v3_transfer_batches))
        .route(
            "/v3/transfer/batches/out-batch-no/{out_batch_no}/details/out-detail-no/{out_detail_no}",
            get(pay_api::v3_transfer_detail),
        )
        .route("/sandbox/pay/transfers/{out_batch_no}", get(transfer_view))
        .route("/sandbox/pay/transfers/{out_batch_no}/finish", post(finish_transfer))
        .route("/sandbox/pay/transfer-faults", post(transfer_faults))
        .route("/sandbox/pay/merchants", post(register_merchant))
        .route("/sandbox/pay/platform", get(platform))
        .route("/sandbox/pay/orders/{out_trade_no}", get(order_view))
        .route("/sandbox/pay/orders/{out_trade_no}/pay", post(pay_order))
        .route("/sandbox/pay/refunds/{out_refund_no}/notify", post(notify_refund))
        .route("/sandbox/pay/deliveries", get(deliveries))
        .layer(DefaultBodyLimit::max(REQUEST_BYTES_MAX))
        .with_state(sandbox)
}

/// A simulator served in the background; stops when dropped.
pub struct SandboxServer {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl SandboxServer {
    /// `http://ADDR`, the base URL to give the Pay client.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for SandboxServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves the simulator on `listener` (bind port 0 in tests).
pub async fn serve(listener: tokio::net::TcpListener, sandbox: PaySandbox) -> std::io::Result<SandboxServer> {
    let addr = listener.local_addr()?;
    let app = router(sandbox);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "pay sandbox server stopped");
        }
    });
    Ok(SandboxServer { addr, task })
}

async fn register_merchant(
    State(sandbox): State<PaySandbox>,
    body: Result<Json<MerchantRegistration>, axum::extract::rejection::JsonRejection>,
) -> Result<StatusCode, SandboxRefusal> {
    let Json(body) = body.map_err(|e| SandboxRefusal::bad_request(e.body_text()))?;
    sandbox.register_merchant(body)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn platform(State(sandbox): State<PaySandbox>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "serial": sandbox.platform_serial(),
        "public_key_pem": sandbox.platform_public_key_pem(),
    }))
}

async fn order_view(
    State(sandbox): State<PaySandbox>,
    Path(out_trade_no): Path<String>,
) -> Result<Json<serde_json::Value>, SandboxRefusal> {
    let state = sandbox.state();
    let o = state.orders.get(&out_trade_no).ok_or_else(|| SandboxRefusal::not_found("no such order"))?;
    Ok(Json(serde_json::json!({
        "api": if o.api == PayApi::V2 { "v2" } else { "v3" },
        "mch_id": o.mch_id,
        "appid": o.appid,
        "out_trade_no": o.out_trade_no,
        "prepay_id": o.prepay_id,
        "total_fen": o.total_fen,
        "openid": o.openid,
        "notify_url": o.notify_url,
        "trade_state": o.trade_state(),
        "transaction_id": o.transaction_id,
        "refunded_fen": o.refunded_fen,
        "time_expire": o.time_expire.to_rfc3339(),
        "created_at": o.created_at.to_rfc3339(),
    })))
}

async fn deliveries(State(sandbox): State<PaySandbox>) -> Json<Vec<Delivery>> {
    Json(sandbox.deliveries())
}

async fn pay_order(
    State(sandbox): State<PaySandbox>,
    Path(out_trade_no): Path<String>,
    body: Result<Json<PayOrderBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<PushReport>, SandboxRefusal> {
    let Json(body) = body.map_err(|e| SandboxRefusal::bad_request(e.body_text()))?;
    let plan = DeliveryPlan::checked(body.copies, body.concurrent, body.delay_ms, body.retry_until_success)?;
    let now = Utc::now();
    // Build once on a preview so an inapplicable tamper (or a missing merchant
    // key) is refused before the order changes.
    let (preview, merchant) = sandbox.mark_paid(&out_trade_no, now, false)?;
    push::transaction_notification(&sandbox, &preview, &merchant, body.tamper, now)?;
    let (order, merchant) = sandbox.mark_paid(&out_trade_no, now, true)?;
    let notification = push::transaction_notification(&sandbox, &order, &merchant, body.tamper, now)?;
    let deliveries = if body.deliver { push::deliver(&sandbox, notification, plan).await } else { Vec::new() };
    Ok(Json(PushReport { reference: out_trade_no, transaction_id: order.transaction_id, deliveries }))
}

async fn notify_refund(
    State(sandbox): State<PaySandbox>,
    Path(out_refund_no): Path<String>,
    body: Result<Json<NotifyRefundBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<PushReport>, SandboxRefusal> {
    let Json(body) = body.map_err(|e| SandboxRefusal::bad_request(e.body_text()))?;
    let plan = DeliveryPlan::checked(body.copies, body.concurrent, body.delay_ms, body.retry_until_success)?;
    let (refund, order, merchant) = {
        let state = sandbox.state();
        let refund =
            state.refunds.get(&out_refund_no).cloned().ok_or_else(|| SandboxRefusal::not_found("no such refund"))?;
        let order =
            state.orders.get(&refund.out_trade_no).cloned().ok_or_else(|| SandboxRefusal::not_found("no order"))?;
        let merchant =
            state.merchants.get(&refund.mch_id).cloned().ok_or_else(|| SandboxRefusal::not_found("no merchant"))?;
        (refund, order, merchant)
    };
    let notification = push::refund_notification(&sandbox, &refund, &order, &merchant, body.tamper, Utc::now())?;
    let deliveries = push::deliver(&sandbox, notification, plan).await;
    Ok(Json(PushReport { reference: out_refund_no, transaction_id: order.transaction_id, deliveries }))
}

impl PaySandbox {
    /// Marks an order paid (once; later calls keep the first payment) and
    /// returns it with its merchant. With `commit` false, only returns what
    /// the order would look like.
    fn mark_paid(
        &self,
        out_trade_no: &str,
        now: DateTime<Utc>,
        commit: bool,
    ) -> Result<(Order, Merchant), SandboxRefusal> {
        let mut state = self.state();
        let stored = state.orders.get_mut(out_trade_no).ok_or_else(|| SandboxRefusal::not_found("no such order"))?;
        let mut preview = stored.clone();
        let order = if commit { stored } else { &mut preview };
        match order.state {
            TradeState::Closed => return Err(SandboxRefusal::conflict("order is closed")),
            TradeState::NotPay if now >= order.time_expire => {
                return Err(SandboxRefusal::conflict("order expired (time_expire passed)"))
            }
            TradeState::NotPay => {
                order.state = TradeState::Success;
                order.transaction_id = Some(transaction_id(now));
                order.paid_at = Some(now);
            }
            TradeState::Success => {}
        }
        let order = order.clone();
        let merchant =
            state.merchants.get(&order.mch_id).cloned().ok_or_else(|| SandboxRefusal::not_found("no merchant"))?;
        Ok((order, merchant))
    }

    fn record(&self, mut delivery: Delivery) -> Delivery {
        let mut state = self.state();
        state.delivery_seq += 1;
        delivery.seq = state.delivery_seq;
        if state.deliveries.len() >= DELIVERIES_MAX {
            state.deliveries.pop_front();
        }
        state.deliveries.push_back(delivery.clone());
        delivery
    }
}

/// `POST /sandbox/pay/transfers/{out_batch_no}/finish`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinishTransferBody {
    /// `success` (every detail paid), `fail` (every detail failed) or `close` (the batch closed).
    pub result: TransferResult,
    /// The details' `fail_reason` (`fail`) or the batch's `close_reason` (`close`).
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default = "one")]
    pub copies: u32,
    #[serde(default)]
    pub concurrent: bool,
    #[serde(default)]
    pub delay_ms: u64,
    #[serde(default)]
    pub tamper: Tamper,
    /// `false`: finish the batch but send nothing (a lost notification).
    #[serde(default = "yes")]
    pub deliver: bool,
    #[serde(default)]
    pub retry_until_success: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferResult {
    Success,
    Fail,
    Close,
}

/// `POST /sandbox/pay/transfer-faults`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferFaultsBody {
    pub lose_answers: u32,
}

impl PaySandbox {
    /// Whether this transfer request's answer is to be lost (counts one down).
    fn take_lost_transfer_answer(&self) -> bool {
        let mut state = self.state();
        if state.lost_transfer_answers > 0 {
            state.lost_transfer_answers -= 1;
            true
        } else {
            false
        }
    }

    /// Finishes a batch once: a finished or closed batch keeps its result.
    fn finish_transfer(
        &self,
        out_batch_no: &str,
        result: TransferResult,
        reason: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(pay_api::TransferBatch, Merchant), SandboxRefusal> {
        let mut state = self.state();
        let batch =
            state.transfers.get_mut(out_batch_no).ok_or_else(|| SandboxRefusal::not_found("no such transfer batch"))?;
        if batch.batch_status == "PROCESSING" {
            match result {
                TransferResult::Success | TransferResult::Fail => {
                    batch.batch_status = "FINISHED".into();
                    for d in &mut batch.details {
                        if result == TransferResult::Success {
                            d.status = "SUCCESS".into();
                        } else {
                            d.status = "FAIL".into();
                            d.fail_reason = Some(reason.unwrap_or("ACCOUNT_FROZEN").to_owned());
                        }
                    }
                }
                TransferResult::Close => {
                    batch.batch_status = "CLOSED".into();
                    batch.close_reason = Some(reason.unwrap_or("OVERDUE_CLOSE").to_owned());
                    for d in &mut batch.details {
                        d.status = "FAIL".into();
                        d.fail_reason = Some("TRANSFER_CLOSED".into());
                    }
                }
            }
            batch.updated_at = now;
        }
        let batch = batch.clone();
        let merchant =
            state.merchants.get(&batch.mch_id).cloned().ok_or_else(|| SandboxRefusal::not_found("no merchant"))?;
        Ok((batch, merchant))
    }
}

async fn transfer_view(
    State(sandbox): State<PaySandbox>,
    Path(out_batch_no): Path<String>,
) -> Result<Json<serde_json::Value>, SandboxRefusal> {
    let state = sandbox.state();
    let b = state.transfers.get(&out_batch_no).ok_or_else(|| SandboxRefusal::not_found("no such transfer batch"))?;
    let details: Vec<serde_json::Value> = b
        .details
        .iter()
        .map(|d| {
            serde_json::json!({"out_detail_no": d.out_detail_no, "detail_id": d.detail_id,
                "transfer_amount": d.amount_fen, "detail_status": d.status, "fail_reason": d.fail_reason})
        })
        .collect();
    Ok(Json(serde_json::json!({
        "mch_id": b.mch_id,
        "appid": b.appid,
        "out_batch_no": b.out_batch_no,
        "batch_id": b.batch_id,
        "batch_status": b.batch_status,
        "close_reason": b.close_reason,
        "notify_url": b.notify_url,
        "details": details,
        "created_at": b.created_at.to_rfc3339(),
    })))
}

async fn finish_transfer(
    State(sandbox): State<PaySandbox>,
    Path(out_batch_no): Path<String>,
    body: Result<Json<FinishTransferBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<PushReport>, SandboxRefusal> {
    let Json(body) = body.map_err(|e| SandboxRefusal::bad_request(e.body_text()))?;
    let plan = DeliveryPlan::checked(body.copies, body.concurrent, body.delay_ms, body.retry_until_success)?;
    if body.reason.as_deref().is_some_and(|r| r.is_empty() || r.len() > 64) {
        return Err(SandboxRefusal::bad_request("reason must be 1..=64 characters"));
    }
    let now = Utc::now();
    let (batch, merchant) = sandbox.finish_transfer(&out_batch_no, body.result, body.reason.as_deref(), now)?;
    let notification = push::transfer_notification(&sandbox, &batch, &merchant, body.tamper, now)?;
    let deliveries = if body.deliver { push::deliver(&sandbox, notification, plan).await } else { Vec::new() };
    Ok(Json(PushReport { reference: out_batch_no, transaction_id: None, deliveries }))
}

async fn transfer_faults(
    State(sandbox): State<PaySandbox>,
    body: Result<Json<TransferFaultsBody>, axum::extract::rejection::JsonRejection>,
) -> Result<StatusCode, SandboxRefusal> {
    let Json(body) = body.map_err(|e| SandboxRefusal::bad_request(e.body_text()))?;
    if body.lose_answers > LOST_ANSWERS_MAX {
        return Err(SandboxRefusal::bad_request(format!("lose_answers must be 0..={LOST_ANSWERS_MAX}")));
    }
    sandbox.state().lost_transfer_answers = body.lose_answers;
    Ok(StatusCode::NO_CONTENT)
}

/// A random alphanumeric string.
fn random_alnum(chars: usize) -> String {
    Alphanumeric.sample_string(&mut rand::rng(), chars)
}

fn random_digits(digits: usize) -> String {
    let mut rng = rand::rng();
    (0..digits).map(|_| char::from(b'0' + rng.random_range(0..10u8))).collect()
}

/// `42000…`: Pay's transaction ids are 28 digits.
fn transaction_id(now: DateTime<Utc>) -> String {
    format!("4200{}{}", now.format("%Y%m%d"), random_digits(16))
}

fn prepay_id(now: DateTime<Utc>) -> String {
    format!("wx{}{}", now.format("%d%H%M%S"), random_alnum(24).to_ascii_lowercase())
}

/// Pay's batch ids: `1030000071100999991182020050700019480001`-like (40 digits).
fn transfer_batch_id(now: DateTime<Utc>) -> String {
    format!("1030{}{}", now.format("%Y%m%d"), random_digits(28))
}

fn transfer_detail_id(now: DateTime<Utc>) -> String {
    format!("1040{}{}", now.format("%Y%m%d"), random_digits(28))
}

fn refund_id(now: DateTime<Utc>) -> String {
    format!("5030{}{}", now.format("%Y%m%d"), random_digits(17))
}

#[cfg(test)]
mod tests;
