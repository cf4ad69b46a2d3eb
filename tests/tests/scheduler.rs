//! The scheduler role: one active instance per shard, every due points lot
//! expired exactly once, nothing lost across a restart.

use std::sync::Arc;

use chrono::Duration;
use wxcm_commands::members::{self, RegisterRequest};
use wxcm_commands::ports::App;
use wxcm_commands::{tenants, CommandContext};
use wxcm_domain::member::{CardLevel, ExpiryPolicy, MemberCommand, PointsSource, Provenance, RegistrationSource};
use wxcm_domain::{Actor, IdempotencyKey, MemberId, OpenId, PointsAmount, Reference, TenantId};
use wxcm_server::app::Role;
use wxcm_tests::{build, fresh_settings, TestClock};

fn ctx(tenant: &TenantId) -> CommandContext {
    let key = IdempotencyKey::parse(&format!("test-{}", uuid::Uuid::new_v4())).unwrap();
    CommandContext::new(tenant.clone(), key, "test".into())
}

async fn member_with_expiring_points(app: &App, tenant: &TenantId, n: usize) -> MemberId {
    let c = ctx(tenant);
    let request = RegisterRequest {
        openid: Some(OpenId::parse(&format!("oWx_sched_{n:04}")).unwrap()),
        source: RegistrationSource::Subscribe,
        card_level: CardLevel::standard(),
    };
    let (view, _) = members::register(app, tenant, request, Actor::Wechat { source: "test".into() }, &c).await.unwrap();
    for (points, days) in [(30, 1), (20, 1), (7, 400)] {
        let c = ctx(tenant);
        let command = MemberCommand::GrantPoints {
            points: PointsAmount::new(points).unwrap(),
            source: PointsSource::Campaign,
            expiry: ExpiryPolicy::Days { days },
            provenance: Provenance {
                actor: Actor::System { job: "test".into() },
                reason: Reference::parse("campaign").unwrap(),
                reference: None,
                idempotency_key: c.idempotency_key.clone(),
            },
        };
        members::execute(app, tenant, view.member_id, command.clone(), &command, &c).await.unwrap();
    }
    view.member_id
}

#[tokio::test]
async fn two_schedulers_on_one_shard_expire_each_due_lot_exactly_once() {
    let settings = fresh_settings(1).await;
    let clock = Arc::new(TestClock::default());
    let a = build(settings.clone(), Role::Scheduler, clock.clone()).await;
    let b = build(settings.clone(), Role::Scheduler, clock.clone()).await;
    let tenant = TenantId::parse("mall-one").unwrap();
    tenants::create(&a.app, &tenant, "Mall One", Actor::Admin { username: "t".into() }, &ctx(&tenant)).await.unwrap();
    let mut ids = Vec::new();
    for n in 0..12 {
        ids.push(member_with_expiring_points(&a.app, &tenant, n).await);
    }

    let mut sched_a = a.shard_schedulers().pop().unwrap();
    let mut sched_b = b.shard_schedulers().pop().unwrap();
    // Nothing is due yet.
    let first = sched_a.tick().await.unwrap();
    assert_eq!(first.map(|r| r.items), Some(0));
    assert!(sched_a.is_leader());
    assert!(sched_b.tick().await.unwrap().is_none(), "b waits while a leads");

    clock.advance(Duration::days(2));
    // Both try, concurrently and repeatedly; only the leader works.
    for _ in 0..3 {
        let (ra, rb) = tokio::join!(sched_a.tick(), sched_b.tick());
        ra.unwrap();
        assert!(rb.unwrap().is_none());
    }

    let mut db = sqlx::PgConnection::connect_with(&settings.shards["s0"].admin_url.parse().unwrap()).await.unwrap();
    for id in &ids {
        let expired: Vec<serde_json::Value> = sqlx::query_scalar(
            "SELECT payload FROM events WHERE aggregate_id = $1 AND event_type = 'PointsExpired' ORDER BY sequence",
        )
        .bind(id.to_string())
        .fetch_all(&mut db)
        .await
        .unwrap();
        assert_eq!(expired.len(), 1, "member {id}: one expiry event");
        assert_eq!(expired[0]["PointsExpired"]["points"], 50);
        let view = members::get(&a.app, &tenant, *id).await.unwrap();
        assert_eq!(view.points, 7, "the 400-day lot remains");
    }
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM due_work WHERE due_at <= now() + interval '2 days'")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(left, 0, "all due work done");

    // The leader goes away: b takes over and finds nothing left to do twice.
    sched_a.resign().await;
    clock.advance(Duration::days(500));
    let report = sched_b.tick().await.unwrap().expect("b is leader now");
    assert_eq!(report.items, 12, "the 400-day lots are now due");
    for id in &ids {
        assert_eq!(members::get(&b.app, &tenant, *id).await.unwrap().points, 0);
    }
}

#[tokio::test]
async fn work_done_but_not_marked_is_not_done_twice() {
    let settings = fresh_settings(1).await;
    let clock = Arc::new(TestClock::default());
    let a = build(settings.clone(), Role::Scheduler, clock.clone()).await;
    let tenant = TenantId::parse("mall-two").unwrap();
    tenants::create(&a.app, &tenant, "Mall Two", Actor::Admin { username: "t".into() }, &ctx(&tenant)).await.unwrap();
    let id = member_with_expiring_points(&a.app, &tenant, 1).await;
    clock.advance(Duration::days(2));
    // Simulate a crash after the expiry committed but before the item was marked:
    // run the same command the scheduler would, outside it.
    let c = ctx(&tenant);
    let command = MemberCommand::ExpirePoints {
        provenance: Provenance {
            actor: Actor::System { job: "manual".into() },
            reason: Reference::parse("points expiry").unwrap(),
            reference: None,
            idempotency_key: c.idempotency_key.clone(),
        },
    };
    members::execute(&a.app, &tenant, id, command.clone(), &command, &c).await.unwrap();
    let mut sched = a.shard_schedulers().pop().unwrap();
    let report = sched.tick().await.unwrap().unwrap();
    assert_eq!(report.items, 2);
    assert_eq!(report.events_written, 0, "nothing left to expire");
    assert_eq!(members::get(&a.app, &tenant, id).await.unwrap().points, 7);
}

use sqlx::Connection;

#[tokio::test]
async fn failing_due_work_backs_off_and_does_not_block_the_rest() {
    use wxcm_commands::ports::Clock;
    let settings = fresh_settings(1).await;
    let clock = Arc::new(TestClock::default());
    let a = build(settings.clone(), Role::Scheduler, clock.clone()).await;
    let tenant = TenantId::parse("mall-backoff").unwrap();
    tenants::create(&a.app, &tenant, "Mall", Actor::Admin { username: "t".into() }, &ctx(&tenant)).await.unwrap();
    let member = member_with_expiring_points(&a.app, &tenant, 0).await;

    // A full batch of items that always fail, due before the member's lots.
    let mut db = sqlx::PgConnection::connect_with(&settings.shards["s0"].admin_url.parse().unwrap()).await.unwrap();
    let batch = i64::from(wxcm_commands::scheduler::DUE_BATCH_MAX);
    sqlx::query(
        "INSERT INTO due_work (tenant_id, aggregate_type, aggregate_id, kind, due_at, source_event_id)
         SELECT $1, 'member', 'nobody-' || g, 'no-such-kind', $2, gen_random_uuid() FROM generate_series(1, $3) g",
    )
    .bind(tenant.as_str())
    .bind(clock.now() + Duration::hours(1))
    .bind(batch)
    .execute(&mut db)
    .await
    .unwrap();

    clock.advance(Duration::days(2));
    let mut scheduler = a.shard_schedulers().pop().unwrap();
    let first = scheduler.tick().await.unwrap().expect("leader");
    assert_eq!((first.items, first.failed), (batch as u32, batch as u32), "the failing items fill the first batch");
    let second = scheduler.tick().await.unwrap().expect("leader");
    assert_eq!(second.failed, 0, "failed items wait for their retry");
    assert!(second.events_written >= 1, "the lots behind them expire: {second:?}");
    let expired: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_id = $1 AND event_type = 'PointsExpired'")
            .bind(member.to_string())
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!(expired, 1);

    let (attempts, error): (i32, Option<String>) =
        sqlx::query_as("SELECT max(attempts), max(last_error) FROM due_work WHERE kind = 'no-such-kind'")
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!(attempts, 1);
    assert!(error.unwrap_or_default().contains("unknown due work kind"));

    // After the first delay they run (and fail) once more, then wait twice as long.
    clock.advance(Duration::seconds(wxcm_commands::scheduler::RETRY_DELAY_BASE_S + 1));
    let third = scheduler.tick().await.unwrap().expect("leader");
    assert_eq!(third.failed, batch as u32);
    assert_eq!(scheduler.tick().await.unwrap().expect("leader").failed, 0);
    let attempts: i32 = sqlx::query_scalar("SELECT min(attempts) FROM due_work WHERE kind = 'no-such-kind'")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(attempts, 2);
}
