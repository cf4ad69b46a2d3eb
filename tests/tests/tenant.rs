//! Tenant settings: secrets are sealed at rest, never returned, never in the log.

use reqwest::StatusCode;
use serde_json::{json, Value};
use wxcm_commands::ports::Role;
use wxcm_commands::{auth, tenants, CommandContext};
use wxcm_domain::{Actor, TenantId};
use wxcm_tests::{spawn_app, TestApp};

const PASSWORD: &str = "a-long-enough-password";
const APP_SECRET: &str = "app-secret-0123456789abcdef";
/// Pay's API v3 key: exactly 32 bytes (the AES-256-GCM key).
const PAY_KEY: &str = "pay-api-key-v3-0123456789abcdef0";

async fn owner_token(t: &TestApp, tenant: &str, role: Role) -> String {
    let tenant_id = TenantId::parse(tenant).unwrap();
    if tenants::get(&t.app, &tenant_id).await.is_err() {
        let key = wxcm_commands::members::system_key(&["test-tenant", tenant]).unwrap();
        let ctx = CommandContext::new(tenant_id.clone(), key, "test".into());
        tenants::create(&t.app, &tenant_id, "Secret Cinema", Actor::Admin { username: "t".into() }, &ctx)
            .await
            .unwrap();
    }
    let username = format!("user-{}", role.as_str());
    auth::create_admin(&t.app, &tenant_id, &username, PASSWORD, role).await.unwrap();
    let res = t
        .http
        .post(t.url("/admin/api/v1/login"))
        .json(&json!({"tenant_id": tenant, "username": username, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    res.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned()
}

fn account_body() -> Value {
    json!({
        "name": "Main account",
        "token": "callback-token-123",
        "encoding_aes_key": "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
        "app_secret": APP_SECRET,
        "pay": {"mch_id": "1900000109", "api_v3_key": PAY_KEY}
    })
}

#[tokio::test]
async fn account_secrets_are_sealed_and_never_returned() {
    let t = spawn_app().await;
    let token = owner_token(&t, "secret-cinema", Role::Owner).await;
    // A v3 key one byte short would only fail when Pay's first notification cannot
    // be decrypted: refused at bind time, and nothing is bound.
    let mut short_key = account_body();
    short_key["pay"]["api_v3_key"] = json!(&PAY_KEY[..31]);
    let res = t
        .http
        .put(t.url("/admin/api/v1/tenant/official-accounts/wx0123456789abcdef"))
        .bearer_auth(&token)
        .header("Idempotency-Key", "bind-account-short")
        .json(&short_key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(res.text().await.unwrap().contains("api_v3_key"));
    let tenant: Value =
        t.http.get(t.url("/admin/api/v1/tenant")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    assert!(!tenant.to_string().contains("wx0123456789abcdef"), "nothing bound: {tenant}");
    let res = t
        .http
        .put(t.url("/admin/api/v1/tenant/official-accounts/wx0123456789abcdef"))
        .bearer_auth(&token)
        .header("Idempotency-Key", "bind-account-0001")
        .json(&account_body())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let text = res.text().await.unwrap();
    assert!(!text.contains(APP_SECRET) && !text.contains(PAY_KEY), "secrets in the response: {text}");
    let (status, view) = {
        let r = t.http.get(t.url("/admin/api/v1/tenant")).bearer_auth(&token).send().await.unwrap();
        (r.status(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(status, StatusCode::OK);
    assert_eq!(view["official_accounts"][0]["appid"], "wx0123456789abcdef");
    assert_eq!(view["official_accounts"][0]["has_app_secret"], true);
    assert!(!view.to_string().contains(APP_SECRET));

    // At rest: the event holds ciphertext only, which opens with the key.
    let mut db = t.shard_db("s0").await;
    let stored: Vec<String> = sqlx::query_scalar("SELECT payload::text FROM events WHERE aggregate_type = 'tenant'")
        .fetch_all(&mut db)
        .await
        .unwrap();
    let all = stored.join("\n");
    assert!(!all.contains(APP_SECRET) && !all.contains(PAY_KEY) && !all.contains("callback-token-123"));
    assert!(all.contains("v1:"), "sealed secrets are stored");
    t.stop().await;
}

/// Accounts authorized through the third-party platform are listed beside
/// those bound directly, each with its binding, and without any secret.
#[tokio::test]
async fn the_tenant_lists_direct_and_component_accounts() {
    const REFRESH_TOKEN: &str = "refresh-token-SECRET-0123456789";
    let t = spawn_app().await;
    let owner = owner_token(&t, "secret-cinema", Role::Owner).await;
    let auditor = owner_token(&t, "secret-cinema", Role::Auditor).await;
    let res = t
        .http
        .put(t.url("/admin/api/v1/tenant/official-accounts/wx0123456789abcdef"))
        .bearer_auth(&owner)
        .header("Idempotency-Key", "bind-account-0001")
        .json(&account_body())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let tenant = TenantId::parse("secret-cinema").unwrap();
    let component = wxcm_domain::AppId::parse("wx00000000000000aa").unwrap();
    wxcm_commands::wechat::authorize_component_account(&t.app, &tenant, &component, REFRESH_TOKEN).await.unwrap();
    for token in [&owner, &auditor] {
        let res = t.http.get(t.url("/admin/api/v1/tenant")).bearer_auth(token).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let text = res.text().await.unwrap();
        for secret in [REFRESH_TOKEN, APP_SECRET, PAY_KEY, "callback-token-123", "v1:"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        let view: Value = serde_json::from_str(&text).unwrap();
        let accounts = view["official_accounts"].as_array().unwrap();
        let listed: Vec<_> = accounts.iter().map(|a| (a["appid"].as_str(), a["binding"].as_str())).collect();
        assert_eq!(
            listed,
            [(Some("wx00000000000000aa"), Some("component")), (Some("wx0123456789abcdef"), Some("direct"))]
        );
        assert_eq!(accounts[0]["has_refresh_token"], true);
        assert!(accounts[0]["authorized_at"].is_string(), "{}", accounts[0]);
        assert_eq!(accounts[0]["has_app_secret"], false);
        assert_eq!(
            (accounts[1]["has_app_secret"].clone(), accounts[1]["has_refresh_token"].clone()),
            (json!(true), json!(false))
        );
    }
    // Once deauthorized, the component account is gone from the list.
    wxcm_commands::wechat::deauthorize_component_account(&t.app, &tenant, &component).await.unwrap();
    let view: Value =
        t.http.get(t.url("/admin/api/v1/tenant")).bearer_auth(&owner).send().await.unwrap().json().await.unwrap();
    let appids: Vec<_> = view["official_accounts"].as_array().unwrap().iter().map(|a| a["appid"].clone()).collect();
    assert_eq!(appids, [json!("wx0123456789abcdef")]);
    t.stop().await;
}

#[tokio::test]
async fn only_owners_change_tenant_settings_and_bad_settings_write_nothing() {
    let t = spawn_app().await;
    let owner = owner_token(&t, "secret-cinema", Role::Owner).await;
    let manager = owner_token(&t, "secret-cinema", Role::Manager).await;
    let put = |token: String, appid: &'static str, body: Value, key: &'static str| {
        let t = &t;
        async move {
            t.http
                .put(t.url(&format!("/admin/api/v1/tenant/official-accounts/{appid}")))
                .bearer_auth(token)
                .header("Idempotency-Key", key)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(put(manager, "wx0123456789abcdef", account_body(), "bind-by-manager-1").await, StatusCode::FORBIDDEN);
    assert!(put(owner.clone(), "not-an-appid", account_body(), "bind-bad-appid-01").await.is_client_error());
    let mut short_key = account_body();
    short_key["encoding_aes_key"] = json!("tooshort");
    assert!(put(owner.clone(), "wx0123456789abcdef", short_key, "bind-bad-aeskey-1").await.is_client_error());
    let mut db = t.shard_db("s0").await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = 'tenant'")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(n, 1, "only TenantCreated");
    t.stop().await;
}

#[tokio::test]
async fn an_appid_bound_to_one_tenant_cannot_be_bound_to_another_on_any_shard() {
    let mut settings = wxcm_tests::fresh_settings(2).await;
    settings.tenant_shards.insert("far-cinema".into(), "s1".into());
    let t = wxcm_tests::spawn_app_on(settings).await;
    let bind = |tenant: &'static str, key: &'static str| {
        let t = &t;
        async move {
            let token = owner_token(t, tenant, Role::Owner).await;
            t.http
                .put(t.url("/admin/api/v1/tenant/official-accounts/wx0123456789abcdef"))
                .bearer_auth(&token)
                .header("Idempotency-Key", key)
                .json(&account_body())
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(bind("near-cinema", "bind-near-0001").await.status(), StatusCode::OK);
    // Same shard and another shard: both refused, nothing bound.
    for (tenant, key) in [("next-cinema", "bind-next-0001"), ("far-cinema", "bind-far-00001")] {
        let res = bind(tenant, key).await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{tenant}");
        let view = tenants::get(&t.app, &TenantId::parse(tenant).unwrap()).await.unwrap();
        assert!(view.official_accounts.is_empty(), "{tenant} must not hold the appid");
    }
    t.stop().await;
}

#[tokio::test]
async fn two_tenants_on_two_shards_racing_for_one_appid_never_both_bind_it() {
    let mut settings = wxcm_tests::fresh_settings(2).await;
    let tenants: Vec<String> = (0..6).map(|i| format!("race-cinema-{i}")).collect();
    for (i, tenant) in tenants.iter().enumerate() {
        settings.tenant_shards.insert(tenant.clone(), if i % 2 == 0 { "s0" } else { "s1" }.into());
    }
    let t = wxcm_tests::spawn_app_on(settings).await;
    let mut tokens = Vec::new();
    for tenant in &tenants {
        tokens.push((tenant.clone(), owner_token(&t, tenant, Role::Owner).await));
    }
    let binds = tokens.iter().map(|(tenant, token)| {
        let t = &t;
        async move {
            let res = t
                .http
                .put(t.url("/admin/api/v1/tenant/official-accounts/wx00000000000000aa"))
                .bearer_auth(token)
                .header("Idempotency-Key", format!("race-bind-{tenant}"))
                .json(&account_body())
                .send()
                .await
                .unwrap();
            (tenant.clone(), res.status())
        }
    });
    let results = futures::future::join_all(binds).await;
    let won: Vec<_> = results.iter().filter(|(_, s)| *s == StatusCode::OK).collect();
    assert_eq!(won.len(), 1, "{results:?}");
    let mut holders = 0;
    for tenant in &tenants {
        let view = tenants::get(&t.app, &TenantId::parse(tenant).unwrap()).await.unwrap();
        holders += view.official_accounts.len();
    }
    assert_eq!(holders, 1, "exactly one tenant holds the appid on any shard");
    t.stop().await;
}

#[tokio::test]
async fn a_claim_whose_bind_never_happened_blocks_others_only_until_it_is_stale() {
    let t = spawn_app().await;
    let token = owner_token(&t, "late-cinema", Role::Owner).await;
    let mut db = t.shard_db(&t.settings.default_shard).await;
    // A tenant claimed the appid and died before binding it.
    sqlx::query("INSERT INTO appid_claims (appid, tenant_id, claimed_at) VALUES ($1, 'ghost-cinema', now())")
        .bind("wx00000000000000bb")
        .execute(&mut db)
        .await
        .unwrap();
    let bind = |key: &'static str| {
        t.http
            .put(t.url("/admin/api/v1/tenant/official-accounts/wx00000000000000bb"))
            .bearer_auth(&token)
            .header("Idempotency-Key", key)
            .json(&account_body())
            .send()
    };
    assert_eq!(bind("late-bind-00001").await.unwrap().status(), StatusCode::UNPROCESSABLE_ENTITY, "fresh claim");
    sqlx::query("UPDATE appid_claims SET claimed_at = now() - interval '1 hour' WHERE appid = $1")
        .bind("wx00000000000000bb")
        .execute(&mut db)
        .await
        .unwrap();
    assert_eq!(bind("late-bind-00002").await.unwrap().status(), StatusCode::OK, "stale and unbound: taken over");
    let holder: String = sqlx::query_scalar("SELECT tenant_id FROM appid_claims WHERE appid = $1")
        .bind("wx00000000000000bb")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(holder, "late-cinema");
    t.stop().await;
}

/// Commands that never touch a tenant secret run without `WXCM_SECRET_KEY`
/// (an operator listing tenants needs no key); `serve` still requires it.
#[tokio::test]
async fn tenant_list_and_create_run_without_the_secret_key() {
    let t = spawn_app().await;
    let file = wxcm_tests::settings_file(&t.settings);
    let run = |args: &'static [&'static str]| {
        tokio::process::Command::new(wxcm_tests::wxcm_bin())
            .arg("--config")
            .arg(file.path())
            .args(args)
            .env_remove("WXCM_SECRET_KEY")
            .env_remove("WXCM_CONFIG")
            .output()
    };
    let created = run(&["tenant", "create", "--id", "keyless", "--name", "Keyless Cinema"]).await.unwrap();
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let listed = run(&["tenant", "list"]).await.unwrap();
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    assert!(String::from_utf8_lossy(&listed.stdout).contains("keyless"));
    let served = run(&["serve", "--listen", "127.0.0.1:0"]).await.unwrap();
    assert!(!served.status.success(), "serve must refuse to start without the key");
    assert!(String::from_utf8_lossy(&served.stderr).contains("WXCM_SECRET_KEY"));
    t.stop().await;
}
