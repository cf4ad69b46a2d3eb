//! Given/when/then for enrolment, binding, beneficiaries and the new-member
//! reward.

use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;
use uuid::Uuid;

use super::binding::*;
use super::CommissionLevel;
use crate::{AmountFen, MemberId, OpenId, TenantId};

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 5, 10, 0, 0).unwrap()
}

fn m(n: u128) -> MemberId {
    MemberId::from_uuid(Uuid::from_u128(n))
}

fn ask(member: u128, candidate: u128, ancestors: &[MemberId]) -> BindingAsk<'_> {
    BindingAsk {
        member_id: m(member),
        candidate: m(candidate),
        candidate_standing: DistributorStanding::Active,
        candidate_ancestors: ancestors,
        current: None,
        mode: BindingMode::FirstWins,
    }
}

#[test]
fn enrolment_follows_the_tenant_policy() {
    use DistributorStanding as S;
    assert_eq!(decide_enrolment(EnrolmentPolicy::Everyone, S::NotDistributor, 0), Ok(Enrolment::Enrolled));
    assert_eq!(decide_enrolment(EnrolmentPolicy::Application, S::NotDistributor, 0), Ok(Enrolment::AwaitsApproval));
    assert_eq!(decide_enrolment(EnrolmentPolicy::Application, S::Rejected, 0), Ok(Enrolment::AwaitsApproval));
    assert_eq!(
        decide_enrolment(EnrolmentPolicy::Designation, S::NotDistributor, 1_000_000),
        Err(EnrolmentRefusal::DesignationOnly)
    );
    assert_eq!(decide_enrolment(EnrolmentPolicy::Everyone, S::Active, 0), Err(EnrolmentRefusal::AlreadyDistributor));
    assert_eq!(decide_enrolment(EnrolmentPolicy::Everyone, S::Suspended, 0), Err(EnrolmentRefusal::Suspended));
    assert_eq!(
        decide_enrolment(EnrolmentPolicy::Application, S::Applied, 0),
        Err(EnrolmentRefusal::ApplicationPending)
    );
}

#[test]
fn a_spending_threshold_counts_cash_paid_net_of_refunds() {
    let policy = EnrolmentPolicy::SpendingThreshold { paid_fen: AmountFen::new(10_000).unwrap() };
    let standing = DistributorStanding::NotDistributor;
    // 12,000 paid, 3,000 refunded: 9,000 counts.
    assert_eq!(
        decide_enrolment(policy, standing, 12_000 - 3_000),
        Err(EnrolmentRefusal::BelowThreshold { missing_fen: 1_000 })
    );
    assert_eq!(decide_enrolment(policy, standing, 10_000), Ok(Enrolment::Enrolled));
    assert_eq!(decide_enrolment(policy, standing, -5), Err(EnrolmentRefusal::BelowThreshold { missing_fen: 10_000 }));
}

#[test]
fn admins_approve_reject_designate_suspend_and_reinstate() {
    use DistributorStanding as S;
    use StandingChange as C;
    assert_eq!(change_standing(S::Applied, C::Approve), Some(S::Active));
    assert_eq!(change_standing(S::Applied, C::Reject), Some(S::Rejected));
    assert_eq!(change_standing(S::NotDistributor, C::Designate), Some(S::Active));
    assert_eq!(change_standing(S::Active, C::Suspend), Some(S::Suspended));
    assert_eq!(change_standing(S::Suspended, C::Reinstate), Some(S::Active));
    assert_eq!(change_standing(S::Active, C::Approve), None);
    assert_eq!(
        change_standing(S::Suspended, C::Designate),
        None,
        "a suspended distributor is reinstated, not designated"
    );
    assert_eq!(change_standing(S::Active, C::Reinstate), None);
    assert_eq!(change_standing(S::NotDistributor, C::Reject), None);
}

#[test]
fn a_member_never_binds_to_themself_or_to_someone_not_an_active_distributor() {
    assert_eq!(decide_binding(ask(1, 1, &[]), now()), Err(BindingRefusal::SelfBinding));
    let mut suspended = ask(1, 2, &[]);
    suspended.candidate_standing = DistributorStanding::Suspended;
    assert_eq!(decide_binding(suspended, now()), Err(BindingRefusal::NotActiveDistributor));
    assert_eq!(decide_binding(ask(1, 2, &[]), now()), Ok(BindingDecision::Bind { replaces: None }));
}

#[test]
fn a_binding_closing_a_cycle_of_any_length_is_refused() {
    // 2 is bound to 1: binding 1 under 2 closes 1 → 2 → 1.
    assert_eq!(decide_binding(ask(1, 2, &[m(1)]), now()), Err(BindingRefusal::Cycle { length: 2 }));
    // 3 → 2 → 1: binding 1 under 3 closes a cycle of 3.
    assert_eq!(decide_binding(ask(1, 3, &[m(2), m(1)]), now()), Err(BindingRefusal::Cycle { length: 3 }));
    let long: Vec<_> = (2..1_000).map(m).chain([m(1)]).collect();
    assert_eq!(decide_binding(ask(1, 9_999, &long), now()), Err(BindingRefusal::Cycle { length: 1_000 }));
    assert_eq!(decide_binding(ask(1, 3, &[m(2), m(4)]), now()), Ok(BindingDecision::Bind { replaces: None }));
}

#[test]
fn a_chain_that_repeats_or_runs_past_the_limit_is_refused_as_corrupt() {
    assert_eq!(decide_binding(ask(1, 3, &[m(2), m(4), m(2)]), now()), Err(BindingRefusal::CorruptChain));
    let at_limit: Vec<_> = (10..10 + CHAIN_LEN_MAX as u128).map(m).collect();
    assert!(decide_binding(ask(1, 3, &at_limit), now()).is_ok());
    let past: Vec<_> = (10..11 + CHAIN_LEN_MAX as u128).map(m).collect();
    assert_eq!(decide_binding(ask(1, 3, &past), now()), Err(BindingRefusal::CorruptChain));
}

fn bound_to(n: u128, days_ago: i64) -> Option<Binding> {
    Some(Binding { distributor_id: m(n), bound_at: now() - Duration::days(days_ago) })
}

#[test]
fn first_wins_keeps_the_first_binding_forever() {
    let mut a = ask(1, 3, &[]);
    a.current = bound_to(2, 3_000);
    assert_eq!(decide_binding(a, now()), Err(BindingRefusal::Bound(None)));
    a.candidate = m(2);
    assert_eq!(decide_binding(a, now()), Ok(BindingDecision::AlreadyBound));
}

#[test]
fn a_validity_window_lets_a_new_binding_replace_an_expired_one() {
    let mut a = ask(1, 3, &[]);
    a.mode = BindingMode::ValidFor { days: 30 };
    a.current = bound_to(2, 29);
    let until = now() + Duration::days(1);
    assert_eq!(decide_binding(a, now()), Err(BindingRefusal::Bound(Some(until))));
    a.current = bound_to(2, 30);
    assert_eq!(decide_binding(a, now()), Ok(BindingDecision::Bind { replaces: Some(m(2)) }));
    a.mode = BindingMode::ValidFor { days: 0 };
    assert_eq!(decide_binding(a, now()), Err(BindingRefusal::WindowDays(0)));
    a.mode = BindingMode::ValidFor { days: BINDING_DAYS_MAX + 1 };
    assert_eq!(decide_binding(a, now()), Err(BindingRefusal::WindowDays(BINDING_DAYS_MAX + 1)));
}

#[test]
fn last_wins_rebinds_on_every_arrival_but_never_into_a_cycle() {
    let mut a = ask(1, 3, &[]);
    a.mode = BindingMode::LastWins;
    a.current = bound_to(2, 0);
    assert_eq!(decide_binding(a, now()), Ok(BindingDecision::Bind { replaces: Some(m(2)) }));
    let chain = [m(1)];
    a.candidate_ancestors = &chain;
    assert_eq!(decide_binding(a, now()), Err(BindingRefusal::Cycle { length: 2 }));
}

#[test]
fn levels_one_and_two_earn_from_active_distributors_up_the_chain() {
    use DistributorStanding as S;
    let chain = [(m(2), S::Active), (m(3), S::Active), (m(4), S::Active)];
    assert_eq!(beneficiaries(m(1), &chain, CommissionDepth::One), vec![(CommissionLevel::First, m(2))]);
    assert_eq!(
        beneficiaries(m(1), &chain, CommissionDepth::Two),
        vec![(CommissionLevel::First, m(2)), (CommissionLevel::Second, m(3))]
    );
    let suspended = [(m(2), S::Suspended), (m(3), S::Active)];
    assert_eq!(
        beneficiaries(m(1), &suspended, CommissionDepth::Two),
        vec![(CommissionLevel::Second, m(3))],
        "a suspended level earns nothing and nobody moves up"
    );
    assert!(beneficiaries(m(1), &[], CommissionDepth::Two).is_empty());
}

#[test]
fn a_re_created_member_never_earns_a_second_new_member_reward() {
    let tenant = TenantId::parse("acme").unwrap();
    let openid = OpenId::parse("o6_bmjrPTlm6_2sgVt7hMZOPfL2M").unwrap();
    let first = new_member_reward_key(&tenant, Some(&openid), m(1));
    let recreated = new_member_reward_key(&tenant, Some(&openid), m(2));
    assert_eq!(first, recreated, "same person, same key, whatever the member id");
    let rewarded = [first];
    assert!(!new_member_reward_due(recreated, m(9), m(2), |k| rewarded.contains(&k)));
    assert!(new_member_reward_due(first, m(9), m(1), |_| false));
    assert!(!new_member_reward_due(first, m(1), m(1), |_| false), "no reward for referring oneself");
    let other_tenant = TenantId::parse("other").unwrap();
    assert_ne!(new_member_reward_key(&other_tenant, Some(&openid), m(1)), first);
    assert_ne!(new_member_reward_key(&tenant, None, m(1)), new_member_reward_key(&tenant, None, m(2)));
}

proptest! {
    /// Bindings decided one at a time (as under the tenant's binding lock)
    /// over random arrivals never create a cycle in the parent graph.
    #[test]
    fn serialised_bindings_never_form_a_cycle(
        arrivals in prop::collection::vec((0u128..12, 0u128..12), 1..200),
        mode in prop_oneof![Just(BindingMode::FirstWins), Just(BindingMode::LastWins), Just(BindingMode::ValidFor { days: 1 })],
    ) {
        let mut parent: std::collections::BTreeMap<MemberId, Binding> = Default::default();
        for (i, (member, candidate)) in arrivals.iter().enumerate() {
            let at = now() + Duration::hours(i as i64 * 13);
            let mut chain = Vec::new();
            let mut cursor = m(*candidate);
            while let Some(b) = parent.get(&cursor) {
                chain.push(b.distributor_id);
                cursor = b.distributor_id;
                prop_assert!(chain.len() <= 12, "a cycle slipped in");
            }
            let decision = decide_binding(BindingAsk {
                member_id: m(*member),
                candidate: m(*candidate),
                candidate_standing: DistributorStanding::Active,
                candidate_ancestors: &chain,
                current: parent.get(&m(*member)).copied(),
                mode,
            }, at);
            if let Ok(BindingDecision::Bind { .. }) = decision {
                parent.insert(m(*member), Binding { distributor_id: m(*candidate), bound_at: at });
            }
        }
        for start in parent.keys() {
            let mut cursor = *start;
            let mut steps = 0;
            while let Some(b) = parent.get(&cursor) {
                cursor = b.distributor_id;
                steps += 1;
                prop_assert!(cursor != *start && steps <= 12, "cycle through {start}");
            }
        }
    }
}
