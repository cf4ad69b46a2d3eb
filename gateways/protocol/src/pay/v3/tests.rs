//! V9: no published v3 fixture pairs a 32-byte APIv3 key with a signature, so
//! these tests use a committed RSA-2048 key pair (generated once with
//! `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048`; keygen in
//! debug builds is slow) and check the happy path and every tampered field.

use super::*;

const PLATFORM_PRIVATE_PEM: &str = include_str!("../../../../testdata/platform_private.pem");
const PLATFORM_PUBLIC_PEM: &str = include_str!("../../../../testdata/platform_public.pem");
const OTHER_PRIVATE_PEM: &str = include_str!("../../../../testdata/other_private.pem");
const OTHER_PUBLIC_PEM: &str = include_str!("../../../../testdata/other_public.pem");

const SERIAL: &str = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1";
const NOW: i64 = 1_700_000_000;
const NONCE: &str = "fdasflkja484w";
const BODY: &[u8] = br#"{"id":"EV-2018022511223320873","create_time":"2015-05-20T13:29:35+08:00","resource_type":"encrypt-resource","event_type":"TRANSACTION.SUCCESS","summary":"pay ok","resource":{"original_type":"transaction","algorithm":"AEAD_AES_256_GCM","ciphertext":"","associated_data":"","nonce":""}}"#;
const API_V3_KEY: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";
const RESOURCE_NONCE: &str = "abcdefghijkl";

fn platform_private() -> PrivateKey {
    load_private_key_pem(PLATFORM_PRIVATE_PEM).expect("platform private key")
}

fn platform_keys() -> HashMap<String, PublicKey> {
    HashMap::from([(SERIAL.to_owned(), load_public_key_pem(PLATFORM_PUBLIC_PEM).expect("platform public key"))])
}

fn signed_headers() -> V3Headers {
    let timestamp = NOW.to_string();
    let signature_b64 = sign_message(&platform_private(), &timestamp, NONCE, BODY).expect("signs");
    V3Headers { timestamp, nonce: NONCE.to_owned(), signature_b64, serial: SERIAL.to_owned() }
}

#[test]
fn notification_signature_happy_path() {
    assert_eq!(verify_notification(&signed_headers(), BODY, &platform_keys(), NOW), Ok(()));
    // Within the window on both sides.
    assert_eq!(verify_notification(&signed_headers(), BODY, &platform_keys(), NOW + 299), Ok(()));
    assert_eq!(verify_notification(&signed_headers(), BODY, &platform_keys(), NOW - 299), Ok(()));
    let btree: BTreeMap<String, PublicKey> = platform_keys().into_iter().collect();
    assert_eq!(verify_notification(&signed_headers(), BODY, &btree, NOW), Ok(()));
}

#[test]
fn tampered_body_byte_is_refused() {
    for i in [0, BODY.len() / 2, BODY.len() - 1] {
        let mut body = BODY.to_vec();
        body[i] ^= 0x20;
        assert_eq!(
            verify_notification(&signed_headers(), &body, &platform_keys(), NOW),
            Err(V3Error::BadSignature),
            "byte {i}"
        );
    }
    // The raw bytes are signed: a trailing newline is a different body.
    let mut body = BODY.to_vec();
    body.push(b'\n');
    assert_eq!(verify_notification(&signed_headers(), &body, &platform_keys(), NOW), Err(V3Error::BadSignature));
}

#[test]
fn tampered_headers_are_refused() {
    let keys = platform_keys();
    let mut h = signed_headers();
    h.timestamp = (NOW + 1).to_string();
    assert_eq!(verify_notification(&h, BODY, &keys, NOW), Err(V3Error::BadSignature));

    let mut h = signed_headers();
    h.nonce.push('x');
    assert_eq!(verify_notification(&h, BODY, &keys, NOW), Err(V3Error::BadSignature));

    let mut h = signed_headers();
    let mut sig = BASE64.decode(&h.signature_b64).expect("base64");
    sig[10] ^= 0x01;
    h.signature_b64 = BASE64.encode(sig);
    assert_eq!(verify_notification(&h, BODY, &keys, NOW), Err(V3Error::BadSignature));

    let mut h = signed_headers();
    h.signature_b64 = "not*base64".to_owned();
    assert_eq!(verify_notification(&h, BODY, &keys, NOW), Err(V3Error::SignatureEncoding));

    let mut h = signed_headers();
    h.serial = "0000".to_owned();
    assert_eq!(verify_notification(&h, BODY, &keys, NOW), Err(V3Error::UnknownSerial));

    let mut h = signed_headers();
    h.serial = String::new();
    assert_eq!(verify_notification(&h, BODY, &keys, NOW), Err(V3Error::BadHeader("serial")));

    for bad in ["", "-1700000000", " 1700000000", "17e8", "1234567890123"] {
        let mut h = signed_headers();
        h.timestamp = bad.to_owned();
        assert_eq!(verify_notification(&h, BODY, &keys, NOW), Err(V3Error::BadHeader("timestamp")), "{bad:?}");
    }
    for bad in ["", "a\nb", "a b"] {
        let mut h = signed_headers();
        h.nonce = bad.to_owned();
        assert_eq!(verify_notification(&h, BODY, &keys, NOW), Err(V3Error::BadHeader("nonce")), "{bad:?}");
    }
}

#[test]
fn stale_timestamps_are_refused_both_ways() {
    let keys = platform_keys();
    let h = signed_headers();
    assert_eq!(verify_notification(&h, BODY, &keys, NOW + 300), Err(V3Error::StaleTimestamp { skew_secs: 300 }));
    assert_eq!(verify_notification(&h, BODY, &keys, NOW - 300), Err(V3Error::StaleTimestamp { skew_secs: 300 }));
    assert_eq!(verify_notification(&h, BODY, &keys, NOW + 86_400), Err(V3Error::StaleTimestamp { skew_secs: 86_400 }));
    assert!(matches!(verify_notification(&h, BODY, &keys, i64::MIN), Err(V3Error::StaleTimestamp { .. })));
}

#[test]
fn signtest_probe_is_refused() {
    let mut h = signed_headers();
    h.signature_b64 = format!("{SIGNTEST_PREFIX}{}", h.signature_b64);
    assert_eq!(verify_notification(&h, BODY, &platform_keys(), NOW), Err(V3Error::SignatureProbe));
}

#[test]
fn signature_by_another_key_is_refused() {
    let other = load_private_key_pem(OTHER_PRIVATE_PEM).expect("other key");
    let mut h = signed_headers();
    h.signature_b64 = sign_message(&other, &h.timestamp, NONCE, BODY).expect("signs");
    assert_eq!(verify_notification(&h, BODY, &platform_keys(), NOW), Err(V3Error::BadSignature));
    // Verifying with the wrong platform key under the right serial fails too.
    let wrong = HashMap::from([(SERIAL.to_owned(), load_public_key_pem(OTHER_PUBLIC_PEM).expect("other public"))]);
    assert_eq!(verify_notification(&signed_headers(), BODY, &wrong, NOW), Err(V3Error::BadSignature));
}

const TRANSACTION_JSON: &str = r#"{"appid":"wxd678efh567hg6787","mchid":"1230000109","out_trade_no":"1217752501201407033233368018","transaction_id":"1217752501201407033233368018","trade_type":"JSAPI","trade_state":"SUCCESS","trade_state_desc":"支付成功","bank_type":"CMC","attach":"","success_time":"2018-06-08T10:34:56+08:00","payer":{"openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},"amount":{"total":100,"payer_total":100,"currency":"CNY","payer_currency":"CNY"}}"#;

#[test]
fn resource_round_trip_and_shapes() {
    let ct = encrypt_resource(API_V3_KEY, RESOURCE_NONCE, "transaction", TRANSACTION_JSON.as_bytes()).expect("seals");
    let plain = decrypt_resource(API_V3_KEY, RESOURCE_NONCE, "transaction", &ct).expect("opens");
    let tx: TransactionResource = serde_json::from_slice(&plain).expect("transaction shape");
    assert_eq!(tx.amount.total_fen, 100);
    assert_eq!(tx.amount.payer_total_fen, Some(100));
    assert_eq!(tx.payer.openid, "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o");
    assert_eq!(tx.trade_state, "SUCCESS");

    let envelope = NotificationEnvelope {
        id: "EV-1".into(),
        create_time: "2018-06-08T10:34:56+08:00".into(),
        event_type: "TRANSACTION.SUCCESS".into(),
        resource_type: "encrypt-resource".into(),
        resource: EncryptedResource {
            algorithm: RESOURCE_ALGORITHM.into(),
            ciphertext: ct,
            associated_data: "transaction".into(),
            original_type: "transaction".into(),
            nonce: RESOURCE_NONCE.into(),
        },
        summary: "支付成功".into(),
    };
    let json = serde_json::to_string(&envelope).expect("serializes");
    let back: NotificationEnvelope = serde_json::from_str(&json).expect("parses");
    assert_eq!(back.resource.decrypt(API_V3_KEY).as_deref(), Ok(TRANSACTION_JSON.as_bytes()));
    let mut wrong_algorithm = back.resource.clone();
    wrong_algorithm.algorithm = "AEAD_AES_128_GCM".into();
    assert_eq!(wrong_algorithm.decrypt(API_V3_KEY), Err(ResourceError::Algorithm));

    let refund: RefundResource = serde_json::from_str(
        r#"{"mchid":"1900000100","transaction_id":"1008450740201411110005820873","out_trade_no":"20150806125346",
            "refund_id":"50200207182018070300011301001","out_refund_no":"7752501201407033233368018",
            "refund_status":"SUCCESS","success_time":"2018-06-08T10:34:56+08:00",
            "user_received_account":"招商银行信用卡0403",
            "amount":{"total":999,"refund":999,"payer_total":999,"payer_refund":999}}"#,
    )
    .expect("refund shape");
    assert_eq!(refund.amount.refund_fen, 999);
    assert_eq!(refund.refund_status, "SUCCESS");
}

#[test]
fn every_tampered_resource_part_is_refused() {
    let ct = encrypt_resource(API_V3_KEY, RESOURCE_NONCE, "transaction", TRANSACTION_JSON.as_bytes()).expect("seals");
    let raw = BASE64.decode(&ct).expect("base64");
    let open = |key: &[u8; 32], nonce: &str, aad: &str, ct: &str| decrypt_resource(key, nonce, aad, ct);

    let mut body_flip = raw.clone();
    body_flip[0] ^= 0x01;
    assert_eq!(
        open(API_V3_KEY, RESOURCE_NONCE, "transaction", &BASE64.encode(&body_flip)),
        Err(ResourceError::Authentication)
    );
    let mut tag_flip = raw.clone();
    let last = tag_flip.len() - 1;
    tag_flip[last] ^= 0x01;
    assert_eq!(
        open(API_V3_KEY, RESOURCE_NONCE, "transaction", &BASE64.encode(&tag_flip)),
        Err(ResourceError::Authentication)
    );
    assert_eq!(open(API_V3_KEY, "abcdefghijkm", "transaction", &ct), Err(ResourceError::Authentication));
    assert_eq!(open(API_V3_KEY, RESOURCE_NONCE, "refund", &ct), Err(ResourceError::Authentication));
    assert_eq!(open(API_V3_KEY, RESOURCE_NONCE, "", &ct), Err(ResourceError::Authentication));
    assert_eq!(
        open(b"0123456789abcdefghijklmnopqrstuw", RESOURCE_NONCE, "transaction", &ct),
        Err(ResourceError::Authentication)
    );
    assert_eq!(open(API_V3_KEY, "short", "transaction", &ct), Err(ResourceError::NonceLength));
    assert_eq!(open(API_V3_KEY, RESOURCE_NONCE, "transaction", "%%%"), Err(ResourceError::Encoding));
    assert_eq!(
        open(API_V3_KEY, RESOURCE_NONCE, "transaction", &BASE64.encode([0u8; 15])),
        Err(ResourceError::Encoding)
    );
    let too_long = "A".repeat(RESOURCE_B64_CHARS_MAX + 1);
    assert!(matches!(open(API_V3_KEY, RESOURCE_NONCE, "", &too_long), Err(ResourceError::TooLarge { .. })));
}

#[test]
fn authorization_header_round_trip() {
    let key = platform_private();
    let public = key.to_public_key();
    let body = r#"{"appid":"wxd678efh567hg6787","mchid":"1230000109"}"#;
    let header =
        authorization_header("1230000109", SERIAL, &key, "POST", "/v3/pay/transactions/jsapi", NOW, NONCE, body)
            .expect("signs");
    assert!(
        header.starts_with("WECHATPAY2-SHA256-RSA2048 mchid=\"1230000109\",nonce_str=\"fdasflkja484w\",signature=\"")
    );
    assert!(header.ends_with(&format!("\",timestamp=\"{NOW}\",serial_no=\"{SERIAL}\"")));

    let auth = parse_authorization_header(&header).expect("parses");
    assert_eq!(auth.mchid, "1230000109");
    assert_eq!(auth.serial_no, SERIAL);
    let path = "/v3/pay/transactions/jsapi";
    assert_eq!(verify_authorization(&auth, &public, "POST", path, body.as_bytes(), NOW), Ok(()));
    assert_eq!(verify_authorization(&auth, &public, "GET", path, body.as_bytes(), NOW), Err(V3Error::BadSignature));
    assert_eq!(
        verify_authorization(&auth, &public, "POST", "/v3/refund/domestic/refunds", body.as_bytes(), NOW),
        Err(V3Error::BadSignature)
    );
    assert_eq!(verify_authorization(&auth, &public, "POST", path, b"{}", NOW), Err(V3Error::BadSignature));
    assert!(matches!(
        verify_authorization(&auth, &public, "POST", path, body.as_bytes(), NOW + 300),
        Err(V3Error::StaleTimestamp { .. })
    ));
    let other = load_public_key_pem(OTHER_PUBLIC_PEM).expect("other public");
    assert_eq!(verify_authorization(&auth, &other, "POST", path, body.as_bytes(), NOW), Err(V3Error::BadSignature));

    // GET with a query and an empty body.
    let get =
        authorization_header("1230000109", SERIAL, &key, "GET", "/v3/certificates?x=1", NOW, NONCE, "").expect("signs");
    let auth = parse_authorization_header(&get).expect("parses");
    assert_eq!(verify_authorization(&auth, &public, "GET", "/v3/certificates?x=1", b"", NOW), Ok(()));
}

#[test]
fn authorization_header_refuses_values_that_break_quoting() {
    let key = platform_private();
    for (mchid, serial, nonce) in
        [("12\"3", SERIAL, NONCE), ("123", "A,B", NONCE), ("123", SERIAL, ""), ("123", SERIAL, "a b")]
    {
        assert!(
            matches!(
                authorization_header(mchid, serial, &key, "GET", "/v3/x", NOW, nonce, ""),
                Err(KeyError::HeaderValue(_))
            ),
            "{mchid:?} {serial:?} {nonce:?}"
        );
    }
}

#[test]
fn parse_authorization_header_refuses_malformed() {
    for bad in [
        "",
        "Bearer abc",
        "WECHATPAY2-SHA256-RSA2048 mchid=\"1\"",
        "WECHATPAY2-SHA256-RSA2048 mchid=\"1\",nonce_str=\"n\",signature=\"s\",timestamp=\"1\",serial_no=\"x\",extra=\"y\"",
        "WECHATPAY2-SHA256-RSA2048 mchid=\"1\",mchid=\"1\",nonce_str=\"n\",signature=\"s\",timestamp=\"1\",serial_no=\"x\"",
        "WECHATPAY2-SHA256-RSA2048 mchid=1,nonce_str=\"n\",signature=\"s\",timestamp=\"1\",serial_no=\"x\"",
    ] {
        assert_eq!(parse_authorization_header(bad), Err(V3Error::BadHeader("authorization")), "{bad:?}");
    }
}

#[test]
fn jsapi_v3_params_sign_the_four_lines() {
    let key = platform_private();
    let p = jsapi_params_v3(
        "wx8888888888888888",
        "wx201410272009395522657a690389285100",
        &key,
        1_414_561_699,
        "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
    )
    .expect("signs");
    assert_eq!(p.sign_type, "RSA");
    assert_eq!(p.package, "prepay_id=wx201410272009395522657a690389285100");
    let public = key.to_public_key();
    assert_eq!(verify_jsapi_params_v3(&p, &public), Ok(()));
    // The signature is exactly RSA-SHA256 over the four newline-terminated lines.
    let message = format!("{}\n{}\n{}\n{}\n", p.app_id, p.time_stamp, p.nonce_str, p.package);
    let sig = BASE64.decode(&p.pay_sign).expect("base64");
    assert!(public.pkcs1v15_verify::<Sha256>(message.as_bytes(), &sig).is_ok());
    let mut tampered = p.clone();
    tampered.package = "prepay_id=other".into();
    assert_eq!(verify_jsapi_params_v3(&tampered, &public), Err(V3Error::BadSignature));
}

#[test]
fn pem_loading_errors_are_clear_and_secret_free() {
    assert_eq!(load_private_key_pem("garbage").err(), Some(KeyError::PrivateKeyPem));
    assert_eq!(load_private_key_pem(PLATFORM_PUBLIC_PEM).err(), Some(KeyError::PrivateKeyPem));
    assert_eq!(load_public_key_pem(PLATFORM_PRIVATE_PEM).err(), Some(KeyError::PublicKeyPem));
    assert_eq!(load_public_key_pem(&"A".repeat(PEM_CHARS_MAX + 1)).err(), Some(KeyError::TooLarge));
    let message = KeyError::PrivateKeyPem.to_string();
    assert!(!message.contains("MII"), "{message}");
    assert_eq!(api_v3_key("0123456789abcdefghijklmnopqrstuv"), Ok(*API_V3_KEY));
    assert_eq!(api_v3_key("short"), Err(KeyError::ApiV3KeyLength));
}

#[test]
fn size_limits_hold_at_and_one_past_the_limit() {
    let keys = platform_keys();
    let mut h = signed_headers();
    h.signature_b64 = "A".repeat(HEADER_CHARS_MAX + 1);
    assert_eq!(verify_notification(&h, BODY, &keys, NOW), Err(V3Error::BadHeader("signature")));
    h.signature_b64 = "A".repeat(HEADER_CHARS_MAX);
    assert_eq!(verify_notification(&h, BODY, &keys, NOW), Err(V3Error::BadSignature));

    let mut h = signed_headers();
    h.nonce = "n".repeat(HEADER_CHARS_MAX + 1);
    assert_eq!(verify_notification(&h, BODY, &keys, NOW), Err(V3Error::BadHeader("nonce")));
    h.nonce = "n".repeat(HEADER_CHARS_MAX);
    assert_eq!(verify_notification(&h, BODY, &keys, NOW), Err(V3Error::BadSignature));

    let at_limit = "A".repeat(RESOURCE_B64_CHARS_MAX);
    assert_eq!(decrypt_resource(API_V3_KEY, RESOURCE_NONCE, "", &at_limit), Err(ResourceError::Authentication));
}
