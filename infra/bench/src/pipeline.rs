//! `wxcm bench pipeline`: the whole write → read path in one process.
//!
//! - Lag: deposits offered open-loop at `--rate` per second on random members
//!   (each command issued on schedule; at most `--concurrency` are in flight,
//!   and a tick finding none free is counted as skipped, not delayed).
//!   The commit instant is when `members::execute` returned; the relay and the
//!   member projector run in-process against a private JetStream stream, and a
//!   poller reads `rm_members.version` of the members with outstanding events
//!   every `--poll-ms`. Lag = poll instant − commit instant, so each figure is
//!   late by at most one poll interval.
//! - Rebuild: `--rebuild-events` member events seeded in SQL (registered members,
//!   100 events each), then the library rebuild `wxcm projections rebuild members`
//!   runs; its events per second.
//!
//! The database is dedicated (the guard of `wxcm bench ledger`), the stream is
//! deleted at the end; the last line of stdout is one JSON object. A failed or
//! skipped deposit, or an event not visible within `--visible-timeout-secs`,
//! fails the run: the lag percentiles of a passing run cover every event offered.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use comfy_table::{presets, Cell, Table};
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use wxcm_commands::App;
use wxcm_domain::{MemberId, TenantId};
use wxcm_server::app::{Application, Role};
use wxcm_server::config::Settings;

use crate::driver::{open_loop, Counts, Outcome};
use crate::setup::{
    self, number, round, verdict, Target, CLIENTS_MAX, DURATION_SECS_MAX, MEMBERS_MAX, POOL_SPARE_CONNECTIONS,
};
use crate::workload::{deposit, register_members, seed_deposits};

pub const RATE_MAX: u32 = 20_000;
pub const REBUILD_EVENTS_MAX: u32 = 10_000_000;
/// Each rebuild member holds this many events, registration included.
pub const REBUILD_EVENTS_PER_MEMBER: u32 = 100;
pub const POLL_MS_MAX: u64 = 1_000;
pub const VISIBLE_TIMEOUT_SECS_MAX: u64 = 600;
/// The relay's and projector's connections, beyond the drivers'.
const WORKER_CONNECTIONS: u32 = 4;
pub const CONCURRENCY_MAX: u32 = CLIENTS_MAX - WORKER_CONNECTIONS;
/// Registered lag members must all be visible before the timed window.
const REGISTRATION_VISIBLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Members per seeding statement.
const SEED_MEMBERS_PER_STATEMENT: usize = 1_000;
const TARGET_LAG_P99_MS: f64 = 250.0;
const TARGET_REBUILD_EVENTS_PER_S: f64 = 20_000.0;
/// NATS stream prefix of the bench: `benchpl` and a random suffix.
const STREAM_PREFIX_BASE: &str = "benchpl";

#[derive(Debug, Clone, clap::Args)]
pub struct PipelineBenchArgs {
    /// Scratch database on the default shard's server; dropped and recreated.
    /// Its name must contain "bench" and differ from every configured shard's.
    #[arg(long, default_value = "wxcm_bench_pipeline")]
    pub database: String,
    /// Offered deposits per second (open loop).
    #[arg(long, default_value_t = 500)]
    pub rate: u32,
    /// Length of the timed window of the lag phase.
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
    /// Deposits in flight at most.
    #[arg(long, default_value_t = 64)]
    pub concurrency: u32,
    /// Members the deposits are spread over.
    #[arg(long, default_value_t = 1000)]
    pub members: u32,
    /// How often the read model is polled for visibility (each lag is late by
    /// at most this; polling much faster loads the database the projector writes).
    #[arg(long, default_value_t = 10)]
    pub poll_ms: u64,
    /// After the window, how long events may take to become visible.
    #[arg(long, default_value_t = 30)]
    pub visible_timeout_secs: u64,
    /// Member events seeded for the rebuild phase (100 per member).
    #[arg(long, default_value_t = 1_000_000)]
    pub rebuild_events: u32,
    /// Keep the bench database (and the stream) afterwards.
    #[arg(long)]
    pub keep: bool,
}

impl PipelineBenchArgs {
    fn validate(&self, settings: &Settings) -> Result<()> {
        ensure!((1..=RATE_MAX).contains(&self.rate), "--rate must be 1..={RATE_MAX}");
        ensure!(
            (1..=DURATION_SECS_MAX).contains(&self.duration_secs),
            "--duration-secs must be 1..={DURATION_SECS_MAX}"
        );
        ensure!((1..=CONCURRENCY_MAX).contains(&self.concurrency), "--concurrency must be 1..={CONCURRENCY_MAX}");
        ensure!((1..=MEMBERS_MAX).contains(&self.members), "--members must be 1..={MEMBERS_MAX}");
        ensure!((1..=POLL_MS_MAX).contains(&self.poll_ms), "--poll-ms must be 1..={POLL_MS_MAX}");
        ensure!(
            (1..=VISIBLE_TIMEOUT_SECS_MAX).contains(&self.visible_timeout_secs),
            "--visible-timeout-secs must be 1..={VISIBLE_TIMEOUT_SECS_MAX}"
        );
        ensure!(
            (REBUILD_EVENTS_PER_MEMBER..=REBUILD_EVENTS_MAX).contains(&self.rebuild_events),
            "--rebuild-events must be {REBUILD_EVENTS_PER_MEMBER}..={REBUILD_EVENTS_MAX}"
        );
        setup::check_database_name(&self.database, settings)
    }

    fn rebuild_members(&self) -> u32 {
        self.rebuild_events.div_ceil(REBUILD_EVENTS_PER_MEMBER)
    }
}

// ---------------------------------------------------------------------------------
// percentiles
// ---------------------------------------------------------------------------------

/// Nearest-rank percentile of `sorted` (ascending), `quantile` in 0..=1: the
/// smallest value with at least that share of the values at or below it.
fn percentile(sorted: &[u64], quantile: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (quantile.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn micros_to_ms(us: Option<u64>) -> f64 {
    us.map_or(f64::NAN, |us| us as f64 / 1000.0)
}

// ---------------------------------------------------------------------------------
// lag phase
// ---------------------------------------------------------------------------------

/// Committed events not yet seen in the read model: member → (sequence, commit instant).
type Outstanding = Arc<Mutex<HashMap<String, Vec<(u64, Instant)>>>>;

struct LagFigures {
    /// The deposits: committed (ok), failed, skipped, the window.
    deposits: Outcome,
    /// Lags of the events that became visible, microseconds, ascending.
    lags_us: Vec<u64>,
    not_visible: u64,
}

impl LagFigures {
    fn achieved_per_s(&self) -> f64 {
        self.deposits.per_second()
    }
    fn lag_ms(&self, quantile: f64) -> f64 {
        micros_to_ms(percentile(&self.lags_us, quantile))
    }
}

/// Relay (woken by local commits, polling at the configured interval) and member projector (production
/// settings) of every shard, running until `stop`.
struct Workers {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Workers {
    fn start(application: &Application, js: &async_nats::jetstream::Context) -> Self {
        let (stop, shutdown) = watch::channel(false);
        let mut tasks = Vec::new();
        let interval = application.settings.nats.relay_interval();
        for relay in application.shard_relays(js) {
            tasks.push(tokio::spawn(relay.run(interval, shutdown.clone())));
        }
        for projector in application.shard_projectors(js, |_| {}) {
            tasks.push(tokio::spawn(projector.run(shutdown.clone())));
        }
        Workers { stop, tasks }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

async fn wait_registered_visible(pool: &PgPool, tenant: &TenantId, members: u32) -> Result<()> {
    let deadline = Instant::now() + REGISTRATION_VISIBLE_TIMEOUT;
    loop {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM rm_members WHERE tenant_id = $1")
            .bind(tenant.as_str())
            .fetch_one(pool)
            .await?;
        if n >= i64::from(members) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {n} of {members} registered members reached rm_members in {REGISTRATION_VISIBLE_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Removes the outstanding events the read model shows, returning their lags.
async fn poll_once(pool: &PgPool, tenant: &TenantId, outstanding: &Outstanding, lags_us: &mut Vec<u64>) -> Result<()> {
    let keys: Vec<String> = outstanding.lock().expect("outstanding lock").keys().cloned().collect();
    if keys.is_empty() {
        return Ok(());
    }
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT member_id, version FROM rm_members WHERE tenant_id = $1 AND member_id = ANY($2)")
            .bind(tenant.as_str())
            .bind(&keys)
            .fetch_all(pool)
            .await?;
    let seen = Instant::now();
    let mut map = outstanding.lock().expect("outstanding lock");
    for (member, version) in rows {
        let version = u64::try_from(version).unwrap_or(0);
        if let Some(events) = map.get_mut(&member) {
            events.retain(|&(sequence, committed)| {
                if sequence > version {
                    return true;
                }
                lags_us.push(u64::try_from(seen.saturating_duration_since(committed).as_micros()).unwrap_or(u64::MAX));
                false
            });
            if events.is_empty() {
                map.remove(&member);
            }
        }
    }
    Ok(())
}

/// Offers deposits on schedule for `window`; each committed one is outstanding
/// until the poller sees it. Returns when the last one finished.
async fn offer_deposits(
    app: &Arc<App>,
    tenant: &TenantId,
    members: Arc<Vec<MemberId>>,
    outstanding: &Outstanding,
    args: &PipelineBenchArgs,
) -> Result<Outcome> {
    let ticks = u64::from(args.rate) * args.duration_secs;
    let (app, tenant, outstanding) = (app.clone(), tenant.clone(), outstanding.clone());
    open_loop(args.rate, ticks, args.concurrency, move |n| {
        let (app, tenant, members, outstanding) = (app.clone(), tenant.clone(), members.clone(), outstanding.clone());
        async move {
            let member = members[rand::random_range(0..members.len())];
            let sequence = deposit(&app, &tenant, member, &format!("bench-pipeline-{n}")).await?;
            let committed = Instant::now();
            outstanding
                .lock()
                .expect("outstanding lock")
                .entry(member.to_string())
                .or_default()
                .push((sequence, committed));
            anyhow::Ok(())
        }
    })
    .await
}

async fn phase_lag(
    app: &Arc<App>,
    pool: &PgPool,
    tenant: &TenantId,
    members: Arc<Vec<MemberId>>,
    args: &PipelineBenchArgs,
) -> Result<LagFigures> {
    let outstanding: Outstanding = Arc::default();
    let (done_tx, mut done_rx) = watch::channel(false);
    let poller = {
        let (pool, tenant, outstanding) = (pool.clone(), tenant.clone(), outstanding.clone());
        let poll = Duration::from_millis(args.poll_ms);
        let timeout = Duration::from_secs(args.visible_timeout_secs);
        tokio::spawn(async move {
            let mut lags_us = Vec::new();
            let mut ticker = tokio::time::interval(poll);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut deadline: Option<Instant> = None;
            loop {
                ticker.tick().await;
                poll_once(&pool, &tenant, &outstanding, &mut lags_us).await?;
                if deadline.is_none() && *done_rx.borrow_and_update() {
                    deadline = Some(Instant::now() + timeout);
                }
                if let Some(deadline) = deadline {
                    if outstanding.lock().expect("outstanding lock").is_empty() || Instant::now() > deadline {
                        break;
                    }
                }
            }
            anyhow::Ok(lags_us)
        })
    };
    let driven = offer_deposits(app, tenant, members, &outstanding, args).await;
    let _ = done_tx.send(true);
    let mut lags_us = poller.await.context("the poller panicked")??;
    let deposits = driven?;
    lags_us.sort_unstable();
    let not_visible = outstanding.lock().expect("outstanding lock").values().map(|v| v.len() as u64).sum();
    Ok(LagFigures { deposits, lags_us, not_visible })
}

// ---------------------------------------------------------------------------------
// rebuild phase
// ---------------------------------------------------------------------------------

struct RebuildFigures {
    members: u32,
    seed: Duration,
    events: u64,
    elapsed: Duration,
    events_per_s: f64,
}

async fn phase_rebuild(
    settings: &Settings,
    app: &Arc<App>,
    admin: &PgPool,
    tenant: &TenantId,
    args: &PipelineBenchArgs,
) -> Result<RebuildFigures> {
    let count = args.rebuild_members();
    tracing::info!(members = count, "rebuild phase: registering members");
    let seeding = Instant::now();
    let members = register_members(app, tenant, "bench-rebuild-register", count, args.concurrency.max(1)).await?;
    tracing::info!(events = args.rebuild_events, "rebuild phase: seeding deposits in SQL");
    for chunk in members.chunks(SEED_MEMBERS_PER_STATEMENT) {
        seed_deposits(admin, tenant, chunk, REBUILD_EVENTS_PER_MEMBER).await?;
    }
    let seed = seeding.elapsed();
    tracing::info!(seed_ms = seed.as_millis() as u64, "rebuild phase: rebuilding members");
    let started = Instant::now();
    let reports = wxcm_server::projection_ops::rebuild(settings, "members", None).await?;
    let elapsed = started.elapsed();
    let events = reports.iter().map(|(_, r)| r.events).sum::<u64>();
    Ok(RebuildFigures { members: count, seed, events, elapsed, events_per_s: events as f64 / elapsed.as_secs_f64() })
}

// ---------------------------------------------------------------------------------
// run and report
// ---------------------------------------------------------------------------------

struct Figures {
    lag: LagFigures,
    rebuild: RebuildFigures,
    stream: String,
}

async fn run_phases(
    settings: &Settings,
    target: &Target,
    js: &async_nats::jetstream::Context,
    args: &PipelineBenchArgs,
) -> Result<LagAndRebuild> {
    target.recreate().await?;
    let admin = target.admin_pool(2).await?;
    let application = setup::build(settings, Role::Scheduler).await?;
    let outcome = async {
        let app = application.app.clone();
        let tenant = setup::create_tenant(&app).await?;
        let pool = application.shards.all().next().context("the bench shard")?.pool.clone();
        wxcm_server::relay::ensure_stream(js, &settings.nats.stream_prefix, settings.nats.stream_replicas)
            .await
            .context("creating the bench stream")?;
        let workers = Workers::start(&application, js);
        let lag = async {
            tracing::info!(members = args.members, "lag phase: registering members");
            let members = register_members(&app, &tenant, "bench-register", args.members, args.concurrency).await?;
            wait_registered_visible(&pool, &tenant, args.members).await?;
            tracing::info!(rate = args.rate, duration_secs = args.duration_secs, "lag phase: offering deposits");
            phase_lag(&app, &pool, &tenant, Arc::new(members), args).await
        }
        .await;
        workers.stop().await;
        let lag = lag?;
        let rebuild = phase_rebuild(settings, &app, &admin, &tenant, args).await?;
        anyhow::Ok((lag, rebuild))
    }
    .await;
    setup::close(&application).await;
    admin.close().await;
    outcome
}

type LagAndRebuild = (LagFigures, RebuildFigures);

impl Figures {
    fn counts(&self) -> Counts {
        self.lag.deposits.counts()
    }

    /// Every committed event must reach the read model: one that did not is
    /// left out of the percentiles, so it fails the run.
    fn failed_checks(&self, args: &PipelineBenchArgs) -> Vec<String> {
        let mut failed = Vec::new();
        if self.lag.not_visible > 0 {
            failed.push(format!(
                "{} committed events not visible in rm_members within {} s",
                self.lag.not_visible, args.visible_timeout_secs
            ));
        }
        if self.lag.deposits.ok == 0 {
            failed.push("no deposit committed".into());
        }
        failed
    }
}

fn report_json(f: &Figures, args: &PipelineBenchArgs) -> serde_json::Value {
    let p99 = f.lag.lag_ms(0.99);
    json!({
        "rate_offered_per_s": args.rate,
        "rate_achieved_per_s": round(f.lag.achieved_per_s(), 1),
        "lag_p50_ms": round(f.lag.lag_ms(0.5), 1),
        "lag_p99_ms": round(p99, 1),
        "lag_max_ms": round(f.lag.lag_ms(1.0), 1),
        "commit_p99_ms": round(f.lag.deposits.latency_ms(0.99), 1),
        "not_visible": f.lag.not_visible,
        "poll_ms": args.poll_ms,
        "rebuild_events": f.rebuild.events,
        "rebuild_events_per_s": round(f.rebuild.events_per_s, 1),
        "target_lag_p99_ms": TARGET_LAG_P99_MS,
        "target_rebuild_events_per_s": TARGET_REBUILD_EVENTS_PER_S,
        "ratio_lag_p99_to_target": round(p99 / TARGET_LAG_P99_MS, 3),
        "ratio_rebuild_to_target": round(f.rebuild.events_per_s / TARGET_REBUILD_EVENTS_PER_S, 3),
        "duration_secs": args.duration_secs,
    })
}

fn report_table(f: &Figures, args: &PipelineBenchArgs) -> Table {
    let mut table = Table::new();
    table.load_preset(presets::UTF8_FULL_CONDENSED).set_header(vec!["figure", "value", "unit", "target"]);
    let lag = &f.lag;
    let p99 = lag.lag_ms(0.99);
    let deposits = &lag.deposits;
    let rows: Vec<(String, String, &str, String)> = vec![
        ("deposits offered (open loop)".into(), format!("{}", args.rate), "commands/s", String::new()),
        ("deposits committed".into(), format!("{:.1}", lag.achieved_per_s()), "commands/s", String::new()),
        (
            "offered / committed / skipped (busy) / failed".into(),
            format!(
                "{} / {} / {} / {}",
                u64::from(args.rate) * args.duration_secs,
                deposits.ok,
                deposits.skipped,
                deposits.errors
            ),
            "commands",
            "all committed".into(),
        ),
        (
            "deposit commit latency, p99 (from its tick)".into(),
            format!("{:.1}", deposits.latency_ms(0.99)),
            "ms",
            String::new(),
        ),
        ("lag commit → rm_members, p50".into(), format!("{:.1}", lag.lag_ms(0.5)), "ms", String::new()),
        (
            "lag commit → rm_members, p99".into(),
            format!("{p99:.1}"),
            "ms",
            format!("<= {TARGET_LAG_P99_MS} ({})", verdict(p99 <= TARGET_LAG_P99_MS)),
        ),
        ("lag commit → rm_members, max".into(), format!("{:.1}", lag.lag_ms(1.0)), "ms", String::new()),
        (
            format!("not visible within {} s", args.visible_timeout_secs),
            lag.not_visible.to_string(),
            "events",
            format!("0 ({})", verdict(lag.not_visible == 0)),
        ),
        ("lag measurement error (poll interval)".into(), format!("+0 .. +{}", args.poll_ms), "ms", String::new()),
        (
            format!("rebuild seed ({} members × {REBUILD_EVENTS_PER_MEMBER})", f.rebuild.members),
            format!("{:.1}", f.rebuild.seed.as_secs_f64()),
            "s",
            String::new(),
        ),
        ("rebuild members: events (all member events)".into(), f.rebuild.events.to_string(), "events", String::new()),
        ("rebuild members: time".into(), format!("{:.2}", f.rebuild.elapsed.as_secs_f64()), "s", String::new()),
        (
            "rebuild members: throughput".into(),
            format!("{:.0}", f.rebuild.events_per_s),
            "events/s",
            format!(
                ">= {TARGET_REBUILD_EVENTS_PER_S} ({})",
                verdict(f.rebuild.events_per_s >= TARGET_REBUILD_EVENTS_PER_S)
            ),
        ),
        ("nats stream (deleted)".into(), f.stream.clone(), "", String::new()),
    ];
    for (figure, value, unit, target) in rows {
        table.add_row(vec![Cell::new(figure), number(value), Cell::new(unit), Cell::new(target)]);
    }
    table
}

/// `wxcm bench pipeline`.
pub async fn bench_pipeline(base: &Settings, args: PipelineBenchArgs) -> Result<()> {
    args.validate(base)?;
    let target = Target::new(base, &args.database)?;
    let mut settings = target.settings(
        base,
        args.concurrency + POOL_SPARE_CONNECTIONS + WORKER_CONNECTIONS,
        setup::cache_for(args.members),
    );
    settings.nats.stream_prefix = format!("{STREAM_PREFIX_BASE}{:08x}", rand::random::<u32>());
    let stream = wxcm_server::relay::stream_name(&settings.nats.stream_prefix);
    wxcm_server::app::install_crypto_provider();
    let client = wxcm_server::nats::connect_bounded(&settings.nats, "wxcm-bench", Duration::from_secs(10)).await?;
    let js = async_nats::jetstream::ContextBuilder::new().timeout(wxcm_server::relay::JETSTREAM_TIMEOUT).build(client);
    let outcome = run_phases(&settings, &target, &js, &args).await;
    if args.keep {
        tracing::info!(database = %target.database, stream = %stream, "bench database and stream kept");
    } else {
        if let Err(e) = target.drop_database().await {
            tracing::warn!(error = %format!("{e:#}"), database = %target.database, "could not drop the bench database");
        }
        if let Err(e) = js.delete_stream(&stream).await {
            tracing::warn!(error = %e, stream = %stream, "could not delete the bench stream");
        }
    }
    let (lag, rebuild) = outcome?;
    lag.deposits.warn_errors("lag");
    let figures = Figures { lag, rebuild, stream };
    let failed = figures.failed_checks(&args);
    setup::finish("pipeline", &report_table(&figures, &args), report_json(&figures, &args), figures.counts(), &failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(percentile(&[7], 0.0), Some(7));
        assert_eq!(percentile(&[7], 0.99), Some(7));
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&values, 0.5), Some(50));
        assert_eq!(percentile(&values, 0.99), Some(99));
        assert_eq!(percentile(&values, 1.0), Some(100));
        assert_eq!(percentile(&values, 0.0), Some(1));
        let values: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&values, 0.99), Some(990));
        assert_eq!(percentile(&values, 0.991), Some(991));
        assert!(micros_to_ms(None).is_nan());
        assert_eq!(micros_to_ms(Some(1500)), 1.5);
    }

    fn at_limits() -> PipelineBenchArgs {
        PipelineBenchArgs {
            database: "wxcm_bench_pipeline".into(),
            rate: RATE_MAX,
            duration_secs: DURATION_SECS_MAX,
            concurrency: CONCURRENCY_MAX,
            members: MEMBERS_MAX,
            poll_ms: POLL_MS_MAX,
            visible_timeout_secs: VISIBLE_TIMEOUT_SECS_MAX,
            rebuild_events: REBUILD_EVENTS_MAX,
            keep: false,
        }
    }

    #[test]
    fn limits_are_checked_at_and_past_the_edge() {
        let settings = Settings::default();
        let args = at_limits();
        assert!(args.validate(&settings).is_ok());
        let past = [
            PipelineBenchArgs { rate: RATE_MAX + 1, ..args.clone() },
            PipelineBenchArgs { rate: 0, ..args.clone() },
            PipelineBenchArgs { duration_secs: DURATION_SECS_MAX + 1, ..args.clone() },
            PipelineBenchArgs { duration_secs: 0, ..args.clone() },
            PipelineBenchArgs { concurrency: CONCURRENCY_MAX + 1, ..args.clone() },
            PipelineBenchArgs { concurrency: 0, ..args.clone() },
            PipelineBenchArgs { members: MEMBERS_MAX + 1, ..args.clone() },
            PipelineBenchArgs { members: 0, ..args.clone() },
            PipelineBenchArgs { poll_ms: POLL_MS_MAX + 1, ..args.clone() },
            PipelineBenchArgs { poll_ms: 0, ..args.clone() },
            PipelineBenchArgs { visible_timeout_secs: VISIBLE_TIMEOUT_SECS_MAX + 1, ..args.clone() },
            PipelineBenchArgs { rebuild_events: REBUILD_EVENTS_MAX + 1, ..args.clone() },
            PipelineBenchArgs { rebuild_events: REBUILD_EVENTS_PER_MEMBER - 1, ..args.clone() },
            PipelineBenchArgs { database: "wxcm".into(), ..args.clone() },
        ];
        for bad in past {
            assert!(bad.validate(&settings).is_err(), "{bad:?}");
        }
        let low = PipelineBenchArgs {
            rate: 1,
            duration_secs: 1,
            concurrency: 1,
            members: 1,
            poll_ms: 1,
            visible_timeout_secs: 1,
            rebuild_events: REBUILD_EVENTS_PER_MEMBER,
            ..args
        };
        assert!(low.validate(&settings).is_ok());
        assert_eq!(low.rebuild_members(), 1);
        assert_eq!(PipelineBenchArgs { rebuild_events: 1_000_000, ..low.clone() }.rebuild_members(), 10_000);
        assert_eq!(PipelineBenchArgs { rebuild_events: 1_000_001, ..low }.rebuild_members(), 10_001);
    }
}
