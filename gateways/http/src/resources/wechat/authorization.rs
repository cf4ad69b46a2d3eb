//! The third-party platform authorization start (owner only, tag `wechat`):
//! the page a merchant opens to authorize an official account.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use tracing::instrument;
use utoipa::ToSchema;
use wxcm_commands::wechat as uc;

use super::{outbound, tenant_state};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, Authorized};
use crate::permissions::perm;
use crate::state::AppState;

/// Longest `redirect_uri` accepted.
pub const REDIRECT_URI_BYTES_MAX: usize = 1024;

/// Where WeChat sends the merchant back after the authorization page.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationBody {
    #[schema(value_type = crate::doc::RedirectUri)]
    pub redirect_uri: String,
}

impl AuthorizationBody {
    pub fn validate(&self) -> Result<&str, ApiError> {
        let uri = self.redirect_uri.as_str();
        // Printable ASCII only (WeChat takes it percent-encoded), so bytes are characters, as documented.
        let rest = uri.strip_prefix("https://").or_else(|| uri.strip_prefix("http://"));
        let ok = uri.len() <= REDIRECT_URI_BYTES_MAX
            && rest.is_some_and(|r| !r.is_empty())
            && uri.bytes().all(|b| b.is_ascii_graphic());
        if !ok {
            return Err(ApiError::invalid(
                "invalid_redirect_uri",
                "redirect_uri must be an http(s) URL of at most 1024 printable ASCII characters",
            ));
        }
        Ok(uri)
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuthorizationDto {
    /// The page the merchant opens to authorize an official account.
    pub authorization_url: String,
    /// Seconds the URL stays usable.
    pub expires_in: i64,
}

/// Starts a third-party platform authorization (owner only): the URL the merchant opens.
#[utoipa::path(post, path = "/admin/api/v1/wechat/component/authorizations", tag = "wechat",
    security(("bearer" = [])),
    request_body = AuthorizationBody,
    responses(
        (status = 200, description = "The authorization page", body = AuthorizationDto),
        (status = 400, description = "`malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`tenant_not_found`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_redirect_uri`, `wechat_rejected`", body = ErrorBody),
        (status = 502, description = "`wechat_unavailable`", body = ErrorBody),
        (status = 503, description = "`wechat_not_configured` (no third-party platform)", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username))]
pub async fn start_authorization(
    State(state): State<AppState>,
    auth: Authorized<perm::TenantSettings>,
    body: ApiJson<AuthorizationBody>,
) -> Result<Json<AuthorizationDto>, ApiError> {
    let redirect_uri = body.0.validate()?;
    let tenant = &auth.session.tenant_id;
    let shard = state.app.router.route(tenant)?;
    tenant_state(&shard, tenant).await?;
    let start = outbound(&state)?.start_authorization(redirect_uri).await?;
    uc::save_auth_request(&state.app, tenant, &start.pre_auth_code).await?;
    tracing::info!("third-party authorization started");
    Ok(Json(AuthorizationDto { authorization_url: start.authorization_url, expires_in: start.expires_in_s }))
}
