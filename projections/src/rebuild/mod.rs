//! Rebuilding the member read models (`rm_members`, `rm_member_ledger`) from
//! the event store, the source of truth, while the live tables keep serving.
//!
//! 1. `rm_members_rebuild` / `rm_member_ledger_rebuild` are created `LIKE` the
//!    live tables `INCLUDING ALL`.
//! 2. Member events are read in keyset pages ordered by (stream, sequence), one
//!    reader task ahead of the folding; each stream is folded in memory by
//!    [`fold_event`] (the same rules as `MemberProjector`) and written with
//!    `COPY`. The head of every stream goes to a temporary table.
//! 3. One transaction locks `projection_checkpoints` (EXCLUSIVE: the projector
//!    takes its checkpoint row before it touches a read model, so taking the
//!    same order here cannot deadlock) and, for a whole rebuild, the live
//!    tables (ACCESS EXCLUSIVE). Streams the live projector applied beyond what
//!    was replayed meanwhile are folded again from the store. Checkpoints move
//!    up to the replayed heads (never down); the events they move over are
//!    counted in `rm_daily_ops`, which the projector feeds under the same
//!    checkpoint. Dead letters at or below the heads are dropped, then the
//!    tables are swapped (whole) or the tenant's rows are replaced
//!    (`--tenant`). The projector then goes on from the checkpoints: events it
//!    has not applied yet arrive as usual, older ones are duplicates.
//!
//! Code map: `read` (cursor over the events), `fold` (a stream into rows),
//! `sink` (COPY into the rebuild tables), `swap` (the one transaction that
//! makes them live); this file runs them in order.

use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::{Connection, PgConnection};
use tokio::sync::mpsc;

mod fold;
mod read;
mod sink;
mod swap;
#[cfg(test)]
mod tests;

pub use fold::{fold_event, LedgerRow, MemberRow};
pub use read::{fetch_page, open_cursor, StoredMemberEvent};
use sink::*;
use swap::*;

/// Events read per keyset page.
pub const PAGE_ROWS: i64 = 5_000;
/// Pages read ahead of the folding.
pub const PAGES_AHEAD_MAX: usize = 4;
/// Rows buffered per table before a `COPY` is sent.
pub const COPY_ROWS_MAX: usize = 20_000;
/// Streams the live projector may move past the replay before the swap; more
/// means the replay raced a busy projector: run it again.
pub const CATCH_UP_STREAMS_MAX: usize = 10_000;
/// Session advisory lock: one member rebuild per shard at a time.
pub const REBUILD_LOCK_KEY: i64 = 0x7778_636d_5f72_6262; // "wxcm_rbb"

const LIVE_MEMBERS: &str = "rm_members";
const LIVE_LEDGER: &str = "rm_member_ledger";
const NEW_MEMBERS: &str = "rm_members_rebuild";
const NEW_LEDGER: &str = "rm_member_ledger_rebuild";
const OLD_MEMBERS: &str = "rm_members_old";
const OLD_LEDGER: &str = "rm_member_ledger_old";

const MEMBER_COLUMNS: &str = "tenant_id, member_id, card_no, openid, card_level, source, registered_at, \
     points, held_points, balance_fen, lifetime_points, version, followed, follow_source, scene, referrer_id, \
     followed_at, unfollowed_at";
const LEDGER_COLUMNS: &str = "tenant_id, member_id, sequence, event_id, event_type, recorded_at, points_delta, \
     held_delta, cash_delta_fen, points_after, held_after, balance_after_fen, actor, reason, reference, idempotency_key";

/// The cursor over member events, in (stream, sequence) order: the primary
/// key's order, so the scan needs no sort and a cursor's fast-start plan uses
/// the index.
const CURSOR: &str = "rebuild_member_events";

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("rebuild database")]
    Database(#[from] sqlx::Error),
    #[error("member/{member_id} seq {sequence}: {reason}")]
    Fold { member_id: String, sequence: i64, reason: String },
    #[error("another member rebuild is running on this shard")]
    Busy,
    #[error("{streams} streams moved on during the replay (at most {CATCH_UP_STREAMS_MAX}): run the rebuild again")]
    TooBusy { streams: usize },
    #[error("the event reader stopped")]
    Reader,
}

/// What to rebuild.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebuildScope {
    /// Every member of the shard: the tables are swapped.
    Shard,
    /// One tenant's rows are replaced in one transaction.
    Tenant(String),
}

impl RebuildScope {
    fn tenant(&self) -> Option<&str> {
        match self {
            RebuildScope::Shard => None,
            RebuildScope::Tenant(t) => Some(t),
        }
    }
}

/// Figures of one rebuild.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RebuildReport {
    pub events: u64,
    pub members: u64,
    pub ledger_lines: u64,
    /// Streams folded again in the swap transaction (the projector had moved on).
    pub caught_up_streams: u64,
    pub elapsed_ms: u64,
    pub events_per_s: u64,
}

/// The member events the rebuild will read (for a progress bar).
pub async fn count_events(conn: &mut PgConnection, scope: &RebuildScope) -> Result<u64, sqlx::Error> {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_type = 'member' AND ($1::text IS NULL OR tenant_id = $1)",
    )
    .bind(scope.tenant())
    .fetch_one(conn)
    .await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Rebuilds the member read models of one shard. `writer` and `reader` are the
/// owner's connections (the rebuild creates and renames tables); `progress` is
/// called with the events folded so far.
pub async fn rebuild_members(
    writer: &mut PgConnection,
    reader: PgConnection,
    scope: &RebuildScope,
    mut progress: impl FnMut(u64),
) -> Result<RebuildReport, RebuildError> {
    let started = Instant::now();
    let locked: bool =
        sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(REBUILD_LOCK_KEY).fetch_one(&mut *writer).await?;
    if !locked {
        return Err(RebuildError::Busy);
    }
    let outcome = rebuild_locked(writer, reader, scope, &mut progress).await;
    let _ = sqlx::query("SELECT pg_advisory_unlock($1)").bind(REBUILD_LOCK_KEY).execute(&mut *writer).await;
    let mut report = outcome?;
    report.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    report.events_per_s = per_second(report.events, started.elapsed());
    Ok(report)
}

fn per_second(count: u64, elapsed: Duration) -> u64 {
    let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX).max(1);
    count.saturating_mul(1_000_000) / us
}

async fn rebuild_locked(
    writer: &mut PgConnection,
    reader: PgConnection,
    scope: &RebuildScope,
    progress: &mut impl FnMut(u64),
) -> Result<RebuildReport, RebuildError> {
    prepare_tables(writer).await?;
    let mut report = RebuildReport::default();
    let mut sink = Sink::default();
    let (tx, mut rx) = mpsc::channel::<Result<Vec<StoredMemberEvent>, sqlx::Error>>(PAGES_AHEAD_MAX);
    let tenant = scope.tenant().map(str::to_owned);
    let reader_task = tokio::spawn(read_all(reader, tenant, tx));
    let mut current: Option<MemberRow> = None;
    while let Some(page) = rx.recv().await {
        for stored in page? {
            if current.as_ref().is_some_and(|m| m.member_id != stored.aggregate_id) {
                sink.finish_member(current.take());
            }
            sink.fold(&mut current, &stored)?;
            report.events += 1;
        }
        sink.flush_full(writer).await?;
        progress(report.events);
    }
    reader_task.await.map_err(|_| RebuildError::Reader)?;
    sink.finish_member(current.take());
    sink.flush(writer).await?;
    // The swap's joins need the temporary table's statistics (autovacuum never sees it).
    sqlx::query("ANALYZE rebuild_heads").execute(&mut *writer).await?;
    report.members = sink.members_written;
    report.ledger_lines = sink.ledger_written;
    report.caught_up_streams = swap(writer, scope, &mut sink).await?;
    Ok(report)
}

/// Reads every page and hands it to the folding; stops when the receiver is gone.
async fn read_all(
    mut conn: PgConnection,
    tenant: Option<String>,
    tx: mpsc::Sender<Result<Vec<StoredMemberEvent>, sqlx::Error>>,
) {
    let opened = match conn.begin().await {
        Ok(mut snapshot) => match open_cursor(&mut snapshot, tenant.as_deref()).await {
            Ok(()) => Ok(snapshot),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    let mut snapshot = match opened {
        Ok(snapshot) => snapshot,
        Err(e) => {
            let _ = tx.send(Err(e)).await;
            return;
        }
    };
    loop {
        let page = fetch_page(&mut snapshot, PAGE_ROWS).await;
        let done = page.as_ref().map_or(true, Vec::is_empty);
        if tx.send(page).await.is_err() || done {
            break;
        }
    }
    let _ = snapshot.rollback().await;
}

async fn prepare_tables(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    for statement in [
        format!("DROP TABLE IF EXISTS {NEW_MEMBERS}, {NEW_LEDGER}, {OLD_MEMBERS}, {OLD_LEDGER}"),
        format!("CREATE TABLE {NEW_MEMBERS} (LIKE {LIVE_MEMBERS} INCLUDING ALL)"),
        format!("CREATE TABLE {NEW_LEDGER} (LIKE {LIVE_LEDGER} INCLUDING ALL)"),
        "DROP TABLE IF EXISTS pg_temp.rebuild_heads".to_owned(),
        "CREATE TEMP TABLE rebuild_heads (aggregate_id text PRIMARY KEY, tenant_id text NOT NULL,
            sequence bigint NOT NULL, event_id uuid NOT NULL, recorded_at timestamptz NOT NULL)"
            .to_owned(),
    ] {
        sqlx::query(&statement).execute(&mut *conn).await?;
    }
    Ok(())
}
