//! The WeChat admin API end to end: the real application (Postgres) behind a
//! router built here with a `ClientOutbound` talking to the simulator
//! (served in-process), because the app harness wires no outbound client.

use reqwest::StatusCode;
use serde_json::{json, Value};
use wxcm_commands::ports::Role;
use wxcm_domain::{MemberId, OpenId, TenantId};
use wxcm_tests::wechat_world::{location, query_param, World, APPID, APP_SECRET, COMPONENT, FOLLOW_URL};

const TENANT: &str = "qr-cinema";

#[tokio::test]
async fn wechat_settings_qr_codes_menus_and_referrals_through_the_simulator() {
    use reqwest::Method;
    let w = World::new(TENANT).await;
    let owner = w.token(Role::Owner).await;
    let auditor = w.token(Role::Auditor).await;
    let staff = w.token(Role::Staff).await;
    let account = json!({"name": "Main", "token": "callback-token-123",
        "encoding_aes_key": "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", "app_secret": APP_SECRET});
    let (status, _) =
        w.send(Method::PUT, &format!("/admin/api/v1/tenant/official-accounts/{APPID}"), &owner, Some(account)).await;
    assert_eq!(status, StatusCode::OK);

    // Reply rules: empty at revision 0, then saved; auditors read, never write; staff nothing.
    let (status, rules) = w.send(Method::GET, "/admin/api/v1/wechat/reply-rules", &auditor, None).await;
    assert_eq!((status, rules["revision"].as_i64()), (StatusCode::OK, Some(0)));
    let new_rules = json!({"subscribe": {"type": "text", "content": "Welcome!"},
        "keywords": [{"keywords": ["points"], "match": "contains", "reply": {"type": "text", "content": "100"}}]});
    let (status, saved) =
        w.send(Method::PUT, "/admin/api/v1/wechat/reply-rules", &owner, Some(new_rules.clone())).await;
    assert_eq!(status, StatusCode::OK, "{saved}");
    assert!(saved["revision"].as_i64().unwrap() >= 1);
    assert_eq!(saved["rules"]["keywords"][0]["keywords"][0], "points");
    let (status, _) = w.send(Method::PUT, "/admin/api/v1/wechat/reply-rules", &auditor, Some(new_rules)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // `[]` once read as "no rules" and wiped them: a body that is not an object changes nothing.
    let (status, _) = w.send(Method::PUT, "/admin/api/v1/wechat/reply-rules", &owner, Some(json!([]))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (_, kept) = w.send(Method::GET, "/admin/api/v1/wechat/reply-rules", &auditor, None).await;
    assert_eq!(kept["rules"]["keywords"][0]["keywords"][0], "points", "rules kept: {kept}");
    let (status, _) = w.send(Method::GET, "/admin/api/v1/wechat/reply-rules", &staff, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Points rules go through the tenant aggregate.
    let points = json!({"initial_points": 100, "referral_level1_points": 50, "referral_level2_points": 20,
                        "expiry": {"kind": "days", "days": 365}});
    let (status, set) = w.send(Method::PUT, "/admin/api/v1/tenant/points-rules", &owner, Some(points)).await;
    assert_eq!((status, set["initial_points"].as_i64()), (StatusCode::OK, Some(100)), "{set}");
    let (_, got) = w.send(Method::GET, "/admin/api/v1/tenant/points-rules", &auditor, None).await;
    assert_eq!(got["expiry"], json!({"kind": "days", "days": 365}));
    assert_eq!(got["referral_level2_points"], 20);

    // A temporary scene QR code created at the simulator, then listed with its counts.
    let qr = json!({"appid": APPID, "scene": "poster-lobby", "name": "Lobby poster", "expire_seconds": 3600});
    let (status, created) = w.send(Method::POST, "/admin/api/v1/wechat/qrcodes", &owner, Some(qr)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert!(created["ticket"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(created["expires_at"].is_string());
    let meaning: Value = w
        .http
        .get(format!("{}/sandbox/qrcodes/{}", w.sandbox.base_url, created["ticket"].as_str().unwrap()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meaning["scene"], "poster-lobby");
    let (_, list) = w.send(Method::GET, "/admin/api/v1/wechat/qrcodes", &auditor, None).await;
    assert_eq!(list["items"][0]["scene"], "poster-lobby");
    assert_eq!((list["items"][0]["landings"].as_i64(), list["items"][0]["follows"].as_i64()), (Some(0), Some(0)));
    let unbound = json!({"appid": "wxffffffffffffffff", "scene": "x", "permanent": true});
    let (status, reply) = w.send(Method::POST, "/admin/api/v1/wechat/qrcodes", &owner, Some(unbound)).await;
    assert_eq!((status, reply["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("account_not_bound")));

    // Menus: saved, then published at the simulator.
    let menu_path = format!("/admin/api/v1/wechat/menus/{APPID}");
    let (status, _) = w.send(Method::GET, &menu_path, &owner, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let menu = json!({"button": [{"type": "click", "name": "Points", "key": "POINTS"},
        {"name": "More", "sub_button": [{"type": "view", "name": "Site", "url": "https://example.com"}]}]});
    let (status, saved) = w.send(Method::PUT, &menu_path, &owner, Some(menu.clone())).await;
    assert_eq!((status, &saved["published_at"]), (StatusCode::OK, &Value::Null), "{saved}");
    let (status, published) = w.send(Method::POST, &format!("{menu_path}/publish"), &owner, None).await;
    assert_eq!(status, StatusCode::OK, "{published}");
    assert!(published["published_at"].is_string());
    assert_eq!(published["menu"], menu);

    // Referral: link → OAuth at the simulator → callback → visit recorded → follow page.
    let (status, member) =
        w.send(Method::POST, "/admin/api/v1/members", &owner, Some(json!({"openid": "o_referrer_0001"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{member}");
    let member_id = MemberId::parse(member["member_id"].as_str().unwrap()).unwrap();
    let (status, link) =
        w.send(Method::GET, &format!("/admin/api/v1/members/{member_id}/referral-link"), &auditor, None).await;
    assert_eq!(status, StatusCode::OK);
    let link = link["url"].as_str().unwrap().to_owned();
    assert_eq!(link, w.url(&format!("/m/referral/{TENANT}/{member_id}")));
    let res = w.http.get(&link).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FOUND);
    let authorize = location(&res);
    assert!(authorize.contains("/connect/oauth2/authorize?") && authorize.contains("scope=snsapi_base"), "{authorize}");
    let state = query_param(&authorize, "state");
    let visitor = "o_visitor_000001";
    let code = w.sandbox_post("/sandbox/oauth/codes", json!({"appid": APPID, "openid": visitor})).await;
    let code = code["code"].as_str().unwrap().to_owned();
    let callback =
        reqwest::Url::parse_with_params(&w.url("/m/referral/callback"), [("code", &code), ("state", &state)]).unwrap();
    let res = w.http.get(callback.clone()).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FOUND);
    assert_eq!(location(&res), FOLLOW_URL.replace("{appid}", APPID));
    let tenant = TenantId::parse(TENANT).unwrap();
    let shard = w.t.app.router.route(&tenant).unwrap();
    let since = chrono::Utc::now() - chrono::Duration::days(1);
    let visit = shard.wechat.referral_visit(&tenant, &OpenId::parse(visitor).unwrap(), since).await.unwrap();
    assert_eq!(visit, Some(member_id));
    // A code works once.
    let res = w.http.get(callback).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);

    // Third-party authorization start: owner only; the pre-auth code maps back to the tenant.
    let body = json!({"redirect_uri": "https://crm.example.com/authorized"});
    let path = "/admin/api/v1/wechat/component/authorizations";
    let (status, _) = w.send(Method::POST, path, &auditor, Some(body.clone())).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // The component token needs the verify ticket WeChat pushes; record it as the ticket callback would.
    w.sandbox_post("/sandbox/component/ticket", json!({"component_appid": COMPONENT, "ticket": "ticket@@@admin"}))
        .await;
    w.center.record_verify_ticket(COMPONENT, "ticket@@@admin").await.unwrap();
    let (status, started) = w.send(Method::POST, path, &owner, Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{started}");
    let url = started["authorization_url"].as_str().unwrap();
    assert!(url.contains("/cgi-bin/componentloginpage?") && url.contains(COMPONENT), "{url}");
    assert_eq!(started["expires_in"], 600);
    let pre_auth_code = query_param(url, "pre_auth_code");
    let found = wxcm_commands::wechat::auth_request_tenant(&w.t.app, &pre_auth_code).await.unwrap();
    assert_eq!(found, Some(tenant));
    w.stop().await;
}
