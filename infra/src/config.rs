//! Settings: built-in defaults that work on a developer machine with local
//! Postgres and NATS, then an optional TOML file, then `WXCM_*` environment
//! variables (`__` separates levels: `WXCM_HTTP__LISTEN=0.0.0.0:8080`,
//! `WXCM_SHARDS__MAIN__URL=postgres://...`).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use wxcm_commands::Limits;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    pub http: HttpConfig,
    /// Shard name → connection settings.
    pub shards: BTreeMap<String, ShardConfig>,
    /// Tenant id → shard name; tenants not listed live on `default_shard`.
    #[serde(default)]
    pub tenant_shards: BTreeMap<String, String>,
    pub default_shard: String,
    pub limits: Limits,
    pub scheduler: SchedulerConfig,
    pub nats: NatsConfig,
    /// Name of the environment variable holding the base64 32-byte key that
    /// encrypts tenant secrets at rest. The key itself is never in a file.
    pub secret_key_env: String,
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HttpConfig {
    pub listen: String,
    pub body_bytes_max: usize,
    pub login_attempts_per_minute: u32,
    pub request_timeout_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardConfig {
    /// The application's connection (role `wxcm_app`: no UPDATE/DELETE on events).
    pub url: String,
    /// The owner's connection, used only by `wxcm migrate`.
    pub admin_url: String,
    pub pool_max: u32,
    pub aggregate_cache_entries: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SchedulerConfig {
    pub interval_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NatsConfig {
    pub url: String,
    pub stream_prefix: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Load(#[from] config::ConfigError),
    #[error("invalid settings: {0}")]
    Invalid(String),
}

pub const POOL_MAX_LIMIT: u32 = 200;

impl Default for Settings {
    fn default() -> Self {
        let mut shards = BTreeMap::new();
        shards.insert("main".to_owned(), ShardConfig::local("wxcm"));
        Self {
            http: HttpConfig {
                listen: "127.0.0.1:8080".into(),
                body_bytes_max: 64 * 1024,
                login_attempts_per_minute: 10,
                request_timeout_ms: 10_000,
            },
            shards,
            tenant_shards: BTreeMap::new(),
            default_shard: "main".into(),
            limits: Limits::default(),
            scheduler: SchedulerConfig { interval_ms: 1000 },
            nats: NatsConfig { url: "nats://127.0.0.1:4222".into(), stream_prefix: "wxcm".into() },
            secret_key_env: "WXCM_SECRET_KEY".into(),
            log_format: LogFormat::Text,
        }
    }
}

impl ShardConfig {
    /// A database on this machine's local Postgres.
    pub fn local(database: &str) -> Self {
        Self {
            url: format!("postgres://wxcm_app@127.0.0.1:5432/{database}"),
            admin_url: format!("postgres://postgres@127.0.0.1:5432/{database}"),
            pool_max: 24,
            aggregate_cache_entries: crate::store::CACHE_ENTRIES_DEFAULT,
        }
    }
}

impl Settings {
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let defaults = config::Config::try_from(&Settings::default())?;
        let mut builder = config::Config::builder().add_source(defaults);
        if let Some(path) = file {
            builder = builder.add_source(config::File::from(path).required(true));
        }
        builder = builder.add_source(config::Environment::with_prefix("WXCM").prefix_separator("_").separator("__"));
        let settings: Settings = builder.build()?.try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.shards.contains_key(&self.default_shard) {
            return Err(ConfigError::Invalid(format!("default_shard {} is not in [shards]", self.default_shard)));
        }
        for (tenant, shard) in &self.tenant_shards {
            if !self.shards.contains_key(shard) {
                return Err(ConfigError::Invalid(format!("tenant {tenant} maps to unknown shard {shard}")));
            }
        }
        for (name, shard) in &self.shards {
            if shard.pool_max == 0 || shard.pool_max > POOL_MAX_LIMIT {
                return Err(ConfigError::Invalid(format!("shard {name}: pool_max must be 1..={POOL_MAX_LIMIT}")));
            }
        }
        if self.limits.amount_fen_max <= 0 || self.limits.points_max <= 0 {
            return Err(ConfigError::Invalid("limits must be positive".into()));
        }
        Ok(())
    }

    pub fn shard_of(&self, tenant: &str) -> &str {
        self.tenant_shards.get(tenant).map(String::as_str).unwrap_or(&self.default_shard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_env_overrides() {
        Settings::default().validate().unwrap();
        // SAFETY-free: env manipulation is process-wide; this test only reads its own variable.
        let s = Settings::load(None).unwrap();
        assert_eq!(s.default_shard, "main");
        assert_eq!(s.shard_of("anyone"), "main");
    }

    #[test]
    fn unknown_shard_in_map_is_refused() {
        let mut s = Settings::default();
        s.tenant_shards.insert("acme".into(), "nowhere".into());
        assert!(s.validate().is_err());
    }
}
