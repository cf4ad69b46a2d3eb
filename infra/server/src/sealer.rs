//! AES-256-GCM sealing of tenant secrets, key from the environment.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use wxcm_commands::ports::{PortError, SecretSealer};
use wxcm_domain::tenant::SealedSecret;

const PREFIX: &str = "v1:";
const NONCE_BYTES: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum SealerError {
    #[error("environment variable {0} is not set (a base64 32-byte key)")]
    Missing(String),
    #[error("environment variable {0} is not a base64 32-byte key")]
    Malformed(String),
}

pub struct AesGcmSealer {
    cipher: Aes256Gcm,
    /// HMAC keys derive from it, one per purpose.
    mac_root: [u8; 32],
}

impl AesGcmSealer {
    pub fn from_env(var: &str) -> Result<Self, SealerError> {
        let raw = std::env::var(var).map_err(|_| SealerError::Missing(var.to_owned()))?;
        let key = STANDARD.decode(raw.trim()).map_err(|_| SealerError::Malformed(var.to_owned()))?;
        Self::from_key(&key).ok_or_else(|| SealerError::Malformed(var.to_owned()))
    }

    pub fn from_key(key: &[u8]) -> Option<Self> {
        if key.len() != 32 {
            return None;
        }
        let cipher = Aes256Gcm::new_from_slice(key).ok()?;
        // Never the encryption key itself: a key of its own, derived once.
        let mac_root = hmac_sha256(key, b"wxcm.mac.root.v1").ok()?;
        Some(Self { cipher, mac_root })
    }
}

impl SecretSealer for AesGcmSealer {
    fn seal(&self, plaintext: &str) -> Result<SealedSecret, PortError> {
        let mut nonce = [0u8; NONCE_BYTES];
        rand::fill(&mut nonce);
        let ct = self
            .cipher
            .encrypt(&Nonce::from(nonce), plaintext.as_bytes())
            .map_err(|_| PortError::msg("encryption failed"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        Ok(SealedSecret::from_ciphertext(format!("{PREFIX}{}", STANDARD.encode(out))))
    }

    fn open(&self, sealed: &SealedSecret) -> Result<String, PortError> {
        let body = sealed.ciphertext().strip_prefix(PREFIX).ok_or_else(|| PortError::msg("unknown sealing version"))?;
        let raw = STANDARD.decode(body).map_err(|_| PortError::msg("sealed secret is not base64"))?;
        if raw.len() < NONCE_BYTES {
            return Err(PortError::msg("sealed secret too short"));
        }
        let (nonce, ct) = raw.split_at(NONCE_BYTES);
        let nonce: [u8; NONCE_BYTES] = nonce.try_into().map_err(|_| PortError::msg("bad nonce"))?;
        let pt = self
            .cipher
            .decrypt(&Nonce::from(nonce), ct)
            .map_err(|_| PortError::msg("secret does not decrypt with this key"))?;
        String::from_utf8(pt).map_err(|_| PortError::msg("secret is not UTF-8"))
    }

    fn mac(&self, purpose: &str, data: &[u8]) -> Result<[u8; 32], PortError> {
        let key = hmac_sha256(&self.mac_root, purpose.as_bytes())?;
        hmac_sha256(&key, data)
    }
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Result<[u8; 32], PortError> {
    use hmac::{KeyInit as _, Mac};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).map_err(|_| PortError::msg("hmac key"))?;
    mac.update(data);
    Ok(mac.finalize().into_bytes().into())
}

/// Stands in for the sealer when its key is not set, for commands that never
/// touch a tenant secret (`wxcm tenant list`, `wxcm admin create`): any use is
/// a clear error naming the variable, never a silent plaintext.
pub struct MissingKeySealer {
    var: String,
}

impl MissingKeySealer {
    /// A stand-in that names `var` in its errors.
    pub fn new(var: &str) -> Self {
        Self { var: var.to_owned() }
    }

    fn error(&self) -> PortError {
        PortError::msg(format!("{} is not set: it is needed to seal or open tenant secrets", self.var))
    }
}

impl SecretSealer for MissingKeySealer {
    fn seal(&self, _: &str) -> Result<SealedSecret, PortError> {
        Err(self.error())
    }

    fn open(&self, _: &SealedSecret) -> Result<String, PortError> {
        Err(self.error())
    }

    fn mac(&self, _: &str, _: &[u8]) -> Result<[u8; 32], PortError> {
        Err(self.error())
    }
}

/// The sealer from `var`, or, when `var` is not set at all, a [`MissingKeySealer`]
/// (a malformed key is still an error). Servers use [`AesGcmSealer::from_env`].
pub fn sealer_or_missing(var: &str) -> Result<std::sync::Arc<dyn SecretSealer>, SealerError> {
    match AesGcmSealer::from_env(var) {
        Ok(sealer) => Ok(std::sync::Arc::new(sealer)),
        Err(SealerError::Missing(_)) => Ok(std::sync::Arc::new(MissingKeySealer { var: var.to_owned() })),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_wrong_key() {
        let s = AesGcmSealer::from_key(&[7u8; 32]).unwrap();
        let sealed = s.seal("app-secret-123").unwrap();
        assert!(!sealed.ciphertext().contains("app-secret"));
        assert_eq!(s.open(&sealed).unwrap(), "app-secret-123");
        let other = AesGcmSealer::from_key(&[8u8; 32]).unwrap();
        assert!(other.open(&sealed).is_err());
        assert!(AesGcmSealer::from_key(&[0u8; 16]).is_none());
    }

    #[test]
    fn a_missing_key_fails_on_use_naming_the_variable() {
        let sealer = sealer_or_missing("WXCM_TEST_KEY_THAT_IS_NEVER_SET").unwrap();
        let err = sealer.seal("secret").unwrap_err().to_string();
        assert!(err.contains("WXCM_TEST_KEY_THAT_IS_NEVER_SET is not set"), "{err}");
    }
}
