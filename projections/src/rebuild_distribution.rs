//! Rebuilding the distribution counters of `rm_daily_ops` from the event
//! store with [`CommissionProjector`]'s and [`DistributorProjector`]'s own
//! code (`wxcm projections rebuild distribution`); see
//! [`crate::rebuild_projector`]. The rows of `distributors`, `commissions`,
//! `commission_accounts` and `commission_withdrawals` are written by triggers
//! in the events' own transactions, not projected, so there is nothing of
//! them to rebuild (`wxcm audit reconcile` compares them with the events);
//! the binding counters are read from `distribution_bindings` when asked.

use serde::Serialize;
use sqlx::PgConnection;

use crate::distribution::{CommissionProjector, DistributorProjector, COMMISSION_METRICS, DISTRIBUTOR_METRICS};
use crate::rebuild::RebuildScope;
use crate::rebuild_projector::{rebuild_with, ProjectorRebuildError, ReadModel};

#[derive(Debug, Clone, Serialize)]
pub struct DistributionRebuildReport {
    pub commission_events: u64,
    pub accounts: u64,
    pub distributor_events: u64,
    pub distributors: u64,
}

const COMMISSIONS: ReadModel = ReadModel { tables: &[], metrics: &COMMISSION_METRICS };
const DISTRIBUTORS: ReadModel = ReadModel { tables: &[], metrics: &DISTRIBUTOR_METRICS };

/// Rebuilds the distribution counters of the shard (or of one tenant) on
/// `conn` (an administrative connection): the commission counters, then the
/// distributor counters, each in its own transaction; `reader` and
/// `second_reader` stream the events.
pub async fn rebuild_distribution(
    conn: &mut PgConnection,
    reader: PgConnection,
    second_reader: PgConnection,
    scope: &RebuildScope,
) -> Result<DistributionRebuildReport, ProjectorRebuildError> {
    let commissions = rebuild_with(&CommissionProjector, COMMISSIONS, conn, reader, scope).await?;
    let distributors = rebuild_with(&DistributorProjector, DISTRIBUTORS, conn, second_reader, scope).await?;
    Ok(DistributionRebuildReport {
        commission_events: commissions.events,
        accounts: commissions.streams,
        distributor_events: distributors.events,
        distributors: distributors.streams,
    })
}
