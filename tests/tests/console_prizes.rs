//! A physical campaign prize handed over at the counter, in a real headless
//! Chromium: a member wins a periodic lottery's mug; staff find the member by
//! card, see the prize waiting and hand it over once (the API says when, the
//! campaign stream has one `CampaignPrizeHandedOver`); another tenant sees
//! nothing of it and bad input changes nothing.

use chrono::Duration;
use reqwest::StatusCode;
use serde_json::json;
use wxcm_commands::campaigns::periods;
use wxcm_commands::ports::Role;
use wxcm_commands::{members, scheduler, CommandContext};
use wxcm_domain::campaign::CampaignId;
use wxcm_domain::{MemberId, TenantId};
use wxcm_tests::admin::{get, login, post, tenant_user};
use wxcm_tests::browser::Browser;
use wxcm_tests::{spawn_app, TestApp};

const TENANT: &str = "prize-counter";
const OTHER: &str = "prize-counter-other";

async fn step(t: &TestApp, tenant: &TenantId) {
    let shard = t.app.router.route(tenant).unwrap();
    let report = scheduler::step(&t.app, &shard).await.unwrap();
    assert_eq!(report.failed, 0, "{report:?}");
}

async fn hand_overs(t: &TestApp, tenant: &TenantId) -> i64 {
    let shard = t.app.router.route(tenant).unwrap().name.clone();
    let mut db = t.shard_db(&shard).await;
    sqlx::query_scalar("SELECT count(*) FROM events WHERE tenant_id = $1 AND event_type = 'CampaignPrizeHandedOver'")
        .bind(tenant.as_str())
        .fetch_one(&mut db)
        .await
        .unwrap()
}

/// A daily lottery with one mug, entered by `member` alone and drawn: the member wins it.
async fn won_mug(t: &TestApp, owner: &str, tenant: &TenantId, member_id: MemberId) -> String {
    let now = t.app.clock.now();
    let body = json!({
        "name": "Mug of the day",
        "starts_at": now + Duration::hours(1),
        "ends_at": now + Duration::days(3),
        "cycle": "daily",
        "entrants_max": 50,
        "tiers": [{"prize": {"kind": "physical", "item": "Cinema mug"}, "count": 1}],
    });
    let (status, created) = post(t, owner, "/admin/api/v1/periodic-campaigns", body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["campaign_id"].as_str().unwrap().to_owned();
    let (status, scheduled) = post(t, owner, &format!("/admin/api/v1/campaigns/{id}/schedule"), json!(null)).await;
    assert_eq!(status, StatusCode::OK, "{scheduled}");
    t.clock.advance(Duration::minutes(61));
    step(t, tenant).await;
    let key = members::system_key(&["prize-counter-entry", &id]).unwrap();
    let ctx = CommandContext::new(tenant.clone(), key, "test".into());
    let campaign = CampaignId::parse(&id).unwrap();
    assert_eq!(periods::enter(&t.app, &ctx, campaign, member_id).await.unwrap(), 1);
    t.clock.advance(Duration::days(1));
    step(t, tenant).await;
    let (_, view) = get(t, owner, &format!("/admin/api/v1/campaigns/{id}")).await;
    assert_eq!(view["periodic"]["periods"][0]["state"], "drawn", "{view}");
    id
}

#[tokio::test]
async fn staff_hand_a_won_physical_prize_over_once_at_the_counter() {
    let t = spawn_app().await;
    tenant_user(&t, TENANT, "Prize Cinema", "owner", Role::Owner).await;
    tenant_user(&t, TENANT, "Prize Cinema", "clerk", Role::Staff).await;
    tenant_user(&t, OTHER, "Other Mall", "owner", Role::Owner).await;
    let tenant = TenantId::parse(TENANT).unwrap();
    let owner = login(&t, TENANT, "owner").await;
    let (status, member) = post(&t, &owner, "/admin/api/v1/members", json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{member}");
    let member_id = MemberId::parse(member["member_id"].as_str().unwrap()).unwrap();
    let campaign = won_mug(&t, &owner, &tenant, member_id).await;

    let prizes_path = format!("/admin/api/v1/members/{member_id}/campaign-prizes");
    let (status, waiting) = get(&t, &owner, &format!("{prizes_path}?state=waiting")).await;
    assert_eq!(status, StatusCode::OK, "{waiting}");
    let prize = &waiting["prizes"][0];
    assert_eq!((prize["item"].as_str(), prize["campaign_id"].as_str()), (Some("Cinema mug"), Some(campaign.as_str())));
    assert_eq!(prize["award"], json!({"kind": "period", "period_no": 1, "rank": 1}), "{waiting}");
    assert!(prize["handed_over_at"].is_null());
    // Bad input and another tenant: clear answers, nothing changed.
    let (status, body) = get(&t, &owner, &format!("{prizes_path}?state=soon")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_state")));
    let other = login(&t, OTHER, "owner").await;
    let (status, body) = get(&t, &other, &prizes_path).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("member_not_found")));
    let (status, body) = post(
        &t,
        &other,
        &format!("/admin/api/v1/campaigns/{campaign}/hand-overs"),
        json!({"award": {"kind": "period", "period_no": 1, "rank": 1}}),
    )
    .await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("campaign_not_found")));
    assert_eq!(hand_overs(&t, &tenant).await, 0);

    // The clerk at the counter, phone-sized.
    let browser = Browser::start(375, 800).await;
    browser.goto(&format!("{}/staff/", t.base_url)).await;
    browser.fill("input[name=tenant]", TENANT).await;
    browser.fill("input[name=username]", "clerk").await;
    browser.fill("input[name=password]", wxcm_tests::admin::PASSWORD).await;
    browser.click_button("Sign in").await;
    browser.fill("input[name=card]", member["card_no"].as_str().unwrap()).await;
    browser.click_button("Find member").await;
    let shown = browser
        .wait_until("the prize", "return document.querySelector('#prizes-list button.hand-over')?.dataset.item ?? null")
        .await;
    assert_eq!(shown, json!("Cinema mug"));
    browser.eval("document.getElementById('prizes-title').scrollIntoView(); return true").await;
    let path = browser.screenshot("staff-prizes-375").await;
    assert!(std::fs::metadata(&path).map(|m| m.len() > 1000).unwrap_or(false), "{path:?}");
    // A double tap hands it over once.
    browser
        .eval("const b = document.querySelector('#prizes-list button.hand-over'); b.click(); b.click(); return true")
        .await;
    let done = browser
        .wait_until(
            "the hand-over",
            "return document.querySelector('#prizes-title').parentElement.querySelector('.notice-ok')?.textContent ?? null",
        )
        .await;
    assert!(done.as_str().unwrap().starts_with("Handed over: Cinema mug"), "{done}");
    browser
        .wait_until(
            "the empty list",
            "return document.querySelector('#prizes-list')?.textContent.includes('No prize waiting') ?? false",
        )
        .await;
    browser.close().await;

    assert_eq!(hand_overs(&t, &tenant).await, 1);
    let (_, all) = get(&t, &owner, &prizes_path).await;
    assert!(all["prizes"][0]["handed_over_at"].is_string(), "{all}");
    let (_, waiting) = get(&t, &owner, &format!("{prizes_path}?state=waiting")).await;
    assert_eq!(waiting["prizes"].as_array().map(Vec::len), Some(0), "{waiting}");
    // Again under a new key: refused, still one hand-over.
    let (status, body) = post(
        &t,
        &owner,
        &format!("/admin/api/v1/campaigns/{campaign}/hand-overs"),
        json!({"award": {"kind": "period", "period_no": 1, "rank": 1}}),
    )
    .await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("already_handed_over")), "{body}");
    assert_eq!(hand_overs(&t, &tenant).await, 1);
    t.stop().await;
}
