//! Pay's platform public keys (v3 notifications are verified with them).

use wxcm_domain::tenant::Tenant;
use wxcm_domain::TenantId;

use crate::ports::App;

use super::*;

/// The PEM public key of WeChat Pay's platform certificate `serial` for `mch_id`
/// (stored in the tenant's shard).
pub async fn platform_key_pem(
    app: &App,
    tenant: &TenantId,
    mch_id: &str,
    serial: &str,
) -> Result<Option<String>, PayFlowError> {
    let shard = app.router.route(tenant).map_err(|e| PayFlowError::Retry(e.to_string()))?;
    Ok(shard.pay.platform_key(tenant, mch_id, serial).await?)
}

/// Registers a platform key (operators, tests with the simulator's key).
pub async fn put_platform_key(
    app: &App,
    tenant: &TenantId,
    mch_id: &str,
    serial: &str,
    public_key_pem: &str,
) -> Result<(), PayFlowError> {
    if mch_id.is_empty()
        || mch_id.len() > 32
        || serial.is_empty()
        || serial.len() > 128
        || public_key_pem.len() > 16_384
    {
        return Err(PayFlowError::Refused("platform key fields out of bounds".into()));
    }
    // Only for a merchant the tenant has bound: a key decides which notifications
    // verify, so it must never be registered for another tenant's merchant.
    let shard = app.router.route(tenant).map_err(|e| PayFlowError::Retry(e.to_string()))?;
    let (state, _): (Tenant, u64) = shard.tenants.load(tenant, tenant.as_str()).await?;
    let owns_merchant = state.accounts.values().any(|a| a.pay.as_ref().is_some_and(|p| p.mch_id == mch_id));
    if !owns_merchant {
        return Err(PayFlowError::Refused(format!("tenant {tenant} has no account bound to merchant {mch_id}")));
    }
    Ok(shard.pay.put_platform_key(tenant, mch_id, serial, public_key_pem).await?)
}
