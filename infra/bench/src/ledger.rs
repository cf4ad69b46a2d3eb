//! `wxcm bench ledger`: durable single-event commands per second through the
//! real command path (`wxcm_commands::ledger_requests::execute` → executor →
//! `PgEventStore` → postgres-es INSERT + triggers → COMMIT, with
//! `synchronous_commit` left as the server has it), next to the physical limit
//! of the machine (raw single-row INSERT + COMMIT).
//!
//! Phases, each after a warm-up that is not counted:
//! - (a) `--clients` tasks depositing 1 fen on random members;
//! - (c) the same concurrency of autocommit INSERTs into `bench_raw_events`, a
//!   table shaped like `events` (columns, keys, indexes) without triggers;
//! - (b1) one client on one member whose stream holds 10 events;
//! - (b2) one client on one member whose stream holds `--big-stream-events`
//!   events, seeded in SQL; its first command (cold load: whole-stream replay,
//!   then a snapshot) is timed on its own, in a freshly built application.
//!
//! Everything runs in a dedicated database that is dropped and recreated first
//! and dropped again at the end (unless `--keep`). The last line of stdout is
//! one JSON object.

use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use comfy_table::{presets, Cell, CellAlignment, Table};
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use wxcm_commands::ledger_requests::{self, LedgerRequest};
use wxcm_commands::members::{self, RegisterRequest};
use wxcm_commands::{App, CommandContext};
use wxcm_domain::member::{CardLevel, MemberEvent, Provenance, RegistrationSource};
use wxcm_domain::{Actor, AmountFen, BalanceFen, DomainEventMeta, IdempotencyKey, MemberId, Reference, TenantId};

use wxcm_server::app::{Application, BuildOptions, Role};
use wxcm_server::config::{Settings, ShardConfig, POOL_MAX_LIMIT};
use wxcm_server::sealer::AesGcmSealer;
use wxcm_store::store::CACHE_ENTRIES_DEFAULT;

/// Connections beyond one per client: registrations' lookups, snapshots, slack.
pub(crate) const POOL_SPARE_CONNECTIONS: u32 = 4;
pub const CLIENTS_MAX: u32 = POOL_MAX_LIMIT - POOL_SPARE_CONNECTIONS;
pub const DURATION_SECS_MAX: u64 = 3_600;
pub const WARMUP_SECS_MAX: u64 = 600;
pub const MEMBERS_MAX: u32 = 100_000;
/// postgres-es binds sequences as i32; stay far below.
pub const BIG_STREAM_EVENTS_MAX: u32 = 10_000_000;
/// Events in the stream of phase (b1), registration included.
const SMALL_STREAM_EVENTS: u32 = 10;
const DATABASE_NAME_BYTES_MAX: usize = 63;
/// Latencies are recorded in microseconds, up to one minute.
const LATENCY_US_MAX: u64 = 60_000_000;
const TARGET_RATIO_A_C: f64 = 0.6;
const TARGET_RATIO_B2_B1: f64 = 0.8;
pub(crate) const TENANT: &str = "bench";
const MAINTENANCE_DATABASE: &str = "postgres";
/// Fixed key: the bench never stores a secret, but the application needs a sealer.
const BENCH_SEALER_KEY: [u8; 32] = [0x42; 32];

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
    /// Concurrent clients of phases (a) and (c).
    #[arg(long, default_value_t = 16)]
    pub clients: u32,
    /// Members registered for phase (a).
    #[arg(long, default_value_t = 1000)]
    pub members: u32,
    /// Events in the stream of phase (b2), registration included.
    #[arg(long, default_value_t = 100_000)]
    pub big_stream_events: u32,
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
        ensure!(
            (2..=BIG_STREAM_EVENTS_MAX).contains(&self.big_stream_events),
            "--big-stream-events must be 2..={BIG_STREAM_EVENTS_MAX}"
        );
        check_database_name(&self.database, settings)
    }
}

/// The bench drops this database: refuse anything that could be real data.
pub(crate) fn check_database_name(name: &str, settings: &Settings) -> Result<()> {
    ensure!(
        !name.is_empty()
            && name.len() <= DATABASE_NAME_BYTES_MAX
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
        "--database must be 1..={DATABASE_NAME_BYTES_MAX} characters of a-z 0-9 _"
    );
    ensure!(name.contains("bench"), "--database must contain \"bench\" (it is dropped)");
    for (shard, config) in &settings.shards {
        for url in [&config.url, &config.admin_url] {
            let configured = PgConnectOptions::from_str(url).ok().and_then(|o| o.get_database().map(str::to_owned));
            ensure!(configured.as_deref() != Some(name), "--database {name} is the database of shard {shard}");
        }
    }
    Ok(())
}

/// Where the bench runs: the default shard's server, another database.
pub(crate) struct Target {
    pub(crate) database: String,
    admin: PgConnectOptions,
    app_url: String,
    pub(crate) admin_url: String,
}

impl Target {
    pub(crate) fn new(settings: &Settings, database: &str) -> Result<Self> {
        let shard = settings.shards.get(&settings.default_shard).context("the default shard is not configured")?;
        let admin = PgConnectOptions::from_str(&shard.admin_url).context("default shard admin_url")?.database(database);
        let app = PgConnectOptions::from_str(&shard.url).context("default shard url")?.database(database);
        Ok(Target {
            database: database.to_owned(),
            admin_url: admin.to_url_lossy().to_string(),
            app_url: app.to_url_lossy().to_string(),
            admin,
        })
    }

    async fn maintenance(&self) -> Result<PgPool> {
        PgPoolOptions::new()
            .max_connections(1)
            .connect_with(self.admin.clone().database(MAINTENANCE_DATABASE))
            .await
            .context("connecting to the maintenance database as the administrator")
    }

    /// After a run: keep the database (`--keep`) or drop it, warning if that fails.
    pub(crate) async fn finish(&self, keep: bool) {
        if keep {
            tracing::info!(database = %self.database, "bench database kept");
        } else if let Err(e) = self.drop_database().await {
            tracing::warn!(error = %format!("{e:#}"), database = %self.database, "could not drop the bench database");
        }
    }

    pub(crate) async fn drop_database(&self) -> Result<()> {
        let pool = self.maintenance().await?;
        let statement = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.database);
        sqlx::query(&statement).execute(&pool).await.with_context(|| format!("dropping {}", self.database))?;
        pool.close().await;
        Ok(())
    }

    /// A settings copy with one shard, `bench`, on the bench database.
    pub(crate) fn settings(&self, base: &Settings, pool_max: u32, cached_members: u32) -> Settings {
        let mut settings = base.clone();
        let shard = ShardConfig {
            url: self.app_url.clone(),
            admin_url: self.admin_url.clone(),
            pool_max,
            aggregate_cache_entries: CACHE_ENTRIES_DEFAULT.max(cached_members as usize + 16),
        };
        settings.shards.clear();
        settings.shards.insert("bench".into(), shard);
        settings.tenant_shards.clear();
        settings.default_shard = "bench".into();
        settings
    }
}

// ---------------------------------------------------------------------------------
// driving clients
// ---------------------------------------------------------------------------------

type Op = Arc<dyn Fn(u32, u64) -> Pin<Box<dyn Future<Output = Result<()>> + Send>> + Send + Sync>;

/// Completed operations of one phase inside its timed window.
struct PhaseResult {
    ops: u64,
    errors: u64,
    first_error: Option<String>,
    window: Duration,
    latency_us: Histogram<u64>,
}

impl PhaseResult {
    fn per_second(&self) -> f64 {
        self.ops as f64 / self.window.as_secs_f64()
    }

    fn latency_ms(&self, quantile: f64) -> f64 {
        self.latency_us.value_at_quantile(quantile) as f64 / 1000.0
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("valid histogram bounds")
}

/// Runs `op` from `clients` tasks for `warmup + window`; counts only operations
/// that start after the warm-up and finish inside the window. Operation `n` of
/// client `c` is `op(c, n)`, numbered from 0 across warm-up and window.
async fn drive(clients: u32, warmup: Duration, window: Duration, op: Op) -> Result<PhaseResult> {
    let measure_from = Instant::now() + warmup;
    let end = measure_from + window;
    let mut tasks = Vec::with_capacity(clients as usize);
    for client in 0..clients {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut result = PhaseResult { ops: 0, errors: 0, first_error: None, window, latency_us: histogram() };
            let mut n = 0u64;
            loop {
                let started = Instant::now();
                if started >= end {
                    break;
                }
                let outcome = op(client, n).await;
                n += 1;
                let finished = Instant::now();
                if started < measure_from || finished > end {
                    continue;
                }
                match outcome {
                    Ok(()) => {
                        result.ops += 1;
                        result.latency_us.saturating_record(micros(finished - started));
                    }
                    Err(e) => {
                        result.errors += 1;
                        result.first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            result
        }));
    }
    let mut total = PhaseResult { ops: 0, errors: 0, first_error: None, window, latency_us: histogram() };
    for task in tasks {
        let part = task.await.context("a bench client panicked")?;
        total.ops += part.ops;
        total.errors += part.errors;
        total.first_error = total.first_error.or(part.first_error);
        total.latency_us.add(&part.latency_us).context("merging latencies")?;
    }
    if total.ops == 0 {
        bail!("no operation completed: {}", total.first_error.as_deref().unwrap_or("the window was too short"));
    }
    Ok(total)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

// ---------------------------------------------------------------------------------
// commands
// ---------------------------------------------------------------------------------

pub(crate) fn key(s: &str) -> Result<IdempotencyKey> {
    IdempotencyKey::parse(s).with_context(|| format!("idempotency key {s}"))
}

pub(crate) fn bench_actor() -> Actor {
    Actor::Admin { username: "bench".into() }
}

/// One durable DepositCash of 1 fen under a fresh idempotency key, through the
/// use case the admin API's deposits run (the same request is hashed); the
/// sequence of the event it committed.
pub(crate) async fn deposit(app: &App, tenant: &TenantId, member: MemberId, idempotency_key: &str) -> Result<u64> {
    let idempotency_key = key(idempotency_key)?;
    let request = LedgerRequest::CashDeposit {
        amount_fen: AmountFen::new(1)?,
        reason: Reference::parse("bench")?,
        reference: None,
    };
    let ctx = CommandContext::new(tenant.clone(), idempotency_key, "bench".into());
    let outcome = ledger_requests::execute(app, tenant, member, request, bench_actor(), &ctx).await?;
    ensure!(outcome.events.len() == 1 && !outcome.replayed, "deposit committed {} events", outcome.events.len());
    Ok(outcome.events[0].sequence)
}

async fn register(app: &App, tenant: &TenantId, idempotency_key: &str) -> Result<MemberId> {
    let idempotency_key = key(idempotency_key)?;
    let request =
        RegisterRequest { openid: None, source: RegistrationSource::Staff, card_level: CardLevel::standard() };
    let ctx = CommandContext::new(tenant.clone(), idempotency_key, "bench".into());
    let (view, _) = members::register(app, tenant, request, bench_actor(), &ctx).await?;
    Ok(view.member_id)
}

/// Registers `count` members; idempotency keys are `{key_prefix}-{i:08}`.
pub(crate) async fn register_members(
    app: &Arc<App>,
    tenant: &TenantId,
    key_prefix: &str,
    count: u32,
    concurrency: u32,
) -> Result<Vec<MemberId>> {
    futures::stream::iter(0..count)
        .map(|i| {
            let app = app.clone();
            let tenant = tenant.clone();
            async move { register(&app, &tenant, &format!("{key_prefix}-{i:08}")).await }
        })
        .buffer_unordered(concurrency as usize)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

// ---------------------------------------------------------------------------------
// phases
// ---------------------------------------------------------------------------------

struct Figures {
    a: PhaseResult,
    c: PhaseResult,
    b1: PhaseResult,
    b2: PhaseResult,
    b2_cold_load: Duration,
    b2_seed: Duration,
    server_version: String,
    synchronous_commit: String,
}

/// (a) `clients` tasks, DepositCash on random members.
async fn phase_a(
    app: &Arc<App>,
    tenant: &TenantId,
    members: Arc<Vec<MemberId>>,
    args: &LedgerBenchArgs,
) -> Result<PhaseResult> {
    let (app, tenant) = (app.clone(), tenant.clone());
    let op: Op = Arc::new(move |client, n| {
        let (app, tenant, members) = (app.clone(), tenant.clone(), members.clone());
        Box::pin(async move {
            let member = members[rand::random_range(0..members.len())];
            deposit(&app, &tenant, member, &format!("bench-a-{client}-{n}")).await.map(drop)
        })
    });
    drive(args.clients, secs(args.warmup_secs), secs(args.duration_secs), op).await
}

/// The shape of `events` (columns, defaults, primary key, indexes), no triggers.
async fn create_raw_table(admin: &PgPool) -> Result<()> {
    sqlx::query(
        "CREATE TABLE bench_raw_events (LIKE events INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES)",
    )
    .execute(admin)
    .await?;
    sqlx::query("GRANT SELECT, INSERT ON bench_raw_events TO wxcm_app").execute(admin).await?;
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

/// (c) one autocommit INSERT per row, `clients` tasks, each on its own stream and
/// its own connection (no pool in between: this is the machine's limit, not ours).
async fn phase_c(app_url: &str, tenant: &TenantId, args: &LedgerBenchArgs) -> Result<PhaseResult> {
    let (payload, metadata) = raw_row_sample(tenant)?;
    let mut connections = Vec::with_capacity(args.clients as usize);
    for _ in 0..args.clients {
        let connection = PgConnection::connect(app_url).await.context("connecting a raw insert client")?;
        connections.push(Arc::new(tokio::sync::Mutex::new(connection)));
    }
    let connections = Arc::new(connections);
    let op: Op = Arc::new(move |client, n| {
        let (connections, payload, metadata) = (connections.clone(), payload.clone(), metadata.clone());
        Box::pin(async move {
            // Each client only ever locks its own connection: never contended.
            let mut connection = connections[client as usize].lock().await;
            sqlx::query(
                "INSERT INTO bench_raw_events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind("member")
            .bind(format!("raw-{client}"))
            .bind(i64::try_from(n).unwrap_or(i64::MAX).saturating_add(1))
            .bind("CashDeposited")
            .bind("1")
            .bind(payload)
            .bind(metadata)
            .execute(&mut *connection)
            .await?;
            Ok(())
        })
    });
    drive(args.clients, secs(args.warmup_secs), secs(args.duration_secs), op).await
}

/// One client depositing on `member`.
async fn single_member(
    app: &Arc<App>,
    tenant: &TenantId,
    member: MemberId,
    phase: &'static str,
    args: &LedgerBenchArgs,
) -> Result<PhaseResult> {
    let (app, tenant) = (app.clone(), tenant.clone());
    let op: Op = Arc::new(move |_, n| {
        let (app, tenant) = (app.clone(), tenant.clone());
        Box::pin(async move { deposit(&app, &tenant, member, &format!("bench-{phase}-{n}")).await.map(drop) })
    });
    drive(1, secs(args.warmup_secs), secs(args.duration_secs), op).await
}

/// (b1) a member whose stream holds [`SMALL_STREAM_EVENTS`] events.
async fn phase_b1(app: &Arc<App>, tenant: &TenantId, args: &LedgerBenchArgs) -> Result<PhaseResult> {
    let member = register(app, tenant, "bench-b1-register").await?;
    for i in 1..SMALL_STREAM_EVENTS {
        deposit(app, tenant, member, &format!("bench-b1-seed-{i}")).await?;
    }
    single_member(app, tenant, member, "b1", args).await
}

/// The event the seed writes at `sequence`: 1 fen, balance after `sequence - 1`.
fn seeded_event(sequence: i64) -> Result<MemberEvent> {
    Ok(MemberEvent::CashDeposited {
        amount_fen: AmountFen::new(1)?,
        provenance: Provenance {
            actor: bench_actor(),
            reason: Reference::parse("bench-seed")?,
            reference: None,
            idempotency_key: key(&format!("bench-seed-{sequence}"))?,
        },
        balance_after_fen: BalanceFen::new(sequence - 1).context("balance")?,
    })
}

/// Appends `CashDeposited` events 2..=`events` to each registered member's stream
/// (whose only event is its registration) in one statement. The payload is serde's own serialization of [`seeded_event`] with
/// the balance and key replaced per row; the metadata has the tenant (the trigger
/// requires it and computes the hash chain) and no idempotency key (so the trigger
/// writes no idempotency rows).
pub(crate) async fn seed_deposits(admin: &PgPool, tenant: &TenantId, members: &[MemberId], events: u32) -> Result<()> {
    let Some(&member) = members.first() else { return Ok(()) };
    let ids: Vec<String> = members.iter().map(ToString::to_string).collect();
    let sample = seeded_event(1)?;
    let template = serde_json::to_value(&sample)?;
    for field in ["balance_after_fen", "idempotency_key"] {
        ensure!(template["CashDeposited"].get(field).is_some(), "CashDeposited serializes without {field}");
    }
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         SELECT 'member', m, g, $2, $3,
                jsonb_set(jsonb_set($4::jsonb, '{CashDeposited,balance_after_fen}', to_jsonb(g - 1)),
                          '{CashDeposited,idempotency_key}', to_jsonb('bench-seed-' || g)),
                jsonb_build_object('tenant_id', $5::text, 'actor', 'bench-seed')
           FROM unnest($1::text[]) AS m CROSS JOIN generate_series(2, $6::bigint) AS g
          ORDER BY m, g",
    )
    .bind(&ids)
    .bind(sample.event_type())
    .bind(sample.event_version())
    .bind(&template)
    .bind(tenant.as_str())
    .bind(i64::from(events))
    .execute(admin)
    .await
    .context("seeding deposits")?;
    // The last seeded row must read back as exactly the event serde would have written.
    let last: serde_json::Value = sqlx::query_scalar(
        "SELECT payload FROM events WHERE aggregate_type = 'member' AND aggregate_id = $1 AND sequence = $2",
    )
    .bind(member.to_string())
    .bind(i64::from(events))
    .fetch_one(admin)
    .await?;
    let decoded: MemberEvent = serde_json::from_value(last).context("a seeded event does not decode")?;
    ensure!(decoded == seeded_event(i64::from(events))?, "seeded event differs: {decoded:?}");
    Ok(())
}

/// (b2) a member whose stream holds `--big-stream-events` events. The first
/// command runs in a freshly built application (empty cache, no snapshot), so it
/// replays the whole stream and writes a snapshot; it is timed on its own.
async fn phase_b2(
    settings: &Settings,
    app: &Arc<App>,
    admin: &PgPool,
    tenant: &TenantId,
    args: &LedgerBenchArgs,
) -> Result<(PhaseResult, Duration, Duration)> {
    let member = register(app, tenant, "bench-b2-register").await?;
    let seeding = Instant::now();
    seed_deposits(admin, tenant, &[member], args.big_stream_events).await?;
    let seed = seeding.elapsed();
    tracing::info!(events = args.big_stream_events, seed_ms = seed.as_millis() as u64, "big stream seeded");
    let cold = build(settings).await?;
    let loading = Instant::now();
    deposit(&cold.app, tenant, member, "bench-b2-cold").await?;
    let cold_load = loading.elapsed();
    let result = single_member(&cold.app, tenant, member, "b2", args).await;
    close(&cold).await;
    Ok((result?, cold_load, seed))
}

/// The bench tenant, created on the bench shard.
pub(crate) async fn create_tenant(app: &App) -> Result<TenantId> {
    let tenant = TenantId::parse(TENANT)?;
    let ctx = CommandContext::new(tenant.clone(), key("bench-tenant-create")?, "bench".into());
    wxcm_commands::tenants::create(app, &tenant, "Bench", bench_actor(), &ctx).await?;
    Ok(tenant)
}

pub(crate) async fn build(settings: &Settings) -> Result<Application> {
    let sealer = AesGcmSealer::from_key(&BENCH_SEALER_KEY).context("bench sealer key")?;
    let options = BuildOptions { sealer: Some(Arc::new(sealer)), ..BuildOptions::default() };
    Ok(Application::build(settings.clone(), Role::Scheduler, options).await?)
}

pub(crate) async fn close(application: &Application) {
    for shard in application.shards.all() {
        shard.pool.close().await;
    }
}

pub(crate) async fn server_setting(pool: &PgPool, name: &str) -> String {
    sqlx::query_scalar::<_, String>("SELECT current_setting($1)")
        .bind(name)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

async fn run_phases(base: &Settings, target: &Target, args: &LedgerBenchArgs) -> Result<Figures> {
    wxcm_store::migrate::run_migrations(&target.admin_url).await.context("migrating the bench database")?;
    let admin = PgPoolOptions::new().max_connections(2).connect(&target.admin_url).await?;
    create_raw_table(&admin).await?;
    let settings = target.settings(base, args.clients + POOL_SPARE_CONNECTIONS, args.members);
    let application = build(&settings).await?;
    let app = application.app.clone();
    let tenant = create_tenant(&app).await?;
    tracing::info!(members = args.members, "registering members");
    let members = Arc::new(register_members(&app, &tenant, "bench-register", args.members, args.clients).await?);

    tracing::info!(clients = args.clients, "phase a: deposits on random members");
    let a = phase_a(&app, &tenant, members, args).await?;
    tracing::info!(clients = args.clients, "phase c: raw single-row inserts");
    let c = phase_c(&target.app_url, &tenant, args).await?;
    tracing::info!("phase b1: one member, {SMALL_STREAM_EVENTS} events");
    let b1 = phase_b1(&app, &tenant, args).await?;
    tracing::info!(events = args.big_stream_events, "phase b2: one member, big stream");
    let (b2, b2_cold_load, b2_seed) = phase_b2(&settings, &app, &admin, &tenant, args).await?;

    let server_version = server_setting(&admin, "server_version").await;
    let synchronous_commit = server_setting(&admin, "synchronous_commit").await;
    close(&application).await;
    admin.close().await;
    Ok(Figures { a, c, b1, b2, b2_cold_load, b2_seed, server_version, synchronous_commit })
}

// ---------------------------------------------------------------------------------
// report
// ---------------------------------------------------------------------------------

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

pub(crate) fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

pub(crate) fn machine() -> serde_json::Value {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_owned()).unwrap_or_default();
    let os = format!("{} {} {kernel}", std::env::consts::OS, std::env::consts::ARCH).trim_end().to_owned();
    json!({ "cpus": cpus, "os": os })
}

fn report_json(f: &Figures, args: &LedgerBenchArgs) -> serde_json::Value {
    let (a, c, b1, b2) = (f.a.per_second(), f.c.per_second(), f.b1.per_second(), f.b2.per_second());
    json!({
        "bench": "ledger",
        "machine": machine(),
        "a_commands_per_s": round(a, 1),
        "c_inserts_per_s": round(c, 1),
        "b1_commands_per_s": round(b1, 1),
        "b2_commands_per_s": round(b2, 1),
        "b2_cold_load_ms": round(f.b2_cold_load.as_secs_f64() * 1000.0, 1),
        "ratio_a_c": round(a / c, 3),
        "ratio_b2_b1": round(b2 / b1, 3),
        "target_ratio_a_c": TARGET_RATIO_A_C,
        "target_ratio_b2_b1": TARGET_RATIO_B2_B1,
        "duration_secs": args.duration_secs,
        "clients": args.clients,
    })
}

fn phase_row(table: &mut Table, figure: String, result: &PhaseResult, unit: &str) {
    table.add_row(vec![
        Cell::new(figure),
        number(format!("{:.1}", result.per_second())),
        Cell::new(unit),
        Cell::new(""),
        number(format!(
            "{:.2} / {:.2} / {:.2}",
            result.latency_ms(0.5),
            result.latency_ms(0.99),
            result.latency_ms(1.0)
        )),
        number(format!("{} / {}", result.ops, result.errors)),
    ]);
}

pub(crate) fn number(value: String) -> Cell {
    Cell::new(value).set_alignment(CellAlignment::Right)
}

fn ratio_row(table: &mut Table, figure: &str, ratio: f64, target: f64) {
    let verdict = if ratio >= target { "met" } else { "MISSED" };
    table.add_row(vec![
        Cell::new(figure),
        number(format!("{ratio:.3}")),
        Cell::new("ratio"),
        Cell::new(format!(">= {target} ({verdict})")),
        Cell::new(""),
        Cell::new(""),
    ]);
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
    phase_row(&mut table, format!("(a) deposits, {clients} clients, random members"), &f.a, "commands/s");
    phase_row(&mut table, format!("(c) raw INSERT+COMMIT, {clients} clients"), &f.c, "inserts/s");
    ratio_row(&mut table, "a / c", f.a.per_second() / f.c.per_second(), TARGET_RATIO_A_C);
    phase_row(&mut table, format!("(b1) 1 client, stream of {SMALL_STREAM_EVENTS}"), &f.b1, "commands/s");
    phase_row(&mut table, format!("(b2) 1 client, stream of {}", args.big_stream_events), &f.b2, "commands/s");
    ratio_row(&mut table, "b2 / b1", f.b2.per_second() / f.b1.per_second(), TARGET_RATIO_B2_B1);
    let info: [(&str, String, &str); 4] = [
        ("(b2) first command, cold load", format!("{:.1}", f.b2_cold_load.as_secs_f64() * 1000.0), "ms"),
        ("(b2) seeding the stream in SQL", format!("{:.1}", f.b2_seed.as_secs_f64() * 1000.0), "ms"),
        ("postgres server_version", f.server_version.clone(), ""),
        ("postgres synchronous_commit", f.synchronous_commit.clone(), ""),
    ];
    for (figure, value, unit) in info {
        table.add_row(vec![
            Cell::new(figure),
            number(value),
            Cell::new(unit),
            Cell::new(""),
            Cell::new(""),
            Cell::new(""),
        ]);
    }
    table
}

/// `wxcm bench ledger`.
pub async fn bench_ledger(settings: &Settings, args: LedgerBenchArgs) -> Result<()> {
    args.validate(settings)?;
    let target = Target::new(settings, &args.database)?;
    target.drop_database().await?;
    let outcome = run_phases(settings, &target, &args).await;
    target.finish(args.keep).await;
    let figures = outcome?;
    for (phase, result) in [("a", &figures.a), ("c", &figures.c), ("b1", &figures.b1), ("b2", &figures.b2)] {
        if let Some(e) = &result.first_error {
            tracing::warn!(phase, errors = result.errors, first = %e, "operations failed during the window");
        }
    }
    println!("{}", report_table(&figures, &args));
    println!("{}", report_json(&figures, &args));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_database_name_must_be_safe_to_drop() {
        let settings = Settings::default();
        assert!(check_database_name("wxcm_bench", &settings).is_ok());
        assert!(check_database_name(&format!("bench{}", "x".repeat(DATABASE_NAME_BYTES_MAX - 5)), &settings).is_ok());
        assert!(check_database_name(&format!("bench{}", "x".repeat(DATABASE_NAME_BYTES_MAX - 4)), &settings).is_err());
        assert!(check_database_name("wxcm", &settings).is_err(), "no bench in the name");
        assert!(check_database_name("wxcm_bench\"; drop", &settings).is_err());
        let mut shared = Settings::default();
        shared.shards.insert("b".into(), ShardConfig::local("wxcm_bench"));
        assert!(check_database_name("wxcm_bench", &shared).is_err(), "a configured shard");
    }

    #[test]
    fn seeded_event_has_the_fields_the_seed_sql_replaces() {
        let value = serde_json::to_value(seeded_event(5).unwrap()).unwrap();
        assert_eq!(value["CashDeposited"]["balance_after_fen"], 4);
        assert_eq!(value["CashDeposited"]["idempotency_key"], "bench-seed-5");
        assert_eq!(value["CashDeposited"]["amount_fen"], 1);
    }

    #[test]
    fn limits_are_checked_at_and_past_the_edge() {
        let settings = Settings::default();
        let args = LedgerBenchArgs {
            database: "wxcm_bench".into(),
            duration_secs: DURATION_SECS_MAX,
            warmup_secs: WARMUP_SECS_MAX,
            clients: CLIENTS_MAX,
            members: MEMBERS_MAX,
            big_stream_events: BIG_STREAM_EVENTS_MAX,
            keep: false,
        };
        assert!(args.validate(&settings).is_ok());
        assert!(LedgerBenchArgs { duration_secs: DURATION_SECS_MAX + 1, ..args.clone() }.validate(&settings).is_err());
        assert!(LedgerBenchArgs { warmup_secs: WARMUP_SECS_MAX + 1, ..args.clone() }.validate(&settings).is_err());
        assert!(LedgerBenchArgs { clients: CLIENTS_MAX + 1, ..args.clone() }.validate(&settings).is_err());
        assert!(LedgerBenchArgs { clients: 0, ..args.clone() }.validate(&settings).is_err());
        assert!(LedgerBenchArgs { members: MEMBERS_MAX + 1, ..args.clone() }.validate(&settings).is_err());
        assert!(LedgerBenchArgs { big_stream_events: BIG_STREAM_EVENTS_MAX + 1, ..args.clone() }
            .validate(&settings)
            .is_err());
        assert!(LedgerBenchArgs { big_stream_events: 1, ..args }.validate(&settings).is_err());
    }
}
