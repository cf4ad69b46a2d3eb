//! Builds the WeChat side of a node: the token center on the default shard's
//! database (shared by every node), the outbound client, and where the token
//! center's credentials come from (the tenants' sealed app secrets).

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::PgPool;
use wxcm_commands::pay_flows::{OauthExchange, PayFlowError};
use wxcm_commands::wechat::AccountDirectory;
use wxcm_commands::wechat::AccountMode;
use wxcm_commands::App;
use wxcm_domain::tenant::Tenant;
use wxcm_domain::AppId;
use wxcm_domain::OpenId;
use wxcm_http::wechat_edge::OutboundError;
use wxcm_http::{ClientOutbound, WechatOutbound};
use wxcm_outbound::pay::{PayClientError, PayClientSettings, WechatPayClient};
use wxcm_outbound::wechat::client::WechatClient;
use wxcm_outbound::wechat::error::{TokenError, WechatError};
use wxcm_outbound::wechat::http::WechatHttp;
use wxcm_outbound::wechat::tokens::{TokenCenter, TokenCenterConfig, TokenSources};

use crate::config::WechatConfig;
use wxcm_store::tokens::PgTokenStore;

/// App secrets from the tenant that owns the appid; the component secret from configuration.
pub struct TenantTokenSources {
    app: Arc<App>,
    directory: Arc<AccountDirectory>,
    component: Option<(String, String)>,
}

impl TenantTokenSources {
    pub fn new(app: Arc<App>, directory: Arc<AccountDirectory>, config: &WechatConfig) -> Self {
        let component = (!config.component_appid.is_empty())
            .then(|| (config.component_appid.clone(), config.component_app_secret.clone()));
        Self { app, directory, component }
    }
}

fn store_error(e: impl std::fmt::Display) -> TokenError {
    TokenError::Store(e.to_string())
}

#[async_trait]
impl TokenSources for TenantTokenSources {
    async fn app_secret(&self, appid: &str) -> Result<Option<String>, TokenError> {
        let Ok(appid) = AppId::parse(appid) else {
            return Ok(None);
        };
        let Some((tenant, _)) = self.directory.lookup(&self.app, &appid).await.map_err(store_error)? else {
            return Ok(None);
        };
        let shard = self.app.router.route(&tenant).map_err(store_error)?;
        let (state, _): (Tenant, u64) = shard.tenants.load(&tenant, tenant.as_str()).await.map_err(store_error)?;
        match state.accounts.get(appid.as_str()) {
            Some(account) => Ok(Some(self.app.sealer.open(&account.app_secret).map_err(store_error)?)),
            None => Ok(None),
        }
    }

    async fn component_secret(&self, component_appid: &str) -> Result<Option<String>, TokenError> {
        Ok(self.component.as_ref().filter(|(appid, _)| appid == component_appid).map(|(_, secret)| secret.clone()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WiringError {
    #[error("wechat client: {0}")]
    Client(#[from] WechatError),
    #[error("wechat pay client: {0}")]
    Pay(#[from] PayClientError),
}

/// The shared token center, the outbound clients and the member API's OAuth of this node.
pub struct WechatSide {
    pub directory: Arc<AccountDirectory>,
    pub pay: Arc<WechatPayClient>,
    pub oauth: Arc<OauthAdapter>,
    pub tokens: Arc<TokenCenter>,
    pub client: Arc<WechatClient>,
    /// What the callback endpoints and the WeChat admin API call out through.
    pub outbound: Arc<ClientOutbound>,
}

pub fn build(app: Arc<App>, control_pool: PgPool, config: &WechatConfig) -> Result<WechatSide, WiringError> {
    let http = Arc::new(WechatHttp::new(config.client_config())?);
    let store = Arc::new(PgTokenStore::new(control_pool));
    // One appid → tenant cache per node, shared by every part that needs it.
    let directory = Arc::new(AccountDirectory::default());
    let sources = Arc::new(TenantTokenSources::new(app.clone(), directory.clone(), config));
    let tokens =
        Arc::new(TokenCenter::new(store, sources, http.clone(), app.sealer.clone(), TokenCenterConfig::default()));
    let client = Arc::new(WechatClient::new(http.clone(), tokens.clone()));
    let component_appid = (!config.component_appid.is_empty()).then(|| config.component_appid.clone());
    let mut outbound =
        ClientOutbound::new(WechatClient::new(http, tokens.clone()), component_appid, &config.public_base_url);
    outbound.follow_url_template = (!config.follow_url_template.is_empty()).then(|| config.follow_url_template.clone());
    let outbound = Arc::new(outbound);
    let pay = Arc::new(pay_client(config)?);
    let oauth = Arc::new(OauthAdapter::new(app, outbound.clone(), directory.clone()));
    Ok(WechatSide { directory, pay, oauth, tokens, client, outbound })
}

/// WeChat web OAuth for the member API, through the outbound client: the
/// account's mode decides between the direct and the component exchange.
pub struct OauthAdapter {
    app: Arc<App>,
    outbound: Arc<ClientOutbound>,
    directory: Arc<AccountDirectory>,
}

impl OauthAdapter {
    pub fn new(app: Arc<App>, outbound: Arc<ClientOutbound>, directory: Arc<AccountDirectory>) -> Self {
        Self { app, outbound, directory }
    }
}

#[async_trait]
impl OauthExchange for OauthAdapter {
    async fn openid_for_code(&self, appid: &AppId, code: &str) -> Result<OpenId, PayFlowError> {
        let retry = |e: &dyn std::fmt::Display| PayFlowError::Retry(e.to_string());
        let Some((tenant, mode)) = self.directory.lookup(&self.app, appid).await.map_err(|e| retry(&e))? else {
            return Err(PayFlowError::UnknownAccount(appid.as_str().to_owned()));
        };
        let secret = match mode {
            AccountMode::Direct => {
                let shard = self.app.router.route(&tenant).map_err(|e| retry(&e))?;
                let (state, _): (Tenant, u64) =
                    shard.tenants.load(&tenant, tenant.as_str()).await.map_err(|e| retry(&e))?;
                match state.accounts.get(appid.as_str()) {
                    Some(account) => Some(self.app.sealer.open(&account.app_secret).map_err(|e| retry(&e))?),
                    None => None,
                }
            }
            AccountMode::Component => None,
        };
        let openid = self.outbound.oauth_openid(appid, mode, secret.as_deref(), code).await.map_err(|e| match e {
            OutboundError::Rejected(why) => PayFlowError::CodeRefused(why),
            other => PayFlowError::Retry(other.to_string()),
        })?;
        OpenId::parse(&openid).map_err(|e| PayFlowError::Refused(format!("WeChat returned a bad openid: {e}")))
    }
}

/// The WeChat Pay client from configuration (base URL, optional platform key for v3 answers).
pub fn pay_client(config: &WechatConfig) -> Result<WechatPayClient, PayClientError> {
    let client =
        WechatPayClient::new(PayClientSettings { base_url: config.pay_base_url.clone(), ..Default::default() })?;
    if config.pay_platform_serial.is_empty() || config.pay_platform_public_key_pem.is_empty() {
        return Ok(client);
    }
    client.with_platform_key(&config.pay_platform_serial, &config.pay_platform_public_key_pem)
}
