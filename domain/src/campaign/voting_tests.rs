//! Given/when/then tests of voting campaigns: submissions, approval with its
//! reward once, votes within the limits and one per item per vote period.

use chrono::{DateTime, Duration, TimeZone, Utc};
use uuid::Uuid;

use super::*;
use crate::{Actor, EventSourced, InvariantViolation, PointsAmount};

/// 2026-12-05 00:00 merchant time (UTC+8).
fn opens() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 4, 16, 0, 0).unwrap()
}

/// 10:00 merchant time on the first day.
fn now() -> DateTime<Utc> {
    opens() + Duration::hours(10)
}

fn admin() -> Actor {
    Actor::Admin { username: "boss".into() }
}

fn member(n: u128) -> MemberId {
    MemberId::from_uuid(Uuid::from_u128(n))
}

fn item(n: u128) -> VoteItemId {
    VoteItemId::from_uuid(Uuid::from_u128(70_000 + n))
}

fn text(s: &str) -> CampaignText {
    CampaignText::parse(s).unwrap()
}

fn pts(n: i64) -> PointsAmount {
    PointsAmount::new(n).unwrap()
}

fn voting_terms(limits: Limits, period: VotePeriod) -> CampaignTerms {
    CampaignTerms {
        name: text("最佳海报 best poster"),
        starts_at: opens(),
        ends_at: opens() + Duration::days(7),
        members_only: true,
        limits,
        kind: CampaignKind::Voting(VotingTerms {
            submitters: ItemSubmitters::Anyone,
            approval_reward: Some(pts(50)),
            vote_period: period,
            items_max: 5,
            items_per_member_max: 2,
        }),
    }
}

fn given(events: &[CampaignEvent]) -> Campaign {
    let mut campaign = Campaign::default();
    for (i, e) in events.iter().enumerate() {
        campaign.apply(e).unwrap_or_else(|err| panic!("history event {i}: {err}"));
    }
    campaign
}

fn draft(terms: CampaignTerms) -> Vec<CampaignEvent> {
    vec![CampaignEvent::CampaignCreated {
        campaign_id: CampaignId::from_uuid(Uuid::from_u128(600)),
        tenant_id: TenantId::parse("acme").unwrap(),
        terms,
        actor: admin(),
        created_at: opens() - Duration::days(3),
    }]
}

fn running(terms: CampaignTerms) -> Vec<CampaignEvent> {
    let mut events = draft(terms);
    events.push(CampaignEvent::CampaignScheduled {
        commitment: None,
        actor: admin(),
        scheduled_at: opens() - Duration::days(2),
    });
    events.push(CampaignEvent::CampaignStarted { actor: admin(), started_at: opens() });
    events
}

#[track_caller]
fn then_events(campaign: &Campaign, command: CampaignCommand, at: DateTime<Utc>) -> (Campaign, Vec<CampaignEvent>) {
    let events = campaign.handle(command, at).expect("decided");
    let mut after = campaign.clone();
    for e in &events {
        after.apply(e).unwrap();
    }
    (after, events)
}

#[track_caller]
fn refused(campaign: &Campaign, command: CampaignCommand, at: DateTime<Utc>) -> CampaignError {
    campaign.handle(command, at).expect_err("refused")
}

#[track_caller]
fn broken_rule(campaign: &Campaign, event: CampaignEvent) -> &'static str {
    let mut c = campaign.clone();
    match c.apply(&event) {
        Ok(()) => panic!("applied: {event:?}"),
        Err(InvariantViolation { rule, .. }) => rule,
    }
}

fn submit(n: u128, by: Option<u128>) -> CampaignCommand {
    CampaignCommand::SubmitVoteItem {
        item_id: item(n),
        title: text(&format!("item {n}")),
        description: Some(VoteItemText::parse("a poster\nin two lines").unwrap()),
        member_id: by.map(member),
        card_member: true,
        actor: by.map_or_else(admin, |m| Actor::Member { member_id: member(m) }),
    }
}

fn approve(n: u128) -> CampaignCommand {
    CampaignCommand::ApproveVoteItem { item_id: item(n), actor: admin() }
}

fn vote(m: u128, n: u128) -> CampaignCommand {
    CampaignCommand::CastVote { member_id: member(m), item_id: item(n), card_member: true }
}

fn state(c: &Campaign) -> &CampaignState {
    c.created.as_ref().unwrap()
}

/// A running campaign with operator items 1 and 2 (approved) and member 9's item 3 (pending).
fn board(limits: Limits, period: VotePeriod) -> Campaign {
    let mut c = given(&running(voting_terms(limits, period)));
    for command in [submit(1, None), submit(2, None), submit(3, Some(9))] {
        c = then_events(&c, command, now()).0;
    }
    c
}

#[test]
fn voting_terms_are_checked() {
    let invalid = |terms: CampaignTerms| terms.check().unwrap_err().0;
    let mut t = voting_terms(Limits::default(), VotePeriod::Day);
    assert!(t.check().is_ok());
    t.limits.per_period = Some(1);
    assert_eq!(invalid(t), "a voting campaign limits votes per lifetime or per day, not per period");
    let with = |change: fn(&mut VotingTerms)| {
        let mut t = voting_terms(Limits::default(), VotePeriod::Day);
        if let CampaignKind::Voting(v) = &mut t.kind {
            change(v);
        }
        t
    };
    assert_eq!(invalid(with(|v| v.items_max = VOTE_ITEMS_MAX + 1)), "items_max must be 1..=200");
    assert_eq!(invalid(with(|v| v.items_per_member_max = 0)), "items_per_member_max must be 1..=10");
    assert_eq!(
        invalid(with(|v| v.submitters = ItemSubmitters::Operators)),
        "only a member's item earns an approval reward: members must be able to submit"
    );
    assert_eq!(
        invalid(with(|v| v.approval_reward = Some(pts(APPROVAL_REWARD_POINTS_MAX + 1)))),
        "an approval reward is at most 1000000 points"
    );
}

#[test]
fn an_operators_item_is_approved_at_once_and_a_members_waits() {
    let c = board(Limits::default(), VotePeriod::Campaign);
    let items = &state(&c).voting.items;
    assert_eq!(items[&item(1)].status, VoteItemStatus::Approved);
    assert_eq!(items[&item(3)].status, VoteItemStatus::Pending);
    assert_eq!(items[&item(3)].member_id, Some(member(9)));
    // The same submission again changes nothing; another one under its id is refused.
    assert_eq!(c.handle(submit(3, Some(9)), now()), Ok(Vec::new()));
    assert_eq!(refused(&c, submit(3, Some(8)), now()), CampaignError::Vote(VoteError::ItemConflict(item(3))));
}

#[test]
fn submissions_follow_the_terms() {
    // Operators may add items to a draft; members only while it runs.
    let d = given(&draft(voting_terms(Limits::default(), VotePeriod::Day)));
    let (d, _) = then_events(&d, submit(1, None), now() - Duration::days(3));
    assert_eq!(refused(&d, submit(2, Some(9)), now() - Duration::days(3)), Refusal::NotOngoing.into());

    let c = board(Limits::default(), VotePeriod::Day);
    let (c, _) = then_events(&c, submit(4, Some(9)), now());
    assert_eq!(refused(&c, submit(5, Some(9)), now()), VoteError::MemberItemsLimitReached.into());
    let (c, _) = then_events(&c, submit(5, Some(8)), now());
    assert_eq!(refused(&c, submit(6, None), now()), VoteError::ItemsFull.into());

    let mut cmd = submit(6, Some(7));
    if let CampaignCommand::SubmitVoteItem { card_member, .. } = &mut cmd {
        *card_member = false;
    }
    assert_eq!(refused(&board(Limits::default(), VotePeriod::Day), cmd, now()), Refusal::MembersOnly.into());

    let mut members_only = voting_terms(Limits::default(), VotePeriod::Day);
    if let CampaignKind::Voting(v) = &mut members_only.kind {
        v.submitters = ItemSubmitters::Members;
    }
    let c = given(&running(members_only));
    assert_eq!(refused(&c, submit(1, None), now()), VoteError::NotASubmitter("operators").into());
    // After the end nothing is submitted.
    let c = board(Limits::default(), VotePeriod::Day);
    assert_eq!(refused(&c, submit(7, None), opens() + Duration::days(8)), CampaignError::AlreadyEnded);
}

#[test]
fn an_approval_states_the_reward_once_and_a_rejection_is_final() {
    let c = board(Limits::default(), VotePeriod::Campaign);
    let (approved, events) = then_events(&c, approve(3), now());
    match &events[..] {
        [CampaignEvent::CampaignVoteItemApproved { member_id, reward, .. }] => {
            assert_eq!((*member_id, *reward), (Some(member(9)), Some(pts(50))));
        }
        other => panic!("{other:?}"),
    }
    // Approving again writes nothing: the reward is stated once.
    assert_eq!(approved.handle(approve(3), now()), Ok(Vec::new()));
    let reject = |n| CampaignCommand::RejectVoteItem { item_id: item(n), reason: text("off topic"), actor: admin() };
    assert_eq!(refused(&approved, reject(3), now()), VoteError::ItemApproved(item(3)).into());
    // An operator's item is approved already: nothing to reward.
    assert_eq!(c.handle(approve(1), now()), Ok(Vec::new()));

    let (rejected, _) = then_events(&c, reject(3), now());
    assert_eq!(rejected.handle(reject(3), now()), Ok(Vec::new()));
    assert_eq!(refused(&rejected, approve(3), now()), VoteError::ItemRejected(item(3)).into());
    assert_eq!(refused(&c, approve(42), now()), VoteError::ItemNotFound(item(42)).into());

    // apply: the reward is the terms', and an item is decided once.
    let event = |reward| CampaignEvent::CampaignVoteItemApproved {
        item_id: item(3),
        member_id: Some(member(9)),
        reward,
        actor: admin(),
        approved_at: now(),
    };
    assert_eq!(broken_rule(&c, event(Some(pts(5000)))), vote_rules::REWARD_AS_TERMS);
    assert_eq!(broken_rule(&approved, event(Some(pts(50)))), vote_rules::ITEM_DECIDED_ONCE);
}

#[test]
fn votes_go_to_approved_items_while_the_campaign_runs() {
    let c = board(Limits::default(), VotePeriod::Campaign);
    assert_eq!(refused(&c, vote(1, 3), now()), VoteError::ItemNotApproved(item(3)).into());
    assert_eq!(refused(&c, vote(1, 42), now()), VoteError::ItemNotFound(item(42)).into());
    // Scheduled, not started: before its start nobody votes.
    let mut scheduled = running(voting_terms(Limits::default(), VotePeriod::Campaign));
    scheduled.pop();
    let (s, _) = then_events(&given(&scheduled), submit(1, None), opens() - Duration::days(1));
    assert_eq!(refused(&s, vote(1, 1), opens() - Duration::hours(1)), Refusal::NotOngoing.into());
    assert!(s.handle(vote(1, 1), opens()).is_ok());
    assert_eq!(refused(&c, vote(1, 1), opens() + Duration::days(7)), Refusal::NotOngoing.into());
    let mut no_card = vote(1, 1);
    if let CampaignCommand::CastVote { card_member, .. } = &mut no_card {
        *card_member = false;
    }
    assert_eq!(refused(&c, no_card, now()), Refusal::MembersOnly.into());

    let (c, events) = then_events(&c, vote(1, 1), now());
    match &events[..] {
        [CampaignEvent::CampaignVoteCast { member_total_after, member_day_after, item_votes_after, .. }] => {
            assert_eq!((*member_total_after, *member_day_after, *item_votes_after), (1, 1, 1));
        }
        other => panic!("{other:?}"),
    }
    let (c, _) = then_events(&c, vote(2, 1), now());
    assert_eq!(state(&c).voting.items[&item(1)].votes, 2);
    let ranking: Vec<VoteItemId> = state(&c).vote_ranking().into_iter().map(|(id, _)| id).collect();
    assert_eq!(ranking[0], item(1));
}

#[test]
fn one_vote_per_item_per_member_per_period() {
    // Whole campaign: never again for the same item, even the next day.
    let c = board(Limits::default(), VotePeriod::Campaign);
    let (c, _) = then_events(&c, vote(1, 1), now());
    assert_eq!(refused(&c, vote(1, 1), now()), VoteError::AlreadyVoted.into());
    assert_eq!(refused(&c, vote(1, 1), now() + Duration::days(1)), VoteError::AlreadyVoted.into());
    let (c, _) = then_events(&c, vote(1, 2), now());
    assert_eq!(state(&c).participations[&member(1)].total, 2);

    // Daily periods: again the next merchant day (which starts at 16:00 UTC).
    let d = board(Limits::default(), VotePeriod::Day);
    let (d, _) = then_events(&d, vote(1, 1), now());
    assert_eq!(refused(&d, vote(1, 1), now() + Duration::hours(5)), VoteError::AlreadyVoted.into());
    let (d, _) = then_events(&d, vote(1, 1), now() + Duration::hours(14));
    assert_eq!(state(&d).voting.items[&item(1)].votes, 2);

    // apply refuses a second vote in the period.
    let again = CampaignEvent::CampaignVoteCast {
        item_id: item(1),
        member_id: member(1),
        merchant_day: merchant_day(now()),
        member_total_after: 2,
        member_day_after: 2,
        item_votes_after: 2,
        voted_at: now(),
    };
    assert_eq!(broken_rule(&c, again), vote_rules::ONE_VOTE_PER_PERIOD);
}

#[test]
fn vote_limits_count_per_day_and_lifetime() {
    let limits = Limits { lifetime: Some(3), per_day: Some(2), per_period: None };
    let mut c = board(limits, VotePeriod::Day);
    c = then_events(&c, vote(1, 1), now()).0;
    c = then_events(&c, vote(1, 2), now()).0;
    then_events(&c, vote(2, 1), now());
    // Member 1 has two today: the daily limit.
    let mut c3 = then_events(&c, approve(3), now()).0;
    assert_eq!(refused(&c3, vote(1, 3), now()), Refusal::DailyLimitReached.into());
    // The next day one more, then the lifetime limit.
    let tomorrow = now() + Duration::days(1);
    c3 = then_events(&c3, vote(1, 3), tomorrow).0;
    assert_eq!(refused(&c3, vote(1, 1), tomorrow), Refusal::LifetimeLimitReached.into());

    // apply recomputes the counts and checks the limits.
    let past_limit = CampaignEvent::CampaignVoteCast {
        item_id: item(3),
        member_id: member(1),
        merchant_day: merchant_day(now()),
        member_total_after: 3,
        member_day_after: 3,
        item_votes_after: 1,
        voted_at: now(),
    };
    let approved = then_events(&c, approve(3), now()).0;
    assert_eq!(broken_rule(&approved, past_limit.clone()), rules::WITHIN_LIMITS);
    let mut wrong_count = past_limit;
    if let CampaignEvent::CampaignVoteCast { item_votes_after, .. } = &mut wrong_count {
        *item_votes_after = 7;
    }
    assert_eq!(broken_rule(&approved, wrong_count), rules::COUNTS_AFTER);
}

#[test]
fn other_kinds_take_no_voting_commands() {
    let mut terms = voting_terms(Limits::default(), VotePeriod::Day);
    terms.kind = CampaignKind::ShakeLottery(ShakeTerms {
        slots: vec![ShakeSlot { prize: Prize::Points { points: pts(1) }, weight: 1, stock: Some(1) }],
        prizes_per_member_max: 1,
    });
    let c = given(&draft(terms));
    assert_eq!(refused(&c, submit(1, None), now()), CampaignError::WrongKind("voting"));
    assert_eq!(refused(&c, vote(1, 1), now()), CampaignError::WrongKind("voting"));
}
