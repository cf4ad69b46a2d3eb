//! Pay's platform public keys (v3 notifications are verified with them).

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
    Ok(shard.pay.platform_key(mch_id, serial).await?)
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
    let shard = app.router.route(tenant).map_err(|e| PayFlowError::Retry(e.to_string()))?;
    Ok(shard.pay.put_platform_key(mch_id, serial, public_key_pem).await?)
}
