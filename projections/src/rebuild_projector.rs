//! Rebuilding the read model of a projector that keeps one table per
//! aggregate type plus counters in `rm_daily_ops` (coupons, mall orders) from
//! the event store: in one transaction that takes the projector's lock order
//! (`projection_checkpoints` first), the scope's rows and counters are deleted
//! and every event of the aggregate type is applied again with the projector's
//! own code, then the checkpoints are set to the replayed heads and the scope's
//! dead letters dropped. The live projector goes on from there (older messages
//! are duplicates). Projections on the shard wait for the transaction: it is
//! meant for repairs, not for routine use at scale.

use futures::TryStreamExt;
use sqlx::{Connection, PgConnection};

use crate::daily::Counters;
use crate::rebuild::RebuildScope;
use crate::runtime::{ApplyError, Projector};

/// What a rebuild replayed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProjectorRebuildReport {
    pub events: u64,
    /// Streams replayed (one per coupon, one per order).
    pub streams: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ProjectorRebuildError {
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    /// The projector refused an event: nothing was changed.
    #[error("{aggregate_type}/{stream} seq {sequence}: {reason}")]
    Apply { aggregate_type: &'static str, stream: String, sequence: i64, reason: String },
    #[error("daily counters: {0}")]
    Counters(String),
}

/// The read model a projector keeps: its tables (each with a `tenant_id`
/// column; none for a projector of counters only) and the metrics of
/// `rm_daily_ops` only it feeds.
#[derive(Debug, Clone, Copy)]
pub struct ReadModel {
    pub tables: &'static [&'static str],
    pub metrics: &'static [&'static str],
}

/// Checkpoint rows written per statement (6 arrays, one bind each).
const CHECKPOINTS_PER_STATEMENT: usize = 5_000;

const EVENTS_SQL: &str = r#"
SELECT event_id, tenant_id, aggregate_type, aggregate_id, sequence, event_type, event_version,
       to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS recorded_at,
       encode(prev_hash, 'hex') AS prev_hash, encode(hash, 'hex') AS hash, payload, metadata
  FROM events
 WHERE aggregate_type = $1 AND ($2::text IS NULL OR tenant_id = $2)
 ORDER BY aggregate_id, sequence"#;

/// A replayed stream's head: (tenant, id, sequence, event id, recorded at).
type Head = (String, String, i64, uuid::Uuid, String);

/// Rebuilds `model` of the shard (or of one tenant) on `conn` (an
/// administrative connection) by applying every event of the projector's
/// aggregate type, with `reader` streaming the events.
pub async fn rebuild_with<P: Projector>(
    projector: &P,
    model: ReadModel,
    conn: &mut PgConnection,
    mut reader: PgConnection,
    scope: &RebuildScope,
) -> Result<ProjectorRebuildReport, ProjectorRebuildError> {
    let tenant = match scope {
        RebuildScope::Shard => None,
        RebuildScope::Tenant(t) => Some(t.clone()),
    };
    let aggregate_type = projector.aggregate_type();
    let mut tx = conn.begin().await?;
    sqlx::query("LOCK TABLE projection_checkpoints IN EXCLUSIVE MODE").execute(&mut *tx).await?;
    let in_scope = "($1::text IS NULL OR tenant_id = $1)";
    for table in model.tables {
        sqlx::query(&format!("DELETE FROM {table} WHERE {in_scope}")).bind(&tenant).execute(&mut *tx).await?;
    }
    sqlx::query(&format!("DELETE FROM rm_daily_ops WHERE {in_scope} AND metric = ANY($2)"))
        .bind(&tenant)
        .bind(model.metrics)
        .execute(&mut *tx)
        .await?;
    let mut report = ProjectorRebuildReport::default();
    // The reader sees what is committed; the checkpoint lock keeps the
    // projector from applying anything meanwhile, and each stream's head is
    // what was replayed.
    let mut heads: Vec<Head> = Vec::new();
    let mut counters = Counters::default();
    {
        let mut rows = sqlx::query(EVENTS_SQL).bind(aggregate_type).bind(&tenant).fetch(&mut reader);
        while let Some(row) = rows.try_next().await? {
            let event = crate::envelope::from_row(&row)?;
            projector.apply(&mut tx, &event, &mut counters).await.map_err(|e| ProjectorRebuildError::Apply {
                aggregate_type,
                stream: event.aggregate_id.clone(),
                sequence: event.sequence,
                reason: e.to_string(),
            })?;
            report.events += 1;
            let head = (event.tenant_id, event.aggregate_id, event.sequence, event.event_id, event.recorded_at);
            match heads.last_mut() {
                Some(last) if last.1 == head.1 => *last = head,
                _ => {
                    report.streams += 1;
                    heads.push(head);
                }
            }
        }
    }
    counters.write(&mut tx).await.map_err(|e| match e {
        ApplyError::Database(e) => ProjectorRebuildError::Sql(e),
        ApplyError::Invalid(reason) => ProjectorRebuildError::Counters(reason),
    })?;
    let name = projector.name();
    sqlx::query(&format!("DELETE FROM projection_checkpoints WHERE projector = $2 AND {in_scope}"))
        .bind(&tenant)
        .bind(name)
        .execute(&mut *tx)
        .await?;
    for chunk in heads.chunks(CHECKPOINTS_PER_STATEMENT) {
        let tenants: Vec<&str> = chunk.iter().map(|h| h.0.as_str()).collect();
        let ids: Vec<&str> = chunk.iter().map(|h| h.1.as_str()).collect();
        let sequences: Vec<i64> = chunk.iter().map(|h| h.2).collect();
        let event_ids: Vec<uuid::Uuid> = chunk.iter().map(|h| h.3).collect();
        let recorded: Vec<&str> = chunk.iter().map(|h| h.4.as_str()).collect();
        sqlx::query(
            "INSERT INTO projection_checkpoints (projector, aggregate_type, aggregate_id, tenant_id, sequence,
                                                 event_id, recorded_at)
             SELECT $1, $2, i, t, s, e, r::timestamptz
               FROM unnest($3::text[], $4::text[], $5::bigint[], $6::uuid[], $7::text[]) AS u(t, i, s, e, r)",
        )
        .bind(name)
        .bind(aggregate_type)
        .bind(&tenants)
        .bind(&ids)
        .bind(&sequences)
        .bind(&event_ids)
        .bind(&recorded)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query(&format!("DELETE FROM projection_dead_letters WHERE projector = $2 AND {in_scope}"))
        .bind(&tenant)
        .bind(name)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(report)
}
