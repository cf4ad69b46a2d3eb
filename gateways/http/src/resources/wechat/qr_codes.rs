//! Scene QR codes: created through WeChat, kept with their landing and follow
//! counts (tag `wechat`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::instrument;
use utoipa::ToSchema;
use wxcm_commands::wechat::{self as uc, SceneQrCode};
use wxcm_domain::AppId;

use super::{account_mode, outbound, tenant_state};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, Authorized};
use crate::permissions::perm;
use crate::state::AppState;

/// WeChat's limit on `scene_str`.
pub const SCENE_LEN_MAX: usize = 64;
pub const QR_NAME_LEN_MAX: usize = 100;
/// Temporary codes live 60 s ..= 30 days.
pub const QR_EXPIRE_SECONDS_MIN: u32 = 60;
pub const QR_EXPIRE_SECONDS_MAX: u32 = 2_592_000;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QrCodeBody {
    /// The official account bound to the tenant.
    #[schema(value_type = crate::doc::OfficialAccountAppId)]
    pub appid: String,
    /// Reported back in `qrscene_<scene>`.
    #[schema(value_type = crate::doc::QrScene)]
    pub scene: String,
    /// A label for the admin.
    #[schema(value_type = Option<crate::doc::Name100>)]
    pub name: Option<String>,
    /// Permanent codes never expire (WeChat caps their number per account).
    #[serde(default)]
    pub permanent: bool,
    /// Lifetime of a temporary code, 60..=2592000 s; required unless permanent.
    #[schema(minimum = 60, maximum = 2592000)]
    pub expire_seconds: Option<u32>,
}

/// A validated QR request: appid, scene, name, lifetime (`None`: permanent).
pub struct QrRequest {
    pub appid: AppId,
    pub scene: String,
    pub name: Option<String>,
    pub expire_seconds: Option<u32>,
}

impl QrCodeBody {
    pub fn validate(self) -> Result<QrRequest, ApiError> {
        let appid = AppId::parse(&self.appid).map_err(|e| ApiError::invalid("invalid_appid", e.to_string()))?;
        let scene_ok = !self.scene.is_empty()
            && self.scene.len() <= SCENE_LEN_MAX
            && self.scene.bytes().all(|b| b.is_ascii_graphic());
        if !scene_ok {
            return Err(ApiError::invalid(
                "invalid_scene",
                format!("scene must be 1..={SCENE_LEN_MAX} printable ASCII characters without spaces"),
            ));
        }
        if let Some(name) = &self.name {
            if name.trim().is_empty() || name.chars().count() > QR_NAME_LEN_MAX || name.chars().any(char::is_control) {
                return Err(ApiError::invalid(
                    "invalid_name",
                    format!("name must be 1..={QR_NAME_LEN_MAX} characters without control characters"),
                ));
            }
        }
        let expire_seconds = match (self.permanent, self.expire_seconds) {
            (true, None) => None,
            (true, Some(_)) => {
                return Err(ApiError::invalid("invalid_expiry", "permanent codes take no expire_seconds"));
            }
            (false, Some(s)) if (QR_EXPIRE_SECONDS_MIN..=QR_EXPIRE_SECONDS_MAX).contains(&s) => Some(s),
            (false, _) => {
                return Err(ApiError::invalid(
                    "invalid_expiry",
                    format!("temporary codes need expire_seconds in {QR_EXPIRE_SECONDS_MIN}..={QR_EXPIRE_SECONDS_MAX}"),
                ));
            }
        };
        Ok(QrRequest { appid, scene: self.scene, name: self.name, expire_seconds })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QrCodeDto {
    pub appid: String,
    pub scene: String,
    pub name: Option<String>,
    pub permanent: bool,
    pub ticket: Option<String>,
    /// The URL the QR code encodes.
    pub url: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// Scans by followers and follows through the code.
    pub landings: i64,
    /// Follows through the code.
    pub follows: i64,
}

impl From<SceneQrCode> for QrCodeDto {
    fn from(q: SceneQrCode) -> Self {
        Self {
            appid: q.appid.to_string(),
            scene: q.scene,
            name: q.name,
            permanent: q.permanent,
            ticket: q.ticket,
            url: q.url,
            expires_at: q.expires_at,
            created_at: q.created_at,
            landings: q.landings,
            follows: q.follows,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QrCodeList {
    pub items: Vec<QrCodeDto>,
}

/// Creates a scene QR code through WeChat and keeps it (with its statistics).
#[utoipa::path(post, path = "/admin/api/v1/wechat/qrcodes", tag = "wechat",
    security(("bearer" = [])),
    request_body = QrCodeBody,
    responses(
        (status = 201, description = "Created at WeChat and saved", body = QrCodeDto),
        (status = 400, description = "`malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`tenant_not_found`, `account_not_bound`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_appid`, `invalid_scene`, `invalid_name`, `invalid_expiry`, `wechat_rejected`", body = ErrorBody),
        (status = 429, description = "`wechat_quota_exhausted`", body = ErrorBody),
        (status = 502, description = "`wechat_unavailable`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username))]
pub async fn create_qr_code(
    State(state): State<AppState>,
    auth: Authorized<perm::WechatSettings>,
    body: ApiJson<QrCodeBody>,
) -> Result<(StatusCode, Json<QrCodeDto>), ApiError> {
    let request = body.0.validate()?;
    let tenant = &auth.session.tenant_id;
    let shard = state.app.router.route(tenant)?;
    let mode = account_mode(&tenant_state(&shard, tenant).await?, &request.appid)?;
    let outbound = outbound(&state)?;
    let created = outbound.create_qr_code(&request.appid, mode, &request.scene, request.expire_seconds).await?;
    let now = state.app.clock.now();
    let qr = SceneQrCode {
        tenant: tenant.clone(),
        appid: request.appid.clone(),
        scene: request.scene,
        name: request.name,
        permanent: request.expire_seconds.is_none(),
        ticket: Some(created.ticket),
        url: Some(created.url),
        expires_at: request
            .expire_seconds
            .map(|requested| now + chrono::Duration::seconds(created.expire_seconds.unwrap_or(i64::from(requested)))),
        created_at: now,
        landings: 0,
        follows: 0,
    };
    shard.wechat.save_scene(&qr).await?;
    tracing::info!(appid = %qr.appid, scene = %qr.scene, permanent = qr.permanent, "scene QR code created");
    Ok((StatusCode::CREATED, Json(qr.into())))
}

/// The tenant's scene QR codes with their landing and follow counts (newest first, at most 500).
#[utoipa::path(get, path = "/admin/api/v1/wechat/qrcodes", tag = "wechat",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The codes", body = QrCodeList),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`tenant_not_found`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username))]
pub async fn list_qr_codes(
    State(state): State<AppState>,
    auth: Authorized<perm::WechatRead>,
) -> Result<Json<QrCodeList>, ApiError> {
    let items = uc::list_scenes(&state.app, &auth.session.tenant_id).await?;
    Ok(Json(QrCodeList { items: items.into_iter().map(Into::into).collect() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qr(scene: &str, permanent: bool, expire_seconds: Option<u32>) -> Result<QrRequest, ApiError> {
        QrCodeBody { appid: "wx0123456789abcdef".into(), scene: scene.into(), name: None, permanent, expire_seconds }
            .validate()
    }

    #[test]
    fn qr_requests_are_bounded() {
        assert_eq!(qr("poster-1", false, Some(60)).unwrap().expire_seconds, Some(60));
        assert_eq!(qr(&"s".repeat(64), true, None).unwrap().expire_seconds, None);
        assert_eq!(qr(&"s".repeat(65), true, None).err().unwrap().code(), "invalid_scene");
        assert_eq!(qr("", true, None).err().unwrap().code(), "invalid_scene");
        assert_eq!(qr("a b", true, None).err().unwrap().code(), "invalid_scene");
        assert_eq!(qr("s", false, Some(59)).err().unwrap().code(), "invalid_expiry");
        assert!(qr("s", false, Some(2_592_000)).is_ok());
        assert_eq!(qr("s", false, Some(2_592_001)).err().unwrap().code(), "invalid_expiry");
        assert_eq!(qr("s", false, None).err().unwrap().code(), "invalid_expiry");
        assert_eq!(qr("s", true, Some(60)).err().unwrap().code(), "invalid_expiry");
    }
}
