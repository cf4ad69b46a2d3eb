//! Bodies and answers of the ledger routes (points and cash operations on a
//! member, the member's ledger).
//!
//! Bodies carry raw JSON types (`i64`, `String`) because the operator's limits
//! are only known at run time; `validate` turns them into the application's
//! [`LedgerRequest`] (domain newtypes, checked once), which is what
//! idempotency hashes. Nothing past this module re-checks.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use wxcm_commands::ledger_requests::LedgerRequest;
use wxcm_commands::ports::{LedgerLinePage, LedgerLineRow, Limits, LEDGER_PAGE_MAX};
use wxcm_commands::Committed;
use wxcm_domain::member::{ExpiryPolicy, LedgerLine, MemberEvent, EXPIRY_DAYS_MAX};
use wxcm_domain::{AmountFen, DomainEventMeta, PointsAmount, Reference};

use crate::error::ApiError;
use crate::resources::members::{card_level, MemberDto};

/// Default entries of one ledger page.
pub const LEDGER_PAGE_DEFAULT: u32 = 50;

// ---------- requests ----------

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantPointsBody {
    /// Whole points, > 0 and at most the configured limit.
    #[schema(minimum = 1)]
    pub points: i64,
    pub expiry: ExpiryBody,
    /// Why (1..=200 characters, no control characters).
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]+$")]
    pub reason: String,
    /// A business reference such as a receipt number (1..=200 characters).
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]+$")]
    pub reference: Option<String>,
}

/// When granted points expire (end of month/year in merchant time, UTC+8).
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ExpiryBody {
    // Empty struct variants (not unit ones) so that unknown fields are refused.
    Never {},
    Days {
        #[schema(minimum = 1, maximum = 3650)]
        days: u32,
    },
    EndOfMonth {},
    EndOfYear {},
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeductPointsBody {
    /// Whole points, > 0 and at most the configured limit.
    #[schema(minimum = 1)]
    pub points: i64,
    /// Why (1..=200 characters, no control characters).
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]+$")]
    pub reason: String,
    /// A business reference such as a receipt number (1..=200 characters).
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]+$")]
    pub reference: Option<String>,
}

/// A cash deposit or a counter charge.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CashBody {
    /// Fen (1/100 yuan), > 0 and at most the configured limit.
    #[schema(minimum = 1)]
    pub amount_fen: i64,
    /// Why (1..=200 characters, no control characters).
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]+$")]
    pub reason: String,
    /// A business reference such as a receipt number (1..=200 characters).
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]+$")]
    pub reference: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundBody {
    /// Ledger sequence of the charge being (partly) refunded.
    pub charge_sequence: u64,
    /// Fen, > 0, at most the configured limit and what is left of the charge.
    #[schema(minimum = 1)]
    pub amount_fen: i64,
    /// Why (1..=200 characters, no control characters).
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]+$")]
    pub reason: String,
    /// A business reference such as a receipt number (1..=200 characters).
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]+$")]
    pub reference: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CardLevelBody {
    #[schema(min_length = 1, max_length = 32, pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]+$")]
    pub card_level: String,
    /// Why (1..=200 characters, no control characters).
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]+$")]
    pub reason: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LedgerQuery {
    /// Return entries with a sequence greater than this (default 0: from the start).
    #[param(minimum = 0)]
    pub after: Option<u64>,
    /// Entries per page (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
}

impl LedgerQuery {
    pub fn page(&self) -> Result<(u64, u32), ApiError> {
        let limit = self.limit.unwrap_or(LEDGER_PAGE_DEFAULT);
        if limit == 0 || limit > LEDGER_PAGE_MAX {
            return Err(ApiError::bad_request("invalid_limit", format!("limit must be 1..={LEDGER_PAGE_MAX}")));
        }
        Ok((self.after.unwrap_or(0), limit))
    }
}

// ---------- validation ----------

fn amount_fen(field: &str, value: i64, limits: &Limits) -> Result<AmountFen, ApiError> {
    AmountFen::new_with_limit(value, limits.amount_fen_max)
        .map_err(|e| ApiError::invalid("invalid_amount", format!("{field}: {e}")))
}

fn points(value: i64, limits: &Limits) -> Result<PointsAmount, ApiError> {
    PointsAmount::new_with_limit(value, limits.points_max)
        .map_err(|e| ApiError::invalid("invalid_amount", format!("points: {e}")))
}

fn text(field: &str, value: &str) -> Result<Reference, ApiError> {
    Reference::parse(value).map_err(|e| ApiError::invalid("invalid_text", format!("{field}: {e}")))
}

fn optional_text(field: &str, value: Option<&str>) -> Result<Option<Reference>, ApiError> {
    value.map(|v| text(field, v)).transpose()
}

impl ExpiryBody {
    pub(crate) fn validate(self) -> Result<ExpiryPolicy, ApiError> {
        let policy = match self {
            ExpiryBody::Never {} => ExpiryPolicy::Never,
            ExpiryBody::Days { days } => ExpiryPolicy::Days { days },
            ExpiryBody::EndOfMonth {} => ExpiryPolicy::EndOfMonth,
            ExpiryBody::EndOfYear {} => ExpiryPolicy::EndOfYear,
        };
        if !policy.is_valid() {
            return Err(ApiError::invalid("invalid_expiry", format!("expiry days must be 1..={EXPIRY_DAYS_MAX}")));
        }
        Ok(policy)
    }
}

impl GrantPointsBody {
    pub fn validate(self, limits: &Limits) -> Result<LedgerRequest, ApiError> {
        Ok(LedgerRequest::PointsGrant {
            points: points(self.points, limits)?,
            expiry: self.expiry.validate()?,
            reason: text("reason", &self.reason)?,
            reference: optional_text("reference", self.reference.as_deref())?,
        })
    }
}

impl DeductPointsBody {
    pub fn validate(self, limits: &Limits) -> Result<LedgerRequest, ApiError> {
        Ok(LedgerRequest::PointsDeduction {
            points: points(self.points, limits)?,
            reason: text("reason", &self.reason)?,
            reference: optional_text("reference", self.reference.as_deref())?,
        })
    }
}

/// Which cash operation a [`CashBody`] is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CashOp {
    Deposit,
    Charge,
}

impl CashBody {
    pub fn validate(self, op: CashOp, limits: &Limits) -> Result<LedgerRequest, ApiError> {
        let amount_fen = amount_fen("amount_fen", self.amount_fen, limits)?;
        let reason = text("reason", &self.reason)?;
        let reference = optional_text("reference", self.reference.as_deref())?;
        Ok(match op {
            CashOp::Deposit => LedgerRequest::CashDeposit { amount_fen, reason, reference },
            CashOp::Charge => LedgerRequest::CashCharge { amount_fen, reason, reference },
        })
    }
}

impl RefundBody {
    pub fn validate(self, limits: &Limits) -> Result<LedgerRequest, ApiError> {
        Ok(LedgerRequest::CashRefund {
            charge_sequence: self.charge_sequence,
            amount_fen: amount_fen("amount_fen", self.amount_fen, limits)?,
            reason: text("reason", &self.reason)?,
            reference: optional_text("reference", self.reference.as_deref())?,
        })
    }
}

impl CardLevelBody {
    pub fn validate(self) -> Result<LedgerRequest, ApiError> {
        Ok(LedgerRequest::CardLevel {
            card_level: card_level(&self.card_level)?,
            reason: text("reason", &self.reason)?,
        })
    }
}

// ---------- responses ----------

/// One ledger line: signed deltas derived from the kind of event.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LedgerEntryDto {
    pub sequence: u64,
    /// Absent on entries just committed (the store stamps the time).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recorded_at: Option<DateTime<Utc>>,
    /// `PointsGranted`, `CashCharged`, ...
    pub event_type: String,
    pub points_delta: i64,
    pub held_delta: i64,
    pub cash_delta_fen: i64,
    pub points_after: Option<i64>,
    pub balance_after_fen: Option<i64>,
    /// `staff:<username>`, `admin:<username>`, `system:<job>`, ...
    pub actor: String,
    /// Why (1..=200 characters, no control characters).
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]+$")]
    pub reason: String,
    /// A business reference such as a receipt number (1..=200 characters).
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]+$")]
    pub reference: Option<String>,
    pub idempotency_key: String,
}

impl LedgerEntryDto {
    fn new(sequence: u64, recorded_at: Option<DateTime<Utc>>, event_type: String, line: LedgerLine) -> Self {
        Self {
            sequence,
            recorded_at,
            event_type,
            points_delta: line.points_delta,
            held_delta: line.held_delta,
            cash_delta_fen: line.cash_delta_fen,
            points_after: line.points_after,
            balance_after_fen: line.balance_after_fen,
            actor: line.actor,
            reason: line.reason,
            reference: line.reference,
            idempotency_key: line.idempotency_key,
        }
    }
}

impl LedgerEntryDto {
    /// A read-model line as the event states it: the read model keeps every figure
    /// after each line, the entry shows the one the event moved (as the entries of
    /// an operation do). Amounts are > 0 in the domain, so a line moved points iff a
    /// points delta is non-zero; every other line is a cash line (a flagged reversal
    /// moves nothing and states the balance).
    fn from_read_model(l: LedgerLineRow) -> Result<Self, ApiError> {
        let sequence = u64::try_from(l.sequence).map_err(|e| ApiError::internal("ledger line sequence", &e))?;
        let points_line = l.points_delta != 0 || l.held_delta != 0;
        let line = LedgerLine {
            points_delta: l.points_delta,
            held_delta: l.held_delta,
            cash_delta_fen: l.cash_delta_fen,
            points_after: points_line.then_some(l.points_after),
            balance_after_fen: (!points_line).then_some(l.balance_after_fen),
            actor: l.actor,
            reason: l.reason,
            reference: l.reference,
            idempotency_key: l.idempotency_key,
        };
        Ok(Self::new(sequence, Some(l.recorded_at), l.event_type, line))
    }
}

impl From<Committed<MemberEvent>> for LedgerEntryDto {
    fn from(c: Committed<MemberEvent>) -> Self {
        Self::new(c.sequence, None, c.event.event_type().to_owned(), c.event.ledger_line())
    }
}

/// A page of the ledger read model: lines of events that moved points or cash
/// (registrations, card level changes and follows have none).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LedgerPage {
    pub entries: Vec<LedgerEntryDto>,
    /// Pass as `after` for the next page; `null` when this page was the last.
    pub next_after: Option<u64>,
    /// The member's last event (its `version`) the read model has applied; 0 before
    /// it saw the registration. The page has no entry past it: when the member's
    /// `version` is higher, later entries are still on their way.
    pub projected_through_sequence: u64,
}

impl TryFrom<LedgerLinePage> for LedgerPage {
    type Error = ApiError;

    fn try_from(page: LedgerLinePage) -> Result<Self, ApiError> {
        let entries = page.lines.into_iter().map(LedgerEntryDto::from_read_model).collect::<Result<_, _>>()?;
        let sequence = |s: i64| u64::try_from(s).map_err(|e| ApiError::internal("ledger page sequence", &e));
        Ok(Self {
            entries,
            next_after: page.next_after.map(sequence).transpose()?,
            projected_through_sequence: sequence(page.projected_through_sequence)?,
        })
    }
}

/// The result of a ledger operation: what it committed and the member after it.
/// A repeated idempotency key returns the first execution's entries (with the
/// `Idempotent-Replayed: true` header) and the member as it is now.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OperationResponse {
    pub entries: Vec<LedgerEntryDto>,
    pub member: MemberDto,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits { amount_fen_max: 1_000, points_max: 500, mall_pay_window_minutes: 15 }
    }

    fn cash(amount_fen: i64) -> CashBody {
        CashBody { amount_fen, reason: "counter".into(), reference: None }
    }

    fn grant(points: i64, expiry: ExpiryBody) -> GrantPointsBody {
        GrantPointsBody { points, expiry, reason: "gift".into(), reference: Some("ticket-1".into()) }
    }

    fn code(r: Result<LedgerRequest, ApiError>) -> &'static str {
        r.unwrap_err().code()
    }

    #[test]
    fn amounts_are_positive_and_within_the_configured_limit() {
        let l = limits();
        assert_eq!(code(cash(0).validate(CashOp::Deposit, &l)), "invalid_amount");
        assert_eq!(code(cash(-5).validate(CashOp::Charge, &l)), "invalid_amount");
        assert!(cash(1).validate(CashOp::Deposit, &l).is_ok());
        assert!(cash(l.amount_fen_max).validate(CashOp::Deposit, &l).is_ok());
        assert_eq!(code(cash(l.amount_fen_max + 1).validate(CashOp::Deposit, &l)), "invalid_amount");
        assert!(grant(l.points_max, ExpiryBody::Never {}).validate(&l).is_ok());
        assert_eq!(code(grant(l.points_max + 1, ExpiryBody::Never {}).validate(&l)), "invalid_amount");
        assert_eq!(code(grant(0, ExpiryBody::Never {}).validate(&l)), "invalid_amount");
        let deduct = DeductPointsBody { points: -1, reason: "fix".into(), reference: None };
        assert_eq!(code(deduct.validate(&l)), "invalid_amount");
        let refund = RefundBody { charge_sequence: 3, amount_fen: 0, reason: "r".into(), reference: None };
        assert_eq!(code(refund.validate(&l)), "invalid_amount");
    }

    #[test]
    fn the_configured_limit_never_exceeds_the_domain_ceiling() {
        let generous = Limits { amount_fen_max: i64::MAX, points_max: i64::MAX, mall_pay_window_minutes: 15 };
        assert!(cash(AmountFen::MAX).validate(CashOp::Deposit, &generous).is_ok());
        assert_eq!(code(cash(AmountFen::MAX + 1).validate(CashOp::Deposit, &generous)), "invalid_amount");
    }

    #[test]
    fn expiry_days_are_bounded() {
        let l = limits();
        assert_eq!(code(grant(1, ExpiryBody::Days { days: 0 }).validate(&l)), "invalid_expiry");
        assert!(grant(1, ExpiryBody::Days { days: EXPIRY_DAYS_MAX }).validate(&l).is_ok());
        assert_eq!(code(grant(1, ExpiryBody::Days { days: EXPIRY_DAYS_MAX + 1 }).validate(&l)), "invalid_expiry");
        for kind in [ExpiryBody::Never {}, ExpiryBody::EndOfMonth {}, ExpiryBody::EndOfYear {}] {
            assert!(grant(1, kind).validate(&l).is_ok());
        }
    }

    #[test]
    fn texts_are_checked() {
        let l = limits();
        let empty_reason = CashBody { amount_fen: 1, reason: String::new(), reference: None };
        assert_eq!(code(empty_reason.validate(CashOp::Deposit, &l)), "invalid_text");
        let long_reference =
            CashBody { amount_fen: 1, reason: "ok".into(), reference: Some("r".repeat(Reference::LEN_MAX + 1)) };
        assert_eq!(code(long_reference.validate(CashOp::Deposit, &l)), "invalid_text");
        let at_max = CashBody { amount_fen: 1, reason: "r".repeat(Reference::LEN_MAX), reference: None };
        assert!(at_max.validate(CashOp::Deposit, &l).is_ok());
        let control = CardLevelBody { card_level: "gold\n".into(), reason: "promo".into() };
        assert_eq!(code(control.validate()), "invalid_card_level");
    }

    #[test]
    fn the_hashed_request_names_its_operation() {
        let l = limits();
        let deposit = serde_json::to_value(cash(10).validate(CashOp::Deposit, &l).unwrap()).unwrap();
        let charge = serde_json::to_value(cash(10).validate(CashOp::Charge, &l).unwrap()).unwrap();
        assert_ne!(deposit, charge);
        assert_eq!(deposit["op"], "cash_deposit");
        assert_eq!(deposit["amount_fen"], 10);
    }

    #[test]
    fn bodies_become_the_use_case_requests() {
        let l = limits();
        let charge = cash(10).validate(CashOp::Charge, &l).unwrap();
        let expected = LedgerRequest::CashCharge {
            amount_fen: AmountFen::new(10).unwrap(),
            reason: Reference::parse("counter").unwrap(),
            reference: None,
        };
        assert_eq!(charge, expected);
        match grant(5, ExpiryBody::EndOfYear {}).validate(&l).unwrap() {
            LedgerRequest::PointsGrant { points, expiry, reference, .. } => {
                assert_eq!(points.get(), 5);
                assert_eq!(expiry, ExpiryPolicy::EndOfYear);
                assert_eq!(reference.unwrap().as_str(), "ticket-1");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn bodies_refuse_unknown_fields_and_wrong_types() {
        assert!(serde_json::from_str::<CashBody>(r#"{"amount_fen":1,"reason":"x","sign":-1}"#).is_err());
        assert!(serde_json::from_str::<CashBody>(r#"{"amount_fen":1.5,"reason":"x"}"#).is_err());
        assert!(serde_json::from_str::<CashBody>(r#"{"amount_fen":"1","reason":"x"}"#).is_err());
        assert!(serde_json::from_str::<CashBody>(r#"{"reason":"x"}"#).is_err());
        assert!(serde_json::from_str::<ExpiryBody>(r#"{"kind":"days","days":3,"x":1}"#).is_err());
        assert!(serde_json::from_str::<ExpiryBody>(r#"{"kind":"fortnight"}"#).is_err());
        assert!(serde_json::from_str::<ExpiryBody>(r#"{"kind":"days","days":-1}"#).is_err());
        assert!(matches!(
            serde_json::from_str::<ExpiryBody>(r#"{"kind":"end_of_month"}"#),
            Ok(ExpiryBody::EndOfMonth {})
        ));
        assert!(serde_json::from_str::<ExpiryBody>(r#"{"kind":"never","days":3}"#).is_err());
    }

    #[test]
    fn ledger_pages_are_bounded() {
        let q = |after, limit| LedgerQuery { after, limit };
        assert_eq!(q(None, None).page().unwrap(), (0, LEDGER_PAGE_DEFAULT));
        assert_eq!(q(Some(7), Some(LEDGER_PAGE_MAX)).page().unwrap(), (7, LEDGER_PAGE_MAX));
        assert_eq!(q(None, Some(LEDGER_PAGE_MAX + 1)).page().unwrap_err().code(), "invalid_limit");
        assert_eq!(q(None, Some(0)).page().unwrap_err().code(), "invalid_limit");
    }
}
