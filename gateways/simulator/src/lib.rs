//! The WeChat and WeChat Pay simulator: what wxcm talks to wherever WeChat's
//! servers cannot be reached (development, tests, benchmarks). It runs as its
//! own process (`wxcm-sim`), as the real WeChat would; nothing here is linked
//! into the `wxcm` server.
//!
//! - [`wechat`]: the WeChat API (tokens, menus, QR codes, messages, OAuth,
//!   the third-party platform chain), faults, the request log, and pushing
//!   signed and encrypted callbacks to a gateway;
//! - [`pay`]: WeChat Pay v2/v3 (orders, payments, refunds, notifications with
//!   retries) with its own platform key.
//!
//! [`router`] serves both on one listener, as `wxcm-sim` does.

pub mod pay;
pub mod wechat;

/// WeChat's API and WeChat Pay's on one router (WeChat's fallback answers
/// unknown paths in WeChat's error shape).
pub fn router(wechat: wechat::SandboxConfig, pay: pay::PaySandbox) -> axum::Router {
    pay::router(pay).merge(wechat::router(wechat))
}
