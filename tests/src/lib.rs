//! Harness for the black-box tests: each test gets fresh databases (two
//! shards by default), the real application on port 0, and a clock it can
//! move forward. Postgres must be running; tests fail loudly if it is not.
//! Tests of read-model endpoints use `spawn_app_with_projections` (NATS must
//! run too) and call `TestApp::catch_up` before they read.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Duration, Utc};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};
use wxcm_commands::ports::{App, Clock};
use wxcm_projections::{
    CampaignProjector, CouponProjector, MallProjector, MemberProjector, Projector, ProjectorRuntime,
};
use wxcm_server::app::{Application, BuildOptions, Role, RunningApp};
use wxcm_server::config::{Settings, ShardConfig};
use wxcm_server::relay::{self, ShardRelay};
use wxcm_server::sealer::AesGcmSealer;

pub mod admin;
pub mod browser;
pub mod distribution;
pub mod simulator;
pub mod wechat_world;
pub use simulator::{SimOptions, Simulator};

pub const SUPERUSER_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const STALE_DB_SECS: u64 = 3 * 3600;
pub const TEST_SECRET_KEY_B64: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
pub const NATS_URL: &str = "nats://127.0.0.1:4222";
/// `catch_up` steps the relay and projectors up to this long (other tests share the cluster).
const CATCH_UP_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// A clock the test moves forward.
#[derive(Default)]
pub struct TestClock {
    offset: Mutex<Duration>,
}

impl TestClock {
    pub fn advance(&self, by: Duration) {
        if let Ok(mut o) = self.offset.lock() {
            *o += by;
        }
    }
}

impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.offset.lock().map(|o| *o).unwrap_or_default()
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

pub async fn superuser() -> PgConnection {
    PgConnection::connect(SUPERUSER_URL)
        .await
        .expect("Postgres must be running on 127.0.0.1:5432 (see README: make test starts it)")
}

/// Drops test databases left behind by earlier runs (older than a few hours).
async fn drop_stale_databases(conn: &mut PgConnection) {
    let names: Vec<String> = sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'wxcm_t_%'")
        .fetch_all(&mut *conn)
        .await
        .unwrap_or_default();
    let now = unix_now();
    for name in names {
        let born = name.split('_').nth(2).and_then(|s| s.parse::<u64>().ok()).unwrap_or(now);
        if now.saturating_sub(born) > STALE_DB_SECS {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).execute(&mut *conn).await;
        }
    }
}

/// Settings for `shards` fresh, migrated databases named `wxcm_t_<time>_<id>_<i>`.
pub async fn fresh_settings(shards: usize) -> Settings {
    let mut conn = superuser().await;
    drop_stale_databases(&mut conn).await;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let mut settings = Settings::default();
    settings.shards.clear();
    for i in 0..shards {
        let db = format!("wxcm_t_{}_{}_{}", unix_now(), &id[..12], i);
        let mut shard = ShardConfig::local(&db);
        shard.pool_max = 12;
        wxcm_store::migrate::run_migrations(&shard.admin_url).await.expect("migrations");
        settings.shards.insert(format!("s{i}"), shard);
    }
    settings.default_shard = "s0".into();
    settings.http.listen = "127.0.0.1:0".into();
    settings.scheduler.interval_ms = 50;
    settings
}

pub struct TestApp {
    pub base_url: String,
    pub http: reqwest::Client,
    pub settings: Settings,
    pub app: Arc<App>,
    pub clock: Arc<TestClock>,
    running: RunningApp,
    pipeline: Option<Pipeline>,
}

/// The relay and the member projector of every shard, stepped by `catch_up`
/// instead of running in the background, on the test's own stream.
struct Pipeline {
    js: async_nats::jetstream::Context,
    prefix: String,
    shards: tokio::sync::Mutex<Vec<ShardPipeline>>,
}

struct ShardPipeline {
    db: PgConnection,
    relay: ShardRelay,
    projector: ProjectorRuntime<MemberProjector>,
    coupons: ProjectorRuntime<CouponProjector>,
    mall: ProjectorRuntime<MallProjector>,
    campaigns: ProjectorRuntime<CampaignProjector>,
    votes: ProjectorRuntime<wxcm_projections::VoteProjector>,
    commissions: ProjectorRuntime<wxcm_projections::CommissionProjector>,
    distributors: ProjectorRuntime<wxcm_projections::DistributorProjector>,
}

impl ShardPipeline {
    /// Publishes every committed outbox row of the shard.
    async fn drain_relay(&mut self, deadline: std::time::Instant) {
        loop {
            let report = self.relay.tick().await.expect("relay step").expect("relay leads");
            // Rows of transactions still in some snapshot wait for a later tick.
            let unpublished: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
                .fetch_one(&mut self.db)
                .await
                .expect("count");
            if !report.more_pending && unpublished == 0 {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "outbox not drained within {CATCH_UP_DEADLINE:?}");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Projects until nothing is pending, delivered or redelivered.
    async fn drain_projector(&mut self, deadline: std::time::Instant) {
        drain(&mut self.projector, deadline).await;
        drain(&mut self.coupons, deadline).await;
        drain(&mut self.mall, deadline).await;
        drain(&mut self.campaigns, deadline).await;
        drain(&mut self.votes, deadline).await;
        drain(&mut self.commissions, deadline).await;
        drain(&mut self.distributors, deadline).await;
    }
}

async fn drain<P: Projector>(projector: &mut ProjectorRuntime<P>, deadline: std::time::Instant) {
    loop {
        let report = projector.run_batch(100, std::time::Duration::from_millis(200)).await.expect("projector step");
        assert_eq!((report.parked, report.failed), (0, 0), "{report:?}");
        let status = projector.status().await.expect("status");
        if report.received == 0 && status.num_pending == 0 && status.num_ack_pending == 0 {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "projection not drained within {CATCH_UP_DEADLINE:?}");
    }
}

pub fn sealer() -> Arc<AesGcmSealer> {
    use base64::Engine;
    let key = base64::engine::general_purpose::STANDARD.decode(TEST_SECRET_KEY_B64).expect("test key");
    Arc::new(AesGcmSealer::from_key(&key).expect("32-byte key"))
}

/// Builds the application on `settings` (HTTP on port 0) with a test clock.
pub async fn build(settings: Settings, role: Role, clock: Arc<TestClock>) -> Application {
    Application::build(settings, role, BuildOptions { clock: Some(clock), sealer: Some(sealer()) })
        .await
        .expect("application builds")
}

/// The whole system with its API only (tests drive the scheduler by hand).
pub async fn spawn_app() -> TestApp {
    spawn_app_on(fresh_settings(2).await).await
}

pub async fn spawn_app_on(settings: Settings) -> TestApp {
    let clock = Arc::new(TestClock::default());
    let application = build(settings.clone(), Role::Api, clock.clone()).await;
    start(application, settings, clock, None)
}

/// [`spawn_app`] plus a relay and member projector per shard on a stream of its
/// own, which the test drives with [`TestApp::catch_up`].
pub async fn spawn_app_with_projections() -> TestApp {
    spawn_app_with_projections_on(fresh_settings(2).await).await
}

pub async fn spawn_app_with_projections_on(mut settings: Settings) -> TestApp {
    // `t` + 12 hex, like the relay tests: their stale-stream cleanup covers these too.
    let prefix = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    settings.nats.stream_prefix = prefix.clone();
    let clock = Arc::new(TestClock::default());
    let application = build(settings.clone(), Role::Api, clock.clone()).await;
    let client = async_nats::connect(NATS_URL).await.expect("NATS with JetStream must run on 127.0.0.1:4222");
    let js = async_nats::jetstream::new(client);
    relay::ensure_stream(&js, &prefix, 1).await.expect("events stream");
    let names: Vec<String> = application.shards.all().map(|s| s.name.clone()).collect();
    let relays = application.shard_relays(&js);
    let tune = |s: &mut wxcm_projections::ProjectorSettings| {
        s.ack_wait = std::time::Duration::from_secs(1);
        s.nak_delay = std::time::Duration::from_millis(50);
    };
    let projectors = application.shard_projectors(&js, tune);
    let coupon_projectors = application.shard_coupon_projectors(&js, tune);
    let mall_projectors = application.shard_mall_projectors(&js, tune);
    let campaign_projectors = application.shard_campaign_projectors(&js, tune);
    let vote_projectors = application.shard_vote_projectors(&js, tune);
    let commission_projectors = application.shard_commission_projectors(&js, tune);
    let distributor_projectors = application.shard_distributor_projectors(&js, tune);
    let mut shards = Vec::new();
    // All come from `Shards::all`, in the same order.
    let pipelines = names
        .iter()
        .zip(relays)
        .zip(projectors)
        .zip(coupon_projectors)
        .zip(mall_projectors)
        .zip(campaign_projectors)
        .zip(vote_projectors)
        .zip(commission_projectors)
        .zip(distributor_projectors);
    for ((((((((name, relay), projector), coupons), mall), campaigns), votes), commissions), distributors) in pipelines
    {
        let url = &settings.shards[name].admin_url;
        let db = PgConnectOptions::from_str(url).expect("url").connect().await.expect("shard connection");
        shards.push(ShardPipeline { db, relay, projector, coupons, mall, campaigns, votes, commissions, distributors });
    }
    let pipeline = Pipeline { js, prefix, shards: tokio::sync::Mutex::new(shards) };
    start(application, settings, clock, Some(pipeline))
}

fn start(application: Application, settings: Settings, clock: Arc<TestClock>, pipeline: Option<Pipeline>) -> TestApp {
    let app = application.app.clone();
    let running = application.spawn();
    let addr = running.addr.expect("http address");
    TestApp {
        base_url: format!("http://{addr}"),
        http: reqwest::Client::builder().build().expect("http client"),
        settings,
        app,
        clock,
        running,
        pipeline,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    pub async fn stop(self) {
        self.running.stop().await;
        if let Some(p) = self.pipeline {
            p.js.delete_stream(relay::stream_name(&p.prefix)).await.expect("delete the test stream");
        }
    }

    /// Relays every committed event of every shard, then projects until nothing
    /// is pending: the read models then reflect every command that has returned.
    pub async fn catch_up(&self) {
        let pipeline = self.pipeline.as_ref().expect("catch_up needs spawn_app_with_projections");
        let deadline = std::time::Instant::now() + CATCH_UP_DEADLINE;
        let mut shards = pipeline.shards.lock().await;
        for shard in shards.iter_mut() {
            shard.drain_relay(deadline).await;
        }
        for shard in shards.iter_mut() {
            shard.drain_projector(deadline).await;
        }
    }

    /// Superuser connection to one shard's database.
    pub async fn shard_db(&self, shard: &str) -> PgConnection {
        let url = &self.settings.shards[shard].admin_url;
        PgConnectOptions::from_str(url).expect("url").connect().await.expect("shard connection")
    }
}

/// The `wxcm` binary built next to the test executable (`make test` builds it).
pub fn wxcm_bin() -> PathBuf {
    built_bin("wxcm", "wxcm")
}

/// A binary of the workspace built next to the test executable (`make test`
/// builds every binary before running the tests).
pub fn built_bin(name: &str, package: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(bin.exists(), "{} not built: run `cargo build -p {package}` (make test does)", bin.display());
    bin
}

/// Writes `settings` as TOML for the CLI and returns the path.
pub fn settings_file(settings: &Settings) -> tempfile_path::TempPath {
    tempfile_path::write(settings)
}

pub mod tempfile_path {
    use std::path::{Path, PathBuf};

    use wxcm_server::config::Settings;

    /// A settings file removed on drop.
    pub struct TempPath(PathBuf);
    impl TempPath {
        pub fn path(&self) -> &Path {
            &self.0
        }
    }
    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    pub fn write(settings: &Settings) -> TempPath {
        let path = std::env::temp_dir().join(format!("wxcm-test-{}.json", uuid::Uuid::new_v4().simple()));
        let body = serde_json::to_string_pretty(settings).expect("settings serialize");
        std::fs::write(&path, body).expect("write settings");
        TempPath(path)
    }
}
