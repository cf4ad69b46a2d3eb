//! The campaign part of `wxcm audit reconcile`: folds every campaign stream of
//! a tenant with the domain aggregate (`Campaign::apply`, not the projectors'
//! code) and checks
//! - `rm_campaigns`: one row per campaign with its kind, name, status, totals
//!   (participations, new participants, winners) and version;
//! - the campaign counters of `rm_daily_ops` per merchant day and campaign
//!   (dimension: the campaign id);
//! - `rm_vote_items`: one row per voting item with its title, submitter,
//!   status and votes, as the aggregate holds them.
//!
//! What counts (the report's definitions, `schemas/draws/SPEC.md` aside): a
//! participation is an entry, a popularity ticket, a shake, a vote or a paid
//! snatch purchase; a new participant is a member's first participation in the
//! campaign as the event states it (a snatch buyer's first shares in a period);
//! a winner is a shake that is not "thanks" or a period draw's winner. These
//! are recomputed from the decoded events the aggregate accepted.
//!
//! Read-only, on the caller's snapshot. A stream that cannot be folded is a
//! [`BrokenStream`] finding; its rows are not compared, and its counters only
//! up to the event before the break.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};
use chrono::{DateTime, NaiveDate, SecondsFormat, SubsecRound, Utc};
use futures::TryStreamExt;
use serde::Serialize;
use sqlx::{PgConnection, Row};
use wxcm_domain::campaign::{Campaign, CampaignEvent, Status};
use wxcm_domain::{EventSourced, TenantId};
use wxcm_projections::campaigns::CAMPAIGN_METRICS;
use wxcm_projections::daily::{merchant_day, metric};

use crate::reconcile::BrokenStream;
use crate::reconcile_coupons::Fold;

/// One campaign figure that differs; `expected` from the events, `found` from
/// the read model (`-`: missing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CampaignDifference {
    /// `campaign/<id>`, `campaign/<id>/item/<item>` for a voting item, or
    /// `daily:<merchant day>:<campaign>` for a counter.
    pub stream: String,
    /// A column (`presence` for a missing or extra row), or a metric.
    pub field: &'static str,
    pub expected: String,
    pub found: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CampaignReconcile {
    pub events: u64,
    pub campaigns: u64,
    pub vote_items: u64,
    pub broken_streams: Vec<BrokenStream>,
    pub differences: Vec<CampaignDifference>,
}

impl CampaignReconcile {
    pub fn is_clean(&self) -> bool {
        self.broken_streams.is_empty() && self.differences.is_empty()
    }
}

const EVENTS_SQL: &str = "SELECT aggregate_id, sequence, recorded_at, payload FROM events
  WHERE tenant_id = $1 AND aggregate_type = 'campaign'
  ORDER BY aggregate_id, sequence";

/// (participations, new participants, winners) an accepted event adds.
fn participation_deltas(event: &CampaignEvent) -> (i64, i64, i64) {
    let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    match event {
        CampaignEvent::CampaignEntryRecorded { member_total_after, .. }
        | CampaignEvent::CampaignVoteCast { member_total_after, .. } => (1, i64::from(*member_total_after == 1), 0),
        CampaignEvent::CampaignShakesDrawn { draws, .. } => (
            count(draws.len()),
            count(draws.iter().filter(|d| d.nonce == 1).count()),
            count(draws.iter().filter(|d| !d.prize.is_thanks()).count()),
        ),
        CampaignEvent::CampaignPeriodDrawn { winners, .. } => (0, 0, count(winners.len())),
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

fn micros(at: DateTime<Utc>) -> String {
    at.trunc_subsecs(6).to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn status_name(status: Status) -> &'static str {
    match status {
        Status::Draft => "draft",
        Status::Scheduled => "scheduled",
        Status::Ongoing => "ongoing",
        Status::Ended => "ended",
    }
}

/// One campaign stream being folded, with the totals of its accepted events.
struct CampaignFold {
    fold: Fold<Campaign>,
    totals: (i64, i64, i64),
    first_recorded_at: Option<DateTime<Utc>>,
    last_recorded_at: Option<DateTime<Utc>>,
}

/// Campaign counters: (merchant day, metric, campaign id) → value.
type CampaignCounts = BTreeMap<(NaiveDate, String, String), i64>;

/// The compared columns of `rm_campaigns`, as text.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CampaignRow {
    kind: String,
    name: String,
    status: String,
    participations: i64,
    participants: i64,
    winners: i64,
    created_at: String,
    updated_at: String,
    version: i64,
}

impl CampaignRow {
    fn fields(&self) -> [(&'static str, String); 9] {
        [
            ("kind", self.kind.clone()),
            ("name", self.name.clone()),
            ("status", self.status.clone()),
            ("participations", self.participations.to_string()),
            ("participants", self.participants.to_string()),
            ("winners", self.winners.to_string()),
            ("created_at", self.created_at.clone()),
            ("updated_at", self.updated_at.clone()),
            ("version", self.version.to_string()),
        ]
    }
}

/// The compared columns of `rm_vote_items`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ItemRow {
    title: String,
    member_id: String,
    status: String,
    votes: i64,
}

impl ItemRow {
    fn fields(&self) -> [(&'static str, String); 4] {
        [
            ("title", self.title.clone()),
            ("member_id", self.member_id.clone()),
            ("status", self.status.clone()),
            ("votes", self.votes.to_string()),
        ]
    }
}

async fn fold_campaigns(
    snapshot: &mut PgConnection,
    tenant: &TenantId,
) -> Result<(u64, BTreeMap<String, CampaignFold>, CampaignCounts)> {
    let mut campaigns: BTreeMap<String, CampaignFold> = BTreeMap::new();
    let mut counts = CampaignCounts::new();
    let mut events = 0u64;
    let mut rows = sqlx::query(EVENTS_SQL).bind(tenant.as_str()).fetch(&mut *snapshot);
    while let Some(row) = rows.try_next().await.context("reading campaign events")? {
        let id: String = row.try_get("aggregate_id")?;
        let sequence: i64 = row.try_get("sequence")?;
        let recorded_at: DateTime<Utc> = row.try_get("recorded_at")?;
        let payload: serde_json::Value = row.try_get("payload")?;
        events += 1;
        let campaign = campaigns.entry(id.clone()).or_insert_with(|| CampaignFold {
            fold: Fold::new(),
            totals: (0, 0, 0),
            first_recorded_at: None,
            last_recorded_at: None,
        });
        if campaign.fold.broken.is_some() {
            continue;
        }
        let decoded: Option<CampaignEvent> = serde_json::from_value(payload.clone()).ok();
        campaign.fold.apply(&id, sequence, payload);
        let (None, Some(event)) = (&campaign.fold.broken, decoded) else { continue };
        campaign.first_recorded_at.get_or_insert(recorded_at);
        campaign.last_recorded_at = Some(recorded_at);
        let (participations, new, winners) = participation_deltas(&event);
        let t = &mut campaign.totals;
        *t = (t.0 + participations, t.1 + new, t.2 + winners);
        let day = merchant_day(recorded_at);
        for (name, value) in [
            (metric::CAMPAIGN_PARTICIPATIONS, participations),
            (metric::CAMPAIGN_PARTICIPANTS_NEW, new),
            (metric::CAMPAIGN_WINNERS, winners),
        ] {
            *counts.entry((day, name.to_owned(), id.clone())).or_default() += value;
        }
    }
    Ok((events, campaigns, counts))
}

/// The row the campaigns projector should have made of a folded campaign.
fn expected_row(campaign: &CampaignFold) -> Option<CampaignRow> {
    let state = campaign.fold.state.created.as_ref()?;
    Some(CampaignRow {
        kind: state.terms.kind.name().to_owned(),
        name: state.terms.name.as_str().to_owned(),
        status: status_name(state.status).to_owned(),
        participations: campaign.totals.0,
        participants: campaign.totals.1,
        winners: campaign.totals.2,
        created_at: campaign.first_recorded_at.map(micros).unwrap_or_default(),
        updated_at: campaign.last_recorded_at.map(micros).unwrap_or_default(),
        version: campaign.fold.version,
    })
}

async fn read_campaign_rows(snapshot: &mut PgConnection, tenant: &TenantId) -> Result<BTreeMap<String, CampaignRow>> {
    let rows = sqlx::query(
        "SELECT campaign_id, kind, name, status, participations, participants, winners, created_at, updated_at, version
           FROM rm_campaigns WHERE tenant_id = $1",
    )
    .bind(tenant.as_str())
    .fetch_all(&mut *snapshot)
    .await
    .context("reading rm_campaigns")?;
    let mut found = BTreeMap::new();
    for row in rows {
        let campaign = CampaignRow {
            kind: row.try_get("kind")?,
            name: row.try_get("name")?,
            status: row.try_get("status")?,
            participations: row.try_get("participations")?,
            participants: row.try_get("participants")?,
            winners: row.try_get("winners")?,
            created_at: micros(row.try_get("created_at")?),
            updated_at: micros(row.try_get("updated_at")?),
            version: row.try_get("version")?,
        };
        found.insert(row.try_get("campaign_id")?, campaign);
    }
    Ok(found)
}

/// `(campaign, item)` → row of `rm_vote_items`.
async fn read_item_rows(snapshot: &mut PgConnection, tenant: &TenantId) -> Result<BTreeMap<(String, String), ItemRow>> {
    let rows = sqlx::query(
        "SELECT campaign_id, item_id, title, member_id, status, votes FROM rm_vote_items WHERE tenant_id = $1",
    )
    .bind(tenant.as_str())
    .fetch_all(&mut *snapshot)
    .await
    .context("reading rm_vote_items")?;
    let mut found = BTreeMap::new();
    for row in rows {
        let votes: i32 = row.try_get("votes")?;
        let member_id: Option<String> = row.try_get("member_id")?;
        let item = ItemRow {
            title: row.try_get("title")?,
            member_id: member_id.unwrap_or_default(),
            status: row.try_get("status")?,
            votes: i64::from(votes),
        };
        found.insert((row.try_get("campaign_id")?, row.try_get("item_id")?), item);
    }
    Ok(found)
}

async fn read_counts(snapshot: &mut PgConnection, tenant: &TenantId) -> Result<CampaignCounts> {
    let rows: Vec<(NaiveDate, String, String, i64)> = sqlx::query_as(
        "SELECT day, metric, dimension, value FROM rm_daily_ops
          WHERE tenant_id = $1 AND metric = ANY($2) AND value <> 0",
    )
    .bind(tenant.as_str())
    .bind(&CAMPAIGN_METRICS[..])
    .fetch_all(&mut *snapshot)
    .await
    .context("reading the campaign counters of rm_daily_ops")?;
    Ok(rows.into_iter().map(|(day, name, dimension, value)| ((day, name, dimension), value)).collect())
}

fn presence(stream: String, expected: &str, found: &str) -> CampaignDifference {
    CampaignDifference { stream, field: "presence", expected: expected.into(), found: found.into() }
}

fn compare_campaigns(
    campaigns: &BTreeMap<String, CampaignFold>,
    found: &BTreeMap<String, CampaignRow>,
    out: &mut Vec<CampaignDifference>,
) {
    let stream = |id: &str| format!("{}/{id}", Campaign::TYPE);
    for (id, campaign) in campaigns {
        if campaign.fold.broken.is_some() {
            continue;
        }
        let Some(expected) = expected_row(campaign) else { continue };
        let Some(row) = found.get(id) else {
            out.push(presence(stream(id), "row", "-"));
            continue;
        };
        for ((field, e), (_, f)) in expected.fields().into_iter().zip(row.fields()) {
            if e != f {
                out.push(CampaignDifference { stream: stream(id), field, expected: e, found: f });
            }
        }
    }
    for id in found.keys() {
        if campaigns.get(id).is_none_or(|c| c.fold.broken.is_none() && c.fold.state.created.is_none()) {
            out.push(presence(stream(id), "-", "row"));
        }
    }
}

fn compare_items(
    campaigns: &BTreeMap<String, CampaignFold>,
    found: &BTreeMap<(String, String), ItemRow>,
    out: &mut Vec<CampaignDifference>,
) -> u64 {
    let stream = |campaign: &str, item: &str| format!("{}/{campaign}/item/{item}", Campaign::TYPE);
    let mut items = 0u64;
    let mut expected_keys = BTreeSet::new();
    for (id, campaign) in campaigns {
        let Some(state) = campaign.fold.state.created.as_ref().filter(|_| campaign.fold.broken.is_none()) else {
            continue;
        };
        for (item_id, item) in &state.voting.items {
            items += 1;
            let key = (id.clone(), item_id.to_string());
            let expected = ItemRow {
                title: item.title.as_str().to_owned(),
                member_id: item.member_id.map(|m| m.to_string()).unwrap_or_default(),
                status: item.status.name().to_owned(),
                votes: i64::from(item.votes),
            };
            match found.get(&key) {
                None => out.push(presence(stream(&key.0, &key.1), "row", "-")),
                Some(row) => {
                    for ((field, e), (_, f)) in expected.fields().into_iter().zip(row.fields()) {
                        if e != f {
                            out.push(CampaignDifference {
                                stream: stream(&key.0, &key.1),
                                field,
                                expected: e,
                                found: f,
                            });
                        }
                    }
                }
            }
            expected_keys.insert(key);
        }
    }
    for key in found.keys() {
        // Rows of a broken campaign are not compared either way.
        let broken = campaigns.get(&key.0).is_some_and(|c| c.fold.broken.is_some());
        if !broken && !expected_keys.contains(key) {
            out.push(presence(stream(&key.0, &key.1), "-", "row"));
        }
    }
    items
}

fn compare_counts(expected: &CampaignCounts, found: &CampaignCounts, out: &mut Vec<CampaignDifference>) {
    let keys: BTreeSet<_> = expected.keys().chain(found.keys()).collect();
    for key in keys {
        let (e, f) = (expected.get(key).copied().unwrap_or(0), found.get(key).copied().unwrap_or(0));
        if e == f {
            continue;
        }
        let (day, name, campaign) = key;
        let field = CAMPAIGN_METRICS.iter().find(|m| **m == name.as_str()).copied().unwrap_or("campaign_counter");
        out.push(CampaignDifference {
            stream: format!("daily:{day}:{campaign}"),
            field,
            expected: e.to_string(),
            found: f.to_string(),
        });
    }
}

/// Compares the tenant's campaign read models and counters with its campaign streams.
pub async fn reconcile_campaigns(snapshot: &mut PgConnection, tenant: &TenantId) -> Result<CampaignReconcile> {
    let (events, campaigns, expected_counts) = fold_campaigns(snapshot, tenant).await?;
    let found_rows = read_campaign_rows(snapshot, tenant).await?;
    let found_items = read_item_rows(snapshot, tenant).await?;
    let found_counts = read_counts(snapshot, tenant).await?;
    let mut report = CampaignReconcile {
        events,
        campaigns: campaigns.len() as u64,
        vote_items: 0,
        broken_streams: campaigns.values().filter_map(|c| c.fold.broken.clone()).collect(),
        differences: Vec::new(),
    };
    compare_campaigns(&campaigns, &found_rows, &mut report.differences);
    report.vote_items = compare_items(&campaigns, &found_items, &mut report.differences);
    let expected_counts: CampaignCounts = expected_counts.into_iter().filter(|(_, v)| *v != 0).collect();
    compare_counts(&expected_counts, &found_counts, &mut report.differences);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_that_differ_name_their_day_campaign_and_metric() {
        let day = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        let key = |name: &str| (day, name.to_owned(), "c1".to_owned());
        let expected = CampaignCounts::from([(key(metric::CAMPAIGN_WINNERS), 2)]);
        let found = CampaignCounts::from([(key(metric::CAMPAIGN_WINNERS), 3)]);
        let mut out = Vec::new();
        compare_counts(&expected, &found, &mut out);
        assert_eq!(
            out,
            [CampaignDifference {
                stream: "daily:2026-03-01:c1".into(),
                field: metric::CAMPAIGN_WINNERS,
                expected: "2".into(),
                found: "3".into(),
            }]
        );
    }
}
