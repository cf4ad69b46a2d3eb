//! The tenant (merchant) aggregate: name and bound official accounts.
//!
//! Secrets arrive sealed (encrypted by the application layer with a key from
//! the environment); the domain stores them opaquely and never shows them.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Actor, AppId, DomainEventMeta, EventSourced, TenantId};

pub const OFFICIAL_ACCOUNTS_MAX: usize = 50;
pub const TENANT_NAME_LEN_MAX: usize = 100;

/// Ciphertext of a secret. Debug and Display never show it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct SealedSecret(String);

impl SealedSecret {
    pub fn from_ciphertext(ciphertext: String) -> Self {
        Self(ciphertext)
    }
    pub fn ciphertext(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealedSecret(..)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PaySettings {
    pub mch_id: String,
    pub api_v2_key: Option<SealedSecret>,
    pub api_v3_key: Option<SealedSecret>,
    pub merchant_cert_serial: Option<String>,
    pub merchant_private_key: Option<SealedSecret>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OfficialAccount {
    pub appid: AppId,
    #[schemars(length(min = 1, max = TENANT_NAME_LEN_MAX))]
    pub name: String,
    pub token: SealedSecret,
    pub encoding_aes_key: SealedSecret,
    pub app_secret: SealedSecret,
    pub pay: Option<PaySettings>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum TenantCommand {
    Create {
        tenant_id: TenantId,
        name: String,
        actor: Actor,
    },
    Rename {
        name: String,
        actor: Actor,
    },
    /// Binds a new account or replaces the settings of a bound one.
    BindOfficialAccount {
        account: OfficialAccount,
        actor: Actor,
    },
    UnbindOfficialAccount {
        appid: AppId,
        actor: Actor,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TenantEvent {
    TenantCreated {
        tenant_id: TenantId,
        #[schemars(length(min = 1, max = TENANT_NAME_LEN_MAX))]
        name: String,
        created_at: DateTime<Utc>,
        actor: Actor,
    },
    TenantRenamed {
        #[schemars(length(min = 1, max = TENANT_NAME_LEN_MAX))]
        name: String,
        actor: Actor,
    },
    OfficialAccountBound {
        account: OfficialAccount,
        actor: Actor,
    },
    OfficialAccountUnbound {
        appid: AppId,
        actor: Actor,
    },
}

impl DomainEventMeta for TenantEvent {
    fn event_type(&self) -> &'static str {
        match self {
            TenantEvent::TenantCreated { .. } => "TenantCreated",
            TenantEvent::TenantRenamed { .. } => "TenantRenamed",
            TenantEvent::OfficialAccountBound { .. } => "OfficialAccountBound",
            TenantEvent::OfficialAccountUnbound { .. } => "OfficialAccountUnbound",
        }
    }
    fn event_version(&self) -> &'static str {
        "1"
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantError {
    #[error("tenant does not exist")]
    NotFound,
    #[error("tenant already exists")]
    AlreadyExists,
    #[error("tenant name must be 1..={TENANT_NAME_LEN_MAX} characters without control characters")]
    InvalidName,
    #[error("too many official accounts (max {OFFICIAL_ACCOUNTS_MAX})")]
    TooManyAccounts,
    #[error("official account {0} is not bound")]
    AccountNotBound(String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    pub version: u64,
    pub tenant_id: Option<TenantId>,
    pub name: String,
    pub created_at: Option<DateTime<Utc>>,
    pub accounts: BTreeMap<String, OfficialAccount>,
}

/// The limit applies to the name as stored, not to its trimmed form: padding
/// must not smuggle an unbounded string past it. Blank names are refused.
fn valid_name(name: &str) -> bool {
    let len = name.chars().count();
    (1..=TENANT_NAME_LEN_MAX).contains(&len) && !name.trim().is_empty() && !name.chars().any(char::is_control)
}

impl EventSourced for Tenant {
    const TYPE: &'static str = "tenant";
    const STATE_VERSION: i32 = 1;
    type Command = TenantCommand;
    type Event = TenantEvent;
    type Error = TenantError;

    fn tenant(&self) -> Option<&TenantId> {
        self.tenant_id.as_ref()
    }

    fn handle(&self, command: TenantCommand, now: DateTime<Utc>) -> Result<Vec<TenantEvent>, TenantError> {
        let exists = self.tenant_id.is_some();
        let event = match command {
            TenantCommand::Create { tenant_id, name, actor } => {
                if exists {
                    return if self.tenant_id.as_ref() == Some(&tenant_id) && self.name == name {
                        Ok(Vec::new())
                    } else {
                        Err(TenantError::AlreadyExists)
                    };
                }
                if !valid_name(&name) {
                    return Err(TenantError::InvalidName);
                }
                TenantEvent::TenantCreated { tenant_id, name, created_at: now, actor }
            }
            _ if !exists => return Err(TenantError::NotFound),
            TenantCommand::Rename { name, actor } => {
                if !valid_name(&name) {
                    return Err(TenantError::InvalidName);
                }
                if name == self.name {
                    return Ok(Vec::new());
                }
                TenantEvent::TenantRenamed { name, actor }
            }
            TenantCommand::BindOfficialAccount { account, actor } => {
                let is_new = !self.accounts.contains_key(account.appid.as_str());
                if is_new && self.accounts.len() >= OFFICIAL_ACCOUNTS_MAX {
                    return Err(TenantError::TooManyAccounts);
                }
                if !valid_name(&account.name) {
                    return Err(TenantError::InvalidName);
                }
                if self.accounts.get(account.appid.as_str()) == Some(&account) {
                    return Ok(Vec::new());
                }
                TenantEvent::OfficialAccountBound { account, actor }
            }
            TenantCommand::UnbindOfficialAccount { appid, actor } => {
                if !self.accounts.contains_key(appid.as_str()) {
                    return Err(TenantError::AccountNotBound(appid.to_string()));
                }
                TenantEvent::OfficialAccountUnbound { appid, actor }
            }
        };
        Ok(vec![event])
    }

    fn apply(&mut self, event: &TenantEvent) {
        self.version += 1;
        match event {
            TenantEvent::TenantCreated { tenant_id, name, created_at, .. } => {
                assert!(self.tenant_id.is_none(), "tenant created twice");
                self.tenant_id = Some(tenant_id.clone());
                self.name = name.clone();
                self.created_at = Some(*created_at);
            }
            TenantEvent::TenantRenamed { name, .. } => self.name = name.clone(),
            TenantEvent::OfficialAccountBound { account, .. } => {
                self.accounts.insert(account.appid.to_string(), account.clone());
            }
            TenantEvent::OfficialAccountUnbound { appid, .. } => {
                self.accounts.remove(appid.as_str());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin() -> Actor {
        Actor::Admin { username: "root".into() }
    }
    fn account(appid: &str) -> OfficialAccount {
        OfficialAccount {
            appid: AppId::parse(appid).unwrap(),
            name: "Main".into(),
            token: SealedSecret::from_ciphertext("c1".into()),
            encoding_aes_key: SealedSecret::from_ciphertext("c2".into()),
            app_secret: SealedSecret::from_ciphertext("c3".into()),
            pay: None,
        }
    }
    fn created() -> Tenant {
        let mut t = Tenant::default();
        let evs = t
            .handle(
                TenantCommand::Create {
                    tenant_id: TenantId::parse("acme").unwrap(),
                    name: "Acme".into(),
                    actor: admin(),
                },
                Utc::now(),
            )
            .unwrap();
        evs.iter().for_each(|e| t.apply(e));
        t
    }

    #[test]
    fn create_is_idempotent_and_exclusive() {
        let t = created();
        let again =
            TenantCommand::Create { tenant_id: TenantId::parse("acme").unwrap(), name: "Acme".into(), actor: admin() };
        assert_eq!(t.handle(again, Utc::now()).unwrap(), vec![]);
        let other =
            TenantCommand::Create { tenant_id: TenantId::parse("acme").unwrap(), name: "Other".into(), actor: admin() };
        assert_eq!(t.handle(other, Utc::now()), Err(TenantError::AlreadyExists));
    }

    #[test]
    fn commands_on_a_missing_tenant_fail() {
        let cmd = TenantCommand::Rename { name: "x".into(), actor: admin() };
        assert_eq!(Tenant::default().handle(cmd, Utc::now()), Err(TenantError::NotFound));
    }

    #[test]
    fn bind_and_unbind_accounts() {
        let mut t = created();
        let evs = t
            .handle(
                TenantCommand::BindOfficialAccount { account: account("wx0123456789abcdef"), actor: admin() },
                Utc::now(),
            )
            .unwrap();
        evs.iter().for_each(|e| t.apply(e));
        assert_eq!(t.accounts.len(), 1);
        // Binding the same settings again changes nothing.
        let same = t.handle(
            TenantCommand::BindOfficialAccount { account: account("wx0123456789abcdef"), actor: admin() },
            Utc::now(),
        );
        assert_eq!(same.unwrap(), vec![]);
        let evs = t
            .handle(
                TenantCommand::UnbindOfficialAccount {
                    appid: AppId::parse("wx0123456789abcdef").unwrap(),
                    actor: admin(),
                },
                Utc::now(),
            )
            .unwrap();
        evs.iter().for_each(|e| t.apply(e));
        assert!(t.accounts.is_empty());
        let missing = t.handle(
            TenantCommand::UnbindOfficialAccount { appid: AppId::parse("wx0123456789abcdef").unwrap(), actor: admin() },
            Utc::now(),
        );
        assert!(matches!(missing, Err(TenantError::AccountNotBound(_))));
    }

    #[test]
    fn names_are_bounded_as_stored() {
        let t = created();
        let rename = |name: String| TenantCommand::Rename { name, actor: admin() };
        let at_limit = "n".repeat(TENANT_NAME_LEN_MAX);
        assert!(t.handle(rename(at_limit), Utc::now()).is_ok());
        let past_limit = "n".repeat(TENANT_NAME_LEN_MAX + 1);
        assert_eq!(t.handle(rename(past_limit), Utc::now()), Err(TenantError::InvalidName));
        // Padding once slipped past the limit because only the trimmed name was counted.
        let padded = format!("{}n", " ".repeat(TENANT_NAME_LEN_MAX));
        assert_eq!(t.handle(rename(padded), Utc::now()), Err(TenantError::InvalidName));
        assert_eq!(t.handle(rename("   ".into()), Utc::now()), Err(TenantError::InvalidName));
    }

    #[test]
    fn sealed_secrets_never_print() {
        let s = SealedSecret::from_ciphertext("ciphertext".into());
        assert!(!format!("{s:?}").contains("ciphertext"));
        assert!(!format!("{:?}", account("wx0123456789abcdef")).contains("c3"));
    }
}
