//! Transient infrastructure failures: the database or the broker could not be
//! reached, was shutting down, or kept refusing (serialization failures past
//! the retry budget). The outcome of a write that fails this way is unknown —
//! it may have committed just before the connection dropped — so the edges
//! answer "unavailable, retry with the same idempotency key" (503), never
//! "internal error" (500).
//!
//! The application layer does not know the database driver: the
//! infrastructure installs a check at startup ([`install_transient_check`])
//! that recognises its own error types; [`is_transient`] walks an error and
//! its sources through it. Without one installed, only I/O errors count.

use std::error::Error;
use std::sync::OnceLock;

use crate::ports::PortError;

/// Says whether one error (not its sources) is a transient failure.
pub type TransientCheck = fn(&(dyn Error + 'static)) -> bool;

static TRANSIENT_CHECK: OnceLock<TransientCheck> = OnceLock::new();

/// Links of a source chain looked at, at most (a cycle cannot hang us).
const SOURCE_DEPTH_MAX: usize = 16;

/// Installs the infrastructure's check. The first call wins; later calls are
/// ignored (every composition root installs the same one).
pub fn install_transient_check(check: TransientCheck) {
    let _ = TRANSIENT_CHECK.set(check);
}

/// True when `error`, or one of its sources, is a transient failure.
pub fn is_transient(error: &(dyn Error + 'static)) -> bool {
    let mut link: Option<&(dyn Error + 'static)> = Some(error);
    for _ in 0..SOURCE_DEPTH_MAX {
        let Some(current) = link else { return false };
        if current.is::<std::io::Error>() {
            return true;
        }
        if let Some(port) = current.downcast_ref::<PortError>() {
            if is_transient(port.0.as_ref()) {
                return true;
            }
        }
        if TRANSIENT_CHECK.get().is_some_and(|check| check(current)) {
            return true;
        }
        link = current.source();
    }
    false
}

impl PortError {
    /// See [`is_transient`].
    pub fn is_transient(&self) -> bool {
        is_transient(self.0.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("wrapped")]
    struct Wrapped(#[source] std::io::Error);

    #[test]
    fn io_errors_and_their_wrappers_are_transient() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(is_transient(&Wrapped(io)));
        assert!(PortError::new(std::io::Error::other("refused")).is_transient());
    }

    #[test]
    fn other_errors_are_not() {
        assert!(!PortError::msg("row not decodable").is_transient());
        let json = serde_json::from_str::<u8>("x").unwrap_err();
        assert!(!is_transient(&json));
    }
}
