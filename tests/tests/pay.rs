//! WeChat Pay flows against real Postgres: paid orders credit the member
//! exactly once (duplicates, concurrency, a crash between paid and credited),
//! mismatching reports change nothing, refunds reverse once, reconciliation
//! recovers a lost notification and closes expired unpaid orders.
//!
//! Pay itself is a small fake of the `PayGateway` port here; the HTTP notify
//! endpoints with the simulator's signatures are covered once the Pay
//! simulator (H6a) is merged.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{Duration, Utc};
use wxcm_commands::members::{self, RegisterRequest};
use wxcm_commands::pay_flows::{self, Applied, PaidReport, Reconciled, RefundReport};
use wxcm_commands::pay_port::{
    JsapiOrderRequest, JsapiPayParams, MerchantCredentials, PayApi, PayGateway, PayPortError, RefundRequest,
    RemoteTradeState,
};
use wxcm_commands::payments;
use wxcm_commands::ports::{App, Role as Role2};
use wxcm_commands::tenants::{self, AccountInput, PayInput};
use wxcm_commands::CommandContext;
use wxcm_domain::member::{CardLevel, Provenance, RegistrationSource};
use wxcm_domain::payment::{PaidVia, PayApiVersion, PaymentCommand, PaymentStatus};
use wxcm_domain::{Actor, AmountFen, AppId, IdempotencyKey, MemberId, OpenId, OutTradeNo, PayRef, Reference, TenantId};
use wxcm_protocol::pay::{v2, v3};
use wxcm_server::app::Role;
use wxcm_tests::{build, fresh_settings, spawn_app_on, TestClock};

const APPID: &str = "wx0123456789abcdef";
const MCH_ID: &str = "1900000109";
const AMOUNT_FEN: i64 = 1_000;
const API_V2_KEY: &str = "192006250b4c09247ec02edce69f6a2d";
const API_V3_KEY: &str = "0123456789abcdef0123456789abcdef";
const PLATFORM_SERIAL: &str = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1";
const PLATFORM_PRIVATE_PEM: &str = include_str!("../../gateways/testdata/platform_private.pem");
const PLATFORM_PUBLIC_PEM: &str = include_str!("../../gateways/testdata/platform_public.pem");

fn ctx(tenant: &TenantId) -> CommandContext {
    let key = IdempotencyKey::parse(&format!("test-{}", uuid::Uuid::new_v4())).unwrap();
    CommandContext::new(tenant.clone(), key, "test".into())
}

/// A tenant with a pay-enabled official account and one member.
async fn setup(app: &App, name: &str) -> (TenantId, MemberId, OpenId) {
    let tenant = TenantId::parse(name).unwrap();
    let admin = Actor::Admin { username: "t".into() };
    tenants::create(app, &tenant, "Pay Mall", admin.clone(), &ctx(&tenant)).await.unwrap();
    let account = AccountInput {
        appid: APPID.into(),
        name: "Mall".into(),
        token: "token123".into(),
        encoding_aes_key: "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG".into(),
        app_secret: "secret".into(),
        pay: Some(PayInput {
            mch_id: MCH_ID.into(),
            api_v2_key: Some(API_V2_KEY.into()),
            api_v3_key: Some(API_V3_KEY.into()),
            merchant_cert_serial: None,
            merchant_private_key: None,
        }),
    };
    tenants::bind_account(app, &tenant, account, admin, &ctx(&tenant)).await.unwrap();
    let openid = OpenId::parse("oPay_member_0001").unwrap();
    let request = RegisterRequest {
        openid: Some(openid.clone()),
        source: RegistrationSource::Oauth,
        card_level: CardLevel::standard(),
    };
    let (view, _) =
        members::register(app, &tenant, request, Actor::Wechat { source: "test".into() }, &ctx(&tenant)).await.unwrap();
    (tenant, view.member_id, openid)
}

async fn create_order(app: &App, tenant: &TenantId, member: MemberId, openid: &OpenId, n: u32) -> OutTradeNo {
    let order_id = OutTradeNo::parse(&format!("rctest{n:010}")).unwrap();
    let c = ctx(tenant);
    let command = PaymentCommand::Create {
        order_id: order_id.clone(),
        tenant_id: tenant.clone(),
        member_id: member,
        openid: openid.clone(),
        appid: AppId::parse(APPID).unwrap(),
        mch_id: PayRef::parse(MCH_ID).unwrap(),
        purpose: wxcm_domain::payment::PaymentPurpose::BalanceRecharge,
        amount_fen: AmountFen::new(AMOUNT_FEN).unwrap(),
        api_version: PayApiVersion::V2,
        expires_at: app.clock.now() + Duration::minutes(15),
        provenance: Provenance {
            actor: Actor::Member { member_id: member },
            reason: Reference::parse("balance recharge").unwrap(),
            reference: None,
            idempotency_key: c.idempotency_key.clone(),
        },
    };
    payments::execute(app, tenant, &order_id, command.clone(), &command, &c).await.unwrap();
    order_id
}

fn paid(transaction_id: &str, total_fen: i64, via: PaidVia) -> PaidReport {
    PaidReport {
        transaction_id: transaction_id.into(),
        total_fen,
        appid: APPID.into(),
        mch_id: MCH_ID.into(),
        paid_at: Utc::now(),
        via,
        notification_id: None,
    }
}

async fn balance(app: &App, tenant: &TenantId, member: MemberId) -> i64 {
    members::get(app, tenant, member).await.unwrap().balance_fen
}

async fn credits(app: &App, tenant: &TenantId, member: MemberId) -> usize {
    members::history(app, tenant, member, 0, 200)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.event_type == "RechargeCredited")
        .count()
}

#[tokio::test]
async fn twenty_concurrent_duplicate_notifications_credit_once() {
    let clock = Arc::new(TestClock::default());
    let a = build(fresh_settings(1).await, Role::Api, clock).await;
    let app = a.app.clone();
    let (tenant, member, openid) = setup(&app, "pay-dup").await;
    let order = create_order(&app, &tenant, member, &openid, 1).await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let (app, tenant, order) = (app.clone(), tenant.clone(), order.clone());
        // Half arrive as v2, half as v3 notifications of the same transaction.
        let via = if i % 2 == 0 { PaidVia::NotifyV2 } else { PaidVia::NotifyV3 };
        tasks.push(tokio::spawn(async move {
            pay_flows::apply_paid(&app, &tenant, &order, &paid("4200000001202603100001", AMOUNT_FEN, via)).await
        }));
    }
    for t in tasks {
        t.await.unwrap().expect("every duplicate is answered as applied");
    }
    assert_eq!(balance(&app, &tenant, member).await, AMOUNT_FEN);
    assert_eq!(credits(&app, &tenant, member).await, 1);
    let view = payments::get(&app, &tenant, &order).await.unwrap();
    assert_eq!(view.status, PaymentStatus::Paid);
    // Once more, later: already applied, nothing changes.
    let again =
        pay_flows::apply_paid(&app, &tenant, &order, &paid("4200000001202603100001", AMOUNT_FEN, PaidVia::Query))
            .await
            .unwrap();
    assert_eq!(again, Applied::AlreadyApplied);
    assert_eq!(balance(&app, &tenant, member).await, AMOUNT_FEN);
}

#[tokio::test]
async fn mismatching_reports_are_refused_and_change_nothing() {
    let clock = Arc::new(TestClock::default());
    let a = build(fresh_settings(1).await, Role::Api, clock).await;
    let app = a.app.clone();
    let (tenant, member, openid) = setup(&app, "pay-bad").await;
    let order = create_order(&app, &tenant, member, &openid, 2).await;
    let mut wrong_total = paid("4200000001202603100002", AMOUNT_FEN + 1, PaidVia::NotifyV2);
    let mut wrong_mch = paid("4200000001202603100002", AMOUNT_FEN, PaidVia::NotifyV2);
    wrong_mch.mch_id = "1900000999".into();
    let mut wrong_appid = paid("4200000001202603100002", AMOUNT_FEN, PaidVia::NotifyV2);
    wrong_appid.appid = "wx9999999999999999".into();
    for report in [&wrong_total, &wrong_mch, &wrong_appid] {
        let e = pay_flows::apply_paid(&app, &tenant, &order, report).await.unwrap_err();
        assert!(e.is_permanent(), "{e}");
    }
    // An order of another tenant is "not found" here.
    let other = TenantId::parse("pay-other").unwrap();
    tenants::create(&app, &other, "Other", Actor::Admin { username: "t".into() }, &ctx(&other)).await.unwrap();
    let e = pay_flows::apply_paid(&app, &other, &order, &paid("x1", AMOUNT_FEN, PaidVia::NotifyV2)).await.unwrap_err();
    assert!(e.is_permanent());
    assert_eq!(payments::get(&app, &tenant, &order).await.unwrap().status, PaymentStatus::Created);
    assert_eq!(balance(&app, &tenant, member).await, 0);
    wrong_total.total_fen = AMOUNT_FEN;
    pay_flows::apply_paid(&app, &tenant, &order, &wrong_total).await.unwrap();
    assert_eq!(balance(&app, &tenant, member).await, AMOUNT_FEN);
}

#[tokio::test]
async fn a_crash_between_paid_and_credited_ends_credited_once() {
    let clock = Arc::new(TestClock::default());
    let a = build(fresh_settings(1).await, Role::Scheduler, clock).await;
    let app = a.app.clone();
    let (tenant, member, openid) = setup(&app, "pay-crash").await;
    let order = create_order(&app, &tenant, member, &openid, 3).await;
    // The process "dies" right after MarkPaid committed: run it alone.
    let c = ctx(&tenant);
    let mark = PaymentCommand::MarkPaid {
        transaction_id: PayRef::parse("4200000001202603100003").unwrap(),
        total_fen: AMOUNT_FEN,
        appid: AppId::parse(APPID).unwrap(),
        mch_id: PayRef::parse(MCH_ID).unwrap(),
        paid_at: Utc::now(),
        via: PaidVia::NotifyV2,
        notification_id: None,
    };
    payments::execute(&app, &tenant, &order, mark.clone(), &mark, &c).await.unwrap();
    assert_eq!(balance(&app, &tenant, member).await, 0);
    // After "restart" the scheduler finishes the credit; more passes and a late
    // duplicate notification change nothing.
    let mut sched = a.shard_schedulers().pop().unwrap();
    let report = sched.tick().await.unwrap().unwrap();
    assert_eq!(report.failed, 0);
    assert_eq!(balance(&app, &tenant, member).await, AMOUNT_FEN);
    sched.tick().await.unwrap();
    pay_flows::apply_paid(&app, &tenant, &order, &paid("4200000001202603100003", AMOUNT_FEN, PaidVia::NotifyV2))
        .await
        .unwrap();
    assert_eq!(balance(&app, &tenant, member).await, AMOUNT_FEN);
    assert_eq!(credits(&app, &tenant, member).await, 1);
}

#[tokio::test]
async fn a_refund_reverses_the_credit_once() {
    let clock = Arc::new(TestClock::default());
    let a = build(fresh_settings(1).await, Role::Scheduler, clock).await;
    let app = a.app.clone();
    let (tenant, member, openid) = setup(&app, "pay-refund").await;
    let order = create_order(&app, &tenant, member, &openid, 4).await;
    pay_flows::apply_paid(&app, &tenant, &order, &paid("4200000001202603100004", AMOUNT_FEN, PaidVia::NotifyV3))
        .await
        .unwrap();
    let refund = RefundReport {
        out_refund_no: "rf0001".into(),
        refund_id: "50000000382019052709732678859".into(),
        refund_fen: 300,
        total_fen: AMOUNT_FEN,
        mch_id: MCH_ID.into(),
        succeeded_at: Utc::now(),
    };
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (app, tenant, order, refund) = (app.clone(), tenant.clone(), order.clone(), refund.clone());
        tasks.push(tokio::spawn(async move { pay_flows::apply_refund(&app, &tenant, &order, &refund).await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(balance(&app, &tenant, member).await, AMOUNT_FEN - 300);
    let view = payments::get(&app, &tenant, &order).await.unwrap();
    assert_eq!(view.refunded_total_fen, 300);
    // The scheduler's reversal pass finds nothing left.
    let mut sched = a.shard_schedulers().pop().unwrap();
    sched.tick().await.unwrap();
    assert_eq!(balance(&app, &tenant, member).await, AMOUNT_FEN - 300);
    // A refund whose total differs from the order is refused.
    let mut bad = refund.clone();
    bad.out_refund_no = "rf0002".into();
    bad.total_fen = AMOUNT_FEN * 2;
    assert!(pay_flows::apply_refund(&app, &tenant, &order, &bad).await.unwrap_err().is_permanent());
    assert_eq!(payments::get(&app, &tenant, &order).await.unwrap().refunded_total_fen, 300);
}

/// Pay as a table: order id → what a query answers; closes are recorded.
#[derive(Default)]
struct FakePay {
    states: Mutex<std::collections::HashMap<String, RemoteTradeState>>,
    closed: Mutex<Vec<String>>,
}

#[async_trait]
impl PayGateway for FakePay {
    async fn create_jsapi_order(
        &self,
        merchant: &MerchantCredentials,
        order: &JsapiOrderRequest,
    ) -> Result<JsapiPayParams, PayPortError> {
        self.states.lock().unwrap().entry(order.out_trade_no.clone()).or_insert(RemoteTradeState::NotPay);
        Ok(JsapiPayParams {
            app_id: merchant.appid.clone(),
            time_stamp: "1".into(),
            nonce_str: "n".into(),
            package: format!("prepay_id=wx{}", order.out_trade_no),
            sign_type: "MD5".into(),
            pay_sign: "x".into(),
        })
    }
    async fn query_order(
        &self,
        _: &MerchantCredentials,
        _: PayApi,
        out_trade_no: &str,
    ) -> Result<RemoteTradeState, PayPortError> {
        Ok(self.states.lock().unwrap().get(out_trade_no).cloned().unwrap_or(RemoteTradeState::NotFound))
    }
    async fn close_order(&self, _: &MerchantCredentials, _: PayApi, out_trade_no: &str) -> Result<(), PayPortError> {
        self.closed.lock().unwrap().push(out_trade_no.into());
        self.states.lock().unwrap().insert(out_trade_no.into(), RemoteTradeState::Closed);
        Ok(())
    }
    async fn refund(&self, _: &MerchantCredentials, _: &RefundRequest) -> Result<(), PayPortError> {
        Ok(())
    }
}

#[tokio::test]
async fn reconciliation_recovers_a_lost_notification_and_closes_expired_orders() {
    let clock = Arc::new(TestClock::default());
    let a = build(fresh_settings(1).await, Role::Scheduler, clock.clone()).await;
    let app = a.app.clone();
    let (tenant, member, openid) = setup(&app, "pay-recon").await;
    let pay = Arc::new(FakePay::default());
    let request = pay_flows::RechargeRequest {
        member_id: member,
        appid: AppId::parse(APPID).unwrap(),
        openid: openid.clone(),
        amount_fen: AmountFen::new(AMOUNT_FEN).unwrap(),
        api: Some(PayApiVersion::V2),
        notify_base_url: "https://example.test".into(),
        client_ip: "127.0.0.1".into(),
    };
    let c = ctx(&tenant);
    let lost = pay_flows::create_recharge(&app, pay.as_ref(), &tenant, &request, &c).await.unwrap();
    // The same request again (same Idempotency-Key): the same order.
    let again = pay_flows::create_recharge(&app, pay.as_ref(), &tenant, &request, &c).await.unwrap();
    assert_eq!(again.order.order_id, lost.order.order_id);
    let unpaid = pay_flows::create_recharge(&app, pay.as_ref(), &tenant, &request, &ctx(&tenant)).await.unwrap();
    let lost_id = lost.order.order_id.clone();
    pay.states.lock().unwrap().insert(
        lost_id.to_string(),
        RemoteTradeState::Success {
            transaction_id: "4200000001202603100005".into(),
            total_fen: AMOUNT_FEN,
            appid: APPID.into(),
            mch_id: MCH_ID.into(),
            paid_at: Utc::now(),
        },
    );
    // On demand (`wxcm pay reconcile`): the paid one is found, the other is not expired yet.
    let report = pay_flows::reconcile_tenant(&app, pay.as_ref(), &tenant).await.unwrap();
    assert_eq!((report.orders, report.paid, report.open, report.failed), (2, 1, 1, 0));
    assert_eq!(balance(&app, &tenant, member).await, AMOUNT_FEN);
    // At expiry the scheduler asks Pay, closes it there, then here.
    clock.advance(Duration::minutes(16));
    let mut sched = a.shard_schedulers().pop().unwrap().with_pay(pay.clone(), "https://example.test");
    let step = sched.tick().await.unwrap().unwrap();
    assert_eq!(step.failed, 0);
    let view = payments::get(&app, &tenant, &unpaid.order.order_id).await.unwrap();
    assert_eq!(view.status, PaymentStatus::Closed);
    assert_eq!(pay.closed.lock().unwrap().as_slice(), [unpaid.order.order_id.to_string()]);
    assert_eq!(pay_flows::reconcile_order(&app, pay.as_ref(), &tenant, &lost_id).await.unwrap(), Reconciled::Paid);
    assert_eq!(balance(&app, &tenant, member).await, AMOUNT_FEN);
    assert_eq!(credits(&app, &tenant, member).await, 1);
}

fn v2_paid_xml(order: &OutTradeNo, total_fen: i64, mch_id: &str, appid: &str, sign_type: v2::SignType) -> String {
    let mut fields = std::collections::BTreeMap::from([
        ("return_code".to_owned(), "SUCCESS".to_owned()),
        ("result_code".to_owned(), "SUCCESS".to_owned()),
        ("appid".to_owned(), appid.to_owned()),
        ("mch_id".to_owned(), mch_id.to_owned()),
        ("nonce_str".to_owned(), "5K8264ILTKCH16CQ2502SI8ZNMTM67VS".to_owned()),
        ("openid".to_owned(), "oPay_member_0001".to_owned()),
        ("out_trade_no".to_owned(), order.to_string()),
        ("transaction_id".to_owned(), format!("42000{}", order.as_str())),
        ("total_fee".to_owned(), total_fen.to_string()),
        ("cash_fee".to_owned(), total_fen.to_string()),
        ("fee_type".to_owned(), "CNY".to_owned()),
        ("trade_type".to_owned(), "JSAPI".to_owned()),
        ("time_end".to_owned(), "20260310103000".to_owned()),
    ]);
    if sign_type == v2::SignType::HmacSha256 {
        fields.insert(v2::SIGN_TYPE_FIELD.into(), sign_type.as_str().into());
    }
    let sign = v2::sign(&fields, API_V2_KEY, sign_type);
    fields.insert(v2::SIGN_FIELD.into(), sign);
    v2::build_xml(&fields)
}

async fn post_v2(http: &reqwest::Client, url: &str, body: String) -> String {
    http.post(url).body(body).send().await.unwrap().text().await.unwrap()
}

#[tokio::test]
async fn v2_notifications_apply_once_and_refuse_bad_input() {
    let t = spawn_app_on(fresh_settings(1).await).await;
    let app = t.app.clone();
    let (tenant, member, openid) = setup(&app, "pay-http-v2").await;
    let order = create_order(&app, &tenant, member, &openid, 5).await;
    let url = t.url(&format!("/pay/notify/v2/{APPID}"));
    let md5 = v2::SignType::Md5;
    let good = v2_paid_xml(&order, AMOUNT_FEN, MCH_ID, APPID, md5);
    // Verified as Pay's but never applicable here: acknowledged (a retry carries the same content),
    // recorded as inapplicable, nothing changed.
    let inapplicable = [
        ("total differs", v2_paid_xml(&order, AMOUNT_FEN + 1, MCH_ID, APPID, md5)),
        ("wrong mch_id", v2_paid_xml(&order, AMOUNT_FEN, "1900000999", APPID, md5)),
        ("wrong appid", v2_paid_xml(&order, AMOUNT_FEN, MCH_ID, "wx9999999999999999", md5)),
    ];
    for (what, body) in inapplicable {
        let reply = post_v2(&t.http, &url, body).await;
        assert_eq!(reply, v2::REPLY_SUCCESS, "{what}");
    }
    assert_eq!(payments::get(&app, &tenant, &order).await.unwrap().status, PaymentStatus::Created);
    assert_eq!(balance(&app, &tenant, member).await, 0);
    // Not verifiable: Pay is told to retry (a fresh or uncorrupted copy may pass); nothing changes.
    let refused = [
        ("bad signature", good.replace("<total_fee><![CDATA[1000]]>", "<total_fee><![CDATA[1]]>")),
        (
            "doctype",
            format!("<!DOCTYPE xml [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>{}", good.replace("JSAPI", "&x;")),
        ),
    ];
    for (what, body) in refused {
        let reply = post_v2(&t.http, &url, body).await;
        assert!(reply.contains("FAIL"), "{what}: {reply}");
    }
    assert_eq!(payments::get(&app, &tenant, &order).await.unwrap().status, PaymentStatus::Created);
    assert_eq!(balance(&app, &tenant, member).await, 0);
    // Larger than any notification: answered in Pay's format (so Pay retries), recorded, nothing read past the cap.
    let oversized = format!("<xml><padding><![CDATA[{}]]></padding></xml>", "x".repeat(100 * 1024));
    let res = t.http.post(&url).header("content-type", "text/xml").body(oversized).send().await.unwrap();
    assert_eq!(res.status(), reqwest::StatusCode::OK);
    let reply = res.text().await.unwrap();
    assert!(reply.contains("<return_code><![CDATA[FAIL]]></return_code>"), "Pay-style answer: {reply}");
    let mut db = t.shard_db("s0").await;
    let recorded: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pay_notifications WHERE channel = 'v2' AND outcome = 'refused' AND detail LIKE 'body larger%'",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(recorded, 1, "the oversized notification is recorded");
    // An unknown account's notification is refused too.
    let reply = post_v2(&t.http, &t.url("/pay/notify/v2/wx1111111111111111"), good.clone()).await;
    assert!(reply.contains("FAIL"));

    // 20 concurrent duplicates (MD5 and HMAC-SHA256 signed): one credit, every reply SUCCESS.
    let hmac = v2_paid_xml(&order, AMOUNT_FEN, MCH_ID, APPID, v2::SignType::HmacSha256);
    let replies = futures::future::join_all((0..20).map(|i| {
        let body = if i % 2 == 0 { good.clone() } else { hmac.clone() };
        post_v2(&t.http, &url, body)
    }))
    .await;
    for reply in replies {
        assert_eq!(reply, v2::REPLY_SUCCESS);
    }
    assert_eq!(balance(&app, &tenant, member).await, AMOUNT_FEN);
    assert_eq!(credits(&app, &tenant, member).await, 1);
    let detail = pay_flows::order_detail(&app, &tenant, &order).await.unwrap();
    assert!(detail.notifications.len() >= 24, "every notification recorded: {}", detail.notifications.len());
    assert!(detail.notifications.iter().any(|n| !n.verified && n.outcome == "refused"));
    assert_eq!(detail.notifications.iter().filter(|n| n.verified && n.outcome == "inapplicable").count(), 3);

    // Admin API: auditors read the list (filtered by state) and the detail; staff may not.
    for (username, role) in [("auditor1", Role2::Auditor), ("staff1", Role2::Staff)] {
        wxcm_commands::auth::create_admin(&app, &tenant, username, "correct horse battery", role).await.unwrap();
    }
    let login = |username: &'static str| {
        let (http, url, tenant) = (t.http.clone(), t.url("/admin/api/v1/login"), tenant.to_string());
        async move {
            let body =
                serde_json::json!({"tenant_id": tenant, "username": username, "password": "correct horse battery"});
            let res: serde_json::Value = http.post(url).json(&body).send().await.unwrap().json().await.unwrap();
            res["token"].as_str().unwrap().to_owned()
        }
    };
    let auditor = login("auditor1").await;
    let list: serde_json::Value = t
        .http
        .get(t.url("/admin/api/v1/payments?state=paid"))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["orders"][0]["order_id"], order.as_str(), "{list}");
    let res = t.http.get(t.url(&format!("/admin/api/v1/payments/{order}"))).bearer_auth(&auditor).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let detail: serde_json::Value = res.json().await.unwrap();
    assert_eq!(detail["order"]["status"], "paid");
    assert!(detail["notifications"].as_array().unwrap().len() >= 24);
    let none: serde_json::Value = t
        .http
        .get(t.url("/admin/api/v1/payments?state=created"))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(none["orders"].as_array().unwrap().len(), 0);
    let staff = login("staff1").await;
    let res = t.http.get(t.url("/admin/api/v1/payments")).bearer_auth(&staff).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 403);
    t.stop().await;
}

fn v3_paid_body(order: &OutTradeNo, total_fen: i64) -> Vec<u8> {
    let resource = serde_json::json!({
        "appid": APPID, "mchid": MCH_ID, "out_trade_no": order.as_str(),
        "transaction_id": format!("43000{}", order.as_str()), "trade_type": "JSAPI", "trade_state": "SUCCESS",
        "success_time": "2026-03-10T10:30:00+08:00",
        "amount": { "total": total_fen, "payer_total": total_fen, "currency": "CNY", "payer_currency": "CNY" },
        "payer": { "openid": "oPay_member_0001" }
    });
    let key = v3::api_v3_key(API_V3_KEY).unwrap();
    let nonce = "fdasflkja484";
    let ciphertext = v3::encrypt_resource(&key, nonce, "transaction", resource.to_string().as_bytes()).unwrap();
    serde_json::to_vec(&serde_json::json!({
        "id": format!("EV-{}", order.as_str()), "create_time": "2026-03-10T10:30:01+08:00",
        "event_type": "TRANSACTION.SUCCESS", "resource_type": "encrypt-resource", "summary": "ok",
        "resource": { "algorithm": "AEAD_AES_256_GCM", "ciphertext": ciphertext, "associated_data": "transaction",
                      "original_type": "transaction", "nonce": nonce }
    }))
    .unwrap()
}

async fn post_v3(http: &reqwest::Client, url: &str, body: Vec<u8>, timestamp: i64, probe: bool) -> u16 {
    let key = v3::load_private_key_pem(PLATFORM_PRIVATE_PEM).unwrap();
    let ts = timestamp.to_string();
    let nonce = "593BEC0C930BF1AFEB40B4A08C8FB242";
    let signature = if probe {
        format!("{}{}", v3::SIGNTEST_PREFIX, "x")
    } else {
        v3::sign_message(&key, &ts, nonce, &body).unwrap()
    };
    http.post(url)
        .header("Wechatpay-Timestamp", ts)
        .header("Wechatpay-Nonce", nonce)
        .header("Wechatpay-Signature", signature)
        .header("Wechatpay-Serial", PLATFORM_SERIAL)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn v3_notifications_apply_once_and_refuse_bad_input() {
    let t = spawn_app_on(fresh_settings(1).await).await;
    let app = t.app.clone();
    let (tenant, member, openid) = setup(&app, "pay-http-v3").await;
    // Platform keys belong to a tenant, and only for a merchant it has bound: another
    // tenant can neither plant a key for this merchant nor read this tenant's.
    let other = TenantId::parse("pay-other-v3").unwrap();
    tenants::create(&app, &other, "Other", Actor::Admin { username: "t".into() }, &ctx(&other)).await.unwrap();
    let planted = pay_flows::put_platform_key(&app, &other, MCH_ID, PLATFORM_SERIAL, PLATFORM_PUBLIC_PEM).await;
    assert!(matches!(planted, Err(pay_flows::PayFlowError::Refused(_))), "{planted:?}");
    pay_flows::put_platform_key(&app, &tenant, MCH_ID, PLATFORM_SERIAL, PLATFORM_PUBLIC_PEM).await.unwrap();
    assert!(pay_flows::platform_key_pem(&app, &other, MCH_ID, PLATFORM_SERIAL).await.unwrap().is_none());
    assert!(pay_flows::platform_key_pem(&app, &tenant, MCH_ID, PLATFORM_SERIAL).await.unwrap().is_some());
    let order = create_order(&app, &tenant, member, &openid, 6).await;
    let url = t.url(&format!("/pay/notify/v3/{APPID}"));
    let now = app.clock.now().timestamp();
    let good = v3_paid_body(&order, AMOUNT_FEN);
    assert_eq!(post_v3(&t.http, &url, good.clone(), now - 400, false).await, 400, "stale timestamp");
    assert_eq!(post_v3(&t.http, &url, good.clone(), now, true).await, 400, "SIGNTEST probe");
    // Verified but never applicable (the total differs): acknowledged, nothing changes.
    assert_eq!(post_v3(&t.http, &url, v3_paid_body(&order, AMOUNT_FEN + 1), now, false).await, 204, "total differs");
    let mut tampered = good.clone();
    let at = tampered.len() / 2;
    tampered[at] ^= 1;
    assert_eq!(post_v3(&t.http, &url, tampered, now, false).await, 400, "body changed after signing");
    assert_eq!(payments::get(&app, &tenant, &order).await.unwrap().status, PaymentStatus::Created);
    assert_eq!(balance(&app, &tenant, member).await, 0);

    let statuses = futures::future::join_all((0..20).map(|_| post_v3(&t.http, &url, good.clone(), now, false))).await;
    assert!(statuses.iter().all(|s| *s == 204), "{statuses:?}");
    assert_eq!(balance(&app, &tenant, member).await, AMOUNT_FEN);
    assert_eq!(credits(&app, &tenant, member).await, 1);
    t.stop().await;
}

/// OAuth as a table: code `code-<openid>` → that openid.
struct FakeOauth;

#[async_trait]
impl pay_flows::OauthExchange for FakeOauth {
    async fn openid_for_code(&self, _: &AppId, code: &str) -> Result<OpenId, pay_flows::PayFlowError> {
        let openid = code.strip_prefix("code-").ok_or_else(|| pay_flows::PayFlowError::Refused("bad code".into()))?;
        OpenId::parse(openid).map_err(|e| pay_flows::PayFlowError::Refused(e.to_string()))
    }
}

#[tokio::test]
async fn oauth_sessions_find_or_register_the_member_and_see_only_its_orders() {
    let clock = Arc::new(TestClock::default());
    let a = build(fresh_settings(1).await, Role::Api, clock).await;
    let app = a.app.clone();
    let (tenant, member, _) = setup(&app, "pay-oauth").await;
    let directory = wxcm_commands::wechat::AccountDirectory::default();
    let appid = AppId::parse(APPID).unwrap();
    let (token, session) =
        pay_flows::member_login(&app, &directory, &FakeOauth, &appid, "code-oPay_member_0001").await.unwrap();
    assert_eq!((session.member_id, &session.tenant_id), (member, &tenant), "the existing member");
    let found = pay_flows::member_session(&app, &token).await.unwrap().expect("live session");
    assert_eq!((found.member_id, found.openid.clone()), (member, session.openid.clone()));
    assert_eq!(pay_flows::member_session(&app, &format!("{token}x")).await.unwrap(), None);
    assert_eq!(pay_flows::member_session(&app, "nonsense").await.unwrap(), None);
    let (_, newcomer) =
        pay_flows::member_login(&app, &directory, &FakeOauth, &appid, "code-oPay_member_0002").await.unwrap();
    assert_ne!(newcomer.member_id, member, "a new member registered through OAuth");
    assert!(pay_flows::member_login(&app, &directory, &FakeOauth, &appid, "bad").await.unwrap_err().is_permanent());
    let unknown = AppId::parse("wx1111111111111111").unwrap();
    assert!(pay_flows::member_login(&app, &directory, &FakeOauth, &unknown, "code-oX12345").await.is_err());

    let request = pay_flows::RechargeRequest {
        member_id: member,
        appid: appid.clone(),
        openid: session.openid.clone(),
        amount_fen: AmountFen::new(AMOUNT_FEN).unwrap(),
        api: Some(PayApiVersion::V3),
        notify_base_url: "https://example.test".into(),
        client_ip: "127.0.0.1".into(),
    };
    let created =
        pay_flows::create_recharge(&app, &FakePay::default(), &tenant, &request, &ctx(&tenant)).await.unwrap();
    let id = created.order.order_id.clone();
    assert!(pay_flows::member_order(&app, &tenant, &member, &id).await.is_ok());
    assert!(pay_flows::member_order(&app, &tenant, &newcomer.member_id, &id).await.is_err(), "not another's");
}

#[tokio::test]
async fn member_api_refuses_without_a_session_and_for_an_unbound_account() {
    let t = spawn_app_on(fresh_settings(1).await).await;
    let res = t.http.get(t.url("/m/api/v1/me")).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 401);
    let res = t.http.get(t.url("/m/api/v1/recharges/rc000001")).bearer_auth("acme.nothing").send().await.unwrap();
    assert_eq!(res.status().as_u16(), 401);
    let res = t
        .http
        .post(t.url("/m/api/v1/sessions"))
        .json(&serde_json::json!({"appid": APPID, "code": "code-oX"}))
        .send()
        .await
        .unwrap();
    // The node has its OAuth port; the appid is bound to no tenant, so the code is never exchanged.
    assert_eq!(res.status().as_u16(), 404, "unbound account");
    t.stop().await;
}
