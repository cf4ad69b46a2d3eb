use chrono::{DateTime, TimeZone, Utc};

use super::*;

const KEY: &str = "192006250b4c09247ec02edce69f6a2d";

fn merchant() -> MerchantCredentials {
    MerchantCredentials {
        appid: "wxd930ea5d5a258f4f".into(),
        mch_id: "10000100".into(),
        api_v2_key: Some(KEY.into()),
        api_v3_key: None,
        merchant_cert_serial: None,
        merchant_private_key_pem: None,
    }
}

fn order() -> JsapiOrderRequest {
    JsapiOrderRequest {
        api: PayApi::V2,
        out_trade_no: "R20260101000001".into(),
        description: "Recharge".into(),
        amount_fen: 1_000,
        payer_openid: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".into(),
        notify_url: "https://example.com/pay/notify/v2/wxd930ea5d5a258f4f".into(),
        expires_at: Utc.with_ymd_and_hms(2026, 1, 1, 0, 30, 0).unwrap(),
        client_ip: "10.0.0.1".into(),
    }
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

fn signed(mut f: BTreeMap<String, String>) -> BTreeMap<String, String> {
    let s = v2::sign(&f, KEY, SignType::HmacSha256);
    f.insert("sign".into(), s);
    f
}

fn answer(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

#[test]
fn times_are_written_in_china_standard_time() {
    let at = Utc.with_ymd_and_hms(2026, 1, 1, 16, 5, 9).unwrap();
    assert_eq!(time_expire_v2(at), "20260102000509");
    assert_eq!(time_expire_v3(at), "2026-01-02T00:05:09+08:00");
    assert_eq!(parse_time_v2("20260102000509"), Some(at));
    assert_eq!(parse_time_v2("2026010200050"), None);
    assert_eq!(parse_time_v2("2026010200050x"), None);
    assert_eq!(parse_time_v2("20261302000509"), None);
}

#[test]
fn amounts_are_plain_positive_integers() {
    assert_eq!(parse_fen("100"), Some(100));
    for bad in ["", "-1", "+1", "1.5", "1e3", " 1", "9999999999999999"] {
        assert_eq!(parse_fen(bad), None, "{bad}");
    }
}

#[test]
fn unifiedorder_request_is_complete_and_signed_with_hmac() {
    let f = signed_v2_request(&merchant(), KEY, unifiedorder_fields(&order()), "nonce123");
    for (k, v) in [
        ("appid", "wxd930ea5d5a258f4f"),
        ("mch_id", "10000100"),
        ("trade_type", "JSAPI"),
        ("total_fee", "1000"),
        ("openid", "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"),
        ("time_expire", "20260101083000"),
        ("sign_type", "HMAC-SHA256"),
        ("spbill_create_ip", "10.0.0.1"),
        ("nonce_str", "nonce123"),
    ] {
        assert_eq!(f.get(k).map(String::as_str), Some(v), "{k}");
    }
    assert_eq!(v2::verify(&f, KEY), Ok(()));
}

#[test]
fn v3_bodies_carry_integer_fen() {
    let b = v3_jsapi_body(&merchant(), &order());
    assert_eq!(b["amount"]["total"], 1_000);
    assert_eq!(b["amount"]["currency"], "CNY");
    assert_eq!(b["payer"]["openid"], "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o");
    assert_eq!(b["time_expire"], "2026-01-01T08:30:00+08:00");
    assert_eq!(b["mchid"], "10000100");
    let r = RefundRequest {
        api: PayApi::V3,
        out_trade_no: "R20260101000001".into(),
        out_refund_no: "RF1".into(),
        total_fen: 1_000,
        refund_fen: 250,
        notify_url: "https://example.com/n".into(),
    };
    let b = v3_refund_body(&r);
    assert_eq!((b["amount"]["refund"].as_i64(), b["amount"]["total"].as_i64()), (Some(250), Some(1_000)));
}

fn code(e: PayPortError) -> String {
    match e {
        PayPortError::Refused { code, .. } => code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn orders_are_checked_at_and_past_each_limit() {
    assert!(check_order(&order(), now()).is_ok());
    let with = |f: &dyn Fn(&mut JsapiOrderRequest)| {
        let mut o = order();
        f(&mut o);
        check_order(&o, now())
    };
    assert!(with(&|o| o.description = "x".repeat(DESCRIPTION_BYTES_MAX)).is_ok());
    assert_eq!(code(with(&|o| o.description = "x".repeat(DESCRIPTION_BYTES_MAX + 1)).unwrap_err()), "PARAM_ERROR");
    assert!(with(&|o| o.out_trade_no = "x".repeat(OUT_TRADE_NO_CHARS_MAX)).is_ok());
    assert!(with(&|o| o.out_trade_no = "x".repeat(OUT_TRADE_NO_CHARS_MAX + 1)).is_err());
    assert!(with(&|o| o.out_trade_no = "x".repeat(OUT_TRADE_NO_CHARS_MIN)).is_ok());
    assert!(with(&|o| o.out_trade_no = "x".repeat(OUT_TRADE_NO_CHARS_MIN - 1)).is_err());
    assert!(with(&|o| o.out_trade_no = "R2026/0101".into()).is_err());
    assert!(with(&|o| o.amount_fen = AMOUNT_FEN_MAX).is_ok());
    assert!(with(&|o| o.amount_fen = AMOUNT_FEN_MAX + 1).is_err());
    assert!(with(&|o| o.amount_fen = 0).is_err());
    assert!(with(&|o| o.amount_fen = -5).is_err());
    assert!(with(&|o| o.payer_openid = String::new()).is_err());
    assert!(with(&|o| o.notify_url = "ftp://example.com/n".into()).is_err());
    assert!(with(&|o| o.notify_url = "https://example.com/n?x=1".into()).is_err());
    assert!(with(&|o| o.notify_url = format!("https://{}", "e".repeat(NOTIFY_URL_CHARS_MAX))).is_err());
    assert!(with(&|o| o.expires_at = now()).is_err());
}

#[test]
fn refunds_stay_within_the_total() {
    let r = RefundRequest {
        api: PayApi::V2,
        out_trade_no: "R20260101000001".into(),
        out_refund_no: "RF1".into(),
        total_fen: 1_000,
        refund_fen: 1_000,
        notify_url: "https://example.com/n".into(),
    };
    assert!(check_refund(&r).is_ok());
    assert!(check_refund(&RefundRequest { refund_fen: 1_001, ..r.clone() }).is_err());
    assert!(check_refund(&RefundRequest { refund_fen: 0, ..r.clone() }).is_err());
    assert!(check_refund(&RefundRequest { out_refund_no: "x".repeat(OUT_REFUND_NO_CHARS_MAX + 1), ..r }).is_err());
}

#[test]
fn v2_answers_are_mapped() {
    let m = merchant();
    // return_code FAIL: unsigned, a refusal (retrying the same request cannot help).
    let fail = answer(&[("return_code", "FAIL"), ("return_msg", "签名错误")]);
    assert_eq!(code(map_v2_fields(fail, &m, KEY).unwrap_err()), "FAIL");

    let ok = signed(answer(&[
        ("return_code", "SUCCESS"),
        ("result_code", "SUCCESS"),
        ("appid", "wxd930ea5d5a258f4f"),
        ("mch_id", "10000100"),
        ("prepay_id", "wx201410272009395522657a690389285100"),
    ]));
    assert!(matches!(map_v2_fields(ok.clone(), &m, KEY), Ok(V2Answer::Success(_))));

    let mut tampered = ok.clone();
    tampered.insert("prepay_id".into(), "wx0".into());
    assert!(matches!(map_v2_fields(tampered, &m, KEY), Err(PayPortError::BadAnswer(_))));
    let mut unsigned = ok.clone();
    unsigned.remove("sign");
    assert!(matches!(map_v2_fields(unsigned, &m, KEY), Err(PayPortError::BadAnswer(_))));
    let other_mch = signed(answer(&[("return_code", "SUCCESS"), ("result_code", "SUCCESS"), ("mch_id", "1")]));
    assert!(matches!(map_v2_fields(other_mch, &m, KEY), Err(PayPortError::BadAnswer(_))));

    let system = signed(answer(&[("return_code", "SUCCESS"), ("result_code", "FAIL"), ("err_code", "SYSTEMERROR")]));
    assert!(matches!(map_v2_fields(system, &m, KEY), Err(PayPortError::Unavailable(_))));
    let paid = signed(answer(&[("return_code", "SUCCESS"), ("result_code", "FAIL"), ("err_code", "ORDERPAID")]));
    assert_eq!(
        map_v2_fields(paid, &m, KEY).unwrap(),
        V2Answer::Failed { err_code: "ORDERPAID".into(), err_code_des: String::new() }
    );
}

#[test]
fn v2_trade_states_are_mapped() {
    let paid = answer(&[
        ("trade_state", "SUCCESS"),
        ("transaction_id", "4200000001"),
        ("total_fee", "1000"),
        ("time_end", "20260101083000"),
        ("appid", "wx1"),
        ("mch_id", "10000100"),
    ]);
    assert_eq!(
        map_v2_query(V2Answer::Success(paid.clone())).unwrap(),
        RemoteTradeState::Success {
            transaction_id: "4200000001".into(),
            total_fen: 1_000,
            appid: "wx1".into(),
            mch_id: "10000100".into(),
            paid_at: Utc.with_ymd_and_hms(2026, 1, 1, 0, 30, 0).unwrap(),
        }
    );
    let mut float = paid;
    float.insert("total_fee".into(), "10.00".into());
    assert!(matches!(map_v2_query(V2Answer::Success(float)), Err(PayPortError::BadAnswer(_))));
    for (state, expected) in [
        ("NOTPAY", RemoteTradeState::NotPay),
        ("CLOSED", RemoteTradeState::Closed),
        ("REFUND", RemoteTradeState::Refund),
        ("USERPAYING", RemoteTradeState::Pending("USERPAYING".into())),
    ] {
        assert_eq!(map_v2_query(V2Answer::Success(answer(&[("trade_state", state)]))).unwrap(), expected);
    }
    let missing = V2Answer::Failed { err_code: "ORDERNOTEXIST".into(), err_code_des: String::new() };
    assert_eq!(map_v2_query(missing).unwrap(), RemoteTradeState::NotFound);
}

#[test]
fn v3_answers_are_mapped() {
    assert!(matches!(map_v3_status(204, Vec::new()), Ok(V3Answer::Success { .. })));
    let not_found = map_v3_status(404, br#"{"code":"ORDER_NOT_EXIST","message":"no"}"#.to_vec()).unwrap();
    assert_eq!(map_v3_query(not_found).unwrap(), RemoteTradeState::NotFound);
    let system = map_v3_status(400, br#"{"code":"SYSTEM_ERROR","message":"try later"}"#.to_vec());
    assert!(matches!(system, Err(PayPortError::Unavailable(_))));
    assert!(matches!(map_v3_status(400, b"<html>".to_vec()), Err(PayPortError::BadAnswer(_))));
    let paid =
        br#"{"appid":"wx1","mchid":"10000100","out_trade_no":"R1","transaction_id":"4200","trade_state":"SUCCESS",
        "success_time":"2026-01-01T08:30:00+08:00","amount":{"total":1000,"currency":"CNY"}}"#;
    match map_v3_query(V3Answer::Success { body: paid.to_vec() }).unwrap() {
        RemoteTradeState::Success { total_fen, paid_at, .. } => {
            assert_eq!(total_fen, 1_000);
            assert_eq!(paid_at, Utc.with_ymd_and_hms(2026, 1, 1, 0, 30, 0).unwrap());
        }
        other => panic!("{other:?}"),
    }
    let no_amount = br#"{"trade_state":"SUCCESS","transaction_id":"4200","success_time":"2026-01-01T08:30:00+08:00"}"#;
    assert!(matches!(map_v3_query(V3Answer::Success { body: no_amount.to_vec() }), Err(PayPortError::BadAnswer(_))));
    let notpay = br#"{"trade_state":"NOTPAY"}"#;
    assert_eq!(map_v3_query(V3Answer::Success { body: notpay.to_vec() }).unwrap(), RemoteTradeState::NotPay);
}

#[test]
fn prepay_ids_are_checked() {
    assert!(check_prepay_id(Some("wx201410272009395522657a690389285100")).is_ok());
    assert!(check_prepay_id(Some("wx&package=x")).is_err());
    assert!(check_prepay_id(Some(&"a".repeat(65))).is_err());
    assert!(check_prepay_id(None).is_err());
}

#[test]
fn settings_are_validated() {
    let bad = |s: PayClientSettings| WechatPayClient::new(s).is_err();
    assert!(bad(PayClientSettings { attempts_max: 0, ..PayClientSettings::default() }));
    assert!(bad(PayClientSettings { attempts_max: ATTEMPTS_MAX_LIMIT + 1, ..PayClientSettings::default() }));
    assert!(bad(PayClientSettings { base_url: "ftp://x".into(), ..PayClientSettings::default() }));
    assert!(bad(PayClientSettings { response_bytes_max: 0, ..PayClientSettings::default() }));
    let ok = WechatPayClient::new(PayClientSettings { base_url: "http://x/".into(), ..PayClientSettings::default() });
    assert_eq!(ok.map(|c| c.url("/pay/orderquery")).ok().as_deref(), Some("http://x/pay/orderquery"));
}

#[test]
fn missing_settings_are_reported() {
    let m = MerchantCredentials { api_v2_key: None, ..merchant() };
    assert!(matches!(v2_key(&m), Err(PayPortError::Settings(_))));
    assert!(matches!(v3_signer(&merchant()), Err(PayPortError::Settings(_))));
    let garbage = MerchantCredentials {
        merchant_cert_serial: Some("S".into()),
        merchant_private_key_pem: Some("not a key".into()),
        ..merchant()
    };
    assert!(matches!(v3_signer(&garbage), Err(PayPortError::Settings(_))));
}
