//! Shake lanes: concurrent shakes of one campaign decided together.
//!
//! Every shake of a campaign must be decided on the campaign's latest state
//! (stock, table in force, each member's chances and prizes), so they all meet
//! on its one stream. One command per shake serializes them behind one commit
//! each. Instead each campaign is served by one lane ([`crate::lanes`];
//! campaigns are hashed onto [`LANES`] lanes per shard and node): it takes
//! every shake queued when it is free, gives each member their next chance
//! (`nonce`), decides them in one [`Campaign::decide_shakes`] (at most
//! [`SHAKES_PER_BATCH_MAX`], the domain's bound on one event) and appends one
//! `CampaignShakesDrawn` through the shard's group committer.
//!
//! - One shake per member per round: a member's other concurrent shakes are
//!   handed back to the next round, where they get the next chance or the
//!   refusal that chance gets (a limit reached), never a chance out of order.
//! - Idempotency per request: the event's metadata lists each drawn shake's
//!   Idempotency-Key and request hash (`shake_requests`, a JSON array in a
//!   string, as metadata values are strings), and a trigger
//!   (migration 0025) claims every key in `idempotency_keys` in the same
//!   statement. A used key fails the append as a conflict.
//! - Across nodes: the append is optimistic on the stream's next sequence. A
//!   conflict (another node moved the campaign, or a used key) drops the cached
//!   state; the batch is decided once more on fresh state, then shake by shake,
//!   so a conflict stays its own shake's ([`ShakeLaneError::Conflict`]: the
//!   caller looks its key up, else asks again).
//! - The lane keeps each campaign's state, version and unsealed seed between
//!   rounds (at most [`CAMPAIGN_STATES_MAX`]), so a round costs one append.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::{debug, warn};
use uuid::Uuid;
use wxcm_domain::campaign::{
    Campaign, CampaignError, CampaignEvent, CampaignId, CampaignKind, DrawSeed, Refusal, ShakeAsk, ShakeDraw,
    SHAKES_PER_EVENT_MAX,
};
use wxcm_domain::{EventSourced, MemberId, TenantId};

use super::{unseal_with, CampaignStore};
use crate::lanes::{event_row, AppendError, EventAppender, LaneBounds, LaneError, LaneWorker, Lanes, Queued};
use crate::ports::{Clock, PortError, SecretSealer};
use crate::Executor;

/// Lanes per shard and node; campaigns share a lane only when they hash alike.
pub const LANES: usize = 16;
/// Shakes waiting per lane; beyond it a shake is refused as busy (503).
pub const LANE_QUEUE_MAX: usize = 2_048;
/// Shakes decided together: the domain's bound on one event.
pub const SHAKES_PER_BATCH_MAX: usize = SHAKES_PER_EVENT_MAX;
/// Campaign states (with their seeds) a lane keeps between rounds.
pub const CAMPAIGN_STATES_MAX: usize = 64;

/// One member's shake, as the request asks it.
#[derive(Debug, Clone)]
pub struct ShakeJob {
    pub tenant_id: TenantId,
    pub campaign_id: CampaignId,
    pub member_id: MemberId,
    /// The member holds a card (read from the member stream by the caller).
    pub card_member: bool,
    /// The request's key and hash, claimed with the shake's event.
    pub idempotency_key: String,
    pub request_hash: String,
    pub correlation_id: Uuid,
}

/// A committed shake: the draw and the campaign event that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drawn {
    pub draw: ShakeDraw,
    pub sequence: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShakeLaneError {
    /// No such campaign, or another tenant's.
    #[error("campaign not found")]
    NotFound,
    /// A refusal or another domain error (wrong kind, seed mismatch).
    #[error(transparent)]
    Campaign(CampaignError),
    /// Another writer moved the campaign, or the request's key was used:
    /// look the key up, else ask again.
    #[error("conflict, try again")]
    Conflict,
    #[error("too many shakes waiting, try again")]
    Busy,
    #[error("store failure: {0}")]
    Store(String),
    /// The store could not be reached for now; the outcome is unknown.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

impl From<PortError> for ShakeLaneError {
    fn from(e: PortError) -> Self {
        if e.is_transient() {
            ShakeLaneError::Unavailable(e.to_string())
        } else {
            ShakeLaneError::Store(e.to_string())
        }
    }
}

/// One drawn shake's request, listed in the event's metadata (`shake_requests`,
/// a JSON array in a string).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShakeRequestMeta {
    pub idempotency_key: String,
    pub request_hash: String,
    pub member_id: MemberId,
    pub nonce: u32,
}

/// The chance a key drew in an event, from the event's metadata (`None`:
/// the event names no such key, as a shake committed before the lanes).
pub fn requested_nonce(metadata: &serde_json::Value, idempotency_key: &str) -> Option<u32> {
    let listed: Vec<ShakeRequestMeta> = serde_json::from_str(metadata.get("shake_requests")?.as_str()?).ok()?;
    listed.into_iter().find(|r| r.idempotency_key == idempotency_key).map(|r| r.nonce)
}

type Answer = Result<Drawn, ShakeLaneError>;
type QueuedShake = Queued<ShakeJob, Answer>;

/// What a lane needs from the shard (and the node's sealer for the seeds).
#[derive(Clone)]
pub struct ShakeLaneDeps {
    pub campaigns: Arc<Executor<Campaign>>,
    pub appender: Arc<dyn EventAppender>,
    pub store: Arc<dyn CampaignStore>,
    pub sealer: Arc<dyn SecretSealer>,
    pub clock: Arc<dyn Clock>,
}

pub struct ShakeLanes {
    lanes: Lanes<Lane>,
}

impl ShakeLanes {
    pub fn new(deps: ShakeLaneDeps) -> Self {
        let bounds = LaneBounds { lanes: LANES, queue_max: LANE_QUEUE_MAX, batch_max: SHAKES_PER_BATCH_MAX };
        Self {
            lanes: Lanes::new(bounds, move || Lane {
                deps: deps.clone(),
                states: HashMap::new(),
                seeds: HashMap::new(),
            }),
        }
    }

    /// The member's next chance, decided together with the campaign's other waiting shakes.
    pub async fn shake(&self, job: ShakeJob) -> Answer {
        self.lanes.submit(job).await.unwrap_or_else(|e| match e {
            LaneError::Busy => Err(ShakeLaneError::Busy),
            LaneError::Stopped => Err(ShakeLaneError::Store("shake lane stopped".into())),
        })
    }
}

/// A campaign as the lane last committed or read it.
struct Cached {
    campaign: Campaign,
    version: u64,
}

struct Lane {
    deps: ShakeLaneDeps,
    states: HashMap<CampaignId, Cached>,
    /// Unsealed seeds (a seed never changes once stored), at most [`CAMPAIGN_STATES_MAX`].
    seeds: HashMap<CampaignId, DrawSeed>,
}

#[async_trait]
impl LaneWorker for Lane {
    type Key = CampaignId;
    type Job = ShakeJob;
    type Answer = Answer;

    fn key(job: &ShakeJob) -> CampaignId {
        job.campaign_id
    }

    async fn serve(&mut self, campaign_id: CampaignId, group: Vec<QueuedShake>) -> Vec<QueuedShake> {
        // One shake per member (and per key) a round: the next one needs this one's outcome.
        let (mut members, mut keys) = (HashSet::new(), HashSet::new());
        let (mut batch, mut later) = (Vec::with_capacity(group.len()), Vec::new());
        for q in group {
            let member = (q.job.tenant_id.clone(), q.job.member_id);
            let key = (q.job.tenant_id.clone(), q.job.idempotency_key.clone());
            if members.contains(&member) || keys.contains(&key) {
                later.push(q);
            } else {
                members.insert(member);
                keys.insert(key);
                batch.push(q);
            }
        }
        self.serve_batch(campaign_id, batch).await;
        later
    }
}

impl Lane {
    /// Decides and commits one campaign's batch; answers every shake in it.
    async fn serve_batch(&mut self, campaign_id: CampaignId, batch: Vec<QueuedShake>) {
        let mut outcome = self.attempt(campaign_id, &batch).await;
        if batch.len() > 1 && outcome == Err(ShakeLaneError::Conflict) {
            // Stale state (another node) is mended by deciding again on fresh state.
            outcome = self.attempt(campaign_id, &batch).await;
            if outcome == Err(ShakeLaneError::Conflict) {
                // A used key, most likely: one by one, so it stays that shake's.
                debug!(%campaign_id, shakes = batch.len(), "shake batch conflicted; deciding one by one");
                for q in batch {
                    let one = self.attempt(campaign_id, std::slice::from_ref(&q)).await;
                    q.answer(one.and_then(|mut o| o.pop().unwrap_or(Err(ShakeLaneError::Conflict))));
                }
                return;
            }
        }
        match outcome {
            Ok(outcomes) => {
                for (q, o) in batch.into_iter().zip(outcomes) {
                    q.answer(o);
                }
            }
            Err(e) => {
                for q in batch {
                    q.answer(Err(e.clone()));
                }
            }
        }
    }

    /// The campaign, taken out of the cache (put back once committed or
    /// known unchanged), or loaded from the store when not cached or when
    /// `fresh`; `true` with it when loaded now.
    async fn take(&mut self, campaign_id: CampaignId, fresh: bool) -> Result<(Cached, bool), ShakeLaneError> {
        match self.states.remove(&campaign_id) {
            Some(cached) if !fresh => Ok((cached, false)),
            Some(_) | None => {
                let (campaign, version) = self.deps.campaigns.load_any_tenant(&campaign_id.to_string()).await?;
                Ok((Cached { campaign, version }, true))
            }
        }
    }

    /// The campaign's unsealed seed once it has committed to one (scheduled).
    async fn seed(&mut self, cached: &Cached, campaign_id: CampaignId) -> Result<Option<DrawSeed>, ShakeLaneError> {
        let Some(state) = cached.campaign.created.as_ref().filter(|s| s.commitment.is_some()) else {
            return Ok(None);
        };
        if let Some(seed) = self.seeds.get(&campaign_id) {
            return Ok(Some(*seed));
        }
        let Some(sealed) = self.deps.store.seed(&state.tenant_id, campaign_id, 0).await? else { return Ok(None) };
        let seed = unseal_with(&*self.deps.sealer, &sealed)?;
        if self.seeds.len() >= CAMPAIGN_STATES_MAX {
            self.seeds.clear();
        }
        self.seeds.insert(campaign_id, seed);
        Ok(Some(seed))
    }

    /// Keeps an existing campaign for the next round (bounded: a full cache starts over).
    fn keep(&mut self, campaign_id: CampaignId, cached: Cached) {
        if cached.campaign.created.is_none() {
            return;
        }
        if self.states.len() >= CAMPAIGN_STATES_MAX {
            self.states.clear();
        }
        self.states.insert(campaign_id, cached);
    }

    /// One decision and at most one append for `batch`: per shake, its draw
    /// or refusal. Nothing is refused on cached state: a decision that draws
    /// nothing is made again on state read now (a campaign started or
    /// scheduled since, by this node's executor or another node).
    async fn attempt(&mut self, campaign_id: CampaignId, batch: &[QueuedShake]) -> Result<Vec<Answer>, ShakeLaneError> {
        for fresh in [false, true] {
            let (cached, loaded) = self.take(campaign_id, fresh).await?;
            let seed = match self.seed(&cached, campaign_id).await {
                Ok(seed) => seed,
                Err(e) => {
                    self.keep(campaign_id, cached);
                    return Err(e);
                }
            };
            let decided = decide(&cached, seed, batch, self.deps.clock.now());
            match decided {
                Ok(Decided { event: Some(event), answers, requests }) => {
                    return self.commit(campaign_id, cached, event, answers, requests, batch).await;
                }
                Ok(Decided { event: None, answers, .. }) if loaded => {
                    self.keep(campaign_id, cached);
                    return Ok(answers.into_iter().map(|a| a.map(|draw| Drawn { draw, sequence: 0 })).collect());
                }
                Err(e) if loaded => {
                    self.keep(campaign_id, cached);
                    return Err(e);
                }
                Ok(_) | Err(_) => self.keep(campaign_id, cached),
            }
        }
        Err(ShakeLaneError::Conflict)
    }

    /// Applies the decided event to the cached state (the aggregate checks it
    /// again) and appends it; the state is kept only when the append committed.
    async fn commit(
        &mut self,
        campaign_id: CampaignId,
        mut cached: Cached,
        event: CampaignEvent,
        answers: Vec<Result<ShakeDraw, ShakeLaneError>>,
        requests: Vec<ShakeRequestMeta>,
        batch: &[QueuedShake],
    ) -> Result<Vec<Answer>, ShakeLaneError> {
        let tenant = cached.campaign.tenant().cloned().ok_or(ShakeLaneError::NotFound)?;
        let correlation = batch.first().map_or_else(Uuid::new_v4, |q| q.job.correlation_id);
        // A JSON string: event metadata values are strings (cqrs-es reads them as a map of strings).
        let requests = serde_json::to_string(&requests).map_err(|e| ShakeLaneError::Store(e.to_string()))?;
        let metadata = json!({
            "tenant_id": tenant.as_str(),
            "correlation_id": correlation.to_string(),
            "actor": "system:campaign-shakes",
            "shake_requests": requests,
        });
        let sequence = cached.version + 1;
        let row = event_row(Campaign::TYPE, &campaign_id.to_string(), sequence, &event, metadata)
            .map_err(ShakeLaneError::Store)?;
        if let Err(violation) = cached.campaign.apply(&event) {
            warn!(%campaign_id, rule = violation.rule, detail = %violation.detail, "decided shakes break an invariant; nothing committed");
            return Err(ShakeLaneError::Store(violation.to_string()));
        }
        match self.deps.appender.append(vec![row]).await {
            Ok(()) => {
                cached.version = sequence;
                self.keep(campaign_id, cached);
                Ok(answers.into_iter().map(|a| a.map(|draw| Drawn { draw, sequence })).collect())
            }
            Err(AppendError::Conflict) => Err(ShakeLaneError::Conflict),
            Err(AppendError::Store(e)) => Err(ShakeLaneError::Store(e)),
            Err(AppendError::Unavailable(e)) => Err(ShakeLaneError::Unavailable(e)),
        }
    }
}

/// What a batch comes to: the event to append (if anything was drawn), per
/// shake its draw or why not, and the drawn shakes' requests.
struct Decided {
    event: Option<CampaignEvent>,
    answers: Vec<Result<ShakeDraw, ShakeLaneError>>,
    requests: Vec<ShakeRequestMeta>,
}

/// Gives each shake its member's next chance and decides the batch in order.
/// Another tenant's shakes are not found; a wrong kind or a campaign not
/// scheduled refuses the tenant's shakes alike.
fn decide(
    cached: &Cached,
    seed: Option<DrawSeed>,
    batch: &[QueuedShake],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Decided, ShakeLaneError> {
    let Some(state) = cached.campaign.created.as_ref() else { return Err(ShakeLaneError::NotFound) };
    let ours = |q: &QueuedShake| q.job.tenant_id == state.tenant_id;
    if !batch.iter().any(ours) {
        return Err(ShakeLaneError::NotFound);
    }
    let all = |why: ShakeLaneError| Decided {
        event: None,
        answers: batch.iter().map(|q| Err(if ours(q) { why.clone() } else { ShakeLaneError::NotFound })).collect(),
        requests: Vec::new(),
    };
    if !matches!(state.terms.kind, CampaignKind::ShakeLottery(_)) {
        return Ok(all(ShakeLaneError::Campaign(CampaignError::WrongKind("shake_lottery"))));
    }
    let Some(seed) = seed else {
        return Ok(all(ShakeLaneError::Campaign(CampaignError::Refused(Refusal::NotOngoing))));
    };
    let asks: Vec<ShakeAsk> = batch
        .iter()
        .filter(|q| ours(q))
        .map(|q| ShakeAsk {
            member_id: q.job.member_id,
            nonce: state.participations.get(&q.job.member_id).map_or(0, |p| p.total).saturating_add(1),
            card_member: q.job.card_member,
        })
        .collect();
    let decided = cached.campaign.decide_shakes(&seed, &asks, now).map_err(|e| match e {
        CampaignError::NotFound => ShakeLaneError::NotFound,
        other => ShakeLaneError::Campaign(other),
    })?;
    let mut outcomes = decided.outcomes.into_iter();
    let mut answers = Vec::with_capacity(batch.len());
    let mut requests = Vec::new();
    for q in batch {
        if !ours(q) {
            answers.push(Err(ShakeLaneError::NotFound));
            continue;
        }
        answers.push(match outcomes.next() {
            Some(Ok(draw)) => {
                requests.push(ShakeRequestMeta {
                    idempotency_key: q.job.idempotency_key.clone(),
                    request_hash: q.job.request_hash.clone(),
                    member_id: draw.member_id,
                    nonce: draw.nonce,
                });
                Ok(draw)
            }
            // Cannot happen with chances given from the same state: decide again.
            Some(Err(Refusal::ChanceUsed | Refusal::ChanceOutOfOrder)) | None => Err(ShakeLaneError::Conflict),
            Some(Err(why)) => Err(ShakeLaneError::Campaign(CampaignError::Refused(why))),
        });
    }
    Ok(Decided { event: decided.event, answers, requests })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_finds_its_own_chance_in_a_batch_and_an_old_event_names_none() {
        let member = MemberId::from_uuid(Uuid::from_u128(7));
        let request = |key: &str, nonce| ShakeRequestMeta {
            idempotency_key: key.into(),
            request_hash: "h".into(),
            member_id: member,
            nonce,
        };
        let listed = serde_json::to_string(&[request("key-one-0001", 1), request("key-two-0002", 2)]).unwrap();
        let metadata = json!({ "tenant_id": "t", "shake_requests": listed });
        assert_eq!(requested_nonce(&metadata, "key-two-0002"), Some(2));
        assert_eq!(requested_nonce(&metadata, "key-six-0006"), None);
        let before_the_lanes = json!({ "tenant_id": "t", "idempotency_key": "key-one-0001", "request_hash": "h" });
        assert_eq!(requested_nonce(&before_the_lanes, "key-one-0001"), None);
    }
}
