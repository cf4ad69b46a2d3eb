//! `Application::build` is the one way to start wxcm, used by `main` and by
//! the black-box tests (which only change settings: databases, port 0).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::info;
use wxcm_commands::health::{HealthBoard, PartHealth, PartReport};
use wxcm_commands::ports::{App, Clock, SecretSealer, SystemClock};
use wxcm_http::{HttpSettings, Readiness};
use wxcm_projections::{
    CampaignProjector, CouponProjector, MallProjector, MemberProjector, Projector, ProjectorRuntime, ProjectorSettings,
};

use crate::config::Settings;
use crate::relay::{RelaySettings, ShardRelay};
use crate::scheduler_role::ShardScheduler;
use crate::sealer::AesGcmSealer;
use crate::shards::Shards;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Every role in one process.
    All,
    /// Admin HTTP API (and health endpoints).
    Api,
    /// Due work (points expiry), one active instance per shard.
    Scheduler,
    /// Outbox → NATS JetStream, one active instance per shard.
    Relay,
    /// JetStream → read models, one worker per shard and projector.
    Projector,
}

impl Role {
    fn serves_http(self) -> bool {
        matches!(self, Role::All | Role::Api)
    }
    fn schedules(self) -> bool {
        matches!(self, Role::All | Role::Scheduler)
    }
    fn relays(self) -> bool {
        matches!(self, Role::All | Role::Relay)
    }
    fn projects(self) -> bool {
        matches!(self, Role::All | Role::Projector)
    }
}

/// Installs the process-wide rustls crypto provider (sqlx, reqwest and
/// async-nats would otherwise disagree). Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Sealer(#[from] crate::sealer::SealerError),
    #[error("database settings: {0}")]
    Database(#[from] sqlx::Error),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
    #[error("nats settings: {0}")]
    Nats(#[from] crate::nats::NatsConnectError),
    #[error(transparent)]
    Wechat(#[from] crate::wechat_wiring::WiringError),
}

pub struct Application {
    pub app: Arc<App>,
    pub shards: Arc<Shards>,
    pub settings: Settings,
    role: Role,
    listener: Option<TcpListener>,
    /// Connected (in the background, retrying) only for roles that relay.
    nats: Option<async_nats::Client>,
    /// The token center and outbound WeChat client (shared tokens live on the default shard).
    pub wechat: crate::wechat_wiring::WechatSide,
    /// What the WeChat callback endpoints need (settings, directory, outbound side).
    pub wechat_edge: Arc<wxcm_http::WechatEdge>,
    /// What each role on this node reports (`/readyz`, `/metrics`).
    pub health: HealthBoard,
}

/// Overrides for tests and tools.
#[derive(Default)]
pub struct BuildOptions {
    pub clock: Option<Arc<dyn Clock>>,
    pub sealer: Option<Arc<dyn SecretSealer>>,
}

/// Longest wait for one shard's answer to the readiness query.
const READINESS_QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the node's NATS connection state is reported.
const NATS_WATCH_INTERVAL: Duration = Duration::from_secs(1);

struct NodeReadiness {
    shards: Arc<Shards>,
    health: HealthBoard,
}

#[async_trait]
impl Readiness for NodeReadiness {
    async fn check(&self) -> Result<(), String> {
        for shard in self.shards.all() {
            match tokio::time::timeout(READINESS_QUERY_TIMEOUT, sqlx::query("SELECT 1").execute(&shard.pool)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(format!("shard {}: {e}", shard.name)),
                Err(_) => return Err(format!("shard {}: no answer within {READINESS_QUERY_TIMEOUT:?}", shard.name)),
            }
        }
        Ok(())
    }

    async fn roles(&self) -> Vec<PartReport> {
        self.health.reports()
    }
}

/// Reports the node's NATS connection (what relays and projectors need).
async fn watch_nats(client: async_nats::Client, part: PartHealth, mut shutdown: watch::Receiver<bool>) {
    loop {
        match client.connection_state() {
            async_nats::connection::State::Connected => part.healthy(None, "connected"),
            other => part.failing(None, &format!("{other}: reconnecting to the seed servers")),
        }
        tokio::select! {
            _ = tokio::time::sleep(NATS_WATCH_INTERVAL) => {}
            _ = shutdown.changed() => break,
        }
    }
}

impl Application {
    pub async fn build(settings: Settings, role: Role, options: BuildOptions) -> Result<Self, BuildError> {
        install_crypto_provider();
        wxcm_store::transient::install();
        let clock = options.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let sealer = match options.sealer {
            Some(s) => s,
            None => Arc::new(AesGcmSealer::from_env(&settings.secret_key_env)?),
        };
        let shards = Arc::new(Shards::build(&settings, clock.clone(), sealer.clone())?);
        let app = Arc::new(App { router: shards.clone(), clock, sealer, limits: settings.limits });
        let listener = if role.serves_http() {
            let addr = settings.http.listen.clone();
            Some(TcpListener::bind(&addr).await.map_err(|source| BuildError::Listen { addr, source })?)
        } else {
            None
        };
        let nats = if role.relays() || role.projects() {
            // Retried in the background: the relay and projector steps fail (and retry) until NATS is up.
            Some(crate::nats::connect_long_lived(&settings.nats, "wxcm-node").await?)
        } else {
            None
        };
        let control_pool = shards
            .all()
            .find(|s| s.name == settings.default_shard)
            .map(|s| s.pool.clone())
            .ok_or_else(|| BuildError::Database(sqlx::Error::Configuration("default shard missing".into())))?;
        let wechat = crate::wechat_wiring::build(app.clone(), control_pool, &settings.wechat)?;
        let outbound: Arc<dyn wxcm_http::WechatOutbound> = wechat.outbound.clone();
        let mut edge = wxcm_http::WechatEdge::new(settings.wechat.edge_settings(), Some(outbound), app.clock.clone());
        edge.directory = wechat.directory.clone();
        let wechat_edge = Arc::new(edge);
        Ok(Self { app, shards, settings, role, listener, nats, wechat, wechat_edge, health: HealthBoard::new() })
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn http_settings(&self) -> HttpSettings {
        HttpSettings {
            body_bytes_max: self.settings.http.body_bytes_max,
            login_attempts_per_minute: self.settings.http.login_attempts_per_minute,
            request_timeout_ms: self.settings.http.request_timeout_ms,
            // Validated when the settings were loaded.
            trusted_proxies: self.settings.http.trusted_proxy_nets().unwrap_or_default(),
        }
    }

    /// One scheduler per shard (not started); tests drive `tick` themselves.
    pub fn shard_schedulers(&self) -> Vec<ShardScheduler> {
        let pay: Arc<dyn wxcm_commands::pay_port::PayGateway> = self.wechat.pay.clone();
        self.shards
            .all()
            .map(|s| {
                ShardScheduler::new(self.app.clone(), s.services.clone(), s.pool.clone())
                    .with_pay(pay.clone(), self.settings.wechat.public_base_url.clone())
            })
            .collect()
    }

    /// One relay per shard (not started) publishing through `js`; tests drive `tick` themselves.
    pub fn shard_relays(&self, js: &async_nats::jetstream::Context) -> Vec<ShardRelay> {
        let settings = RelaySettings::from_config(&self.settings.nats);
        self.shards
            .all()
            .map(|s| {
                ShardRelay::new(s.name.clone(), s.pool.clone(), js.clone(), settings.clone())
                    .wake_on(s.committed.clone())
            })
            .collect()
    }

    /// One member projector per shard (not started); tests drive `run_batch` themselves.
    /// `tune` adjusts the default `ProjectorSettings` (tests shorten the waits).
    pub fn shard_projectors(
        &self,
        js: &async_nats::jetstream::Context,
        tune: impl Fn(&mut ProjectorSettings),
    ) -> Vec<ProjectorRuntime<MemberProjector>> {
        self.projectors_of(MemberProjector, js, tune)
    }

    /// The coupon projector of every shard (`rm_coupons`, coupon counters).
    pub fn shard_coupon_projectors(
        &self,
        js: &async_nats::jetstream::Context,
        tune: impl Fn(&mut ProjectorSettings),
    ) -> Vec<ProjectorRuntime<CouponProjector>> {
        self.projectors_of(CouponProjector, js, tune)
    }

    /// The mall projector of every shard (`rm_mall_orders`, mall counters).
    pub fn shard_mall_projectors(
        &self,
        js: &async_nats::jetstream::Context,
        tune: impl Fn(&mut ProjectorSettings),
    ) -> Vec<ProjectorRuntime<MallProjector>> {
        self.projectors_of(MallProjector, js, tune)
    }

    /// The campaign projector of every shard (`rm_campaigns`, per-campaign counters).
    pub fn shard_campaign_projectors(
        &self,
        js: &async_nats::jetstream::Context,
        tune: impl Fn(&mut ProjectorSettings),
    ) -> Vec<ProjectorRuntime<CampaignProjector>> {
        self.projectors_of(CampaignProjector, js, tune)
    }

    /// The commission counters' projector of every shard (`rm_daily_ops` only).
    pub fn shard_commission_projectors(
        &self,
        js: &async_nats::jetstream::Context,
        tune: impl Fn(&mut ProjectorSettings),
    ) -> Vec<ProjectorRuntime<wxcm_projections::CommissionProjector>> {
        self.projectors_of(wxcm_projections::CommissionProjector, js, tune)
    }

    /// The new-distributor counters' projector of every shard (`rm_daily_ops` only).
    pub fn shard_distributor_projectors(
        &self,
        js: &async_nats::jetstream::Context,
        tune: impl Fn(&mut ProjectorSettings),
    ) -> Vec<ProjectorRuntime<wxcm_projections::DistributorProjector>> {
        self.projectors_of(wxcm_projections::DistributorProjector, js, tune)
    }

    /// The votes projector of every shard (`rm_vote_items`, the voting campaigns' ranking).
    pub fn shard_vote_projectors(
        &self,
        js: &async_nats::jetstream::Context,
        tune: impl Fn(&mut ProjectorSettings),
    ) -> Vec<ProjectorRuntime<wxcm_projections::VoteProjector>> {
        self.projectors_of(wxcm_projections::VoteProjector, js, tune)
    }

    fn projectors_of<P: Projector + Copy>(
        &self,
        projector: P,
        js: &async_nats::jetstream::Context,
        tune: impl Fn(&mut ProjectorSettings),
    ) -> Vec<ProjectorRuntime<P>> {
        let prefix = &self.settings.nats.stream_prefix;
        let filter = crate::relay::event_subject(prefix, "*", projector.aggregate_type());
        let mut settings = ProjectorSettings::new(crate::relay::stream_name(prefix), filter);
        tune(&mut settings);
        self.shards
            .all()
            .map(|s| {
                let router = self.shards.clone() as Arc<dyn wxcm_commands::ports::ShardRouter>;
                ProjectorRuntime::new(projector, s.name.clone(), s.pool.clone(), router, js.clone(), settings.clone())
            })
            .collect()
    }

    /// Runs the configured roles until `shutdown` turns true.
    pub async fn run(self, shutdown: watch::Receiver<bool>) -> std::io::Result<()> {
        let mut tasks: Vec<JoinHandle<()>> = Vec::new();
        if self.role.schedules() {
            let interval = Duration::from_millis(self.settings.scheduler.interval_ms.max(10));
            for scheduler in self.shard_schedulers() {
                let part = self.health.part("scheduler", &scheduler.shard_name(), "");
                tasks.push(tokio::spawn(scheduler.with_health(part).run(interval, shutdown.clone())));
            }
            let retention_days = i64::from(self.settings.wechat.messages_retention_days);
            tasks.push(tokio::spawn(prune_old_records(self.app.clone(), retention_days, shutdown.clone())));
        }
        if let Some(client) = self.nats.clone() {
            let js = async_nats::jetstream::ContextBuilder::new()
                .timeout(crate::relay::JETSTREAM_TIMEOUT)
                .build(client.clone());
            tasks.push(tokio::spawn(watch_nats(client, self.health.part("nats", "", ""), shutdown.clone())));
            let interval = self.settings.nats.relay_interval();
            if self.role.relays() {
                for relay in self.shard_relays(&js) {
                    let part = self.health.part("relay", relay.shard_name(), "");
                    tasks.push(tokio::spawn(relay.with_health(part).run(interval, shutdown.clone())));
                }
            }
            if self.role.projects() {
                // The relay creates the stream too; doing it here spares a projector
                // that starts first a round of "stream not found" retries.
                if let Err(e) = crate::relay::ensure_stream(
                    &js,
                    &self.settings.nats.stream_prefix,
                    self.settings.nats.stream_replicas,
                )
                .await
                {
                    tracing::warn!(error = %e, "events stream not ready yet; projectors will retry");
                }
                for projector in self.shard_projectors(&js, |_| {}) {
                    let part = self.health.part("projector", projector.shard_name(), projector.projector_name());
                    tasks.push(tokio::spawn(projector.with_health(part).run(shutdown.clone())));
                }
                for projector in self.shard_coupon_projectors(&js, |_| {}) {
                    let part = self.health.part("projector", projector.shard_name(), projector.projector_name());
                    tasks.push(tokio::spawn(projector.with_health(part).run(shutdown.clone())));
                }
                for projector in self.shard_mall_projectors(&js, |_| {}) {
                    let part = self.health.part("projector", projector.shard_name(), projector.projector_name());
                    tasks.push(tokio::spawn(projector.with_health(part).run(shutdown.clone())));
                }
                for projector in self.shard_campaign_projectors(&js, |_| {}) {
                    let part = self.health.part("projector", projector.shard_name(), projector.projector_name());
                    tasks.push(tokio::spawn(projector.with_health(part).run(shutdown.clone())));
                }
                for projector in self.shard_commission_projectors(&js, |_| {}) {
                    let part = self.health.part("projector", projector.shard_name(), projector.projector_name());
                    tasks.push(tokio::spawn(projector.with_health(part).run(shutdown.clone())));
                }
                for projector in self.shard_distributor_projectors(&js, |_| {}) {
                    let part = self.health.part("projector", projector.shard_name(), projector.projector_name());
                    tasks.push(tokio::spawn(projector.with_health(part).run(shutdown.clone())));
                }
                for projector in self.shard_vote_projectors(&js, |_| {}) {
                    let part = self.health.part("projector", projector.shard_name(), projector.projector_name());
                    tasks.push(tokio::spawn(projector.with_health(part).run(shutdown.clone())));
                }
            }
        }
        let http_settings = self.http_settings();
        if let Some(listener) = self.listener {
            let readiness = Arc::new(NodeReadiness { shards: self.shards.clone(), health: self.health.clone() });
            // Tokens close to expiry are refreshed by whichever node holds their lease.
            let refresh_ms = self.settings.wechat.token_refresh_interval_ms.max(1_000);
            tasks.push(tokio::spawn(self.wechat.tokens.clone().run_refresher(refresh_ms, shutdown.clone())));
            let member = wxcm_http::MemberPorts {
                oauth: Some(self.wechat.oauth.clone()),
                pay: Some(self.wechat.pay.clone()),
                notify_base_url: self.settings.wechat.public_base_url.clone(),
            };
            let router = wxcm_http::router_with_member(
                self.app.clone(),
                readiness,
                http_settings,
                self.wechat_edge.clone(),
                member,
            )
            .merge(crate::projection_ops::metrics_router(
                self.settings.clone(),
                self.shards.clone(),
                self.nats.clone(),
                self.health.clone(),
            ));
            info!(addr = ?listener.local_addr().ok(), "http listening");
            let mut stop = shutdown.clone();
            axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await?;
        } else {
            let mut stop = shutdown.clone();
            let _ = stop.wait_for(|s| *s).await;
        }
        for t in tasks {
            let _ = t.await;
        }
        Ok(())
    }

    /// Starts in the background; for tests.
    pub fn spawn(self) -> RunningApp {
        let addr = self.local_addr();
        let app = self.app.clone();
        let (tx, rx) = watch::channel(false);
        let handle = tokio::spawn(async move {
            let _ = self.run(rx).await;
        });
        RunningApp { addr, app, shutdown: tx, handle }
    }
}

/// WeChat retries within seconds; claims only need to outlive the retries (and
/// support questions for a while).
pub const CALLBACK_CLAIMS_RETENTION_HOURS: i64 = 48;
const CALLBACK_CLAIMS_PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

/// Stored messages deleted per statement, and statements per prune round.
const MESSAGES_PRUNE_BATCH: u32 = 5_000;
const MESSAGES_PRUNE_BATCHES_MAX: u32 = 100;

/// Hourly: WeChat callback claims and stored messages past their retention,
/// and operation log entries past `oplog::OPLOG_RETENTION_DAYS`, in bounded batches.
async fn prune_old_records(app: Arc<App>, messages_retention_days: i64, mut shutdown: watch::Receiver<bool>) {
    loop {
        let before = app.clock.now() - chrono::Duration::hours(CALLBACK_CLAIMS_RETENTION_HOURS);
        let messages_before = app.clock.now() - chrono::Duration::days(messages_retention_days);
        for shard in app.router.shards() {
            match shard.wechat.prune_callbacks(before).await {
                Ok(0) => {}
                Ok(n) => info!(shard = %shard.name, pruned = n, "old wechat callback claims pruned"),
                Err(e) => tracing::warn!(shard = %shard.name, error = %e, "pruning callback claims failed"),
            }
            let keyed_before = app.clock.now()
                - chrono::Duration::hours(wxcm_commands::keyed_requests::KEYED_REQUESTS_RETENTION_HOURS);
            match shard.keyed_requests.prune(keyed_before, MESSAGES_PRUNE_BATCH).await {
                Ok(0) => {}
                Ok(n) => info!(shard = %shard.name, pruned = n, "old keyed request answers pruned"),
                Err(e) => tracing::warn!(shard = %shard.name, error = %e, "pruning keyed request answers failed"),
            }
            let oplog_before = app.clock.now() - chrono::Duration::days(wxcm_commands::oplog::OPLOG_RETENTION_DAYS);
            for _ in 0..MESSAGES_PRUNE_BATCHES_MAX {
                match shard.oplog.prune(oplog_before, MESSAGES_PRUNE_BATCH).await {
                    Ok(n) if n == u64::from(MESSAGES_PRUNE_BATCH) => continue,
                    Ok(0) => {}
                    Ok(n) => info!(shard = %shard.name, pruned = n, "old operation log entries pruned"),
                    Err(e) => tracing::warn!(shard = %shard.name, error = %e, "pruning the operation log failed"),
                }
                break;
            }
            for _ in 0..MESSAGES_PRUNE_BATCHES_MAX {
                match shard.wechat.prune_messages(messages_before, MESSAGES_PRUNE_BATCH).await {
                    Ok(n) if n == u64::from(MESSAGES_PRUNE_BATCH) => continue,
                    Ok(0) => {}
                    Ok(n) => info!(shard = %shard.name, pruned = n, "old wechat messages pruned"),
                    Err(e) => tracing::warn!(shard = %shard.name, error = %e, "pruning wechat messages failed"),
                }
                break;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(CALLBACK_CLAIMS_PRUNE_INTERVAL) => {}
            _ = shutdown.changed() => break,
        }
    }
}

pub struct RunningApp {
    pub addr: Option<SocketAddr>,
    pub app: Arc<App>,
    shutdown: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

impl RunningApp {
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = self.handle.await;
    }
}
