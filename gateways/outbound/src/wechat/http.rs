//! The transport under the WeChat client and the token center: base URLs,
//! per-appid rate limit, timeouts, retries with backoff on `errcode -1` and
//! transport errors, capped response bodies, `errcode` mapping.

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde_json::Value;

use super::error::WechatError;

pub const API_BASE_DEFAULT: &str = "https://api.weixin.qq.com";
pub const OPEN_BASE_DEFAULT: &str = "https://open.weixin.qq.com";
pub const MP_BASE_DEFAULT: &str = "https://mp.weixin.qq.com";
/// Largest response body read (media downloads included).
pub const RESPONSE_BYTES_MAX_DEFAULT: usize = 4 * 1024 * 1024;
/// Attempts of one call, first included.
pub const ATTEMPTS_MAX_DEFAULT: u32 = 4;
/// Hard ceiling on configured attempts.
pub const ATTEMPTS_MAX_LIMIT: u32 = 10;
/// Appids with their own rate limiter; beyond it the least recently created are dropped.
pub const RATE_LIMIT_KEYS_MAX: usize = 10_000;
/// Longest a call waits for the local rate limiter before failing.
pub const RATE_LIMIT_WAIT_MS_MAX: u64 = 5_000;

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `https://api.weixin.qq.com` (the simulator's base URL in tests).
    pub api_base: String,
    /// `https://open.weixin.qq.com` (OAuth and component authorization pages).
    pub open_base: String,
    /// `https://mp.weixin.qq.com` (the component authorization page).
    pub mp_base: String,
    pub request_timeout_ms: u64,
    pub connect_timeout_ms: u64,
    pub attempts_max: u32,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    pub response_bytes_max: usize,
    /// Calls per second per appid (a burst of the same size is allowed).
    pub calls_per_second_per_appid: u32,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            api_base: API_BASE_DEFAULT.into(),
            open_base: OPEN_BASE_DEFAULT.into(),
            mp_base: MP_BASE_DEFAULT.into(),
            request_timeout_ms: 10_000,
            connect_timeout_ms: 3_000,
            attempts_max: ATTEMPTS_MAX_DEFAULT,
            backoff_base_ms: 100,
            backoff_max_ms: 2_000,
            response_bytes_max: RESPONSE_BYTES_MAX_DEFAULT,
            calls_per_second_per_appid: 100,
        }
    }
}

/// Delay before retry number `retry` (1-based): exponential from `base_ms`,
/// capped at `max_ms`, with "full jitter" (uniform in `[cap/2, cap]`) so that
/// many callers that failed together do not retry together.
pub fn backoff_delay_ms(retry: u32, base_ms: u64, max_ms: u64, jitter_unit: f64) -> u64 {
    let exp = base_ms.saturating_mul(1u64 << retry.saturating_sub(1).min(20));
    let cap = exp.min(max_ms);
    let half = cap / 2;
    let jitter_unit = jitter_unit.clamp(0.0, 1.0);
    // Truncation is fine: this is a delay, not money.
    half + ((cap - half) as f64 * jitter_unit) as u64
}

/// The body of a request, rebuilt for each attempt. Its `Debug` shows the
/// kind only: bodies carry secrets too (`component_appsecret`, refresh tokens).
#[derive(Clone)]
pub enum Body {
    None,
    Json(Value),
    /// One multipart file field (`media`), as WeChat's media upload expects.
    File {
        field: String,
        filename: String,
        content_type: String,
        bytes: Vec<u8>,
    },
}

/// One call. Its `Debug` names the query parameters without their values:
/// `secret`, `access_token` and `component_access_token` travel there.
#[derive(Clone)]
pub struct Request {
    pub get: bool,
    /// Path under `api_base`, e.g. `/cgi-bin/menu/get`.
    pub path: String,
    pub query: Vec<(String, String)>,
    pub body: Body,
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Json(_) => f.write_str("Json(..)"),
            Self::File { field, filename, content_type, bytes } => f
                .debug_struct("File")
                .field("field", field)
                .field("filename", filename)
                .field("content_type", content_type)
                .field("bytes", &bytes.len())
                .finish(),
        }
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let query_keys: Vec<&str> = self.query.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("Request")
            .field("get", &self.get)
            .field("path", &self.path)
            .field("query_keys", &query_keys)
            .field("body", &self.body)
            .finish()
    }
}

impl Request {
    pub fn get(path: &str) -> Self {
        Self { get: true, path: path.into(), query: Vec::new(), body: Body::None }
    }
    pub fn post(path: &str, body: Value) -> Self {
        Self { get: false, path: path.into(), query: Vec::new(), body: Body::Json(body) }
    }
    pub fn query(mut self, key: &str, value: impl Into<String>) -> Self {
        self.query.push((key.into(), value.into()));
        self
    }
}

/// A raw answer: binary for media downloads, JSON otherwise.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub content_type: String,
    pub bytes: Vec<u8>,
}

pub struct WechatHttp {
    http: reqwest::Client,
    config: ClientConfig,
    limiters: Mutex<HashMap<String, Arc<DefaultDirectRateLimiter>>>,
}

impl WechatHttp {
    pub fn new(mut config: ClientConfig) -> Result<Self, WechatError> {
        config.attempts_max = config.attempts_max.clamp(1, ATTEMPTS_MAX_LIMIT);
        config.api_base = config.api_base.trim_end_matches('/').to_owned();
        config.open_base = config.open_base.trim_end_matches('/').to_owned();
        config.mp_base = config.mp_base.trim_end_matches('/').to_owned();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.request_timeout_ms))
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| {
                WechatError::Transport(format!("building the http client: {}", crate::redact::transport_text(e)))
            })?;
        Ok(Self { http, config, limiters: Mutex::new(HashMap::new()) })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    fn limiter(&self, appid: &str) -> Arc<DefaultDirectRateLimiter> {
        let per_second = NonZeroU32::new(self.config.calls_per_second_per_appid).unwrap_or(NonZeroU32::MIN);
        let mut map = self.limiters.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = map.get(appid) {
            return l.clone();
        }
        if map.len() >= RATE_LIMIT_KEYS_MAX {
            // Bounded memory: a dropped appid starts over with a full burst,
            // which WeChat's own per-appid quota still caps.
            map.clear();
        }
        let limiter = Arc::new(RateLimiter::direct(Quota::per_second(per_second)));
        map.insert(appid.to_owned(), limiter.clone());
        limiter
    }

    /// One logical call with retries; a non-zero `errcode` becomes an error.
    pub async fn call_json(&self, appid: &str, request: &Request) -> Result<Value, WechatError> {
        let raw = self.call(appid, request).await?;
        parse_json(&raw.bytes)
    }

    /// One logical call with retries; JSON answers are checked for `errcode`,
    /// other content types are returned as they are.
    pub async fn call(&self, appid: &str, request: &Request) -> Result<RawResponse, WechatError> {
        let limiter = self.limiter(appid);
        let mut attempt = 1u32;
        loop {
            tokio::time::timeout(Duration::from_millis(RATE_LIMIT_WAIT_MS_MAX), limiter.until_ready())
                .await
                .map_err(|_| WechatError::RateLimited { appid: appid.to_owned() })?;
            let outcome = self.attempt(request).await;
            match outcome {
                Err(e) if e.is_retryable() && attempt < self.config.attempts_max => {
                    let delay_ms = backoff_delay_ms(
                        attempt,
                        self.config.backoff_base_ms,
                        self.config.backoff_max_ms,
                        rand::random::<f64>(),
                    );
                    tracing::debug!(path = %request.path, attempt, delay_ms, error = %e, "wechat call retried");
                    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                    attempt += 1;
                }
                Err(WechatError::Busy { .. }) => return Err(WechatError::Busy { attempts: attempt }),
                other => return other,
            }
        }
    }

    async fn attempt(&self, request: &Request) -> Result<RawResponse, WechatError> {
        let url = format!("{}{}", self.config.api_base, request.path);
        let builder = if request.get { self.http.get(&url) } else { self.http.post(&url) };
        let builder = builder.query(&request.query);
        let builder = match &request.body {
            Body::None => builder,
            Body::Json(v) => builder.json(v),
            Body::File { field, filename, content_type, bytes } => {
                let part = reqwest::multipart::Part::bytes(bytes.clone())
                    .file_name(filename.clone())
                    .mime_str(content_type)
                    .map_err(|e| WechatError::InvalidInput(format!("content type: {e}")))?;
                builder.multipart(reqwest::multipart::Form::new().part(field.clone(), part))
            }
        };
        let mut response = builder.send().await.map_err(|e| self.transport_error(e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(WechatError::HttpStatus(status.as_u16()));
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let limit = self.config.response_bytes_max;
        if response.content_length().is_some_and(|n| n > limit as u64) {
            return Err(WechatError::BodyTooLarge { limit_bytes: limit });
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.transport_error(e))? {
            if bytes.len() + chunk.len() > limit {
                return Err(WechatError::BodyTooLarge { limit_bytes: limit });
            }
            bytes.extend_from_slice(&chunk);
        }
        // WeChat answers errors as JSON even where success is binary.
        if content_type.contains("json") || content_type.starts_with("text/plain") || bytes.first() == Some(&b'{') {
            if let Ok(value) = serde_json::from_slice::<Value>(&bytes) {
                check_errcode(&value)?;
            }
        }
        Ok(RawResponse { content_type, bytes })
    }

    /// Never `e.to_string()`: reqwest's text holds the URL, whose query holds
    /// the app secret or the access token.
    fn transport_error(&self, e: reqwest::Error) -> WechatError {
        if e.is_timeout() {
            WechatError::Timeout { timeout_ms: self.config.request_timeout_ms }
        } else {
            WechatError::Transport(crate::redact::transport_text(e))
        }
    }
}

pub fn parse_json(bytes: &[u8]) -> Result<Value, WechatError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| WechatError::Decode(e.to_string()))?;
    check_errcode(&value)?;
    Ok(value)
}

/// `{"errcode": N, "errmsg": "..."}` with N ≠ 0 is an error; absent or 0 is success.
pub fn check_errcode(value: &Value) -> Result<(), WechatError> {
    match value.get("errcode").and_then(Value::as_i64) {
        None | Some(0) => Ok(()),
        Some(code) => Err(WechatError::from_errcode(code, value.get("errmsg").and_then(Value::as_str).unwrap_or(""))),
    }
}

/// A string field of a WeChat answer.
pub fn str_field(value: &Value, field: &str) -> Result<String, WechatError> {
    value
        .get(field)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| WechatError::Decode(format!("missing string field `{field}`")))
}

/// An integer field of a WeChat answer.
pub fn i64_field(value: &Value, field: &str) -> Result<i64, WechatError> {
    value
        .get(field)
        .and_then(Value::as_i64)
        .ok_or_else(|| WechatError::Decode(format!("missing integer field `{field}`")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn backoff_grows_exponentially_within_jitter_and_is_capped() {
        assert_eq!(backoff_delay_ms(1, 100, 2_000, 1.0), 100);
        assert_eq!(backoff_delay_ms(1, 100, 2_000, 0.0), 50);
        assert_eq!(backoff_delay_ms(2, 100, 2_000, 1.0), 200);
        assert_eq!(backoff_delay_ms(3, 100, 2_000, 1.0), 400);
        assert_eq!(backoff_delay_ms(10, 100, 2_000, 1.0), 2_000);
        assert_eq!(backoff_delay_ms(10, 100, 2_000, 0.0), 1_000);
        // No overflow for absurd retry numbers.
        assert_eq!(backoff_delay_ms(u32::MAX, u64::MAX, 5_000, 1.0), 5_000);
        for retry in 1..8 {
            let d = backoff_delay_ms(retry, 100, 2_000, 0.37);
            let cap = (100u64 << (retry - 1)).min(2_000);
            assert!(d >= cap / 2 && d <= cap, "retry {retry}: {d}");
        }
    }

    #[test]
    fn errcode_zero_or_absent_is_success() {
        assert!(check_errcode(&json!({"errcode": 0, "errmsg": "ok"})).is_ok());
        assert!(check_errcode(&json!({"access_token": "x"})).is_ok());
        assert!(matches!(check_errcode(&json!({"errcode": 45009})), Err(WechatError::QuotaExhausted)));
        assert!(matches!(parse_json(b"not json"), Err(WechatError::Decode(_))));
    }

    #[test]
    fn debug_of_a_request_shows_no_query_value_and_no_body() {
        let request = Request::post("/cgi-bin/component/api_authorizer_token", json!({"refresh": "REFRESH-CANARY"}))
            .query("component_access_token", "TOKEN-CANARY");
        let debug = format!("{request:?}");
        assert!(!debug.contains("CANARY"), "{debug}");
        assert!(debug.contains("component_access_token") && debug.contains("api_authorizer_token"), "{debug}");
    }
}
