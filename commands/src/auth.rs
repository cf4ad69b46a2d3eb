//! Admin authentication: Argon2id password hashes and tenant-scoped bearer
//! tokens (`<tenant>.<random>`; only the token's SHA-256 is stored).

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;
use base64::Engine;
use chrono::{Duration, Utc};
use sha2::{Digest, Sha256};
use wxcm_domain::TenantId;

use crate::ports::{AdminSession, AdminUser, App, PortError, Role, RouteError};

pub const PASSWORD_LEN_MIN: usize = 10;
pub const PASSWORD_LEN_MAX: usize = 128;
pub const USERNAME_LEN_MAX: usize = 64;
pub const SESSION_TTL_HOURS: i64 = 12;
const TOKEN_RANDOM_BYTES: usize = 32;
pub const TOKEN_LEN_MAX: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("invalid input: {0}")]
    Invalid(String),
    #[error("username already exists")]
    UsernameTaken,
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error("infrastructure failure: {0}")]
    Infra(String),
    /// The database or broker is unreachable for now; a write's outcome is unknown.
    #[error("infrastructure unavailable: {0}")]
    Unavailable(String),
}

impl From<PortError> for AuthError {
    fn from(e: PortError) -> Self {
        if e.is_transient() {
            AuthError::Unavailable(e.to_string())
        } else {
            AuthError::Infra(e.to_string())
        }
    }
}

pub fn validate_username(username: &str) -> Result<(), AuthError> {
    let ok = !username.is_empty()
        && username.len() <= USERNAME_LEN_MAX
        && username.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@'));
    if ok {
        Ok(())
    } else {
        Err(AuthError::Invalid(format!("username must be 1..={USERNAME_LEN_MAX} of A-Z a-z 0-9 _ - . @")))
    }
}

/// The rules a new password follows (its length in characters).
pub fn validate_password(password: &str) -> Result<(), AuthError> {
    let len = password.chars().count();
    if !(PASSWORD_LEN_MIN..=PASSWORD_LEN_MAX).contains(&len) {
        return Err(AuthError::Invalid(format!("password must be {PASSWORD_LEN_MIN}..={PASSWORD_LEN_MAX} characters")));
    }
    Ok(())
}

pub fn hash_password(password: &str) -> Result<String, AuthError> {
    validate_password(password)?;
    // Argon2id v19 with the crate's recommended parameters and a random salt.
    PasswordHasher::<PasswordHash>::hash_password(&Argon2::default(), password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Infra(e.to_string()))
}

/// [`hash_password`] on a blocking thread (Argon2 is deliberately slow).
pub async fn hash_password_off_thread(password: &str) -> Result<String, AuthError> {
    let owned = password.to_owned();
    tokio::task::spawn_blocking(move || hash_password(&owned)).await.map_err(|e| AuthError::Infra(e.to_string()))?
}

/// [`verify_password`] on a blocking thread.
pub(crate) async fn verify_password_off_thread(password: &str, hash: &str) -> Result<bool, AuthError> {
    let (candidate, hash) = (password.to_owned(), hash.to_owned());
    tokio::task::spawn_blocking(move || verify_password(&candidate, &hash))
        .await
        .map_err(|e| AuthError::Infra(e.to_string()))
}

pub(crate) fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
}

pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// The tenant a token claims; the claim is only trusted after the lookup.
pub fn token_tenant(token: &str) -> Option<TenantId> {
    if token.len() > TOKEN_LEN_MAX {
        return None;
    }
    let (tenant, _) = token.split_once('.')?;
    TenantId::parse(tenant).ok()
}

pub async fn create_admin(
    app: &App,
    tenant: &TenantId,
    username: &str,
    password: &str,
    role: Role,
) -> Result<(), AuthError> {
    validate_username(username)?;
    let password_hash = hash_password_off_thread(password).await?;
    let shard = app.router.route(tenant)?;
    let user =
        AdminUser { tenant_id: tenant.clone(), username: username.to_owned(), password_hash, role, disabled: false };
    if shard.admins.create_user(&user).await? {
        Ok(())
    } else {
        Err(AuthError::UsernameTaken)
    }
}

/// Returns a fresh bearer token. Unknown users cost the same Argon2 work as
/// known ones so response times do not reveal which usernames exist.
pub async fn login(
    app: &App,
    tenant: &TenantId,
    username: &str,
    password: &str,
) -> Result<(String, AdminSession), AuthError> {
    if validate_username(username).is_err() || password.len() > PASSWORD_LEN_MAX * 4 {
        return Err(AuthError::InvalidCredentials);
    }
    let user = match app.router.route(tenant) {
        Ok(shard) => shard.admins.find_user(tenant, username).await?,
        Err(_) => None, // unknown tenant: same work and answer as a wrong password
    };
    // Argon2 is deliberately slow: keep it off the async workers.
    let hash = user.as_ref().map(|u| u.password_hash.clone()).unwrap_or_else(|| DUMMY_HASH.to_owned());
    let candidate = password.to_owned();
    let verified = tokio::task::spawn_blocking(move || verify_password(&candidate, &hash))
        .await
        .map_err(|e| AuthError::Infra(e.to_string()))?
        && user.is_some();
    let user = match user {
        Some(u) if verified && !u.disabled => u,
        _ => return Err(AuthError::InvalidCredentials),
    };
    let mut random = [0u8; TOKEN_RANDOM_BYTES];
    rand::fill(&mut random);
    let token = format!("{}.{}", tenant, base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random));
    let session = AdminSession {
        tenant_id: tenant.clone(),
        username: user.username,
        role: user.role,
        expires_at: Utc::now() + Duration::hours(SESSION_TTL_HOURS),
    };
    let shard = app.router.route(tenant)?;
    if !shard.admins.create_session(&token_hash(&token), &session, &user.password_hash).await? {
        return Err(AuthError::InvalidCredentials);
    }
    Ok((token, session))
}

/// The live session behind a bearer token, if any.
pub async fn authenticate(app: &App, token: &str) -> Result<Option<AdminSession>, AuthError> {
    let Some(tenant) = token_tenant(token) else { return Ok(None) };
    let Ok(shard) = app.router.route(&tenant) else { return Ok(None) };
    let session = shard.admins.find_session(&token_hash(token)).await?;
    Ok(session.filter(|s| s.tenant_id == tenant && s.expires_at > Utc::now()))
}

pub async fn logout(app: &App, token: &str) -> Result<(), AuthError> {
    let Some(tenant) = token_tenant(token) else { return Ok(()) };
    let shard = app.router.route(&tenant)?;
    shard.admins.delete_session(&token_hash(token)).await?;
    Ok(())
}

/// A valid Argon2id hash of a random password, for constant-work misses.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$kBn0cZzqOkq8TLnVq2w0S0o1rOOfdQhcbyaJ0Y0c1rU";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("wrong horse battery", &h));
        assert!(hash_password("short").is_err());
        assert!(hash_password(&"p".repeat(PASSWORD_LEN_MAX + 1)).is_err());
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
    }

    #[test]
    fn tokens_name_their_tenant() {
        assert_eq!(token_tenant("acme.abc").unwrap().as_str(), "acme");
        assert!(token_tenant("nodot").is_none());
        assert!(token_tenant(&format!("acme.{}", "a".repeat(TOKEN_LEN_MAX))).is_none());
    }
}
