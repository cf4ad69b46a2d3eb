//! Withdrawals: requested on the account stream, decided by an admin, paid out
//! to the member's cash balance or by WeChat Pay transfer ([`super::transfers`]).

use super::transfers::pay_by_transfer;
use super::*;

#[derive(Serialize)]
struct WithdrawRequest {
    member: MemberId,
    amount_fen: i64,
}

/// The member asks for `amount_fen` of their withdrawable balance (the
/// tenant's minimum and fee apply). The request's key names the withdrawal.
pub async fn request_withdrawal(
    app: &App,
    ctx: &CommandContext,
    member: MemberId,
    amount_fen: AmountFen,
) -> Result<WithdrawalRecord, CommissionError> {
    let tenant = &ctx.tenant_id;
    members::get(app, tenant, member).await?;
    let shard = app.router.route(tenant)?;
    let policy = settings(app, tenant).await?.withdrawal();
    let withdrawal_id = WithdrawalId::for_request(tenant, member, ctx.idempotency_key.as_str());
    let command = CommissionAccountCommand::RequestWithdrawal {
        withdrawal_id,
        amount_fen,
        policy,
        actor: Actor::Member { member_id: member },
    };
    let request = WithdrawRequest { member, amount_fen: amount_fen.get() };
    shard.commission_accounts.execute(&account_stream(tenant, member), command, &request, ctx).await?;
    tracing::info!(%tenant, %member, %withdrawal_id, amount_fen = amount_fen.get(), "withdrawal requested");
    withdrawal(app, tenant, withdrawal_id).await
}

/// An admin's decision on a requested withdrawal.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum WithdrawalDecision {
    Approve,
    Reject {
        reason: Reference,
    },
    /// A failed payout tried again (approved again, paid out at once).
    Retry,
    /// A failed payout given back to the withdrawable balance.
    Return,
}

/// Approves (then pays out at once) or rejects a requested withdrawal;
/// retries (paying out at once) or returns a failed one.
pub async fn decide_withdrawal(
    app: &App,
    ctx: &CommandContext,
    id: WithdrawalId,
    decision: WithdrawalDecision,
    actor: Actor,
    pay: Option<PayAccess<'_>>,
) -> Result<WithdrawalRecord, CommissionError> {
    let tenant = &ctx.tenant_id;
    let record = withdrawal(app, tenant, id).await?;
    let shard = app.router.route(tenant)?;
    let stream = account_stream(tenant, record.distributor_id);
    let request = (id, decision.clone());
    let command = match decision {
        WithdrawalDecision::Approve => {
            let method = settings(app, tenant).await?.payout_method();
            CommissionAccountCommand::ApproveWithdrawal { withdrawal_id: id, actor, method }
        }
        WithdrawalDecision::Reject { reason } => {
            CommissionAccountCommand::RejectWithdrawal { withdrawal_id: id, reason, actor }
        }
        WithdrawalDecision::Retry => CommissionAccountCommand::RetryWithdrawal { withdrawal_id: id, actor },
        WithdrawalDecision::Return => CommissionAccountCommand::ReturnWithdrawal { withdrawal_id: id, actor },
    };
    shard.commission_accounts.execute(&stream, command, &request, ctx).await?;
    let account_id = CommissionAccountId::for_distributor(tenant, record.distributor_id);
    if let Err(e) = pay_out(app, tenant, account_id, id, pay).await {
        // The due work `commission_payout` finishes it.
        tracing::warn!(%tenant, withdrawal = %id, error = %e, "payout left to the scheduler");
    }
    withdrawal(app, tenant, id).await
}

/// Pays an approved withdrawal out the way it was approved: to the member's
/// cash balance, once (the credit's key and reference are the withdrawal's),
/// then records it paid; or by a WeChat Pay transfer ([`pay_by_transfer`]).
/// A withdrawal being transferred is resolved by asking Pay. Nothing to do
/// for a withdrawal in any other state.
pub async fn pay_out(
    app: &App,
    tenant: &TenantId,
    account_id: CommissionAccountId,
    id: WithdrawalId,
    pay: Option<PayAccess<'_>>,
) -> Result<u32, CommissionError> {
    let shard = app.router.route(tenant)?;
    let stream = account_id.to_string();
    let (account, _): (CommissionAccount, u64) = shard.commission_accounts.load(tenant, &stream).await?;
    let owner = account.owner.as_ref().ok_or(CommissionError::NotFound("commission account"))?;
    let distributor = owner.distributor_id;
    let w = account.withdrawals.get(&id).ok_or(CommissionError::NotFound("withdrawal"))?;
    match (w.state, w.method) {
        (WithdrawalState::Approved, PayoutMethod::Balance) => {}
        (WithdrawalState::Approved | WithdrawalState::Transferring, PayoutMethod::WechatTransfer) => {
            return pay_by_transfer(app, tenant, &stream, distributor, id, pay).await;
        }
        _ => return Ok(0),
    }
    let payout = AmountFen::new(w.amount_fen - w.fee_fen).map_err(infra)?;
    let payout_ref = id.payout_reference();
    let key = system_key(&["commission-payout", tenant.as_str(), &id.to_string()])?;
    let credit = MemberCommand::DepositCash {
        amount_fen: payout,
        provenance: Provenance {
            actor: Actor::System { job: "commissions".into() },
            reason: Reference::parse("commission withdrawal").map_err(infra)?,
            reference: Some(payout_ref.clone()),
            idempotency_key: key.clone(),
        },
    };
    let ctx = CommandContext::new(tenant.clone(), key, "system:commissions".into());
    let record = match members::execute(app, tenant, distributor, credit.clone(), &credit, &ctx).await {
        Ok(_) => CommissionAccountCommand::RecordWithdrawalPaid { withdrawal_id: id, payout_ref },
        Err(MemberOpError::Rejected(e)) => CommissionAccountCommand::RecordWithdrawalFailed {
            withdrawal_id: id,
            reason: Reference::parse(&format!("ledger refused: {e}").chars().take(200).collect::<String>())
                .map_err(infra)?,
        },
        Err(MemberOpError::NotFound) => CommissionAccountCommand::RecordWithdrawalFailed {
            withdrawal_id: id,
            reason: Reference::parse("member not found").map_err(infra)?,
        },
        Err(e) => return Err(e.into()),
    };
    let key = system_key(&["commission-payout-recorded", tenant.as_str(), &id.to_string()])?;
    let ctx = CommandContext::new(tenant.clone(), key, "system:commissions".into());
    let outcome = shard.commission_accounts.execute(&stream, record.clone(), &record, &ctx).await?;
    tracing::info!(%tenant, withdrawal = %id, %distributor, "withdrawal payout recorded");
    Ok(if outcome.replayed { 0 } else { outcome.events.len() as u32 })
}

/// Due work `commission_payout` (aggregate id `<account>/<withdrawal>`):
/// finishes a payout its request left, and asks Pay about a transfer until it
/// is paid or failed (an error keeps the item, retried with backoff).
pub async fn due_payout(
    app: &App,
    tenant: &TenantId,
    aggregate_id: &str,
    pay: Option<PayAccess<'_>>,
) -> Result<u32, CommissionError> {
    let (account, withdrawal) = aggregate_id.split_once('/').ok_or_else(|| infra("bad payout due item"))?;
    let account = CommissionAccountId::parse(account).map_err(infra)?;
    let withdrawal = WithdrawalId::parse(withdrawal).map_err(infra)?;
    pay_out(app, tenant, account, withdrawal, pay).await
}
