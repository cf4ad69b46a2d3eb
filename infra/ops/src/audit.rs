//! `wxcm audit`: replays and verifies the event log of one tenant, read-only.
//!
//! - `audit member` reads one member stream, checks its hash chain
//!   ([`wxcm_store::hashchain::verify_stream`]), replays it into the domain's
//!   [`Member`] and recomputes every stated after-balance from the deltas before
//!   it, then prints the ledger and the balances.
//! - `audit verify` does the same for every stream of a tenant and prints a
//!   tenant digest that auditors can compare between runs (and recompute with
//!   `psql`, see [`TENANT_DIGEST_SQL`]).
//!
//! Every stream is also replayed with its domain aggregate (members, payment
//! orders, tenants): an event the aggregate refuses is a finding that names
//! the broken rule (`member/<id> seq 7: ... member.balance_after ...`), and
//! replay stops there.
//!
//! Every violation names its stream and sequence (`member/<id> seq 7: ...`).
//! Nothing here writes: the connection runs with `default_transaction_read_only`
//! and needs no secret key, only the shard's URL.

use std::fmt;
use std::io::IsTerminal;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::{DateTime, SecondsFormat, Utc};
use comfy_table::{presets, Cell as TableCell, CellAlignment, Table};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use wxcm_domain::member::{rules, LedgerLine, Member, MemberEvent};
use wxcm_domain::payment::PaymentOrder;
use wxcm_domain::tenant::Tenant;
use wxcm_domain::{DomainEventMeta, EventSourced, InvariantViolation, MemberId, TenantId};

use wxcm_server::config::Settings;
use wxcm_store::hashchain::{self, ChainViolation, StoredEvent};

/// The audit reads one stream at a time: one connection, plus one spare.
const AUDIT_POOL_CONNECTIONS_MAX: u32 = 2;
const ACQUIRE_TIMEOUT_MS: u64 = 10_000;
/// Characters of a hash shown in text output (the JSON has it whole).
const HASH_PREFIX_CHARS: usize = 16;
const PROGRESS_TICK_MS: u64 = 200;

/// Every stream with at least one row of the tenant (`$1`). Grouping instead of
/// listing the rows with sequence 1 also finds streams whose first row was deleted.
pub const TENANT_STREAMS_SQL: &str = "\
SELECT aggregate_type, aggregate_id, count(*) AS events \
  FROM events WHERE tenant_id = $1 GROUP BY 1, 2 ORDER BY 1, 2";

/// The tenant digest in SQL, for auditors who do not want to trust this code:
/// SHA-256 over one line per stream, `type TAB id TAB last_sequence TAB head_hash_hex LF`,
/// streams ordered bytewise by type then id. `$1` is the tenant.
pub const TENANT_DIGEST_SQL: &str = r#"
SELECT encode(sha256(convert_to(coalesce(string_agg(line, '' ORDER BY t COLLATE "C", i COLLATE "C"), ''), 'UTF8')), 'hex')
  FROM (SELECT DISTINCT ON (aggregate_type, aggregate_id)
               aggregate_type AS t, aggregate_id AS i,
               aggregate_type || E'\t' || aggregate_id || E'\t' || sequence || E'\t' || encode(hash, 'hex') || E'\n' AS line
          FROM events
         WHERE (aggregate_type, aggregate_id) IN (SELECT aggregate_type, aggregate_id FROM events WHERE tenant_id = $1)
         ORDER BY aggregate_type, aggregate_id, sequence DESC) AS heads"#;

// ---------------------------------------------------------------------------------
// report types
// ---------------------------------------------------------------------------------

/// One finding, named by stream and (when it concerns one row) sequence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// `aggregate_type/aggregate_id`.
    pub stream: String,
    pub sequence: Option<i64>,
    /// Stable snake_case name: a [`hashchain::ViolationKind::code`] or one of the replay codes.
    pub code: &'static str,
    /// The domain rule the event breaks (e.g. `member.balance_after`) when the
    /// aggregate refuses it; replay stops at that event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<&'static str>,
    pub message: String,
}

impl Violation {
    fn at(event: &StoredEvent, code: &'static str, message: String) -> Self {
        Violation { stream: stream_name(event), sequence: Some(event.sequence), code, rule: None, message }
    }

    /// An event the aggregate refuses.
    fn refused(event: &StoredEvent, code: &'static str, broken: &InvariantViolation) -> Self {
        let message = format!("replay failed at seq {}: {broken}; later events not replayed", event.sequence);
        Violation { rule: Some(broken.rule), ..Violation::at(event, code, message) }
    }
}

impl From<ChainViolation> for Violation {
    fn from(v: ChainViolation) -> Self {
        Violation {
            stream: format!("{}/{}", v.aggregate_type, v.aggregate_id),
            sequence: Some(v.sequence),
            code: v.kind.code(),
            rule: None,
            message: v.kind.to_string(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.sequence {
            Some(sequence) => write!(f, "{} seq {sequence}: {}", self.stream, self.message),
            None => write!(f, "{}: {}", self.stream, self.message),
        }
    }
}

fn stream_name(event: &StoredEvent) -> String {
    format!("{}/{}", event.aggregate_type, event.aggregate_id)
}

/// One ledger line of a member stream as stored (deltas derived from the event kind).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedgerEntry {
    pub sequence: i64,
    pub recorded_at: DateTime<Utc>,
    pub event_type: String,
    /// False when the payload could not be decoded; the figures are then zero.
    pub decoded: bool,
    pub points_delta: i64,
    pub held_delta: i64,
    pub cash_delta_fen: i64,
    pub cash_delta_yuan: String,
    pub points_after: Option<i64>,
    pub balance_after_fen: Option<i64>,
    pub actor: String,
    pub reason: String,
    pub reference: Option<String>,
}

impl LedgerEntry {
    fn new(event: &StoredEvent, line: Option<&LedgerLine>) -> Self {
        let cash_delta_fen = line.map_or(0, |l| l.cash_delta_fen);
        LedgerEntry {
            sequence: event.sequence,
            recorded_at: event.recorded_at,
            event_type: event.event_type.clone(),
            decoded: line.is_some(),
            points_delta: line.map_or(0, |l| l.points_delta),
            held_delta: line.map_or(0, |l| l.held_delta),
            cash_delta_fen,
            cash_delta_yuan: format_yuan_signed(cash_delta_fen),
            points_after: line.and_then(|l| l.points_after),
            balance_after_fen: line.and_then(|l| l.balance_after_fen),
            actor: line.map(|l| l.actor.clone()).unwrap_or_default(),
            reason: line.map(|l| l.reason.clone()).unwrap_or_default(),
            reference: line.and_then(|l| l.reference.clone()),
        }
    }
}

/// The member's state after replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Balances {
    /// Sequence of the last event folded into the state.
    pub replayed_through_sequence: u64,
    /// False when replay stopped early: the figures are those before the failing event.
    pub complete: bool,
    pub balance_fen: i64,
    pub balance_yuan: String,
    pub points: i64,
    pub held_points: i64,
    pub lifetime_points: i64,
    pub card_level: Option<String>,
    pub card_no: Option<String>,
}

impl Balances {
    fn of(member: &Member, complete: bool) -> Self {
        let registration = member.registration.as_ref();
        Balances {
            replayed_through_sequence: member.version,
            complete,
            balance_fen: member.balance.get(),
            balance_yuan: format_yuan(member.balance.get()),
            points: member.points.get(),
            held_points: member.held.get(),
            lifetime_points: member.lifetime_points.get(),
            card_level: registration.map(|r| r.card_level.as_str().to_owned()),
            card_no: registration.map(|r| r.card_no.to_string()),
        }
    }
}

/// What replaying one member stream found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberReplay {
    pub entries: Vec<LedgerEntry>,
    pub balances: Balances,
    pub violations: Vec<Violation>,
}

// ---------------------------------------------------------------------------------
// pure helpers
// ---------------------------------------------------------------------------------

/// Fen as yuan with two decimals, integer arithmetic only: `-150` → `"-1.50"`.
pub fn format_yuan(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    let abs = fen.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

/// Like [`format_yuan`] with an explicit `+` on credits, for deltas.
pub fn format_yuan_signed(fen: i64) -> String {
    if fen > 0 {
        format!("+{}", format_yuan(fen))
    } else {
        format_yuan(fen)
    }
}

fn format_signed(value: i64) -> String {
    if value > 0 {
        format!("+{value}")
    } else {
        value.to_string()
    }
}

/// A stated after-balance that the deltas before it do not add up to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalanceMismatch {
    /// The event field: `points_after` or `balance_after_fen`.
    pub field: &'static str,
    pub stated: i64,
    pub recomputed: i64,
}

impl fmt::Display for BalanceMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is {} but the deltas before it add up to {}", self.field, self.stated, self.recomputed)
    }
}

/// Running totals recomputed from ledger deltas alone, independent of the
/// after-balances the events state (which is what `Member::apply` trusts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunningTotals {
    pub points: i64,
    pub held: i64,
    pub cash_fen: i64,
}

impl RunningTotals {
    /// Adds one line's deltas and compares the result with its stated balances.
    /// After a mismatch the totals continue from the stated value, so one altered
    /// event is reported once rather than on every later line.
    pub fn check(&mut self, line: &LedgerLine) -> Vec<BalanceMismatch> {
        let mut mismatches = Vec::new();
        self.points = follow(self.points, line.points_delta, line.points_after, "points_after", &mut mismatches);
        self.cash_fen =
            follow(self.cash_fen, line.cash_delta_fen, line.balance_after_fen, "balance_after_fen", &mut mismatches);
        self.held = self.held.saturating_add(line.held_delta);
        mismatches
    }
}

fn follow(
    total: i64,
    delta: i64,
    stated: Option<i64>,
    field: &'static str,
    mismatches: &mut Vec<BalanceMismatch>,
) -> i64 {
    let recomputed = total.saturating_add(delta);
    match stated {
        Some(stated) if stated != recomputed => {
            mismatches.push(BalanceMismatch { field, stated, recomputed });
            stated
        }
        _ => recomputed,
    }
}

/// The audit code of an event the aggregate refuses: a stated figure that the
/// state does not give keeps the code the running totals use for it.
fn refusal_code(rule: &str) -> &'static str {
    match rule {
        rules::POINTS_AFTER => "points_after_mismatch",
        rules::BALANCE_AFTER => "balance_after_mismatch",
        rules::HELD_AFTER => "held_after_mismatch",
        _ => "replay_failed",
    }
}

/// Records that the aggregate refuses `row`'s event. When the running totals
/// already reported the same figure at this row, that finding gets the rule
/// (one altered figure, one finding); otherwise the refusal is a finding of its own.
fn report_refusal(row: &StoredEvent, broken: &InvariantViolation, violations: &mut Vec<Violation>) {
    let code = refusal_code(broken.rule);
    let reported = violations.iter_mut().find(|v| v.sequence == Some(row.sequence) && v.code == code);
    match reported {
        Some(finding) => {
            finding.rule = Some(broken.rule);
            finding.message =
                format!("{}; the aggregate refuses the event ({broken}); later events not replayed", finding.message);
        }
        None => violations.push(Violation::refused(row, code, broken)),
    }
}

/// Checks what a decoded event says about its own row: its type and, for the
/// registration, the stream and tenant it names.
fn check_event_matches_row(row: &StoredEvent, event: &MemberEvent, violations: &mut Vec<Violation>) {
    if event.event_type() != row.event_type {
        let message = format!("event_type column says {} but the payload is {}", row.event_type, event.event_type());
        violations.push(Violation::at(row, "event_type_mismatch", message));
    }
    if let MemberEvent::MemberRegistered { member_id, tenant_id, .. } = event {
        if member_id.to_string() != row.aggregate_id || tenant_id.as_str() != row.tenant_id {
            let message = format!(
                "registration names member {member_id} of tenant {tenant_id}, row is {} of tenant {}",
                row.aggregate_id, row.tenant_id
            );
            violations.push(Violation::at(row, "registration_mismatch", message));
        }
    }
}

/// Replays one member stream (rows ordered by sequence, as [`hashchain::load_stream`]
/// returns them): decodes each payload, recomputes the stated balances from the
/// deltas, and folds the events into a [`Member`]. Replay stops at the first event
/// that cannot be decoded or applied; the ledger still lists every row.
pub fn replay_member(rows: &[StoredEvent]) -> MemberReplay {
    let mut entries = Vec::with_capacity(rows.len());
    let mut violations = Vec::new();
    let mut totals = RunningTotals::default();
    let mut member = Member::default();
    let mut applied: Vec<MemberEvent> = Vec::new();
    let mut stopped = false;
    for row in rows {
        let event = match serde_json::from_str::<MemberEvent>(&row.payload_text) {
            Ok(event) => event,
            Err(e) => {
                entries.push(LedgerEntry::new(row, None));
                if !stopped {
                    let message = format!("undecodable payload ({e}); later events not replayed");
                    violations.push(Violation::at(row, "undecodable_payload", message));
                    stopped = true;
                }
                continue;
            }
        };
        let line = event.ledger_line();
        entries.push(LedgerEntry::new(row, Some(&line)));
        check_event_matches_row(row, &event, &mut violations);
        for mismatch in totals.check(&line) {
            violations.push(Violation::at(row, balance_code(mismatch.field), mismatch.to_string()));
        }
        if stopped {
            continue;
        }
        if let Err(broken) = member.apply(&event) {
            report_refusal(row, &broken, &mut violations);
            member = rebuild(&applied);
            stopped = true;
            continue;
        }
        let held = member.held.get();
        if held != totals.held {
            let message = format!("held_after is {held} but the deltas before it add up to {}", totals.held);
            violations.push(Violation::at(row, "held_after_mismatch", message));
            totals.held = held;
        }
        applied.push(event);
    }
    MemberReplay { entries, balances: Balances::of(&member, !stopped), violations }
}

fn balance_code(field: &str) -> &'static str {
    if field == "points_after" {
        "points_after_mismatch"
    } else {
        "balance_after_mismatch"
    }
}

/// The state before a refused event (a refused `apply` leaves the state
/// unusable): replaying again is cheaper than cloning the state before every
/// event, and it only happens once per broken stream.
fn rebuild(applied: &[MemberEvent]) -> Member {
    let mut member = Member::default();
    for event in applied {
        // Each of them was applied once already, and applying is deterministic.
        if member.apply(event).is_err() {
            break;
        }
    }
    member
}

/// Replays a stream of an aggregate without a ledger (payment orders, tenants):
/// each payload must decode, name its row's event type, and be accepted by the
/// aggregate. Replay stops at the first event that cannot be decoded or applied.
pub fn replay_stream<T: EventSourced>(rows: &[StoredEvent]) -> Vec<Violation> {
    let mut state = T::default();
    let mut violations = Vec::new();
    for row in rows {
        let event = match serde_json::from_str::<T::Event>(&row.payload_text) {
            Ok(event) => event,
            Err(e) => {
                let message = format!("undecodable payload ({e}); later events not replayed");
                violations.push(Violation::at(row, "undecodable_payload", message));
                break;
            }
        };
        if event.event_type() != row.event_type {
            let message =
                format!("event_type column says {} but the payload is {}", row.event_type, event.event_type());
            violations.push(Violation::at(row, "event_type_mismatch", message));
        }
        if let Err(broken) = state.apply(&event) {
            violations.push(Violation::refused(row, "replay_failed", &broken));
            break;
        }
    }
    violations
}

fn chain_violations(rows: &[StoredEvent]) -> Vec<Violation> {
    hashchain::verify_stream(rows).into_iter().map(Violation::from).collect()
}

/// Chain violations and replay findings of one stream of any type.
fn check_stream(rows: &[StoredEvent]) -> Vec<Violation> {
    let mut violations = chain_violations(rows);
    let aggregate_type = rows.first().map_or("", |first| first.aggregate_type.as_str());
    if aggregate_type == Member::TYPE {
        violations.extend(replay_member(rows).violations);
    } else if aggregate_type == PaymentOrder::TYPE {
        violations.extend(replay_stream::<PaymentOrder>(rows));
    } else if aggregate_type == Tenant::TYPE {
        violations.extend(replay_stream::<Tenant>(rows));
    }
    sort_violations(&mut violations);
    violations
}

/// By sequence (stable: chain findings first within a row), stream-level last.
fn sort_violations(violations: &mut [Violation]) {
    violations.sort_by_key(|v| v.sequence.unwrap_or(i64::MAX));
}

/// The head of a stream: its last sequence and that row's hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamHead {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub hash: String,
}

impl StreamHead {
    fn of(rows: &[StoredEvent]) -> Option<Self> {
        rows.last().map(|last| StreamHead {
            aggregate_type: last.aggregate_type.clone(),
            aggregate_id: last.aggregate_id.clone(),
            sequence: last.sequence,
            hash: hex::encode(&last.hash),
        })
    }
}

/// SHA-256 over `type TAB id TAB last_sequence TAB head_hash_hex LF` per stream,
/// streams ordered bytewise by (type, id): the same as [`TENANT_DIGEST_SQL`].
pub fn tenant_digest(heads: &[StreamHead]) -> String {
    let mut ordered: Vec<&StreamHead> = heads.iter().collect();
    ordered.sort_by(|a, b| {
        (a.aggregate_type.as_bytes(), a.aggregate_id.as_bytes())
            .cmp(&(b.aggregate_type.as_bytes(), b.aggregate_id.as_bytes()))
    });
    let mut hasher = Sha256::new();
    for head in ordered {
        let line = format!("{}\t{}\t{}\t{}\n", head.aggregate_type, head.aggregate_id, head.sequence, head.hash);
        hasher.update(line.as_bytes());
    }
    hex::encode(hasher.finalize())
}

// ---------------------------------------------------------------------------------
// the shard connection
// ---------------------------------------------------------------------------------

/// A small pool on the tenant's shard whose sessions refuse writes.
fn shard_pool(settings: &Settings, tenant: &TenantId) -> Result<PgPool> {
    let name = settings.shard_of(tenant.as_str());
    let shard = settings
        .shards
        .get(name)
        .with_context(|| format!("tenant {tenant} maps to shard {name}, which is not configured"))?;
    let options = PgConnectOptions::from_str(&shard.url)
        .with_context(|| format!("shard {name}: invalid url"))?
        .application_name("wxcm-audit")
        .options([("default_transaction_read_only", "on")]);
    Ok(PgPoolOptions::new()
        .max_connections(AUDIT_POOL_CONNECTIONS_MAX)
        .acquire_timeout(Duration::from_millis(ACQUIRE_TIMEOUT_MS))
        .connect_lazy_with(options))
}

async fn load(pool: &PgPool, aggregate_type: &str, aggregate_id: &str) -> Result<Vec<StoredEvent>> {
    hashchain::load_stream(pool, aggregate_type, aggregate_id)
        .await
        .with_context(|| format!("reading stream {aggregate_type}/{aggregate_id}"))
}

// ---------------------------------------------------------------------------------
// audit member
// ---------------------------------------------------------------------------------

/// `wxcm audit member` as one document (`--json` prints it as is).
#[derive(Debug, Clone, Serialize)]
pub struct MemberReport {
    pub ok: bool,
    pub found: bool,
    pub tenant_id: String,
    pub member_id: String,
    pub stream: String,
    pub events: usize,
    pub head: Option<StreamHead>,
    pub violations: Vec<Violation>,
    pub entries: Vec<LedgerEntry>,
    pub balances: Option<Balances>,
}

/// Audits the rows of one member stream for `tenant`. A stream with no row of the
/// tenant is "not found", whoever else it belongs to.
pub fn member_report(tenant: &TenantId, member: &MemberId, rows: &[StoredEvent]) -> MemberReport {
    let stream = format!("{}/{member}", Member::TYPE);
    let mut report = MemberReport {
        ok: false,
        found: false,
        tenant_id: tenant.to_string(),
        member_id: member.to_string(),
        stream: stream.clone(),
        events: 0,
        head: None,
        violations: Vec::new(),
        entries: Vec::new(),
        balances: None,
    };
    if !rows.iter().any(|row| row.tenant_id == tenant.as_str()) {
        let message = format!("member not found in tenant {tenant}");
        report.violations.push(Violation { stream, sequence: None, code: "not_found", rule: None, message });
        return report;
    }
    let replay = replay_member(rows);
    let mut violations = chain_violations(rows);
    violations.extend(replay.violations.iter().cloned());
    sort_violations(&mut violations);
    report.ok = violations.is_empty();
    report.found = true;
    report.events = rows.len();
    report.head = StreamHead::of(rows);
    report.violations = violations;
    report.entries = replay.entries;
    report.balances = Some(replay.balances);
    report
}

/// `wxcm audit member`: true when the chain is intact and the ledger replays and adds up.
pub async fn audit_member(settings: &Settings, tenant: &TenantId, member: &MemberId, json: bool) -> Result<bool> {
    let pool = shard_pool(settings, tenant)?;
    let rows = load(&pool, Member::TYPE, &member.to_string()).await?;
    pool.close().await;
    let report = member_report(tenant, member, &rows);
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_member_report(&report);
    }
    Ok(report.ok)
}

fn print_member_report(report: &MemberReport) {
    if !report.found {
        println!("member {} not found in tenant {}", report.member_id, report.tenant_id);
        println!("verdict: FAILED (member not found in tenant)");
        return;
    }
    let head = report.head.as_ref().map_or_else(String::new, |h| {
        format!(", head seq {} hash {}…", h.sequence, &h.hash[..HASH_PREFIX_CHARS.min(h.hash.len())])
    });
    println!(
        "member {} of tenant {} ({}: {} events{head})",
        report.member_id, report.tenant_id, report.stream, report.events
    );
    println!("{}", ledger_table(&report.entries));
    if let Some(balances) = &report.balances {
        println!("{}", balances_table(balances));
    }
    print_violations(&report.violations);
    if report.ok {
        println!("verdict: OK (hash chain intact, {} events replayed, every stated balance adds up)", report.events);
    } else {
        println!("verdict: FAILED ({} violations)", report.violations.len());
    }
}

fn new_table(header: Vec<&str>) -> Table {
    let mut table = Table::new();
    table.load_preset(presets::UTF8_FULL_CONDENSED).set_header(header);
    table
}

fn right(value: impl ToString) -> TableCell {
    TableCell::new(value.to_string()).set_alignment(CellAlignment::Right)
}

fn ledger_table(entries: &[LedgerEntry]) -> Table {
    let mut table = new_table(vec![
        "seq",
        "recorded at (UTC)",
        "event",
        "points Δ",
        "held Δ",
        "cash Δ fen",
        "cash Δ yuan",
        "points after",
        "cash after fen / yuan",
        "actor",
        "reason",
    ]);
    for e in entries {
        let cash_after = e.balance_after_fen.map_or_else(String::new, |fen| format!("{fen} / {}", format_yuan(fen)));
        let event_type = if e.decoded { e.event_type.clone() } else { format!("{} (undecodable)", e.event_type) };
        table.add_row(vec![
            right(e.sequence),
            TableCell::new(e.recorded_at.to_rfc3339_opts(SecondsFormat::Micros, true)),
            TableCell::new(event_type),
            right(format_signed(e.points_delta)),
            right(format_signed(e.held_delta)),
            right(format_signed(e.cash_delta_fen)),
            right(&e.cash_delta_yuan),
            right(e.points_after.map_or_else(String::new, |p| p.to_string())),
            right(cash_after),
            TableCell::new(&e.actor),
            TableCell::new(&e.reason),
        ]);
    }
    table
}

fn balances_table(b: &Balances) -> Table {
    let mut table = new_table(vec!["recomputed", "value"]);
    let replayed = if b.complete {
        format!("through seq {}", b.replayed_through_sequence)
    } else {
        format!("stopped after seq {} (incomplete)", b.replayed_through_sequence)
    };
    let rows: [(&str, String); 8] = [
        ("replay", replayed),
        ("cash balance", format!("{} fen ({} yuan)", b.balance_fen, b.balance_yuan)),
        ("points", b.points.to_string()),
        ("held points", b.held_points.to_string()),
        ("lifetime points", b.lifetime_points.to_string()),
        ("card level", b.card_level.clone().unwrap_or_else(|| "-".into())),
        ("card number", b.card_no.clone().unwrap_or_else(|| "-".into())),
        ("complete", b.complete.to_string()),
    ];
    for (name, value) in rows {
        table.add_row(vec![TableCell::new(name), TableCell::new(value)]);
    }
    table
}

fn print_violations(violations: &[Violation]) {
    if violations.is_empty() {
        return;
    }
    println!("violations:");
    for v in violations {
        println!("  {v}");
    }
}

// ---------------------------------------------------------------------------------
// audit verify
// ---------------------------------------------------------------------------------

/// `wxcm audit verify` as one document (`--json` prints it as is).
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub ok: bool,
    pub tenant_id: String,
    pub streams: usize,
    pub events: u64,
    pub violations: Vec<Violation>,
    pub elapsed_ms: u64,
    pub events_per_s: u64,
    /// See [`tenant_digest`].
    pub digest: String,
}

fn progress_bar(streams: u64, json: bool) -> ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(streams), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} streams, {msg} [{elapsed_precise}]") {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(PROGRESS_TICK_MS));
    bar
}

fn per_second(count: u64, elapsed: Duration) -> u64 {
    let ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX).max(1);
    count.saturating_mul(1000) / ms
}

/// `wxcm audit verify`: every stream of the tenant; true when nothing is wrong.
pub async fn audit_verify(settings: &Settings, tenant: &TenantId, json: bool) -> Result<bool> {
    let started = Instant::now();
    let pool = shard_pool(settings, tenant)?;
    let streams: Vec<(String, String, i64)> = sqlx::query_as(TENANT_STREAMS_SQL)
        .bind(tenant.as_str())
        .fetch_all(&pool)
        .await
        .with_context(|| format!("listing the streams of tenant {tenant}"))?;
    let bar = progress_bar(streams.len() as u64, json);
    let mut events: u64 = 0;
    let mut violations = Vec::new();
    let mut heads = Vec::with_capacity(streams.len());
    for (aggregate_type, aggregate_id, _) in &streams {
        let rows = load(&pool, aggregate_type, aggregate_id).await?;
        events += rows.len() as u64;
        violations.extend(check_stream(&rows));
        heads.extend(StreamHead::of(&rows));
        bar.inc(1);
        bar.set_message(format!("{events} events, {} events/s", per_second(events, started.elapsed())));
    }
    bar.finish_and_clear();
    pool.close().await;
    let elapsed = started.elapsed();
    let report = VerifyReport {
        ok: violations.is_empty(),
        tenant_id: tenant.to_string(),
        streams: streams.len(),
        events,
        violations,
        elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        events_per_s: per_second(events, elapsed),
        digest: tenant_digest(&heads),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_verify_report(&report);
    }
    Ok(report.ok)
}

fn print_verify_report(report: &VerifyReport) {
    let mut table = new_table(vec!["tenant", &report.tenant_id]);
    let rows: [(&str, String); 6] = [
        ("streams", report.streams.to_string()),
        ("events", report.events.to_string()),
        ("violations", report.violations.len().to_string()),
        ("elapsed", format!("{} ms", report.elapsed_ms)),
        ("events/s", report.events_per_s.to_string()),
        ("digest (sha256)", report.digest.clone()),
    ];
    for (name, value) in rows {
        table.add_row(vec![TableCell::new(name), TableCell::new(value)]);
    }
    println!("{table}");
    print_violations(&report.violations);
    if report.ok {
        println!(
            "verdict: OK ({} streams, {} events, every chain intact and every ledger adds up)",
            report.streams, report.events
        );
    } else {
        println!("verdict: FAILED ({} violations)", report.violations.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use uuid::Uuid;
    use wxcm_domain::member::{CardLevel, Provenance, RegistrationSource};
    use wxcm_domain::{Actor, AmountFen, BalanceFen, CardNumber, IdempotencyKey, Reference};

    fn tenant() -> TenantId {
        TenantId::parse("acme").unwrap()
    }

    fn member() -> MemberId {
        MemberId::from_uuid(Uuid::from_u128(42))
    }

    fn provenance() -> Provenance {
        Provenance {
            actor: Actor::Staff { username: "clerk".into() },
            reason: Reference::parse("counter").unwrap(),
            reference: None,
            idempotency_key: IdempotencyKey::parse("key-00000001").unwrap(),
        }
    }

    fn registered() -> MemberEvent {
        MemberEvent::MemberRegistered {
            member_id: member(),
            tenant_id: tenant(),
            card_no: CardNumber::from_serial(1).unwrap(),
            openid: None,
            source: RegistrationSource::Staff,
            card_level: CardLevel::standard(),
            registered_at: Utc.with_ymd_and_hms(2025, 3, 1, 8, 0, 0).unwrap(),
            actor: Actor::Staff { username: "clerk".into() },
            idempotency_key: IdempotencyKey::parse("key-00000000").unwrap(),
            attribution: None,
        }
    }

    fn deposited(amount: i64, after: i64) -> MemberEvent {
        MemberEvent::CashDeposited {
            amount_fen: AmountFen::new(amount).unwrap(),
            provenance: provenance(),
            balance_after_fen: BalanceFen::new(after).unwrap(),
        }
    }

    fn charged(amount: i64, after: i64) -> MemberEvent {
        MemberEvent::CashCharged {
            amount_fen: AmountFen::new(amount).unwrap(),
            provenance: provenance(),
            balance_after_fen: BalanceFen::new(after).unwrap(),
        }
    }

    /// Rows as the store would hold them, chained by the Rust implementation.
    fn rows(events: &[MemberEvent]) -> Vec<StoredEvent> {
        rows_of("member", &member().to_string(), events)
    }

    fn rows_of<E: DomainEventMeta + Serialize>(aggregate_type: &str, id: &str, events: &[E]) -> Vec<StoredEvent> {
        let mut rows: Vec<StoredEvent> = Vec::new();
        for (index, event) in events.iter().enumerate() {
            let sequence = index as i64 + 1;
            let mut row = StoredEvent {
                tenant_id: tenant().to_string(),
                aggregate_type: aggregate_type.into(),
                aggregate_id: id.into(),
                sequence,
                event_id: Uuid::from_u128(sequence as u128),
                recorded_at: Utc.with_ymd_and_hms(2025, 3, 1, 9, 0, 0).unwrap(),
                event_type: event.event_type().into(),
                event_version: "1".into(),
                payload_text: serde_json::to_string(event).unwrap(),
                metadata_text: r#"{"tenant_id": "acme"}"#.into(),
                prev_hash: rows.last().map_or(hashchain::GENESIS_HASH.to_vec(), |r| r.hash.clone()),
                hash: Vec::new(),
            };
            row.hash = hashchain::chain_hash(&row.prev_hash, &hashchain::canonical_bytes(&row)).to_vec();
            rows.push(row);
        }
        rows
    }

    fn codes(violations: &[Violation]) -> Vec<(Option<i64>, &'static str)> {
        violations.iter().map(|v| (v.sequence, v.code)).collect()
    }

    #[test]
    fn yuan_is_formatted_with_integer_arithmetic() {
        assert_eq!(format_yuan(0), "0.00");
        assert_eq!(format_yuan(1), "0.01");
        assert_eq!(format_yuan(99), "0.99");
        assert_eq!(format_yuan(100), "1.00");
        assert_eq!(format_yuan(123_456), "1234.56");
        assert_eq!(format_yuan(-5), "-0.05");
        assert_eq!(format_yuan(-150), "-1.50");
        assert_eq!(format_yuan(i64::MAX), "92233720368547758.07");
        assert_eq!(format_yuan(i64::MIN), "-92233720368547758.08");
        assert_eq!(format_yuan_signed(150), "+1.50");
        assert_eq!(format_yuan_signed(0), "0.00");
        assert_eq!(format_yuan_signed(-150), "-1.50");
    }

    #[test]
    fn running_totals_accept_consistent_lines() {
        let mut totals = RunningTotals::default();
        assert!(totals.check(&deposited(500, 500).ledger_line()).is_empty());
        assert!(totals.check(&charged(200, 300).ledger_line()).is_empty());
        assert_eq!(totals, RunningTotals { points: 0, held: 0, cash_fen: 300 });
    }

    #[test]
    fn running_totals_report_a_wrong_stated_balance_once() {
        let mut totals = RunningTotals::default();
        assert!(totals.check(&deposited(500, 500).ledger_line()).is_empty());
        let wrong = totals.check(&deposited(100, 9_999).ledger_line());
        assert_eq!(wrong, [BalanceMismatch { field: "balance_after_fen", stated: 9_999, recomputed: 600 }]);
        assert_eq!(wrong[0].to_string(), "balance_after_fen is 9999 but the deltas before it add up to 600");
        // The next line follows the stated value: one altered event, one report.
        assert!(totals.check(&deposited(1, 10_000).ledger_line()).is_empty());
    }

    #[test]
    fn intact_stream_replays_without_violations() {
        let rows = rows(&[registered(), deposited(500, 500), charged(150, 350)]);
        let report = member_report(&tenant(), &member(), &rows);
        assert!(report.ok, "{:?}", report.violations);
        let balances = report.balances.unwrap();
        assert_eq!((balances.balance_fen, balances.balance_yuan.as_str()), (350, "3.50"));
        assert_eq!((balances.replayed_through_sequence, balances.complete), (3, true));
        assert_eq!(balances.card_no.as_deref(), Some(CardNumber::from_serial(1).unwrap().as_str()));
        assert_eq!(report.entries[2].cash_delta_fen, -150);
        assert_eq!(report.entries[2].cash_delta_yuan, "-1.50");
        assert_eq!(report.head.unwrap().sequence, 3);
    }

    #[test]
    fn altered_amount_is_a_hash_and_balance_violation_at_its_sequence() {
        let mut rows = rows(&[registered(), deposited(500, 500), deposited(100, 600)]);
        rows[1].payload_text = serde_json::to_string(&deposited(90_000, 500)).unwrap();
        let report = member_report(&tenant(), &member(), &rows);
        assert!(!report.ok);
        assert_eq!(codes(&report.violations), [(Some(2), "hash_mismatch"), (Some(2), "balance_after_mismatch")]);
        assert!(report.violations[0].to_string().starts_with(&format!("member/{} seq 2: hash mismatch", member())));
        // The aggregate refuses the altered figure too: the same finding names the rule.
        assert_eq!(report.violations[1].rule, Some(rules::BALANCE_AFTER));
        assert!(report.violations[1].message.contains("later events not replayed"), "{}", report.violations[1]);
        assert!(!report.balances.unwrap().complete);
    }

    #[test]
    fn an_inconsistent_event_in_an_intact_chain_is_reported_with_its_rule() {
        // The chain is intact: only the domain sees that the charge exceeds the balance.
        let rows = rows(&[registered(), deposited(500, 500), charged(600, 0), deposited(1, 1)]);
        let report = member_report(&tenant(), &member(), &rows);
        assert_eq!(codes(&report.violations), [(Some(3), "balance_after_mismatch"), (Some(3), "replay_failed")]);
        let refused = &report.violations[1];
        assert_eq!(
            (refused.stream.clone(), refused.rule),
            (format!("member/{}", member()), Some(rules::BALANCE_COVERS_DEBIT))
        );
        assert!(
            refused.to_string().starts_with(&format!(
                "member/{} seq 3: replay failed at seq 3: invariant member.balance_covers_debit broken",
                member()
            )),
            "{refused}"
        );
        let json = serde_json::to_value(refused).unwrap();
        assert_eq!((json["sequence"].as_i64(), json["rule"].as_str()), (Some(3), Some("member.balance_covers_debit")));
        let balances = report.balances.unwrap();
        assert_eq!((balances.replayed_through_sequence, balances.complete, balances.balance_fen), (2, false, 500));
    }

    #[test]
    fn payment_and_tenant_streams_are_replayed_with_their_aggregates() {
        use wxcm_domain::tenant::{self, TenantEvent};
        let created = |name: &str| TenantEvent::TenantCreated {
            tenant_id: tenant(),
            name: name.into(),
            created_at: Utc.with_ymd_and_hms(2025, 3, 1, 8, 0, 0).unwrap(),
            actor: Actor::Admin { username: "root".into() },
        };
        assert_eq!(check_stream(&rows_of("tenant", "acme", &[created("Acme")])), []);
        let twice = check_stream(&rows_of("tenant", "acme", &[created("Acme"), created("Again")]));
        assert_eq!(codes(&twice), [(Some(2), "replay_failed")]);
        assert_eq!(twice[0].rule, Some(tenant::rules::CREATED_ONCE));
        assert_eq!(twice[0].stream, "tenant/acme");

        use wxcm_domain::payment::{rules as payment_rules, CloseReason, PaymentEvent};
        let closed = PaymentEvent::PaymentOrderClosed {
            reason: CloseReason::Expired,
            closed_at: Utc.with_ymd_and_hms(2025, 3, 1, 8, 0, 0).unwrap(),
        };
        let orphan = check_stream(&rows_of("payment_order", "rc0000000001", &[closed]));
        assert_eq!(codes(&orphan), [(Some(1), "replay_failed")]);
        assert_eq!(orphan[0].rule, Some(payment_rules::CREATED_FIRST));
    }

    #[test]
    fn broken_invariant_stops_replay_without_crashing() {
        // A take from a lot that never existed breaks `Member::apply`'s assertion.
        let spent = MemberEvent::PointsSpent {
            points: wxcm_domain::PointsAmount::new(5).unwrap(),
            purpose: wxcm_domain::member::SpendPurpose::Mall,
            taken: vec![wxcm_domain::member::LotTake { lot_no: 7, points: wxcm_domain::PointsAmount::new(5).unwrap() }],
            provenance: provenance(),
            points_after: wxcm_domain::PointsBalance::new(0).unwrap(),
        };
        let rows = rows(&[registered(), deposited(500, 500), spent, deposited(1, 501)]);
        let replay = replay_member(&rows);
        assert_eq!(
            codes(&replay.violations),
            [(Some(3), "points_after_mismatch"), (Some(3), "replay_failed")],
            "{:?}",
            replay.violations
        );
        assert!(replay.violations[1].message.starts_with("replay failed at seq 3"));
        assert_eq!(replay.violations[1].rule, Some(rules::LOT_KNOWN));
        assert!(replay.violations[1].message.contains("member.lot_known"), "{}", replay.violations[1].message);
        assert_eq!(replay.entries.len(), 4);
        assert_eq!((replay.balances.replayed_through_sequence, replay.balances.complete), (2, false));
        assert_eq!(replay.balances.balance_fen, 500);
    }

    #[test]
    fn undecodable_payload_and_wrong_event_type_are_reported() {
        let mut rows = rows(&[registered(), deposited(500, 500), deposited(1, 501)]);
        rows[1].event_type = "CashCharged".into();
        rows[2].payload_text = r#"{"CashDeposited": {"amount_fen": -1}}"#.into();
        let replay = replay_member(&rows);
        assert_eq!(codes(&replay.violations), [(Some(2), "event_type_mismatch"), (Some(3), "undecodable_payload")]);
        assert!(!replay.entries[2].decoded);
    }

    #[test]
    fn registration_of_another_member_is_reported() {
        let other = MemberEvent::MemberRegistered {
            member_id: MemberId::from_uuid(Uuid::from_u128(7)),
            tenant_id: tenant(),
            card_no: CardNumber::from_serial(2).unwrap(),
            openid: None,
            source: RegistrationSource::Staff,
            card_level: CardLevel::standard(),
            registered_at: Utc.with_ymd_and_hms(2025, 3, 1, 8, 0, 0).unwrap(),
            actor: Actor::Staff { username: "clerk".into() },
            idempotency_key: IdempotencyKey::parse("key-00000000").unwrap(),
            attribution: None,
        };
        assert_eq!(codes(&replay_member(&rows(&[other])).violations), [(Some(1), "registration_mismatch")]);
    }

    #[test]
    fn stream_of_another_tenant_is_not_found() {
        let rows = rows(&[registered()]);
        let report = member_report(&TenantId::parse("other").unwrap(), &member(), &rows);
        assert!(!report.ok && !report.found);
        assert_eq!(codes(&report.violations), [(None, "not_found")]);
        assert!(report.violations[0].to_string().contains("not found in tenant other"));
        assert!(!member_report(&tenant(), &member(), &[]).found);
    }

    #[test]
    fn digest_orders_streams_bytewise_and_covers_heads() {
        let head = |t: &str, id: &str, sequence: i64| StreamHead {
            aggregate_type: t.into(),
            aggregate_id: id.into(),
            sequence,
            hash: "00ff".into(),
        };
        let a = [head("member", "b", 2), head("member", "a", 1), head("tenant", "acme", 3)];
        let b = [head("tenant", "acme", 3), head("member", "a", 1), head("member", "b", 2)];
        assert_eq!(tenant_digest(&a), tenant_digest(&b));
        let expected = hex::encode(Sha256::digest(b"member\ta\t1\t00ff\nmember\tb\t2\t00ff\ntenant\tacme\t3\t00ff\n"));
        assert_eq!(tenant_digest(&a), expected);
        assert_ne!(tenant_digest(&a[..2]), expected);
        assert_eq!(tenant_digest(&[]), hex::encode(Sha256::digest(b"")));
    }
}
