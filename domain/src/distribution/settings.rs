//! A tenant's distribution settings: how members become distributors, how
//! arrivals bind, how deep commissions go, the default rates (for the
//! commission rules) and the points a distributor earns for a new member.
//! Parsed once ([`DistributionSettings::new`]); a value of this type is valid.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::binding::{BindingMode, CommissionDepth, EnrolmentPolicy, BINDING_DAYS_MAX};
use super::LevelRates;
use crate::PointsAmount;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("the binding validity window must be 1..={BINDING_DAYS_MAX} days, got {0}")]
    WindowDays(u16),
}

/// A tenant's distribution settings (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "DistributionSettingsShape", into = "DistributionSettingsShape")]
pub struct DistributionSettings {
    enrolment: EnrolmentPolicy,
    binding_mode: BindingMode,
    depth: CommissionDepth,
    default_rates: Option<LevelRates>,
    new_member_reward_points: Option<PointsAmount>,
}

/// The stored and wire shape of [`DistributionSettings`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DistributionSettingsShape {
    pub enrolment: EnrolmentPolicy,
    pub binding_mode: BindingMode,
    pub depth: CommissionDepth,
    /// Level 1 and 2 rates in basis points, summing to at most 10,000 (used
    /// by the commission rules; `None` until set).
    pub default_rates: Option<LevelRates>,
    /// Points the distributor earns when a person binds for the first time
    /// in the tenant (once per openid, ever); `None`: no reward.
    pub new_member_reward_points: Option<PointsAmount>,
}

impl TryFrom<DistributionSettingsShape> for DistributionSettings {
    type Error = SettingsError;
    fn try_from(s: DistributionSettingsShape) -> Result<Self, SettingsError> {
        Self::new(s)
    }
}

impl From<DistributionSettings> for DistributionSettingsShape {
    fn from(s: DistributionSettings) -> Self {
        DistributionSettingsShape {
            enrolment: s.enrolment,
            binding_mode: s.binding_mode,
            depth: s.depth,
            default_rates: s.default_rates,
            new_member_reward_points: s.new_member_reward_points,
        }
    }
}

impl Default for DistributionSettings {
    /// What a tenant that never chose has: members apply and an admin
    /// decides, the first binding holds, one level, no rates, no reward.
    fn default() -> Self {
        Self {
            enrolment: EnrolmentPolicy::Application,
            binding_mode: BindingMode::FirstWins,
            depth: CommissionDepth::One,
            default_rates: None,
            new_member_reward_points: None,
        }
    }
}

impl DistributionSettings {
    pub fn new(shape: DistributionSettingsShape) -> Result<Self, SettingsError> {
        if let BindingMode::ValidFor { days } = shape.binding_mode {
            if days == 0 || days > BINDING_DAYS_MAX {
                return Err(SettingsError::WindowDays(days));
            }
        }
        Ok(Self {
            enrolment: shape.enrolment,
            binding_mode: shape.binding_mode,
            depth: shape.depth,
            default_rates: shape.default_rates,
            new_member_reward_points: shape.new_member_reward_points,
        })
    }
    pub fn enrolment(&self) -> EnrolmentPolicy {
        self.enrolment
    }
    pub fn binding_mode(&self) -> BindingMode {
        self.binding_mode
    }
    pub fn depth(&self) -> CommissionDepth {
        self.depth
    }
    pub fn default_rates(&self) -> Option<LevelRates> {
        self.default_rates
    }
    pub fn new_member_reward_points(&self) -> Option<PointsAmount> {
        self.new_member_reward_points
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> DistributionSettingsShape {
        DistributionSettings::default().into()
    }

    #[test]
    fn the_window_is_bounded_and_the_shape_round_trips() {
        let mut s = shape();
        s.binding_mode = BindingMode::ValidFor { days: 0 };
        assert_eq!(DistributionSettings::new(s), Err(SettingsError::WindowDays(0)));
        s.binding_mode = BindingMode::ValidFor { days: BINDING_DAYS_MAX + 1 };
        assert!(DistributionSettings::new(s).is_err());
        s.binding_mode = BindingMode::ValidFor { days: BINDING_DAYS_MAX };
        let settings = DistributionSettings::new(s).unwrap();
        let json = serde_json::to_value(settings).unwrap();
        assert_eq!(json["binding_mode"], serde_json::json!({"kind": "valid_for", "days": BINDING_DAYS_MAX}));
        assert_eq!(serde_json::from_value::<DistributionSettings>(json).unwrap(), settings);
        let bad = serde_json::json!({"enrolment": {"kind": "everyone"}, "binding_mode": {"kind": "last_wins"},
            "depth": "two", "default_rates": {"first": 9000, "second": 2000}, "new_member_reward_points": null});
        assert!(serde_json::from_value::<DistributionSettings>(bad).is_err());
    }
}
