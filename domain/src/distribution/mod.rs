//! Distribution (微分销): commissions on a per-distributor account stream
//! ([`CommissionAccount`]), a member's standing as a distributor
//! ([`Distributor`]), and the pure rules of enrolment, binding and who earns
//! ([`binding`]). Card levels by rule live in [`crate::card_levels`].
//!
//! ## Commission account ([`CommissionAccount`], one stream per distributor)
//! Each commission is keyed by (order, level) and keeps its history as events:
//! accrued (pending) → settled → clawed back, or accrued → reversed. The
//! account also holds the distributor's withdrawals.
//!
//! **Basis and rounding.** The basis of a commission is the cash actually paid
//! for the goods of the order, after coupons, in fen (points never earn,
//! freight is not part of it). A rate is in basis points (1/10,000); the
//! commission is `floor(basis_fen × rate_bps / 10,000)`, computed in checked
//! integer arithmetic (i128 for the product). A fixed amount is
//! `fixed_fen × quantity`, capped at the basis: a commission never exceeds the
//! cash the order paid for the goods. A commission that rounds to 0 fen is not
//! recorded. Level 2 earns at most what level 1 leaves of the basis, so the
//! levels of an order together never exceed it. See
//! [`CommissionRule::commission_fen_after`] and [`split_order`].
//!
//! **Accounting** (every figure in fen, each a sum over the account's events):
//! - `earned` = every accrued commission;
//! - `pending` = accrued, neither settled nor reversed yet;
//! - `settled` = every commission that settled (including those later clawed
//!   back);
//! - `reversed` = reversed before settlement;
//! - `clawed_back` = settled commissions whose order was refunded afterwards;
//! - `withdrawn` = withdrawals in flight (requested, approved, failed) plus
//!   paid; rejected and returned withdrawals are not withdrawn;
//! - `net = settled − clawed_back − withdrawn`; `withdrawable = max(net, 0)`,
//!   `debt = max(−net, 0)`: at most one of the two is above zero;
//! - `debt_repaid` = `clawed_back − debt`: the part of the claw-backs already
//!   covered by settled money (at once from the balance, or by settlements that
//!   came later).
//!
//! Then `earned = settled + pending + reversed` and
//! `settled = withdrawn + withdrawable + debt_repaid` hold after every event
//! (the property tests check both against sums over the commissions and the
//! withdrawals). A withdrawal is accepted only up to `withdrawable`, decided on
//! the stream's current state; two withdrawals, or a withdrawal and a
//! claw-back, racing on the stream meet at the same sequence and only one
//! commits, so the account never pays out more than it has. A claw-back is
//! never refused and never clamped: what the balance cannot cover is recorded
//! as `debt` and repaid by later settlements before anything is withdrawable.
//!
//! Mall refunds are whole (the order gives back everything it took), so a
//! refund reverses or claws back the whole commission. A refund of an order
//! that earned nothing (no accrual, e.g. a commission that rounded to 0) is
//! refused as `UnknownCommission`: the application treats that as nothing to
//! do.

mod account;
#[cfg(test)]
mod account_tests;
pub mod binding;
#[cfg(test)]
mod binding_tests;
pub mod commission_settings;
mod distributor;
pub mod settings;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use account::{
    Commission, CommissionAccount, CommissionAccountCommand, CommissionAccountError, CommissionAccountEvent,
    CommissionFigures, CommissionKey, CommissionState, Owner, PayoutMethod, TransferAttempt, Withdrawal,
    WithdrawalState, TRANSFER_ATTEMPTS_MAX,
};

pub use commission_settings::{
    CommissionSettings, CommissionSettingsError, CommissionSettingsShape, DistributorLevel, DISTRIBUTOR_LEVELS_MAX,
};
pub use distributor::{Distributor, DistributorCommand, DistributorError, DistributorEvent, EnrolmentRoute};
pub use settings::{DistributionSettings, DistributionSettingsShape, SettingsError};

use crate::ids::uuid_id;
use crate::mall::Quantity;
use crate::{MemberId, TenantId};

/// Stable names of the distribution invariants, as `InvariantViolation::rule`.
pub mod rules {
    pub const ACCOUNT_EXISTS: &str = "commission_account.exists";
    pub const ACCOUNT_OPENED_ONCE: &str = "commission_account.opened_once";
    /// One commission per (order, level).
    pub const ACCRUED_ONCE: &str = "commission_account.accrued_once";
    /// Pending → settled → clawed back, or pending → reversed; nothing else.
    pub const COMMISSION_STATES: &str = "commission_account.commission_states";
    /// Requested → approved → paid | failed; requested → rejected;
    /// failed → approved (retried) | returned.
    pub const WITHDRAWAL_STATES: &str = "commission_account.withdrawal_states";
    /// A withdrawal never takes more than the withdrawable balance.
    pub const WITHDRAWAL_COVERED: &str = "commission_account.withdrawal_covered";
    /// Fee and payout add up to the amount; the payout is positive.
    pub const WITHDRAWAL_SPLIT: &str = "commission_account.withdrawal_split";
    /// The figures an event states are what the state gives.
    pub const FIGURES: &str = "commission_account.figures";
    /// Sums stay within i64 (they never come near it in practice).
    pub const FIGURES_FIT: &str = "commission_account.figures_fit";
    /// Applied → approved | rejected; enrolled or designated; active ⇄
    /// suspended; one member per stream.
    pub const DISTRIBUTOR_STANDING: &str = "distributor.standing";
}

/// Longest holding period after delivery before a commission settles.
pub const HOLD_DAYS_MAX: u16 = 365;
/// When a commission of an order delivered at `delivered_at` may settle,
/// `hold_days` later (what the scheduler waits for; the account refuses
/// earlier settlements).
pub fn settles_at(delivered_at: chrono::DateTime<chrono::Utc>, hold_days: u16) -> chrono::DateTime<chrono::Utc> {
    delivered_at + chrono::Duration::days(i64::from(hold_days.min(HOLD_DAYS_MAX)))
}

/// A rate of 100% in basis points.
pub const RATE_BPS_FULL: u16 = 10_000;

uuid_id!(
    /// A distributor's commission account (one stream per tenant and distributor).
    CommissionAccountId,
    "commission account id"
);
uuid_id!(
    /// One withdrawal from a commission account.
    WithdrawalId,
    "withdrawal id"
);

uuid_id!(
    /// A member's distributor stream (standing and its history).
    DistributorId,
    "distributor id"
);

const DISTRIBUTION_NAMESPACE: Uuid = Uuid::from_u128(0x5d1e_7a20_93c4_4b6e_8f01_2c7d_a4b9_e613);

impl CommissionAccountId {
    /// The one account of `distributor` in `tenant`: derived, so every
    /// command for the distributor names the same stream.
    pub fn for_distributor(tenant: &TenantId, distributor: MemberId) -> Self {
        let name = format!("account\u{1f}{}\u{1f}{}", tenant.as_str(), distributor);
        Self(Uuid::new_v5(&DISTRIBUTION_NAMESPACE, name.as_bytes()))
    }
}

impl DistributorId {
    /// The one distributor stream of `member` in `tenant`.
    pub fn for_member(tenant: &TenantId, member: MemberId) -> Self {
        let name = format!("distributor\u{1f}{}\u{1f}{}", tenant.as_str(), member);
        Self(Uuid::new_v5(&DISTRIBUTION_NAMESPACE, name.as_bytes()))
    }
}

impl WithdrawalId {
    /// The reference of the payout to the member's cash balance (the member
    /// ledger credit names it, so a withdrawal is credited once): fixed by the
    /// withdrawal, the same on every retry.
    pub fn payout_reference(&self) -> crate::Reference {
        crate::Reference::derived(format!("commission-withdrawal:{}", self.0))
    }

    /// The numbers of the `attempt`-th WeChat Pay transfer of this withdrawal
    /// (`out_batch_no`, `out_detail_no`): `wb`/`wd`, the id's 128 bits in 25
    /// base-36 digits, the attempt in 2 digits. Fixed by withdrawal and
    /// attempt, so a transfer sent again (a lost answer) never pays twice: Pay
    /// knows the number.
    pub fn transfer_nos(&self, attempt: u32) -> (String, String) {
        let mut digits = [b'0'; TRANSFER_ID_DIGITS];
        let mut n = self.0.as_u128();
        for d in digits.iter_mut().rev() {
            *d = TRANSFER_BASE36[(n % 36) as usize];
            n /= 36;
        }
        let id = String::from_utf8_lossy(&digits).into_owned();
        let attempt = attempt.min(99);
        (format!("wb{id}{attempt:02}"), format!("wd{id}{attempt:02}"))
    }

    /// The withdrawal and attempt an `out_batch_no` or `out_detail_no` of
    /// [`WithdrawalId::transfer_nos`] names.
    pub fn from_transfer_no(no: &str) -> Option<(WithdrawalId, u32)> {
        let rest = no.strip_prefix("wb").or_else(|| no.strip_prefix("wd"))?;
        if rest.len() != TRANSFER_ID_DIGITS + 2 || !rest.is_ascii() {
            return None;
        }
        let (id, attempt) = rest.split_at(TRANSFER_ID_DIGITS);
        let mut n: u128 = 0;
        for b in id.bytes() {
            let d = TRANSFER_BASE36.iter().position(|c| *c == b)? as u128;
            n = n.checked_mul(36)?.checked_add(d)?;
        }
        let attempt: u32 = attempt.parse().ok()?;
        Some((WithdrawalId(Uuid::from_u128(n)), attempt))
    }

    /// Derived from the request's idempotency key, so a repeated request names
    /// the same withdrawal (and is refused as a duplicate).
    pub fn for_request(tenant: &TenantId, distributor: MemberId, key: &str) -> Self {
        let name = format!("withdrawal\u{1f}{}\u{1f}{}\u{1f}{}", tenant.as_str(), distributor, key);
        Self(Uuid::new_v5(&DISTRIBUTION_NAMESPACE, name.as_bytes()))
    }
}

const TRANSFER_BASE36: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
/// Base-36 digits of a u128 (36^25 > 2^128).
const TRANSFER_ID_DIGITS: usize = 25;

/// Which ancestor of the buyer earns: the direct distributor (1) or theirs (2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CommissionLevel {
    First,
    Second,
}

impl CommissionLevel {
    pub fn number(self) -> u8 {
        match self {
            CommissionLevel::First => 1,
            CommissionLevel::Second => 2,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    #[error("a rate must be 0..={RATE_BPS_FULL} basis points, got {0}")]
    OutOfRange(u32),
    #[error("level 1 and level 2 rates sum to {0} basis points, more than {RATE_BPS_FULL}")]
    SumAboveFull(u32),
}

/// A commission rate in basis points: 0..=10,000 (0% to 100%).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[schemars(extend("minimum" = 0, "maximum" = RATE_BPS_FULL))]
#[serde(try_from = "u32", into = "u32")]
pub struct RateBps(u16);

impl RateBps {
    pub fn new(bps: u32) -> Result<Self, RateError> {
        match u16::try_from(bps) {
            Ok(b) if b <= RATE_BPS_FULL => Ok(Self(b)),
            _ => Err(RateError::OutOfRange(bps)),
        }
    }
    pub fn get(self) -> u16 {
        self.0
    }
}

impl TryFrom<u32> for RateBps {
    type Error = RateError;
    fn try_from(v: u32) -> Result<Self, RateError> {
        Self::new(v)
    }
}

impl From<RateBps> for u32 {
    fn from(r: RateBps) -> u32 {
        u32::from(r.0)
    }
}

/// A tenant's default rates (or a distributor level's): level 1 and level 2
/// sum to at most 100%.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "LevelRatesShape", into = "LevelRatesShape")]
pub struct LevelRates {
    first: RateBps,
    second: RateBps,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LevelRatesShape {
    pub first: RateBps,
    pub second: RateBps,
}

impl TryFrom<LevelRatesShape> for LevelRates {
    type Error = RateError;
    fn try_from(s: LevelRatesShape) -> Result<Self, RateError> {
        Self::new(s.first, s.second)
    }
}

impl From<LevelRates> for LevelRatesShape {
    fn from(r: LevelRates) -> Self {
        LevelRatesShape { first: r.first, second: r.second }
    }
}

impl LevelRates {
    /// 0% at both levels.
    pub const NONE: LevelRates = LevelRates { first: RateBps(0), second: RateBps(0) };

    pub fn new(first: RateBps, second: RateBps) -> Result<Self, RateError> {
        let sum = u32::from(first) + u32::from(second);
        if sum > u32::from(RATE_BPS_FULL) {
            return Err(RateError::SumAboveFull(sum));
        }
        Ok(Self { first, second })
    }
    pub fn rate(&self, level: CommissionLevel) -> RateBps {
        match level {
            CommissionLevel::First => self.first,
            CommissionLevel::Second => self.second,
        }
    }
}

/// How one commission is computed (the tenant default, a distributor level's
/// rate, or a product's override, as the application resolved it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum CommissionRule {
    /// `floor(basis × bps / 10,000)`.
    Rate { bps: RateBps },
    /// `fen × quantity`, capped at the basis.
    FixedPerUnit { fen: crate::AmountFen },
}

impl CommissionRule {
    /// The commission in fen on `basis_fen` (cash paid for the goods, after
    /// coupons) for `quantity` units; 0 when nothing is earned. `None` only
    /// when the basis is negative (never for a valid order).
    pub fn commission_fen(self, basis_fen: i64, quantity: Quantity) -> Option<i64> {
        if basis_fen < 0 {
            return None;
        }
        match self {
            CommissionRule::Rate { bps } => {
                let product = i128::from(basis_fen).checked_mul(i128::from(bps.get()))?;
                i64::try_from(product / i128::from(RATE_BPS_FULL)).ok()
            }
            CommissionRule::FixedPerUnit { fen } => {
                let total = fen.get().checked_mul(i64::from(quantity.get()))?;
                Some(total.min(basis_fen))
            }
        }
    }

    /// The commission of a level when the nearer levels of the same order
    /// (level 1, for level 2) already take `nearer_levels_fen`: never more
    /// than what they leave of the basis, so an order's levels together never
    /// exceed it (fixed amounts could otherwise pay twice the basis). `None`
    /// when `nearer_levels_fen` is not within `0..=basis_fen`.
    pub fn commission_fen_after(self, basis_fen: i64, quantity: Quantity, nearer_levels_fen: i64) -> Option<i64> {
        if !(0..=basis_fen).contains(&nearer_levels_fen) {
            return None;
        }
        Some(self.commission_fen(basis_fen, quantity)?.min(basis_fen - nearer_levels_fen))
    }
}

/// Longest distributor level code.
pub const LEVEL_CODE_LEN_MAX: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a distributor level code is 1..={LEVEL_CODE_LEN_MAX} of a-z, 0-9, '-' and '_', got {0:?}")]
pub struct LevelCodeError(pub String);

/// The code of a distributor level in the tenant's catalog (commission
/// settings): 1..=32 of `a-z`, `0-9`, `-`, `_` (e.g. `gold`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "String", into = "String")]
#[schemars(extend("pattern" = "^[a-z0-9_-]{1,32}$"))]
pub struct DistributorLevelCode(String);

impl DistributorLevelCode {
    pub fn parse(s: &str) -> Result<Self, LevelCodeError> {
        let ok = (1..=LEVEL_CODE_LEN_MAX).contains(&s.len())
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(LevelCodeError(s.chars().take(LEVEL_CODE_LEN_MAX + 8).collect()))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for DistributorLevelCode {
    type Error = LevelCodeError;
    fn try_from(s: String) -> Result<Self, LevelCodeError> {
        Self::parse(&s)
    }
}

impl From<DistributorLevelCode> for String {
    fn from(c: DistributorLevelCode) -> String {
        c.0
    }
}

impl std::fmt::Display for DistributorLevelCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where the rule of a commission came from (what [`resolve_rule`] chose).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RuleSource {
    Product,
    DistributorLevel,
    TenantDefault,
}

/// [`resolve_rule`] and where the rule came from: the product's override,
/// else the distributor's level, else the tenant's defaults.
pub fn resolve_rule_from(
    level: CommissionLevel,
    tenant_rates: Option<LevelRates>,
    distributor_level_rates: Option<LevelRates>,
    product: Option<ProductCommission>,
) -> Option<(CommissionRule, RuleSource)> {
    let source = match (product, distributor_level_rates) {
        (Some(_), _) => RuleSource::Product,
        (None, Some(_)) => RuleSource::DistributorLevel,
        (None, None) => RuleSource::TenantDefault,
    };
    let fallback = distributor_level_rates.or(tenant_rates);
    let rule = match (product, fallback) {
        (Some(p), _) => resolve_rule(level, LevelRates::NONE, None, Some(p)),
        (None, Some(rates)) => resolve_rule(level, rates, None, None),
        (None, None) => None,
    };
    rule.map(|r| (r, source))
}

/// A product's own commission terms, overriding the rates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ProductCommission {
    /// Rates of its own for levels 1 and 2.
    Rates { rates: LevelRates },
    /// A fixed amount per unit for level 1, and optionally level 2.
    FixedPerUnit { first_fen: crate::AmountFen, second_fen: Option<crate::AmountFen> },
    /// The product earns no commission.
    Excluded,
}

/// The rule for one level of one order line: the product's override first,
/// then the rates of the distributor's level, then the tenant's defaults.
/// `None` when the level earns nothing on this product.
pub fn resolve_rule(
    level: CommissionLevel,
    tenant_rates: LevelRates,
    distributor_level_rates: Option<LevelRates>,
    product: Option<ProductCommission>,
) -> Option<CommissionRule> {
    let rates = match product {
        Some(ProductCommission::Excluded) => return None,
        Some(ProductCommission::FixedPerUnit { first_fen, second_fen }) => {
            let fen = match level {
                CommissionLevel::First => Some(first_fen),
                CommissionLevel::Second => second_fen,
            };
            return fen.map(|fen| CommissionRule::FixedPerUnit { fen });
        }
        Some(ProductCommission::Rates { rates }) => rates,
        None => distributor_level_rates.unwrap_or(tenant_rates),
    };
    let bps = rates.rate(level);
    (bps.get() > 0).then_some(CommissionRule::Rate { bps })
}

/// The commissions of an order's levels 1 and 2 (0 when a level earns
/// nothing), as the two accruals state them: level 1 first, level 2 on what
/// level 1 leaves. `None` on a negative basis.
pub fn split_order(
    basis_fen: i64,
    quantity: Quantity,
    first: Option<CommissionRule>,
    second: Option<CommissionRule>,
) -> Option<(i64, i64)> {
    let first_fen = match first {
        Some(rule) => rule.commission_fen_after(basis_fen, quantity, 0)?,
        None => 0,
    };
    let second_fen = match second {
        Some(rule) => rule.commission_fen_after(basis_fen, quantity, first_fen)?,
        None => 0,
    };
    Some((first_fen, second_fen))
}

/// A tenant's withdrawal settings: the minimum amount and the fee.
/// The fee is `floor(amount × fee_bps / 10,000)` (rounded in the member's
/// favour); the payout (`amount − fee`) must stay above zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WithdrawalPolicy {
    pub min_amount_fen: crate::AmountFen,
    pub fee: RateBps,
}

impl WithdrawalPolicy {
    /// The fee on `amount_fen`; `None` on overflow (never for a bounded amount).
    pub fn fee_fen(&self, amount_fen: i64) -> Option<i64> {
        let product = i128::from(amount_fen).checked_mul(i128::from(self.fee.get()))?;
        i64::try_from(product / i128::from(RATE_BPS_FULL)).ok()
    }
}
