//! Operator tools over the event store and read models, run by `wxcm audit`:
//!
//! - [`audit`]: a member's history explained, hash chains verified;
//! - [`draw_audit`]: a campaign's draws recomputed from its events and revealed seeds;
//! - [`reconcile`]: read models against a fold of the events ([`reconcile_coupons`]:
//!   coupon templates against their coupons, and `rm_coupons`; [`reconcile_mall`]:
//!   `rm_mall_orders` and the mall counters of `rm_daily_ops`; [`reconcile_campaigns`]:
//!   `rm_campaigns`, `rm_vote_items` and the campaign counters; [`reconcile_distribution`]:
//!   distributors, commission accounts, commissions, withdrawals and the distribution counters).

pub mod audit;
pub mod draw_audit;
pub mod reconcile;
pub mod reconcile_campaigns;
pub mod reconcile_coupons;
pub mod reconcile_distribution;
pub mod reconcile_mall;
