//! Given/when/then tests, one per payment rule, and a property test over
//! random command sequences. Timestamps are fixed; nothing reads the wall clock.

use chrono::{DateTime, Duration, Utc};

use super::*;
use crate::{Actor, IdempotencyKey, Reference};

// ---------------------------------------------------------------- harness

struct Given {
    order: PaymentOrder,
}

fn given(events: Vec<PaymentEvent>) -> Given {
    let mut order = PaymentOrder::default();
    for (index, event) in events.iter().enumerate() {
        order.apply(event).unwrap_or_else(|e| panic!("history event {index}: {e}"));
    }
    Given { order }
}

/// The rule `event` breaks when applied after `history`.
#[track_caller]
fn broken_rule(history: Vec<PaymentEvent>, event: PaymentEvent) -> &'static str {
    let mut order = given(history).order;
    match order.apply(&event) {
        Ok(()) => panic!("{} applied: {event:?}", event.event_type()),
        Err(broken) => broken.rule,
    }
}

impl Given {
    fn when(self, command: PaymentCommand, now: DateTime<Utc>) -> When {
        let result = self.order.handle(command, now);
        When { order: self.order, result }
    }
}

struct When {
    order: PaymentOrder,
    result: Result<Vec<PaymentEvent>, PaymentError>,
}

impl When {
    #[track_caller]
    fn then_events(self, expected: Vec<PaymentEvent>) -> PaymentOrder {
        assert_eq!(self.result, Ok(expected.clone()));
        let mut order = self.order;
        for event in &expected {
            order.apply(event).unwrap();
        }
        order
    }

    #[track_caller]
    fn then_no_events(self) -> PaymentOrder {
        self.then_events(Vec::new())
    }

    #[track_caller]
    fn then_error(self, expected: PaymentError) {
        assert_eq!(self.result, Err(expected));
    }
}

// ---------------------------------------------------------------- fixtures

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn t0() -> DateTime<Utc> {
    at("2026-03-10T02:00:00Z")
}

fn expires() -> DateTime<Utc> {
    t0() + Duration::minutes(30)
}

fn fen(n: i64) -> AmountFen {
    AmountFen::new(n).unwrap()
}

fn pay_ref(s: &str) -> PayRef {
    PayRef::parse(s).unwrap()
}

fn order_id() -> OutTradeNo {
    OutTradeNo::parse("rc20260310000001").unwrap()
}

fn tenant_id() -> TenantId {
    TenantId::parse("acme-cinema").unwrap()
}

fn openid() -> OpenId {
    OpenId::parse("oABCdef123456").unwrap()
}

fn appid() -> AppId {
    AppId::parse("wx0123456789abcdef").unwrap()
}

fn mch_id() -> PayRef {
    pay_ref("1900000109")
}

fn member_id() -> MemberId {
    MemberId::for_openid(&tenant_id(), &openid())
}

fn prov() -> Provenance {
    Provenance {
        actor: Actor::Member { member_id: member_id() },
        reason: Reference::parse("balance recharge").unwrap(),
        reference: None,
        idempotency_key: IdempotencyKey::parse("key-00000001").unwrap(),
    }
}

const AMOUNT: i64 = 10_000;

fn create() -> PaymentCommand {
    PaymentCommand::Create {
        order_id: order_id(),
        tenant_id: tenant_id(),
        member_id: member_id(),
        openid: openid(),
        appid: appid(),
        mch_id: mch_id(),
        purpose: PaymentPurpose::BalanceRecharge,
        amount_fen: fen(AMOUNT),
        api_version: PayApiVersion::V3,
        expires_at: expires(),
        provenance: prov(),
    }
}

fn created() -> PaymentEvent {
    PaymentEvent::PaymentOrderCreated {
        order_id: order_id(),
        tenant_id: tenant_id(),
        member_id: member_id(),
        openid: openid(),
        appid: appid(),
        mch_id: mch_id(),
        purpose: PaymentPurpose::BalanceRecharge,
        amount_fen: fen(AMOUNT),
        api_version: PayApiVersion::V3,
        created_at: t0(),
        expires_at: expires(),
        provenance: prov(),
    }
}

fn mark_paid(transaction_id: &str) -> PaymentCommand {
    PaymentCommand::MarkPaid {
        transaction_id: pay_ref(transaction_id),
        total_fen: AMOUNT,
        appid: appid(),
        mch_id: mch_id(),
        paid_at: t0() + Duration::minutes(1),
        via: PaidVia::NotifyV3,
        notification_id: Some(pay_ref("EV-2018022511223320873")),
    }
}

fn paid(transaction_id: &str) -> PaymentEvent {
    PaymentEvent::PaymentOrderPaid {
        transaction_id: pay_ref(transaction_id),
        total_fen: fen(AMOUNT),
        paid_at: t0() + Duration::minutes(1),
        via: PaidVia::NotifyV3,
        notification_id: Some(pay_ref("EV-2018022511223320873")),
    }
}

fn close(reason: CloseReason) -> PaymentCommand {
    PaymentCommand::Close { reason }
}

fn closed(reason: CloseReason) -> PaymentEvent {
    PaymentEvent::PaymentOrderClosed { reason, closed_at: t0() }
}

fn refund(refund_no: &str, amount: i64) -> PaymentCommand {
    PaymentCommand::RecordRefund {
        refund_no: pay_ref(refund_no),
        refund_id: pay_ref(&format!("wx-{refund_no}")),
        amount_fen: fen(amount),
        succeeded_at: t0(),
    }
}

fn refunded(refund_no: &str, amount: i64, total: i64) -> PaymentEvent {
    PaymentEvent::PaymentOrderRefunded {
        refund_no: pay_ref(refund_no),
        refund_id: pay_ref(&format!("wx-{refund_no}")),
        amount_fen: fen(amount),
        refunded_total_fen: total,
        fully_refunded: total == AMOUNT,
        succeeded_at: t0(),
    }
}

const TX: &str = "4200001234202603100000000001";

// ---------------------------------------------------------------- create

#[test]
fn create_records_the_order() {
    let order = given(vec![]).when(create(), t0()).then_events(vec![created()]);
    assert_eq!(order.status(), Some(PaymentStatus::Created));
    assert_eq!(order.tenant(), Some(&tenant_id()));
}

#[test]
fn creating_the_same_order_again_writes_nothing() {
    given(vec![created()]).when(create(), t0() + Duration::seconds(5)).then_no_events();
}

#[test]
fn creating_an_order_id_with_other_details_is_refused() {
    let PaymentCommand::Create { order_id, tenant_id, member_id, openid, appid, mch_id, purpose, api_version, .. } =
        create()
    else {
        unreachable!()
    };
    let other = PaymentCommand::Create {
        order_id,
        tenant_id,
        member_id,
        openid,
        appid,
        mch_id,
        purpose,
        amount_fen: fen(AMOUNT + 1),
        api_version,
        expires_at: expires(),
        provenance: prov(),
    };
    given(vec![created()]).when(other, t0()).then_error(PaymentError::AlreadyExists);
}

#[test]
fn an_order_must_expire_after_its_creation() {
    given(vec![]).when(create(), expires()).then_error(PaymentError::ExpiresInThePast);
}

#[test]
fn commands_on_a_missing_order_are_refused() {
    for command in [mark_paid(TX), close(CloseReason::Expired), refund("r1", 1)] {
        given(vec![]).when(command, t0()).then_error(PaymentError::NotFound);
    }
}

#[test]
fn applying_an_event_to_a_missing_order_names_the_rule() {
    for event in [paid(TX), closed(CloseReason::Expired), refunded("r1", 1, 1)] {
        assert_eq!(broken_rule(vec![], event), rules::CREATED_FIRST);
    }
    assert_eq!(broken_rule(vec![created()], created()), rules::CREATED_ONCE);
}

// ---------------------------------------------------------------- paid

#[test]
fn mark_paid_records_the_payment_once() {
    let order = given(vec![created()]).when(mark_paid(TX), t0()).then_events(vec![paid(TX)]);
    assert_eq!(order.status(), Some(PaymentStatus::Paid));
    assert_eq!(order.payment().map(|p| p.transaction_id.as_str()), Some(TX));
}

#[test]
fn mark_paid_again_with_the_same_transaction_writes_nothing() {
    given(vec![created(), paid(TX)]).when(mark_paid(TX), t0()).then_no_events();
}

#[test]
fn mark_paid_with_another_transaction_is_refused() {
    given(vec![created(), paid(TX)])
        .when(mark_paid("4200009999"), t0())
        .then_error(PaymentError::PaidByAnotherTransaction);
}

#[test]
fn a_paid_total_other_than_the_amount_is_refused() {
    let PaymentCommand::MarkPaid { transaction_id, appid, mch_id, paid_at, via, notification_id, .. } = mark_paid(TX)
    else {
        unreachable!()
    };
    let short = PaymentCommand::MarkPaid {
        transaction_id,
        total_fen: AMOUNT - 1,
        appid,
        mch_id,
        paid_at,
        via,
        notification_id,
    };
    given(vec![created()])
        .when(short, t0())
        .then_error(PaymentError::TotalMismatch { amount_fen: AMOUNT, paid_fen: AMOUNT - 1 });
}

#[test]
fn a_payment_to_another_appid_or_merchant_is_refused() {
    let mut other_app = mark_paid(TX);
    if let PaymentCommand::MarkPaid { appid, .. } = &mut other_app {
        *appid = AppId::parse("wx00000000000000aa").unwrap();
    }
    given(vec![created()]).when(other_app, t0()).then_error(PaymentError::AppIdMismatch("wx00000000000000aa".into()));
    let mut other_mch = mark_paid(TX);
    if let PaymentCommand::MarkPaid { mch_id, .. } = &mut other_mch {
        *mch_id = pay_ref("1900000999");
    }
    given(vec![created()]).when(other_mch, t0()).then_error(PaymentError::MchIdMismatch("1900000999".into()));
}

#[test]
fn a_payment_after_the_close_is_refused_for_the_application_to_flag() {
    given(vec![created(), closed(CloseReason::Expired)])
        .when(mark_paid(TX), t0())
        .then_error(PaymentError::ClosedButPaid(TX.into()));
}

// ---------------------------------------------------------------- close

#[test]
fn close_closes_a_created_order() {
    let order =
        given(vec![created()]).when(close(CloseReason::ByQuery), t0()).then_events(vec![closed(CloseReason::ByQuery)]);
    assert_eq!(order.status(), Some(PaymentStatus::Closed));
}

#[test]
fn closing_a_closed_order_writes_nothing() {
    given(vec![created(), closed(CloseReason::Expired)]).when(close(CloseReason::ByMerchant), t0()).then_no_events();
}

#[test]
fn closing_a_paid_order_is_refused() {
    given(vec![created(), paid(TX)]).when(close(CloseReason::Expired), t0()).then_error(PaymentError::AlreadyPaid);
}

// ---------------------------------------------------------------- refunds

#[test]
fn refunds_accumulate_until_fully_refunded() {
    let order = given(vec![created(), paid(TX)])
        .when(refund("r1", 4_000), t0())
        .then_events(vec![refunded("r1", 4_000, 4_000)]);
    assert!(!order.fully_refunded());
    let order = Given { order }.when(refund("r2", 6_000), t0()).then_events(vec![refunded("r2", 6_000, AMOUNT)]);
    assert!(order.fully_refunded());
    assert_eq!(order.refunded_total_fen(), AMOUNT);
}

// ---------------------------------------------------------------- inconsistent streams

#[test]
fn applying_a_payment_twice_or_after_the_close_names_the_rule() {
    assert_eq!(broken_rule(vec![created(), paid(TX)], paid("4200000000000000000000000002")), rules::PAID_ONCE);
    assert_eq!(broken_rule(vec![created(), closed(CloseReason::Expired)], paid(TX)), rules::PAID_OR_CLOSED);
    assert_eq!(broken_rule(vec![created(), paid(TX)], closed(CloseReason::Expired)), rules::PAID_OR_CLOSED);
    let history = vec![created(), closed(CloseReason::Expired)];
    assert_eq!(broken_rule(history, closed(CloseReason::ByQuery)), rules::CLOSED_ONCE);
}

#[test]
fn applying_a_payment_of_another_total_names_the_rule() {
    let PaymentEvent::PaymentOrderPaid { transaction_id, paid_at, via, notification_id, .. } = paid(TX) else {
        unreachable!("paid() is a payment");
    };
    let other_total =
        PaymentEvent::PaymentOrderPaid { transaction_id, total_fen: fen(1), paid_at, via, notification_id };
    assert_eq!(broken_rule(vec![created()], other_total), rules::PAID_TOTAL);
}

#[test]
fn applying_a_refund_recomputes_its_total_and_flag() {
    let history = vec![created(), paid(TX), refunded("r1", 4_000, 4_000)];
    // The stated total must be the recorded refunds plus this one.
    assert_eq!(broken_rule(history.clone(), refunded("r2", 1_000, 1_000)), rules::REFUNDED_TOTAL);
    let wrong_flag = match refunded("r2", 6_000, AMOUNT) {
        PaymentEvent::PaymentOrderRefunded {
            refund_no,
            refund_id,
            amount_fen,
            refunded_total_fen,
            succeeded_at,
            ..
        } => PaymentEvent::PaymentOrderRefunded {
            refund_no,
            refund_id,
            amount_fen,
            refunded_total_fen,
            fully_refunded: false,
            succeeded_at,
        },
        other => unreachable!("refunded() is a refund: {other:?}"),
    };
    assert_eq!(broken_rule(history.clone(), wrong_flag), rules::FULLY_REFUNDED);
    assert_eq!(broken_rule(history.clone(), refunded("r2", 7_000, 11_000)), rules::REFUNDS_WITHIN_AMOUNT);
    assert_eq!(broken_rule(history, refunded("r1", 1_000, 5_000)), rules::REFUND_NO_ONCE);
    assert_eq!(broken_rule(vec![created()], refunded("r1", 1, 1)), rules::REFUND_AFTER_PAYMENT);
}

#[test]
fn refunds_need_a_paid_order() {
    given(vec![created()]).when(refund("r1", 1), t0()).then_error(PaymentError::NotPaid);
    given(vec![created(), closed(CloseReason::Expired)]).when(refund("r1", 1), t0()).then_error(PaymentError::NotPaid);
}

#[test]
fn refunds_beyond_the_amount_are_refused() {
    given(vec![created(), paid(TX), refunded("r1", 4_000, 4_000)])
        .when(refund("r2", 6_001), t0())
        .then_error(PaymentError::RefundExceedsPayment { refundable_fen: 6_000, requested_fen: 6_001 });
}

#[test]
fn the_same_refund_no_applies_once() {
    let history = vec![created(), paid(TX), refunded("r1", 4_000, 4_000)];
    given(history.clone()).when(refund("r1", 4_000), t0()).then_no_events();
    given(history).when(refund("r1", 3_000), t0()).then_error(PaymentError::RefundConflict("r1".into()));
}

#[test]
fn refunds_stop_at_refunds_max() {
    let mut history = vec![created(), paid(TX)];
    for i in 0..REFUNDS_MAX as i64 {
        history.push(refunded(&format!("r{i}"), 1, i + 1));
    }
    given(history).when(refund("one-more", 1), t0()).then_error(PaymentError::TooManyRefunds);
}

// ---------------------------------------------------------------- properties

mod properties {
    use proptest::prelude::*;

    use super::*;

    const TRANSACTIONS: [&str; 2] = ["4200000000000001", "4200000000000002"];
    const REFUND_NOS: [&str; 4] = ["r-a", "r-b", "r-c", "r-d"];

    #[derive(Debug, Clone)]
    enum Op {
        Create,
        Pay(usize, bool),
        Close(CloseReason),
        Refund(usize, i64),
    }

    fn op() -> impl Strategy<Value = Op> {
        let reason = prop_oneof![Just(CloseReason::Expired), Just(CloseReason::ByQuery), Just(CloseReason::ByMerchant)];
        prop_oneof![
            1 => Just(Op::Create),
            3 => (0..TRANSACTIONS.len(), any::<bool>()).prop_map(|(t, exact)| Op::Pay(t, exact)),
            2 => reason.prop_map(Op::Close),
            5 => (0..REFUND_NOS.len(), prop_oneof![1..=AMOUNT / 2, Just(AMOUNT)]).prop_map(|(r, a)| Op::Refund(r, a)),
        ]
    }

    fn to_command(op: &Op) -> PaymentCommand {
        match op {
            Op::Create => create(),
            Op::Pay(t, exact) => {
                let mut command = mark_paid(TRANSACTIONS[*t]);
                if let PaymentCommand::MarkPaid { total_fen, .. } = &mut command {
                    if !exact {
                        *total_fen += 1;
                    }
                }
                command
            }
            Op::Close(reason) => close(*reason),
            Op::Refund(r, a) => refund(REFUND_NOS[*r], *a),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn refunds_never_exceed_the_amount_and_orders_are_paid_at_most_once(
            script in prop::collection::vec(op(), 0..=40)
        ) {
            let mut order = PaymentOrder::default();
            let mut events = Vec::new();
            for op in &script {
                let before = order.clone();
                let command = to_command(op);
                match order.handle(command.clone(), t0()) {
                    Ok(new_events) => {
                        prop_assert!(new_events.len() <= 1);
                        prop_assert_eq!(order.handle(command, t0()), Ok(new_events.clone()));
                        for event in new_events {
                            order.apply(&event).unwrap();
                            let json = serde_json::to_value(&event).unwrap();
                            prop_assert_eq!(serde_json::from_value::<PaymentEvent>(json).unwrap(), event.clone());
                            events.push(event);
                        }
                    }
                    Err(_) => prop_assert_eq!(&order, &before, "a refused command changes nothing"),
                }
                prop_assert!(order.refunded_total_fen() <= AMOUNT);
                prop_assert!(order.refunded_total_fen() >= 0);
            }
            let paid = events.iter().filter(|e| matches!(e, PaymentEvent::PaymentOrderPaid { .. })).count();
            prop_assert!(paid <= 1, "paid {} times", paid);
            let closed = events.iter().filter(|e| matches!(e, PaymentEvent::PaymentOrderClosed { .. })).count();
            prop_assert!(paid + closed <= 1, "paid and closed");
            let refunded: i64 = events
                .iter()
                .filter_map(|e| match e {
                    PaymentEvent::PaymentOrderRefunded { amount_fen, .. } => Some(amount_fen.get()),
                    _ => None,
                })
                .sum();
            prop_assert_eq!(refunded, order.refunded_total_fen());

            let mut replayed = PaymentOrder::default();
            events.iter().for_each(|e| replayed.apply(e).unwrap());
            prop_assert_eq!(&replayed, &order);
            let json = serde_json::to_string(&order).unwrap();
            prop_assert_eq!(serde_json::from_str::<PaymentOrder>(&json).unwrap(), order);
        }
    }
}
