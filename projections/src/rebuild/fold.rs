//! Folding a member stream into its `rm_members` row and ledger lines (the projector's rules).

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;
use wxcm_domain::member::MemberEvent;

use crate::follows::{self, FollowChange};

use super::*;

/// A row of `rm_members` as the projector leaves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberRow {
    pub tenant_id: String,
    pub member_id: String,
    pub card_no: String,
    pub openid: Option<String>,
    pub card_level: String,
    pub source: String,
    pub registered_at: DateTime<Utc>,
    pub points: i64,
    pub held_points: i64,
    pub balance_fen: i64,
    pub lifetime_points: i64,
    pub version: i64,
    pub followed: bool,
    pub follow_source: Option<String>,
    pub scene: Option<String>,
    pub referrer_id: Option<String>,
    pub followed_at: Option<DateTime<Utc>>,
    pub unfollowed_at: Option<DateTime<Utc>>,
}

/// A row of `rm_member_ledger`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedgerRow {
    pub tenant_id: String,
    pub member_id: String,
    pub sequence: i64,
    pub event_id: Uuid,
    pub event_type: String,
    pub recorded_at: DateTime<Utc>,
    pub points_delta: i64,
    pub held_delta: i64,
    pub cash_delta_fen: i64,
    pub points_after: i64,
    pub held_after: i64,
    pub balance_after_fen: i64,
    pub actor: String,
    pub reason: String,
    pub reference: Option<String>,
    pub idempotency_key: String,
}

/// Applies one event to the member's row exactly as `MemberProjector` does:
/// figures from the event's `*_after`, lifetime points summed, version = the
/// event's sequence, one ledger row per event that moved points or cash.
pub fn fold_event(
    row: &mut Option<MemberRow>,
    stored: &StoredMemberEvent,
    event: &MemberEvent,
) -> Result<Option<LedgerRow>, String> {
    if let MemberEvent::MemberRegistered { card_no, openid, source, card_level, registered_at, attribution, .. } = event
    {
        if row.is_some() {
            return Err("registered twice".into());
        }
        let source = serde_json::to_value(source)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .ok_or("registration source has no name")?;
        let (scene, referrer_id) = follows::scene_and_referrer(attribution.as_ref());
        let (followed, follow_source, followed_at) = match follows::change_of(event) {
            FollowChange::Follow { source, at, .. } => (true, Some(source.to_owned()), Some(at)),
            FollowChange::Unfollow { .. } | FollowChange::None => (false, None, None),
        };
        *row = Some(MemberRow {
            tenant_id: stored.tenant_id.clone(),
            member_id: stored.aggregate_id.clone(),
            card_no: card_no.to_string(),
            openid: openid.as_ref().map(ToString::to_string),
            card_level: card_level.as_str().to_owned(),
            source,
            registered_at: *registered_at,
            points: 0,
            held_points: 0,
            balance_fen: 0,
            lifetime_points: 0,
            version: stored.sequence,
            followed,
            follow_source,
            scene,
            referrer_id,
            followed_at,
            unfollowed_at: None,
        });
        return Ok(None);
    }
    let member = row.as_mut().ok_or("event before the registration")?;
    if member.version != stored.sequence - 1 {
        return Err(format!("member is at version {}, not {}", member.version, stored.sequence - 1));
    }
    member.version = stored.sequence;
    match event {
        MemberEvent::MemberRegistered { .. } => return Err("registration is not an update".into()),
        MemberEvent::CardLevelChanged { to, .. } => member.card_level = to.as_str().to_owned(),
        MemberEvent::PointsGranted { points, points_after, .. } => {
            member.points = points_after.get();
            member.lifetime_points = member.lifetime_points.checked_add(points.get()).ok_or("lifetime overflow")?;
        }
        MemberEvent::PointsDeducted { points_after, .. }
        | MemberEvent::PointsSpent { points_after, .. }
        | MemberEvent::PointsExpired { points_after, .. } => member.points = points_after.get(),
        MemberEvent::PointsHeld { points_after, held_after, .. }
        | MemberEvent::HeldPointsSpent { points_after, held_after, .. }
        | MemberEvent::PointsHoldReleased { points_after, held_after, .. } => {
            member.points = points_after.get();
            member.held_points = *held_after;
        }
        MemberEvent::CashDeposited { balance_after_fen, .. }
        | MemberEvent::CashCharged { balance_after_fen, .. }
        | MemberEvent::RechargeCredited { balance_after_fen, .. }
        | MemberEvent::ChargeRefunded { balance_after_fen, .. }
        | MemberEvent::RechargeReversed { balance_after_fen, .. } => member.balance_fen = balance_after_fen.get(),
        MemberEvent::MemberFollowed { .. } | MemberEvent::MemberUnfollowed { .. } => match follows::change_of(event) {
            FollowChange::Follow { source, scene, referrer_id, at } => {
                member.followed = true;
                member.follow_source = Some(source.to_owned());
                member.scene = scene;
                member.referrer_id = referrer_id;
                member.followed_at = Some(at);
            }
            FollowChange::Unfollow { at } => {
                member.followed = false;
                member.unfollowed_at = Some(at);
            }
            FollowChange::None => return Err("a follow event that changes nothing".into()),
        },
        MemberEvent::RechargeReversalFlagged { .. }
        | MemberEvent::PurchasePaid { .. }
        | MemberEvent::PurchaseRefunded { .. } => {}
    }
    if member.points < 0 || member.held_points < 0 || member.balance_fen < 0 {
        return Err("negative figure after the event".into());
    }
    let line = event.ledger_line();
    if line.points_after.is_none() && line.balance_after_fen.is_none() {
        return Ok(None);
    }
    Ok(Some(LedgerRow {
        tenant_id: member.tenant_id.clone(),
        member_id: member.member_id.clone(),
        sequence: stored.sequence,
        event_id: stored.event_id,
        event_type: stored.event_type.clone(),
        recorded_at: stored.recorded_at,
        points_delta: line.points_delta,
        held_delta: line.held_delta,
        cash_delta_fen: line.cash_delta_fen,
        points_after: member.points,
        held_after: member.held_points,
        balance_after_fen: member.balance_fen,
        actor: line.actor,
        reason: line.reason,
        reference: line.reference,
        idempotency_key: line.idempotency_key,
    }))
}
