//! What every bench sets up and how it ends: the scratch database (refusing any
//! name that could be real data), the application built on it, the bench
//! tenant, the machine's description, and the final report — a table, then one
//! JSON line carrying `errors` and `skipped`, then a failure (non-zero exit) if
//! either is not zero or a bench-specific check failed.

use std::str::FromStr;
use std::sync::Arc;

use anyhow::{ensure, Context, Result};
use comfy_table::{Cell, CellAlignment, Table};
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};
use wxcm_commands::{App, CommandContext};
use wxcm_domain::{Actor, IdempotencyKey, TenantId};
use wxcm_server::app::{Application, BuildOptions, Role};
use wxcm_server::config::{Settings, ShardConfig, POOL_MAX_LIMIT};
use wxcm_server::sealer::AesGcmSealer;

use crate::driver::Counts;

/// Connections beyond one per client: registrations' lookups, snapshots, slack.
pub const POOL_SPARE_CONNECTIONS: u32 = 4;
/// Clients of one application at most: one connection each, and the spares.
pub const CLIENTS_MAX: u32 = POOL_MAX_LIMIT - POOL_SPARE_CONNECTIONS;
pub const DURATION_SECS_MAX: u64 = 3_600;
pub const MEMBERS_MAX: u32 = 100_000;
const DATABASE_NAME_BYTES_MAX: usize = 63;
pub const TENANT: &str = "bench";
const MAINTENANCE_DATABASE: &str = "postgres";
/// Fixed key: the benches' secrets are test values, but the application needs a sealer.
const BENCH_SEALER_KEY: [u8; 32] = [0x42; 32];

/// The bench drops this database: refuse anything that could be real data.
pub fn check_database_name(name: &str, settings: &Settings) -> Result<()> {
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

/// Where a bench runs: the default shard's server, another database.
pub struct Target {
    pub database: String,
    admin: PgConnectOptions,
    pub app_url: String,
    pub admin_url: String,
}

impl Target {
    /// Checks the name (see [`check_database_name`]) before anything is dropped.
    pub fn new(settings: &Settings, database: &str) -> Result<Self> {
        check_database_name(database, settings)?;
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

    /// A fresh, migrated database (whatever was there is dropped).
    pub async fn recreate(&self) -> Result<()> {
        self.drop_database().await?;
        wxcm_store::migrate::run_migrations(&self.admin_url).await.context("migrating the bench database")
    }

    /// After a run: keep the database (`--keep`) or drop it, warning if that fails.
    pub async fn finish(&self, keep: bool) {
        if keep {
            tracing::info!(database = %self.database, "bench database kept");
        } else if let Err(e) = self.drop_database().await {
            tracing::warn!(error = %format!("{e:#}"), database = %self.database, "could not drop the bench database");
        }
    }

    pub async fn drop_database(&self) -> Result<()> {
        let pool = self.maintenance().await?;
        let statement = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.database);
        sqlx::query(&statement).execute(&pool).await.with_context(|| format!("dropping {}", self.database))?;
        pool.close().await;
        Ok(())
    }

    /// A pool of the administrator on the bench database.
    pub async fn admin_pool(&self, connections: u32) -> Result<PgPool> {
        PgPoolOptions::new()
            .max_connections(connections)
            .connect(&self.admin_url)
            .await
            .context("connecting to the bench database as the administrator")
    }

    /// A settings copy with one shard, `bench`, on the bench database, whose
    /// aggregate cache holds `cache_entries` members; its group commit as the
    /// configured default shard's.
    pub fn settings(&self, base: &Settings, pool_max: u32, cache_entries: usize) -> Settings {
        let mut settings = base.clone();
        let configured = base.shards.get(&base.default_shard).cloned().unwrap_or_else(|| ShardConfig::local(""));
        let shard = ShardConfig {
            url: self.app_url.clone(),
            admin_url: self.admin_url.clone(),
            pool_max,
            aggregate_cache_entries: cache_entries,
            group_commit_workers: configured.group_commit_workers,
        };
        settings.shards.clear();
        settings.shards.insert("bench".into(), shard);
        settings.tenant_shards.clear();
        settings.default_shard = "bench".into();
        settings
    }
}

/// Cache entries for `members` members and a few other aggregates: every
/// member stays cached (at least the production default).
pub fn cache_for(members: u32) -> usize {
    wxcm_store::store::CACHE_ENTRIES_DEFAULT.max(members as usize + 16)
}

/// The application, as `wxcm serve` builds it, in `role`.
pub async fn build(settings: &Settings, role: Role) -> Result<Application> {
    let sealer = AesGcmSealer::from_key(&BENCH_SEALER_KEY).context("bench sealer key")?;
    let options = BuildOptions { sealer: Some(Arc::new(sealer)), ..BuildOptions::default() };
    Ok(Application::build(settings.clone(), role, options).await?)
}

pub async fn close(application: &Application) {
    for shard in application.shards.all() {
        shard.pool.close().await;
    }
}

pub fn key(s: &str) -> Result<IdempotencyKey> {
    IdempotencyKey::parse(s).with_context(|| format!("idempotency key {s}"))
}

pub fn bench_actor() -> Actor {
    Actor::Admin { username: "bench".into() }
}

pub fn context(tenant: &TenantId, idempotency_key: &str) -> Result<CommandContext> {
    Ok(CommandContext::new(tenant.clone(), key(idempotency_key)?, "bench".into()))
}

/// The bench tenant, created on the bench shard.
pub async fn create_tenant(app: &App) -> Result<TenantId> {
    let tenant = TenantId::parse(TENANT)?;
    let ctx = context(&tenant, "bench-tenant-create")?;
    wxcm_commands::tenants::create(app, &tenant, "Bench", bench_actor(), &ctx).await?;
    Ok(tenant)
}

pub async fn server_setting(pool: &PgPool, name: &str) -> String {
    sqlx::query_scalar::<_, String>("SELECT current_setting($1)")
        .bind(name)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

pub fn machine() -> serde_json::Value {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_owned()).unwrap_or_default();
    let os = format!("{} {} {kernel}", std::env::consts::OS, std::env::consts::ARCH).trim_end().to_owned();
    json!({ "cpus": cpus, "os": os })
}

pub fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

/// A right-aligned table cell.
pub fn number(value: String) -> Cell {
    Cell::new(value).set_alignment(CellAlignment::Right)
}

pub fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}

/// Whether a run passed: no error, no skipped operation, no failed check.
/// Targets are figures, not pass conditions: a missed target does not fail.
pub fn outcome(counts: Counts, failed_checks: &[String]) -> Result<()> {
    ensure!(
        counts.is_clean() && failed_checks.is_empty(),
        "the run is not clean: {} errors, {} skipped operations{}{}",
        counts.errors,
        counts.skipped,
        if failed_checks.is_empty() { "" } else { "; failed checks: " },
        failed_checks.join("; ")
    );
    Ok(())
}

/// Ends a bench: prints the table, then the JSON line (with `bench`, `machine`,
/// `errors` and `skipped` added), then fails the run unless it was clean.
pub fn finish(
    bench: &str,
    table: &Table,
    report: serde_json::Value,
    counts: Counts,
    failed_checks: &[String],
) -> Result<()> {
    for check in failed_checks {
        tracing::warn!(bench, check = %check, "check failed");
    }
    println!("{table}");
    println!("{}", report_line(bench, report, counts));
    outcome(counts, failed_checks)
}

/// The bench's figures with the keys every JSON line has.
fn report_line(bench: &str, mut report: serde_json::Value, counts: Counts) -> serde_json::Value {
    if let Some(fields) = report.as_object_mut() {
        fields.insert("bench".into(), json!(bench));
        fields.insert("machine".into(), machine());
        fields.insert("errors".into(), json!(counts.errors));
        fields.insert("skipped".into(), json!(counts.skipped));
    }
    report
}

/// An empty table of driven phases, with the columns [`phase_row`] fills.
pub fn phase_table() -> Table {
    let mut table = Table::new();
    table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED).set_header(vec![
        "figure",
        "value",
        "unit",
        "target",
        "latency p50 / p99 / max ms",
        "ok / errors / skipped",
    ]);
    table
}

/// One driven phase as a table row: rate, target, latencies, ok / errors / skipped.
pub fn phase_row(table: &mut Table, figure: String, p: &crate::driver::Outcome, unit: &str, target: String) {
    table.add_row(vec![
        Cell::new(figure),
        number(format!("{:.1}", p.per_second())),
        Cell::new(unit),
        Cell::new(target),
        number(format!("{:.2} / {:.2} / {:.2}", p.latency_ms(0.5), p.latency_ms(0.99), p.latency_ms(1.0))),
        number(format!("{} / {} / {}", p.ok, p.errors, p.skipped)),
    ]);
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
        assert!(Target::new(&shared, "wxcm_bench").is_err(), "a target checks its name");
    }

    #[test]
    fn any_error_skip_or_failed_check_fails_the_run() {
        assert!(outcome(Counts::default(), &[]).is_ok());
        assert!(outcome(Counts { errors: 1, skipped: 0 }, &[]).is_err());
        assert!(outcome(Counts { errors: 0, skipped: 1 }, &[]).is_err());
        let failed = outcome(Counts::default(), &["members registered 9 != 10 answered".into()]).unwrap_err();
        assert!(format!("{failed}").contains("members registered"), "{failed}");
    }

    #[test]
    fn finish_prints_the_counts_and_fails_an_unclean_run() {
        let line = report_line("test", json!({"x": 1}), Counts { errors: 2, skipped: 3 });
        assert_eq!(
            (&line["bench"], &line["errors"], &line["skipped"], &line["x"]),
            (&json!("test"), &json!(2), &json!(3), &json!(1))
        );
        assert!(line["machine"]["cpus"].as_u64().is_some_and(|n| n >= 1));
        let table = Table::new();
        assert!(finish("test", &table, json!({"x": 1}), Counts::default(), &[]).is_ok());
        assert!(finish("test", &table, json!({"x": 1}), Counts { errors: 2, skipped: 3 }, &[]).is_err());
    }

    #[test]
    fn rounding() {
        assert_eq!(round(0.61449, 3), 0.614);
        assert_eq!(round(2514.96, 1), 2515.0);
    }
}
