use chrono::{Duration, TimeZone, Utc};
use proptest::prelude::*;
use uuid::Uuid;

use super::*;
use crate::{Actor, EventSourced, Reference};

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 5, 10, 0, 0).unwrap()
}

fn tenant() -> TenantId {
    TenantId::parse("acme").unwrap()
}

fn admin() -> Actor {
    Actor::Admin { username: "boss".into() }
}

fn template_id() -> TemplateId {
    TemplateId::from_uuid(Uuid::from_u128(7))
}

fn terms(limit: Option<u16>) -> CouponTerms {
    CouponTerms {
        name: CouponText::parse("10 off").unwrap(),
        benefit: Benefit::Cash { value_fen: AmountFen::new(1_000).unwrap(), min_spend_fen: None },
        validity: Validity::DaysFromIssue { days: 30 },
        per_member_limit: limit,
        audience: Audience::AllMembers,
    }
}

fn given<T: EventSourced>(events: &[T::Event]) -> T {
    let mut state = T::default();
    for e in events {
        state.apply(e).unwrap();
    }
    state
}

fn created(stock: Stock) -> TemplateEvent {
    TemplateEvent::CouponTemplateCreated {
        template_id: template_id(),
        tenant_id: tenant(),
        terms: terms(Some(1)),
        stock,
        actor: admin(),
        created_at: now(),
    }
}

fn ask(n: u128) -> IssueAsk {
    IssueAsk {
        coupon_id: CouponId::from_uuid(Uuid::from_u128(1_000 + n)),
        member_id: MemberId::from_uuid(Uuid::from_u128(n)),
        card_level: Some(CardLevel::standard()),
        claim_ordinal: Some(1),
    }
}

#[test]
fn a_batch_is_granted_while_stock_lasts_and_the_rest_is_sold_out() {
    let template: CouponTemplate = given(&[created(Stock::Finite { total: 3 })]);
    let asks: Vec<_> = (0..5).map(ask).collect();
    let batch = template.decide_issues(&asks, now()).unwrap();
    let refused: Vec<_> = batch.outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    assert_eq!(refused, vec![&IssueRefusal::SoldOut, &IssueRefusal::SoldOut]);
    let Some(TemplateEvent::CouponsIssued { grants, issued_after, .. }) = &batch.event else { panic!() };
    assert_eq!((grants.len(), *issued_after), (3, 3));
    assert_eq!(grants.iter().map(|g| g.serial).collect::<Vec<_>>(), vec![1, 2, 3]);
}

#[test]
fn an_unlimited_stock_is_never_sold_out() {
    let template: CouponTemplate = given(&[created(Stock::Unlimited)]);
    let asks: Vec<_> = (0..ISSUES_PER_EVENT_MAX as u128).map(ask).collect();
    let batch = template.decide_issues(&asks, now()).unwrap();
    assert!(batch.outcomes.iter().all(Result::is_ok));
    assert!(template.decide_issues(&[], now()).is_err(), "an empty batch is refused");
    let too_many: Vec<_> = (0..=ISSUES_PER_EVENT_MAX as u128).map(ask).collect();
    assert_eq!(template.decide_issues(&too_many, now()), Err(TemplateError::BatchSize));
}

#[test]
fn a_disabled_template_or_an_ended_window_refuses_every_ask() {
    let off = TemplateEvent::CouponTemplateSwitched { enabled: false, actor: admin(), switched_at: now() };
    let template: CouponTemplate = given(&[created(Stock::Unlimited), off]);
    let batch = template.decide_issues(&[ask(1)], now()).unwrap();
    assert_eq!((batch.event, batch.outcomes), (None, vec![Err(IssueRefusal::Disabled)]));

    let mut ended = terms(None);
    ended.validity = Validity::Window { from: now() - Duration::days(2), until: now() - Duration::days(1) };
    let edit = TemplateEvent::CouponTemplateEdited { terms: ended, actor: admin(), edited_at: now() };
    let template: CouponTemplate = given(&[created(Stock::Unlimited), edit]);
    assert_eq!(template.decide_issues(&[ask(1)], now()).unwrap().outcomes, vec![Err(IssueRefusal::WindowEnded)]);
}

#[test]
fn the_audience_restricts_claims_but_not_operator_grants() {
    let mut gold_only = terms(None);
    gold_only.audience = Audience::CardLevels { levels: vec![CardLevel::parse("gold").unwrap()] };
    let edit = TemplateEvent::CouponTemplateEdited { terms: gold_only, actor: admin(), edited_at: now() };
    let template: CouponTemplate = given(&[created(Stock::Unlimited), edit]);
    let mut operator = ask(2);
    operator.card_level = None;
    operator.claim_ordinal = None;
    let outcomes = template.decide_issues(&[ask(1), operator], now()).unwrap().outcomes;
    assert_eq!(outcomes[0], Err(IssueRefusal::NotInAudience));
    assert!(outcomes[1].is_ok());
}

#[test]
fn stock_cannot_drop_below_what_was_issued() {
    let issued = TemplateEvent::CouponsIssued {
        grants: vec![IssueGrant { coupon_id: ask(1).coupon_id, member_id: ask(1).member_id, serial: 1 }],
        issued_after: 1,
        issued_at: now(),
    };
    let template: CouponTemplate = given(&[created(Stock::Finite { total: 5 }), issued.clone()]);
    let cmd = |total| TemplateCommand::SetStock { stock: Stock::Finite { total }, actor: admin() };
    assert!(template.handle(cmd(1), now()).is_ok());
    assert_eq!(template.handle(cmd(0), now()), Err(TemplateError::InvalidStock));
    let two = given::<CouponTemplate>(&[created(Stock::Finite { total: 5 }), issued.clone(), issued_again(2)]);
    assert_eq!(two.handle(cmd(1), now()), Err(TemplateError::StockBelowIssued { requested: 1, issued: 2 }));
}

fn issued_again(serial: u64) -> TemplateEvent {
    TemplateEvent::CouponsIssued {
        grants: vec![IssueGrant { coupon_id: ask(9).coupon_id, member_id: ask(9).member_id, serial }],
        issued_after: serial,
        issued_at: now(),
    }
}

#[test]
fn a_stored_issue_beyond_stock_or_with_a_wrong_count_is_an_invariant_violation() {
    let mut template: CouponTemplate = given(&[created(Stock::Finite { total: 1 }), issued_again(1)]);
    assert_eq!(template.apply(&issued_again(2)).unwrap_err().rule, rules::ISSUED_WITHIN_STOCK);
    let mut template: CouponTemplate = given(&[created(Stock::Finite { total: 5 })]);
    assert_eq!(template.apply(&issued_again(3)).unwrap_err().rule, rules::ISSUED_AFTER);
}

#[test]
fn invalid_terms_are_refused() {
    let template = CouponTemplate::default();
    let create = |terms| TemplateCommand::Create {
        template_id: template_id(),
        tenant_id: tenant(),
        terms,
        stock: Stock::Unlimited,
        actor: admin(),
    };
    let mut t = terms(Some(0));
    assert!(matches!(template.handle(create(t.clone()), now()), Err(TemplateError::InvalidTerms(_))));
    t.per_member_limit = Some(CLAIMS_PER_MEMBER_MAX + 1);
    assert!(template.handle(create(t.clone()), now()).is_err());
    t.per_member_limit = Some(CLAIMS_PER_MEMBER_MAX);
    assert!(template.handle(create(t.clone()), now()).is_ok());
    t.benefit = Benefit::Discount { percent_off: 100, cap_fen: None };
    assert!(template.handle(create(t.clone()), now()).is_err());
    t.benefit = Benefit::Discount { percent_off: 15, cap_fen: None };
    t.validity = Validity::Window { from: now(), until: now() };
    assert!(template.handle(create(t), now()).is_err());
}

// ------------------------------------------------------------------ coupons

fn code() -> RedemptionCode {
    RedemptionCode::from_random([0xA5; RedemptionCode::BYTES])
}

fn issued_coupon() -> CouponEvent {
    CouponEvent::CouponIssued(Box::new(IssuedCoupon {
        coupon_id: ask(1).coupon_id,
        tenant_id: tenant(),
        template_id: template_id(),
        member_id: ask(1).member_id,
        serial: 1,
        code: code(),
        name: CouponText::parse("10 off").unwrap(),
        benefit: terms(None).benefit,
        valid_from: now(),
        valid_until: now() + Duration::days(30),
        channel: IssueChannel::MemberClaim { ordinal: Some(1) },
        actor: Actor::Member { member_id: ask(1).member_id },
        issued_at: now(),
    }))
}

fn redeem(code: RedemptionCode) -> CouponCommand {
    CouponCommand::Redeem { code, store: None, actor: Actor::Staff { username: "clerk".into() } }
}

#[test]
fn a_coupon_is_redeemed_once_with_its_own_code_inside_its_window() {
    let coupon: Coupon = given(&[issued_coupon()]);
    let other = RedemptionCode::from_random([0x5A; RedemptionCode::BYTES]);
    assert_eq!(coupon.handle(redeem(other), now()), Err(CouponError::WrongCode));
    assert_eq!(coupon.handle(redeem(code()), now() - Duration::seconds(1)), Err(CouponError::NotYetValid(now())));
    assert_eq!(coupon.handle(redeem(code()), now() + Duration::days(30)), Err(CouponError::Expired));
    let events = coupon.handle(redeem(code()), now()).unwrap();
    let redeemed: Coupon = given(&[issued_coupon(), events[0].clone()]);
    assert_eq!(redeemed.handle(redeem(code()), now()), Err(CouponError::AlreadyRedeemed));
    let void = CouponCommand::Void { reason: Reference::parse("mistake").unwrap(), actor: admin() };
    assert_eq!(redeemed.handle(void, now()), Err(CouponError::AlreadyRedeemed));
    assert_eq!(redeemed.handle(CouponCommand::Expire, now() + Duration::days(31)), Ok(Vec::new()));
}

#[test]
fn expiry_waits_for_the_end_of_the_window_and_then_ends_the_coupon() {
    let coupon: Coupon = given(&[issued_coupon()]);
    let until = now() + Duration::days(30);
    assert_eq!(coupon.handle(CouponCommand::Expire, now()), Err(CouponError::StillValid(until)));
    let events = coupon.handle(CouponCommand::Expire, until).unwrap();
    let expired: Coupon = given(&[issued_coupon(), events[0].clone()]);
    assert_eq!(expired.handle(redeem(code()), now()), Err(CouponError::Expired));
}

#[test]
fn a_stored_second_end_or_a_redemption_outside_the_window_is_an_invariant_violation() {
    let redeemed = CouponEvent::CouponRedeemed { store: None, actor: admin(), redeemed_at: now() };
    let mut coupon: Coupon = given(&[issued_coupon(), redeemed.clone()]);
    assert_eq!(coupon.apply(&redeemed).unwrap_err().rule, rules::COUPON_ENDS_ONCE);
    let late = CouponEvent::CouponRedeemed { store: None, actor: admin(), redeemed_at: now() + Duration::days(31) };
    let mut coupon: Coupon = given(&[issued_coupon()]);
    assert_eq!(coupon.apply(&late).unwrap_err().rule, rules::REDEEMED_WHILE_VALID);
}

#[test]
fn codes_are_16_crockford_characters_and_typing_is_forgiving() {
    let code = RedemptionCode::from_random([0xFF; RedemptionCode::BYTES]);
    assert_eq!(code.as_str(), "ZZZZZZZZZZZZZZZZ");
    assert_eq!(RedemptionCode::from_random([0; RedemptionCode::BYTES]).as_str(), "0000000000000000");
    let typed = RedemptionCode::parse("oooo-iiii llll-zzzz").unwrap();
    assert_eq!(typed.as_str(), "000011111111ZZZZ");
    assert!(RedemptionCode::parse("ZZZZZZZZZZZZZZZ").is_err(), "15 characters");
    assert!(RedemptionCode::parse("ZZZZZZZZZZZZZZZZZ").is_err(), "17 characters");
    assert!(RedemptionCode::parse("ZZZZZZZZZZZZZZZU").is_err(), "U is not Crockford");
    assert!(RedemptionCode::parse(&"-".repeat(41)).is_err());
}

#[test]
fn a_coupon_never_takes_more_than_the_cash_part() {
    let cash = Benefit::Cash { value_fen: AmountFen::new(5_000).unwrap(), min_spend_fen: None };
    assert_eq!(cash.discount_on(1_200), Some(1_200));
    assert_eq!(cash.discount_on(0), None);
    let min = Benefit::Cash { value_fen: AmountFen::new(500).unwrap(), min_spend_fen: AmountFen::new(3_000).ok() };
    assert_eq!((min.discount_on(2_999), min.discount_on(3_000)), (None, Some(500)));
    let pct = Benefit::Discount { percent_off: 15, cap_fen: AmountFen::new(100).ok() };
    assert_eq!((pct.discount_on(999), pct.discount_on(10_000)), (Some(100), Some(100)));
}

#[test]
fn claim_streams_are_distinct_per_tenant_template_member_and_ordinal() {
    let m = ask(1).member_id;
    let a = CouponId::for_claim(&tenant(), template_id(), m, 1);
    assert_eq!(a, CouponId::for_claim(&tenant(), template_id(), m, 1));
    assert_ne!(a, CouponId::for_claim(&tenant(), template_id(), m, 2));
    assert_ne!(a, CouponId::for_claim(&TenantId::parse("other").unwrap(), template_id(), m, 1));
}

proptest! {
    /// Random batches, stock changes and switches: never more issued than the
    /// stock, serials contiguous, and a replay of the events equals the live state.
    #[test]
    fn random_template_histories_never_over_issue(
        total in 1u32..50,
        steps in prop::collection::vec((0u8..4, 1usize..20, 1u32..60), 1..40),
    ) {
        let mut live: CouponTemplate = given(&[created(Stock::Finite { total })]);
        let mut log = vec![created(Stock::Finite { total })];
        let mut next = 0u128;
        for (kind, n, new_total) in steps {
            let command = match kind {
                0 | 1 => {
                    let asks = (0..n).map(|_| { next += 1; ask(next) }).collect();
                    TemplateCommand::Issue { asks }
                }
                2 => TemplateCommand::SetStock { stock: Stock::Finite { total: new_total }, actor: admin() },
                _ => if live.created.as_ref().unwrap().enabled {
                    TemplateCommand::Disable { actor: admin() }
                } else {
                    TemplateCommand::Enable { actor: admin() }
                },
            };
            if let Ok(events) = live.handle(command, now()) {
                for e in events {
                    live.apply(&e).unwrap();
                    log.push(e);
                }
            }
            let state = live.created.as_ref().unwrap();
            if let Stock::Finite { total } = state.stock {
                prop_assert!(state.issued <= u64::from(total));
            }
        }
        let replayed: CouponTemplate = given(&log);
        prop_assert_eq!(replayed, live);
    }
}

#[test]
fn a_claim_slot_beyond_the_current_limit_is_refused() {
    // created() has a limit of 1: slot 2 was chosen under older terms.
    let template: CouponTemplate = given(&[created(Stock::Unlimited)]);
    let mut second = ask(2);
    second.claim_ordinal = Some(2);
    let mut unslotted = ask(3);
    unslotted.claim_ordinal = None;
    let outcomes = template.decide_issues(&[ask(1), second, unslotted], now()).unwrap().outcomes;
    assert!(outcomes[0].is_ok());
    assert_eq!(outcomes[1..], [Err(IssueRefusal::LimitReached), Err(IssueRefusal::LimitReached)]);
}

// ------------------------------------------------------------------ coupons on mall orders

fn order(n: u128) -> crate::mall::MallOrderId {
    crate::mall::MallOrderId::from_uuid(uuid::Uuid::from_u128(n))
}

fn with(events: &[CouponEvent], command: CouponCommand, at: DateTime<Utc>) -> (Coupon, Vec<CouponEvent>) {
    let coupon: Coupon = given(events);
    let new = coupon.handle(command, at).unwrap();
    let mut all = events.to_vec();
    all.extend(new.iter().cloned());
    (given(&all), new)
}

#[test]
fn an_order_holds_the_coupon_then_uses_or_releases_it_once() {
    let member = ask(1).member_id;
    let hold = |o| CouponCommand::HoldForOrder { order_id: order(o), member_id: member };
    // Given an issued coupon, when order 1 holds it, then it is held by order 1 only.
    let (held, events) = with(&[issued_coupon()], hold(1), now());
    assert_eq!(held.state(), Some(CouponState::Held));
    let history = [issued_coupon(), events[0].clone()];
    assert_eq!(held.handle(hold(1), now()), Ok(Vec::new()), "holding again is idempotent");
    assert_eq!(held.handle(hold(2), now()), Err(CouponError::HeldByOrder(order(1))));
    assert_eq!(held.handle(redeem(code()), now()), Err(CouponError::HeldByOrder(order(1))));
    let void = CouponCommand::Void { reason: Reference::parse("x").unwrap(), actor: admin() };
    assert_eq!(held.handle(void, now()), Err(CouponError::HeldByOrder(order(1))));
    assert_eq!(held.handle(CouponCommand::Expire, now() + Duration::days(31)), Ok(Vec::new()));
    assert_eq!(
        held.handle(CouponCommand::UseOnOrder { order_id: order(2) }, now()),
        Err(CouponError::NotHeldByOrder(order(2)))
    );
    // Another member's order cannot take it.
    let stranger = CouponCommand::HoldForOrder { order_id: order(3), member_id: ask(2).member_id };
    assert_eq!(given::<Coupon>(&[issued_coupon()]).handle(stranger, now()), Err(CouponError::NotFound));

    // Paid: used once, then given back by a refund (expired if the window passed).
    let (used, used_events) = with(&history, CouponCommand::UseOnOrder { order_id: order(1) }, now());
    assert_eq!(used.state(), Some(CouponState::Redeemed));
    assert_eq!(used.handle(CouponCommand::UseOnOrder { order_id: order(1) }, now()), Ok(Vec::new()));
    let paid_history = [history[0].clone(), history[1].clone(), used_events[0].clone()];
    let (returned, _) = with(&paid_history, CouponCommand::ReturnFromOrder { order_id: order(1) }, now());
    assert_eq!(returned.state(), Some(CouponState::Active));
    let late = now() + Duration::days(30);
    let (returned_late, events) = with(&paid_history, CouponCommand::ReturnFromOrder { order_id: order(1) }, late);
    assert_eq!(returned_late.state(), Some(CouponState::Expired), "{events:?}");
    assert_eq!(returned.handle(CouponCommand::ReturnFromOrder { order_id: order(1) }, now()), Ok(Vec::new()));

    // Ended unpaid: released once; a release by another order changes nothing.
    assert_eq!(held.handle(CouponCommand::ReleaseFromOrder { order_id: order(2) }, now()), Ok(Vec::new()));
    let (released, _) = with(&history, CouponCommand::ReleaseFromOrder { order_id: order(1) }, now());
    assert_eq!(released.state(), Some(CouponState::Active));
    assert_eq!(released.handle(CouponCommand::ReleaseFromOrder { order_id: order(1) }, now()), Ok(Vec::new()));
    let (released_late, _) = with(&history, CouponCommand::ReleaseFromOrder { order_id: order(1) }, late);
    assert_eq!(released_late.state(), Some(CouponState::Expired));
}

#[test]
fn a_stored_order_move_from_the_wrong_state_or_order_is_an_invariant_violation() {
    let used = CouponEvent::CouponUsed { order_id: order(1), used_at: now() };
    let mut coupon: Coupon = given(&[issued_coupon()]);
    assert_eq!(coupon.apply(&used).unwrap_err().rule, rules::COUPON_ORDER_STATES, "used without a hold");
    let held = CouponEvent::CouponHeld { order_id: order(1), held_at: now() };
    let mut coupon: Coupon = given(&[issued_coupon(), held]);
    let other = CouponEvent::CouponReleased { order_id: order(2), released_at: now() };
    assert_eq!(coupon.apply(&other).unwrap_err().rule, rules::COUPON_ORDER_STATES, "released by another order");
}
