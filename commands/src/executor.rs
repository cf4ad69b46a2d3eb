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
use tracing::{debug, error, instrument, warn};
use uuid::Uuid;
use wxcm_domain::{EventSourced, IdempotencyKey, TenantId};

use crate::adapter::HandleError;
use crate::ports::{AggregateRepository, Clock, EventLog, IdempotencyRecord, PortError};
use crate::repository::{BrokenInvariant, ForeignAggregate};

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
    /// The stream, or the event the command decided, breaks an invariant of
    /// the aggregate: an internal error (logged with stream and rule here),
    /// never the client's.
    #[error(transparent)]
    Invariant(Box<BrokenInvariant>),
    #[error("store failure: {0}")]
    Store(String),
    /// The store could not be reached or refused for now: the outcome is
    /// unknown, the same request may be retried with the same key.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

impl<E: std::error::Error> ExecuteError<E> {
    fn from_port(e: PortError) -> Self {
        if e.is_transient() {
            ExecuteError::Unavailable(e.to_string())
        } else {
            ExecuteError::Store(e.to_string())
        }
    }

    fn from_aggregate<X: std::error::Error>(e: AggregateError<X>) -> Self {
        let transient = match &e {
            AggregateError::DatabaseConnectionError(inner) | AggregateError::UnexpectedError(inner) => {
                crate::failure::is_transient(inner.as_ref())
            }
            _ => false,
        };
        if transient {
            ExecuteError::Unavailable(e.to_string())
        } else {
            ExecuteError::Store(e.to_string())
        }
    }
}

/// Completes a command with what its aggregate decides with but does not
/// keep: a tenant's settings (the card level catalog for member commands).
/// Runs once per [`Executor::execute`], before its attempts.
#[async_trait::async_trait]
pub trait CommandRules<T: EventSourced>: Send + Sync {
    async fn prepare(&self, tenant: &TenantId, command: T::Command) -> Result<T::Command, PortError>;
}

pub struct Executor<T: EventSourced> {
    repository: Arc<dyn AggregateRepository<T>>,
    log: Arc<dyn EventLog>,
    clock: Arc<dyn Clock>,
    locks: Vec<tokio::sync::Mutex<()>>,
    rules: Option<Arc<dyn CommandRules<T>>>,
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
        Self { repository, log, clock, locks, rules: None }
    }

    /// Every command goes through `rules` first (never part of the request's
    /// fingerprint: idempotency hashes what the caller asked for).
    pub fn with_rules(mut self, rules: Arc<dyn CommandRules<T>>) -> Self {
        self.rules = Some(rules);
        self
    }

    /// The aggregate's state and version as `tenant` may see it: another
    /// tenant's aggregate loads as one that does not exist (the default
    /// state, version 0), so a use case cannot forget the tenant check.
    pub async fn load(&self, tenant: &TenantId, aggregate_id: &str) -> Result<(T, u64), PortError> {
        Ok(Self::scoped(tenant, self.repository.load_state(aggregate_id).await?))
    }

    /// [`Self::load`] from state at most `max_age` old (see
    /// [`AggregateRepository::load_recent`]), scoped to `tenant` the same way.
    pub async fn load_recent(
        &self,
        tenant: &TenantId,
        aggregate_id: &str,
        max_age: Duration,
    ) -> Result<(T, u64), PortError> {
        Ok(Self::scoped(tenant, self.repository.load_recent(aggregate_id, max_age).await?))
    }

    /// The state whatever its tenant: only for processes that compare the
    /// tenant themselves (the coupon issue lanes decide batches of several
    /// tenants' claims and refuse those of another tenant than the template's).
    pub async fn load_any_tenant(&self, aggregate_id: &str) -> Result<(T, u64), PortError> {
        self.repository.load_state(aggregate_id).await
    }

    fn scoped(tenant: &TenantId, (state, version): (T, u64)) -> (T, u64) {
        match state.tenant() {
            Some(owner) if owner != tenant => (T::default(), 0),
            _ => (state, version),
        }
    }

    /// Drops this node's cached state of the aggregate (written elsewhere).
    pub fn invalidate(&self, aggregate_id: &str) {
        self.repository.invalidate(aggregate_id)
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

        let command = match &self.rules {
            Some(rules) => rules.prepare(&ctx.tenant_id, command).await.map_err(ExecuteError::from_port)?,
            None => command,
        };
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
                Err(AggregateError::UserError(HandleError::Domain(e))) => {
                    // A repeated key whose first run succeeded must not surface a
                    // rejection the state only gives because of that first run.
                    if let Some(outcome) = self.previous_outcome(ctx, &hash).await? {
                        return Ok(outcome);
                    }
                    return Err(ExecuteError::Domain(e));
                }
                Err(AggregateError::UserError(HandleError::Invariant(refused))) => {
                    let broken = BrokenInvariant {
                        aggregate_type: T::TYPE,
                        aggregate_id: aggregate_id.to_owned(),
                        sequence: None,
                        event_type: refused.event_type.to_owned(),
                        violation: refused.violation,
                    };
                    return Err(self.broken(broken));
                }
                Err(AggregateError::AggregateConflict) => {
                    self.repository.invalidate(aggregate_id);
                    if let Some(outcome) = self.previous_outcome(ctx, &hash).await? {
                        return Ok(outcome);
                    }
                    debug!(attempt, "optimistic conflict, retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(AggregateError::UnexpectedError(e)) if e.is::<ForeignAggregate>() => {
                    return Err(ExecuteError::ForeignAggregate);
                }
                Err(AggregateError::UnexpectedError(e)) if e.is::<BrokenInvariant>() => {
                    let broken = e.downcast::<BrokenInvariant>().map_err(|e| ExecuteError::Store(e.to_string()))?;
                    return Err(self.broken(*broken));
                }
                Err(other) => {
                    self.repository.invalidate(aggregate_id);
                    return Err(ExecuteError::from_aggregate(other));
                }
            }
        }
        warn!(aggregate_id, "conflict retries exhausted");
        Err(ExecuteError::Contention)
    }

    /// Logs a broken invariant with its stream and rule, and drops the cached
    /// state (which a decided event may have left half applied).
    fn broken(&self, broken: BrokenInvariant) -> ExecuteError<T::Error> {
        self.repository.invalidate(&broken.aggregate_id);
        error!(
            aggregate = broken.aggregate_type,
            aggregate_id = %broken.aggregate_id,
            sequence = ?broken.sequence,
            event_type = %broken.event_type,
            rule = broken.violation.rule,
            detail = %broken.violation.detail,
            "event breaks an invariant of its aggregate; nothing committed"
        );
        ExecuteError::Invariant(Box::new(broken))
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
            .map_err(ExecuteError::from_port)?;
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
            .map_err(ExecuteError::from_port)?;
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;
    use chrono::{DateTime, TimeZone, Utc};
    use cqrs_es::EventEnvelope;
    use wxcm_domain::member::{rules, Member, MemberCommand, Provenance};
    use wxcm_domain::{Actor, InvariantViolation, Reference};

    use super::*;
    use crate::adapter::{Agg, RefusedEvent};
    use crate::members::MemberOpError;
    use crate::ports::LoggedEvent;

    const ID: &str = "6f1c1a52-0d4e-4a43-9b0e-6f0e2a1d9c11";

    /// A store whose every attempt fails with the error `fail` makes.
    struct Failing {
        fail: fn() -> AggregateError<HandleError<wxcm_domain::member::MemberError>>,
        invalidated: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl AggregateRepository<Member> for Failing {
        async fn execute_once(
            &self,
            _aggregate_id: &str,
            _command: MemberCommand,
            _now: DateTime<Utc>,
            _metadata: HashMap<String, String>,
        ) -> Result<Vec<EventEnvelope<Agg<Member>>>, AggregateError<HandleError<wxcm_domain::member::MemberError>>>
        {
            Err((self.fail)())
        }
        async fn load_state(&self, _aggregate_id: &str) -> Result<(Member, u64), PortError> {
            Err(PortError::msg("not used"))
        }
        async fn load_recent(&self, _aggregate_id: &str, _max_age: Duration) -> Result<(Member, u64), PortError> {
            Err(PortError::msg("not used"))
        }
        fn invalidate(&self, aggregate_id: &str) {
            self.invalidated.lock().unwrap().push(aggregate_id.to_owned());
        }
    }

    struct EmptyLog;

    #[async_trait]
    impl EventLog for EmptyLog {
        async fn find_idempotency(&self, _: &TenantId, _: &str) -> Result<Option<IdempotencyRecord>, PortError> {
            Ok(None)
        }
        async fn read_range(&self, _: &str, _: &str, _: u64, _: u64, _: u32) -> Result<Vec<LoggedEvent>, PortError> {
            Ok(Vec::new())
        }
        async fn stream_tenant(&self, _: &str, _: &str) -> Result<Option<String>, PortError> {
            Ok(None)
        }
        async fn all_stream_ids(&self, _: &str, _: Option<&str>, _: u32) -> Result<Vec<String>, PortError> {
            Ok(Vec::new())
        }
        async fn stream_ids(&self, _: &TenantId, _: &str, _: Option<&str>, _: u32) -> Result<Vec<String>, PortError> {
            Ok(Vec::new())
        }
    }

    struct FixedClock;

    impl Clock for FixedClock {
        fn now(&self) -> DateTime<Utc> {
            Utc.with_ymd_and_hms(2026, 3, 10, 2, 0, 0).unwrap()
        }
    }

    fn violation() -> InvariantViolation {
        InvariantViolation::new(rules::BALANCE_AFTER, "balance_after_fen is 999 but the state gives 150")
    }

    async fn execute(
        fail: fn() -> AggregateError<HandleError<wxcm_domain::member::MemberError>>,
    ) -> (ExecuteError<wxcm_domain::member::MemberError>, Vec<String>) {
        let repository = Arc::new(Failing { fail, invalidated: Mutex::new(Vec::new()) });
        let executor = Executor::<Member>::new(repository.clone(), Arc::new(EmptyLog), Arc::new(FixedClock));
        let key = IdempotencyKey::parse("key-00000001").unwrap();
        let ctx = CommandContext::new(TenantId::parse("acme").unwrap(), key.clone(), "test".into());
        let provenance = Provenance {
            actor: Actor::System { job: "test".into() },
            reason: Reference::parse("test").unwrap(),
            reference: None,
            idempotency_key: key,
        };
        let command = MemberCommand::Unfollow { provenance };
        let error = executor.execute(ID, command.clone(), &command, &ctx).await.unwrap_err();
        let invalidated = repository.invalidated.lock().unwrap().clone();
        (error, invalidated)
    }

    #[tokio::test]
    async fn a_decided_event_the_aggregate_refuses_is_an_internal_error_naming_stream_and_rule() {
        let (error, invalidated) = execute(|| {
            AggregateError::UserError(HandleError::Invariant(RefusedEvent {
                event_type: "CashDeposited",
                violation: violation(),
            }))
        })
        .await;
        let ExecuteError::Invariant(broken) = &error else { panic!("not an invariant error: {error:?}") };
        assert_eq!((broken.aggregate_type, broken.aggregate_id.as_str(), broken.sequence), ("member", ID, None));
        assert_eq!((broken.event_type.as_str(), broken.rule()), ("CashDeposited", rules::BALANCE_AFTER));
        assert_eq!(invalidated, [ID], "the half-applied cached state is dropped");
        // Internal (500), not "not found" or a rejection (404/409/422).
        let MemberOpError::Infra(detail) = MemberOpError::from(error) else { panic!("not internal") };
        assert!(
            detail.starts_with(&format!("member/{ID} decided event: CashDeposited breaks member.balance_after")),
            "{detail}"
        );
    }

    #[tokio::test]
    async fn a_stored_event_the_aggregate_refuses_is_an_internal_error_naming_stream_sequence_and_rule() {
        let (error, _) = execute(|| {
            AggregateError::UnexpectedError(Box::new(BrokenInvariant {
                aggregate_type: "member",
                aggregate_id: ID.into(),
                sequence: Some(7),
                event_type: "CashDeposited".into(),
                violation: violation(),
            }))
        })
        .await;
        let ExecuteError::Invariant(broken) = &error else { panic!("not an invariant error: {error:?}") };
        assert_eq!((broken.sequence, broken.rule()), (Some(7), rules::BALANCE_AFTER));
        let MemberOpError::Infra(detail) = MemberOpError::from(error) else { panic!("not internal") };
        assert!(
            detail.starts_with(&format!("member/{ID} seq 7: CashDeposited breaks member.balance_after")),
            "{detail}"
        );
    }

    /// Loads one fixed tenant state, whatever the id.
    struct OneTenant(wxcm_domain::tenant::Tenant);

    #[async_trait]
    impl AggregateRepository<wxcm_domain::tenant::Tenant> for OneTenant {
        async fn execute_once(
            &self,
            _: &str,
            _: wxcm_domain::tenant::TenantCommand,
            _: DateTime<Utc>,
            _: HashMap<String, String>,
        ) -> Result<
            Vec<EventEnvelope<Agg<wxcm_domain::tenant::Tenant>>>,
            AggregateError<HandleError<wxcm_domain::tenant::TenantError>>,
        > {
            Err(AggregateError::AggregateConflict)
        }
        async fn load_state(&self, _: &str) -> Result<(wxcm_domain::tenant::Tenant, u64), PortError> {
            Ok((self.0.clone(), 3))
        }
        async fn load_recent(&self, _: &str, _: Duration) -> Result<(wxcm_domain::tenant::Tenant, u64), PortError> {
            Ok((self.0.clone(), 3))
        }
        fn invalidate(&self, _: &str) {}
    }

    #[tokio::test]
    async fn another_tenants_aggregate_loads_as_one_that_does_not_exist() {
        let acme = TenantId::parse("acme").unwrap();
        let other = TenantId::parse("other").unwrap();
        let state =
            wxcm_domain::tenant::Tenant { tenant_id: Some(acme.clone()), name: "Acme".into(), ..Default::default() };
        let executor = Executor::new(Arc::new(OneTenant(state)), Arc::new(EmptyLog), Arc::new(FixedClock));
        let (own, version) = executor.load(&acme, "acme").await.unwrap();
        assert_eq!((own.tenant_id.as_ref(), version), (Some(&acme), 3));
        let (foreign, version) = executor.load(&other, "acme").await.unwrap();
        assert_eq!((foreign.tenant_id, foreign.name.as_str(), version), (None, "", 0));
        let (foreign, _) = executor.load_recent(&other, "acme", Duration::from_secs(1)).await.unwrap();
        assert!(foreign.tenant_id.is_none());
        assert!(executor.load_any_tenant("acme").await.unwrap().0.tenant_id.is_some());
    }

    #[tokio::test]
    async fn a_lost_connection_is_unavailable_not_a_store_failure() {
        let (error, _) = execute(|| {
            AggregateError::DatabaseConnectionError(Box::new(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "reset",
            )))
        })
        .await;
        assert!(matches!(error, ExecuteError::Unavailable(_)), "{error:?}");
        assert!(matches!(MemberOpError::from(error), MemberOpError::Unavailable(_)));
        let (error, _) = execute(|| AggregateError::UnexpectedError(Box::new(std::fmt::Error))).await;
        assert!(matches!(error, ExecuteError::Store(_)), "{error:?}");
    }
}
