//! The pure aggregate contract. The application layer wraps it into cqrs-es.

use chrono::{DateTime, Utc};
use serde::{de::DeserializeOwned, Serialize};

use crate::InvariantViolation;

/// Type and version stored next to every event; the version changes when the
/// payload shape changes (old versions are upcast, never rewritten).
pub trait DomainEventMeta {
    fn event_type(&self) -> &'static str;
    fn event_version(&self) -> &'static str;
}

/// An event-sourced aggregate: decide with `handle`, evolve with `apply`.
///
/// `handle` never mutates; `apply` never fails on an event `handle` produced
/// from the same state. `apply` checks the invariants again (pairing the
/// checks) and recomputes the figures events state; an event that breaks one
/// is an [`InvariantViolation`], never a panic. After an `Err` the state is
/// unspecified: discard it.
pub trait EventSourced: Default + Clone + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// Aggregate type as stored in the event table.
    const TYPE: &'static str;
    /// Bumped whenever the serialized state changes shape, so that stored
    /// snapshots of an older shape are ignored.
    const STATE_VERSION: i32;
    type Command: Serialize + Clone + Send + Sync + 'static;
    type Event: DomainEventMeta + Serialize + DeserializeOwned + Clone + PartialEq + std::fmt::Debug + Send + Sync;
    type Error: std::error::Error + Send + Sync + 'static;

    fn handle(&self, command: Self::Command, now: DateTime<Utc>) -> Result<Vec<Self::Event>, Self::Error>;
    fn apply(&mut self, event: &Self::Event) -> Result<(), InvariantViolation>;

    /// The tenant the aggregate belongs to, once it exists. The application
    /// refuses commands from any other tenant.
    fn tenant(&self) -> Option<&crate::TenantId> {
        None
    }
}
