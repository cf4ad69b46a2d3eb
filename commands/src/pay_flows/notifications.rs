//! Verified notifications applied: paid → credit the member once; refunded → reverse once; every notification recorded.

use wxcm_domain::member::{MemberCommand, MemberError};
use wxcm_domain::payment::{PaymentCommand, PaymentPurpose};
use wxcm_domain::{AmountFen, AppId, IdempotencyKey, OutTradeNo, PayRef, Reference, TenantId};

use crate::members::{self, system_key, MemberOpError};
use crate::payments;
use crate::ports::App;

use super::*;

/// Marks the order paid (once) and credits the member (once).
pub async fn apply_paid(
    app: &App,
    tenant: &TenantId,
    order_id: &OutTradeNo,
    report: &PaidReport,
) -> Result<Applied, PayFlowError> {
    let order = load_order(app, tenant, order_id).await?;
    let already_paid = order.payment().is_some_and(|p| p.transaction_id.as_str() == report.transaction_id);
    let command = PaymentCommand::MarkPaid {
        transaction_id: PayRef::parse(&report.transaction_id).map_err(|e| bad("transaction_id", e))?,
        total_fen: report.total_fen,
        appid: AppId::parse(&report.appid).map_err(|e| bad("appid", e))?,
        mch_id: PayRef::parse(&report.mch_id).map_err(|e| bad("mch_id", e))?,
        paid_at: report.paid_at,
        via: report.via,
        notification_id: report.notification_id.as_deref().map(PayRef::parse).transpose().map_err(|e| bad("id", e))?,
    };
    // The key names what must match, so a differing report is checked by the domain
    // instead of replaying an earlier answer; the request is the same fields.
    let total = report.total_fen.to_string();
    let key =
        system_key(&["pay-paid", order_id.as_str(), &report.transaction_id, &total, &report.appid, &report.mch_id])
            .map_err(infra)?;
    let identity = (order_id.as_str(), &report.transaction_id, report.total_fen, &report.appid, &report.mch_id);
    let outcome = payments::execute(app, tenant, order_id, command, &identity, &system_ctx(tenant, key)).await?;
    let marked = !outcome.replayed && !outcome.events.is_empty();
    let credited = credit_paid_order(app, tenant, order_id).await?;
    Ok(if marked || credited == Applied::Applied || !already_paid { Applied::Applied } else { Applied::AlreadyApplied })
}

pub(super) fn credit_key(order_id: &OutTradeNo) -> Result<IdempotencyKey, PayFlowError> {
    system_key(&["pay-credit", order_id.as_str()]).map_err(infra)
}

/// Credits the member for a paid recharge order; a no-op when already
/// credited (the key derives from the order id) or when the order is not paid.
pub async fn credit_paid_order(app: &App, tenant: &TenantId, order_id: &OutTradeNo) -> Result<Applied, PayFlowError> {
    let order = load_order(app, tenant, order_id).await?;
    let (Some(details), Some(_)) = (order.details(), order.payment()) else {
        return Err(PayFlowError::Refused(format!("order {order_id} is not paid")));
    };
    match details.purpose {
        PaymentPurpose::BalanceRecharge => {}
        PaymentPurpose::MallOrder => {
            return crate::mall::pay::record_wechat_payment(app, tenant, &order).await.map_err(mall_error);
        }
        PaymentPurpose::SnatchPurchase => {
            return crate::campaigns::snatch::record_wechat_payment(app, tenant, &order).await.map_err(snatch_error);
        }
    }
    let key = credit_key(order_id)?;
    let command = MemberCommand::CreditRecharge {
        amount_fen: details.amount_fen,
        order_id: Reference::parse(order_id.as_str()).map_err(|e| bad("order id", e))?,
        provenance: provenance("wechat pay recharge", order_id.as_str(), &key)?,
    };
    let outcome =
        members::execute(app, tenant, details.member_id, command.clone(), &command, &system_ctx(tenant, key)).await?;
    Ok(if outcome.replayed || outcome.events.is_empty() { Applied::AlreadyApplied } else { Applied::Applied })
}

/// A mall order's refusal is final (the payment order is paid; the mall
/// order decides late payments itself), anything else is retried.
fn mall_error(e: crate::mall::MallOpError) -> PayFlowError {
    use crate::mall::MallOpError as E;
    match e {
        E::Pay(e) => e,
        E::Contention | E::Route(_) | E::Infra(_) | E::Unavailable(_) => PayFlowError::Retry(e.to_string()),
        other => PayFlowError::Refused(other.to_string()),
    }
}

/// A snatch's refusal is final (the campaign decides late payments itself),
/// anything else is retried.
fn snatch_error(e: crate::campaigns::CampaignOpError) -> PayFlowError {
    use crate::campaigns::CampaignOpError as E;
    match e {
        E::Contention | E::Route(_) | E::Infra(_) | E::Unavailable(_) => PayFlowError::Retry(e.to_string()),
        other => PayFlowError::Refused(other.to_string()),
    }
}

/// Records a successful refund on the order (once) and reverses the credit (once;
/// flagged for an operator instead of going negative when the balance is short).
pub async fn apply_refund(
    app: &App,
    tenant: &TenantId,
    order_id: &OutTradeNo,
    report: &RefundReport,
) -> Result<Applied, PayFlowError> {
    let order = load_order(app, tenant, order_id).await?;
    let Some(details) = order.details() else {
        return Err(PayFlowError::Refused(format!("order {order_id} not found")));
    };
    if report.total_fen != details.amount_fen.get() {
        return Err(PayFlowError::Refused(format!(
            "refund names total {} fen, the order is {} fen",
            report.total_fen,
            details.amount_fen.get()
        )));
    }
    if report.mch_id != details.mch_id.as_str() {
        return Err(PayFlowError::Refused(format!("refund is for merchant {}", report.mch_id)));
    }
    let command = PaymentCommand::RecordRefund {
        refund_no: PayRef::parse(&report.out_refund_no).map_err(|e| bad("out_refund_no", e))?,
        refund_id: PayRef::parse(&report.refund_id).map_err(|e| bad("refund_id", e))?,
        amount_fen: AmountFen::new(report.refund_fen).map_err(|e| bad("refund amount", e))?,
        succeeded_at: report.succeeded_at,
    };
    let refund_fen = report.refund_fen.to_string();
    let key = system_key(&["pay-refund", order_id.as_str(), &report.out_refund_no, &report.refund_id, &refund_fen])
        .map_err(infra)?;
    let identity = (order_id.as_str(), &report.out_refund_no, &report.refund_id, report.refund_fen);
    let outcome = payments::execute(app, tenant, order_id, command, &identity, &system_ctx(tenant, key)).await?;
    let recorded = !outcome.replayed && !outcome.events.is_empty();
    let reversed = reverse_refunds(app, tenant, order_id).await?;
    Ok(if recorded || reversed > 0 { Applied::Applied } else { Applied::AlreadyApplied })
}

/// Reverses every refund recorded on the order that the ledger has not
/// reversed yet; returns how many reversals this call wrote.
pub async fn reverse_refunds(app: &App, tenant: &TenantId, order_id: &OutTradeNo) -> Result<u32, PayFlowError> {
    let order = load_order(app, tenant, order_id).await?;
    let Some(details) = order.details() else {
        return Ok(0);
    };
    if details.purpose != PaymentPurpose::BalanceRecharge {
        return Ok(0);
    }
    let mut written = 0;
    for (refund_no, refund) in order.refunds() {
        let key = system_key(&["pay-reverse", order_id.as_str(), refund_no]).map_err(infra)?;
        let command = MemberCommand::ReverseRecharge {
            order_id: Reference::parse(order_id.as_str()).map_err(|e| bad("order id", e))?,
            refund_no: Reference::parse(refund_no).map_err(|e| bad("refund no", e))?,
            amount_fen: refund.amount_fen,
            provenance: provenance("wechat pay refund", order_id.as_str(), &key)?,
        };
        let ctx = system_ctx(tenant, key);
        match members::execute(app, tenant, details.member_id, command.clone(), &command, &ctx).await {
            Ok(outcome) => {
                if !outcome.replayed && !outcome.events.is_empty() {
                    written += 1;
                }
            }
            // The credit is still due (crash between paid and credited): credit first, then reverse.
            Err(MemberOpError::Rejected(MemberError::RechargeNotFound(_))) => {
                credit_paid_order(app, tenant, order_id).await?;
                let outcome = members::execute(app, tenant, details.member_id, command.clone(), &command, &ctx).await?;
                if !outcome.replayed && !outcome.events.is_empty() {
                    written += 1;
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(written)
}

/// Records a notification in the tenant's shard; failures are logged, never fatal
/// (the record is for people, the order's events are the truth).
pub async fn record_notification(app: &App, tenant: &TenantId, record: &NotificationRecord) {
    let result = match app.router.route(tenant) {
        Ok(shard) => shard.pay.record_notification(record).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = result {
        tracing::warn!(appid = %record.appid, error = %e, "could not record a pay notification");
    }
}
