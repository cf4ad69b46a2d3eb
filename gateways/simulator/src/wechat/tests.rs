//! The simulator driven through the real client and an in-memory token center.

use std::sync::Arc;

use serde_json::{json, Value};

use super::{serve, SandboxConfig, SandboxHandle, SandboxStats};
use wxcm_outbound::wechat::client::{
    jssdk_signature, Account, CustomMessage, OAuthScope, QrCode, MASS_OPENIDS_MAX, QR_EXPIRE_SECONDS_MAX,
    USER_BATCH_MAX,
};
use wxcm_outbound::wechat::tokens::{MemoryTokenStore, StaticTokenSources, TokenCenter, TokenCenterConfig, TokenKey};
use wxcm_outbound::wechat::{ClientConfig, WechatClient, WechatError, WechatHttp};

const APPID: &str = "wxsandbox0001";
const SECRET: &str = "secret-0001";
const COMPONENT: &str = "wxcomponent01";
const COMPONENT_SECRET: &str = "component-secret";

struct PlainSealer;
impl wxcm_commands::ports::SecretSealer for PlainSealer {
    fn seal(&self, p: &str) -> Result<wxcm_domain::tenant::SealedSecret, wxcm_commands::ports::PortError> {
        Ok(wxcm_domain::tenant::SealedSecret::from_ciphertext(format!("plain:{p}")))
    }
    fn open(&self, s: &wxcm_domain::tenant::SealedSecret) -> Result<String, wxcm_commands::ports::PortError> {
        s.ciphertext()
            .strip_prefix("plain:")
            .map(str::to_owned)
            .ok_or_else(|| wxcm_commands::ports::PortError::msg("x"))
    }
}

async fn start(config: SandboxConfig) -> (SandboxHandle, WechatClient, reqwest::Client) {
    start_tuned(config, |_| {}).await
}

async fn start_tuned(
    config: SandboxConfig,
    tune: impl FnOnce(&mut ClientConfig),
) -> (SandboxHandle, WechatClient, reqwest::Client) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sandbox = serve(listener, config).await.unwrap();
    let http = reqwest::Client::new();
    for (appid, secret) in [(APPID, SECRET), (COMPONENT, COMPONENT_SECRET)] {
        let r =
            http.post(format!("{}/sandbox/apps", sandbox.base_url)).json(&json!({"appid": appid, "secret": secret}));
        assert!(r.send().await.unwrap().status().is_success());
    }
    let client = client_for(&sandbox, tune);
    (sandbox, client, http)
}

/// A client with its own in-memory token center (another "node").
fn client_for(sandbox: &SandboxHandle, tune: impl FnOnce(&mut ClientConfig)) -> WechatClient {
    let mut config = ClientConfig {
        api_base: sandbox.base_url.clone(),
        open_base: sandbox.base_url.clone(),
        backoff_base_ms: 5,
        backoff_max_ms: 20,
        ..ClientConfig::default()
    };
    tune(&mut config);
    let transport = Arc::new(WechatHttp::new(config).unwrap());
    let sources = StaticTokenSources {
        app_secrets: [(APPID.to_owned(), SECRET.to_owned())].into(),
        component_secrets: [(COMPONENT.to_owned(), COMPONENT_SECRET.to_owned())].into(),
    };
    let center = Arc::new(TokenCenter::new(
        Arc::new(MemoryTokenStore::default()),
        Arc::new(sources),
        transport.clone(),
        Arc::new(PlainSealer),
        TokenCenterConfig::default(),
    ));
    WechatClient::new(transport, center)
}

async fn stats(http: &reqwest::Client, sandbox: &SandboxHandle) -> SandboxStats {
    http.get(format!("{}/sandbox/stats", sandbox.base_url)).send().await.unwrap().json().await.unwrap()
}

async fn control(http: &reqwest::Client, sandbox: &SandboxHandle, path: &str, body: Value) -> Value {
    http.post(format!("{}{path}", sandbox.base_url)).json(&body).send().await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn account_calls_round_trip_through_the_sandbox() {
    let (sandbox, client, http) = start(SandboxConfig { token_grace_secs: 0, ..SandboxConfig::default() }).await;
    let account = Account::Direct(APPID.into());
    let menu = json!({"button": [{"type": "click", "name": "Points", "key": "POINTS"}]});
    client.menu_create(&account, &menu).await.unwrap();
    assert_eq!(client.menu_get(&account).await.unwrap()["menu"], menu);
    let qr = client
        .qrcode_create(&account, &QrCode::Temporary { scene: "shop-1".into(), expire_seconds: 600 })
        .await
        .unwrap();
    assert_eq!(qr.expire_seconds, Some(600));
    let scanned: Value = http
        .get(format!("{}/sandbox/qrcodes/{}", sandbox.base_url, qr.ticket))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(scanned["scene"], "shop-1");
    let permanent = client.qrcode_create(&account, &QrCode::Permanent { scene: "door".into() }).await.unwrap();
    assert_eq!(permanent.expire_seconds, None);
    client.custom_send(&account, "openid-1", &CustomMessage::Text("hello".into())).await.unwrap();
    client.template_send(&account, "openid-1", "tpl-1", None, &json!({"first": {"value": "x"}})).await.unwrap();
    client.mass_send_by_tag(&account, 2, "news").await.unwrap();
    client.mass_send_by_openids(&account, &["a".into(), "b".into()], "news").await.unwrap();
    let media_id = client.media_upload(&account, "image", "a.png", "image/png", vec![1, 2, 3, 0, 255]).await.unwrap();
    let media = client.media_get(&account, &media_id).await.unwrap();
    assert_eq!(media.bytes, vec![1, 2, 3, 0, 255]);
    assert_eq!(media.content_type, "image/png");
    assert_eq!(client.user_info(&account, "openid-1").await.unwrap()["openid"], "openid-1");
    assert_eq!(client.user_info_batch(&account, &["a".into(), "b".into()]).await.unwrap().len(), 2);
    let tag = client.tag_create(&account, "vip").await.unwrap();
    client.tag_members(&account, tag, &["a".into()]).await.unwrap();
    assert_eq!(client.tags_get(&account).await.unwrap()[0]["count"], 1);
    // One token served every call.
    assert_eq!(stats(&http, &sandbox).await.token_issuances.get(APPID), Some(&1));

    // JS-SDK: the signature uses the ticket the sandbox issued.
    let sig = client.jssdk_config(APPID, "https://shop.example/p?x=1#top", "nonce", 1_700_000_000).await.unwrap();
    let ticket = client.tokens().get(&TokenKey::jsapi_ticket(APPID).unwrap()).await.unwrap();
    assert_eq!(sig, jssdk_signature(&ticket.value, "nonce", 1_700_000_000, "https://shop.example/p?x=1"));

    // OAuth: a code works once.
    let code = control(&http, &sandbox, "/sandbox/oauth/codes", json!({"appid": APPID, "openid": "o-9"})).await;
    let code = code["code"].as_str().unwrap();
    assert_eq!(client.oauth_exchange(APPID, SECRET, code).await.unwrap().openid, "o-9");
    assert!(matches!(client.oauth_exchange(APPID, SECRET, code).await, Err(WechatError::Api { errcode: 40029, .. })));
    let url = client.oauth_authorize_url(APPID, "https://shop.example/cb", OAuthScope::Base, "s1", None);
    assert!(url.ends_with("&state=s1#wechat_redirect"), "{url}");
    assert!(url.contains("redirect_uri=https%3A%2F%2Fshop.example%2Fcb"));
    sandbox.stop().await;
}

#[tokio::test]
async fn a_new_token_invalidates_the_previous_one_after_the_grace_period() {
    let (sandbox, _client, http) = start(SandboxConfig { token_grace_secs: 0, ..SandboxConfig::default() }).await;
    let token = |http: reqwest::Client, base: String| async move {
        let v: Value = http
            .get(format!("{base}/cgi-bin/token?grant_type=client_credential&appid={APPID}&secret={SECRET}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["access_token"].as_str().unwrap().to_owned()
    };
    let first = token(http.clone(), sandbox.base_url.clone()).await;
    let menu = |t: String| {
        let http = http.clone();
        let base = sandbox.base_url.clone();
        async move {
            let v: Value = http
                .get(format!("{base}/cgi-bin/menu/get?access_token={t}"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["errcode"].as_i64().unwrap()
        }
    };
    assert_eq!(menu(first.clone()).await, 46003, "valid token, no menu yet");
    let second = token(http.clone(), sandbox.base_url.clone()).await;
    assert_eq!(menu(first).await, 42001, "the old token expired when the new one was issued");
    assert_eq!(menu(second).await, 46003);
    assert_eq!(menu("forged".into()).await, 40001);
    let bad: Value = http
        .get(format!("{}/cgi-bin/token?grant_type=client_credential&appid={APPID}&secret=wrong", sandbox.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(bad["errcode"], 40125);
    sandbox.stop().await;
}

#[tokio::test]
async fn injected_faults_busy_is_retried_quota_is_not_and_the_log_shows_it() {
    let (sandbox, client, http) = start(SandboxConfig::default()).await;
    let account = Account::Direct(APPID.into());
    client.tokens().get(&TokenKey::access_token(APPID).unwrap()).await.unwrap();
    control(&http, &sandbox, "/sandbox/faults", json!({"path": "/cgi-bin/tags/get", "errcode": -1, "count": 2})).await;
    assert!(client.tags_get(&account).await.unwrap().is_empty());
    control(&http, &sandbox, "/sandbox/faults", json!({"path": "/cgi-bin/tags/get", "errcode": 45009, "count": 5}))
        .await;
    assert!(matches!(client.tags_get(&account).await, Err(WechatError::QuotaExhausted)));
    control(&http, &sandbox, "/sandbox/faults", json!({"path": "/cgi-bin/tags/get", "errcode": 48001, "count": 1}))
        .await;
    assert!(matches!(client.tags_get(&account).await, Err(WechatError::ApiUnauthorized)));
    let log: Value = http
        .get(format!("{}/sandbox/requests?path=/cgi-bin/tags/get", sandbox.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(log["total"], 5, "3 for the busy call, 1 for 45009, 1 for 48001: {log}");
    sandbox.stop().await;
}

#[tokio::test]
async fn component_chain_needs_the_ticket_and_authorizes_an_account() {
    let (sandbox, client, http) = start(SandboxConfig::default()).await;
    let tokens = client.tokens().clone();
    let key = TokenKey::component_token(COMPONENT).unwrap();
    assert!(tokens.get(&key).await.is_err(), "no verify ticket yet");
    let ticket = control(&http, &sandbox, "/sandbox/component/ticket", json!({"component_appid": COMPONENT})).await;
    tokens.record_verify_ticket(COMPONENT, ticket["ticket"].as_str().unwrap()).await.unwrap();
    tokens.get(&key).await.unwrap();
    let pre = client.create_preauth_code(COMPONENT).await.unwrap();
    assert!(client.component_authorize_url(COMPONENT, &pre, "https://a/cb").contains("pre_auth_code=preauthcode"));
    let code = control(
        &http,
        &sandbox,
        "/sandbox/component/authorizations",
        json!({"component_appid": COMPONENT, "authorizer_appid": "wxauthorized1"}),
    )
    .await;
    let authorizer =
        tokens.complete_authorization(COMPONENT, code["authorization_code"].as_str().unwrap()).await.unwrap();
    assert_eq!(authorizer, "wxauthorized1");
    let account = Account::Authorizer(authorizer.clone());
    client.custom_send(&account, "o1", &CustomMessage::Text("hi".into())).await.unwrap();
    // An injected 40001 makes the center refresh through the refresh token.
    control(
        &http,
        &sandbox,
        "/sandbox/faults",
        json!({"path": "/cgi-bin/message/custom/send", "errcode": 40001, "count": 1}),
    )
    .await;
    client.custom_send(&account, "o1", &CustomMessage::Text("hi".into())).await.unwrap();
    let s = stats(&http, &sandbox).await;
    assert_eq!(s.authorizer_token_issuances.get("wxauthorized1"), Some(&2));
    assert_eq!(s.component_token_issuances.get(COMPONENT), Some(&1));
    let code = control(&http, &sandbox, "/sandbox/oauth/codes", json!({"appid": authorizer, "openid": "o-7"})).await;
    let token = client.oauth_exchange_component(&authorizer, COMPONENT, code["code"].as_str().unwrap()).await.unwrap();
    assert_eq!(token.openid, "o-7");
    sandbox.stop().await;
}

#[tokio::test]
async fn limits_hold_at_the_limit_and_one_past_it() {
    let (sandbox, client, _http) = start(SandboxConfig::default()).await;
    let account = Account::Direct(APPID.into());
    let at_limit = QrCode::Temporary { scene: "s".into(), expire_seconds: QR_EXPIRE_SECONDS_MAX };
    let past = QrCode::Temporary { scene: "s".into(), expire_seconds: QR_EXPIRE_SECONDS_MAX + 1 };
    client.qrcode_create(&account, &at_limit).await.unwrap();
    assert!(matches!(client.qrcode_create(&account, &past).await, Err(WechatError::InvalidInput(_))));
    client.qrcode_create(&account, &QrCode::Permanent { scene: "x".repeat(64) }).await.unwrap();
    let long_scene = QrCode::Permanent { scene: "x".repeat(65) };
    assert!(matches!(client.qrcode_create(&account, &long_scene).await, Err(WechatError::InvalidInput(_))));
    let too_few = ["only-one".to_owned()];
    assert!(matches!(client.mass_send_by_openids(&account, &too_few, "x").await, Err(WechatError::InvalidInput(_))));
    let too_many: Vec<String> = (0..=MASS_OPENIDS_MAX).map(|i| i.to_string()).collect();
    assert!(matches!(client.mass_send_by_openids(&account, &too_many, "x").await, Err(WechatError::InvalidInput(_))));
    let batch: Vec<String> = (0..USER_BATCH_MAX).map(|i| i.to_string()).collect();
    assert_eq!(client.user_info_batch(&account, &batch).await.unwrap().len(), USER_BATCH_MAX);
    let batch: Vec<String> = (0..=USER_BATCH_MAX).map(|i| i.to_string()).collect();
    assert!(matches!(client.user_info_batch(&account, &batch).await, Err(WechatError::InvalidInput(_))));

    // Response bodies: exactly at the cap pass, one byte more is refused. The
    // tight transport borrows the first client's token center (a token answer
    // is itself larger than 16 bytes).
    let tight_transport = WechatHttp::new(ClientConfig {
        api_base: sandbox.base_url.clone(),
        response_bytes_max: 16,
        ..ClientConfig::default()
    })
    .unwrap();
    let tight = WechatClient::new(Arc::new(tight_transport), client.tokens().clone());
    let at = client.media_upload(&account, "image", "a.png", "image/png", vec![1; 16]).await.unwrap();
    let over = client.media_upload(&account, "image", "b.png", "image/png", vec![1; 17]).await.unwrap();
    assert_eq!(tight.media_get(&account, &at).await.unwrap().bytes.len(), 16);
    assert!(matches!(tight.media_get(&account, &over).await, Err(WechatError::BodyTooLarge { limit_bytes: 16 })));
    sandbox.stop().await;
}

#[tokio::test]
async fn a_slow_answer_times_out_and_is_retried() {
    let (sandbox, client, http) = start_tuned(SandboxConfig::default(), |c| c.request_timeout_ms = 200).await;
    let account = Account::Direct(APPID.into());
    client.tokens().get(&TokenKey::access_token(APPID).unwrap()).await.unwrap();
    control(
        &http,
        &sandbox,
        "/sandbox/faults",
        json!({"path": "/cgi-bin/tags/get", "errcode": 0, "count": 1, "delay_ms": 1000}),
    )
    .await;
    assert!(client.tags_get(&account).await.unwrap().is_empty(), "the second attempt is fast");
    control(
        &http,
        &sandbox,
        "/sandbox/faults",
        json!({"path": "/cgi-bin/tags/get", "errcode": 0, "count": 10, "delay_ms": 1000}),
    )
    .await;
    assert!(matches!(client.tags_get(&account).await, Err(WechatError::Timeout { timeout_ms: 200 })));
    sandbox.stop().await;
}

#[tokio::test]
async fn calls_are_rate_limited_per_appid() {
    let (sandbox, client, _http) = start_tuned(SandboxConfig::default(), |c| c.calls_per_second_per_appid = 5).await;
    let account = Account::Direct(APPID.into());
    client.tokens().get(&TokenKey::access_token(APPID).unwrap()).await.unwrap();
    let started = std::time::Instant::now();
    for _ in 0..9 {
        client.tags_get(&account).await.unwrap();
    }
    // 1 token call + 9 calls at 5/s with a burst of 5: at least 4 waits of 200 ms.
    assert!(started.elapsed() >= std::time::Duration::from_millis(700), "{:?}", started.elapsed());
    sandbox.stop().await;
}
