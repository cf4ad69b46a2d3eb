use chrono::Utc;
use uuid::Uuid;
use wxcm_domain::member::MemberEvent;
use wxcm_domain::DomainEventMeta;

use super::*;

fn stored(sequence: i64, event: &MemberEvent) -> StoredMemberEvent {
    StoredMemberEvent {
        aggregate_id: "m".into(),
        tenant_id: "t".into(),
        sequence,
        event_id: Uuid::nil(),
        event_type: event.event_type().into(),
        event_version: event.event_version().into(),
        recorded_at: Utc::now(),
        payload: serde_json::to_string(event).unwrap_or_default(),
    }
}

#[test]
fn copy_text_escapes_separators_and_nulls() {
    assert_eq!(escape("a\tb\\c\nd\re"), "a\\tb\\\\c\\nd\\re");
    assert_eq!(nullable(None), "\\N");
    assert_eq!(nullable(Some("x")), "x");
}

#[test]
fn index_shape_ignores_name_and_table() {
    let live = "CREATE UNIQUE INDEX rm_members_pkey ON public.rm_members USING btree (tenant_id, member_id)";
    let new =
        "CREATE UNIQUE INDEX rm_members_rebuild_pkey ON public.rm_members_rebuild USING btree (tenant_id, member_id)";
    assert_eq!(index_shape(live), index_shape(new));
    let plain = "CREATE INDEX x ON public.rm_members USING btree (tenant_id, member_id)";
    assert_ne!(index_shape(live), index_shape(plain));
}

#[test]
fn an_update_before_the_registration_is_refused() {
    let event = MemberEvent::CardLevelChanged {
        from: wxcm_domain::member::CardLevel::standard(),
        to: wxcm_domain::member::CardLevel::standard(),
        source: Default::default(),
        provenance: wxcm_domain::member::Provenance {
            actor: wxcm_domain::Actor::Admin { username: "a".into() },
            reason: wxcm_domain::Reference::parse("r").expect("reason"),
            reference: None,
            idempotency_key: wxcm_domain::IdempotencyKey::parse("key-0001").expect("key"),
        },
    };
    let mut row = None;
    assert!(fold_event(&mut row, &stored(2, &event), &event).is_err());
    assert!(row.is_none());
}

#[test]
fn figures_come_from_the_events_and_each_money_event_is_a_ledger_line() {
    use wxcm_domain::member::{CardLevel, Provenance, RegistrationSource};
    use wxcm_domain::{Actor, AmountFen, BalanceFen, CardNumber, IdempotencyKey, MemberId, Reference, TenantId};
    let key = || IdempotencyKey::parse("key-0001").expect("key");
    let registered = MemberEvent::MemberRegistered {
        member_id: MemberId::new_random(),
        tenant_id: TenantId::parse("t-1").expect("tenant"),
        card_no: CardNumber::from_serial(1).expect("card"),
        openid: None,
        source: RegistrationSource::Staff,
        card_level: CardLevel::standard(),
        registered_at: Utc::now(),
        actor: Actor::Admin { username: "a".into() },
        idempotency_key: key(),
        attribution: None,
    };
    let deposited = MemberEvent::CashDeposited {
        amount_fen: AmountFen::new(250).expect("fen"),
        provenance: Provenance {
            actor: Actor::Admin { username: "a".into() },
            reason: Reference::parse("r").expect("reason"),
            reference: None,
            idempotency_key: key(),
        },
        balance_after_fen: BalanceFen::new(250).expect("balance"),
    };
    let mut row = None;
    assert_eq!(fold_event(&mut row, &stored(1, &registered), &registered), Ok(None));
    let line = fold_event(&mut row, &stored(2, &deposited), &deposited).expect("folds").expect("a ledger line");
    assert_eq!((line.sequence, line.cash_delta_fen, line.balance_after_fen), (2, 250, 250));
    let member = row.expect("row");
    assert_eq!((member.balance_fen, member.version, member.source.as_str()), (250, 2, "staff"));
    // Out of order: the row must be exactly one event behind.
    assert!(fold_event(&mut Some(member), &stored(4, &deposited), &deposited).is_err());
}
