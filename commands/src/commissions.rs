//! Commissions (issue 15, items 3-5): who earns on a paid mall order, the
//! commission lifecycle on each distributor's `commission_account` stream,
//! and withdrawals paid out to the member's cash balance.
//!
//! **Process managers** (migration 0041). Triggers write due work in the
//! same transaction as the mall order's event; the scheduler runs it as
//! commands keyed by order and level, so a repeat (a duplicated Pay
//! notification, a scheduler restart) changes nothing:
//! - `MallOrderPaid` → [`due_accrue`]: level 1 is the buyer's distributor,
//!   level 2 theirs (depth 2), each as bound when the order was paid and
//!   active now. Basis: the cash the order's payment recorded for the goods
//!   (after coupons and after an admin's price change before payment; points
//!   never earn). Rule, per level ([`resolve_rule_from`]): the product's own
//!   terms, else the rates of the earning distributor's level (commission
//!   settings' catalog), else the tenant's default rates; all three read when
//!   the accrual runs (at once after payment). Split by [`split_order`]: a
//!   fixed amount counts every unit, capped at the basis; level 2 earns at
//!   most what level 1 leaves.
//! - `MallOrderDelivered` → [`due_settle`] at delivered_at + hold days; the
//!   account refuses an early settlement (retried later). While the member's
//!   refund request (售后) is open the account refuses it too (`refund_open`)
//!   and the item is done; the request's rejection writes it again (migration
//!   0044: at max(due, rejected_at)), its approval is a refund (below).
//! - `MallOrderRefunded` → [`due_reverse`]: reversed while pending, clawed
//!   back (into recorded debt if need be) once settled.
//!
//! A refund racing the accrual is closed by [`due_accrue`] reading the order
//! again after accruing: a refund committed before that read is reversed
//! here, one committed after it finds the accrual in the read model.
//!
//! **Withdrawals** are decided on the account stream (money leaves the
//! withdrawable balance when requested; two requests, or a request and a
//! claw-back, meet at the same stream version and one is decided on the
//! other's result). An approved withdrawal is paid out as a `DepositCash` on
//! the member's ledger naming [`WithdrawalId::payout_reference`], under a key
//! of the withdrawal (at most once), then `RecordWithdrawalPaid`: at once by
//! the approving request, and by due work `commission_payout` when that
//! request died in between.
//!
//! Read models: `commissions` and `commission_withdrawals`, kept by a
//! trigger on the account streams (same transaction as the events).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use wxcm_domain::distribution::binding::{CommissionDepth, DistributorStanding};
use wxcm_domain::distribution::{
    resolve_rule_from, split_order, CommissionAccount, CommissionAccountCommand, CommissionAccountError,
    CommissionAccountId, CommissionFigures, CommissionKey, CommissionLevel, CommissionRule, CommissionSettings,
    DistributorLevelCode, PayoutMethod, TransferAttempt, WithdrawalId, WithdrawalState,
};
use wxcm_domain::mall::{MallOrderId, OrderStatus};
use wxcm_domain::member::{MemberCommand, Provenance};
use wxcm_domain::tenant::{PaySettings, Tenant};
use wxcm_domain::{Actor, AmountFen, MemberId, Reference, TenantId};

use crate::executor::ExecuteError;
use crate::members::{self, system_key, MemberOpError};
use crate::pay_flows;
use crate::pay_port::{MerchantCredentials, PayAccess, PayPortError, RemoteTransferState, TransferRequest};
use crate::ports::{PortError, RouteError, ShardServices};
use crate::{App, CommandContext};

/// Commissions per page.
pub const COMMISSION_PAGE_MAX: u32 = 100;
/// Withdrawals per page.
pub const WITHDRAWAL_PAGE_MAX: u32 = 100;
/// Bindings of a buyer read to find the one current when the order was paid.
const BINDINGS_READ_MAX: u32 = 100;

#[derive(Debug, thiserror::Error)]
pub enum CommissionError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error(transparent)]
    Account(CommissionAccountError),
    #[error("idempotency key was already used with a different request")]
    IdempotencyMismatch,
    #[error("too much contention, try again")]
    Contention,
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error("infrastructure failure: {0}")]
    Infra(String),
    #[error("infrastructure unavailable: {0}")]
    Unavailable(String),
    /// Not yet (a holding period, a payout the ledger could not take now).
    #[error("not yet: {0}")]
    Retry(String),
    /// Withdrawals cannot be paid by WeChat Pay transfer in this tenant: no
    /// official account has a complete Pay API v3 merchant.
    #[error("no Pay API v3 merchant: {0}")]
    NoTransferMerchant(String),
    /// Pay says the transfer paid another amount than the withdrawal's payout:
    /// nothing is recorded (the withdrawal stays `transferring`) and an
    /// operator must look; asking or being told again says the same.
    #[error("transfer {transfer} paid {paid_fen} fen, the withdrawal pays {payout_fen}: left for an operator")]
    TransferAmountMismatch { transfer: String, paid_fen: i64, payout_fen: i64 },
}

impl From<PortError> for CommissionError {
    fn from(e: PortError) -> Self {
        if e.is_transient() {
            CommissionError::Unavailable(e.to_string())
        } else {
            CommissionError::Infra(e.to_string())
        }
    }
}

impl From<MemberOpError> for CommissionError {
    fn from(e: MemberOpError) -> Self {
        match e {
            MemberOpError::NotFound => CommissionError::NotFound("member"),
            MemberOpError::IdempotencyMismatch => CommissionError::IdempotencyMismatch,
            MemberOpError::Contention => CommissionError::Contention,
            MemberOpError::Route(r) => CommissionError::Route(r),
            MemberOpError::Unavailable(s) => CommissionError::Unavailable(s),
            other => CommissionError::Infra(other.to_string()),
        }
    }
}

impl From<ExecuteError<CommissionAccountError>> for CommissionError {
    fn from(e: ExecuteError<CommissionAccountError>) -> Self {
        match e {
            ExecuteError::Domain(d) => CommissionError::Account(d),
            ExecuteError::ForeignAggregate => CommissionError::NotFound("commission account"),
            ExecuteError::IdempotencyMismatch => CommissionError::IdempotencyMismatch,
            ExecuteError::Contention => CommissionError::Contention,
            ExecuteError::Invariant(b) => CommissionError::Infra(b.to_string()),
            ExecuteError::Store(s) => CommissionError::Infra(s),
            ExecuteError::Unavailable(s) => CommissionError::Unavailable(s),
        }
    }
}

fn infra(e: impl std::fmt::Display) -> CommissionError {
    CommissionError::Infra(e.to_string())
}

/// One commission as the `commissions` read model keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommissionRecord {
    /// Paging cursor (newest first).
    pub cursor: i64,
    pub order_id: MallOrderId,
    pub level: u8,
    pub distributor_id: MemberId,
    pub buyer_id: MemberId,
    pub basis_fen: i64,
    pub amount_fen: i64,
    /// `pending`, `settled`, `reversed` or `clawed_back`.
    pub state: String,
    pub accrued_at: DateTime<Utc>,
    pub settled_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    /// The rule it was computed with (`None` only for a row the migration
    /// could not fill).
    pub rule: Option<CommissionRule>,
    pub quantity: Option<u32>,
}

/// A commission and every level of its order.
#[derive(Debug, Clone, Serialize)]
pub struct CommissionWithSplit {
    pub commission: CommissionRecord,
    pub split: Vec<CommissionRecord>,
}

/// One withdrawal as the `commission_withdrawals` read model keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WithdrawalRecord {
    pub cursor: i64,
    pub withdrawal_id: WithdrawalId,
    pub distributor_id: MemberId,
    pub amount_fen: i64,
    pub fee_fen: i64,
    pub payout_fen: i64,
    /// `requested`, `approved`, `transferring`, `paid`, `rejected`, `failed` or `returned`.
    pub state: String,
    pub reason: Option<String>,
    pub payout_ref: Option<String>,
    pub requested_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// `balance` or `wechat_transfer`, once approved.
    pub payout_method: Option<String>,
    /// The current WeChat Pay transfer's `out_detail_no`.
    pub transfer_no: Option<String>,
}

#[derive(Debug, Clone)]
pub struct WithdrawalQuery {
    pub state: Option<WithdrawalState>,
    pub distributor: Option<MemberId>,
    /// Older than this cursor.
    pub before: Option<i64>,
    /// 1..=[`WITHDRAWAL_PAGE_MAX`].
    pub limit: u32,
}

/// What commissions need from the shard's database beside the events.
#[async_trait]
pub trait CommissionStore: Send + Sync {
    async fn settings(&self, tenant: &TenantId) -> Result<Option<CommissionSettings>, PortError>;
    async fn save_settings(
        &self,
        tenant: &TenantId,
        settings: &CommissionSettings,
        at: DateTime<Utc>,
        by: &str,
    ) -> Result<(), PortError>;
    async fn of_order(&self, tenant: &TenantId, order: MallOrderId) -> Result<Vec<CommissionRecord>, PortError>;
    /// A distributor's commissions, newest first, older than `before`.
    async fn of_distributor(
        &self,
        tenant: &TenantId,
        distributor: MemberId,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<CommissionRecord>, PortError>;
    async fn withdrawal(&self, tenant: &TenantId, id: WithdrawalId) -> Result<Option<WithdrawalRecord>, PortError>;
    /// Newest first.
    async fn withdrawals(&self, tenant: &TenantId, query: &WithdrawalQuery)
        -> Result<Vec<WithdrawalRecord>, PortError>;
    /// Distributors by `by` over `[from, to)`, highest first (ties by id), at most `limit`:
    /// `(distributor, value)`.
    async fn ranks(
        &self,
        tenant: &TenantId,
        by: RankBy,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<(MemberId, i64)>, PortError>;
}

// ---------------------------------------------------------------- ranks

/// Distributors a rank lists at most.
pub const RANK_LIMIT_MAX: u32 = 100;

/// What distributors are ranked by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RankBy {
    /// Fen of commissions settled in the window and not clawed back since.
    SettledCommission,
    /// Members bound to the distributor in the window (each member once).
    NewSubordinates,
}

/// A calendar window of merchant days (UTC+8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RankPeriod {
    /// Monday to Sunday.
    Week,
    Month,
}

/// A rank: its window (merchant days, `to` inclusive) and the distributors in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ranking {
    pub by: RankBy,
    pub period: RankPeriod,
    pub from: chrono::NaiveDate,
    pub to: chrono::NaiveDate,
    /// `(rank, distributor, value)`; equal values share no rank (ties by id).
    pub rows: Vec<(u32, MemberId, i64)>,
}

/// The merchant days of the week or month containing `day`.
pub fn rank_window(period: RankPeriod, day: chrono::NaiveDate) -> Option<(chrono::NaiveDate, chrono::NaiveDate)> {
    use chrono::Datelike;
    match period {
        RankPeriod::Week => {
            let from = day - chrono::Duration::days(i64::from(day.weekday().num_days_from_monday()));
            Some((from, from + chrono::Duration::days(6)))
        }
        RankPeriod::Month => {
            let from = day.with_day(1)?;
            let next = if from.month() == 12 {
                chrono::NaiveDate::from_ymd_opt(from.year() + 1, 1, 1)?
            } else {
                chrono::NaiveDate::from_ymd_opt(from.year(), from.month() + 1, 1)?
            };
            Some((from, next - chrono::Duration::days(1)))
        }
    }
}

/// Distributors ranked by settled commission or new subordinates over the
/// week or month (merchant days) containing `day` (default: today).
pub async fn ranking(
    app: &App,
    tenant: &TenantId,
    by: RankBy,
    period: RankPeriod,
    day: Option<chrono::NaiveDate>,
    limit: u32,
) -> Result<Ranking, CommissionError> {
    let shard = app.router.route(tenant)?;
    let day = day.unwrap_or_else(|| wxcm_domain::campaign::merchant_day(app.clock.now()));
    let window = rank_window(period, day);
    let instants = window.and_then(|(from, to)| {
        let start = wxcm_domain::campaign::merchant_midnight(from)?;
        let end = wxcm_domain::campaign::merchant_midnight(to.succ_opt()?)?;
        Some((from, to, start, end))
    });
    let Some((from, to, start, end)) = instants else {
        return Err(CommissionError::Infra(format!("no {period:?} window around {day}")));
    };
    let rows = shard.commissions.ranks(tenant, by, start, end, limit.clamp(1, RANK_LIMIT_MAX)).await?;
    let rows = (1u32..).zip(rows).map(|(rank, (member, value))| (rank, member, value)).collect();
    Ok(Ranking { by, period, from, to, rows })
}

// ---------------------------------------------------------------- settings and views

pub async fn settings(app: &App, tenant: &TenantId) -> Result<CommissionSettings, CommissionError> {
    let shard = app.router.route(tenant)?;
    Ok(shard.commissions.settings(tenant).await?.unwrap_or_default())
}

pub async fn put_settings(
    app: &App,
    tenant: &TenantId,
    settings: &CommissionSettings,
    actor: &Actor,
) -> Result<CommissionSettings, CommissionError> {
    if settings.payout_method() == PayoutMethod::WechatTransfer && transfer_merchant(app, tenant).await?.is_none() {
        return Err(CommissionError::NoTransferMerchant(
            "payout by WeChat Pay transfer needs an official account with Pay API v3 settings \
             (API v3 key, merchant certificate serial and private key)"
                .into(),
        ));
    }
    let shard = app.router.route(tenant)?;
    shard.commissions.save_settings(tenant, settings, app.clock.now(), &actor.label()).await?;
    tracing::info!(%tenant, "commission settings saved");
    Ok(settings.clone())
}

/// A mall order's commissions: the cash it paid (the basis) and each level
/// that earned, with its distributor, rule, amount and state.
#[derive(Debug, Clone, Serialize)]
pub struct OrderCommissions {
    pub order_id: MallOrderId,
    pub status: OrderStatus,
    pub quantity: u32,
    /// Cash the order's payment recorded (`None` before payment or for a
    /// points-only order: points never earn).
    pub cash_paid_fen: Option<i64>,
    pub split: Vec<CommissionRecord>,
}

/// The order's commissions, level 1 first (another tenant's order is not found).
pub async fn of_order(
    app: &App,
    tenant: &TenantId,
    order_id: MallOrderId,
) -> Result<OrderCommissions, CommissionError> {
    let shard = app.router.route(tenant)?;
    let (order, _) = shard.mall_orders.load(tenant, &order_id.to_string()).await?;
    let (Some(placed), Some(status)) = (order.placed.as_deref().filter(|p| &p.tenant_id == tenant), order.status)
    else {
        return Err(CommissionError::NotFound("order"));
    };
    let cash_paid_fen = order.payment.as_ref().and_then(|p| p.cash.as_ref()).map(|c| c.amount_fen().get());
    let split = shard.commissions.of_order(tenant, order_id).await?;
    Ok(OrderCommissions { order_id, status, quantity: placed.quantity.get(), cash_paid_fen, split })
}

fn account_stream(tenant: &TenantId, distributor: MemberId) -> String {
    CommissionAccountId::for_distributor(tenant, distributor).to_string()
}

/// A distributor's account figures (all zero before the first commission).
pub async fn figures(app: &App, tenant: &TenantId, member: MemberId) -> Result<CommissionFigures, CommissionError> {
    members::get(app, tenant, member).await?;
    let shard = app.router.route(tenant)?;
    let (account, _): (CommissionAccount, u64) =
        shard.commission_accounts.load(tenant, &account_stream(tenant, member)).await?;
    Ok(account.figures)
}

/// A distributor's commissions, newest first, each with its order's split.
pub async fn commissions_of(
    app: &App,
    tenant: &TenantId,
    distributor: MemberId,
    before: Option<i64>,
    limit: u32,
) -> Result<Vec<CommissionWithSplit>, CommissionError> {
    members::get(app, tenant, distributor).await?;
    let shard = app.router.route(tenant)?;
    let limit = limit.clamp(1, COMMISSION_PAGE_MAX);
    let mut out = Vec::new();
    for commission in shard.commissions.of_distributor(tenant, distributor, before, limit).await? {
        let split = shard.commissions.of_order(tenant, commission.order_id).await?;
        out.push(CommissionWithSplit { commission, split });
    }
    Ok(out)
}

pub async fn withdrawals(
    app: &App,
    tenant: &TenantId,
    query: &WithdrawalQuery,
) -> Result<Vec<WithdrawalRecord>, CommissionError> {
    let shard = app.router.route(tenant)?;
    Ok(shard.commissions.withdrawals(tenant, query).await?)
}

pub async fn withdrawal(app: &App, tenant: &TenantId, id: WithdrawalId) -> Result<WithdrawalRecord, CommissionError> {
    let shard = app.router.route(tenant)?;
    shard.commissions.withdrawal(tenant, id).await?.ok_or(CommissionError::NotFound("withdrawal"))
}

// ---------------------------------------------------------------- withdrawals

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

// ---------------------------------------------------------------- WeChat Pay transfers

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
async fn pay_by_transfer(
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

// ---------------------------------------------------------------- process managers

/// The distributor `member` was bound to at `at`, if they are an active
/// distributor now, with their level code (if any).
async fn earner(
    shard: &ShardServices,
    tenant: &TenantId,
    member: MemberId,
    at: DateTime<Utc>,
) -> Result<Option<(MemberId, Option<DistributorLevelCode>)>, CommissionError> {
    let history = shard.distribution.binding_history(tenant, member, BINDINGS_READ_MAX).await?;
    let Some(binding) = history.into_iter().find(|b| b.bound_at <= at) else {
        return Ok(None);
    };
    let distributor = binding.distributor_id;
    let Some(view) = shard.distribution.distributor(tenant, distributor).await? else {
        return Ok(None);
    };
    if view.standing != DistributorStanding::Active || distributor == member {
        return Ok(None);
    }
    // A code the catalog no longer has (or could not parse) earns the defaults.
    let level = view.level.as_deref().and_then(|c| DistributorLevelCode::parse(c).ok());
    Ok(Some((distributor, level)))
}

/// Runs one command on a distributor's account under a key of `parts`.
async fn run(
    shard: &ShardServices,
    tenant: &TenantId,
    distributor: MemberId,
    command: CommissionAccountCommand,
    parts: &[&str],
) -> Result<u32, CommissionError> {
    let key = system_key(parts)?;
    let ctx = CommandContext::new(tenant.clone(), key, "system:commissions".into());
    let outcome =
        shard.commission_accounts.execute(&account_stream(tenant, distributor), command.clone(), &command, &ctx).await;
    match outcome {
        Ok(o) => Ok(if o.replayed { 0 } else { o.events.len() as u32 }),
        Err(e) => Err(e.into()),
    }
}

fn level_name(level: CommissionLevel) -> &'static str {
    match level {
        CommissionLevel::First => "1",
        CommissionLevel::Second => "2",
    }
}

/// Due work `commission_accrue`: the order's levels 1 and 2 earn once.
pub async fn due_accrue(app: &App, tenant: &TenantId, order_id: MallOrderId) -> Result<u32, CommissionError> {
    let shard = app.router.route(tenant)?;
    let order_stream = order_id.to_string();
    let (order, _) = shard.mall_orders.load(tenant, &order_stream).await?;
    let (Some(placed), Some(payment)) = (&order.placed, &order.payment) else {
        return Ok(0);
    };
    // Refunded before anything accrued: nothing was earned. Points never earn.
    let Some(cash) = payment.cash.as_ref().filter(|_| order.status != Some(OrderStatus::Refunded)) else {
        return Ok(0);
    };
    let settings = shard.distribution.settings(tenant).await?.unwrap_or_default();
    let tenant_rates = settings.default_rates();
    let buyer = placed.member_id;
    let Some((first, first_level)) = earner(&shard, tenant, buyer, payment.paid_at).await? else {
        return Ok(0);
    };
    let second = match settings.depth() {
        CommissionDepth::Two => earner(&shard, tenant, first, payment.paid_at).await?.filter(|(d, _)| *d != buyer),
        CommissionDepth::One => None,
    };
    let catalog = shard.commissions.settings(tenant).await?.unwrap_or_default();
    let level_rates = |code: Option<&DistributorLevelCode>| code.and_then(|c| catalog.level_rates(c));
    let (product, _) = shard.products.load(tenant, &placed.product_id.to_string()).await?;
    let product_terms = product.created.as_ref().filter(|p| &p.tenant_id == tenant).and_then(|p| p.commission);
    let first_rule =
        resolve_rule_from(CommissionLevel::First, tenant_rates, level_rates(first_level.as_ref()), product_terms);
    let second_rule = second.as_ref().and_then(|(_, level)| {
        resolve_rule_from(CommissionLevel::Second, tenant_rates, level_rates(level.as_ref()), product_terms)
    });
    tracing::debug!(%tenant, order = %order_id, ?first_rule, ?second_rule, "commission rules resolved");
    let rules: [(CommissionLevel, Option<MemberId>, Option<CommissionRule>); 2] = [
        (CommissionLevel::First, Some(first), first_rule.map(|(r, _)| r)),
        (CommissionLevel::Second, second.as_ref().map(|(d, _)| *d), second_rule.map(|(r, _)| r)),
    ];
    let basis = cash.amount_fen();
    let (first_fen, _) =
        split_order(basis.get(), placed.quantity, rules[0].2, rules[1].2).ok_or_else(|| infra("negative basis"))?;
    let mut written = 0;
    for (level, distributor, rule) in rules {
        let (Some(distributor), Some(rule)) = (distributor, rule) else { continue };
        let command = CommissionAccountCommand::Accrue {
            tenant_id: tenant.clone(),
            distributor_id: distributor,
            buyer_id: buyer,
            key: CommissionKey { order_id, level },
            basis_fen: basis,
            quantity: placed.quantity,
            rule,
            nearer_levels_fen: if level == CommissionLevel::First { 0 } else { first_fen },
        };
        let parts = ["commission-accrue", tenant.as_str(), &order_stream, level_name(level)];
        match run(&shard, tenant, distributor, command, &parts).await {
            Ok(n) => written += n,
            // A retry whose facts changed (a setting, a standing): the first run stands.
            Err(CommissionError::IdempotencyMismatch) => {}
            Err(CommissionError::Account(CommissionAccountError::OwnOrder)) => {}
            Err(e) => return Err(e),
        }
    }
    if written > 0 {
        let second = second.map(|(d, _)| d);
        tracing::info!(%tenant, order = %order_id, %first, ?second, "commissions accrued");
    }
    // A refund recorded while we accrued: reverse what we just accrued.
    let (order, _) = shard.mall_orders.load(tenant, &order_stream).await?;
    if order.status == Some(OrderStatus::Refunded) {
        written += due_reverse(app, tenant, order_id).await?;
    }
    Ok(written)
}

/// Due work `commission_settle`: the order's pending commissions settle once
/// the holding period after delivery passed (the account refuses earlier:
/// the item is retried).
pub async fn due_settle(app: &App, tenant: &TenantId, order_id: MallOrderId) -> Result<u32, CommissionError> {
    // An accrual still due (or lost) first: settlement must find it.
    let mut written = due_accrue(app, tenant, order_id).await?;
    let shard = app.router.route(tenant)?;
    let order_stream = order_id.to_string();
    let (order, _) = shard.mall_orders.load(tenant, &order_stream).await?;
    if order.status == Some(OrderStatus::Refunded) {
        return Ok(written);
    }
    let delivered_at = order.delivery.as_ref().map(|d| d.delivered_at);
    // An open refund request blocks settlement; its rejection writes this due work again.
    let refund_open = order.open_refund_request().is_some();
    let hold_days = settings(app, tenant).await?.hold_days();
    for c in shard.commissions.of_order(tenant, order_id).await? {
        if c.state != "pending" {
            continue;
        }
        let level = if c.level == 1 { CommissionLevel::First } else { CommissionLevel::Second };
        let key = CommissionKey { order_id, level };
        let command = CommissionAccountCommand::Settle { key, delivered_at, hold_days, refund_open };
        let parts = ["commission-settle", tenant.as_str(), &order_stream, level_name(level)];
        match run(&shard, tenant, c.distributor_id, command, &parts).await {
            Ok(n) => written += n,
            Err(CommissionError::Account(CommissionAccountError::RefundOpen)) => {
                tracing::info!(%tenant, order = %order_id, "settlement waits for the open refund request");
            }
            Err(CommissionError::Account(CommissionAccountError::Reversed | CommissionAccountError::ClawedBack)) => {}
            Err(CommissionError::Account(e)) => return Err(CommissionError::Retry(e.to_string())),
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

/// Due work `commission_reverse`: the refunded order's commissions are
/// reversed (pending) or clawed back (settled; the shortfall is debt).
pub async fn due_reverse(app: &App, tenant: &TenantId, order_id: MallOrderId) -> Result<u32, CommissionError> {
    let shard = app.router.route(tenant)?;
    let order_stream = order_id.to_string();
    let refund = Reference::parse(&format!("mall-order-refund:{order_id}")).map_err(infra)?;
    let mut written = 0;
    for c in shard.commissions.of_order(tenant, order_id).await? {
        if c.state != "pending" && c.state != "settled" {
            continue;
        }
        let level = if c.level == 1 { CommissionLevel::First } else { CommissionLevel::Second };
        let command =
            CommissionAccountCommand::Reverse { key: CommissionKey { order_id, level }, refund: refund.clone() };
        let parts = ["commission-reverse", tenant.as_str(), &order_stream, level_name(level)];
        written += run(&shard, tenant, c.distributor_id, command, &parts).await?;
    }
    if written > 0 {
        tracing::info!(%tenant, order = %order_id, "commissions reversed");
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::{rank_window, RankPeriod};

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn a_rank_window_is_the_monday_to_sunday_week_or_the_calendar_month() {
        // 2026-12-06 is a Sunday.
        assert_eq!(rank_window(RankPeriod::Week, day(2026, 12, 6)), Some((day(2026, 11, 30), day(2026, 12, 6))));
        assert_eq!(rank_window(RankPeriod::Week, day(2026, 12, 7)), Some((day(2026, 12, 7), day(2026, 12, 13))));
        assert_eq!(rank_window(RankPeriod::Month, day(2026, 12, 31)), Some((day(2026, 12, 1), day(2026, 12, 31))));
        assert_eq!(rank_window(RankPeriod::Month, day(2028, 2, 10)), Some((day(2028, 2, 1), day(2028, 2, 29))));
    }
}
