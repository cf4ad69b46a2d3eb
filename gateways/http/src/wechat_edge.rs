//! What the WeChat callback endpoints need besides the application: protocol
//! settings, the appid directory, the component's own credentials, and the
//! outbound side (customer-service messages, the component token chain).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use wxcm_commands::wechat::{AccountDirectory, AccountMode, ReplyContent, WechatOpError};
use wxcm_commands::App;
use wxcm_domain::tenant::SealedSecret;
use wxcm_domain::{AppId, OpenId, TenantId};

use wxcm_protocol::wechat::xml::XmlLimits;

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

/// A scene QR code as WeChat created it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedQrCode {
    pub ticket: String,
    /// The URL the QR code encodes.
    pub url: String,
    /// Lifetime WeChat granted (temporary codes only).
    pub expire_seconds: Option<i64>,
}

/// The start of a third-party platform authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationStart {
    pub pre_auth_code: String,
    /// The page the merchant opens to authorize its account.
    pub authorization_url: String,
    pub expires_in_s: i64,
}

/// Why an outbound call of the admin API failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboundError {
    /// Not configured on this node (no outbound client, no third-party platform).
    #[error("not available: {0}")]
    Unavailable(String),
    /// WeChat refused the input (bad code, invalid scene, ...).
    #[error("refused by WeChat: {0}")]
    Rejected(String),
    /// WeChat's quota for the call is used up (45009).
    #[error("WeChat quota exhausted")]
    QuotaExhausted,
    /// Network, token or unexpected WeChat failure.
    #[error("WeChat call failed: {0}")]
    Failed(String),
}

/// The outbound WeChat side the callbacks and the admin API need. The admin
/// methods have defaults that answer [`OutboundError::Unavailable`], so a
/// callback-only fake implements the first four methods alone.
#[async_trait]
pub trait WechatOutbound: Send + Sync {
    /// Sends a reply as a customer-service message (for replies that missed the 5 s).
    async fn send_custom_message(&self, appid: &AppId, openid: &OpenId, reply: &ReplyContent) -> Result<(), String>;
    /// Keeps the latest component_verify_ticket.
    async fn store_verify_ticket(&self, ticket: &str) -> Result<(), String>;
    /// `api_query_auth`: the authorizer appid and its sealed refresh token for an
    /// authorization code; the token center keeps the tokens.
    async fn query_auth(&self, authorization_code: &str) -> Result<(String, SealedSecret), String>;
    /// Drops what the token center holds for an unauthorized account.
    async fn forget_authorizer(&self, appid: &AppId) -> Result<(), String>;

    /// Where members' browsers reach this deployment (`https://crm.example.com`), no trailing slash.
    fn public_base_url(&self) -> Option<String> {
        None
    }

    /// Creates a scene QR code: temporary when `expire_seconds` is set, else permanent.
    async fn create_qr_code(
        &self,
        _appid: &AppId,
        _mode: AccountMode,
        _scene: &str,
        _expire_seconds: Option<u32>,
    ) -> Result<CreatedQrCode, OutboundError> {
        Err(OutboundError::Unavailable("no outbound WeChat client".into()))
    }

    /// Publishes a custom menu (`menu/create`), already validated.
    async fn publish_menu(
        &self,
        _appid: &AppId,
        _mode: AccountMode,
        _menu: &serde_json::Value,
    ) -> Result<(), OutboundError> {
        Err(OutboundError::Unavailable("no outbound WeChat client".into()))
    }

    /// Asks for a pre-auth code and builds the authorization page URL.
    async fn start_authorization(&self, _redirect_uri: &str) -> Result<AuthorizationStart, OutboundError> {
        Err(OutboundError::Unavailable("no third-party platform configured".into()))
    }

    /// The OAuth2 `snsapi_base` authorize URL a member's browser is sent to.
    fn oauth_authorize_url(
        &self,
        _appid: &AppId,
        _mode: AccountMode,
        _redirect_uri: &str,
        _state: &str,
    ) -> Result<String, OutboundError> {
        Err(OutboundError::Unavailable("no outbound WeChat client".into()))
    }

    /// Exchanges an OAuth2 code for the visitor's openid. Developer-mode
    /// accounts need their AppSecret (`app_secret`), authorized ones do not.
    async fn oauth_openid(
        &self,
        _appid: &AppId,
        _mode: AccountMode,
        _app_secret: Option<&str>,
        _code: &str,
    ) -> Result<String, OutboundError> {
        Err(OutboundError::Unavailable("no outbound WeChat client".into()))
    }

    /// Where a referral visitor is sent to follow the account, if configured.
    fn follow_page_url(&self, _appid: &AppId) -> Option<String> {
        None
    }
}

pub struct WechatEdge {
    pub settings: WechatSettings,
    /// Shared with the other users of the appid map on this node (token sources, OAuth).
    pub directory: Arc<AccountDirectory>,
    pub outbound: Option<Arc<dyn WechatOutbound>>,
    pub clock: Arc<dyn wxcm_commands::Clock>,
}

impl WechatEdge {
    pub fn new(
        settings: WechatSettings,
        outbound: Option<Arc<dyn WechatOutbound>>,
        clock: Arc<dyn wxcm_commands::Clock>,
    ) -> Self {
        Self { settings, directory: Arc::default(), outbound, clock }
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
        let (authorizer_appid, sealed_refresh_token) =
            outbound.query_auth(authorization_code).await.map_err(WechatOpError::Infra)?;
        if authorizer_appid != appid.as_str() {
            return Err(WechatOpError::Invalid("the authorization code is for another account".into()));
        }
        // The token center sealed it with the same sealer; the use case seals it again for the event.
        let refresh_token = app.sealer.open(&sealed_refresh_token)?;
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
