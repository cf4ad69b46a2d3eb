//! Builds the WeChat side of a node: the token center on the default shard's
//! database (shared by every node), the outbound client, and where the token
//! center's credentials come from (the tenants' sealed app secrets).

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::PgPool;
use wxcm_commands::wechat::AccountDirectory;
use wxcm_commands::App;
use wxcm_domain::tenant::Tenant;
use wxcm_domain::AppId;
use wxcm_gateways::wechat_api::client::WechatClient;
use wxcm_gateways::wechat_api::error::{TokenError, WechatError};
use wxcm_gateways::wechat_api::http::WechatHttp;
use wxcm_gateways::wechat_api::tokens::{TokenCenter, TokenCenterConfig, TokenSources};
use wxcm_gateways::ClientOutbound;

use crate::config::WechatConfig;
use crate::tokens::PgTokenStore;

/// App secrets from the tenant that owns the appid; the component secret from configuration.
pub struct TenantTokenSources {
    app: Arc<App>,
    directory: AccountDirectory,
    component: Option<(String, String)>,
}

impl TenantTokenSources {
    pub fn new(app: Arc<App>, config: &WechatConfig) -> Self {
        let component = (!config.component_appid.is_empty())
            .then(|| (config.component_appid.clone(), config.component_app_secret.clone()));
        Self { app, directory: AccountDirectory::default(), component }
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
        let (state, _): (Tenant, u64) = shard.tenants.load(tenant.as_str()).await.map_err(store_error)?;
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
}

/// The shared token center and the outbound client of this node.
pub struct WechatSide {
    pub tokens: Arc<TokenCenter>,
    pub client: Arc<WechatClient>,
    /// What the callback endpoints and the WeChat admin API call out through.
    pub outbound: Arc<ClientOutbound>,
}

pub fn build(app: Arc<App>, control_pool: PgPool, config: &WechatConfig) -> Result<WechatSide, WiringError> {
    let http = Arc::new(WechatHttp::new(config.client_config())?);
    let store = Arc::new(PgTokenStore::new(control_pool));
    let sources = Arc::new(TenantTokenSources::new(app.clone(), config));
    let tokens =
        Arc::new(TokenCenter::new(store, sources, http.clone(), app.sealer.clone(), TokenCenterConfig::default()));
    let client = Arc::new(WechatClient::new(http.clone(), tokens.clone()));
    let component_appid = (!config.component_appid.is_empty()).then(|| config.component_appid.clone());
    let mut outbound =
        ClientOutbound::new(WechatClient::new(http, tokens.clone()), component_appid, &config.public_base_url);
    outbound.follow_url_template = (!config.follow_url_template.is_empty()).then(|| config.follow_url_template.clone());
    Ok(WechatSide { tokens, client, outbound: Arc::new(outbound) })
}
