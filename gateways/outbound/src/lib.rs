//! Outbound calls to WeChat and WeChat Pay.
//!
//! - [`wechat`]: the WeChat API transport (base URLs, per-appid rate limit,
//!   retries, errcode mapping), its calls, and the cluster-wide token center;
//! - [`pay`]: the WeChat Pay v2/v3 client (`WechatPayClient`, the
//!   `PayGateway` port of `wxcm-commands`).
//!
//! - [`redact`]: transport errors as text without URLs (queries carry
//!   secrets and tokens).
//!
//! Boundaries: nothing here talks SQL or serves HTTP; protocol details come
//! from `wxcm-protocol`.

pub mod pay;
pub mod redact;
pub mod wechat;
