//! A member's shake and its prize.
//!
//! **Deciding.** A shake loads the campaign, unseals its seed and asks the
//! domain for the member's next chance (`nonce` = their shakes so far + 1,
//! [`wxcm_domain::campaign::ShakeAsk`]): the roll is HMAC(seed, member ‖
//! nonce), so a chance's result is fixed and a retry cannot re-roll it. The
//! executor runs the `Shake` command idempotent by the request's key. Two
//! shakes of one member racing for the same chance meet on the campaign's
//! stream: one commits, the other is refused `ChanceUsed` and decides again
//! with the next chance (at most [`SHAKE_ATTEMPTS_MAX`] times).
//!
//! **Prize, once.** After the shake committed, its points or coupon prize is
//! issued under a key of campaign and award (`shake:<member>:<nonce>`): the
//! points grant by the member ledger's idempotency, the coupon by
//! [`crate::coupons::issue_prize`] (one coupon per campaign and award). The
//! shake's event also wrote due work `campaign_prize` in its transaction
//! (migration 0024), which issues it again under the same key 30 s later: a
//! replay when the request did it, the issue when it died in between. A
//! physical prize waits at the store (`HandOverPrize`).

use serde::Serialize;
use tracing::{info, instrument, warn};
use wxcm_domain::campaign::{
    AwardRef, CampaignCommand, CampaignError, CampaignEvent, CampaignId, CampaignKind, Prize, Refusal, ShakeAsk,
    ShakeDraw,
};
use wxcm_domain::member::{ExpiryPolicy, MemberCommand, PointsSource, Provenance};
use wxcm_domain::{Actor, MemberId, Reference, TenantId};

use super::{infra, state_of, stored_seed, system_key, CampaignOpError, MEMBER_SHAKES_MAX};
use crate::coupons::CouponOpError;
use crate::{App, CommandContext, ExecuteError};

/// Decisions of one shake request when the member's other shakes keep taking its chance.
pub const SHAKE_ATTEMPTS_MAX: u32 = 16;

/// What became of a shake's prize.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PrizeStatus {
    /// "Thanks": nothing to give.
    None,
    /// Points granted or the coupon issued.
    Issued,
    /// Not issued yet (a failure now): the due work issues it.
    Pending,
    /// A physical prize, handed over at the store.
    AtStore,
    /// The coupon template refused (sold out, disabled, gone): nothing given.
    NotIssued,
}

#[derive(Debug, Clone, Serialize)]
pub struct ShakeResult {
    pub campaign_id: CampaignId,
    pub draw: ShakeDraw,
    pub prize_status: PrizeStatus,
    /// The answer of an earlier request with the same key.
    pub replayed: bool,
}

/// One shake of `member_id`, decided at once.
#[instrument(skip_all, fields(tenant = %ctx.tenant_id, %campaign_id, %member_id))]
pub async fn shake(
    app: &App,
    ctx: &CommandContext,
    campaign_id: CampaignId,
    member_id: MemberId,
) -> Result<ShakeResult, CampaignOpError> {
    let tenant = &ctx.tenant_id;
    let shard = app.router.route(tenant)?;
    let mut state = state_of(&shard, tenant, campaign_id).await?;
    if !matches!(state.terms.kind, CampaignKind::ShakeLottery(_)) {
        return Err(CampaignOpError::Campaign(CampaignError::WrongKind("shake_lottery")));
    }
    let Some(seed) = stored_seed(app, &shard, tenant, campaign_id, 0).await?.filter(|_| state.commitment.is_some())
    else {
        return Err(CampaignOpError::Campaign(CampaignError::Refused(Refusal::NotOngoing)));
    };
    let (member, _) = shard.members.load(tenant, &member_id.to_string()).await?;
    let card_member = member.registration.is_some();
    let request = serde_json::json!({ "shake": campaign_id, "member": member_id });
    let id = campaign_id.to_string();
    for attempt in 0..SHAKE_ATTEMPTS_MAX {
        if attempt > 0 {
            state = state_of(&shard, tenant, campaign_id).await?;
        }
        let used = state.participations.get(&member_id).map_or(0, |p| p.total);
        let nonce = used.checked_add(1).ok_or(CampaignOpError::Campaign(Refusal::LifetimeLimitReached.into()))?;
        let command = CampaignCommand::Shake { seed, asks: vec![ShakeAsk { member_id, nonce, card_member }] };
        match shard.campaigns.execute(&id, command, &request, ctx).await {
            Ok(outcome) => {
                let draw = outcome
                    .events
                    .iter()
                    .find_map(|c| match &c.event {
                        CampaignEvent::CampaignShakesDrawn { draws, .. } => {
                            draws.iter().find(|d| d.member_id == member_id).cloned()
                        }
                        _ => None,
                    })
                    .ok_or_else(|| infra("a shake committed without the member's draw"))?;
                let prize_status = match issue_prize(app, tenant, campaign_id, &draw).await {
                    Ok(status) => status,
                    Err(e) => {
                        warn!(nonce = draw.nonce, error = %e, "shake prize not issued now; due work will");
                        PrizeStatus::Pending
                    }
                };
                return Ok(ShakeResult { campaign_id, draw, prize_status, replayed: outcome.replayed });
            }
            Err(ExecuteError::Domain(CampaignError::Refused(Refusal::ChanceUsed | Refusal::ChanceOutOfOrder))) => {
                // Another shake of this member took the chance: decide the next one.
                if attempt > 0 {
                    shard.campaigns.invalidate(&id);
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    warn!("shake attempts exhausted");
    Err(CampaignOpError::Contention)
}

/// The member's shakes in chance order (another tenant's campaign is not found).
pub async fn member_shakes(
    app: &App,
    tenant: &TenantId,
    campaign_id: CampaignId,
    member_id: MemberId,
) -> Result<Vec<ShakeDraw>, CampaignOpError> {
    let shard = app.router.route(tenant)?;
    state_of(&shard, tenant, campaign_id).await?;
    Ok(shard.campaign_store.member_shakes(tenant, campaign_id, member_id, MEMBER_SHAKES_MAX).await?)
}

/// Issues a draw's points or coupon prize, keyed by campaign and award (once,
/// however often it is called).
pub async fn issue_prize(
    app: &App,
    tenant: &TenantId,
    campaign_id: CampaignId,
    draw: &ShakeDraw,
) -> Result<PrizeStatus, CampaignOpError> {
    let award = AwardRef::Shake { member_id: draw.member_id, nonce: draw.nonce };
    issue_award(app, tenant, campaign_id, draw.member_id, &draw.prize, award).await
}

/// Gives `member_id` the prize of `award` (a shake or a period's rank):
/// points through the member ledger, a coupon through
/// [`crate::coupons::issue_prize`], both under a key of campaign and award.
pub async fn issue_award(
    app: &App,
    tenant: &TenantId,
    campaign_id: CampaignId,
    member_id: MemberId,
    prize: &Prize,
    award: AwardRef,
) -> Result<PrizeStatus, CampaignOpError> {
    let award = award.key();
    let actor = Actor::System { job: "campaign-prizes".into() };
    match prize {
        Prize::Thanks => Ok(PrizeStatus::None),
        Prize::Physical { .. } => Ok(PrizeStatus::AtStore),
        Prize::Points { points } => {
            let key = system_key(&["campaign-prize", &campaign_id.to_string(), &award])?;
            let ctx = CommandContext::new(tenant.clone(), key.clone(), actor.label());
            let command = MemberCommand::GrantPoints {
                points: *points,
                source: PointsSource::Campaign,
                expiry: ExpiryPolicy::Never,
                provenance: Provenance {
                    actor,
                    reason: Reference::parse("campaign prize").map_err(infra)?,
                    reference: Some(Reference::parse(&format!("campaign:{campaign_id}:{award}")).map_err(infra)?),
                    idempotency_key: key,
                },
            };
            let request = serde_json::json!({ "campaign_prize": campaign_id, "award": award, "points": points });
            crate::members::execute(app, tenant, member_id, command, &request, &ctx).await.map_err(infra)?;
            Ok(PrizeStatus::Issued)
        }
        Prize::Coupon { template_id } => {
            let award_ref = Reference::parse(&award).map_err(infra)?;
            let issued = crate::coupons::issue_prize(
                app,
                tenant,
                *template_id,
                member_id,
                campaign_id.as_uuid(),
                award_ref,
                actor,
            )
            .await;
            match issued {
                Ok(_) => Ok(PrizeStatus::Issued),
                Err(CouponOpError::Refused(why)) => {
                    info!(%campaign_id, %template_id, refusal = why.code(), "coupon prize refused by its template");
                    Ok(PrizeStatus::NotIssued)
                }
                Err(CouponOpError::NotFound(_)) => Ok(PrizeStatus::NotIssued),
                Err(e) => Err(infra(e)),
            }
        }
    }
}

/// Due work `campaign_prize` (migration 0024): issues a shake's prize
/// (aggregate id `<campaign>/<member>/<nonce>`) or a period winner's
/// (`<campaign>/period/<period>/<rank>`), again.
pub async fn due_prize(app: &App, tenant: &TenantId, aggregate_id: &str) -> Result<u32, CampaignOpError> {
    if aggregate_id.contains("/period/") {
        return super::periods::due_prize(app, tenant, aggregate_id).await;
    }
    let mut parts = aggregate_id.split('/');
    let (Some(campaign), Some(member), Some(nonce), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(infra(format!("campaign_prize item {aggregate_id:?} is not <campaign>/<member>/<nonce>")));
    };
    let campaign_id = CampaignId::parse(campaign).map_err(infra)?;
    let member_id = MemberId::parse(member).map_err(infra)?;
    let nonce: u32 = nonce.parse().map_err(infra)?;
    let draws = member_shakes(app, tenant, campaign_id, member_id).await?;
    let draw = draws
        .iter()
        .find(|d| d.nonce == nonce)
        .ok_or_else(|| infra(format!("campaign_prize item {aggregate_id:?}: no such shake")))?;
    issue_prize(app, tenant, campaign_id, draw).await?;
    Ok(0)
}
