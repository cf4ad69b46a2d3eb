//! The WeChat token center against the simulator and the real Postgres store:
//! two "gateway nodes" (two `TokenCenter`s with their own clients) share one
//! `PgTokenStore` on the control shard.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wxcm_outbound::wechat::tokens::{StaticTokenSources, TokenCenter, TokenCenterConfig, TokenKey, TokenStore};
use wxcm_outbound::wechat::{Account, ClientConfig, WechatClient, WechatError, WechatHttp};
use wxcm_server::shards::pool_for;
use wxcm_simulator::wechat::SandboxStats;
use wxcm_store::tokens::PgTokenStore;
use wxcm_tests::{SimOptions, Simulator};

const APPID: &str = "wxtokencenter01";
const SECRET: &str = "token-center-secret";
const MENU_GET: &str = "/cgi-bin/menu/get";

struct World {
    sandbox: Simulator,
    store: Arc<PgTokenStore>,
    http: reqwest::Client,
}

async fn world(options: SimOptions) -> World {
    let settings = wxcm_tests::fresh_settings(1).await;
    let control_shard = &settings.shards[&settings.default_shard];
    let pool = pool_for(&control_shard.url, 8).expect("pool");
    let sandbox = Simulator::start_with(options).await;
    let http = reqwest::Client::new();
    let w = World { sandbox, store: Arc::new(PgTokenStore::new(pool)), http };
    w.control("/sandbox/apps", json!({"appid": APPID, "secret": SECRET})).await;
    w
}

impl World {
    async fn control(&self, path: &str, body: Value) -> Value {
        let res = self.http.post(format!("{}{path}", self.sandbox.base_url)).json(&body).send().await.expect("control");
        assert!(res.status().is_success(), "{path}: {}", res.status());
        res.json().await.expect("json")
    }

    async fn fault(&self, path: &str, errcode: i64, count: u32, delay_ms: u64) {
        self.control(
            "/sandbox/faults",
            json!({"path": path, "errcode": errcode, "count": count, "delay_ms": delay_ms}),
        )
        .await;
    }

    async fn issuances(&self) -> u64 {
        let stats: SandboxStats = self
            .http
            .get(format!("{}/sandbox/stats", self.sandbox.base_url))
            .send()
            .await
            .expect("stats")
            .json()
            .await
            .expect("stats json");
        stats.token_issuances.get(APPID).copied().unwrap_or(0)
    }

    async fn requests(&self, path: &str) -> u64 {
        let log: Value = self
            .http
            .get(format!("{}/sandbox/requests?path={path}", self.sandbox.base_url))
            .send()
            .await
            .expect("requests")
            .json()
            .await
            .expect("requests json");
        log["total"].as_u64().expect("total")
    }

    /// One gateway node: its own HTTP client, token center and caches, the shared store.
    fn node(&self, owner: &str, tune: impl FnOnce(&mut TokenCenterConfig)) -> WechatClient {
        let config = ClientConfig {
            api_base: self.sandbox.base_url.clone(),
            open_base: self.sandbox.base_url.clone(),
            backoff_base_ms: 10,
            backoff_max_ms: 50,
            calls_per_second_per_appid: 1_000,
            ..ClientConfig::default()
        };
        let transport = Arc::new(WechatHttp::new(config).expect("client"));
        let sources = StaticTokenSources { app_secrets: [(APPID.into(), SECRET.into())].into(), ..Default::default() };
        let mut center_config =
            TokenCenterConfig { owner: owner.into(), poll_ms: 20, wait_ms_max: 5_000, ..TokenCenterConfig::default() };
        tune(&mut center_config);
        let center = TokenCenter::new(
            self.store.clone(),
            Arc::new(sources),
            transport.clone(),
            wxcm_tests::sealer(),
            center_config,
        );
        WechatClient::new(transport, Arc::new(center))
    }
}

fn key() -> TokenKey {
    TokenKey::access_token(APPID).expect("key")
}

fn account() -> Account {
    Account::Direct(APPID.into())
}

fn strict() -> SimOptions {
    SimOptions { token_grace_secs: 0, ..SimOptions::default() }
}

#[tokio::test]
async fn two_nodes_cause_exactly_one_token_issuance() {
    let w = world(strict()).await;
    let (a, b) = (w.node("node-a", |_| {}), w.node("node-b", |_| {}));
    let calls = (0..20)
        .flat_map(|_| [a.tokens().clone(), b.tokens().clone()])
        .map(|center| async move { center.get(&key()).await.expect("token").value });
    let tokens = futures::future::join_all(calls).await;
    assert!(tokens.iter().all(|t| *t == tokens[0]), "every caller on both nodes got the same token");
    assert_eq!(w.issuances().await, 1, "one /cgi-bin/token in the whole cluster");
    // And the shared token works at WeChat.
    a.menu_create(&account(), &json!({"button": []})).await.expect("menu create");
    b.menu_get(&account()).await.expect("menu get");
    assert_eq!(w.issuances().await, 1);
    w.sandbox.stop().await;
}

#[tokio::test]
async fn a_storm_of_40001_causes_one_refresh_not_one_per_caller() {
    let w = world(strict()).await;
    let (a, b) = (w.node("node-a", |_| {}), w.node("node-b", |_| {}));
    a.menu_create(&account(), &json!({"button": []})).await.expect("menu create");
    b.tokens().get(&key()).await.expect("warm node b");
    assert_eq!(w.issuances().await, 1);
    // The delay keeps all 50 first attempts inside the fault window.
    w.fault(MENU_GET, 40001, 50, 300).await;
    let calls = (0..25).flat_map(|_| [&a, &b]).map(|client| async move { client.menu_get(&account()).await });
    let results = futures::future::join_all(calls).await;
    for r in &results {
        assert!(r.is_ok(), "every caller succeeds after the one refresh: {r:?}");
    }
    assert_eq!(w.issuances().await, 2, "one refresh for 50 rejected callers on two nodes");
    assert_eq!(w.requests(MENU_GET).await, 100, "each caller: one rejected try, one retry");
    w.sandbox.stop().await;
}

#[tokio::test]
async fn busy_is_retried_then_succeeds() {
    let w = world(SimOptions::default()).await;
    let a = w.node("node-a", |_| {});
    a.menu_create(&account(), &json!({"button": []})).await.expect("menu create");
    w.fault(MENU_GET, -1, 2, 0).await;
    a.menu_get(&account()).await.expect("third attempt succeeds");
    assert_eq!(w.requests(MENU_GET).await, 3);
    w.fault(MENU_GET, -1, 100, 0).await;
    assert!(matches!(a.menu_get(&account()).await, Err(WechatError::Busy { attempts: 4 })));
    assert_eq!(w.requests(MENU_GET).await, 7, "bounded attempts");
    w.sandbox.stop().await;
}

#[tokio::test]
async fn quota_exhausted_is_surfaced_without_a_retry_storm() {
    let w = world(SimOptions::default()).await;
    let a = w.node("node-a", |_| {});
    a.tokens().get(&key()).await.expect("token");
    w.fault(MENU_GET, 45009, 1_000, 0).await;
    let account = account();
    let calls = (0..10).map(|_| a.menu_get(&account));
    for r in futures::future::join_all(calls).await {
        assert!(matches!(r, Err(WechatError::QuotaExhausted)), "{r:?}");
    }
    assert_eq!(w.requests(MENU_GET).await, 10, "one request per call, no retries");
    assert_eq!(w.issuances().await, 1, "45009 is not a token problem");
    w.sandbox.stop().await;
}

#[tokio::test]
async fn the_lease_holder_refreshes_ahead_of_expiry() {
    // Tokens live 4 s; a node refreshes when less than 3 s are left.
    let w = world(SimOptions { token_expires_in_secs: 4, token_grace_secs: 0 }).await;
    let tune = |c: &mut TokenCenterConfig| {
        c.refresh_ahead_ms = 3_000;
        c.cache_ttl_ms = 100;
    };
    let (a, b) = (w.node("node-a", tune), w.node("node-b", tune));
    let first = a.tokens().get(&key()).await.expect("token");
    assert_eq!(a.tokens().refresh_due().await, 0, "not due yet");
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    assert!(first.expires_at > chrono::Utc::now(), "the old token is still valid");
    let (ra, rb) = tokio::join!(a.tokens().refresh_due(), b.tokens().refresh_due());
    assert_eq!(ra, 1, "node a tracked the key and refreshed it");
    assert_eq!(rb, 0, "node b never used the key");
    let second = b.tokens().get(&key()).await.expect("token");
    assert_ne!(second.value, first.value);
    assert_eq!(second.generation, first.generation + 1);
    assert_eq!(w.issuances().await, 2);
    b.menu_create(&account(), &json!({"button": []})).await.expect("the new token works");
    w.sandbox.stop().await;
}

#[tokio::test]
async fn a_lease_left_by_a_stopped_holder_is_taken_over_when_it_expires() {
    let w = world(strict()).await;
    // A node took the lease and died before refreshing.
    assert!(w.store.try_lease(&key(), "dead-node", 1_500).await.expect("lease"));
    let b = w.node("node-b", |_| {});
    let started = Instant::now();
    let token = b.tokens().get(&key()).await.expect("node b takes over");
    assert!(started.elapsed() >= Duration::from_millis(1_000), "waited for the lease: {:?}", started.elapsed());
    assert_eq!(token.generation, 1);
    assert_eq!(w.issuances().await, 1);
    // The dead node cannot store anything now: its lease is gone and the generation moved.
    let stale = w.store.compare_and_set(&key(), "dead-node", 0, "stale", chrono::Utc::now()).await.expect("cas");
    assert_eq!(stale, None);
    w.sandbox.stop().await;
}

#[tokio::test]
async fn authorizer_refresh_tokens_are_stored_sealed() {
    let w = world(SimOptions::default()).await;
    let component = "wxcomponent0001";
    w.control("/sandbox/apps", json!({"appid": component, "secret": "component-secret"})).await;
    let ticket = w.control("/sandbox/component/ticket", json!({"component_appid": component})).await;
    let config = ClientConfig { api_base: w.sandbox.base_url.clone(), ..ClientConfig::default() };
    let transport = Arc::new(WechatHttp::new(config).expect("client"));
    let sources = StaticTokenSources {
        component_secrets: [(component.into(), "component-secret".into())].into(),
        ..Default::default()
    };
    let center = TokenCenter::new(
        w.store.clone(),
        Arc::new(sources),
        transport,
        wxcm_tests::sealer(),
        TokenCenterConfig::default(),
    );
    center.record_verify_ticket(component, ticket["ticket"].as_str().expect("ticket")).await.expect("ticket stored");
    let code = w
        .control(
            "/sandbox/component/authorizations",
            json!({"component_appid": component, "authorizer_appid": "wxmerchant01"}),
        )
        .await;
    let authorizer = center.complete_authorization(component, code["authorization_code"].as_str().expect("code")).await;
    assert_eq!(authorizer.expect("authorized"), "wxmerchant01");
    let (stored_component, sealed) = w.store.refresh_token("wxmerchant01").await.expect("read").expect("stored");
    assert_eq!(stored_component, component);
    assert!(sealed.ciphertext().starts_with("v1:") && !sealed.ciphertext().contains("refreshtoken@@@"));
    center.get(&TokenKey::authorizer_token("wxmerchant01").expect("key")).await.expect("authorizer token");
    w.sandbox.stop().await;
}
