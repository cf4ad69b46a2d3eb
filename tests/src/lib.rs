//! Harness for the black-box tests: each test gets fresh databases (two
//! shards by default), the real application on port 0, and a clock it can
//! move forward. Postgres must be running; tests fail loudly if it is not.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Duration, Utc};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};
use wxcm_commands::ports::{App, Clock};
use wxcm_infra::app::{Application, BuildOptions, Role, RunningApp};
use wxcm_infra::config::{Settings, ShardConfig};
use wxcm_infra::sealer::AesGcmSealer;

pub const SUPERUSER_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const STALE_DB_SECS: u64 = 3 * 3600;
pub const TEST_SECRET_KEY_B64: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

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
        wxcm_infra::migrate::run_migrations(&shard.admin_url).await.expect("migrations");
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
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    pub async fn stop(self) {
        self.running.stop().await;
    }

    /// Superuser connection to one shard's database.
    pub async fn shard_db(&self, shard: &str) -> PgConnection {
        let url = &self.settings.shards[shard].admin_url;
        PgConnectOptions::from_str(url).expect("url").connect().await.expect("shard connection")
    }
}

/// The `wxcm` binary built next to the test executable (`make test` builds it).
pub fn wxcm_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin = dir.join("wxcm");
    assert!(bin.exists(), "{} not built: run `cargo build -p wxcm-infra` (make test does)", bin.display());
    bin
}

/// Writes `settings` as TOML for the CLI and returns the path.
pub fn settings_file(settings: &Settings) -> tempfile_path::TempPath {
    tempfile_path::write(settings)
}

pub mod tempfile_path {
    use std::path::{Path, PathBuf};

    use wxcm_infra::config::Settings;

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
