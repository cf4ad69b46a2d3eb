//! The cached event store across nodes: stale caches are caught by the
//! optimistic lock, snapshots make cold loads short, state always equals the
//! fold of the events.

use std::sync::Arc;

use futures::future::join_all;
use wxcm_commands::members::{self, RegisterRequest};
use wxcm_commands::ports::App;
use wxcm_commands::{tenants, CommandContext};
use wxcm_domain::member::{CardLevel, Member, MemberCommand, Provenance, RegistrationSource};
use wxcm_domain::{Actor, AmountFen, EventSourced, IdempotencyKey, MemberId, Reference, TenantId};
use wxcm_server::app::Role;
use wxcm_tests::{build, fresh_settings, TestClock};

fn ctx(tenant: &TenantId) -> CommandContext {
    let key = IdempotencyKey::parse(&format!("test-{}", uuid::Uuid::new_v4())).unwrap();
    CommandContext::new(tenant.clone(), key, "test".into())
}

async fn deposit(app: &App, tenant: &TenantId, id: MemberId, fen: i64) {
    let c = ctx(tenant);
    let command = MemberCommand::DepositCash {
        amount_fen: AmountFen::new(fen).unwrap(),
        provenance: Provenance {
            actor: Actor::Staff { username: "s".into() },
            reason: Reference::parse("deposit").unwrap(),
            reference: None,
            idempotency_key: c.idempotency_key.clone(),
        },
    };
    members::execute(app, tenant, id, command.clone(), &command, &c).await.unwrap();
}

#[tokio::test]
async fn two_nodes_writing_one_member_stay_consistent() {
    let settings = fresh_settings(1).await;
    let clock = Arc::new(TestClock::default());
    let node_a = build(settings.clone(), Role::Scheduler, clock.clone()).await;
    let node_b = build(settings.clone(), Role::Scheduler, clock.clone()).await;
    let tenant = TenantId::parse("two-nodes").unwrap();
    tenants::create(&node_a.app, &tenant, "Two Nodes", Actor::Admin { username: "t".into() }, &ctx(&tenant))
        .await
        .unwrap();
    let request =
        RegisterRequest { openid: None, source: RegistrationSource::Staff, card_level: CardLevel::standard() };
    let (view, _) =
        members::register(&node_a.app, &tenant, request, Actor::Staff { username: "s".into() }, &ctx(&tenant))
            .await
            .unwrap();
    let id = view.member_id;
    // Both nodes cache the member, then write alternately and concurrently:
    // each write makes the other node's cache stale.
    let writes = (0..40).map(|i| {
        let (app, tenant) = (if i % 2 == 0 { node_a.app.clone() } else { node_b.app.clone() }, tenant.clone());
        async move { deposit(&app, &tenant, id, 1 + i).await }
    });
    join_all(writes).await;
    let expected: i64 = (0..40).map(|i| 1 + i).sum();
    assert_eq!(members::get(&node_a.app, &tenant, id).await.unwrap().balance_fen, expected);
    assert_eq!(members::get(&node_b.app, &tenant, id).await.unwrap().balance_fen, expected);
    assert_eq!(members::get(&node_b.app, &tenant, id).await.unwrap().version, 41);
}

#[tokio::test]
async fn cold_loads_use_snapshots_and_equal_the_full_fold() {
    let settings = fresh_settings(1).await;
    let clock = Arc::new(TestClock::default());
    let node = build(settings.clone(), Role::Scheduler, clock.clone()).await;
    let tenant = TenantId::parse("snapshots").unwrap();
    tenants::create(&node.app, &tenant, "Snapshots", Actor::Admin { username: "t".into() }, &ctx(&tenant))
        .await
        .unwrap();
    let request =
        RegisterRequest { openid: None, source: RegistrationSource::Staff, card_level: CardLevel::standard() };
    let (view, _) =
        members::register(&node.app, &tenant, request, Actor::Staff { username: "s".into() }, &ctx(&tenant))
            .await
            .unwrap();
    let id = view.member_id;
    for i in 0..249 {
        deposit(&node.app, &tenant, id, 1 + (i % 7)).await;
    }
    let mut db = sqlx::PgConnection::connect_with(&settings.shards["s0"].admin_url.parse().unwrap()).await.unwrap();
    let snapshot_seq: i64 = sqlx::query_scalar(
        "SELECT sequence FROM aggregate_snapshots WHERE aggregate_type = 'member' AND aggregate_id = $1",
    )
    .bind(id.to_string())
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(snapshot_seq, 200, "a snapshot every 100 events");

    // A fresh node (empty cache) loads snapshot + tail; it must equal the full fold.
    let fresh = build(settings.clone(), Role::Scheduler, clock.clone()).await;
    let loaded = members::get(&fresh.app, &tenant, id).await.unwrap();
    let payloads: Vec<serde_json::Value> = sqlx::query_scalar(
        "SELECT payload FROM events WHERE aggregate_type = 'member' AND aggregate_id = $1 ORDER BY sequence",
    )
    .bind(id.to_string())
    .fetch_all(&mut db)
    .await
    .unwrap();
    let mut folded = Member::default();
    for p in payloads {
        folded.apply(&serde_json::from_value(p).unwrap()).unwrap();
    }
    assert_eq!(loaded.version, 250);
    assert_eq!(loaded.balance_fen, folded.balance.get());
    assert_eq!(loaded.version, folded.version);

    // A snapshot of another state shape is ignored, not trusted.
    sqlx::query("UPDATE aggregate_snapshots SET state_version = state_version + 1").execute(&mut db).await.unwrap();
    let other = build(settings.clone(), Role::Scheduler, clock.clone()).await;
    assert_eq!(members::get(&other.app, &tenant, id).await.unwrap().balance_fen, folded.balance.get());
}

use sqlx::Connection;
