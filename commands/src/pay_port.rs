//! The port to WeChat Pay: what the application asks of it. Implemented in
//! `gateways::pay::client` (API v2 XML and API v3 JSON), wired by `infra`.
//! Amounts are integer fen; merchant secrets arrive unsealed only here.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::ports::PortError;

/// A tenant's merchant settings with secrets opened (never logged: Debug hides them).
#[derive(Clone)]
pub struct MerchantCredentials {
    pub appid: String,
    pub mch_id: String,
    pub api_v2_key: Option<String>,
    pub api_v3_key: Option<String>,
    pub merchant_cert_serial: Option<String>,
    pub merchant_private_key_pem: Option<String>,
}

impl std::fmt::Debug for MerchantCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MerchantCredentials").field("appid", &self.appid).field("mch_id", &self.mch_id).finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayApi {
    V2,
    V3,
}

#[derive(Debug, Clone)]
pub struct JsapiOrderRequest {
    pub api: PayApi,
    pub out_trade_no: String,
    pub description: String,
    pub amount_fen: i64,
    pub payer_openid: String,
    pub notify_url: String,
    pub expires_at: DateTime<Utc>,
    pub client_ip: String,
}

/// What the WeChat JS-SDK `chooseWXPay` / `WeixinJSBridge.invoke('getBrandWCPayRequest')` needs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JsapiPayParams {
    pub app_id: String,
    pub time_stamp: String,
    pub nonce_str: String,
    pub package: String,
    pub sign_type: String,
    pub pay_sign: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteTradeState {
    /// Paid: the transaction id and the amount Pay says was paid.
    Success {
        transaction_id: String,
        total_fen: i64,
        appid: String,
        mch_id: String,
        paid_at: DateTime<Utc>,
    },
    NotPay,
    Closed,
    Refund,
    /// Unknown to Pay (never created there).
    NotFound,
    /// USERPAYING, PAYERROR, REVOKED: keep asking later.
    Pending(String),
}

#[derive(Debug, Clone)]
pub struct RefundRequest {
    pub api: PayApi,
    pub out_trade_no: String,
    pub out_refund_no: String,
    pub total_fen: i64,
    pub refund_fen: i64,
    pub notify_url: String,
}

/// A transfer to a user's WeChat change (商家转账到零钱, API v3): one batch of
/// one detail, numbered by the caller so that sending it again never pays twice.
#[derive(Debug, Clone)]
pub struct TransferRequest {
    pub out_batch_no: String,
    pub out_detail_no: String,
    pub amount_fen: i64,
    pub openid: String,
    /// Shown to the user (≤ 32 characters).
    pub remark: String,
    pub notify_url: String,
}

/// One transfer as Pay knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteTransferState {
    /// Paid to the user's change.
    Success { detail_id: String, amount_fen: i64, openid: String },
    /// Failed for good (`fail_reason`); the money stayed with the merchant.
    Failed { reason: String },
    /// `INIT`, `WAIT_PAY`, `PROCESSING`: ask again later.
    Pending(String),
    /// Pay has no such transfer: the request never arrived.
    NotFound,
}

#[derive(Debug, thiserror::Error)]
pub enum PayPortError {
    /// Pay answered with a business error (e.g. ORDERPAID, NOTENOUGH).
    #[error("WeChat Pay refused: {code}: {message}")]
    Refused { code: String, message: String },
    /// Transport failure, timeout, 5xx, SYSTEMERROR: safe to retry later.
    #[error("WeChat Pay unavailable: {0}")]
    Unavailable(String),
    /// An answer that fails its signature or does not parse.
    #[error("WeChat Pay answer rejected: {0}")]
    BadAnswer(String),
    #[error("merchant settings incomplete: {0}")]
    Settings(String),
}

impl From<PayPortError> for PortError {
    fn from(e: PayPortError) -> Self {
        PortError::new(e)
    }
}

/// The WeChat Pay client and where Pay's notifications reach this server
/// (what refunds and payments started by background work need).
#[derive(Clone, Copy)]
pub struct PayAccess<'a> {
    pub gateway: &'a dyn PayGateway,
    /// E.g. `https://wxcm.example.com`.
    pub notify_base_url: &'a str,
}

#[async_trait]
pub trait PayGateway: Send + Sync {
    /// Creates the JSAPI order at Pay (v2 unifiedorder or v3 transactions/jsapi) and
    /// returns the signed parameters for the JS-SDK.
    async fn create_jsapi_order(
        &self,
        merchant: &MerchantCredentials,
        order: &JsapiOrderRequest,
    ) -> Result<JsapiPayParams, PayPortError>;
    async fn query_order(
        &self,
        merchant: &MerchantCredentials,
        api: PayApi,
        out_trade_no: &str,
    ) -> Result<RemoteTradeState, PayPortError>;
    async fn close_order(
        &self,
        merchant: &MerchantCredentials,
        api: PayApi,
        out_trade_no: &str,
    ) -> Result<(), PayPortError>;
    /// Asks Pay to refund; the outcome arrives as a refund notification.
    async fn refund(&self, merchant: &MerchantCredentials, refund: &RefundRequest) -> Result<(), PayPortError>;
    /// Asks Pay (API v3) to transfer to a user's change; the outcome arrives as a
    /// `MCHTRANSFER.BATCH.*` notification or by [`PayGateway::query_transfer`].
    /// The same numbers again are the same transfer (accepted once).
    async fn create_transfer(
        &self,
        _merchant: &MerchantCredentials,
        _transfer: &TransferRequest,
    ) -> Result<(), PayPortError> {
        Err(PayPortError::Settings("this Pay client makes no transfers".into()))
    }
    async fn query_transfer(
        &self,
        _merchant: &MerchantCredentials,
        _out_batch_no: &str,
        _out_detail_no: &str,
    ) -> Result<RemoteTransferState, PayPortError> {
        Err(PayPortError::Settings("this Pay client makes no transfers".into()))
    }
}
