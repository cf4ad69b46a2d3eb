//! The simulator's control endpoints that push callbacks (`/sandbox/callbacks/...`),
//! driven over HTTP as a developer would, against the real server.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use reqwest::StatusCode;
use serde_json::{json, Value};
use wxcm_commands::members::system_key;
use wxcm_commands::ports::Role;
use wxcm_commands::wechat::{self as usecase, KeywordRule, MatchMode, ReplyContent, ReplyRules};
use wxcm_commands::{auth, tenants, CommandContext};
use wxcm_domain::{Actor, AppId, OpenId, TenantId};
use wxcm_tests::{spawn_app, Simulator, TestApp};

const TENANT: &str = "star-cinema";
const APPID: &str = "wx00112233445566ff";
const TOKEN: &str = "push-token-456";
const AES_KEY: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopq";
const COMPONENT_APPID: &str = "wxc0c0c0c0c0c0c0c0";
const COMPONENT_TOKEN: &str = "component-token-789";
const PASSWORD: &str = "a-long-enough-password";

async fn bound_app() -> (TestApp, TenantId) {
    let t = spawn_app().await;
    let tenant = TenantId::parse(TENANT).unwrap();
    let ctx = CommandContext::new(tenant.clone(), system_key(&["test-tenant", TENANT]).unwrap(), "test".into());
    tenants::create(&t.app, &tenant, "Star Cinema", Actor::Admin { username: "t".into() }, &ctx).await.unwrap();
    auth::create_admin(&t.app, &tenant, "owner", PASSWORD, Role::Owner).await.unwrap();
    let login: Value = t
        .http
        .post(t.url("/admin/api/v1/login"))
        .json(&json!({"tenant_id": TENANT, "username": "owner", "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let res = t
        .http
        .put(t.url(&format!("/admin/api/v1/tenant/official-accounts/{APPID}")))
        .bearer_auth(login["token"].as_str().unwrap())
        .header("Idempotency-Key", "bind-account-0001")
        .json(&json!({"name": "Star", "token": TOKEN, "encoding_aes_key": AES_KEY, "app_secret": "app-secret-0123456789"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    (t, tenant)
}

async fn simulator() -> Simulator {
    Simulator::start().await
}

#[tokio::test]
async fn a_burst_pushed_through_the_control_api_is_answered_and_replies_open() {
    let (t, tenant) = bound_app().await;
    let rules = ReplyRules {
        subscribe: None,
        default: None,
        keywords: vec![KeywordRule {
            keywords: vec!["hours".into()],
            mode: MatchMode::Exact,
            reply: ReplyContent::Text { content: "Open 10:00-23:00".into() },
        }],
    };
    usecase::save_reply_rules(&t.app, &tenant, &rules, "test").await.unwrap();
    let sim = simulator().await;
    let http = reqwest::Client::new();
    let push = |body: Value| {
        let (http, url) = (http.clone(), format!("{}/sandbox/callbacks/push", sim.base_url));
        async move {
            let res = http.post(url).json(&body).send().await.unwrap();
            (res.status(), res.json::<Value>().await.unwrap())
        }
    };
    let base = json!({
        "target_base_url": t.base_url, "appid": APPID, "token": TOKEN, "encoding_aes_key": AES_KEY,
        "mode": "safe", "message": {"kind": "text", "openid": "o-push-1", "content": "HOURS", "msg_id": 77001},
        "copies": 3, "concurrent": true,
    });
    let (status, body) = push(base.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let responses = body["responses"].as_array().unwrap();
    assert_eq!(responses.len(), 3);
    assert!(responses.iter().all(|r| r["status"] == 200), "{body}");
    // The first try answers with the reply; a duplicate gets the stored reply or `success`.
    let replies: Vec<&Value> = responses.iter().filter(|r| !r["reply"].is_null()).collect();
    assert!(!replies.is_empty(), "{body}");
    for r in replies {
        assert_eq!(r["reply"]["encrypted"], true);
        assert_eq!(r["reply"]["signature_valid"], true);
        assert_eq!(r["reply"]["fields"]["Content"], "Open 10:00-23:00");
    }

    let mut tampered = base.clone();
    tampered["tamper"] = json!("signature");
    tampered["copies"] = json!(1);
    let (_, body) = push(tampered).await;
    assert_eq!(body["responses"][0]["status"], 403, "{body}");

    let mut invalid = base;
    invalid["copies"] = json!(51);
    let (status, _) = push(invalid).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    sim.stop().await;
    t.stop().await;
}

#[derive(Default)]
struct TicketRecorder {
    tickets: Mutex<Vec<String>>,
}

#[async_trait]
impl wxcm_http::WechatOutbound for TicketRecorder {
    async fn send_custom_message(&self, _: &AppId, _: &OpenId, _: &ReplyContent) -> Result<(), String> {
        Ok(())
    }
    async fn store_verify_ticket(&self, ticket: &str) -> Result<(), String> {
        self.tickets.lock().map_err(|e| e.to_string())?.push(ticket.to_owned());
        Ok(())
    }
    async fn query_auth(&self, _: &str) -> Result<(String, wxcm_domain::tenant::SealedSecret), String> {
        Err("not used".into())
    }
    async fn forget_authorizer(&self, _: &AppId) -> Result<(), String> {
        Ok(())
    }
}

struct AlwaysReady;

#[async_trait]
impl wxcm_http::Readiness for AlwaysReady {
    async fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

/// The composition root does not configure a component yet: serve the application with one.
#[tokio::test]
async fn component_events_pushed_through_the_control_api_reach_the_gateway() {
    let t = spawn_app().await;
    let recorder = Arc::new(TicketRecorder::default());
    let settings = wxcm_http::WechatSettings {
        component: Some(wxcm_http::ComponentCredentials {
            appid: COMPONENT_APPID.into(),
            token: COMPONENT_TOKEN.into(),
            encoding_aes_key: AES_KEY.into(),
        }),
        ..Default::default()
    };
    let edge = Arc::new(wxcm_http::WechatEdge::new(settings, Some(recorder.clone()), t.app.clock.clone()));
    let router = wxcm_http::router_with(t.app.clone(), Arc::new(AlwaysReady), wxcm_http::HttpSettings::default(), edge);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    let sim = simulator().await;
    let http = reqwest::Client::new();
    let push = |info: Value, token: &str| {
        let body = json!({
            "target_base_url": gateway, "component_appid": COMPONENT_APPID, "token": token,
            "encoding_aes_key": AES_KEY, "info": info,
        });
        let (http, url) = (http.clone(), format!("{}/sandbox/callbacks/component", sim.base_url));
        async move { http.post(url).json(&body).send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let body = push(json!({"verify_ticket": {"ticket": "ticket@@@0001"}}), COMPONENT_TOKEN).await;
    assert_eq!(body["response"]["status"], 200, "{body}");
    assert_eq!(body["response"]["body"], "success");
    assert_eq!(recorder.tickets.lock().unwrap().clone(), vec!["ticket@@@0001".to_owned()]);
    // An unauthorized event for an account nobody bound is acknowledged and changes nothing.
    let body = push(json!({"unauthorized": {"authorizer_appid": "wx9999999999999999"}}), COMPONENT_TOKEN).await;
    assert_eq!(body["response"]["status"], 200, "{body}");
    let body = push(json!({"verify_ticket": {"ticket": "forged"}}), "wrong-token").await;
    assert_eq!(body["response"]["status"], 403, "{body}");
    assert_eq!(recorder.tickets.lock().unwrap().len(), 1);
    server.abort();
    sim.stop().await;
    t.stop().await;
}
