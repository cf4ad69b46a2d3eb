//! A tenant's commission settings: how long a delivered order's commissions
//! are held before they settle, and the withdrawal policy (minimum amount and
//! fee), and the catalog of distributor levels (a name and level-1/level-2
//! rates each; a distributor set to a level earns its rates unless the
//! product has its own terms). Kept apart from [`super::DistributionSettings`] (enrolment, binding,
//! depth and rates) so each is saved on its own. Parsed once
//! ([`CommissionSettings::new`]); a value of this type is valid.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{DistributorLevelCode, LevelRates, PayoutMethod, RateBps, WithdrawalPolicy, HOLD_DAYS_MAX, RATE_BPS_FULL};
use crate::AmountFen;

/// Holding days a tenant has until it chooses (a week: the usual return window).
pub const HOLD_DAYS_DEFAULT: u16 = 7;
/// Smallest withdrawal a tenant has until it chooses: 1 yuan.
pub const WITHDRAWAL_MIN_DEFAULT_FEN: i64 = 100;
/// The fee never takes more than half of a withdrawal.
pub const WITHDRAWAL_FEE_BPS_MAX: u16 = RATE_BPS_FULL / 2;
/// Distributor levels one tenant's catalog holds.
pub const DISTRIBUTOR_LEVELS_MAX: usize = 20;
/// Longest level name, in characters.
pub const LEVEL_NAME_CHARS_MAX: usize = 32;

/// One distributor level of the catalog: its code (what a distributor is
/// set to), a display name and the rates a distributor at this level earns
/// at level 1 and level 2 (sum ≤ 100%).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DistributorLevel {
    pub code: DistributorLevelCode,
    #[schemars(length(min = 1, max = LEVEL_NAME_CHARS_MAX))]
    pub name: String,
    pub rates: LevelRates,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommissionSettingsError {
    #[error("the holding period must be 0..={HOLD_DAYS_MAX} days, got {0}")]
    HoldDays(u16),
    #[error("the withdrawal fee must be 0..={WITHDRAWAL_FEE_BPS_MAX} basis points, got {0}")]
    Fee(u16),
    #[error("at most {DISTRIBUTOR_LEVELS_MAX} distributor levels, got {0}")]
    TooManyLevels(usize),
    #[error("distributor level {0} is listed twice")]
    DuplicateLevel(DistributorLevelCode),
    #[error("a level name is 1..={LEVEL_NAME_CHARS_MAX} characters without control characters")]
    LevelName,
}

/// A tenant's commission settings (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "CommissionSettingsShape", into = "CommissionSettingsShape")]
pub struct CommissionSettings {
    hold_days: u16,
    withdrawal: WithdrawalPolicy,
    payout: PayoutMethod,
    levels: Vec<DistributorLevel>,
}

/// The stored and wire shape of [`CommissionSettings`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommissionSettingsShape {
    /// Days after delivery before a commission settles (0..=365).
    pub hold_days: u16,
    pub withdrawal_min_fen: AmountFen,
    /// Fee on a withdrawal in basis points (0..=5,000), rounded down.
    pub withdrawal_fee_bps: RateBps,
    /// How approved withdrawals are paid out (settings saved before it: `balance`).
    #[serde(default)]
    pub payout_method: PayoutMethod,
    /// The catalog of distributor levels (codes unique, at most 20).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub distributor_levels: Vec<DistributorLevel>,
}

impl TryFrom<CommissionSettingsShape> for CommissionSettings {
    type Error = CommissionSettingsError;
    fn try_from(s: CommissionSettingsShape) -> Result<Self, CommissionSettingsError> {
        Self::new(s)
    }
}

impl From<CommissionSettings> for CommissionSettingsShape {
    fn from(s: CommissionSettings) -> Self {
        CommissionSettingsShape {
            hold_days: s.hold_days,
            withdrawal_min_fen: s.withdrawal.min_amount_fen,
            withdrawal_fee_bps: s.withdrawal.fee,
            payout_method: s.payout,
            distributor_levels: s.levels,
        }
    }
}

impl Default for CommissionSettings {
    /// A week's hold, withdrawals from 1 yuan, no fee.
    fn default() -> Self {
        // Both constants are in range (the tests build them): no fallback needed.
        let (Ok(min_amount_fen), Ok(fee)) = (AmountFen::new(WITHDRAWAL_MIN_DEFAULT_FEN), RateBps::new(0)) else {
            unreachable!("the default withdrawal minimum and fee are valid constants")
        };
        Self {
            hold_days: HOLD_DAYS_DEFAULT,
            withdrawal: WithdrawalPolicy { min_amount_fen, fee },
            payout: PayoutMethod::Balance,
            levels: Vec::new(),
        }
    }
}

impl CommissionSettings {
    pub fn new(shape: CommissionSettingsShape) -> Result<Self, CommissionSettingsError> {
        if shape.hold_days > HOLD_DAYS_MAX {
            return Err(CommissionSettingsError::HoldDays(shape.hold_days));
        }
        if shape.withdrawal_fee_bps.get() > WITHDRAWAL_FEE_BPS_MAX {
            return Err(CommissionSettingsError::Fee(shape.withdrawal_fee_bps.get()));
        }
        let levels = shape.distributor_levels;
        if levels.len() > DISTRIBUTOR_LEVELS_MAX {
            return Err(CommissionSettingsError::TooManyLevels(levels.len()));
        }
        let mut codes = std::collections::BTreeSet::new();
        for level in &levels {
            let chars = level.name.chars().count();
            if chars == 0 || chars > LEVEL_NAME_CHARS_MAX || level.name.chars().any(char::is_control) {
                return Err(CommissionSettingsError::LevelName);
            }
            if !codes.insert(&level.code) {
                return Err(CommissionSettingsError::DuplicateLevel(level.code.clone()));
            }
        }
        Ok(Self {
            hold_days: shape.hold_days,
            withdrawal: WithdrawalPolicy { min_amount_fen: shape.withdrawal_min_fen, fee: shape.withdrawal_fee_bps },
            payout: shape.payout_method,
            levels,
        })
    }
    pub fn distributor_levels(&self) -> &[DistributorLevel] {
        &self.levels
    }
    /// The rates of the level `code` names; `None` for a code no longer in
    /// the catalog (the distributor then earns the tenant's default rates).
    pub fn level_rates(&self, code: &DistributorLevelCode) -> Option<LevelRates> {
        self.levels.iter().find(|l| &l.code == code).map(|l| l.rates)
    }
    pub fn hold_days(&self) -> u16 {
        self.hold_days
    }
    pub fn withdrawal(&self) -> WithdrawalPolicy {
        self.withdrawal
    }
    /// How approved withdrawals are paid out (a transfer needs a Pay v3
    /// merchant: the application checks it when saving).
    pub fn payout_method(&self) -> PayoutMethod {
        self.payout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(hold_days: u16, fee: u32) -> CommissionSettingsShape {
        CommissionSettingsShape {
            hold_days,
            withdrawal_min_fen: AmountFen::new(100).unwrap(),
            withdrawal_fee_bps: RateBps::new(fee).unwrap(),
            payout_method: PayoutMethod::Balance,
            distributor_levels: Vec::new(),
        }
    }

    #[test]
    fn hold_days_and_fee_are_bounded_at_the_limit_and_one_past() {
        assert!(CommissionSettings::new(shape(HOLD_DAYS_MAX, 0)).is_ok());
        assert_eq!(
            CommissionSettings::new(shape(HOLD_DAYS_MAX + 1, 0)),
            Err(CommissionSettingsError::HoldDays(HOLD_DAYS_MAX + 1))
        );
        assert!(CommissionSettings::new(shape(0, u32::from(WITHDRAWAL_FEE_BPS_MAX))).is_ok());
        assert!(CommissionSettings::new(shape(0, u32::from(WITHDRAWAL_FEE_BPS_MAX) + 1)).is_err());
    }

    #[test]
    fn the_shape_round_trips_and_bad_shapes_are_refused() {
        let settings = CommissionSettings::new(shape(3, 250)).unwrap();
        let json = serde_json::to_value(&settings).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"hold_days": 3, "withdrawal_min_fen": 100, "withdrawal_fee_bps": 250,
                "payout_method": "balance"})
        );
        assert_eq!(serde_json::from_value::<CommissionSettings>(json).unwrap(), settings);
        // Settings saved before payout methods existed read as the balance.
        let old = serde_json::json!({"hold_days": 3, "withdrawal_min_fen": 100, "withdrawal_fee_bps": 250});
        assert_eq!(serde_json::from_value::<CommissionSettings>(old).unwrap(), settings);
        let transfer = serde_json::json!({"hold_days": 3, "withdrawal_min_fen": 100, "withdrawal_fee_bps": 250,
            "payout_method": "wechat_transfer"});
        let transfer = serde_json::from_value::<CommissionSettings>(transfer).unwrap();
        assert_eq!(transfer.payout_method(), PayoutMethod::WechatTransfer);
        for bad in [
            serde_json::json!({"hold_days": 3, "withdrawal_min_fen": 0, "withdrawal_fee_bps": 0}),
            serde_json::json!({"hold_days": 366, "withdrawal_min_fen": 1, "withdrawal_fee_bps": 0}),
            serde_json::json!({"hold_days": 3, "withdrawal_min_fen": 1, "withdrawal_fee_bps": 5001}),
            serde_json::json!({"hold_days": 3, "withdrawal_min_fen": 1, "withdrawal_fee_bps": 0, "x": 1}),
        ] {
            assert!(serde_json::from_value::<CommissionSettings>(bad.clone()).is_err(), "{bad}");
        }
        assert_eq!(CommissionSettings::default().withdrawal().min_amount_fen.get(), WITHDRAWAL_MIN_DEFAULT_FEN);
    }
}

#[cfg(test)]
mod level_tests {
    use super::*;

    fn level(code: &str, name: &str, first: u32, second: u32) -> DistributorLevel {
        DistributorLevel {
            code: DistributorLevelCode::parse(code).unwrap(),
            name: name.into(),
            rates: LevelRates::new(RateBps::new(first).unwrap(), RateBps::new(second).unwrap()).unwrap(),
        }
    }

    fn with_levels(levels: Vec<DistributorLevel>) -> Result<CommissionSettings, CommissionSettingsError> {
        let mut shape = CommissionSettingsShape::from(CommissionSettings::default());
        shape.distributor_levels = levels;
        CommissionSettings::new(shape)
    }

    #[test]
    fn given_a_catalog_of_levels_then_codes_are_unique_names_bounded_and_rates_found_by_code() {
        let settings =
            with_levels(vec![level("gold", "金牌", 1_500, 500), level("silver", "Silver", 1_000, 0)]).unwrap();
        let gold = DistributorLevelCode::parse("gold").unwrap();
        assert_eq!(
            settings.level_rates(&gold).map(|r| r.rate(super::super::CommissionLevel::First).get()),
            Some(1_500)
        );
        assert_eq!(settings.level_rates(&DistributorLevelCode::parse("bronze").unwrap()), None);
        assert_eq!(
            with_levels(vec![level("gold", "a", 1, 1), level("gold", "b", 2, 2)]),
            Err(CommissionSettingsError::DuplicateLevel(gold))
        );
        assert_eq!(with_levels(vec![level("x", "", 1, 1)]), Err(CommissionSettingsError::LevelName));
        assert_eq!(with_levels(vec![level("x", &"名".repeat(33), 1, 1)]), Err(CommissionSettingsError::LevelName));
        assert!(with_levels(vec![level("x", &"名".repeat(32), 1, 1)]).is_ok());
        let many = (0..=DISTRIBUTOR_LEVELS_MAX).map(|i| level(&format!("l{i}"), "n", 1, 1)).collect();
        assert_eq!(with_levels(many), Err(CommissionSettingsError::TooManyLevels(DISTRIBUTOR_LEVELS_MAX + 1)));
        for bad in ["", "Gold", "gold level", &"a".repeat(33)] {
            assert!(DistributorLevelCode::parse(bad).is_err(), "{bad:?}");
        }
        // Stored settings without levels still read; a level above 100% in sum does not.
        let json = serde_json::json!({"hold_days": 3, "withdrawal_min_fen": 100, "withdrawal_fee_bps": 0});
        assert!(serde_json::from_value::<CommissionSettings>(json).unwrap().distributor_levels().is_empty());
        let json = serde_json::json!({"hold_days": 3, "withdrawal_min_fen": 100, "withdrawal_fee_bps": 0,
            "distributor_levels": [{"code": "gold", "name": "Gold", "rates": {"first": 9000, "second": 1001}}]});
        assert!(serde_json::from_value::<CommissionSettings>(json).is_err());
    }
}
