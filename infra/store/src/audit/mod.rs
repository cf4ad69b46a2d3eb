//! Audits of streams as pure code over stored rows: the hash chain
//! ([`crate::hashchain::verify_stream`]), a replay into the domain aggregate
//! (every rule it checks) and, for members, every stated after-balance
//! recomputed from the deltas before it. `wxcm audit` (crate `wxcm-ops`) runs
//! them over a tenant; [`PgMemberAudit`] gives the admin API one member's verdict,
//! [`PgDrawAudit`] one campaign's draws recomputed ([`draws`]).
//!
//! Code map: `findings` (what a violation says), `replay` (chain, aggregate
//! rules, balances), `digest` (stream heads and the tenant digest); this file
//! holds the member report and the port.

mod digest;
pub mod draws;
mod findings;
mod replay;

pub use digest::*;
pub use findings::*;
pub use replay::*;

use async_trait::async_trait;
use serde::Serialize;
use sqlx::PgPool;
use wxcm_commands::ports::{
    AuditFinding, DrawAudit, DrawAuditError, DrawAuditVerdict, MemberAudit, MemberAuditError, MemberAuditVerdict,
    PortError, DRAW_AUDIT_EVENTS_MAX, MEMBER_AUDIT_EVENTS_MAX,
};
use wxcm_domain::campaign::{Campaign, CampaignId};
use wxcm_domain::member::Member;
use wxcm_domain::{EventSourced, MemberId, TenantId};

use crate::hashchain::{self, StoredEvent};

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

/// The admin API's audit of one member (`GET /members/{id}/audit`): the same
/// report as `wxcm audit member`, read from the shard's pool.
pub struct PgMemberAudit {
    pool: PgPool,
}

impl PgMemberAudit {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl MemberAudit for PgMemberAudit {
    async fn audit_member(&self, tenant: &TenantId, member: &MemberId) -> Result<MemberAuditVerdict, MemberAuditError> {
        let id = member.to_string();
        let bound = i64::try_from(MEMBER_AUDIT_EVENTS_MAX).unwrap_or(i64::MAX);
        let events: i64 =
            sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = $1 AND aggregate_id = $2")
                .bind(Member::TYPE)
                .bind(&id)
                .fetch_one(&self.pool)
                .await
                .map_err(PortError::new)?;
        if events > bound {
            return Err(MemberAuditError::TooLong);
        }
        let rows = hashchain::load_stream(&self.pool, Member::TYPE, &id).await.map_err(PortError::new)?;
        let report = member_report(tenant, member, &rows);
        if !report.found {
            return Err(MemberAuditError::NotFound);
        }
        Ok(MemberAuditVerdict {
            ok: report.ok,
            events: u64::try_from(report.events).unwrap_or(u64::MAX),
            head_sequence: report.head.as_ref().map(|h| h.sequence),
            head_hash: report.head.map(|h| h.hash),
            findings: report
                .violations
                .into_iter()
                .map(|v| AuditFinding {
                    sequence: v.sequence,
                    code: v.code.to_owned(),
                    rule: v.rule.map(str::to_owned),
                    message: v.message,
                })
                .collect(),
        })
    }
}

/// The admin API's draw audit of one campaign (`GET /campaigns/{id}/draw-audit`):
/// the same checks as `wxcm audit draw`, read from the shard's pool.
pub struct PgDrawAudit {
    pool: PgPool,
}

impl PgDrawAudit {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl DrawAudit for PgDrawAudit {
    async fn audit_draws(
        &self,
        tenant: &TenantId,
        campaign: CampaignId,
        period: Option<u32>,
    ) -> Result<DrawAuditVerdict, DrawAuditError> {
        let id = campaign.to_string();
        let bound = i64::try_from(DRAW_AUDIT_EVENTS_MAX).unwrap_or(i64::MAX);
        let events: i64 =
            sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = $1 AND aggregate_id = $2")
                .bind(Campaign::TYPE)
                .bind(&id)
                .fetch_one(&self.pool)
                .await
                .map_err(PortError::new)?;
        if events > bound {
            return Err(DrawAuditError::TooLong);
        }
        let rows = hashchain::load_stream(&self.pool, Campaign::TYPE, &id).await.map_err(PortError::new)?;
        // Another tenant's campaign is one that does not exist.
        if rows.is_empty() || rows.iter().any(|r| r.tenant_id != tenant.as_str()) {
            return Err(DrawAuditError::NotFound);
        }
        let report = match period {
            None => draws::check_draws(tenant, campaign, &rows),
            Some(p) => {
                let report = draws::check_period(tenant, campaign, &rows, p);
                if report.periods_checked == 0 {
                    return Err(DrawAuditError::PeriodNotDrawn(p));
                }
                report
            }
        };
        Ok(DrawAuditVerdict {
            ok: report.ok,
            revealed: report.revealed,
            shakes_checked: report.shakes_checked,
            periods_checked: report.periods_checked,
            differences: report
                .differences
                .into_iter()
                .map(|d| wxcm_commands::ports::DrawDifference { sequence: d.sequence, detail: d.detail })
                .collect(),
        })
    }
}
