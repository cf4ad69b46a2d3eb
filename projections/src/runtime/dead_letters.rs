//! Dead letters: failures recorded, streams parked, and an operator's retry.

use tracing::instrument;

use crate::envelope::RelayedEvent;

use super::*;

impl<P: Projector> ProjectorRuntime<P> {
    /// The operator's retry of a parked stream: applies the stream's events from
    /// the checkpoint up to its last parked event from the event store, moves the
    /// checkpoint and removes the stream's dead letters, in one transaction. On
    /// failure nothing changes. Returns the number of events applied (0 when the
    /// stream is not parked). Later events arriving from JetStream then apply
    /// normally (a gap, if any, is filled).
    #[instrument(skip_all, fields(projector = self.projector.name(), stream = %format!("{aggregate_type}/{aggregate_id}")))]
    pub async fn retry_parked(&self, aggregate_type: &str, aggregate_id: &str) -> Result<usize, ProjectionError> {
        let name = self.projector.name();
        let mut tx = self.pool.begin().await?;
        let (last_parked, tenant_id): (Option<i64>, Option<String>) =
            sqlx::query_as(LAST_PARKED).bind(name).bind(aggregate_type).bind(aggregate_id).fetch_one(&mut *tx).await?;
        let (Some(last_parked), Some(tenant_id)) = (last_parked, tenant_id) else {
            return Ok(0);
        };
        sqlx::query(ENSURE_CHECKPOINT)
            .bind(name)
            .bind(aggregate_type)
            .bind(aggregate_id)
            .bind(&tenant_id)
            .execute(&mut *tx)
            .await?;
        let checkpoint: i64 = sqlx::query_scalar(LOCK_CHECKPOINT)
            .bind(name)
            .bind(aggregate_type)
            .bind(aggregate_id)
            .fetch_one(&mut *tx)
            .await?;
        let mut counters = Counters::default();
        let last_applied = self
            .apply_stored(&mut tx, aggregate_type, aggregate_id, checkpoint + 1, last_parked, &mut counters)
            .await?;
        if let Some(last) = &last_applied {
            self.write_counters(&mut tx, last, &mut counters).await?;
            sqlx::query(SET_CHECKPOINT)
                .bind(name)
                .bind(aggregate_type)
                .bind(aggregate_id)
                .bind(last.sequence)
                .bind(last.event_id)
                .bind(last.recorded_at_utc())
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(CLEAR_STREAM_LETTERS)
            .bind(name)
            .bind(aggregate_type)
            .bind(aggregate_id)
            .bind(last_parked)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        let applied = usize::try_from(last_parked - checkpoint).unwrap_or(0);
        debug_assert_eq!(applied > 0, last_applied.is_some());
        tracing::info!(applied, last_parked, "parked stream retried");
        Ok(applied)
    }

    pub(super) async fn record_failure(
        &self,
        event: &RelayedEvent,
        error: &str,
        attempts: i64,
        park: bool,
    ) -> Result<(), sqlx::Error> {
        let mut error = error.to_owned();
        if error.len() > ERROR_BYTES_MAX {
            let mut cut = ERROR_BYTES_MAX;
            while !error.is_char_boundary(cut) {
                cut -= 1;
            }
            error.truncate(cut);
        }
        let body = serde_json::to_value(event).unwrap_or(serde_json::Value::Null);
        sqlx::query(RECORD_FAILURE)
            .bind(self.projector.name())
            .bind(event.event_id)
            .bind(&event.tenant_id)
            .bind(&event.aggregate_type)
            .bind(&event.aggregate_id)
            .bind(event.sequence)
            .bind(error)
            .bind(i32::try_from(attempts.max(1)).unwrap_or(i32::MAX))
            .bind(park)
            .bind(body)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
