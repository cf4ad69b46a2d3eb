//! Admin user management over HTTP against the real app and Postgres: the
//! owner manages users, everyone changes its own password, and a disable, a
//! role change or a new password ends the user's sessions at once (old tokens
//! answer 401 on the very next request) while other users' sessions live on.

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{json, Value};
use wxcm_commands::ports::Role;
use wxcm_commands::{auth, tenants, CommandContext};
use wxcm_domain::{Actor, MemberId, TenantId};
use wxcm_tests::{fresh_settings, spawn_app_on, TestApp};

const PASSWORD: &str = "a-long-enough-password";
const NEW_PASSWORD: &str = "a-brand-new-password";
const USERS: &str = "/admin/api/v1/admin-users";
const OWN_PASSWORD: &str = "/admin/api/v1/me/password";

/// The app with a login limit high enough for tests that sign in often.
async fn spawn() -> TestApp {
    let mut settings = fresh_settings(2).await;
    settings.http.login_attempts_per_minute = 1_000;
    spawn_app_on(settings).await
}

async fn tenant(t: &TestApp, tenant: &str) {
    let tenant_id = TenantId::parse(tenant).unwrap();
    let key = wxcm_commands::members::system_key(&["test-tenant", tenant]).unwrap();
    let ctx = CommandContext::new(tenant_id.clone(), key, "test".into());
    tenants::create(&t.app, &tenant_id, "Test Cinema", Actor::Admin { username: "test".into() }, &ctx).await.unwrap();
}

/// Creates a user outside the API (as `wxcm admin create` does) and signs it in.
async fn user(t: &TestApp, tenant: &str, username: &str, role: Role) -> String {
    auth::create_admin(&t.app, &TenantId::parse(tenant).unwrap(), username, PASSWORD, role).await.unwrap();
    login(t, tenant, username, PASSWORD).await.unwrap()
}

async fn login(t: &TestApp, tenant: &str, username: &str, password: &str) -> Result<String, StatusCode> {
    let res = t
        .http
        .post(t.url("/admin/api/v1/login"))
        .json(&json!({"tenant_id": tenant, "username": username, "password": password}))
        .send()
        .await
        .unwrap();
    match res.status() {
        StatusCode::OK => Ok(res.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned()),
        status => Err(status),
    }
}

fn key() -> String {
    format!("test-{}", uuid::Uuid::new_v4())
}

struct Reply {
    status: StatusCode,
    replayed: bool,
    body: Value,
}

impl Reply {
    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

async fn send(t: &TestApp, method: reqwest::Method, path: &str, token: &str, key: &str, body: Option<Value>) -> Reply {
    let mut req = t.http.request(method, t.url(path)).bearer_auth(token).header("Idempotency-Key", key);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.unwrap();
    let status = res.status();
    let replayed = res.headers().get("idempotent-replayed").is_some_and(|v| v == "true");
    Reply { status, replayed, body: res.json().await.unwrap_or(Value::Null) }
}

async fn post(t: &TestApp, path: &str, token: &str, body: Option<Value>) -> Reply {
    send(t, reqwest::Method::POST, path, token, &key(), body).await
}

async fn put(t: &TestApp, path: &str, token: &str, body: Value) -> Reply {
    send(t, reqwest::Method::PUT, path, token, &key(), Some(body)).await
}

async fn users(t: &TestApp, token: &str) -> Vec<Value> {
    let res = t.http.get(t.url(USERS)).bearer_auth(token).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    res.json::<Value>().await.unwrap()["items"].as_array().unwrap().clone()
}

/// 401 for a dead session; a live one gets past authentication (404: no such member).
async fn session(t: &TestApp, token: &str) -> StatusCode {
    let path = format!("/admin/api/v1/members/{}", MemberId::new_random());
    t.http.get(t.url(&path)).bearer_auth(token).send().await.unwrap().status()
}

const LIVE: StatusCode = StatusCode::NOT_FOUND;
const DEAD: StatusCode = StatusCode::UNAUTHORIZED;

fn user_path(username: &str, action: &str) -> String {
    format!("{USERS}/{username}/{action}")
}

#[tokio::test]
async fn the_owner_creates_lists_changes_disables_and_resets() {
    let t = spawn().await;
    tenant(&t, "acme").await;
    let owner = user(&t, "acme", "olga", Role::Owner).await;

    // Create, replay, reuse the key for another request, take a name twice.
    let create_key = key();
    let body = json!({"username": "ann", "password": PASSWORD, "role": "staff"});
    let created = send(&t, reqwest::Method::POST, USERS, &owner, &create_key, Some(body.clone())).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!((created.body["username"].as_str(), created.body["role"].as_str()), (Some("ann"), Some("staff")));
    assert_eq!(created.body["disabled"], false);
    assert!(created.body.get("password").is_none() && created.body.get("password_hash").is_none());
    let replay = send(&t, reqwest::Method::POST, USERS, &owner, &create_key, Some(body)).await;
    assert_eq!((replay.status, replay.replayed), (StatusCode::CREATED, true));
    assert_eq!(replay.body, created.body);
    let other = json!({"username": "ann", "password": PASSWORD, "role": "manager"});
    let reused = send(&t, reqwest::Method::POST, USERS, &owner, &create_key, Some(other)).await;
    assert_eq!((reused.status, reused.code()), (StatusCode::CONFLICT, "idempotency_key_reused"));
    let taken =
        post(&t, USERS, &owner, Some(json!({"username": "ann", "password": PASSWORD, "role": "auditor"}))).await;
    assert_eq!((taken.status, taken.code()), (StatusCode::CONFLICT, "username_taken"));

    let listed = users(&t, &owner).await;
    let names: Vec<(&str, &str)> =
        listed.iter().map(|u| (u["username"].as_str().unwrap(), u["role"].as_str().unwrap())).collect();
    assert_eq!(names, [("ann", "staff"), ("olga", "owner")]);
    assert!(!listed.iter().any(|u| u.to_string().contains("argon2")), "no hashes: {listed:?}");

    // The new user signs in; a role change takes effect (and is replayable).
    let ann = login(&t, "acme", "ann", PASSWORD).await.unwrap();
    let role_key = key();
    let role =
        send(&t, reqwest::Method::PUT, &user_path("ann", "role"), &owner, &role_key, Some(json!({"role": "manager"})))
            .await;
    assert_eq!((role.status, role.body["role"].as_str()), (StatusCode::OK, Some("manager")));
    let again =
        send(&t, reqwest::Method::PUT, &user_path("ann", "role"), &owner, &role_key, Some(json!({"role": "manager"})))
            .await;
    assert_eq!((again.status, again.replayed), (StatusCode::OK, true));
    assert_eq!(session(&t, &ann).await, DEAD);
    let ann = login(&t, "acme", "ann", PASSWORD).await.unwrap();

    // Disabled: no session, no login; enabled: signs in again.
    let disabled = post(&t, &user_path("ann", "disable"), &owner, None).await;
    assert_eq!((disabled.status, disabled.body["disabled"].as_bool()), (StatusCode::OK, Some(true)));
    assert_eq!(session(&t, &ann).await, DEAD);
    assert_eq!(login(&t, "acme", "ann", PASSWORD).await, Err(StatusCode::UNAUTHORIZED));
    let enabled = post(&t, &user_path("ann", "enable"), &owner, None).await;
    assert_eq!((enabled.status, enabled.body["disabled"].as_bool()), (StatusCode::OK, Some(false)));
    let ann = login(&t, "acme", "ann", PASSWORD).await.unwrap();

    // Reset: the old password no longer signs in, the new one does.
    let reset =
        post(&t, &user_path("ann", "password-reset"), &owner, Some(json!({"new_password": NEW_PASSWORD}))).await;
    assert_eq!(reset.status, StatusCode::NO_CONTENT);
    assert_eq!(session(&t, &ann).await, DEAD);
    assert_eq!(login(&t, "acme", "ann", PASSWORD).await, Err(StatusCode::UNAUTHORIZED));
    assert!(login(&t, "acme", "ann", NEW_PASSWORD).await.is_ok());

    // The owner's own session lived through all of it; unknown users are 404.
    assert_eq!(session(&t, &owner).await, LIVE);
    let missing = post(&t, &user_path("nobody", "disable"), &owner, None).await;
    assert_eq!((missing.status, missing.code()), (StatusCode::NOT_FOUND, "admin_user_not_found"));
    t.stop().await;
}

/// Which change ends ann's sessions in [`sessions_end_at_once`].
#[derive(Debug, Clone, Copy)]
enum Change {
    Disable,
    Role,
    Reset,
    Own,
}

/// ann has two sessions, bob one, the owner one. After the change to ann, both
/// of ann's tokens are 401 at once; bob's and the owner's are untouched.
async fn sessions_end_at_once(change: Change) {
    let t = spawn().await;
    tenant(&t, "acme").await;
    let owner = user(&t, "acme", "olga", Role::Owner).await;
    let ann_1 = user(&t, "acme", "ann", Role::Staff).await;
    let ann_2 = login(&t, "acme", "ann", PASSWORD).await.unwrap();
    let bob = user(&t, "acme", "bob", Role::Staff).await;
    for token in [&owner, &ann_1, &ann_2, &bob] {
        assert_eq!(session(&t, token).await, LIVE);
    }
    let reply = match change {
        Change::Disable => post(&t, &user_path("ann", "disable"), &owner, None).await,
        Change::Role => put(&t, &user_path("ann", "role"), &owner, json!({"role": "auditor"})).await,
        Change::Reset => {
            post(&t, &user_path("ann", "password-reset"), &owner, Some(json!({"new_password": NEW_PASSWORD}))).await
        }
        Change::Own => {
            put(&t, OWN_PASSWORD, &ann_1, json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD})).await
        }
    };
    assert!(reply.status.is_success(), "{change:?}: {} {}", reply.status, reply.body);
    assert_eq!(session(&t, &ann_1).await, DEAD, "{change:?}");
    assert_eq!(session(&t, &ann_2).await, DEAD, "{change:?}");
    assert_eq!(session(&t, &bob).await, LIVE, "{change:?}");
    assert_eq!(session(&t, &owner).await, LIVE, "{change:?}");
    // Nothing left in the table either.
    let mut db = t.shard_db(&shard_of(&t, "acme")).await;
    let left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM admin_sessions WHERE tenant_id = 'acme' AND username = 'ann'")
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!(left, 0, "{change:?}");
    t.stop().await;
}

fn shard_of(t: &TestApp, tenant: &str) -> String {
    t.settings.tenant_shards.get(tenant).cloned().unwrap_or_else(|| t.settings.default_shard.clone())
}

#[tokio::test]
async fn disabling_a_user_ends_its_sessions_at_once() {
    sessions_end_at_once(Change::Disable).await;
}

#[tokio::test]
async fn a_role_change_ends_the_users_sessions_at_once() {
    sessions_end_at_once(Change::Role).await;
}

#[tokio::test]
async fn a_password_reset_ends_the_users_sessions_at_once() {
    sessions_end_at_once(Change::Reset).await;
}

#[tokio::test]
async fn changing_ones_own_password_ends_ones_sessions_at_once() {
    sessions_end_at_once(Change::Own).await;
}

#[tokio::test]
async fn own_password_needs_the_current_one() {
    let t = spawn().await;
    tenant(&t, "acme").await;
    let _owner = user(&t, "acme", "olga", Role::Owner).await;
    let ann = user(&t, "acme", "ann", Role::Auditor).await;
    let wrong =
        put(&t, OWN_PASSWORD, &ann, json!({"current_password": "not-the-password", "new_password": NEW_PASSWORD}))
            .await;
    assert_eq!((wrong.status, wrong.code()), (StatusCode::CONFLICT, "wrong_current_password"));
    let short = put(&t, OWN_PASSWORD, &ann, json!({"current_password": PASSWORD, "new_password": "short"})).await;
    assert_eq!((short.status, short.code()), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_password"));
    let unknown_field = put(&t, OWN_PASSWORD, &ann, json!({"password": NEW_PASSWORD})).await;
    assert_eq!((unknown_field.status, unknown_field.code()), (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"));
    // Nothing changed: the session lives, the old password still signs in.
    assert_eq!(session(&t, &ann).await, LIVE);
    assert!(login(&t, "acme", "ann", PASSWORD).await.is_ok());

    let change_key = key();
    let body = json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD});
    let changed = send(&t, reqwest::Method::PUT, OWN_PASSWORD, &ann, &change_key, Some(body.clone())).await;
    assert_eq!(changed.status, StatusCode::NO_CONTENT);
    assert_eq!(login(&t, "acme", "ann", PASSWORD).await, Err(StatusCode::UNAUTHORIZED));
    let ann = login(&t, "acme", "ann", NEW_PASSWORD).await.unwrap();
    // A retry of the same request (signed in again) replays instead of failing on the old password.
    let retry = send(&t, reqwest::Method::PUT, OWN_PASSWORD, &ann, &change_key, Some(body)).await;
    assert_eq!((retry.status, retry.replayed), (StatusCode::NO_CONTENT, true));
    assert_eq!(session(&t, &ann).await, LIVE);
    t.stop().await;
}

#[tokio::test]
async fn only_the_owner_manages_users() {
    let t = spawn().await;
    tenant(&t, "acme").await;
    let owner = user(&t, "acme", "olga", Role::Owner).await;
    let ann = user(&t, "acme", "ann", Role::Staff).await;
    let before = users(&t, &owner).await;
    for (name, role) in [("mia", Role::Manager), ("sam", Role::Staff), ("aud", Role::Auditor)] {
        let token = user(&t, "acme", name, role).await;
        let get = t.http.get(t.url(USERS)).bearer_auth(&token).send().await.unwrap();
        assert_eq!(get.status(), StatusCode::FORBIDDEN, "{role:?}");
        let attempts = [
            post(&t, USERS, &token, Some(json!({"username": "eve", "password": PASSWORD, "role": "owner"}))).await,
            put(&t, &user_path("ann", "role"), &token, json!({"role": "owner"})).await,
            put(&t, &user_path(name, "role"), &token, json!({"role": "owner"})).await,
            post(&t, &user_path("ann", "disable"), &token, None).await,
            post(&t, &user_path("ann", "enable"), &token, None).await,
            post(&t, &user_path("ann", "password-reset"), &token, Some(json!({"new_password": NEW_PASSWORD}))).await,
        ];
        for reply in attempts {
            assert_eq!((reply.status, reply.code()), (StatusCode::FORBIDDEN, "forbidden"), "{role:?}");
        }
    }
    // Nothing changed: the same users (plus the three made above), ann still signed in.
    let after = users(&t, &owner).await;
    assert_eq!(after.len(), before.len() + 3);
    assert!(after.iter().all(|u| u["username"] != "eve" && u["disabled"] == false));
    assert!(after.iter().find(|u| u["username"] == "ann").is_some_and(|u| u["role"] == "staff"));
    assert_eq!(session(&t, &ann).await, LIVE);
    t.stop().await;
}

#[tokio::test]
async fn another_tenants_users_are_not_found() {
    let t = spawn().await;
    tenant(&t, "acme").await;
    tenant(&t, "globex").await;
    let acme_owner = user(&t, "acme", "olga", Role::Owner).await;
    let ann = user(&t, "acme", "ann", Role::Staff).await;
    let globex_owner = user(&t, "globex", "gus", Role::Owner).await;
    let listed = users(&t, &globex_owner).await;
    assert_eq!(listed.iter().map(|u| u["username"].as_str().unwrap()).collect::<Vec<_>>(), ["gus"]);
    let attempts = [
        put(&t, &user_path("ann", "role"), &globex_owner, json!({"role": "owner"})).await,
        post(&t, &user_path("ann", "disable"), &globex_owner, None).await,
        post(&t, &user_path("ann", "enable"), &globex_owner, None).await,
        post(&t, &user_path("ann", "password-reset"), &globex_owner, Some(json!({"new_password": NEW_PASSWORD}))).await,
        post(&t, &user_path("olga", "disable"), &globex_owner, None).await,
    ];
    for reply in attempts {
        assert_eq!((reply.status, reply.code()), (StatusCode::NOT_FOUND, "admin_user_not_found"), "{}", reply.body);
    }
    assert_eq!(session(&t, &ann).await, LIVE);
    assert_eq!(session(&t, &acme_owner).await, LIVE);
    assert!(login(&t, "acme", "ann", PASSWORD).await.is_ok());
    // The same name in another tenant is another user.
    let created =
        post(&t, USERS, &globex_owner, Some(json!({"username": "ann", "password": NEW_PASSWORD, "role": "staff"})))
            .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert!(login(&t, "acme", "ann", PASSWORD).await.is_ok());
    assert!(login(&t, "globex", "ann", NEW_PASSWORD).await.is_ok());
    t.stop().await;
}

#[tokio::test]
async fn a_tenant_keeps_one_active_owner() {
    let t = spawn().await;
    tenant(&t, "acme").await;
    let olga = user(&t, "acme", "olga", Role::Owner).await;
    for reply in [
        post(&t, &user_path("olga", "disable"), &olga, None).await,
        put(&t, &user_path("olga", "role"), &olga, json!({"role": "manager"})).await,
    ] {
        assert_eq!((reply.status, reply.code()), (StatusCode::CONFLICT, "last_owner"));
    }
    assert_eq!(session(&t, &olga).await, LIVE, "a refused change ends nothing");
    // Keeping the role is no change at all.
    let same = put(&t, &user_path("olga", "role"), &olga, json!({"role": "owner"})).await;
    assert_eq!(same.status, StatusCode::OK);
    assert_eq!(session(&t, &olga).await, LIVE);

    // With a second owner, the first may step down (and its sessions end).
    let created =
        post(&t, USERS, &olga, Some(json!({"username": "oscar", "password": PASSWORD, "role": "owner"}))).await;
    assert_eq!(created.status, StatusCode::CREATED);
    let oscar = login(&t, "acme", "oscar", PASSWORD).await.unwrap();
    let down = put(&t, &user_path("olga", "role"), &olga, json!({"role": "manager"})).await;
    assert_eq!(down.status, StatusCode::OK);
    assert_eq!(session(&t, &olga).await, DEAD);
    // Now oscar is the last one; a disabled owner does not count.
    let last = post(&t, &user_path("oscar", "disable"), &oscar, None).await;
    assert_eq!((last.status, last.code()), (StatusCode::CONFLICT, "last_owner"));

    // Two owners disabling each other at once: one wins, one owner stays active.
    let up = put(&t, &user_path("olga", "role"), &oscar, json!({"role": "owner"})).await;
    assert_eq!(up.status, StatusCode::OK);
    let olga = login(&t, "acme", "olga", PASSWORD).await.unwrap();
    let replies = join_all([
        post(&t, &user_path("oscar", "disable"), &olga, None),
        post(&t, &user_path("olga", "disable"), &oscar, None),
    ])
    .await;
    let won = replies.iter().filter(|r| r.status == StatusCode::OK).count();
    assert_eq!(won, 1, "{:?}", replies.iter().map(|r| (r.status, r.body.clone())).collect::<Vec<_>>());
    for r in replies.iter().filter(|r| r.status != StatusCode::OK) {
        // Refused under the lock, or its session was already gone.
        assert!(r.code() == "last_owner" || r.status == StatusCode::UNAUTHORIZED, "{} {}", r.status, r.body);
    }
    let mut db = t.shard_db(&shard_of(&t, "acme")).await;
    let active: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM admin_users WHERE tenant_id = 'acme' AND role = 'owner' AND NOT disabled",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(active, 1);
    t.stop().await;
}

#[tokio::test]
async fn bad_requests_change_nothing() {
    let t = spawn().await;
    tenant(&t, "acme").await;
    let owner = user(&t, "acme", "olga", Role::Owner).await;
    let ann = user(&t, "acme", "ann", Role::Staff).await;
    let before = users(&t, &owner).await;
    let cases = [
        post(&t, USERS, &owner, Some(json!({"username": "bo b", "password": PASSWORD, "role": "staff"}))).await,
        post(&t, USERS, &owner, Some(json!({"username": "bob", "password": "short", "role": "staff"}))).await,
        post(&t, USERS, &owner, Some(json!({"username": "bob", "password": PASSWORD, "role": "root"}))).await,
        post(&t, USERS, &owner, Some(json!({"username": "bob", "password": PASSWORD}))).await,
        post(&t, USERS, &owner, Some(json!([{"username": "bob", "password": PASSWORD, "role": "staff"}]))).await,
        put(&t, &user_path("ann", "role"), &owner, json!({"role": "root"})).await,
        put(&t, &user_path("ann", "role"), &owner, json!({"role": "owner", "disabled": true})).await,
        post(&t, &user_path("ann", "password-reset"), &owner, Some(json!({"new_password": "short"}))).await,
        post(&t, &user_path("ann", "password-reset"), &owner, Some(json!({"new_password": "p".repeat(129)}))).await,
        post(&t, &user_path("ann", "password-reset"), &owner, Some(json!({}))).await,
    ];
    for reply in cases {
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", reply.body);
    }
    let no_key = t.http.post(t.url(&user_path("ann", "disable"))).bearer_auth(&owner).send().await.unwrap();
    assert_eq!(no_key.status(), StatusCode::BAD_REQUEST);
    assert_eq!(users(&t, &owner).await, before);
    assert_eq!(session(&t, &ann).await, LIVE);
    assert!(login(&t, "acme", "ann", PASSWORD).await.is_ok());
    t.stop().await;
}
