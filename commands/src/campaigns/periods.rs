//! Periodic lotteries: periods opened by the scheduler with a sealed seed
//! each, entries (free or paid in points), and the draw at each period's end.
//!
//! **Open.** A cycle's period (daily or weekly, `CampaignState::next_period_window`)
//! is opened when the campaign starts and after each draw: a fresh seed from
//! the OS CSPRNG is sealed into `campaign_seeds` under the period's number
//! (first writer wins) and only its commitment goes into
//! `CampaignPeriodOpened`, before the first entry. The event writes due work
//! `campaign_period_draw` at the period's end (migration 0024).
//!
//! **Draw.** The due item unseals the seed and runs `DrawPeriod` (a second
//! draw with the same seed writes nothing, so two schedulers draw once); the
//! event reveals the seed and lists the winners, which anyone can recompute
//! (`wxcm audit draw`). Each winner's points or coupon prize is issued under
//! a key of campaign and award (`period:<n>:rank:<r>`), inline and again
//! from the `campaign_prize` due work the draw wrote; then the next period
//! opens.
//!
//! **Paid entries and cancels.** An entry that costs points holds them,
//! records the entry and spends the hold (see `enter`); a cancelled period
//! is never drawn and every paid entry is refunded once (`cancel_period`,
//! due work `campaign_entry_refund`).
//!
//! **By hand and beacons.** A manual campaign's periods are opened by an
//! operator ([`open_period_by_hand`]) with any window inside the campaign, and
//! may name an external beacon round (e.g. drand) fixed before entries close;
//! its value, once the beacon has published it, is recorded by an operator
//! ([`record_beacon_value`], first writer wins; an auditor checks it against
//! the beacon) and the draw mixes it into the seed. A draw due before the value
//! is recorded fails and is retried by the scheduler; recording the value of an
//! ended period draws it at once.
//!
//! Not yet: fetching beacon values (no beacon is reachable here), and a
//! period whose whole window passed while no scheduler ran (the cycle then
//! stops: logged).

use chrono::{DateTime, Utc};
use tracing::{info, instrument, warn};
use wxcm_domain::campaign::{
    AwardRef, BeaconRound, BeaconValue, CampaignCommand, CampaignError, CampaignEvent, CampaignId, CampaignKind, Cycle,
    EntryId, EntryRefund, PeriodEnd, Prize, Refusal, Status,
};
use wxcm_domain::member::{ExpiryPolicy, MemberCommand, MemberError, PointsSource, Provenance};
use wxcm_domain::{Actor, IdempotencyKey, MemberId, PointsAmount, Reference, TenantId};

use super::shakes::issue_award;
use super::{
    get, infra, outcome_written, run, seed_for, state_of, stored_seed, system_key, CampaignOpError, CampaignView,
    MEMBER_PERIODS_MAX,
};
use crate::members::MemberOpError;
use crate::{App, CommandContext};

/// The next period of a daily or weekly cycle, when the campaign runs, no
/// period is open and one is left. Returns the events written.
pub async fn open_next_period(app: &App, tenant: &TenantId, campaign_id: CampaignId) -> Result<u32, CampaignOpError> {
    let shard = app.router.route(tenant)?;
    let state = state_of(&shard, tenant, campaign_id).await?;
    let CampaignKind::PeriodicLottery(terms) = &state.terms.kind else { return Ok(0) };
    if terms.cycle == Cycle::Manual || !matches!(state.status, Status::Scheduled | Status::Ongoing) {
        return Ok(0);
    }
    if state.periods.values().next_back().is_some_and(|p| p.end.is_none()) {
        return Ok(0);
    }
    let Some((starts_at, ends_at)) = state.next_period_window() else { return Ok(0) };
    if ends_at <= app.clock.now() {
        warn!(%campaign_id, %ends_at, "the next period's window has passed; the cycle stops here");
        return Ok(0);
    }
    let period_no = state.periods.keys().next_back().map_or(1, |n| n + 1);
    let seed = seed_for(app, &shard, tenant, campaign_id, period_no).await?;
    let key = system_key(&["campaign-open-period", &campaign_id.to_string(), &period_no.to_string()])?;
    let ctx = CommandContext::new(tenant.clone(), key, "system:scheduler".into());
    let command = CampaignCommand::OpenPeriod {
        period_no,
        starts_at,
        ends_at,
        commitment: seed.commitment(),
        beacon: None,
        actor: Actor::System { job: "scheduler".into() },
    };
    let request = serde_json::json!({ "open_period": campaign_id, "period_no": period_no });
    let outcome = run(app, &ctx, campaign_id, command, &request).await?;
    info!(%campaign_id, period_no, %starts_at, %ends_at, "campaign period opened");
    Ok(outcome_written(&outcome))
}

/// One entry of `member_id` into the open period (idempotent by the request's
/// key: a repeated request names the same entry). Returns the period's number.
///
/// A paid entry (`entry_cost`) runs three steps, each under a key derived
/// from the entry (so a retry, or ten concurrent requests with one key, find
/// the same hold, entry and spend): hold the cost on the member's ledger,
/// record the entry (the request's own key), spend the hold. Insufficient
/// points refuse at the hold, before anything is recorded; an entry refused
/// for good releases the hold, and the key then answers `EntryAbandoned`.
#[instrument(skip_all, fields(tenant = %ctx.tenant_id, %campaign_id, %member_id))]
pub async fn enter(
    app: &App,
    ctx: &CommandContext,
    campaign_id: CampaignId,
    member_id: MemberId,
) -> Result<u32, CampaignOpError> {
    let tenant = &ctx.tenant_id;
    let shard = app.router.route(tenant)?;
    let state = state_of(&shard, tenant, campaign_id).await?;
    let CampaignKind::PeriodicLottery(terms) = &state.terms.kind else {
        return Err(CampaignOpError::Campaign(CampaignError::WrongKind("periodic_lottery")));
    };
    let Some(period_no) = state.periods.iter().next_back().filter(|(_, p)| p.end.is_none()).map(|(n, _)| *n) else {
        return Err(CampaignOpError::Campaign(CampaignError::Refused(Refusal::NotOngoing)));
    };
    let (member, _) = shard.members.load(tenant, &member_id.to_string()).await?;
    let entry_id = EntryId::for_request(tenant, campaign_id, member_id, &ctx.idempotency_key);
    let command = CampaignCommand::Enter { entry_id, member_id, period_no, card_member: member.registration.is_some() };
    let request = serde_json::json!({ "enter": campaign_id, "member": member_id });
    let Some(cost) = terms.entry_cost else {
        run(app, ctx, campaign_id, command, &request).await?;
        return Ok(period_no);
    };
    let paid = PaidEntry { app, tenant, campaign_id, member_id, entry_id, period_no };
    if shard.event_log.find_idempotency(tenant, paid.key("release")?.as_str()).await?.is_some() {
        return Err(CampaignOpError::EntryAbandoned);
    }
    let hold_id = paid.hold_id()?;
    // The hold runs under the request's own key and request, so that key used
    // again for another campaign (or anything else) is refused as reused.
    paid.ledger_keyed(ctx.idempotency_key.clone(), &request, |provenance| MemberCommand::HoldPoints {
        hold_id: hold_id.clone(),
        points: cost,
        provenance,
    })
    .await?;
    // Under a key of the entry (not the request's): the hold's due work finds
    // by this key whether the entry was recorded.
    let mut enter_ctx = CommandContext::new(tenant.clone(), paid.key("enter")?, ctx.actor.clone());
    enter_ctx.correlation_id = ctx.correlation_id;
    match run(app, &enter_ctx, campaign_id, command, &request).await {
        Ok(_) => {}
        Err(e @ (CampaignOpError::Campaign(_) | CampaignOpError::NotFound | CampaignOpError::IdempotencyMismatch)) => {
            // Refused for good: the entry is not recorded, so the points go back.
            paid.ledger("release", |provenance| MemberCommand::ReleaseHeldPoints {
                hold_id: hold_id.clone(),
                provenance,
            })
            .await?;
            return Err(e);
        }
        // Unknown outcome: the hold stays for the retry with the same key to settle.
        Err(e) => return Err(e),
    }
    paid.ledger("spend", |provenance| MemberCommand::SpendHeldPoints { hold_id: hold_id.clone(), provenance })
        .await
        .map_err(|e| match e {
            // Released by the hold's due work while this request stalled: logged, the entry stands.
            HoldStep::HoldNotFound => infra(format!("entry {entry_id} recorded after its hold was released")),
            HoldStep::Failed(e) => e,
        })?;
    info!(entry_id = %entry_id, period_no, points = cost.get(), "paid campaign entry recorded");
    Ok(period_no)
}

/// The ledger steps of one paid entry, each under a key of entry and step.
struct PaidEntry<'a> {
    app: &'a App,
    tenant: &'a TenantId,
    campaign_id: CampaignId,
    member_id: MemberId,
    entry_id: EntryId,
    period_no: u32,
}

impl PaidEntry<'_> {
    fn key(&self, step: &str) -> Result<IdempotencyKey, CampaignOpError> {
        system_key(&["campaign-entry", step, &self.campaign_id.to_string(), &self.entry_id.to_string()])
    }

    fn hold_id(&self) -> Result<Reference, CampaignOpError> {
        Reference::parse(&format!("campaign-entry:{}", self.entry_id)).map_err(infra)
    }

    async fn ledger(&self, step: &str, command: impl FnOnce(Provenance) -> MemberCommand) -> Result<(), HoldStep> {
        let request = serde_json::json!({ "campaign_entry": self.entry_id, "step": step });
        self.ledger_keyed(self.key(step)?, &request, command).await
    }

    async fn ledger_keyed(
        &self,
        key: IdempotencyKey,
        request: &serde_json::Value,
        command: impl FnOnce(Provenance) -> MemberCommand,
    ) -> Result<(), HoldStep> {
        let actor = Actor::Member { member_id: self.member_id };
        let ctx = CommandContext::new(self.tenant.clone(), key.clone(), actor.label());
        let reference = format!("campaign:{}:period:{}:entry:{}", self.campaign_id, self.period_no, self.entry_id);
        let provenance = Provenance {
            actor,
            reason: Reference::parse("campaign entry").map_err(infra)?,
            reference: Some(Reference::parse(&reference).map_err(infra)?),
            idempotency_key: key,
        };
        match crate::members::execute(self.app, self.tenant, self.member_id, command(provenance), request, &ctx).await {
            Ok(_) => Ok(()),
            Err(MemberOpError::IdempotencyMismatch) => Err(HoldStep::Failed(CampaignOpError::IdempotencyMismatch)),
            Err(MemberOpError::Rejected(MemberError::HoldNotFound(_))) => Err(HoldStep::HoldNotFound),
            Err(MemberOpError::Rejected(MemberError::InsufficientPoints { available, requested })) => {
                Err(HoldStep::Failed(CampaignOpError::InsufficientPoints { spendable: available, needed: requested }))
            }
            Err(MemberOpError::Unavailable(e)) => Err(HoldStep::Failed(CampaignOpError::Unavailable(e))),
            Err(MemberOpError::Contention) => Err(HoldStep::Failed(CampaignOpError::Contention)),
            Err(e) => Err(HoldStep::Failed(infra(e))),
        }
    }
}

/// How a ledger step of a paid entry failed: the hold is gone (spent or
/// released already), or anything else.
enum HoldStep {
    HoldNotFound,
    Failed(CampaignOpError),
}

impl From<CampaignOpError> for HoldStep {
    fn from(e: CampaignOpError) -> Self {
        HoldStep::Failed(e)
    }
}

impl From<HoldStep> for CampaignOpError {
    fn from(e: HoldStep) -> Self {
        match e {
            HoldStep::HoldNotFound => infra("the entry's hold is gone"),
            HoldStep::Failed(e) => e,
        }
    }
}

/// Due work `campaign_entry_hold`, aggregate id `<member>/<reference>` with
/// the hold's reference `campaign:<c>:period:<n>:entry:<e>` (written with the
/// hold of a paid entry, migration 0026, 10 minutes later): settles a hold
/// its request left (a crash between the steps, no retry). The entry
/// recorded (its key exists) → spend the hold; never recorded → release it
/// (the request's key then answers `entry_abandoned`). A hold already spent
/// or released is done.
pub async fn due_entry_hold(app: &App, tenant: &TenantId, aggregate_id: &str) -> Result<u32, CampaignOpError> {
    let bad = || {
        infra(format!("campaign_entry_hold item {aggregate_id:?} is not <member>/campaign:<c>:period:<n>:entry:<e>"))
    };
    let (member, reference) = aggregate_id.split_once('/').ok_or_else(bad)?;
    let parts: Vec<&str> = reference.split(':').collect();
    let ["campaign", campaign, "period", period, "entry", entry] = parts.as_slice() else { return Err(bad()) };
    let paid = PaidEntry {
        app,
        tenant,
        campaign_id: CampaignId::parse(campaign).map_err(|_| bad())?,
        member_id: MemberId::parse(member).map_err(|_| bad())?,
        entry_id: EntryId::parse(entry).map_err(|_| bad())?,
        period_no: period.parse().map_err(|_| bad())?,
    };
    let shard = app.router.route(tenant)?;
    let recorded = shard.event_log.find_idempotency(tenant, paid.key("enter")?.as_str()).await?.is_some();
    let hold_id = paid.hold_id()?;
    let settled = if recorded {
        paid.ledger("spend", |provenance| MemberCommand::SpendHeldPoints { hold_id, provenance }).await
    } else {
        paid.ledger("release", |provenance| MemberCommand::ReleaseHeldPoints { hold_id, provenance }).await
    };
    match settled {
        Ok(()) => {
            info!(entry_id = %paid.entry_id, recorded, "a paid entry's hold settled by due work");
            Ok(1)
        }
        Err(HoldStep::HoldNotFound) => Ok(0),
        Err(HoldStep::Failed(e)) => Err(e),
    }
}

/// Cancels a period before its draw (an admin's request). The event lists
/// every paid entry's refund; its trigger writes one `campaign_entry_refund`
/// due item per refund (migration 0026), which grants the points back once.
/// The refunds also run inline here; the due items then replay them.
#[instrument(skip_all, fields(tenant = %ctx.tenant_id, %campaign_id, period_no))]
pub async fn cancel_period(
    app: &App,
    ctx: &CommandContext,
    campaign_id: CampaignId,
    period_no: u32,
    actor: Actor,
) -> Result<(), CampaignOpError> {
    let command = CampaignCommand::CancelPeriod { period_no, actor };
    let request = serde_json::json!({ "cancel_period": campaign_id, "period_no": period_no });
    let outcome = run(app, ctx, campaign_id, command, &request).await?;
    for committed in &outcome.events {
        if let CampaignEvent::CampaignPeriodCancelled { refunds, .. } = &committed.event {
            info!(refunds = refunds.len(), "campaign period cancelled");
            for refund in refunds {
                refund_entry(app, &ctx.tenant_id, campaign_id, period_no, refund).await?;
            }
        }
    }
    Ok(())
}

/// Grants one cancelled entry's points back (an ordinary ledger credit that
/// never expires, referencing the entry), under a key of campaign and entry.
async fn refund_entry(
    app: &App,
    tenant: &TenantId,
    campaign_id: CampaignId,
    period_no: u32,
    refund: &EntryRefund,
) -> Result<(), CampaignOpError> {
    let key = system_key(&["campaign-entry-refund", &campaign_id.to_string(), &refund.entry_id.to_string()])?;
    let actor = Actor::System { job: "campaign-refunds".into() };
    let ctx = CommandContext::new(tenant.clone(), key.clone(), actor.label());
    let reference = format!("campaign:{campaign_id}:period:{period_no}:entry:{}", refund.entry_id);
    let command = MemberCommand::GrantPoints {
        points: refund.points,
        source: PointsSource::Campaign,
        expiry: ExpiryPolicy::Never,
        provenance: Provenance {
            actor,
            reason: Reference::parse("campaign entry refund").map_err(infra)?,
            reference: Some(Reference::parse(&reference).map_err(infra)?),
            idempotency_key: key,
        },
    };
    let request = serde_json::json!({ "refund_entry": refund.entry_id, "points": refund.points });
    crate::members::execute(app, tenant, refund.member_id, command, &request, &ctx).await.map_err(infra)?;
    Ok(())
}

/// Due work `campaign_entry_refund`, aggregate id
/// `<campaign>/<period>/<entry>/<member>/<points>` (written with
/// `CampaignPeriodCancelled`, migration 0026): the refund, again or for the
/// first time when the cancelling request died before it.
pub async fn due_entry_refund(app: &App, tenant: &TenantId, aggregate_id: &str) -> Result<u32, CampaignOpError> {
    let bad = || {
        infra(format!(
            "campaign_entry_refund item {aggregate_id:?} is not <campaign>/<period>/<entry>/<member>/<points>"
        ))
    };
    let parts: Vec<&str> = aggregate_id.split('/').collect();
    let [campaign, period, entry, member, points] = parts.as_slice() else { return Err(bad()) };
    let campaign_id = CampaignId::parse(campaign).map_err(|_| bad())?;
    let period_no: u32 = period.parse().map_err(|_| bad())?;
    let entry_id = EntryId::parse(entry).map_err(|_| bad())?;
    let member_id = MemberId::parse(member).map_err(|_| bad())?;
    let points = PointsAmount::new(points.parse().map_err(|_| bad())?).map_err(|_| bad())?;
    let shard = app.router.route(tenant)?;
    let state = state_of(&shard, tenant, campaign_id).await?;
    let cancelled = state.periods.get(&period_no).is_some_and(|p| matches!(p.end, Some(PeriodEnd::Cancelled { .. })));
    if !cancelled {
        return Err(infra(format!("period {period_no} of {campaign_id} is not cancelled")));
    }
    refund_entry(app, tenant, campaign_id, period_no, &EntryRefund { entry_id, member_id, points }).await?;
    Ok(0)
}

fn parse_period_item(aggregate_id: &str) -> Result<(CampaignId, u32), CampaignOpError> {
    let bad = || infra(format!("campaign_period_draw item {aggregate_id:?} is not <campaign>/<period>"));
    let (campaign, period) = aggregate_id.split_once('/').ok_or_else(bad)?;
    Ok((CampaignId::parse(campaign).map_err(|_| bad())?, period.parse().map_err(|_| bad())?))
}

/// Due work `campaign_period_draw`, aggregate id `<campaign>/<period>`: draws
/// the period with its unsealed seed, issues the winners' prizes, opens the
/// next period. Returns the events written.
pub async fn due_period_draw(app: &App, tenant: &TenantId, aggregate_id: &str) -> Result<u32, CampaignOpError> {
    let (campaign_id, period_no) = parse_period_item(aggregate_id)?;
    let shard = app.router.route(tenant)?;
    let state = state_of(&shard, tenant, campaign_id).await?;
    if state.is_snatch() {
        return super::snatch::due_period_end(app, tenant, campaign_id, period_no).await;
    }
    let period = state.periods.get(&period_no).ok_or_else(|| infra(format!("no period {period_no}")))?;
    let mut written = 0;
    match &period.end {
        // Never drawn; the cycle goes on with its next period.
        Some(PeriodEnd::Cancelled { .. }) => return open_next_period(app, tenant, campaign_id).await,
        Some(PeriodEnd::Drawn { .. }) => {}
        None => {
            let seed = stored_seed(app, &shard, tenant, campaign_id, period_no)
                .await?
                .ok_or_else(|| infra(format!("period {period_no} has no stored seed")))?;
            let beacon_value = match &period.beacon {
                None => None,
                Some(_) => Some(
                    shard
                        .campaign_store
                        .beacon_value(tenant, campaign_id, period_no)
                        .await?
                        .ok_or(CampaignOpError::BeaconPending(period_no))?,
                ),
            };
            let key = system_key(&["campaign-draw", &campaign_id.to_string(), &period_no.to_string()])?;
            let ctx = CommandContext::new(tenant.clone(), key, "system:scheduler".into());
            let actor = Actor::System { job: "scheduler".into() };
            let command = CampaignCommand::DrawPeriod { period_no, seed, beacon_value, actor };
            let request = serde_json::json!({ "draw_period": campaign_id, "period_no": period_no });
            let outcome = run(app, &ctx, campaign_id, command, &request).await?;
            written += outcome_written(&outcome);
            let winners = outcome.events.iter().find_map(|c| match &c.event {
                CampaignEvent::CampaignPeriodDrawn { winners, .. } => Some(winners.len()),
                _ => None,
            });
            info!(%campaign_id, period_no, winners = winners.unwrap_or(0), "campaign period drawn");
        }
    }
    issue_period_prizes(app, tenant, campaign_id, period_no).await?;
    Ok(written + open_next_period(app, tenant, campaign_id).await?)
}

/// Opens the next period of a manual campaign with the operator's window
/// (inside the campaign, after the last period) and optional beacon round;
/// a fresh seed is sealed for it and only its commitment recorded. Idempotent
/// by the request's key: a retry answers the period it opened.
#[instrument(skip_all, fields(tenant = %ctx.tenant_id, %campaign_id))]
pub async fn open_period_by_hand(
    app: &App,
    ctx: &CommandContext,
    campaign_id: CampaignId,
    window: (DateTime<Utc>, DateTime<Utc>),
    beacon: Option<BeaconRound>,
    actor: Actor,
) -> Result<CampaignView, CampaignOpError> {
    let tenant = &ctx.tenant_id;
    let shard = app.router.route(tenant)?;
    let state = state_of(&shard, tenant, campaign_id).await?;
    let CampaignKind::PeriodicLottery(terms) = &state.terms.kind else {
        return Err(CampaignOpError::Campaign(CampaignError::WrongKind("periodic_lottery")));
    };
    if terms.cycle != Cycle::Manual {
        return Err(CampaignOpError::PeriodsByCycle);
    }
    // The period number is not part of the request: a retry after success
    // (the next number then being one more) must still replay this opening
    // (the executor answers it before deciding; the seed it may seal for the
    // next number stays sealed and serves that period when it opens).
    let request = serde_json::json!({
        "open_period": campaign_id, "starts_at": window.0, "ends_at": window.1, "beacon": &beacon,
    });
    let period_no = state.periods.keys().next_back().map_or(1, |n| n + 1);
    let seed = seed_for(app, &shard, tenant, campaign_id, period_no).await?;
    let command = CampaignCommand::OpenPeriod {
        period_no,
        starts_at: window.0,
        ends_at: window.1,
        commitment: seed.commitment(),
        beacon,
        actor,
    };
    run(app, ctx, campaign_id, command, &request).await?;
    info!(%campaign_id, period_no, "campaign period opened by hand");
    get(app, tenant, campaign_id).await
}

/// Records the value the beacon published for the round period `period_no`
/// named (first writer wins: the same value again changes nothing, another
/// is refused). An ended period waiting for it is drawn at once.
#[instrument(skip_all, fields(%tenant, %campaign_id, period_no))]
pub async fn record_beacon_value(
    app: &App,
    tenant: &TenantId,
    campaign_id: CampaignId,
    period_no: u32,
    value: &BeaconValue,
    recorded_by: &str,
) -> Result<CampaignView, CampaignOpError> {
    let shard = app.router.route(tenant)?;
    let state = state_of(&shard, tenant, campaign_id).await?;
    let period = state.periods.get(&period_no).ok_or(CampaignOpError::PeriodNotFound(period_no))?;
    if period.beacon.is_none() {
        return Err(CampaignOpError::NoBeacon(period_no));
    }
    let stored = shard.campaign_store.put_beacon_value(tenant, campaign_id, period_no, value, recorded_by).await?;
    if stored != *value {
        return Err(CampaignOpError::BeaconValueConflict(period_no));
    }
    info!("beacon value recorded");
    let ended = app.clock.now() >= period.ends_at || state.phase_at(app.clock.now()) == Status::Ended;
    if period.end.is_none() && ended {
        due_period_draw(app, tenant, &format!("{campaign_id}/{period_no}")).await?;
    }
    get(app, tenant, campaign_id).await
}

/// Issues every winner's prize of a drawn period (each once, by its award's key).
async fn issue_period_prizes(
    app: &App,
    tenant: &TenantId,
    campaign_id: CampaignId,
    period_no: u32,
) -> Result<(), CampaignOpError> {
    let shard = app.router.route(tenant)?;
    let state = state_of(&shard, tenant, campaign_id).await?;
    let CampaignKind::PeriodicLottery(terms) = &state.terms.kind else { return Ok(()) };
    let Some(PeriodEnd::Drawn { winners, .. }) = state.periods.get(&period_no).and_then(|p| p.end.as_ref()) else {
        return Ok(());
    };
    for (rank, member_id) in (1u32..).zip(winners) {
        let Some(prize) = terms.prize_of_rank(rank) else { continue };
        issue_award(app, tenant, campaign_id, *member_id, prize, AwardRef::Period { period_no, rank }).await?;
    }
    Ok(())
}

/// Due work `campaign_prize` of a period winner, `<campaign>/period/<period>/<rank>`.
pub(super) async fn due_prize(app: &App, tenant: &TenantId, aggregate_id: &str) -> Result<u32, CampaignOpError> {
    let bad = || infra(format!("campaign_prize item {aggregate_id:?} is not <campaign>/period/<period>/<rank>"));
    let parts: Vec<&str> = aggregate_id.split('/').collect();
    let [campaign, "period", period, rank] = parts.as_slice() else { return Err(bad()) };
    let campaign_id = CampaignId::parse(campaign).map_err(|_| bad())?;
    let period_no: u32 = period.parse().map_err(|_| bad())?;
    let rank: u32 = rank.parse().map_err(|_| bad())?;
    let shard = app.router.route(tenant)?;
    let state = state_of(&shard, tenant, campaign_id).await?;
    let Some(PeriodEnd::Drawn { winners, .. }) = state.periods.get(&period_no).and_then(|p| p.end.as_ref()) else {
        return Err(bad());
    };
    let member_id = rank.checked_sub(1).and_then(|i| winners.get(i as usize)).ok_or_else(bad)?;
    // A snatch's winner gets its one prize; a periodic lottery's, its tier's.
    let prize = match &state.terms.kind {
        CampaignKind::PeriodicLottery(terms) => terms.prize_of_rank(rank).ok_or_else(bad)?,
        CampaignKind::Snatch(terms) if rank == 1 => &terms.prize,
        CampaignKind::Snatch(_) | CampaignKind::ShakeLottery(_) | CampaignKind::Voting(_) => return Err(bad()),
    };
    issue_award(app, tenant, campaign_id, *member_id, prize, AwardRef::Period { period_no, rank }).await?;
    Ok(0)
}

/// A period a member took part in: their tickets (entries, friends' visits or
/// paid snatch shares) and, once drawn, what they won.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MemberPeriod {
    pub period_no: u32,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    /// `open`, `drawn` or `cancelled` (a cancelled period's paid entries are refunded).
    pub state: &'static str,
    pub tickets: u32,
    /// Tickets of everyone in the period (while open: so far).
    pub period_tickets: u32,
    pub won: Option<MemberPrize>,
}

/// A prize a member won in a period's draw.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MemberPrize {
    pub rank: u32,
    pub prize: Prize,
    /// A physical prize: when staff handed it over (`None`: waiting at the store).
    pub handed_over_at: Option<DateTime<Utc>>,
}

/// The member's entries and prizes in a periodic lottery, a popularity
/// lottery or a 1-yuan snatch, newest period first: tickets from the entries
/// index (`campaign_member_periods`), periods, winners and hand-overs from the
/// campaign itself. Another tenant's campaign is not found.
pub async fn member_entries(
    app: &App,
    tenant: &TenantId,
    campaign_id: CampaignId,
    member_id: MemberId,
) -> Result<Vec<MemberPeriod>, CampaignOpError> {
    let shard = app.router.route(tenant)?;
    let state = state_of(&shard, tenant, campaign_id).await?;
    let prize_of_rank = |rank: u32| -> Option<Prize> {
        match &state.terms.kind {
            CampaignKind::PeriodicLottery(terms) => terms.prize_of_rank(rank).cloned(),
            CampaignKind::Snatch(terms) => (rank == 1).then(|| terms.prize.clone()),
            CampaignKind::ShakeLottery(_) | CampaignKind::Voting(_) => None,
        }
    };
    if matches!(state.terms.kind, CampaignKind::ShakeLottery(_) | CampaignKind::Voting(_)) {
        return Err(CampaignOpError::Campaign(CampaignError::WrongKind("periodic_lottery")));
    }
    let tickets = shard.campaign_store.member_periods(tenant, campaign_id, member_id, MEMBER_PERIODS_MAX).await?;
    let mut periods = Vec::with_capacity(tickets.len());
    for (period_no, tickets) in tickets {
        let Some(period) = state.periods.get(&period_no) else {
            warn!(%campaign_id, period_no, "an indexed entry names a period the campaign does not have");
            continue;
        };
        let (state_name, won) = match &period.end {
            None => ("open", None),
            Some(PeriodEnd::Cancelled { .. }) => ("cancelled", None),
            Some(PeriodEnd::Drawn { winners, .. }) => {
                let rank = winners.iter().position(|w| *w == member_id).and_then(|i| u32::try_from(i + 1).ok());
                let won = rank.and_then(|rank| {
                    let prize = prize_of_rank(rank)?;
                    let award = AwardRef::Period { period_no, rank }.key();
                    let handed_over_at = state.awards.get(&award).and_then(|a| a.handed_over_at);
                    Some(MemberPrize { rank, prize, handed_over_at })
                });
                ("drawn", won)
            }
        };
        periods.push(MemberPeriod {
            period_no,
            starts_at: period.starts_at,
            ends_at: period.ends_at,
            state: state_name,
            tickets,
            period_tickets: period.entries_total,
            won,
        });
    }
    Ok(periods)
}
