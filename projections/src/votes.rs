//! The voting read model: `rm_vote_items` (migration 0028), one row per item
//! of a voting campaign with its status and votes, fed from the `campaign`
//! streams (other campaign events change nothing here). [`PgVoteRanking`]
//! reads it for the live ranking.
//!
//! Each row keeps the sequence of the last event applied to it (`version`):
//! a vote sets the item's count to what its event states, so the read model
//! equals the stream's counts once caught up.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, Row};
use wxcm_commands::campaigns::voting::{RankedItem, VoteRanking};
use wxcm_commands::ports::PortError;
use wxcm_domain::campaign::{CampaignEvent, CampaignId, VoteItemId, VoteItemStatus};
use wxcm_domain::{DomainEventMeta, MemberId, TenantId};

use crate::daily::Counters;
use crate::envelope::RelayedEvent;
use crate::runtime::{ApplyError, Projector};

/// Projects the voting events of `campaign` streams into `rm_vote_items`.
#[derive(Debug, Clone, Copy, Default)]
pub struct VoteProjector;

impl VoteProjector {
    pub const NAME: &'static str = "votes";
}

/// Decodes the campaign event of `event` and checks it against its envelope.
pub fn decode_campaign_event(event: &RelayedEvent) -> Result<CampaignEvent, ApplyError> {
    let decoded: CampaignEvent = serde_json::from_value(event.payload.clone())
        .map_err(|e| ApplyError::Invalid(format!("payload is not a campaign event: {e}")))?;
    if decoded.event_type() != event.event_type || decoded.event_version() != event.event_version {
        return Err(ApplyError::Invalid(format!(
            "payload is {} v{}, envelope says {} v{}",
            decoded.event_type(),
            decoded.event_version(),
            event.event_type,
            event.event_version
        )));
    }
    Ok(decoded)
}

impl Projector for VoteProjector {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn aggregate_type(&self) -> &'static str {
        "campaign"
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &RelayedEvent,
        _counters: &mut Counters,
    ) -> Result<(), ApplyError> {
        let decoded = decode_campaign_event(event)?;
        let recorded_at = event
            .recorded_at_utc()
            .ok_or_else(|| ApplyError::Invalid(format!("recorded_at {:?} is not a timestamp", event.recorded_at)))?;
        let (tenant, campaign, sequence) = (&event.tenant_id, &event.aggregate_id, event.sequence);
        let (item_id, change) = match &decoded {
            CampaignEvent::CampaignVoteItemSubmitted {
                item_id,
                title,
                description,
                member_id,
                approved,
                submitted_at,
                ..
            } => {
                let status = if *approved { VoteItemStatus::Approved } else { VoteItemStatus::Pending };
                let inserted = sqlx::query(
                    "INSERT INTO rm_vote_items (tenant_id, campaign_id, item_id, title, description, member_id,
                         status, votes, submitted_at, updated_at, version)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $9, $10)
                     ON CONFLICT (tenant_id, campaign_id, item_id) DO NOTHING",
                )
                .bind(tenant)
                .bind(campaign)
                .bind(item_id.to_string())
                .bind(title.as_str())
                .bind(description.as_ref().map(|d| d.as_str().to_owned()))
                .bind(member_id.map(|m| m.to_string()))
                .bind(status.name())
                .bind(submitted_at)
                .bind(recorded_at)
                .bind(sequence)
                .execute(&mut *conn)
                .await?;
                if inserted.rows_affected() != 1 {
                    return Err(ApplyError::Invalid(format!("vote item {item_id} exists before its submission")));
                }
                return Ok(());
            }
            CampaignEvent::CampaignVoteItemApproved { item_id, .. } => (item_id, Change::Status("approved", None)),
            CampaignEvent::CampaignVoteItemRejected { item_id, reason, .. } => {
                (item_id, Change::Status("rejected", Some(reason.as_str())))
            }
            CampaignEvent::CampaignVoteCast { item_id, item_votes_after, .. } => {
                (item_id, Change::Votes(*item_votes_after))
            }
            CampaignEvent::CampaignCreated { .. }
            | CampaignEvent::CampaignEdited { .. }
            | CampaignEvent::CampaignScheduled { .. }
            | CampaignEvent::CampaignStarted { .. }
            | CampaignEvent::CampaignEnded { .. }
            | CampaignEvent::CampaignPeriodOpened { .. }
            | CampaignEvent::CampaignEntryRecorded { .. }
            | CampaignEvent::CampaignPeriodDrawn { .. }
            | CampaignEvent::CampaignPeriodCancelled { .. }
            | CampaignEvent::CampaignShakesDrawn { .. }
            | CampaignEvent::CampaignShakeSeedRevealed { .. }
            | CampaignEvent::SnatchSharesReserved { .. }
            | CampaignEvent::SnatchSharesReleased { .. }
            | CampaignEvent::SnatchSharesConfirmed { .. }
            | CampaignEvent::SnatchPaymentArrivedLate { .. }
            | CampaignEvent::SnatchPeriodCancelled { .. }
            | CampaignEvent::CampaignPrizeHandedOver { .. } => return Ok(()),
        };
        let (status, reason, votes) = match change {
            Change::Status(status, reason) => (Some(status), reason, None),
            Change::Votes(votes) => (None, None, Some(i64::from(votes))),
        };
        let updated = sqlx::query(
            "UPDATE rm_vote_items
                SET status = coalesce($4, status), reject_reason = coalesce($5, reject_reason),
                    votes = coalesce($6, votes), updated_at = $7, version = $8
              WHERE tenant_id = $1 AND campaign_id = $2 AND item_id = $3 AND version < $8",
        )
        .bind(tenant)
        .bind(campaign)
        .bind(item_id.to_string())
        .bind(status)
        .bind(reason)
        .bind(votes)
        .bind(recorded_at)
        .bind(sequence)
        .execute(&mut *conn)
        .await?;
        if updated.rows_affected() != 1 {
            return Err(ApplyError::Invalid(format!("vote item {item_id} is not in the read model")));
        }
        Ok(())
    }
}

enum Change<'a> {
    Status(&'static str, Option<&'a str>),
    Votes(u32),
}

/// [`VoteRanking`] over one shard's `rm_vote_items`.
pub struct PgVoteRanking {
    pool: PgPool,
}

impl PgVoteRanking {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

fn status_of(name: &str) -> Result<VoteItemStatus, PortError> {
    match name {
        "pending" => Ok(VoteItemStatus::Pending),
        "approved" => Ok(VoteItemStatus::Approved),
        "rejected" => Ok(VoteItemStatus::Rejected),
        other => Err(PortError::msg(format!("rm_vote_items has status {other:?}"))),
    }
}

#[async_trait]
impl VoteRanking for PgVoteRanking {
    async fn ranking(
        &self,
        tenant: &TenantId,
        campaign: CampaignId,
        status: Option<VoteItemStatus>,
        limit: u32,
    ) -> Result<Vec<RankedItem>, PortError> {
        let rows = sqlx::query(
            "SELECT item_id, title, description, member_id, status, votes, submitted_at
               FROM rm_vote_items
              WHERE tenant_id = $1 AND campaign_id = $2 AND ($3::text IS NULL OR status = $3)
              ORDER BY votes DESC, submitted_at, item_id
              LIMIT $4",
        )
        .bind(tenant.as_str())
        .bind(campaign.to_string())
        .bind(status.map(VoteItemStatus::name))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(PortError::new)?;
        rows.iter()
            .map(|row| {
                let item: String = row.try_get("item_id").map_err(PortError::new)?;
                let member: Option<String> = row.try_get("member_id").map_err(PortError::new)?;
                let status: String = row.try_get("status").map_err(PortError::new)?;
                let votes: i32 = row.try_get("votes").map_err(PortError::new)?;
                Ok(RankedItem {
                    item_id: VoteItemId::parse(&item).map_err(PortError::new)?,
                    title: row.try_get("title").map_err(PortError::new)?,
                    description: row.try_get("description").map_err(PortError::new)?,
                    member_id: member.map(|m| MemberId::parse(&m)).transpose().map_err(PortError::new)?,
                    status: status_of(&status)?,
                    votes: u32::try_from(votes).map_err(PortError::new)?,
                    submitted_at: row.try_get::<DateTime<Utc>, _>("submitted_at").map_err(PortError::new)?,
                })
            })
            .collect()
    }
}

/// `rm_vote_items` as [`crate::rebuild_projector`] rebuilds it (no counters).
const VOTES: crate::rebuild_projector::ReadModel =
    crate::rebuild_projector::ReadModel { tables: &["rm_vote_items"], metrics: &[] };

/// Rebuilds `rm_vote_items` of the shard (or of one tenant) from the campaign
/// events with [`VoteProjector`]'s own code (`wxcm projections rebuild votes`).
pub async fn rebuild_votes(
    conn: &mut PgConnection,
    reader: PgConnection,
    scope: &crate::rebuild::RebuildScope,
) -> Result<crate::rebuild_projector::ProjectorRebuildReport, crate::rebuild_projector::ProjectorRebuildError> {
    crate::rebuild_projector::rebuild_with(&VoteProjector, VOTES, conn, reader, scope).await
}
