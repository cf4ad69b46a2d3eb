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
//! No waiting to fill a batch: a worker takes whatever is queued when it is
//! free, after letting runnable tasks queue theirs (one yield, no timer).
//! Idle, a command goes alone at once; busy, commands queue behind the batches
//! in flight and leave together.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use cqrs_es::persist::SerializedEvent;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot, Mutex, Notify};
use tracing::debug;
use wxcm_commands::lanes::{AppendError, EventAppender};

/// Batches in flight at once per shard: one fills while the other waits for its
/// flush. Measured on 2 cores (`wxcm bench ledger`): 2 beat 1, 3 and 4; more
/// workers only make smaller batches.
pub const WORKERS: usize = 2;
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
}

impl CommitStats {
    /// What was written after `earlier` (a reading taken before this one).
    pub fn since(self, earlier: CommitStats) -> CommitStats {
        CommitStats {
            statements: self.statements.saturating_sub(earlier.statements),
            commands: self.commands.saturating_sub(earlier.commands),
            rows: self.rows.saturating_sub(earlier.rows),
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

/// The totals of every group committer in this process so far.
pub fn stats() -> CommitStats {
    CommitStats {
        statements: STATEMENTS.load(Ordering::Relaxed),
        commands: COMMANDS.load(Ordering::Relaxed),
        rows: ROWS.load(Ordering::Relaxed),
    }
}

fn count_committed(commands: usize, rows: usize) {
    STATEMENTS.fetch_add(1, Ordering::Relaxed);
    COMMANDS.fetch_add(commands as u64, Ordering::Relaxed);
    ROWS.fetch_add(rows as u64, Ordering::Relaxed);
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
    /// Started on first use, inside the runtime that uses it.
    sender: OnceLock<mpsc::Sender<Job>>,
    committed: Arc<Notify>,
}

impl GroupCommitter {
    pub fn new(pool: PgPool) -> Self {
        Self { pool, sender: OnceLock::new(), committed: Arc::new(Notify::new()) }
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
            for _ in 0..WORKERS {
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
    if result.is_ok() {
        count_committed(1, job.rows.len());
        committed.notify_one();
    }
    let _ = job.reply.send(result);
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
        Ok(()) => {
            count_committed(jobs.len(), rows.len());
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

async fn insert(pool: &PgPool, rows: &[SerializedEvent]) -> Result<(), CommitError> {
    let refs: Vec<&SerializedEvent> = rows.iter().collect();
    insert_refs(pool, &refs).await
}

fn sequence_of(event: &SerializedEvent) -> Result<i64, CommitError> {
    // postgres-es 0.5.0 reads sequences as int4: never store one it cannot read back.
    i32::try_from(event.sequence)
        .map(i64::from)
        .map_err(|_| CommitError::Invalid("sequence beyond postgres-es's int4".into()))
}

async fn insert_refs(pool: &PgPool, rows: &[&SerializedEvent]) -> Result<(), CommitError> {
    let result = match rows {
        [] => return Ok(()),
        [one] => {
            sqlx::query(INSERT_ONE_SQL)
                .bind(&one.aggregate_type)
                .bind(&one.aggregate_id)
                .bind(sequence_of(one)?)
                .bind(&one.event_type)
                .bind(&one.event_version)
                .bind(&one.payload)
                .bind(&one.metadata)
                .execute(pool)
                .await
        }
        many => {
            let sequences = many.iter().map(|e| sequence_of(e)).collect::<Result<Vec<_>, _>>()?;
            sqlx::query(INSERT_MANY_SQL)
                .bind(many.iter().map(|e| e.aggregate_type.as_str()).collect::<Vec<_>>())
                .bind(many.iter().map(|e| e.aggregate_id.as_str()).collect::<Vec<_>>())
                .bind(sequences)
                .bind(many.iter().map(|e| e.event_type.as_str()).collect::<Vec<_>>())
                .bind(many.iter().map(|e| e.event_version.as_str()).collect::<Vec<_>>())
                .bind(many.iter().map(|e| &e.payload).collect::<Vec<_>>())
                .bind(many.iter().map(|e| &e.metadata).collect::<Vec<_>>())
                .execute(pool)
                .await
        }
    };
    match result {
        Ok(_) => Ok(()),
        // As postgres-es: a unique violation (sequence taken, or the idempotency key used) is a conflict.
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("23505") => Err(CommitError::Conflict),
        Err(e) => Err(CommitError::Sql(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_of_an_interval_and_their_averages() {
        let before = CommitStats { statements: 10, commands: 30, rows: 40 };
        let after = CommitStats { statements: 14, commands: 58, rows: 68 };
        let interval = after.since(before);
        assert_eq!(interval, CommitStats { statements: 4, commands: 28, rows: 28 });
        assert_eq!(interval.rows_per_statement(), Some(7.0));
        assert_eq!(interval.commands_per_statement(), Some(7.0));
        assert_eq!(CommitStats::default().rows_per_statement(), None, "no statement, no average");
        assert_eq!(before.since(after), CommitStats::default(), "readings taken in the wrong order saturate");
    }
}
