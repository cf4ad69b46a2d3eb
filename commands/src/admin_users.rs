//! Admin user management (the owner's, at the edge) and each user's own
//! password.
//!
//! Rules, decided by [`decide`] and applied by the `AdminDirectory` port in one
//! transaction with the user's row and the tenant's active owners locked:
//! - a tenant keeps at least one active owner (no disable or demotion of the
//!   last one, however many owners race);
//! - disabling a user, changing its role or its password deletes all its
//!   sessions in that transaction, so its next request with an old token is 401;
//! - every write takes an idempotency key, claimed in that transaction: the
//!   same key and request replay the first answer, another request is refused.
//!   Passwords are never part of a request's fingerprint (a stored unsalted
//!   digest of one would be an offline guessing target), so a retry that only
//!   changes the password replays the first answer.

use serde::Serialize;
use wxcm_domain::{IdempotencyKey, TenantId};

use crate::auth::{self, AuthError};
use crate::executor::request_hash;
use crate::ports::{
    AdminRefusal, AdminRequest, AdminUser, AdminUserView, AdminWrite, App, PortError, Role, RouteError,
};

/// Admin users per tenant (the list is answered whole).
pub const ADMIN_USERS_MAX: u32 = 500;

#[derive(Debug, thiserror::Error)]
pub enum AdminUserError {
    #[error("{0}")]
    InvalidUsername(String),
    #[error("{0}")]
    InvalidPassword(String),
    #[error("admin user not found")]
    NotFound,
    #[error("username already exists")]
    UsernameTaken,
    #[error("the tenant has {ADMIN_USERS_MAX} admin users, the most it may have")]
    TooManyUsers,
    #[error("the tenant must keep one active owner")]
    LastOwner,
    /// The current password did not verify (or changed meanwhile).
    #[error("the current password is wrong")]
    WrongPassword,
    #[error("idempotency key reused with a different request")]
    IdempotencyMismatch,
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error("infrastructure failure: {0}")]
    Infra(String),
    /// The database or broker is unreachable for now; a write's outcome is unknown.
    #[error("infrastructure unavailable: {0}")]
    Unavailable(String),
}

impl From<PortError> for AdminUserError {
    fn from(e: PortError) -> Self {
        if e.is_transient() {
            AdminUserError::Unavailable(e.to_string())
        } else {
            AdminUserError::Infra(e.to_string())
        }
    }
}

impl From<AuthError> for AdminUserError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Infra(detail) => AdminUserError::Infra(detail),
            AuthError::Unavailable(detail) => AdminUserError::Unavailable(detail),
            AuthError::Route(r) => AdminUserError::Route(r),
            AuthError::UsernameTaken => AdminUserError::UsernameTaken,
            // `hash_password` is the only source of `Invalid` here.
            AuthError::Invalid(message) => AdminUserError::InvalidPassword(message),
            AuthError::InvalidCredentials => AdminUserError::WrongPassword,
        }
    }
}

/// A valid admin username (`auth::validate_username`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Username(String);

impl Username {
    pub fn parse(s: &str) -> Result<Self, AdminUserError> {
        auth::validate_username(s).map_err(|e| AdminUserError::InvalidUsername(e.to_string()))?;
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Username {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One change to an existing user. `Debug` leaves out password hashes.
#[derive(Clone, PartialEq, Eq)]
pub enum AdminUserChange {
    Role(Role),
    Disabled(bool),
    /// A new Argon2id hash. `expected`: the hash the current password was
    /// verified against (a user's own change), which must still be stored.
    Password {
        hash: String,
        expected: Option<String>,
    },
}

impl std::fmt::Debug for AdminUserChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminUserChange::Role(role) => f.debug_tuple("Role").field(role).finish(),
            AdminUserChange::Disabled(disabled) => f.debug_tuple("Disabled").field(disabled).finish(),
            AdminUserChange::Password { .. } => f.write_str("Password { .. }"),
        }
    }
}

impl AdminUserChange {
    /// Whether the port must lock and count the tenant's active owners.
    pub fn may_remove_an_owner(&self) -> bool {
        matches!(self, AdminUserChange::Role(_) | AdminUserChange::Disabled(true))
    }
}

/// The user's row after a change, and whether its sessions end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub role: Role,
    pub disabled: bool,
    /// A new password hash to store.
    pub password_hash: Option<String>,
    pub ends_sessions: bool,
}

/// Decides `change` on `user` (its locked row) given the tenant's active
/// owners (the user included if it is one; counted under lock when
/// [`AdminUserChange::may_remove_an_owner`]).
pub fn decide(user: &AdminUser, change: &AdminUserChange, active_owners: usize) -> Result<Decision, AdminRefusal> {
    let mut next = Decision { role: user.role, disabled: user.disabled, password_hash: None, ends_sessions: false };
    match change {
        AdminUserChange::Role(role) => {
            next.role = *role;
            next.ends_sessions = *role != user.role;
        }
        AdminUserChange::Disabled(disabled) => {
            next.disabled = *disabled;
            next.ends_sessions = *disabled;
        }
        AdminUserChange::Password { hash, expected } => {
            if expected.as_ref().is_some_and(|e| *e != user.password_hash) {
                return Err(AdminRefusal::PasswordChanged);
            }
            next.password_hash = Some(hash.clone());
            next.ends_sessions = true;
        }
    }
    let active_owner = |role: Role, disabled: bool| role == Role::Owner && !disabled;
    if active_owner(user.role, user.disabled) && !active_owner(next.role, next.disabled) && active_owners <= 1 {
        return Err(AdminRefusal::LastOwner);
    }
    Ok(next)
}

/// What a write asks, as idempotency fingerprints it (no passwords).
#[derive(Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Fingerprint<'a> {
    Create { username: &'a str, role: Role },
    SetRole { username: &'a str, role: Role },
    SetDisabled { username: &'a str, disabled: bool },
    ResetPassword { username: &'a str },
    OwnPassword { username: &'a str },
}

fn admin_request(tenant: &TenantId, key: IdempotencyKey, asked: &Fingerprint<'_>) -> Result<AdminRequest, PortError> {
    let request_hash = request_hash("admin_user", tenant.as_str(), asked)?;
    Ok(AdminRequest { tenant_id: tenant.clone(), key, request_hash })
}

/// The user as a write left it, and whether the write was replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub user: AdminUserView,
    pub replayed: bool,
}

fn written(write: AdminWrite) -> Result<Written, AdminUserError> {
    match write {
        AdminWrite::Applied(user) => Ok(Written { user, replayed: false }),
        AdminWrite::Replayed(user) => Ok(Written { user, replayed: true }),
        AdminWrite::Refused(refusal) => Err(match refusal {
            AdminRefusal::NotFound => AdminUserError::NotFound,
            AdminRefusal::UsernameTaken => AdminUserError::UsernameTaken,
            AdminRefusal::TooManyUsers => AdminUserError::TooManyUsers,
            AdminRefusal::LastOwner => AdminUserError::LastOwner,
            AdminRefusal::PasswordChanged => AdminUserError::WrongPassword,
            AdminRefusal::KeyReused => AdminUserError::IdempotencyMismatch,
        }),
    }
}

pub async fn list(app: &App, tenant: &TenantId) -> Result<Vec<AdminUserView>, AdminUserError> {
    let shard = app.router.route(tenant)?;
    Ok(shard.admins.list_users(tenant, ADMIN_USERS_MAX).await?)
}

/// Creates an active user (password rules and Argon2id as `auth::create_admin`).
pub async fn create(
    app: &App,
    tenant: &TenantId,
    key: IdempotencyKey,
    username: &Username,
    password: &str,
    role: Role,
) -> Result<Written, AdminUserError> {
    auth::validate_password(password)?;
    let shard = app.router.route(tenant)?;
    let request = admin_request(tenant, key, &Fingerprint::Create { username: username.as_str(), role })?;
    let password_hash = auth::hash_password_off_thread(password).await?;
    let user = AdminUser {
        tenant_id: tenant.clone(),
        username: username.as_str().to_owned(),
        password_hash,
        role,
        disabled: false,
    };
    written(shard.admins.add_user(&user, &request, ADMIN_USERS_MAX).await?)
}

async fn change(
    app: &App,
    tenant: &TenantId,
    key: IdempotencyKey,
    asked: Fingerprint<'_>,
    username: &Username,
    change: AdminUserChange,
) -> Result<Written, AdminUserError> {
    let shard = app.router.route(tenant)?;
    let request = admin_request(tenant, key, &asked)?;
    written(shard.admins.change_user(&request, username.as_str(), &change).await?)
}

/// Changes a user's role; a different role ends its sessions.
pub async fn set_role(
    app: &App,
    tenant: &TenantId,
    key: IdempotencyKey,
    username: &Username,
    role: Role,
) -> Result<Written, AdminUserError> {
    let asked = Fingerprint::SetRole { username: username.as_str(), role };
    change(app, tenant, key, asked, username, AdminUserChange::Role(role)).await
}

/// Disables (ending its sessions; it can no longer sign in) or enables a user.
pub async fn set_disabled(
    app: &App,
    tenant: &TenantId,
    key: IdempotencyKey,
    username: &Username,
    disabled: bool,
) -> Result<Written, AdminUserError> {
    let asked = Fingerprint::SetDisabled { username: username.as_str(), disabled };
    change(app, tenant, key, asked, username, AdminUserChange::Disabled(disabled)).await
}

/// Sets a user's password without the current one (the owner's reset); ends its sessions.
pub async fn reset_password(
    app: &App,
    tenant: &TenantId,
    key: IdempotencyKey,
    username: &Username,
    new_password: &str,
) -> Result<Written, AdminUserError> {
    auth::validate_password(new_password)?;
    app.router.route(tenant)?;
    let hash = auth::hash_password_off_thread(new_password).await?;
    let asked = Fingerprint::ResetPassword { username: username.as_str() };
    change(app, tenant, key, asked, username, AdminUserChange::Password { hash, expected: None }).await
}

/// A user changes its own password, proving the current one; every session
/// of the user ends, the caller's too (it signs in again with the new one).
pub async fn change_own_password(
    app: &App,
    tenant: &TenantId,
    key: IdempotencyKey,
    username: &Username,
    current_password: &str,
    new_password: &str,
) -> Result<Written, AdminUserError> {
    auth::validate_password(new_password)?;
    let shard = app.router.route(tenant)?;
    let request = admin_request(tenant, key, &Fingerprint::OwnPassword { username: username.as_str() })?;
    // A retry after success would fail the check below (the current password
    // is the new one by then): answer it from the key first.
    if let Some(earlier) = shard.admins.find_request(&request).await? {
        return written(earlier);
    }
    let user = shard.admins.find_user(tenant, username.as_str()).await?.ok_or(AdminUserError::NotFound)?;
    // Bounded like login's: Argon2 work is per byte.
    if current_password.len() > auth::PASSWORD_LEN_MAX * 4
        || !auth::verify_password_off_thread(current_password, &user.password_hash).await?
    {
        return Err(AdminUserError::WrongPassword);
    }
    let hash = auth::hash_password_off_thread(new_password).await?;
    let change = AdminUserChange::Password { hash, expected: Some(user.password_hash) };
    written(shard.admins.change_user(&request, username.as_str(), &change).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(role: Role, disabled: bool) -> AdminUser {
        AdminUser {
            tenant_id: TenantId::parse("acme").unwrap(),
            username: "u".into(),
            password_hash: "old-hash".into(),
            role,
            disabled,
        }
    }

    fn password(expected: Option<&str>) -> AdminUserChange {
        AdminUserChange::Password { hash: "new-hash".into(), expected: expected.map(str::to_owned) }
    }

    #[test]
    fn the_last_active_owner_is_neither_disabled_nor_demoted() {
        let owner = user(Role::Owner, false);
        assert_eq!(decide(&owner, &AdminUserChange::Disabled(true), 1), Err(AdminRefusal::LastOwner));
        assert_eq!(decide(&owner, &AdminUserChange::Role(Role::Manager), 1), Err(AdminRefusal::LastOwner));
        // With another active owner both are fine, and end the sessions.
        assert!(decide(&owner, &AdminUserChange::Disabled(true), 2).unwrap().ends_sessions);
        assert_eq!(decide(&owner, &AdminUserChange::Role(Role::Staff), 2).unwrap().role, Role::Staff);
        // What keeps it an owner is always allowed.
        assert!(decide(&owner, &AdminUserChange::Role(Role::Owner), 1).is_ok());
        assert!(decide(&owner, &password(None), 1).is_ok());
        assert!(decide(&owner, &AdminUserChange::Disabled(false), 1).is_ok());
    }

    #[test]
    fn inactive_owners_and_other_roles_do_not_count() {
        // A disabled owner is not an active one: demoting it never leaves the tenant without one.
        assert!(decide(&user(Role::Owner, true), &AdminUserChange::Role(Role::Staff), 1).is_ok());
        assert!(decide(&user(Role::Manager, false), &AdminUserChange::Disabled(true), 0).is_ok());
        // Enabling or promoting adds an owner.
        assert!(decide(&user(Role::Staff, false), &AdminUserChange::Role(Role::Owner), 1).is_ok());
    }

    #[test]
    fn what_ends_sessions() {
        let staff = user(Role::Staff, false);
        let ends = |change: AdminUserChange| decide(&staff, &change, 1).unwrap().ends_sessions;
        assert!(ends(AdminUserChange::Disabled(true)));
        assert!(ends(AdminUserChange::Role(Role::Manager)));
        assert!(ends(password(None)));
        assert!(ends(password(Some("old-hash"))));
        assert!(!ends(AdminUserChange::Role(Role::Staff)), "the same role changes nothing");
        assert!(!ends(AdminUserChange::Disabled(false)));
    }

    #[test]
    fn a_password_changed_since_verification_is_refused() {
        let staff = user(Role::Staff, false);
        assert_eq!(decide(&staff, &password(Some("other-hash")), 1), Err(AdminRefusal::PasswordChanged));
        assert_eq!(
            decide(&staff, &password(Some("old-hash")), 1).map(|d| d.password_hash),
            Ok(Some("new-hash".into()))
        );
    }

    #[test]
    fn fingerprints_leave_passwords_out_and_tell_requests_apart() {
        let tenant = TenantId::parse("acme").unwrap();
        let key = || IdempotencyKey::parse("key-00000001").unwrap();
        let hash = |asked: Fingerprint<'_>| admin_request(&tenant, key(), &asked).unwrap().request_hash;
        let role = hash(Fingerprint::SetRole { username: "ann", role: Role::Staff });
        assert_eq!(role, hash(Fingerprint::SetRole { username: "ann", role: Role::Staff }));
        assert_ne!(role, hash(Fingerprint::SetRole { username: "ann", role: Role::Manager }));
        assert_ne!(role, hash(Fingerprint::SetRole { username: "bob", role: Role::Staff }));
        assert_ne!(role, hash(Fingerprint::Create { username: "ann", role: Role::Staff }));
        let asked = serde_json::to_string(&Fingerprint::ResetPassword { username: "ann" }).unwrap();
        assert_eq!(asked, r#"{"op":"reset_password","username":"ann"}"#);
    }

    #[test]
    fn usernames_are_validated_and_changes_redact_hashes() {
        assert!(Username::parse("ann.lee@acme").is_ok());
        assert!(matches!(Username::parse("ann lee"), Err(AdminUserError::InvalidUsername(_))));
        assert!(Username::parse(&"u".repeat(auth::USERNAME_LEN_MAX)).is_ok());
        assert!(Username::parse(&"u".repeat(auth::USERNAME_LEN_MAX + 1)).is_err());
        assert_eq!(format!("{:?}", password(Some("old-hash"))), "Password { .. }");
    }
}
