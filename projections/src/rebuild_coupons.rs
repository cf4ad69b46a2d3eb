//! Rebuilding the coupon read model (`rm_coupons` and the coupon counters of
//! `rm_daily_ops`) from the event store with [`CouponProjector`]'s own code
//! (`wxcm projections rebuild coupons`); see [`crate::rebuild_projector`].

use serde::Serialize;
use sqlx::PgConnection;

use crate::coupons::CouponProjector;
use crate::daily::metric;
use crate::rebuild::RebuildScope;
use crate::rebuild_projector::{rebuild_with, ProjectorRebuildError, ReadModel};

#[derive(Debug, Clone, Serialize)]
pub struct CouponRebuildReport {
    pub events: u64,
    pub coupons: u64,
}

pub type CouponRebuildError = ProjectorRebuildError;

const COUPON_METRICS: [&str; 4] =
    [metric::COUPONS_ISSUED, metric::COUPONS_REDEEMED, metric::COUPONS_VOIDED, metric::COUPONS_EXPIRED];

const COUPONS: ReadModel = ReadModel { tables: &["rm_coupons"], metrics: &COUPON_METRICS };

/// Rebuilds the coupon read model of the shard (or of one tenant) on `conn`
/// (an administrative connection), with `reader` streaming the events.
pub async fn rebuild_coupons(
    conn: &mut PgConnection,
    reader: PgConnection,
    scope: &RebuildScope,
) -> Result<CouponRebuildReport, CouponRebuildError> {
    let report = rebuild_with(&CouponProjector, COUPONS, conn, reader, scope).await?;
    Ok(CouponRebuildReport { events: report.events, coupons: report.streams })
}
