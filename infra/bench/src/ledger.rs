//! `wxcm bench ledger`: durable single-event commands per second through the
//! real command path (`wxcm_commands::members::execute` → executor →
//! `PgEventStore` → group commit → INSERT + triggers → COMMIT, with
//! `synchronous_commit` left as the server has it), next to what the machine
//! does with the same rows and no application.
//!
//! Phases, each after a warm-up that is not counted (its errors are):
//! - (a) `--clients` tasks depositing 1 fen on random members, every member
//!   cached; the group committer's statements are counted, giving the average
//!   batch (rows per statement) that (c2) copies;
//! - (a cold) the same in a freshly built application whose aggregate cache
//!   holds `--cold-cache-entries` members (far fewer than `--members`), so
//!   nearly every command loads its member cold: snapshot + tail;
//! - (c) the same concurrency of autocommit single-row INSERTs into
//!   `bench_raw_events`, a table shaped like `events` (columns, keys, indexes)
//!   without triggers; the chain columns are left at their defaults;
//! - (c2) the same concurrency of autocommit multi-row INSERTs (the group
//!   committer's `unnest` statement) into `bench_raw_batched`, same shape,
//!   with (a)'s average rows per statement and every column filled as the
//!   trigger would: tenant, event id, time, and a hash chain computed by the
//!   client to the specification (`schemas/event-hash-chain.md`; checked
//!   afterwards with the specification's SQL);
//! - (b1) one client on one member whose stream holds 10 events;
//! - (b2) one client on one member whose stream holds `--big-stream-events`
//!   events, seeded in SQL. Its first command in a freshly built application
//!   (empty cache, no snapshot) replays the whole stream and writes a snapshot:
//!   timed on its own (`b2_cold_load_ms`). After the phase, the first command
//!   of another fresh application (a restart: new connections, snapshot +
//!   tail, the commit) is timed, [`SNAPSHOT_RESTARTS`] times
//!   (`b2_snapshot_load_ms` is their median, `b2_snapshot_load_max_ms` the slowest).
//!
//! Everything runs in a dedicated database that is dropped and recreated first
//! and dropped again at the end (unless `--keep`). The last line of stdout is
//! one JSON object; any failed operation fails the run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use chrono::{DateTime, Utc};
use comfy_table::{presets, Cell, Table};
use serde_json::json;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::Mutex;
use wxcm_commands::App;
use wxcm_domain::member::{MemberEvent, Provenance};
use wxcm_domain::{AmountFen, BalanceFen, MemberId, Reference, TenantId};
use wxcm_server::app::Role;
use wxcm_server::config::Settings;
use wxcm_store::group_commit::{self, CommitStats};
use wxcm_store::hashchain::{self, StoredEvent, GENESIS_HASH};

use crate::driver::{closed_loop, Counts, Outcome, Rows};
use crate::setup::{
    self, bench_actor, key, number, round, verdict, Target, CLIENTS_MAX, DURATION_SECS_MAX, MEMBERS_MAX,
    POOL_SPARE_CONNECTIONS,
};
use crate::workload::{deposit, register, register_members, seed_deposits};

pub const WARMUP_SECS_MAX: u64 = 600;
/// postgres-es binds sequences as i32; stay far below.
pub const BIG_STREAM_EVENTS_MAX: u32 = 10_000_000;
/// Events in the stream of phase (b1), registration included.
const SMALL_STREAM_EVENTS: u32 = 10;
/// Default aggregate cache of phase (a cold): one entry, the least the store
/// keeps (0 means 1), so with 16 clients nearly every command loads cold.
const COLD_CACHE_ENTRIES_DEFAULT: usize = 1;
/// "Far smaller than the member set": at most a tenth of it.
const COLD_CACHE_SHARE_MAX: usize = 10;
/// Restarts whose first command on the big stream is timed (from its snapshot).
const SNAPSHOT_RESTARTS: usize = 5;
/// Rows of (c2) whose hashes are checked against the specification's SQL.
const C2_ROWS_CHECKED_MAX: i64 = 2_000;
/// Rows per (c2) statement at most (the group committer's limit).
const C2_BATCH_ROWS_MAX: f64 = group_commit::BATCH_ROWS_MAX as f64;
const TARGET_RATIO_A_C: f64 = 0.6;
const TARGET_RATIO_A_C2: f64 = 0.35;
const TARGET_RATIO_A_COLD_C: f64 = 0.3;
const TARGET_RATIO_B2_B1: f64 = 0.8;
const TARGET_B2_SNAPSHOT_LOAD_MS: f64 = 50.0;
/// Ratios are reported, and compared with their targets, at this precision.
const RATIO_DECIMALS: i32 = 3;
const RAW_TABLE: &str = "bench_raw_events";
const RAW_BATCHED_TABLE: &str = "bench_raw_batched";

#[derive(Debug, Clone, clap::Args)]
pub struct LedgerBenchArgs {
    /// Scratch database on the default shard's server; dropped and recreated.
    /// Its name must contain "bench" and differ from every configured shard's.
    #[arg(long, default_value = "wxcm_bench")]
    pub database: String,
    /// Length of each timed phase.
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
    /// Untimed run before each phase.
    #[arg(long, default_value_t = 1)]
    pub warmup_secs: u64,
    /// Concurrent clients of phases (a), (a cold), (c) and (c2).
    #[arg(long, default_value_t = 16)]
    pub clients: u32,
    /// Members registered for phases (a) and (a cold).
    #[arg(long, default_value_t = 1000)]
    pub members: u32,
    /// Aggregate cache entries of phase (a cold), at most a tenth of `--members`.
    #[arg(long, default_value_t = COLD_CACHE_ENTRIES_DEFAULT)]
    pub cold_cache_entries: usize,
    /// Events in the stream of phase (b2), registration included.
    #[arg(long, default_value_t = 100_000)]
    pub big_stream_events: u32,
    /// Group-commit statements in flight (the shard's `group_commit_workers`);
    /// the configured default shard's when not given.
    #[arg(long)]
    pub group_commit_workers: Option<usize>,
    /// Keep the bench database afterwards.
    #[arg(long)]
    pub keep: bool,
}

impl LedgerBenchArgs {
    fn validate(&self, settings: &Settings) -> Result<()> {
        ensure!(
            (1..=DURATION_SECS_MAX).contains(&self.duration_secs),
            "--duration-secs must be 1..={DURATION_SECS_MAX}"
        );
        ensure!(self.warmup_secs <= WARMUP_SECS_MAX, "--warmup-secs must be at most {WARMUP_SECS_MAX}");
        ensure!((1..=CLIENTS_MAX).contains(&self.clients), "--clients must be 1..={CLIENTS_MAX}");
        ensure!((1..=MEMBERS_MAX).contains(&self.members), "--members must be 1..={MEMBERS_MAX}");
        let cold_max = (self.members as usize / COLD_CACHE_SHARE_MAX).max(1);
        ensure!(
            (1..=cold_max).contains(&self.cold_cache_entries),
            "--cold-cache-entries must be 1..={cold_max} (a tenth of --members at most)"
        );
        ensure!(
            (2..=BIG_STREAM_EVENTS_MAX).contains(&self.big_stream_events),
            "--big-stream-events must be 2..={BIG_STREAM_EVENTS_MAX}"
        );
        if let Some(workers) = self.group_commit_workers {
            ensure!(
                (1..=group_commit::WORKERS_MAX).contains(&workers),
                "--group-commit-workers must be 1..={}",
                group_commit::WORKERS_MAX
            );
        }
        setup::check_database_name(&self.database, settings)
    }

    /// The bench shard's settings with `cache_entries` aggregates cached.
    fn settings(&self, base: &Settings, target: &Target, cache_entries: usize) -> Settings {
        let mut settings = target.settings(base, self.clients + POOL_SPARE_CONNECTIONS, cache_entries);
        let default_shard = settings.default_shard.clone();
        if let (Some(workers), Some(shard)) = (self.group_commit_workers, settings.shards.get_mut(&default_shard)) {
            shard.group_commit_workers = workers;
        }
        settings
    }

    fn warmup(&self) -> Duration {
        Duration::from_secs(self.warmup_secs)
    }

    fn window(&self) -> Duration {
        Duration::from_secs(self.duration_secs)
    }
}

// ---------------------------------------------------------------------------------
// (a) and (a cold): commands on random members
// ---------------------------------------------------------------------------------

/// `clients` tasks, DepositCash on random members; the group committer's
/// statements during the timed window.
async fn deposits_on_random_members(
    app: &Arc<App>,
    tenant: &TenantId,
    members: &Arc<Vec<MemberId>>,
    phase: &'static str,
    args: &LedgerBenchArgs,
) -> Result<(Outcome, CommitStats)> {
    let (app, tenant, members) = (app.clone(), tenant.clone(), members.clone());
    let (warmup, window) = (args.warmup(), args.window());
    // The driver counts operations that start after the warm-up and end in the
    // window; the statements are read at the same two instants.
    let batches = tokio::spawn(async move {
        tokio::time::sleep(warmup).await;
        let before = group_commit::stats();
        tokio::time::sleep(window).await;
        group_commit::stats().since(before)
    });
    let outcome = closed_loop(args.clients, warmup, window, move |client, n| {
        let (app, tenant, members) = (app.clone(), tenant.clone(), members.clone());
        async move {
            let member = members[rand::random_range(0..members.len())];
            deposit(&app, &tenant, member, &format!("bench-{phase}-{client}-{n}")).await.map(drop)
        }
    })
    .await?;
    Ok((outcome, batches.await.context("reading the commit statistics")?))
}

struct ColdFigures {
    outcome: Outcome,
    batches: CommitStats,
    /// Average events per member stream when the phase started.
    stream_events_avg: f64,
}

/// (a cold): a fresh application (empty cache) with a cache far smaller than the members.
async fn phase_a_cold(
    base: &Settings,
    target: &Target,
    admin: &PgPool,
    tenant: &TenantId,
    members: &Arc<Vec<MemberId>>,
    args: &LedgerBenchArgs,
) -> Result<ColdFigures> {
    let ids: Vec<String> = members.iter().map(ToString::to_string).collect();
    let stream_events_avg: f64 = sqlx::query_scalar(
        "SELECT (count(*)::float8 / greatest(count(DISTINCT aggregate_id), 1))
           FROM events WHERE aggregate_type = 'member' AND aggregate_id = ANY($1)",
    )
    .bind(&ids)
    .fetch_one(admin)
    .await?;
    let settings = args.settings(base, target, args.cold_cache_entries);
    let cold = setup::build(&settings, Role::Scheduler).await?;
    let result = deposits_on_random_members(&cold.app, tenant, members, "acold", args).await;
    setup::close(&cold).await;
    let (outcome, batches) = result?;
    Ok(ColdFigures { outcome, batches, stream_events_avg })
}

// ---------------------------------------------------------------------------------
// (c) and (c2): the same rows without the application
// ---------------------------------------------------------------------------------

/// The shape of `events` (columns, defaults, primary key, indexes), no triggers.
async fn create_raw_table(admin: &PgPool, table: &str) -> Result<()> {
    sqlx::query(&format!(
        "CREATE TABLE {table} (LIKE events INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES)"
    ))
    .execute(admin)
    .await?;
    sqlx::query(&format!("GRANT SELECT, INSERT ON {table} TO wxcm_app")).execute(admin).await?;
    Ok(())
}

/// A payload and metadata the size of a real deposit's.
fn raw_row_sample(tenant: &TenantId) -> Result<(serde_json::Value, serde_json::Value)> {
    let event = MemberEvent::CashDeposited {
        amount_fen: AmountFen::new(1)?,
        provenance: Provenance {
            actor: bench_actor(),
            reason: Reference::parse("bench")?,
            reference: None,
            idempotency_key: key("bench-a-00-0000000")?,
        },
        balance_after_fen: BalanceFen::new(1_000).context("balance")?,
    };
    let metadata = json!({
        "tenant_id": tenant.as_str(),
        "idempotency_key": "bench-a-00-0000000",
        "request_hash": "0".repeat(64),
        "correlation_id": uuid::Uuid::nil().to_string(),
        "actor": "bench",
    });
    Ok((serde_json::to_value(event)?, metadata))
}

/// One connection per client (no pool in between: this is the machine's
/// limit, not ours); each client only ever locks its own.
async fn raw_connections(app_url: &str, clients: u32) -> Result<Vec<PgConnection>> {
    let mut connections = Vec::with_capacity(clients as usize);
    for _ in 0..clients {
        connections.push(PgConnection::connect(app_url).await.context("connecting a raw insert client")?);
    }
    Ok(connections)
}

/// (c) one autocommit INSERT per row, `clients` tasks, each on its own stream.
async fn phase_c(app_url: &str, tenant: &TenantId, args: &LedgerBenchArgs) -> Result<Outcome> {
    let (payload, metadata) = raw_row_sample(tenant)?;
    let connections: Arc<Vec<Mutex<PgConnection>>> =
        Arc::new(raw_connections(app_url, args.clients).await?.into_iter().map(Mutex::new).collect());
    closed_loop(args.clients, args.warmup(), args.window(), move |client, n| {
        let (connections, payload, metadata) = (connections.clone(), payload.clone(), metadata.clone());
        async move {
            let mut connection = connections[client as usize].lock().await;
            sqlx::query(&format!(
                "INSERT INTO {RAW_TABLE} (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)"
            ))
            .bind("member")
            .bind(format!("raw-{client}"))
            .bind(i64::try_from(n).unwrap_or(i64::MAX).saturating_add(1))
            .bind("CashDeposited")
            .bind("1")
            .bind(payload)
            .bind(metadata)
            .execute(&mut *connection)
            .await?;
            anyhow::Ok(())
        }
    })
    .await
}

/// The group committer's statement with the columns its trigger fills given by the client.
const C2_INSERT_SQL: &str = "
INSERT INTO bench_raw_batched (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata,
                               tenant_id, event_id, recorded_at, prev_hash, hash)
SELECT t.aggregate_type, t.aggregate_id, t.sequence, t.event_type, t.event_version, t.payload, t.metadata,
       t.tenant_id, t.event_id, t.recorded_at, t.prev_hash, t.hash
  FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::jsonb[], $7::jsonb[],
              $8::text[], $9::uuid[], $10::timestamptz[], $11::bytea[], $12::bytea[])
       WITH ORDINALITY AS t(aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata,
                            tenant_id, event_id, recorded_at, prev_hash, hash, ord)
 ORDER BY t.ord";

/// Rows in statement `n` of a client: a fixed sequence of the integers around
/// `avg` whose every run of m statements holds m × `avg` rows, give or take one.
fn batch_rows(avg: f64, n: u64) -> usize {
    let rows_through = |k: u64| (k as f64 * avg).floor() as u64;
    (rows_through(n + 1) - rows_through(n)).max(1) as usize
}

/// What (c2) writes besides the stream columns: the stored texts of the payload
/// and metadata, which the hash covers (jsonb's output, as the specification says).
struct RawSample {
    tenant: String,
    payload: serde_json::Value,
    metadata: serde_json::Value,
    payload_text: String,
    metadata_text: String,
}

/// The head of one (c2) stream: its last sequence and hash.
struct StreamHead {
    sequence: i64,
    hash: Vec<u8>,
}

/// A (c2) client: its connection and the heads of its streams.
type RawClient = (PgConnection, Vec<StreamHead>);

/// One (c2) row per stream of `heads[..rows]`, with its hash chained to the stream's.
struct RawBatch {
    ids: Vec<String>,
    sequences: Vec<i64>,
    event_ids: Vec<uuid::Uuid>,
    recorded_at: Vec<DateTime<Utc>>,
    prev_hashes: Vec<Vec<u8>>,
    hashes: Vec<Vec<u8>>,
}

fn raw_batch(client: u32, heads: &mut [StreamHead], rows: usize, sample: &RawSample) -> Result<RawBatch> {
    let mut batch = RawBatch {
        ids: Vec::with_capacity(rows),
        sequences: Vec::with_capacity(rows),
        event_ids: Vec::with_capacity(rows),
        recorded_at: Vec::with_capacity(rows),
        prev_hashes: Vec::with_capacity(rows),
        hashes: Vec::with_capacity(rows),
    };
    for (slot, head) in heads.iter_mut().take(rows).enumerate() {
        // Postgres keeps microseconds: hash the time it will store.
        let now = Utc::now();
        let recorded_at = DateTime::from_timestamp_micros(now.timestamp_micros()).context("time")?;
        let event = StoredEvent {
            tenant_id: sample.tenant.clone(),
            aggregate_type: "member".into(),
            aggregate_id: format!("raw2-{client}-{slot}"),
            sequence: head.sequence + 1,
            event_id: uuid::Uuid::new_v4(),
            recorded_at,
            event_type: "CashDeposited".into(),
            event_version: "1".into(),
            payload_text: sample.payload_text.clone(),
            metadata_text: sample.metadata_text.clone(),
            prev_hash: head.hash.clone(),
            hash: Vec::new(),
        };
        let hash = hashchain::chain_hash(&event.prev_hash, &hashchain::canonical_bytes(&event)).to_vec();
        batch.ids.push(event.aggregate_id);
        batch.sequences.push(event.sequence);
        batch.event_ids.push(event.event_id);
        batch.recorded_at.push(recorded_at);
        batch.prev_hashes.push(event.prev_hash);
        batch.hashes.push(hash.clone());
        *head = StreamHead { sequence: event.sequence, hash };
    }
    Ok(batch)
}

async fn insert_raw_batch(connection: &mut PgConnection, batch: RawBatch, sample: &RawSample) -> Result<()> {
    let rows = batch.ids.len();
    sqlx::query(C2_INSERT_SQL)
        .bind(vec!["member"; rows])
        .bind(batch.ids)
        .bind(batch.sequences)
        .bind(vec!["CashDeposited"; rows])
        .bind(vec!["1"; rows])
        .bind(vec![&sample.payload; rows])
        .bind(vec![&sample.metadata; rows])
        .bind(vec![sample.tenant.as_str(); rows])
        .bind(batch.event_ids)
        .bind(batch.recorded_at)
        .bind(batch.prev_hashes)
        .bind(batch.hashes)
        .execute(connection)
        .await?;
    Ok(())
}

/// (c2) `clients` tasks, autocommit multi-row INSERTs of `batch_rows_avg` rows
/// on average, each row on its own stream of the client's.
async fn phase_c2(
    app_url: &str,
    admin: &PgPool,
    tenant: &TenantId,
    batch_rows_avg: f64,
    args: &LedgerBenchArgs,
) -> Result<Outcome> {
    ensure!((1.0..=C2_BATCH_ROWS_MAX).contains(&batch_rows_avg), "(c2) batch of {batch_rows_avg} rows");
    let (payload, metadata) = raw_row_sample(tenant)?;
    let (payload_text, metadata_text): (String, String) = sqlx::query_as("SELECT $1::jsonb::text, $2::jsonb::text")
        .bind(&payload)
        .bind(&metadata)
        .fetch_one(admin)
        .await?;
    let sample = Arc::new(RawSample { tenant: tenant.to_string(), payload, metadata, payload_text, metadata_text });
    let streams = batch_rows_avg.ceil() as usize;
    let clients: Arc<Vec<Mutex<RawClient>>> = Arc::new(
        raw_connections(app_url, args.clients)
            .await?
            .into_iter()
            .map(|connection| {
                let heads = (0..streams).map(|_| StreamHead { sequence: 0, hash: GENESIS_HASH.to_vec() }).collect();
                Mutex::new((connection, heads))
            })
            .collect(),
    );
    closed_loop(args.clients, args.warmup(), args.window(), move |client, n| {
        let (clients, sample) = (clients.clone(), sample.clone());
        async move {
            let mut guard = clients[client as usize].lock().await;
            let (connection, heads) = &mut *guard;
            let rows = batch_rows(batch_rows_avg, n);
            let batch = raw_batch(client, heads, rows, &sample)?;
            insert_raw_batch(connection, batch, &sample).await?;
            anyhow::Ok(Rows(rows as u64))
        }
    })
    .await
}

/// (c2)'s hashes recomputed with the specification's SQL: the rows are what
/// the trigger would have written, not placeholders.
async fn c2_hash_mismatches(admin: &PgPool) -> Result<i64> {
    Ok(sqlx::query_scalar(&format!(
        "SELECT count(*) FILTER (WHERE hash <> sha256(prev_hash || convert_to('wxcm.event.v1', 'UTF8') || (
                SELECT string_agg(int4send(octet_length(convert_to(f.s, 'UTF8'))) || convert_to(f.s, 'UTF8'),
                                  ''::bytea ORDER BY f.n)
                  FROM unnest(ARRAY[tenant_id, aggregate_type, aggregate_id, sequence::text, event_id::text,
                                    to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),
                                    event_type, event_version, payload::text, metadata::text])
                       WITH ORDINALITY AS f(s, n))))
           FROM (SELECT * FROM {RAW_BATCHED_TABLE} LIMIT {C2_ROWS_CHECKED_MAX}) r"
    ))
    .fetch_one(admin)
    .await?)
}

// ---------------------------------------------------------------------------------
// (b1), (b2): one client, one member
// ---------------------------------------------------------------------------------

async fn single_member(
    app: &Arc<App>,
    tenant: &TenantId,
    member: MemberId,
    phase: &'static str,
    args: &LedgerBenchArgs,
) -> Result<Outcome> {
    let (app, tenant) = (app.clone(), tenant.clone());
    closed_loop(1, args.warmup(), args.window(), move |_, n| {
        let (app, tenant) = (app.clone(), tenant.clone());
        async move { deposit(&app, &tenant, member, &format!("bench-{phase}-{n}")).await.map(drop) }
    })
    .await
}

/// (b1) a member whose stream holds [`SMALL_STREAM_EVENTS`] events.
async fn phase_b1(app: &Arc<App>, tenant: &TenantId, args: &LedgerBenchArgs) -> Result<Outcome> {
    let member = register(app, tenant, "bench-b1-register").await?;
    for i in 1..SMALL_STREAM_EVENTS {
        deposit(app, tenant, member, &format!("bench-b1-seed-{i}")).await?;
    }
    single_member(app, tenant, member, "b1", args).await
}

struct BigStream {
    outcome: Outcome,
    seed: Duration,
    /// First command after a restart, no snapshot: the whole stream replayed.
    cold_load: Duration,
    /// First command after each restart with the snapshot the store wrote, ascending.
    snapshot_loads: Vec<Duration>,
    /// Events after the snapshot at the first of those restarts.
    snapshot_tail_events: i64,
}

/// The member's snapshot sequence (if any) and stream length.
async fn snapshot_and_length(admin: &PgPool, member: MemberId) -> Result<(Option<i64>, i64)> {
    let id = member.to_string();
    let snapshot: Option<i64> = sqlx::query_scalar(
        "SELECT sequence FROM aggregate_snapshots WHERE aggregate_type = 'member' AND aggregate_id = $1",
    )
    .bind(&id)
    .fetch_optional(admin)
    .await?;
    let length: i64 =
        sqlx::query_scalar("SELECT max(sequence) FROM events WHERE aggregate_type = 'member' AND aggregate_id = $1")
            .bind(&id)
            .fetch_one(admin)
            .await?;
    Ok((snapshot, length))
}

/// One deposit in a freshly built application (empty cache, new connections): a restart.
async fn first_command_after_restart(
    settings: &Settings,
    tenant: &TenantId,
    member: MemberId,
    key: &str,
) -> Result<Duration> {
    let fresh = setup::build(settings, Role::Scheduler).await?;
    let started = Instant::now();
    let result = deposit(&fresh.app, tenant, member, key).await;
    let elapsed = started.elapsed();
    setup::close(&fresh).await;
    result?;
    Ok(elapsed)
}

/// (b2) a member whose stream holds `--big-stream-events` events, seeded in SQL
/// (no snapshot). The first command after a restart replays it all and the
/// store writes a snapshot (it does after every load that replayed 100 events
/// or more, and on commits crossing a multiple of 100); then the phase; then
/// the first command after another restart, which reads that snapshot and the tail.
async fn phase_b2(
    settings: &Settings,
    app: &Arc<App>,
    admin: &PgPool,
    tenant: &TenantId,
    args: &LedgerBenchArgs,
) -> Result<BigStream> {
    let member = register(app, tenant, "bench-b2-register").await?;
    let seeding = Instant::now();
    seed_deposits(admin, tenant, &[member], args.big_stream_events).await?;
    let seed = seeding.elapsed();
    tracing::info!(events = args.big_stream_events, seed_ms = seed.as_millis() as u64, "big stream seeded");
    let (snapshot, _) = snapshot_and_length(admin, member).await?;
    ensure!(snapshot.is_none(), "the seeded stream has a snapshot before its first load");
    let cold = setup::build(settings, Role::Scheduler).await?;
    let loading = Instant::now();
    let first = deposit(&cold.app, tenant, member, "bench-b2-cold").await;
    let cold_load = loading.elapsed();
    let outcome = match first {
        Ok(_) => single_member(&cold.app, tenant, member, "b2", args).await,
        Err(e) => Err(e),
    };
    setup::close(&cold).await;
    let outcome = outcome?;

    let (snapshot, length) = snapshot_and_length(admin, member).await?;
    let snapshot = snapshot.context("the store wrote no snapshot of the big stream after replaying it")?;
    let snapshot_tail_events = length - snapshot;
    tracing::info!(snapshot, length, "restart: first command from the snapshot");
    let mut snapshot_loads = Vec::with_capacity(SNAPSHOT_RESTARTS);
    for restart in 0..SNAPSHOT_RESTARTS {
        let key = format!("bench-b2-snapshot-{restart}");
        snapshot_loads.push(first_command_after_restart(settings, tenant, member, &key).await?);
    }
    snapshot_loads.sort_unstable();
    Ok(BigStream { outcome, seed, cold_load, snapshot_loads, snapshot_tail_events })
}

// ---------------------------------------------------------------------------------
// run
// ---------------------------------------------------------------------------------

struct Figures {
    a: Outcome,
    a_batches: CommitStats,
    a_cold: ColdFigures,
    c: Outcome,
    c2: Outcome,
    c2_hash_mismatches: i64,
    b1: Outcome,
    b2: BigStream,
    server_version: String,
    synchronous_commit: String,
    group_commit_workers: usize,
}

impl BigStream {
    fn snapshot_load_ms(&self) -> f64 {
        round(ms(self.snapshot_loads[self.snapshot_loads.len() / 2]), 1)
    }

    fn snapshot_load_max_ms(&self) -> f64 {
        round(ms(self.snapshot_loads.last().copied().unwrap_or_default()), 1)
    }
}

impl Figures {
    fn counts(&self) -> Counts {
        [&self.a, &self.a_cold.outcome, &self.c, &self.c2, &self.b1, &self.b2.outcome].iter().map(|o| o.counts()).sum()
    }

    fn a_batch_rows_avg(&self) -> f64 {
        self.a_batches.rows_per_statement().unwrap_or(1.0)
    }

    fn ratio_a_c(&self) -> f64 {
        round(self.a.per_second() / self.c.per_second(), RATIO_DECIMALS)
    }

    fn ratio_a_c2(&self) -> f64 {
        round(self.a.per_second() / self.c2.units_per_second(), RATIO_DECIMALS)
    }

    fn ratio_a_cold_c(&self) -> f64 {
        round(self.a_cold.outcome.per_second() / self.c.per_second(), RATIO_DECIMALS)
    }

    fn ratio_b2_b1(&self) -> f64 {
        round(self.b2.outcome.per_second() / self.b1.per_second(), RATIO_DECIMALS)
    }

    /// Checks besides errors and skips; each failure fails the run.
    fn failed_checks(&self) -> Vec<String> {
        let mut failed = Vec::new();
        if self.c2_hash_mismatches != 0 {
            failed.push(format!("{} (c2) rows do not verify against the hash-chain SQL", self.c2_hash_mismatches));
        }
        for (phase, outcome) in [("a", &self.a), ("a cold", &self.a_cold.outcome), ("c", &self.c), ("c2", &self.c2)] {
            if outcome.ok == 0 {
                failed.push(format!("phase {phase}: no operation completed in the window"));
            }
        }
        if self.a_batches.statements == 0 {
            failed.push("phase a: no group-commit statement in the window".into());
        }
        failed
    }
}

async fn run_phases(base: &Settings, target: &Target, args: &LedgerBenchArgs) -> Result<Figures> {
    target.recreate().await?;
    let admin = target.admin_pool(2).await?;
    create_raw_table(&admin, RAW_TABLE).await?;
    create_raw_table(&admin, RAW_BATCHED_TABLE).await?;
    let settings = args.settings(base, target, setup::cache_for(args.members));
    let application = setup::build(&settings, Role::Scheduler).await?;
    let app = application.app.clone();
    let tenant = setup::create_tenant(&app).await?;
    tracing::info!(members = args.members, "registering members");
    let members = Arc::new(register_members(&app, &tenant, "bench-register", args.members, args.clients).await?);

    tracing::info!(clients = args.clients, "phase a: deposits on random members");
    let (a, a_batches) = deposits_on_random_members(&app, &tenant, &members, "a", args).await?;
    tracing::info!(clients = args.clients, cache_entries = args.cold_cache_entries, "phase a cold: small cache");
    let a_cold = phase_a_cold(base, target, &admin, &tenant, &members, args).await?;
    tracing::info!(clients = args.clients, "phase c: raw single-row inserts");
    let c = phase_c(&target.app_url, &tenant, args).await?;
    let batch_rows_avg = a_batches.rows_per_statement().unwrap_or(1.0).clamp(1.0, C2_BATCH_ROWS_MAX);
    tracing::info!(clients = args.clients, batch_rows_avg, "phase c2: raw multi-row inserts");
    let c2 = phase_c2(&target.app_url, &admin, &tenant, batch_rows_avg, args).await?;
    let c2_hash_mismatches = c2_hash_mismatches(&admin).await?;
    tracing::info!("phase b1: one member, {SMALL_STREAM_EVENTS} events");
    let b1 = phase_b1(&app, &tenant, args).await?;
    tracing::info!(events = args.big_stream_events, "phase b2: one member, big stream");
    let b2 = phase_b2(&settings, &app, &admin, &tenant, args).await?;

    let server_version = setup::server_setting(&admin, "server_version").await;
    let synchronous_commit = setup::server_setting(&admin, "synchronous_commit").await;
    setup::close(&application).await;
    admin.close().await;
    let group_commit_workers = settings.shards.get(&settings.default_shard).map_or(0, |s| s.group_commit_workers);
    Ok(Figures {
        a,
        a_batches,
        a_cold,
        c,
        c2,
        c2_hash_mismatches,
        b1,
        b2,
        server_version,
        synchronous_commit,
        group_commit_workers,
    })
}

/// `wxcm bench ledger`.
pub async fn bench_ledger(settings: &Settings, args: LedgerBenchArgs) -> Result<()> {
    args.validate(settings)?;
    let target = Target::new(settings, &args.database)?;
    let outcome = run_phases(settings, &target, &args).await;
    target.finish(args.keep).await;
    let f = outcome?;
    for (phase, o) in [("a", &f.a), ("a cold", &f.a_cold.outcome), ("c", &f.c), ("c2", &f.c2), ("b1", &f.b1)] {
        o.warn_errors(phase);
    }
    f.b2.outcome.warn_errors("b2");
    setup::finish("ledger", &report_table(&f, &args), report_json(&f, &args), f.counts(), &f.failed_checks())
}

// ---------------------------------------------------------------------------------
// report
// ---------------------------------------------------------------------------------

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn report_json(f: &Figures, args: &LedgerBenchArgs) -> serde_json::Value {
    let (a, c) = (f.a.per_second(), f.c.per_second());
    json!({
        "a_commands_per_s": round(a, 1),
        "a_batch_rows_avg": round(f.a_batch_rows_avg(), 2),
        "a_cold_commands_per_s": round(f.a_cold.outcome.per_second(), 1),
        "a_cold_cache_entries": args.cold_cache_entries,
        "a_cold_stream_events_avg": round(f.a_cold.stream_events_avg, 1),
        "a_cold_batch_rows_avg": round(f.a_cold.batches.rows_per_statement().unwrap_or(0.0), 2),
        "c_inserts_per_s": round(c, 1),
        "c2_rows_per_s": round(f.c2.units_per_second(), 1),
        "c2_batch_rows_avg": round(f.c2.units as f64 / f.c2.ok.max(1) as f64, 2),
        "b1_commands_per_s": round(f.b1.per_second(), 1),
        "b2_commands_per_s": round(f.b2.outcome.per_second(), 1),
        "b2_cold_load_ms": round(ms(f.b2.cold_load), 1),
        "b2_snapshot_load_ms": f.b2.snapshot_load_ms(),
        "b2_snapshot_load_max_ms": f.b2.snapshot_load_max_ms(),
        "b2_snapshot_tail_events": f.b2.snapshot_tail_events,
        "ratio_a_c": f.ratio_a_c(),
        "ratio_a_c2": f.ratio_a_c2(),
        "ratio_a_cold_c": f.ratio_a_cold_c(),
        "ratio_b2_b1": f.ratio_b2_b1(),
        "target_ratio_a_c": TARGET_RATIO_A_C,
        "target_ratio_a_c2": TARGET_RATIO_A_C2,
        "target_ratio_a_cold_c": TARGET_RATIO_A_COLD_C,
        "target_ratio_b2_b1": TARGET_RATIO_B2_B1,
        "target_b2_snapshot_load_ms": TARGET_B2_SNAPSHOT_LOAD_MS,
        "duration_secs": args.duration_secs,
        "clients": args.clients,
        "group_commit_workers": f.group_commit_workers,
        "members": args.members,
    })
}

fn phase_row(table: &mut Table, figure: String, o: &Outcome, value: f64, unit: &str) {
    table.add_row(vec![
        Cell::new(figure),
        number(format!("{value:.1}")),
        Cell::new(unit),
        Cell::new(""),
        number(format!("{:.2} / {:.2} / {:.2}", o.latency_ms(0.5), o.latency_ms(0.99), o.latency_ms(1.0))),
        number(format!("{} / {}", o.ok, o.errors)),
    ]);
}

fn info_row(table: &mut Table, figure: &str, value: String, unit: &str, target: String) {
    table.add_row(vec![
        Cell::new(figure),
        number(value),
        Cell::new(unit),
        Cell::new(target),
        Cell::new(""),
        Cell::new(""),
    ]);
}

fn ratio_row(table: &mut Table, figure: &str, ratio: f64, target: f64) {
    info_row(table, figure, format!("{ratio:.3}"), "ratio", format!(">= {target} ({})", verdict(ratio >= target)));
}

fn report_table(f: &Figures, args: &LedgerBenchArgs) -> Table {
    let mut table = Table::new();
    table.load_preset(presets::UTF8_FULL_CONDENSED).set_header(vec![
        "figure",
        "value",
        "unit",
        "target",
        "latency p50 / p99 / max ms",
        "ops / errors",
    ]);
    let clients = args.clients;
    phase_row(
        &mut table,
        format!("(a) deposits, {clients} clients, random members"),
        &f.a,
        f.a.per_second(),
        "commands/s",
    );
    info_row(
        &mut table,
        "(a) rows per group-commit statement",
        format!("{:.2}", f.a_batch_rows_avg()),
        "rows",
        String::new(),
    );
    let cold = &f.a_cold.outcome;
    phase_row(
        &mut table,
        format!("(a cold) deposits, cache of {} for {} members", args.cold_cache_entries, args.members),
        cold,
        cold.per_second(),
        "commands/s",
    );
    info_row(
        &mut table,
        "(a cold) events per member stream at its start",
        format!("{:.1}", f.a_cold.stream_events_avg),
        "events",
        String::new(),
    );
    phase_row(&mut table, format!("(c) raw INSERT+COMMIT, {clients} clients"), &f.c, f.c.per_second(), "inserts/s");
    phase_row(
        &mut table,
        format!("(c2) raw multi-row INSERT, {clients} clients, {:.2} rows", f.c2.units as f64 / f.c2.ok.max(1) as f64),
        &f.c2,
        f.c2.units_per_second(),
        "rows/s",
    );
    ratio_row(&mut table, "a / c", f.ratio_a_c(), TARGET_RATIO_A_C);
    ratio_row(&mut table, "a / c2", f.ratio_a_c2(), TARGET_RATIO_A_C2);
    ratio_row(&mut table, "a cold / c", f.ratio_a_cold_c(), TARGET_RATIO_A_COLD_C);
    phase_row(
        &mut table,
        format!("(b1) 1 client, stream of {SMALL_STREAM_EVENTS}"),
        &f.b1,
        f.b1.per_second(),
        "commands/s",
    );
    let b2 = &f.b2.outcome;
    phase_row(
        &mut table,
        format!("(b2) 1 client, stream of {}", args.big_stream_events),
        b2,
        b2.per_second(),
        "commands/s",
    );
    ratio_row(&mut table, "b2 / b1", f.ratio_b2_b1(), TARGET_RATIO_B2_B1);
    info_row(
        &mut table,
        "(b2) first command, no snapshot (full replay)",
        format!("{:.1}", ms(f.b2.cold_load)),
        "ms",
        String::new(),
    );
    let snapshot_ms = f.b2.snapshot_load_ms();
    info_row(
        &mut table,
        &format!(
            "(b2) first command after a restart, snapshot + {} events (median / max of {SNAPSHOT_RESTARTS})",
            f.b2.snapshot_tail_events
        ),
        format!("{snapshot_ms:.1} / {:.1}", f.b2.snapshot_load_max_ms()),
        "ms",
        format!("<= {TARGET_B2_SNAPSHOT_LOAD_MS} ({})", verdict(snapshot_ms <= TARGET_B2_SNAPSHOT_LOAD_MS)),
    );
    info_row(&mut table, "(b2) seeding the stream in SQL", format!("{:.1}", ms(f.b2.seed)), "ms", String::new());
    info_row(&mut table, "postgres server_version", f.server_version.clone(), "", String::new());
    info_row(&mut table, "postgres synchronous_commit", f.synchronous_commit.clone(), "", String::new());
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_checked_at_and_past_the_edge() {
        let settings = Settings::default();
        let args = LedgerBenchArgs {
            database: "wxcm_bench".into(),
            duration_secs: DURATION_SECS_MAX,
            warmup_secs: WARMUP_SECS_MAX,
            clients: CLIENTS_MAX,
            members: MEMBERS_MAX,
            cold_cache_entries: MEMBERS_MAX as usize / COLD_CACHE_SHARE_MAX,
            big_stream_events: BIG_STREAM_EVENTS_MAX,
            group_commit_workers: Some(group_commit::WORKERS_MAX),
            keep: false,
        };
        assert!(args.validate(&settings).is_ok());
        let past = [
            LedgerBenchArgs { duration_secs: DURATION_SECS_MAX + 1, ..args.clone() },
            LedgerBenchArgs { warmup_secs: WARMUP_SECS_MAX + 1, ..args.clone() },
            LedgerBenchArgs { clients: CLIENTS_MAX + 1, ..args.clone() },
            LedgerBenchArgs { clients: 0, ..args.clone() },
            LedgerBenchArgs { members: MEMBERS_MAX + 1, ..args.clone() },
            LedgerBenchArgs { cold_cache_entries: MEMBERS_MAX as usize / COLD_CACHE_SHARE_MAX + 1, ..args.clone() },
            LedgerBenchArgs { cold_cache_entries: 0, ..args.clone() },
            LedgerBenchArgs { big_stream_events: BIG_STREAM_EVENTS_MAX + 1, ..args.clone() },
            LedgerBenchArgs { big_stream_events: 1, ..args.clone() },
            LedgerBenchArgs { database: "wxcm".into(), ..args.clone() },
            LedgerBenchArgs { group_commit_workers: Some(0), ..args.clone() },
            LedgerBenchArgs { group_commit_workers: Some(group_commit::WORKERS_MAX + 1), ..args.clone() },
        ];
        for bad in past {
            assert!(bad.validate(&settings).is_err(), "{bad:?}");
        }
        let few = LedgerBenchArgs { members: 5, cold_cache_entries: 1, ..args };
        assert!(few.validate(&settings).is_ok(), "one entry is allowed for any member count");
    }

    #[test]
    fn batch_rows_average_what_was_asked() {
        for avg in [1.0, 3.5, 6.87, 7.0, 12.25] {
            let rows: Vec<usize> = (0..1000).map(|n| batch_rows(avg, n)).collect();
            let total: usize = rows.iter().sum();
            assert!((total as f64 - avg * 1000.0).abs() <= 1.0, "avg {avg}: {total}");
            assert!(rows.iter().all(|&r| r == avg.floor() as usize || r == avg.ceil() as usize), "avg {avg}");
            // Any run of statements holds its share, give or take one row.
            let run: usize = rows[17..117].iter().sum();
            assert!((run as f64 - avg * 100.0).abs() <= 1.0, "avg {avg}: a run of 100 held {run}");
        }
    }

    #[test]
    fn c2_rows_chain_their_hashes_per_stream() {
        let sample = RawSample {
            tenant: "bench".into(),
            payload: json!({}),
            metadata: json!({}),
            payload_text: "{}".into(),
            metadata_text: "{\"tenant_id\": \"bench\"}".into(),
        };
        let mut heads: Vec<StreamHead> =
            (0..3).map(|_| StreamHead { sequence: 0, hash: GENESIS_HASH.to_vec() }).collect();
        let first = raw_batch(4, &mut heads, 2, &sample).unwrap();
        let second = raw_batch(4, &mut heads, 3, &sample).unwrap();
        assert_eq!(first.ids, ["raw2-4-0", "raw2-4-1"]);
        assert_eq!(second.sequences, [2, 2, 1], "each stream counts its own rows");
        assert_eq!(first.prev_hashes[0], GENESIS_HASH.to_vec());
        assert_eq!(second.prev_hashes[0], first.hashes[0], "linked to the stream's last hash");
        assert_eq!(second.prev_hashes[2], GENESIS_HASH.to_vec(), "a new stream starts at genesis");
        let stored = StoredEvent {
            tenant_id: "bench".into(),
            aggregate_type: "member".into(),
            aggregate_id: "raw2-4-0".into(),
            sequence: 2,
            event_id: second.event_ids[0],
            recorded_at: second.recorded_at[0],
            event_type: "CashDeposited".into(),
            event_version: "1".into(),
            payload_text: sample.payload_text.clone(),
            metadata_text: sample.metadata_text.clone(),
            prev_hash: second.prev_hashes[0].clone(),
            hash: second.hashes[0].clone(),
        };
        let earlier = StoredEvent {
            sequence: 1,
            event_id: first.event_ids[0],
            recorded_at: first.recorded_at[0],
            prev_hash: GENESIS_HASH.to_vec(),
            hash: first.hashes[0].clone(),
            ..stored.clone()
        };
        assert!(hashchain::verify_stream(&[earlier, stored]).is_empty(), "the verifier accepts the chain");
    }
}
