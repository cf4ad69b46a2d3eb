//! `wxcm audit`: replays and verifies the event log of one tenant, read-only.
//!
//! - `audit member` reads one member stream, checks its hash chain
//!   ([`wxcm_store::hashchain::verify_stream`]), replays it into the domain's
//!   [`Member`] and recomputes every stated after-balance from the deltas before
//!   it, then prints the ledger and the balances.
//! - `audit commissions` explains one distributor's commission account
//!   event by event (figures after each, the accounting identities checked).
//! - `audit verify` does the same for every stream of a tenant and prints a
//!   tenant digest that auditors can compare between runs (and recompute with
//!   `psql`, see [`TENANT_DIGEST_SQL`]).
//!
//! Every stream is also replayed with its domain aggregate (members, payment
//! orders, tenants): an event the aggregate refuses is a finding that names
//! the broken rule (`member/<id> seq 7: ... member.balance_after ...`), and
//! replay stops there.
//!
//! Every violation names its stream and sequence (`member/<id> seq 7: ...`).
//! Nothing here writes: the connection runs with `default_transaction_read_only`
//! and needs no secret key, only the shard's URL.
//!
//! Code map: the checks (findings, replay, digest, the member report) are in
//! `wxcm_store::audit`, re-exported here; `member` and `verify` (the two
//! commands), `print` (text output); this file holds the limits and the
//! read-only connection.

use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, Result};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use wxcm_domain::TenantId;

use wxcm_server::config::Settings;
use wxcm_store::hashchain::{self, StoredEvent};

mod commissions;
mod member;
mod print;
#[cfg(test)]
mod tests;
mod verify;

pub use commissions::*;
pub use member::*;
use print::*;
pub use verify::*;
// The checks themselves are pure code in the store, shared with the admin API.
pub use wxcm_store::audit::*;

/// The audit reads one stream at a time: one connection, plus one spare.
pub(super) const AUDIT_POOL_CONNECTIONS_MAX: u32 = 2;
pub(super) const ACQUIRE_TIMEOUT_MS: u64 = 10_000;
/// Characters of a hash shown in text output (the JSON has it whole).
pub(super) const HASH_PREFIX_CHARS: usize = 16;
pub(super) const PROGRESS_TICK_MS: u64 = 200;

/// Every stream with at least one row of the tenant (`$1`). Grouping instead of
/// listing the rows with sequence 1 also finds streams whose first row was deleted.
pub const TENANT_STREAMS_SQL: &str = "\
SELECT aggregate_type, aggregate_id, count(*) AS events \
  FROM events WHERE tenant_id = $1 GROUP BY 1, 2 ORDER BY 1, 2";

/// The tenant digest in SQL, for auditors who do not want to trust this code:
/// SHA-256 over one line per stream, `type TAB id TAB last_sequence TAB head_hash_hex LF`,
/// streams ordered bytewise by type then id. `$1` is the tenant.
pub const TENANT_DIGEST_SQL: &str = r#"
SELECT encode(sha256(convert_to(coalesce(string_agg(line, '' ORDER BY t COLLATE "C", i COLLATE "C"), ''), 'UTF8')), 'hex')
  FROM (SELECT DISTINCT ON (aggregate_type, aggregate_id)
               aggregate_type AS t, aggregate_id AS i,
               aggregate_type || E'\t' || aggregate_id || E'\t' || sequence || E'\t' || encode(hash, 'hex') || E'\n' AS line
          FROM events
         WHERE (aggregate_type, aggregate_id) IN (SELECT aggregate_type, aggregate_id FROM events WHERE tenant_id = $1)
         ORDER BY aggregate_type, aggregate_id, sequence DESC) AS heads"#;

// ---------------------------------------------------------------------------------
// report types
// ---------------------------------------------------------------------------------

/// A small pool on the tenant's shard whose sessions refuse writes.
pub(super) fn shard_pool(settings: &Settings, tenant: &TenantId) -> Result<PgPool> {
    let name = settings.shard_of(tenant.as_str());
    let shard = settings
        .shards
        .get(name)
        .with_context(|| format!("tenant {tenant} maps to shard {name}, which is not configured"))?;
    let options = PgConnectOptions::from_str(&shard.url)
        .with_context(|| format!("shard {name}: invalid url"))?
        .application_name("wxcm-audit")
        .options([("default_transaction_read_only", "on")]);
    Ok(PgPoolOptions::new()
        .max_connections(AUDIT_POOL_CONNECTIONS_MAX)
        .acquire_timeout(Duration::from_millis(ACQUIRE_TIMEOUT_MS))
        .connect_lazy_with(options))
}

pub(super) async fn load(pool: &PgPool, aggregate_type: &str, aggregate_id: &str) -> Result<Vec<StoredEvent>> {
    hashchain::load_stream(pool, aggregate_type, aggregate_id)
        .await
        .with_context(|| format!("reading stream {aggregate_type}/{aggregate_id}"))
}

// ---------------------------------------------------------------------------------
// audit member
// ---------------------------------------------------------------------------------
