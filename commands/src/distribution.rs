//! Distribution (issue 15, items 1 and 2): the tenant's settings, members
//! becoming distributors (one `distributor` stream per member, through the
//! executor) and members binding to distributors.
//!
//! **Bindings are rows with history, decided under a per-tenant lock.** A
//! binding must never close a cycle of any length. The domain refuses one
//! given the candidate's whole ancestor chain ([`binding::decide_binding`]);
//! two bindings racing (A under B while B goes under A, or a longer ring)
//! would each read a chain without the other. So [`DistributionStore::bind`]
//! takes the tenant's binding lock, reads the member's current binding, the
//! candidate's standing and whole chain, lets [`decide`] choose, and writes
//! the binding — all in one transaction. Every binding is kept
//! (`distribution_bindings`: member, distributor, replaced distributor,
//! route, request key, time); the current one per member beside it.
//!
//! **New-member reward, once per person.** The first binding of a person in
//! the tenant records the reward's fact under
//! [`binding::new_member_reward_key`] (tenant + openid) in the same
//! transaction; a second binding of the same openid (a rebinding, a member
//! deleted and re-created) finds the fact and earns nothing. The points are
//! granted afterwards under a key derived from the reward key (so at most
//! once), and a grant that did not happen (crash) is finished by the next
//! arrival or request of the member ([`grant_pending_rewards`]).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use wxcm_domain::distribution::binding::{
    self, Binding, BindingAsk, BindingDecision, BindingRefusal, BindingRoute, DistributorStanding, EnrolmentPolicy,
};
use wxcm_domain::distribution::{
    DistributionSettings, Distributor, DistributorCommand, DistributorError, DistributorId, DistributorLevelCode,
};
use wxcm_domain::member::{ExpiryPolicy, MemberCommand, PointsSource, Provenance};
use wxcm_domain::{Actor, AppId, MemberId, OpenId, PointsAmount, Reference, TenantId};

use crate::mall::OrderQuery;
use crate::members::{self, system_key, MemberOpError};
use crate::ports::{PortError, RouteError};
use crate::{App, CommandContext, ExecuteError};

/// Distributors per page of a list or the audit queue.
pub const DISTRIBUTOR_PAGE_MAX: u32 = 100;
/// Subordinates per page.
pub const SUBORDINATE_PAGE_MAX: u32 = 100;
/// Bindings of a member's history returned at most (newest first).
pub const BINDING_HISTORY_MAX: u32 = 100;
/// A distributor code: 8 characters of Crockford's base-32 alphabet.
pub const CODE_LEN: usize = 8;
/// Orders read at most to add up a member's paid cash for a spending threshold.
pub const THRESHOLD_ORDERS_MAX: u32 = 2_000;
/// The scene of a distributor's QR code: this prefix and the code.
pub const QR_SCENE_PREFIX: &str = "dist_";

#[derive(Debug, thiserror::Error)]
pub enum DistributionError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error(transparent)]
    Distributor(DistributorError),
    #[error(transparent)]
    Binding(BindingRefusal),
    #[error("no active distributor has this code")]
    UnknownCode,
    #[error("not a distributor")]
    NotDistributor,
    #[error("no distributor level {0} in the commission settings")]
    UnknownLevel(String),
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
}

impl From<PortError> for DistributionError {
    fn from(e: PortError) -> Self {
        if e.is_transient() {
            DistributionError::Unavailable(e.to_string())
        } else {
            DistributionError::Infra(e.to_string())
        }
    }
}

impl From<MemberOpError> for DistributionError {
    fn from(e: MemberOpError) -> Self {
        match e {
            MemberOpError::NotFound => DistributionError::NotFound("member"),
            MemberOpError::IdempotencyMismatch => DistributionError::IdempotencyMismatch,
            MemberOpError::Contention => DistributionError::Contention,
            MemberOpError::Route(r) => DistributionError::Route(r),
            MemberOpError::Rejected(r) => DistributionError::Infra(r.to_string()),
            MemberOpError::Infra(s) => DistributionError::Infra(s),
            MemberOpError::Unavailable(s) => DistributionError::Unavailable(s),
        }
    }
}

impl From<crate::mall::MallOpError> for DistributionError {
    fn from(e: crate::mall::MallOpError) -> Self {
        match e {
            crate::mall::MallOpError::Unavailable(s) => DistributionError::Unavailable(s),
            crate::mall::MallOpError::Route(r) => DistributionError::Route(r),
            other => DistributionError::Infra(other.to_string()),
        }
    }
}

impl From<ExecuteError<DistributorError>> for DistributionError {
    fn from(e: ExecuteError<DistributorError>) -> Self {
        match e {
            ExecuteError::Domain(d) => DistributionError::Distributor(d),
            ExecuteError::ForeignAggregate => DistributionError::NotFound("distributor"),
            ExecuteError::IdempotencyMismatch => DistributionError::IdempotencyMismatch,
            ExecuteError::Contention => DistributionError::Contention,
            ExecuteError::Invariant(b) => DistributionError::Infra(b.to_string()),
            ExecuteError::Store(s) => DistributionError::Infra(s),
            ExecuteError::Unavailable(s) => DistributionError::Unavailable(s),
        }
    }
}

/// A distributor's scene QR code as WeChat made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DistributorQr {
    pub appid: AppId,
    pub ticket: String,
    pub url: String,
}

/// A distributor as the `distributors` table keeps it (written with its events).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DistributorView {
    pub member_id: MemberId,
    pub standing: DistributorStanding,
    pub code: String,
    /// `application`, `everyone`, `spending_threshold` or `designated`.
    pub route: Option<String>,
    /// The reason of the last rejection or suspension.
    pub reason: Option<String>,
    pub applied_at: Option<DateTime<Utc>>,
    pub enrolled_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    pub qr: Option<DistributorQr>,
    /// The distributor's level code in the tenant's catalog (commission settings).
    pub level: Option<String>,
}

/// A page of distributors in member id order.
#[derive(Debug, Clone)]
pub struct DistributorQuery {
    pub standing: Option<DistributorStanding>,
    pub after: Option<MemberId>,
    /// 1..=[`DISTRIBUTOR_PAGE_MAX`].
    pub limit: u32,
}

/// One binding as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BindingRecord {
    pub binding_id: i64,
    pub member_id: MemberId,
    pub distributor_id: MemberId,
    pub replaces: Option<MemberId>,
    pub route: BindingRoute,
    pub bound_at: DateTime<Utc>,
}

/// What the store gathered under the tenant's binding lock.
#[derive(Debug, Clone, Copy)]
pub struct BindingFacts<'a> {
    pub current: Option<Binding>,
    pub candidate_standing: DistributorStanding,
    /// The candidate's ancestors, nearest first, up to a member bound to nobody.
    pub candidate_ancestors: &'a [MemberId],
}

/// A binding to write if the decision says so.
#[derive(Debug, Clone)]
pub struct BindRequest {
    pub tenant: TenantId,
    pub member_id: MemberId,
    pub candidate: MemberId,
    pub route: BindingRoute,
    /// The request's key: a second request with it replays the first binding.
    pub request_key: String,
    pub now: DateTime<Utc>,
    /// The person's new-member reward (key, openid, points): recorded with the
    /// member's first binding in the tenant, never again for this key.
    pub reward: Option<RewardFact>,
}

#[derive(Debug, Clone)]
pub struct RewardFact {
    pub key: uuid::Uuid,
    pub openid: Option<OpenId>,
    pub points: Option<PointsAmount>,
}

/// What became of a binding request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum BindOutcome {
    /// A new binding (replacing `record.replaces`, if any).
    Bound { record: BindingRecord, new_member_reward: bool },
    /// Already bound to this distributor: nothing written.
    AlreadyBound { record: BindingRecord },
    /// The request's key bound before: the same binding.
    Replayed { record: BindingRecord },
}

/// The store's answer to a binding request.
#[derive(Debug)]
pub enum BindResult {
    Done(BindOutcome),
    Refused(BindingRefusal),
    /// The key was used for another member or distributor.
    KeyReused,
}

/// A reward recorded but not granted yet.
#[derive(Debug, Clone)]
pub struct PendingReward {
    pub key: uuid::Uuid,
    pub distributor_id: MemberId,
    pub member_id: MemberId,
    pub points: PointsAmount,
}

/// A subordinate of a distributor (level 1: bound to them; level 2: bound to one of those).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Subordinate {
    pub member_id: MemberId,
    /// Whom the member is bound to (the distributor for level 1).
    pub distributor_id: MemberId,
    pub bound_at: DateTime<Utc>,
}

/// The decision the store runs under its lock.
pub type Decide<'a> = &'a (dyn Fn(BindingFacts<'_>) -> Result<BindingDecision, BindingRefusal> + Send + Sync);

/// What distribution needs from the shard's database beside the events.
#[async_trait]
pub trait DistributionStore: Send + Sync {
    async fn settings(&self, tenant: &TenantId) -> Result<Option<DistributionSettings>, PortError>;
    async fn save_settings(
        &self,
        tenant: &TenantId,
        settings: &DistributionSettings,
        at: DateTime<Utc>,
        by: &str,
    ) -> Result<(), PortError>;
    async fn distributor(&self, tenant: &TenantId, member: MemberId) -> Result<Option<DistributorView>, PortError>;
    async fn distributor_by_code(&self, tenant: &TenantId, code: &str) -> Result<Option<DistributorView>, PortError>;
    async fn distributors(
        &self,
        tenant: &TenantId,
        query: &DistributorQuery,
    ) -> Result<Vec<DistributorView>, PortError>;
    async fn save_qr(&self, tenant: &TenantId, member: MemberId, qr: &DistributorQr) -> Result<(), PortError>;
    /// Under the tenant's binding lock, in one transaction: replay by key, or
    /// gather the facts, `decide`, and write the binding (and the reward's
    /// fact, when its key is new).
    async fn bind(&self, request: &BindRequest, decide: Decide<'_>) -> Result<BindResult, PortError>;
    async fn current_binding(&self, tenant: &TenantId, member: MemberId) -> Result<Option<BindingRecord>, PortError>;
    async fn binding_history(
        &self,
        tenant: &TenantId,
        member: MemberId,
        limit: u32,
    ) -> Result<Vec<BindingRecord>, PortError>;
    /// Level 1 or 2 subordinates of `distributor` in member id order after `after`.
    async fn subordinates(
        &self,
        tenant: &TenantId,
        distributor: MemberId,
        level: u8,
        after: Option<MemberId>,
        limit: u32,
    ) -> Result<Vec<Subordinate>, PortError>;
    async fn pending_rewards(&self, tenant: &TenantId, member: MemberId) -> Result<Vec<PendingReward>, PortError>;
    async fn reward_granted(&self, tenant: &TenantId, key: uuid::Uuid, at: DateTime<Utc>) -> Result<(), PortError>;
}

// ---------------------------------------------------------------- settings

/// The tenant's settings, or the defaults when it never chose.
pub async fn settings(app: &App, tenant: &TenantId) -> Result<DistributionSettings, DistributionError> {
    let shard = app.router.route(tenant)?;
    Ok(shard.distribution.settings(tenant).await?.unwrap_or_default())
}

pub async fn put_settings(
    app: &App,
    tenant: &TenantId,
    settings: &DistributionSettings,
    actor: &Actor,
) -> Result<DistributionSettings, DistributionError> {
    let shard = app.router.route(tenant)?;
    shard.distribution.save_settings(tenant, settings, app.clock.now(), &actor.label()).await?;
    tracing::info!(%tenant, "distribution settings saved");
    Ok(*settings)
}

// ---------------------------------------------------------------- distributors

pub async fn get_distributor(
    app: &App,
    tenant: &TenantId,
    member: MemberId,
) -> Result<DistributorView, DistributionError> {
    let shard = app.router.route(tenant)?;
    shard.distribution.distributor(tenant, member).await?.ok_or(DistributionError::NotFound("distributor"))
}

/// The member's standing: `None` when they never applied nor were enrolled.
pub async fn find_distributor(
    app: &App,
    tenant: &TenantId,
    member: MemberId,
) -> Result<Option<DistributorView>, DistributionError> {
    let shard = app.router.route(tenant)?;
    Ok(shard.distribution.distributor(tenant, member).await?)
}

pub async fn list_distributors(
    app: &App,
    tenant: &TenantId,
    query: &DistributorQuery,
) -> Result<Vec<DistributorView>, DistributionError> {
    let shard = app.router.route(tenant)?;
    Ok(shard.distribution.distributors(tenant, query).await?)
}

#[derive(Serialize)]
struct ApplyRequest {
    apply: MemberId,
}

/// The member asks to become a distributor under the tenant's policy:
/// enrolled at once (everyone, spending threshold met) or queued for an
/// admin (application). A spending threshold counts the cash the member paid
/// for mall orders, less what was refunded: a refunded order does not count.
pub async fn apply(app: &App, ctx: &CommandContext, member: MemberId) -> Result<DistributorView, DistributionError> {
    let tenant = &ctx.tenant_id;
    members::get(app, tenant, member).await?;
    let policy = settings(app, tenant).await?.enrolment();
    let paid_net_fen = match policy {
        EnrolmentPolicy::SpendingThreshold { paid_fen } => paid_net_fen(app, tenant, member, paid_fen.get()).await?,
        _ => 0,
    };
    let command = DistributorCommand::Apply {
        tenant_id: tenant.clone(),
        member_id: member,
        policy,
        paid_net_fen,
        actor: Actor::Member { member_id: member },
    };
    run(app, ctx, member, command, &ApplyRequest { apply: member }).await
}

/// Under the `everyone` policy a member is a distributor as soon as they ask
/// for anything a distributor has (their link, code, QR): enrolled here with a
/// key derived from the member, once.
pub async fn ensure_everyone_enrolled(
    app: &App,
    tenant: &TenantId,
    member: MemberId,
) -> Result<Option<DistributorView>, DistributionError> {
    let existing = find_distributor(app, tenant, member).await?;
    if existing.is_some() || settings(app, tenant).await?.enrolment() != EnrolmentPolicy::Everyone {
        return Ok(existing);
    }
    let key = system_key(&["distribution-everyone", tenant.as_str(), &member.to_string()])?;
    let ctx = CommandContext::new(tenant.clone(), key, format!("member:{member}"));
    match apply(app, &ctx, member).await {
        Ok(view) => Ok(Some(view)),
        Err(DistributionError::Distributor(_)) => find_distributor(app, tenant, member).await,
        Err(e) => Err(e),
    }
}

/// Cash the member paid for mall orders less refunds, read until `enough` is reached.
async fn paid_net_fen(app: &App, tenant: &TenantId, member: MemberId, enough: i64) -> Result<i64, DistributionError> {
    let shard = app.router.route(tenant)?;
    let mut total: i64 = 0;
    let mut before = None;
    let mut read = 0;
    while read < THRESHOLD_ORDERS_MAX && total < enough {
        let query = OrderQuery {
            member_id: Some(member),
            before_no: before,
            limit: crate::mall::ORDER_PAGE_MAX,
            refund_request: None,
        };
        let page = shard.mall_store.orders(tenant, &query).await?;
        let Some(last) = page.last() else { break };
        before = Some(last.order_no);
        read += page.len() as u32;
        for entry in &page {
            let (order, _) = shard.mall_orders.load(tenant, &entry.order_id.to_string()).await?;
            let paid = order.payment.as_ref().and_then(|p| p.cash.as_ref()).map_or(0, |c| c.amount_fen().get());
            let refunded = order.refund.as_ref().and_then(|r| r.cash_back.as_ref()).map_or(0, |c| match c {
                wxcm_domain::mall::CashRefund::Balance { amount_fen, .. }
                | wxcm_domain::mall::CashRefund::WechatPay { amount_fen, .. } => amount_fen.get(),
            });
            total = total.saturating_add(paid.saturating_sub(refunded).max(0));
        }
    }
    Ok(total)
}

/// An admin's decision on a member's standing.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum AdminChange {
    Approve,
    Reject { reason: Reference },
    Designate,
    Suspend { reason: Reference },
    Reinstate,
}

pub async fn change_standing(
    app: &App,
    ctx: &CommandContext,
    member: MemberId,
    change: AdminChange,
    actor: Actor,
) -> Result<DistributorView, DistributionError> {
    let tenant = &ctx.tenant_id;
    members::get(app, tenant, member).await?;
    let request = (member, change.clone());
    let command = match change {
        AdminChange::Approve => DistributorCommand::Approve { actor },
        AdminChange::Reject { reason } => DistributorCommand::Reject { reason, actor },
        AdminChange::Designate => DistributorCommand::Designate { tenant_id: tenant.clone(), member_id: member, actor },
        AdminChange::Suspend { reason } => DistributorCommand::Suspend { reason, actor },
        AdminChange::Reinstate => DistributorCommand::Reinstate { actor },
    };
    run(app, ctx, member, command, &request).await
}

/// An admin sets the distributor's level (`None`: none; the tenant's
/// default rates apply). The level must be in the tenant's catalog now; a
/// level removed from the catalog later leaves the distributor on the
/// tenant's defaults.
pub async fn set_level(
    app: &App,
    ctx: &CommandContext,
    member: MemberId,
    level: Option<DistributorLevelCode>,
    actor: Actor,
) -> Result<DistributorView, DistributionError> {
    let tenant = &ctx.tenant_id;
    members::get(app, tenant, member).await?;
    get_distributor(app, tenant, member).await?;
    if let Some(code) = &level {
        let settings = crate::commissions::settings(app, tenant).await.map_err(|e| match e {
            crate::commissions::CommissionError::Unavailable(s) => DistributionError::Unavailable(s),
            crate::commissions::CommissionError::Route(r) => DistributionError::Route(r),
            other => DistributionError::Infra(other.to_string()),
        })?;
        if settings.level_rates(code).is_none() {
            return Err(DistributionError::UnknownLevel(code.to_string()));
        }
    }
    let request = serde_json::json!({ "set_level": member, "level": &level });
    let view = run(app, ctx, member, DistributorCommand::SetLevel { level, actor }, &request).await?;
    tracing::info!(%tenant, %member, level = ?view.level, "distributor level set");
    Ok(view)
}

async fn run(
    app: &App,
    ctx: &CommandContext,
    member: MemberId,
    command: DistributorCommand,
    request: &(impl Serialize + Sync),
) -> Result<DistributorView, DistributionError> {
    let tenant = &ctx.tenant_id;
    let shard = app.router.route(tenant)?;
    let stream = DistributorId::for_member(tenant, member).to_string();
    let (state, _): (Distributor, u64) = shard.distributors.load(tenant, &stream).await?;
    if state.member.as_ref().is_some_and(|(t, m)| t != tenant || *m != member) {
        return Err(DistributionError::NotFound("distributor"));
    }
    shard.distributors.execute(&stream, command, request, ctx).await?;
    get_distributor(app, tenant, member).await
}

// ---------------------------------------------------------------- binding

/// The domain's decision, given what the store read under the lock.
pub fn decide(
    member: MemberId,
    candidate: MemberId,
    mode: binding::BindingMode,
    now: DateTime<Utc>,
) -> impl Fn(BindingFacts<'_>) -> Result<BindingDecision, BindingRefusal> + Send + Sync {
    move |facts| {
        let ask = BindingAsk {
            member_id: member,
            candidate,
            candidate_standing: facts.candidate_standing,
            candidate_ancestors: facts.candidate_ancestors,
            current: facts.current,
            mode,
        };
        binding::decide_binding(ask, now)
    }
}

/// Normalises a typed code: Crockford's forgiving reading (case, O→0, I/L→1,
/// separators dropped). `None` when it cannot be a code.
pub fn parse_code(typed: &str) -> Option<String> {
    if typed.len() > 4 * CODE_LEN {
        return None;
    }
    let mut code = String::with_capacity(CODE_LEN);
    for c in typed.chars() {
        let c = match c.to_ascii_uppercase() {
            '-' | ' ' => continue,
            'O' => '0',
            'I' | 'L' => '1',
            c @ ('0'..='9' | 'A'..='H' | 'J' | 'K' | 'M' | 'N' | 'P'..='T' | 'V'..='Z') => c,
            _ => return None,
        };
        code.push(c);
    }
    (code.len() == CODE_LEN).then_some(code)
}

/// The member arrives through the distributor whose code is `code`.
pub async fn bind_by_code(
    app: &App,
    tenant: &TenantId,
    member: MemberId,
    code: &str,
    route: BindingRoute,
    request_key: &str,
) -> Result<BindOutcome, DistributionError> {
    let shard = app.router.route(tenant)?;
    let distributor = shard.distribution.distributor_by_code(tenant, code).await?;
    let Some(distributor) = distributor.filter(|d| d.standing == DistributorStanding::Active) else {
        return Err(DistributionError::UnknownCode);
    };
    bind(app, tenant, member, distributor.member_id, route, request_key).await
}

/// A person opened a distributor's promotion link: WeChat OAuth gave their
/// openid. They become a member (as a member-API sign-in would make them, under
/// the same key) and bind through the link. `request_key` names the visit.
pub async fn arrive_through_link(
    app: &App,
    tenant: &TenantId,
    openid: &OpenId,
    code: &str,
    request_key: &str,
) -> Result<BindOutcome, DistributionError> {
    let key = system_key(&["oauth-register", tenant.as_str(), openid.as_str()])?;
    let request = members::RegisterRequest {
        openid: Some(openid.clone()),
        source: wxcm_domain::member::RegistrationSource::Oauth,
        card_level: wxcm_domain::member::CardLevel::standard(),
    };
    let ctx = CommandContext::new(tenant.clone(), key, "system:oauth".into());
    let (view, _) = members::register(app, tenant, request, Actor::Wechat { source: "oauth".into() }, &ctx).await?;
    bind_by_code(app, tenant, view.member_id, code, BindingRoute::Link, request_key).await
}

/// The member arrives through `candidate`'s link, QR or code: bound under
/// the tenant's binding mode, or refused (self, cycle, bound, not active).
pub async fn bind(
    app: &App,
    tenant: &TenantId,
    member: MemberId,
    candidate: MemberId,
    route: BindingRoute,
    request_key: &str,
) -> Result<BindOutcome, DistributionError> {
    let shard = app.router.route(tenant)?;
    let view = members::get(app, tenant, member).await?;
    let settings = settings(app, tenant).await?;
    let now = app.clock.now();
    let openid = view.openid.clone();
    let key = binding::new_member_reward_key(tenant, openid.as_ref(), member);
    let request = BindRequest {
        tenant: tenant.clone(),
        member_id: member,
        candidate,
        route,
        request_key: request_key.to_owned(),
        now,
        reward: Some(RewardFact { key, openid, points: settings.new_member_reward_points() }),
    };
    let decide = decide(member, candidate, settings.binding_mode(), now);
    let outcome = match shard.distribution.bind(&request, &decide).await? {
        BindResult::Done(outcome) => outcome,
        BindResult::Refused(refusal) => return Err(DistributionError::Binding(refusal)),
        BindResult::KeyReused => return Err(DistributionError::IdempotencyMismatch),
    };
    if let BindOutcome::Bound { record, new_member_reward } = &outcome {
        tracing::info!(%tenant, member = %record.member_id, distributor = %record.distributor_id,
            route = record.route.as_str(), new_member_reward, "member bound");
    }
    grant_pending_rewards(app, tenant, member).await?;
    Ok(outcome)
}

/// Grants the member's recorded, not yet granted new-member reward (at most
/// one per person: the fact's key is the openid's), each under a key derived
/// from the reward's, so a repeat grants nothing more.
pub async fn grant_pending_rewards(app: &App, tenant: &TenantId, member: MemberId) -> Result<(), DistributionError> {
    let shard = app.router.route(tenant)?;
    for reward in shard.distribution.pending_rewards(tenant, member).await? {
        let ctx = CommandContext::new(
            tenant.clone(),
            system_key(&["distribution-new-member-reward", tenant.as_str(), &reward.key.to_string()])?,
            "system:distribution".into(),
        );
        let reason =
            Reference::parse("distribution new member").map_err(|e| DistributionError::Infra(e.to_string()))?;
        let reference = Reference::parse(&reward.member_id.to_string()).ok();
        let command = MemberCommand::GrantPoints {
            points: reward.points,
            source: PointsSource::Referral,
            expiry: ExpiryPolicy::Never,
            provenance: Provenance {
                actor: Actor::System { job: "distribution".into() },
                reason,
                reference,
                idempotency_key: ctx.idempotency_key.clone(),
            },
        };
        let request = (reward.key, reward.distributor_id, reward.points.get());
        match members::execute(app, tenant, reward.distributor_id, command, &request, &ctx).await {
            Ok(_) | Err(MemberOpError::IdempotencyMismatch) => {}
            // The distributor cannot take more lots: logged, the fact stays recorded (never paid twice).
            Err(MemberOpError::Rejected(e)) => {
                tracing::warn!(%tenant, distributor = %reward.distributor_id, error = %e, "new-member reward refused");
            }
            Err(e) => return Err(e.into()),
        }
        shard.distribution.reward_granted(tenant, reward.key, app.clock.now()).await?;
    }
    Ok(())
}

/// A member's current binding and its history (newest first).
pub async fn binding_of(
    app: &App,
    tenant: &TenantId,
    member: MemberId,
) -> Result<(Option<BindingRecord>, Vec<BindingRecord>), DistributionError> {
    members::get(app, tenant, member).await?;
    let shard = app.router.route(tenant)?;
    let current = shard.distribution.current_binding(tenant, member).await?;
    let history = shard.distribution.binding_history(tenant, member, BINDING_HISTORY_MAX).await?;
    Ok((current, history))
}

pub async fn subordinates(
    app: &App,
    tenant: &TenantId,
    distributor: MemberId,
    level: u8,
    after: Option<MemberId>,
    limit: u32,
) -> Result<Vec<Subordinate>, DistributionError> {
    // Another tenant's member is no member here.
    members::get(app, tenant, distributor).await?;
    let shard = app.router.route(tenant)?;
    let limit = limit.clamp(1, SUBORDINATE_PAGE_MAX);
    Ok(shard.distribution.subordinates(tenant, distributor, level, after, limit).await?)
}

/// The distributor code in a scene QR's scene, if it is one.
pub fn code_in_scene(scene: &str) -> Option<String> {
    scene.strip_prefix(QR_SCENE_PREFIX).and_then(parse_code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_read_forgivingly_and_bounded() {
        assert_eq!(parse_code("abcd-efgh").as_deref(), Some("ABCDEFGH"));
        assert_eq!(parse_code("o1l2i3zz").as_deref(), Some("011213ZZ"));
        assert_eq!(parse_code("ABCDEFG"), None);
        assert_eq!(parse_code("ABCDEFGHJ"), None);
        assert_eq!(parse_code("ABCDEFGU"), None);
        assert_eq!(parse_code(&"-".repeat(4 * CODE_LEN + 1)), None);
        assert_eq!(code_in_scene("dist_ABCDEFGH").as_deref(), Some("ABCDEFGH"));
        assert_eq!(code_in_scene("lobby-poster"), None);
    }
}
