//! Commission rules end to end (issue 15, item 3), against the real Postgres,
//! NATS and the HTTP API, two shards: an admin's price change before payment
//! changes the commission (the basis is the cash finally paid), after payment
//! it is refused 409 and nothing is stored; the read model and `audit
//! reconcile` follow the new price; a product's fixed amount counts every
//! unit (× 3); a distributor level's rates are used at the position the
//! distributor earns, over the tenant's defaults; bad bodies → 4xx with
//! nothing stored; another tenant's order or distributor → 404; roles.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use wxcm_commands::{members, CommandContext};
use wxcm_domain::mall::MallOrderId;
use wxcm_tests::distribution::{chain, member, send, send_keyed, shop_with, step, Shop, PRICE_FEN};
use wxcm_tests::TestApp;

/// The shared shop with commission settings holding `levels` (no withdrawal fee).
async fn shop(t: &TestApp, tenant: &str, levels: Value) -> Shop {
    let commission = json!({"hold_days": 3, "withdrawal_min_fen": 100, "withdrawal_fee_bps": 0,
        "distributor_levels": levels});
    shop_with(t, tenant, commission).await
}

async fn product(t: &TestApp, owner: &str, fen: i64) -> String {
    let product =
        json!({"name": "Tea set", "price": {"kind": "fen", "amount_fen": fen}, "stock": {"kind": "unlimited"}});
    let (status, body) = send(t, Method::POST, owner, "/admin/api/v1/mall/products", Some(product)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["product_id"].as_str().unwrap().to_owned()
}

async fn place(t: &TestApp, session: &str, product: &str, quantity: u32) -> String {
    let body = json!({"product_id": product, "quantity": quantity, "pay_with": "balance"});
    let (status, order) = send(t, Method::POST, session, "/m/api/v1/mall/orders", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    order["order_id"].as_str().unwrap().to_owned()
}

async fn pay(t: &TestApp, session: &str, order: &str) -> (StatusCode, Value) {
    send(t, Method::POST, session, &format!("/m/api/v1/mall/orders/{order}/payment"), Some(json!({}))).await
}

/// The order's commissions as the admin sees them: `(level, distributor, basis, rule, amount, state)`.
async fn split(t: &TestApp, s: &Shop, order: &str) -> Vec<(i64, String, i64, Value, i64, String)> {
    let (status, body) =
        send(t, Method::GET, &s.auditor, &format!("/admin/api/v1/mall/orders/{order}/commissions"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["split"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["level"].as_i64().unwrap(),
                c["distributor_id"].as_str().unwrap().to_owned(),
                c["basis_fen"].as_i64().unwrap(),
                c["rule"].clone(),
                c["amount_fen"].as_i64().unwrap(),
                c["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn order(t: &TestApp, s: &Shop, order: &str) -> Value {
    let (status, body) = send(t, Method::GET, &s.owner, &format!("/admin/api/v1/mall/orders/{order}"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// The order stream's version (events stored).
async fn version(t: &TestApp, s: &Shop, order: &str) -> u64 {
    let shard = t.app.router.route(&s.tenant).unwrap();
    let (state, _) = shard.mall_orders.load(&s.tenant, order).await.unwrap();
    state.version
}

fn rate(bps: i64) -> Value {
    json!({"kind": "rate", "bps": bps})
}

#[tokio::test]
async fn a_price_change_before_payment_changes_the_commission_and_after_payment_is_refused() {
    let t = wxcm_tests::spawn_app_with_projections().await;
    let s = shop(&t, "rules-price", json!([])).await;
    let other = shop(&t, "rules-price-other", json!([])).await;
    let c = chain(&t, &s, "price").await;
    let id = place(&t, &c.c_session, &s.product, 1).await;
    let path = format!("/admin/api/v1/mall/orders/{id}/price");
    let before = version(&t, &s, &id).await;

    // Bad bodies: 4xx, nothing stored.
    for bad in [
        json!({"cash_due_fen": 0, "reason": "x"}),
        json!({"cash_due_fen": -5, "reason": "x"}),
        json!({"cash_due_fen": 100_000_001, "reason": "x"}),
        json!({"cash_due_fen": "8000", "reason": "x"}),
        json!({"cash_due_fen": 8_000}),
        json!({"cash_due_fen": 8_000, "reason": ""}),
        json!({"cash_due_fen": 8_000, "reason": "x", "extra": 1}),
        json!([8_000]),
    ] {
        let (status, body) = send(&t, Method::POST, &s.owner, &path, Some(bad.clone())).await;
        assert!(status.is_client_error(), "{bad} → {status} {body}");
    }
    // Above the list price: a conflict with the order.
    let (status, body) =
        send(&t, Method::POST, &s.owner, &path, Some(json!({"cash_due_fen": 10_001, "reason": "x"}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("price_above_list")), "{body}");
    // Staff and auditors may not; another tenant's admin does not find the order.
    let change = json!({"cash_due_fen": 8_000, "reason": "loyal customer"});
    for token in [&s.staff, &s.auditor] {
        let (status, _) = send(&t, Method::POST, token, &path, Some(change.clone())).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
    let (status, body) = send(&t, Method::POST, &other.owner, &path, Some(change.clone())).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("order_not_found")), "{body}");
    let (status, _) =
        send(&t, Method::GET, &other.owner, &format!("/admin/api/v1/mall/orders/{id}/commissions"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(version(&t, &s, &id).await, before, "nothing stored");
    assert_eq!(order(&t, &s, &id).await["cash_due_fen"], PRICE_FEN);

    // The owner lowers it to 8,000 fen; the same key again replays, another body with it is refused.
    let key = format!("price-{}", uuid::Uuid::new_v4());
    let (status, changed) = send_keyed(&t, Method::POST, &s.owner, &path, Some(change.clone()), &key).await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["cash_due_fen"], 8_000, "{changed}");
    assert_eq!(changed["price_change"]["old_cash_due_fen"], PRICE_FEN, "{changed}");
    assert_eq!(changed["price_change"]["reason"], "loyal customer", "{changed}");
    let (status, again) = send_keyed(&t, Method::POST, &s.owner, &path, Some(change.clone()), &key).await;
    assert_eq!((status, again["cash_due_fen"].clone()), (StatusCode::OK, json!(8_000)));
    let other_body = json!({"cash_due_fen": 7_000, "reason": "loyal customer"});
    let (status, _) = send_keyed(&t, Method::POST, &s.owner, &path, Some(other_body), &key).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(version(&t, &s, &id).await, before + 1, "one price change stored");
    let (status, mine) = send(&t, Method::GET, &c.c_session, &format!("/m/api/v1/mall/orders/{id}"), None).await;
    assert_eq!((status, mine["cash_due_fen"].clone()), (StatusCode::OK, json!(8_000)), "{mine}");

    // The member pays the new price; commissions are on the cash paid: 10% and 5% of 8,000.
    let (status, paid) = pay(&t, &c.c_session, &id).await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    assert_eq!(paid["cash_paid"]["amount_fen"], 8_000, "{paid}");
    step(&t, &s).await;
    let (a, b) = (c.a.to_string(), c.b.to_string());
    assert_eq!(
        split(&t, &s, &id).await,
        vec![
            (1, b.clone(), 8_000, rate(1_000), 800, "pending".into()),
            (2, a.clone(), 8_000, rate(500), 400, "pending".into())
        ]
    );

    // After payment: refused 409, nothing stored, the commission unchanged.
    let paid_version = version(&t, &s, &id).await;
    let (status, body) =
        send(&t, Method::POST, &s.owner, &path, Some(json!({"cash_due_fen": 5_000, "reason": "x"}))).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("order_paid_price_fixed")),
        "{body}"
    );
    assert_eq!(version(&t, &s, &id).await, paid_version, "nothing stored");
    step(&t, &s).await;
    assert_eq!(split(&t, &s, &id).await[0].4, 800);
    assert_eq!(order(&t, &s, &id).await["cash_due_fen"], 8_000);

    // A payment that started fixes the price: the balance cannot pay a second order, which
    // leaves its price open; once the member can pay, the attempt fixes it.
    let (_, poor_session) = member(&t, &s, "oP_price_000001", 0).await;
    let second = place(&t, &poor_session, &s.product, 1).await;
    let (status, body) = pay(&t, &poor_session, &second).await;
    assert!(status.is_client_error(), "{status} {body}");
    let second_path = format!("/admin/api/v1/mall/orders/{second}/price");
    let (status, body) = send(&t, Method::POST, &s.owner, &second_path, Some(change.clone())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let shard = t.app.router.route(&s.tenant).unwrap();
    let started = wxcm_domain::mall::MallOrderCommand::StartPayment;
    let ctx = CommandContext::new(s.tenant.clone(), members::system_key(&["test-start", &second]).unwrap(), "t".into());
    shard.mall_orders.execute(&second, started, &json!({"start": &second}), &ctx).await.unwrap();
    let (status, body) =
        send(&t, Method::POST, &s.owner, &second_path, Some(json!({"cash_due_fen": 5_000, "reason": "x"}))).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("payment_started_price_fixed")),
        "{body}"
    );
    assert_eq!(order(&t, &s, &second).await["cash_due_fen"], 8_000);

    // The read model follows the new price and reconciles; the streams replay.
    t.catch_up().await;
    let mut db = t.shard_db(&shard.name).await;
    let due: i64 = sqlx::query_scalar("SELECT cash_due_fen FROM rm_mall_orders WHERE tenant_id = $1 AND order_id = $2")
        .bind(s.tenant.as_str())
        .bind(&id)
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(due, 8_000);
    let report = wxcm_ops::reconcile::reconcile(&t.settings, &s.tenant).await.unwrap();
    assert!(report.is_clean(), "{report:#?}");
    assert!(wxcm_ops::audit::audit_verify(&t.settings, &s.tenant, true).await.unwrap());
    let _ = MallOrderId::parse(&id).unwrap();
    t.stop().await;
}

#[tokio::test]
async fn a_products_fixed_amount_counts_every_unit_and_a_distributor_levels_rates_win_over_the_defaults() {
    let t = wxcm_tests::spawn_app().await;
    let levels = json!([{"code": "gold", "name": "金牌", "first_bps": 2000, "second_bps": 800}]);
    let s = shop(&t, "rules-levels", levels).await;
    let other = shop(&t, "rules-levels-other", json!([])).await;
    let c = chain(&t, &s, "lvl").await;
    let (a, b) = (c.a.to_string(), c.b.to_string());

    // A product of 1,000 fen paying 100 fen per unit at level 1 and 30 at level 2.
    let cheap = product(&t, &s.owner, 1_000).await;
    let commission_path = format!("/admin/api/v1/mall/products/{cheap}/commission");
    let fixed = json!({"commission": {"kind": "fixed_per_unit", "first_fen": 100, "second_fen": 30}});
    for bad in [
        json!({"commission": {"kind": "rates", "first_bps": 9000, "second_bps": 1001}}),
        json!({"commission": {"kind": "rates", "first_bps": 10001, "second_bps": 0}}),
        json!({"commission": {"kind": "fixed_per_unit", "first_fen": 0}}),
        json!({"commission": {"kind": "fixed_per_unit", "first_fen": -1, "second_fen": null}}),
        json!({"commission": {"kind": "bonus"}}),
        json!({"commission": {"kind": "excluded"}, "x": 1}),
        json!({"commission": "excluded"}),
        json!({"commission": {"kind": "excluded", "x": 1}}),
    ] {
        let (status, body) = send(&t, Method::PUT, &s.owner, &commission_path, Some(bad.clone())).await;
        assert!(status.is_client_error(), "{bad} → {status} {body}");
    }
    let above = json!({"commission": {"kind": "fixed_per_unit", "first_fen": 900, "second_fen": 101}});
    let (status, body) = send(&t, Method::PUT, &s.owner, &commission_path, Some(above)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("commission_above_unit_price")));
    let (status, _) = send(&t, Method::GET, &s.owner, &format!("/admin/api/v1/mall/products/{cheap}"), None).await;
    assert_eq!(status, StatusCode::OK);
    let (_, p) = send(&t, Method::GET, &s.owner, &format!("/admin/api/v1/mall/products/{cheap}"), None).await;
    assert_eq!(p["commission"], Value::Null, "nothing stored: {p}");
    let (status, _) = send(&t, Method::PUT, &s.staff, &commission_path, Some(fixed.clone())).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = send(&t, Method::PUT, &other.owner, &commission_path, Some(fixed.clone())).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, p) = send(&t, Method::PUT, &s.owner, &commission_path, Some(fixed)).await;
    assert_eq!(status, StatusCode::OK, "{p}");
    assert_eq!(p["commission"], json!({"kind": "fixed_per_unit", "first_fen": 100, "second_fen": 30}));

    // Three units: 3 × 100 and 3 × 30, not once per order.
    let three = place(&t, &c.c_session, &cheap, 3).await;
    assert_eq!(pay(&t, &c.c_session, &three).await.0, StatusCode::OK);
    step(&t, &s).await;
    let fixed_rule = |fen: i64| json!({"kind": "fixed_per_unit", "fen": fen});
    assert_eq!(
        split(&t, &s, &three).await,
        vec![
            (1, b.clone(), 3_000, fixed_rule(100), 300, "pending".into()),
            (2, a.clone(), 3_000, fixed_rule(30), 90, "pending".into())
        ]
    );

    // Levels: bad bodies and unknown codes refused, nothing stored.
    let level_path = format!("/admin/api/v1/distributors/{}/level", c.b);
    for bad in [json!({"level": "Gold!"}), json!({"level": ""}), json!({"level": 3}), json!({"lvl": "gold"})] {
        let (status, body) = send(&t, Method::PUT, &s.owner, &level_path, Some(bad.clone())).await;
        assert!(status.is_client_error(), "{bad} → {status} {body}");
    }
    let (status, body) = send(&t, Method::PUT, &s.owner, &level_path, Some(json!({"level": "silver"}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("unknown_distributor_level")));
    let (status, _) = send(&t, Method::PUT, &s.auditor, &level_path, Some(json!({"level": "gold"}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = send(&t, Method::PUT, &other.owner, &level_path, Some(json!({"level": null}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, d) = send(&t, Method::GET, &s.owner, &format!("/admin/api/v1/distributors/{}", c.b), None).await;
    assert_eq!(d["level"], Value::Null, "{d}");
    // The commission settings refuse a level catalog that breaks its rules; the old one stays.
    for bad in [
        json!([{"code": "gold", "name": "a", "first_bps": 1, "second_bps": 1},
               {"code": "gold", "name": "b", "first_bps": 1, "second_bps": 1}]),
        json!([{"code": "gold", "name": "a", "first_bps": 9000, "second_bps": 1001}]),
        json!([{"code": "Gold", "name": "a", "first_bps": 1, "second_bps": 1}]),
        json!([{"code": "gold", "name": "", "first_bps": 1, "second_bps": 1}]),
    ] {
        let body =
            json!({"hold_days": 3, "withdrawal_min_fen": 100, "withdrawal_fee_bps": 0, "distributor_levels": bad});
        let (status, reply) =
            send(&t, Method::PUT, &s.owner, "/admin/api/v1/distribution/commission-settings", Some(body)).await;
        assert!(status.is_client_error(), "{status} {reply}");
    }
    let (_, settings) = send(&t, Method::GET, &s.auditor, "/admin/api/v1/distribution/commission-settings", None).await;
    assert_eq!(settings["distributor_levels"][0]["first_bps"], 2000, "{settings}");

    // B gold: level 1 earns gold's 20% on the default product; A (no level) the default 5%.
    let (status, d) = send(&t, Method::PUT, &s.owner, &level_path, Some(json!({"level": "gold"}))).await;
    assert_eq!((status, d["level"].as_str()), (StatusCode::OK, Some("gold")), "{d}");
    let first = place(&t, &c.c_session, &s.product, 1).await;
    assert_eq!(pay(&t, &c.c_session, &first).await.0, StatusCode::OK);
    step(&t, &s).await;
    assert_eq!(
        split(&t, &s, &first).await,
        vec![
            (1, b.clone(), PRICE_FEN, rate(2_000), 2_000, "pending".into()),
            (2, a.clone(), PRICE_FEN, rate(500), 500, "pending".into())
        ]
    );
    // A gold too: level 2 earns gold's level-2 rate (8%). The product's own terms still win.
    let (status, _) = send(
        &t,
        Method::PUT,
        &s.owner,
        &format!("/admin/api/v1/distributors/{}/level", c.a),
        Some(json!({"level": "gold"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let second = place(&t, &c.c_session, &s.product, 1).await;
    assert_eq!(pay(&t, &c.c_session, &second).await.0, StatusCode::OK);
    let fixed_again = place(&t, &c.c_session, &cheap, 2).await;
    assert_eq!(pay(&t, &c.c_session, &fixed_again).await.0, StatusCode::OK);
    step(&t, &s).await;
    let amounts = |rows: Vec<(i64, String, i64, Value, i64, String)>| rows.iter().map(|r| r.4).collect::<Vec<_>>();
    assert_eq!(amounts(split(&t, &s, &second).await), vec![2_000, 800]);
    assert_eq!(amounts(split(&t, &s, &fixed_again).await), vec![200, 60]);
    // Cleared: the defaults again.
    let (status, d) = send(&t, Method::PUT, &s.owner, &level_path, Some(json!({"level": null}))).await;
    assert_eq!((status, d["level"].clone()), (StatusCode::OK, Value::Null));
    let third = place(&t, &c.c_session, &s.product, 1).await;
    assert_eq!(pay(&t, &c.c_session, &third).await.0, StatusCode::OK);
    step(&t, &s).await;
    assert_eq!(amounts(split(&t, &s, &third).await), vec![1_000, 800]);

    // The order's split is read by distribution readers only, in their own tenant.
    let (status, _) =
        send(&t, Method::GET, &s.staff, &format!("/admin/api/v1/mall/orders/{first}/commissions"), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) =
        send(&t, Method::GET, &other.auditor, &format!("/admin/api/v1/mall/orders/{first}/commissions"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = send(&t, Method::GET, &s.owner, "/admin/api/v1/mall/orders/not-an-id/commissions", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    t.stop().await;
}
