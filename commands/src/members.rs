//! Member use cases: registration, ledger operations, lookups, history.

use chrono::{DateTime, Utc};
use serde::Serialize;
use wxcm_domain::member::{
    Attribution, CardLevel, LedgerLine, Member, MemberCommand, MemberError, MemberEvent, Provenance,
    RegistrationSource, WelcomePoints,
};
use wxcm_domain::{Actor, CardNumber, EventSourced, IdempotencyKey, MemberId, OpenId, TenantId};

use crate::executor::{CommandContext, ExecuteError, Outcome};
use crate::ports::{App, LedgerLinePage, PortError, RouteError, LEDGER_PAGE_MAX};

/// Entries of one history page.
pub const HISTORY_PAGE_MAX: u32 = 200;

#[derive(Debug, thiserror::Error)]
pub enum MemberOpError {
    #[error("member not found")]
    NotFound,
    #[error(transparent)]
    Rejected(#[from] MemberError),
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

impl From<PortError> for MemberOpError {
    fn from(e: PortError) -> Self {
        if e.is_transient() {
            MemberOpError::Unavailable(e.to_string())
        } else {
            MemberOpError::Infra(e.to_string())
        }
    }
}

impl From<ExecuteError<MemberError>> for MemberOpError {
    fn from(e: ExecuteError<MemberError>) -> Self {
        match e {
            ExecuteError::Domain(MemberError::NotRegistered) | ExecuteError::ForeignAggregate => {
                MemberOpError::NotFound
            }
            ExecuteError::Domain(d) => MemberOpError::Rejected(d),
            ExecuteError::IdempotencyMismatch => MemberOpError::IdempotencyMismatch,
            ExecuteError::Contention => MemberOpError::Contention,
            ExecuteError::Invariant(broken) => MemberOpError::Infra(broken.to_string()),
            ExecuteError::Store(s) => MemberOpError::Infra(s),
            ExecuteError::Unavailable(s) => MemberOpError::Unavailable(s),
        }
    }
}

/// A member as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemberView {
    pub member_id: MemberId,
    pub tenant_id: TenantId,
    pub card_no: CardNumber,
    pub openid: Option<OpenId>,
    pub card_level: String,
    pub registered_at: DateTime<Utc>,
    pub points: i64,
    pub spendable_points: i64,
    pub held_points: i64,
    pub lifetime_points: i64,
    pub balance_fen: i64,
    pub version: u64,
}

impl MemberView {
    pub fn from_state(m: &Member, now: DateTime<Utc>) -> Option<Self> {
        let r = m.registration.as_ref()?;
        Some(Self {
            member_id: r.member_id,
            tenant_id: r.tenant_id.clone(),
            card_no: r.card_no.clone(),
            openid: r.openid.clone(),
            card_level: r.card_level.as_str().to_owned(),
            registered_at: r.registered_at,
            points: m.points.get(),
            spendable_points: m.spendable_points(now),
            held_points: m.held.get(),
            lifetime_points: m.lifetime_points.get(),
            balance_fen: m.balance.get(),
            version: m.version,
        })
    }
}

/// What a registration asks for (hashed for idempotency; no server-made values).
#[derive(Debug, Clone, Serialize)]
pub struct RegisterRequest {
    pub openid: Option<OpenId>,
    pub source: RegistrationSource,
    pub card_level: CardLevel,
}

/// Registers a member, or returns the existing one for the same openid.
/// Members with an openid get an id derived from (tenant, openid); members
/// registered by hand get one derived from the idempotency key, so a retried
/// request lands on the same stream.
pub async fn register(
    app: &App,
    tenant: &TenantId,
    request: RegisterRequest,
    actor: Actor,
    ctx: &CommandContext,
) -> Result<(MemberView, Outcome<MemberEvent>), MemberOpError> {
    register_attributed(app, tenant, request, None, actor, ctx).await
}

/// [`register`] with where the member came from (scene QR, referral, direct).
/// The attribution is not part of the idempotency fingerprint: the key already
/// names the arrival it was derived from.
pub async fn register_attributed(
    app: &App,
    tenant: &TenantId,
    request: RegisterRequest,
    attribution: Option<Attribution>,
    actor: Actor,
    ctx: &CommandContext,
) -> Result<(MemberView, Outcome<MemberEvent>), MemberOpError> {
    let shard = app.router.route(tenant)?;
    let member_id = member_id_for(tenant, &request, ctx);
    let id = member_id.to_string();
    let (state, _) = shard.members.load(tenant, &id).await?;
    let outcome = if state.registration.is_some() {
        if state.tenant() != Some(tenant) {
            return Err(MemberOpError::NotFound);
        }
        // Same key, different request: refuse rather than pretend.
        if let Some(record) = shard.event_log.find_idempotency(tenant, ctx.idempotency_key.as_str()).await? {
            let hash = crate::executor::request_hash(Member::TYPE, &id, &request)?;
            if record.request_hash != hash {
                return Err(MemberOpError::IdempotencyMismatch);
            }
        }
        Outcome { aggregate_id: id.clone(), events: Vec::new(), replayed: false }
    } else {
        register_new(app, tenant, &request, attribution, None, actor, ctx).await?
    };
    let view = get(app, tenant, member_id).await?;
    Ok((view, outcome))
}

fn member_id_for(tenant: &TenantId, request: &RegisterRequest, ctx: &CommandContext) -> MemberId {
    match &request.openid {
        Some(openid) => MemberId::for_openid(tenant, openid),
        None => MemberId::for_idempotency_key(tenant, &ctx.idempotency_key),
    }
}

/// Registers a member the caller found unregistered, with its welcome points
/// in the same command. A concurrent duplicate of the same identity is a
/// no-op in the aggregate (its card number is then left unused).
pub async fn register_new(
    app: &App,
    tenant: &TenantId,
    request: &RegisterRequest,
    attribution: Option<Attribution>,
    welcome: Option<WelcomePoints>,
    actor: Actor,
    ctx: &CommandContext,
) -> Result<Outcome<MemberEvent>, MemberOpError> {
    let shard = app.router.route(tenant)?;
    let member_id = member_id_for(tenant, request, ctx);
    let card_no = CardNumber::from_serial(shard.cards.next_serial().await?)
        .map_err(|e| MemberOpError::Infra(format!("card numbers exhausted: {e}")))?;
    let command = MemberCommand::Register {
        member_id,
        tenant_id: tenant.clone(),
        card_no,
        openid: request.openid.clone(),
        source: request.source,
        card_level: request.card_level.clone(),
        attribution,
        welcome,
        provenance: Provenance {
            actor,
            reason: wxcm_domain::Reference::parse("registration").map_err(|e| MemberOpError::Infra(e.to_string()))?,
            reference: None,
            idempotency_key: ctx.idempotency_key.clone(),
        },
    };
    Ok(shard.members.execute(&member_id.to_string(), command, request, ctx).await?)
}

/// Runs a ledger command on a member of `tenant`.
pub async fn execute(
    app: &App,
    tenant: &TenantId,
    member_id: MemberId,
    command: MemberCommand,
    request: &(impl Serialize + Sync),
    ctx: &CommandContext,
) -> Result<Outcome<MemberEvent>, MemberOpError> {
    if matches!(command, MemberCommand::Register { .. }) {
        return Err(MemberOpError::Infra("use register() to register members".into()));
    }
    let shard = app.router.route(tenant)?;
    Ok(shard.members.execute(&member_id.to_string(), command, request, ctx).await?)
}

pub async fn get(app: &App, tenant: &TenantId, member_id: MemberId) -> Result<MemberView, MemberOpError> {
    let shard = app.router.route(tenant)?;
    let (state, _) = shard.members.load(tenant, &member_id.to_string()).await?;
    if state.tenant() != Some(tenant) {
        return Err(MemberOpError::NotFound);
    }
    MemberView::from_state(&state, app.clock.now()).ok_or(MemberOpError::NotFound)
}

/// The member's stream audited as `wxcm audit member` does (chain, replay,
/// stated balances); a member of another tenant is not found.
pub async fn audit(
    app: &App,
    tenant: &TenantId,
    member_id: &MemberId,
) -> Result<crate::ports::MemberAuditVerdict, crate::ports::MemberAuditError> {
    let shard = app.router.route(tenant)?;
    shard.member_audit.audit_member(tenant, member_id).await
}

pub async fn find_by_card(app: &App, tenant: &TenantId, card: &CardNumber) -> Result<MemberView, MemberOpError> {
    let shard = app.router.route(tenant)?;
    let id = shard.directory.by_card(tenant, card).await?.ok_or(MemberOpError::NotFound)?;
    get(app, tenant, id).await
}

pub async fn find_by_openid(app: &App, tenant: &TenantId, openid: &OpenId) -> Result<MemberView, MemberOpError> {
    let shard = app.router.route(tenant)?;
    let id = shard.directory.by_openid(tenant, openid).await?.ok_or(MemberOpError::NotFound)?;
    get(app, tenant, id).await
}

#[derive(Debug, Clone, Serialize)]
pub struct HistoryEntry {
    pub sequence: u64,
    pub recorded_at: DateTime<Utc>,
    pub event_type: String,
    #[serde(flatten)]
    pub line: LedgerLine,
}

/// A page of a member's ledger, oldest first, after `after_sequence`.
pub async fn history(
    app: &App,
    tenant: &TenantId,
    member_id: MemberId,
    after_sequence: u64,
    limit: u32,
) -> Result<Vec<HistoryEntry>, MemberOpError> {
    let shard = app.router.route(tenant)?;
    let id = member_id.to_string();
    match shard.event_log.stream_tenant(Member::TYPE, &id).await? {
        Some(owner) if owner == tenant.as_str() => {}
        _ => return Err(MemberOpError::NotFound),
    }
    let limit = limit.clamp(1, HISTORY_PAGE_MAX);
    let logged = shard.event_log.read_range(Member::TYPE, &id, after_sequence + 1, u64::MAX >> 1, limit).await?;
    logged
        .into_iter()
        .map(|l| {
            let event: MemberEvent = serde_json::from_value(l.payload)
                .map_err(|e| MemberOpError::Infra(format!("undecodable event: {e}")))?;
            Ok(HistoryEntry {
                sequence: l.sequence,
                recorded_at: l.recorded_at,
                event_type: l.event_type,
                line: event.ledger_line(),
            })
        })
        .collect()
}

/// A page of the member's ledger from the read model (`rm_member_ledger`),
/// lines with a sequence after `after_sequence`, oldest first. Whether the member
/// exists is the event store's answer (never behind: a member registered a moment
/// ago is found, with no lines yet); the lines may lag by the projection delay,
/// which the page's `projected_through_sequence` shows.
pub async fn ledger(
    app: &App,
    tenant: &TenantId,
    member_id: MemberId,
    after_sequence: u64,
    limit: u32,
) -> Result<LedgerLinePage, MemberOpError> {
    let shard = app.router.route(tenant)?;
    let (state, _) = shard.members.load(tenant, &member_id.to_string()).await?;
    if state.tenant() != Some(tenant) {
        return Err(MemberOpError::NotFound);
    }
    // Sequences are bigint in the store; anything past it simply finds no line.
    let after = i64::try_from(after_sequence).unwrap_or(i64::MAX);
    Ok(shard.read_models.member_ledger(tenant, member_id, after, limit.clamp(1, LEDGER_PAGE_MAX)).await?)
}

/// Key for work the system does on its own (scheduler), stable across retries.
pub fn system_key(parts: &[&str]) -> Result<IdempotencyKey, MemberOpError> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0x1f]);
    }
    IdempotencyKey::parse(&format!("sys-{}", hex::encode(&h.finalize()[..20])))
        .map_err(|e| MemberOpError::Infra(e.to_string()))
}
