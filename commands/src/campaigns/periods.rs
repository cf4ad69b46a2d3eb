//! Periodic lotteries: periods opened by the scheduler with a sealed seed
//! each, free entries, and the draw at each period's end.
//!
//! **Open.** A cycle's period (daily or weekly, `CampaignState::next_period_window`)
//! is opened when the campaign starts and after each draw: a fresh seed from
//! the OS CSPRNG is sealed into `campaign_seeds` under the period's number
//! (first writer wins) and only its commitment goes into
//! `CampaignPeriodOpened`, before the first entry. The event writes due work
//! `campaign_period_draw` at the period's end (migration 0024).
//!
//! **Draw.** The due item unseals the seed and runs `DrawPeriod` (a second
//! draw with the same seed writes nothing, so two schedulers draw once); the
//! event reveals the seed and lists the winners, which anyone can recompute
//! (`wxcm audit draw`). Each winner's points or coupon prize is issued under
//! a key of campaign and award (`period:<n>:rank:<r>`), inline and again
//! from the `campaign_prize` due work the draw wrote; then the next period
//! opens.
//!
//! Not yet: entries that cost points (refused as unsupported), beacons,
//! periods opened by hand, and a period whose whole window passed while no
//! scheduler ran (the cycle then stops: logged).

use tracing::{info, warn};
use wxcm_domain::campaign::{
    AwardRef, CampaignCommand, CampaignError, CampaignEvent, CampaignId, CampaignKind, Cycle, EntryId, PeriodEnd,
    Refusal, Status,
};
use wxcm_domain::{Actor, MemberId, TenantId};

use super::shakes::issue_award;
use super::{infra, outcome_written, run, seed_for, state_of, stored_seed, system_key, CampaignOpError};
use crate::{App, CommandContext};

/// The next period of a daily or weekly cycle, when the campaign runs, no
/// period is open and one is left. Returns the events written.
pub async fn open_next_period(app: &App, tenant: &TenantId, campaign_id: CampaignId) -> Result<u32, CampaignOpError> {
    let shard = app.router.route(tenant)?;
    let state = state_of(&shard, tenant, campaign_id).await?;
    let CampaignKind::PeriodicLottery(terms) = &state.terms.kind else { return Ok(0) };
    if terms.cycle == Cycle::Manual || !matches!(state.status, Status::Scheduled | Status::Ongoing) {
        return Ok(0);
    }
    if state.periods.values().next_back().is_some_and(|p| p.end.is_none()) {
        return Ok(0);
    }
    let Some((starts_at, ends_at)) = state.next_period_window() else { return Ok(0) };
    if ends_at <= app.clock.now() {
        warn!(%campaign_id, %ends_at, "the next period's window has passed; the cycle stops here");
        return Ok(0);
    }
    let period_no = state.periods.keys().next_back().map_or(1, |n| n + 1);
    let seed = seed_for(app, &shard, tenant, campaign_id, period_no).await?;
    let key = system_key(&["campaign-open-period", &campaign_id.to_string(), &period_no.to_string()])?;
    let ctx = CommandContext::new(tenant.clone(), key, "system:scheduler".into());
    let command = CampaignCommand::OpenPeriod {
        period_no,
        starts_at,
        ends_at,
        commitment: seed.commitment(),
        beacon: None,
        actor: Actor::System { job: "scheduler".into() },
    };
    let request = serde_json::json!({ "open_period": campaign_id, "period_no": period_no });
    let outcome = run(app, &ctx, campaign_id, command, &request).await?;
    info!(%campaign_id, period_no, %starts_at, %ends_at, "campaign period opened");
    Ok(outcome_written(&outcome))
}

/// One entry of `member_id` into the open period (idempotent by the request's
/// key: a repeated request names the same entry). Returns the period's number.
pub async fn enter(
    app: &App,
    ctx: &CommandContext,
    campaign_id: CampaignId,
    member_id: MemberId,
) -> Result<u32, CampaignOpError> {
    let tenant = &ctx.tenant_id;
    let shard = app.router.route(tenant)?;
    let state = state_of(&shard, tenant, campaign_id).await?;
    let CampaignKind::PeriodicLottery(terms) = &state.terms.kind else {
        return Err(CampaignOpError::Campaign(CampaignError::WrongKind("periodic_lottery")));
    };
    if terms.entry_cost.is_some() {
        return Err(CampaignOpError::Unsupported("entries that cost points"));
    }
    let Some(period_no) = state.periods.iter().next_back().filter(|(_, p)| p.end.is_none()).map(|(n, _)| *n) else {
        return Err(CampaignOpError::Campaign(CampaignError::Refused(Refusal::NotOngoing)));
    };
    let (member, _) = shard.members.load(tenant, &member_id.to_string()).await?;
    let entry_id = EntryId::for_request(tenant, campaign_id, member_id, &ctx.idempotency_key);
    let command = CampaignCommand::Enter { entry_id, member_id, period_no, card_member: member.registration.is_some() };
    let request = serde_json::json!({ "enter": campaign_id, "member": member_id });
    run(app, ctx, campaign_id, command, &request).await?;
    Ok(period_no)
}

fn parse_period_item(aggregate_id: &str) -> Result<(CampaignId, u32), CampaignOpError> {
    let bad = || infra(format!("campaign_period_draw item {aggregate_id:?} is not <campaign>/<period>"));
    let (campaign, period) = aggregate_id.split_once('/').ok_or_else(bad)?;
    Ok((CampaignId::parse(campaign).map_err(|_| bad())?, period.parse().map_err(|_| bad())?))
}

/// Due work `campaign_period_draw`, aggregate id `<campaign>/<period>`: draws
/// the period with its unsealed seed, issues the winners' prizes, opens the
/// next period. Returns the events written.
pub async fn due_period_draw(app: &App, tenant: &TenantId, aggregate_id: &str) -> Result<u32, CampaignOpError> {
    let (campaign_id, period_no) = parse_period_item(aggregate_id)?;
    let shard = app.router.route(tenant)?;
    let state = state_of(&shard, tenant, campaign_id).await?;
    let period = state.periods.get(&period_no).ok_or_else(|| infra(format!("no period {period_no}")))?;
    let mut written = 0;
    match &period.end {
        Some(PeriodEnd::Cancelled { .. }) => return Ok(0),
        Some(PeriodEnd::Drawn { .. }) => {}
        None => {
            let seed = stored_seed(app, &shard, tenant, campaign_id, period_no)
                .await?
                .ok_or_else(|| infra(format!("period {period_no} has no stored seed")))?;
            let key = system_key(&["campaign-draw", &campaign_id.to_string(), &period_no.to_string()])?;
            let ctx = CommandContext::new(tenant.clone(), key, "system:scheduler".into());
            let actor = Actor::System { job: "scheduler".into() };
            let command = CampaignCommand::DrawPeriod { period_no, seed, beacon_value: None, actor };
            let request = serde_json::json!({ "draw_period": campaign_id, "period_no": period_no });
            let outcome = run(app, &ctx, campaign_id, command, &request).await?;
            written += outcome_written(&outcome);
            let winners = outcome.events.iter().find_map(|c| match &c.event {
                CampaignEvent::CampaignPeriodDrawn { winners, .. } => Some(winners.len()),
                _ => None,
            });
            info!(%campaign_id, period_no, winners = winners.unwrap_or(0), "campaign period drawn");
        }
    }
    issue_period_prizes(app, tenant, campaign_id, period_no).await?;
    Ok(written + open_next_period(app, tenant, campaign_id).await?)
}

/// Issues every winner's prize of a drawn period (each once, by its award's key).
async fn issue_period_prizes(
    app: &App,
    tenant: &TenantId,
    campaign_id: CampaignId,
    period_no: u32,
) -> Result<(), CampaignOpError> {
    let shard = app.router.route(tenant)?;
    let state = state_of(&shard, tenant, campaign_id).await?;
    let CampaignKind::PeriodicLottery(terms) = &state.terms.kind else { return Ok(()) };
    let Some(PeriodEnd::Drawn { winners, .. }) = state.periods.get(&period_no).and_then(|p| p.end.as_ref()) else {
        return Ok(());
    };
    for (rank, member_id) in (1u32..).zip(winners) {
        let Some(prize) = terms.prize_of_rank(rank) else { continue };
        issue_award(app, tenant, campaign_id, *member_id, prize, AwardRef::Period { period_no, rank }).await?;
    }
    Ok(())
}

/// Due work `campaign_prize` of a period winner, `<campaign>/period/<period>/<rank>`.
pub(super) async fn due_prize(app: &App, tenant: &TenantId, aggregate_id: &str) -> Result<u32, CampaignOpError> {
    let bad = || infra(format!("campaign_prize item {aggregate_id:?} is not <campaign>/period/<period>/<rank>"));
    let parts: Vec<&str> = aggregate_id.split('/').collect();
    let [campaign, "period", period, rank] = parts.as_slice() else { return Err(bad()) };
    let campaign_id = CampaignId::parse(campaign).map_err(|_| bad())?;
    let period_no: u32 = period.parse().map_err(|_| bad())?;
    let rank: u32 = rank.parse().map_err(|_| bad())?;
    let shard = app.router.route(tenant)?;
    let state = state_of(&shard, tenant, campaign_id).await?;
    let CampaignKind::PeriodicLottery(terms) = &state.terms.kind else { return Err(bad()) };
    let Some(PeriodEnd::Drawn { winners, .. }) = state.periods.get(&period_no).and_then(|p| p.end.as_ref()) else {
        return Err(bad());
    };
    let member_id = rank.checked_sub(1).and_then(|i| winners.get(i as usize)).ok_or_else(bad)?;
    let prize = terms.prize_of_rank(rank).ok_or_else(bad)?;
    issue_award(app, tenant, campaign_id, *member_id, prize, AwardRef::Period { period_no, rank }).await?;
    Ok(0)
}
