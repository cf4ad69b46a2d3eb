//! Member sessions for the member API: a WeChat OAuth code exchanged for a session token.

use async_trait::async_trait;
use chrono::Duration;
use wxcm_domain::{Actor, AppId, OpenId};

use crate::executor::CommandContext;
use crate::members::{self, system_key};
use crate::ports::App;

use super::*;

/// Member sessions last this long.
pub const MEMBER_SESSION_TTL_HOURS: i64 = 2;
/// Longest OAuth code accepted.
pub const OAUTH_CODE_LEN_MAX: usize = 128;

/// WeChat web OAuth: a `code` from the member's browser → the member's openid
/// for `appid` (wired by the composition root to the WeChat client).
#[async_trait]
pub trait OauthExchange: Send + Sync {
    async fn openid_for_code(&self, appid: &AppId, code: &str) -> Result<OpenId, PayFlowError>;
}

/// `POST /m/api/v1/sessions {appid, code}`: exchanges the code, finds or
/// registers the member (source OAuth) and opens a session. The token is
/// `<tenant>.<random>`; only its SHA-256 is stored.
pub async fn member_login(
    app: &App,
    directory: &crate::wechat::AccountDirectory,
    oauth: &dyn OauthExchange,
    appid: &AppId,
    code: &str,
) -> Result<(String, MemberSession), PayFlowError> {
    if code.is_empty() || code.len() > OAUTH_CODE_LEN_MAX || !code.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(PayFlowError::Refused("invalid code".into()));
    }
    let (tenant, _) = directory
        .lookup(app, appid)
        .await
        .map_err(|e| PayFlowError::Retry(e.to_string()))?
        .ok_or_else(|| PayFlowError::UnknownAccount(appid.as_str().to_owned()))?;
    let openid = oauth.openid_for_code(appid, code).await?;
    let key = system_key(&["oauth-register", tenant.as_str(), openid.as_str()]).map_err(infra)?;
    let request = members::RegisterRequest {
        openid: Some(openid.clone()),
        source: wxcm_domain::member::RegistrationSource::Oauth,
        card_level: wxcm_domain::member::CardLevel::standard(),
    };
    let (view, _) = members::register(
        app,
        &tenant,
        request,
        Actor::Wechat { source: "oauth".into() },
        &CommandContext::new(tenant.clone(), key, "system:oauth".into()),
    )
    .await?;
    let mut random = [0u8; 32];
    rand::fill(&mut random);
    let token = format!("{}.{}", tenant, hex::encode(random));
    let session = MemberSession {
        tenant_id: tenant.clone(),
        member_id: view.member_id,
        appid: appid.clone(),
        openid,
        expires_at: app.clock.now() + Duration::hours(MEMBER_SESSION_TTL_HOURS),
    };
    let shard = app.router.route(&tenant).map_err(|e| PayFlowError::Retry(e.to_string()))?;
    shard.pay.create_member_session(&crate::auth::token_hash(&token), &session).await?;
    Ok((token, session))
}

/// The live member session behind a bearer token, if any.
pub async fn member_session(app: &App, token: &str) -> Result<Option<MemberSession>, PayFlowError> {
    let Some(tenant) = crate::auth::token_tenant(token) else { return Ok(None) };
    let Ok(shard) = app.router.route(&tenant) else { return Ok(None) };
    let session = shard.pay.find_member_session(&crate::auth::token_hash(token)).await?;
    Ok(session.filter(|s| s.tenant_id == tenant && s.expires_at > app.clock.now()))
}
