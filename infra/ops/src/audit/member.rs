//! `wxcm audit member`: one member explained (ledger, balances, findings).

use anyhow::Result;
use serde::Serialize;
use wxcm_domain::member::Member;
use wxcm_domain::{EventSourced, MemberId, TenantId};

use wxcm_server::config::Settings;
use wxcm_store::hashchain::StoredEvent;

use super::*;

/// `wxcm audit member` as one document (`--json` prints it as is).
#[derive(Debug, Clone, Serialize)]
pub struct MemberReport {
    pub ok: bool,
    pub found: bool,
    pub tenant_id: String,
    pub member_id: String,
    pub stream: String,
    pub events: usize,
    pub head: Option<StreamHead>,
    pub violations: Vec<Violation>,
    pub entries: Vec<LedgerEntry>,
    pub balances: Option<Balances>,
}

/// Audits the rows of one member stream for `tenant`. A stream with no row of the
/// tenant is "not found", whoever else it belongs to.
pub fn member_report(tenant: &TenantId, member: &MemberId, rows: &[StoredEvent]) -> MemberReport {
    let stream = format!("{}/{member}", Member::TYPE);
    let mut report = MemberReport {
        ok: false,
        found: false,
        tenant_id: tenant.to_string(),
        member_id: member.to_string(),
        stream: stream.clone(),
        events: 0,
        head: None,
        violations: Vec::new(),
        entries: Vec::new(),
        balances: None,
    };
    if !rows.iter().any(|row| row.tenant_id == tenant.as_str()) {
        let message = format!("member not found in tenant {tenant}");
        report.violations.push(Violation { stream, sequence: None, code: "not_found", rule: None, message });
        return report;
    }
    let replay = replay_member(rows);
    let mut violations = chain_violations(rows);
    violations.extend(replay.violations.iter().cloned());
    sort_violations(&mut violations);
    report.ok = violations.is_empty();
    report.found = true;
    report.events = rows.len();
    report.head = StreamHead::of(rows);
    report.violations = violations;
    report.entries = replay.entries;
    report.balances = Some(replay.balances);
    report
}

/// `wxcm audit member`: true when the chain is intact and the ledger replays and adds up.
pub async fn audit_member(settings: &Settings, tenant: &TenantId, member: &MemberId, json: bool) -> Result<bool> {
    let pool = shard_pool(settings, tenant)?;
    let rows = load(&pool, Member::TYPE, &member.to_string()).await?;
    pool.close().await;
    let report = member_report(tenant, member, &rows);
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_member_report(&report);
    }
    Ok(report.ok)
}

pub(super) fn print_member_report(report: &MemberReport) {
    if !report.found {
        println!("member {} not found in tenant {}", report.member_id, report.tenant_id);
        println!("verdict: FAILED (member not found in tenant)");
        return;
    }
    let head = report.head.as_ref().map_or_else(String::new, |h| {
        format!(", head seq {} hash {}…", h.sequence, &h.hash[..HASH_PREFIX_CHARS.min(h.hash.len())])
    });
    println!(
        "member {} of tenant {} ({}: {} events{head})",
        report.member_id, report.tenant_id, report.stream, report.events
    );
    println!("{}", ledger_table(&report.entries));
    if let Some(balances) = &report.balances {
        println!("{}", balances_table(balances));
    }
    print_violations(&report.violations);
    if report.ok {
        println!("verdict: OK (hash chain intact, {} events replayed, every stated balance adds up)", report.events);
    } else {
        println!("verdict: FAILED ({} violations)", report.violations.len());
    }
}
