use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::Request;
use tower::ServiceExt;

use super::push::{refund_notification, transaction_notification};
use super::*;
use wxcm_protocol::pay::v2;
use wxcm_protocol::wechat::xml::{self, XmlError, XmlLimits};

const V2_KEY: &str = "192006250b4c09247ec02edce69f6a2d";
const V3_KEY: &str = "0123456789abcdef0123456789abcdef";

fn registration() -> MerchantRegistration {
    MerchantRegistration {
        mch_id: "1900000109".into(),
        appid: "wx0123456789abcdef".into(),
        api_v2_key: Some(V2_KEY.into()),
        api_v3_key: Some(V3_KEY.into()),
        merchant_public_key_pem: None,
    }
}

fn sandbox() -> PaySandbox {
    let s = PaySandbox::new().unwrap();
    s.register_merchant(registration()).unwrap();
    s
}

fn paid_order(api: PayApi, sign_type: SignType) -> Order {
    let now = Utc::now();
    Order {
        api,
        sign_type,
        mch_id: "1900000109".into(),
        appid: "wx0123456789abcdef".into(),
        out_trade_no: "R000000000001".into(),
        total_fen: 300,
        openid: "openid-1".into(),
        notify_url: "http://127.0.0.1:9/n".into(),
        time_expire: now + chrono::Duration::hours(1),
        prepay_id: "wx1".into(),
        state: TradeState::Success,
        transaction_id: Some("4200000000".into()),
        paid_at: Some(now),
        refunded_fen: 0,
        created_at: now,
    }
}

fn merchant(s: &PaySandbox) -> Merchant {
    s.state().merchants.get("1900000109").cloned().unwrap()
}

fn fields_of(body: &str) -> BTreeMap<String, String> {
    xml::parse(body.as_bytes(), &XmlLimits::default()).unwrap().fields.into_iter().collect()
}

#[test]
fn merchants_are_validated() {
    let s = PaySandbox::new().unwrap();
    let bad_v3 = MerchantRegistration { api_v3_key: Some("short".into()), ..registration() };
    assert_eq!(s.register_merchant(bad_v3).unwrap_err().status, StatusCode::BAD_REQUEST);
    let bad_pem = MerchantRegistration { merchant_public_key_pem: Some("x".into()), ..registration() };
    assert_eq!(s.register_merchant(bad_pem).unwrap_err().status, StatusCode::BAD_REQUEST);
    let bad_id = MerchantRegistration { mch_id: "19<00>".into(), ..registration() };
    assert!(s.register_merchant(bad_id).is_err());
    assert!(s.register_merchant(registration()).is_ok());
    // Registering again replaces.
    assert!(s.register_merchant(registration()).is_ok());
}

#[test]
fn delivery_plans_are_bounded() {
    assert!(DeliveryPlan::checked(1, false, 0, false).is_ok());
    assert!(DeliveryPlan::checked(COPIES_MAX, true, DELAY_MS_MAX, false).is_ok());
    assert!(DeliveryPlan::checked(0, false, 0, false).is_err());
    assert!(DeliveryPlan::checked(COPIES_MAX + 1, false, 0, false).is_err());
    assert!(DeliveryPlan::checked(1, false, DELAY_MS_MAX + 1, false).is_err());
}

#[test]
fn the_delivery_record_is_bounded() {
    let s = sandbox();
    let d = Delivery {
        seq: 0,
        kind: "transaction".into(),
        api: "v2".into(),
        reference: "R1".into(),
        notify_url: "http://x".into(),
        tamper: Tamper::None,
        copy: 1,
        attempt: 1,
        status: Some(200),
        body: String::new(),
        accepted: true,
        delivered_at: Utc::now(),
    };
    for _ in 0..=DELIVERIES_MAX {
        s.record(d.clone());
    }
    let all = s.deliveries();
    assert_eq!(all.len(), DELIVERIES_MAX);
    assert_eq!(all.first().map(|d| d.seq), Some(2));
    assert_eq!(all.last().map(|d| d.seq), Some(DELIVERIES_MAX as u64 + 1));
}

#[test]
fn v2_payment_notifications_are_signed_as_the_order_was() {
    let s = sandbox();
    let m = merchant(&s);
    for sign_type in [SignType::Md5, SignType::HmacSha256] {
        let n = transaction_notification(&s, &paid_order(PayApi::V2, sign_type), &m, Tamper::None, Utc::now()).unwrap();
        let f = fields_of(&n.body);
        assert_eq!(v2::verify(&f, V2_KEY), Ok(()));
        assert_eq!(SignType::from_fields(&f), Ok(sign_type));
        assert_eq!(f.get("total_fee").map(String::as_str), Some("300"));
    }
    let order = paid_order(PayApi::V2, SignType::HmacSha256);
    let amount = fields_of(&transaction_notification(&s, &order, &m, Tamper::Amount, Utc::now()).unwrap().body);
    assert_eq!(v2::verify(&amount, V2_KEY), Ok(()));
    assert_eq!(amount.get("total_fee").map(String::as_str), Some("301"));
    let mch = fields_of(&transaction_notification(&s, &order, &m, Tamper::MchId, Utc::now()).unwrap().body);
    assert_eq!(v2::verify(&mch, V2_KEY), Ok(()));
    assert_ne!(mch.get("mch_id").map(String::as_str), Some("1900000109"));
    let sig = fields_of(&transaction_notification(&s, &order, &m, Tamper::Signature, Utc::now()).unwrap().body);
    assert_eq!(v2::verify(&sig, V2_KEY), Err(v2::PaySignError::Mismatch));
    let doctype = transaction_notification(&s, &order, &m, Tamper::Doctype, Utc::now()).unwrap().body;
    assert_eq!(xml::parse(doctype.as_bytes(), &XmlLimits::default()), Err(XmlError::Doctype));
    for not_v2 in [Tamper::TimestampStale, Tamper::Signtest, Tamper::Ciphertext] {
        let e = transaction_notification(&s, &order, &m, not_v2, Utc::now()).err().unwrap();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
    }
}

#[test]
fn v2_refund_notifications_carry_req_info() {
    let s = sandbox();
    let m = merchant(&s);
    let order = paid_order(PayApi::V2, SignType::Md5);
    let refund = Refund {
        api: PayApi::V2,
        mch_id: order.mch_id.clone(),
        out_trade_no: order.out_trade_no.clone(),
        out_refund_no: "RF1".into(),
        refund_id: "5030".into(),
        refund_fen: 120,
        total_fen: 300,
        notify_url: Some("http://127.0.0.1:9/r".into()),
        created_at: Utc::now(),
    };
    let n = refund_notification(&s, &refund, &order, &m, Tamper::None, Utc::now()).unwrap();
    let outer = fields_of(&n.body);
    let inner = v2::decrypt_req_info(&outer["req_info"], V2_KEY).unwrap();
    let inner = xml::parse(inner.as_bytes(), &XmlLimits::default()).unwrap();
    assert_eq!(inner.root, "root");
    assert_eq!(inner.get("refund_fee"), Some("120"));
    assert_eq!(inner.get("out_refund_no"), Some("RF1"));
    let broken = refund_notification(&s, &refund, &order, &m, Tamper::Ciphertext, Utc::now()).unwrap();
    assert!(v2::decrypt_req_info(&fields_of(&broken.body)["req_info"], V2_KEY).is_err());
    let no_url = Refund { notify_url: None, ..refund };
    assert!(refund_notification(&s, &no_url, &order, &m, Tamper::None, Utc::now()).is_err());
}

#[test]
fn v3_notifications_are_verifiable_and_tampering_breaks_the_right_check() {
    let s = sandbox();
    let m = merchant(&s);
    let keys = std::collections::HashMap::from([(
        PLATFORM_SERIAL_DEFAULT.to_owned(),
        v3::load_public_key_pem(s.platform_public_key_pem()).unwrap(),
    )]);
    let order = paid_order(PayApi::V3, SignType::Md5);
    let check = |tamper: Tamper| {
        let n = transaction_notification(&s, &order, &m, tamper, Utc::now()).unwrap();
        let h = |name: &str| n.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone()).unwrap();
        let headers = v3::V3Headers {
            timestamp: h("wechatpay-timestamp"),
            nonce: h("wechatpay-nonce"),
            signature_b64: h("wechatpay-signature"),
            serial: h("wechatpay-serial"),
        };
        let verified = v3::verify_notification(&headers, n.body.as_bytes(), &keys, Utc::now().timestamp());
        let envelope: v3::NotificationEnvelope = serde_json::from_str(&n.body).unwrap();
        let opened = envelope.resource.decrypt(&v3::api_v3_key(V3_KEY).unwrap());
        (verified, opened.map(|p| serde_json::from_slice::<v3::TransactionResource>(&p).unwrap()))
    };
    let (ok, tx) = check(Tamper::None);
    assert_eq!(ok, Ok(()));
    assert_eq!(tx.unwrap().amount.total_fen, 300);
    let (ok, tx) = check(Tamper::Amount);
    assert_eq!(ok, Ok(()));
    assert_eq!(tx.unwrap().amount.total_fen, 301);
    assert_ne!(check(Tamper::Appid).1.unwrap().appid, order.appid);
    assert_eq!(check(Tamper::Signature).0, Err(v3::V3Error::BadSignature));
    assert_eq!(check(Tamper::Signtest).0, Err(v3::V3Error::SignatureProbe));
    assert!(matches!(check(Tamper::TimestampStale).0, Err(v3::V3Error::StaleTimestamp { .. })));
    let (ok, opened) = check(Tamper::Ciphertext);
    assert_eq!(ok, Ok(()));
    assert_eq!(opened.unwrap_err(), v3::ResourceError::Authentication);
}

async fn call(s: &PaySandbox, method: &str, uri: &str, body: String) -> (StatusCode, String) {
    let req = Request::builder().method(method).uri(uri).body(Body::from(body)).unwrap();
    let res = router(s.clone()).oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

fn unifiedorder(total_fee: &str) -> String {
    let mut f = BTreeMap::from([
        ("appid".to_owned(), "wx0123456789abcdef".to_owned()),
        ("mch_id".to_owned(), "1900000109".to_owned()),
        ("nonce_str".to_owned(), "n1".to_owned()),
        ("body".to_owned(), "Recharge".to_owned()),
        ("out_trade_no".to_owned(), "R000000000009".to_owned()),
        ("total_fee".to_owned(), total_fee.to_owned()),
        ("spbill_create_ip".to_owned(), "127.0.0.1".to_owned()),
        ("notify_url".to_owned(), "http://127.0.0.1:9/n".to_owned()),
        ("trade_type".to_owned(), "JSAPI".to_owned()),
        ("openid".to_owned(), "openid-1".to_owned()),
    ]);
    let sign = v2::sign(&f, V2_KEY, SignType::Md5);
    f.insert("sign".into(), sign);
    v2::build_xml(&f)
}

#[tokio::test]
async fn v2_unifiedorder_checks_amount_signature_and_xml() {
    let s = sandbox();
    let (status, body) = call(&s, "POST", "/pay/unifiedorder", unifiedorder("1.50")).await;
    assert_eq!(status, StatusCode::OK);
    let f = fields_of(&body);
    assert_eq!(f.get("err_code").map(String::as_str), Some("PARAM_ERROR"));
    // Answers are signed with the request's algorithm (MD5 here).
    assert_eq!(v2::verify(&f, V2_KEY), Ok(()));

    let (_, body) = call(&s, "POST", "/pay/unifiedorder", unifiedorder("150")).await;
    let f = fields_of(&body);
    assert_eq!(f.get("result_code").map(String::as_str), Some("SUCCESS"), "{body}");
    assert!(f.get("prepay_id").is_some_and(|p| p.starts_with("wx")));

    let tampered = unifiedorder("150").replace("<![CDATA[150]]>", "<![CDATA[1]]>");
    let (_, body) = call(&s, "POST", "/pay/unifiedorder", tampered).await;
    assert_eq!(fields_of(&body).get("return_code").map(String::as_str), Some("FAIL"));

    let xxe = format!("<!DOCTYPE xml [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>{}", unifiedorder("150"));
    let (_, body) = call(&s, "POST", "/pay/unifiedorder", xxe).await;
    assert_eq!(fields_of(&body).get("return_code").map(String::as_str), Some("FAIL"));
}

#[tokio::test]
async fn control_endpoints_refuse_bad_requests() {
    let s = sandbox();
    let (status, _) = call(&s, "POST", "/sandbox/pay/orders/NOPE/pay", "{}".into()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "no content type is a bad request");
    let json_call = |uri: &'static str, body: &'static str| {
        let s = s.clone();
        async move {
            let req = Request::builder()
                .method("POST")
                .uri(uri)
                .header("content-type", "application/json")
                .body(Body::from(body))
                .unwrap();
            router(s).oneshot(req).await.unwrap().status()
        }
    };
    assert_eq!(json_call("/sandbox/pay/orders/NOPE/pay", "{}").await, StatusCode::NOT_FOUND);
    assert_eq!(json_call("/sandbox/pay/orders/NOPE/pay", r#"{"copies":0}"#).await, StatusCode::BAD_REQUEST);
    assert_eq!(json_call("/sandbox/pay/orders/NOPE/pay", r#"{"tamper":"bogus"}"#).await, StatusCode::BAD_REQUEST);
    assert_eq!(json_call("/sandbox/pay/orders/NOPE/pay", r#"{"extra":1}"#).await, StatusCode::BAD_REQUEST);
    assert_eq!(json_call("/sandbox/pay/refunds/NOPE/notify", "{}").await, StatusCode::NOT_FOUND);
    let (status, body) = call(&s, "GET", "/sandbox/pay/platform", String::new()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains(PLATFORM_SERIAL_DEFAULT) && body.contains("BEGIN PUBLIC KEY"));
}

#[test]
fn time_expire_is_honoured() {
    let s = sandbox();
    let mut expired = paid_order(PayApi::V2, SignType::Md5);
    expired.state = TradeState::NotPay;
    expired.transaction_id = None;
    expired.paid_at = None;
    expired.time_expire = Utc::now() - chrono::Duration::seconds(1);
    s.state().orders.insert(expired.out_trade_no.clone(), expired.clone());
    assert_eq!(
        s.mark_paid(&expired.out_trade_no, Utc::now(), true).err().map(|e| e.status),
        Some(StatusCode::CONFLICT)
    );
    // Paying before the expiry works, and paying again keeps the first payment.
    let now = Utc::now();
    s.state().orders.get_mut(&expired.out_trade_no).unwrap().time_expire = now + chrono::Duration::minutes(5);
    let (preview, _) = s.mark_paid(&expired.out_trade_no, now, false).unwrap();
    assert!(preview.transaction_id.is_some());
    assert_eq!(s.state().orders[&expired.out_trade_no].state, TradeState::NotPay, "a preview changes nothing");
    let (first, _) = s.mark_paid(&expired.out_trade_no, now, true).unwrap();
    let (second, _) = s.mark_paid(&expired.out_trade_no, now, true).unwrap();
    assert!(first.transaction_id.is_some());
    assert_eq!(first.transaction_id, second.transaction_id);
}

#[tokio::test]
async fn an_inapplicable_tamper_leaves_the_order_unpaid() {
    let s = sandbox();
    let mut order = paid_order(PayApi::V3, SignType::Md5);
    order.state = TradeState::NotPay;
    order.transaction_id = None;
    order.paid_at = None;
    s.state().orders.insert(order.out_trade_no.clone(), order.clone());
    let req = Request::builder()
        .method("POST")
        .uri(format!("/sandbox/pay/orders/{}/pay", order.out_trade_no))
        .header("content-type", "application/json")
        .body(Body::from(r#"{"tamper":"doctype"}"#))
        .unwrap();
    let res = router(s.clone()).oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(s.state().orders[&order.out_trade_no].state, TradeState::NotPay);
}
