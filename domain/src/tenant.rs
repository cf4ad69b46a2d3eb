//! The tenant (merchant) aggregate: name, bound official accounts (directly
//! or through the third-party platform), the points rules and the card level
//! catalog (with a revision, so concurrent edits cannot overwrite each other).
//!
//! `apply` checks that every event follows the creation, that the tenant is
//! created once and that an appid is bound directly or as a component account,
//! never both (see [`rules`]).
//!
//! Secrets arrive sealed (encrypted by the application layer with a key from
//! the environment); the domain stores them opaquely and never shows them.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::card_levels::CardLevelCatalog;
use crate::invariant::ensure;
use crate::member::ExpiryPolicy;
use crate::{Actor, AppId, DomainEventMeta, EventSourced, InvariantViolation, TenantId};

/// Official accounts per tenant, direct and component accounts together.
pub const OFFICIAL_ACCOUNTS_MAX: usize = 50;
/// Ceiling of every figure in [`PointsRules`].
pub const RULE_POINTS_MAX: i64 = 1_000_000;
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

/// Points the ledger grants by itself; 0 means none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PointsRules {
    /// Granted at registration.
    #[schemars(range(min = 0, max = RULE_POINTS_MAX))]
    pub initial_points: i64,
    /// Granted to the referrer of a new member.
    #[schemars(range(min = 0, max = RULE_POINTS_MAX))]
    pub referral_level1_points: i64,
    /// Granted to the referrer's referrer.
    #[schemars(range(min = 0, max = RULE_POINTS_MAX))]
    pub referral_level2_points: i64,
    /// Expiry of the points these rules grant.
    pub expiry: ExpiryPolicy,
}

impl Default for PointsRules {
    fn default() -> Self {
        Self { initial_points: 0, referral_level1_points: 0, referral_level2_points: 0, expiry: ExpiryPolicy::Never }
    }
}

impl PointsRules {
    pub fn is_valid(&self) -> bool {
        [self.initial_points, self.referral_level1_points, self.referral_level2_points]
            .iter()
            .all(|p| (0..=RULE_POINTS_MAX).contains(p))
            && self.expiry.is_valid()
    }
}

/// An official account authorized to wxcm's third-party platform: WeChat
/// calls the platform, which acts for the account with this refresh token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ComponentAccount {
    pub appid: AppId,
    pub refresh_token: SealedSecret,
    pub authorized_at: Option<DateTime<Utc>>,
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
    SetPointsRules {
        rules: PointsRules,
        actor: Actor,
    },
    /// Records (or renews) an authorization through the third-party platform.
    AuthorizeComponentAccount {
        appid: AppId,
        refresh_token: SealedSecret,
        actor: Actor,
    },
    DeauthorizeComponentAccount {
        appid: AppId,
        actor: Actor,
    },
    /// Replaces the card level catalog, if it is still at `expected_revision`
    /// (0: no catalog yet) — the edit was made on what is in force.
    SetCardLevels {
        catalog: CardLevelCatalog,
        expected_revision: u64,
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
    PointsRulesSet {
        rules: PointsRules,
        actor: Actor,
    },
    ComponentAccountAuthorized {
        appid: AppId,
        refresh_token: SealedSecret,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        authorized_at: Option<DateTime<Utc>>,
        actor: Actor,
    },
    ComponentAccountDeauthorized {
        appid: AppId,
        actor: Actor,
    },
    /// The catalog in force from now on; `revision` counts catalogs set (1 for the first).
    CardLevelsSet {
        catalog: CardLevelCatalog,
        revision: u64,
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
            TenantEvent::PointsRulesSet { .. } => "PointsRulesSet",
            TenantEvent::ComponentAccountAuthorized { .. } => "ComponentAccountAuthorized",
            TenantEvent::ComponentAccountDeauthorized { .. } => "ComponentAccountDeauthorized",
            TenantEvent::CardLevelsSet { .. } => "CardLevelsSet",
        }
    }
    fn event_version(&self) -> &'static str {
        "1"
    }
}

/// Names of the rules [`Tenant::apply`] checks. Stable: reports and tests match on them.
pub mod rules {
    /// Only the creation may start the stream.
    pub const CREATED_FIRST: &str = "tenant.created_first";
    pub const CREATED_ONCE: &str = "tenant.created_once";
    /// An appid is bound directly or as a component account, never both.
    pub const APPID_BOUND_ONCE: &str = "tenant.appid_bound_once";
    /// Each catalog's revision follows the one before.
    pub const CARD_LEVELS_REVISION_NEXT: &str = "tenant.card_levels_revision_next";
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
    #[error("points rules must be 0..={RULE_POINTS_MAX} points each with a valid expiry")]
    InvalidPointsRules,
    #[error("official account {0} is bound directly; it cannot also be a component account")]
    BoundDirectly(String),
    #[error("official account {0} is a component account; it cannot also be bound directly")]
    BoundAsComponent(String),
    #[error("component account {0} is not authorized")]
    ComponentAccountNotBound(String),
    #[error("the card levels were changed meanwhile: revision {current} is in force")]
    CardLevelsRevision { current: u64 },
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Tenant {
    pub version: u64,
    pub tenant_id: Option<TenantId>,
    pub name: String,
    pub created_at: Option<DateTime<Utc>>,
    pub accounts: BTreeMap<String, OfficialAccount>,
    /// Accounts authorized through the third-party platform, by appid.
    pub component_accounts: BTreeMap<String, ComponentAccount>,
    /// The current rules (the default, granting nothing, until set).
    pub points_rules: PointsRules,
    /// The card level catalog (none: levels are set by staff only, any name).
    pub card_levels: Option<CardLevelCatalog>,
    /// Catalogs set so far: the catalog's version for edits (`If-Match`-like).
    pub card_levels_revision: u64,
}

impl Tenant {
    fn existing(&self) -> Result<&TenantId, TenantError> {
        self.tenant_id.as_ref().ok_or(TenantError::NotFound)
    }

    fn account_count(&self) -> usize {
        self.accounts.len() + self.component_accounts.len()
    }
}

/// The limit applies to the name as stored, not to its trimmed form: padding
/// must not smuggle an unbounded string past it. Blank names are refused.
fn valid_name(name: &str) -> bool {
    let len = name.chars().count();
    (1..=TENANT_NAME_LEN_MAX).contains(&len) && !name.trim().is_empty() && !name.chars().any(char::is_control)
}

impl EventSourced for Tenant {
    const TYPE: &'static str = "tenant";
    // 2: component accounts and points rules.
    /// 3: card levels and their revision.
    const STATE_VERSION: i32 = 3;
    type Command = TenantCommand;
    type Event = TenantEvent;
    type Error = TenantError;

    fn tenant(&self) -> Option<&TenantId> {
        self.tenant_id.as_ref()
    }

    fn handle(&self, command: TenantCommand, now: DateTime<Utc>) -> Result<Vec<TenantEvent>, TenantError> {
        let event = match command {
            TenantCommand::Create { tenant_id, name, actor } => {
                if let Some(existing) = &self.tenant_id {
                    return if *existing == tenant_id && self.name == name {
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
            TenantCommand::Rename { name, actor } => {
                self.existing()?;
                if !valid_name(&name) {
                    return Err(TenantError::InvalidName);
                }
                if name == self.name {
                    return Ok(Vec::new());
                }
                TenantEvent::TenantRenamed { name, actor }
            }
            TenantCommand::BindOfficialAccount { account, actor } => {
                self.existing()?;
                if self.component_accounts.contains_key(account.appid.as_str()) {
                    return Err(TenantError::BoundAsComponent(account.appid.to_string()));
                }
                let is_new = !self.accounts.contains_key(account.appid.as_str());
                if is_new && self.account_count() >= OFFICIAL_ACCOUNTS_MAX {
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
                self.existing()?;
                if !self.accounts.contains_key(appid.as_str()) {
                    return Err(TenantError::AccountNotBound(appid.to_string()));
                }
                TenantEvent::OfficialAccountUnbound { appid, actor }
            }
            TenantCommand::SetPointsRules { rules, actor } => {
                self.existing()?;
                if !rules.is_valid() {
                    return Err(TenantError::InvalidPointsRules);
                }
                if rules == self.points_rules {
                    return Ok(Vec::new());
                }
                TenantEvent::PointsRulesSet { rules, actor }
            }
            TenantCommand::AuthorizeComponentAccount { appid, refresh_token, actor } => {
                self.existing()?;
                if self.accounts.contains_key(appid.as_str()) {
                    return Err(TenantError::BoundDirectly(appid.to_string()));
                }
                let is_new = !self.component_accounts.contains_key(appid.as_str());
                if is_new && self.account_count() >= OFFICIAL_ACCOUNTS_MAX {
                    return Err(TenantError::TooManyAccounts);
                }
                // Re-authorization always records: WeChat issued a new refresh token.
                TenantEvent::ComponentAccountAuthorized { appid, refresh_token, authorized_at: Some(now), actor }
            }
            TenantCommand::DeauthorizeComponentAccount { appid, actor } => {
                self.existing()?;
                if !self.component_accounts.contains_key(appid.as_str()) {
                    return Err(TenantError::ComponentAccountNotBound(appid.to_string()));
                }
                TenantEvent::ComponentAccountDeauthorized { appid, actor }
            }
            TenantCommand::SetCardLevels { catalog, expected_revision, actor } => {
                self.existing()?;
                if expected_revision != self.card_levels_revision {
                    return Err(TenantError::CardLevelsRevision { current: self.card_levels_revision });
                }
                if self.card_levels.as_ref() == Some(&catalog) {
                    return Ok(Vec::new());
                }
                TenantEvent::CardLevelsSet { catalog, revision: self.card_levels_revision + 1, actor }
            }
        };
        Ok(vec![event])
    }

    fn apply(&mut self, event: &TenantEvent) -> Result<(), InvariantViolation> {
        let created_first = self.tenant_id.is_some() || matches!(event, TenantEvent::TenantCreated { .. });
        ensure(created_first, rules::CREATED_FIRST, || format!("{} for a tenant not created", event.event_type()))?;
        self.version += 1;
        match event {
            TenantEvent::TenantCreated { tenant_id, name, created_at, .. } => {
                ensure(self.tenant_id.is_none(), rules::CREATED_ONCE, || format!("tenant {tenant_id} created twice"))?;
                self.tenant_id = Some(tenant_id.clone());
                self.name = name.clone();
                self.created_at = Some(*created_at);
            }
            TenantEvent::TenantRenamed { name, .. } => self.name = name.clone(),
            TenantEvent::OfficialAccountBound { account, .. } => {
                let appid = &account.appid;
                ensure(!self.component_accounts.contains_key(appid.as_str()), rules::APPID_BOUND_ONCE, || {
                    format!("{appid} bound directly while a component account")
                })?;
                self.accounts.insert(appid.to_string(), account.clone());
            }
            TenantEvent::OfficialAccountUnbound { appid, .. } => {
                self.accounts.remove(appid.as_str());
            }
            TenantEvent::PointsRulesSet { rules, .. } => self.points_rules = *rules,
            TenantEvent::ComponentAccountAuthorized { appid, refresh_token, authorized_at, .. } => {
                ensure(!self.accounts.contains_key(appid.as_str()), rules::APPID_BOUND_ONCE, || {
                    format!("{appid} authorized as a component account while bound directly")
                })?;
                self.component_accounts.insert(
                    appid.to_string(),
                    ComponentAccount {
                        appid: appid.clone(),
                        refresh_token: refresh_token.clone(),
                        authorized_at: *authorized_at,
                    },
                );
            }
            TenantEvent::ComponentAccountDeauthorized { appid, .. } => {
                self.component_accounts.remove(appid.as_str());
            }
            TenantEvent::CardLevelsSet { catalog, revision, .. } => {
                let next = self.card_levels_revision + 1;
                ensure(*revision == next, rules::CARD_LEVELS_REVISION_NEXT, || {
                    format!("catalog revision {revision} after {}", self.card_levels_revision)
                })?;
                self.card_levels = Some(catalog.clone());
                self.card_levels_revision = next;
            }
        }
        Ok(())
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
        evs.iter().for_each(|e| t.apply(e).unwrap());
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
        evs.iter().for_each(|e| t.apply(e).unwrap());
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
        evs.iter().for_each(|e| t.apply(e).unwrap());
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

    fn apply_all(t: &mut Tenant, events: Vec<TenantEvent>) {
        events.iter().for_each(|e| t.apply(e).unwrap());
    }

    fn appid(s: &str) -> AppId {
        AppId::parse(s).unwrap()
    }

    fn authorize(appid_str: &str) -> TenantCommand {
        TenantCommand::AuthorizeComponentAccount {
            appid: appid(appid_str),
            refresh_token: SealedSecret::from_ciphertext("sealed:refresh".into()),
            actor: admin(),
        }
    }

    fn levels(names: &[&str]) -> CardLevelCatalog {
        use crate::card_levels::{CardLevelDef, Colour, DowngradePolicy, PrivilegesText};
        let defs = names
            .iter()
            .map(|n| CardLevelDef {
                name: crate::member::CardLevel::parse(n).unwrap(),
                image_url: crate::mall::ImageUrl::parse("https://img.example.com/c.png").unwrap(),
                colour: Colour::parse("#112233").unwrap(),
                privileges: PrivilegesText::parse("").unwrap(),
                threshold: None,
            })
            .collect();
        CardLevelCatalog::new(defs, DowngradePolicy::Never).unwrap()
    }

    #[test]
    fn card_levels_are_set_on_the_revision_in_force_only() {
        let mut t = created();
        let set =
            |catalog, expected_revision| TenantCommand::SetCardLevels { catalog, expected_revision, actor: admin() };
        assert_eq!(t.handle(set(levels(&["a"]), 1), Utc::now()), Err(TenantError::CardLevelsRevision { current: 0 }));
        let events = t.handle(set(levels(&["a"]), 0), Utc::now()).unwrap();
        apply_all(&mut t, events);
        assert_eq!((t.card_levels_revision, t.card_levels.clone()), (1, Some(levels(&["a"]))));
        // The same catalog again writes nothing; an edit of revision 0 is stale.
        assert_eq!(t.handle(set(levels(&["a"]), 1), Utc::now()), Ok(Vec::new()));
        assert_eq!(t.handle(set(levels(&["b"]), 0), Utc::now()), Err(TenantError::CardLevelsRevision { current: 1 }));
        let events = t.handle(set(levels(&["a", "b"]), 1), Utc::now()).unwrap();
        apply_all(&mut t, events);
        assert_eq!(t.card_levels_revision, 2);
        let skipped = TenantEvent::CardLevelsSet { catalog: levels(&["c"]), revision: 4, actor: admin() };
        assert_eq!(t.apply(&skipped).unwrap_err().rule, rules::CARD_LEVELS_REVISION_NEXT);
    }

    #[test]
    fn points_rules_default_to_nothing_and_can_be_set() {
        let mut t = created();
        assert_eq!(t.points_rules, PointsRules::default());
        assert_eq!(t.points_rules.expiry, ExpiryPolicy::Never);
        let rules = PointsRules {
            initial_points: 100,
            referral_level1_points: 50,
            referral_level2_points: RULE_POINTS_MAX,
            expiry: ExpiryPolicy::EndOfYear,
        };
        let evs = t.handle(TenantCommand::SetPointsRules { rules, actor: admin() }, Utc::now()).unwrap();
        assert_eq!(evs, vec![TenantEvent::PointsRulesSet { rules, actor: admin() }]);
        apply_all(&mut t, evs);
        assert_eq!(t.points_rules, rules);
        // Setting the same rules again changes nothing.
        assert_eq!(t.handle(TenantCommand::SetPointsRules { rules, actor: admin() }, Utc::now()), Ok(vec![]));
    }

    #[test]
    fn points_rules_are_bounded() {
        let t = created();
        let base = PointsRules::default();
        let invalid = [
            PointsRules { initial_points: -1, ..base },
            PointsRules { referral_level1_points: RULE_POINTS_MAX + 1, ..base },
            PointsRules { referral_level2_points: -5, ..base },
            PointsRules { expiry: ExpiryPolicy::Days { days: 0 }, ..base },
        ];
        for rules in invalid {
            let result = t.handle(TenantCommand::SetPointsRules { rules, actor: admin() }, Utc::now());
            assert_eq!(result, Err(TenantError::InvalidPointsRules), "{rules:?}");
        }
        let missing =
            Tenant::default().handle(TenantCommand::SetPointsRules { rules: base, actor: admin() }, Utc::now());
        assert_eq!(missing, Err(TenantError::NotFound));
    }

    #[test]
    fn component_accounts_authorize_reauthorize_and_deauthorize() {
        let mut t = created();
        let now = Utc::now();
        let evs = t.handle(authorize("wx00000000000000aa"), now).unwrap();
        assert_eq!(
            evs,
            vec![TenantEvent::ComponentAccountAuthorized {
                appid: appid("wx00000000000000aa"),
                refresh_token: SealedSecret::from_ciphertext("sealed:refresh".into()),
                authorized_at: Some(now),
                actor: admin(),
            }]
        );
        apply_all(&mut t, evs);
        assert_eq!(t.component_accounts.len(), 1);
        // Re-authorization replaces the token.
        let renewed = TenantCommand::AuthorizeComponentAccount {
            appid: appid("wx00000000000000aa"),
            refresh_token: SealedSecret::from_ciphertext("sealed:refresh-2".into()),
            actor: admin(),
        };
        let evs = t.handle(renewed, now).unwrap();
        apply_all(&mut t, evs);
        assert_eq!(t.component_accounts.len(), 1);
        assert_eq!(t.component_accounts["wx00000000000000aa"].refresh_token.ciphertext(), "sealed:refresh-2");
        let deauthorize = |s: &str| TenantCommand::DeauthorizeComponentAccount { appid: appid(s), actor: admin() };
        let evs = t.handle(deauthorize("wx00000000000000aa"), now).unwrap();
        apply_all(&mut t, evs);
        assert!(t.component_accounts.is_empty());
        assert_eq!(
            t.handle(deauthorize("wx00000000000000aa"), now),
            Err(TenantError::ComponentAccountNotBound("wx00000000000000aa".into()))
        );
    }

    #[test]
    fn an_appid_is_either_direct_or_component() {
        let mut t = created();
        let evs = t
            .handle(
                TenantCommand::BindOfficialAccount { account: account("wx0123456789abcdef"), actor: admin() },
                Utc::now(),
            )
            .unwrap();
        apply_all(&mut t, evs);
        assert_eq!(
            t.handle(authorize("wx0123456789abcdef"), Utc::now()),
            Err(TenantError::BoundDirectly("wx0123456789abcdef".into()))
        );
        let evs = t.handle(authorize("wx00000000000000aa"), Utc::now()).unwrap();
        apply_all(&mut t, evs);
        let direct = TenantCommand::BindOfficialAccount { account: account("wx00000000000000aa"), actor: admin() };
        assert_eq!(t.handle(direct, Utc::now()), Err(TenantError::BoundAsComponent("wx00000000000000aa".into())));
    }

    #[test]
    fn the_account_limit_counts_direct_and_component_accounts() {
        let mut t = created();
        for i in 0..OFFICIAL_ACCOUNTS_MAX {
            let id = format!("wx{i:016x}");
            let command = if i % 2 == 0 {
                TenantCommand::BindOfficialAccount { account: account(&id), actor: admin() }
            } else {
                authorize(&id)
            };
            let evs = t.handle(command, Utc::now()).unwrap();
            apply_all(&mut t, evs);
        }
        let next = format!("wx{:016x}", OFFICIAL_ACCOUNTS_MAX);
        assert_eq!(t.handle(authorize(&next), Utc::now()), Err(TenantError::TooManyAccounts));
        let direct = TenantCommand::BindOfficialAccount { account: account(&next), actor: admin() };
        assert_eq!(t.handle(direct, Utc::now()), Err(TenantError::TooManyAccounts));
        // Renewing an existing authorization is not a new account.
        assert!(t.handle(authorize(&format!("wx{:016x}", 1)), Utc::now()).is_ok());
    }

    #[test]
    fn applying_an_event_before_the_creation_names_the_rule() {
        let renamed = TenantEvent::TenantRenamed { name: "x".into(), actor: admin() };
        let broken = Tenant::default().apply(&renamed).unwrap_err();
        assert_eq!(broken.rule, rules::CREATED_FIRST);
        assert!(broken.detail.contains("TenantRenamed"), "{broken}");
    }

    #[test]
    fn applying_a_second_creation_names_the_rule() {
        let mut t = created();
        let again = TenantEvent::TenantCreated {
            tenant_id: TenantId::parse("acme").unwrap(),
            name: "Acme".into(),
            created_at: Utc::now(),
            actor: admin(),
        };
        assert_eq!(t.apply(&again).unwrap_err().rule, rules::CREATED_ONCE);
    }

    #[test]
    fn applying_a_direct_binding_of_a_component_account_names_the_rule() {
        let mut t = created();
        let evs = t.handle(authorize("wx00000000000000aa"), Utc::now()).unwrap();
        apply_all(&mut t, evs);
        let bound = TenantEvent::OfficialAccountBound { account: account("wx00000000000000aa"), actor: admin() };
        assert_eq!(t.apply(&bound).unwrap_err().rule, rules::APPID_BOUND_ONCE);
    }

    #[test]
    fn sealed_secrets_never_print() {
        let s = SealedSecret::from_ciphertext("ciphertext".into());
        assert!(!format!("{s:?}").contains("ciphertext"));
        assert!(!format!("{:?}", account("wx0123456789abcdef")).contains("c3"));
    }
}
