//! `wxcm audit draw`: recomputes a campaign's draws from its events alone
//! (`schemas/draws/SPEC.md`, `wxcm-draw-v1`), read-only. The checks are
//! [`wxcm_store::audit::draws`], shared with the admin API's draw audit view.

use anyhow::Result;
use wxcm_domain::campaign::CampaignId;
use wxcm_domain::TenantId;
use wxcm_server::config::Settings;
pub use wxcm_store::audit::draws::{check_draws, check_period, DrawDifference, DrawReport};

/// Reads the campaign's stream from its shard and checks it.
pub async fn draw_report(settings: &Settings, tenant: &TenantId, campaign: CampaignId) -> Result<DrawReport> {
    draw_report_of(settings, tenant, campaign, None).await
}

/// [`draw_report`], or only period `period`'s draw when given.
pub async fn draw_report_of(
    settings: &Settings,
    tenant: &TenantId,
    campaign: CampaignId,
    period: Option<u32>,
) -> Result<DrawReport> {
    let pool = crate::audit::shard_pool(settings, tenant)?;
    let rows = crate::audit::load(&pool, "campaign", &campaign.to_string()).await?;
    pool.close().await;
    Ok(match period {
        None => check_draws(tenant, campaign, &rows),
        Some(p) => check_period(tenant, campaign, &rows, p),
    })
}

/// `wxcm audit draw [--period P]`: prints the report; `false` on any difference.
pub async fn audit_draw(
    settings: &Settings,
    tenant: &TenantId,
    campaign: CampaignId,
    period: Option<u32>,
    json: bool,
) -> Result<bool> {
    let report = draw_report_of(settings, tenant, campaign, period).await?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "campaign {} of {}: {} shakes and {} period draws recomputed, seed {}",
            report.campaign_id,
            report.tenant_id,
            report.shakes_checked,
            report.periods_checked,
            if report.revealed { "revealed" } else { "not revealed" }
        );
        for d in &report.differences {
            match d.sequence {
                Some(seq) => println!("  campaign/{} seq {seq}: {}", report.campaign_id, d.detail),
                None => println!("  campaign/{}: {}", report.campaign_id, d.detail),
            }
        }
        println!("{}", if report.ok { "OK: every draw recomputes" } else { "DIFFERENCES FOUND" });
    }
    Ok(report.ok)
}
