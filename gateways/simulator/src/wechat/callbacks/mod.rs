//! The simulator's WeChat → gateway direction: pushes signed (and in compat
//! and safe mode encrypted) callbacks to a gateway the way WeChat does, with
//! duplicates, bursts, retries and deliberate tampering, and opens the
//! passive replies (checking their `MsgSignature`).
//!
//! Usable in-process ([`Pusher`]) by tests and the gateway bench, and over
//! HTTP: `POST /sandbox/callbacks/push` and `POST /sandbox/callbacks/component`.
//!
//! Code map: this file holds the requests, answers and the HTTP handlers;
//! `compose` builds the signed (and encrypted) callback documents; `send`
//! is [`Pusher`], which delivers them and opens the replies.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;

mod compose;
mod send;
#[cfg(test)]
mod tests;

/// Most copies of one message per push (bursts and duplicates).
pub const PUSH_COPIES_MAX: u32 = 50;
/// WeChat tries a callback this many times when it gets no answer.
pub const PUSH_TRIES_MAX: u32 = 3;
/// WeChat's interval between tries.
pub const RETRY_INTERVAL_MS_DEFAULT: u64 = 5_000;
/// Longest interval a caller may ask for.
pub const RETRY_INTERVAL_MS_MAX: u64 = 60_000;
/// WeChat waits 5 s for an answer.
pub const ATTEMPT_TIMEOUT_MS_DEFAULT: u64 = 5_000;
pub const ATTEMPT_TIMEOUT_MS_MAX: u64 = 60_000;
/// Size of the `oversized` tamper's message (beyond the gateway's 64 KiB cap).
pub const OVERSIZED_BYTES: usize = 128 * 1024;
/// Bytes of a response body kept in a [`PushResponse`].
pub const RESPONSE_BODY_KEPT_BYTES_MAX: usize = 4096;
/// Longest text field (openid, scene, content...) a push accepts.
const FIELD_CHARS_MAX: usize = 2048;
/// An appid that is not the account's, for the `appid_tail` tamper.
const FOREIGN_APPID: &str = "wxf0f0f0f0f0f0f0f0";
/// How far back the `timestamp_stale` tamper dates a callback (the gateway accepts ±300 s).
const STALE_BY_S: i64 = 3_600;

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("invalid push: {0}")]
    Invalid(String),
    #[error("http client: {0}")]
    Client(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PushMode {
    /// Plain XML, `signature` only.
    Plaintext,
    /// Plain fields and `Encrypt` side by side, `msg_signature` too.
    Compat,
    /// Only `Encrypt` (and ToUserName), `msg_signature` too.
    #[default]
    Safe,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    Subscribe,
    Unsubscribe,
    Scan,
    Text,
    Click,
    View,
    Location,
    TemplateFinish,
    MassFinish,
    Image,
}

/// Ways to make a callback that a correct gateway must refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Tamper {
    #[default]
    None,
    /// `signature` (and `msg_signature`) of another token.
    Signature,
    /// Correctly signed, but an hour old.
    TimestampStale,
    /// Encrypted for another appid (compat and safe mode only).
    AppidTail,
    /// A DOCTYPE with an external ENTITY before the message.
    Doctype,
    /// A message of [`OVERSIZED_BYTES`].
    Oversized,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushMessage {
    pub kind: MessageKind,
    pub openid: String,
    /// Scene of a scene QR (`subscribe` sends `qrscene_<scene>`, `scan` the bare scene).
    #[serde(default)]
    pub scene: Option<String>,
    /// `text` content.
    #[serde(default)]
    pub content: Option<String>,
    /// `click` key or `view` URL.
    #[serde(default)]
    pub key: Option<String>,
    /// MsgId of messages and MsgID of job-finish events (random when absent).
    #[serde(default)]
    pub msg_id: Option<u64>,
    /// CreateTime (now when absent). Copies of one push share it, as WeChat's retries do.
    #[serde(default)]
    pub create_time: Option<i64>,
}

impl PushMessage {
    pub fn new(kind: MessageKind, openid: &str) -> Self {
        Self { kind, openid: openid.to_owned(), scene: None, content: None, key: None, msg_id: None, create_time: None }
    }
}

fn default_copies() -> u32 {
    1
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushRequest {
    /// The gateway, e.g. `http://127.0.0.1:8080`.
    pub target_base_url: String,
    pub appid: String,
    pub token: String,
    /// `None`: the account has none (plaintext mode only).
    #[serde(default)]
    pub encoding_aes_key: Option<String>,
    #[serde(default)]
    pub mode: PushMode,
    /// Post to `/wechat/component/mp/{appid}` (an account authorized to a third-party platform).
    #[serde(default)]
    pub component: bool,
    /// The platform's appid, which ends the encrypted frame of component traffic.
    #[serde(default)]
    pub component_appid: Option<String>,
    pub message: PushMessage,
    #[serde(default = "default_copies")]
    pub copies: u32,
    /// Send the copies at once (a burst) instead of one after the other.
    #[serde(default)]
    pub concurrent: bool,
    #[serde(default)]
    pub tamper: Tamper,
    /// Try up to [`PUSH_TRIES_MAX`] times when the gateway does not answer.
    #[serde(default)]
    pub retry: bool,
    #[serde(default)]
    pub retry_interval_ms: Option<u64>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

impl PushRequest {
    /// A safe-mode, single-copy push of `message` to a developer-mode account.
    pub fn safe(target_base_url: &str, appid: &str, token: &str, encoding_aes_key: &str, message: PushMessage) -> Self {
        Self {
            target_base_url: target_base_url.to_owned(),
            appid: appid.to_owned(),
            token: token.to_owned(),
            encoding_aes_key: Some(encoding_aes_key.to_owned()),
            mode: PushMode::Safe,
            component: false,
            component_appid: None,
            message,
            copies: 1,
            concurrent: false,
            tamper: Tamper::None,
            retry: false,
            retry_interval_ms: None,
            timeout_ms: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ComponentInfo {
    VerifyTicket { ticket: String },
    Authorized { authorizer_appid: String, authorization_code: String, pre_auth_code: String },
    Unauthorized { authorizer_appid: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ComponentPushRequest {
    pub target_base_url: String,
    pub component_appid: String,
    pub token: String,
    pub encoding_aes_key: String,
    pub info: ComponentInfo,
    #[serde(default)]
    pub retry: bool,
    #[serde(default)]
    pub retry_interval_ms: Option<u64>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// The gateway's passive reply, opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassiveReply {
    /// It came in a safe-mode envelope.
    pub encrypted: bool,
    /// The envelope's `MsgSignature` matched (None for plaintext replies).
    pub signature_valid: Option<bool>,
    /// The reply's fields (`MsgType`, `Content`, `Articles/item/Title`...), first of each name.
    pub fields: BTreeMap<String, String>,
}

impl PassiveReply {
    pub fn content(&self) -> Option<&str> {
        self.fields.get("Content").map(String::as_str)
    }
}

/// What one copy of a push got back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushResponse {
    pub copy: u32,
    pub tries: u32,
    /// None: no answer on any try.
    pub status: Option<u16>,
    /// The body as received (first [`RESPONSE_BODY_KEPT_BYTES_MAX`] bytes).
    pub body: String,
    pub elapsed_ms: u64,
    /// The XML reply, if the body was one.
    pub reply: Option<PassiveReply>,
    /// The body was XML but could not be opened (bad signature, bad crypt...).
    pub reply_error: Option<String>,
    /// The last transport error, when there was no answer.
    pub error: Option<String>,
}

/// One prepared HTTP request.
#[derive(Debug, Clone)]
pub struct PreparedPush {
    pub url: String,
    pub body: String,
}

#[derive(Debug, Clone, Copy)]
struct RetryPolicy {
    tries: u32,
    interval: Duration,
    timeout: Duration,
}

impl RetryPolicy {
    fn from_request(retry: bool, interval_ms: Option<u64>, timeout_ms: Option<u64>) -> Result<Self, PushError> {
        let interval_ms = interval_ms.unwrap_or(RETRY_INTERVAL_MS_DEFAULT);
        let timeout_ms = timeout_ms.unwrap_or(ATTEMPT_TIMEOUT_MS_DEFAULT);
        if interval_ms > RETRY_INTERVAL_MS_MAX {
            return Err(PushError::Invalid(format!("retry_interval_ms must be at most {RETRY_INTERVAL_MS_MAX}")));
        }
        if timeout_ms == 0 || timeout_ms > ATTEMPT_TIMEOUT_MS_MAX {
            return Err(PushError::Invalid(format!("timeout_ms must be 1..={ATTEMPT_TIMEOUT_MS_MAX}")));
        }
        Ok(Self {
            tries: if retry { PUSH_TRIES_MAX } else { 1 },
            interval: Duration::from_millis(interval_ms),
            timeout: Duration::from_millis(timeout_ms),
        })
    }
}

/// Sends callbacks; cheap to clone (one shared connection pool).
#[derive(Debug, Clone)]
pub struct Pusher {
    http: reqwest::Client,
}

fn push_error(e: PushError) -> Response {
    let status = match e {
        PushError::Invalid(_) => StatusCode::BAD_REQUEST,
        PushError::Client(_) => StatusCode::BAD_GATEWAY,
    };
    (status, Json(json!({"error": e.to_string()}))).into_response()
}

/// `POST /sandbox/callbacks/push`
pub async fn push(Json(req): Json<PushRequest>) -> Response {
    let result = match Pusher::new() {
        Ok(pusher) => pusher.push(&req).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(responses) => Json(json!({"responses": responses})).into_response(),
        Err(e) => push_error(e),
    }
}

/// `POST /sandbox/callbacks/component`
pub async fn push_component(Json(req): Json<ComponentPushRequest>) -> Response {
    let result = match Pusher::new() {
        Ok(pusher) => pusher.push_component(&req).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(response) => Json(json!({"response": response})).into_response(),
        Err(e) => push_error(e),
    }
}
