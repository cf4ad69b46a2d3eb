//! Given/when/then tests of the order aggregate, one per command and refusal,
//! and property tests: random command sequences never compute a negative
//! amount to pay, end an order once, refund once, and replay to the live
//! state; a whole mall (one product, many orders, the process managers'
//! steps) never oversells.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration};
use proptest::prelude::*;
use uuid::Uuid;

use super::product_tests::{admin, member, now, order, points_price, product_id, qty, tenant};
use super::*;
use crate::coupon::{Benefit, CouponId};
use crate::{Actor, DomainEventMeta, EventSourced, InvariantViolation, PayRef};

fn fen(n: i64) -> AmountFen {
    AmountFen::new(n).unwrap()
}

fn pts(n: i64) -> PointsAmount {
    PointsAmount::new(n).unwrap()
}

fn key() -> IdempotencyKey {
    IdempotencyKey::parse("order-key-0001").unwrap()
}

fn the_member() -> Actor {
    Actor::Member { member_id: member(1) }
}

fn staff() -> Actor {
    Actor::Staff { username: "clerk".into() }
}

fn why(s: &str) -> Reference {
    Reference::parse(s).unwrap()
}

fn pay_ref(s: &str) -> PayRef {
    PayRef::parse(s).unwrap()
}

fn expires() -> DateTime<chrono::Utc> {
    now() + Duration::minutes(15)
}

fn coupon(benefit: Benefit) -> AppliedCoupon {
    AppliedCoupon { coupon_id: CouponId::from_uuid(Uuid::from_u128(5)), benefit }
}

fn place(price: Price, quantity: i64, coupon: Option<AppliedCoupon>, method: PaymentMethod) -> MallOrderCommand {
    MallOrderCommand::Place {
        order_id: order(1),
        tenant_id: tenant(),
        member_id: member(1),
        product_id: product_id(),
        product_name: ProductName::parse("popcorn").unwrap(),
        quantity: qty(quantity),
        unit_price: price,
        coupon,
        gift_coupon: None,
        method,
        expires_at: expires(),
        actor: the_member(),
        idempotency_key: key(),
    }
}

fn run(order: &MallOrder, command: MallOrderCommand, at: DateTime<chrono::Utc>) -> Result<MallOrder, MallOrderError> {
    let events = order.handle(command, at)?;
    let mut after = order.clone();
    for e in &events {
        after.apply(e).unwrap();
    }
    Ok(after)
}

/// An order that went through `commands` at `now()`.
#[track_caller]
fn given(commands: Vec<MallOrderCommand>) -> (MallOrder, Vec<MallOrderEvent>) {
    let mut order = MallOrder::default();
    let mut log = Vec::new();
    for (i, command) in commands.into_iter().enumerate() {
        let events = order.handle(command, now()).unwrap_or_else(|e| panic!("given command {i}: {e}"));
        for e in events {
            order.apply(&e).unwrap();
            log.push(e);
        }
    }
    (order, log)
}

#[track_caller]
fn only_event(order: &MallOrder, command: MallOrderCommand, at: DateTime<chrono::Utc>) -> MallOrderEvent {
    let mut events = order.handle(command, at).unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    events.remove(0)
}

#[track_caller]
fn broken_rule(history: &[MallOrderEvent], event: &MallOrderEvent) -> &'static str {
    let mut order = MallOrder::default();
    for e in history {
        order.apply(e).unwrap();
    }
    match order.apply(event) {
        Ok(()) => panic!("applied: {event:?}"),
        Err(InvariantViolation { rule, .. }) => rule,
    }
}

fn status(order: &MallOrder) -> OrderStatus {
    order.status.unwrap()
}

fn both() -> Price {
    Price::PointsAndFen { points: pts(200), amount_fen: fen(1_500) }
}

fn cash_only() -> Price {
    Price::Fen { amount_fen: fen(1_500) }
}

/// The ledger hold of order 1.
fn hold() -> Reference {
    order(1).hold_id()
}

fn held(points: i64) -> MallOrderCommand {
    MallOrderCommand::RecordPointsHeld { hold_id: hold(), points: pts(points) }
}

fn by_pay(amount: i64, transaction: &str) -> MallOrderCommand {
    MallOrderCommand::RecordPayment {
        cash: Some(CashPayment::WechatPay { amount_fen: fen(amount), transaction_id: pay_ref(transaction) }),
    }
}

fn by_balance(amount: i64) -> MallOrderCommand {
    MallOrderCommand::RecordPayment {
        cash: Some(CashPayment::Balance { amount_fen: fen(amount), charge_sequence: 42 }),
    }
}

fn refund(refund_no: Option<&str>) -> MallOrderCommand {
    MallOrderCommand::Refund { actor: admin(), reason: why("customer request"), pay_refund_no: refund_no.map(pay_ref) }
}

fn deliver(actor: Actor) -> MallOrderCommand {
    MallOrderCommand::Deliver { actor, store: why("store 1") }
}

// ---------------------------------------------------------------- totals

#[test]
fn totals_are_price_times_quantity_in_points_and_fen() {
    let t = OrderTotals::compute(both(), qty(3), None).unwrap();
    assert_eq!((t.points_total, t.cash_fen, t.discount_fen, t.cash_due_fen), (600, 4_500, 0, 4_500));
    let t = OrderTotals::compute(points_price(100), qty(99), None).unwrap();
    assert_eq!((t.points_total, t.cash_due_fen), (9_900, 0));
}

#[test]
fn price_times_quantity_past_what_an_order_carries_is_refused_not_wrapped() {
    let huge = Price::PointsAndFen { points: pts(PointsAmount::MAX), amount_fen: fen(AmountFen::MAX) };
    assert_eq!(OrderTotals::compute(huge, qty(2), None), Err(MallOrderError::TooLarge("points")));
    let huge = Price::Fen { amount_fen: fen(AmountFen::MAX) };
    assert_eq!(OrderTotals::compute(huge, qty(99), None), Err(MallOrderError::TooLarge("cash")));
    assert!(OrderTotals::compute(huge, qty(1), None).is_ok());
}

#[test]
fn quantities_are_positive_and_bounded() {
    for bad in [0, -1, -99, i64::from(QUANTITY_MAX) + 1, i64::from(u32::MAX) + 1, i64::MAX, i64::MIN] {
        assert_eq!(Quantity::new(bad), Err(QuantityError::OutOfRange(bad)));
        assert!(serde_json::from_value::<Quantity>(serde_json::json!(bad)).is_err());
    }
    assert_eq!(Quantity::new(1).map(Quantity::get), Ok(1));
    assert_eq!(Quantity::new(99).map(Quantity::get), Ok(QUANTITY_MAX));
    // A command naming a negative quantity never reaches the aggregate.
    let mut json = serde_json::to_value(place(cash_only(), 1, None, PaymentMethod::Balance)).unwrap();
    json["quantity"] = serde_json::json!(-3);
    assert!(serde_json::from_value::<MallOrderCommand>(json).is_err());
}

#[test]
fn a_coupon_reduces_the_cash_part_never_below_zero() {
    let big = coupon(Benefit::Cash { value_fen: fen(100_000), min_spend_fen: None });
    // With points to pay, the cash part may drop to zero.
    let t = OrderTotals::compute(both(), qty(1), Some(&big.benefit)).unwrap();
    assert_eq!((t.points_total, t.discount_fen, t.cash_due_fen), (200, 1_500, 0));
    // Without, at least a fen remains (WeChat Pay's minimum; every order has a payment).
    let t = OrderTotals::compute(cash_only(), qty(2), Some(&big.benefit)).unwrap();
    assert_eq!((t.cash_fen, t.discount_fen, t.cash_due_fen), (3_000, 2_999, 1));
    let one_fen = Price::Fen { amount_fen: fen(1) };
    assert_eq!(OrderTotals::compute(one_fen, qty(1), Some(&big.benefit)), Err(MallOrderError::CouponNotApplicable));
}

#[test]
fn discount_coupons_take_a_percentage_rounded_down_up_to_their_cap_above_their_minimum() {
    let pct = |cap: Option<i64>| Benefit::Discount { percent_off: 15, cap_fen: cap.map(fen) };
    let t = OrderTotals::compute(cash_only(), qty(1), Some(&pct(None))).unwrap();
    assert_eq!((t.discount_fen, t.cash_due_fen), (225, 1_275));
    let odd = Price::Fen { amount_fen: fen(999) };
    assert_eq!(OrderTotals::compute(odd, qty(1), Some(&pct(None))).unwrap().discount_fen, 149);
    assert_eq!(OrderTotals::compute(cash_only(), qty(4), Some(&pct(Some(500)))).unwrap().discount_fen, 500);
    let min = Benefit::Cash { value_fen: fen(500), min_spend_fen: Some(fen(3_000)) };
    assert_eq!(OrderTotals::compute(cash_only(), qty(1), Some(&min)), Err(MallOrderError::CouponNotApplicable));
    assert_eq!(OrderTotals::compute(cash_only(), qty(2), Some(&min)).unwrap().cash_due_fen, 2_500);
}

#[test]
fn gift_coupons_and_coupons_on_points_only_orders_do_not_apply() {
    let gift = Benefit::Gift { item: crate::coupon::CouponText::parse("popcorn").unwrap() };
    assert_eq!(OrderTotals::compute(cash_only(), qty(1), Some(&gift)), Err(MallOrderError::CouponNotApplicable));
    let cash = Benefit::Cash { value_fen: fen(100), min_spend_fen: None };
    assert_eq!(OrderTotals::compute(points_price(10), qty(1), Some(&cash)), Err(MallOrderError::CouponNotApplicable));
}

// ---------------------------------------------------------------- place

#[test]
fn an_order_is_placed_once_with_a_copy_of_its_price_and_a_fitting_method() {
    let fresh = MallOrder::default();
    let placed = only_event(&fresh, place(both(), 2, None, PaymentMethod::PointsAndWechatPay), now());
    let MallOrderEvent::MallOrderPlaced(o) = &placed else { panic!("{placed:?}") };
    assert_eq!((o.unit_price, o.totals.points_total, o.totals.cash_due_fen), (both(), 400, 3_000));
    assert_eq!((o.placed_at, o.expires_at), (now(), expires()));
    let (order, _) = given(vec![place(both(), 2, None, PaymentMethod::PointsAndWechatPay)]);
    assert_eq!(status(&order), OrderStatus::AwaitingPayment);
    assert_eq!(order.tenant(), Some(&tenant()));
    assert_eq!(
        order.handle(place(both(), 2, None, PaymentMethod::PointsAndWechatPay), now()),
        Err(MallOrderError::AlreadyPlaced)
    );

    let refused = |command| fresh.handle(command, now()).unwrap_err();
    assert!(matches!(
        refused(place(both(), 1, None, PaymentMethod::WechatPay)),
        MallOrderError::MethodMismatch { points: 200, cash_fen: 1_500, .. }
    ));
    assert!(matches!(
        refused(place(cash_only(), 1, None, PaymentMethod::PointsOnly)),
        MallOrderError::MethodMismatch { .. }
    ));
    assert!(matches!(
        refused(place(points_price(5), 1, None, PaymentMethod::PointsAndBalance)),
        MallOrderError::MethodMismatch { .. }
    ));
    // A coupon covering the cash part of a points-and-cash order leaves points only.
    let big = coupon(Benefit::Cash { value_fen: fen(100_000), min_spend_fen: None });
    assert!(fresh.handle(place(both(), 1, Some(big.clone()), PaymentMethod::PointsOnly), now()).is_ok());
    assert!(matches!(
        refused(place(both(), 1, Some(big), PaymentMethod::PointsAndBalance)),
        MallOrderError::MethodMismatch { .. }
    ));
}

#[test]
fn an_order_expires_after_now_and_within_the_pay_window_and_is_the_members_own() {
    let fresh = MallOrder::default();
    let with = |expires_at, actor| {
        let MallOrderCommand::Place {
            order_id,
            tenant_id,
            member_id,
            product_id,
            product_name,
            quantity,
            unit_price,
            coupon,
            method,
            idempotency_key,
            ..
        } = place(cash_only(), 1, None, PaymentMethod::Balance)
        else {
            unreachable!()
        };
        MallOrderCommand::Place {
            order_id,
            tenant_id,
            member_id,
            product_id,
            product_name,
            quantity,
            unit_price,
            coupon,
            gift_coupon: None,
            method,
            expires_at,
            actor,
            idempotency_key,
        }
    };
    assert_eq!(fresh.handle(with(now(), the_member()), now()), Err(MallOrderError::InvalidExpiry));
    let window = Duration::minutes(PAY_WINDOW_MAX_MINUTES);
    assert_eq!(
        fresh.handle(with(now() + window + Duration::seconds(1), the_member()), now()),
        Err(MallOrderError::InvalidExpiry)
    );
    assert!(fresh.handle(with(now() + window, the_member()), now()).is_ok());
    let someone_else = Actor::Member { member_id: member(2) };
    assert_eq!(fresh.handle(with(expires(), someone_else), now()), Err(MallOrderError::NotYourOrder));
    assert!(fresh.handle(with(expires(), admin()), now()).is_ok(), "an operator may place for a member");
}

#[test]
fn commands_on_an_order_not_placed_are_refused() {
    let fresh = MallOrder::default();
    for command in [
        held(1),
        by_balance(1),
        MallOrderCommand::Expire,
        MallOrderCommand::Cancel { actor: the_member(), reason: why("changed my mind") },
        deliver(staff()),
        refund(None),
    ] {
        assert_eq!(fresh.handle(command, now()), Err(MallOrderError::NotFound));
    }
    let paid = MallOrderEvent::MallOrderExpired { expired_at: now() };
    assert_eq!(broken_rule(&[], &paid), rules::ORDER_EXISTS);
}

#[test]
fn order_ids_from_requests_are_per_tenant_member_and_key_and_fix_the_hold() {
    let a = MallOrderId::for_request(&tenant(), member(1), &key());
    assert_eq!(a, MallOrderId::for_request(&tenant(), member(1), &key()));
    assert_ne!(a, MallOrderId::for_request(&tenant(), member(2), &key()));
    assert_ne!(a, MallOrderId::for_request(&TenantId::parse("other").unwrap(), member(1), &key()));
    assert_eq!(a.hold_id().as_str(), format!("mall-order:{a}"));
}

// ---------------------------------------------------------------- points and payment

#[test]
fn points_are_held_once_for_exactly_the_orders_points() {
    let (order, _) = given(vec![place(both(), 2, None, PaymentMethod::PointsAndBalance)]);
    assert_eq!(order.handle(held(399), now()), Err(MallOrderError::HoldMismatch { points: 400, held: 399 }));
    let event = only_event(&order, held(400), now());
    assert_eq!(event, MallOrderEvent::MallOrderPointsHeld { hold_id: hold(), points: pts(400), held_at: now() });
    let order = run(&order, held(400), now()).unwrap();
    assert_eq!(order.handle(held(400), now()), Ok(Vec::new()), "a retried record changes nothing");
    let other = MallOrderCommand::RecordPointsHeld { hold_id: why("another hold"), points: pts(400) };
    assert_eq!(order.handle(other, now()), Err(MallOrderError::AlreadyHeld));

    let (cash, _) = given(vec![place(cash_only(), 1, None, PaymentMethod::Balance)]);
    assert_eq!(cash.handle(held(1), now()), Err(MallOrderError::NoPointsPart));
    let (expired, log) = given(vec![place(points_price(10), 1, None, PaymentMethod::PointsOnly)]);
    let expired = run(&expired, MallOrderCommand::Expire, expires()).unwrap();
    assert_eq!(expired.handle(held(10), now()), Err(MallOrderError::Ended(OrderStatus::Expired)));

    let twice = MallOrderEvent::MallOrderPointsHeld { hold_id: hold(), points: pts(10), held_at: now() };
    let mut history = log;
    history.push(twice.clone());
    assert_eq!(broken_rule(&history, &twice), rules::ORDER_TRANSITION);
    let wrong = MallOrderEvent::MallOrderPointsHeld { hold_id: hold(), points: pts(11), held_at: now() };
    assert_eq!(broken_rule(&history[..1], &wrong), rules::ORDER_AMOUNTS);
}

#[test]
fn a_points_only_order_is_paid_by_its_held_points() {
    let (order, _) = given(vec![place(points_price(10), 3, None, PaymentMethod::PointsOnly)]);
    let pay = MallOrderCommand::RecordPayment { cash: None };
    assert_eq!(order.handle(pay.clone(), now()), Err(MallOrderError::PointsNotHeld));
    let order = run(&order, held(30), now()).unwrap();
    let event = only_event(&order, pay.clone(), now());
    assert_eq!(event, MallOrderEvent::MallOrderPaid { points: Some(pts(30)), cash: None, paid_at: now() });
    let paid = run(&order, pay.clone(), now()).unwrap();
    assert_eq!(status(&paid), OrderStatus::Paid);
    assert_eq!(paid.handle(pay, now()), Ok(Vec::new()), "a retried payment changes nothing");
    assert_eq!(paid.handle(refund(Some("rf-1")), now()), Err(MallOrderError::RefundNo));
    let MallOrderEvent::MallOrderRefunded { refund: r, .. } = only_event(&paid, refund(None), now()) else { panic!() };
    assert_eq!((r.points_back, r.cash_back, r.quantity_back), (Some(pts(30)), None, Some(qty(3))));
    assert!(matches!(paid.handle(by_balance(1), now()), Err(MallOrderError::MethodMismatch { .. })));
}

#[test]
fn a_cash_payment_must_match_the_method_and_the_amount_due_to_the_fen() {
    let (order, _) = given(vec![place(cash_only(), 2, None, PaymentMethod::Balance)]);
    assert_eq!(
        order.handle(by_balance(2_999), now()),
        Err(MallOrderError::AmountMismatch { due_fen: 3_000, paid_fen: 2_999 })
    );
    assert!(matches!(order.handle(by_pay(3_000, "tx-1"), now()), Err(MallOrderError::MethodMismatch { .. })));
    assert!(matches!(
        order.handle(MallOrderCommand::RecordPayment { cash: None }, now()),
        Err(MallOrderError::MethodMismatch { .. })
    ));
    let paid = run(&order, by_balance(3_000), now()).unwrap();
    assert_eq!(
        paid.payment.as_ref().and_then(|p| p.cash.clone()),
        Some(CashPayment::Balance { amount_fen: fen(3_000), charge_sequence: 42 })
    );
}

#[test]
fn a_pay_notification_applies_once_and_another_transaction_is_refused() {
    let big = coupon(Benefit::Cash { value_fen: fen(1_000), min_spend_fen: None });
    let (order, _) = given(vec![place(both(), 1, Some(big), PaymentMethod::PointsAndWechatPay), held(200)]);
    let paid = run(&order, by_pay(500, "tx-1"), now()).unwrap();
    assert_eq!(paid.payment.as_ref().and_then(|p| p.points), Some(pts(200)));
    assert_eq!(paid.handle(by_pay(500, "tx-1"), now()), Ok(Vec::new()));
    assert_eq!(paid.handle(by_pay(500, "tx-2"), now()), Err(MallOrderError::PaidByAnother));
    let (unheld, _) = given(vec![place(both(), 1, None, PaymentMethod::PointsAndWechatPay)]);
    assert_eq!(unheld.handle(by_pay(1_500, "tx-1"), now()), Err(MallOrderError::PointsNotHeld));
}

#[test]
fn a_payment_recorded_before_the_expiry_event_is_honoured_even_after_expires_at() {
    let (order, _) = given(vec![place(cash_only(), 1, None, PaymentMethod::WechatPay)]);
    let paid = run(&order, by_pay(1_500, "tx-1"), expires() + Duration::minutes(1)).unwrap();
    assert_eq!(status(&paid), OrderStatus::Paid);
    assert_eq!(paid.handle(MallOrderCommand::Expire, expires() + Duration::minutes(2)), Ok(Vec::new()));
}

// ---------------------------------------------------------------- expiry and cancel

#[test]
fn an_unpaid_order_expires_once_at_its_time() {
    let (order, log) = given(vec![place(both(), 1, None, PaymentMethod::PointsAndBalance), held(200)]);
    assert_eq!(
        order.handle(MallOrderCommand::Expire, expires() - Duration::seconds(1)),
        Err(MallOrderError::NotYetDue(expires()))
    );
    let event = only_event(&order, MallOrderCommand::Expire, expires());
    assert_eq!(event, MallOrderEvent::MallOrderExpired { expired_at: expires() });
    let expired = run(&order, MallOrderCommand::Expire, expires()).unwrap();
    assert_eq!(status(&expired), OrderStatus::Expired);
    assert_eq!(expired.handle(MallOrderCommand::Expire, expires()), Ok(Vec::new()), "due work twice");
    assert_eq!(expired.handle(deliver(staff()), now()), Err(MallOrderError::Ended(OrderStatus::Expired)));
    assert_eq!(expired.handle(refund(None), now()), Err(MallOrderError::NotPaid));

    let mut history = log.clone();
    history.push(event.clone());
    assert_eq!(broken_rule(&history, &event), rules::ORDER_TRANSITION, "expired twice");
    let early = MallOrderEvent::MallOrderExpired { expired_at: now() };
    assert_eq!(broken_rule(&log, &early), rules::ORDER_TRANSITION);
}

#[test]
fn only_an_unpaid_order_is_cancelled_by_its_member_or_an_operator() {
    let (order, _) = given(vec![place(cash_only(), 1, None, PaymentMethod::Balance)]);
    let cancel = |actor| MallOrderCommand::Cancel { actor, reason: why("changed my mind") };
    let stranger = Actor::Member { member_id: member(2) };
    assert_eq!(order.handle(cancel(stranger), now()), Err(MallOrderError::NotYourOrder));
    let event = only_event(&order, cancel(the_member()), now());
    assert_eq!(
        event,
        MallOrderEvent::MallOrderCancelled { actor: the_member(), reason: why("changed my mind"), cancelled_at: now() }
    );
    let cancelled = run(&order, cancel(admin()), now()).unwrap();
    assert_eq!(cancelled.handle(cancel(admin()), now()), Err(MallOrderError::Ended(OrderStatus::Cancelled)));
    assert_eq!(cancelled.handle(MallOrderCommand::Expire, expires()), Ok(Vec::new()));
    let paid = run(&order, by_balance(1_500), now()).unwrap();
    assert_eq!(paid.handle(cancel(the_member()), now()), Err(MallOrderError::AlreadyPaid));
}

/// The stated policy: money that arrives after the order released its stock,
/// points and coupon is refunded in full, never honoured.
#[test]
fn a_payment_after_the_expiry_is_recorded_and_refunded_never_honoured() {
    let (order, _) = given(vec![place(both(), 1, None, PaymentMethod::PointsAndWechatPay), held(200)]);
    let expired = run(&order, MallOrderCommand::Expire, expires()).unwrap();
    let late_at = expires() + Duration::seconds(3);
    let event = only_event(&expired, by_pay(1_500, "tx-late"), late_at);
    let late_cash = CashPayment::WechatPay { amount_fen: fen(1_500), transaction_id: pay_ref("tx-late") };
    assert_eq!(
        event,
        MallOrderEvent::MallOrderPaymentArrivedLate {
            cash: late_cash.clone(),
            after: OrderEnd::Expired,
            arrived_at: late_at
        }
    );
    let due = run(&expired, by_pay(1_500, "tx-late"), late_at).unwrap();
    assert_eq!(status(&due), OrderStatus::RefundDue);
    assert!(due.payment.is_none(), "never honoured");
    assert_eq!(due.handle(by_pay(1_500, "tx-late"), late_at), Ok(Vec::new()), "the notification retried");
    assert_eq!(due.handle(by_pay(1_500, "tx-other"), late_at), Err(MallOrderError::PaidByAnother));
    assert_eq!(due.handle(deliver(staff()), late_at), Err(MallOrderError::Ended(OrderStatus::RefundDue)));
    assert_eq!(due.handle(refund(None), late_at), Err(MallOrderError::RefundNo));

    // Only the late cash goes back: the expiry already released stock, points and coupon.
    let refunded = only_event(&due, refund(Some("rf-late")), late_at);
    let MallOrderEvent::MallOrderRefunded { refund: r, .. } = &refunded else { panic!("{refunded:?}") };
    assert_eq!(
        r,
        &OrderRefund {
            points_back: None,
            cash_back: Some(CashRefund::WechatPay {
                amount_fen: fen(1_500),
                transaction_id: pay_ref("tx-late"),
                refund_no: pay_ref("rf-late")
            }),
            quantity_back: None,
            coupon_back: None,
        }
    );
    let done = run(&due, refund(Some("rf-late")), late_at).unwrap();
    assert_eq!(status(&done), OrderStatus::Refunded);
    assert_eq!(done.handle(refund(Some("rf-late")), late_at), Err(MallOrderError::AlreadyRefunded));
    assert_eq!(done.handle(by_pay(1_500, "tx-late"), late_at), Ok(Vec::new()));
}

#[test]
fn a_late_balance_payment_of_a_cancelled_order_goes_back_to_the_balance_and_late_points_are_refused() {
    let (order, _) = given(vec![
        place(cash_only(), 1, None, PaymentMethod::Balance),
        MallOrderCommand::Cancel { actor: the_member(), reason: why("changed my mind") },
    ]);
    let due = run(&order, by_balance(1_500), now()).unwrap();
    assert_eq!(due.late_payment.as_ref().map(|l| l.after), Some(OrderEnd::Cancelled));
    let refunded = only_event(&due, refund(None), now());
    let MallOrderEvent::MallOrderRefunded { refund: r, .. } = refunded else { panic!() };
    assert_eq!(r.cash_back, Some(CashRefund::Balance { amount_fen: fen(1_500), charge_sequence: 42 }));

    let (points, _) = given(vec![place(points_price(10), 1, None, PaymentMethod::PointsOnly), held(10)]);
    let expired = run(&points, MallOrderCommand::Expire, expires()).unwrap();
    let pay = MallOrderCommand::RecordPayment { cash: None };
    assert_eq!(expired.handle(pay, expires()), Err(MallOrderError::Ended(OrderStatus::Expired)));
}

// ---------------------------------------------------------------- delivery and refund

#[test]
fn a_paid_order_is_delivered_once_by_staff_at_a_store() {
    let (order, _) = given(vec![place(cash_only(), 1, None, PaymentMethod::Balance)]);
    assert_eq!(order.handle(deliver(staff()), now()), Err(MallOrderError::NotPaid));
    let paid = run(&order, by_balance(1_500), now()).unwrap();
    assert_eq!(paid.handle(deliver(the_member()), now()), Err(MallOrderError::NotStaff));
    let event = only_event(&paid, deliver(staff()), now());
    assert_eq!(
        event,
        MallOrderEvent::MallOrderDelivered { actor: staff(), store: why("store 1"), delivered_at: now() }
    );
    let delivered = run(&paid, deliver(staff()), now()).unwrap();
    assert_eq!(delivered.delivery.as_ref().map(|d| d.store.clone()), Some(why("store 1")));
    assert_eq!(delivered.handle(deliver(staff()), now()), Err(MallOrderError::AlreadyDelivered));
    let refunded = run(&paid, refund(None), now()).unwrap();
    assert_eq!(refunded.handle(deliver(staff()), now()), Err(MallOrderError::AlreadyRefunded));
}

#[test]
fn a_refund_gives_back_points_cash_stock_and_coupon_once() {
    let ten_off = coupon(Benefit::Cash { value_fen: fen(1_000), min_spend_fen: None });
    let (order, _) = given(vec![place(both(), 2, Some(ten_off), PaymentMethod::PointsAndWechatPay), held(400)]);
    assert_eq!(order.handle(refund(Some("rf-1")), now()), Err(MallOrderError::NotPaid));
    let paid = run(&order, by_pay(2_000, "tx-1"), now()).unwrap();
    assert_eq!(paid.handle(refund(None), now()), Err(MallOrderError::RefundNo));
    let event = only_event(&paid, refund(Some("rf-1")), now());
    let MallOrderEvent::MallOrderRefunded { refund: r, .. } = &event else { panic!() };
    assert_eq!(
        r,
        &OrderRefund {
            points_back: Some(pts(400)),
            cash_back: Some(CashRefund::WechatPay {
                amount_fen: fen(2_000),
                transaction_id: pay_ref("tx-1"),
                refund_no: pay_ref("rf-1")
            }),
            quantity_back: Some(qty(2)),
            coupon_back: Some(CouponId::from_uuid(Uuid::from_u128(5))),
        }
    );
    let refunded = run(&paid, refund(Some("rf-1")), now()).unwrap();
    assert_eq!(refunded.handle(refund(Some("rf-1")), now()), Err(MallOrderError::AlreadyRefunded));

    // Delivered goods left the store: no stock back.
    let delivered = run(&paid, deliver(staff()), now()).unwrap();
    let MallOrderEvent::MallOrderRefunded { refund: r, .. } = only_event(&delivered, refund(Some("rf-1")), now())
    else {
        panic!()
    };
    assert_eq!((r.quantity_back, r.points_back), (None, Some(pts(400))));
    // A balance payment is refunded to the balance, without a Pay refund number.
    let (balance, _) = given(vec![place(cash_only(), 1, None, PaymentMethod::Balance), by_balance(1_500)]);
    assert_eq!(balance.handle(refund(Some("rf-1")), now()), Err(MallOrderError::RefundNo));
    assert!(balance.handle(refund(None), now()).is_ok());
}

// ---------------------------------------------------------------- apply refuses

// ---------------------------------------------------------------- refund requests (售后)

fn request_refund(actor: Actor) -> MallOrderCommand {
    MallOrderCommand::RequestRefund { actor, reason: why("the lid is cracked") }
}

fn reject_request(actor: Actor) -> MallOrderCommand {
    MallOrderCommand::RejectRefundRequest { actor, reason: why("no photo of the damage") }
}

#[test]
fn the_member_requests_a_refund_of_a_paid_or_delivered_order_one_request_open_at_a_time() {
    // Given an unpaid order: nothing to refund.
    let (unpaid, _) = given(vec![place(cash_only(), 1, None, PaymentMethod::Balance)]);
    assert_eq!(unpaid.handle(request_refund(the_member()), now()), Err(MallOrderError::NotPaid));
    // Given a paid order: only its own member asks.
    let paid = run(&unpaid, by_balance(1_500), now()).unwrap();
    let other = Actor::Member { member_id: member(2) };
    assert_eq!(paid.handle(request_refund(other), now()), Err(MallOrderError::NotYourOrder));
    assert_eq!(paid.handle(request_refund(admin()), now()), Err(MallOrderError::NotMember));
    // When the member asks: request 1 is open, the status is unchanged.
    let event = only_event(&paid, request_refund(the_member()), now());
    assert_eq!(
        event,
        MallOrderEvent::MallOrderRefundRequested {
            request_no: 1,
            actor: the_member(),
            reason: why("the lid is cracked"),
            requested_at: now(),
        }
    );
    let open = run(&paid, request_refund(the_member()), now()).unwrap();
    assert_eq!((status(&open), open.open_refund_request()), (OrderStatus::Paid, Some(1)));
    // Then a second request waits for the first to be decided.
    assert_eq!(open.handle(request_refund(the_member()), now()), Err(MallOrderError::RefundRequestOpen));
    // A delivered order takes a request too, and delivery does not close one.
    let delivered = run(&open, deliver(staff()), now()).unwrap();
    assert_eq!((status(&delivered), delivered.open_refund_request()), (OrderStatus::Delivered, Some(1)));
    // A refunded order takes none.
    let refunded = run(&paid, refund(None), now()).unwrap();
    assert_eq!(refunded.handle(request_refund(the_member()), now()), Err(MallOrderError::AlreadyRefunded));
}

#[test]
fn an_admin_rejects_an_open_request_with_a_reason_and_the_member_may_ask_again_up_to_the_limit() {
    let (paid, _) = given(vec![place(cash_only(), 1, None, PaymentMethod::Balance), by_balance(1_500)]);
    assert_eq!(paid.handle(reject_request(admin()), now()), Err(MallOrderError::NoRefundRequest));
    let open = run(&paid, request_refund(the_member()), now()).unwrap();
    assert_eq!(open.handle(reject_request(staff()), now()), Err(MallOrderError::AdminOnly("decide a refund request")));
    assert_eq!(
        open.handle(reject_request(the_member()), now()),
        Err(MallOrderError::AdminOnly("decide a refund request"))
    );
    let later = now() + Duration::hours(1);
    let rejected = run(&open, reject_request(admin()), later).unwrap();
    let request = rejected.refund_request.clone().unwrap();
    assert_eq!(request.status, RefundRequestStatus::Rejected);
    assert_eq!((request.resolution, request.resolved_at), (Some(why("no photo of the damage")), Some(later)));
    assert_eq!((status(&rejected), rejected.open_refund_request()), (OrderStatus::Paid, None));
    assert_eq!(rejected.handle(reject_request(admin()), now()), Err(MallOrderError::NoRefundRequest));
    // Asked again: request 2; after REFUND_REQUESTS_MAX requests, no more.
    let mut order = rejected;
    for n in 2..=REFUND_REQUESTS_MAX {
        order = run(&order, request_refund(the_member()), now()).unwrap();
        assert_eq!(order.open_refund_request(), Some(n));
        order = run(&order, reject_request(admin()), now()).unwrap();
    }
    assert_eq!(order.handle(request_refund(the_member()), now()), Err(MallOrderError::TooManyRefundRequests));
}

#[test]
fn a_refund_approves_the_open_request_and_names_it() {
    let (paid, _) = given(vec![place(cash_only(), 1, None, PaymentMethod::Balance), by_balance(1_500)]);
    let open = run(&paid, request_refund(the_member()), now()).unwrap();
    let MallOrderEvent::MallOrderRefunded { approves_request, .. } = only_event(&open, refund(None), now()) else {
        panic!()
    };
    assert_eq!(approves_request, Some(1));
    let refunded = run(&open, refund(None), now()).unwrap();
    let request = refunded.refund_request.clone().unwrap();
    assert_eq!((status(&refunded), request.status), (OrderStatus::Refunded, RefundRequestStatus::Approved));
    assert_eq!(refunded.open_refund_request(), None);
    // Without a request, a refund names none.
    let MallOrderEvent::MallOrderRefunded { approves_request, .. } = only_event(&paid, refund(None), now()) else {
        panic!()
    };
    assert_eq!(approves_request, None);
}

#[test]
fn stored_refund_request_events_out_of_order_are_invariant_violations() {
    let (_, log) = given(vec![place(cash_only(), 1, None, PaymentMethod::Balance), by_balance(1_500)]);
    let requested = |request_no| MallOrderEvent::MallOrderRefundRequested {
        request_no,
        actor: the_member(),
        reason: why("x"),
        requested_at: now(),
    };
    let rejected = |request_no| MallOrderEvent::MallOrderRefundRequestRejected {
        request_no,
        actor: admin(),
        reason: why("x"),
        rejected_at: now(),
    };
    assert_eq!(broken_rule(&log, &requested(2)), rules::ORDER_REFUND_REQUESTS, "numbered from 1");
    assert_eq!(broken_rule(&log, &rejected(1)), rules::ORDER_REFUND_REQUESTS, "nothing open");
    let mut open_log = log.clone();
    open_log.push(requested(1));
    assert_eq!(broken_rule(&open_log, &requested(2)), rules::ORDER_REFUND_REQUESTS, "one open at a time");
    assert_eq!(broken_rule(&open_log, &rejected(2)), rules::ORDER_REFUND_REQUESTS, "another request");
    let (mut order, _) = given(vec![]);
    for e in &open_log {
        order.apply(e).unwrap();
    }
    let MallOrderEvent::MallOrderRefunded { refund, actor, reason, refunded_at, .. } =
        only_event(&order, refund(None), now())
    else {
        panic!()
    };
    let silent = MallOrderEvent::MallOrderRefunded { refund, actor, reason, refunded_at, approves_request: None };
    assert_eq!(broken_rule(&open_log, &silent), rules::ORDER_REFUND_REQUESTS, "a refund must close the request");
    let (_, unpaid_log) = given(vec![place(cash_only(), 1, None, PaymentMethod::Balance)]);
    assert_eq!(broken_rule(&unpaid_log, &requested(1)), rules::ORDER_TRANSITION);
}

#[test]
fn stored_events_that_break_the_order_rules_are_invariant_violations() {
    let (_, log) = given(vec![place(both(), 2, None, PaymentMethod::PointsAndBalance)]);
    let MallOrderEvent::MallOrderPlaced(placed) = &log[0] else { panic!() };

    assert_eq!(broken_rule(&log, &log[0]), rules::ORDER_PLACED_ONCE);
    let mut cheap = placed.clone();
    cheap.totals.cash_due_fen = 1;
    assert_eq!(broken_rule(&[], &MallOrderEvent::MallOrderPlaced(cheap)), rules::ORDER_TOTALS);
    let mut negative = placed.clone();
    negative.totals.discount_fen = 4_000;
    negative.totals.cash_due_fen = -1_000;
    assert_eq!(broken_rule(&[], &MallOrderEvent::MallOrderPlaced(negative)), rules::ORDER_TOTALS);
    let mut unfit = placed.clone();
    unfit.method = PaymentMethod::PointsOnly;
    assert_eq!(broken_rule(&[], &MallOrderEvent::MallOrderPlaced(unfit)), rules::ORDER_METHOD_FITS);

    let balance = |amount| CashPayment::Balance { amount_fen: fen(amount), charge_sequence: 1 };
    let paid = |points: Option<i64>, amount| MallOrderEvent::MallOrderPaid {
        points: points.map(pts),
        cash: Some(balance(amount)),
        paid_at: now(),
    };
    assert_eq!(broken_rule(&log, &paid(Some(400), 3_000)), rules::ORDER_AMOUNTS, "points paid without a hold");
    let hold = MallOrderEvent::MallOrderPointsHeld { hold_id: hold(), points: pts(400), held_at: now() };
    let mut held_log = log.clone();
    held_log.push(hold);
    assert_eq!(broken_rule(&held_log, &paid(Some(400), 2_999)), rules::ORDER_AMOUNTS);
    assert_eq!(broken_rule(&held_log, &paid(None, 3_000)), rules::ORDER_AMOUNTS);
    let by_pay = MallOrderEvent::MallOrderPaid {
        points: Some(pts(400)),
        cash: Some(CashPayment::WechatPay { amount_fen: fen(3_000), transaction_id: pay_ref("tx") }),
        paid_at: now(),
    };
    assert_eq!(broken_rule(&held_log, &by_pay), rules::ORDER_METHOD_FITS);

    let delivered = MallOrderEvent::MallOrderDelivered { actor: staff(), store: why("store 1"), delivered_at: now() };
    assert_eq!(broken_rule(&held_log, &delivered), rules::ORDER_TRANSITION, "delivered before paid");
    let mut paid_log = held_log.clone();
    paid_log.push(paid(Some(400), 3_000));
    assert_eq!(broken_rule(&paid_log, &paid(Some(400), 3_000)), rules::ORDER_TRANSITION, "paid twice");
    let cancelled = MallOrderEvent::MallOrderCancelled { actor: admin(), reason: why("x"), cancelled_at: now() };
    assert_eq!(broken_rule(&paid_log, &cancelled), rules::ORDER_TRANSITION, "a paid order cancelled");
    let late = MallOrderEvent::MallOrderPaymentArrivedLate {
        cash: balance(3_000),
        after: OrderEnd::Expired,
        arrived_at: now(),
    };
    assert_eq!(broken_rule(&paid_log, &late), rules::ORDER_TRANSITION);

    let too_much = MallOrderEvent::MallOrderRefunded {
        refund: OrderRefund {
            points_back: Some(pts(4_000)),
            cash_back: Some(CashRefund::Balance { amount_fen: fen(3_000), charge_sequence: 1 }),
            quantity_back: Some(qty(2)),
            coupon_back: None,
        },
        actor: admin(),
        reason: why("x"),
        refunded_at: now(),
        approves_request: None,
    };
    assert_eq!(broken_rule(&paid_log, &too_much), rules::ORDER_AMOUNTS);
    let MallOrderEvent::MallOrderRefunded { refund: mut exact, actor, reason, refunded_at, approves_request } =
        too_much.clone()
    else {
        panic!()
    };
    exact.points_back = Some(pts(400));
    let exact = MallOrderEvent::MallOrderRefunded { refund: exact, actor, reason, refunded_at, approves_request };
    let mut refunded_log = paid_log.clone();
    refunded_log.push(exact.clone());
    assert_eq!(broken_rule(&refunded_log, &exact), rules::ORDER_TRANSITION, "refunded twice");

    let expired = MallOrderEvent::MallOrderExpired { expired_at: expires() };
    let mut expired_log = log.clone();
    expired_log.push(expired);
    let late_cancelled = MallOrderEvent::MallOrderPaymentArrivedLate {
        cash: balance(3_000),
        after: OrderEnd::Cancelled,
        arrived_at: now(),
    };
    assert_eq!(broken_rule(&expired_log, &late_cancelled), rules::ORDER_TRANSITION);
    let late_wrong = MallOrderEvent::MallOrderPaymentArrivedLate {
        cash: balance(2_000),
        after: OrderEnd::Expired,
        arrived_at: now(),
    };
    assert_eq!(broken_rule(&expired_log, &late_wrong), rules::ORDER_AMOUNTS);
}

// ---------------------------------------------------------------- properties

fn price_strategy() -> impl Strategy<Value = Price> {
    prop_oneof![
        (1i64..=PointsAmount::MAX).prop_map(|p| Price::Points { points: pts(p) }),
        (1i64..=AmountFen::MAX).prop_map(|f| Price::Fen { amount_fen: fen(f) }),
        (1i64..=PointsAmount::MAX, 1i64..=AmountFen::MAX)
            .prop_map(|(p, f)| Price::PointsAndFen { points: pts(p), amount_fen: fen(f) }),
        (1i64..500, 1i64..5_000).prop_map(|(p, f)| Price::PointsAndFen { points: pts(p), amount_fen: fen(f) }),
        (1i64..5_000).prop_map(|f| Price::Fen { amount_fen: fen(f) }),
    ]
}

fn benefit_strategy() -> impl Strategy<Value = Option<Benefit>> {
    prop::option::of(prop_oneof![
        (1i64..20_000, prop::option::of(1i64..20_000))
            .prop_map(|(v, min)| Benefit::Cash { value_fen: fen(v), min_spend_fen: min.map(|m| fen(m.max(v))) }),
        (1u8..=99, prop::option::of(1i64..20_000))
            .prop_map(|(p, cap)| Benefit::Discount { percent_off: p, cap_fen: cap.map(fen) }),
    ])
}

fn method_for(totals: &OrderTotals, pay: bool) -> PaymentMethod {
    match (totals.points_total > 0, totals.cash_due_fen > 0, pay) {
        (true, false, _) => PaymentMethod::PointsOnly,
        (true, true, false) => PaymentMethod::PointsAndBalance,
        (true, true, true) => PaymentMethod::PointsAndWechatPay,
        (false, _, false) => PaymentMethod::Balance,
        (false, _, true) => PaymentMethod::WechatPay,
    }
}

#[derive(Debug, Clone)]
enum OrderStep {
    Hold,
    Pay {
        transaction: u8,
        wrong_amount: bool,
    },
    Expire {
        late: bool,
    },
    Cancel,
    Deliver,
    Refund,
    /// An admin's price change to this share (‰) of the list cash.
    Reprice {
        permille: i64,
    },
    StartPayment,
}

fn order_step() -> impl Strategy<Value = OrderStep> {
    prop_oneof![
        2 => Just(OrderStep::Hold),
        3 => (0u8..3, prop::bool::weighted(0.1)).prop_map(|(transaction, wrong_amount)| OrderStep::Pay { transaction, wrong_amount }),
        2 => any::<bool>().prop_map(|late| OrderStep::Expire { late }),
        1 => Just(OrderStep::Cancel),
        1 => Just(OrderStep::Deliver),
        1 => Just(OrderStep::Refund),
        2 => (0i64..=1_100).prop_map(|permille| OrderStep::Reprice { permille }),
        1 => Just(OrderStep::StartPayment),
    ]
}

fn order_command(state: &MallOrder, step: &OrderStep) -> (MallOrderCommand, DateTime<chrono::Utc>) {
    let at = now();
    let order = state.placed.as_deref().unwrap();
    let command = match *step {
        OrderStep::Hold => MallOrderCommand::RecordPointsHeld {
            hold_id: order.order_id.hold_id(),
            points: PointsAmount::new(order.totals.points_total).unwrap_or(pts(1)),
        },
        OrderStep::Pay { transaction, wrong_amount } => {
            let due = state.cash_due_fen().unwrap() + i64::from(wrong_amount);
            let cash = match order.method {
                PaymentMethod::PointsOnly => None,
                PaymentMethod::Balance | PaymentMethod::PointsAndBalance => {
                    AmountFen::new(due).ok().map(|amount_fen| CashPayment::Balance { amount_fen, charge_sequence: 7 })
                }
                PaymentMethod::WechatPay | PaymentMethod::PointsAndWechatPay => {
                    AmountFen::new(due).ok().map(|amount_fen| CashPayment::WechatPay {
                        amount_fen,
                        transaction_id: pay_ref(&format!("tx-{transaction}")),
                    })
                }
            };
            MallOrderCommand::RecordPayment { cash }
        }
        OrderStep::Expire { late } => {
            let at = if late { order.expires_at } else { at };
            return (MallOrderCommand::Expire, at);
        }
        OrderStep::Cancel => MallOrderCommand::Cancel { actor: the_member(), reason: why("changed my mind") },
        OrderStep::Deliver => deliver(staff()),
        OrderStep::Refund => {
            let by_pay = matches!(order.method, PaymentMethod::WechatPay | PaymentMethod::PointsAndWechatPay);
            refund(by_pay.then_some("rf-1"))
        }
        OrderStep::Reprice { permille } => match AmountFen::new(order.totals.cash_fen * permille / 1_000) {
            Ok(cash_due_fen) => MallOrderCommand::ChangePrice { cash_due_fen, actor: admin(), reason: why("deal") },
            Err(_) => MallOrderCommand::StartPayment,
        },
        OrderStep::StartPayment => MallOrderCommand::StartPayment,
    };
    (command, at)
}

proptest! {
    /// Any price, quantity and coupon: the totals never overflow silently,
    /// the cash to pay is never negative and never more than price × quantity.
    #[test]
    fn the_amount_to_pay_is_never_negative(price in price_strategy(), quantity in 1i64..=99, benefit in benefit_strategy()) {
        match OrderTotals::compute(price, qty(quantity), benefit.as_ref()) {
            Ok(t) => {
                prop_assert!(t.cash_due_fen >= 0 && t.discount_fen >= 0);
                prop_assert_eq!(t.cash_due_fen + t.discount_fen, t.cash_fen);
                prop_assert_eq!(t.cash_fen, price.fen() * quantity);
                prop_assert_eq!(t.points_total, price.points() * quantity);
                prop_assert!(t.points_total > 0 || t.cash_due_fen > 0, "something to pay");
            }
            Err(MallOrderError::TooLarge(_)) => {
                let big = price.fen().checked_mul(quantity).is_none_or(|f| f > AmountFen::MAX)
                    || price.points().checked_mul(quantity).is_none_or(|p| p > PointsAmount::MAX);
                prop_assert!(big);
            }
            Err(MallOrderError::CouponNotApplicable) => prop_assert!(benefit.is_some()),
            Err(other) => prop_assert!(false, "{other}"),
        }
    }

    /// Random commands on one order: it ends once, is paid at most once,
    /// refunded at most once (and only after money arrived), delivered at most
    /// once; the replay equals the live state.
    #[test]
    fn random_order_histories_keep_the_state_machine(
        price in price_strategy(),
        quantity in 1i64..=99,
        benefit in benefit_strategy(),
        pay in any::<bool>(),
        steps in prop::collection::vec(order_step(), 1..25),
    ) {
        let coupon = benefit.map(coupon);
        let Ok(totals) = OrderTotals::compute(price, qty(quantity), coupon.as_ref().map(|c| &c.benefit)) else {
            return Ok(());
        };
        let method = method_for(&totals, pay);
        let mut live = MallOrder::default();
        let mut log = Vec::new();
        for e in live.handle(place(price, quantity, coupon, method), now()).unwrap() {
            live.apply(&e).unwrap();
            log.push(e);
        }
        let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
        for step in &steps {
            let (command, at) = order_command(&live, step);
            let Ok(events) = live.handle(command, at) else { continue };
            for e in events {
                *counts.entry(e.event_type()).or_default() += 1;
                live.apply(&e).unwrap();
                log.push(e);
            }
        }
        let count = |t| counts.get(t).copied().unwrap_or(0);
        prop_assert!(count("MallOrderPaid") <= 1);
        prop_assert!(count("MallOrderExpired") + count("MallOrderCancelled") + count("MallOrderPaid") <= 1);
        prop_assert!(count("MallOrderRefunded") <= 1);
        prop_assert!(count("MallOrderRefunded") <= count("MallOrderPaid") + count("MallOrderPaymentArrivedLate"));
        prop_assert!(count("MallOrderDelivered") <= count("MallOrderPaid"));
        prop_assert!(count("MallOrderPaymentArrivedLate") <= 1);
        prop_assert!(count("MallOrderPaymentStarted") <= 1);
        // Every price change came before payment started and before payment, within 1..=list.
        let mut started_or_paid = false;
        for e in &log {
            match e {
                MallOrderEvent::MallOrderPaymentStarted { .. } | MallOrderEvent::MallOrderPaid { .. } => started_or_paid = true,
                MallOrderEvent::MallOrderPriceChanged { new_cash_due_fen, .. } => {
                    prop_assert!(!started_or_paid);
                    prop_assert!(new_cash_due_fen.get() <= totals.cash_fen);
                }
                _ => {}
            }
        }
        // What was paid is what was due when paid.
        if let Some(cash) = live.payment.as_ref().and_then(|p| p.cash.as_ref()) {
            prop_assert_eq!(Some(cash.amount_fen().get()), live.cash_due_fen());
        }
        let mut replayed = MallOrder::default();
        for e in &log {
            replayed.apply(e).unwrap();
        }
        prop_assert_eq!(replayed, live);
    }
}

// ---------------------------------------------------------------- the whole mall

/// What the process managers do, step by step, for one product and its orders.
#[derive(Debug, Clone)]
enum MallStep {
    Order { member: u128, quantity: i64 },
    Pay { order: usize },
    Expire { order: usize },
    Cancel { order: usize },
    Deliver { order: usize },
    Refund { order: usize },
    SetStock { total: u32 },
}

fn mall_step() -> impl Strategy<Value = MallStep> {
    prop_oneof![
        4 => (0u128..5, 1i64..5).prop_map(|(member, quantity)| MallStep::Order { member, quantity }),
        3 => (0usize..40).prop_map(|order| MallStep::Pay { order }),
        2 => (0usize..40).prop_map(|order| MallStep::Expire { order }),
        1 => (0usize..40).prop_map(|order| MallStep::Cancel { order }),
        1 => (0usize..40).prop_map(|order| MallStep::Deliver { order }),
        1 => (0usize..40).prop_map(|order| MallStep::Refund { order }),
        1 => (0u32..30).prop_map(|total| MallStep::SetStock { total }),
    ]
}

struct Mall {
    product: Product,
    orders: Vec<MallOrder>,
}

fn decide<T: EventSourced>(
    aggregate: &mut T,
    command: T::Command,
    at: DateTime<chrono::Utc>,
) -> Result<Vec<T::Event>, T::Error> {
    let events = aggregate.handle(command, at)?;
    for e in &events {
        aggregate.apply(e).unwrap();
    }
    Ok(events)
}

impl Mall {
    /// The order's end as the process manager turns it into product commands.
    fn follow(&mut self, index: usize, events: &[MallOrderEvent]) {
        let placed = self.orders[index].placed.clone().unwrap();
        for e in events {
            let command = match e {
                MallOrderEvent::MallOrderPaid { .. } => ProductCommand::ConfirmSale { order_id: placed.order_id },
                MallOrderEvent::MallOrderExpired { .. } => {
                    ProductCommand::Release { order_id: placed.order_id, reason: ReleaseReason::Expired }
                }
                MallOrderEvent::MallOrderCancelled { .. } => {
                    ProductCommand::Release { order_id: placed.order_id, reason: ReleaseReason::Cancelled }
                }
                MallOrderEvent::MallOrderRefunded {
                    refund: OrderRefund { quantity_back: Some(quantity), .. }, ..
                } => ProductCommand::ReturnSold {
                    order_id: placed.order_id,
                    member_id: placed.member_id,
                    quantity: *quantity,
                },
                _ => continue,
            };
            decide(&mut self.product, command, now()).expect("the product follows its orders");
        }
    }

    fn step(&mut self, step: &MallStep) {
        let pick = |n: usize, len: usize| (len > 0).then(|| n % len);
        match *step {
            MallStep::Order { member: m, quantity } => {
                let n = self.orders.len() as u128;
                let id = MallOrderId::from_uuid(Uuid::from_u128(90_000 + n));
                let reserve = ProductCommand::Reserve {
                    order_id: id,
                    member_id: member(m),
                    quantity: qty(quantity),
                    unit_price: points_price(100),
                    expires_at: expires(),
                };
                if decide(&mut self.product, reserve, now()).is_err() {
                    return;
                }
                let MallOrderCommand::Place {
                    tenant_id,
                    product_id,
                    product_name,
                    unit_price,
                    coupon,
                    method,
                    expires_at,
                    idempotency_key,
                    ..
                } = place(points_price(100), quantity, None, PaymentMethod::PointsOnly)
                else {
                    unreachable!()
                };
                let mut order = MallOrder::default();
                let command = MallOrderCommand::Place {
                    order_id: id,
                    tenant_id,
                    member_id: member(m),
                    product_id,
                    product_name,
                    quantity: qty(quantity),
                    unit_price,
                    coupon,
                    gift_coupon: None,
                    method,
                    expires_at,
                    actor: admin(),
                    idempotency_key,
                };
                decide(&mut order, command, now()).unwrap();
                let hold = MallOrderCommand::RecordPointsHeld { hold_id: id.hold_id(), points: pts(100 * quantity) };
                decide(&mut order, hold, now()).unwrap();
                self.orders.push(order);
            }
            MallStep::Pay { order }
            | MallStep::Expire { order }
            | MallStep::Cancel { order }
            | MallStep::Deliver { order }
            | MallStep::Refund { order } => {
                let Some(i) = pick(order, self.orders.len()) else { return };
                let (command, at) = match step {
                    MallStep::Pay { .. } => (MallOrderCommand::RecordPayment { cash: None }, now()),
                    MallStep::Expire { .. } => (MallOrderCommand::Expire, expires()),
                    MallStep::Cancel { .. } => (MallOrderCommand::Cancel { actor: admin(), reason: why("x") }, now()),
                    MallStep::Deliver { .. } => (deliver(staff()), now()),
                    _ => (refund(None), now()),
                };
                if let Ok(events) = decide(&mut self.orders[i], command, at) {
                    self.follow(i, &events);
                }
            }
            MallStep::SetStock { total } => {
                let _ = decide(
                    &mut self.product,
                    ProductCommand::SetStock { stock: Stock::Finite { total }, actor: admin() },
                    now(),
                );
            }
        }
    }
}

proptest! {
    /// One product, many orders, the process managers' steps in any order:
    /// the product's reserved units are exactly those of unpaid orders, its
    /// sold units those of paid orders not refunded before delivery, never
    /// more than the stock.
    #[test]
    fn a_mall_never_oversells_and_its_counts_match_its_orders(
        total in 1u32..20,
        steps in prop::collection::vec(mall_step(), 1..60),
    ) {
        let mut product = Product::default();
        decide(&mut product, ProductCommand::Create {
            product_id: product_id(),
            tenant_id: tenant(),
            listing: ProductListing { name: ProductName::parse("popcorn").unwrap(), description: ProductDescription::parse("").unwrap(), images: Vec::new() },
            price: points_price(100),
            stock: Stock::Finite { total },
            per_member_limit: Some(6),
            on_sale: true,
            actor: admin(),
        }, now()).unwrap();
        let mut mall = Mall { product, orders: Vec::new() };
        for step in &steps {
            mall.step(step);
            let s = mall.product.created.as_ref().unwrap();
            let units = |wanted: &[OrderStatus]| -> u64 {
                mall.orders.iter().filter(|o| wanted.contains(&o.status.unwrap())).map(|o| u64::from(o.placed.as_ref().unwrap().quantity.get())).sum()
            };
            let refunded_after_delivery: u64 = mall.orders.iter()
                .filter(|o| o.status == Some(OrderStatus::Refunded) && o.delivery.is_some())
                .map(|o| u64::from(o.placed.as_ref().unwrap().quantity.get()))
                .sum();
            prop_assert_eq!(s.reserved, units(&[OrderStatus::AwaitingPayment]));
            prop_assert_eq!(s.sold, units(&[OrderStatus::Paid, OrderStatus::Delivered]) + refunded_after_delivery);
            if let Stock::Finite { total } = s.stock {
                prop_assert!(s.reserved + s.sold <= u64::from(total));
            }
            for (m, n) in &s.member_units {
                prop_assert!(*n <= 6, "member {m} holds {n}");
            }
        }
    }
}

proptest! {
    /// Every order id has its own Pay order number, which names it back.
    #[test]
    fn pay_trade_numbers_round_trip(bits in any::<u128>()) {
        let id = MallOrderId::from_uuid(Uuid::from_u128(bits));
        let trade_no = id.pay_trade_no();
        prop_assert_eq!(trade_no.as_str().len(), 27);
        prop_assert_eq!(MallOrderId::from_pay_trade_no(&trade_no), Some(id));
    }
}

#[test]
fn other_pay_orders_name_no_mall_order() {
    for other in ["rc0123456789abcdef0123456789abc", "mo123", "mo0000000000000000000000000!"] {
        if let Ok(trade_no) = crate::OutTradeNo::parse(other) {
            assert_eq!(MallOrderId::from_pay_trade_no(&trade_no), None, "{other}");
        }
    }
    // 36^25 - 1 is above u128::MAX: refused, not wrapped.
    let too_big = crate::OutTradeNo::parse(&format!("mo{}", "z".repeat(25))).unwrap();
    assert_eq!(MallOrderId::from_pay_trade_no(&too_big), None);
}

// ---------------------------------------------------------------- price change

fn reprice(fen_due: i64) -> MallOrderCommand {
    MallOrderCommand::ChangePrice { cash_due_fen: fen(fen_due), actor: admin(), reason: why("loyal customer") }
}

#[test]
fn given_an_unpaid_order_when_an_admin_changes_its_price_then_the_member_pays_the_new_price() {
    // Given: 2 × 1,500 fen, paid by balance.
    let (order, _) = given(vec![place(cash_only(), 2, None, PaymentMethod::Balance)]);
    assert_eq!(order.cash_due_fen(), Some(3_000));
    // When
    let event = only_event(&order, reprice(2_400), now());
    // Then
    let MallOrderEvent::MallOrderPriceChanged { old_cash_due_fen, new_cash_due_fen, .. } = &event else {
        panic!("{event:?}")
    };
    assert_eq!((old_cash_due_fen.get(), new_cash_due_fen.get()), (3_000, 2_400));
    let repriced = run(&order, reprice(2_400), now()).unwrap();
    assert_eq!(repriced.cash_due_fen(), Some(2_400));
    assert_eq!(status(&repriced), OrderStatus::AwaitingPayment);
    // The old amount is refused, the new one taken.
    assert_eq!(
        repriced.handle(by_balance(3_000), now()),
        Err(MallOrderError::AmountMismatch { due_fen: 2_400, paid_fen: 3_000 })
    );
    let paid = run(&repriced, by_balance(2_400), now()).unwrap();
    assert_eq!(status(&paid), OrderStatus::Paid);
    // A refund gives back what was paid.
    let refunded = run(&paid, refund(None), now()).unwrap();
    assert!(matches!(
        refunded.refund.as_ref().and_then(|r| r.cash_back.clone()),
        Some(CashRefund::Balance { amount_fen, .. }) if amount_fen.get() == 2_400
    ));
    // The same price again changes nothing; a second change states the first's price as old.
    assert_eq!(repriced.handle(reprice(2_400), now()), Ok(vec![]));
    let MallOrderEvent::MallOrderPriceChanged { old_cash_due_fen, .. } = only_event(&repriced, reprice(3_000), now())
    else {
        panic!()
    };
    assert_eq!(old_cash_due_fen.get(), 2_400);
}

#[test]
fn given_a_paid_order_when_an_admin_changes_its_price_then_it_is_refused() {
    let (paid, _) = given(vec![place(cash_only(), 1, None, PaymentMethod::Balance), by_balance(1_500)]);
    assert_eq!(paid.handle(reprice(1_000), now()), Err(MallOrderError::PricePaid));
    let delivered = run(&paid, deliver(staff()), now()).unwrap();
    assert_eq!(delivered.handle(reprice(1_000), now()), Err(MallOrderError::PricePaid));
    let refunded = run(&paid, refund(None), now()).unwrap();
    assert_eq!(refunded.handle(reprice(1_000), now()), Err(MallOrderError::PricePaid));
    let (cancelled, _) = given(vec![
        place(cash_only(), 1, None, PaymentMethod::Balance),
        MallOrderCommand::Cancel { actor: the_member(), reason: why("no") },
    ]);
    assert_eq!(cancelled.handle(reprice(1_000), now()), Err(MallOrderError::Ended(OrderStatus::Cancelled)));
    assert_eq!(MallOrder::default().handle(reprice(1_000), now()), Err(MallOrderError::NotFound));
}

#[test]
fn given_a_started_payment_when_an_admin_changes_the_price_then_it_is_refused() {
    let (order, _) = given(vec![place(cash_only(), 1, None, PaymentMethod::WechatPay)]);
    let event = only_event(&order, MallOrderCommand::StartPayment, now());
    assert!(
        matches!(event, MallOrderEvent::MallOrderPaymentStarted { cash_due_fen, .. } if cash_due_fen.get() == 1_500)
    );
    let started = run(&order, MallOrderCommand::StartPayment, now()).unwrap();
    assert_eq!(started.handle(reprice(1_000), now()), Err(MallOrderError::PaymentStarted(1_500)));
    // Starting again records nothing; the payment of the fixed amount is taken.
    assert_eq!(started.handle(MallOrderCommand::StartPayment, now()), Ok(vec![]));
    assert_eq!(status(&run(&started, by_pay(1_500, "4200000001"), now()).unwrap()), OrderStatus::Paid);
    // A repriced order's payment starts at the new price.
    let repriced = run(&order, reprice(900), now()).unwrap();
    let event = only_event(&repriced, MallOrderCommand::StartPayment, now());
    assert!(matches!(event, MallOrderEvent::MallOrderPaymentStarted { cash_due_fen, .. } if cash_due_fen.get() == 900));
}

#[test]
fn a_price_is_within_one_fen_and_the_list_price_set_by_an_admin_on_a_cash_part() {
    let (order, _) = given(vec![place(cash_only(), 2, None, PaymentMethod::Balance)]);
    assert_eq!(
        order.handle(reprice(3_001), now()),
        Err(MallOrderError::PriceOutOfRange { list_fen: 3_000, got: 3_001 })
    );
    assert!(order.handle(reprice(3_000), now()).unwrap().is_empty());
    assert_eq!(order.handle(reprice(1), now()).unwrap().len(), 1);
    let by_member =
        MallOrderCommand::ChangePrice { cash_due_fen: fen(10), actor: the_member(), reason: why("cheaper please") };
    assert_eq!(order.handle(by_member, now()), Err(MallOrderError::AdminOnly("change an order's price")));
    let (points_only, _) = given(vec![place(points_price(100), 1, None, PaymentMethod::PointsOnly)]);
    assert_eq!(points_only.handle(reprice(1), now()), Err(MallOrderError::NoCashPart));
    // A coupon's discount stays taken: the admin may raise the due back up to the list price.
    let off = coupon(Benefit::Cash { value_fen: fen(500), min_spend_fen: None });
    let (with_coupon, _) = given(vec![place(cash_only(), 1, Some(off), PaymentMethod::Balance)]);
    assert_eq!(with_coupon.cash_due_fen(), Some(1_000));
    assert_eq!(run(&with_coupon, reprice(1_500), now()).unwrap().cash_due_fen(), Some(1_500));
}

#[test]
fn apply_refuses_a_price_change_that_does_not_follow_the_order() {
    let (_, history) = given(vec![place(cash_only(), 1, None, PaymentMethod::Balance)]);
    let changed = |old: i64, new: i64| MallOrderEvent::MallOrderPriceChanged {
        old_cash_due_fen: fen(old),
        new_cash_due_fen: fen(new),
        actor: admin(),
        reason: why("x"),
        changed_at: now(),
    };
    assert_eq!(broken_rule(&history, &changed(1_400, 1_000)), rules::ORDER_PRICE);
    assert_eq!(broken_rule(&history, &changed(1_500, 1_501)), rules::ORDER_PRICE);
    let mut started = history.clone();
    started.push(MallOrderEvent::MallOrderPaymentStarted { cash_due_fen: fen(1_500), started_at: now() });
    assert_eq!(broken_rule(&started, &changed(1_500, 1_000)), rules::ORDER_PRICE);
    let mut repriced = history.clone();
    repriced.push(changed(1_500, 1_000));
    let paid_old = MallOrderEvent::MallOrderPaid {
        points: None,
        cash: Some(CashPayment::Balance { amount_fen: fen(1_500), charge_sequence: 1 }),
        paid_at: now(),
    };
    assert_eq!(broken_rule(&repriced, &paid_old), rules::ORDER_AMOUNTS);
    let mut paid = history;
    paid.push(paid_old);
    assert_eq!(broken_rule(&paid, &changed(1_500, 1_000)), rules::ORDER_TRANSITION);
}
