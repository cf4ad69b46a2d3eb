//! The admin API as the black-box tests call it: a tenant with users, sign-in,
//! and JSON requests with their status.

use reqwest::StatusCode;
use serde_json::{json, Value};
use wxcm_commands::ports::Role;
use wxcm_commands::{auth, tenants, CommandContext};
use wxcm_domain::{Actor, TenantId};

use crate::TestApp;

pub const PASSWORD: &str = "a-long-enough-password";

/// Creates the tenant (once) with `name`, and a user of `role` in it.
pub async fn tenant_user(t: &TestApp, tenant: &str, name: &str, username: &str, role: Role) {
    let tenant_id = TenantId::parse(tenant).expect("tenant id");
    if tenants::get(&t.app, &tenant_id).await.is_err() {
        let key = wxcm_commands::members::system_key(&["test-tenant", tenant]).expect("key");
        let ctx = CommandContext::new(tenant_id.clone(), key, "test".into());
        tenants::create(&t.app, &tenant_id, name, Actor::Admin { username: "test".into() }, &ctx)
            .await
            .expect("tenant created");
    }
    auth::create_admin(&t.app, &tenant_id, username, PASSWORD, role).await.expect("user created");
}

/// Signs in and returns the bearer token.
pub async fn login(t: &TestApp, tenant: &str, username: &str) -> String {
    let res = t
        .http
        .post(t.url("/admin/api/v1/login"))
        .json(&json!({"tenant_id": tenant, "username": username, "password": PASSWORD}))
        .send()
        .await
        .expect("login request");
    assert_eq!(res.status(), StatusCode::OK, "login of {username} failed");
    let body: Value = res.json().await.expect("login body");
    body["token"].as_str().expect("token").to_owned()
}

/// A fresh Idempotency-Key.
pub fn key() -> String {
    format!("test-{}", uuid::Uuid::new_v4())
}

/// POST with a fresh Idempotency-Key.
pub async fn post(t: &TestApp, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
    let res = t
        .http
        .post(t.url(path))
        .bearer_auth(token)
        .header("Idempotency-Key", key())
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

pub async fn get(t: &TestApp, token: &str, path: &str) -> (StatusCode, Value) {
    let res = t.http.get(t.url(path)).bearer_auth(token).send().await.expect("request");
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}
