//! Reading member events in (stream, sequence) order through a cursor.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Row};
use uuid::Uuid;
use wxcm_domain::member::MemberEvent;
use wxcm_domain::DomainEventMeta;

use super::*;

pub(super) const SELECT_STREAM: &str = "
SELECT aggregate_id, tenant_id, sequence, event_id, event_type, event_version, recorded_at, payload::text AS payload
  FROM events WHERE aggregate_type = 'member' AND aggregate_id = $1 ORDER BY sequence";

/// One stored member event, as the rebuild and the reconciliation read it.
#[derive(Debug, Clone)]
pub struct StoredMemberEvent {
    pub aggregate_id: String,
    pub tenant_id: String,
    pub sequence: i64,
    pub event_id: Uuid,
    pub event_type: String,
    pub event_version: String,
    pub recorded_at: DateTime<Utc>,
    /// The payload's JSON text.
    pub payload: String,
}

impl StoredMemberEvent {
    pub(super) fn from_row(row: &sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            aggregate_id: row.try_get("aggregate_id")?,
            tenant_id: row.try_get("tenant_id")?,
            sequence: row.try_get("sequence")?,
            event_id: row.try_get("event_id")?,
            event_type: row.try_get("event_type")?,
            event_version: row.try_get("event_version")?,
            recorded_at: row.try_get("recorded_at")?,
            payload: row.try_get("payload")?,
        })
    }

    /// Decodes the payload and checks it against the row (type, version, and
    /// for a registration its stream and tenant).
    pub fn decode(&self) -> Result<MemberEvent, String> {
        let event: MemberEvent =
            serde_json::from_str(&self.payload).map_err(|e| format!("payload is not a member event: {e}"))?;
        if event.event_type() != self.event_type || event.event_version() != self.event_version {
            return Err(format!(
                "payload is {} v{}, row says {} v{}",
                event.event_type(),
                event.event_version(),
                self.event_type,
                self.event_version
            ));
        }
        if let MemberEvent::MemberRegistered { member_id, tenant_id, .. } = &event {
            if member_id.to_string() != self.aggregate_id || tenant_id.as_str() != self.tenant_id {
                return Err("registration does not match its stream".into());
            }
        }
        Ok(event)
    }
}

/// Opens a cursor over the member events of the shard (or of `tenant`) in
/// (stream, sequence) order, in a repeatable-read snapshot. `conn` must be in
/// a transaction that has run nothing yet; read with [`fetch_page`].
pub async fn open_cursor(conn: &mut PgConnection, tenant: Option<&str>) -> Result<(), sqlx::Error> {
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *conn).await?;
    // DECLARE takes no bind parameters: the tenant goes in as a quoted literal.
    let filter = tenant.map_or_else(String::new, |t| format!("AND tenant_id = '{}'", t.replace('\'', "''")));
    let declare = format!(
        "DECLARE {CURSOR} NO SCROLL CURSOR FOR
         SELECT aggregate_id, tenant_id, sequence, event_id, event_type, event_version, recorded_at,
                payload::text AS payload
           FROM events WHERE aggregate_type = 'member' {filter}
          ORDER BY aggregate_type, aggregate_id, sequence"
    );
    sqlx::query(&declare).execute(&mut *conn).await?;
    Ok(())
}

/// The next `rows` events of the cursor [`open_cursor`] opened; empty at the end.
pub async fn fetch_page(conn: &mut PgConnection, rows: i64) -> Result<Vec<StoredMemberEvent>, sqlx::Error> {
    let rows = sqlx::query(&format!("FETCH FORWARD {} FROM {CURSOR}", rows.clamp(1, PAGE_ROWS * 10)))
        .fetch_all(&mut *conn)
        .await?;
    rows.iter().map(StoredMemberEvent::from_row).collect()
}
