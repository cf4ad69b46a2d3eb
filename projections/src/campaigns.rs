//! The campaign read model: `rm_campaigns` (one row per campaign with its
//! status and totals, migration 0032) and the per-campaign daily counters of
//! `rm_daily_ops` (dimension: the campaign id), in the same transaction, so
//! the checkpoint covers both. The per-campaign report reads them.
//!
//! What counts: a participation is an entry, a popularity ticket, a shake, a
//! vote or a paid snatch purchase; a new participant is a member's first
//! participation in the campaign (the event states the member's count after
//! it; a snatch's buyer counts as new in each period); a winner is a prize
//! that is not "thanks" (a shake's) or a period draw's winner.

use sqlx::PgConnection;
use wxcm_domain::campaign::{CampaignEvent, Status};

use crate::daily::{delta, metric, Counters, Delta};
use crate::envelope::RelayedEvent;
use crate::runtime::{ApplyError, Projector};
use crate::votes::decode_campaign_event;

/// Projects `campaign` streams into `rm_campaigns` and the daily campaign counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct CampaignProjector;

impl CampaignProjector {
    pub const NAME: &'static str = "campaigns";
}

/// The metrics of `rm_daily_ops` only [`CampaignProjector`] feeds.
pub const CAMPAIGN_METRICS: [&str; 3] =
    [metric::CAMPAIGN_PARTICIPATIONS, metric::CAMPAIGN_PARTICIPANTS_NEW, metric::CAMPAIGN_WINNERS];

fn status_name(status: Status) -> &'static str {
    match status {
        Status::Draft => "draft",
        Status::Scheduled => "scheduled",
        Status::Ongoing => "ongoing",
        Status::Ended => "ended",
    }
}

/// The totals an event adds: (participations, new participants, winners).
fn totals(event: &CampaignEvent) -> (i64, i64, i64) {
    match event {
        CampaignEvent::CampaignEntryRecorded { member_total_after, .. } => (1, i64::from(*member_total_after == 1), 0),
        CampaignEvent::CampaignShakesDrawn { draws, .. } => {
            let n = |f: &dyn Fn(&&wxcm_domain::campaign::ShakeDraw) -> bool| {
                i64::try_from(draws.iter().filter(f).count()).unwrap_or(i64::MAX)
            };
            (n(&|_| true), n(&|d| d.nonce == 1), n(&|d| !d.prize.is_thanks()))
        }
        CampaignEvent::CampaignPeriodDrawn { winners, .. } => (0, 0, i64::try_from(winners.len()).unwrap_or(i64::MAX)),
        CampaignEvent::CampaignVoteCast { member_total_after, .. } => (1, i64::from(*member_total_after == 1), 0),
        // A paid purchase of snatch shares; its buyer is new to the period
        // when these are their first shares in it (a snatch counts per period).
        CampaignEvent::SnatchSharesConfirmed { quantity, member_shares_after, .. } => {
            (1, i64::from(member_shares_after == quantity), 0)
        }
        CampaignEvent::CampaignCreated { .. }
        | CampaignEvent::CampaignEdited { .. }
        | CampaignEvent::CampaignScheduled { .. }
        | CampaignEvent::CampaignStarted { .. }
        | CampaignEvent::CampaignEnded { .. }
        | CampaignEvent::CampaignPeriodOpened { .. }
        | CampaignEvent::CampaignPeriodCancelled { .. }
        | CampaignEvent::CampaignShakeSeedRevealed { .. }
        | CampaignEvent::CampaignVoteItemSubmitted { .. }
        | CampaignEvent::CampaignVoteItemApproved { .. }
        | CampaignEvent::CampaignVoteItemRejected { .. }
        | CampaignEvent::CampaignPrizeHandedOver { .. }
        | CampaignEvent::SnatchSharesReserved { .. }
        | CampaignEvent::SnatchSharesReleased { .. }
        | CampaignEvent::SnatchPaymentArrivedLate { .. }
        | CampaignEvent::SnatchPeriodCancelled { .. } => (0, 0, 0),
    }
}

impl Projector for CampaignProjector {
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
        counters: &mut Counters,
    ) -> Result<(), ApplyError> {
        let campaign_event = decode_campaign_event(event)?;
        let recorded_at = event
            .recorded_at_utc()
            .ok_or_else(|| ApplyError::Invalid(format!("recorded_at {:?} is not a timestamp", event.recorded_at)))?;
        let sequence = event.sequence;
        if let CampaignEvent::CampaignCreated { campaign_id, tenant_id, terms, .. } = &campaign_event {
            if campaign_id.to_string() != event.aggregate_id || tenant_id.as_str() != event.tenant_id {
                return Err(ApplyError::Invalid("creation does not match its stream".into()));
            }
            let inserted = sqlx::query(
                "INSERT INTO rm_campaigns (tenant_id, campaign_id, kind, name, status, created_at, updated_at, version)
                 VALUES ($1, $2, $3, $4, 'draft', $5, $5, $6) ON CONFLICT (tenant_id, campaign_id) DO NOTHING",
            )
            .bind(&event.tenant_id)
            .bind(&event.aggregate_id)
            .bind(terms.kind.name())
            .bind(terms.name.as_str())
            .bind(recorded_at)
            .bind(sequence)
            .execute(&mut *conn)
            .await?;
            if inserted.rows_affected() != 1 {
                return Err(ApplyError::Invalid("campaign row exists before its creation".into()));
            }
            return Ok(());
        }
        let status = match &campaign_event {
            CampaignEvent::CampaignScheduled { .. } => Some(Status::Scheduled),
            CampaignEvent::CampaignStarted { .. } => Some(Status::Ongoing),
            CampaignEvent::CampaignEnded { .. } => Some(Status::Ended),
            _ => None,
        };
        let name = match &campaign_event {
            CampaignEvent::CampaignEdited { terms, .. } => Some(terms.name.as_str().to_owned()),
            _ => None,
        };
        let (participations, new_participants, winners) = totals(&campaign_event);
        let updated = sqlx::query(
            "UPDATE rm_campaigns SET status = coalesce($3, status), name = coalesce($4, name),
                    participations = participations + $5, participants = participants + $6, winners = winners + $7,
                    updated_at = $8, version = $9
              WHERE tenant_id = $1 AND campaign_id = $2 AND version < $9",
        )
        .bind(&event.tenant_id)
        .bind(&event.aggregate_id)
        .bind(status.map(status_name))
        .bind(name)
        .bind(participations)
        .bind(new_participants)
        .bind(winners)
        .bind(recorded_at)
        .bind(sequence)
        .execute(&mut *conn)
        .await?;
        if updated.rows_affected() != 1 {
            return Err(ApplyError::Invalid(format!("campaign {} is not in the read model", event.aggregate_id)));
        }
        let campaign = event.aggregate_id.as_str();
        let deltas: Vec<Delta> = [
            (metric::CAMPAIGN_PARTICIPATIONS, participations),
            (metric::CAMPAIGN_PARTICIPANTS_NEW, new_participants),
            (metric::CAMPAIGN_WINNERS, winners),
        ]
        .into_iter()
        .filter(|(_, v)| *v != 0)
        .map(|(m, v)| delta(m, campaign, v))
        .collect();
        counters.add(&event.tenant_id, recorded_at, deltas)
    }
}
