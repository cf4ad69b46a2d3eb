//! The batch path: every event of a fetched batch applied in one transaction.
//!
//! One transaction per event made the projector's throughput that of
//! Postgres commits under the tenant's counter lock (about 300 events/s on
//! the 2-core machine, below a 500/s burst). A batch locks its streams'
//! checkpoints once, applies each stream's events in sequence order (gaps
//! filled from the event store as on the single path), adds the counters of
//! all of them in one statement and moves every checkpoint in one more. The
//! guarantees are the single path's: a checkpoint moves with the read model,
//! an event at or below it is a duplicate, a parked stream applies nothing.
//! When anything in the batch fails, the transaction rolls back and the
//! caller handles the batch message by message, which finds the failing
//! event, records it and applies the others.

use std::collections::BTreeMap;

use sqlx::PgConnection;

use crate::daily::Counters;
use crate::envelope::RelayedEvent;

use super::*;

/// The streams' checkpoints of a batch, created if missing.
const ENSURE_CHECKPOINTS: &str =
    "INSERT INTO projection_checkpoints (projector, aggregate_type, aggregate_id, tenant_id, sequence)
     SELECT $1, $2, s.aggregate_id, s.tenant_id, 0
       FROM unnest($3::text[], $4::text[]) AS s(aggregate_id, tenant_id)
      ORDER BY s.aggregate_id
     ON CONFLICT DO NOTHING";
/// Locked in one order (by id), so two transactions never wait on each other in a cycle.
const LOCK_CHECKPOINTS: &str = "SELECT aggregate_id, sequence FROM projection_checkpoints
     WHERE projector = $1 AND aggregate_type = $2 AND aggregate_id = ANY($3::text[])
     ORDER BY aggregate_id FOR UPDATE";
const PARKED_STREAMS: &str = "SELECT DISTINCT aggregate_id FROM projection_dead_letters
     WHERE projector = $1 AND aggregate_type = $2 AND aggregate_id = ANY($3::text[]) AND parked_at IS NOT NULL";
const SET_CHECKPOINTS: &str = "UPDATE projection_checkpoints AS c
     SET sequence = v.sequence, event_id = v.event_id, recorded_at = v.recorded_at, updated_at = now()
     FROM unnest($3::text[], $4::bigint[], $5::uuid[], $6::timestamptz[])
          AS v(aggregate_id, sequence, event_id, recorded_at)
     WHERE c.projector = $1 AND c.aggregate_type = $2 AND c.aggregate_id = v.aggregate_id";
const CLEAR_BATCH_FAILURES: &str = "DELETE FROM projection_dead_letters AS d
     USING unnest($3::text[], $4::bigint[]) AS v(aggregate_id, sequence)
     WHERE d.projector = $1 AND d.aggregate_type = $2 AND d.aggregate_id = v.aggregate_id
       AND d.sequence <= v.sequence AND d.parked_at IS NULL";

/// One stream's events of a batch, by their index in the batch.
struct StreamEvents<'a> {
    tenant_id: &'a str,
    events: Vec<(usize, &'a RelayedEvent)>,
}

impl<P: Projector> ProjectorRuntime<P> {
    /// Applies `events` (all of this projector's aggregate type and this
    /// shard) in one transaction and returns each one's outcome, in the
    /// order given. On an error nothing is committed. A `Parked` outcome is
    /// not yet recorded as a dead letter: the caller does that after the
    /// commit, as the single path does after its rollback.
    pub async fn project_batch(&self, events: &[RelayedEvent]) -> Result<Vec<Outcome>, ProjectionError> {
        let name = self.projector.name();
        let aggregate_type = self.projector.aggregate_type();
        let mut streams: BTreeMap<&str, StreamEvents<'_>> = BTreeMap::new();
        for (index, event) in events.iter().enumerate() {
            if event.aggregate_type != aggregate_type {
                return Err(ProjectionError::Apply {
                    stream: super::consume::stream_key(event),
                    sequence: event.sequence,
                    source: ApplyError::Invalid(format!("not a {aggregate_type} event")),
                });
            }
            let stream = streams
                .entry(event.aggregate_id.as_str())
                .or_insert_with(|| StreamEvents { tenant_id: &event.tenant_id, events: Vec::new() });
            if stream.tenant_id != event.tenant_id {
                return Err(ProjectionError::Gap {
                    stream: super::consume::stream_key(event),
                    from: event.sequence,
                    to: event.sequence,
                });
            }
            stream.events.push((index, event));
        }
        let mut outcomes = vec![Outcome::Duplicate; events.len()];
        if streams.is_empty() {
            return Ok(outcomes);
        }
        let ids: Vec<&str> = streams.keys().copied().collect();
        let tenants: Vec<&str> = streams.values().map(|s| s.tenant_id).collect();

        let mut tx = self.pool.begin().await?;
        sqlx::query(ENSURE_CHECKPOINTS)
            .bind(name)
            .bind(aggregate_type)
            .bind(&ids)
            .bind(&tenants)
            .execute(&mut *tx)
            .await?;
        let checkpoints: BTreeMap<String, i64> = sqlx::query_as::<_, (String, i64)>(LOCK_CHECKPOINTS)
            .bind(name)
            .bind(aggregate_type)
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect();
        let parked: Vec<String> =
            sqlx::query_scalar(PARKED_STREAMS).bind(name).bind(aggregate_type).bind(&ids).fetch_all(&mut *tx).await?;

        let mut counters = Counters::default();
        let mut heads: Vec<&RelayedEvent> = Vec::new();
        for (id, stream) in &mut streams {
            let Some(&checkpoint) = checkpoints.get(*id) else {
                // Ensured above in this transaction: its absence is a broken invariant.
                return Err(ProjectionError::Invariant(format!("checkpoint of {aggregate_type}/{id} not found")));
            };
            if parked.iter().any(|p| p == id) {
                for (index, event) in &stream.events {
                    if event.sequence > checkpoint {
                        outcomes[*index] = Outcome::Parked;
                    }
                }
                continue;
            }
            stream.events.sort_by_key(|(_, e)| e.sequence);
            let head = self.apply_stream(&mut tx, checkpoint, &stream.events, &mut outcomes, &mut counters).await?;
            if let Some(head) = head {
                heads.push(head);
            }
        }
        if let Some(last) = heads.last() {
            self.write_counters(&mut tx, last, &mut counters).await?;
            self.move_checkpoints(&mut tx, &heads).await?;
        }
        tx.commit().await?;
        Ok(outcomes)
    }

    /// Applies one stream's events (sorted by sequence) above `checkpoint`,
    /// each after any missing predecessors. Returns the last one applied.
    async fn apply_stream<'a>(
        &self,
        conn: &mut PgConnection,
        checkpoint: i64,
        events: &[(usize, &'a RelayedEvent)],
        outcomes: &mut [Outcome],
        counters: &mut Counters,
    ) -> Result<Option<&'a RelayedEvent>, ProjectionError> {
        let mut at = checkpoint;
        let mut head = None;
        for &(index, event) in events {
            if event.sequence <= at {
                // Below the checkpoint, or a second copy within this batch.
                outcomes[index] = Outcome::Duplicate;
                continue;
            }
            let filled = self.fill_gap(conn, event, at, counters).await?;
            self.apply_one(conn, event, counters).await?;
            outcomes[index] = Outcome::Applied { filled };
            at = event.sequence;
            head = Some(event);
        }
        Ok(head)
    }

    /// Moves each stream's checkpoint to its head and clears its unparked
    /// failures at or below it.
    async fn move_checkpoints(&self, conn: &mut PgConnection, heads: &[&RelayedEvent]) -> Result<(), ProjectionError> {
        let name = self.projector.name();
        let aggregate_type = self.projector.aggregate_type();
        let ids: Vec<&str> = heads.iter().map(|e| e.aggregate_id.as_str()).collect();
        let sequences: Vec<i64> = heads.iter().map(|e| e.sequence).collect();
        let event_ids: Vec<uuid::Uuid> = heads.iter().map(|e| e.event_id).collect();
        let recorded: Vec<Option<chrono::DateTime<chrono::Utc>>> = heads.iter().map(|e| e.recorded_at_utc()).collect();
        sqlx::query(CLEAR_BATCH_FAILURES)
            .bind(name)
            .bind(aggregate_type)
            .bind(&ids)
            .bind(&sequences)
            .execute(&mut *conn)
            .await?;
        let moved = sqlx::query(SET_CHECKPOINTS)
            .bind(name)
            .bind(aggregate_type)
            .bind(&ids)
            .bind(&sequences)
            .bind(&event_ids)
            .bind(&recorded)
            .execute(&mut *conn)
            .await?
            .rows_affected();
        if moved != heads.len() as u64 {
            // Every row was locked above in this transaction.
            return Err(ProjectionError::Invariant(format!("moved {moved} of {} checkpoints", heads.len())));
        }
        Ok(())
    }
}
