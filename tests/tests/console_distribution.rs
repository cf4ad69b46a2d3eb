//! The console's Distribution section in a real headless Chromium: the owner
//! approves one application (a double click approves once), rejects another
//! with a reason, suspends and reinstates the new distributor; an auditor
//! sees the same lists without a single decision button. Every decision is
//! checked in the API and in the distributor's event stream.

use reqwest::StatusCode;
use serde_json::{json, Value};
use wxcm_commands::auth;
use wxcm_commands::pay_flows::MemberSession;
use wxcm_commands::ports::Role;
use wxcm_domain::{AppId, MemberId, OpenId, TenantId};
use wxcm_tests::admin::{get, key, login, post, tenant_user, PASSWORD};
use wxcm_tests::browser::Browser;
use wxcm_tests::{spawn_app, TestApp};

const TENANT: &str = "dist-console";

/// A member with `openid` and a member-API session token.
async fn member(t: &TestApp, owner: &str, openid: &str) -> (MemberId, String) {
    let (status, created) = post(t, owner, "/admin/api/v1/members", json!({"openid": openid})).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let member_id = MemberId::parse(created["member_id"].as_str().unwrap()).unwrap();
    let tenant = TenantId::parse(TENANT).unwrap();
    let token = format!("{TENANT}.{}", uuid::Uuid::new_v4().simple());
    let session = MemberSession {
        tenant_id: tenant.clone(),
        member_id,
        appid: AppId::parse("wx1234567890abcdef").unwrap(),
        openid: OpenId::parse(openid).unwrap(),
        expires_at: t.app.clock.now() + chrono::Duration::days(30),
    };
    let shard = t.app.router.route(&tenant).unwrap();
    shard.pay.create_member_session(&auth::token_hash(&token), &session).await.unwrap();
    (member_id, token)
}

async fn apply(t: &TestApp, session: &str) {
    let res = t
        .http
        .post(t.url("/m/api/v1/distribution/application"))
        .bearer_auth(session)
        .header("Idempotency-Key", key())
        .send()
        .await
        .unwrap();
    let status = res.status();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    assert_eq!((status, body["standing"].as_str()), (StatusCode::OK, Some("applied")), "{body}");
}

async fn events(t: &TestApp, event_type: &str) -> i64 {
    let tenant = TenantId::parse(TENANT).unwrap();
    let shard = t.app.router.route(&tenant).unwrap().name.clone();
    let mut db = t.shard_db(&shard).await;
    sqlx::query_scalar("SELECT count(*) FROM events WHERE tenant_id = $1 AND event_type = $2")
        .bind(TENANT)
        .bind(event_type)
        .fetch_one(&mut db)
        .await
        .unwrap()
}

async fn standing(t: &TestApp, owner: &str, member: MemberId) -> Value {
    let (status, d) = get(t, owner, &format!("/admin/api/v1/distributors/{member}")).await;
    assert_eq!(status, StatusCode::OK, "{d}");
    d
}

async fn sign_in(browser: &Browser, t: &TestApp, username: &str) {
    browser.goto(&format!("{}/console/#/distribution", t.base_url)).await;
    browser.fill("input[name=tenant]", TENANT).await;
    browser.fill("input[name=username]", username).await;
    browser.fill("input[name=password]", PASSWORD).await;
    browser.click_button("Sign in").await;
}

/// The member ids of the rows of the table in `list`, once it has `rows` of them.
async fn rows(browser: &Browser, list: &str, rows: usize) -> Value {
    let script = format!(
        "const links = [...document.querySelectorAll('#{list} tbody tr td:first-child a')]; \
         return links.length === {rows} ? links.map((a) => a.title) : null"
    );
    browser.wait_until(&format!("{rows} rows in {list}"), &script).await
}

#[tokio::test]
async fn owners_decide_applications_and_standing_from_the_console_and_auditors_only_read() {
    let t = spawn_app().await;
    tenant_user(&t, TENANT, "Distribution Mall", "owner", Role::Owner).await;
    tenant_user(&t, TENANT, "Distribution Mall", "auditor", Role::Auditor).await;
    let owner = login(&t, TENANT, "owner").await;
    let body = json!({"enrolment": {"kind": "application"}, "binding_mode": {"kind": "first_wins"},
        "commission_depth": 2, "default_rates": {"first_bps": 1000, "second_bps": 500}});
    let res = t
        .http
        .put(t.url("/admin/api/v1/distribution/settings"))
        .bearer_auth(&owner)
        .header("Idempotency-Key", key())
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let (alice, alice_s) = member(&t, &owner, "o_console_alice_01").await;
    let (bob, bob_s) = member(&t, &owner, "o_console_bob_0001").await;
    apply(&t, &alice_s).await;
    apply(&t, &bob_s).await;

    // The auditor: the queue and no decision anywhere.
    let browser = Browser::start(1280, 900).await;
    sign_in(&browser, &t, "auditor").await;
    let queued = rows(&browser, "dist-applications-list", 2).await;
    let mut queued: Vec<&str> = queued.as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    queued.sort_unstable();
    let mut expected = [alice.to_string(), bob.to_string()];
    expected.sort_unstable();
    assert_eq!(queued, expected.iter().map(String::as_str).collect::<Vec<_>>());
    let buttons = browser
        .eval("return document.querySelectorAll('main button[data-intent], main form[data-intent]').length")
        .await;
    assert_eq!(buttons, json!(0), "an auditor sees no decision");
    browser
        .wait_until("the empty withdrawals", "return document.querySelector('#dist-withdrawals-list')?.textContent.includes('No withdrawal is waiting') ?? false")
        .await;
    browser
        .wait_until(
            "the ranks",
            "return document.querySelector('#dist-ranks-list')?.textContent.includes('Nobody ranks') ?? false",
        )
        .await;
    browser.click_button("Sign out").await;

    // The owner: approve Alice with a double click, reject Bob with a reason. The second
    // click goes past the disabled button, so two requests leave: the console sends both
    // with the intent's key, and the second is the first's replay (a new key would be
    // refused with 409 wrong_standing and show "Approving failed").
    sign_in(&browser, &t, "owner").await;
    rows(&browser, "dist-applications-list", 2).await;
    let approve = format!("#dist-applications-list button[data-intent='approve:{alice}']");
    browser
        .eval(&format!(
            "const b = document.querySelector(\"{approve}\"); b.click(); b.disabled = false; b.click(); return true"
        ))
        .await;
    rows(&browser, "dist-applications-list", 1).await;
    browser
        .wait_until(
            "the approval's notice",
            "return document.querySelector(\"section[aria-labelledby='dist-applications'] [aria-live]\")?.textContent.startsWith('Approved') ?? false",
        )
        .await;
    assert_eq!(standing(&t, &owner, alice).await["standing"], "active");
    assert_eq!(events(&t, "DistributorApproved").await, 1);

    browser.fill(&format!("form[data-intent='reject:{bob}'] input[name=reason]"), "Profile incomplete").await;
    browser
        .eval(&format!("document.querySelector(\"form[data-intent='reject:{bob}'] button\").click(); return true"))
        .await;
    browser
        .wait_until(
            "the empty queue",
            "return document.querySelector('#dist-applications-list')?.textContent.includes('No application is waiting') ?? false",
        )
        .await;
    let rejected = standing(&t, &owner, bob).await;
    assert_eq!(
        (rejected["standing"].as_str(), rejected["reason"].as_str()),
        (Some("rejected"), Some("Profile incomplete"))
    );

    // Alice is listed active; suspend her with a reason, then reinstate her.
    rows(&browser, "dist-distributors-list", 1).await;
    let path = browser.screenshot("console-distribution-1280").await;
    assert!(std::fs::metadata(&path).map(|m| m.len() > 1000).unwrap_or(false), "{path:?}");
    browser.fill(&format!("form[data-intent='suspend:{alice}'] input[name=reason]"), "Spam links").await;
    browser
        .eval(&format!("document.querySelector(\"form[data-intent='suspend:{alice}'] button\").click(); return true"))
        .await;
    browser
        .wait_until(
            "the active list empty",
            "return document.querySelector('#dist-distributors-list')?.textContent.includes('No distributor in this standing') ?? false",
        )
        .await;
    assert_eq!(standing(&t, &owner, alice).await["standing"], "suspended");
    browser.eval("const s = document.getElementById('dist-standing'); s.value = 'suspended'; s.dispatchEvent(new Event('change')); return true").await;
    rows(&browser, "dist-distributors-list", 1).await;
    browser.click(&format!("#dist-distributors-list button[data-intent='reinstate:{alice}']")).await;
    browser
        .wait_until(
            "the suspended list empty",
            "return document.querySelector('#dist-distributors-list')?.textContent.includes('No distributor in this standing') ?? false",
        )
        .await;
    assert_eq!(standing(&t, &owner, alice).await["standing"], "active");
    assert_eq!(
        (
            events(&t, "DistributorSuspended").await,
            events(&t, "DistributorReinstated").await,
            events(&t, "DistributorRejected").await
        ),
        (1, 1, 1)
    );
    browser.close().await;
}
