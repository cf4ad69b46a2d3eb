use wxcm_domain::payment::PaymentError;

use super::*;

#[test]
fn recharge_order_ids_are_valid_stable_and_distinct() {
    let tenant = TenantId::parse("acme").unwrap();
    let member = MemberId::new_random();
    let a = IdempotencyKey::parse("key-00000001").unwrap();
    let b = IdempotencyKey::parse("key-00000002").unwrap();
    let id = recharge_order_id(&tenant, &member, &a).unwrap();
    assert_eq!(id.as_str().len(), 32);
    assert!(OutTradeNo::parse(id.as_str()).is_ok());
    assert_eq!(id, recharge_order_id(&tenant, &member, &a).unwrap());
    assert_ne!(id, recharge_order_id(&tenant, &member, &b).unwrap());
}

#[test]
fn only_refusals_are_permanent() {
    assert!(PayFlowError::from(PaymentOpError::NotFound).is_permanent());
    assert!(PayFlowError::from(PaymentOpError::Rejected(PaymentError::TotalMismatch { amount_fen: 1, paid_fen: 2 }))
        .is_permanent());
    assert!(!PayFlowError::from(PaymentOpError::Contention).is_permanent());
    assert!(!PayFlowError::from(PaymentOpError::Infra("db down".into())).is_permanent());
}

#[test]
fn a_recharge_defaults_to_the_api_the_merchant_has_settings_for() {
    use crate::pay_port::MerchantCredentials;
    use wxcm_domain::payment::PayApiVersion;
    let some = |s: &str| Some(s.to_owned());
    let v2_only = MerchantCredentials {
        appid: "wx0123456789abcdef".into(),
        mch_id: "1900000109".into(),
        api_v2_key: some("192006250b4c09247ec02edce69f6a2d"),
        api_v3_key: None,
        merchant_cert_serial: None,
        merchant_private_key_pem: None,
    };
    assert_eq!(default_api(&v2_only), PayApiVersion::V2);
    let both = MerchantCredentials {
        api_v3_key: some("0123456789abcdef0123456789abcdef"),
        merchant_cert_serial: some("3775B6A45ACD588826D15E583A95F5DD2A9F7FA6"),
        merchant_private_key_pem: some("-----BEGIN PRIVATE KEY-----"),
        ..v2_only.clone()
    };
    assert_eq!(default_api(&both), PayApiVersion::V3);
    let v3_without_key_pair = MerchantCredentials { merchant_private_key_pem: None, ..both.clone() };
    assert_eq!(default_api(&v3_without_key_pair), PayApiVersion::V2, "incomplete v3 falls back to v2");
    let nothing = MerchantCredentials { api_v2_key: None, ..v3_without_key_pair };
    assert_eq!(default_api(&nothing), PayApiVersion::V3, "v3's error names what is missing");
}
