//! Custom menus: checked against WeChat's own shape and limits when saved (so
//! a publish never fails on something we could have refused), published to
//! WeChat separately (tag `wechat`).

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::instrument;
use utoipa::ToSchema;
use wxcm_commands::wechat::StoredMenu;
use wxcm_domain::{AppId, TenantId};

use super::{account_mode, outbound, tenant_state};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, Authorized};
use crate::permissions::perm;
use crate::state::AppState;

pub const MENU_BUTTONS_MAX: usize = 3;
pub const MENU_SUB_BUTTONS_MAX: usize = 5;
pub const MENU_NAME_BYTES_MAX: usize = 16;
pub const MENU_SUB_NAME_BYTES_MAX: usize = 60;
pub const MENU_KEY_BYTES_MAX: usize = 128;
pub const MENU_URL_BYTES_MAX: usize = 1024;
/// Media ids, article ids, mini program appids and page paths.
pub const MENU_ID_BYTES_MAX: usize = 256;

/// Button types WeChat accepts in `menu/create`.
pub const MENU_TYPES: [&str; 12] = [
    "click",
    "view",
    "miniprogram",
    "scancode_push",
    "scancode_waitmsg",
    "pic_sysphoto",
    "pic_photo_or_album",
    "pic_weixin",
    "location_select",
    "media_id",
    "article_id",
    "article_view_limited",
];

/// One button: a leaf with a `type`, or a parent with `sub_button` (top level only; a parent has no
/// `type`). A leaf's `type` says which field it needs: `view` a `url`; `miniprogram` `url`, `appid`
/// and `pagepath`; `media_id` a `media_id`; `article_id` and `article_view_limited` an `article_id`;
/// the others a `key`. Lengths are in bytes of UTF-8 (characters of ASCII).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MenuButton {
    /// Not only whitespace, no control characters; ≤ 16 bytes at the top level, ≤ 60 in a sub-menu.
    #[schema(value_type = crate::doc::MenuName)]
    pub name: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::doc::MenuButtonType>)]
    pub kind: Option<String>,
    /// click and the event types: ≤ 128 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 128, pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]+$")]
    pub key: Option<String>,
    /// view and miniprogram (fallback page): http(s), ≤ 1024 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 1024, pattern = "^https?://[^\\x00-\\x1F\\x7F-\\x9F]*$")]
    pub url: Option<String>,
    /// miniprogram: ≤ 256 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 256, pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]+$")]
    pub appid: Option<String>,
    /// miniprogram: ≤ 256 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 256, pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]+$")]
    pub pagepath: Option<String>,
    /// ≤ 256 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 256, pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]+$")]
    pub media_id: Option<String>,
    /// ≤ 256 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 256, pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]+$")]
    pub article_id: Option<String>,
    /// 1..=5 buttons.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(no_recursion, min_items = 1, max_items = 5)]
    pub sub_button: Option<Vec<MenuButton>>,
}

/// WeChat's menu: 1..=3 buttons, each with up to 5 sub-buttons.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MenuBody {
    #[schema(min_items = 1, max_items = 3)]
    pub button: Vec<MenuButton>,
}

fn menu_error(message: String) -> ApiError {
    ApiError::invalid("invalid_menu", message)
}

fn bounded(at: &str, field: &str, value: &Option<String>, max: usize) -> Result<(), ApiError> {
    match value {
        Some(v) if v.is_empty() || v.len() > max || v.chars().any(char::is_control) => {
            Err(menu_error(format!("{at}: {field} must be 1..={max} bytes without control characters")))
        }
        _ => Ok(()),
    }
}

fn required(at: &str, field: &str, value: &Option<String>) -> Result<(), ApiError> {
    match value {
        Some(_) => Ok(()),
        None => Err(menu_error(format!("{at}: {field} is required for this type"))),
    }
}

impl MenuButton {
    fn validate(&self, at: &str, top_level: bool) -> Result<(), ApiError> {
        let name_max = if top_level { MENU_NAME_BYTES_MAX } else { MENU_SUB_NAME_BYTES_MAX };
        if self.name.trim().is_empty() || self.name.len() > name_max || self.name.chars().any(char::is_control) {
            return Err(menu_error(format!("{at}: name must be 1..={name_max} bytes")));
        }
        bounded(at, "key", &self.key, MENU_KEY_BYTES_MAX)?;
        bounded(at, "url", &self.url, MENU_URL_BYTES_MAX)?;
        for (field, value) in [
            ("appid", &self.appid),
            ("pagepath", &self.pagepath),
            ("media_id", &self.media_id),
            ("article_id", &self.article_id),
        ] {
            bounded(at, field, value, MENU_ID_BYTES_MAX)?;
        }
        if let Some(url) = &self.url {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(menu_error(format!("{at}: url must be http(s)")));
            }
        }
        if let Some(subs) = &self.sub_button {
            if !top_level {
                return Err(menu_error(format!("{at}: sub-menus do not nest")));
            }
            if self.kind.is_some() {
                return Err(menu_error(format!("{at}: a button with sub_button has no type")));
            }
            if subs.is_empty() || subs.len() > MENU_SUB_BUTTONS_MAX {
                return Err(menu_error(format!("{at}: 1..={MENU_SUB_BUTTONS_MAX} sub-buttons")));
            }
            for (i, sub) in subs.iter().enumerate() {
                sub.validate(&format!("{at}.sub_button[{i}]"), false)?;
            }
            return Ok(());
        }
        let Some(kind) = self.kind.as_deref() else {
            return Err(menu_error(format!("{at}: type or sub_button is required")));
        };
        match kind {
            "view" => required(at, "url", &self.url),
            "miniprogram" => {
                required(at, "url", &self.url)?;
                required(at, "appid", &self.appid)?;
                required(at, "pagepath", &self.pagepath)
            }
            "media_id" => required(at, "media_id", &self.media_id),
            "article_id" | "article_view_limited" => required(at, "article_id", &self.article_id),
            k if MENU_TYPES.contains(&k) => required(at, "key", &self.key),
            _ => Err(menu_error(format!("{at}: type must be one of {}", MENU_TYPES.join(", ")))),
        }
    }
}

impl MenuBody {
    /// The menu as WeChat's JSON, checked.
    pub fn validate(&self) -> Result<Value, ApiError> {
        if self.button.is_empty() || self.button.len() > MENU_BUTTONS_MAX {
            return Err(menu_error(format!("1..={MENU_BUTTONS_MAX} buttons")));
        }
        for (i, button) in self.button.iter().enumerate() {
            button.validate(&format!("button[{i}]"), true)?;
        }
        serde_json::to_value(self).map_err(|e| ApiError::internal("menu serialization", &e))
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MenuDto {
    pub appid: String,
    pub menu: MenuBody,
    pub updated_at: DateTime<Utc>,
    pub updated_by: String,
    /// When it was last published to WeChat; `null` if it never was.
    pub published_at: Option<DateTime<Utc>>,
}

impl MenuDto {
    pub fn from_stored(appid: &AppId, stored: StoredMenu) -> Result<Self, ApiError> {
        let menu = serde_json::from_value(stored.menu).map_err(|e| ApiError::internal("stored menu", &e))?;
        Ok(Self {
            appid: appid.to_string(),
            menu,
            updated_at: stored.updated_at,
            updated_by: stored.updated_by,
            published_at: stored.published_at,
        })
    }
}

async fn stored_menu(state: &AppState, tenant: &TenantId, appid: &AppId) -> Result<MenuDto, ApiError> {
    let shard = state.app.router.route(tenant)?;
    let stored = shard
        .wechat
        .menu(tenant, appid)
        .await?
        .ok_or_else(|| ApiError::not_found("menu_not_found", format!("no menu saved for {appid}")))?;
    MenuDto::from_stored(appid, stored)
}

/// The menu saved for an account, and when it was published.
#[utoipa::path(get, path = "/admin/api/v1/wechat/menus/{appid}", tag = "wechat",
    security(("bearer" = [])),
    params(("appid" = crate::doc::OfficialAccountAppId, Path)),
    responses(
        (status = 200, description = "The saved menu", body = MenuDto),
        (status = 400, description = "`invalid_appid`, `invalid_path`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`tenant_not_found`, `menu_not_found`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username, appid = %appid.0))]
pub async fn get_menu(
    State(state): State<AppState>,
    auth: Authorized<perm::WechatRead>,
    appid: ApiPath<AppId>,
) -> Result<Json<MenuDto>, ApiError> {
    Ok(Json(stored_menu(&state, &auth.session.tenant_id, &appid.0).await?))
}

/// Saves a menu (checked against WeChat's shape and limits); publish it separately.
#[utoipa::path(put, path = "/admin/api/v1/wechat/menus/{appid}", tag = "wechat",
    security(("bearer" = [])),
    params(("appid" = crate::doc::OfficialAccountAppId, Path)),
    request_body = MenuBody,
    responses(
        (status = 200, description = "Saved (not yet published)", body = MenuDto),
        (status = 400, description = "`invalid_appid`, `invalid_path`, `malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`tenant_not_found`, `account_not_bound`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_menu`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username, appid = %appid.0))]
pub async fn put_menu(
    State(state): State<AppState>,
    auth: Authorized<perm::WechatSettings>,
    appid: ApiPath<AppId>,
    body: ApiJson<MenuBody>,
) -> Result<Json<MenuDto>, ApiError> {
    let menu = body.0.validate()?;
    let tenant = &auth.session.tenant_id;
    let shard = state.app.router.route(tenant)?;
    account_mode(&tenant_state(&shard, tenant).await?, &appid.0)?;
    shard.wechat.save_menu(tenant, &appid.0, &menu, &auth.actor().label(), state.app.clock.now()).await?;
    tracing::info!("menu saved");
    Ok(Json(stored_menu(&state, tenant, &appid.0).await?))
}

/// Publishes the saved menu to WeChat (`menu/create`) and records when.
#[utoipa::path(post, path = "/admin/api/v1/wechat/menus/{appid}/publish", tag = "wechat",
    security(("bearer" = [])),
    params(("appid" = crate::doc::OfficialAccountAppId, Path)),
    responses(
        (status = 200, description = "Published", body = MenuDto),
        (status = 400, description = "`invalid_appid`, `invalid_path`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`tenant_not_found`, `account_not_bound`, `menu_not_found`", body = ErrorBody),
        (status = 422, description = "`wechat_rejected`", body = ErrorBody),
        (status = 429, description = "`wechat_quota_exhausted`", body = ErrorBody),
        (status = 502, description = "`wechat_unavailable`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username, appid = %appid.0))]
pub async fn publish_menu(
    State(state): State<AppState>,
    auth: Authorized<perm::WechatSettings>,
    appid: ApiPath<AppId>,
) -> Result<Json<MenuDto>, ApiError> {
    let tenant = &auth.session.tenant_id;
    let shard = state.app.router.route(tenant)?;
    let mode = account_mode(&tenant_state(&shard, tenant).await?, &appid.0)?;
    let menu = stored_menu(&state, tenant, &appid.0).await?;
    let json = serde_json::to_value(&menu.menu).map_err(|e| ApiError::internal("menu serialization", &e))?;
    outbound(&state)?.publish_menu(&appid.0, mode, &json).await?;
    shard.wechat.mark_menu_published(tenant, &appid.0, state.app.clock.now()).await?;
    tracing::info!("menu published");
    Ok(Json(stored_menu(&state, tenant, &appid.0).await?))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn menu(v: Value) -> Result<Value, ApiError> {
        serde_json::from_value::<MenuBody>(v).map_err(|e| ApiError::invalid("invalid_body", e.to_string()))?.validate()
    }

    fn code(r: Result<Value, ApiError>) -> String {
        r.err().map(|e| e.code().to_owned()).unwrap_or_default()
    }

    #[test]
    fn menus_follow_wechats_shape() {
        let ok = json!({"button": [
            {"type": "click", "name": "Points", "key": "POINTS"},
            {"name": "More", "sub_button": [
                {"type": "view", "name": "Site", "url": "https://example.com"},
                {"type": "miniprogram", "name": "App", "url": "https://example.com", "appid": "wx1", "pagepath": "p/i"},
                {"type": "scancode_push", "name": "Scan", "key": "S"}
            ]}
        ]});
        assert_eq!(menu(ok.clone()).unwrap(), ok);
        let click = json!({"type": "click", "name": "a", "key": "k"});
        let four = json!({"button": vec![click.clone(); 4]});
        assert_eq!(code(menu(four)), "invalid_menu");
        let six_subs = json!({"button": [{"name": "m", "sub_button": vec![click; 6]}]});
        assert_eq!(code(menu(six_subs)), "invalid_menu");
        let long_name = json!({"button": [{"type": "click", "name": "x".repeat(17), "key": "k"}]});
        assert_eq!(code(menu(long_name)), "invalid_menu");
        let sub_name_60 =
            json!({"button": [{"name": "m", "sub_button": [{"type": "click", "name": "x".repeat(60), "key": "k"}]}]});
        assert!(menu(sub_name_60).is_ok());
        let long_key = json!({"button": [{"type": "click", "name": "a", "key": "k".repeat(129)}]});
        assert_eq!(code(menu(long_key)), "invalid_menu");
        let long_url =
            json!({"button": [{"type": "view", "name": "a", "url": format!("https://{}", "u".repeat(1020))}]});
        assert_eq!(code(menu(long_url)), "invalid_menu");
        let bad_type = json!({"button": [{"type": "teleport", "name": "a", "key": "k"}]});
        assert_eq!(code(menu(bad_type)), "invalid_menu");
        let view_without_url = json!({"button": [{"type": "view", "name": "a"}]});
        assert_eq!(code(menu(view_without_url)), "invalid_menu");
        let nested = json!({"button": [{"name": "m", "sub_button": [{"name": "n", "sub_button": []}]}]});
        assert_eq!(code(menu(nested)), "invalid_menu");
        assert_eq!(code(menu(json!({"button": []}))), "invalid_menu");
        assert_eq!(code(menu(json!({"button": [{"type": "click", "name": "a", "key": "k", "x": 1}]}))), "invalid_body");
    }
}
