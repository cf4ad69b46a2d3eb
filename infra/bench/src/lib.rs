//! Benchmark drivers behind `wxcm bench …` (the `wxcm-bench` binary):
//!
//! - [`ledger`]: command throughput of the ledger against raw-INSERT baselines;
//! - [`pipeline`]: commit → read model lag, and rebuild throughput;
//! - [`gateway`]: WeChat subscribe callbacks at a fixed rate and at saturation;
//! - [`pay`]: WeChat Pay paid notifications through the full path.
//!
//! Dev-only: nothing here is linked into the `wxcm` server.

pub mod gateway;
pub mod ledger;
pub mod pay;
pub mod pipeline;
