//! WeChat Pay v3 (JSON API): notification signatures, AES-256-GCM resources,
//! the merchant `Authorization` header, JSAPI v3 pay parameters, PEM keys.
//!
//! Signatures are RSA PKCS#1 v1.5 with SHA-256 over newline-terminated lines:
//! notifications sign `timestamp\nnonce\nbody\n` with the platform key, merchant
//! requests sign `METHOD\nurl\ntimestamp\nnonce\nbody\n` with the merchant key.

use std::collections::{BTreeMap, HashMap};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use rsa::sha2::Sha256;
use rsa::traits::PublicKeyParts;
use serde::{Deserialize, Serialize};

pub use rsa::{PrivateKey, PublicKey};

use super::{jsapi_package, JsapiParams};

/// Signatures starting with this are Pay's probes: they must simply fail.
pub const SIGNTEST_PREFIX: &str = "WECHATPAY/SIGNTEST/";
/// A notification or request is refused when its timestamp is this far (or farther) from now.
pub const TIMESTAMP_SKEW_SECS_MAX: i64 = 300;
/// Scheme of the merchant `Authorization` header.
pub const AUTH_SCHEME: &str = "WECHATPAY2-SHA256-RSA2048";
/// The only resource algorithm Pay uses.
pub const RESOURCE_ALGORITHM: &str = "AEAD_AES_256_GCM";
/// Smallest RSA key accepted (Pay's keys are 2048 bits).
pub const RSA_KEY_BITS_MIN: usize = 2048;
/// Largest header value accepted (nonce, serial, timestamp, base64 signature).
pub const HEADER_CHARS_MAX: usize = 1024;
/// Largest resource ciphertext accepted, in base64 characters.
pub const RESOURCE_B64_CHARS_MAX: usize = 64 * 1024;
/// Largest PEM text accepted.
pub const PEM_CHARS_MAX: usize = 16 * 1024;
/// Length of an APIv3 key and of a resource nonce, in bytes.
pub const API_V3_KEY_BYTES: usize = 32;
pub const RESOURCE_NONCE_BYTES: usize = 12;
const GCM_TAG_BYTES: usize = 16;

/// Why a signature (notification or merchant request) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum V3Error {
    #[error("signature probe (WECHATPAY/SIGNTEST/) refused")]
    SignatureProbe,
    #[error("header {0} is missing, too long or malformed")]
    BadHeader(&'static str),
    #[error("timestamp is {skew_secs} s away from now (limit {TIMESTAMP_SKEW_SECS_MAX} s)")]
    StaleTimestamp { skew_secs: u64 },
    #[error("no platform key for the given serial")]
    UnknownSerial,
    #[error("signature is not valid base64")]
    SignatureEncoding,
    #[error("signature does not verify")]
    BadSignature,
}

/// Why an encrypted resource could not be produced or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    #[error("unsupported resource algorithm (expected AEAD_AES_256_GCM)")]
    Algorithm,
    #[error("resource nonce must be {RESOURCE_NONCE_BYTES} bytes")]
    NonceLength,
    #[error("resource ciphertext is {chars} characters, more than {max}")]
    TooLarge { chars: usize, max: usize },
    #[error("resource ciphertext is not valid base64 or shorter than the tag")]
    Encoding,
    #[error("resource does not authenticate (wrong key or tampered data)")]
    Authentication,
}

/// Why a key could not be loaded or used. Never carries key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("PEM text is longer than {PEM_CHARS_MAX} characters")]
    TooLarge,
    #[error("not a PKCS#8 (`BEGIN PRIVATE KEY`) or PKCS#1 (`BEGIN RSA PRIVATE KEY`) RSA private key")]
    PrivateKeyPem,
    #[error("not an SPKI (`BEGIN PUBLIC KEY`) RSA public key")]
    PublicKeyPem,
    #[error("RSA key has {bits} bits, fewer than {RSA_KEY_BITS_MIN}")]
    TooSmall { bits: usize },
    #[error("APIv3 key must be {API_V3_KEY_BYTES} bytes")]
    ApiV3KeyLength,
    #[error("RSA signing failed")]
    Signing,
    #[error("{0} contains characters not allowed in a header value")]
    HeaderValue(&'static str),
}

/// The signature headers of a v3 notification (`Wechatpay-Timestamp`,
/// `Wechatpay-Nonce`, `Wechatpay-Signature`, `Wechatpay-Serial`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V3Headers {
    pub timestamp: String,
    pub nonce: String,
    pub signature_b64: String,
    pub serial: String,
}

/// Platform public keys by serial (certificate serial or public-key id).
pub trait PlatformKeys {
    fn key_for_serial(&self, serial: &str) -> Option<&PublicKey>;
}

impl PlatformKeys for HashMap<String, PublicKey> {
    fn key_for_serial(&self, serial: &str) -> Option<&PublicKey> {
        self.get(serial)
    }
}

impl PlatformKeys for BTreeMap<String, PublicKey> {
    fn key_for_serial(&self, serial: &str) -> Option<&PublicKey> {
        self.get(serial)
    }
}

/// Loads an RSA private key (PKCS#8, or legacy PKCS#1) of at least 2048 bits.
pub fn load_private_key_pem(pem: &str) -> Result<PrivateKey, KeyError> {
    if pem.len() > PEM_CHARS_MAX {
        return Err(KeyError::TooLarge);
    }
    let key = PrivateKey::from_pkcs8_pem(pem)
        .or_else(|_| PrivateKey::from_pkcs1_pem(pem))
        .map_err(|_| KeyError::PrivateKeyPem)?;
    check_bits(key.size())?;
    Ok(key)
}

/// Loads an RSA public key (SPKI PEM, as Pay's platform public key is
/// distributed) of at least 2048 bits.
pub fn load_public_key_pem(pem: &str) -> Result<PublicKey, KeyError> {
    if pem.len() > PEM_CHARS_MAX {
        return Err(KeyError::TooLarge);
    }
    let key = PublicKey::from_public_key_pem(pem).map_err(|_| KeyError::PublicKeyPem)?;
    check_bits(key.size())?;
    Ok(key)
}

fn check_bits(size_bytes: usize) -> Result<(), KeyError> {
    let bits = size_bytes * 8;
    if bits < RSA_KEY_BITS_MIN {
        return Err(KeyError::TooSmall { bits });
    }
    Ok(())
}

/// The APIv3 key as bytes (it is configured as 32 ASCII characters).
pub fn api_v3_key(key: &str) -> Result<[u8; API_V3_KEY_BYTES], KeyError> {
    key.as_bytes().try_into().map_err(|_| KeyError::ApiV3KeyLength)
}

/// Base64 RSA-SHA256 (PKCS#1 v1.5) signature of `message`.
fn rsa_sign_b64(private_key: &PrivateKey, message: &[u8]) -> Result<String, KeyError> {
    let signature = private_key.pkcs1v15_sign::<Sha256>(message).map_err(|_| KeyError::Signing)?;
    Ok(BASE64.encode(signature))
}

/// Verifies a base64 RSA-SHA256 (PKCS#1 v1.5) signature of `message`.
fn rsa_verify_b64(public_key: &PublicKey, message: &[u8], signature_b64: &str) -> Result<(), V3Error> {
    if signature_b64.len() > HEADER_CHARS_MAX {
        return Err(V3Error::BadHeader("signature"));
    }
    let signature = BASE64.decode(signature_b64).map_err(|_| V3Error::SignatureEncoding)?;
    public_key.pkcs1v15_verify::<Sha256>(message, &signature).map_err(|_| V3Error::BadSignature)
}

/// Parses a decimal Unix timestamp and checks it is less than
/// [`TIMESTAMP_SKEW_SECS_MAX`] from `now_unix`, in either direction.
fn check_timestamp(timestamp: &str, now_unix: i64) -> Result<(), V3Error> {
    // Digits only (no sign, no spaces): the value is also part of the signed message.
    if timestamp.is_empty() || timestamp.len() > 12 || !timestamp.bytes().all(|b| b.is_ascii_digit()) {
        return Err(V3Error::BadHeader("timestamp"));
    }
    let ts: i64 = timestamp.parse().map_err(|_| V3Error::BadHeader("timestamp"))?;
    let skew_secs = now_unix.abs_diff(ts);
    if skew_secs >= TIMESTAMP_SKEW_SECS_MAX.unsigned_abs() {
        return Err(V3Error::StaleTimestamp { skew_secs });
    }
    Ok(())
}

/// A nonce that cannot break the line structure of a signed message.
fn check_nonce(nonce: &str) -> Result<(), V3Error> {
    if nonce.is_empty() || nonce.len() > HEADER_CHARS_MAX || !nonce.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(V3Error::BadHeader("nonce"));
    }
    Ok(())
}

/// `l1\nl2\n…\n` over raw bytes (the body is signed as received, not re-encoded).
fn signed_message(lines: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for line in lines {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out
}

/// Verifies the platform signature of a v3 notification over the raw `body`.
/// Checks, in order: probe signatures, header shapes, timestamp freshness,
/// the serial's key, then the signature itself.
pub fn verify_notification(
    headers: &V3Headers,
    body: &[u8],
    platform_keys: &impl PlatformKeys,
    now_unix: i64,
) -> Result<(), V3Error> {
    if headers.signature_b64.starts_with(SIGNTEST_PREFIX) {
        return Err(V3Error::SignatureProbe);
    }
    check_nonce(&headers.nonce)?;
    check_timestamp(&headers.timestamp, now_unix)?;
    if headers.serial.is_empty() || headers.serial.len() > HEADER_CHARS_MAX {
        return Err(V3Error::BadHeader("serial"));
    }
    let key = platform_keys.key_for_serial(&headers.serial).ok_or(V3Error::UnknownSerial)?;
    let message = signed_message(&[headers.timestamp.as_bytes(), headers.nonce.as_bytes(), body]);
    rsa_verify_b64(key, &message, &headers.signature_b64)
}

/// The platform signature of a notification (for the simulator): the value of
/// `Wechatpay-Signature`.
pub fn sign_message(private_key: &PrivateKey, timestamp: &str, nonce: &str, body: &[u8]) -> Result<String, KeyError> {
    rsa_sign_b64(private_key, &signed_message(&[timestamp.as_bytes(), nonce.as_bytes(), body]))
}

fn gcm(api_v3_key: &[u8; API_V3_KEY_BYTES]) -> Aes256Gcm {
    Aes256Gcm::new(api_v3_key.into())
}

fn resource_nonce(nonce: &str) -> Result<Nonce<aes_gcm::aead::consts::U12>, ResourceError> {
    let bytes: [u8; RESOURCE_NONCE_BYTES] = nonce.as_bytes().try_into().map_err(|_| ResourceError::NonceLength)?;
    Ok(Nonce::from(bytes))
}

/// Opens an `AEAD_AES_256_GCM` resource: key = APIv3 key bytes, nonce and AAD =
/// UTF-8 of `nonce` and `associated_data`, tag = the last 16 ciphertext bytes.
pub fn decrypt_resource(
    api_v3_key: &[u8; API_V3_KEY_BYTES],
    nonce: &str,
    associated_data: &str,
    ciphertext_b64: &str,
) -> Result<Vec<u8>, ResourceError> {
    if ciphertext_b64.len() > RESOURCE_B64_CHARS_MAX {
        return Err(ResourceError::TooLarge { chars: ciphertext_b64.len(), max: RESOURCE_B64_CHARS_MAX });
    }
    let nonce = resource_nonce(nonce)?;
    let ciphertext = BASE64.decode(ciphertext_b64).map_err(|_| ResourceError::Encoding)?;
    if ciphertext.len() < GCM_TAG_BYTES {
        return Err(ResourceError::Encoding);
    }
    gcm(api_v3_key)
        .decrypt(&nonce, Payload { msg: &ciphertext, aad: associated_data.as_bytes() })
        .map_err(|_| ResourceError::Authentication)
}

/// Seals a resource as Pay does (for the simulator): base64 of ciphertext ‖ tag.
pub fn encrypt_resource(
    api_v3_key: &[u8; API_V3_KEY_BYTES],
    nonce: &str,
    associated_data: &str,
    plaintext: &[u8],
) -> Result<String, ResourceError> {
    let nonce = resource_nonce(nonce)?;
    let sealed = gcm(api_v3_key)
        .encrypt(&nonce, Payload { msg: plaintext, aad: associated_data.as_bytes() })
        .map_err(|_| ResourceError::Authentication)?;
    let b64 = BASE64.encode(sealed);
    if b64.len() > RESOURCE_B64_CHARS_MAX {
        return Err(ResourceError::TooLarge { chars: b64.len(), max: RESOURCE_B64_CHARS_MAX });
    }
    Ok(b64)
}

/// A v3 notification body. Unknown fields are ignored: Pay adds fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationEnvelope {
    pub id: String,
    pub create_time: String,
    /// `TRANSACTION.SUCCESS`, `REFUND.SUCCESS`, `REFUND.ABNORMAL`, `REFUND.CLOSED`, …
    pub event_type: String,
    /// `encrypt-resource`.
    pub resource_type: String,
    pub resource: EncryptedResource,
    #[serde(default)]
    pub summary: String,
}

/// The encrypted `resource` of a notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedResource {
    pub algorithm: String,
    pub ciphertext: String,
    #[serde(default)]
    pub associated_data: String,
    /// `transaction`, `refund`, …
    pub original_type: String,
    pub nonce: String,
}

impl EncryptedResource {
    /// Decrypts this resource after checking its algorithm.
    pub fn decrypt(&self, api_v3_key: &[u8; API_V3_KEY_BYTES]) -> Result<Vec<u8>, ResourceError> {
        if self.algorithm != RESOURCE_ALGORITHM {
            return Err(ResourceError::Algorithm);
        }
        decrypt_resource(api_v3_key, &self.nonce, &self.associated_data, &self.ciphertext)
    }
}

/// The decrypted resource of a `TRANSACTION.*` notification. Amounts in fen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionResource {
    pub appid: String,
    pub mchid: String,
    pub out_trade_no: String,
    pub transaction_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trade_type: Option<String>,
    /// `SUCCESS`, `REFUND`, `NOTPAY`, `CLOSED`, `REVOKED`, `USERPAYING`, `PAYERROR`.
    pub trade_state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trade_state_desc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bank_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach: Option<String>,
    /// RFC 3339 with offset, e.g. `2018-06-08T10:34:56+08:00`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_time: Option<String>,
    pub amount: TransactionAmount,
    pub payer: Payer,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionAmount {
    #[serde(rename = "total")]
    pub total_fen: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "payer_total")]
    pub payer_total_fen: Option<i64>,
    pub currency: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_currency: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payer {
    pub openid: String,
}

/// The decrypted resource of a `REFUND.*` notification. Amounts in fen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundResource {
    pub mchid: String,
    pub out_trade_no: String,
    pub transaction_id: String,
    pub out_refund_no: String,
    pub refund_id: String,
    /// `SUCCESS`, `CLOSED`, `ABNORMAL`.
    pub refund_status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_received_account: Option<String>,
    pub amount: RefundAmount,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundAmount {
    #[serde(rename = "total")]
    pub total_fen: i64,
    #[serde(rename = "refund")]
    pub refund_fen: i64,
    #[serde(rename = "payer_total")]
    pub payer_total_fen: i64,
    #[serde(rename = "payer_refund")]
    pub payer_refund_fen: i64,
}

// ---------------------------------------------------------------- merchant transfers (商家转账到零钱)
//
// `POST /v3/transfer/batches` creates a batch of transfers to users' WeChat
// change; `GET /v3/transfer/batches/out-batch-no/{out_batch_no}/details/out-detail-no/{out_detail_no}`
// reads one transfer; `MCHTRANSFER.BATCH.FINISHED` / `MCHTRANSFER.BATCH.CLOSED`
// notifications carry a [`TransferBatchResource`]. See ARCHITECTURE.md
// "WeChat Pay transfers" for the protocol facts.

/// The path of the transfer batch endpoint.
pub const TRANSFER_BATCHES_PATH: &str = "/v3/transfer/batches";

/// The path of one transfer's detail, by the merchant's numbers.
pub fn transfer_detail_path(out_batch_no: &str, out_detail_no: &str) -> String {
    format!("{TRANSFER_BATCHES_PATH}/out-batch-no/{out_batch_no}/details/out-detail-no/{out_detail_no}")
}

/// The body of `POST /v3/transfer/batches`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferBatchRequest {
    pub appid: String,
    /// 5..=32 letters and digits, unique per merchant.
    pub out_batch_no: String,
    /// ≤ 32 characters.
    pub batch_name: String,
    /// ≤ 32 characters.
    pub batch_remark: String,
    /// Fen; the sum of the details.
    pub total_amount: i64,
    /// 1..=1000 details.
    pub total_num: i64,
    pub transfer_detail_list: Vec<TransferDetailInput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer_scene_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferDetailInput {
    /// 5..=32 letters and digits, unique per merchant.
    pub out_detail_no: String,
    /// Fen.
    pub transfer_amount: i64,
    /// ≤ 32 characters, shown to the user.
    pub transfer_remark: String,
    pub openid: String,
    /// Encrypted with the platform key; required from 2,000 yuan (never sent here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
}

/// The answer of `POST /v3/transfer/batches` (HTTP 200).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferBatchAccepted {
    pub out_batch_no: String,
    pub batch_id: String,
    pub create_time: String,
    /// `ACCEPTED` (newer answers may add `batch_status`; absent in older ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_status: Option<String>,
}

/// One transfer as `GET …/details/out-detail-no/{out_detail_no}` answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferDetail {
    pub mchid: String,
    pub out_batch_no: String,
    pub batch_id: String,
    pub appid: String,
    pub out_detail_no: String,
    pub detail_id: String,
    /// `INIT`, `WAIT_PAY`, `PROCESSING`, `SUCCESS`, `FAIL`.
    pub detail_status: String,
    pub transfer_amount: i64,
    pub transfer_remark: String,
    /// Set when `FAIL` (e.g. `ACCOUNT_FROZEN`, `REAL_NAME_CHECK_FAIL`, `NAME_NOT_CORRECT`, `OPENID_INVALID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_reason: Option<String>,
    pub openid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    pub initiate_time: String,
    pub update_time: String,
}

/// The decrypted resource of a `MCHTRANSFER.BATCH.*` notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferBatchResource {
    pub mchid: String,
    pub out_batch_no: String,
    pub batch_id: String,
    /// `FINISHED` or `CLOSED`.
    pub batch_status: String,
    pub total_num: i64,
    pub total_amount: i64,
    #[serde(default)]
    pub success_amount: i64,
    #[serde(default)]
    pub success_num: i64,
    #[serde(default)]
    pub fail_amount: i64,
    #[serde(default)]
    pub fail_num: i64,
    pub update_time: String,
    /// `CLOSED` only: `OVERDUE_CLOSE`, `TRANSFER_SCENE_INVALID`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_reason: Option<String>,
}

/// Header values are written between double quotes: refuse anything that
/// could break out of them.
fn check_header_value(value: &str, what: &'static str) -> Result<(), KeyError> {
    if value.is_empty()
        || value.len() > HEADER_CHARS_MAX
        || !value.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b',')
    {
        return Err(KeyError::HeaderValue(what));
    }
    Ok(())
}

/// The `Authorization` header of an outbound v3 request, signed with the
/// merchant private key over `METHOD\nurl\ntimestamp\nnonce\nbody\n` (`body`
/// empty for GET). `url_path_with_query` is e.g. `/v3/pay/transactions/jsapi`.
#[allow(clippy::too_many_arguments)] // each part is a distinct protocol field
pub fn authorization_header(
    mchid: &str,
    serial_no: &str,
    private_key: &PrivateKey,
    method: &str,
    url_path_with_query: &str,
    timestamp_unix: i64,
    nonce: &str,
    body: &str,
) -> Result<String, KeyError> {
    check_header_value(mchid, "mchid")?;
    check_header_value(serial_no, "serial_no")?;
    check_header_value(nonce, "nonce")?;
    let timestamp = timestamp_unix.to_string();
    let message = signed_message(&[
        method.as_bytes(),
        url_path_with_query.as_bytes(),
        timestamp.as_bytes(),
        nonce.as_bytes(),
        body.as_bytes(),
    ]);
    let signature = rsa_sign_b64(private_key, &message)?;
    Ok(format!(
        "{AUTH_SCHEME} mchid=\"{mchid}\",nonce_str=\"{nonce}\",signature=\"{signature}\",\
         timestamp=\"{timestamp}\",serial_no=\"{serial_no}\""
    ))
}

/// The parts of a merchant `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerchantAuthorization {
    pub mchid: String,
    pub nonce_str: String,
    pub signature_b64: String,
    pub timestamp: String,
    pub serial_no: String,
}

/// Parses `WECHATPAY2-SHA256-RSA2048 k="v",…` (the simulator's side of
/// [`authorization_header`]). All five parameters are required, once each.
pub fn parse_authorization_header(header: &str) -> Result<MerchantAuthorization, V3Error> {
    const BAD: V3Error = V3Error::BadHeader("authorization");
    if header.len() > 4 * HEADER_CHARS_MAX {
        return Err(BAD);
    }
    let params = header.strip_prefix(AUTH_SCHEME).and_then(|p| p.strip_prefix(' ')).ok_or(BAD)?;
    let mut found: BTreeMap<&str, &str> = BTreeMap::new();
    for part in params.split(',') {
        let (k, v) = part.trim().split_once('=').ok_or(BAD)?;
        let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).ok_or(BAD)?;
        if found.insert(k, v).is_some() {
            return Err(BAD);
        }
    }
    let mut take = |k: &str| found.remove(k).map(str::to_owned).ok_or(BAD);
    let auth = MerchantAuthorization {
        mchid: take("mchid")?,
        nonce_str: take("nonce_str")?,
        signature_b64: take("signature")?,
        timestamp: take("timestamp")?,
        serial_no: take("serial_no")?,
    };
    if !found.is_empty() {
        return Err(BAD);
    }
    Ok(auth)
}

/// Verifies a parsed merchant authorization against the request it came with
/// and the merchant's public key (the simulator's side of [`authorization_header`]).
pub fn verify_authorization(
    auth: &MerchantAuthorization,
    merchant_key: &PublicKey,
    method: &str,
    url_path_with_query: &str,
    body: &[u8],
    now_unix: i64,
) -> Result<(), V3Error> {
    check_nonce(&auth.nonce_str)?;
    check_timestamp(&auth.timestamp, now_unix)?;
    let message = signed_message(&[
        method.as_bytes(),
        url_path_with_query.as_bytes(),
        auth.timestamp.as_bytes(),
        auth.nonce_str.as_bytes(),
        body,
    ]);
    rsa_verify_b64(merchant_key, &message, &auth.signature_b64)
}

/// The JSAPI pay parameters for a v3 prepay id, signed with the merchant key
/// over `appId\ntimeStamp\nnonceStr\npackage\n` (`signType` = `RSA`).
pub fn jsapi_params_v3(
    appid: &str,
    prepay_id: &str,
    private_key: &PrivateKey,
    timestamp_unix: i64,
    nonce: &str,
) -> Result<JsapiParams, KeyError> {
    let time_stamp = timestamp_unix.to_string();
    let package = jsapi_package(prepay_id);
    let message = signed_message(&[appid.as_bytes(), time_stamp.as_bytes(), nonce.as_bytes(), package.as_bytes()]);
    Ok(JsapiParams {
        app_id: appid.to_owned(),
        time_stamp,
        nonce_str: nonce.to_owned(),
        package,
        sign_type: "RSA".to_owned(),
        pay_sign: rsa_sign_b64(private_key, &message)?,
    })
}

/// Verifies the `paySign` of v3 JSAPI parameters (what the WeChat client checks).
pub fn verify_jsapi_params_v3(params: &JsapiParams, merchant_key: &PublicKey) -> Result<(), V3Error> {
    let message = signed_message(&[
        params.app_id.as_bytes(),
        params.time_stamp.as_bytes(),
        params.nonce_str.as_bytes(),
        params.package.as_bytes(),
    ]);
    rsa_verify_b64(merchant_key, &message, &params.pay_sign)
}

#[cfg(test)]
mod tests;
