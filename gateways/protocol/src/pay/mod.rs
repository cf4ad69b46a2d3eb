//! WeChat Pay protocol crypto: pure functions, no I/O.
//!
//! - [`v2`]: the XML API — MD5 / HMAC-SHA256 field signatures, CDATA XML
//!   building, the notify replies, the refund `req_info` AES-256-ECB scheme and
//!   the JSAPI v2 pay parameters.
//! - [`v3`]: the JSON API — platform signatures on notifications (RSA PKCS#1
//!   v1.5 SHA-256), AES-256-GCM resources, the merchant `Authorization` header,
//!   the JSAPI v3 pay parameters and PEM key loading.
//!
//! Every check has its producing counterpart (`sign`/`verify`,
//! `encrypt_*`/`decrypt_*`, `sign_message`/`verify_notification`, ...) so the
//! Pay simulator sends exactly what the real Pay sends and the tests run both
//! directions. Errors never carry key material.

pub mod v2;
pub mod v3;

use serde::{Deserialize, Serialize};

/// The parameters a JSAPI page hands to `WeixinJSBridge.invoke('getBrandWCPayRequest', …)`
/// (or `wx.chooseWXPay`), serialized with the camelCase names the bridge expects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JsapiParams {
    pub app_id: String,
    /// Unix seconds, as a decimal string (the bridge wants a string).
    pub time_stamp: String,
    pub nonce_str: String,
    /// `prepay_id=<id>`.
    pub package: String,
    /// `MD5` or `HMAC-SHA256` (v2), `RSA` (v3).
    pub sign_type: String,
    pub pay_sign: String,
}

/// `package` value of the JSAPI parameters.
fn jsapi_package(prepay_id: &str) -> String {
    format!("prepay_id={prepay_id}")
}
