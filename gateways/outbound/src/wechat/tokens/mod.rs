//! The token center: every access token, authorizer token, component token
//! and jsapi ticket is shared by all nodes through a [`TokenStore`] row with a
//! generation number. Only the holder of the row's lease refreshes it, so one
//! `/cgi-bin/token` call per appid happens in the whole cluster (each call
//! invalidates the previous token, which is why uncoordinated refreshers
//! knock each other out).
//!
//! Invariants:
//! - a token is refreshed only under its lease, and stored with a
//!   compare-and-set on the generation it replaced;
//! - [`TokenCenter::invalidate`] refreshes only if the stored token is still
//!   the one that failed; callers that lose the race wait (bounded) for the
//!   new generation instead of refreshing again;
//! - within one process the callers of one key queue on an async gate, so a
//!   storm of 40001 answers costs one lease attempt, not one per caller.
//!
//! Code map: this file holds the keys, the stored shape and the ports
//! ([`TokenStore`], [`TokenSources`], [`TokenFetcher`]); `center` the
//! [`TokenCenter`]; `fetch` the WeChat calls that mint tokens; `memory` a
//! one-process store.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use wxcm_domain::tenant::SealedSecret;

use super::error::{TokenError, WechatError};

mod center;
mod fetch;
mod memory;
#[cfg(test)]
mod tests;

pub use center::{TokenCenter, TokenCenterConfig, TICKET_CHARS_MAX};
pub use memory::MemoryTokenStore;

/// Keys cached in process, gated, or tracked for background refresh.
pub const TOKEN_KEYS_MAX: usize = 10_000;
/// Appids and tokens longer than this are refused before any I/O.
pub const APPID_CHARS_MAX: usize = 64;
/// A token WeChat says lives longer than this is treated as living this long.
pub const EXPIRES_IN_SECS_MAX: i64 = 24 * 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// `/cgi-bin/token` for a directly configured official account.
    AccessToken,
    /// `api_authorizer_token` for an account authorized to our component.
    AuthorizerToken,
    /// `api_component_token` for the component (third-party platform) itself.
    ComponentToken,
    /// `/cgi-bin/ticket/getticket?type=jsapi` for an account.
    JsapiTicket,
}

impl TokenKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AccessToken => "access_token",
            Self::AuthorizerToken => "authorizer_token",
            Self::ComponentToken => "component_token",
            Self::JsapiTicket => "jsapi_ticket",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenKey {
    pub kind: TokenKind,
    /// The account's appid (the component appid for `ComponentToken`).
    pub appid: String,
}

impl TokenKey {
    pub fn new(kind: TokenKind, appid: &str) -> Result<Self, TokenError> {
        if appid.is_empty()
            || appid.len() > APPID_CHARS_MAX
            || !appid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(TokenError::NoCredentials(format!(
                "invalid appid {:?}",
                appid.chars().take(APPID_CHARS_MAX).collect::<String>()
            )));
        }
        Ok(Self { kind, appid: appid.to_owned() })
    }
    pub fn access_token(appid: &str) -> Result<Self, TokenError> {
        Self::new(TokenKind::AccessToken, appid)
    }
    pub fn authorizer_token(appid: &str) -> Result<Self, TokenError> {
        Self::new(TokenKind::AuthorizerToken, appid)
    }
    pub fn component_token(component_appid: &str) -> Result<Self, TokenError> {
        Self::new(TokenKind::ComponentToken, component_appid)
    }
    pub fn jsapi_ticket(appid: &str) -> Result<Self, TokenError> {
        Self::new(TokenKind::JsapiTicket, appid)
    }
}

impl fmt::Display for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind.as_str(), self.appid)
    }
}

/// A token as the store holds it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    pub value: String,
    pub generation: i64,
    pub expires_at: DateTime<Utc>,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The value is a credential: never in logs.
        f.debug_struct("Token").field("generation", &self.generation).field("expires_at", &self.expires_at).finish()
    }
}

/// A row of the store: its generation exists before its first token (the
/// lease creates the row).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenRow {
    pub token: Option<Token>,
    pub generation: i64,
}

/// Shared storage of tokens, leases and the durable component credentials.
#[async_trait]
pub trait TokenStore: Send + Sync {
    async fn load(&self, key: &TokenKey) -> Result<Option<TokenRow>, TokenError>;
    /// Takes the lease if it is free, expired or already `owner`'s (then it is
    /// extended). Creates the row when missing.
    async fn try_lease(&self, key: &TokenKey, owner: &str, lease_ms: u64) -> Result<bool, TokenError>;
    async fn release_lease(&self, key: &TokenKey, owner: &str) -> Result<(), TokenError>;
    /// Stores a new token if `owner` holds a live lease and the generation is
    /// still `expected_generation`; returns the new generation, `None` otherwise.
    async fn compare_and_set(
        &self,
        key: &TokenKey,
        owner: &str,
        expected_generation: i64,
        value: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<Option<i64>, TokenError>;
    async fn save_refresh_token(
        &self,
        authorizer_appid: &str,
        component_appid: &str,
        sealed: &SealedSecret,
    ) -> Result<(), TokenError>;
    /// `(component_appid, sealed refresh token)` of an authorizer.
    async fn refresh_token(&self, authorizer_appid: &str) -> Result<Option<(String, SealedSecret)>, TokenError>;
    async fn save_verify_ticket(&self, component_appid: &str, ticket: &str) -> Result<(), TokenError>;
    async fn verify_ticket(&self, component_appid: &str) -> Result<Option<String>, TokenError>;
}

/// Where credentials come from (the tenants' sealed secrets in production).
#[async_trait]
pub trait TokenSources: Send + Sync {
    async fn app_secret(&self, appid: &str) -> Result<Option<String>, TokenError>;
    async fn component_secret(&self, component_appid: &str) -> Result<Option<String>, TokenError>;
}

/// Fixed credentials: tests and single-account setups.
#[derive(Default)]
pub struct StaticTokenSources {
    pub app_secrets: HashMap<String, String>,
    pub component_secrets: HashMap<String, String>,
}

#[async_trait]
impl TokenSources for StaticTokenSources {
    async fn app_secret(&self, appid: &str) -> Result<Option<String>, TokenError> {
        Ok(self.app_secrets.get(appid).cloned())
    }
    async fn component_secret(&self, component_appid: &str) -> Result<Option<String>, TokenError> {
        Ok(self.component_secrets.get(component_appid).cloned())
    }
}

/// A token as WeChat hands it out.
#[derive(Clone)]
pub struct Fetched {
    pub value: String,
    pub expires_in_secs: i64,
}

/// What `api_query_auth` returns for a new authorization.
#[derive(Clone)]
pub struct Authorization {
    pub authorizer_appid: String,
    pub access_token: Fetched,
    pub refresh_token: String,
}

/// The WeChat calls that mint tokens (implemented by [`WechatHttp`]; a fake in unit tests).
#[async_trait]
pub trait TokenFetcher: Send + Sync {
    async fn access_token(&self, appid: &str, secret: &str) -> Result<Fetched, WechatError>;
    async fn component_token(&self, component_appid: &str, secret: &str, ticket: &str) -> Result<Fetched, WechatError>;
    /// Returns the new token and the (possibly rotated) refresh token.
    async fn authorizer_token(
        &self,
        component_token: &str,
        component_appid: &str,
        authorizer_appid: &str,
        refresh_token: &str,
    ) -> Result<(Fetched, String), WechatError>;
    async fn jsapi_ticket(&self, appid: &str, access_token: &str) -> Result<Fetched, WechatError>;
    async fn query_auth(
        &self,
        component_token: &str,
        component_appid: &str,
        authorization_code: &str,
    ) -> Result<Authorization, WechatError>;
}

/// A poisoned lock still guards consistent data here (every critical section
/// is a single map operation), so it is taken over rather than propagated.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
