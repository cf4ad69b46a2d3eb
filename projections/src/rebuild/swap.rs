//! The swap: checkpoints moved to the replayed heads, streams the projector moved past refolded, tables or rows replaced.

use std::collections::HashMap;

use chrono::NaiveDate;
use futures::TryStreamExt;
use sqlx::{Connection, PgConnection};
use wxcm_domain::member::MemberEvent;

use crate::daily;
use crate::follows::{self, FollowChange};
use crate::members::MemberProjector;

use super::read::*;
use super::*;

/// Streams (in scope) whose checkpoint is beyond what the replay folded.
pub(super) const MOVED_ON: &str = "
SELECT c.aggregate_id FROM projection_checkpoints c
 WHERE c.projector = $1 AND c.aggregate_type = 'member' AND ($2::text IS NULL OR c.tenant_id = $2)
   AND c.sequence > coalesce((SELECT h.sequence FROM rebuild_heads h WHERE h.aggregate_id = c.aggregate_id), 0)";

pub(super) const ADVANCE_CHECKPOINTS: &str = "
INSERT INTO projection_checkpoints (projector, aggregate_type, aggregate_id, tenant_id, sequence, event_id, recorded_at)
SELECT $1, 'member', aggregate_id, tenant_id, sequence, event_id, recorded_at FROM rebuild_heads
ON CONFLICT (projector, aggregate_type, aggregate_id) DO UPDATE
   SET sequence = EXCLUDED.sequence, event_id = EXCLUDED.event_id, recorded_at = EXCLUDED.recorded_at,
       updated_at = now()
 WHERE projection_checkpoints.sequence < EXCLUDED.sequence";

pub(super) const CLEAR_REPLAYED_LETTERS: &str = "
DELETE FROM projection_dead_letters d
 WHERE d.projector = $1 AND d.aggregate_type = 'member'
   AND d.sequence <= (SELECT h.sequence FROM rebuild_heads h WHERE h.aggregate_id = d.aggregate_id)";

/// The swap transaction; returns the number of streams folded again.
pub(super) async fn swap(
    writer: &mut PgConnection,
    scope: &RebuildScope,
    sink: &mut Sink,
) -> Result<u64, RebuildError> {
    let projector = MemberProjector::NAME;
    let mut tx = writer.begin().await?;
    sqlx::query("LOCK TABLE projection_checkpoints IN EXCLUSIVE MODE").execute(&mut *tx).await?;
    if *scope == RebuildScope::Shard {
        sqlx::query(&format!("LOCK TABLE {LIVE_MEMBERS}, {LIVE_LEDGER} IN ACCESS EXCLUSIVE MODE"))
            .execute(&mut *tx)
            .await?;
    }
    let moved: Vec<String> =
        sqlx::query_scalar(MOVED_ON).bind(projector).bind(scope.tenant()).fetch_all(&mut *tx).await?;
    if moved.len() > CATCH_UP_STREAMS_MAX {
        return Err(RebuildError::TooBusy { streams: moved.len() });
    }
    for member_id in &moved {
        refold_stream(&mut tx, sink, member_id).await?;
    }
    count_skipped_daily_ops(&mut tx).await?;
    sqlx::query(ADVANCE_CHECKPOINTS).bind(projector).execute(&mut *tx).await?;
    sqlx::query(CLEAR_REPLAYED_LETTERS).bind(projector).execute(&mut *tx).await?;
    match scope {
        RebuildScope::Shard => {
            let renames = index_renames(&mut tx).await?;
            for statement in [
                format!("ALTER TABLE {LIVE_MEMBERS} RENAME TO {OLD_MEMBERS}"),
                format!("ALTER TABLE {LIVE_LEDGER} RENAME TO {OLD_LEDGER}"),
                format!("ALTER TABLE {NEW_MEMBERS} RENAME TO {LIVE_MEMBERS}"),
                format!("ALTER TABLE {NEW_LEDGER} RENAME TO {LIVE_LEDGER}"),
                format!("DROP TABLE {OLD_MEMBERS}, {OLD_LEDGER}"),
            ] {
                sqlx::query(&statement).execute(&mut *tx).await?;
            }
            for (from, to) in renames {
                sqlx::query(&format!("ALTER INDEX {} RENAME TO {}", quote(&from), quote(&to)))
                    .execute(&mut *tx)
                    .await?;
            }
        }
        RebuildScope::Tenant(tenant) => {
            for (live, new) in [(LIVE_MEMBERS, NEW_MEMBERS), (LIVE_LEDGER, NEW_LEDGER)] {
                sqlx::query(&format!("DELETE FROM {live} WHERE tenant_id = $1")).bind(tenant).execute(&mut *tx).await?;
                let columns = if live == LIVE_MEMBERS { MEMBER_COLUMNS } else { LEDGER_COLUMNS };
                sqlx::query(&format!("INSERT INTO {live} ({columns}) SELECT {columns} FROM {new}"))
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query(&format!("DROP TABLE {NEW_MEMBERS}, {NEW_LEDGER}")).execute(&mut *tx).await?;
        }
    }
    sqlx::query(&format!("GRANT SELECT, INSERT, UPDATE, DELETE ON {LIVE_MEMBERS}, {LIVE_LEDGER} TO wxcm_app"))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(moved.len() as u64)
}

/// Events the rebuilt tables include but the projector has not applied:
/// (checkpoint, head] of every replayed stream.
pub(super) const SKIPPED_EVENTS: &str = "
SELECT e.aggregate_id, e.tenant_id, e.sequence, e.event_id, e.event_type, e.event_version, e.recorded_at,
       e.payload::text AS payload
  FROM (SELECT h.aggregate_id, h.sequence AS head,
               coalesce((SELECT c.sequence FROM projection_checkpoints c
                          WHERE c.projector = $1 AND c.aggregate_type = 'member'
                            AND c.aggregate_id = h.aggregate_id), 0) AS checkpoint
          FROM rebuild_heads h) s
  JOIN LATERAL (SELECT * FROM events e
                 WHERE e.aggregate_type = 'member' AND e.aggregate_id = s.aggregate_id
                   AND e.sequence > s.checkpoint AND e.sequence <= s.head) e ON true
 WHERE s.checkpoint < s.head";

pub(super) const ADD_DAILY_OPS: &str = "
INSERT INTO rm_daily_ops (tenant_id, day, metric, dimension, value)
SELECT * FROM unnest($1::text[], $2::date[], $3::text[], $4::text[], $5::bigint[])
ON CONFLICT (tenant_id, day, metric, dimension) DO UPDATE SET value = rm_daily_ops.value + EXCLUDED.value";

/// `MemberProjector` also counts every event it applies in `rm_daily_ops`
/// under the same checkpoint. Moving the checkpoints over events it has not
/// applied would leave them uncounted, so they are counted here, once, in the
/// swap transaction (summed per counter, written in one statement per chunk).
pub(super) async fn count_skipped_daily_ops(conn: &mut PgConnection) -> Result<(), RebuildError> {
    let mut sums: HashMap<(String, NaiveDate, &'static str, String), i64> = HashMap::new();
    // Unfollows count under the follow source before them, looked up once the cursor is done.
    let mut unfollows = Vec::new();
    {
        let mut rows = sqlx::query(SKIPPED_EVENTS).bind(MemberProjector::NAME).fetch(&mut *conn);
        while let Some(row) = rows.try_next().await? {
            let stored = StoredMemberEvent::from_row(&row)?;
            let fail = |reason: String| RebuildError::Fold {
                member_id: stored.aggregate_id.clone(),
                sequence: stored.sequence,
                reason,
            };
            let event = stored.decode().map_err(fail)?;
            let day = daily::merchant_day(stored.recorded_at);
            if matches!(event, MemberEvent::MemberUnfollowed { .. }) {
                unfollows.push((stored, event));
                continue;
            }
            for delta in daily::deltas(&event, None).map_err(|e| fail(e.to_string()))? {
                *sums.entry((stored.tenant_id.clone(), day, delta.metric, delta.dimension)).or_default() += delta.value;
            }
        }
    }
    for (stored, event) in unfollows {
        let source = follow_source_before(conn, &stored).await?;
        let day = daily::merchant_day(stored.recorded_at);
        let deltas = daily::deltas(&event, source.as_deref()).map_err(|e| RebuildError::Fold {
            member_id: stored.aggregate_id.clone(),
            sequence: stored.sequence,
            reason: e.to_string(),
        })?;
        for delta in deltas {
            *sums.entry((stored.tenant_id.clone(), day, delta.metric, delta.dimension)).or_default() += delta.value;
        }
    }
    let sums: Vec<_> = sums.into_iter().collect();
    for chunk in sums.chunks(COPY_ROWS_MAX) {
        let tenants: Vec<&str> = chunk.iter().map(|((t, ..), _)| t.as_str()).collect();
        let days: Vec<NaiveDate> = chunk.iter().map(|((_, d, ..), _)| *d).collect();
        let metrics: Vec<&str> = chunk.iter().map(|((_, _, m, _), _)| *m).collect();
        let dimensions: Vec<&str> = chunk.iter().map(|((.., d), _)| d.as_str()).collect();
        let values: Vec<i64> = chunk.iter().map(|(_, v)| *v).collect();
        sqlx::query(ADD_DAILY_OPS)
            .bind(tenants)
            .bind(days)
            .bind(metrics)
            .bind(dimensions)
            .bind(values)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// The latest follow (or subscribe registration) of the stream before `stored`.
pub(super) const LAST_FOLLOW: &str = "
SELECT aggregate_id, tenant_id, sequence, event_id, event_type, event_version, recorded_at, payload::text AS payload
  FROM events
 WHERE aggregate_type = 'member' AND aggregate_id = $1 AND sequence < $2
   AND event_type IN ('MemberFollowed', 'MemberRegistered')
 ORDER BY sequence DESC LIMIT 1";

/// The member's follow source when the event `stored` happened (none if it never followed).
pub(super) async fn follow_source_before(
    conn: &mut PgConnection,
    stored: &StoredMemberEvent,
) -> Result<Option<String>, RebuildError> {
    let Some(row) =
        sqlx::query(LAST_FOLLOW).bind(&stored.aggregate_id).bind(stored.sequence).fetch_optional(&mut *conn).await?
    else {
        return Ok(None);
    };
    let previous = StoredMemberEvent::from_row(&row)?;
    let event = previous.decode().map_err(|reason| RebuildError::Fold {
        member_id: previous.aggregate_id.clone(),
        sequence: previous.sequence,
        reason,
    })?;
    Ok(match follows::change_of(&event) {
        FollowChange::Follow { source, .. } => Some(source.to_owned()),
        FollowChange::Unfollow { .. } | FollowChange::None => None,
    })
}

/// Replaces one stream's rows and head in the rebuild tables by a fold of
/// every event the store holds now.
pub(super) async fn refold_stream(
    conn: &mut PgConnection,
    sink: &mut Sink,
    member_id: &str,
) -> Result<(), RebuildError> {
    for table in [NEW_MEMBERS, NEW_LEDGER] {
        sqlx::query(&format!("DELETE FROM {table} WHERE member_id = $1")).bind(member_id).execute(&mut *conn).await?;
    }
    sqlx::query("DELETE FROM rebuild_heads WHERE aggregate_id = $1").bind(member_id).execute(&mut *conn).await?;
    let rows = sqlx::query(SELECT_STREAM).bind(member_id).fetch_all(&mut *conn).await?;
    let mut current = None;
    for row in &rows {
        sink.fold(&mut current, &StoredMemberEvent::from_row(row)?)?;
    }
    sink.finish_member(current);
    sink.flush(conn).await?;
    Ok(())
}

/// Index names of the rebuilt tables → the live tables' names, matched by
/// definition, so a swap keeps the names the migrations gave.
pub(super) async fn index_renames(conn: &mut PgConnection) -> Result<Vec<(String, String)>, sqlx::Error> {
    const INDEXES: &str = "SELECT c.relname::text, pg_get_indexdef(c.oid) FROM pg_index i
        JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = $1::regclass ORDER BY c.relname";
    let mut renames = Vec::new();
    for (live, new) in [(LIVE_MEMBERS, NEW_MEMBERS), (LIVE_LEDGER, NEW_LEDGER)] {
        let old: Vec<(String, String)> = sqlx::query_as(INDEXES).bind(live).fetch_all(&mut *conn).await?;
        let mut by_shape: HashMap<String, Vec<String>> = HashMap::new();
        for (name, def) in old {
            by_shape.entry(index_shape(&def)).or_default().push(name);
        }
        let rebuilt: Vec<(String, String)> = sqlx::query_as(INDEXES).bind(new).fetch_all(&mut *conn).await?;
        for (name, def) in rebuilt {
            if let Some(target) = by_shape.get_mut(&index_shape(&def)).and_then(Vec::pop) {
                if target != name {
                    renames.push((name, target));
                }
            }
        }
    }
    Ok(renames)
}

/// An index definition without its name and table: `UNIQUE USING btree (...)`.
pub(super) fn index_shape(def: &str) -> String {
    let unique = def.starts_with("CREATE UNIQUE");
    let body = def.find(" USING ").map_or(def, |i| &def[i..]);
    format!("{}{body}", if unique { "UNIQUE" } else { "" })
}

pub(super) fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}
