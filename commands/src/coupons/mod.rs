//! Coupon use cases: templates (admin), issuing (member claims, operator
//! grants) through [`claims::IssueLanes`], write-off at the counter, void and
//! expiry.

pub mod claims;
pub mod dispatch;

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_es::persist::SerializedEvent;
use serde::Serialize;
use uuid::Uuid;
use wxcm_domain::coupon::{
    Benefit, Coupon, CouponCommand, CouponError, CouponEvent, CouponId, CouponState, CouponTemplate, CouponTerms,
    IssueAsk, IssueChannel, IssueRefusal, IssuedCoupon, RedemptionCode, Stock, TemplateCommand, TemplateError,
    TemplateId,
};
use wxcm_domain::mall::MallOrderId;
use wxcm_domain::{Actor, EventSourced, IdempotencyKey, MemberId, Reference, TenantId};

use crate::executor::request_hash;
use crate::ports::{PortError, RouteError};
use crate::{App, CommandContext, ExecuteError};
use claims::{IssueError, IssueJob};

/// Attempts of one issue when its slot or the template moved under it.
pub const ISSUE_ATTEMPTS_MAX: u32 = 8;
/// Templates per page of the template list.
pub const TEMPLATE_PAGE_MAX: u32 = 200;
/// Coupons a member's list returns (newest first).
pub const MEMBER_COUPONS_MAX: u32 = 200;
/// How old the cached template may be when a claim chooses its slot.
const TEMPLATE_STATE_AGE_MAX: Duration = Duration::from_secs(2);
/// How old a member's cached state may be when a claim checks their card level.
pub(crate) const MEMBER_STATE_AGE_MAX: Duration = Duration::from_secs(5);
/// The prefix of the QR payload a member shows; the tenant is part of it, so
/// a code scanned at another merchant is refused as theirs, not looked up.
pub const QR_PREFIX: &str = "wxcm:coupon:";

pub use crate::lanes::AppendError;

/// What the coupon use cases need from the shard's database.
#[async_trait]
pub trait CouponStore: Send + Sync {
    /// Writes `rows` (events of several streams) atomically.
    async fn append(&self, rows: Vec<SerializedEvent>) -> Result<(), AppendError>;
    /// Which of these coupon streams exist.
    async fn existing_coupons(&self, ids: &[CouponId]) -> Result<HashSet<CouponId>, PortError>;
    async fn by_code(&self, tenant: &TenantId, code: &RedemptionCode) -> Result<Option<CouponId>, PortError>;
    /// The member's coupons, newest first.
    async fn member_coupons(&self, tenant: &TenantId, member: MemberId, limit: u32)
        -> Result<Vec<CouponId>, PortError>;
    /// The tenant's welcome templates (given to every new member).
    async fn welcome_templates(&self, tenant: &TenantId) -> Result<Vec<TemplateId>, PortError>;
}

#[derive(Debug, thiserror::Error)]
pub enum CouponOpError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Refused(IssueRefusal),
    #[error(transparent)]
    Coupon(CouponError),
    #[error(transparent)]
    Template(TemplateError),
    #[error("not a coupon code: {0}")]
    InvalidCode(String),
    #[error("invalid dispatch: {0}")]
    InvalidDispatch(String),
    #[error("this coupon belongs to another merchant")]
    OtherTenant,
    #[error("idempotency key was already used with a different request")]
    IdempotencyMismatch,
    #[error("too much contention, try again")]
    Contention,
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error("infrastructure failure: {0}")]
    Infra(String),
    /// The database or broker is unreachable for now; a write's outcome is unknown.
    #[error("infrastructure unavailable: {0}")]
    Unavailable(String),
}

impl From<PortError> for CouponOpError {
    fn from(e: PortError) -> Self {
        if e.is_transient() {
            CouponOpError::Unavailable(e.to_string())
        } else {
            CouponOpError::Infra(e.to_string())
        }
    }
}

impl From<ExecuteError<TemplateError>> for CouponOpError {
    fn from(e: ExecuteError<TemplateError>) -> Self {
        match e {
            ExecuteError::Domain(TemplateError::NotFound) | ExecuteError::ForeignAggregate => {
                CouponOpError::NotFound("coupon template")
            }
            ExecuteError::Domain(d) => CouponOpError::Template(d),
            ExecuteError::IdempotencyMismatch => CouponOpError::IdempotencyMismatch,
            ExecuteError::Contention => CouponOpError::Contention,
            ExecuteError::Invariant(b) => CouponOpError::Infra(b.to_string()),
            ExecuteError::Store(s) => CouponOpError::Infra(s),
            ExecuteError::Unavailable(s) => CouponOpError::Unavailable(s),
        }
    }
}

impl From<ExecuteError<CouponError>> for CouponOpError {
    fn from(e: ExecuteError<CouponError>) -> Self {
        match e {
            ExecuteError::Domain(CouponError::NotFound) | ExecuteError::ForeignAggregate => {
                CouponOpError::NotFound("coupon")
            }
            ExecuteError::Domain(d) => CouponOpError::Coupon(d),
            ExecuteError::IdempotencyMismatch => CouponOpError::IdempotencyMismatch,
            ExecuteError::Contention => CouponOpError::Contention,
            ExecuteError::Invariant(b) => CouponOpError::Infra(b.to_string()),
            ExecuteError::Store(s) => CouponOpError::Infra(s),
            ExecuteError::Unavailable(s) => CouponOpError::Unavailable(s),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TemplateView {
    pub template_id: TemplateId,
    pub terms: CouponTerms,
    pub stock: Stock,
    pub enabled: bool,
    pub welcome: bool,
    pub issued: u64,
    /// `None` for an unlimited stock.
    pub stock_left: Option<u64>,
    pub created_at: DateTime<Utc>,
}

impl TemplateView {
    fn of(template: &CouponTemplate, tenant: &TenantId) -> Option<Self> {
        let state = template.created.as_ref().filter(|s| &s.tenant_id == tenant)?;
        Some(Self {
            template_id: state.template_id,
            terms: state.terms.clone(),
            stock: state.stock,
            enabled: state.enabled,
            welcome: state.welcome,
            issued: state.issued,
            stock_left: state.stock_left(),
            created_at: state.created_at,
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CouponView {
    pub coupon_id: CouponId,
    pub template_id: TemplateId,
    pub member_id: MemberId,
    pub serial: u64,
    pub name: String,
    pub benefit: Benefit,
    pub state: CouponState,
    pub valid_from: DateTime<Utc>,
    pub valid_until: DateTime<Utc>,
    pub channel: IssueChannel,
    pub issued_at: DateTime<Utc>,
    pub code: String,
    /// What the member's QR code holds: the tenant and the code.
    pub qr_payload: String,
}

impl CouponView {
    fn of(coupon: &IssuedCoupon, state: CouponState) -> Self {
        Self {
            coupon_id: coupon.coupon_id,
            template_id: coupon.template_id,
            member_id: coupon.member_id,
            serial: coupon.serial,
            name: coupon.name.as_str().to_owned(),
            benefit: coupon.benefit.clone(),
            state,
            valid_from: coupon.valid_from,
            valid_until: coupon.valid_until,
            channel: coupon.channel.clone(),
            issued_at: coupon.issued_at,
            code: coupon.code.to_string(),
            qr_payload: format!("{QR_PREFIX}{}:{}", coupon.tenant_id, coupon.code),
        }
    }
}

// ---------------------------------------------------------------- templates

fn template_id_for(tenant: &TenantId, key: &IdempotencyKey) -> TemplateId {
    const NAMESPACE: Uuid = Uuid::from_u128(0x7b2e_0c55_1f3a_4d61_8e9b_2a70_c4d1_9f06);
    let name = format!("{}\u{1f}{}", tenant.as_str(), key.as_str());
    TemplateId::from_uuid(Uuid::new_v5(&NAMESPACE, name.as_bytes()))
}

/// Creates a template; its id derives from the key, so a retried request
/// creates nothing new.
pub async fn create_template(
    app: &App,
    ctx: &CommandContext,
    terms: CouponTerms,
    stock: Stock,
    actor: Actor,
) -> Result<TemplateView, CouponOpError> {
    let tenant = &ctx.tenant_id;
    let template_id = template_id_for(tenant, &ctx.idempotency_key);
    let request = serde_json::json!({ "terms": &terms, "stock": &stock });
    let command = TemplateCommand::Create { template_id, tenant_id: tenant.clone(), terms, stock, actor };
    run_template(app, ctx, template_id, command, &request).await
}

/// Edit, stock, enable or disable: any template command but create and issue.
pub async fn change_template(
    app: &App,
    ctx: &CommandContext,
    template_id: TemplateId,
    command: TemplateCommand,
) -> Result<TemplateView, CouponOpError> {
    if matches!(command, TemplateCommand::Create { .. } | TemplateCommand::Issue { .. }) {
        return Err(CouponOpError::Infra("create and issue have their own use cases".into()));
    }
    let request = command.clone();
    run_template(app, ctx, template_id, command, &request).await
}

async fn run_template(
    app: &App,
    ctx: &CommandContext,
    template_id: TemplateId,
    command: TemplateCommand,
    request: &(impl Serialize + Sync),
) -> Result<TemplateView, CouponOpError> {
    let shard = app.router.route(&ctx.tenant_id)?;
    let id = template_id.to_string();
    shard.coupon_templates.execute(&id, command, request, ctx).await?;
    get_template(app, &ctx.tenant_id, template_id).await
}

pub async fn get_template(
    app: &App,
    tenant: &TenantId,
    template_id: TemplateId,
) -> Result<TemplateView, CouponOpError> {
    let shard = app.router.route(tenant)?;
    let (state, _) = shard.coupon_templates.load(tenant, &template_id.to_string()).await?;
    TemplateView::of(&state, tenant).ok_or(CouponOpError::NotFound("coupon template"))
}

/// A page of the tenant's templates in id order, after `after`.
pub async fn list_templates(
    app: &App,
    tenant: &TenantId,
    after: Option<TemplateId>,
    limit: u32,
) -> Result<Vec<TemplateView>, CouponOpError> {
    let shard = app.router.route(tenant)?;
    let after = after.map(|a| a.to_string());
    let ids = shard
        .event_log
        .stream_ids(tenant, CouponTemplate::TYPE, after.as_deref(), limit.clamp(1, TEMPLATE_PAGE_MAX))
        .await?;
    let mut views = Vec::with_capacity(ids.len());
    for id in ids {
        // A list (the member's claimable list too) may be a moment old: a fresh
        // read per template per request would be a query each.
        let (state, _) = shard.coupon_templates.load_recent(tenant, &id, TEMPLATE_STATE_AGE_MAX).await?;
        views.extend(TemplateView::of(&state, tenant));
    }
    Ok(views)
}

// ---------------------------------------------------------------- issuing

/// Who receives a coupon and through which channel.
#[derive(Debug, Clone)]
pub enum Recipient {
    /// The member claims it themselves (limit and audience apply).
    Claim { member_id: MemberId },
    /// An operator gives it (the stock applies; limit and audience do not).
    Grant { member_id: MemberId, reason: Reference },
    /// A dispatch job gives it (as a grant; at most one per member and job).
    Dispatch { member_id: MemberId, job_id: Uuid },
    /// It comes with a paid mall order (as a grant; at most one per order).
    MallPurchase { member_id: MemberId, order_id: MallOrderId },
    /// A campaign awards it (as a grant; at most one per campaign and award).
    CampaignPrize { member_id: MemberId, campaign_id: Uuid, award: Reference },
}

/// The coupon a paid mall order's gift becomes (one per order).
pub fn gift_coupon_id(tenant: &TenantId, template_id: TemplateId, member_id: MemberId, order: MallOrderId) -> CouponId {
    CouponId::for_grant(tenant, template_id, member_id, &format!("mall-order:{order}"))
}

/// The coupon a campaign's award becomes (one per campaign and award).
pub fn prize_coupon_id(
    tenant: &TenantId,
    template_id: TemplateId,
    member_id: MemberId,
    campaign_id: Uuid,
    award: &Reference,
) -> CouponId {
    CouponId::for_grant(tenant, template_id, member_id, &format!("campaign:{campaign_id}:{award}"))
}

/// Issues one coupon of `template_id`. The same key and request returns the
/// first coupon; exactly `stock` coupons are ever issued, and a member never
/// claims more than the template's limit, however many ask at once and on
/// however many nodes.
pub async fn issue(
    app: &App,
    ctx: &CommandContext,
    template_id: TemplateId,
    recipient: Recipient,
    actor: Actor,
) -> Result<CouponView, CouponOpError> {
    let tenant = &ctx.tenant_id;
    let shard = app.router.route(tenant)?;
    let (member_id, request) = match &recipient {
        Recipient::Claim { member_id } => {
            (*member_id, serde_json::json!({ "claim": template_id, "member": member_id }))
        }
        Recipient::Grant { member_id, reason } => {
            (*member_id, serde_json::json!({ "grant": template_id, "member": member_id, "reason": reason }))
        }
        Recipient::Dispatch { member_id, job_id } => {
            (*member_id, serde_json::json!({ "dispatch": job_id, "template": template_id, "member": member_id }))
        }
        Recipient::MallPurchase { member_id, order_id } => {
            (*member_id, serde_json::json!({ "mall_order": order_id, "template": template_id, "member": member_id }))
        }
        Recipient::CampaignPrize { member_id, campaign_id, award } => (
            *member_id,
            serde_json::json!({ "campaign": campaign_id, "award": award, "template": template_id, "member": member_id }),
        ),
    };
    let hash = request_hash(Coupon::TYPE, "issue", &request)?;
    let (member, _) = shard.members.load_recent(tenant, &member_id.to_string(), MEMBER_STATE_AGE_MAX).await?;
    let registration = member
        .registration
        .as_ref()
        .filter(|_| member.tenant() == Some(tenant))
        .ok_or(CouponOpError::NotFound("member"))?;
    let card_level = registration.card_level.clone();

    for attempt in 0..ISSUE_ATTEMPTS_MAX {
        // Terms read here only choose the claim slot; the lane decides with the
        // template's current state and refuses a slot beyond its limit.
        let (state, _) =
            shard.coupon_templates.load_recent(tenant, &template_id.to_string(), TEMPLATE_STATE_AGE_MAX).await?;
        let template = TemplateView::of(&state, tenant).ok_or(CouponOpError::NotFound("coupon template"))?;
        let (coupon_id, channel, level) = match &recipient {
            Recipient::Claim { member_id } => {
                let slot =
                    claim_slot(&*shard.coupon_store, tenant, template_id, *member_id, &template, &ctx.idempotency_key)
                        .await;
                let (coupon_id, ordinal) = match slot {
                    Ok(slot) => slot,
                    Err(refused) => return previous_or(app, ctx, &hash, refused).await,
                };
                (coupon_id, IssueChannel::MemberClaim { ordinal }, Some(card_level.clone()))
            }
            Recipient::Grant { member_id, reason } => (
                CouponId::for_grant(tenant, template_id, *member_id, ctx.idempotency_key.as_str()),
                IssueChannel::OperatorGrant { reason: reason.clone() },
                None,
            ),
            Recipient::Dispatch { member_id, job_id } => (
                CouponId::for_grant(tenant, template_id, *member_id, &format!("dispatch:{job_id}")),
                IssueChannel::Dispatch { job_id: *job_id },
                None,
            ),
            Recipient::MallPurchase { member_id, order_id } => (
                gift_coupon_id(tenant, template_id, *member_id, *order_id),
                IssueChannel::MallPurchase { order_id: *order_id },
                None,
            ),
            Recipient::CampaignPrize { member_id, campaign_id, award } => (
                prize_coupon_id(tenant, template_id, *member_id, *campaign_id, award),
                IssueChannel::CampaignPrize { campaign_id: *campaign_id, award: award.clone() },
                None,
            ),
        };
        let claim_ordinal = match &channel {
            IssueChannel::MemberClaim { ordinal } => *ordinal,
            IssueChannel::OperatorGrant { .. }
            | IssueChannel::Dispatch { .. }
            | IssueChannel::MallPurchase { .. }
            | IssueChannel::CampaignPrize { .. } => None,
        };
        let mut random = [0u8; RedemptionCode::BYTES];
        rand::fill(&mut random);
        let job = IssueJob {
            tenant_id: tenant.clone(),
            template_id,
            ask: IssueAsk { coupon_id, member_id, card_level: level, claim_ordinal },
            channel,
            actor: actor.clone(),
            code: RedemptionCode::from_random(random),
            idempotency_key: ctx.idempotency_key.to_string(),
            request_hash: hash.clone(),
            correlation_id: ctx.correlation_id,
        };
        // A used key makes the commit conflict (its idempotency row exists):
        // the first result is looked up only then, off the common path.
        match shard.coupon_issues.issue(job).await {
            Ok(coupon) => return Ok(CouponView::of(&coupon, CouponState::Active)),
            Err(IssueError::Conflict) => {
                if let Some(view) = previous_issue(app, ctx, &hash).await? {
                    return Ok(view);
                }
                let backoff_ms = 1 + u64::from(attempt) * 2 + rand::random::<u64>() % 5;
                tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
            }
            Err(IssueError::Refused(why)) => return previous_or(app, ctx, &hash, CouponOpError::Refused(why)).await,
            Err(IssueError::TemplateNotFound) => return Err(CouponOpError::NotFound("coupon template")),
            Err(IssueError::Busy) => return Err(CouponOpError::Contention),
            Err(IssueError::Store(e)) => return Err(CouponOpError::Infra(e)),
        }
    }
    Err(CouponOpError::Contention)
}

/// The member's next claim slot of the template: the first of its `limit`
/// coupon streams that does not exist yet. Without a limit, a stream derived
/// from the request's key.
async fn claim_slot(
    store: &dyn CouponStore,
    tenant: &TenantId,
    template_id: TemplateId,
    member_id: MemberId,
    template: &TemplateView,
    key: &IdempotencyKey,
) -> Result<(CouponId, Option<u16>), CouponOpError> {
    let Some(limit) = template.terms.per_member_limit else {
        return Ok((CouponId::for_grant(tenant, template_id, member_id, &format!("claim:{key}")), None));
    };
    let slots: Vec<CouponId> = (1..=limit).map(|n| CouponId::for_claim(tenant, template_id, member_id, n)).collect();
    let taken = store.existing_coupons(&slots).await?;
    let free = slots.iter().zip(1..=limit).find(|(id, _)| !taken.contains(id));
    match free {
        Some((id, ordinal)) => Ok((*id, Some(ordinal))),
        None => Err(CouponOpError::Refused(IssueRefusal::LimitReached)),
    }
}

/// A repeated key whose first run issued a coupon gets that coupon, never a
/// refusal the state only gives because of that first run.
async fn previous_or(
    app: &App,
    ctx: &CommandContext,
    hash: &str,
    refused: CouponOpError,
) -> Result<CouponView, CouponOpError> {
    match previous_issue(app, ctx, hash).await? {
        Some(view) => Ok(view),
        None => Err(refused),
    }
}

/// The coupon a key already issued, if it issued one for this request.
async fn previous_issue(app: &App, ctx: &CommandContext, hash: &str) -> Result<Option<CouponView>, CouponOpError> {
    let shard = app.router.route(&ctx.tenant_id)?;
    let Some(record) = shard.event_log.find_idempotency(&ctx.tenant_id, ctx.idempotency_key.as_str()).await? else {
        return Ok(None);
    };
    if record.request_hash != hash || record.aggregate_type != Coupon::TYPE {
        return Err(CouponOpError::IdempotencyMismatch);
    }
    let coupon_id = CouponId::parse(&record.aggregate_id).map_err(|e| CouponOpError::Infra(e.to_string()))?;
    get_coupon(app, &ctx.tenant_id, coupon_id).await.map(Some)
}

// ---------------------------------------------------------------- coupons

pub async fn get_coupon(app: &App, tenant: &TenantId, coupon_id: CouponId) -> Result<CouponView, CouponOpError> {
    let shard = app.router.route(tenant)?;
    let (coupon, _) = shard.coupons.load(tenant, &coupon_id.to_string()).await?;
    view(&coupon, tenant).ok_or(CouponOpError::NotFound("coupon"))
}

fn view(coupon: &Coupon, tenant: &TenantId) -> Option<CouponView> {
    let (issued, state) = coupon.issued.as_ref().filter(|(c, _)| &c.tenant_id == tenant)?;
    Some(CouponView::of(issued, *state))
}

/// A member's coupons, newest first, read from the event store (a coupon is
/// listed as soon as it is issued).
pub async fn member_coupons(
    app: &App,
    tenant: &TenantId,
    member_id: MemberId,
) -> Result<Vec<CouponView>, CouponOpError> {
    let shard = app.router.route(tenant)?;
    // A member of another tenant (or none) is not found, never an empty list.
    let (member, _) = shard.members.load_recent(tenant, &member_id.to_string(), MEMBER_STATE_AGE_MAX).await?;
    if member.tenant() != Some(tenant) {
        return Err(CouponOpError::NotFound("member"));
    }
    let ids = shard.coupon_store.member_coupons(tenant, member_id, MEMBER_COUPONS_MAX).await?;
    let mut views = Vec::with_capacity(ids.len());
    for id in ids {
        let (coupon, _) = shard.coupons.load(tenant, &id.to_string()).await?;
        views.extend(view(&coupon, tenant));
    }
    Ok(views)
}

/// The code in what the counter scanned or typed: a QR payload names its
/// tenant, which must be the staff member's.
pub fn scanned_code(tenant: &TenantId, scanned: &str) -> Result<RedemptionCode, CouponOpError> {
    let invalid = |e: wxcm_domain::IdError| CouponOpError::InvalidCode(e.to_string());
    match scanned.strip_prefix(QR_PREFIX) {
        Some(rest) => {
            let (owner, code) = rest.split_once(':').ok_or(CouponOpError::NotFound("coupon"))?;
            if owner != tenant.as_str() {
                return Err(CouponOpError::OtherTenant);
            }
            RedemptionCode::parse(code).map_err(invalid)
        }
        None => RedemptionCode::parse(scanned).map_err(invalid),
    }
}

/// Write-off at the counter. Exactly one of concurrent write-offs of a code
/// succeeds; the others are told it was already used.
pub async fn redeem(
    app: &App,
    ctx: &CommandContext,
    scanned: &str,
    store: Option<Reference>,
    actor: Actor,
) -> Result<CouponView, CouponOpError> {
    let tenant = &ctx.tenant_id;
    let code = scanned_code(tenant, scanned)?;
    let shard = app.router.route(tenant)?;
    let coupon_id = shard.coupon_store.by_code(tenant, &code).await?.ok_or(CouponOpError::NotFound("coupon"))?;
    let command = CouponCommand::Redeem { code, store, actor };
    run_coupon(app, ctx, coupon_id, command).await
}

pub async fn void(
    app: &App,
    ctx: &CommandContext,
    coupon_id: CouponId,
    reason: Reference,
    actor: Actor,
) -> Result<CouponView, CouponOpError> {
    run_coupon(app, ctx, coupon_id, CouponCommand::Void { reason, actor }).await
}

async fn run_coupon(
    app: &App,
    ctx: &CommandContext,
    coupon_id: CouponId,
    command: CouponCommand,
) -> Result<CouponView, CouponOpError> {
    let shard = app.router.route(&ctx.tenant_id)?;
    let request = command.clone();
    shard.coupons.execute(&coupon_id.to_string(), command, &request, ctx).await?;
    get_coupon(app, &ctx.tenant_id, coupon_id).await
}

/// Due work: ends a coupon whose window has passed (nothing if it already ended).
pub async fn expire(app: &App, tenant: &TenantId, coupon_id: CouponId) -> Result<u32, CouponOpError> {
    let key = crate::members::system_key(&["coupon-expiry", &coupon_id.to_string()])
        .map_err(|e| CouponOpError::Infra(e.to_string()))?;
    let ctx = CommandContext::new(tenant.clone(), key, "system:scheduler".into());
    let shard = app.router.route(tenant)?;
    let outcome =
        shard.coupons.execute(&coupon_id.to_string(), CouponCommand::Expire, &CouponCommand::Expire, &ctx).await?;
    let expired = outcome.events.iter().filter(|e| matches!(e.event, CouponEvent::CouponExpired { .. })).count();
    Ok(if outcome.replayed { 0 } else { expired as u32 })
}

/// A template's coupons from the read model (may lag issues by a moment):
/// counts per state and one page in serial order.
pub async fn template_coupons(
    app: &App,
    tenant: &TenantId,
    search: &crate::ports::CouponSearch,
) -> Result<(crate::ports::CouponCounts, Vec<crate::ports::CouponRow>), CouponOpError> {
    get_template(app, tenant, search.template_id).await?;
    let shard = app.router.route(tenant)?;
    let counts = shard.read_models.coupon_counts(tenant, search.template_id).await?;
    let rows = shard.read_models.search_coupons(tenant, search).await?;
    Ok((counts, rows))
}

/// A campaign's coupon prize for `member_id`: at most one coupon per campaign
/// and `award` (a draw's or a shake's name for this win), however often it is
/// asked. Campaign work calls this; a refusal (sold out, disabled) is returned
/// for the campaign to record, never turned into another prize here.
pub async fn issue_prize(
    app: &App,
    tenant: &TenantId,
    template_id: TemplateId,
    member_id: MemberId,
    campaign_id: Uuid,
    award: Reference,
    actor: Actor,
) -> Result<CouponView, CouponOpError> {
    let key = crate::members::system_key(&["campaign-prize", &campaign_id.to_string(), award.as_str()])
        .map_err(|e| CouponOpError::Infra(e.to_string()))?;
    let ctx = CommandContext::new(tenant.clone(), key, "system:campaign-prizes".into());
    issue(app, &ctx, template_id, Recipient::CampaignPrize { member_id, campaign_id, award }, actor).await
}

/// The gift coupon of a paid mall order (once per order, however often asked).
/// A template that is sold out, disabled or gone gives nothing: logged, and
/// `None` (the order stands; the product's gift is a bonus, not a price).
pub async fn issue_with_order(
    app: &App,
    tenant: &TenantId,
    template_id: TemplateId,
    member_id: MemberId,
    order_id: MallOrderId,
) -> Result<Option<CouponView>, CouponOpError> {
    let key = crate::members::system_key(&["mall-gift-coupon", &order_id.to_string()])
        .map_err(|e| CouponOpError::Infra(e.to_string()))?;
    let ctx = CommandContext::new(tenant.clone(), key, "system:mall-gift-coupons".into());
    let actor = Actor::System { job: "mall-gift-coupons".into() };
    let issued = issue(app, &ctx, template_id, Recipient::MallPurchase { member_id, order_id }, actor).await;
    unless_refused(issued, template_id, member_id, "gift coupon not issued")
}

/// A system issue's outcome where the template's refusal (sold out, disabled,
/// gone) is its state, not a failure: logged, and `None`.
fn unless_refused(
    issued: Result<CouponView, CouponOpError>,
    template_id: TemplateId,
    member_id: MemberId,
    what: &'static str,
) -> Result<Option<CouponView>, CouponOpError> {
    match issued {
        Ok(view) => Ok(Some(view)),
        Err(CouponOpError::Refused(why)) => {
            tracing::info!(%template_id, %member_id, refusal = why.code(), "{what}");
            Ok(None)
        }
        Err(CouponOpError::NotFound("coupon template")) => Ok(None),
        Err(other) => Err(other),
    }
}

/// Due work after a registration: one coupon of each welcome template, keyed by
/// template and member (once, however often it runs). A refusal (sold out,
/// disabled) is the template's state, not a failure: it is logged and skipped.
pub async fn issue_welcome(app: &App, tenant: &TenantId, member_id: MemberId) -> Result<u32, CouponOpError> {
    let shard = app.router.route(tenant)?;
    let mut issued = 0;
    for template_id in shard.coupon_store.welcome_templates(tenant).await? {
        let key = crate::members::system_key(&["welcome-coupon", &template_id.to_string(), &member_id.to_string()])
            .map_err(|e| CouponOpError::Infra(e.to_string()))?;
        let ctx = CommandContext::new(tenant.clone(), key, "system:welcome-coupons".into());
        let reason = Reference::parse("welcome").map_err(|e| CouponOpError::Infra(e.to_string()))?;
        let actor = Actor::System { job: "welcome-coupons".into() };
        let outcome = issue(app, &ctx, template_id, Recipient::Grant { member_id, reason }, actor).await;
        if unless_refused(outcome, template_id, member_id, "welcome coupon not issued")?.is_some() {
            issued += 1;
        }
    }
    Ok(issued)
}
