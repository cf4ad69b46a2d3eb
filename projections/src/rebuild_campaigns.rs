//! Rebuilding the campaign read model (`rm_campaigns` and the per-campaign
//! counters of `rm_daily_ops`) from the event store with
//! [`CampaignProjector`]'s own code (`wxcm projections rebuild campaigns`);
//! see [`crate::rebuild_projector`]. `campaign_traffic` (visits, shares) is
//! not derived from events and stays as it is.

use serde::Serialize;
use sqlx::PgConnection;

use crate::campaigns::{CampaignProjector, CAMPAIGN_METRICS};
use crate::rebuild::RebuildScope;
use crate::rebuild_projector::{rebuild_with, ProjectorRebuildError, ReadModel};

#[derive(Debug, Clone, Serialize)]
pub struct CampaignRebuildReport {
    pub events: u64,
    pub campaigns: u64,
}

const CAMPAIGNS: ReadModel = ReadModel { tables: &["rm_campaigns"], metrics: &CAMPAIGN_METRICS };

/// Rebuilds the campaign read model of the shard (or of one tenant) on `conn`
/// (an administrative connection), with `reader` streaming the events.
pub async fn rebuild_campaigns(
    conn: &mut PgConnection,
    reader: PgConnection,
    scope: &RebuildScope,
) -> Result<CampaignRebuildReport, ProjectorRebuildError> {
    let report = rebuild_with(&CampaignProjector, CAMPAIGNS, conn, reader, scope).await?;
    Ok(CampaignRebuildReport { events: report.events, campaigns: report.streams })
}
