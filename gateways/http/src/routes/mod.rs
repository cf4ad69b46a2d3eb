//! Handlers, one module per resource.

pub mod health;
pub mod member_api;
pub mod members;
pub mod pay_notify;
pub mod payments;
pub mod reports;
pub mod session;
pub mod tenant;
pub mod wechat_admin;
pub mod wechat_callback;
