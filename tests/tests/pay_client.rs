//! The WeChat Pay client against the Pay simulator, both in-process on port 0
//! (no database needed): ordering and JSAPI parameters, query, pay, close,
//! refund, business errors, notifications, and answers that must be refused.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use chrono::{Duration, Utc};
use serde_json::{json, Value};
use wxcm_commands::pay_port::{
    JsapiOrderRequest, MerchantCredentials, PayApi, PayGateway, PayPortError, RefundRequest, RemoteTradeState,
};
use wxcm_outbound::pay::{PayClientSettings, WechatPayClient};
use wxcm_protocol::pay::{v2, v3, JsapiParams};
use wxcm_simulator::pay::RETRY_ATTEMPTS_MAX;
use wxcm_tests::Simulator;

const MERCHANT_PRIVATE_PEM: &str = include_str!("../../gateways/testdata/other_private.pem");
const MERCHANT_PUBLIC_PEM: &str = include_str!("../../gateways/testdata/other_public.pem");
const APPID: &str = "wx0123456789abcdef";
const MCH_ID: &str = "1900000109";
const V2_KEY: &str = "192006250b4c09247ec02edce69f6a2d";
const V3_KEY: &str = "0123456789abcdef0123456789abcdef";

struct Setup {
    server: Simulator,
    client: WechatPayClient,
    http: reqwest::Client,
    platform_serial: String,
}

impl Setup {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.base_url)
    }

    async fn pay(&self, out_trade_no: &str, body: Value) -> reqwest::Response {
        self.http.post(self.url(&format!("/sandbox/pay/orders/{out_trade_no}/pay"))).json(&body).send().await.unwrap()
    }
}

fn settings(base_url: String) -> PayClientSettings {
    PayClientSettings { base_url, retry_backoff_ms: 10, timeout_ms: 3_000, ..PayClientSettings::default() }
}

async fn setup() -> Setup {
    let server = Simulator::start().await;
    let http = reqwest::Client::new();
    let res = http
        .post(format!("{}/sandbox/pay/merchants", server.base_url))
        .json(&json!({
            "mch_id": MCH_ID, "appid": APPID, "api_v2_key": V2_KEY, "api_v3_key": V3_KEY,
            "merchant_public_key_pem": MERCHANT_PUBLIC_PEM,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT, "{}", res.text().await.unwrap());
    let platform: Value =
        http.get(format!("{}/sandbox/pay/platform", server.base_url)).send().await.unwrap().json().await.unwrap();
    let serial = platform["serial"].as_str().unwrap().to_owned();
    let client = WechatPayClient::new(settings(server.base_url.clone()))
        .unwrap()
        .with_platform_key(&serial, platform["public_key_pem"].as_str().unwrap())
        .unwrap();
    Setup { server, client, http, platform_serial: serial }
}

fn merchant() -> MerchantCredentials {
    MerchantCredentials {
        appid: APPID.into(),
        mch_id: MCH_ID.into(),
        api_v2_key: Some(V2_KEY.into()),
        api_v3_key: Some(V3_KEY.into()),
        merchant_cert_serial: Some("MERCHANT-SERIAL-0001".into()),
        merchant_private_key_pem: Some(MERCHANT_PRIVATE_PEM.into()),
    }
}

fn order(api: PayApi, out_trade_no: &str, amount_fen: i64, notify_url: &str) -> JsapiOrderRequest {
    JsapiOrderRequest {
        api,
        out_trade_no: out_trade_no.into(),
        description: "Balance recharge".into(),
        amount_fen,
        payer_openid: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".into(),
        notify_url: notify_url.into(),
        expires_at: Utc::now() + Duration::minutes(30),
        client_ip: "127.0.0.1".into(),
    }
}

fn as_params(p: &wxcm_commands::pay_port::JsapiPayParams) -> JsapiParams {
    JsapiParams {
        app_id: p.app_id.clone(),
        time_stamp: p.time_stamp.clone(),
        nonce_str: p.nonce_str.clone(),
        package: p.package.clone(),
        sign_type: p.sign_type.clone(),
        pay_sign: p.pay_sign.clone(),
    }
}

fn refused_code(e: PayPortError) -> String {
    match e {
        PayPortError::Refused { code, .. } => code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn v2_order_query_pay_close_and_refund() {
    let s = setup().await;
    let m = merchant();
    let o = order(PayApi::V2, "R2v2000000000001", 1_000, "http://127.0.0.1:9/pay/notify/v2/wx");

    let params = s.client.create_jsapi_order(&m, &o).await.unwrap();
    assert_eq!(params.app_id, APPID);
    assert_eq!(params.sign_type, "HMAC-SHA256");
    assert!(params.package.starts_with("prepay_id=wx"), "{}", params.package);
    let ts: i64 = params.time_stamp.parse().unwrap();
    let expected = v2::jsapi_params_v2(
        APPID,
        params.package.trim_start_matches("prepay_id="),
        V2_KEY,
        v2::SignType::HmacSha256,
        ts,
        &params.nonce_str,
    );
    assert_eq!(params.pay_sign, expected.pay_sign);
    // The same order asked again gets the same prepay id.
    let again = s.client.create_jsapi_order(&m, &o).await.unwrap();
    assert_eq!(again.package, params.package);

    assert_eq!(s.client.query_order(&m, PayApi::V2, &o.out_trade_no).await.unwrap(), RemoteTradeState::NotPay);
    assert_eq!(s.client.query_order(&m, PayApi::V2, "R2v2nothere000").await.unwrap(), RemoteTradeState::NotFound);

    let res = s.pay(&o.out_trade_no, json!({"deliver": false})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let report: Value = res.json().await.unwrap();
    assert_eq!(report["deliveries"].as_array().unwrap().len(), 0);
    match s.client.query_order(&m, PayApi::V2, &o.out_trade_no).await.unwrap() {
        RemoteTradeState::Success { total_fen, transaction_id, appid, mch_id, .. } => {
            assert_eq!(total_fen, 1_000);
            assert_eq!(Some(transaction_id.as_str()), report["transaction_id"].as_str());
            assert_eq!((appid.as_str(), mch_id.as_str()), (APPID, MCH_ID));
        }
        other => panic!("expected Success, got {other:?}"),
    }

    // Business errors: a paid order cannot be ordered again nor closed, refunds stay within the paid amount.
    assert_eq!(refused_code(s.client.create_jsapi_order(&m, &o).await.unwrap_err()), "ORDERPAID");
    assert_eq!(refused_code(s.client.close_order(&m, PayApi::V2, &o.out_trade_no).await.unwrap_err()), "ORDERPAID");
    let refund = |no: &str, fen: i64| RefundRequest {
        api: PayApi::V2,
        out_trade_no: o.out_trade_no.clone(),
        out_refund_no: no.into(),
        total_fen: 1_000,
        refund_fen: fen,
        notify_url: "http://127.0.0.1:9/pay/notify/refund/wx".into(),
    };
    s.client.refund(&m, &refund("RF2v2000000001", 600)).await.unwrap();
    // The same refund again is answered again (idempotent), a second one past the rest is refused.
    s.client.refund(&m, &refund("RF2v2000000001", 600)).await.unwrap();
    assert_eq!(refused_code(s.client.refund(&m, &refund("RF2v2000000002", 401)).await.unwrap_err()), "NOTENOUGH");
    s.client.refund(&m, &refund("RF2v2000000002", 400)).await.unwrap();
    assert_eq!(s.client.query_order(&m, PayApi::V2, &o.out_trade_no).await.unwrap(), RemoteTradeState::Refund);

    // Close an unpaid order, twice (the second is a no-op), then it cannot be ordered again.
    let o2 = order(PayApi::V2, "R2v2000000000002", 500, "http://127.0.0.1:9/n");
    s.client.create_jsapi_order(&m, &o2).await.unwrap();
    s.client.close_order(&m, PayApi::V2, &o2.out_trade_no).await.unwrap();
    s.client.close_order(&m, PayApi::V2, &o2.out_trade_no).await.unwrap();
    assert_eq!(s.client.query_order(&m, PayApi::V2, &o2.out_trade_no).await.unwrap(), RemoteTradeState::Closed);
    assert_eq!(refused_code(s.client.create_jsapi_order(&m, &o2).await.unwrap_err()), "ORDERCLOSED");
    assert_eq!(s.pay(&o2.out_trade_no, json!({"deliver": false})).await.status(), StatusCode::CONFLICT);

    // A refund of an unpaid order is refused.
    let o3 = order(PayApi::V2, "R2v2000000000003", 500, "http://127.0.0.1:9/n");
    s.client.create_jsapi_order(&m, &o3).await.unwrap();
    let r3 = RefundRequest { out_trade_no: o3.out_trade_no.clone(), total_fen: 500, refund_fen: 1, ..refund("RF3", 1) };
    assert_eq!(refused_code(s.client.refund(&m, &r3).await.unwrap_err()), "TRADE_STATE_ERROR");
}

#[tokio::test]
async fn v3_order_query_pay_close_and_refund() {
    let s = setup().await;
    let m = merchant();
    let o = order(PayApi::V3, "R3v3000000000001", 2_500, "http://127.0.0.1:9/pay/notify/v3/wx");

    let params = s.client.create_jsapi_order(&m, &o).await.unwrap();
    assert_eq!(params.sign_type, "RSA");
    let merchant_public = v3::load_public_key_pem(MERCHANT_PUBLIC_PEM).unwrap();
    v3::verify_jsapi_params_v3(&as_params(&params), &merchant_public).unwrap();

    assert_eq!(s.client.query_order(&m, PayApi::V3, &o.out_trade_no).await.unwrap(), RemoteTradeState::NotPay);
    assert_eq!(s.client.query_order(&m, PayApi::V3, "R3v3nothere000").await.unwrap(), RemoteTradeState::NotFound);
    assert_eq!(s.pay(&o.out_trade_no, json!({"deliver": false})).await.status(), StatusCode::OK);
    match s.client.query_order(&m, PayApi::V3, &o.out_trade_no).await.unwrap() {
        RemoteTradeState::Success { total_fen, .. } => assert_eq!(total_fen, 2_500),
        other => panic!("expected Success, got {other:?}"),
    }
    assert_eq!(refused_code(s.client.create_jsapi_order(&m, &o).await.unwrap_err()), "ORDERPAID");
    assert_eq!(refused_code(s.client.close_order(&m, PayApi::V3, &o.out_trade_no).await.unwrap_err()), "ORDERPAID");

    let refund = RefundRequest {
        api: PayApi::V3,
        out_trade_no: o.out_trade_no.clone(),
        out_refund_no: "RF3v3000000001".into(),
        total_fen: 2_500,
        refund_fen: 2_500,
        notify_url: "http://127.0.0.1:9/pay/notify/refund/wx".into(),
    };
    s.client.refund(&m, &refund).await.unwrap();
    let more = RefundRequest { out_refund_no: "RF3v3000000002".into(), refund_fen: 1, ..refund.clone() };
    assert_eq!(refused_code(s.client.refund(&m, &more).await.unwrap_err()), "NOT_ENOUGH");

    let o2 = order(PayApi::V3, "R3v3000000000002", 100, "http://127.0.0.1:9/n");
    s.client.create_jsapi_order(&m, &o2).await.unwrap();
    s.client.close_order(&m, PayApi::V3, &o2.out_trade_no).await.unwrap();
    s.client.close_order(&m, PayApi::V3, &o2.out_trade_no).await.unwrap();
    assert_eq!(s.client.query_order(&m, PayApi::V3, &o2.out_trade_no).await.unwrap(), RemoteTradeState::Closed);
}

#[tokio::test]
async fn requests_the_simulator_cannot_authenticate_are_refused() {
    let s = setup().await;
    // v2 signed with another key: Pay answers return_code FAIL.
    let wrong_v2 = MerchantCredentials { api_v2_key: Some("another-key".into()), ..merchant() };
    let o = order(PayApi::V2, "R2bad000000001", 100, "http://127.0.0.1:9/n");
    assert_eq!(refused_code(s.client.create_jsapi_order(&wrong_v2, &o).await.unwrap_err()), "FAIL");
    // v3 signed with a key the simulator does not know for this merchant.
    let platform_private = include_str!("../../gateways/testdata/platform_private.pem");
    let wrong_v3 = MerchantCredentials { merchant_private_key_pem: Some(platform_private.into()), ..merchant() };
    let o = order(PayApi::V3, "R3bad000000001", 100, "http://127.0.0.1:9/n");
    assert_eq!(refused_code(s.client.create_jsapi_order(&wrong_v3, &o).await.unwrap_err()), "SIGN_ERROR");
    // Checked before sending: no amount, a past expiry, missing v3 settings.
    let zero = JsapiOrderRequest { amount_fen: 0, ..order(PayApi::V2, "R2zero00000001", 1, "http://x/n") };
    assert_eq!(refused_code(s.client.create_jsapi_order(&merchant(), &zero).await.unwrap_err()), "PARAM_ERROR");
    let past = JsapiOrderRequest { expires_at: Utc::now() - Duration::minutes(1), ..o.clone() };
    assert_eq!(refused_code(s.client.create_jsapi_order(&merchant(), &past).await.unwrap_err()), "PARAM_ERROR");
    let no_key = MerchantCredentials { merchant_private_key_pem: None, ..merchant() };
    assert!(matches!(s.client.create_jsapi_order(&no_key, &o).await, Err(PayPortError::Settings(_))));
}

#[tokio::test]
async fn a_v3_answer_whose_signature_does_not_verify_is_refused() {
    let s = setup().await;
    // The client trusts another key under the simulator's serial: every answer fails its check.
    let client = WechatPayClient::new(settings(s.server.base_url.clone()))
        .unwrap()
        .with_platform_key(&s.platform_serial, MERCHANT_PUBLIC_PEM)
        .unwrap();
    let o = order(PayApi::V3, "R3sig000000001", 100, "http://127.0.0.1:9/n");
    let err = client.create_jsapi_order(&merchant(), &o).await.unwrap_err();
    assert!(matches!(err, PayPortError::BadAnswer(_)), "{err:?}");
    // An unknown serial is refused too.
    let client = WechatPayClient::new(settings(s.server.base_url.clone()))
        .unwrap()
        .with_platform_key("ANOTHER-SERIAL", s.server_platform_pem().await.as_str())
        .unwrap();
    let err = client.query_order(&merchant(), PayApi::V3, &o.out_trade_no).await.unwrap_err();
    assert!(matches!(err, PayPortError::BadAnswer(_)), "{err:?}");
}

impl Setup {
    async fn server_platform_pem(&self) -> String {
        let v: Value = self.http.get(self.url("/sandbox/pay/platform")).send().await.unwrap().json().await.unwrap();
        v["public_key_pem"].as_str().unwrap().to_owned()
    }
}

/// A fake Pay answering with a fixed status and body, counting calls.
async fn fake_pay(status: StatusCode, body: &'static str) -> (String, Arc<AtomicU32>, tokio::task::JoinHandle<()>) {
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let app = axum::Router::new().fallback(move || {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            (status, body)
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (base, calls, task)
}

#[tokio::test]
async fn a_v2_answer_with_a_bad_signature_is_refused() {
    let body = "<xml><return_code><![CDATA[SUCCESS]]></return_code><result_code><![CDATA[SUCCESS]]></result_code>\
                <appid><![CDATA[wx0123456789abcdef]]></appid><mch_id><![CDATA[1900000109]]></mch_id>\
                <trade_state><![CDATA[NOTPAY]]></trade_state><sign><![CDATA[0000]]></sign></xml>";
    let (base, calls, task) = fake_pay(StatusCode::OK, body).await;
    let client = WechatPayClient::new(settings(base)).unwrap();
    let err = client.query_order(&merchant(), PayApi::V2, "R2fake00000001").await.unwrap_err();
    assert!(matches!(err, PayPortError::BadAnswer(_)), "{err:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "a bad answer is not retried");
    task.abort();
}

#[tokio::test]
async fn server_errors_are_retried_a_bounded_number_of_times() {
    let (base, calls, task) = fake_pay(StatusCode::SERVICE_UNAVAILABLE, "busy").await;
    let client = WechatPayClient::new(PayClientSettings { attempts_max: 3, ..settings(base) }).unwrap();
    let err = client.query_order(&merchant(), PayApi::V3, "R3fake00000001").await.unwrap_err();
    assert!(matches!(err, PayPortError::Unavailable(_)), "{err:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    task.abort();

    // A business refusal is not retried.
    let (base, calls, task) = fake_pay(StatusCode::FORBIDDEN, r#"{"code":"NOT_ENOUGH","message":"no"}"#).await;
    let client = WechatPayClient::new(settings(base)).unwrap();
    let refund = RefundRequest {
        api: PayApi::V3,
        out_trade_no: "R3fake00000001".into(),
        out_refund_no: "RF1".into(),
        total_fen: 10,
        refund_fen: 10,
        notify_url: "http://127.0.0.1:9/n".into(),
    };
    assert_eq!(refused_code(client.refund(&merchant(), &refund).await.unwrap_err()), "NOT_ENOUGH");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    task.abort();

    // Nothing listening: transport errors are retried, then reported as unavailable.
    let client =
        WechatPayClient::new(PayClientSettings { attempts_max: 2, ..settings("http://127.0.0.1:9".into()) }).unwrap();
    let err = client.close_order(&merchant(), PayApi::V2, "R2fake00000001").await.unwrap_err();
    assert!(matches!(err, PayPortError::Unavailable(_)), "{err:?}");
}

#[tokio::test]
async fn an_answer_past_the_size_cap_is_refused() {
    let big: &'static str = Box::leak("x".repeat(10_000).into_boxed_str());
    let (base, _, task) = fake_pay(StatusCode::OK, big).await;
    let client = WechatPayClient::new(PayClientSettings { response_bytes_max: 9_999, ..settings(base) }).unwrap();
    let err = client.query_order(&merchant(), PayApi::V2, "R2fake00000001").await.unwrap_err();
    assert!(matches!(err, PayPortError::BadAnswer(ref m) if m.contains("larger than")), "{err:?}");
    task.abort();
}

/// A notify endpoint that records what it receives and answers as told.
#[derive(Clone, Default)]
struct Receiver {
    received: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
}

async fn receiver(answer_ok: bool) -> (String, Receiver, tokio::task::JoinHandle<()>) {
    let r = Receiver::default();
    let rec = r.clone();
    let app = axum::Router::new().route(
        "/notify",
        post(move |headers: HeaderMap, body: Bytes| {
            let rec = rec.clone();
            async move {
                rec.received.lock().unwrap().push((headers, body));
                if answer_ok {
                    (StatusCode::OK, v2::REPLY_SUCCESS.to_owned())
                } else {
                    (StatusCode::INTERNAL_SERVER_ERROR, v2::reply_fail("not now"))
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/notify", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, r, task)
}

#[tokio::test]
async fn notifications_are_signed_encrypted_and_recorded() {
    let s = setup().await;
    let m = merchant();
    let (url, rec, task) = receiver(true).await;

    // v2: 5 concurrent copies, each signed with the order's algorithm.
    let o = order(PayApi::V2, "R2ntf000000001", 300, &url);
    s.client.create_jsapi_order(&m, &o).await.unwrap();
    let report: Value = s.pay(&o.out_trade_no, json!({"copies": 5, "concurrent": true})).await.json().await.unwrap();
    let deliveries = report["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 5);
    assert!(deliveries.iter().all(|d| d["status"] == 200 && d["accepted"] == true), "{report}");
    for (_, body) in rec.received.lock().unwrap().iter() {
        let text = std::str::from_utf8(body).unwrap();
        assert!(text.contains("HMAC-SHA256") && text.contains("<total_fee><![CDATA[300]]>"), "{text}");
    }

    // v3: the signature verifies with the platform key and the resource opens with the APIv3 key.
    let o = order(PayApi::V3, "R3ntf000000001", 700, &url);
    s.client.create_jsapi_order(&m, &o).await.unwrap();
    rec.received.lock().unwrap().clear();
    assert_eq!(s.pay(&o.out_trade_no, json!({})).await.status(), StatusCode::OK);
    let (headers, body) = rec.received.lock().unwrap()[0].clone();
    let h = |n: &str| headers.get(n).unwrap().to_str().unwrap().to_owned();
    let v3_headers = v3::V3Headers {
        timestamp: h("wechatpay-timestamp"),
        nonce: h("wechatpay-nonce"),
        signature_b64: h("wechatpay-signature"),
        serial: h("wechatpay-serial"),
    };
    let keys = std::collections::HashMap::from([(
        s.platform_serial.clone(),
        v3::load_public_key_pem(&s.server_platform_pem().await).unwrap(),
    )]);
    v3::verify_notification(&v3_headers, &body, &keys, Utc::now().timestamp()).unwrap();
    let envelope: v3::NotificationEnvelope = serde_json::from_slice(&body).unwrap();
    assert_eq!(envelope.event_type, "TRANSACTION.SUCCESS");
    let plain = envelope.resource.decrypt(&v3::api_v3_key(V3_KEY).unwrap()).unwrap();
    let tx: v3::TransactionResource = serde_json::from_slice(&plain).unwrap();
    assert_eq!((tx.out_trade_no.as_str(), tx.amount.total_fen, tx.mchid.as_str()), ("R3ntf000000001", 700, MCH_ID));

    // Tampered: a stale timestamp fails verification; doctype does not apply to v3.
    rec.received.lock().unwrap().clear();
    assert_eq!(s.pay(&o.out_trade_no, json!({"tamper": "timestamp_stale"})).await.status(), StatusCode::OK);
    let (headers, body) = rec.received.lock().unwrap()[0].clone();
    let stale = v3::V3Headers {
        timestamp: headers.get("wechatpay-timestamp").unwrap().to_str().unwrap().into(),
        ..v3_headers.clone()
    };
    assert!(matches!(
        v3::verify_notification(&stale, &body, &keys, Utc::now().timestamp()),
        Err(v3::V3Error::StaleTimestamp { .. })
    ));
    assert_eq!(s.pay(&o.out_trade_no, json!({"tamper": "doctype"})).await.status(), StatusCode::UNPROCESSABLE_ENTITY);

    // Refund notification (v3 REFUND.SUCCESS) after a refund.
    let refund = RefundRequest {
        api: PayApi::V3,
        out_trade_no: o.out_trade_no.clone(),
        out_refund_no: "RF3ntf00000001".into(),
        total_fen: 700,
        refund_fen: 200,
        notify_url: url.clone(),
    };
    s.client.refund(&m, &refund).await.unwrap();
    rec.received.lock().unwrap().clear();
    let res = s
        .http
        .post(s.url("/sandbox/pay/refunds/RF3ntf00000001/notify"))
        .json(&json!({"copies": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let (_, body) = rec.received.lock().unwrap()[1].clone();
    let envelope: v3::NotificationEnvelope = serde_json::from_slice(&body).unwrap();
    assert_eq!(envelope.event_type, "REFUND.SUCCESS");
    let plain = envelope.resource.decrypt(&v3::api_v3_key(V3_KEY).unwrap()).unwrap();
    let r: v3::RefundResource = serde_json::from_slice(&plain).unwrap();
    assert_eq!((r.amount.refund_fen, r.out_refund_no.as_str()), (200, "RF3ntf00000001"));

    let all: Vec<Value> = s.http.get(s.url("/sandbox/pay/deliveries")).send().await.unwrap().json().await.unwrap();
    assert_eq!(all.len(), 5 + 1 + 1 + 2);
    task.abort();
}

#[tokio::test]
async fn refused_notifications_are_retried_until_the_bound_when_asked() {
    let s = setup().await;
    let (url, rec, task) = receiver(false).await;
    let o = order(PayApi::V2, "R2rty000000001", 300, &url);
    s.client.create_jsapi_order(&merchant(), &o).await.unwrap();
    let report: Value = s.pay(&o.out_trade_no, json!({"retry_until_success": true})).await.json().await.unwrap();
    let deliveries = report["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), RETRY_ATTEMPTS_MAX as usize);
    assert!(deliveries.iter().all(|d| d["status"] == 500 && d["accepted"] == false));
    assert_eq!(rec.received.lock().unwrap().len(), RETRY_ATTEMPTS_MAX as usize);
    task.abort();
}
