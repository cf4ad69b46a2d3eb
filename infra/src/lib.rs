//! Composition root: Postgres event store, shard map, configuration, roles,
//! audit and benchmarks. The `wxcm` binary (src/main.rs) is a thin CLI on top.

pub mod app;
pub mod audit;
pub mod batcher;
pub mod bench;
pub mod bench_gateway;
pub mod bench_pay;
pub mod bench_pipeline;
pub mod config;
pub mod group_commit;
pub mod hashchain;
pub mod migrate;
pub mod pay_store;
pub mod pg_ports;
pub mod projection_ops;
pub mod reconcile;
pub mod relay;
pub mod scheduler_role;
pub mod sealer;
pub mod shards;
pub mod store;
pub mod tokens;
pub mod wechat_store;
pub mod wechat_wiring;
