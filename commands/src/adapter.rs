//! cqrs-es adapter for the pure domain aggregates.
//!
//! The domain stays free of the async runtime cqrs-es pulls in; here each
//! `EventSourced` aggregate becomes a `cqrs_es::Aggregate` whose `handle`
//! writes the decided events to the framework's `EventSink` (which applies
//! them to the aggregate as it writes, exactly once).
//!
//! `Aggregate::apply` cannot fail, `EventSourced::apply` can: a decided event
//! the aggregate refuses is recorded in [`Agg`] and `handle` returns
//! [`HandleError::Invariant`], so nothing is committed (cqrs-es and
//! `CqrsRepository` commit only after `handle` returned `Ok`).

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use wxcm_domain::{DomainEventMeta, EventSourced, InvariantViolation};

/// Per-call inputs of `handle` (cqrs-es calls them services).
pub struct HandleContext {
    pub now: DateTime<Utc>,
}

/// A domain aggregate as cqrs-es sees it. Serialized as the state alone.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Agg<T>(pub T, #[serde(skip)] Option<RefusedEvent>);

impl<T> Agg<T> {
    pub fn new(state: T) -> Self {
        Self(state, None)
    }
}

/// An event `apply` refused; the state it was applied to is unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedEvent {
    pub event_type: &'static str,
    pub violation: InvariantViolation,
}

/// Why `handle` failed: the domain refused the command, or the aggregate
/// refused an event the command decided (a `handle` that disagrees with
/// `apply`, or a state that is already inconsistent). The second is never the
/// client's fault.
#[derive(Debug, thiserror::Error)]
pub enum HandleError<E: std::error::Error> {
    #[error(transparent)]
    Domain(E),
    #[error("the aggregate refuses the decided event {}: {}", .0.event_type, .0.violation)]
    Invariant(RefusedEvent),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Ev<E>(pub E);

impl<E> DomainEvent for Ev<E>
where
    E: DomainEventMeta + Serialize + serde::de::DeserializeOwned + Clone + PartialEq + std::fmt::Debug + Send + Sync,
{
    fn event_type(&self) -> String {
        self.0.event_type().to_owned()
    }
    fn event_version(&self) -> String {
        self.0.event_version().to_owned()
    }
}

impl<T> Aggregate for Agg<T>
where
    T: EventSourced,
    T::Command: Send,
{
    const TYPE: &'static str = T::TYPE;
    type Command = T::Command;
    type Event = Ev<T::Event>;
    type Error = HandleError<T::Error>;
    type Services = HandleContext;

    async fn handle(
        &mut self,
        command: Self::Command,
        service: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        if let Some(refused) = self.1.clone() {
            return Err(HandleError::Invariant(refused));
        }
        let events = self.0.handle(command, service.now).map_err(HandleError::Domain)?;
        for event in events {
            sink.write(Ev(event), self).await;
            if let Some(refused) = self.1.clone() {
                return Err(HandleError::Invariant(refused));
            }
        }
        Ok(())
    }

    /// After a refused event the state is not touched again.
    fn apply(&mut self, event: Self::Event) {
        if self.1.is_some() {
            return;
        }
        if let Err(violation) = self.0.apply(&event.0) {
            self.1 = Some(RefusedEvent { event_type: event.0.event_type(), violation });
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde::Deserialize;
    use wxcm_domain::DomainEventMeta;

    use super::*;

    /// A counter whose `handle` disagrees with its `apply` above 10.
    #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
    struct Counter {
        value: u32,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Added(u32);

    impl DomainEventMeta for Added {
        fn event_type(&self) -> &'static str {
            "Added"
        }
        fn event_version(&self) -> &'static str {
            "1"
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("never")]
    struct Never;

    impl EventSourced for Counter {
        const TYPE: &'static str = "counter";
        const STATE_VERSION: i32 = 1;
        type Command = u32;
        type Event = Added;
        type Error = Never;

        fn handle(&self, command: u32, _now: DateTime<Utc>) -> Result<Vec<Added>, Never> {
            Ok(vec![Added(command), Added(command)])
        }

        fn apply(&mut self, event: &Added) -> Result<(), InvariantViolation> {
            if self.value + event.0 > 10 {
                return Err(InvariantViolation::new("counter.at_most_ten", format!("{} + {}", self.value, event.0)));
            }
            self.value += event.0;
            Ok(())
        }
    }

    fn context() -> HandleContext {
        HandleContext { now: Utc.with_ymd_and_hms(2026, 3, 10, 2, 0, 0).unwrap() }
    }

    #[tokio::test]
    async fn a_refused_decided_event_fails_handle_and_leaves_nothing_to_commit() {
        let mut agg = Agg::new(Counter::default());
        let sink = EventSink::default();
        agg.handle(3, &context(), &sink).await.unwrap();
        assert_eq!((agg.0.value, sink.collect().await.len()), (6, 2));

        // Given 6, when 3 + 3 is decided, then the second event breaks the rule.
        let sink = EventSink::default();
        let refused = agg.handle(3, &context(), &sink).await.unwrap_err();
        let HandleError::Invariant(refused) = refused else { panic!("not an invariant error: {refused}") };
        assert_eq!((refused.event_type, refused.violation.rule), ("Added", "counter.at_most_ten"));
        // The aggregate stays refused; the caller drops it with the sink.
        let again = agg.handle(0, &context(), &EventSink::default()).await;
        assert!(matches!(again, Err(HandleError::Invariant(_))));
    }

    #[test]
    fn the_state_alone_is_serialized() {
        let mut agg = Agg::new(Counter { value: 4 });
        agg.1 = Some(RefusedEvent { event_type: "Added", violation: InvariantViolation::new("r", "d") });
        let json = serde_json::to_value(&agg).unwrap();
        assert_eq!(json, serde_json::json!({ "value": 4 }));
        let back: Agg<Counter> = serde_json::from_value(json).unwrap();
        assert_eq!(back, Agg::new(Counter { value: 4 }));
    }
}
