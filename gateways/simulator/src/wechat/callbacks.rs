//! The simulator's WeChat → gateway direction: pushes signed (and in compat
//! and safe mode encrypted) callbacks to a gateway the way WeChat does, with
//! duplicates, bursts, retries and deliberate tampering, and opens the
//! passive replies (checking their `MsgSignature`).
//!
//! Usable in-process ([`Pusher`]) by tests and the gateway bench, and over
//! HTTP: `POST /sandbox/callbacks/push` and `POST /sandbox/callbacks/component`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;

use wxcm_protocol::wechat::crypto::{self, AesKey, MsgCrypt};
use wxcm_protocol::wechat::message::encrypted_payload;
use wxcm_protocol::wechat::xml::{self, write_cdata, XmlLimits};

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

fn now_unix() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)).unwrap_or(0)
}

fn nonce() -> String {
    rand::random::<u32>().to_string()
}

fn check_field(what: &str, value: &str) -> Result<(), PushError> {
    if value.is_empty() || value.chars().count() > FIELD_CHARS_MAX {
        return Err(PushError::Invalid(format!("{what} must be 1..={FIELD_CHARS_MAX} characters")));
    }
    Ok(())
}

fn element(out: &mut String, name: &str, value: &str) {
    out.push('<');
    out.push_str(name);
    out.push('>');
    write_cdata(out, value);
    out.push_str("</");
    out.push_str(name);
    out.push('>');
}

fn number(out: &mut String, name: &str, value: impl std::fmt::Display) {
    out.push_str(&format!("<{name}>{value}</{name}>"));
}

/// The account's original id as WeChat puts it in ToUserName.
fn original_id(appid: &str) -> String {
    format!("gh_{}", appid.trim_start_matches("wx").chars().take(12).collect::<String>())
}

/// The plaintext callback XML WeChat would send (without the root element).
fn message_fields(appid: &str, m: &PushMessage, tamper: Tamper) -> Result<String, PushError> {
    check_field("openid", &m.openid)?;
    let create_time = m.create_time.unwrap_or_else(now_unix);
    let msg_id = m.msg_id.unwrap_or_else(|| rand::random::<u64>() >> 1);
    let mut out = String::new();
    element(&mut out, "ToUserName", &original_id(appid));
    element(&mut out, "FromUserName", &m.openid);
    number(&mut out, "CreateTime", create_time);
    let event = |out: &mut String, name: &str| {
        element(out, "MsgType", "event");
        element(out, "Event", name);
    };
    let need = |value: &Option<String>, what: &str| -> Result<String, PushError> {
        let v = value.clone().ok_or_else(|| PushError::Invalid(format!("{what} is required for this kind")))?;
        check_field(what, &v)?;
        Ok(v)
    };
    match m.kind {
        MessageKind::Subscribe => {
            event(&mut out, "subscribe");
            if let Some(scene) = &m.scene {
                check_field("scene", scene)?;
                element(&mut out, "EventKey", &format!("qrscene_{scene}"));
                element(&mut out, "Ticket", &format!("ticket-{scene}"));
            }
        }
        MessageKind::Unsubscribe => event(&mut out, "unsubscribe"),
        MessageKind::Scan => {
            let scene = need(&m.scene, "scene")?;
            event(&mut out, "SCAN");
            element(&mut out, "EventKey", &scene);
            element(&mut out, "Ticket", &format!("ticket-{scene}"));
        }
        MessageKind::Text => {
            let content =
                if tamper == Tamper::Oversized { "x".repeat(OVERSIZED_BYTES) } else { need(&m.content, "content")? };
            element(&mut out, "MsgType", "text");
            element(&mut out, "Content", &content);
            number(&mut out, "MsgId", msg_id);
        }
        MessageKind::Click => {
            let key = need(&m.key, "key")?;
            event(&mut out, "CLICK");
            element(&mut out, "EventKey", &key);
        }
        MessageKind::View => {
            let url = need(&m.key, "key")?;
            event(&mut out, "VIEW");
            element(&mut out, "EventKey", &url);
        }
        MessageKind::Location => {
            event(&mut out, "LOCATION");
            element(&mut out, "Latitude", "23.137466");
            element(&mut out, "Longitude", "113.352425");
            element(&mut out, "Precision", "119.385040");
        }
        MessageKind::TemplateFinish => {
            event(&mut out, "TEMPLATESENDJOBFINISH");
            number(&mut out, "MsgID", msg_id);
            element(&mut out, "Status", "success");
        }
        MessageKind::MassFinish => {
            event(&mut out, "MASSSENDJOBFINISH");
            number(&mut out, "MsgID", msg_id);
            element(&mut out, "Status", "send success");
            for (name, n) in [("TotalCount", 100), ("FilterCount", 80), ("SentCount", 75), ("ErrorCount", 5)] {
                number(&mut out, name, n);
            }
        }
        MessageKind::Image => {
            element(&mut out, "MsgType", "image");
            element(&mut out, "PicUrl", "http://mmbiz.qpic.cn/sandbox.jpg");
            element(&mut out, "MediaId", "sandbox-media-id");
            number(&mut out, "MsgId", msg_id);
        }
    }
    if tamper == Tamper::Oversized && m.kind != MessageKind::Text {
        element(&mut out, "Padding", &"x".repeat(OVERSIZED_BYTES));
    }
    Ok(out)
}

/// Wraps fields in the root, with the XXE payload first for the `doctype` tamper.
fn document(fields: &str, tamper: Tamper) -> String {
    let mut out = String::new();
    if tamper == Tamper::Doctype {
        out.push_str("<?xml version=\"1.0\"?><!DOCTYPE xml [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]>");
    }
    out.push_str("<xml>");
    out.push_str(fields);
    if tamper == Tamper::Doctype {
        out.push_str("<Leak>&xxe;</Leak>");
    }
    out.push_str("</xml>");
    out
}

fn crypt_for(encoding_aes_key: &str, appid: &str) -> Result<MsgCrypt, PushError> {
    let key = AesKey::from_encoding_aes_key(encoding_aes_key)
        .map_err(|e| PushError::Invalid(format!("encoding_aes_key: {e}")))?;
    MsgCrypt::new(key, appid).map_err(|e| PushError::Invalid(format!("appid: {e}")))
}

/// Query string of a signed callback (`signature`, and `msg_signature` over `encrypt`).
fn signed_query(token: &str, timestamp: &str, nonce: &str, encrypt: Option<&str>, openid: Option<&str>) -> String {
    let mut query =
        format!("signature={}&timestamp={timestamp}&nonce={nonce}", crypto::signature(token, timestamp, nonce));
    if let Some(openid) = openid {
        query.push_str(&format!("&openid={}", urlencode(openid)));
    }
    if let Some(encrypt) = encrypt {
        query.push_str(&format!(
            "&encrypt_type=aes&msg_signature={}",
            crypto::msg_signature(token, timestamp, nonce, encrypt)
        ));
    }
    query
}

fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn target(base: &str) -> Result<&str, PushError> {
    let base = base.trim_end_matches('/');
    if !(base.starts_with("http://") || base.starts_with("https://")) || base.len() > FIELD_CHARS_MAX {
        return Err(PushError::Invalid("target_base_url must be an http(s) URL".into()));
    }
    Ok(base)
}

impl Pusher {
    pub fn new() -> Result<Self, PushError> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()
            .map_err(|e| PushError::Client(e.to_string()))?;
        Ok(Self { http })
    }

    /// The request for one copy of `req`: URL with the signed query, and body.
    pub fn prepare(&self, req: &PushRequest) -> Result<PreparedPush, PushError> {
        check_field("appid", &req.appid)?;
        check_field("token", &req.token)?;
        let base = target(&req.target_base_url)?;
        let fields = message_fields(&req.appid, &req.message, req.tamper)?;
        let plaintext = document(&fields, req.tamper);
        let timestamp = match req.tamper {
            Tamper::TimestampStale => now_unix() - STALE_BY_S,
            _ => now_unix(),
        }
        .to_string();
        let nonce = nonce();
        let sign_token = match req.tamper {
            Tamper::Signature => format!("{}-not", req.token),
            _ => req.token.clone(),
        };
        let (body, encrypt) =
            match req.mode {
                PushMode::Plaintext => {
                    if req.tamper == Tamper::AppidTail {
                        return Err(PushError::Invalid("appid_tail needs compat or safe mode".into()));
                    }
                    (plaintext, None)
                }
                PushMode::Compat | PushMode::Safe => {
                    let aes = req.encoding_aes_key.as_deref().ok_or_else(|| {
                        PushError::Invalid("encoding_aes_key is required in compat and safe mode".into())
                    })?;
                    let crypt_appid = match (req.tamper, req.component) {
                        (Tamper::AppidTail, _) => FOREIGN_APPID.to_owned(),
                        (_, true) => req.component_appid.clone().ok_or_else(|| {
                            PushError::Invalid("component_appid is required for component pushes".into())
                        })?,
                        (_, false) => req.appid.clone(),
                    };
                    let encrypt = crypt_for(aes, &crypt_appid)?
                        .encrypt_random(&plaintext)
                        .map_err(|e| PushError::Invalid(e.to_string()))?;
                    let mut body = String::from("<xml>");
                    if req.mode == PushMode::Compat {
                        // Compat mode: WeChat sends the plain fields beside the ciphertext.
                        body.push_str(&fields);
                    } else {
                        element(&mut body, "ToUserName", &original_id(&req.appid));
                    }
                    element(&mut body, "Encrypt", &encrypt);
                    body.push_str("</xml>");
                    (body, Some(encrypt))
                }
            };
        let query = signed_query(&sign_token, &timestamp, &nonce, encrypt.as_deref(), Some(&req.message.openid));
        let path = if req.component { "wechat/component/mp" } else { "wechat/mp" };
        Ok(PreparedPush { url: format!("{base}/{path}/{}?{query}", urlencode(&req.appid)), body })
    }

    /// Pushes `req.copies` copies and opens each passive reply.
    pub async fn push(&self, req: &PushRequest) -> Result<Vec<PushResponse>, PushError> {
        if req.copies == 0 || req.copies > PUSH_COPIES_MAX {
            return Err(PushError::Invalid(format!("copies must be 1..={PUSH_COPIES_MAX}")));
        }
        let policy = RetryPolicy::from_request(req.retry, req.retry_interval_ms, req.timeout_ms)?;
        // Copies are the same message: fix the time and id once, as WeChat's retries keep them.
        let mut fixed = req.clone();
        fixed.message.create_time.get_or_insert_with(now_unix);
        fixed.message.msg_id.get_or_insert_with(|| rand::random::<u64>() >> 1);
        let opener = match req.mode {
            PushMode::Plaintext => None,
            _ => {
                let appid =
                    if req.component { req.component_appid.clone().unwrap_or_default() } else { req.appid.clone() };
                Some((req.encoding_aes_key.clone().unwrap_or_default(), appid))
            }
        };
        let mut prepared = Vec::new();
        for _ in 0..req.copies {
            prepared.push(self.prepare(&fixed)?);
        }
        let mut responses = Vec::with_capacity(prepared.len());
        if req.concurrent {
            let mut set = tokio::task::JoinSet::new();
            for (copy, p) in (0u32..).zip(prepared) {
                let pusher = self.clone();
                set.spawn(async move { (copy, pusher.send(&p, policy).await) });
            }
            while let Some(joined) = set.join_next().await {
                let (copy, r) = joined.map_err(|e| PushError::Client(e.to_string()))?;
                responses.push((copy, r));
            }
            responses.sort_by_key(|(copy, _)| *copy);
        } else {
            for (copy, p) in (0u32..).zip(prepared) {
                responses.push((copy, self.send(&p, policy).await));
            }
        }
        Ok(responses
            .into_iter()
            .map(|(copy, mut r)| {
                r.copy = copy;
                open_reply(&mut r, &req.token, opener.as_ref());
                r
            })
            .collect())
    }

    /// Pushes one third-party-platform authorization event (always encrypted).
    pub async fn push_component(&self, req: &ComponentPushRequest) -> Result<PushResponse, PushError> {
        check_field("component_appid", &req.component_appid)?;
        check_field("token", &req.token)?;
        let base = target(&req.target_base_url)?;
        let policy = RetryPolicy::from_request(req.retry, req.retry_interval_ms, req.timeout_ms)?;
        let now = now_unix();
        let mut fields = String::new();
        element(&mut fields, "AppId", &req.component_appid);
        number(&mut fields, "CreateTime", now);
        match &req.info {
            ComponentInfo::VerifyTicket { ticket } => {
                check_field("ticket", ticket)?;
                element(&mut fields, "InfoType", "component_verify_ticket");
                element(&mut fields, "ComponentVerifyTicket", ticket);
            }
            ComponentInfo::Authorized { authorizer_appid, authorization_code, pre_auth_code } => {
                check_field("authorizer_appid", authorizer_appid)?;
                check_field("authorization_code", authorization_code)?;
                check_field("pre_auth_code", pre_auth_code)?;
                element(&mut fields, "InfoType", "authorized");
                element(&mut fields, "AuthorizerAppid", authorizer_appid);
                element(&mut fields, "AuthorizationCode", authorization_code);
                number(&mut fields, "AuthorizationCodeExpiredTime", now + 3600);
                element(&mut fields, "PreAuthCode", pre_auth_code);
            }
            ComponentInfo::Unauthorized { authorizer_appid } => {
                check_field("authorizer_appid", authorizer_appid)?;
                element(&mut fields, "InfoType", "unauthorized");
                element(&mut fields, "AuthorizerAppid", authorizer_appid);
            }
        }
        let encrypt = crypt_for(&req.encoding_aes_key, &req.component_appid)?
            .encrypt_random(&document(&fields, Tamper::None))
            .map_err(|e| PushError::Invalid(e.to_string()))?;
        let mut body = String::from("<xml>");
        element(&mut body, "AppId", &req.component_appid);
        element(&mut body, "Encrypt", &encrypt);
        body.push_str("</xml>");
        let query = signed_query(&req.token, &now.to_string(), &nonce(), Some(&encrypt), None);
        let prepared = PreparedPush { url: format!("{base}/wechat/component/events?{query}"), body };
        Ok(self.send(&prepared, policy).await)
    }

    async fn send(&self, p: &PreparedPush, policy: RetryPolicy) -> PushResponse {
        let started = Instant::now();
        let mut last_error = None;
        for attempt in 1..=policy.tries {
            if attempt > 1 {
                tokio::time::sleep(policy.interval).await;
            }
            let sent = self
                .http
                .post(&p.url)
                .header("content-type", "text/xml")
                .timeout(policy.timeout)
                .body(p.body.clone())
                .send()
                .await;
            let answer = match sent {
                Ok(res) => {
                    let status = res.status().as_u16();
                    res.bytes().await.map(|b| (status, b))
                }
                Err(e) => Err(e),
            };
            match answer {
                Ok((status, bytes)) => {
                    let keep = bytes.len().min(RESPONSE_BODY_KEPT_BYTES_MAX);
                    return PushResponse {
                        copy: 0,
                        tries: attempt,
                        status: Some(status),
                        body: String::from_utf8_lossy(&bytes[..keep]).into_owned(),
                        elapsed_ms: elapsed_ms(started),
                        reply: None,
                        reply_error: None,
                        error: None,
                    };
                }
                Err(e) => last_error = Some(e.to_string()),
            }
        }
        PushResponse {
            copy: 0,
            tries: policy.tries,
            status: None,
            body: String::new(),
            elapsed_ms: elapsed_ms(started),
            reply: None,
            reply_error: None,
            error: last_error,
        }
    }
}

fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Parses an XML reply; opens and verifies a safe-mode envelope.
fn open_reply(r: &mut PushResponse, token: &str, opener: Option<&(String, String)>) {
    if r.status != Some(200) || !r.body.trim_start().starts_with('<') {
        return;
    }
    match parse_reply(&r.body, token, opener) {
        Ok(reply) => r.reply = Some(reply),
        Err(e) => r.reply_error = Some(e),
    }
}

fn parse_reply(body: &str, token: &str, opener: Option<&(String, String)>) -> Result<PassiveReply, String> {
    let limits = XmlLimits::default();
    let outer = xml::parse(body.as_bytes(), &limits).map_err(|e| e.to_string())?;
    let fields_of = |doc: &xml::XmlDoc| {
        let mut map = BTreeMap::new();
        for (k, v) in &doc.fields {
            map.entry(k.clone()).or_insert_with(|| v.clone());
        }
        map
    };
    let Some(encrypt) = encrypted_payload(&outer) else {
        return Ok(PassiveReply { encrypted: false, signature_valid: None, fields: fields_of(&outer) });
    };
    let (aes, appid) = opener.ok_or("an encrypted reply to a plaintext callback")?;
    let timestamp = outer.get("TimeStamp").ok_or("reply without TimeStamp")?;
    let nonce = outer.get("Nonce").ok_or("reply without Nonce")?;
    let given = outer.get("MsgSignature").ok_or("reply without MsgSignature")?;
    let signature_valid = crypto::verify_hex(&crypto::msg_signature(token, timestamp, nonce, encrypt), given);
    let inner = crypt_for(aes, appid).map_err(|e| e.to_string())?.decrypt(encrypt).map_err(|e| e.to_string())?;
    let doc = xml::parse(inner.as_bytes(), &limits).map_err(|e| e.to_string())?;
    Ok(PassiveReply { encrypted: true, signature_valid: Some(signature_valid), fields: fields_of(&doc) })
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

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
    const APPID: &str = "wx0123456789abcdef";

    fn request(mode: PushMode, tamper: Tamper) -> PushRequest {
        let mut m = PushMessage::new(MessageKind::Text, "o-member-1");
        m.content = Some("hello".into());
        let mut r = PushRequest::safe("http://127.0.0.1:1", APPID, "tok", KEY, m);
        r.mode = mode;
        r.tamper = tamper;
        r
    }

    fn query_value<'a>(url: &'a str, name: &str) -> Option<&'a str> {
        url.split_once('?')?.1.split('&').find_map(|kv| kv.strip_prefix(&format!("{name}=")))
    }

    #[test]
    fn safe_push_is_signed_and_decrypts_to_the_message() {
        let p = Pusher::new().unwrap().prepare(&request(PushMode::Safe, Tamper::None)).unwrap();
        let (ts, nonce) = (query_value(&p.url, "timestamp").unwrap(), query_value(&p.url, "nonce").unwrap());
        assert_eq!(query_value(&p.url, "signature").unwrap(), crypto::signature("tok", ts, nonce));
        let outer = xml::parse(p.body.as_bytes(), &XmlLimits::default()).unwrap();
        let encrypt = encrypted_payload(&outer).unwrap();
        assert_eq!(query_value(&p.url, "msg_signature").unwrap(), crypto::msg_signature("tok", ts, nonce, encrypt));
        assert!(outer.get("Content").is_none(), "safe mode hides the fields");
        let inner = crypt_for(KEY, APPID).unwrap().decrypt(encrypt).unwrap();
        let doc = xml::parse(inner.as_bytes(), &XmlLimits::default()).unwrap();
        assert_eq!(doc.get("Content"), Some("hello"));
        assert!(p.url.contains("/wechat/mp/wx0123456789abcdef?"));
    }

    #[test]
    fn compat_push_carries_both_plaintext_push_neither() {
        let p = Pusher::new().unwrap().prepare(&request(PushMode::Compat, Tamper::None)).unwrap();
        let outer = xml::parse(p.body.as_bytes(), &XmlLimits::default()).unwrap();
        assert_eq!(outer.get("Content"), Some("hello"));
        assert!(encrypted_payload(&outer).is_some());
        let p = Pusher::new().unwrap().prepare(&request(PushMode::Plaintext, Tamper::None)).unwrap();
        assert!(!p.body.contains("Encrypt") && query_value(&p.url, "msg_signature").is_none());
    }

    #[test]
    fn tampers_break_what_they_say() {
        let pusher = Pusher::new().unwrap();
        let p = pusher.prepare(&request(PushMode::Plaintext, Tamper::Signature)).unwrap();
        let (ts, nonce) = (query_value(&p.url, "timestamp").unwrap(), query_value(&p.url, "nonce").unwrap());
        assert_ne!(query_value(&p.url, "signature").unwrap(), crypto::signature("tok", ts, nonce));
        let p = pusher.prepare(&request(PushMode::Plaintext, Tamper::TimestampStale)).unwrap();
        let ts: i64 = query_value(&p.url, "timestamp").unwrap().parse().unwrap();
        assert!(now_unix() - ts >= STALE_BY_S);
        let p = pusher.prepare(&request(PushMode::Safe, Tamper::AppidTail)).unwrap();
        let outer = xml::parse(p.body.as_bytes(), &XmlLimits::default()).unwrap();
        let encrypt = encrypted_payload(&outer).unwrap();
        assert!(matches!(crypt_for(KEY, APPID).unwrap().decrypt(encrypt), Err(crypto::CryptoError::AppIdMismatch)));
        let p = pusher.prepare(&request(PushMode::Plaintext, Tamper::Doctype)).unwrap();
        assert!(p.body.contains("<!DOCTYPE") && p.body.contains("<!ENTITY"));
        let p = pusher.prepare(&request(PushMode::Plaintext, Tamper::Oversized)).unwrap();
        assert!(p.body.len() > OVERSIZED_BYTES);
        assert!(pusher.prepare(&request(PushMode::Plaintext, Tamper::AppidTail)).is_err());
    }

    #[test]
    fn encrypted_reply_opens_and_its_signature_is_checked() {
        let crypt = crypt_for(KEY, APPID).unwrap();
        let inner = wxcm_protocol::wechat::reply::text_reply("o-member-1", "gh_x", 1, "hi there");
        let body =
            wxcm_protocol::wechat::reply::encrypted_reply_random(&crypt, "tok", "1700000000", "42", &inner).unwrap();
        let opener = (KEY.to_owned(), APPID.to_owned());
        let reply = parse_reply(&body, "tok", Some(&opener)).unwrap();
        assert_eq!((reply.encrypted, reply.signature_valid, reply.content()), (true, Some(true), Some("hi there")));
        let reply = parse_reply(&body, "other-token", Some(&opener)).unwrap();
        assert_eq!(reply.signature_valid, Some(false));
    }

    #[tokio::test]
    async fn copies_are_bounded_and_no_answer_is_retried() {
        let pusher = Pusher::new().unwrap();
        let mut r = request(PushMode::Safe, Tamper::None);
        r.copies = PUSH_COPIES_MAX + 1;
        assert!(matches!(pusher.push(&r).await, Err(PushError::Invalid(_))));
        // Nothing listens on port 1: three tries, then no answer.
        r.copies = 1;
        r.retry = true;
        r.retry_interval_ms = Some(1);
        let responses = pusher.push(&r).await.unwrap();
        assert_eq!((responses[0].tries, responses[0].status), (PUSH_TRIES_MAX, None));
        assert!(responses[0].error.is_some());
    }
}
