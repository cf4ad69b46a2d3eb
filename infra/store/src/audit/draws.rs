//! A campaign's draws recomputed from its events alone (`schemas/draws/SPEC.md`,
//! `wxcm-draw-v1`), as pure code over stored rows: `wxcm audit draw` and the admin
//! API's draw audit view ([`super::PgDrawAudit`]) both run it.
//!
//! Shake lottery: the revealed seed must open the commitment recorded when
//! the campaign was scheduled; then every shake is decided again in stream
//! order against the table in force (weights of prizes with stock left): the
//! table version, total weight, roll (HMAC-SHA256 of seed, member and
//! chance), slot, prize, stock after, the member's chance numbering and prize
//! count must all be what the event states. Periodic lottery: each drawn
//! period's seed must open that period's commitment, the entrant list rebuilt
//! from its entries must hash to the recorded hash, and the ChaCha20 draw must
//! give the recorded winners in rank order with their tiers' prizes. A 1-yuan
//! snatch's periods are checked the same way, the entrant list rebuilt from
//! the paid shares (`SnatchSharesConfirmed`, tickets = shares), after exactly
//! N shares sold, with one winner of the snatch's prize.
//!
//! This does not reuse the aggregate's `apply` (which checks the slot a roll
//! lands on but cannot check the roll before the seed is revealed): it is a
//! second, independent reading of the events with the domain's draw functions.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;
use wxcm_domain::campaign::draw::{self, DrawSeed, Entrant, EntrantList};
use wxcm_domain::campaign::{
    CampaignEvent, CampaignId, CampaignKind, CampaignTerms, EntryId, Prize, SeedCommitment, ShakeDraw,
};
use wxcm_domain::{MemberId, OpenId, TenantId};

use crate::hashchain::StoredEvent;

/// One disagreement between an event and the recomputation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DrawDifference {
    /// The event's sequence (`None`: the campaign as a whole).
    pub sequence: Option<i64>,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct DrawReport {
    pub ok: bool,
    pub tenant_id: String,
    pub campaign_id: String,
    /// The seed was revealed (a shake lottery that has not ended cannot be checked yet).
    pub revealed: bool,
    pub shakes_checked: u64,
    pub periods_checked: u64,
    pub differences: Vec<DrawDifference>,
}

#[derive(Default)]
struct Shaking {
    stock_left: Vec<Option<u32>>,
    table_version: u32,
    /// Per member: shakes so far, prizes won.
    members: HashMap<MemberId, (u32, u32)>,
}

#[derive(Default)]
struct PeriodEntries {
    commitment: Option<SeedCommitment>,
    tickets: BTreeMap<MemberId, u32>,
    /// A popularity period's (member, visitor) pairs that gave a ticket.
    visits: HashSet<(MemberId, OpenId)>,
}

struct Audit {
    tenant: TenantId,
    campaign: CampaignId,
    report: DrawReport,
    terms: Option<CampaignTerms>,
    commitment: Option<SeedCommitment>,
    seed: Option<DrawSeed>,
    shaking: Shaking,
    periods: BTreeMap<u32, PeriodEntries>,
}

impl Audit {
    fn differ(&mut self, sequence: Option<i64>, detail: impl Into<String>) {
        self.report.differences.push(DrawDifference { sequence, detail: detail.into() });
    }
}

/// Checks the rows of one campaign stream (in sequence order).
pub fn check_draws(tenant: &TenantId, campaign: CampaignId, rows: &[StoredEvent]) -> DrawReport {
    let mut audit = Audit {
        tenant: tenant.clone(),
        campaign,
        report: DrawReport {
            ok: false,
            tenant_id: tenant.to_string(),
            campaign_id: campaign.to_string(),
            revealed: false,
            shakes_checked: 0,
            periods_checked: 0,
            differences: Vec::new(),
        },
        terms: None,
        commitment: None,
        seed: None,
        shaking: Shaking::default(),
        periods: BTreeMap::new(),
    };
    if rows.is_empty() || rows.iter().any(|r| r.tenant_id != tenant.as_str()) {
        audit.differ(None, "no such campaign of this tenant");
        return audit.report;
    }
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        match serde_json::from_str::<CampaignEvent>(&row.payload_text) {
            Ok(event) => events.push((row.sequence, event)),
            Err(e) => {
                audit.differ(Some(row.sequence), format!("undecodable payload: {e}"));
                return audit.report;
            }
        }
    }
    // The reveal comes last, but every shake needs it: read it first.
    audit.seed = events.iter().find_map(|(_, e)| match e {
        CampaignEvent::CampaignShakeSeedRevealed { seed, .. } => Some(*seed),
        _ => None,
    });
    audit.report.revealed = audit.seed.is_some();
    for (sequence, event) in &events {
        audit.event(*sequence, event);
    }
    let shake = audit.terms.as_ref().is_some_and(|t| matches!(t.kind, CampaignKind::ShakeLottery(_)));
    if shake && audit.seed.is_none() {
        audit.differ(None, "the seed is not revealed: the shakes cannot be recomputed (has the campaign ended?)");
    }
    audit.report.ok = audit.report.differences.is_empty();
    audit.report
}

/// Only period `period`'s draw: its commitment, entrant list and winners
/// (a period that was not drawn is a difference).
pub fn check_period(tenant: &TenantId, campaign: CampaignId, rows: &[StoredEvent], period: u32) -> DrawReport {
    let mut report = check_draws(tenant, campaign, rows);
    let drawn = rows.iter().any(|r| {
        r.event_type == "CampaignPeriodDrawn"
            && serde_json::from_str::<CampaignEvent>(&r.payload_text)
                .is_ok_and(|e| matches!(e, CampaignEvent::CampaignPeriodDrawn { period_no, .. } if period_no == period))
    });
    let tag = format!("period {period}:");
    // The period's own findings, and those that make the stream unreadable.
    report
        .differences
        .retain(|d| ["no such campaign", "undecodable payload", tag.as_str()].iter().any(|p| d.detail.starts_with(p)));
    if !drawn {
        report.differences.push(DrawDifference { sequence: None, detail: format!("{tag} not drawn") });
    }
    report.shakes_checked = 0;
    report.periods_checked = u64::from(drawn);
    report.ok = report.differences.is_empty();
    report
}

impl Audit {
    fn event(&mut self, sequence: i64, event: &CampaignEvent) {
        let at = Some(sequence);
        match event {
            CampaignEvent::CampaignCreated { terms, .. } | CampaignEvent::CampaignEdited { terms, .. } => {
                self.terms = Some(terms.clone());
            }
            CampaignEvent::CampaignScheduled { commitment, .. } => {
                self.commitment = *commitment;
                if let Some(CampaignKind::ShakeLottery(t)) = self.terms.as_ref().map(|t| &t.kind) {
                    self.shaking.stock_left = t.slots.iter().map(|s| s.stock).collect();
                    self.shaking.table_version = 1;
                }
            }
            CampaignEvent::CampaignShakeSeedRevealed { seed, algorithm, .. } => {
                if algorithm != draw::ALGORITHM {
                    self.differ(at, format!("algorithm {algorithm:?}, expected {}", draw::ALGORITHM));
                }
                if !self.commitment.is_some_and(|c| c.opens_to(seed)) {
                    self.differ(at, "the revealed seed does not open the commitment recorded when scheduled");
                }
            }
            CampaignEvent::CampaignShakesDrawn { draws, .. } => {
                for d in draws {
                    self.shake(sequence, d);
                    self.report.shakes_checked += 1;
                }
            }
            CampaignEvent::CampaignPeriodOpened { period_no, commitment, .. } => {
                self.periods.entry(*period_no).or_default().commitment = Some(*commitment);
            }
            CampaignEvent::CampaignEntryRecorded { entry_id, member_id, period_no, visitor_openid, .. } => {
                self.ticket(sequence, *entry_id, *member_id, *period_no, visitor_openid.as_ref());
            }
            // A snatch's tickets are its paid shares.
            CampaignEvent::SnatchSharesConfirmed { member_id, period_no, quantity, .. } => {
                *self.periods.entry(*period_no).or_default().tickets.entry(*member_id).or_default() += quantity;
            }
            CampaignEvent::CampaignPeriodDrawn { .. } => {
                self.period_draw(sequence, event);
                self.report.periods_checked += 1;
            }
            CampaignEvent::CampaignStarted { .. }
            | CampaignEvent::CampaignEnded { .. }
            | CampaignEvent::CampaignPeriodCancelled { .. }
            | CampaignEvent::CampaignPrizeHandedOver { .. }
            | CampaignEvent::SnatchSharesReserved { .. }
            | CampaignEvent::SnatchSharesReleased { .. }
            | CampaignEvent::SnatchPaymentArrivedLate { .. }
            | CampaignEvent::SnatchPeriodCancelled { .. }
            | CampaignEvent::CampaignVoteItemSubmitted { .. }
            | CampaignEvent::CampaignVoteItemApproved { .. }
            | CampaignEvent::CampaignVoteItemRejected { .. }
            | CampaignEvent::CampaignVoteCast { .. } => {}
        }
    }

    /// One ticket: an entry, or a friend's visit, which must be that
    /// friend's only ticket for the member in the period, under the id
    /// derived from them (`schemas/draws/SPEC.md` §3, "Popularity lotteries").
    fn ticket(&mut self, sequence: i64, entry_id: EntryId, member: MemberId, period_no: u32, visitor: Option<&OpenId>) {
        let popularity = self.terms.as_ref().is_some_and(|t| t.kind.is_popularity());
        match (popularity, visitor) {
            (true, Some(visitor)) => {
                if entry_id != EntryId::for_visit(&self.tenant, self.campaign, period_no, member, visitor) {
                    self.differ(Some(sequence), format!("period {period_no}: a ticket's id is not its visitor's"));
                }
                let fresh = self.periods.entry(period_no).or_default().visits.insert((member, visitor.clone()));
                if !fresh {
                    self.differ(Some(sequence), format!("period {period_no}: one friend gave a member two tickets"));
                }
            }
            (true, None) => self.differ(Some(sequence), format!("period {period_no}: a ticket names no visitor")),
            (false, Some(_)) => {
                self.differ(Some(sequence), format!("period {period_no}: an entry names a visitor"));
            }
            (false, None) => {}
        }
        *self.periods.entry(period_no).or_default().tickets.entry(member).or_default() += 1;
    }

    fn shake(&mut self, sequence: i64, d: &ShakeDraw) {
        let at = Some(sequence);
        let Some(CampaignKind::ShakeLottery(terms)) = self.terms.as_ref().map(|t| t.kind.clone()) else {
            self.differ(at, "a shake in a campaign that is not a shake lottery");
            return;
        };
        let Some(seed) = self.seed else { return };
        let s = &mut self.shaking;
        let weights: Vec<u64> = terms
            .slots
            .iter()
            .zip(&s.stock_left)
            .map(|(slot, left)| if left.is_none_or(|n| n > 0) { u64::from(slot.weight) } else { 0 })
            .collect();
        let total: u64 = weights.iter().sum();
        let (used, won) = s.members.get(&d.member_id).copied().unwrap_or((0, 0));
        let mut found = Vec::new();
        if d.nonce != used + 1 {
            found.push(format!("member {} chance {} after {used} shakes", d.member_id, d.nonce));
        }
        if d.table_version != s.table_version {
            found.push(format!("table_version {} but {} in force", d.table_version, s.table_version));
        }
        if d.total_weight != total {
            found.push(format!("total_weight {} but {total} in force", d.total_weight));
        }
        let roll = match draw::shake_roll(&seed, d.member_id, u64::from(d.nonce), total) {
            Ok(roll) => roll,
            Err(e) => {
                self.differ(at, format!("member {} chance {}: {e}", d.member_id, d.nonce));
                return;
            }
        };
        if d.roll != roll {
            found.push(format!("roll {} but the seed gives {roll}", d.roll));
        }
        let Some(index) = draw::slot_for_roll(&weights, roll) else {
            self.differ(at, "the recomputed roll lands on no slot");
            return;
        };
        if usize::from(d.slot) != index {
            found.push(format!("slot {} but the roll lands on {index}", d.slot));
        }
        let prize = &terms.slots[index].prize;
        if &d.prize != prize {
            found.push(format!("prize {:?} but slot {index} gives {prize:?}", d.prize));
        }
        let after = s.stock_left[index].map(|n| n.saturating_sub(1));
        if d.stock_left_after != after {
            found.push(format!("stock_left_after {:?} but {after:?}", d.stock_left_after));
        }
        let won_after = if after.is_some() { won + 1 } else { won };
        if d.member_prizes_after != won_after || won_after > terms.prizes_per_member_max {
            found.push(format!("member_prizes_after {} but {won_after}", d.member_prizes_after));
        }
        if let Some(rest) = after {
            s.stock_left[index] = Some(rest);
            if rest == 0 {
                s.table_version += 1;
            }
        }
        s.members.insert(d.member_id, (used + 1, won_after));
        for detail in found {
            self.differ(at, format!("shake of member {} chance {}: {detail}", d.member_id, d.nonce));
        }
    }

    fn period_draw(&mut self, sequence: i64, event: &CampaignEvent) {
        let at = Some(sequence);
        let CampaignEvent::CampaignPeriodDrawn { period_no, seed, beacon_value, entrants_hash, winners, .. } = event
        else {
            return;
        };
        // Winners per draw and the prize of each rank: a periodic lottery's
        // tiers, or a snatch's one winner of its prize after N shares sold.
        let (count, prizes): (u32, Box<dyn Fn(u32) -> Option<Prize>>) =
            match self.terms.as_ref().map(|t| t.kind.clone()) {
                Some(CampaignKind::PeriodicLottery(terms)) => {
                    (terms.winners(), Box::new(move |rank| terms.prize_of_rank(rank).cloned()))
                }
                Some(CampaignKind::Snatch(terms)) => {
                    let sold: u64 =
                        self.periods.get(period_no).map_or(0, |p| p.tickets.values().map(|t| u64::from(*t)).sum());
                    if sold != u64::from(terms.shares_per_period) {
                        self.differ(
                            at,
                            format!("period {period_no}: drawn with {sold} of {} shares sold", terms.shares_per_period),
                        );
                    }
                    (1, Box::new(move |rank| (rank == 1).then(|| terms.prize.clone())))
                }
                Some(CampaignKind::ShakeLottery(_) | CampaignKind::Voting(_)) | None => {
                    self.differ(at, "a period draw in a campaign that is not a periodic lottery or a snatch");
                    return;
                }
            };
        let period = self.periods.remove(period_no).unwrap_or_default();
        if !period.commitment.is_some_and(|c| c.opens_to(seed)) {
            self.differ(at, format!("period {period_no}: the seed does not open the period's commitment"));
        }
        let entrants = period.tickets.iter().map(|(m, t)| Entrant { member_id: *m, tickets: *t }).collect();
        let list = match EntrantList::new(entrants) {
            Ok(list) => list,
            Err(e) => return self.differ(at, format!("period {period_no}: entrant list: {e}")),
        };
        if &list.hash() != entrants_hash {
            self.differ(at, format!("period {period_no}: the entries hash to another entrant list"));
        }
        match draw::draw_winners(seed, beacon_value.as_ref(), &list, count) {
            Ok(drawn) => {
                let recorded: Vec<MemberId> = winners.iter().map(|w| w.member_id).collect();
                if recorded != drawn {
                    self.differ(at, format!("period {period_no}: winners differ from the recomputed draw"));
                }
                for w in winners {
                    if prizes(w.rank).as_ref() != Some(&w.prize) {
                        self.differ(at, format!("period {period_no}: rank {} has another prize", w.rank));
                    }
                }
            }
            Err(e) => self.differ(at, format!("period {period_no}: {e}")),
        }
    }
}
