//! Card levels end to end through the HTTP API, against the real Postgres (two
//! shards): the catalog's edits (validation that changes nothing, revisions
//! that refuse a stale edit, roles), the rule upgrading a member once when 20
//! concurrent grants cross a threshold together, an upgrade by total paid that
//! a refund does not take back, a level set by hand that the rule keeps, the
//! member's own view, and tenants kept apart.

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{json, Value};
use wxcm_commands::pay_flows::MemberSession;
use wxcm_commands::ports::Role;
use wxcm_commands::{auth, members, tenants, CommandContext};
use wxcm_domain::member::{Member, MemberEvent};
use wxcm_domain::{Actor, AppId, EventSourced, MemberId, OpenId, TenantId};
use wxcm_tests::{spawn_app, TestApp};

const PASSWORD: &str = "a-long-enough-password";

struct Merchant {
    tenant: TenantId,
    owner: String,
}

async fn merchant(t: &TestApp, tenant: &str) -> Merchant {
    let tenant_id = TenantId::parse(tenant).unwrap();
    let key = members::system_key(&["test-tenant", tenant]).unwrap();
    let ctx = CommandContext::new(tenant_id.clone(), key, "test".into());
    tenants::create(&t.app, &tenant_id, "Levels", Actor::Admin { username: "test".into() }, &ctx).await.unwrap();
    Merchant { owner: user(t, &tenant_id, "owner", Role::Owner).await, tenant: tenant_id }
}

async fn user(t: &TestApp, tenant: &TenantId, username: &str, role: Role) -> String {
    auth::create_admin(&t.app, tenant, username, PASSWORD, role).await.unwrap();
    let body = json!({"tenant_id": tenant.as_str(), "username": username, "password": PASSWORD});
    let res = t.http.post(t.url("/admin/api/v1/login")).json(&body).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    res.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned()
}

fn key() -> String {
    format!("test-{}", uuid::Uuid::new_v4())
}

async fn send(req: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let res = req.send().await.unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn post(t: &TestApp, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
    send(t.http.post(t.url(path)).bearer_auth(token).header("Idempotency-Key", key()).json(&body)).await
}

async fn put_keyed(t: &TestApp, token: &str, path: &str, key: &str, body: Value) -> (StatusCode, Value) {
    send(t.http.put(t.url(path)).bearer_auth(token).header("Idempotency-Key", key).json(&body)).await
}

async fn put(t: &TestApp, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
    put_keyed(t, token, path, &key(), body).await
}

async fn get(t: &TestApp, token: &str, path: &str) -> (StatusCode, Value) {
    send(t.http.get(t.url(path)).bearer_auth(token)).await
}

fn level(name: &str, threshold: Value) -> Value {
    json!({"name": name, "image_url": format!("https://img.example.com/{}.png", name.len()),
        "colour": "#C0A060", "privileges": format!("{name}:\n9.5 折"), "threshold": threshold})
}

fn points(n: i64) -> Value {
    json!({"kind": "lifetime_points", "points": n})
}

fn paid(fen: i64) -> Value {
    json!({"kind": "total_paid", "fen": fen})
}

/// Sets the catalog on the revision in force.
async fn set_catalog(t: &TestApp, m: &Merchant, levels: Vec<Value>, downgrade: &str) -> Value {
    let (_, current) = get(t, &m.owner, "/admin/api/v1/card-levels").await;
    let body = json!({"revision": current["revision"], "levels": levels, "downgrade": downgrade});
    let (status, set) = put(t, &m.owner, "/admin/api/v1/card-levels", body).await;
    assert_eq!(status, StatusCode::OK, "{set}");
    set
}

async fn register(t: &TestApp, m: &Merchant, openid: &str) -> String {
    let (status, member) = post(t, &m.owner, "/admin/api/v1/members", json!({"openid": openid})).await;
    assert!(status == StatusCode::CREATED || status == StatusCode::OK, "{status} {member}");
    member["member_id"].as_str().unwrap().to_owned()
}

async fn grant(t: &TestApp, token: &str, member: &str, points: i64) -> (StatusCode, Value) {
    let body = json!({"points": points, "expiry": {"kind": "never"}, "reason": "test"});
    post(t, token, &format!("/admin/api/v1/members/{member}/points/grants"), body).await
}

async fn cash(t: &TestApp, m: &Merchant, member: &str, op: &str, body: Value) -> Value {
    let (status, answer) = post(t, &m.owner, &format!("/admin/api/v1/members/{member}/cash/{op}"), body).await;
    assert_eq!(status, StatusCode::OK, "{op}: {answer}");
    answer
}

async fn card_level(t: &TestApp, m: &Merchant, member: &str) -> String {
    let (status, view) = get(t, &m.owner, &format!("/admin/api/v1/members/{member}")).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    view["card_level"].as_str().unwrap().to_owned()
}

/// The member's `CardLevelChanged` events from its stream: (from, to, by rule).
async fn level_changes(t: &TestApp, m: &Merchant, member: &str) -> Vec<(String, String, bool)> {
    let shard = t.app.router.route(&m.tenant).unwrap();
    let logged = shard.event_log.read_range(Member::TYPE, member, 1, u64::MAX >> 1, 10_000).await.unwrap();
    logged
        .into_iter()
        .filter_map(|l| match serde_json::from_value::<MemberEvent>(l.payload).unwrap() {
            MemberEvent::CardLevelChanged { from, to, source, .. } => {
                Some((from.as_str().to_owned(), to.as_str().to_owned(), !source.is_manual()))
            }
            _ => None,
        })
        .collect()
}

/// A member API session for `member`.
async fn member_session(t: &TestApp, m: &Merchant, member: &str, openid: &str) -> String {
    let token = format!("{}.{}", m.tenant, uuid::Uuid::new_v4().simple());
    let session = MemberSession {
        tenant_id: m.tenant.clone(),
        member_id: MemberId::parse(member).unwrap(),
        appid: AppId::parse("wx00000000000c0ffe").unwrap(),
        openid: OpenId::parse(openid).unwrap(),
        expires_at: t.app.clock.now() + chrono::Duration::days(2),
    };
    let shard = t.app.router.route(&m.tenant).unwrap();
    shard.pay.create_member_session(&auth::token_hash(&token), &session).await.unwrap();
    token
}

#[tokio::test]
async fn the_catalog_is_validated_whole_revisioned_and_role_checked() {
    let t = spawn_app().await;
    let m = merchant(&t, "levels-crud").await;
    let manager = user(&t, &m.tenant, "manager", Role::Manager).await;
    let staff = user(&t, &m.tenant, "staff", Role::Staff).await;
    let auditor = user(&t, &m.tenant, "auditor", Role::Auditor).await;
    let path = "/admin/api/v1/card-levels";

    let (status, empty) = get(&t, &m.owner, path).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(empty, json!({"revision": 0, "levels": [], "downgrade": "never"}));

    // Bad shapes and bad catalogs: 4xx, and nothing changes.
    let good = || vec![level("普卡", Value::Null), level("银卡", points(1_000)), level("金卡", paid(100_000))];
    let mut bad_colour = level("x", Value::Null);
    bad_colour["colour"] = json!("gold");
    let mut bad_image = level("x", Value::Null);
    bad_image["image_url"] = json!("javascript:alert(1)");
    let mut extra = level("x", Value::Null);
    extra["discount"] = json!(5);
    let too_many: Vec<Value> = (0..33).map(|i| level(&format!("l{i}"), Value::Null)).collect();
    let bad_bodies = [
        json!([good()]),
        json!({"revision": 0}),
        json!({"revision": 0, "levels": []}),
        json!({"revision": 0, "levels": too_many}),
        json!({"revision": 0, "levels": [level("a", Value::Null), level("a", points(5))]}),
        json!({"revision": 0, "levels": [level("a", points(500)), level("b", points(100))]}),
        json!({"revision": 0, "levels": [level("a", points(0))]}),
        json!({"revision": 0, "levels": [level("a", json!({"kind": "visits", "count": 3}))]}),
        json!({"revision": 0, "levels": [bad_colour]}),
        json!({"revision": 0, "levels": [bad_image]}),
        json!({"revision": 0, "levels": [extra]}),
        json!({"revision": 0, "levels": [level("", Value::Null)]}),
        json!({"revision": -1, "levels": good()}),
        json!({"revision": 0, "levels": good(), "downgrade": "sometimes"}),
    ];
    for body in bad_bodies {
        let (status, answer) = put(&t, &m.owner, path, body.clone()).await;
        assert!(status.is_client_error(), "{body}: {status} {answer}");
        assert_ne!(status, StatusCode::CONFLICT, "{body}: {answer}");
    }
    assert_eq!(get(&t, &m.owner, path).await.1, empty, "a refused edit changed nothing");
    let (status, answer) = put(&t, &m.owner, path, json!({"revision": 0, "levels": [level("a", points(5))]})).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (StatusCode::OK, None), "{answer}");
    assert_eq!(answer["revision"], 1);

    // Staff and auditors read, only owners and managers write.
    for token in [&staff, &auditor, &manager] {
        assert_eq!(get(&t, token, path).await.0, StatusCode::OK);
    }
    let next = json!({"revision": 1, "levels": good(), "downgrade": "rule_levels_only"});
    for token in [&staff, &auditor] {
        assert_eq!(put(&t, token, path, next.clone()).await.0, StatusCode::FORBIDDEN);
    }
    let edit_key = key();
    let (status, set) = put_keyed(&t, &manager, path, &edit_key, next.clone()).await;
    assert_eq!(status, StatusCode::OK, "{set}");
    assert_eq!(set["revision"], 2);
    assert_eq!(set["levels"], json!(good()));
    assert_eq!(set["downgrade"], "rule_levels_only");
    // The same request again replays; another edit of revision 1 is stale.
    let (status, again) = put_keyed(&t, &manager, path, &edit_key, next.clone()).await;
    assert_eq!((status, &again), (StatusCode::OK, &set));
    let stale = json!({"revision": 1, "levels": [level("only", Value::Null)]});
    let (status, answer) = put(&t, &m.owner, path, stale).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("card_levels_changed")));
    let (status, answer) = put_keyed(&t, &m.owner, path, &edit_key, json!({"revision": 2, "levels": good()})).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("idempotency_key_reused")));
    let res = t.http.put(t.url(path)).bearer_auth(&m.owner).json(&next).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST, "no Idempotency-Key");
    assert_eq!(get(&t, &auditor, path).await.1, set);
    t.stop().await;
}

#[tokio::test]
async fn twenty_concurrent_grants_crossing_a_threshold_upgrade_once() {
    let t = spawn_app().await;
    let m = merchant(&t, "levels-race").await;
    set_catalog(&t, &m, vec![level("standard", Value::Null), level("silver", points(100))], "never").await;
    let member = register(&t, &m, "oLevelsRace0001").await;
    assert_eq!(grant(&t, &m.owner, &member, 95).await.0, StatusCode::OK);
    assert_eq!(card_level(&t, &m, &member).await, "standard");

    let grants = (0..20).map(|_| grant(&t, &m.owner, &member, 5));
    for (status, answer) in join_all(grants).await {
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    assert_eq!(level_changes(&t, &m, &member).await, vec![("standard".into(), "silver".into(), true)]);
    assert_eq!(card_level(&t, &m, &member).await, "silver");
    let (_, view) = get(&t, &m.owner, &format!("/admin/api/v1/members/{member}")).await;
    assert_eq!(view["lifetime_points"], 195);
    t.stop().await;
}

#[tokio::test]
async fn total_paid_upgrades_and_a_refund_does_not_take_it_back() {
    let t = spawn_app().await;
    let m = merchant(&t, "levels-paid").await;
    let catalog = vec![level("standard", Value::Null), level("silver", points(1_000)), level("gold", paid(50_000))];
    set_catalog(&t, &m, catalog, "never").await;
    let openid = "oLevelsPaid0001";
    let member = register(&t, &m, openid).await;
    let session = member_session(&t, &m, &member, openid).await;

    let (status, mine) = get(&t, &session, "/m/api/v1/card-level").await;
    assert_eq!(status, StatusCode::OK, "{mine}");
    assert_eq!(mine["card_level"], "standard");
    assert_eq!(mine["source"], "manual");
    assert_eq!(mine["level"]["name"], "standard");
    assert_eq!(mine["next"]["level"]["name"], "silver");
    assert_eq!((mine["next"]["missing_points"].as_i64(), mine["next"]["missing_fen"].as_i64()), (Some(1_000), None));

    cash(&t, &m, &member, "deposits", json!({"amount_fen": 100_000, "reason": "deposit"})).await;
    let first = cash(&t, &m, &member, "charges", json!({"amount_fen": 30_000, "reason": "dinner"})).await;
    assert_eq!(first["entries"].as_array().unwrap().len(), 1, "{first}");
    let second = cash(&t, &m, &member, "charges", json!({"amount_fen": 20_000, "reason": "dinner"})).await;
    let types: Vec<&str> =
        second["entries"].as_array().unwrap().iter().map(|e| e["event_type"].as_str().unwrap()).collect();
    assert_eq!(types, ["CashCharged", "CardLevelChanged"], "{second}");
    assert_eq!(card_level(&t, &m, &member).await, "gold");

    // A refund lowers the total paid; the tenant never downgrades.
    let sequence = second["entries"][0]["sequence"].as_u64().unwrap();
    let refund = json!({"charge_sequence": sequence, "amount_fen": 10_000, "reason": "returned"});
    cash(&t, &m, &member, "refunds", refund).await;
    assert_eq!(card_level(&t, &m, &member).await, "gold");
    assert_eq!(level_changes(&t, &m, &member).await, vec![("standard".into(), "gold".into(), true)]);

    let (_, mine) = get(&t, &session, "/m/api/v1/card-level").await;
    assert_eq!(mine["card_level"], "gold");
    assert_eq!(mine["source"], "rule");
    assert_eq!(mine["level"]["privileges"], "gold:\n9.5 折");
    assert_eq!(mine["level"]["threshold"], paid(50_000));
    assert_eq!(mine["total_paid_fen"], 40_000);
    assert_eq!(mine["next"], Value::Null);
    t.stop().await;
}

#[tokio::test]
async fn a_level_set_by_hand_is_kept_by_the_rule() {
    let t = spawn_app().await;
    let m = merchant(&t, "levels-manual").await;
    let catalog = vec![
        level("standard", Value::Null),
        level("silver", points(100)),
        level("gold", points(1_000)),
        level("vip", Value::Null),
    ];
    set_catalog(&t, &m, catalog, "rule_levels_only").await;
    let member = register(&t, &m, "oLevelsManual01").await;
    let set = |level: &str| json!({"card_level": level, "reason": "regular guest"});
    let path = format!("/admin/api/v1/members/{member}/card-level");

    // A level the catalog does not have is refused while it has one.
    let (status, answer) = put(&t, &m.owner, &path, set("platinum")).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("unknown_card_level")));
    let (status, answer) = put(&t, &m.owner, &path, set("vip")).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // Points that reach silver neither move a staff-only top level down …
    assert_eq!(grant(&t, &m.owner, &member, 150).await.0, StatusCode::OK);
    assert_eq!(card_level(&t, &m, &member).await, "vip");
    // … nor a hand-set level the figures are below.
    let (status, _) = put(&t, &m.owner, &path, set("gold")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(grant(&t, &m.owner, &member, 10).await.0, StatusCode::OK);
    assert_eq!(card_level(&t, &m, &member).await, "gold");
    assert_eq!(
        level_changes(&t, &m, &member).await,
        vec![("standard".into(), "vip".into(), false), ("vip".into(), "gold".into(), false)]
    );
    t.stop().await;
}

#[tokio::test]
async fn tenants_keep_their_catalogs_and_members_apart() {
    let t = spawn_app().await;
    let a = merchant(&t, "levels-a").await;
    let b = merchant(&t, "levels-b").await;
    set_catalog(&t, &a, vec![level("standard", Value::Null), level("silver", points(10))], "never").await;
    let member = register(&t, &a, "oLevelsTenantA1").await;

    let (status, theirs) = get(&t, &b.owner, "/admin/api/v1/card-levels").await;
    assert_eq!((status, theirs["revision"].as_u64()), (StatusCode::OK, Some(0)));
    set_catalog(&t, &b, vec![level("bronze", Value::Null), level("silver", points(1))], "always").await;
    let (_, ours) = get(&t, &a.owner, "/admin/api/v1/card-levels").await;
    assert_eq!((ours["revision"].as_u64(), ours["levels"][0]["name"].as_str()), (Some(1), Some("standard")));

    // B can neither set nor earn a level for A's member.
    let path = format!("/admin/api/v1/members/{member}/card-level");
    let (status, _) = put(&t, &b.owner, &path, json!({"card_level": "bronze", "reason": "x"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(grant(&t, &b.owner, &member, 50).await.0, StatusCode::NOT_FOUND);
    assert!(level_changes(&t, &a, &member).await.is_empty());
    // A's grant is judged by A's catalog.
    assert_eq!(grant(&t, &a.owner, &member, 10).await.0, StatusCode::OK);
    assert_eq!(level_changes(&t, &a, &member).await, vec![("standard".into(), "silver".into(), true)]);
    t.stop().await;
}

#[tokio::test]
async fn rule_changes_reach_the_read_models_and_reconcile() {
    let t = wxcm_tests::spawn_app_with_projections().await;
    let m = merchant(&t, "levels-report").await;
    let catalog = vec![level("standard", Value::Null), level("silver", points(50)), level("gold", paid(1_000))];
    set_catalog(&t, &m, catalog, "rule_levels_only").await;
    let first = register(&t, &m, "oLevelsReport01").await;
    let second = register(&t, &m, "oLevelsReport02").await;
    register(&t, &m, "oLevelsReport03").await;
    assert_eq!(grant(&t, &m.owner, &first, 60).await.0, StatusCode::OK);
    cash(&t, &m, &second, "deposits", json!({"amount_fen": 5_000, "reason": "deposit"})).await;
    let charge = cash(&t, &m, &second, "charges", json!({"amount_fen": 1_000, "reason": "dinner"})).await;
    let sequence = charge["entries"][0]["sequence"].as_u64().unwrap();
    // The rule gave gold; a refund below its threshold takes it back (rule_levels_only).
    let refund = json!({"charge_sequence": sequence, "amount_fen": 500, "reason": "returned"});
    cash(&t, &m, &second, "refunds", refund).await;
    assert_eq!(card_level(&t, &m, &second).await, "standard");
    t.catch_up().await;

    let day = t.app.clock.now().date_naive();
    let (from, to) = (day.pred_opt().unwrap(), day.succ_opt().unwrap());
    let (status, report) = get(&t, &m.owner, &format!("/admin/api/v1/reports/daily-ops?from={from}&to={to}")).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let mut by_level: Vec<(String, i64)> = report["members_by_card_level"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["card_level"].as_str().unwrap().to_owned(), c["members"].as_i64().unwrap()))
        .filter(|(_, n)| *n != 0)
        .collect();
    by_level.sort();
    assert_eq!(by_level, vec![("silver".to_owned(), 1), ("standard".to_owned(), 2)]);
    let report = wxcm_ops::reconcile::reconcile(&t.settings, &m.tenant).await.unwrap();
    assert!(report.is_clean(), "{report:#?}");
    wxcm_server::projection_ops::rebuild(&t.settings, "members", None).await.unwrap();
    let report = wxcm_ops::reconcile::reconcile(&t.settings, &m.tenant).await.unwrap();
    assert!(report.is_clean(), "after a rebuild: {report:#?}");
    t.stop().await;
}
