//! The application layer: runs commands on aggregates safely.
//!
//! - [`adapter`] wraps the pure domain aggregates into cqrs-es aggregates;
//! - [`executor::Executor`] adds idempotency by key, bounded retries on
//!   optimistic-concurrency conflicts and per-aggregate serialization;
//! - [`members`], [`payments`] and [`tenants`] are the use cases the edges call;
//!   [`ledger_requests`] are the member ledger operations as callers ask for
//!   them (what idempotency hashes);
//! - [`auth`] signs admins in; [`admin_users`] manages them (sessions end
//!   with a disable, a role change or a new password);
//! - [`mall`] runs the points mall: products and orders (processes over the
//!   product, the member ledger and the order);
//! - [`campaigns`]: campaign lifecycle, sealed seeds, member shakes and
//!   their prizes issued once;
//! - [`card_levels`]: the tenant's card level catalog and the rule's hook on
//!   member commands (upgrades decided with the grant that earns them);
//! - [`distribution`]: distribution settings, distributors, bindings under
//!   a per-tenant lock;
//! - [`ports`] are the traits the infrastructure implements (store, clock, ...).

pub mod adapter;
pub mod admin_users;
pub mod auth;
pub mod campaigns;
pub mod card_codes;
pub mod card_levels;
pub mod commissions;
pub mod coupons;
pub mod distribution;
pub mod executor;
pub mod failure;
pub mod health;
pub mod keyed_requests;
pub mod lanes;
pub mod ledger_requests;
pub mod mall;
pub mod members;
pub mod oplog;
pub mod pay_flows;
pub mod pay_port;
pub mod payments;
pub mod ports;
pub mod repository;
pub mod scheduler;
pub mod tenants;
pub mod wechat;

pub use executor::{CommandContext, Committed, ExecuteError, Executor, Outcome};
pub use ports::{App, Clock, Limits, ShardRouter, ShardServices, SystemClock};
