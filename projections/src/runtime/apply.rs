//! Applying: one event in one transaction under its stream's checkpoint, gaps filled from the event store.

use sqlx::PgConnection;
use tracing::{debug, warn};
use wxcm_domain::TenantId;

use crate::daily::Counters;
use crate::envelope::{load_events, RelayedEvent};

use super::consume::stream_key;
use super::*;

impl<P: Projector> ProjectorRuntime<P> {
    pub(super) fn owns(&self, tenant: &str) -> bool {
        let Ok(tenant) = TenantId::parse(tenant) else {
            warn!(tenant, "event of an invalid tenant id ignored");
            return false;
        };
        self.router.route(&tenant).map(|s| s.name == self.shard).unwrap_or(false)
    }

    /// Applies `event` (after any missing predecessors) and moves the
    /// checkpoint, in one transaction. Does not touch JetStream: a caller that
    /// stops between this and the ack leaves a duplicate, which is skipped.
    pub async fn project(&self, event: &RelayedEvent) -> Result<Outcome, ProjectionError> {
        let name = self.projector.name();
        let mut tx = self.pool.begin().await?;
        sqlx::query(ENSURE_CHECKPOINT)
            .bind(name)
            .bind(&event.aggregate_type)
            .bind(&event.aggregate_id)
            .bind(&event.tenant_id)
            .execute(&mut *tx)
            .await?;
        let checkpoint: i64 = sqlx::query_scalar(LOCK_CHECKPOINT)
            .bind(name)
            .bind(&event.aggregate_type)
            .bind(&event.aggregate_id)
            .fetch_one(&mut *tx)
            .await?;
        if event.sequence <= checkpoint {
            tx.commit().await?;
            return Ok(Outcome::Duplicate);
        }
        let parked: bool = sqlx::query_scalar(STREAM_PARKED)
            .bind(name)
            .bind(&event.aggregate_type)
            .bind(&event.aggregate_id)
            .fetch_one(&mut *tx)
            .await?;
        if parked {
            tx.rollback().await?;
            self.record_failure(event, "an earlier event of this stream is parked", 1, true).await?;
            return Ok(Outcome::Parked);
        }
        let mut counters = Counters::default();
        let filled = self.fill_gap(&mut tx, event, checkpoint, &mut counters).await?;
        self.apply_one(&mut tx, event, &mut counters).await?;
        self.write_counters(&mut tx, event, &mut counters).await?;
        sqlx::query(CLEAR_FAILURES)
            .bind(name)
            .bind(&event.aggregate_type)
            .bind(&event.aggregate_id)
            .bind(event.sequence)
            .execute(&mut *tx)
            .await?;
        sqlx::query(SET_CHECKPOINT)
            .bind(name)
            .bind(&event.aggregate_type)
            .bind(&event.aggregate_id)
            .bind(event.sequence)
            .bind(event.event_id)
            .bind(event.recorded_at_utc())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Outcome::Applied { filled })
    }

    /// Applies events `checkpoint+1 .. event.sequence-1` from the event store.
    pub(super) async fn fill_gap(
        &self,
        conn: &mut PgConnection,
        event: &RelayedEvent,
        checkpoint: i64,
        counters: &mut Counters,
    ) -> Result<usize, ProjectionError> {
        let (first, last) = (checkpoint + 1, event.sequence - 1);
        if first > last {
            return Ok(0);
        }
        let last_applied =
            self.apply_stored(conn, &event.aggregate_type, &event.aggregate_id, first, last, counters).await?;
        // One stream, one tenant (the insert trigger refuses a change): a different
        // tenant means the message does not describe this shard's stream.
        if last_applied.is_some_and(|e| e.tenant_id != event.tenant_id) {
            return Err(ProjectionError::Gap { stream: stream_key(event), from: first, to: last });
        }
        debug!(stream = %stream_key(event), from = first, to = last, "filled a gap from the event store");
        Ok(usize::try_from(last - first + 1).unwrap_or(usize::MAX))
    }

    /// Applies events `first..=last` of one stream from the event store, in
    /// order; all of them must exist. Returns the last one applied (`None` when
    /// the range is empty).
    pub(super) async fn apply_stored(
        &self,
        conn: &mut PgConnection,
        aggregate_type: &str,
        aggregate_id: &str,
        first: i64,
        last: i64,
        counters: &mut Counters,
    ) -> Result<Option<RelayedEvent>, ProjectionError> {
        let gap = || ProjectionError::Gap { stream: format!("{aggregate_type}/{aggregate_id}"), from: first, to: last };
        if last - first + 1 > GAP_FILL_EVENTS_MAX {
            return Err(gap());
        }
        let mut next = first;
        let mut last_applied = None;
        while next <= last {
            let to = (next + GAP_FILL_CHUNK - 1).min(last);
            let events = load_events(conn, aggregate_type, aggregate_id, next, to).await?;
            for stored in events {
                // The store has no holes: anything else is refused.
                if stored.sequence != next {
                    return Err(gap());
                }
                self.apply_one(conn, &stored, counters).await?;
                next += 1;
                last_applied = Some(stored);
            }
            if next <= to {
                return Err(gap());
            }
        }
        Ok(last_applied)
    }

    pub(super) async fn apply_one(
        &self,
        conn: &mut PgConnection,
        event: &RelayedEvent,
        counters: &mut Counters,
    ) -> Result<(), ProjectionError> {
        self.projector.apply(conn, event, counters).await.map_err(|source| ProjectionError::Apply {
            stream: stream_key(event),
            sequence: event.sequence,
            source,
        })
    }

    /// Writes what the events applied in this transaction counted; `last` is
    /// the last of them (named in the error).
    pub(super) async fn write_counters(
        &self,
        conn: &mut PgConnection,
        last: &RelayedEvent,
        counters: &mut Counters,
    ) -> Result<(), ProjectionError> {
        counters.write(conn).await.map_err(|source| ProjectionError::Apply {
            stream: stream_key(last),
            sequence: last.sequence,
            source,
        })
    }
}
