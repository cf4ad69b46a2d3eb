//! The server's wiring: configuration, the shard map, the roles a node runs
//! and [`app::Application::build`], the one way to start the system (used by
//! the `wxcm` binary, the benchmarks and the black-box tests).
//!
//! - [`config`]: `Settings` (defaults → TOML/JSON file → `WXCM_*` env);
//! - [`shards`]: tenant → shard database, pools, per-shard ports;
//! - [`sealer`]: AES-256-GCM secrets at rest;
//! - [`nats`]: connections to the configured NATS seed servers;
//! - [`relay`]: outbox → NATS JetStream, one leader per shard;
//! - [`scheduler_role`]: due work, one leader per shard;
//! - [`projection_ops`]: projector status, `/metrics`, rebuilds;
//! - [`wechat_wiring`]: token center, WeChat and Pay clients, OAuth.

pub mod app;
pub mod config;
pub mod nats;
pub mod projection_ops;
pub mod relay;
pub mod scheduler_role;
pub mod sealer;
pub mod shards;
pub mod wechat_wiring;
