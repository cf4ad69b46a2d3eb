//! Money and points. Integers only: fen for money, whole points for points.
//!
//! Amounts that move value (`AmountFen`, `PointsAmount`) are strictly positive
//! and bounded: the kind of operation gives the sign, never the client.
//! Balances (`BalanceFen`, `PointsBalance`) are never negative.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("amount must be greater than zero, got {0}")]
    NotPositive(i64),
    #[error("amount {got} exceeds the limit {max}")]
    TooLarge { got: i64, max: i64 },
}

macro_rules! positive_amount {
    ($(#[$doc:meta])* $name:ident, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
        #[schemars(extend("minimum" = 1, "maximum" = $max))]
        #[serde(try_from = "i64", into = "i64")]
        pub struct $name(i64);

        impl $name {
            /// Hard ceiling for one operation; deployments may configure a lower one.
            pub const MAX: i64 = $max;
            pub fn new(value: i64) -> Result<Self, AmountError> {
                Self::new_with_limit(value, Self::MAX)
            }
            pub fn new_with_limit(value: i64, max: i64) -> Result<Self, AmountError> {
                if value <= 0 {
                    return Err(AmountError::NotPositive(value));
                }
                let max = max.min(Self::MAX);
                if value > max {
                    return Err(AmountError::TooLarge { got: value, max });
                }
                Ok(Self(value))
            }
            pub fn get(self) -> i64 {
                self.0
            }
        }
        impl TryFrom<i64> for $name {
            type Error = AmountError;
            fn try_from(v: i64) -> Result<Self, AmountError> {
                Self::new(v)
            }
        }
        impl From<$name> for i64 {
            fn from(v: $name) -> i64 {
                v.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

positive_amount!(
    /// A positive amount of money in fen (1/100 yuan).
    AmountFen,
    100_000_000
);
positive_amount!(
    /// A positive number of points.
    PointsAmount,
    100_000_000
);

macro_rules! balance {
    ($(#[$doc:meta])* $name:ident, $amount:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
        #[schemars(extend("minimum" = 0))]
        #[serde(try_from = "i64", into = "i64")]
        pub struct $name(i64);

        impl $name {
            pub const ZERO: Self = Self(0);
            pub fn new(value: i64) -> Option<Self> {
                (value >= 0).then_some(Self(value))
            }
            pub fn get(self) -> i64 {
                self.0
            }
            pub fn checked_add(self, amount: $amount) -> Option<Self> {
                self.0.checked_add(amount.get()).map(Self)
            }
            /// `None` when the result would be negative.
            pub fn checked_sub(self, amount: $amount) -> Option<Self> {
                self.0.checked_sub(amount.get()).and_then(Self::new)
            }
        }
        impl TryFrom<i64> for $name {
            type Error = AmountError;
            fn try_from(v: i64) -> Result<Self, AmountError> {
                Self::new(v).ok_or(AmountError::NotPositive(v))
            }
        }
        impl From<$name> for i64 {
            fn from(v: $name) -> i64 {
                v.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

balance!(
    /// A cash balance in fen; never negative.
    BalanceFen,
    AmountFen
);
balance!(
    /// A points balance; never negative.
    PointsBalance,
    PointsAmount
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_positive_and_bounded() {
        assert!(AmountFen::new(0).is_err());
        assert!(AmountFen::new(-1).is_err());
        assert!(AmountFen::new(1).is_ok());
        assert!(AmountFen::new(AmountFen::MAX).is_ok());
        assert!(AmountFen::new(AmountFen::MAX + 1).is_err());
        assert!(AmountFen::new_with_limit(501, 500).is_err());
        assert!(AmountFen::new_with_limit(500, 500).is_ok());
    }

    #[test]
    fn balances_never_go_negative() {
        let b = BalanceFen::new(100).unwrap();
        assert_eq!(b.checked_sub(AmountFen::new(100).unwrap()), Some(BalanceFen::ZERO));
        assert_eq!(b.checked_sub(AmountFen::new(101).unwrap()), None);
        assert!(BalanceFen::new(-1).is_none());
        assert!(serde_json::from_str::<BalanceFen>("-5").is_err());
        assert!(serde_json::from_str::<AmountFen>("0").is_err());
    }
}
