//! `wxcm audit reconcile`, `wxcm projections rebuild mall` and `wxcm audit
//! verify` over the points mall, against the real Postgres, NATS JetStream and
//! the `wxcm` binary: orders in every state (delivered, paid, refunded,
//! awaiting payment, cancelled, expired, a late payment refunded) made through
//! the HTTP API and projected reconcile clean; a changed status, a missing row
//! and a changed counter are reported (exit 1); a rebuild of one tenant, then
//! of every shard, makes the rows and counters the projector had made, moves
//! the checkpoints to the heads, drops the dead letters, leaves the other
//! tenant alone, and the live projector goes on from there.

use reqwest::StatusCode;
use serde_json::{json, Value};
use wxcm_commands::ledger_requests::{self, LedgerRequest};
use wxcm_commands::pay_flows::MemberSession;
use wxcm_commands::ports::Role;
use wxcm_commands::{auth, mall, members, scheduler, tenants, CommandContext};
use wxcm_domain::mall::MallOrderId;
use wxcm_domain::member::{CardLevel, ExpiryPolicy, MemberCommand, Provenance, RegistrationSource};
use wxcm_domain::{Actor, AmountFen, AppId, MemberId, OpenId, PointsAmount, Reference, TenantId};
use wxcm_ops::reconcile::{self, ReconcileReport};
use wxcm_tests::{settings_file, spawn_app_with_projections, wxcm_bin, TestApp};

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
    tenants::create(&t.app, &tenant_id, "Ops Mall", Actor::Admin { username: "test".into() }, &ctx).await.unwrap();
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

async fn post(t: &TestApp, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
    let key = format!("test-{}", uuid::Uuid::new_v4());
    let res = t.http.post(t.url(path)).bearer_auth(token).header("Idempotency-Key", key).json(&body).send().await;
    let res = res.unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// A registered member with `points` (never expiring), `balance_fen` and a member-API session.
async fn member(t: &TestApp, m: &Merchant, points: i64, balance_fen: i64) -> (MemberId, String) {
    let openid = OpenId::parse("oOps_00000001").unwrap();
    let request = members::RegisterRequest {
        openid: Some(openid.clone()),
        source: RegistrationSource::Staff,
        card_level: CardLevel::standard(),
    };
    let admin = Actor::Admin { username: "t".into() };
    let ctx = |what: &str| {
        let key = members::system_key(&["test-member", m.tenant.as_str(), what]).unwrap();
        CommandContext::new(m.tenant.clone(), key, "test".into())
    };
    let (view, _) = members::register(&t.app, &m.tenant, request, admin.clone(), &ctx("register")).await.unwrap();
    let reason = Reference::parse("test").unwrap();
    let grant = LedgerRequest::PointsGrant {
        points: PointsAmount::new(points).unwrap(),
        expiry: ExpiryPolicy::Never,
        reason: reason.clone(),
        reference: None,
    };
    ledger_requests::execute(&t.app, &m.tenant, view.member_id, grant, admin.clone(), &ctx("points")).await.unwrap();
    let deposit =
        LedgerRequest::CashDeposit { amount_fen: AmountFen::new(balance_fen).unwrap(), reason, reference: None };
    ledger_requests::execute(&t.app, &m.tenant, view.member_id, deposit, admin, &ctx("cash")).await.unwrap();
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

async fn product(t: &TestApp, m: &Merchant, price: Value) -> String {
    let body = json!({"name": "Mug", "price": price, "stock": {"kind": "unlimited"}});
    let (status, body) = post(t, &m.owner, "/admin/api/v1/mall/products", body).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["product_id"].as_str().unwrap().to_owned()
}

/// Places an order for one unit (`pay_with` the balance when `balance`).
async fn place(t: &TestApp, session: &str, product_id: &str, balance: bool) -> String {
    let mut body = json!({"product_id": product_id, "quantity": 1});
    if balance {
        body["pay_with"] = json!("balance");
    }
    let (status, order) = post(t, session, "/m/api/v1/mall/orders", body).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    order["order_id"].as_str().unwrap().to_owned()
}

async fn pay(t: &TestApp, session: &str, order_id: &str) {
    let (status, body) = post(t, session, &format!("/m/api/v1/mall/orders/{order_id}/payment"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn db(t: &TestApp, m: &Merchant) -> sqlx::PgConnection {
    let shard = t.app.router.route(&m.tenant).unwrap().name.clone();
    t.shard_db(&shard).await
}

/// The tenant's `rm_mall_orders` rows and non-zero mall counters, as text.
async fn read_model(t: &TestApp, m: &Merchant) -> (Vec<String>, Vec<String>) {
    let mut db = db(t, m).await;
    let rows =
        sqlx::query_scalar("SELECT row_to_json(r)::text FROM rm_mall_orders r WHERE tenant_id = $1 ORDER BY order_id")
            .bind(m.tenant.as_str())
            .fetch_all(&mut db)
            .await
            .unwrap();
    // A day whose payment was refunded the same day may keep a zero row live;
    // a rebuild sums first and writes none. Both read the same.
    let counters = sqlx::query_scalar(
        "SELECT concat_ws(' ', day, metric, dimension, value) FROM rm_daily_ops
          WHERE tenant_id = $1 AND metric LIKE 'mall\\_%' AND value <> 0 ORDER BY day, metric, dimension",
    )
    .bind(m.tenant.as_str())
    .fetch_all(&mut db)
    .await
    .unwrap();
    (rows, counters)
}

async fn reconcile(t: &TestApp, m: &Merchant) -> ReconcileReport {
    reconcile::reconcile(&t.settings, &m.tenant).await.unwrap()
}

/// Runs `wxcm --config <file> <args>`.
async fn wxcm(t: &TestApp, args: &[&str]) -> std::process::Output {
    let file = settings_file(&t.settings);
    let output = tokio::process::Command::new(wxcm_bin())
        .arg("--config")
        .arg(file.path())
        .args(args)
        .env_remove("WXCM_SECRET_KEY")
        .env_remove("WXCM_CONFIG")
        .output()
        .await
        .unwrap();
    drop(file);
    output
}

#[tokio::test]
async fn the_mall_read_model_reconciles_reports_tampering_and_is_rebuilt() {
    let t = spawn_app_with_projections().await;
    let m = merchant(&t, "mall-ops").await;
    let both = product(&t, &m, json!({"kind": "points_and_fen", "points": 20, "amount_fen": 150})).await;
    let points = product(&t, &m, json!({"kind": "points", "points": 10})).await;
    let fen = product(&t, &m, json!({"kind": "fen", "amount_fen": 300})).await;
    let (member_id, session) = member(&t, &m, 1_000, 5_000).await;

    // Before the pay window ends: one left to expire, one cancelled, one whose
    // balance charge is never recorded on the order (paid late, refunded).
    place(&t, &session, &points, false).await;
    let cancelled = place(&t, &session, &points, false).await;
    let (status, _) = post(&t, &session, &format!("/m/api/v1/mall/orders/{cancelled}/cancel"), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let late = place(&t, &session, &fen, true).await;
    let charge_key = mall::orders::charge_key(MallOrderId::parse(&late).unwrap()).unwrap();
    let charge = MemberCommand::ChargeCash {
        amount_fen: AmountFen::new(300).unwrap(),
        provenance: Provenance {
            actor: Actor::Member { member_id },
            reason: Reference::parse("mall order").unwrap(),
            reference: None,
            idempotency_key: charge_key.clone(),
        },
    };
    let ctx = CommandContext::new(m.tenant.clone(), charge_key, "test".into());
    members::execute(&t.app, &m.tenant, member_id, charge.clone(), &charge, &ctx).await.unwrap();
    t.clock.advance(chrono::Duration::minutes(mall::PAY_WINDOW_DEFAULT_MINUTES + 1));
    let shard = t.app.router.route(&m.tenant).unwrap();
    scheduler::step(&t.app, &shard).await.unwrap();
    scheduler::step(&t.app, &shard).await.unwrap();

    // Delivered, refunded, paid, awaiting payment.
    let delivered = place(&t, &session, &both, true).await;
    let refunded = place(&t, &session, &both, true).await;
    let paid = place(&t, &session, &points, false).await;
    let awaiting = place(&t, &session, &points, false).await;
    for id in [&delivered, &refunded, &paid] {
        pay(&t, &session, id).await;
    }
    let (status, _) =
        post(&t, &m.staff, "/admin/api/v1/mall/deliveries", json!({"order": delivered, "store": "front desk"})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) =
        post(&t, &m.owner, &format!("/admin/api/v1/mall/orders/{refunded}/refund"), json!({"reason": "x"})).await;
    assert_eq!(status, StatusCode::OK);

    // Another tenant's order, which a rebuild of this tenant leaves alone.
    let other = merchant(&t, "mall-ops-other").await;
    let other_product = product(&t, &other, json!({"kind": "points", "points": 5})).await;
    let (_, other_session) = member(&t, &other, 100, 100).await;
    let other_order = place(&t, &other_session, &other_product, false).await;
    pay(&t, &other_session, &other_order).await;
    t.catch_up().await;

    let events: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE tenant_id = $1 AND aggregate_type = 'mall_order'")
            .bind(m.tenant.as_str())
            .fetch_one(&mut db(&t, &m).await)
            .await
            .unwrap();
    let report = reconcile(&t, &m).await;
    assert!(report.is_clean(), "{report:#?}");
    assert_eq!((report.mall.orders, report.mall.events), (7, events as u64), "{report:#?}");
    assert!(reconcile(&t, &other).await.is_clean());
    let (rows, counters) = read_model(&t, &m).await;
    let mut statuses: Vec<String> =
        rows.iter().map(|r| serde_json::from_str::<Value>(r).unwrap()["status"].as_str().unwrap().to_owned()).collect();
    statuses.sort();
    assert_eq!(statuses, ["awaiting_payment", "cancelled", "delivered", "expired", "paid", "refunded", "refunded"]);
    let sum = |name: &str| -> i64 {
        counters
            .iter()
            .filter(|c| c.split(' ').nth(1) == Some(name))
            .map(|c| c.rsplit(' ').next().unwrap().parse::<i64>().unwrap())
            .sum()
    };
    // Net of the refund; the late payment never counted.
    assert_eq!(
        (sum("mall_orders_paid"), sum("mall_orders_delivered"), sum("mall_points_spent"), sum("mall_fen_taken")),
        (3, 1, 30, 150),
        "{counters:?}"
    );
    let other_before = read_model(&t, &other).await;
    // `wxcm audit verify` replays the order and product streams with their aggregates.
    assert!(wxcm_ops::audit::audit_verify(&t.settings, &m.tenant, true).await.unwrap());

    // Tampering behind the projector's back: a status, a row, a counter.
    let mut db = db(&t, &m).await;
    let tenant = m.tenant.as_str();
    sqlx::query("UPDATE rm_mall_orders SET status = 'paid' WHERE tenant_id = $1 AND order_id = $2")
        .bind(tenant)
        .bind(&delivered)
        .execute(&mut db)
        .await
        .unwrap();
    sqlx::query("DELETE FROM rm_mall_orders WHERE tenant_id = $1 AND order_id = $2")
        .bind(tenant)
        .bind(&awaiting)
        .execute(&mut db)
        .await
        .unwrap();
    let tampered = sqlx::query(
        "UPDATE rm_daily_ops SET value = value + 7
          WHERE (tenant_id, day, metric, dimension) = (SELECT tenant_id, day, metric, dimension FROM rm_daily_ops
                  WHERE tenant_id = $1 AND metric = 'mall_fen_taken' AND value <> 0 ORDER BY day LIMIT 1)",
    )
    .bind(tenant)
    .execute(&mut db)
    .await
    .unwrap();
    assert_eq!(tampered.rows_affected(), 1);
    // A parked event the rebuild drops.
    sqlx::query(
        "INSERT INTO projection_dead_letters (projector, event_id, tenant_id, aggregate_type, aggregate_id, sequence,
                                              error, attempts, parked_at, event)
         VALUES ('mall', gen_random_uuid(), $1, 'mall_order', $2, 1, 'test', 5, now(), '{}')",
    )
    .bind(m.tenant.as_str())
    .bind(uuid::Uuid::new_v4().to_string())
    .execute(&mut db)
    .await
    .unwrap();

    let output = wxcm(&t, &["audit", "reconcile", "--tenant", m.tenant.as_str(), "--json"]).await;
    assert_eq!(output.status.code(), Some(1), "{}", String::from_utf8_lossy(&output.stderr));
    let json: Value = serde_json::from_slice(&output.stdout).unwrap();
    let differences = json["mall"]["differences"].as_array().unwrap().clone();
    let mut found: Vec<(String, String, String, String)> = differences
        .iter()
        .map(|d| {
            let s = |k: &str| d[k].as_str().unwrap().to_owned();
            (s("stream"), s("field"), s("expected"), s("found"))
        })
        .collect();
    found.sort();
    let fen_taken = differences.iter().find(|d| d["field"] == "mall_fen_taken").expect("the counter is reported");
    let (expected_fen, found_fen) =
        (fen_taken["expected"].as_str().unwrap().to_owned(), fen_taken["found"].as_str().unwrap().to_owned());
    assert_eq!(found_fen.parse::<i64>().unwrap(), expected_fen.parse::<i64>().unwrap() + 7);
    let mut want = vec![
        (format!("mall_order/{delivered}"), "status".into(), "delivered".into(), "paid".into()),
        (format!("mall_order/{awaiting}"), "presence".into(), "row".into(), "-".into()),
        (fen_taken["stream"].as_str().unwrap().to_owned(), "mall_fen_taken".into(), expected_fen, found_fen),
    ];
    want.sort();
    assert_eq!(found, want);
    assert_eq!(json["differences"], json!([]), "members are untouched");
    let text = wxcm(&t, &["audit", "reconcile", "--tenant", m.tenant.as_str()]).await;
    assert_eq!(text.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("3 mall differences"),
        "{}",
        String::from_utf8_lossy(&text.stdout)
    );

    // `wxcm projections rebuild mall --tenant`: the rows and counters the projector had made.
    let output = wxcm(&t, &["projections", "rebuild", "mall", "--tenant", m.tenant.as_str()]).await;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains(&format!("{events} events, 7 orders")),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let report = reconcile(&t, &m).await;
    assert!(report.is_clean(), "{report:#?}");
    assert_eq!(read_model(&t, &m).await, (rows.clone(), counters.clone()));
    assert_eq!(read_model(&t, &other).await, other_before);
    let checkpoints: Vec<(String, i64)> = sqlx::query_as(
        "SELECT aggregate_id, sequence FROM projection_checkpoints WHERE projector = 'mall' AND tenant_id = $1
          ORDER BY 1",
    )
    .bind(m.tenant.as_str())
    .fetch_all(&mut db)
    .await
    .unwrap();
    let heads: Vec<(String, i64)> = sqlx::query_as(
        "SELECT aggregate_id, max(sequence) FROM events WHERE aggregate_type = 'mall_order' AND tenant_id = $1
          GROUP BY 1 ORDER BY 1",
    )
    .bind(m.tenant.as_str())
    .fetch_all(&mut db)
    .await
    .unwrap();
    assert_eq!(checkpoints, heads);
    let parked: i64 = sqlx::query_scalar("SELECT count(*) FROM projection_dead_letters WHERE projector = 'mall'")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(parked, 0);

    // Every shard: the same again, the other tenant too.
    wxcm_server::projection_ops::rebuild(&t.settings, "mall", None).await.unwrap();
    assert_eq!(read_model(&t, &m).await, (rows, counters));
    assert_eq!(read_model(&t, &other).await, other_before);
    assert!(reconcile(&t, &other).await.is_clean());

    // The live projector goes on from the rebuilt checkpoints, without duplicates.
    let after = place(&t, &session, &points, false).await;
    pay(&t, &session, &after).await;
    let (status, _) =
        post(&t, &m.owner, &format!("/admin/api/v1/mall/orders/{paid}/refund"), json!({"reason": "x"})).await;
    assert_eq!(status, StatusCode::OK);
    t.catch_up().await;
    let report = reconcile(&t, &m).await;
    assert!(report.is_clean(), "{report:#?}");
    assert_eq!(report.mall.orders, 8);
    t.stop().await;
}
