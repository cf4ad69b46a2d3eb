//! The tenant's admin users (tag `admin-users`): the owner lists, creates,
//! changes roles, disables, enables and resets passwords
//! (`/admin/api/v1/admin-users`); every user changes its own password
//! (`/admin/api/v1/me/password`). A disable, a role change and a new password
//! end the user's sessions at once (`wxcm_commands::admin_users`). Passwords
//! are never logged or returned.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::instrument;
use utoipa::ToSchema;
use wxcm_commands::admin_users::{self, Username, Written};
use wxcm_commands::ports::{AdminUserView, Role};

use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, Authorized, IdempotencyHeader, IDEMPOTENT_REPLAYED_HEADER};
use crate::permissions::perm;
use crate::ratelimit::retry_after_secs;
use crate::state::AppState;

// ---------- bodies and answers ----------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AdminRole {
    Owner,
    Manager,
    Staff,
    Auditor,
}

impl From<AdminRole> for Role {
    fn from(r: AdminRole) -> Self {
        match r {
            AdminRole::Owner => Role::Owner,
            AdminRole::Manager => Role::Manager,
            AdminRole::Staff => Role::Staff,
            AdminRole::Auditor => Role::Auditor,
        }
    }
}

impl From<Role> for AdminRole {
    fn from(r: Role) -> Self {
        match r {
            Role::Owner => AdminRole::Owner,
            Role::Manager => AdminRole::Manager,
            Role::Staff => AdminRole::Staff,
            Role::Auditor => AdminRole::Auditor,
        }
    }
}

/// A new user. No `Debug`: it holds a password.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAdminUserBody {
    #[schema(example = "counter-1", min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_.@-]+$")]
    pub username: String,
    #[schema(format = Password, min_length = 10, max_length = 128)]
    pub password: String,
    pub role: AdminRole,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleBody {
    pub role: AdminRole,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordResetBody {
    #[schema(format = Password, min_length = 10, max_length = 128)]
    pub new_password: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OwnPasswordBody {
    #[schema(format = Password)]
    pub current_password: String,
    #[schema(format = Password, min_length = 10, max_length = 128)]
    pub new_password: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AdminUserDto {
    pub username: String,
    pub role: AdminRole,
    /// A disabled user cannot sign in and has no session.
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
}

impl From<AdminUserView> for AdminUserDto {
    fn from(v: AdminUserView) -> Self {
        Self { username: v.username, role: v.role.into(), disabled: v.disabled, created_at: v.created_at }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AdminUserList {
    /// Ordered by username; a tenant has at most 500 users.
    pub items: Vec<AdminUserDto>,
}

fn answer(status: StatusCode, written: Written) -> Response {
    let mut response = if status == StatusCode::NO_CONTENT {
        status.into_response()
    } else {
        (status, Json(AdminUserDto::from(written.user))).into_response()
    };
    if written.replayed {
        response.headers_mut().insert(IDEMPOTENT_REPLAYED_HEADER, HeaderValue::from_static("true"));
    }
    response
}

// ---------- handlers ----------

/// The tenant's admin users (owner only).
#[utoipa::path(get, path = "/admin/api/v1/admin-users", tag = "admin-users",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every user of the session's tenant", body = AdminUserList),
        (status = 403, description = "`forbidden`: only the owner manages users", body = ErrorBody),
        (status = 404, description = "`tenant_not_found`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username))]
pub async fn list_admin_users(
    State(state): State<AppState>,
    auth: Authorized<perm::AdminUsers>,
) -> Result<Json<AdminUserList>, ApiError> {
    let users = admin_users::list(&state.app, &auth.session.tenant_id).await?;
    Ok(Json(AdminUserList { items: users.into_iter().map(Into::into).collect() }))
}

/// Creates an active user (owner only).
#[utoipa::path(post, path = "/admin/api/v1/admin-users", tag = "admin-users",
    security(("bearer" = [])),
    params(("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters")),
    request_body = CreateAdminUserBody,
    responses(
        (status = 201, description = "Created (or a creation replayed)", body = AdminUserDto),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`tenant_not_found`", body = ErrorBody),
        (status = 409, description = "`username_taken`, `too_many_admin_users`, `idempotency_key_reused`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 422, description = "`invalid_body` (also an unknown role), `invalid_username`, `invalid_password`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username))]
pub async fn create_admin_user(
    State(state): State<AppState>,
    auth: Authorized<perm::AdminUsers>,
    key: IdempotencyHeader,
    body: ApiJson<CreateAdminUserBody>,
) -> Result<Response, ApiError> {
    let body = body.0;
    let username = Username::parse(&body.username)?;
    let role = Role::from(body.role);
    let tenant = &auth.session.tenant_id;
    let written = admin_users::create(&state.app, tenant, key.0, &username, &body.password, role).await?;
    tracing::info!(target_user = %username, role = role.as_str(), replayed = written.replayed, "admin user created");
    Ok(answer(StatusCode::CREATED, written))
}

/// Changes a user's role (owner only); a different role ends the user's sessions.
#[utoipa::path(put, path = "/admin/api/v1/admin-users/{username}/role", tag = "admin-users",
    security(("bearer" = [])),
    params(
        ("username" = crate::doc::AdminUsername, Path),
        ("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters"),
    ),
    request_body = RoleBody,
    responses(
        (status = 200, description = "The user with its role", body = AdminUserDto),
        (status = 400, description = "`invalid_username`, `invalid_path`, `idempotency_key_missing`, `idempotency_key_invalid`, `malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`admin_user_not_found` (also another tenant's), `tenant_not_found`", body = ErrorBody),
        (status = 409, description = "`last_owner`: the tenant's only active owner stays an owner; `idempotency_key_reused`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 422, description = "`invalid_body` (also an unknown role)", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username, target_user = %target.0))]
pub async fn set_admin_user_role(
    State(state): State<AppState>,
    auth: Authorized<perm::AdminUsers>,
    target: ApiPath<Username>,
    key: IdempotencyHeader,
    body: ApiJson<RoleBody>,
) -> Result<Response, ApiError> {
    let role = Role::from(body.0.role);
    let written = admin_users::set_role(&state.app, &auth.session.tenant_id, key.0, &target.0, role).await?;
    tracing::info!(role = role.as_str(), replayed = written.replayed, "admin user role set");
    Ok(answer(StatusCode::OK, written))
}

async fn set_disabled(
    state: &AppState,
    auth: &Authorized<perm::AdminUsers>,
    target: &Username,
    key: IdempotencyHeader,
    disabled: bool,
) -> Result<Response, ApiError> {
    let written = admin_users::set_disabled(&state.app, &auth.session.tenant_id, key.0, target, disabled).await?;
    tracing::info!(disabled, replayed = written.replayed, "admin user disabled flag set");
    Ok(answer(StatusCode::OK, written))
}

/// Disables a user (owner only): its sessions end at once and it can no longer sign in.
#[utoipa::path(post, path = "/admin/api/v1/admin-users/{username}/disable", tag = "admin-users",
    security(("bearer" = [])),
    params(
        ("username" = crate::doc::AdminUsername, Path),
        ("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters"),
    ),
    responses(
        (status = 200, description = "The user, disabled", body = AdminUserDto),
        (status = 400, description = "`invalid_username`, `invalid_path`, `idempotency_key_missing`, `idempotency_key_invalid`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`admin_user_not_found` (also another tenant's), `tenant_not_found`", body = ErrorBody),
        (status = 409, description = "`last_owner`: the tenant's only active owner stays enabled; `idempotency_key_reused`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username, target_user = %target.0))]
pub async fn disable_admin_user(
    State(state): State<AppState>,
    auth: Authorized<perm::AdminUsers>,
    target: ApiPath<Username>,
    key: IdempotencyHeader,
) -> Result<Response, ApiError> {
    set_disabled(&state, &auth, &target.0, key, true).await
}

/// Enables a disabled user (owner only); it signs in again with its password.
#[utoipa::path(post, path = "/admin/api/v1/admin-users/{username}/enable", tag = "admin-users",
    security(("bearer" = [])),
    params(
        ("username" = crate::doc::AdminUsername, Path),
        ("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters"),
    ),
    responses(
        (status = 200, description = "The user, enabled", body = AdminUserDto),
        (status = 400, description = "`invalid_username`, `invalid_path`, `idempotency_key_missing`, `idempotency_key_invalid`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`admin_user_not_found` (also another tenant's), `tenant_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username, target_user = %target.0))]
pub async fn enable_admin_user(
    State(state): State<AppState>,
    auth: Authorized<perm::AdminUsers>,
    target: ApiPath<Username>,
    key: IdempotencyHeader,
) -> Result<Response, ApiError> {
    set_disabled(&state, &auth, &target.0, key, false).await
}

/// Sets a user's password without the current one (owner only); the user's
/// sessions end at once. The password is not part of the idempotency
/// fingerprint: a retry with the same key replays the first answer.
#[utoipa::path(post, path = "/admin/api/v1/admin-users/{username}/password-reset", tag = "admin-users",
    security(("bearer" = [])),
    params(
        ("username" = crate::doc::AdminUsername, Path),
        ("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters"),
    ),
    request_body = PasswordResetBody,
    responses(
        (status = 204, description = "Password set, sessions ended"),
        (status = 400, description = "`invalid_username`, `invalid_path`, `idempotency_key_missing`, `idempotency_key_invalid`, `malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`admin_user_not_found` (also another tenant's), `tenant_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_password`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username, target_user = %target.0))]
pub async fn reset_admin_user_password(
    State(state): State<AppState>,
    auth: Authorized<perm::AdminUsers>,
    target: ApiPath<Username>,
    key: IdempotencyHeader,
    body: ApiJson<PasswordResetBody>,
) -> Result<Response, ApiError> {
    let tenant = &auth.session.tenant_id;
    let written = admin_users::reset_password(&state.app, tenant, key.0, &target.0, &body.0.new_password).await?;
    tracing::info!(replayed = written.replayed, "admin user password reset");
    Ok(answer(StatusCode::NO_CONTENT, written))
}

/// Changes the signed-in user's own password (any role), proving the current
/// one. Every session of the user ends, this one too: sign in again with the
/// new password. Wrong current passwords count against the login limit.
#[utoipa::path(put, path = "/admin/api/v1/me/password", tag = "admin-users",
    security(("bearer" = [])),
    params(("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters")),
    request_body = OwnPasswordBody,
    responses(
        (status = 204, description = "Password changed, every session of the user ended"),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `malformed_json`", body = ErrorBody),
        (status = 404, description = "`tenant_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`, `wrong_current_password` (`current_password` is not \
the user's password)", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_password` (the new one)", body = ErrorBody),
        (status = 429, description = "`rate_limited`: too many attempts for this user (shared with login); see `Retry-After`",
            body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username))]
pub async fn change_own_password(
    State(state): State<AppState>,
    auth: Authorized<perm::AnyRole>,
    key: IdempotencyHeader,
    body: ApiJson<OwnPasswordBody>,
) -> Result<Response, ApiError> {
    let body = body.0;
    let tenant = &auth.session.tenant_id;
    let username = Username::parse(&auth.session.username)?;
    state
        .login_limits
        .check_user(tenant.as_str(), username.as_str())
        .map_err(|wait| ApiError::RateLimited { retry_after_secs: retry_after_secs(wait) })?;
    let written = admin_users::change_own_password(
        &state.app,
        tenant,
        key.0,
        &username,
        &body.current_password,
        &body.new_password,
    )
    .await?;
    tracing::info!(replayed = written.replayed, "own password changed");
    Ok(answer(StatusCode::NO_CONTENT, written))
}
