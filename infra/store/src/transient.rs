//! Which of this crate's errors (and the driver's) are transient: the
//! database could not be reached, was shutting down or restarting, or refused
//! for now. Installed into `wxcm_commands::failure` at startup, so the edges
//! answer those with 503 "outcome unknown, retry with the same key".

use std::error::Error;

use cqrs_es::persist::PersistenceError;

use crate::group_commit::CommitError;
use crate::store::StoreError;

/// Installs [`is_transient_error`] as the application's check (idempotent).
pub fn install() {
    wxcm_commands::failure::install_transient_check(is_transient_error);
}

/// One error, without its `source()` chain (the caller walks that); boxed
/// errors this crate and cqrs-es hold without exposing them as a source are
/// looked into here (postgres-es's own error type is private: it reaches us
/// as a `PersistenceError` or an `AggregateError`).
pub fn is_transient_error(error: &(dyn Error + 'static)) -> bool {
    if let Some(e) = error.downcast_ref::<sqlx::Error>() {
        return is_transient_sql(e);
    }
    if let Some(e) = error.downcast_ref::<CommitError>() {
        return match e {
            CommitError::Sql(s) => is_transient_sql(s),
            // The worker went away before answering: the outcome is unknown.
            CommitError::Stopped => true,
            CommitError::Conflict | CommitError::Invalid(_) => false,
        };
    }
    if let Some(e) = error.downcast_ref::<StoreError>() {
        return match e {
            StoreError::Sql(s) => is_transient_sql(s),
            StoreError::Persistence(p) => is_transient_persistence(p),
            StoreError::Load(port) => port.is_transient(),
            StoreError::Gap { .. } | StoreError::Invariant(_) | StoreError::Json(_) => false,
        };
    }
    if let Some(p) = error.downcast_ref::<PersistenceError>() {
        return is_transient_persistence(p);
    }
    false
}

fn is_transient_persistence(p: &PersistenceError) -> bool {
    match p {
        PersistenceError::ConnectionError(inner) | PersistenceError::UnknownError(inner) => {
            inner_is_transient(inner.as_ref())
        }
        PersistenceError::OptimisticLockError | PersistenceError::DeserializationError(_) => false,
    }
}

/// A boxed inner error: this crate's check on it and its sources (whether or
/// not the check is installed), then the application's (I/O errors).
fn inner_is_transient(inner: &(dyn Error + 'static)) -> bool {
    let mut link = Some(inner);
    // Bounded: a source chain is short; a cycle must not hang us.
    for _ in 0..16 {
        let Some(current) = link else { break };
        if is_transient_error(current) {
            return true;
        }
        link = current.source();
    }
    wxcm_commands::failure::is_transient(inner)
}

/// Connection-level failures, and the SQLSTATEs a restart, a failover or
/// contention past the retry budget produce.
pub fn is_transient_sql(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| is_transient_sqlstate(&code)),
        _ => false,
    }
}

/// Class 08 (connection exception), 53 (insufficient resources), 57P
/// (operator intervention: admin shutdown, crash shutdown, cannot connect
/// now), 40001 serialization failure, 40P01 deadlock, 55P03 lock not available.
pub fn is_transient_sqlstate(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57P")
        || matches!(code, "40001" | "40P01" | "55P03")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates() {
        for code in ["08006", "08001", "57P01", "57P03", "53300", "40001", "40P01"] {
            assert!(is_transient_sqlstate(code), "{code}");
        }
        for code in ["23505", "42P01", "22003", "P0001"] {
            assert!(!is_transient_sqlstate(code), "{code}");
        }
    }

    #[test]
    fn driver_and_store_errors() {
        assert!(is_transient_error(&sqlx::Error::PoolTimedOut));
        assert!(!is_transient_error(&sqlx::Error::RowNotFound));
        assert!(is_transient_error(&CommitError::Stopped));
        assert!(!is_transient_error(&CommitError::Conflict));
        assert!(is_transient_error(&StoreError::Sql(sqlx::Error::PoolClosed)));
        let wrapped = PersistenceError::ConnectionError(Box::new(sqlx::Error::PoolTimedOut));
        assert!(is_transient_error(&wrapped));
        assert!(!is_transient_error(&PersistenceError::OptimisticLockError));
    }

    #[test]
    fn through_the_application_check() {
        install();
        let port = wxcm_commands::ports::PortError::new(sqlx::Error::PoolTimedOut);
        assert!(port.is_transient());
        let port = wxcm_commands::ports::PortError::new(sqlx::Error::RowNotFound);
        assert!(!port.is_transient());
    }
}
