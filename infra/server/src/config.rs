//! Settings: built-in defaults that work on a developer machine with local
//! Postgres and NATS, then an optional TOML file, then `WXCM_*` environment
//! variables (`__` separates levels: `WXCM_HTTP__LISTEN=0.0.0.0:8080`,
//! `WXCM_SHARDS__MAIN__URL=postgres://...`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use wxcm_commands::Limits;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    pub http: HttpConfig,
    /// Shard name → connection settings. A file or the environment that names
    /// shards replaces the built-in `main` shard instead of adding to it.
    #[serde(default)]
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
    #[serde(default)]
    pub wechat: WechatConfig,
}

/// The WeChat edge: callbacks, the outbound client and the token center.
/// Every base URL is configurable so that local runs and tests use `wxcm sandbox`.
/// `Debug` shows whether the component's credentials are set, never their values.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct WechatConfig {
    pub callback_body_bytes_max: usize,
    pub timestamp_window_s: i64,
    pub reply_budget_ms: u64,
    pub require_safe_mode: bool,
    pub api_base: String,
    pub open_base: String,
    pub mp_base: String,
    pub request_timeout_ms: u64,
    pub calls_per_second_per_appid: u32,
    /// How this server is reached from outside (referral links, OAuth redirects, notify URLs).
    pub public_base_url: String,
    /// Where referral visitors are sent to follow the account after OAuth
    /// (`{appid}` is replaced); empty: a short page asking them to follow.
    pub follow_url_template: String,
    /// WeChat Pay's API (`https://api.mch.weixin.qq.com`; the simulator in local runs).
    pub pay_base_url: String,
    /// Pay's platform key, to verify v3 answers (optional; notifications use the
    /// per-merchant keys of the pay store).
    pub pay_platform_serial: String,
    pub pay_platform_public_key_pem: String,
    /// Stored callback messages older than this are deleted (hourly, in batches).
    pub messages_retention_days: u32,
    /// Interval of the token refresher (refreshes tokens close to expiry).
    pub token_refresh_interval_ms: u64,
    /// The third-party platform's appid; empty when wxcm does not run as one.
    pub component_appid: String,
    /// Component token, EncodingAESKey and secret: set them through the environment
    /// (`WXCM_WECHAT__COMPONENT_TOKEN`, ...), never in a committed file.
    pub component_token: String,
    pub component_encoding_aes_key: String,
    pub component_app_secret: String,
}

impl Default for WechatConfig {
    fn default() -> Self {
        let client = wxcm_outbound::wechat::http::ClientConfig::default();
        let edge = wxcm_http::WechatSettings::default();
        Self {
            callback_body_bytes_max: edge.body_bytes_max,
            timestamp_window_s: edge.timestamp_window_s,
            reply_budget_ms: edge.reply_budget_ms,
            require_safe_mode: edge.require_safe_mode,
            api_base: client.api_base,
            open_base: client.open_base,
            mp_base: client.mp_base,
            request_timeout_ms: client.request_timeout_ms,
            calls_per_second_per_appid: client.calls_per_second_per_appid,
            public_base_url: "http://127.0.0.1:8080".into(),
            follow_url_template: String::new(),
            pay_base_url: wxcm_outbound::pay::PayClientSettings::default().base_url,
            pay_platform_serial: String::new(),
            pay_platform_public_key_pem: String::new(),
            messages_retention_days: 180,
            token_refresh_interval_ms: 30_000,
            component_appid: String::new(),
            component_token: String::new(),
            component_encoding_aes_key: String::new(),
            component_app_secret: String::new(),
        }
    }
}

impl fmt::Debug for WechatConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WechatConfig")
            .field("callback_body_bytes_max", &self.callback_body_bytes_max)
            .field("timestamp_window_s", &self.timestamp_window_s)
            .field("reply_budget_ms", &self.reply_budget_ms)
            .field("require_safe_mode", &self.require_safe_mode)
            .field("api_base", &self.api_base)
            .field("open_base", &self.open_base)
            .field("mp_base", &self.mp_base)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("calls_per_second_per_appid", &self.calls_per_second_per_appid)
            .field("public_base_url", &self.public_base_url)
            .field("follow_url_template", &self.follow_url_template)
            .field("pay_base_url", &self.pay_base_url)
            .field("pay_platform_serial", &self.pay_platform_serial)
            .field("messages_retention_days", &self.messages_retention_days)
            .field("token_refresh_interval_ms", &self.token_refresh_interval_ms)
            .field("component_appid", &self.component_appid)
            .field("component_token", &redacted_if_set(&self.component_token))
            .field("component_encoding_aes_key", &redacted_if_set(&self.component_encoding_aes_key))
            .field("component_app_secret", &redacted_if_set(&self.component_app_secret))
            .finish_non_exhaustive()
    }
}

/// What `Debug` shows for a secret setting: whether it is set.
fn redacted_if_set(secret: &str) -> &'static str {
    if secret.is_empty() {
        ""
    } else {
        REDACTED
    }
}

/// Stands in for a secret in `Debug` output.
const REDACTED: &str = "[redacted]";

/// A connection URL for `Debug`: the password of its user part and its query
/// (where `?password=` may sit) replaced by [`REDACTED`].
fn url_for_debug(url: &str) -> String {
    let (url, query) = match url.split_once('?') {
        Some((base, _)) => (base, Some(REDACTED)),
        None => (url, None),
    };
    let redacted = match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            match authority.rsplit_once('@') {
                Some((user_info, host)) => match user_info.split_once(':') {
                    Some((user, _password)) => format!("{scheme}://{user}:{REDACTED}@{host}{path}"),
                    None => url.to_owned(),
                },
                None => url.to_owned(),
            }
        }
        None => url.to_owned(),
    };
    match query {
        Some(q) => format!("{redacted}?{q}"),
        None => redacted,
    }
}

/// Upper bound of `wechat.callback_body_bytes_max`.
pub const CALLBACK_BODY_BYTES_LIMIT: usize = 1024 * 1024;

impl WechatConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.callback_body_bytes_max == 0 || self.callback_body_bytes_max > CALLBACK_BODY_BYTES_LIMIT {
            return Err(ConfigError::Invalid(format!(
                "wechat.callback_body_bytes_max must be 1..={CALLBACK_BODY_BYTES_LIMIT}"
            )));
        }
        if !(1..=3650).contains(&self.messages_retention_days) {
            return Err(ConfigError::Invalid("wechat.messages_retention_days must be 1..=3650".into()));
        }
        if !(1..=3600).contains(&self.timestamp_window_s) {
            return Err(ConfigError::Invalid("wechat.timestamp_window_s must be 1..=3600".into()));
        }
        if !(1..=4_500).contains(&self.reply_budget_ms) {
            return Err(ConfigError::Invalid("wechat.reply_budget_ms must be 1..=4500 (WeChat waits 5 s)".into()));
        }
        for (name, url) in [("api_base", &self.api_base), ("open_base", &self.open_base), ("mp_base", &self.mp_base)] {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::Invalid(format!("wechat.{name} must be an http(s) URL")));
            }
        }
        let component = [&self.component_token, &self.component_encoding_aes_key, &self.component_app_secret];
        if !self.component_appid.is_empty() && component.iter().any(|s| s.is_empty()) {
            return Err(ConfigError::Invalid(
                "wechat.component_appid is set: component_token, component_encoding_aes_key and component_app_secret are required".into(),
            ));
        }
        Ok(())
    }

    pub fn edge_settings(&self) -> wxcm_http::WechatSettings {
        let component = (!self.component_appid.is_empty()).then(|| wxcm_http::ComponentCredentials {
            appid: self.component_appid.clone(),
            token: self.component_token.clone(),
            encoding_aes_key: self.component_encoding_aes_key.clone(),
        });
        wxcm_http::WechatSettings {
            body_bytes_max: self.callback_body_bytes_max,
            timestamp_window_s: self.timestamp_window_s,
            reply_budget_ms: self.reply_budget_ms,
            require_safe_mode: self.require_safe_mode,
            component,
            ..wxcm_http::WechatSettings::default()
        }
    }

    pub fn client_config(&self) -> wxcm_outbound::wechat::http::ClientConfig {
        wxcm_outbound::wechat::http::ClientConfig {
            api_base: self.api_base.clone(),
            open_base: self.open_base.clone(),
            mp_base: self.mp_base.clone(),
            request_timeout_ms: self.request_timeout_ms,
            calls_per_second_per_appid: self.calls_per_second_per_appid,
            ..wxcm_outbound::wechat::http::ClientConfig::default()
        }
    }
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
    /// Reverse proxies (addresses or CIDR blocks) whose `X-Forwarded-For` is
    /// believed: the client address (login rate limits, WeChat Pay's payer IP)
    /// is then the nearest untrusted hop. Empty: the peer address.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
}

/// At most this many trusted proxy entries (each request may test them all).
pub const TRUSTED_PROXIES_MAX: usize = 64;

impl HttpConfig {
    /// `trusted_proxies` parsed; an address is its own /32 or /128 block.
    pub fn trusted_proxy_nets(&self) -> Result<Vec<ipnet::IpNet>, ConfigError> {
        if self.trusted_proxies.len() > TRUSTED_PROXIES_MAX {
            return Err(ConfigError::Invalid(format!("http.trusted_proxies: at most {TRUSTED_PROXIES_MAX} entries")));
        }
        self.trusted_proxies
            .iter()
            .map(|entry| {
                entry
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| entry.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        ConfigError::Invalid(format!(
                            "http.trusted_proxies: {entry:?} is not an IP address or CIDR block"
                        ))
                    })
            })
            .collect()
    }
}

/// `Debug` hides the passwords of the connection URLs.
#[derive(Clone, Serialize, Deserialize)]
pub struct ShardConfig {
    /// The application's connection (role `wxcm_app`: no UPDATE/DELETE on events).
    pub url: String,
    /// The owner's connection, used only by `wxcm migrate` and operator tools;
    /// `url` when not given.
    #[serde(default)]
    pub admin_url: String,
    #[serde(default = "ShardConfig::pool_max_default")]
    pub pool_max: u32,
    #[serde(default = "ShardConfig::aggregate_cache_entries_default")]
    pub aggregate_cache_entries: usize,
    /// Group-commit statements in flight at once (see `wxcm_store::group_commit`).
    #[serde(default = "ShardConfig::group_commit_workers_default")]
    pub group_commit_workers: usize,
}

impl fmt::Debug for ShardConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardConfig")
            .field("url", &url_for_debug(&self.url))
            .field("admin_url", &url_for_debug(&self.admin_url))
            .field("pool_max", &self.pool_max)
            .field("aggregate_cache_entries", &self.aggregate_cache_entries)
            .field("group_commit_workers", &self.group_commit_workers)
            .finish()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SchedulerConfig {
    pub interval_ms: u64,
}

/// `Debug` hides the password of the server URL.
#[derive(Clone, Serialize, Deserialize)]
pub struct NatsConfig {
    /// Seed servers: one URL, several separated by commas, or (in a file) a
    /// list. The client connects to any that answers and learns the rest of
    /// the cluster from it.
    #[serde(deserialize_with = "urls_from_text_or_list")]
    pub url: String,
    /// First subject token and stream name prefix (`wxcm` → subjects `wxcm.events.>`,
    /// stream `WXCM_EVENTS`). Tests use their own to run in parallel.
    pub stream_prefix: String,
    /// Published outbox rows are deleted after this long (see `relay::ShardRelay::prune`).
    #[serde(default = "NatsConfig::outbox_retention_hours_default")]
    pub outbox_retention_hours: u64,
    /// Outbox rows read, published (pipelined) and marked per relay step.
    #[serde(default = "NatsConfig::relay_batch_max_default")]
    pub relay_batch_max: u32,
    /// Pause between relay steps when the outbox is drained.
    #[serde(default = "NatsConfig::relay_interval_ms_default")]
    pub relay_interval_ms: u64,
    /// Replicas of the events stream (1 for a single server, 3 for a
    /// three-node cluster). Raised on an existing stream when configured
    /// higher; never lowered: an operator's higher count is kept.
    #[serde(default = "NatsConfig::stream_replicas_default")]
    pub stream_replicas: usize,
}

/// A list of URLs becomes the comma-separated form `url` keeps.
fn urls_from_text_or_list<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Urls {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Urls::deserialize(deserializer)? {
        Urls::One(text) => text,
        Urls::Many(list) => list.join(","),
    })
}

impl fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsConfig")
            .field("url", &self.servers_for_display())
            .field("stream_prefix", &self.stream_prefix)
            .field("outbox_retention_hours", &self.outbox_retention_hours)
            .field("relay_batch_max", &self.relay_batch_max)
            .field("relay_interval_ms", &self.relay_interval_ms)
            .field("stream_replicas", &self.stream_replicas)
            .finish()
    }
}

/// Upper bound of `nats.relay_batch_max` (acks in flight per step).
pub const RELAY_BATCH_LIMIT: u32 = 2_000;
/// Upper bound of `nats.outbox_retention_hours` (one year).
pub const OUTBOX_RETENTION_HOURS_LIMIT: u64 = 24 * 366;
/// Longest `nats.stream_prefix` (it is also part of the stream name).
pub const STREAM_PREFIX_BYTES_MAX: usize = 32;
/// Most seed servers in `nats.url`.
pub const NATS_SEEDS_MAX: usize = 16;
/// JetStream allows at most five replicas.
pub const STREAM_REPLICAS_MAX: usize = 5;

impl NatsConfig {
    fn outbox_retention_hours_default() -> u64 {
        72
    }
    fn relay_batch_max_default() -> u32 {
        500
    }
    /// The relay's poll when idle (floored: a zero would spin).
    pub fn relay_interval(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.relay_interval_ms.max(10))
    }

    fn relay_interval_ms_default() -> u64 {
        200
    }

    fn stream_replicas_default() -> usize {
        1
    }

    /// The seed servers of `url`, parsed.
    pub fn servers(&self) -> Result<Vec<async_nats::ServerAddr>, ConfigError> {
        let seeds: Vec<&str> = self.url.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
        if seeds.is_empty() || seeds.len() > NATS_SEEDS_MAX {
            return Err(ConfigError::Invalid(format!("nats.url must name 1..={NATS_SEEDS_MAX} servers")));
        }
        seeds
            .into_iter()
            .map(|seed| {
                seed.parse::<async_nats::ServerAddr>().map_err(|_| {
                    ConfigError::Invalid(format!("nats.url: {} is not a NATS server URL", url_for_debug(seed)))
                })
            })
            .collect()
    }

    /// The seed servers for messages, passwords hidden.
    pub fn servers_for_display(&self) -> String {
        self.url.split(',').map(|s| url_for_debug(s.trim())).collect::<Vec<_>>().join(",")
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let prefix_ok = !self.stream_prefix.is_empty()
            && self.stream_prefix.len() <= STREAM_PREFIX_BYTES_MAX
            && self.stream_prefix.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !prefix_ok {
            return Err(ConfigError::Invalid(format!(
                "nats.stream_prefix must be 1..={STREAM_PREFIX_BYTES_MAX} of A-Z a-z 0-9 _ -"
            )));
        }
        if self.relay_batch_max == 0 || self.relay_batch_max > RELAY_BATCH_LIMIT {
            return Err(ConfigError::Invalid(format!("nats.relay_batch_max must be 1..={RELAY_BATCH_LIMIT}")));
        }
        if !(1..=STREAM_REPLICAS_MAX).contains(&self.stream_replicas) {
            return Err(ConfigError::Invalid(format!("nats.stream_replicas must be 1..={STREAM_REPLICAS_MAX}")));
        }
        self.servers()?;
        if self.outbox_retention_hours == 0 || self.outbox_retention_hours > OUTBOX_RETENTION_HOURS_LIMIT {
            return Err(ConfigError::Invalid(format!(
                "nats.outbox_retention_hours must be 1..={OUTBOX_RETENTION_HOURS_LIMIT}"
            )));
        }
        Ok(())
    }
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
                trusted_proxies: Vec::new(),
            },
            shards,
            tenant_shards: BTreeMap::new(),
            default_shard: "main".into(),
            limits: Limits::default(),
            scheduler: SchedulerConfig { interval_ms: 1000 },
            nats: NatsConfig {
                url: "nats://127.0.0.1:4222".into(),
                stream_prefix: "wxcm".into(),
                outbox_retention_hours: NatsConfig::outbox_retention_hours_default(),
                relay_batch_max: NatsConfig::relay_batch_max_default(),
                relay_interval_ms: NatsConfig::relay_interval_ms_default(),
                stream_replicas: NatsConfig::stream_replicas_default(),
            },
            secret_key_env: "WXCM_SECRET_KEY".into(),
            log_format: LogFormat::Text,
            wechat: WechatConfig::default(),
        }
    }
}

impl ShardConfig {
    /// A database on this machine's local Postgres.
    pub fn local(database: &str) -> Self {
        Self {
            url: format!("postgres://wxcm_app@127.0.0.1:5432/{database}"),
            admin_url: format!("postgres://postgres@127.0.0.1:5432/{database}"),
            pool_max: Self::pool_max_default(),
            aggregate_cache_entries: Self::aggregate_cache_entries_default(),
            group_commit_workers: Self::group_commit_workers_default(),
        }
    }

    fn group_commit_workers_default() -> usize {
        wxcm_store::group_commit::WORKERS_DEFAULT
    }

    fn pool_max_default() -> u32 {
        24
    }

    fn aggregate_cache_entries_default() -> usize {
        wxcm_store::store::CACHE_ENTRIES_DEFAULT
    }
}

/// `http://` + where the server listens, as a browser on this machine reaches it
/// (a wildcard address becomes 127.0.0.1).
fn base_url_of_listen(listen: &str) -> String {
    let reachable = match listen.rsplit_once(':') {
        Some(("0.0.0.0" | "[::]" | "::", port)) => format!("127.0.0.1:{port}"),
        _ => listen.to_owned(),
    };
    format!("http://{reachable}")
}

impl Settings {
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut base = Settings::default();
        base.shards.clear();
        // Unset, it follows http.listen (below), whatever port that names.
        base.wechat.public_base_url = String::new();
        let defaults = config::Config::try_from(&base)?;
        let mut builder = config::Config::builder().add_source(defaults);
        if let Some(path) = file {
            builder = builder.add_source(config::File::from(path).required(true));
        }
        builder = builder.add_source(config::Environment::with_prefix("WXCM").prefix_separator("_").separator("__"));
        let mut settings: Settings = builder.build()?.try_deserialize()?;
        if settings.shards.is_empty() {
            settings.shards = Settings::default().shards;
        }
        for shard in settings.shards.values_mut() {
            if shard.admin_url.is_empty() {
                shard.admin_url = shard.url.clone();
            }
        }
        if settings.wechat.public_base_url.is_empty() {
            settings.wechat.public_base_url = base_url_of_listen(&settings.http.listen);
        }
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
            let workers_max = wxcm_store::group_commit::WORKERS_MAX.min(shard.pool_max as usize);
            if !(1..=workers_max).contains(&shard.group_commit_workers) {
                return Err(ConfigError::Invalid(format!(
                    "shard {name}: group_commit_workers must be 1..={workers_max} (and at most pool_max)"
                )));
            }
        }
        if self.limits.amount_fen_max <= 0 || self.limits.points_max <= 0 {
            return Err(ConfigError::Invalid("limits must be positive".into()));
        }
        self.http.trusted_proxy_nets()?;
        self.nats.validate()?;
        self.wechat.validate()?;
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
    fn debug_of_settings_shows_no_secret() {
        let mut s = Settings::default();
        s.wechat.component_appid = "wxcomponent1".into();
        s.wechat.component_token = "TOKEN-CANARY".into();
        s.wechat.component_encoding_aes_key = "AES-KEY-CANARY".into();
        s.wechat.component_app_secret = "SECRET-CANARY".into();
        s.nats.url = "nats://relay:NATS-CANARY@nats.internal:4222".into();
        let shard = ShardConfig {
            url: "postgres://wxcm_app:PG-CANARY@db.internal:5432/wxcm?sslmode=require&password=PG-CANARY-2".into(),
            admin_url: "postgres://postgres:PG-CANARY-3@db.internal/wxcm".into(),
            ..ShardConfig::local("wxcm")
        };
        s.shards.insert("main".into(), shard);
        let debug = format!("{s:?}");
        assert!(!debug.contains("CANARY"), "{debug}");
        assert!(
            debug.contains("wxcomponent1")
                && debug.contains("postgres://wxcm_app:[redacted]@db.internal:5432/wxcm?[redacted]"),
            "{debug}"
        );
        assert_eq!(url_for_debug("postgres://wxcm_app@127.0.0.1:5432/wxcm"), "postgres://wxcm_app@127.0.0.1:5432/wxcm");
        assert_eq!(url_for_debug("not a url"), "not a url");
    }

    #[test]
    fn trusted_proxies_are_addresses_or_blocks() {
        let mut s = Settings::default();
        s.http.trusted_proxies = vec!["10.0.0.0/8".into(), "192.0.2.7".into(), "2001:db8::/32".into()];
        s.validate().unwrap();
        assert_eq!(s.http.trusted_proxy_nets().unwrap().len(), 3);
        s.http.trusted_proxies.push("proxy.local".into());
        assert!(s.validate().is_err());
        s.http.trusted_proxies = vec!["10.0.0.1".into(); TRUSTED_PROXIES_MAX + 1];
        assert!(s.validate().is_err());
    }

    #[test]
    fn defaults_are_valid_and_env_overrides() {
        Settings::default().validate().unwrap();
        let s = Settings::load(None).unwrap();
        assert_eq!(s.default_shard, "main");
        assert_eq!(s.shard_of("anyone"), "main");
        assert!(s.shards.contains_key("main"));
    }

    #[test]
    fn a_file_naming_shards_replaces_the_builtin_one() {
        let mut custom = Settings::default();
        custom.shards.clear();
        custom.shards.insert("s0".into(), ShardConfig::local("elsewhere"));
        custom.default_shard = "s0".into();
        let path = std::env::temp_dir().join(format!("wxcm-config-test-{}.json", std::process::id()));
        std::fs::write(&path, serde_json::to_string(&custom).unwrap()).unwrap();
        let loaded = Settings::load(Some(&path)).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(loaded.shards.keys().collect::<Vec<_>>(), vec!["s0"]);
    }

    #[test]
    fn a_shard_needs_only_its_url_and_the_public_url_follows_the_listen_address() {
        let path = std::env::temp_dir().join(format!("wxcm-config-min-{}.toml", std::process::id()));
        let toml = "default_shard = \"s0\"\n[http]\nlisten = \"0.0.0.0:9090\"\n\
                    [shards.s0]\nurl = \"postgres://wxcm_app@db1/wxcm\"\n";
        std::fs::write(&path, toml).unwrap();
        let loaded = Settings::load(Some(&path));
        let _ = std::fs::remove_file(&path);
        let loaded = loaded.unwrap();
        let s0 = &loaded.shards["s0"];
        assert_eq!(s0.admin_url, s0.url, "admin_url defaults to url");
        assert_eq!((s0.pool_max, s0.aggregate_cache_entries), (24, wxcm_store::store::CACHE_ENTRIES_DEFAULT));
        assert_eq!(loaded.wechat.public_base_url, "http://127.0.0.1:9090");
        assert_eq!(base_url_of_listen("10.0.0.5:8081"), "http://10.0.0.5:8081");
        assert_eq!(base_url_of_listen("[::]:8082"), "http://127.0.0.1:8082");
    }

    #[test]
    fn relay_settings_are_bounded() {
        let mut s = Settings::default();
        s.nats.relay_batch_max = RELAY_BATCH_LIMIT;
        s.validate().unwrap();
        s.nats.relay_batch_max = RELAY_BATCH_LIMIT + 1;
        assert!(s.validate().is_err());
        let mut s = Settings::default();
        s.nats.stream_prefix = "a".repeat(STREAM_PREFIX_BYTES_MAX);
        s.validate().unwrap();
        s.nats.stream_prefix = "a".repeat(STREAM_PREFIX_BYTES_MAX + 1);
        assert!(s.validate().is_err());
        s.nats.stream_prefix = "wx.cm".into();
        assert!(s.validate().is_err(), "a dot would split the subject token");
        let mut s = Settings::default();
        s.nats.outbox_retention_hours = OUTBOX_RETENTION_HOURS_LIMIT;
        s.validate().unwrap();
        s.nats.outbox_retention_hours = OUTBOX_RETENTION_HOURS_LIMIT + 1;
        assert!(s.validate().is_err());
    }

    #[test]
    fn group_commit_workers_are_one_to_the_pool() {
        let with_workers = |workers: usize, pool_max: u32| {
            let mut s = Settings::default();
            let shard = ShardConfig { group_commit_workers: workers, pool_max, ..ShardConfig::local("wxcm") };
            s.shards.insert(s.default_shard.clone(), shard);
            s.validate()
        };
        assert!(with_workers(1, 24).is_ok());
        assert!(with_workers(wxcm_store::group_commit::WORKERS_MAX, 24).is_ok());
        assert!(with_workers(0, 24).is_err());
        assert!(with_workers(wxcm_store::group_commit::WORKERS_MAX + 1, 24).is_err());
        assert!(with_workers(4, 3).is_err(), "each worker holds a connection");
        assert_eq!(ShardConfig::local("wxcm").group_commit_workers, wxcm_store::group_commit::WORKERS_DEFAULT);
    }

    #[test]
    fn unknown_shard_in_map_is_refused() {
        let mut s = Settings::default();
        s.tenant_shards.insert("acme".into(), "nowhere".into());
        assert!(s.validate().is_err());
    }

    #[test]
    fn nats_takes_a_list_of_seed_servers_in_a_file_or_comma_separated() {
        let dir = std::env::temp_dir().join(format!("wxcm-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("seeds.toml");
        std::fs::write(
            &file,
            "[nats]\nurl = [\"nats://10.0.0.1:4222\", \"nats://u:SEED-CANARY@10.0.0.2:4222\", \"nats://10.0.0.3:4222\"]\nstream_prefix = \"wxcm\"\nstream_replicas = 3\n",
        )
        .unwrap();
        let settings = Settings::load(Some(&file)).unwrap();
        assert_eq!(settings.nats.servers().unwrap().len(), 3);
        assert_eq!(settings.nats.stream_replicas, 3);
        let debug = format!("{:?}", settings.nats);
        assert!(!debug.contains("SEED-CANARY") && debug.contains("10.0.0.3"), "{debug}");
        let _ = std::fs::remove_dir_all(&dir);

        let mut nats = Settings::default().nats;
        nats.url = "nats://a:4222, nats://b:4222".into();
        assert_eq!(nats.servers().unwrap().len(), 2);
        for bad in ["", " , ", "http://a:4222", "nats://a:notaport"] {
            nats.url = bad.into();
            assert!(nats.servers().is_err(), "{bad:?}");
        }
        nats.url = vec!["nats://a:4222"; NATS_SEEDS_MAX + 1].join(",");
        assert!(nats.servers().is_err(), "too many seeds");
    }

    #[test]
    fn stream_replicas_are_one_to_five() {
        let mut s = Settings::default();
        assert_eq!(s.nats.stream_replicas, 1, "a single server by default");
        for (replicas, ok) in [(0, false), (1, true), (3, true), (5, true), (6, false)] {
            s.nats.stream_replicas = replicas;
            assert_eq!(s.validate().is_ok(), ok, "{replicas}");
        }
    }
}
