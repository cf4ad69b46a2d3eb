//! `wxcm projections status` and `wxcm projections rebuild`: the operator's
//! view of the projectors and the CLI side of
//! [`wxcm_projections::rebuild`].

use std::io::IsTerminal;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use comfy_table::{presets, Table};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, PgConnection, PgPool};
use wxcm_commands::health::{HealthBoard, PartReport};
use wxcm_commands::ports::{ShardRouter, SystemClock};
use wxcm_domain::TenantId;
use wxcm_projections::rebuild::{self, RebuildReport, RebuildScope};
use wxcm_projections::{
    CampaignProjector, CouponProjector, MallProjector, MemberProjector, Projector, ProjectorRuntime, ProjectorSettings,
};

use crate::config::Settings;
use crate::shards::Shards;

/// Parked events listed per projector and shard (the count covers all).
pub const PARKED_LISTED_MAX: i64 = 50;
/// How long `status` waits for NATS before showing the database side only.
pub const NATS_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Read models `rebuild` knows.
pub const REBUILDABLE: &[&str] = &["members", "coupons", "mall", "campaigns", "votes", "distribution"];
const PROGRESS_TICK_MS: u64 = 200;

#[derive(sqlx::FromRow)]
struct ParkedRow {
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
    attempts: i32,
    parked_at: Option<DateTime<Utc>>,
    error: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ParkedEvent {
    pub stream: String,
    pub sequence: i64,
    pub attempts: i32,
    pub parked_at: Option<DateTime<Utc>>,
    pub error: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProjectorLine {
    pub shard: String,
    pub projector: String,
    pub consumer: String,
    /// `None` when JetStream could not be asked (see `consumer_error`).
    pub num_pending: Option<u64>,
    pub num_ack_pending: Option<usize>,
    pub consumer_error: Option<String>,
    /// Set when the shard's database could not be read (the figures are then empty).
    pub database_error: Option<String>,
    pub last_recorded_at: Option<DateTime<Utc>>,
    pub lag_s: Option<f64>,
    pub parked: i64,
    pub parked_events: Vec<ParkedEvent>,
}

async fn database_side(pool: &PgPool, projector: &str) -> Result<(Option<DateTime<Utc>>, i64, Vec<ParkedEvent>)> {
    let (last, parked): (Option<DateTime<Utc>>, i64) = sqlx::query_as(
        "SELECT (SELECT max(recorded_at) FROM projection_checkpoints WHERE projector = $1),
                (SELECT count(*) FROM projection_dead_letters WHERE projector = $1 AND parked_at IS NOT NULL)",
    )
    .bind(projector)
    .fetch_one(pool)
    .await?;
    let rows: Vec<ParkedRow> = sqlx::query_as(
        "SELECT aggregate_type, aggregate_id, sequence, attempts, parked_at, error FROM projection_dead_letters
          WHERE projector = $1 AND parked_at IS NOT NULL ORDER BY aggregate_type, aggregate_id, sequence LIMIT $2",
    )
    .bind(projector)
    .bind(PARKED_LISTED_MAX)
    .fetch_all(pool)
    .await?;
    let events = rows
        .into_iter()
        .map(|r| ParkedEvent {
            stream: format!("{}/{}", r.aggregate_type, r.aggregate_id),
            sequence: r.sequence,
            attempts: r.attempts,
            parked_at: r.parked_at,
            error: r.error,
        })
        .collect();
    Ok((last, parked, events))
}

/// Connects to NATS for a status reading, bounded by [`NATS_CONNECT_TIMEOUT`].
async fn connect_nats(settings: &Settings, name: &str) -> Result<async_nats::Client, String> {
    crate::nats::connect_bounded(&settings.nats, name, NATS_CONNECT_TIMEOUT).await.map_err(|e| e.to_string())
}

/// Lag and dead letters of every projector on every shard (`wxcm projections
/// status`: its own pools and NATS connection, for the life of the command).
pub async fn status(settings: &Settings) -> Result<Vec<ProjectorLine>> {
    // Reads projector state only: no shake is decided, no seed opened.
    let sealer = Arc::new(crate::sealer::MissingKeySealer::new(&settings.secret_key_env));
    let shards = Arc::new(Shards::build(settings, Arc::new(SystemClock), sealer).context("shard map")?);
    let js = connect_nats(settings, "wxcm-status").await.map(async_nats::jetstream::new);
    Ok(status_of(settings, &shards, js.as_ref()).await)
}

/// [`status`] over a node's own shard pools and NATS connection.
pub async fn status_of(
    settings: &Settings,
    shards: &Arc<Shards>,
    js: Result<&async_nats::jetstream::Context, &String>,
) -> Vec<ProjectorLine> {
    let mut lines = Vec::new();
    for shard in shards.all() {
        lines.push(projector_line(MemberProjector, settings, shards, shard, js).await);
        lines.push(projector_line(CouponProjector, settings, shards, shard, js).await);
        lines.push(projector_line(MallProjector, settings, shards, shard, js).await);
        lines.push(projector_line(CampaignProjector, settings, shards, shard, js).await);
        lines.push(projector_line(wxcm_projections::VoteProjector, settings, shards, shard, js).await);
        lines.push(projector_line(wxcm_projections::CommissionProjector, settings, shards, shard, js).await);
        lines.push(projector_line(wxcm_projections::DistributorProjector, settings, shards, shard, js).await);
    }
    lines
}

/// One projector's line on one shard: its database side and its consumer.
async fn projector_line<P: Projector>(
    projector: P,
    settings: &Settings,
    shards: &Arc<Shards>,
    shard: &crate::shards::Shard,
    js: Result<&async_nats::jetstream::Context, &String>,
) -> ProjectorLine {
    let prefix = &settings.nats.stream_prefix;
    let filter = crate::relay::event_subject(prefix, "*", projector.aggregate_type());
    let runtime_settings = ProjectorSettings::new(crate::relay::stream_name(prefix), filter);
    let name = projector.name();
    // One unreachable shard must not hide the others: its line carries the error.
    let (database_error, (last, parked, parked_events)) = match database_side(&shard.pool, name).await {
        Ok(side) => (None, side),
        Err(e) => (Some(format!("{e:#}")), (None, 0, Vec::new())),
    };
    let mut line = ProjectorLine {
        database_error,
        shard: shard.name.clone(),
        projector: name.to_owned(),
        consumer: String::new(),
        num_pending: None,
        num_ack_pending: None,
        consumer_error: None,
        last_recorded_at: last,
        lag_s: last.map(|t| (Utc::now() - t).num_milliseconds() as f64 / 1000.0),
        parked,
        parked_events,
    };
    match js {
        Ok(js) => {
            let router = shards.clone() as Arc<dyn ShardRouter>;
            let mut runtime = ProjectorRuntime::new(
                projector,
                shard.name.clone(),
                shard.pool.clone(),
                router,
                js.clone(),
                runtime_settings,
            );
            line.consumer = runtime.consumer_name();
            match runtime.status().await {
                Ok(s) => {
                    line.num_pending = Some(s.num_pending);
                    line.num_ack_pending = Some(s.num_ack_pending);
                }
                Err(e) => line.consumer_error = Some(wxcm_projections::runtime::error_chain(&e)),
            }
        }
        Err(e) => line.consumer_error = Some(format!("nats: {e}")),
    }
    line
}

/// A Prometheus label value: backslash, quote and line feed escaped.
fn label_value(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// A gauge: name, help and its value on one line (none: no sample).
type Gauge = (&'static str, &'static str, fn(&ProjectorLine) -> Option<f64>);

/// Projector lag as Prometheus text (exposition format 0.0.4), gauges only. The
/// labels are the projector and the shard, both from the configuration, so the
/// label sets are bounded. A figure that could not be read is left out (no
/// sample) rather than reported as 0.
pub fn prometheus_text(lines: &[ProjectorLine]) -> String {
    let gauges: [Gauge; 3] = [
        ("wxcm_projector_lag_events", "Events published but not yet applied by the projector.", |l| {
            let pending = l.num_pending? as f64;
            Some(pending + l.num_ack_pending.unwrap_or(0) as f64)
        }),
        ("wxcm_projector_lag_seconds", "Seconds since the newest event the projector applied was recorded.", |l| {
            l.lag_s
        }),
        ("wxcm_projector_parked_events", "Events parked as dead letters, waiting for an operator.", |l| {
            l.database_error.is_none().then_some(l.parked as f64)
        }),
    ];
    let mut text = String::new();
    for (name, help, value) in gauges {
        text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        for line in lines {
            if let Some(v) = value(line) {
                text.push_str(&format!(
                    "{name}{{projector=\"{}\",shard=\"{}\"}} {v}\n",
                    label_value(&line.projector),
                    label_value(&line.shard)
                ));
            }
        }
    }
    text
}

/// Each role part of this node (the parts `/readyz` lists): ready or not,
/// and whether it leads. Parts are configured roles × shards × projectors,
/// so the label sets are bounded.
pub fn roles_text(parts: &[PartReport]) -> String {
    let mut text = String::new();
    let ready = "wxcm_role_ready";
    text.push_str(&format!(
        "# HELP {ready} 1 when the role part is ready (see /readyz for why not).\n# TYPE {ready} gauge\n"
    ));
    let labels = |p: &PartReport| {
        format!(
            "role=\"{}\",shard=\"{}\",part=\"{}\"",
            label_value(p.key.role),
            label_value(&p.key.shard),
            label_value(&p.key.name)
        )
    };
    for p in parts {
        text.push_str(&format!("{ready}{{{}}} {}\n", labels(p), u8::from(p.ready)));
    }
    let leader = "wxcm_role_leader";
    text.push_str(&format!(
        "# HELP {leader} 1 when this node leads the role on the shard, 0 when it stands by.\n# TYPE {leader} gauge\n"
    ));
    for p in parts {
        if let Some(leads) = p.leader {
            text.push_str(&format!("{leader}{{{}}} {}\n", labels(p), u8::from(leads)));
        }
    }
    text
}

/// Projector stalls this process detected and recovered from (a pull that
/// never ended, messages waiting but none arriving), per consumer, as a
/// Prometheus counter. Consumers are named after configured projectors and
/// shards, so the label set is bounded.
pub fn stalls_text(stalls: &[(String, u64)]) -> String {
    let name = "wxcm_projector_stalls_total";
    let mut text = format!(
        "# HELP {name} Projector stalls detected and recovered from by re-creating the pull.\n# TYPE {name} counter\n"
    );
    for (consumer, count) in stalls {
        text.push_str(&format!("{name}{{consumer=\"{}\"}} {count}\n", label_value(consumer)));
    }
    text
}

/// What a scrape reads: the node's shard pools and one NATS connection, made
/// at the first scrape that needs it (when the node has none of its own) and
/// kept, so scrapes neither open connections nor flood the log.
struct MetricsSource {
    settings: Settings,
    shards: Arc<Shards>,
    nats: tokio::sync::OnceCell<async_nats::Client>,
    health: HealthBoard,
}

impl MetricsSource {
    async fn jetstream(&self) -> Result<async_nats::jetstream::Context, String> {
        let client = self.nats.get_or_try_init(|| connect_nats(&self.settings, "wxcm-metrics")).await?;
        Ok(async_nats::jetstream::ContextBuilder::new().timeout(crate::relay::JETSTREAM_TIMEOUT).build(client.clone()))
    }
}

/// `GET /metrics` (no auth, outside the API's middleware): [`prometheus_text`] of
/// [`status_of`] over the node's pools and NATS connection (`nats`: the node's
/// own client, if it has one), and the stall counter. A part that cannot be read
/// is left out of the figures (no sample), never reported as 0.
pub fn metrics_router(
    settings: Settings,
    shards: Arc<Shards>,
    nats: Option<async_nats::Client>,
    health: HealthBoard,
) -> axum::Router {
    let nats = match nats {
        Some(client) => tokio::sync::OnceCell::new_with(Some(client)),
        None => tokio::sync::OnceCell::new(),
    };
    let source = Arc::new(MetricsSource { settings, shards, nats, health });
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let source = source.clone();
            async move { metrics(&source).await }
        }),
    )
}

async fn metrics(source: &MetricsSource) -> axum::response::Response {
    use axum::response::IntoResponse;
    let js = source.jetstream().await;
    if let Err(e) = &js {
        tracing::debug!(error = %e, "metrics: no NATS connection");
    }
    let lines = status_of(&source.settings, &source.shards, js.as_ref()).await;
    let mut text = prometheus_text(&lines);
    text.push_str(&stalls_text(&wxcm_projections::stalls_detected()));
    text.push_str(&roles_text(&source.health.reports()));
    let content_type = (axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8");
    ([content_type], text).into_response()
}

fn dash<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// `wxcm projections status`.
pub async fn print_status(settings: &Settings, json: bool) -> Result<()> {
    let lines = status(settings).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&lines)?);
        return Ok(());
    }
    let mut table = Table::new();
    table.load_preset(presets::UTF8_FULL_CONDENSED).set_header(vec![
        "SHARD",
        "PROJECTOR",
        "PENDING",
        "UNACKED",
        "NEWEST APPLIED (UTC)",
        "LAG S",
        "PARKED",
    ]);
    for l in &lines {
        table.add_row(vec![
            l.shard.clone(),
            l.projector.clone(),
            dash(l.num_pending),
            dash(l.num_ack_pending),
            dash(l.last_recorded_at.map(|t| t.format("%Y-%m-%d %H:%M:%S"))),
            dash(l.lag_s.map(|s| format!("{s:.1}"))),
            l.parked.to_string(),
        ]);
    }
    println!("{table}");
    for l in &lines {
        if let Some(e) = &l.database_error {
            println!("{}/{}: database unreadable: {e}", l.shard, l.projector);
        }
        if let Some(e) = &l.consumer_error {
            println!("{}/{}: consumer unknown: {e}", l.shard, l.projector);
        }
        if l.parked_events.is_empty() {
            continue;
        }
        let mut parked = Table::new();
        parked.load_preset(presets::UTF8_FULL_CONDENSED).set_header(vec!["STREAM", "SEQ", "ATTEMPTS", "ERROR"]);
        for p in &l.parked_events {
            parked.add_row(vec![p.stream.clone(), p.sequence.to_string(), p.attempts.to_string(), p.error.clone()]);
        }
        println!("parked on {}/{} ({} in all):\n{parked}", l.shard, l.projector, l.parked);
    }
    Ok(())
}

async fn admin_connection(url: &str) -> Result<PgConnection> {
    let options = PgConnectOptions::from_str(url)?.application_name("wxcm-rebuild");
    Ok(options.connect().await?)
}

fn progress_bar(total: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {pos}/{len} events, {per_sec} [{elapsed_precise} / eta {eta}]")
    {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(PROGRESS_TICK_MS));
    bar
}

/// Rebuilds read model `name` on every shard, or only `tenant`'s rows on its
/// shard. Uses the shards' `admin_url` (the rebuild creates and renames tables).
pub async fn rebuild(
    settings: &Settings,
    name: &str,
    tenant: Option<&TenantId>,
) -> Result<Vec<(String, RebuildReport)>> {
    if !REBUILDABLE.contains(&name) {
        bail!("unknown read model {name:?}: one of {}", REBUILDABLE.join(", "));
    }
    let targets: Vec<(String, RebuildScope)> = match tenant {
        Some(t) => vec![(settings.shard_of(t.as_str()).to_owned(), RebuildScope::Tenant(t.to_string()))],
        None => settings.shards.keys().map(|s| (s.clone(), RebuildScope::Shard)).collect(),
    };
    let mut reports = Vec::new();
    for (shard, scope) in targets {
        let config = settings.shards.get(&shard).with_context(|| format!("shard {shard} is not configured"))?;
        let mut writer = admin_connection(&config.admin_url).await.with_context(|| format!("shard {shard}"))?;
        let reader = admin_connection(&config.admin_url).await.with_context(|| format!("shard {shard}"))?;
        if name == "coupons" {
            let started = Instant::now();
            let report = wxcm_projections::rebuild_coupons::rebuild_coupons(&mut writer, reader, &scope)
                .await
                .with_context(|| format!("rebuilding {name} on shard {shard}"))?;
            println!(
                "shard {shard}: rebuilt {name}: {} events, {} coupons, {:.2} s",
                report.events,
                report.coupons,
                started.elapsed().as_secs_f64()
            );
            continue;
        }
        if name == "campaigns" {
            let started = Instant::now();
            let report = wxcm_projections::rebuild_campaigns::rebuild_campaigns(&mut writer, reader, &scope)
                .await
                .with_context(|| format!("rebuilding {name} on shard {shard}"))?;
            println!(
                "shard {shard}: rebuilt {name}: {} events, {} campaigns, {:.2} s",
                report.events,
                report.campaigns,
                started.elapsed().as_secs_f64()
            );
            continue;
        }
        if name == "distribution" {
            let started = Instant::now();
            let second_reader = admin_connection(&config.admin_url).await.with_context(|| format!("shard {shard}"))?;
            let report = wxcm_projections::rebuild_distribution::rebuild_distribution(
                &mut writer,
                reader,
                second_reader,
                &scope,
            )
            .await
            .with_context(|| format!("rebuilding {name} on shard {shard}"))?;
            println!(
                "shard {shard}: rebuilt {name}: {} commission events of {} accounts, {} distributor events of {} \
                 distributors, {:.2} s",
                report.commission_events,
                report.accounts,
                report.distributor_events,
                report.distributors,
                started.elapsed().as_secs_f64()
            );
            continue;
        }
        if name == "votes" {
            let started = Instant::now();
            let report = wxcm_projections::votes::rebuild_votes(&mut writer, reader, &scope)
                .await
                .with_context(|| format!("rebuilding {name} on shard {shard}"))?;
            println!(
                "shard {shard}: rebuilt {name}: {} events, {} campaigns, {:.2} s",
                report.events,
                report.streams,
                started.elapsed().as_secs_f64()
            );
            continue;
        }
        if name == "mall" {
            let started = Instant::now();
            let report = wxcm_projections::rebuild_mall::rebuild_mall(&mut writer, reader, &scope)
                .await
                .with_context(|| format!("rebuilding {name} on shard {shard}"))?;
            println!(
                "shard {shard}: rebuilt {name}: {} events, {} orders, {:.2} s",
                report.events,
                report.orders,
                started.elapsed().as_secs_f64()
            );
            continue;
        }
        let total = rebuild::count_events(&mut writer, &scope).await?;
        let bar = progress_bar(total);
        let started = Instant::now();
        let report = rebuild::rebuild_members(&mut writer, reader, &scope, |n| bar.set_position(n))
            .await
            .with_context(|| format!("rebuilding {name} on shard {shard}"))?;
        bar.finish_and_clear();
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "shard {shard}: rebuilt {name}: {} events, {} members, {} ledger lines, {} streams caught up, {seconds:.2} s, {} events/s",
            report.events, report.members, report.ledger_lines, report.caught_up_streams, report.events_per_s
        );
        reports.push((shard, report));
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(shard: &str, num_pending: Option<u64>, lag_s: Option<f64>) -> ProjectorLine {
        ProjectorLine {
            shard: shard.into(),
            projector: "members".into(),
            consumer: format!("members_{shard}"),
            num_pending,
            num_ack_pending: Some(2),
            consumer_error: None,
            database_error: None,
            last_recorded_at: None,
            lag_s,
            parked: 1,
            parked_events: Vec::new(),
        }
    }

    #[test]
    fn lag_is_exported_as_gauges_per_projector_and_shard() {
        let text = prometheus_text(&[line("s0", Some(5), Some(1.5)), line("s\"1", None, None)]);
        assert!(text.contains("# TYPE wxcm_projector_lag_events gauge\n"), "{text}");
        assert!(text.contains("wxcm_projector_lag_events{projector=\"members\",shard=\"s0\"} 7\n"), "{text}");
        assert!(text.contains("wxcm_projector_lag_seconds{projector=\"members\",shard=\"s0\"} 1.5\n"), "{text}");
        assert!(text.contains("wxcm_projector_parked_events{projector=\"members\",shard=\"s\\\"1\"} 1\n"), "{text}");
        // Unknown figures have no sample.
        assert!(!text.contains("wxcm_projector_lag_events{projector=\"members\",shard=\"s\\\"1\"}"), "{text}");
    }

    #[test]
    fn stalls_are_a_counter_per_consumer_with_escaped_labels() {
        let text = stalls_text(&[("members_s0".into(), 2), ("members_\"x".into(), 1)]);
        assert!(text.contains("# TYPE wxcm_projector_stalls_total counter\n"), "{text}");
        assert!(text.contains("wxcm_projector_stalls_total{consumer=\"members_s0\"} 2\n"), "{text}");
        assert!(text.contains("wxcm_projector_stalls_total{consumer=\"members_\\\"x\"} 1\n"), "{text}");
        // No stall yet: the family is declared, with no sample.
        assert_eq!(stalls_text(&[]).lines().count(), 2);
    }
}
