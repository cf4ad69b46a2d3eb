//! The cqrs-es path: any `cqrs_es::EventStore` of an adapted aggregate runs
//! one command attempt the way `CqrsFramework` does (load, handle into an
//! `EventSink`, commit) but hands back the committed envelopes and refuses
//! aggregates of another tenant.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, AggregateContext, AggregateError, EventEnvelope, EventStore};
use wxcm_domain::{EventSourced, InvariantViolation, TenantId};

use crate::adapter::{Agg, HandleContext, HandleError};
use crate::ports::{AggregateRepository, PortError};

/// State access a store offers beyond cqrs-es: a fresh read and cache control.
#[async_trait]
pub trait StateStore<T: EventSourced>: Send + Sync {
    async fn load_state(&self, aggregate_id: &str) -> Result<(T, u64), PortError>;
    /// See [`AggregateRepository::load_recent`].
    async fn load_recent(&self, aggregate_id: &str, max_age: std::time::Duration) -> Result<(T, u64), PortError>;
    fn invalidate(&self, aggregate_id: &str);
}

/// Returned (boxed in `AggregateError::UnexpectedError`) when a command names
/// an aggregate of another tenant.
#[derive(Debug, thiserror::Error)]
#[error("aggregate belongs to another tenant")]
pub struct ForeignAggregate;

/// An event its aggregate refuses (`EventSourced::apply` returned the broken
/// rule): a stored event found while folding the stream — the stream is
/// corrupted or inconsistent, and `sequence` names the event — or an event a
/// command just decided (`sequence` is `None`; nothing was committed). Stores
/// return it boxed in `AggregateError::UnexpectedError`; the executor turns
/// both into [`ExecuteError::Invariant`](crate::ExecuteError::Invariant).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{aggregate_type}/{aggregate_id} {}: {event_type} breaks {}: {}", at(*.sequence), .violation.rule, .violation.detail)]
pub struct BrokenInvariant {
    pub aggregate_type: &'static str,
    pub aggregate_id: String,
    /// Sequence of the stored event; `None` for a decided event, never stored.
    pub sequence: Option<u64>,
    pub event_type: String,
    pub violation: InvariantViolation,
}

impl BrokenInvariant {
    /// The stable rule name, e.g. `member.balance_after`.
    pub fn rule(&self) -> &'static str {
        self.violation.rule
    }
}

fn at(sequence: Option<u64>) -> String {
    sequence.map_or_else(|| "decided event".to_owned(), |s| format!("seq {s}"))
}

pub struct CqrsRepository<ES> {
    store: ES,
}

impl<ES> CqrsRepository<ES> {
    pub fn new(store: ES) -> Self {
        Self { store }
    }
}

#[async_trait]
impl<T, ES> AggregateRepository<T> for CqrsRepository<ES>
where
    T: EventSourced,
    T::Command: Send,
    ES: EventStore<Agg<T>> + StateStore<T>,
    ES::AC: Send,
{
    async fn execute_once(
        &self,
        aggregate_id: &str,
        command: T::Command,
        now: DateTime<Utc>,
        metadata: HashMap<String, String>,
    ) -> Result<Vec<EventEnvelope<Agg<T>>>, AggregateError<HandleError<T::Error>>> {
        let mut context = self.store.load_aggregate(aggregate_id).await?;
        let tenant = metadata.get("tenant_id").and_then(|t| TenantId::parse(t).ok());
        if let Some(owner) = context.aggregate().0.tenant() {
            if tenant.as_ref() != Some(owner) {
                return Err(AggregateError::UnexpectedError(Box::new(ForeignAggregate)));
            }
        }
        let sink: EventSink<Agg<T>> = EventSink::default();
        context.aggregate().handle(command, &HandleContext { now }, &sink).await.map_err(AggregateError::UserError)?;
        let events = sink.collect().await;
        self.store.commit(events, context, metadata).await
    }

    async fn load_state(&self, aggregate_id: &str) -> Result<(T, u64), PortError> {
        self.store.load_state(aggregate_id).await
    }

    async fn load_recent(&self, aggregate_id: &str, max_age: std::time::Duration) -> Result<(T, u64), PortError> {
        self.store.load_recent(aggregate_id, max_age).await
    }

    fn invalidate(&self, aggregate_id: &str) {
        self.store.invalidate(aggregate_id)
    }
}
