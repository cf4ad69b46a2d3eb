//! Coupons end to end through the HTTP API, against the real Postgres, two
//! shards: exact stock under concurrent claims, the per-member limit, one
//! write-off per code, codes that cannot be altered or used at another
//! merchant, and bad input that changes nothing.

use futures::stream::{self, StreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};
use wxcm_commands::pay_flows::MemberSession;
use wxcm_commands::ports::Role;
use wxcm_commands::{auth, members, scheduler, tenants, CommandContext};
use wxcm_domain::member::{CardLevel, RegistrationSource};
use wxcm_domain::{Actor, AppId, MemberId, OpenId, TenantId};
use wxcm_tests::{spawn_app, spawn_app_with_projections, TestApp};

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

async fn get(t: &TestApp, token: &str, path: &str) -> (StatusCode, Value) {
    send(t.http.get(t.url(path)).bearer_auth(token)).await
}

/// A registered member with a member-API session token.
async fn member_with_session(t: &TestApp, m: &Merchant, n: usize) -> (MemberId, String) {
    let openid = OpenId::parse(&format!("oCoupon_{n:08}")).unwrap();
    let request = members::RegisterRequest {
        openid: Some(openid.clone()),
        source: RegistrationSource::Staff,
        card_level: CardLevel::standard(),
    };
    let key = members::system_key(&["test-member", m.tenant.as_str(), &n.to_string()]).unwrap();
    let ctx = CommandContext::new(m.tenant.clone(), key, "test".into());
    let (view, _) =
        members::register(&t.app, &m.tenant, request, Actor::Admin { username: "t".into() }, &ctx).await.unwrap();
    let token = format!("{}.{}", m.tenant, uuid::Uuid::new_v4().simple());
    let session = MemberSession {
        tenant_id: m.tenant.clone(),
        member_id: view.member_id,
        appid: AppId::parse("wx00000000000c0ffe").unwrap(),
        openid,
        expires_at: t.app.clock.now() + chrono::Duration::hours(2),
    };
    let shard = t.app.router.route(&m.tenant).unwrap();
    shard.pay.create_member_session(&auth::token_hash(&token), &session).await.unwrap();
    (view.member_id, token)
}

fn cash_terms(limit: Option<u16>) -> Value {
    json!({
        "name": "10 yuan off",
        "benefit": {"kind": "cash", "value_fen": 1000, "min_spend_fen": null},
        "validity": {"kind": "days_from_issue", "days": 30},
        "per_member_limit": limit,
        "audience": {"kind": "all_members"},
    })
}

async fn template(t: &TestApp, m: &Merchant, terms: Value, stock: Value) -> String {
    let (status, body) =
        post(t, &m.owner, "/admin/api/v1/coupon-templates", json!({"terms": terms, "stock": stock})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["template_id"].as_str().unwrap().to_owned()
}

async fn claim(t: &TestApp, session: &str, template_id: &str, key: String) -> (StatusCode, Value) {
    let req = t
        .http
        .post(t.url("/m/api/v1/coupons/claims"))
        .bearer_auth(session)
        .header("Idempotency-Key", key)
        .json(&json!({"template_id": template_id}));
    send(req).await
}

async fn count(t: &TestApp, shard: &str, sql: &str) -> i64 {
    let mut db = t.shard_db(shard).await;
    sqlx::query_scalar(sql).fetch_one(&mut db).await.unwrap()
}

async fn shard_of(t: &TestApp, tenant: &TenantId) -> String {
    t.app.router.route(tenant).unwrap().name.clone()
}

#[tokio::test]
async fn a_thousand_concurrent_claims_on_a_stock_of_100_issue_exactly_100() {
    let t = spawn_app().await;
    let m = merchant(&t, "mall-stock").await;
    let template_id = template(&t, &m, cash_terms(Some(1)), json!({"kind": "finite", "total": 100})).await;
    let members: Vec<(MemberId, String)> =
        stream::iter(0..1000).map(|n| member_with_session(&t, &m, n)).buffer_unordered(32).collect().await;

    let results: Vec<(StatusCode, Value)> = stream::iter(members.iter())
        .map(|(_, session)| claim(&t, session, &template_id, key()))
        .buffer_unordered(1000)
        .collect()
        .await;
    let issued = results.iter().filter(|(s, _)| *s == StatusCode::CREATED).count();
    let sold_out =
        results.iter().filter(|(s, b)| *s == StatusCode::CONFLICT && b["error"]["code"] == "sold_out").count();
    assert_eq!(
        (issued, sold_out),
        (100, 900),
        "{:?}",
        results.iter().find(|(s, b)| *s != StatusCode::CREATED && b["error"]["code"] != "sold_out")
    );

    let (_, view) = get(&t, &m.owner, &format!("/admin/api/v1/coupon-templates/{template_id}")).await;
    assert_eq!((view["issued"].as_u64(), view["stock_left"].as_u64()), (Some(100), Some(0)), "{view}");
    let shard = shard_of(&t, &m.tenant).await;
    assert_eq!(count(&t, &shard, "SELECT count(*) FROM events WHERE aggregate_type = 'coupon'").await, 100);
    assert_eq!(count(&t, &shard, "SELECT count(*) FROM coupon_codes").await, 100);
    let serials: i64 = count(
        &t,
        &shard,
        "SELECT count(DISTINCT (g ->> 'serial')) FROM events, jsonb_array_elements(payload -> 'CouponsIssued' -> 'grants') g
          WHERE aggregate_type = 'coupon_template'",
    )
    .await;
    assert_eq!(serials, 100, "serials 1..=100, each once");
    t.stop().await;
}

#[tokio::test]
async fn twenty_concurrent_claims_by_one_member_with_limit_one_issue_one() {
    let t = spawn_app().await;
    let m = merchant(&t, "mall-limit").await;
    let template_id = template(&t, &m, cash_terms(Some(1)), json!({"kind": "unlimited"})).await;
    let (member_id, session) = member_with_session(&t, &m, 1).await;
    let results: Vec<(StatusCode, Value)> =
        stream::iter(0..20).map(|_| claim(&t, &session, &template_id, key())).buffer_unordered(20).collect().await;
    let issued = results.iter().filter(|(s, _)| *s == StatusCode::CREATED).count();
    let refused = results.iter().filter(|(_, b)| b["error"]["code"] == "limit_reached").count();
    assert_eq!((issued, refused), (1, 19), "{results:?}");
    let (_, mine) = send(t.http.get(t.url("/m/api/v1/coupons")).bearer_auth(&session)).await;
    assert_eq!(mine["coupons"].as_array().unwrap().len(), 1);
    assert_eq!(mine["coupons"][0]["member_id"], member_id.to_string());
    t.stop().await;
}

#[tokio::test]
async fn unlimited_stock_with_a_limit_above_one_lets_a_member_claim_up_to_the_limit() {
    // A peer (yudao) treated "unlimited" as a stock of -1 and refused every claim past the first.
    let t = spawn_app().await;
    let m = merchant(&t, "mall-unlimited").await;
    let template_id = template(&t, &m, cash_terms(Some(3)), json!({"kind": "unlimited"})).await;
    let (_, session) = member_with_session(&t, &m, 1).await;
    for n in 1..=3 {
        let (status, body) = claim(&t, &session, &template_id, key()).await;
        assert_eq!(status, StatusCode::CREATED, "claim {n}: {body}");
        assert_eq!(body["serial"], n);
    }
    let (status, body) = claim(&t, &session, &template_id, key()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("limit_reached")));
    let (_, view) = get(&t, &m.owner, &format!("/admin/api/v1/coupon-templates/{template_id}")).await;
    assert_eq!((view["issued"].as_u64(), view["stock_left"].clone()), (Some(3), Value::Null));
    t.stop().await;
}

#[tokio::test]
async fn a_repeated_claim_key_returns_the_first_coupon_and_another_request_with_it_is_refused() {
    let t = spawn_app().await;
    let m = merchant(&t, "mall-keys").await;
    let first = template(&t, &m, cash_terms(None), json!({"kind": "unlimited"})).await;
    let second = template(&t, &m, cash_terms(None), json!({"kind": "unlimited"})).await;
    let (_, session) = member_with_session(&t, &m, 1).await;
    let k = key();
    let (s1, a) = claim(&t, &session, &first, k.clone()).await;
    let (s2, b) = claim(&t, &session, &first, k.clone()).await;
    assert_eq!((s1, s2), (StatusCode::CREATED, StatusCode::CREATED));
    assert_eq!(a["coupon_id"], b["coupon_id"], "the same coupon");
    let (s3, c) = claim(&t, &session, &second, k.clone()).await;
    assert_eq!((s3, c["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("idempotency_key_reused")));
    let shard = shard_of(&t, &m.tenant).await;
    assert_eq!(count(&t, &shard, "SELECT count(*) FROM events WHERE aggregate_type = 'coupon'").await, 1);
    t.stop().await;
}

async fn redeem(t: &TestApp, staff: &str, code: &str) -> (StatusCode, Value) {
    post(t, staff, "/admin/api/v1/coupons/redemptions", json!({"code": code, "store": "counter 1"})).await
}

#[tokio::test]
async fn ten_concurrent_write_offs_of_one_code_succeed_once() {
    let t = spawn_app().await;
    let m = merchant(&t, "mall-writeoff").await;
    let template_id = template(&t, &m, cash_terms(Some(1)), json!({"kind": "finite", "total": 5})).await;
    let (_, session) = member_with_session(&t, &m, 1).await;
    let (_, coupon) = claim(&t, &session, &template_id, key()).await;
    let payload = coupon["qr_payload"].as_str().unwrap().to_owned();
    assert!(payload.starts_with("wxcm:coupon:mall-writeoff:"), "{payload}");

    let results: Vec<(StatusCode, Value)> =
        stream::iter(0..10).map(|_| redeem(&t, &m.staff, &payload)).buffer_unordered(10).collect().await;
    let ok = results.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    let used = results.iter().filter(|(_, b)| b["error"]["code"] == "already_redeemed").count();
    assert_eq!((ok, used), (1, 9), "{results:?}");
    let coupon_id = coupon["coupon_id"].as_str().unwrap();
    let (_, view) = get(&t, &m.staff, &format!("/admin/api/v1/coupons/{coupon_id}")).await;
    assert_eq!(view["state"], "redeemed");
    // Typed by hand, lower case with separators: the same code, already used.
    let typed = coupon["code"].as_str().unwrap().to_lowercase();
    let typed = format!("{}-{}", &typed[..8], &typed[8..]);
    assert_eq!(redeem(&t, &m.staff, &typed).await.1["error"]["code"], "already_redeemed");
    t.stop().await;
}

#[tokio::test]
async fn altered_foreign_and_expired_codes_are_refused_and_change_nothing() {
    let t = spawn_app().await;
    let a = merchant(&t, "mall-a").await;
    let b = merchant(&t, "mall-b").await;
    let window = json!({
        "name": "weekend gift",
        "benefit": {"kind": "gift", "item": "popcorn"},
        "validity": {"kind": "window", "from": t.app.clock.now() - chrono::Duration::hours(1), "until": t.app.clock.now() + chrono::Duration::days(2)},
        "per_member_limit": 1,
        "audience": {"kind": "all_members"},
    });
    let ta = template(&t, &a, window.clone(), json!({"kind": "finite", "total": 10})).await;
    let tb = template(&t, &b, window, json!({"kind": "finite", "total": 10})).await;
    let (_, sa) = member_with_session(&t, &a, 1).await;
    let (_, sb) = member_with_session(&t, &b, 2).await;
    let (_, ca) = claim(&t, &sa, &ta, key()).await;
    let (_, cb) = claim(&t, &sb, &tb, key()).await;
    let code = ca["code"].as_str().unwrap().to_owned();

    let shard_a = shard_of(&t, &a.tenant).await;
    let before = count(&t, &shard_a, "SELECT count(*) FROM events WHERE tenant_id = 'mall-a'").await;
    // One character changed (to another valid character).
    let mut altered: Vec<char> = code.chars().collect();
    altered[5] = if altered[5] == 'Z' { 'Y' } else { 'Z' };
    let altered: String = altered.into_iter().collect();
    assert_eq!(redeem(&t, &a.staff, &altered).await.1["error"]["code"], "coupon_not_found");
    // Not a code at all.
    assert_eq!(redeem(&t, &a.staff, "not-a-code-UUUU").await.1["error"]["code"], "invalid_code");
    // The other merchant's coupon: its QR payload names its tenant; its bare code is unknown here.
    assert_eq!(
        redeem(&t, &a.staff, cb["qr_payload"].as_str().unwrap()).await.1["error"]["code"],
        "other_tenant_coupon"
    );
    assert_eq!(redeem(&t, &a.staff, cb["code"].as_str().unwrap()).await.1["error"]["code"], "coupon_not_found");
    // Another tenant's staff cannot use this tenant's coupon either.
    assert_eq!(redeem(&t, &b.staff, &code).await.1["error"]["code"], "coupon_not_found");
    // After the window: refused at write-off even before the expiry job ran.
    t.clock.advance(chrono::Duration::days(3));
    assert_eq!(redeem(&t, &a.staff, &code).await.1["error"]["code"], "coupon_expired");
    assert_eq!(
        count(&t, &shard_a, "SELECT count(*) FROM events WHERE tenant_id = 'mall-a'").await,
        before,
        "nothing written"
    );

    // The scheduler ends it with an event; then it is expired for good.
    let shard = t.app.router.route(&a.tenant).unwrap();
    scheduler::step(&t.app, &shard).await.unwrap();
    let coupon_id = ca["coupon_id"].as_str().unwrap();
    let (_, view) = get(&t, &a.owner, &format!("/admin/api/v1/coupons/{coupon_id}")).await;
    assert_eq!(view["state"], "expired");
    assert_eq!(count(&t, &shard_a, "SELECT count(*) FROM events WHERE tenant_id = 'mall-a'").await, before + 1);
    // And a claim after the window ended is refused.
    let (_, sa2) = member_with_session(&t, &a, 3).await;
    assert_eq!(claim(&t, &sa2, &ta, key()).await.1["error"]["code"], "window_ended");
    t.stop().await;
}

#[tokio::test]
async fn bad_template_input_is_refused_with_no_event() {
    let t = spawn_app().await;
    let m = merchant(&t, "mall-input").await;
    let path = "/admin/api/v1/coupon-templates";
    let cases = [
        json!({"terms": cash_terms(Some(1)), "stock": {"kind": "finite", "total": 0}}),
        json!({"terms": cash_terms(Some(1)), "stock": {"kind": "finite", "total": -5}}),
        json!({"terms": cash_terms(Some(1)), "stock": {"kind": "finite", "total": 10_000_001}}),
        json!({"terms": cash_terms(Some(0)), "stock": {"kind": "unlimited"}}),
        json!({"terms": cash_terms(Some(101)), "stock": {"kind": "unlimited"}}),
        json!({"terms": cash_terms(None), "stock": {"kind": "unlimited"}, "extra": 1}),
        json!([cash_terms(None), {"kind": "unlimited"}]),
        json!({"terms": {"name": "x", "benefit": {"kind": "cash", "value_fen": -1, "min_spend_fen": null},
               "validity": {"kind": "days_from_issue", "days": 1}, "per_member_limit": null,
               "audience": {"kind": "all_members"}}, "stock": {"kind": "unlimited"}}),
        json!({"terms": {"name": "x", "benefit": {"kind": "discount", "percent_off": 100, "cap_fen": null},
               "validity": {"kind": "days_from_issue", "days": 1}, "per_member_limit": null,
               "audience": {"kind": "all_members"}}, "stock": {"kind": "unlimited"}}),
    ];
    for body in cases {
        let (status, answer) = post(&t, &m.owner, path, body.clone()).await;
        assert!(
            status == StatusCode::UNPROCESSABLE_ENTITY || status == StatusCode::BAD_REQUEST,
            "{body}: {status} {answer}"
        );
    }
    // Staff may not create templates; unknown template and member are 404.
    let (status, _) =
        post(&t, &m.staff, path, json!({"terms": cash_terms(None), "stock": {"kind": "unlimited"}})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let shard = shard_of(&t, &m.tenant).await;
    assert_eq!(count(&t, &shard, "SELECT count(*) FROM events WHERE aggregate_type LIKE 'coupon%'").await, 0);
    let (_, session) = member_with_session(&t, &m, 1).await;
    let unknown = uuid::Uuid::new_v4().to_string();
    assert_eq!(claim(&t, &session, &unknown, key()).await.1["error"]["code"], "template_not_found");
    let id = template(&t, &m, cash_terms(Some(1)), json!({"kind": "finite", "total": 2})).await;
    let grant = json!({"member_id": uuid::Uuid::new_v4(), "reason": "sorry"});
    let (status, _) = post(&t, &m.owner, &format!("{path}/{id}/grants"), grant).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    t.stop().await;
}

#[tokio::test]
async fn edits_never_change_issued_coupons_and_a_disabled_template_issues_nothing() {
    let t = spawn_app().await;
    let m = merchant(&t, "mall-edit").await;
    let id = template(&t, &m, cash_terms(None), json!({"kind": "finite", "total": 3})).await;
    let (member_id, session) = member_with_session(&t, &m, 1).await;
    let (_, before) = claim(&t, &session, &id, key()).await;
    let mut terms = cash_terms(None);
    terms["name"] = json!("5 yuan off");
    terms["benefit"]["value_fen"] = json!(500);
    let res = t
        .http
        .put(t.url(&format!("/admin/api/v1/coupon-templates/{id}/terms")))
        .bearer_auth(&m.owner)
        .header("Idempotency-Key", key())
        .json(&terms)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let (_, mine) = get(&t, &m.owner, &format!("/admin/api/v1/members/{member_id}/coupons")).await;
    assert_eq!(mine["coupons"][0]["benefit"], before["benefit"], "the issued coupon keeps its terms");
    assert_eq!(mine["coupons"][0]["benefit"]["value_fen"], 1000);
    // Stock below what was issued is refused; disabling stops claims and grants.
    let put = |path: String, body: Value| {
        t.http.put(t.url(&path)).bearer_auth(&m.owner).header("Idempotency-Key", key()).json(&body).send()
    };
    let res =
        put(format!("/admin/api/v1/coupon-templates/{id}/stock"), json!({"stock": {"kind": "finite", "total": 0}}))
            .await
            .unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let res = put(format!("/admin/api/v1/coupon-templates/{id}/enabled"), json!({"enabled": false})).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(claim(&t, &session, &id, key()).await.1["error"]["code"], "template_disabled");
    let grant = json!({"member_id": member_id, "reason": "sorry"});
    let (status, body) = post(&t, &m.owner, &format!("/admin/api/v1/coupon-templates/{id}/grants"), grant).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("template_disabled")));
    // Void ends an active coupon once.
    let coupon_id = before["coupon_id"].as_str().unwrap();
    let void = json!({"reason": "issued by mistake"});
    let (status, _) = post(&t, &m.owner, &format!("/admin/api/v1/coupons/{coupon_id}/void"), void.clone()).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = post(&t, &m.owner, &format!("/admin/api/v1/coupons/{coupon_id}/void"), void).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("coupon_voided")));
    t.stop().await;
}

#[tokio::test]
async fn the_read_model_counts_coupons_per_template_and_per_day() {
    let t = spawn_app_with_projections().await;
    let m = merchant(&t, "mall-report").await;
    let id = template(&t, &m, cash_terms(Some(1)), json!({"kind": "finite", "total": 10})).await;
    let mut coupons = Vec::new();
    for n in 0..4 {
        let (_, session) = member_with_session(&t, &m, n).await;
        coupons.push(claim(&t, &session, &id, key()).await.1);
    }
    let (member_id, _) = member_with_session(&t, &m, 9).await;
    let grant = json!({"member_id": member_id, "reason": "apology"});
    let (status, _) = post(&t, &m.owner, &format!("/admin/api/v1/coupon-templates/{id}/grants"), grant).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(redeem(&t, &m.staff, coupons[0]["code"].as_str().unwrap()).await.0, StatusCode::OK);
    let void = json!({"reason": "mistake"});
    let coupon_id = coupons[1]["coupon_id"].as_str().unwrap();
    assert_eq!(post(&t, &m.owner, &format!("/admin/api/v1/coupons/{coupon_id}/void"), void).await.0, StatusCode::OK);
    t.catch_up().await;

    let (status, page) = get(&t, &m.owner, &format!("/admin/api/v1/coupon-templates/{id}/coupons?limit=3")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["counts"], json!({"active": 3, "held": 0, "redeemed": 1, "voided": 1, "expired": 0}));
    assert_eq!(page["coupons"].as_array().unwrap().len(), 3);
    assert_eq!(page["next_after"], 3);
    let (_, rest) = get(&t, &m.owner, &format!("/admin/api/v1/coupon-templates/{id}/coupons?after=3")).await;
    assert_eq!(
        rest["coupons"].as_array().unwrap().iter().map(|c| c["serial"].clone()).collect::<Vec<_>>(),
        [json!(4), json!(5)]
    );
    let (_, redeemed) = get(&t, &m.staff, &format!("/admin/api/v1/coupon-templates/{id}/coupons?state=redeemed")).await;
    assert_eq!(redeemed["coupons"][0]["ended_by"], "staff:clerk");
    assert_eq!(redeemed["coupons"][0]["store"], "counter 1");

    let day = wxcm_projections::daily::merchant_day(t.app.clock.now());
    let (_, report) = get(&t, &m.owner, &format!("/admin/api/v1/reports/daily-ops?from={day}&to={day}")).await;
    let value = |metric: &str, dimension: &str| {
        report["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["metric"] == metric && r["dimension"] == dimension)
            .map(|r| r["value"].clone())
    };
    assert_eq!(value("coupons_issued", "member_claim"), Some(json!(4)), "{report}");
    assert_eq!(value("coupons_issued", "operator_grant"), Some(json!(1)));
    assert_eq!(value("coupons_redeemed", ""), Some(json!(1)));
    assert_eq!(value("coupons_voided", ""), Some(json!(1)));

    let daily_rows = report["rows"].clone();
    // `wxcm audit verify` walks the coupon and template streams' hash chains too.
    assert!(wxcm_ops::audit::audit_verify(&t.settings, &m.tenant, true).await.unwrap());
    // `wxcm audit reconcile`: templates against their coupons, and rm_coupons, agree.
    let report = wxcm_ops::reconcile::reconcile(&t.settings, &m.tenant).await.unwrap();
    assert_eq!((report.coupons.templates, report.coupons.coupons), (1, 5));
    assert!(report.is_clean(), "{report:#?}");
    // A read-model row changed behind the projector's back is found.
    let shard = shard_of(&t, &m.tenant).await;
    let mut db = t.shard_db(&shard).await;
    sqlx::query("UPDATE rm_coupons SET state = 'active' WHERE tenant_id = 'mall-report' AND state = 'redeemed'")
        .execute(&mut db)
        .await
        .unwrap();
    let report = wxcm_ops::reconcile::reconcile(&t.settings, &m.tenant).await.unwrap();
    assert_eq!(report.coupons.differences.len(), 1, "{report:#?}");
    assert_eq!(report.coupons.differences[0].field, "rm_coupons");
    assert!(!report.is_clean());
    // `wxcm projections rebuild coupons --tenant`: the read model is made again from the events.
    wxcm_server::projection_ops::rebuild(&t.settings, "coupons", Some(&m.tenant)).await.unwrap();
    let report = wxcm_ops::reconcile::reconcile(&t.settings, &m.tenant).await.unwrap();
    assert!(report.is_clean(), "{report:#?}");
    let (_, again) = get(&t, &m.owner, &format!("/admin/api/v1/reports/daily-ops?from={day}&to={day}")).await;
    assert_eq!(again["rows"], daily_rows, "the coupon counters are counted again, once");
    // The live projector goes on from the rebuilt checkpoints.
    let (_, session) = member_with_session(&t, &m, 20).await;
    assert_eq!(claim(&t, &session, &id, key()).await.0, StatusCode::CREATED);
    t.catch_up().await;
    let (_, page) = get(&t, &m.owner, &format!("/admin/api/v1/coupon-templates/{id}/coupons")).await;
    assert_eq!(page["counts"], json!({"active": 4, "held": 0, "redeemed": 1, "voided": 1, "expired": 0}));
    t.stop().await;
}

#[tokio::test]
async fn a_dispatch_to_5000_members_interrupted_half_way_and_resumed_gives_each_exactly_one() {
    let t = spawn_app_with_projections().await;
    let m = merchant(&t, "mall-dispatch").await;
    let id = template(&t, &m, cash_terms(Some(1)), json!({"kind": "finite", "total": 10_000})).await;
    let register = |n: usize, level: &'static str| {
        let (t, tenant) = (&t, m.tenant.clone());
        async move {
            let request = members::RegisterRequest {
                openid: None,
                source: RegistrationSource::Staff,
                card_level: CardLevel::parse(level).unwrap(),
            };
            let key = members::system_key(&["dispatch-member", &n.to_string()]).unwrap();
            let ctx = CommandContext::new(tenant.clone(), key, "test".into());
            members::register(&t.app, &tenant, request, Actor::Admin { username: "t".into() }, &ctx).await.unwrap();
        }
    };
    stream::iter(0..5_000).map(|n| register(n, "gold")).buffer_unordered(32).collect::<Vec<_>>().await;
    stream::iter(5_000..5_100).map(|n| register(n, "standard")).buffer_unordered(32).collect::<Vec<_>>().await;
    t.catch_up().await;

    let body = json!({"target": {"kind": "filter", "filter": {"card_level": "gold"}}});
    let (status, job) = post(&t, &m.owner, &format!("/admin/api/v1/coupon-templates/{id}/dispatches"), body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let job_id = job["job_id"].as_str().unwrap().to_owned();
    let shard_name = shard_of(&t, &m.tenant).await;
    let shard = t.app.router.route(&m.tenant).unwrap();
    let mut db = t.shard_db(&shard_name).await;
    // Half-way, the last chunk's coupons committed but its progress was lost (a crash
    // between the two): the job goes back to where it was before that chunk.
    loop {
        let before = progress(&mut db, &job_id).await;
        scheduler::step(&t.app, &shard).await.unwrap();
        let after = progress(&mut db, &job_id).await;
        if after.1 >= 2_500 {
            sqlx::query("UPDATE coupon_dispatch_jobs SET cursor = $2, processed = $3, issued = $4 WHERE job_id = $1")
                .bind(uuid::Uuid::parse_str(&job_id).unwrap())
                .bind(&before.0)
                .bind(before.1)
                .bind(before.2)
                .execute(&mut db)
                .await
                .unwrap();
            break;
        }
    }
    for _ in 0..100 {
        if progress(&mut db, &job_id).await.3 == "done" {
            break;
        }
        scheduler::step(&t.app, &shard).await.unwrap();
    }
    let (_, report) = get(&t, &m.owner, &format!("/admin/api/v1/coupon-dispatches/{job_id}")).await;
    assert_eq!(report["state"], "done", "{report}");
    assert_eq!((report["processed"].as_i64(), report["issued"].as_i64()), (Some(5_000), Some(5_000)), "{report}");
    assert_eq!(report["refused"], json!({}));
    let (coupons, holders): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT member_id) FROM coupon_codes WHERE template_id = $1")
            .bind(&id)
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!((coupons, holders), (5_000, 5_000), "every gold member exactly one coupon");
    let (_, view) = get(&t, &m.owner, &format!("/admin/api/v1/coupon-templates/{id}")).await;
    assert_eq!(view["issued"], 5_000);
    // The same key is the same job; a list with a duplicate is refused.
    let again = json!({"target": {"kind": "members", "member_ids": [uuid::Uuid::nil(), uuid::Uuid::nil()]}});
    let (status, body) = post(&t, &m.owner, &format!("/admin/api/v1/coupon-templates/{id}/dispatches"), again).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_dispatch")));
    t.stop().await;
}

async fn progress(db: &mut sqlx::PgConnection, job_id: &str) -> (Option<String>, i64, i64, String) {
    sqlx::query_as("SELECT cursor, processed, issued, state FROM coupon_dispatch_jobs WHERE job_id = $1")
        .bind(uuid::Uuid::parse_str(job_id).unwrap())
        .fetch_one(db)
        .await
        .unwrap()
}

#[tokio::test]
async fn welcome_coupons_go_to_every_member_registered_while_on_once() {
    let t = spawn_app().await;
    let m = merchant(&t, "mall-welcome").await;
    let (before, _) = member_with_session(&t, &m, 1).await;
    let id = template(&t, &m, cash_terms(Some(1)), json!({"kind": "finite", "total": 2})).await;
    let put = |body: Value| {
        t.http
            .put(t.url(&format!("/admin/api/v1/coupon-templates/{id}/welcome")))
            .bearer_auth(&m.owner)
            .header("Idempotency-Key", key())
            .json(&body)
            .send()
    };
    let res = put(json!({"welcome": true})).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<Value>().await.unwrap()["welcome"], true);
    let newcomers: Vec<MemberId> =
        stream::iter(2..5).then(|n| member_with_session(&t, &m, n)).map(|(id, _)| id).collect().await;
    let shard = t.app.router.route(&m.tenant).unwrap();
    // Twice: the due work runs once per registration, and again changes nothing.
    scheduler::step(&t.app, &shard).await.unwrap();
    scheduler::step(&t.app, &shard).await.unwrap();
    let coupons_of = |member: MemberId| {
        let (t, owner) = (&t, m.owner.clone());
        async move {
            get(t, &owner, &format!("/admin/api/v1/members/{member}/coupons")).await.1["coupons"]
                .as_array()
                .unwrap()
                .len()
        }
    };
    assert_eq!(coupons_of(before).await, 0, "registered before the template was a welcome coupon");
    // A stock of 2 for three newcomers: two get one, the third is refused (sold out), nothing fails.
    let counts: Vec<usize> = stream::iter(newcomers.clone()).then(coupons_of).collect().await;
    assert_eq!(counts.iter().sum::<usize>(), 2, "{counts:?}");
    assert!(counts.iter().all(|c| *c <= 1));
    let shard_name = shard_of(&t, &m.tenant).await;
    assert_eq!(count(&t, &shard_name, "SELECT count(*) FROM due_work WHERE kind = 'welcome_coupons'").await, 0);
    // Switched off: later members get nothing (and no due work is written).
    assert_eq!(put(json!({"welcome": false})).await.unwrap().status(), StatusCode::OK);
    let (later, _) = member_with_session(&t, &m, 9).await;
    assert_eq!(count(&t, &shard_name, "SELECT count(*) FROM due_work WHERE kind = 'welcome_coupons'").await, 0);
    scheduler::step(&t.app, &shard).await.unwrap();
    assert_eq!(coupons_of(later).await, 0);
    t.stop().await;
}

#[tokio::test]
async fn a_member_card_code_finds_the_member_and_is_refused_forged_late_or_elsewhere() {
    let t = spawn_app().await;
    let a = merchant(&t, "mall-card").await;
    let b = merchant(&t, "mall-card-b").await;
    let (member_id, session) = member_with_session(&t, &a, 1).await;
    let (status, code) = send(t.http.get(t.url("/m/api/v1/card-code")).bearer_auth(&session)).await;
    assert_eq!(status, StatusCode::OK, "{code}");
    let payload = code["payload"].as_str().unwrap().to_owned();
    assert!(payload.starts_with("wxcm:card:mall-card:"), "{payload}");
    let lookup = |token: String, code: String| {
        let t = &t;
        async move {
            send(
                t.http
                    .post(t.url("/admin/api/v1/members/card-code-lookups"))
                    .bearer_auth(token)
                    .json(&json!({"code": code})),
            )
            .await
        }
    };
    let (status, member) = lookup(a.staff.clone(), payload.clone()).await;
    assert_eq!(status, StatusCode::OK, "{member}");
    assert_eq!(member["member_id"], member_id.to_string());
    // One character of the MAC changed, another member's id with this MAC, another merchant.
    let mut forged = payload.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == '0' { '1' } else { '0' });
    assert_eq!(lookup(a.staff.clone(), forged).await.1["error"]["code"], "card_code_not_found");
    let (other, _) = member_with_session(&t, &a, 2).await;
    let swapped = payload.replace(&member_id.to_string(), &other.to_string());
    assert_eq!(lookup(a.staff.clone(), swapped).await.1["error"]["code"], "card_code_not_found");
    assert_eq!(lookup(b.staff.clone(), payload.clone()).await.1["error"]["code"], "other_tenant_card");
    assert_eq!(lookup(a.staff.clone(), "not a card".into()).await.1["error"]["code"], "invalid_card_code");
    // Five minutes later the code is stale.
    t.clock.advance(chrono::Duration::seconds(301));
    assert_eq!(lookup(a.staff.clone(), payload).await.1["error"]["code"], "card_code_expired");
    t.stop().await;
}

#[tokio::test]
async fn the_member_api_answers_401_without_a_session_whatever_else_is_wrong() {
    let t = spawn_app().await;
    // No session, no key, a body of the wrong shape: the session is checked first.
    for path in ["/m/api/v1/coupons/claims", "/m/api/v1/recharges"] {
        let (status, body) = send(t.http.post(t.url(path)).json(&json!([1, 2]))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {body}");
        let (status, _) =
            send(t.http.post(t.url(path)).bearer_auth("acme.not-a-session").header("Idempotency-Key", "x")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
    }
    for path in ["/m/api/v1/coupons", "/m/api/v1/coupon-templates", "/m/api/v1/card-code", "/m/api/v1/me"] {
        assert_eq!(send(t.http.get(t.url(path))).await.0, StatusCode::UNAUTHORIZED, "{path}");
    }
    t.stop().await;
}

/// The channel campaign work issues prizes through: one coupon per campaign
/// and award however often it is asked (concurrently too), the stock counts
/// it, a sold-out template refuses (the campaign records that), and the
/// coupon says where it came from.
#[tokio::test]
async fn a_campaign_prize_is_issued_once_per_award_and_counts_against_the_stock() {
    use wxcm_commands::coupons::{self, CouponOpError};
    use wxcm_domain::coupon::{IssueChannel, IssueRefusal, TemplateId};
    use wxcm_domain::Reference;

    let t = spawn_app().await;
    let m = merchant(&t, "coupon-prizes").await;
    let template_id = template(&t, &m, cash_terms(Some(1)), json!({"kind": "finite", "total": 2})).await;
    let template = TemplateId::parse(&template_id).unwrap();
    let (winner, _) = member_with_session(&t, &m, 1).await;
    let (second, _) = member_with_session(&t, &m, 2).await;
    let campaign = uuid::Uuid::new_v4();
    let actor = Actor::System { job: "campaigns".into() };
    let award = |s: &str| Reference::parse(s).unwrap();

    // Ten concurrent asks for the same award: one coupon.
    let asks = (0..10).map(|_| {
        coupons::issue_prize(&t.app, &m.tenant, template, winner, campaign, award("draw 1 winner 1"), actor.clone())
    });
    let issued: Vec<_> = futures::future::join_all(asks).await.into_iter().map(Result::unwrap).collect();
    assert!(issued.iter().all(|c| c.coupon_id == issued[0].coupon_id), "one coupon for one award");
    assert_eq!(
        issued[0].channel,
        IssueChannel::CampaignPrize { campaign_id: campaign, award: award("draw 1 winner 1") }
    );
    assert_eq!(
        issued[0].coupon_id,
        coupons::prize_coupon_id(&m.tenant, template, winner, campaign, &award("draw 1 winner 1"))
    );
    // A prize is a grant: the template's per-member limit of 1 does not stop a second award.
    let again =
        coupons::issue_prize(&t.app, &m.tenant, template, winner, campaign, award("draw 2 winner 1"), actor.clone())
            .await
            .unwrap();
    assert_ne!(again.coupon_id, issued[0].coupon_id);
    // The stock of 2 is gone: a third award is refused as sold out, and nothing is written.
    let refused =
        coupons::issue_prize(&t.app, &m.tenant, template, second, campaign, award("draw 3 winner 1"), actor.clone())
            .await;
    assert!(matches!(refused, Err(CouponOpError::Refused(IssueRefusal::SoldOut))), "{refused:?}");
    let (status, body) = get(&t, &m.owner, &format!("/admin/api/v1/coupon-templates/{template_id}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!((body["issued"].as_u64(), body["stock_left"].as_u64()), (Some(2), Some(0)), "{body}");
    // Another tenant's template is not found.
    let other = merchant(&t, "coupon-prizes-b").await;
    let (member_b, _) = member_with_session(&t, &other, 4).await;
    let foreign =
        coupons::issue_prize(&t.app, &other.tenant, template, member_b, campaign, award("draw 1 winner 1"), actor)
            .await;
    assert!(matches!(foreign, Err(CouponOpError::NotFound(_))), "{foreign:?}");
    t.stop().await;
}
