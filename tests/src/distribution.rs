//! Shared setup of the distribution tests (moved out of
//! `tests/distribution_commissions.rs` so the report tests use the same):
//! a tenant with distribution and commission settings and a cash product, a
//! level-2 → level-1 → buyer chain, buying, delivering, refunding, the
//! scheduler's steps, the admin's view of an account and withdrawals.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use wxcm_commands::pay_flows::MemberSession;
use wxcm_commands::ports::Role;
use wxcm_commands::{auth, members, scheduler, tenants, CommandContext};
use wxcm_domain::member::{CardLevel, RegistrationSource};
use wxcm_domain::{Actor, AppId, MemberId, OpenId, TenantId};

use crate::{settings_file, wxcm_bin, TestApp};

pub const PASSWORD: &str = "a-long-enough-password";
/// Price of the test product, in fen: level 1 earns 10%, level 2 5%.
pub const PRICE_FEN: i64 = 10_000;
pub const HOLD_DAYS: i64 = 3;

pub struct Shop {
    pub tenant: TenantId,
    pub owner: String,
    pub staff: String,
    pub auditor: String,
    pub product: String,
    /// The official account of member sessions.
    pub appid: &'static str,
}

pub async fn login(t: &TestApp, tenant: &str, username: &str) -> String {
    let body = json!({"tenant_id": tenant, "username": username, "password": PASSWORD});
    let res = t.http.post(t.url("/admin/api/v1/login")).json(&body).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    res.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned()
}

pub async fn send(t: &TestApp, method: Method, token: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let key = format!("test-{}", uuid::Uuid::new_v4());
    send_keyed(t, method, token, path, body, &key).await
}

pub async fn send_keyed(
    t: &TestApp,
    method: Method,
    token: &str,
    path: &str,
    body: Option<Value>,
    key: &str,
) -> (StatusCode, Value) {
    let mut req = t.http.request(method, t.url(path)).bearer_auth(token).header("Idempotency-Key", key);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// A tenant with owner, staff and auditor, distribution (depth 2, 10% / 5%,
/// designation) and commission settings (3 days' hold, from 100 fen, fee 1%),
/// and a cash product of [`PRICE_FEN`].
pub async fn shop(t: &TestApp, tenant: &str) -> Shop {
    let commission = json!({"hold_days": HOLD_DAYS, "withdrawal_min_fen": 100, "withdrawal_fee_bps": 100});
    shop_with(t, tenant, commission).await
}

/// [`shop`] with `commission` as its commission settings (levels, fees).
pub async fn shop_with(t: &TestApp, tenant: &str, commission: Value) -> Shop {
    let tenant_id = TenantId::parse(tenant).unwrap();
    let key = members::system_key(&["test-tenant", tenant]).unwrap();
    let ctx = CommandContext::new(tenant_id.clone(), key, "test".into());
    tenants::create(&t.app, &tenant_id, "Dist Mall", Actor::Admin { username: "test".into() }, &ctx).await.unwrap();
    auth::create_admin(&t.app, &tenant_id, "owner", PASSWORD, Role::Owner).await.unwrap();
    auth::create_admin(&t.app, &tenant_id, "clerk", PASSWORD, Role::Staff).await.unwrap();
    auth::create_admin(&t.app, &tenant_id, "eye", PASSWORD, Role::Auditor).await.unwrap();
    let owner = login(t, tenant, "owner").await;
    let settings = json!({"enrolment": {"kind": "designation"}, "binding_mode": {"kind": "first_wins"},
        "commission_depth": 2, "default_rates": {"first_bps": 1000, "second_bps": 500},
        "new_member_reward_points": null});
    let (status, body) = send(t, Method::PUT, &owner, "/admin/api/v1/distribution/settings", Some(settings)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) =
        send(t, Method::PUT, &owner, "/admin/api/v1/distribution/commission-settings", Some(commission)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let product = json!({"name": "Tea set", "price": {"kind": "fen", "amount_fen": PRICE_FEN},
        "stock": {"kind": "unlimited"}});
    let (status, body) = send(t, Method::POST, &owner, "/admin/api/v1/mall/products", Some(product)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    Shop {
        product: body["product_id"].as_str().unwrap().to_owned(),
        staff: login(t, tenant, "clerk").await,
        auditor: login(t, tenant, "eye").await,
        owner,
        tenant: tenant_id,
        appid: "wx00000000000c0ffe",
    }
}

/// A member with `balance_fen` in cash and a member-API session.
pub async fn member(t: &TestApp, s: &Shop, openid: &str, balance_fen: i64) -> (MemberId, String) {
    let request = members::RegisterRequest {
        openid: Some(OpenId::parse(openid).unwrap()),
        source: RegistrationSource::Staff,
        card_level: CardLevel::standard(),
    };
    let key = members::system_key(&["test-member", s.tenant.as_str(), openid]).unwrap();
    let ctx = CommandContext::new(s.tenant.clone(), key, "test".into());
    let admin = Actor::Admin { username: "t".into() };
    let (view, _) = members::register(&t.app, &s.tenant, request, admin, &ctx).await.unwrap();
    if balance_fen > 0 {
        let (status, body) = send(
            t,
            Method::POST,
            &s.owner,
            &format!("/admin/api/v1/members/{}/cash/deposits", view.member_id),
            Some(json!({"amount_fen": balance_fen, "reason": "test"})),
        )
        .await;
        assert!(status.is_success(), "{body}");
    }
    let token = format!("{}.{}", s.tenant, uuid::Uuid::new_v4().simple());
    let session = MemberSession {
        tenant_id: s.tenant.clone(),
        member_id: view.member_id,
        appid: AppId::parse(s.appid).unwrap(),
        openid: OpenId::parse(openid).unwrap(),
        expires_at: t.app.clock.now() + chrono::Duration::days(400),
    };
    let shard = t.app.router.route(&s.tenant).unwrap();
    shard.pay.create_member_session(&auth::token_hash(&token), &session).await.unwrap();
    (view.member_id, token)
}

pub async fn designate(t: &TestApp, s: &Shop, member: MemberId) -> String {
    let path = format!("/admin/api/v1/distributors/{member}/designate");
    let (status, d) = send(t, Method::POST, &s.owner, &path, None).await;
    assert_eq!(status, StatusCode::OK, "{d}");
    d["code"].as_str().unwrap().to_owned()
}

pub async fn bind(t: &TestApp, session: &str, code: &str) {
    let (status, body) =
        send(t, Method::POST, session, "/m/api/v1/distribution/bindings", Some(json!({"code": code}))).await;
    assert!(status.is_success(), "{body}");
}

/// Level 2 distributor `a`, level 1 `b` (bound to `a`), buyer `c` (bound to `b`).
pub struct Chain {
    pub a: MemberId,
    pub a_session: String,
    pub b: MemberId,
    pub b_session: String,
    pub c_session: String,
}

pub async fn chain(t: &TestApp, s: &Shop, tag: &str) -> Chain {
    let (a, a_session) = member(t, s, &format!("oA_{tag}_000001"), 0).await;
    let (b, b_session) = member(t, s, &format!("oB_{tag}_000001"), 0).await;
    let (_, c_session) = member(t, s, &format!("oC_{tag}_000001"), 1_000_000).await;
    let a_code = designate(t, s, a).await;
    let b_code = designate(t, s, b).await;
    bind(t, &b_session, &a_code).await;
    bind(t, &c_session, &b_code).await;
    Chain { a, a_session, b, b_session, c_session }
}

/// Places and pays (balance) one unit; returns the order id.
pub async fn buy(t: &TestApp, s: &Shop, session: &str) -> String {
    let body = json!({"product_id": s.product, "quantity": 1, "pay_with": "balance"});
    let (status, order) = send(t, Method::POST, session, "/m/api/v1/mall/orders", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    let id = order["order_id"].as_str().unwrap().to_owned();
    let (status, body) =
        send(t, Method::POST, session, &format!("/m/api/v1/mall/orders/{id}/payment"), Some(json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    id
}

pub async fn deliver(t: &TestApp, s: &Shop, order: &str) {
    let body = json!({"order": order, "store": "front desk"});
    let (status, reply) = send(t, Method::POST, &s.staff, "/admin/api/v1/mall/deliveries", Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
}

pub async fn refund(t: &TestApp, s: &Shop, order: &str) {
    let path = format!("/admin/api/v1/mall/orders/{order}/refund");
    let (status, reply) = send(t, Method::POST, &s.owner, &path, Some(json!({"reason": "returned"}))).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
}

pub async fn step(t: &TestApp, s: &Shop) {
    let shard = t.app.router.route(&s.tenant).unwrap();
    for _ in 0..3 {
        scheduler::step(&t.app, &shard).await.unwrap();
    }
}

/// The distributor's account and commissions as the admin sees them.
pub async fn account(t: &TestApp, s: &Shop, distributor: MemberId) -> Value {
    let path = format!("/admin/api/v1/distributors/{distributor}/commissions");
    let (status, body) = send(t, Method::GET, &s.owner, &path, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

pub fn fig(v: &Value, name: &str) -> i64 {
    v["account"][format!("{name}_fen")].as_i64().unwrap_or_else(|| panic!("{name} in {v}"))
}

/// earned = settled + pending + reversed; settled = withdrawn + withdrawable + debt repaid.
pub fn assert_accounted(v: &Value) {
    let (earned, pending, settled, reversed) =
        (fig(v, "earned"), fig(v, "pending"), fig(v, "settled"), fig(v, "reversed"));
    let (clawed, withdrawing, paid, withdrawable, debt) =
        (fig(v, "clawed_back"), fig(v, "withdrawing"), fig(v, "paid_out"), fig(v, "withdrawable"), fig(v, "debt"));
    assert_eq!(earned, settled + pending + reversed, "{v}");
    assert_eq!(settled, withdrawing + paid + withdrawable + (clawed - debt), "{v}");
    assert!(withdrawable >= 0 && debt >= 0 && (withdrawable == 0 || debt == 0), "{v}");
    assert!(paid + withdrawing <= settled, "{v}");
}

pub async fn balance(t: &TestApp, s: &Shop, member: MemberId) -> i64 {
    let (status, m) = send(t, Method::GET, &s.owner, &format!("/admin/api/v1/members/{member}"), None).await;
    assert_eq!(status, StatusCode::OK, "{m}");
    m["balance_fen"].as_i64().unwrap()
}

pub async fn withdraw(t: &TestApp, session: &str, amount: Value) -> (StatusCode, Value) {
    send(t, Method::POST, session, "/m/api/v1/distribution/withdrawals", Some(json!({"amount_fen": amount}))).await
}

pub async fn wxcm(t: &TestApp, args: &[&str]) -> std::process::Output {
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
