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
//!   The same callbacks at the ledger's client count (`--ledger-clients`,
//!   default 16 as `wxcm bench ledger --clients`) are reported beside it, so
//!   the ratio to `a` can also be read at equal concurrency.
//!
//! The last line of stdout is one JSON object. Every failed request and every
//! skipped tick, warm-up included, fails the run, as does a count of members
//! registered other than the callbacks answered.

use std::time::Duration;

use anyhow::{Context, Result};
use comfy_table::{Cell, Table};
use serde_json::json;
use wxcm_commands::tenants::AccountInput;
use wxcm_domain::member::ExpiryPolicy;
use wxcm_domain::tenant::{PointsRules, TenantCommand};
use wxcm_server::app::Role;
use wxcm_server::config::Settings;
use wxcm_simulator::wechat::callbacks::{MessageKind, PushMessage, PushRequest, Pusher};

use crate::driver::{self, closed_loop, open_loop, Counts, Outcome};
use crate::setup::{
    self, bench_actor, context, number, round, verdict, Target, DURATION_SECS_MAX, POOL_SPARE_CONNECTIONS,
};

pub const RATE_MAX: u32 = 20_000;
pub const CONCURRENCY_MAX: u32 = driver::CONCURRENCY_MAX;
pub const SATURATION_RUNS_MAX: usize = 8;
/// Database connections of the server (the callbacks' commands and claims).
const POOL_MAX: u32 = 32;
const APPID: &str = "wx00000000000be4c1";
const TOKEN: &str = "bench-callback-token";
const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const INITIAL_POINTS: i64 = 10;
/// Untimed seconds at the offered rate before phase (b).
const WARMUP_SECS: u64 = 2;
/// `wxcm bench ledger`'s default `--clients`.
const LEDGER_CLIENTS_DEFAULT: u32 = 16;
const TARGET_P99_MS: f64 = 100.0;
const TARGET_OFFERED_RATE: u32 = 500;
const TARGET_RATIO_TO_LEDGER: f64 = 0.4;

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
    /// The clients of that ledger run's phase (a): one more closed-loop run at this count.
    #[arg(long, default_value_t = LEDGER_CLIENTS_DEFAULT)]
    pub ledger_clients: u32,
    /// Keep the bench database afterwards.
    #[arg(long)]
    pub keep: bool,
}

impl GatewayBenchArgs {
    fn validate(&self, settings: &Settings) -> Result<()> {
        anyhow::ensure!((1..=RATE_MAX).contains(&self.rate), "--rate must be 1..={RATE_MAX}");
        anyhow::ensure!(
            (1..=DURATION_SECS_MAX).contains(&self.duration_secs),
            "--duration-secs must be 1..={DURATION_SECS_MAX}"
        );
        anyhow::ensure!(
            (1..=CONCURRENCY_MAX).contains(&self.concurrency),
            "--concurrency must be 1..={CONCURRENCY_MAX}"
        );
        anyhow::ensure!(
            (1..=SATURATION_RUNS_MAX).contains(&self.saturation_clients.len())
                && self.saturation_clients.iter().all(|c| (1..=CONCURRENCY_MAX).contains(c)),
            "--saturation-clients takes 1..={SATURATION_RUNS_MAX} values, each 1..={CONCURRENCY_MAX}"
        );
        anyhow::ensure!(
            (1..=CONCURRENCY_MAX).contains(&self.ledger_clients),
            "--ledger-clients must be 1..={CONCURRENCY_MAX}"
        );
        if let Some(rate) = self.ledger_rate {
            anyhow::ensure!(rate.is_finite() && rate > 0.0, "--ledger-rate must be a positive number");
        }
        setup::check_database_name(&self.database, settings)
    }

    fn window(&self) -> Duration {
        Duration::from_secs(self.duration_secs)
    }
}

/// One subscribe callback with a fresh openid; Ok when the gateway answered 200.
async fn subscribe(pusher: &Pusher, base_url: &str, openid: String) -> Result<()> {
    let req = PushRequest::safe(base_url, APPID, TOKEN, AES_KEY, PushMessage::new(MessageKind::Subscribe, &openid));
    let responses = pusher.push(&req).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    match responses.first() {
        Some(r) if r.status == Some(200) => Ok(()),
        Some(r) => {
            anyhow::bail!("status {:?}: {}", r.status, r.error.clone().unwrap_or_else(|| r.body.clone()))
        }
        None => anyhow::bail!("no response"),
    }
}

async fn healthz(http: &reqwest::Client, url: &str) -> Result<()> {
    let res = http.get(url).send().await?;
    anyhow::ensure!(res.status().is_success(), "status {}", res.status());
    res.bytes().await?;
    Ok(())
}

/// Subscribe callbacks in a closed loop; openids `{prefix}-{client}-{n}`.
async fn callbacks_closed_loop(
    pusher: &Pusher,
    base_url: &str,
    clients: u32,
    window: Duration,
    prefix: &str,
) -> Result<Outcome> {
    let (pusher, base_url, prefix) = (pusher.clone(), base_url.to_owned(), prefix.to_owned());
    closed_loop(clients, Duration::ZERO, window, move |client, n| {
        let (pusher, base_url, openid) = (pusher.clone(), base_url.clone(), format!("{prefix}-{client}-{n}"));
        async move { subscribe(&pusher, &base_url, openid).await }
    })
    .await
}

/// Subscribe callbacks offered at `rate` for `secs`; openids `{prefix}-{n}`.
async fn callbacks_open_loop(
    pusher: &Pusher,
    base_url: &str,
    args: &GatewayBenchArgs,
    secs: u64,
    prefix: &str,
) -> Result<Outcome> {
    let (pusher, base_url, prefix) = (pusher.clone(), base_url.to_owned(), prefix.to_owned());
    open_loop(args.rate, u64::from(args.rate) * secs, args.concurrency, move |n| {
        let (pusher, base_url, openid) = (pusher.clone(), base_url.clone(), format!("{prefix}-{n}"));
        async move { subscribe(&pusher, &base_url, openid).await }
    })
    .await
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
    let ctx = context(tenant, "bench-bind-account")?;
    wxcm_commands::tenants::bind_account(app, tenant, input, bench_actor(), &ctx).await?;
    let rules = PointsRules {
        initial_points: INITIAL_POINTS,
        referral_level1_points: 0,
        referral_level2_points: 0,
        expiry: ExpiryPolicy::Never,
    };
    let ctx = context(tenant, "bench-points-rules")?;
    let shard = app.router.route(tenant)?;
    shard
        .tenants
        .execute(
            tenant.as_str(),
            TenantCommand::SetPointsRules { rules, actor: bench_actor() },
            &"bench-points-rules",
            &ctx,
        )
        .await
        .map_err(|e| anyhow::anyhow!("setting the points rules: {e:?}"))?;
    Ok(())
}

struct Figures {
    healthz: Outcome,
    warmup: Outcome,
    offered: Outcome,
    /// At the ledger's client count.
    at_a_clients: Outcome,
    /// (clients, run) of every saturation run, in the order given.
    sweep: Vec<(u32, Outcome)>,
    registered: i64,
}

impl Figures {
    /// The best saturation run: (clients, run).
    fn saturation(&self) -> (u32, &Outcome) {
        let (clients, best) = self
            .sweep
            .iter()
            .max_by(|a, b| a.1.per_second().total_cmp(&b.1.per_second()))
            .expect("validated: at least one saturation run");
        (*clients, best)
    }

    fn callback_runs(&self) -> impl Iterator<Item = &Outcome> {
        [&self.warmup, &self.offered, &self.at_a_clients].into_iter().chain(self.sweep.iter().map(|(_, o)| o))
    }

    fn counts(&self) -> Counts {
        std::iter::once(&self.healthz).chain(self.callback_runs()).map(Outcome::counts).sum()
    }

    /// Every answered callback registered one member, and nothing else did.
    fn failed_checks(&self) -> Vec<String> {
        let answered: u64 = self.callback_runs().map(Outcome::succeeded).sum();
        let failed: u64 = self.callback_runs().map(|o| o.errors).sum();
        let registered = u64::try_from(self.registered).unwrap_or(0);
        // A failed request may still have registered its member (an answer lost after the commit).
        let consistent = if failed == 0 { registered == answered } else { registered >= answered };
        if consistent {
            Vec::new()
        } else {
            vec![format!("{registered} members registered for {answered} callbacks answered ({failed} failed)")]
        }
    }
}

async fn run_phases(base: &Settings, target: &Target, args: &GatewayBenchArgs) -> Result<Figures> {
    target.recreate().await?;
    let mut settings = target.settings(base, POOL_MAX + POOL_SPARE_CONNECTIONS, setup::cache_for(1_000));
    settings.http.listen = "127.0.0.1:0".into();
    let application = setup::build(&settings, Role::Api).await?;
    let app = application.app.clone();
    let tenant = setup::create_tenant(&app).await?;
    bind_account(&app, &tenant).await?;
    let running = application.spawn();
    let addr = running.addr.context("the API role listens")?;
    let base_url = format!("http://{addr}");
    let outcome = async {
        let window = args.window();
        let http = reqwest::Client::builder().pool_max_idle_per_host(CONCURRENCY_MAX as usize).build()?;
        let healthz_url = format!("{base_url}/healthz");
        tracing::info!(concurrency = args.concurrency, "phase a: /healthz, closed loop");
        let healthz = closed_loop(args.concurrency, Duration::ZERO, window, move |_, _| {
            let (http, url) = (http.clone(), healthz_url.clone());
            async move { healthz(&http, &url).await }
        })
        .await?;
        let pusher = Pusher::new()?;
        // Untimed, at the offered rate: the pools open their connections and
        // prepare their statements, the caches fill (as ledger's warm-up).
        tracing::info!(rate = args.rate, secs = WARMUP_SECS, "warm-up: subscribe callbacks at the offered load");
        let warmup = callbacks_open_loop(&pusher, &base_url, args, WARMUP_SECS, "o-bench-warmup").await?;
        tracing::info!(rate = args.rate, "phase b: subscribe callbacks at a fixed offered load");
        let offered = callbacks_open_loop(&pusher, &base_url, args, args.duration_secs, "o-bench-b").await?;
        tracing::info!(clients = args.ledger_clients, "phase c: subscribe callbacks at the ledger's client count");
        let at_a_clients = callbacks_closed_loop(&pusher, &base_url, args.ledger_clients, window, "o-bench-ca").await?;
        let mut sweep = Vec::new();
        for &clients in &args.saturation_clients {
            tracing::info!(clients, "phase c: subscribe callbacks, closed loop");
            let prefix = format!("o-bench-c{clients}");
            sweep.push((clients, callbacks_closed_loop(&pusher, &base_url, clients, window, &prefix).await?));
        }
        let admin = target.admin_pool(1).await?;
        let registered: i64 =
            sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = 'member' AND sequence = 1")
                .fetch_one(&admin)
                .await
                .context("counting registered members")?;
        admin.close().await;
        anyhow::Ok(Figures { healthz, warmup, offered, at_a_clients, sweep, registered })
    }
    .await;
    running.stop().await;
    outcome
}

pub async fn bench_gateway(base: &Settings, args: GatewayBenchArgs) -> Result<()> {
    args.validate(base)?;
    let target = Target::new(base, &args.database)?;
    wxcm_server::app::install_crypto_provider();
    let outcome = run_phases(base, &target, &args).await;
    target.finish(args.keep).await;
    let f = outcome?;
    f.healthz.warn_errors("a");
    f.warmup.warn_errors("warm-up");
    f.offered.warn_errors("b");
    f.at_a_clients.warn_errors("c at the ledger's clients");
    for (clients, run) in &f.sweep {
        run.warn_errors(&format!("c at {clients} clients"));
    }
    setup::finish("gateway", &report_table(&f, &args), report_json(&f, &args), f.counts(), &f.failed_checks())
}

fn ratio_cell(ratio: Option<f64>) -> String {
    ratio.map(|r| format!("{r:.3}")).unwrap_or_else(|| "(no --ledger-rate)".into())
}

fn report_table(f: &Figures, args: &GatewayBenchArgs) -> Table {
    let mut table = setup::phase_table();
    let c = args.concurrency;
    setup::phase_row(&mut table, format!("(a) /healthz, {c} clients"), &f.healthz, "requests/s", String::new());
    setup::phase_row(
        &mut table,
        format!("warm-up, offered at {}/s for {WARMUP_SECS} s", args.rate),
        &f.warmup,
        "callbacks/s",
        String::new(),
    );
    let p99_met = f.offered.latency_ms(0.99) <= TARGET_P99_MS;
    setup::phase_row(
        &mut table,
        format!("(b) subscribe callbacks offered at {}/s", args.rate),
        &f.offered,
        "callbacks/s",
        format!("p99 <= {TARGET_P99_MS} ms at {TARGET_OFFERED_RATE}/s ({})", verdict(p99_met)),
    );
    setup::phase_row(
        &mut table,
        format!("(c) subscribe callbacks, {} clients (ledger's)", args.ledger_clients),
        &f.at_a_clients,
        "callbacks/s",
        String::new(),
    );
    for (clients, run) in &f.sweep {
        setup::phase_row(
            &mut table,
            format!("(c) subscribe callbacks, {clients} clients"),
            run,
            "callbacks/s",
            String::new(),
        );
    }
    let (clients, saturation) = f.saturation();
    let info = |table: &mut Table, figure: String, value: String, unit: &str, target: String| {
        table.add_row(vec![
            Cell::new(figure),
            number(value),
            Cell::new(unit),
            Cell::new(target),
            Cell::new(""),
            Cell::new(""),
        ]);
    };
    info(
        &mut table,
        "(c) saturation: best run".into(),
        format!("{:.1}", saturation.per_second()),
        "callbacks/s",
        format!("at {clients} clients"),
    );
    let ratio = args.ledger_rate.map(|a| saturation.per_second() / a);
    info(
        &mut table,
        "c / ledger a".into(),
        ratio_cell(ratio),
        "ratio",
        match ratio {
            Some(r) => format!(">= {TARGET_RATIO_TO_LEDGER} ({})", verdict(r >= TARGET_RATIO_TO_LEDGER)),
            None => format!(">= {TARGET_RATIO_TO_LEDGER}"),
        },
    );
    info(
        &mut table,
        format!("c at {} clients / ledger a", args.ledger_clients),
        ratio_cell(args.ledger_rate.map(|a| f.at_a_clients.per_second() / a)),
        "ratio",
        "(same client count)".into(),
    );
    let answered: u64 = f.callback_runs().map(Outcome::succeeded).sum();
    info(
        &mut table,
        "members registered (all callback runs)".into(),
        f.registered.to_string(),
        "",
        format!("= {answered} answered"),
    );
    table
}

fn report_json(f: &Figures, args: &GatewayBenchArgs) -> serde_json::Value {
    let (clients, saturation) = f.saturation();
    let callbacks = saturation.per_second();
    let at_a = f.at_a_clients.per_second();
    json!({
        "callbacks_per_s": round(callbacks, 1),
        "offered_rate": args.rate,
        "offered_callbacks_per_s": round(f.offered.per_second(), 1),
        "offered_skipped": f.offered.skipped,
        "offered_errors": f.offered.errors,
        "p50_ms": round(f.offered.latency_ms(0.5), 2),
        "p99_ms": round(f.offered.latency_ms(0.99), 2),
        "saturation_p99_ms": round(saturation.latency_ms(0.99), 2),
        "saturation_clients": clients,
        "saturation_sweep": f.sweep.iter().map(|(c, r)| json!({"clients": c, "callbacks_per_s": round(r.per_second(), 1)})).collect::<Vec<_>>(),
        "saturation_at_a_clients_per_s": round(at_a, 1),
        "saturation_at_a_clients_p99_ms": round(f.at_a_clients.latency_ms(0.99), 2),
        "ledger_clients": args.ledger_clients,
        "healthz_per_s": round(f.healthz.per_second(), 1),
        "ratio_to_healthz": round(callbacks / f.healthz.per_second(), 3),
        "ledger_rate": args.ledger_rate,
        "ratio_to_ledger": args.ledger_rate.map(|a| round(callbacks / a, 3)),
        "ratio_at_a_clients": args.ledger_rate.map(|a| round(at_a / a, 3)),
        "members_registered": f.registered,
        "target_p99_ms": TARGET_P99_MS,
        "target_offered_rate": TARGET_OFFERED_RATE,
        "target_ratio_to_ledger": TARGET_RATIO_TO_LEDGER,
        "duration_secs": args.duration_secs,
        "concurrency": args.concurrency,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(ok: u64, ok_outside: u64, errors: u64) -> Outcome {
        Outcome { ok, ok_outside, errors, ..Outcome::new(Duration::from_secs(1)) }
    }

    fn figures(registered: i64, errors: u64) -> Figures {
        Figures {
            healthz: run(100, 0, 0),
            warmup: run(0, 10, 0),
            offered: run(20, 0, errors),
            at_a_clients: run(5, 1, 0),
            sweep: vec![(64, run(30, 2, 0)), (128, run(40, 3, 0))],
            registered,
        }
    }

    #[test]
    fn members_registered_must_match_the_callbacks_answered() {
        // 10 + 20 + 6 + 32 + 43 answered; /healthz registers nobody.
        assert!(figures(111, 0).failed_checks().is_empty());
        assert_eq!(figures(110, 0).failed_checks().len(), 1, "a callback answered without its member");
        assert_eq!(figures(112, 0).failed_checks().len(), 1, "a member nobody was answered for");
        assert!(figures(112, 1).failed_checks().is_empty(), "a failed request may have registered its member");
        assert_eq!(figures(112, 1).counts(), Counts { errors: 1, skipped: 0 });
        assert_eq!(figures(111, 0).saturation().0, 128, "the best run of the sweep");
    }

    #[test]
    fn ledger_clients_are_checked() {
        let settings = Settings::default();
        let args = GatewayBenchArgs {
            database: "wxcm_bench_gateway".into(),
            rate: RATE_MAX,
            duration_secs: DURATION_SECS_MAX,
            concurrency: CONCURRENCY_MAX,
            saturation_clients: vec![64, 128, 256],
            ledger_rate: Some(8_000.0),
            ledger_clients: CONCURRENCY_MAX,
            keep: false,
        };
        assert!(args.validate(&settings).is_ok());
        assert!(GatewayBenchArgs { ledger_clients: 0, ..args.clone() }.validate(&settings).is_err());
        assert!(GatewayBenchArgs { ledger_clients: CONCURRENCY_MAX + 1, ..args.clone() }.validate(&settings).is_err());
        assert!(GatewayBenchArgs { ledger_rate: Some(0.0), ..args }.validate(&settings).is_err());
    }
}
