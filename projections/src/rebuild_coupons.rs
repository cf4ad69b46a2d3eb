//! Rebuilding the coupon read model (`rm_coupons` and the coupon counters of
//! `rm_daily_ops`) from the event store: in one transaction that takes the
//! projector's lock order (`projection_checkpoints` first), the scope's rows
//! are deleted and every coupon event is applied again with
//! [`CouponProjector`]'s own code, then the checkpoints are set to the
//! replayed heads and the scope's dead letters dropped. The live projector goes
//! on from there (older messages are duplicates). Projections on the shard wait
//! for the transaction: it is meant for repairs, not for routine use at scale.

use futures::TryStreamExt;
use serde::Serialize;
use sqlx::{Connection, PgConnection};

use crate::coupons::CouponProjector;
use crate::daily::metric;
use crate::rebuild::RebuildScope;
use crate::runtime::{ApplyError, Projector};

#[derive(Debug, Clone, Serialize)]
pub struct CouponRebuildReport {
    pub events: u64,
    pub coupons: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CouponRebuildError {
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    #[error("coupon/{stream} seq {sequence}: {reason}")]
    Apply { stream: String, sequence: i64, reason: String },
    #[error("daily counters: {0}")]
    Counters(String),
}

const COUPON_METRICS: [&str; 4] =
    [metric::COUPONS_ISSUED, metric::COUPONS_REDEEMED, metric::COUPONS_VOIDED, metric::COUPONS_EXPIRED];

const EVENTS_SQL: &str = r#"
SELECT event_id, tenant_id, aggregate_type, aggregate_id, sequence, event_type, event_version,
       to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS recorded_at,
       encode(prev_hash, 'hex') AS prev_hash, encode(hash, 'hex') AS hash, payload, metadata
  FROM events
 WHERE aggregate_type = 'coupon' AND ($1::text IS NULL OR tenant_id = $1)
 ORDER BY aggregate_id, sequence"#;

/// Rebuilds the coupon read model of the shard (or of one tenant) on `conn`
/// (an administrative connection), with `reader` streaming the events.
pub async fn rebuild_coupons(
    conn: &mut PgConnection,
    mut reader: PgConnection,
    scope: &RebuildScope,
) -> Result<CouponRebuildReport, CouponRebuildError> {
    let tenant = match scope {
        RebuildScope::Shard => None,
        RebuildScope::Tenant(t) => Some(t.clone()),
    };
    let mut tx = conn.begin().await?;
    sqlx::query("LOCK TABLE projection_checkpoints IN EXCLUSIVE MODE").execute(&mut *tx).await?;
    let in_scope = "($1::text IS NULL OR tenant_id = $1)";
    sqlx::query(&format!("DELETE FROM rm_coupons WHERE {in_scope}")).bind(&tenant).execute(&mut *tx).await?;
    sqlx::query(&format!("DELETE FROM rm_daily_ops WHERE {in_scope} AND metric = ANY($2)"))
        .bind(&tenant)
        .bind(&COUPON_METRICS[..])
        .execute(&mut *tx)
        .await?;
    let mut report = CouponRebuildReport { events: 0, coupons: 0 };
    // The reader sees what is committed; the checkpoint lock keeps the
    // projector from applying anything meanwhile, and each stream's head is
    // what was replayed.
    let mut heads: Vec<(String, String, i64, uuid::Uuid, String)> = Vec::new();
    let mut counters = crate::daily::Counters::default();
    {
        let mut rows = sqlx::query(EVENTS_SQL).bind(&tenant).fetch(&mut reader);
        while let Some(row) = rows.try_next().await? {
            let event = crate::envelope::from_row(&row)?;
            CouponProjector.apply(&mut tx, &event, &mut counters).await.map_err(|e| CouponRebuildError::Apply {
                stream: event.aggregate_id.clone(),
                sequence: event.sequence,
                reason: e.to_string(),
            })?;
            report.events += 1;
            if event.sequence == 1 {
                report.coupons += 1;
            }
            match heads.last_mut() {
                Some(head) if head.1 == event.aggregate_id => {
                    *head = (event.tenant_id, event.aggregate_id, event.sequence, event.event_id, event.recorded_at)
                }
                _ => {
                    heads.push((event.tenant_id, event.aggregate_id, event.sequence, event.event_id, event.recorded_at))
                }
            }
        }
    }
    counters.write(&mut tx).await.map_err(|e| match e {
        ApplyError::Database(e) => CouponRebuildError::Sql(e),
        ApplyError::Invalid(reason) => CouponRebuildError::Counters(reason),
    })?;
    let name = CouponProjector::NAME;
    sqlx::query(&format!("DELETE FROM projection_checkpoints WHERE projector = $2 AND {in_scope}"))
        .bind(&tenant)
        .bind(name)
        .execute(&mut *tx)
        .await?;
    for chunk in heads.chunks(5_000) {
        let tenants: Vec<&str> = chunk.iter().map(|h| h.0.as_str()).collect();
        let ids: Vec<&str> = chunk.iter().map(|h| h.1.as_str()).collect();
        let sequences: Vec<i64> = chunk.iter().map(|h| h.2).collect();
        let event_ids: Vec<uuid::Uuid> = chunk.iter().map(|h| h.3).collect();
        let recorded: Vec<&str> = chunk.iter().map(|h| h.4.as_str()).collect();
        sqlx::query(
            "INSERT INTO projection_checkpoints (projector, aggregate_type, aggregate_id, tenant_id, sequence,
                                                 event_id, recorded_at)
             SELECT $1, 'coupon', i, t, s, e, r::timestamptz
               FROM unnest($2::text[], $3::text[], $4::bigint[], $5::uuid[], $6::text[]) AS u(t, i, s, e, r)",
        )
        .bind(name)
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
