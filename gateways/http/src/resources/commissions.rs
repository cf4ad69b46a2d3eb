//! Commissions (tag `distribution`; member routes tag `member`): the tenant's
//! commission settings, a distributor's account and commissions with each
//! order's split, the withdrawals to approve and the admin's decision
//! (`/admin/api/v1/…`); my distribution centre, my commissions, withdraw and
//! my withdrawals for members (`/m/api/v1/distribution/…`).

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::instrument;
use utoipa::{IntoParams, ToSchema};
use wxcm_commands::commissions::{
    self as uc, CommissionError, CommissionRecord, CommissionWithSplit, OrderCommissions, WithdrawalDecision,
    WithdrawalQuery, WithdrawalRecord, COMMISSION_PAGE_MAX, WITHDRAWAL_PAGE_MAX,
};
use wxcm_domain::distribution::{
    CommissionAccountError, CommissionFigures, CommissionLevel, CommissionRule, CommissionSettings,
    CommissionSettingsShape, DistributorLevel, DistributorLevelCode, LevelRates, PayoutMethod, RateBps, WithdrawalId,
    WithdrawalState,
};
use wxcm_domain::mall::MallOrderId;
use wxcm_domain::{AmountFen, MemberId, TenantId};

use crate::error::{idempotency_key_reused, unknown_tenant, ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery, Authorized, Correlation, IdempotencyHeader};
use crate::permissions::perm;
use crate::resources::distribution::DecisionReasonBody;
use crate::resources::member_api::MemberAuth;
use crate::state::AppState;

/// Default entries of one page.
pub const PAGE_DEFAULT: u32 = 50;

impl From<CommissionError> for ApiError {
    fn from(e: CommissionError) -> Self {
        let message = e.to_string();
        match e {
            CommissionError::NotFound("member") => ApiError::not_found("member_not_found", message),
            CommissionError::NotFound("withdrawal") => ApiError::not_found("withdrawal_not_found", message),
            CommissionError::NotFound("order") => ApiError::not_found("order_not_found", message),
            CommissionError::NotFound(_) => ApiError::not_found("commission_account_not_found", message),
            CommissionError::Account(a) => account_refusal(&a),
            CommissionError::IdempotencyMismatch => idempotency_key_reused(),
            CommissionError::Contention => ApiError::Contention,
            CommissionError::Route(r) => unknown_tenant(&r),
            CommissionError::Infra(detail) | CommissionError::Retry(detail) => {
                ApiError::internal("commissions", &detail)
            }
            CommissionError::TransferAmountMismatch { .. } => ApiError::internal("commissions", &message),
            CommissionError::Unavailable(detail) => ApiError::unavailable("commissions", &detail),
            CommissionError::NoTransferMerchant(_) => ApiError::conflict("pay_v3_merchant_required", message),
        }
    }
}

fn account_refusal(e: &CommissionAccountError) -> ApiError {
    use CommissionAccountError as E;
    let message = e.to_string();
    match e {
        E::NotFound => ApiError::conflict("no_commissions", message),
        E::BelowMinimum(_) => ApiError::conflict("below_withdrawal_minimum", message),
        E::Insufficient { .. } => ApiError::conflict("insufficient_commission", message),
        E::NothingToPayOut => ApiError::conflict("nothing_to_pay_out", message),
        E::DuplicateWithdrawal => ApiError::conflict("duplicate_withdrawal", message),
        E::UnknownWithdrawal => ApiError::not_found("withdrawal_not_found", message),
        E::WithdrawalState(_) => ApiError::conflict("wrong_withdrawal_state", message),
        other => ApiError::internal("commission account", other),
    }
}

/// A cursor of a page: `next_before` of the previous one (≥ 1).
fn cursor(before: Option<i64>) -> Result<Option<i64>, ApiError> {
    match before {
        Some(b) if b < 1 => Err(ApiError::invalid("invalid_before", "before must be at least 1")),
        other => Ok(other),
    }
}

fn page_limit(limit: Option<u32>, max: u32) -> Result<u32, ApiError> {
    let limit = limit.unwrap_or(PAGE_DEFAULT);
    if !(1..=max).contains(&limit) {
        return Err(ApiError::invalid("invalid_limit", format!("limit must be 1..={max}")));
    }
    Ok(limit)
}

// ---------------------------------------------------------------- types

/// A tenant's commission settings.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommissionSettingsDto {
    /// Days after delivery before a commission settles (while no refund is open).
    #[schema(minimum = 0, maximum = 365)]
    pub hold_days: u16,
    /// Smallest withdrawal, in fen.
    #[schema(minimum = 1, maximum = 100000000)]
    pub withdrawal_min_fen: i64,
    /// Fee on a withdrawal in basis points (rounded down, in the member's favour).
    #[schema(minimum = 0, maximum = 5000)]
    pub withdrawal_fee_bps: u32,
    /// The catalog of distributor levels (at most 20, codes unique; absent: none). A distributor
    /// set to a level earns its rates unless the product has terms of its own.
    #[serde(default)]
    #[schema(max_items = 20)]
    pub distributor_levels: Vec<DistributorLevelDto>,
    /// How approved withdrawals are paid out: `balance` (the member's cash
    /// balance, the default) or `wechat_transfer` (WeChat Pay transfer to the
    /// member's change; needs an official account with Pay API v3 settings,
    /// else 409 `pay_v3_merchant_required`).
    #[serde(default)]
    pub payout_method: PayoutMethodDto,
}

/// How approved withdrawals are paid out.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PayoutMethodDto {
    #[default]
    Balance,
    WechatTransfer,
}

/// One distributor level: its code, a name and its rates in basis points (level 1 + level 2 ≤
/// 10,000).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DistributorLevelDto {
    #[schema(pattern = "^[a-z0-9_-]{1,32}$", min_length = 1, max_length = 32)]
    pub code: String,
    #[schema(min_length = 1, max_length = 32, pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]+$")]
    pub name: String,
    #[schema(minimum = 0, maximum = 10000)]
    pub first_bps: u32,
    #[schema(minimum = 0, maximum = 10000)]
    pub second_bps: u32,
}

impl DistributorLevelDto {
    fn validate(self) -> Result<DistributorLevel, ApiError> {
        let code =
            DistributorLevelCode::parse(&self.code).map_err(|e| ApiError::invalid("invalid_level", e.to_string()))?;
        let rate = |bps| RateBps::new(bps).map_err(|e| ApiError::invalid("invalid_rates", e.to_string()));
        let rates = LevelRates::new(rate(self.first_bps)?, rate(self.second_bps)?)
            .map_err(|e| ApiError::invalid("invalid_rates", e.to_string()))?;
        Ok(DistributorLevel { code, name: self.name, rates })
    }
}

impl CommissionSettingsDto {
    fn validate(self) -> Result<CommissionSettings, ApiError> {
        let withdrawal_min_fen = AmountFen::new(self.withdrawal_min_fen)
            .map_err(|e| ApiError::invalid("invalid_withdrawal_min", e.to_string()))?;
        let withdrawal_fee_bps =
            RateBps::new(self.withdrawal_fee_bps).map_err(|e| ApiError::invalid("invalid_fee", e.to_string()))?;
        let payout_method = match self.payout_method {
            PayoutMethodDto::Balance => PayoutMethod::Balance,
            PayoutMethodDto::WechatTransfer => PayoutMethod::WechatTransfer,
        };
        let distributor_levels =
            self.distributor_levels.into_iter().map(DistributorLevelDto::validate).collect::<Result<_, _>>()?;
        let shape = CommissionSettingsShape {
            hold_days: self.hold_days,
            withdrawal_min_fen,
            withdrawal_fee_bps,
            payout_method,
            distributor_levels,
        };
        CommissionSettings::new(shape).map_err(|e| ApiError::invalid("invalid_commission_settings", e.to_string()))
    }
}

impl From<CommissionSettings> for CommissionSettingsDto {
    fn from(s: CommissionSettings) -> Self {
        let shape = CommissionSettingsShape::from(s);
        CommissionSettingsDto {
            hold_days: shape.hold_days,
            withdrawal_min_fen: shape.withdrawal_min_fen.get(),
            withdrawal_fee_bps: u32::from(shape.withdrawal_fee_bps),
            payout_method: match shape.payout_method {
                PayoutMethod::Balance => PayoutMethodDto::Balance,
                PayoutMethod::WechatTransfer => PayoutMethodDto::WechatTransfer,
            },
            distributor_levels: shape
                .distributor_levels
                .into_iter()
                .map(|l| DistributorLevelDto {
                    code: l.code.to_string(),
                    name: l.name,
                    first_bps: u32::from(l.rates.rate(CommissionLevel::First)),
                    second_bps: u32::from(l.rates.rate(CommissionLevel::Second)),
                })
                .collect(),
        }
    }
}

/// A distributor's commission account, in fen. `withdrawable = settled − clawed_back − withdrawn`
/// when positive; `debt` is what claw-backs took beyond the balance (repaid by later settlements).
#[derive(Debug, Serialize, ToSchema)]
pub struct CommissionAccountDto {
    pub earned_fen: i64,
    pub pending_fen: i64,
    pub settled_fen: i64,
    pub reversed_fen: i64,
    pub clawed_back_fen: i64,
    /// Withdrawals requested, approved or failed (not yet paid nor given back).
    pub withdrawing_fen: i64,
    pub paid_out_fen: i64,
    pub withdrawable_fen: i64,
    pub debt_fen: i64,
}

impl From<CommissionFigures> for CommissionAccountDto {
    fn from(f: CommissionFigures) -> Self {
        CommissionAccountDto {
            earned_fen: f.earned,
            pending_fen: f.pending,
            settled_fen: f.settled,
            reversed_fen: f.reversed,
            clawed_back_fen: f.clawed_back,
            withdrawing_fen: f.in_flight,
            paid_out_fen: f.paid_out,
            withdrawable_fen: f.withdrawable(),
            debt_fen: f.debt(),
        }
    }
}

/// One level of one order's commission.
#[derive(Debug, Serialize, ToSchema)]
pub struct CommissionDto {
    pub order_id: uuid::Uuid,
    /// 1: the buyer's distributor; 2: theirs.
    pub level: u8,
    pub distributor_id: uuid::Uuid,
    pub buyer_id: uuid::Uuid,
    /// Cash paid for the goods after coupons (points never earn).
    pub basis_fen: i64,
    pub amount_fen: i64,
    /// `pending`, `settled`, `reversed` (refunded before settlement) or `clawed_back` (after).
    pub state: String,
    pub accrued_at: DateTime<Utc>,
    pub settled_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    /// How it was computed; null only for a commission older than the rule's record.
    pub rule: Option<CommissionRuleDto>,
    /// The order's quantity (what a fixed amount per unit was multiplied by).
    pub quantity: Option<u32>,
}

/// How a commission was computed: `floor(basis × bps / 10,000)`, or `fen × quantity` capped at
/// the basis (level 2 at most what level 1 left of it).
#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CommissionRuleDto {
    Rate { bps: u32 },
    FixedPerUnit { fen: i64 },
}

impl From<CommissionRule> for CommissionRuleDto {
    fn from(r: CommissionRule) -> Self {
        match r {
            CommissionRule::Rate { bps } => CommissionRuleDto::Rate { bps: u32::from(bps) },
            CommissionRule::FixedPerUnit { fen } => CommissionRuleDto::FixedPerUnit { fen: fen.get() },
        }
    }
}

/// A mall order's commissions: every level that earned on it.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderCommissionsDto {
    pub order_id: uuid::Uuid,
    /// The order's status (`awaiting_payment`, `paid`, `delivered`, `refunded`, …).
    pub status: String,
    pub quantity: u32,
    /// Cash the order's payment recorded for the goods (the basis: after coupons and after a
    /// price change before payment; points never earn); null before payment or without cash.
    pub cash_paid_fen: Option<i64>,
    /// Level 1 (the buyer's distributor) first, then level 2; empty when nothing was earned.
    pub split: Vec<CommissionDto>,
}

impl From<OrderCommissions> for OrderCommissionsDto {
    fn from(o: OrderCommissions) -> Self {
        let status = serde_json::to_value(o.status).ok().and_then(|v| v.as_str().map(str::to_owned));
        OrderCommissionsDto {
            order_id: o.order_id.as_uuid(),
            status: status.unwrap_or_default(),
            quantity: o.quantity,
            cash_paid_fen: o.cash_paid_fen,
            split: o.split.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<CommissionRecord> for CommissionDto {
    fn from(r: CommissionRecord) -> Self {
        CommissionDto {
            order_id: r.order_id.as_uuid(),
            level: r.level,
            distributor_id: r.distributor_id.as_uuid(),
            buyer_id: r.buyer_id.as_uuid(),
            basis_fen: r.basis_fen,
            amount_fen: r.amount_fen,
            state: r.state,
            accrued_at: r.accrued_at,
            settled_at: r.settled_at,
            ended_at: r.ended_at,
            rule: r.rule.map(Into::into),
            quantity: r.quantity,
        }
    }
}

/// A commission and its order's split (every level that earned on the order).
#[derive(Debug, Serialize, ToSchema)]
pub struct CommissionLineDto {
    pub commission: CommissionDto,
    pub split: Vec<CommissionDto>,
}

impl From<CommissionWithSplit> for CommissionLineDto {
    fn from(c: CommissionWithSplit) -> Self {
        CommissionLineDto { commission: c.commission.into(), split: c.split.into_iter().map(Into::into).collect() }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CommissionList {
    pub account: CommissionAccountDto,
    /// Newest first.
    pub commissions: Vec<CommissionLineDto>,
    /// `before` of the next page; null on the last page.
    pub next_before: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CursorQuery {
    /// `next_before` of the previous page.
    #[param(minimum = 1)]
    pub before: Option<i64>,
    /// 1..=100, default 50.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WithdrawalStateDto {
    Requested,
    Approved,
    /// Paid by a WeChat Pay transfer that Pay has not finished yet.
    Transferring,
    Paid,
    Rejected,
    Failed,
    Returned,
}

impl WithdrawalStateDto {
    fn state(self) -> WithdrawalState {
        match self {
            WithdrawalStateDto::Requested => WithdrawalState::Requested,
            WithdrawalStateDto::Approved => WithdrawalState::Approved,
            WithdrawalStateDto::Transferring => WithdrawalState::Transferring,
            WithdrawalStateDto::Paid => WithdrawalState::Paid,
            WithdrawalStateDto::Rejected => WithdrawalState::Rejected,
            WithdrawalStateDto::Failed => WithdrawalState::Failed,
            WithdrawalStateDto::Returned => WithdrawalState::Returned,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WithdrawalPageQuery {
    /// Only withdrawals in this state (`requested`: the approval queue).
    #[param(inline)]
    pub state: Option<WithdrawalStateDto>,
    /// Only this distributor's.
    pub distributor_id: Option<uuid::Uuid>,
    /// `next_before` of the previous page.
    #[param(minimum = 1)]
    pub before: Option<i64>,
    /// 1..=100, default 50.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WithdrawalDto {
    pub withdrawal_id: uuid::Uuid,
    pub distributor_id: uuid::Uuid,
    pub amount_fen: i64,
    pub fee_fen: i64,
    /// What reaches the member's cash balance: amount − fee.
    pub payout_fen: i64,
    /// `requested`, `approved`, `transferring`, `paid`, `rejected`, `failed` or `returned`.
    pub state: String,
    /// The rejection's or the failure's reason.
    pub reason: Option<String>,
    /// What paid it: the member ledger credit's reference, or
    /// `wechat-transfer:<out_detail_no>`.
    pub payout_ref: Option<String>,
    pub requested_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// `balance` or `wechat_transfer`, once approved.
    pub payout_method: Option<String>,
    /// The current WeChat Pay transfer's `out_detail_no` (its `out_batch_no`
    /// starts `wb` instead of `wd`).
    pub transfer_no: Option<String>,
}

impl From<WithdrawalRecord> for WithdrawalDto {
    fn from(r: WithdrawalRecord) -> Self {
        WithdrawalDto {
            withdrawal_id: r.withdrawal_id.as_uuid(),
            distributor_id: r.distributor_id.as_uuid(),
            amount_fen: r.amount_fen,
            fee_fen: r.fee_fen,
            payout_fen: r.payout_fen,
            state: r.state,
            reason: r.reason,
            payout_ref: r.payout_ref,
            requested_at: r.requested_at,
            updated_at: r.updated_at,
            payout_method: r.payout_method,
            transfer_no: r.transfer_no,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WithdrawalList {
    /// Newest first.
    pub withdrawals: Vec<WithdrawalDto>,
    pub next_before: Option<i64>,
}

/// A withdrawal request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WithdrawBody {
    /// Taken from the withdrawable balance now; at least the tenant's minimum.
    #[schema(minimum = 1, maximum = 100000000)]
    pub amount_fen: i64,
}

async fn commission_page(
    state: &AppState,
    tenant: &TenantId,
    member: MemberId,
    query: CursorQuery,
) -> Result<CommissionList, ApiError> {
    let limit = page_limit(query.limit, COMMISSION_PAGE_MAX)?;
    let before = cursor(query.before)?;
    let account = uc::figures(&state.app, tenant, member).await?;
    let rows = uc::commissions_of(&state.app, tenant, member, before, limit).await?;
    let next_before = if rows.len() == limit as usize { rows.last().map(|r| r.commission.cursor) } else { None };
    Ok(CommissionList { account: account.into(), commissions: rows.into_iter().map(Into::into).collect(), next_before })
}

async fn withdrawal_page(
    state: &AppState,
    tenant: &TenantId,
    query: WithdrawalQuery,
) -> Result<WithdrawalList, ApiError> {
    let limit = query.limit;
    let rows = uc::withdrawals(&state.app, tenant, &query).await?;
    let next_before = if rows.len() == limit as usize { rows.last().map(|r| r.cursor) } else { None };
    Ok(WithdrawalList { withdrawals: rows.into_iter().map(Into::into).collect(), next_before })
}

// ---------------------------------------------------------------- admin

/// The tenant's commission settings (until saved: a 7-day hold, withdrawals from 100 fen, no fee).
#[utoipa::path(get, path = "/admin/api/v1/distribution/commission-settings", tag = "distribution",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The settings", body = CommissionSettingsDto),
        (status = 403, description = "`forbidden`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id))]
pub async fn get_settings(
    State(state): State<AppState>,
    auth: Authorized<perm::DistributionRead>,
) -> Result<Json<CommissionSettingsDto>, ApiError> {
    Ok(Json(uc::settings(&state.app, &auth.session.tenant_id).await?.into()))
}

/// Replaces the tenant's commission settings. The holding period applies to orders delivered
/// afterwards; the minimum and fee to withdrawals requested afterwards.
#[utoipa::path(put, path = "/admin/api/v1/distribution/commission-settings", tag = "distribution",
    security(("bearer" = [])),
    params(("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters")),
    request_body = CommissionSettingsDto,
    responses(
        (status = 200, description = "Saved (or replayed)", body = CommissionSettingsDto),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`, `pay_v3_merchant_required`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_withdrawal_min`, `invalid_fee`, `invalid_commission_settings`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username))]
pub async fn put_settings(
    State(state): State<AppState>,
    auth: Authorized<perm::DistributionManage>,
    body: ApiJson<CommissionSettingsDto>,
) -> Result<Json<CommissionSettingsDto>, ApiError> {
    let settings = body.0.validate()?;
    Ok(Json(uc::put_settings(&state.app, &auth.session.tenant_id, &settings, &auth.actor()).await?.into()))
}

/// A distributor's commission account and commissions (newest first), each with its order's split.
#[utoipa::path(get, path = "/admin/api/v1/distributors/{member_id}/commissions", tag = "distribution",
    security(("bearer" = [])),
    params(("member_id" = uuid::Uuid, Path), CursorQuery),
    responses(
        (status = 200, description = "The account and one page of commissions", body = CommissionList),
        (status = 400, description = "`invalid_member_id`, `invalid_query`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`member_not_found`", body = ErrorBody),
        (status = 422, description = "`invalid_limit`, `invalid_before`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, member_id = %id.0))]
pub async fn admin_commissions(
    State(state): State<AppState>,
    auth: Authorized<perm::DistributionRead>,
    id: ApiPath<MemberId>,
    query: ApiQuery<CursorQuery>,
) -> Result<Json<CommissionList>, ApiError> {
    Ok(Json(commission_page(&state, &auth.session.tenant_id, id.0, query.0).await?))
}

/// A mall order's commissions with its split: which distributor earned at level 1 and 2, the
/// basis (cash paid), the rule (rate or fixed per unit), the amount and its state.
#[utoipa::path(get, path = "/admin/api/v1/mall/orders/{mall_order_id}/commissions", tag = "distribution",
    security(("bearer" = [])),
    params(("mall_order_id" = uuid::Uuid, Path)),
    responses(
        (status = 200, description = "The order's commissions", body = OrderCommissionsDto),
        (status = 400, description = "`invalid_order_id`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`order_not_found`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, order_id = %id.0))]
pub async fn order_commissions(
    State(state): State<AppState>,
    auth: Authorized<perm::DistributionRead>,
    id: ApiPath<MallOrderId>,
) -> Result<Json<OrderCommissionsDto>, ApiError> {
    Ok(Json(uc::of_order(&state.app, &auth.session.tenant_id, id.0).await?.into()))
}

/// Withdrawals (newest first): `state=requested` is the approval queue.
#[utoipa::path(get, path = "/admin/api/v1/commission-withdrawals", tag = "distribution",
    security(("bearer" = [])),
    params(WithdrawalPageQuery),
    responses(
        (status = 200, description = "One page", body = WithdrawalList),
        (status = 400, description = "`invalid_query`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 422, description = "`invalid_limit`, `invalid_before`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id))]
pub async fn admin_withdrawals(
    State(state): State<AppState>,
    auth: Authorized<perm::DistributionRead>,
    query: ApiQuery<WithdrawalPageQuery>,
) -> Result<Json<WithdrawalList>, ApiError> {
    let q = query.0;
    let query = WithdrawalQuery {
        state: q.state.map(WithdrawalStateDto::state),
        distributor: q.distributor_id.map(MemberId::from_uuid),
        before: cursor(q.before)?,
        limit: page_limit(q.limit, WITHDRAWAL_PAGE_MAX)?,
    };
    Ok(Json(withdrawal_page(&state, &auth.session.tenant_id, query).await?))
}

async fn decide(
    state: &AppState,
    auth: &Authorized<perm::DistributionManage>,
    key: IdempotencyHeader,
    correlation: Correlation,
    id: WithdrawalId,
    decision: WithdrawalDecision,
) -> Result<Json<WithdrawalDto>, ApiError> {
    let ctx = auth.context(key.0, correlation);
    let pay = state
        .member
        .pay
        .as_deref()
        .map(|gateway| wxcm_commands::pay_port::PayAccess { gateway, notify_base_url: &state.member.notify_base_url });
    Ok(Json(uc::decide_withdrawal(&state.app, &ctx, id, decision, auth.actor(), pay).await?.into()))
}

/// Approves a requested withdrawal: it is paid out at once to the member's cash balance (a
/// member ledger credit with the withdrawal's reference, once).
#[utoipa::path(post, path = "/admin/api/v1/commission-withdrawals/{withdrawal_id}/approve", tag = "distribution",
    security(("bearer" = [])),
    params(("withdrawal_id" = uuid::Uuid, Path), ("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters")),
    responses(
        (status = 200, description = "Approved and paid (or replayed)", body = WithdrawalDto),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `invalid_withdrawal_id`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`withdrawal_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`, `wrong_withdrawal_state`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, withdrawal_id = %id.0))]
pub async fn approve(
    State(state): State<AppState>,
    auth: Authorized<perm::DistributionManage>,
    key: IdempotencyHeader,
    correlation: Correlation,
    id: ApiPath<WithdrawalId>,
) -> Result<Json<WithdrawalDto>, ApiError> {
    decide(&state, &auth, key, correlation, id.0, WithdrawalDecision::Approve).await
}

/// Rejects a requested withdrawal with a reason: the amount returns to the withdrawable balance.
#[utoipa::path(post, path = "/admin/api/v1/commission-withdrawals/{withdrawal_id}/reject", tag = "distribution",
    security(("bearer" = [])),
    params(("withdrawal_id" = uuid::Uuid, Path), ("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters")),
    request_body = DecisionReasonBody,
    responses(
        (status = 200, description = "Rejected (or replayed)", body = WithdrawalDto),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `invalid_withdrawal_id`, `malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`withdrawal_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`, `wrong_withdrawal_state`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_reason`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, withdrawal_id = %id.0))]
pub async fn reject(
    State(state): State<AppState>,
    auth: Authorized<perm::DistributionManage>,
    key: IdempotencyHeader,
    correlation: Correlation,
    id: ApiPath<WithdrawalId>,
    body: ApiJson<DecisionReasonBody>,
) -> Result<Json<WithdrawalDto>, ApiError> {
    let reason = body.0.validate()?;
    decide(&state, &auth, key, correlation, id.0, WithdrawalDecision::Reject { reason }).await
}

/// Tries a failed payout again: approved again and paid out at once.
#[utoipa::path(post, path = "/admin/api/v1/commission-withdrawals/{withdrawal_id}/retry", tag = "distribution",
    security(("bearer" = [])),
    params(("withdrawal_id" = uuid::Uuid, Path), ("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters")),
    responses(
        (status = 200, description = "Retried (or replayed)", body = WithdrawalDto),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `invalid_withdrawal_id`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`withdrawal_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`, `wrong_withdrawal_state` (not failed)", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, withdrawal_id = %id.0))]
pub async fn retry(
    State(state): State<AppState>,
    auth: Authorized<perm::DistributionManage>,
    key: IdempotencyHeader,
    correlation: Correlation,
    id: ApiPath<WithdrawalId>,
) -> Result<Json<WithdrawalDto>, ApiError> {
    decide(&state, &auth, key, correlation, id.0, WithdrawalDecision::Retry).await
}

/// Gives a failed withdrawal back to the member's withdrawable balance.
#[utoipa::path(post, path = "/admin/api/v1/commission-withdrawals/{withdrawal_id}/return", tag = "distribution",
    security(("bearer" = [])),
    params(("withdrawal_id" = uuid::Uuid, Path), ("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters")),
    responses(
        (status = 200, description = "Returned (or replayed)", body = WithdrawalDto),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `invalid_withdrawal_id`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`withdrawal_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`, `wrong_withdrawal_state` (not failed)", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, withdrawal_id = %id.0))]
pub async fn give_back(
    State(state): State<AppState>,
    auth: Authorized<perm::DistributionManage>,
    key: IdempotencyHeader,
    correlation: Correlation,
    id: ApiPath<WithdrawalId>,
) -> Result<Json<WithdrawalDto>, ApiError> {
    decide(&state, &auth, key, correlation, id.0, WithdrawalDecision::Return).await
}

// ---------------------------------------------------------------- member

/// My distribution centre: pending, settled, withdrawable and debt (fen).
#[utoipa::path(get, path = "/m/api/v1/distribution/centre", tag = "member",
    security(("member_bearer" = [])),
    responses(
        (status = 200, description = "The member's commission account", body = CommissionAccountDto),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.0.tenant_id, member_id = %auth.0.member_id))]
pub async fn member_centre(
    State(state): State<AppState>,
    auth: MemberAuth,
) -> Result<Json<CommissionAccountDto>, ApiError> {
    Ok(Json(uc::figures(&state.app, &auth.0.tenant_id, auth.0.member_id).await?.into()))
}

/// My commissions (newest first) with each order's split.
#[utoipa::path(get, path = "/m/api/v1/distribution/commissions", tag = "member",
    security(("member_bearer" = [])),
    params(CursorQuery),
    responses(
        (status = 200, description = "The account and one page of commissions", body = CommissionList),
        (status = 400, description = "`invalid_query`", body = ErrorBody),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
        (status = 422, description = "`invalid_limit`, `invalid_before`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.0.tenant_id, member_id = %auth.0.member_id))]
pub async fn member_commissions(
    State(state): State<AppState>,
    auth: MemberAuth,
    query: ApiQuery<CursorQuery>,
) -> Result<Json<CommissionList>, ApiError> {
    Ok(Json(commission_page(&state, &auth.0.tenant_id, auth.0.member_id, query.0).await?))
}

/// Withdraws from my withdrawable commission (the tenant's minimum and fee apply); the amount
/// leaves the balance now and is paid to my cash balance once an admin approves.
#[utoipa::path(post, path = "/m/api/v1/distribution/withdrawals", tag = "member",
    security(("member_bearer" = [])),
    params(("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters")),
    request_body = WithdrawBody,
    responses(
        (status = 201, description = "Requested (or replayed)", body = WithdrawalDto),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `malformed_json`", body = ErrorBody),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
        (status = 409, description = "`no_commissions`, `below_withdrawal_minimum`, `insufficient_commission`, `nothing_to_pay_out`, `duplicate_withdrawal`, `idempotency_key_reused`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_amount`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.0.tenant_id, member_id = %auth.0.member_id))]
pub async fn member_withdraw(
    State(state): State<AppState>,
    auth: MemberAuth,
    key: IdempotencyHeader,
    body: ApiJson<WithdrawBody>,
) -> Result<(axum::http::StatusCode, Json<WithdrawalDto>), ApiError> {
    let amount = AmountFen::new(body.0.amount_fen).map_err(|e| ApiError::invalid("invalid_amount", e.to_string()))?;
    let (_, ctx) = auth.command(key.0);
    let record = uc::request_withdrawal(&state.app, &ctx, auth.0.member_id, amount).await?;
    Ok((axum::http::StatusCode::CREATED, Json(record.into())))
}

/// My withdrawals, newest first.
#[utoipa::path(get, path = "/m/api/v1/distribution/withdrawals", tag = "member",
    security(("member_bearer" = [])),
    params(CursorQuery),
    responses(
        (status = 200, description = "One page", body = WithdrawalList),
        (status = 400, description = "`invalid_query`", body = ErrorBody),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
        (status = 422, description = "`invalid_limit`, `invalid_before`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.0.tenant_id, member_id = %auth.0.member_id))]
pub async fn member_withdrawals(
    State(state): State<AppState>,
    auth: MemberAuth,
    query: ApiQuery<CursorQuery>,
) -> Result<Json<WithdrawalList>, ApiError> {
    let query = WithdrawalQuery {
        state: None,
        distributor: Some(auth.0.member_id),
        before: cursor(query.0.before)?,
        limit: page_limit(query.0.limit, WITHDRAWAL_PAGE_MAX)?,
    };
    Ok(Json(withdrawal_page(&state, &auth.0.tenant_id, query).await?))
}
