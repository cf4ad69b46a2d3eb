//! Due work, run through ordinary commands. Each item is executed with an
//! idempotency key derived from the item, and the commands themselves are
//! idempotent by state (expiring nothing writes nothing), so a restart or a
//! second instance can never do the work twice; an item is only marked done
//! after its command committed, so none is lost.

use serde::Serialize;
use tracing::{info, warn};
use wxcm_domain::member::{MemberCommand, Provenance};
use wxcm_domain::{Actor, MemberId, Reference, TenantId};

use crate::executor::CommandContext;
use crate::members::{self, MemberOpError};
use crate::ports::{App, DueItem, ShardServices};

/// Items taken per step.
pub const DUE_BATCH_MAX: u32 = 500;
pub const KIND_POINTS_EXPIRY: &str = "points_expiry";
/// Expiry commands per due item (each expires up to `PointsAmount::MAX`).
const EXPIRY_ROUNDS_MAX: u32 = 16;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StepReport {
    pub items: u32,
    pub events_written: u32,
    pub failed: u32,
}

/// One pass over the shard's due work. Call it repeatedly (the scheduler
/// role does so on a timer while it holds the shard's leadership).
pub async fn step(app: &App, shard: &ShardServices) -> Result<StepReport, MemberOpError> {
    let now = app.clock.now();
    let due = shard.due_work.due(now, DUE_BATCH_MAX).await?;
    let mut report = StepReport::default();
    for item in due {
        report.items += 1;
        match run_item(app, &item).await {
            Ok(written) => {
                report.events_written += written;
                shard.due_work.done(item.id).await?;
            }
            Err(e) => {
                report.failed += 1;
                warn!(item = item.id, kind = %item.kind, error = %e, "due work failed; will retry");
            }
        }
    }
    if report.items > 0 {
        info!(items = report.items, events = report.events_written, failed = report.failed, "scheduler step");
    }
    Ok(report)
}

async fn run_item(app: &App, item: &DueItem) -> Result<u32, MemberOpError> {
    let tenant = TenantId::parse(&item.tenant_id).map_err(|e| MemberOpError::Infra(e.to_string()))?;
    match item.kind.as_str() {
        KIND_POINTS_EXPIRY => {
            let member_id = MemberId::parse(&item.aggregate_id).map_err(|e| MemberOpError::Infra(e.to_string()))?;
            let due_at = item.due_at.to_rfc3339();
            let mut written = 0;
            // One event expires at most PointsAmount::MAX points; repeat while some remain due.
            for round in 0..EXPIRY_ROUNDS_MAX {
                let round = round.to_string();
                let key = members::system_key(&["points-expiry", &item.aggregate_id, &due_at, &round])?;
                let command = MemberCommand::ExpirePoints {
                    provenance: Provenance {
                        actor: Actor::System { job: "scheduler".into() },
                        reason: Reference::parse("points expiry").map_err(|e| MemberOpError::Infra(e.to_string()))?,
                        reference: None,
                        idempotency_key: key.clone(),
                    },
                };
                let ctx = CommandContext::new(tenant.clone(), key, "system:scheduler".into());
                let outcome = members::execute(app, &tenant, member_id, command.clone(), &command, &ctx).await?;
                if outcome.events.is_empty() {
                    break;
                }
                if !outcome.replayed {
                    written += outcome.events.len() as u32;
                }
            }
            Ok(written)
        }
        other => {
            warn!(kind = other, "unknown due work kind; leaving it");
            Err(MemberOpError::Infra(format!("unknown due work kind {other}")))
        }
    }
}
