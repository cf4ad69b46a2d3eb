//! 1-yuan snatch routes: admin creation (`POST /admin/api/v1/snatch-campaigns`;
//! schedule, start, end and hand-over are the campaigns' own routes) and the
//! member's share purchases (`/m/api/v1/campaigns/{id}/share-purchases`) and
//! periods (`/m/api/v1/campaigns/{id}/snatch`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::instrument;
use utoipa::ToSchema;
use wxcm_commands::campaigns::snatch::{self, PayWith, PurchaseOutcome, PurchaseRecord, SnatchView};
use wxcm_commands::campaigns::{self, CampaignOpError};
use wxcm_domain::campaign::{
    CampaignError, CampaignId, CampaignKind, CampaignTerms, CampaignText, Limits, SharePayMethod, SnatchTerms,
    SHARES_PER_PERIOD_MAX, SHARES_PER_PURCHASE_MAX,
};

use super::{CampaignDto, PrizeDto};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiPath, Authorized, Correlation, IdempotencyHeader};
use crate::permissions::perm;
use crate::resources::member_api::MemberAuth;
use crate::state::AppState;

/// A 1-yuan snatch: each period sells `shares_per_period` shares of 1 yuan;
/// when the last is paid one share wins the prize (chance proportional to
/// shares held) and the next period opens, until the campaign ends.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SnatchBody {
    #[schema(value_type = crate::doc::ShortText)]
    pub name: String,
    pub starts_at: DateTime<Utc>,
    /// After `starts_at`, at most 366 days later.
    pub ends_at: DateTime<Utc>,
    /// Only card-holding members may buy.
    #[serde(default)]
    pub members_only: bool,
    /// What each period's winner gets (points, a coupon or a physical item; not thanks).
    pub prize: PrizeDto,
    /// N: shares of 1 yuan (100 fen) each period sells.
    #[schema(minimum = 1, maximum = 100_000)]
    pub shares_per_period: i64,
    /// Shares one member may hold (reserved or paid) in a period, at most N.
    #[schema(minimum = 1, maximum = 100_000)]
    pub shares_per_member_max: i64,
    /// Shares one purchase may ask for.
    #[schema(minimum = 1, maximum = 10_000)]
    pub shares_per_purchase_max: i64,
}

fn bounded(value: i64, max: u32, code: &'static str, what: &str) -> Result<u32, ApiError> {
    match u32::try_from(value) {
        Ok(v) if (1..=max).contains(&v) => Ok(v),
        _ => Err(ApiError::invalid(code, format!("{what} must be 1..={max}"))),
    }
}

impl SnatchBody {
    pub fn validate(&self) -> Result<CampaignTerms, ApiError> {
        let prize = self.prize.validate()?;
        if prize.is_thanks() {
            return Err(ApiError::invalid("invalid_prize", "a snatch's prize is not thanks"));
        }
        let shares = bounded(self.shares_per_period, SHARES_PER_PERIOD_MAX, "invalid_shares", "shares_per_period")?;
        let terms = CampaignTerms {
            name: CampaignText::parse(&self.name).map_err(|e| ApiError::invalid("invalid_text", e.to_string()))?,
            starts_at: self.starts_at,
            ends_at: self.ends_at,
            members_only: self.members_only,
            limits: Limits::default(),
            kind: CampaignKind::Snatch(SnatchTerms {
                prize,
                shares_per_period: shares,
                shares_per_member_max: bounded(
                    self.shares_per_member_max,
                    shares,
                    "invalid_shares",
                    "shares_per_member_max",
                )?,
                shares_per_purchase_max: bounded(
                    self.shares_per_purchase_max,
                    SHARES_PER_PURCHASE_MAX,
                    "invalid_shares",
                    "shares_per_purchase_max",
                )?,
            }),
        };
        terms.check().map_err(|e| ApiError::invalid("invalid_terms", e.to_string()))?;
        Ok(terms)
    }
}

/// Creates a 1-yuan snatch as a draft. Once scheduled and started, period 1
/// opens (committing to its own sealed seed); each sell-out draws and opens the next.
///
/// Rules between fields (422 otherwise): `ends_at` after `starts_at`, at most
/// 366 days later (`invalid_terms`); `shares_per_member_max` at most
/// `shares_per_period` (`invalid_shares`).
#[utoipa::path(post, path = "/admin/api/v1/snatch-campaigns", tag = "campaigns",
    security(("bearer" = [])),
    params(("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters; the same key is the same campaign")),
    request_body = SnatchBody,
    responses(
        (status = 201, description = "Created (or replayed)", body = CampaignDto),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`template_not_found` (a coupon prize names no template of this tenant)", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_text`, `invalid_prize`, `invalid_shares`, `invalid_terms`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username))]
pub async fn create_snatch_campaign(
    State(state): State<AppState>,
    auth: Authorized<perm::CampaignManage>,
    key: IdempotencyHeader,
    correlation: Correlation,
    body: ApiJson<SnatchBody>,
) -> Result<(StatusCode, Json<CampaignDto>), ApiError> {
    let terms = body.0.validate()?;
    let ctx = auth.context(key.0, correlation);
    let view = campaigns::create(&state.app, &ctx, terms, auth.actor()).await?;
    Ok((StatusCode::CREATED, Json(view.into())))
}

/// How a purchase is paid.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SharePayWithDto {
    Balance,
    WechatPay,
}

/// A purchase of shares of the open period.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SharePurchaseBody {
    /// Shares to buy: 1..=the campaign's `shares_per_purchase_max` (at most 10,000).
    #[schema(minimum = 1, maximum = 10_000)]
    pub quantity: i64,
    pub pay_with: SharePayWithDto,
}

/// One purchase of shares.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SharePurchaseDto {
    pub purchase_id: uuid::Uuid,
    pub campaign_id: uuid::Uuid,
    pub period_no: u32,
    pub quantity: u32,
    pub amount_fen: i64,
    /// `balance` or `wechat_pay`.
    pub pay_with: String,
    /// `reserved` (awaiting payment until `expires_at`), `paid`, `released`
    /// (unpaid in time: the shares went back) or `refunded` (paid after the
    /// reservation ended: refunded, no shares).
    pub status: String,
    pub expires_at: DateTime<Utc>,
    pub reserved_at: DateTime<Utc>,
}

impl From<PurchaseRecord> for SharePurchaseDto {
    fn from(p: PurchaseRecord) -> Self {
        Self {
            purchase_id: p.purchase_id.as_uuid(),
            campaign_id: p.campaign_id.as_uuid(),
            period_no: p.period_no,
            quantity: p.quantity,
            amount_fen: p.amount_fen,
            pay_with: match p.method {
                SharePayMethod::Balance => "balance",
                SharePayMethod::WechatPay => "wechat_pay",
            }
            .to_owned(),
            status: p.status,
            expires_at: p.expires_at,
            reserved_at: p.reserved_at,
        }
    }
}

/// What a purchase answers: the purchase; for WeChat Pay its Pay order and
/// the JSAPI parameters (the shares are paid when Pay's notification arrives).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SharePurchaseResult {
    pub purchase: SharePurchaseDto,
    /// The period this purchase sold out, drawn now.
    pub drew_period: Option<u32>,
    #[schema(value_type = Option<crate::resources::payments::PaymentOrderDoc>)]
    pub payment: Option<serde_json::Value>,
    #[schema(value_type = Option<crate::resources::member_api::JsapiPayParamsDoc>)]
    pub pay_params: Option<serde_json::Value>,
}

impl SharePurchaseResult {
    fn of(o: PurchaseOutcome) -> Result<Self, ApiError> {
        Ok(Self {
            purchase: o.purchase.into(),
            drew_period: o.drew_period,
            payment: o.payment.map(serde_json::to_value).transpose().map_err(internal)?,
            pay_params: o.pay_params.map(serde_json::to_value).transpose().map_err(internal)?,
        })
    }
}

fn internal(e: serde_json::Error) -> ApiError {
    ApiError::internal("snatch purchase", &e.to_string())
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SharePurchaseList {
    pub purchases: Vec<SharePurchaseDto>,
}

/// One period of a snatch.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SnatchPeriodDto {
    pub period_no: u32,
    pub starts_at: DateTime<Utc>,
    /// The campaign's end while open; the draw's time once drawn.
    pub ends_at: DateTime<Utc>,
    /// SHA-256 of the period's seed (64 hex digits), published when it opened.
    pub commitment: String,
    /// `open` or `drawn`.
    pub state: String,
    pub shares_sold: u32,
    pub buyers: u32,
    /// The seed, once drawn: SHA-256 of it is `commitment`.
    pub seed: Option<String>,
    pub winner_member_id: Option<uuid::Uuid>,
}

/// A snatch's shares and periods.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SnatchDto {
    pub prize: PrizeDto,
    pub shares_per_period: u32,
    pub shares_per_member_max: u32,
    pub shares_per_purchase_max: u32,
    pub share_price_fen: i64,
    pub open_period: Option<u32>,
    pub shares_sold: u32,
    pub shares_reserved: u32,
    pub shares_left: u32,
    pub periods: Vec<SnatchPeriodDto>,
}

impl From<SnatchView> for SnatchDto {
    fn from(v: SnatchView) -> Self {
        Self {
            prize: (&v.prize).into(),
            shares_per_period: v.shares_per_period,
            shares_per_member_max: v.shares_per_member_max,
            shares_per_purchase_max: v.shares_per_purchase_max,
            share_price_fen: v.share_price_fen,
            open_period: v.open_period,
            shares_sold: v.shares_sold,
            shares_reserved: v.shares_reserved,
            shares_left: v.shares_left,
            periods: v
                .periods
                .into_iter()
                .map(|p| SnatchPeriodDto {
                    period_no: p.period_no,
                    starts_at: p.starts_at,
                    ends_at: p.ends_at,
                    commitment: p.commitment.to_hex(),
                    state: p.state.to_owned(),
                    shares_sold: p.shares_sold,
                    buyers: p.buyers,
                    seed: p.seed.map(|s| s.to_hex()),
                    winner_member_id: p.winner.map(|m| m.as_uuid()),
                })
                .collect(),
        }
    }
}

/// Buys shares of the open period. With the balance the shares are paid at
/// once (a purchase that sells the period out draws it and opens the next);
/// with WeChat Pay they are reserved for 5 minutes and the answer holds the
/// JSAPI parameters: Pay's notification pays them, and a payment arriving
/// after the reservation ended is refunded, never honoured.
#[utoipa::path(post, path = "/m/api/v1/campaigns/{campaign_id}/share-purchases", tag = "member",
    security(("member_bearer" = [])),
    params(
        ("campaign_id" = uuid::Uuid, Path),
        ("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters; the same key is the same purchase"),
    ),
    request_body = SharePurchaseBody,
    responses(
        (status = 201, description = "Bought (balance) or reserved awaiting WeChat Pay (or replayed)", body = SharePurchaseResult),
        (status = 400, description = "`invalid_campaign_id`, `idempotency_key_missing`, `idempotency_key_invalid`, `malformed_json`", body = ErrorBody),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
        (status = 404, description = "`campaign_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`, `not_ongoing`, `members_only`, `period_limit_reached` (the member's shares per period), `shares_left` (fewer shares left than asked), `wrong_kind`, `insufficient_balance` (nothing bought), `purchase_abandoned` (this key's purchase was refused and its shares released), `paid_too_late` (refunded), `member_api_unavailable`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_quantity`, `pay_refused`", body = ErrorBody),
        (status = 503, description = "`contention`, `unavailable`", body = ErrorBody),
    ))]
pub async fn member_purchase(
    State(state): State<AppState>,
    auth: MemberAuth,
    key: IdempotencyHeader,
    id: ApiPath<CampaignId>,
    crate::extract::ClientIp(peer): crate::extract::ClientIp,
    body: ApiJson<SharePurchaseBody>,
) -> Result<(StatusCode, Json<SharePurchaseResult>), ApiError> {
    let quantity = bounded(body.0.quantity, SHARES_PER_PURCHASE_MAX, "invalid_quantity", "quantity")?;
    let (_, ctx) = auth.command(key.0);
    let session = &auth.0;
    let outcome = match body.0.pay_with {
        SharePayWithDto::Balance => {
            snatch::purchase(&state.app, &ctx, id.0, session.member_id, quantity, PayWith::Balance).await?
        }
        SharePayWithDto::WechatPay => {
            let pay = state.member.pay.clone().ok_or_else(crate::resources::member_api::unavailable)?;
            let start = wxcm_commands::mall::pay::StartPay {
                member_id: session.member_id,
                appid: session.appid.clone(),
                openid: session.openid.clone(),
                notify_base_url: state.member.notify_base_url.clone(),
                client_ip: peer.map_or_else(|| "127.0.0.1".to_owned(), |ip| ip.to_string()),
            };
            let pay_with = PayWith::WechatPay { pay: pay.as_ref(), start: &start };
            snatch::purchase(&state.app, &ctx, id.0, session.member_id, quantity, pay_with).await?
        }
    };
    Ok((StatusCode::CREATED, Json(SharePurchaseResult::of(outcome)?)))
}

/// The member's own purchases in the snatch, newest first (at most 200).
#[utoipa::path(get, path = "/m/api/v1/campaigns/{campaign_id}/share-purchases", tag = "member",
    security(("member_bearer" = [])),
    params(("campaign_id" = uuid::Uuid, Path)),
    responses(
        (status = 200, description = "The member's purchases", body = SharePurchaseList),
        (status = 400, description = "`invalid_campaign_id`", body = ErrorBody),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
        (status = 404, description = "`campaign_not_found`", body = ErrorBody),
        (status = 409, description = "`wrong_kind`", body = ErrorBody),
    ))]
pub async fn member_purchases(
    State(state): State<AppState>,
    MemberAuth(session): MemberAuth,
    id: ApiPath<CampaignId>,
) -> Result<Json<SharePurchaseList>, ApiError> {
    let records = snatch::member_purchases(&state.app, &session.tenant_id, id.0, session.member_id).await?;
    Ok(Json(SharePurchaseList { purchases: records.into_iter().map(Into::into).collect() }))
}

/// The snatch's shares and periods: sold and left in the open period, each
/// period's commitment, and once drawn its seed and winner.
#[utoipa::path(get, path = "/m/api/v1/campaigns/{campaign_id}/snatch", tag = "member",
    security(("member_bearer" = [])),
    params(("campaign_id" = uuid::Uuid, Path)),
    responses(
        (status = 200, description = "The snatch", body = SnatchDto),
        (status = 400, description = "`invalid_campaign_id`", body = ErrorBody),
        (status = 401, description = "`unauthenticated`", body = ErrorBody),
        (status = 404, description = "`campaign_not_found`", body = ErrorBody),
        (status = 409, description = "`wrong_kind`", body = ErrorBody),
    ))]
pub async fn member_snatch(
    State(state): State<AppState>,
    MemberAuth(session): MemberAuth,
    id: ApiPath<CampaignId>,
) -> Result<Json<SnatchDto>, ApiError> {
    let view = campaigns::get(&state.app, &session.tenant_id, id.0).await?;
    if view.status == wxcm_domain::campaign::Status::Draft {
        return Err(CampaignOpError::NotFound.into());
    }
    let snatch = view.snatch.ok_or(CampaignOpError::Campaign(CampaignError::WrongKind("snatch")))?;
    Ok(Json(snatch.into()))
}
