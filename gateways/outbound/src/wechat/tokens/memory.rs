//! An in-memory token store for one process.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use wxcm_domain::tenant::SealedSecret;

use crate::wechat::error::TokenError;

use super::*;

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
