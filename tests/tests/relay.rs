//! The outbox relay against real Postgres and NATS JetStream: events reach the
//! stream in order with their ids as `Nats-Msg-Id`, a late commit with a
//! smaller outbox id is neither lost nor overtaken, a lost mark only produces
//! deduplicated copies, one relay per shard leads and another takes over, and
//! only published rows are pruned. Each test has its own databases and its own
//! stream prefix, so the tests run in parallel on one NATS server.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::Context;
use futures::StreamExt;
use sqlx::{Connection, PgConnection, Row};
use wxcm_commands::members::{self, RegisterRequest};
use wxcm_commands::{tenants, CommandContext};
use wxcm_domain::member::{CardLevel, MemberCommand, Provenance, RegistrationSource};
use wxcm_domain::{Actor, AmountFen, IdempotencyKey, MemberId, Reference, TenantId};
use wxcm_server::app::{Application, Role};
use wxcm_server::relay::{self, RelayReport, RelayedEvent, ShardRelay};
use wxcm_tests::{build, fresh_settings, TestClock};

const NATS_URL: &str = "nats://127.0.0.1:4222";
/// A relay step publishes nothing while any transaction of the cluster that began
/// before a row's commit is still running (other tests' too): poll, bounded.
const DRAIN_DEADLINE: Duration = Duration::from_secs(30);
/// Test streams (`T<12 hex>_EVENTS`) older than this are left over from failed runs.
const STALE_STREAM_SECS: i64 = 3 * 3600;

struct Harness {
    application: Application,
    js: Context,
    prefix: String,
    db: PgConnection,
}

impl Harness {
    async fn new() -> Self {
        let mut settings = fresh_settings(1).await;
        let prefix = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        settings.nats.stream_prefix = prefix.clone();
        let application = build(settings.clone(), Role::Scheduler, Arc::new(TestClock::default())).await;
        let client = async_nats::connect(NATS_URL).await.expect("NATS with JetStream must run on 127.0.0.1:4222");
        let js = async_nats::jetstream::new(client);
        drop_stale_streams(&js).await;
        let url = settings.shards["s0"].admin_url.parse().expect("admin url");
        let db = PgConnection::connect_with(&url).await.expect("shard connection");
        Self { application, js, prefix, db }
    }

    fn relay(&self) -> ShardRelay {
        self.application.shard_relays(&self.js).pop().expect("one shard")
    }

    /// Superuser connection to the shard, for the test's own transactions.
    async fn connect(&self) -> PgConnection {
        let url = self.application.settings.shards["s0"].admin_url.parse().expect("admin url");
        PgConnection::connect_with(&url).await.expect("shard connection")
    }

    fn subject(&self, tenant: &str, aggregate_type: &str) -> String {
        relay::event_subject(&self.prefix, tenant, aggregate_type)
    }

    async fn unpublished(&mut self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            .fetch_one(&mut self.db)
            .await
            .expect("count")
    }

    /// Event ids of the outbox in outbox order.
    async fn outbox_event_ids(&mut self) -> Vec<String> {
        sqlx::query_scalar("SELECT event_id::text FROM outbox ORDER BY id")
            .fetch_all(&mut self.db)
            .await
            .expect("outbox")
    }

    /// Ticks `relay` (which must lead) until the outbox has no unpublished row.
    async fn drain(&mut self, relay: &mut ShardRelay) -> RelayReport {
        let deadline = Instant::now() + DRAIN_DEADLINE;
        let mut total = RelayReport::default();
        loop {
            // As the relay role's loop does: a publish refused in passing (JetStream
            // answering "no responders" on a loaded machine) is retried next tick,
            // after the relay checks its stream again.
            let report = match relay.tick().await {
                Err(e @ relay::RelayError::Publish { .. }) if Instant::now() < deadline => {
                    eprintln!("relay step failed, retrying: {e:?}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                other => other.expect("relay step").expect("relay leads"),
            };
            total.published += report.published;
            total.duplicates += report.duplicates;
            total.pruned += report.pruned;
            if !report.more_pending && self.unpublished().await == 0 {
                return total;
            }
            assert!(Instant::now() < deadline, "outbox not drained within {DRAIN_DEADLINE:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every message of the stream, in stream order.
    async fn messages(&self) -> Vec<StreamMessage> {
        let mut stream = self.js.get_stream(relay::stream_name(&self.prefix)).await.expect("stream exists");
        let state = stream.info().await.expect("stream info").state.clone();
        let mut out = Vec::new();
        if state.messages == 0 {
            return out;
        }
        for seq in state.first_sequence..=state.last_sequence {
            out.push(stream.get_raw_message(seq).await.expect("message"));
        }
        out
    }

    async fn message_count(&self) -> u64 {
        let mut stream = self.js.get_stream(relay::stream_name(&self.prefix)).await.expect("stream exists");
        stream.info().await.expect("stream info").state.messages
    }

    async fn finish(self) {
        self.js.delete_stream(relay::stream_name(&self.prefix)).await.expect("delete the test stream");
    }
}

fn msg_id(message: &StreamMessage) -> String {
    message.headers.get("Nats-Msg-Id").expect("Nats-Msg-Id header").as_str().to_owned()
}

fn body(message: &StreamMessage) -> RelayedEvent {
    serde_json::from_slice(&message.payload).expect("message body is a RelayedEvent")
}

/// Deletes test streams that failed runs left behind.
async fn drop_stale_streams(js: &Context) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let mut streams = js.streams();
    let mut stale = Vec::new();
    while let Some(Ok(info)) = streams.next().await {
        let name = &info.config.name;
        let test_like = name.len() == "T".len() + 12 + "_EVENTS".len()
            && name.starts_with('T')
            && name.ends_with("_EVENTS")
            && name[1..13].bytes().all(|b| b.is_ascii_hexdigit());
        if test_like && now - info.created.unix_timestamp() > STALE_STREAM_SECS {
            stale.push(name.clone());
        }
    }
    for name in stale {
        let _ = js.delete_stream(&name).await;
    }
}

/// Inserts event `sequence` of `test_stream/<stream>` as the superuser (no command path).
async fn insert_event(conn: &mut PgConnection, tenant: &str, stream: &str, sequence: i64) -> String {
    sqlx::query_scalar(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('test_stream', $1, $2, 'TestHappened', '1', jsonb_build_object('n', $2), jsonb_build_object('tenant_id', $3::text))
         RETURNING event_id::text",
    )
    .bind(stream)
    .bind(sequence)
    .bind(tenant)
    .fetch_one(conn)
    .await
    .expect("insert event")
}

fn ctx(tenant: &TenantId) -> CommandContext {
    let key = IdempotencyKey::parse(&format!("test-{}", uuid::Uuid::new_v4())).expect("key");
    CommandContext::new(tenant.clone(), key, "test".into())
}

async fn register(application: &Application, tenant: &TenantId) -> MemberId {
    let request =
        RegisterRequest { openid: None, source: RegistrationSource::Staff, card_level: CardLevel::standard() };
    let actor = Actor::Staff { username: "s".into() };
    members::register(&application.app, tenant, request, actor, &ctx(tenant)).await.expect("register").0.member_id
}

async fn deposit(application: &Application, tenant: &TenantId, id: MemberId, fen: i64) {
    let c = ctx(tenant);
    let command = MemberCommand::DepositCash {
        amount_fen: AmountFen::new(fen).expect("amount"),
        provenance: Provenance {
            actor: Actor::Staff { username: "s".into() },
            reason: Reference::parse("deposit").expect("reason"),
            reference: None,
            idempotency_key: c.idempotency_key.clone(),
        },
    };
    members::execute(&application.app, tenant, id, command.clone(), &command, &c).await.expect("deposit");
}

#[tokio::test]
async fn command_events_reach_the_stream_in_order_with_their_ids() {
    let mut h = Harness::new().await;
    let tenant = TenantId::parse("relay-cinema").unwrap();
    let admin = Actor::Admin { username: "t".into() };
    tenants::create(&h.application.app, &tenant, "Relay Cinema", admin, &ctx(&tenant)).await.unwrap();
    let (a, b) = (register(&h.application, &tenant).await, register(&h.application, &tenant).await);
    for i in 0..5 {
        deposit(&h.application, &tenant, a, 100 + i).await;
        if i % 2 == 0 {
            deposit(&h.application, &tenant, b, 7).await;
        }
    }
    let expected_ids = h.outbox_event_ids().await;
    assert_eq!(expected_ids.len(), 1 + 2 + 5 + 3, "tenant created, two registrations, eight deposits");

    let mut relay = h.relay();
    let report = h.drain(&mut relay).await;
    assert!(relay.is_leader());
    assert_eq!((report.published, report.duplicates), (expected_ids.len(), 0));

    let messages = h.messages().await;
    let ids: Vec<String> = messages.iter().map(msg_id).collect();
    assert_eq!(ids, expected_ids, "one message per event, in outbox order, Nats-Msg-Id = event id");
    let mut last_sequence: BTreeMap<(String, String), i64> = BTreeMap::new();
    for message in &messages {
        let event = body(message);
        assert_eq!(event.event_id.to_string(), msg_id(message));
        assert_eq!(event.tenant_id, tenant.as_str());
        assert_eq!(message.subject.as_str(), h.subject(tenant.as_str(), &event.aggregate_type));
        let last = last_sequence.entry((event.aggregate_type.clone(), event.aggregate_id.clone())).or_insert(0);
        assert_eq!(event.sequence, *last + 1, "per-stream order without gaps");
        *last = event.sequence;
        // The body carries the stored event: the hash and the payload as stored.
        let row = sqlx::query("SELECT encode(hash, 'hex') AS hash, payload FROM events WHERE event_id = $1")
            .bind(event.event_id)
            .fetch_one(&mut h.db)
            .await
            .unwrap();
        assert_eq!(event.hash, row.get::<String, _>("hash"));
        assert_eq!(event.payload, row.get::<serde_json::Value, _>("payload"));
    }
    assert_eq!(last_sequence[&("member".to_owned(), a.to_string())], 6);
    assert_eq!(last_sequence[&("member".to_owned(), b.to_string())], 4);
    assert_eq!(h.unpublished().await, 0, "every outbox row is marked");

    // Nothing left: a further step publishes nothing.
    let again = relay.tick().await.unwrap().unwrap();
    assert_eq!(again.published, 0);
    assert_eq!(h.message_count().await, expected_ids.len() as u64);
    relay.resign().await;
    h.finish().await;
}

#[tokio::test]
async fn a_late_commit_with_a_smaller_outbox_id_is_neither_lost_nor_overtaken() {
    let mut h = Harness::new().await;
    let mut relay = h.relay();
    // Creates the stream; the outbox is empty.
    assert_eq!(relay.tick().await.unwrap().unwrap().published, 0);

    // T1 takes the smaller outbox id and stays open.
    let mut slow = h.connect().await;
    let mut t1 = slow.begin().await.unwrap();
    let late_event = insert_event(&mut t1, "late-tenant", "late", 1).await;
    let late_id: i64 = sqlx::query_scalar("SELECT id FROM outbox WHERE event_id = $1::uuid")
        .bind(&late_event)
        .fetch_one(&mut *t1)
        .await
        .unwrap();
    // T2 takes a larger id and commits first.
    let mut fast = h.connect().await;
    let early_event = insert_event(&mut fast, "late-tenant", "early", 1).await;
    let early_id: i64 = sqlx::query_scalar("SELECT id FROM outbox WHERE event_id = $1::uuid")
        .bind(&early_event)
        .fetch_one(&mut fast)
        .await
        .unwrap();
    assert!(late_id < early_id, "the open transaction holds the smaller id");

    // While T1 is open, T2's row is held back: publishing it now would put it
    // before T1's row, and a relay remembering "last id published" would skip T1's.
    for _ in 0..3 {
        assert_eq!(relay.tick().await.unwrap().unwrap().published, 0);
    }
    assert_eq!(h.message_count().await, 0);
    assert_eq!(h.unpublished().await, 1, "only T2's row is visible, and it is not marked");

    t1.commit().await.unwrap();
    let report = h.drain(&mut relay).await;
    assert_eq!(report.published, 2);
    let ids: Vec<String> = h.messages().await.iter().map(msg_id).collect();
    assert_eq!(ids, vec![late_event, early_event], "both published, in outbox order");
    relay.resign().await;
    h.finish().await;
}

/// The race the xmin filter cannot close: T_a takes its xid first but its outbox
/// id second, T_b the other way round, and T_a commits first. T_a's row is then
/// published while T_b's smaller id is still invisible; a relay remembering "the
/// last id published" would skip T_b's row for ever. This one selects unpublished
/// rows, so T_b's row is published as soon as it commits.
#[tokio::test]
async fn a_row_committed_late_below_an_already_published_id_is_not_lost() {
    let mut h = Harness::new().await;
    let mut relay = h.relay();
    assert_eq!(relay.tick().await.unwrap().unwrap().published, 0);

    let (mut conn_a, mut conn_b) = (h.connect().await, h.connect().await);
    let mut ta = conn_a.begin().await.unwrap();
    let mut tb = conn_b.begin().await.unwrap();
    let xid_a: String = sqlx::query_scalar("SELECT pg_current_xact_id()::text").fetch_one(&mut *ta).await.unwrap();
    let xid_b: String = sqlx::query_scalar("SELECT pg_current_xact_id()::text").fetch_one(&mut *tb).await.unwrap();
    assert!(xid_a.parse::<u64>().unwrap() < xid_b.parse::<u64>().unwrap());
    let event_b = insert_event(&mut tb, "race-tenant", "b", 1).await;
    let event_a = insert_event(&mut ta, "race-tenant", "a", 1).await;
    ta.commit().await.unwrap();

    // T_a's row (the larger id) is published while T_b's (the smaller) is open.
    let deadline = Instant::now() + DRAIN_DEADLINE;
    while h.message_count().await == 0 {
        relay.tick().await.unwrap().unwrap();
        assert!(Instant::now() < deadline, "T_a's row was never published");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ids: Vec<String> = h.messages().await.iter().map(msg_id).collect();
    assert_eq!(ids, vec![event_a.clone()]);
    let ids_in_outbox = h.outbox_event_ids().await;
    assert_eq!(ids_in_outbox, vec![event_a.clone()], "T_b's row is not visible yet");

    tb.commit().await.unwrap();
    assert_eq!(h.outbox_event_ids().await, vec![event_b.clone(), event_a.clone()], "T_b holds the smaller id");
    assert_eq!(h.drain(&mut relay).await.published, 1);
    let ids: Vec<String> = h.messages().await.iter().map(msg_id).collect();
    assert_eq!(ids, vec![event_a, event_b], "published once each; the late row was not skipped");
    relay.resign().await;
    h.finish().await;
}

#[tokio::test]
async fn a_lost_mark_republishes_into_jetstream_deduplication() {
    let mut h = Harness::new().await;
    let mut writer = h.connect().await;
    for seq in 1..=6 {
        insert_event(&mut writer, "dedup-tenant", "s1", seq).await;
    }
    let mut relay = h.relay();
    let first = h.drain(&mut relay).await;
    assert_eq!((first.published, first.duplicates), (6, 0));
    assert_eq!(h.message_count().await, 6);

    // Crash after the acks, before the mark: every row of the batch is unpublished again.
    sqlx::query("UPDATE outbox SET published_at = NULL").execute(&mut h.db).await.unwrap();
    let again = h.drain(&mut relay).await;
    assert_eq!((again.published, again.duplicates), (6, 6), "all sent again, all recognized");
    assert_eq!(h.message_count().await, 6, "JetStream kept one copy of each");

    // Crash in the middle of a batch: the acknowledged half was marked, the rest not.
    for seq in 7..=10 {
        insert_event(&mut writer, "dedup-tenant", "s1", seq).await;
    }
    sqlx::query("UPDATE outbox SET published_at = NULL WHERE sequence > 4").execute(&mut h.db).await.unwrap();
    let rest = h.drain(&mut relay).await;
    assert_eq!((rest.published, rest.duplicates), (6, 2));
    let sequences: Vec<i64> = h.messages().await.iter().map(|m| body(m).sequence).collect();
    assert_eq!(sequences, (1..=10).collect::<Vec<_>>(), "no copies, no reordering");
    relay.resign().await;
    h.finish().await;
}

#[tokio::test]
async fn one_relay_leads_and_another_takes_over_when_it_dies() {
    let mut h = Harness::new().await;
    let mut writer = h.connect().await;
    for seq in 1..=3 {
        insert_event(&mut writer, "lease-tenant", "s1", seq).await;
    }
    let mut a = h.relay();
    let mut b = h.relay();
    assert_eq!(h.drain(&mut a).await.published, 3);
    for _ in 0..3 {
        let (ra, rb) = tokio::join!(a.tick(), b.tick());
        assert!(ra.unwrap().is_some());
        assert!(rb.unwrap().is_none(), "b waits while a leads");
    }
    assert!(a.is_leader() && !b.is_leader());

    for seq in 4..=6 {
        insert_event(&mut writer, "lease-tenant", "s1", seq).await;
    }
    // a dies without resigning: its session closes and the lock goes with it.
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.tick().await.unwrap().is_none() {
        assert!(Instant::now() < deadline, "b did not take over");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.drain(&mut b).await;
    let sequences: Vec<i64> = h.messages().await.iter().map(|m| body(m).sequence).collect();
    assert_eq!(sequences, (1..=6).collect::<Vec<_>>(), "b published the rest, once each, in order");
    assert_eq!(h.unpublished().await, 0);

    // A graceful hand-over too: b resigns, a new instance leads at once.
    b.resign().await;
    let mut c = h.relay();
    assert!(c.tick().await.unwrap().is_some());
    c.resign().await;
    h.finish().await;
}

#[tokio::test]
async fn prune_deletes_only_published_rows_older_than_the_retention() {
    let mut h = Harness::new().await;
    assert_eq!(h.application.settings.nats.outbox_retention_hours, 72);
    let mut writer = h.connect().await;
    for seq in 1..=6 {
        insert_event(&mut writer, "prune-tenant", "s1", seq).await;
    }
    let mut relay = h.relay();
    assert_eq!(h.drain(&mut relay).await.published, 6);
    // Published 73 h ago (past the retention) for 1..=3, 71 h ago (inside it) for 4.
    sqlx::query("UPDATE outbox SET published_at = now() - interval '73 hours' WHERE sequence <= 3")
        .execute(&mut h.db)
        .await
        .unwrap();
    sqlx::query("UPDATE outbox SET published_at = now() - interval '71 hours' WHERE sequence = 4")
        .execute(&mut h.db)
        .await
        .unwrap();
    // Unpublished rows, however old their events, are never pruned.
    for seq in 7..=8 {
        insert_event(&mut writer, "prune-tenant", "s1", seq).await;
    }

    assert_eq!(relay.prune().await.unwrap(), Some(3));
    let left: Vec<(i64, bool)> = sqlx::query("SELECT sequence, published_at IS NOT NULL FROM outbox ORDER BY id")
        .fetch_all(&mut h.db)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(left, vec![(4, true), (5, true), (6, true), (7, false), (8, false)]);
    assert_eq!(relay.prune().await.unwrap(), Some(0), "nothing else is due");

    // Pruning never touched what the relay still has to publish.
    assert_eq!(h.drain(&mut relay).await.published, 2);
    assert_eq!(h.message_count().await, 8);
    relay.resign().await;
    h.finish().await;
}

#[tokio::test]
async fn a_leader_publishes_this_process_commits_without_waiting_for_its_poll() {
    let mut h = Harness::new().await;
    let tenant = TenantId::parse("relay-wake").unwrap();
    let admin = Actor::Admin { username: "t".into() };
    tenants::create(&h.application.app, &tenant, "Relay Wake", admin, &ctx(&tenant)).await.unwrap();
    let member = register(&h.application, &tenant).await;
    // Drained first: what is published later came after the relay went idle.
    let mut relay = h.relay();
    h.drain(&mut relay).await;
    let initial = h.message_count().await;

    // A poll far beyond the test's deadline: only the commit wake-up can publish in time.
    let poll = Duration::from_secs(600);
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(relay.run(poll, shutdown));
    let deadline = Instant::now() + DRAIN_DEADLINE;
    // Its first step, at start, finds nothing: let it pass and idle.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut deposits = 0u64;
    while h.message_count().await < initial + deposits || deposits == 0 {
        assert!(Instant::now() < deadline, "commits were not published within {DRAIN_DEADLINE:?}");
        // Each deposit wakes the relay; another test's open transaction may hold one step back.
        deposit(&h.application, &tenant, member, 1).await;
        deposits += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop.send(true).expect("relay running");
    running.await.expect("relay task");
    h.finish().await;
}
