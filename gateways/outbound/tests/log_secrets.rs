//! The log-secrets test: secrets never reach logs or errors.
//!
//! Every outbound call that carries an app secret, a token or a Pay key is
//! made to fail in transport, twice: against a port that refuses connections,
//! and against a server that reads the whole request and closes the connection
//! without answering. Every log line (TRACE, `log` records of reqwest and
//! hyper included) and every returned error (Display and Debug of each link of
//! its source chain) is checked for the secret values.
//!
//! The list of calls is written out below, but it cannot fall behind the
//! client: the recording server must have seen every WeChat and Pay path that
//! the client's source names, and every WeChat request it saw must have carried
//! one of the secrets (so each call really was a secret-bearing one).

use std::collections::BTreeSet;
use std::error::Error as StdError;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use tokio::io::AsyncReadExt;
use wxcm_commands::pay_port::{JsapiOrderRequest, MerchantCredentials, PayApi, PayGateway, RefundRequest};
use wxcm_commands::ports::{PortError, SecretSealer};
use wxcm_domain::tenant::SealedSecret;
use wxcm_outbound::pay::{PayClientSettings, WechatPayClient};
use wxcm_outbound::wechat::client::{Account, CustomMessage, QrCode};
use wxcm_outbound::wechat::tokens::{
    MemoryTokenStore, StaticTokenSources, TokenCenter, TokenCenterConfig, TokenFetcher, TokenKey, TokenStore,
};
use wxcm_outbound::wechat::{ClientConfig, WechatClient, WechatHttp};

/// Every secret value below contains this; no log line or error may.
const CANARY: &str = "CANARY";

const APPID: &str = "wxlogsecrets0direct";
const AUTHORIZER: &str = "wxlogsecrets0authz";
const COMPONENT: &str = "wxlogsecrets0comp";
const APP_SECRET: &str = "SECRET-CANARY-app-secret";
const COMPONENT_SECRET: &str = "SECRET-CANARY-component-secret";
const VERIFY_TICKET: &str = "SECRET-CANARY-verify-ticket";
const ACCESS_TOKEN: &str = "SECRET-CANARY-access-token";
const AUTHORIZER_TOKEN: &str = "SECRET-CANARY-authorizer-token";
const COMPONENT_TOKEN: &str = "SECRET-CANARY-component-token";
const REFRESH_TOKEN: &str = "SECRET-CANARY-refresh-token";
const PAY_V2_KEY: &str = "SECRET-CANARY-pay-api-v2-key-032";
const PAY_V3_KEY: &str = "SECRET-CANARY-pay-api-v3-key-032";
const PAY_SERIAL: &str = "SERIALCANARY0123456789ABCDEF";
const PAY_PRIVATE_PEM: &str = include_str!("../../testdata/other_private.pem");

// ---------------------------------------------------------------- log capture

#[derive(Clone)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every event of the process at TRACE, `log` records bridged in (reqwest and
/// hyper log through `log`), written into one buffer. Global, so tasks on any
/// thread are captured; this file is its own test binary.
fn logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let captured = Captured(Arc::new(Mutex::new(Vec::new())));
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing_subscriber::util::SubscriberInitExt::try_init(subscriber).expect("the only subscriber of this binary");
        captured
    })
}

fn captured_text() -> String {
    String::from_utf8_lossy(&logs().0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
}

// ---------------------------------------------------------------- checks

/// The secret material a text must not contain: every canary, and each line of
/// the Pay private key's base64 body.
fn leaks(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    if text.contains(CANARY) {
        found.push(CANARY.to_owned());
    }
    for line in PAY_PRIVATE_PEM.lines().filter(|l| !l.starts_with("-----") && l.len() >= 16) {
        if text.contains(line) {
            found.push(format!("private key line {line}"));
        }
    }
    found
}

/// Display and Debug of every link of the error's source chain.
fn chain_text(e: &(dyn StdError + 'static)) -> String {
    let mut text = String::new();
    let mut link: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(e) = link {
        text.push_str(&format!("{e}\n{e:?}\n"));
        link = e.source();
    }
    text
}

/// What one call returned.
struct Outcome {
    call: String,
    text: String,
}

fn failed<T, E: StdError + 'static>(call: &str, result: Result<T, E>) -> Outcome {
    match result {
        Ok(_) => panic!("{call}: succeeded against a dead transport"),
        Err(e) => Outcome { call: call.to_owned(), text: chain_text(&e) },
    }
}

fn check_outcomes(outcomes: &[Outcome], transport_marker: &str) {
    for o in outcomes {
        let leaked = leaks(&o.text);
        assert!(leaked.is_empty(), "{}: error shows {leaked:?}:\n{}", o.call, o.text);
        // A failure for another reason (bad input, missing credentials) would
        // prove nothing about transport errors.
        assert!(o.text.contains(transport_marker), "{}: not a transport failure:\n{}", o.call, o.text);
    }
}

fn check_logs() {
    let text = captured_text();
    // The capture works, for our events and for the `log` records of reqwest.
    assert!(text.contains("wechat call retried") && text.contains("reqwest::connect"), "nothing captured");
    let leaked: Vec<(usize, &str)> =
        text.lines().enumerate().filter(|(_, line)| !leaks(line).is_empty()).take(5).collect();
    assert!(leaked.is_empty(), "log lines with secrets: {leaked:#?}");
}

// ---------------------------------------------------------------- dead ends

/// A port nothing listens on: connections are refused.
fn refused_base() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

/// Reads each request whole, records it, and closes the connection without
/// an answer: the request (and its secrets) went out, the call still fails.
struct Hangup {
    base: String,
    requests: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

/// Largest request the hang-up server records.
const REQUEST_BYTES_MAX: usize = 1024 * 1024;

impl Hangup {
    async fn start() -> Hangup {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let request = read_request(&mut socket).await;
                    seen.lock().unwrap_or_else(|p| p.into_inner()).push(request);
                    drop(socket);
                });
            }
        });
        Hangup { base, requests, task }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Head and body of one request (by Content-Length or chunked encoding;
/// at most until the sender pauses), lossily as text.
async fn read_request(socket: &mut tokio::net::TcpStream) -> String {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let read = tokio::time::timeout(Duration::from_millis(300), socket.read(&mut chunk)).await;
        match read {
            Ok(Ok(n)) if n > 0 => bytes.extend_from_slice(&chunk[..n]),
            _ => break,
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if let Some(head_end) = text.find("\r\n\r\n") {
            let head = text[..head_end].to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            let complete = match length {
                Some(length) => bytes.len() >= head_end + 4 + length,
                None if head.contains("transfer-encoding: chunked") => text.ends_with("\r\n0\r\n\r\n"),
                None => true,
            };
            if complete {
                break;
            }
        }
        if bytes.len() > REQUEST_BYTES_MAX {
            break;
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

// ---------------------------------------------------------------- the clients

/// "Seals" by hex-encoding: enough to store the refresh token.
struct HexSealer;

impl SecretSealer for HexSealer {
    fn seal(&self, plaintext: &str) -> Result<SealedSecret, PortError> {
        Ok(SealedSecret::from_ciphertext(hex::encode(plaintext)))
    }
    fn open(&self, sealed: &SealedSecret) -> Result<String, PortError> {
        let bytes = hex::decode(sealed.ciphertext()).map_err(PortError::new)?;
        String::from_utf8(bytes).map_err(PortError::new)
    }
}

async fn seed(store: &MemoryTokenStore, key: &TokenKey, value: &str) {
    assert!(store.try_lease(key, "seed", 60_000).await.expect("lease"));
    let generation = store.load(key).await.expect("load").map(|r| r.generation).unwrap_or(0);
    let expires_at = Utc::now() + chrono::Duration::hours(2);
    let stored = store.compare_and_set(key, "seed", generation, value, expires_at).await.expect("cas");
    assert!(stored.is_some());
    store.release_lease(key, "seed").await.expect("release");
}

struct Clients {
    http: Arc<WechatHttp>,
    center: Arc<TokenCenter>,
    client: WechatClient,
    pay: WechatPayClient,
}

/// The WeChat transport, a token center holding a token for every kind of
/// account (so the API calls go out), and the Pay client, all aimed at `base`.
async fn clients(base: &str) -> Clients {
    let config = ClientConfig {
        api_base: base.to_owned(),
        open_base: base.to_owned(),
        mp_base: base.to_owned(),
        request_timeout_ms: 3_000,
        connect_timeout_ms: 1_000,
        attempts_max: 2,
        backoff_base_ms: 1,
        backoff_max_ms: 2,
        ..ClientConfig::default()
    };
    let http = Arc::new(WechatHttp::new(config).expect("wechat transport"));
    let store = Arc::new(MemoryTokenStore::default());
    seed(&store, &TokenKey::access_token(APPID).expect("key"), ACCESS_TOKEN).await;
    seed(&store, &TokenKey::authorizer_token(AUTHORIZER).expect("key"), AUTHORIZER_TOKEN).await;
    seed(&store, &TokenKey::component_token(COMPONENT).expect("key"), COMPONENT_TOKEN).await;
    let sealed = HexSealer.seal(REFRESH_TOKEN).expect("seal");
    store.save_refresh_token(AUTHORIZER, COMPONENT, &sealed).await.expect("refresh token");
    store.save_verify_ticket(COMPONENT, VERIFY_TICKET).await.expect("ticket");
    let sources = StaticTokenSources {
        app_secrets: [(APPID.to_owned(), APP_SECRET.to_owned())].into(),
        component_secrets: [(COMPONENT.to_owned(), COMPONENT_SECRET.to_owned())].into(),
    };
    let center = Arc::new(TokenCenter::new(
        store,
        Arc::new(sources),
        http.clone(),
        Arc::new(HexSealer),
        TokenCenterConfig { wait_ms_max: 500, poll_ms: 5, ..TokenCenterConfig::default() },
    ));
    let client = WechatClient::new(http.clone(), center.clone());
    let pay = WechatPayClient::new(PayClientSettings {
        base_url: base.to_owned(),
        timeout_ms: 3_000,
        connect_timeout_ms: 1_000,
        attempts_max: 2,
        retry_backoff_ms: 1,
        ..PayClientSettings::default()
    })
    .expect("pay client");
    Clients { http, center, client, pay }
}

/// Every WeChat call that carries a secret or a token, for both kinds of account.
async fn wechat_calls(c: &Clients) -> Vec<Outcome> {
    let mut out = Vec::new();
    let ids = vec!["o_member_0001".to_owned(), "o_member_0002".to_owned()];
    for account in [Account::Direct(APPID.into()), Account::Authorizer(AUTHORIZER.into())] {
        let a = &account;
        let name = |call: &str| format!("{call} ({a:?})");
        let client = &c.client;
        let menu = json!({"button": [{"type": "click", "name": "Points", "key": "POINTS"}]});
        out.push(failed(&name("menu_create"), client.menu_create(a, &menu).await));
        out.push(failed(&name("menu_get"), client.menu_get(a).await));
        let qr = QrCode::Temporary { scene: "poster".into(), expire_seconds: 3600 };
        out.push(failed(&name("qrcode_create"), client.qrcode_create(a, &qr).await));
        let text = CustomMessage::Text("hello".into());
        out.push(failed(&name("custom_send"), client.custom_send(a, &ids[0], &text).await));
        let data = json!({"first": {"value": "x"}});
        out.push(failed(&name("template_send"), client.template_send(a, &ids[0], "tpl-1", None, &data).await));
        out.push(failed(&name("mass_send_by_tag"), client.mass_send_by_tag(a, 100, "hello").await));
        out.push(failed(&name("mass_send_by_openids"), client.mass_send_by_openids(a, &ids, "hello").await));
        let upload = client.media_upload(a, "image", "a.png", "image/png", vec![1, 2, 3]).await;
        out.push(failed(&name("media_upload"), upload));
        out.push(failed(&name("media_get"), client.media_get(a, "media-1").await));
        out.push(failed(&name("user_info"), client.user_info(a, &ids[0]).await));
        out.push(failed(&name("user_info_batch"), client.user_info_batch(a, &ids).await));
        out.push(failed(&name("tag_create"), client.tag_create(a, "vip").await));
        out.push(failed(&name("tags_get"), client.tags_get(a).await));
        out.push(failed(&name("tag_members"), client.tag_members(a, 100, &ids).await));
        out.push(failed(&name("jssdk_config"), client.jssdk_config(a.appid(), "https://x.y/p", "n", 1).await));
    }
    let client = &c.client;
    out.push(failed("oauth_exchange", client.oauth_exchange(APPID, APP_SECRET, "code-1").await));
    out.push(failed("oauth_exchange_component", client.oauth_exchange_component(AUTHORIZER, COMPONENT, "c").await));
    out.push(failed("create_preauth_code", client.create_preauth_code(COMPONENT).await));
    out
}

/// The token center's refreshes (each forced by reporting its token as
/// rejected) and the raw token calls of the transport.
async fn token_calls(c: &Clients) -> Vec<Outcome> {
    let mut out = Vec::new();
    let center = &c.center;
    for (key, failed_token) in [
        (TokenKey::access_token(APPID), ACCESS_TOKEN),
        (TokenKey::component_token(COMPONENT), COMPONENT_TOKEN),
        (TokenKey::authorizer_token(AUTHORIZER), AUTHORIZER_TOKEN),
    ] {
        let key = key.expect("key");
        out.push(failed(&format!("refresh {key}"), center.invalidate(&key, failed_token).await));
    }
    out.push(failed("complete_authorization", center.complete_authorization(COMPONENT, "auth-code-1").await));
    let http = &c.http;
    out.push(failed("access_token", http.access_token(APPID, APP_SECRET).await));
    out.push(failed("component_token", http.component_token(COMPONENT, COMPONENT_SECRET, VERIFY_TICKET).await));
    out.push(failed(
        "authorizer_token",
        http.authorizer_token(COMPONENT_TOKEN, COMPONENT, AUTHORIZER, REFRESH_TOKEN).await,
    ));
    out.push(failed("jsapi_ticket", http.jsapi_ticket(APPID, ACCESS_TOKEN).await));
    out.push(failed("query_auth", http.query_auth(COMPONENT_TOKEN, COMPONENT, "auth-code-2").await));
    out
}

fn merchant() -> MerchantCredentials {
    MerchantCredentials {
        appid: APPID.into(),
        mch_id: "1900000109".into(),
        api_v2_key: Some(PAY_V2_KEY.into()),
        api_v3_key: Some(PAY_V3_KEY.into()),
        merchant_cert_serial: Some(PAY_SERIAL.into()),
        merchant_private_key_pem: Some(PAY_PRIVATE_PEM.into()),
    }
}

/// Every Pay call, over both APIs.
async fn pay_calls(c: &Clients) -> Vec<Outcome> {
    let mut out = Vec::new();
    let m = merchant();
    for api in [PayApi::V2, PayApi::V3] {
        let order = JsapiOrderRequest {
            api,
            out_trade_no: "R20260101000001".into(),
            description: "Recharge".into(),
            amount_fen: 1_000,
            payer_openid: "o_member_0001".into(),
            notify_url: "https://crm.example.com/pay/notify/v2/wx1".into(),
            expires_at: Utc::now() + chrono::Duration::minutes(30),
            client_ip: "10.0.0.1".into(),
        };
        let refund = RefundRequest {
            api,
            out_trade_no: "R20260101000001".into(),
            out_refund_no: "F20260101000001".into(),
            total_fen: 1_000,
            refund_fen: 500,
            notify_url: "https://crm.example.com/pay/notify/refund/wx1".into(),
        };
        let p = &c.pay;
        out.push(failed(&format!("create_jsapi_order {api:?}"), p.create_jsapi_order(&m, &order).await));
        out.push(failed(&format!("query_order {api:?}"), p.query_order(&m, api, "R20260101000001").await));
        out.push(failed(&format!("close_order {api:?}"), p.close_order(&m, api, "R20260101000001").await));
        out.push(failed(&format!("refund {api:?}"), p.refund(&m, &refund).await));
    }
    out
}

// ---------------------------------------------------------------- coverage

/// String literals of `source` that start with one of `prefixes`: the paths
/// the client calls (`{…}` where a `format!` puts a value).
fn path_literals(source: &str, prefixes: &[&str]) -> BTreeSet<String> {
    let mut paths = BTreeSet::new();
    for prefix in prefixes {
        let quoted = format!("\"{prefix}");
        let mut rest = source;
        while let Some(at) = rest.find(&quoted) {
            let literal = &rest[at + 1..];
            let end = literal.find('"').unwrap_or(literal.len());
            paths.insert(literal[..end].to_owned());
            rest = &literal[end..];
        }
    }
    paths
}

/// Whether a request target (path and query) is a call of `literal`: the
/// literal exactly, a `{…}` standing for any run without `/`; the query is
/// compared only where the literal has one.
fn is_call_of(literal: &str, target: &str) -> bool {
    let target = if literal.contains('?') { target } else { target.split('?').next().unwrap_or(target) };
    glob(literal.as_bytes(), target.as_bytes())
}

fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.first() {
        None => text.is_empty(),
        Some(b'{') => {
            let rest = pattern.iter().position(|&b| b == b'}').map_or(&[][..], |end| &pattern[end + 1..]);
            let run = text.iter().position(|&b| b == b'/').unwrap_or(text.len());
            (0..=run).any(|taken| glob(rest, &text[taken..]))
        }
        Some(&b) => text.first() == Some(&b) && glob(&pattern[1..], &text[1..]),
    }
}

fn request_target(request: &str) -> &str {
    request.split_whitespace().nth(1).unwrap_or("")
}

fn check_coverage(requests: &[String]) {
    let wechat_source =
        [include_str!("../src/wechat/client.rs"), include_str!("../src/wechat/tokens/fetch.rs")].concat();
    let wechat_paths = path_literals(&wechat_source, &["/cgi-bin/", "/sns/"]);
    let pay_paths = path_literals(include_str!("../src/pay/mod.rs"), &["/pay/", "/secapi/", "/v3/"]);
    assert!(wechat_paths.len() >= 20 && pay_paths.len() >= 6, "{wechat_paths:?} {pay_paths:?}");
    for literal in wechat_paths.iter().chain(&pay_paths) {
        assert!(
            requests.iter().any(|r| is_call_of(literal, request_target(r))),
            "no call of {literal} was made: {:#?}",
            requests.iter().map(|r| request_target(r)).collect::<Vec<_>>()
        );
    }
    // Each WeChat request carried a secret or a token; that is what made it worth checking.
    for request in requests.iter().filter(|r| wechat_paths.iter().any(|p| is_call_of(p, request_target(r)))) {
        assert!(request.contains(CANARY), "a WeChat request without a secret:\n{request}");
    }
    // A v3 request carries the merchant's serial (its key only signs).
    assert!(requests.iter().any(|r| request_target(r).starts_with("/v3/") && r.contains(PAY_SERIAL)));
}

// ---------------------------------------------------------------- the tests

#[tokio::test]
async fn refused_connections_leave_no_secret_in_logs_or_errors() {
    logs();
    let c = clients(&refused_base()).await;
    let mut outcomes = wechat_calls(&c).await;
    outcomes.extend(token_calls(&c).await);
    check_outcomes(&outcomes, "transport error calling wechat");
    let pay = pay_calls(&c).await;
    check_outcomes(&pay, "WeChat Pay unavailable");
    check_logs();
}

#[tokio::test]
async fn hung_up_requests_leave_no_secret_in_logs_or_errors() {
    logs();
    let server = Hangup::start().await;
    let c = clients(&server.base).await;
    let mut outcomes = wechat_calls(&c).await;
    outcomes.extend(token_calls(&c).await);
    check_outcomes(&outcomes, "transport error calling wechat");
    let pay = pay_calls(&c).await;
    check_outcomes(&pay, "WeChat Pay unavailable");
    check_logs();
    check_coverage(&server.requests());
    server.task.abort();
}
