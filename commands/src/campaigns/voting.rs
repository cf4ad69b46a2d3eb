//! Voting campaigns (issue 14, item 7): items submitted by operators or
//! members, approval (a member's item may earn points, once) or rejection,
//! members' votes, and the live ranking from the `rm_vote_items` read model.
//!
//! **Deciding.** Every command goes through the executor on the campaign's
//! stream: a vote is counted against the member's lifetime and daily limits
//! and "one vote per item per member per vote period" in the same decision
//! that records it, so concurrent votes of one member can never pass a limit
//! (the stream's next sequence is the optimistic check). The request's
//! Idempotency-Key makes a retried vote or submission answer its first result;
//! a submission's item id derives from that key ([`VoteItemId::for_request`]).
//!
//! **Reward, once.** `CampaignVoteItemApproved` states the reward; in the same
//! transaction its trigger writes due work `campaign_vote_reward` (migration
//! 0027, aggregate id `<campaign>/<item>`, 30 s later). The approving request
//! grants it at once, and the due item again, both as `GrantPoints` under
//! `system_key(["campaign-vote-reward", campaign, item])`: the member ledger's
//! idempotency makes the second a replay. Approving again writes no event.
//!
//! **Ranking.** `projections::votes` keeps one row per item with its votes
//! (the count the vote's event states), which [`VoteRanking`] reads; the
//! answer says it is a read model (it trails the events by the projector's lag).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tracing::{info, instrument, warn};
use wxcm_domain::campaign::{
    CampaignCommand, CampaignEvent, CampaignId, CampaignKind, CampaignState, CampaignText, VoteError, VoteItem,
    VoteItemId, VoteItemStatus, VoteItemText,
};
use wxcm_domain::member::{ExpiryPolicy, MemberCommand, PointsSource, Provenance};
use wxcm_domain::{Actor, MemberId, PointsAmount, Reference, TenantId};

use super::{infra, run, state_of, system_key, CampaignOpError};
use crate::ports::PortError;
use crate::{App, CommandContext};

/// Items a ranking answer lists at most (a campaign holds at most 200).
pub const RANKING_MAX: u32 = 200;

/// One item of a ranking, as the read model has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RankedItem {
    pub item_id: VoteItemId,
    pub title: String,
    pub description: Option<String>,
    /// The member who submitted it (`None`: an operator).
    pub member_id: Option<MemberId>,
    pub status: VoteItemStatus,
    pub votes: u32,
    pub submitted_at: DateTime<Utc>,
}

/// The `rm_vote_items` read model (implemented by `projections::votes`).
#[async_trait]
pub trait VoteRanking: Send + Sync {
    /// The campaign's items with `status` (any when `None`), most votes
    /// first, then the earliest submitted, then by id; at most `limit`.
    async fn ranking(
        &self,
        tenant: &TenantId,
        campaign: CampaignId,
        status: Option<VoteItemStatus>,
        limit: u32,
    ) -> Result<Vec<RankedItem>, PortError>;
}

/// Who submits an item.
#[derive(Debug, Clone)]
pub enum Submitter {
    /// An operator (the actor of the admin session); the item is approved at once.
    Operator(Actor),
    Member(MemberId),
}

/// An item as the campaign's stream has it (what a write answers).
#[derive(Debug, Clone, Serialize)]
pub struct VoteItemView {
    pub campaign_id: CampaignId,
    pub item_id: VoteItemId,
    pub title: CampaignText,
    pub description: Option<VoteItemText>,
    pub member_id: Option<MemberId>,
    pub status: VoteItemStatus,
    pub votes: u32,
    pub submitted_at: DateTime<Utc>,
    /// Points the approval earned the member (a member's approved item, when the terms give a reward).
    pub reward_points: Option<PointsAmount>,
}

impl VoteItemView {
    fn of(state: &CampaignState, item_id: VoteItemId, item: &VoteItem) -> Self {
        let reward = match &state.terms.kind {
            CampaignKind::Voting(terms) if item.status == VoteItemStatus::Approved => {
                item.member_id.and(terms.approval_reward)
            }
            CampaignKind::Voting(_)
            | CampaignKind::PeriodicLottery(_)
            | CampaignKind::ShakeLottery(_)
            | CampaignKind::Snatch(_) => None,
        };
        Self {
            campaign_id: state.campaign_id,
            item_id,
            title: item.title.clone(),
            description: item.description.clone(),
            member_id: item.member_id,
            status: item.status,
            votes: item.votes,
            submitted_at: item.submitted_at,
            reward_points: reward,
        }
    }
}

/// A recorded vote with the counts it left.
#[derive(Debug, Clone, Serialize)]
pub struct VoteView {
    pub campaign_id: CampaignId,
    pub item_id: VoteItemId,
    pub item_votes: u32,
    /// The member's votes in the campaign and on the merchant day, this one included.
    pub member_votes: u32,
    pub member_votes_today: u32,
    pub voted_at: DateTime<Utc>,
    /// The answer of an earlier request with the same key.
    pub replayed: bool,
}

async fn item_view(
    app: &App,
    tenant: &TenantId,
    campaign_id: CampaignId,
    item_id: VoteItemId,
) -> Result<VoteItemView, CampaignOpError> {
    let shard = app.router.route(tenant)?;
    let state = state_of(&shard, tenant, campaign_id).await?;
    let item =
        state.voting.items.get(&item_id).ok_or(CampaignOpError::Campaign(VoteError::ItemNotFound(item_id).into()))?;
    Ok(VoteItemView::of(&state, item_id, item))
}

/// Whether the member holds a card (another tenant's member does not exist).
async fn card_member(app: &App, tenant: &TenantId, member_id: MemberId) -> Result<bool, CampaignOpError> {
    let shard = app.router.route(tenant)?;
    let (member, _) = shard.members.load(tenant, &member_id.to_string()).await?;
    Ok(member.registration.is_some())
}

/// Submits an item (idempotent by the request's key: the key names the item).
#[instrument(skip_all, fields(tenant = %ctx.tenant_id, %campaign_id))]
pub async fn submit_item(
    app: &App,
    ctx: &CommandContext,
    campaign_id: CampaignId,
    submitter: Submitter,
    title: CampaignText,
    description: Option<VoteItemText>,
) -> Result<VoteItemView, CampaignOpError> {
    let tenant = &ctx.tenant_id;
    let (member_id, card, actor, by) = match submitter {
        Submitter::Operator(actor) => (None, false, actor, "operator".to_owned()),
        Submitter::Member(member_id) => {
            let card = card_member(app, tenant, member_id).await?;
            (Some(member_id), card, Actor::Member { member_id }, member_id.to_string())
        }
    };
    let item_id = VoteItemId::for_request(tenant, campaign_id, &by, &ctx.idempotency_key);
    let request = serde_json::json!({
        "submit_vote_item": campaign_id, "by": by, "title": &title, "description": &description,
    });
    let command = CampaignCommand::SubmitVoteItem { item_id, title, description, member_id, card_member: card, actor };
    run(app, ctx, campaign_id, command, &request).await?;
    item_view(app, tenant, campaign_id, item_id).await
}

/// Approves a member's pending item (an operator's is approved already). The
/// reward the approval states is granted now and again by the due work, once.
#[instrument(skip_all, fields(tenant = %ctx.tenant_id, %campaign_id, %item_id))]
pub async fn approve_item(
    app: &App,
    ctx: &CommandContext,
    campaign_id: CampaignId,
    item_id: VoteItemId,
    actor: Actor,
) -> Result<VoteItemView, CampaignOpError> {
    let request = serde_json::json!({ "approve_vote_item": campaign_id, "item": item_id });
    run(app, ctx, campaign_id, CampaignCommand::ApproveVoteItem { item_id, actor }, &request).await?;
    let view = item_view(app, &ctx.tenant_id, campaign_id, item_id).await?;
    // Also when this approval wrote nothing: an earlier one may have died before its grant.
    if let Err(e) = grant_reward(app, &ctx.tenant_id, &view).await {
        warn!(error = %e, "approval reward not granted now; due work will");
    }
    Ok(view)
}

/// Rejects a member's pending item (final; the reason is recorded).
pub async fn reject_item(
    app: &App,
    ctx: &CommandContext,
    campaign_id: CampaignId,
    item_id: VoteItemId,
    reason: CampaignText,
    actor: Actor,
) -> Result<VoteItemView, CampaignOpError> {
    let request = serde_json::json!({ "reject_vote_item": campaign_id, "item": item_id, "reason": &reason });
    run(app, ctx, campaign_id, CampaignCommand::RejectVoteItem { item_id, reason, actor }, &request).await?;
    item_view(app, &ctx.tenant_id, campaign_id, item_id).await
}

/// One vote of `member_id` for an approved item, within the member's limits.
#[instrument(skip_all, fields(tenant = %ctx.tenant_id, %campaign_id, %member_id))]
pub async fn vote(
    app: &App,
    ctx: &CommandContext,
    campaign_id: CampaignId,
    member_id: MemberId,
    item_id: VoteItemId,
) -> Result<VoteView, CampaignOpError> {
    let card = card_member(app, &ctx.tenant_id, member_id).await?;
    let request = serde_json::json!({ "vote": campaign_id, "member": member_id, "item": item_id });
    let command = CampaignCommand::CastVote { member_id, item_id, card_member: card };
    let outcome = run(app, ctx, campaign_id, command, &request).await?;
    let cast = outcome.events.iter().find_map(|c| {
        if let CampaignEvent::CampaignVoteCast {
            item_id,
            member_total_after,
            member_day_after,
            item_votes_after,
            voted_at,
            ..
        } = &c.event
        {
            Some(VoteView {
                campaign_id,
                item_id: *item_id,
                item_votes: *item_votes_after,
                member_votes: *member_total_after,
                member_votes_today: *member_day_after,
                voted_at: *voted_at,
                replayed: outcome.replayed,
            })
        } else {
            None
        }
    });
    cast.ok_or_else(|| infra("a vote's key names no vote"))
}

/// The member's own items of the campaign (every status, in submission
/// order), from the campaign's stream: a member sees a pending item at once.
pub async fn member_items(
    app: &App,
    tenant: &TenantId,
    campaign_id: CampaignId,
    member_id: MemberId,
) -> Result<Vec<VoteItemView>, CampaignOpError> {
    let shard = app.router.route(tenant)?;
    let state = state_of(&shard, tenant, campaign_id).await?;
    state.voting_terms().map_err(CampaignOpError::Campaign)?;
    let mut mine: Vec<VoteItemView> = state
        .voting
        .items
        .iter()
        .filter(|(_, item)| item.member_id == Some(member_id))
        .map(|(id, item)| VoteItemView::of(&state, *id, item))
        .collect();
    mine.sort_by_key(|i| (i.submitted_at, i.item_id));
    Ok(mine)
}

/// The items of one campaign from the read model, ranked (another tenant's
/// campaign, or one of another kind, is not found).
pub async fn ranking(
    app: &App,
    tenant: &TenantId,
    campaign_id: CampaignId,
    status: Option<VoteItemStatus>,
) -> Result<Vec<RankedItem>, CampaignOpError> {
    let shard = app.router.route(tenant)?;
    let state = state_of(&shard, tenant, campaign_id).await?;
    state.voting_terms().map_err(CampaignOpError::Campaign)?;
    Ok(shard.vote_ranking.ranking(tenant, campaign_id, status, RANKING_MAX).await?)
}

/// Grants an approved member item's reward under a key of campaign and item
/// (once, however often it is called). Nothing for other items.
async fn grant_reward(app: &App, tenant: &TenantId, item: &VoteItemView) -> Result<u32, CampaignOpError> {
    let (Some(member_id), Some(points)) = (item.member_id, item.reward_points) else { return Ok(0) };
    let (campaign_id, item_id) = (item.campaign_id, item.item_id);
    let key = system_key(&["campaign-vote-reward", &campaign_id.to_string(), &item_id.to_string()])?;
    let actor = Actor::System { job: "campaign-vote-rewards".into() };
    let ctx = CommandContext::new(tenant.clone(), key.clone(), actor.label());
    let command = MemberCommand::GrantPoints {
        points,
        // The ledger's own source for approved vote items (product: points earned by them).
        source: PointsSource::Vote,
        expiry: ExpiryPolicy::Never,
        provenance: Provenance {
            actor,
            reason: Reference::parse("campaign vote item approved").map_err(infra)?,
            reference: Some(Reference::parse(&format!("campaign:{campaign_id}:vote-item:{item_id}")).map_err(infra)?),
            idempotency_key: key,
        },
    };
    let request = serde_json::json!({ "vote_reward": campaign_id, "item": item_id, "points": points });
    let outcome = crate::members::execute(app, tenant, member_id, command, &request, &ctx).await.map_err(infra)?;
    if !outcome.replayed {
        info!(%campaign_id, %item_id, points = points.get(), "vote item approval reward granted");
    }
    Ok(u32::from(!outcome.replayed))
}

/// Due work `campaign_vote_reward` (migration 0027), aggregate id
/// `<campaign>/<item>`: grants the approval's reward again (a replay when the
/// approving request did it).
pub async fn due_reward(app: &App, tenant: &TenantId, aggregate_id: &str) -> Result<u32, CampaignOpError> {
    let bad = || infra(format!("campaign_vote_reward item {aggregate_id:?} is not <campaign>/<item>"));
    let (campaign, item) = aggregate_id.split_once('/').ok_or_else(bad)?;
    let campaign_id = CampaignId::parse(campaign).map_err(|_| bad())?;
    let item_id = VoteItemId::parse(item).map_err(|_| bad())?;
    let view = item_view(app, tenant, campaign_id, item_id).await?;
    if view.status != VoteItemStatus::Approved {
        return Err(bad());
    }
    grant_reward(app, tenant, &view).await
}
