//! Withdrawals paid by WeChat Pay transfer (商家转账到零钱), black-box through
//! the HTTP API and the Pay simulator (`wxcm-sim`): the tenant chooses the
//! payout method (a transfer needs a Pay API v3 merchant); an approved
//! withdrawal records its transfer numbers (derived from the withdrawal) and
//! asks Pay; it is paid once whether Pay's notification (duplicated) or the
//! scheduler's query tells it; an answer lost is resolved by query under the
//! same numbers; a failed transfer fails the withdrawal, which is retried
//! (paid once, under the next numbers) or returned to the withdrawable
//! balance; a forged notification is refused with nothing changed.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use wxcm_commands::pay_flows::{self, MemberSession};
use wxcm_commands::pay_port::PayAccess;
use wxcm_commands::ports::Role;
use wxcm_commands::tenants::{self, AccountInput, PayInput};
use wxcm_commands::{auth, members, scheduler, CommandContext};
use wxcm_domain::member::{CardLevel, RegistrationSource};
use wxcm_domain::{Actor, AppId, IdempotencyKey, MemberId, OpenId, TenantId};
use wxcm_outbound::pay::{PayClientSettings, WechatPayClient};
use wxcm_tests::{fresh_settings, spawn_app_on, Simulator, TestApp};

const APPID: &str = "wx0123456789abcdef";
const MCH_ID: &str = "1900000109";
const API_V3_KEY: &str = "0123456789abcdef0123456789abcdef";
const MERCHANT_SERIAL: &str = "3775B6A45ACD588826D15E583A95F5DD2A9F7FA6";
const MERCHANT_PRIVATE_PEM: &str = include_str!("../../gateways/testdata/other_private.pem");
const MERCHANT_PUBLIC_PEM: &str = include_str!("../../gateways/testdata/other_public.pem");
const PASSWORD: &str = "a-long-enough-password";
const PRICE_FEN: i64 = 10_000;

struct World {
    t: TestApp,
    pay: WechatPayClient,
    sim: String,
    tenant: TenantId,
    owner: String,
    distributor: MemberId,
    distributor_session: String,
    buyer_session: String,
    product: String,
    _simulator: Simulator,
}

fn ctx(tenant: &TenantId, what: &str) -> CommandContext {
    let key = IdempotencyKey::parse(&format!("test-{what}-{}", uuid::Uuid::new_v4())).unwrap();
    CommandContext::new(tenant.clone(), key, "test".into())
}

async fn send(t: &TestApp, method: Method, token: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let key = format!("test-{}", uuid::Uuid::new_v4());
    let mut req = t.http.request(method, t.url(path)).bearer_auth(token).header("Idempotency-Key", key);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn session_for(
    t: &TestApp,
    tenant: &TenantId,
    openid: &str,
    balance_fen: i64,
    owner: &str,
) -> (MemberId, String) {
    let request = members::RegisterRequest {
        openid: Some(OpenId::parse(openid).unwrap()),
        source: RegistrationSource::Oauth,
        card_level: CardLevel::standard(),
    };
    let admin = Actor::Admin { username: "t".into() };
    let (view, _) = members::register(&t.app, tenant, request, admin, &ctx(tenant, "member")).await.unwrap();
    if balance_fen > 0 {
        let path = format!("/admin/api/v1/members/{}/cash/deposits", view.member_id);
        let (status, body) =
            send(t, Method::POST, owner, &path, Some(json!({"amount_fen": balance_fen, "reason": "test"}))).await;
        assert!(status.is_success(), "{body}");
    }
    let token = format!("{tenant}.{}", uuid::Uuid::new_v4().simple());
    let session = MemberSession {
        tenant_id: tenant.clone(),
        member_id: view.member_id,
        appid: AppId::parse(APPID).unwrap(),
        openid: OpenId::parse(openid).unwrap(),
        expires_at: t.app.clock.now() + chrono::Duration::days(2),
    };
    let shard = t.app.router.route(tenant).unwrap();
    shard.pay.create_member_session(&auth::token_hash(&token), &session).await.unwrap();
    (view.member_id, token)
}

/// A tenant with a Pay v3 merchant at the simulator, distribution (10%),
/// commissions settling at delivery (0 days: the notifications' timestamps
/// are real time, the test clock must stay near it), payout by transfer.
async fn world(tenant: &str) -> World {
    let simulator = Simulator::start().await;
    let sim = simulator.base_url.clone();
    let http = reqwest::Client::new();
    let res = http
        .post(format!("{sim}/sandbox/pay/merchants"))
        .json(&json!({"mch_id": MCH_ID, "appid": APPID, "api_v3_key": API_V3_KEY,
            "merchant_public_key_pem": MERCHANT_PUBLIC_PEM}))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    let platform: Value = http.get(format!("{sim}/sandbox/pay/platform")).send().await.unwrap().json().await.unwrap();
    let mut settings = fresh_settings(2).await;
    settings.wechat.pay_base_url = sim.clone();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    settings.http.listen = format!("127.0.0.1:{port}");
    settings.wechat.public_base_url = format!("http://127.0.0.1:{port}");
    let t = spawn_app_on(settings).await;
    let tenant = TenantId::parse(tenant).unwrap();
    let admin = Actor::Admin { username: "t".into() };
    tenants::create(&t.app, &tenant, "Transfer Mall", admin.clone(), &ctx(&tenant, "tenant")).await.unwrap();
    auth::create_admin(&t.app, &tenant, "owner", PASSWORD, Role::Owner).await.unwrap();
    let res = t
        .http
        .post(t.url("/admin/api/v1/login"))
        .json(&json!({"tenant_id": tenant.as_str(), "username": "owner", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let owner = res.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned();

    // Without a Pay v3 merchant a transfer payout is refused, nothing saved.
    let transfer_settings = json!({"hold_days": 0, "withdrawal_min_fen": 100, "withdrawal_fee_bps": 100, "payout_method": "wechat_transfer"});
    let path = "/admin/api/v1/distribution/commission-settings";
    let (status, body) = send(&t, Method::PUT, &owner, path, Some(transfer_settings.clone())).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("pay_v3_merchant_required")));
    let (status, body) = send(&t, Method::GET, &owner, path, None).await;
    assert_eq!((status, body["payout_method"].as_str()), (StatusCode::OK, Some("balance")), "{body}");
    let bad = json!({"hold_days": 0, "withdrawal_min_fen": 100, "withdrawal_fee_bps": 100, "payout_method": "cash"});
    let (status, _) = send(&t, Method::PUT, &owner, path, Some(bad)).await;
    assert!(status.is_client_error());

    let account = AccountInput {
        appid: APPID.into(),
        name: "Mall".into(),
        token: "token123".into(),
        encoding_aes_key: "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG".into(),
        app_secret: "secret".into(),
        pay: Some(PayInput {
            mch_id: MCH_ID.into(),
            api_v2_key: None,
            api_v3_key: Some(API_V3_KEY.into()),
            merchant_cert_serial: Some(MERCHANT_SERIAL.into()),
            merchant_private_key: Some(MERCHANT_PRIVATE_PEM.into()),
        }),
    };
    tenants::bind_account(&t.app, &tenant, account, admin, &ctx(&tenant, "account")).await.unwrap();
    pay_flows::put_platform_key(
        &t.app,
        &tenant,
        MCH_ID,
        platform["serial"].as_str().unwrap(),
        platform["public_key_pem"].as_str().unwrap(),
    )
    .await
    .unwrap();
    let distribution = json!({"enrolment": {"kind": "designation"}, "binding_mode": {"kind": "first_wins"},
        "commission_depth": 1, "default_rates": {"first_bps": 1000, "second_bps": 0},
        "new_member_reward_points": null});
    let (status, body) = send(&t, Method::PUT, &owner, "/admin/api/v1/distribution/settings", Some(distribution)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = send(&t, Method::PUT, &owner, path, Some(transfer_settings)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["payout_method"], "wechat_transfer", "{body}");
    let product =
        json!({"name": "Tea", "price": {"kind": "fen", "amount_fen": PRICE_FEN}, "stock": {"kind": "unlimited"}});
    let (status, body) = send(&t, Method::POST, &owner, "/admin/api/v1/mall/products", Some(product)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let product = body["product_id"].as_str().unwrap().to_owned();

    let (distributor, distributor_session) = session_for(&t, &tenant, "oTransferDistributor01", 0, &owner).await;
    let (_, buyer_session) = session_for(&t, &tenant, "oTransferBuyer00000001", 1_000_000, &owner).await;
    let (status, d) =
        send(&t, Method::POST, &owner, &format!("/admin/api/v1/distributors/{distributor}/designate"), None).await;
    assert_eq!(status, StatusCode::OK, "{d}");
    let code = d["code"].as_str().unwrap();
    let (status, body) =
        send(&t, Method::POST, &buyer_session, "/m/api/v1/distribution/bindings", Some(json!({"code": code}))).await;
    assert!(status.is_success(), "{body}");
    let pay = WechatPayClient::new(PayClientSettings { base_url: sim.clone(), ..Default::default() }).unwrap();
    World {
        t,
        pay,
        sim,
        tenant,
        owner,
        distributor,
        distributor_session,
        buyer_session,
        product,
        _simulator: simulator,
    }
}

impl World {
    async fn send(&self, method: Method, token: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        send(&self.t, method, token, path, body).await
    }

    /// One scheduler pass with the Pay client (what the scheduler role runs).
    async fn step(&self) {
        let shard = self.t.app.router.route(&self.tenant).unwrap();
        let base = self.t.url("");
        for _ in 0..2 {
            let access = PayAccess { gateway: &self.pay, notify_base_url: &base };
            scheduler::step_with_pay(&self.t.app, &shard, Some(access)).await.unwrap();
        }
    }

    /// A paid, delivered, settled order: `COMMISSION_FEN` withdrawable more.
    async fn earn(&self) {
        let body = json!({"product_id": self.product, "quantity": 1, "pay_with": "balance"});
        let (status, order) = self.send(Method::POST, &self.buyer_session, "/m/api/v1/mall/orders", Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{order}");
        let id = order["order_id"].as_str().unwrap();
        let path = format!("/m/api/v1/mall/orders/{id}/payment");
        let (status, body) = self.send(Method::POST, &self.buyer_session, &path, Some(json!({}))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let body = json!({"order": id, "store": "front desk"});
        let (status, body) = self.send(Method::POST, &self.owner, "/admin/api/v1/mall/deliveries", Some(body)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        self.step().await;
    }

    async fn account(&self) -> Value {
        let path = format!("/admin/api/v1/distributors/{}/commissions", self.distributor);
        let (status, v) = self.send(Method::GET, &self.owner, &path, None).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        v["account"].clone()
    }

    async fn withdraw(&self, amount: i64) -> String {
        let body = json!({"amount_fen": amount});
        let (status, w) =
            self.send(Method::POST, &self.distributor_session, "/m/api/v1/distribution/withdrawals", Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{w}");
        w["withdrawal_id"].as_str().unwrap().to_owned()
    }

    async fn decide(&self, id: &str, decision: &str) -> Value {
        let path = format!("/admin/api/v1/commission-withdrawals/{id}/{decision}");
        let (status, w) = self.send(Method::POST, &self.owner, &path, None).await;
        assert_eq!(status, StatusCode::OK, "{decision}: {w}");
        w
    }

    async fn withdrawal(&self, id: &str) -> Value {
        let (status, list) = self.send(Method::GET, &self.owner, "/admin/api/v1/commission-withdrawals", None).await;
        assert_eq!(status, StatusCode::OK, "{list}");
        list["withdrawals"].as_array().unwrap().iter().find(|w| w["withdrawal_id"] == id).cloned().unwrap()
    }

    async fn batch(&self, out_batch_no: &str) -> (StatusCode, Value) {
        let res = self.t.http.get(format!("{}/sandbox/pay/transfers/{out_batch_no}", self.sim)).send().await.unwrap();
        (res.status(), res.json().await.unwrap_or(Value::Null))
    }

    /// The simulator finishes the batch and notifies as asked.
    async fn finish(&self, out_batch_no: &str, body: Value) -> Value {
        let url = format!("{}/sandbox/pay/transfers/{out_batch_no}/finish", self.sim);
        let res = self.t.http.post(url).json(&body).send().await.unwrap();
        assert!(res.status().is_success(), "finish: {}", res.status());
        res.json().await.unwrap()
    }

    async fn cash_balance(&self) -> i64 {
        members::get(&self.t.app, &self.tenant, self.distributor).await.unwrap().balance_fen
    }
}

fn batch_no(transfer_no: &str) -> String {
    format!("wb{}", transfer_no.strip_prefix("wd").unwrap())
}

fn statuses(report: &Value) -> Vec<u64> {
    report["deliveries"].as_array().unwrap().iter().map(|d| d["status"].as_u64().unwrap_or(0)).collect()
}

#[tokio::test]
async fn a_transfer_is_paid_once_with_duplicated_notifications_and_a_lost_one_is_resolved_by_query() {
    let w = world("transfer-paid").await;
    w.earn().await;
    w.earn().await;
    let cash_before = w.cash_balance().await;

    // Approved → the transfer is recorded and asked of Pay under numbers of the withdrawal.
    let id = w.withdraw(1_000).await;
    let approved = w.decide(&id, "approve").await;
    assert_eq!(
        (approved["state"].as_str(), approved["payout_method"].as_str()),
        (Some("transferring"), Some("wechat_transfer")),
        "{approved}"
    );
    let detail_no = approved["transfer_no"].as_str().unwrap().to_owned();
    let batch = batch_no(&detail_no);
    let (status, at_pay) = w.batch(&batch).await;
    assert_eq!(status, StatusCode::OK, "{at_pay}");
    assert_eq!(
        (at_pay["batch_status"].as_str(), at_pay["details"][0]["transfer_amount"].as_i64()),
        (Some("PROCESSING"), Some(990))
    );
    assert_eq!(at_pay["details"][0]["out_detail_no"], detail_no.as_str());

    // Pay finishes and notifies three times at once: paid once.
    let report = w.finish(&batch, json!({"result": "success", "copies": 3, "concurrent": true})).await;
    assert_eq!(statuses(&report), vec![204, 204, 204], "{report}");
    let paid = w.withdrawal(&id).await;
    assert_eq!(paid["state"], "paid", "{paid}");
    assert_eq!(paid["payout_ref"], format!("wechat-transfer:{detail_no}"), "{paid}");
    let account = w.account().await;
    assert_eq!(
        (account["paid_out_fen"].as_i64(), account["withdrawable_fen"].as_i64()),
        (Some(1_000), Some(1_000)),
        "{account}"
    );
    // The query finds it paid too: nothing more; the cash balance never moved.
    w.t.clock.advance(chrono::Duration::seconds(40));
    w.step().await;
    let report = w.finish(&batch, json!({"result": "success", "copies": 2})).await;
    assert_eq!(statuses(&report), vec![204, 204], "{report}");
    assert_eq!(w.account().await["paid_out_fen"].as_i64(), Some(1_000));
    assert_eq!(w.cash_balance().await, cash_before, "a transfer is not a balance credit");

    // Another one whose notification is lost: the scheduler's query resolves it, once.
    let second = w.withdraw(1_000).await;
    let approved = w.decide(&second, "approve").await;
    let batch = batch_no(approved["transfer_no"].as_str().unwrap());
    w.step().await;
    assert_eq!(w.withdrawal(&second).await["state"], "transferring", "Pay has not finished");
    let report = w.finish(&batch, json!({"result": "success", "deliver": false})).await;
    assert!(statuses(&report).is_empty());
    assert_eq!(w.withdrawal(&second).await["state"], "transferring");
    w.t.clock.advance(chrono::Duration::seconds(40));
    w.step().await;
    assert_eq!(w.withdrawal(&second).await["state"], "paid");
    let account = w.account().await;
    assert_eq!(
        (account["paid_out_fen"].as_i64(), account["withdrawable_fen"].as_i64()),
        (Some(2_000), Some(0)),
        "{account}"
    );
}

#[tokio::test]
async fn a_failed_transfer_fails_the_withdrawal_then_a_retry_pays_once_or_a_return_gives_the_funds_back() {
    let w = world("transfer-fail").await;
    w.earn().await;
    w.earn().await;

    let id = w.withdraw(1_000).await;
    let first_no = w.decide(&id, "approve").await["transfer_no"].as_str().unwrap().to_owned();
    let report =
        w.finish(&batch_no(&first_no), json!({"result": "fail", "reason": "ACCOUNT_FROZEN", "copies": 2})).await;
    assert_eq!(statuses(&report), vec![204, 204], "{report}");
    let failed = w.withdrawal(&id).await;
    assert_eq!(failed["state"], "failed", "{failed}");
    let account = w.account().await;
    assert_eq!(
        (account["withdrawing_fen"].as_i64(), account["withdrawable_fen"].as_i64()),
        (Some(1_000), Some(1_000)),
        "held until decided: {account}"
    );

    // Retried: a new transfer under the next numbers, paid once.
    let retried = w.decide(&id, "retry").await;
    assert_eq!(retried["state"], "transferring", "{retried}");
    let second_no = retried["transfer_no"].as_str().unwrap().to_owned();
    assert_ne!(second_no, first_no);
    let report = w.finish(&batch_no(&second_no), json!({"result": "success", "copies": 2, "concurrent": true})).await;
    assert_eq!(statuses(&report), vec![204, 204], "{report}");
    // The failed batch's notification again changes nothing.
    w.finish(&batch_no(&first_no), json!({"result": "fail"})).await;
    assert_eq!(w.withdrawal(&id).await["state"], "paid");
    let account = w.account().await;
    assert_eq!(
        (account["paid_out_fen"].as_i64(), account["withdrawing_fen"].as_i64()),
        (Some(1_000), Some(0)),
        "{account}"
    );

    // Another failure returned: the funds are withdrawable again.
    let other = w.withdraw(1_000).await;
    let no = w.decide(&other, "approve").await["transfer_no"].as_str().unwrap().to_owned();
    w.finish(&batch_no(&no), json!({"result": "close", "reason": "OVERDUE_CLOSE"})).await;
    assert_eq!(w.withdrawal(&other).await["state"], "failed");
    let returned = w.decide(&other, "return").await;
    assert_eq!(returned["state"], "returned", "{returned}");
    let account = w.account().await;
    assert_eq!(
        (account["withdrawable_fen"].as_i64(), account["paid_out_fen"].as_i64()),
        (Some(1_000), Some(1_000)),
        "{account}"
    );
}

#[tokio::test]
async fn a_forged_notification_changes_nothing_and_a_lost_answer_is_resolved_by_query_under_the_same_numbers() {
    let w = world("transfer-forged").await;
    w.earn().await;
    w.earn().await;

    // Pay makes the batch but its answer is lost (every attempt of the client).
    let res =
        w.t.http
            .post(format!("{}/sandbox/pay/transfer-faults", w.sim))
            .json(&json!({"lose_answers": 3}))
            .send()
            .await
            .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let id = w.withdraw(1_000).await;
    let approved = w.decide(&id, "approve").await;
    assert_eq!(approved["state"], "transferring", "{approved}");
    let detail_no = approved["transfer_no"].as_str().unwrap().to_owned();
    let batch = batch_no(&detail_no);
    assert_eq!(w.batch(&batch).await.0, StatusCode::OK, "the batch exists at Pay");

    // Forged: a signature that does not verify, another merchant. Refused or
    // inapplicable; nothing changes. A genuine one with another amount is
    // inapplicable too (kept for an operator, 204: Pay would only repeat it).
    for tamper in ["signature", "timestamp_stale", "ciphertext", "signtest", "mch_id", "amount"] {
        let report = w.finish(&batch, json!({"result": "success", "tamper": tamper})).await;
        let status = statuses(&report)[0];
        if matches!(tamper, "mch_id" | "amount") {
            assert_eq!(status, 204, "{tamper}: {report}");
        } else {
            assert_eq!(status, 400, "{tamper}: {report}");
        }
        assert_eq!(w.withdrawal(&id).await["state"], "transferring", "{tamper}");
    }
    assert_eq!(w.account().await["paid_out_fen"].as_i64(), Some(0));

    // The scheduler asks Pay about the same numbers: paid, once; no second batch.
    w.t.clock.advance(chrono::Duration::seconds(40));
    w.step().await;
    let paid = w.withdrawal(&id).await;
    assert_eq!(
        (paid["state"].as_str(), paid["transfer_no"].as_str()),
        (Some("paid"), Some(detail_no.as_str())),
        "{paid}"
    );
    let (status, _) = w.batch(&format!("{}02", &batch[..batch.len() - 2])).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no transfer under new numbers");
    assert_eq!(w.account().await["paid_out_fen"].as_i64(), Some(1_000));
}
