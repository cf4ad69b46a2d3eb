//! WeChat's protocols as pure code: no I/O, no HTTP, no async runtime. The
//! callback endpoints, the outbound clients and the simulator all build on it,
//! and `fuzz/` fuzzes it.
//!
//! - [`wechat`]: the official-account callback protocol (bounded XML reader,
//!   signatures and the safe-mode message crypt, typed messages, replies);
//! - [`pay`]: WeChat Pay v2/v3 crypto (signatures, `req_info` and resource
//!   ciphers, notification signatures, JSAPI pay parameters).

pub mod pay;
pub mod wechat;
