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
