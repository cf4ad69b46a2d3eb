//! Postgres: the event store and everything else wxcm keeps in a shard's
//! database.
//!
//! - [`store`]: `PgEventStore`, the cqrs-es `EventStore` (state cache,
//!   snapshots, cold loads of snapshot + tail);
//! - [`group_commit`]: concurrent commands' events in one statement;
//! - [`batcher`]: small statements of concurrent callers as one;
//! - [`hashchain`], [`jsonb_text`]: the canonical bytes and verification of the per-stream
//!   SHA-256 chain (`schemas/event-hash-chain.md`);
//! - [`migrate`]: `schemas/migrations`, embedded;
//! - [`pg_ports`], [`pay_store`], [`tokens`], [`wechat_store`]: the ports of
//!   `wxcm-commands` and the token store of `wxcm-outbound`, over Postgres.

pub mod audit;
pub mod batcher;
pub mod campaign_store;
pub mod commission_store;
pub mod coupon_store;
pub mod dispatch_store;
pub mod distribution_store;
pub mod group_commit;
pub mod hashchain;
pub mod jsonb_text;
pub mod keyed_store;
pub mod mall_store;
pub mod migrate;
pub mod oplog_store;
pub mod pay_store;
pub mod pg_ports;
pub mod store;
pub mod tenant_settings;
pub mod tokens;
pub mod transient;
pub mod wechat_store;
