//! What every handler is given.

use std::sync::Arc;

use async_trait::async_trait;
use wxcm_commands::auth::{self, AuthError};
use wxcm_commands::ports::AdminSession;
use wxcm_commands::App;

use crate::ratelimit::LoginLimiter;
use crate::Readiness;

/// Bearer token → session. In production this is `commands::auth`
/// ([`AppSessions`]); the crate's router tests put fixed sessions in front of
/// an `App` without shards, so no database is involved either way.
#[async_trait]
pub(crate) trait SessionResolver: Send + Sync {
    async fn resolve(&self, token: &str) -> Result<Option<AdminSession>, AuthError>;
    async fn revoke(&self, token: &str) -> Result<(), AuthError>;
}

pub(crate) struct AppSessions(pub Arc<App>);

#[async_trait]
impl SessionResolver for AppSessions {
    async fn resolve(&self, token: &str) -> Result<Option<AdminSession>, AuthError> {
        auth::authenticate(&self.0, token).await
    }

    async fn revoke(&self, token: &str) -> Result<(), AuthError> {
        auth::logout(&self.0, token).await
    }
}

#[derive(Clone)]
pub(crate) struct AppState {
    pub app: Arc<App>,
    pub sessions: Arc<dyn SessionResolver>,
    pub readiness: Arc<dyn Readiness>,
    pub login_limits: Arc<LoginLimiter>,
    pub openapi_json: Arc<str>,
    pub wechat: Arc<crate::wechat_edge::WechatEdge>,
    pub member: crate::resources::member_api::MemberPorts,
    /// `HttpSettings::body_bytes_max`, for layers that read a body themselves.
    pub body_bytes_max: usize,
}
