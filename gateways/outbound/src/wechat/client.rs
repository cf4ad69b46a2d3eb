//! Outbound WeChat API calls for one account. Each call takes the account's
//! token from the [`TokenCenter`]; when WeChat rejects it (40001/40014/42001)
//! the center is asked to refresh only if that token is still current, and
//! the call is retried once with the new one.

use std::sync::Arc;

use serde_json::{json, Value};
use sha1::{Digest, Sha1};

use super::error::WechatError;
use super::http::{i64_field, str_field, Body, ClientConfig, RawResponse, Request, WechatHttp};
use super::tokens::{TokenCenter, TokenKey};

/// Largest temporary QR lifetime WeChat accepts (30 days).
pub const QR_EXPIRE_SECONDS_MAX: u32 = 2_592_000;
/// Longest string scene (`QR_LIMIT_STR_SCENE`, `QR_STR_SCENE`).
pub const QR_SCENE_CHARS_MAX: usize = 64;
/// OpenIDs per `user/info/batchget` call.
pub const USER_BATCH_MAX: usize = 100;
/// OpenIDs per mass send by list (WeChat requires at least 2).
pub const MASS_OPENIDS_MAX: usize = 10_000;
/// OpenIDs per batch tagging call.
pub const TAGGING_OPENIDS_MAX: usize = 50;
/// Largest media upload (video limit; images are smaller at WeChat).
pub const MEDIA_BYTES_MAX: usize = 10 * 1024 * 1024;
/// Articles in one news message.
pub const NEWS_ARTICLES_MAX: usize = 8;
/// Longest text content we send.
pub const TEXT_CHARS_MAX: usize = 2_048;

/// Which token an account's calls use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Account {
    /// Developer mode: the account's own AppSecret, `/cgi-bin/token`.
    Direct(String),
    /// Authorized to our third-party platform: the authorizer access token.
    Authorizer(String),
}

impl Account {
    pub fn appid(&self) -> &str {
        match self {
            Self::Direct(a) | Self::Authorizer(a) => a,
        }
    }
    fn token_key(&self) -> Result<TokenKey, WechatError> {
        Ok(match self {
            Self::Direct(a) => TokenKey::access_token(a)?,
            Self::Authorizer(a) => TokenKey::authorizer_token(a)?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QrCode {
    /// `QR_STR_SCENE`, lives `expire_seconds` (1..=30 days).
    Temporary { scene: String, expire_seconds: u32 },
    /// `QR_LIMIT_STR_SCENE`, never expires (WeChat caps the count per account).
    Permanent { scene: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QrTicket {
    pub ticket: String,
    pub url: String,
    pub expire_seconds: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Article {
    pub title: String,
    pub description: String,
    pub url: String,
    pub picurl: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CustomMessage {
    Text(String),
    News(Vec<Article>),
}

/// A member's OAuth tokens. `Debug` shows neither token.
#[derive(Clone, PartialEq, Eq)]
pub struct OAuthToken {
    pub openid: String,
    pub access_token: String,
    pub refresh_token: String,
    pub scope: String,
    pub expires_in_secs: i64,
    pub unionid: Option<String>,
}

impl std::fmt::Debug for OAuthToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthToken")
            .field("openid", &self.openid)
            .field("scope", &self.scope)
            .field("expires_in_secs", &self.expires_in_secs)
            .field("unionid", &self.unionid)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthScope {
    Base,
    UserInfo,
}

impl OAuthScope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Base => "snsapi_base",
            Self::UserInfo => "snsapi_userinfo",
        }
    }
}

/// JS-SDK `wx.config` signature: `hex(sha1("jsapi_ticket=T&noncestr=N&timestamp=TS&url=URL"))`,
/// with the URL's fragment removed.
pub fn jssdk_signature(jsapi_ticket: &str, noncestr: &str, timestamp: i64, url: &str) -> String {
    let url = url.split('#').next().unwrap_or("");
    let plain = format!("jsapi_ticket={jsapi_ticket}&noncestr={noncestr}&timestamp={timestamp}&url={url}");
    hex::encode(Sha1::digest(plain.as_bytes()))
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn check_len(what: &str, value: &str, max: usize) -> Result<(), WechatError> {
    if value.is_empty() || value.chars().count() > max {
        return Err(WechatError::InvalidInput(format!("{what} must be 1..={max} characters")));
    }
    Ok(())
}

pub struct WechatClient {
    http: Arc<WechatHttp>,
    tokens: Arc<TokenCenter>,
}

impl WechatClient {
    pub fn new(http: Arc<WechatHttp>, tokens: Arc<TokenCenter>) -> Self {
        Self { http, tokens }
    }

    pub fn from_config(config: ClientConfig, tokens: Arc<TokenCenter>) -> Result<Self, WechatError> {
        Ok(Self::new(Arc::new(WechatHttp::new(config)?), tokens))
    }

    pub fn tokens(&self) -> &Arc<TokenCenter> {
        &self.tokens
    }

    /// Runs `request` with the account's token; on a token rejection, asks
    /// the center for a refresh (only if that token is still current) and
    /// retries once.
    async fn with_token(&self, account: &Account, request: Request) -> Result<RawResponse, WechatError> {
        let key = account.token_key()?;
        let token = self.tokens.get(&key).await?;
        match self.http.call(account.appid(), &request.clone().query("access_token", token.value.as_str())).await {
            Err(WechatError::TokenInvalid { errcode }) => {
                tracing::info!(appid = account.appid(), errcode, "wechat rejected the token; refreshing once");
                let renewed = self.tokens.invalidate(&key, &token.value).await?;
                self.http.call(account.appid(), &request.query("access_token", renewed.value)).await
            }
            other => other,
        }
    }

    async fn json_with_token(&self, account: &Account, request: Request) -> Result<Value, WechatError> {
        let raw = self.with_token(account, request).await?;
        super::http::parse_json(&raw.bytes)
    }

    pub async fn menu_create(&self, account: &Account, menu: &Value) -> Result<(), WechatError> {
        self.json_with_token(account, Request::post("/cgi-bin/menu/create", menu.clone())).await.map(|_| ())
    }

    pub async fn menu_get(&self, account: &Account) -> Result<Value, WechatError> {
        self.json_with_token(account, Request::get("/cgi-bin/menu/get")).await
    }

    pub async fn qrcode_create(&self, account: &Account, qr: &QrCode) -> Result<QrTicket, WechatError> {
        let body = match qr {
            QrCode::Temporary { scene, expire_seconds } => {
                check_len("scene", scene, QR_SCENE_CHARS_MAX)?;
                if *expire_seconds == 0 || *expire_seconds > QR_EXPIRE_SECONDS_MAX {
                    return Err(WechatError::InvalidInput(format!(
                        "expire_seconds must be 1..={QR_EXPIRE_SECONDS_MAX}"
                    )));
                }
                json!({"expire_seconds": expire_seconds, "action_name": "QR_STR_SCENE",
                       "action_info": {"scene": {"scene_str": scene}}})
            }
            QrCode::Permanent { scene } => {
                check_len("scene", scene, QR_SCENE_CHARS_MAX)?;
                json!({"action_name": "QR_LIMIT_STR_SCENE", "action_info": {"scene": {"scene_str": scene}}})
            }
        };
        let v = self.json_with_token(account, Request::post("/cgi-bin/qrcode/create", body)).await?;
        Ok(QrTicket {
            ticket: str_field(&v, "ticket")?,
            url: str_field(&v, "url")?,
            expire_seconds: v.get("expire_seconds").and_then(Value::as_i64),
        })
    }

    pub async fn custom_send(
        &self,
        account: &Account,
        openid: &str,
        message: &CustomMessage,
    ) -> Result<(), WechatError> {
        check_len("openid", openid, 128)?;
        let body = match message {
            CustomMessage::Text(text) => {
                check_len("text", text, TEXT_CHARS_MAX)?;
                json!({"touser": openid, "msgtype": "text", "text": {"content": text}})
            }
            CustomMessage::News(articles) => {
                if articles.is_empty() || articles.len() > NEWS_ARTICLES_MAX {
                    return Err(WechatError::InvalidInput(format!("news needs 1..={NEWS_ARTICLES_MAX} articles")));
                }
                let articles: Vec<Value> = articles
                    .iter()
                    .map(|a| json!({"title": a.title, "description": a.description, "url": a.url, "picurl": a.picurl}))
                    .collect();
                json!({"touser": openid, "msgtype": "news", "news": {"articles": articles}})
            }
        };
        self.json_with_token(account, Request::post("/cgi-bin/message/custom/send", body)).await.map(|_| ())
    }

    /// Template message; `data` is `{"key": {"value": "...", "color": "..."}}`. Returns the msgid.
    pub async fn template_send(
        &self,
        account: &Account,
        openid: &str,
        template_id: &str,
        url: Option<&str>,
        data: &Value,
    ) -> Result<i64, WechatError> {
        check_len("openid", openid, 128)?;
        check_len("template_id", template_id, 128)?;
        let mut body = json!({"touser": openid, "template_id": template_id, "data": data});
        if let Some(url) = url {
            body["url"] = json!(url);
        }
        let v = self.json_with_token(account, Request::post("/cgi-bin/message/template/send", body)).await?;
        i64_field(&v, "msgid")
    }

    /// Mass text message to everyone with `tag_id`. Returns the msg_id.
    pub async fn mass_send_by_tag(&self, account: &Account, tag_id: i64, text: &str) -> Result<i64, WechatError> {
        check_len("text", text, TEXT_CHARS_MAX)?;
        let body =
            json!({"filter": {"is_to_all": false, "tag_id": tag_id}, "msgtype": "text", "text": {"content": text}});
        let v = self.json_with_token(account, Request::post("/cgi-bin/message/mass/sendall", body)).await?;
        i64_field(&v, "msg_id")
    }

    /// Mass text message to 2..=10 000 openids. Returns the msg_id.
    pub async fn mass_send_by_openids(
        &self,
        account: &Account,
        openids: &[String],
        text: &str,
    ) -> Result<i64, WechatError> {
        check_len("text", text, TEXT_CHARS_MAX)?;
        if openids.len() < 2 || openids.len() > MASS_OPENIDS_MAX {
            return Err(WechatError::InvalidInput(format!("mass send needs 2..={MASS_OPENIDS_MAX} openids")));
        }
        let body = json!({"touser": openids, "msgtype": "text", "text": {"content": text}});
        let v = self.json_with_token(account, Request::post("/cgi-bin/message/mass/send", body)).await?;
        i64_field(&v, "msg_id")
    }

    /// Temporary media upload (`type` = image, voice, video, thumb). Returns the media_id.
    pub async fn media_upload(
        &self,
        account: &Account,
        media_type: &str,
        filename: &str,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> Result<String, WechatError> {
        if !matches!(media_type, "image" | "voice" | "video" | "thumb") {
            return Err(WechatError::InvalidInput("media type must be image, voice, video or thumb".into()));
        }
        if bytes.is_empty() || bytes.len() > MEDIA_BYTES_MAX {
            return Err(WechatError::InvalidInput(format!("media must be 1..={MEDIA_BYTES_MAX} bytes")));
        }
        check_len("filename", filename, 128)?;
        let body =
            Body::File { field: "media".into(), filename: filename.into(), content_type: content_type.into(), bytes };
        let request = Request { get: false, path: "/cgi-bin/media/upload".into(), query: Vec::new(), body }
            .query("type", media_type);
        let v = self.json_with_token(account, request).await?;
        str_field(&v, "media_id")
    }

    /// Temporary media download: the raw bytes.
    pub async fn media_get(&self, account: &Account, media_id: &str) -> Result<RawResponse, WechatError> {
        check_len("media_id", media_id, 128)?;
        self.with_token(account, Request::get("/cgi-bin/media/get").query("media_id", media_id)).await
    }

    pub async fn user_info(&self, account: &Account, openid: &str) -> Result<Value, WechatError> {
        check_len("openid", openid, 128)?;
        self.json_with_token(account, Request::get("/cgi-bin/user/info").query("openid", openid).query("lang", "zh_CN"))
            .await
    }

    pub async fn user_info_batch(&self, account: &Account, openids: &[String]) -> Result<Vec<Value>, WechatError> {
        if openids.is_empty() || openids.len() > USER_BATCH_MAX {
            return Err(WechatError::InvalidInput(format!("batchget needs 1..={USER_BATCH_MAX} openids")));
        }
        let list: Vec<Value> = openids.iter().map(|o| json!({"openid": o, "lang": "zh_CN"})).collect();
        let v = self
            .json_with_token(account, Request::post("/cgi-bin/user/info/batchget", json!({"user_list": list})))
            .await?;
        v.get("user_info_list")
            .and_then(Value::as_array)
            .cloned()
            .ok_or_else(|| WechatError::Decode("missing user_info_list".into()))
    }

    /// Creates a tag; returns its id.
    pub async fn tag_create(&self, account: &Account, name: &str) -> Result<i64, WechatError> {
        check_len("tag name", name, 30)?;
        let v = self
            .json_with_token(account, Request::post("/cgi-bin/tags/create", json!({"tag": {"name": name}})))
            .await?;
        v.get("tag").map(|t| i64_field(t, "id")).unwrap_or_else(|| Err(WechatError::Decode("missing tag".into())))
    }

    pub async fn tags_get(&self, account: &Account) -> Result<Vec<Value>, WechatError> {
        let v = self.json_with_token(account, Request::get("/cgi-bin/tags/get")).await?;
        v.get("tags").and_then(Value::as_array).cloned().ok_or_else(|| WechatError::Decode("missing tags".into()))
    }

    pub async fn tag_members(&self, account: &Account, tag_id: i64, openids: &[String]) -> Result<(), WechatError> {
        if openids.is_empty() || openids.len() > TAGGING_OPENIDS_MAX {
            return Err(WechatError::InvalidInput(format!("batch tagging needs 1..={TAGGING_OPENIDS_MAX} openids")));
        }
        let body = json!({"openid_list": openids, "tagid": tag_id});
        self.json_with_token(account, Request::post("/cgi-bin/tags/members/batchtagging", body)).await.map(|_| ())
    }

    /// The `wx.config` parameters for a page: the ticket comes from the token center.
    pub async fn jssdk_config(
        &self,
        appid: &str,
        url: &str,
        noncestr: &str,
        timestamp: i64,
    ) -> Result<String, WechatError> {
        let ticket = self.tokens.get(&TokenKey::jsapi_ticket(appid)?).await?;
        Ok(jssdk_signature(&ticket.value, noncestr, timestamp, url))
    }

    /// The OAuth2 authorization page a member is redirected to.
    pub fn oauth_authorize_url(
        &self,
        appid: &str,
        redirect_uri: &str,
        scope: OAuthScope,
        state: &str,
        component_appid: Option<&str>,
    ) -> String {
        let mut url = format!(
            "{}/connect/oauth2/authorize?appid={}&redirect_uri={}&response_type=code&scope={}&state={}",
            self.http.config().open_base,
            percent_encode(appid),
            percent_encode(redirect_uri),
            scope.as_str(),
            percent_encode(state)
        );
        if let Some(component) = component_appid {
            url.push_str(&format!("&component_appid={}", percent_encode(component)));
        }
        url.push_str("#wechat_redirect");
        url
    }

    /// The third-party platform authorization page for a merchant.
    pub fn component_authorize_url(&self, component_appid: &str, pre_auth_code: &str, redirect_uri: &str) -> String {
        format!(
            "{}/cgi-bin/componentloginpage?component_appid={}&pre_auth_code={}&redirect_uri={}&auth_type=1",
            self.http.config().mp_base,
            percent_encode(component_appid),
            percent_encode(pre_auth_code),
            percent_encode(redirect_uri)
        )
    }

    /// OAuth2 code exchange in developer mode (a code works once).
    pub async fn oauth_exchange(&self, appid: &str, secret: &str, code: &str) -> Result<OAuthToken, WechatError> {
        check_len("code", code, 256)?;
        let req = Request::get("/sns/oauth2/access_token")
            .query("appid", appid)
            .query("secret", secret)
            .query("code", code)
            .query("grant_type", "authorization_code");
        oauth_token(&self.http.call_json(appid, &req).await?)
    }

    /// OAuth2 code exchange on behalf of an authorizer (third-party platform).
    pub async fn oauth_exchange_component(
        &self,
        appid: &str,
        component_appid: &str,
        code: &str,
    ) -> Result<OAuthToken, WechatError> {
        check_len("code", code, 256)?;
        let key = TokenKey::component_token(component_appid)?;
        let token = self.tokens.get(&key).await?;
        let req = |t: &str| {
            Request::get("/sns/oauth2/component/access_token")
                .query("appid", appid)
                .query("code", code)
                .query("grant_type", "authorization_code")
                .query("component_appid", component_appid)
                .query("component_access_token", t)
        };
        match self.http.call_json(appid, &req(&token.value)).await {
            Err(WechatError::TokenInvalid { .. }) => {
                let renewed = self.tokens.invalidate(&key, &token.value).await?;
                oauth_token(&self.http.call_json(appid, &req(&renewed.value)).await?)
            }
            other => oauth_token(&other?),
        }
    }

    /// `api_create_preauthcode`: the code for one authorization page visit.
    pub async fn create_preauth_code(&self, component_appid: &str) -> Result<String, WechatError> {
        let key = TokenKey::component_token(component_appid)?;
        let token = self.tokens.get(&key).await?;
        let req = |t: &str| {
            Request::post("/cgi-bin/component/api_create_preauthcode", json!({"component_appid": component_appid}))
                .query("component_access_token", t)
        };
        let v = match self.http.call_json(component_appid, &req(&token.value)).await {
            Err(WechatError::TokenInvalid { .. }) => {
                let renewed = self.tokens.invalidate(&key, &token.value).await?;
                self.http.call_json(component_appid, &req(&renewed.value)).await?
            }
            other => other?,
        };
        str_field(&v, "pre_auth_code")
    }
}

fn oauth_token(v: &Value) -> Result<OAuthToken, WechatError> {
    Ok(OAuthToken {
        openid: str_field(v, "openid")?,
        access_token: str_field(v, "access_token")?,
        refresh_token: v.get("refresh_token").and_then(Value::as_str).unwrap_or_default().to_owned(),
        scope: v.get("scope").and_then(Value::as_str).unwrap_or_default().to_owned(),
        expires_in_secs: v.get("expires_in").and_then(Value::as_i64).unwrap_or(0),
        unionid: v.get("unionid").and_then(Value::as_str).map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jssdk_signature_matches_vector_v8() {
        let ticket = "sM4AOVdWfPE4DxkXGEs8VMCPGGVi4C3VM0P37wVUCFvkVAy_90u5h9nbSlYy3-Sl-HhTdfl2fzFy1AOcHKP7qg";
        let sig = jssdk_signature(ticket, "Wm3WZYTPz0wzccnW", 1414587457, "http://mp.weixin.qq.com?params=value");
        assert_eq!(sig, "0f9de62fce790f9a083d5c99e95740ceb90c27ed");
        // The fragment is not part of the signed URL.
        let with_fragment =
            jssdk_signature(ticket, "Wm3WZYTPz0wzccnW", 1414587457, "http://mp.weixin.qq.com?params=value#section");
        assert_eq!(with_fragment, sig);
    }

    #[test]
    fn debug_of_oauth_tokens_shows_no_token() {
        let token = OAuthToken {
            openid: "o1".into(),
            access_token: "ACCESS-CANARY".into(),
            refresh_token: "REFRESH-CANARY".into(),
            scope: "snsapi_base".into(),
            expires_in_secs: 7200,
            unionid: None,
        };
        let debug = format!("{token:?}");
        assert!(!debug.contains("CANARY") && debug.contains("o1"), "{debug}");
    }

    #[test]
    fn percent_encoding_of_redirects() {
        assert_eq!(percent_encode("https://a.b/c?d=e f"), "https%3A%2F%2Fa.b%2Fc%3Fd%3De%20f");
    }
}
