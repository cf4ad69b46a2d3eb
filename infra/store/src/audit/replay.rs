//! Replaying a stream: the hash chain, the domain aggregate's rules, and every stated after-balance recomputed.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;
use wxcm_domain::campaign::Campaign;
use wxcm_domain::distribution::{CommissionAccount, Distributor};
use wxcm_domain::mall::{MallOrder, Product};
use wxcm_domain::member::{rules, LedgerLine, Member, MemberEvent};
use wxcm_domain::payment::PaymentOrder;
use wxcm_domain::tenant::Tenant;
use wxcm_domain::{DomainEventMeta, EventSourced, InvariantViolation};

use crate::hashchain::{self, StoredEvent};

use super::*;

/// One ledger line of a member stream as stored (deltas derived from the event kind).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedgerEntry {
    pub sequence: i64,
    pub recorded_at: DateTime<Utc>,
    pub event_type: String,
    /// False when the payload could not be decoded; the figures are then zero.
    pub decoded: bool,
    pub points_delta: i64,
    pub held_delta: i64,
    pub cash_delta_fen: i64,
    pub cash_delta_yuan: String,
    pub points_after: Option<i64>,
    pub balance_after_fen: Option<i64>,
    pub actor: String,
    pub reason: String,
    pub reference: Option<String>,
}

impl LedgerEntry {
    pub fn new(event: &StoredEvent, line: Option<&LedgerLine>) -> Self {
        let cash_delta_fen = line.map_or(0, |l| l.cash_delta_fen);
        LedgerEntry {
            sequence: event.sequence,
            recorded_at: event.recorded_at,
            event_type: event.event_type.clone(),
            decoded: line.is_some(),
            points_delta: line.map_or(0, |l| l.points_delta),
            held_delta: line.map_or(0, |l| l.held_delta),
            cash_delta_fen,
            cash_delta_yuan: format_yuan_signed(cash_delta_fen),
            points_after: line.and_then(|l| l.points_after),
            balance_after_fen: line.and_then(|l| l.balance_after_fen),
            actor: line.map(|l| l.actor.clone()).unwrap_or_default(),
            reason: line.map(|l| l.reason.clone()).unwrap_or_default(),
            reference: line.and_then(|l| l.reference.clone()),
        }
    }
}

/// The member's state after replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Balances {
    /// Sequence of the last event folded into the state.
    pub replayed_through_sequence: u64,
    /// False when replay stopped early: the figures are those before the failing event.
    pub complete: bool,
    pub balance_fen: i64,
    pub balance_yuan: String,
    pub points: i64,
    pub held_points: i64,
    pub lifetime_points: i64,
    pub card_level: Option<String>,
    pub card_no: Option<String>,
}

impl Balances {
    pub fn of(member: &Member, complete: bool) -> Self {
        let registration = member.registration.as_ref();
        Balances {
            replayed_through_sequence: member.version,
            complete,
            balance_fen: member.balance.get(),
            balance_yuan: format_yuan(member.balance.get()),
            points: member.points.get(),
            held_points: member.held.get(),
            lifetime_points: member.lifetime_points.get(),
            card_level: registration.map(|r| r.card_level.as_str().to_owned()),
            card_no: registration.map(|r| r.card_no.to_string()),
        }
    }
}

/// What replaying one member stream found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberReplay {
    pub entries: Vec<LedgerEntry>,
    pub balances: Balances,
    pub violations: Vec<Violation>,
}

// ---------------------------------------------------------------------------------
// pure helpers
// ---------------------------------------------------------------------------------

/// Fen as yuan with two decimals, integer arithmetic only: `-150` → `"-1.50"`.
pub fn format_yuan(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    let abs = fen.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

/// Like [`format_yuan`] with an explicit `+` on credits, for deltas.
pub fn format_yuan_signed(fen: i64) -> String {
    if fen > 0 {
        format!("+{}", format_yuan(fen))
    } else {
        format_yuan(fen)
    }
}

pub fn format_signed(value: i64) -> String {
    if value > 0 {
        format!("+{value}")
    } else {
        value.to_string()
    }
}

/// A stated after-balance that the deltas before it do not add up to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalanceMismatch {
    /// The event field: `points_after` or `balance_after_fen`.
    pub field: &'static str,
    pub stated: i64,
    pub recomputed: i64,
}

impl fmt::Display for BalanceMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is {} but the deltas before it add up to {}", self.field, self.stated, self.recomputed)
    }
}

/// Running totals recomputed from ledger deltas alone, independent of the
/// after-balances the events state (which is what `Member::apply` trusts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunningTotals {
    pub points: i64,
    pub held: i64,
    pub cash_fen: i64,
}

impl RunningTotals {
    /// Adds one line's deltas and compares the result with its stated balances.
    /// After a mismatch the totals continue from the stated value, so one altered
    /// event is reported once rather than on every later line.
    pub fn check(&mut self, line: &LedgerLine) -> Vec<BalanceMismatch> {
        let mut mismatches = Vec::new();
        self.points = follow(self.points, line.points_delta, line.points_after, "points_after", &mut mismatches);
        self.cash_fen =
            follow(self.cash_fen, line.cash_delta_fen, line.balance_after_fen, "balance_after_fen", &mut mismatches);
        self.held = self.held.saturating_add(line.held_delta);
        mismatches
    }
}

pub fn follow(
    total: i64,
    delta: i64,
    stated: Option<i64>,
    field: &'static str,
    mismatches: &mut Vec<BalanceMismatch>,
) -> i64 {
    let recomputed = total.saturating_add(delta);
    match stated {
        Some(stated) if stated != recomputed => {
            mismatches.push(BalanceMismatch { field, stated, recomputed });
            stated
        }
        _ => recomputed,
    }
}

/// The audit code of an event the aggregate refuses: a stated figure that the
/// state does not give keeps the code the running totals use for it.
pub fn refusal_code(rule: &str) -> &'static str {
    match rule {
        rules::POINTS_AFTER => "points_after_mismatch",
        rules::BALANCE_AFTER => "balance_after_mismatch",
        rules::HELD_AFTER => "held_after_mismatch",
        _ => "replay_failed",
    }
}

/// Records that the aggregate refuses `row`'s event. When the running totals
/// already reported the same figure at this row, that finding gets the rule
/// (one altered figure, one finding); otherwise the refusal is a finding of its own.
pub fn report_refusal(row: &StoredEvent, broken: &InvariantViolation, violations: &mut Vec<Violation>) {
    let code = refusal_code(broken.rule);
    let reported = violations.iter_mut().find(|v| v.sequence == Some(row.sequence) && v.code == code);
    match reported {
        Some(finding) => {
            finding.rule = Some(broken.rule);
            finding.message =
                format!("{}; the aggregate refuses the event ({broken}); later events not replayed", finding.message);
        }
        None => violations.push(Violation::refused(row, code, broken)),
    }
}

/// Checks what a decoded event says about its own row: its type and, for the
/// registration, the stream and tenant it names.
pub fn check_event_matches_row(row: &StoredEvent, event: &MemberEvent, violations: &mut Vec<Violation>) {
    if event.event_type() != row.event_type {
        let message = format!("event_type column says {} but the payload is {}", row.event_type, event.event_type());
        violations.push(Violation::at(row, "event_type_mismatch", message));
    }
    if let MemberEvent::MemberRegistered { member_id, tenant_id, .. } = event {
        if member_id.to_string() != row.aggregate_id || tenant_id.as_str() != row.tenant_id {
            let message = format!(
                "registration names member {member_id} of tenant {tenant_id}, row is {} of tenant {}",
                row.aggregate_id, row.tenant_id
            );
            violations.push(Violation::at(row, "registration_mismatch", message));
        }
    }
}

/// Replays one member stream (rows ordered by sequence, as [`hashchain::load_stream`]
/// returns them): decodes each payload, recomputes the stated balances from the
/// deltas, and folds the events into a [`Member`]. Replay stops at the first event
/// that cannot be decoded or applied; the ledger still lists every row.
pub fn replay_member(rows: &[StoredEvent]) -> MemberReplay {
    let mut entries = Vec::with_capacity(rows.len());
    let mut violations = Vec::new();
    let mut totals = RunningTotals::default();
    let mut member = Member::default();
    let mut applied: Vec<MemberEvent> = Vec::new();
    let mut stopped = false;
    for row in rows {
        let event = match serde_json::from_str::<MemberEvent>(&row.payload_text) {
            Ok(event) => event,
            Err(e) => {
                entries.push(LedgerEntry::new(row, None));
                if !stopped {
                    let message = format!("undecodable payload ({e}); later events not replayed");
                    violations.push(Violation::at(row, "undecodable_payload", message));
                    stopped = true;
                }
                continue;
            }
        };
        let line = event.ledger_line();
        entries.push(LedgerEntry::new(row, Some(&line)));
        check_event_matches_row(row, &event, &mut violations);
        for mismatch in totals.check(&line) {
            violations.push(Violation::at(row, balance_code(mismatch.field), mismatch.to_string()));
        }
        if stopped {
            continue;
        }
        if let Err(broken) = member.apply(&event) {
            report_refusal(row, &broken, &mut violations);
            member = rebuild(&applied);
            stopped = true;
            continue;
        }
        let held = member.held.get();
        if held != totals.held {
            let message = format!("held_after is {held} but the deltas before it add up to {}", totals.held);
            violations.push(Violation::at(row, "held_after_mismatch", message));
            totals.held = held;
        }
        applied.push(event);
    }
    MemberReplay { entries, balances: Balances::of(&member, !stopped), violations }
}

pub fn balance_code(field: &str) -> &'static str {
    if field == "points_after" {
        "points_after_mismatch"
    } else {
        "balance_after_mismatch"
    }
}

/// The state before a refused event (a refused `apply` leaves the state
/// unusable): replaying again is cheaper than cloning the state before every
/// event, and it only happens once per broken stream.
pub fn rebuild(applied: &[MemberEvent]) -> Member {
    let mut member = Member::default();
    for event in applied {
        // Each of them was applied once already, and applying is deterministic.
        if member.apply(event).is_err() {
            break;
        }
    }
    member
}

/// Replays a stream of an aggregate without a ledger (payment orders, tenants):
/// each payload must decode, name its row's event type, and be accepted by the
/// aggregate. Replay stops at the first event that cannot be decoded or applied.
pub fn replay_stream<T: EventSourced>(rows: &[StoredEvent]) -> Vec<Violation> {
    let mut state = T::default();
    let mut violations = Vec::new();
    for row in rows {
        let event = match serde_json::from_str::<T::Event>(&row.payload_text) {
            Ok(event) => event,
            Err(e) => {
                let message = format!("undecodable payload ({e}); later events not replayed");
                violations.push(Violation::at(row, "undecodable_payload", message));
                break;
            }
        };
        if event.event_type() != row.event_type {
            let message =
                format!("event_type column says {} but the payload is {}", row.event_type, event.event_type());
            violations.push(Violation::at(row, "event_type_mismatch", message));
        }
        if let Err(broken) = state.apply(&event) {
            violations.push(Violation::refused(row, "replay_failed", &broken));
            break;
        }
    }
    violations
}

pub fn chain_violations(rows: &[StoredEvent]) -> Vec<Violation> {
    hashchain::verify_stream(rows).into_iter().map(Violation::from).collect()
}

/// Chain violations and replay findings of one stream of any type.
pub fn check_stream(rows: &[StoredEvent]) -> Vec<Violation> {
    let mut violations = chain_violations(rows);
    let aggregate_type = rows.first().map_or("", |first| first.aggregate_type.as_str());
    if aggregate_type == Member::TYPE {
        violations.extend(replay_member(rows).violations);
    } else if aggregate_type == PaymentOrder::TYPE {
        violations.extend(replay_stream::<PaymentOrder>(rows));
    } else if aggregate_type == Tenant::TYPE {
        violations.extend(replay_stream::<Tenant>(rows));
    } else if aggregate_type == MallOrder::TYPE {
        violations.extend(replay_stream::<MallOrder>(rows));
    } else if aggregate_type == Product::TYPE {
        violations.extend(replay_stream::<Product>(rows));
    } else if aggregate_type == Campaign::TYPE {
        violations.extend(replay_stream::<Campaign>(rows));
    } else if aggregate_type == CommissionAccount::TYPE {
        violations.extend(replay_stream::<CommissionAccount>(rows));
    } else if aggregate_type == Distributor::TYPE {
        violations.extend(replay_stream::<Distributor>(rows));
    }
    sort_violations(&mut violations);
    violations
}

/// By sequence (stable: chain findings first within a row), stream-level last.
pub fn sort_violations(violations: &mut [Violation]) {
    violations.sort_by_key(|v| v.sequence.unwrap_or(i64::MAX));
}
