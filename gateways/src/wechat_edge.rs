//! What the WeChat callback endpoints need besides the application: protocol
//! settings, the appid directory, the component's own credentials, and the
//! outbound side (customer-service messages, the component token chain).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use wxcm_commands::wechat::{AccountDirectory, ReplyContent, WechatOpError};
use wxcm_commands::App;
use wxcm_domain::{AppId, OpenId, TenantId};

use crate::wechat::xml::XmlLimits;

pub const CALLBACK_BODY_BYTES_MAX_DEFAULT: usize = 64 * 1024;
pub const TIMESTAMP_WINDOW_S_DEFAULT: i64 = 300;
/// WeChat waits 5 s; answer well before, leaving room for the network.
pub const REPLY_BUDGET_MS_DEFAULT: u64 = 3_000;

#[derive(Clone, PartialEq, Eq)]
pub struct ComponentCredentials {
    pub appid: String,
    pub token: String,
    pub encoding_aes_key: String,
}

impl std::fmt::Debug for ComponentCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComponentCredentials").field("appid", &self.appid).finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WechatSettings {
    /// Largest callback body (safe-mode envelope or plaintext); beyond it 413.
    pub body_bytes_max: usize,
    /// Callbacks whose `timestamp` is further than this from now are refused.
    pub timestamp_window_s: i64,
    /// Time the handler waits for the reply before answering `success`.
    pub reply_budget_ms: u64,
    /// Refuse plaintext callbacks (accounts in safe mode only).
    pub require_safe_mode: bool,
    /// The third-party platform's credentials, when wxcm runs as one.
    pub component: Option<ComponentCredentials>,
    /// XML nesting and element limits for callback bodies.
    pub xml_depth_max: usize,
    pub xml_elements_max: usize,
}

impl Default for WechatSettings {
    fn default() -> Self {
        let xml = XmlLimits::default();
        Self {
            body_bytes_max: CALLBACK_BODY_BYTES_MAX_DEFAULT,
            timestamp_window_s: TIMESTAMP_WINDOW_S_DEFAULT,
            reply_budget_ms: REPLY_BUDGET_MS_DEFAULT,
            require_safe_mode: false,
            component: None,
            xml_depth_max: xml.depth_max,
            xml_elements_max: xml.elements_max,
        }
    }
}

/// A developer-mode account's callback secrets, opened.
#[derive(Clone)]
pub struct CallbackSecrets {
    pub token: String,
    pub encoding_aes_key: Option<String>,
}

/// The outbound WeChat side the callbacks need.
#[async_trait]
pub trait WechatOutbound: Send + Sync {
    /// Sends a reply as a customer-service message (for replies that missed the 5 s).
    async fn send_custom_message(&self, appid: &AppId, openid: &OpenId, reply: &ReplyContent) -> Result<(), String>;
    /// Keeps the latest component_verify_ticket.
    async fn store_verify_ticket(&self, ticket: &str) -> Result<(), String>;
    /// `api_query_auth`: the authorizer appid and its refresh token for an authorization code;
    /// the token center keeps the tokens.
    async fn query_auth(&self, authorization_code: &str) -> Result<(String, String), String>;
    /// Drops what the token center holds for an unauthorized account.
    async fn forget_authorizer(&self, appid: &AppId) -> Result<(), String>;
}

pub struct WechatEdge {
    pub settings: WechatSettings,
    pub directory: AccountDirectory,
    pub outbound: Option<Arc<dyn WechatOutbound>>,
    pub clock: Arc<dyn wxcm_commands::Clock>,
}

impl WechatEdge {
    pub fn new(
        settings: WechatSettings,
        outbound: Option<Arc<dyn WechatOutbound>>,
        clock: Arc<dyn wxcm_commands::Clock>,
    ) -> Self {
        Self { settings, directory: AccountDirectory::default(), outbound, clock }
    }

    pub fn now_unix(&self) -> i64 {
        self.clock.now().timestamp()
    }

    pub fn reply_budget(&self) -> Duration {
        Duration::from_millis(self.settings.reply_budget_ms)
    }

    pub fn xml_limits(&self) -> XmlLimits {
        XmlLimits {
            body_bytes_max: self.settings.body_bytes_max,
            depth_max: self.settings.xml_depth_max,
            elements_max: self.settings.xml_elements_max,
            ..XmlLimits::default()
        }
    }

    pub fn component_appid(&self) -> Option<&str> {
        self.settings.component.as_ref().map(|c| c.appid.as_str())
    }

    pub fn component_secrets(&self) -> Option<CallbackSecrets> {
        self.settings
            .component
            .as_ref()
            .map(|c| CallbackSecrets { token: c.token.clone(), encoding_aes_key: Some(c.encoding_aes_key.clone()) })
    }

    pub async fn direct_secrets(
        &self,
        app: &App,
        tenant: &TenantId,
        appid: &AppId,
    ) -> Result<Option<CallbackSecrets>, WechatOpError> {
        wxcm_commands::wechat::callback_secrets(app, tenant, appid)
            .await
            .map(|s| s.map(|(token, encoding_aes_key)| CallbackSecrets { token, encoding_aes_key }))
    }

    pub async fn send_late_reply(&self, tenant: &TenantId, appid: &AppId, openid: &OpenId, reply: &ReplyContent) {
        let Some(outbound) = &self.outbound else {
            tracing::warn!(%tenant, appid = appid.as_str(), "late reply dropped: no outbound WeChat client");
            return;
        };
        if let Err(e) = outbound.send_custom_message(appid, openid, reply).await {
            tracing::warn!(%tenant, appid = appid.as_str(), error = %e, "late reply not sent");
        }
    }

    pub async fn store_verify_ticket(&self, ticket: &str) -> Result<(), String> {
        match &self.outbound {
            Some(outbound) => outbound.store_verify_ticket(ticket).await,
            None => Err("no outbound WeChat client configured".into()),
        }
    }

    /// Binds an authorized account to the tenant that started the authorization.
    pub async fn authorize(
        &self,
        app: &App,
        appid: &AppId,
        authorization_code: &str,
        pre_auth_code: Option<&str>,
    ) -> Result<(), WechatOpError> {
        let outbound = self.outbound.as_ref().ok_or_else(|| WechatOpError::Infra("no outbound client".into()))?;
        let tenant = match pre_auth_code {
            Some(code) => wxcm_commands::wechat::auth_request_tenant(app, code).await?,
            None => None,
        };
        // updateauthorized may come without a pre-auth code: the account stays with its tenant.
        let tenant = match tenant {
            Some(t) => t,
            None => match self.directory.lookup(app, appid).await? {
                Some((t, _)) => t,
                None => return Err(WechatOpError::UnknownAccount(appid.as_str().to_owned())),
            },
        };
        let (authorizer_appid, refresh_token) =
            outbound.query_auth(authorization_code).await.map_err(WechatOpError::Infra)?;
        if authorizer_appid != appid.as_str() {
            return Err(WechatOpError::Invalid("the authorization code is for another account".into()));
        }
        wxcm_commands::wechat::authorize_component_account(app, &tenant, appid, &refresh_token).await?;
        self.directory.forget(appid);
        Ok(())
    }

    pub async fn deauthorize(&self, app: &App, appid: &AppId) -> Result<(), WechatOpError> {
        let Some((tenant, _)) = self.directory.lookup(app, appid).await? else {
            return Ok(());
        };
        wxcm_commands::wechat::deauthorize_component_account(app, &tenant, appid).await?;
        self.directory.forget(appid);
        if let Some(outbound) = &self.outbound {
            if let Err(e) = outbound.forget_authorizer(appid).await {
                tracing::warn!(appid = appid.as_str(), error = %e, "authorizer tokens not dropped");
            }
        }
        Ok(())
    }
}
