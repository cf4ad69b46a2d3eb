//! Given/when/then tests, one per ledger rule, and property tests over random
//! command sequences. Timestamps are fixed; nothing reads the wall clock.

use chrono::{DateTime, Duration, Utc};

use super::*;
use crate::{Actor, AmountFen, IdempotencyKey, Reference, SceneKey};

// ---------------------------------------------------------------- harness

/// A member built by applying a history, as the event store would.
struct Given {
    member: Member,
}

fn given(events: Vec<MemberEvent>) -> Given {
    let mut member = Member::default();
    for (index, event) in events.iter().enumerate() {
        member.apply(event).unwrap_or_else(|e| panic!("history event {index}: {e}"));
    }
    Given { member }
}

/// The rule `event` breaks when applied after `history`.
#[track_caller]
fn broken_rule(history: Vec<MemberEvent>, event: MemberEvent) -> &'static str {
    let mut member = given(history).member;
    match member.apply(&event) {
        Ok(()) => panic!("{} applied: {event:?}", event.event_type()),
        Err(broken) => broken.rule,
    }
}

impl Given {
    fn when(self, command: MemberCommand, now: DateTime<Utc>) -> When {
        let result = self.member.handle(command, now);
        When { member: self.member, result }
    }
}

struct When {
    member: Member,
    result: Result<Vec<MemberEvent>, MemberError>,
}

impl When {
    /// Asserts the events and returns the state after applying them.
    #[track_caller]
    fn then_events(self, expected: Vec<MemberEvent>) -> Member {
        assert_eq!(self.result, Ok(expected.clone()));
        let mut member = self.member;
        for event in &expected {
            member.apply(event).unwrap();
        }
        member
    }

    #[track_caller]
    fn then_no_events(self) -> Member {
        self.then_events(Vec::new())
    }

    #[track_caller]
    fn then_error(self, expected: MemberError) {
        assert_eq!(self.result, Err(expected));
    }
}

// ---------------------------------------------------------------- fixtures

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// 2026-03-10 10:00 in China.
fn t0() -> DateTime<Utc> {
    at("2026-03-10T02:00:00Z")
}

fn pts(n: i64) -> PointsAmount {
    PointsAmount::new(n).unwrap()
}

fn pts_bal(n: i64) -> PointsBalance {
    PointsBalance::new(n).unwrap()
}

fn fen(n: i64) -> AmountFen {
    AmountFen::new(n).unwrap()
}

fn fen_bal(n: i64) -> BalanceFen {
    BalanceFen::new(n).unwrap()
}

fn reference(s: &str) -> Reference {
    Reference::parse(s).unwrap()
}

fn take(lot_no: u64, points: i64) -> LotTake {
    LotTake { lot_no, points: pts(points) }
}

fn prov() -> Provenance {
    Provenance {
        actor: Actor::Staff { username: "clerk".into() },
        reason: reference("counter"),
        reference: None,
        idempotency_key: IdempotencyKey::parse("key-00000001").unwrap(),
    }
}

fn member_id() -> MemberId {
    MemberId::for_openid(&tenant_id(), &openid())
}

fn tenant_id() -> TenantId {
    TenantId::parse("acme-cinema").unwrap()
}

fn openid() -> OpenId {
    OpenId::parse("oABCdef123456").unwrap()
}

fn register() -> MemberCommand {
    MemberCommand::Register {
        member_id: member_id(),
        tenant_id: tenant_id(),
        card_no: CardNumber::from_serial(1).unwrap(),
        openid: Some(openid()),
        source: RegistrationSource::Subscribe,
        card_level: CardLevel::standard(),
        provenance: Provenance { actor: Actor::Wechat { source: "subscribe".into() }, ..prov() },
        attribution: None,
        welcome: None,
    }
}

fn registered() -> MemberEvent {
    MemberEvent::MemberRegistered {
        member_id: member_id(),
        tenant_id: tenant_id(),
        card_no: CardNumber::from_serial(1).unwrap(),
        openid: Some(openid()),
        source: RegistrationSource::Subscribe,
        card_level: CardLevel::standard(),
        registered_at: t0(),
        actor: Actor::Wechat { source: "subscribe".into() },
        idempotency_key: prov().idempotency_key,
        attribution: None,
    }
}

fn grant(points: i64, expiry: ExpiryPolicy) -> MemberCommand {
    MemberCommand::GrantPoints { points: pts(points), source: PointsSource::Manual, expiry, provenance: prov() }
}

/// A lot granted at `granted_at` (its expiry already computed).
fn granted_at(
    lot_no: u64,
    points: i64,
    after: i64,
    granted_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
) -> MemberEvent {
    MemberEvent::PointsGranted {
        lot_no,
        points: pts(points),
        source: PointsSource::Manual,
        granted_at,
        expires_at,
        provenance: prov(),
        points_after: pts_bal(after),
    }
}

fn granted(lot_no: u64, points: i64, after: i64, expires_at: Option<DateTime<Utc>>) -> MemberEvent {
    granted_at(lot_no, points, after, t0(), expires_at)
}

fn spend(points: i64) -> MemberCommand {
    MemberCommand::SpendPoints { points: pts(points), purpose: SpendPurpose::Mall, provenance: prov() }
}

fn spent(points: i64, taken: Vec<LotTake>, after: i64) -> MemberEvent {
    MemberEvent::PointsSpent {
        points: pts(points),
        purpose: SpendPurpose::Mall,
        taken,
        provenance: prov(),
        points_after: pts_bal(after),
    }
}

fn deduct(points: i64) -> MemberCommand {
    MemberCommand::DeductPoints { points: pts(points), provenance: prov() }
}

fn hold(id: &str, points: i64) -> MemberCommand {
    MemberCommand::HoldPoints { hold_id: reference(id), points: pts(points), provenance: prov() }
}

fn held(id: &str, points: i64, taken: Vec<LotTake>, after: i64, held_after: i64) -> MemberEvent {
    MemberEvent::PointsHeld {
        hold_id: reference(id),
        points: pts(points),
        taken,
        provenance: prov(),
        points_after: pts_bal(after),
        held_after,
    }
}

fn spend_held(id: &str) -> MemberCommand {
    MemberCommand::SpendHeldPoints { hold_id: reference(id), provenance: prov() }
}

fn release(id: &str) -> MemberCommand {
    MemberCommand::ReleaseHeldPoints { hold_id: reference(id), provenance: prov() }
}

fn expire() -> MemberCommand {
    MemberCommand::ExpirePoints { provenance: prov() }
}

fn expired(lots: Vec<LotTake>, as_of: DateTime<Utc>, after: i64) -> MemberEvent {
    MemberEvent::PointsExpired {
        points: pts(lots.iter().map(|t| t.points.get()).sum()),
        lots,
        as_of,
        provenance: prov(),
        points_after: pts_bal(after),
    }
}

fn deposit(amount: i64) -> MemberCommand {
    MemberCommand::DepositCash { amount_fen: fen(amount), provenance: prov() }
}

fn deposited(amount: i64, after: i64) -> MemberEvent {
    MemberEvent::CashDeposited { amount_fen: fen(amount), provenance: prov(), balance_after_fen: fen_bal(after) }
}

fn charge(amount: i64) -> MemberCommand {
    MemberCommand::ChargeCash { amount_fen: fen(amount), provenance: prov() }
}

fn charged(amount: i64, after: i64) -> MemberEvent {
    MemberEvent::CashCharged { amount_fen: fen(amount), provenance: prov(), balance_after_fen: fen_bal(after) }
}

fn recharge(amount: i64) -> MemberCommand {
    MemberCommand::CreditRecharge { amount_fen: fen(amount), order_id: reference("order-1"), provenance: prov() }
}

fn refund(charge_sequence: u64, amount: i64) -> MemberCommand {
    MemberCommand::RefundCharge { charge_sequence, amount_fen: fen(amount), provenance: prov() }
}

fn refunded(charge_sequence: u64, amount: i64, after: i64) -> MemberEvent {
    MemberEvent::ChargeRefunded {
        amount_fen: fen(amount),
        reverses_sequence: charge_sequence,
        provenance: prov(),
        balance_after_fen: fen_bal(after),
    }
}

fn recharged(order_id: &str, amount: i64, after: i64) -> MemberEvent {
    MemberEvent::RechargeCredited {
        amount_fen: fen(amount),
        order_id: reference(order_id),
        provenance: prov(),
        balance_after_fen: fen_bal(after),
    }
}

fn reverse(order_id: &str, refund_no: &str, amount: i64) -> MemberCommand {
    MemberCommand::ReverseRecharge {
        order_id: reference(order_id),
        refund_no: reference(refund_no),
        amount_fen: fen(amount),
        provenance: prov(),
    }
}

fn reversed(order_id: &str, refund_no: &str, amount: i64, after: i64) -> MemberEvent {
    MemberEvent::RechargeReversed {
        amount_fen: fen(amount),
        order_id: reference(order_id),
        refund_no: reference(refund_no),
        provenance: prov(),
        balance_after_fen: fen_bal(after),
    }
}

fn flagged(order_id: &str, refund_no: &str, amount: i64, balance: i64) -> MemberEvent {
    MemberEvent::RechargeReversalFlagged {
        amount_fen: fen(amount),
        order_id: reference(order_id),
        refund_no: reference(refund_no),
        balance_fen: fen_bal(balance),
        provenance: prov(),
    }
}

fn follow(attribution: Attribution) -> MemberCommand {
    MemberCommand::Follow { attribution, provenance: prov() }
}

fn followed(attribution: Attribution, at: DateTime<Utc>) -> MemberEvent {
    MemberEvent::MemberFollowed { attribution, followed_at: at, provenance: prov() }
}

fn unfollow() -> MemberCommand {
    MemberCommand::Unfollow { provenance: prov() }
}

fn unfollowed(at: DateTime<Utc>) -> MemberEvent {
    MemberEvent::MemberUnfollowed { unfollowed_at: at, provenance: prov() }
}

fn referrer_id() -> MemberId {
    MemberId::for_openid(&tenant_id(), &OpenId::parse("oREFERRER0001").unwrap())
}

/// `register()` with another source and an attribution.
fn register_with(source: RegistrationSource, attribution: Option<Attribution>) -> MemberCommand {
    let mut command = register();
    if let MemberCommand::Register { source: s, attribution: a, .. } = &mut command {
        *s = source;
        *a = attribution;
    }
    command
}

fn registered_with(source: RegistrationSource, attribution: Option<Attribution>) -> MemberEvent {
    let mut event = registered();
    if let MemberEvent::MemberRegistered { source: s, attribution: a, .. } = &mut event {
        *s = source;
        *a = attribution;
    }
    event
}

fn set_level(name: &str) -> MemberCommand {
    MemberCommand::SetCardLevel { card_level: CardLevel::parse(name).unwrap(), provenance: prov() }
}

// ---------------------------------------------------------------- card level rule

mod level_rule {
    use super::*;
    use crate::card_levels::{CardLevelCatalog, CardLevelDef, Colour, DowngradePolicy, LevelThreshold, PrivilegesText};
    use crate::mall::ImageUrl;

    fn def(name: &str, threshold: Option<LevelThreshold>) -> CardLevelDef {
        CardLevelDef {
            name: CardLevel::parse(name).unwrap(),
            image_url: ImageUrl::parse("https://img.example.com/card.png").unwrap(),
            colour: Colour::parse("#C0A060").unwrap(),
            privileges: PrivilegesText::parse("").unwrap(),
            threshold,
        }
    }

    /// standard (staff only), silver at 100 points, gold at 500 fen paid.
    fn catalog(downgrade: DowngradePolicy) -> CardLevelCatalog {
        CardLevelCatalog::new(
            vec![
                def("standard", None),
                def("silver", Some(LevelThreshold::LifetimePoints { points: pts(100) })),
                def("gold", Some(LevelThreshold::TotalPaid { fen: fen(500) })),
            ],
            downgrade,
        )
        .unwrap()
    }

    fn ruled(command: MemberCommand, downgrade: DowngradePolicy) -> MemberCommand {
        MemberCommand::WithLevelRule { inner: Box::new(command), catalog: catalog(downgrade) }
    }

    fn by_rule(from: &str, to: &str) -> MemberEvent {
        MemberEvent::CardLevelChanged {
            from: CardLevel::parse(from).unwrap(),
            to: CardLevel::parse(to).unwrap(),
            source: LevelSource::Rule,
            provenance: Provenance {
                actor: Actor::System { job: "card_level_rule".into() },
                reason: Reference::fixed("card_level_rule"),
                reference: None,
                idempotency_key: prov().idempotency_key,
            },
        }
    }

    #[test]
    fn a_grant_that_crosses_a_threshold_upgrades_in_the_same_decision_once() {
        let never = DowngradePolicy::Never;
        let member = given(vec![registered(), granted(1, 60, 60, None)])
            .when(ruled(grant(40, ExpiryPolicy::Never), never), t0())
            .then_events(vec![granted(2, 40, 100, None), by_rule("standard", "silver")]);
        assert_eq!(member.card_level_source, LevelSource::Rule);
        // A concurrent grant decided after it finds nothing more to change.
        Given { member }
            .when(ruled(grant(40, ExpiryPolicy::Never), never), t0())
            .then_events(vec![granted(3, 40, 140, None)]);
    }

    #[test]
    fn charges_count_as_paid_and_refunds_take_it_back() {
        let history = vec![registered(), deposited(1_000, 1_000)];
        let never = DowngradePolicy::Never;
        let member = given(history)
            .when(ruled(charge(500), never), t0())
            .then_events(vec![charged(500, 500), by_rule("standard", "gold")]);
        assert_eq!(member.total_paid.get(), 500);
        // Sequence 3 is the charge; the refund lowers the total, the level stays.
        let member = Given { member }.when(ruled(refund(3, 200), never), t0()).then_events(vec![refunded(3, 200, 700)]);
        assert_eq!(member.total_paid.get(), 300);
        let member = Given { member }
            .when(ruled(refund(3, 300), DowngradePolicy::RuleLevelsOnly), t0())
            .then_events(vec![refunded(3, 300, 1_000), by_rule("gold", "standard")]);
        assert_eq!(member.total_paid.get(), 0);
    }

    #[test]
    fn a_level_set_by_hand_is_kept_unless_the_policy_says_so() {
        let manual = given(vec![registered()])
            .when(ruled(set_level("gold"), DowngradePolicy::RuleLevelsOnly), t0())
            .then_events(vec![MemberEvent::CardLevelChanged {
                from: CardLevel::standard(),
                to: CardLevel::parse("gold").unwrap(),
                source: LevelSource::Manual,
                provenance: prov(),
            }]);
        assert_eq!(manual.card_level_source, LevelSource::Manual);
        Given { member: manual.clone() }
            .when(ruled(grant(150, ExpiryPolicy::Never), DowngradePolicy::RuleLevelsOnly), t0())
            .then_events(vec![granted(1, 150, 150, None)]);
        Given { member: manual }
            .when(ruled(grant(150, ExpiryPolicy::Never), DowngradePolicy::Always), t0())
            .then_events(vec![granted(1, 150, 150, None), by_rule("gold", "silver")]);
    }

    #[test]
    fn a_level_by_hand_must_be_in_the_catalog_and_other_commands_leave_the_level() {
        given(vec![registered()])
            .when(ruled(set_level("platinum"), DowngradePolicy::Never), t0())
            .then_error(MemberError::UnknownCardLevel("platinum".into()));
        given(vec![registered()])
            .when(ruled(deposit(10_000), DowngradePolicy::Never), t0())
            .then_events(vec![deposited(10_000, 10_000)]);
        // Nested wraps are unwrapped; the outer catalog decides.
        let nested = ruled(ruled(grant(100, ExpiryPolicy::Never), DowngradePolicy::Never), DowngradePolicy::Never);
        given(vec![registered()])
            .when(nested, t0())
            .then_events(vec![granted(1, 100, 100, None), by_rule("standard", "silver")]);
    }

    #[test]
    fn welcome_points_at_registration_may_earn_a_level_at_once() {
        let MemberCommand::Register { .. } = register() else { unreachable!() };
        let mut command = register();
        if let MemberCommand::Register { welcome, .. } = &mut command {
            *welcome = Some(WelcomePoints { points: pts(100), expiry: ExpiryPolicy::Never });
        }
        let events = Member::default().handle(ruled(command, DowngradePolicy::Never), t0()).unwrap();
        let types: Vec<_> = events.iter().map(|e| e.event_type()).collect();
        assert_eq!(types, ["MemberRegistered", "PointsGranted", "CardLevelChanged"]);
        let mut member = Member::default();
        for e in &events {
            member.apply(e).unwrap();
        }
        assert_eq!(member.registration.unwrap().card_level.as_str(), "silver");
    }

    #[test]
    fn purchases_paid_by_wechat_pay_count_as_paid() {
        let paid = |amount: i64| MemberCommand::RecordPurchasePaid {
            amount_fen: fen(amount),
            payment: reference("mall-order-1"),
            provenance: prov(),
        };
        let refunded = |amount: i64| MemberCommand::RecordPurchaseRefunded {
            amount_fen: fen(amount),
            payment: reference("mall-order-1"),
            provenance: prov(),
        };
        let event = |paid: bool, amount: i64, after: i64| {
            let (amount_fen, payment, provenance, total_paid_after_fen) =
                (fen(amount), reference("mall-order-1"), prov(), fen_bal(after));
            if paid {
                MemberEvent::PurchasePaid { amount_fen, payment, provenance, total_paid_after_fen }
            } else {
                MemberEvent::PurchaseRefunded { amount_fen, payment, provenance, total_paid_after_fen }
            }
        };
        let never = DowngradePolicy::Never;
        let member = given(vec![registered()])
            .when(ruled(paid(600), never), t0())
            .then_events(vec![event(true, 600, 600), by_rule("standard", "gold")]);
        assert_eq!((member.total_paid.get(), member.balance.get()), (600, 0));
        Given { member: member.clone() }
            .when(refunded(601), t0())
            .then_error(MemberError::PurchaseRefundExceedsPaid { paid_fen: 600, requested_fen: 601 });
        let member = Given { member }.when(ruled(refunded(600), never), t0()).then_events(vec![event(false, 600, 0)]);
        assert_eq!(member.total_paid.get(), 0);
        assert_eq!(broken_rule(vec![registered()], event(true, 5, 6)), rules::TOTAL_PAID_AFTER);
        assert_eq!(broken_rule(vec![registered()], event(false, 5, 0)), rules::TOTAL_PAID_COVERS_REFUND);
    }

    #[test]
    fn a_refund_beyond_the_total_paid_is_refused_when_applied() {
        let mut member = given(vec![registered(), deposited(1_000, 1_000), charged(100, 900)]).member;
        member.total_paid = BalanceFen::ZERO;
        let refund = refunded(3, 100, 1_000);
        assert_eq!(member.apply(&refund).unwrap_err().rule, rules::TOTAL_PAID_COVERS_REFUND);
    }
}

// ---------------------------------------------------------------- registration

#[test]
fn registration_emits_member_registered() {
    let member = given(vec![]).when(register(), t0()).then_events(vec![registered()]);
    let registration = member.registration.unwrap();
    assert_eq!(registration.member_id, member_id());
    assert_eq!(registration.registered_at, t0());
    assert_eq!(member.version, 1);
}

fn register_welcomed(points: i64, expiry: ExpiryPolicy) -> MemberCommand {
    let mut command = register();
    if let MemberCommand::Register { welcome, .. } = &mut command {
        *welcome = Some(WelcomePoints { points: pts(points), expiry });
    }
    command
}

fn initial_granted(points: i64, at: DateTime<Utc>, expires_at: Option<DateTime<Utc>>) -> MemberEvent {
    let registration = register();
    MemberEvent::PointsGranted {
        lot_no: 1,
        points: pts(points),
        source: PointsSource::Initial,
        granted_at: at,
        expires_at,
        provenance: Provenance {
            reason: reference("initial"),
            reference: Some(reference(&member_id().to_string())),
            ..registration.provenance().clone()
        },
        points_after: pts_bal(points),
    }
}

#[test]
fn registration_with_welcome_points_grants_the_first_lot_in_the_same_command() {
    let member = given(vec![])
        .when(register_welcomed(10, ExpiryPolicy::Never), t0())
        .then_events(vec![registered(), initial_granted(10, t0(), None)]);
    assert_eq!(member.version, 2);
    assert_eq!(member.points, pts_bal(10));
    assert!(member.initial_points_granted);
}

#[test]
fn welcome_points_follow_the_expiry_policy() {
    let expiry = ExpiryPolicy::Days { days: 30 };
    given(vec![])
        .when(register_welcomed(5, expiry), t0())
        .then_events(vec![registered(), initial_granted(5, t0(), expiry.expires_at(t0()))]);
    given(vec![])
        .when(register_welcomed(5, ExpiryPolicy::Days { days: EXPIRY_DAYS_MAX + 1 }), t0())
        .then_error(MemberError::InvalidExpiry);
}

#[test]
fn a_repeated_welcomed_registration_writes_nothing() {
    given(vec![registered(), initial_granted(10, t0(), None)])
        .when(register_welcomed(10, ExpiryPolicy::Never), t0() + Duration::seconds(3))
        .then_no_events();
}

#[test]
fn initial_points_are_granted_once_per_member() {
    let grant = |source| MemberCommand::GrantPoints {
        points: pts(10),
        source,
        expiry: ExpiryPolicy::Never,
        provenance: prov(),
    };
    given(vec![registered(), initial_granted(10, t0(), None)])
        .when(grant(PointsSource::Initial), t0())
        .then_error(MemberError::InitialPointsGranted);
    // Other sources are not limited.
    given(vec![registered(), initial_granted(10, t0(), None)]).when(grant(PointsSource::Campaign), t0()).then_events(
        vec![MemberEvent::PointsGranted {
            lot_no: 2,
            points: pts(10),
            source: PointsSource::Campaign,
            granted_at: t0(),
            expires_at: None,
            provenance: prov(),
            points_after: pts_bal(20),
        }],
    );
    // A member registered without welcome points can get them once later.
    let member = given(vec![registered()]).when(grant(PointsSource::Initial), t0()).then_events(vec![
        MemberEvent::PointsGranted {
            lot_no: 1,
            points: pts(10),
            source: PointsSource::Initial,
            granted_at: t0(),
            expires_at: None,
            provenance: prov(),
            points_after: pts_bal(10),
        },
    ]);
    assert!(member.initial_points_granted);
}

#[test]
fn duplicate_registration_of_the_same_identity_writes_nothing() {
    // WeChat may deliver the same subscribe several times.
    given(vec![registered()]).when(register(), t0() + Duration::seconds(3)).then_no_events();
}

#[test]
fn registration_with_another_identity_is_refused() {
    let MemberCommand::Register { member_id, tenant_id, card_no, source, card_level, provenance, .. } = register()
    else {
        unreachable!()
    };
    let other_openid = MemberCommand::Register {
        member_id,
        tenant_id: tenant_id.clone(),
        card_no: card_no.clone(),
        openid: Some(OpenId::parse("oOTHER123456").unwrap()),
        source,
        card_level: card_level.clone(),
        provenance: provenance.clone(),
        attribution: None,
        welcome: None,
    };
    given(vec![registered()]).when(other_openid, t0()).then_error(MemberError::AlreadyRegistered);
    let other_member = MemberCommand::Register {
        member_id: MemberId::new_random(),
        tenant_id,
        card_no,
        openid: Some(openid()),
        source,
        card_level,
        provenance,
        attribution: None,
        welcome: None,
    };
    given(vec![registered()]).when(other_member, t0()).then_error(MemberError::AlreadyRegistered);
}

#[test]
fn commands_on_an_unregistered_member_are_refused() {
    let commands = vec![
        set_level("gold"),
        grant(10, ExpiryPolicy::Never),
        deduct(1),
        spend(1),
        hold("order-1", 1),
        spend_held("order-1"),
        release("order-1"),
        expire(),
        deposit(1),
        charge(1),
        recharge(1),
        refund(1, 1),
        follow(Attribution::Direct),
        unfollow(),
        reverse("order-1", "refund-1", 1),
    ];
    for command in commands {
        given(vec![]).when(command, t0()).then_error(MemberError::NotRegistered);
    }
}

#[test]
fn applying_an_event_to_an_unregistered_member_names_the_rule() {
    let broken = Member::default().apply(&deposited(100, 100)).unwrap_err();
    assert_eq!(broken.rule, rules::REGISTERED_FIRST);
    assert_eq!(broken.detail, "CashDeposited for an unregistered member");
    assert_eq!(broken_rule(vec![registered()], registered()), rules::REGISTERED_ONCE);
}

// ---------------------------------------------------------------- grants

#[test]
fn grant_without_expiry_opens_a_lot() {
    let member = given(vec![registered()])
        .when(grant(100, ExpiryPolicy::Never), t0())
        .then_events(vec![granted(1, 100, 100, None)]);
    assert_eq!(member.lots[&1].remaining.get(), 100);
    assert_eq!(member.lots[&1].expires_at, None);
    assert_eq!(member.points, pts_bal(100));
    assert_eq!(member.lifetime_points.get(), 100);
}

#[test]
fn grant_with_days_expires_that_many_days_later() {
    given(vec![registered()]).when(grant(100, ExpiryPolicy::Days { days: 30 }), t0()).then_events(vec![granted(
        1,
        100,
        100,
        Some(at("2026-04-09T02:00:00Z")),
    )]);
}

#[test]
fn grant_with_end_of_month_expires_at_midnight_china_time() {
    given(vec![registered()]).when(grant(100, ExpiryPolicy::EndOfMonth), t0()).then_events(vec![granted(
        1,
        100,
        100,
        Some(at("2026-03-31T16:00:00Z")),
    )]);
    // 2026-03-31 18:00 UTC is already April in China.
    let late = at("2026-03-31T18:00:00Z");
    given(vec![registered()]).when(grant(100, ExpiryPolicy::EndOfMonth), late).then_events(vec![granted_at(
        1,
        100,
        100,
        late,
        Some(at("2026-04-30T16:00:00Z")),
    )]);
}

#[test]
fn grant_with_end_of_year_expires_at_new_year_china_time() {
    given(vec![registered()]).when(grant(100, ExpiryPolicy::EndOfYear), t0()).then_events(vec![granted(
        1,
        100,
        100,
        Some(at("2026-12-31T16:00:00Z")),
    )]);
}

#[test]
fn grants_number_lots_in_order_and_accumulate_points_after() {
    let member = given(vec![registered(), granted(1, 100, 100, None)])
        .when(grant(50, ExpiryPolicy::Never), t0())
        .then_events(vec![granted(2, 50, 150, None)]);
    assert_eq!(member.next_lot_no, 2);
    assert_eq!(member.lifetime_points.get(), 150);
}

#[test]
fn grant_with_an_invalid_expiry_is_refused() {
    for days in [0, EXPIRY_DAYS_MAX + 1] {
        given(vec![registered()])
            .when(grant(1, ExpiryPolicy::Days { days }), t0())
            .then_error(MemberError::InvalidExpiry);
    }
    let member = given(vec![registered()])
        .when(grant(1, ExpiryPolicy::Days { days: EXPIRY_DAYS_MAX }), t0())
        .then_events(vec![granted(1, 1, 1, Some(t0() + Duration::days(i64::from(EXPIRY_DAYS_MAX))))]);
    assert_eq!(member.lots.len(), 1);
}

#[test]
fn grant_whose_expiry_date_cannot_be_represented_is_refused_not_never() {
    // Before the fix a Days policy panicked here and the calendar policies
    // silently granted points that never expire.
    let now = DateTime::<Utc>::MAX_UTC - Duration::days(1);
    for expiry in [ExpiryPolicy::Days { days: 30 }, ExpiryPolicy::EndOfMonth, ExpiryPolicy::EndOfYear] {
        given(vec![registered()]).when(grant(1, expiry), now).then_error(MemberError::InvalidExpiry);
    }
}

#[test]
fn grants_stop_at_lots_max() {
    let mut member = given(vec![registered()]).member;
    for lot_no in 1..LOTS_MAX as u64 {
        member
            .lots
            .insert(lot_no, Lot { granted: pts_bal(1), remaining: pts_bal(1), granted_at: t0(), expires_at: None });
    }
    member.next_lot_no = LOTS_MAX as u64 - 1;
    member.points = pts_bal(LOTS_MAX as i64 - 1);
    let member = Given { member }.when(grant(1, ExpiryPolicy::Never), t0()).then_events(vec![granted(
        LOTS_MAX as u64,
        1,
        LOTS_MAX as i64,
        None,
    )]);
    assert_eq!(member.lots.len(), LOTS_MAX);
    Given { member }.when(grant(1, ExpiryPolicy::Never), t0()).then_error(MemberError::TooManyLots);
}

// ---------------------------------------------------------------- spending

fn three_lots() -> Vec<MemberEvent> {
    vec![registered(), granted(1, 100, 100, None), granted(2, 50, 150, None), granted(3, 70, 220, None)]
}

#[test]
fn deduct_takes_from_the_oldest_lots_first() {
    let member = given(three_lots()).when(deduct(120), t0()).then_events(vec![MemberEvent::PointsDeducted {
        points: pts(120),
        taken: vec![take(1, 100), take(2, 20)],
        provenance: prov(),
        points_after: pts_bal(100),
    }]);
    assert!(!member.lots.contains_key(&1), "an emptied lot is closed");
    assert_eq!(member.lots[&2].remaining.get(), 30);
    assert_eq!(member.lots[&3].remaining.get(), 70);
}

#[test]
fn spend_takes_from_the_oldest_lots_first_across_several_lots() {
    let member = given(three_lots()).when(spend(160), t0()).then_events(vec![spent(
        160,
        vec![take(1, 100), take(2, 50), take(3, 10)],
        60,
    )]);
    assert_eq!(member.lots.keys().copied().collect::<Vec<_>>(), vec![3]);
    assert_eq!(member.lots[&3].remaining.get(), 60);
}

#[test]
fn spending_everything_closes_every_lot() {
    let member = given(three_lots()).when(spend(220), t0()).then_events(vec![spent(
        220,
        vec![take(1, 100), take(2, 50), take(3, 70)],
        0,
    )]);
    assert!(member.lots.is_empty());
    assert_eq!(member.points, PointsBalance::ZERO);
}

#[test]
fn spending_skips_lots_expired_at_now_before_the_scheduler_ran() {
    let expiry = t0() + Duration::days(1);
    let history = vec![registered(), granted(1, 100, 100, Some(expiry)), granted(2, 50, 150, None)];
    // At the expiry instant the lot is already expired.
    let member = given(history.clone()).when(spend(30), expiry).then_events(vec![spent(30, vec![take(2, 30)], 120)]);
    assert_eq!(member.spendable_points(expiry), 20);
    // One second earlier it is still the oldest live lot.
    given(history).when(spend(30), expiry - Duration::seconds(1)).then_events(vec![spent(30, vec![take(1, 30)], 120)]);
}

#[test]
fn spending_more_than_the_live_points_is_refused() {
    let expiry = t0() + Duration::days(1);
    let history = vec![registered(), granted(1, 100, 100, Some(expiry)), granted(2, 50, 150, None)];
    // 150 points on the books, but only 50 are spendable after the expiry.
    given(history.clone())
        .when(spend(51), expiry)
        .then_error(MemberError::InsufficientPoints { available: 50, requested: 51 });
    given(history.clone())
        .when(deduct(51), expiry)
        .then_error(MemberError::InsufficientPoints { available: 50, requested: 51 });
    given(history)
        .when(hold("order-1", 51), expiry)
        .then_error(MemberError::InsufficientPoints { available: 50, requested: 51 });
}

// ---------------------------------------------------------------- holds

#[test]
fn hold_then_spend_held() {
    let member = given(three_lots()).when(hold("order-1", 120), t0()).then_events(vec![held(
        "order-1",
        120,
        vec![take(1, 100), take(2, 20)],
        100,
        120,
    )]);
    assert_eq!(member.held.get(), 120);
    assert_eq!(member.spendable_points(t0()), 100);
    let member = Given { member }.when(spend_held("order-1"), t0()).then_events(vec![MemberEvent::HeldPointsSpent {
        hold_id: reference("order-1"),
        points: pts(120),
        provenance: prov(),
        points_after: pts_bal(100),
        held_after: 0,
    }]);
    assert!(member.holds.is_empty());
    assert_eq!(member.held.get(), 0);
    assert_eq!(member.points, pts_bal(100));
}

#[test]
fn release_returns_the_points_to_the_lots_they_came_from() {
    let before = given(three_lots()).member;
    let mut history = three_lots();
    history.push(held("order-1", 120, vec![take(1, 100), take(2, 20)], 100, 120));
    // Lot 1 was emptied by the hold and closed; the release reopens it.
    let member = given(history).when(release("order-1"), t0() + Duration::hours(1)).then_events(vec![
        MemberEvent::PointsHoldReleased {
            hold_id: reference("order-1"),
            points: pts(120),
            returned: vec![take(1, 100), take(2, 20)],
            expired: vec![],
            provenance: prov(),
            points_after: pts_bal(220),
            held_after: 0,
        },
    ]);
    assert_eq!(member.lots, before.lots);
    assert_eq!(member.points, before.points);
    assert!(member.holds.is_empty());
}

#[test]
fn release_restores_a_lot_the_hold_emptied_with_its_dates() {
    let expiry = t0() + Duration::days(30);
    let granted_on = t0() - Duration::days(2);
    let history = vec![
        registered(),
        granted_at(1, 40, 40, granted_on, Some(expiry)),
        granted(2, 60, 100, None),
        held("order-1", 50, vec![take(1, 40), take(2, 10)], 50, 50),
    ];
    assert!(!given(history.clone()).member.lots.contains_key(&1));
    let member = given(history).when(release("order-1"), t0() + Duration::days(1)).then_events(vec![
        MemberEvent::PointsHoldReleased {
            hold_id: reference("order-1"),
            points: pts(50),
            returned: vec![take(1, 40), take(2, 10)],
            expired: vec![],
            provenance: prov(),
            points_after: pts_bal(100),
            held_after: 0,
        },
    ]);
    let lot = &member.lots[&1];
    assert_eq!(lot.remaining.get(), 40);
    assert_eq!(lot.granted_at, granted_on);
    assert_eq!(lot.expires_at, Some(expiry));
    // The restored lot is still the oldest and is spent first again.
    Given { member }.when(spend(45), t0() + Duration::days(1)).then_events(vec![spent(
        45,
        vec![take(1, 40), take(2, 5)],
        55,
    )]);
}

#[test]
fn release_after_the_lot_expired_drops_those_points() {
    let expiry = t0() + Duration::days(1);
    let history = vec![
        registered(),
        granted(1, 40, 40, Some(expiry)),
        granted(2, 60, 100, None),
        held("order-1", 50, vec![take(1, 40), take(2, 10)], 50, 50),
    ];
    let member = given(history).when(release("order-1"), expiry).then_events(vec![MemberEvent::PointsHoldReleased {
        hold_id: reference("order-1"),
        points: pts(50),
        returned: vec![take(2, 10)],
        expired: vec![take(1, 40)],
        provenance: prov(),
        points_after: pts_bal(60),
        held_after: 0,
    }]);
    assert!(!member.lots.contains_key(&1));
    assert_eq!(member.lots[&2].remaining.get(), 60);
    assert_eq!(member.held.get(), 0);
}

#[test]
fn a_hold_id_is_used_once() {
    given(vec![registered(), granted(1, 100, 100, None), held("order-1", 10, vec![take(1, 10)], 90, 10)])
        .when(hold("order-1", 10), t0())
        .then_error(MemberError::HoldExists("order-1".into()));
}

#[test]
fn unknown_holds_cannot_be_spent_or_released() {
    let history = vec![registered(), granted(1, 100, 100, None), held("order-1", 10, vec![take(1, 10)], 90, 10)];
    given(history.clone()).when(spend_held("order-2"), t0()).then_error(MemberError::HoldNotFound("order-2".into()));
    given(history.clone()).when(release("order-2"), t0()).then_error(MemberError::HoldNotFound("order-2".into()));
    // A hold is gone once spent.
    let mut spent_history = history;
    spent_history.push(MemberEvent::HeldPointsSpent {
        hold_id: reference("order-1"),
        points: pts(10),
        provenance: prov(),
        points_after: pts_bal(90),
        held_after: 0,
    });
    given(spent_history).when(release("order-1"), t0()).then_error(MemberError::HoldNotFound("order-1".into()));
}

#[test]
fn holds_stop_at_holds_max() {
    let mut history = vec![registered(), granted(1, 1_000, 1_000, None)];
    for i in 1..HOLDS_MAX as i64 {
        history.push(held(&format!("order-{i}"), 1, vec![take(1, 1)], 1_000 - i, i));
    }
    let last = HOLDS_MAX as i64;
    let member = given(history).when(hold("order-last", 1), t0()).then_events(vec![held(
        "order-last",
        1,
        vec![take(1, 1)],
        1_000 - last,
        last,
    )]);
    assert_eq!(member.holds.len(), HOLDS_MAX);
    Given { member }.when(hold("order-one-more", 1), t0()).then_error(MemberError::TooManyHolds);
}

// ---------------------------------------------------------------- expiry

#[test]
fn expire_points_expires_only_due_lots() {
    let soon = t0() + Duration::days(1);
    let later = t0() + Duration::days(10);
    let history = vec![
        registered(),
        granted(1, 100, 100, Some(soon)),
        granted(2, 50, 150, Some(later)),
        granted(3, 70, 220, None),
        spent(30, vec![take(1, 30)], 190),
    ];
    let member = given(history).when(expire(), soon).then_events(vec![expired(vec![take(1, 70)], soon, 120)]);
    assert_eq!(member.lots.keys().copied().collect::<Vec<_>>(), vec![2, 3]);
    assert_eq!(member.points, pts_bal(120));
    assert_eq!(member.lifetime_points.get(), 220, "expiry never lowers lifetime");
}

#[test]
fn expire_points_with_nothing_due_writes_nothing() {
    let soon = t0() + Duration::days(1);
    let history = vec![registered(), granted(1, 100, 100, Some(soon))];
    given(history.clone()).when(expire(), soon - Duration::seconds(1)).then_no_events();
    // Running it twice expires once.
    let member = given(history).when(expire(), soon).then_events(vec![expired(vec![take(1, 100)], soon, 0)]);
    Given { member }.when(expire(), soon + Duration::minutes(5)).then_no_events();
}

#[test]
fn expire_points_puts_at_most_points_amount_max_in_one_event() {
    // Before the fix, more than PointsAmount::MAX due points made the whole
    // expiry a silent no-op, forever.
    let soon = t0() + Duration::days(1);
    let max = PointsAmount::MAX;
    let history = vec![
        registered(),
        granted(1, max, max, Some(soon)),
        granted(2, max, 2 * max, Some(soon)),
        granted(3, 5, 2 * max + 5, Some(soon)),
    ];
    let member = given(history).when(expire(), soon).then_events(vec![expired(vec![take(1, max)], soon, max + 5)]);
    let member = Given { member }.when(expire(), soon).then_events(vec![expired(vec![take(2, max)], soon, 5)]);
    let member = Given { member }.when(expire(), soon).then_events(vec![expired(vec![take(3, 5)], soon, 0)]);
    Given { member }.when(expire(), soon).then_no_events();
}

// ---------------------------------------------------------------- cash

#[test]
fn deposit_charge_and_recharge_update_the_balance() {
    let member = given(vec![registered()]).when(deposit(1_000), t0()).then_events(vec![deposited(1_000, 1_000)]);
    let member = Given { member }.when(charge(300), t0()).then_events(vec![charged(300, 700)]);
    let member = Given { member }.when(recharge(5_000), t0()).then_events(vec![MemberEvent::RechargeCredited {
        amount_fen: fen(5_000),
        order_id: reference("order-1"),
        provenance: prov(),
        balance_after_fen: fen_bal(5_700),
    }]);
    assert_eq!(member.balance, fen_bal(5_700));
}

#[test]
fn charging_more_than_the_balance_is_refused() {
    given(vec![registered(), deposited(100, 100)])
        .when(charge(101), t0())
        .then_error(MemberError::InsufficientBalance { balance_fen: 100, requested_fen: 101 });
    given(vec![registered()])
        .when(charge(1), t0())
        .then_error(MemberError::InsufficientBalance { balance_fen: 0, requested_fen: 1 });
}

#[test]
fn charging_exactly_the_balance_leaves_zero() {
    let member =
        given(vec![registered(), deposited(100, 100)]).when(charge(100), t0()).then_events(vec![charged(100, 0)]);
    assert_eq!(member.balance, BalanceFen::ZERO);
}

#[test]
fn a_charge_is_refunded_in_parts_by_its_sequence() {
    // registered = 1, deposited = 2, charged = 3: the charge is sequence 3.
    let member = given(vec![registered(), deposited(1_000, 1_000), charged(400, 600)]).member;
    assert_eq!(member.version, 3);
    assert_eq!(member.refundable_charges.get(&3), Some(&fen(400)));
    let member = Given { member }.when(refund(3, 150), t0()).then_events(vec![refunded(3, 150, 750)]);
    assert_eq!(member.refundable_charges.get(&3), Some(&fen(250)));
    Given { member: member.clone() }
        .when(refund(3, 251), t0())
        .then_error(MemberError::RefundExceedsCharge { refundable_fen: 250, requested_fen: 251 });
    let member = Given { member }.when(refund(3, 250), t0()).then_events(vec![refunded(3, 250, 1_000)]);
    assert!(member.refundable_charges.is_empty());
    Given { member }.when(refund(3, 1), t0()).then_error(MemberError::ChargeNotFound(3));
}

#[test]
fn refund_more_than_the_charge_is_refused() {
    given(vec![registered(), deposited(1_000, 1_000), charged(400, 600)])
        .when(refund(3, 401), t0())
        .then_error(MemberError::RefundExceedsCharge { refundable_fen: 400, requested_fen: 401 });
}

#[test]
fn refund_must_name_a_charge() {
    let history = vec![registered(), deposited(1_000, 1_000), charged(400, 600)];
    // Sequence 2 is the deposit, 99 does not exist.
    for sequence in [2, 99] {
        given(history.clone()).when(refund(sequence, 1), t0()).then_error(MemberError::ChargeNotFound(sequence));
    }
}

#[test]
fn refundable_charges_keep_the_newest_refundable_charges_max() {
    let mut member = given(vec![registered(), deposited(AmountFen::MAX, AmountFen::MAX)]).member;
    let mut balance = AmountFen::MAX;
    for _ in 0..REFUNDABLE_CHARGES_MAX {
        balance -= 1;
        member.apply(&charged(1, balance)).unwrap();
    }
    // Charges are sequences 3..=REFUNDABLE_CHARGES_MAX + 2; all are remembered.
    assert_eq!(member.refundable_charges.len(), REFUNDABLE_CHARGES_MAX);
    assert!(member.refundable_charges.contains_key(&3));
    // One past the limit forgets the oldest.
    member.apply(&charged(1, balance - 1)).unwrap();
    assert_eq!(member.refundable_charges.len(), REFUNDABLE_CHARGES_MAX);
    Given { member: member.clone() }.when(refund(3, 1), t0()).then_error(MemberError::ChargeNotFound(3));
    Given { member }.when(refund(4, 1), t0()).then_events(vec![refunded(4, 1, balance)]);
}

#[test]
fn cash_overflow_is_an_error_not_a_panic() {
    // Such a balance cannot be reached through bounded amounts (nor replayed:
    // `apply` recomputes every stated balance); a snapshot or a corrupted store
    // must still not crash the aggregate.
    let mut member = given(vec![registered(), deposited(100, 100), charged(20, 80)]).member;
    member.balance = fen_bal(i64::MAX - 10);
    for command in [deposit(11), recharge(11), refund(3, 20)] {
        Given { member: member.clone() }.when(command, t0()).then_error(MemberError::Overflow);
    }
    Given { member }.when(deposit(10), t0()).then_events(vec![deposited(10, i64::MAX)]);
}

#[test]
fn lifetime_points_overflow_is_an_error_not_a_panic() {
    let mut member = given(vec![registered()]).member;
    member.lifetime_points = pts_bal(i64::MAX - 5);
    Given { member }.when(grant(6, ExpiryPolicy::Never), t0()).then_error(MemberError::Overflow);
}

// ---------------------------------------------------------------- card level

#[test]
fn set_card_level_records_the_change() {
    let member =
        given(vec![registered()]).when(set_level("gold"), t0()).then_events(vec![MemberEvent::CardLevelChanged {
            from: CardLevel::standard(),
            to: CardLevel::parse("gold").unwrap(),
            source: LevelSource::Manual,
            provenance: prov(),
        }]);
    assert_eq!(member.registration.unwrap().card_level.as_str(), "gold");
}

#[test]
fn setting_the_same_card_level_is_refused() {
    given(vec![registered()])
        .when(set_level("standard"), t0())
        .then_error(MemberError::SameCardLevel("standard".into()));
}

// ---------------------------------------------------------------- follows and attribution

#[test]
fn a_member_registered_by_subscribe_follows() {
    let member = given(vec![]).when(register(), t0()).then_events(vec![registered()]);
    assert!(member.followed);
    assert_eq!(member.followed_at, Some(t0()));
    assert_eq!(member.attribution, None);
    assert_eq!(member.referrer, None);
}

#[test]
fn members_registered_by_oauth_or_staff_do_not_follow() {
    for source in [RegistrationSource::Oauth, RegistrationSource::Staff] {
        let member =
            given(vec![]).when(register_with(source, None), t0()).then_events(vec![registered_with(source, None)]);
        assert!(!member.followed, "{source:?}");
        assert_eq!(member.followed_at, None);
    }
}

#[test]
fn registration_keeps_its_attribution_and_level_one_referrer() {
    let referral = Attribution::Referral { referrer: referrer_id() };
    let member = given(vec![])
        .when(register_with(RegistrationSource::Subscribe, Some(referral.clone())), t0())
        .then_events(vec![registered_with(RegistrationSource::Subscribe, Some(referral.clone()))]);
    assert_eq!(member.attribution, Some(referral));
    assert_eq!(member.referrer, Some(referrer_id()));

    let scene = Attribution::SceneQr { scene: SceneKey::parse("poster-7").unwrap() };
    let member = given(vec![])
        .when(register_with(RegistrationSource::Subscribe, Some(scene.clone())), t0())
        .then_events(vec![registered_with(RegistrationSource::Subscribe, Some(scene.clone()))]);
    assert_eq!(member.attribution, Some(scene));
    assert_eq!(member.referrer, None);
}

#[test]
fn a_member_cannot_refer_itself() {
    let own = Attribution::Referral { referrer: member_id() };
    given(vec![])
        .when(register_with(RegistrationSource::Subscribe, Some(own.clone())), t0())
        .then_error(MemberError::SelfReferral);
    given(vec![registered_with(RegistrationSource::Oauth, None)])
        .when(follow(own), t0())
        .then_error(MemberError::SelfReferral);
}

#[test]
fn applying_a_self_referral_names_the_rule() {
    let own = registered_with(RegistrationSource::Subscribe, Some(Attribution::Referral { referrer: member_id() }));
    assert_eq!(broken_rule(vec![], own), rules::NO_SELF_REFERRAL);
}

#[test]
fn follow_records_a_follow_only_when_not_following() {
    let later = t0() + Duration::days(2);
    let scene = Attribution::SceneQr { scene: SceneKey::parse("counter-1").unwrap() };
    let member = given(vec![registered_with(RegistrationSource::Oauth, None)])
        .when(follow(scene.clone()), later)
        .then_events(vec![followed(scene.clone(), later)]);
    assert!(member.followed);
    assert_eq!(member.followed_at, Some(later));
    // The registration's attribution is never replaced by a later follow.
    assert_eq!(member.attribution, None);
    assert_eq!(member.referrer, None);
    Given { member }.when(follow(Attribution::Direct), later).then_no_events();
}

#[test]
fn a_follow_referral_never_sets_the_referrer() {
    let referral = Attribution::Referral { referrer: referrer_id() };
    let member = given(vec![registered_with(RegistrationSource::Oauth, None)])
        .when(follow(referral.clone()), t0())
        .then_events(vec![followed(referral, t0())]);
    assert_eq!(member.referrer, None);
}

#[test]
fn unfollow_records_an_unfollow_only_when_following() {
    let later = t0() + Duration::days(1);
    let member = given(vec![registered()]).when(unfollow(), later).then_events(vec![unfollowed(later)]);
    assert!(!member.followed);
    assert_eq!(member.unfollowed_at, Some(later));
    assert_eq!(member.followed_at, Some(t0()));
    let member = Given { member }.when(unfollow(), later).then_no_events();
    // Following again keeps both last times.
    let again = later + Duration::days(1);
    let member = Given { member }
        .when(follow(Attribution::Direct), again)
        .then_events(vec![followed(Attribution::Direct, again)]);
    assert_eq!((member.followed_at, member.unfollowed_at), (Some(again), Some(later)));
}

#[test]
fn applying_a_follow_to_a_follower_names_the_rule() {
    assert_eq!(broken_rule(vec![registered()], followed(Attribution::Direct, t0())), rules::FOLLOW_TOGGLES);
    let history = vec![registered_with(RegistrationSource::Oauth, None)];
    assert_eq!(broken_rule(history, unfollowed(t0())), rules::FOLLOW_TOGGLES);
}

// ---------------------------------------------------------------- recharge reversals

#[test]
fn a_refund_covered_by_the_balance_reverses_the_recharge() {
    let member = given(vec![registered(), recharged("order-1", 10_000, 10_000)])
        .when(reverse("order-1", "refund-1", 4_000), t0())
        .then_events(vec![reversed("order-1", "refund-1", 4_000, 6_000)]);
    assert_eq!(member.balance, fen_bal(6_000));
    let recharge = &member.credited_recharges["order-1"];
    assert_eq!(
        (recharge.amount_fen, recharge.reversed_fen, recharge.flagged_fen),
        (fen_bal(10_000), fen_bal(4_000), fen_bal(0))
    );
}

#[test]
fn a_refund_the_balance_cannot_cover_is_flagged_and_moves_nothing() {
    let member = given(vec![registered(), recharged("order-1", 10_000, 10_000), charged(9_000, 1_000)])
        .when(reverse("order-1", "refund-1", 4_000), t0())
        .then_events(vec![flagged("order-1", "refund-1", 4_000, 1_000)]);
    assert_eq!(member.balance, fen_bal(1_000));
    assert_eq!(member.credited_recharges["order-1"].flagged_fen, fen_bal(4_000));
    assert_eq!(member.credited_recharges["order-1"].reversible_fen(), 6_000);
}

#[test]
fn a_refund_no_applies_once_either_way() {
    let history = vec![
        registered(),
        recharged("order-1", 10_000, 10_000),
        reversed("order-1", "refund-1", 4_000, 6_000),
        charged(6_000, 0),
        flagged("order-1", "refund-2", 1_000, 0),
    ];
    given(history.clone()).when(reverse("order-1", "refund-1", 4_000), t0()).then_no_events();
    given(history.clone()).when(reverse("order-1", "refund-2", 1_000), t0()).then_no_events();
    given(history)
        .when(reverse("order-1", "refund-1", 3_000), t0())
        .then_error(MemberError::RefundNoConflict("refund-1".into()));
}

#[test]
fn reversals_never_exceed_the_recharge() {
    given(vec![
        registered(),
        recharged("order-1", 10_000, 10_000),
        deposited(50_000, 60_000),
        reversed("order-1", "refund-1", 4_000, 56_000),
    ])
    .when(reverse("order-1", "refund-2", 6_001), t0())
    .then_error(MemberError::ReversalExceedsRecharge { reversible_fen: 6_000, requested_fen: 6_001 });
}

#[test]
fn a_reversal_must_name_a_credited_recharge() {
    given(vec![registered(), deposited(100, 100)])
        .when(reverse("order-1", "refund-1", 1), t0())
        .then_error(MemberError::RechargeNotFound("order-1".into()));
}

#[test]
fn reversals_of_one_recharge_stop_at_the_limit() {
    let mut history = vec![registered(), recharged("order-1", 10_000, 10_000)];
    for i in 0..REVERSALS_PER_RECHARGE_MAX as i64 {
        history.push(reversed("order-1", &format!("refund-{i}"), 1, 10_000 - i - 1));
    }
    given(history).when(reverse("order-1", "refund-x", 1), t0()).then_error(MemberError::TooManyReversals);
}

#[test]
fn credited_recharges_keep_the_newest_credited_recharges_max() {
    let mut member = given(vec![registered()]).member;
    for i in 0..=CREDITED_RECHARGES_MAX as i64 {
        member.apply(&recharged(&format!("order-{i}"), 1, i + 1)).unwrap();
    }
    assert_eq!(member.credited_recharges.len(), CREDITED_RECHARGES_MAX);
    assert!(!member.credited_recharges.contains_key("order-0"));
    assert!(member.credited_recharges.contains_key(&format!("order-{CREDITED_RECHARGES_MAX}")));
}

// ---------------------------------------------------------------- inconsistent streams
//
// Given a history, when an event that cannot follow it is applied, then
// `apply` names the broken rule (the event store reports it with the stream
// and sequence).

#[test]
fn a_stated_balance_the_state_does_not_give_is_refused() {
    let history = vec![registered(), deposited(100, 100)];
    let mut member = given(history.clone()).member;
    let broken = member.apply(&deposited(50, 999)).unwrap_err();
    assert_eq!(broken.rule, rules::BALANCE_AFTER);
    assert_eq!(broken.detail, "balance_after_fen is 999 but the state gives 150");
    assert_eq!(broken_rule(history.clone(), charged(30, 80)), rules::BALANCE_AFTER);
    assert_eq!(broken_rule(history.clone(), recharged("order-1", 30, 100)), rules::BALANCE_AFTER);
    assert_eq!(broken_rule(history.clone(), refunded(2, 1, 100)), rules::BALANCE_AFTER);
    assert_eq!(broken_rule(history, flagged("order-1", "refund-1", 500, 7)), rules::BALANCE_AFTER);
}

#[test]
fn a_debit_that_would_make_the_balance_negative_is_refused() {
    let history = vec![registered(), deposited(100, 100)];
    assert_eq!(broken_rule(history.clone(), charged(101, 0)), rules::BALANCE_COVERS_DEBIT);
    let history = vec![registered(), recharged("order-1", 100, 100), charged(60, 40)];
    assert_eq!(broken_rule(history, reversed("order-1", "refund-1", 50, 0)), rules::BALANCE_COVERS_DEBIT);
}

#[test]
fn a_stated_points_or_held_figure_the_state_does_not_give_is_refused() {
    assert_eq!(broken_rule(vec![registered()], granted(1, 100, 50, None)), rules::POINTS_AFTER);
    assert_eq!(broken_rule(three_lots(), spent(20, vec![take(1, 20)], 220)), rules::POINTS_AFTER);
    let hold = held("order-1", 120, vec![take(1, 100), take(2, 20)], 100, 999);
    assert_eq!(broken_rule(three_lots(), hold), rules::HELD_AFTER);
    let mut history = three_lots();
    history.push(held("order-1", 120, vec![take(1, 100), take(2, 20)], 100, 120));
    let spent_held = MemberEvent::HeldPointsSpent {
        hold_id: reference("order-1"),
        points: pts(120),
        provenance: prov(),
        points_after: pts_bal(100),
        held_after: 20,
    };
    assert_eq!(broken_rule(history, spent_held), rules::HELD_AFTER);
}

#[test]
fn lot_takes_must_name_open_lots_cover_them_and_add_up() {
    assert_eq!(broken_rule(vec![registered()], granted(3, 10, 10, None)), rules::LOT_NO_NEXT);
    assert_eq!(broken_rule(three_lots(), spent(5, vec![take(7, 5)], 215)), rules::LOT_KNOWN);
    assert_eq!(broken_rule(three_lots(), spent(150, vec![take(1, 150)], 70)), rules::LOT_COVERS_TAKE);
    assert_eq!(broken_rule(three_lots(), spent(30, vec![take(1, 20)], 190)), rules::TAKES_ADD_UP);
    assert_eq!(broken_rule(three_lots(), expired(vec![take(4, 10)], t0(), 210)), rules::LOT_KNOWN);
}

#[test]
fn hold_events_must_match_the_holds() {
    let mut history = three_lots();
    history.push(held("order-1", 120, vec![take(1, 100), take(2, 20)], 100, 120));
    let again = held("order-1", 10, vec![take(3, 10)], 90, 130);
    assert_eq!(broken_rule(history.clone(), again), rules::HOLD_UNIQUE);
    let release = |returned: Vec<LotTake>, points_after: i64| MemberEvent::PointsHoldReleased {
        hold_id: reference("order-1"),
        points: pts(120),
        returned,
        expired: vec![],
        provenance: prov(),
        points_after: pts_bal(points_after),
        held_after: 0,
    };
    // Back to the right total but to the wrong lots.
    assert_eq!(
        broken_rule(history.clone(), release(vec![take(1, 20), take(2, 100)], 220)),
        rules::RELEASE_MATCHES_HOLD
    );
    assert_eq!(broken_rule(history.clone(), release(vec![take(1, 100)], 200)), rules::RELEASE_MATCHES_HOLD);
    let unknown = MemberEvent::HeldPointsSpent {
        hold_id: reference("order-9"),
        points: pts(120),
        provenance: prov(),
        points_after: pts_bal(100),
        held_after: 0,
    };
    assert_eq!(broken_rule(history, unknown), rules::HOLD_KNOWN);
}

#[test]
fn refunds_and_reversals_must_follow_what_they_reverse() {
    let history = vec![registered(), deposited(1_000, 1_000), charged(300, 700)];
    assert_eq!(broken_rule(history, refunded(3, 301, 1_001)), rules::REFUND_WITHIN_CHARGE);
    let history = vec![registered(), recharged("order-1", 1_000, 1_000)];
    assert_eq!(broken_rule(history.clone(), reversed("order-2", "refund-1", 10, 990)), rules::RECHARGE_KNOWN);
    assert_eq!(
        broken_rule(history.clone(), reversed("order-1", "refund-1", 1_001, 0)),
        rules::REVERSAL_WITHIN_RECHARGE
    );
    // The balance covers it: `handle` would have reversed, not flagged.
    assert_eq!(broken_rule(history.clone(), flagged("order-1", "refund-1", 10, 1_000)), rules::FLAG_ONLY_WHEN_SHORT);
    let mut twice = history;
    twice.push(reversed("order-1", "refund-1", 10, 990));
    assert_eq!(broken_rule(twice, reversed("order-1", "refund-1", 10, 980)), rules::REFUND_NO_ONCE);
}

#[test]
fn a_card_level_change_must_start_from_the_current_level() {
    let change = MemberEvent::CardLevelChanged {
        from: CardLevel::parse("gold").unwrap(),
        to: CardLevel::parse("silver").unwrap(),
        source: LevelSource::Manual,
        provenance: prov(),
    };
    assert_eq!(broken_rule(vec![registered()], change), rules::CARD_LEVEL_FROM);
}

// ---------------------------------------------------------------- provenance and ledger

fn with_provenance(mut command: MemberCommand, p: &Provenance) -> MemberCommand {
    match &mut command {
        MemberCommand::Register { provenance, .. }
        | MemberCommand::SetCardLevel { provenance, .. }
        | MemberCommand::GrantPoints { provenance, .. }
        | MemberCommand::DeductPoints { provenance, .. }
        | MemberCommand::SpendPoints { provenance, .. }
        | MemberCommand::HoldPoints { provenance, .. }
        | MemberCommand::SpendHeldPoints { provenance, .. }
        | MemberCommand::ReleaseHeldPoints { provenance, .. }
        | MemberCommand::ExpirePoints { provenance }
        | MemberCommand::DepositCash { provenance, .. }
        | MemberCommand::ChargeCash { provenance, .. }
        | MemberCommand::CreditRecharge { provenance, .. }
        | MemberCommand::RefundCharge { provenance, .. }
        | MemberCommand::Follow { provenance, .. }
        | MemberCommand::Unfollow { provenance }
        | MemberCommand::ReverseRecharge { provenance, .. }
        | MemberCommand::RecordPurchasePaid { provenance, .. }
        | MemberCommand::RecordPurchaseRefunded { provenance, .. } => *provenance = p.clone(),
        MemberCommand::WithLevelRule { inner, .. } => **inner = with_provenance((**inner).clone(), p),
    }
    command
}

#[test]
fn provenance_is_copied_into_every_event() {
    let soon = t0() + Duration::days(1);
    let script = vec![
        (set_level("gold"), t0()),
        (grant(100, ExpiryPolicy::Days { days: 1 }), t0()),
        (grant(100, ExpiryPolicy::Never), t0()),
        (deduct(10), t0()),
        (spend(10), t0()),
        (hold("order-1", 10), t0()),
        (spend_held("order-1"), t0()),
        (hold("order-2", 10), t0()),
        (release("order-2"), t0()),
        (expire(), soon),
        (deposit(100), soon),
        (charge(50), soon),
        (recharge(100), soon),
        (refund(13, 10), soon),
        (unfollow(), soon),
        (follow(Attribution::Direct), soon),
        (reverse("order-1", "refund-1", 10), soon),
    ];
    let mut member = given(vec![registered()]).member;
    for (i, (command, now)) in script.into_iter().enumerate() {
        let p = Provenance {
            actor: Actor::Admin { username: format!("admin-{i}") },
            reason: reference(&format!("reason {i}")),
            reference: Some(reference(&format!("ticket-{i}"))),
            idempotency_key: IdempotencyKey::parse(&format!("idem-key-{i:04}")).unwrap(),
        };
        let events = member.handle(with_provenance(command, &p), now).unwrap();
        assert_eq!(events.len(), 1, "step {i}");
        assert_eq!(events[0].provenance(), Some(&p), "step {i}");
        let line = events[0].ledger_line();
        assert_eq!(line.actor, format!("admin:admin-{i}"));
        assert_eq!(line.reason, format!("reason {i}"));
        assert_eq!(line.reference, Some(format!("ticket-{i}")));
        assert_eq!(line.idempotency_key, format!("idem-key-{i:04}"));
        member.apply(&events[0]).unwrap();
    }
    assert_eq!(member.version, 18);

    // Registration keeps its actor and key without a full provenance.
    let line = registered().ledger_line();
    assert_eq!(line.actor, "wechat:subscribe");
    assert_eq!(line.reason, "registered");
    assert_eq!(line.idempotency_key, prov().idempotency_key.to_string());
}

/// An event, its (points, held, cash) deltas, points after and balance after.
type LedgerCase = (MemberEvent, (i64, i64, i64), Option<i64>, Option<i64>);

#[test]
fn ledger_lines_sign_deltas_by_event_kind() {
    let release = MemberEvent::PointsHoldReleased {
        hold_id: reference("order-1"),
        points: pts(50),
        returned: vec![take(2, 10)],
        expired: vec![take(1, 40)],
        provenance: prov(),
        points_after: pts_bal(60),
        held_after: 0,
    };
    let cases: Vec<LedgerCase> = vec![
        (registered(), (0, 0, 0), None, None),
        (granted(1, 100, 100, None), (100, 0, 0), Some(100), None),
        (
            MemberEvent::PointsDeducted {
                points: pts(7),
                taken: vec![take(1, 7)],
                provenance: prov(),
                points_after: pts_bal(93),
            },
            (-7, 0, 0),
            Some(93),
            None,
        ),
        (spent(8, vec![take(1, 8)], 85), (-8, 0, 0), Some(85), None),
        (held("order-1", 50, vec![take(1, 50)], 35, 50), (-50, 50, 0), Some(35), None),
        (
            MemberEvent::HeldPointsSpent {
                hold_id: reference("order-1"),
                points: pts(50),
                provenance: prov(),
                points_after: pts_bal(35),
                held_after: 0,
            },
            (0, -50, 0),
            Some(35),
            None,
        ),
        // Only what went back to live lots is credited; the expired part vanishes.
        (release, (10, -50, 0), Some(60), None),
        (expired(vec![take(1, 9)], t0(), 26), (-9, 0, 0), Some(26), None),
        (deposited(100, 100), (0, 0, 100), None, Some(100)),
        (charged(30, 70), (0, 0, -30), None, Some(70)),
        (
            MemberEvent::RechargeCredited {
                amount_fen: fen(5),
                order_id: reference("order-9"),
                provenance: prov(),
                balance_after_fen: fen_bal(75),
            },
            (0, 0, 5),
            None,
            Some(75),
        ),
        (refunded(3, 30, 105), (0, 0, 30), None, Some(105)),
        (reversed("order-9", "refund-1", 5, 100), (0, 0, -5), None, Some(100)),
        (
            MemberEvent::RechargeReversalFlagged {
                amount_fen: fen(500),
                order_id: reference("order-9"),
                refund_no: reference("refund-2"),
                balance_fen: fen_bal(100),
                provenance: prov(),
            },
            (0, 0, 0),
            None,
            Some(100),
        ),
        (MemberEvent::MemberUnfollowed { unfollowed_at: t0(), provenance: prov() }, (0, 0, 0), None, None),
        (
            MemberEvent::MemberFollowed { attribution: Attribution::Direct, followed_at: t0(), provenance: prov() },
            (0, 0, 0),
            None,
            None,
        ),
        (
            MemberEvent::CardLevelChanged {
                from: CardLevel::standard(),
                to: CardLevel::parse("gold").unwrap(),
                source: LevelSource::Manual,
                provenance: prov(),
            },
            (0, 0, 0),
            None,
            None,
        ),
    ];
    for (event, (points, held, cash), points_after, balance_after) in cases {
        let line = event.ledger_line();
        let name = event.event_type();
        assert_eq!((line.points_delta, line.held_delta, line.cash_delta_fen), (points, held, cash), "{name}");
        assert_eq!(line.points_after, points_after, "{name}");
        assert_eq!(line.balance_after_fen, balance_after, "{name}");
    }
}

// ---------------------------------------------------------------- properties

mod properties {
    use proptest::prelude::*;

    use super::*;

    const HOLD_IDS: [&str; 4] = ["order-a", "order-b", "order-c", "order-d"];
    const LEVELS: [&str; 3] = ["standard", "silver", "gold"];
    const ORDERS: [&str; 2] = ["order-1", "order-2"];
    const REFUND_NOS: [&str; 3] = ["refund-a", "refund-b", "refund-c"];

    #[derive(Debug, Clone)]
    enum Op {
        Grant(i64, ExpiryPolicy),
        Deduct(i64),
        Spend(i64),
        Hold(usize, i64),
        SpendHeld(usize),
        Release(usize),
        Expire,
        Deposit(i64),
        Charge(i64),
        Recharge(i64),
        /// Index into the charges seen so far (one past the end: an unknown sequence).
        Refund(usize, i64),
        SetLevel(usize),
        Follow,
        Unfollow,
        /// Recharge order, refund number and amount.
        Reverse(usize, usize, i64),
    }

    /// Mostly small amounts, sometimes near the per-operation ceiling.
    fn amount() -> impl Strategy<Value = i64> {
        prop_oneof![
            8 => 1..=500i64,
            1 => (PointsAmount::MAX - 1_000)..=PointsAmount::MAX,
        ]
    }

    fn expiry() -> impl Strategy<Value = ExpiryPolicy> {
        prop_oneof![
            3 => Just(ExpiryPolicy::Never),
            4 => (1..=120u32).prop_map(|days| ExpiryPolicy::Days { days }),
            2 => Just(ExpiryPolicy::EndOfMonth),
            2 => Just(ExpiryPolicy::EndOfYear),
            1 => prop_oneof![Just(0), Just(EXPIRY_DAYS_MAX + 1)]
                .prop_map(|days| ExpiryPolicy::Days { days }),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        let hold_id = 0..HOLD_IDS.len();
        prop_oneof![
            4 => (amount(), expiry()).prop_map(|(p, e)| Op::Grant(p, e)),
            1 => amount().prop_map(Op::Deduct),
            3 => amount().prop_map(Op::Spend),
            3 => (hold_id.clone(), amount()).prop_map(|(h, p)| Op::Hold(h, p)),
            2 => hold_id.clone().prop_map(Op::SpendHeld),
            2 => hold_id.prop_map(Op::Release),
            2 => Just(Op::Expire),
            2 => amount().prop_map(Op::Deposit),
            3 => amount().prop_map(Op::Charge),
            1 => amount().prop_map(Op::Recharge),
            2 => (0..8usize, amount()).prop_map(|(c, a)| Op::Refund(c, a)),
            1 => (0..LEVELS.len()).prop_map(Op::SetLevel),
            1 => Just(Op::Follow),
            1 => Just(Op::Unfollow),
            2 => (0..ORDERS.len(), 0..REFUND_NOS.len(), amount()).prop_map(|(o, r, a)| Op::Reverse(o, r, a)),
        ]
    }

    /// Minutes to months between commands.
    fn step() -> impl Strategy<Value = i64> {
        prop_oneof![
            2 => 60..=3_600i64,
            2 => 3_600..=7 * 86_400i64,
            1 => 7 * 86_400..=120 * 86_400i64,
        ]
    }

    fn to_command(op: &Op, charges: &[u64]) -> MemberCommand {
        match op {
            Op::Grant(p, e) => grant(*p, *e),
            Op::Deduct(p) => deduct(*p),
            Op::Spend(p) => spend(*p),
            Op::Hold(h, p) => hold(HOLD_IDS[*h], *p),
            Op::SpendHeld(h) => spend_held(HOLD_IDS[*h]),
            Op::Release(h) => release(HOLD_IDS[*h]),
            Op::Expire => expire(),
            Op::Deposit(a) => deposit(*a),
            Op::Charge(a) => charge(*a),
            Op::Recharge(a) => MemberCommand::CreditRecharge {
                amount_fen: fen(*a),
                order_id: reference(ORDERS[(*a as usize) % ORDERS.len()]),
                provenance: prov(),
            },
            Op::Refund(c, a) => {
                let sequence = charges.get(c % (charges.len() + 1)).copied();
                refund(sequence.unwrap_or(u64::MAX), *a)
            }
            Op::SetLevel(l) => set_level(LEVELS[*l]),
            Op::Follow => follow(Attribution::Direct),
            Op::Unfollow => unfollow(),
            Op::Reverse(o, r, a) => reverse(ORDERS[*o], REFUND_NOS[*r], *a),
        }
    }

    fn assert_never_negative(member: &Member) {
        // The types keep balances non-negative and amounts positive; what is
        // left to check is how they relate.
        for (no, lot) in &member.lots {
            assert!(lot.remaining > PointsBalance::ZERO, "lot {no} is open with {}", lot.remaining);
            assert!(lot.remaining <= lot.granted, "lot {no} over its grant");
        }
        for (id, hold) in &member.holds {
            assert_eq!(hold.points.get(), hold.taken.iter().map(|t| t.points.get()).sum::<i64>(), "hold {id}");
        }
        for (order_id, recharge) in &member.credited_recharges {
            assert!(recharge.reversible_fen() >= 0, "recharge {order_id} over-reversed");
            assert_eq!(
                recharge.refunds.values().map(|a| a.get()).sum::<i64>(),
                recharge.reversed_fen.get() + recharge.flagged_fen.get(),
                "recharge {order_id}"
            );
        }
    }

    /// Runs the script; returns the live state and every event written.
    fn run(script: &[(Op, i64)]) -> (Member, Vec<MemberEvent>) {
        let mut member = given(vec![registered()]).member;
        let mut events = vec![registered()];
        let mut charges = Vec::new();
        let mut now = t0();
        for (op, step_secs) in script {
            now += Duration::seconds(*step_secs);
            let before = member.clone();
            let command = to_command(op, &charges);
            match member.handle(command.clone(), now) {
                Ok(new_events) => {
                    assert!(new_events.len() <= 1, "one command, at most one event");
                    // Deciding is deterministic: the same command gives the same events.
                    assert_eq!(member.handle(command, now), Ok(new_events.clone()));
                    for event in new_events {
                        member.apply(&event).unwrap();
                        if let MemberEvent::CashCharged { .. } = event {
                            charges.push(member.version);
                        }
                        let json = serde_json::to_value(&event).unwrap();
                        let back: MemberEvent = serde_json::from_value(json).unwrap();
                        assert_eq!(back, event, "event JSON round trip");
                        events.push(event);
                    }
                }
                Err(_) => assert_eq!(member, before, "a refused command changes nothing"),
            }
            assert_never_negative(&member);
        }
        (member, events)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn the_ledger_holds_under_random_commands(
            script in prop::collection::vec((op(), step()), 0..=60)
        ) {
            let (member, events) = run(&script);

            // (b) Replaying the events rebuilds the live state exactly.
            let mut replayed = Member::default();
            for event in &events {
                replayed.apply(event).unwrap();
            }
            prop_assert_eq!(&replayed, &member);
            prop_assert_eq!(member.version, events.len() as u64);

            // (c) Snapshots: the state survives a JSON round trip.
            let json = serde_json::to_string(&member).unwrap();
            let restored: Member = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(&restored, &member);

            // (d) The ledger explains every balance, line by line.
            let (mut points, mut held, mut cash) = (0i64, 0i64, 0i64);
            for event in &events {
                let line = event.ledger_line();
                points += line.points_delta;
                held += line.held_delta;
                cash += line.cash_delta_fen;
                if let Some(after) = line.points_after {
                    prop_assert_eq!(after, points, "{}", event.event_type());
                }
                if let Some(after) = line.balance_after_fen {
                    prop_assert_eq!(after, cash, "{}", event.event_type());
                }
            }
            prop_assert_eq!(points, member.points.get());
            prop_assert_eq!(held, member.held.get());
            prop_assert_eq!(cash, member.balance.get());
        }

        #[test]
        fn expiring_until_nothing_is_written_leaves_no_due_points(
            script in prop::collection::vec((op(), step()), 0..=60),
            later in 0..=400 * 86_400i64,
        ) {
            let (mut member, _) = run(&script);
            let total_secs: i64 = script.iter().map(|(_, s)| s).sum();
            let now = t0() + Duration::seconds(total_secs + later);
            let mut runs = 0;
            loop {
                let events = member.handle(expire(), now).unwrap();
                if events.is_empty() {
                    break;
                }
                events.iter().for_each(|e| member.apply(e).unwrap());
                runs += 1;
                prop_assert!(runs <= LOTS_MAX, "expiry does not converge");
            }
            prop_assert!(member.due_lots(now).is_empty());
            prop_assert_eq!(member.spendable_points(now), member.points.get());
        }
    }
}
