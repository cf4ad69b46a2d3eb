//! The distribution counters of `rm_daily_ops` (issue 15 item 7), from the
//! `commission_account` and `distributor` streams. Their rows (`distributors`,
//! `commission_accounts`, `commissions`, `commission_withdrawals`) are kept by
//! triggers in the events' transaction (migrations 0033, 0041); these two
//! projectors keep only the daily counters, with the usual checkpoint, so an
//! event is counted exactly once.
//!
//! Bindings are rows of `distribution_bindings`, not events: the report counts
//! them from that append-only table when it is asked (see
//! `queries::PgReadModels::daily_ops`), so they need no projector.
//!
//! Withdrawal events after the request name the withdrawal only: their amount
//! is the one its `WithdrawalRequested` stated, read from the same stream in
//! the event store (never from the trigger's table).

use sqlx::PgConnection;
use wxcm_domain::distribution::{CommissionAccountEvent, DistributorEvent, EnrolmentRoute, WithdrawalId};
use wxcm_domain::DomainEventMeta;

use crate::daily::{delta, metric, Counters, Delta};
use crate::envelope::RelayedEvent;
use crate::runtime::{ApplyError, Projector};

/// The metrics of `rm_daily_ops` only [`CommissionProjector`] feeds.
pub const COMMISSION_METRICS: [&str; 9] = [
    metric::COMMISSIONS_ACCRUED,
    metric::COMMISSION_ACCRUED_FEN,
    metric::COMMISSION_SETTLED_FEN,
    metric::COMMISSION_REVERSED_FEN,
    metric::WITHDRAWALS_REQUESTED,
    metric::WITHDRAWALS_REQUESTED_FEN,
    metric::WITHDRAWALS_PAID,
    metric::WITHDRAWALS_PAID_FEN,
    metric::WITHDRAWALS_RETURNED_FEN,
];

/// The metrics of `rm_daily_ops` only [`DistributorProjector`] feeds.
pub const DISTRIBUTOR_METRICS: [&str; 2] = [metric::DISTRIBUTORS_NEW, metric::DISTRIBUTOR_APPLICATIONS];

/// Dimensions of [`metric::COMMISSION_REVERSED_FEN`].
pub const REVERSED_BEFORE_SETTLEMENT: &str = "reversed";
pub const REVERSED_AFTER_SETTLEMENT: &str = "clawed_back";
/// Dimensions of [`metric::WITHDRAWALS_RETURNED_FEN`].
pub const WITHDRAWAL_REJECTED: &str = "rejected";
pub const WITHDRAWAL_FAILED_RETURNED: &str = "returned";

/// The dimension of a commission level: `1` or `2`.
pub fn level_dimension(level: wxcm_domain::distribution::CommissionLevel) -> &'static str {
    match level.number() {
        1 => "1",
        _ => "2",
    }
}

/// The dimension of [`metric::DISTRIBUTORS_NEW`]: how the member became a distributor.
pub fn enrolment_dimension(route: &EnrolmentRoute) -> &'static str {
    match route {
        EnrolmentRoute::Everyone => "everyone",
        EnrolmentRoute::SpendingThreshold { .. } => "spending_threshold",
        EnrolmentRoute::Designated => "designated",
    }
}
/// The dimension of a distributor approved after applying.
pub const APPROVED_APPLICATION: &str = "application";

/// What a distributor event adds to the day's counters. A stream becomes
/// active once (enrolled or approved); a reinstatement is not new.
pub fn distributor_deltas(event: &DistributorEvent) -> Vec<Delta> {
    match event {
        DistributorEvent::DistributorEnrolled { route, .. } => {
            vec![delta(metric::DISTRIBUTORS_NEW, enrolment_dimension(route), 1)]
        }
        DistributorEvent::DistributorApproved { .. } => vec![delta(metric::DISTRIBUTORS_NEW, APPROVED_APPLICATION, 1)],
        DistributorEvent::DistributorApplied { .. } => vec![delta(metric::DISTRIBUTOR_APPLICATIONS, "", 1)],
        DistributorEvent::DistributorRejected { .. }
        | DistributorEvent::DistributorSuspended { .. }
        | DistributorEvent::DistributorReinstated { .. }
        | DistributorEvent::DistributorLevelSet { .. } => Vec::new(),
    }
}

/// What a commission account event adds to the day's counters;
/// `withdrawal_amount` is the requested amount of the withdrawal the event
/// names (asked only for paid, rejected and returned withdrawals).
pub fn commission_deltas(event: &CommissionAccountEvent, withdrawal_amount: Option<i64>) -> Result<Vec<Delta>, String> {
    use CommissionAccountEvent as E;
    let amount = |id: &WithdrawalId| withdrawal_amount.ok_or_else(|| format!("withdrawal {id} was never requested"));
    Ok(match event {
        E::CommissionAccrued { key, amount_fen, .. } => {
            let level = level_dimension(key.level);
            vec![
                delta(metric::COMMISSIONS_ACCRUED, level, 1),
                delta(metric::COMMISSION_ACCRUED_FEN, level, amount_fen.get()),
            ]
        }
        E::CommissionSettled { key, amount_fen, .. } => {
            vec![delta(metric::COMMISSION_SETTLED_FEN, level_dimension(key.level), amount_fen.get())]
        }
        E::CommissionReversed { amount_fen, .. } => {
            vec![delta(metric::COMMISSION_REVERSED_FEN, REVERSED_BEFORE_SETTLEMENT, amount_fen.get())]
        }
        E::CommissionClawedBack { amount_fen, .. } => {
            vec![delta(metric::COMMISSION_REVERSED_FEN, REVERSED_AFTER_SETTLEMENT, amount_fen.get())]
        }
        E::WithdrawalRequested { amount_fen, .. } => vec![
            delta(metric::WITHDRAWALS_REQUESTED, "", 1),
            delta(metric::WITHDRAWALS_REQUESTED_FEN, "", amount_fen.get()),
        ],
        E::WithdrawalPaid { withdrawal_id, .. } => {
            vec![
                delta(metric::WITHDRAWALS_PAID, "", 1),
                delta(metric::WITHDRAWALS_PAID_FEN, "", amount(withdrawal_id)?),
            ]
        }
        E::WithdrawalRejected { withdrawal_id, .. } => {
            vec![delta(metric::WITHDRAWALS_RETURNED_FEN, WITHDRAWAL_REJECTED, amount(withdrawal_id)?)]
        }
        E::WithdrawalReturned { withdrawal_id, .. } => {
            vec![delta(metric::WITHDRAWALS_RETURNED_FEN, WITHDRAWAL_FAILED_RETURNED, amount(withdrawal_id)?)]
        }
        E::CommissionAccountOpened { .. }
        | E::WithdrawalApproved { .. }
        | E::WithdrawalTransferRequested { .. }
        | E::WithdrawalFailed { .. }
        | E::WithdrawalRetried { .. } => Vec::new(),
    })
}

/// The withdrawal an event names, when its counters need the requested amount.
fn needs_amount(event: &CommissionAccountEvent) -> Option<&WithdrawalId> {
    match event {
        CommissionAccountEvent::WithdrawalPaid { withdrawal_id, .. }
        | CommissionAccountEvent::WithdrawalRejected { withdrawal_id, .. }
        | CommissionAccountEvent::WithdrawalReturned { withdrawal_id, .. } => Some(withdrawal_id),
        _ => None,
    }
}

fn decode<E: serde::de::DeserializeOwned + DomainEventMeta>(event: &RelayedEvent, what: &str) -> Result<E, ApplyError> {
    let decoded: E = serde_json::from_value(event.payload.clone())
        .map_err(|e| ApplyError::Invalid(format!("payload is not a {what} event: {e}")))?;
    if decoded.event_type() != event.event_type || decoded.event_version() != event.event_version {
        return Err(ApplyError::Invalid(format!(
            "payload is {} v{}, envelope says {} v{}",
            decoded.event_type(),
            decoded.event_version(),
            event.event_type,
            event.event_version
        )));
    }
    Ok(decoded)
}

fn recorded_at(event: &RelayedEvent) -> Result<chrono::DateTime<chrono::Utc>, ApplyError> {
    event
        .recorded_at_utc()
        .ok_or_else(|| ApplyError::Invalid(format!("recorded_at {:?} is not a timestamp", event.recorded_at)))
}

/// Feeds the commission and withdrawal counters from `commission_account` streams.
#[derive(Debug, Clone, Copy, Default)]
pub struct CommissionProjector;

impl CommissionProjector {
    pub const NAME: &'static str = "commissions";
}

/// The amount the stream's `WithdrawalRequested` of `withdrawal` stated, before `sequence`.
async fn requested_amount(
    conn: &mut PgConnection,
    event: &RelayedEvent,
    withdrawal: &WithdrawalId,
) -> Result<Option<i64>, ApplyError> {
    let amount: Option<i64> = sqlx::query_scalar(
        "SELECT (payload -> 'WithdrawalRequested' ->> 'amount_fen')::bigint FROM events
          WHERE aggregate_type = $1 AND aggregate_id = $2 AND tenant_id = $3 AND sequence < $4
            AND event_type = 'WithdrawalRequested'
            AND payload -> 'WithdrawalRequested' ->> 'withdrawal_id' = $5
          ORDER BY sequence LIMIT 1",
    )
    .bind(&event.aggregate_type)
    .bind(&event.aggregate_id)
    .bind(&event.tenant_id)
    .bind(event.sequence)
    .bind(withdrawal.to_string())
    .fetch_optional(&mut *conn)
    .await?
    .flatten();
    Ok(amount)
}

impl Projector for CommissionProjector {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn aggregate_type(&self) -> &'static str {
        "commission_account"
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &RelayedEvent,
        counters: &mut Counters,
    ) -> Result<(), ApplyError> {
        let decoded: CommissionAccountEvent = decode(event, "commission account")?;
        let at = recorded_at(event)?;
        let amount = match needs_amount(&decoded) {
            Some(id) => requested_amount(conn, event, id).await?,
            None => None,
        };
        let deltas = commission_deltas(&decoded, amount).map_err(ApplyError::Invalid)?;
        counters.add(&event.tenant_id, at, deltas)
    }
}

/// Feeds the new-distributor counters from `distributor` streams.
#[derive(Debug, Clone, Copy, Default)]
pub struct DistributorProjector;

impl DistributorProjector {
    pub const NAME: &'static str = "distributors";
}

impl Projector for DistributorProjector {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn aggregate_type(&self) -> &'static str {
        "distributor"
    }

    async fn apply(
        &self,
        _conn: &mut PgConnection,
        event: &RelayedEvent,
        counters: &mut Counters,
    ) -> Result<(), ApplyError> {
        let decoded: DistributorEvent = decode(event, "distributor")?;
        counters.add(&event.tenant_id, recorded_at(event)?, distributor_deltas(&decoded))
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use uuid::Uuid;
    use wxcm_domain::distribution::{CommissionKey, CommissionLevel};
    use wxcm_domain::mall::MallOrderId;
    use wxcm_domain::{Actor, AmountFen, BalanceFen, Reference};

    use super::*;

    fn key(level: CommissionLevel) -> CommissionKey {
        CommissionKey { order_id: MallOrderId::from_uuid(Uuid::from_u128(7)), level }
    }

    #[test]
    fn commissions_count_by_level_and_reversals_by_when() {
        let at = Utc.with_ymd_and_hms(2026, 12, 5, 10, 0, 0).unwrap();
        let settled = CommissionAccountEvent::CommissionSettled {
            key: key(CommissionLevel::Second),
            amount_fen: AmountFen::new(500).unwrap(),
            delivered_at: at,
            withdrawable_after_fen: BalanceFen::new(500).unwrap(),
            debt_after_fen: BalanceFen::new(0).unwrap(),
            settled_at: at,
        };
        assert_eq!(commission_deltas(&settled, None).unwrap(), vec![delta(metric::COMMISSION_SETTLED_FEN, "2", 500)]);
        let clawed = CommissionAccountEvent::CommissionClawedBack {
            key: key(CommissionLevel::First),
            amount_fen: AmountFen::new(1_000).unwrap(),
            refund: Reference::parse("r").unwrap(),
            withdrawable_after_fen: BalanceFen::new(0).unwrap(),
            debt_after_fen: BalanceFen::new(1_000).unwrap(),
            clawed_back_at: at,
        };
        assert_eq!(
            commission_deltas(&clawed, None).unwrap(),
            vec![delta(metric::COMMISSION_REVERSED_FEN, REVERSED_AFTER_SETTLEMENT, 1_000)]
        );
        let id = WithdrawalId::from_uuid(Uuid::from_u128(9));
        let paid = CommissionAccountEvent::WithdrawalPaid {
            withdrawal_id: id,
            payout_ref: Reference::parse("p").unwrap(),
            paid_at: at,
        };
        assert_eq!(
            commission_deltas(&paid, Some(800)).unwrap(),
            vec![delta(metric::WITHDRAWALS_PAID, "", 1), delta(metric::WITHDRAWALS_PAID_FEN, "", 800)]
        );
        assert!(commission_deltas(&paid, None).is_err(), "a payment of a withdrawal never requested");
        let approved = CommissionAccountEvent::WithdrawalApproved {
            withdrawal_id: id,
            actor: Actor::System { job: "t".into() },
            approved_at: at,
            method: wxcm_domain::distribution::PayoutMethod::Balance,
        };
        assert!(commission_deltas(&approved, None).unwrap().is_empty());
    }

    #[test]
    fn a_distributor_is_new_once_by_its_route() {
        let admin = Actor::Admin { username: "boss".into() };
        let at = Utc.with_ymd_and_hms(2026, 12, 5, 10, 0, 0).unwrap();
        let approved = DistributorEvent::DistributorApproved { actor: admin.clone(), approved_at: at };
        assert_eq!(distributor_deltas(&approved), vec![delta(metric::DISTRIBUTORS_NEW, APPROVED_APPLICATION, 1)]);
        let reinstated = DistributorEvent::DistributorReinstated { actor: admin, reinstated_at: at };
        assert!(distributor_deltas(&reinstated).is_empty());
    }
}
