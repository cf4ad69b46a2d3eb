//! Periodic lotteries: periods (by cycle or by hand), each committing to its
//! own seed when it opens, entries that may cost points, and one draw per
//! period over the frozen entrant list (`schemas/draws/SPEC.md` §3–5).
//!
//! A period's entries are kept until it is drawn or cancelled (they are the
//! entrant list and the refunds), then dropped: the events keep them, and
//! the state stays bounded by one open period's entries per period.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::aggregate::{CampaignError, CampaignEvent, CampaignState, Decision, Refusal, Status};
use super::draw::{self, BeaconValue, DrawSeed, Entrant, EntrantList, EntrantsHash, SeedCommitment};
use super::{
    merchant_day, merchant_midnight, rules, AwardRef, BeaconRound, Cycle, EntryId, EntryRefund, PeriodWinner,
    PeriodicTerms, TicketSource, ENTRIES_PER_PERIOD_MAX, PERIODS_MAX,
};
use crate::invariant::{ensure, ensure_figure};
use crate::{Actor, InvariantViolation, MemberId, OpenId};

/// One period of a periodic lottery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Period {
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub commitment: SeedCommitment,
    pub beacon: Option<BeaconRound>,
    /// Entry → member, while the period is open.
    pub entries: BTreeMap<EntryId, MemberId>,
    /// Member → entries (tickets), while the period is open.
    pub tickets: BTreeMap<MemberId, u32>,
    pub entries_total: u32,
    pub entrants: u32,
    pub end: Option<PeriodEnd>,
}

/// How a period ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PeriodEnd {
    Drawn { seed: DrawSeed, entrants_hash: EntrantsHash, winners: Vec<MemberId>, drawn_at: DateTime<Utc> },
    Cancelled { cancelled_at: DateTime<Utc> },
}

impl Period {
    /// The frozen entrant list: every member with their entries as tickets.
    pub fn entrant_list(&self) -> Result<EntrantList, draw::DrawError> {
        EntrantList::new(self.tickets.iter().map(|(m, t)| Entrant { member_id: *m, tickets: *t }).collect())
    }

    fn accepts_at(&self, now: DateTime<Utc>) -> bool {
        self.end.is_none() && self.starts_at <= now && now < self.ends_at
    }
}

/// The window a cycle gives the period that contains `at`, clipped to the
/// campaign (`None` for periods by hand).
pub(super) fn cycle_window(
    cycle: Cycle,
    campaign: (DateTime<Utc>, DateTime<Utc>),
    at: DateTime<Utc>,
) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let day = merchant_day(at);
    let (first, days) = match cycle {
        Cycle::Manual => return None,
        Cycle::WholeCampaign => return Some(campaign),
        Cycle::Daily => (day, 1),
        Cycle::Weekly => (day - Duration::days(i64::from(day.weekday().num_days_from_monday())), 7),
    };
    let start = merchant_midnight(first)?;
    let end = start + Duration::days(days);
    Some((start.max(campaign.0), end.min(campaign.1)))
}

impl CampaignState {
    /// The window of the next period of a cycle (for the scheduler), or
    /// `None` for a campaign by hand, a shake lottery, or when no period is left.
    pub fn next_period_window(&self) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        let terms = self.periodic().ok()?;
        let from = self.periods.values().next_back().map_or(self.terms.starts_at, |p| p.ends_at);
        if from >= self.terms.ends_at {
            return None;
        }
        cycle_window(terms.cycle, (self.terms.starts_at, self.terms.ends_at), from)
    }

    fn period(&self, period_no: u32) -> Result<&Period, CampaignError> {
        self.periods.get(&period_no).ok_or(CampaignError::PeriodNotFound(period_no))
    }

    fn check_period_window(
        &self,
        terms: &PeriodicTerms,
        starts_at: DateTime<Utc>,
        ends_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), CampaignError> {
        if starts_at >= ends_at {
            return Err(CampaignError::InvalidPeriod("a period must end after it starts"));
        }
        if starts_at < self.terms.starts_at || ends_at > self.terms.ends_at {
            return Err(CampaignError::InvalidPeriod("a period lies inside the campaign"));
        }
        if self.periods.values().next_back().is_some_and(|last| starts_at < last.ends_at) {
            return Err(CampaignError::InvalidPeriod("periods do not overlap"));
        }
        if now >= ends_at {
            return Err(CampaignError::InvalidPeriod("the period would be over before it opens"));
        }
        let campaign = (self.terms.starts_at, self.terms.ends_at);
        if let Some(window) = cycle_window(terms.cycle, campaign, starts_at) {
            if window != (starts_at, ends_at) {
                return Err(CampaignError::InvalidPeriod("the window is not the cycle's"));
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn open_period(
        &self,
        period_no: u32,
        starts_at: DateTime<Utc>,
        ends_at: DateTime<Utc>,
        commitment: SeedCommitment,
        beacon: Option<BeaconRound>,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Decision {
        let terms = self.periodic()?;
        if let Some(open) = self.periods.get(&period_no) {
            // The same opening retried changes nothing.
            let same = (open.starts_at, open.ends_at, open.commitment, &open.beacon)
                == (starts_at, ends_at, commitment, &beacon);
            return if same { Ok(Vec::new()) } else { Err(CampaignError::PeriodConflict(period_no)) };
        }
        match self.phase_at(now) {
            Status::Scheduled | Status::Ongoing => {}
            Status::Ended => return Err(CampaignError::AlreadyEnded),
            Status::Draft => return Err(CampaignError::WrongStatus(Status::Draft)),
        }
        let expected = self.periods.keys().next_back().map_or(1, |n| n + 1);
        if period_no != expected || period_no > PERIODS_MAX {
            return Err(CampaignError::PeriodOutOfOrder { expected });
        }
        self.check_period_window(terms, starts_at, ends_at, now)?;
        Ok(vec![CampaignEvent::CampaignPeriodOpened {
            period_no,
            starts_at,
            ends_at,
            commitment,
            beacon,
            actor,
            opened_at: now,
        }])
    }

    pub(super) fn enter(
        &self,
        entry_id: EntryId,
        member_id: MemberId,
        period_no: u32,
        card_member: bool,
        now: DateTime<Utc>,
    ) -> Decision {
        if self.periodic()?.tickets != TicketSource::Entries {
            return Err(CampaignError::WrongKind("periodic_lottery"));
        }
        self.record_ticket(entry_id, member_id, period_no, card_member, None, now)
    }

    /// A friend's visit through the member's share link: the visitor's one
    /// ticket for the member in the period. A repeated visit changes nothing;
    /// the member's own visit is refused.
    pub(super) fn grant_ticket(
        &self,
        member_id: MemberId,
        period_no: u32,
        visitor: OpenId,
        member_openids: &[OpenId],
        card_member: bool,
        now: DateTime<Utc>,
    ) -> Decision {
        if self.periodic()?.tickets != TicketSource::FriendVisits {
            return Err(CampaignError::WrongKind("popularity_lottery"));
        }
        if member_openids.contains(&visitor) {
            return Err(Refusal::SelfVisit.into());
        }
        let entry_id = EntryId::for_visit(&self.tenant_id, self.campaign_id, period_no, member_id, &visitor);
        self.record_ticket(entry_id, member_id, period_no, card_member, Some(visitor), now)
    }

    fn record_ticket(
        &self,
        entry_id: EntryId,
        member_id: MemberId,
        period_no: u32,
        card_member: bool,
        visitor_openid: Option<OpenId>,
        now: DateTime<Utc>,
    ) -> Decision {
        let terms = self.periodic()?;
        let period = self.period(period_no)?;
        if let Some(member) = period.entries.get(&entry_id) {
            return if *member == member_id { Ok(Vec::new()) } else { Err(CampaignError::EntryConflict(entry_id)) };
        }
        let after = self.admit(self.participations.get(&member_id), self.participations.len(), card_member, now)?;
        if !period.accepts_at(now) {
            return Err(CampaignError::PeriodNotOpen(period_no));
        }
        let held = period.tickets.get(&member_id).copied().unwrap_or(0);
        if self.terms.limits.per_period.is_some_and(|l| held >= l) {
            return Err(Refusal::PeriodLimitReached.into());
        }
        let new_entrant = held == 0;
        if (new_entrant && period.entrants >= terms.entrants_max) || period.entries.len() >= ENTRIES_PER_PERIOD_MAX {
            return Err(Refusal::PeriodFull.into());
        }
        Ok(vec![CampaignEvent::CampaignEntryRecorded {
            entry_id,
            member_id,
            period_no,
            cost_points: terms.entry_cost,
            merchant_day: merchant_day(now),
            member_total_after: after.total,
            member_day_after: after.day_count,
            member_period_after: held + 1,
            period_entries_after: period.entries_total + 1,
            period_entrants_after: period.entrants + u32::from(new_entrant),
            entered_at: now,
            visitor_openid,
        }])
    }

    pub(super) fn draw_period(
        &self,
        period_no: u32,
        seed: &DrawSeed,
        beacon_value: Option<BeaconValue>,
        actor: Actor,
        now: DateTime<Utc>,
    ) -> Decision {
        let terms = self.periodic()?;
        let period = self.period(period_no)?;
        match &period.end {
            // The same draw retried (a second scheduler) changes nothing.
            Some(PeriodEnd::Drawn { seed: drawn, .. }) if drawn == seed => return Ok(Vec::new()),
            Some(_) => return Err(CampaignError::PeriodClosed(period_no)),
            None => {}
        }
        if now < period.ends_at && self.phase_at(now) != Status::Ended {
            return Err(CampaignError::PeriodStillOpen(period_no, period.ends_at));
        }
        if !period.commitment.opens_to(seed) {
            return Err(CampaignError::SeedMismatch);
        }
        match (&period.beacon, &beacon_value) {
            (Some(_), None) => return Err(CampaignError::BeaconValueRequired(period_no)),
            (None, Some(_)) => return Err(CampaignError::UnexpectedBeacon(period_no)),
            _ => {}
        }
        let list = period.entrant_list()?;
        let drawn = draw::draw_winners(seed, beacon_value.as_ref(), &list, terms.winners())?;
        let winners = ranked(terms, &drawn);
        Ok(vec![CampaignEvent::CampaignPeriodDrawn {
            period_no,
            algorithm: draw::ALGORITHM.to_owned(),
            seed: *seed,
            beacon: period.beacon.clone(),
            beacon_value,
            entrants_hash: list.hash(),
            entrants: period.entrants,
            total_tickets: list.total_tickets(),
            winners,
            actor,
            drawn_at: now,
        }])
    }

    pub(super) fn cancel_period(&self, period_no: u32, actor: Actor, now: DateTime<Utc>) -> Decision {
        let terms = self.periodic()?;
        let period = self.period(period_no)?;
        match &period.end {
            Some(PeriodEnd::Cancelled { .. }) => Ok(Vec::new()),
            Some(PeriodEnd::Drawn { .. }) => Err(CampaignError::PeriodClosed(period_no)),
            None => Ok(vec![CampaignEvent::CampaignPeriodCancelled {
                period_no,
                refunds: refunds(terms.entry_cost, period),
                actor,
                cancelled_at: now,
            }]),
        }
    }

    /// Applies the periodic events (the caller matched them).
    pub(super) fn apply_periodic(&mut self, event: &CampaignEvent) -> Result<(), InvariantViolation> {
        match event {
            CampaignEvent::CampaignPeriodOpened { period_no, starts_at, ends_at, commitment, beacon, .. } => {
                let expected = self.periods.keys().next_back().map_or(1, |n| n + 1);
                ensure(*period_no == expected && *period_no <= PERIODS_MAX, rules::PERIOD_ORDER, || {
                    format!("period {period_no} opened, expected {expected}")
                })?;
                let after_last = self.periods.values().next_back().is_none_or(|last| *starts_at >= last.ends_at);
                ensure(starts_at < ends_at && after_last, rules::PERIOD_ORDER, || {
                    format!("period {period_no} from {starts_at} to {ends_at} overlaps or is empty")
                })?;
                ensure(matches!(self.status, Status::Scheduled | Status::Ongoing), rules::TRANSITION, || {
                    format!("period opened while {:?}", self.status)
                })?;
                self.periodic().map_err(|e| InvariantViolation::new(rules::TRANSITION, e.to_string()))?;
                self.periods.insert(
                    *period_no,
                    Period {
                        starts_at: *starts_at,
                        ends_at: *ends_at,
                        commitment: *commitment,
                        beacon: beacon.clone(),
                        entries: BTreeMap::new(),
                        tickets: BTreeMap::new(),
                        entries_total: 0,
                        entrants: 0,
                        end: None,
                    },
                );
            }
            CampaignEvent::CampaignEntryRecorded { .. } => self.apply_entry(event)?,
            CampaignEvent::CampaignPeriodDrawn { .. } => self.apply_drawn(event)?,
            CampaignEvent::CampaignPeriodCancelled { period_no, refunds: stated, cancelled_at, .. } => {
                let cost =
                    self.periodic().map_err(|e| InvariantViolation::new(rules::TRANSITION, e.to_string()))?.entry_cost;
                let period = open_period_mut(&mut self.periods, *period_no)?;
                let recomputed = refunds(cost, period);
                ensure(*stated == recomputed, rules::COUNTS_AFTER, || {
                    format!("{} refunds stated, {} entries to refund", stated.len(), recomputed.len())
                })?;
                close(period, PeriodEnd::Cancelled { cancelled_at: *cancelled_at });
            }
            _ => {}
        }
        Ok(())
    }

    fn apply_entry(&mut self, event: &CampaignEvent) -> Result<(), InvariantViolation> {
        let CampaignEvent::CampaignEntryRecorded {
            entry_id,
            member_id,
            period_no,
            cost_points,
            merchant_day,
            member_total_after,
            member_day_after,
            member_period_after,
            period_entries_after,
            period_entrants_after,
            entered_at,
            visitor_openid,
        } = event
        else {
            return Ok(());
        };
        let terms = self.periodic().map_err(|e| InvariantViolation::new(rules::TRANSITION, e.to_string()))?.clone();
        ensure(*cost_points == terms.entry_cost, rules::COUNTS_AFTER, || "the entry's cost is not the terms'".into())?;
        let ticket_ok = match (terms.tickets, visitor_openid) {
            (TicketSource::Entries, None) => true,
            (TicketSource::FriendVisits, Some(visitor)) => {
                *entry_id == EntryId::for_visit(&self.tenant_id, self.campaign_id, *period_no, *member_id, visitor)
            }
            (TicketSource::Entries, Some(_)) | (TicketSource::FriendVisits, None) => false,
        };
        ensure(ticket_ok, rules::TICKET_PER_VISITOR, || {
            format!("entry {entry_id} is not the one ticket of its visitor (or names one it may not)")
        })?;
        let per_period = self.terms.limits.per_period;
        let period = open_period_mut(&mut self.periods, *period_no)?;
        ensure(period.starts_at <= *entered_at && *entered_at < period.ends_at, rules::ENTRY_OPEN_PERIOD, || {
            format!("entry at {entered_at} outside period {period_no}")
        })?;
        ensure(!period.entries.contains_key(entry_id), rules::ENTRY_OPEN_PERIOD, || {
            format!("entry {entry_id} recorded twice")
        })?;
        let held = period.tickets.get(member_id).copied().unwrap_or(0) + 1;
        let entrants = period.entrants + u32::from(held == 1);
        ensure_figure(rules::COUNTS_AFTER, "member_period_after", *member_period_after, held)?;
        ensure_figure(rules::COUNTS_AFTER, "period_entries_after", *period_entries_after, period.entries_total + 1)?;
        ensure_figure(rules::COUNTS_AFTER, "period_entrants_after", *period_entrants_after, entrants)?;
        ensure(
            per_period.is_none_or(|l| held <= l)
                && entrants <= terms.entrants_max
                && period.entries.len() < ENTRIES_PER_PERIOD_MAX,
            rules::WITHIN_LIMITS,
            || format!("member {member_id} at {held} entries, period at {entrants} entrants"),
        )?;
        period.entries.insert(*entry_id, *member_id);
        period.tickets.insert(*member_id, held);
        period.entries_total += 1;
        period.entrants = entrants;
        self.count_participation(*member_id, *merchant_day, *member_total_after, *member_day_after)?;
        Ok(())
    }

    fn apply_drawn(&mut self, event: &CampaignEvent) -> Result<(), InvariantViolation> {
        let CampaignEvent::CampaignPeriodDrawn {
            period_no,
            algorithm,
            seed,
            beacon,
            beacon_value,
            entrants_hash,
            entrants,
            total_tickets,
            winners,
            drawn_at,
            ..
        } = event
        else {
            return Ok(());
        };
        let terms = self.periodic().map_err(|e| InvariantViolation::new(rules::TRANSITION, e.to_string()))?.clone();
        let period = open_period_mut(&mut self.periods, *period_no)?;
        ensure(algorithm == draw::ALGORITHM, rules::DRAW_RECOMPUTES, || format!("unknown algorithm {algorithm}"))?;
        ensure(period.commitment.opens_to(seed), rules::SEED_OPENS_COMMITMENT, || {
            format!("the seed of period {period_no} does not open its commitment")
        })?;
        ensure(*beacon == period.beacon && beacon.is_some() == beacon_value.is_some(), rules::DRAW_RECOMPUTES, || {
            format!("period {period_no}'s beacon differs from the one named when it opened")
        })?;
        // The pair of checks: the winners are recomputed from the seed and the frozen list.
        let list = period.entrant_list().map_err(|e| InvariantViolation::new(rules::DRAW_RECOMPUTES, e.to_string()))?;
        ensure_figure(rules::DRAW_RECOMPUTES, "entrants_hash", entrants_hash.to_hex(), list.hash().to_hex())?;
        ensure_figure(rules::COUNTS_AFTER, "entrants", *entrants, period.entrants)?;
        ensure_figure(rules::COUNTS_AFTER, "total_tickets", *total_tickets, list.total_tickets())?;
        let drawn = draw::draw_winners(seed, beacon_value.as_ref(), &list, terms.winners())
            .map_err(|e| InvariantViolation::new(rules::DRAW_RECOMPUTES, e.to_string()))?;
        ensure(*winners == ranked(&terms, &drawn), rules::DRAW_RECOMPUTES, || {
            format!("the stated winners of period {period_no} are not what {} gives", draw::ALGORITHM)
        })?;
        close(
            period,
            PeriodEnd::Drawn { seed: *seed, entrants_hash: *entrants_hash, winners: drawn, drawn_at: *drawn_at },
        );
        for w in winners {
            self.award(AwardRef::Period { period_no: *period_no, rank: w.rank }, w.member_id, &w.prize)?;
        }
        Ok(())
    }
}

/// Winners in draw order with their rank (1-based) and the prize of the rank.
fn ranked(terms: &PeriodicTerms, drawn: &[MemberId]) -> Vec<PeriodWinner> {
    (1u32..)
        .zip(drawn)
        .filter_map(|(rank, member)| {
            terms.prize_of_rank(rank).map(|prize| PeriodWinner { rank, member_id: *member, prize: prize.clone() })
        })
        .collect()
}

fn refunds(entry_cost: Option<crate::PointsAmount>, period: &Period) -> Vec<EntryRefund> {
    let Some(points) = entry_cost else { return Vec::new() };
    period
        .entries
        .iter()
        .map(|(entry_id, member_id)| EntryRefund { entry_id: *entry_id, member_id: *member_id, points })
        .collect()
}

fn open_period_mut(periods: &mut BTreeMap<u32, Period>, period_no: u32) -> Result<&mut Period, InvariantViolation> {
    let period = periods
        .get_mut(&period_no)
        .ok_or_else(|| InvariantViolation::new(rules::ENTRY_OPEN_PERIOD, format!("no period {period_no}")))?;
    ensure(period.end.is_none(), rules::PERIOD_ENDS_ONCE, || format!("period {period_no} already drawn or cancelled"))?;
    Ok(period)
}

/// Ends a period and drops its entries (the events keep them).
fn close(period: &mut Period, end: PeriodEnd) {
    period.entries.clear();
    period.tickets.clear();
    period.end = Some(end);
}
