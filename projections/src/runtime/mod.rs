//! The projector runtime: one durable JetStream pull consumer per (projector,
//! shard), explicit acks, one Postgres transaction per fetched batch (and per
//! message when a batch fails, to find and record the failing event).
//!
//! Why a read model never applies an event twice or out of order:
//! - Each projector keeps, per stream, the sequence of the last event applied
//!   (`projection_checkpoints`), updated in the same transaction as the read
//!   model. The row is locked (`FOR UPDATE`) first, so two instances handling
//!   the same stream serialize.
//! - An event at or below the checkpoint is a duplicate (a redelivery after a
//!   crash between commit and ack, or a republished copy): skipped and acked.
//! - An event beyond checkpoint + 1 (redelivery reorders when several
//!   messages are in flight, or a message was dropped) first applies the
//!   missing events from the shard's event store, in order.
//! - The message is acked only after the commit, with `double_ack` (which waits
//!   for the server); an unacked message is redelivered after `ack_wait`
//!   ([`ACK_WAIT_DEFAULT`]).
//! - A batch's streams are locked in id order and its counters written in
//!   key order at its end, so concurrent transactions never deadlock.
//!
//! Failures: the transaction rolls back and the message is nak'ed with a delay.
//! Every failure is recorded in `projection_dead_letters` (attempts, first and
//! last failure, error). At `deliveries_before_park` deliveries the event is
//! parked and acked; from then on every later event of that stream is parked
//! too (never applied out of order) until an operator retries the stream.
//! Other streams go on.
//!
//! Code map: `consume` (the pull consumer, bounded pulls, stall check, a
//! step), `batch` (a batch under its streams' checkpoints), `apply` (an event
//! under its checkpoint, gap filling),
//! `dead_letters` (failures, parking, retry); this file holds the contract,
//! the settings and reports, and the run loop.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::Context;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use tokio::sync::watch;
use tracing::warn;
use wxcm_commands::health::PartHealth;
use wxcm_commands::ports::ShardRouter;

use crate::daily::Counters;
use crate::envelope::RelayedEvent;

mod apply;
mod batch;
mod consume;
mod dead_letters;

/// How long JetStream waits for an ack before delivering a message again.
/// Short, because a delivery lost in flight (the connection dropped, every
/// server restarted) is only redelivered after it: with 30 s, the last events
/// of streams that saw nothing after them waited up to 30 s after a NATS
/// restart (the fault matrix measured 14–15 s of catch-up). A batch still being
/// applied when it passes is harmless: its redelivered copies are duplicates
/// under the checkpoints, skipped and acked.
pub const ACK_WAIT_DEFAULT: Duration = Duration::from_secs(5);
/// Unacknowledged messages per consumer. Above 1, redeliveries reorder (the
/// gap fill makes that harmless); bounded so a stuck projector holds little.
pub const ACK_PENDING_MAX: i64 = 256;
/// Deliveries of one message before it is parked.
pub const DELIVERIES_BEFORE_PARK_DEFAULT: i64 = 5;
/// JetStream stops redelivering after this many deliveries beyond the park
/// threshold (a message lost that way is filled from the event store when the
/// stream's next event arrives).
pub const DELIVERIES_AFTER_PARK_MAX: i64 = 5;
/// Events read from the event store per query when filling a gap.
pub const GAP_FILL_CHUNK: i64 = 500;
/// Longest gap filled in one transaction; a larger one needs a rebuild.
pub const GAP_FILL_EVENTS_MAX: i64 = 10_000;
/// Longest error text kept in a dead letter.
pub const ERROR_BYTES_MAX: usize = 2_000;
/// Messages fetched per step, at most.
pub const BATCH_MAX: usize = 500;
/// Streams of one fetched batch handled at the same time when the batch is
/// handled message by message (each holds a connection).
pub const STREAMS_IN_FLIGHT_MAX: usize = 8;
/// Acks awaited at the same time after a batch commits.
pub const ACKS_IN_FLIGHT_MAX: usize = 64;
/// Longest pause of `run` after failing steps.
pub const RETRY_PAUSE_MAX: Duration = Duration::from_secs(1);
/// Time a pull may take beyond its own wait. A pull the server forgot (it
/// restarted, or the connection dropped and came back) is never answered, so
/// without this bound the step would wait forever.
pub const PULL_GRACE: Duration = Duration::from_secs(2);
/// A projector that received nothing for this long is asked whether messages
/// wait for it; if some do, it is stalled. Short: after a whole JetStream
/// cluster restarts, a pull may go unanswered while messages wait, and the
/// lag grows for as long as this (one consumer-info request per projector
/// and shard this often while idle).
pub const STALL_AFTER: Duration = Duration::from_secs(3);
/// Longest a consumer-info request of the stall check may take.
const STALL_CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a leading projector checks that its lease session is alive.
pub const LEASE_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How often a standby tries to take the lease.
pub const LEASE_RETRY: Duration = Duration::from_secs(1);
/// A leading projector with more events than this waiting is not ready.
pub const PENDING_READY_MAX: u64 = 10_000;

/// Stalls detected per consumer since the process started (`/metrics`).
static STALLS: std::sync::Mutex<std::collections::BTreeMap<String, u64>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// Stalls detected (and recovered from by re-creating the pull) in this
/// process, per consumer name.
pub fn stalls_detected() -> Vec<(String, u64)> {
    let stalls = STALLS.lock().unwrap_or_else(|p| p.into_inner());
    stalls.iter().map(|(k, v)| (k.clone(), *v)).collect()
}

fn count_stall(consumer: &str) {
    let mut stalls = STALLS.lock().unwrap_or_else(|p| p.into_inner());
    // Bounded: one entry per configured projector and shard.
    *stalls.entry(consumer.to_owned()).or_insert(0) += 1;
}

/// What a projector does with one event, inside the runtime's transaction.
pub trait Projector: Send + Sync + 'static {
    /// Consumer and checkpoint name: `[a-z0-9_]`, stable.
    fn name(&self) -> &'static str;
    /// The one aggregate type this projector reads (the consumer filters on it).
    fn aggregate_type(&self) -> &'static str;
    /// Applies `event` to the read model on `conn` (a transaction) and adds
    /// what it counts to `counters` (written by the caller before the
    /// transaction commits). Called at most once per event and stream
    /// position, in sequence order.
    fn apply(
        &self,
        conn: &mut PgConnection,
        event: &RelayedEvent,
        counters: &mut Counters,
    ) -> impl Future<Output = Result<(), ApplyError>> + Send;
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("read model database")]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("projection database")]
    Database(#[from] sqlx::Error),
    #[error("applying {stream} seq {sequence}")]
    Apply {
        stream: String,
        sequence: i64,
        #[source]
        source: ApplyError,
    },
    #[error("{stream}: events {from}..={to} are missing from the event store")]
    Gap { stream: String, from: i64, to: i64 },
    #[error("jetstream: {0}")]
    Nats(String),
    #[error("projector invariant broken: {0}")]
    Invariant(String),
}

fn nats_error(e: impl std::fmt::Display) -> ProjectionError {
    ProjectionError::Nats(e.to_string())
}

/// Where the runtime reads and how patient it is.
#[derive(Debug, Clone)]
pub struct ProjectorSettings {
    /// The JetStream stream of relayed events (`infra::relay::stream_name`).
    pub stream: String,
    /// `{prefix}.events.*.{aggregate_type}` (`infra::relay::event_subject`).
    pub filter_subject: String,
    pub ack_wait: Duration,
    /// Redelivery delay after a failure.
    pub nak_delay: Duration,
    pub deliveries_before_park: i64,
    pub max_ack_pending: i64,
    pub batch_max: usize,
    /// How long a step waits for messages.
    pub fetch_wait: Duration,
}

impl ProjectorSettings {
    pub fn new(stream: String, filter_subject: String) -> Self {
        Self {
            stream,
            filter_subject,
            ack_wait: ACK_WAIT_DEFAULT,
            nak_delay: Duration::from_secs(2),
            deliveries_before_park: DELIVERIES_BEFORE_PARK_DEFAULT,
            max_ack_pending: ACK_PENDING_MAX,
            batch_max: 100,
            fetch_wait: Duration::from_secs(1),
        }
    }
}

/// What one message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Applied, after `filled` missing earlier events from the event store.
    Applied { filled: usize },
    /// At or below the checkpoint: nothing to do.
    Duplicate,
    /// Its stream is parked: recorded as a dead letter, not applied.
    Parked,
}

/// One step.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchReport {
    pub received: usize,
    pub applied: usize,
    /// Earlier events applied from the event store before a message.
    pub filled: usize,
    pub duplicates: usize,
    /// Parked now (this delivery reached the limit, or the stream was parked).
    pub parked: usize,
    /// Failed and nak'ed for redelivery.
    pub failed: usize,
    /// Of another shard's tenant, or not an event of this projector: acked.
    pub ignored: usize,
    /// Messages the consumer still had to deliver after the last one received
    /// (as JetStream stated with it); `None` when nothing was received.
    pub pending_after: Option<u64>,
}

impl BatchReport {
    fn add(&mut self, other: &BatchReport) {
        self.received += other.received;
        self.applied += other.applied;
        self.filled += other.filled;
        self.duplicates += other.duplicates;
        self.parked += other.parked;
        self.failed += other.failed;
        self.ignored += other.ignored;
        self.pending_after = match (self.pending_after, other.pending_after) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

/// Lag of one projector on one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectorStatus {
    pub projector: String,
    pub shard: String,
    pub consumer: String,
    /// Messages of the stream the consumer has not delivered yet.
    pub num_pending: u64,
    /// Delivered, not yet acked.
    pub num_ack_pending: usize,
    /// recorded_at of the newest event applied, and its age now.
    pub last_recorded_at: Option<DateTime<Utc>>,
    pub last_event_age_ms: Option<i64>,
    /// Parked events (their streams wait for an operator).
    pub parked: i64,
}

/// One projector on one shard. `run_batch` is the step function tests drive.
pub struct ProjectorRuntime<P: Projector> {
    projector: P,
    shard: String,
    pool: PgPool,
    router: Arc<dyn ShardRouter>,
    js: Context,
    settings: ProjectorSettings,
    consumer: Option<PullConsumer>,
    /// The session holding this projector's lease on the shard (see `lease`).
    lease: Option<PgConnection>,
    lease_checked_at: Option<tokio::time::Instant>,
    health: Option<PartHealth>,
}

const ENSURE_CHECKPOINT: &str =
    "INSERT INTO projection_checkpoints (projector, aggregate_type, aggregate_id, tenant_id, sequence)
     VALUES ($1, $2, $3, $4, 0) ON CONFLICT DO NOTHING";
const LOCK_CHECKPOINT: &str = "SELECT sequence FROM projection_checkpoints
     WHERE projector = $1 AND aggregate_type = $2 AND aggregate_id = $3 FOR UPDATE";
const SET_CHECKPOINT: &str = "UPDATE projection_checkpoints
     SET sequence = $4, event_id = $5, recorded_at = $6, updated_at = now()
     WHERE projector = $1 AND aggregate_type = $2 AND aggregate_id = $3";
const STREAM_PARKED: &str = "SELECT EXISTS (SELECT 1 FROM projection_dead_letters
     WHERE projector = $1 AND aggregate_type = $2 AND aggregate_id = $3 AND parked_at IS NOT NULL)";
/// A failure (parked or not); repeated failures of one event update its row.
const RECORD_FAILURE: &str = "INSERT INTO projection_dead_letters
     (projector, event_id, tenant_id, aggregate_type, aggregate_id, sequence, error, attempts, parked_at, event)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, CASE WHEN $9 THEN now() END, $10)
     ON CONFLICT (projector, event_id) DO UPDATE
        SET error = EXCLUDED.error,
            attempts = GREATEST(projection_dead_letters.attempts + 1, EXCLUDED.attempts),
            last_failed_at = now(),
            parked_at = COALESCE(projection_dead_letters.parked_at, EXCLUDED.parked_at)";
const LAST_PARKED: &str = "SELECT max(sequence), max(tenant_id) FROM projection_dead_letters
     WHERE projector = $1 AND aggregate_type = $2 AND aggregate_id = $3 AND parked_at IS NOT NULL";
const CLEAR_STREAM_LETTERS: &str = "DELETE FROM projection_dead_letters
     WHERE projector = $1 AND aggregate_type = $2 AND aggregate_id = $3 AND sequence <= $4";
const CLEAR_FAILURES: &str = "DELETE FROM projection_dead_letters
     WHERE projector = $1 AND aggregate_type = $2 AND aggregate_id = $3 AND sequence <= $4 AND parked_at IS NULL";

impl<P: Projector> ProjectorRuntime<P> {
    pub fn new(
        projector: P,
        shard: impl Into<String>,
        pool: PgPool,
        router: Arc<dyn ShardRouter>,
        js: Context,
        settings: ProjectorSettings,
    ) -> Self {
        Self {
            projector,
            shard: shard.into(),
            pool,
            router,
            js,
            settings,
            consumer: None,
            lease: None,
            lease_checked_at: None,
            health: None,
        }
    }

    /// Reports every step of `run` to `health`.
    pub fn with_health(mut self, health: PartHealth) -> Self {
        self.health = Some(health);
        self
    }

    fn report(&self, f: impl FnOnce(&PartHealth)) {
        if let Some(health) = &self.health {
            f(health);
        }
    }

    pub fn shard_name(&self) -> &str {
        &self.shard
    }

    pub fn projector_name(&self) -> &'static str {
        self.projector.name()
    }

    /// `{projector}_{shard}`, with characters a consumer name cannot hold replaced.
    pub fn consumer_name(&self) -> String {
        let raw = format!("{}_{}", self.projector.name(), self.shard);
        raw.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect()
    }

    /// Pending messages of the consumer and the age of the newest applied event.
    pub async fn status(&mut self) -> Result<ProjectorStatus, ProjectionError> {
        let name = self.projector.name();
        let (last_recorded_at, parked): (Option<DateTime<Utc>>, i64) = sqlx::query_as(
            "SELECT (SELECT max(recorded_at) FROM projection_checkpoints WHERE projector = $1),
                    (SELECT count(*) FROM projection_dead_letters WHERE projector = $1 AND parked_at IS NOT NULL)",
        )
        .bind(name)
        .fetch_one(&self.pool)
        .await?;
        let consumer_name = self.consumer_name();
        let shard = self.shard.clone();
        let info = self.consumer().await?.info().await.map_err(nats_error)?;
        Ok(ProjectorStatus {
            projector: name.to_owned(),
            shard,
            consumer: consumer_name,
            num_pending: info.num_pending,
            num_ack_pending: info.num_ack_pending,
            last_recorded_at,
            last_event_age_ms: last_recorded_at.map(|t| (Utc::now() - t).num_milliseconds()),
            parked,
        })
    }

    /// Steps until `shutdown` turns true, backing off after failures. Only the
    /// holder of the lease (one per projector and shard across all nodes)
    /// consumes; the others stand by and take over when its session ends.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut failures: u32 = 0;
        let mut last_received = tokio::time::Instant::now();
        loop {
            let leading = tokio::select! {
                leading = self.keep_lease() => leading,
                _ = shutdown.changed() => break,
            };
            match leading {
                Ok(true) => {}
                Ok(false) => {
                    self.report(|h| h.healthy(Some(false), "standby: another node consumes"));
                    tokio::select! {
                        _ = tokio::time::sleep(LEASE_RETRY) => continue,
                        _ = shutdown.changed() => break,
                    }
                }
                Err(e) => {
                    let text = error_chain(&e);
                    warn!(projector = self.projector.name(), shard = %self.shard, error = %text, "projector lease failed");
                    self.report(|h| h.failing(None, &format!("lease: {text}")));
                    tokio::select! {
                        _ = tokio::time::sleep(LEASE_RETRY) => continue,
                        _ = shutdown.changed() => break,
                    }
                }
            }
            // Cancelling a step is safe: an uncommitted transaction rolls back and an
            // unacked message is redelivered (a committed one is then a duplicate).
            let step = tokio::select! {
                step = self.run_batch(self.settings.batch_max, self.settings.fetch_wait) => step,
                _ = shutdown.changed() => break,
            };
            let pause = match step {
                Ok(report) => {
                    failures = 0;
                    if report.received > 0 {
                        last_received = tokio::time::Instant::now();
                        match report.pending_after {
                            Some(pending) if pending > PENDING_READY_MAX => self.report(|h| {
                                h.failing(Some(true), &format!("lagging: {pending} events wait for this projector"))
                            }),
                            _ => self.report(|h| h.healthy(Some(true), "leader: consuming")),
                        }
                    } else if last_received.elapsed() >= STALL_AFTER {
                        // Quiet for a while: quiet stream, or a stuck pull?
                        if self.stalled().await {
                            self.report(|h| {
                                h.failing(Some(true), "stalled: events wait but none arrived; pull re-created")
                            });
                        } else {
                            self.report(|h| h.healthy(Some(true), "leader: idle"));
                        }
                        last_received = tokio::time::Instant::now();
                    } else {
                        self.report(|h| h.alive());
                    }
                    Duration::ZERO
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let text = error_chain(&e);
                    warn!(projector = self.projector.name(), shard = %self.shard, error = %text, failures, "projector step failed");
                    self.report(|h| h.failing(Some(true), &text));
                    Duration::from_millis(100)
                        .saturating_mul(2u32.saturating_pow(failures.min(16)))
                        .min(RETRY_PAUSE_MAX)
                }
            };
            if *shutdown.borrow() {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.changed() => break,
            }
        }
        self.resign().await;
    }

    /// Keeps or tries to take the lease: a session-level advisory lock on the
    /// shard's database, keyed by the consumer name, held on a connection taken
    /// out of the pool. Two nodes consuming one shard's projector would fight
    /// over the same checkpoint and counter rows (lock waits, deadlocks);
    /// with the lease only one does. A lease whose session died is given up
    /// (another node may hold it now) and the consumer handle with it.
    async fn keep_lease(&mut self) -> Result<bool, ProjectionError> {
        if let Some(conn) = self.lease.as_mut() {
            let due = self.lease_checked_at.is_none_or(|at| at.elapsed() >= LEASE_CHECK_INTERVAL);
            if !due {
                return Ok(true);
            }
            match sqlx::query("SELECT 1").execute(&mut *conn).await {
                Ok(_) => {
                    self.lease_checked_at = Some(tokio::time::Instant::now());
                    return Ok(true);
                }
                Err(e) => {
                    warn!(projector = self.projector.name(), shard = %self.shard, error = %e, "projector lost its lease session");
                    self.lease = None;
                    self.consumer = None;
                }
            }
        }
        let mut conn = self.pool.acquire().await?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
            .bind(format!("wxcm_projector/{}", self.consumer_name()))
            .fetch_one(&mut *conn)
            .await?;
        if !got {
            return Ok(false);
        }
        tracing::info!(projector = self.projector.name(), shard = %self.shard, "projector is leader");
        // Detached: the session must never go back to the pool holding the lock;
        // closing it releases the lock.
        self.lease = Some(conn.detach());
        self.lease_checked_at = Some(tokio::time::Instant::now());
        Ok(true)
    }

    /// Gives up the lease (closing the session releases the lock).
    async fn resign(&mut self) {
        if let Some(conn) = self.lease.take() {
            use sqlx::Connection;
            let _ = conn.close().await;
        }
    }
}

/// `error: cause: cause …`, for logs and dead letters.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
