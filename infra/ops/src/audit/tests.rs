use chrono::Utc;
use serde::Serialize;
use sha2::{Digest, Sha256};
use wxcm_domain::member::{rules, MemberEvent};
use wxcm_domain::{DomainEventMeta, MemberId};

use super::*;
use chrono::TimeZone;
use uuid::Uuid;
use wxcm_domain::member::{CardLevel, Provenance, RegistrationSource};
use wxcm_domain::{Actor, AmountFen, BalanceFen, CardNumber, IdempotencyKey, Reference};

fn tenant() -> TenantId {
    TenantId::parse("acme").unwrap()
}

fn member() -> MemberId {
    MemberId::from_uuid(Uuid::from_u128(42))
}

fn provenance() -> Provenance {
    Provenance {
        actor: Actor::Staff { username: "clerk".into() },
        reason: Reference::parse("counter").unwrap(),
        reference: None,
        idempotency_key: IdempotencyKey::parse("key-00000001").unwrap(),
    }
}

fn registered() -> MemberEvent {
    MemberEvent::MemberRegistered {
        member_id: member(),
        tenant_id: tenant(),
        card_no: CardNumber::from_serial(1).unwrap(),
        openid: None,
        source: RegistrationSource::Staff,
        card_level: CardLevel::standard(),
        registered_at: Utc.with_ymd_and_hms(2025, 3, 1, 8, 0, 0).unwrap(),
        actor: Actor::Staff { username: "clerk".into() },
        idempotency_key: IdempotencyKey::parse("key-00000000").unwrap(),
        attribution: None,
    }
}

fn deposited(amount: i64, after: i64) -> MemberEvent {
    MemberEvent::CashDeposited {
        amount_fen: AmountFen::new(amount).unwrap(),
        provenance: provenance(),
        balance_after_fen: BalanceFen::new(after).unwrap(),
    }
}

fn charged(amount: i64, after: i64) -> MemberEvent {
    MemberEvent::CashCharged {
        amount_fen: AmountFen::new(amount).unwrap(),
        provenance: provenance(),
        balance_after_fen: BalanceFen::new(after).unwrap(),
    }
}

/// Rows as the store would hold them, chained by the Rust implementation.
fn rows(events: &[MemberEvent]) -> Vec<StoredEvent> {
    rows_of("member", &member().to_string(), events)
}

fn rows_of<E: DomainEventMeta + Serialize>(aggregate_type: &str, id: &str, events: &[E]) -> Vec<StoredEvent> {
    let mut rows: Vec<StoredEvent> = Vec::new();
    for (index, event) in events.iter().enumerate() {
        let sequence = index as i64 + 1;
        let mut row = StoredEvent {
            tenant_id: tenant().to_string(),
            aggregate_type: aggregate_type.into(),
            aggregate_id: id.into(),
            sequence,
            event_id: Uuid::from_u128(sequence as u128),
            recorded_at: Utc.with_ymd_and_hms(2025, 3, 1, 9, 0, 0).unwrap(),
            event_type: event.event_type().into(),
            event_version: "1".into(),
            payload_text: serde_json::to_string(event).unwrap(),
            metadata_text: r#"{"tenant_id": "acme"}"#.into(),
            prev_hash: rows.last().map_or(hashchain::GENESIS_HASH.to_vec(), |r| r.hash.clone()),
            hash: Vec::new(),
        };
        row.hash = hashchain::chain_hash(&row.prev_hash, &hashchain::canonical_bytes(&row)).to_vec();
        rows.push(row);
    }
    rows
}

fn codes(violations: &[Violation]) -> Vec<(Option<i64>, &'static str)> {
    violations.iter().map(|v| (v.sequence, v.code)).collect()
}

#[test]
fn yuan_is_formatted_with_integer_arithmetic() {
    assert_eq!(format_yuan(0), "0.00");
    assert_eq!(format_yuan(1), "0.01");
    assert_eq!(format_yuan(99), "0.99");
    assert_eq!(format_yuan(100), "1.00");
    assert_eq!(format_yuan(123_456), "1234.56");
    assert_eq!(format_yuan(-5), "-0.05");
    assert_eq!(format_yuan(-150), "-1.50");
    assert_eq!(format_yuan(i64::MAX), "92233720368547758.07");
    assert_eq!(format_yuan(i64::MIN), "-92233720368547758.08");
    assert_eq!(format_yuan_signed(150), "+1.50");
    assert_eq!(format_yuan_signed(0), "0.00");
    assert_eq!(format_yuan_signed(-150), "-1.50");
}

#[test]
fn running_totals_accept_consistent_lines() {
    let mut totals = RunningTotals::default();
    assert!(totals.check(&deposited(500, 500).ledger_line()).is_empty());
    assert!(totals.check(&charged(200, 300).ledger_line()).is_empty());
    assert_eq!(totals, RunningTotals { points: 0, held: 0, cash_fen: 300 });
}

#[test]
fn running_totals_report_a_wrong_stated_balance_once() {
    let mut totals = RunningTotals::default();
    assert!(totals.check(&deposited(500, 500).ledger_line()).is_empty());
    let wrong = totals.check(&deposited(100, 9_999).ledger_line());
    assert_eq!(wrong, [BalanceMismatch { field: "balance_after_fen", stated: 9_999, recomputed: 600 }]);
    assert_eq!(wrong[0].to_string(), "balance_after_fen is 9999 but the deltas before it add up to 600");
    // The next line follows the stated value: one altered event, one report.
    assert!(totals.check(&deposited(1, 10_000).ledger_line()).is_empty());
}

#[test]
fn intact_stream_replays_without_violations() {
    let rows = rows(&[registered(), deposited(500, 500), charged(150, 350)]);
    let report = member_report(&tenant(), &member(), &rows);
    assert!(report.ok, "{:?}", report.violations);
    let balances = report.balances.unwrap();
    assert_eq!((balances.balance_fen, balances.balance_yuan.as_str()), (350, "3.50"));
    assert_eq!((balances.replayed_through_sequence, balances.complete), (3, true));
    assert_eq!(balances.card_no.as_deref(), Some(CardNumber::from_serial(1).unwrap().as_str()));
    assert_eq!(report.entries[2].cash_delta_fen, -150);
    assert_eq!(report.entries[2].cash_delta_yuan, "-1.50");
    assert_eq!(report.head.unwrap().sequence, 3);
}

#[test]
fn altered_amount_is_a_hash_and_balance_violation_at_its_sequence() {
    let mut rows = rows(&[registered(), deposited(500, 500), deposited(100, 600)]);
    rows[1].payload_text = serde_json::to_string(&deposited(90_000, 500)).unwrap();
    let report = member_report(&tenant(), &member(), &rows);
    assert!(!report.ok);
    assert_eq!(codes(&report.violations), [(Some(2), "hash_mismatch"), (Some(2), "balance_after_mismatch")]);
    assert!(report.violations[0].to_string().starts_with(&format!("member/{} seq 2: hash mismatch", member())));
    // The aggregate refuses the altered figure too: the same finding names the rule.
    assert_eq!(report.violations[1].rule, Some(rules::BALANCE_AFTER));
    assert!(report.violations[1].message.contains("later events not replayed"), "{}", report.violations[1]);
    assert!(!report.balances.unwrap().complete);
}

#[test]
fn an_inconsistent_event_in_an_intact_chain_is_reported_with_its_rule() {
    // The chain is intact: only the domain sees that the charge exceeds the balance.
    let rows = rows(&[registered(), deposited(500, 500), charged(600, 0), deposited(1, 1)]);
    let report = member_report(&tenant(), &member(), &rows);
    assert_eq!(codes(&report.violations), [(Some(3), "balance_after_mismatch"), (Some(3), "replay_failed")]);
    let refused = &report.violations[1];
    assert_eq!(
        (refused.stream.clone(), refused.rule),
        (format!("member/{}", member()), Some(rules::BALANCE_COVERS_DEBIT))
    );
    assert!(
        refused.to_string().starts_with(&format!(
            "member/{} seq 3: replay failed at seq 3: invariant member.balance_covers_debit broken",
            member()
        )),
        "{refused}"
    );
    let json = serde_json::to_value(refused).unwrap();
    assert_eq!((json["sequence"].as_i64(), json["rule"].as_str()), (Some(3), Some("member.balance_covers_debit")));
    let balances = report.balances.unwrap();
    assert_eq!((balances.replayed_through_sequence, balances.complete, balances.balance_fen), (2, false, 500));
}

#[test]
fn payment_and_tenant_streams_are_replayed_with_their_aggregates() {
    use wxcm_domain::tenant::{self, TenantEvent};
    let created = |name: &str| TenantEvent::TenantCreated {
        tenant_id: tenant(),
        name: name.into(),
        created_at: Utc.with_ymd_and_hms(2025, 3, 1, 8, 0, 0).unwrap(),
        actor: Actor::Admin { username: "root".into() },
    };
    assert_eq!(check_stream(&rows_of("tenant", "acme", &[created("Acme")])), []);
    let twice = check_stream(&rows_of("tenant", "acme", &[created("Acme"), created("Again")]));
    assert_eq!(codes(&twice), [(Some(2), "replay_failed")]);
    assert_eq!(twice[0].rule, Some(tenant::rules::CREATED_ONCE));
    assert_eq!(twice[0].stream, "tenant/acme");

    use wxcm_domain::payment::{rules as payment_rules, CloseReason, PaymentEvent};
    let closed = PaymentEvent::PaymentOrderClosed {
        reason: CloseReason::Expired,
        closed_at: Utc.with_ymd_and_hms(2025, 3, 1, 8, 0, 0).unwrap(),
    };
    let orphan = check_stream(&rows_of("payment_order", "rc0000000001", &[closed]));
    assert_eq!(codes(&orphan), [(Some(1), "replay_failed")]);
    assert_eq!(orphan[0].rule, Some(payment_rules::CREATED_FIRST));
}

#[test]
fn mall_order_and_product_streams_are_replayed_with_their_aggregates() {
    use wxcm_domain::mall::{rules as mall_rules, MallOrderEvent, ProductEvent};
    let at = Utc.with_ymd_and_hms(2025, 3, 1, 8, 0, 0).unwrap();
    let paid = MallOrderEvent::MallOrderPaid { points: None, cash: None, paid_at: at };
    let orphan = check_stream(&rows_of("mall_order", "00000000-0000-0000-0000-000000000001", &[paid]));
    assert_eq!(codes(&orphan), [(Some(1), "replay_failed")]);
    assert_eq!(orphan[0].rule, Some(mall_rules::ORDER_EXISTS));
    let switched = ProductEvent::ProductSaleSwitched {
        on_sale: false,
        actor: Actor::Admin { username: "a".into() },
        switched_at: at,
    };
    let orphan = check_stream(&rows_of("mall_product", "00000000-0000-0000-0000-000000000002", &[switched]));
    assert_eq!(codes(&orphan), [(Some(1), "replay_failed")]);
    assert_eq!(orphan[0].rule, Some(mall_rules::PRODUCT_EXISTS));
}

#[test]
fn distributor_streams_are_replayed_with_their_aggregate() {
    use wxcm_domain::distribution::{rules as distribution_rules, DistributorEvent, EnrolmentRoute};
    let at = Utc.with_ymd_and_hms(2025, 3, 1, 8, 0, 0).unwrap();
    let admin = Actor::Admin { username: "boss".into() };
    let id = "00000000-0000-0000-0000-000000000003";
    let enrolled = DistributorEvent::DistributorEnrolled {
        tenant_id: tenant(),
        member_id: member(),
        route: EnrolmentRoute::Designated,
        actor: admin.clone(),
        enrolled_at: at,
    };
    let suspended = DistributorEvent::DistributorSuspended {
        reason: Reference::parse("review").unwrap(),
        actor: admin.clone(),
        suspended_at: at,
    };
    assert_eq!(check_stream(&rows_of("distributor", id, &[enrolled.clone(), suspended])), []);
    // Approving an active distributor is no step the aggregate knows.
    let approved = DistributorEvent::DistributorApproved { actor: admin, approved_at: at };
    let broken = check_stream(&rows_of("distributor", id, &[enrolled, approved]));
    assert_eq!(codes(&broken), [(Some(2), "replay_failed")]);
    assert_eq!(broken[0].rule, Some(distribution_rules::DISTRIBUTOR_STANDING));
}

#[test]
fn broken_invariant_stops_replay_without_crashing() {
    // A take from a lot that never existed breaks `Member::apply`'s assertion.
    let spent = MemberEvent::PointsSpent {
        points: wxcm_domain::PointsAmount::new(5).unwrap(),
        purpose: wxcm_domain::member::SpendPurpose::Mall,
        taken: vec![wxcm_domain::member::LotTake { lot_no: 7, points: wxcm_domain::PointsAmount::new(5).unwrap() }],
        provenance: provenance(),
        points_after: wxcm_domain::PointsBalance::new(0).unwrap(),
    };
    let rows = rows(&[registered(), deposited(500, 500), spent, deposited(1, 501)]);
    let replay = replay_member(&rows);
    assert_eq!(
        codes(&replay.violations),
        [(Some(3), "points_after_mismatch"), (Some(3), "replay_failed")],
        "{:?}",
        replay.violations
    );
    assert!(replay.violations[1].message.starts_with("replay failed at seq 3"));
    assert_eq!(replay.violations[1].rule, Some(rules::LOT_KNOWN));
    assert!(replay.violations[1].message.contains("member.lot_known"), "{}", replay.violations[1].message);
    assert_eq!(replay.entries.len(), 4);
    assert_eq!((replay.balances.replayed_through_sequence, replay.balances.complete), (2, false));
    assert_eq!(replay.balances.balance_fen, 500);
}

#[test]
fn undecodable_payload_and_wrong_event_type_are_reported() {
    let mut rows = rows(&[registered(), deposited(500, 500), deposited(1, 501)]);
    rows[1].event_type = "CashCharged".into();
    rows[2].payload_text = r#"{"CashDeposited": {"amount_fen": -1}}"#.into();
    let replay = replay_member(&rows);
    assert_eq!(codes(&replay.violations), [(Some(2), "event_type_mismatch"), (Some(3), "undecodable_payload")]);
    assert!(!replay.entries[2].decoded);
}

#[test]
fn registration_of_another_member_is_reported() {
    let other = MemberEvent::MemberRegistered {
        member_id: MemberId::from_uuid(Uuid::from_u128(7)),
        tenant_id: tenant(),
        card_no: CardNumber::from_serial(2).unwrap(),
        openid: None,
        source: RegistrationSource::Staff,
        card_level: CardLevel::standard(),
        registered_at: Utc.with_ymd_and_hms(2025, 3, 1, 8, 0, 0).unwrap(),
        actor: Actor::Staff { username: "clerk".into() },
        idempotency_key: IdempotencyKey::parse("key-00000000").unwrap(),
        attribution: None,
    };
    assert_eq!(codes(&replay_member(&rows(&[other])).violations), [(Some(1), "registration_mismatch")]);
}

#[test]
fn stream_of_another_tenant_is_not_found() {
    let rows = rows(&[registered()]);
    let report = member_report(&TenantId::parse("other").unwrap(), &member(), &rows);
    assert!(!report.ok && !report.found);
    assert_eq!(codes(&report.violations), [(None, "not_found")]);
    assert!(report.violations[0].to_string().contains("not found in tenant other"));
    assert!(!member_report(&tenant(), &member(), &[]).found);
}

#[test]
fn digest_orders_streams_bytewise_and_covers_heads() {
    let head = |t: &str, id: &str, sequence: i64| StreamHead {
        aggregate_type: t.into(),
        aggregate_id: id.into(),
        sequence,
        hash: "00ff".into(),
    };
    let a = [head("member", "b", 2), head("member", "a", 1), head("tenant", "acme", 3)];
    let b = [head("tenant", "acme", 3), head("member", "a", 1), head("member", "b", 2)];
    assert_eq!(tenant_digest(&a), tenant_digest(&b));
    let expected = hex::encode(Sha256::digest(b"member\ta\t1\t00ff\nmember\tb\t2\t00ff\ntenant\tacme\t3\t00ff\n"));
    assert_eq!(tenant_digest(&a), expected);
    assert_ne!(tenant_digest(&a[..2]), expected);
    assert_eq!(tenant_digest(&[]), hex::encode(Sha256::digest(b"")));
}

// ---------- audit commissions

fn commission_events() -> Vec<wxcm_domain::distribution::CommissionAccountEvent> {
    use wxcm_domain::distribution::{
        CommissionAccount, CommissionAccountCommand as C, CommissionKey, CommissionLevel, CommissionRule, RateBps,
        WithdrawalId, WithdrawalPolicy,
    };
    use wxcm_domain::mall::{MallOrderId, Quantity};
    use wxcm_domain::EventSourced;
    let t0 = Utc.with_ymd_and_hms(2025, 3, 1, 9, 0, 0).unwrap();
    let key = CommissionKey { order_id: MallOrderId::from_uuid(Uuid::from_u128(7)), level: CommissionLevel::First };
    let withdrawal_id = WithdrawalId::from_uuid(Uuid::from_u128(9));
    let policy = WithdrawalPolicy { min_amount_fen: AmountFen::new(1).unwrap(), fee: RateBps::new(0).unwrap() };
    let commands = [
        C::Accrue {
            tenant_id: tenant(),
            distributor_id: member(),
            buyer_id: MemberId::from_uuid(Uuid::from_u128(43)),
            key,
            basis_fen: AmountFen::new(10_000).unwrap(),
            quantity: Quantity::new(1).unwrap(),
            rule: CommissionRule::Rate { bps: RateBps::new(1_000).unwrap() },
            nearer_levels_fen: 0,
        },
        C::Settle { key, delivered_at: Some(t0), hold_days: 0, refund_open: false },
        C::RequestWithdrawal {
            withdrawal_id,
            amount_fen: AmountFen::new(1_000).unwrap(),
            policy,
            actor: Actor::Member { member_id: member() },
        },
        C::Reverse { key, refund: Reference::parse("refund").unwrap() },
    ];
    let mut account = CommissionAccount::default();
    let mut events = Vec::new();
    for command in commands {
        for event in account.handle(command, t0).unwrap() {
            account.apply(&event).unwrap();
            events.push(event);
        }
    }
    events
}

#[test]
fn a_commission_account_is_explained_event_by_event_and_tampering_is_found() {
    let distributor = member();
    let id = wxcm_domain::distribution::CommissionAccountId::for_distributor(&tenant(), distributor).to_string();
    let events = commission_events();
    let report = commission_report(&tenant(), distributor, &rows_of("commission_account", &id, &events));
    assert!(report.ok, "{:?}", report.violations);
    assert_eq!(report.lines.len(), 5);
    let last = report.lines.last().unwrap();
    // Withdrawn before the claw-back: the shortfall is recorded debt.
    assert_eq!((last.event_type.as_str(), last.withdrawable_fen, last.debt_fen), ("CommissionClawedBack", 0, 1_000));
    assert_eq!((last.figures.settled, last.figures.in_flight, last.figures.clawed_back), (1_000, 1_000, 1_000));

    // A settlement that states another balance is refused at replay.
    let mut tampered = rows_of("commission_account", &id, &events);
    tampered[2].payload_text =
        tampered[2].payload_text.replace("\"withdrawable_after_fen\":1000", "\"withdrawable_after_fen\":5000");
    let report = commission_report(&tenant(), distributor, &tampered);
    assert!(!report.ok);
    assert!(report.violations.iter().any(|v| v.sequence == Some(3)), "{:?}", report.violations);

    // Another tenant's distributor has no account here.
    let other = TenantId::parse("other").unwrap();
    assert!(!commission_report(&other, distributor, &[]).ok);
}
