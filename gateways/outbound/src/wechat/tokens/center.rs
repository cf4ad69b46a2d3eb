//! [`TokenCenter`]: leases, compare-and-set generations, refresh ahead of expiry.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use wxcm_commands::ports::SecretSealer;
use wxcm_domain::tenant::SealedSecret;

use crate::wechat::error::{TokenError, WechatError};

use super::*;

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
