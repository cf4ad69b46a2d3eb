//! Outbound WeChat API: the transport ([`http`]), the calls ([`client`]),
//! the cluster-wide token center ([`tokens`]) and their errors ([`error`]).
//!
//! Boundaries: nothing here talks SQL; the token center's storage is the
//! [`tokens::TokenStore`] trait (Postgres in `infra::tokens`), credentials come
//! through [`tokens::TokenSources`], refresh tokens are sealed with the
//! `wxcm_commands::ports::SecretSealer`.

pub mod client;
pub mod error;
pub mod http;
pub mod tokens;

pub use client::{Account, WechatClient};
pub use error::{TokenError, WechatError};
pub use http::{ClientConfig, WechatHttp};
pub use tokens::{TokenCenter, TokenCenterConfig, TokenKey, TokenKind, TokenSources, TokenStore};
