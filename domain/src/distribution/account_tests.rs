//! Given/when/then per rule of the commission account, and property tests
//! over random histories.

use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;
use uuid::Uuid;

use super::*;
use crate::mall::MallOrderId;
use crate::{Actor, AmountFen, BalanceFen, EventSourced, Reference};

type E = CommissionAccountEvent;
type C = CommissionAccountCommand;
type Err = CommissionAccountError;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 5, 10, 0, 0).unwrap()
}

fn tenant() -> TenantId {
    TenantId::parse("acme").unwrap()
}

fn member(n: u128) -> MemberId {
    MemberId::from_uuid(Uuid::from_u128(n))
}

fn distributor() -> MemberId {
    member(1)
}

fn key(order: u128, level: CommissionLevel) -> CommissionKey {
    CommissionKey { order_id: MallOrderId::from_uuid(Uuid::from_u128(10_000 + order)), level }
}

fn fen(n: i64) -> AmountFen {
    AmountFen::new(n).unwrap()
}

fn rate(bps: u32) -> CommissionRule {
    CommissionRule::Rate { bps: RateBps::new(bps).unwrap() }
}

fn qty(n: i64) -> Quantity {
    Quantity::new(n).unwrap()
}

fn admin() -> Actor {
    Actor::Admin { username: "boss".into() }
}

fn reference(s: &str) -> Reference {
    Reference::parse(s).unwrap()
}

fn wid(n: u128) -> WithdrawalId {
    WithdrawalId::from_uuid(Uuid::from_u128(90_000 + n))
}

fn policy(min: i64, fee_bps: u32) -> WithdrawalPolicy {
    WithdrawalPolicy { min_amount_fen: fen(min), fee: RateBps::new(fee_bps).unwrap() }
}

fn accrue(order: u128, basis: i64, rule: CommissionRule) -> C {
    C::Accrue {
        tenant_id: tenant(),
        distributor_id: distributor(),
        buyer_id: member(2),
        key: key(order, CommissionLevel::First),
        basis_fen: fen(basis),
        quantity: qty(1),
        rule,
        nearer_levels_fen: 0,
    }
}

fn settle(order: u128) -> C {
    C::Settle {
        key: key(order, CommissionLevel::First),
        delivered_at: Some(now() - Duration::days(7)),
        hold_days: 7,
        refund_open: false,
    }
}

fn reverse(order: u128) -> C {
    C::Reverse { key: key(order, CommissionLevel::First), refund: reference("refund r1") }
}

fn request(n: u128, amount: i64) -> C {
    C::RequestWithdrawal { withdrawal_id: wid(n), amount_fen: fen(amount), policy: policy(100, 0), actor: admin() }
}

/// Runs `commands` in order, each on the state the previous ones left,
/// asserting each is accepted.
fn given(commands: Vec<C>) -> CommissionAccount {
    let mut account = CommissionAccount::default();
    for command in commands {
        let events = account.handle(command.clone(), now()).unwrap_or_else(|e| panic!("{command:?}: {e}"));
        for event in &events {
            account.apply(event).unwrap();
        }
    }
    account
}

fn when(account: &CommissionAccount, command: C) -> Result<Vec<E>, Err> {
    account.handle(command, now())
}

#[test]
fn the_rate_is_floored_on_the_cash_basis_and_a_fixed_amount_counts_every_unit() {
    // 10.5% of 999 fen = 104.895 → 104.
    assert_eq!(rate(1_050).commission_fen(999, qty(1)), Some(104));
    assert_eq!(rate(0).commission_fen(999, qty(1)), Some(0));
    assert_eq!(rate(10_000).commission_fen(AmountFen::MAX, qty(1)), Some(AmountFen::MAX));
    let fixed = CommissionRule::FixedPerUnit { fen: fen(300) };
    assert_eq!(fixed.commission_fen(10_000, qty(3)), Some(900), "fixed × quantity, not once per order");
    assert_eq!(fixed.commission_fen(500, qty(3)), Some(500), "capped at the cash paid for the goods");
    assert_eq!(fixed.commission_fen(-1, qty(1)), None);
}

#[test]
fn level_two_earns_at_most_what_level_one_leaves_of_the_basis() {
    let fixed = |f| Some(CommissionRule::FixedPerUnit { fen: fen(f) });
    // 2 units at 400 + 300 fixed on 1,000 paid: 800, then 200 (not 600).
    assert_eq!(split_order(1_000, qty(2), fixed(400), fixed(300)), Some((800, 200)));
    assert_eq!(split_order(1_000, qty(2), Some(rate(6_000)), Some(rate(4_000))), Some((600, 400)));
    assert_eq!(split_order(1_000, qty(1), None, Some(rate(1_000))), Some((0, 100)));
    assert_eq!(split_order(-1, qty(1), Some(rate(1_000)), None), None);
    assert_eq!(rate(1_000).commission_fen_after(1_000, qty(1), 1_001), None);

    let mut level_two = accrue(1, 1_000, CommissionRule::FixedPerUnit { fen: fen(300) });
    if let C::Accrue { key, nearer_levels_fen, .. } = &mut level_two {
        key.level = CommissionLevel::Second;
        *nearer_levels_fen = 800;
    }
    let events = when(&CommissionAccount::default(), level_two.clone()).unwrap();
    let E::CommissionAccrued { amount_fen, .. } = &events[1] else { panic!() };
    assert_eq!(amount_fen.get(), 200);
    if let C::Accrue { nearer_levels_fen, .. } = &mut level_two {
        *nearer_levels_fen = 1_001;
    }
    assert_eq!(when(&CommissionAccount::default(), level_two), Err(Err::NearerLevels(1_001)));
}

#[test]
fn level_rates_sum_to_at_most_one_hundred_percent() {
    let r = |b| RateBps::new(b).unwrap();
    assert!(LevelRates::new(r(6_000), r(4_000)).is_ok());
    assert_eq!(LevelRates::new(r(6_000), r(4_001)), Err(RateError::SumAboveFull(10_001)));
    assert_eq!(RateBps::new(10_001), Err(RateError::OutOfRange(10_001)));
    assert!(serde_json::from_str::<RateBps>("10001").is_err());
    let rates = LevelRates::new(r(1_000), r(500)).unwrap();
    assert_eq!(rates.rate(CommissionLevel::Second), r(500));
}

#[test]
fn a_product_override_wins_over_the_distributor_level_and_the_tenant_default() {
    let r = |b| RateBps::new(b).unwrap();
    let tenant = LevelRates::new(r(1_000), r(500)).unwrap();
    let gold = LevelRates::new(r(1_500), r(700)).unwrap();
    let first = CommissionLevel::First;
    let second = CommissionLevel::Second;
    assert_eq!(resolve_rule(first, tenant, None, None), Some(rate(1_000)));
    assert_eq!(resolve_rule(second, tenant, Some(gold), None), Some(rate(700)));
    let own = ProductCommission::Rates { rates: LevelRates::new(r(2_000), r(0)).unwrap() };
    assert_eq!(resolve_rule(first, tenant, Some(gold), Some(own)), Some(rate(2_000)));
    assert_eq!(resolve_rule(second, tenant, Some(gold), Some(own)), None, "a 0% level earns nothing");
    let fixed = ProductCommission::FixedPerUnit { first_fen: fen(300), second_fen: None };
    assert_eq!(resolve_rule(first, tenant, None, Some(fixed)), Some(CommissionRule::FixedPerUnit { fen: fen(300) }));
    assert_eq!(resolve_rule(second, tenant, None, Some(fixed)), None);
    assert_eq!(resolve_rule(first, tenant, Some(gold), Some(ProductCommission::Excluded)), None);
    let bad = serde_json::json!({ "first": 6_000, "second": 4_001 });
    assert!(serde_json::from_value::<LevelRates>(bad).is_err(), "the sum is checked when read back");
}

#[test]
fn the_rule_names_its_source_product_then_distributor_level_then_tenant_default() {
    let r = |b| RateBps::new(b).unwrap();
    let tenant = Some(LevelRates::new(r(1_000), r(500)).unwrap());
    let gold = Some(LevelRates::new(r(1_500), r(700)).unwrap());
    let (first, second) = (CommissionLevel::First, CommissionLevel::Second);
    // Given only the tenant's defaults, then they apply.
    assert_eq!(resolve_rule_from(first, tenant, None, None), Some((rate(1_000), RuleSource::TenantDefault)));
    // Given a level, then the level's rate at the distributor's position.
    assert_eq!(resolve_rule_from(second, tenant, gold, None), Some((rate(700), RuleSource::DistributorLevel)));
    // A level applies even without tenant defaults; with neither nothing is earned.
    assert_eq!(resolve_rule_from(first, None, gold, None), Some((rate(1_500), RuleSource::DistributorLevel)));
    assert_eq!(resolve_rule_from(first, None, None, None), None);
    // Given a product's fixed amount, then it wins over both, per unit: 3 units × 300 fen = 900 fen.
    let fixed = ProductCommission::FixedPerUnit { first_fen: fen(300), second_fen: Some(fen(100)) };
    let (rule, source) = resolve_rule_from(first, tenant, gold, Some(fixed)).unwrap();
    assert_eq!(source, RuleSource::Product);
    assert_eq!(rule.commission_fen(10_000, qty(3)), Some(900), "fixed × quantity, not once per order");
    let (rule_two, _) = resolve_rule_from(second, None, None, Some(fixed)).unwrap();
    assert_eq!(split_order(10_000, qty(3), Some(rule), Some(rule_two)), Some((900, 300)));
    // Excluded products earn nothing whatever the rates.
    assert_eq!(resolve_rule_from(first, tenant, gold, Some(ProductCommission::Excluded)), None);
}

#[test]
fn the_first_accrual_opens_the_account_and_a_duplicate_pays_once() {
    let account = CommissionAccount::default();
    let events = when(&account, accrue(1, 10_000, rate(1_000))).unwrap();
    assert_eq!(events.len(), 2);
    assert!(matches!(events[0], E::CommissionAccountOpened { .. }));
    let E::CommissionAccrued { amount_fen, pending_after_fen, .. } = &events[1] else { panic!() };
    assert_eq!((amount_fen.get(), pending_after_fen.get()), (1_000, 1_000));

    let account = given(vec![accrue(1, 10_000, rate(1_000))]);
    assert_eq!(when(&account, accrue(1, 10_000, rate(1_000))), Ok(vec![]), "duplicated Pay notification");
    assert_eq!(when(&account, accrue(1, 20_000, rate(2_000))), Ok(vec![]), "same order and level: once");
    let mut second = accrue(1, 10_000, rate(500));
    if let C::Accrue { key, .. } = &mut second {
        key.level = CommissionLevel::Second;
    }
    assert_eq!(when(&account, second).unwrap().len(), 1, "level 2 of the same order is another commission");
}

#[test]
fn nothing_is_recorded_for_a_commission_that_rounds_to_zero_or_for_ones_own_order() {
    let account = CommissionAccount::default();
    assert_eq!(when(&account, accrue(1, 9, rate(1_000))), Ok(vec![]));
    let mut own = accrue(1, 10_000, rate(1_000));
    if let C::Accrue { buyer_id, .. } = &mut own {
        *buyer_id = distributor();
    }
    assert_eq!(when(&account, own), Err(Err::OwnOrder));
}

#[test]
fn an_account_takes_commissions_of_its_own_tenant_and_distributor_only() {
    let account = given(vec![accrue(1, 10_000, rate(1_000))]);
    let mut other = accrue(2, 10_000, rate(1_000));
    if let C::Accrue { distributor_id, .. } = &mut other {
        *distributor_id = member(3);
    }
    assert_eq!(when(&account, other), Err(Err::WrongAccount));
    assert_eq!(account.tenant(), Some(&tenant()));
}

#[test]
fn settlement_waits_for_delivery_the_holding_period_and_no_open_refund() {
    let account = given(vec![accrue(1, 10_000, rate(1_000))]);
    let k = key(1, CommissionLevel::First);
    let delivered = now() - Duration::days(6);
    let settle_with = |delivered_at, refund_open| C::Settle { key: k, delivered_at, hold_days: 7, refund_open };
    assert_eq!(when(&account, settle_with(None, false)), Err(Err::NotDelivered));
    assert_eq!(when(&account, settle_with(Some(delivered), false)), Err(Err::Holding(delivered + Duration::days(7))));
    assert_eq!(when(&account, settle_with(Some(now() - Duration::days(7)), true)), Err(Err::RefundOpen));
    let too_long =
        C::Settle { key: k, delivered_at: Some(delivered), hold_days: HOLD_DAYS_MAX + 1, refund_open: false };
    assert_eq!(when(&account, too_long), Err(Err::HoldDays(HOLD_DAYS_MAX + 1)));

    let events = when(&account, settle(1)).unwrap();
    let [E::CommissionSettled { withdrawable_after_fen, debt_after_fen, .. }] = events.as_slice() else { panic!() };
    assert_eq!((withdrawable_after_fen.get(), debt_after_fen.get()), (1_000, 0));
    let account = given(vec![accrue(1, 10_000, rate(1_000)), settle(1)]);
    assert_eq!(when(&account, settle(1)), Ok(vec![]), "a repeated settlement changes nothing");
    assert_eq!(when(&account, settle(2)), Err(Err::UnknownCommission));
    assert_eq!(when(&CommissionAccount::default(), settle(1)), Err(Err::NotFound));
}

#[test]
fn the_scheduler_knows_when_to_settle_and_the_payout_reference_is_fixed() {
    assert_eq!(settles_at(now(), 7), now() + Duration::days(7));
    assert_eq!(settles_at(now(), 0), now());
    assert_eq!(wid(1).payout_reference(), wid(1).payout_reference());
    assert_ne!(wid(1).payout_reference(), wid(2).payout_reference());
    assert!(Reference::parse(wid(1).payout_reference().as_str()).is_ok());
}

#[test]
fn a_refund_before_settlement_reverses_and_the_commission_never_settles() {
    let account = given(vec![accrue(1, 10_000, rate(1_000)), reverse(1)]);
    assert_eq!(account.figures.pending, 0);
    assert_eq!(account.figures.reversed, 1_000);
    assert_eq!(account.withdrawable_fen(), 0);
    assert_eq!(when(&account, settle(1)), Err(Err::Reversed));
    assert_eq!(when(&account, reverse(1)), Ok(vec![]), "a repeated refund notification changes nothing");
}

#[test]
fn a_refund_after_settlement_claws_back_from_the_balance() {
    let account = given(vec![accrue(1, 10_000, rate(1_000)), accrue(2, 20_000, rate(1_000)), settle(1), settle(2)]);
    let events = when(&account, reverse(1)).unwrap();
    let [E::CommissionClawedBack { withdrawable_after_fen, debt_after_fen, .. }] = events.as_slice() else { panic!() };
    assert_eq!((withdrawable_after_fen.get(), debt_after_fen.get()), (2_000, 0));
}

#[test]
fn a_refund_after_the_money_was_withdrawn_books_debt_never_clamped_and_later_settlements_repay_it() {
    let account = given(vec![accrue(1, 10_000, rate(1_000)), settle(1), request(1, 800), reverse(1)]);
    assert_eq!((account.withdrawable_fen(), account.debt_fen()), (0, 800));
    assert_eq!(account.figures.debt_repaid(), 200);
    assert_eq!(when(&account, request(2, 100)), Err(Err::Insufficient { available: 0 }));

    let account = given(vec![
        accrue(1, 10_000, rate(1_000)),
        settle(1),
        request(1, 800),
        reverse(1),
        accrue(2, 5_000, rate(2_000)),
        settle(2),
    ]);
    assert_eq!((account.withdrawable_fen(), account.debt_fen()), (200, 0), "1,000 settled repays the 800 of debt");
    assert_eq!(account.figures.debt_repaid(), 1_000);
    assert_eq!(when(&account, settle(1)), Err(Err::ClawedBack));
}

#[test]
fn a_withdrawal_takes_at_most_the_withdrawable_balance_and_respects_the_minimum_and_fee() {
    let account = given(vec![accrue(1, 10_000, rate(1_000)), settle(1)]);
    assert_eq!(when(&account, request(1, 1_001)), Err(Err::Insufficient { available: 1_000 }));
    assert_eq!(when(&account, request(1, 99)), Err(Err::BelowMinimum(100)));
    let with_fee = |amount, bps| C::RequestWithdrawal {
        withdrawal_id: wid(1),
        amount_fen: fen(amount),
        policy: policy(1, bps),
        actor: admin(),
    };
    let events = when(&account, with_fee(1_000, 60)).unwrap();
    let [E::WithdrawalRequested { fee_fen, payout_fen, withdrawable_after_fen, .. }] = events.as_slice() else {
        panic!()
    };
    assert_eq!((*fee_fen, payout_fen.get(), withdrawable_after_fen.get()), (6, 994, 0));
    assert_eq!(when(&account, with_fee(1, 10_000)), Err(Err::NothingToPayOut));
    let account = given(vec![accrue(1, 10_000, rate(1_000)), settle(1), request(1, 600)]);
    assert_eq!(when(&account, request(1, 100)), Err(Err::DuplicateWithdrawal));
    assert_eq!(when(&account, request(2, 401)), Err(Err::Insufficient { available: 400 }), "money left at request");
    assert_eq!(when(&CommissionAccount::default(), request(1, 100)), Err(Err::NotFound));
}

#[test]
fn pending_commission_is_never_withdrawable() {
    let account = given(vec![accrue(1, 10_000, rate(1_000))]);
    assert_eq!(when(&account, request(1, 100)), Err(Err::Insufficient { available: 0 }));
}

#[test]
fn two_withdrawals_of_the_whole_balance_on_the_same_state_cannot_both_apply() {
    let account = given(vec![accrue(1, 10_000, rate(1_000)), settle(1)]);
    let first = when(&account, request(1, 1_000)).unwrap();
    let second = when(&account, request(2, 1_000)).unwrap();
    // The store commits the first; the second, decided on the same stale
    // state, is refused by apply as well as by handle on the fresh state.
    let mut fresh = account.clone();
    fresh.apply(&first[0]).unwrap();
    assert_eq!(fresh.apply(&second[0]).unwrap_err().rule, rules::WITHDRAWAL_COVERED);
    let mut fresh = account.clone();
    fresh.apply(&first[0]).unwrap();
    assert_eq!(when(&fresh, request(2, 1_000)), Err(Err::Insufficient { available: 0 }));
}

#[test]
fn a_withdrawal_racing_a_claw_back_never_pays_more_than_was_earned() {
    let account = given(vec![accrue(1, 10_000, rate(1_000)), settle(1)]);
    let withdrawal = when(&account, request(1, 1_000)).unwrap();
    let claw_back = when(&account, reverse(1)).unwrap();
    // Whichever commits first, the other must be decided again.
    let mut w_first = account.clone();
    w_first.apply(&withdrawal[0]).unwrap();
    let mut stale = w_first.clone();
    assert_eq!(stale.apply(&claw_back[0]).unwrap_err().rule, rules::FIGURES, "it states the old balances");
    let events = when(&w_first, reverse(1)).unwrap();
    w_first.apply(&events[0]).unwrap();
    assert_eq!((w_first.withdrawable_fen(), w_first.debt_fen()), (0, 1_000));
    let mut c_first = account.clone();
    c_first.apply(&claw_back[0]).unwrap();
    assert_eq!(c_first.apply(&withdrawal[0]).unwrap_err().rule, rules::WITHDRAWAL_COVERED);
    assert_eq!(when(&c_first, request(1, 1_000)), Err(Err::Insufficient { available: 0 }));
}

fn step(account: &CommissionAccount, command: C) -> CommissionAccount {
    let mut next = account.clone();
    for event in when(account, command).unwrap() {
        next.apply(&event).unwrap();
    }
    next
}

#[test]
fn a_withdrawal_is_approved_then_paid_exactly_once() {
    let account = given(vec![accrue(1, 10_000, rate(1_000)), settle(1), request(1, 1_000)]);
    let paid = |r: &str| C::RecordWithdrawalPaid { withdrawal_id: wid(1), payout_ref: reference(r) };
    assert_eq!(when(&account, paid("ledger 1")), Err(Err::WithdrawalState("requested")));
    let account =
        step(&account, C::ApproveWithdrawal { withdrawal_id: wid(1), actor: admin(), method: PayoutMethod::Balance });
    let account = step(&account, paid("ledger 1"));
    assert_eq!((account.figures.paid_out, account.figures.in_flight), (1_000, 0));
    assert_eq!(when(&account, paid("ledger 1")), Ok(vec![]), "the same result again changes nothing");
    assert_eq!(when(&account, paid("ledger 2")), Err(Err::OtherPayout));
    let reject = C::RejectWithdrawal { withdrawal_id: wid(1), reason: reference("no"), actor: admin() };
    assert_eq!(when(&account, reject), Err(Err::WithdrawalState("paid")));
    assert_eq!(
        when(&account, C::ApproveWithdrawal { withdrawal_id: wid(2), actor: admin(), method: PayoutMethod::Balance }),
        Err(Err::UnknownWithdrawal)
    );
}

#[test]
fn a_rejected_withdrawal_returns_the_funds() {
    let account = given(vec![accrue(1, 10_000, rate(1_000)), settle(1), request(1, 600)]);
    let reject = C::RejectWithdrawal { withdrawal_id: wid(1), reason: reference("bank details wrong"), actor: admin() };
    let account = step(&account, reject.clone());
    assert_eq!(account.withdrawable_fen(), 1_000);
    assert_eq!(account.withdrawals[&wid(1)].state, WithdrawalState::Rejected);
    assert_eq!(when(&account, reject), Err(Err::WithdrawalState("rejected")));
}

#[test]
fn a_failed_payout_holds_the_funds_until_retried_or_returned() {
    let approved = given(vec![
        accrue(1, 10_000, rate(1_000)),
        settle(1),
        request(1, 600),
        C::ApproveWithdrawal { withdrawal_id: wid(1), actor: admin(), method: PayoutMethod::Balance },
    ]);
    let fail = C::RecordWithdrawalFailed { withdrawal_id: wid(1), reason: reference("NAME_MISMATCH") };
    let failed = step(&approved, fail.clone());
    assert_eq!((failed.withdrawable_fen(), failed.figures.in_flight), (400, 600));
    assert_eq!(when(&failed, fail), Ok(vec![]), "a repeated failure notification changes nothing");

    let retried = step(&failed, C::RetryWithdrawal { withdrawal_id: wid(1), actor: admin() });
    assert_eq!(retried.withdrawals[&wid(1)].state, WithdrawalState::Approved);
    let paid = step(&retried, C::RecordWithdrawalPaid { withdrawal_id: wid(1), payout_ref: reference("t2") });
    assert_eq!(paid.figures.paid_out, 600);

    let returned = step(&failed, C::ReturnWithdrawal { withdrawal_id: wid(1), actor: admin() });
    assert_eq!((returned.withdrawable_fen(), returned.figures.in_flight), (1_000, 0));
    assert_eq!(
        when(&returned, C::RetryWithdrawal { withdrawal_id: wid(1), actor: admin() }),
        Err(Err::WithdrawalState("returned"))
    );
    assert_eq!(
        when(&approved, C::ReturnWithdrawal { withdrawal_id: wid(1), actor: admin() }),
        Err(Err::WithdrawalState("approved"))
    );
}

#[test]
fn a_transfer_payout_records_its_numbers_first_and_is_paid_once_by_notification_or_query() {
    let approve = |method| C::ApproveWithdrawal { withdrawal_id: wid(1), actor: admin(), method };
    let base = vec![accrue(1, 10_000, rate(1_000)), settle(1), request(1, 600)];
    let transfer = C::RequestWithdrawalTransfer { withdrawal_id: wid(1) };
    // Given a withdrawal approved for the balance: no transfer.
    let by_balance = given([base.clone(), vec![approve(PayoutMethod::Balance)]].concat());
    assert_eq!(when(&by_balance, transfer.clone()), Err(Err::NotATransfer(PayoutMethod::Balance)));
    // Given one approved for a transfer: the first transfer's numbers derive from the id.
    let approved = given([base, vec![approve(PayoutMethod::WechatTransfer)]].concat());
    let (batch, detail) = wid(1).transfer_nos(1);
    assert_eq!(
        when(&approved, transfer.clone()),
        Ok(vec![E::WithdrawalTransferRequested {
            withdrawal_id: wid(1),
            attempt: 1,
            out_batch_no: batch.clone(),
            out_detail_no: detail.clone(),
            requested_at: now(),
        }])
    );
    let transferring = step(&approved, transfer.clone());
    assert_eq!(transferring.withdrawals[&wid(1)].state, WithdrawalState::Transferring);
    assert_eq!(transferring.figures.in_flight, 600, "the funds stay held");
    // Asked again (a lost answer, a crash): nothing new, the same numbers stand.
    assert_eq!(when(&transferring, transfer.clone()), Ok(vec![]));
    // Paid once, whichever of the notification and the query comes first.
    let paid_cmd = C::RecordWithdrawalPaid { withdrawal_id: wid(1), payout_ref: reference(&detail) };
    let paid = step(&transferring, paid_cmd.clone());
    assert_eq!((paid.figures.paid_out, paid.figures.in_flight), (600, 0));
    assert_eq!(when(&paid, paid_cmd), Ok(vec![]));
    // Failed: retried under the next numbers, or returned.
    let fail = C::RecordWithdrawalFailed { withdrawal_id: wid(1), reason: reference("FAIL: ACCOUNT_FROZEN") };
    let failed = step(&transferring, fail);
    let retried = step(&failed, C::RetryWithdrawal { withdrawal_id: wid(1), actor: admin() });
    let again = step(&retried, transfer.clone());
    let attempt = again.withdrawals[&wid(1)].transfer.clone().unwrap();
    assert_eq!((attempt.attempt, attempt.out_detail_no), (2, wid(1).transfer_nos(2).1));
    assert_ne!(wid(1).transfer_nos(2), (batch, detail));
    let returned = step(&failed, C::ReturnWithdrawal { withdrawal_id: wid(1), actor: admin() });
    assert_eq!((returned.withdrawable_fen(), returned.figures.in_flight), (1_000, 0));
    // A stored transfer whose numbers skip or differ is refused.
    let mut broken = approved.clone();
    let skipped = E::WithdrawalTransferRequested {
        withdrawal_id: wid(1),
        attempt: 2,
        out_batch_no: wid(1).transfer_nos(2).0,
        out_detail_no: wid(1).transfer_nos(2).1,
        requested_at: now(),
    };
    assert_eq!(broken.apply(&skipped).unwrap_err().rule, rules::WITHDRAWAL_STATES);
}

#[test]
fn transfer_numbers_name_their_withdrawal_and_attempt_within_pays_limits() {
    for n in [0u128, 1, u128::MAX - 90_000] {
        let id = wid(n);
        for attempt in [1, 9, TRANSFER_ATTEMPTS_MAX] {
            let (batch, detail) = id.transfer_nos(attempt);
            for no in [&batch, &detail] {
                assert!(no.len() <= 32 && no.len() >= 5 && no.bytes().all(|b| b.is_ascii_alphanumeric()), "{no}");
                assert_eq!(WithdrawalId::from_transfer_no(no), Some((id, attempt)));
            }
        }
    }
    assert_eq!(WithdrawalId::from_transfer_no("wbshort01"), None);
    assert_eq!(WithdrawalId::from_transfer_no("mo0000000000000000000000000001"), None);
}

#[test]
fn apply_refuses_events_that_break_the_account() {
    let account = given(vec![accrue(1, 10_000, rate(1_000))]);
    let mut broken = account.clone();
    let wrong_amount = E::CommissionSettled {
        key: key(1, CommissionLevel::First),
        amount_fen: fen(999),
        delivered_at: now(),
        withdrawable_after_fen: BalanceFen::new(999).unwrap(),
        debt_after_fen: BalanceFen::ZERO,
        settled_at: now(),
    };
    assert_eq!(broken.apply(&wrong_amount).unwrap_err().rule, rules::FIGURES);
    let events = when(&CommissionAccount::default(), accrue(1, 10_000, rate(1_000))).unwrap();
    let mut twice = account.clone();
    assert_eq!(twice.apply(&events[0]).unwrap_err().rule, rules::ACCOUNT_OPENED_ONCE);
    assert_eq!(twice.apply(&events[1]).unwrap_err().rule, rules::ACCRUED_ONCE);
    let mut fresh = CommissionAccount::default();
    assert_eq!(fresh.apply(&events[1]).unwrap_err().rule, rules::ACCOUNT_EXISTS);
}

#[test]
fn the_state_survives_a_snapshot() {
    let account = given(vec![accrue(1, 10_000, rate(1_000)), settle(1), request(1, 600)]);
    let json = serde_json::to_string(&account).unwrap();
    assert_eq!(serde_json::from_str::<CommissionAccount>(&json).unwrap(), account);
}

// ---------------------------------------------------------------- properties

#[derive(Debug, Clone)]
enum Op {
    Accrue { order: u8, second: bool, basis: i64, bps: u32, fixed: Option<i64>, quantity: i64 },
    Settle { order: u8, second: bool, refund_open: bool, days_ago: i64 },
    Reverse { order: u8, second: bool },
    Request { n: u8, amount: i64, fee_bps: u32 },
    Approve(u8),
    Reject(u8),
    Pay(u8),
    Fail(u8),
    Retry(u8),
    Return(u8),
}

fn op() -> impl Strategy<Value = Op> {
    let order = 0u8..8;
    prop_oneof![
        4 => (order.clone(), any::<bool>(), 1i64..50_000, 0u32..=10_000, prop::option::of(1i64..3_000), 1i64..5)
            .prop_map(|(order, second, basis, bps, fixed, quantity)| Op::Accrue { order, second, basis, bps, fixed, quantity }),
        4 => (order.clone(), any::<bool>(), prop::bool::weighted(0.1), 0i64..10)
            .prop_map(|(order, second, refund_open, days_ago)| Op::Settle { order, second, refund_open, days_ago }),
        2 => (order, any::<bool>()).prop_map(|(order, second)| Op::Reverse { order, second }),
        4 => (0u8..6, 1i64..6_000, 0u32..=10_000).prop_map(|(n, amount, fee_bps)| Op::Request { n, amount, fee_bps }),
        2 => (0u8..6).prop_map(Op::Approve),
        1 => (0u8..6).prop_map(Op::Reject),
        2 => (0u8..6).prop_map(Op::Pay),
        1 => (0u8..6).prop_map(Op::Fail),
        1 => (0u8..6).prop_map(Op::Retry),
        1 => (0u8..6).prop_map(Op::Return),
    ]
}

fn level(second: bool) -> CommissionLevel {
    if second {
        CommissionLevel::Second
    } else {
        CommissionLevel::First
    }
}

fn command(op: &Op) -> C {
    let w = |n: &u8| wid(u128::from(*n));
    match op {
        Op::Accrue { order, second, basis, bps, fixed, quantity } => C::Accrue {
            tenant_id: tenant(),
            distributor_id: distributor(),
            buyer_id: member(2),
            key: key(u128::from(*order), level(*second)),
            basis_fen: fen(*basis),
            quantity: qty(*quantity),
            rule: fixed.map_or(rate(*bps), |f| CommissionRule::FixedPerUnit { fen: fen(f) }),
            nearer_levels_fen: 0,
        },
        Op::Settle { order, second, refund_open, days_ago } => C::Settle {
            key: key(u128::from(*order), level(*second)),
            delivered_at: Some(now() - Duration::days(*days_ago)),
            hold_days: 3,
            refund_open: *refund_open,
        },
        Op::Reverse { order, second } => {
            C::Reverse { key: key(u128::from(*order), level(*second)), refund: reference("refund") }
        }
        Op::Request { n, amount, fee_bps } => C::RequestWithdrawal {
            withdrawal_id: w(n),
            amount_fen: fen(*amount),
            policy: policy(1, *fee_bps),
            actor: admin(),
        },
        Op::Approve(n) => C::ApproveWithdrawal { withdrawal_id: w(n), actor: admin(), method: PayoutMethod::Balance },
        Op::Reject(n) => C::RejectWithdrawal { withdrawal_id: w(n), reason: reference("no"), actor: admin() },
        Op::Pay(n) => C::RecordWithdrawalPaid { withdrawal_id: w(n), payout_ref: reference("paid") },
        Op::Fail(n) => C::RecordWithdrawalFailed { withdrawal_id: w(n), reason: reference("failed") },
        Op::Retry(n) => C::RetryWithdrawal { withdrawal_id: w(n), actor: admin() },
        Op::Return(n) => C::ReturnWithdrawal { withdrawal_id: w(n), actor: admin() },
    }
}

/// Every figure recomputed from the commissions and withdrawals themselves.
fn check_accounting(account: &CommissionAccount) -> Result<(), TestCaseError> {
    let sum = |states: &[CommissionState]| -> i64 {
        account.commissions.values().filter(|c| states.contains(&c.state)).map(|c| c.amount_fen).sum()
    };
    use CommissionState as S;
    let earned = sum(&[S::Pending, S::Settled, S::Reversed, S::ClawedBack]);
    let pending = sum(&[S::Pending]);
    let settled = sum(&[S::Settled, S::ClawedBack]);
    let reversed = sum(&[S::Reversed]);
    let clawed_back = sum(&[S::ClawedBack]);
    let withdrawn: i64 = account
        .withdrawals
        .values()
        .filter(|w| w.state.holds_funds() || w.state == WithdrawalState::Paid)
        .map(|w| w.amount_fen)
        .sum();
    let f = &account.figures;
    prop_assert_eq!(
        (f.earned, f.pending, f.settled, f.reversed, f.clawed_back),
        (earned, pending, settled, reversed, clawed_back)
    );
    prop_assert_eq!(f.withdrawn(), withdrawn);
    prop_assert!(f.withdrawable() >= 0 && f.debt() >= 0);
    prop_assert!(f.withdrawable() == 0 || f.debt() == 0);
    // earned = settled + pending + reversed
    prop_assert_eq!(earned, settled + pending + reversed);
    // settled = withdrawn + withdrawable + debt repaid
    prop_assert_eq!(settled, withdrawn + f.withdrawable() + f.debt_repaid());
    // clawed back = debt + debt repaid; never more withdrawn than settled
    prop_assert_eq!(clawed_back, f.debt() + f.debt_repaid());
    prop_assert!(f.debt_repaid() >= 0);
    prop_assert!(withdrawn <= settled, "withdrew {} of {} settled", withdrawn, settled);
    for w in account.withdrawals.values() {
        prop_assert!(w.fee_fen >= 0 && w.fee_fen < w.amount_fen);
    }
    Ok(())
}

proptest! {
    /// Random accruals, settlements, refunds and withdrawal steps: the
    /// balances are never negative, every fen is accounted for after every
    /// event, nothing is ever withdrawn beyond what settled, and replaying the
    /// stream gives the live state.
    #[test]
    fn random_commission_histories_account_for_every_fen(ops in prop::collection::vec(op(), 1..120)) {
        let mut live = CommissionAccount::default();
        let mut log = Vec::new();
        for op in &ops {
            let Ok(events) = live.handle(command(op), now()) else { continue };
            for event in events {
                live.apply(&event).map_err(|v| TestCaseError::fail(v.to_string()))?;
                check_accounting(&live)?;
                log.push(event);
            }
        }
        let mut replayed = CommissionAccount::default();
        for event in &log {
            replayed.apply(event).map_err(|v| TestCaseError::fail(v.to_string()))?;
        }
        prop_assert_eq!(&replayed, &live);
        let json = serde_json::to_value(&live).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(serde_json::from_value::<CommissionAccount>(json).ok(), Some(live));
    }

    /// A stale decision (taken before the previous event committed) never
    /// applies: apply pairs the cover check of handle and recomputes the
    /// balance it states.
    #[test]
    fn a_stale_withdrawal_never_overdraws(ops in prop::collection::vec(op(), 1..60), amount in 1i64..6_000) {
        let mut account = CommissionAccount::default();
        for op in &ops {
            if let Ok(events) = account.handle(command(op), now()) {
                for event in events {
                    account.apply(&event).map_err(|v| TestCaseError::fail(v.to_string()))?;
                }
            }
        }
        let stale = account.handle(command(&Op::Request { n: 200, amount, fee_bps: 0 }), now());
        let racing = account.handle(command(&Op::Request { n: 201, amount, fee_bps: 0 }), now());
        if let (Ok(a), Ok(b)) = (stale, racing) {
            let mut after = account.clone();
            after.apply(&a[0]).map_err(|v| TestCaseError::fail(v.to_string()))?;
            // Its stated balance is stale either way; past the balance it
            // breaks the cover rule first.
            let refused = after.apply(&b[0]).err().map(|v| v.rule);
            let overdraws = 2 * amount > account.withdrawable_fen();
            let expected = if overdraws { rules::WITHDRAWAL_COVERED } else { rules::FIGURES };
            prop_assert_eq!(refused, Some(expected));
        }
    }
}
