//! Popularity lotteries: a periodic lottery whose tickets are friends'
//! visits. A member shares a link; each distinct friend (openid, from
//! WeChat's OAuth code exchange, never from the link) who opens it gives the
//! member one ticket in the open period. The ticket's id derives from
//! (period, member, visitor), so a repeated visit — however many times,
//! however concurrent — names the same ticket, which the period records once;
//! the member's own openid gives none. Periods, seeds and draws are the
//! periodic lottery's ([`super::periods`]).

use serde::Serialize;
use tracing::{info, instrument};
use wxcm_domain::campaign::{CampaignCommand, CampaignError, CampaignEvent, CampaignId, Refusal};
use wxcm_domain::{MemberId, OpenId, TenantId};

use super::{run, state_of, system_key, CampaignOpError};
use crate::{App, CommandContext};

/// What a friend's visit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum VisitOutcome {
    /// A new ticket: the member now holds `tickets` in the period.
    Counted { period_no: u32, tickets: u32 },
    /// This friend had already given the member a ticket in the period.
    AlreadyCounted { period_no: u32 },
}

/// A visit by `visitor` through `member_id`'s share link of `campaign_id`.
#[instrument(skip_all, fields(%tenant, %campaign_id, %member_id))]
pub async fn record_visit(
    app: &App,
    tenant: &TenantId,
    campaign_id: CampaignId,
    member_id: MemberId,
    visitor: &OpenId,
) -> Result<VisitOutcome, CampaignOpError> {
    let shard = app.router.route(tenant)?;
    let state = state_of(&shard, tenant, campaign_id).await?;
    if !state.terms.kind.is_popularity() {
        return Err(CampaignOpError::Campaign(CampaignError::WrongKind("popularity_lottery")));
    }
    let Some(period_no) = state.periods.iter().next_back().filter(|(_, p)| p.end.is_none()).map(|(n, _)| *n) else {
        return Err(CampaignOpError::Campaign(CampaignError::Refused(Refusal::NotOngoing)));
    };
    let (member, _) = shard.members.load(tenant, &member_id.to_string()).await?;
    let Some(registration) = member.registration.as_ref() else { return Err(CampaignOpError::MemberNotFound) };
    let key = system_key(&[
        "campaign-visit",
        &campaign_id.to_string(),
        &period_no.to_string(),
        &member_id.to_string(),
        visitor.as_str(),
    ])?;
    let ctx = CommandContext::new(tenant.clone(), key, format!("visitor:{}", visitor.as_str()));
    let command = CampaignCommand::GrantTicket {
        member_id,
        period_no,
        visitor_openid: visitor.clone(),
        member_openids: registration.openid.iter().cloned().collect(),
        card_member: true,
    };
    let request = serde_json::json!({ "visit": campaign_id, "member": member_id, "period_no": period_no });
    let outcome = run(app, &ctx, campaign_id, command, &request).await?;
    let counted = outcome.events.iter().find_map(|c| match &c.event {
        CampaignEvent::CampaignEntryRecorded { member_period_after, .. } => Some(*member_period_after),
        _ => None,
    });
    Ok(match counted {
        Some(tickets) if !outcome.replayed => {
            info!(period_no, tickets, "popularity ticket granted");
            VisitOutcome::Counted { period_no, tickets }
        }
        _ => VisitOutcome::AlreadyCounted { period_no },
    })
}
