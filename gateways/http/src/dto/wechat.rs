//! Bodies and answers of the WeChat admin routes: reply rules, points rules,
//! scene QR codes, menus, referral links and the third-party authorization
//! start. Menus are checked against WeChat's own shape and limits here, so a
//! publish never fails on something we could have refused.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use wxcm_commands::wechat::{KeywordRule, MatchMode, NewsArticle, ReplyContent, ReplyRules, SceneQrCode, StoredMenu};
use wxcm_domain::member::ExpiryPolicy;
use wxcm_domain::tenant::PointsRules;
use wxcm_domain::AppId;

use super::ExpiryBody;
use crate::error::ApiError;

// ---------- reply rules ----------

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ArticleDto {
    #[schema(min_length = 1, max_length = 512)]
    pub title: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub pic_url: String,
    #[serde(default)]
    pub url: String,
}

/// A reply: text (1..=2048 bytes) or news (1..=8 articles).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ReplyDto {
    Text { content: String },
    News { articles: Vec<ArticleDto> },
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MatchDto {
    /// The whole message equals a keyword (case-insensitive, trimmed).
    Exact,
    /// The message contains a keyword.
    Contains,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeywordRuleDto {
    /// 1..=10 keywords of 1..=30 characters.
    pub keywords: Vec<String>,
    #[serde(rename = "match")]
    pub mode: MatchDto,
    pub reply: ReplyDto,
}

/// The whole rule set: the welcome reply, the default reply, keyword rules
/// tried in order (the first match wins; at most 200).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplyRulesBody {
    #[serde(default)]
    pub subscribe: Option<ReplyDto>,
    #[serde(default)]
    pub default: Option<ReplyDto>,
    #[serde(default)]
    pub keywords: Vec<KeywordRuleDto>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReplyRulesDto {
    pub rules: ReplyRulesBody,
    /// Increases with every save; 0 before the first.
    pub revision: i64,
}

impl From<ReplyDto> for ReplyContent {
    fn from(r: ReplyDto) -> Self {
        match r {
            ReplyDto::Text { content } => ReplyContent::Text { content },
            ReplyDto::News { articles } => ReplyContent::News {
                articles: articles
                    .into_iter()
                    .map(|a| NewsArticle { title: a.title, description: a.description, pic_url: a.pic_url, url: a.url })
                    .collect(),
            },
        }
    }
}

impl From<ReplyContent> for ReplyDto {
    fn from(r: ReplyContent) -> Self {
        match r {
            ReplyContent::Text { content } => ReplyDto::Text { content },
            ReplyContent::News { articles } => ReplyDto::News {
                articles: articles
                    .into_iter()
                    .map(|a| ArticleDto { title: a.title, description: a.description, pic_url: a.pic_url, url: a.url })
                    .collect(),
            },
        }
    }
}

impl ReplyRulesBody {
    /// The rules, checked (`invalid_reply_rules` with the rule that fails).
    pub fn validate(self) -> Result<ReplyRules, ApiError> {
        let rules = ReplyRules {
            subscribe: self.subscribe.map(Into::into),
            default: self.default.map(Into::into),
            keywords: self
                .keywords
                .into_iter()
                .map(|k| KeywordRule {
                    keywords: k.keywords,
                    mode: match k.mode {
                        MatchDto::Exact => MatchMode::Exact,
                        MatchDto::Contains => MatchMode::Contains,
                    },
                    reply: k.reply.into(),
                })
                .collect(),
        };
        rules.validate().map_err(|e| ApiError::invalid("invalid_reply_rules", e.to_string()))?;
        Ok(rules)
    }
}

impl From<ReplyRules> for ReplyRulesBody {
    fn from(r: ReplyRules) -> Self {
        Self {
            subscribe: r.subscribe.map(Into::into),
            default: r.default.map(Into::into),
            keywords: r
                .keywords
                .into_iter()
                .map(|k| KeywordRuleDto {
                    keywords: k.keywords,
                    mode: match k.mode {
                        MatchMode::Exact => MatchDto::Exact,
                        MatchMode::Contains => MatchDto::Contains,
                    },
                    reply: k.reply.into(),
                })
                .collect(),
        }
    }
}

// ---------- points rules ----------

/// Points granted by the ledger itself; 0 means none.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PointsRulesBody {
    /// Granted to a new member at registration.
    #[schema(minimum = 0)]
    pub initial_points: i64,
    /// Granted to the referrer of a new member.
    #[schema(minimum = 0)]
    pub referral_level1_points: i64,
    /// Granted to the referrer's referrer.
    #[schema(minimum = 0)]
    pub referral_level2_points: i64,
    pub expiry: ExpiryBody,
}

impl PointsRulesBody {
    pub fn validate(self) -> Result<PointsRules, ApiError> {
        let rules = PointsRules {
            initial_points: self.initial_points,
            referral_level1_points: self.referral_level1_points,
            referral_level2_points: self.referral_level2_points,
            expiry: self.expiry.validate()?,
        };
        if !rules.is_valid() {
            return Err(ApiError::invalid(
                "invalid_points_rules",
                format!("points must be 0..={}", wxcm_domain::tenant::RULE_POINTS_MAX),
            ));
        }
        Ok(rules)
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExpiryDto {
    Never,
    Days { days: u32 },
    EndOfMonth,
    EndOfYear,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PointsRulesDto {
    pub initial_points: i64,
    pub referral_level1_points: i64,
    pub referral_level2_points: i64,
    pub expiry: ExpiryDto,
}

impl From<PointsRules> for PointsRulesDto {
    fn from(r: PointsRules) -> Self {
        Self {
            initial_points: r.initial_points,
            referral_level1_points: r.referral_level1_points,
            referral_level2_points: r.referral_level2_points,
            expiry: match r.expiry {
                ExpiryPolicy::Never => ExpiryDto::Never,
                ExpiryPolicy::Days { days } => ExpiryDto::Days { days },
                ExpiryPolicy::EndOfMonth => ExpiryDto::EndOfMonth,
                ExpiryPolicy::EndOfYear => ExpiryDto::EndOfYear,
            },
        }
    }
}

// ---------- scene QR codes ----------

/// WeChat's limit on `scene_str`.
pub const SCENE_LEN_MAX: usize = 64;
pub const QR_NAME_LEN_MAX: usize = 100;
/// Temporary codes live 60 s ..= 30 days.
pub const QR_EXPIRE_SECONDS_MIN: u32 = 60;
pub const QR_EXPIRE_SECONDS_MAX: u32 = 2_592_000;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QrCodeBody {
    /// The official account (`wx` + 16 hex digits) bound to the tenant.
    pub appid: String,
    /// 1..=64 printable ASCII characters; reported back in `qrscene_<scene>`.
    #[schema(min_length = 1, max_length = 64)]
    pub scene: String,
    /// A label for the admin (≤ 100 characters).
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

// ---------- menus ----------

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

/// One button: a leaf with a `type`, or a parent with `sub_button` (top level only).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MenuButton {
    /// ≤ 16 bytes at the top level, ≤ 60 in a sub-menu.
    pub name: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// click and the event types: ≤ 128 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// view and miniprogram (fallback page): http(s), ≤ 1024 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// miniprogram.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appid: Option<String>,
    /// miniprogram.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pagepath: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub article_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(no_recursion)]
    pub sub_button: Option<Vec<MenuButton>>,
}

/// WeChat's menu: 1..=3 buttons, each with up to 5 sub-buttons.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MenuBody {
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

// ---------- referral links, authorization ----------

#[derive(Debug, Serialize, ToSchema)]
pub struct ReferralLinkDto {
    /// `{public_base_url}/m/referral/{tenant}/{member_id}`: opens WeChat OAuth, then the follow page.
    pub url: String,
    /// A scene usable for a personal QR code (`ref_<member id>`), when one fits WeChat's 64 characters.
    pub qr_scene: Option<String>,
}

/// Where WeChat sends the merchant back after the authorization page.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationBody {
    /// An http(s) URL of at most 1024 bytes.
    pub redirect_uri: String,
}

impl AuthorizationBody {
    pub fn validate(&self) -> Result<&str, ApiError> {
        let uri = self.redirect_uri.as_str();
        let ok = uri.len() <= MENU_URL_BYTES_MAX
            && (uri.starts_with("https://") || uri.starts_with("http://"))
            && uri.len() > "https://".len()
            && !uri.chars().any(|c| c.is_control() || c.is_whitespace());
        if !ok {
            return Err(ApiError::invalid(
                "invalid_redirect_uri",
                "redirect_uri must be an http(s) URL of ≤ 1024 bytes",
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

    #[test]
    fn reply_rules_round_trip_and_are_validated() {
        let body: ReplyRulesBody = serde_json::from_value(json!({
            "subscribe": {"type": "text", "content": "welcome"},
            "keywords": [{"keywords": ["points"], "match": "contains", "reply": {"type": "text", "content": "100"}}]
        }))
        .unwrap();
        let rules = body.validate().unwrap();
        assert_eq!(rules.keywords.len(), 1);
        let back = serde_json::to_value(ReplyRulesBody::from(rules)).unwrap();
        assert_eq!(back["keywords"][0]["match"], "contains");
        let empty_text: ReplyRulesBody =
            serde_json::from_value(json!({"default": {"type": "text", "content": ""}})).unwrap();
        assert_eq!(empty_text.validate().err().unwrap().code(), "invalid_reply_rules");
    }

    #[test]
    fn points_rules_are_bounded() {
        let body = |initial: i64| PointsRulesBody {
            initial_points: initial,
            referral_level1_points: 0,
            referral_level2_points: 0,
            expiry: ExpiryBody::Never {},
        };
        assert!(body(10).validate().is_ok());
        assert_eq!(body(-1).validate().err().unwrap().code(), "invalid_points_rules");
    }
}
