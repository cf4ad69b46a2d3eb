//! The HTTP surface, one module per resource (the resources are the OpenAPI
//! document's tags). Each module holds its handlers with their
//! `#[utoipa::path]` and its own request and response types with their
//! validation into application values; larger ones are a directory with
//! `mod.rs` (handlers) and `types.rs` (bodies, queries, answers).
//!
//! Admin API (`/admin/api/v1`, bearer session):
//! - [`session`]: login, logout;
//! - [`admin_users`]: the owner's user management, everyone's own password;
//! - [`members`]: lookups, the member list, registration by hand;
//! - [`ledger`]: points and cash operations on a member, its ledger;
//! - [`reports`]: the daily-operations report (JSON or CSV);
//! - [`tenant`]: the session's tenant, binding official accounts;
//! - [`wechat`]: WeChat settings (reply rules, points rules, QR codes, menus,
//!   third-party authorization);
//! - [`referral`]: members' referral links and the public pages they open;
//! - [`payments`]: WeChat Pay orders and their notifications;
//! - [`coupons`]: coupon templates, grants, write-off and void (and the
//!   member API's claims and coupon list);
//! - [`campaigns`]: shake lotteries (and the member API's campaigns and shakes);
//! - [`distribution`]: distribution settings, distributors and their audit
//!   queue, bindings and subordinates (and the member API's apply, promotion,
//!   bind by code; the public promotion link);
//! - [`commissions`]: commission settings, a distributor's commissions with
//!   each order's split, withdrawals to approve (and the member API's
//!   distribution centre, commissions and withdrawals);
//! - [`operation_log`]: every admin and staff write, for owners and auditors;
//! - [`card_levels`]: the card level catalog (and the member API's own level).
//!
//! Other surfaces: [`health`] (liveness, readiness, the document),
//! [`member_api`] (`/m/api/v1`, member sessions from WeChat OAuth),
//! [`wechat_callback`] (WeChat's pushes) and [`pay_notify`] (Pay's
//! notifications); the last two answer in their callers' protocols.

pub mod admin_users;
pub mod campaigns;
pub mod card_levels;
pub mod commissions;
pub mod coupons;
pub mod distribution;
pub mod health;
pub mod ledger;
pub mod mall;
pub mod member_api;
pub mod members;
pub mod operation_log;
pub mod pay_notify;
pub mod payments;
pub mod referral;
pub mod reports;
pub mod session;
pub mod tenant;
pub mod wechat;
pub mod wechat_callback;
