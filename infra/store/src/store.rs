//! The event store: postgres-es 0.5.0's repository for the rows, wrapped in
//! our own `cqrs_es::EventStore` so per-command cost does not grow with the
//! stream.
//!
//! Why not postgres-es's snapshot or aggregate modes: in 0.5.0 they apply new
//! events twice. Why not its plain mode alone: it replays the whole stream on
//! every command. Here:
//! - a bounded in-process cache holds (state, version) per aggregate; a command
//!   uses it without reading the stream, and the optimistic lock (primary key
//!   on the sequence) catches a cache that another node made stale — the
//!   executor then invalidates and retries;
//! - cold loads read a state snapshot (`aggregate_snapshots`, written every
//!   `SNAPSHOT_EVERY_EVENTS`, and after a load that replayed
//!   `SNAPSHOT_AFTER_REPLAY_EVENTS`) plus the tail after it, in one statement;
//! - `commit` never re-applies events: the `EventSink` already applied them to
//!   the context's aggregate, which becomes the cached state;
//! - commits go through the shard's [`GroupCommitter`]: the rows of one
//!   command are one autocommit statement (postgres-es's own INSERT for one
//!   event), merged with the rows of concurrent commands into one statement
//!   when several wait (group commit).
//!
//! Hash chain, event ids, outbox and idempotency rows are written by the
//! table's triggers in the same transaction as the events (schemas/migrations).

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cqrs_es::persist::{PersistedEventRepository, SerializedEvent};
use cqrs_es::{AggregateContext, AggregateError, EventEnvelope, EventStore};
use lru::LruCache;
use postgres_es::PostgresEventRepository;
use sqlx::PgPool;
use tracing::warn;
use wxcm_commands::adapter::{Agg, Ev, HandleError};
use wxcm_commands::ports::PortError;
use wxcm_commands::repository::{BrokenInvariant, StateStore};
use wxcm_domain::{DomainEventMeta, EventSourced};

use crate::batcher::{BatchStatement, Batcher, WORKERS_VARIABLE};
use crate::group_commit::{CommitError, GroupCommitter};

/// A snapshot is written when a commit crosses a multiple of this.
pub const SNAPSHOT_EVERY_EVENTS: u64 = 100;
/// A load that replayed at least this many events writes a snapshot, so the
/// next cold load of the stream (after an eviction or a restart) replays
/// fewer. Lower than [`SNAPSHOT_EVERY_EVENTS`], which keeps snapshot writes
/// off the commits of cached aggregates: a cold load already paid for the
/// tail, and replaying ~50 events per cold command cost most of the
/// machine in `wxcm bench ledger`'s phase (a cold).
pub const SNAPSHOT_AFTER_REPLAY_EVENTS: u64 = 16;
pub const CACHE_ENTRIES_DEFAULT: usize = 50_000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("stream {aggregate_id} is not contiguous: expected sequence {expected}, found {found}")]
    Gap { aggregate_id: String, expected: u64, found: u64 },
    /// A stored event its aggregate refuses: the stream (type and id),
    /// the sequence and the broken rule.
    #[error(transparent)]
    Invariant(BrokenInvariant),
    #[error(transparent)]
    Persistence(#[from] cqrs_es::persist::PersistenceError),
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error("loading the stream: {0}")]
    Load(PortError),
}

/// Per stream: a snapshot of the current state shape (the row whose event
/// type is NULL) and the events after it (a snapshot's sequence is below its
/// stream's events'). Only what a fold reads: the payloads as text (parsed
/// straight into the event type, no `serde_json::Value` in between), no
/// metadata (a third of an event's bytes, which a fold never looks at). No ORDER BY over all rows: sorting a long stream's
/// payloads cost Postgres a disk sort; the rows are put in order per stream
/// in Rust (they come nearly sorted, from the index). Many streams in one statement:
/// concurrent cold loads of one aggregate type share it. The fenced LATERAL
/// subqueries (`OFFSET 0`) keep every lookup a probe of one stream, whatever
/// the statistics: a generic plan made while `events` was small once
/// hash-joined a scan of every stream of the type instead.
const COLD_LOAD_SQL: &str = "
WITH ids AS (
    SELECT DISTINCT aggregate_id FROM unnest($2::text[]) AS ids(aggregate_id)
), snap AS (
    SELECT ids.aggregate_id, s.sequence, s.state
      FROM ids CROSS JOIN LATERAL (
          SELECT sequence, state FROM aggregate_snapshots
           WHERE aggregate_type = $1 AND aggregate_id = ids.aggregate_id AND state_version = $3
          OFFSET 0
      ) s
)
SELECT aggregate_id, sequence, NULL::text, state::text FROM snap
UNION ALL
SELECT ids.aggregate_id, e.sequence, e.event_type, e.payload::text
  FROM ids CROSS JOIN LATERAL (
      SELECT sequence, event_type, payload FROM events
       WHERE aggregate_type = $1 AND aggregate_id = ids.aggregate_id
         AND sequence > COALESCE((SELECT snap.sequence FROM snap WHERE snap.aggregate_id = ids.aggregate_id), 0)
       ORDER BY sequence
      OFFSET 0
  ) e";

/// One row of a cold load: the stream's snapshot, or one of its events, as
/// the texts Postgres printed for the stored jsonb.
#[derive(Clone)]
pub enum ColdRow {
    Snapshot { sequence: i64, state: String },
    Event { sequence: i64, payload: String },
}

impl ColdRow {
    fn sequence(&self) -> i64 {
        match self {
            ColdRow::Snapshot { sequence, .. } | ColdRow::Event { sequence, .. } => *sequence,
        }
    }
}

/// The cold-load statement of one aggregate type, for [`Batcher`].
pub struct ColdLoads {
    pool: PgPool,
    aggregate_type: &'static str,
    state_version: i32,
}

/// (aggregate_id, sequence, event_type (NULL for the snapshot), payload or state).
type ColdLoadRow = (String, i64, Option<String>, String);

#[async_trait]
impl BatchStatement for ColdLoads {
    /// An aggregate id.
    type Item = String;
    /// Its rows in sequence order, the snapshot (if any) first.
    type Output = Vec<ColdRow>;

    async fn run(&self, ids: &[String]) -> Result<Vec<Vec<ColdRow>>, PortError> {
        let rows: Vec<ColdLoadRow> = sqlx::query_as(COLD_LOAD_SQL)
            .bind(self.aggregate_type)
            .bind(ids)
            .bind(self.state_version)
            .fetch_all(&self.pool)
            .await
            .map_err(PortError::new)?;
        let mut by_id: HashMap<String, Vec<ColdRow>> = HashMap::new();
        for (id, sequence, event_type, text) in rows {
            let row = match event_type {
                None => ColdRow::Snapshot { sequence, state: text },
                Some(_) => ColdRow::Event { sequence, payload: text },
            };
            by_id.entry(id).or_default().push(row);
        }
        for stream in by_id.values_mut() {
            stream.sort_by_key(ColdRow::sequence);
        }
        // Moved out, not cloned (a long stream is large); an id asked twice in
        // one batch gets a copy for all but its last asker.
        Ok(ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let asked_again = ids[i + 1..].contains(id);
                let rows = if asked_again { by_id.get(id).cloned() } else { by_id.remove(id) };
                rows.unwrap_or_default()
            })
            .collect())
    }
}

pub struct PgContext<T> {
    aggregate_id: String,
    aggregate: Agg<T>,
    version: u64,
}

impl<T: EventSourced> AggregateContext<Agg<T>> for PgContext<T> {
    fn aggregate(&mut self) -> &mut Agg<T> {
        &mut self.aggregate
    }
}

pub struct PgEventStore<T> {
    repo: PostgresEventRepository,
    pool: PgPool,
    cold_loads: Batcher<ColdLoads>,
    committer: Arc<GroupCommitter>,
    /// (state, version, when it was read or committed here).
    cache: Mutex<LruCache<String, (T, u64, Instant)>>,
}

impl<T: EventSourced> PgEventStore<T> {
    /// `committer` must write to `pool`'s database (one per shard).
    pub fn new(pool: PgPool, committer: Arc<GroupCommitter>, cache_entries: usize) -> Self {
        let cap = NonZeroUsize::new(cache_entries).unwrap_or(NonZeroUsize::MIN);
        Self {
            repo: PostgresEventRepository::new(pool.clone()),
            cold_loads: Batcher::new(
                ColdLoads { pool: pool.clone(), aggregate_type: T::TYPE, state_version: T::STATE_VERSION },
                WORKERS_VARIABLE,
            ),
            pool,
            committer,
            cache: Mutex::new(LruCache::new(cap)),
        }
    }

    fn cached(&self, aggregate_id: &str) -> Option<(T, u64)> {
        self.cache.lock().ok()?.get(aggregate_id).map(|(state, version, _)| (state.clone(), *version))
    }

    /// The cached entry if it was read or committed less than `max_age` ago.
    fn cached_within(&self, aggregate_id: &str, max_age: Duration) -> Option<(T, u64)> {
        let mut cache = self.cache.lock().ok()?;
        let (state, version, at) = cache.get(aggregate_id)?;
        (at.elapsed() < max_age).then(|| (state.clone(), *version))
    }

    fn remember(&self, aggregate_id: &str, state: T, version: u64) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.put(aggregate_id.to_owned(), (state, version, Instant::now()));
        }
    }

    fn forget(&self, aggregate_id: &str) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.pop(aggregate_id);
        }
    }

    async fn write_snapshot(&self, aggregate_id: &str, state: &T, version: u64) -> Result<(), StoreError> {
        // A snapshot is a cache (a lost one only means a longer replay), so its
        // commit does not wait for the WAL flush: `set_config(…, true)` holds for
        // this statement's own transaction, whose commit reads it.
        sqlx::query(
            "INSERT INTO aggregate_snapshots (aggregate_type, aggregate_id, sequence, state_version, state, taken_at)
             SELECT $1, $2, $3, $4, $5, now()
               FROM (SELECT set_config('synchronous_commit', 'off', true)) AS asynchronous_commit
             ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE
               SET sequence = EXCLUDED.sequence, state_version = EXCLUDED.state_version,
                   state = EXCLUDED.state, taken_at = EXCLUDED.taken_at
             WHERE aggregate_snapshots.sequence < EXCLUDED.sequence",
        )
        .bind(T::TYPE)
        .bind(aggregate_id)
        .bind(version as i64)
        .bind(T::STATE_VERSION)
        .bind(serde_json::to_value(state)?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Folds the events after `version` into `state`, checking contiguity.
    async fn catch_up(&self, aggregate_id: &str, state: &mut T, version: &mut u64) -> Result<u64, StoreError> {
        let tail = self.repo.get_last_events::<Agg<T>>(aggregate_id, *version as usize).await?;
        fold(aggregate_id, state, version, tail)
    }

    /// Snapshot + tail in one round trip (a cold load is on the path of every
    /// first command of a member, a new follower's included).
    async fn load_cold(&self, aggregate_id: &str) -> Result<(T, u64, u64), StoreError> {
        let rows = self.cold_loads.submit(aggregate_id.to_owned()).await.map_err(StoreError::Load)?;
        let (mut state, mut version) = (T::default(), 0u64);
        let mut rows = rows.into_iter().peekable();
        if let Some(ColdRow::Snapshot { sequence, state: snapshot }) =
            rows.next_if(|row| matches!(row, ColdRow::Snapshot { .. }))
        {
            match serde_json::from_str::<T>(&snapshot) {
                Ok(snapshot) => (state, version) = (snapshot, sequence as u64),
                Err(e) => {
                    warn!(aggregate_id, error = %e, "unreadable snapshot ignored");
                    let replayed = self.catch_up(aggregate_id, &mut state, &mut version).await?;
                    return Ok((state, version, replayed));
                }
            }
        }
        let mut events = Vec::new();
        for row in rows {
            match row {
                ColdRow::Event { sequence, payload } => events.push((sequence, payload)),
                ColdRow::Snapshot { .. } => {
                    return Err(StoreError::Load(PortError::msg(format!("{aggregate_id}: two snapshots"))))
                }
            }
        }
        let replayed = fold_decoded(
            aggregate_id,
            &mut state,
            &mut version,
            events.into_iter().map(|(sequence, payload)| {
                (sequence as u64, serde_json::from_str::<T::Event>(&payload).map_err(StoreError::Json))
            }),
        )?;
        Ok((state, version, replayed))
    }

    /// Cache (or snapshot) + tail, then cached. Writes a snapshot if the tail was long.
    async fn load_fresh(&self, aggregate_id: &str) -> Result<(T, u64), StoreError> {
        let (state, version, replayed) = match self.cached(aggregate_id) {
            Some((mut state, mut version)) => {
                let replayed = self.catch_up(aggregate_id, &mut state, &mut version).await?;
                (state, version, replayed)
            }
            None => self.load_cold(aggregate_id).await?,
        };
        if replayed >= SNAPSHOT_AFTER_REPLAY_EVENTS {
            if let Err(e) = self.write_snapshot(aggregate_id, &state, version).await {
                warn!(aggregate_id, error = %e, "snapshot write failed");
            }
        }
        self.remember(aggregate_id, state.clone(), version);
        Ok((state, version))
    }
}

/// Applies `events` (in sequence order, right after `version`) to `state`;
/// returns how many. A gap is an error: never fold past a missing event. So
/// is an event the aggregate refuses ([`StoreError::Invariant`]); `state` is
/// then unusable.
fn fold<T: EventSourced>(
    aggregate_id: &str,
    state: &mut T,
    version: &mut u64,
    events: Vec<SerializedEvent>,
) -> Result<u64, StoreError> {
    let decoded = events.into_iter().map(|serialized| {
        let found = serialized.sequence as u64;
        (found, EventEnvelope::<Agg<T>>::try_from(serialized).map(|e| e.payload.0).map_err(StoreError::from))
    });
    fold_decoded(aggregate_id, state, version, decoded)
}

/// [`fold`] of (sequence, decoded event) pairs; the gap is checked before the
/// decoding's outcome.
fn fold_decoded<T: EventSourced>(
    aggregate_id: &str,
    state: &mut T,
    version: &mut u64,
    events: impl Iterator<Item = (u64, Result<T::Event, StoreError>)>,
) -> Result<u64, StoreError> {
    let mut replayed = 0;
    for (found, event) in events {
        if found != *version + 1 {
            return Err(StoreError::Gap { aggregate_id: aggregate_id.to_owned(), expected: *version + 1, found });
        }
        let event = event?;
        state.apply(&event).map_err(|violation| {
            StoreError::Invariant(BrokenInvariant {
                aggregate_type: T::TYPE,
                aggregate_id: aggregate_id.to_owned(),
                sequence: Some(found),
                event_type: event.event_type().to_owned(),
                violation,
            })
        })?;
        *version = found;
        replayed += 1;
    }
    Ok(replayed)
}

fn commit_error<E: std::error::Error>(e: CommitError) -> AggregateError<E> {
    match e {
        CommitError::Conflict => AggregateError::AggregateConflict,
        CommitError::Sql(s) => AggregateError::DatabaseConnectionError(Box::new(s)),
        other => AggregateError::UnexpectedError(Box::new(other)),
    }
}

fn to_aggregate_error<E: std::error::Error>(e: StoreError) -> AggregateError<E> {
    match e {
        StoreError::Persistence(p) => p.into(),
        StoreError::Sql(s) => AggregateError::DatabaseConnectionError(Box::new(s)),
        // Boxed alone, so the executor can tell it from other failures.
        StoreError::Invariant(broken) => AggregateError::UnexpectedError(Box::new(broken)),
        other => AggregateError::UnexpectedError(Box::new(other)),
    }
}

impl<T: EventSourced> EventStore<Agg<T>> for PgEventStore<T> {
    type AC = PgContext<T>;

    async fn load_events(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<EventEnvelope<Agg<T>>>, AggregateError<HandleError<T::Error>>> {
        let events = self.repo.get_events::<Agg<T>>(aggregate_id).await?;
        let mut out = Vec::with_capacity(events.len());
        for e in events {
            out.push(EventEnvelope::<Agg<T>>::try_from(e)?);
        }
        Ok(out)
    }

    async fn load_aggregate(&self, aggregate_id: &str) -> Result<PgContext<T>, AggregateError<HandleError<T::Error>>> {
        // Trust the cache: a stale entry fails the optimistic lock at commit.
        let (state, version) = match self.cached(aggregate_id) {
            Some(hit) => hit,
            None => self.load_fresh(aggregate_id).await.map_err(to_aggregate_error)?,
        };
        Ok(PgContext { aggregate_id: aggregate_id.to_owned(), aggregate: Agg::new(state), version })
    }

    async fn commit(
        &self,
        events: Vec<Ev<T::Event>>,
        context: PgContext<T>,
        metadata: HashMap<String, String>,
    ) -> Result<Vec<EventEnvelope<Agg<T>>>, AggregateError<HandleError<T::Error>>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let id = context.aggregate_id;
        let base = context.version;
        let envelopes: Vec<EventEnvelope<Agg<T>>> = events
            .into_iter()
            .enumerate()
            .map(|(i, payload)| EventEnvelope {
                aggregate_id: id.clone(),
                sequence: (base + i as u64 + 1) as usize,
                payload,
                metadata: metadata.clone(),
            })
            .collect();
        let serialized = envelopes.iter().map(SerializedEvent::try_from).collect::<Result<Vec<_>, _>>()?;
        if let Err(e) = self.committer.commit(serialized).await {
            self.forget(&id);
            return Err(commit_error(e));
        }
        let version = base + envelopes.len() as u64;
        let state = context.aggregate.0;
        if base / SNAPSHOT_EVERY_EVENTS != version / SNAPSHOT_EVERY_EVENTS {
            if let Err(e) = self.write_snapshot(&id, &state, version).await {
                warn!(aggregate_id = %id, error = %e, "snapshot write failed");
            }
        }
        self.remember(&id, state, version);
        Ok(envelopes)
    }
}

#[async_trait]
impl<T: EventSourced> StateStore<T> for PgEventStore<T> {
    async fn load_state(&self, aggregate_id: &str) -> Result<(T, u64), PortError> {
        self.load_fresh(aggregate_id).await.map_err(PortError::new)
    }

    async fn load_recent(&self, aggregate_id: &str, max_age: Duration) -> Result<(T, u64), PortError> {
        match self.cached_within(aggregate_id, max_age) {
            Some(hit) => Ok(hit),
            None => self.load_fresh(aggregate_id).await.map_err(PortError::new),
        }
    }

    fn invalidate(&self, aggregate_id: &str) {
        self.forget(aggregate_id)
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use uuid::Uuid;
    use wxcm_domain::member::{rules, CardLevel, Member, MemberEvent, Provenance, RegistrationSource};
    use wxcm_domain::{Actor, AmountFen, BalanceFen, CardNumber, IdempotencyKey, MemberId, Reference, TenantId};

    use super::*;

    fn member_id() -> MemberId {
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

    fn cash(charge: bool, amount: i64, after: i64) -> MemberEvent {
        let (amount_fen, balance_after_fen) = (AmountFen::new(amount).unwrap(), BalanceFen::new(after).unwrap());
        if charge {
            MemberEvent::CashCharged { amount_fen, provenance: provenance(), balance_after_fen }
        } else {
            MemberEvent::CashDeposited { amount_fen, provenance: provenance(), balance_after_fen }
        }
    }

    fn stream(events: &[MemberEvent]) -> Vec<SerializedEvent> {
        events
            .iter()
            .enumerate()
            .map(|(index, event)| SerializedEvent {
                aggregate_id: member_id().to_string(),
                sequence: index + 1,
                aggregate_type: "member".into(),
                event_type: event.event_type().into(),
                event_version: "1".into(),
                payload: serde_json::to_value(event).unwrap(),
                metadata: serde_json::json!({ "tenant_id": "acme" }),
            })
            .collect()
    }

    #[test]
    fn folding_a_consistent_stream_applies_every_event() {
        let (mut state, mut version) = (Member::default(), 0);
        let events = stream(&[registered(), cash(false, 100, 100), cash(true, 30, 70)]);
        assert_eq!(fold(&member_id().to_string(), &mut state, &mut version, events).unwrap(), 3);
        assert_eq!((version, state.balance.get()), (3, 70));
    }

    #[test]
    fn folding_an_event_the_aggregate_refuses_names_stream_sequence_and_rule() {
        // Given a balance of 100, a stored charge of 500 would make it negative.
        let (mut state, mut version) = (Member::default(), 0);
        let events = stream(&[registered(), cash(false, 100, 100), cash(true, 500, 0), cash(false, 1, 1)]);
        let error = fold(&member_id().to_string(), &mut state, &mut version, events).unwrap_err();
        let StoreError::Invariant(broken) = &error else { panic!("not an invariant error: {error}") };
        assert_eq!(
            (broken.aggregate_type, broken.aggregate_id.clone(), broken.sequence, broken.rule()),
            ("member", member_id().to_string(), Some(3), rules::BALANCE_COVERS_DEBIT)
        );
        assert_eq!(version, 2, "the version stops before the refused event");
        assert!(
            error
                .to_string()
                .starts_with(&format!("member/{} seq 3: CashCharged breaks member.balance_covers_debit", member_id())),
            "{error}"
        );
        // The executor recognizes it behind cqrs-es's error.
        let AggregateError::UnexpectedError(boxed) = to_aggregate_error::<std::fmt::Error>(error) else {
            panic!("not unexpected")
        };
        assert!(boxed.is::<BrokenInvariant>());
    }
}
