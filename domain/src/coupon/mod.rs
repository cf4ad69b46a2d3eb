//! Coupons: a template per offer (an aggregate holding its terms and its
//! stock) and a stream per issued coupon (an aggregate holding one coupon's
//! life: issued, then redeemed, voided or expired).
//!
//! Invariants (checked in `handle`, checked again in `apply`, see [`rules`]):
//! - a template never issues more than its finite stock; `issued_after` on an
//!   issue event is what the state gives;
//! - a coupon carries a copy of the terms it was issued under: editing the
//!   template never changes an issued coupon;
//! - a coupon is issued once and ends at most once (redeemed, voided or
//!   expired); redeemed only inside its validity window.
//!
//! The per-member limit is kept by identity, not by a counter: a member's
//! n-th claim of a template is the coupon stream [`CouponId::for_claim`]
//! (tenant, template, member, n), n in 1..=limit, so two claims racing for the
//! same slot meet at the stream's first sequence and only one commits.

mod issued;
mod template;
#[cfg(test)]
mod tests;

use std::fmt;

use chrono::{DateTime, Duration, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use issued::{Coupon, CouponCommand, CouponError, CouponEvent, CouponState, IssueChannel, IssuedCoupon};
pub use template::{
    CouponTemplate, IssueAsk, IssueBatch, IssueGrant, IssueRefusal, TemplateCommand, TemplateError, TemplateEvent,
};

use crate::ids::{uuid_id, IdError};
use crate::member::CardLevel;
use crate::{AmountFen, MemberId, TenantId};

/// Stable names of the coupon invariants, as `InvariantViolation::rule`.
pub mod rules {
    pub const TEMPLATE_EXISTS: &str = "coupon_template.exists";
    pub const TEMPLATE_CREATED_ONCE: &str = "coupon_template.created_once";
    pub const ISSUED_WITHIN_STOCK: &str = "coupon_template.issued_within_stock";
    pub const ISSUED_AFTER: &str = "coupon_template.issued_after";
    pub const STOCK_COVERS_ISSUED: &str = "coupon_template.stock_covers_issued";
    pub const COUPON_EXISTS: &str = "coupon.exists";
    pub const COUPON_ISSUED_ONCE: &str = "coupon.issued_once";
    pub const COUPON_ENDS_ONCE: &str = "coupon.ends_once";
    pub const REDEEMED_WHILE_VALID: &str = "coupon.redeemed_while_valid";
    pub const VALIDITY_ORDERED: &str = "coupon.validity_ordered";
    /// Held by an active coupon's order, used or released by that order
    /// only, returned only from the order it was used on.
    pub const COUPON_ORDER_STATES: &str = "coupon.order_states";
}

/// Coupons one template may issue (a finite stock's ceiling).
pub const STOCK_MAX: u32 = 10_000_000;
/// Claims one member may make of one template (the per-member limit's ceiling).
pub const CLAIMS_PER_MEMBER_MAX: u16 = 100;
/// Coupons one issue event (one decision over the template) may carry.
pub const ISSUES_PER_EVENT_MAX: usize = 512;
/// Longest validity of a coupon counted from its issue.
pub const VALID_DAYS_MAX: u16 = 3_660;
/// Card levels one template may name in its audience.
pub const AUDIENCE_LEVELS_MAX: usize = 32;

uuid_id!(
    /// A coupon template (one offer).
    TemplateId,
    "coupon template id"
);
uuid_id!(
    /// One issued coupon.
    CouponId,
    "coupon id"
);

const COUPON_NAMESPACE: Uuid = Uuid::from_u128(0x0c3f_51d2_6a4e_4f8b_a1d7_9e20_44c8_b3e5);

impl CouponId {
    /// The stream of `member`'s `ordinal`-th claim of `template` (1-based).
    pub fn for_claim(tenant: &TenantId, template: TemplateId, member: MemberId, ordinal: u16) -> Self {
        let name = format!("claim\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}", tenant.as_str(), template, member, ordinal);
        Self(Uuid::new_v5(&COUPON_NAMESPACE, name.as_bytes()))
    }
    /// A coupon issued by an operator: derived from the request's key, so a
    /// repeated request names the same stream.
    pub fn for_grant(tenant: &TenantId, template: TemplateId, member: MemberId, key: &str) -> Self {
        let name = format!("grant\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}", tenant.as_str(), template, member, key);
        Self(Uuid::new_v5(&COUPON_NAMESPACE, name.as_bytes()))
    }
}

/// What a member shows at the counter: 80 bits from a CSPRNG (the caller's),
/// written as 16 characters of Crockford's base32. Typing is forgiving (case,
/// separators, O for 0, I and L for 1); anything else is not a code.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "String", into = "String")]
#[schemars(extend("pattern" = "^[0-9A-HJKMNP-TV-Z]{16}$"))]
pub struct RedemptionCode(String);

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

impl RedemptionCode {
    pub const BYTES: usize = 10;
    pub const LEN: usize = 16;
    /// Characters a typed code may have, separators included.
    pub const INPUT_LEN_MAX: usize = 40;

    pub fn from_random(bytes: [u8; Self::BYTES]) -> Self {
        let mut bits: u128 = 0;
        for b in bytes {
            bits = (bits << 8) | u128::from(b);
        }
        let text = (0..Self::LEN).rev().map(|i| CROCKFORD[((bits >> (i * 5)) & 31) as usize] as char).collect();
        Self(text)
    }

    /// A code as typed or scanned.
    pub fn parse(input: &str) -> Result<Self, IdError> {
        let invalid = IdError::Charset { what: "redemption code", allowed: "16 characters of Crockford base32" };
        if input.len() > Self::INPUT_LEN_MAX {
            return Err(invalid);
        }
        let mut text = String::with_capacity(Self::LEN);
        for c in input.chars() {
            let c = match c.to_ascii_uppercase() {
                '-' | ' ' => continue,
                'O' => '0',
                'I' | 'L' => '1',
                c if c.is_ascii() && CROCKFORD.contains(&(c as u8)) => c,
                _ => return Err(invalid),
            };
            text.push(c);
        }
        if text.len() != Self::LEN {
            return Err(invalid);
        }
        Ok(Self(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for RedemptionCode {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(&s)
    }
}

impl From<RedemptionCode> for String {
    fn from(c: RedemptionCode) -> String {
        c.0
    }
}

impl fmt::Display for RedemptionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A short human text (names, gift items).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "String", into = "String")]
#[schemars(extend("minLength" = 1, "maxLength" = 64, "pattern" = "^[^\\x00-\\x1F\\x7F-\\x9F]*$"))]
pub struct CouponText(String);

impl CouponText {
    pub const LEN_MAX: usize = 64;
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let len = s.chars().count();
        if len == 0 || len > Self::LEN_MAX {
            return Err(IdError::Length { what: "coupon text", min: 1, max: Self::LEN_MAX, len });
        }
        if s.chars().any(char::is_control) || s.trim().is_empty() {
            return Err(IdError::Charset { what: "coupon text", allowed: "visible text" });
        }
        Ok(Self(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for CouponText {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(&s)
    }
}

impl From<CouponText> for String {
    fn from(t: CouponText) -> String {
        t.0
    }
}

/// What the coupon gives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Benefit {
    /// Money off: `value_fen`, on a spend of at least `min_spend_fen` when set.
    Cash { value_fen: AmountFen, min_spend_fen: Option<AmountFen> },
    /// A percentage off (1..=99), at most `cap_fen` when set.
    Discount { percent_off: u8, cap_fen: Option<AmountFen> },
    /// A named item handed over at the counter.
    Gift { item: CouponText },
}

impl Benefit {
    fn check(&self) -> Result<(), TemplateError> {
        match self {
            Benefit::Discount { percent_off, .. } if !(1..=99).contains(percent_off) => {
                Err(TemplateError::InvalidTerms("percent_off must be 1..=99"))
            }
            Benefit::Cash { value_fen, min_spend_fen: Some(min) } if min.get() < value_fen.get() => {
                Err(TemplateError::InvalidTerms("min_spend_fen must be at least value_fen"))
            }
            _ => Ok(()),
        }
    }

    /// What this coupon takes off a cash amount of `amount_fen` (never more
    /// than the amount: the rest to pay is never negative). `None` when the
    /// coupon does not apply (below the minimum spend, or a gift).
    pub fn discount_on(&self, amount_fen: i64) -> Option<i64> {
        if amount_fen <= 0 {
            return None;
        }
        match self {
            Benefit::Cash { value_fen, min_spend_fen } => {
                if min_spend_fen.is_some_and(|min| amount_fen < min.get()) {
                    return None;
                }
                Some(value_fen.get().min(amount_fen))
            }
            Benefit::Discount { percent_off, cap_fen } => {
                // Rounded down: the merchant never gives more than the stated percentage.
                let off = amount_fen.checked_mul(i64::from(*percent_off))? / 100;
                Some(cap_fen.map_or(off, |cap| off.min(cap.get())).min(amount_fen))
            }
            Benefit::Gift { .. } => None,
        }
    }
}

/// How many coupons a template may issue: a finite count or explicitly none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Stock {
    Finite { total: u32 },
    Unlimited,
}

/// When an issued coupon may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Validity {
    /// The same window for every coupon.
    Window { from: DateTime<Utc>, until: DateTime<Utc> },
    /// From the moment of issue, for `days` days.
    DaysFromIssue { days: u16 },
}

impl Validity {
    fn check(&self) -> Result<(), TemplateError> {
        match self {
            Validity::Window { from, until } if from >= until => {
                Err(TemplateError::InvalidTerms("validity window must end after it starts"))
            }
            Validity::DaysFromIssue { days } if *days == 0 || *days > VALID_DAYS_MAX => {
                Err(TemplateError::InvalidTerms("valid days must be 1..=3660"))
            }
            _ => Ok(()),
        }
    }

    /// The window of a coupon issued at `now`.
    pub fn window_at(&self, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
        match self {
            Validity::Window { from, until } => (*from, *until),
            Validity::DaysFromIssue { days } => (now, now + Duration::days(i64::from(*days))),
        }
    }
}

/// Who may claim the coupon themselves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Audience {
    AllMembers,
    /// Members whose card level is one of these.
    CardLevels {
        levels: Vec<CardLevel>,
    },
}

impl Audience {
    pub fn admits(&self, level: &CardLevel) -> bool {
        match self {
            Audience::AllMembers => true,
            Audience::CardLevels { levels } => levels.contains(level),
        }
    }
}

/// The editable terms of a template. Issued coupons keep a copy of what they
/// need (name, benefit, window); an edit applies to later issues only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CouponTerms {
    pub name: CouponText,
    pub benefit: Benefit,
    pub validity: Validity,
    /// Claims per member (1..=100); `None`: no per-member limit.
    pub per_member_limit: Option<u16>,
    pub audience: Audience,
}

impl CouponTerms {
    pub fn check(&self) -> Result<(), TemplateError> {
        self.benefit.check()?;
        self.validity.check()?;
        if self.per_member_limit.is_some_and(|l| l == 0 || l > CLAIMS_PER_MEMBER_MAX) {
            return Err(TemplateError::InvalidTerms("per_member_limit must be 1..=100"));
        }
        if let Audience::CardLevels { levels } = &self.audience {
            if levels.is_empty() || levels.len() > AUDIENCE_LEVELS_MAX {
                return Err(TemplateError::InvalidTerms("audience names 1..=32 card levels"));
            }
        }
        Ok(())
    }
}
