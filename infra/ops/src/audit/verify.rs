//! `wxcm audit verify`: every stream of a tenant, with progress and the tenant digest.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use comfy_table::Cell as TableCell;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use wxcm_domain::TenantId;

use wxcm_server::config::Settings;

use super::*;

/// `wxcm audit verify` as one document (`--json` prints it as is).
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub ok: bool,
    pub tenant_id: String,
    pub streams: usize,
    pub events: u64,
    pub violations: Vec<Violation>,
    pub elapsed_ms: u64,
    pub events_per_s: u64,
    /// See [`tenant_digest`].
    pub digest: String,
}

pub(super) fn progress_bar(streams: u64, json: bool) -> ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(streams), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} streams, {msg} [{elapsed_precise}]") {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(PROGRESS_TICK_MS));
    bar
}

pub(super) fn per_second(count: u64, elapsed: Duration) -> u64 {
    let ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX).max(1);
    count.saturating_mul(1000) / ms
}

/// `wxcm audit verify`: every stream of the tenant; true when nothing is wrong.
pub async fn audit_verify(settings: &Settings, tenant: &TenantId, json: bool) -> Result<bool> {
    let started = Instant::now();
    let pool = shard_pool(settings, tenant)?;
    let streams: Vec<(String, String, i64)> = sqlx::query_as(TENANT_STREAMS_SQL)
        .bind(tenant.as_str())
        .fetch_all(&pool)
        .await
        .with_context(|| format!("listing the streams of tenant {tenant}"))?;
    let bar = progress_bar(streams.len() as u64, json);
    let mut events: u64 = 0;
    let mut violations = Vec::new();
    let mut heads = Vec::with_capacity(streams.len());
    for (aggregate_type, aggregate_id, _) in &streams {
        let rows = load(&pool, aggregate_type, aggregate_id).await?;
        events += rows.len() as u64;
        violations.extend(check_stream(&rows));
        heads.extend(StreamHead::of(&rows));
        bar.inc(1);
        bar.set_message(format!("{events} events, {} events/s", per_second(events, started.elapsed())));
    }
    bar.finish_and_clear();
    pool.close().await;
    let elapsed = started.elapsed();
    let report = VerifyReport {
        ok: violations.is_empty(),
        tenant_id: tenant.to_string(),
        streams: streams.len(),
        events,
        violations,
        elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        events_per_s: per_second(events, elapsed),
        digest: tenant_digest(&heads),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_verify_report(&report);
    }
    Ok(report.ok)
}

pub(super) fn print_verify_report(report: &VerifyReport) {
    let mut table = new_table(vec!["tenant", &report.tenant_id]);
    let rows: [(&str, String); 6] = [
        ("streams", report.streams.to_string()),
        ("events", report.events.to_string()),
        ("violations", report.violations.len().to_string()),
        ("elapsed", format!("{} ms", report.elapsed_ms)),
        ("events/s", report.events_per_s.to_string()),
        ("digest (sha256)", report.digest.clone()),
    ];
    for (name, value) in rows {
        table.add_row(vec![TableCell::new(name), TableCell::new(value)]);
    }
    println!("{table}");
    print_violations(&report.violations);
    if report.ok {
        println!(
            "verdict: OK ({} streams, {} events, every chain intact and every ledger adds up)",
            report.streams, report.events
        );
    } else {
        println!("verdict: FAILED ({} violations)", report.violations.len());
    }
}
