//! 1-yuan snatch end to end through the HTTP API against the real Postgres
//! (two shards): N shares and concurrent buyers → exactly N sold in the
//! period, one winner drawn by shares with the period's revealed seed, the
//! next period open, `audit draw` clean; bad input refused with nothing
//! changed; a WeChat Pay notification arriving after its reservation ended
//! (duplicated) recorded once and refunded through Pay, never honoured.

use futures::stream::{self, StreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};
use wxcm_commands::ledger_requests::{self, LedgerRequest};
use wxcm_commands::pay_flows::{self, MemberSession};
use wxcm_commands::pay_port::PayAccess;
use wxcm_commands::ports::Role;
use wxcm_commands::{auth, campaigns, members, scheduler, tenants, CommandContext};
use wxcm_domain::campaign::{CampaignId, DrawSeed, PurchaseId};
use wxcm_domain::member::{CardLevel, RegistrationSource};
use wxcm_domain::{Actor, AmountFen, AppId, MemberId, OpenId, Reference, TenantId};
use wxcm_tests::{fresh_settings, settings_file, spawn_app, spawn_app_on, wxcm_bin, Simulator, TestApp};

const PASSWORD: &str = "a-long-enough-password";
const APPID: &str = "wx0123456789abcdef";

struct Merchant {
    tenant: TenantId,
    owner: String,
}

fn key() -> String {
    format!("test-{}", uuid::Uuid::new_v4())
}

async fn merchant(t: &TestApp, tenant: &str) -> Merchant {
    let tenant_id = TenantId::parse(tenant).unwrap();
    let key = members::system_key(&["test-tenant", tenant]).unwrap();
    let ctx = CommandContext::new(tenant_id.clone(), key, "test".into());
    tenants::create(&t.app, &tenant_id, "Snatch Shop", Actor::Admin { username: "test".into() }, &ctx).await.unwrap();
    auth::create_admin(&t.app, &tenant_id, "owner", PASSWORD, Role::Owner).await.unwrap();
    let body = json!({"tenant_id": tenant, "username": "owner", "password": PASSWORD});
    let res = t.http.post(t.url("/admin/api/v1/login")).json(&body).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let owner = res.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned();
    Merchant { tenant: tenant_id, owner }
}

async fn send(req: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let res = req.send().await.unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn post_keyed(t: &TestApp, token: &str, path: &str, key: &str, body: Option<Value>) -> (StatusCode, Value) {
    let req = t.http.post(t.url(path)).bearer_auth(token).header("Idempotency-Key", key);
    send(match body {
        Some(body) => req.json(&body),
        None => req,
    })
    .await
}

async fn post(t: &TestApp, token: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    post_keyed(t, token, path, &key(), body).await
}

async fn get(t: &TestApp, token: &str, path: &str) -> (StatusCode, Value) {
    send(t.http.get(t.url(path)).bearer_auth(token)).await
}

/// A registered member with `balance_fen` and a member-API session.
async fn member(t: &TestApp, m: &Merchant, n: usize, balance_fen: i64) -> (MemberId, String) {
    let openid = OpenId::parse(&format!("oSnatch_{n:08}")).unwrap();
    let request = members::RegisterRequest {
        openid: Some(openid.clone()),
        source: RegistrationSource::Staff,
        card_level: CardLevel::standard(),
    };
    let key = members::system_key(&["test-member", m.tenant.as_str(), &n.to_string()]).unwrap();
    let ctx = CommandContext::new(m.tenant.clone(), key, "test".into());
    let admin = Actor::Admin { username: "t".into() };
    let (view, _) = members::register(&t.app, &m.tenant, request, admin.clone(), &ctx).await.unwrap();
    if balance_fen > 0 {
        let deposit = LedgerRequest::CashDeposit {
            amount_fen: AmountFen::new(balance_fen).unwrap(),
            reason: Reference::parse("test").unwrap(),
            reference: None,
        };
        let key = members::system_key(&["test-deposit", m.tenant.as_str(), &n.to_string()]).unwrap();
        let ctx = CommandContext::new(m.tenant.clone(), key, "test".into());
        ledger_requests::execute(&t.app, &m.tenant, view.member_id, deposit, admin, &ctx).await.unwrap();
    }
    let token = format!("{}.{}", m.tenant, uuid::Uuid::new_v4().simple());
    let session = MemberSession {
        tenant_id: m.tenant.clone(),
        member_id: view.member_id,
        appid: AppId::parse(APPID).unwrap(),
        openid,
        expires_at: t.app.clock.now() + chrono::Duration::days(30),
    };
    let shard = t.app.router.route(&m.tenant).unwrap();
    shard.pay.create_member_session(&auth::token_hash(&token), &session).await.unwrap();
    (view.member_id, token)
}

async fn balance(t: &TestApp, m: &Merchant, member_id: MemberId) -> i64 {
    members::get(&t.app, &m.tenant, member_id).await.unwrap().balance_fen
}

fn snatch_body(t: &TestApp, shares: i64, per_member: i64) -> Value {
    let now = t.app.clock.now();
    json!({
        "name": "一元夺宝 phone",
        "starts_at": now + chrono::Duration::hours(1),
        "ends_at": now + chrono::Duration::days(2),
        "prize": {"kind": "physical", "item": "phone"},
        "shares_per_period": shares,
        "shares_per_member_max": per_member,
        "shares_per_purchase_max": 5,
    })
}

/// Creates and schedules a snatch; the scheduler starts it an hour later and opens period 1.
async fn ongoing_snatch(t: &TestApp, m: &Merchant, body: Value) -> String {
    let (status, created) = post(t, &m.owner, "/admin/api/v1/snatch-campaigns", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!((created["kind"].as_str(), created["status"].as_str()), (Some("snatch"), Some("draft")), "{created}");
    let id = created["campaign_id"].as_str().unwrap().to_owned();
    let (status, scheduled) = post(t, &m.owner, &format!("/admin/api/v1/campaigns/{id}/schedule"), None).await;
    assert_eq!(status, StatusCode::OK, "{scheduled}");
    t.clock.advance(chrono::Duration::minutes(61));
    step(t, m).await;
    let (_, view) = get(t, &m.owner, &format!("/admin/api/v1/campaigns/{id}")).await;
    assert_eq!(view["status"], "ongoing", "{view}");
    assert_eq!(view["snatch"]["open_period"], 1, "{view}");
    assert_eq!(view["snatch"]["periods"][0]["commitment"].as_str().map(str::len), Some(64), "{view}");
    id
}

async fn step(t: &TestApp, m: &Merchant) -> scheduler::StepReport {
    let shard = t.app.router.route(&m.tenant).unwrap();
    let report = scheduler::step(&t.app, &shard).await.unwrap();
    assert_eq!(report.failed, 0, "{report:?}");
    report
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

/// Buys with the balance, retrying the same key while the server says 503 (contention).
async fn buy(t: &TestApp, session: &str, id: &str, quantity: i64) -> (StatusCode, Value) {
    let key = key();
    let path = format!("/m/api/v1/campaigns/{id}/share-purchases");
    loop {
        let body = json!({"quantity": quantity, "pay_with": "balance"});
        let (status, answer) = post_keyed(t, session, &path, &key, Some(body)).await;
        if status != StatusCode::SERVICE_UNAVAILABLE {
            return (status, answer);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn n_shares_and_concurrent_buyers_sell_exactly_n_draw_one_winner_and_open_the_next_period() {
    let t = spawn_app().await;
    let m = merchant(&t, "snatch-n").await;
    let id = ongoing_snatch(&t, &m, snatch_body(&t, 20, 20)).await;
    let mut buyers = Vec::new();
    for n in 0..8 {
        buyers.push(member(&t, &m, n, 10_000).await);
    }
    // 8 members × 4 purchases of 1 share at once: 32 asked of a period of 20.
    let asks: Vec<(MemberId, String)> = buyers.iter().flat_map(|b| std::iter::repeat_n(b.clone(), 4)).collect();
    let answers: Vec<(MemberId, StatusCode, Value)> = stream::iter(asks)
        .map(|(member_id, session)| {
            let t = &t;
            let id = &id;
            async move {
                let (status, body) = buy(t, &session, id, 1).await;
                (member_id, status, body)
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    // Paid, or refused while every share left was reserved by others (never over-sold).
    for (_, status, body) in &answers {
        match *status {
            StatusCode::CREATED => assert_eq!(body["purchase"]["status"], "paid", "{body}"),
            _ => assert_eq!((*status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("shares_left"))),
        }
    }
    let in_period = |n: u64| answers.iter().filter(|(_, _, b)| b["purchase"]["period_no"] == n).count();
    let paid = answers.iter().filter(|(_, s, _)| *s == StatusCode::CREATED).count();
    assert_eq!(in_period(1), 20, "exactly N in period 1");
    assert_eq!(in_period(2), paid - 20, "the rest in period 2");
    let drew: Vec<&Value> = answers.iter().filter_map(|(_, _, b)| b["drew_period"].as_u64().map(|_| b)).collect();
    assert_eq!(drew.len(), 1, "one purchase sold period 1 out and drew it");
    // Every buyer paid 1 yuan a share bought, once; a refused purchase charged nothing.
    for (member_id, _) in &buyers {
        let bought = answers.iter().filter(|(b, s, _)| b == member_id && *s == StatusCode::CREATED).count();
        assert_eq!(balance(&t, &m, *member_id).await, 10_000 - 100 * bought as i64);
    }
    let shares_in_period_two = (paid - 20) as u64;
    let (_, session) = &buyers[0];
    let (status, snatch) = get(&t, session, &format!("/m/api/v1/campaigns/{id}/snatch")).await;
    assert_eq!(status, StatusCode::OK, "{snatch}");
    let sold = snatch["shares_sold"].as_u64();
    assert_eq!((snatch["open_period"].as_u64(), sold), (Some(2), Some(shares_in_period_two)), "{snatch}");
    assert_eq!(snatch["shares_left"].as_u64(), Some(20 - shares_in_period_two));
    let first = &snatch["periods"][0];
    assert_eq!((first["state"].as_str(), first["shares_sold"].as_u64()), (Some("drawn"), Some(20)), "{first}");
    let seed = DrawSeed::parse(first["seed"].as_str().unwrap()).unwrap();
    assert_eq!(seed.commitment().to_hex(), first["commitment"].as_str().unwrap(), "the seed opens the commitment");
    let winner = first["winner_member_id"].as_str().unwrap();
    assert!(buyers.iter().any(|(b, _)| b.to_string() == winner), "{winner}");
    assert_eq!(snatch["periods"][1]["state"], "open");
    // One draw, one physical prize waiting at the store for the winner.
    assert_eq!(
        count(&t, &m, "SELECT count(*) FROM events WHERE tenant_id = $1 AND event_type = 'CampaignPeriodDrawn'").await,
        1
    );
    let mine = get(&t, session, &format!("/m/api/v1/campaigns/{id}/share-purchases")).await.1;
    let first_buyer = buyers[0].0;
    let asked = answers.iter().filter(|(b, s, _)| *b == first_buyer && *s == StatusCode::CREATED).count();
    let listed = mine["purchases"].as_array().unwrap().iter().filter(|p| p["status"] == "paid").count();
    assert_eq!(listed, asked, "{mine}");

    // `audit draw` recomputes the snatch's draw from the events.
    let campaign = CampaignId::parse(&id).unwrap();
    let report = wxcm_ops::draw_audit::draw_report(&t.settings, &m.tenant, campaign).await.unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.periods_checked, 1);
    let (code, cli) = audit_draw_cli(&t, &m, &id).await;
    assert_eq!((code, cli["ok"].as_bool(), cli["periods_checked"].as_u64()), (Some(0), Some(true), Some(1)), "{cli}");
    t.stop().await;
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let t = spawn_app().await;
    let m = merchant(&t, "snatch-bad").await;
    let other = merchant(&t, "snatch-other").await;
    let (member_id, session) = member(&t, &m, 1, 1_000).await;
    // Scheduled but not started: entering before the start is refused.
    let (status, created) = post(&t, &m.owner, "/admin/api/v1/snatch-campaigns", Some(snatch_body(&t, 5, 3))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["campaign_id"].as_str().unwrap().to_owned();
    assert_eq!(post(&t, &m.owner, &format!("/admin/api/v1/campaigns/{id}/schedule"), None).await.0, StatusCode::OK);
    let (status, body) = buy(&t, &session, &id, 1).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("not_ongoing")), "{body}");

    // Bad terms.
    let mut bad = snatch_body(&t, 5, 6);
    let (status, body) = post(&t, &m.owner, "/admin/api/v1/snatch-campaigns", Some(bad.clone())).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_shares")));
    bad["shares_per_member_max"] = json!(1);
    bad["shares_per_period"] = json!(-3);
    let (status, body) = post(&t, &m.owner, "/admin/api/v1/snatch-campaigns", Some(bad)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_shares")));

    t.clock.advance(chrono::Duration::minutes(61));
    step(&t, &m).await;
    let before = campaign_events(&t, &m).await;
    let path = format!("/m/api/v1/campaigns/{id}/share-purchases");
    for quantity in [json!(0), json!(-2), json!(6), json!(10_001), json!(1.5), json!("2")] {
        let (status, body) =
            post(&t, &session, &path, Some(json!({"quantity": quantity, "pay_with": "balance"}))).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{quantity}: {body}");
    }
    let (status, body) = post(&t, &session, &path, Some(json!({"quantity": 1, "pay_with": "cash"}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    // More than the member's maximum, more than the member's balance.
    let (status, body) = buy(&t, &session, &id, 4).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("period_limit_reached")));
    let (poor_id, poor) = member(&t, &m, 2, 50).await;
    let (status, body) = buy(&t, &poor, &id, 1).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("insufficient_balance")));
    assert_eq!(balance(&t, &m, poor_id).await, 50);
    let reserved_then_released = campaign_events(&t, &m).await - before;
    assert_eq!(reserved_then_released, 2, "the refused payment's reservation went back");
    // Unknown campaign, another tenant's campaign (404, nothing changed).
    let unknown = uuid::Uuid::new_v4();
    let (status, body) = buy(&t, &session, &unknown.to_string(), 1).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("campaign_not_found")));
    let (_, stranger) = member(&t, &other, 9, 1_000).await;
    let (status, body) = buy(&t, &stranger, &id, 1).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("campaign_not_found")));
    let (status, _) = get(&t, &stranger, &format!("/m/api/v1/campaigns/{id}/snatch")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(campaign_events(&t, &m).await - before, 2);
    assert_eq!(balance(&t, &m, member_id).await, 1_000);

    // Shares left: 3 bought, 2 left, 3 asked.
    assert_eq!(buy(&t, &session, &id, 3).await.0, StatusCode::CREATED);
    let (other_member, other_session) = member(&t, &m, 3, 1_000).await;
    let (status, body) = buy(&t, &other_session, &id, 3).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("shares_left")), "{body}");
    assert_eq!(balance(&t, &m, other_member).await, 1_000);

    // After the end: refused, nothing changed.
    t.clock.advance(chrono::Duration::days(2));
    let before = campaign_events(&t, &m).await;
    let (status, body) = buy(&t, &other_session, &id, 1).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("not_ongoing")), "{body}");
    assert_eq!(campaign_events(&t, &m).await, before);
    assert_eq!(balance(&t, &m, other_member).await, 1_000);

    // The period never sold out: at the end it is cancelled, undrawn, and the paid shares refunded once.
    assert_eq!(balance(&t, &m, member_id).await, 700);
    step(&t, &m).await;
    step(&t, &m).await;
    assert_eq!(balance(&t, &m, member_id).await, 1_000);
    let (_, snatch) = get(&t, &m.owner, &format!("/admin/api/v1/campaigns/{id}")).await;
    assert_eq!(snatch["snatch"]["periods"][0]["state"], "cancelled", "{snatch}");
    let (_, mine) = get(&t, &session, &path).await;
    assert!(mine["purchases"].as_array().unwrap().iter().all(|p| p["status"] == "refunded"), "{mine}");
    t.stop().await;
}

// ---------------------------------------------------------------- WeChat Pay

const MCH_ID: &str = "1900000109";
const API_V2_KEY: &str = "192006250b4c09247ec02edce69f6a2d";

struct PayWorld {
    t: TestApp,
    m: Merchant,
    pay: wxcm_outbound::pay::WechatPayClient,
    sandbox_url: String,
    _simulator: Simulator,
}

/// A merchant on API v2 (its notifications carry no timestamp, so the test
/// clock may move past a reservation's five minutes).
async fn pay_world(tenant: &str) -> PayWorld {
    let simulator = Simulator::start().await;
    let sandbox_url = simulator.base_url.clone();
    let res = reqwest::Client::new()
        .post(format!("{sandbox_url}/sandbox/pay/merchants"))
        .json(&json!({"mch_id": MCH_ID, "appid": APPID, "api_v2_key": API_V2_KEY}))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "registering the merchant: {}", res.status());
    let mut settings = fresh_settings(2).await;
    settings.wechat.pay_base_url = sandbox_url.clone();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    settings.http.listen = format!("127.0.0.1:{port}");
    settings.wechat.public_base_url = format!("http://127.0.0.1:{port}");
    let t = spawn_app_on(settings).await;
    let m = merchant(&t, tenant).await;
    let admin = Actor::Admin { username: "t".into() };
    let account = tenants::AccountInput {
        appid: APPID.into(),
        name: "Snatch".into(),
        token: "token123".into(),
        encoding_aes_key: "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG".into(),
        app_secret: "secret".into(),
        pay: Some(tenants::PayInput {
            mch_id: MCH_ID.into(),
            api_v2_key: Some(API_V2_KEY.into()),
            api_v3_key: None,
            merchant_cert_serial: None,
            merchant_private_key: None,
        }),
    };
    let key = members::system_key(&["test-account", tenant]).unwrap();
    let ctx = CommandContext::new(m.tenant.clone(), key, "test".into());
    tenants::bind_account(&t.app, &m.tenant, account, admin, &ctx).await.unwrap();
    let settings = wxcm_outbound::pay::PayClientSettings { base_url: sandbox_url.clone(), ..Default::default() };
    let pay = wxcm_outbound::pay::WechatPayClient::new(settings).unwrap();
    PayWorld { t, m, pay, sandbox_url, _simulator: simulator }
}

impl PayWorld {
    async fn scheduler_step(&self) -> scheduler::StepReport {
        let shard = self.t.app.router.route(&self.m.tenant).unwrap();
        let base = self.t.url("");
        let access = PayAccess { gateway: &self.pay, notify_base_url: &base };
        scheduler::step_with_pay(&self.t.app, &shard, Some(access)).await.unwrap()
    }

    async fn sandbox(&self, path: &str, body: Value) -> Value {
        let res = self.t.http.post(format!("{}{path}", self.sandbox_url)).json(&body).send().await.unwrap();
        assert!(res.status().is_success(), "sandbox {path}: {}", res.status());
        res.json().await.unwrap()
    }
}

fn accepted(delivery: &Value) -> bool {
    matches!(delivery["status"].as_u64(), Some(200 | 204))
}

#[tokio::test]
async fn a_wechat_pay_notification_after_the_period_sold_out_is_refunded_once_never_honoured() {
    let w = pay_world("snatch-pay").await;
    let (t, m) = (&w.t, &w.m);
    let id = ongoing_snatch(t, m, snatch_body(t, 2, 2)).await;
    let (late_member, late_session) = member(t, m, 1, 0).await;
    let (buyer, buyer_session) = member(t, m, 2, 1_000).await;

    // The member reserves both shares and starts WeChat Pay, but pays too late.
    let path = format!("/m/api/v1/campaigns/{id}/share-purchases");
    let (status, started) = post(t, &late_session, &path, Some(json!({"quantity": 2, "pay_with": "wechat_pay"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{started}");
    assert_eq!(started["purchase"]["status"], "reserved");
    assert_eq!(started["payment"]["amount_fen"], 200, "{started}");
    assert_eq!(started["payment"]["purpose"], "snatch_purchase", "{started}");
    let trade_no = started["payment"]["order_id"].as_str().unwrap().to_owned();
    let purchase = PurchaseId::parse(started["purchase"]["purchase_id"].as_str().unwrap()).unwrap();
    assert_eq!(purchase.pay_trade_no().as_str(), trade_no);
    // Nothing left for others while the reservation stands.
    let (status, body) = buy(t, &buyer_session, &id, 1).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("shares_left")), "{body}");

    // The reservation expires (its due item gives the shares back); the other member sells the period out.
    t.clock.advance(chrono::Duration::minutes(6));
    let item = format!("{id}/{purchase}");
    assert_eq!(campaigns::snatch::due_reservation_expiry(&t.app, &m.tenant, &item).await.unwrap(), 1);
    let (status, bought) = buy(t, &buyer_session, &id, 2).await;
    assert_eq!(status, StatusCode::CREATED, "{bought}");
    assert_eq!(bought["drew_period"], 1, "{bought}");

    // Now Pay notifies the payment, five copies at once.
    let report =
        w.sandbox(&format!("/sandbox/pay/orders/{trade_no}/pay"), json!({"copies": 5, "concurrent": true})).await;
    assert!(report["deliveries"].as_array().unwrap().iter().all(accepted), "{report}");
    let late = "SELECT count(*) FROM events WHERE tenant_id = $1 AND event_type = 'SnatchPaymentArrivedLate'";
    assert_eq!(count(t, m, late).await, 1, "recorded late once");
    let (_, mine) = get(t, &late_session, &path).await;
    assert_eq!(mine["purchases"][0]["status"], "refunded", "{mine}");
    let (_, snatch) = get(t, &late_session, &format!("/m/api/v1/campaigns/{id}/snatch")).await;
    assert_eq!(snatch["periods"][0]["winner_member_id"], buyer.to_string(), "never honoured: {snatch}");
    assert_eq!(snatch["periods"][0]["shares_sold"], 2, "never over-sold: {snatch}");
    assert_eq!(snatch["open_period"], 2, "{snatch}");
    // Another copy later changes nothing.
    let trade = wxcm_domain::OutTradeNo::parse(&trade_no).unwrap();
    let paid = pay_flows::order_detail(&t.app, &m.tenant, &trade).await.unwrap();
    assert_eq!(paid.order.amount_fen, 200);

    // The scheduler asks Pay for the refund; Pay's refund notification is recorded on the Pay order.
    let step = w.scheduler_step().await;
    assert_eq!(step.failed, 0, "{step:?}");
    let refund_no = purchase.pay_refund_no().unwrap();
    let report =
        w.sandbox(&format!("/sandbox/pay/refunds/{refund_no}/notify"), json!({"copies": 3, "concurrent": true})).await;
    assert!(report["deliveries"].as_array().unwrap().iter().all(accepted), "{report}");
    let refunded = pay_flows::order_detail(&t.app, &m.tenant, &trade).await.unwrap();
    assert_eq!(refunded.order.refunded_total_fen, 200, "{refunded:?}");
    assert_eq!(w.scheduler_step().await.failed, 0);
    assert_eq!(count(t, m, late).await, 1);
    // The balance was never touched by the Pay path; the buyer paid 2 yuan.
    assert_eq!(balance(t, m, late_member).await, 0);
    assert_eq!(balance(t, m, buyer).await, 800);
    let campaign = CampaignId::parse(&id).unwrap();
    let report = wxcm_ops::draw_audit::draw_report(&t.settings, &m.tenant, campaign).await.unwrap();
    assert!(report.ok, "{report:?}");

    // Total paid (what card levels read): the late payment never counted; a share paid by Pay
    // and honoured counts once however often Pay says so; its period cancelled at the
    // campaign's end takes it off again, once.
    let total_paid = |session: String| async move {
        let (status, level) = get(t, &session, "/m/api/v1/card-level").await;
        assert_eq!(status, StatusCode::OK, "{level}");
        level["total_paid_fen"].as_i64().unwrap()
    };
    assert_eq!(total_paid(late_session.clone()).await, 0);
    let (status, started) = post(t, &late_session, &path, Some(json!({"quantity": 1, "pay_with": "wechat_pay"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{started}");
    let trade_no = started["payment"]["order_id"].as_str().unwrap().to_owned();
    let report =
        w.sandbox(&format!("/sandbox/pay/orders/{trade_no}/pay"), json!({"copies": 3, "concurrent": true})).await;
    assert!(report["deliveries"].as_array().unwrap().iter().all(accepted), "{report}");
    let (_, mine) = get(t, &late_session, &path).await;
    assert_eq!(mine["purchases"][0]["status"], "paid", "{mine}");
    assert_eq!(total_paid(late_session.clone()).await, 100);
    t.clock.advance(chrono::Duration::days(2));
    assert_eq!(w.scheduler_step().await.failed, 0);
    assert_eq!(w.scheduler_step().await.failed, 0);
    let (_, mine) = get(t, &late_session, &path).await;
    assert_eq!(mine["purchases"][0]["status"], "refunded", "{mine}");
    assert_eq!(total_paid(late_session.clone()).await, 0);
    let counted =
        "SELECT count(*) FROM events WHERE tenant_id = $1 AND event_type IN ('PurchasePaid', 'PurchaseRefunded')";
    assert_eq!(count(t, m, counted).await, 2, "one count each way");
    w.t.stop().await;
}
