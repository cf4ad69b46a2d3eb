//! The member read models: `rm_members` (one row per member with its current
//! figures) and `rm_member_ledger` (one line per event that moved points or
//! cash, with the figures after it). SQL is built with sea-query.

use chrono::{DateTime, Utc};
use sea_query::{Expr, ExprTrait, Iden, PostgresQueryBuilder, Query, UpdateStatement};
use sea_query_sqlx::SqlxBinder;
use sqlx::{PgConnection, Row};
use wxcm_domain::member::MemberEvent;
use wxcm_domain::DomainEventMeta;

use crate::daily::Counters;
use crate::envelope::RelayedEvent;
use crate::follows::{self, FollowChange};
use crate::runtime::{ApplyError, Projector};

/// The `rm_members` table (0005_read_models.sql); queries.rs reads it.
#[derive(Iden, Clone, Copy)]
pub(crate) enum RmMembers {
    Table,
    TenantId,
    MemberId,
    CardNo,
    Openid,
    CardLevel,
    Source,
    RegisteredAt,
    Points,
    HeldPoints,
    BalanceFen,
    LifetimePoints,
    Version,
    UpdatedAt,
    Followed,
    FollowSource,
    Scene,
    ReferrerId,
    FollowedAt,
    UnfollowedAt,
}

/// The `rm_member_ledger` table (0005_read_models.sql); queries.rs reads it.
#[derive(Iden, Clone, Copy)]
pub(crate) enum RmMemberLedger {
    Table,
    TenantId,
    MemberId,
    Sequence,
    EventId,
    EventType,
    RecordedAt,
    PointsDelta,
    HeldDelta,
    CashDeltaFen,
    PointsAfter,
    HeldAfter,
    BalanceAfterFen,
    Actor,
    Reason,
    Reference,
    IdempotencyKey,
}

/// A ledger line's columns after its key's (tenant, member): the insert's and the page query's.
pub(crate) const LEDGER_LINE_COLUMNS: [RmMemberLedger; 14] = [
    RmMemberLedger::Sequence,
    RmMemberLedger::EventId,
    RmMemberLedger::EventType,
    RmMemberLedger::RecordedAt,
    RmMemberLedger::PointsDelta,
    RmMemberLedger::HeldDelta,
    RmMemberLedger::CashDeltaFen,
    RmMemberLedger::PointsAfter,
    RmMemberLedger::HeldAfter,
    RmMemberLedger::BalanceAfterFen,
    RmMemberLedger::Actor,
    RmMemberLedger::Reason,
    RmMemberLedger::Reference,
    RmMemberLedger::IdempotencyKey,
];

/// Projects `member` streams into `rm_members` and `rm_member_ledger`.
#[derive(Debug, Clone, Copy, Default)]
pub struct MemberProjector;

impl MemberProjector {
    pub const NAME: &'static str = "members";
}

/// Decodes the member event of `event` and checks it against its envelope.
pub fn decode_member_event(event: &RelayedEvent) -> Result<MemberEvent, ApplyError> {
    let decoded: MemberEvent = serde_json::from_value(event.payload.clone())
        .map_err(|e| ApplyError::Invalid(format!("payload is not a member event: {e}")))?;
    if decoded.event_type() != event.event_type || decoded.event_version() != event.event_version {
        return Err(ApplyError::Invalid(format!(
            "payload is {} v{}, envelope says {} v{}",
            decoded.event_type(),
            decoded.event_version(),
            event.event_type,
            event.event_version
        )));
    }
    if let MemberEvent::MemberRegistered { member_id, tenant_id, .. } = &decoded {
        if member_id.to_string() != event.aggregate_id || tenant_id.as_str() != event.tenant_id {
            return Err(ApplyError::Invalid("registration does not match its stream".into()));
        }
    }
    Ok(decoded)
}

impl Projector for MemberProjector {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn aggregate_type(&self) -> &'static str {
        "member"
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &RelayedEvent,
        counters: &mut Counters,
    ) -> Result<(), ApplyError> {
        let member_event = decode_member_event(event)?;
        let recorded_at = event
            .recorded_at_utc()
            .ok_or_else(|| ApplyError::Invalid(format!("recorded_at {:?} is not a timestamp", event.recorded_at)))?;
        if let MemberEvent::MemberRegistered { .. } = member_event {
            insert_member(conn, event, &member_event).await?;
            return counters.add_event(&event.tenant_id, recorded_at, &member_event, None);
        }
        let figures = update_member(conn, event, &member_event).await?;
        // An unfollow keeps the follow source, so the row's is the one it counts under.
        counters.add_event(&event.tenant_id, recorded_at, &member_event, figures.follow_source.as_deref())?;
        let line = member_event.ledger_line();
        if line.points_after.is_none() && line.balance_after_fen.is_none() {
            // Neither points nor cash moved (card level change): no ledger line.
            return Ok(());
        }
        // Pair check: the figures the event carries are the ones the row now holds.
        if line.points_after.is_some_and(|p| p != figures.points)
            || line.balance_after_fen.is_some_and(|b| b != figures.balance_fen)
        {
            return Err(ApplyError::Invalid("figures after the event disagree with the read model".into()));
        }
        let (sql, values) = Query::insert()
            .into_table(RmMemberLedger::Table)
            .columns([RmMemberLedger::TenantId, RmMemberLedger::MemberId].into_iter().chain(LEDGER_LINE_COLUMNS))
            .values_panic([
                event.tenant_id.clone().into(),
                event.aggregate_id.clone().into(),
                event.sequence.into(),
                event.event_id.into(),
                event.event_type.clone().into(),
                recorded_at.into(),
                line.points_delta.into(),
                line.held_delta.into(),
                line.cash_delta_fen.into(),
                figures.points.into(),
                figures.held_points.into(),
                figures.balance_fen.into(),
                line.actor.into(),
                line.reason.into(),
                line.reference.into(),
                line.idempotency_key.into(),
            ])
            .build_sqlx(PostgresQueryBuilder);
        sqlx::query_with(&sql, values).execute(conn).await?;
        Ok(())
    }
}

async fn insert_member(
    conn: &mut PgConnection,
    event: &RelayedEvent,
    registered: &MemberEvent,
) -> Result<(), ApplyError> {
    let MemberEvent::MemberRegistered { card_no, openid, source, card_level, registered_at, attribution, .. } =
        registered
    else {
        return Err(ApplyError::Invalid("not a registration".into()));
    };
    // A registration by a subscribe is a follow; others only record who brought the member.
    let (followed, follow_source, followed_at) = match follows::change_of(registered) {
        FollowChange::Follow { source, at, .. } => (true, Some(source), Some(at)),
        FollowChange::Unfollow { .. } | FollowChange::None => (false, None, None),
    };
    let (scene, referrer_id) = follows::scene_and_referrer(attribution.as_ref());
    let source = serde_json::to_value(source)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .ok_or_else(|| ApplyError::Invalid("registration source has no name".into()))?;
    let (sql, values) = Query::insert()
        .into_table(RmMembers::Table)
        .columns([
            RmMembers::TenantId,
            RmMembers::MemberId,
            RmMembers::CardNo,
            RmMembers::Openid,
            RmMembers::CardLevel,
            RmMembers::Source,
            RmMembers::RegisteredAt,
            RmMembers::Points,
            RmMembers::HeldPoints,
            RmMembers::BalanceFen,
            RmMembers::LifetimePoints,
            RmMembers::Version,
            RmMembers::Followed,
            RmMembers::FollowSource,
            RmMembers::Scene,
            RmMembers::ReferrerId,
            RmMembers::FollowedAt,
        ])
        .values_panic([
            event.tenant_id.clone().into(),
            event.aggregate_id.clone().into(),
            card_no.to_string().into(),
            openid.as_ref().map(ToString::to_string).into(),
            card_level.as_str().to_owned().into(),
            source.into(),
            (*registered_at).into(),
            0i64.into(),
            0i64.into(),
            0i64.into(),
            0i64.into(),
            event.sequence.into(),
            followed.into(),
            follow_source.into(),
            scene.into(),
            referrer_id.into(),
            followed_at.into(),
        ])
        .build_sqlx(PostgresQueryBuilder);
    sqlx::query_with(&sql, values).execute(conn).await?;
    Ok(())
}

/// The member's figures after an event.
struct Figures {
    points: i64,
    held_points: i64,
    balance_fen: i64,
    follow_source: Option<String>,
}

/// Sets the follow columns a follow or an unfollow changes.
fn set_follow(update: &mut UpdateStatement, change: FollowChange) -> Result<(), ApplyError> {
    match change {
        FollowChange::Follow { source, scene, referrer_id, at } => {
            update.value(RmMembers::Followed, true);
            update.value(RmMembers::FollowSource, source);
            update.value(RmMembers::Scene, scene);
            update.value(RmMembers::ReferrerId, referrer_id);
            update.value(RmMembers::FollowedAt, at);
        }
        FollowChange::Unfollow { at } => {
            update.value(RmMembers::Followed, false);
            update.value(RmMembers::UnfollowedAt, at);
        }
        FollowChange::None => return Err(ApplyError::Invalid("a follow event that changes nothing".into())),
    }
    Ok(())
}

/// Sets what the event changed; the figures come from the event (`*_after`),
/// so the row equals the aggregate after it, never an accumulated guess.
async fn update_member(
    conn: &mut PgConnection,
    event: &RelayedEvent,
    member_event: &MemberEvent,
) -> Result<Figures, ApplyError> {
    let now: DateTime<Utc> = Utc::now();
    let mut update = Query::update();
    update
        .table(RmMembers::Table)
        .value(RmMembers::Version, event.sequence)
        .value(RmMembers::UpdatedAt, now)
        .and_where(Expr::col(RmMembers::TenantId).eq(event.tenant_id.as_str()))
        .and_where(Expr::col(RmMembers::MemberId).eq(event.aggregate_id.as_str()))
        // Pair check: the row is exactly one event behind.
        .and_where(Expr::col(RmMembers::Version).eq(event.sequence - 1))
        .returning(Query::returning().columns([
            RmMembers::Points,
            RmMembers::HeldPoints,
            RmMembers::BalanceFen,
            RmMembers::FollowSource,
        ]));
    match member_event {
        MemberEvent::MemberRegistered { .. } => {
            return Err(ApplyError::Invalid("registration is not an update".into()))
        }
        MemberEvent::CardLevelChanged { to, .. } => {
            update.value(RmMembers::CardLevel, to.as_str());
        }
        MemberEvent::PointsGranted { points, points_after, .. } => {
            update.value(RmMembers::Points, points_after.get());
            update.value(RmMembers::LifetimePoints, Expr::col(RmMembers::LifetimePoints).add(points.get()));
        }
        MemberEvent::PointsDeducted { points_after, .. }
        | MemberEvent::PointsSpent { points_after, .. }
        | MemberEvent::PointsExpired { points_after, .. } => {
            update.value(RmMembers::Points, points_after.get());
        }
        MemberEvent::PointsHeld { points_after, held_after, .. }
        | MemberEvent::HeldPointsSpent { points_after, held_after, .. }
        | MemberEvent::PointsHoldReleased { points_after, held_after, .. } => {
            update.value(RmMembers::Points, points_after.get());
            update.value(RmMembers::HeldPoints, *held_after);
        }
        MemberEvent::CashDeposited { balance_after_fen, .. }
        | MemberEvent::CashCharged { balance_after_fen, .. }
        | MemberEvent::RechargeCredited { balance_after_fen, .. }
        | MemberEvent::ChargeRefunded { balance_after_fen, .. }
        | MemberEvent::RechargeReversed { balance_after_fen, .. } => {
            update.value(RmMembers::BalanceFen, balance_after_fen.get());
        }
        MemberEvent::MemberFollowed { .. } | MemberEvent::MemberUnfollowed { .. } => {
            set_follow(&mut update, follows::change_of(member_event))?;
        }
        // No figure moves (a flagged reversal leaves the balance for an operator); only the version does.
        // A purchase paid (or refunded) by WeChat Pay moves the total paid, not the balance.
        MemberEvent::RechargeReversalFlagged { .. }
        | MemberEvent::PurchasePaid { .. }
        | MemberEvent::PurchaseRefunded { .. } => {}
    }
    let (sql, values) = update.build_sqlx(PostgresQueryBuilder);
    let row = sqlx::query_with(&sql, values).fetch_optional(conn).await?.ok_or_else(|| {
        ApplyError::Invalid(format!(
            "member {} is not at version {} in the read model",
            event.aggregate_id,
            event.sequence - 1
        ))
    })?;
    Ok(Figures {
        points: row.try_get("points")?,
        held_points: row.try_get("held_points")?,
        balance_fen: row.try_get("balance_fen")?,
        follow_source: row.try_get("follow_source")?,
    })
}
