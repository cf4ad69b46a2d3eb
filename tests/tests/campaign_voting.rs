//! Voting campaigns end to end through the HTTP API, against the real
//! Postgres, two shards: one member's concurrent votes stop at the daily
//! limit, one vote per item per period, an approval's reward granted once
//! however often approve is retried, bad input refused with nothing changed,
//! and the live ranking (read model) equal to the votes cast.

use futures::stream::{self, StreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};
use wxcm_commands::pay_flows::MemberSession;
use wxcm_commands::ports::Role;
use wxcm_commands::{auth, members, scheduler, tenants, CommandContext};
use wxcm_domain::member::{CardLevel, RegistrationSource};
use wxcm_domain::{Actor, AppId, MemberId, OpenId, TenantId};
use wxcm_tests::{spawn_app, spawn_app_with_projections, TestApp};

const PASSWORD: &str = "a-long-enough-password";
const REWARD: i64 = 30;

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

/// A registered member (card holder) with a member-API session.
async fn member(t: &TestApp, m: &Merchant, n: usize) -> (MemberId, String) {
    let openid = OpenId::parse(&format!("oVote_{n:08}")).unwrap();
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

/// A voting campaign body: starts in an hour, runs two days.
fn voting(t: &TestApp, limits: Value, period: &str) -> Value {
    let now = t.app.clock.now();
    json!({
        "name": "Best poster",
        "starts_at": now + chrono::Duration::hours(1),
        "ends_at": now + chrono::Duration::days(2),
        "members_only": true,
        "limits": limits,
        "submitters": "anyone",
        "approval_reward_points": REWARD,
        "vote_period": period,
        "items_max": 20,
        "items_per_member_max": 2,
    })
}

async fn create(t: &TestApp, m: &Merchant, body: Value) -> String {
    let (status, created) = post(t, &m.owner, "/admin/api/v1/voting-campaigns", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!((created["kind"].as_str(), created["status"].as_str()), (Some("voting"), Some("draft")));
    created["campaign_id"].as_str().unwrap().to_owned()
}

async fn operator_item(t: &TestApp, m: &Merchant, id: &str, title: &str) -> String {
    let path = format!("/admin/api/v1/campaigns/{id}/vote-items");
    let (status, item) = post(t, &m.owner, &path, Some(json!({"title": title}))).await;
    assert_eq!(status, StatusCode::CREATED, "{item}");
    assert_eq!(item["status"], "approved");
    item["item_id"].as_str().unwrap().to_owned()
}

async fn schedule(t: &TestApp, m: &Merchant, id: &str) {
    let (status, scheduled) = post(t, &m.owner, &format!("/admin/api/v1/campaigns/{id}/schedule"), None).await;
    assert_eq!(status, StatusCode::OK, "{scheduled}");
}

/// Lets the scheduler start the campaign an hour later.
async fn start(t: &TestApp, m: &Merchant, id: &str) {
    t.clock.advance(chrono::Duration::minutes(61));
    step(t, m).await;
    let (_, view) = get(t, &m.owner, &format!("/admin/api/v1/campaigns/{id}")).await;
    assert_eq!(view["status"], "ongoing", "{view}");
}

async fn step(t: &TestApp, m: &Merchant) -> scheduler::StepReport {
    let shard = t.app.router.route(&m.tenant).unwrap();
    let report = scheduler::step(&t.app, &shard).await.unwrap();
    assert_eq!(report.failed, 0, "{report:?}");
    report
}

async fn vote(t: &TestApp, session: &str, id: &str, item: &str) -> (StatusCode, Value) {
    post(t, session, &format!("/m/api/v1/campaigns/{id}/vote-items/{item}/votes"), None).await
}

async fn count(t: &TestApp, m: &Merchant, sql: &str) -> i64 {
    let shard = t.app.router.route(&m.tenant).unwrap().name.clone();
    let mut db = t.shard_db(&shard).await;
    sqlx::query_scalar(sql).bind(m.tenant.as_str()).fetch_one(&mut db).await.unwrap()
}

async fn events_of(t: &TestApp, m: &Merchant, event_type: &str) -> i64 {
    let sql = format!(
        "SELECT count(*) FROM events WHERE tenant_id = $1 AND aggregate_type = 'campaign' AND event_type = '{event_type}'"
    );
    count(t, m, &sql).await
}

async fn all_events(t: &TestApp, m: &Merchant) -> i64 {
    count(t, m, "SELECT count(*) FROM events WHERE tenant_id = $1").await
}

async fn points(t: &TestApp, m: &Merchant, member_id: MemberId) -> i64 {
    members::get(&t.app, &m.tenant, member_id).await.unwrap().points
}

#[tokio::test]
async fn one_members_concurrent_votes_stop_at_the_daily_limit_and_one_per_item() {
    let t = spawn_app().await;
    let m = merchant(&t, "vote-eager").await;
    let id = create(&t, &m, voting(&t, json!({"per_day": 3}), "day")).await;
    let mut items = Vec::new();
    for n in 0..6 {
        items.push(operator_item(&t, &m, &id, &format!("poster {n}")).await);
    }
    schedule(&t, &m, &id).await;
    start(&t, &m, &id).await;
    let (_, session) = member(&t, &m, 1).await;
    // Two votes for each of six items, all at once: three pass, on three different items.
    let asks: Vec<&String> = items.iter().chain(items.iter()).collect();
    let results: Vec<(StatusCode, Value)> =
        stream::iter(asks).map(|item| vote(&t, &session, &id, item)).buffer_unordered(12).collect().await;
    let counted: Vec<&Value> = results.iter().filter(|(s, _)| *s == StatusCode::CREATED).map(|(_, b)| b).collect();
    assert_eq!(counted.len(), 3, "{results:?}");
    for (status, body) in &results {
        if *status != StatusCode::CREATED {
            let code = body["error"]["code"].as_str().unwrap_or_default();
            assert_eq!(*status, StatusCode::CONFLICT, "{body}");
            assert!(["daily_limit_reached", "already_voted"].contains(&code), "{body}");
        }
    }
    let mut voted: Vec<&str> = counted.iter().map(|b| b["item_id"].as_str().unwrap()).collect();
    voted.sort_unstable();
    voted.dedup();
    assert_eq!(voted.len(), 3, "one vote per item: {counted:?}");
    let mut totals: Vec<u64> = counted.iter().map(|b| b["member_votes_today"].as_u64().unwrap()).collect();
    totals.sort_unstable();
    assert_eq!(totals, [1, 2, 3]);
    assert_eq!(events_of(&t, &m, "CampaignVoteCast").await, 3);

    // The same item again the same day: already voted (checked before the limit).
    let (status, body) = vote(&t, &session, &id, voted[0]).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("already_voted")));
    let fresh = items.iter().find(|i| !voted.contains(&i.as_str())).unwrap();
    let (status, body) = vote(&t, &session, &id, fresh).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("daily_limit_reached")));
    // The next merchant day the member votes again, even for the same item.
    t.clock.advance(chrono::Duration::days(1));
    let (status, body) = vote(&t, &session, &id, voted[0]).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!((body["member_votes"].as_u64(), body["member_votes_today"].as_u64()), (Some(4), Some(1)));
    // A replayed vote answers the first result and counts nothing.
    let path = format!("/m/api/v1/campaigns/{id}/vote-items/{fresh}/votes");
    let again = || send(t.http.post(t.url(&path)).bearer_auth(&session).header("Idempotency-Key", "vote-key-00001"));
    let ((s1, b1), (s2, b2)) = (again().await, again().await);
    assert_eq!((s1, s2), (StatusCode::CREATED, StatusCode::CREATED), "{b1} {b2}");
    assert_eq!(b1, b2);
    assert_eq!(events_of(&t, &m, "CampaignVoteCast").await, 5);
    t.stop().await;
}

#[tokio::test]
async fn an_approved_items_reward_is_granted_once_however_often_approve_is_retried() {
    let t = spawn_app().await;
    let m = merchant(&t, "vote-reward").await;
    let id = create(&t, &m, voting(&t, json!({}), "campaign")).await;
    schedule(&t, &m, &id).await;
    start(&t, &m, &id).await;
    let (member_id, session) = member(&t, &m, 1).await;
    let (status, item) = post(
        &t,
        &session,
        &format!("/m/api/v1/campaigns/{id}/vote-items"),
        Some(json!({"title": "My poster", "description": "drawn by hand\nin pencil"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{item}");
    assert_eq!(item["status"], "pending");
    let item_id = item["item_id"].as_str().unwrap().to_owned();
    // Pending: no votes yet.
    let (_, voter) = member(&t, &m, 2).await;
    let (status, body) = vote(&t, &voter, &id, &item_id).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("vote_item_not_approved")));

    // Ten approvals at once, each with its own key: one event, one reward.
    let approve = format!("/admin/api/v1/campaigns/{id}/vote-items/{item_id}/approve");
    let results: Vec<(StatusCode, Value)> =
        stream::iter(0..10).map(|_| post(&t, &m.owner, &approve, None)).buffer_unordered(10).collect().await;
    for (status, body) in &results {
        assert_eq!(*status, StatusCode::OK, "{body}");
        assert_eq!((body["status"].as_str(), body["reward_points"].as_i64()), (Some("approved"), Some(REWARD)));
    }
    assert_eq!(events_of(&t, &m, "CampaignVoteItemApproved").await, 1);
    assert_eq!(points(&t, &m, member_id).await, REWARD);
    let due = "SELECT count(*) FROM due_work WHERE tenant_id = $1 AND kind = 'campaign_vote_reward'";
    assert_eq!(count(&t, &m, due).await, 1);
    // The due work grants again under the same key: a replay.
    t.clock.advance(chrono::Duration::minutes(1));
    step(&t, &m).await;
    assert_eq!(points(&t, &m, member_id).await, REWARD);
    assert_eq!(count(&t, &m, due).await, 0);
    let (status, _) = post(&t, &m.owner, &approve, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(points(&t, &m, member_id).await, REWARD);
    // An approved item cannot be rejected; it takes votes.
    let reject = format!("/admin/api/v1/campaigns/{id}/vote-items/{item_id}/reject");
    let (status, body) = post(&t, &m.owner, &reject, Some(json!({"reason": "late"}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("vote_item_approved")));
    let (status, body) = vote(&t, &voter, &id, &item_id).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // A rejected item is final and earns nothing.
    let (status, other) =
        post(&t, &session, &format!("/m/api/v1/campaigns/{id}/vote-items"), Some(json!({"title": "Second"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{other}");
    let other_id = other["item_id"].as_str().unwrap();
    let reject = format!("/admin/api/v1/campaigns/{id}/vote-items/{other_id}/reject");
    let (status, body) = post(&t, &m.owner, &reject, Some(json!({"reason": "off topic"}))).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("rejected")), "{body}");
    let (status, body) =
        post(&t, &m.owner, &format!("/admin/api/v1/campaigns/{id}/vote-items/{other_id}/approve"), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("vote_item_rejected")));
    // The member sees their own items, every status.
    let (status, mine) = get(&t, &session, &format!("/m/api/v1/campaigns/{id}/vote-items")).await;
    assert_eq!(status, StatusCode::OK, "{mine}");
    let mut statuses: Vec<(&str, Option<i64>)> = mine["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["status"].as_str().unwrap(), i["reward_points"].as_i64()))
        .collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [("approved", Some(REWARD)), ("rejected", None)]);
    let (_, theirs) = get(&t, &voter, &format!("/m/api/v1/campaigns/{id}/vote-items")).await;
    assert_eq!(theirs["items"], json!([]));
    // Two items per member at most.
    let (status, body) =
        post(&t, &session, &format!("/m/api/v1/campaigns/{id}/vote-items"), Some(json!({"title": "Third"}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("member_items_limit_reached")));
    assert_eq!(points(&t, &m, member_id).await, REWARD);
    t.stop().await;
}

#[tokio::test]
async fn bad_input_is_refused_clearly_and_changes_nothing() {
    let t = spawn_app().await;
    let m = merchant(&t, "vote-bad").await;
    let other = merchant(&t, "vote-other").await;
    let id = create(&t, &m, voting(&t, json!({"lifetime": 5}), "campaign")).await;
    let item = operator_item(&t, &m, &id, "poster").await;
    schedule(&t, &m, &id).await;
    let (_, session) = member(&t, &m, 1).await;
    let (_, stranger) = member(&t, &other, 1).await;
    let before = all_events(&t, &m).await;
    let unknown = uuid::Uuid::new_v4();

    let code = |r: &(StatusCode, Value)| (r.0, r.1["error"]["code"].as_str().map(str::to_owned));
    let expect = |status: StatusCode, c: &str| (status, Some(c.to_owned()));
    // Before the start.
    assert_eq!(code(&vote(&t, &session, &id, &item).await), expect(StatusCode::CONFLICT, "not_ongoing"));
    let submit = format!("/m/api/v1/campaigns/{id}/vote-items");
    let r = post(&t, &session, &submit, Some(json!({"title": "early"}))).await;
    assert_eq!(code(&r), expect(StatusCode::CONFLICT, "not_ongoing"));
    // Unknown campaign, another tenant's campaign (both ways), unknown item, malformed ids and bodies.
    let r = vote(&t, &session, &unknown.to_string(), &item).await;
    assert_eq!(code(&r), expect(StatusCode::NOT_FOUND, "campaign_not_found"));
    assert_eq!(code(&vote(&t, &stranger, &id, &item).await), expect(StatusCode::NOT_FOUND, "campaign_not_found"));
    let r = post(&t, &other.owner, &format!("/admin/api/v1/campaigns/{id}/vote-items/{item}/approve"), None).await;
    assert_eq!(code(&r), expect(StatusCode::NOT_FOUND, "campaign_not_found"));
    let r =
        post(&t, &other.owner, &format!("/admin/api/v1/campaigns/{id}/vote-items"), Some(json!({"title": "x"}))).await;
    assert_eq!(code(&r), expect(StatusCode::NOT_FOUND, "campaign_not_found"));
    let r = get(&t, &stranger, &format!("/m/api/v1/campaigns/{id}/ranking")).await;
    assert_eq!(code(&r), expect(StatusCode::NOT_FOUND, "campaign_not_found"));
    let r = get(&t, &other.owner, &format!("/admin/api/v1/campaigns/{id}/vote-items")).await;
    assert_eq!(code(&r), expect(StatusCode::NOT_FOUND, "campaign_not_found"));
    let r = vote(&t, &session, &id, "not-an-id").await;
    assert_eq!(code(&r), expect(StatusCode::BAD_REQUEST, "invalid_item_id"));
    let r = post(&t, &m.owner, &format!("/admin/api/v1/campaigns/{id}/vote-items"), Some(json!({"title": " "}))).await;
    assert_eq!(code(&r), expect(StatusCode::UNPROCESSABLE_ENTITY, "invalid_text"));
    let mut body = voting(&t, json!({"per_period": 1}), "day");
    let r = post(&t, &m.owner, "/admin/api/v1/voting-campaigns", Some(body.clone())).await;
    assert_eq!(code(&r), expect(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"));
    body["limits"] = json!({});
    body["items_max"] = json!(201);
    let r = post(&t, &m.owner, "/admin/api/v1/voting-campaigns", Some(body.clone())).await;
    assert_eq!(code(&r), expect(StatusCode::UNPROCESSABLE_ENTITY, "invalid_items_max"));
    body["items_max"] = json!(5);
    body["submitters"] = json!("operators");
    let r = post(&t, &m.owner, "/admin/api/v1/voting-campaigns", Some(body)).await;
    assert_eq!(code(&r), expect(StatusCode::UNPROCESSABLE_ENTITY, "invalid_terms"));
    // Not a draft any more: its terms are fixed.
    let r = send(
        t.http
            .put(t.url(&format!("/admin/api/v1/campaigns/{id}/voting-terms")))
            .bearer_auth(&m.owner)
            .header("Idempotency-Key", key())
            .json(&voting(&t, json!({}), "day")),
    )
    .await;
    assert_eq!(code(&r), expect(StatusCode::CONFLICT, "not_draft"));
    assert_eq!(all_events(&t, &m).await, before);

    // Running: an unknown item is 404, a lottery takes no votes.
    start(&t, &m, &id).await;
    let started = all_events(&t, &m).await;
    let r = vote(&t, &session, &id, &unknown.to_string()).await;
    assert_eq!(code(&r), expect(StatusCode::NOT_FOUND, "vote_item_not_found"));
    let now = t.app.clock.now();
    let lottery = json!({"name": "Shake", "starts_at": now, "ends_at": now + chrono::Duration::days(1),
        "chances": {"lifetime": 3}, "prizes_per_member_max": 1,
        "slots": [{"prize": {"kind": "points", "points": 5}, "weight": 1, "stock": 10},
                  {"prize": {"kind": "thanks"}, "weight": 1}]});
    let (_, shake) = post(&t, &m.owner, "/admin/api/v1/campaigns", Some(lottery)).await;
    let shake_id = shake["campaign_id"].as_str().unwrap();
    let with_lottery = all_events(&t, &m).await;
    assert_eq!(code(&vote(&t, &session, shake_id, &item).await), expect(StatusCode::CONFLICT, "wrong_kind"));
    let r = get(&t, &session, &format!("/m/api/v1/campaigns/{shake_id}/ranking")).await;
    assert_eq!(code(&r), expect(StatusCode::CONFLICT, "wrong_kind"));
    assert_eq!(all_events(&t, &m).await, with_lottery);
    assert_eq!(with_lottery, started + 1);

    // After the end (by the clock, before the scheduler records it): nothing is counted.
    t.clock.advance(chrono::Duration::days(2));
    assert_eq!(code(&vote(&t, &session, &id, &item).await), expect(StatusCode::CONFLICT, "not_ongoing"));
    let r = post(&t, &session, &submit, Some(json!({"title": "late"}))).await;
    assert_eq!(code(&r), expect(StatusCode::CONFLICT, "not_ongoing"));
    let r =
        post(&t, &m.owner, &format!("/admin/api/v1/campaigns/{id}/vote-items"), Some(json!({"title": "late"}))).await;
    assert_eq!(code(&r), expect(StatusCode::CONFLICT, "already_ended"));
    assert_eq!(all_events(&t, &m).await, with_lottery);
    assert_eq!(events_of(&t, &m, "CampaignVoteCast").await, 0);
    t.stop().await;
}

#[tokio::test]
async fn the_live_ranking_equals_the_votes_cast() {
    let t = spawn_app_with_projections().await;
    let m = merchant(&t, "vote-ranking").await;
    let id = create(&t, &m, voting(&t, json!({}), "campaign")).await;
    let items = [
        operator_item(&t, &m, &id, "red").await,
        operator_item(&t, &m, &id, "green").await,
        operator_item(&t, &m, &id, "blue").await,
    ];
    schedule(&t, &m, &id).await;
    start(&t, &m, &id).await;
    let (_, submitter) = member(&t, &m, 100).await;
    let (_, pending) =
        post(&t, &submitter, &format!("/m/api/v1/campaigns/{id}/vote-items"), Some(json!({"title": "pending one"})))
            .await;
    // Member n votes for the first n % 3 + 1 items: blue 2, green 4, red 6 of six members.
    let mut expected = [0u64; 3];
    for n in 0..6 {
        let (_, session) = member(&t, &m, n).await;
        for (i, item) in items.iter().enumerate().take(n % 3 + 1) {
            let (status, body) = vote(&t, &session, &id, item).await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
            expected[i] += 1;
        }
    }
    assert_eq!(expected, [6, 4, 2]);
    t.catch_up().await;
    let (status, ranking) = get(&t, &submitter, &format!("/m/api/v1/campaigns/{id}/ranking")).await;
    assert_eq!(status, StatusCode::OK, "{ranking}");
    let listed: Vec<(String, u64, u64)> = ranking["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["item_id"].as_str().unwrap().to_owned(), i["votes"].as_u64().unwrap(), i["rank"].as_u64().unwrap()))
        .collect();
    let want: Vec<(String, u64, u64)> =
        items.iter().zip(expected).zip(1..).map(|((item, votes), rank)| (item.clone(), votes, rank)).collect();
    assert_eq!(listed, want, "approved items only, most votes first");
    assert!(ranking["items"][0]["member_id"].is_null());
    // The admin list filters by status and names the submitter.
    let path = format!("/admin/api/v1/campaigns/{id}/vote-items?status=pending");
    let (status, pending_list) = get(&t, &m.owner, &path).await;
    assert_eq!(status, StatusCode::OK, "{pending_list}");
    let only: Vec<&str> =
        pending_list["items"].as_array().unwrap().iter().map(|i| i["item_id"].as_str().unwrap()).collect();
    assert_eq!(only, [pending["item_id"].as_str().unwrap()]);
    assert_eq!(pending_list["items"][0]["submitted_by"], "member");
    assert!(pending_list["items"][0]["member_id"].is_string());
    let (_, all) = get(&t, &m.owner, &format!("/admin/api/v1/campaigns/{id}/vote-items")).await;
    assert_eq!(all["items"].as_array().unwrap().len(), 4);
    let (_, view) = get(&t, &m.owner, &format!("/admin/api/v1/campaigns/{id}")).await;
    assert_eq!(view["voting"]["items"], 4, "{view}");

    // `wxcm projections rebuild votes` gives the same ranking from the events.
    let shard = t.app.router.route(&m.tenant).unwrap().name.clone();
    let mut writer = t.shard_db(&shard).await;
    let reader = t.shard_db(&shard).await;
    let scope = wxcm_projections::rebuild::RebuildScope::Tenant(m.tenant.to_string());
    let report = wxcm_projections::votes::rebuild_votes(&mut writer, reader, &scope).await.unwrap();
    assert_eq!(report.streams, 1, "{report:?}");
    let (_, rebuilt) = get(&t, &submitter, &format!("/m/api/v1/campaigns/{id}/ranking")).await;
    assert_eq!(rebuilt, ranking);

    // `wxcm audit reconcile` checks every item against the aggregate: clean, then a vote added
    // to one row is found.
    let clean = wxcm_ops::reconcile::reconcile(&t.settings, &m.tenant).await.unwrap();
    assert!(clean.campaigns.is_clean(), "{:?}", clean.campaigns);
    assert_eq!(clean.campaigns.vote_items, 4);
    sqlx::query("UPDATE rm_vote_items SET votes = votes + 1 WHERE item_id = $1")
        .bind(&items[0])
        .execute(&mut writer)
        .await
        .unwrap();
    let tampered = wxcm_ops::reconcile::reconcile(&t.settings, &m.tenant).await.unwrap();
    let found: Vec<(&str, &str)> =
        tampered.campaigns.differences.iter().map(|d| (d.stream.as_str(), d.field)).collect();
    assert_eq!(found, [(format!("campaign/{id}/item/{}", items[0]).as_str(), "votes")], "{:?}", tampered.campaigns);
    t.stop().await;
}
