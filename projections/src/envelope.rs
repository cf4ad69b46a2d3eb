//! The message the relay publishes for every committed event, and the same
//! event read back from a shard's event store (to fill a gap).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

/// The message body: the stored event. `payload` and `metadata` are Postgres's
/// `jsonb` text byte for byte, as the hash chain covers them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RelayedEvent {
    pub event_id: Uuid,
    pub tenant_id: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    /// UTC, `YYYY-MM-DDTHH:MM:SS.ffffffZ`, as hashed.
    pub recorded_at: String,
    pub prev_hash: String,
    pub hash: String,
    pub payload: serde_json::Value,
    pub metadata: serde_json::Value,
}

impl RelayedEvent {
    /// `recorded_at` as a timestamp; `None` if it is not RFC 3339.
    pub fn recorded_at_utc(&self) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(&self.recorded_at).ok().map(|t| t.with_timezone(&Utc))
    }
}

/// Events of one stream with `sequence` in `from..=to`, in order, shaped like
/// the relay's messages (same columns and text forms as `infra::relay`).
const SELECT_RANGE: &str = r#"
SELECT event_id, tenant_id, aggregate_type, aggregate_id, sequence, event_type, event_version,
       to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS recorded_at,
       encode(prev_hash, 'hex') AS prev_hash, encode(hash, 'hex') AS hash,
       payload, metadata
  FROM events
 WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence BETWEEN $3 AND $4
 ORDER BY sequence"#;

/// Loads events `from..=to` of one stream from the shard's event store.
pub async fn load_events(
    conn: &mut PgConnection,
    aggregate_type: &str,
    aggregate_id: &str,
    from: i64,
    to: i64,
) -> Result<Vec<RelayedEvent>, sqlx::Error> {
    let rows =
        sqlx::query(SELECT_RANGE).bind(aggregate_type).bind(aggregate_id).bind(from).bind(to).fetch_all(conn).await?;
    rows.iter().map(from_row).collect()
}

pub(crate) fn from_row(row: &PgRow) -> Result<RelayedEvent, sqlx::Error> {
    Ok(RelayedEvent {
        event_id: row.try_get("event_id")?,
        tenant_id: row.try_get("tenant_id")?,
        aggregate_type: row.try_get("aggregate_type")?,
        aggregate_id: row.try_get("aggregate_id")?,
        sequence: row.try_get("sequence")?,
        event_type: row.try_get("event_type")?,
        event_version: row.try_get("event_version")?,
        recorded_at: row.try_get("recorded_at")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
        payload: row.try_get("payload")?,
        metadata: row.try_get("metadata")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_at_parses_as_hashed() {
        let event = RelayedEvent {
            event_id: Uuid::nil(),
            tenant_id: "t".into(),
            aggregate_type: "member".into(),
            aggregate_id: "m".into(),
            sequence: 1,
            event_type: "X".into(),
            event_version: "1".into(),
            recorded_at: "2024-01-02T03:04:05.000006Z".into(),
            prev_hash: String::new(),
            hash: String::new(),
            payload: serde_json::Value::Null,
            metadata: serde_json::Value::Null,
        };
        let at = event.recorded_at_utc().unwrap();
        assert_eq!(at.timestamp_subsec_micros(), 6);
        assert!(RelayedEvent { recorded_at: "yesterday".into(), ..event }.recorded_at_utc().is_none());
    }
}
