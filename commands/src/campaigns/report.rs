//! A campaign's report: its totals from the aggregate (exact at this
//! instant) and, per merchant day, participations, new participants and
//! winners from the read model (`rm_daily_ops`, dimension the campaign) with
//! page visits and share-link requests (`campaign_traffic`), which the edge
//! counts as they happen.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use tracing::warn;
use wxcm_domain::campaign::{merchant_day, CampaignId};
use wxcm_domain::TenantId;

use super::{get, CampaignOpError, CampaignView};
use crate::App;

/// Days of traffic one report reads (a campaign lasts at most 366 days, plus its draft days).
pub const REPORT_DAYS_MAX: u32 = 800;

/// One merchant day of a campaign.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReportDay {
    pub day: NaiveDate,
    pub visits: i64,
    pub shares: i64,
    pub participations: i64,
    pub participants_new: i64,
    pub winners: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CampaignReport {
    pub campaign: CampaignView,
    pub visits: i64,
    pub shares: i64,
    pub days: Vec<ReportDay>,
    pub generated_at: DateTime<Utc>,
}

/// The report of `campaign_id` as `tenant` sees it (another tenant's is not found).
pub async fn report(app: &App, tenant: &TenantId, campaign_id: CampaignId) -> Result<CampaignReport, CampaignOpError> {
    let campaign = get(app, tenant, campaign_id).await?;
    let shard = app.router.route(tenant)?;
    let mut days: BTreeMap<NaiveDate, ReportDay> = BTreeMap::new();
    for row in shard.read_models.campaign_days(tenant, campaign_id).await? {
        let day = days.entry(row.day).or_insert_with(|| ReportDay { day: row.day, ..ReportDay::default() });
        match row.metric.as_str() {
            "campaign_participations" => day.participations += row.value,
            "campaign_participants_new" => day.participants_new += row.value,
            "campaign_winners" => day.winners += row.value,
            other => warn!(metric = other, "unexpected campaign metric"),
        }
    }
    for (date, visits, shares) in shard.campaign_store.traffic(tenant, campaign_id, REPORT_DAYS_MAX).await? {
        let day = days.entry(date).or_insert_with(|| ReportDay { day: date, ..ReportDay::default() });
        day.visits += visits;
        day.shares += shares;
    }
    let visits = days.values().map(|d| d.visits).sum();
    let shares = days.values().map(|d| d.shares).sum();
    Ok(CampaignReport { campaign, visits, shares, days: days.into_values().collect(), generated_at: app.clock.now() })
}

/// Counts a page visit (a friend opening a share link) or a share-link
/// request. Traffic is best effort: a failure is logged, never the visitor's.
pub async fn count_traffic(app: &App, tenant: &TenantId, campaign_id: CampaignId, visits: i64, shares: i64) {
    let day = merchant_day(app.clock.now());
    let counted = match app.router.route(tenant) {
        Ok(shard) => shard
            .campaign_store
            .count_traffic(tenant, campaign_id, day, visits, shares)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = counted {
        warn!(%tenant, %campaign_id, error = %e, "campaign traffic not counted");
    }
}
