//! `MsgCrypt::decrypt` with a fixed key must fail cleanly on any input, never
//! panic. Two shapes of input, chosen by the first byte:
//! - even: the rest is the `Encrypt` string itself (base64, length and
//!   block checks);
//! - odd: the rest is a plaintext frame, zero-filled to whole 32-byte blocks
//!   and encrypted with the right key, so the fuzzer reaches the padding,
//!   length-prefix and appid checks behind AES.
//!
//! Whatever decrypt accepts must encrypt back to something it accepts again.
#![no_main]

use aes::cipher::block_padding::NoPadding;
use aes::cipher::{BlockModeEncrypt, KeyIvInit};
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use wxcm_protocol::wechat::crypto::{AesKey, MsgCrypt};

const KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const APPID: &str = "wxb11529c136998cb6";
const FRAME_BYTES_MAX: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let Ok(key) = AesKey::from_encoding_aes_key(KEY) else { return };
    let Ok(crypt) = MsgCrypt::new(key, APPID) else { return };
    let encrypt_b64 = if mode % 2 == 0 {
        let Ok(text) = std::str::from_utf8(rest) else { return };
        text.to_string()
    } else {
        encrypt_frame(&rest[..rest.len().min(FRAME_BYTES_MAX)])
    };
    if let Ok(plaintext) = crypt.decrypt(&encrypt_b64) {
        let again = crypt.encrypt(&plaintext, [0; 16]).expect("a decrypted message re-encrypts");
        assert_eq!(crypt.decrypt(&again).as_deref(), Ok(plaintext.as_str()));
    }
});

fn encrypt_frame(frame: &[u8]) -> String {
    // EncodingAESKeys carry two non-zero trailing bits, as MsgCrypt allows.
    let engine =
        GeneralPurpose::new(&alphabet::STANDARD, GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true));
    let key_bytes = engine.decode(format!("{KEY}=")).unwrap_or_default();
    let key: [u8; 32] = key_bytes.try_into().expect("the fixed key decodes to 32 bytes");
    let mut iv = [0u8; 16];
    iv.copy_from_slice(&key[..16]);
    let blocks = frame.len().div_ceil(32).max(1);
    let mut buf = frame.to_vec();
    buf.resize(blocks * 32, 0);
    let total = buf.len();
    let cipher =
        cbc::Encryptor::<aes::Aes256>::new(&key.into(), &iv.into()).encrypt_padded::<NoPadding>(&mut buf, total);
    cipher.map(|c| STANDARD.encode(c)).unwrap_or_default()
}
