//! Issue lanes: concurrent issues of one template are decided together.
//!
//! A template is one stream, and every issue must take from its stock in
//! order. One command per issue would serialize all claims of a hot template
//! behind one commit each. Instead each template is served by one lane
//! ([`crate::lanes`]; templates are hashed onto [`LANES`] lanes): it takes
//! every issue queued when it is free, decides them in one
//! [`CouponTemplate::decide_issues`] and commits, in one transaction, the
//! template's `CouponsIssued` and every granted coupon's `CouponIssued` (first
//! sequence of its own stream). The optimistic check of each stream holds
//! across nodes: a stale template or a coupon stream someone else created
//! fails the whole transaction, which is then retried issue by issue, so one
//! conflict stays its own issue's.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use cqrs_es::persist::SerializedEvent;
use serde_json::{json, Value};
use tracing::{debug, warn};
use uuid::Uuid;
use wxcm_domain::coupon::{
    Coupon, CouponCommand, CouponEvent, CouponTemplate, IssueAsk, IssueChannel, IssueRefusal, IssuedCoupon,
    RedemptionCode, TemplateError, TemplateId,
};
use wxcm_domain::{Actor, DomainEventMeta, EventSourced, TenantId};

use super::{AppendError, CouponStore};
use crate::lanes::{event_row, LaneBounds, LaneError, LaneWorker, Lanes, Queued};
use crate::ports::Clock;
use crate::Executor;

/// Lanes per shard and node; templates share a lane only when they hash alike.
pub const LANES: usize = 16;
/// Issues waiting per lane; beyond it an issue is refused as busy.
pub const LANE_QUEUE_MAX: usize = 2_048;
/// Issues decided together (one template event plus one coupon event each:
/// within the group committer's rows per command).
pub const ISSUES_PER_BATCH_MAX: usize = 255;
/// Template states a lane keeps between batches.
const TEMPLATE_STATES_MAX: usize = 256;

/// One coupon to issue.
#[derive(Debug, Clone)]
pub struct IssueJob {
    pub tenant_id: TenantId,
    pub template_id: TemplateId,
    pub ask: IssueAsk,
    pub channel: IssueChannel,
    pub actor: Actor,
    pub code: RedemptionCode,
    /// The caller's idempotency key and request hash, stored on the coupon's event.
    pub idempotency_key: String,
    pub request_hash: String,
    pub correlation_id: Uuid,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssueError {
    #[error("coupon template not found")]
    TemplateNotFound,
    #[error("{0}")]
    Refused(IssueRefusal),
    /// Another writer took a stream this issue needed (its coupon slot, or the
    /// template moved on another node): decide again.
    #[error("conflict, try again")]
    Conflict,
    #[error("too many coupon issues waiting, try again")]
    Busy,
    #[error("store failure: {0}")]
    Store(String),
}

type Answer = Result<IssuedCoupon, IssueError>;
type QueuedIssue = Queued<IssueJob, Answer>;

pub struct IssueLanes {
    lanes: Lanes<Lane>,
}

impl IssueLanes {
    pub fn new(templates: Arc<Executor<CouponTemplate>>, store: Arc<dyn CouponStore>, clock: Arc<dyn Clock>) -> Self {
        let bounds = LaneBounds { lanes: LANES, queue_max: LANE_QUEUE_MAX, batch_max: ISSUES_PER_BATCH_MAX };
        let lanes = Lanes::new(bounds, move || Lane {
            templates: templates.clone(),
            store: store.clone(),
            clock: clock.clone(),
            states: HashMap::new(),
        });
        Self { lanes }
    }

    /// Issues one coupon, decided together with whatever else waits for its template.
    pub async fn issue(&self, job: IssueJob) -> Result<IssuedCoupon, IssueError> {
        self.lanes.submit(job).await.unwrap_or_else(|e| match e {
            LaneError::Busy => Err(IssueError::Busy),
            LaneError::Stopped => Err(IssueError::Store("coupon issue lane stopped".into())),
        })
    }
}

struct Lane {
    templates: Arc<Executor<CouponTemplate>>,
    store: Arc<dyn CouponStore>,
    clock: Arc<dyn Clock>,
    /// Template id → (state, version) as this lane last committed or read it.
    states: HashMap<TemplateId, (CouponTemplate, u64)>,
}

#[async_trait]
impl LaneWorker for Lane {
    type Key = TemplateId;
    type Job = IssueJob;
    type Answer = Answer;

    fn key(job: &IssueJob) -> TemplateId {
        job.template_id
    }

    async fn serve(&mut self, template_id: TemplateId, group: Vec<QueuedIssue>) -> Vec<QueuedIssue> {
        self.serve_template(template_id, group).await;
        Vec::new()
    }
}

impl Lane {
    /// Decides and commits one template's issues; answers every one of them.
    async fn serve_template(&mut self, template_id: TemplateId, group: Vec<QueuedIssue>) {
        // Two issues for one coupon stream (a member's concurrent claims of
        // the same slot): the first goes on, the others decide again later.
        let mut streams = HashSet::new();
        let mut batch = Vec::with_capacity(group.len());
        for q in group {
            if streams.insert(q.job.ask.coupon_id) {
                batch.push(q);
            } else {
                q.answer(Err(IssueError::Conflict));
            }
        }
        match self.attempt(template_id, &batch).await {
            Ok(outcomes) => answer(batch, outcomes),
            Err(IssueError::Conflict) if batch.len() > 1 => {
                debug!(%template_id, issues = batch.len(), "issue batch conflicted; deciding one by one");
                for q in batch {
                    let outcome = self.attempt(template_id, std::slice::from_ref(&q)).await;
                    q.answer(outcome.and_then(|mut o| o.pop().unwrap_or(Err(IssueError::Conflict))));
                }
            }
            Err(e) => {
                for q in batch {
                    q.answer(Err(e.clone()));
                }
            }
        }
    }

    async fn state(&mut self, template_id: TemplateId) -> Result<(CouponTemplate, u64), IssueError> {
        if let Some(hit) = self.states.get(&template_id) {
            return Ok(hit.clone());
        }
        let loaded = self
            .templates
            .load_any_tenant(&template_id.to_string())
            .await
            .map_err(|e| IssueError::Store(e.to_string()))?;
        if self.states.len() >= TEMPLATE_STATES_MAX {
            self.states.clear();
        }
        self.states.insert(template_id, loaded.clone());
        Ok(loaded)
    }

    /// One decision and one commit for `batch`: per issue, its coupon or refusal.
    async fn attempt(
        &mut self,
        template_id: TemplateId,
        batch: &[QueuedIssue],
    ) -> Result<Vec<Result<IssuedCoupon, IssueError>>, IssueError> {
        let (mut template, version) = self.state(template_id).await?;
        let Some(tenant) = template.tenant().cloned() else { return Err(IssueError::TemplateNotFound) };
        let now = self.clock.now();
        let asks: Vec<IssueAsk> =
            batch.iter().filter(|q| q.job.tenant_id == tenant).map(|q| q.job.ask.clone()).collect();
        if asks.is_empty() {
            return Err(IssueError::TemplateNotFound);
        }
        let decided = template.decide_issues(&asks, now).map_err(|e| match e {
            TemplateError::NotFound => IssueError::TemplateNotFound,
            other => IssueError::Store(other.to_string()),
        })?;
        let Some(event) = decided.event else {
            let mut outcomes = decided.outcomes.into_iter();
            return Ok(batch
                .iter()
                .map(|q| match q.job.tenant_id == tenant {
                    true => {
                        Err(outcomes.next().and_then(Result::err).map_or(IssueError::Conflict, IssueError::Refused))
                    }
                    false => Err(IssueError::TemplateNotFound),
                })
                .collect());
        };
        let terms = template.created.as_ref().map(|s| s.terms.clone()).ok_or(IssueError::TemplateNotFound)?;
        let (valid_from, valid_until) = terms.validity.window_at(now);

        let mut rows = vec![row(
            CouponTemplate::TYPE,
            &template_id.to_string(),
            version + 1,
            &event,
            template_meta(&tenant, batch),
        )?];
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut decided_outcomes = decided.outcomes.into_iter();
        for q in batch {
            if q.job.tenant_id != tenant {
                outcomes.push(Err(IssueError::TemplateNotFound));
                continue;
            }
            match decided_outcomes.next() {
                Some(Ok(grant)) => {
                    let coupon = IssuedCoupon {
                        coupon_id: grant.coupon_id,
                        tenant_id: tenant.clone(),
                        template_id,
                        member_id: grant.member_id,
                        serial: grant.serial,
                        code: q.job.code.clone(),
                        name: terms.name.clone(),
                        benefit: terms.benefit.clone(),
                        valid_from,
                        valid_until,
                        channel: q.job.channel.clone(),
                        actor: q.job.actor.clone(),
                        issued_at: now,
                    };
                    // The coupon aggregate decides and checks its own first event.
                    let events = Coupon::default()
                        .handle(CouponCommand::Issue(Box::new(coupon.clone())), now)
                        .map_err(|e| IssueError::Store(e.to_string()))?;
                    for e in &events {
                        Coupon::default().apply(e).map_err(|v| IssueError::Store(v.to_string()))?;
                    }
                    let CouponEvent::CouponIssued(_) = &events[0] else {
                        return Err(IssueError::Store("coupon issue decided another event".into()));
                    };
                    rows.push(row(Coupon::TYPE, &grant.coupon_id.to_string(), 1, &events[0], coupon_meta(&q.job))?);
                    outcomes.push(Ok(coupon));
                }
                Some(Err(refusal)) => outcomes.push(Err(IssueError::Refused(refusal))),
                None => outcomes.push(Err(IssueError::Conflict)),
            }
        }
        if let Err(violation) = template.apply(&event) {
            self.states.remove(&template_id);
            warn!(%template_id, rule = violation.rule, detail = %violation.detail, "decided issue breaks an invariant; nothing committed");
            return Err(IssueError::Store(violation.to_string()));
        }
        match self.store.append(rows).await {
            Ok(()) => {
                // The executor's cached copy is behind now: its next command
                // conflicts and reloads; claims read it only for the slot,
                // which the lane checks against this state.
                self.states.insert(template_id, (template, version + 1));
                Ok(outcomes)
            }
            Err(AppendError::Conflict) => {
                self.states.remove(&template_id);
                Err(IssueError::Conflict)
            }
            // Coupon issues keep answering a store failure as internal (unchanged).
            Err(AppendError::Store(e) | AppendError::Unavailable(e)) => {
                self.states.remove(&template_id);
                Err(IssueError::Store(e))
            }
        }
    }
}

fn answer(batch: Vec<QueuedIssue>, outcomes: Vec<Result<IssuedCoupon, IssueError>>) {
    let mut outcomes = outcomes.into_iter();
    for q in batch {
        q.answer(outcomes.next().unwrap_or(Err(IssueError::Conflict)));
    }
}

fn template_meta(tenant: &TenantId, batch: &[QueuedIssue]) -> Value {
    let correlation = batch.first().map(|q| q.job.correlation_id).unwrap_or_else(Uuid::new_v4);
    json!({ "tenant_id": tenant.as_str(), "correlation_id": correlation.to_string(), "actor": "system:coupon-issue" })
}

fn coupon_meta(job: &IssueJob) -> Value {
    json!({
        "tenant_id": job.tenant_id.as_str(),
        "idempotency_key": job.idempotency_key,
        "request_hash": job.request_hash,
        "correlation_id": job.correlation_id.to_string(),
        "actor": job.actor.label(),
    })
}

fn row<E: DomainEventMeta + serde::Serialize>(
    aggregate_type: &str,
    aggregate_id: &str,
    sequence: u64,
    event: &E,
    metadata: Value,
) -> Result<SerializedEvent, IssueError> {
    event_row(aggregate_type, aggregate_id, sequence, event, metadata).map_err(IssueError::Store)
}
