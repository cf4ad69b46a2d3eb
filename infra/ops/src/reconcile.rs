//! `wxcm audit reconcile`: folds every member stream of a tenant with the
//! domain aggregate (`Member::apply`, not the projector's code) and compares the
//! result with `rm_members` (balance, points, held, lifetime, card number,
//! level, version) and `rm_member_ledger` (number of lines, balance after the
//! last one, followed state and follow source) and the tenant's daily
//! `follows` / `unfollows` counters in `rm_daily_ops`; then coupons
//! ([`crate::reconcile_coupons`]), the mall ([`crate::reconcile_mall`]) and campaigns
//! ([`crate::reconcile_campaigns`]) and distribution ([`crate::reconcile_distribution`]: distributors,
//! commission accounts, commissions, withdrawals and their counters).
//! Read-only.
//!
//! A stream that cannot be folded (an event that does not decode, a gap, an
//! event the aggregate refuses) is a [`BrokenStream`] finding naming the
//! stream, the sequence and the broken rule; its figures are not compared.
//!
//! It compares with the store as it is now: on a running system a member whose
//! newest events are not projected yet shows up as a difference (check
//! `wxcm projections status` for lag first).

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::NaiveDate;
use comfy_table::{presets, Table};
use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool};
use wxcm_domain::member::{Attribution, Member, MemberEvent, RegistrationSource};
use wxcm_domain::{DomainEventMeta, EventSourced, TenantId};
use wxcm_projections::daily::merchant_day;
use wxcm_projections::rebuild::{fetch_page, open_cursor, StoredMemberEvent, PAGE_ROWS};

use wxcm_server::config::Settings;

use crate::reconcile_campaigns::{reconcile_campaigns, CampaignReconcile};
use crate::reconcile_coupons::{reconcile_coupons, CouponReconcile};
use crate::reconcile_distribution::{reconcile_distribution, DistributionReconcile};
use crate::reconcile_mall::{reconcile_mall, MallReconcile};

const POOL_CONNECTIONS_MAX: u32 = 2;
const ACQUIRE_TIMEOUT_MS: u64 = 10_000;
/// Differences printed in the text output (the JSON has them all).
pub const DIFFERENCES_PRINTED_MAX: usize = 200;

/// One figure that differs. `expected` comes from the events, `found` from the
/// read model; `-` stands for a missing row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    pub member_id: String,
    pub field: &'static str,
    pub expected: String,
    pub found: String,
}

/// A stream that cannot be folded, at its first failing event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrokenStream {
    /// `<aggregate type>/<id>`: `member/<id>`, `coupon/<id>`, `mall_order/<id>`, ….
    pub stream: String,
    pub sequence: i64,
    /// A domain rule (`member.balance_after`, …), or [`UNDECODABLE`] / [`NOT_CONTIGUOUS`].
    pub rule: &'static str,
    pub detail: String,
}

/// Rule of a [`BrokenStream`] whose event does not decode.
pub const UNDECODABLE: &str = "event.decodable";
/// Rule of a [`BrokenStream`] with a gap before the event.
pub const NOT_CONTIGUOUS: &str = "stream.contiguous";

#[derive(Debug, Clone, Serialize)]
pub struct ReconcileReport {
    pub tenant_id: String,
    pub shard: String,
    pub events: u64,
    /// Members with events / rows in `rm_members`.
    pub members_in_events: u64,
    pub members_in_read_model: u64,
    pub only_in_events: u64,
    pub only_in_read_model: u64,
    /// Streams whose figures could not be recomputed.
    pub broken_streams: Vec<BrokenStream>,
    pub differences: Vec<Difference>,
    /// Coupon templates and coupons: against each other and `rm_coupons`.
    pub coupons: CouponReconcile,
    /// Mall orders: against `rm_mall_orders` and the mall counters of `rm_daily_ops`.
    pub mall: MallReconcile,
    /// Campaigns: against `rm_campaigns`, `rm_vote_items` and the campaign counters of `rm_daily_ops`.
    pub campaigns: CampaignReconcile,
    /// Distributors, commission accounts, commissions and withdrawals: against their tables and the
    /// distribution counters of `rm_daily_ops`.
    pub distribution: DistributionReconcile,
}

impl ReconcileReport {
    pub fn is_clean(&self) -> bool {
        self.broken_streams.is_empty()
            && self.differences.is_empty()
            && self.coupons.is_clean()
            && self.mall.is_clean()
            && self.campaigns.is_clean()
            && self.distribution.is_clean()
            && self.only_in_events == 0
            && self.only_in_read_model == 0
    }
}

/// What the events say about one member.
#[derive(Debug, Default)]
struct Expected {
    member: Member,
    ledger_lines: i64,
    last_balance_after: Option<i64>,
    /// Source of the latest follow (the aggregate keeps only the registration's attribution).
    follow_source: Option<&'static str>,
    /// Set when the stream cannot be folded; the figures are then not compared.
    broken: Option<BrokenStream>,
}

/// Daily follow counters: (merchant day, metric, follow source) → count.
type FollowCounts = BTreeMap<(NaiveDate, String, String), i64>;

/// The follow source of an attribution, as the read models name it.
fn follow_source(attribution: Option<&Attribution>) -> &'static str {
    match attribution {
        Some(Attribution::SceneQr { .. }) => "scene_qr",
        Some(Attribution::Referral { .. }) => "referral",
        Some(Attribution::Direct) | None => "other",
    }
}

/// Counts a follow or unfollow of `event` and tracks the member's follow source.
fn count_follow(e: &mut Expected, stored: &StoredMemberEvent, event: &MemberEvent, counts: &mut FollowCounts) {
    let (metric, source) = match event {
        MemberEvent::MemberRegistered { source: RegistrationSource::Subscribe, attribution, .. } => {
            e.follow_source = Some(follow_source(attribution.as_ref()));
            ("follows", e.follow_source)
        }
        MemberEvent::MemberFollowed { attribution, .. } => {
            e.follow_source = Some(follow_source(Some(attribution)));
            ("follows", e.follow_source)
        }
        MemberEvent::MemberUnfollowed { .. } => ("unfollows", e.follow_source),
        _ => return,
    };
    let key = (merchant_day(stored.recorded_at), metric.to_owned(), source.unwrap_or("-").to_owned());
    *counts.entry(key).or_default() += 1;
}

/// A row of `rm_members`, the compared columns.
#[derive(Debug, sqlx::FromRow)]
struct MemberRow {
    member_id: String,
    card_no: String,
    card_level: String,
    balance_fen: i64,
    points: i64,
    held_points: i64,
    lifetime_points: i64,
    version: i64,
    followed: bool,
    follow_source: Option<String>,
}

/// What the read model holds for one member.
#[derive(Debug, Default)]
struct Found {
    row: Option<MemberRow>,
    ledger_lines: i64,
    last_balance_after: Option<i64>,
}

fn shard_pool(settings: &Settings, tenant: &TenantId) -> Result<(String, PgPool)> {
    let name = settings.shard_of(tenant.as_str()).to_owned();
    let shard =
        settings.shards.get(&name).with_context(|| format!("tenant {tenant} maps to shard {name}, not configured"))?;
    let options = PgConnectOptions::from_str(&shard.url)
        .with_context(|| format!("shard {name}: invalid url"))?
        .application_name("wxcm-reconcile")
        .options([("default_transaction_read_only", "on")]);
    let pool = PgPoolOptions::new()
        .max_connections(POOL_CONNECTIONS_MAX)
        .acquire_timeout(Duration::from_millis(ACQUIRE_TIMEOUT_MS))
        .connect_lazy_with(options);
    Ok((name, pool))
}

/// Applies one event with the domain aggregate; returns whether it is a
/// ledger line (moves points or cash).
fn apply(member: &mut Member, stored: &StoredMemberEvent) -> Result<bool, BrokenStream> {
    let broken = |rule: &'static str, detail: String| BrokenStream {
        stream: format!("{}/{}", Member::TYPE, stored.aggregate_id),
        sequence: stored.sequence,
        rule,
        detail,
    };
    let event = stored.decode().map_err(|e| broken(UNDECODABLE, e))?;
    let moves = {
        let line = event.ledger_line();
        line.points_after.is_some() || line.balance_after_fen.is_some()
    };
    if member.version != u64::try_from(stored.sequence - 1).unwrap_or(u64::MAX) {
        return Err(broken(NOT_CONTIGUOUS, format!("seq {} follows version {}", stored.sequence, member.version)));
    }
    member.apply(&event).map_err(|v| broken(v.rule, format!("{}: {}", event.event_type(), v.detail)))?;
    Ok(moves)
}

/// What the events say: events read, each member, and the daily follow counters.
type Folded = (u64, BTreeMap<String, Expected>, FollowCounts);

async fn fold_tenant(snapshot: &mut PgConnection, tenant: &TenantId) -> Result<Folded> {
    open_cursor(&mut *snapshot, Some(tenant.as_str())).await.context("reading member events")?;
    let mut expected: BTreeMap<String, Expected> = BTreeMap::new();
    let mut follows = FollowCounts::new();
    let mut events = 0u64;
    loop {
        let page = fetch_page(&mut *snapshot, PAGE_ROWS).await.context("reading member events")?;
        if page.is_empty() {
            break;
        }
        for stored in &page {
            events += 1;
            let entry = expected.entry(stored.aggregate_id.clone()).or_default();
            if entry.broken.is_some() {
                continue;
            }
            if let Ok(event) = stored.decode() {
                count_follow(entry, stored, &event, &mut follows);
            }
            match apply(&mut entry.member, stored) {
                Ok(true) => {
                    entry.ledger_lines += 1;
                    entry.last_balance_after = Some(entry.member.balance.get());
                }
                Ok(false) => {}
                Err(e) => entry.broken = Some(e),
            }
        }
    }
    Ok((events, expected, follows))
}

async fn read_model(snapshot: &mut PgConnection, tenant: &TenantId) -> Result<BTreeMap<String, Found>> {
    let mut found: BTreeMap<String, Found> = BTreeMap::new();
    let rows: Vec<MemberRow> = sqlx::query_as(
        "SELECT member_id, card_no, card_level, balance_fen, points, held_points, lifetime_points, version,
                followed, follow_source
           FROM rm_members WHERE tenant_id = $1",
    )
    .bind(tenant.as_str())
    .fetch_all(&mut *snapshot)
    .await
    .context("reading rm_members")?;
    for row in rows {
        let id = row.member_id.clone();
        found.entry(id).or_default().row = Some(row);
    }
    let ledger: Vec<(String, i64, Option<i64>)> = sqlx::query_as(
        "SELECT member_id, count(*), (array_agg(balance_after_fen ORDER BY sequence DESC))[1]
           FROM rm_member_ledger WHERE tenant_id = $1 GROUP BY member_id",
    )
    .bind(tenant.as_str())
    .fetch_all(&mut *snapshot)
    .await
    .context("reading rm_member_ledger")?;
    for (id, lines, last) in ledger {
        let entry = found.entry(id).or_default();
        entry.ledger_lines = lines;
        entry.last_balance_after = last;
    }
    Ok(found)
}

async fn follow_counters(snapshot: &mut PgConnection, tenant: &TenantId) -> Result<FollowCounts> {
    let rows: Vec<(NaiveDate, String, String, i64)> = sqlx::query_as(
        "SELECT day, metric, dimension, value FROM rm_daily_ops
          WHERE tenant_id = $1 AND metric IN ('follows', 'unfollows') AND value <> 0",
    )
    .bind(tenant.as_str())
    .fetch_all(&mut *snapshot)
    .await
    .context("reading rm_daily_ops")?;
    Ok(rows.into_iter().map(|(day, metric, dimension, value)| ((day, metric, dimension), value)).collect())
}

/// Differences between the expected and the found daily follow counters, under
/// the member id `daily:<day>` and the field `<metric>:<source>`.
fn compare_follow_counts(expected: &FollowCounts, found: &FollowCounts, out: &mut Vec<Difference>) {
    let keys: std::collections::BTreeSet<_> = expected.keys().chain(found.keys()).collect();
    for key in keys {
        let (e, f) = (expected.get(key).copied().unwrap_or(0), found.get(key).copied().unwrap_or(0));
        if e != f {
            let (day, metric, source) = key;
            let field = match (metric.as_str(), source.as_str()) {
                ("follows", "scene_qr") => "follows:scene_qr",
                ("follows", "referral") => "follows:referral",
                ("follows", "other") => "follows:other",
                ("unfollows", "scene_qr") => "unfollows:scene_qr",
                ("unfollows", "referral") => "unfollows:referral",
                ("unfollows", "other") => "unfollows:other",
                _ => "follow_counter",
            };
            out.push(Difference {
                member_id: format!("daily:{day}"),
                field,
                expected: e.to_string(),
                found: f.to_string(),
            });
        }
    }
}

fn opt(value: Option<i64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn compare(member_id: &str, e: &Expected, f: &Found, out: &mut Vec<Difference>) {
    let mut diff = |field: &'static str, expected: String, found: String| {
        if expected != found {
            out.push(Difference { member_id: member_id.to_owned(), field, expected, found });
        }
    };
    if e.broken.is_some() {
        return;
    }
    let registration = e.member.registration.as_ref();
    let row = f.row.as_ref();
    diff(
        "card_no",
        registration.map_or("-".into(), |r| r.card_no.to_string()),
        row.map_or("-".into(), |r| r.card_no.clone()),
    );
    diff(
        "card_level",
        registration.map_or("-".into(), |r| r.card_level.as_str().to_owned()),
        row.map_or("-".into(), |r| r.card_level.clone()),
    );
    diff("balance_fen", e.member.balance.get().to_string(), opt(row.map(|r| r.balance_fen)));
    diff("points", e.member.points.get().to_string(), opt(row.map(|r| r.points)));
    diff("held_points", e.member.held.to_string(), opt(row.map(|r| r.held_points)));
    diff("lifetime_points", e.member.lifetime_points.to_string(), opt(row.map(|r| r.lifetime_points)));
    diff("version", e.member.version.to_string(), opt(row.map(|r| r.version)));
    diff("followed", e.member.followed.to_string(), row.map_or("-".into(), |r| r.followed.to_string()));
    diff(
        "follow_source",
        e.follow_source.unwrap_or("-").to_owned(),
        row.map_or("-".into(), |r| r.follow_source.clone().unwrap_or_else(|| "-".into())),
    );
    diff("ledger_lines", e.ledger_lines.to_string(), f.ledger_lines.to_string());
    diff("ledger_last_balance_after_fen", opt(e.last_balance_after), opt(f.last_balance_after));
}

/// Compares the tenant's member read models with its events.
pub async fn reconcile(settings: &Settings, tenant: &TenantId) -> Result<ReconcileReport> {
    let (shard, pool) = shard_pool(settings, tenant)?;
    // Events and read model from one snapshot.
    let mut snapshot = pool.begin().await.context("shard connection")?;
    let (events, expected, follows_expected) = fold_tenant(&mut snapshot, tenant).await?;
    let found = read_model(&mut snapshot, tenant).await?;
    let follows_found = follow_counters(&mut snapshot, tenant).await?;
    let coupons = reconcile_coupons(&mut snapshot, tenant).await?;
    let mall = reconcile_mall(&mut snapshot, tenant).await?;
    let campaigns = reconcile_campaigns(&mut snapshot, tenant).await?;
    let distribution = reconcile_distribution(&mut snapshot, tenant).await?;
    snapshot.rollback().await.context("closing the snapshot")?;
    pool.close().await;
    let mut report = ReconcileReport {
        tenant_id: tenant.to_string(),
        shard,
        events,
        members_in_events: expected.len() as u64,
        members_in_read_model: found.values().filter(|f| f.row.is_some()).count() as u64,
        only_in_events: 0,
        only_in_read_model: 0,
        broken_streams: expected.values().filter_map(|e| e.broken.clone()).collect(),
        differences: Vec::new(),
        coupons,
        mall,
        campaigns,
        distribution,
    };
    let empty = Found::default();
    for (id, e) in &expected {
        let f = found.get(id).unwrap_or(&empty);
        if f.row.is_none() {
            report.only_in_events += 1;
        }
        compare(id, e, f, &mut report.differences);
    }
    for (id, f) in &found {
        if expected.contains_key(id) {
            continue;
        }
        report.only_in_read_model += 1;
        let present = if f.row.is_some() { "row" } else { "ledger lines only" };
        report.differences.push(Difference {
            member_id: id.clone(),
            field: "presence",
            expected: "-".into(),
            found: present.into(),
        });
    }
    compare_follow_counts(&follows_expected, &follows_found, &mut report.differences);
    Ok(report)
}

/// A table of (stream, field, expected, found) rows, at most [`DIFFERENCES_PRINTED_MAX`].
fn print_stream_differences<'a>(what: &str, rows: impl ExactSizeIterator<Item = [&'a str; 4]>) {
    let total = rows.len();
    if total == 0 {
        return;
    }
    let mut table = Table::new();
    table.load_preset(presets::UTF8_FULL_CONDENSED).set_header(vec!["STREAM", "FIELD", "EXPECTED", "FOUND"]);
    for row in rows.take(DIFFERENCES_PRINTED_MAX) {
        table.add_row(row.to_vec());
    }
    println!("{table}");
    if total > DIFFERENCES_PRINTED_MAX {
        println!("… and {} more (see --json)", total - DIFFERENCES_PRINTED_MAX);
    }
    println!("{total} {what} differences");
}

fn print_coupons(coupons: &CouponReconcile) {
    println!("coupons: {} templates, {} coupons", coupons.templates, coupons.coupons);
    print_broken_streams(&coupons.broken_streams);
    let rows = coupons.differences.iter().map(|d| [d.stream.as_str(), d.field, &d.expected, &d.found]);
    print_stream_differences("coupon", rows);
}

fn print_mall(mall: &MallReconcile) {
    println!("mall: {} orders, {} events", mall.orders, mall.events);
    print_broken_streams(&mall.broken_streams);
    let rows = mall.differences.iter().map(|d| [d.stream.as_str(), d.field, &d.expected, &d.found]);
    print_stream_differences("mall", rows);
}

fn print_campaigns(campaigns: &CampaignReconcile) {
    println!(
        "campaigns: {} campaigns, {} voting items, {} events",
        campaigns.campaigns, campaigns.vote_items, campaigns.events
    );
    print_broken_streams(&campaigns.broken_streams);
    let rows = campaigns.differences.iter().map(|d| [d.stream.as_str(), d.field, &d.expected, &d.found]);
    print_stream_differences("campaign", rows);
}

fn print_distribution(distribution: &DistributionReconcile) {
    println!(
        "distribution: {} distributors, {} commission accounts, {} commissions, {} withdrawals, {} events",
        distribution.distributors,
        distribution.accounts,
        distribution.commissions,
        distribution.withdrawals,
        distribution.events
    );
    print_broken_streams(&distribution.broken_streams);
    let rows = distribution.differences.iter().map(|d| [d.stream.as_str(), d.field, &d.expected, &d.found]);
    print_stream_differences("distribution", rows);
}

fn print_broken_streams(broken: &[BrokenStream]) {
    if broken.is_empty() {
        return;
    }
    let mut table = Table::new();
    table.load_preset(presets::UTF8_FULL_CONDENSED).set_header(vec!["STREAM", "SEQ", "RULE", "DETAIL"]);
    for b in broken.iter().take(DIFFERENCES_PRINTED_MAX) {
        table.add_row(vec![b.stream.clone(), b.sequence.to_string(), b.rule.to_owned(), b.detail.clone()]);
    }
    println!("{table}");
    println!("streams that cannot be folded: {} (their figures are not compared)", broken.len());
}

/// `wxcm audit reconcile`: prints the report; true when it is clean.
pub async fn audit_reconcile(settings: &Settings, tenant: &TenantId, json: bool) -> Result<bool> {
    let report = reconcile(settings, tenant).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(report.is_clean());
    }
    println!(
        "tenant {} on shard {}: {} events, {} members in events, {} in rm_members",
        report.tenant_id, report.shard, report.events, report.members_in_events, report.members_in_read_model
    );
    println!("only in events: {}, only in the read model: {}", report.only_in_events, report.only_in_read_model);
    print_broken_streams(&report.broken_streams);
    print_coupons(&report.coupons);
    print_mall(&report.mall);
    print_campaigns(&report.campaigns);
    print_distribution(&report.distribution);
    if report.differences.is_empty() {
        println!("no member differences");
        return Ok(report.is_clean());
    }
    let mut table = Table::new();
    table.load_preset(presets::UTF8_FULL_CONDENSED).set_header(vec!["MEMBER", "FIELD", "EXPECTED", "FOUND"]);
    for d in report.differences.iter().take(DIFFERENCES_PRINTED_MAX) {
        table.add_row(vec![d.member_id.clone(), d.field.to_owned(), d.expected.clone(), d.found.clone()]);
    }
    println!("{table}");
    if report.differences.len() > DIFFERENCES_PRINTED_MAX {
        println!("… and {} more (see --json)", report.differences.len() - DIFFERENCES_PRINTED_MAX);
    }
    println!("{} differences", report.differences.len());
    Ok(false)
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use uuid::Uuid;
    use wxcm_domain::member::{rules, CardLevel, Provenance};
    use wxcm_domain::{Actor, AmountFen, BalanceFen, CardNumber, DomainEventMeta, IdempotencyKey, MemberId, Reference};

    use super::*;

    fn member_id() -> MemberId {
        MemberId::from_uuid(Uuid::from_u128(42))
    }

    fn stored(sequence: i64, event: &MemberEvent) -> StoredMemberEvent {
        StoredMemberEvent {
            aggregate_id: member_id().to_string(),
            tenant_id: "acme".into(),
            sequence,
            event_id: Uuid::from_u128(sequence as u128),
            event_type: event.event_type().into(),
            event_version: event.event_version().into(),
            recorded_at: Utc.with_ymd_and_hms(2026, 3, 1, 8, 0, 0).unwrap(),
            payload: serde_json::to_string(event).unwrap(),
        }
    }

    fn cash(charge: bool, amount: i64, after: i64) -> MemberEvent {
        let provenance = Provenance {
            actor: Actor::Staff { username: "clerk".into() },
            reason: Reference::parse("counter").unwrap(),
            reference: None,
            idempotency_key: IdempotencyKey::parse("key-00000001").unwrap(),
        };
        let (amount_fen, balance_after_fen) = (AmountFen::new(amount).unwrap(), BalanceFen::new(after).unwrap());
        if charge {
            MemberEvent::CashCharged { amount_fen, provenance, balance_after_fen }
        } else {
            MemberEvent::CashDeposited { amount_fen, provenance, balance_after_fen }
        }
    }

    fn registered() -> MemberEvent {
        MemberEvent::MemberRegistered {
            member_id: member_id(),
            tenant_id: TenantId::parse("acme").unwrap(),
            card_no: CardNumber::from_serial(1).unwrap(),
            openid: None,
            source: RegistrationSource::Staff,
            card_level: CardLevel::standard(),
            registered_at: Utc.with_ymd_and_hms(2026, 3, 1, 8, 0, 0).unwrap(),
            actor: Actor::Staff { username: "clerk".into() },
            idempotency_key: IdempotencyKey::parse("key-00000000").unwrap(),
            attribution: None,
        }
    }

    #[test]
    fn an_event_the_aggregate_refuses_breaks_the_stream_at_its_sequence_with_the_rule() {
        let mut member = Member::default();
        assert_eq!(apply(&mut member, &stored(1, &registered())), Ok(false));
        assert_eq!(apply(&mut member, &stored(2, &cash(false, 100, 100))), Ok(true));
        // A charge of 500 from a balance of 100.
        let broken = apply(&mut member, &stored(3, &cash(true, 500, 0))).unwrap_err();
        assert_eq!(
            (broken.stream, broken.sequence, broken.rule),
            (format!("member/{}", member_id()), 3, rules::BALANCE_COVERS_DEBIT)
        );
        assert!(broken.detail.starts_with("CashCharged: "), "{}", broken.detail);
    }

    #[test]
    fn a_gap_or_an_undecodable_payload_breaks_the_stream() {
        let mut member = Member::default();
        assert_eq!(apply(&mut member, &stored(2, &registered())).unwrap_err().rule, NOT_CONTIGUOUS);
        let mut garbled = stored(1, &registered());
        garbled.payload = "{}".into();
        assert_eq!(apply(&mut member, &garbled).unwrap_err().rule, UNDECODABLE);
    }
}
