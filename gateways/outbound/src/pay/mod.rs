//! Outbound WeChat Pay client: [`WechatPayClient`] implements the application's
//! [`PayGateway`] port over API v2 (signed XML) and API v3 (JSON, RSA
//! `Authorization`), reusing the crypto of `wxcm_protocol::pay::{v2, v3}`.
//!
//! Every answer is read within a byte cap, checked (v2 `sign`, v3
//! `Wechatpay-Signature` when platform keys are configured) and mapped to the
//! port's types. Only transport failures, 5xx and SYSTEMERROR are retried, a
//! bounded number of times with doubling backoff: business refusals never are.
//!
//! Real Pay wants the merchant's TLS client certificate on `/secapi/pay/refund`
//! (v2). This client does not present one yet: it works against the simulator
//! (which does not ask for it) and v3 refunds; a v2 refund against real Pay
//! needs the certificate added to the `reqwest` client.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use reqwest::Method;
use serde::Deserialize;
use wxcm_commands::pay_port::{
    JsapiOrderRequest, JsapiPayParams, MerchantCredentials, PayApi, PayGateway, PayPortError, RefundRequest,
    RemoteTradeState, RemoteTransferState, TransferRequest,
};

use wxcm_protocol::pay::v2::{self, SignType};
use wxcm_protocol::pay::v3::{self, PublicKey};

mod wire;

use wire::*;
pub use wire::{
    check_order, check_refund, parse_fen, parse_time_v2, time_expire_v2, time_expire_v3, unifiedorder_fields,
    v3_jsapi_body, v3_refund_body,
};

/// Where real Pay answers.
pub const BASE_URL_DEFAULT: &str = "https://api.mch.weixin.qq.com";
/// Whole-request timeout, per attempt.
pub const TIMEOUT_MS_DEFAULT: u64 = 10_000;
pub const CONNECT_TIMEOUT_MS_DEFAULT: u64 = 3_000;
/// Largest answer body read (Pay's answers are a few KiB).
pub const RESPONSE_BYTES_MAX_DEFAULT: usize = 64 * 1024;
/// Attempts per call, the first included.
pub const ATTEMPTS_MAX_DEFAULT: u32 = 3;
/// Upper bound accepted for `attempts_max`.
pub const ATTEMPTS_MAX_LIMIT: u32 = 10;
/// Wait before the second attempt; doubled for each later one, up to [`RETRY_BACKOFF_MS_MAX`].
pub const RETRY_BACKOFF_MS_DEFAULT: u64 = 200;
pub const RETRY_BACKOFF_MS_MAX: u64 = 5_000;
/// Pay's limits on request fields.
pub const OUT_TRADE_NO_CHARS_MIN: usize = 6;
pub const OUT_TRADE_NO_CHARS_MAX: usize = 32;
pub const OUT_REFUND_NO_CHARS_MAX: usize = 64;
pub const DESCRIPTION_BYTES_MAX: usize = 127;
pub const OPENID_CHARS_MAX: usize = 128;
pub const NOTIFY_URL_CHARS_MAX: usize = 256;
pub const CLIENT_IP_CHARS_MAX: usize = 64;
/// Largest single order accepted here: 1,000,000 yuan in fen.
pub const AMOUNT_FEN_MAX: i64 = 100_000_000;
/// Length of the nonces this client generates.
const NONCE_CHARS: usize = 32;
/// Pay's wall clock (v2 `time_expire`, `time_end`; v3 offsets) is China Standard Time.
const CHINA_OFFSET_SECS: i32 = 8 * 3600;
/// Longest part of an error answer kept in an error message.
const ANSWER_EXCERPT_CHARS_MAX: usize = 200;

/// How the client reaches Pay.
#[derive(Debug, Clone)]
pub struct PayClientSettings {
    pub base_url: String,
    pub timeout_ms: u64,
    pub connect_timeout_ms: u64,
    pub response_bytes_max: usize,
    pub attempts_max: u32,
    pub retry_backoff_ms: u64,
}

impl Default for PayClientSettings {
    fn default() -> Self {
        Self {
            base_url: BASE_URL_DEFAULT.to_owned(),
            timeout_ms: TIMEOUT_MS_DEFAULT,
            connect_timeout_ms: CONNECT_TIMEOUT_MS_DEFAULT,
            response_bytes_max: RESPONSE_BYTES_MAX_DEFAULT,
            attempts_max: ATTEMPTS_MAX_DEFAULT,
            retry_backoff_ms: RETRY_BACKOFF_MS_DEFAULT,
        }
    }
}

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PayClientError {
    #[error("invalid pay client setting: {0}")]
    Setting(&'static str),
    #[error("platform key: {0}")]
    PlatformKey(#[from] v3::KeyError),
    #[error("http client: {0}")]
    Http(String),
}

/// The WeChat Pay client (v2 and v3). Cheap to clone.
#[derive(Clone)]
pub struct WechatPayClient {
    http: reqwest::Client,
    settings: PayClientSettings,
    /// v3 platform public keys by serial. Empty: v3 answers are not verified.
    platform_keys: BTreeMap<String, PublicKey>,
}

impl WechatPayClient {
    pub fn new(settings: PayClientSettings) -> Result<Self, PayClientError> {
        let base = settings.base_url.trim_end_matches('/');
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(PayClientError::Setting("base_url must be an http(s) URL"));
        }
        if settings.attempts_max == 0 || settings.attempts_max > ATTEMPTS_MAX_LIMIT {
            return Err(PayClientError::Setting("attempts_max must be 1..=10"));
        }
        if settings.response_bytes_max == 0 || settings.timeout_ms == 0 || settings.connect_timeout_ms == 0 {
            return Err(PayClientError::Setting("response_bytes_max and timeouts must be positive"));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.timeout_ms))
            .connect_timeout(Duration::from_millis(settings.connect_timeout_ms))
            // Pay never redirects; following one would re-send signed requests elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| PayClientError::Http(e.to_string()))?;
        let settings = PayClientSettings { base_url: base.to_owned(), ..settings };
        Ok(Self { http, settings, platform_keys: BTreeMap::new() })
    }

    /// Adds a v3 platform public key (SPKI PEM) under its serial. Once any key
    /// is configured, every v3 answer must carry a valid `Wechatpay-Signature`.
    pub fn with_platform_key(mut self, serial: &str, public_key_pem: &str) -> Result<Self, PayClientError> {
        let key = v3::load_public_key_pem(public_key_pem)?;
        self.platform_keys.insert(serial.to_owned(), key);
        Ok(self)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.settings.base_url, path)
    }

    /// Runs `attempt` until it succeeds, fails with something other than
    /// [`PayPortError::Unavailable`], or the attempts are used up.
    async fn with_retries<T, F, Fut>(&self, what: &'static str, mut attempt: F) -> Result<T, PayPortError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, PayPortError>>,
    {
        let mut backoff_ms = self.settings.retry_backoff_ms;
        let mut attempt_no = 1u32;
        loop {
            match attempt().await {
                Err(PayPortError::Unavailable(why)) if attempt_no < self.settings.attempts_max => {
                    tracing::warn!(call = what, attempt_no, backoff_ms, reason = %why, "pay call failed, retrying");
                    tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
                    backoff_ms = backoff_ms.saturating_mul(2).min(RETRY_BACKOFF_MS_MAX);
                    attempt_no += 1;
                }
                other => return other,
            }
        }
    }

    /// Sends one request and reads the answer within the byte cap.
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<RawAnswer, PayPortError> {
        let mut response = request.send().await.map_err(|e| PayPortError::Unavailable(transport_error(e)))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let max = self.settings.response_bytes_max;
        if response.content_length().is_some_and(|len| len > max as u64) {
            return Err(PayPortError::BadAnswer(format!("answer larger than {max} bytes")));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| PayPortError::Unavailable(transport_error(e)))? {
            if body.len() + chunk.len() > max {
                return Err(PayPortError::BadAnswer(format!("answer larger than {max} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(RawAnswer { status, headers, body })
    }

    /// Signs `fields` (plus appid, mch_id, nonce, sign_type) and POSTs them to a v2 path.
    async fn v2_call(
        &self,
        merchant: &MerchantCredentials,
        path: &'static str,
        fields: BTreeMap<String, String>,
    ) -> Result<V2Answer, PayPortError> {
        let key = v2_key(merchant)?;
        let body = v2::build_xml(&signed_v2_request(merchant, key, fields, &nonce()));
        let url = self.url(path);
        self.with_retries(path, || async {
            let request = self.http.post(&url).header(CONTENT_TYPE, "text/xml; charset=utf-8").body(body.clone());
            let answer = self.send(request).await?;
            read_v2_answer(&answer, merchant, key)
        })
        .await
    }

    /// Sends a v3 request with a fresh `Authorization` per attempt and checks the answer.
    async fn v3_call(
        &self,
        merchant: &MerchantCredentials,
        method: Method,
        path_with_query: &str,
        body: Option<String>,
    ) -> Result<V3Answer, PayPortError> {
        let (serial, private_key) = v3_signer(merchant)?;
        let url = self.url(path_with_query);
        let body_text = body.unwrap_or_default();
        self.with_retries("v3", || async {
            let authorization = v3::authorization_header(
                &merchant.mch_id,
                serial,
                &private_key,
                method.as_str(),
                path_with_query,
                Utc::now().timestamp(),
                &nonce(),
                &body_text,
            )
            .map_err(|e| PayPortError::Settings(format!("v3 request signing: {e}")))?;
            let mut request = self
                .http
                .request(method.clone(), &url)
                .header(AUTHORIZATION, authorization)
                .header(ACCEPT, "application/json")
                .header(USER_AGENT, "wxcm-pay-client");
            if method != Method::GET {
                request = request.header(CONTENT_TYPE, "application/json").body(body_text.clone());
            }
            let answer = self.send(request).await?;
            self.read_v3_answer(answer)
        })
        .await
    }

    fn read_v3_answer(&self, answer: RawAnswer) -> Result<V3Answer, PayPortError> {
        if answer.status >= 500 {
            return Err(PayPortError::Unavailable(format!("HTTP {}: {}", answer.status, excerpt(&answer.body))));
        }
        if !self.platform_keys.is_empty() {
            let headers = v3_answer_headers(&answer.headers)?;
            v3::verify_notification(&headers, &answer.body, &self.platform_keys, Utc::now().timestamp())
                .map_err(|e| PayPortError::BadAnswer(format!("answer signature: {e}")))?;
        }
        map_v3_status(answer.status, answer.body)
    }
}

#[async_trait]
impl PayGateway for WechatPayClient {
    #[tracing::instrument(skip_all, fields(out_trade_no = %order.out_trade_no, api = ?order.api))]
    async fn create_jsapi_order(
        &self,
        merchant: &MerchantCredentials,
        order: &JsapiOrderRequest,
    ) -> Result<JsapiPayParams, PayPortError> {
        check_order(order, Utc::now())?;
        match order.api {
            PayApi::V2 => {
                let key = v2_key(merchant)?;
                let prepay_id = match self.v2_call(merchant, "/pay/unifiedorder", unifiedorder_fields(order)).await? {
                    V2Answer::Success(f) => check_prepay_id(f.get("prepay_id").map(String::as_str))?,
                    V2Answer::Failed { err_code, err_code_des } => return Err(refused(err_code, err_code_des)),
                };
                let params = v2::jsapi_params_v2(
                    &merchant.appid,
                    &prepay_id,
                    key,
                    SignType::HmacSha256,
                    Utc::now().timestamp(),
                    &nonce(),
                );
                Ok(port_params(params))
            }
            PayApi::V3 => {
                let body = v3_jsapi_body(merchant, order).to_string();
                let answer = self.v3_call(merchant, Method::POST, "/v3/pay/transactions/jsapi", Some(body)).await?;
                let body = match answer {
                    V3Answer::Success { body } => body,
                    V3Answer::Failed { code, message, .. } => return Err(refused(code, message)),
                };
                #[derive(Deserialize)]
                struct Prepay {
                    prepay_id: String,
                }
                let prepay: Prepay =
                    serde_json::from_slice(&body).map_err(|e| PayPortError::BadAnswer(format!("prepay json: {e}")))?;
                let prepay_id = check_prepay_id(Some(&prepay.prepay_id))?;
                let (_, key) = v3_signer(merchant)?;
                let params = v3::jsapi_params_v3(&merchant.appid, &prepay_id, &key, Utc::now().timestamp(), &nonce())
                    .map_err(|e| PayPortError::Settings(format!("pay sign: {e}")))?;
                Ok(port_params(params))
            }
        }
    }

    #[tracing::instrument(skip_all, fields(out_trade_no = %out_trade_no, api = ?api))]
    async fn query_order(
        &self,
        merchant: &MerchantCredentials,
        api: PayApi,
        out_trade_no: &str,
    ) -> Result<RemoteTradeState, PayPortError> {
        check_trade_no("out_trade_no", out_trade_no, OUT_TRADE_NO_CHARS_MIN, OUT_TRADE_NO_CHARS_MAX)?;
        match api {
            PayApi::V2 => {
                let f = fields(&[("out_trade_no", out_trade_no.to_owned())]);
                map_v2_query(self.v2_call(merchant, "/pay/orderquery", f).await?)
            }
            PayApi::V3 => {
                check_short_text("mch_id", &merchant.mch_id, 32)?;
                let path = format!("/v3/pay/transactions/out-trade-no/{out_trade_no}?mchid={}", merchant.mch_id);
                map_v3_query(self.v3_call(merchant, Method::GET, &path, None).await?)
            }
        }
    }

    /// Closing an order Pay already closed succeeds (the goal is reached).
    #[tracing::instrument(skip_all, fields(out_trade_no = %out_trade_no, api = ?api))]
    async fn close_order(
        &self,
        merchant: &MerchantCredentials,
        api: PayApi,
        out_trade_no: &str,
    ) -> Result<(), PayPortError> {
        check_trade_no("out_trade_no", out_trade_no, OUT_TRADE_NO_CHARS_MIN, OUT_TRADE_NO_CHARS_MAX)?;
        match api {
            PayApi::V2 => {
                let f = fields(&[("out_trade_no", out_trade_no.to_owned())]);
                match self.v2_call(merchant, "/pay/closeorder", f).await? {
                    V2Answer::Success(_) => Ok(()),
                    V2Answer::Failed { err_code, .. } if err_code == "ORDERCLOSED" => Ok(()),
                    V2Answer::Failed { err_code, err_code_des } => Err(refused(err_code, err_code_des)),
                }
            }
            PayApi::V3 => {
                let path = format!("/v3/pay/transactions/out-trade-no/{out_trade_no}/close");
                let body = serde_json::json!({"mchid": merchant.mch_id}).to_string();
                match self.v3_call(merchant, Method::POST, &path, Some(body)).await? {
                    V3Answer::Success { .. } => Ok(()),
                    V3Answer::Failed { code, .. } if code == "ORDER_CLOSED" || code == "ORDERCLOSED" => Ok(()),
                    V3Answer::Failed { code, message, .. } => Err(refused(code, message)),
                }
            }
        }
    }

    #[tracing::instrument(skip_all, fields(out_refund_no = %refund.out_refund_no, api = ?refund.api))]
    async fn refund(&self, merchant: &MerchantCredentials, refund: &RefundRequest) -> Result<(), PayPortError> {
        check_refund(refund)?;
        match refund.api {
            PayApi::V2 => {
                let f = fields(&[
                    ("out_trade_no", refund.out_trade_no.clone()),
                    ("out_refund_no", refund.out_refund_no.clone()),
                    ("total_fee", refund.total_fen.to_string()),
                    ("refund_fee", refund.refund_fen.to_string()),
                    ("notify_url", refund.notify_url.clone()),
                ]);
                match self.v2_call(merchant, "/secapi/pay/refund", f).await? {
                    V2Answer::Success(_) => Ok(()),
                    V2Answer::Failed { err_code, err_code_des } => Err(refused(err_code, err_code_des)),
                }
            }
            PayApi::V3 => {
                let body = v3_refund_body(refund).to_string();
                match self.v3_call(merchant, Method::POST, "/v3/refund/domestic/refunds", Some(body)).await? {
                    V3Answer::Success { .. } => Ok(()),
                    V3Answer::Failed { code, message, .. } => Err(refused(code, message)),
                }
            }
        }
    }

    #[tracing::instrument(skip_all, fields(out_batch_no = %transfer.out_batch_no))]
    async fn create_transfer(
        &self,
        merchant: &MerchantCredentials,
        transfer: &TransferRequest,
    ) -> Result<(), PayPortError> {
        let body = transfer_body(merchant, transfer)?;
        let body = serde_json::to_string(&body).map_err(|e| PayPortError::Settings(format!("transfer json: {e}")))?;
        match self.v3_call(merchant, Method::POST, v3::TRANSFER_BATCHES_PATH, Some(body)).await? {
            V3Answer::Success { body } => {
                let accepted: v3::TransferBatchAccepted = serde_json::from_slice(&body)
                    .map_err(|e| PayPortError::BadAnswer(format!("transfer answer json: {e}")))?;
                if accepted.out_batch_no != transfer.out_batch_no {
                    return Err(PayPortError::BadAnswer("the answer names another out_batch_no".into()));
                }
                Ok(())
            }
            V3Answer::Failed { code, message, .. } => Err(refused(code, message)),
        }
    }

    #[tracing::instrument(skip_all, fields(out_batch_no = %out_batch_no))]
    async fn query_transfer(
        &self,
        merchant: &MerchantCredentials,
        out_batch_no: &str,
        out_detail_no: &str,
    ) -> Result<RemoteTransferState, PayPortError> {
        check_transfer_no("out_batch_no", out_batch_no)?;
        check_transfer_no("out_detail_no", out_detail_no)?;
        let path = v3::transfer_detail_path(out_batch_no, out_detail_no);
        map_transfer_query(self.v3_call(merchant, Method::GET, &path, None).await?, merchant, out_detail_no)
    }
}

#[cfg(test)]
mod tests;
