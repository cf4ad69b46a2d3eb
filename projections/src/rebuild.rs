//! Rebuilding the member read models (`rm_members`, `rm_member_ledger`) from
//! the event store, the source of truth, while the live tables keep serving.
//!
//! 1. `rm_members_rebuild` / `rm_member_ledger_rebuild` are created `LIKE` the
//!    live tables `INCLUDING ALL`.
//! 2. Member events are read in keyset pages ordered by (stream, sequence), one
//!    reader task ahead of the folding; each stream is folded in memory by
//!    [`fold_event`] (the same rules as `MemberProjector`) and written with
//!    `COPY`. The head of every stream goes to a temporary table.
//! 3. One transaction locks `projection_checkpoints` (EXCLUSIVE: the projector
//!    takes its checkpoint row before it touches a read model, so taking the
//!    same order here cannot deadlock) and, for a whole rebuild, the live
//!    tables (ACCESS EXCLUSIVE). Streams the live projector applied beyond what
//!    was replayed meanwhile are folded again from the store. Checkpoints move
//!    up to the replayed heads (never down); the events they move over are
//!    counted in `rm_daily_ops`, which the projector feeds under the same
//!    checkpoint. Dead letters at or below the heads are dropped, then the
//!    tables are swapped (whole) or the tenant's rows are replaced
//!    (`--tenant`). The projector then goes on from the checkpoints: events it
//!    has not applied yet arrive as usual, older ones are duplicates.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use futures::TryStreamExt;
use serde::Serialize;
use sqlx::{Connection, PgConnection, Row};
use tokio::sync::mpsc;
use uuid::Uuid;
use wxcm_domain::member::MemberEvent;
use wxcm_domain::DomainEventMeta;

use crate::daily;
use crate::follows::{self, FollowChange};
use crate::members::MemberProjector;

/// Events read per keyset page.
pub const PAGE_ROWS: i64 = 5_000;
/// Pages read ahead of the folding.
pub const PAGES_AHEAD_MAX: usize = 4;
/// Rows buffered per table before a `COPY` is sent.
pub const COPY_ROWS_MAX: usize = 20_000;
/// Streams the live projector may move past the replay before the swap; more
/// means the replay raced a busy projector: run it again.
pub const CATCH_UP_STREAMS_MAX: usize = 10_000;
/// Session advisory lock: one member rebuild per shard at a time.
pub const REBUILD_LOCK_KEY: i64 = 0x7778_636d_5f72_6262; // "wxcm_rbb"

const LIVE_MEMBERS: &str = "rm_members";
const LIVE_LEDGER: &str = "rm_member_ledger";
const NEW_MEMBERS: &str = "rm_members_rebuild";
const NEW_LEDGER: &str = "rm_member_ledger_rebuild";
const OLD_MEMBERS: &str = "rm_members_old";
const OLD_LEDGER: &str = "rm_member_ledger_old";

const MEMBER_COLUMNS: &str = "tenant_id, member_id, card_no, openid, card_level, source, registered_at, \
     points, held_points, balance_fen, lifetime_points, version, followed, follow_source, scene, referrer_id, \
     followed_at, unfollowed_at";
const LEDGER_COLUMNS: &str = "tenant_id, member_id, sequence, event_id, event_type, recorded_at, points_delta, \
     held_delta, cash_delta_fen, points_after, held_after, balance_after_fen, actor, reason, reference, idempotency_key";

/// The cursor over member events, in (stream, sequence) order: the primary
/// key's order, so the scan needs no sort and a cursor's fast-start plan uses
/// the index.
const CURSOR: &str = "rebuild_member_events";

const SELECT_STREAM: &str = "
SELECT aggregate_id, tenant_id, sequence, event_id, event_type, event_version, recorded_at, payload::text AS payload
  FROM events WHERE aggregate_type = 'member' AND aggregate_id = $1 ORDER BY sequence";

/// One stored member event, as the rebuild and the reconciliation read it.
#[derive(Debug, Clone)]
pub struct StoredMemberEvent {
    pub aggregate_id: String,
    pub tenant_id: String,
    pub sequence: i64,
    pub event_id: Uuid,
    pub event_type: String,
    pub event_version: String,
    pub recorded_at: DateTime<Utc>,
    /// The payload's JSON text.
    pub payload: String,
}

impl StoredMemberEvent {
    fn from_row(row: &sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            aggregate_id: row.try_get("aggregate_id")?,
            tenant_id: row.try_get("tenant_id")?,
            sequence: row.try_get("sequence")?,
            event_id: row.try_get("event_id")?,
            event_type: row.try_get("event_type")?,
            event_version: row.try_get("event_version")?,
            recorded_at: row.try_get("recorded_at")?,
            payload: row.try_get("payload")?,
        })
    }

    /// Decodes the payload and checks it against the row (type, version, and
    /// for a registration its stream and tenant).
    pub fn decode(&self) -> Result<MemberEvent, String> {
        let event: MemberEvent =
            serde_json::from_str(&self.payload).map_err(|e| format!("payload is not a member event: {e}"))?;
        if event.event_type() != self.event_type || event.event_version() != self.event_version {
            return Err(format!(
                "payload is {} v{}, row says {} v{}",
                event.event_type(),
                event.event_version(),
                self.event_type,
                self.event_version
            ));
        }
        if let MemberEvent::MemberRegistered { member_id, tenant_id, .. } = &event {
            if member_id.to_string() != self.aggregate_id || tenant_id.as_str() != self.tenant_id {
                return Err("registration does not match its stream".into());
            }
        }
        Ok(event)
    }
}

/// Opens a cursor over the member events of the shard (or of `tenant`) in
/// (stream, sequence) order, in a repeatable-read snapshot. `conn` must be in
/// a transaction that has run nothing yet; read with [`fetch_page`].
pub async fn open_cursor(conn: &mut PgConnection, tenant: Option<&str>) -> Result<(), sqlx::Error> {
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *conn).await?;
    // DECLARE takes no bind parameters: the tenant goes in as a quoted literal.
    let filter = tenant.map_or_else(String::new, |t| format!("AND tenant_id = '{}'", t.replace('\'', "''")));
    let declare = format!(
        "DECLARE {CURSOR} NO SCROLL CURSOR FOR
         SELECT aggregate_id, tenant_id, sequence, event_id, event_type, event_version, recorded_at,
                payload::text AS payload
           FROM events WHERE aggregate_type = 'member' {filter}
          ORDER BY aggregate_type, aggregate_id, sequence"
    );
    sqlx::query(&declare).execute(&mut *conn).await?;
    Ok(())
}

/// The next `rows` events of the cursor [`open_cursor`] opened; empty at the end.
pub async fn fetch_page(conn: &mut PgConnection, rows: i64) -> Result<Vec<StoredMemberEvent>, sqlx::Error> {
    let rows = sqlx::query(&format!("FETCH FORWARD {} FROM {CURSOR}", rows.clamp(1, PAGE_ROWS * 10)))
        .fetch_all(&mut *conn)
        .await?;
    rows.iter().map(StoredMemberEvent::from_row).collect()
}

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
        MemberEvent::RechargeReversalFlagged { .. } => {}
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

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("rebuild database")]
    Database(#[from] sqlx::Error),
    #[error("member/{member_id} seq {sequence}: {reason}")]
    Fold { member_id: String, sequence: i64, reason: String },
    #[error("another member rebuild is running on this shard")]
    Busy,
    #[error("{streams} streams moved on during the replay (at most {CATCH_UP_STREAMS_MAX}): run the rebuild again")]
    TooBusy { streams: usize },
    #[error("the event reader stopped")]
    Reader,
}

/// What to rebuild.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebuildScope {
    /// Every member of the shard: the tables are swapped.
    Shard,
    /// One tenant's rows are replaced in one transaction.
    Tenant(String),
}

impl RebuildScope {
    fn tenant(&self) -> Option<&str> {
        match self {
            RebuildScope::Shard => None,
            RebuildScope::Tenant(t) => Some(t),
        }
    }
}

/// Figures of one rebuild.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RebuildReport {
    pub events: u64,
    pub members: u64,
    pub ledger_lines: u64,
    /// Streams folded again in the swap transaction (the projector had moved on).
    pub caught_up_streams: u64,
    pub elapsed_ms: u64,
    pub events_per_s: u64,
}

/// The member events the rebuild will read (for a progress bar).
pub async fn count_events(conn: &mut PgConnection, scope: &RebuildScope) -> Result<u64, sqlx::Error> {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_type = 'member' AND ($1::text IS NULL OR tenant_id = $1)",
    )
    .bind(scope.tenant())
    .fetch_one(conn)
    .await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Rebuilds the member read models of one shard. `writer` and `reader` are the
/// owner's connections (the rebuild creates and renames tables); `progress` is
/// called with the events folded so far.
pub async fn rebuild_members(
    writer: &mut PgConnection,
    reader: PgConnection,
    scope: &RebuildScope,
    mut progress: impl FnMut(u64),
) -> Result<RebuildReport, RebuildError> {
    let started = Instant::now();
    let locked: bool =
        sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(REBUILD_LOCK_KEY).fetch_one(&mut *writer).await?;
    if !locked {
        return Err(RebuildError::Busy);
    }
    let outcome = rebuild_locked(writer, reader, scope, &mut progress).await;
    let _ = sqlx::query("SELECT pg_advisory_unlock($1)").bind(REBUILD_LOCK_KEY).execute(&mut *writer).await;
    let mut report = outcome?;
    report.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    report.events_per_s = per_second(report.events, started.elapsed());
    Ok(report)
}

fn per_second(count: u64, elapsed: Duration) -> u64 {
    let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX).max(1);
    count.saturating_mul(1_000_000) / us
}

async fn rebuild_locked(
    writer: &mut PgConnection,
    reader: PgConnection,
    scope: &RebuildScope,
    progress: &mut impl FnMut(u64),
) -> Result<RebuildReport, RebuildError> {
    prepare_tables(writer).await?;
    let mut report = RebuildReport::default();
    let mut sink = Sink::default();
    let (tx, mut rx) = mpsc::channel::<Result<Vec<StoredMemberEvent>, sqlx::Error>>(PAGES_AHEAD_MAX);
    let tenant = scope.tenant().map(str::to_owned);
    let reader_task = tokio::spawn(read_all(reader, tenant, tx));
    let mut current: Option<MemberRow> = None;
    while let Some(page) = rx.recv().await {
        for stored in page? {
            if current.as_ref().is_some_and(|m| m.member_id != stored.aggregate_id) {
                sink.finish_member(current.take());
            }
            sink.fold(&mut current, &stored)?;
            report.events += 1;
        }
        sink.flush_full(writer).await?;
        progress(report.events);
    }
    reader_task.await.map_err(|_| RebuildError::Reader)?;
    sink.finish_member(current.take());
    sink.flush(writer).await?;
    // The swap's joins need the temporary table's statistics (autovacuum never sees it).
    sqlx::query("ANALYZE rebuild_heads").execute(&mut *writer).await?;
    report.members = sink.members_written;
    report.ledger_lines = sink.ledger_written;
    report.caught_up_streams = swap(writer, scope, &mut sink).await?;
    Ok(report)
}

/// Reads every page and hands it to the folding; stops when the receiver is gone.
async fn read_all(
    mut conn: PgConnection,
    tenant: Option<String>,
    tx: mpsc::Sender<Result<Vec<StoredMemberEvent>, sqlx::Error>>,
) {
    let opened = match conn.begin().await {
        Ok(mut snapshot) => match open_cursor(&mut snapshot, tenant.as_deref()).await {
            Ok(()) => Ok(snapshot),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    let mut snapshot = match opened {
        Ok(snapshot) => snapshot,
        Err(e) => {
            let _ = tx.send(Err(e)).await;
            return;
        }
    };
    loop {
        let page = fetch_page(&mut snapshot, PAGE_ROWS).await;
        let done = page.as_ref().map_or(true, Vec::is_empty);
        if tx.send(page).await.is_err() || done {
            break;
        }
    }
    let _ = snapshot.rollback().await;
}

async fn prepare_tables(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    for statement in [
        format!("DROP TABLE IF EXISTS {NEW_MEMBERS}, {NEW_LEDGER}, {OLD_MEMBERS}, {OLD_LEDGER}"),
        format!("CREATE TABLE {NEW_MEMBERS} (LIKE {LIVE_MEMBERS} INCLUDING ALL)"),
        format!("CREATE TABLE {NEW_LEDGER} (LIKE {LIVE_LEDGER} INCLUDING ALL)"),
        "DROP TABLE IF EXISTS pg_temp.rebuild_heads".to_owned(),
        "CREATE TEMP TABLE rebuild_heads (aggregate_id text PRIMARY KEY, tenant_id text NOT NULL,
            sequence bigint NOT NULL, event_id uuid NOT NULL, recorded_at timestamptz NOT NULL)"
            .to_owned(),
    ] {
        sqlx::query(&statement).execute(&mut *conn).await?;
    }
    Ok(())
}

/// Rows waiting for `COPY`, in `COPY`'s text format.
#[derive(Default)]
struct Sink {
    members: String,
    members_buffered: usize,
    ledger: String,
    ledger_buffered: usize,
    heads: String,
    /// Head of the member being folded: (event id, recorded at).
    head: Option<(Uuid, DateTime<Utc>)>,
    members_written: u64,
    ledger_written: u64,
}

impl Sink {
    fn fold(&mut self, current: &mut Option<MemberRow>, stored: &StoredMemberEvent) -> Result<(), RebuildError> {
        let fail = |reason: String| RebuildError::Fold {
            member_id: stored.aggregate_id.clone(),
            sequence: stored.sequence,
            reason,
        };
        let event = stored.decode().map_err(fail)?;
        if let Some(line) = fold_event(current, stored, &event).map_err(fail)? {
            push_ledger(&mut self.ledger, &line);
            self.ledger_buffered += 1;
        }
        self.head = Some((stored.event_id, stored.recorded_at));
        Ok(())
    }

    fn finish_member(&mut self, member: Option<MemberRow>) {
        let (Some(member), Some((event_id, recorded_at))) = (member, self.head.take()) else {
            return;
        };
        push_member(&mut self.members, &member);
        self.members_buffered += 1;
        let _ = writeln!(
            self.heads,
            "{}\t{}\t{}\t{event_id}\t{}",
            escape(&member.member_id),
            escape(&member.tenant_id),
            member.version,
            timestamp(recorded_at)
        );
    }

    async fn flush_full(&mut self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        if self.members_buffered >= COPY_ROWS_MAX || self.ledger_buffered >= COPY_ROWS_MAX {
            self.flush(conn).await?;
        }
        Ok(())
    }

    async fn flush(&mut self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        copy(conn, &format!("{NEW_MEMBERS} ({MEMBER_COLUMNS})"), &mut self.members).await?;
        copy(conn, &format!("{NEW_LEDGER} ({LEDGER_COLUMNS})"), &mut self.ledger).await?;
        copy(conn, "rebuild_heads (aggregate_id, tenant_id, sequence, event_id, recorded_at)", &mut self.heads).await?;
        self.members_written += self.members_buffered as u64;
        self.ledger_written += self.ledger_buffered as u64;
        self.members_buffered = 0;
        self.ledger_buffered = 0;
        Ok(())
    }
}

async fn copy(conn: &mut PgConnection, target: &str, data: &mut String) -> Result<(), sqlx::Error> {
    if data.is_empty() {
        return Ok(());
    }
    let mut copy = conn.copy_in_raw(&format!("COPY {target} FROM STDIN")).await?;
    copy.send(std::mem::take(data).into_bytes()).await?;
    copy.finish().await?;
    Ok(())
}

/// `COPY` text format: backslash escapes for the separators, `\N` for NULL.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

fn nullable(value: Option<&str>) -> String {
    value.map_or_else(|| "\\N".to_owned(), escape)
}

fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn push_member(buf: &mut String, m: &MemberRow) {
    let _ = writeln!(
        buf,
        "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
        escape(&m.tenant_id),
        escape(&m.member_id),
        escape(&m.card_no),
        nullable(m.openid.as_deref()),
        escape(&m.card_level),
        escape(&m.source),
        timestamp(m.registered_at),
        m.points,
        m.held_points,
        m.balance_fen,
        m.lifetime_points,
        m.version,
        if m.followed { "t" } else { "f" },
        nullable(m.follow_source.as_deref()),
        nullable(m.scene.as_deref()),
        nullable(m.referrer_id.as_deref()),
        nullable(m.followed_at.map(timestamp).as_deref()),
        nullable(m.unfollowed_at.map(timestamp).as_deref())
    );
}

fn push_ledger(buf: &mut String, l: &LedgerRow) {
    let _ = writeln!(
        buf,
        "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
        escape(&l.tenant_id),
        escape(&l.member_id),
        l.sequence,
        l.event_id,
        escape(&l.event_type),
        timestamp(l.recorded_at),
        l.points_delta,
        l.held_delta,
        l.cash_delta_fen,
        l.points_after,
        l.held_after,
        l.balance_after_fen,
        escape(&l.actor),
        escape(&l.reason),
        nullable(l.reference.as_deref()),
        escape(&l.idempotency_key)
    );
}

// The swap's statements look rows up by primary key (correlated subqueries,
// LATERAL) rather than joining: a bulk-loaded `events` or a fresh checkpoint
// table may have no statistics yet, and a join planned on them can go quadratic.

/// Streams (in scope) whose checkpoint is beyond what the replay folded.
const MOVED_ON: &str = "
SELECT c.aggregate_id FROM projection_checkpoints c
 WHERE c.projector = $1 AND c.aggregate_type = 'member' AND ($2::text IS NULL OR c.tenant_id = $2)
   AND c.sequence > coalesce((SELECT h.sequence FROM rebuild_heads h WHERE h.aggregate_id = c.aggregate_id), 0)";

const ADVANCE_CHECKPOINTS: &str = "
INSERT INTO projection_checkpoints (projector, aggregate_type, aggregate_id, tenant_id, sequence, event_id, recorded_at)
SELECT $1, 'member', aggregate_id, tenant_id, sequence, event_id, recorded_at FROM rebuild_heads
ON CONFLICT (projector, aggregate_type, aggregate_id) DO UPDATE
   SET sequence = EXCLUDED.sequence, event_id = EXCLUDED.event_id, recorded_at = EXCLUDED.recorded_at,
       updated_at = now()
 WHERE projection_checkpoints.sequence < EXCLUDED.sequence";

const CLEAR_REPLAYED_LETTERS: &str = "
DELETE FROM projection_dead_letters d
 WHERE d.projector = $1 AND d.aggregate_type = 'member'
   AND d.sequence <= (SELECT h.sequence FROM rebuild_heads h WHERE h.aggregate_id = d.aggregate_id)";

/// The swap transaction; returns the number of streams folded again.
async fn swap(writer: &mut PgConnection, scope: &RebuildScope, sink: &mut Sink) -> Result<u64, RebuildError> {
    let projector = MemberProjector::NAME;
    let mut tx = writer.begin().await?;
    sqlx::query("LOCK TABLE projection_checkpoints IN EXCLUSIVE MODE").execute(&mut *tx).await?;
    if *scope == RebuildScope::Shard {
        sqlx::query(&format!("LOCK TABLE {LIVE_MEMBERS}, {LIVE_LEDGER} IN ACCESS EXCLUSIVE MODE"))
            .execute(&mut *tx)
            .await?;
    }
    let moved: Vec<String> =
        sqlx::query_scalar(MOVED_ON).bind(projector).bind(scope.tenant()).fetch_all(&mut *tx).await?;
    if moved.len() > CATCH_UP_STREAMS_MAX {
        return Err(RebuildError::TooBusy { streams: moved.len() });
    }
    for member_id in &moved {
        refold_stream(&mut tx, sink, member_id).await?;
    }
    count_skipped_daily_ops(&mut tx).await?;
    sqlx::query(ADVANCE_CHECKPOINTS).bind(projector).execute(&mut *tx).await?;
    sqlx::query(CLEAR_REPLAYED_LETTERS).bind(projector).execute(&mut *tx).await?;
    match scope {
        RebuildScope::Shard => {
            let renames = index_renames(&mut tx).await?;
            for statement in [
                format!("ALTER TABLE {LIVE_MEMBERS} RENAME TO {OLD_MEMBERS}"),
                format!("ALTER TABLE {LIVE_LEDGER} RENAME TO {OLD_LEDGER}"),
                format!("ALTER TABLE {NEW_MEMBERS} RENAME TO {LIVE_MEMBERS}"),
                format!("ALTER TABLE {NEW_LEDGER} RENAME TO {LIVE_LEDGER}"),
                format!("DROP TABLE {OLD_MEMBERS}, {OLD_LEDGER}"),
            ] {
                sqlx::query(&statement).execute(&mut *tx).await?;
            }
            for (from, to) in renames {
                sqlx::query(&format!("ALTER INDEX {} RENAME TO {}", quote(&from), quote(&to)))
                    .execute(&mut *tx)
                    .await?;
            }
        }
        RebuildScope::Tenant(tenant) => {
            for (live, new) in [(LIVE_MEMBERS, NEW_MEMBERS), (LIVE_LEDGER, NEW_LEDGER)] {
                sqlx::query(&format!("DELETE FROM {live} WHERE tenant_id = $1")).bind(tenant).execute(&mut *tx).await?;
                let columns = if live == LIVE_MEMBERS { MEMBER_COLUMNS } else { LEDGER_COLUMNS };
                sqlx::query(&format!("INSERT INTO {live} ({columns}) SELECT {columns} FROM {new}"))
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query(&format!("DROP TABLE {NEW_MEMBERS}, {NEW_LEDGER}")).execute(&mut *tx).await?;
        }
    }
    sqlx::query(&format!("GRANT SELECT, INSERT, UPDATE, DELETE ON {LIVE_MEMBERS}, {LIVE_LEDGER} TO wxcm_app"))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(moved.len() as u64)
}

/// Events the rebuilt tables include but the projector has not applied:
/// (checkpoint, head] of every replayed stream.
const SKIPPED_EVENTS: &str = "
SELECT e.aggregate_id, e.tenant_id, e.sequence, e.event_id, e.event_type, e.event_version, e.recorded_at,
       e.payload::text AS payload
  FROM (SELECT h.aggregate_id, h.sequence AS head,
               coalesce((SELECT c.sequence FROM projection_checkpoints c
                          WHERE c.projector = $1 AND c.aggregate_type = 'member'
                            AND c.aggregate_id = h.aggregate_id), 0) AS checkpoint
          FROM rebuild_heads h) s
  JOIN LATERAL (SELECT * FROM events e
                 WHERE e.aggregate_type = 'member' AND e.aggregate_id = s.aggregate_id
                   AND e.sequence > s.checkpoint AND e.sequence <= s.head) e ON true
 WHERE s.checkpoint < s.head";

const ADD_DAILY_OPS: &str = "
INSERT INTO rm_daily_ops (tenant_id, day, metric, dimension, value)
SELECT * FROM unnest($1::text[], $2::date[], $3::text[], $4::text[], $5::bigint[])
ON CONFLICT (tenant_id, day, metric, dimension) DO UPDATE SET value = rm_daily_ops.value + EXCLUDED.value";

/// `MemberProjector` also counts every event it applies in `rm_daily_ops`
/// under the same checkpoint. Moving the checkpoints over events it has not
/// applied would leave them uncounted, so they are counted here, once, in the
/// swap transaction (summed per counter, written in one statement per chunk).
async fn count_skipped_daily_ops(conn: &mut PgConnection) -> Result<(), RebuildError> {
    let mut sums: HashMap<(String, NaiveDate, &'static str, String), i64> = HashMap::new();
    // Unfollows count under the follow source before them, looked up once the cursor is done.
    let mut unfollows = Vec::new();
    {
        let mut rows = sqlx::query(SKIPPED_EVENTS).bind(MemberProjector::NAME).fetch(&mut *conn);
        while let Some(row) = rows.try_next().await? {
            let stored = StoredMemberEvent::from_row(&row)?;
            let fail = |reason: String| RebuildError::Fold {
                member_id: stored.aggregate_id.clone(),
                sequence: stored.sequence,
                reason,
            };
            let event = stored.decode().map_err(fail)?;
            let day = daily::merchant_day(stored.recorded_at);
            if matches!(event, MemberEvent::MemberUnfollowed { .. }) {
                unfollows.push((stored, event));
                continue;
            }
            for delta in daily::deltas(&event, None).map_err(|e| fail(e.to_string()))? {
                *sums.entry((stored.tenant_id.clone(), day, delta.metric, delta.dimension)).or_default() += delta.value;
            }
        }
    }
    for (stored, event) in unfollows {
        let source = follow_source_before(conn, &stored).await?;
        let day = daily::merchant_day(stored.recorded_at);
        let deltas = daily::deltas(&event, source.as_deref()).map_err(|e| RebuildError::Fold {
            member_id: stored.aggregate_id.clone(),
            sequence: stored.sequence,
            reason: e.to_string(),
        })?;
        for delta in deltas {
            *sums.entry((stored.tenant_id.clone(), day, delta.metric, delta.dimension)).or_default() += delta.value;
        }
    }
    let sums: Vec<_> = sums.into_iter().collect();
    for chunk in sums.chunks(COPY_ROWS_MAX) {
        let tenants: Vec<&str> = chunk.iter().map(|((t, ..), _)| t.as_str()).collect();
        let days: Vec<NaiveDate> = chunk.iter().map(|((_, d, ..), _)| *d).collect();
        let metrics: Vec<&str> = chunk.iter().map(|((_, _, m, _), _)| *m).collect();
        let dimensions: Vec<&str> = chunk.iter().map(|((.., d), _)| d.as_str()).collect();
        let values: Vec<i64> = chunk.iter().map(|(_, v)| *v).collect();
        sqlx::query(ADD_DAILY_OPS)
            .bind(tenants)
            .bind(days)
            .bind(metrics)
            .bind(dimensions)
            .bind(values)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// The latest follow (or subscribe registration) of the stream before `stored`.
const LAST_FOLLOW: &str = "
SELECT aggregate_id, tenant_id, sequence, event_id, event_type, event_version, recorded_at, payload::text AS payload
  FROM events
 WHERE aggregate_type = 'member' AND aggregate_id = $1 AND sequence < $2
   AND event_type IN ('MemberFollowed', 'MemberRegistered')
 ORDER BY sequence DESC LIMIT 1";

/// The member's follow source when the event `stored` happened (none if it never followed).
async fn follow_source_before(
    conn: &mut PgConnection,
    stored: &StoredMemberEvent,
) -> Result<Option<String>, RebuildError> {
    let Some(row) =
        sqlx::query(LAST_FOLLOW).bind(&stored.aggregate_id).bind(stored.sequence).fetch_optional(&mut *conn).await?
    else {
        return Ok(None);
    };
    let previous = StoredMemberEvent::from_row(&row)?;
    let event = previous.decode().map_err(|reason| RebuildError::Fold {
        member_id: previous.aggregate_id.clone(),
        sequence: previous.sequence,
        reason,
    })?;
    Ok(match follows::change_of(&event) {
        FollowChange::Follow { source, .. } => Some(source.to_owned()),
        FollowChange::Unfollow { .. } | FollowChange::None => None,
    })
}

/// Replaces one stream's rows and head in the rebuild tables by a fold of
/// every event the store holds now.
async fn refold_stream(conn: &mut PgConnection, sink: &mut Sink, member_id: &str) -> Result<(), RebuildError> {
    for table in [NEW_MEMBERS, NEW_LEDGER] {
        sqlx::query(&format!("DELETE FROM {table} WHERE member_id = $1")).bind(member_id).execute(&mut *conn).await?;
    }
    sqlx::query("DELETE FROM rebuild_heads WHERE aggregate_id = $1").bind(member_id).execute(&mut *conn).await?;
    let rows = sqlx::query(SELECT_STREAM).bind(member_id).fetch_all(&mut *conn).await?;
    let mut current = None;
    for row in &rows {
        sink.fold(&mut current, &StoredMemberEvent::from_row(row)?)?;
    }
    sink.finish_member(current);
    sink.flush(conn).await?;
    Ok(())
}

/// Index names of the rebuilt tables → the live tables' names, matched by
/// definition, so a swap keeps the names the migrations gave.
async fn index_renames(conn: &mut PgConnection) -> Result<Vec<(String, String)>, sqlx::Error> {
    const INDEXES: &str = "SELECT c.relname::text, pg_get_indexdef(c.oid) FROM pg_index i
        JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = $1::regclass ORDER BY c.relname";
    let mut renames = Vec::new();
    for (live, new) in [(LIVE_MEMBERS, NEW_MEMBERS), (LIVE_LEDGER, NEW_LEDGER)] {
        let old: Vec<(String, String)> = sqlx::query_as(INDEXES).bind(live).fetch_all(&mut *conn).await?;
        let mut by_shape: HashMap<String, Vec<String>> = HashMap::new();
        for (name, def) in old {
            by_shape.entry(index_shape(&def)).or_default().push(name);
        }
        let rebuilt: Vec<(String, String)> = sqlx::query_as(INDEXES).bind(new).fetch_all(&mut *conn).await?;
        for (name, def) in rebuilt {
            if let Some(target) = by_shape.get_mut(&index_shape(&def)).and_then(Vec::pop) {
                if target != name {
                    renames.push((name, target));
                }
            }
        }
    }
    Ok(renames)
}

/// An index definition without its name and table: `UNIQUE USING btree (...)`.
fn index_shape(def: &str) -> String {
    let unique = def.starts_with("CREATE UNIQUE");
    let body = def.find(" USING ").map_or(def, |i| &def[i..]);
    format!("{}{body}", if unique { "UNIQUE" } else { "" })
}

fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(sequence: i64, event: &MemberEvent) -> StoredMemberEvent {
        StoredMemberEvent {
            aggregate_id: "m".into(),
            tenant_id: "t".into(),
            sequence,
            event_id: Uuid::nil(),
            event_type: event.event_type().into(),
            event_version: event.event_version().into(),
            recorded_at: Utc::now(),
            payload: serde_json::to_string(event).unwrap_or_default(),
        }
    }

    #[test]
    fn copy_text_escapes_separators_and_nulls() {
        assert_eq!(escape("a\tb\\c\nd\re"), "a\\tb\\\\c\\nd\\re");
        assert_eq!(nullable(None), "\\N");
        assert_eq!(nullable(Some("x")), "x");
    }

    #[test]
    fn index_shape_ignores_name_and_table() {
        let live = "CREATE UNIQUE INDEX rm_members_pkey ON public.rm_members USING btree (tenant_id, member_id)";
        let new = "CREATE UNIQUE INDEX rm_members_rebuild_pkey ON public.rm_members_rebuild USING btree (tenant_id, member_id)";
        assert_eq!(index_shape(live), index_shape(new));
        let plain = "CREATE INDEX x ON public.rm_members USING btree (tenant_id, member_id)";
        assert_ne!(index_shape(live), index_shape(plain));
    }

    #[test]
    fn an_update_before_the_registration_is_refused() {
        let event = MemberEvent::CardLevelChanged {
            from: wxcm_domain::member::CardLevel::standard(),
            to: wxcm_domain::member::CardLevel::standard(),
            provenance: wxcm_domain::member::Provenance {
                actor: wxcm_domain::Actor::Admin { username: "a".into() },
                reason: wxcm_domain::Reference::parse("r").expect("reason"),
                reference: None,
                idempotency_key: wxcm_domain::IdempotencyKey::parse("key-0001").expect("key"),
            },
        };
        let mut row = None;
        assert!(fold_event(&mut row, &stored(2, &event), &event).is_err());
        assert!(row.is_none());
    }

    #[test]
    fn figures_come_from_the_events_and_each_money_event_is_a_ledger_line() {
        use wxcm_domain::member::{CardLevel, Provenance, RegistrationSource};
        use wxcm_domain::{Actor, AmountFen, BalanceFen, CardNumber, IdempotencyKey, MemberId, Reference, TenantId};
        let key = || IdempotencyKey::parse("key-0001").expect("key");
        let registered = MemberEvent::MemberRegistered {
            member_id: MemberId::new_random(),
            tenant_id: TenantId::parse("t-1").expect("tenant"),
            card_no: CardNumber::from_serial(1).expect("card"),
            openid: None,
            source: RegistrationSource::Staff,
            card_level: CardLevel::standard(),
            registered_at: Utc::now(),
            actor: Actor::Admin { username: "a".into() },
            idempotency_key: key(),
            attribution: None,
        };
        let deposited = MemberEvent::CashDeposited {
            amount_fen: AmountFen::new(250).expect("fen"),
            provenance: Provenance {
                actor: Actor::Admin { username: "a".into() },
                reason: Reference::parse("r").expect("reason"),
                reference: None,
                idempotency_key: key(),
            },
            balance_after_fen: BalanceFen::new(250).expect("balance"),
        };
        let mut row = None;
        assert_eq!(fold_event(&mut row, &stored(1, &registered), &registered), Ok(None));
        let line = fold_event(&mut row, &stored(2, &deposited), &deposited).expect("folds").expect("a ledger line");
        assert_eq!((line.sequence, line.cash_delta_fen, line.balance_after_fen), (2, 250, 250));
        let member = row.expect("row");
        assert_eq!((member.balance_fen, member.version, member.source.as_str()), (250, 2, "staff"));
        // Out of order: the row must be exactly one event behind.
        assert!(fold_event(&mut Some(member), &stored(4, &deposited), &deposited).is_err());
    }
}
