//! Rebuilding the mall read model (`rm_mall_orders` and the mall counters of
//! `rm_daily_ops`) from the event store with [`MallProjector`]'s own code
//! (`wxcm projections rebuild mall`); see [`crate::rebuild_projector`].
//!
//! Order numbers are not in the read model: they come from the shard's
//! sequence into `mall_order_index` at reservation (migration 0020), not from
//! events, so no rebuild can make them again.

use serde::Serialize;
use sqlx::PgConnection;

use crate::daily::metric;
use crate::mall::MallProjector;
use crate::rebuild::RebuildScope;
use crate::rebuild_projector::{rebuild_with, ProjectorRebuildError, ReadModel};

#[derive(Debug, Clone, Serialize)]
pub struct MallRebuildReport {
    pub events: u64,
    pub orders: u64,
}

/// The counters of `rm_daily_ops` only [`MallProjector`] feeds.
pub const MALL_METRICS: [&str; 4] =
    [metric::MALL_ORDERS_PAID, metric::MALL_ORDERS_DELIVERED, metric::MALL_POINTS_SPENT, metric::MALL_FEN_TAKEN];

const MALL: ReadModel = ReadModel { tables: &["rm_mall_orders"], metrics: &MALL_METRICS };

/// Rebuilds the mall read model of the shard (or of one tenant) on `conn` (an
/// administrative connection), with `reader` streaming the events.
pub async fn rebuild_mall(
    conn: &mut PgConnection,
    reader: PgConnection,
    scope: &RebuildScope,
) -> Result<MallRebuildReport, ProjectorRebuildError> {
    let report = rebuild_with(&MallProjector, MALL, conn, reader, scope).await?;
    Ok(MallRebuildReport { events: report.events, orders: report.streams })
}
