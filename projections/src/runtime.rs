//! The projector runtime: one durable JetStream pull consumer per (projector,
//! shard), explicit acks, one Postgres transaction per message.
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
//!   for the server); an unacked message is redelivered after `ack_wait`.
//!
//! Failures: the transaction rolls back and the message is nak'ed with a delay.
//! Every failure is recorded in `projection_dead_letters` (attempts, first and
//! last failure, error). At `deliveries_before_park` deliveries the event is
//! parked and acked; from then on every later event of that stream is parked
//! too (never applied out of order) until an operator retries the stream.
//! Other streams go on.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::pull::Config as PullConfig;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::{Context, Message};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use sqlx::{PgConnection, PgPool};
use tokio::sync::watch;
use tracing::{debug, instrument, warn};
use wxcm_commands::ports::ShardRouter;
use wxcm_domain::TenantId;

use crate::envelope::{load_events, RelayedEvent};

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
/// Streams of one fetched batch handled at the same time (each holds a connection).
pub const STREAMS_IN_FLIGHT_MAX: usize = 8;
/// Longest pause of `run` after failing steps.
pub const RETRY_PAUSE_MAX: Duration = Duration::from_secs(5);
/// Time a pull may take beyond its own wait. A pull the server forgot (it
/// restarted, or the connection dropped and came back) is never answered, so
/// without this bound the step would wait forever.
pub const PULL_GRACE: Duration = Duration::from_secs(5);
/// A projector that received nothing for this long is asked whether messages
/// wait for it; if some do, it is stalled.
pub const STALL_AFTER: Duration = Duration::from_secs(10);
/// Longest a consumer-info request of the stall check may take.
const STALL_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// Applies `event` to the read model on `conn` (a transaction). Called at
    /// most once per event and stream position, in sequence order.
    fn apply(
        &self,
        conn: &mut PgConnection,
        event: &RelayedEvent,
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
            ack_wait: Duration::from_secs(30),
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
        Self { projector, shard: shard.into(), pool, router, js, settings, consumer: None }
    }

    /// `{projector}_{shard}`, with characters a consumer name cannot hold replaced.
    pub fn consumer_name(&self) -> String {
        let raw = format!("{}_{}", self.projector.name(), self.shard);
        raw.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect()
    }

    async fn consumer(&mut self) -> Result<&mut PullConsumer, ProjectionError> {
        if self.consumer.is_none() {
            let name = self.consumer_name();
            let stream = self.js.get_stream(&self.settings.stream).await.map_err(nats_error)?;
            let config = PullConfig {
                durable_name: Some(name.clone()),
                description: Some(format!("wxcm projector {} on shard {}", self.projector.name(), self.shard)),
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::Explicit,
                ack_wait: self.settings.ack_wait,
                max_deliver: self.settings.deliveries_before_park + DELIVERIES_AFTER_PARK_MAX,
                max_ack_pending: self.settings.max_ack_pending.clamp(1, ACK_PENDING_MAX),
                filter_subject: self.settings.filter_subject.clone(),
                ..Default::default()
            };
            let consumer: PullConsumer = stream.get_or_create_consumer(&name, config).await.map_err(nats_error)?;
            self.consumer = Some(consumer);
        }
        self.consumer.as_mut().ok_or_else(|| ProjectionError::Nats("no consumer".into()))
    }

    /// Up to `max` messages: those available now (`wait` None), or the first
    /// `max` to arrive within `wait`. Never takes longer than `wait` plus
    /// [`PULL_GRACE`]: past that the pull is abandoned (messages received so
    /// far are kept) and the consumer handle is made anew on the next step.
    async fn pull(&mut self, max: usize, wait: Option<Duration>) -> Result<Vec<Message>, ProjectionError> {
        let deadline = tokio::time::Instant::now() + wait.unwrap_or(Duration::ZERO) + PULL_GRACE;
        let consumer = self.consumer().await?;
        let request = async {
            match wait {
                None => consumer.fetch().max_messages(max).messages().await,
                Some(wait) => consumer.batch().max_messages(max).expires(wait).messages().await,
            }
        };
        let mut messages = match tokio::time::timeout_at(deadline, request).await {
            Ok(Ok(messages)) => messages,
            Ok(Err(e)) => {
                // The consumer or stream may be gone: look it up again next time.
                self.consumer = None;
                return Err(nats_error(e));
            }
            Err(_) => {
                self.consumer = None;
                return Err(ProjectionError::Nats("pull request not answered in time".into()));
            }
        };
        let mut out = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, messages.next()).await {
                Ok(Some(Ok(message))) => out.push(message),
                Ok(Some(Err(e))) => {
                    self.consumer = None;
                    if out.is_empty() {
                        return Err(nats_error(e));
                    }
                    warn!(projector = self.projector.name(), shard = %self.shard, error = %e, "pull ended early");
                    break;
                }
                Ok(None) => break,
                Err(_) => {
                    // The server never ended this pull: it forgot it. Keep what came.
                    warn!(projector = self.projector.name(), shard = %self.shard, received = out.len(),
                        "pull not ended by the server in time; re-creating the consumer handle");
                    self.consumer = None;
                    break;
                }
            }
        }
        Ok(out)
    }

    /// True when messages wait for this consumer (pending or unacked) although
    /// it received none lately: its pull is stuck. The consumer handle is then
    /// dropped so that the next step creates a new one (and a new pull).
    async fn stalled(&mut self) -> bool {
        let info = match self.consumer().await {
            Ok(consumer) => tokio::time::timeout(STALL_CHECK_TIMEOUT, consumer.info()).await,
            Err(e) => {
                debug!(error = %e, "stall check: no consumer");
                return false;
            }
        };
        let waiting = match info {
            Ok(Ok(info)) => info.num_pending > 0 || info.num_ack_pending > 0,
            Ok(Err(e)) => {
                debug!(error = %e, "stall check: consumer info failed");
                self.consumer = None;
                return false;
            }
            Err(_) => {
                self.consumer = None;
                return false;
            }
        };
        if waiting {
            let name = self.consumer_name();
            count_stall(&name);
            warn!(projector = self.projector.name(), shard = %self.shard, consumer = %name,
                "projector stalled: messages wait but none arrived; re-creating the pull");
            self.consumer = None;
        }
        waiting
    }

    /// Fetches up to `max` messages (waiting at most `wait`) and handles each.
    #[instrument(skip_all, fields(projector = self.projector.name(), shard = %self.shard))]
    pub async fn run_batch(&mut self, max: usize, wait: Duration) -> Result<BatchReport, ProjectionError> {
        let max = max.clamp(1, BATCH_MAX);
        // What is already waiting, at once; else wait for one message, then take
        // whatever came with it. A pull of `max` with a wait would hold the first
        // message until `max` arrived or the wait ran out (latency for nothing).
        let mut fetched_messages = self.pull(max, None).await?;
        if fetched_messages.is_empty() {
            fetched_messages = self.pull(1, Some(wait)).await?;
            if !fetched_messages.is_empty() && max > 1 {
                let more = self.pull(max - 1, None).await?;
                fetched_messages.extend(more);
            }
        }
        // Streams are independent: their messages are handled concurrently (each
        // in its own transaction, so Postgres commits them as a group), while the
        // messages of one stream keep their order.
        let mut groups: Vec<(String, Vec<Message>)> = Vec::new();
        for message in fetched_messages {
            let key = serde_json::from_slice::<RelayedEvent>(&message.payload)
                .map(|e| stream_key(&e))
                .unwrap_or_else(|_| format!("undecodable/{}", groups.len()));
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, group)) => group.push(message),
                None => groups.push((key, vec![message])),
            }
        }
        let this = &*self;
        let reports: Vec<Result<BatchReport, ProjectionError>> = futures::stream::iter(groups)
            .map(|(_, group)| async move {
                let mut report = BatchReport::default();
                for message in group {
                    report.received += 1;
                    this.handle(&message, &mut report).await?;
                }
                Ok(report)
            })
            .buffer_unordered(STREAMS_IN_FLIGHT_MAX)
            .collect()
            .await;
        let mut report = BatchReport::default();
        for r in reports {
            report.add(&r?);
        }
        if report.received > 0 {
            debug!(?report, "projected batch");
        }
        Ok(report)
    }

    /// Handles one message and acks or naks it. Errors are JetStream's (the
    /// ack or nak failed); the message is then redelivered.
    async fn handle(&self, message: &Message, report: &mut BatchReport) -> Result<(), ProjectionError> {
        let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
        let event: RelayedEvent = match serde_json::from_slice(&message.payload) {
            Ok(event) => event,
            Err(e) => {
                // Without an envelope there is no stream to park; nothing will change
                // on redelivery. Logged and terminated.
                warn!(subject = %message.subject, error = %e, "message is not a relayed event; terminated");
                message.ack_with(AckKind::Term).await.map_err(nats_error)?;
                report.ignored += 1;
                return Ok(());
            }
        };
        if event.aggregate_type != self.projector.aggregate_type() || !self.owns(&event.tenant_id) {
            message.double_ack().await.map_err(nats_error)?;
            report.ignored += 1;
            return Ok(());
        }
        match self.project(&event).await {
            Ok(outcome) => {
                message.double_ack().await.map_err(nats_error)?;
                match outcome {
                    Outcome::Applied { filled } => {
                        report.applied += 1;
                        report.filled += filled;
                    }
                    Outcome::Duplicate => report.duplicates += 1,
                    Outcome::Parked => report.parked += 1,
                }
            }
            Err(error) => {
                let park = delivered >= self.settings.deliveries_before_park;
                let text = error_chain(&error);
                warn!(
                    stream = %stream_key(&event),
                    sequence = event.sequence,
                    delivered,
                    park,
                    error = %text,
                    "projection failed"
                );
                // If even recording fails, the nak below still gets it redelivered.
                if let Err(e) = self.record_failure(&event, &text, delivered, park).await {
                    warn!(error = %error_chain(&e), "cannot record the projection failure");
                    message.ack_with(AckKind::Nak(Some(self.settings.nak_delay))).await.map_err(nats_error)?;
                    report.failed += 1;
                } else if park {
                    message.double_ack().await.map_err(nats_error)?;
                    report.parked += 1;
                } else {
                    message.ack_with(AckKind::Nak(Some(self.settings.nak_delay))).await.map_err(nats_error)?;
                    report.failed += 1;
                }
            }
        }
        Ok(())
    }

    fn owns(&self, tenant: &str) -> bool {
        let Ok(tenant) = TenantId::parse(tenant) else {
            warn!(tenant, "event of an invalid tenant id ignored");
            return false;
        };
        self.router.route(&tenant).map(|s| s.name == self.shard).unwrap_or(false)
    }

    /// Applies `event` (after any missing predecessors) and moves the
    /// checkpoint, in one transaction. Does not touch JetStream: a caller that
    /// stops between this and the ack leaves a duplicate, which is skipped.
    pub async fn project(&self, event: &RelayedEvent) -> Result<Outcome, ProjectionError> {
        let name = self.projector.name();
        let mut tx = self.pool.begin().await?;
        sqlx::query(ENSURE_CHECKPOINT)
            .bind(name)
            .bind(&event.aggregate_type)
            .bind(&event.aggregate_id)
            .bind(&event.tenant_id)
            .execute(&mut *tx)
            .await?;
        let checkpoint: i64 = sqlx::query_scalar(LOCK_CHECKPOINT)
            .bind(name)
            .bind(&event.aggregate_type)
            .bind(&event.aggregate_id)
            .fetch_one(&mut *tx)
            .await?;
        if event.sequence <= checkpoint {
            tx.commit().await?;
            return Ok(Outcome::Duplicate);
        }
        let parked: bool = sqlx::query_scalar(STREAM_PARKED)
            .bind(name)
            .bind(&event.aggregate_type)
            .bind(&event.aggregate_id)
            .fetch_one(&mut *tx)
            .await?;
        if parked {
            tx.rollback().await?;
            self.record_failure(event, "an earlier event of this stream is parked", 1, true).await?;
            return Ok(Outcome::Parked);
        }
        let filled = self.fill_gap(&mut tx, event, checkpoint).await?;
        self.apply_one(&mut tx, event).await?;
        sqlx::query(CLEAR_FAILURES)
            .bind(name)
            .bind(&event.aggregate_type)
            .bind(&event.aggregate_id)
            .bind(event.sequence)
            .execute(&mut *tx)
            .await?;
        sqlx::query(SET_CHECKPOINT)
            .bind(name)
            .bind(&event.aggregate_type)
            .bind(&event.aggregate_id)
            .bind(event.sequence)
            .bind(event.event_id)
            .bind(event.recorded_at_utc())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Outcome::Applied { filled })
    }

    /// Applies events `checkpoint+1 .. event.sequence-1` from the event store.
    async fn fill_gap(
        &self,
        conn: &mut PgConnection,
        event: &RelayedEvent,
        checkpoint: i64,
    ) -> Result<usize, ProjectionError> {
        let (first, last) = (checkpoint + 1, event.sequence - 1);
        if first > last {
            return Ok(0);
        }
        let last_applied = self.apply_stored(conn, &event.aggregate_type, &event.aggregate_id, first, last).await?;
        // One stream, one tenant (the insert trigger refuses a change): a different
        // tenant means the message does not describe this shard's stream.
        if last_applied.is_some_and(|e| e.tenant_id != event.tenant_id) {
            return Err(ProjectionError::Gap { stream: stream_key(event), from: first, to: last });
        }
        debug!(stream = %stream_key(event), from = first, to = last, "filled a gap from the event store");
        Ok(usize::try_from(last - first + 1).unwrap_or(usize::MAX))
    }

    /// Applies events `first..=last` of one stream from the event store, in
    /// order; all of them must exist. Returns the last one applied (`None` when
    /// the range is empty).
    async fn apply_stored(
        &self,
        conn: &mut PgConnection,
        aggregate_type: &str,
        aggregate_id: &str,
        first: i64,
        last: i64,
    ) -> Result<Option<RelayedEvent>, ProjectionError> {
        let gap = || ProjectionError::Gap { stream: format!("{aggregate_type}/{aggregate_id}"), from: first, to: last };
        if last - first + 1 > GAP_FILL_EVENTS_MAX {
            return Err(gap());
        }
        let mut next = first;
        let mut last_applied = None;
        while next <= last {
            let to = (next + GAP_FILL_CHUNK - 1).min(last);
            let events = load_events(conn, aggregate_type, aggregate_id, next, to).await?;
            for stored in events {
                // The store has no holes: anything else is refused.
                if stored.sequence != next {
                    return Err(gap());
                }
                self.apply_one(conn, &stored).await?;
                next += 1;
                last_applied = Some(stored);
            }
            if next <= to {
                return Err(gap());
            }
        }
        Ok(last_applied)
    }

    /// The operator's retry of a parked stream: applies the stream's events from
    /// the checkpoint up to its last parked event from the event store, moves the
    /// checkpoint and removes the stream's dead letters, in one transaction. On
    /// failure nothing changes. Returns the number of events applied (0 when the
    /// stream is not parked). Later events arriving from JetStream then apply
    /// normally (a gap, if any, is filled).
    #[instrument(skip_all, fields(projector = self.projector.name(), stream = %format!("{aggregate_type}/{aggregate_id}")))]
    pub async fn retry_parked(&self, aggregate_type: &str, aggregate_id: &str) -> Result<usize, ProjectionError> {
        let name = self.projector.name();
        let mut tx = self.pool.begin().await?;
        let (last_parked, tenant_id): (Option<i64>, Option<String>) =
            sqlx::query_as(LAST_PARKED).bind(name).bind(aggregate_type).bind(aggregate_id).fetch_one(&mut *tx).await?;
        let (Some(last_parked), Some(tenant_id)) = (last_parked, tenant_id) else {
            return Ok(0);
        };
        sqlx::query(ENSURE_CHECKPOINT)
            .bind(name)
            .bind(aggregate_type)
            .bind(aggregate_id)
            .bind(&tenant_id)
            .execute(&mut *tx)
            .await?;
        let checkpoint: i64 = sqlx::query_scalar(LOCK_CHECKPOINT)
            .bind(name)
            .bind(aggregate_type)
            .bind(aggregate_id)
            .fetch_one(&mut *tx)
            .await?;
        let last_applied =
            self.apply_stored(&mut tx, aggregate_type, aggregate_id, checkpoint + 1, last_parked).await?;
        if let Some(last) = &last_applied {
            sqlx::query(SET_CHECKPOINT)
                .bind(name)
                .bind(aggregate_type)
                .bind(aggregate_id)
                .bind(last.sequence)
                .bind(last.event_id)
                .bind(last.recorded_at_utc())
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(CLEAR_STREAM_LETTERS)
            .bind(name)
            .bind(aggregate_type)
            .bind(aggregate_id)
            .bind(last_parked)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        let applied = usize::try_from(last_parked - checkpoint).unwrap_or(0);
        debug_assert_eq!(applied > 0, last_applied.is_some());
        tracing::info!(applied, last_parked, "parked stream retried");
        Ok(applied)
    }

    async fn apply_one(&self, conn: &mut PgConnection, event: &RelayedEvent) -> Result<(), ProjectionError> {
        self.projector.apply(conn, event).await.map_err(|source| ProjectionError::Apply {
            stream: stream_key(event),
            sequence: event.sequence,
            source,
        })
    }

    async fn record_failure(
        &self,
        event: &RelayedEvent,
        error: &str,
        attempts: i64,
        park: bool,
    ) -> Result<(), sqlx::Error> {
        let mut error = error.to_owned();
        if error.len() > ERROR_BYTES_MAX {
            let mut cut = ERROR_BYTES_MAX;
            while !error.is_char_boundary(cut) {
                cut -= 1;
            }
            error.truncate(cut);
        }
        let body = serde_json::to_value(event).unwrap_or(serde_json::Value::Null);
        sqlx::query(RECORD_FAILURE)
            .bind(self.projector.name())
            .bind(event.event_id)
            .bind(&event.tenant_id)
            .bind(&event.aggregate_type)
            .bind(&event.aggregate_id)
            .bind(event.sequence)
            .bind(error)
            .bind(i32::try_from(attempts.max(1)).unwrap_or(i32::MAX))
            .bind(park)
            .bind(body)
            .execute(&self.pool)
            .await?;
        Ok(())
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

    /// Steps until `shutdown` turns true, backing off after failures.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut failures: u32 = 0;
        let mut last_received = tokio::time::Instant::now();
        loop {
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
                    } else if last_received.elapsed() >= STALL_AFTER {
                        // Quiet for a while: quiet stream, or a stuck pull?
                        self.stalled().await;
                        last_received = tokio::time::Instant::now();
                    }
                    Duration::ZERO
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    warn!(projector = self.projector.name(), shard = %self.shard, error = %error_chain(&e), failures, "projector step failed");
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
    }
}

fn stream_key(event: &RelayedEvent) -> String {
    format!("{}/{}", event.aggregate_type, event.aggregate_id)
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
