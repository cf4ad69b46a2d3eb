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

mod accrual;
mod transfers;
mod withdrawals;

pub use accrual::{due_accrue, due_reverse, due_settle};
pub use transfers::{apply_transfer_notification, transfer_merchant, TransferBatchFacts, TransferNotified};
pub use withdrawals::{decide_withdrawal, due_payout, pay_out, request_withdrawal, WithdrawalDecision};

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
