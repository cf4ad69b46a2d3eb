//! `wxcm audit member`: one member explained (ledger, balances, findings).

use anyhow::Result;
use wxcm_domain::member::Member;
use wxcm_domain::{EventSourced, MemberId, TenantId};

use wxcm_server::config::Settings;

use super::*;

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
