//! The admin and staff consoles in a real headless Chromium against the real
//! system (Postgres, NATS, relay and projectors): the dashboard shows what the
//! report API says, follows a range change and exports it as CSV; a member's
//! page checks the member's events; staff deposit and charge; an auditor has no
//! write action and another tenant's session sees none of this tenant's data.
//! Screenshots of every page at 375 and 1440 px go to
//! `<target>/test-artifacts/console/`.

use std::collections::BTreeMap;

use chrono::Duration;
use reqwest::StatusCode;
use serde_json::{json, Value};
use wxcm_commands::ports::Role;
use wxcm_tests::admin::{get, login, post, tenant_user, PASSWORD};
use wxcm_tests::browser::Browser;
use wxcm_tests::{spawn_app_with_projections, TestApp};

const TENANT: &str = "console-cinema";
const OTHER: &str = "console-other";
const WIDTHS: [u32; 2] = [1440, 375];

/// Today's merchant day (UTC+8) as the server counts it, `offset` days away.
fn merchant_day(app: &TestApp, offset: i64) -> String {
    let now = wxcm_commands::ports::Clock::now(app.clock.as_ref());
    wxcm_projections::daily::merchant_day(now + Duration::days(offset)).to_string()
}

struct World {
    t: TestApp,
    owner: String,
    members: Vec<Value>,
}

async fn register(t: &TestApp, token: &str) -> Value {
    let (status, member) = post(t, token, "/admin/api/v1/members", json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{member}");
    member
}

async fn deposit(t: &TestApp, token: &str, member: &Value, fen: i64) {
    let path = format!("/admin/api/v1/members/{}/cash/deposits", member["member_id"].as_str().unwrap());
    let (status, body) = post(t, token, &path, json!({"amount_fen": fen, "reason": "counter deposit"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn charge(t: &TestApp, token: &str, member: &Value, fen: i64) {
    let path = format!("/admin/api/v1/members/{}/cash/charges", member["member_id"].as_str().unwrap());
    let (status, body) = post(t, token, &path, json!({"amount_fen": fen, "reason": "counter purchase"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn grant(t: &TestApp, token: &str, member: &Value, points: i64) {
    let path = format!("/admin/api/v1/members/{}/points/grants", member["member_id"].as_str().unwrap());
    let body = json!({"points": points, "reason": "welcome gift", "expiry": {"kind": "never"}});
    let (status, body) = post(t, token, &path, body).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Today's activity (the store stamps every event with the database's time:
/// history cannot be written backwards, so earlier days stay empty).
async fn world() -> World {
    let t = spawn_app_with_projections().await;
    for (username, role) in [("owner", Role::Owner), ("clerk", Role::Staff), ("reader", Role::Auditor)] {
        tenant_user(&t, TENANT, "Console Cinema", username, role).await;
    }
    tenant_user(&t, OTHER, "Other Mall", "owner", Role::Owner).await;
    let owner = login(&t, TENANT, "owner").await;
    let mut members = Vec::new();
    for _ in 0..3 {
        members.push(register(&t, &owner).await);
    }
    deposit(&t, &owner, &members[0], 10_000).await;
    grant(&t, &owner, &members[1], 50).await;
    deposit(&t, &owner, &members[1], 2_000).await;
    charge(&t, &owner, &members[0], 3_000).await;
    members.push(register(&t, &owner).await);
    grant(&t, &owner, &members[2], 10).await;
    deposit(&t, &owner, &members[2], 500).await;
    t.catch_up().await;
    World { t, owner, members }
}

/// Sums of the report API's rows per (metric, dimension) over a range.
async fn report_sums(t: &TestApp, token: &str, from: &str, to: &str) -> BTreeMap<(String, String), i64> {
    let (status, report) = get(t, token, &format!("/admin/api/v1/reports/daily-ops?from={from}&to={to}")).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let mut sums = BTreeMap::new();
    for row in report["rows"].as_array().unwrap() {
        let key = (row["metric"].as_str().unwrap().to_owned(), row["dimension"].as_str().unwrap().to_owned());
        *sums.entry(key).or_insert(0) += row["value"].as_i64().unwrap();
    }
    sums
}

fn sum(sums: &BTreeMap<(String, String), i64>, metric: &str, dimension: Option<&str>) -> i64 {
    sums.iter().filter(|((m, d), _)| m == metric && dimension.is_none_or(|x| x == d)).map(|(_, v)| v).sum()
}

async fn sign_in(browser: &Browser, base: &str, page: &str, tenant: &str, username: &str) {
    browser.goto(&format!("{base}{page}")).await;
    browser.fill("input[name=tenant]", tenant).await;
    browser.fill("input[name=username]", username).await;
    browser.fill("input[name=password]", PASSWORD).await;
    browser.click_button("Sign in").await;
}

/// The KPI cards as the page shows them: metric → (range, previous, today, yesterday).
async fn kpis(browser: &Browser) -> BTreeMap<String, [i64; 4]> {
    let cards = browser
        .eval("return [...document.querySelectorAll('.kpi')].map(k => [k.dataset.metric, k.dataset.range, k.dataset.previous, k.dataset.today, k.dataset.yesterday])")
        .await;
    cards
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let n = |i: usize| c[i].as_str().unwrap().parse::<i64>().unwrap();
            (c[0].as_str().unwrap().to_owned(), [n(1), n(2), n(3), n(4)])
        })
        .collect()
}

/// Waits for the dashboard of `from..=to` to be on screen.
async fn dashboard_shows(browser: &Browser, from: &str, to: &str) {
    let script =
        format!("return document.querySelector('.notice-ok')?.textContent.startsWith('{from} to {to}') ?? false");
    browser.wait_until("the dashboard's range", &script).await;
}

async fn screenshots(browser: &Browser, name: &str, ready: &str) {
    for width in WIDTHS {
        browser.resize(width, 900).await;
        browser.wait_for(ready).await;
        let path = browser.screenshot(&format!("{name}-{width}")).await;
        assert!(std::fs::metadata(&path).map(|m| m.len() > 1000).unwrap_or(false), "{path:?}");
    }
    browser.resize(WIDTHS[0], 900).await;
}

#[tokio::test]
async fn the_dashboard_shows_the_report_apis_numbers_follows_a_range_change_and_exports_csv() {
    let World { t, owner, members } = world().await;
    let browser = Browser::start(1440, 900).await;
    sign_in(&browser, &t.base_url, "/console/", TENANT, "owner").await;
    let (today, yesterday) = (merchant_day(&t, 0), merchant_day(&t, -1));
    let from = merchant_day(&t, -29);
    dashboard_shows(&browser, &from, &today).await;

    // The cards: the report API's sums, and the numbers the test booked.
    let api = report_sums(&t, &owner, &from, &today).await;
    let recent = report_sums(&t, &owner, &yesterday, &today).await;
    let today_only = report_sums(&t, &owner, &today, &today).await;
    let shown = kpis(&browser).await;
    let expect = [
        ("deposits_fen", sum(&api, "cash_credited_fen", Some("deposit")), 12_500),
        ("balance_spent_fen", sum(&api, "cash_debited_fen", Some("charge")), 3_000),
        ("points_issued", sum(&api, "points_granted", None), 60),
        ("new_members", sum(&api, "registrations", None), 4),
    ];
    for (metric, from_api, booked) in expect {
        assert_eq!(from_api, booked, "{metric}: the report API");
        assert_eq!(shown[metric][0], from_api, "{metric}: the card's range figure");
        assert_eq!(shown[metric][1], 0, "{metric}: nothing before the range");
    }
    assert_eq!(shown["deposits_fen"][2], sum(&today_only, "cash_credited_fen", Some("deposit")));
    assert_eq!(shown["deposits_fen"][2..], [12_500, 0]);
    assert_eq!(shown["deposits_fen"][2] + shown["deposits_fen"][3], sum(&recent, "cash_credited_fen", Some("deposit")));
    assert_eq!(shown["members"][0], 4, "members at the end of the range");
    assert_eq!(shown["members"][2..], [4, 0], "members at the end of today and of yesterday");
    let visible = browser.text().await;
    assert!(visible.contains("¥125.00"), "deposits shown in yuan from fen: {visible}");

    // The charts carry the same numbers, day by day.
    let money = browser
        .eval("return Chart.getChart('chart-money').data.datasets.map(d => [d.label, d.data.reduce((a, b) => a + b, 0), d.data.at(-1)])")
        .await;
    assert_eq!(money[1], json!(["Counter deposits", 12_500, 12_500]), "{money}");
    let labels = browser.eval("return Chart.getChart('chart-points').data.labels.length").await;
    assert_eq!(labels, json!(30), "one point per day of the range");
    screenshots(&browser, "dashboard", "#chart-money").await;

    // A range change: an empty stretch of the past, then the last 7 days again.
    let (past_from, past_to) = (merchant_day(&t, -100), merchant_day(&t, -91));
    browser
        .eval(&format!(
            "document.querySelector('input[name=from]').value = '{past_from}'; \
             document.querySelector('input[name=to]').value = '{past_to}'; return true"
        ))
        .await;
    browser.click_button("Show").await;
    dashboard_shows(&browser, &past_from, &past_to).await;
    assert_eq!(kpis(&browser).await["deposits_fen"][..2], [0, 0]);
    let labels = browser.eval("return Chart.getChart('chart-money').data.labels.length").await;
    assert_eq!(labels, json!(10));
    browser.click_button("Last 7 days").await;
    dashboard_shows(&browser, &merchant_day(&t, -6), &today).await;
    assert_eq!(kpis(&browser).await["deposits_fen"][0], 12_500);

    // CSV of what is shown: one row per day, money in yuan.
    browser.click("#export-csv").await;
    let csv = std::fs::read_to_string(browser.downloaded().await).expect("the CSV");
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let column = header.iter().position(|c| *c == "deposits_yuan").expect("deposits column");
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 7);
    let by_day: BTreeMap<&str, &str> = rows.iter().map(|r| (r[0], r[column])).collect();
    assert_eq!(by_day[today.as_str()], "125.00");
    assert_eq!(by_day[yesterday.as_str()], "0.00");

    // Members: the list, one member's card and ledger, and its events verified.
    browser.goto(&format!("{}/console/#/members", t.base_url)).await;
    let card_no = members[0]["card_no"].as_str().unwrap();
    browser.wait_for(&format!("a[href='#/members/{}']", members[0]["member_id"].as_str().unwrap())).await;
    screenshots(&browser, "members", "#member-results table").await;
    browser.click(&format!("a[href='#/members/{}']", members[0]["member_id"].as_str().unwrap())).await;
    browser.wait_for("#member-card").await;
    let card = browser.text().await;
    assert!(card.contains(card_no) && card.contains("¥70.00"), "{card}");
    browser.wait_until("the ledger", "return document.querySelectorAll('table tbody tr').length === 2").await;
    browser.click("#verify-chain").await;
    let verdict =
        browser.wait_until("the verdict", "return document.querySelector('.notice-ok')?.textContent ?? null").await;
    assert!(verdict.as_str().unwrap().starts_with("Verified: 3 events"), "{verdict}");
    screenshots(&browser, "member", "#member-card").await;

    for (page, ready) in [("wechat", "#points-rules"), ("operation-log", "table")] {
        browser.goto(&format!("{}/console/#/{page}", t.base_url)).await;
        screenshots(&browser, page, ready).await;
    }
    browser.close().await;
    t.stop().await;
}

#[tokio::test]
async fn staff_deposit_and_charge_an_auditor_cannot_write_and_another_tenant_sees_nothing() {
    let World { t, owner, members } = world().await;
    let member = &members[3];
    let member_path = format!("/admin/api/v1/members/{}", member["member_id"].as_str().unwrap());
    let balance = |v: &Value| v["balance_fen"].as_i64().unwrap();

    // Staff at the counter, phone-sized.
    let browser = Browser::start(375, 800).await;
    sign_in(&browser, &t.base_url, "/staff/", TENANT, "clerk").await;
    browser.fill("input[name=card]", member["card_no"].as_str().unwrap()).await;
    browser.click_button("Find member").await;
    browser.wait_until("the member", "return document.querySelector('#member-balance')?.textContent === '¥0.00'").await;
    screenshots(&browser, "staff", "#member-card").await;
    browser.resize(375, 800).await;

    browser.fill("input[name=deposit-amount]", "12.34").await;
    browser.click_button("Review deposit").await;
    let summary = browser.wait_for("#deposit-summary").await.text().await.unwrap();
    assert!(summary.contains("Balance after: ¥12.34"), "{summary}");
    browser.click("#deposit-confirm").await;
    browser
        .wait_until("the deposit", "return document.querySelector('#member-balance')?.textContent === '¥12.34'")
        .await;
    assert_eq!(balance(&get(&t, &owner, &member_path).await.1), 1_234);

    // More than the balance is refused before anything is sent.
    browser.fill("input[name=charge-amount]", "20").await;
    browser.click_button("Review charge").await;
    let refused =
        browser.wait_until("the refusal", "return document.querySelector('[role=alert]')?.textContent ?? null").await;
    assert!(refused.as_str().unwrap().contains("cannot pay"), "{refused}");
    browser.fill("input[name=charge-amount]", "2.34").await;
    browser.click_button("Review charge").await;
    let summary = browser.wait_for("#charge-summary").await.text().await.unwrap();
    assert!(summary.contains("Balance after: ¥10.00"), "{summary}");
    browser.click("#charge-confirm").await;
    browser
        .wait_until("the charge", "return document.querySelector('#member-balance')?.textContent === '¥10.00'")
        .await;
    assert_eq!(balance(&get(&t, &owner, &member_path).await.1), 1_000);

    // A coupon the member holds, written off by its typed code at the counter.
    let terms = json!({"name": "10 yuan off", "benefit": {"kind": "cash", "value_fen": 1000, "min_spend_fen": 5000},
                       "validity": {"kind": "days_from_issue", "days": 30}, "per_member_limit": 1,
                       "audience": {"kind": "all_members"}});
    let (status, template) = post(
        &t,
        &owner,
        "/admin/api/v1/coupon-templates",
        json!({"terms": terms, "stock": {"kind": "finite", "total": 10}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{template}");
    let grants = format!("/admin/api/v1/coupon-templates/{}/grants", template["template_id"].as_str().unwrap());
    let (status, coupon) =
        post(&t, &owner, &grants, json!({"member_id": member["member_id"], "reason": "welcome"})).await;
    assert!(status.is_success(), "{coupon}");
    browser.fill("input[name=coupon]", coupon["code"].as_str().unwrap()).await;
    browser.fill("input[name=store]", "Counter 1").await;
    browser.click_button("Write off").await;
    let written = browser
        .wait_until("the write-off", "return document.querySelector('#coupon-title').parentElement.querySelector('.notice-ok')?.textContent ?? null")
        .await;
    assert!(written.as_str().unwrap().starts_with("Written off: 10 yuan off"), "{written}");
    let (_, coupon) =
        get(&t, &owner, &format!("/admin/api/v1/coupons/{}", coupon["coupon_id"].as_str().unwrap())).await;
    assert_eq!(coupon["state"], "redeemed", "{coupon}");
    browser.close().await;

    // The auditor: every read section, no write action; the API refuses writes anyway.
    let browser = Browser::start(1440, 900).await;
    sign_in(&browser, &t.base_url, "/console/", TENANT, "reader").await;
    browser.wait_for("#kpis .kpi").await;
    let nav = browser.eval("return document.getElementById('nav').innerText").await;
    let nav = nav.as_str().unwrap();
    assert!(nav.contains("Dashboard") && nav.contains("Operation log") && !nav.contains("Staff console"), "{nav}");
    browser.goto(&format!("{}/console/#/wechat", t.base_url)).await;
    browser.wait_until("the points rules", "return document.querySelector('#points-rules') !== null").await;
    let buttons = browser.eval("return [...document.querySelectorAll('main button')].map(b => b.textContent)").await;
    assert!(
        !buttons
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b.as_str().unwrap().contains("Save") || b.as_str().unwrap().contains("Create")),
        "{buttons}"
    );
    let status = browser
        .eval(&format!(
            "const token = sessionStorage.getItem('wxcm.console.token'); \
             return fetch('{member_path}/cash/deposits', {{method: 'POST', headers: {{'Authorization': 'Bearer ' + token, \
             'Content-Type': 'application/json', 'Idempotency-Key': 'auditor-tries-1'}}, \
             body: JSON.stringify({{amount_fen: 100, reason: 'no'}})}}).then(r => r.status)"
        ))
        .await;
    assert_eq!(status, json!(403));
    assert_eq!(balance(&get(&t, &owner, &member_path).await.1), 1_000);
    browser.eval("sessionStorage.clear(); return true").await;

    // Another tenant's owner: zero on the dashboard, no member of this tenant.
    sign_in(&browser, &t.base_url, "/console/", OTHER, "owner").await;
    dashboard_shows(&browser, &merchant_day(&t, -29), &merchant_day(&t, 0)).await;
    let shown = kpis(&browser).await;
    assert_eq!(shown["deposits_fen"][0], 0);
    assert_eq!(shown["members"][0], 0);
    browser.goto(&format!("{}/console/#/members", t.base_url)).await;
    browser.wait_until("the empty list", "return document.body.innerText.includes('No member matches.')").await;
    browser.goto(&format!("{}/console/#/members/{}", t.base_url, member["member_id"].as_str().unwrap())).await;
    browser.wait_until("not found", "return document.body.innerText.includes('No such member in this tenant.')").await;
    let text = browser.text().await;
    assert!(!text.contains(member["card_no"].as_str().unwrap()), "{text}");
    browser.close().await;
    t.stop().await;
}
