//! `wxcm bench console`: the reporting dashboard of a big tenant — 100,000
//! members registered through the ledger and 366 days of activity — measured in
//! a real headless Chromium: the time from navigation to the frame in which the
//! full-range dashboard (KPIs and every chart) is painted, and the report API's
//! latency for the same range.
//!
//! The members are real (commands, events). The 366 days of history are rows of
//! the read model the dashboard reads (`rm_daily_ops`), written directly: the
//! event store stamps every event with the database's time, so a year of events
//! cannot be made in the past; the dashboard never reads events anyway. The
//! JSON line says so (`history`).

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use chrono::{Days, NaiveDate};
use comfy_table::Table;
use serde_json::{json, Value};
use sqlx::PgPool;
use wxcm_commands::ports::Role as AdminRole;
use wxcm_server::app::Role;
use wxcm_server::config::Settings;

use crate::browser::Chromium;
use crate::driver::Counts;
use crate::setup::{self, round, verdict, Target, POOL_SPARE_CONNECTIONS};

pub const MEMBERS_MAX: u32 = 1_000_000;
const POOL_MAX: u32 = 16;
const ADMIN_PASSWORD: &str = "bench-console-password";
const TARGET_FIRST_PAINT_MS: f64 = 1_000.0;
/// The dashboard's widest range.
const RANGE_DAYS: u64 = 366;
/// How long one page load may take before it counts as an error.
const PAINT_DEADLINE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, clap::Args)]
pub struct ConsoleBenchArgs {
    /// Scratch database on the default shard's server; dropped and recreated.
    #[arg(long, default_value = "wxcm_bench_console")]
    pub database: String,
    /// Members registered through the ledger.
    #[arg(long, default_value_t = 100_000)]
    pub members: u32,
    /// Page loads of the full-range dashboard measured (the worst is `first_paint_ms`).
    #[arg(long, default_value_t = 5)]
    pub loads: u32,
    /// Report API requests for the full range (4 at a time).
    #[arg(long, default_value_t = 200)]
    pub report_requests: u32,
    /// Keep the bench database afterwards.
    #[arg(long)]
    pub keep: bool,
}

impl ConsoleBenchArgs {
    fn validate(&self, settings: &Settings) -> Result<()> {
        ensure!((1..=MEMBERS_MAX).contains(&self.members), "--members must be 1..={MEMBERS_MAX}");
        ensure!((1..=50).contains(&self.loads), "--loads must be 1..=50");
        ensure!((1..=10_000).contains(&self.report_requests), "--report-requests must be 1..=10000");
        setup::check_database_name(&self.database, settings)
    }
}

/// A deterministic, day-dependent count in `base..base + spread`.
fn wobble(day: u64, salt: u64, base: i64, spread: i64) -> i64 {
    let mixed = (day.wrapping_mul(2_654_435_761) ^ salt.wrapping_mul(40_503)).wrapping_mul(2_246_822_519) >> 7;
    base + i64::try_from(mixed % u64::try_from(spread.max(1)).unwrap_or(1)).unwrap_or(0)
}

/// One year of daily counters for the tenant; the registrations (and card
/// level nets) add up to the members registered for real, so the members KPI
/// equals them.
async fn write_history(pool: &PgPool, tenant: &str, first: NaiveDate, members: u32) -> Result<u64> {
    let mut rows: Vec<(NaiveDate, &str, &str, i64)> = Vec::new();
    let mut registered = 0_i64;
    // Spread over the year; the last day takes the remainder, so the total is exact.
    let per_day = i64::from(members) / i64::try_from(RANGE_DAYS)?;
    for offset in 0..RANGE_DAYS {
        let day = first.checked_add_days(Days::new(offset)).context("a day of the range")?;
        let last = offset + 1 == RANGE_DAYS;
        let daily = |salt, base, spread| wobble(offset, salt, base, spread);
        let registrations = if last { i64::from(members) - registered } else { per_day };
        registered += registrations;
        rows.extend([
            (day, "registrations", "subscribe", registrations * 3 / 4),
            (day, "registrations", "staff", registrations - registrations * 3 / 4),
            (day, "card_level_net", "standard", registrations),
            (day, "follows", "scene_qr", daily(2, 80, 120)),
            (day, "follows", "referral", daily(3, 20, 40)),
            (day, "follows", "other", daily(4, 40, 60)),
            (day, "unfollows", "scene_qr", daily(5, 5, 20)),
            (day, "unfollows", "other", daily(6, 3, 10)),
            (day, "cash_credited_fen", "recharge", daily(7, 500_000, 2_000_000)),
            (day, "cash_credited_fen", "deposit", daily(8, 100_000, 400_000)),
            (day, "cash_debited_fen", "charge", daily(9, 300_000, 1_500_000)),
            (day, "points_granted", "", daily(10, 20_000, 40_000)),
            (day, "points_spent", "", daily(11, 5_000, 20_000)),
            (day, "points_expired", "", daily(12, 0, 3_000)),
            (day, "coupons_issued", "member_claim", daily(13, 50, 300)),
            (day, "coupons_redeemed", "", daily(14, 20, 150)),
            (day, "mall_orders_paid", "", daily(15, 5, 60)),
        ]);
    }
    let mut tx = pool.begin().await?;
    for chunk in rows.chunks(1_000) {
        let mut query = sqlx::QueryBuilder::new("INSERT INTO rm_daily_ops (tenant_id, day, metric, dimension, value) ");
        query.push_values(chunk, |mut row, (day, metric, dimension, value)| {
            row.push_bind(tenant).push_bind(*day).push_bind(*metric).push_bind(*dimension).push_bind(*value);
        });
        query.build().execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(rows.len() as u64)
}

fn percentile(sorted_ms: &[f64], p: f64) -> f64 {
    if sorted_ms.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted_ms.len() as f64).ceil() as usize;
    sorted_ms[rank.clamp(1, sorted_ms.len()) - 1]
}

/// Latencies of the full-range report, 4 requests at a time.
async fn report_latencies(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    requests: u32,
    counts: &mut Counts,
) -> Vec<f64> {
    use futures::StreamExt;
    let results: Vec<Result<f64>> = futures::stream::iter(0..requests)
        .map(|_| async move {
            let started = Instant::now();
            let response = http.get(url).bearer_auth(token).send().await?;
            ensure!(response.status().is_success(), "report: {}", response.status());
            let body: Value = response.json().await?;
            ensure!(body["rows"].as_array().is_some_and(|r| !r.is_empty()), "an empty report");
            Ok(started.elapsed().as_secs_f64() * 1_000.0)
        })
        .buffer_unordered(4)
        .collect()
        .await;
    let mut latencies = Vec::with_capacity(results.len());
    for result in results {
        match result {
            Ok(ms) => latencies.push(ms),
            Err(error) => {
                tracing::warn!(%error, "report request failed");
                counts.errors += 1;
            }
        }
    }
    latencies.sort_by(f64::total_cmp);
    latencies
}

/// One navigation to the full-range dashboard: ms from navigation start to the
/// painted frame, the browser's first contentful paint, and the members it shows.
async fn load_dashboard(browser: &Chromium, url: &str) -> Result<(f64, f64, u64)> {
    browser.client.goto(url).await?;
    let deadline = Instant::now() + PAINT_DEADLINE;
    loop {
        let marks = browser
            .client
            .execute(
                "const m = performance.getEntriesByName('wxcm:dashboard-painted')[0]; \
                 const f = performance.getEntriesByName('first-contentful-paint')[0]; \
                 const error = document.querySelector('[role=alert]')?.textContent; \
                 const members = document.querySelector('.kpi[data-metric=members]')?.dataset.range; \
                 return m ? [m.startTime, f ? f.startTime : 0, m.detail, Number(members)] : (error ? error : null)",
                vec![],
            )
            .await?;
        match marks {
            Value::Array(values) => {
                let days = values.get(2).and_then(Value::as_u64).unwrap_or(0);
                ensure!(days == RANGE_DAYS, "the dashboard showed {days} days, not {RANGE_DAYS}");
                let ms = |i: usize| values.get(i).and_then(Value::as_f64).unwrap_or(0.0);
                return Ok((ms(0), ms(1), values.get(3).and_then(Value::as_u64).unwrap_or(0)));
            }
            Value::String(error) => anyhow::bail!("the dashboard failed: {error}"),
            _ if Instant::now() > deadline => anyhow::bail!("the dashboard was not painted within {PAINT_DEADLINE:?}"),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

pub async fn bench_console(base: &Settings, args: ConsoleBenchArgs) -> Result<()> {
    args.validate(base)?;
    let target = Target::new(base, &args.database)?;
    let outcome = run(base, &target, &args).await;
    target.finish(args.keep).await;
    outcome
}

async fn run(base: &Settings, target: &Target, args: &ConsoleBenchArgs) -> Result<()> {
    target.recreate().await?;
    let mut settings = target.settings(base, POOL_MAX + POOL_SPARE_CONNECTIONS, setup::cache_for(1_000));
    settings.http.listen = "127.0.0.1:0".into();
    let application = setup::build(&settings, Role::Api).await?;
    let app = application.app.clone();
    let tenant = setup::create_tenant(&app).await?;
    wxcm_commands::auth::create_admin(&app, &tenant, "bench-owner", ADMIN_PASSWORD, AdminRole::Owner).await?;
    tracing::info!(members = args.members, "registering members");
    let started = Instant::now();
    crate::workload::register_members(&app, &tenant, "bench-console-member", args.members, 32).await?;
    let register_secs = started.elapsed().as_secs_f64();
    let today = wxcm_projections::daily::merchant_day(chrono::Utc::now());
    let first = today.checked_sub_days(Days::new(RANGE_DAYS - 1)).context("the first day")?;
    let pool = target.admin_pool(2).await?;
    let history_rows = write_history(&pool, tenant.as_str(), first, args.members).await?;
    pool.close().await;
    let running = application.spawn();
    let base_url = format!("http://{}", running.addr.context("the API role listens")?);
    let mut counts = Counts::default();
    let measured = async {
        let http = reqwest::Client::new();
        let login: Value = http
            .post(format!("{base_url}/admin/api/v1/login"))
            .json(&json!({"tenant_id": tenant.as_str(), "username": "bench-owner", "password": ADMIN_PASSWORD}))
            .send()
            .await?
            .json()
            .await?;
        let token = login["token"].as_str().context("admin login")?.to_owned();
        let report_url = format!("{base_url}/admin/api/v1/reports/daily-ops?from={first}&to={today}");
        tracing::info!(requests = args.report_requests, "the report API, full range");
        let latencies = report_latencies(&http, &report_url, &token, args.report_requests, &mut counts).await;
        tracing::info!(loads = args.loads, "the dashboard in headless Chromium, full range");
        let browser = Chromium::start(1440, 900, None).await?;
        let loads = async {
            // The session is the console's own (sessionStorage of this origin).
            browser.client.goto(&format!("{base_url}/healthz")).await?;
            browser
                .client
                .execute("sessionStorage.setItem('wxcm.console.token', arguments[0]); return true", vec![json!(token)])
                .await?;
            let mut paints = Vec::new();
            for _ in 0..args.loads {
                // Another document first, so each load is a full navigation.
                browser.client.goto(&format!("{base_url}/healthz")).await?;
                paints
                    .push(load_dashboard(&browser, &format!("{base_url}/console/#/dashboard/{first}/{today}")).await?);
            }
            anyhow::Ok(paints)
        }
        .await;
        browser.close().await;
        anyhow::Ok((latencies, loads?))
    }
    .await;
    running.stop().await;
    let (latencies, paints) = measured?;
    let worst_paint = paints.iter().map(|p| p.0).fold(0.0, f64::max);
    let worst_fcp = paints.iter().map(|p| p.1).fold(0.0, f64::max);
    let report_p50 = percentile(&latencies, 50.0);
    let report_p99 = percentile(&latencies, 99.0);
    let mut table = Table::new();
    table.set_header(["figure", "value", "target"]);
    table.add_row([format!("members (registered in {register_secs:.1} s)"), args.members.to_string(), String::new()]);
    table.add_row([format!("days of history ({history_rows} read-model rows)"), RANGE_DAYS.to_string(), String::new()]);
    table.add_row([
        format!("dashboard painted, full range, worst of {}", args.loads),
        format!("{worst_paint:.0} ms"),
        format!("< {TARGET_FIRST_PAINT_MS:.0} ms: {}", verdict(worst_paint < TARGET_FIRST_PAINT_MS)),
    ]);
    table.add_row(["first contentful paint, worst".into(), format!("{worst_fcp:.0} ms"), String::new()]);
    table.add_row([
        "report API p50 / p99, full range".into(),
        format!("{report_p50:.1} / {report_p99:.1} ms"),
        String::new(),
    ]);
    let report = json!({
        "members": args.members,
        "days": RANGE_DAYS,
        "history": "read_model_rows",
        "loads": args.loads,
        "first_paint_ms": round(worst_paint, 1),
        "first_paint_runs_ms": paints.iter().map(|p| round(p.0, 1)).collect::<Vec<_>>(),
        "first_contentful_paint_ms": round(worst_fcp, 1),
        "report_api_p50_ms": round(report_p50, 2),
        "report_api_p99_ms": round(report_p99, 2),
        "report_requests": args.report_requests,
        "targets": {"first_paint_ms_max": TARGET_FIRST_PAINT_MS},
    });
    let failed: Vec<String> = paints
        .iter()
        .filter(|p| p.2 != u64::from(args.members))
        .map(|p| format!("the dashboard showed {} members, not {}", p.2, args.members))
        .collect();
    setup::finish("console", &table, report, counts, &failed)
}
