//! Idempotency by key for writes that are not events (reply rules, menus and
//! their publication, scene QR codes, third-party authorization starts): the
//! first request with a key runs and its answer is kept; the same key with
//! the same request replays that answer; with another request it is refused.
//! The edge (`wxcm_http::middleware::replay_by_key`) drives it.

use chrono::{DateTime, Utc};
use wxcm_domain::TenantId;

use crate::ports::PortError;

/// Answers kept for replay this long.
pub const KEYED_REQUESTS_RETENTION_HOURS: i64 = 24;
/// A claim whose request never finished (its node died) may be taken over after this.
pub const KEYED_CLAIM_STALE_SECS: i64 = 60;
/// Longest answer body kept for replay.
pub const KEYED_ANSWER_BYTES_MAX: usize = 256 * 1024;

/// What a claim of `(tenant, key)` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Nobody had the key (or its claim was stale): run the request, then `complete` or `release`.
    Won,
    /// The same request ran: its answer.
    Replay { status: u16, body: Vec<u8> },
    /// The key belongs to another request.
    Mismatch,
    /// The same request is running now.
    InFlight,
}

#[async_trait::async_trait]
pub trait KeyedRequests: Send + Sync {
    async fn claim(
        &self,
        tenant: &TenantId,
        key: &str,
        request_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Claim, PortError>;
    /// Keeps the answer of the claimed request.
    async fn complete(&self, tenant: &TenantId, key: &str, status: u16, body: &[u8]) -> Result<(), PortError>;
    /// Gives the claim up (the outcome is unknown: a retry runs the request again).
    async fn release(&self, tenant: &TenantId, key: &str) -> Result<(), PortError>;
    /// Deletes up to `batch` answers claimed before `before`.
    async fn prune(&self, before: DateTime<Utc>, batch: u32) -> Result<u64, PortError>;
}
