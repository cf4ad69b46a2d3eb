//! WeChat Pay v2 (XML API): field signatures, CDATA XML, notify replies, the
//! refund `req_info` cipher and the JSAPI v2 pay parameters.
//!
//! Fields are a `BTreeMap<String, String>`: the XML parser (elsewhere) turns
//! `<xml>` into one, [`build_xml`] turns one back into `<xml>`.

use std::collections::BTreeMap;

use aes::cipher::{BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use aes::Aes256;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use md5::{Digest as _, Md5};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::{jsapi_package, JsapiParams};

/// Name of the signature field.
pub const SIGN_FIELD: &str = "sign";
/// Name of the field naming the signature algorithm (absent means MD5).
pub const SIGN_TYPE_FIELD: &str = "sign_type";
/// Body of the reply that tells Pay a notification was handled.
pub const REPLY_SUCCESS: &str =
    "<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[OK]]></return_msg></xml>";
/// Largest `req_info` accepted, in base64 characters (real ones are about 1 KiB).
pub const REQ_INFO_B64_CHARS_MAX: usize = 16 * 1024;

const AES_BLOCK_BYTES: usize = 16;

/// The v2 signature algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignType {
    Md5,
    HmacSha256,
}

impl SignType {
    /// The value of the `sign_type` field.
    pub fn as_str(self) -> &'static str {
        match self {
            SignType::Md5 => "MD5",
            SignType::HmacSha256 => "HMAC-SHA256",
        }
    }

    /// The algorithm named by a `sign_type` value; absent or empty means MD5
    /// (Pay omits the field for MD5).
    pub fn parse(value: Option<&str>) -> Result<Self, PaySignError> {
        match value {
            None | Some("") | Some("MD5") => Ok(SignType::Md5),
            Some("HMAC-SHA256") => Ok(SignType::HmacSha256),
            Some(_) => Err(PaySignError::UnsupportedSignType),
        }
    }

    /// The algorithm named by the `sign_type` field of `fields`.
    pub fn from_fields(fields: &BTreeMap<String, String>) -> Result<Self, PaySignError> {
        Self::parse(fields.get(SIGN_TYPE_FIELD).map(String::as_str))
    }
}

/// Why a v2 signature was refused. Never carries the key or the expected signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaySignError {
    #[error("the `sign` field is missing or empty")]
    MissingSign,
    #[error("unsupported sign_type (expected MD5 or HMAC-SHA256)")]
    UnsupportedSignType,
    #[error("the signature does not match")]
    Mismatch,
}

/// Why a refund `req_info` could not be decrypted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReqInfoError {
    #[error("req_info is {chars} characters, more than {max}")]
    TooLarge { chars: usize, max: usize },
    #[error("req_info is not valid base64")]
    Base64,
    #[error("req_info is not a whole number of AES blocks")]
    BlockLength,
    #[error("req_info padding is invalid (wrong key or tampered data)")]
    Padding,
    #[error("decrypted req_info is not UTF-8 XML")]
    NotXml,
}

/// `k1=v1&k2=v2&…&key=API_KEY` over the non-empty fields except `sign`, keys
/// in ASCII order (the `BTreeMap` order).
fn string_to_sign(fields: &BTreeMap<String, String>, api_key: &str) -> String {
    let mut out = String::new();
    for (k, v) in fields.iter().filter(|(k, v)| k.as_str() != SIGN_FIELD && !v.is_empty()) {
        out.push_str(k);
        out.push('=');
        out.push_str(v);
        out.push('&');
    }
    out.push_str("key=");
    out.push_str(api_key);
    out
}

/// The v2 signature of `fields` (uppercase hex).
pub fn sign(fields: &BTreeMap<String, String>, api_key: &str, sign_type: SignType) -> String {
    let message = string_to_sign(fields, api_key);
    match sign_type {
        SignType::Md5 => hex::encode_upper(Md5::digest(message.as_bytes())),
        SignType::HmacSha256 => {
            // HMAC accepts keys of any length, so this cannot fail.
            let mut mac = match Hmac::<Sha256>::new_from_slice(api_key.as_bytes()) {
                Ok(mac) => mac,
                Err(_) => unreachable!("HMAC takes keys of any length"),
            };
            mac.update(message.as_bytes());
            hex::encode_upper(mac.finalize().into_bytes())
        }
    }
}

/// Checks the `sign` field of `fields` with the algorithm named by `sign_type`,
/// in constant time. Check the business fields (appid, mch_id, amount) after this.
pub fn verify(fields: &BTreeMap<String, String>, api_key: &str) -> Result<(), PaySignError> {
    let received = match fields.get(SIGN_FIELD) {
        Some(s) if !s.is_empty() => s,
        _ => return Err(PaySignError::MissingSign),
    };
    let sign_type = SignType::from_fields(fields)?;
    let expected = sign(fields, api_key, sign_type);
    // Hex case carries no meaning; Pay sends uppercase.
    let received = received.to_ascii_uppercase();
    if bool::from(expected.as_bytes().ct_eq(received.as_bytes())) {
        Ok(())
    } else {
        Err(PaySignError::Mismatch)
    }
}

/// Whether `name` can be an element name as is (the v2 field names are ASCII
/// identifiers like `out_trade_no`).
fn is_plain_xml_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `<xml><k><![CDATA[v]]></k>…</xml>` in key order. A value containing `]]>`
/// is split over two CDATA sections so it cannot close the section early.
///
/// Field names are chosen by code, never by input: a name that is not a plain
/// identifier is a bug (debug builds panic; release builds leave the field
/// out, so the receiver's signature check fails loudly).
pub fn build_xml(fields: &BTreeMap<String, String>) -> String {
    let mut out = String::from("<xml>");
    for (k, v) in fields {
        debug_assert!(is_plain_xml_name(k), "field name {k:?} is not a plain XML name");
        if !is_plain_xml_name(k) {
            continue;
        }
        out.push('<');
        out.push_str(k);
        out.push_str("><![CDATA[");
        out.push_str(&v.replace("]]>", "]]]]><![CDATA[>"));
        out.push_str("]]></");
        out.push_str(k);
        out.push('>');
    }
    out.push_str("</xml>");
    out
}

/// The reply refusing a notification (Pay will retry it).
pub fn reply_fail(message: &str) -> String {
    let fields =
        BTreeMap::from([("return_code".to_owned(), "FAIL".to_owned()), ("return_msg".to_owned(), message.to_owned())]);
    build_xml(&fields)
}

/// The `req_info` AES-256 key: the lowercase hex MD5 of the API key, used as
/// its 32 ASCII bytes.
pub fn req_info_key(api_key: &str) -> [u8; 32] {
    let mut key = [0u8; 32];
    // 16 digest bytes are 32 hex digits: the lengths always match.
    let hex_digits = hex::encode(Md5::digest(api_key.as_bytes()));
    key.copy_from_slice(hex_digits.as_bytes());
    key
}

/// Decrypts the `req_info` of a v2 refund notification (base64 → AES-256-ECB →
/// PKCS#7) into its `<root>…</root>` XML.
///
/// ECB carries no integrity check: a wrong key or a tampered last block is
/// caught by the padding check most of the time, but not always. The caller
/// must parse the XML and match it against the stored refund before trusting it.
pub fn decrypt_req_info(req_info_b64: &str, api_key: &str) -> Result<String, ReqInfoError> {
    let req_info_b64 = req_info_b64.trim();
    if req_info_b64.len() > REQ_INFO_B64_CHARS_MAX {
        return Err(ReqInfoError::TooLarge { chars: req_info_b64.len(), max: REQ_INFO_B64_CHARS_MAX });
    }
    let mut data = BASE64.decode(req_info_b64).map_err(|_| ReqInfoError::Base64)?;
    if data.is_empty() || data.len() % AES_BLOCK_BYTES != 0 {
        return Err(ReqInfoError::BlockLength);
    }
    let cipher = Aes256::new(&req_info_key(api_key).into());
    for chunk in data.chunks_exact_mut(AES_BLOCK_BYTES) {
        cipher.decrypt_block(chunk.try_into().map_err(|_| ReqInfoError::BlockLength)?);
    }
    let plain_len = pkcs7_unpadded_len(&data).ok_or(ReqInfoError::Padding)?;
    data.truncate(plain_len);
    let xml = String::from_utf8(data).map_err(|_| ReqInfoError::NotXml)?;
    if !xml.trim_start().starts_with('<') {
        return Err(ReqInfoError::NotXml);
    }
    Ok(xml)
}

/// Encrypts `xml` as Pay does for a refund notification's `req_info` (for the simulator).
pub fn encrypt_req_info(xml: &str, api_key: &str) -> String {
    let pad = AES_BLOCK_BYTES - xml.len() % AES_BLOCK_BYTES;
    let mut data = Vec::with_capacity(xml.len() + pad);
    data.extend_from_slice(xml.as_bytes());
    // pad is 1..=16, so it fits in a byte.
    data.resize(xml.len() + pad, pad as u8);
    let cipher = Aes256::new(&req_info_key(api_key).into());
    for chunk in data.chunks_exact_mut(AES_BLOCK_BYTES) {
        if let Ok(block) = chunk.try_into() {
            cipher.encrypt_block(block);
        }
    }
    BASE64.encode(data)
}

/// Length of `data` without its PKCS#7 padding (block 16), or `None` if the
/// padding is malformed. Every pad byte is checked.
fn pkcs7_unpadded_len(data: &[u8]) -> Option<usize> {
    let pad = usize::from(*data.last()?);
    if pad == 0 || pad > AES_BLOCK_BYTES || pad > data.len() {
        return None;
    }
    let (plain, padding) = data.split_at(data.len() - pad);
    padding.iter().all(|&b| usize::from(b) == pad).then_some(plain.len())
}

/// The JSAPI pay parameters signed with the v2 API key.
pub fn jsapi_params_v2(
    appid: &str,
    prepay_id: &str,
    api_key: &str,
    sign_type: SignType,
    timestamp_unix: i64,
    nonce: &str,
) -> JsapiParams {
    let time_stamp = timestamp_unix.to_string();
    let package = jsapi_package(prepay_id);
    let fields = BTreeMap::from([
        ("appId".to_owned(), appid.to_owned()),
        ("timeStamp".to_owned(), time_stamp.clone()),
        ("nonceStr".to_owned(), nonce.to_owned()),
        ("package".to_owned(), package.clone()),
        ("signType".to_owned(), sign_type.as_str().to_owned()),
    ]);
    JsapiParams {
        app_id: appid.to_owned(),
        time_stamp,
        nonce_str: nonce.to_owned(),
        package,
        sign_type: sign_type.as_str().to_owned(),
        pay_sign: sign(&fields, api_key, sign_type),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    const V5_KEY: &str = "192006250b4c09247ec02edce69f6a2d";
    const V5_MD5: &str = "9A0A8659F005D6984697E2CA0A9CF3B7";
    const V5_HMAC: &str = "6A9AE1657590FD6257D693A078E1C3E4BB6BA4DC30B23E0EE2496E54170DACD6";

    fn v5_fields() -> BTreeMap<String, String> {
        fields(&[
            ("appid", "wxd930ea5d5a258f4f"),
            ("mch_id", "10000100"),
            ("device_info", "1000"),
            ("body", "test"),
            ("nonce_str", "ibuaiVcKdpRxkhJA"),
        ])
    }

    #[test]
    fn v5_md5_and_hmac_vectors() {
        assert_eq!(sign(&v5_fields(), V5_KEY, SignType::Md5), V5_MD5);
        assert_eq!(sign(&v5_fields(), V5_KEY, SignType::HmacSha256), V5_HMAC);
    }

    #[test]
    fn sign_skips_empty_fields_and_the_sign_field() {
        let mut with_extra = v5_fields();
        with_extra.insert("attach".into(), String::new());
        with_extra.insert("sign".into(), "WHATEVER".into());
        assert_eq!(sign(&with_extra, V5_KEY, SignType::Md5), V5_MD5);
    }

    #[test]
    fn verify_accepts_both_algorithms() {
        let mut md5 = v5_fields();
        md5.insert("sign".into(), V5_MD5.into());
        assert_eq!(verify(&md5, V5_KEY), Ok(()));
        // sign_type=MD5 is one of the signed fields: the V5 signature no longer matches.
        md5.insert("sign_type".into(), "MD5".into());
        assert_eq!(verify(&md5, V5_KEY), Err(PaySignError::Mismatch));
        let resigned = sign(&md5, V5_KEY, SignType::Md5);
        md5.insert("sign".into(), resigned);
        assert_eq!(verify(&md5, V5_KEY), Ok(()));

        let mut hmac = v5_fields();
        hmac.insert("sign_type".into(), "HMAC-SHA256".into());
        let s = sign(&hmac, V5_KEY, SignType::HmacSha256);
        hmac.insert("sign".into(), s.to_ascii_lowercase());
        assert_eq!(verify(&hmac, V5_KEY), Ok(()));
    }

    #[test]
    fn verify_refuses_missing_wrong_and_tampered() {
        assert_eq!(verify(&v5_fields(), V5_KEY), Err(PaySignError::MissingSign));
        let mut f = v5_fields();
        f.insert("sign".into(), String::new());
        assert_eq!(verify(&f, V5_KEY), Err(PaySignError::MissingSign));

        f.insert("sign".into(), V5_MD5.into());
        assert_eq!(verify(&f, "another-key"), Err(PaySignError::Mismatch));
        f.insert("body".into(), "test2".into());
        assert_eq!(verify(&f, V5_KEY), Err(PaySignError::Mismatch));

        // An MD5 signature presented as HMAC (or the reverse) does not pass.
        let mut g = v5_fields();
        g.insert("sign".into(), V5_MD5.into());
        g.insert("sign_type".into(), "HMAC-SHA256".into());
        assert_eq!(verify(&g, V5_KEY), Err(PaySignError::Mismatch));
        g.insert("sign_type".into(), "SHA1".into());
        assert_eq!(verify(&g, V5_KEY), Err(PaySignError::UnsupportedSignType));
    }

    #[test]
    fn sign_type_parse() {
        assert_eq!(SignType::parse(None), Ok(SignType::Md5));
        assert_eq!(SignType::parse(Some("")), Ok(SignType::Md5));
        assert_eq!(SignType::parse(Some("MD5")), Ok(SignType::Md5));
        assert_eq!(SignType::parse(Some("HMAC-SHA256")), Ok(SignType::HmacSha256));
        assert_eq!(SignType::parse(Some("hmac-sha256")), Err(PaySignError::UnsupportedSignType));
    }

    #[test]
    fn build_xml_wraps_in_cdata_and_escapes_the_terminator() {
        let xml = build_xml(&fields(&[("b", "x]]>y"), ("a", "<&>")]));
        assert_eq!(xml, "<xml><a><![CDATA[<&>]]></a><b><![CDATA[x]]]]><![CDATA[>y]]></b></xml>");
    }

    #[test]
    fn replies() {
        assert_eq!(
            reply_fail("bad sign"),
            "<xml><return_code><![CDATA[FAIL]]></return_code><return_msg><![CDATA[bad sign]]></return_msg></xml>"
        );
        assert!(REPLY_SUCCESS.contains("<![CDATA[SUCCESS]]>"));
    }

    #[test]
    fn v7_req_info_key_derivation() {
        assert_eq!(&req_info_key("OF4Ne3znh8KqL0V4NqmALQa0uXMYKcEk"), b"63dfc0c1f53d9bc83a8fdc365b8141da");
    }

    /// A refund notification req_info published with its API key (studygolang
    /// article 11811, reused in several SDK test suites).
    const PUBLISHED_KEY: &str = "ziR0QKsTUfMOuochC9RfCdmfHECorQAP";
    const PUBLISHED_REQ_INFO: &str = include_str!("../../../testdata/req_info_published.b64");

    #[test]
    fn decrypts_a_published_req_info() {
        let xml = decrypt_req_info(PUBLISHED_REQ_INFO, PUBLISHED_KEY).expect("decrypts");
        assert!(xml.starts_with("<root>"), "{xml}");
        assert!(xml.trim_end().ends_with("</root>"), "{xml}");
        // Cross-checked with `openssl enc -d -aes-256-ecb` under the same derived key.
        for element in [
            "<refund_id><![CDATA[50000404922017112502468056157]]></refund_id>",
            "<out_refund_no><![CDATA[50fd012ed1b311e7af7800163e32c503]]></out_refund_no>",
            "<refund_fee><![CDATA[6]]></refund_fee>",
            "<refund_status><![CDATA[SUCCESS]]></refund_status>",
        ] {
            assert!(xml.contains(element), "{element} missing from {xml}");
        }
    }

    const V7_KEY: &str = "OF4Ne3znh8KqL0V4NqmALQa0uXMYKcEk";
    const REFUND_XML: &str = "<root><out_refund_no><![CDATA[1234]]></out_refund_no>\
        <out_trade_no><![CDATA[T20200104]]></out_trade_no>\
        <refund_fee><![CDATA[1]]></refund_fee>\
        <refund_id><![CDATA[50300103182020010413419046597]]></refund_id>\
        <refund_status><![CDATA[SUCCESS]]></refund_status></root>";

    #[test]
    fn req_info_round_trip() {
        let b64 = encrypt_req_info(REFUND_XML, V7_KEY);
        assert_eq!(decrypt_req_info(&b64, V7_KEY).as_deref(), Ok(REFUND_XML));
        // A plaintext of a whole number of blocks gets a full padding block.
        let sixteen = "<root>0123</root";
        assert_eq!(sixteen.len(), 16);
        let b64 = encrypt_req_info(sixteen, V7_KEY);
        assert_eq!(BASE64.decode(&b64).map(|d| d.len()), Ok(32));
        assert_eq!(decrypt_req_info(&b64, V7_KEY).as_deref(), Ok(sixteen));
    }

    #[test]
    fn req_info_refuses_wrong_key_tampering_and_bad_input() {
        let b64 = encrypt_req_info(REFUND_XML, V7_KEY);
        assert!(decrypt_req_info(&b64, "another-api-key-000000000000000").is_err());

        let mut data = BASE64.decode(&b64).expect("base64");
        let last = data.len() - 1;
        data[last] ^= 0x01;
        assert!(decrypt_req_info(&BASE64.encode(&data), V7_KEY).is_err());

        assert_eq!(decrypt_req_info("not base64!", V7_KEY), Err(ReqInfoError::Base64));
        assert_eq!(decrypt_req_info("", V7_KEY), Err(ReqInfoError::BlockLength));
        assert_eq!(decrypt_req_info(&BASE64.encode([0u8; 15]), V7_KEY), Err(ReqInfoError::BlockLength));
        let too_long = "A".repeat(REQ_INFO_B64_CHARS_MAX + 4);
        assert!(matches!(decrypt_req_info(&too_long, V7_KEY), Err(ReqInfoError::TooLarge { .. })));
    }

    #[test]
    fn req_info_size_limit_is_inclusive() {
        // At the limit the size check passes and decoding decides.
        let at_limit = "A".repeat(REQ_INFO_B64_CHARS_MAX);
        assert_ne!(
            decrypt_req_info(&at_limit, V7_KEY),
            Err(ReqInfoError::TooLarge { chars: REQ_INFO_B64_CHARS_MAX, max: REQ_INFO_B64_CHARS_MAX })
        );
        let past = "A".repeat(REQ_INFO_B64_CHARS_MAX + 1);
        assert!(matches!(decrypt_req_info(&past, V7_KEY), Err(ReqInfoError::TooLarge { .. })));
    }

    #[test]
    fn pkcs7_checks_every_pad_byte() {
        let mut block = [b'x'; 16];
        block[13..].copy_from_slice(&[3, 3, 3]);
        assert_eq!(pkcs7_unpadded_len(&block), Some(13));
        block[13] = 2;
        assert_eq!(pkcs7_unpadded_len(&block), None);
        block[15] = 0;
        assert_eq!(pkcs7_unpadded_len(&block), None);
        block[15] = 17;
        assert_eq!(pkcs7_unpadded_len(&block), None);
        assert_eq!(pkcs7_unpadded_len(&[16u8; 16]), Some(0));
    }

    #[test]
    fn jsapi_v2_params_are_signed_over_the_camel_case_fields() {
        let p = jsapi_params_v2("wxd930ea5d5a258f4f", "wx2017", V5_KEY, SignType::Md5, 1_414_561_699, "5K8264ILTKCH");
        assert_eq!(p.package, "prepay_id=wx2017");
        assert_eq!(p.time_stamp, "1414561699");
        assert_eq!(p.sign_type, "MD5");
        let expected = hex::encode_upper(Md5::digest(
            "appId=wxd930ea5d5a258f4f&nonceStr=5K8264ILTKCH&package=prepay_id=wx2017&signType=MD5\
             &timeStamp=1414561699&key=192006250b4c09247ec02edce69f6a2d"
                .as_bytes(),
        ));
        assert_eq!(p.pay_sign, expected);
        let json = serde_json::to_value(&p).expect("serializes");
        assert_eq!(json["appId"], "wxd930ea5d5a258f4f");
        assert_eq!(json["paySign"], p.pay_sign.as_str());
    }
}
