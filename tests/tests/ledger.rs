//! The member ledger through the admin API, against the real Postgres. Ledger
//! pages come from the read model: those tests also run the relay and the member
//! projector (NATS) and catch up before they read.

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{json, Value};
use wxcm_commands::ports::Role;
use wxcm_commands::{auth, tenants, CommandContext};
use wxcm_domain::{Actor, MemberId, TenantId};
use wxcm_tests::{
    fresh_settings, spawn_app, spawn_app_on, spawn_app_with_projections, spawn_app_with_projections_on, TestApp,
};

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
    // serde reads a JSON array into a struct in field order: anything but an object is refused.
    for (path, body) in [
        ("cash/deposits", json!([100, "array body", null])),
        ("cash/charges", json!([1, "array body", null])),
        ("points/grants", json!([5, {"kind": "never"}, "array body", null])),
        ("cash/deposits", json!("a string")),
        ("cash/deposits", json!(100)),
    ] {
        let (status, reply) = post(&t, &token, &format!("/admin/api/v1/members/{id}/{path}"), &key(), body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path}: {reply}");
        assert_eq!(reply["error"]["code"], "invalid_body", "{reply}");
    }
    let (status, reply) = post(&t, &token, "/admin/api/v1/members", &key(), json!([null, "staff"])).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "register: {reply}");
    assert_eq!(event_count(&t, "s0", &id).await, 1, "nothing written");
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
    let t = spawn_app_with_projections().await;
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
    // Nothing projected yet: the member exists (the store says so), its ledger is not there yet.
    let (s, page) = get(&t, &token, &format!("/admin/api/v1/members/{id}/ledger")).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert_eq!(page["entries"], json!([]));
    assert_eq!(page["projected_through_sequence"], 0);
    assert_eq!(page["next_after"], Value::Null);

    t.catch_up().await;
    let (s, page) = get(&t, &token, &format!("/admin/api/v1/members/{id}/ledger?limit=10")).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    // The registration moved neither points nor cash: it has no line in the read model.
    let entries = page["entries"].as_array().unwrap();
    let sequences: Vec<_> = entries.iter().map(|e| e["sequence"].as_i64().unwrap()).collect();
    assert_eq!(sequences, vec![2, 3, 4]);
    assert_eq!(page["projected_through_sequence"], 4);
    assert_eq!(page["next_after"], Value::Null);
    assert_eq!(entries[0]["event_type"], "CashDeposited");
    assert_eq!(entries[0]["balance_after_fen"], 1000);
    assert_eq!(entries[0]["points_after"], Value::Null);
    assert_eq!(entries[1]["cash_delta_fen"], -300);
    assert_eq!(entries[1]["balance_after_fen"], 700);
    assert_eq!(entries[1]["reason"], "ticket");
    assert!(entries[1]["recorded_at"].is_string(), "{page}");
    assert_eq!(entries[2]["points_delta"], 50);
    assert_eq!(entries[2]["points_after"], 50);
    assert_eq!(entries[2]["balance_after_fen"], Value::Null);
    let (_, page2) = get(&t, &token, &format!("/admin/api/v1/members/{id}/ledger?after=2&limit=1")).await;
    assert_eq!(page2["entries"].as_array().unwrap().len(), 1);
    assert_eq!(page2["entries"][0]["sequence"], 3);
    assert_eq!(page2["next_after"], 3);
    t.stop().await;
}

#[tokio::test]
async fn ledger_pages_come_from_the_read_model_of_the_own_tenant_only() {
    let mut settings = fresh_settings(2).await;
    settings.tenant_shards.insert("cinema-b".into(), "s1".into());
    let t = spawn_app_with_projections_on(settings).await;
    let token_a = tenant_with_admin(&t, "cinema-a", "owner", Role::Owner).await;
    let token_b = tenant_with_admin(&t, "cinema-b", "owner", Role::Owner).await; // on shard s1
    let token_c = tenant_with_admin(&t, "cinema-c", "owner", Role::Owner).await; // shares s0 with A
    let id = register(&t, &token_a, None).await["member_id"].as_str().unwrap().to_owned();
    for fen in [100, 200, 300, 400, 500] {
        assert_eq!(deposit(&t, &token_a, &id, fen).await.0, StatusCode::OK);
    }
    // Tenant C has a member with lines on the same shard; they never show up for A.
    let id_c = register(&t, &token_c, None).await["member_id"].as_str().unwrap().to_owned();
    assert_eq!(deposit(&t, &token_c, &id_c, 900).await.0, StatusCode::OK);
    t.catch_up().await;

    // Keyset pages of two over the five deposits (sequences 2..=6).
    let ledger = |after: u64| format!("/admin/api/v1/members/{id}/ledger?after={after}&limit=2");
    let mut pages = Vec::new();
    let mut after = Some(0);
    while let Some(a) = after {
        let (s, page) = get(&t, &token_a, &ledger(a)).await;
        assert_eq!(s, StatusCode::OK, "{page}");
        assert_eq!(page["projected_through_sequence"], 6);
        let sequences: Vec<_> =
            page["entries"].as_array().unwrap().iter().map(|e| e["sequence"].as_i64().unwrap()).collect();
        let balances: Vec<_> =
            page["entries"].as_array().unwrap().iter().map(|e| e["balance_after_fen"].as_i64().unwrap()).collect();
        pages.push((sequences, balances));
        after = page["next_after"].as_u64();
        assert!(pages.len() <= 3, "pages never end: {pages:?}");
    }
    assert_eq!(pages, vec![(vec![2, 3], vec![100, 300]), (vec![4, 5], vec![600, 1000]), (vec![6], vec![1500])]);
    let (_, page) = get(&t, &token_a, &ledger(6)).await;
    assert_eq!((page["entries"].clone(), page["next_after"].clone()), (json!([]), Value::Null));

    // A command the projector has not seen yet: the page says how far it got.
    assert_eq!(deposit(&t, &token_a, &id, 600).await.0, StatusCode::OK);
    let (_, page) = get(&t, &token_a, &ledger(5)).await;
    assert_eq!((page["entries"].as_array().unwrap().len(), page["projected_through_sequence"].as_i64()), (1, Some(6)));
    t.catch_up().await;
    let (_, page) = get(&t, &token_a, &ledger(5)).await;
    assert_eq!((page["entries"].as_array().unwrap().len(), page["projected_through_sequence"].as_i64()), (2, Some(7)));

    // Another tenant's token, on another shard or on the same one: 404, as for an unknown member.
    for token in [&token_b, &token_c] {
        let (s, body) = get(&t, token, &format!("/admin/api/v1/members/{id}/ledger")).await;
        assert_eq!((s, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("member_not_found")), "{body}");
    }
    let unknown = MemberId::new_random();
    let (s, body) = get(&t, &token_a, &format!("/admin/api/v1/members/{unknown}/ledger")).await;
    assert_eq!((s, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("member_not_found")), "{body}");

    // The query itself is bound to the tenant: C asking the read model for A's member gets nothing.
    let tenant_c = TenantId::parse("cinema-c").unwrap();
    let member_a = MemberId::parse(&id).unwrap();
    let shard = t.app.router.route(&tenant_c).unwrap();
    let page = shard.read_models.member_ledger(&tenant_c, member_a, 0, 200).await.unwrap();
    assert_eq!((page.lines.len(), page.projected_through_sequence), (0, 0));
    let tenant_a = TenantId::parse("cinema-a").unwrap();
    let page = shard.read_models.member_ledger(&tenant_a, member_a, 0, 200).await.unwrap();
    assert_eq!((page.lines.len(), page.projected_through_sequence), (6, 7));
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
