//! The WeChat admin API (tag `wechat`): one module per setting, each with its
//! handlers and its own bodies and answers:
//! - [`reply_rules`]: auto-reply rules (`/wechat/reply-rules`);
//! - [`points_rules`]: initial and referral points (`/tenant/points-rules`);
//! - [`qr_codes`]: scene QR codes and their statistics (`/wechat/qrcodes`);
//! - [`menus`]: custom menus, saved then published (`/wechat/menus/{appid}`);
//! - [`authorization`]: the third-party platform authorization start.
//!
//! Members' referral links and the public pages they open are
//! [`crate::resources::referral`]. Calls to WeChat go through
//! `AppState.wechat.outbound`; their failures are `ApiError`s like any other
//! (`From<OutboundError>`): 503 `wechat_not_configured`, 422 `wechat_rejected`,
//! 429 `wechat_quota_exhausted`, 502 `wechat_unavailable`.

use std::sync::Arc;

use wxcm_commands::ports::ShardServices;
use wxcm_commands::wechat::AccountMode;
use wxcm_domain::tenant::Tenant;
use wxcm_domain::{AppId, TenantId};

use crate::error::ApiError;
use crate::state::AppState;
use crate::wechat_edge::{OutboundError, WechatOutbound};

pub mod authorization;
pub mod menus;
pub mod points_rules;
pub mod qr_codes;
pub mod reply_rules;
#[cfg(test)]
mod tests;

pub(crate) fn outbound(state: &AppState) -> Result<Arc<dyn WechatOutbound>, ApiError> {
    state
        .wechat
        .outbound
        .clone()
        .ok_or_else(|| ApiError::from(OutboundError::Unavailable("no outbound WeChat client".into())))
}

pub(crate) fn public_base_url(outbound: &dyn WechatOutbound) -> Result<String, ApiError> {
    outbound
        .public_base_url()
        .map(|u| u.trim_end_matches('/').to_owned())
        .ok_or_else(|| ApiError::from(OutboundError::Unavailable("no public base URL configured".into())))
}

pub(crate) async fn tenant_state(shard: &ShardServices, tenant: &TenantId) -> Result<Tenant, ApiError> {
    let (state, _): (Tenant, u64) = shard.tenants.load(tenant, tenant.as_str()).await?;
    if state.tenant_id.is_none() {
        return Err(ApiError::not_found("tenant_not_found", "tenant not found"));
    }
    Ok(state)
}

/// How `appid` is bound to `tenant`; 404 `account_not_bound` when it is not.
pub(crate) fn account_mode(state: &Tenant, appid: &AppId) -> Result<AccountMode, ApiError> {
    if state.accounts.contains_key(appid.as_str()) {
        Ok(AccountMode::Direct)
    } else if state.component_accounts.contains_key(appid.as_str()) {
        Ok(AccountMode::Component)
    } else {
        Err(ApiError::not_found("account_not_bound", format!("official account {appid} is not bound")))
    }
}
