//! cqrs-es adapter for the pure domain aggregates.
//!
//! The domain stays free of the async runtime cqrs-es pulls in; here each
//! `EventSourced` aggregate becomes a `cqrs_es::Aggregate` whose `handle`
//! writes the decided events to the framework's `EventSink` (which applies
//! them to the aggregate as it writes, exactly once).

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use wxcm_domain::{DomainEventMeta, EventSourced};

/// Per-call inputs of `handle` (cqrs-es calls them services).
pub struct HandleContext {
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Agg<T>(pub T);

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
    type Error = T::Error;
    type Services = HandleContext;

    async fn handle(
        &mut self,
        command: Self::Command,
        service: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let events = self.0.handle(command, service.now)?;
        for event in events {
            sink.write(Ev(event), self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        self.0.apply(&event.0);
    }
}
