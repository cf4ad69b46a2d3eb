//! `wxcm bench coupons`: claims of one hot coupon template by many members
//! through the member API, and write-offs through the admin API.
//!
//! The server runs in-process (the API role, HTTP on port 0) on a dedicated
//! database; `--members` members are registered and given member sessions.
//! - warm-up: claims, closed loop, untimed;
//! - (a) claims, `--clients` closed-loop clients (16, as the ledger's phase a):
//!   `claims_per_s` and latencies, and `ratio_to_ledger` = claims/s ÷
//!   `--ledger-rate` (the ledger bench's phase a on the same machine);
//! - (b) claims offered open-loop at `--rate` (300/s) for the window: p99;
//! - (c) write-offs of coupons claimed above, closed loop;
//! - (d) sell-out: a second template with `--sellout-stock` coupons claimed by
//!   the same clients until it answers sold out: exactly that many issued.
//!
//! Every claim of (a) and (b) is checked afterwards: coupons in the event store
//! = claims answered 201 = the template's `issued`, serials distinct, never
//! more than the stock (`oversold`). The last line of stdout is one JSON
//! object; any error, skipped tick or failed check fails the run.

use std::sync::{Arc, Mutex};
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
const ADMIN_PASSWORD: &str = "bench-coupons-password";
const TARGET_P99_MS: f64 = 100.0;
const TARGET_OFFERED_RATE: u32 = 300;
const TARGET_RATIO_TO_LEDGER: f64 = 0.3;
/// Stock of the hot template: more than any window here can claim.
const HOT_STOCK: u32 = 5_000_000;

#[derive(Debug, Clone, clap::Args)]
pub struct CouponsBenchArgs {
    /// Scratch database on the default shard's server; dropped and recreated.
    #[arg(long, default_value = "wxcm_bench_coupons")]
    pub database: String,
    /// Members who claim (each has a member session).
    #[arg(long, default_value_t = 2_000)]
    pub members: u32,
    /// Closed-loop clients of (a), (c) and (d).
    #[arg(long, default_value_t = 16)]
    pub clients: u32,
    /// Offered claims per second in (b).
    #[arg(long, default_value_t = TARGET_OFFERED_RATE)]
    pub rate: u32,
    /// Length of each timed window.
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
    /// Stock of the sell-out template of (d).
    #[arg(long, default_value_t = 2_000)]
    pub sellout_stock: u32,
    /// The ledger's command rate `a` (commands/s of `wxcm bench ledger` on this machine).
    #[arg(long)]
    pub ledger_rate: Option<f64>,
    /// Keep the bench database afterwards.
    #[arg(long)]
    pub keep: bool,
}

impl CouponsBenchArgs {
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
        anyhow::ensure!((1..=100_000).contains(&self.sellout_stock), "--sellout-stock must be 1..=100000");
        if let Some(rate) = self.ledger_rate {
            anyhow::ensure!(rate.is_finite() && rate > 0.0, "--ledger-rate must be a positive number");
        }
        setup::check_database_name(&self.database, settings)
    }
}

/// Write-offs of phase (c) at most.
const WRITEOFFS_MAX: u64 = 20_000;

/// What the clients share: the server, the member sessions, the codes claimed.
struct Shared {
    http: reqwest::Client,
    base_url: String,
    sessions: Vec<String>,
    owner: String,
    /// Codes claimed in (a) and (b), taken by the write-offs of (c).
    codes: Mutex<Vec<String>>,
}

/// One claim; `Ok(true)` issued, `Ok(false)` sold out (only expected in (d)).
async fn claim(shared: &Shared, template: &str, session: &str, key: String) -> Result<bool> {
    let res = shared
        .http
        .post(format!("{}/m/api/v1/coupons/claims", shared.base_url))
        .bearer_auth(session)
        .header("Idempotency-Key", key)
        .json(&json!({"template_id": template}))
        .send()
        .await?;
    let status = res.status();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    if status.as_u16() == 201 {
        let code = body["code"].as_str().context("a claimed coupon without code")?.to_owned();
        shared.codes.lock().map_err(|_| anyhow::anyhow!("codes lock"))?.push(code);
        return Ok(true);
    }
    if status.as_u16() == 409 && body["error"]["code"] == "sold_out" {
        return Ok(false);
    }
    anyhow::bail!("claim answered {status}: {body}")
}

async fn claim_ok(shared: &Shared, template: &str, session: &str, key: String) -> Result<()> {
    anyhow::ensure!(claim(shared, template, session, key).await?, "sold out");
    Ok(())
}

async fn redeem(shared: &Shared, key: String) -> Result<()> {
    let code = shared.codes.lock().map_err(|_| anyhow::anyhow!("codes lock"))?.pop().context("no code left")?;
    let res = shared
        .http
        .post(format!("{}/admin/api/v1/coupons/redemptions", shared.base_url))
        .bearer_auth(&shared.owner)
        .header("Idempotency-Key", key)
        .json(&json!({"code": code, "store": "bench counter"}))
        .send()
        .await?;
    anyhow::ensure!(res.status().is_success(), "write-off answered {}", res.status());
    Ok(())
}

async fn create_template(shared: &Shared, name: &str, stock: u32) -> Result<String> {
    let body = json!({
        "terms": {
            "name": name,
            "benefit": {"kind": "cash", "value_fen": 500, "min_spend_fen": null},
            "validity": {"kind": "days_from_issue", "days": 30},
            "per_member_limit": null,
            "audience": {"kind": "all_members"},
        },
        "stock": {"kind": "finite", "total": stock},
    });
    let res = shared
        .http
        .post(format!("{}/admin/api/v1/coupon-templates", shared.base_url))
        .bearer_auth(&shared.owner)
        .header("Idempotency-Key", format!("bench-template-{name}"))
        .json(&body)
        .send()
        .await?;
    anyhow::ensure!(res.status().as_u16() == 201, "template answered {}", res.status());
    let body: Value = res.json().await?;
    Ok(body["template_id"].as_str().context("template id")?.to_owned())
}

struct Figures {
    warmup: Outcome,
    claims: Outcome,
    offered: Outcome,
    writeoffs: Outcome,
    sellout: Outcome,
    sellout_issued: u64,
    sellout_refused: u64,
    stock: u64,
    /// Coupons of the hot template in the event store, and its own count.
    stored: i64,
    template_issued: u64,
    distinct_serials: i64,
    sellout_stored: i64,
}

impl Figures {
    fn hot_claims(&self) -> u64 {
        self.warmup.succeeded() + self.claims.succeeded() + self.offered.succeeded()
    }

    fn oversold(&self) -> u64 {
        let sellout = u64::try_from(self.sellout_stored).unwrap_or(0).saturating_sub(self.stock);
        self.template_issued.saturating_sub(u64::from(HOT_STOCK)) + sellout
    }

    fn counts(&self) -> Counts {
        [&self.warmup, &self.claims, &self.offered, &self.writeoffs, &self.sellout]
            .into_iter()
            .map(Outcome::counts)
            .sum()
    }

    fn failed_checks(&self) -> Vec<String> {
        let mut failed = Vec::new();
        let answered = self.hot_claims();
        let stored = u64::try_from(self.stored).unwrap_or(0);
        if stored != answered || self.template_issued != answered {
            failed.push(format!(
                "{stored} coupons stored and {} issued by the template for {answered} claims answered",
                self.template_issued
            ));
        }
        if u64::try_from(self.distinct_serials).unwrap_or(0) != self.template_issued {
            failed.push(format!("{} distinct serials for {} issued", self.distinct_serials, self.template_issued));
        }
        if self.sellout_issued != self.stock || u64::try_from(self.sellout_stored).unwrap_or(0) != self.stock {
            failed.push(format!(
                "sell-out: {} answered issued, {} stored, stock {}",
                self.sellout_issued, self.sellout_stored, self.stock
            ));
        }
        if self.oversold() > 0 {
            failed.push(format!("{} oversold", self.oversold()));
        }
        failed
    }
}

async fn run_phases(base: &Settings, target: &Target, args: &CouponsBenchArgs) -> Result<Figures> {
    target.recreate().await?;
    let mut settings = target.settings(base, POOL_MAX + POOL_SPARE_CONNECTIONS, setup::cache_for(args.members * 2));
    settings.http.listen = "127.0.0.1:0".into();
    let application = setup::build(&settings, Role::Api).await?;
    let app = application.app.clone();
    let tenant = setup::create_tenant(&app).await?;
    wxcm_commands::auth::create_admin(&app, &tenant, "bench-owner", ADMIN_PASSWORD, AdminRole::Owner).await?;
    tracing::info!(members = args.members, "registering members");
    let members = crate::workload::register_members(&app, &tenant, "bench-coupon-member", args.members, 32).await?;
    let tokens =
        crate::workload::member_sessions(&app, &tenant, &members, "wx00000000000be4c2", "oBenchCoupon").await?;
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
        let shared = Arc::new(Shared { http, base_url, sessions: tokens, owner, codes: Mutex::new(Vec::new()) });
        let hot = create_template(&shared, "hot", HOT_STOCK).await?;
        let window = Duration::from_secs(args.duration_secs);
        let claims_loop = |secs: Duration, phase: &'static str| {
            let (shared, hot) = (shared.clone(), hot.clone());
            closed_loop(args.clients, Duration::ZERO, secs, move |client, n| {
                let (shared, hot) = (shared.clone(), hot.clone());
                async move {
                    let session = crate::workload::session_of(&shared.sessions, client, n).to_owned();
                    claim_ok(&shared, &hot, &session, format!("bench-{phase}-{client}-{n}")).await
                }
            })
        };
        tracing::info!(secs = WARMUP_SECS, "warm-up: claims, closed loop");
        let warmup = claims_loop(Duration::from_secs(WARMUP_SECS), "w").await?;
        tracing::info!(clients = args.clients, "phase a: claims of one template, closed loop");
        let claims = claims_loop(window, "a").await?;
        tracing::info!(rate = args.rate, "phase b: claims offered at a fixed rate");
        let offered = {
            let (shared, hot) = (shared.clone(), hot.clone());
            open_loop(args.rate, u64::from(args.rate) * args.duration_secs, driver::CONCURRENCY_MAX, move |n| {
                let (shared, hot) = (shared.clone(), hot.clone());
                async move {
                    let session = shared.sessions[n as usize % shared.sessions.len()].clone();
                    claim_ok(&shared, &hot, &session, format!("bench-b-{n}")).await
                }
            })
            .await?
        };
        let codes = shared.codes.lock().map_err(|_| anyhow::anyhow!("codes lock"))?.len();
        let writeoff_count = (codes as u64).min(WRITEOFFS_MAX);
        tracing::info!(clients = args.clients, count = writeoff_count, "phase c: write-offs of claimed coupons");
        let writeoffs = {
            let shared = shared.clone();
            driver::fixed_count(writeoff_count, args.clients, move |n| {
                let shared = shared.clone();
                async move { redeem(&shared, format!("bench-c-{n}")).await.map(|_| true) }
            })
            .await
        };
        tracing::info!(stock = args.sellout_stock, "phase d: sell-out of a small stock");
        let sellout_template = create_template(&shared, "sellout", args.sellout_stock).await?;
        let attempts = u64::from(args.sellout_stock) + u64::from(args.clients) * 4;
        let (sellout, sellout_issued) = {
            let (shared, t) = (shared.clone(), sellout_template.clone());
            let issued = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let counter = issued.clone();
            let outcome = driver::fixed_count(attempts, args.clients, move |n| {
                let (shared, t, counter) = (shared.clone(), t.clone(), counter.clone());
                async move {
                    let session = shared.sessions[n as usize % shared.sessions.len()].clone();
                    let got = claim(&shared, &t, &session, format!("bench-d-{n}")).await?;
                    if got {
                        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Ok(got)
                }
            })
            .await;
            (outcome, issued.load(std::sync::atomic::Ordering::Relaxed))
        };
        let sellout_refused = sellout.ok.saturating_sub(sellout_issued);

        let admin = target.admin_pool(1).await?;
        let stored_of = |template: String| {
            let admin = admin.clone();
            async move {
                sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM events WHERE aggregate_type = 'coupon' AND payload -> 'CouponIssued' ->> 'template_id' = $1",
                )
                .bind(template)
                .fetch_one(&admin)
                .await
                .context("counting coupons")
            }
        };
        let stored = stored_of(hot.clone()).await?;
        let sellout_stored = stored_of(sellout_template.clone()).await?;
        let distinct_serials: i64 = sqlx::query_scalar(
            "SELECT count(DISTINCT (g ->> 'serial')) FROM events, jsonb_array_elements(payload -> 'CouponsIssued' -> 'grants') g
              WHERE aggregate_type = 'coupon_template' AND aggregate_id = $1",
        )
        .bind(&hot)
        .fetch_one(&admin)
        .await
        .context("counting serials")?;
        let template_issued: i64 = sqlx::query_scalar(
            "SELECT coalesce(max((payload -> 'CouponsIssued' ->> 'issued_after')::bigint), 0) FROM events
              WHERE aggregate_type = 'coupon_template' AND aggregate_id = $1",
        )
        .bind(&hot)
        .fetch_one(&admin)
        .await
        .context("reading issued")?;
        admin.close().await;
        anyhow::Ok(Figures {
            warmup,
            claims,
            offered,
            writeoffs,
            sellout,
            sellout_issued,
            sellout_refused,
            stock: u64::from(args.sellout_stock),
            stored,
            template_issued: u64::try_from(template_issued).unwrap_or(0),
            distinct_serials,
            sellout_stored,
        })
    }
    .await;
    running.stop().await;
    outcome
}

pub async fn bench_coupons(base: &Settings, args: CouponsBenchArgs) -> Result<()> {
    args.validate(base)?;
    let target = Target::new(base, &args.database)?;
    wxcm_server::app::install_crypto_provider();
    let outcome = run_phases(base, &target, &args).await;
    target.finish(args.keep).await;
    let f = outcome?;
    f.warmup.warn_errors("warm-up");
    f.claims.warn_errors("a");
    f.offered.warn_errors("b");
    f.writeoffs.warn_errors("c");
    f.sellout.warn_errors("d");
    setup::finish("coupons", &report_table(&f, &args), report_json(&f, &args), f.counts(), &f.failed_checks())
}

fn report_table(f: &Figures, args: &CouponsBenchArgs) -> Table {
    let mut table = setup::phase_table();
    setup::phase_row(&mut table, format!("warm-up, {} clients", args.clients), &f.warmup, "claims/s", String::new());
    let ratio = args.ledger_rate.map(|a| f.claims.per_second() / a);
    setup::phase_row(
        &mut table,
        format!("(a) claims of one template, {} clients", args.clients),
        &f.claims,
        "claims/s",
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
        format!("(b) claims offered at {}/s", args.rate),
        &f.offered,
        "claims/s",
        format!("p99 <= {TARGET_P99_MS} ms at {TARGET_OFFERED_RATE}/s ({})", verdict(p99_met)),
    );
    setup::phase_row(
        &mut table,
        format!("(c) write-offs, {} clients", args.clients),
        &f.writeoffs,
        "requests/s",
        String::new(),
    );
    setup::phase_row(
        &mut table,
        format!("(d) sell-out of {}: {} issued, {} sold out", f.stock, f.sellout_issued, f.sellout_refused),
        &f.sellout,
        "claims/s",
        format!("issued = stock, oversold 0 ({})", verdict(f.oversold() == 0 && f.sellout_issued == f.stock)),
    );
    table
}

fn report_json(f: &Figures, args: &CouponsBenchArgs) -> Value {
    json!({
        "clients": args.clients,
        "members": args.members,
        "claims_per_s": round(f.claims.per_second(), 1),
        "p50_ms": round(f.claims.latency_ms(0.5), 2),
        "p99_ms": round(f.claims.latency_ms(0.99), 2),
        "offered_rate": args.rate,
        "offered_claims_per_s": round(f.offered.per_second(), 1),
        "offered_p99_ms": round(f.offered.latency_ms(0.99), 2),
        "writeoffs_per_s": round(f.writeoffs.per_second(), 1),
        "writeoffs_p99_ms": round(f.writeoffs.latency_ms(0.99), 2),
        "issued": f.sellout_issued,
        "stock": f.stock,
        "sold_out_answers": f.sellout_refused,
        "oversold": f.oversold(),
        "hot_template_issued": f.template_issued,
        "ledger_rate": args.ledger_rate,
        "ratio_to_ledger": args.ledger_rate.map(|a| round(f.claims.per_second() / a, 3)),
        "targets": {
            "ratio_to_ledger_min": TARGET_RATIO_TO_LEDGER,
            "p99_ms_max": TARGET_P99_MS,
            "offered_rate": TARGET_OFFERED_RATE,
            "oversold": 0,
        },
    })
}
