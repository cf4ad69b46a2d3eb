//! The relay role: per shard, the instance holding the shard's relay advisory
//! lock copies the `outbox` to a JetStream stream in outbox order, and marks a
//! row published only after the server acknowledged it. The others wait and
//! take over when its session dies.
//!
//! Why nothing is lost:
//! - A row is selected by `published_at IS NULL`, never by "id greater than the
//!   last one seen". A transaction that took a small id and commits late is
//!   still unpublished when it becomes visible, so a later step finds it.
//! - `published_at` is set only for rows whose publish was acknowledged. A crash
//!   before publishing, between the ack and the mark, or in the middle of a
//!   batch leaves rows unpublished: they are sent again, and JetStream drops
//!   the copies because `Nats-Msg-Id` is the event id (within
//!   [`DUPLICATE_WINDOW`]; consumers still treat an event id they already
//!   applied as a no-op, which covers an outage longer than the window).
//!
//! Why one stream's events are never reordered:
//! - Outbox ids are taken from a sequence at insert time, by the trigger on
//!   `events`. Event n+1 of a stream can only be inserted once event n is
//!   committed (the insert trigger refuses a sequence whose predecessor it
//!   cannot see), or later in the same transaction; either way n has the
//!   smaller id. The relay publishes in id order and stops at the first
//!   failure, marking only the acknowledged prefix, so n+1 is never published
//!   while n is not.
//! - Rows of transactions that might still be running are held back:
//!   `txid < pg_snapshot_xmin(pg_current_snapshot())` keeps only rows of
//!   transactions that have ended and are older than every one still running.
//!   Without it, a committed row would routinely be published ahead of a
//!   smaller id that commits a moment later; with it, the published order
//!   follows the outbox order except in a narrow race (a transaction whose
//!   xid is older but whose outbox id is newer than another's). That race
//!   never concerns one stream (see above), and it cannot lose the smaller
//!   id: selection is by `published_at`, not by a position. One long
//!   transaction anywhere in the cluster delays the relay, never loses rows.
//!
//! Leadership: a session-level `pg_try_advisory_lock` on a connection taken
//! out of the pool. Every read and mark runs on that same connection, so a
//! relay whose session died (and whose lock another instance may now hold) can
//! no longer mark anything; at worst it republishes rows, which are deduplicated.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::context::{CreateStreamError, PublishAckFuture, PublishError};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};
use async_nats::jetstream::Context;
use serde::Serialize;
use sqlx::postgres::PgRow;
use sqlx::{Connection, PgConnection, PgPool, Row};
use tokio::sync::{watch, Notify};
use tracing::{debug, info, instrument, warn};
use uuid::Uuid;
/// The message body (moved to the projections crate, which consumes it).
pub use wxcm_projections::RelayedEvent;

use wxcm_commands::health::PartHealth;

use crate::config::NatsConfig;

/// Advisory lock key of the relay on a shard database (the scheduler's differs).
pub const RELAY_LOCK_KEY: i64 = 0x7778_636d_5f72_656c; // "wxcm_rel"
/// JetStream drops a message whose `Nats-Msg-Id` it saw this recently.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Events older than this leave the stream; read models are rebuilt from the event store.
pub const STREAM_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
/// How often a leader deletes published outbox rows older than the retention.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(60);
/// Rows deleted per statement when pruning (keeps each delete short).
pub const PRUNE_BATCH_MAX: i64 = 1_000;
/// Delete statements per prune; the rest waits for the next prune.
pub const PRUNE_BATCHES_PER_STEP_MAX: usize = 10;
/// Longest tenant id or aggregate type the relay puts into a subject.
pub const SUBJECT_TOKEN_BYTES_MAX: usize = 128;
/// Longest pause of `run` after failing steps (short: after an outage the
/// relay should publish within a second of the servers coming back).
pub const RETRY_PAUSE_MAX: Duration = Duration::from_secs(1);
/// Wait for a JetStream API reply or a publish ack (the context's timeout).
/// A request sent while the cluster elects its leaders is never answered:
/// this bound is how late the first request after the election can come.
pub const JETSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// Oldest unpublished rows whose transactions have ended, in outbox order, with
/// the full event. The event columns are exactly the ones the hash chain covers
/// (schemas/event-hash-chain.md), as text, so a consumer can verify the chain.
const SELECT_BATCH: &str = r#"
SELECT o.id AS outbox_id,
       e.event_id, e.tenant_id, e.aggregate_type, e.aggregate_id, e.sequence,
       e.event_type, e.event_version,
       to_char(e.recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS recorded_at,
       e.payload::text AS payload, e.metadata::text AS metadata,
       encode(e.prev_hash, 'hex') AS prev_hash, encode(e.hash, 'hex') AS hash
  FROM outbox o
  LEFT JOIN events e ON e.event_id = o.event_id
 WHERE o.published_at IS NULL
   AND o.txid < pg_snapshot_xmin(pg_current_snapshot())
 ORDER BY o.id
 LIMIT $1"#;

const MARK_PUBLISHED: &str = "UPDATE outbox SET published_at = now() WHERE id = ANY($1) AND published_at IS NULL";

const PRUNE_PUBLISHED: &str = "DELETE FROM outbox WHERE id IN (
    SELECT id FROM outbox
     WHERE published_at IS NOT NULL AND published_at < now() - $1::bigint * interval '1 second'
     ORDER BY published_at
     LIMIT $2)";

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("outbox database")]
    Database(#[from] sqlx::Error),
    #[error("stream prefix {0:?} is not a subject token of A-Z a-z 0-9 _ -")]
    Prefix(String),
    #[error("cannot create or update JetStream stream {stream}")]
    Stream {
        stream: String,
        #[source]
        source: CreateStreamError,
    },
    #[error("cannot look up JetStream stream {stream}")]
    StreamLookup {
        stream: String,
        #[source]
        source: async_nats::jetstream::context::GetStreamError,
    },
    #[error("outbox row {outbox_id} cannot be published: {reason}")]
    Unpublishable { outbox_id: i64, reason: String },
    #[error("publishing outbox row {outbox_id} failed")]
    Publish {
        outbox_id: i64,
        #[source]
        source: PublishError,
    },
    #[error("outbox row {outbox_id} was stored by stream {got}, expected {expected}")]
    WrongStream { outbox_id: i64, got: String, expected: String },
}

/// What one relay needs from the settings.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    pub stream_prefix: String,
    /// Replicas of the events stream (raised, never lowered: see [`ensure_stream`]).
    pub stream_replicas: usize,
    pub batch_max: u32,
    /// Published rows older than this are pruned.
    pub retention: Duration,
}

impl RelaySettings {
    pub fn from_config(nats: &NatsConfig) -> Self {
        Self {
            stream_prefix: nats.stream_prefix.clone(),
            stream_replicas: nats.stream_replicas,
            batch_max: nats.relay_batch_max.max(1),
            retention: Duration::from_secs(nats.outbox_retention_hours.saturating_mul(3600)),
        }
    }
}

/// One step of a leader.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RelayReport {
    /// Rows acknowledged and marked published (duplicates included).
    pub published: usize,
    /// Of those, rows JetStream already had (a previous publish whose mark was lost).
    pub duplicates: usize,
    /// The batch was full: more rows may be waiting, step again without pausing.
    pub more_pending: bool,
    /// Published rows deleted after their retention.
    pub pruned: u64,
}

/// The JetStream stream holding the events relayed under `prefix`.
pub fn stream_name(prefix: &str) -> String {
    format!("{}_EVENTS", prefix.to_ascii_uppercase())
}

/// `{prefix}.events.{tenant_id}.{aggregate_type}`: consumers filter by tenant and type.
pub fn event_subject(prefix: &str, tenant_id: &str, aggregate_type: &str) -> String {
    format!("{prefix}.events.{tenant_id}.{aggregate_type}")
}

fn prefix_ok(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix.len() <= crate::config::STREAM_PREFIX_BYTES_MAX
        && prefix.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A value that can stand as one subject token: printable ASCII without the
/// separator and wildcards, bounded.
fn subject_token_ok(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= SUBJECT_TOKEN_BYTES_MAX
        && token.bytes().all(|b| b.is_ascii_graphic() && !matches!(b, b'.' | b'*' | b'>'))
}

/// Creates the events stream of `prefix` with `replicas` replicas, or brings
/// an existing one to this configuration. Idempotent; the relay calls it when
/// it becomes leader. Replicas are only ever raised: a stream an operator
/// gave more replicas than configured keeps them (lowering them behind the
/// operator's back would leave the stream on one server).
pub async fn ensure_stream(js: &Context, prefix: &str, replicas: usize) -> Result<stream::Info, RelayError> {
    if !prefix_ok(prefix) {
        return Err(RelayError::Prefix(prefix.to_owned()));
    }
    let name = stream_name(prefix);
    // Only a stream known not to exist counts as zero replicas: an unanswered
    // lookup must not let the update below lower an existing stream.
    let existing = match js.get_stream(&name).await {
        Ok(existing) => Some(existing.cached_info().clone()),
        Err(e) if is_stream_not_found(&e) => None,
        Err(e) => return Err(RelayError::StreamLookup { stream: name, source: e }),
    };
    let existing_replicas = existing.as_ref().map_or(0, |info| info.config.num_replicas);
    if existing_replicas > replicas {
        info!(stream = %name, configured = replicas, existing = existing_replicas, "keeping the stream's higher replica count");
    }
    let config = stream::Config {
        name: name.clone(),
        description: Some("wxcm events, relayed from the shards' outboxes".into()),
        subjects: vec![format!("{prefix}.events.>")],
        storage: StorageType::File,
        retention: RetentionPolicy::Limits,
        discard: DiscardPolicy::Old,
        max_age: STREAM_MAX_AGE,
        duplicate_window: DUPLICATE_WINDOW,
        max_bytes: -1,
        max_messages: -1,
        max_messages_per_subject: -1,
        max_consumers: -1,
        num_replicas: replicas.max(existing_replicas).max(1),
        ..Default::default()
    };
    // A stream already as configured is left alone: an update is a cluster-wide
    // request that a recovering cluster answers last (after a restart of every
    // server the relay would otherwise wait on it while lookups already work).
    if let Some(info) = existing.filter(|info| same_settings(&info.config, &config)) {
        return Ok(info);
    }
    js.create_or_update_stream(config).await.map_err(|source| RelayError::Stream { stream: name, source })
}

/// The settings `ensure_stream` manages, equal in both.
fn same_settings(existing: &stream::Config, wanted: &stream::Config) -> bool {
    existing.subjects == wanted.subjects
        && existing.storage == wanted.storage
        && existing.retention == wanted.retention
        && existing.discard == wanted.discard
        && existing.max_age == wanted.max_age
        && existing.duplicate_window == wanted.duplicate_window
        && existing.max_bytes == wanted.max_bytes
        && existing.max_messages == wanted.max_messages
        && existing.max_messages_per_subject == wanted.max_messages_per_subject
        && existing.num_replicas == wanted.num_replicas
}

fn is_stream_not_found(e: &async_nats::jetstream::context::GetStreamError) -> bool {
    matches!(e.kind(), async_nats::jetstream::context::GetStreamErrorKind::JetStream(js)
        if js.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND)
}

/// `error: cause: cause …`, for logs.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// One outbox row with its event, ready to publish.
struct OutboxEvent {
    outbox_id: i64,
    event: RelayedEventText,
}

/// `RelayedEvent` with the JSON columns kept as text (never re-serialized).
#[derive(Serialize)]
struct RelayedEventText {
    event_id: Uuid,
    tenant_id: String,
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    event_version: String,
    recorded_at: String,
    prev_hash: String,
    hash: String,
    #[serde(skip)]
    payload: String,
    #[serde(skip)]
    metadata: String,
}

impl OutboxEvent {
    fn from_row(row: &PgRow) -> Result<Self, RelayError> {
        let outbox_id: i64 = row.try_get("outbox_id")?;
        // The outbox row is written by the trigger of its event's insert and events are
        // never deleted, so a missing event means the database was changed by hand.
        let Some(event_id) = row.try_get::<Option<Uuid>, _>("event_id")? else {
            return Err(RelayError::Unpublishable { outbox_id, reason: "its event does not exist".into() });
        };
        let event = RelayedEventText {
            event_id,
            tenant_id: row.try_get("tenant_id")?,
            aggregate_type: row.try_get("aggregate_type")?,
            aggregate_id: row.try_get("aggregate_id")?,
            sequence: row.try_get("sequence")?,
            event_type: row.try_get("event_type")?,
            event_version: row.try_get("event_version")?,
            recorded_at: row.try_get("recorded_at")?,
            prev_hash: row.try_get("prev_hash")?,
            hash: row.try_get("hash")?,
            payload: row.try_get("payload")?,
            metadata: row.try_get("metadata")?,
        };
        Ok(Self { outbox_id, event })
    }

    fn subject(&self, prefix: &str) -> Result<String, RelayError> {
        for (what, token) in [("tenant id", &self.event.tenant_id), ("aggregate type", &self.event.aggregate_type)] {
            if !subject_token_ok(token) {
                return Err(RelayError::Unpublishable {
                    outbox_id: self.outbox_id,
                    reason: format!("{what} {token:?} is not a subject token"),
                });
            }
        }
        Ok(event_subject(prefix, &self.event.tenant_id, &self.event.aggregate_type))
    }

    /// The JSON of `RelayedEvent`, with `payload` and `metadata` spliced in as stored.
    fn body(&self) -> Result<Vec<u8>, RelayError> {
        let unpublishable = |reason: String| RelayError::Unpublishable { outbox_id: self.outbox_id, reason };
        let mut body = serde_json::to_vec(&self.event).map_err(|e| unpublishable(e.to_string()))?;
        // The head is a JSON object: reopen it before its closing brace.
        if body.pop() != Some(b'}') {
            return Err(unpublishable("event head is not a JSON object".into()));
        }
        body.reserve(self.event.payload.len() + self.event.metadata.len() + 32);
        body.extend_from_slice(b",\"payload\":");
        body.extend_from_slice(self.event.payload.as_bytes());
        body.extend_from_slice(b",\"metadata\":");
        body.extend_from_slice(self.event.metadata.as_bytes());
        body.push(b'}');
        Ok(body)
    }
}

/// Outcome of publishing one batch: the acknowledged prefix and the first failure.
struct Published {
    acked_ids: Vec<i64>,
    duplicates: usize,
    failure: Option<RelayError>,
}

/// Sends every message of the batch, then awaits the acks in order. Only the
/// prefix before the first failure counts as published.
async fn publish_in_order(js: &Context, prefix: &str, stream: &str, rows: &[PgRow]) -> Published {
    let mut in_flight: Vec<(i64, PublishAckFuture)> = Vec::with_capacity(rows.len());
    let mut send_failure = None;
    for row in rows {
        match send_one(js, prefix, row).await {
            Ok(sent) => in_flight.push(sent),
            Err(e) => {
                send_failure = Some(e);
                break;
            }
        }
    }
    let mut published = Published { acked_ids: Vec::with_capacity(in_flight.len()), duplicates: 0, failure: None };
    for (outbox_id, ack) in in_flight {
        match ack.await {
            Ok(ack) if ack.stream == stream => {
                published.duplicates += usize::from(ack.duplicate);
                published.acked_ids.push(outbox_id);
            }
            Ok(ack) => {
                published.failure =
                    Some(RelayError::WrongStream { outbox_id, got: ack.stream, expected: stream.to_owned() });
                break;
            }
            Err(source) => {
                published.failure = Some(RelayError::Publish { outbox_id, source });
                break;
            }
        }
    }
    // A failed ack comes before (in outbox order) any failure to send.
    if published.failure.is_none() {
        published.failure = send_failure;
    }
    published
}

async fn send_one(js: &Context, prefix: &str, row: &PgRow) -> Result<(i64, PublishAckFuture), RelayError> {
    let event = OutboxEvent::from_row(row)?;
    let subject = event.subject(prefix)?;
    let message = PublishMessage::build().payload(event.body()?.into()).message_id(event.event.event_id.to_string());
    let ack = js
        .send_publish(subject, message)
        .await
        .map_err(|source| RelayError::Publish { outbox_id: event.outbox_id, source })?;
    Ok((event.outbox_id, ack))
}

/// One shard's relay instance. `tick` is the step function tests drive.
pub struct ShardRelay {
    shard: String,
    pool: PgPool,
    js: Context,
    settings: RelaySettings,
    stream: String,
    /// The session holding the advisory lock; every query of a leader runs on it.
    leader: Option<PgConnection>,
    stream_ready: bool,
    last_prune: Option<Instant>,
    /// Signalled when this process commits events on the shard: a leader steps
    /// at once instead of at its next poll (the poll still finds other nodes' rows).
    wake: Option<Arc<Notify>>,
    /// Where each step is reported (`/readyz`, `/metrics`).
    health: Option<PartHealth>,
}

impl ShardRelay {
    pub fn new(shard: impl Into<String>, pool: PgPool, js: Context, settings: RelaySettings) -> Self {
        let stream = stream_name(&settings.stream_prefix);
        Self {
            shard: shard.into(),
            pool,
            js,
            settings,
            stream,
            leader: None,
            stream_ready: false,
            last_prune: None,
            wake: None,
            health: None,
        }
    }

    /// Steps early when `wake` is signalled (see the field).
    pub fn wake_on(mut self, wake: Arc<Notify>) -> Self {
        self.wake = Some(wake);
        self
    }

    /// Reports every step to `health`.
    pub fn with_health(mut self, health: PartHealth) -> Self {
        self.health = Some(health);
        self
    }

    pub fn shard_name(&self) -> &str {
        &self.shard
    }

    pub fn is_leader(&self) -> bool {
        self.leader.is_some()
    }

    /// Keeps or tries to take leadership; true when this instance leads.
    async fn lead(&mut self) -> Result<bool, RelayError> {
        if let Some(conn) = self.leader.as_mut() {
            // The lock lives as long as this session; a dead session means lost leadership.
            if let Err(e) = sqlx::query("SELECT 1").execute(&mut *conn).await {
                warn!(shard = %self.shard, error = %e, "relay lost its lock session");
                self.leader = None;
            }
        }
        if self.leader.is_none() {
            let mut conn = self.pool.acquire().await?;
            let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(RELAY_LOCK_KEY)
                .fetch_one(&mut *conn)
                .await?;
            if !got {
                return Ok(false);
            }
            info!(shard = %self.shard, stream = %self.stream, "relay is leader");
            // Detached: the session must never go back to the pool holding the lock;
            // dropping it closes it, which releases the lock.
            self.leader = Some(conn.detach());
            // Another instance may have changed the stream meanwhile: check it again.
            self.stream_ready = false;
        }
        Ok(true)
    }

    /// Keeps or takes leadership, then (if leader) publishes one batch and, at
    /// most every `PRUNE_INTERVAL`, prunes. `None` when another instance leads.
    #[instrument(skip_all, fields(shard = %self.shard))]
    pub async fn tick(&mut self) -> Result<Option<RelayReport>, RelayError> {
        if !self.lead().await? {
            return Ok(None);
        }
        if !self.stream_ready {
            ensure_stream(&self.js, &self.settings.stream_prefix, self.settings.stream_replicas).await?;
            self.stream_ready = true;
        }
        let batch = self.relay_batch().await;
        if matches!(batch, Err(RelayError::Publish { .. } | RelayError::WrongStream { .. })) {
            // The stream may have been deleted or changed: check it again before the next batch.
            self.stream_ready = false;
        }
        let mut report = self.checked(batch).await?;
        if self.last_prune.is_none_or(|at| at.elapsed() >= PRUNE_INTERVAL) {
            let pruned = self.prune_published().await;
            report.pruned = self.checked(pruned).await?;
            self.last_prune = Some(Instant::now());
        }
        Ok(Some(report))
    }

    /// Deletes published rows older than the retention now (as leader);
    /// `None` when another instance leads.
    pub async fn prune(&mut self) -> Result<Option<u64>, RelayError> {
        if !self.lead().await? {
            return Ok(None);
        }
        let pruned = self.prune_published().await;
        let pruned = self.checked(pruned).await?;
        self.last_prune = Some(Instant::now());
        Ok(Some(pruned))
    }

    /// Passes a leader step's result on. A database error gives leadership up:
    /// closing the session releases the lock, so a broken session cannot keep
    /// the shard from being relayed by another instance.
    async fn checked<T>(&mut self, result: Result<T, RelayError>) -> Result<T, RelayError> {
        if let Err(RelayError::Database(e)) = &result {
            warn!(shard = %self.shard, error = %e, "relay gives up leadership after a database error");
            self.resign().await;
        }
        result
    }

    async fn relay_batch(&mut self) -> Result<RelayReport, RelayError> {
        let Some(conn) = self.leader.as_mut() else {
            return Ok(RelayReport::default());
        };
        let batch_max = i64::from(self.settings.batch_max);
        let rows = sqlx::query(SELECT_BATCH).bind(batch_max).fetch_all(&mut *conn).await?;
        if rows.is_empty() {
            return Ok(RelayReport::default());
        }
        let published = publish_in_order(&self.js, &self.settings.stream_prefix, &self.stream, &rows).await;
        // Negative space: what gets marked is exactly an ascending prefix of the batch.
        let prefix_ok = published.acked_ids.len() <= rows.len()
            && published.acked_ids.windows(2).all(|w| w[0] < w[1])
            && published
                .acked_ids
                .iter()
                .zip(&rows)
                .all(|(id, row)| row.try_get::<i64, _>("outbox_id").ok() == Some(*id));
        if !prefix_ok {
            return Err(RelayError::Unpublishable {
                outbox_id: published.acked_ids.first().copied().unwrap_or_default(),
                reason: "acknowledged rows are not a prefix of the batch in outbox order".into(),
            });
        }
        if !published.acked_ids.is_empty() {
            let marked =
                sqlx::query(MARK_PUBLISHED).bind(&published.acked_ids).execute(&mut *conn).await?.rows_affected();
            if marked != published.acked_ids.len() as u64 {
                // Only a second relay that lost its lock while marking can do this; harmless.
                warn!(shard = %self.shard, acked = published.acked_ids.len(), marked, "some rows were already marked");
            }
        }
        let report = RelayReport {
            published: published.acked_ids.len(),
            duplicates: published.duplicates,
            more_pending: published.failure.is_none() && rows.len() as i64 == batch_max,
            pruned: 0,
        };
        debug!(
            shard = %self.shard,
            published = report.published,
            duplicates = report.duplicates,
            batch = rows.len(),
            "relayed outbox rows"
        );
        match published.failure {
            Some(failure) => {
                warn!(
                    shard = %self.shard,
                    published = report.published,
                    error = %error_chain(&failure),
                    "relay stopped at a failed row"
                );
                Err(failure)
            }
            None => Ok(report),
        }
    }

    async fn prune_published(&mut self) -> Result<u64, RelayError> {
        let Some(conn) = self.leader.as_mut() else {
            return Ok(0);
        };
        // Bounded like the setting, so the interval arithmetic cannot overflow in SQL.
        let retention_secs_max = crate::config::OUTBOX_RETENTION_HOURS_LIMIT * 3600;
        let retention_secs = i64::try_from(self.settings.retention.as_secs().min(retention_secs_max)).unwrap_or(0);
        let mut pruned = 0;
        for _ in 0..PRUNE_BATCHES_PER_STEP_MAX {
            let deleted = sqlx::query(PRUNE_PUBLISHED)
                .bind(retention_secs)
                .bind(PRUNE_BATCH_MAX)
                .execute(&mut *conn)
                .await?
                .rows_affected();
            pruned += deleted;
            if deleted < PRUNE_BATCH_MAX as u64 {
                break;
            }
        }
        if pruned > 0 {
            info!(shard = %self.shard, pruned, "pruned published outbox rows");
        }
        Ok(pruned)
    }

    /// Gives up leadership (closing the session releases the lock).
    pub async fn resign(&mut self) {
        if let Some(conn) = self.leader.take() {
            let _ = conn.close().await;
        }
    }

    /// Steps until `shutdown` turns true: at once while a full batch was
    /// published, after `interval` when drained, backing off after failures.
    pub async fn run(mut self, interval: Duration, mut shutdown: watch::Receiver<bool>) {
        let mut failures: u32 = 0;
        loop {
            // Cancelling a step is safe: only acknowledged rows are ever marked, and a
            // mark cut short is either committed or not, both correct.
            let step = tokio::select! {
                step = self.tick() => step,
                _ = shutdown.changed() => break,
            };
            let clean = step.is_ok();
            if let Some(health) = &self.health {
                let leader = Some(self.is_leader());
                match &step {
                    Ok(_) if self.is_leader() => health.healthy(leader, "leader: publishing"),
                    Ok(_) => health.healthy(leader, "standby"),
                    Err(e) => health.failing(leader, &error_chain(e)),
                }
            }
            let pause = match step {
                Ok(Some(report)) if report.more_pending => {
                    failures = 0;
                    Duration::ZERO
                }
                Ok(_) => {
                    failures = 0;
                    interval
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    warn!(shard = %self.shard, error = %error_chain(&e), failures, "relay step failed");
                    interval.saturating_mul(2u32.saturating_pow(failures.min(16))).min(RETRY_PAUSE_MAX)
                }
            };
            if *shutdown.borrow() {
                break;
            }
            // Only a leader idling after a clean step wakes early: a follower
            // would only try the lock again, a failing leader must back off.
            let wake = match &self.wake {
                Some(wake) if clean && self.is_leader() && !pause.is_zero() => Some(wake.clone()),
                _ => None,
            };
            let woken = async {
                match wake {
                    Some(wake) => wake.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = woken => {}
                _ = shutdown.changed() => break,
            }
        }
        self.resign().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_subjects() {
        assert_eq!(stream_name("wxcm"), "WXCM_EVENTS");
        assert_eq!(event_subject("wxcm", "cinema-a", "member"), "wxcm.events.cinema-a.member");
        assert!(prefix_ok("t0123456789ab"));
        assert!(!prefix_ok("wx.cm"));
        assert!(!prefix_ok(""));
    }

    #[test]
    fn subject_tokens_are_bounded_and_refuse_separators_and_wildcards() {
        assert!(subject_token_ok("cinema-a"));
        assert!(subject_token_ok(&"a".repeat(SUBJECT_TOKEN_BYTES_MAX)));
        assert!(!subject_token_ok(&"a".repeat(SUBJECT_TOKEN_BYTES_MAX + 1)));
        for bad in ["", "a.b", "*", ">", "a b", "小明"] {
            assert!(!subject_token_ok(bad), "{bad:?}");
        }
    }

    #[test]
    fn body_carries_the_stored_json_text_unchanged() {
        let event = OutboxEvent {
            outbox_id: 7,
            event: RelayedEventText {
                event_id: Uuid::nil(),
                tenant_id: "t-a".into(),
                aggregate_type: "member".into(),
                aggregate_id: "m-1".into(),
                sequence: 3,
                event_type: "CashDeposited".into(),
                event_version: "1".into(),
                recorded_at: "2024-01-02T03:04:05.000006Z".into(),
                prev_hash: "00".repeat(32),
                hash: "ab".repeat(32),
                payload: r#"{"b": 1.0, "aa": "小明"}"#.into(),
                metadata: r#"{"tenant_id": "t-a"}"#.into(),
            },
        };
        let body = event.body().unwrap();
        let text = String::from_utf8(body.clone()).unwrap();
        assert!(text.ends_with(r#","payload":{"b": 1.0, "aa": "小明"},"metadata":{"tenant_id": "t-a"}}"#), "{text}");
        let parsed: RelayedEvent = serde_json::from_slice(&body).unwrap();
        assert_eq!(parsed.sequence, 3);
        assert_eq!(parsed.payload["aa"], "小明");
        assert_eq!(parsed.metadata["tenant_id"], "t-a");
    }
}
