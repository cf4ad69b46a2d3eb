//! The log-secrets test over HTTP: admin routes and the referral page whose
//! WeChat calls fail in transport (the WeChat base URL is a port that refuses
//! connections) answer without any secret, and nothing the process logs
//! (TRACE, `log` records included) carries one: not the app secret, the
//! component secret, the verify ticket, the callback token, the
//! EncodingAESKey, the admin password or the admin's bearer token.
//!
//! The outbound clients' own calls are walked one by one in
//! `gateways/outbound/tests/log_secrets.rs`; this test covers what the HTTP
//! surface adds (the error mapping to `ApiError`, handler logging).

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use wxcm_commands::ports::Role;
use wxcm_commands::{auth, tenants, CommandContext};
use wxcm_domain::{Actor, MemberId, TenantId};
use wxcm_http::{ClientOutbound, HttpSettings, Readiness, WechatEdge, WechatSettings};
use wxcm_outbound::wechat::tokens::{MemoryTokenStore, StaticTokenSources, TokenCenter, TokenCenterConfig};
use wxcm_outbound::wechat::{ClientConfig, WechatClient, WechatHttp};
use wxcm_tests::spawn_app;

/// Every secret below contains this; no answer and no log line may.
const CANARY: &str = "CANARY";

const TENANT: &str = "log-secrets";
const APPID: &str = "wx0011223344556677";
const COMPONENT: &str = "wxcomponentlogsec";
const APP_SECRET: &str = "SECRET-CANARY-app-secret-http";
const COMPONENT_SECRET: &str = "SECRET-CANARY-component-secret-http";
const VERIFY_TICKET: &str = "SECRET-CANARY-verify-ticket-http";
const CALLBACK_TOKEN: &str = "SECRET-CANARY-callback-token";
/// 43 letters and digits.
const ENCODING_AES_KEY: &str = "CANARYabcdefghijklmnopqrstuvwxyz0123456789A";
const PASSWORD: &str = "SECRET-CANARY-admin-password";

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

/// Every event of this test binary at TRACE (reqwest's and hyper's `log`
/// records bridged in), into one buffer.
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

struct Ready;

#[async_trait]
impl Readiness for Ready {
    async fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

/// A port nothing listens on.
fn refused_base() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

#[tokio::test]
async fn failed_wechat_calls_answer_and_log_no_secret() {
    logs();
    let t = spawn_app().await;
    let dead = refused_base();
    let config = ClientConfig {
        api_base: dead.clone(),
        open_base: dead.clone(),
        mp_base: dead,
        attempts_max: 2,
        backoff_base_ms: 1,
        backoff_max_ms: 2,
        ..ClientConfig::default()
    };
    let transport = Arc::new(WechatHttp::new(config).unwrap());
    let sources = StaticTokenSources {
        app_secrets: [(APPID.to_owned(), APP_SECRET.to_owned())].into(),
        component_secrets: [(COMPONENT.to_owned(), COMPONENT_SECRET.to_owned())].into(),
    };
    let center = Arc::new(TokenCenter::new(
        Arc::new(MemoryTokenStore::default()),
        Arc::new(sources),
        transport.clone(),
        wxcm_tests::sealer(),
        TokenCenterConfig::default(),
    ));
    center.record_verify_ticket(COMPONENT, VERIFY_TICKET).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let outbound = ClientOutbound::new(WechatClient::new(transport, center), Some(COMPONENT.into()), &base);
    let edge = Arc::new(WechatEdge::new(WechatSettings::default(), Some(Arc::new(outbound)), t.app.clock.clone()));
    let router = wxcm_http::router_with(t.app.clone(), Arc::new(Ready), HttpSettings::default(), edge);
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });

    let tenant = TenantId::parse(TENANT).unwrap();
    let key = wxcm_commands::members::system_key(&["test-tenant", TENANT]).unwrap();
    let ctx = CommandContext::new(tenant.clone(), key, "test".into());
    tenants::create(&t.app, &tenant, "Log Secrets", Actor::Admin { username: "t".into() }, &ctx).await.unwrap();
    auth::create_admin(&t.app, &tenant, "owner", PASSWORD, Role::Owner).await.unwrap();
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let login = json!({"tenant_id": TENANT, "username": "owner", "password": PASSWORD});
    let res = http.post(format!("{base}/admin/api/v1/login")).json(&login).send().await.unwrap();
    let bearer = res.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned();
    let send = |method: Method, path: &str, body: Option<Value>| {
        let mut req = http.request(method, format!("{base}{path}")).bearer_auth(&bearer);
        req = req.header("Idempotency-Key", format!("key-{}", uuid::Uuid::new_v4().simple()));
        if let Some(b) = body {
            req = req.json(&b);
        }
        async move {
            let res = req.send().await.unwrap();
            (res.status(), res.text().await.unwrap())
        }
    };

    let account = json!({"name": "Main", "token": CALLBACK_TOKEN, "encoding_aes_key": ENCODING_AES_KEY,
                         "app_secret": APP_SECRET});
    let (status, body) =
        send(Method::PUT, &format!("/admin/api/v1/tenant/official-accounts/{APPID}"), Some(account)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(!body.contains(CANARY), "{body}");

    let mut answers = Vec::new();
    // The access token is fetched with the app secret; the fetch fails.
    let qr = json!({"appid": APPID, "scene": "poster", "name": "Poster", "expire_seconds": 3600});
    answers.push(("qr code", send(Method::POST, "/admin/api/v1/wechat/qrcodes", Some(qr)).await));
    let menu_path = format!("/admin/api/v1/wechat/menus/{APPID}");
    let menu = json!({"button": [{"type": "click", "name": "Points", "key": "POINTS"}]});
    let (status, body) = send(Method::PUT, &menu_path, Some(menu)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    answers.push(("menu publish", send(Method::POST, &format!("{menu_path}/publish"), None).await));
    // The component token is fetched with the component secret and the verify ticket.
    let start = json!({"redirect_uri": "https://crm.example.com/authorized"});
    answers.push((
        "authorization",
        send(Method::POST, "/admin/api/v1/wechat/component/authorizations", Some(start)).await,
    ));
    for (what, (status, body)) in &answers {
        assert_eq!(*status, StatusCode::BAD_GATEWAY, "{what}: {body}");
        assert!(body.contains("wechat_unavailable"), "{what}: {body}");
        assert!(!body.contains(CANARY), "{what}: {body}");
    }

    // The referral page's OAuth exchange carries the app secret.
    let (status, member) =
        send(Method::POST, "/admin/api/v1/members", Some(json!({"openid": "o_referrer_0001"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{member}");
    let member: Value = serde_json::from_str(&member).unwrap();
    let member_id = MemberId::parse(member["member_id"].as_str().unwrap()).unwrap();
    let (status, link) = send(Method::GET, &format!("/admin/api/v1/members/{member_id}/referral-link"), None).await;
    assert_eq!(status, StatusCode::OK, "{link}");
    let link: Value = serde_json::from_str(&link).unwrap();
    let res = http.get(link["url"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FOUND);
    let authorize = reqwest::Url::parse(res.headers()["location"].to_str().unwrap()).unwrap();
    let state = authorize.query_pairs().find(|(k, _)| k == "state").map(|(_, v)| v.into_owned()).unwrap();
    let callback = reqwest::Url::parse_with_params(
        &format!("{base}/m/referral/callback"),
        [("code", "code-1"), ("state", &state)],
    )
    .unwrap();
    let res = http.get(callback).send().await.unwrap();
    let (status, body) = (res.status(), res.text().await.unwrap());
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(!body.contains(CANARY), "{body}");

    let text = String::from_utf8_lossy(&logs().0.lock().unwrap_or_else(|p| p.into_inner())).into_owned();
    // The failures were logged (with their cause), just not the secrets.
    assert!(text.contains("wechat call failed"), "no failure logged:\n{text}");
    let leaked: Vec<&str> =
        text.lines().filter(|l| l.contains(CANARY) || l.contains(bearer.as_str())).take(5).collect();
    assert!(leaked.is_empty(), "log lines with secrets: {leaked:#?}");

    server.abort();
    t.stop().await;
}
