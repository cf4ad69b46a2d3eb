//! Refund requests (售后) of mall orders, end to end through the HTTP API and
//! the scheduler: the member asks, admins see the open requests and approve
//! (the order is refunded) or reject (with a reason); while a request is open
//! the order's commissions do not settle: at the settlement time an open
//! request leaves them pending, a rejection settles them at max(due, now), an
//! approval reverses them. Idempotent by key, role-checked, tenant-scoped;
//! bad bodies are 4xx with nothing stored.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use wxcm_domain::MemberId;
use wxcm_tests::distribution::{buy, deliver, member, send, send_keyed, shop, step, Shop, HOLD_DAYS};
use wxcm_tests::{spawn_app, TestApp};

/// Distributor `d` (designated) and buyer `c` bound to it.
async fn pair(t: &TestApp, s: &Shop, tag: &str) -> (MemberId, String) {
    let (d, _) = member(t, s, &format!("oD_{tag}_000001"), 0).await;
    let (_, c_session) = member(t, s, &format!("oC_{tag}_000001"), 1_000_000).await;
    let (status, body) =
        send(t, Method::POST, &s.owner, &format!("/admin/api/v1/distributors/{d}/designate"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let code = body["code"].as_str().unwrap().to_owned();
    let (status, body) =
        send(t, Method::POST, &c_session, "/m/api/v1/distribution/bindings", Some(json!({"code": code}))).await;
    assert!(status.is_success(), "{body}");
    (d, c_session)
}

/// (pending, settled, reversed + clawed back) of the distributor.
async fn commission_figures(t: &TestApp, s: &Shop, distributor: MemberId) -> (i64, i64, i64) {
    let path = format!("/admin/api/v1/distributors/{distributor}/commissions");
    let (status, v) = send(t, Method::GET, &s.owner, &path, None).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let f = |n: &str| v["account"][format!("{n}_fen")].as_i64().unwrap_or_else(|| panic!("{n} in {v}"));
    (f("pending"), f("settled"), f("reversed") + f("clawed_back"))
}

async fn request_refund(t: &TestApp, session: &str, order: &str, key: &str) -> (StatusCode, Value) {
    let path = format!("/m/api/v1/mall/orders/{order}/refund-request");
    send_keyed(t, Method::POST, session, &path, Some(json!({"reason": "the lid is cracked"})), key).await
}

async fn open_requests(t: &TestApp, token: &str) -> Vec<String> {
    let (status, body) = send(t, Method::GET, token, "/admin/api/v1/mall/orders?refund_request=open", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["orders"].as_array().unwrap().iter().map(|o| o["order_id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn an_open_refund_request_blocks_settlement_a_rejection_settles_and_an_approval_reverses() {
    let t = spawn_app().await;
    let s = shop(&t, "refund-req").await;
    let (d, c) = pair(&t, &s, "rr").await;

    // Delivered, then the member asks for a refund (idempotent by key).
    let first = buy(&t, &s, &c).await;
    deliver(&t, &s, &first).await;
    step(&t, &s).await;
    assert_eq!(commission_figures(&t, &s, d).await, (1_000, 0, 0));
    let key = format!("rr-{}", uuid::Uuid::new_v4());
    let (status, order) = request_refund(&t, &c, &first, &key).await;
    assert_eq!(status, StatusCode::OK, "{order}");
    assert_eq!(order["refund_request"]["status"], "open", "{order}");
    assert_eq!(order["refund_request"]["request_no"], 1, "{order}");
    assert_eq!(order["status"], "delivered", "{order}");
    let (status, again) = request_refund(&t, &c, &first, &key).await;
    assert_eq!((status, &again["refund_request"]), (StatusCode::OK, &order["refund_request"]), "a replay");
    let (status, body) = request_refund(&t, &c, &first, &format!("rr-{}", uuid::Uuid::new_v4())).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("refund_request_open")), "{body}");
    assert_eq!(open_requests(&t, &s.owner).await, vec![first.clone()]);

    // At the settlement time the open request leaves the commission pending.
    t.clock.advance(chrono::Duration::days(HOLD_DAYS) + chrono::Duration::minutes(1));
    step(&t, &s).await;
    assert_eq!(commission_figures(&t, &s, d).await, (1_000, 0, 0), "not settled while the request is open");

    // Rejected (past the due time): settles now. Staff may not decide.
    let reject = format!("/admin/api/v1/mall/orders/{first}/refund-request/reject");
    let (status, _) = send(&t, Method::POST, &s.staff, &reject, Some(json!({"reason": "no photo"}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, order) = send(&t, Method::POST, &s.owner, &reject, Some(json!({"reason": "no photo"}))).await;
    assert_eq!(status, StatusCode::OK, "{order}");
    assert_eq!(order["refund_request"]["status"], "rejected", "{order}");
    assert_eq!(order["refund_request"]["resolution"], "no photo", "{order}");
    assert!(open_requests(&t, &s.owner).await.is_empty());
    step(&t, &s).await;
    assert_eq!(commission_figures(&t, &s, d).await, (0, 1_000, 0), "settled after the rejection");

    // Another order: a request open at the settlement time, then approved → refunded, reversed.
    let second = buy(&t, &s, &c).await;
    deliver(&t, &s, &second).await;
    let (status, _) = request_refund(&t, &c, &second, &format!("rr-{}", uuid::Uuid::new_v4())).await;
    assert_eq!(status, StatusCode::OK);
    t.clock.advance(chrono::Duration::days(HOLD_DAYS) + chrono::Duration::minutes(1));
    step(&t, &s).await;
    assert_eq!(commission_figures(&t, &s, d).await, (1_000, 1_000, 0));
    let approve = format!("/admin/api/v1/mall/orders/{second}/refund-request/approve");
    let approve_key = format!("rr-{}", uuid::Uuid::new_v4());
    let (status, order) = send_keyed(&t, Method::POST, &s.owner, &approve, None, &approve_key).await;
    assert_eq!(status, StatusCode::OK, "{order}");
    assert_eq!(
        (order["status"].as_str(), order["refund_request"]["status"].as_str()),
        (Some("refunded"), Some("approved"))
    );
    let (status, replay) = send_keyed(&t, Method::POST, &s.owner, &approve, None, &approve_key).await;
    assert_eq!((status, &replay["status"]), (StatusCode::OK, &order["status"]), "a replay");
    step(&t, &s).await;
    assert_eq!(commission_figures(&t, &s, d).await, (0, 1_000, 1_000), "reversed by the refund");
    let (status, body) = send(&t, Method::POST, &s.owner, &approve, None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    // Rejected before it was due: settles at the due time, not before.
    let third = buy(&t, &s, &c).await;
    deliver(&t, &s, &third).await;
    let (status, _) = request_refund(&t, &c, &third, &format!("rr-{}", uuid::Uuid::new_v4())).await;
    assert_eq!(status, StatusCode::OK);
    let reject = format!("/admin/api/v1/mall/orders/{third}/refund-request/reject");
    let (status, _) = send(&t, Method::POST, &s.owner, &reject, Some(json!({"reason": "used"}))).await;
    assert_eq!(status, StatusCode::OK);
    t.clock.advance(chrono::Duration::days(HOLD_DAYS - 1));
    step(&t, &s).await;
    assert_eq!(commission_figures(&t, &s, d).await, (1_000, 1_000, 1_000), "not yet due");
    t.clock.advance(chrono::Duration::days(1) + chrono::Duration::minutes(1));
    step(&t, &s).await;
    assert_eq!(commission_figures(&t, &s, d).await, (0, 2_000, 1_000), "due and settled once");
}

#[tokio::test]
async fn refund_requests_are_the_members_own_tenant_scoped_and_bad_bodies_store_nothing() {
    let t = spawn_app().await;
    let s = shop(&t, "refund-a").await;
    let other = shop(&t, "refund-b").await;
    let (_, c) = pair(&t, &s, "ra").await;
    let (_, stranger) = member(&t, &s, "oX_ra_000001", 0).await;
    let (_, foreign) = member(&t, &other, "oY_rb_000001", 0).await;
    let order = buy(&t, &s, &c).await;

    // Bad bodies: 4xx, nothing stored.
    let path = format!("/m/api/v1/mall/orders/{order}/refund-request");
    for bad in [
        json!({}),
        json!({"reason": ""}),
        json!({"reason": "x".repeat(201)}),
        json!({"reason": 5}),
        json!({"reason": "ok", "extra": 1}),
        json!(["the lid"]),
        json!({"reason": "bell\u{7}"}),
    ] {
        let (status, body) = send(&t, Method::POST, &c, &path, Some(bad.clone())).await;
        assert!(status.is_client_error(), "{bad} → {status} {body}");
    }
    let (status, view) = send(&t, Method::GET, &c, &format!("/m/api/v1/mall/orders/{order}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(view["refund_request"], Value::Null, "{view}");
    let reject = format!("/admin/api/v1/mall/orders/{order}/refund-request/reject");
    let (status, body) = send(&t, Method::POST, &s.owner, &reject, Some(json!({"reason": "no"}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("no_refund_request")));

    // Another member's order, another tenant's session: 404.
    let (status, _) = request_refund(&t, &stranger, &order, "rr-stranger-0001").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = request_refund(&t, &foreign, &order, "rr-foreign-00001").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Opened; another tenant's admin neither sees nor decides it.
    let (status, _) = request_refund(&t, &c, &order, "rr-own-000000001").await;
    assert_eq!(status, StatusCode::OK);
    assert!(open_requests(&t, &other.owner).await.is_empty());
    for path in [format!("/admin/api/v1/mall/orders/{order}/refund-request/approve")] {
        let (status, _) = send(&t, Method::POST, &other.owner, &path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    let (status, _) = send(&t, Method::POST, &other.owner, &reject, Some(json!({"reason": "no"}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // The rejection's bad bodies store nothing either.
    for bad in [json!({}), json!({"reason": ""}), json!([1])] {
        let (status, _) = send(&t, Method::POST, &s.owner, &reject, Some(bad.clone())).await;
        assert!(status.is_client_error(), "{bad}");
    }
    let (status, view) = send(&t, Method::GET, &s.owner, &format!("/admin/api/v1/mall/orders/{order}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(view["refund_request"]["status"], "open", "{view}");
    assert_eq!(open_requests(&t, &s.owner).await, vec![order]);
}
