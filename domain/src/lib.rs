//! The wxcm domain: aggregates, commands, events and the invariants they keep.
//!
//! Pure by design: no I/O, no async runtime, no SQL. Time comes in as a value
//! (`now` on [`EventSourced::handle`]); the application layer adapts these
//! aggregates to cqrs-es.

pub mod actor;
pub mod amounts;
pub mod campaign;
pub mod card_levels;
pub mod coupon;
pub mod distribution;
pub mod event_sourced;
pub mod ids;
pub mod invariant;
pub mod mall;
pub mod member;
pub mod payment;
pub mod schema;
pub mod tenant;

pub use actor::Actor;
pub use amounts::{AmountFen, BalanceFen, PointsAmount, PointsBalance};
pub use event_sourced::{DomainEventMeta, EventSourced};
pub use ids::{
    AppId, CardNumber, IdError, IdempotencyKey, MemberId, OpenId, OutTradeNo, PayRef, Reference, SceneKey, TenantId,
};
pub use invariant::InvariantViolation;
