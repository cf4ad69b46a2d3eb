//! Edge checks of the WeChat admin routes with an `App` without shards (see
//! `crate::tests`): a request that passes the edge reaches the application
//! and gets 404 `tenant_not_found`; one refused at the edge gets its own answer.

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use wxcm_domain::MemberId;

use crate::tests::{edge, request, send};
use crate::HttpSettings;

async fn call(method: Method, uri: &str, token: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
    let req = request(method, uri, token, Some("key-00000001"), body.map(|v| v.to_string()));
    let reply = send(&edge(HttpSettings::default()), req).await;
    (reply.status, reply.body)
}

const APPID: &str = "wx0123456789abcdef";

/// Every admin route with a valid request, and whether it writes (owner and
/// manager only) or reads (auditor too); staff never.
fn routes() -> Vec<(Method, String, Option<Value>, bool)> {
    let member = MemberId::new_random();
    let menu = json!({"button": [{"type": "click", "name": "Points", "key": "POINTS"}]});
    let points = json!({"initial_points": 10, "referral_level1_points": 5, "referral_level2_points": 2,
                        "expiry": {"kind": "never"}});
    let qr = json!({"appid": APPID, "scene": "poster-1", "expire_seconds": 3600});
    vec![
        (Method::GET, "/admin/api/v1/wechat/reply-rules".into(), None, false),
        (Method::PUT, "/admin/api/v1/wechat/reply-rules".into(), Some(json!({})), true),
        (Method::GET, "/admin/api/v1/tenant/points-rules".into(), None, false),
        (Method::PUT, "/admin/api/v1/tenant/points-rules".into(), Some(points), true),
        (Method::GET, "/admin/api/v1/wechat/qrcodes".into(), None, false),
        (Method::POST, "/admin/api/v1/wechat/qrcodes".into(), Some(qr), true),
        (Method::GET, format!("/admin/api/v1/wechat/menus/{APPID}"), None, false),
        (Method::PUT, format!("/admin/api/v1/wechat/menus/{APPID}"), Some(menu), true),
        (Method::POST, format!("/admin/api/v1/wechat/menus/{APPID}/publish"), None, true),
        (Method::GET, format!("/admin/api/v1/members/{member}/referral-link"), None, false),
    ]
}

#[tokio::test]
async fn roles_owner_and_manager_write_auditors_read_staff_nothing() {
    for (method, uri, body, writes) in routes() {
        for role in ["owner", "manager", "auditor", "staff"] {
            let (status, reply) = call(method.clone(), &uri, Some(role), body.clone()).await;
            let allowed = match role {
                "owner" | "manager" => true,
                "auditor" => !writes,
                _ => false,
            };
            if allowed {
                // Past the edge: the application has no shard for the tenant.
                let code = reply["error"]["code"].as_str().unwrap_or_default().to_owned();
                assert!(
                    code == "tenant_not_found" || code == "member_not_found",
                    "{role} {method} {uri}: {status} {reply}"
                );
            } else {
                assert_eq!(status, StatusCode::FORBIDDEN, "{role} {method} {uri}: {reply}");
            }
        }
        let (status, _) = call(method.clone(), &uri, None, body.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri}");
    }
}

#[tokio::test]
async fn authorization_start_is_for_owners_only() {
    let uri = "/admin/api/v1/wechat/component/authorizations";
    let body = json!({"redirect_uri": "https://crm.example.com/authorized"});
    for role in ["manager", "auditor", "staff"] {
        assert_eq!(call(Method::POST, uri, Some(role), Some(body.clone())).await.0, StatusCode::FORBIDDEN);
    }
    let (_, reply) = call(Method::POST, uri, Some("owner"), Some(body)).await;
    assert_eq!(reply["error"]["code"], "tenant_not_found");
    let (status, reply) = call(Method::POST, uri, Some("owner"), Some(json!({"redirect_uri": "ftp://x"}))).await;
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_redirect_uri"))
    );
}

#[tokio::test]
async fn bodies_are_validated_before_anything_runs() {
    let cases = [
        (
            Method::PUT,
            "/admin/api/v1/wechat/reply-rules".to_owned(),
            json!({"default": {"type": "text", "content": ""}}),
            "invalid_reply_rules",
        ),
        (Method::PUT, "/admin/api/v1/wechat/reply-rules".to_owned(), json!({"nope": 1}), "invalid_body"),
        (
            Method::PUT,
            "/admin/api/v1/tenant/points-rules".to_owned(),
            json!({"initial_points": -1, "referral_level1_points": 0, "referral_level2_points": 0,
                "expiry": {"kind": "never"}}),
            "invalid_points_rules",
        ),
        (
            Method::POST,
            "/admin/api/v1/wechat/qrcodes".to_owned(),
            json!({"appid": APPID, "scene": "s".repeat(65), "permanent": true}),
            "invalid_scene",
        ),
        (
            Method::POST,
            "/admin/api/v1/wechat/qrcodes".to_owned(),
            json!({"appid": APPID, "scene": "s", "expire_seconds": 59}),
            "invalid_expiry",
        ),
        (
            Method::POST,
            "/admin/api/v1/wechat/qrcodes".to_owned(),
            json!({"appid": "nope", "scene": "s", "permanent": true}),
            "invalid_appid",
        ),
        (
            Method::PUT,
            format!("/admin/api/v1/wechat/menus/{APPID}"),
            json!({"button": [{"type": "click", "name": "a", "key": "k"}, {"type": "click", "name": "b", "key": "k"},
                           {"type": "click", "name": "c", "key": "k"}, {"type": "click", "name": "d", "key": "k"}]}),
            "invalid_menu",
        ),
    ];
    for (method, uri, body, code) in cases {
        let (status, reply) = call(method.clone(), &uri, Some("owner"), Some(body)).await;
        assert_eq!((status, reply["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some(code)), "{uri}");
    }
    let (status, reply) = call(Method::GET, "/admin/api/v1/wechat/menus/not-an-appid", Some("owner"), None).await;
    assert_eq!((status, reply["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_appid")));
}

#[tokio::test]
async fn points_rules_need_an_idempotency_key() {
    let body = json!({"initial_points": 1, "referral_level1_points": 0, "referral_level2_points": 0,
                      "expiry": {"kind": "never"}});
    let req = request(Method::PUT, "/admin/api/v1/tenant/points-rules", Some("owner"), None, Some(body.to_string()));
    let reply = send(&edge(HttpSettings::default()), req).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
}
