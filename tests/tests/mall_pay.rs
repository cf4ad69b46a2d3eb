//! Mall orders paid with WeChat Pay, end to end through the HTTP API and the
//! Pay simulator: the member starts Pay for an order (one Pay order per
//! order), the simulator pays it and pushes its notifications (duplicated,
//! concurrent) to the real server, the order is paid once and its points
//! spent; an admin refund is asked of Pay by the scheduler and its
//! notification recorded; a payment arriving after the order expired is
//! refunded through Pay, never honoured, with points and stock back.

use reqwest::StatusCode;
use serde_json::{json, Value};
use wxcm_commands::ledger_requests::{self, LedgerRequest};
use wxcm_commands::pay_flows::{self, MemberSession};
use wxcm_commands::pay_port::PayAccess;
use wxcm_commands::ports::Role;
use wxcm_commands::tenants::{self, AccountInput, PayInput};
use wxcm_commands::{auth, mall, members, payments, scheduler, CommandContext};
use wxcm_domain::mall::MallOrderId;
use wxcm_domain::member::{CardLevel, ExpiryPolicy, RegistrationSource};
use wxcm_domain::payment::PaymentStatus;
use wxcm_domain::{Actor, AppId, IdempotencyKey, MemberId, OpenId, PointsAmount, Reference, TenantId};
use wxcm_outbound::pay::{PayClientSettings, WechatPayClient};
use wxcm_tests::{fresh_settings, spawn_app_on, Simulator, TestApp};

const APPID: &str = "wx0123456789abcdef";
const MCH_ID: &str = "1900000109";
const API_V2_KEY: &str = "192006250b4c09247ec02edce69f6a2d";
const API_V3_KEY: &str = "0123456789abcdef0123456789abcdef";
const MERCHANT_SERIAL: &str = "3775B6A45ACD588826D15E583A95F5DD2A9F7FA6";
const MERCHANT_PRIVATE_PEM: &str = include_str!("../../gateways/testdata/other_private.pem");
const MERCHANT_PUBLIC_PEM: &str = include_str!("../../gateways/testdata/other_public.pem");
const PASSWORD: &str = "a-long-enough-password";
/// The product: 100 points and 1,500 fen a unit.
const POINTS: i64 = 100;
const CASH_FEN: i64 = 1_500;
const PAY_WINDOW_MINUTES: i64 = 1;

fn ctx(tenant: &TenantId, what: &str) -> CommandContext {
    let key = IdempotencyKey::parse(&format!("test-{what}-{}", uuid::Uuid::new_v4())).unwrap();
    CommandContext::new(tenant.clone(), key, "test".into())
}

fn key() -> String {
    format!("test-{}", uuid::Uuid::new_v4())
}

struct World {
    t: TestApp,
    pay: WechatPayClient,
    sandbox_url: String,
    tenant: TenantId,
    owner: String,
    member: MemberId,
    session: String,
    _simulator: Simulator,
}

async fn world(tenant: &str) -> World {
    let simulator = Simulator::start().await;
    let sandbox_url = simulator.base_url.clone();
    let http = reqwest::Client::new();
    let res = http
        .post(format!("{sandbox_url}/sandbox/pay/merchants"))
        .json(&json!({
            "mch_id": MCH_ID, "appid": APPID, "api_v2_key": API_V2_KEY, "api_v3_key": API_V3_KEY,
            "merchant_public_key_pem": MERCHANT_PUBLIC_PEM,
        }))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "registering the merchant: {}", res.status());
    let platform: Value =
        http.get(format!("{sandbox_url}/sandbox/pay/platform")).send().await.unwrap().json().await.unwrap();
    let mut settings = fresh_settings(2).await;
    settings.wechat.pay_base_url = sandbox_url.clone();
    // Pay notifies the server the test runs: a port chosen now, so the
    // server's public address (where the member API sends Pay) is known.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    settings.http.listen = format!("127.0.0.1:{port}");
    settings.wechat.public_base_url = format!("http://127.0.0.1:{port}");
    // A short window: the test clock moves past it and stays within the
    // minutes Pay's (real-time) notification timestamps are accepted.
    settings.limits.mall_pay_window_minutes = PAY_WINDOW_MINUTES;
    let t = spawn_app_on(settings).await;
    assert_eq!(t.url(""), format!("http://127.0.0.1:{port}"), "the server listens where Pay notifies");
    let app = &t.app;
    let tenant = TenantId::parse(tenant).unwrap();
    let admin = Actor::Admin { username: "t".into() };
    tenants::create(app, &tenant, "Pay Mall", admin.clone(), &ctx(&tenant, "tenant")).await.unwrap();
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
    tenants::bind_account(app, &tenant, account, admin.clone(), &ctx(&tenant, "account")).await.unwrap();
    pay_flows::put_platform_key(
        app,
        &tenant,
        MCH_ID,
        platform["serial"].as_str().unwrap(),
        platform["public_key_pem"].as_str().unwrap(),
    )
    .await
    .unwrap();
    auth::create_admin(app, &tenant, "owner", PASSWORD, Role::Owner).await.unwrap();
    let res = t
        .http
        .post(t.url("/admin/api/v1/login"))
        .json(&json!({"tenant_id": tenant.as_str(), "username": "owner", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let owner = res.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned();

    let openid = OpenId::parse("oMallPayMember0001").unwrap();
    let request = members::RegisterRequest {
        openid: Some(openid.clone()),
        source: RegistrationSource::Oauth,
        card_level: CardLevel::standard(),
    };
    let (view, _) = members::register(app, &tenant, request, admin.clone(), &ctx(&tenant, "member")).await.unwrap();
    let grant = LedgerRequest::PointsGrant {
        points: PointsAmount::new(1_000).unwrap(),
        expiry: ExpiryPolicy::Never,
        reason: Reference::parse("test").unwrap(),
        reference: None,
    };
    ledger_requests::execute(app, &tenant, view.member_id, grant, admin, &ctx(&tenant, "points")).await.unwrap();
    let session = format!("{}.{}", tenant, uuid::Uuid::new_v4().simple());
    let member_session = MemberSession {
        tenant_id: tenant.clone(),
        member_id: view.member_id,
        appid: AppId::parse(APPID).unwrap(),
        openid,
        expires_at: app.clock.now() + chrono::Duration::days(2),
    };
    let shard = app.router.route(&tenant).unwrap();
    shard.pay.create_member_session(&auth::token_hash(&session), &member_session).await.unwrap();
    let pay = WechatPayClient::new(PayClientSettings { base_url: sandbox_url.clone(), ..Default::default() }).unwrap();
    World { t, pay, sandbox_url, tenant, owner, member: view.member_id, session, _simulator: simulator }
}

async fn send(req: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let res = req.send().await.unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

impl World {
    async fn post(&self, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
        send(self.t.http.post(self.t.url(path)).bearer_auth(token).header("Idempotency-Key", key()).json(&body)).await
    }

    async fn product(&self, stock: i64) -> String {
        let body = json!({"name": "Mug", "description": "A mug", "images": ["https://img.example/mug.png"],
            "price": {"kind": "points_and_fen", "points": POINTS, "amount_fen": CASH_FEN},
            "stock": {"kind": "finite", "total": stock}, "per_member_limit": null});
        let (status, body) = self.post(&self.owner, "/admin/api/v1/mall/products", body).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["product_id"].as_str().unwrap().to_owned()
    }

    /// Places an order of one unit paid with points and WeChat Pay.
    async fn order(&self, product_id: &str) -> String {
        let body = json!({"product_id": product_id, "quantity": 1, "pay_with": "wechat_pay"});
        let (status, body) = self.post(&self.session, "/m/api/v1/mall/orders", body).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["method"], "points_and_wechat_pay", "{body}");
        body["order_id"].as_str().unwrap().to_owned()
    }

    async fn start_pay(&self, order_id: &str) -> (StatusCode, Value) {
        self.post(&self.session, &format!("/m/api/v1/mall/orders/{order_id}/wechat-pay"), json!({})).await
    }

    /// The simulator pays the order's Pay order and notifies `copies` times at once.
    async fn pay_at_pay(&self, trade_no: &str, copies: u32) -> Value {
        let res = self
            .t
            .http
            .post(format!("{}/sandbox/pay/orders/{trade_no}/pay", self.sandbox_url))
            .json(&json!({"copies": copies, "concurrent": true}))
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "sandbox pay: {}", res.status());
        res.json().await.unwrap()
    }

    async fn refund_notify(&self, refund_no: &str) -> Value {
        let res = self
            .t
            .http
            .post(format!("{}/sandbox/pay/refunds/{refund_no}/notify", self.sandbox_url))
            .json(&json!({"copies": 3, "concurrent": true}))
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "sandbox refund notify: {}", res.status());
        res.json().await.unwrap()
    }

    async fn order_view(&self, order_id: &str) -> mall::orders::OrderView {
        mall::orders::get_order(&self.t.app, &self.tenant, MallOrderId::parse(order_id).unwrap()).await.unwrap()
    }

    async fn points(&self) -> (i64, i64) {
        let view = members::get(&self.t.app, &self.tenant, self.member).await.unwrap();
        (view.points, view.held_points)
    }

    async fn product_stock(&self, product_id: &str) -> Value {
        let (status, body) = send(
            self.t.http.get(self.t.url(&format!("/admin/api/v1/mall/products/{product_id}"))).bearer_auth(&self.owner),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// One scheduler pass with the Pay client (what the scheduler role runs).
    async fn scheduler_step(&self) -> scheduler::StepReport {
        let shard = self.t.app.router.route(&self.tenant).unwrap();
        let base = self.t.url("");
        let access = PayAccess { gateway: &self.pay, notify_base_url: &base };
        scheduler::step_with_pay(&self.t.app, &shard, Some(access)).await.unwrap()
    }
}

/// The member's total paid (what the card level rule reads): a Pay payment counts once.
async fn total_paid(w: &World) -> i64 {
    let shard = w.t.app.router.route(&w.tenant).unwrap();
    shard.members.load(&w.tenant, &w.member.to_string()).await.unwrap().0.total_paid.get()
}

fn accepted(delivery: &Value) -> bool {
    matches!(delivery["status"].as_u64(), Some(200 | 204))
}

#[tokio::test]
async fn a_mall_order_paid_with_wechat_pay_is_paid_once_and_refunded_through_pay() {
    let w = world("mallpay-a").await;
    let product_id = w.product(5).await;
    let order_id = w.order(&product_id).await;
    assert_eq!(w.points().await, (900, 100), "the points are held at order time");

    // The balance endpoint refuses a WeChat Pay order.
    let (status, body) = w.post(&w.session, &format!("/m/api/v1/mall/orders/{order_id}/payment"), json!({})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("payment_method_mismatch")),
        "{body}"
    );

    let (status, started) = w.start_pay(&order_id).await;
    assert_eq!(status, StatusCode::OK, "{started}");
    let trade_no = started["payment"]["order_id"].as_str().unwrap().to_owned();
    assert_eq!(started["payment"]["amount_fen"], CASH_FEN);
    assert_eq!(started["payment"]["purpose"], "mall_order");
    assert!(!started["pay_params"]["paySign"].as_str().unwrap_or("").is_empty(), "{started}");
    // Asked again (another key): the same Pay order.
    let (status, again) = w.start_pay(&order_id).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["payment"]["order_id"], trade_no.as_str());

    // 10 concurrent copies of the notification: paid once.
    let report = w.pay_at_pay(&trade_no, 10).await;
    assert!(report["deliveries"].as_array().unwrap().iter().all(accepted), "{report}");
    let view = w.order_view(&order_id).await;
    assert_eq!(view.status, wxcm_domain::mall::OrderStatus::Paid);
    assert!(matches!(view.cash_paid, Some(wxcm_domain::mall::CashPayment::WechatPay { .. })), "{view:?}");
    assert_eq!(w.points().await, (900, 0), "the held points are spent");
    assert_eq!(w.product_stock(&product_id).await["sold"], 1);
    assert_eq!(total_paid(&w).await, CASH_FEN);
    // Paid: starting Pay again is refused.
    assert_eq!(w.start_pay(&order_id).await.0, StatusCode::CONFLICT);

    // The admin refunds: the order decides, the scheduler asks Pay, Pay's
    // notification is recorded on the Pay order.
    let (status, refunded) =
        w.post(&w.owner, &format!("/admin/api/v1/mall/orders/{order_id}/refund"), json!({"reason": "broken"})).await;
    assert_eq!(status, StatusCode::OK, "{refunded}");
    assert_eq!(refunded["status"], "refunded");
    let step = w.scheduler_step().await;
    assert_eq!(step.failed, 0, "{step:?}");
    let refund_no = mall::pay::pay_refund_no(MallOrderId::parse(&order_id).unwrap()).unwrap();
    let report = w.refund_notify(refund_no.as_str()).await;
    assert!(report["deliveries"].as_array().unwrap().iter().all(accepted), "{report}");
    let trade = wxcm_domain::OutTradeNo::parse(&trade_no).unwrap();
    let payment = pay_flows::order_detail(&w.t.app, &w.tenant, &trade).await.unwrap();
    assert_eq!(payment.order.refunded_total_fen, CASH_FEN, "{payment:?}");
    // Points back (a new lot), stock back, no balance touched.
    assert_eq!(w.points().await, (1_000, 0));
    assert_eq!(w.product_stock(&product_id).await["sold"], 0);
    assert_eq!(members::get(&w.t.app, &w.tenant, w.member).await.unwrap().balance_fen, 0);
    assert_eq!(total_paid(&w).await, 0, "the refund is taken off the total paid");
    // Scheduling again asks nothing more of Pay and changes nothing.
    assert_eq!(w.scheduler_step().await.failed, 0);
    assert_eq!(payments::get(&w.t.app, &w.tenant, &trade).await.unwrap().status, PaymentStatus::Paid);
    w.t.stop().await;
}

#[tokio::test]
async fn a_wechat_pay_payment_after_expiry_is_refunded_through_pay_never_honoured() {
    let w = world("mallpay-b").await;
    let product_id = w.product(1).await;
    let order_id = w.order(&product_id).await;
    let (status, started) = w.start_pay(&order_id).await;
    assert_eq!(status, StatusCode::OK, "{started}");
    let trade_no = started["payment"]["order_id"].as_str().unwrap().to_owned();

    // The member pays at Pay in the last moment; the notification is lost.
    let res =
        w.t.http
            .post(format!("{}/sandbox/pay/orders/{trade_no}/pay", w.sandbox_url))
            .json(&json!({"deliver": false}))
            .send()
            .await
            .unwrap();
    assert!(res.status().is_success(), "sandbox pay: {}", res.status());
    // The order's window passes; its expiry (the due work's step) releases stock and points.
    w.t.clock.advance(chrono::Duration::minutes(PAY_WINDOW_MINUTES + 1));
    let order = MallOrderId::parse(&order_id).unwrap();
    mall::orders::settle(&w.t.app, &w.tenant, order, mall::pay::PayRefunds::Later).await.unwrap();
    assert_eq!(w.order_view(&order_id).await.status, wxcm_domain::mall::OrderStatus::Expired);
    assert_eq!(w.points().await, (1_000, 0));
    assert_eq!(w.product_stock(&product_id).await["reserved"], 0);

    // Reconciliation asks Pay and learns of the payment, after the order ended.
    let reconciled = pay_flows::reconcile_tenant(&w.t.app, &w.pay, &w.tenant).await.unwrap();
    assert_eq!(reconciled.paid, 1, "{reconciled:?}");
    let view = w.order_view(&order_id).await;
    assert_eq!(view.status, wxcm_domain::mall::OrderStatus::Refunded, "{view:?}");
    assert!(view.late_payment.is_some(), "{view:?}");
    // The refund is asked of Pay by the scheduler, and its notification recorded.
    assert_eq!(w.scheduler_step().await.failed, 0);
    let refund_no = mall::pay::pay_refund_no(MallOrderId::parse(&order_id).unwrap()).unwrap();
    let report = w.refund_notify(refund_no.as_str()).await;
    assert!(report["deliveries"].as_array().unwrap().iter().all(accepted), "{report}");
    assert_eq!(total_paid(&w).await, 0, "a payment never honoured is not counted");
    let trade = wxcm_domain::OutTradeNo::parse(&trade_no).unwrap();
    assert_eq!(pay_flows::order_detail(&w.t.app, &w.tenant, &trade).await.unwrap().order.refunded_total_fen, CASH_FEN);
    // Nothing honoured: points untouched, the unit back on sale, nothing sold.
    assert_eq!(w.points().await, (1_000, 0));
    let product = w.product_stock(&product_id).await;
    assert_eq!((product["sold"].as_i64(), product["reserved"].as_i64()), (Some(0), Some(0)), "{product}");
    w.t.stop().await;
}
