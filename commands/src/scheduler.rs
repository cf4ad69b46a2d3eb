//! Due work, run through ordinary commands. Each item is executed with an
//! idempotency key derived from the item, and the commands themselves are
//! idempotent by state (expiring nothing writes nothing), so a restart or a
//! second instance can never do the work twice; an item is only marked done
//! after its command committed, so none is lost.

use serde::Serialize;
use tracing::{info, warn};
use wxcm_domain::member::{MemberCommand, Provenance};
use wxcm_domain::payment::PaymentStatus;
use wxcm_domain::{Actor, MemberId, OutTradeNo, Reference, TenantId};

use crate::executor::CommandContext;
use crate::mall::pay::PayRefunds;
use crate::members::{self, MemberOpError};
use crate::pay_flows::{self, Applied, Reconciled};
use crate::pay_port::PayAccess;
use crate::payments;
use crate::ports::{App, DueItem, ShardServices};

/// Items taken per step.
pub const DUE_BATCH_MAX: u32 = 500;
pub const KIND_POINTS_EXPIRY: &str = "points_expiry";
pub const KIND_COUPON_EXPIRY: &str = "coupon_expiry";
/// A registration in a tenant with welcome coupons (migration 0017).
pub const KIND_WELCOME_COUPONS: &str = "welcome_coupons";
/// A paid order's member credit (written with `PaymentOrderPaid`, migration 0011).
pub const KIND_PAYMENT_CREDIT: &str = "payment_credit";
/// An order reaching its expiry: ask Pay, then credit or close.
pub const KIND_PAYMENT_EXPIRY: &str = "payment_expiry";
/// Refunds recorded on an order whose ledger reversal may still be due.
pub const KIND_PAYMENT_REVERSAL: &str = "payment_reversal";
/// An unpaid mall order (or a reservation never placed) reaching its expiry
/// (written with `ProductStockReserved`, migration 0020).
pub const KIND_MALL_ORDER_EXPIRY: &str = "mall_order_expiry";
/// What a mall order's event asks of the product and the member ledger
/// (written with `MallOrderPaid`, `…Cancelled`, `…PaymentArrivedLate`, `…Refunded`).
pub const KIND_MALL_ORDER_SETTLE: &str = "mall_order_settle";
/// A campaign reaching its start or end (written with `CampaignScheduled`, migration 0024).
pub const KIND_CAMPAIGN_START: &str = "campaign_start";
pub const KIND_CAMPAIGN_END: &str = "campaign_end";
/// A shake's points or coupon prize, issued (again) under its award's key
/// (written with `CampaignShakesDrawn`, migration 0024).
pub const KIND_CAMPAIGN_PRIZE: &str = "campaign_prize";
/// A periodic lottery's period reaching its end (written with `CampaignPeriodOpened`, migration 0024).
pub const KIND_CAMPAIGN_PERIOD_DRAW: &str = "campaign_period_draw";
/// One paid entry of a cancelled period to refund (written with `CampaignPeriodCancelled`, migration 0026).
pub const KIND_CAMPAIGN_ENTRY_REFUND: &str = "campaign_entry_refund";
/// A paid entry's hold its request may have left (written with `PointsHeld`, migration 0026).
pub const KIND_CAMPAIGN_ENTRY_HOLD: &str = "campaign_entry_hold";
/// A snatch reservation reaching its expiry (written with `SnatchSharesReserved`, migration 0029).
pub const KIND_SNATCH_RESERVATION_EXPIRY: &str = "snatch_reservation_expiry";
/// A snatch payment that arrived late, to refund (written with `SnatchPaymentArrivedLate`, migration 0029).
pub const KIND_SNATCH_REFUND: &str = "snatch_refund";
/// A voting item's approval reward, granted (again) under its key (written with
/// `CampaignVoteItemApproved`, migration 0027).
pub const KIND_CAMPAIGN_VOTE_REWARD: &str = "campaign_vote_reward";
/// A paid mall order's commissions to accrue (written with `MallOrderPaid`, migration 0041).
pub const KIND_COMMISSION_ACCRUE: &str = "commission_accrue";
/// A delivered order's commissions to settle after the holding period (`MallOrderDelivered`, migration 0041).
pub const KIND_COMMISSION_SETTLE: &str = "commission_settle";
/// A refunded order's commissions to reverse or claw back (`MallOrderRefunded`, migration 0041).
pub const KIND_COMMISSION_REVERSE: &str = "commission_reverse";
/// An approved withdrawal to pay out (`WithdrawalApproved` / `…Retried`, migration 0041).
pub const KIND_COMMISSION_PAYOUT: &str = "commission_payout";
/// Expiry commands per due item (each expires up to `PointsAmount::MAX`).
const EXPIRY_ROUNDS_MAX: u32 = 16;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StepReport {
    pub items: u32,
    pub events_written: u32,
    pub failed: u32,
    /// Members handled by coupon dispatch jobs.
    pub dispatched: u64,
}

/// First retry of a failed due item, doubling per failure up to the cap.
pub const RETRY_DELAY_BASE_S: i64 = 5;
pub const RETRY_DELAY_MAX_S: i64 = 3_600;

/// How long a due item that failed `attempts` times before (and now once more) waits.
pub fn retry_delay(attempts: i32) -> chrono::Duration {
    let doublings = u32::try_from(attempts.clamp(0, 20)).unwrap_or(0);
    chrono::Duration::seconds(RETRY_DELAY_BASE_S.saturating_mul(1i64 << doublings).min(RETRY_DELAY_MAX_S))
}

/// One pass over the shard's due work. Call it repeatedly (the scheduler
/// role does so on a timer while it holds the shard's leadership).
pub async fn step(app: &App, shard: &ShardServices) -> Result<StepReport, MemberOpError> {
    step_with_pay(app, shard, None).await
}

/// [`step`] with WeChat Pay, which expired payment orders and mall order
/// refunds need (without it they stay due: paid ones are credited, open ones
/// and refunds wait for a scheduler with Pay).
pub async fn step_with_pay(
    app: &App,
    shard: &ShardServices,
    pay: Option<PayAccess<'_>>,
) -> Result<StepReport, MemberOpError> {
    let now = app.clock.now();
    let due = shard.due_work.due(now, DUE_BATCH_MAX).await?;
    let mut report = StepReport::default();
    for item in due {
        report.items += 1;
        match run_item(app, pay, &item).await {
            Ok(written) => {
                report.events_written += written;
                shard.due_work.done(item.id).await?;
            }
            Err(e) => {
                report.failed += 1;
                let retry_at = now + retry_delay(item.attempts);
                warn!(item = item.id, kind = %item.kind, attempts = item.attempts + 1, %retry_at, error = %e, "due work failed; will retry");
                shard.due_work.failed(item.id, &e.to_string(), retry_at).await?;
            }
        }
    }
    // Coupon dispatch jobs: one chunk per running job per step.
    report.dispatched = crate::coupons::dispatch::step(app, shard).await?;
    if report.items > 0 || report.dispatched > 0 {
        info!(
            items = report.items,
            events = report.events_written,
            failed = report.failed,
            dispatched = report.dispatched,
            "scheduler step"
        );
    }
    Ok(report)
}

async fn run_item(app: &App, pay: Option<PayAccess<'_>>, item: &DueItem) -> Result<u32, MemberOpError> {
    let tenant = TenantId::parse(&item.tenant_id).map_err(|e| MemberOpError::Infra(e.to_string()))?;
    match item.kind.as_str() {
        KIND_PAYMENT_CREDIT | KIND_PAYMENT_EXPIRY | KIND_PAYMENT_REVERSAL => {
            run_payment_item(app, pay.map(|p| p.gateway), &tenant, item)
                .await
                .map_err(|e| MemberOpError::Infra(e.to_string()))
        }
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
        KIND_COUPON_EXPIRY => {
            let coupon_id = wxcm_domain::coupon::CouponId::parse(&item.aggregate_id)
                .map_err(|e| MemberOpError::Infra(e.to_string()))?;
            crate::coupons::expire(app, &tenant, coupon_id).await.map_err(|e| MemberOpError::Infra(e.to_string()))
        }
        KIND_WELCOME_COUPONS => {
            let member_id = MemberId::parse(&item.aggregate_id).map_err(|e| MemberOpError::Infra(e.to_string()))?;
            crate::coupons::issue_welcome(app, &tenant, member_id)
                .await
                .map_err(|e| MemberOpError::Infra(e.to_string()))
        }
        KIND_MALL_ORDER_EXPIRY | KIND_MALL_ORDER_SETTLE => {
            let order_id = wxcm_domain::mall::MallOrderId::parse(&item.aggregate_id)
                .map_err(|e| MemberOpError::Infra(e.to_string()))?;
            let refunds = match pay {
                Some(p) => PayRefunds::Now { pay: p.gateway, notify_base_url: p.notify_base_url },
                None => PayRefunds::Unavailable,
            };
            crate::mall::orders::due(app, &tenant, order_id, refunds)
                .await
                .map_err(|e| MemberOpError::Infra(e.to_string()))
        }
        KIND_CAMPAIGN_START | KIND_CAMPAIGN_END => {
            let campaign_id = wxcm_domain::campaign::CampaignId::parse(&item.aggregate_id)
                .map_err(|e| MemberOpError::Infra(e.to_string()))?;
            let run = match item.kind.as_str() {
                KIND_CAMPAIGN_START => crate::campaigns::due_start(app, &tenant, campaign_id).await,
                _ => crate::campaigns::due_end(app, &tenant, campaign_id).await,
            };
            run.map_err(|e| MemberOpError::Infra(e.to_string()))
        }
        KIND_CAMPAIGN_PERIOD_DRAW => crate::campaigns::periods::due_period_draw(app, &tenant, &item.aggregate_id)
            .await
            .map_err(|e| MemberOpError::Infra(e.to_string())),
        KIND_CAMPAIGN_ENTRY_REFUND => crate::campaigns::periods::due_entry_refund(app, &tenant, &item.aggregate_id)
            .await
            .map_err(|e| MemberOpError::Infra(e.to_string())),
        KIND_CAMPAIGN_ENTRY_HOLD => crate::campaigns::periods::due_entry_hold(app, &tenant, &item.aggregate_id)
            .await
            .map_err(|e| MemberOpError::Infra(e.to_string())),
        KIND_CAMPAIGN_PRIZE => crate::campaigns::shakes::due_prize(app, &tenant, &item.aggregate_id)
            .await
            .map_err(|e| MemberOpError::Infra(e.to_string())),
        KIND_SNATCH_RESERVATION_EXPIRY => {
            crate::campaigns::snatch::due_reservation_expiry(app, &tenant, &item.aggregate_id)
                .await
                .map_err(|e| MemberOpError::Infra(e.to_string()))
        }
        KIND_SNATCH_REFUND => {
            let pay = pay.map(|p| (p.gateway, p.notify_base_url));
            crate::campaigns::snatch::due_refund(app, &tenant, &item.aggregate_id, pay)
                .await
                .map_err(|e| MemberOpError::Infra(e.to_string()))
        }
        KIND_CAMPAIGN_VOTE_REWARD => crate::campaigns::voting::due_reward(app, &tenant, &item.aggregate_id)
            .await
            .map_err(|e| MemberOpError::Infra(e.to_string())),
        KIND_COMMISSION_ACCRUE | KIND_COMMISSION_SETTLE | KIND_COMMISSION_REVERSE => {
            let order_id = wxcm_domain::mall::MallOrderId::parse(&item.aggregate_id)
                .map_err(|e| MemberOpError::Infra(e.to_string()))?;
            let run = match item.kind.as_str() {
                KIND_COMMISSION_ACCRUE => crate::commissions::due_accrue(app, &tenant, order_id).await,
                KIND_COMMISSION_SETTLE => crate::commissions::due_settle(app, &tenant, order_id).await,
                _ => crate::commissions::due_reverse(app, &tenant, order_id).await,
            };
            run.map_err(|e| MemberOpError::Infra(e.to_string()))
        }
        KIND_COMMISSION_PAYOUT => crate::commissions::due_payout(app, &tenant, &item.aggregate_id, pay)
            .await
            .map_err(|e| MemberOpError::Infra(e.to_string())),
        other => {
            warn!(kind = other, "unknown due work kind; leaving it");
            Err(MemberOpError::Infra(format!("unknown due work kind {other}")))
        }
    }
}

async fn run_payment_item(
    app: &App,
    pay: Option<&dyn crate::pay_port::PayGateway>,
    tenant: &TenantId,
    item: &DueItem,
) -> Result<u32, pay_flows::PayFlowError> {
    let order_id = OutTradeNo::parse(&item.aggregate_id)
        .map_err(|e| pay_flows::PayFlowError::Refused(format!("due item {}: {e}", item.id)))?;
    let written = match item.kind.as_str() {
        KIND_PAYMENT_CREDIT => {
            u32::from(pay_flows::credit_paid_order(app, tenant, &order_id).await? == Applied::Applied)
        }
        KIND_PAYMENT_REVERSAL => pay_flows::reverse_refunds(app, tenant, &order_id).await?,
        _ => {
            let Some(pay) = pay else {
                // Without Pay only what needs no question can be finished.
                let view = payments::get(app, tenant, &order_id).await?;
                return match view.status {
                    PaymentStatus::Created => {
                        Err(pay_flows::PayFlowError::Retry("no WeChat Pay client to query the expired order".into()))
                    }
                    PaymentStatus::Paid => {
                        Ok(u32::from(pay_flows::credit_paid_order(app, tenant, &order_id).await? == Applied::Applied))
                    }
                    PaymentStatus::Closed => Ok(0),
                };
            };
            match pay_flows::reconcile_order(app, pay, tenant, &order_id).await? {
                Reconciled::Paid | Reconciled::Closed => 1,
                // Pay is undecided (e.g. USERPAYING): keep the item for a later pass.
                Reconciled::Open { detail } => return Err(pay_flows::PayFlowError::Retry(detail)),
            }
        }
    };
    Ok(written)
}

#[cfg(test)]
mod retry_tests {
    use super::*;

    #[test]
    fn retries_back_off_and_are_capped() {
        assert_eq!(retry_delay(0), chrono::Duration::seconds(5));
        assert_eq!(retry_delay(1), chrono::Duration::seconds(10));
        assert_eq!(retry_delay(5), chrono::Duration::seconds(160));
        assert_eq!(retry_delay(10), chrono::Duration::seconds(RETRY_DELAY_MAX_S));
        assert_eq!(retry_delay(i32::MAX), chrono::Duration::seconds(RETRY_DELAY_MAX_S));
        assert_eq!(retry_delay(-3), chrono::Duration::seconds(5));
    }
}
