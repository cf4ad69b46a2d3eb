//! Given/when/then tests of the campaign aggregate, one per rule and
//! refusal, and property tests over random shake and entry sequences.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;
use uuid::Uuid;

use super::draw::{draw_winners, shake_roll, slot_for_roll, BeaconValue, DrawSeed, SeedCommitment};
use super::*;
use crate::coupon::TemplateId;
use crate::{Actor, EventSourced, InvariantViolation, PointsAmount};

/// 2026-12-05 00:00 merchant time (UTC+8).
fn opens() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 4, 16, 0, 0).unwrap()
}

fn closes() -> DateTime<Utc> {
    opens() + Duration::days(7)
}

/// 10:00 merchant time on the first day.
fn now() -> DateTime<Utc> {
    opens() + Duration::hours(10)
}

fn admin() -> Actor {
    Actor::Admin { username: "boss".into() }
}

fn scheduler() -> Actor {
    Actor::System { job: "scheduler".into() }
}

fn tenant() -> TenantId {
    TenantId::parse("acme").unwrap()
}

fn campaign_id() -> CampaignId {
    CampaignId::from_uuid(Uuid::from_u128(500))
}

fn member(n: u128) -> MemberId {
    MemberId::from_uuid(Uuid::from_u128(n))
}

fn entry(n: u128) -> EntryId {
    EntryId::from_uuid(Uuid::from_u128(90_000 + n))
}

fn seed(n: u8) -> DrawSeed {
    DrawSeed::from_bytes([n; 32])
}

fn pts(n: i64) -> PointsAmount {
    PointsAmount::new(n).unwrap()
}

fn text(s: &str) -> CampaignText {
    CampaignText::parse(s).unwrap()
}

fn periodic_terms(limits: Limits, entrants_max: u32) -> CampaignTerms {
    CampaignTerms {
        name: text("周末抽奖 weekend draw"),
        starts_at: opens(),
        ends_at: closes(),
        members_only: false,
        limits,
        kind: CampaignKind::PeriodicLottery(PeriodicTerms {
            cycle: Cycle::Daily,
            tickets: TicketSource::Entries,
            entry_cost: Some(pts(10)),
            entrants_max,
            tiers: vec![
                PrizeTier { prize: Prize::Physical { item: text("popcorn") }, count: 1 },
                PrizeTier { prize: Prize::Points { points: pts(100) }, count: 2 },
            ],
        }),
    }
}

/// Slot 0: a physical prize (stock 1), slot 1: a coupon (stock `coupons`), slot 2: thanks.
fn shake_terms(coupons: u32, k: u32, limits: Limits) -> CampaignTerms {
    CampaignTerms {
        name: text("摇一摇 shake"),
        starts_at: opens(),
        ends_at: closes(),
        members_only: false,
        limits,
        kind: CampaignKind::ShakeLottery(ShakeTerms {
            slots: vec![
                ShakeSlot { prize: Prize::Physical { item: text("poster") }, weight: 10, stock: Some(1) },
                ShakeSlot {
                    prize: Prize::Coupon { template_id: TemplateId::from_uuid(Uuid::from_u128(7)) },
                    weight: 30,
                    stock: Some(coupons),
                },
                ShakeSlot { prize: Prize::Thanks, weight: 60, stock: None },
            ],
            prizes_per_member_max: k,
        }),
    }
}

fn created(terms: CampaignTerms) -> CampaignEvent {
    CampaignEvent::CampaignCreated {
        campaign_id: campaign_id(),
        tenant_id: tenant(),
        terms,
        actor: admin(),
        created_at: now() - Duration::days(3),
    }
}

fn scheduled(commitment: Option<SeedCommitment>) -> CampaignEvent {
    CampaignEvent::CampaignScheduled { commitment, actor: admin(), scheduled_at: now() - Duration::days(2) }
}

fn started() -> CampaignEvent {
    CampaignEvent::CampaignStarted { actor: scheduler(), started_at: opens() }
}

fn day(n: i64) -> (DateTime<Utc>, DateTime<Utc>) {
    (opens() + Duration::days(n - 1), opens() + Duration::days(n))
}

fn period_opened(n: u32, s: u8) -> CampaignEvent {
    let (starts_at, ends_at) = day(i64::from(n));
    CampaignEvent::CampaignPeriodOpened {
        period_no: n,
        starts_at,
        ends_at,
        commitment: seed(s).commitment(),
        beacon: None,
        actor: scheduler(),
        opened_at: starts_at,
    }
}

/// A period opening with (opened_at, starts_at, beacon) changed.
fn with_opened(
    mut event: CampaignEvent,
    change: impl FnOnce(&mut DateTime<Utc>, &mut DateTime<Utc>, &mut Option<BeaconRound>),
) -> CampaignEvent {
    if let CampaignEvent::CampaignPeriodOpened { opened_at, starts_at, beacon, .. } = &mut event {
        change(opened_at, starts_at, beacon);
    }
    event
}

fn given(events: &[CampaignEvent]) -> Campaign {
    let mut campaign = Campaign::default();
    for (i, e) in events.iter().enumerate() {
        campaign.apply(e).unwrap_or_else(|err| panic!("history event {i}: {err}"));
    }
    campaign
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

fn state(c: &Campaign) -> &CampaignState {
    c.created.as_ref().unwrap()
}

fn enter(e: u128, m: u128, period_no: u32) -> CampaignCommand {
    CampaignCommand::Enter { entry_id: entry(e), member_id: member(m), period_no, card_member: true }
}

fn periodic(limits: Limits, entrants_max: u32) -> Campaign {
    given(&[created(periodic_terms(limits, entrants_max)), scheduled(None), started(), period_opened(1, 1)])
}

fn shake_campaign(coupons: u32, k: u32, limits: Limits) -> Campaign {
    given(&[created(shake_terms(coupons, k, limits)), scheduled(Some(seed(9).commitment())), started()])
}

fn ask(m: u128, nonce: u32) -> ShakeAsk {
    ShakeAsk { member_id: member(m), nonce, card_member: true }
}

fn shake(asks: Vec<ShakeAsk>) -> CampaignCommand {
    CampaignCommand::Shake { seed: seed(9), asks }
}

// ---------------------------------------------------------------- lifecycle

#[test]
fn a_campaign_is_created_once_with_checked_terms() {
    let fresh = Campaign::default();
    let create =
        |terms| CampaignCommand::Create { campaign_id: campaign_id(), tenant_id: tenant(), terms, actor: admin() };
    let (campaign, _) = then_events(&fresh, create(periodic_terms(Limits::default(), 10)), now());
    assert_eq!(state(&campaign).status, Status::Draft);
    assert_eq!(refused(&campaign, create(periodic_terms(Limits::default(), 10)), now()), CampaignError::AlreadyExists);

    let invalid = |terms: CampaignTerms| match refused(&fresh, create(terms), now()) {
        CampaignError::InvalidTerms(why) => why.0,
        other => panic!("{other:?}"),
    };
    let mut t = periodic_terms(Limits::default(), 10);
    t.ends_at = t.starts_at;
    assert_eq!(invalid(t), "the campaign must end after it starts");
    let mut t = periodic_terms(Limits { per_day: Some(PARTICIPATIONS_MAX + 1), ..Limits::default() }, 10);
    assert_eq!(invalid(t.clone()), "participation limits must be 1..=1000");
    t.limits.per_day = Some(PARTICIPATIONS_MAX);
    assert!(fresh.handle(create(t), now()).is_ok());
    assert_eq!(
        invalid(periodic_terms(Limits { lifetime: Some(0), ..Limits::default() }, 10)),
        "participation limits must be 1..=1000"
    );
    assert_eq!(invalid(periodic_terms(Limits::default(), 0)), "entrants_max must be 1..=100000");
    let mut t = periodic_terms(Limits::default(), 10);
    if let CampaignKind::PeriodicLottery(p) = &mut t.kind {
        p.tiers.push(PrizeTier { prize: Prize::Thanks, count: 1 });
    }
    assert_eq!(invalid(t), "a periodic lottery's tiers are prizes, not thanks");
    let mut t = periodic_terms(Limits::default(), 10);
    if let CampaignKind::PeriodicLottery(p) = &mut t.kind {
        p.tiers = vec![PrizeTier { prize: Prize::Points { points: pts(1) }, count: draw::WINNERS_MAX }];
    }
    assert!(fresh.handle(create(t.clone()), now()).is_ok());
    if let CampaignKind::PeriodicLottery(p) = &mut t.kind {
        p.tiers[0].count += 1;
    }
    assert_eq!(invalid(t), "a period draws at most 1000 winners");

    let mut t = shake_terms(5, 1, Limits::default());
    t.limits.per_period = Some(1);
    assert_eq!(invalid(t), "a shake lottery has no periods: use lifetime or per_day");
    let mut t = shake_terms(5, 1, Limits::default());
    if let CampaignKind::ShakeLottery(s) = &mut t.kind {
        s.slots[1].stock = None;
    }
    assert_eq!(invalid(t), "a prize slot has a stock of 1..=1000000");
    let mut t = shake_terms(5, 1, Limits::default());
    if let CampaignKind::ShakeLottery(s) = &mut t.kind {
        s.slots[2].stock = Some(3);
    }
    assert_eq!(invalid(t), "a thanks slot has no stock");
    let mut t = shake_terms(5, 1, Limits::default());
    if let CampaignKind::ShakeLottery(s) = &mut t.kind {
        s.slots.truncate(1);
        s.slots[0].prize = Prize::Thanks;
        s.slots[0].stock = None;
    }
    assert_eq!(invalid(t), "a shake table has at least one prize slot");
    assert_eq!(
        invalid(shake_terms(5, PRIZES_PER_MEMBER_MAX + 1, Limits::default())),
        "prizes_per_member_max must be 1..=100"
    );
    assert_eq!(invalid(shake_terms(STOCK_MAX + 1, 1, Limits::default())), "a prize slot has a stock of 1..=1000000");
    assert!(fresh.handle(create(shake_terms(STOCK_MAX, PRIZES_PER_MEMBER_MAX, Limits::default())), now()).is_ok());
}

#[test]
fn terms_are_edited_only_while_draft() {
    let draft = given(&[created(periodic_terms(Limits::default(), 10))]);
    let edit = || CampaignCommand::Edit { terms: shake_terms(3, 1, Limits::default()), actor: admin() };
    // The kind is fixed at creation.
    assert_eq!(refused(&draft, edit(), now()), CampaignError::WrongKind("shake_lottery"));
    let periodic_edit = CampaignCommand::Edit { terms: periodic_terms(Limits::default(), 20), actor: admin() };
    let (edited, _) = then_events(&draft, periodic_edit, now());
    assert_eq!(state(&edited).terms.kind.name(), "periodic_lottery");
    let shake_draft = given(&[created(shake_terms(5, 1, Limits::default()))]);
    let (edited, _) = then_events(&shake_draft, edit(), now());
    assert_eq!(state(&edited).terms.kind.name(), "shake_lottery");
    let scheduled_campaign = given(&[created(periodic_terms(Limits::default(), 10)), scheduled(None)]);
    assert_eq!(refused(&scheduled_campaign, edit(), now()), CampaignError::NotDraft(Status::Scheduled));
    let edited_event =
        CampaignEvent::CampaignEdited { terms: shake_terms(3, 1, Limits::default()), actor: admin(), edited_at: now() };
    assert_eq!(broken_rule(&scheduled_campaign, edited_event), rules::TRANSITION);
    assert_eq!(refused(&Campaign::default(), edit(), now()), CampaignError::NotFound);
}

#[test]
fn scheduling_commits_a_shake_lottery_to_its_seed_and_a_periodic_one_to_nothing_yet() {
    let periodic_draft = given(&[created(periodic_terms(Limits::default(), 10))]);
    let schedule = |commitment| CampaignCommand::Schedule { commitment, actor: admin() };
    assert_eq!(
        refused(&periodic_draft, schedule(Some(seed(1).commitment())), now()),
        CampaignError::CommitmentPerPeriod
    );
    then_events(&periodic_draft, schedule(None), now());

    let shake_draft = given(&[created(shake_terms(3, 1, Limits::default()))]);
    assert_eq!(refused(&shake_draft, schedule(None), now()), CampaignError::CommitmentRequired);
    let (s, _) = then_events(&shake_draft, schedule(Some(seed(9).commitment())), now());
    assert_eq!(state(&s).table_version, 1);
    assert_eq!(state(&s).stock_left, vec![Some(1), Some(3), None]);
    assert_eq!(refused(&s, schedule(Some(seed(9).commitment())), now()), CampaignError::NotDraft(Status::Scheduled));
    assert_eq!(
        refused(&shake_draft, schedule(Some(seed(9).commitment())), closes()),
        CampaignError::InvalidTerms(InvalidTerms("the campaign would end before it is scheduled"))
    );
    assert_eq!(broken_rule(&shake_draft, scheduled(None)), rules::SEED_OPENS_COMMITMENT);
}

#[test]
fn a_campaign_starts_and_ends_by_time_or_by_hand_and_the_clock_bounds_participation() {
    let s = given(&[created(shake_terms(3, 1, Limits::default())), scheduled(Some(seed(9).commitment()))]);
    // Before the start nothing is accepted; after it, even before the scheduler records the start.
    assert_eq!(state(&s).phase_at(opens() - Duration::seconds(1)), Status::Scheduled);
    assert_eq!(state(&s).phase_at(opens()), Status::Ongoing);
    assert_eq!(state(&s).phase_at(closes()), Status::Ended);
    let early = s.decide_shakes(&seed(9), &[ask(1, 1)], opens() - Duration::seconds(1)).unwrap();
    assert_eq!(early.outcomes, vec![Err(Refusal::NotOngoing)]);
    assert!(s.decide_shakes(&seed(9), &[ask(1, 1)], opens()).unwrap().event.is_some());
    let late = s.decide_shakes(&seed(9), &[ask(1, 1)], closes()).unwrap();
    assert_eq!(late.outcomes, vec![Err(Refusal::NotOngoing)]);

    // By hand, before the start.
    let (ongoing, _) = then_events(&s, CampaignCommand::Start { actor: admin() }, opens() - Duration::hours(1));
    assert_eq!(state(&ongoing).phase_at(opens() - Duration::minutes(1)), Status::Ongoing);
    assert_eq!(
        refused(&ongoing, CampaignCommand::Start { actor: admin() }, now()),
        CampaignError::WrongStatus(Status::Ongoing)
    );
    assert_eq!(refused(&s, CampaignCommand::Start { actor: scheduler() }, closes()), CampaignError::AlreadyEnded);
    let (ended, _) = then_events(&ongoing, CampaignCommand::End { actor: admin() }, now());
    assert_eq!(state(&ended).phase_at(now()), Status::Ended);
    assert_eq!(refused(&ended, CampaignCommand::End { actor: scheduler() }, closes()), CampaignError::AlreadyEnded);
    let draft = given(&[created(shake_terms(3, 1, Limits::default()))]);
    assert_eq!(
        refused(&draft, CampaignCommand::End { actor: admin() }, now()),
        CampaignError::WrongStatus(Status::Draft)
    );
    assert_eq!(broken_rule(&draft, started()), rules::TRANSITION);
}

// ---------------------------------------------------------------- periods

#[test]
fn daily_periods_follow_the_merchant_day_in_order_and_a_retried_opening_changes_nothing() {
    let c = given(&[created(periodic_terms(Limits::default(), 10)), scheduled(None)]);
    assert_eq!(state(&c).next_period_window(), Some(day(1)));
    let open = |n, (starts_at, ends_at): (DateTime<Utc>, DateTime<Utc>), s| CampaignCommand::OpenPeriod {
        period_no: n,
        starts_at,
        ends_at,
        commitment: seed(s).commitment(),
        beacon: None,
        actor: scheduler(),
    };
    let before = opens() - Duration::hours(1);
    assert_eq!(refused(&c, open(2, day(1), 1), before), CampaignError::PeriodOutOfOrder { expected: 1 });
    let off_cycle = (opens() + Duration::hours(1), opens() + Duration::days(1));
    assert_eq!(
        refused(&c, open(1, off_cycle, 1), before),
        CampaignError::InvalidPeriod("the window is not the cycle's")
    );
    let outside = (opens() - Duration::days(1), opens());
    assert_eq!(
        refused(&c, open(1, outside, 1), before),
        CampaignError::InvalidPeriod("a period lies inside the campaign")
    );
    let (c, events) = then_events(&c, open(1, day(1), 1), before);
    assert_eq!(events, vec![with_opened(period_opened(1, 1), |opened_at, _, _| *opened_at = before)]);
    assert_eq!(c.handle(open(1, day(1), 1), before), Ok(vec![]));
    assert_eq!(refused(&c, open(1, day(1), 2), before), CampaignError::PeriodConflict(1));
    assert_eq!(state(&c).next_period_window(), Some(day(2)));
    assert_eq!(refused(&c, open(2, day(2), 2), closes()), CampaignError::AlreadyEnded);
    assert_eq!(broken_rule(&c, period_opened(1, 3)), rules::PERIOD_ORDER);
    assert_eq!(
        broken_rule(&c, with_opened(period_opened(2, 3), |_, starts_at, _| *starts_at = now())),
        rules::PERIOD_ORDER
    );
    // The last daily period is clipped to the campaign's end.
    let mut short = periodic_terms(Limits::default(), 10);
    short.ends_at = opens() + Duration::hours(30);
    let c = given(&[created(short), scheduled(None), period_opened(1, 1)]);
    assert_eq!(state(&c).next_period_window(), Some((day(2).0, opens() + Duration::hours(30))));
}

#[test]
fn a_weekly_cycle_starts_on_the_merchants_monday() {
    // 2026-12-05 is a Saturday: the first week is clipped to Saturday and Sunday.
    let window = periodic::cycle_window(Cycle::Weekly, (opens(), closes()), now()).unwrap();
    assert_eq!(window, (opens(), opens() + Duration::days(2)));
    let next = periodic::cycle_window(Cycle::Weekly, (opens(), closes()), window.1).unwrap();
    assert_eq!(next, (opens() + Duration::days(2), closes()));
    assert_eq!(periodic::cycle_window(Cycle::Manual, (opens(), closes()), now()), None);
    // 23:59 merchant time is still the same merchant day; 00:00 is the next one.
    assert_eq!(merchant_day(opens() + Duration::hours(24) - Duration::seconds(1)), merchant_day(opens()));
    assert_ne!(merchant_day(opens() + Duration::hours(24)), merchant_day(opens()));
}

// ---------------------------------------------------------------- entries

#[test]
fn an_entry_records_its_cost_and_counts_and_a_retry_changes_nothing() {
    let c = periodic(Limits::default(), 10);
    let (c, events) = then_events(&c, enter(1, 1, 1), now());
    let recorded = CampaignEvent::CampaignEntryRecorded {
        entry_id: entry(1),
        member_id: member(1),
        period_no: 1,
        cost_points: Some(pts(10)),
        merchant_day: merchant_day(now()),
        member_total_after: 1,
        member_day_after: 1,
        member_period_after: 1,
        period_entries_after: 1,
        period_entrants_after: 1,
        entered_at: now(),
        visitor_openid: None,
    };
    assert_eq!(events, vec![recorded.clone()]);
    assert_eq!(c.handle(enter(1, 1, 1), now()), Ok(vec![]), "the same entry retried");
    assert_eq!(refused(&c, enter(1, 2, 1), now()), CampaignError::EntryConflict(entry(1)));
    assert_eq!(broken_rule(&c, recorded.clone()), rules::ENTRY_OPEN_PERIOD);
    let (c, _) = then_events(&c, enter(2, 1, 1), now());
    let p = &state(&c).periods[&1];
    assert_eq!((p.entries_total, p.entrants, p.tickets[&member(1)]), (2, 1, 2));
    let mut wrong = recorded;
    if let CampaignEvent::CampaignEntryRecorded { entry_id, member_period_after, .. } = &mut wrong {
        *entry_id = entry(3);
        *member_period_after = 1;
    }
    assert_eq!(broken_rule(&c, wrong), rules::COUNTS_AFTER);
}

#[test]
fn entries_are_refused_outside_the_open_period_and_to_other_kinds() {
    let c = periodic(Limits::default(), 10);
    assert_eq!(refused(&c, enter(1, 1, 2), now()), CampaignError::PeriodNotFound(2));
    assert_eq!(refused(&c, enter(1, 1, 1), day(1).1), CampaignError::PeriodNotOpen(1));
    assert_eq!(refused(&c, enter(1, 1, 1), closes()), CampaignError::Refused(Refusal::NotOngoing));
    let s = shake_campaign(3, 1, Limits::default());
    assert_eq!(refused(&s, enter(1, 1, 1), now()), CampaignError::WrongKind("periodic_lottery"));
    let entered = CampaignEvent::CampaignEntryRecorded {
        entry_id: entry(1),
        member_id: member(1),
        period_no: 1,
        cost_points: Some(pts(10)),
        merchant_day: merchant_day(day(1).1),
        member_total_after: 1,
        member_day_after: 1,
        member_period_after: 1,
        period_entries_after: 1,
        period_entrants_after: 1,
        entered_at: day(1).1,
        visitor_openid: None,
    };
    assert_eq!(broken_rule(&c, entered), rules::ENTRY_OPEN_PERIOD);
}

#[test]
fn limits_per_period_per_merchant_day_and_lifetime_are_counted_in_the_entry_decision() {
    let c = periodic(Limits { lifetime: Some(3), per_day: Some(2), per_period: Some(2) }, 10);
    let (c, _) = then_events(&c, enter(1, 1, 1), now());
    let (c, _) = then_events(&c, enter(2, 1, 1), now());
    // Both the period and the day are full; the day limit is checked first.
    assert_eq!(refused(&c, enter(3, 1, 1), now()), CampaignError::Refused(Refusal::DailyLimitReached));
    // The next merchant day, the next period: one more, then the lifetime limit.
    let c = given_more(&c, &[period_opened(2, 2)]);
    let tomorrow = day(2).0 + Duration::minutes(1);
    let (c, _) = then_events(&c, enter(3, 1, 2), tomorrow);
    assert_eq!(refused(&c, enter(4, 1, 2), tomorrow), CampaignError::Refused(Refusal::LifetimeLimitReached));
    // Someone else is not affected.
    then_events(&c, enter(5, 2, 2), tomorrow);

    let c = periodic(Limits { per_period: Some(1), ..Limits::default() }, 10);
    let (c, _) = then_events(&c, enter(1, 1, 1), now());
    assert_eq!(refused(&c, enter(2, 1, 1), now()), CampaignError::Refused(Refusal::PeriodLimitReached));
}

fn given_more(c: &Campaign, events: &[CampaignEvent]) -> Campaign {
    let mut c = c.clone();
    for e in events {
        c.apply(e).unwrap();
    }
    c
}

#[test]
fn a_full_period_refuses_new_entrants_and_members_only_refuses_guests() {
    let c = periodic(Limits::default(), 2);
    let (c, _) = then_events(&c, enter(1, 1, 1), now());
    let (c, _) = then_events(&c, enter(2, 2, 1), now());
    assert_eq!(refused(&c, enter(3, 3, 1), now()), CampaignError::Refused(Refusal::PeriodFull));
    // An entrant already in may enter again (another ticket).
    then_events(&c, enter(4, 1, 1), now());

    let mut terms = periodic_terms(Limits::default(), 10);
    terms.members_only = true;
    let c = given(&[created(terms), scheduled(None), started(), period_opened(1, 1)]);
    let guest = CampaignCommand::Enter { entry_id: entry(1), member_id: member(1), period_no: 1, card_member: false };
    assert_eq!(refused(&c, guest, now()), CampaignError::Refused(Refusal::MembersOnly));
}

// ---------------------------------------------------------------- draws

fn entered_period() -> Campaign {
    let mut c = periodic(Limits::default(), 100);
    for (e, m) in [(1, 1), (2, 2), (3, 3), (4, 2), (5, 4), (6, 5)] {
        c = then_events(&c, enter(e, m, 1), now()).0;
    }
    c
}

fn draw_cmd(s: u8) -> CampaignCommand {
    CampaignCommand::DrawPeriod { period_no: 1, seed: seed(s), beacon_value: None, actor: scheduler() }
}

#[test]
fn a_period_is_drawn_once_after_it_ends_with_the_winners_the_spec_gives() {
    let c = entered_period();
    assert_eq!(refused(&c, draw_cmd(1), now()), CampaignError::PeriodStillOpen(1, day(1).1));
    assert_eq!(refused(&c, draw_cmd(2), day(1).1), CampaignError::SeedMismatch);
    let (drawn, events) = then_events(&c, draw_cmd(1), day(1).1);
    let list = state(&c).periods[&1].entrant_list().unwrap();
    let expected = draw_winners(&seed(1), None, &list, 3).unwrap();
    let CampaignEvent::CampaignPeriodDrawn {
        winners,
        entrants,
        total_tickets,
        entrants_hash,
        algorithm,
        seed: revealed,
        ..
    } = &events[0]
    else {
        panic!("{events:?}")
    };
    assert_eq!((algorithm.as_str(), *revealed, *entrants, *total_tickets), ("wxcm-draw-v1", seed(1), 5, 6));
    assert_eq!(*entrants_hash, list.hash());
    assert_eq!(winners.iter().map(|w| w.member_id).collect::<Vec<_>>(), expected);
    assert_eq!(winners[0].prize, Prize::Physical { item: text("popcorn") });
    assert_eq!(winners[1].prize, Prize::Points { points: pts(100) });
    assert_eq!(winners.iter().map(|w| w.rank).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(state(&drawn).winners_total, 3);
    assert!(state(&drawn).periods[&1].entries.is_empty(), "entries dropped once drawn");

    // Two schedulers: the second draw with the same seed changes nothing; another seed is refused.
    assert_eq!(drawn.handle(draw_cmd(1), day(1).1), Ok(vec![]));
    assert_eq!(refused(&drawn, draw_cmd(2), day(1).1), CampaignError::PeriodClosed(1));
    assert_eq!(refused(&drawn, enter(9, 9, 1), now()), CampaignError::PeriodNotOpen(1));
    assert_eq!(broken_rule(&drawn, events[0].clone()), rules::PERIOD_ENDS_ONCE);

    // A stored draw that is not what the algorithm gives is refused when applied.
    let mut tampered = events[0].clone();
    if let CampaignEvent::CampaignPeriodDrawn { winners, .. } = &mut tampered {
        winners.swap(0, 1);
        winners[0].rank = 1;
        winners[1].rank = 2;
    }
    assert_eq!(broken_rule(&c, tampered), rules::DRAW_RECOMPUTES);
    let mut other_seed = events[0].clone();
    if let CampaignEvent::CampaignPeriodDrawn { seed: s, .. } = &mut other_seed {
        *s = seed(2);
    }
    assert_eq!(broken_rule(&c, other_seed), rules::SEED_OPENS_COMMITMENT);
}

#[test]
fn an_ended_campaign_draws_its_open_period_and_fewer_entrants_all_win() {
    let c = periodic(Limits::default(), 100);
    let (c, _) = then_events(&c, enter(1, 1, 1), now());
    let (c, _) = then_events(&c, CampaignCommand::End { actor: admin() }, now());
    let (_, events) = then_events(&c, draw_cmd(1), now() + Duration::minutes(1));
    let CampaignEvent::CampaignPeriodDrawn { winners, .. } = &events[0] else { panic!() };
    assert_eq!(winners.len(), 1);
    assert_eq!(winners[0].member_id, member(1));
}

#[test]
fn a_period_naming_a_beacon_is_drawn_with_its_value_mixed_in() {
    let beacon = BeaconRound { source: text("drand-quicknet"), round: 12_345_678 };
    let opened = with_opened(period_opened(1, 1), |_, _, b| *b = Some(beacon.clone()));
    let mut c = given(&[created(periodic_terms(Limits::default(), 100)), scheduled(None), started(), opened]);
    for m in 1..=6 {
        c = then_events(&c, enter(m, m, 1), now()).0;
    }
    assert_eq!(refused(&c, draw_cmd(1), day(1).1), CampaignError::BeaconValueRequired(1));
    let value = BeaconValue::parse(&"ab".repeat(32)).unwrap();
    let with = CampaignCommand::DrawPeriod {
        period_no: 1,
        seed: seed(1),
        beacon_value: Some(value.clone()),
        actor: scheduler(),
    };
    let (_, events) = then_events(&c, with, day(1).1);
    let CampaignEvent::CampaignPeriodDrawn { winners, beacon: b, beacon_value, .. } = &events[0] else { panic!() };
    assert_eq!((b.as_ref(), beacon_value.as_ref()), (Some(&beacon), Some(&value)));
    let list = state(&c).periods[&1].entrant_list().unwrap();
    let expected = draw_winners(&seed(1), Some(&value), &list, 3).unwrap();
    assert_eq!(winners.iter().map(|w| w.member_id).collect::<Vec<_>>(), expected);
    let plain = entered_period();
    let unexpected =
        CampaignCommand::DrawPeriod { period_no: 1, seed: seed(1), beacon_value: Some(value), actor: scheduler() };
    assert_eq!(refused(&plain, unexpected, day(1).1), CampaignError::UnexpectedBeacon(1));
}

#[test]
fn a_cancelled_period_lists_every_paid_entry_to_refund_and_is_never_drawn() {
    let c = entered_period();
    let cancel = CampaignCommand::CancelPeriod { period_no: 1, actor: admin() };
    let (cancelled, events) = then_events(&c, cancel.clone(), now());
    let CampaignEvent::CampaignPeriodCancelled { refunds, .. } = &events[0] else { panic!() };
    assert_eq!(refunds.len(), 6);
    assert!(refunds.iter().all(|r| r.points == pts(10)));
    assert_eq!(refunds.iter().filter(|r| r.member_id == member(2)).count(), 2);
    assert_eq!(cancelled.handle(cancel, now()), Ok(vec![]));
    assert_eq!(refused(&cancelled, draw_cmd(1), day(1).1), CampaignError::PeriodClosed(1));
    let mut short = events[0].clone();
    if let CampaignEvent::CampaignPeriodCancelled { refunds, .. } = &mut short {
        refunds.pop();
    }
    assert_eq!(broken_rule(&c, short), rules::COUNTS_AFTER);
    let (drawn, _) = then_events(&c, draw_cmd(1), day(1).1);
    assert_eq!(
        refused(&drawn, CampaignCommand::CancelPeriod { period_no: 1, actor: admin() }, now()),
        CampaignError::PeriodClosed(1)
    );
}

#[test]
fn an_entry_states_the_cost_in_force_and_a_cancelled_period_takes_no_more_entries() {
    // given a periodic lottery whose entries cost 10 points, with six entries in period 1
    let c = entered_period();
    // when a member enters
    let (_, events) = then_events(&c, enter(7, 6, 1), now());
    // then the entry records the terms' cost (what the member's ledger is charged)
    let CampaignEvent::CampaignEntryRecorded { cost_points, .. } = &events[0] else { panic!() };
    assert_eq!(*cost_points, Some(pts(10)));
    // and once the period is cancelled, it is neither entered nor drawn
    let (cancelled, _) = then_events(&c, CampaignCommand::CancelPeriod { period_no: 1, actor: admin() }, now());
    assert_eq!(refused(&cancelled, enter(7, 6, 1), now()), CampaignError::PeriodNotOpen(1));
    assert_eq!(refused(&cancelled, draw_cmd(1), day(1).1), CampaignError::PeriodClosed(1));
}

#[test]
fn an_entry_cost_is_bounded() {
    // given terms whose entry costs the most allowed, then one point more
    let with_cost = |points: i64| {
        let mut terms = periodic_terms(Limits::default(), 10);
        if let CampaignKind::PeriodicLottery(p) = &mut terms.kind {
            p.entry_cost = Some(pts(points));
        }
        terms
    };
    // then the limit passes and one past it is refused
    assert_eq!(with_cost(ENTRY_COST_POINTS_MAX).check(), Ok(()));
    assert!(with_cost(ENTRY_COST_POINTS_MAX + 1).check().is_err());
}

#[test]
fn a_physical_prize_is_handed_over_once() {
    let (drawn, events) = then_events(&entered_period(), draw_cmd(1), day(1).1);
    let CampaignEvent::CampaignPeriodDrawn { winners, .. } = &events[0] else { panic!() };
    let award = AwardRef::Period { period_no: 1, rank: 1 };
    let staff = Actor::Staff { username: "clerk".into() };
    let hand_over = CampaignCommand::HandOverPrize { award, actor: staff.clone() };
    let (done, events) = then_events(&drawn, hand_over.clone(), now());
    assert_eq!(
        events,
        vec![CampaignEvent::CampaignPrizeHandedOver {
            award,
            member_id: winners[0].member_id,
            item: text("popcorn"),
            actor: staff.clone(),
            handed_over_at: now(),
        }]
    );
    assert_eq!(refused(&done, hand_over, now()), CampaignError::AlreadyHandedOver(award.key()));
    assert_eq!(broken_rule(&done, events[0].clone()), rules::HANDED_OVER_ONCE);
    // Points prizes are issued by the application, not handed over.
    let points = AwardRef::Period { period_no: 1, rank: 2 };
    assert_eq!(
        refused(&drawn, CampaignCommand::HandOverPrize { award: points, actor: staff }, now()),
        CampaignError::AwardNotFound(points.key())
    );
}

// ---------------------------------------------------------------- shakes

#[test]
fn a_shake_rolls_hmac_of_seed_member_and_nonce_against_the_table_in_force() {
    let c = shake_campaign(3, 3, Limits::default());
    assert_eq!(
        refused(&c, CampaignCommand::Shake { seed: seed(8), asks: vec![ask(1, 1)] }, now()),
        CampaignError::SeedMismatch
    );
    let (after, events) = then_events(&c, shake(vec![ask(1, 1)]), now());
    let CampaignEvent::CampaignShakesDrawn { draws, .. } = &events[0] else { panic!() };
    let d = &draws[0];
    let roll = shake_roll(&seed(9), member(1), 1, 100).unwrap();
    assert_eq!((d.table_version, d.total_weight, d.roll, d.nonce), (1, 100, roll, 1));
    assert_eq!(Some(usize::from(d.slot)), slot_for_roll(&[10, 30, 60], roll));
    assert_eq!(state(&after).participations[&member(1)].total, 1);
    // The same chance again is a duplicate; skipping one is out of order.
    let again = after.decide_shakes(&seed(9), &[ask(1, 1), ask(1, 3)], now()).unwrap();
    assert_eq!(again.outcomes, vec![Err(Refusal::ChanceUsed), Err(Refusal::ChanceOutOfOrder)]);
    assert_eq!(refused(&after, shake(vec![ask(1, 1)]), now()), CampaignError::Refused(Refusal::ChanceUsed));
    assert_eq!(broken_rule(&after, events[0].clone()), rules::COUNTS_AFTER);
    // A stored roll that lands on another slot than the one stated is refused when applied. (A
    // forged roll within the same slot is found by the audit after the reveal: the domain never
    // holds the seed between shakes.)
    let mut forged = events[0].clone();
    if let CampaignEvent::CampaignShakesDrawn { draws, .. } = &mut forged {
        draws[0].roll = if draws[0].slot == 0 { 50 } else { 0 };
    }
    assert_eq!(broken_rule(&c, forged), rules::DRAW_RECOMPUTES);
    assert_eq!(refused(&c, shake(vec![]), now()), CampaignError::BatchSize);
    let too_many = (0..=SHAKES_PER_EVENT_MAX as u128).map(|m| ask(m, 1)).collect();
    assert_eq!(refused(&c, shake(too_many), now()), CampaignError::BatchSize);
}

/// Shakes until the physical prize (stock 1) is won, then shows that its
/// weight left the table: the version went up, the total fell from 100 to
/// 90, and the odds shown are what the next shake is decided with.
#[test]
fn a_depleted_prize_leaves_the_table_and_the_odds_shown_are_the_odds_applied() {
    let mut c = shake_campaign(1_000, 100, Limits::default());
    let odds = state(&c).shake_odds().unwrap();
    assert_eq!((odds.table_version, odds.total_weight), (1, 100));
    let mut won_at = None;
    for m in 0..500u128 {
        let (after, events) = then_events(&c, shake(vec![ask(m, 1)]), now());
        c = after;
        let CampaignEvent::CampaignShakesDrawn { draws, .. } = &events[0] else { panic!() };
        if draws[0].slot == 0 {
            assert_eq!(draws[0].stock_left_after, Some(0));
            assert_eq!(draws[0].table_version, 1, "decided with the table before the depletion");
            won_at = Some(m);
            break;
        }
    }
    assert!(won_at.is_some(), "a weight of 10 in 100 comes up within 500 shakes");
    let odds = state(&c).shake_odds().unwrap();
    assert_eq!((odds.table_version, odds.total_weight), (2, 90));
    assert_eq!(odds.slots.iter().map(|s| s.weight).collect::<Vec<_>>(), vec![0, 30, 60]);
    // The next shakes are decided with exactly these odds, and never land on the depleted slot.
    for m in 1_000..1_100u128 {
        let batch = c.decide_shakes(&seed(9), &[ask(m, 1)], now()).unwrap();
        let d = batch.outcomes[0].as_ref().unwrap();
        assert_eq!((d.table_version, d.total_weight), (odds.table_version, odds.total_weight));
        assert_ne!(d.slot, 0);
        // Never silently "thanks": the same roll under the old table could not turn slot 0 into thanks.
        assert_eq!(Some(usize::from(d.slot)), slot_for_roll(&[0, 30, 60], d.roll));
    }
}

#[test]
fn shaking_stops_when_every_prize_is_given_and_never_gives_past_stock() {
    let mut terms = shake_terms(2, 100, Limits::default());
    if let CampaignKind::ShakeLottery(s) = &mut terms.kind {
        s.slots[2].weight = 1; // mostly prizes
    }
    let mut c = given(&[created(terms), scheduled(Some(seed(9).commitment())), started()]);
    let asks: Vec<_> = (0..50).map(|m| ask(m, 1)).collect();
    let batch = c.decide_shakes(&seed(9), &asks, now()).unwrap();
    let won = batch.outcomes.iter().filter(|o| o.as_ref().is_ok_and(|d| !d.prize.is_thanks())).count();
    assert_eq!(won, 3, "one poster and two coupons, however many shake at once");
    assert!(batch.outcomes.contains(&Err(Refusal::PrizesExhausted)));
    c.apply(&batch.event.unwrap()).unwrap();
    assert_eq!(state(&c).stock_left, vec![Some(0), Some(0), None]);
    assert_eq!(state(&c).table_version, 3);
    assert_eq!(refused(&c, shake(vec![ask(99, 1)]), now()), CampaignError::Refused(Refusal::PrizesExhausted));
}

#[test]
fn a_member_wins_at_most_k_prizes_and_shakes_within_the_chance_limits() {
    let mut terms = shake_terms(1_000, 1, Limits { lifetime: Some(3), per_day: Some(2), per_period: None });
    if let CampaignKind::ShakeLottery(s) = &mut terms.kind {
        s.slots[2].weight = 1;
    }
    let c = given(&[created(terms), scheduled(Some(seed(9).commitment())), started()]);
    // 20 concurrent shakes of one member decided together: chance 1 only once.
    let asks: Vec<_> = (0..20).map(|_| ask(1, 1)).collect();
    let batch = c.decide_shakes(&seed(9), &asks, now()).unwrap();
    assert_eq!(batch.outcomes.iter().filter(|o| o.is_ok()).count(), 1);
    assert!(batch.outcomes[1..].iter().all(|o| *o == Err(Refusal::ChanceUsed)));
    let mut c = given_more(&c, &[batch.event.unwrap()]);
    let won_first = state(&c).participations[&member(1)].prizes == 1;
    if won_first {
        assert_eq!(refused(&c, shake(vec![ask(1, 2)]), now()), CampaignError::Refused(Refusal::PrizeLimitReached));
    }
    // Another member: two today, the third refused today and allowed tomorrow, then the lifetime limit.
    let mut terms = shake_terms(1_000, 100, Limits { lifetime: Some(3), per_day: Some(2), per_period: None });
    terms.members_only = true;
    c = given(&[created(terms), scheduled(Some(seed(9).commitment())), started()]);
    let guest = ShakeAsk { card_member: false, ..ask(2, 1) };
    assert_eq!(c.decide_shakes(&seed(9), &[guest], now()).unwrap().outcomes, vec![Err(Refusal::MembersOnly)]);
    let batch = c.decide_shakes(&seed(9), &[ask(2, 1), ask(2, 2), ask(2, 3)], now()).unwrap();
    assert_eq!(batch.outcomes[2], Err(Refusal::DailyLimitReached));
    c = given_more(&c, &[batch.event.unwrap()]);
    let tomorrow = now() + Duration::days(1);
    let batch = c.decide_shakes(&seed(9), &[ask(2, 3), ask(2, 4)], tomorrow).unwrap();
    assert!(batch.outcomes[0].is_ok());
    assert_eq!(batch.outcomes[1], Err(Refusal::LifetimeLimitReached), "chance 3 counts within the batch");
    let c = given_more(&c, &[batch.event.unwrap()]);
    assert_eq!(refused(&c, shake(vec![ask(2, 4)]), tomorrow), CampaignError::Refused(Refusal::LifetimeLimitReached));
}

#[test]
fn the_shake_seed_is_revealed_after_the_end_and_must_open_the_commitment() {
    let c = shake_campaign(3, 1, Limits::default());
    let reveal = |s| CampaignCommand::RevealShakeSeed { seed: seed(s), actor: scheduler() };
    assert_eq!(refused(&c, reveal(9), now()), CampaignError::NotEnded);
    let (ended, _) = then_events(&c, CampaignCommand::End { actor: scheduler() }, closes());
    assert_eq!(refused(&ended, reveal(8), closes()), CampaignError::SeedMismatch);
    let (revealed, events) = then_events(&ended, reveal(9), closes());
    assert_eq!(state(&revealed).revealed_seed, Some(seed(9)));
    assert_eq!(revealed.handle(reveal(9), closes()), Ok(vec![]));
    assert_eq!(broken_rule(&revealed, events[0].clone()), rules::SEED_OPENS_COMMITMENT);
    let wrong = CampaignEvent::CampaignShakeSeedRevealed {
        algorithm: "wxcm-draw-v1".into(),
        seed: seed(8),
        actor: scheduler(),
        revealed_at: closes(),
    };
    assert_eq!(broken_rule(&ended, wrong), rules::SEED_OPENS_COMMITMENT);
    assert_eq!(refused(&entered_period(), reveal(9), now()), CampaignError::WrongKind("shake_lottery"));
}

// ---------------------------------------------------------------- properties

#[derive(Debug, Clone)]
enum ShakeStep {
    Batch { asks: Vec<(u128, u32)>, hours: i64 },
}

fn shake_step() -> impl Strategy<Value = ShakeStep> {
    (prop::collection::vec((0u128..6, 1u32..6), 1..12), 0i64..3)
        .prop_map(|(asks, hours)| ShakeStep::Batch { asks, hours })
}

proptest! {
    /// Random batches of shakes (duplicates, out-of-order chances, many at
    /// once, across merchant days): never more prizes than stock, every
    /// member within K and the chance limits, every draw what the table in
    /// force gives, and the replay equals the live state.
    #[test]
    fn random_shakes_never_exceed_stock_or_member_limits(
        coupons in 1u32..6,
        k in 1u32..4,
        lifetime in prop::option::of(1u32..8),
        per_day in prop::option::of(1u32..4),
        steps in prop::collection::vec(shake_step(), 1..25),
    ) {
        let limits = Limits { lifetime, per_day, per_period: None };
        let first = [created(shake_terms(coupons, k, limits)), scheduled(Some(seed(9).commitment())), started()];
        let mut live = given(&first);
        let mut log = first.to_vec();
        let mut at = now();
        let mut prizes: BTreeMap<MemberId, u32> = BTreeMap::new();
        let mut per_member_day: BTreeMap<(MemberId, chrono::NaiveDate), u32> = BTreeMap::new();
        let mut given_out = [0u32; 3];
        for ShakeStep::Batch { asks, hours } in &steps {
            at += Duration::hours(*hours * 9);
            let asks: Vec<_> = asks.iter().map(|(m, n)| ask(*m, *n)).collect();
            let Ok(batch) = live.decide_shakes(&seed(9), &asks, at) else { continue };
            let Some(event) = batch.event else { continue };
            let CampaignEvent::CampaignShakesDrawn { draws, .. } = &event else { unreachable!() };
            for d in draws {
                prop_assert_eq!(d.roll, shake_roll(&seed(9), d.member_id, u64::from(d.nonce), d.total_weight).unwrap());
                given_out[usize::from(d.slot)] += 1;
                if !d.prize.is_thanks() {
                    *prizes.entry(d.member_id).or_default() += 1;
                }
                *per_member_day.entry((d.member_id, d.merchant_day)).or_default() += 1;
            }
            live.apply(&event).unwrap();
            log.push(event);
        }
        prop_assert!(given_out[0] <= 1 && given_out[1] <= coupons, "oversold: {given_out:?}");
        prop_assert!(prizes.values().all(|p| *p <= k));
        if let Some(l) = per_day {
            prop_assert!(per_member_day.values().all(|n| *n <= l));
        }
        if let Some(l) = lifetime {
            prop_assert!(state(&live).participations.values().all(|p| p.total <= l));
        }
        let s = state(&live);
        prop_assert_eq!(s.stock_left.clone(), vec![Some(1 - given_out[0]), Some(coupons - given_out[1]), None]);
        prop_assert_eq!(given(&log), live);
    }

    /// Random entries then a draw: the winners are distinct entrants, the
    /// draw is what the spec gives for the frozen list, and the replay equals
    /// the live state.
    #[test]
    fn random_entries_then_a_draw_replay_to_the_same_state(
        entries in prop::collection::vec((0u128..30, 0u128..12), 0..60),
        s in 1u8..255,
    ) {
        let first = [
            created(periodic_terms(Limits { per_period: Some(3), ..Limits::default() }, 8)),
            scheduled(None),
            started(),
            period_opened(1, s),
        ];
        let mut live = given(&first);
        let mut log = first.to_vec();
        for (e, m) in entries {
            let Ok(events) = live.handle(enter(e, m, 1), now()) else { continue };
            for event in events {
                live.apply(&event).unwrap();
                log.push(event);
            }
        }
        let p = &state(&live).periods[&1];
        prop_assert!(p.entrants <= 8 && p.tickets.values().all(|t| *t <= 3));
        let entrants: BTreeSet<MemberId> = p.tickets.keys().copied().collect();
        let events = live.handle(CampaignCommand::DrawPeriod { period_no: 1, seed: seed(s), beacon_value: None, actor: scheduler() }, day(1).1).unwrap();
        let CampaignEvent::CampaignPeriodDrawn { winners, .. } = &events[0] else { unreachable!() };
        let won: BTreeSet<MemberId> = winners.iter().map(|w| w.member_id).collect();
        prop_assert_eq!(won.len(), winners.len());
        prop_assert!(won.is_subset(&entrants));
        prop_assert_eq!(winners.len(), entrants.len().min(3));
        for event in events {
            live.apply(&event).unwrap();
            log.push(event);
        }
        prop_assert_eq!(given(&log), live);
    }
}

// ---------------------------------------------------------------- popularity

fn openid(s: &str) -> crate::OpenId {
    crate::OpenId::parse(&format!("o{s:_<27}")).unwrap()
}

fn popularity(limits: Limits) -> Campaign {
    let mut terms = periodic_terms(limits, 10);
    if let CampaignKind::PeriodicLottery(p) = &mut terms.kind {
        p.tickets = TicketSource::FriendVisits;
        p.entry_cost = None;
    }
    given(&[created(terms), scheduled(None), started(), period_opened(1, 1)])
}

fn visit(m: u128, visitor: &str) -> CampaignCommand {
    CampaignCommand::GrantTicket {
        member_id: member(m),
        period_no: 1,
        visitor_openid: openid(visitor),
        member_openids: vec![openid(&format!("member{m}"))],
        card_member: true,
    }
}

#[test]
fn a_popularity_lottery_is_a_periodic_lottery_whose_tickets_are_friends_visits() {
    let mut terms = periodic_terms(Limits::default(), 10);
    if let CampaignKind::PeriodicLottery(p) = &mut terms.kind {
        p.tickets = TicketSource::FriendVisits;
        assert_eq!(
            terms.check(),
            Err(InvalidTerms("a popularity lottery's tickets come from friends' visits: no entry cost"))
        );
        if let CampaignKind::PeriodicLottery(p) = &mut terms.kind {
            p.entry_cost = None;
        }
    }
    assert_eq!(terms.check(), Ok(()));
    assert_eq!(terms.kind.name(), "popularity_lottery");
    // Old campaigns' terms have no `tickets`: they are periodic lotteries.
    let mut json = serde_json::to_value(periodic_terms(Limits::default(), 10)).unwrap();
    json["kind"].as_object_mut().unwrap().remove("tickets");
    let old: CampaignTerms = serde_json::from_value(json).unwrap();
    assert_eq!(old.kind.name(), "periodic_lottery");
}

#[test]
fn each_distinct_friend_gives_one_ticket_and_repeats_and_self_visits_give_none() {
    let c = popularity(Limits::default());
    // Given a friend's first visit, then: one ticket naming the visitor.
    let (c, events) = then_events(&c, visit(1, "alice"), now());
    let expected_id = EntryId::for_visit(&tenant(), campaign_id(), 1, member(1), &openid("alice"));
    let CampaignEvent::CampaignEntryRecorded { entry_id, visitor_openid, cost_points, member_period_after, .. } =
        &events[0]
    else {
        panic!("{events:?}")
    };
    assert_eq!(
        (*entry_id, visitor_openid.clone(), *cost_points, *member_period_after),
        (expected_id, Some(openid("alice")), None, 1)
    );
    // The same friend again: nothing; the member's own visit: refused.
    assert_eq!(c.handle(visit(1, "alice"), now() + Duration::minutes(5)), Ok(vec![]));
    assert_eq!(refused(&c, visit(1, "member1"), now()), CampaignError::Refused(Refusal::SelfVisit));
    // Another friend, and the same friend for another member: tickets.
    let (c, _) = then_events(&c, visit(1, "bob"), now());
    let (c, _) = then_events(&c, visit(2, "alice"), now());
    let p = &state(&c).periods[&1];
    assert_eq!((p.tickets[&member(1)], p.tickets[&member(2)], p.entrants, p.entries_total), (2, 1, 2, 3));
    // Members do not enter a popularity lottery themselves.
    assert_eq!(refused(&c, enter(1, 1, 1), now()), CampaignError::WrongKind("periodic_lottery"));
    // Nor do visits give tickets in a periodic lottery.
    let periodic = periodic(Limits::default(), 10);
    assert_eq!(refused(&periodic, visit(1, "alice"), now()), CampaignError::WrongKind("popularity_lottery"));
}

#[test]
fn a_ticket_event_must_be_its_visitors_one_ticket() {
    let c = popularity(Limits::default());
    let (_, events) = then_events(&c, visit(1, "alice"), now());
    let mut forged = events[0].clone();
    if let CampaignEvent::CampaignEntryRecorded { entry_id, .. } = &mut forged {
        *entry_id = entry(77);
    }
    assert_eq!(broken_rule(&c, forged), rules::TICKET_PER_VISITOR);
    let mut anonymous = events[0].clone();
    if let CampaignEvent::CampaignEntryRecorded { visitor_openid, .. } = &mut anonymous {
        *visitor_openid = None;
    }
    assert_eq!(broken_rule(&c, anonymous), rules::TICKET_PER_VISITOR);
    // A periodic lottery's entry never names a visitor.
    let p = periodic(Limits::default(), 10);
    let (_, entered) = then_events(&p, enter(1, 1, 1), now());
    let mut with_visitor = entered[0].clone();
    if let CampaignEvent::CampaignEntryRecorded { visitor_openid, .. } = &mut with_visitor {
        *visitor_openid = Some(openid("alice"));
    }
    assert_eq!(broken_rule(&p, with_visitor), rules::TICKET_PER_VISITOR);
}

#[test]
fn the_popularity_draw_weights_by_tickets_and_limits_count_tickets() {
    let c = popularity(Limits { lifetime: None, per_day: None, per_period: Some(3) });
    let mut c = c;
    for friend in ["a", "b", "c"] {
        c = then_events(&c, visit(1, friend), now()).0;
    }
    assert_eq!(refused(&c, visit(1, "d"), now()), CampaignError::Refused(Refusal::PeriodLimitReached));
    c = then_events(&c, visit(2, "a"), now()).0;
    let (c, events) = then_events(&c, draw_cmd(1), day(1).1);
    let CampaignEvent::CampaignPeriodDrawn { total_tickets, entrants, winners, .. } = &events[0] else { panic!() };
    assert_eq!((*total_tickets, *entrants, winners.len()), (4, 2, 2));
    assert!(state(&c).periods[&1].end.is_some());
}
