//! The session's tenant: its settings without secrets, and binding official accounts.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::instrument;
use utoipa::ToSchema;
use wxcm_commands::tenants::{self, AccountBinding, AccountInput, AccountView, PayInput, TenantView};
use wxcm_domain::AppId;

use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, Authorized, Correlation, IdempotencyHeader};
use crate::permissions::perm;
use crate::state::AppState;

// ---------- bodies and answers ----------

/// An official account's settings; the appid is in the path. Secrets are
/// sealed before they are stored and are never returned.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountBody {
    #[schema(value_type = crate::doc::Name100)]
    pub name: String,
    #[schema(value_type = crate::doc::AccountSecret)]
    pub token: String,
    #[schema(value_type = crate::doc::EncodingAesKey)]
    pub encoding_aes_key: String,
    #[schema(value_type = crate::doc::AccountSecret)]
    pub app_secret: String,
    pub pay: Option<PayBody>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PayBody {
    #[schema(value_type = crate::doc::MchId)]
    pub mch_id: String,
    #[schema(value_type = Option<crate::doc::PayApiKey>)]
    pub api_v2_key: Option<String>,
    #[schema(value_type = Option<crate::doc::PayApiKey>)]
    pub api_v3_key: Option<String>,
    #[schema(value_type = Option<crate::doc::MerchantCertSerial>)]
    pub merchant_cert_serial: Option<String>,
    #[schema(value_type = Option<crate::doc::PrivateKeyPem>)]
    pub merchant_private_key: Option<String>,
}

impl AccountBody {
    pub fn into_input(self, appid: &AppId) -> AccountInput {
        AccountInput {
            appid: appid.to_string(),
            name: self.name,
            token: self.token,
            encoding_aes_key: self.encoding_aes_key,
            app_secret: self.app_secret,
            pay: self.pay.map(|p| PayInput {
                mch_id: p.mch_id,
                api_v2_key: p.api_v2_key,
                api_v3_key: p.api_v3_key,
                merchant_cert_serial: p.merchant_cert_serial,
                merchant_private_key: p.merchant_private_key,
            }),
        }
    }
}

/// How an official account is bound: `direct` (developer mode: the owner
/// entered its token, AES key and app secret with `PUT official-accounts/{appid}`)
/// or `component` (authorized to wxcm's third-party platform, which acts for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AccountBindingDto {
    Direct,
    Component,
}

/// An official account, however bound, without its secrets (mirrors
/// `commands::tenants::AccountView`): only whether each secret is set.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AccountDto {
    pub appid: String,
    pub binding: AccountBindingDto,
    /// The name given to a direct account; empty for a component account.
    pub name: String,
    pub has_token: bool,
    pub has_encoding_aes_key: bool,
    pub has_app_secret: bool,
    pub mch_id: Option<String>,
    pub has_pay_api_v2_key: bool,
    pub has_pay_api_v3_key: bool,
    /// Component accounts: when the latest authorization was recorded.
    pub authorized_at: Option<DateTime<Utc>>,
    /// Component accounts: whether the platform holds a refresh token for it.
    pub has_refresh_token: bool,
}

/// The session's tenant, never with secrets (mirrors `commands::tenants::TenantView`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TenantDto {
    pub tenant_id: String,
    pub name: String,
    pub created_at: Option<DateTime<Utc>>,
    /// Every official account of the tenant, bound directly or through the
    /// third-party platform, ordered by appid.
    pub official_accounts: Vec<AccountDto>,
    pub version: u64,
}

impl From<AccountView> for AccountDto {
    fn from(a: AccountView) -> Self {
        Self {
            appid: a.appid,
            binding: match a.binding {
                AccountBinding::Direct => AccountBindingDto::Direct,
                AccountBinding::Component => AccountBindingDto::Component,
            },
            name: a.name,
            has_token: a.has_token,
            has_encoding_aes_key: a.has_encoding_aes_key,
            has_app_secret: a.has_app_secret,
            mch_id: a.mch_id,
            has_pay_api_v2_key: a.has_pay_api_v2_key,
            has_pay_api_v3_key: a.has_pay_api_v3_key,
            authorized_at: a.authorized_at,
            has_refresh_token: a.has_refresh_token,
        }
    }
}

impl From<TenantView> for TenantDto {
    fn from(t: TenantView) -> Self {
        Self {
            tenant_id: t.tenant_id,
            name: t.name,
            created_at: t.created_at,
            official_accounts: t.official_accounts.into_iter().map(AccountDto::from).collect(),
            version: t.version,
        }
    }
}

// ---------- handlers ----------

/// The session's tenant with all its official accounts: those bound directly
/// (developer mode) and those authorized through the third-party platform,
/// each with its `binding`. Secrets are never returned, only whether they are set.
#[utoipa::path(get, path = "/admin/api/v1/tenant", tag = "tenant",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The tenant and every official account (`direct` and `component`), without secrets", body = TenantDto),
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
    params(("appid" = crate::doc::OfficialAccountAppId, Path),
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
