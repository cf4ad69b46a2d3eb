//! The projector runtime against real Postgres and NATS JetStream: read models
//! match the aggregates, duplicates are skipped, a reordered stream is filled
//! from the event store, a poison event is parked without blocking other
//! streams, and a projector that dies between commit and ack leaves no
//! duplicate. Each test has its own databases and stream prefix.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::Context;
use futures::StreamExt;
use sqlx::{Connection, PgConnection, Row};
use wxcm_commands::members::{self, RegisterRequest};
use wxcm_commands::{tenants, CommandContext};
use wxcm_domain::member::SpendPurpose;
use wxcm_domain::member::{CardLevel, ExpiryPolicy, MemberCommand, PointsSource, Provenance, RegistrationSource};
use wxcm_domain::{Actor, AmountFen, IdempotencyKey, MemberId, PointsAmount, Reference, TenantId};
use wxcm_projections::{load_events, BatchReport, MemberProjector, ProjectorRuntime, RelayedEvent};
use wxcm_server::app::{Application, Role};
use wxcm_server::relay::{self, ShardRelay};
use wxcm_tests::{build, fresh_settings, TestClock};

const NATS_URL: &str = "nats://127.0.0.1:4222";
/// Relay and projector steps are polled up to this long (other tests share the cluster).
const DEADLINE: Duration = Duration::from_secs(30);
/// Deliveries before a failing event is parked, in these tests.
const DELIVERIES_BEFORE_PARK: i64 = 3;

struct Harness {
    application: Application,
    js: Context,
    prefix: String,
    db: PgConnection,
    tenant: TenantId,
}

impl Harness {
    async fn new() -> Self {
        let mut settings = fresh_settings(1).await;
        // `t` + 12 hex, like the relay tests: their stale-stream cleanup covers these too.
        let prefix = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        settings.nats.stream_prefix = prefix.clone();
        let application = build(settings.clone(), Role::Scheduler, Arc::new(TestClock::default())).await;
        let client = async_nats::connect(NATS_URL).await.expect("NATS with JetStream must run on 127.0.0.1:4222");
        let js = async_nats::jetstream::new(client);
        relay::ensure_stream(&js, &prefix, 1).await.expect("events stream");
        let url = settings.shards["s0"].admin_url.parse().expect("admin url");
        let db = PgConnection::connect_with(&url).await.expect("shard connection");
        let tenant = TenantId::parse("proj-cinema").expect("tenant");
        let admin = Actor::Admin { username: "t".into() };
        tenants::create(&application.app, &tenant, "Projection Cinema", admin, &ctx(&tenant)).await.expect("tenant");
        Self { application, js, prefix, db, tenant }
    }

    fn relay(&self) -> ShardRelay {
        self.application.shard_relays(&self.js).pop().expect("one shard")
    }

    /// The member projector of the only shard, with short waits.
    fn projector(&self) -> ProjectorRuntime<MemberProjector> {
        self.application
            .shard_projectors(&self.js, |s| {
                s.ack_wait = Duration::from_secs(1);
                s.nak_delay = Duration::from_millis(50);
                s.deliveries_before_park = DELIVERIES_BEFORE_PARK;
            })
            .pop()
            .expect("one shard")
    }

    async fn drain_relay(&mut self) {
        let mut relay = self.relay();
        let deadline = Instant::now() + DEADLINE;
        loop {
            let report = relay.tick().await.expect("relay step").expect("relay leads");
            let unpublished: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
                .fetch_one(&mut self.db)
                .await
                .expect("count");
            if !report.more_pending && unpublished == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "outbox not drained within {DEADLINE:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        relay.resign().await;
    }

    /// Steps `projector` until nothing is pending, delivered or redelivered.
    async fn project_all(&self, projector: &mut ProjectorRuntime<MemberProjector>) -> BatchReport {
        let deadline = Instant::now() + DEADLINE;
        let mut total = BatchReport::default();
        loop {
            let report = projector.run_batch(100, Duration::from_millis(200)).await.expect("projector step");
            add(&mut total, &report);
            let status = projector.status().await.expect("status");
            if report.received == 0 && status.num_pending == 0 && status.num_ack_pending == 0 {
                return total;
            }
            assert!(Instant::now() < deadline, "projection not drained within {DEADLINE:?}: {status:?}");
        }
    }

    /// Publishes `event` straight to the stream (no relay, no dedup id).
    async fn publish(&self, event: &RelayedEvent) {
        let subject = relay::event_subject(&self.prefix, &event.tenant_id, &event.aggregate_type);
        let body = serde_json::to_vec(event).expect("body");
        self.js.publish(subject, body.into()).await.expect("publish").await.expect("publish ack");
    }

    async fn stored(&mut self, member: MemberId) -> Vec<RelayedEvent> {
        load_events(&mut self.db, "member", &member.to_string(), 1, i64::MAX).await.expect("events")
    }

    async fn checkpoint(&mut self, aggregate_id: &str) -> Option<i64> {
        sqlx::query_scalar(
            "SELECT sequence FROM projection_checkpoints
              WHERE projector = 'members' AND aggregate_type = 'member' AND aggregate_id = $1",
        )
        .bind(aggregate_id)
        .fetch_optional(&mut self.db)
        .await
        .expect("checkpoint")
    }

    async fn ledger_sequences(&mut self, member: MemberId) -> Vec<i64> {
        sqlx::query_scalar("SELECT sequence FROM rm_member_ledger WHERE member_id = $1 ORDER BY sequence")
            .bind(member.to_string())
            .fetch_all(&mut self.db)
            .await
            .expect("ledger")
    }

    async fn balance(&mut self, member: MemberId) -> Option<i64> {
        sqlx::query_scalar("SELECT balance_fen FROM rm_members WHERE member_id = $1")
            .bind(member.to_string())
            .fetch_optional(&mut self.db)
            .await
            .expect("member row")
    }

    async fn finish(self) {
        self.js.delete_stream(relay::stream_name(&self.prefix)).await.expect("delete the test stream");
    }
}

fn add(total: &mut BatchReport, r: &BatchReport) {
    total.received += r.received;
    total.applied += r.applied;
    total.filled += r.filled;
    total.duplicates += r.duplicates;
    total.parked += r.parked;
    total.failed += r.failed;
    total.ignored += r.ignored;
}

fn ctx(tenant: &TenantId) -> CommandContext {
    let key = IdempotencyKey::parse(&format!("test-{}", uuid::Uuid::new_v4())).expect("key");
    CommandContext::new(tenant.clone(), key, "test".into())
}

fn provenance(c: &CommandContext) -> Provenance {
    Provenance {
        actor: Actor::Staff { username: "s".into() },
        reason: Reference::parse("test").expect("reason"),
        reference: None,
        idempotency_key: c.idempotency_key.clone(),
    }
}

async fn register(h: &Harness) -> MemberId {
    let request =
        RegisterRequest { openid: None, source: RegistrationSource::Staff, card_level: CardLevel::standard() };
    let actor = Actor::Staff { username: "s".into() };
    members::register(&h.application.app, &h.tenant, request, actor, &ctx(&h.tenant))
        .await
        .expect("register")
        .0
        .member_id
}

async fn exec(h: &Harness, id: MemberId, command: impl FnOnce(Provenance) -> MemberCommand) {
    let c = ctx(&h.tenant);
    let command = command(provenance(&c));
    members::execute(&h.application.app, &h.tenant, id, command.clone(), &command, &c).await.expect("command");
}

async fn deposit(h: &Harness, id: MemberId, fen: i64) {
    exec(h, id, |provenance| MemberCommand::DepositCash {
        amount_fen: AmountFen::new(fen).expect("amount"),
        provenance,
    })
    .await;
}

#[tokio::test]
async fn commands_through_relay_and_projector_match_the_aggregates() {
    let mut h = Harness::new().await;
    let (a, b) = (register(&h).await, register(&h).await);
    let points = |n| PointsAmount::new(n).expect("points");
    exec(&h, a, |provenance| MemberCommand::GrantPoints {
        points: points(100),
        source: PointsSource::Manual,
        expiry: ExpiryPolicy::Never,
        provenance,
    })
    .await;
    deposit(&h, a, 500).await;
    exec(&h, a, |provenance| MemberCommand::ChargeCash {
        amount_fen: AmountFen::new(200).expect("amount"),
        provenance,
    })
    .await;
    exec(&h, a, |provenance| MemberCommand::HoldPoints {
        hold_id: Reference::parse("order-1").expect("hold id"),
        points: points(30),
        provenance,
    })
    .await;
    exec(&h, a, |provenance| MemberCommand::SpendPoints {
        points: points(20),
        purpose: SpendPurpose::Mall,
        provenance,
    })
    .await;
    deposit(&h, b, 7).await;
    h.drain_relay().await;

    let mut projector = h.projector();
    let report = h.project_all(&mut projector).await;
    assert_eq!((report.applied, report.duplicates, report.parked, report.failed), (8, 0, 0, 0), "{report:?}");

    for id in [a, b] {
        let view = members::get(&h.application.app, &h.tenant, id).await.expect("aggregate");
        let row = sqlx::query(
            "SELECT card_no, card_level, source, points, held_points, balance_fen, lifetime_points, version
               FROM rm_members WHERE tenant_id = $1 AND member_id = $2",
        )
        .bind(h.tenant.as_str())
        .bind(id.to_string())
        .fetch_one(&mut h.db)
        .await
        .expect("read model row");
        assert_eq!(row.get::<String, _>("card_no"), view.card_no.to_string());
        assert_eq!(row.get::<String, _>("card_level"), view.card_level);
        assert_eq!(row.get::<String, _>("source"), "staff");
        assert_eq!(row.get::<i64, _>("points"), view.points);
        assert_eq!(row.get::<i64, _>("held_points"), view.held_points);
        assert_eq!(row.get::<i64, _>("balance_fen"), view.balance_fen);
        assert_eq!(row.get::<i64, _>("lifetime_points"), view.lifetime_points);
        assert_eq!(row.get::<i64, _>("version"), view.version as i64);
        assert_eq!(h.checkpoint(&id.to_string()).await, Some(view.version as i64));
    }
    let ledger = sqlx::query(
        "SELECT sequence, points_delta, held_delta, cash_delta_fen, points_after, held_after, balance_after_fen
           FROM rm_member_ledger WHERE member_id = $1 ORDER BY sequence",
    )
    .bind(a.to_string())
    .fetch_all(&mut h.db)
    .await
    .expect("ledger");
    let lines: Vec<(i64, i64, i64, i64, i64, i64, i64)> = ledger
        .iter()
        .map(|r| {
            (
                r.get("sequence"),
                r.get("points_delta"),
                r.get("held_delta"),
                r.get("cash_delta_fen"),
                r.get("points_after"),
                r.get("held_after"),
                r.get("balance_after_fen"),
            )
        })
        .collect();
    assert_eq!(
        lines,
        vec![
            (2, 100, 0, 0, 100, 0, 0),
            (3, 0, 0, 500, 100, 0, 500),
            (4, 0, 0, -200, 100, 0, 300),
            (5, -30, 30, 0, 70, 30, 300),
            (6, -20, 0, 0, 50, 30, 300),
        ],
        "one line per points or cash event, with the figures after it"
    );
    assert_eq!(h.ledger_sequences(b).await, vec![2]);
    // The batch's counters, summed over both members' events and written once.
    let counters: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT metric, dimension, value FROM rm_daily_ops WHERE tenant_id = $1 ORDER BY metric, dimension",
    )
    .bind(h.tenant.as_str())
    .fetch_all(&mut h.db)
    .await
    .expect("counters");
    let counter = |metric: &str, dimension: &str| {
        counters.iter().find(|(m, d, _)| m == metric && d == dimension).map(|(_, _, v)| *v)
    };
    assert_eq!(counter("registrations", "staff"), Some(2), "{counters:?}");
    assert_eq!(counter("card_level_net", "standard"), Some(2), "{counters:?}");
    assert_eq!(counter("points_granted", ""), Some(100), "{counters:?}");
    assert_eq!(counter("cash_credited_fen", "deposit"), Some(507), "{counters:?}");
    assert_eq!(counter("cash_debited_fen", "charge"), Some(200), "{counters:?}");
    assert_eq!(counter("points_spent", ""), Some(20), "{counters:?}");

    let status = projector.status().await.expect("status");
    assert_eq!((status.num_pending, status.num_ack_pending, status.parked), (0, 0, 0));
    assert_eq!(status.consumer, "members_s0");
    assert!(status.last_event_age_ms.is_some_and(|ms| ms >= 0), "{status:?}");
    h.finish().await;
}

#[tokio::test]
async fn the_same_event_delivered_twice_is_applied_once() {
    let mut h = Harness::new().await;
    let a = register(&h).await;
    deposit(&h, a, 250).await;
    let events = h.stored(a).await;
    assert_eq!(events.len(), 2);
    for event in [&events[0], &events[0], &events[1], &events[1]] {
        h.publish(event).await;
    }
    let mut projector = h.projector();
    let report = h.project_all(&mut projector).await;
    assert_eq!((report.received, report.applied, report.duplicates, report.filled), (4, 2, 2, 0), "{report:?}");
    assert_eq!(h.ledger_sequences(a).await, vec![2]);
    assert_eq!(h.balance(a).await, Some(250));
    assert_eq!(h.checkpoint(&a.to_string()).await, Some(2));
    h.finish().await;
}

#[tokio::test]
async fn a_stream_delivered_out_of_order_is_filled_from_the_event_store() {
    let mut h = Harness::new().await;
    let a = register(&h).await;
    deposit(&h, a, 100).await;
    deposit(&h, a, 40).await;
    let events = h.stored(a).await;
    assert_eq!(events.iter().map(|e| e.sequence).collect::<Vec<_>>(), vec![1, 2, 3]);
    // Seq 3 reaches the stream before seq 2, which comes in a later batch.
    h.publish(&events[0]).await;
    h.publish(&events[2]).await;
    let mut projector = h.projector();
    let report = h.project_all(&mut projector).await;
    assert_eq!(
        (report.received, report.applied, report.filled, report.duplicates),
        (2, 2, 1, 0),
        "seq 3 applies seq 2 from the store first: {report:?}"
    );
    h.publish(&events[1]).await;
    let report = h.project_all(&mut projector).await;
    assert_eq!((report.received, report.duplicates), (1, 1), "the late seq 2 is a duplicate: {report:?}");
    assert_eq!(h.balance(a).await, Some(140));
    assert_eq!(h.ledger_sequences(a).await, vec![2, 3]);
    assert_eq!(h.checkpoint(&a.to_string()).await, Some(3));

    // Within one batch the stream's events are put in order: nothing to fill.
    deposit(&h, a, 1).await;
    deposit(&h, a, 2).await;
    let events = h.stored(a).await;
    h.publish(&events[4]).await;
    h.publish(&events[3]).await;
    let report = h.project_all(&mut projector).await;
    assert_eq!((report.received, report.applied, report.filled), (2, 2, 0), "{report:?}");
    assert_eq!(h.balance(a).await, Some(143));
    assert_eq!(h.ledger_sequences(a).await, vec![2, 3, 4, 5]);
    h.finish().await;
}

#[tokio::test]
async fn a_poison_event_is_parked_and_other_streams_go_on() {
    let mut h = Harness::new().await;
    let (a, b) = (register(&h).await, register(&h).await);
    deposit(&h, b, 90).await;
    let a_events = h.stored(a).await;
    let b_events = h.stored(b).await;
    // A member stream whose first event cannot be decoded.
    let poison_id = uuid::Uuid::new_v4().to_string();
    let poison = |sequence: i64| RelayedEvent {
        event_id: uuid::Uuid::new_v4(),
        aggregate_id: poison_id.clone(),
        sequence,
        event_type: "CashDeposited".into(),
        payload: serde_json::json!({ "CashDeposited": { "amount_fen": "lots" } }),
        ..a_events[0].clone()
    };
    let poison_1 = poison(1);
    h.publish(&a_events[0]).await;
    h.publish(&poison_1).await;
    for event in &b_events {
        h.publish(event).await;
    }

    let mut projector = h.projector();
    let deadline = Instant::now() + DEADLINE;
    let mut total = BatchReport::default();
    while total.parked == 0 {
        let report = projector.run_batch(100, Duration::from_millis(200)).await.expect("projector step");
        add(&mut total, &report);
        assert!(Instant::now() < deadline, "poison event never parked: {total:?}");
    }
    assert_eq!(total.failed as i64, DELIVERIES_BEFORE_PARK - 1, "{total:?}");
    assert_eq!(h.balance(b).await, Some(90), "the other member's events were projected");
    assert_eq!(h.checkpoint(&a.to_string()).await, Some(1));
    let row = sqlx::query(
        "SELECT sequence, attempts, error, parked_at IS NOT NULL AS parked, first_failed_at <= last_failed_at AS ordered
           FROM projection_dead_letters WHERE event_id = $1",
    )
    .bind(poison_1.event_id)
    .fetch_one(&mut h.db)
    .await
    .expect("dead letter");
    assert_eq!(row.get::<i64, _>("sequence"), 1);
    assert_eq!(i64::from(row.get::<i32, _>("attempts")), DELIVERIES_BEFORE_PARK);
    assert!(row.get::<bool, _>("parked") && row.get::<bool, _>("ordered"));
    assert!(row.get::<String, _>("error").contains("not a member event"), "{}", row.get::<String, _>("error"));

    // A later event of the parked stream is parked too, at once, never applied.
    let poison_2 = poison(2);
    h.publish(&poison_2).await;
    let report = h.project_all(&mut projector).await;
    assert_eq!((report.parked, report.failed, report.applied), (1, 0, 0), "{report:?}");
    // (A batch may have made its checkpoint row, at 0.)
    assert_eq!(h.checkpoint(&poison_id).await.unwrap_or(0), 0, "nothing of the poisoned stream was applied");
    let status = projector.status().await.expect("status");
    assert_eq!(status.parked, 2);
    h.finish().await;
}

#[tokio::test]
async fn a_projector_restarted_between_commit_and_ack_leaves_no_duplicate() {
    let mut h = Harness::new().await;
    let a = register(&h).await;
    for fen in [10, 20, 30, 40, 50] {
        deposit(&h, a, fen).await;
    }
    h.drain_relay().await;

    // The first projector takes four messages, commits three of them and dies
    // without acking any.
    let mut first = h.projector();
    first.status().await.expect("creates the consumer");
    let stream = h.js.get_stream(relay::stream_name(&h.prefix)).await.expect("stream");
    let consumer: PullConsumer = stream.get_consumer(&first.consumer_name()).await.expect("consumer");
    let mut batch = consumer.batch().max_messages(4).expires(Duration::from_secs(2)).messages().await.expect("fetch");
    let mut taken = Vec::new();
    while let Some(message) = batch.next().await {
        taken.push(message.expect("message"));
    }
    assert_eq!(taken.len(), 4);
    for message in &taken[..3] {
        let event: RelayedEvent = serde_json::from_slice(&message.payload).expect("event");
        first.project(&event).await.expect("applied and committed");
    }
    drop(taken);
    drop(first);
    assert_eq!(h.checkpoint(&a.to_string()).await, Some(3));

    let mut second = h.projector();
    let report = h.project_all(&mut second).await;
    assert_eq!(report.received, 6, "all six messages, the four unacked ones redelivered: {report:?}");
    assert_eq!(report.applied + report.filled, 3, "only seq 4..6 applied: {report:?}");
    assert_eq!(report.received, report.applied + report.duplicates, "{report:?}");
    assert_eq!(h.ledger_sequences(a).await, vec![2, 3, 4, 5, 6], "no duplicate ledger line");
    assert_eq!(h.balance(a).await, Some(150));
    assert_eq!(h.checkpoint(&a.to_string()).await, Some(6));
    assert!(wxcm_ops::reconcile::reconcile(&h.application.settings, &h.tenant).await.expect("reconcile").is_clean());
    h.finish().await;
}

#[tokio::test]
async fn a_parked_stream_waits_for_the_operator_then_catches_up() {
    let mut h = Harness::new().await;
    let a = register(&h).await;
    deposit(&h, a, 10).await;
    deposit(&h, a, 20).await;
    let events = h.stored(a).await;
    let mut projector = h.projector();
    h.publish(&events[0]).await;
    assert_eq!(h.project_all(&mut projector).await.applied, 1);

    // A fault that outlasts the redeliveries: the ledger refuses writes.
    sqlx::query("REVOKE INSERT ON rm_member_ledger FROM wxcm_app").execute(&mut h.db).await.expect("revoke");
    h.publish(&events[1]).await;
    h.publish(&events[2]).await;
    let deadline = Instant::now() + DEADLINE;
    loop {
        projector.run_batch(100, Duration::from_millis(200)).await.expect("projector step");
        let parked: i64 =
            sqlx::query_scalar("SELECT count(*) FROM projection_dead_letters WHERE parked_at IS NOT NULL")
                .fetch_one(&mut h.db)
                .await
                .expect("count");
        if parked == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "events never parked");
    }
    assert_eq!(h.checkpoint(&a.to_string()).await, Some(1), "nothing applied past the fault");

    // Fixed; the operator retries the stream, which applies seq 2 and 3 from the store.
    sqlx::query("GRANT INSERT ON rm_member_ledger TO wxcm_app").execute(&mut h.db).await.expect("grant");
    assert_eq!(projector.retry_parked("member", &a.to_string()).await.expect("retry"), 2);
    assert_eq!(projector.retry_parked("member", &a.to_string()).await.expect("retry again"), 0);
    assert_eq!(h.checkpoint(&a.to_string()).await, Some(3));
    assert_eq!(h.balance(a).await, Some(30));
    assert_eq!(h.ledger_sequences(a).await, vec![2, 3]);
    let letters: i64 =
        sqlx::query_scalar("SELECT count(*) FROM projection_dead_letters").fetch_one(&mut h.db).await.expect("count");
    assert_eq!(letters, 0);

    // The stream flows again.
    deposit(&h, a, 5).await;
    let events = h.stored(a).await;
    h.publish(&events[3]).await;
    let report = h.project_all(&mut projector).await;
    assert_eq!((report.applied, report.parked), (1, 0), "{report:?}");
    assert_eq!(h.balance(a).await, Some(35));
    assert!(wxcm_ops::reconcile::reconcile(&h.application.settings, &h.tenant).await.expect("reconcile").is_clean());
    h.finish().await;
}

#[tokio::test]
async fn metrics_show_the_projector_lag_gauges_without_auth() {
    let app = wxcm_tests::spawn_app().await;
    let res = app.http.get(app.url("/metrics")).send().await.expect("GET /metrics");
    assert_eq!(res.status(), reqwest::StatusCode::OK);
    let content_type = res.headers()["content-type"].to_str().expect("content type").to_owned();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    let text = res.text().await.expect("body");
    for gauge in ["wxcm_projector_lag_events", "wxcm_projector_lag_seconds", "wxcm_projector_parked_events"] {
        assert!(text.contains(&format!("# TYPE {gauge} gauge\n")), "{text}");
    }
    assert!(text.contains("wxcm_projector_parked_events{projector=\"members\",shard=\"s0\"} 0\n"), "{text}");
    assert!(text.contains("# TYPE wxcm_projector_stalls_total counter\n"), "{text}");
    // Scrapes reuse the node's pools and NATS connection: repeated scrapes answer alike.
    for _ in 0..3 {
        let again = app.http.get(app.url("/metrics")).send().await.expect("GET /metrics again");
        assert_eq!(again.status(), reqwest::StatusCode::OK);
        assert!(again.text().await.expect("body").contains("# TYPE wxcm_projector_lag_events gauge\n"));
    }
    app.stop().await;
}
