//! Login and logout. Login is rate limited per client address and per
//! (tenant, username), and refuses with the same 401 body whatever was wrong.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::instrument;
use utoipa::ToSchema;
use wxcm_commands::auth::{self, AuthError};
use wxcm_commands::ports::AdminSession;
use wxcm_domain::TenantId;

use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, Authorized, ClientIp};
use crate::permissions::perm;
use crate::ratelimit::retry_after_secs;
use crate::state::AppState;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    #[schema(example = "acme-cinema")]
    pub tenant_id: String,
    pub username: String,
    #[schema(format = Password)]
    pub password: String,
}

#[derive(Serialize, ToSchema)]
pub struct LoginResponse {
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
    pub expires_at: DateTime<Utc>,
    /// `owner`, `manager`, `staff` or `auditor`.
    pub role: String,
}

impl LoginResponse {
    pub fn new(token: String, session: &AdminSession) -> Self {
        Self { token, expires_at: session.expires_at, role: session.role.as_str().to_owned() }
    }
}

/// Exchanges credentials for a bearer token.
#[utoipa::path(post, path = "/admin/api/v1/login", tag = "session",
    request_body = LoginBody,
    responses(
        (status = 200, description = "Signed in", body = LoginResponse),
        (status = 400, description = "`malformed_json`", body = ErrorBody),
        (status = 401, description = "`invalid_credentials`: the same answer whether the tenant or user exists or not", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 422, description = "`invalid_body`", body = ErrorBody),
        (status = 429, description = "`rate_limited`: too many attempts from this client or for this user; see `Retry-After`",
            body = ErrorBody, headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ))]
#[instrument(skip_all, fields(client = ?ip.0, tenant = tracing::field::Empty))]
pub async fn login(
    State(state): State<AppState>,
    ip: ClientIp,
    body: ApiJson<LoginBody>,
) -> Result<impl IntoResponse, ApiError> {
    let body = body.0;
    state
        .login_limits
        .check_client(ip.0)
        .map_err(|wait| ApiError::RateLimited { retry_after_secs: retry_after_secs(wait) })?;
    let tenant = TenantId::parse(&body.tenant_id).map_err(|_| ApiError::InvalidCredentials)?;
    tracing::Span::current().record("tenant", tenant.as_str());
    auth::validate_username(&body.username).map_err(|_| ApiError::InvalidCredentials)?;
    state
        .login_limits
        .check_user(tenant.as_str(), &body.username)
        .map_err(|wait| ApiError::RateLimited { retry_after_secs: retry_after_secs(wait) })?;
    match auth::login(&state.app, &tenant, &body.username, &body.password).await {
        Ok((token, session)) => {
            tracing::info!(username = %session.username, role = session.role.as_str(), "signed in");
            let headers = [(header::CACHE_CONTROL, "no-store")];
            Ok((headers, Json(LoginResponse::new(token, &session))))
        }
        // Unknown tenants answer like wrong passwords.
        Err(AuthError::InvalidCredentials | AuthError::Invalid(_) | AuthError::Route(_) | AuthError::UsernameTaken) => {
            tracing::info!("login refused");
            Err(ApiError::InvalidCredentials)
        }
        Err(e @ (AuthError::Infra(_) | AuthError::Unavailable(_))) => Err(e.into()),
    }
}

/// Revokes the bearer token.
#[utoipa::path(post, path = "/admin/api/v1/logout", tag = "session",
    security(("bearer" = [])),
    responses((status = 204, description = "Signed out")))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username))]
pub async fn logout(State(state): State<AppState>, auth: Authorized<perm::AnyRole>) -> Result<StatusCode, ApiError> {
    state.sessions.revoke(auth.token()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The signed-in user as the consoles need it: who, which tenant, and what the
/// role may do (the same table every route checks).
#[derive(Serialize, ToSchema)]
pub struct SessionView {
    pub tenant_id: String,
    pub tenant_name: String,
    pub username: String,
    /// `owner`, `manager`, `staff` or `auditor`.
    pub role: String,
    pub expires_at: DateTime<Utc>,
    /// The permissions of the role, e.g. `report_read`, `cash_deposit`.
    pub permissions: Vec<&'static str>,
}

/// The signed-in user, the tenant's name and the role's permissions.
#[utoipa::path(get, path = "/admin/api/v1/session", tag = "session",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The session", body = SessionView),
        (status = 401, description = "`unauthorized`: no live session", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username))]
pub async fn current_session(
    State(state): State<AppState>,
    auth: Authorized<perm::AnyRole>,
) -> Result<impl IntoResponse, ApiError> {
    let session = &auth.session;
    let tenant = wxcm_commands::tenants::get(&state.app, &session.tenant_id).await?;
    let permissions = crate::permissions::Permission::ALL
        .into_iter()
        .filter(|p| crate::permissions::allowed(session.role, *p))
        .map(|p| p.as_str())
        .collect();
    let view = SessionView {
        tenant_id: session.tenant_id.to_string(),
        tenant_name: tenant.name,
        username: session.username.clone(),
        role: session.role.as_str().to_owned(),
        expires_at: session.expires_at,
        permissions,
    };
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(view)))
}
