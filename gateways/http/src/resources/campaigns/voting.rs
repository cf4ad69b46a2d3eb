//! Voting campaigns (tag `campaigns`; the member's routes tag `member`):
//! admins create one (`/admin/api/v1/voting-campaigns`), edit its terms
//! while draft, add items, approve or reject members' items and read the
//! ranking; members submit items, vote and read the live ranking. Schedule,
//! start and end are the campaigns' own routes. Another tenant's campaign is 404.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::instrument;
use utoipa::{IntoParams, ToSchema};
use wxcm_commands::campaigns::voting::{self, RankedItem, Submitter, VoteItemView, VoteView};
use wxcm_commands::campaigns::{self, CampaignView};
use wxcm_domain::campaign::{
    CampaignId, CampaignKind, CampaignTerms, CampaignText, ItemSubmitters, Limits, VoteError, VoteItemId,
    VoteItemStatus, VoteItemText, VotePeriod, VotingTerms, APPROVAL_REWARD_POINTS_MAX, ITEMS_PER_MEMBER_MAX,
    PARTICIPATIONS_MAX, VOTE_ITEMS_MAX,
};
use wxcm_domain::PointsAmount;

use super::CampaignDto;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{
    parse_path_segment, ApiJson, ApiPath, ApiQuery, Authorized, Correlation, IdempotencyHeader, PathValue,
};
use crate::permissions::perm;
use crate::resources::member_api::MemberAuth;
use crate::state::AppState;

impl PathValue for VoteItemId {
    fn parse_segment(s: &str) -> Result<Self, ApiError> {
        VoteItemId::parse(s).map_err(|e| ApiError::bad_request("invalid_item_id", e.to_string()))
    }
}

/// The API's answer to a voting refusal.
pub(super) fn vote_rejection(e: &VoteError) -> ApiError {
    let message = e.to_string();
    match e {
        VoteError::ItemNotFound(_) => ApiError::not_found("vote_item_not_found", message),
        // Item ids derive from the request's key: a clash is ours, not the client's.
        VoteError::ItemConflict(_) => ApiError::internal("vote item", &message),
        VoteError::ItemNotApproved(_)
        | VoteError::ItemRejected(_)
        | VoteError::ItemApproved(_)
        | VoteError::AlreadyVoted
        | VoteError::ItemsFull
        | VoteError::MemberItemsLimitReached
        | VoteError::NotASubmitter(_) => ApiError::conflict(e.code(), message),
    }
}

// ---------------------------------------------------------------- bodies

/// Who may submit items.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ItemSubmittersDto {
    Operators,
    Members,
    /// Operators and members.
    Anyone,
}

/// The window of "one vote per item per member".
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VotePeriodDto {
    /// The whole campaign.
    Campaign,
    /// Each merchant day (UTC+8).
    Day,
}

/// How often a member may vote; absent: no limit of that kind.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VoteLimitsBody {
    /// Votes over the whole campaign.
    #[schema(minimum = 1, maximum = 1_000)]
    pub lifetime: Option<i64>,
    /// Votes per merchant day (UTC+8).
    #[schema(minimum = 1, maximum = 1_000)]
    pub per_day: Option<i64>,
}

/// A voting campaign: items by operators and/or members (a member's item is
/// approved or rejected by an operator), votes within the limits, one vote per
/// item per member per vote period.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VotingCampaignBody {
    #[schema(value_type = crate::doc::ShortText)]
    pub name: String,
    pub starts_at: DateTime<Utc>,
    /// After `starts_at`, at most 366 days later.
    pub ends_at: DateTime<Utc>,
    /// Only card-holding members may vote and submit items.
    #[serde(default)]
    pub members_only: bool,
    #[serde(default)]
    pub limits: VoteLimitsBody,
    pub submitters: ItemSubmittersDto,
    /// Points a member's item earns once when approved (absent: none; members must be able to submit).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub approval_reward_points: Option<i64>,
    pub vote_period: VotePeriodDto,
    /// Items the campaign holds.
    #[schema(minimum = 1, maximum = 200)]
    pub items_max: i64,
    /// Items one member may submit (default 1).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 10)]
    pub items_per_member_max: Option<i64>,
}

fn bounded(value: i64, max: u32, code: &'static str, what: &str) -> Result<u32, ApiError> {
    match u32::try_from(value) {
        Ok(v) if (1..=max).contains(&v) => Ok(v),
        _ => Err(ApiError::invalid(code, format!("{what} must be 1..={max}"))),
    }
}

fn short_text(s: &str) -> Result<CampaignText, ApiError> {
    CampaignText::parse(s).map_err(|e| ApiError::invalid("invalid_text", e.to_string()))
}

impl VotingCampaignBody {
    pub fn validate(&self) -> Result<CampaignTerms, ApiError> {
        let limit =
            |v: Option<i64>, what| v.map(|v| bounded(v, PARTICIPATIONS_MAX, "invalid_chances", what)).transpose();
        let reward = match self.approval_reward_points {
            None => None,
            Some(p) if (1..=APPROVAL_REWARD_POINTS_MAX).contains(&p) => {
                Some(PointsAmount::new(p).map_err(|e| ApiError::invalid("invalid_reward", e.to_string()))?)
            }
            Some(_) => {
                let message = format!("approval_reward_points must be 1..={APPROVAL_REWARD_POINTS_MAX}");
                return Err(ApiError::invalid("invalid_reward", message));
            }
        };
        let terms = CampaignTerms {
            name: short_text(&self.name)?,
            starts_at: self.starts_at,
            ends_at: self.ends_at,
            members_only: self.members_only,
            limits: Limits {
                lifetime: limit(self.limits.lifetime, "limits.lifetime")?,
                per_day: limit(self.limits.per_day, "limits.per_day")?,
                per_period: None,
            },
            kind: CampaignKind::Voting(VotingTerms {
                submitters: match self.submitters {
                    ItemSubmittersDto::Operators => ItemSubmitters::Operators,
                    ItemSubmittersDto::Members => ItemSubmitters::Members,
                    ItemSubmittersDto::Anyone => ItemSubmitters::Anyone,
                },
                approval_reward: reward,
                vote_period: match self.vote_period {
                    VotePeriodDto::Campaign => VotePeriod::Campaign,
                    VotePeriodDto::Day => VotePeriod::Day,
                },
                items_max: bounded(self.items_max, VOTE_ITEMS_MAX, "invalid_items_max", "items_max")?,
                items_per_member_max: bounded(
                    self.items_per_member_max.unwrap_or(1),
                    ITEMS_PER_MEMBER_MAX,
                    "invalid_items_per_member_max",
                    "items_per_member_max",
                )?,
            }),
        };
        terms.check().map_err(|e| ApiError::invalid("invalid_terms", e.to_string()))?;
        Ok(terms)
    }
}

/// An item to vote for.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VoteItemBody {
    #[schema(value_type = crate::doc::ShortText)]
    pub title: String,
    /// 1..=500 characters of visible text and line breaks.
    #[schema(value_type = Option<crate::doc::VoteItemDescription>)]
    pub description: Option<String>,
}

impl VoteItemBody {
    fn validate(&self) -> Result<(CampaignText, Option<VoteItemText>), ApiError> {
        let description = self
            .description
            .as_deref()
            .map(VoteItemText::parse)
            .transpose()
            .map_err(|e| ApiError::invalid("invalid_text", e.to_string()))?;
        Ok((short_text(&self.title)?, description))
    }
}

/// Why a member's item is rejected (recorded).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RejectItemBody {
    #[schema(value_type = crate::doc::ShortText)]
    pub reason: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VoteItemStatusDto {
    Pending,
    Approved,
    Rejected,
}

impl From<VoteItemStatus> for VoteItemStatusDto {
    fn from(s: VoteItemStatus) -> Self {
        match s {
            VoteItemStatus::Pending => VoteItemStatusDto::Pending,
            VoteItemStatus::Approved => VoteItemStatusDto::Approved,
            VoteItemStatus::Rejected => VoteItemStatusDto::Rejected,
        }
    }
}

impl From<VoteItemStatusDto> for VoteItemStatus {
    fn from(s: VoteItemStatusDto) -> Self {
        match s {
            VoteItemStatusDto::Pending => VoteItemStatus::Pending,
            VoteItemStatusDto::Approved => VoteItemStatus::Approved,
            VoteItemStatusDto::Rejected => VoteItemStatus::Rejected,
        }
    }
}

/// The items of a ranking with this status (default: every status).
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct VoteItemQuery {
    pub status: Option<VoteItemStatusDto>,
}

// ---------------------------------------------------------------- answers

/// A voting campaign's terms and how many items it holds.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VotingDto {
    pub submitters: ItemSubmittersDto,
    pub approval_reward_points: Option<i64>,
    pub vote_period: VotePeriodDto,
    pub items_max: u32,
    pub items_per_member_max: u32,
    /// Items submitted (every status).
    pub items: u32,
}

impl VotingDto {
    pub(super) fn of(view: &CampaignView) -> Option<Self> {
        let CampaignKind::Voting(terms) = &view.terms.kind else { return None };
        Some(Self {
            submitters: match terms.submitters {
                ItemSubmitters::Operators => ItemSubmittersDto::Operators,
                ItemSubmitters::Members => ItemSubmittersDto::Members,
                ItemSubmitters::Anyone => ItemSubmittersDto::Anyone,
            },
            approval_reward_points: terms.approval_reward.map(|r| r.get()),
            vote_period: match terms.vote_period {
                VotePeriod::Campaign => VotePeriodDto::Campaign,
                VotePeriod::Day => VotePeriodDto::Day,
            },
            items_max: terms.items_max,
            items_per_member_max: terms.items_per_member_max,
            items: view.vote_items,
        })
    }
}

/// One item as the campaign's stream has it now.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VoteItemDto {
    pub campaign_id: uuid::Uuid,
    pub item_id: uuid::Uuid,
    pub title: String,
    pub description: Option<String>,
    /// The member who submitted it (absent: an operator).
    pub member_id: Option<uuid::Uuid>,
    pub status: VoteItemStatusDto,
    pub votes: u32,
    pub submitted_at: DateTime<Utc>,
    /// Points the approval earned the member (granted once).
    pub reward_points: Option<i64>,
}

impl From<VoteItemView> for VoteItemDto {
    fn from(v: VoteItemView) -> Self {
        Self {
            campaign_id: v.campaign_id.as_uuid(),
            item_id: v.item_id.as_uuid(),
            title: v.title.as_str().to_owned(),
            description: v.description.map(|d| d.as_str().to_owned()),
            member_id: v.member_id.map(|m| m.as_uuid()),
            status: v.status.into(),
            votes: v.votes,
            submitted_at: v.submitted_at,
            reward_points: v.reward_points.map(|r| r.get()),
        }
    }
}

/// A member's own items.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VoteItemList {
    pub items: Vec<VoteItemDto>,
}

/// A recorded vote and the counts it left.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VoteDto {
    pub campaign_id: uuid::Uuid,
    pub item_id: uuid::Uuid,
    /// The item's votes, this one included.
    pub item_votes: u32,
    /// The member's votes in the campaign and on this merchant day, this one included.
    pub member_votes: u32,
    pub member_votes_today: u32,
    pub voted_at: DateTime<Utc>,
}

impl From<VoteView> for VoteDto {
    fn from(v: VoteView) -> Self {
        Self {
            campaign_id: v.campaign_id.as_uuid(),
            item_id: v.item_id.as_uuid(),
            item_votes: v.item_votes,
            member_votes: v.member_votes,
            member_votes_today: v.member_votes_today,
            voted_at: v.voted_at,
        }
    }
}

/// One item of a ranking.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RankedItemDto {
    /// 1 for the most votes (ties: the earlier submitted first).
    pub rank: u32,
    pub item_id: uuid::Uuid,
    pub title: String,
    pub description: Option<String>,
    pub status: VoteItemStatusDto,
    pub votes: u32,
    /// `operator` or `member`.
    pub submitted_by: String,
    /// The submitting member (admins only).
    pub member_id: Option<uuid::Uuid>,
    pub submitted_at: DateTime<Utc>,
}

/// Items ranked by votes, from the read model (it trails the votes by the projector's lag).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RankingDto {
    pub campaign_id: uuid::Uuid,
    pub items: Vec<RankedItemDto>,
}

fn ranking_dto(campaign_id: CampaignId, items: Vec<RankedItem>, with_members: bool) -> RankingDto {
    let items = (1u32..)
        .zip(items)
        .map(|(rank, i)| RankedItemDto {
            rank,
            item_id: i.item_id.as_uuid(),
            title: i.title,
            description: i.description,
            status: i.status.into(),
            votes: i.votes,
            submitted_by: if i.member_id.is_some() { "member" } else { "operator" }.to_owned(),
            member_id: i.member_id.filter(|_| with_members).map(|m| m.as_uuid()),
            submitted_at: i.submitted_at,
        })
        .collect();
    RankingDto { campaign_id: campaign_id.as_uuid(), items }
}

fn campaign_and_item(
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<(CampaignId, VoteItemId), ApiError> {
    let Path((campaign, item)) = path?;
    Ok((parse_path_segment(&campaign)?, parse_path_segment(&item)?))
}

// ---------------------------------------------------------------- admin

/// Creates a voting campaign as a draft (its terms can change until it is
/// scheduled; operators may add items from now on).
///
/// Rules between fields (422 `invalid_terms` otherwise): `ends_at` is after `starts_at` and at most
/// 366 days later; an approval reward needs members among the submitters.
#[utoipa::path(post, path = "/admin/api/v1/voting-campaigns", tag = "campaigns",
    security(("bearer" = [])),
    params(("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters; the same key is the same campaign")),
    request_body = VotingCampaignBody,
    responses(
        (status = 201, description = "Created (or replayed)", body = CampaignDto),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_text`, `invalid_chances`, `invalid_reward`, `invalid_items_max`, `invalid_items_per_member_max`, `invalid_terms`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username))]
pub async fn create_voting_campaign(
    State(state): State<AppState>,
    auth: Authorized<perm::CampaignManage>,
    key: IdempotencyHeader,
    correlation: Correlation,
    body: ApiJson<VotingCampaignBody>,
) -> Result<(StatusCode, Json<CampaignDto>), ApiError> {
    let terms = body.0.validate()?;
    let ctx = auth.context(key.0, correlation);
    let view = campaigns::create(&state.app, &ctx, terms, auth.actor()).await?;
    Ok((StatusCode::CREATED, Json(view.into())))
}

/// Replaces a voting draft's terms (the same rules between fields as at creation).
#[utoipa::path(put, path = "/admin/api/v1/campaigns/{campaign_id}/voting-terms", tag = "campaigns",
    security(("bearer" = [])),
    params(("campaign_id" = uuid::Uuid, Path)),
    request_body = VotingCampaignBody,
    responses(
        (status = 200, description = "Changed (or replayed)", body = CampaignDto),
        (status = 400, description = "`invalid_campaign_id`, `idempotency_key_missing`, `idempotency_key_invalid`, `malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`campaign_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`, `not_draft`, `wrong_kind` (the kind is fixed at creation), `vote_items_full` (fewer items than the draft holds)", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_text`, `invalid_chances`, `invalid_reward`, `invalid_items_max`, `invalid_items_per_member_max`, `invalid_terms`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, campaign_id = %id.0))]
pub async fn put_voting_terms(
    State(state): State<AppState>,
    auth: Authorized<perm::CampaignManage>,
    key: IdempotencyHeader,
    correlation: Correlation,
    id: ApiPath<CampaignId>,
    body: ApiJson<VotingCampaignBody>,
) -> Result<Json<CampaignDto>, ApiError> {
    let terms = body.0.validate()?;
    let ctx = auth.context(key.0, correlation);
    Ok(Json(campaigns::edit(&state.app, &ctx, id.0, terms, auth.actor()).await?.into()))
}

/// Adds an operator's item (approved at once, no reward): while draft, scheduled or ongoing.
#[utoipa::path(post, path = "/admin/api/v1/campaigns/{campaign_id}/vote-items", tag = "campaigns",
    security(("bearer" = [])),
    params(
        ("campaign_id" = uuid::Uuid, Path),
        ("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters; the same key is the same item"),
    ),
    request_body = VoteItemBody,
    responses(
        (status = 201, description = "Added (or replayed)", body = VoteItemDto),
        (status = 400, description = "`invalid_campaign_id`, `idempotency_key_missing`, `idempotency_key_invalid`, `malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`campaign_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`, `wrong_kind`, `already_ended`, `not_a_submitter`, `vote_items_full`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_text`", body = ErrorBody),
        (status = 503, description = "`contention`, `unavailable`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, campaign_id = %id.0))]
pub async fn admin_submit_item(
    State(state): State<AppState>,
    auth: Authorized<perm::CampaignManage>,
    key: IdempotencyHeader,
    correlation: Correlation,
    id: ApiPath<CampaignId>,
    body: ApiJson<VoteItemBody>,
) -> Result<(StatusCode, Json<VoteItemDto>), ApiError> {
    let (title, description) = body.0.validate()?;
    let ctx = auth.context(key.0, correlation);
    let submitter = Submitter::Operator(auth.actor());
    let view = voting::submit_item(&state.app, &ctx, id.0, submitter, title, description).await?;
    Ok((StatusCode::CREATED, Json(view.into())))
}

/// Approves a member's pending item: it takes votes from now on, and the
/// member gets the terms' reward once (approving again changes nothing).
#[utoipa::path(post, path = "/admin/api/v1/campaigns/{campaign_id}/vote-items/{item_id}/approve", tag = "campaigns",
    security(("bearer" = [])),
    params(
        ("campaign_id" = uuid::Uuid, Path),
        ("item_id" = uuid::Uuid, Path),
        ("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters"),
    ),
    responses(
        (status = 200, description = "Approved (or already approved)", body = VoteItemDto),
        (status = 400, description = "`invalid_campaign_id`, `invalid_item_id`, `idempotency_key_missing`, `idempotency_key_invalid`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`campaign_not_found`, `vote_item_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`, `wrong_kind`, `vote_item_rejected`, `already_ended`", body = ErrorBody),
        (status = 503, description = "`contention`, `unavailable`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id))]
pub async fn approve_item(
    State(state): State<AppState>,
    auth: Authorized<perm::CampaignManage>,
    key: IdempotencyHeader,
    correlation: Correlation,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<VoteItemDto>, ApiError> {
    let (campaign_id, item_id) = campaign_and_item(path)?;
    let ctx = auth.context(key.0, correlation);
    Ok(Json(voting::approve_item(&state.app, &ctx, campaign_id, item_id, auth.actor()).await?.into()))
}

/// Rejects a member's pending item with a reason (final: it never takes votes).
#[utoipa::path(post, path = "/admin/api/v1/campaigns/{campaign_id}/vote-items/{item_id}/reject", tag = "campaigns",
    security(("bearer" = [])),
    params(
        ("campaign_id" = uuid::Uuid, Path),
        ("item_id" = uuid::Uuid, Path),
        ("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters"),
    ),
    request_body = RejectItemBody,
    responses(
        (status = 200, description = "Rejected (or already rejected)", body = VoteItemDto),
        (status = 400, description = "`invalid_campaign_id`, `invalid_item_id`, `idempotency_key_missing`, `idempotency_key_invalid`, `malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`campaign_not_found`, `vote_item_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`, `wrong_kind`, `vote_item_approved`, `already_ended`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_text`", body = ErrorBody),
        (status = 503, description = "`contention`, `unavailable`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id))]
pub async fn reject_item(
    State(state): State<AppState>,
    auth: Authorized<perm::CampaignManage>,
    key: IdempotencyHeader,
    correlation: Correlation,
    path: Result<Path<(String, String)>, PathRejection>,
    body: ApiJson<RejectItemBody>,
) -> Result<Json<VoteItemDto>, ApiError> {
    let (campaign_id, item_id) = campaign_and_item(path)?;
    let reason = short_text(&body.0.reason)?;
    let ctx = auth.context(key.0, correlation);
    Ok(Json(voting::reject_item(&state.app, &ctx, campaign_id, item_id, reason, auth.actor()).await?.into()))
}

/// The campaign's items ranked by votes (optionally of one status), with
/// their submitters, from the read model.
#[utoipa::path(get, path = "/admin/api/v1/campaigns/{campaign_id}/vote-items", tag = "campaigns",
    security(("bearer" = [])),
    params(("campaign_id" = uuid::Uuid, Path), VoteItemQuery),
    responses(
        (status = 200, description = "The ranking (at most 200 items)", body = RankingDto),
        (status = 400, description = "`invalid_campaign_id`, `invalid_query`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`campaign_not_found`", body = ErrorBody),
        (status = 409, description = "`wrong_kind`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, campaign_id = %id.0))]
pub async fn admin_vote_items(
    State(state): State<AppState>,
    auth: Authorized<perm::CampaignRead>,
    id: ApiPath<CampaignId>,
    query: ApiQuery<VoteItemQuery>,
) -> Result<Json<RankingDto>, ApiError> {
    let status = query.0.status.map(Into::into);
    let items = voting::ranking(&state.app, &auth.session.tenant_id, id.0, status).await?;
    Ok(Json(ranking_dto(id.0, items, true)))
}

// ---------------------------------------------------------------- member API

/// Submits the member's item; it takes votes once an operator approves it
/// (and may then earn the member the campaign's reward).
#[utoipa::path(post, path = "/m/api/v1/campaigns/{campaign_id}/vote-items", tag = "member",
    security(("member_bearer" = [])),
    params(
        ("campaign_id" = uuid::Uuid, Path),
        ("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters; the same key is the same item"),
    ),
    request_body = VoteItemBody,
    responses(
        (status = 201, description = "Submitted (or replayed)", body = VoteItemDto),
        (status = 400, description = "`invalid_campaign_id`, `idempotency_key_missing`, `idempotency_key_invalid`, `malformed_json`", body = ErrorBody),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
        (status = 404, description = "`campaign_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`, `wrong_kind`, `not_ongoing`, `members_only`, `not_a_submitter`, `vote_items_full`, `member_items_limit_reached`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_text`", body = ErrorBody),
        (status = 503, description = "`contention`, `unavailable`", body = ErrorBody),
    ))]
pub async fn member_submit_item(
    State(state): State<AppState>,
    auth: MemberAuth,
    key: IdempotencyHeader,
    id: ApiPath<CampaignId>,
    body: ApiJson<VoteItemBody>,
) -> Result<(StatusCode, Json<VoteItemDto>), ApiError> {
    let (title, description) = body.0.validate()?;
    let (_, ctx) = auth.command(key.0);
    let submitter = Submitter::Member(auth.0.member_id);
    let view = voting::submit_item(&state.app, &ctx, id.0, submitter, title, description).await?;
    let mut dto = VoteItemDto::from(view);
    dto.member_id = None;
    Ok((StatusCode::CREATED, Json(dto)))
}

/// Votes once for an approved item: within the member's limits (lifetime,
/// per day), one vote per item per vote period.
#[utoipa::path(post, path = "/m/api/v1/campaigns/{campaign_id}/vote-items/{item_id}/votes", tag = "member",
    security(("member_bearer" = [])),
    params(
        ("campaign_id" = uuid::Uuid, Path),
        ("item_id" = uuid::Uuid, Path),
        ("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters; the same key is the same vote"),
    ),
    responses(
        (status = 201, description = "Counted (or replayed)", body = VoteDto),
        (status = 400, description = "`invalid_campaign_id`, `invalid_item_id`, `idempotency_key_missing`, `idempotency_key_invalid`", body = ErrorBody),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
        (status = 404, description = "`campaign_not_found`, `vote_item_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`, `wrong_kind`, `not_ongoing`, `members_only`, `vote_item_not_approved`, `already_voted`, `lifetime_limit_reached`, `daily_limit_reached`, `too_many_participants`", body = ErrorBody),
        (status = 503, description = "`contention`, `unavailable`", body = ErrorBody),
    ))]
pub async fn member_vote(
    State(state): State<AppState>,
    auth: MemberAuth,
    key: IdempotencyHeader,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<(StatusCode, Json<VoteDto>), ApiError> {
    let (campaign_id, item_id) = campaign_and_item(path)?;
    let (_, ctx) = auth.command(key.0);
    let vote = voting::vote(&state.app, &ctx, campaign_id, auth.0.member_id, item_id).await?;
    Ok((StatusCode::CREATED, Json(vote.into())))
}

/// The member's own items (every status, in submission order), as the
/// campaign has them now: pending, approved (with the reward) or rejected.
#[utoipa::path(get, path = "/m/api/v1/campaigns/{campaign_id}/vote-items", tag = "member",
    security(("member_bearer" = [])),
    params(("campaign_id" = uuid::Uuid, Path)),
    responses(
        (status = 200, description = "The member's items (at most 10)", body = VoteItemList),
        (status = 400, description = "`invalid_campaign_id`", body = ErrorBody),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
        (status = 404, description = "`campaign_not_found`", body = ErrorBody),
        (status = 409, description = "`wrong_kind`", body = ErrorBody),
    ))]
pub async fn member_items(
    State(state): State<AppState>,
    MemberAuth(session): MemberAuth,
    id: ApiPath<CampaignId>,
) -> Result<Json<VoteItemList>, ApiError> {
    let items = voting::member_items(&state.app, &session.tenant_id, id.0, session.member_id).await?;
    Ok(Json(VoteItemList { items: items.into_iter().map(Into::into).collect() }))
}

/// The live ranking: approved items by votes, from the read model.
#[utoipa::path(get, path = "/m/api/v1/campaigns/{campaign_id}/ranking", tag = "member",
    security(("member_bearer" = [])),
    params(("campaign_id" = uuid::Uuid, Path)),
    responses(
        (status = 200, description = "The ranking (at most 200 items)", body = RankingDto),
        (status = 400, description = "`invalid_campaign_id`", body = ErrorBody),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
        (status = 404, description = "`campaign_not_found`", body = ErrorBody),
        (status = 409, description = "`wrong_kind`", body = ErrorBody),
    ))]
pub async fn member_ranking(
    State(state): State<AppState>,
    MemberAuth(session): MemberAuth,
    id: ApiPath<CampaignId>,
) -> Result<Json<RankingDto>, ApiError> {
    let items = voting::ranking(&state.app, &session.tenant_id, id.0, Some(VoteItemStatus::Approved)).await?;
    Ok(Json(ranking_dto(id.0, items, false)))
}
