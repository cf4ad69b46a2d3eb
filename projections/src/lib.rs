//! Read models fed from the JetStream events stream.
//!
//! - `envelope`: `RelayedEvent`, the message the relay publishes for every
//!   committed event, and `load_events` (the same shape from the event store).
//! - `runtime`: `Projector` (apply one event in a transaction) and
//!   `ProjectorRuntime` (durable pull consumer, checkpoints, gap fill,
//!   dead letters, lag).
//! - `members`: `MemberProjector` → `rm_members`, `rm_member_ledger`.
//! - `coupons`: `CouponProjector` → `rm_coupons` and the coupon counters of `rm_daily_ops`.
//! - `mall`: `MallProjector` → `rm_mall_orders` and the mall counters of `rm_daily_ops`.
//! - `campaigns`: `CampaignProjector` → `rm_campaigns` and the per-campaign counters of `rm_daily_ops`.
//! - `distribution`: `CommissionProjector`, `DistributorProjector` → the distribution counters of `rm_daily_ops`.
//! - `votes`: `VoteProjector` → `rm_vote_items` (voting campaigns' items and votes), `PgVoteRanking`.
//! - `follows`: follow sources and what an event does to a member's follow columns.

pub mod campaigns;
pub mod coupons;
pub mod distribution;
pub mod envelope;
pub mod mall;
pub mod members;
pub mod runtime;
pub mod votes;

pub use campaigns::CampaignProjector;
pub use coupons::CouponProjector;
pub use distribution::{CommissionProjector, DistributorProjector};
pub use envelope::{load_events, RelayedEvent};
pub use mall::MallProjector;
pub use members::MemberProjector;
pub use runtime::{
    stalls_detected, ApplyError, BatchReport, Outcome, ProjectionError, Projector, ProjectorRuntime, ProjectorSettings,
    ProjectorStatus,
};
pub use votes::{PgVoteRanking, VoteProjector};

// Daily operations (`rm_daily_ops`, fed by `MemberProjector`) and the read-model queries.
pub mod daily;
pub mod follows;
pub mod queries;
pub use queries::PgReadModels;

// Rebuilding the member read models from the event store (`wxcm projections rebuild`).
pub mod rebuild;
// Rebuilding the coupon and mall read models (`wxcm projections rebuild coupons|mall`)
// with their projectors' code.
pub mod rebuild_campaigns;
pub mod rebuild_coupons;
pub mod rebuild_distribution;
pub mod rebuild_mall;
pub mod rebuild_projector;
