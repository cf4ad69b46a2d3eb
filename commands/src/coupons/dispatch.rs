//! Dispatch jobs: one template's coupons given to a list of members or to the
//! members matching a filter, in the background, with progress and a report.
//!
//! Each member's coupon is the stream `CouponId::for_grant(…, "dispatch:<job>")`
//! with the idempotency key `dispatch/<job>/<member>`: a member is issued at
//! most once per job however often its chunk runs. The scheduler role runs
//! jobs a chunk at a time ([`step`]); a chunk's outcome (cursor, counts) is
//! stored in one update after all its issues answered, so a crash in between
//! runs the chunk again and its issues replay: every member is counted once.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use wxcm_domain::coupon::TemplateId;
use wxcm_domain::{Actor, IdempotencyKey, MemberId, TenantId};

use super::{issue, CouponOpError, Recipient};
use crate::ports::{MemberFilter, MemberSearch, MemberSortKey, PortError, ShardServices, SortOrder};
use crate::{App, CommandContext};

/// Members of an explicit list at most.
pub const DISPATCH_LIST_MAX: usize = 10_000;
/// Members one step of one job handles.
pub const DISPATCH_CHUNK: u32 = 200;
/// Issues of one chunk in flight at once.
const CHUNK_CONCURRENCY: usize = 16;
/// Jobs one scheduler step advances.
pub const JOBS_PER_STEP_MAX: u32 = 4;

/// The members matching these (all given conditions) in `rm_members`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DispatchFilter {
    pub card_level: Option<String>,
    pub source: Option<String>,
    pub followed: Option<bool>,
    pub follow_source: Option<String>,
    pub points_min: Option<i64>,
    pub points_max: Option<i64>,
    pub balance_fen_min: Option<i64>,
    pub balance_fen_max: Option<i64>,
}

impl DispatchFilter {
    fn member_filter(&self) -> MemberFilter {
        MemberFilter {
            card_no: None,
            openid: None,
            card_level: self.card_level.clone(),
            source: self.source.clone(),
            followed: self.followed,
            follow_source: self.follow_source.clone(),
            points_min: self.points_min,
            points_max: self.points_max,
            balance_fen_min: self.balance_fen_min,
            balance_fen_max: self.balance_fen_max,
        }
    }
}

/// Who gets a coupon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DispatchTarget {
    /// These members, in this order (distinct, at most [`DISPATCH_LIST_MAX`]).
    Members { member_ids: Vec<MemberId> },
    /// The members matching the filter as the job reaches them, in
    /// registration order (a member registered while the job runs may be included).
    Filter { filter: DispatchFilter },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DispatchState {
    Running,
    Done,
}

impl DispatchState {
    pub fn as_str(self) -> &'static str {
        match self {
            DispatchState::Running => "running",
            DispatchState::Done => "done",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "running" => Some(DispatchState::Running),
            "done" => Some(DispatchState::Done),
            _ => None,
        }
    }
}

/// A job and its report so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DispatchJob {
    pub job_id: Uuid,
    pub tenant_id: TenantId,
    pub template_id: TemplateId,
    pub target: DispatchTarget,
    pub state: DispatchState,
    /// Where the next chunk starts: an index into the list, or a member-search cursor.
    #[serde(skip)]
    pub cursor: Option<String>,
    /// Members handled (issued, refused or not found).
    pub processed: i64,
    pub issued: i64,
    /// Refusals by reason (`sold_out`, `template_disabled`, `member_not_found`, …).
    pub refused: BTreeMap<String, i64>,
    /// Why the last chunk stopped early (it runs again on the next step).
    pub last_error: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// One chunk's outcome, stored at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkOutcome {
    pub cursor: Option<String>,
    pub processed: i64,
    pub issued: i64,
    pub refused: BTreeMap<String, i64>,
    pub done: bool,
}

#[async_trait]
pub trait DispatchStore: Send + Sync {
    /// Stores a new job; returns the stored one (an earlier job with this id
    /// and its request hash, if it exists).
    async fn create(&self, job: &DispatchJob, request_hash: &str) -> Result<(DispatchJob, String), PortError>;
    async fn get(&self, tenant: &TenantId, job_id: Uuid) -> Result<Option<DispatchJob>, PortError>;
    /// Running jobs of the shard, oldest first.
    async fn running(&self, limit: u32) -> Result<Vec<DispatchJob>, PortError>;
    /// Adds a chunk's outcome if the job is still at `processed_before`
    /// (false: another runner moved it; nothing changed).
    async fn advance(
        &self,
        job_id: Uuid,
        processed_before: i64,
        outcome: &ChunkOutcome,
        now: DateTime<Utc>,
    ) -> Result<bool, PortError>;
    async fn record_error(&self, job_id: Uuid, error: &str) -> Result<(), PortError>;
}

fn job_id_for(tenant: &TenantId, key: &IdempotencyKey) -> Uuid {
    const NAMESPACE: Uuid = Uuid::from_u128(0x2d8c_61f0_9a3b_4c7e_b5d2_0e41_7a96_c3f8);
    Uuid::new_v5(&NAMESPACE, format!("{}\u{1f}{}", tenant.as_str(), key.as_str()).as_bytes())
}

/// Starts a dispatch job (the same key and request returns the first job).
pub async fn start(
    app: &App,
    ctx: &CommandContext,
    template_id: TemplateId,
    target: DispatchTarget,
    actor: &Actor,
) -> Result<DispatchJob, CouponOpError> {
    if let DispatchTarget::Members { member_ids } = &target {
        let distinct: std::collections::HashSet<_> = member_ids.iter().collect();
        if member_ids.is_empty() || member_ids.len() > DISPATCH_LIST_MAX || distinct.len() != member_ids.len() {
            return Err(CouponOpError::InvalidDispatch(format!(
                "members must be 1..={DISPATCH_LIST_MAX} distinct ids"
            )));
        }
    }
    super::get_template(app, &ctx.tenant_id, template_id).await?;
    let request = serde_json::json!({ "template": template_id, "target": &target });
    let hash = crate::executor::request_hash("coupon_dispatch", &template_id.to_string(), &request)?;
    let now = app.clock.now();
    let job = DispatchJob {
        job_id: job_id_for(&ctx.tenant_id, &ctx.idempotency_key),
        tenant_id: ctx.tenant_id.clone(),
        template_id,
        target,
        state: DispatchState::Running,
        cursor: None,
        processed: 0,
        issued: 0,
        refused: BTreeMap::new(),
        last_error: None,
        created_by: actor.label(),
        created_at: now,
        finished_at: None,
    };
    let shard = app.router.route(&ctx.tenant_id)?;
    let (stored, stored_hash) = shard.coupon_dispatches.create(&job, &hash).await?;
    if stored_hash != hash || stored.tenant_id != ctx.tenant_id {
        return Err(CouponOpError::IdempotencyMismatch);
    }
    Ok(stored)
}

pub async fn get(app: &App, tenant: &TenantId, job_id: Uuid) -> Result<DispatchJob, CouponOpError> {
    let shard = app.router.route(tenant)?;
    shard.coupon_dispatches.get(tenant, job_id).await?.ok_or(CouponOpError::NotFound("dispatch job"))
}

/// Advances the shard's running jobs by one chunk each; returns members handled.
pub async fn step(app: &App, shard: &ShardServices) -> Result<u64, PortError> {
    let mut handled = 0;
    for job in shard.coupon_dispatches.running(JOBS_PER_STEP_MAX).await? {
        handled += run_chunk(app, shard, &job).await?;
    }
    Ok(handled)
}

/// The next members of the job and the cursor after them (`None`: no more).
async fn next_members(shard: &ShardServices, job: &DispatchJob) -> Result<(Vec<MemberId>, Option<String>), PortError> {
    match &job.target {
        DispatchTarget::Members { member_ids } => {
            let from = usize::try_from(job.processed).unwrap_or(usize::MAX).min(member_ids.len());
            let to = (from + DISPATCH_CHUNK as usize).min(member_ids.len());
            let next = (to < member_ids.len()).then(|| to.to_string());
            Ok((member_ids[from..to].to_vec(), next))
        }
        DispatchTarget::Filter { filter } => {
            let after = match &job.cursor {
                Some(c) => Some(
                    crate::ports::MemberCursor::parse(c, MemberSortKey::RegisteredAt)
                        .ok_or_else(|| PortError::msg(format!("dispatch {}: bad cursor", job.job_id)))?,
                ),
                None => None,
            };
            let search = MemberSearch {
                filter: filter.member_filter(),
                sort: MemberSortKey::RegisteredAt,
                order: SortOrder::Asc,
                limit: DISPATCH_CHUNK,
                after,
            };
            let page = shard.read_models.search_members(&job.tenant_id, &search).await?;
            let next = page.next_after.map(|c| c.encode());
            Ok((page.members.into_iter().map(|m| m.member_id).collect(), next))
        }
    }
}

async fn run_chunk(app: &App, shard: &ShardServices, job: &DispatchJob) -> Result<u64, PortError> {
    let (members, next) = next_members(shard, job).await?;
    let actor = Actor::System { job: format!("coupon-dispatch:{}", job.job_id) };
    let results: Vec<Result<(), CouponOpError>> = futures::stream::iter(members.iter().copied())
        .map(|member_id| {
            let actor = actor.clone();
            async move {
                let key = crate::members::system_key(&["dispatch", &job.job_id.to_string(), &member_id.to_string()])
                    .map_err(|e| CouponOpError::Infra(e.to_string()))?;
                let ctx = CommandContext::new(job.tenant_id.clone(), key, actor.label());
                let recipient = Recipient::Dispatch { member_id, job_id: job.job_id };
                issue(app, &ctx, job.template_id, recipient, actor).await.map(|_| ())
            }
        })
        .buffer_unordered(CHUNK_CONCURRENCY)
        .collect()
        .await;
    let mut outcome = ChunkOutcome {
        cursor: next.clone(),
        processed: members.len() as i64,
        issued: 0,
        refused: BTreeMap::new(),
        done: next.is_none(),
    };
    for result in results {
        let reason = match result {
            Ok(()) => {
                outcome.issued += 1;
                continue;
            }
            Err(CouponOpError::Refused(why)) => why.code(),
            Err(CouponOpError::NotFound("member")) => "member_not_found",
            Err(other) => {
                // Not this member's fault (store, contention): the chunk runs again later.
                let error = other.to_string();
                tracing::warn!(job = %job.job_id, error = %error, "dispatch chunk stopped; retried on the next step");
                shard.coupon_dispatches.record_error(job.job_id, &error).await?;
                return Ok(0);
            }
        };
        *outcome.refused.entry(reason.to_owned()).or_default() += 1;
    }
    shard.coupon_dispatches.advance(job.job_id, job.processed, &outcome, app.clock.now()).await?;
    Ok(members.len() as u64)
}
