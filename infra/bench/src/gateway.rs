//! `wxcm bench gateway`: WeChat callbacks through the whole path, next to the
//! HTTP ceiling of the same server.
//!
//! The server runs in-process (the API role, HTTP on port 0) on a dedicated
//! database with one developer-mode account bound; the simulator's
//! [`Pusher`] signs and encrypts each callback the way WeChat does.
//! - (a) `/healthz` requests/s, `--concurrency` clients in a closed loop: the
//!   HTTP ceiling of this machine and server;
//! - (b) safe-mode `subscribe` callbacks, distinct openids, offered open-loop
//!   at `--rate` per second for `--duration-secs` (a tick finding
//!   `--concurrency` already in flight is counted as skipped, not delayed):
//!   latency p50/p99 from the tick to the answer. A 200 means the signature was
//!   verified, the body decrypted and parsed, the dedup claim taken and the
//!   member registered and granted (the handler waits for the commit within the
//!   reply budget, far above these latencies; the members are counted after);
//! - (c) the same callbacks in a closed loop at each of
//!   `--saturation-clients` (default 64, 128, 256): the best rate is the
//!   saturation throughput, reported as `callbacks_per_s` with the clients
//!   that reached it, and compared with the ledger's command rate `a`
//!   (`--ledger-rate`, from `wxcm bench ledger`). A sweep, because concurrent
//!   callbacks share statements: 64 clients left a tenth of the CPU idle.
//!
//! The last line of stdout is one JSON object.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use comfy_table::{presets, Cell, Table};
use hdrhistogram::Histogram;
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::Semaphore;
use wxcm_commands::tenants::AccountInput;
use wxcm_commands::CommandContext;
use wxcm_domain::member::ExpiryPolicy;
use wxcm_domain::tenant::{PointsRules, TenantCommand};
use wxcm_simulator::wechat::callbacks::{MessageKind, PushMessage, PushRequest, Pusher};

use crate::ledger::{self as bench, number, round, Target, DURATION_SECS_MAX, POOL_SPARE_CONNECTIONS};
use wxcm_server::app::{Application, BuildOptions, Role};
use wxcm_server::config::Settings;
use wxcm_server::sealer::AesGcmSealer;

pub const RATE_MAX: u32 = 20_000;
pub const CONCURRENCY_MAX: u32 = 1_024;
pub const SATURATION_RUNS_MAX: usize = 8;
/// Database connections of the server (the callbacks' commands and claims).
const POOL_MAX: u32 = 32;
const APPID: &str = "wx00000000000be4c1";
const TOKEN: &str = "bench-callback-token";
const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const INITIAL_POINTS: i64 = 10;
/// Latencies in microseconds, up to one minute.
const LATENCY_US_MAX: u64 = 60_000_000;
/// Untimed seconds at the offered rate before phase (b).
const WARMUP_SECS: u64 = 2;
const TARGET_P99_MS: f64 = 100.0;
const TARGET_OFFERED_RATE: u32 = 500;
const TARGET_RATIO_TO_LEDGER: f64 = 0.4;
const BENCH_SEALER_KEY: [u8; 32] = [0x43; 32];

#[derive(Debug, Clone, clap::Args)]
pub struct GatewayBenchArgs {
    /// Scratch database on the default shard's server; dropped and recreated.
    #[arg(long, default_value = "wxcm_bench_gateway")]
    pub database: String,
    /// Offered callbacks per second in phase (b).
    #[arg(long, default_value_t = TARGET_OFFERED_RATE)]
    pub rate: u32,
    /// Length of each timed window.
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
    /// Requests in flight at most (closed-loop clients in (a), the cap in (b)).
    #[arg(long, default_value_t = 64)]
    pub concurrency: u32,
    /// Closed-loop clients of the saturation runs (c), one window each.
    #[arg(long, value_delimiter = ',', default_values_t = [64, 128, 256])]
    pub saturation_clients: Vec<u32>,
    /// The ledger's command rate `a` (commands/s of `wxcm bench ledger` on this machine).
    #[arg(long)]
    pub ledger_rate: Option<f64>,
    /// Keep the bench database afterwards.
    #[arg(long)]
    pub keep: bool,
}

impl GatewayBenchArgs {
    fn validate(&self, settings: &Settings) -> Result<()> {
        ensure!((1..=RATE_MAX).contains(&self.rate), "--rate must be 1..={RATE_MAX}");
        ensure!(
            (1..=DURATION_SECS_MAX).contains(&self.duration_secs),
            "--duration-secs must be 1..={DURATION_SECS_MAX}"
        );
        ensure!((1..=CONCURRENCY_MAX).contains(&self.concurrency), "--concurrency must be 1..={CONCURRENCY_MAX}");
        ensure!(
            (1..=SATURATION_RUNS_MAX).contains(&self.saturation_clients.len())
                && self.saturation_clients.iter().all(|c| (1..=CONCURRENCY_MAX).contains(c)),
            "--saturation-clients takes 1..={SATURATION_RUNS_MAX} values, each 1..={CONCURRENCY_MAX}"
        );
        if let Some(rate) = self.ledger_rate {
            ensure!(rate.is_finite() && rate > 0.0, "--ledger-rate must be a positive number");
        }
        bench::check_database_name(&self.database, settings)
    }
}

/// What one phase measured inside its window.
struct Phase {
    ok: u64,
    errors: u64,
    skipped: u64,
    first_error: Option<String>,
    window: Duration,
    latency_us: Histogram<u64>,
}

impl Phase {
    fn per_second(&self) -> f64 {
        self.ok as f64 / self.window.as_secs_f64()
    }
    fn latency_ms(&self, quantile: f64) -> f64 {
        self.latency_us.value_at_quantile(quantile) as f64 / 1000.0
    }
}

/// Counters shared by the tasks of a phase.
struct Tally {
    ok: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
    latency_us: Mutex<Histogram<u64>>,
}

impl Tally {
    fn new() -> Result<Arc<Self>> {
        Ok(Arc::new(Self {
            ok: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            first_error: Mutex::new(None),
            latency_us: Mutex::new(Histogram::new_with_bounds(1, LATENCY_US_MAX, 3)?),
        }))
    }

    fn record(&self, started: Instant, outcome: Result<(), String>) {
        match outcome {
            Ok(()) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
                let us =
                    u64::try_from(started.elapsed().as_micros()).unwrap_or(LATENCY_US_MAX).clamp(1, LATENCY_US_MAX);
                if let Ok(mut h) = self.latency_us.lock() {
                    let _ = h.record(us);
                }
            }
            Err(e) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut first) = self.first_error.lock() {
                    first.get_or_insert(e);
                }
            }
        }
    }

    fn finish(&self, window: Duration, skipped: u64) -> Phase {
        let latency_us = self.latency_us.lock().map(|h| h.clone()).unwrap_or_else(|p| p.into_inner().clone());
        Phase {
            ok: self.ok.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            skipped,
            first_error: self.first_error.lock().ok().and_then(|f| f.clone()),
            window,
            latency_us,
        }
    }
}

/// One subscribe callback with a fresh openid; Ok when the gateway answered 200.
async fn subscribe(pusher: &Pusher, base_url: &str, openid: String) -> Result<(), String> {
    let req = PushRequest::safe(base_url, APPID, TOKEN, AES_KEY, PushMessage::new(MessageKind::Subscribe, &openid));
    let responses = pusher.push(&req).await.map_err(|e| e.to_string())?;
    match responses.first() {
        Some(r) if r.status == Some(200) => Ok(()),
        Some(r) => Err(format!("status {:?}: {}", r.status, r.error.clone().unwrap_or_else(|| r.body.clone()))),
        None => Err("no response".into()),
    }
}

async fn healthz(http: &reqwest::Client, url: &str) -> Result<(), String> {
    let res = http.get(url).send().await.map_err(|e| e.to_string())?;
    if res.status().is_success() {
        res.bytes().await.map(|_| ()).map_err(|e| e.to_string())
    } else {
        Err(format!("status {}", res.status()))
    }
}

/// Closed loop: `concurrency` tasks repeat `op` until the window ends.
async fn closed_loop<F, Fut>(concurrency: u32, window: Duration, op: F) -> Result<Phase>
where
    F: Fn(u64) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let tally = Tally::new()?;
    let counter = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + window;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (tally, counter, op) = (tally.clone(), counter.clone(), op.clone());
        tasks.spawn(async move {
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let outcome = op(counter.fetch_add(1, Ordering::Relaxed)).await;
                tally.record(t0, outcome);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    Ok(tally.finish(started.elapsed(), 0))
}

/// Open loop: one callback every 1/rate s; a tick with no free slot is skipped.
async fn open_loop(
    pusher: &Pusher,
    base_url: &str,
    args: &GatewayBenchArgs,
    duration_secs: u64,
    prefix: &str,
) -> Result<Phase> {
    let tally = Tally::new()?;
    let slots = Arc::new(Semaphore::new(args.concurrency as usize));
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(args.rate)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let total = u64::from(args.rate) * duration_secs;
    let started = Instant::now();
    let mut skipped = 0u64;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        ticker.tick().await;
        let tick = Instant::now();
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            skipped += 1;
            continue;
        };
        let (tally, pusher, base_url) = (tally.clone(), pusher.clone(), base_url.to_owned());
        let openid = format!("{prefix}-{i}");
        tasks.spawn(async move {
            let outcome = subscribe(&pusher, &base_url, openid).await;
            tally.record(tick, outcome);
            drop(permit);
        });
        // Reap finished tasks so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    Ok(tally.finish(started.elapsed(), skipped))
}

async fn bind_account(app: &wxcm_commands::App, tenant: &wxcm_domain::TenantId) -> Result<()> {
    let input = AccountInput {
        appid: APPID.into(),
        name: "Bench".into(),
        token: TOKEN.into(),
        encoding_aes_key: AES_KEY.into(),
        app_secret: "bench-app-secret".into(),
        pay: None,
    };
    let actor = wxcm_domain::Actor::Admin { username: "bench".into() };
    let ctx = CommandContext::new(tenant.clone(), bench::key("bench-bind-account")?, "bench".into());
    wxcm_commands::tenants::bind_account(app, tenant, input, actor.clone(), &ctx).await?;
    let rules = PointsRules {
        initial_points: INITIAL_POINTS,
        referral_level1_points: 0,
        referral_level2_points: 0,
        expiry: ExpiryPolicy::Never,
    };
    let ctx = CommandContext::new(tenant.clone(), bench::key("bench-points-rules")?, "bench".into());
    let shard = app.router.route(tenant)?;
    shard
        .tenants
        .execute(tenant.as_str(), TenantCommand::SetPointsRules { rules, actor }, &"bench-points-rules", &ctx)
        .await
        .map_err(|e| anyhow::anyhow!("setting the points rules: {e:?}"))?;
    Ok(())
}

struct Figures {
    healthz: Phase,
    warmup_ok: u64,
    offered: Phase,
    saturation: Phase,
    /// Clients of the best saturation run.
    saturation_clients: u32,
    /// Callbacks answered in all saturation runs.
    saturation_ok: u64,
    /// (clients, callbacks/s) of every saturation run.
    sweep: Vec<(u32, f64)>,
    registered: i64,
}

async fn run_phases(base: &Settings, target: &Target, args: &GatewayBenchArgs) -> Result<Figures> {
    wxcm_store::migrate::run_migrations(&target.admin_url).await.context("migrating the bench database")?;
    let mut settings = target.settings(base, POOL_MAX + POOL_SPARE_CONNECTIONS, 1_000);
    settings.http.listen = "127.0.0.1:0".into();
    let sealer = AesGcmSealer::from_key(&BENCH_SEALER_KEY).context("bench sealer key")?;
    let options = BuildOptions { sealer: Some(Arc::new(sealer)), ..BuildOptions::default() };
    let application = Application::build(settings, Role::Api, options).await?;
    let app = application.app.clone();
    let tenant = bench::create_tenant(&app).await?;
    bind_account(&app, &tenant).await?;
    let running = application.spawn();
    let addr = running.addr.context("the API role listens")?;
    let base_url = format!("http://{addr}");
    let outcome = async {
        let window = Duration::from_secs(args.duration_secs);
        let http = reqwest::Client::builder().pool_max_idle_per_host(CONCURRENCY_MAX as usize).build()?;
        let healthz_url = format!("{base_url}/healthz");
        tracing::info!(concurrency = args.concurrency, "phase a: /healthz, closed loop");
        let healthz = closed_loop(args.concurrency, window, move |_| {
            let (http, url) = (http.clone(), healthz_url.clone());
            async move { healthz(&http, &url).await }
        })
        .await?;
        let pusher = Pusher::new()?;
        // Untimed, at the offered rate: the pools open their connections and
        // prepare their statements, the caches fill (as ledger's warm-up).
        tracing::info!(rate = args.rate, secs = WARMUP_SECS, "warm-up: subscribe callbacks at the offered load");
        let warmup = open_loop(&pusher, &base_url, args, WARMUP_SECS, "o-bench-warmup").await?;
        tracing::info!(rate = args.rate, "phase b: subscribe callbacks at a fixed offered load");
        let offered = open_loop(&pusher, &base_url, args, args.duration_secs, "o-bench-b").await?;
        let mut best: Option<(u32, Phase)> = None;
        let mut sweep = Vec::new();
        let mut saturation_ok = 0;
        for &clients in &args.saturation_clients {
            tracing::info!(clients, "phase c: subscribe callbacks, closed loop");
            let (p, url) = (pusher.clone(), base_url.clone());
            let prefix = format!("o-bench-c{clients}");
            let run = closed_loop(clients, window, move |i| {
                let (p, url, openid) = (p.clone(), url.clone(), format!("{prefix}-{i}"));
                async move { subscribe(&p, &url, openid).await }
            })
            .await?;
            sweep.push((clients, run.per_second()));
            saturation_ok += run.ok;
            if best.as_ref().is_none_or(|(_, b)| run.per_second() > b.per_second()) {
                best = Some((clients, run));
            }
        }
        let (saturation_clients, saturation) = best.context("at least one saturation run")?;
        let admin = PgPoolOptions::new().max_connections(1).connect(&target.admin_url).await?;
        let registered: i64 =
            sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = 'member' AND sequence = 1")
                .fetch_one(&admin)
                .await
                .context("counting registered members")?;
        admin.close().await;
        anyhow::Ok(Figures {
            healthz,
            warmup_ok: warmup.ok,
            offered,
            saturation,
            saturation_clients,
            saturation_ok,
            sweep,
            registered,
        })
    }
    .await;
    running.stop().await;
    outcome
}

pub async fn bench_gateway(base: &Settings, args: GatewayBenchArgs) -> Result<()> {
    args.validate(base)?;
    let target = Target::new(base, &args.database)?;
    wxcm_server::app::install_crypto_provider();
    target.drop_database().await?;
    let outcome = run_phases(base, &target, &args).await;
    target.finish(args.keep).await;
    let figures = outcome?;
    for (name, phase) in [("a", &figures.healthz), ("b", &figures.offered), ("c", &figures.saturation)] {
        if let Some(e) = &phase.first_error {
            tracing::warn!(phase = name, errors = phase.errors, first = %e, "requests failed during the window");
        }
    }
    println!("{}", report_table(&figures, &args));
    println!("{}", report_json(&figures, &args));
    Ok(())
}

fn phase_row(table: &mut Table, figure: String, p: &Phase, unit: &str, target: String) {
    table.add_row(vec![
        Cell::new(figure),
        number(format!("{:.1}", p.per_second())),
        Cell::new(unit),
        Cell::new(target),
        number(format!("{:.2} / {:.2} / {:.2}", p.latency_ms(0.5), p.latency_ms(0.99), p.latency_ms(1.0))),
        number(format!("{} / {} / {}", p.ok, p.errors, p.skipped)),
    ]);
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}

fn report_table(f: &Figures, args: &GatewayBenchArgs) -> Table {
    let mut table = Table::new();
    table.load_preset(presets::UTF8_FULL_CONDENSED).set_header(vec![
        "figure",
        "value",
        "unit",
        "target",
        "latency p50 / p99 / max ms",
        "ok / errors / skipped",
    ]);
    let c = args.concurrency;
    phase_row(&mut table, format!("(a) /healthz, {c} clients"), &f.healthz, "requests/s", String::new());
    let p99_met = f.offered.latency_ms(0.99) <= TARGET_P99_MS;
    phase_row(
        &mut table,
        format!("(b) subscribe callbacks offered at {}/s", args.rate),
        &f.offered,
        "callbacks/s",
        format!("p99 <= {TARGET_P99_MS} ms at {TARGET_OFFERED_RATE}/s ({})", verdict(p99_met)),
    );
    for (clients, rate) in &f.sweep {
        table.add_row(vec![
            Cell::new(format!("(c) subscribe callbacks, {clients} clients")),
            number(format!("{rate:.1}")),
            Cell::new("callbacks/s"),
            Cell::new(""),
            Cell::new(""),
            Cell::new(""),
        ]);
    }
    phase_row(
        &mut table,
        format!("(c) saturation: best, at {} clients", f.saturation_clients),
        &f.saturation,
        "callbacks/s",
        String::new(),
    );
    let ratio = args.ledger_rate.map(|a| f.saturation.per_second() / a);
    table.add_row(vec![
        Cell::new("c / ledger a"),
        number(ratio.map(|r| format!("{r:.3}")).unwrap_or_else(|| "(no --ledger-rate)".into())),
        Cell::new("ratio"),
        Cell::new(match ratio {
            Some(r) => format!(">= {TARGET_RATIO_TO_LEDGER} ({})", verdict(r >= TARGET_RATIO_TO_LEDGER)),
            None => format!(">= {TARGET_RATIO_TO_LEDGER}"),
        }),
        Cell::new(""),
        Cell::new(""),
    ]);
    table.add_row(vec![
        Cell::new("members registered (b + c + warm-up)"),
        number(f.registered.to_string()),
        Cell::new(""),
        Cell::new(format!("= {}", f.offered.ok + f.saturation_ok + f.warmup_ok)),
        Cell::new(""),
        Cell::new(""),
    ]);
    table
}

fn report_json(f: &Figures, args: &GatewayBenchArgs) -> serde_json::Value {
    let callbacks = f.saturation.per_second();
    json!({
        "bench": "gateway",
        "machine": bench::machine(),
        "callbacks_per_s": round(callbacks, 1),
        "offered_rate": args.rate,
        "offered_callbacks_per_s": round(f.offered.per_second(), 1),
        "offered_skipped": f.offered.skipped,
        "offered_errors": f.offered.errors,
        "p50_ms": round(f.offered.latency_ms(0.5), 2),
        "p99_ms": round(f.offered.latency_ms(0.99), 2),
        "saturation_p99_ms": round(f.saturation.latency_ms(0.99), 2),
        "saturation_clients": f.saturation_clients,
        "saturation_sweep": f.sweep.iter().map(|(c, r)| json!({"clients": c, "callbacks_per_s": round(*r, 1)})).collect::<Vec<_>>(),
        "healthz_per_s": round(f.healthz.per_second(), 1),
        "ratio_to_healthz": round(callbacks / f.healthz.per_second(), 3),
        "ledger_rate": args.ledger_rate,
        "ratio_to_ledger": args.ledger_rate.map(|a| round(callbacks / a, 3)),
        "members_registered": f.registered,
        "target_p99_ms": TARGET_P99_MS,
        "target_offered_rate": TARGET_OFFERED_RATE,
        "target_ratio_to_ledger": TARGET_RATIO_TO_LEDGER,
        "duration_secs": args.duration_secs,
        "concurrency": args.concurrency,
    })
}
