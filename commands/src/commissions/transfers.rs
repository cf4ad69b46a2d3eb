//! WeChat Pay transfers (商家转账到零钱) of approved withdrawals: the numbers are
//! recorded before Pay is asked; paid or failed by Pay's notification or the
//! scheduler's query, whichever comes first, once.

use super::*;

/// What a user sees on a transfer of a withdrawal (Pay's limit: 32 characters).
const TRANSFER_REMARK: &str = "佣金提现 commission withdrawal";

/// The merchant transfers are paid from: the tenant's first official account
/// (by appid) whose Pay settings have an API v3 key, the merchant's
/// certificate serial and private key; `None` when there is none.
pub async fn transfer_merchant(app: &App, tenant: &TenantId) -> Result<Option<MerchantCredentials>, CommissionError> {
    let shard = app.router.route(tenant)?;
    let (state, _): (Tenant, u64) = shard.tenants.load(tenant, tenant.as_str()).await?;
    let complete = |p: &PaySettings| {
        p.api_v3_key.is_some() && p.merchant_private_key.is_some() && p.merchant_cert_serial.is_some()
    };
    let Some(appid) = state.accounts.values().find(|a| a.pay.as_ref().is_some_and(complete)).map(|a| a.appid.clone())
    else {
        return Ok(None);
    };
    match pay_flows::merchant_for(app, tenant, appid.as_str()).await {
        Ok(m) => Ok(Some(m)),
        Err(pay_flows::PayFlowError::Retry(e)) => Err(CommissionError::Unavailable(e)),
        Err(e) => Err(infra(e)),
    }
}

/// The reference a transfer's payout is recorded under (the same whether the
/// notification or a query tells it).
fn transfer_payout_ref(transfer: &TransferAttempt) -> Result<Reference, CommissionError> {
    Reference::parse(&format!("wechat-transfer:{}", transfer.out_detail_no)).map_err(infra)
}

/// Records what Pay said about the withdrawal's current transfer, once per
/// transfer (keys of withdrawal and attempt; the same result again replays).
async fn record_transfer_result(
    shard: &ShardServices,
    tenant: &TenantId,
    stream: &str,
    id: WithdrawalId,
    transfer: &TransferAttempt,
    failure: Option<String>,
) -> Result<u32, CommissionError> {
    let attempt = transfer.attempt.to_string();
    let (step, command) = match failure {
        None => (
            "commission-transfer-paid",
            CommissionAccountCommand::RecordWithdrawalPaid {
                withdrawal_id: id,
                payout_ref: transfer_payout_ref(transfer)?,
            },
        ),
        Some(reason) => (
            "commission-transfer-failed",
            CommissionAccountCommand::RecordWithdrawalFailed {
                withdrawal_id: id,
                reason: Reference::parse(&reason.chars().take(Reference::LEN_MAX).collect::<String>())
                    .or_else(|_| Reference::parse("transfer failed"))
                    .map_err(infra)?,
            },
        ),
    };
    let key = system_key(&[step, tenant.as_str(), &id.to_string(), &attempt])?;
    let ctx = CommandContext::new(tenant.clone(), key, "system:commissions".into());
    match shard.commission_accounts.execute(stream, command.clone(), &command, &ctx).await {
        Ok(o) => {
            tracing::info!(%tenant, withdrawal = %id, attempt = transfer.attempt, paid = step.ends_with("paid"),
                replayed = o.replayed, "withdrawal transfer result recorded");
            Ok(if o.replayed { 0 } else { o.events.len() as u32 })
        }
        // A failure told twice with other words (notification and query): the first stands.
        Err(ExecuteError::IdempotencyMismatch) => Ok(0),
        Err(e) => Err(e.into()),
    }
}

/// Pays an approved withdrawal by a WeChat Pay transfer: records the next
/// transfer's numbers on the account first (`WithdrawalTransferRequested`),
/// then asks Pay under them. A transfer already recorded is never sent under
/// new numbers: Pay is asked about it ([`resolve_transfer`]), and sent again
/// under the same numbers only when Pay does not know it.
pub(super) async fn pay_by_transfer(
    app: &App,
    tenant: &TenantId,
    stream: &str,
    distributor: MemberId,
    id: WithdrawalId,
    pay: Option<PayAccess<'_>>,
) -> Result<u32, CommissionError> {
    let shard = app.router.route(tenant)?;
    let (account, _): (CommissionAccount, u64) = shard.commission_accounts.load(tenant, stream).await?;
    let w = account.withdrawals.get(&id).ok_or(CommissionError::NotFound("withdrawal"))?;
    let mut written = 0;
    if w.state == WithdrawalState::Approved {
        let attempt = w.transfer.as_ref().map_or(0, |t| t.attempt) + 1;
        let command = CommissionAccountCommand::RequestWithdrawalTransfer { withdrawal_id: id };
        let key = system_key(&["commission-transfer", tenant.as_str(), &id.to_string(), &attempt.to_string()])?;
        let ctx = CommandContext::new(tenant.clone(), key, "system:commissions".into());
        let outcome = shard.commission_accounts.execute(stream, command.clone(), &command, &ctx).await?;
        written += if outcome.replayed { 0 } else { outcome.events.len() as u32 };
    }
    let (account, _): (CommissionAccount, u64) = shard.commission_accounts.load(tenant, stream).await?;
    let w = account.withdrawals.get(&id).ok_or(CommissionError::NotFound("withdrawal"))?;
    let Some(transfer) = w.transfer.clone().filter(|_| w.state == WithdrawalState::Transferring) else {
        return Ok(written);
    };
    let payout_fen = w.amount_fen - w.fee_fen;
    let Some(pay) = pay else {
        return Err(CommissionError::Retry("no Pay client here: the scheduler sends the transfer".into()));
    };
    let merchant = transfer_merchant(app, tenant)
        .await?
        .ok_or_else(|| CommissionError::Retry("no Pay API v3 merchant for transfers".into()))?;
    let fresh = written > 0;
    if !fresh {
        // Recorded before (a crash, a lost answer, the due work): ask Pay first.
        return Ok(written + resolve_transfer(app, tenant, stream, distributor, id, &transfer, payout_fen, pay).await?);
    }
    written += send_transfer(app, tenant, stream, distributor, id, &transfer, payout_fen, pay, &merchant).await?;
    Ok(written)
}

#[allow(clippy::too_many_arguments)]
async fn send_transfer(
    app: &App,
    tenant: &TenantId,
    stream: &str,
    distributor: MemberId,
    id: WithdrawalId,
    transfer: &TransferAttempt,
    payout_fen: i64,
    pay: PayAccess<'_>,
    merchant: &MerchantCredentials,
) -> Result<u32, CommissionError> {
    let shard = app.router.route(tenant)?;
    let member = members::get(app, tenant, distributor).await?;
    let Some(openid) = member.openid else {
        let reason = Some("the member has no openid to transfer to".to_owned());
        return record_transfer_result(&shard, tenant, stream, id, transfer, reason).await;
    };
    let request = TransferRequest {
        out_batch_no: transfer.out_batch_no.clone(),
        out_detail_no: transfer.out_detail_no.clone(),
        amount_fen: payout_fen,
        openid: openid.as_str().to_owned(),
        remark: TRANSFER_REMARK.to_owned(),
        notify_url: format!("{}/pay/notify/v3/{}", pay.notify_base_url.trim_end_matches('/'), merchant.appid),
    };
    match pay.gateway.create_transfer(merchant, &request).await {
        Ok(()) => {
            tracing::info!(%tenant, withdrawal = %id, out_batch_no = %transfer.out_batch_no, "withdrawal transfer accepted");
            Ok(0)
        }
        // Refused: Pay may still hold a transfer under these numbers (an earlier
        // send whose answer was lost): only its answer to a query may fail the withdrawal.
        Err(PayPortError::Refused { code, message }) => {
            tracing::warn!(%tenant, withdrawal = %id, %code, %message, "transfer refused; asking Pay about it");
            match pay.gateway.query_transfer(merchant, &transfer.out_batch_no, &transfer.out_detail_no).await {
                Ok(RemoteTransferState::NotFound) => {
                    let reason = Some(format!("refused: {code}: {message}"));
                    record_transfer_result(&shard, tenant, stream, id, transfer, reason).await
                }
                Ok(state) => apply_remote_transfer(&shard, tenant, stream, id, transfer, payout_fen, state).await,
                Err(e) => Err(CommissionError::Retry(format!("transfer refused ({code}), query failed: {e}"))),
            }
        }
        // The outcome is unknown (timeout, 5xx, an unreadable answer): the due work asks Pay.
        Err(e) => Err(CommissionError::Retry(format!("transfer outcome unknown: {e}"))),
    }
}

/// What a query said, recorded: paid, failed, or not yet (an error: asked again later).
async fn apply_remote_transfer(
    shard: &ShardServices,
    tenant: &TenantId,
    stream: &str,
    id: WithdrawalId,
    transfer: &TransferAttempt,
    payout_fen: i64,
    state: RemoteTransferState,
) -> Result<u32, CommissionError> {
    match state {
        RemoteTransferState::Success { amount_fen, .. } if amount_fen == payout_fen => {
            record_transfer_result(shard, tenant, stream, id, transfer, None).await
        }
        RemoteTransferState::Success { amount_fen, .. } => Err(CommissionError::TransferAmountMismatch {
            transfer: transfer.out_detail_no.clone(),
            paid_fen: amount_fen,
            payout_fen,
        }),
        RemoteTransferState::Failed { reason } => {
            record_transfer_result(shard, tenant, stream, id, transfer, Some(format!("transfer failed: {reason}")))
                .await
        }
        RemoteTransferState::Pending(status) => Err(CommissionError::Retry(format!("transfer {status}"))),
        RemoteTransferState::NotFound => Err(CommissionError::Retry("transfer unknown to Pay".into())),
    }
}

/// Asks Pay about the withdrawal's recorded transfer and records the answer;
/// a transfer Pay does not know is sent again under the same numbers.
#[allow(clippy::too_many_arguments)]
async fn resolve_transfer(
    app: &App,
    tenant: &TenantId,
    stream: &str,
    distributor: MemberId,
    id: WithdrawalId,
    transfer: &TransferAttempt,
    payout_fen: i64,
    pay: PayAccess<'_>,
) -> Result<u32, CommissionError> {
    let shard = app.router.route(tenant)?;
    let merchant = transfer_merchant(app, tenant)
        .await?
        .ok_or_else(|| CommissionError::Retry("no Pay API v3 merchant for transfers".into()))?;
    let state = pay
        .gateway
        .query_transfer(&merchant, &transfer.out_batch_no, &transfer.out_detail_no)
        .await
        .map_err(|e| CommissionError::Retry(format!("transfer query: {e}")))?;
    if state == RemoteTransferState::NotFound {
        // Never arrived at Pay: the same numbers again (Pay would answer an arrived one as itself).
        let written = send_transfer(app, tenant, stream, distributor, id, transfer, payout_fen, pay, &merchant).await?;
        if written > 0 {
            return Ok(written);
        }
        return Err(CommissionError::Retry("transfer sent again; waiting for Pay".into()));
    }
    apply_remote_transfer(&shard, tenant, stream, id, transfer, payout_fen, state).await
}

/// What a `MCHTRANSFER.BATCH.*` notification says about a batch (decrypted
/// and verified by the edge).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferBatchFacts {
    pub out_batch_no: String,
    /// `FINISHED` or `CLOSED`.
    pub batch_status: String,
    pub success_num: i64,
    pub success_amount: i64,
    pub fail_num: i64,
    pub close_reason: Option<String>,
}

/// What a verified `MCHTRANSFER.BATCH.*` notification did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferNotified {
    /// Recorded now (paid or failed).
    Recorded,
    /// Told before (by a copy or a query): nothing changed.
    AlreadyRecorded,
    /// Nothing to record (not a final batch state).
    Ignored(String),
}

/// Applies a verified transfer batch notification (its merchant checked by
/// the caller): the batch names the withdrawal and attempt; only the
/// withdrawal's current transfer is applied. One detail per batch, so
/// `FINISHED` with one success is paid (the amount must be the payout's), with
/// one failure failed; `CLOSED` failed. A second copy (or a notification after
/// the query told it) changes nothing.
pub async fn apply_transfer_notification(
    app: &App,
    tenant: &TenantId,
    batch: &TransferBatchFacts,
) -> Result<TransferNotified, CommissionError> {
    let (id, attempt) =
        WithdrawalId::from_transfer_no(&batch.out_batch_no).ok_or(CommissionError::NotFound("withdrawal"))?;
    let record = withdrawal(app, tenant, id).await?;
    let shard = app.router.route(tenant)?;
    let stream = account_stream(tenant, record.distributor_id);
    let (account, _): (CommissionAccount, u64) = shard.commission_accounts.load(tenant, &stream).await?;
    let w = account.withdrawals.get(&id).ok_or(CommissionError::NotFound("withdrawal"))?;
    let Some(transfer) = w.transfer.clone().filter(|t| t.attempt == attempt && t.out_batch_no == batch.out_batch_no)
    else {
        return Err(CommissionError::NotFound("transfer"));
    };
    let payout_fen = w.amount_fen - w.fee_fen;
    let told_before = w.state != WithdrawalState::Transferring;
    let result = match batch.batch_status.as_str() {
        "FINISHED" if batch.success_num == 1 && batch.success_amount == payout_fen => None,
        "FINISHED" if batch.success_num == 1 => {
            return Err(CommissionError::TransferAmountMismatch {
                transfer: batch.out_batch_no.clone(),
                paid_fen: batch.success_amount,
                payout_fen,
            })
        }
        "FINISHED" if batch.fail_num == 1 => Some("transfer failed (batch finished with 1 failure)".to_owned()),
        "CLOSED" => Some(format!("transfer batch closed: {}", batch.close_reason.as_deref().unwrap_or("no reason"))),
        other => return Ok(TransferNotified::Ignored(format!("batch_status {other}"))),
    };
    let written = record_transfer_result(&shard, tenant, &stream, id, &transfer, result).await?;
    Ok(if written == 0 || told_before { TransferNotified::AlreadyRecorded } else { TransferNotified::Recorded })
}
