//! A member's shake and its prize.
//!
//! **Deciding.** A shake goes to its campaign's lane
//! ([`super::lanes::ShakeLanes`]), which decides it with the campaign's other
//! waiting shakes in one `Shake` command and one commit: the member's next
//! chance (`nonce` = their shakes so far + 1,
//! [`wxcm_domain::campaign::ShakeAsk`]), rolled as HMAC(seed, member ‖ nonce),
//! so a chance's result is fixed and a retry cannot re-roll it. The request's
//! Idempotency-Key is claimed with the event: a key already used makes the
//! lane answer a conflict, and the request then answers the first result
//! (same request) or `IdempotencyMismatch` (another request). A conflict
//! with another node's commit is decided again (at most
//! [`SHAKE_ATTEMPTS_MAX`] times).
//!
//! **Prize, once.** After the shake committed, its points or coupon prize is
//! issued under a key of campaign and award (`shake:<member>:<nonce>`): the
//! points grant by the member ledger's idempotency, the coupon by
//! [`crate::coupons::issue_prize`] (one coupon per campaign and award). The
//! shake's event also wrote due work `campaign_prize` in its transaction
//! (migration 0024), which issues it again under the same key 30 s later: a
//! replay when the request did it, the issue when it died in between. A
//! physical prize waits at the store (`HandOverPrize`).

use std::time::Duration;

use serde::Serialize;
use tracing::{info, instrument, warn};
use wxcm_domain::campaign::{AwardRef, Campaign, CampaignEvent, CampaignId, Prize, ShakeDraw};
use wxcm_domain::member::{ExpiryPolicy, MemberCommand, PointsSource, Provenance};
use wxcm_domain::{Actor, EventSourced, MemberId, Reference, TenantId};

use super::lanes::{requested_nonce, ShakeJob, ShakeLaneError};
use super::{infra, state_of, system_key, CampaignOpError, MEMBER_SHAKES_MAX};
use crate::coupons::{CouponOpError, MEMBER_STATE_AGE_MAX};
use crate::executor::request_hash;
use crate::{App, CommandContext};

/// Decisions of one shake request when other writers keep moving the campaign.
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
    // The hash an executor-run shake had: a key used before the lanes still replays.
    let request = serde_json::json!({ "shake": campaign_id, "member": member_id });
    let hash = request_hash(Campaign::TYPE, &campaign_id.to_string(), &request)?;
    // A card is never taken back: a state a few seconds old is as good.
    let (member, _) = shard.members.load_recent(tenant, &member_id.to_string(), MEMBER_STATE_AGE_MAX).await?;
    let card_member = member.registration.is_some();
    for attempt in 0..SHAKE_ATTEMPTS_MAX {
        let job = ShakeJob {
            tenant_id: tenant.clone(),
            campaign_id,
            member_id,
            card_member,
            idempotency_key: ctx.idempotency_key.to_string(),
            request_hash: hash.clone(),
            correlation_id: ctx.correlation_id,
        };
        match shard.shake_lanes.shake(job).await {
            Ok(drawn) => return answer(app, tenant, campaign_id, drawn.draw, false).await,
            Err(ShakeLaneError::Conflict) => {
                // A used key, or another node moved the campaign.
                if let Some(first) = previous_shake(app, ctx, campaign_id, member_id, &hash).await? {
                    return Ok(first);
                }
                let backoff_ms = 1 + u64::from(attempt) * 2 + rand::random::<u64>() % 5;
                tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
            }
            Err(ShakeLaneError::Campaign(e)) => {
                // A repeated key whose first run drew gets that draw, never a
                // refusal the state only gives because of that first run.
                return match previous_shake(app, ctx, campaign_id, member_id, &hash).await? {
                    Some(first) => Ok(first),
                    None => Err(CampaignOpError::Campaign(e)),
                };
            }
            Err(ShakeLaneError::NotFound) => return Err(CampaignOpError::NotFound),
            Err(ShakeLaneError::Busy) => return Err(CampaignOpError::Contention),
            Err(ShakeLaneError::Store(e)) => return Err(CampaignOpError::Infra(e)),
            Err(ShakeLaneError::Unavailable(e)) => return Err(CampaignOpError::Unavailable(e)),
        }
    }
    warn!("shake attempts exhausted");
    Err(CampaignOpError::Contention)
}

/// Issues a committed draw's prize now (the due work does it later if this fails).
async fn answer(
    app: &App,
    tenant: &TenantId,
    campaign_id: CampaignId,
    draw: ShakeDraw,
    replayed: bool,
) -> Result<ShakeResult, CampaignOpError> {
    let prize_status = match issue_prize(app, tenant, campaign_id, &draw).await {
        Ok(status) => status,
        Err(e) => {
            warn!(nonce = draw.nonce, error = %e, "shake prize not issued now; due work will");
            PrizeStatus::Pending
        }
    };
    Ok(ShakeResult { campaign_id, draw, prize_status, replayed })
}

/// The draw this request's key already made, if it made one for this request
/// (another request with the key: `IdempotencyMismatch`).
async fn previous_shake(
    app: &App,
    ctx: &CommandContext,
    campaign_id: CampaignId,
    member_id: MemberId,
    hash: &str,
) -> Result<Option<ShakeResult>, CampaignOpError> {
    let shard = app.router.route(&ctx.tenant_id)?;
    let key = ctx.idempotency_key.as_str();
    let Some(record) = shard.event_log.find_idempotency(&ctx.tenant_id, key).await? else {
        return Ok(None);
    };
    if record.request_hash != hash || record.aggregate_type != Campaign::TYPE {
        return Err(CampaignOpError::IdempotencyMismatch);
    }
    let logged = shard
        .event_log
        .read_range(Campaign::TYPE, &record.aggregate_id, record.first_sequence, record.first_sequence, 1)
        .await?;
    let event = logged.first().ok_or_else(|| infra("an idempotency key names a missing campaign event"))?;
    let draws = match serde_json::from_value(event.payload.clone()).map_err(infra)? {
        CampaignEvent::CampaignShakesDrawn { draws, .. } => draws,
        _ => return Err(infra("an idempotency key of a shake names another campaign event")),
    };
    // A batch names each key's chance; a shake from before the lanes was alone in its event.
    let nonce = requested_nonce(&event.metadata, key);
    let draw = draws
        .into_iter()
        .find(|d| d.member_id == member_id && nonce.is_none_or(|n| d.nonce == n))
        .ok_or_else(|| infra("a shake's event lacks the member's draw"))?;
    answer(app, &ctx.tenant_id, campaign_id, draw, true).await.map(Some)
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
