//! Postgres [`TokenStore`] for the WeChat token center, on the control shard
//! (`default_shard`, migration 0008). Leases use the database clock, so nodes
//! with skewed clocks still agree on who holds a lease.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use wxcm_domain::tenant::SealedSecret;
use wxcm_outbound::wechat::tokens::{Token, TokenKey, TokenRow, TokenStore};
use wxcm_outbound::wechat::TokenError;

pub struct PgTokenStore {
    pool: PgPool,
}

impl PgTokenStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

fn store_error(e: sqlx::Error) -> TokenError {
    TokenError::Store(e.to_string())
}

#[async_trait]
impl TokenStore for PgTokenStore {
    async fn load(&self, key: &TokenKey) -> Result<Option<TokenRow>, TokenError> {
        let row: Option<(Option<String>, i64, Option<DateTime<Utc>>)> =
            sqlx::query_as("SELECT token, generation, expires_at FROM wechat_tokens WHERE kind = $1 AND appid = $2")
                .bind(key.kind.as_str())
                .bind(&key.appid)
                .fetch_optional(&self.pool)
                .await
                .map_err(store_error)?;
        Ok(row.map(|(token, generation, expires_at)| TokenRow {
            token: token.zip(expires_at).map(|(value, expires_at)| Token { value, generation, expires_at }),
            generation,
        }))
    }

    async fn try_lease(&self, key: &TokenKey, owner: &str, lease_ms: u64) -> Result<bool, TokenError> {
        let taken: Option<i32> = sqlx::query_scalar(
            "INSERT INTO wechat_tokens (kind, appid, lease_owner, lease_until)
             VALUES ($1, $2, $3, now() + $4 * interval '1 millisecond')
             ON CONFLICT (kind, appid) DO UPDATE
                SET lease_owner = EXCLUDED.lease_owner, lease_until = EXCLUDED.lease_until
              WHERE wechat_tokens.lease_owner IS NULL
                 OR wechat_tokens.lease_until <= now()
                 OR wechat_tokens.lease_owner = EXCLUDED.lease_owner
             RETURNING 1",
        )
        .bind(key.kind.as_str())
        .bind(&key.appid)
        .bind(owner)
        .bind(lease_ms as f64)
        .fetch_optional(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(taken.is_some())
    }

    async fn release_lease(&self, key: &TokenKey, owner: &str) -> Result<(), TokenError> {
        sqlx::query(
            "UPDATE wechat_tokens SET lease_owner = NULL, lease_until = NULL
              WHERE kind = $1 AND appid = $2 AND lease_owner = $3",
        )
        .bind(key.kind.as_str())
        .bind(&key.appid)
        .bind(owner)
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
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
        sqlx::query_scalar(
            "UPDATE wechat_tokens
                SET token = $5, expires_at = $6, generation = generation + 1, updated_at = now()
              WHERE kind = $1 AND appid = $2 AND generation = $4
                AND lease_owner = $3 AND lease_until > now()
             RETURNING generation",
        )
        .bind(key.kind.as_str())
        .bind(&key.appid)
        .bind(owner)
        .bind(expected_generation)
        .bind(value)
        .bind(expires_at)
        .fetch_optional(&self.pool)
        .await
        .map_err(store_error)
    }

    async fn save_refresh_token(
        &self,
        authorizer_appid: &str,
        component_appid: &str,
        sealed: &SealedSecret,
    ) -> Result<(), TokenError> {
        sqlx::query(
            "INSERT INTO wechat_authorizer_credentials (authorizer_appid, component_appid, refresh_token_sealed)
             VALUES ($1, $2, $3)
             ON CONFLICT (authorizer_appid) DO UPDATE
                SET component_appid = EXCLUDED.component_appid,
                    refresh_token_sealed = EXCLUDED.refresh_token_sealed, updated_at = now()",
        )
        .bind(authorizer_appid)
        .bind(component_appid)
        .bind(sealed.ciphertext())
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn refresh_token(&self, authorizer_appid: &str) -> Result<Option<(String, SealedSecret)>, TokenError> {
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT component_appid, refresh_token_sealed FROM wechat_authorizer_credentials WHERE authorizer_appid = $1",
        )
        .bind(authorizer_appid)
        .fetch_optional(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(row.map(|(component, sealed)| (component, SealedSecret::from_ciphertext(sealed))))
    }

    async fn save_verify_ticket(&self, component_appid: &str, ticket: &str) -> Result<(), TokenError> {
        sqlx::query(
            "INSERT INTO wechat_component_tickets (component_appid, ticket) VALUES ($1, $2)
             ON CONFLICT (component_appid) DO UPDATE SET ticket = EXCLUDED.ticket, received_at = now()",
        )
        .bind(component_appid)
        .bind(ticket)
        .execute(&self.pool)
        .await
        .map_err(store_error)?;
        Ok(())
    }

    async fn verify_ticket(&self, component_appid: &str) -> Result<Option<String>, TokenError> {
        sqlx::query_scalar("SELECT ticket FROM wechat_component_tickets WHERE component_appid = $1")
            .bind(component_appid)
            .fetch_optional(&self.pool)
            .await
            .map_err(store_error)
    }
}
