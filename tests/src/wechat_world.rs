//! A test world for WeChat-facing flows: the real application behind a router
//! whose outbound WeChat client talks to the simulator, so OAuth codes, QR
//! codes and follow pages behave as WeChat's.

use std::sync::Arc;

use async_trait::async_trait;
use reqwest::StatusCode;
use serde_json::{json, Value};
use wxcm_commands::ports::Role;
use wxcm_commands::{auth, tenants, CommandContext};
use wxcm_domain::{Actor, TenantId};
use wxcm_http::{ClientOutbound, HttpSettings, Readiness, WechatEdge, WechatSettings};
use wxcm_outbound::wechat::tokens::{MemoryTokenStore, StaticTokenSources, TokenCenter, TokenCenterConfig};
use wxcm_outbound::wechat::{ClientConfig, WechatClient, WechatHttp};

use crate::{spawn_app, Simulator, TestApp};

pub const APPID: &str = "wx00112233aabbccdd";
pub const APP_SECRET: &str = "app-secret-for-the-sandbox";
pub const COMPONENT: &str = "wxcomponent0admin";
pub const COMPONENT_SECRET: &str = "component-secret-admin";
pub const PASSWORD: &str = "a-long-enough-password";
pub const FOLLOW_URL: &str = "https://mp.example.com/follow?appid={appid}";

struct Ready;

#[async_trait]
impl Readiness for Ready {
    async fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

/// The real application (Postgres) behind a router with a `ClientOutbound`
/// talking to a simulator process: WeChat's admin calls, OAuth codes and
/// follow pages work as against WeChat. `tenant` is created on the first
/// `token`.
pub struct World {
    pub t: TestApp,
    pub sandbox: Simulator,
    pub base: String,
    pub http: reqwest::Client,
    pub center: Arc<TokenCenter>,
    pub tenant: String,
    server: tokio::task::JoinHandle<()>,
}

impl World {
    pub async fn new(tenant: &str) -> World {
        let t = spawn_app().await;
        let sandbox = Simulator::start().await;
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        for (appid, secret) in [(APPID, APP_SECRET), (COMPONENT, COMPONENT_SECRET)] {
            let r = http
                .post(format!("{}/sandbox/apps", sandbox.base_url))
                .json(&json!({"appid": appid, "secret": secret}))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success());
        }
        let config = ClientConfig {
            api_base: sandbox.base_url.clone(),
            open_base: sandbox.base_url.clone(),
            mp_base: sandbox.base_url.clone(),
            backoff_base_ms: 5,
            backoff_max_ms: 20,
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
            crate::sealer(),
            TokenCenterConfig::default(),
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let mut outbound =
            ClientOutbound::new(WechatClient::new(transport, center.clone()), Some(COMPONENT.into()), &base);
        outbound.follow_url_template = Some(FOLLOW_URL.into());
        let edge = Arc::new(WechatEdge::new(WechatSettings::default(), Some(Arc::new(outbound)), t.app.clock.clone()));
        let router = wxcm_http::router_with(t.app.clone(), Arc::new(Ready), HttpSettings::default(), edge);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        World { t, sandbox, base, http, center, tenant: tenant.to_owned(), server }
    }

    pub async fn stop(self) {
        self.server.abort();
        self.sandbox.stop().await;
        self.t.stop().await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn token(&self, role: Role) -> String {
        let tenant_id = TenantId::parse(&self.tenant).unwrap();
        if tenants::get(&self.t.app, &tenant_id).await.is_err() {
            let key = wxcm_commands::members::system_key(&["test-tenant", &self.tenant]).unwrap();
            let ctx = CommandContext::new(tenant_id.clone(), key, "test".into());
            tenants::create(&self.t.app, &tenant_id, "Test Cinema", Actor::Admin { username: "t".into() }, &ctx)
                .await
                .unwrap();
        }
        let username = format!("user-{}", role.as_str());
        auth::create_admin(&self.t.app, &tenant_id, &username, PASSWORD, role).await.unwrap();
        let res = self
            .http
            .post(self.url("/admin/api/v1/login"))
            .json(&json!({"tenant_id": self.tenant, "username": username, "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        res.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned()
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, self.url(path)).bearer_auth(token);
        req = req.header("Idempotency-Key", format!("key-{}", uuid::Uuid::new_v4().simple()));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    pub async fn sandbox_post(&self, path: &str, body: Value) -> Value {
        let res = self.http.post(format!("{}{path}", self.sandbox.base_url)).json(&body).send().await.unwrap();
        assert!(res.status().is_success(), "{path}: {}", res.status());
        res.json().await.unwrap()
    }
}

pub fn location(res: &reqwest::Response) -> String {
    res.headers()["location"].to_str().unwrap().to_owned()
}

pub fn query_param(url: &str, name: &str) -> String {
    let url = reqwest::Url::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
    let value = url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned());
    value.unwrap_or_else(|| panic!("no {name} in {url}"))
}
