//! Executes commands on one aggregate type: idempotency by key, bounded
//! retries on optimistic-concurrency conflicts, one command at a time per
//! aggregate within this process, correlation/causation ids in metadata.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use cqrs_es::AggregateError;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tracing::{debug, instrument, warn};
use uuid::Uuid;
use wxcm_domain::{EventSourced, IdempotencyKey, TenantId};

use crate::ports::{AggregateRepository, Clock, EventLog, IdempotencyRecord, PortError};

/// Attempts per command when other writers keep winning the race.
pub const CONFLICT_ATTEMPTS_MAX: u32 = 12;
const BACKOFF_BASE_MS: u64 = 2;
const BACKOFF_CAP_MS: u64 = 100;
/// Stripes of the per-aggregate lock: bounded memory, rare false sharing.
const LOCK_STRIPES: usize = 1024;
/// Events a single command may produce (and a replay may return).
pub const EVENTS_PER_COMMAND_MAX: u32 = 100;

/// Who/why of one command beyond its payload.
#[derive(Debug, Clone)]
pub struct CommandContext {
    pub tenant_id: TenantId,
    pub idempotency_key: IdempotencyKey,
    pub correlation_id: Uuid,
    pub causation_id: Option<Uuid>,
    pub actor: String,
}

impl CommandContext {
    pub fn new(tenant_id: TenantId, idempotency_key: IdempotencyKey, actor: String) -> Self {
        Self { tenant_id, idempotency_key, correlation_id: Uuid::new_v4(), causation_id: None, actor }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Committed<E> {
    pub sequence: u64,
    pub event: E,
}

/// The result of a command: the events it committed (or, for a repeated
/// idempotency key, the events the first execution committed).
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome<E> {
    pub aggregate_id: String,
    pub events: Vec<Committed<E>>,
    pub replayed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecuteError<E: std::error::Error> {
    #[error(transparent)]
    Domain(E),
    #[error("idempotency key was already used with a different request")]
    IdempotencyMismatch,
    #[error("too much contention on this aggregate, try again")]
    Contention,
    #[error("not found")]
    ForeignAggregate,
    #[error("store failure: {0}")]
    Store(String),
}

pub struct Executor<T: EventSourced> {
    repository: Arc<dyn AggregateRepository<T>>,
    log: Arc<dyn EventLog>,
    clock: Arc<dyn Clock>,
    locks: Vec<tokio::sync::Mutex<()>>,
}

/// SHA-256 over what the client asked for, bound to the aggregate type and id.
pub fn request_hash(aggregate_type: &str, aggregate_id: &str, request: &impl Serialize) -> Result<String, PortError> {
    let body = serde_json::to_vec(request).map_err(PortError::new)?;
    let mut h = Sha256::new();
    h.update(aggregate_type.as_bytes());
    h.update([0x1f]);
    h.update(aggregate_id.as_bytes());
    h.update([0x1f]);
    h.update(&body);
    Ok(hex::encode(h.finalize()))
}

impl<T> Executor<T>
where
    T: EventSourced,
    T::Command: Clone + Send,
{
    pub fn new(repository: Arc<dyn AggregateRepository<T>>, log: Arc<dyn EventLog>, clock: Arc<dyn Clock>) -> Self {
        let locks = (0..LOCK_STRIPES).map(|_| tokio::sync::Mutex::new(())).collect();
        Self { repository, log, clock, locks }
    }

    pub async fn load(&self, aggregate_id: &str) -> Result<(T, u64), PortError> {
        self.repository.load_state(aggregate_id).await
    }

    /// See [`AggregateRepository::load_recent`].
    pub async fn load_recent(&self, aggregate_id: &str, max_age: Duration) -> Result<(T, u64), PortError> {
        self.repository.load_recent(aggregate_id, max_age).await
    }

    fn lock_for(&self, aggregate_id: &str) -> &tokio::sync::Mutex<()> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        aggregate_id.hash(&mut h);
        &self.locks[(h.finish() as usize) % LOCK_STRIPES]
    }

    /// Runs `command`; `request` is what the client sent (hashed for idempotency).
    #[instrument(skip_all, fields(aggregate = T::TYPE, aggregate_id, tenant = %ctx.tenant_id))]
    pub async fn execute(
        &self,
        aggregate_id: &str,
        command: T::Command,
        request: &(impl Serialize + Sync),
        ctx: &CommandContext,
    ) -> Result<Outcome<T::Event>, ExecuteError<T::Error>> {
        let hash = request_hash(T::TYPE, aggregate_id, request).map_err(|e| ExecuteError::Store(e.to_string()))?;
        let mut metadata = HashMap::new();
        metadata.insert("tenant_id".to_owned(), ctx.tenant_id.to_string());
        metadata.insert("idempotency_key".to_owned(), ctx.idempotency_key.to_string());
        metadata.insert("request_hash".to_owned(), hash.clone());
        metadata.insert("correlation_id".to_owned(), ctx.correlation_id.to_string());
        if let Some(c) = ctx.causation_id {
            metadata.insert("causation_id".to_owned(), c.to_string());
        }
        metadata.insert("actor".to_owned(), ctx.actor.clone());

        let _serial = self.lock_for(aggregate_id).lock().await;
        for attempt in 0..CONFLICT_ATTEMPTS_MAX {
            let now = self.clock.now();
            match self.repository.execute_once(aggregate_id, command.clone(), now, metadata.clone()).await {
                Ok(envelopes) => {
                    let events = envelopes
                        .into_iter()
                        .map(|e| Committed { sequence: e.sequence as u64, event: e.payload.0 })
                        .collect();
                    return Ok(Outcome { aggregate_id: aggregate_id.to_owned(), events, replayed: false });
                }
                Err(AggregateError::UserError(e)) => {
                    // A repeated key whose first run succeeded must not surface a
                    // rejection the state only gives because of that first run.
                    if let Some(outcome) = self.previous_outcome(ctx, &hash).await? {
                        return Ok(outcome);
                    }
                    return Err(ExecuteError::Domain(e));
                }
                Err(AggregateError::AggregateConflict) => {
                    self.repository.invalidate(aggregate_id);
                    if let Some(outcome) = self.previous_outcome(ctx, &hash).await? {
                        return Ok(outcome);
                    }
                    debug!(attempt, "optimistic conflict, retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(AggregateError::UnexpectedError(e)) if e.is::<crate::repository::ForeignAggregate>() => {
                    return Err(ExecuteError::ForeignAggregate);
                }
                Err(other) => {
                    self.repository.invalidate(aggregate_id);
                    return Err(ExecuteError::Store(other.to_string()));
                }
            }
        }
        warn!(aggregate_id, "conflict retries exhausted");
        Err(ExecuteError::Contention)
    }

    /// The first result for this key, or a mismatch error, or `None` if unused.
    async fn previous_outcome(
        &self,
        ctx: &CommandContext,
        hash: &str,
    ) -> Result<Option<Outcome<T::Event>>, ExecuteError<T::Error>> {
        let record = self
            .log
            .find_idempotency(&ctx.tenant_id, ctx.idempotency_key.as_str())
            .await
            .map_err(|e| ExecuteError::Store(e.to_string()))?;
        let Some(record) = record else { return Ok(None) };
        if record.request_hash != hash || record.aggregate_type != T::TYPE {
            return Err(ExecuteError::IdempotencyMismatch);
        }
        self.replay(&record).await.map(Some)
    }

    async fn replay(&self, record: &IdempotencyRecord) -> Result<Outcome<T::Event>, ExecuteError<T::Error>> {
        let logged = self
            .log
            .read_range(
                T::TYPE,
                &record.aggregate_id,
                record.first_sequence,
                record.last_sequence,
                EVENTS_PER_COMMAND_MAX,
            )
            .await
            .map_err(|e| ExecuteError::Store(e.to_string()))?;
        let mut events = Vec::with_capacity(logged.len());
        for l in logged {
            let event: T::Event = serde_json::from_value(l.payload).map_err(|e| ExecuteError::Store(e.to_string()))?;
            events.push(Committed { sequence: l.sequence, event });
        }
        Ok(Outcome { aggregate_id: record.aggregate_id.clone(), events, replayed: true })
    }
}

fn backoff(attempt: u32) -> Duration {
    let exp = BACKOFF_BASE_MS.saturating_mul(1u64 << attempt.min(16)).min(BACKOFF_CAP_MS);
    let jitter = rand::random::<u64>() % (exp + 1);
    Duration::from_millis(exp / 2 + jitter / 2)
}
