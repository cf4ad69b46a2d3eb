//! What can be asked of a member. Imperative names; validated values only.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::policy::ExpiryPolicy;
use crate::card_levels::CardLevelCatalog;
use crate::{
    Actor, AmountFen, CardNumber, IdempotencyKey, MemberId, OpenId, PointsAmount, Reference, SceneKey, TenantId,
};

/// Who asks, why, and under which idempotency key. Copied into the event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Provenance {
    pub actor: Actor,
    pub reason: Reference,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<Reference>,
    pub idempotency_key: IdempotencyKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RegistrationSource {
    Subscribe,
    Oauth,
    Staff,
}

/// What brought a member in: a parametric QR code, another member, or nothing traceable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Attribution {
    SceneQr { scene: SceneKey },
    Referral { referrer: MemberId },
    Direct,
}

impl Attribution {
    pub fn referrer(&self) -> Option<MemberId> {
        match self {
            Attribution::Referral { referrer } => Some(*referrer),
            Attribution::SceneQr { .. } | Attribution::Direct => None,
        }
    }
}

/// Initial points granted at registration (a lot of source `initial`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WelcomePoints {
    pub points: PointsAmount,
    pub expiry: ExpiryPolicy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PointsSource {
    Initial,
    SignIn,
    Share,
    Campaign,
    Referral,
    Poster,
    Vote,
    Purchase,
    Manual,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SpendPurpose {
    Mall,
    Lottery,
    Other,
}

/// A card level name (levels themselves are tenant settings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(extend(
    "minLength" = 1,
    "maxLength" = CardLevel::LEN_MAX,
    "pattern" = "^[^\\x00-\\x1F\\x7F-\\x9F]*$"
))]
#[serde(try_from = "String", into = "String")]
pub struct CardLevel(String);

impl CardLevel {
    pub const LEN_MAX: usize = 32;
    pub fn parse(s: &str) -> Result<Self, crate::IdError> {
        let len = s.chars().count();
        if len == 0 || len > Self::LEN_MAX {
            return Err(crate::IdError::Length { what: "card level", min: 1, max: Self::LEN_MAX, len });
        }
        if s.chars().any(|c| c.is_control()) {
            return Err(crate::IdError::Charset { what: "card level", allowed: "text without control characters" });
        }
        Ok(Self(s.to_owned()))
    }
    pub fn standard() -> Self {
        Self("standard".to_owned())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl TryFrom<String> for CardLevel {
    type Error = crate::IdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}
impl From<CardLevel> for String {
    fn from(v: CardLevel) -> String {
        v.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum MemberCommand {
    Register {
        member_id: MemberId,
        tenant_id: TenantId,
        card_no: CardNumber,
        openid: Option<OpenId>,
        source: RegistrationSource,
        card_level: CardLevel,
        provenance: Provenance,
        /// Kept for the member's lifetime; a referral names level 1 of the chain.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attribution: Option<Attribution>,
        /// The tenant's initial points, granted with the registration in the
        /// same command (a second event), so a new follower never exists
        /// without them.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        welcome: Option<WelcomePoints>,
    },
    /// The member (re)subscribed to the official account.
    Follow {
        attribution: Attribution,
        provenance: Provenance,
    },
    Unfollow {
        provenance: Provenance,
    },
    SetCardLevel {
        card_level: CardLevel,
        provenance: Provenance,
    },
    GrantPoints {
        points: PointsAmount,
        source: PointsSource,
        expiry: ExpiryPolicy,
        provenance: Provenance,
    },
    /// An admin correction downwards; takes from the oldest lots first.
    DeductPoints {
        points: PointsAmount,
        provenance: Provenance,
    },
    SpendPoints {
        points: PointsAmount,
        purpose: SpendPurpose,
        provenance: Provenance,
    },
    HoldPoints {
        hold_id: Reference,
        points: PointsAmount,
        provenance: Provenance,
    },
    SpendHeldPoints {
        hold_id: Reference,
        provenance: Provenance,
    },
    ReleaseHeldPoints {
        hold_id: Reference,
        provenance: Provenance,
    },
    /// Expires every lot due at the time the command is handled.
    ExpirePoints {
        provenance: Provenance,
    },
    DepositCash {
        amount_fen: AmountFen,
        provenance: Provenance,
    },
    ChargeCash {
        amount_fen: AmountFen,
        provenance: Provenance,
    },
    CreditRecharge {
        amount_fen: AmountFen,
        order_id: Reference,
        provenance: Provenance,
    },
    /// Gives back (part of) an earlier counter charge, named by its sequence.
    RefundCharge {
        charge_sequence: u64,
        amount_fen: AmountFen,
        provenance: Provenance,
    },
    /// Takes back (part of) a credited recharge that WeChat Pay refunded.
    ReverseRecharge {
        order_id: Reference,
        refund_no: Reference,
        amount_fen: AmountFen,
        provenance: Provenance,
    },
    /// Cash the member paid for a purchase by WeChat Pay (a mall order):
    /// counted in the total paid the card level rule reads; the balance is
    /// not touched. `payment` names what was paid (the order).
    RecordPurchasePaid {
        amount_fen: AmountFen,
        payment: Reference,
        provenance: Provenance,
    },
    /// A Pay refund of such a purchase: taken off the total paid.
    RecordPurchaseRefunded {
        amount_fen: AmountFen,
        payment: Reference,
        provenance: Provenance,
    },
    /// `command` decided with the tenant's card level catalog: when its
    /// events move the member's lifetime points or total paid, the rule
    /// (`card_levels::decide_level`) runs on the figures they leave and its
    /// `CardLevelChanged` joins them in the same decision; a level set by
    /// hand must be one of the catalog's. The application wraps commands of
    /// tenants that have a catalog; it is never nested (an inner wrap is
    /// unwrapped, the outer catalog wins).
    WithLevelRule {
        inner: Box<MemberCommand>,
        catalog: CardLevelCatalog,
    },
}

impl MemberCommand {
    pub fn provenance(&self) -> &Provenance {
        match self {
            MemberCommand::Register { provenance, .. }
            | MemberCommand::SetCardLevel { provenance, .. }
            | MemberCommand::GrantPoints { provenance, .. }
            | MemberCommand::DeductPoints { provenance, .. }
            | MemberCommand::SpendPoints { provenance, .. }
            | MemberCommand::HoldPoints { provenance, .. }
            | MemberCommand::SpendHeldPoints { provenance, .. }
            | MemberCommand::ReleaseHeldPoints { provenance, .. }
            | MemberCommand::ExpirePoints { provenance }
            | MemberCommand::DepositCash { provenance, .. }
            | MemberCommand::ChargeCash { provenance, .. }
            | MemberCommand::CreditRecharge { provenance, .. }
            | MemberCommand::RefundCharge { provenance, .. }
            | MemberCommand::Follow { provenance, .. }
            | MemberCommand::Unfollow { provenance }
            | MemberCommand::ReverseRecharge { provenance, .. }
            | MemberCommand::RecordPurchasePaid { provenance, .. }
            | MemberCommand::RecordPurchaseRefunded { provenance, .. } => provenance,
            MemberCommand::WithLevelRule { inner, .. } => inner.provenance(),
        }
    }
}
