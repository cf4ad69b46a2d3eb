//! `wxcm audit commissions --tenant T --distributor D`: explains one
//! distributor's commission account from its events. The stream's hash chain
//! is checked, every event is replayed with the domain's
//! [`CommissionAccount`] (which checks each stated after-balance), and after
//! each event the figures are printed and the accounting identities checked:
//! `earned = settled + pending + reversed` and
//! `settled = withdrawn + withdrawable + debt repaid`, with withdrawable and
//! debt never both above zero.

use anyhow::Result;
use serde::Serialize;
use wxcm_domain::distribution::{CommissionAccount, CommissionAccountEvent, CommissionAccountId, CommissionFigures};
use wxcm_domain::{DomainEventMeta, EventSourced, MemberId, TenantId};
use wxcm_server::config::Settings;
use wxcm_store::hashchain::StoredEvent;

use super::{check_stream, load, print_violations, shard_pool, Violation};

/// One event of the account and the figures after it.
#[derive(Debug, Clone, Serialize)]
pub struct AccountLine {
    pub sequence: i64,
    pub event_type: String,
    /// The commission (`order/level`) or withdrawal the event concerns.
    pub subject: String,
    /// The amount the event moves, in fen (0 when it moves none).
    pub amount_fen: i64,
    pub figures: CommissionFigures,
    pub withdrawable_fen: i64,
    pub debt_fen: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CommissionReport {
    pub ok: bool,
    pub tenant_id: String,
    pub distributor_id: String,
    pub stream: String,
    pub events: usize,
    pub lines: Vec<AccountLine>,
    pub violations: Vec<Violation>,
}

fn subject(event: &CommissionAccountEvent) -> (String, i64) {
    use CommissionAccountEvent as E;
    let key = |k: &wxcm_domain::distribution::CommissionKey| format!("{}/{}", k.order_id, k.level.number());
    match event {
        E::CommissionAccountOpened { distributor_id, .. } => (format!("distributor {distributor_id}"), 0),
        E::CommissionAccrued { key: k, amount_fen, .. }
        | E::CommissionSettled { key: k, amount_fen, .. }
        | E::CommissionReversed { key: k, amount_fen, .. }
        | E::CommissionClawedBack { key: k, amount_fen, .. } => (key(k), amount_fen.get()),
        E::WithdrawalRequested { withdrawal_id, amount_fen, .. } => (withdrawal_id.to_string(), amount_fen.get()),
        E::WithdrawalApproved { withdrawal_id, .. }
        | E::WithdrawalTransferRequested { withdrawal_id, .. }
        | E::WithdrawalRejected { withdrawal_id, .. }
        | E::WithdrawalPaid { withdrawal_id, .. }
        | E::WithdrawalFailed { withdrawal_id, .. }
        | E::WithdrawalRetried { withdrawal_id, .. }
        | E::WithdrawalReturned { withdrawal_id, .. } => (withdrawal_id.to_string(), 0),
    }
}

fn identities(row: &StoredEvent, f: &CommissionFigures) -> Option<Violation> {
    let earned_ok = f.earned == f.settled + f.pending + f.reversed;
    let settled_ok = f.settled == f.withdrawn() + f.withdrawable() + f.debt_repaid();
    let sides_ok = f.withdrawable() == 0 || f.debt() == 0;
    (!(earned_ok && settled_ok && sides_ok))
        .then(|| Violation::at(row, "figures_unaccounted", format!("figures do not add up after this event: {f:?}")))
}

/// The report of one account's rows (pure: the command reads, this explains).
pub fn commission_report(tenant: &TenantId, distributor: MemberId, rows: &[StoredEvent]) -> CommissionReport {
    let id = CommissionAccountId::for_distributor(tenant, distributor);
    let stream = format!("{}/{id}", CommissionAccount::TYPE);
    let mut report = CommissionReport {
        ok: false,
        tenant_id: tenant.to_string(),
        distributor_id: distributor.to_string(),
        stream: stream.clone(),
        events: rows.len(),
        lines: Vec::new(),
        violations: check_stream(rows),
    };
    if !rows.iter().any(|row| row.tenant_id == tenant.as_str()) {
        let message = format!("no commission account of this distributor in tenant {tenant}");
        report.violations.push(Violation { stream, sequence: None, code: "not_found", rule: None, message });
        return report;
    }
    let mut account = CommissionAccount::default();
    for row in rows {
        let Ok(event) = serde_json::from_str::<CommissionAccountEvent>(&row.payload_text) else { break };
        if account.apply(&event).is_err() {
            break; // check_stream reported it.
        }
        let (subject, amount_fen) = subject(&event);
        let f = account.figures;
        report.violations.extend(identities(row, &f));
        report.lines.push(AccountLine {
            sequence: row.sequence,
            event_type: event.event_type().to_owned(),
            subject,
            amount_fen,
            figures: f,
            withdrawable_fen: f.withdrawable(),
            debt_fen: f.debt(),
        });
    }
    report.ok = report.violations.is_empty();
    report
}

pub async fn audit_commissions(
    settings: &Settings,
    tenant: &TenantId,
    distributor: MemberId,
    json: bool,
) -> Result<bool> {
    let pool = shard_pool(settings, tenant)?;
    let id = CommissionAccountId::for_distributor(tenant, distributor);
    let rows = load(&pool, CommissionAccount::TYPE, &id.to_string()).await?;
    pool.close().await;
    let report = commission_report(tenant, distributor, &rows);
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(report.ok)
}

fn print_report(report: &CommissionReport) {
    println!(
        "commission account of distributor {} in tenant {} ({}: {} events)",
        report.distributor_id, report.tenant_id, report.stream, report.events
    );
    println!(
        "{:>4}  {:<22} {:<40} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>12} {:>9}",
        "seq",
        "event",
        "subject",
        "amount",
        "earned",
        "pending",
        "settled",
        "reversed",
        "clawed",
        "withdrawable",
        "debt"
    );
    for l in &report.lines {
        let f = &l.figures;
        println!(
            "{:>4}  {:<22} {:<40} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>12} {:>9}",
            l.sequence,
            l.event_type,
            l.subject,
            l.amount_fen,
            f.earned,
            f.pending,
            f.settled,
            f.reversed,
            f.clawed_back,
            l.withdrawable_fen,
            l.debt_fen
        );
    }
    if let Some(last) = report.lines.last() {
        let f = &last.figures;
        println!(
            "withdrawn {} (in flight {}, paid out {}), debt repaid {}",
            f.withdrawn(),
            f.in_flight,
            f.paid_out,
            f.debt_repaid()
        );
    }
    print_violations(&report.violations);
    if report.ok {
        println!("verdict: OK (hash chain intact, {} events replayed, every figure accounted for)", report.events);
    } else {
        println!("verdict: FAILED ({} violations)", report.violations.len());
    }
}
