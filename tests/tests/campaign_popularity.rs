//! Popularity lotteries end to end: members' share links opened by friends
//! through WeChat OAuth at the simulator; each distinct friend gives one
//! ticket per period (repeats, concurrent repeats and the member's own
//! visits give none); the scheduler draws at the end weighted by tickets,
//! gives the prizes once, and `audit draw` recomputes the draw.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use wxcm_commands::pay_flows::MemberSession;
use wxcm_commands::ports::Role;
use wxcm_commands::{auth, members, scheduler};
use wxcm_domain::{AppId, MemberId, OpenId, TenantId};
use wxcm_tests::settings_file;
use wxcm_tests::wechat_world::{location, query_param, World, APPID, APP_SECRET};

const TENANT: &str = "pop-cinema";
const PRIZE_POINTS: i64 = 8;

/// A member registered through the admin API with `openid`, and a member-API session.
async fn member(w: &World, owner: &str, openid: &str) -> (MemberId, String) {
    let (status, created) = w.send(Method::POST, "/admin/api/v1/members", owner, Some(json!({"openid": openid}))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let member_id = MemberId::parse(created["member_id"].as_str().unwrap()).unwrap();
    let tenant = TenantId::parse(TENANT).unwrap();
    let token = format!("{TENANT}.{}", uuid::Uuid::new_v4().simple());
    let session = MemberSession {
        tenant_id: tenant.clone(),
        member_id,
        appid: AppId::parse(APPID).unwrap(),
        openid: OpenId::parse(openid).unwrap(),
        expires_at: w.t.app.clock.now() + chrono::Duration::days(30),
    };
    let shard = w.t.app.router.route(&tenant).unwrap();
    shard.pay.create_member_session(&auth::token_hash(&token), &session).await.unwrap();
    (member_id, token)
}

/// A friend `visitor` opens `link`: OAuth at the simulator, back to the callback.
/// Returns the callback's status and the page's `data-outcome`.
async fn visit(w: &World, link: &str, visitor: &str) -> (StatusCode, String) {
    let res = w.http.get(link).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FOUND, "{link}");
    let authorize = location(&res);
    assert!(authorize.contains("scope=snsapi_base"), "{authorize}");
    let state = query_param(&authorize, "state");
    let redirect = query_param(&authorize, "redirect_uri");
    let code = w.sandbox_post("/sandbox/oauth/codes", json!({"appid": APPID, "openid": visitor})).await;
    let code = code["code"].as_str().unwrap().to_owned();
    let callback = reqwest::Url::parse_with_params(&redirect, [("code", &code), ("state", &state)]).unwrap();
    let res = w.http.get(callback).send().await.unwrap();
    let status = res.status();
    let page = res.text().await.unwrap();
    let outcome = page.split("data-outcome=\"").nth(1).and_then(|rest| rest.split('"').next()).unwrap_or(&page);
    (status, outcome.to_owned())
}

async fn step(w: &World) {
    let tenant = TenantId::parse(TENANT).unwrap();
    let shard = w.t.app.router.route(&tenant).unwrap();
    let report = scheduler::step(&w.t.app, &shard).await.unwrap();
    assert_eq!(report.failed, 0, "{report:?}");
}

async fn campaign(w: &World, owner: &str, id: &str) -> Value {
    let (status, view) = w.send(Method::GET, &format!("/admin/api/v1/campaigns/{id}"), owner, None).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    view
}

#[tokio::test]
async fn each_distinct_friend_gives_one_ticket_and_the_draw_weights_by_them() {
    let w = World::new(TENANT).await;
    let owner = w.token(Role::Owner).await;
    let account = json!({"name": "Main", "token": "callback-token-123",
        "encoding_aes_key": "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", "app_secret": APP_SECRET});
    let path = format!("/admin/api/v1/tenant/official-accounts/{APPID}");
    let (status, _) = w.send(Method::PUT, &path, &owner, Some(account)).await;
    assert_eq!(status, StatusCode::OK);
    let (alice, alice_session) = member(&w, &owner, "o_pop_alice_0001").await;
    let (bob, bob_session) = member(&w, &owner, "o_pop_bob_000001").await;

    let now = w.t.app.clock.now();
    let body = json!({
        "name": "Most popular fan",
        "starts_at": now + chrono::Duration::hours(1),
        "ends_at": now + chrono::Duration::days(2),
        "limits": {"per_period": 3},
        "cycle": "whole_campaign",
        "entrants_max": 100,
        "tiers": [{"prize": {"kind": "points", "points": PRIZE_POINTS}, "count": 2}],
    });
    // Bad bodies change nothing: an entry cost is not a popularity lottery's.
    let mut paid = body.clone();
    paid["entry_cost_points"] = json!(10);
    let (status, reply) = w.send(Method::POST, "/admin/api/v1/popularity-campaigns", &owner, Some(paid)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{reply}");
    let (status, created) = w.send(Method::POST, "/admin/api/v1/popularity-campaigns", &owner, Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!((created["kind"].as_str(), created["status"].as_str()), (Some("popularity_lottery"), Some("draft")));
    let id = created["campaign_id"].as_str().unwrap().to_owned();

    // A share link before the campaign runs: friends' visits give nothing yet.
    let (status, link) =
        w.send(Method::GET, &format!("/m/api/v1/campaigns/{id}/share-link"), &alice_session, None).await;
    assert_eq!(status, StatusCode::OK, "{link}");
    let alice_link = link["url"].as_str().unwrap().to_owned();
    assert_eq!(alice_link, w.url(&format!("/m/campaigns/{TENANT}/{id}/share/{alice}")));
    assert_eq!(visit(&w, &alice_link, "o_pop_friend_0001").await, (StatusCode::OK, "not_ongoing".into()));

    let (status, _) = w.send(Method::POST, &format!("/admin/api/v1/campaigns/{id}/schedule"), &owner, None).await;
    assert_eq!(status, StatusCode::OK);
    w.t.clock.advance(chrono::Duration::minutes(61));
    step(&w).await;
    let view = campaign(&w, &owner, &id).await;
    assert_eq!(view["status"], "ongoing", "{view}");
    assert_eq!(view["periodic"]["periods"][0]["state"], "open", "{view}");
    let (_, link) = w.send(Method::GET, &format!("/m/api/v1/campaigns/{id}/share-link"), &bob_session, None).await;
    let bob_link = link["url"].as_str().unwrap().to_owned();

    // Friend 1 gives Alice a ticket once; again (even after a new OAuth code) nothing.
    assert_eq!(visit(&w, &alice_link, "o_pop_friend_0001").await, (StatusCode::OK, "counted".into()));
    assert_eq!(visit(&w, &alice_link, "o_pop_friend_0001").await, (StatusCode::OK, "already_counted".into()));
    // Alice's own visit gives none.
    assert_eq!(visit(&w, &alice_link, "o_pop_alice_0001").await, (StatusCode::OK, "self_visit".into()));
    // Friend 2 opens Alice's link in ten tabs at once: one ticket.
    let outcomes = futures::future::join_all((0..10).map(|_| visit(&w, &alice_link, "o_pop_friend_0002"))).await;
    let counted = outcomes.iter().filter(|(s, o)| *s == StatusCode::OK && o == "counted").count();
    let repeats = outcomes.iter().filter(|(s, o)| *s == StatusCode::OK && o == "already_counted").count();
    assert_eq!((counted, repeats), (1, 9), "{outcomes:?}");
    // The same friend may also help Bob: one ticket per (member, friend).
    assert_eq!(visit(&w, &bob_link, "o_pop_friend_0001").await, (StatusCode::OK, "counted".into()));
    // Alice's third friend fills her per-period limit of 3; a fourth is refused.
    assert_eq!(visit(&w, &alice_link, "o_pop_friend_0003").await, (StatusCode::OK, "counted".into()));
    assert_eq!(visit(&w, &alice_link, "o_pop_friend_0004").await, (StatusCode::OK, "limit_reached".into()));
    let view = campaign(&w, &owner, &id).await;
    let period = &view["periodic"]["periods"][0];
    assert_eq!((period["entries"].as_i64(), period["entrants"].as_i64()), (Some(4), Some(2)), "{view}");

    // Members do not enter a popularity lottery themselves; bad links and states are 4xx.
    let (status, reply) =
        w.send(Method::POST, &format!("/m/api/v1/campaigns/{id}/entries"), &alice_session, None).await;
    assert_eq!((status, reply["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("wrong_kind")));
    let res = w.http.get(w.url(&format!("/m/campaigns/{TENANT}/{id}/share/not-a-member"))).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let stranger = MemberId::new_random();
    let res = w.http.get(w.url(&format!("/m/campaigns/{TENANT}/{id}/share/{stranger}"))).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let res = w.http.get(w.url("/m/campaigns/share/callback?code=x&state=forged")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let unknown = uuid::Uuid::new_v4();
    let (status, _) =
        w.send(Method::GET, &format!("/m/api/v1/campaigns/{unknown}/share-link"), &alice_session, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The end: the scheduler draws the one period; both ticket holders win (two prizes).
    w.t.clock.advance(chrono::Duration::days(2));
    step(&w).await;
    step(&w).await;
    let view = campaign(&w, &owner, &id).await;
    let period = &view["periodic"]["periods"][0];
    assert_eq!((period["state"].as_str(), period["winners"].as_i64()), (Some("drawn"), Some(2)), "{view}");
    assert_eq!(period["seed"].as_str().map(str::len), Some(64));
    let tenant = TenantId::parse(TENANT).unwrap();
    for member_id in [alice, bob] {
        let points = members::get(&w.t.app, &tenant, member_id).await.unwrap().points;
        assert_eq!(points, PRIZE_POINTS, "{member_id}");
    }
    step(&w).await;
    assert_eq!(members::get(&w.t.app, &tenant, alice).await.unwrap().points, PRIZE_POINTS, "prizes once");
    // A visit after the end gives nothing.
    assert_eq!(visit(&w, &bob_link, "o_pop_friend_0009").await, (StatusCode::OK, "not_ongoing".into()));

    // `wxcm audit draw` recomputes the draw from the events, tickets checked against their visitors.
    let file = settings_file(&w.t.settings);
    let output = tokio::process::Command::new(wxcm_tests::wxcm_bin())
        .arg("--config")
        .arg(file.path())
        .args(["audit", "draw", "--tenant", TENANT, "--campaign", &id, "--json"])
        .env_remove("WXCM_SECRET_KEY")
        .env_remove("WXCM_CONFIG")
        .output()
        .await
        .unwrap();
    let report: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    assert_eq!(output.status.code(), Some(0), "{report}");
    assert_eq!((report["ok"].as_bool(), report["periods_checked"].as_i64()), (Some(true), Some(1)), "{report}");
    w.stop().await;
}
