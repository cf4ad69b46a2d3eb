//! Tenant use cases. Secrets are sealed before they reach an event and are
//! never returned: views only say whether a secret is set.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use wxcm_domain::tenant::{
    ComponentAccount, OfficialAccount, PaySettings, Tenant, TenantCommand, TenantError, TenantEvent,
};
use wxcm_domain::{Actor, AppId, EventSourced, TenantId};

use crate::executor::{CommandContext, ExecuteError, Outcome};
use crate::ports::{App, PortError, RouteError};

pub const TENANTS_PAGE_MAX: u32 = 1000;
pub const SECRET_LEN_MAX: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum TenantOpError {
    #[error("tenant not found")]
    NotFound,
    #[error(transparent)]
    Rejected(#[from] TenantError),
    #[error("invalid input: {0}")]
    Invalid(String),
    #[error("idempotency key was already used with a different request")]
    IdempotencyMismatch,
    #[error("too much contention, try again")]
    Contention,
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error("infrastructure failure: {0}")]
    Infra(String),
    /// The database or broker is unreachable for now; a write's outcome is unknown.
    #[error("infrastructure unavailable: {0}")]
    Unavailable(String),
}

impl From<PortError> for TenantOpError {
    fn from(e: PortError) -> Self {
        if e.is_transient() {
            TenantOpError::Unavailable(e.to_string())
        } else {
            TenantOpError::Infra(e.to_string())
        }
    }
}

impl From<ExecuteError<TenantError>> for TenantOpError {
    fn from(e: ExecuteError<TenantError>) -> Self {
        match e {
            ExecuteError::Domain(TenantError::NotFound) | ExecuteError::ForeignAggregate => TenantOpError::NotFound,
            ExecuteError::Domain(d) => TenantOpError::Rejected(d),
            ExecuteError::IdempotencyMismatch => TenantOpError::IdempotencyMismatch,
            ExecuteError::Contention => TenantOpError::Contention,
            ExecuteError::Invariant(broken) => TenantOpError::Infra(broken.to_string()),
            ExecuteError::Store(s) => TenantOpError::Infra(s),
            ExecuteError::Unavailable(s) => TenantOpError::Unavailable(s),
        }
    }
}

/// How an official account is bound to the tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountBinding {
    /// Developer mode: the owner entered the account's token, AES key and app secret.
    Direct,
    /// Authorized to wxcm's third-party platform, which acts for it with a refresh token.
    Component,
}

/// An official account, direct or component, without its secrets.
#[derive(Debug, Clone, Serialize)]
pub struct AccountView {
    pub appid: String,
    pub binding: AccountBinding,
    /// The name the owner gave a direct account; empty for a component account
    /// (its profile stays with WeChat).
    pub name: String,
    pub has_token: bool,
    pub has_encoding_aes_key: bool,
    pub has_app_secret: bool,
    pub mch_id: Option<String>,
    pub has_pay_api_v2_key: bool,
    pub has_pay_api_v3_key: bool,
    /// When the last authorization through the third-party platform was recorded (component only).
    pub authorized_at: Option<DateTime<Utc>>,
    pub has_refresh_token: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct TenantView {
    pub tenant_id: String,
    pub name: String,
    pub created_at: Option<DateTime<Utc>>,
    /// Every bound account, direct and component, by appid.
    pub official_accounts: Vec<AccountView>,
    pub version: u64,
}

impl AccountView {
    fn direct(a: &OfficialAccount) -> Self {
        AccountView {
            appid: a.appid.to_string(),
            binding: AccountBinding::Direct,
            name: a.name.clone(),
            has_token: !a.token.ciphertext().is_empty(),
            has_encoding_aes_key: !a.encoding_aes_key.ciphertext().is_empty(),
            has_app_secret: !a.app_secret.ciphertext().is_empty(),
            mch_id: a.pay.as_ref().map(|p| p.mch_id.clone()),
            has_pay_api_v2_key: a.pay.as_ref().is_some_and(|p| p.api_v2_key.is_some()),
            has_pay_api_v3_key: a.pay.as_ref().is_some_and(|p| p.api_v3_key.is_some()),
            authorized_at: None,
            has_refresh_token: false,
        }
    }

    fn component(a: &ComponentAccount) -> Self {
        AccountView {
            appid: a.appid.to_string(),
            binding: AccountBinding::Component,
            name: String::new(),
            has_token: false,
            has_encoding_aes_key: false,
            has_app_secret: false,
            mch_id: None,
            has_pay_api_v2_key: false,
            has_pay_api_v3_key: false,
            authorized_at: a.authorized_at,
            has_refresh_token: !a.refresh_token.ciphertext().is_empty(),
        }
    }
}

impl TenantView {
    fn from_state(t: &Tenant) -> Option<Self> {
        let tenant_id = t.tenant_id.as_ref()?.to_string();
        // The domain keeps an appid in at most one of the two maps.
        let mut official_accounts: Vec<AccountView> = t
            .accounts
            .values()
            .map(AccountView::direct)
            .chain(t.component_accounts.values().map(AccountView::component))
            .collect();
        official_accounts.sort_by(|a, b| a.appid.cmp(&b.appid));
        Some(Self { tenant_id, name: t.name.clone(), created_at: t.created_at, official_accounts, version: t.version })
    }
}

pub async fn create(
    app: &App,
    tenant: &TenantId,
    name: &str,
    actor: Actor,
    ctx: &CommandContext,
) -> Result<TenantView, TenantOpError> {
    let shard = app.router.route(tenant)?;
    let command = TenantCommand::Create { tenant_id: tenant.clone(), name: name.to_owned(), actor };
    shard.tenants.execute(tenant.as_str(), command.clone(), &command, ctx).await?;
    get(app, tenant).await
}

pub async fn get(app: &App, tenant: &TenantId) -> Result<TenantView, TenantOpError> {
    let shard = app.router.route(tenant)?;
    let (state, _) = shard.tenants.load(tenant, tenant.as_str()).await?;
    TenantView::from_state(&state).ok_or(TenantOpError::NotFound)
}

/// Every tenant of every configured shard.
pub async fn list(app: &App) -> Result<Vec<(String, TenantView)>, TenantOpError> {
    let mut out = Vec::new();
    for shard in app.router.shards() {
        let ids = shard.event_log.all_stream_ids(Tenant::TYPE, None, TENANTS_PAGE_MAX).await?;
        for id in ids {
            // A tenant's stream id is the tenant id: it loads as itself.
            let Ok(tenant) = TenantId::parse(&id) else { continue };
            let (state, _) = shard.tenants.load(&tenant, &id).await?;
            if let Some(view) = TenantView::from_state(&state) {
                out.push((shard.name.clone(), view));
            }
        }
    }
    Ok(out)
}

/// Plain-text settings of an official account, as an owner submits them.
/// `Debug` shows no secret.
#[derive(Clone, Deserialize)]
pub struct AccountInput {
    pub appid: String,
    pub name: String,
    pub token: String,
    pub encoding_aes_key: String,
    pub app_secret: String,
    pub pay: Option<PayInput>,
}

/// `Debug` shows the merchant id and which of the others are set.
#[derive(Clone, Deserialize)]
pub struct PayInput {
    pub mch_id: String,
    pub api_v2_key: Option<String>,
    pub api_v3_key: Option<String>,
    pub merchant_cert_serial: Option<String>,
    pub merchant_private_key: Option<String>,
}

/// Stands in for a secret in `Debug` output.
const REDACTED: &str = "[redacted]";

impl std::fmt::Debug for AccountInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountInput")
            .field("appid", &self.appid)
            .field("name", &self.name)
            .field("token", &REDACTED)
            .field("encoding_aes_key", &REDACTED)
            .field("app_secret", &REDACTED)
            .field("pay", &self.pay)
            .finish()
    }
}

impl std::fmt::Debug for PayInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayInput")
            .field("mch_id", &self.mch_id)
            .field("api_v2_key", &self.api_v2_key.as_ref().map(|_| REDACTED))
            .field("api_v3_key", &self.api_v3_key.as_ref().map(|_| REDACTED))
            .field("merchant_cert_serial", &self.merchant_cert_serial.as_ref().map(|_| REDACTED))
            .field("merchant_private_key", &self.merchant_private_key.as_ref().map(|_| REDACTED))
            .finish()
    }
}

/// What is hashed for idempotency: the request with secrets replaced by
/// their SHA-256, so equal requests compare equal without keeping plaintext.
#[derive(Serialize)]
struct AccountFingerprint {
    appid: String,
    name: String,
    secrets: Vec<String>,
    mch_id: Option<String>,
    serial: Option<String>,
}

fn fingerprint(input: &AccountInput) -> AccountFingerprint {
    use sha2::{Digest, Sha256};
    let h = |s: &str| hex::encode(Sha256::digest(s.as_bytes()));
    let mut secrets = vec![h(&input.token), h(&input.encoding_aes_key), h(&input.app_secret)];
    if let Some(p) = &input.pay {
        for s in [&p.api_v2_key, &p.api_v3_key, &p.merchant_private_key] {
            secrets.push(s.as_deref().map(h).unwrap_or_default());
        }
    }
    AccountFingerprint {
        appid: input.appid.clone(),
        name: input.name.clone(),
        secrets,
        mch_id: input.pay.as_ref().map(|p| p.mch_id.clone()),
        serial: input.pay.as_ref().and_then(|p| p.merchant_cert_serial.clone()),
    }
}

fn check_secret(what: &str, s: &str) -> Result<(), TenantOpError> {
    if s.is_empty() || s.len() > SECRET_LEN_MAX {
        return Err(TenantOpError::Invalid(format!("{what} must be 1..={SECRET_LEN_MAX} bytes")));
    }
    Ok(())
}

/// The token and app secret WeChat issues are printable ASCII (letters and digits).
fn check_account_secret(what: &str, s: &str) -> Result<(), TenantOpError> {
    if s.is_empty() || s.len() > SECRET_LEN_MAX || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(TenantOpError::Invalid(format!(
            "{what} must be 1..={SECRET_LEN_MAX} printable ASCII characters without spaces"
        )));
    }
    Ok(())
}

/// Pay's API keys are 32 characters (v3: exactly 32 bytes, the AES-256-GCM
/// key); a wrong one would only surface when a notification fails to verify.
pub const PAY_API_KEY_CHARS: usize = 32;
/// Merchant certificate serials are hexadecimal (40 characters at Pay today).
pub const MERCHANT_CERT_SERIAL_CHARS_MAX: usize = 64;

/// The merchant fields whose format Pay fixes, checked at bind time.
fn check_pay_formats(p: &PayInput) -> Result<(), TenantOpError> {
    let api_key = |what: &str, key: &Option<String>| match key {
        Some(k) if k.len() != PAY_API_KEY_CHARS || !k.bytes().all(|b| b.is_ascii_graphic()) => Err(
            TenantOpError::Invalid(format!("{what} must be exactly {PAY_API_KEY_CHARS} printable ASCII characters")),
        ),
        _ => Ok(()),
    };
    api_key("api_v2_key", &p.api_v2_key)?;
    api_key("api_v3_key", &p.api_v3_key)?;
    if let Some(serial) = &p.merchant_cert_serial {
        if serial.is_empty()
            || serial.len() > MERCHANT_CERT_SERIAL_CHARS_MAX
            || !serial.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(TenantOpError::Invalid(format!(
                "merchant_cert_serial must be 1..={MERCHANT_CERT_SERIAL_CHARS_MAX} hexadecimal characters"
            )));
        }
    }
    if let Some(pem) = &p.merchant_private_key {
        let trimmed = pem.trim();
        if !(pem.is_ascii() && trimmed.starts_with("-----BEGIN ") && trimmed.contains("PRIVATE KEY-----")) {
            return Err(TenantOpError::Invalid("merchant_private_key must be a PEM private key".into()));
        }
    }
    Ok(())
}

pub async fn bind_account(
    app: &App,
    tenant: &TenantId,
    input: AccountInput,
    actor: Actor,
    ctx: &CommandContext,
) -> Result<TenantView, TenantOpError> {
    let appid = AppId::parse(&input.appid).map_err(|e| TenantOpError::Invalid(e.to_string()))?;
    check_account_secret("token", &input.token)?;
    if input.encoding_aes_key.len() != 43 || !input.encoding_aes_key.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(TenantOpError::Invalid("encoding_aes_key must be 43 letters and digits".into()));
    }
    check_account_secret("app_secret", &input.app_secret)?;
    let seal = |s: &str| app.sealer.seal(s).map_err(|e| TenantOpError::Infra(e.to_string()));
    let seal_opt = |s: &Option<String>| -> Result<_, TenantOpError> {
        match s {
            Some(v) => {
                check_secret("pay secret", v)?;
                Ok(Some(seal(v)?))
            }
            None => Ok(None),
        }
    };
    let pay = match &input.pay {
        Some(p) => {
            if p.mch_id.is_empty() || p.mch_id.len() > 32 || !p.mch_id.chars().all(|c| c.is_ascii_digit()) {
                return Err(TenantOpError::Invalid("mch_id must be 1..=32 digits".into()));
            }
            check_pay_formats(p)?;
            Some(PaySettings {
                mch_id: p.mch_id.clone(),
                api_v2_key: seal_opt(&p.api_v2_key)?,
                api_v3_key: seal_opt(&p.api_v3_key)?,
                merchant_cert_serial: p.merchant_cert_serial.clone(),
                merchant_private_key: seal_opt(&p.merchant_private_key)?,
            })
        }
        None => None,
    };
    let account = OfficialAccount {
        appid,
        name: input.name.clone(),
        token: seal(&input.token)?,
        encoding_aes_key: seal(&input.encoding_aes_key)?,
        app_secret: seal(&input.app_secret)?,
        pay,
    };
    // One appid, one tenant, across every shard (a shard's own index only sees itself).
    crate::wechat::ensure_appid_free(app, tenant, &account.appid).await.map_err(|e| match e {
        crate::wechat::WechatOpError::Invalid(why) => TenantOpError::Invalid(why),
        crate::wechat::WechatOpError::Route(r) => TenantOpError::Route(r),
        other => TenantOpError::Infra(other.to_string()),
    })?;
    let shard = app.router.route(tenant)?;
    let command = TenantCommand::BindOfficialAccount { account, actor };
    let _: Outcome<TenantEvent> = shard.tenants.execute(tenant.as_str(), command, &fingerprint(&input), ctx).await?;
    get(app, tenant).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pay(v2: Option<&str>, v3: Option<&str>) -> PayInput {
        PayInput {
            mch_id: "1900000109".into(),
            api_v2_key: v2.map(Into::into),
            api_v3_key: v3.map(Into::into),
            merchant_cert_serial: Some("3775B6A45ACD588826D15E583A95F5DD2A9F7FA6".into()),
            merchant_private_key: Some("-----BEGIN PRIVATE KEY-----\nMII...\n-----END PRIVATE KEY-----\n".into()),
        }
    }

    #[test]
    fn the_view_lists_direct_and_component_accounts_without_secrets() {
        use wxcm_domain::tenant::SealedSecret;
        let sealed = |s: &str| SealedSecret::from_ciphertext(format!("v1:{s}"));
        let direct = AppId::parse("wx00000000000000bb").unwrap();
        let component = AppId::parse("wx00000000000000aa").unwrap();
        let mut tenant = Tenant { tenant_id: Some(TenantId::parse("acme").unwrap()), ..Tenant::default() };
        tenant.accounts.insert(
            direct.to_string(),
            OfficialAccount {
                appid: direct.clone(),
                name: "Main".into(),
                token: sealed("TOKEN-CANARY"),
                encoding_aes_key: sealed("AES-CANARY"),
                app_secret: sealed("SECRET-CANARY"),
                pay: None,
            },
        );
        let authorized_at = Utc::now();
        tenant.component_accounts.insert(
            component.to_string(),
            ComponentAccount {
                appid: component.clone(),
                refresh_token: sealed("REFRESH-CANARY"),
                authorized_at: Some(authorized_at),
            },
        );
        let view = TenantView::from_state(&tenant).unwrap();
        let listed: Vec<_> = view.official_accounts.iter().map(|a| (a.appid.as_str(), a.binding)).collect();
        assert_eq!(
            listed,
            [(component.as_str(), AccountBinding::Component), (direct.as_str(), AccountBinding::Direct)]
        );
        let c = &view.official_accounts[0];
        assert!(c.has_refresh_token && !c.has_app_secret && c.authorized_at == Some(authorized_at));
        let d = &view.official_accounts[1];
        assert!(d.has_app_secret && d.has_token && !d.has_refresh_token && d.authorized_at.is_none());
        let json = serde_json::to_string(&view).unwrap();
        assert!(!json.contains("CANARY") && !json.contains("v1:"), "{json}");
        assert!(json.contains(r#""binding":"component""#) && json.contains(r#""binding":"direct""#), "{json}");
    }

    #[test]
    fn debug_of_submitted_settings_shows_no_secret() {
        let input = AccountInput {
            appid: "wx00112233aabbccdd".into(),
            name: "Main".into(),
            token: "TOKEN-CANARY".into(),
            encoding_aes_key: "AES-KEY-CANARY".into(),
            app_secret: "SECRET-CANARY".into(),
            pay: Some(pay(Some("V2-KEY-CANARY"), Some("V3-KEY-CANARY"))),
        };
        let debug = format!("{input:?}");
        for hidden in ["CANARY", "PRIVATE KEY", "3775B6A45ACD"] {
            assert!(!debug.contains(hidden), "{hidden} in {debug}");
        }
        assert!(debug.contains("wx00112233aabbccdd") && debug.contains("1900000109"), "{debug}");
    }

    #[test]
    fn pay_keys_are_checked_at_bind_time_at_the_limit_and_one_past_it() {
        let key_32 = "0123456789abcdef0123456789abcdef";
        assert!(check_pay_formats(&pay(Some(key_32), Some(key_32))).is_ok());
        assert!(check_pay_formats(&pay(None, None)).is_ok());
        let key_31 = &key_32[..31];
        let key_33 = format!("{key_32}x");
        for bad in [key_31, key_33.as_str(), "0123456789abcdef0123456789abcde\u{e9}"] {
            assert!(matches!(check_pay_formats(&pay(None, Some(bad))), Err(TenantOpError::Invalid(_))), "{bad:?}");
            assert!(matches!(check_pay_formats(&pay(Some(bad), None)), Err(TenantOpError::Invalid(_))), "{bad:?}");
        }
        let mut p = pay(None, Some(key_32));
        p.merchant_cert_serial = Some("not-hex".into());
        assert!(check_pay_formats(&p).is_err());
        let mut p = pay(None, Some(key_32));
        p.merchant_private_key = Some("just a string".into());
        assert!(check_pay_formats(&p).is_err());
    }
}
