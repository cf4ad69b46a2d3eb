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

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::json;
use wxcm_commands::ports::SecretSealer;
use wxcm_domain::tenant::SealedSecret;

use super::error::{TokenError, WechatError};
use super::http::{i64_field, str_field, Request, WechatHttp};

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

fn fetched(value: &serde_json::Value, token_field: &str) -> Result<Fetched, WechatError> {
    Ok(Fetched { value: str_field(value, token_field)?, expires_in_secs: i64_field(value, "expires_in")? })
}

#[async_trait]
impl TokenFetcher for WechatHttp {
    async fn access_token(&self, appid: &str, secret: &str) -> Result<Fetched, WechatError> {
        let req = Request::get("/cgi-bin/token")
            .query("grant_type", "client_credential")
            .query("appid", appid)
            .query("secret", secret);
        fetched(&self.call_json(appid, &req).await?, "access_token")
    }

    async fn component_token(&self, component_appid: &str, secret: &str, ticket: &str) -> Result<Fetched, WechatError> {
        let req = Request::post(
            "/cgi-bin/component/api_component_token",
            json!({"component_appid": component_appid, "component_appsecret": secret, "component_verify_ticket": ticket}),
        );
        fetched(&self.call_json(component_appid, &req).await?, "component_access_token")
    }

    async fn authorizer_token(
        &self,
        component_token: &str,
        component_appid: &str,
        authorizer_appid: &str,
        refresh_token: &str,
    ) -> Result<(Fetched, String), WechatError> {
        let req = Request::post(
            "/cgi-bin/component/api_authorizer_token",
            json!({"component_appid": component_appid, "authorizer_appid": authorizer_appid,
                   "authorizer_refresh_token": refresh_token}),
        )
        .query("component_access_token", component_token);
        let v = self.call_json(authorizer_appid, &req).await?;
        Ok((fetched(&v, "authorizer_access_token")?, str_field(&v, "authorizer_refresh_token")?))
    }

    async fn jsapi_ticket(&self, appid: &str, access_token: &str) -> Result<Fetched, WechatError> {
        let req = Request::get("/cgi-bin/ticket/getticket").query("access_token", access_token).query("type", "jsapi");
        fetched(&self.call_json(appid, &req).await?, "ticket")
    }

    async fn query_auth(
        &self,
        component_token: &str,
        component_appid: &str,
        authorization_code: &str,
    ) -> Result<Authorization, WechatError> {
        let req = Request::post(
            "/cgi-bin/component/api_query_auth",
            json!({"component_appid": component_appid, "authorization_code": authorization_code}),
        )
        .query("component_access_token", component_token);
        let v = self.call_json(component_appid, &req).await?;
        let info =
            v.get("authorization_info").ok_or_else(|| WechatError::Decode("missing authorization_info".into()))?;
        Ok(Authorization {
            authorizer_appid: str_field(info, "authorizer_appid")?,
            access_token: fetched(info, "authorizer_access_token")?,
            refresh_token: str_field(info, "authorizer_refresh_token")?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct TokenCenterConfig {
    /// This node's name in leases (unique per process).
    pub owner: String,
    /// A token with less than this left is refreshed (by the lease holder).
    pub refresh_ahead_ms: u64,
    /// How long a lease lasts if its holder stops without releasing it.
    pub lease_ms: u64,
    /// How long a token read from the store is served from memory.
    pub cache_ttl_ms: u64,
    /// Longest a caller waits for another node's refresh.
    pub wait_ms_max: u64,
    /// Interval of re-reading the store while waiting.
    pub poll_ms: u64,
}

impl Default for TokenCenterConfig {
    fn default() -> Self {
        Self {
            owner: format!("node-{}", uuid::Uuid::new_v4().simple()),
            refresh_ahead_ms: 10 * 60 * 1000,
            lease_ms: 30_000,
            cache_ttl_ms: 2_000,
            wait_ms_max: 10_000,
            poll_ms: 50,
        }
    }
}

type Gate = Arc<tokio::sync::Mutex<()>>;

pub struct TokenCenter {
    store: Arc<dyn TokenStore>,
    sources: Arc<dyn TokenSources>,
    fetcher: Arc<dyn TokenFetcher>,
    sealer: Arc<dyn SecretSealer>,
    config: TokenCenterConfig,
    cache: Mutex<HashMap<TokenKey, (Token, Instant)>>,
    gates: Mutex<HashMap<TokenKey, Gate>>,
    tracked: Mutex<HashSet<TokenKey>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl TokenCenter {
    pub fn new(
        store: Arc<dyn TokenStore>,
        sources: Arc<dyn TokenSources>,
        fetcher: Arc<dyn TokenFetcher>,
        sealer: Arc<dyn SecretSealer>,
        config: TokenCenterConfig,
    ) -> Self {
        Self {
            store,
            sources,
            fetcher,
            sealer,
            config,
            cache: Mutex::new(HashMap::new()),
            gates: Mutex::new(HashMap::new()),
            tracked: Mutex::new(HashSet::new()),
        }
    }

    pub fn config(&self) -> &TokenCenterConfig {
        &self.config
    }

    /// A valid token for `key`, refreshing it (under the lease) when missing
    /// or close to expiry.
    pub async fn get(&self, key: &TokenKey) -> Result<Token, TokenError> {
        self.track(key);
        if let Some(token) = self.cached(key) {
            return Ok(token);
        }
        self.obtain(key, None).await
    }

    fn get_boxed<'a>(
        &'a self,
        key: &'a TokenKey,
    ) -> Pin<Box<dyn Future<Output = Result<Token, TokenError>> + Send + 'a>> {
        Box::pin(self.get(key))
    }

    /// WeChat rejected `failed` (40001/40014/42001): returns a different valid
    /// token, refreshing only if the store still holds `failed`.
    pub async fn invalidate(&self, key: &TokenKey, failed: &str) -> Result<Token, TokenError> {
        {
            let mut cache = lock(&self.cache);
            if cache.get(key).is_some_and(|(t, _)| t.value == failed) {
                cache.remove(key);
            }
        }
        self.obtain(key, Some(failed)).await
    }

    /// Background step: refreshes every tracked key that is close to expiry
    /// and whose lease this node can take. Returns how many were refreshed.
    pub async fn refresh_due(&self) -> usize {
        let keys: Vec<TokenKey> = lock(&self.tracked).iter().cloned().collect();
        let mut refreshed = 0;
        for key in keys {
            let row = match self.store.load(&key).await {
                Ok(row) => row,
                Err(e) => {
                    tracing::warn!(key = %key, error = %e, "token store read failed");
                    continue;
                }
            };
            let Some(token) = row.and_then(|r| r.token) else { continue };
            if !self.needs_refresh(&token) {
                continue;
            }
            match self.obtain(&key, None).await {
                Ok(t) if t.generation != token.generation => refreshed += 1,
                Ok(_) => {}
                Err(e) => tracing::warn!(key = %key, error = %e, "ahead-of-expiry refresh failed"),
            }
        }
        refreshed
    }

    /// Runs [`Self::refresh_due`] every `interval_ms` until `shutdown` turns true.
    pub async fn run_refresher(self: Arc<Self>, interval_ms: u64, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_millis(interval_ms.max(1)));
        loop {
            tokio::select! {
                _ = tick.tick() => { self.refresh_due().await; }
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
        }
    }

    /// Keeps the latest `component_verify_ticket` (pushed every 10 minutes).
    pub async fn record_verify_ticket(&self, component_appid: &str, ticket: &str) -> Result<(), TokenError> {
        TokenKey::component_token(component_appid)?;
        if ticket.is_empty() || ticket.len() > TICKET_CHARS_MAX {
            return Err(TokenError::InvalidKey(format!("verify ticket must be 1..={TICKET_CHARS_MAX} characters")));
        }
        self.store.save_verify_ticket(component_appid, ticket).await
    }

    /// Exchanges an authorization code (from the `authorized` event or the
    /// redirect) for the authorizer's tokens; the refresh token is sealed and
    /// stored durably. Returns the authorizer appid.
    pub async fn complete_authorization(
        &self,
        component_appid: &str,
        authorization_code: &str,
    ) -> Result<String, TokenError> {
        let component_key = TokenKey::component_token(component_appid)?;
        let component_token = self.get(&component_key).await?;
        let auth = self
            .fetcher
            .query_auth(&component_token.value, component_appid, authorization_code)
            .await
            .map_err(|e| refresh_error(&component_key, e))?;
        let key = TokenKey::authorizer_token(&auth.authorizer_appid)?;
        let sealed = self.sealer.seal(&auth.refresh_token).map_err(|e| TokenError::Sealing(e.0.to_string()))?;
        self.store.save_refresh_token(&auth.authorizer_appid, component_appid, &sealed).await?;
        // Store the access token too when the lease is free; otherwise the
        // holder refreshes it from the refresh token just saved.
        if self.store.try_lease(&key, &self.config.owner, self.config.lease_ms).await? {
            let generation = self.store.load(&key).await?.map(|r| r.generation).unwrap_or(0);
            let expires_at = expires_at(auth.access_token.expires_in_secs);
            let stored = self
                .store
                .compare_and_set(&key, &self.config.owner, generation, &auth.access_token.value, expires_at)
                .await;
            self.store.release_lease(&key, &self.config.owner).await?;
            stored?;
        }
        self.track(&key);
        Ok(auth.authorizer_appid)
    }

    /// The sealed refresh token of an authorizer, as [`Self::complete_authorization`] stored it.
    pub async fn sealed_refresh_token(&self, authorizer_appid: &str) -> Result<Option<SealedSecret>, TokenError> {
        Ok(self.store.refresh_token(authorizer_appid).await?.map(|(_, sealed)| sealed))
    }

    fn track(&self, key: &TokenKey) {
        let mut tracked = lock(&self.tracked);
        if tracked.len() < TOKEN_KEYS_MAX || tracked.contains(key) {
            tracked.insert(key.clone());
        }
    }

    fn cached(&self, key: &TokenKey) -> Option<Token> {
        let cache = lock(&self.cache);
        let (token, at) = cache.get(key)?;
        let fresh = at.elapsed() < Duration::from_millis(self.config.cache_ttl_ms) && !self.needs_refresh(token);
        fresh.then(|| token.clone())
    }

    fn remember(&self, key: &TokenKey, token: &Token) {
        let mut cache = lock(&self.cache);
        if cache.len() >= TOKEN_KEYS_MAX && !cache.contains_key(key) {
            cache.clear();
        }
        cache.insert(key.clone(), (token.clone(), Instant::now()));
    }

    fn gate(&self, key: &TokenKey) -> Gate {
        let mut gates = lock(&self.gates);
        if gates.len() >= TOKEN_KEYS_MAX && !gates.contains_key(key) {
            // Drop gates nobody is waiting on.
            gates.retain(|_, g| Arc::strong_count(g) > 1);
        }
        gates.entry(key.clone()).or_default().clone()
    }

    fn needs_refresh(&self, token: &Token) -> bool {
        token.expires_at - Utc::now() < chrono::Duration::milliseconds(ms_i64(self.config.refresh_ahead_ms))
    }

    /// A valid token other than `failed`, refreshed under the lease when
    /// needed; waits (bounded) while another node holds the lease.
    async fn obtain(&self, key: &TokenKey, failed: Option<&str>) -> Result<Token, TokenError> {
        let gate = self.gate(key);
        let _in_process_turn = gate.lock().await;
        // Whoever held the gate before us may have just refreshed.
        if let Some(token) = self.cached(key).filter(|t| Some(t.value.as_str()) != failed) {
            return Ok(token);
        }
        let started = Instant::now();
        loop {
            let row = self.store.load(key).await?.unwrap_or_default();
            let usable = row.token.filter(|t| Some(t.value.as_str()) != failed && t.expires_at > Utc::now());
            if let Some(token) = usable.as_ref().filter(|t| !self.needs_refresh(t)) {
                self.remember(key, token);
                return Ok(token.clone());
            }
            if self.store.try_lease(key, &self.config.owner, self.config.lease_ms).await? {
                let refreshed = self.refresh_under_lease(key, failed).await;
                if let Err(e) = self.store.release_lease(key, &self.config.owner).await {
                    tracing::warn!(key = %key, error = %e, "releasing a token lease failed; it expires by itself");
                }
                let token = refreshed?;
                self.remember(key, &token);
                return Ok(token);
            }
            // Another node refreshes; a token that is still valid serves meanwhile.
            if let Some(token) = usable {
                return Ok(token);
            }
            let waited_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            if waited_ms >= self.config.wait_ms_max {
                return Err(TokenError::Unavailable(key.to_string(), waited_ms));
            }
            tokio::time::sleep(Duration::from_millis(self.config.poll_ms.max(1))).await;
        }
    }

    async fn refresh_under_lease(&self, key: &TokenKey, failed: Option<&str>) -> Result<Token, TokenError> {
        // Re-read under the lease: another node may have refreshed between our
        // read and our lease.
        let row = self.store.load(key).await?.unwrap_or_default();
        if let Some(token) = row.token.as_ref() {
            if Some(token.value.as_str()) != failed && token.expires_at > Utc::now() && !self.needs_refresh(token) {
                return Ok(token.clone());
            }
        }
        let fetched = self.fetch(key).await?;
        let expires_at = expires_at(fetched.expires_in_secs);
        tracing::info!(key = %key, generation = row.generation + 1, "token refreshed");
        match self.store.compare_and_set(key, &self.config.owner, row.generation, &fetched.value, expires_at).await? {
            Some(generation) => Ok(Token { value: fetched.value, generation, expires_at }),
            None => Err(TokenError::Store(format!("lost the lease on {key} while refreshing"))),
        }
    }

    async fn fetch(&self, key: &TokenKey) -> Result<Fetched, TokenError> {
        let appid = key.appid.as_str();
        let result = match key.kind {
            TokenKind::AccessToken => {
                let secret =
                    self.sources.app_secret(appid).await?.ok_or_else(|| TokenError::NoCredentials(key.to_string()))?;
                self.fetcher.access_token(appid, &secret).await
            }
            TokenKind::ComponentToken => {
                let secret = self
                    .sources
                    .component_secret(appid)
                    .await?
                    .ok_or_else(|| TokenError::NoCredentials(key.to_string()))?;
                let ticket = self
                    .store
                    .verify_ticket(appid)
                    .await?
                    .ok_or_else(|| TokenError::NoVerifyTicket(appid.to_owned()))?;
                self.fetcher.component_token(appid, &secret, &ticket).await
            }
            TokenKind::AuthorizerToken => return self.fetch_authorizer(key).await,
            TokenKind::JsapiTicket => return self.fetch_jsapi_ticket(key).await,
        };
        result.map_err(|e| refresh_error(key, e))
    }

    async fn fetch_authorizer(&self, key: &TokenKey) -> Result<Fetched, TokenError> {
        let appid = key.appid.as_str();
        let (component_appid, sealed) =
            self.store.refresh_token(appid).await?.ok_or_else(|| TokenError::NoRefreshToken(appid.to_owned()))?;
        let refresh_token = self.sealer.open(&sealed).map_err(|e| TokenError::Sealing(e.0.to_string()))?;
        let component_key = TokenKey::component_token(&component_appid)?;
        let component_token = self.get_boxed(&component_key).await?;
        let (fetched, rotated) = self
            .fetcher
            .authorizer_token(&component_token.value, &component_appid, appid, &refresh_token)
            .await
            .map_err(|e| refresh_error(key, e))?;
        if rotated != refresh_token {
            let sealed = self.sealer.seal(&rotated).map_err(|e| TokenError::Sealing(e.0.to_string()))?;
            self.store.save_refresh_token(appid, &component_appid, &sealed).await?;
        }
        Ok(fetched)
    }

    async fn fetch_jsapi_ticket(&self, key: &TokenKey) -> Result<Fetched, TokenError> {
        let appid = key.appid.as_str();
        let access_key = if self.store.refresh_token(appid).await?.is_some() {
            TokenKey::authorizer_token(appid)?
        } else {
            TokenKey::access_token(appid)?
        };
        let access = self.get_boxed(&access_key).await?;
        match self.fetcher.jsapi_ticket(appid, &access.value).await {
            Err(WechatError::TokenInvalid { .. }) => {
                let renewed = Box::pin(self.invalidate(&access_key, &access.value)).await?;
                self.fetcher.jsapi_ticket(appid, &renewed.value).await.map_err(|e| refresh_error(key, e))
            }
            other => other.map_err(|e| refresh_error(key, e)),
        }
    }
}

/// Longest verify ticket accepted (WeChat's are ~100 characters).
pub const TICKET_CHARS_MAX: usize = 512;

fn refresh_error(key: &TokenKey, e: WechatError) -> TokenError {
    TokenError::Refresh { key: key.to_string(), source: Box::new(e) }
}

fn ms_i64(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

fn expires_at(expires_in_secs: i64) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::seconds(expires_in_secs.clamp(0, EXPIRES_IN_SECS_MAX))
}

/// In-memory [`TokenStore`]: one process only (tests, a single-node sandbox).
#[derive(Default)]
pub struct MemoryTokenStore {
    rows: Mutex<HashMap<TokenKey, MemoryRow>>,
    refresh_tokens: Mutex<HashMap<String, (String, SealedSecret)>>,
    tickets: Mutex<HashMap<String, String>>,
}

#[derive(Default)]
struct MemoryRow {
    row: TokenRow,
    lease: Option<(String, Instant)>,
}

#[async_trait]
impl TokenStore for MemoryTokenStore {
    async fn load(&self, key: &TokenKey) -> Result<Option<TokenRow>, TokenError> {
        Ok(lock(&self.rows).get(key).map(|r| r.row.clone()))
    }

    async fn try_lease(&self, key: &TokenKey, owner: &str, lease_ms: u64) -> Result<bool, TokenError> {
        let mut rows = lock(&self.rows);
        if rows.len() >= TOKEN_KEYS_MAX && !rows.contains_key(key) {
            return Err(TokenError::Store(format!("more than {TOKEN_KEYS_MAX} token keys")));
        }
        let row = rows.entry(key.clone()).or_default();
        let free = match &row.lease {
            None => true,
            Some((holder, until)) => holder == owner || *until <= Instant::now(),
        };
        if free {
            row.lease = Some((owner.to_owned(), Instant::now() + Duration::from_millis(lease_ms)));
        }
        Ok(free)
    }

    async fn release_lease(&self, key: &TokenKey, owner: &str) -> Result<(), TokenError> {
        if let Some(row) = lock(&self.rows).get_mut(key) {
            if row.lease.as_ref().is_some_and(|(holder, _)| holder == owner) {
                row.lease = None;
            }
        }
        Ok(())
    }

    async fn compare_and_set(
        &self,
        key: &TokenKey,
        owner: &str,
        expected_generation: i64,
        value: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<Option<i64>, TokenError> {
        let mut rows = lock(&self.rows);
        let Some(row) = rows.get_mut(key) else { return Ok(None) };
        let holds = row.lease.as_ref().is_some_and(|(holder, until)| holder == owner && *until > Instant::now());
        if !holds || row.row.generation != expected_generation {
            return Ok(None);
        }
        let generation = expected_generation + 1;
        row.row = TokenRow { token: Some(Token { value: value.to_owned(), generation, expires_at }), generation };
        Ok(Some(generation))
    }

    async fn save_refresh_token(
        &self,
        authorizer_appid: &str,
        component_appid: &str,
        sealed: &SealedSecret,
    ) -> Result<(), TokenError> {
        lock(&self.refresh_tokens).insert(authorizer_appid.to_owned(), (component_appid.to_owned(), sealed.clone()));
        Ok(())
    }

    async fn refresh_token(&self, authorizer_appid: &str) -> Result<Option<(String, SealedSecret)>, TokenError> {
        Ok(lock(&self.refresh_tokens).get(authorizer_appid).cloned())
    }

    async fn save_verify_ticket(&self, component_appid: &str, ticket: &str) -> Result<(), TokenError> {
        lock(&self.tickets).insert(component_appid.to_owned(), ticket.to_owned());
        Ok(())
    }

    async fn verify_ticket(&self, component_appid: &str) -> Result<Option<String>, TokenError> {
        Ok(lock(&self.tickets).get(component_appid).cloned())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// Counts fetches; each one mints `t<n>` after a short pause (so concurrent
    /// callers really overlap).
    #[derive(Default)]
    struct CountingFetcher {
        fetches: AtomicU32,
    }

    impl CountingFetcher {
        async fn mint(&self) -> Result<Fetched, WechatError> {
            let n = self.fetches.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(Fetched { value: format!("t{n}"), expires_in_secs: 7200 })
        }
    }

    #[async_trait]
    impl TokenFetcher for CountingFetcher {
        async fn access_token(&self, _: &str, _: &str) -> Result<Fetched, WechatError> {
            self.mint().await
        }
        async fn component_token(&self, _: &str, _: &str, _: &str) -> Result<Fetched, WechatError> {
            self.mint().await
        }
        async fn authorizer_token(&self, _: &str, _: &str, _: &str, r: &str) -> Result<(Fetched, String), WechatError> {
            Ok((self.mint().await?, r.to_owned()))
        }
        async fn jsapi_ticket(&self, _: &str, _: &str) -> Result<Fetched, WechatError> {
            self.mint().await
        }
        async fn query_auth(&self, _: &str, _: &str, _: &str) -> Result<Authorization, WechatError> {
            Err(WechatError::InvalidInput("not used".into()))
        }
    }

    struct NoSealer;
    impl SecretSealer for NoSealer {
        fn seal(&self, _: &str) -> Result<SealedSecret, wxcm_commands::ports::PortError> {
            Err(wxcm_commands::ports::PortError::msg("unused"))
        }
        fn open(&self, _: &SealedSecret) -> Result<String, wxcm_commands::ports::PortError> {
            Err(wxcm_commands::ports::PortError::msg("unused"))
        }
    }

    fn center(store: Arc<MemoryTokenStore>, fetcher: Arc<CountingFetcher>, owner: &str) -> Arc<TokenCenter> {
        let sources = StaticTokenSources { app_secrets: [("wxapp".into(), "s".into())].into(), ..Default::default() };
        let config = TokenCenterConfig { owner: owner.into(), poll_ms: 5, wait_ms_max: 2_000, ..Default::default() };
        Arc::new(TokenCenter::new(store, Arc::new(sources), fetcher, Arc::new(NoSealer), config))
    }

    fn key() -> TokenKey {
        TokenKey::access_token("wxapp").unwrap()
    }

    #[tokio::test]
    async fn invalidate_refreshes_only_while_the_failed_token_is_current() {
        let fetcher = Arc::new(CountingFetcher::default());
        let tc = center(Arc::new(MemoryTokenStore::default()), fetcher.clone(), "a");
        let t1 = tc.get(&key()).await.unwrap();
        assert_eq!((t1.value.as_str(), t1.generation), ("t1", 1));
        let t2 = tc.invalidate(&key(), "t1").await.unwrap();
        assert_eq!((t2.value.as_str(), t2.generation), ("t2", 2));
        // A late caller that saw t1 fail gets t2 without another refresh.
        assert_eq!(tc.invalidate(&key(), "t1").await.unwrap().value, "t2");
        assert_eq!(fetcher.fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn concurrent_invalidations_on_two_nodes_fetch_once() {
        let fetcher = Arc::new(CountingFetcher::default());
        let store = Arc::new(MemoryTokenStore::default());
        let (a, b) = (center(store.clone(), fetcher.clone(), "a"), center(store, fetcher.clone(), "b"));
        let t1 = a.get(&key()).await.unwrap();
        assert_eq!(b.get(&key()).await.unwrap(), t1);
        let calls = (0..40).map(|i| {
            let node = if i % 2 == 0 { a.clone() } else { b.clone() };
            async move { node.invalidate(&key(), "t1").await.unwrap().value }
        });
        let values = futures::future::join_all(calls).await;
        assert!(values.iter().all(|v| v == "t2"), "{values:?}");
        assert_eq!(fetcher.fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_foreign_lease_blocks_refresh_until_it_expires() {
        let fetcher = Arc::new(CountingFetcher::default());
        let store = Arc::new(MemoryTokenStore::default());
        assert!(store.try_lease(&key(), "other", 100).await.unwrap());
        assert!(!store.try_lease(&key(), "me", 100).await.unwrap());
        let tc = center(store.clone(), fetcher.clone(), "me");
        let started = Instant::now();
        assert_eq!(tc.get(&key()).await.unwrap().value, "t1");
        assert!(started.elapsed() >= Duration::from_millis(90));
        // The other node's stale compare-and-set loses.
        assert_eq!(store.compare_and_set(&key(), "other", 0, "x", Utc::now()).await.unwrap(), None);
    }

    #[test]
    fn token_keys_are_validated_at_the_limit() {
        assert!(TokenKey::access_token(&"a".repeat(APPID_CHARS_MAX)).is_ok());
        assert!(TokenKey::access_token(&"a".repeat(APPID_CHARS_MAX + 1)).is_err());
        assert!(TokenKey::access_token("").is_err());
        assert!(TokenKey::access_token("wx'; drop").is_err());
        assert_eq!(TokenKey::jsapi_ticket("wx1").unwrap().to_string(), "jsapi_ticket:wx1");
        let t = Token { value: "secret-value".into(), generation: 1, expires_at: Utc::now() };
        assert!(!format!("{t:?}").contains("secret-value"));
    }
}
