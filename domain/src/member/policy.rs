//! Points expiry policies.

use chrono::{DateTime, Datelike, Duration, FixedOffset, NaiveDate, TimeZone, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Merchants run on China Standard Time; "end of month" means midnight there.
const MERCHANT_UTC_OFFSET_SECS: i32 = 8 * 3600;
pub const EXPIRY_DAYS_MAX: u32 = 3650;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExpiryPolicy {
    Never,
    /// Expires `days` days after the grant.
    Days {
        days: u32,
    },
    /// Expires at the end of the calendar month of the grant (merchant time).
    EndOfMonth,
    /// Expires at the end of the calendar year of the grant (merchant time).
    EndOfYear,
}

impl ExpiryPolicy {
    pub fn is_valid(&self) -> bool {
        match self {
            ExpiryPolicy::Days { days } => (1..=EXPIRY_DAYS_MAX).contains(days),
            _ => true,
        }
    }

    /// The instant from which the lot is expired, or `None` for never (and for
    /// a date past what can be represented, which `handle` refuses).
    pub fn expires_at(&self, granted_at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let tz = FixedOffset::east_opt(MERCHANT_UTC_OFFSET_SECS)?;
        let local = granted_at.with_timezone(&tz);
        let start_of = |date: NaiveDate| -> Option<DateTime<Utc>> {
            tz.from_local_datetime(&date.and_hms_opt(0, 0, 0)?).single().map(|d| d.with_timezone(&Utc))
        };
        match self {
            ExpiryPolicy::Never => None,
            ExpiryPolicy::Days { days } => granted_at.checked_add_signed(Duration::days(i64::from(*days))),
            ExpiryPolicy::EndOfMonth => {
                let (y, m) =
                    if local.month() == 12 { (local.year() + 1, 1) } else { (local.year(), local.month() + 1) };
                start_of(NaiveDate::from_ymd_opt(y, m, 1)?)
            }
            ExpiryPolicy::EndOfYear => start_of(NaiveDate::from_ymd_opt(local.year() + 1, 1, 1)?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn end_of_month_is_midnight_china_time() {
        // 2026-01-31 20:00 UTC is already 2026-02-01 04:00 in China.
        let e = ExpiryPolicy::EndOfMonth.expires_at(at("2026-01-31T20:00:00Z")).unwrap();
        assert_eq!(e, at("2026-02-28T16:00:00Z"));
        let e = ExpiryPolicy::EndOfMonth.expires_at(at("2026-12-15T00:00:00Z")).unwrap();
        assert_eq!(e, at("2026-12-31T16:00:00Z"));
    }

    #[test]
    fn end_of_year_and_days() {
        assert_eq!(ExpiryPolicy::EndOfYear.expires_at(at("2026-03-01T00:00:00Z")).unwrap(), at("2026-12-31T16:00:00Z"));
        assert_eq!(
            ExpiryPolicy::Days { days: 30 }.expires_at(at("2026-03-01T00:00:00Z")).unwrap(),
            at("2026-03-31T00:00:00Z")
        );
        assert_eq!(ExpiryPolicy::Never.expires_at(at("2026-03-01T00:00:00Z")), None);
        assert!(!ExpiryPolicy::Days { days: 0 }.is_valid());
        assert!(ExpiryPolicy::Days { days: EXPIRY_DAYS_MAX }.is_valid());
        assert!(!ExpiryPolicy::Days { days: EXPIRY_DAYS_MAX + 1 }.is_valid());
    }
}
