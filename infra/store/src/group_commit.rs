//! Group commit: the event INSERTs of concurrent commands on one shard are
//! merged into one multi-row INSERT, so one transaction, one WAL flush and one
//! round trip serve many commands.
//!
//! Why: every command is one short autocommit statement, and on a small
//! machine the per-transaction work (round trip, executor start-up, commit
//! record, flush, wake-ups) costs about as much as the rows themselves.
//!
//! How it stays correct:
//! - a batch is one statement, so it commits or fails as a whole; the rows of
//!   one command keep their order (`ORDER BY ord`), so the hash-chain trigger
//!   sees each predecessor, as it does for postgres-es's row-by-row INSERTs;
//! - a command is answered only after its batch committed;
//! - when a batch fails (a stale cache's sequence, a reused idempotency key,
//!   anything), nothing of it was written, and each of its commands is run
//!   again alone, so one command's conflict never becomes another's;
//! - the executor runs one command per aggregate at a time in this process, so
//!   a batch never holds two commands of one stream.
//!
//! The chain fields and the side rows: for every batch whose rows it can
//! render exactly ([`crate::jsonb_text`]), the committer chooses each row's
//! event id and record time, computes its canonical bytes
//! (`schemas/event-hash-chain.md`) and sends them in `events.canonical`; the
//! trigger only links the row to its predecessor and hashes (migration 0045).
//! The same statement writes the batch's outbox rows (from the inserted rows)
//! and its idempotency keys (one per command and key, the range of its
//! sequences): one statement, so they commit or fail with the events. A batch
//! holding anything else (a float, a key without request hash, a key on two
//! streams, ...) is sent the old way and the trigger does everything, so its
//! errors are the trigger's.
//!
//! No waiting to fill a batch: a worker takes whatever is queued when it is
//! free, after letting runnable tasks queue theirs (one yield, no timer).
//! Idle, a command goes alone at once; busy, commands queue behind the batches
//! in flight and leave together.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use cqrs_es::persist::SerializedEvent;
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot, Mutex, Notify};
use tracing::debug;
use uuid::Uuid;
use wxcm_commands::lanes::{AppendError, EventAppender};

use crate::hashchain::{self, CanonicalFields};
use crate::jsonb_text;

/// Batches in flight at once per shard, unless configured (`group_commit_workers`):
/// one fills while the other waits for its flush. Measured on 2 cores (`wxcm bench
/// ledger`): 2 beat 1, 3 and 4; more workers only make smaller batches.
pub const WORKERS_DEFAULT: usize = 2;
/// Each worker holds a connection while its statement runs.
pub const WORKERS_MAX: usize = 16;
/// Commands waiting for a worker before `commit` waits for room (backpressure).
pub const QUEUE_MAX: usize = 4_096;
pub const BATCH_COMMANDS_MAX: usize = 64;
pub const BATCH_ROWS_MAX: usize = 512;
/// Before closing a batch, a worker yields this often to the scheduler, so that
/// command tasks already runnable queue their rows into it (one yield: batches
/// of ~7 instead of ~3 at 16 clients, +15% commands/s; more yields gained nothing).
pub const YIELDS_PER_BATCH_MAX: u32 = 1;

/// postgres-es 0.5.0's own INSERT (same columns, same binds).
const INSERT_ONE_SQL: &str =
    "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
VALUES ($1, $2, $3, $4, $5, $6, $7)";

/// Many rows in one statement, in the order given.
const INSERT_MANY_SQL: &str =
    "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
SELECT t.aggregate_type, t.aggregate_id, t.sequence, t.event_type, t.event_version, t.payload, t.metadata
  FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::jsonb[], $7::jsonb[])
       WITH ORDINALITY AS t(aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, ord)
 ORDER BY t.ord";

/// Many rows with their chain fields and canonical bytes, their outbox rows and
/// their idempotency keys in one statement (migration 0045's path). The outbox
/// rows come from the inserted rows, per stream in sequence order.
const INSERT_PREPARED_SQL: &str = "
WITH written AS (
    INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata,
                        event_id, recorded_at, canonical)
    SELECT t.aggregate_type, t.aggregate_id, t.sequence, t.event_type, t.event_version, t.payload, t.metadata,
           t.event_id, t.recorded_at, t.canonical
      FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::jsonb[], $7::jsonb[],
                  $8::uuid[], $9::timestamptz[], $10::bytea[])
           WITH ORDINALITY AS t(aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata,
                                event_id, recorded_at, canonical, ord)
     ORDER BY t.ord
    RETURNING event_id, tenant_id, aggregate_type, aggregate_id, sequence, event_type, recorded_at
), outbox_rows AS (
    INSERT INTO outbox (event_id, tenant_id, aggregate_type, aggregate_id, sequence, event_type, recorded_at)
    SELECT w.event_id, w.tenant_id, w.aggregate_type, w.aggregate_id, w.sequence, w.event_type, w.recorded_at
      FROM written w
     ORDER BY w.aggregate_type, w.aggregate_id, w.sequence
)
INSERT INTO idempotency_keys (tenant_id, idempotency_key, request_hash, aggregate_type, aggregate_id,
                              first_sequence, last_sequence)
SELECT * FROM unnest($11::text[], $12::text[], $13::text[], $14::text[], $15::text[], $16::bigint[], $17::bigint[])";

/// What the group committers of this process have written: statements that
/// committed, and the commands and rows they carried. A failed batch wrote
/// nothing and is not counted (its commands count again when retried alone).
///
/// Process-wide, like a metrics registry, so that a benchmark or an exporter
/// reads it without a handle on each shard's committer. Take two readings and
/// subtract ([`CommitStats::since`]) to measure an interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    pub statements: u64,
    pub commands: u64,
    pub rows: u64,
    /// Rows whose event id, record time and canonical bytes this process
    /// computed (the rest were left to the trigger, see the module's doc).
    pub prepared_rows: u64,
}

impl CommitStats {
    /// What was written after `earlier` (a reading taken before this one).
    pub fn since(self, earlier: CommitStats) -> CommitStats {
        CommitStats {
            statements: self.statements.saturating_sub(earlier.statements),
            commands: self.commands.saturating_sub(earlier.commands),
            rows: self.rows.saturating_sub(earlier.rows),
            prepared_rows: self.prepared_rows.saturating_sub(earlier.prepared_rows),
        }
    }

    /// Average rows per committed statement (the batch size), if any committed.
    pub fn rows_per_statement(&self) -> Option<f64> {
        (self.statements > 0).then(|| self.rows as f64 / self.statements as f64)
    }

    /// Average commands per committed statement, if any committed.
    pub fn commands_per_statement(&self) -> Option<f64> {
        (self.statements > 0).then(|| self.commands as f64 / self.statements as f64)
    }
}

static STATEMENTS: AtomicU64 = AtomicU64::new(0);
static COMMANDS: AtomicU64 = AtomicU64::new(0);
static ROWS: AtomicU64 = AtomicU64::new(0);
static PREPARED_ROWS: AtomicU64 = AtomicU64::new(0);

/// The totals of every group committer in this process so far.
pub fn stats() -> CommitStats {
    CommitStats {
        statements: STATEMENTS.load(Ordering::Relaxed),
        commands: COMMANDS.load(Ordering::Relaxed),
        rows: ROWS.load(Ordering::Relaxed),
        prepared_rows: PREPARED_ROWS.load(Ordering::Relaxed),
    }
}

fn count_committed(commands: usize, rows: usize, path: Path) {
    STATEMENTS.fetch_add(1, Ordering::Relaxed);
    COMMANDS.fetch_add(commands as u64, Ordering::Relaxed);
    ROWS.fetch_add(rows as u64, Ordering::Relaxed);
    if path == Path::Prepared {
        PREPARED_ROWS.fetch_add(rows as u64, Ordering::Relaxed);
    }
}

/// How a statement was written: chain fields and side rows computed here, or by the trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Prepared,
    Trigger,
}

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// A row's sequence is taken or its idempotency key was used: the caller's
    /// state is stale (postgres-es reports this as an optimistic conflict).
    #[error("optimistic concurrency conflict")]
    Conflict,
    #[error("invalid event: {0}")]
    Invalid(String),
    #[error(transparent)]
    Sql(sqlx::Error),
    /// The worker went away before answering (runtime shutting down): whether
    /// the rows were written is unknown, as after a lost connection.
    #[error("group commit worker stopped before answering")]
    Stopped,
}

struct Job {
    rows: Vec<SerializedEvent>,
    reply: oneshot::Sender<Result<(), CommitError>>,
}

/// One per shard, shared by the event stores of every aggregate type.
pub struct GroupCommitter {
    pool: PgPool,
    workers: usize,
    /// Started on first use, inside the runtime that uses it.
    sender: OnceLock<mpsc::Sender<Job>>,
    committed: Arc<Notify>,
}

impl GroupCommitter {
    /// `workers` statements in flight at once, clamped to 1..=[`WORKERS_MAX`].
    pub fn new(pool: PgPool, workers: usize) -> Self {
        let workers = workers.clamp(1, WORKERS_MAX);
        Self { pool, workers, sender: OnceLock::new(), committed: Arc::new(Notify::new()) }
    }

    /// Signalled after every commit: the relay of this process wakes on it
    /// instead of waiting for its next poll.
    pub fn committed(&self) -> Arc<Notify> {
        self.committed.clone()
    }

    fn sender(&self) -> &mpsc::Sender<Job> {
        self.sender.get_or_init(|| {
            let (sender, receiver) = mpsc::channel(QUEUE_MAX);
            let receiver = Arc::new(Mutex::new(receiver));
            for _ in 0..self.workers {
                tokio::spawn(work(self.pool.clone(), receiver.clone(), self.committed.clone()));
            }
            sender
        })
    }

    /// Writes the rows of one command atomically, together with those of
    /// whatever other commands are queued.
    pub async fn commit(&self, rows: Vec<SerializedEvent>) -> Result<(), CommitError> {
        if rows.is_empty() {
            return Ok(());
        }
        if rows.len() > BATCH_ROWS_MAX {
            return Err(CommitError::Invalid(format!(
                "{} events in one command, at most {BATCH_ROWS_MAX}",
                rows.len()
            )));
        }
        let (reply, answer) = oneshot::channel();
        self.sender().send(Job { rows, reply }).await.map_err(|_| CommitError::Stopped)?;
        answer.await.unwrap_or(Err(CommitError::Stopped))
    }
}

/// The lanes' appends (coupon issues, shakes): the rows of every stream are
/// one "command" of the group committer: one statement, one transaction, each
/// row's primary key the optimistic check of its stream.
#[async_trait::async_trait]
impl EventAppender for GroupCommitter {
    async fn append(&self, rows: Vec<SerializedEvent>) -> Result<(), AppendError> {
        self.commit(rows).await.map_err(|e| match e {
            CommitError::Conflict => AppendError::Conflict,
            CommitError::Sql(ref sql) if wxcm_commands::failure::is_transient(sql) => {
                AppendError::Unavailable(e.to_string())
            }
            CommitError::Stopped => AppendError::Unavailable(e.to_string()),
            other => AppendError::Store(other.to_string()),
        })
    }
}

async fn work(pool: PgPool, receiver: Arc<Mutex<mpsc::Receiver<Job>>>, committed: Arc<Notify>) {
    // A job that did not fit the last batch opens the next one.
    let mut carried: Option<Job> = None;
    loop {
        let jobs = {
            let mut receiver = receiver.lock().await;
            let first = match carried.take() {
                Some(job) => job,
                None => match receiver.recv().await {
                    Some(job) => job,
                    None => return,
                },
            };
            let mut rows = first.rows.len();
            let mut jobs = vec![first];
            let mut yields = 0;
            while jobs.len() < BATCH_COMMANDS_MAX {
                // Only what is queued now: never wait to fill a batch.
                match receiver.try_recv() {
                    Ok(job) if rows + job.rows.len() <= BATCH_ROWS_MAX => {
                        rows += job.rows.len();
                        jobs.push(job);
                    }
                    Ok(job) => {
                        carried = Some(job);
                        break;
                    }
                    Err(_) if yields < YIELDS_PER_BATCH_MAX => {
                        // No timer: an idle shard pays one scheduler round trip.
                        yields += 1;
                        tokio::task::yield_now().await;
                    }
                    Err(_) => break,
                }
            }
            jobs
        };
        run_batch(&pool, jobs, &committed).await;
    }
}

async fn run_alone(pool: &PgPool, job: Job, committed: &Notify) {
    let result = insert(pool, &job.rows).await;
    if let Ok(path) = result {
        count_committed(1, job.rows.len(), path);
        committed.notify_one();
    }
    let _ = job.reply.send(result.map(drop));
}

async fn run_batch(pool: &PgPool, mut jobs: Vec<Job>, committed: &Notify) {
    if jobs.len() == 1 {
        for job in jobs {
            run_alone(pool, job, committed).await;
        }
        return;
    }
    // Streams in one order in every batch: two nodes' batches that meet on a
    // stream wait for each other instead of deadlocking (a job is one stream).
    fn stream(job: &Job) -> Option<(&str, &str)> {
        job.rows.first().map(|r| (r.aggregate_type.as_str(), r.aggregate_id.as_str()))
    }
    jobs.sort_by(|a, b| stream(a).cmp(&stream(b)));
    let rows: Vec<&SerializedEvent> = jobs.iter().flat_map(|j| j.rows.iter()).collect();
    match insert_refs(pool, &rows).await {
        Ok(path) => {
            count_committed(jobs.len(), rows.len(), path);
            committed.notify_one();
            for job in jobs {
                let _ = job.reply.send(Ok(()));
            }
        }
        Err(e) => {
            // Nothing of the batch was written: each command alone gets its own answer.
            debug!(commands = jobs.len(), error = %e, "batch failed, committing its commands one by one");
            for job in jobs {
                run_alone(pool, job, committed).await;
            }
        }
    }
}

async fn insert(pool: &PgPool, rows: &[SerializedEvent]) -> Result<Path, CommitError> {
    let refs: Vec<&SerializedEvent> = rows.iter().collect();
    insert_refs(pool, &refs).await
}

fn sequence_of(event: &SerializedEvent) -> Result<i64, CommitError> {
    // postgres-es 0.5.0 reads sequences as int4: never store one it cannot read back.
    i32::try_from(event.sequence)
        .map(i64::from)
        .map_err(|_| CommitError::Invalid("sequence beyond postgres-es's int4".into()))
}

async fn insert_refs(pool: &PgPool, rows: &[&SerializedEvent]) -> Result<Path, CommitError> {
    if rows.is_empty() {
        return Ok(Path::Trigger);
    }
    let sequences = rows.iter().map(|e| sequence_of(e)).collect::<Result<Vec<_>, _>>()?;
    let prepared = prepare(rows, &sequences);
    let path = if prepared.is_some() { Path::Prepared } else { Path::Trigger };
    let result = match prepared {
        Some(prepared) => {
            sqlx::query(INSERT_PREPARED_SQL)
                .bind(rows.iter().map(|e| e.aggregate_type.as_str()).collect::<Vec<_>>())
                .bind(rows.iter().map(|e| e.aggregate_id.as_str()).collect::<Vec<_>>())
                .bind(&sequences)
                .bind(rows.iter().map(|e| e.event_type.as_str()).collect::<Vec<_>>())
                .bind(rows.iter().map(|e| e.event_version.as_str()).collect::<Vec<_>>())
                .bind(rows.iter().map(|e| &e.payload).collect::<Vec<_>>())
                .bind(rows.iter().map(|e| &e.metadata).collect::<Vec<_>>())
                .bind(prepared.event_ids)
                .bind(prepared.recorded_at)
                .bind(prepared.canonical)
                .bind(prepared.keys.tenants)
                .bind(prepared.keys.keys)
                .bind(prepared.keys.request_hashes)
                .bind(prepared.keys.aggregate_types)
                .bind(prepared.keys.aggregate_ids)
                .bind(prepared.keys.first_sequences)
                .bind(prepared.keys.last_sequences)
                .execute(pool)
                .await
        }
        None => match rows {
            [one] => {
                sqlx::query(INSERT_ONE_SQL)
                    .bind(&one.aggregate_type)
                    .bind(&one.aggregate_id)
                    .bind(sequences[0])
                    .bind(&one.event_type)
                    .bind(&one.event_version)
                    .bind(&one.payload)
                    .bind(&one.metadata)
                    .execute(pool)
                    .await
            }
            many => {
                sqlx::query(INSERT_MANY_SQL)
                    .bind(many.iter().map(|e| e.aggregate_type.as_str()).collect::<Vec<_>>())
                    .bind(many.iter().map(|e| e.aggregate_id.as_str()).collect::<Vec<_>>())
                    .bind(&sequences)
                    .bind(many.iter().map(|e| e.event_type.as_str()).collect::<Vec<_>>())
                    .bind(many.iter().map(|e| e.event_version.as_str()).collect::<Vec<_>>())
                    .bind(many.iter().map(|e| &e.payload).collect::<Vec<_>>())
                    .bind(many.iter().map(|e| &e.metadata).collect::<Vec<_>>())
                    .execute(pool)
                    .await
            }
        },
    };
    match result {
        Ok(_) => Ok(path),
        // As postgres-es: a unique violation (sequence taken, or the idempotency key used) is a conflict.
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("23505") => Err(CommitError::Conflict),
        Err(e) => Err(CommitError::Sql(e)),
    }
}

/// The idempotency keys of a batch, one row per (tenant, key): what the trigger
/// writes for the same rows (the first row claims the key, the later rows of
/// the same stream extend its range).
#[derive(Debug, Default, PartialEq, Eq)]
struct KeyRows {
    tenants: Vec<String>,
    keys: Vec<String>,
    request_hashes: Vec<String>,
    aggregate_types: Vec<String>,
    aggregate_ids: Vec<String>,
    first_sequences: Vec<i64>,
    last_sequences: Vec<i64>,
}

/// The columns the committer computes for a batch (see the module's doc).
#[derive(Debug)]
struct Prepared {
    event_ids: Vec<Uuid>,
    recorded_at: Vec<DateTime<Utc>>,
    canonical: Vec<Vec<u8>>,
    keys: KeyRows,
}

/// A metadata value the trigger reads with `->>`: `Ok(None)` if absent or JSON
/// null (SQL NULL), `Err(())` if not a string (left to the trigger).
fn metadata_text<'a>(metadata: &'a Value, field: &str) -> Result<Option<&'a str>, ()> {
    match metadata.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(()),
    }
}

/// The chain fields, canonical bytes and key rows of `rows`, or `None` if any
/// row is one the trigger must handle (it then raises its own errors, or hashes
/// texts this process cannot render exactly).
fn prepare(rows: &[&SerializedEvent], sequences: &[i64]) -> Option<Prepared> {
    let mut prepared = Prepared {
        event_ids: Vec::with_capacity(rows.len()),
        recorded_at: Vec::with_capacity(rows.len()),
        canonical: Vec::with_capacity(rows.len()),
        keys: KeyRows::default(),
    };
    // (tenant, key) → its row in `prepared.keys`.
    let mut claimed: HashMap<(&str, &str), usize> = HashMap::new();
    for (row, &sequence) in rows.iter().zip(sequences) {
        let tenant = metadata_text(&row.metadata, "tenant_id").ok()?.filter(|t| !t.is_empty())?;
        let payload_text = jsonb_text::render(&row.payload)?;
        let metadata_text_rendered = jsonb_text::render(&row.metadata)?;
        // Postgres keeps microseconds: hash the time it will store.
        let recorded_at = DateTime::from_timestamp_micros(Utc::now().timestamp_micros())?;
        let event_id = Uuid::new_v4();
        prepared.canonical.push(hashchain::canonical_bytes_of(&CanonicalFields {
            tenant_id: tenant,
            aggregate_type: &row.aggregate_type,
            aggregate_id: &row.aggregate_id,
            sequence,
            event_id,
            recorded_at,
            event_type: &row.event_type,
            event_version: &row.event_version,
            payload_text: &payload_text,
            metadata_text: &metadata_text_rendered,
        }));
        prepared.event_ids.push(event_id);
        prepared.recorded_at.push(recorded_at);

        let Some(key) = metadata_text(&row.metadata, "idempotency_key").ok()? else {
            continue;
        };
        let request_hash = metadata_text(&row.metadata, "request_hash").ok()?.filter(|h| !h.is_empty())?;
        let keys = &mut prepared.keys;
        match claimed.get(&(tenant, key)) {
            Some(&at) => {
                // The trigger refuses a key spanning two streams: let it say so.
                if keys.aggregate_types[at] != row.aggregate_type || keys.aggregate_ids[at] != row.aggregate_id {
                    return None;
                }
                keys.last_sequences[at] = sequence;
            }
            None => {
                claimed.insert((tenant, key), keys.keys.len());
                keys.tenants.push(tenant.to_owned());
                keys.keys.push(key.to_owned());
                keys.request_hashes.push(request_hash.to_owned());
                keys.aggregate_types.push(row.aggregate_type.clone());
                keys.aggregate_ids.push(row.aggregate_id.clone());
                keys.first_sequences.push(sequence);
                keys.last_sequences.push(sequence);
            }
        }
    }
    Some(prepared)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(aggregate_id: &str, sequence: usize, payload: Value, metadata: Value) -> SerializedEvent {
        SerializedEvent {
            aggregate_id: aggregate_id.to_owned(),
            sequence,
            aggregate_type: "member".to_owned(),
            event_type: "CashDeposited".to_owned(),
            event_version: "1".to_owned(),
            payload,
            metadata,
        }
    }

    fn keyed(key: &str) -> Value {
        json!({"tenant_id": "t-1", "idempotency_key": key, "request_hash": "h"})
    }

    fn prepared(rows: &[SerializedEvent]) -> Option<Prepared> {
        let refs: Vec<&SerializedEvent> = rows.iter().collect();
        let sequences: Vec<i64> = rows.iter().map(|r| r.sequence as i64).collect();
        prepare(&refs, &sequences)
    }

    #[test]
    fn prepared_rows_carry_the_canonical_bytes_of_what_is_stored() {
        let rows = [row("m-1", 3, json!({"b": 1, "a": "小明"}), keyed("k-1"))];
        let prepared = prepared(&rows).expect("renderable");
        let stored = hashchain::StoredEvent {
            tenant_id: "t-1".into(),
            aggregate_type: "member".into(),
            aggregate_id: "m-1".into(),
            sequence: 3,
            event_id: prepared.event_ids[0],
            recorded_at: prepared.recorded_at[0],
            event_type: "CashDeposited".into(),
            event_version: "1".into(),
            payload_text: r#"{"a": "小明", "b": 1}"#.into(),
            metadata_text: r#"{"tenant_id": "t-1", "request_hash": "h", "idempotency_key": "k-1"}"#.into(),
            prev_hash: Vec::new(),
            hash: Vec::new(),
        };
        assert_eq!(prepared.canonical[0], hashchain::canonical_bytes(&stored));
        assert_eq!(prepared.recorded_at[0].timestamp_subsec_nanos() % 1_000, 0, "whole microseconds");
    }

    #[test]
    fn one_key_row_per_command_with_the_range_of_its_sequences() {
        let no_key = json!({"tenant_id": "t-1"});
        let rows = [
            row("a", 1, json!({}), keyed("ka")),
            row("a", 2, json!({}), keyed("ka")),
            row("a", 3, json!({}), keyed("ka")),
            row("b", 7, json!({}), keyed("kb")),
            row("c", 1, json!({}), no_key),
        ];
        let keys = prepared(&rows).expect("renderable").keys;
        assert_eq!(keys.keys, ["ka", "kb"]);
        assert_eq!(keys.aggregate_ids, ["a", "b"]);
        assert_eq!((keys.first_sequences, keys.last_sequences), (vec![1, 7], vec![3, 7]));
        assert_eq!(keys.request_hashes, ["h", "h"]);
    }

    #[test]
    fn batches_the_trigger_must_judge_are_not_prepared() {
        let cases = [
            ("a float", vec![row("a", 1, json!({"x": 0.5}), keyed("k"))]),
            ("no tenant", vec![row("a", 1, json!({}), json!({"idempotency_key": "k", "request_hash": "h"}))]),
            ("empty tenant", vec![row("a", 1, json!({}), json!({"tenant_id": ""}))]),
            ("tenant not a string", vec![row("a", 1, json!({}), json!({"tenant_id": 7}))]),
            (
                "key without request hash",
                vec![row("a", 1, json!({}), json!({"tenant_id": "t", "idempotency_key": "k"}))],
            ),
            (
                "empty request hash",
                vec![row("a", 1, json!({}), json!({"tenant_id": "t", "idempotency_key": "k", "request_hash": ""}))],
            ),
            ("key on two streams", vec![row("a", 1, json!({}), keyed("k")), row("b", 1, json!({}), keyed("k"))]),
            ("U+0000", vec![row("a", 1, json!({"s": "\u{0}"}), keyed("k"))]),
        ];
        for (case, rows) in cases {
            assert!(prepared(&rows).is_none(), "{case}");
        }
    }

    #[test]
    fn stats_of_an_interval_and_their_averages() {
        let before = CommitStats { statements: 10, commands: 30, rows: 40, prepared_rows: 30 };
        let after = CommitStats { statements: 14, commands: 58, rows: 68, prepared_rows: 50 };
        let interval = after.since(before);
        assert_eq!(interval, CommitStats { statements: 4, commands: 28, rows: 28, prepared_rows: 20 });
        assert_eq!(interval.rows_per_statement(), Some(7.0));
        assert_eq!(interval.commands_per_statement(), Some(7.0));
        assert_eq!(CommitStats::default().rows_per_statement(), None, "no statement, no average");
        assert_eq!(before.since(after), CommitStats::default(), "readings taken in the wrong order saturate");
    }
}
