//! 1-yuan snatch: share purchases paid with the balance or WeChat Pay, the
//! draw when a period sells out, late payments refunded.
//!
//! **Purchase** (the member's request, its Idempotency-Key names the
//! purchase, `PurchaseId::for_request`): `ReserveShares` on the campaign
//! stream under the request's key (never more reserved + sold than N: one
//! decision on the stream), then
//! - balance: `ChargeCash` on the member ledger under a key of the purchase,
//!   then `ConfirmShares` under a key of the purchase. A refused charge
//!   (insufficient balance) releases the reservation; the key then answers
//!   `purchase_abandoned`, so a key never charges after its shares went back.
//! - WeChat Pay: a Pay order (`PurchaseId::pay_trade_no`, purpose
//!   `snatch_purchase`, expiring with the reservation) and its JS-SDK
//!   parameters; Pay's notification (or reconciliation) reaches
//!   [`record_wechat_payment`] through `pay_flows::credit_paid_order`, which
//!   confirms under the same purchase key (once, however often Pay says it).
//!
//! **Sell-out.** Each confirmation carries the open period's unsealed seed
//! and the next period's commitment (its seed sealed first, first writer
//! wins); the one that sells the period out records the draw and opens the
//! next period in the same append. The winner's points or coupon is issued
//! inline and again by the `campaign_prize` due work (migration 0024).
//!
//! **Late payments.** A payment for a purchase whose reservation is gone is
//! recorded (`SnatchPaymentArrivedLate`) and refunded once: a balance charge
//! by `RefundCharge` under a key of the purchase (inline and by the
//! `snatch_refund` due work, migration 0029), a Pay payment by the due work,
//! which asks Pay under the purchase's one refund number.
//!
//! **Expiry.** Due work `snatch_reservation_expiry` at the reservation's
//! expiry: a balance charge the request made (its key exists) is confirmed
//! now (the domain records it late: refunded), else the shares go back.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tracing::{info, instrument, warn};
use wxcm_domain::campaign::{
    AwardRef, CampaignCommand, CampaignError, CampaignEvent, CampaignId, CampaignKind, DrawSeed, PurchaseId,
    SharePayMethod, SharePayment, Status,
};
use wxcm_domain::member::{MemberCommand, MemberError, MemberEvent, Provenance};
use wxcm_domain::payment::{PaymentCommand, PaymentOrder, PaymentPurpose};
use wxcm_domain::{Actor, AmountFen, IdempotencyKey, MemberId, PayRef, Reference, TenantId};

use super::shakes::issue_award;
use super::{infra, run, seed_for, state_of, stored_seed, system_key, CampaignOpError};
use crate::mall::pay::StartPay;
use crate::members::MemberOpError;
use crate::pay_flows::{self, Applied, PayFlowError};
use crate::pay_port::{JsapiOrderRequest, JsapiPayParams, PayGateway, RefundRequest};
use crate::payments::{self, PaymentView};
use crate::{App, CommandContext};

/// Purchases a member's list returns (newest first).
pub const MEMBER_PURCHASES_MAX: u32 = 200;

/// A purchase as the member's list and answers show it.
#[derive(Debug, Clone, Serialize)]
pub struct PurchaseRecord {
    pub purchase_id: PurchaseId,
    pub campaign_id: CampaignId,
    pub member_id: MemberId,
    pub period_no: u32,
    pub quantity: u32,
    pub amount_fen: i64,
    pub method: SharePayMethod,
    /// `reserved`, `paid`, `released` or `refunded` (paid late).
    pub status: String,
    pub expires_at: DateTime<Utc>,
    pub reserved_at: DateTime<Utc>,
}

/// What a purchase answers: the purchase, and for WeChat Pay what the
/// member's page needs to pay.
#[derive(Debug, Clone, Serialize)]
pub struct PurchaseOutcome {
    pub purchase: PurchaseRecord,
    /// The period this purchase sold out was drawn (its number).
    pub drew_period: Option<u32>,
    pub payment: Option<PaymentView>,
    pub pay_params: Option<JsapiPayParams>,
}

/// A snatch as members and operators see it: its terms, the open period's
/// shares, and every period with its commitment (its seed and winner once drawn).
#[derive(Debug, Clone, Serialize)]
pub struct SnatchView {
    pub prize: wxcm_domain::campaign::Prize,
    pub shares_per_period: u32,
    pub shares_per_member_max: u32,
    pub shares_per_purchase_max: u32,
    pub share_price_fen: i64,
    /// The open period (none before the first opens or after the last draw).
    pub open_period: Option<u32>,
    pub shares_sold: u32,
    pub shares_reserved: u32,
    pub shares_left: u32,
    pub periods: Vec<SnatchPeriodView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SnatchPeriodView {
    pub period_no: u32,
    pub starts_at: DateTime<Utc>,
    /// The campaign's end while open; the draw's time once drawn.
    pub ends_at: DateTime<Utc>,
    pub commitment: wxcm_domain::campaign::SeedCommitment,
    /// `open` or `drawn`.
    pub state: &'static str,
    pub shares_sold: u32,
    pub buyers: u32,
    pub seed: Option<DrawSeed>,
    pub winner: Option<MemberId>,
}

impl SnatchView {
    pub fn of(state: &wxcm_domain::campaign::CampaignState) -> Option<Self> {
        let CampaignKind::Snatch(terms) = &state.terms.kind else { return None };
        let open = state.open_snatch_period().map(|(n, _)| n);
        let book = &state.snatch;
        let (sold, reserved) = if open.is_some() { (book.sold, book.reserved) } else { (0, 0) };
        Some(Self {
            prize: terms.prize.clone(),
            shares_per_period: terms.shares_per_period,
            shares_per_member_max: terms.shares_per_member_max,
            shares_per_purchase_max: terms.shares_per_purchase_max,
            share_price_fen: wxcm_domain::campaign::SHARE_PRICE_FEN,
            open_period: open,
            shares_sold: sold,
            shares_reserved: reserved,
            shares_left: if open.is_some() { terms.shares_per_period.saturating_sub(sold + reserved) } else { 0 },
            periods: state
                .periods
                .iter()
                .map(|(n, p)| {
                    let (st, seed, winner) = match &p.end {
                        Some(wxcm_domain::campaign::PeriodEnd::Drawn { seed, winners, .. }) => {
                            ("drawn", Some(*seed), winners.first().copied())
                        }
                        Some(wxcm_domain::campaign::PeriodEnd::Cancelled { .. }) => ("cancelled", None, None),
                        None => ("open", None, None),
                    };
                    SnatchPeriodView {
                        period_no: *n,
                        starts_at: p.starts_at,
                        ends_at: p.ends_at,
                        commitment: p.commitment,
                        state: st,
                        shares_sold: p.entries_total,
                        buyers: p.entrants,
                        seed,
                        winner,
                    }
                })
                .collect(),
        })
    }
}

/// How the member pays, with what WeChat Pay needs.
pub enum PayWith<'a> {
    Balance,
    WechatPay { pay: &'a dyn PayGateway, start: &'a StartPay },
}

fn key(step: &str, campaign_id: CampaignId, purchase_id: PurchaseId) -> Result<IdempotencyKey, CampaignOpError> {
    system_key(&["snatch", step, &campaign_id.to_string(), &purchase_id.to_string()])
}

fn text(s: &str) -> Result<Reference, CampaignOpError> {
    Reference::parse(s).map_err(infra)
}

fn pay_error(e: PayFlowError) -> CampaignOpError {
    match e {
        PayFlowError::Retry(detail) => CampaignOpError::Unavailable(detail),
        PayFlowError::KeyReused => CampaignOpError::IdempotencyMismatch,
        other => CampaignOpError::Pay(other.to_string()),
    }
}

/// Opens a snatch's first period when it runs and has none (the scheduler's
/// start, or the first purchase of a campaign started by hand). Returns the
/// events written.
pub async fn open_first_period(app: &App, tenant: &TenantId, campaign_id: CampaignId) -> Result<u32, CampaignOpError> {
    let shard = app.router.route(tenant)?;
    let state = state_of(&shard, tenant, campaign_id).await?;
    if !state.is_snatch() || !state.periods.is_empty() {
        return Ok(0);
    }
    let now = app.clock.now();
    if !matches!(state.phase_at(now), Status::Scheduled | Status::Ongoing) {
        return Ok(0);
    }
    let seed = seed_for(app, &shard, tenant, campaign_id, 1).await?;
    let key = system_key(&["campaign-open-period", &campaign_id.to_string(), "1"])?;
    let ctx = CommandContext::new(tenant.clone(), key, "system:snatch".into());
    let command = CampaignCommand::OpenPeriod {
        period_no: 1,
        starts_at: state.terms.starts_at,
        ends_at: state.terms.ends_at,
        commitment: seed.commitment(),
        beacon: None,
        actor: Actor::System { job: "snatch".into() },
    };
    let request = serde_json::json!({ "open_period": campaign_id, "period_no": 1 });
    let outcome = run(app, &ctx, campaign_id, command, &request).await?;
    info!(%campaign_id, "snatch period 1 opened");
    Ok(super::outcome_written(&outcome))
}

/// A member buys `quantity` shares of the open period.
#[instrument(skip_all, fields(tenant = %ctx.tenant_id, %campaign_id, %member_id, quantity))]
pub async fn purchase(
    app: &App,
    ctx: &CommandContext,
    campaign_id: CampaignId,
    member_id: MemberId,
    quantity: u32,
    pay_with: PayWith<'_>,
) -> Result<PurchaseOutcome, CampaignOpError> {
    let tenant = &ctx.tenant_id;
    let shard = app.router.route(tenant)?;
    let state = state_of(&shard, tenant, campaign_id).await?;
    let CampaignKind::Snatch(_) = &state.terms.kind else {
        return Err(CampaignOpError::Campaign(CampaignError::WrongKind("snatch")));
    };
    if state.periods.is_empty() && state.phase_at(app.clock.now()) == Status::Ongoing {
        open_first_period(app, tenant, campaign_id).await?;
    }
    let purchase_id = PurchaseId::for_request(tenant, campaign_id, member_id, &ctx.idempotency_key);
    if shard.event_log.find_idempotency(tenant, key("release", campaign_id, purchase_id)?.as_str()).await?.is_some() {
        return Err(CampaignOpError::PurchaseAbandoned);
    }
    let method = match pay_with {
        PayWith::Balance => SharePayMethod::Balance,
        PayWith::WechatPay { .. } => SharePayMethod::WechatPay,
    };
    let (member, _) = shard.members.load(tenant, &member_id.to_string()).await?;
    let command = CampaignCommand::ReserveShares {
        purchase_id,
        member_id,
        quantity,
        method,
        card_member: member.registration.is_some(),
    };
    let request = serde_json::json!({ "snatch_purchase": campaign_id, "member": member_id, "quantity": quantity,
        "method": method });
    run(app, ctx, campaign_id, command, &request).await?;
    let reserved = purchase_record(app, tenant, purchase_id).await?;
    let amount_fen = AmountFen::new(reserved.amount_fen).map_err(infra)?;
    match pay_with {
        PayWith::Balance => {
            let payment = match charge_balance(app, tenant, campaign_id, purchase_id, member_id, amount_fen).await {
                Ok(payment) => payment,
                Err(e @ (CampaignOpError::InsufficientBalance { .. } | CampaignOpError::IdempotencyMismatch)) => {
                    release(app, tenant, campaign_id, purchase_id).await?;
                    return Err(e);
                }
                Err(e) => return Err(e),
            };
            let drew_period = confirm(app, tenant, campaign_id, purchase_id, member_id, payment).await?;
            let purchase = purchase_record(app, tenant, purchase_id).await?;
            if purchase.status == "refunded" {
                return Err(CampaignOpError::PaidTooLate);
            }
            Ok(PurchaseOutcome { purchase, drew_period, payment: None, pay_params: None })
        }
        PayWith::WechatPay { pay, start } => {
            let (payment, pay_params) = start_wechat_pay(app, pay, tenant, &reserved, amount_fen, start).await?;
            Ok(PurchaseOutcome {
                purchase: reserved,
                drew_period: None,
                payment: Some(payment),
                pay_params: Some(pay_params),
            })
        }
    }
}

/// The purchase as recorded (`snatch_purchases`, written with its reservation).
pub async fn purchase_record(
    app: &App,
    tenant: &TenantId,
    purchase_id: PurchaseId,
) -> Result<PurchaseRecord, CampaignOpError> {
    let shard = app.router.route(tenant)?;
    shard.campaign_store.purchase(tenant, purchase_id).await?.ok_or_else(|| infra("a purchase without its record"))
}

/// The member's purchases in a campaign, newest first.
pub async fn member_purchases(
    app: &App,
    tenant: &TenantId,
    campaign_id: CampaignId,
    member_id: MemberId,
) -> Result<Vec<PurchaseRecord>, CampaignOpError> {
    let shard = app.router.route(tenant)?;
    let state = state_of(&shard, tenant, campaign_id).await?;
    if !state.is_snatch() {
        return Err(CampaignOpError::Campaign(CampaignError::WrongKind("snatch")));
    }
    Ok(shard.campaign_store.member_purchases(tenant, campaign_id, member_id, MEMBER_PURCHASES_MAX).await?)
}

async fn charge_balance(
    app: &App,
    tenant: &TenantId,
    campaign_id: CampaignId,
    purchase_id: PurchaseId,
    member_id: MemberId,
    amount_fen: AmountFen,
) -> Result<SharePayment, CampaignOpError> {
    let key = key("charge", campaign_id, purchase_id)?;
    let actor = Actor::Member { member_id };
    let ctx = CommandContext::new(tenant.clone(), key.clone(), actor.label());
    let command = MemberCommand::ChargeCash {
        amount_fen,
        provenance: Provenance {
            actor,
            reason: text("snatch shares")?,
            reference: Some(text(&format!("campaign:{campaign_id}:purchase:{purchase_id}"))?),
            idempotency_key: key,
        },
    };
    let request = serde_json::json!({ "snatch_charge": purchase_id, "amount_fen": amount_fen });
    let outcome =
        crate::members::execute(app, tenant, member_id, command, &request, &ctx).await.map_err(member_error)?;
    let charge_sequence = outcome
        .events
        .iter()
        .find(|e| matches!(e.event, MemberEvent::CashCharged { .. }))
        .map(|e| e.sequence)
        .ok_or_else(|| infra("a balance charge without its event"))?;
    Ok(SharePayment::Balance { amount_fen, charge_sequence })
}

fn member_error(e: MemberOpError) -> CampaignOpError {
    match e {
        MemberOpError::Rejected(MemberError::InsufficientBalance { balance_fen, requested_fen }) => {
            CampaignOpError::InsufficientBalance { balance_fen, needed_fen: requested_fen }
        }
        MemberOpError::IdempotencyMismatch => CampaignOpError::IdempotencyMismatch,
        MemberOpError::Unavailable(e) => CampaignOpError::Unavailable(e),
        MemberOpError::Contention => CampaignOpError::Contention,
        other => infra(other),
    }
}

/// Gives a reservation's shares back (a refused payment or its expiry).
async fn release(
    app: &App,
    tenant: &TenantId,
    campaign_id: CampaignId,
    purchase_id: PurchaseId,
) -> Result<u32, CampaignOpError> {
    let ctx = CommandContext::new(tenant.clone(), key("release", campaign_id, purchase_id)?, "system:snatch".into());
    let request = serde_json::json!({ "snatch_release": purchase_id });
    let outcome = run(app, &ctx, campaign_id, CampaignCommand::ReleaseShares { purchase_id }, &request).await?;
    Ok(super::outcome_written(&outcome))
}

/// Records a payment on the campaign (once, by the purchase's key): shares
/// confirmed (and the draw when they sell the period out) or the payment
/// late, refunded. Returns the period drawn, if this drew one.
async fn confirm(
    app: &App,
    tenant: &TenantId,
    campaign_id: CampaignId,
    purchase_id: PurchaseId,
    member_id: MemberId,
    payment: SharePayment,
) -> Result<Option<u32>, CampaignOpError> {
    let shard = app.router.route(tenant)?;
    let state = state_of(&shard, tenant, campaign_id).await?;
    // The open period's seed and the next one's commitment, used only when
    // this payment sells the period out (a late one needs neither).
    let (seed, next) = match state.open_snatch_period() {
        Some((n, _)) => (
            stored_seed(app, &shard, tenant, campaign_id, n)
                .await?
                .ok_or_else(|| infra(format!("snatch period {n} has no stored seed")))?,
            seed_for(app, &shard, tenant, campaign_id, n + 1).await?.commitment(),
        ),
        None => {
            let unused = DrawSeed::from_bytes([0; 32]);
            (unused, unused.commitment())
        }
    };
    let ctx = CommandContext::new(tenant.clone(), key("confirm", campaign_id, purchase_id)?, "system:snatch".into());
    let request = serde_json::json!({ "snatch_confirm": purchase_id, "member": member_id, "payment": &payment });
    let command = CampaignCommand::ConfirmShares { purchase_id, member_id, payment, seed, next_commitment: next };
    let outcome = run(app, &ctx, campaign_id, command, &request).await?;
    let mut drew = None;
    for committed in &outcome.events {
        match &committed.event {
            CampaignEvent::CampaignPeriodDrawn { period_no, winners, .. } => {
                info!(%campaign_id, period_no, winners = winners.len(), "snatch period sold out and drawn");
                for w in winners {
                    let award = AwardRef::Period { period_no: *period_no, rank: w.rank };
                    issue_award(app, tenant, campaign_id, w.member_id, &w.prize, award).await?;
                }
                drew = Some(*period_no);
            }
            CampaignEvent::SnatchSharesConfirmed { payment: SharePayment::WechatPay { amount_fen, .. }, .. } => {
                count_paid(app, tenant, campaign_id, purchase_id, member_id, *amount_fen).await?;
            }
            CampaignEvent::SnatchPaymentArrivedLate { payment, .. } => {
                warn!(%campaign_id, %purchase_id, "a snatch payment arrived after its reservation ended; it is refunded");
                if let SharePayment::Balance { amount_fen, charge_sequence } = payment {
                    refund_balance(app, tenant, campaign_id, purchase_id, member_id, *amount_fen, *charge_sequence)
                        .await?;
                }
            }
            _ => {}
        }
    }
    Ok(drew)
}

async fn refund_balance(
    app: &App,
    tenant: &TenantId,
    campaign_id: CampaignId,
    purchase_id: PurchaseId,
    member_id: MemberId,
    amount_fen: AmountFen,
    charge_sequence: u64,
) -> Result<(), CampaignOpError> {
    let key = key("refund", campaign_id, purchase_id)?;
    let actor = Actor::System { job: "snatch".into() };
    let ctx = CommandContext::new(tenant.clone(), key.clone(), actor.label());
    let command = MemberCommand::RefundCharge {
        charge_sequence,
        amount_fen,
        provenance: Provenance {
            actor,
            reason: text("snatch refund")?,
            reference: Some(text(&format!("campaign:{campaign_id}:purchase:{purchase_id}"))?),
            idempotency_key: key,
        },
    };
    let request = serde_json::json!({ "snatch_refund": purchase_id, "amount_fen": amount_fen });
    crate::members::execute(app, tenant, member_id, command, &request, &ctx).await.map_err(member_error)?;
    info!(%campaign_id, %purchase_id, amount_fen = amount_fen.get(), "late snatch payment refunded to the balance");
    Ok(())
}

async fn start_wechat_pay(
    app: &App,
    pay: &dyn PayGateway,
    tenant: &TenantId,
    purchase: &PurchaseRecord,
    amount_fen: AmountFen,
    start: &StartPay,
) -> Result<(PaymentView, JsapiPayParams), CampaignOpError> {
    let merchant = pay_flows::merchant_for(app, tenant, start.appid.as_str()).await.map_err(pay_error)?;
    let api = pay_flows::default_api(&merchant);
    let trade_no = purchase.purchase_id.pay_trade_no();
    let key = key("wechat-pay-order", purchase.campaign_id, purchase.purchase_id)?;
    let reference = format!("campaign:{}:purchase:{}", purchase.campaign_id, purchase.purchase_id);
    let command = PaymentCommand::Create {
        order_id: trade_no.clone(),
        tenant_id: tenant.clone(),
        member_id: start.member_id,
        openid: start.openid.clone(),
        appid: start.appid.clone(),
        mch_id: PayRef::parse(&merchant.mch_id).map_err(|e| infra(format!("mch_id: {e}")))?,
        purpose: PaymentPurpose::SnatchPurchase,
        amount_fen,
        api_version: api,
        expires_at: purchase.expires_at,
        provenance: Provenance {
            actor: Actor::Member { member_id: start.member_id },
            reason: text("snatch shares")?,
            reference: Some(text(&reference)?),
            idempotency_key: key.clone(),
        },
    };
    let identity = (purchase.purchase_id, amount_fen.get());
    let ctx = CommandContext::new(tenant.clone(), key, Actor::Member { member_id: start.member_id }.label());
    payments::execute(app, tenant, &trade_no, command, &identity, &ctx)
        .await
        .map_err(|e| pay_error(PayFlowError::from(e)))?;
    let payment = payments::get(app, tenant, &trade_no).await.map_err(|e| pay_error(PayFlowError::from(e)))?;
    let jsapi = JsapiOrderRequest {
        api: pay_flows::api_of(payment.api_version),
        out_trade_no: trade_no.to_string(),
        description: "snatch shares".into(),
        amount_fen: payment.amount_fen,
        payer_openid: payment.openid.to_string(),
        notify_url: pay_flows::notify_url(&start.notify_base_url, payment.api_version, &payment.appid),
        expires_at: payment.expires_at,
        client_ip: start.client_ip.clone(),
    };
    let params =
        pay.create_jsapi_order(&merchant, &jsapi).await.map_err(|e| pay_error(pay_flows::pay_port_error(e)))?;
    Ok((payment, params))
}

/// Records a paid Pay order of purpose `SnatchPurchase` on its campaign
/// (once): the shares confirmed, or the payment late and refunded.
pub async fn record_wechat_payment(
    app: &App,
    tenant: &TenantId,
    payment: &PaymentOrder,
) -> Result<Applied, CampaignOpError> {
    let (Some(details), Some(paid)) = (payment.details(), payment.payment()) else {
        return Err(infra("the payment order is not paid"));
    };
    let purchase_id = PurchaseId::from_pay_trade_no(&details.order_id).ok_or(CampaignOpError::NotFound)?;
    let purchase = purchase_record(app, tenant, purchase_id).await?;
    let shard = app.router.route(tenant)?;
    let confirm_key = key("confirm", purchase.campaign_id, purchase_id)?;
    if let Some(record) = shard.event_log.find_idempotency(tenant, confirm_key.as_str()).await? {
        // Applied before; the count in the member's total paid may not have
        // followed (a crash in between): it is keyed, so counting again is safe.
        let confirmed = shard
            .event_log
            .read_range(
                &record.aggregate_type,
                &record.aggregate_id,
                record.first_sequence,
                record.last_sequence,
                CONFIRM_EVENTS_MAX,
            )
            .await?
            .iter()
            .any(|e| e.event_type == "SnatchSharesConfirmed");
        if confirmed {
            count_paid(app, tenant, purchase.campaign_id, purchase_id, details.member_id, details.amount_fen).await?;
        }
        return Ok(Applied::AlreadyApplied);
    }
    let share_payment =
        SharePayment::WechatPay { amount_fen: details.amount_fen, transaction_id: paid.transaction_id.clone() };
    confirm(app, tenant, purchase.campaign_id, purchase_id, details.member_id, share_payment).await?;
    Ok(Applied::Applied)
}

/// The events one confirmation appends: the confirmation, a draw and its
/// winners' records, the next period's opening.
const CONFIRM_EVENTS_MAX: u32 = 16;

fn purchase_reference(campaign_id: CampaignId, purchase_id: PurchaseId) -> Result<Reference, CampaignOpError> {
    text(&format!("campaign:{campaign_id}:purchase:{purchase_id}"))
}

/// Shares paid by WeChat Pay and confirmed, counted once in the member's
/// total paid (which the card level rule reads; a balance payment is counted
/// by its charge). A late payment, refunded and never honoured, is not counted.
async fn count_paid(
    app: &App,
    tenant: &TenantId,
    campaign_id: CampaignId,
    purchase_id: PurchaseId,
    member_id: MemberId,
    amount_fen: AmountFen,
) -> Result<(), CampaignOpError> {
    let key = key("paid-total", campaign_id, purchase_id)?;
    let actor = Actor::System { job: "snatch".into() };
    let ctx = CommandContext::new(tenant.clone(), key.clone(), actor.label());
    let command = MemberCommand::RecordPurchasePaid {
        amount_fen,
        payment: purchase_reference(campaign_id, purchase_id)?,
        provenance: Provenance {
            actor,
            reason: text("snatch shares paid")?,
            reference: Some(purchase_reference(campaign_id, purchase_id)?),
            idempotency_key: key,
        },
    };
    let request = serde_json::json!({ "snatch_paid_total": purchase_id, "amount_fen": amount_fen });
    crate::members::execute(app, tenant, member_id, command, &request, &ctx).await.map_err(member_error)?;
    Ok(())
}

/// A counted Pay payment refunded (its period cancelled): taken off the
/// member's total paid once, after making sure it was counted.
async fn count_refunded(
    app: &App,
    tenant: &TenantId,
    campaign_id: CampaignId,
    purchase_id: PurchaseId,
    member_id: MemberId,
    amount_fen: AmountFen,
) -> Result<(), CampaignOpError> {
    count_paid(app, tenant, campaign_id, purchase_id, member_id, amount_fen).await?;
    let key = key("refund-total", campaign_id, purchase_id)?;
    let actor = Actor::System { job: "snatch".into() };
    let ctx = CommandContext::new(tenant.clone(), key.clone(), actor.label());
    let command = MemberCommand::RecordPurchaseRefunded {
        amount_fen,
        payment: purchase_reference(campaign_id, purchase_id)?,
        provenance: Provenance {
            actor,
            reason: text("snatch period cancelled")?,
            reference: Some(purchase_reference(campaign_id, purchase_id)?),
            idempotency_key: key,
        },
    };
    let request = serde_json::json!({ "snatch_refund_total": purchase_id, "amount_fen": amount_fen });
    crate::members::execute(app, tenant, member_id, command, &request, &ctx).await.map_err(member_error)?;
    Ok(())
}

fn parse_purchase_item(aggregate_id: &str) -> Option<(CampaignId, PurchaseId)> {
    let (campaign, purchase) = aggregate_id.split_once('/')?;
    Some((CampaignId::parse(campaign).ok()?, PurchaseId::parse(purchase).ok()?))
}

/// Due work `snatch_reservation_expiry`, aggregate id `<campaign>/<purchase>`.
pub async fn due_reservation_expiry(app: &App, tenant: &TenantId, aggregate_id: &str) -> Result<u32, CampaignOpError> {
    let (campaign_id, purchase_id) = parse_purchase_item(aggregate_id).ok_or_else(|| {
        infra(format!("snatch_reservation_expiry item {aggregate_id:?} is not <campaign>/<purchase>"))
    })?;
    let purchase = purchase_record(app, tenant, purchase_id).await?;
    if purchase.status != "reserved" {
        return Ok(0);
    }
    let shard = app.router.route(tenant)?;
    // A balance charge whose request died before recording it: recorded now
    // (late, since the reservation expired) and refunded.
    let charge = key("charge", campaign_id, purchase_id)?;
    if purchase.method == SharePayMethod::Balance
        && shard.event_log.find_idempotency(tenant, charge.as_str()).await?.is_some()
    {
        let amount_fen = AmountFen::new(purchase.amount_fen).map_err(infra)?;
        let payment = charge_balance(app, tenant, campaign_id, purchase_id, purchase.member_id, amount_fen).await?;
        confirm(app, tenant, campaign_id, purchase_id, purchase.member_id, payment).await?;
        return Ok(1);
    }
    release(app, tenant, campaign_id, purchase_id).await
}

/// Due work `snatch_refund`, aggregate id
/// `<campaign>/<purchase>/<member>/<balance|wechat_pay>/<amount_fen>/<charge_sequence|0>`
/// (written with `SnatchPaymentArrivedLate`): the refund, once.
pub async fn due_refund(
    app: &App,
    tenant: &TenantId,
    aggregate_id: &str,
    pay: Option<(&dyn PayGateway, &str)>,
) -> Result<u32, CampaignOpError> {
    let bad = || infra(format!("snatch_refund item {aggregate_id:?} is malformed"));
    let parts: Vec<&str> = aggregate_id.split('/').collect();
    let [campaign, purchase, member, method, amount, sequence] = parts.as_slice() else { return Err(bad()) };
    let campaign_id = CampaignId::parse(campaign).map_err(|_| bad())?;
    let purchase_id = PurchaseId::parse(purchase).map_err(|_| bad())?;
    let member_id = MemberId::parse(member).map_err(|_| bad())?;
    let amount_fen = AmountFen::new(amount.parse().map_err(|_| bad())?).map_err(|_| bad())?;
    match *method {
        "balance" => {
            let charge_sequence: u64 = sequence.parse().map_err(|_| bad())?;
            refund_balance(app, tenant, campaign_id, purchase_id, member_id, amount_fen, charge_sequence).await?;
            Ok(1)
        }
        "wechat_pay" => {
            let Some((pay, notify_base_url)) = pay else {
                return Err(CampaignOpError::Unavailable("no WeChat Pay client to ask for a refund".into()));
            };
            let trade_no = purchase_id.pay_trade_no();
            let refund_no = purchase_id.pay_refund_no().ok_or_else(bad)?;
            let payment = payments::get(app, tenant, &trade_no).await.map_err(|e| pay_error(PayFlowError::from(e)))?;
            let merchant = pay_flows::merchant_for(app, tenant, payment.appid.as_str()).await.map_err(pay_error)?;
            let refund = RefundRequest {
                api: pay_flows::api_of(payment.api_version),
                out_trade_no: trade_no.to_string(),
                out_refund_no: refund_no.to_string(),
                total_fen: payment.amount_fen,
                refund_fen: amount_fen.get(),
                notify_url: pay_flows::refund_notify_url(notify_base_url, payment.api_version, &payment.appid),
            };
            pay.refund(&merchant, &refund).await.map_err(|e| pay_error(pay_flows::pay_port_error(e)))?;
            info!(%campaign_id, %purchase_id, "late snatch payment refund asked of WeChat Pay");
            Ok(1)
        }
        _ => Err(bad()),
    }
}

/// Due work `campaign_period_draw` of a snatch (the trigger writes it at each
/// period's end, the campaign's end): a drawn period's prizes again; a period
/// not sold out by the campaign's end is cancelled (`SnatchPeriodCancelled`)
/// and every paid purchase refunded once (balance inline and by the
/// `snatch_refund` due work, Pay by the due work).
pub(super) async fn due_period_end(
    app: &App,
    tenant: &TenantId,
    campaign_id: CampaignId,
    period_no: u32,
) -> Result<u32, CampaignOpError> {
    let shard = app.router.route(tenant)?;
    let state = state_of(&shard, tenant, campaign_id).await?;
    let Some(period) = state.periods.get(&period_no) else { return Ok(0) };
    match &period.end {
        Some(wxcm_domain::campaign::PeriodEnd::Drawn { winners, .. }) => {
            let CampaignKind::Snatch(terms) = &state.terms.kind else { return Ok(0) };
            for (rank, member_id) in (1u32..).zip(winners) {
                let award = AwardRef::Period { period_no, rank };
                issue_award(app, tenant, campaign_id, *member_id, &terms.prize, award).await?;
            }
        }
        Some(wxcm_domain::campaign::PeriodEnd::Cancelled { .. }) => {}
        None => {
            // Not sold out by the campaign's end: never drawn, every paid share refunded.
            let key = system_key(&["snatch-cancel", &campaign_id.to_string(), &period_no.to_string()])?;
            let ctx = CommandContext::new(tenant.clone(), key, "system:scheduler".into());
            let actor = Actor::System { job: "scheduler".into() };
            let request = serde_json::json!({ "cancel_snatch_period": campaign_id, "period_no": period_no });
            let outcome =
                run(app, &ctx, campaign_id, CampaignCommand::CancelPeriod { period_no, actor }, &request).await?;
            for committed in &outcome.events {
                if let CampaignEvent::SnatchPeriodCancelled { refunds, .. } = &committed.event {
                    warn!(%campaign_id, period_no, refunds = refunds.len(), "a snatch period not sold out at the campaign's end is cancelled");
                    for r in refunds {
                        match &r.payment {
                            SharePayment::Balance { amount_fen, charge_sequence } => {
                                refund_balance(
                                    app,
                                    tenant,
                                    campaign_id,
                                    r.purchase_id,
                                    r.member_id,
                                    *amount_fen,
                                    *charge_sequence,
                                )
                                .await?;
                            }
                            // Pay refunds it by the `snatch_refund` due work; the
                            // member's total paid drops now, once.
                            SharePayment::WechatPay { amount_fen, .. } => {
                                count_refunded(app, tenant, campaign_id, r.purchase_id, r.member_id, *amount_fen)
                                    .await?;
                            }
                        }
                    }
                }
            }
            return Ok(super::outcome_written(&outcome));
        }
    }
    Ok(0)
}
