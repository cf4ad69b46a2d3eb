//! The member ledger through the admin API, against the real Postgres.

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{json, Value};
use wxcm_commands::ports::Role;
use wxcm_commands::{auth, tenants, CommandContext};
use wxcm_domain::{Actor, TenantId};
use wxcm_tests::{fresh_settings, spawn_app, spawn_app_on, TestApp};

const PASSWORD: &str = "a-long-enough-password";

async fn tenant_with_admin(t: &TestApp, tenant: &str, username: &str, role: Role) -> String {
    let tenant_id = TenantId::parse(tenant).unwrap();
    if tenants::get(&t.app, &tenant_id).await.is_err() {
        let key = wxcm_commands::members::system_key(&["test-tenant", tenant]).unwrap();
        let ctx = CommandContext::new(tenant_id.clone(), key, "test".into());
        tenants::create(&t.app, &tenant_id, "Test Cinema", Actor::Admin { username: "test".into() }, &ctx)
            .await
            .unwrap();
    }
    auth::create_admin(&t.app, &tenant_id, username, PASSWORD, role).await.unwrap();
    login(t, tenant, username).await
}

async fn login(t: &TestApp, tenant: &str, username: &str) -> String {
    let res = t
        .http
        .post(t.url("/admin/api/v1/login"))
        .json(&json!({"tenant_id": tenant, "username": username, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK, "login failed");
    let body: Value = res.json().await.unwrap();
    body["token"].as_str().unwrap().to_owned()
}

fn key() -> String {
    format!("test-{}", uuid::Uuid::new_v4())
}

async fn post(t: &TestApp, token: &str, path: &str, key: &str, body: Value) -> (StatusCode, Value) {
    let res =
        t.http.post(t.url(path)).bearer_auth(token).header("Idempotency-Key", key).json(&body).send().await.unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn get(t: &TestApp, token: &str, path: &str) -> (StatusCode, Value) {
    let res = t.http.get(t.url(path)).bearer_auth(token).send().await.unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn register(t: &TestApp, token: &str, openid: Option<&str>) -> Value {
    let body = match openid {
        Some(o) => json!({"openid": o}),
        None => json!({}),
    };
    let (status, member) = post(t, token, "/admin/api/v1/members", &key(), body).await;
    assert!(status == StatusCode::CREATED || status == StatusCode::OK, "register: {status} {member}");
    member
}

async fn deposit(t: &TestApp, token: &str, member_id: &str, amount_fen: i64) -> (StatusCode, Value) {
    post(
        t,
        token,
        &format!("/admin/api/v1/members/{member_id}/cash/deposits"),
        &key(),
        json!({"amount_fen": amount_fen, "reason": "counter deposit"}),
    )
    .await
}

async fn event_count(t: &TestApp, shard: &str, member_id: &str) -> i64 {
    let mut db = t.shard_db(shard).await;
    sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = 'member' AND aggregate_id = $1")
        .bind(member_id)
        .fetch_one(&mut db)
        .await
        .unwrap()
}

#[tokio::test]
async fn fifty_concurrent_charges_of_100_on_1000_fen_leave_exactly_zero() {
    let t = spawn_app().await;
    let token = tenant_with_admin(&t, "cinema-a", "owner", Role::Owner).await;
    let member = register(&t, &token, None).await;
    let id = member["member_id"].as_str().unwrap().to_owned();
    assert_eq!(deposit(&t, &token, &id, 1000).await.0, StatusCode::OK);

    let charges = (0..50).map(|_| {
        let (t, token, id) = (&t, token.clone(), id.clone());
        async move {
            post(
                t,
                &token,
                &format!("/admin/api/v1/members/{id}/cash/charges"),
                &key(),
                json!({"amount_fen": 100, "reason": "popcorn"}),
            )
            .await
        }
    });
    let results = join_all(charges).await;
    let ok = results.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    let refused =
        results.iter().filter(|(s, b)| s.is_client_error() && b["error"]["code"] == "insufficient_balance").count();
    assert_eq!(ok, 10, "exactly ten charges succeed: {results:?}");
    assert_eq!(refused, 40, "the other forty are refused for insufficient balance");
    let (_, view) = get(&t, &token, &format!("/admin/api/v1/members/{id}")).await;
    assert_eq!(view["balance_fen"], 0);
    // register + deposit + 10 charges
    assert_eq!(event_count(&t, "s0", &id).await, 12);
    t.stop().await;
}

#[tokio::test]
async fn twenty_identical_commands_with_one_key_have_one_effect() {
    let t = spawn_app().await;
    let token = tenant_with_admin(&t, "cinema-a", "owner", Role::Owner).await;
    let id = register(&t, &token, None).await["member_id"].as_str().unwrap().to_owned();
    let k = key();
    let calls = (0..20).map(|_| {
        let (t, token, id, k) = (&t, token.clone(), id.clone(), k.clone());
        async move {
            post(
                t,
                &token,
                &format!("/admin/api/v1/members/{id}/cash/deposits"),
                &k,
                json!({"amount_fen": 250, "reason": "deposit"}),
            )
            .await
        }
    });
    let results = join_all(calls).await;
    for (status, body) in &results {
        assert_eq!(*status, StatusCode::OK, "{body}");
    }
    // Every caller sees the first result: the same sequence and balance after.
    let first = &results[0].1;
    for (_, body) in &results {
        assert_eq!(body["entries"], first["entries"], "same result for the same key");
    }
    let (_, view) = get(&t, &token, &format!("/admin/api/v1/members/{id}")).await;
    assert_eq!(view["balance_fen"], 250);
    assert_eq!(event_count(&t, "s0", &id).await, 2);

    // Same key, different payload → 409 and nothing written.
    let (status, body) = post(
        &t,
        &token,
        &format!("/admin/api/v1/members/{id}/cash/deposits"),
        &k,
        json!({"amount_fen": 999, "reason": "deposit"}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(event_count(&t, "s0", &id).await, 2);
    t.stop().await;
}

#[tokio::test]
async fn twenty_concurrent_registrations_of_one_openid_make_one_member() {
    let t = spawn_app().await;
    let token = tenant_with_admin(&t, "cinema-a", "owner", Role::Owner).await;
    let calls = (0..20).map(|_| {
        let (t, token) = (&t, token.clone());
        async move { post(t, &token, "/admin/api/v1/members", &key(), json!({"openid": "oWx_same_openid_0001"})).await }
    });
    let results = join_all(calls).await;
    let ids: std::collections::BTreeSet<String> = results
        .iter()
        .map(|(s, b)| {
            assert!(s.is_success(), "{s} {b}");
            b["member_id"].as_str().unwrap().to_owned()
        })
        .collect();
    let cards: std::collections::BTreeSet<String> =
        results.iter().map(|(_, b)| b["card_no"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids.len(), 1, "one member");
    assert_eq!(cards.len(), 1, "one card number");
    let mut db = t.shard_db("s0").await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM member_identities WHERE openid = 'oWx_same_openid_0001'")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(n, 1);
    let id = ids.into_iter().next().unwrap();
    assert_eq!(event_count(&t, "s0", &id).await, 1);
    // Lookups by card and openid find it.
    let card = cards.into_iter().next().unwrap();
    let (s, by_card) = get(&t, &token, &format!("/admin/api/v1/members/by-card/{card}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(by_card["member_id"], id.as_str());
    let (s, by_openid) = get(&t, &token, "/admin/api/v1/members/by-openid/oWx_same_openid_0001").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(by_openid["member_id"], id.as_str());
    t.stop().await;
}

#[tokio::test]
async fn bad_amounts_are_refused_and_write_nothing() {
    let t = spawn_app().await;
    let token = tenant_with_admin(&t, "cinema-a", "owner", Role::Owner).await;
    let id = register(&t, &token, None).await["member_id"].as_str().unwrap().to_owned();
    let limit = t.settings.limits.amount_fen_max;
    for amount in [json!(0), json!(-100), json!(limit + 1), json!(i64::MAX), json!(1.5), json!("100"), json!(null)] {
        for path in ["cash/deposits", "cash/charges"] {
            let (status, body) = post(
                &t,
                &token,
                &format!("/admin/api/v1/members/{id}/{path}"),
                &key(),
                json!({"amount_fen": amount, "reason": "x"}),
            )
            .await;
            assert!(status.is_client_error(), "{path} {amount}: {status} {body}");
            assert!(body["error"]["code"].is_string(), "clear JSON error for {amount}: {body}");
        }
    }
    let points_limit = t.settings.limits.points_max;
    for points in [json!(0), json!(-5), json!(points_limit + 1), json!(2.5), json!("7"), json!(null)] {
        let (status, body) = post(
            &t,
            &token,
            &format!("/admin/api/v1/members/{id}/points/grants"),
            &key(),
            json!({"points": points, "expiry": {"kind": "never"}, "reason": "x"}),
        )
        .await;
        assert!(status.is_client_error(), "points {points}: {status} {body}");
    }
    // Exactly at the limit is fine.
    let (status, body) = deposit(&t, &token, &id, limit).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(event_count(&t, "s0", &id).await, 2);
    // A missing idempotency key is refused too.
    let res = t
        .http
        .post(t.url(&format!("/admin/api/v1/members/{id}/cash/deposits")))
        .bearer_auth(&token)
        .json(&json!({"amount_fen": 1, "reason": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(event_count(&t, "s0", &id).await, 2);
    t.stop().await;
}

#[tokio::test]
async fn tenants_cannot_reach_each_other_across_or_within_shards() {
    let mut settings = fresh_settings(2).await;
    settings.tenant_shards.insert("cinema-b".into(), "s1".into());
    let t = spawn_app_on(settings).await;
    let token_a = tenant_with_admin(&t, "cinema-a", "owner", Role::Owner).await;
    let token_b = tenant_with_admin(&t, "cinema-b", "owner", Role::Owner).await; // on shard s1
    let token_c = tenant_with_admin(&t, "cinema-c", "owner", Role::Owner).await; // shares s0 with A
    let member_a = register(&t, &token_a, Some("oWx_tenant_a_member")).await;
    let id = member_a["member_id"].as_str().unwrap().to_owned();
    let card = member_a["card_no"].as_str().unwrap().to_owned();
    assert_eq!(deposit(&t, &token_a, &id, 500).await.0, StatusCode::OK);

    for token in [&token_b, &token_c] {
        for path in [
            format!("/admin/api/v1/members/{id}"),
            format!("/admin/api/v1/members/{id}/ledger"),
            format!("/admin/api/v1/members/by-card/{card}"),
            "/admin/api/v1/members/by-openid/oWx_tenant_a_member".to_owned(),
        ] {
            let (status, _) = get(&t, token, &path).await;
            assert!(status == StatusCode::NOT_FOUND || status == StatusCode::FORBIDDEN, "{path}: {status}");
        }
        let (status, _) = post(
            &t,
            token,
            &format!("/admin/api/v1/members/{id}/cash/charges"),
            &key(),
            json!({"amount_fen": 100, "reason": "steal"}),
        )
        .await;
        assert!(status == StatusCode::NOT_FOUND || status == StatusCode::FORBIDDEN, "charge: {status}");
    }
    let (_, view) = get(&t, &token_a, &format!("/admin/api/v1/members/{id}")).await;
    assert_eq!(view["balance_fen"], 500);
    assert_eq!(event_count(&t, "s0", &id).await, 2);

    // Tenant B's data lives in shard s1 only.
    let member_b = register(&t, &token_b, None).await;
    let id_b = member_b["member_id"].as_str().unwrap().to_owned();
    assert_eq!(event_count(&t, "s1", &id_b).await, 1);
    assert_eq!(event_count(&t, "s0", &id_b).await, 0);
    t.stop().await;
}

#[tokio::test]
async fn roles_reach_only_what_they_should() {
    let t = spawn_app().await;
    let owner = tenant_with_admin(&t, "cinema-a", "owner", Role::Owner).await;
    let staff = tenant_with_admin(&t, "cinema-a", "staff1", Role::Staff).await;
    let auditor = tenant_with_admin(&t, "cinema-a", "auditor1", Role::Auditor).await;
    let id = register(&t, &owner, None).await["member_id"].as_str().unwrap().to_owned();
    // Staff may deposit and charge but not grant points or change card level.
    assert_eq!(deposit(&t, &staff, &id, 100).await.0, StatusCode::OK);
    let (s, _) = post(
        &t,
        &staff,
        &format!("/admin/api/v1/members/{id}/points/grants"),
        &key(),
        json!({"points": 5, "expiry": {"kind": "never"}, "reason": "x"}),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // The auditor reads but never writes.
    let (s, _) = get(&t, &auditor, &format!("/admin/api/v1/members/{id}/ledger")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(deposit(&t, &auditor, &id, 100).await.0, StatusCode::FORBIDDEN);
    // No token, or a forged one → 401.
    let res = t.http.get(t.url(&format!("/admin/api/v1/members/{id}"))).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let (s, _) = get(&t, "cinema-a.forged", &format!("/admin/api/v1/members/{id}")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(event_count(&t, "s0", &id).await, 2);
    t.stop().await;
}

#[tokio::test]
async fn ledger_history_shows_balance_after_each_entry() {
    let t = spawn_app().await;
    let token = tenant_with_admin(&t, "cinema-a", "owner", Role::Owner).await;
    let id = register(&t, &token, None).await["member_id"].as_str().unwrap().to_owned();
    deposit(&t, &token, &id, 1000).await;
    post(
        &t,
        &token,
        &format!("/admin/api/v1/members/{id}/cash/charges"),
        &key(),
        json!({"amount_fen": 300, "reason": "ticket"}),
    )
    .await;
    post(
        &t,
        &token,
        &format!("/admin/api/v1/members/{id}/points/grants"),
        &key(),
        json!({"points": 50, "expiry": {"kind": "days", "days": 30}, "reason": "welcome"}),
    )
    .await;
    let (s, page) = get(&t, &token, &format!("/admin/api/v1/members/{id}/ledger?limit=10")).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    let entries = page["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 4);
    assert_eq!(entries[1]["balance_after_fen"], 1000);
    assert_eq!(entries[2]["cash_delta_fen"], -300);
    assert_eq!(entries[2]["balance_after_fen"], 700);
    assert_eq!(entries[3]["points_after"], 50);
    let (_, page2) = get(&t, &token, &format!("/admin/api/v1/members/{id}/ledger?after=2&limit=1")).await;
    assert_eq!(page2["entries"].as_array().unwrap().len(), 1);
    assert_eq!(page2["entries"][0]["sequence"], 3);
    t.stop().await;
}

#[tokio::test]
async fn the_app_role_cannot_rewrite_history() {
    let t = spawn_app().await;
    let token = tenant_with_admin(&t, "cinema-a", "owner", Role::Owner).await;
    let id = register(&t, &token, None).await["member_id"].as_str().unwrap().to_owned();
    let url = &t.settings.shards["s0"].url;
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let update = sqlx::query("UPDATE events SET payload = '{}' WHERE aggregate_id = $1").bind(&id).execute(&pool).await;
    assert!(update.is_err(), "wxcm_app must not UPDATE events");
    let delete = sqlx::query("DELETE FROM events WHERE aggregate_id = $1").bind(&id).execute(&pool).await;
    assert!(delete.is_err(), "wxcm_app must not DELETE events");
    assert_eq!(event_count(&t, "s0", &id).await, 1);
    t.stop().await;
}
