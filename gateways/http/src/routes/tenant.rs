//! The session's tenant: its settings without secrets, and binding official accounts.

use axum::extract::State;
use axum::Json;
use tracing::instrument;
use wxcm_commands::tenants;
use wxcm_domain::AppId;

use crate::dto::{AccountBody, TenantDto};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, Authorized, Correlation, IdempotencyHeader};
use crate::permissions::perm;
use crate::state::AppState;

/// The session's tenant. Secrets are never returned, only whether they are set.
#[utoipa::path(get, path = "/admin/api/v1/tenant", tag = "tenant",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The tenant, without secrets", body = TenantDto),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`tenant_not_found`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username))]
pub async fn get_tenant(
    State(state): State<AppState>,
    auth: Authorized<perm::TenantRead>,
) -> Result<Json<TenantDto>, ApiError> {
    Ok(Json(tenants::get(&state.app, &auth.session.tenant_id).await?.into()))
}

/// Binds an official account, or replaces its settings (owner only).
#[utoipa::path(put, path = "/admin/api/v1/tenant/official-accounts/{appid}", tag = "tenant",
    security(("bearer" = [])),
    params(("appid" = String, Path, description = "`wx` followed by 16 hex digits"),
        ("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters")),
    request_body = AccountBody,
    responses(
        (status = 200, description = "The tenant, without secrets", body = TenantDto),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `invalid_appid`, `malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`tenant_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`, `too_many_accounts`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_account`, `invalid_name`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username, appid = %appid.0))]
pub async fn bind_official_account(
    State(state): State<AppState>,
    auth: Authorized<perm::TenantSettings>,
    key: IdempotencyHeader,
    correlation: Correlation,
    appid: ApiPath<AppId>,
    body: ApiJson<AccountBody>,
) -> Result<Json<TenantDto>, ApiError> {
    let input = body.0.into_input(&appid.0);
    let ctx = auth.context(key.0, correlation);
    let view = tenants::bind_account(&state.app, &auth.session.tenant_id, input, auth.actor(), &ctx).await?;
    tracing::info!("official account bound");
    Ok(Json(view.into()))
}
