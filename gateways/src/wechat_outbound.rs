//! [`WechatOutbound`] over the real client ([`WechatClient`]) and its token
//! center: what the callbacks and the admin API send to WeChat.

use async_trait::async_trait;
use serde_json::Value;
use wxcm_commands::wechat::{AccountMode, ReplyContent};
use wxcm_domain::tenant::SealedSecret;
use wxcm_domain::{AppId, OpenId};

use crate::wechat_api::client::{Account, Article, CustomMessage, OAuthScope, QrCode};
use crate::wechat_api::{WechatClient, WechatError};
use crate::wechat_edge::{AuthorizationStart, CreatedQrCode, OutboundError, WechatOutbound};

/// The outbound side of a node: the WeChat client, the third-party platform's
/// appid (when wxcm runs as one) and the public base URL of this deployment.
pub struct ClientOutbound {
    pub client: WechatClient,
    /// The component appid, when wxcm runs as a third-party platform.
    pub component_appid: Option<String>,
    /// `https://crm.example.com` (no trailing slash): referral links and OAuth redirects.
    pub public_base_url: String,
    /// Where referral visitors go after OAuth to follow the account (its profile
    /// link); `{appid}` is replaced. `None`: a short page asks them to follow.
    pub follow_url_template: Option<String>,
}

impl ClientOutbound {
    pub fn new(client: WechatClient, component_appid: Option<String>, public_base_url: &str) -> Self {
        Self {
            client,
            component_appid,
            public_base_url: public_base_url.trim_end_matches('/').to_owned(),
            follow_url_template: None,
        }
    }

    fn account(&self, appid: &AppId, mode: AccountMode) -> Account {
        match mode {
            AccountMode::Direct => Account::Direct(appid.as_str().to_owned()),
            AccountMode::Component => Account::Authorizer(appid.as_str().to_owned()),
        }
    }

    fn component(&self) -> Result<&str, OutboundError> {
        self.component_appid
            .as_deref()
            .ok_or_else(|| OutboundError::Unavailable("no third-party platform configured".into()))
    }
}

fn outbound_error(e: WechatError) -> OutboundError {
    match e {
        WechatError::QuotaExhausted => OutboundError::QuotaExhausted,
        WechatError::InvalidInput(m) => OutboundError::Rejected(m),
        WechatError::Api { errcode, errmsg } => OutboundError::Rejected(format!("errcode {errcode}: {errmsg}")),
        WechatError::ApiUnauthorized | WechatError::BadRefreshToken => OutboundError::Rejected(e.to_string()),
        other => OutboundError::Failed(other.to_string()),
    }
}

fn custom_message(reply: &ReplyContent) -> CustomMessage {
    match reply {
        ReplyContent::Text { content } => CustomMessage::Text(content.clone()),
        ReplyContent::News { articles } => CustomMessage::News(
            articles
                .iter()
                .map(|a| Article {
                    title: a.title.clone(),
                    description: a.description.clone(),
                    url: a.url.clone(),
                    picurl: a.pic_url.clone(),
                })
                .collect(),
        ),
    }
}

#[async_trait]
impl WechatOutbound for ClientOutbound {
    async fn send_custom_message(&self, appid: &AppId, openid: &OpenId, reply: &ReplyContent) -> Result<(), String> {
        // Late replies go to accounts of either mode; the authorizer token exists only for component accounts.
        let account = match &self.component_appid {
            Some(_) if self.client.tokens().sealed_refresh_token(appid.as_str()).await.ok().flatten().is_some() => {
                Account::Authorizer(appid.as_str().to_owned())
            }
            _ => Account::Direct(appid.as_str().to_owned()),
        };
        self.client.custom_send(&account, openid.as_str(), &custom_message(reply)).await.map_err(|e| e.to_string())
    }

    async fn store_verify_ticket(&self, ticket: &str) -> Result<(), String> {
        let component = self.component().map_err(|e| e.to_string())?;
        self.client.tokens().record_verify_ticket(component, ticket).await.map_err(|e| e.to_string())
    }

    async fn query_auth(&self, authorization_code: &str) -> Result<(String, SealedSecret), String> {
        let component = self.component().map_err(|e| e.to_string())?;
        let tokens = self.client.tokens();
        let appid = tokens.complete_authorization(component, authorization_code).await.map_err(|e| e.to_string())?;
        let sealed = tokens
            .sealed_refresh_token(&appid)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("no refresh token stored for {appid}"))?;
        Ok((appid, sealed))
    }

    async fn forget_authorizer(&self, _appid: &AppId) -> Result<(), String> {
        // The token center has no delete yet: the authorizer's token simply
        // stops refreshing (61023) once WeChat revokes the refresh token.
        Ok(())
    }

    fn public_base_url(&self) -> Option<String> {
        Some(self.public_base_url.clone())
    }

    async fn create_qr_code(
        &self,
        appid: &AppId,
        mode: AccountMode,
        scene: &str,
        expire_seconds: Option<u32>,
    ) -> Result<CreatedQrCode, OutboundError> {
        let qr = match expire_seconds {
            Some(expire_seconds) => QrCode::Temporary { scene: scene.to_owned(), expire_seconds },
            None => QrCode::Permanent { scene: scene.to_owned() },
        };
        let ticket = self.client.qrcode_create(&self.account(appid, mode), &qr).await.map_err(outbound_error)?;
        Ok(CreatedQrCode { ticket: ticket.ticket, url: ticket.url, expire_seconds: ticket.expire_seconds })
    }

    async fn publish_menu(&self, appid: &AppId, mode: AccountMode, menu: &Value) -> Result<(), OutboundError> {
        self.client.menu_create(&self.account(appid, mode), menu).await.map_err(outbound_error)
    }

    async fn start_authorization(&self, redirect_uri: &str) -> Result<AuthorizationStart, OutboundError> {
        let component = self.component()?;
        let code = self.client.create_preauth_code(component).await.map_err(outbound_error)?;
        let url = self.client.component_authorize_url(component, &code, redirect_uri);
        Ok(AuthorizationStart {
            pre_auth_code: code,
            authorization_url: url,
            expires_in_s: wxcm_commands::wechat::PRE_AUTH_CODE_TTL_S,
        })
    }

    fn oauth_authorize_url(
        &self,
        appid: &AppId,
        mode: AccountMode,
        redirect_uri: &str,
        state: &str,
    ) -> Result<String, OutboundError> {
        let component = match mode {
            AccountMode::Direct => None,
            AccountMode::Component => Some(self.component()?),
        };
        Ok(self.client.oauth_authorize_url(appid.as_str(), redirect_uri, OAuthScope::Base, state, component))
    }

    async fn oauth_openid(
        &self,
        appid: &AppId,
        mode: AccountMode,
        app_secret: Option<&str>,
        code: &str,
    ) -> Result<String, OutboundError> {
        let token = match mode {
            AccountMode::Direct => {
                let secret =
                    app_secret.ok_or_else(|| OutboundError::Unavailable("the account has no AppSecret".into()))?;
                self.client.oauth_exchange(appid.as_str(), secret, code).await
            }
            AccountMode::Component => {
                self.client.oauth_exchange_component(appid.as_str(), self.component()?, code).await
            }
        };
        Ok(token.map_err(outbound_error)?.openid)
    }

    fn follow_page_url(&self, appid: &AppId) -> Option<String> {
        self.follow_url_template.as_ref().map(|t| t.replace("{appid}", appid.as_str()))
    }
}
