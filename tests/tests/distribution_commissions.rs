//! Commissions end to end (issue 15, items 3-5), against the real Postgres
//! and the HTTP API: a paid mall order pays levels 1 and 2 exactly once even
//! when its paid handling runs again; settlement only after delivery + the
//! holding days (the test clock); a refund before settlement reverses, after
//! settlement claws back into recorded debt (withdrawable 0 until repaid);
//! withdrawals approved and paid to the cash balance once, rejected back to
//! the balance; 20 concurrent withdrawals of the whole balance → one
//! accepted; a withdrawal racing a reversal never pays more than earned; bad
//! input → 4xx and nothing changed; roles and tenants.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use wxcm_commands::{commissions, members, tenants, CommandContext};
use wxcm_domain::mall::MallOrderId;
use wxcm_domain::{Actor, MemberId};
use wxcm_tests::distribution::*;
use wxcm_tests::{spawn_app, TestApp};

#[tokio::test]
async fn paid_orders_earn_two_levels_once_settle_after_the_hold_and_refunds_reverse_or_leave_debt() {
    let t = spawn_app().await;
    let s = shop(&t, "comm-lifecycle").await;
    let bound_day = wxcm_domain::campaign::merchant_day(t.app.clock.now());
    let c = chain(&t, &s, "life").await;

    // Paid: level 1 earns 10%, level 2 5%, pending; handling the payment again adds nothing.
    let first = buy(&t, &s, &c.c_session).await;
    step(&t, &s).await;
    let order_id = MallOrderId::parse(&first).unwrap();
    for _ in 0..3 {
        assert_eq!(commissions::due_accrue(&t.app, &s.tenant, order_id).await.unwrap(), 0);
    }
    let (status, _) =
        send(&t, Method::POST, &c.c_session, &format!("/m/api/v1/mall/orders/{first}/payment"), Some(json!({}))).await;
    assert!(status.is_client_error() || status.is_success());
    step(&t, &s).await;
    let b = account(&t, &s, c.b).await;
    let a = account(&t, &s, c.a).await;
    assert_eq!((fig(&b, "earned"), fig(&b, "pending")), (1_000, 1_000), "{b}");
    assert_eq!((fig(&a, "earned"), fig(&a, "pending")), (500, 500), "{a}");
    let line = &b["commissions"][0];
    assert_eq!(line["commission"]["basis_fen"], PRICE_FEN, "{b}");
    let split: Vec<(i64, i64)> = line["split"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["level"].as_i64().unwrap(), c["amount_fen"].as_i64().unwrap()))
        .collect();
    assert_eq!(split, vec![(1, 1_000), (2, 500)], "{b}");
    assert_eq!(b["commissions"].as_array().unwrap().len(), 1, "{b}");

    // Settles only after delivery + the holding days.
    step(&t, &s).await;
    assert_eq!(fig(&account(&t, &s, c.b).await, "settled"), 0);
    deliver(&t, &s, &first).await;
    t.clock.advance(chrono::Duration::days(HOLD_DAYS - 1));
    step(&t, &s).await;
    assert_eq!(fig(&account(&t, &s, c.b).await, "settled"), 0);
    t.clock.advance(chrono::Duration::days(1) + chrono::Duration::minutes(1));
    step(&t, &s).await;
    let b = account(&t, &s, c.b).await;
    assert_eq!((fig(&b, "settled"), fig(&b, "pending"), fig(&b, "withdrawable")), (1_000, 0, 1_000), "{b}");
    assert_eq!(fig(&account(&t, &s, c.a).await, "withdrawable"), 500);
    let (status, centre) = send(&t, Method::GET, &c.b_session, "/m/api/v1/distribution/centre", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((centre["pending_fen"].as_i64(), centre["withdrawable_fen"].as_i64()), (Some(0), Some(1_000)));

    // Ranks: B (level 1) before A (level 2) by commission settled this week; by new subordinates
    // in the week of the bindings, one each (B bound C, A bound B).
    let settled_day = wxcm_domain::campaign::merchant_day(t.app.clock.now());
    let rank =
        |by: &str, day: chrono::NaiveDate| format!("/admin/api/v1/distribution/ranks?by={by}&period=week&date={day}");
    let (status, ranked) = send(&t, Method::GET, &s.auditor, &rank("settled_commission", settled_day), None).await;
    assert_eq!(status, StatusCode::OK, "{ranked}");
    let rows: Vec<(i64, String, i64)> = ranked["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["rank"].as_i64().unwrap(),
                r["distributor_id"].as_str().unwrap().to_owned(),
                r["value"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(rows, vec![(1, c.b.to_string(), 1_000), (2, c.a.to_string(), 500)], "{ranked}");
    let (_, ranked) = send(&t, Method::GET, &s.owner, &rank("new_subordinates", bound_day), None).await;
    let values: Vec<i64> = ranked["rows"].as_array().unwrap().iter().map(|r| r["value"].as_i64().unwrap()).collect();
    assert_eq!(values, vec![1, 1], "{ranked}");
    let (status, _) = send(&t, Method::GET, &s.staff, &rank("new_subordinates", bound_day), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) =
        send(&t, Method::GET, &s.owner, "/admin/api/v1/distribution/ranks?by=fame&period=week", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = send(
        &t,
        Method::GET,
        &s.owner,
        "/admin/api/v1/distribution/ranks?by=new_subordinates&period=month&limit=0",
        None,
    )
    .await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_limit")));

    // Refunded before settlement: reversed, nothing withdrawable from it.
    let second = buy(&t, &s, &c.c_session).await;
    step(&t, &s).await;
    assert_eq!(fig(&account(&t, &s, c.b).await, "pending"), 1_000);
    refund(&t, &s, &second).await;
    step(&t, &s).await;
    let b = account(&t, &s, c.b).await;
    assert_eq!((fig(&b, "pending"), fig(&b, "reversed"), fig(&b, "withdrawable")), (0, 1_000, 1_000), "{b}");
    assert_eq!(fig(&account(&t, &s, c.a).await, "reversed"), 500);
    assert_accounted(&b);

    // B withdraws everything; approved → paid to the cash balance once (fee 1%).
    let before = balance(&t, &s, c.b).await;
    let (status, w) = withdraw(&t, &c.b_session, json!(1_000)).await;
    assert_eq!(status, StatusCode::CREATED, "{w}");
    let id = w["withdrawal_id"].as_str().unwrap().to_owned();
    let (status, queue) =
        send(&t, Method::GET, &s.owner, "/admin/api/v1/commission-withdrawals?state=requested", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(queue["withdrawals"][0]["withdrawal_id"], id.as_str(), "{queue}");
    let approve = format!("/admin/api/v1/commission-withdrawals/{id}/approve");
    let (status, _) = send(&t, Method::POST, &s.auditor, &approve, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, paid) = send(&t, Method::POST, &s.owner, &approve, None).await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    assert_eq!((paid["state"].as_str(), paid["payout_fen"].as_i64()), (Some("paid"), Some(990)), "{paid}");
    assert!(paid["payout_ref"].as_str().unwrap().starts_with("commission-withdrawal:"), "{paid}");
    step(&t, &s).await;
    t.clock.advance(chrono::Duration::minutes(5));
    step(&t, &s).await;
    assert_eq!(balance(&t, &s, c.b).await, before + 990);
    let (status, _) = send(&t, Method::POST, &s.owner, &approve, None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(balance(&t, &s, c.b).await, before + 990);

    // Refunded after settlement and withdrawal: clawed back into debt, withdrawable 0.
    refund(&t, &s, &first).await;
    step(&t, &s).await;
    let b = account(&t, &s, c.b).await;
    assert_eq!((fig(&b, "clawed_back"), fig(&b, "debt"), fig(&b, "withdrawable")), (1_000, 1_000, 0), "{b}");
    assert_accounted(&b);
    let (status, reply) = withdraw(&t, &c.b_session, json!(100)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{reply}");
    let a = account(&t, &s, c.a).await;
    assert_eq!((fig(&a, "clawed_back"), fig(&a, "debt"), fig(&a, "withdrawable")), (500, 0, 0), "{a}");

    // A later settlement repays the debt before anything is withdrawable.
    let third = buy(&t, &s, &c.c_session).await;
    step(&t, &s).await;
    deliver(&t, &s, &third).await;
    t.clock.advance(chrono::Duration::days(HOLD_DAYS) + chrono::Duration::minutes(1));
    step(&t, &s).await;
    let b = account(&t, &s, c.b).await;
    assert_eq!((fig(&b, "settled"), fig(&b, "debt"), fig(&b, "withdrawable")), (2_000, 0, 0), "{b}");
    assert_accounted(&b);
    assert_accounted(&account(&t, &s, c.a).await);

    // `wxcm audit commissions` explains the account from its events.
    let out =
        wxcm(&t, &["audit", "commissions", "--tenant", s.tenant.as_str(), "--distributor", &c.b.to_string()]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    for needed in [
        "CommissionAccrued",
        "CommissionSettled",
        "CommissionReversed",
        "CommissionClawedBack",
        "WithdrawalPaid",
        "verdict: OK",
    ] {
        assert!(text.contains(needed), "{needed} missing: {text}");
    }
    let out =
        wxcm(&t, &["audit", "commissions", "--tenant", s.tenant.as_str(), "--distributor", &c.b.to_string(), "--json"])
            .await;
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let last = report["lines"].as_array().unwrap().last().unwrap().clone();
    assert_eq!((last["debt_fen"].as_i64(), last["figures"]["settled"].as_i64()), (Some(0), Some(2_000)), "{last}");
    let stranger = MemberId::new_random().to_string();
    let out = wxcm(&t, &["audit", "commissions", "--tenant", s.tenant.as_str(), "--distributor", &stranger]).await;
    assert!(!out.status.success());
    let out = wxcm(&t, &["audit", "verify", "--tenant", s.tenant.as_str()]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    t.stop().await;
}

#[tokio::test]
async fn withdrawals_race_each_other_and_reversals_bad_input_changes_nothing_and_tenants_are_apart() {
    let t = spawn_app().await;
    let s = shop(&t, "comm-withdraw").await;
    let c = chain(&t, &s, "wdrw").await;
    // Two settled orders: B has 2,000 withdrawable.
    let mut orders = Vec::new();
    for _ in 0..2 {
        orders.push(buy(&t, &s, &c.c_session).await);
    }
    step(&t, &s).await;
    for order in &orders {
        deliver(&t, &s, order).await;
    }
    t.clock.advance(chrono::Duration::days(HOLD_DAYS) + chrono::Duration::minutes(1));
    step(&t, &s).await;
    let b = account(&t, &s, c.b).await;
    assert_eq!(fig(&b, "withdrawable"), 2_000, "{b}");

    // Bad input: 4xx, nothing changed.
    for bad in [json!(0), json!(-5), json!("100"), json!(1.5), json!(null), json!(100_000_001)] {
        let (status, reply) = withdraw(&t, &c.b_session, bad.clone()).await;
        assert!(status.is_client_error(), "{bad}: {status} {reply}");
    }
    let (status, _) = send(
        &t,
        Method::POST,
        &c.b_session,
        "/m/api/v1/distribution/withdrawals",
        Some(json!({"amount_fen": 500, "extra": 1})),
    )
    .await;
    assert!(status.is_client_error());
    let (status, reply) = withdraw(&t, &c.b_session, json!(99)).await;
    assert_eq!((status, reply["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("below_withdrawal_minimum")));
    let (status, reply) = withdraw(&t, &c.b_session, json!(2_001)).await;
    assert_eq!((status, reply["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("insufficient_commission")));
    let res = t
        .http
        .post(t.url("/m/api/v1/distribution/withdrawals"))
        .bearer_auth(&c.b_session)
        .json(&json!({"amount_fen": 500}))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_client_error(), "no Idempotency-Key: {}", res.status());
    for bad in [
        json!({"hold_days": 366, "withdrawal_min_fen": 1, "withdrawal_fee_bps": 0}),
        json!({"hold_days": 1, "withdrawal_min_fen": 0, "withdrawal_fee_bps": 0}),
        json!({"hold_days": 1, "withdrawal_min_fen": 1, "withdrawal_fee_bps": 5_001}),
        json!({"hold_days": 1, "withdrawal_min_fen": 1}),
    ] {
        let (status, _) =
            send(&t, Method::PUT, &s.owner, "/admin/api/v1/distribution/commission-settings", Some(bad.clone())).await;
        assert!(status.is_client_error(), "{bad}");
    }
    let (_, settings) = send(&t, Method::GET, &s.owner, "/admin/api/v1/distribution/commission-settings", None).await;
    assert_eq!(settings["hold_days"], HOLD_DAYS, "{settings}");
    let unknown = format!("/admin/api/v1/commission-withdrawals/{}/approve", uuid::Uuid::new_v4());
    let (status, _) = send(&t, Method::POST, &s.owner, &unknown, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = send(&t, Method::POST, &s.owner, "/admin/api/v1/commission-withdrawals/nope/approve", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(account(&t, &s, c.b).await["account"], b["account"]);

    // A rejected withdrawal returns to the balance; an empty reason is refused.
    let (status, w) = withdraw(&t, &c.b_session, json!(300)).await;
    assert_eq!(status, StatusCode::CREATED, "{w}");
    let reject = format!("/admin/api/v1/commission-withdrawals/{}/reject", w["withdrawal_id"].as_str().unwrap());
    let (status, _) = send(&t, Method::POST, &s.owner, &reject, Some(json!({"reason": " "}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(fig(&account(&t, &s, c.b).await, "withdrawable"), 1_700);
    let (status, r) = send(&t, Method::POST, &s.owner, &reject, Some(json!({"reason": "bank details"}))).await;
    assert_eq!((status, r["state"].as_str()), (StatusCode::OK, Some("rejected")), "{r}");
    // Only a failed payout is retried or returned.
    for action in ["retry", "return"] {
        let path = reject.replace("/reject", &format!("/{action}"));
        let (status, reply) = send(&t, Method::POST, &s.owner, &path, None).await;
        assert_eq!((status, reply["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("wrong_withdrawal_state")));
    }
    assert_eq!(fig(&account(&t, &s, c.b).await, "withdrawable"), 2_000);

    // The same request key replays the same withdrawal; another body with it is refused.
    let (status, w1) = send_keyed(
        &t,
        Method::POST,
        &c.b_session,
        "/m/api/v1/distribution/withdrawals",
        Some(json!({"amount_fen": 200})),
        "same-key-123",
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{w1}");
    let (status, w2) = send_keyed(
        &t,
        Method::POST,
        &c.b_session,
        "/m/api/v1/distribution/withdrawals",
        Some(json!({"amount_fen": 200})),
        "same-key-123",
    )
    .await;
    assert_eq!((status, &w2["withdrawal_id"]), (StatusCode::CREATED, &w1["withdrawal_id"]));
    let (status, _) = send_keyed(
        &t,
        Method::POST,
        &c.b_session,
        "/m/api/v1/distribution/withdrawals",
        Some(json!({"amount_fen": 201})),
        "same-key-123",
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let reject = format!("/admin/api/v1/commission-withdrawals/{}/reject", w1["withdrawal_id"].as_str().unwrap());
    let (status, _) = send(&t, Method::POST, &s.owner, &reject, Some(json!({"reason": "again"}))).await;
    assert_eq!(status, StatusCode::OK);

    // Another tenant sees none of it.
    let other = shop(&t, "comm-other").await;
    let (status, _) =
        send(&t, Method::GET, &other.owner, &format!("/admin/api/v1/distributors/{}/commissions", c.b), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let approve_other =
        format!("/admin/api/v1/commission-withdrawals/{}/approve", w1["withdrawal_id"].as_str().unwrap());
    let (status, _) = send(&t, Method::POST, &other.owner, &approve_other, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, list) = send(&t, Method::GET, &other.owner, "/admin/api/v1/commission-withdrawals", None).await;
    assert_eq!(list["withdrawals"], json!([]), "{list}");

    // 20 concurrent withdrawals of the whole balance: exactly one accepted.
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (http, url, session) = (t.http.clone(), t.url("/m/api/v1/distribution/withdrawals"), c.b_session.clone());
        tasks.push(tokio::spawn(async move {
            let res = http
                .post(url)
                .bearer_auth(session)
                .header("Idempotency-Key", format!("race-{}", uuid::Uuid::new_v4()))
                .json(&json!({"amount_fen": 2_000}))
                .send()
                .await
                .unwrap();
            res.status()
        }));
    }
    let mut accepted = 0;
    for task in tasks {
        let status = task.await.unwrap();
        assert!(
            status == StatusCode::CREATED
                || status == StatusCode::CONFLICT
                || status == StatusCode::SERVICE_UNAVAILABLE,
            "{status}"
        );
        accepted += usize::from(status == StatusCode::CREATED);
    }
    assert_eq!(accepted, 1);
    let b = account(&t, &s, c.b).await;
    assert_eq!((fig(&b, "withdrawing"), fig(&b, "withdrawable")), (2_000, 0), "{b}");
    assert_accounted(&b);
    let (_, mine) = send(&t, Method::GET, &c.b_session, "/m/api/v1/distribution/withdrawals", None).await;
    let requested = mine["withdrawals"].as_array().unwrap().iter().filter(|w| w["state"] == "requested").count();
    assert_eq!(requested, 1, "{mine}");
    let (_, queue) =
        send(&t, Method::GET, &s.owner, "/admin/api/v1/commission-withdrawals?state=requested", None).await;
    let pending = queue["withdrawals"][0]["withdrawal_id"].as_str().unwrap().to_owned();
    let reject = format!("/admin/api/v1/commission-withdrawals/{pending}/reject");
    let (status, _) = send(&t, Method::POST, &s.owner, &reject, Some(json!({"reason": "race over"}))).await;
    assert_eq!(status, StatusCode::OK);

    // A withdrawal racing a reversal: never more paid than earned.
    let refund_order = orders[0].clone();
    let (t_ref, s_ref) = (&t, &s);
    let (withdrawn, ()) = tokio::join!(withdraw(&t, &c.b_session, json!(2_000)), async move {
        refund(t_ref, s_ref, &refund_order).await;
        step(t_ref, s_ref).await;
    });
    step(&t, &s).await;
    let b = account(&t, &s, c.b).await;
    assert_accounted(&b);
    assert_eq!(fig(&b, "clawed_back"), 1_000, "{b}");
    if withdrawn.0 == StatusCode::CREATED {
        // Taken before the claw-back: the shortfall is recorded debt, never lost.
        assert_eq!((fig(&b, "withdrawing"), fig(&b, "debt"), fig(&b, "withdrawable")), (2_000, 1_000, 0), "{b}");
        let id = withdrawn.1["withdrawal_id"].as_str().unwrap();
        let approve = format!("/admin/api/v1/commission-withdrawals/{id}/approve");
        let (status, paid) = send(&t, Method::POST, &s.owner, &approve, None).await;
        assert_eq!(status, StatusCode::OK, "{paid}");
        let b = account(&t, &s, c.b).await;
        assert_eq!((fig(&b, "paid_out"), fig(&b, "debt")), (2_000, 1_000), "{b}");
        assert_accounted(&b);
    } else {
        assert_eq!(withdrawn.0, StatusCode::CONFLICT, "{:?}", withdrawn.1);
        assert_eq!((fig(&b, "withdrawing"), fig(&b, "withdrawable"), fig(&b, "debt")), (0, 1_000, 0), "{b}");
    }
    t.stop().await;
}

// ---------------------------------------------------------------- WeChat Pay, duplicated notifications

const PAY_APPID: &str = "wx0123456789abcdef";
const MCH_ID: &str = "1900000109";
const API_V2_KEY: &str = "192006250b4c09247ec02edce69f6a2d";
const API_V3_KEY: &str = "0123456789abcdef0123456789abcdef";
const MERCHANT_SERIAL: &str = "3775B6A45ACD588826D15E583A95F5DD2A9F7FA6";
const MERCHANT_PRIVATE_PEM: &str = include_str!("../../gateways/testdata/other_private.pem");
const MERCHANT_PUBLIC_PEM: &str = include_str!("../../gateways/testdata/other_public.pem");

/// A tenant paying through the Pay simulator, set up as [`shop`] is; the
/// product costs 100 points and 1,500 fen (the points part never earns).
async fn pay_shop(tenant: &str) -> (TestApp, Shop, wxcm_tests::Simulator) {
    use wxcm_commands::pay_flows;
    use wxcm_commands::tenants::{AccountInput, PayInput};
    let simulator = wxcm_tests::Simulator::start().await;
    let sandbox_url = simulator.base_url.clone();
    let http = reqwest::Client::new();
    let res = http
        .post(format!("{sandbox_url}/sandbox/pay/merchants"))
        .json(&json!({
            "mch_id": MCH_ID, "appid": PAY_APPID, "api_v2_key": API_V2_KEY, "api_v3_key": API_V3_KEY,
            "merchant_public_key_pem": MERCHANT_PUBLIC_PEM,
        }))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    let platform: Value =
        http.get(format!("{sandbox_url}/sandbox/pay/platform")).send().await.unwrap().json().await.unwrap();
    let mut settings = wxcm_tests::fresh_settings(1).await;
    settings.wechat.pay_base_url = sandbox_url.clone();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    settings.http.listen = format!("127.0.0.1:{port}");
    settings.wechat.public_base_url = format!("http://127.0.0.1:{port}");
    let t = wxcm_tests::spawn_app_on(settings).await;
    let mut s = shop(&t, tenant).await;
    let admin = Actor::Admin { username: "t".into() };
    let key = members::system_key(&["test-account", tenant]).unwrap();
    let account = AccountInput {
        appid: PAY_APPID.into(),
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
    let ctx = CommandContext::new(s.tenant.clone(), key, "test".into());
    tenants::bind_account(&t.app, &s.tenant, account, admin, &ctx).await.unwrap();
    let (serial, pem) = (platform["serial"].as_str().unwrap(), platform["public_key_pem"].as_str().unwrap());
    pay_flows::put_platform_key(&t.app, &s.tenant, MCH_ID, serial, pem).await.unwrap();
    let product = json!({"name": "Mug", "price": {"kind": "points_and_fen", "points": 100, "amount_fen": 1_500},
        "stock": {"kind": "unlimited"}});
    let (status, body) = send(&t, Method::POST, &s.owner, "/admin/api/v1/mall/products", Some(product)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    s.product = body["product_id"].as_str().unwrap().to_owned();
    s.appid = PAY_APPID;
    (t, s, simulator)
}

#[tokio::test]
async fn duplicated_pay_notifications_accrue_each_level_once_on_the_cash_part() {
    let (t, s, simulator) = pay_shop("comm-pay").await;
    let c = chain(&t, &s, "payx").await;
    // The buyer needs points for the points part.
    let buyer = {
        let (status, me) = send(&t, Method::GET, &c.c_session, "/m/api/v1/me", None).await;
        assert_eq!(status, StatusCode::OK, "{me}");
        me["member_id"].as_str().unwrap().to_owned()
    };
    let grant = json!({"points": 1_000, "expiry": {"kind": "never"}, "reason": "test"});
    let (status, body) =
        send(&t, Method::POST, &s.owner, &format!("/admin/api/v1/members/{buyer}/points/grants"), Some(grant)).await;
    assert!(status.is_success(), "{body}");
    let body = json!({"product_id": s.product, "quantity": 1, "pay_with": "wechat_pay"});
    let (status, order) = send(&t, Method::POST, &c.c_session, "/m/api/v1/mall/orders", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    let order_id = order["order_id"].as_str().unwrap().to_owned();
    let path = format!("/m/api/v1/mall/orders/{order_id}/wechat-pay");
    let (status, started) = send(&t, Method::POST, &c.c_session, &path, Some(json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{started}");
    let trade_no = started["payment"]["order_id"].as_str().unwrap().to_owned();

    // 10 concurrent copies of Pay's notification, then 3 more later.
    for copies in [10, 3] {
        let res = t
            .http
            .post(format!("{}/sandbox/pay/orders/{trade_no}/pay", simulator.base_url))
            .json(&json!({"copies": copies, "concurrent": true}))
            .send()
            .await
            .unwrap();
        if copies == 10 {
            assert!(res.status().is_success(), "sandbox pay: {}", res.status());
        }
        step(&t, &s).await;
    }
    let b = account(&t, &s, c.b).await;
    let a = account(&t, &s, c.a).await;
    // 10% and 5% of the 1,500 fen cash part; the 100 points earn nothing.
    assert_eq!((fig(&b, "earned"), fig(&b, "pending")), (150, 150), "{b}");
    assert_eq!((fig(&a, "earned"), fig(&a, "pending")), (75, 75), "{a}");
    assert_eq!(b["commissions"].as_array().unwrap().len(), 1, "{b}");
    assert_eq!(b["commissions"][0]["commission"]["basis_fen"], 1_500, "{b}");
    let (status, mine) = send(&t, Method::GET, &c.b_session, "/m/api/v1/distribution/commissions", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(mine["commissions"].as_array().unwrap().len(), 1, "{mine}");
    t.stop().await;
    simulator.stop().await;
}
