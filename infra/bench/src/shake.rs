//! `wxcm bench shake`: shakes of one hot shake lottery by many members through
//! the member API.
//!
//! The server runs in-process (the API role, HTTP on port 0) on a dedicated
//! database; `--members` members are registered and given member sessions, and
//! the owner creates, schedules and starts one campaign (a points prize of
//! `--stock` units at weight 1 against "thanks" at weight `--thanks-weight`,
//! each member up to 1,000 shakes and 100 prizes).
//! - warm-up: shakes, closed loop, untimed;
//! - (a) shakes, `--clients` closed-loop clients (16, as the ledger's phase a):
//!   `draws_per_s` and latencies, and `ratio_to_ledger` = draws/s ÷
//!   `--ledger-rate` (the ledger bench's phase a on the same machine);
//! - (b) shakes offered open-loop at `--rate` (300/s) for the window: p99;
//! - (c) sell-out: a second campaign whose prize (`--sellout-stock` units)
//!   wins half the shakes, shaken until it answers `prizes_exhausted`: exactly
//!   the stock won, never more.
//!
//! Afterwards the campaigns' own counts are checked against the answers: the
//! hot campaign's `winners` = prizes answered, its stock left = stock − winners
//! (`oversold` counts any prize beyond a stock). The last line of stdout is one
//! JSON object; any error, skipped tick or failed check fails the run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use comfy_table::Table;
use serde_json::{json, Value};
use wxcm_commands::ports::Role as AdminRole;
use wxcm_server::app::Role;
use wxcm_server::config::Settings;

use crate::driver::{self, closed_loop, open_loop, Counts, Outcome};
use crate::setup::{self, round, verdict, Target, DURATION_SECS_MAX, POOL_SPARE_CONNECTIONS};

pub const MEMBERS_MAX: u32 = 200_000;
pub const RATE_MAX: u32 = 20_000;
const POOL_MAX: u32 = 32;
const WARMUP_SECS: u64 = 2;
const ADMIN_PASSWORD: &str = "bench-shake-password";
const TARGET_P99_MS: f64 = 100.0;
const TARGET_OFFERED_RATE: u32 = 300;
const TARGET_RATIO_TO_LEDGER: f64 = 0.3;
/// Shakes one member may make (the API's maximum), and prizes one may win.
const CHANCES_PER_MEMBER: u32 = 1_000;
const PRIZES_PER_MEMBER: u32 = 100;
/// Points a prize gives.
const PRIZE_POINTS: i64 = 10;

#[derive(Debug, Clone, clap::Args)]
pub struct ShakeBenchArgs {
    /// Scratch database on the default shard's server; dropped and recreated.
    #[arg(long, default_value = "wxcm_bench_shake")]
    pub database: String,
    /// Members who shake (each has a member session).
    #[arg(long, default_value_t = 2_000)]
    pub members: u32,
    /// Closed-loop clients of (a) and (c).
    #[arg(long, default_value_t = 16)]
    pub clients: u32,
    /// Offered shakes per second in (b).
    #[arg(long, default_value_t = TARGET_OFFERED_RATE)]
    pub rate: u32,
    /// Length of each timed window.
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
    /// Prize units of the hot campaign.
    #[arg(long, default_value_t = 1_000)]
    pub stock: u32,
    /// Weight of "thanks" against the prize's 1 in the hot campaign.
    #[arg(long, default_value_t = 99)]
    pub thanks_weight: u32,
    /// Prize units of the sell-out campaign of (c).
    #[arg(long, default_value_t = 200)]
    pub sellout_stock: u32,
    /// The ledger's command rate `a` (commands/s of `wxcm bench ledger` on this machine).
    #[arg(long)]
    pub ledger_rate: Option<f64>,
    /// Keep the bench database afterwards.
    #[arg(long)]
    pub keep: bool,
}

impl ShakeBenchArgs {
    fn validate(&self, settings: &Settings) -> Result<()> {
        anyhow::ensure!((1..=MEMBERS_MAX).contains(&self.members), "--members must be 1..={MEMBERS_MAX}");
        anyhow::ensure!(
            (1..=driver::CONCURRENCY_MAX).contains(&self.clients),
            "--clients must be 1..={}",
            driver::CONCURRENCY_MAX
        );
        anyhow::ensure!((1..=RATE_MAX).contains(&self.rate), "--rate must be 1..={RATE_MAX}");
        anyhow::ensure!(
            (1..=DURATION_SECS_MAX).contains(&self.duration_secs),
            "--duration-secs must be 1..={DURATION_SECS_MAX}"
        );
        anyhow::ensure!((1..=1_000_000).contains(&self.stock), "--stock must be 1..=1000000");
        anyhow::ensure!((1..=1_000_000).contains(&self.thanks_weight), "--thanks-weight must be 1..=1000000");
        anyhow::ensure!((1..=100_000).contains(&self.sellout_stock), "--sellout-stock must be 1..=100000");
        if let Some(rate) = self.ledger_rate {
            anyhow::ensure!(rate.is_finite() && rate > 0.0, "--ledger-rate must be a positive number");
        }
        setup::check_database_name(&self.database, settings)
    }
}

/// What the clients share: the server, the member sessions, the prizes won.
struct Shared {
    http: reqwest::Client,
    base_url: String,
    sessions: Vec<String>,
    owner: String,
    /// Prizes answered on the hot campaign (warm-up, a and b).
    hot_won: AtomicU64,
}

/// What a shake answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shaken {
    Won,
    Thanks,
    /// `prizes_exhausted`, or a member at its limits (expected only in (c)).
    Refused,
}

async fn shake(shared: &Shared, campaign: &str, session: &str, key: String) -> Result<Shaken> {
    let res = shared
        .http
        .post(format!("{}/m/api/v1/campaigns/{campaign}/shakes", shared.base_url))
        .bearer_auth(session)
        .header("Idempotency-Key", key)
        .send()
        .await?;
    let status = res.status();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    if status.as_u16() == 201 {
        return Ok(if body["shake"]["won"] == true { Shaken::Won } else { Shaken::Thanks });
    }
    let code = body["error"]["code"].as_str().unwrap_or_default();
    if status.as_u16() == 409
        && ["prizes_exhausted", "lifetime_limit_reached", "prize_limit_reached", "daily_limit_reached"].contains(&code)
    {
        return Ok(Shaken::Refused);
    }
    anyhow::bail!("shake answered {status}: {body}")
}

/// A hot-campaign shake: a refusal is an error there (the limits are far).
async fn hot_shake(shared: &Shared, campaign: &str, session: &str, key: String) -> Result<()> {
    match shake(shared, campaign, session, key).await? {
        Shaken::Won => {
            shared.hot_won.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        Shaken::Thanks => Ok(()),
        Shaken::Refused => anyhow::bail!("a hot-campaign shake was refused"),
    }
}

async fn admin(shared: &Shared, method: reqwest::Method, path: &str, key: &str, body: Option<Value>) -> Result<Value> {
    let mut req = shared
        .http
        .request(method, format!("{}/admin/api/v1{path}", shared.base_url))
        .bearer_auth(&shared.owner)
        .header("Idempotency-Key", key);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await?;
    let status = res.status();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    anyhow::ensure!(status.is_success(), "{path} answered {status}: {body}");
    Ok(body)
}

/// Creates, schedules and starts a shake lottery; returns its id.
async fn ongoing_campaign(shared: &Shared, name: &str, stock: u32, thanks_weight: u32) -> Result<String> {
    let now = chrono::Utc::now();
    let body = json!({
        "name": name,
        "starts_at": now,
        "ends_at": now + chrono::Duration::days(1),
        "chances": {"lifetime": CHANCES_PER_MEMBER},
        "prizes_per_member_max": PRIZES_PER_MEMBER,
        "slots": [
            {"prize": {"kind": "points", "points": PRIZE_POINTS}, "weight": 1, "stock": stock},
            {"prize": {"kind": "thanks"}, "weight": thanks_weight},
        ],
    });
    let created = admin(shared, reqwest::Method::POST, "/campaigns", &format!("bench-campaign-{name}"), Some(body))
        .await
        .context("creating the campaign")?;
    let id = created["campaign_id"].as_str().context("campaign id")?.to_owned();
    for step in ["schedule", "start"] {
        admin(shared, reqwest::Method::POST, &format!("/campaigns/{id}/{step}"), &format!("bench-{step}-{name}"), None)
            .await
            .with_context(|| format!("{step} of the campaign"))?;
    }
    Ok(id)
}

/// A campaign's own figures (`GET /admin/api/v1/campaigns/{id}`).
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    winners: u64,
    stock_left: u64,
    shakes: u64,
}

async fn tally(shared: &Shared, campaign: &str) -> Result<Tally> {
    let res = shared
        .http
        .get(format!("{}/admin/api/v1/campaigns/{campaign}", shared.base_url))
        .bearer_auth(&shared.owner)
        .send()
        .await?;
    anyhow::ensure!(res.status().is_success(), "campaign view answered {}", res.status());
    let view: Value = res.json().await?;
    Ok(Tally {
        winners: view["winners"].as_u64().context("winners")?,
        stock_left: view["slots"][0]["stock_left"].as_u64().context("stock left")?,
        shakes: view["shakes"].as_u64().context("shakes")?,
    })
}

struct Figures {
    warmup: Outcome,
    draws: Outcome,
    offered: Outcome,
    sellout: Outcome,
    stock: u64,
    hot_won: u64,
    hot: Tally,
    sellout_stock: u64,
    sellout_won: u64,
    sellout_refused: u64,
    sellout_tally: Tally,
}

impl Figures {
    fn hot_shakes(&self) -> u64 {
        self.warmup.succeeded() + self.draws.succeeded() + self.offered.succeeded()
    }

    fn oversold(&self) -> u64 {
        self.hot.winners.saturating_sub(self.stock) + self.sellout_tally.winners.saturating_sub(self.sellout_stock)
    }

    fn counts(&self) -> Counts {
        [&self.warmup, &self.draws, &self.offered, &self.sellout].into_iter().map(Outcome::counts).sum()
    }

    fn failed_checks(&self) -> Vec<String> {
        let mut failed = Vec::new();
        if self.hot.shakes != self.hot_shakes() {
            failed.push(format!("{} shakes recorded for {} answered", self.hot.shakes, self.hot_shakes()));
        }
        if self.hot.winners != self.hot_won || self.hot.stock_left + self.hot.winners != self.stock {
            failed.push(format!(
                "hot campaign: {} winners recorded, {} answered, {} left of {}",
                self.hot.winners, self.hot_won, self.hot.stock_left, self.stock
            ));
        }
        if self.sellout_won != self.sellout_stock
            || self.sellout_tally.winners != self.sellout_stock
            || self.sellout_tally.stock_left != 0
        {
            failed.push(format!(
                "sell-out: {} answered won, {} recorded, {} left, stock {}",
                self.sellout_won, self.sellout_tally.winners, self.sellout_tally.stock_left, self.sellout_stock
            ));
        }
        if self.oversold() > 0 {
            failed.push(format!("{} oversold", self.oversold()));
        }
        failed
    }
}

async fn run_phases(base: &Settings, target: &Target, args: &ShakeBenchArgs) -> Result<Figures> {
    target.recreate().await?;
    let mut settings = target.settings(base, POOL_MAX + POOL_SPARE_CONNECTIONS, setup::cache_for(args.members * 2));
    settings.http.listen = "127.0.0.1:0".into();
    let application = setup::build(&settings, Role::Api).await?;
    let app = application.app.clone();
    let tenant = setup::create_tenant(&app).await?;
    wxcm_commands::auth::create_admin(&app, &tenant, "bench-owner", ADMIN_PASSWORD, AdminRole::Owner).await?;
    tracing::info!(members = args.members, "registering members");
    let members = crate::workload::register_members(&app, &tenant, "bench-shake-member", args.members, 32).await?;
    let tokens = crate::workload::member_sessions(&app, &tenant, &members, "wx00000000000be4c3", "oBenchShake").await?;
    let running = application.spawn();
    let addr = running.addr.context("the API role listens")?;
    let base_url = format!("http://{addr}");
    let outcome = async {
        let http = reqwest::Client::builder().pool_max_idle_per_host(driver::CONCURRENCY_MAX as usize).build()?;
        let login: Value = http
            .post(format!("{base_url}/admin/api/v1/login"))
            .json(&json!({"tenant_id": tenant.as_str(), "username": "bench-owner", "password": ADMIN_PASSWORD}))
            .send()
            .await?
            .json()
            .await?;
        let owner = login["token"].as_str().context("admin login")?.to_owned();
        let shared = Arc::new(Shared { http, base_url, sessions: tokens, owner, hot_won: AtomicU64::new(0) });
        let hot = ongoing_campaign(&shared, "hot", args.stock, args.thanks_weight).await?;
        let window = Duration::from_secs(args.duration_secs);
        let shakes_loop = |secs: Duration, phase: &'static str| {
            let (shared, hot) = (shared.clone(), hot.clone());
            closed_loop(args.clients, Duration::ZERO, secs, move |client, n| {
                let (shared, hot) = (shared.clone(), hot.clone());
                async move {
                    let session = crate::workload::session_of(&shared.sessions, client, n).to_owned();
                    hot_shake(&shared, &hot, &session, format!("bench-{phase}-{client}-{n}")).await
                }
            })
        };
        tracing::info!(secs = WARMUP_SECS, "warm-up: shakes, closed loop");
        let warmup = shakes_loop(Duration::from_secs(WARMUP_SECS), "w").await?;
        tracing::info!(clients = args.clients, "phase a: shakes of one campaign, closed loop");
        let draws = shakes_loop(window, "a").await?;
        tracing::info!(rate = args.rate, "phase b: shakes offered at a fixed rate");
        let offered = {
            let (shared, hot) = (shared.clone(), hot.clone());
            open_loop(args.rate, u64::from(args.rate) * args.duration_secs, driver::CONCURRENCY_MAX, move |n| {
                let (shared, hot) = (shared.clone(), hot.clone());
                async move {
                    let session = shared.sessions[n as usize % shared.sessions.len()].clone();
                    hot_shake(&shared, &hot, &session, format!("bench-b-{n}")).await
                }
            })
            .await?
        };
        let hot_tally = tally(&shared, &hot).await?;

        tracing::info!(stock = args.sellout_stock, "phase c: sell-out of a small stock");
        let sellout_campaign = ongoing_campaign(&shared, "sellout", args.sellout_stock, 1).await?;
        let won = Arc::new(AtomicU64::new(0));
        let refused = Arc::new(AtomicU64::new(0));
        // Half the shakes win: four times the stock is far more than enough.
        let attempts = u64::from(args.sellout_stock) * 4 + u64::from(args.clients) * 4;
        let sellout = {
            let (shared, c, won, refused) = (shared.clone(), sellout_campaign.clone(), won.clone(), refused.clone());
            driver::fixed_count(attempts, args.clients, move |n| {
                let (shared, c, won, refused) = (shared.clone(), c.clone(), won.clone(), refused.clone());
                async move {
                    let session = shared.sessions[n as usize % shared.sessions.len()].clone();
                    match shake(&shared, &c, &session, format!("bench-c-{n}")).await? {
                        Shaken::Won => won.fetch_add(1, Ordering::Relaxed),
                        Shaken::Thanks => 0,
                        Shaken::Refused => refused.fetch_add(1, Ordering::Relaxed),
                    };
                    Ok(true)
                }
            })
            .await
        };
        let sellout_tally = tally(&shared, &sellout_campaign).await?;
        anyhow::Ok(Figures {
            warmup,
            draws,
            offered,
            sellout,
            stock: u64::from(args.stock),
            hot_won: shared.hot_won.load(Ordering::Relaxed),
            hot: hot_tally,
            sellout_stock: u64::from(args.sellout_stock),
            sellout_won: won.load(Ordering::Relaxed),
            sellout_refused: refused.load(Ordering::Relaxed),
            sellout_tally,
        })
    }
    .await;
    running.stop().await;
    outcome
}

pub async fn bench_shake(base: &Settings, args: ShakeBenchArgs) -> Result<()> {
    args.validate(base)?;
    let target = Target::new(base, &args.database)?;
    wxcm_server::app::install_crypto_provider();
    let outcome = run_phases(base, &target, &args).await;
    target.finish(args.keep).await;
    let f = outcome?;
    f.warmup.warn_errors("warm-up");
    f.draws.warn_errors("a");
    f.offered.warn_errors("b");
    f.sellout.warn_errors("c");
    setup::finish("shake", &report_table(&f, &args), report_json(&f, &args), f.counts(), &f.failed_checks())
}

fn report_table(f: &Figures, args: &ShakeBenchArgs) -> Table {
    let mut table = setup::phase_table();
    setup::phase_row(&mut table, format!("warm-up, {} clients", args.clients), &f.warmup, "draws/s", String::new());
    let ratio = args.ledger_rate.map(|a| f.draws.per_second() / a);
    setup::phase_row(
        &mut table,
        format!("(a) shakes of one campaign, {} clients", args.clients),
        &f.draws,
        "draws/s",
        match ratio {
            Some(r) => {
                format!("/ ledger a = {r:.3} >= {TARGET_RATIO_TO_LEDGER} ({})", verdict(r >= TARGET_RATIO_TO_LEDGER))
            }
            None => format!("/ ledger a >= {TARGET_RATIO_TO_LEDGER} (no --ledger-rate)"),
        },
    );
    let p99_met = f.offered.latency_ms(0.99) <= TARGET_P99_MS;
    setup::phase_row(
        &mut table,
        format!("(b) shakes offered at {}/s", args.rate),
        &f.offered,
        "draws/s",
        format!("p99 <= {TARGET_P99_MS} ms at {TARGET_OFFERED_RATE}/s ({})", verdict(p99_met)),
    );
    setup::phase_row(
        &mut table,
        format!("(c) sell-out of {}: {} won, {} refused", f.sellout_stock, f.sellout_won, f.sellout_refused),
        &f.sellout,
        "draws/s",
        format!("won = stock, oversold 0 ({})", verdict(f.oversold() == 0 && f.sellout_won == f.sellout_stock)),
    );
    table
}

fn report_json(f: &Figures, args: &ShakeBenchArgs) -> Value {
    json!({
        "clients": args.clients,
        "members": args.members,
        "draws_per_s": round(f.draws.per_second(), 1),
        "p50_ms": round(f.draws.latency_ms(0.5), 2),
        "p99_ms": round(f.draws.latency_ms(0.99), 2),
        "offered_rate": args.rate,
        "offered_draws_per_s": round(f.offered.per_second(), 1),
        "offered_p99_ms": round(f.offered.latency_ms(0.99), 2),
        "won": f.hot.winners,
        "stock": f.stock,
        "stock_left": f.hot.stock_left,
        "sellout_stock": f.sellout_stock,
        "sellout_won": f.sellout_won,
        "oversold": f.oversold(),
        "ledger_rate": args.ledger_rate,
        "ratio_to_ledger": args.ledger_rate.map(|a| round(f.draws.per_second() / a, 3)),
        "targets": {
            "ratio_to_ledger_min": TARGET_RATIO_TO_LEDGER,
            "p99_ms_max": TARGET_P99_MS,
            "offered_rate": TARGET_OFFERED_RATE,
            "oversold": 0,
        },
    })
}
