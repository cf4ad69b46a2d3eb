//! The points mall end to end through the HTTP API, against the real
//! Postgres, two shards: orders paid by points and by balance, exact stock and
//! the per-member limit under concurrent orders, expiry releasing points and
//! stock once, a payment arriving after expiry refunded, delivery once,
//! refunds, and bad input that changes nothing.

use futures::stream::{self, StreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};
use wxcm_commands::ledger_requests::{self, LedgerRequest};
use wxcm_commands::pay_flows::MemberSession;
use wxcm_commands::ports::Role;
use wxcm_commands::{auth, mall, members, scheduler, tenants, CommandContext};
use wxcm_domain::mall::MallOrderId;
use wxcm_domain::member::{CardLevel, ExpiryPolicy, MemberCommand, Provenance, RegistrationSource};
use wxcm_domain::{Actor, AmountFen, AppId, MemberId, OpenId, PointsAmount, Reference, TenantId};
use wxcm_tests::{spawn_app, TestApp};

const PASSWORD: &str = "a-long-enough-password";

struct Merchant {
    tenant: TenantId,
    owner: String,
    staff: String,
}

async fn merchant(t: &TestApp, tenant: &str) -> Merchant {
    let tenant_id = TenantId::parse(tenant).unwrap();
    let key = members::system_key(&["test-tenant", tenant]).unwrap();
    let ctx = CommandContext::new(tenant_id.clone(), key, "test".into());
    tenants::create(&t.app, &tenant_id, "Test Mall", Actor::Admin { username: "test".into() }, &ctx).await.unwrap();
    auth::create_admin(&t.app, &tenant_id, "owner", PASSWORD, Role::Owner).await.unwrap();
    auth::create_admin(&t.app, &tenant_id, "clerk", PASSWORD, Role::Staff).await.unwrap();
    Merchant { owner: login(t, tenant, "owner").await, staff: login(t, tenant, "clerk").await, tenant: tenant_id }
}

async fn login(t: &TestApp, tenant: &str, username: &str) -> String {
    let body = json!({"tenant_id": tenant, "username": username, "password": PASSWORD});
    let res = t.http.post(t.url("/admin/api/v1/login")).json(&body).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    res.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned()
}

fn key() -> String {
    format!("test-{}", uuid::Uuid::new_v4())
}

async fn send(req: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let res = req.send().await.unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn post(t: &TestApp, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
    send(t.http.post(t.url(path)).bearer_auth(token).header("Idempotency-Key", key()).json(&body)).await
}

async fn put(t: &TestApp, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
    send(t.http.put(t.url(path)).bearer_auth(token).header("Idempotency-Key", key()).json(&body)).await
}

async fn get(t: &TestApp, token: &str, path: &str) -> (StatusCode, Value) {
    send(t.http.get(t.url(path)).bearer_auth(token)).await
}

/// A registered member with `points` (never expiring), `balance_fen` and a member-API session.
async fn member(t: &TestApp, m: &Merchant, n: usize, points: i64, balance_fen: i64) -> (MemberId, String) {
    let openid = OpenId::parse(&format!("oMall_{n:08}")).unwrap();
    let request = members::RegisterRequest {
        openid: Some(openid.clone()),
        source: RegistrationSource::Staff,
        card_level: CardLevel::standard(),
    };
    let admin = Actor::Admin { username: "t".into() };
    let ctx = |what: &str| {
        let key = members::system_key(&["test-member", m.tenant.as_str(), &n.to_string(), what]).unwrap();
        CommandContext::new(m.tenant.clone(), key, "test".into())
    };
    let (view, _) = members::register(&t.app, &m.tenant, request, admin.clone(), &ctx("register")).await.unwrap();
    let reason = Reference::parse("test").unwrap();
    if points > 0 {
        let grant = LedgerRequest::PointsGrant {
            points: PointsAmount::new(points).unwrap(),
            expiry: ExpiryPolicy::Never,
            reason: reason.clone(),
            reference: None,
        };
        ledger_requests::execute(&t.app, &m.tenant, view.member_id, grant, admin.clone(), &ctx("points"))
            .await
            .unwrap();
    }
    if balance_fen > 0 {
        let deposit =
            LedgerRequest::CashDeposit { amount_fen: AmountFen::new(balance_fen).unwrap(), reason, reference: None };
        ledger_requests::execute(&t.app, &m.tenant, view.member_id, deposit, admin, &ctx("cash")).await.unwrap();
    }
    let token = format!("{}.{}", m.tenant, uuid::Uuid::new_v4().simple());
    let session = MemberSession {
        tenant_id: m.tenant.clone(),
        member_id: view.member_id,
        appid: AppId::parse("wx00000000000c0ffe").unwrap(),
        openid,
        expires_at: t.app.clock.now() + chrono::Duration::days(2),
    };
    let shard = t.app.router.route(&m.tenant).unwrap();
    shard.pay.create_member_session(&auth::token_hash(&token), &session).await.unwrap();
    (view.member_id, token)
}

async fn product(t: &TestApp, m: &Merchant, price: Value, stock: Value, limit: Option<i64>) -> String {
    let body = json!({"name": "Mug", "description": "A mug", "images": ["https://img.example/mug.png"],
        "price": price, "stock": stock, "per_member_limit": limit});
    let (status, body) = post(t, &m.owner, "/admin/api/v1/mall/products", body).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["product_id"].as_str().unwrap().to_owned()
}

async fn place(t: &TestApp, session: &str, body: Value) -> (StatusCode, Value) {
    post(t, session, "/m/api/v1/mall/orders", body).await
}

async fn pay(t: &TestApp, session: &str, order_id: &str) -> (StatusCode, Value) {
    post(t, session, &format!("/m/api/v1/mall/orders/{order_id}/payment"), json!({})).await
}

async fn member_view(t: &TestApp, m: &Merchant, member_id: MemberId) -> members::MemberView {
    members::get(&t.app, &m.tenant, member_id).await.unwrap()
}

async fn product_view(t: &TestApp, m: &Merchant, product_id: &str) -> Value {
    let (status, body) = get(t, &m.owner, &format!("/admin/api/v1/mall/products/{product_id}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn count(t: &TestApp, m: &Merchant, sql: &str) -> i64 {
    let shard = t.app.router.route(&m.tenant).unwrap().name.clone();
    let mut db = t.shard_db(&shard).await;
    sqlx::query_scalar(sql).fetch_one(&mut db).await.unwrap()
}

async fn step(t: &TestApp, m: &Merchant) -> scheduler::StepReport {
    let shard = t.app.router.route(&m.tenant).unwrap();
    scheduler::step(&t.app, &shard).await.unwrap()
}

#[tokio::test]
async fn an_order_paid_by_points_end_to_end_and_delivered_once() {
    let t = spawn_app().await;
    let m = merchant(&t, "mall-points").await;
    let product_id =
        product(&t, &m, json!({"kind": "points", "points": 100}), json!({"kind": "finite", "total": 10}), None).await;
    let (member_id, session) = member(&t, &m, 1, 500, 0).await;
    let (_, other) = member(&t, &m, 2, 500, 0).await;

    let (products_status, listed) = get(&t, &session, "/m/api/v1/mall/products").await;
    assert_eq!(products_status, StatusCode::OK);
    assert_eq!(listed["products"][0]["product_id"], product_id.as_str());

    let order_key = key();
    let body = json!({"product_id": product_id, "quantity": 2});
    let req =
        || t.http.post(t.url("/m/api/v1/mall/orders")).bearer_auth(&session).header("Idempotency-Key", &order_key);
    let (status, order) = send(req().json(&body)).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert_eq!(order["status"], "awaiting_payment");
    assert_eq!(order["points_total"], 200);
    // The same key and request is the same order.
    let (again, replayed) = send(req().json(&body)).await;
    assert_eq!((again, &replayed["order_id"]), (StatusCode::CREATED, &order["order_id"]));
    // The same key with another request is refused.
    let (reused, _) = send(req().json(&json!({"product_id": product_id, "quantity": 3}))).await;
    assert_eq!(reused, StatusCode::CONFLICT);

    let me = member_view(&t, &m, member_id).await;
    assert_eq!((me.points, me.held_points), (300, 200));
    assert_eq!(product_view(&t, &m, &product_id).await["reserved"], 2);

    // Another member neither sees nor pays it.
    let order_id = order["order_id"].as_str().unwrap().to_owned();
    assert_eq!(get(&t, &other, &format!("/m/api/v1/mall/orders/{order_id}")).await.0, StatusCode::NOT_FOUND);
    assert_eq!(pay(&t, &other, &order_id).await.0, StatusCode::NOT_FOUND);
    assert_eq!(get(&t, &other, "/m/api/v1/mall/orders").await.1["orders"], json!([]));

    let (status, paid) = pay(&t, &session, &order_id).await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    assert_eq!(paid["status"], "paid");
    let me = member_view(&t, &m, member_id).await;
    assert_eq!((me.points, me.held_points), (300, 0));
    let p = product_view(&t, &m, &product_id).await;
    assert_eq!((p["reserved"].as_u64(), p["sold"].as_u64(), p["available"].as_u64()), (Some(0), Some(2), Some(8)));
    // Paying again changes nothing.
    assert_eq!(pay(&t, &session, &order_id).await.1["status"], "paid");
    assert_eq!(member_view(&t, &m, member_id).await.points, 300);

    let (status, mine) = get(&t, &session, "/m/api/v1/mall/orders").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(mine["orders"].as_array().unwrap().len(), 1);

    // Staff deliver by the typed number; a second delivery is refused.
    let number = paid["order_no"].as_i64().unwrap().to_string();
    let (status, delivered) =
        post(&t, &m.staff, "/admin/api/v1/mall/deliveries", json!({"order": number, "store": "front desk"})).await;
    assert_eq!(status, StatusCode::OK, "{delivered}");
    assert_eq!(delivered["status"], "delivered");
    let (status, twice) = post(
        &t,
        &m.staff,
        "/admin/api/v1/mall/deliveries",
        json!({"order": paid["qr_payload"], "store": "front desk"}),
    )
    .await;
    assert_eq!((status, &twice["error"]["code"]), (StatusCode::CONFLICT, &json!("already_delivered")));
    // Another merchant's QR payload is refused as such.
    let foreign = format!("wxcm:order:someone-else:{order_id}");
    let (status, body) =
        post(&t, &m.staff, "/admin/api/v1/mall/deliveries", json!({"order": foreign, "store": "front desk"})).await;
    assert_eq!((status, &body["error"]["code"]), (StatusCode::CONFLICT, &json!("other_tenant_order")));
    // Staff may not create products nor refund.
    assert_eq!(
        post(&t, &m.staff, &format!("/admin/api/v1/mall/orders/{order_id}/refund"), json!({"reason": "x"})).await.0,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn twenty_concurrent_orders_on_a_stock_of_5_place_exactly_5() {
    let t = spawn_app().await;
    let m = merchant(&t, "mall-stock").await;
    let product_id =
        product(&t, &m, json!({"kind": "points", "points": 50}), json!({"kind": "finite", "total": 5}), None).await;
    let buyers: Vec<(MemberId, String)> =
        stream::iter(0..20).map(|n| member(&t, &m, n, 100, 0)).buffer_unordered(8).collect().await;

    let results: Vec<(StatusCode, Value)> = stream::iter(buyers.iter())
        .map(|(_, session)| place(&t, session, json!({"product_id": product_id, "quantity": 1})))
        .buffer_unordered(20)
        .collect()
        .await;
    let placed = results.iter().filter(|(s, _)| *s == StatusCode::CREATED).count();
    let sold_out =
        results.iter().filter(|(s, b)| *s == StatusCode::CONFLICT && b["error"]["code"] == "sold_out").count();
    assert_eq!((placed, sold_out), (5, 15), "{:?}", results.iter().find(|(s, _)| *s != StatusCode::CREATED));

    let p = product_view(&t, &m, &product_id).await;
    assert_eq!((p["reserved"].as_u64(), p["available"].as_u64()), (Some(5), Some(0)));
    let mut held = 0;
    for (member_id, _) in &buyers {
        let v = member_view(&t, &m, *member_id).await;
        assert_eq!(v.points + v.held_points, 100);
        held += v.held_points;
    }
    assert_eq!(held, 5 * 50);
    // Nothing was reserved and then left: one reservation per placed order.
    let reservations = count(&t, &m, "SELECT count(*) FROM events WHERE event_type = 'ProductStockReserved'").await;
    let released = count(&t, &m, "SELECT count(*) FROM events WHERE event_type = 'ProductReservationReleased'").await;
    assert_eq!(reservations - released, 5);
}

#[tokio::test]
async fn the_per_member_limit_holds_under_concurrent_orders() {
    let t = spawn_app().await;
    let m = merchant(&t, "mall-limit").await;
    let product_id =
        product(&t, &m, json!({"kind": "points", "points": 10}), json!({"kind": "unlimited"}), Some(2)).await;
    let (member_id, session) = member(&t, &m, 1, 1_000, 0).await;
    let results: Vec<(StatusCode, Value)> = stream::iter(0..10)
        .map(|_| place(&t, &session, json!({"product_id": product_id, "quantity": 1})))
        .buffer_unordered(10)
        .collect()
        .await;
    let placed = results.iter().filter(|(s, _)| *s == StatusCode::CREATED).count();
    let limited =
        results.iter().filter(|(s, b)| *s == StatusCode::CONFLICT && b["error"]["code"] == "limit_reached").count();
    assert_eq!((placed, limited), (2, 8), "{results:?}");
    let v = member_view(&t, &m, member_id).await;
    assert_eq!((v.points, v.held_points), (980, 20));
}

#[tokio::test]
async fn balance_payment_and_refund_give_everything_back() {
    let t = spawn_app().await;
    let m = merchant(&t, "mall-cash").await;
    let product_id = product(
        &t,
        &m,
        json!({"kind": "points_and_fen", "points": 30, "amount_fen": 250}),
        json!({"kind": "finite", "total": 3}),
        Some(5),
    )
    .await;
    let (member_id, session) = member(&t, &m, 1, 100, 1_000).await;

    // The cash part needs a way to pay.
    let (status, body) = place(&t, &session, json!({"product_id": product_id, "quantity": 2})).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::UNPROCESSABLE_ENTITY, &json!("payment_method_unsupported"))
    );
    let (status, order) =
        place(&t, &session, json!({"product_id": product_id, "quantity": 2, "pay_with": "balance"})).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert_eq!((order["points_total"].as_i64(), order["cash_due_fen"].as_i64()), (Some(60), Some(500)));
    let order_id = order["order_id"].as_str().unwrap().to_owned();

    // A price change does not touch the order placed.
    let (status, _) = put(
        &t,
        &m.owner,
        &format!("/admin/api/v1/mall/products/{product_id}/price"),
        json!({"price": {"kind": "fen", "amount_fen": 9_999}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    let (status, paid) = pay(&t, &session, &order_id).await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    assert_eq!(paid["cash_paid"], json!({"kind": "balance", "amount_fen": 500}));
    let v = member_view(&t, &m, member_id).await;
    assert_eq!((v.points, v.held_points, v.balance_fen), (40, 0, 500));

    let (status, refunded) =
        post(&t, &m.owner, &format!("/admin/api/v1/mall/orders/{order_id}/refund"), json!({"reason": "broken"})).await;
    assert_eq!(status, StatusCode::OK, "{refunded}");
    assert_eq!(refunded["status"], "refunded");
    let v = member_view(&t, &m, member_id).await;
    assert_eq!((v.points, v.held_points, v.balance_fen), (100, 0, 1_000));
    let p = product_view(&t, &m, &product_id).await;
    assert_eq!((p["reserved"].as_u64(), p["sold"].as_u64(), p["available"].as_u64()), (Some(0), Some(0), Some(3)));
    // Once: a second refund is refused, the due work changes nothing.
    let (status, body) =
        post(&t, &m.owner, &format!("/admin/api/v1/mall/orders/{order_id}/refund"), json!({"reason": "again"})).await;
    assert_eq!((status, &body["error"]["code"]), (StatusCode::CONFLICT, &json!("already_refunded")));
    step(&t, &m).await;
    let v = member_view(&t, &m, member_id).await;
    assert_eq!((v.points, v.balance_fen), (100, 1_000));

    // The admin list shows it.
    let (status, list) = get(&t, &m.owner, &format!("/admin/api/v1/mall/orders?member_id={member_id}")).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["orders"][0]["order_id"], order_id.as_str());
}

#[tokio::test]
async fn expiry_releases_points_and_stock_exactly_once() {
    let t = spawn_app().await;
    let m = merchant(&t, "mall-expiry").await;
    let product_id =
        product(&t, &m, json!({"kind": "points", "points": 40}), json!({"kind": "finite", "total": 1}), None).await;
    let (member_id, session) = member(&t, &m, 1, 100, 0).await;
    let (_, order) = place(&t, &session, json!({"product_id": product_id, "quantity": 1})).await;
    let order_id = order["order_id"].as_str().unwrap().to_owned();

    // Not due yet: nothing happens.
    step(&t, &m).await;
    assert_eq!(member_view(&t, &m, member_id).await.held_points, 40);

    t.clock.advance(chrono::Duration::minutes(mall::PAY_WINDOW_DEFAULT_MINUTES + 1));
    // Past the window a payment is refused even before the scheduler ran: the
    // order expires then and there.
    let (status, body) = pay(&t, &session, &order_id).await;
    assert_eq!((status, &body["error"]["code"]), (StatusCode::CONFLICT, &json!("order_ended")));
    assert_eq!(member_view(&t, &m, member_id).await.held_points, 0);
    step(&t, &m).await;
    step(&t, &m).await;
    let v = member_view(&t, &m, member_id).await;
    assert_eq!((v.points, v.held_points), (100, 0));
    let p = product_view(&t, &m, &product_id).await;
    assert_eq!((p["reserved"].as_u64(), p["available"].as_u64()), (Some(0), Some(1)));
    assert_eq!(get(&t, &session, &format!("/m/api/v1/mall/orders/{order_id}")).await.1["status"], "expired");
    let releases = count(&t, &m, "SELECT count(*) FROM events WHERE event_type = 'PointsHoldReleased'").await;
    let stock_releases =
        count(&t, &m, "SELECT count(*) FROM events WHERE event_type = 'ProductReservationReleased'").await;
    assert_eq!((releases, stock_releases), (1, 1));

    // Paying an expired order is refused, nothing moves; cancel too.
    let (status, body) = pay(&t, &session, &order_id).await;
    assert_eq!((status, &body["error"]["code"]), (StatusCode::CONFLICT, &json!("order_ended")));
    let (status, _) = post(&t, &session, &format!("/m/api/v1/mall/orders/{order_id}/cancel"), json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(member_view(&t, &m, member_id).await.points, 100);
}

#[tokio::test]
async fn a_balance_payment_arriving_after_expiry_is_refunded_not_honoured() {
    let t = spawn_app().await;
    let m = merchant(&t, "mall-late").await;
    let product_id =
        product(&t, &m, json!({"kind": "fen", "amount_fen": 300}), json!({"kind": "finite", "total": 1}), None).await;
    let (member_id, session) = member(&t, &m, 1, 0, 1_000).await;
    let (_, order) = place(&t, &session, json!({"product_id": product_id, "quantity": 1, "pay_with": "balance"})).await;
    let order_id = MallOrderId::parse(order["order_id"].as_str().unwrap()).unwrap();

    // The payer charged the balance, then died before recording it on the order.
    let charge_key = mall::orders::charge_key(order_id).unwrap();
    let command = MemberCommand::ChargeCash {
        amount_fen: AmountFen::new(300).unwrap(),
        provenance: Provenance {
            actor: Actor::Member { member_id },
            reason: Reference::parse("mall order").unwrap(),
            reference: None,
            idempotency_key: charge_key.clone(),
        },
    };
    let ctx = CommandContext::new(m.tenant.clone(), charge_key, "test".into());
    members::execute(&t.app, &m.tenant, member_id, command.clone(), &command, &ctx).await.unwrap();
    assert_eq!(member_view(&t, &m, member_id).await.balance_fen, 700);

    // The order expires first: the charge is recorded as late and refunded.
    t.clock.advance(chrono::Duration::minutes(mall::PAY_WINDOW_DEFAULT_MINUTES + 1));
    step(&t, &m).await;
    step(&t, &m).await;
    let (_, view) = get(&t, &session, &format!("/m/api/v1/mall/orders/{order_id}")).await;
    assert_eq!(view["status"], "refunded", "{view}");
    assert_eq!(view["late_payment"], json!({"kind": "balance", "amount_fen": 300}));
    assert_eq!(member_view(&t, &m, member_id).await.balance_fen, 1_000);
    let p = product_view(&t, &m, &product_id).await;
    assert_eq!((p["reserved"].as_u64(), p["sold"].as_u64(), p["available"].as_u64()), (Some(0), Some(0), Some(1)));
    // The payer coming back now is told so and charged nothing.
    let (status, body) = pay(&t, &session, &order_id.to_string()).await;
    assert_eq!((status, &body["error"]["code"]), (StatusCode::CONFLICT, &json!("order_ended")));
    assert_eq!(member_view(&t, &m, member_id).await.balance_fen, 1_000);
}

#[tokio::test]
async fn cancel_gives_points_and_stock_back() {
    let t = spawn_app().await;
    let m = merchant(&t, "mall-cancel").await;
    let product_id =
        product(&t, &m, json!({"kind": "points", "points": 10}), json!({"kind": "finite", "total": 2}), None).await;
    let (member_id, session) = member(&t, &m, 1, 100, 0).await;
    let (_, order) = place(&t, &session, json!({"product_id": product_id, "quantity": 2})).await;
    let order_id = order["order_id"].as_str().unwrap().to_owned();
    let (status, cancelled) = post(&t, &session, &format!("/m/api/v1/mall/orders/{order_id}/cancel"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    let v = member_view(&t, &m, member_id).await;
    assert_eq!((v.points, v.held_points), (100, 0));
    assert_eq!(product_view(&t, &m, &product_id).await["available"], 2);
    // The expiry later finds nothing left to release.
    t.clock.advance(chrono::Duration::minutes(mall::PAY_WINDOW_DEFAULT_MINUTES + 1));
    step(&t, &m).await;
    let releases = count(&t, &m, "SELECT count(*) FROM events WHERE event_type = 'PointsHoldReleased'").await;
    assert_eq!(releases, 1);
    assert_eq!(member_view(&t, &m, member_id).await.points, 100);
}

#[tokio::test]
async fn bad_quantities_and_bodies_are_refused_and_store_nothing() {
    let t = spawn_app().await;
    let m = merchant(&t, "mall-bad").await;
    let product_id = product(&t, &m, json!({"kind": "points", "points": 1}), json!({"kind": "unlimited"}), None).await;
    let (_, session) = member(&t, &m, 1, 100, 0).await;
    for quantity in [json!(0), json!(-1), json!(1_000_000_000), json!(100), json!(1.5), json!("2"), json!(null)] {
        let (status, body) = place(&t, &session, json!({"product_id": product_id, "quantity": quantity})).await;
        assert!(status.is_client_error(), "{quantity}: {status} {body}");
    }
    for body in [
        json!([1, 2]),
        json!({"product_id": product_id}),
        json!({"product_id": "nope", "quantity": 1}),
        json!({"product_id": product_id, "quantity": 1, "extra": true}),
    ] {
        let (status, _) = place(&t, &session, body.clone()).await;
        assert!(status.is_client_error(), "{body}: {status}");
    }
    // An unknown product is 404.
    let unknown = uuid::Uuid::new_v4();
    assert_eq!(place(&t, &session, json!({"product_id": unknown, "quantity": 1})).await.0, StatusCode::NOT_FOUND);
    // Bad product input is refused too.
    for bad in [
        json!({"name": "", "price": {"kind": "points", "points": 1}, "stock": {"kind": "unlimited"}}),
        json!({"name": "x", "price": {"kind": "points", "points": 0}, "stock": {"kind": "unlimited"}}),
        json!({"name": "x", "price": {"kind": "points", "points": 1}, "stock": {"kind": "finite", "total": -1}}),
        json!({"name": "x", "price": {"kind": "points", "points": 1}, "stock": {"kind": "unlimited"}, "per_member_limit": 0}),
        json!({"name": "x", "price": {"kind": "points", "points": 1}, "stock": {"kind": "unlimited"}, "images": ["javascript:alert(1)"]}),
    ] {
        let (status, body) = post(&t, &m.owner, "/admin/api/v1/mall/products", bad.clone()).await;
        assert!(status.is_client_error(), "{bad}: {status} {body}");
    }
    let events = count(
        &t,
        &m,
        "SELECT count(*) FROM events WHERE aggregate_type IN ('mall_order') OR event_type = 'ProductStockReserved'",
    )
    .await;
    assert_eq!(events, 0);
    let products = count(&t, &m, "SELECT count(*) FROM events WHERE aggregate_type = 'mall_product'").await;
    assert_eq!(products, 1);
}

#[tokio::test]
async fn orders_beyond_the_members_points_place_one_and_hold_no_stock_for_the_other() {
    let t = spawn_app().await;
    let m = merchant(&t, "mall-undo").await;
    let product_id =
        product(&t, &m, json!({"kind": "points", "points": 60}), json!({"kind": "finite", "total": 1}), None).await;
    let (member_id, session) = member(&t, &m, 1, 100, 0).await;
    // Two orders racing for the member's 100 points: the pre-check passes both,
    // the ledger's hold refuses one, whose reservation is then released.
    let other_product =
        product(&t, &m, json!({"kind": "points", "points": 60}), json!({"kind": "finite", "total": 1}), None).await;
    let results: Vec<(StatusCode, Value)> = stream::iter([product_id.clone(), other_product.clone()])
        .map(|p| place(&t, &session, json!({"product_id": p, "quantity": 1})))
        .buffer_unordered(2)
        .collect()
        .await;
    let placed = results.iter().filter(|(s, _)| *s == StatusCode::CREATED).count();
    let refused = results
        .iter()
        .filter(|(s, b)| *s == StatusCode::CONFLICT && b["error"]["code"] == "insufficient_points")
        .count();
    assert_eq!((placed, refused), (1, 1), "{results:?}");
    let v = member_view(&t, &m, member_id).await;
    assert_eq!((v.points, v.held_points), (40, 60));
    let available = product_view(&t, &m, &product_id).await["available"].as_u64().unwrap()
        + product_view(&t, &m, &other_product).await["available"].as_u64().unwrap();
    assert_eq!(available, 1, "the refused order's unit is back on sale");
}

#[tokio::test]
async fn the_mall_read_model_and_daily_counters_follow_the_orders() {
    let t = wxcm_tests::spawn_app_with_projections().await;
    let m = merchant(&t, "mall-report").await;
    let product_id = product(
        &t,
        &m,
        json!({"kind": "points_and_fen", "points": 20, "amount_fen": 150}),
        json!({"kind": "finite", "total": 10}),
        None,
    )
    .await;
    let (_, session) = member(&t, &m, 1, 1_000, 1_000).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (status, order) =
            place(&t, &session, json!({"product_id": product_id, "quantity": 1, "pay_with": "balance"})).await;
        assert_eq!(status, StatusCode::CREATED, "{order}");
        ids.push(order["order_id"].as_str().unwrap().to_owned());
    }
    for id in &ids[..2] {
        assert_eq!(pay(&t, &session, id).await.0, StatusCode::OK);
    }
    let (status, _) =
        post(&t, &m.staff, "/admin/api/v1/mall/deliveries", json!({"order": ids[0], "store": "front desk"})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) =
        post(&t, &m.owner, &format!("/admin/api/v1/mall/orders/{}/refund", ids[1]), json!({"reason": "x"})).await;
    assert_eq!(status, StatusCode::OK);
    t.catch_up().await;

    let statuses = count(
        &t,
        &m,
        "SELECT count(*) FILTER (WHERE status = 'delivered') * 100 + count(*) FILTER (WHERE status = 'refunded') * 10
              + count(*) FILTER (WHERE status = 'awaiting_payment') FROM rm_mall_orders",
    )
    .await;
    assert_eq!(statuses, 111);
    let metric =
        |name: &str| format!("SELECT coalesce(sum(value), 0)::bigint FROM rm_daily_ops WHERE metric = '{name}'");
    assert_eq!(count(&t, &m, &metric("mall_orders_paid")).await, 2);
    assert_eq!(count(&t, &m, &metric("mall_orders_delivered")).await, 1);
    // Net of the refund: one order's points and fen.
    assert_eq!(count(&t, &m, &metric("mall_points_spent")).await, 20);
    assert_eq!(count(&t, &m, &metric("mall_fen_taken")).await, 150);
}

#[tokio::test]
async fn a_placement_that_died_after_reserving_is_swept_and_its_key_stays_refused() {
    use wxcm_domain::mall::{Price, ProductCommand, ProductId, Quantity};
    use wxcm_domain::IdempotencyKey;

    let t = spawn_app().await;
    let m = merchant(&t, "mall-sweep").await;
    let product_id =
        product(&t, &m, json!({"kind": "points", "points": 30}), json!({"kind": "finite", "total": 1}), None).await;
    let (member_id, session) = member(&t, &m, 1, 100, 0).await;
    // What a placement leaves when its process dies after the first two steps:
    // the reservation (which writes the order's expiry) and the points hold.
    let request_key = key();
    let order_id = MallOrderId::for_request(&m.tenant, member_id, &IdempotencyKey::parse(&request_key).unwrap());
    let shard = t.app.router.route(&m.tenant).unwrap();
    let sys = |what: &str| {
        let k = members::system_key(&["test-died", what]).unwrap();
        CommandContext::new(m.tenant.clone(), k, "test".into())
    };
    let reserve = ProductCommand::Reserve {
        order_id,
        member_id,
        quantity: Quantity::new(1).unwrap(),
        unit_price: Price::Points { points: PointsAmount::new(30).unwrap() },
        expires_at: t.app.clock.now() + chrono::Duration::minutes(mall::PAY_WINDOW_DEFAULT_MINUTES),
    };
    let product_key = ProductId::parse(&product_id).unwrap().to_string();
    shard.products.execute(&product_key, reserve.clone(), &reserve, &sys("reserve")).await.unwrap();
    let hold = MemberCommand::HoldPoints {
        hold_id: order_id.hold_id(),
        points: PointsAmount::new(30).unwrap(),
        provenance: Provenance {
            actor: Actor::Member { member_id },
            reason: Reference::parse("mall order").unwrap(),
            reference: None,
            idempotency_key: sys("hold").idempotency_key,
        },
    };
    members::execute(&t.app, &m.tenant, member_id, hold.clone(), &hold, &sys("hold")).await.unwrap();
    assert_eq!(product_view(&t, &m, &product_id).await["available"], 0);
    assert_eq!(member_view(&t, &m, member_id).await.held_points, 30);

    // Its expiry sweeps both, once.
    t.clock.advance(chrono::Duration::minutes(mall::PAY_WINDOW_DEFAULT_MINUTES + 1));
    step(&t, &m).await;
    step(&t, &m).await;
    assert_eq!(product_view(&t, &m, &product_id).await["available"], 1);
    let v = member_view(&t, &m, member_id).await;
    assert_eq!((v.points, v.held_points), (100, 0));
    // The request retried with its key is refused, nothing is reserved again.
    let req = t.http.post(t.url("/m/api/v1/mall/orders")).bearer_auth(&session).header("Idempotency-Key", &request_key);
    let (status, body) = send(req.json(&json!({"product_id": product_id, "quantity": 1}))).await;
    assert_eq!((status, &body["error"]["code"]), (StatusCode::CONFLICT, &json!("order_abandoned")), "{body}");
    assert_eq!(product_view(&t, &m, &product_id).await["available"], 1);
}

/// A coupon template of `value_fen` off, and one coupon of it claimed by the session's member.
async fn coupon(t: &TestApp, m: &Merchant, session: &str, value_fen: i64) -> (String, String) {
    let terms = json!({
        "name": "cash off",
        "benefit": {"kind": "cash", "value_fen": value_fen, "min_spend_fen": null},
        "validity": {"kind": "days_from_issue", "days": 30},
        "per_member_limit": null,
        "audience": {"kind": "all_members"},
    });
    let (status, body) =
        post(t, &m.owner, "/admin/api/v1/coupon-templates", json!({"terms": terms, "stock": {"kind": "unlimited"}}))
            .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let template_id = body["template_id"].as_str().unwrap().to_owned();
    let (status, claimed) = post(t, session, "/m/api/v1/coupons/claims", json!({"template_id": template_id})).await;
    assert_eq!(status, StatusCode::CREATED, "{claimed}");
    (claimed["coupon_id"].as_str().unwrap().to_owned(), claimed["qr_payload"].as_str().unwrap().to_owned())
}

async fn coupon_state(t: &TestApp, m: &Merchant, coupon_id: &str) -> String {
    let id = wxcm_domain::coupon::CouponId::parse(coupon_id).unwrap();
    let view = wxcm_commands::coupons::get_coupon(&t.app, &m.tenant, id).await.unwrap();
    view.state.as_str().to_owned()
}

#[tokio::test]
async fn a_coupon_takes_off_the_cash_part_is_held_used_and_given_back() {
    let t = spawn_app().await;
    let m = merchant(&t, "mall-coupons").await;
    let (member_id, session) = member(&t, &m, 1, 0, 10_000).await;
    let product_id =
        product(&t, &m, json!({"kind": "fen", "amount_fen": 300}), json!({"kind": "finite", "total": 5}), None).await;

    // A coupon larger than the cash part: 1 fen is left to pay, never a negative amount.
    let (big, _) = coupon(&t, &m, &session, 1_000).await;
    let body = json!({"product_id": product_id, "quantity": 1, "pay_with": "balance", "coupon_id": big});
    let (status, order) = place(&t, &session, body).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert_eq!((order["discount_fen"].as_i64(), order["cash_due_fen"].as_i64()), (Some(299), Some(1)), "{order}");
    assert_eq!(order["coupon_id"].as_str(), Some(big.as_str()));
    assert_eq!(coupon_state(&t, &m, &big).await, "held");
    // Held: not usable on a second order, nor at the counter.
    let body = json!({"product_id": product_id, "quantity": 1, "pay_with": "balance", "coupon_id": big});
    let (status, refused) = place(&t, &session, body).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("coupon_not_usable")));
    let order_id = order["order_id"].as_str().unwrap().to_owned();
    let (status, paid) = pay(&t, &session, &order_id).await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    assert_eq!(member_view(&t, &m, member_id).await.balance_fen, 10_000 - 1);
    assert_eq!(coupon_state(&t, &m, &big).await, "redeemed", "used by the paid order");
    // Refunded: the coupon goes back to the member, with the 1 fen.
    let (status, refunded) =
        post(&t, &m.owner, &format!("/admin/api/v1/mall/orders/{order_id}/refund"), json!({"reason": "broken"})).await;
    assert_eq!(status, StatusCode::OK, "{refunded}");
    assert_eq!(coupon_state(&t, &m, &big).await, "active");
    assert_eq!(member_view(&t, &m, member_id).await.balance_fen, 10_000);

    // An order that expires unpaid releases its coupon, once.
    let (small, qr) = coupon(&t, &m, &session, 100).await;
    let body = json!({"product_id": product_id, "quantity": 2, "pay_with": "balance", "coupon_id": small});
    let (status, order) = place(&t, &session, body).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert_eq!(order["cash_due_fen"].as_i64(), Some(500), "{order}");
    let (status, refused) =
        post(&t, &m.staff, "/admin/api/v1/coupons/redemptions", json!({"code": qr, "store": "counter 1"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "a held coupon is not written off at the counter: {refused}");
    t.clock.advance(chrono::Duration::minutes(mall::PAY_WINDOW_DEFAULT_MINUTES + 1));
    step(&t, &m).await;
    step(&t, &m).await;
    assert_eq!(coupon_state(&t, &m, &small).await, "active");
    // Another member's coupon is not found; nothing is reserved for the refused order.
    let (_, other_session) = member(&t, &m, 2, 0, 1_000).await;
    let body = json!({"product_id": product_id, "quantity": 1, "pay_with": "balance", "coupon_id": small});
    let (status, refused) = place(&t, &other_session, body).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("coupon_not_found")));
    assert_eq!(product_view(&t, &m, &product_id).await["reserved"], 0);
    t.stop().await;
}

/// A coupon template with a finite `stock` (for a product's gift).
async fn gift_template(t: &TestApp, m: &Merchant, stock: i64) -> String {
    let terms = json!({
        "name": "gift: 5 yuan off",
        "benefit": {"kind": "cash", "value_fen": 500, "min_spend_fen": null},
        "validity": {"kind": "days_from_issue", "days": 30},
        "per_member_limit": 1,
        "audience": {"kind": "all_members"},
    });
    let body = json!({"terms": terms, "stock": {"kind": "finite", "total": stock}});
    let (status, body) = post(t, &m.owner, "/admin/api/v1/coupon-templates", body).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["template_id"].as_str().unwrap().to_owned()
}

/// "Issued with a mall purchase": the product's gift template is copied onto
/// the order when placed; a paid order issues one coupon of it (once, however
/// often settlement runs); a refund voids it unless used; a sold-out gift
/// leaves the order paid without one; a template of another tenant is refused.
#[tokio::test]
async fn a_paid_order_comes_with_the_products_gift_coupon_once_and_a_refund_voids_it() {
    let t = spawn_app().await;
    let m = merchant(&t, "mall-gifts").await;
    let other = merchant(&t, "mall-gifts-b").await;
    let product_id =
        product(&t, &m, json!({"kind": "points", "points": 10}), json!({"kind": "finite", "total": 10}), None).await;
    let gift_path = format!("/admin/api/v1/mall/products/{product_id}/gift-coupon");

    // Only a template of this tenant.
    let foreign = gift_template(&t, &other, 5).await;
    let (status, body) = put(&t, &m.owner, &gift_path, json!({"template_id": foreign})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("template_not_found")));
    let (status, body) = put(&t, &m.owner, &gift_path, json!({"template_id": "not-a-uuid"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(product_view(&t, &m, &product_id).await["gift_coupon_template_id"].is_null());

    // A gift template with a stock of 2 (the first gift is voided by a refund, which keeps it counted).
    let template_id = gift_template(&t, &m, 2).await;
    let (status, body) = put(&t, &m.owner, &gift_path, json!({"template_id": template_id})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["gift_coupon_template_id"].as_str(), Some(template_id.as_str()));

    let (member_id, session) = member(&t, &m, 1, 1_000, 0).await;
    let (status, first) = place(&t, &session, json!({"product_id": product_id, "quantity": 1})).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(first["gift_coupon_template_id"].as_str(), Some(template_id.as_str()));
    let first_id = first["order_id"].as_str().unwrap().to_owned();
    let first_gift = first["gift_coupon_id"].as_str().unwrap().to_owned();
    // Not before payment.
    let gift_id = wxcm_domain::coupon::CouponId::parse(&first_gift).unwrap();
    assert!(wxcm_commands::coupons::get_coupon(&t.app, &m.tenant, gift_id).await.is_err());

    // The product's gift changes after this order was placed: the order keeps its own.
    let (status, second) = place(&t, &session, json!({"product_id": product_id, "quantity": 1})).await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    let second_id = second["order_id"].as_str().unwrap().to_owned();
    let (status, _) = put(&t, &m.owner, &gift_path, json!({"template_id": null})).await;
    assert_eq!(status, StatusCode::OK);

    let (status, paid) = pay(&t, &session, &first_id).await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    assert_eq!(coupon_state(&t, &m, &first_gift).await, "active");
    let gift = wxcm_commands::coupons::get_coupon(&t.app, &m.tenant, gift_id).await.unwrap();
    assert_eq!(gift.member_id, member_id);
    assert_eq!(gift.channel.name(), "mall_purchase");
    // Settlement again (due work, repeated): still one coupon.
    step(&t, &m).await;
    step(&t, &m).await;
    let (status, mine) = get(&t, &session, "/m/api/v1/coupons").await;
    assert_eq!(status, StatusCode::OK, "{mine}");
    assert_eq!(mine["coupons"].as_array().map(Vec::len), Some(1), "{mine}");

    // The refund voids the unused gift.
    let (status, refunded) =
        post(&t, &m.owner, &format!("/admin/api/v1/mall/orders/{first_id}/refund"), json!({"reason": "broken"})).await;
    assert_eq!(status, StatusCode::OK, "{refunded}");
    assert_eq!(coupon_state(&t, &m, &first_gift).await, "voided");

    // The second order (placed while the gift was set) gets its gift too.
    let (status, paid) = pay(&t, &session, &second_id).await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    let second_gift = second["gift_coupon_id"].as_str().unwrap().to_owned();
    assert_eq!(coupon_state(&t, &m, &second_gift).await, "active");

    // Sold out: an order placed with the gift set once more is paid without a gift.
    let (status, _) = put(&t, &m.owner, &gift_path, json!({"template_id": template_id})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, third) = place(&t, &session, json!({"product_id": product_id, "quantity": 1})).await;
    assert_eq!(status, StatusCode::CREATED, "{third}");
    let (status, paid) = pay(&t, &session, third["order_id"].as_str().unwrap()).await;
    assert_eq!((status, paid["status"].as_str()), (StatusCode::OK, Some("paid")), "{paid}");
    let third_gift = wxcm_domain::coupon::CouponId::parse(third["gift_coupon_id"].as_str().unwrap()).unwrap();
    assert!(wxcm_commands::coupons::get_coupon(&t.app, &m.tenant, third_gift).await.is_err());
    assert_eq!(member_view(&t, &m, member_id).await.points, 1_000 - 20);
    t.stop().await;
}
