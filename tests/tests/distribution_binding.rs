//! Distribution end to end (issue 15, items 1 and 2): enrolment under each
//! policy and the admin's decisions; bindings through a distributor's code,
//! promotion link (WeChat OAuth at the simulator) and scene QR (a subscribe
//! callback pushed by the simulator) under each binding mode; self-binding
//! and cycles refused, also when the closing bindings race; duplicate
//! arrivals idempotent; one new-member reward per openid; roles and tenants.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use wxcm_commands::auth;
use wxcm_commands::pay_flows::MemberSession;
use wxcm_commands::ports::Role;
use wxcm_domain::{AppId, MemberId, OpenId, TenantId};
use wxcm_simulator::wechat::callbacks::{MessageKind, PushMessage, PushRequest, Pusher};
use wxcm_tests::wechat_world::{location, query_param, World, APPID, APP_SECRET};

const TENANT: &str = "dist-cinema";
const TOKEN: &str = "callback-token-123";
const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

struct Shop {
    w: World,
    owner: String,
}

async fn shop(tenant: &str) -> Shop {
    let w = World::new(tenant).await;
    let owner = w.token(Role::Owner).await;
    let account = json!({"name": "Main", "token": TOKEN, "encoding_aes_key": AES_KEY, "app_secret": APP_SECRET});
    let (status, body) =
        w.send(Method::PUT, &format!("/admin/api/v1/tenant/official-accounts/{APPID}"), &owner, Some(account)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    Shop { w, owner }
}

/// A member registered through the admin API with `openid`, and a member-API session.
async fn member(s: &Shop, openid: &str) -> (MemberId, String) {
    let (status, created) =
        s.w.send(Method::POST, "/admin/api/v1/members", &s.owner, Some(json!({"openid": openid}))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let member_id = MemberId::parse(created["member_id"].as_str().unwrap()).unwrap();
    let tenant = TenantId::parse(&s.w.tenant).unwrap();
    let token = format!("{}.{}", s.w.tenant, uuid::Uuid::new_v4().simple());
    let session = MemberSession {
        tenant_id: tenant.clone(),
        member_id,
        appid: AppId::parse(APPID).unwrap(),
        openid: OpenId::parse(openid).unwrap(),
        expires_at: s.w.t.app.clock.now() + chrono::Duration::days(400),
    };
    let shard = s.w.t.app.router.route(&tenant).unwrap();
    shard.pay.create_member_session(&auth::token_hash(&token), &session).await.unwrap();
    (member_id, token)
}

async fn settings(s: &Shop, body: Value) {
    let (status, saved) = s.w.send(Method::PUT, "/admin/api/v1/distribution/settings", &s.owner, Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{saved}");
}

fn settings_body(enrolment: Value, binding_mode: Value, reward: Option<i64>) -> Value {
    json!({"enrolment": enrolment, "binding_mode": binding_mode, "commission_depth": 2,
        "default_rates": {"first_bps": 1000, "second_bps": 500}, "new_member_reward_points": reward})
}

async fn admin(s: &Shop, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    s.w.send(method, path, &s.owner, body).await
}

/// Designates `member` (any policy) and returns its code.
async fn designate(s: &Shop, member: MemberId) -> String {
    let (status, d) = admin(s, Method::POST, &format!("/admin/api/v1/distributors/{member}/designate"), None).await;
    assert_eq!(status, StatusCode::OK, "{d}");
    assert_eq!(d["standing"], "active", "{d}");
    d["code"].as_str().unwrap().to_owned()
}

/// The member (by session) binds with `code` under `key`.
async fn bind_with_key(s: &Shop, session: &str, code: &str, key: &str) -> (StatusCode, Value) {
    let res =
        s.w.http
            .post(s.w.url("/m/api/v1/distribution/bindings"))
            .bearer_auth(session)
            .header("Idempotency-Key", key)
            .json(&json!({"code": code}))
            .send()
            .await
            .unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn bind(s: &Shop, session: &str, code: &str) -> (StatusCode, Value) {
    bind_with_key(s, session, code, &format!("bind-{}", uuid::Uuid::new_v4().simple())).await
}

fn code_of(reply: &(StatusCode, Value)) -> Option<&str> {
    reply.1["error"]["code"].as_str()
}

async fn binding(s: &Shop, member: MemberId) -> Value {
    let (status, b) =
        admin(s, Method::GET, &format!("/admin/api/v1/members/{member}/distribution-binding"), None).await;
    assert_eq!(status, StatusCode::OK, "{b}");
    b
}

fn bound_to(b: &Value) -> Option<String> {
    b["current"]["distributor_id"].as_str().map(str::to_owned)
}

async fn points(s: &Shop, member: MemberId) -> i64 {
    let (status, m) = admin(s, Method::GET, &format!("/admin/api/v1/members/{member}"), None).await;
    assert_eq!(status, StatusCode::OK, "{m}");
    m["points"].as_i64().unwrap()
}

#[tokio::test]
async fn each_enrolment_policy_and_the_admins_decisions() {
    let s = shop(TENANT).await;
    // Defaults until saved; bad shapes change nothing.
    let (status, defaults) = admin(&s, Method::GET, "/admin/api/v1/distribution/settings", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(defaults["enrolment"]["kind"], "application", "{defaults}");
    assert_eq!(defaults["binding_mode"]["kind"], "first_wins", "{defaults}");
    let good = settings_body(json!({"kind": "application"}), json!({"kind": "first_wins"}), None);
    for (field, value) in [
        ("default_rates", json!({"first_bps": 9000, "second_bps": 1001})),
        ("binding_mode", json!({"kind": "valid_for", "days": 0})),
        ("binding_mode", json!({"kind": "sometimes"})),
        ("commission_depth", json!(3)),
        ("new_member_reward_points", json!(0)),
        ("enrolment", json!({"kind": "spending_threshold", "paid_fen": -5})),
        ("surprise", json!(true)),
    ] {
        let mut bad = good.clone();
        bad[field] = value;
        let (status, reply) = admin(&s, Method::PUT, "/admin/api/v1/distribution/settings", Some(bad)).await;
        assert!(status.is_client_error(), "{field}: {status} {reply}");
    }
    let (_, after) = admin(&s, Method::GET, "/admin/api/v1/distribution/settings", None).await;
    assert_eq!(after, defaults);

    // Application: apply → queue → approve; another rejected with a reason, applies again.
    settings(&s, good.clone()).await;
    let (alice, alice_s) = member(&s, "o_dist_alice_001").await;
    let (bob, bob_s) = member(&s, "o_dist_bob_00001").await;
    let (status, applied) = s.w.send(Method::POST, "/m/api/v1/distribution/application", &alice_s, None).await;
    assert_eq!((status, applied["standing"].as_str()), (StatusCode::OK, Some("applied")), "{applied}");
    let (status, again) = s.w.send(Method::POST, "/m/api/v1/distribution/application", &alice_s, None).await;
    assert_eq!((status, again["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("application_pending")));
    s.w.send(Method::POST, "/m/api/v1/distribution/application", &bob_s, None).await;
    let (status, queue) = admin(&s, Method::GET, "/admin/api/v1/distributor-applications", None).await;
    assert_eq!(status, StatusCode::OK);
    let queued: Vec<&str> =
        queue["distributors"].as_array().unwrap().iter().map(|d| d["member_id"].as_str().unwrap()).collect();
    assert_eq!(queued.len(), 2, "{queue}");
    assert!(queued.contains(&alice.to_string().as_str()) && queued.contains(&bob.to_string().as_str()));
    // A code is not usable before approval.
    let alice_code = applied["code"].as_str().unwrap().to_owned();
    let (_, carol_s) = member(&s, "o_dist_carol_001").await;
    let reply = bind(&s, &carol_s, &alice_code).await;
    assert_eq!((reply.0, code_of(&reply)), (StatusCode::NOT_FOUND, Some("distributor_code_not_found")));

    // Approving is idempotent by key: the same key replays the first answer; another key finds
    // nothing to approve.
    let approve = |key: &'static str| {
        let s = &s;
        async move {
            let res =
                s.w.http
                    .post(s.w.url(&format!("/admin/api/v1/distributors/{alice}/approve")))
                    .bearer_auth(&s.owner)
                    .header("Idempotency-Key", key)
                    .send()
                    .await
                    .unwrap();
            (res.status(), res.json::<Value>().await.unwrap())
        }
    };
    let (status, approved) = approve("approve-alice-1").await;
    assert_eq!((status, approved["standing"].as_str()), (StatusCode::OK, Some("active")), "{approved}");
    let (status, replayed) = approve("approve-alice-1").await;
    assert_eq!((status, replayed["standing"].as_str()), (StatusCode::OK, Some("active")), "{replayed}");
    let (status, twice) = admin(&s, Method::POST, &format!("/admin/api/v1/distributors/{alice}/approve"), None).await;
    assert_eq!((status, twice["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("wrong_standing")));
    let reject = format!("/admin/api/v1/distributors/{bob}/reject");
    let (status, reply) = admin(&s, Method::POST, &reject, Some(json!({"reason": "  "}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{reply}");
    let (status, rejected) = admin(&s, Method::POST, &reject, Some(json!({"reason": "profile incomplete"}))).await;
    assert_eq!(status, StatusCode::OK, "{rejected}");
    assert_eq!(
        (rejected["standing"].as_str(), rejected["reason"].as_str()),
        (Some("rejected"), Some("profile incomplete"))
    );
    let (_, queue) = admin(&s, Method::GET, "/admin/api/v1/distributor-applications", None).await;
    assert_eq!(queue["distributors"].as_array().unwrap().len(), 0, "{queue}");
    let (status, reapplied) = s.w.send(Method::POST, "/m/api/v1/distribution/application", &bob_s, None).await;
    assert_eq!((status, reapplied["standing"].as_str()), (StatusCode::OK, Some("applied")));
    // The member sees their own standing.
    let (status, mine) = s.w.send(Method::GET, "/m/api/v1/distribution/me", &bob_s, None).await;
    assert_eq!((status, mine["standing"].as_str()), (StatusCode::OK, Some("applied")), "{mine}");

    // Suspend with a reason: nobody binds to alice; reinstate: they do.
    let suspend = format!("/admin/api/v1/distributors/{alice}/suspend");
    let (status, suspended) = admin(&s, Method::POST, &suspend, Some(json!({"reason": "fraud review"}))).await;
    assert_eq!((status, suspended["standing"].as_str()), (StatusCode::OK, Some("suspended")), "{suspended}");
    let reply = bind(&s, &carol_s, &alice_code).await;
    assert_eq!(reply.0, StatusCode::NOT_FOUND, "{}", reply.1);
    let (status, reply) = s.w.send(Method::GET, "/m/api/v1/distribution/promotion", &alice_s, None).await;
    assert_eq!((status, reply["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("not_distributor")));
    let (status, reinstated) =
        admin(&s, Method::POST, &format!("/admin/api/v1/distributors/{alice}/reinstate"), None).await;
    assert_eq!((status, reinstated["standing"].as_str()), (StatusCode::OK, Some("active")));
    let reply = bind(&s, &carol_s, &alice_code).await;
    assert_eq!((reply.0, reply.1["outcome"].as_str()), (StatusCode::OK, Some("bound")), "{}", reply.1);

    // Designation only: applying is refused, the admin designates.
    settings(&s, settings_body(json!({"kind": "designation"}), json!({"kind": "first_wins"}), None)).await;
    let (dave, dave_s) = member(&s, "o_dist_dave_0001").await;
    let (status, reply) = s.w.send(Method::POST, "/m/api/v1/distribution/application", &dave_s, None).await;
    assert_eq!((status, reply["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("designation_only")));
    designate(&s, dave).await;

    // Everyone: applying enrols at once; so does asking for one's promotion.
    settings(&s, settings_body(json!({"kind": "everyone"}), json!({"kind": "first_wins"}), None)).await;
    let (_, erin_s) = member(&s, "o_dist_erin_0001").await;
    let (status, erin) = s.w.send(Method::POST, "/m/api/v1/distribution/application", &erin_s, None).await;
    assert_eq!(
        (status, erin["standing"].as_str(), erin["route"].as_str()),
        (StatusCode::OK, Some("active"), Some("everyone"))
    );
    let (frank, frank_s) = member(&s, "o_dist_frank_001").await;
    let (status, promo) = s.w.send(Method::GET, "/m/api/v1/distribution/promotion", &frank_s, None).await;
    assert_eq!(status, StatusCode::OK, "{promo}");
    let code = promo["code"].as_str().unwrap();
    assert_eq!(promo["link"].as_str().unwrap(), s.w.url(&format!("/m/distribution/{TENANT}/{code}")));
    assert!(promo["qr"]["ticket"].as_str().is_some_and(|t| !t.is_empty()), "{promo}");
    // The QR is made once and kept.
    let (_, promo_again) = s.w.send(Method::GET, "/m/api/v1/distribution/promotion", &frank_s, None).await;
    assert_eq!(promo_again["qr"], promo["qr"]);
    let (_, frank_view) = admin(&s, Method::GET, &format!("/admin/api/v1/distributors/{frank}"), None).await;
    assert_eq!(frank_view["standing"], "active", "{frank_view}");

    // Spending threshold: cash paid for mall orders, net of refunds.
    settings(
        &s,
        settings_body(json!({"kind": "spending_threshold", "paid_fen": 3000}), json!({"kind": "first_wins"}), None),
    )
    .await;
    let (status, product) = admin(
        &s,
        Method::POST,
        "/admin/api/v1/mall/products",
        Some(json!({"name": "Popcorn", "price": {"kind": "fen", "amount_fen": 3000}, "stock": {"kind": "unlimited"}})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{product}");
    let product = product["product_id"].as_str().unwrap().to_owned();
    let buy = |session: String| {
        let s = &s;
        let product = product.clone();
        async move {
            let body = json!({"product_id": product, "quantity": 1, "pay_with": "balance"});
            let (status, order) = s.w.send(Method::POST, "/m/api/v1/mall/orders", &session, Some(body)).await;
            assert_eq!(status, StatusCode::CREATED, "{order}");
            let order = order["order_id"].as_str().unwrap().to_owned();
            let path = format!("/m/api/v1/mall/orders/{order}/payment");
            let (status, paid) = s.w.send(Method::POST, &path, &session, Some(json!({}))).await;
            assert_eq!(status, StatusCode::OK, "{paid}");
            order
        }
    };
    let (gina, gina_s) = member(&s, "o_dist_gina_0001").await;
    let (hank, hank_s) = member(&s, "o_dist_hank_0001").await;
    for m in [gina, hank] {
        let path = format!("/admin/api/v1/members/{m}/cash/deposits");
        let (status, body) =
            admin(&s, Method::POST, &path, Some(json!({"amount_fen": 5000, "reason": "top up"}))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, reply) = s.w.send(Method::POST, "/m/api/v1/distribution/application", &gina_s, None).await;
    assert_eq!((status, reply["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("below_threshold")));
    buy(gina_s.clone()).await;
    let (status, gina_d) = s.w.send(Method::POST, "/m/api/v1/distribution/application", &gina_s, None).await;
    assert_eq!((status, gina_d["route"].as_str()), (StatusCode::OK, Some("spending_threshold")), "{gina_d}");
    // A refunded order does not count.
    let order = buy(hank_s.clone()).await;
    let refund = format!("/admin/api/v1/mall/orders/{order}/refund");
    let (status, body) = admin(&s, Method::POST, &refund, Some(json!({"reason": "cold"}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, reply) = s.w.send(Method::POST, "/m/api/v1/distribution/application", &hank_s, None).await;
    assert_eq!((status, reply["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("below_threshold")), "{reply}");
    let _ = hank;

    // The list filters by standing; roles are checked.
    let (status, active) = admin(&s, Method::GET, "/admin/api/v1/distributors?standing=active&limit=100", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(active["distributors"].as_array().unwrap().len(), 5, "{active}"); // alice, dave, erin, frank, gina
    let (status, _) = admin(&s, Method::GET, "/admin/api/v1/distributors?limit=0", None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let staff = s.w.token(Role::Staff).await;
    let (status, _) = s.w.send(Method::GET, "/admin/api/v1/distributors", &staff, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let auditor = s.w.token(Role::Auditor).await;
    let (status, _) = s.w.send(Method::GET, "/admin/api/v1/distributors", &auditor, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) =
        s.w.send(Method::POST, &format!("/admin/api/v1/distributors/{bob}/approve"), &auditor, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    s.w.stop().await;
}

/// A person opens `link`: OAuth at the simulator, back to the callback; the page's `data-outcome`.
async fn visit(w: &World, link: &str, visitor: &str) -> (StatusCode, String) {
    let res = w.http.get(link).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FOUND, "{link}");
    let authorize = location(&res);
    let state = query_param(&authorize, "state");
    let redirect = query_param(&authorize, "redirect_uri");
    let code = w.sandbox_post("/sandbox/oauth/codes", json!({"appid": APPID, "openid": visitor})).await;
    let code = code["code"].as_str().unwrap().to_owned();
    let callback = reqwest::Url::parse_with_params(&redirect, [("code", &code), ("state", &state)]).unwrap();
    let res = w.http.get(callback).send().await.unwrap();
    let status = res.status();
    let page = res.text().await.unwrap();
    let outcome = page.split("data-outcome=\"").nth(1).and_then(|rest| rest.split('"').next()).unwrap_or(&page);
    (status, outcome.to_owned())
}

#[tokio::test]
async fn binding_modes_routes_self_cycles_and_duplicates() {
    let s = shop(TENANT).await;
    settings(&s, settings_body(json!({"kind": "designation"}), json!({"kind": "first_wins"}), None)).await;
    let (a, a_s) = member(&s, "o_bind_a_000001").await;
    let (b, b_s) = member(&s, "o_bind_b_000001").await;
    let (c, c_s) = member(&s, "o_bind_c_000001").await;
    let (a_code, b_code, c_code) = (designate(&s, a).await, designate(&s, b).await, designate(&s, c).await);

    // No self-binding.
    let reply = bind(&s, &a_s, &a_code).await;
    assert_eq!((reply.0, code_of(&reply)), (StatusCode::CONFLICT, Some("self_binding")));
    // A cycle of length 3 is refused: a under b, b under c, then c under a would close it.
    assert_eq!(bind(&s, &a_s, &b_code).await.0, StatusCode::OK);
    assert_eq!(bind(&s, &b_s, &c_code).await.0, StatusCode::OK);
    let reply = bind(&s, &c_s, &a_code).await;
    assert_eq!((reply.0, code_of(&reply)), (StatusCode::CONFLICT, Some("binding_cycle")), "{}", reply.1);
    assert_eq!(bound_to(&binding(&s, c).await), None);
    // Two levels of subordinates: c's level 1 is b, level 2 is a.
    let (status, l1) = admin(&s, Method::GET, &format!("/admin/api/v1/distributors/{c}/subordinates"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(l1["subordinates"][0]["member_id"], b.to_string(), "{l1}");
    let (_, l2) = s.w.send(Method::GET, "/m/api/v1/distribution/subordinates?level=2", &c_s, None).await;
    assert_eq!(
        (l2["level"].as_u64(), l2["subordinates"][0]["member_id"].as_str()),
        (Some(2), Some(a.to_string().as_str()))
    );
    assert_eq!(l2["subordinates"][0]["bound_to"], b.to_string());
    let (status, _) = s.w.send(Method::GET, "/m/api/v1/distribution/subordinates?level=3", &c_s, None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    // First wins: another distributor's code is refused; the same again is idempotent.
    let (m1, m1_s) = member(&s, "o_bind_m1_00001").await;
    let first = bind_with_key(&s, &m1_s, &a_code.to_lowercase(), "m1-first-key").await;
    assert_eq!((first.0, first.1["outcome"].as_str()), (StatusCode::OK, Some("bound")), "{}", first.1);
    let replay = bind_with_key(&s, &m1_s, &a_code, "m1-first-key").await;
    assert_eq!(replay.1["outcome"], "replayed");
    assert_eq!(replay.1["binding"]["binding_id"], first.1["binding"]["binding_id"]);
    let reused = bind_with_key(&s, &m1_s, &b_code, "m1-first-key").await;
    assert_eq!((reused.0, code_of(&reused)), (StatusCode::CONFLICT, Some("idempotency_key_reused")));
    let again = bind(&s, &m1_s, &a_code).await;
    assert_eq!(again.1["outcome"], "already_bound");
    let other = bind(&s, &m1_s, &b_code).await;
    assert_eq!((other.0, code_of(&other)), (StatusCode::CONFLICT, Some("already_bound")));
    let history = binding(&s, m1).await;
    assert_eq!(bound_to(&history), Some(a.to_string()));
    assert_eq!(history["history"].as_array().unwrap().len(), 1, "{history}");
    let reply = bind(&s, &m1_s, "not-a-code!").await;
    assert_eq!(reply.0, StatusCode::NOT_FOUND);
    let res =
        s.w.http
            .post(s.w.url("/m/api/v1/distribution/bindings"))
            .bearer_auth(&m1_s)
            .header("Idempotency-Key", "m1-bad-body-01")
            .json(&json!({"code": 5}))
            .send()
            .await
            .unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);

    // The scene QR: a follow through `dist_<code>` binds the new follower (once, however often pushed).
    let pusher = Pusher::new().unwrap();
    let mut message = PushMessage::new(MessageKind::Subscribe, "o_bind_follower");
    message.scene = Some(format!("dist_{b_code}"));
    let request = PushRequest::safe(&s.w.base, APPID, TOKEN, AES_KEY, message);
    for _ in 0..2 {
        let replies = pusher.push(&request).await.unwrap();
        assert_eq!(replies[0].status, Some(200), "{replies:?}");
    }
    let tenant = TenantId::parse(TENANT).unwrap();
    let follower = MemberId::for_openid(&tenant, &OpenId::parse("o_bind_follower").unwrap());
    let h = binding(&s, follower).await;
    assert_eq!((bound_to(&h), h["current"]["route"].as_str()), (Some(b.to_string()), Some("qr")), "{h}");
    assert_eq!(h["history"].as_array().unwrap().len(), 1, "{h}");
    // Validity window: refused within 30 days, replaces after.
    settings(&s, settings_body(json!({"kind": "designation"}), json!({"kind": "valid_for", "days": 30}), None)).await;
    let (m2, m2_s) = member(&s, "o_bind_m2_00001").await;
    assert_eq!(bind(&s, &m2_s, &a_code).await.0, StatusCode::OK);
    s.w.t.clock.advance(chrono::Duration::days(29));
    let reply = bind(&s, &m2_s, &b_code).await;
    assert_eq!((reply.0, code_of(&reply)), (StatusCode::CONFLICT, Some("already_bound")));
    s.w.t.clock.advance(chrono::Duration::days(2));
    let reply = bind(&s, &m2_s, &b_code).await;
    assert_eq!((reply.0, reply.1["outcome"].as_str()), (StatusCode::OK, Some("bound")), "{}", reply.1);
    assert_eq!(reply.1["binding"]["replaces"], a.to_string());
    let h = binding(&s, m2).await;
    assert_eq!((bound_to(&h), h["history"].as_array().map(Vec::len)), (Some(b.to_string()), Some(2)), "{h}");

    // Last wins: every arrival through another distributor rebinds; the history keeps all.
    settings(&s, settings_body(json!({"kind": "designation"}), json!({"kind": "last_wins"}), None)).await;
    let (m3, m3_s) = member(&s, "o_bind_m3_00001").await;
    assert_eq!(bind(&s, &m3_s, &a_code).await.0, StatusCode::OK);
    assert_eq!(bind(&s, &m3_s, &b_code).await.1["outcome"], "bound");
    let h = binding(&s, m3).await;
    assert_eq!(bound_to(&h), Some(b.to_string()));
    let routes: Vec<(&str, &str)> = h["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["distributor_id"].as_str().unwrap(), e["route"].as_str().unwrap()))
        .collect();
    assert_eq!(routes, vec![(b.to_string().as_str(), "code"), (a.to_string().as_str(), "code")]);

    // The promotion link: OAuth at the simulator makes the visitor a member and binds them.
    let (status, promo) = s.w.send(Method::GET, "/m/api/v1/distribution/promotion", &c_s, None).await;
    assert_eq!(status, StatusCode::OK, "{promo}");
    let link = promo["link"].as_str().unwrap().to_owned();
    assert_eq!(visit(&s.w, &link, "o_bind_visitor1").await, (StatusCode::OK, "bound".into()));
    assert_eq!(visit(&s.w, &link, "o_bind_visitor1").await, (StatusCode::OK, "already_bound".into()));
    assert_eq!(visit(&s.w, &link, "o_bind_c_000001").await, (StatusCode::OK, "self_binding".into()));
    let tenant = TenantId::parse(TENANT).unwrap();
    let visitor = MemberId::for_openid(&tenant, &OpenId::parse("o_bind_visitor1").unwrap());
    let h = binding(&s, visitor).await;
    assert_eq!((bound_to(&h), h["current"]["route"].as_str()), (Some(c.to_string()), Some("link")), "{h}");
    let res = s.w.http.get(s.w.url(&format!("/m/distribution/{TENANT}/ZZZZZZZZ"))).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let res = s.w.http.get(s.w.url("/m/distribution/callback?code=x&state=forged")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);

    s.w.stop().await;
}

#[tokio::test]
async fn racing_bindings_never_close_a_cycle() {
    const ROUNDS: usize = 20;
    let s = shop(TENANT).await;
    settings(&s, settings_body(json!({"kind": "designation"}), json!({"kind": "first_wins"}), None)).await;
    let round = |i: usize| {
        let s = &s;
        async move {
            let (x, x_s) = member(s, &format!("o_race_x_{i:05}")).await;
            let (y, y_s) = member(s, &format!("o_race_y_{i:05}")).await;
            let (z, z_s) = member(s, &format!("o_race_z_{i:05}")).await;
            let (x_code, y_code, z_code) = (designate(s, x).await, designate(s, y).await, designate(s, z).await);
            // x under y; then y under z and z under x race: together they would close x → y → z → x.
            assert_eq!(bind(s, &x_s, &y_code).await.0, StatusCode::OK);
            let (yz, zx) = tokio::join!(bind(s, &y_s, &z_code), bind(s, &z_s, &x_code));
            let ok = [&yz, &zx].iter().filter(|r| r.0 == StatusCode::OK).count();
            let cycles = [&yz, &zx].iter().filter(|r| code_of(r) == Some("binding_cycle")).count();
            assert_eq!((ok, cycles), (1, 1), "round {i}: {yz:?} {zx:?}");
            (x, y, z)
        }
    };
    let rounds = futures::future::join_all((0..ROUNDS).map(round)).await;
    // What was written holds no ring: each round's three members have at most two bindings.
    for (x, y, z) in rounds {
        let bound = [x, y, z];
        let mut n = 0;
        for m in bound {
            if bound_to(&binding(&s, m).await).is_some() {
                n += 1;
            }
        }
        assert_eq!(n, 2);
    }
    s.w.stop().await;
}

#[tokio::test]
async fn a_person_earns_a_distributor_one_new_member_reward_ever() {
    let s = shop(TENANT).await;
    settings(&s, settings_body(json!({"kind": "designation"}), json!({"kind": "last_wins"}), Some(10))).await;
    let (a, _) = member(&s, "o_reward_a_00001").await;
    let (b, _) = member(&s, "o_reward_b_00001").await;
    let (a_code, b_code) = (designate(&s, a).await, designate(&s, b).await);
    let (m, m_s) = member(&s, "o_reward_m_00001").await;
    let first = bind(&s, &m_s, &a_code).await;
    assert_eq!((first.1["outcome"].as_str(), first.1["new_member_reward"].as_bool()), (Some("bound"), Some(true)));
    assert_eq!(points(&s, a).await, 10);
    // Rebinding (last wins) earns the new distributor nothing: the person is not new.
    let second = bind(&s, &m_s, &b_code).await;
    assert_eq!((second.1["outcome"].as_str(), second.1["new_member_reward"].as_bool()), (Some("bound"), Some(false)));
    assert_eq!(points(&s, b).await, 0);
    // The member is deleted and comes back with the same openid: wxcm keeps member streams (the
    // member id derives from the openid), so "deleted" here is the member's distribution data
    // removed by hand; the reward's fact is keyed by the openid and stays.
    let tenant = TenantId::parse(TENANT).unwrap();
    let shard = s.w.t.app.router.route(&tenant).unwrap().name.clone();
    let mut db = s.w.t.shard_db(&shard).await;
    sqlx::query("DELETE FROM distribution_current_bindings WHERE tenant_id = $1 AND member_id = $2")
        .bind(TENANT)
        .bind(m.to_string())
        .execute(&mut db)
        .await
        .unwrap();
    let back = bind(&s, &m_s, &a_code).await;
    assert_eq!((back.1["outcome"].as_str(), back.1["new_member_reward"].as_bool()), (Some("bound"), Some(false)));
    assert_eq!(points(&s, a).await, 10);
    let rewards: i64 = sqlx::query_scalar("SELECT count(*) FROM distribution_rewards WHERE tenant_id = $1")
        .bind(TENANT)
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(rewards, 1);
    s.w.stop().await;
}

#[tokio::test]
async fn another_tenant_sees_and_binds_nothing_of_this_one() {
    let s = shop(TENANT).await;
    settings(&s, settings_body(json!({"kind": "everyone"}), json!({"kind": "first_wins"}), None)).await;
    let (a, a_s) = member(&s, "o_cross_a_00001").await;
    let (status, d) = s.w.send(Method::POST, "/m/api/v1/distribution/application", &a_s, None).await;
    assert_eq!(status, StatusCode::OK, "{d}");
    let code = d["code"].as_str().unwrap().to_owned();

    // A second tenant in the same system: its admin and members reach nothing of the first.
    let tenant2 = TenantId::parse("dist-other").unwrap();
    let key = wxcm_commands::members::system_key(&["test-tenant", tenant2.as_str()]).unwrap();
    let ctx = wxcm_commands::CommandContext::new(tenant2.clone(), key, "test".into());
    wxcm_commands::tenants::create(
        &s.w.t.app,
        &tenant2,
        "Other",
        wxcm_domain::Actor::Admin { username: "t".into() },
        &ctx,
    )
    .await
    .unwrap();
    auth::create_admin(&s.w.t.app, &tenant2, "owner2", wxcm_tests::wechat_world::PASSWORD, Role::Owner).await.unwrap();
    let res = s
        .w
        .http
        .post(s.w.url("/admin/api/v1/login"))
        .json(&json!({"tenant_id": "dist-other", "username": "owner2", "password": wxcm_tests::wechat_world::PASSWORD}))
        .send()
        .await
        .unwrap();
    let owner2 = res.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned();
    let (status, _) = s.w.send(Method::GET, &format!("/admin/api/v1/distributors/{a}"), &owner2, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) =
        s.w.send(
            Method::POST,
            &format!("/admin/api/v1/distributors/{a}/suspend"),
            &owner2,
            Some(json!({"reason": "not yours"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, list) = s.w.send(Method::GET, "/admin/api/v1/distributors", &owner2, None).await;
    assert_eq!((status, list["distributors"].as_array().map(Vec::len)), (StatusCode::OK, Some(0)));
    let (status, _) =
        s.w.send(Method::GET, &format!("/admin/api/v1/members/{a}/distribution-binding"), &owner2, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A member of the other tenant cannot bind with this tenant's code.
    let (status, created) =
        s.w.send(Method::POST, "/admin/api/v1/members", &owner2, Some(json!({"openid": "o_cross_z_00001"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let z = MemberId::parse(created["member_id"].as_str().unwrap()).unwrap();
    let token = format!("dist-other.{}", uuid::Uuid::new_v4().simple());
    let session = MemberSession {
        tenant_id: tenant2.clone(),
        member_id: z,
        appid: AppId::parse(APPID).unwrap(),
        openid: OpenId::parse("o_cross_z_00001").unwrap(),
        expires_at: s.w.t.app.clock.now() + chrono::Duration::days(1),
    };
    let shard = s.w.t.app.router.route(&tenant2).unwrap();
    shard.pay.create_member_session(&auth::token_hash(&token), &session).await.unwrap();
    let reply = bind(&s, &token, &code).await;
    assert_eq!((reply.0, code_of(&reply)), (StatusCode::NOT_FOUND, Some("distributor_code_not_found")));
    // And the first tenant's distributor still stands, untouched.
    let (_, d) = admin(&s, Method::GET, &format!("/admin/api/v1/distributors/{a}"), None).await;
    assert_eq!(d["standing"], "active");
    s.w.stop().await;
}
