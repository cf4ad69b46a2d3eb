//! The fault matrix: two `wxcm serve` nodes over two shards (each on its own
//! PostgreSQL server) and a NATS JetStream cluster, under deposits and
//! charges retried by idempotency key, while faults are injected in turn: a
//! node killed with SIGKILL, a PostgreSQL server restarted, one NATS server
//! restarted, every NATS server restarted, a projector's consumer deleted
//! (and, in the bench, a burst of writes).
//!
//! After each fault it measures the first success of an operation started
//! after the fault, and how long every shard's member projector takes to be
//! back under one second of lag; while every NATS server is down it asks a
//! node's `/readyz` whether it says so. At the end it checks every
//! acknowledged write against the event store (none lost, none doubled),
//! runs `audit verify` and `audit reconcile`, and counts deadlocks.
//!
//! Used by the black-box test (`tests/tests/fault_matrix.rs`, short) and by
//! `wxcm bench faults` (a longer soak). Dev-only.

pub mod load;
pub mod procs;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection, Row};
use wxcm_server::config::{Settings, ShardConfig};

use load::{Load, Tally, Target};
use procs::{NatsCluster, PgServer, WxcmNode};

/// The read model's lag a shard must be back under after a fault.
pub const LAG_OK_S: f64 = 1.0;
/// Development-only key for the nodes' secrets at rest (the Makefile's).
const DEV_SECRET_KEY: &str = "ZGV2LW9ubHkta2V5LWRvLW5vdC11c2UtaW4tcHJvZCE=";
const OWNER_PASSWORD: &str = "fault-owner-password";
const DATABASE: &str = "wxcm_faults";
const SHARDS: [(&str, &str); 2] = [("main", "fa"), ("east", "fb")];

#[derive(Debug, Clone)]
pub struct MatrixOptions {
    /// The `wxcm` binary the nodes run.
    pub wxcm_bin: PathBuf,
    /// Where node logs and the settings file go.
    pub work_dir: PathBuf,
    pub clients: usize,
    /// Writes per second the clients offer together outside a burst (0: as
    /// fast as they go).
    pub rate_per_s: u64,
    pub members_per_tenant: usize,
    /// Steady load before each fault.
    pub steady: Duration,
    /// How long a killed node or a stopped NATS stays down.
    pub outage: Duration,
    /// Times the whole list of faults is run.
    pub rounds: usize,
    /// A burst phase: writes per second and how long (bench only).
    pub burst: Option<(u64, Duration)>,
    /// Longest wait for a projector to catch up (past it the run records the
    /// figure and goes on; the caller judges it).
    pub catch_up_wait: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct FaultOutcome {
    pub fault: String,
    /// First success of an operation started after the fault began.
    pub recovery_s: Option<f64>,
    /// From the end of the fault (for a NATS cluster restart: from JetStream
    /// answering again, see `jetstream_back_s`) until every shard's lag was under 1 s.
    pub catch_up_s: Option<f64>,
    /// A NATS cluster restart: seconds from the servers' start until JetStream
    /// answered for the stream and the member consumers again (the cluster's own
    /// leader elections; nothing wxcm can shorten).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jetstream_back_s: Option<f64>,
    /// What `/readyz` answered while the fault lasted (checked for a NATS outage).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readyz_while_stuck: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MatrixReport {
    pub acked: usize,
    pub refused: usize,
    pub lost_acked: usize,
    pub doubled: usize,
    /// Refused operations whose event exists anyway.
    pub refused_written: usize,
    pub errors_5xx_internal: u64,
    pub unavailable_503: u64,
    pub transport_errors: u64,
    pub unexpected_answers: u64,
    pub given_up: u64,
    pub max_recovery_s: f64,
    pub max_projector_catch_up_s: f64,
    pub projection_deadlocks: i64,
    pub reconcile_differences: usize,
    pub verify_failures: usize,
    /// False if `/readyz` kept answering 200 while every NATS server was down.
    pub readyz_reported_nats_outage: bool,
    /// Replicas of the events stream after a relay configured for one
    /// ensured it (an operator's higher count must be kept).
    pub stream_replicas_after_lower_config: usize,
    /// `/metrics` lists each role's readiness and leadership.
    pub metrics_show_roles: bool,
    pub faults: Vec<FaultOutcome>,
    pub duration_s: f64,
}

impl MatrixReport {
    /// Everything that makes a run failed (empty: passed).
    pub fn failures(&self, catch_up_max_s: f64, recovery_max_s: f64) -> Vec<String> {
        let mut failures = Vec::new();
        let mut check = |bad: bool, what: String| {
            if bad {
                failures.push(what);
            }
        };
        check(self.acked == 0, "no write was acknowledged".into());
        check(self.lost_acked > 0, format!("{} acknowledged writes lost", self.lost_acked));
        check(self.doubled > 0, format!("{} writes doubled", self.doubled));
        check(self.refused_written > 0, format!("{} refused writes stored", self.refused_written));
        check(self.errors_5xx_internal > 0, format!("{} answers were 500", self.errors_5xx_internal));
        check(self.given_up > 0, format!("{} operations gave up", self.given_up));
        check(self.unexpected_answers > 0, format!("{} unexpected answers", self.unexpected_answers));
        check(self.projection_deadlocks > 0, format!("{} deadlocks", self.projection_deadlocks));
        check(self.reconcile_differences > 0, format!("{} reconcile differences", self.reconcile_differences));
        check(self.verify_failures > 0, format!("{} audit verify failures", self.verify_failures));
        check(!self.readyz_reported_nats_outage, "/readyz said ready while NATS was down".into());
        check(
            self.stream_replicas_after_lower_config != 3,
            format!("the stream went to {} replicas", self.stream_replicas_after_lower_config),
        );
        check(!self.metrics_show_roles, "/metrics does not show the roles".into());
        for f in &self.faults {
            match f.catch_up_s {
                Some(s) if s <= catch_up_max_s => {}
                other => failures.push(format!("{}: projector catch-up {other:?} s > {catch_up_max_s} s", f.fault)),
            }
            match f.recovery_s {
                Some(s) if s <= recovery_max_s => {}
                other => failures.push(format!("{}: first success after {other:?} s > {recovery_max_s} s", f.fault)),
            }
        }
        failures
    }
}

/// The running system of a fault run.
struct Cluster {
    pg: Vec<PgServer>,
    nats: NatsCluster,
    nodes: Vec<WxcmNode>,
    settings: Settings,
    settings_path: PathBuf,
    options: MatrixOptions,
}

pub async fn run(options: MatrixOptions) -> Result<MatrixReport> {
    let began = Instant::now();
    std::fs::create_dir_all(&options.work_dir)?;
    let mut cluster = Cluster::start(options.clone()).await?;
    let targets = cluster.prepare_tenants().await?;
    cluster.wait_caught_up(Duration::from_secs(60)).await?.context("projectors never caught up at start")?;
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let load = Load::start(cluster.node_urls(), targets, options.clients, &run_id)?;
    load.set_rate(options.rate_per_s);
    let mut faults = Vec::new();
    let mut readyz_reported_nats_outage = true;
    for round in 0..options.rounds {
        tokio::time::sleep(options.steady).await;
        faults.push(cluster.kill_node(round % 2, &load.tally).await?);
        tokio::time::sleep(options.steady).await;
        faults.push(cluster.restart_postgres(round % 2, &load.tally).await?);
        tokio::time::sleep(options.steady).await;
        faults.push(cluster.restart_one_nats(round % cluster.nats.len(), &load.tally).await?);
        tokio::time::sleep(options.steady).await;
        let all_nats = cluster.restart_all_nats(&load.tally).await?;
        readyz_reported_nats_outage &= all_nats.readyz_while_stuck.as_deref().is_some_and(|r| r.starts_with("503"));
        faults.push(all_nats);
        tokio::time::sleep(options.steady).await;
        faults.push(cluster.delete_consumer(round % 2, &load.tally).await?);
        if let Some((rate, length)) = options.burst {
            tokio::time::sleep(options.steady).await;
            faults.push(cluster.burst(&load, rate, length).await?);
        }
    }
    tokio::time::sleep(options.steady).await;
    let tally = load.finish().await;
    cluster.wait_caught_up(options.catch_up_wait).await?;
    let mut report = cluster.check(&tally).await?;
    report.faults = faults;
    report.readyz_reported_nats_outage = readyz_reported_nats_outage;
    report.max_recovery_s = report.faults.iter().filter_map(|f| f.recovery_s).fold(0.0, f64::max);
    report.max_projector_catch_up_s = report.faults.iter().filter_map(|f| f.catch_up_s).fold(0.0, f64::max);
    report.duration_s = began.elapsed().as_secs_f64();
    Ok(report)
}

impl Cluster {
    async fn start(options: MatrixOptions) -> Result<Self> {
        let (pg_main, pg_east) = tokio::try_join!(PgServer::start(), PgServer::start())?;
        let pg = vec![pg_main, pg_east];
        let nats = NatsCluster::start(3).await?;
        let mut settings = Settings::default();
        settings.shards.clear();
        for ((shard, tenant), server) in SHARDS.iter().zip(&pg) {
            let config = ShardConfig {
                url: server.app_url(DATABASE),
                admin_url: server.admin_url(DATABASE),
                ..ShardConfig::local(DATABASE)
            };
            settings.shards.insert((*shard).to_owned(), config);
            settings.tenant_shards.insert((*tenant).to_owned(), (*shard).to_owned());
        }
        settings.default_shard = SHARDS[0].0.to_owned();
        settings.nats.url = nats.urls();
        settings.nats.stream_replicas = 3;
        settings.nats.stream_prefix = format!("faults{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        settings.scheduler.interval_ms = 500;
        let settings_path = options.work_dir.join("settings.json");
        std::fs::write(&settings_path, serde_json::to_vec_pretty(&settings)?)?;
        let cli = |args: &[&str]| -> Result<()> {
            let output = run_wxcm(&options.wxcm_bin, &settings_path, args)?;
            if !output.status.success() {
                bail!("wxcm {args:?}: {}", String::from_utf8_lossy(&output.stderr));
            }
            Ok(())
        };
        cli(&["migrate"])?;
        for (_, tenant) in SHARDS {
            cli(&["tenant", "create", "--id", tenant, "--name", tenant])?;
            cli(&["admin", "create", "--tenant", tenant, "--username", "owner", "--role", "owner"])?;
        }
        let mut nodes = Vec::new();
        for i in 0..2 {
            let log = options.work_dir.join(format!("node{i}.log"));
            nodes.push(WxcmNode::start_with_env(&options.wxcm_bin, &settings_path, log, DEV_SECRET_KEY).await?);
        }
        let cluster = Self { pg, nats, nodes, settings, settings_path, options };
        for node in &cluster.nodes {
            cluster.wait_ready(node, Duration::from_secs(60)).await?;
        }
        Ok(cluster)
    }

    fn node_urls(&self) -> Vec<String> {
        self.nodes.iter().map(WxcmNode::base_url).collect()
    }

    async fn readyz(&self, node: &WxcmNode) -> String {
        let http = reqwest::Client::new();
        match http.get(format!("{}/readyz", node.base_url())).timeout(Duration::from_secs(5)).send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                let body: Value = r.json().await.unwrap_or(Value::Null);
                format!("{status} {}", body["reason"].as_str().unwrap_or(""))
            }
            Err(e) => format!("no answer: {e}"),
        }
    }

    async fn wait_ready(&self, node: &WxcmNode, deadline: Duration) -> Result<()> {
        let until = Instant::now() + deadline;
        loop {
            let answer = self.readyz(node).await;
            if answer.starts_with("200") {
                return Ok(());
            }
            if Instant::now() > until {
                bail!("node on port {} not ready within {deadline:?}: {answer}", node.port);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn prepare_tenants(&self) -> Result<Vec<Target>> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
        let base = self.nodes[0].base_url();
        let mut targets = Vec::new();
        for (_, tenant) in SHARDS {
            let login: Value = http
                .post(format!("{base}/admin/api/v1/login"))
                .json(&json!({"tenant_id": tenant, "username": "owner", "password": OWNER_PASSWORD}))
                .send()
                .await?
                .json()
                .await?;
            let token = login["token"].as_str().context("owner login")?.to_owned();
            let mut members = Vec::new();
            for i in 0..self.options.members_per_tenant {
                let member: Value = http
                    .post(format!("{base}/admin/api/v1/members"))
                    .bearer_auth(&token)
                    .header("Idempotency-Key", format!("fault-register-{tenant}-{i}"))
                    .json(&json!({}))
                    .send()
                    .await?
                    .json()
                    .await?;
                members.push(member["member_id"].as_str().context("registered member id")?.to_owned());
            }
            targets.push(Target { tenant: tenant.to_owned(), token, members });
        }
        Ok(targets)
    }

    async fn admin_connection(&self, shard: usize) -> Result<PgConnection> {
        Ok(PgConnection::connect(&self.pg[shard].admin_url(DATABASE)).await?)
    }

    /// The member projector's lag on a shard: age of the oldest member event
    /// not yet applied (0 when none waits). Every member of the run was
    /// registered and projected before the load began, so each stream has a
    /// checkpoint row and the next event after it is one index lookup.
    async fn lag_s(&self, shard: usize) -> Result<f64> {
        let mut conn = self.admin_connection(shard).await?;
        let lag: f64 = sqlx::query_scalar(
            "SELECT COALESCE(EXTRACT(EPOCH FROM now() - min(n.recorded_at)), 0)::float8
               FROM projection_checkpoints c
               JOIN LATERAL (SELECT e.recorded_at FROM events e
                              WHERE e.aggregate_type = c.aggregate_type AND e.aggregate_id = c.aggregate_id
                                AND e.sequence = c.sequence + 1) n ON true
              WHERE c.projector = 'members' AND c.aggregate_type = 'member'",
        )
        .fetch_one(&mut conn)
        .await?;
        let _ = conn.close().await;
        Ok(lag)
    }

    /// Seconds until every shard's lag is under [`LAG_OK_S`] (None: not within `wait`).
    async fn wait_caught_up(&self, wait: Duration) -> Result<Option<f64>> {
        let began = Instant::now();
        loop {
            let mut worst = 0.0f64;
            for shard in 0..self.pg.len() {
                // A shard still restarting has an unknown lag: not caught up.
                worst = worst.max(self.lag_s(shard).await.unwrap_or(f64::INFINITY));
            }
            if worst < LAG_OK_S {
                return Ok(Some(began.elapsed().as_secs_f64()));
            }
            if began.elapsed() > wait {
                tracing::warn!(lag_s = worst, "projectors not caught up in time");
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn outcome(
        &self,
        fault: &str,
        began: Instant,
        tally: &Tally,
        readyz: Option<String>,
        jetstream_back_s: Option<f64>,
    ) -> Result<FaultOutcome> {
        let catch_up_s = self.wait_caught_up(self.options.catch_up_wait).await?;
        // The first success may come after the catch-up: wait for it a little.
        let mut recovery_s = tally.first_success_after(began);
        let until = Instant::now() + Duration::from_secs(30);
        while recovery_s.is_none() && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(100)).await;
            recovery_s = tally.first_success_after(began);
        }
        let outcome = FaultOutcome {
            fault: fault.to_owned(),
            recovery_s,
            catch_up_s,
            jetstream_back_s,
            readyz_while_stuck: readyz,
        };
        tracing::info!(?outcome, "fault done");
        Ok(outcome)
    }

    async fn kill_node(&mut self, i: usize, tally: &Tally) -> Result<FaultOutcome> {
        let began = Instant::now();
        self.nodes[i].kill();
        tokio::time::sleep(self.options.outage).await;
        self.nodes[i].restart().await?;
        self.wait_ready(&self.nodes[i], Duration::from_secs(60)).await?;
        self.outcome(&format!("kill -9 node {i}"), began, tally, None, None).await
    }

    async fn restart_postgres(&self, shard: usize, tally: &Tally) -> Result<FaultOutcome> {
        let began = Instant::now();
        self.pg[shard].restart().await?;
        self.outcome(&format!("restart postgres of shard {}", SHARDS[shard].0), began, tally, None, None).await
    }

    async fn restart_one_nats(&mut self, i: usize, tally: &Tally) -> Result<FaultOutcome> {
        let began = Instant::now();
        self.nats.stop_node(i)?;
        tokio::time::sleep(self.options.outage).await;
        self.nats.restart_node(i).await?;
        self.outcome(&format!("restart nats server {i}"), began, tally, None, None).await
    }

    async fn restart_all_nats(&mut self, tally: &Tally) -> Result<FaultOutcome> {
        let began = Instant::now();
        for i in 0..self.nats.len() {
            self.nats.stop_node(i)?;
        }
        // While NATS is away the relay and the projectors cannot work: /readyz
        // must say so (within the parts' grace) for as long as it lasts.
        let outage_ends = Instant::now() + self.options.outage;
        let until = Instant::now() + self.options.outage.max(Duration::from_secs(10));
        let mut readyz = self.readyz(&self.nodes[0]).await;
        while !readyz.starts_with("503") && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(250)).await;
            readyz = self.readyz(&self.nodes[0]).await;
        }
        tokio::time::sleep(outage_ends.saturating_duration_since(Instant::now())).await;
        let restarted = Instant::now();
        self.nats.start_stopped().await?;
        let back = self.wait_jetstream(Duration::from_secs(120)).await;
        let jetstream_back_s = back.then(|| restarted.elapsed().as_secs_f64());
        self.outcome("restart every nats server", began, tally, Some(readyz), jetstream_back_s).await
    }

    /// Whether JetStream answers for the events stream and every member
    /// consumer within `wait` (what the relay and the projectors need).
    async fn wait_jetstream(&self, wait: Duration) -> bool {
        let until = Instant::now() + wait;
        let stream = wxcm_server::relay::stream_name(&self.settings.nats.stream_prefix);
        let Ok(client) =
            wxcm_server::nats::connect_bounded(&self.settings.nats, "wxcm-faults-probe", Duration::from_secs(30)).await
        else {
            return false;
        };
        let js = async_nats::jetstream::ContextBuilder::new().timeout(Duration::from_secs(1)).build(client);
        while Instant::now() < until {
            let answered = async {
                let mut stream = js.get_stream(&stream).await?;
                stream.info().await?;
                for (shard, _) in SHARDS {
                    let mut consumer: async_nats::jetstream::consumer::PullConsumer =
                        stream.get_consumer(&format!("members_{shard}")).await.map_err(|e| anyhow::anyhow!("{e}"))?;
                    consumer.info().await?;
                }
                anyhow::Ok(())
            }
            .await;
            if answered.is_ok() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    async fn delete_consumer(&self, shard: usize, tally: &Tally) -> Result<FaultOutcome> {
        let began = Instant::now();
        let client =
            wxcm_server::nats::connect_bounded(&self.settings.nats, "wxcm-faults", Duration::from_secs(10)).await?;
        let js = async_nats::jetstream::new(client);
        let stream = wxcm_server::relay::stream_name(&self.settings.nats.stream_prefix);
        let consumer = format!("members_{}", SHARDS[shard].0);
        // Right after a cluster restart JetStream may still be electing its
        // leaders: the deletion is retried for a while.
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let deleted = async {
                js.get_stream(&stream).await.context("events stream")?.delete_consumer(&consumer).await?;
                anyhow::Ok(())
            }
            .await;
            match deleted {
                Ok(()) => break,
                Err(e) if Instant::now() < until => {
                    tracing::info!(error = %format!("{e:#}"), "consumer not deleted yet; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e.context(format!("deleting consumer {consumer}"))),
            }
        }
        self.outcome(&format!("delete consumer {consumer}"), began, tally, None, None).await
    }

    async fn burst(&self, load: &Load, rate_per_s: u64, length: Duration) -> Result<FaultOutcome> {
        let began = Instant::now();
        let acked_before = load.tally.acked_count();
        load.set_rate(rate_per_s);
        tokio::time::sleep(length).await;
        load.set_rate(self.options.rate_per_s);
        let achieved = (load.tally.acked_count() - acked_before) as f64 / length.as_secs_f64();
        tracing::info!(offered = rate_per_s, achieved, "burst");
        self.outcome(
            &format!("burst of {rate_per_s} writes/s ({achieved:.0} achieved)"),
            began,
            load.tally.as_ref(),
            None,
            None,
        )
        .await
    }

    /// Acknowledged writes against the event store, audits and deadlocks.
    async fn check(&self, tally: &Arc<Tally>) -> Result<MatrixReport> {
        let acked = tally.acked.lock().map(|a| a.clone()).unwrap_or_default();
        let refused = tally.refused.lock().map(|r| r.clone()).unwrap_or_default();
        let mut report = MatrixReport {
            acked: acked.len(),
            refused: refused.len(),
            lost_acked: 0,
            doubled: 0,
            refused_written: 0,
            errors_5xx_internal: tally.errors_5xx_internal.load(std::sync::atomic::Ordering::Relaxed),
            unavailable_503: tally.unavailable.load(std::sync::atomic::Ordering::Relaxed),
            transport_errors: tally.transport_errors.load(std::sync::atomic::Ordering::Relaxed),
            unexpected_answers: tally.unexpected.load(std::sync::atomic::Ordering::Relaxed),
            given_up: tally.given_up.load(std::sync::atomic::Ordering::Relaxed),
            max_recovery_s: 0.0,
            max_projector_catch_up_s: 0.0,
            projection_deadlocks: 0,
            reconcile_differences: 0,
            verify_failures: 0,
            readyz_reported_nats_outage: true,
            stream_replicas_after_lower_config: self.stream_replicas_with_lower_config().await?,
            metrics_show_roles: self.metrics_show_roles().await,
            faults: Vec::new(),
            duration_s: 0.0,
        };
        for (shard, (_, tenant)) in SHARDS.iter().enumerate() {
            let mut conn = self.admin_connection(shard).await?;
            let rows = sqlx::query(
                "SELECT metadata->>'idempotency_key' AS key, count(*) AS n FROM events
                  WHERE tenant_id = $1 AND metadata->>'idempotency_key' LIKE 'fault-%'
                    AND metadata->>'idempotency_key' NOT LIKE 'fault-register-%'
                  GROUP BY 1",
            )
            .bind(tenant)
            .fetch_all(&mut conn)
            .await?;
            let mut stored = std::collections::HashMap::with_capacity(rows.len());
            for row in rows {
                stored.insert(row.try_get::<String, _>("key")?, row.try_get::<i64, _>("n")?);
            }
            report.doubled += stored.values().filter(|n| **n > 1).count();
            report.lost_acked += acked.iter().filter(|a| a.tenant == *tenant && !stored.contains_key(&a.key)).count();
            report.refused_written += refused.iter().filter(|(t, key)| t == tenant && stored.contains_key(key)).count();
            let deadlocks: i64 = sqlx::query_scalar("SELECT COALESCE(sum(deadlocks), 0)::bigint FROM pg_stat_database")
                .fetch_one(&mut conn)
                .await?;
            report.projection_deadlocks += deadlocks;
            let _ = conn.close().await;
            if !self.audit(&["audit", "verify", "--tenant", tenant])? {
                report.verify_failures += 1;
            }
            report.reconcile_differences += self.reconcile_differences(tenant)?;
        }
        Ok(report)
    }

    /// What the stream keeps when a relay configured for one replica ensures it.
    async fn stream_replicas_with_lower_config(&self) -> Result<usize> {
        let client =
            wxcm_server::nats::connect_bounded(&self.settings.nats, "wxcm-faults", Duration::from_secs(10)).await?;
        let js = async_nats::jetstream::new(client);
        let info = wxcm_server::relay::ensure_stream(&js, &self.settings.nats.stream_prefix, 1).await?;
        Ok(info.config.num_replicas)
    }

    async fn metrics_show_roles(&self) -> bool {
        let url = format!("{}/metrics", self.nodes[0].base_url());
        let text = match reqwest::get(url).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => return false,
        };
        ["relay", "scheduler", "projector", "nats"]
            .iter()
            .all(|role| text.contains(&format!("wxcm_role_ready{{role=\"{role}\"")))
            && text.contains("wxcm_role_leader{role=\"relay\"")
    }

    fn audit(&self, args: &[&str]) -> Result<bool> {
        let output = run_wxcm(&self.options.wxcm_bin, &self.settings_path, args)?;
        if !output.status.success() {
            tracing::warn!(?args, stdout = %String::from_utf8_lossy(&output.stdout), stderr = %String::from_utf8_lossy(&output.stderr), "audit failed");
        }
        Ok(output.status.success())
    }

    /// Differences `audit reconcile --json` reports (1 when it fails without a report).
    fn reconcile_differences(&self, tenant: &str) -> Result<usize> {
        let output = run_wxcm(
            &self.options.wxcm_bin,
            &self.settings_path,
            &["audit", "reconcile", "--tenant", tenant, "--json"],
        )?;
        if output.status.success() {
            return Ok(0);
        }
        tracing::warn!(tenant, stdout = %String::from_utf8_lossy(&output.stdout), stderr = %String::from_utf8_lossy(&output.stderr), "reconcile found differences");
        let report: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
        let counted = report["differences"].as_array().map(Vec::len).unwrap_or(0);
        Ok(counted.max(1))
    }
}

/// Runs one `wxcm` command of the run's settings (development secret key,
/// the owner's password for `admin create`) and returns what it printed.
fn run_wxcm(bin: &Path, settings: &Path, args: &[&str]) -> Result<std::process::Output> {
    std::process::Command::new(bin)
        .arg("--config")
        .arg(settings)
        .args(args)
        .env("WXCM_SECRET_KEY", DEV_SECRET_KEY)
        .env("WXCM_ADMIN_PASSWORD", OWNER_PASSWORD)
        .output()
        .with_context(|| format!("running wxcm {args:?}"))
}

/// The node logs of a run, for a failure message.
pub fn log_tail(work_dir: &Path, lines: usize) -> String {
    let mut out = String::new();
    for i in 0..2 {
        let path = work_dir.join(format!("node{i}.log"));
        if let Ok(text) = std::fs::read_to_string(&path) {
            let tail: Vec<&str> = text.lines().rev().take(lines).collect();
            out.push_str(&format!("--- {} (last {lines} lines)\n", path.display()));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// `wxcm bench faults`: the matrix as a soak.
#[derive(Debug, clap::Args)]
pub struct FaultsBenchArgs {
    /// Client loops writing throughout.
    #[arg(long, default_value_t = 24)]
    pub clients: usize,
    /// Writes per second offered outside the burst (0: as fast as the clients go).
    #[arg(long, default_value_t = 200)]
    pub rate: u64,
    #[arg(long, default_value_t = 50)]
    pub members_per_tenant: usize,
    /// Steady load before each fault, seconds.
    #[arg(long, default_value_t = 15)]
    pub steady_secs: u64,
    /// How long a killed node or stopped NATS stays down, seconds.
    #[arg(long, default_value_t = 4)]
    pub outage_secs: u64,
    /// Times the list of faults runs.
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// Writes per second offered in the burst phase.
    #[arg(long, default_value_t = 600)]
    pub burst_rate: u64,
    #[arg(long, default_value_t = 15)]
    pub burst_secs: u64,
    /// Where node logs and settings go (default: a new temporary directory).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
}

/// Targets of the soak (figures; a missed one is reported, not an error).
pub const RECOVERY_TARGET_S: f64 = 2.0;
pub const CATCH_UP_TARGET_S: f64 = 10.0;

pub async fn bench_faults(args: FaultsBenchArgs) -> Result<()> {
    let exe = std::env::current_exe().context("current exe")?;
    let wxcm_bin = exe.with_file_name(format!("wxcm{}", std::env::consts::EXE_SUFFIX));
    if !wxcm_bin.exists() {
        bail!("{} not found: build the wxcm binary next to wxcm-bench (make bench does)", wxcm_bin.display());
    }
    let work_dir = args
        .work_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("wxcm-bench-faults-{}", uuid::Uuid::new_v4().simple())));
    let options = MatrixOptions {
        wxcm_bin,
        work_dir: work_dir.clone(),
        clients: args.clients,
        rate_per_s: args.rate,
        members_per_tenant: args.members_per_tenant,
        steady: Duration::from_secs(args.steady_secs),
        outage: Duration::from_secs(args.outage_secs),
        rounds: args.rounds.max(1),
        burst: Some((args.burst_rate, Duration::from_secs(args.burst_secs))),
        catch_up_wait: Duration::from_secs(120),
    };
    let report = run(options).await.with_context(|| format!("fault run (logs in {})", work_dir.display()))?;
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED).set_header(vec![
        "FAULT",
        "FIRST SUCCESS S",
        "JETSTREAM BACK S",
        "CATCH-UP S",
        "READYZ",
    ]);
    let secs = |v: Option<f64>| v.map_or_else(|| "never".to_owned(), |s| format!("{s:.2}"));
    for f in &report.faults {
        table.add_row(vec![
            f.fault.clone(),
            secs(f.recovery_s),
            f.jetstream_back_s.map_or_else(String::new, |s| format!("{s:.2}")),
            secs(f.catch_up_s),
            f.readyz_while_stuck.clone().unwrap_or_default(),
        ]);
    }
    // Missed targets are figures; lost, doubled, 500s, deadlocks and differences fail the run.
    let mut failed: Vec<String> = report
        .failures(f64::INFINITY, f64::INFINITY)
        .into_iter()
        .filter(|f| !f.contains("catch-up") && !f.contains("first success"))
        .collect();
    if report.faults.iter().any(|f| f.catch_up_s.is_none()) {
        failed.push("a projector never caught up".into());
    }
    let errors = report.errors_5xx_internal + report.given_up + report.unexpected_answers;
    let value = json!({
        "acked": report.acked,
        "refused": report.refused,
        "lost_acked": report.lost_acked,
        "doubled": report.doubled,
        "refused_written": report.refused_written,
        "errors_5xx_internal": report.errors_5xx_internal,
        "unavailable_503": report.unavailable_503,
        "transport_errors": report.transport_errors,
        "max_recovery_s": crate::setup::round(report.max_recovery_s, 3),
        "recovery_target_s": RECOVERY_TARGET_S,
        "recovery_met": report.max_recovery_s <= RECOVERY_TARGET_S,
        "max_projector_catch_up_s": crate::setup::round(report.max_projector_catch_up_s, 3),
        "catch_up_target_s": CATCH_UP_TARGET_S,
        "catch_up_met": report.max_projector_catch_up_s <= CATCH_UP_TARGET_S,
        "projection_deadlocks": report.projection_deadlocks,
        "reconcile_differences": report.reconcile_differences,
        "verify_failures": report.verify_failures,
        "readyz_reported_nats_outage": report.readyz_reported_nats_outage,
        "stream_replicas_after_lower_config": report.stream_replicas_after_lower_config,
        "metrics_show_roles": report.metrics_show_roles,
        "faults": report.faults,
        "duration_s": crate::setup::round(report.duration_s, 1),
        "clients": args.clients,
        "rate_per_s": args.rate,
        "rounds": args.rounds,
        "burst_rate": args.burst_rate,
    });
    let counts = crate::driver::Counts { errors, skipped: 0 };
    crate::setup::finish("faults", &table, value, counts, &failed)
}
