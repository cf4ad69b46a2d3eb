//! Benchmark drivers behind `wxcm bench …` (the `wxcm-bench` binary):
//!
//! - [`ledger`]: command throughput of the ledger against raw-INSERT baselines;
//! - [`pipeline`]: commit → read model lag, and rebuild throughput;
//! - [`gateway`]: WeChat subscribe callbacks at a fixed rate and at saturation;
//! - [`pay`]: WeChat Pay paid notifications through the full path;
//! - [`coupons`] and [`shake`]: one hot coupon template / shake lottery through
//!   the member API, with an exact sell-out;
//! - [`faults`]: the fault matrix (nodes killed, PostgreSQL and NATS restarted,
//!   a consumer deleted, a burst) over its own servers, as a soak.
//!
//! What they share: [`driver`] (closed and open loops, latencies, errors and
//! skipped ticks), [`setup`] (scratch database, application, tenant, machine,
//! the final JSON line and the exit status) and [`workload`] (member commands
//! and stream seeding). Each bench file holds only what it measures.
//!
//! Dev-only: nothing here is linked into the `wxcm` server.

pub mod browser;
pub mod console;
pub mod coupons;
pub mod driver;
pub mod faults;
pub mod gateway;
pub mod ledger;
pub mod pay;
pub mod pipeline;
pub mod setup;
pub mod shake;
pub mod workload;
