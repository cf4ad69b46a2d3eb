//! [`WechatOutbound`] over the real client ([`WechatClient`]) and its token
//! center: what the callbacks and the admin API send to WeChat.

use async_trait::async_trait;
use serde_json::Value;
use wxcm_commands::wechat::{AccountMode, ReplyContent};
use wxcm_domain::tenant::SealedSecret;
use wxcm_domain::{AppId, OpenId};

use crate::wechat_edge::{AuthorizationStart, CreatedQrCode, OutboundError, WechatOutbound};
use wxcm_outbound::wechat::client::{Account, Article, CustomMessage, OAuthScope, QrCode};
use wxcm_outbound::wechat::{WechatClient, WechatError};

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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;
    use wxcm_commands::ports::{PortError, SecretSealer};

    use super::*;
    use wxcm_outbound::wechat::tokens::{MemoryTokenStore, StaticTokenSources, TokenCenter, TokenCenterConfig};
    use wxcm_outbound::wechat::{ClientConfig, WechatHttp};
    use wxcm_simulator::wechat::{serve, SandboxConfig, SandboxHandle};

    const APPID: &str = "wx0123456789abcdef";
    const SECRET: &str = "direct-secret";
    const COMPONENT: &str = "wxcomponent0001";
    const COMPONENT_SECRET: &str = "component-secret";
    const AUTHORIZER: &str = "wxfedcba9876543210";

    struct PlainSealer;
    impl SecretSealer for PlainSealer {
        fn seal(&self, p: &str) -> Result<SealedSecret, PortError> {
            Ok(SealedSecret::from_ciphertext(format!("plain:{p}")))
        }
        fn open(&self, s: &SealedSecret) -> Result<String, PortError> {
            s.ciphertext().strip_prefix("plain:").map(str::to_owned).ok_or_else(|| PortError::msg("not sealed"))
        }
    }

    async fn setup() -> (SandboxHandle, ClientOutbound, reqwest::Client) {
        let sandbox =
            serve(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(), SandboxConfig::default()).await.unwrap();
        let http = reqwest::Client::new();
        for (appid, secret) in [(APPID, SECRET), (COMPONENT, COMPONENT_SECRET)] {
            let r = http
                .post(format!("{}/sandbox/apps", sandbox.base_url))
                .json(&json!({"appid": appid, "secret": secret}));
            assert!(r.send().await.unwrap().status().is_success());
        }
        let config = ClientConfig {
            api_base: sandbox.base_url.clone(),
            open_base: sandbox.base_url.clone(),
            mp_base: sandbox.base_url.clone(),
            ..ClientConfig::default()
        };
        let transport = Arc::new(WechatHttp::new(config).unwrap());
        let sources = StaticTokenSources {
            app_secrets: [(APPID.to_owned(), SECRET.to_owned())].into(),
            component_secrets: [(COMPONENT.to_owned(), COMPONENT_SECRET.to_owned())].into(),
        };
        let center = Arc::new(TokenCenter::new(
            Arc::new(MemoryTokenStore::default()),
            Arc::new(sources),
            transport.clone(),
            Arc::new(PlainSealer),
            TokenCenterConfig::default(),
        ));
        let outbound = ClientOutbound::new(WechatClient::new(transport, center), Some(COMPONENT.into()), "http://crm/");
        (sandbox, outbound, http)
    }

    async fn control(http: &reqwest::Client, sandbox: &SandboxHandle, path: &str, body: serde_json::Value) -> Value {
        let r = http.post(format!("{}{path}", sandbox.base_url)).json(&body).send().await.unwrap();
        assert!(r.status().is_success(), "{path}");
        r.json().await.unwrap()
    }

    #[tokio::test]
    async fn the_component_chain_returns_the_sealed_refresh_token() {
        let (sandbox, outbound, http) = setup().await;
        assert_eq!(outbound.public_base_url(), Some("http://crm".to_owned()));
        let ticket = control(&http, &sandbox, "/sandbox/component/ticket", json!({"component_appid": COMPONENT})).await;
        outbound.store_verify_ticket(ticket["ticket"].as_str().unwrap()).await.unwrap();
        let code = control(
            &http,
            &sandbox,
            "/sandbox/component/authorizations",
            json!({"component_appid": COMPONENT, "authorizer_appid": AUTHORIZER}),
        )
        .await;
        let (appid, sealed) = outbound.query_auth(code["authorization_code"].as_str().unwrap()).await.unwrap();
        assert_eq!(appid, AUTHORIZER);
        assert!(PlainSealer.open(&sealed).unwrap().len() > 8);
        // Late replies to the authorized account go out with its authorizer token.
        let reply = ReplyContent::Text { content: "hello".into() };
        let openid = OpenId::parse("o_member_000001").unwrap();
        outbound.send_custom_message(&AppId::parse(AUTHORIZER).unwrap(), &openid, &reply).await.unwrap();
        // A used code is refused.
        assert!(outbound.query_auth(code["authorization_code"].as_str().unwrap()).await.is_err());
        let start = outbound.start_authorization("https://crm.example.com/done").await.unwrap();
        assert!(start.authorization_url.contains(&start.pre_auth_code.replace('@', "%40")));
        sandbox.stop().await;
    }

    #[tokio::test]
    async fn direct_accounts_create_qr_codes_publish_menus_and_exchange_codes() {
        let (sandbox, outbound, http) = setup().await;
        let appid = AppId::parse(APPID).unwrap();
        let qr = outbound.create_qr_code(&appid, AccountMode::Direct, "poster", Some(600)).await.unwrap();
        assert!(!qr.ticket.is_empty() && qr.expire_seconds.is_some());
        let permanent = outbound.create_qr_code(&appid, AccountMode::Direct, "door", None).await.unwrap();
        assert_eq!(permanent.expire_seconds, None);
        let menu = json!({"button": [{"type": "click", "name": "Points", "key": "POINTS"}]});
        outbound.publish_menu(&appid, AccountMode::Direct, &menu).await.unwrap();
        let url = outbound.oauth_authorize_url(&appid, AccountMode::Direct, "http://crm/cb", "s.t").unwrap();
        assert!(url.contains("snsapi_base") && !url.contains("component_appid"));
        let code =
            control(&http, &sandbox, "/sandbox/oauth/codes", json!({"appid": APPID, "openid": "o_visitor_1"})).await;
        let code = code["code"].as_str().unwrap();
        assert_eq!(
            outbound.oauth_openid(&appid, AccountMode::Direct, Some(SECRET), code).await.unwrap(),
            "o_visitor_1"
        );
        let again = outbound.oauth_openid(&appid, AccountMode::Direct, Some(SECRET), code).await;
        assert!(matches!(again, Err(OutboundError::Rejected(_))), "{again:?}");
        assert!(matches!(
            outbound.oauth_openid(&appid, AccountMode::Direct, None, "x").await,
            Err(OutboundError::Unavailable(_))
        ));
        sandbox.stop().await;
    }
}
