//! WeChat Pay end to end through the Pay simulator: wxcm creates the JSAPI
//! order at the simulator, the simulator pays it and pushes signed (v2) or
//! signed-and-encrypted (v3) notifications to the real server, duplicates
//! and all; a lost notification is recovered by reconciliation; a refund made
//! at Pay reverses the credit once; a tampered amount changes nothing.

use chrono::Utc;
use serde_json::{json, Value};
use wxcm_commands::members::{self, RegisterRequest};
use wxcm_commands::pay_flows::{self, RechargeRequest};
use wxcm_commands::pay_port::{PayApi, PayGateway, RefundRequest};
use wxcm_commands::payments;
use wxcm_commands::tenants::{self, AccountInput, PayInput};
use wxcm_commands::CommandContext;
use wxcm_domain::member::{CardLevel, RegistrationSource};
use wxcm_domain::payment::{PayApiVersion, PaymentStatus};
use wxcm_domain::{Actor, AmountFen, AppId, IdempotencyKey, MemberId, OpenId, OutTradeNo, TenantId};
use wxcm_outbound::pay::{PayClientSettings, WechatPayClient};
use wxcm_tests::{fresh_settings, spawn_app_on, Simulator, TestApp};

const APPID: &str = "wx0123456789abcdef";
const MCH_ID: &str = "1900000109";
const API_V2_KEY: &str = "192006250b4c09247ec02edce69f6a2d";
const API_V3_KEY: &str = "0123456789abcdef0123456789abcdef";
const AMOUNT_FEN: i64 = 2_500;
/// The merchant's own API v3 key pair (Pay verifies the merchant's requests with the public half).
const MERCHANT_SERIAL: &str = "3775B6A45ACD588826D15E583A95F5DD2A9F7FA6";
const MERCHANT_PRIVATE_PEM: &str = include_str!("../../gateways/testdata/other_private.pem");
const MERCHANT_PUBLIC_PEM: &str = include_str!("../../gateways/testdata/other_public.pem");

fn ctx(tenant: &TenantId) -> CommandContext {
    let key = IdempotencyKey::parse(&format!("test-{}", uuid::Uuid::new_v4())).unwrap();
    CommandContext::new(tenant.clone(), key, "test".into())
}

struct World {
    t: TestApp,
    pay: WechatPayClient,
    sandbox_url: String,
    tenant: TenantId,
    member: MemberId,
    openid: OpenId,
    _server: Simulator,
}

async fn world(tenant: &str) -> World {
    let server = Simulator::start().await;
    let sandbox_url = server.base_url.clone();
    let http = reqwest::Client::new();
    let res = http
        .post(format!("{sandbox_url}/sandbox/pay/merchants"))
        .json(&serde_json::json!({
            "mch_id": MCH_ID, "appid": APPID, "api_v2_key": API_V2_KEY, "api_v3_key": API_V3_KEY,
            "merchant_public_key_pem": MERCHANT_PUBLIC_PEM,
        }))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "registering the merchant: {}", res.status());
    let platform: serde_json::Value =
        http.get(format!("{sandbox_url}/sandbox/pay/platform")).send().await.unwrap().json().await.unwrap();
    let platform_serial = platform["serial"].as_str().unwrap().to_owned();
    let platform_pem = platform["public_key_pem"].as_str().unwrap().to_owned();
    let mut settings = fresh_settings(1).await;
    settings.wechat.pay_base_url = sandbox_url.clone();
    let t = spawn_app_on(settings).await;
    let app = &t.app;
    let tenant = TenantId::parse(tenant).unwrap();
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
            merchant_cert_serial: Some(MERCHANT_SERIAL.into()),
            merchant_private_key: Some(MERCHANT_PRIVATE_PEM.into()),
        }),
    };
    tenants::bind_account(app, &tenant, account, admin, &ctx(&tenant)).await.unwrap();
    // v3 notifications are verified with the platform key the merchant downloaded from Pay.
    pay_flows::put_platform_key(app, &tenant, MCH_ID, &platform_serial, &platform_pem).await.unwrap();
    let openid = OpenId::parse("oPaySandboxMember01").unwrap();
    let request = RegisterRequest {
        openid: Some(openid.clone()),
        source: RegistrationSource::Oauth,
        card_level: CardLevel::standard(),
    };
    let (view, _) =
        members::register(app, &tenant, request, Actor::Wechat { source: "test".into() }, &ctx(&tenant)).await.unwrap();
    let pay = WechatPayClient::new(PayClientSettings { base_url: sandbox_url.clone(), ..Default::default() }).unwrap();
    World { t, pay, sandbox_url, tenant, member: view.member_id, openid, _server: server }
}

impl World {
    async fn order(&self, api: PayApiVersion) -> OutTradeNo {
        let request = RechargeRequest {
            member_id: self.member,
            appid: AppId::parse(APPID).unwrap(),
            openid: self.openid.clone(),
            amount_fen: AmountFen::new(AMOUNT_FEN).unwrap(),
            api: Some(api),
            notify_base_url: self.t.url(""),
            client_ip: "127.0.0.1".into(),
        };
        let created = pay_flows::create_recharge(&self.t.app, &self.pay, &self.tenant, &request, &ctx(&self.tenant))
            .await
            .unwrap();
        assert!(!created.pay_params.pay_sign.is_empty(), "JS-SDK parameters are signed");
        created.order.order_id.clone()
    }

    async fn pay_at_sandbox(&self, order: &OutTradeNo, body: Value) -> Value {
        let res = self
            .t
            .http
            .post(format!("{}/sandbox/pay/orders/{}/pay", self.sandbox_url, order.as_str()))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "sandbox pay: {}", res.status());
        res.json().await.unwrap()
    }

    async fn balance(&self) -> i64 {
        members::get(&self.t.app, &self.tenant, self.member).await.unwrap().balance_fen
    }

    async fn ledger_lines(&self, event_type: &str) -> usize {
        members::history(&self.t.app, &self.tenant, self.member, 0, 200)
            .await
            .unwrap()
            .iter()
            .filter(|e| e.event_type == event_type)
            .count()
    }

    async fn status(&self, order: &OutTradeNo) -> PaymentStatus {
        payments::get(&self.t.app, &self.tenant, order).await.unwrap().status
    }
}

fn accepted(delivery: &Value) -> bool {
    let status = delivery["status"].as_u64().unwrap_or(0);
    let body = delivery["body"].as_str().unwrap_or("");
    match delivery["api"].as_str() {
        Some("v2") => status == 200 && body.contains("SUCCESS") && !body.contains("FAIL"),
        _ => status == 200 || status == 204,
    }
}

async fn paid_once_through_the_simulator(api: PayApiVersion, tenant: &str) {
    let w = world(tenant).await;
    let order = w.order(api).await;
    // 20 concurrent copies of the same notification: every copy is answered "applied", one credit.
    let report = w.pay_at_sandbox(&order, json!({"copies": 20, "concurrent": true})).await;
    let deliveries = report["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 20);
    assert!(deliveries.iter().all(accepted), "every copy acknowledged: {deliveries:?}");
    assert_eq!(w.balance().await, AMOUNT_FEN);
    assert_eq!(w.ledger_lines("RechargeCredited").await, 1);
    assert_eq!(w.status(&order).await, PaymentStatus::Paid);

    // A signed notification whose amount differs from the order changes nothing; it is
    // acknowledged (a retry would carry the same amount) and recorded for an operator.
    let tampered = w.order(api).await;
    let report = w.pay_at_sandbox(&tampered, json!({"tamper": "amount"})).await;
    assert!(report["deliveries"].as_array().unwrap().iter().all(accepted), "{report}");
    let detail = pay_flows::order_detail(&w.t.app, &w.tenant, &tampered).await.unwrap();
    assert!(detail.notifications.iter().any(|n| n.outcome == "inapplicable"), "{:?}", detail.notifications);
    // A notification with a broken signature is refused and Pay is told to retry.
    let report = w.pay_at_sandbox(&tampered, json!({"tamper": "signature"})).await;
    assert!(report["deliveries"].as_array().unwrap().iter().all(|d| !accepted(d)), "{report}");
    assert_eq!(w.balance().await, AMOUNT_FEN);
    assert_eq!(w.status(&tampered).await, PaymentStatus::Created);

    // A lost notification: Pay has the money, wxcm heard nothing; reconciliation asks Pay.
    // (The tampered order above was paid at Pay too: only its notification was forged, so
    // reconciliation credits it as well, with the amount Pay reports.)
    let lost = w.order(api).await;
    let report = w.pay_at_sandbox(&lost, json!({"deliver": false})).await;
    assert!(report["deliveries"].as_array().unwrap().is_empty());
    assert_eq!(w.balance().await, AMOUNT_FEN);
    let reconciled = pay_flows::reconcile_tenant(&w.t.app, &w.pay, &w.tenant).await.unwrap();
    assert_eq!(reconciled.paid, 2, "{reconciled:?}");
    assert_eq!(w.balance().await, 3 * AMOUNT_FEN);
    assert_eq!(w.status(&lost).await, PaymentStatus::Paid);
    assert_eq!(w.status(&tampered).await, PaymentStatus::Paid);
    // Reconciling again, or the late notification arriving after all, changes nothing.
    pay_flows::reconcile_tenant(&w.t.app, &w.pay, &w.tenant).await.unwrap();
    let report = w.pay_at_sandbox(&lost, json!({"copies": 2})).await;
    assert!(report["deliveries"].as_array().unwrap().iter().all(|d| d["status"].as_u64().is_some()), "{report}");
    assert_eq!(w.ledger_lines("RechargeCredited").await, 3);
    assert_eq!(w.balance().await, 3 * AMOUNT_FEN);

    // A refund made at Pay: its notification (duplicated, concurrent) reverses the credit once.
    let merchant = pay_flows::merchant_for(&w.t.app, &w.tenant, APPID).await.unwrap();
    let (pay_api, notify_path) = match api {
        PayApiVersion::V2 => (PayApi::V2, format!("/pay/notify/refund/{APPID}")),
        PayApiVersion::V3 => (PayApi::V3, format!("/pay/notify/v3/{APPID}")),
    };
    let out_refund_no = format!("rf{}", Utc::now().timestamp_micros());
    let refund = RefundRequest {
        api: pay_api,
        out_trade_no: order.as_str().to_owned(),
        out_refund_no: out_refund_no.clone(),
        total_fen: AMOUNT_FEN,
        refund_fen: 1_000,
        notify_url: w.t.url(&notify_path),
    };
    w.pay.refund(&merchant, &refund).await.unwrap();
    let res =
        w.t.http
            .post(format!("{}/sandbox/pay/refunds/{out_refund_no}/notify", w.sandbox_url))
            .json(&json!({"copies": 5, "concurrent": true}))
            .send()
            .await
            .unwrap();
    assert!(res.status().is_success());
    let report: Value = res.json().await.unwrap();
    assert!(report["deliveries"].as_array().unwrap().iter().all(accepted), "{report}");
    assert_eq!(w.balance().await, 3 * AMOUNT_FEN - 1_000);
    assert_eq!(w.ledger_lines("RechargeReversed").await, 1);
    w.t.stop().await;
}

#[tokio::test]
async fn v2_recharge_through_the_simulator_credits_once_recovers_and_refunds_once() {
    paid_once_through_the_simulator(PayApiVersion::V2, "paysim-v2").await;
}

#[tokio::test]
async fn v3_recharge_through_the_simulator_credits_once_recovers_and_refunds_once() {
    paid_once_through_the_simulator(PayApiVersion::V3, "paysim-v3").await;
}
