//! Callback signatures and the safe-mode message crypt.
//!
//! Safe mode: key = base64(EncodingAESKey + "="), AES-256-CBC with IV =
//! key[..16]; plaintext = 16 random bytes ‖ u32 BE message length ‖ message ‖
//! appid, PKCS#7-padded to a 32-byte block (pad 1..=32). A stock 16-byte
//! unpadder rejects real traffic, so padding is added and checked here.
//!
//! Errors name what failed and never carry key material or plaintext.
//! Decrypt errors are distinguishable, so callers must check
//! `msg_signature` before decrypting (no padding oracle on unsigned input).

use aes::cipher::block_padding::NoPadding;
use aes::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

type Aes256CbcEnc = cbc::Encryptor<aes::Aes256>;
type Aes256CbcDec = cbc::Decryptor<aes::Aes256>;

/// Characters of an EncodingAESKey.
pub const ENCODING_AES_KEY_CHARS: usize = 43;
/// WeChat pads to this block size (not the AES block size).
pub const PAD_BLOCK_BYTES: usize = 32;
/// Longest `Encrypt` value accepted (the callback body is capped at 64 KiB anyway).
pub const ENCRYPT_B64_CHARS_MAX: usize = 64 * 1024;
/// Longest plaintext `encrypt` accepts (replies are small; WeChat's own limit is far lower).
pub const PLAINTEXT_BYTES_MAX: usize = 256 * 1024;
/// Longest appid accepted by [`MsgCrypt::new`].
pub const APPID_CHARS_MAX: usize = 64;

const RANDOM_BYTES: usize = 16;
const LENGTH_PREFIX_BYTES: usize = 4;

/// The EncodingAESKey's 43rd character carries 2 unused bits that WeChat does
/// not zero, so decoding must allow trailing bits.
const KEY_ENGINE: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("EncodingAESKey must be 43 base64 characters")]
    InvalidKey,
    #[error("appid must be 1..=64 ASCII alphanumeric characters")]
    InvalidAppId,
    #[error("encrypted payload is longer than {max} characters")]
    TooLarge { max: usize },
    #[error("encrypted payload is not valid base64")]
    Base64,
    #[error("encrypted payload length is invalid")]
    Length,
    #[error("encrypted payload padding is invalid")]
    Padding,
    #[error("encrypted payload is for another appid")]
    AppIdMismatch,
    #[error("decrypted message is not UTF-8")]
    Utf8,
    #[error("plaintext longer than {max} bytes")]
    PlaintextTooLarge { max: usize },
}

/// `signature` of a callback: hex SHA-1 of the sorted, concatenated parts.
pub fn signature(token: &str, timestamp: &str, nonce: &str) -> String {
    sorted_sha1_hex(&mut [token, timestamp, nonce])
}

/// `msg_signature` of a safe-mode callback or reply.
pub fn msg_signature(token: &str, timestamp: &str, nonce: &str, encrypt: &str) -> String {
    sorted_sha1_hex(&mut [token, timestamp, nonce, encrypt])
}

fn sorted_sha1_hex(parts: &mut [&str]) -> String {
    parts.sort_unstable();
    let mut hasher = Sha1::new();
    for part in parts.iter() {
        hasher.update(part.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// Compares a computed hex signature with a received one in constant time
/// (for equal lengths), ignoring ASCII case.
pub fn verify_hex(expected: &str, given: &str) -> bool {
    if expected.len() != given.len() {
        return false;
    }
    let expected = expected.to_ascii_lowercase();
    let given = given.to_ascii_lowercase();
    expected.as_bytes().ct_eq(given.as_bytes()).into()
}

/// A decoded EncodingAESKey. Debug output never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct AesKey([u8; 32]);

impl AesKey {
    pub fn from_encoding_aes_key(encoding_aes_key: &str) -> Result<AesKey, CryptoError> {
        let valid_chars = encoding_aes_key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
        if encoding_aes_key.len() != ENCODING_AES_KEY_CHARS || !valid_chars {
            return Err(CryptoError::InvalidKey);
        }
        let bytes = KEY_ENGINE.decode(encoding_aes_key).map_err(|_| CryptoError::InvalidKey)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| CryptoError::InvalidKey)?;
        Ok(AesKey(key))
    }

    fn iv(&self) -> [u8; 16] {
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&self.0[..16]);
        iv
    }
}

impl std::fmt::Debug for AesKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AesKey(..)")
    }
}

/// The safe-mode crypt of one account (or of a component, for third-party
/// platform traffic): key and the appid that must end every plaintext.
#[derive(Debug, Clone)]
pub struct MsgCrypt {
    key: AesKey,
    appid: String,
}

impl MsgCrypt {
    pub fn new(key: AesKey, appid: &str) -> Result<MsgCrypt, CryptoError> {
        let valid = !appid.is_empty()
            && appid.len() <= APPID_CHARS_MAX
            && appid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err(CryptoError::InvalidAppId);
        }
        Ok(MsgCrypt { key, appid: appid.to_string() })
    }

    pub fn appid(&self) -> &str {
        &self.appid
    }

    /// Decrypts an `Encrypt` value into the inner XML.
    pub fn decrypt(&self, encrypt_b64: &str) -> Result<String, CryptoError> {
        if encrypt_b64.len() > ENCRYPT_B64_CHARS_MAX {
            return Err(CryptoError::TooLarge { max: ENCRYPT_B64_CHARS_MAX });
        }
        let mut buf = STANDARD.decode(encrypt_b64).map_err(|_| CryptoError::Base64)?;
        if buf.is_empty() || buf.len() % PAD_BLOCK_BYTES != 0 {
            return Err(CryptoError::Length);
        }
        let plain = Aes256CbcDec::new(&self.key.0.into(), &self.key.iv().into())
            .decrypt_padded::<NoPadding>(&mut buf)
            .map_err(|_| CryptoError::Length)?;
        let unpadded = strip_padding(plain)?;
        let (message, appid) = split_frame(unpadded)?;
        if appid != self.appid.as_bytes() {
            return Err(CryptoError::AppIdMismatch);
        }
        String::from_utf8(message.to_vec()).map_err(|_| CryptoError::Utf8)
    }

    /// Encrypts a reply with the given 16 random bytes (tests and the
    /// simulator pass fixed ones).
    pub fn encrypt(&self, plaintext: &str, random16: [u8; 16]) -> Result<String, CryptoError> {
        if plaintext.len() > PLAINTEXT_BYTES_MAX {
            return Err(CryptoError::PlaintextTooLarge { max: PLAINTEXT_BYTES_MAX });
        }
        let message_len =
            u32::try_from(plaintext.len()).map_err(|_| CryptoError::PlaintextTooLarge { max: PLAINTEXT_BYTES_MAX })?;
        let frame_len = RANDOM_BYTES + LENGTH_PREFIX_BYTES + plaintext.len() + self.appid.len();
        let pad = PAD_BLOCK_BYTES - frame_len % PAD_BLOCK_BYTES;
        let mut buf = Vec::with_capacity(frame_len + pad);
        buf.extend_from_slice(&random16);
        buf.extend_from_slice(&message_len.to_be_bytes());
        buf.extend_from_slice(plaintext.as_bytes());
        buf.extend_from_slice(self.appid.as_bytes());
        // pad is 1..=32, so it fits a byte.
        buf.resize(frame_len + pad, pad as u8);
        let total = buf.len();
        let cipher = Aes256CbcEnc::new(&self.key.0.into(), &self.key.iv().into())
            .encrypt_padded::<NoPadding>(&mut buf, total)
            .map_err(|_| CryptoError::Length)?;
        Ok(STANDARD.encode(cipher))
    }

    /// Encrypts a reply with fresh random bytes.
    pub fn encrypt_random(&self, plaintext: &str) -> Result<String, CryptoError> {
        self.encrypt(plaintext, rand::random())
    }
}

/// Checks and removes WeChat's 32-byte PKCS#7 padding.
fn strip_padding(plain: &[u8]) -> Result<&[u8], CryptoError> {
    let Some(&pad) = plain.last() else { return Err(CryptoError::Padding) };
    let pad = usize::from(pad);
    if pad == 0 || pad > PAD_BLOCK_BYTES || pad > plain.len() {
        return Err(CryptoError::Padding);
    }
    let (body, padding) = plain.split_at(plain.len() - pad);
    if padding.iter().any(|&b| usize::from(b) != pad) {
        return Err(CryptoError::Padding);
    }
    Ok(body)
}

/// Splits `random ‖ len ‖ message ‖ appid` into message and appid.
fn split_frame(frame: &[u8]) -> Result<(&[u8], &[u8]), CryptoError> {
    let header = RANDOM_BYTES + LENGTH_PREFIX_BYTES;
    if frame.len() < header {
        return Err(CryptoError::Length);
    }
    let mut len_bytes = [0u8; LENGTH_PREFIX_BYTES];
    len_bytes.copy_from_slice(&frame[RANDOM_BYTES..header]);
    let message_len = usize::try_from(u32::from_be_bytes(len_bytes)).map_err(|_| CryptoError::Length)?;
    let rest = &frame[header..];
    if message_len > rest.len() {
        return Err(CryptoError::Length);
    }
    Ok(rest.split_at(message_len))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const V2_APPID: &str = "wxb11529c136998cb6";
    const V2_TOKEN: &str = "pamtest";
    const V2_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
    const V2_TIMESTAMP: &str = "1458300676";
    const V2_NONCE: &str = "260774613";
    const V2_MSG_SIGNATURE: &str = "4f3ad57b6989f09f4eb392acce4f9e93942ed890";
    pub(crate) const V2_ENCRYPT: &str = "rTNFcsut4LfGuAFKEUVVpwcaCOTJzOd9twZdIW910jb3k+iicx2uvhttIZ3Qg9Qgty3BEF2xbOrz6boTfb30dMomcgrkTqdFPwnhqbk+kIQ7rZiwny9D7NUrTgA5kpX3KsZvrXzUZyP2x9YOlxbgm572lmxKvM7HAQQhIQ/p6HBmoY30bGXFK0BtIu1pW9TjhOYrLQoU18nWYjWqDA1ynkmOytpv7QRI1P1+0NoxL0q2zO1DgeSvnE8CZGo/o5Ap/WHK5W2RAsinpzN4/LjPnmB6U01I5XCoJoC0GK/yMZycd2Oh8Nq6+wBkC1U85oy0ktOY4nLvsQMLrourmMGdZHuTbqpeJ8Ao/5PRYJ+WBvRUwPfGKBL2+2IKZF49vAJqkcGWSHGE76ZN2erXeuNazf/o9o3lIE3q739o4c8t9QGPe31GT2Go/rOz1BsrASwvauNulCh+++yz+CQzBIuikA==";

    fn v2_crypt() -> MsgCrypt {
        MsgCrypt::new(AesKey::from_encoding_aes_key(V2_KEY).unwrap(), V2_APPID).unwrap()
    }

    /// Encrypts a raw frame (no checks) to build malformed ciphertexts.
    fn encrypt_raw(key: &AesKey, mut frame: Vec<u8>) -> String {
        let total = frame.len();
        let cipher =
            Aes256CbcEnc::new(&key.0.into(), &key.iv().into()).encrypt_padded::<NoPadding>(&mut frame, total).unwrap();
        STANDARD.encode(cipher)
    }

    fn frame(message: &[u8], declared_len: u32, appid: &[u8], pad: u8, pad_count: usize) -> Vec<u8> {
        let mut frame = vec![7u8; 16];
        frame.extend_from_slice(&declared_len.to_be_bytes());
        frame.extend_from_slice(message);
        frame.extend_from_slice(appid);
        frame.extend(std::iter::repeat_n(pad, pad_count));
        frame
    }

    #[test]
    fn v1_get_signature() {
        let sig = signature("test", "1410685589", "test");
        assert_eq!(sig, "f21891de399b4e33a1a93c9a7b8a8fffb5a443ff");
        assert!(verify_hex(&sig, "F21891DE399B4E33A1A93C9A7B8A8FFFB5A443FF"));
        assert!(!verify_hex(&sig, "f21891de399b4e33a1a93c9a7b8a8fffb5a443fe"));
        assert!(!verify_hex(&sig, "f21891de"));
        assert!(!verify_hex(&sig, ""));
    }

    #[test]
    fn v2_safe_mode_decrypt() {
        let computed = msg_signature(V2_TOKEN, V2_TIMESTAMP, V2_NONCE, V2_ENCRYPT);
        assert!(verify_hex(&computed, V2_MSG_SIGNATURE));
        let xml = v2_crypt().decrypt(V2_ENCRYPT).unwrap();
        assert!(xml.contains("hello"), "{xml}");
        assert!(xml.contains("12345"));
        assert!(xml.contains("asdasdasdsadasd"));
    }

    #[test]
    fn key_validation() {
        assert!(AesKey::from_encoding_aes_key(V2_KEY).is_ok());
        assert_eq!(AesKey::from_encoding_aes_key(&V2_KEY[..42]), Err(CryptoError::InvalidKey));
        assert_eq!(AesKey::from_encoding_aes_key(&format!("{V2_KEY}=")), Err(CryptoError::InvalidKey));
        assert_eq!(AesKey::from_encoding_aes_key(&format!("{}-", &V2_KEY[..42])), Err(CryptoError::InvalidKey));
        assert_eq!(AesKey::from_encoding_aes_key(""), Err(CryptoError::InvalidKey));
        assert_eq!(format!("{:?}", AesKey::from_encoding_aes_key(V2_KEY).unwrap()), "AesKey(..)");
    }

    #[test]
    fn appid_validation() {
        let key = AesKey::from_encoding_aes_key(V2_KEY).unwrap();
        assert!(MsgCrypt::new(key.clone(), "").is_err());
        assert!(MsgCrypt::new(key.clone(), "wx<1>").is_err());
        assert!(MsgCrypt::new(key.clone(), &"a".repeat(APPID_CHARS_MAX + 1)).is_err());
        assert!(MsgCrypt::new(key, &"a".repeat(APPID_CHARS_MAX)).is_ok());
    }

    #[test]
    fn round_trips_with_every_interesting_pad() {
        let crypt = v2_crypt();
        // frame = 16 + 4 + len + 18 (appid) = 38 + len; pad = 32 - frame % 32.
        for (len, pad) in [(25usize, 1u8), (10, 16), (5, 21), (26, 32), (0, 26)] {
            assert_eq!(32 - (38 + len) % 32, usize::from(pad));
            let plaintext = "x".repeat(len);
            let encrypted = crypt.encrypt(&plaintext, [9; 16]).unwrap();
            let raw = STANDARD.decode(&encrypted).unwrap();
            let mut buf = raw.clone();
            let plain = Aes256CbcDec::new(&crypt.key.0.into(), &crypt.key.iv().into())
                .decrypt_padded::<NoPadding>(&mut buf)
                .unwrap();
            assert_eq!(*plain.last().unwrap(), pad);
            assert_eq!(crypt.decrypt(&encrypted).unwrap(), plaintext);
        }
        let unicode = "<xml><Content><![CDATA[你好]]></Content></xml>";
        assert_eq!(crypt.decrypt(&crypt.encrypt_random(unicode).unwrap()).unwrap(), unicode);
        assert_ne!(crypt.encrypt_random(unicode).unwrap(), crypt.encrypt_random(unicode).unwrap());
    }

    #[test]
    fn wrong_appid_tail_is_refused() {
        let crypt = v2_crypt();
        let other = MsgCrypt::new(crypt.key.clone(), "wxother0000000000").unwrap();
        let encrypted = other.encrypt("<xml/>", [1; 16]).unwrap();
        assert_eq!(crypt.decrypt(&encrypted), Err(CryptoError::AppIdMismatch));
        // A prefix of the right appid is not the appid.
        let short = MsgCrypt::new(crypt.key.clone(), &V2_APPID[..17]).unwrap();
        assert_eq!(crypt.decrypt(&short.encrypt("<xml/>", [1; 16]).unwrap()), Err(CryptoError::AppIdMismatch));
    }

    #[test]
    fn bad_padding_is_refused() {
        let crypt = v2_crypt();
        let key = &crypt.key;
        let message = b"0123456789"; // frame 16+4+10+18 = 48, pad 16
        let appid = V2_APPID.as_bytes();
        let good = encrypt_raw(key, frame(message, 10, appid, 16, 16));
        assert_eq!(crypt.decrypt(&good).unwrap(), "0123456789");
        // pad byte 0
        let zero = encrypt_raw(key, frame(message, 10, appid, 0, 16));
        assert_eq!(crypt.decrypt(&zero), Err(CryptoError::Padding));
        // pad byte 33 (the frame grows by a block so the count is 48)
        let big = encrypt_raw(key, frame(message, 10, appid, 33, 48));
        assert_eq!(crypt.decrypt(&big), Err(CryptoError::Padding));
        // inconsistent pad bytes
        let mut mixed = frame(message, 10, appid, 16, 16);
        let at = mixed.len() - 5;
        mixed[at] = 15;
        assert_eq!(crypt.decrypt(&encrypt_raw(key, mixed)), Err(CryptoError::Padding));
    }

    #[test]
    fn bad_length_prefix_is_refused() {
        let crypt = v2_crypt();
        let appid = V2_APPID.as_bytes();
        let too_long = encrypt_raw(&crypt.key, frame(b"0123456789", 1_000, appid, 16, 16));
        assert_eq!(crypt.decrypt(&too_long), Err(CryptoError::Length));
        let huge = encrypt_raw(&crypt.key, frame(b"0123456789", u32::MAX, appid, 16, 16));
        assert_eq!(crypt.decrypt(&huge), Err(CryptoError::Length));
        // Declared shorter: the rest is taken as the appid and does not match.
        let short = encrypt_raw(&crypt.key, frame(b"0123456789", 9, appid, 16, 16));
        assert_eq!(crypt.decrypt(&short), Err(CryptoError::AppIdMismatch));
        // Pad covering the header.
        let all_pad = encrypt_raw(&crypt.key, vec![32u8; 32]);
        assert_eq!(crypt.decrypt(&all_pad), Err(CryptoError::Length));
    }

    #[test]
    fn non_utf8_message_is_refused() {
        let crypt = v2_crypt();
        let bad = encrypt_raw(&crypt.key, frame(&[0xff; 10], 10, V2_APPID.as_bytes(), 16, 16));
        assert_eq!(crypt.decrypt(&bad), Err(CryptoError::Utf8));
    }

    #[test]
    fn truncated_or_garbled_base64_is_refused() {
        let crypt = v2_crypt();
        assert_eq!(crypt.decrypt(&V2_ENCRYPT[..V2_ENCRYPT.len() - 3]), Err(CryptoError::Base64));
        // Whole base64 quanta but not whole blocks.
        assert_eq!(crypt.decrypt(&V2_ENCRYPT[..V2_ENCRYPT.len() - 24]), Err(CryptoError::Length));
        assert_eq!(crypt.decrypt(""), Err(CryptoError::Length));
        assert_eq!(crypt.decrypt("!!!!"), Err(CryptoError::Base64));
        let too_long = "A".repeat(ENCRYPT_B64_CHARS_MAX + 4);
        assert_eq!(crypt.decrypt(&too_long), Err(CryptoError::TooLarge { max: ENCRYPT_B64_CHARS_MAX }));
    }

    #[test]
    fn errors_do_not_echo_secrets() {
        let crypt = v2_crypt();
        let debug = format!("{crypt:?}");
        assert!(!debug.contains(V2_KEY));
        for error in [CryptoError::InvalidKey, CryptoError::Padding, CryptoError::AppIdMismatch] {
            let text = error.to_string();
            assert!(!text.contains(V2_KEY) && !text.contains(V2_APPID));
        }
    }
}
