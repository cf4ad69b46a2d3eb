//! Migration 0001 (event store) against a real Postgres.
//!
//! Every test creates its own database `wxcm_t_<uuid>` through the superuser, migrates
//! it, works as `wxcm_app` the way postgres-es does, and drops the database at the end,
//! also when the test fails. Postgres must be running: these tests fail, never skip,
//! without it. Set `WXCM_TEST_ADMIN_URL` to use another server than
//! `postgres://postgres@127.0.0.1:5432/postgres`.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{PersistedEventRepository, PersistenceError, SerializedEvent};
use cqrs_es::{Aggregate, DomainEvent};
use futures::FutureExt;
use postgres_es::PostgresEventRepository;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Executor, PgConnection, PgPool, Postgres, Row};
use uuid::Uuid;
use wxcm_store::hashchain::{
    canonical_bytes, chain_hash, load_stream, verify_stream, ChainViolation, StoredEvent, ViolationKind, GENESIS_HASH,
    HASH_BYTES,
};
use wxcm_store::migrate::{ensure_database, run_migrations};

const ADMIN_URL_ENV: &str = "WXCM_TEST_ADMIN_URL";
const ADMIN_URL_DEFAULT: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const APP_ROLE: &str = "wxcm_app";
const TEST_POOL_CONNECTIONS_MAX: u32 = 4;
/// Aggregate type of the streams written here; no migration gives it domain meaning
/// (0002 indexes `member` events, for example).
const STREAM: &str = "test_stream";

/// postgres-es 0.5.0's insert statement, verbatim.
const INSERT_EVENT_SQL: &str = "
INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
VALUES ($1, $2, $3, $4, $5, $6, $7)";

const SQLSTATE_UNIQUE_VIOLATION: &str = "23505";
const SQLSTATE_CHECK_VIOLATION: &str = "23514";
const SQLSTATE_RESTRICT_VIOLATION: &str = "23001";
const SQLSTATE_INSUFFICIENT_PRIVILEGE: &str = "42501";

// ---------------------------------------------------------------------------------
// harness
// ---------------------------------------------------------------------------------

fn admin_options() -> PgConnectOptions {
    let url = std::env::var(ADMIN_URL_ENV).unwrap_or_else(|_| ADMIN_URL_DEFAULT.to_owned());
    PgConnectOptions::from_str(&url).unwrap_or_else(|e| panic!("{ADMIN_URL_ENV}: {e}"))
}

fn admin_url(database: &str) -> String {
    admin_options().database(database).to_url_lossy().to_string()
}

fn app_url(database: &str) -> String {
    let admin = admin_options();
    format!("postgres://{APP_ROLE}@{}:{}/{database}", admin.get_host(), admin.get_port())
}

async fn connect_pool(url: &str) -> PgPool {
    PgPoolOptions::new()
        .max_connections(TEST_POOL_CONNECTIONS_MAX)
        .connect(url)
        .await
        .unwrap_or_else(|e| panic!("postgres is required for these tests: {e}"))
}

/// One migrated database with a superuser pool and a `wxcm_app` pool.
#[derive(Clone)]
struct TestDb {
    name: String,
    admin: PgPool,
    app: PgPool,
}

impl TestDb {
    /// A fresh superuser connection with every trigger disabled, to simulate tampering.
    async fn tamper(&self, statements: &[&str]) {
        let mut connection = PgConnection::connect(&admin_url(&self.name)).await.unwrap();
        connection.execute("SET session_replication_role = replica").await.unwrap();
        for statement in statements {
            connection.execute(*statement).await.unwrap();
        }
        connection.close().await.unwrap();
    }

    async fn stream(&self, aggregate_type: &str, aggregate_id: &str) -> Vec<StoredEvent> {
        load_stream(&self.app, aggregate_type, aggregate_id).await.unwrap()
    }

    async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT count(*) FROM {table}")).fetch_one(&self.admin).await.unwrap()
    }
}

fn new_database_name() -> String {
    format!("wxcm_t_{}", Uuid::new_v4().simple())
}

async fn drop_database(name: &str) {
    let mut connection =
        PgConnection::connect(&admin_url("postgres")).await.expect("postgres is required for these tests");
    connection.execute(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str()).await.unwrap();
    connection.close().await.unwrap();
}

/// Runs `test` against a freshly migrated database, then drops it even if `test` panics.
async fn with_database<F, Fut>(test: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = ()>,
{
    let name = new_database_name();
    run_migrations(&admin_url(&name)).await.unwrap_or_else(|e| panic!("postgres is required for these tests: {e:?}"));
    let db = TestDb { admin: connect_pool(&admin_url(&name)).await, app: connect_pool(&app_url(&name)).await, name };
    let outcome = AssertUnwindSafe(test(db.clone())).catch_unwind().await;
    db.admin.close().await;
    db.app.close().await;
    drop_database(&db.name).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// An event as postgres-es binds it: sequence as int4, payload and metadata as jsonb.
#[derive(Clone)]
struct NewEvent {
    aggregate_type: String,
    aggregate_id: String,
    sequence: i32,
    event_type: String,
    payload: Value,
    metadata: Value,
}

fn event(aggregate_id: &str, sequence: i32, tenant_id: &str) -> NewEvent {
    NewEvent {
        aggregate_type: STREAM.into(),
        aggregate_id: aggregate_id.into(),
        sequence,
        event_type: "Probed".into(),
        payload: json!({"points": sequence}),
        metadata: json!({"tenant_id": tenant_id}),
    }
}

impl NewEvent {
    fn with_key(mut self, idempotency_key: &str, request_hash: &str) -> Self {
        self.metadata["idempotency_key"] = json!(idempotency_key);
        self.metadata["request_hash"] = json!(request_hash);
        self
    }

    async fn insert<'c, E>(&self, executor: E) -> Result<(), sqlx::Error>
    where
        E: Executor<'c, Database = Postgres>,
    {
        sqlx::query(INSERT_EVENT_SQL)
            .bind(&self.aggregate_type)
            .bind(&self.aggregate_id)
            .bind(self.sequence)
            .bind(&self.event_type)
            .bind("1.0")
            .bind(&self.payload)
            .bind(&self.metadata)
            .execute(executor)
            .await
            .map(|_| ())
    }
}

/// Inserts the events in one transaction, as postgres-es persists one command.
async fn insert_all(pool: &PgPool, events: &[NewEvent]) -> Result<(), sqlx::Error> {
    let mut transaction = pool.begin().await?;
    for event in events {
        event.insert(&mut *transaction).await?;
    }
    transaction.commit().await
}

#[track_caller]
fn assert_sqlstate(result: Result<impl std::fmt::Debug, sqlx::Error>, code: &str, message: &str) {
    let error = result.expect_err("the statement should have failed");
    let database_error = error.as_database_error().unwrap_or_else(|| panic!("not a database error: {error:?}"));
    assert_eq!(database_error.code().as_deref(), Some(code), "{error}");
    assert!(database_error.message().contains(message), "expected {message:?} in {error}");
}

fn kinds(violations: &[ChainViolation]) -> Vec<(i64, ViolationKind)> {
    violations.iter().map(|v| (v.sequence, v.kind.clone())).collect()
}

/// The audit query of schemas/event-hash-chain.md, taken from the document itself so
/// that the document stays true.
fn audit_query() -> &'static str {
    let spec = include_str!("../../../schemas/event-hash-chain.md");
    let marker = spec.find("<!-- audit-query").expect("audit query marker");
    let start = spec[marker..].find("```sql\n").expect("sql block") + marker + "```sql\n".len();
    let end = spec[start..].find("```").expect("end of sql block") + start;
    &spec[start..end]
}

/// Runs the audit query as `wxcm_app` and checks it reports what `verify_stream` does.
async fn assert_audit_query_agrees(db: &TestDb, streams: &[(&str, &str)]) {
    let rows = sqlx::query(audit_query()).fetch_all(&db.app).await.unwrap();
    let from_sql: Vec<(String, String, i64, String)> =
        rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect();
    let mut from_rust = Vec::new();
    for (aggregate_type, aggregate_id) in streams {
        for v in verify_stream(&db.stream(aggregate_type, aggregate_id).await) {
            from_rust.push((v.aggregate_type, v.aggregate_id, v.sequence, v.kind.code().to_owned()));
        }
    }
    assert_eq!(from_sql, from_rust);
}

// ---------------------------------------------------------------------------------
// the trigger and hashchain.rs agree
// ---------------------------------------------------------------------------------

fn tricky_payloads() -> Vec<Value> {
    vec![
        json!({"nickname": "小明 🎉", "city": "深圳", "note": "naïve café, ש, ê"}),
        json!({"z": 1, "a": {"nested": [1, 2.5, -0.0, 1e300, {"deep": [null, true, false]}]},
               "bb": "quote \" backslash \\ newline \n tab \t control \u{1} end"}),
        json!({"big": 18_446_744_073_709_551_615_u64, "neg": -9_223_372_036_854_775_808_i64,
               "small": 0.1, "": "empty key", "emoji_key_😀": ["𝄞", "\u{200b}"]}),
        json!([]),
        json!("a bare string"),
    ]
}

#[tokio::test]
async fn trigger_and_verifier_agree_byte_for_byte() {
    with_database(|db| async move {
        let payloads = tricky_payloads();
        let mut command_1 = Vec::new();
        for (index, payload) in payloads.iter().take(3).enumerate() {
            let mut e = event("m-1", index as i32 + 1, "tenant-a").with_key("k-1", "rh-1");
            e.payload = payload.clone();
            command_1.push(e);
        }
        insert_all(&db.app, &command_1).await.unwrap();
        let mut command_2 = Vec::new();
        for (index, payload) in payloads.iter().skip(3).enumerate() {
            let mut e = event("m-1", index as i32 + 4, "tenant-a").with_key("k-2", "rh-2");
            e.payload = payload.clone();
            e.metadata["extra"] = json!({"ip": "10.0.0.1", "ua": "微信/8.0"});
            command_2.push(e);
        }
        insert_all(&db.app, &command_2).await.unwrap();
        let mut other = event("任务-7", 1, "租户-b");
        other.aggregate_type = "coupon".into();
        insert_all(&db.app, &[other]).await.unwrap();

        let stream = db.stream(STREAM, "m-1").await;
        assert_eq!(stream.len(), 5);
        assert_eq!(stream[0].prev_hash, GENESIS_HASH);
        for (index, e) in stream.iter().enumerate() {
            assert_eq!(e.sequence, index as i64 + 1);
            assert_eq!(e.tenant_id, "tenant-a");
            assert_eq!(e.hash.len(), HASH_BYTES);
            let stored: Value = serde_json::from_str(&e.payload_text).unwrap();
            assert_eq!(stored, payloads[index], "jsonb keeps the value");
        }
        assert_eq!(verify_stream(&stream), []);
        let coupon = db.stream("coupon", "任务-7").await;
        assert_eq!(coupon[0].tenant_id, "租户-b");
        assert_eq!(verify_stream(&coupon), []);
        assert_audit_query_agrees(&db, &[("coupon", "任务-7"), (STREAM, "m-1")]).await;
    })
    .await;
}

#[tokio::test]
async fn chain_columns_sent_by_the_client_are_overwritten() {
    with_database(|db| async move {
        let sent_at: DateTime<Utc> = "2000-01-01T00:00:00Z".parse().unwrap();
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
             event_version, payload, metadata, tenant_id, event_id, recorded_at, prev_hash, hash) \
             VALUES ('test_stream', 'm-1', 1, 'Registered', '1', '{}', $1, 'tenant-evil', $2, $3, $4, $4)",
        )
        .bind(json!({"tenant_id": "tenant-a"}))
        .bind(Uuid::nil())
        .bind(sent_at)
        .bind(vec![7_u8; HASH_BYTES])
        .execute(&db.app)
        .await
        .unwrap();
        let stream = db.stream(STREAM, "m-1").await;
        assert_eq!(stream[0].tenant_id, "tenant-a");
        assert_ne!(stream[0].event_id, Uuid::nil());
        assert!(stream[0].recorded_at > sent_at);
        assert_eq!(stream[0].prev_hash, GENESIS_HASH);
        assert_eq!(verify_stream(&stream), []);
    })
    .await;
}

/// The real postgres-es repository writes and reads the table, and maps both kinds of
/// 23505 (sequence taken, idempotency key reused) to its optimistic lock error.
#[tokio::test]
async fn postgres_es_repository_round_trip() {
    with_database(|db| async move {
        let repository = PostgresEventRepository::new(db.app.clone());
        let metadata = json!({"tenant_id": "tenant-a", "idempotency_key": "k-1", "request_hash": "rh"});
        let serialized = |sequence: usize, metadata: &Value| {
            SerializedEvent::new(
                "p-1".into(),
                sequence,
                Probe::TYPE.into(),
                "Probed".into(),
                "1.0".into(),
                json!({"n": sequence, "text": "积分"}),
                metadata.clone(),
            )
        };
        let command = [serialized(1, &metadata), serialized(2, &metadata)];
        repository.persist::<Probe>(&command, None).await.unwrap();

        let read = repository.get_events::<Probe>("p-1").await.unwrap();
        assert_eq!(read.len(), 2);
        assert_eq!(read[1].sequence, 2);
        assert_eq!(read[1].payload, command[1].payload);
        assert_eq!(read[1].metadata, metadata);

        let reused_key = repository.persist::<Probe>(&[serialized(3, &metadata)], None).await;
        assert!(matches!(reused_key, Err(PersistenceError::OptimisticLockError)));
        let fresh = json!({"tenant_id": "tenant-a", "idempotency_key": "k-2", "request_hash": "rh"});
        let taken_sequence = repository.persist::<Probe>(&[serialized(2, &fresh)], None).await;
        assert!(matches!(taken_sequence, Err(PersistenceError::OptimisticLockError)));

        assert_eq!(db.count("events").await, 2);
        assert_eq!(verify_stream(&db.stream(Probe::TYPE, "p-1").await), []);
    })
    .await;
}

// ---------------------------------------------------------------------------------
// inserts the trigger refuses
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn sequence_gap_is_rejected() {
    with_database(|db| async move {
        let no_first = event("m-1", 2, "tenant-a").insert(&db.app).await;
        assert_sqlstate(no_first, SQLSTATE_CHECK_VIOLATION, "sequence gap");
        event("m-1", 1, "tenant-a").insert(&db.app).await.unwrap();
        let skipped = event("m-1", 3, "tenant-a").insert(&db.app).await;
        assert_sqlstate(skipped, SQLSTATE_CHECK_VIOLATION, "sequence gap");
        // Sequence 1 of another stream with the same id is no predecessor.
        let mut other_type = event("m-1", 2, "tenant-a");
        other_type.aggregate_type = "coupon".into();
        let result = other_type.insert(&db.app).await;
        assert_sqlstate(result, SQLSTATE_CHECK_VIOLATION, "sequence gap");
        assert_eq!(db.count("events").await, 1);
        assert_eq!(db.count("outbox").await, 1);
    })
    .await;
}

#[tokio::test]
async fn stream_of_another_tenant_is_rejected() {
    with_database(|db| async move {
        event("m-1", 1, "tenant-a").insert(&db.app).await.unwrap();
        let result = event("m-1", 2, "tenant-b").insert(&db.app).await;
        assert_sqlstate(result, SQLSTATE_CHECK_VIOLATION, "stream belongs to another tenant");
        // Sequence 1 of an existing stream is taken whatever the tenant.
        let result = event("m-1", 1, "tenant-b").insert(&db.app).await;
        assert_sqlstate(result, SQLSTATE_UNIQUE_VIOLATION, "events_pkey");
        assert_eq!(db.count("events").await, 1);
    })
    .await;
}

#[tokio::test]
async fn event_without_tenant_is_rejected() {
    with_database(|db| async move {
        for metadata in [json!({}), json!({"tenant_id": ""}), json!({"tenant_id": null})] {
            let mut e = event("m-1", 1, "unused");
            e.metadata = metadata;
            let result = e.insert(&db.app).await;
            assert_sqlstate(result, SQLSTATE_CHECK_VIOLATION, "event without tenant_id");
        }
        assert_eq!(db.count("events").await, 0);
    })
    .await;
}

#[tokio::test]
async fn same_sequence_twice_is_an_optimistic_concurrency_conflict() {
    with_database(|db| async move {
        event("m-1", 1, "tenant-a").insert(&db.app).await.unwrap();
        let result = event("m-1", 1, "tenant-a").insert(&db.app).await;
        assert_sqlstate(result, SQLSTATE_UNIQUE_VIOLATION, "events_pkey");
        let error = event("m-1", 1, "tenant-a").insert(&db.app).await.unwrap_err();
        let constraint = error.as_database_error().unwrap().constraint();
        assert_eq!(constraint, Some("events_pkey"));
    })
    .await;
}

// ---------------------------------------------------------------------------------
// append-only
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn app_role_cannot_update_delete_or_truncate() {
    with_database(|db| async move {
        insert_all(&db.app, &[event("m-1", 1, "tenant-a"), event("m-1", 2, "tenant-a")]).await.unwrap();
        for statement in ["UPDATE events SET payload = '{}'", "DELETE FROM events", "TRUNCATE events"] {
            let result = sqlx::query(statement).execute(&db.app).await;
            assert_sqlstate(result, SQLSTATE_INSUFFICIENT_PRIVILEGE, "permission denied");
        }
        assert_eq!(db.count("events").await, 2);
    })
    .await;
}

#[tokio::test]
async fn even_the_superuser_cannot_update_delete_or_truncate() {
    with_database(|db| async move {
        insert_all(&db.app, &[event("m-1", 1, "tenant-a"), event("m-1", 2, "tenant-a")]).await.unwrap();
        for statement in
            ["UPDATE events SET payload = '{}'", "DELETE FROM events WHERE sequence = 2", "TRUNCATE events"]
        {
            let result = sqlx::query(statement).execute(&db.admin).await;
            assert_sqlstate(result, SQLSTATE_RESTRICT_VIOLATION, "events are append-only");
        }
        assert_eq!(verify_stream(&db.stream(STREAM, "m-1").await), []);
        assert_eq!(db.count("events").await, 2);
    })
    .await;
}

// ---------------------------------------------------------------------------------
// outbox and idempotency keys
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn idempotency_key_covers_one_command_only() {
    with_database(|db| async move {
        let command =
            [event("m-1", 1, "tenant-a").with_key("k-1", "rh-1"), event("m-1", 2, "tenant-a").with_key("k-1", "rh-1")];
        insert_all(&db.app, &command).await.unwrap();
        let key = sqlx::query(
            "SELECT request_hash, aggregate_type, aggregate_id, first_sequence, last_sequence \
             FROM idempotency_keys WHERE tenant_id = 'tenant-a' AND idempotency_key = 'k-1'",
        )
        .fetch_one(&db.app)
        .await
        .unwrap();
        assert_eq!(key.get::<String, _>("request_hash"), "rh-1");
        assert_eq!(key.get::<String, _>("aggregate_type"), STREAM);
        assert_eq!(key.get::<String, _>("aggregate_id"), "m-1");
        assert_eq!(key.get::<i64, _>("first_sequence"), 1);
        assert_eq!(key.get::<i64, _>("last_sequence"), 2);

        // A later command reusing the key is a conflict and writes nothing.
        let retry =
            [event("m-1", 3, "tenant-a").with_key("k-1", "rh-1"), event("m-1", 4, "tenant-a").with_key("k-1", "rh-1")];
        let result = insert_all(&db.app, &retry).await;
        let error = result.as_ref().unwrap_err().as_database_error().unwrap();
        assert_eq!(error.constraint(), Some("idempotency_keys_pkey"));
        assert_sqlstate(result, SQLSTATE_UNIQUE_VIOLATION, "idempotency key already used");
        assert_eq!(db.count("events").await, 2);
        assert_eq!(db.count("outbox").await, 2);
        assert_eq!(db.count("idempotency_keys").await, 1);

        // Keys are per tenant.
        insert_all(&db.app, &[event("m-9", 1, "tenant-b").with_key("k-1", "rh-9")]).await.unwrap();
        assert_eq!(db.count("idempotency_keys").await, 2);
    })
    .await;
}

#[tokio::test]
async fn idempotency_key_cannot_span_two_streams_in_one_transaction() {
    with_database(|db| async move {
        let command =
            [event("m-1", 1, "tenant-a").with_key("k-1", "rh-1"), event("m-2", 1, "tenant-a").with_key("k-1", "rh-1")];
        let result = insert_all(&db.app, &command).await;
        assert_sqlstate(result, SQLSTATE_UNIQUE_VIOLATION, "idempotency key already used");
        assert_eq!(db.count("events").await, 0);
        assert_eq!(db.count("outbox").await, 0);
    })
    .await;
}

#[tokio::test]
async fn idempotency_key_without_request_hash_is_rejected() {
    with_database(|db| async move {
        let mut e = event("m-1", 1, "tenant-a");
        e.metadata["idempotency_key"] = json!("k-1");
        let result = e.insert(&db.app).await;
        assert_sqlstate(result, SQLSTATE_CHECK_VIOLATION, "without request_hash");
        assert_eq!(db.count("events").await, 0);
    })
    .await;
}

#[tokio::test]
async fn outbox_gets_one_row_per_event_in_order() {
    with_database(|db| async move {
        let mut registered = event("m-1", 1, "tenant-a");
        registered.event_type = "Registered".into();
        insert_all(&db.app, &[registered, event("m-1", 2, "tenant-a")]).await.unwrap();
        insert_all(&db.app, &[event("m-1", 3, "tenant-a")]).await.unwrap();
        let stream = db.stream(STREAM, "m-1").await;
        let outbox = sqlx::query(
            "SELECT event_id, tenant_id, aggregate_type, aggregate_id, sequence, event_type, \
                    recorded_at, txid::text AS txid, published_at IS NULL AS unpublished \
               FROM outbox ORDER BY id",
        )
        .fetch_all(&db.app)
        .await
        .unwrap();
        assert_eq!(outbox.len(), stream.len());
        for (row, e) in outbox.iter().zip(&stream) {
            assert_eq!(row.get::<Uuid, _>("event_id"), e.event_id);
            assert_eq!(row.get::<String, _>("tenant_id"), e.tenant_id);
            assert_eq!(row.get::<String, _>("aggregate_type"), e.aggregate_type);
            assert_eq!(row.get::<String, _>("aggregate_id"), e.aggregate_id);
            assert_eq!(row.get::<i64, _>("sequence"), e.sequence);
            assert_eq!(row.get::<String, _>("event_type"), e.event_type);
            assert_eq!(row.get::<DateTime<Utc>, _>("recorded_at"), e.recorded_at);
            assert!(row.get::<bool, _>("unpublished"));
        }
        let txids: Vec<String> = outbox.iter().map(|r| r.get("txid")).collect();
        assert_eq!(txids[0], txids[1], "one command, one transaction");
        assert_ne!(txids[1], txids[2]);
        // The relay (later work) marks rows published as wxcm_app.
        sqlx::query("UPDATE outbox SET published_at = now() WHERE sequence = 1").execute(&db.app).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn app_role_maintains_aggregate_snapshots() {
    with_database(|db| async move {
        for sequence in [3_i64, 7] {
            sqlx::query(
                "INSERT INTO aggregate_snapshots (aggregate_type, aggregate_id, sequence, \
                 state_version, state) VALUES ('test_stream', 'm-1', $1, 1, $2) \
                 ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE \
                 SET sequence = EXCLUDED.sequence, state = EXCLUDED.state, taken_at = now()",
            )
            .bind(sequence)
            .bind(json!({"points": sequence}))
            .execute(&db.app)
            .await
            .unwrap();
        }
        let sequence: i64 =
            sqlx::query_scalar("SELECT sequence FROM aggregate_snapshots").fetch_one(&db.app).await.unwrap();
        assert_eq!(sequence, 7);
        sqlx::query("DELETE FROM aggregate_snapshots").execute(&db.app).await.unwrap();
    })
    .await;
}

// ---------------------------------------------------------------------------------
// tampering with the triggers disabled is detected
// ---------------------------------------------------------------------------------

/// test_stream/m-1 with sequences 1..=length of tenant-a.
async fn seed_stream(db: &TestDb, length: i32) {
    let events: Vec<NewEvent> = (1..=length).map(|s| event("m-1", s, "tenant-a")).collect();
    insert_all(&db.app, &events).await.unwrap();
    assert_eq!(verify_stream(&db.stream(STREAM, "m-1").await), []);
}

/// Inserts a row as-is, chain columns included (triggers must be disabled).
async fn insert_raw(db: &TestDb, row: &StoredEvent) {
    let mut connection = PgConnection::connect(&admin_url(&db.name)).await.unwrap();
    connection.execute("SET session_replication_role = replica").await.unwrap();
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
         payload, metadata, tenant_id, event_id, recorded_at, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb, $8, $9, $10, $11, $12)",
    )
    .bind(&row.aggregate_type)
    .bind(&row.aggregate_id)
    .bind(row.sequence)
    .bind(&row.event_type)
    .bind(&row.event_version)
    .bind(&row.payload_text)
    .bind(&row.metadata_text)
    .bind(&row.tenant_id)
    .bind(row.event_id)
    .bind(row.recorded_at)
    .bind(&row.prev_hash)
    .bind(&row.hash)
    .execute(&mut connection)
    .await
    .unwrap();
    connection.close().await.unwrap();
}

/// A row linked to `previous` and hashed correctly, as a forger who read the spec makes it.
fn forge_after(previous: &StoredEvent, tenant_id: &str) -> StoredEvent {
    let mut forged = StoredEvent {
        tenant_id: tenant_id.into(),
        sequence: previous.sequence + 1,
        event_id: Uuid::new_v4(),
        // Whole microseconds, as Postgres stores them.
        recorded_at: previous.recorded_at + chrono::Duration::microseconds(1),
        payload_text: r#"{"points": 1000000}"#.into(),
        metadata_text: format!(r#"{{"tenant_id": "{tenant_id}"}}"#),
        prev_hash: previous.hash.clone(),
        ..previous.clone()
    };
    forged.hash = chain_hash(&forged.prev_hash, &canonical_bytes(&forged)).to_vec();
    forged
}

#[tokio::test]
async fn tampering_changed_payload_is_a_hash_mismatch() {
    with_database(|db| async move {
        seed_stream(&db, 3).await;
        db.tamper(&["UPDATE events SET payload = '{\"points\": 9000}' WHERE sequence = 2"]).await;
        let violations = verify_stream(&db.stream(STREAM, "m-1").await);
        assert_eq!(kinds(&violations), [(2, ViolationKind::HashMismatch)]);
        assert_eq!(violations[0].to_string(), "test_stream/m-1 seq 2: hash mismatch (row changed)");
        assert_audit_query_agrees(&db, &[(STREAM, "m-1")]).await;
    })
    .await;
}

#[tokio::test]
async fn tampering_changed_and_rehashed_row_breaks_the_next_link() {
    with_database(|db| async move {
        seed_stream(&db, 3).await;
        let stream = db.stream(STREAM, "m-1").await;
        let mut changed = forge_after(&stream[0], "tenant-a");
        changed.event_id = stream[1].event_id;
        changed.hash = chain_hash(&changed.prev_hash, &canonical_bytes(&changed)).to_vec();
        db.tamper(&["DELETE FROM events WHERE sequence = 2"]).await;
        insert_raw(&db, &changed).await;
        assert_eq!(kinds(&verify_stream(&db.stream(STREAM, "m-1").await)), [(3, ViolationKind::PrevHashMismatch)]);
        assert_audit_query_agrees(&db, &[(STREAM, "m-1")]).await;
    })
    .await;
}

#[tokio::test]
async fn tampering_deleted_rows_leave_a_gap_or_a_missing_start() {
    with_database(|db| async move {
        seed_stream(&db, 4).await;
        // The named row trigger can also be switched off alone, inside a transaction.
        let mut transaction = db.admin.begin().await.unwrap();
        for statement in [
            "ALTER TABLE events DISABLE TRIGGER events_append_only",
            "DELETE FROM events WHERE sequence = 2",
            "ALTER TABLE events ENABLE TRIGGER events_append_only",
        ] {
            transaction.execute(statement).await.unwrap();
        }
        transaction.commit().await.unwrap();
        assert_eq!(
            kinds(&verify_stream(&db.stream(STREAM, "m-1").await)),
            [(3, ViolationKind::SequenceGap { expected: 2 })]
        );
        assert_audit_query_agrees(&db, &[(STREAM, "m-1")]).await;

        db.tamper(&["DELETE FROM events WHERE sequence = 1"]).await;
        assert_eq!(
            kinds(&verify_stream(&db.stream(STREAM, "m-1").await)),
            [(3, ViolationKind::StreamDoesNotStartAtOne),]
        );
        assert_audit_query_agrees(&db, &[(STREAM, "m-1")]).await;
    })
    .await;
}

#[tokio::test]
async fn tampering_row_inserted_in_the_middle_breaks_the_shifted_row() {
    with_database(|db| async move {
        seed_stream(&db, 3).await;
        let stream = db.stream(STREAM, "m-1").await;
        // Make room after seq 2, then insert a well-formed forged seq 3.
        db.tamper(&["UPDATE events SET sequence = 4 WHERE sequence = 3"]).await;
        insert_raw(&db, &forge_after(&stream[1], "tenant-a")).await;
        assert_eq!(
            kinds(&verify_stream(&db.stream(STREAM, "m-1").await)),
            [(4, ViolationKind::PrevHashMismatch), (4, ViolationKind::HashMismatch),]
        );
        assert_audit_query_agrees(&db, &[(STREAM, "m-1")]).await;
    })
    .await;
}

#[tokio::test]
async fn tampering_forged_rows_at_the_end_are_detected_unless_well_formed() {
    with_database(|db| async move {
        seed_stream(&db, 2).await;
        let stream = db.stream(STREAM, "m-1").await;

        let mut bad_hash = forge_after(&stream[1], "tenant-a");
        bad_hash.hash = vec![0; HASH_BYTES];
        insert_raw(&db, &bad_hash).await;
        let mut bad_link = forge_after(&bad_hash, "tenant-a");
        bad_link.prev_hash = vec![1; HASH_BYTES];
        bad_link.hash = chain_hash(&bad_link.prev_hash, &canonical_bytes(&bad_link)).to_vec();
        insert_raw(&db, &bad_link).await;
        let other_tenant = forge_after(&bad_link, "tenant-b");
        insert_raw(&db, &other_tenant).await;
        let mut skipped = forge_after(&other_tenant, "tenant-a");
        skipped.sequence += 1;
        skipped.hash = chain_hash(&skipped.prev_hash, &canonical_bytes(&skipped)).to_vec();
        insert_raw(&db, &skipped).await;

        assert_eq!(
            kinds(&verify_stream(&db.stream(STREAM, "m-1").await)),
            [
                (3, ViolationKind::HashMismatch),
                (4, ViolationKind::PrevHashMismatch),
                (5, ViolationKind::TenantMismatch { stream_tenant: "tenant-a".into(), row_tenant: "tenant-b".into() }),
                (7, ViolationKind::SequenceGap { expected: 6 }),
            ]
        );
        assert_audit_query_agrees(&db, &[(STREAM, "m-1")]).await;
    })
    .await;
}

// ---------------------------------------------------------------------------------
// migrations
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn migrations_are_idempotent() {
    with_database(|db| async move {
        let applied = "SELECT count(*), max(installed_on)::text FROM _sqlx_migrations";
        let before: (i64, Option<String>) = sqlx::query_as(applied).fetch_one(&db.admin).await.unwrap();
        assert!(before.0 >= 1, "0001_event_store is applied");
        run_migrations(&admin_url(&db.name)).await.unwrap();
        let after: (i64, Option<String>) = sqlx::query_as(applied).fetch_one(&db.admin).await.unwrap();
        assert_eq!(after, before);
    })
    .await;
}

#[tokio::test]
async fn concurrent_creation_and_migration_of_one_database_succeed() {
    let name = new_database_name();
    let url = admin_url(&name);
    let created = futures::future::join_all((0..4).map(|_| ensure_database(&url))).await;
    let migrated = futures::future::join_all((0..3).map(|_| run_migrations(&url))).await;
    drop_database(&name).await;
    for outcome in created {
        outcome.unwrap();
    }
    for outcome in migrated {
        outcome.unwrap();
    }
}

// ---------------------------------------------------------------------------------
// a minimal aggregate for the postgres-es repository
// ---------------------------------------------------------------------------------

#[derive(Debug, Default, Serialize, Deserialize)]
struct Probe;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Probed;

impl DomainEvent for Probed {
    fn event_type(&self) -> String {
        "Probed".into()
    }

    fn event_version(&self) -> String {
        "1.0".into()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("probe commands never fail")]
struct ProbeError;

impl Aggregate for Probe {
    const TYPE: &'static str = "probe";
    type Command = ();
    type Event = Probed;
    type Error = ProbeError;
    type Services = ();

    async fn handle(&mut self, _command: (), _services: &(), _sink: &EventSink<Self>) -> Result<(), ProbeError> {
        Ok(())
    }

    fn apply(&mut self, _event: Probed) {}
}

// ---------------------------------------------------------------------------------
// group commit (infra/store/src/group_commit.rs)
// ---------------------------------------------------------------------------------

/// Held by every test that commits through a group committer, so that the
/// process-wide counters (`group_commit::stats`) move by one test's statements.
static GROUP_COMMIT_COUNTERS: std::sync::LazyLock<tokio::sync::Mutex<()>> =
    std::sync::LazyLock::new(|| tokio::sync::Mutex::new(()));

fn serialized(aggregate_id: &str, sequence: usize, idempotency_key: &str) -> SerializedEvent {
    SerializedEvent::new(
        aggregate_id.to_owned(),
        sequence,
        STREAM.to_owned(),
        "Probed".to_owned(),
        "1.0".to_owned(),
        json!({"points": sequence}),
        json!({"tenant_id": "t1", "idempotency_key": idempotency_key, "request_hash": format!("h-{idempotency_key}")}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_merges_concurrent_commands_and_answers_each_alone() {
    use wxcm_store::group_commit::{self, CommitError, GroupCommitter};
    with_database(|db| async move {
        let committer = GroupCommitter::new(db.app.clone(), group_commit::WORKERS_DEFAULT);

        // Concurrent independent commands share transactions.
        // (The process-wide counters move by this test's statements alone.)
        let _counters = GROUP_COMMIT_COUNTERS.lock().await;
        let before = group_commit::stats();
        let jobs = (0..40).map(|i| committer.commit(vec![serialized(&format!("g-{i}"), 1, &format!("k-{i}"))]));
        let results = futures::future::join_all(jobs).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        let written = group_commit::stats().since(before);
        let (rows, transactions): (i64, i64) =
            sqlx::query_as("SELECT count(*), count(DISTINCT txid) FROM outbox").fetch_one(&db.admin).await.unwrap();
        assert_eq!(rows, 40);
        assert!(transactions < 40, "40 concurrent commands were committed in {transactions} transactions");
        assert_eq!((written.commands, written.rows), (40, 40), "{written:?}");
        assert_eq!(written.statements, transactions as u64, "one counted statement per transaction: {written:?}");

        // A batch holding conflicts fails as a whole; every command is then answered alone.
        let mixed = vec![
            vec![serialized("dup", 1, "dup-a")],
            vec![serialized("dup", 1, "dup-b")],
            vec![serialized("shared-1", 1, "shared")],
            vec![serialized("shared-2", 1, "shared")],
            vec![serialized("multi", 1, "multi"), serialized("multi", 2, "multi"), serialized("multi", 3, "multi")],
            vec![serialized("g-0", 2, "g-0-again")],
            vec![serialized("g-1", 5, "gap")],
        ];
        let results = futures::future::join_all(mixed.into_iter().map(|rows| committer.commit(rows))).await;
        let ok = |i: usize| results[i].is_ok();
        let conflict = |i: usize| matches!(results[i], Err(CommitError::Conflict));
        assert!(ok(0) ^ ok(1) && (conflict(0) || conflict(1)), "one of two writers of dup/1 wins: {results:?}");
        assert!(ok(2) ^ ok(3) && (conflict(2) || conflict(3)), "one idempotency key, one command: {results:?}");
        assert!(ok(4) && ok(5), "{results:?}");
        assert!(matches!(results[6], Err(CommitError::Sql(_))), "a sequence gap is refused: {results:?}");

        assert_eq!(db.count("events").await, 40 + 1 + 1 + 3 + 1);
        for id in ["dup", "multi", "g-0", "g-7"] {
            let stream = db.stream(STREAM, id).await;
            assert!(verify_stream(&stream).is_empty(), "{id}: {:?}", verify_stream(&stream));
        }
        assert_eq!(db.stream(STREAM, "multi").await.len(), 3);
        let range: (i64, i64) = sqlx::query_as(
            "SELECT first_sequence, last_sequence FROM idempotency_keys WHERE idempotency_key = 'multi'",
        )
        .fetch_one(&db.admin)
        .await
        .unwrap();
        assert_eq!(range, (1, 3));
        assert_group_committed_rows_are_whole(&db).await;
    })
    .await;
}

/// What the trigger guarantees for every row, also for the rows whose chain
/// fields and side rows the group committer wrote (migration 0045): every event
/// has its outbox row (same id, time, tenant, stream, type) and, if keyed, its
/// key; `canonical` is never stored; every stream verifies, by Rust and by SQL.
async fn assert_group_committed_rows_are_whole(db: &TestDb) {
    let (events, with_outbox, keyed, with_key, stored_canonical): (i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT count(*),
                count(*) FILTER (WHERE EXISTS (
                    SELECT FROM outbox o
                     WHERE o.event_id = e.event_id AND o.recorded_at = e.recorded_at AND o.tenant_id = e.tenant_id
                       AND (o.aggregate_type, o.aggregate_id, o.sequence, o.event_type)
                         = (e.aggregate_type, e.aggregate_id, e.sequence, e.event_type))),
                count(*) FILTER (WHERE e.metadata ? 'idempotency_key'),
                count(*) FILTER (WHERE EXISTS (
                    SELECT FROM idempotency_keys k
                     WHERE k.tenant_id = e.tenant_id AND k.idempotency_key = e.metadata->>'idempotency_key'
                       AND k.request_hash = e.metadata->>'request_hash'
                       AND (k.aggregate_type, k.aggregate_id) = (e.aggregate_type, e.aggregate_id)
                       AND e.sequence BETWEEN k.first_sequence AND k.last_sequence)),
                count(*) FILTER (WHERE e.canonical IS NOT NULL)
           FROM events e",
    )
    .fetch_one(&db.admin)
    .await
    .unwrap();
    assert_eq!((with_outbox, with_key, stored_canonical), (events, keyed, 0));
    assert_eq!(db.count("outbox").await, events, "one outbox row per event, no more");
    let streams: Vec<(String, String)> =
        sqlx::query_as("SELECT DISTINCT aggregate_type, aggregate_id FROM events ORDER BY 1, 2")
            .fetch_all(&db.admin)
            .await
            .unwrap();
    let streams: Vec<(&str, &str)> = streams.iter().map(|(t, i)| (t.as_str(), i.as_str())).collect();
    assert_audit_query_agrees(db, &streams).await;
    let rows = sqlx::query(audit_query()).fetch_all(&db.app).await.unwrap();
    assert!(rows.is_empty(), "{} violations", rows.len());
}

#[tokio::test]
async fn group_commit_prepares_what_it_can_render_and_leaves_the_rest_to_the_trigger() {
    use wxcm_store::group_commit::{self, GroupCommitter};
    with_database(|db| async move {
        let committer = GroupCommitter::new(db.app.clone(), group_commit::WORKERS_DEFAULT);
        let mut float = serialized("float", 1, "k-float");
        float.payload = json!({"ratio": 0.5, "nested": [1.25e3]});
        let mut bare = serialized("bare", 1, "unused");
        bare.metadata = json!({"tenant_id": "t1"});
        let mut tricky = serialized("tricky", 1, "k-tricky");
        tricky.payload = tricky_payloads()[0].clone();
        // (rows, how many of them the committer prepares)
        let jobs = vec![
            (vec![serialized("p", 1, "k-p"), serialized("p", 2, "k-p")], 2),
            (vec![float], 0),
            (vec![bare], 1),
            (vec![tricky], 1),
        ];
        let _counters = GROUP_COMMIT_COUNTERS.lock().await;
        for (rows, prepared) in jobs {
            // One at a time: each job is its own statement, on its own path.
            let before = group_commit::stats();
            let written = rows.len() as u64;
            committer.commit(rows).await.unwrap();
            let stats = group_commit::stats().since(before);
            assert_eq!((stats.rows, stats.prepared_rows), (written, prepared));
        }
        let mut next = serialized("p", 3, "k-p3");
        next.payload = json!({"escapes": "\" \\ \n \u{1f} 小明", "n": -42});
        committer.commit(vec![next]).await.unwrap();
        // A key used by an earlier command is a conflict, written by neither path.
        let reused = committer.commit(vec![serialized("p", 4, "k-p")]).await;
        assert!(matches!(reused, Err(group_commit::CommitError::Conflict)), "{reused:?}");
        let reused = committer.commit(vec![serialized("other", 1, "k-float")]).await;
        assert!(matches!(reused, Err(group_commit::CommitError::Conflict)), "{reused:?}");
        assert_eq!(db.count("events").await, 6);
        assert_group_committed_rows_are_whole(&db).await;
    })
    .await;
}

/// Values like events' payloads and metadata, weighted to what jsonb's text
/// output treats specially: key order, escapes, non-ASCII, big integers, nesting.
fn json_values() -> impl proptest::strategy::Strategy<Value = Value> {
    use proptest::prelude::*;
    fn text() -> impl Strategy<Value = String> {
        let special = prop::sample::select(vec![
            '"', '\\', '/', '\u{7f}', 'a', 'Z', ' ', '0', '小', '明', 'é', '😀', '\u{2028}', '\u{feff}', '\u{ffff}',
        ]);
        let control = (1u32..0x20).prop_map(|c| char::from_u32(c).unwrap_or(' '));
        let any_char = any::<char>().prop_filter("jsonb refuses U+0000", |c| *c != '\0');
        prop::collection::vec(prop_oneof![3 => special, 2 => control, 2 => any_char], 0..10)
            .prop_map(|chars| chars.into_iter().collect())
    }
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1000i64..1000).prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((text(), inner), 0..8)
                .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
}

#[tokio::test]
async fn jsonb_text_renders_what_postgres_prints_for_random_values() {
    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::TestRunner;
    use wxcm_store::jsonb_text;
    const VALUES: usize = 4_000;
    const PER_QUERY: usize = 500;
    with_database(|db| async move {
        let mut runner = TestRunner::deterministic();
        let strategy = json_values();
        let mut values: Vec<Value> = (0..VALUES).map(|_| strategy.new_tree(&mut runner).unwrap().current()).collect();
        values.extend(tricky_payloads().into_iter().filter(|v| jsonb_text::render(v).is_some()));
        values.push(json!({"tenant_id": "t1", "request_hash": "h", "idempotency_key": "k", "correlation_id": "c"}));
        let mut compared = 0;
        for chunk in values.chunks(PER_QUERY) {
            // Bound as the group committer binds them: serde_json's text, parsed by Postgres.
            let texts: Vec<String> =
                sqlx::query_scalar("SELECT v::text FROM unnest($1::jsonb[]) WITH ORDINALITY AS t(v, n) ORDER BY n")
                    .bind(chunk.to_vec())
                    .fetch_all(&db.app)
                    .await
                    .unwrap();
            assert_eq!(texts.len(), chunk.len());
            for (value, text) in chunk.iter().zip(texts) {
                let rendered = jsonb_text::render(value).expect("no floats and no U+0000 here");
                assert_eq!(rendered, text, "value {value}");
                compared += 1;
            }
        }
        assert!(compared > VALUES, "{compared}");
        // Whatever render leaves to the trigger really is printed differently, or refused.
        let printed: String = sqlx::query_scalar("SELECT $1::jsonb::text")
            .bind(json!({"x": 1.0, "y": 2e3}))
            .fetch_one(&db.app)
            .await
            .unwrap();
        assert_eq!(printed, r#"{"x": 1.0, "y": 2000.0}"#);
        assert_eq!(jsonb_text::render(&json!({"x": 1.0, "y": 2e3})), None);
    })
    .await;
}

#[tokio::test]
async fn card_serials_are_unique_across_nodes_and_concurrent_registrations() {
    use wxcm_commands::ports::CardNumberAllocator;
    use wxcm_store::pg_ports::{PgShardPorts, CARD_SERIALS_PER_FETCH};
    with_database(|db| async move {
        // Two nodes of one shard, each with 100 registrations at once.
        let nodes = [
            std::sync::Arc::new(PgShardPorts::new(db.app.clone())),
            std::sync::Arc::new(PgShardPorts::new(db.app.clone())),
        ];
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..200 {
            let node = nodes[i % 2].clone();
            tasks.spawn(async move { node.next_serial().await.unwrap() });
        }
        let mut serials = Vec::new();
        while let Some(serial) = tasks.join_next().await {
            serials.push(serial.unwrap());
        }
        let distinct: std::collections::BTreeSet<u64> = serials.iter().copied().collect();
        assert_eq!(distinct.len(), 200, "every registration gets its own serial");
        // One block at a time per node: at most one partly used block each.
        let fetched: i64 = sqlx::query_scalar("SELECT last_value FROM card_serial").fetch_one(&db.admin).await.unwrap();
        assert!(fetched <= 200 + 2 * CARD_SERIALS_PER_FETCH, "{fetched} serials taken for 200 registrations");
    })
    .await;
}

// ---------------------------------------------------------------------------------
// snapshots (infra/store/src/store.rs)
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn a_load_that_replayed_a_long_tail_writes_a_snapshot() {
    use std::collections::HashMap;
    use std::sync::Arc;

    use cqrs_es::EventStore;
    use wxcm_commands::adapter::Ev;
    use wxcm_commands::repository::StateStore;
    use wxcm_domain::tenant::{Tenant, TenantEvent};
    use wxcm_domain::{Actor, TenantId};
    use wxcm_store::group_commit::GroupCommitter;
    use wxcm_store::store::{PgEventStore, SNAPSHOT_AFTER_REPLAY_EVENTS, SNAPSHOT_EVERY_EVENTS};

    const { assert!(SNAPSHOT_AFTER_REPLAY_EVENTS < SNAPSHOT_EVERY_EVENTS, "these streams cross no commit snapshot") };
    with_database(|db| async move {
        let _counters = GROUP_COMMIT_COUNTERS.lock().await;
        let committer = Arc::new(GroupCommitter::new(db.app.clone(), wxcm_store::group_commit::WORKERS_DEFAULT));
        let writer = PgEventStore::<Tenant>::new(db.app.clone(), committer.clone(), 10);
        let actor = Actor::Admin { username: "t".into() };
        // One stream at the threshold, one just below it; each written by one command.
        for (id, length) in
            [("snap-long", SNAPSHOT_AFTER_REPLAY_EVENTS), ("snap-short", SNAPSHOT_AFTER_REPLAY_EVENTS - 1)]
        {
            let tenant_id = TenantId::parse(id).unwrap();
            let mut events = vec![Ev(TenantEvent::TenantCreated {
                tenant_id,
                name: "T".into(),
                created_at: Utc::now(),
                actor: actor.clone(),
            })];
            for i in 1..length {
                events.push(Ev(TenantEvent::TenantRenamed { name: format!("T{i}"), actor: actor.clone() }));
            }
            let context = writer.load_aggregate(id).await.unwrap();
            let metadata = HashMap::from([("tenant_id".to_owned(), id.to_owned())]);
            writer.commit(events, context, metadata).await.unwrap();
        }
        assert_eq!(db.count("aggregate_snapshots").await, 0, "a commit below SNAPSHOT_EVERY_EVENTS writes none");

        // A restart: an empty cache loads each stream cold, replaying it all.
        let fresh = PgEventStore::<Tenant>::new(db.app.clone(), committer, 10);
        let (long, version) = fresh.load_state("snap-long").await.unwrap();
        assert_eq!((version, long.name.as_str()), (SNAPSHOT_AFTER_REPLAY_EVENTS, format!("T{}", version - 1).as_str()));
        let (_, version) = fresh.load_state("snap-short").await.unwrap();
        assert_eq!(version, SNAPSHOT_AFTER_REPLAY_EVENTS - 1);
        let snapshots: Vec<(String, i64)> =
            sqlx::query_as("SELECT aggregate_id, sequence FROM aggregate_snapshots ORDER BY aggregate_id")
                .fetch_all(&db.admin)
                .await
                .unwrap();
        assert_eq!(
            snapshots,
            [("snap-long".to_owned(), SNAPSHOT_AFTER_REPLAY_EVENTS as i64)],
            "only the load that replayed the threshold wrote one"
        );
    })
    .await;
}
