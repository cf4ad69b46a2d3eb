//! Tenant isolation with real data, through the running server: tenant A has
//! a member with points and balance, a coupon template, a claimed coupon, a
//! product, a placed order, a dispatch job and a second admin user; tenant B's
//! owner (every permission) then walks every admin operation of the published
//! OpenAPI document (which the router is checked equal to) with A's real ids
//! in the path, and a set of well-formed writes aimed at A's things. Nothing
//! of A may be answered to B (no success on A's ids, none of A's ids or codes
//! in any answer), and A's event streams and admin users stay as they were.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use wxcm_commands::ledger_requests::{self, LedgerRequest};
use wxcm_commands::pay_flows::MemberSession;
use wxcm_commands::ports::Role;
use wxcm_commands::{auth, members, tenants, CommandContext};
use wxcm_domain::member::{CardLevel, ExpiryPolicy, RegistrationSource};
use wxcm_domain::{Actor, AmountFen, AppId, OpenId, PointsAmount, Reference, TenantId};
use wxcm_tests::{spawn_app, TestApp};

const PASSWORD: &str = "a-long-enough-password";

fn ctx(tenant: &TenantId, what: &str) -> CommandContext {
    let key = members::system_key(&["cross-tenant", tenant.as_str(), what]).unwrap();
    CommandContext::new(tenant.clone(), key, "test".into())
}

async fn tenant_with_owner(t: &TestApp, tenant: &str) -> (TenantId, String) {
    let tenant_id = TenantId::parse(tenant).unwrap();
    tenants::create(&t.app, &tenant_id, "Isolated", Actor::Admin { username: "t".into() }, &ctx(&tenant_id, "t"))
        .await
        .unwrap();
    auth::create_admin(&t.app, &tenant_id, "owner", PASSWORD, Role::Owner).await.unwrap();
    let body = json!({"tenant_id": tenant, "username": "owner", "password": PASSWORD});
    let res = t.http.post(t.url("/admin/api/v1/login")).json(&body).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    (tenant_id, res.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned())
}

async fn call(t: &TestApp, token: &str, method: Method, path: &str, body: Option<Value>) -> (StatusCode, String) {
    let mut req = t.http.request(method.clone(), t.url(path)).bearer_auth(token);
    if method != Method::GET {
        req = req.header("Idempotency-Key", format!("x-{}", uuid::Uuid::new_v4().simple()));
        req = req.json(&body.unwrap_or_else(|| json!({})));
    }
    let res = req.send().await.unwrap();
    (res.status(), res.text().await.unwrap_or_default())
}

async fn ok(t: &TestApp, token: &str, method: Method, path: &str, body: Value) -> Value {
    let (status, text) = call(t, token, method, path, Some(body)).await;
    assert!(status.is_success(), "{path}: {status} {text}");
    serde_json::from_str(&text).unwrap()
}

/// Events and admin users of tenant A, on its shard.
async fn footprint(t: &TestApp, tenant: &TenantId) -> (i64, Vec<(String, String, bool)>) {
    let shard = t.app.router.route(tenant).unwrap().name.clone();
    let mut db = t.shard_db(&shard).await;
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE tenant_id = $1")
        .bind(tenant.as_str())
        .fetch_one(&mut db)
        .await
        .unwrap();
    let users: Vec<(String, String, bool)> =
        sqlx::query_as("SELECT username, role, disabled FROM admin_users WHERE tenant_id = $1 ORDER BY username")
            .bind(tenant.as_str())
            .fetch_all(&mut db)
            .await
            .unwrap();
    (events, users)
}

#[tokio::test]
async fn another_tenants_owner_reaches_nothing_of_a_tenant_by_its_real_ids() {
    let t = spawn_app().await;
    let (a, a_owner) = tenant_with_owner(&t, "isolated-a").await;
    let (_b, b_owner) = tenant_with_owner(&t, "isolated-b").await;

    // ---- tenant A's real data
    auth::create_admin(&t.app, &a, "ann", PASSWORD, Role::Manager).await.unwrap();
    let openid = OpenId::parse("oIsolatedMember01").unwrap();
    let request = members::RegisterRequest {
        openid: Some(openid.clone()),
        source: RegistrationSource::Staff,
        card_level: CardLevel::standard(),
    };
    let admin = Actor::Admin { username: "t".into() };
    let (member, _) = members::register(&t.app, &a, request, admin.clone(), &ctx(&a, "member")).await.unwrap();
    let reason = Reference::parse("test").unwrap();
    let grant = LedgerRequest::PointsGrant {
        points: PointsAmount::new(500).unwrap(),
        expiry: ExpiryPolicy::Never,
        reason: reason.clone(),
        reference: None,
    };
    ledger_requests::execute(&t.app, &a, member.member_id, grant, admin.clone(), &ctx(&a, "points")).await.unwrap();
    let deposit = LedgerRequest::CashDeposit { amount_fen: AmountFen::new(5_000).unwrap(), reason, reference: None };
    ledger_requests::execute(&t.app, &a, member.member_id, deposit, admin, &ctx(&a, "cash")).await.unwrap();
    let session = format!("{a}.{}", uuid::Uuid::new_v4().simple());
    let member_session = MemberSession {
        tenant_id: a.clone(),
        member_id: member.member_id,
        appid: AppId::parse("wx00000000000c0ffe").unwrap(),
        openid: openid.clone(),
        expires_at: t.app.clock.now() + chrono::Duration::hours(2),
    };
    let shard = t.app.router.route(&a).unwrap();
    shard.pay.create_member_session(&auth::token_hash(&session), &member_session).await.unwrap();

    let terms = json!({"name": "A's coupon", "benefit": {"kind": "cash", "value_fen": 100, "min_spend_fen": null},
        "validity": {"kind": "days_from_issue", "days": 30}, "per_member_limit": null,
        "audience": {"kind": "all_members"}});
    let template = ok(
        &t,
        &a_owner,
        Method::POST,
        "/admin/api/v1/coupon-templates",
        json!({"terms": terms, "stock": {"kind": "finite", "total": 50}}),
    )
    .await;
    let template_id = template["template_id"].as_str().unwrap().to_owned();
    let coupon = ok(&t, &session, Method::POST, "/m/api/v1/coupons/claims", json!({"template_id": template_id})).await;
    let (coupon_id, coupon_qr) =
        (coupon["coupon_id"].as_str().unwrap().to_owned(), coupon["qr_payload"].as_str().unwrap().to_owned());
    let coupon_code = coupon["code"].as_str().unwrap_or_default().to_owned();
    let job = ok(
        &t,
        &a_owner,
        Method::POST,
        &format!("/admin/api/v1/coupon-templates/{template_id}/dispatches"),
        json!({"target": {"kind": "members", "member_ids": [member.member_id]}}),
    )
    .await;
    let job_id = job["job_id"].as_str().unwrap().to_owned();
    let product = ok(
        &t,
        &a_owner,
        Method::POST,
        "/admin/api/v1/mall/products",
        json!({"name": "A's mug", "description": "mug", "images": [], "price": {"kind": "points", "points": 10},
            "stock": {"kind": "finite", "total": 5}, "per_member_limit": null}),
    )
    .await;
    let product_id = product["product_id"].as_str().unwrap().to_owned();
    let order =
        ok(&t, &session, Method::POST, "/m/api/v1/mall/orders", json!({"product_id": product_id, "quantity": 1})).await;
    let (order_id, order_qr) =
        (order["order_id"].as_str().unwrap().to_owned(), order["qr_payload"].as_str().unwrap().to_owned());
    let order_no = order["order_no"].as_i64().unwrap().to_string();
    let now = t.app.clock.now();
    let lottery = json!({"name": "A's shake", "starts_at": now, "ends_at": now + chrono::Duration::days(1),
        "chances": {"lifetime": 3}, "prizes_per_member_max": 1,
        "slots": [{"prize": {"kind": "points", "points": 5}, "weight": 1, "stock": 10},
                  {"prize": {"kind": "thanks"}, "weight": 1}]});
    let campaign = ok(&t, &a_owner, Method::POST, "/admin/api/v1/campaigns", lottery.clone()).await;
    let campaign_id = campaign["campaign_id"].as_str().unwrap().to_owned();
    ok(&t, &a_owner, Method::POST, &format!("/admin/api/v1/campaigns/{campaign_id}/schedule"), json!({})).await;
    let card_no = member.card_no.to_string();
    let member_id = member.member_id.to_string();
    let before = footprint(&t, &a).await;

    // What must never appear in an answer to B.
    let mut secrets = vec![
        member_id.clone(),
        card_no.clone(),
        openid.as_str().to_owned(),
        template_id.clone(),
        coupon_id.clone(),
        product_id.clone(),
        order_id.clone(),
        job_id.clone(),
        campaign_id.clone(),
    ];
    if !coupon_code.is_empty() {
        secrets.push(coupon_code);
    }

    // ---- every admin operation of the document, with A's ids
    let doc: Value = t.http.get(t.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    let substitute = |path: &str| {
        path.replace("{member_id}", &member_id)
            .replace("{card_no}", &card_no)
            .replace("{openid}", openid.as_str())
            .replace("{template_id}", &template_id)
            .replace("{coupon_id}", &coupon_id)
            .replace("{product_id}", &product_id)
            .replace("{mall_order_id}", &order_id)
            .replace("{job_id}", &job_id)
            .replace("{campaign_id}", &campaign_id)
            .replace("{period_no}", "1")
            .replace("{item_id}", "00000000-0000-4000-8000-000000000001")
            .replace("{withdrawal_id}", "00000000-0000-4000-8000-000000000002")
            .replace("{username}", "ann")
            .replace("{appid}", "wx00000000000c0ffe")
            .replace("{order_id}", "rc0000000001")
    };
    let mut walked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        if !path.starts_with("/admin/api/v1/") || path.ends_with("/logout") || path.ends_with("/login") {
            continue;
        }
        for method in ["get", "put", "post", "delete", "patch"] {
            if item.get(method).is_none() {
                continue;
            }
            let concrete = substitute(path);
            assert!(!concrete.contains('{'), "no value for a parameter of {path}");
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let (status, text) = call(&t, &b_owner, method.clone(), &concrete, None).await;
            walked += 1;
            assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "{method} {concrete}: {text}");
            if path.contains('{') && !path.contains("{appid}") && !path.contains("{order_id}") {
                assert!(!status.is_success(), "{method} {concrete} answered B with {status}: {text}");
            }
            // B's operation log records B's own calls of this walk, A's ids in their paths included.
            if path.ends_with("/operation-log") {
                continue;
            }
            for secret in &secrets {
                assert!(!text.contains(secret.as_str()), "{method} {concrete} showed B {secret}: {text}");
            }
        }
    }
    assert!(walked > 50, "walked only {walked} operations");

    // ---- well-formed writes aimed at A's things
    let writes = [
        (
            Method::POST,
            format!("/admin/api/v1/members/{member_id}/cash/deposits"),
            json!({"amount_fen": 100, "reason": "x"}),
        ),
        (
            Method::POST,
            format!("/admin/api/v1/members/{member_id}/cash/charges"),
            json!({"amount_fen": 100, "reason": "x"}),
        ),
        (
            Method::POST,
            format!("/admin/api/v1/members/{member_id}/points/grants"),
            json!({"points": 10, "expiry": {"kind": "never"}, "reason": "x"}),
        ),
        (
            Method::POST,
            format!("/admin/api/v1/members/{member_id}/points/deductions"),
            json!({"points": 10, "reason": "x"}),
        ),
        (
            Method::PUT,
            format!("/admin/api/v1/members/{member_id}/card-level"),
            json!({"card_level": "gold", "reason": "x"}),
        ),
        (Method::POST, format!("/admin/api/v1/coupons/{coupon_id}/void"), json!({"reason": "x"})),
        (Method::POST, "/admin/api/v1/coupons/redemptions".to_owned(), json!({"code": coupon_qr, "store": "x"})),
        (Method::PUT, format!("/admin/api/v1/coupon-templates/{template_id}/enabled"), json!({"enabled": false})),
        (
            Method::PUT,
            format!("/admin/api/v1/coupon-templates/{template_id}/stock"),
            json!({"stock": {"kind": "unlimited"}}),
        ),
        (Method::POST, format!("/admin/api/v1/mall/orders/{order_id}/refund"), json!({"reason": "x"})),
        (
            Method::POST,
            format!("/admin/api/v1/mall/orders/{order_id}/price"),
            json!({"cash_due_fen": 1, "reason": "x"}),
        ),
        (
            Method::PUT,
            format!("/admin/api/v1/mall/products/{product_id}/commission"),
            json!({"commission": {"kind": "excluded"}}),
        ),
        (Method::PUT, format!("/admin/api/v1/distributors/{member_id}/level"), json!({"level": null})),
        (Method::POST, "/admin/api/v1/mall/deliveries".to_owned(), json!({"order": order_qr, "store": "x"})),
        (Method::POST, "/admin/api/v1/mall/deliveries".to_owned(), json!({"order": order_no, "store": "x"})),
        (
            Method::PUT,
            format!("/admin/api/v1/mall/products/{product_id}/price"),
            json!({"price": {"kind": "points", "points": 1}}),
        ),
        (Method::PUT, format!("/admin/api/v1/mall/products/{product_id}/on-sale"), json!({"on_sale": false})),
        (
            Method::PUT,
            format!("/admin/api/v1/mall/products/{product_id}/gift-coupon"),
            json!({"template_id": template_id}),
        ),
        (Method::PUT, format!("/admin/api/v1/campaigns/{campaign_id}/terms"), lottery),
        (Method::POST, format!("/admin/api/v1/campaigns/{campaign_id}/start"), json!({})),
        (Method::POST, format!("/admin/api/v1/campaigns/{campaign_id}/end"), json!({})),
        (
            Method::POST,
            format!("/admin/api/v1/campaigns/{campaign_id}/hand-overs"),
            json!({"award": {"kind": "shake", "member_id": member_id, "nonce": 1}}),
        ),
        (Method::POST, "/admin/api/v1/admin-users/ann/disable".to_owned(), json!({})),
        (Method::PUT, "/admin/api/v1/admin-users/ann/role".to_owned(), json!({"role": "owner"})),
        (
            Method::POST,
            "/admin/api/v1/admin-users/ann/password-reset".to_owned(),
            json!({"new_password": "another-long-password-1"}),
        ),
    ];
    for (method, path, body) in writes {
        let (status, text) = call(&t, &b_owner, method.clone(), &path, Some(body)).await;
        assert!(
            status.is_client_error() && status != StatusCode::UNPROCESSABLE_ENTITY,
            "{method} {path}: B must be refused for A's id, not for its body: {status} {text}"
        );
        for secret in &secrets {
            assert!(!text.contains(secret.as_str()), "{method} {path} showed B {secret}: {text}");
        }
    }
    // B's own product cannot take A's coupon template as its gift.
    let b_product = ok(
        &t,
        &b_owner,
        Method::POST,
        "/admin/api/v1/mall/products",
        json!({"name": "B's mug", "description": "mug", "images": [], "price": {"kind": "points", "points": 10},
            "stock": {"kind": "unlimited"}, "per_member_limit": null}),
    )
    .await;
    let path = format!("/admin/api/v1/mall/products/{}/gift-coupon", b_product["product_id"].as_str().unwrap());
    let (status, text) = call(&t, &b_owner, Method::PUT, &path, Some(json!({"template_id": template_id}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{text}");

    // ---- A is as it was, and its own owner still sees its things
    assert_eq!(footprint(&t, &a).await, before, "B's calls changed tenant A");
    let (status, _) = call(&t, &a_owner, Method::GET, &format!("/admin/api/v1/mall/orders/{order_id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    t.stop().await;
}
