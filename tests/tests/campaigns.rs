//! Shake lotteries end to end through the HTTP API, against the real
//! Postgres, two shards: never more prizes than stock under 500 concurrent
//! shakes, one member's concurrent shakes within their chances, prizes issued
//! once, bad input that changes nothing, the scheduler's start and end with
//! the seed's reveal, and `audit draw` clean on a finished campaign but not on
//! a tampered one.

use std::collections::HashMap;

use futures::stream::{self, StreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};
use wxcm_commands::pay_flows::MemberSession;
use wxcm_commands::ports::Role;
use wxcm_commands::{auth, members, scheduler, tenants, CommandContext};
use wxcm_domain::campaign::{CampaignId, DrawSeed};
use wxcm_domain::member::{CardLevel, RegistrationSource};
use wxcm_domain::{Actor, AppId, MemberId, OpenId, TenantId};
use wxcm_tests::{fresh_settings, settings_file, spawn_app, spawn_app_on, wxcm_bin, TestApp};

const PASSWORD: &str = "a-long-enough-password";
const POINTS_PRIZE: i64 = 5;

struct Merchant {
    tenant: TenantId,
    owner: String,
}

async fn merchant(t: &TestApp, tenant: &str) -> Merchant {
    let tenant_id = TenantId::parse(tenant).unwrap();
    let key = members::system_key(&["test-tenant", tenant]).unwrap();
    let ctx = CommandContext::new(tenant_id.clone(), key, "test".into());
    tenants::create(&t.app, &tenant_id, "Test Shop", Actor::Admin { username: "test".into() }, &ctx).await.unwrap();
    auth::create_admin(&t.app, &tenant_id, "owner", PASSWORD, Role::Owner).await.unwrap();
    let body = json!({"tenant_id": tenant, "username": "owner", "password": PASSWORD});
    let res = t.http.post(t.url("/admin/api/v1/login")).json(&body).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let owner = res.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned();
    Merchant { tenant: tenant_id, owner }
}

fn key() -> String {
    format!("test-{}", uuid::Uuid::new_v4())
}

async fn send(req: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let res = req.send().await.unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn post(t: &TestApp, token: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let req = t.http.post(t.url(path)).bearer_auth(token).header("Idempotency-Key", key());
    send(match body {
        Some(body) => req.json(&body),
        None => req,
    })
    .await
}

async fn get(t: &TestApp, token: &str, path: &str) -> (StatusCode, Value) {
    send(t.http.get(t.url(path)).bearer_auth(token)).await
}

/// A registered member with a member-API session.
async fn member(t: &TestApp, m: &Merchant, n: usize) -> (MemberId, String) {
    let openid = OpenId::parse(&format!("oShake_{n:08}")).unwrap();
    let request = members::RegisterRequest {
        openid: Some(openid.clone()),
        source: RegistrationSource::Staff,
        card_level: CardLevel::standard(),
    };
    let key = members::system_key(&["test-member", m.tenant.as_str(), &n.to_string()]).unwrap();
    let ctx = CommandContext::new(m.tenant.clone(), key, "test".into());
    let admin = Actor::Admin { username: "t".into() };
    let (view, _) = members::register(&t.app, &m.tenant, request, admin, &ctx).await.unwrap();
    let token = format!("{}.{}", m.tenant, uuid::Uuid::new_v4().simple());
    let session = MemberSession {
        tenant_id: m.tenant.clone(),
        member_id: view.member_id,
        appid: AppId::parse("wx00000000000c0ffe").unwrap(),
        openid,
        expires_at: t.app.clock.now() + chrono::Duration::days(30),
    };
    let shard = t.app.router.route(&m.tenant).unwrap();
    shard.pay.create_member_session(&auth::token_hash(&token), &session).await.unwrap();
    (view.member_id, token)
}

/// A shake lottery body: one points prize with `stock`, and thanks.
fn lottery(t: &TestApp, stock: i64, lifetime: i64, k: i64) -> Value {
    let now = t.app.clock.now();
    json!({
        "name": "Spring shake",
        "starts_at": now + chrono::Duration::hours(1),
        "ends_at": now + chrono::Duration::days(2),
        "chances": {"lifetime": lifetime},
        "prizes_per_member_max": k,
        "slots": [
            {"prize": {"kind": "points", "points": POINTS_PRIZE}, "weight": 50, "stock": stock},
            {"prize": {"kind": "thanks"}, "weight": 50},
        ],
    })
}

/// Creates and schedules a lottery, then lets the scheduler start it an hour later.
async fn ongoing_lottery(t: &TestApp, m: &Merchant, body: Value) -> String {
    let (status, created) = post(t, &m.owner, "/admin/api/v1/campaigns", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["status"], "draft");
    let id = created["campaign_id"].as_str().unwrap().to_owned();
    let (status, scheduled) = post(t, &m.owner, &format!("/admin/api/v1/campaigns/{id}/schedule"), None).await;
    assert_eq!(status, StatusCode::OK, "{scheduled}");
    assert_eq!(scheduled["status"], "scheduled");
    assert_eq!(scheduled["commitment"].as_str().unwrap().len(), 64);
    assert!(scheduled["revealed_seed"].is_null());
    t.clock.advance(chrono::Duration::minutes(61));
    step(t, m).await;
    let (_, view) = get(t, &m.owner, &format!("/admin/api/v1/campaigns/{id}")).await;
    assert_eq!(view["status"], "ongoing", "{view}");
    id
}

async fn step(t: &TestApp, m: &Merchant) -> scheduler::StepReport {
    let shard = t.app.router.route(&m.tenant).unwrap();
    let report = scheduler::step(&t.app, &shard).await.unwrap();
    assert_eq!(report.failed, 0, "{report:?}");
    report
}

async fn shake(t: &TestApp, session: &str, id: &str) -> (StatusCode, Value) {
    post(t, session, &format!("/m/api/v1/campaigns/{id}/shakes"), None).await
}

async fn count(t: &TestApp, m: &Merchant, sql: &str) -> i64 {
    let shard = t.app.router.route(&m.tenant).unwrap().name.clone();
    let mut db = t.shard_db(&shard).await;
    sqlx::query_scalar(sql).bind(m.tenant.as_str()).fetch_one(&mut db).await.unwrap()
}

async fn campaign_events(t: &TestApp, m: &Merchant) -> i64 {
    count(t, m, "SELECT count(*) FROM events WHERE tenant_id = $1 AND aggregate_type = 'campaign'").await
}

/// `wxcm --config <file> audit draw --tenant T --campaign C --json`: its exit code and report.
async fn audit_draw_cli(t: &TestApp, m: &Merchant, campaign: &str) -> (Option<i32>, Value) {
    let file = settings_file(&t.settings);
    let output = tokio::process::Command::new(wxcm_bin())
        .arg("--config")
        .arg(file.path())
        .args(["audit", "draw", "--tenant", m.tenant.as_str(), "--campaign", campaign, "--json"])
        .env_remove("WXCM_SECRET_KEY")
        .env_remove("WXCM_CONFIG")
        .output()
        .await
        .expect("wxcm runs");
    drop(file);
    let report = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    (output.status.code(), report)
}

async fn points(t: &TestApp, m: &Merchant, member_id: MemberId) -> i64 {
    members::get(&t.app, &m.tenant, member_id).await.unwrap().points
}

#[tokio::test]
async fn five_hundred_concurrent_shakes_never_give_more_prizes_than_the_stock() {
    let t = spawn_app().await;
    let m = merchant(&t, "shake-crowd").await;
    let id = ongoing_lottery(&t, &m, lottery(&t, 10, 3, 1)).await;
    let mut shakers = Vec::new();
    for n in 0..125 {
        shakers.push(member(&t, &m, n).await);
    }
    // Four shakes per member (one past their three chances), all at once.
    let asks: Vec<(MemberId, String)> = shakers.iter().flat_map(|s| std::iter::repeat_n(s.clone(), 4)).collect();
    assert_eq!(asks.len(), 500);
    let results: Vec<(MemberId, StatusCode, Value)> = stream::iter(asks)
        .map(|(member_id, session)| {
            let t = &t;
            let id = &id;
            async move {
                let (status, body) = shake(t, &session, id).await;
                (member_id, status, body)
            }
        })
        .buffer_unordered(500)
        .collect()
        .await;
    let mut per_member: HashMap<MemberId, (u32, u32)> = HashMap::new();
    let mut won = 0;
    for (member_id, status, body) in &results {
        match *status {
            StatusCode::CREATED => {
                let entry = per_member.entry(*member_id).or_default();
                entry.0 += 1;
                if body["shake"]["won"] == true {
                    won += 1;
                    entry.1 += 1;
                    assert_eq!(body["prize_status"], "issued", "{body}");
                }
            }
            StatusCode::CONFLICT => {
                let code = body["error"]["code"].as_str().unwrap();
                assert!(
                    ["lifetime_limit_reached", "prize_limit_reached", "prizes_exhausted"].contains(&code),
                    "{body}"
                );
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(won <= 10, "{won} prizes from a stock of 10");
    // ~375 shakes at even odds: the stock runs out (a miss has a chance far below 2^-100).
    assert_eq!(won, 10, "{results:?}");
    let (_, view) = get(&t, &m.owner, &format!("/admin/api/v1/campaigns/{id}")).await;
    assert_eq!(view["slots"][0]["stock_left"], 10 - won, "{view}");
    assert_eq!(view["winners"], won);
    let shakes: u32 = per_member.values().map(|(s, _)| s).sum();
    assert_eq!(view["shakes"], shakes);
    for (member_id, session) in &shakers {
        let (shaken, prizes) = per_member.get(member_id).copied().unwrap_or_default();
        assert!(shaken <= 3 && prizes <= 1, "{member_id}: {shaken} shakes, {prizes} prizes");
        let (status, mine) = get(&t, session, &format!("/m/api/v1/campaigns/{id}/shakes")).await;
        assert_eq!(status, StatusCode::OK);
        let nonces: Vec<u64> =
            mine["shakes"].as_array().unwrap().iter().map(|s| s["nonce"].as_u64().unwrap()).collect();
        assert_eq!(nonces, (1..=u64::from(shaken)).collect::<Vec<_>>());
        assert_eq!(points(&t, &m, *member_id).await, i64::from(prizes) * POINTS_PRIZE);
    }
    // The prizes' due work runs again later under the same keys: nothing doubles.
    t.clock.advance(chrono::Duration::minutes(1));
    step(&t, &m).await;
    for (member_id, _) in &shakers {
        let prizes = per_member.get(member_id).map_or(0, |p| p.1);
        assert_eq!(points(&t, &m, *member_id).await, i64::from(prizes) * POINTS_PRIZE);
    }
    t.stop().await;
}

#[tokio::test]
async fn one_member_shaking_twenty_times_at_once_gets_exactly_their_three_chances() {
    let t = spawn_app().await;
    let m = merchant(&t, "shake-eager").await;
    let id = ongoing_lottery(&t, &m, lottery(&t, 1_000, 3, 100)).await;
    let (_, session) = member(&t, &m, 1).await;
    let results: Vec<(StatusCode, Value)> =
        stream::iter(0..20).map(|_| shake(&t, &session, &id)).buffer_unordered(20).collect().await;
    let drawn: Vec<&Value> = results.iter().filter(|(s, _)| *s == StatusCode::CREATED).map(|(_, b)| b).collect();
    assert_eq!(drawn.len(), 3, "{results:?}");
    for (status, body) in &results {
        if *status != StatusCode::CREATED {
            assert_eq!(
                (*status, body["error"]["code"].as_str()),
                (StatusCode::CONFLICT, Some("lifetime_limit_reached"))
            );
        }
    }
    let mut nonces: Vec<u64> = drawn.iter().map(|b| b["shake"]["nonce"].as_u64().unwrap()).collect();
    nonces.sort_unstable();
    assert_eq!(nonces, [1, 2, 3]);
    let (_, mine) = get(&t, &session, &format!("/m/api/v1/campaigns/{id}/shakes")).await;
    assert_eq!(mine["shakes"].as_array().unwrap().len(), 3);
    t.stop().await;
}

#[tokio::test]
async fn a_replayed_shake_answers_the_same_draw() {
    let t = spawn_app().await;
    let m = merchant(&t, "shake-replay").await;
    let id = ongoing_lottery(&t, &m, lottery(&t, 1_000, 5, 100)).await;
    let (member_id, session) = member(&t, &m, 1).await;
    let path = format!("/m/api/v1/campaigns/{id}/shakes");
    let again = || send(t.http.post(t.url(&path)).bearer_auth(&session).header("Idempotency-Key", "shake-key-0001"));
    let (s1, b1) = again().await;
    let (s2, b2) = again().await;
    assert_eq!((s1, s2), (StatusCode::CREATED, StatusCode::CREATED), "{b1} {b2}");
    assert_eq!(b1["shake"], b2["shake"]);
    let (_, mine) = get(&t, &session, &path).await;
    assert_eq!(mine["shakes"].as_array().unwrap().len(), 1);
    let won = i64::from(b1["shake"]["won"] == true);
    assert_eq!(points(&t, &m, member_id).await, won * POINTS_PRIZE);
    t.stop().await;
}

#[tokio::test]
async fn concurrent_retries_of_one_shake_draw_once_and_its_key_elsewhere_is_refused() {
    let t = spawn_app().await;
    let m = merchant(&t, "shake-retries").await;
    let id = ongoing_lottery(&t, &m, lottery(&t, 1_000, 5, 100)).await;
    let other = ongoing_lottery(&t, &m, lottery(&t, 1_000, 5, 100)).await;
    let (member_id, session) = member(&t, &m, 1).await;
    let path = format!("/m/api/v1/campaigns/{id}/shakes");
    let again = || send(t.http.post(t.url(&path)).bearer_auth(&session).header("Idempotency-Key", "shake-key-0002"));
    // The lane takes one request per key a round: the others meet the used key and replay.
    let results: Vec<(StatusCode, Value)> = stream::iter(0..10).map(|_| again()).buffer_unordered(10).collect().await;
    for (status, body) in &results {
        assert_eq!(*status, StatusCode::CREATED, "{body}");
        assert_eq!(body["shake"], results[0].1["shake"]);
    }
    let (_, mine) = get(&t, &session, &path).await;
    assert_eq!(mine["shakes"].as_array().unwrap().len(), 1);
    let won = i64::from(results[0].1["shake"]["won"] == true);
    assert_eq!(points(&t, &m, member_id).await, won * POINTS_PRIZE);
    // The same key for a shake of another campaign is another request.
    let elsewhere = t
        .http
        .post(t.url(&format!("/m/api/v1/campaigns/{other}/shakes")))
        .bearer_auth(&session)
        .header("Idempotency-Key", "shake-key-0002");
    let (status, body) = send(elsewhere).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("idempotency_key_reused")));
    let (_, theirs) = get(&t, &session, &format!("/m/api/v1/campaigns/{other}/shakes")).await;
    assert_eq!(theirs["shakes"].as_array().unwrap().len(), 0);
    t.stop().await;
}

/// Two nodes on the same shards: each decides shakes in its own lanes on its
/// own cached state; the append's optimistic check on the campaign's stream
/// keeps the stock and every member's chances exact. A node whose cached
/// state another node moved on decides again on the stream's latest event.
#[tokio::test]
async fn two_nodes_shaking_one_campaign_keep_the_stock_and_each_members_chances() {
    let settings = fresh_settings(2).await;
    let a = spawn_app_on(settings.clone()).await;
    let b = spawn_app_on(settings).await;
    let m = merchant(&a, "shake-nodes").await;
    let id = ongoing_lottery(&a, &m, lottery(&a, 10, 3, 1)).await;
    b.clock.advance(chrono::Duration::minutes(61));
    // b caches the campaign, a moves it on, b shakes again on its stale copy.
    let mut warm_won = 0;
    for (n, t) in [(100, &b), (101, &a), (102, &b)] {
        let (_, session) = member(&a, &m, n).await;
        let (status, body) = shake(t, &session, &id).await;
        assert_eq!((status, &body["shake"]["nonce"]), (StatusCode::CREATED, &json!(1)), "{body}");
        warm_won += u32::from(body["shake"]["won"] == true);
    }
    let (_, view) = get(&a, &m.owner, &format!("/admin/api/v1/campaigns/{id}")).await;
    assert_eq!((&view["shakes"], &view["winners"]), (&json!(3), &json!(warm_won)), "{view}");
    let mut shakers = Vec::new();
    for n in 0..60 {
        shakers.push(member(&a, &m, n).await);
    }
    // Four shakes per member (one past their chances), alternating nodes, all at once.
    let asks: Vec<(usize, MemberId, String)> = shakers
        .iter()
        .flat_map(|s| std::iter::repeat_n(s.clone(), 4))
        .enumerate()
        .map(|(i, (member_id, session))| (i % 2, member_id, session))
        .collect();
    let results: Vec<(usize, MemberId, StatusCode, Value)> = stream::iter(asks)
        .map(|(node, member_id, session)| {
            let (t, id) = (if node == 0 { &a } else { &b }, &id);
            async move {
                let (status, body) = shake(t, &session, id).await;
                (node, member_id, status, body)
            }
        })
        .buffer_unordered(240)
        .collect()
        .await;
    let mut per_member: HashMap<MemberId, (u32, u32)> = HashMap::new();
    for (_, member_id, status, body) in &results {
        match *status {
            StatusCode::CREATED => {
                let entry = per_member.entry(*member_id).or_default();
                entry.0 += 1;
                entry.1 += u32::from(body["shake"]["won"] == true);
            }
            StatusCode::CONFLICT => {
                let code = body["error"]["code"].as_str().unwrap();
                assert!(
                    ["lifetime_limit_reached", "prize_limit_reached", "prizes_exhausted"].contains(&code),
                    "{body}"
                );
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    let won: u32 = warm_won + per_member.values().map(|(_, w)| w).sum::<u32>();
    assert!(won <= 10, "{won} prizes from a stock of 10");
    // ~180 shakes at even odds: the stock runs out (a miss has a chance far below 2^-100).
    assert_eq!(won, 10, "{results:?}");
    let (_, view) = get(&b, &m.owner, &format!("/admin/api/v1/campaigns/{id}")).await;
    assert_eq!(view["slots"][0]["stock_left"], 0, "{view}");
    assert_eq!(view["winners"], won);
    let shakes: u32 = per_member.values().map(|(s, _)| s).sum();
    assert_eq!(view["shakes"], 3 + shakes);
    for (member_id, session) in &shakers {
        let (shaken, prizes) = per_member.get(member_id).copied().unwrap_or_default();
        assert!(shaken <= 3 && prizes <= 1, "{member_id}: {shaken} shakes, {prizes} prizes");
        let (_, mine) = get(&a, session, &format!("/m/api/v1/campaigns/{id}/shakes")).await;
        let nonces: Vec<u64> =
            mine["shakes"].as_array().unwrap().iter().map(|s| s["nonce"].as_u64().unwrap()).collect();
        assert_eq!(nonces, (1..=u64::from(shaken)).collect::<Vec<_>>());
    }
    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let t = spawn_app().await;
    let m = merchant(&t, "shake-strict").await;
    let other = merchant(&t, "shake-other").await;
    let (_, session) = member(&t, &m, 1).await;
    let base = lottery(&t, 10, 3, 1);
    let mut bad_bodies = Vec::new();
    for (pointer, value) in [
        ("/slots/0/stock", json!(-1)),
        ("/slots/0/stock", json!(0)),
        ("/slots/0/weight", json!(0)),
        ("/slots/0/weight", json!(-5)),
        ("/slots/0/weight", json!(1_000_001)),
        ("/prizes_per_member_max", json!(0)),
        ("/chances/lifetime", json!(0)),
        ("/name", json!("")),
        ("/slots", json!([])),
        ("/ends_at", base["starts_at"].clone()),
    ] {
        let mut body = base.clone();
        *body.pointer_mut(pointer).unwrap() = value;
        bad_bodies.push(body);
    }
    let mut thanks_only = base.clone();
    thanks_only["slots"] = json!([{"prize": {"kind": "thanks"}, "weight": 1}]);
    bad_bodies.push(thanks_only);
    let mut negative_points = base.clone();
    negative_points["slots"][0]["prize"]["points"] = json!(-5);
    bad_bodies.push(negative_points);
    for body in bad_bodies {
        let (status, answer) = post(&t, &m.owner, "/admin/api/v1/campaigns", Some(body.clone())).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body} → {answer}");
    }
    assert_eq!(campaign_events(&t, &m).await, 0);

    // Unknown and another tenant's campaigns are not found, for admins and members alike.
    let unknown = uuid::Uuid::new_v4();
    let (status, _) = get(&t, &m.owner, &format!("/admin/api/v1/campaigns/{unknown}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = shake(&t, &session, &unknown.to_string()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = shake(&t, &session, "not-a-uuid").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, theirs) = post(&t, &other.owner, "/admin/api/v1/campaigns", Some(base.clone())).await;
    assert_eq!(status, StatusCode::CREATED);
    let theirs = theirs["campaign_id"].as_str().unwrap().to_owned();
    let (status, _) = get(&t, &m.owner, &format!("/admin/api/v1/campaigns/{theirs}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for action in ["schedule", "end"] {
        let (status, _) = post(&t, &m.owner, &format!("/admin/api/v1/campaigns/{theirs}/{action}"), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{action}");
    }
    let (status, _) = shake(&t, &session, &theirs).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = get(&t, &session, &format!("/m/api/v1/campaigns/{theirs}/shakes")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A draft, then a scheduled campaign before its start: no shake.
    let (_, draft) = post(&t, &m.owner, "/admin/api/v1/campaigns", Some(base.clone())).await;
    let id = draft["campaign_id"].as_str().unwrap().to_owned();
    let before = campaign_events(&t, &m).await;
    let (status, body) = shake(&t, &session, &id).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("not_ongoing")));
    post(&t, &m.owner, &format!("/admin/api/v1/campaigns/{id}/schedule"), None).await;
    let before_start = campaign_events(&t, &m).await;
    assert_eq!(before_start, before + 1);
    let (status, body) = shake(&t, &session, &id).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("not_ongoing")));
    let (status, body) = post(&t, &m.owner, &format!("/admin/api/v1/campaigns/{id}/schedule"), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("not_draft")));
    let mut edited = base.clone();
    edited["name"] = json!("Changed");
    let path = format!("/admin/api/v1/campaigns/{id}/terms");
    let put = t.http.put(t.url(&path)).bearer_auth(&m.owner).header("Idempotency-Key", key()).json(&edited);
    let (status, body) = send(put).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("not_draft")));
    assert_eq!(campaign_events(&t, &m).await, before_start);

    // After its end (by the clock, before the scheduler records it): no shake.
    t.clock.advance(chrono::Duration::days(3));
    let (status, body) = shake(&t, &session, &id).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("not_ongoing")));
    assert_eq!(campaign_events(&t, &m).await, before_start);
    let (_, list) = get(&t, &session, "/m/api/v1/campaigns").await;
    assert_eq!(list["campaigns"], json!([]));
    t.stop().await;
}

#[tokio::test]
async fn a_finished_campaign_audits_clean_and_a_tampered_shake_does_not() {
    let t = spawn_app().await;
    let m = merchant(&t, "shake-audit").await;
    let id = ongoing_lottery(&t, &m, lottery(&t, 3, 10, 2)).await;
    let mut sessions = Vec::new();
    for n in 0..4 {
        sessions.push(member(&t, &m, n).await.1);
    }
    let (_, list) = get(&t, &sessions[0], "/m/api/v1/campaigns").await;
    assert_eq!(list["campaigns"][0]["campaign_id"], id.as_str(), "{list}");
    for _ in 0..5 {
        for session in &sessions {
            shake(&t, session, &id).await;
        }
    }
    let campaign = CampaignId::parse(&id).unwrap();
    // Before the end the seed is secret: nothing to recompute with.
    let early = wxcm_ops::draw_audit::draw_report(&t.settings, &m.tenant, campaign).await.unwrap();
    assert!(!early.ok && !early.revealed, "{early:?}");
    // The seed is stored sealed, never in the clear.
    let shard = t.app.router.route(&m.tenant).unwrap().name.clone();
    let mut db = t.shard_db(&shard).await;
    let sealed: String = sqlx::query_scalar("SELECT sealed FROM campaign_seeds WHERE campaign_id = $1")
        .bind(&id)
        .fetch_one(&mut db)
        .await
        .unwrap();

    // The scheduler ends it at its time and reveals the seed.
    t.clock.advance(chrono::Duration::days(2));
    step(&t, &m).await;
    let (_, view) = get(&t, &m.owner, &format!("/admin/api/v1/campaigns/{id}")).await;
    assert_eq!(view["status"], "ended", "{view}");
    let seed = view["revealed_seed"].as_str().unwrap().to_owned();
    let commitment = DrawSeed::parse(&seed).unwrap().commitment().to_hex();
    assert_eq!(view["commitment"], commitment.as_str());
    assert!(!sealed.contains(&seed));
    let (status, body) = post(&t, &m.owner, &format!("/admin/api/v1/campaigns/{id}/end"), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("already_ended")));

    let report = wxcm_ops::draw_audit::draw_report(&t.settings, &m.tenant, campaign).await.unwrap();
    assert!(report.ok && report.revealed, "{report:?}");
    assert_eq!(report.shakes_checked, view["shakes"].as_u64().unwrap());
    assert!(report.shakes_checked >= 3, "three prizes are won before the stock runs out");
    let (code, cli) = audit_draw_cli(&t, &m, &id).await;
    assert_eq!((code, &cli["ok"]), (Some(0), &json!(true)), "{cli}");

    // A roll rewritten in the stored event (triggers off, as only a superuser can).
    sqlx::query("SET session_replication_role = replica").execute(&mut db).await.unwrap();
    let tampered = sqlx::query(
        "UPDATE events SET payload = jsonb_set(payload, '{CampaignShakesDrawn,draws,0,roll}',
                to_jsonb(((payload #>> '{CampaignShakesDrawn,draws,0,roll}')::bigint + 1) % 100))
          WHERE aggregate_type = 'campaign' AND aggregate_id = $1 AND event_type = 'CampaignShakesDrawn'
            AND sequence = (SELECT min(sequence) FROM events WHERE aggregate_type = 'campaign'
                              AND aggregate_id = $1 AND event_type = 'CampaignShakesDrawn')",
    )
    .bind(&id)
    .execute(&mut db)
    .await
    .unwrap();
    assert_eq!(tampered.rows_affected(), 1);
    let report = wxcm_ops::draw_audit::draw_report(&t.settings, &m.tenant, campaign).await.unwrap();
    assert!(!report.ok, "{report:?}");
    assert!(report.differences.iter().any(|d| d.detail.contains("roll")), "{report:?}");
    let (code, cli) = audit_draw_cli(&t, &m, &id).await;
    assert_eq!((code, &cli["ok"]), (Some(1), &json!(false)), "{cli}");
    t.stop().await;
}

#[tokio::test]
async fn coupon_and_store_prizes_are_given_once_per_award() {
    let t = spawn_app().await;
    let m = merchant(&t, "shake-coupons").await;
    let terms = json!({"name": "Prize coupon", "benefit": {"kind": "cash", "value_fen": 100, "min_spend_fen": null},
        "validity": {"kind": "days_from_issue", "days": 30}, "per_member_limit": null,
        "audience": {"kind": "all_members"}});
    let body = json!({"terms": terms, "stock": {"kind": "finite", "total": 50}});
    let (status, template) = post(&t, &m.owner, "/admin/api/v1/coupon-templates", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{template}");
    let template_id = template["template_id"].as_str().unwrap().to_owned();
    let now = t.app.clock.now();
    // Every shake wins: the coupon until its stock of 3 is gone, then the mug.
    let body = json!({
        "name": "Coupon shake",
        "starts_at": now + chrono::Duration::hours(1),
        "ends_at": now + chrono::Duration::days(2),
        "chances": {"lifetime": 4},
        "prizes_per_member_max": 4,
        "slots": [
            {"prize": {"kind": "coupon", "template_id": template_id}, "weight": 1_000_000, "stock": 3},
            {"prize": {"kind": "physical", "item": "A mug"}, "weight": 1, "stock": 1},
        ],
    });
    let id = ongoing_lottery(&t, &m, body).await;
    let (member_id, session) = member(&t, &m, 1).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let (status, body) = shake(&t, &session, &id).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        statuses.push((body["shake"]["slot"].as_u64().unwrap(), body["prize_status"].as_str().unwrap().to_owned()));
    }
    statuses.sort();
    assert_eq!(
        statuses,
        [(0, "issued".to_owned()), (0, "issued".to_owned()), (0, "issued".to_owned()), (1, "at_store".to_owned())]
    );
    let coupons = || async {
        let (_, mine) = get(&t, &session, "/m/api/v1/coupons").await;
        mine["coupons"].as_array().unwrap().len()
    };
    assert_eq!(coupons().await, 3);
    // The prizes' due work issues again under the same keys: still three.
    t.clock.advance(chrono::Duration::minutes(1));
    step(&t, &m).await;
    assert_eq!(coupons().await, 3);
    let (status, body) = shake(&t, &session, &id).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("lifetime_limit_reached")));

    // The mug is handed over at the store once; a win that was not the mug is not found.
    let (_, mine) = get(&t, &session, &format!("/m/api/v1/campaigns/{id}/shakes")).await;
    let shakes = mine["shakes"].as_array().unwrap();
    let mug = shakes.iter().find(|s| s["slot"] == 1).unwrap()["nonce"].clone();
    let coupon = shakes.iter().find(|s| s["slot"] == 0).unwrap()["nonce"].clone();
    let path = format!("/admin/api/v1/campaigns/{id}/hand-overs");
    let award = |nonce: &Value| json!({"award": {"kind": "shake", "member_id": member_id, "nonce": nonce}});
    let (status, body) = post(&t, &m.owner, &path, Some(award(&mug))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = post(&t, &m.owner, &path, Some(award(&mug))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("already_handed_over")));
    let (status, body) = post(&t, &m.owner, &path, Some(award(&coupon))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("award_not_found")));
    t.stop().await;
}

#[tokio::test]
async fn the_scheduler_draws_each_period_of_a_daily_lottery_and_gives_the_prizes_once() {
    use wxcm_domain::campaign::{
        CampaignKind, CampaignTerms, CampaignText, Cycle, Limits, PeriodEnd, PeriodicTerms, Prize, PrizeTier,
        TicketSource,
    };
    use wxcm_domain::PointsAmount;

    let t = spawn_app().await;
    let m = merchant(&t, "daily-draw").await;
    let now = t.app.clock.now();
    let terms = CampaignTerms {
        name: CampaignText::parse("Daily draw").unwrap(),
        starts_at: now + chrono::Duration::hours(1),
        ends_at: now + chrono::Duration::days(5),
        members_only: false,
        limits: Limits { lifetime: None, per_day: None, per_period: Some(3) },
        kind: CampaignKind::PeriodicLottery(PeriodicTerms {
            cycle: Cycle::Daily,
            tickets: TicketSource::Entries,
            entry_cost: None,
            entrants_max: 100,
            tiers: vec![PrizeTier { prize: Prize::Points { points: PointsAmount::new(7).unwrap() }, count: 2 }],
        }),
    };
    let admin = Actor::Admin { username: "owner".into() };
    let ctx = |what: &str| {
        let key = members::system_key(&["daily-draw", what]).unwrap();
        CommandContext::new(m.tenant.clone(), key, "test".into())
    };
    use wxcm_commands::campaigns::{self, periods};
    let view = campaigns::create(&t.app, &ctx("create"), terms, admin.clone()).await.unwrap();
    let id = view.campaign_id;
    campaigns::schedule(&t.app, &ctx("schedule"), id, admin).await.unwrap();
    t.clock.advance(chrono::Duration::minutes(61));
    step(&t, &m).await;
    let shard = t.app.router.route(&m.tenant).unwrap();
    let state = || async {
        let (campaign, _) = shard.campaigns.load(&m.tenant, &id.to_string()).await.unwrap();
        campaign.created.unwrap()
    };
    let first = state().await;
    assert_eq!(first.periods.len(), 1, "{first:?}");
    let period_end = first.periods[&1].ends_at;

    let mut entrants = Vec::new();
    for n in 0..5 {
        let (member_id, _) = member(&t, &m, n).await;
        for e in 0..(n % 3 + 1) {
            let entered = periods::enter(&t.app, &ctx(&format!("enter-{n}-{e}")), id, member_id).await.unwrap();
            assert_eq!(entered, 1);
        }
        entrants.push(member_id);
    }
    // A repeated request is the same entry; a fourth entry passes the period's limit.
    periods::enter(&t.app, &ctx("enter-2-0"), id, entrants[2]).await.unwrap();
    assert_eq!(state().await.periods[&1].entries_total, 1 + 2 + 3 + 1 + 2);
    let refused = periods::enter(&t.app, &ctx("enter-2-3"), id, entrants[2]).await.unwrap_err();
    assert!(matches!(refused, campaigns::CampaignOpError::Campaign(_)), "{refused:?}");

    // The period's end: two schedulers at once draw it once, give the prizes and open the next period.
    t.clock.advance(period_end - t.app.clock.now() + chrono::Duration::minutes(1));
    let (a, b) = tokio::join!(scheduler::step(&t.app, &shard), scheduler::step(&t.app, &shard));
    assert_eq!((a.unwrap().failed, b.unwrap().failed), (0, 0));
    let draws = "SELECT count(*) FROM events WHERE tenant_id = $1 AND event_type = 'CampaignPeriodDrawn'";
    assert_eq!(count(&t, &m, draws).await, 1);
    let drawn = state().await;
    let Some(PeriodEnd::Drawn { winners, .. }) = &drawn.periods[&1].end else { panic!("{drawn:?}") };
    assert_eq!(winners.len(), 2);
    assert!(drawn.periods[&2].end.is_none());
    for member_id in &entrants {
        let expected = if winners.contains(member_id) { 7 } else { 0 };
        assert_eq!(points(&t, &m, *member_id).await, expected);
    }
    // The prizes' due work issues again under the same keys: nothing doubles.
    t.clock.advance(chrono::Duration::minutes(1));
    step(&t, &m).await;
    for member_id in &entrants {
        let expected = if winners.contains(member_id) { 7 } else { 0 };
        assert_eq!(points(&t, &m, *member_id).await, expected);
    }
    let report = wxcm_ops::draw_audit::draw_report(&t.settings, &m.tenant, id).await.unwrap();
    assert!(report.ok && report.periods_checked == 1, "{report:?}");
    let one = wxcm_ops::draw_audit::draw_report_of(&t.settings, &m.tenant, id, Some(1)).await.unwrap();
    assert!(one.ok && one.periods_checked == 1, "{one:?}");
    let two = wxcm_ops::draw_audit::draw_report_of(&t.settings, &m.tenant, id, Some(2)).await.unwrap();
    assert!(!two.ok, "period 2 is not drawn yet: {two:?}");
    // The console's draw audit view gives the same verdicts.
    let audit_path = format!("/admin/api/v1/campaigns/{id}/draw-audit");
    let (status, view) = get(&t, &m.owner, &audit_path).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!((&view["ok"], &view["periods_checked"]), (&json!(true), &json!(1)), "{view}");
    let (status, view) = get(&t, &m.owner, &format!("{audit_path}?period=1")).await;
    assert_eq!((status, &view["ok"]), (StatusCode::OK, &json!(true)), "{view}");
    let (status, view) = get(&t, &m.owner, &format!("{audit_path}?period=2")).await;
    assert_eq!((status, view["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("period_not_drawn")));
    let (status, view) = get(&t, &m.owner, &format!("{audit_path}?period=x")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{view}");
    let other = merchant(&t, "daily-draw-other").await;
    let (status, view) = get(&t, &other.owner, &audit_path).await;
    assert_eq!((status, view["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("campaign_not_found")));

    // An entry moved to another member in the stored events: the entrant list no longer
    // hashes to the drawn one.
    let mut db = t.shard_db(&shard.name).await;
    sqlx::query("SET session_replication_role = replica").execute(&mut db).await.unwrap();
    let outsider = MemberId::new_random().to_string();
    let changed = sqlx::query(
        "UPDATE events SET payload = jsonb_set(payload, '{CampaignEntryRecorded,member_id}', to_jsonb($2::text))
          WHERE aggregate_id = $1 AND event_type = 'CampaignEntryRecorded'
            AND sequence = (SELECT min(sequence) FROM events WHERE aggregate_id = $1
                              AND event_type = 'CampaignEntryRecorded')",
    )
    .bind(id.to_string())
    .bind(&outsider)
    .execute(&mut db)
    .await
    .unwrap();
    assert_eq!(changed.rows_affected(), 1);
    let (code, cli) = audit_draw_cli(&t, &m, &id.to_string()).await;
    assert_eq!((code, &cli["ok"]), (Some(1), &json!(false)), "{cli}");
    let report = wxcm_ops::draw_audit::draw_report_of(&t.settings, &m.tenant, id, Some(1)).await.unwrap();
    assert!(report.differences.iter().any(|d| d.detail.contains("hash")), "{report:?}");
    let (status, view) = get(&t, &m.owner, &audit_path).await;
    assert_eq!((status, &view["ok"]), (StatusCode::OK, &json!(false)), "{view}");
    let differences = view["differences"].as_array().unwrap();
    assert!(differences.iter().any(|d| d["detail"].as_str().unwrap().contains("hash") && d["sequence"].is_i64()));
    t.stop().await;
}

#[tokio::test]
async fn a_periodic_lottery_through_the_api_takes_entries_into_its_open_period() {
    let t = spawn_app().await;
    let m = merchant(&t, "daily-api").await;
    let now = t.app.clock.now();
    let body = json!({
        "name": "Daily draw",
        "starts_at": now + chrono::Duration::hours(1),
        "ends_at": now + chrono::Duration::days(3),
        "limits": {"per_period": 2},
        "cycle": "daily",
        "entrants_max": 50,
        "tiers": [{"prize": {"kind": "points", "points": 3}, "count": 1}],
    });
    let mut thanks = body.clone();
    thanks["tiers"][0]["prize"] = json!({"kind": "thanks"});
    let mut zero = body.clone();
    zero["tiers"][0]["count"] = json!(0);
    for bad in [thanks, zero] {
        let (status, answer) = post(&t, &m.owner, "/admin/api/v1/periodic-campaigns", Some(bad)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    }
    assert_eq!(campaign_events(&t, &m).await, 0);
    let (status, created) = post(&t, &m.owner, "/admin/api/v1/periodic-campaigns", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["campaign_id"].as_str().unwrap().to_owned();
    let (_, session) = member(&t, &m, 1).await;
    let entries = format!("/m/api/v1/campaigns/{id}/entries");
    let (status, body) = post(&t, &session, &entries, None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("not_ongoing")));
    let (status, scheduled) = post(&t, &m.owner, &format!("/admin/api/v1/campaigns/{id}/schedule"), None).await;
    assert_eq!(status, StatusCode::OK, "{scheduled}");
    assert!(scheduled["commitment"].is_null());
    t.clock.advance(chrono::Duration::minutes(61));
    step(&t, &m).await;
    for _ in 0..2 {
        let (status, entry) = post(&t, &session, &entries, None).await;
        assert_eq!((status, entry["period_no"].as_u64()), (StatusCode::CREATED, Some(1)), "{entry}");
    }
    let (status, body) = post(&t, &session, &entries, None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("period_limit_reached")));
    let (status, body) = shake(&t, &session, &id).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("wrong_kind")));
    let (_, view) = get(&t, &m.owner, &format!("/admin/api/v1/campaigns/{id}")).await;
    let period = &view["periodic"]["periods"][0];
    assert_eq!((period["entries"].as_u64(), period["state"].as_str()), (Some(2), Some("open")), "{view}");
    assert_eq!(period["commitment"].as_str().map(str::len), Some(64));
    assert!(period["seed"].is_null());

    // The member's entries and prizes: the open period with their two tickets; after the draw,
    // what they won (the only entrant takes the one prize).
    let (status, mine) = get(&t, &session, &entries).await;
    assert_eq!(status, StatusCode::OK, "{mine}");
    let open = &mine["periods"][0];
    assert_eq!((open["period_no"].as_u64(), open["tickets"].as_u64()), (Some(1), Some(2)), "{mine}");
    assert_eq!((open["state"].as_str(), open["won"].is_null()), (Some("open"), true), "{mine}");
    let (_, stranger) = member(&t, &m, 2).await;
    let (status, none) = get(&t, &stranger, &entries).await;
    assert_eq!((status, none["periods"].as_array().map(Vec::len)), (StatusCode::OK, Some(0)), "{none}");
    t.clock.advance(chrono::Duration::days(1));
    step(&t, &m).await;
    let (_, mine) = get(&t, &session, &entries).await;
    let drawn = mine["periods"].as_array().unwrap().iter().find(|p| p["period_no"] == 1).unwrap();
    assert_eq!((drawn["state"].as_str(), drawn["tickets"].as_u64()), (Some("drawn"), Some(2)), "{mine}");
    assert_eq!(drawn["won"]["rank"], 1, "{mine}");
    assert_eq!(drawn["won"]["prize"], json!({"kind": "points", "points": 3}), "{mine}");
    // Not for a shake lottery, nor another tenant's member.
    let (status, shake_lottery) = post(&t, &m.owner, "/admin/api/v1/campaigns", Some(lottery(&t, 5, 3, 1))).await;
    assert_eq!(status, StatusCode::CREATED, "{shake_lottery}");
    let shake_entries = format!("/m/api/v1/campaigns/{}/entries", shake_lottery["campaign_id"].as_str().unwrap());
    let (status, body) = get(&t, &session, &shake_entries).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("wrong_kind")));
    let other = merchant(&t, "daily-api-other").await;
    let (_, outsider) = member(&t, &other, 1).await;
    let (status, body) = get(&t, &outsider, &entries).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("campaign_not_found")));
    t.stop().await;
}

#[tokio::test]
async fn the_admin_list_pages_the_tenants_campaigns_and_no_one_elses() {
    let t = spawn_app().await;
    let m = merchant(&t, "campaign-list").await;
    let other = merchant(&t, "campaign-list-b").await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (status, created) = post(&t, &m.owner, "/admin/api/v1/campaigns", Some(lottery(&t, 5, 3, 1))).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        ids.push(created["campaign_id"].as_str().unwrap().to_owned());
    }
    ids.sort();
    let (status, page) = get(&t, &m.owner, "/admin/api/v1/campaigns").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let listed: Vec<&str> =
        page["campaigns"].as_array().unwrap().iter().map(|c| c["campaign_id"].as_str().unwrap()).collect();
    assert_eq!(listed, ids.iter().map(String::as_str).collect::<Vec<_>>());
    // Paged in id order.
    let (_, first) = get(&t, &m.owner, "/admin/api/v1/campaigns?limit=2").await;
    assert_eq!(first["campaigns"].as_array().unwrap().len(), 2);
    let (_, rest) = get(&t, &m.owner, &format!("/admin/api/v1/campaigns?limit=2&after={}", ids[1])).await;
    assert_eq!(rest["campaigns"][0]["campaign_id"], ids[2].as_str());
    let (status, body) = get(&t, &m.owner, "/admin/api/v1/campaigns?limit=0").await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_limit")));
    // Another tenant sees none of them.
    let (status, theirs) = get(&t, &other.owner, "/admin/api/v1/campaigns").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(theirs["campaigns"].as_array().map(Vec::len), Some(0), "{theirs}");
    t.stop().await;
}

#[tokio::test]
async fn a_coupon_prize_must_name_one_of_the_tenants_templates() {
    let t = spawn_app().await;
    let m = merchant(&t, "prize-templates").await;
    let before = campaign_events(&t, &m).await;
    let mut body = lottery(&t, 5, 3, 1);
    body["slots"][0]["prize"] = json!({"kind": "coupon", "template_id": uuid::Uuid::new_v4()});
    let (status, refused) = post(&t, &m.owner, "/admin/api/v1/campaigns", Some(body)).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("template_not_found")));
    assert_eq!(campaign_events(&t, &m).await, before, "nothing written");
    t.stop().await;
}

/// Gives `member_id` points (an admin's manual grant).
async fn grant(t: &TestApp, m: &Merchant, member_id: MemberId, points: i64) {
    use wxcm_domain::member::{ExpiryPolicy, MemberCommand, PointsSource, Provenance};
    let key = members::system_key(&["test-grant", &member_id.to_string(), &points.to_string()]).unwrap();
    let ctx = CommandContext::new(m.tenant.clone(), key.clone(), "test".into());
    let command = MemberCommand::GrantPoints {
        points: wxcm_domain::PointsAmount::new(points).unwrap(),
        source: PointsSource::Manual,
        expiry: ExpiryPolicy::Never,
        provenance: Provenance {
            actor: Actor::Admin { username: "t".into() },
            reason: wxcm_domain::Reference::parse("test").unwrap(),
            reference: None,
            idempotency_key: key,
        },
    };
    members::execute(&t.app, &m.tenant, member_id, command.clone(), &command, &ctx).await.unwrap();
}

/// Member events of `event_type` whose text names `campaign` (its ledger lines).
async fn ledger_lines(t: &TestApp, m: &Merchant, event_type: &str, campaign: &str) -> i64 {
    let shard = t.app.router.route(&m.tenant).unwrap().name.clone();
    let mut db = t.shard_db(&shard).await;
    sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE tenant_id = $1 AND aggregate_type = 'member'
            AND event_type = $2 AND payload::text LIKE '%campaign:' || $3 || '%'",
    )
    .bind(m.tenant.as_str())
    .bind(event_type)
    .bind(campaign)
    .fetch_one(&mut db)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_paid_entry_spends_its_points_once_and_a_cancelled_period_refunds_every_entrant_once() {
    let t = spawn_app().await;
    let m = merchant(&t, "paid-entries").await;
    let now = t.app.clock.now();
    let body = json!({
        "name": "Paid draw",
        "starts_at": now + chrono::Duration::hours(1),
        "ends_at": now + chrono::Duration::days(3),
        "limits": {"per_period": 3},
        "cycle": "daily",
        "entrants_max": 50,
        "entry_cost_points": 30,
        "tiers": [{"prize": {"kind": "points", "points": 3}, "count": 1}],
    });
    // The cost is 1..=1,000,000: one past either end is refused, nothing written.
    for bad in [0, 1_000_001] {
        let mut body = body.clone();
        body["entry_cost_points"] = json!(bad);
        let (status, answer) = post(&t, &m.owner, "/admin/api/v1/periodic-campaigns", Some(body)).await;
        let code = answer["error"]["code"].as_str();
        assert_eq!((status, code), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_entry_cost")), "{answer}");
    }
    let mut most = body.clone();
    most["entry_cost_points"] = json!(1_000_000);
    let (status, answer) = post(&t, &m.owner, "/admin/api/v1/periodic-campaigns", Some(most)).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let (status, created) = post(&t, &m.owner, "/admin/api/v1/periodic-campaigns", Some(body.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["periodic"]["entry_cost_points"].as_i64(), Some(30), "{created}");
    let id = created["campaign_id"].as_str().unwrap().to_owned();
    let (status, scheduled) = post(&t, &m.owner, &format!("/admin/api/v1/campaigns/{id}/schedule"), None).await;
    assert_eq!(status, StatusCode::OK, "{scheduled}");
    t.clock.advance(chrono::Duration::minutes(61));
    step(&t, &m).await;

    let (rich, rich_session) = member(&t, &m, 1).await;
    let (poor, poor_session) = member(&t, &m, 2).await;
    let (eager, eager_session) = member(&t, &m, 3).await;
    grant(&t, &m, rich, 100).await;
    grant(&t, &m, poor, 20).await;
    grant(&t, &m, eager, 100).await;
    let entries = format!("/m/api/v1/campaigns/{id}/entries");

    // An entry costs its points: the balance goes down by the cost, one ledger line names the campaign.
    let (status, entry) = post(&t, &rich_session, &entries, None).await;
    assert_eq!((status, entry["period_no"].as_u64()), (StatusCode::CREATED, Some(1)), "{entry}");
    assert_eq!(points(&t, &m, rich).await, 70);
    assert_eq!(ledger_lines(&t, &m, "HeldPointsSpent", &id).await, 1);

    // Insufficient points: 409, and nothing changes (no entry, no hold, same balance).
    let (status, refused) = post(&t, &poor_session, &entries, None).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("insufficient_points")));
    assert_eq!(points(&t, &m, poor).await, 20);
    assert_eq!(ledger_lines(&t, &m, "PointsHeld", &id).await, 1);
    assert_eq!(
        get(&t, &m.owner, &format!("/admin/api/v1/campaigns/{id}")).await.1["periodic"]["periods"][0]["entries"]
            .as_u64(),
        Some(1)
    );

    // Ten concurrent entries with one key: one entry, one spend.
    let one_key = key();
    let statuses: Vec<StatusCode> = stream::iter(0..10)
        .map(|_| {
            let req = t.http.post(t.url(&entries)).bearer_auth(&eager_session).header("Idempotency-Key", &one_key);
            async move { send(req).await.0 }
        })
        .buffer_unordered(10)
        .collect()
        .await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::CREATED || *s == StatusCode::SERVICE_UNAVAILABLE),
        "{statuses:?}"
    );
    let again = t.http.post(t.url(&entries)).bearer_auth(&eager_session).header("Idempotency-Key", &one_key);
    assert_eq!(send(again).await.0, StatusCode::CREATED);
    assert_eq!(points(&t, &m, eager).await, 70);
    assert_eq!(ledger_lines(&t, &m, "HeldPointsSpent", &id).await, 2);
    assert_eq!(
        get(&t, &m.owner, &format!("/admin/api/v1/campaigns/{id}")).await.1["periodic"]["periods"][0]["entries"]
            .as_u64(),
        Some(2)
    );

    // The same key for another paid campaign is a reused key: 409, no second hold or spend.
    let now = t.app.clock.now();
    let mut second = body.clone();
    second["name"] = json!("Paid draw 2");
    second["starts_at"] = json!(now + chrono::Duration::minutes(1));
    let (status, created) = post(&t, &m.owner, "/admin/api/v1/periodic-campaigns", Some(second)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let second_id = created["campaign_id"].as_str().unwrap().to_owned();
    let (status, _) = post(&t, &m.owner, &format!("/admin/api/v1/campaigns/{second_id}/schedule"), None).await;
    assert_eq!(status, StatusCode::OK);
    t.clock.advance(chrono::Duration::minutes(2));
    step(&t, &m).await;
    let reuse = t
        .http
        .post(t.url(&format!("/m/api/v1/campaigns/{second_id}/entries")))
        .bearer_auth(&eager_session)
        .header("Idempotency-Key", &one_key);
    let (status, answer) = send(reuse).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("idempotency_key_reused")));
    assert_eq!(points(&t, &m, eager).await, 70);
    assert_eq!(ledger_lines(&t, &m, "PointsHeld", &second_id).await, 0);

    // A request that died after holding the cost and before recording its entry: the hold's
    // due work releases the points 10 minutes later, and the key then answers `entry_abandoned`.
    let (stalled, stalled_session) = member(&t, &m, 4).await;
    grant(&t, &m, stalled, 100).await;
    let stalled_key = key();
    hold_as_a_dead_request(&t, &m, &id, stalled, &stalled_key).await;
    assert_eq!(points(&t, &m, stalled).await, 70);
    t.clock.advance(chrono::Duration::minutes(11));
    step(&t, &m).await;
    assert_eq!(points(&t, &m, stalled).await, 100);
    let retry = t.http.post(t.url(&entries)).bearer_auth(&stalled_session).header("Idempotency-Key", &stalled_key);
    let (status, abandoned) = send(retry).await;
    assert_eq!((status, abandoned["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("entry_abandoned")));
    assert_eq!(points(&t, &m, stalled).await, 100);

    // Cancel, twice: every entrant is refunded once, by the request and again (a replay) by due work.
    let cancel = format!("/admin/api/v1/campaigns/{id}/periods/1/cancel");
    for _ in 0..2 {
        let (status, cancelled) = post(&t, &m.owner, &cancel, None).await;
        assert_eq!(status, StatusCode::OK, "{cancelled}");
        assert_eq!(cancelled["periodic"]["periods"][0]["state"].as_str(), Some("cancelled"), "{cancelled}");
    }
    step(&t, &m).await;
    t.clock.advance(chrono::Duration::minutes(1));
    step(&t, &m).await;
    assert_eq!((points(&t, &m, rich).await, points(&t, &m, eager).await, points(&t, &m, poor).await), (100, 100, 20));
    assert_eq!(ledger_lines(&t, &m, "PointsGranted", &id).await, 2);
    let (status, late) = post(&t, &rich_session, &entries, None).await;
    assert_eq!((status, late["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("not_ongoing")));
    let (status, missing) = post(&t, &m.owner, &format!("/admin/api/v1/campaigns/{id}/periods/9/cancel"), None).await;
    assert_eq!((status, missing["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("period_not_found")));

    // The draw skips the cancelled period; the cycle's next period opens and is drawn.
    let ends = |v: &Value, n: usize| {
        v["periodic"]["periods"][n]["ends_at"].as_str().unwrap().parse::<chrono::DateTime<chrono::Utc>>().unwrap()
    };
    let first_end = ends(&get(&t, &m.owner, &format!("/admin/api/v1/campaigns/{id}")).await.1, 0);
    t.clock.advance(first_end - t.app.clock.now() + chrono::Duration::minutes(1));
    step(&t, &m).await;
    // This campaign's draws (the second paid campaign above is drawn on its own schedule).
    let draws = format!(
        "SELECT count(*) FROM events WHERE tenant_id = $1 AND event_type = 'CampaignPeriodDrawn' \
         AND aggregate_id = '{id}'"
    );
    let draws = draws.as_str();
    assert_eq!(count(&t, &m, draws).await, 0);
    let second = get(&t, &m.owner, &format!("/admin/api/v1/campaigns/{id}")).await.1;
    assert_eq!(second["periodic"]["periods"][1]["state"].as_str(), Some("open"), "{second}");
    let (status, _) = post(&t, &rich_session, &entries, None).await;
    assert_eq!(status, StatusCode::CREATED);
    // An entry refused after its hold (past the period's limit of 3) gives the points back at once.
    grant(&t, &m, rich, 200).await;
    for _ in 0..2 {
        assert_eq!(post(&t, &rich_session, &entries, None).await.0, StatusCode::CREATED);
    }
    assert_eq!(points(&t, &m, rich).await, 100 - 30 + 200 - 60);
    let (status, over) = post(&t, &rich_session, &entries, None).await;
    assert_eq!((status, over["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("period_limit_reached")));
    assert_eq!(points(&t, &m, rich).await, 210);
    assert_eq!(ledger_lines(&t, &m, "PointsHoldReleased", &id).await, 2, "the dead request's and this one");
    t.clock.advance(ends(&second, 1) - t.app.clock.now() + chrono::Duration::minutes(1));
    step(&t, &m).await;
    assert_eq!(count(&t, &m, draws).await, 1);
    // A drawn period is not cancelled.
    let (status, drawn) = post(&t, &m.owner, &format!("/admin/api/v1/campaigns/{id}/periods/2/cancel"), None).await;
    assert_eq!((status, drawn["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("period_drawn")));
    // The audit recomputes the drawn period and passes over the cancelled one.
    let campaign_id = CampaignId::parse(&id).unwrap();
    let report = wxcm_ops::draw_audit::draw_report(&t.settings, &m.tenant, campaign_id).await.unwrap();
    assert!(report.ok && report.periods_checked == 1, "{report:?}");
    t.stop().await;
}

/// The first step of a paid entry as its request runs it (same key, hold and
/// reference), and nothing after: a request that died there.
async fn hold_as_a_dead_request(t: &TestApp, m: &Merchant, campaign: &str, member_id: MemberId, request_key: &str) {
    use wxcm_domain::campaign::EntryId;
    use wxcm_domain::member::{MemberCommand, Provenance};
    use wxcm_domain::{IdempotencyKey, PointsAmount, Reference};
    let campaign_id = CampaignId::parse(campaign).unwrap();
    let entry_id =
        EntryId::for_request(&m.tenant, campaign_id, member_id, &IdempotencyKey::parse(request_key).unwrap());
    let key = members::system_key(&["campaign-entry", "hold", campaign, &entry_id.to_string()]).unwrap();
    let ctx = CommandContext::new(m.tenant.clone(), key.clone(), "test".into());
    let command = MemberCommand::HoldPoints {
        hold_id: Reference::parse(&format!("campaign-entry:{entry_id}")).unwrap(),
        points: PointsAmount::new(30).unwrap(),
        provenance: Provenance {
            actor: Actor::Member { member_id },
            reason: Reference::parse("campaign entry").unwrap(),
            reference: Some(Reference::parse(&format!("campaign:{campaign}:period:1:entry:{entry_id}")).unwrap()),
            idempotency_key: key,
        },
    };
    let request = json!({ "campaign_entry": entry_id, "step": "hold" });
    members::execute(&t.app, &m.tenant, member_id, command, &request, &ctx).await.unwrap();
}

#[tokio::test]
async fn a_manual_period_names_a_beacon_round_and_is_drawn_once_its_value_is_recorded() {
    let t = spawn_app().await;
    let m = merchant(&t, "manual-beacon").await;
    let now = t.app.clock.now();
    let body = json!({
        "name": "Draw by hand",
        "starts_at": now + chrono::Duration::hours(1),
        "ends_at": now + chrono::Duration::days(5),
        "cycle": "manual",
        "entrants_max": 50,
        "tiers": [{"prize": {"kind": "points", "points": 3}, "count": 1}],
    });
    let (status, created) = post(&t, &m.owner, "/admin/api/v1/periodic-campaigns", Some(body.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["campaign_id"].as_str().unwrap().to_owned();
    let periods = format!("/admin/api/v1/campaigns/{id}/periods");
    let window = |from_h: i64, to_h: i64| {
        json!({"starts_at": now + chrono::Duration::hours(from_h), "ends_at": now + chrono::Duration::hours(to_h),
               "beacon": {"source": "drand-quicknet", "round": 12_345_678}})
    };
    // A draft takes no period.
    let (status, reply) = post(&t, &m.owner, &periods, Some(window(2, 30))).await;
    assert_eq!((status, reply["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("wrong_status")), "{reply}");
    post(&t, &m.owner, &format!("/admin/api/v1/campaigns/{id}/schedule"), None).await;
    let events_before = campaign_events(&t, &m).await;
    // Bad windows and beacons change nothing.
    let mut bad_round = window(2, 30);
    bad_round["beacon"]["round"] = json!(0);
    let (status, reply) = post(&t, &m.owner, &periods, Some(window(2, 200))).await;
    assert_eq!((status, reply["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("period_window_conflict")));
    for (bad, code) in
        [(window(30, 2), "invalid_period"), (bad_round, "invalid_beacon"), (json!({"starts_at": now}), "invalid_body")]
    {
        let (status, reply) = post(&t, &m.owner, &periods, Some(bad)).await;
        assert_eq!(
            (status, reply["error"]["code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some(code)),
            "{reply}"
        );
    }
    assert_eq!(campaign_events(&t, &m).await, events_before);
    // Opened once; the same request again replays it.
    let open = |key: &'static str| {
        t.http.post(t.url(&periods)).bearer_auth(&m.owner).header("Idempotency-Key", key).json(&window(2, 30))
    };
    let (status, opened) = send(open("open-period-1")).await;
    assert_eq!(status, StatusCode::CREATED, "{opened}");
    let (status, again) = send(open("open-period-1")).await;
    assert_eq!(status, StatusCode::CREATED, "{again}");
    assert_eq!(again["periodic"]["periods"].as_array().map(Vec::len), Some(1), "{again}");
    let period = &opened["periodic"]["periods"][0];
    assert_eq!(period["beacon"], json!({"source": "drand-quicknet", "round": 12_345_678}));
    assert_eq!(period["commitment"].as_str().map(str::len), Some(64));
    // An overlapping second period is refused.
    let (status, _) = post(&t, &m.owner, &periods, Some(window(20, 40))).await;
    assert_eq!(status, StatusCode::CONFLICT);

    t.clock.advance(chrono::Duration::hours(2));
    step(&t, &m).await;
    for n in 1..=2 {
        let (_, session) = member(&t, &m, n).await;
        let (status, entry) = post(&t, &session, &format!("/m/api/v1/campaigns/{id}/entries"), None).await;
        assert_eq!(status, StatusCode::CREATED, "{entry}");
    }
    // Past the period's end the draw waits for the beacon's value (the scheduler retries).
    t.clock.advance(chrono::Duration::hours(29));
    let shard = t.app.router.route(&m.tenant).unwrap();
    let report = scheduler::step(&t.app, &shard).await.unwrap();
    assert_eq!(report.failed, 1, "{report:?}");
    let (_, view) = get(&t, &m.owner, &format!("/admin/api/v1/campaigns/{id}")).await;
    assert_eq!(view["periodic"]["periods"][0]["state"], "open", "{view}");

    let value_path = format!("/admin/api/v1/campaigns/{id}/periods/1/beacon-value");
    let put = |value: &str| {
        t.http
            .put(t.url(&value_path))
            .bearer_auth(&m.owner)
            .header("Idempotency-Key", key())
            .json(&json!({"value": value}))
    };
    let (status, reply) = send(put("XYZ")).await;
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_beacon_value"))
    );
    let value = "ab".repeat(32);
    let (status, drawn) = send(put(&value)).await;
    assert_eq!(status, StatusCode::OK, "{drawn}");
    let period = &drawn["periodic"]["periods"][0];
    assert_eq!((period["state"].as_str(), period["winners"].as_u64()), (Some("drawn"), Some(1)), "{drawn}");
    let (status, reply) = send(put(&"cd".repeat(32))).await;
    assert_eq!((status, reply["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("beacon_value_conflict")));
    let (status, _) = send(put(&value)).await;
    assert_eq!(status, StatusCode::OK, "the same value again");
    let (status, reply) = send(
        t.http
            .put(t.url(&format!("/admin/api/v1/campaigns/{id}/periods/7/beacon-value")))
            .bearer_auth(&m.owner)
            .header("Idempotency-Key", key())
            .json(&json!({"value": value})),
    )
    .await;
    assert_eq!((status, reply["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("period_not_found")));
    // The draw event states the value; the audit recomputes the draw with it.
    let stated: String = {
        let mut db = t.shard_db(&shard.name).await;
        sqlx::query_scalar(
            "SELECT payload #>> '{CampaignPeriodDrawn,beacon_value}' FROM events WHERE tenant_id = $1 AND event_type = 'CampaignPeriodDrawn'",
        )
        .bind(m.tenant.as_str())
        .fetch_one(&mut db)
        .await
        .unwrap()
    };
    assert_eq!(stated, value);
    let (code, report) = audit_draw_cli(&t, &m, &id).await;
    assert_eq!((code, report["ok"].as_bool()), (Some(0), Some(true)), "{report}");

    // A cycle's periods are the scheduler's.
    let mut daily = body;
    daily["cycle"] = json!("daily");
    let (_, created) = post(&t, &m.owner, "/admin/api/v1/periodic-campaigns", Some(daily)).await;
    let daily_id = created["campaign_id"].as_str().unwrap();
    post(&t, &m.owner, &format!("/admin/api/v1/campaigns/{daily_id}/schedule"), None).await;
    let (status, reply) =
        post(&t, &m.owner, &format!("/admin/api/v1/campaigns/{daily_id}/periods"), Some(window(40, 50))).await;
    assert_eq!((status, reply["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("periods_by_cycle")));
    t.stop().await;
}

#[tokio::test]
async fn the_campaign_report_counts_participations_newcomers_and_winners_per_day() {
    let t = wxcm_tests::spawn_app_with_projections().await;
    let m = merchant(&t, "campaign-report").await;
    let id = ongoing_lottery(&t, &m, lottery(&t, 100, 2, 5)).await;
    let mut shakes = 0;
    for n in 1..=4 {
        let (_, session) = member(&t, &m, n).await;
        for _ in 0..2 {
            let (status, draw) = shake(&t, &session, &id).await;
            assert_eq!(status, StatusCode::CREATED, "{draw}");
            shakes += 1;
        }
    }
    t.catch_up().await;
    let (status, report) = get(&t, &m.owner, &format!("/admin/api/v1/campaigns/{id}/report")).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    // The prizes the events gave (the stock taken), against the read model's days.
    let won = 100 - report["campaign"]["slots"][0]["stock_left"].as_i64().unwrap();
    let days = report["days"].as_array().unwrap();
    let sum = |field: &str| days.iter().map(|d| d[field].as_i64().unwrap()).sum::<i64>();
    assert_eq!((sum("participations"), sum("participants_new"), sum("winners")), (shakes, 4, won), "{report}");
    assert_eq!(
        (report["campaign"]["participants"].as_i64(), report["campaign"]["winners"].as_i64()),
        (Some(4), Some(won))
    );
    let res = t
        .http
        .get(t.url(&format!("/admin/api/v1/campaigns/{id}/report?format=csv")))
        .bearer_auth(&m.owner)
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["content-type"], "text/csv; charset=utf-8");
    let csv = res.text().await.unwrap();
    assert!(csv.starts_with("day,visits,shares,participations,participants_new,winners\r\n"), "{csv}");
    assert_eq!(csv.lines().count(), days.len() + 1, "{csv}");
    let (status, reply) = get(&t, &m.owner, &format!("/admin/api/v1/campaigns/{id}/report?format=xml")).await;
    assert_eq!((status, reply["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_format")));
    // The tenant's daily report sums the campaign counters over its campaigns.
    let day = days[0]["day"].as_str().unwrap();
    let (_, ops) = get(&t, &m.owner, &format!("/admin/api/v1/reports/daily-ops?from={day}&to={day}")).await;
    let row = ops["rows"].as_array().unwrap().iter().find(|r| r["metric"] == "campaign_participations").cloned();
    assert_eq!(row.map(|r| (r["dimension"].clone(), r["value"].clone())), Some((json!(""), json!(shakes))), "{ops}");
    // Another tenant sees no report of it.
    let other = merchant(&t, "campaign-report-b").await;
    let (status, _) = get(&t, &other.owner, &format!("/admin/api/v1/campaigns/{id}/report")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // `wxcm audit reconcile`: the campaign row and its counters agree with a fold of the events;
    // a winner added to the row or a participation lost from a day is found.
    let report = wxcm_ops::reconcile::reconcile(&t.settings, &m.tenant).await.unwrap();
    assert!(report.campaigns.is_clean() && report.is_clean(), "{:?}", report.campaigns);
    assert_eq!(report.campaigns.campaigns, 1);
    let shard = t.app.router.route(&m.tenant).unwrap().name.clone();
    let mut db = t.shard_db(&shard).await;
    sqlx::query("UPDATE rm_campaigns SET winners = winners + 1 WHERE campaign_id = $1")
        .bind(&id)
        .execute(&mut db)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE rm_daily_ops SET value = value - 1
          WHERE tenant_id = $1 AND metric = 'campaign_participations' AND dimension = $2 AND day = $3::date",
    )
    .bind(m.tenant.as_str())
    .bind(&id)
    .bind(day)
    .execute(&mut db)
    .await
    .unwrap();
    let report = wxcm_ops::reconcile::reconcile(&t.settings, &m.tenant).await.unwrap();
    let found: Vec<(&str, &str)> = report.campaigns.differences.iter().map(|d| (d.stream.as_str(), d.field)).collect();
    assert_eq!(
        found,
        [
            (format!("campaign/{id}").as_str(), "winners"),
            (format!("daily:{day}:{id}").as_str(), "campaign_participations"),
        ],
        "{:?}",
        report.campaigns
    );
    t.stop().await;
}
