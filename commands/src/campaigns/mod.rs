//! Campaign use cases (issue 14): the lifecycle by hand and by the scheduler,
//! the shake lottery's sealed seed, member shakes ([`shakes`]) and their
//! prizes issued once.
//!
//! **Seed.** When a shake lottery is scheduled, 32 bytes from the OS CSPRNG
//! are sealed ([`crate::ports::SecretSealer`]) into `campaign_seeds`
//! (migration 0024, first writer wins, so a retried schedule commits to the
//! same seed) and only their SHA-256 goes into `CampaignScheduled`. Each shake
//! unseals it for the command (whose `Debug` redacts it); the end reveals it in
//! `CampaignShakeSeedRevealed`, after which anyone can recompute every shake
//! (`wxcm audit draw`). The seed is never logged and never in an answer
//! before the reveal.

pub mod lanes;
pub mod periods;
pub mod popularity;
pub mod report;
pub mod shakes;
pub mod snatch;
pub mod voting;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rand::TryRngCore;
use serde::Serialize;
use tracing::{info, instrument};
use uuid::Uuid;
use wxcm_domain::campaign::{
    AwardRef, BeaconRound, BeaconValue, Campaign, CampaignCommand, CampaignError, CampaignId, CampaignKind,
    CampaignState, CampaignTerms, DrawSeed, PeriodEnd, Prize, SeedCommitment, ShakeDraw, ShakeOdds, Status,
};
use wxcm_domain::tenant::SealedSecret;
use wxcm_domain::{Actor, EventSourced, IdempotencyKey, MemberId, TenantId};

use crate::ports::{PortError, RouteError, SecretSealer, ShardServices};
use crate::{App, CommandContext, ExecuteError, Outcome};

/// Campaign streams the member's list of ongoing campaigns looks at (in id order).
pub const CAMPAIGNS_SCAN_MAX: u32 = 200;
/// Shakes a member's list returns (their first, in chance order).
pub const MEMBER_SHAKES_MAX: u32 = 1_000;
/// Periods a member's "my entries and prizes" lists (their newest).
pub const MEMBER_PERIODS_MAX: u32 = 400;

/// Physical prizes a member's list returns (their newest).
pub const MEMBER_AWARDS_MAX: u32 = 200;

/// A physical prize a member won, as the staff console lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PhysicalAwardRecord {
    pub campaign_id: CampaignId,
    /// The campaign's name when the prize was won.
    pub campaign_name: String,
    pub award: AwardRef,
    pub item: String,
    pub won_at: DateTime<Utc>,
    pub handed_over_at: Option<DateTime<Utc>>,
}

/// What the campaign use cases need from the shard's database besides events.
#[async_trait]
pub trait CampaignStore: Send + Sync {
    /// Stores a sealed seed unless one is stored; returns the stored one.
    /// `period_no` 0 is a shake lottery's seed, n the seed of period n.
    async fn put_seed(
        &self,
        tenant: &TenantId,
        campaign: CampaignId,
        period_no: u32,
        sealed: &SealedSecret,
    ) -> Result<SealedSecret, PortError>;
    async fn seed(
        &self,
        tenant: &TenantId,
        campaign: CampaignId,
        period_no: u32,
    ) -> Result<Option<SealedSecret>, PortError>;
    /// Records the beacon value of a period unless one is recorded; returns
    /// the recorded one (first writer wins).
    async fn put_beacon_value(
        &self,
        tenant: &TenantId,
        campaign: CampaignId,
        period_no: u32,
        value: &BeaconValue,
        recorded_by: &str,
    ) -> Result<BeaconValue, PortError>;
    async fn beacon_value(
        &self,
        tenant: &TenantId,
        campaign: CampaignId,
        period_no: u32,
    ) -> Result<Option<BeaconValue>, PortError>;
    /// Adds page visits and share-link requests to the campaign's merchant day.
    async fn count_traffic(
        &self,
        tenant: &TenantId,
        campaign: CampaignId,
        day: chrono::NaiveDate,
        visits: i64,
        shares: i64,
    ) -> Result<(), PortError>;
    /// The campaign's traffic by merchant day (at most `limit` days, oldest first).
    async fn traffic(
        &self,
        tenant: &TenantId,
        campaign: CampaignId,
        limit: u32,
    ) -> Result<Vec<(chrono::NaiveDate, i64, i64)>, PortError>;
    /// The member's shakes in the campaign, in chance order, at most `limit`.
    async fn member_shakes(
        &self,
        tenant: &TenantId,
        campaign: CampaignId,
        member: MemberId,
        limit: u32,
    ) -> Result<Vec<ShakeDraw>, PortError>;
    /// The member's tickets per period (`campaign_member_periods`, migration
    /// 0040): `(period_no, tickets)`, newest period first, at most `limit`.
    async fn member_periods(
        &self,
        tenant: &TenantId,
        campaign: CampaignId,
        member: MemberId,
        limit: u32,
    ) -> Result<Vec<(u32, u32)>, PortError>;
    /// The member's physical prizes across the tenant's campaigns
    /// (`campaign_physical_awards`, migration 0040), newest first, at most
    /// `limit`; only those not handed over yet when `waiting_only`.
    async fn member_awards(
        &self,
        tenant: &TenantId,
        member: MemberId,
        waiting_only: bool,
        limit: u32,
    ) -> Result<Vec<PhysicalAwardRecord>, PortError>;
    /// A snatch purchase (`snatch_purchases`, migration 0029).
    async fn purchase(
        &self,
        tenant: &TenantId,
        purchase: wxcm_domain::campaign::PurchaseId,
    ) -> Result<Option<snatch::PurchaseRecord>, PortError>;
    /// The member's purchases in a snatch, newest first, at most `limit`.
    async fn member_purchases(
        &self,
        tenant: &TenantId,
        campaign: CampaignId,
        member: MemberId,
        limit: u32,
    ) -> Result<Vec<snatch::PurchaseRecord>, PortError>;
}

#[derive(Debug, thiserror::Error)]
pub enum CampaignOpError {
    #[error("campaign not found")]
    NotFound,
    /// A share link names a member the tenant does not have.
    #[error("member not found")]
    MemberNotFound,
    /// A coupon prize names a template this tenant does not have.
    #[error("coupon template {0} not found")]
    TemplateNotFound(wxcm_domain::coupon::TemplateId),
    #[error(transparent)]
    Campaign(CampaignError),
    #[error("idempotency key was already used with a different request")]
    IdempotencyMismatch,
    #[error("too much contention, try again")]
    Contention,
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error("infrastructure failure: {0}")]
    Infra(String),
    /// What this slice does not run yet.
    #[error("not supported yet: {0}")]
    Unsupported(&'static str),
    /// A paid entry the member's spendable points do not cover.
    #[error("insufficient points: {spendable} spendable, {needed} needed")]
    InsufficientPoints { spendable: i64, needed: i64 },
    /// A paid entry whose request was refused and its hold released: the
    /// same key never enters afterwards.
    #[error("this request's entry was refused and its points released; use a new key")]
    EntryAbandoned,
    /// Periods of a daily, weekly or whole-campaign cycle are opened by the scheduler.
    #[error("this campaign's periods follow its cycle; only a manual campaign's are opened by hand")]
    PeriodsByCycle,
    #[error("period {0} does not exist")]
    PeriodNotFound(u32),
    #[error("period {0} names no beacon round")]
    NoBeacon(u32),
    /// A beacon value is recorded once; another value for the round is refused.
    #[error("period {0} already has another beacon value")]
    BeaconValueConflict(u32),
    /// The draw waits for the beacon value of the round its period named.
    #[error("period {0} waits for the value of its beacon round")]
    BeaconPending(u32),
    /// The database is unreachable for now; a write's outcome is unknown.
    #[error("infrastructure unavailable: {0}")]
    Unavailable(String),
    /// A snatch purchase the member's balance does not cover (its shares went back).
    #[error("insufficient balance: {balance_fen} fen, {needed_fen} fen needed")]
    InsufficientBalance { balance_fen: i64, needed_fen: i64 },
    /// A snatch purchase whose payment was refused and its shares released:
    /// the same key never buys afterwards.
    #[error("this request's purchase was refused and its shares released; use a new key")]
    PurchaseAbandoned,
    /// The payment arrived after the reservation ended: refunded, no shares.
    #[error("the payment arrived after the reservation ended; it is refunded")]
    PaidTooLate,
    /// WeChat Pay refused (settings, the merchant).
    #[error("wechat pay: {0}")]
    Pay(String),
}

impl From<PortError> for CampaignOpError {
    fn from(e: PortError) -> Self {
        if e.is_transient() {
            CampaignOpError::Unavailable(e.to_string())
        } else {
            CampaignOpError::Infra(e.to_string())
        }
    }
}

impl From<ExecuteError<CampaignError>> for CampaignOpError {
    fn from(e: ExecuteError<CampaignError>) -> Self {
        match e {
            ExecuteError::Domain(CampaignError::NotFound) | ExecuteError::ForeignAggregate => CampaignOpError::NotFound,
            ExecuteError::Domain(d) => CampaignOpError::Campaign(d),
            ExecuteError::IdempotencyMismatch => CampaignOpError::IdempotencyMismatch,
            ExecuteError::Contention => CampaignOpError::Contention,
            ExecuteError::Invariant(b) => CampaignOpError::Infra(b.to_string()),
            ExecuteError::Store(s) => CampaignOpError::Infra(s),
            ExecuteError::Unavailable(s) => CampaignOpError::Unavailable(s),
        }
    }
}

/// One period of a periodic lottery (its seed only once drawn).
#[derive(Debug, Clone, Serialize)]
pub struct PeriodView {
    pub period_no: u32,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub commitment: SeedCommitment,
    pub entries: u32,
    pub entrants: u32,
    /// `open`, `drawn` or `cancelled`.
    pub state: &'static str,
    pub seed: Option<DrawSeed>,
    pub winners: u32,
    pub beacon: Option<BeaconRound>,
}

/// A campaign as its operators see it (the seed only once revealed).
#[derive(Debug, Clone, Serialize)]
pub struct CampaignView {
    pub campaign_id: CampaignId,
    pub terms: CampaignTerms,
    /// The recorded step.
    pub status: Status,
    /// The step a participation meets now (the clock moves a scheduled
    /// campaign on before the scheduler records it).
    pub phase: Status,
    pub commitment: Option<SeedCommitment>,
    pub revealed_seed: Option<DrawSeed>,
    pub odds: Option<ShakeOdds>,
    pub participants: u64,
    pub shakes: u64,
    pub winners: u64,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub periods: Vec<PeriodView>,
    /// A 1-yuan snatch's shares and periods.
    pub snatch: Option<snatch::SnatchView>,
    /// A voting campaign's items (every status).
    pub vote_items: u32,
}

impl CampaignView {
    pub fn of(state: &CampaignState, now: DateTime<Utc>) -> Self {
        Self {
            campaign_id: state.campaign_id,
            terms: state.terms.clone(),
            status: state.status,
            phase: state.phase_at(now),
            commitment: state.commitment,
            revealed_seed: state.revealed_seed,
            odds: state.shake_odds().filter(|_| state.status != Status::Draft),
            participants: state.participants() as u64,
            shakes: state.participations_total,
            winners: state.winners_total,
            created_at: state.created_at,
            started_at: state.started_at,
            ended_at: state.ended_at,
            snatch: snatch::SnatchView::of(state),
            vote_items: u32::try_from(state.voting.items.len()).unwrap_or(u32::MAX),
            periods: state
                .periods
                .iter()
                .map(|(n, p)| {
                    let (state, seed, winners) = match &p.end {
                        None => ("open", None, 0),
                        Some(PeriodEnd::Drawn { seed, winners, .. }) => {
                            ("drawn", Some(*seed), u32::try_from(winners.len()).unwrap_or(u32::MAX))
                        }
                        Some(PeriodEnd::Cancelled { .. }) => ("cancelled", None, 0),
                    };
                    PeriodView {
                        period_no: *n,
                        starts_at: p.starts_at,
                        ends_at: p.ends_at,
                        commitment: p.commitment,
                        entries: p.entries_total,
                        entrants: p.entrants,
                        state,
                        seed,
                        winners,
                        beacon: p.beacon.clone(),
                    }
                })
                .collect(),
        }
    }
}

fn campaign_id_for(tenant: &TenantId, key: &IdempotencyKey) -> CampaignId {
    const NAMESPACE: Uuid = Uuid::from_u128(0x6b1e_90d4_2f7a_4c55_9e03_c4a8_17d2_5f3b);
    let name = format!("{}\u{1f}{}", tenant.as_str(), key.as_str());
    CampaignId::from_uuid(Uuid::new_v5(&NAMESPACE, name.as_bytes()))
}

fn infra(e: impl std::fmt::Display) -> CampaignOpError {
    CampaignOpError::Infra(e.to_string())
}

/// The campaign as `tenant` sees it (another tenant's is not found).
pub(crate) async fn state_of(
    shard: &ShardServices,
    tenant: &TenantId,
    campaign_id: CampaignId,
) -> Result<CampaignState, CampaignOpError> {
    let (campaign, _) = shard.campaigns.load(tenant, &campaign_id.to_string()).await?;
    campaign.created.ok_or(CampaignOpError::NotFound)
}

async fn run(
    app: &App,
    ctx: &CommandContext,
    campaign_id: CampaignId,
    command: CampaignCommand,
    request: &(impl Serialize + Sync),
) -> Result<Outcome<wxcm_domain::campaign::CampaignEvent>, CampaignOpError> {
    let shard = app.router.route(&ctx.tenant_id)?;
    Ok(shard.campaigns.execute(&campaign_id.to_string(), command, request, ctx).await?)
}

/// Creates a draft; its id derives from the key, so a retried request creates nothing new.
#[instrument(skip_all, fields(tenant = %ctx.tenant_id))]
pub async fn create(
    app: &App,
    ctx: &CommandContext,
    terms: CampaignTerms,
    actor: Actor,
) -> Result<CampaignView, CampaignOpError> {
    check_prize_templates(app, &ctx.tenant_id, &terms).await?;
    let campaign_id = campaign_id_for(&ctx.tenant_id, &ctx.idempotency_key);
    let request = serde_json::json!({ "create_campaign": &terms });
    let command = CampaignCommand::Create { campaign_id, tenant_id: ctx.tenant_id.clone(), terms, actor };
    run(app, ctx, campaign_id, command, &request).await?;
    get(app, &ctx.tenant_id, campaign_id).await
}

/// Every coupon prize must name one of the tenant's templates: a winner would
/// otherwise get nothing (issuing is tenant-scoped). A template switched off or
/// sold out later gives `not_issued`, as the coupon's own rules say.
async fn check_prize_templates(app: &App, tenant: &TenantId, terms: &CampaignTerms) -> Result<(), CampaignOpError> {
    let prizes: Vec<&Prize> = match &terms.kind {
        CampaignKind::ShakeLottery(shake) => shake.slots.iter().map(|s| &s.prize).collect(),
        CampaignKind::PeriodicLottery(periodic) => periodic.tiers.iter().map(|t| &t.prize).collect(),
        CampaignKind::Snatch(snatch) => vec![&snatch.prize],
        CampaignKind::Voting(_) => Vec::new(),
    };
    let shard = app.router.route(tenant)?;
    for prize in prizes {
        if let Prize::Coupon { template_id } = prize {
            let (template, _) = shard.coupon_templates.load(tenant, &template_id.to_string()).await.map_err(infra)?;
            if template.tenant() != Some(tenant) {
                return Err(CampaignOpError::TemplateNotFound(*template_id));
            }
        }
    }
    Ok(())
}

/// Replaces a draft's terms.
pub async fn edit(
    app: &App,
    ctx: &CommandContext,
    campaign_id: CampaignId,
    terms: CampaignTerms,
    actor: Actor,
) -> Result<CampaignView, CampaignOpError> {
    check_prize_templates(app, &ctx.tenant_id, &terms).await?;
    let request = serde_json::json!({ "edit_campaign": campaign_id, "terms": &terms });
    run(app, ctx, campaign_id, CampaignCommand::Edit { terms, actor }, &request).await?;
    get(app, &ctx.tenant_id, campaign_id).await
}

pub async fn get(app: &App, tenant: &TenantId, campaign_id: CampaignId) -> Result<CampaignView, CampaignOpError> {
    let shard = app.router.route(tenant)?;
    let state = state_of(&shard, tenant, campaign_id).await?;
    Ok(CampaignView::of(&state, app.clock.now()))
}

/// The seed of a shake lottery (`period_no` 0) or of a period, created from
/// the OS CSPRNG and sealed on first use (first writer wins).
pub(crate) async fn seed_for(
    app: &App,
    shard: &ShardServices,
    tenant: &TenantId,
    campaign_id: CampaignId,
    period_no: u32,
) -> Result<DrawSeed, CampaignOpError> {
    if let Some(sealed) = shard.campaign_store.seed(tenant, campaign_id, period_no).await? {
        return unseal(app, &sealed);
    }
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.try_fill_bytes(&mut bytes).map_err(|e| infra(format!("OS randomness: {e}")))?;
    let fresh = DrawSeed::from_bytes(bytes);
    let sealed = app.sealer.seal(&fresh.to_hex())?;
    let stored = shard.campaign_store.put_seed(tenant, campaign_id, period_no, &sealed).await?;
    unseal(app, &stored)
}

fn unseal(app: &App, sealed: &SealedSecret) -> Result<DrawSeed, CampaignOpError> {
    unseal_with(&*app.sealer, sealed).map_err(CampaignOpError::from)
}

/// Opens a sealed seed (the shake lanes hold the sealer, not the app).
pub(crate) fn unseal_with(sealer: &dyn SecretSealer, sealed: &SealedSecret) -> Result<DrawSeed, PortError> {
    let hex = sealer.open(sealed)?;
    DrawSeed::parse(&hex).map_err(|_| PortError::msg("a stored campaign seed is not 32 bytes of hex"))
}

/// An unsealed seed (`None` before it was made): the shake lottery's
/// (`period_no` 0) or a period's.
pub(crate) async fn stored_seed(
    app: &App,
    shard: &ShardServices,
    tenant: &TenantId,
    campaign_id: CampaignId,
    period_no: u32,
) -> Result<Option<DrawSeed>, CampaignOpError> {
    match shard.campaign_store.seed(tenant, campaign_id, period_no).await? {
        Some(sealed) => unseal(app, &sealed).map(Some),
        None => Ok(None),
    }
}

/// Fixes the terms; a shake lottery commits to its sealed seed here.
#[instrument(skip_all, fields(tenant = %ctx.tenant_id, %campaign_id))]
pub async fn schedule(
    app: &App,
    ctx: &CommandContext,
    campaign_id: CampaignId,
    actor: Actor,
) -> Result<CampaignView, CampaignOpError> {
    let shard = app.router.route(&ctx.tenant_id)?;
    let state = state_of(&shard, &ctx.tenant_id, campaign_id).await?;
    let commitment = match (&state.terms.kind, state.status) {
        (CampaignKind::ShakeLottery(_), Status::Draft) => {
            Some(seed_for(app, &shard, &ctx.tenant_id, campaign_id, 0).await?.commitment())
        }
        // Not a draft: the domain refuses (or the key replays the first answer).
        (CampaignKind::ShakeLottery(_), _) => state.commitment,
        (CampaignKind::PeriodicLottery(_) | CampaignKind::Snatch(_) | CampaignKind::Voting(_), _) => None,
    };
    let request = serde_json::json!({ "schedule_campaign": campaign_id });
    run(app, ctx, campaign_id, CampaignCommand::Schedule { commitment, actor }, &request).await?;
    get(app, &ctx.tenant_id, campaign_id).await
}

/// Starts a scheduled campaign before its time.
pub async fn start(
    app: &App,
    ctx: &CommandContext,
    campaign_id: CampaignId,
    actor: Actor,
) -> Result<CampaignView, CampaignOpError> {
    let request = serde_json::json!({ "start_campaign": campaign_id });
    run(app, ctx, campaign_id, CampaignCommand::Start { actor }, &request).await?;
    get(app, &ctx.tenant_id, campaign_id).await
}

/// Ends the campaign by hand, then reveals a shake lottery's seed. An end
/// already recorded still gets its reveal (a crash between the two).
#[instrument(skip_all, fields(tenant = %ctx.tenant_id, %campaign_id))]
pub async fn end(
    app: &App,
    ctx: &CommandContext,
    campaign_id: CampaignId,
    actor: Actor,
) -> Result<CampaignView, CampaignOpError> {
    let request = serde_json::json!({ "end_campaign": campaign_id });
    let ended = run(app, ctx, campaign_id, CampaignCommand::End { actor }, &request).await;
    match ended {
        Ok(_) | Err(CampaignOpError::Campaign(CampaignError::AlreadyEnded)) => {
            reveal(app, &ctx.tenant_id, campaign_id).await?;
        }
        Err(_) => {}
    }
    ended?;
    get(app, &ctx.tenant_id, campaign_id).await
}

/// Hands a won physical prize over at the store (once; the award names the
/// shake or the period's rank it was won by).
pub async fn hand_over(
    app: &App,
    ctx: &CommandContext,
    campaign_id: CampaignId,
    award: wxcm_domain::campaign::AwardRef,
    actor: Actor,
) -> Result<CampaignView, CampaignOpError> {
    let request = serde_json::json!({ "hand_over": campaign_id, "award": award });
    run(app, ctx, campaign_id, CampaignCommand::HandOverPrize { award, actor }, &request).await?;
    get(app, &ctx.tenant_id, campaign_id).await
}

/// A member's physical prizes across the tenant's campaigns, newest first
/// (only those waiting at the store when `waiting_only`); a member the tenant
/// does not have is not found.
pub async fn member_awards(
    app: &App,
    tenant: &TenantId,
    member_id: MemberId,
    waiting_only: bool,
) -> Result<Vec<PhysicalAwardRecord>, CampaignOpError> {
    let shard = app.router.route(tenant)?;
    let (member, _) = shard.members.load(tenant, &member_id.to_string()).await?;
    if member.registration.is_none() {
        return Err(CampaignOpError::MemberNotFound);
    }
    Ok(shard.campaign_store.member_awards(tenant, member_id, waiting_only, MEMBER_AWARDS_MAX).await?)
}

/// The campaign's draws recomputed from its events as `wxcm audit draw` does
/// (only period `period`'s draw when given); another tenant's campaign is not found.
pub async fn audit_draws(
    app: &App,
    tenant: &TenantId,
    campaign_id: CampaignId,
    period: Option<u32>,
) -> Result<crate::ports::DrawAuditVerdict, crate::ports::DrawAuditError> {
    let shard = app.router.route(tenant)?;
    shard.draw_audit.audit_draws(tenant, campaign_id, period).await
}

/// Reveals an ended shake lottery's seed (once; again is a no-op). Returns
/// the events written.
pub async fn reveal(app: &App, tenant: &TenantId, campaign_id: CampaignId) -> Result<u32, CampaignOpError> {
    let shard = app.router.route(tenant)?;
    let state = state_of(&shard, tenant, campaign_id).await?;
    if !matches!(state.terms.kind, CampaignKind::ShakeLottery(_)) || state.revealed_seed.is_some() {
        return Ok(0);
    }
    let Some(seed) = stored_seed(app, &shard, tenant, campaign_id, 0).await? else {
        // Ended before it was ever scheduled: there is nothing to reveal.
        return Ok(0);
    };
    let key = system_key(&["campaign-reveal", &campaign_id.to_string()])?;
    let ctx = CommandContext::new(tenant.clone(), key, "system:campaigns".into());
    let actor = Actor::System { job: "campaigns".into() };
    let request = serde_json::json!({ "reveal_seed": campaign_id });
    let outcome = run(app, &ctx, campaign_id, CampaignCommand::RevealShakeSeed { seed, actor }, &request).await?;
    info!(%campaign_id, "shake lottery seed revealed");
    Ok(outcome_written(&outcome))
}

fn outcome_written<E>(outcome: &Outcome<E>) -> u32 {
    if outcome.replayed {
        0
    } else {
        u32::try_from(outcome.events.len()).unwrap_or(u32::MAX)
    }
}

pub(crate) fn system_key(parts: &[&str]) -> Result<IdempotencyKey, CampaignOpError> {
    crate::members::system_key(parts).map_err(infra)
}

/// Due work `campaign_start` (migration 0024): starts a scheduled campaign at
/// its time; anything else (already started, ended) writes nothing.
pub async fn due_start(app: &App, tenant: &TenantId, campaign_id: CampaignId) -> Result<u32, CampaignOpError> {
    let shard = app.router.route(tenant)?;
    let state = state_of(&shard, tenant, campaign_id).await?;
    if state.status != Status::Scheduled || app.clock.now() >= state.terms.ends_at {
        return Ok(0);
    }
    let key = system_key(&["campaign-start", &campaign_id.to_string()])?;
    let ctx = CommandContext::new(tenant.clone(), key, "system:scheduler".into());
    let actor = Actor::System { job: "scheduler".into() };
    let request = serde_json::json!({ "start_campaign": campaign_id });
    let written = match run(app, &ctx, campaign_id, CampaignCommand::Start { actor }, &request).await {
        Ok(outcome) => outcome_written(&outcome),
        Err(CampaignOpError::Campaign(CampaignError::AlreadyEnded | CampaignError::WrongStatus(_))) => 0,
        Err(e) => return Err(e),
    };
    let opened = periods::open_next_period(app, tenant, campaign_id).await?;
    Ok(written + opened + snatch::open_first_period(app, tenant, campaign_id).await?)
}

/// Due work `campaign_end`: ends the campaign at its time and reveals a shake
/// lottery's seed.
pub async fn due_end(app: &App, tenant: &TenantId, campaign_id: CampaignId) -> Result<u32, CampaignOpError> {
    let shard = app.router.route(tenant)?;
    let state = state_of(&shard, tenant, campaign_id).await?;
    let mut written = 0;
    if matches!(state.status, Status::Scheduled | Status::Ongoing) {
        let key = system_key(&["campaign-end", &campaign_id.to_string()])?;
        let ctx = CommandContext::new(tenant.clone(), key, "system:scheduler".into());
        let actor = Actor::System { job: "scheduler".into() };
        let request = serde_json::json!({ "end_campaign": campaign_id });
        match run(app, &ctx, campaign_id, CampaignCommand::End { actor }, &request).await {
            Ok(outcome) => written += outcome_written(&outcome),
            Err(CampaignOpError::Campaign(CampaignError::AlreadyEnded)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(written + reveal(app, tenant, campaign_id).await?)
}

/// Campaigns per page of the admin list.
pub const CAMPAIGN_PAGE_MAX: u32 = 100;

/// A page of the tenant's campaigns in id order, after `after` (any status).
pub async fn list(
    app: &App,
    tenant: &TenantId,
    after: Option<CampaignId>,
    limit: u32,
) -> Result<Vec<CampaignView>, CampaignOpError> {
    let shard = app.router.route(tenant)?;
    let after = after.map(|a| a.to_string());
    let limit = limit.clamp(1, CAMPAIGN_PAGE_MAX);
    let ids = shard.event_log.stream_ids(tenant, Campaign::TYPE, after.as_deref(), limit).await?;
    let now = app.clock.now();
    let mut views = Vec::with_capacity(ids.len());
    for id in ids {
        let campaign_id = CampaignId::parse(&id).map_err(infra)?;
        match state_of(&shard, tenant, campaign_id).await {
            Ok(state) => views.push(CampaignView::of(&state, now)),
            Err(CampaignOpError::NotFound) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(views)
}

/// Ongoing campaigns a member may see (of the first [`CAMPAIGNS_SCAN_MAX`]
/// campaign streams of the tenant).
pub async fn ongoing(app: &App, tenant: &TenantId) -> Result<Vec<CampaignView>, CampaignOpError> {
    let shard = app.router.route(tenant)?;
    let ids = shard.event_log.stream_ids(tenant, Campaign::TYPE, None, CAMPAIGNS_SCAN_MAX).await?;
    let now = app.clock.now();
    let mut views = Vec::new();
    for id in ids {
        let campaign_id = CampaignId::parse(&id).map_err(infra)?;
        let state = match state_of(&shard, tenant, campaign_id).await {
            Ok(state) => state,
            Err(CampaignOpError::NotFound) => continue,
            Err(e) => return Err(e),
        };
        if state.phase_at(now) == Status::Ongoing {
            views.push(CampaignView::of(&state, now));
        }
    }
    Ok(views)
}
