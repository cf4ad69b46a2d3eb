//! Hash chain of the event store: canonical bytes of a stored event, the SHA-256 link
//! between consecutive events of a stream, and verification of a whole stream.
//!
//! The specification is `schemas/event-hash-chain.md`. The BEFORE INSERT trigger of
//! migration `0001_event_store.sql` computes the same bytes in SQL; the integration
//! tests in `infra/tests/event_store_sql.rs` prove the two agree byte for byte.
//!
//! Everything above [`load_stream`] is pure: no I/O, so an auditor can feed it rows
//! from any source (a replica, a dump, a CSV export).

use std::fmt;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use uuid::Uuid;

/// Domain separation prefix of the canonical bytes; changes only with a new version.
pub const CANONICAL_PREFIX: &[u8] = b"wxcm.event.v1";

/// Length in bytes of a SHA-256 hash, and so of `prev_hash` and `hash`.
pub const HASH_BYTES: usize = 32;

/// `prev_hash` of the first event (sequence 1) of every stream.
pub const GENESIS_HASH: [u8; HASH_BYTES] = [0; HASH_BYTES];

/// `recorded_at` in UTC, always six fractional digits: Postgres keeps microseconds.
const RECORDED_AT_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";

/// One row of `events` as the auditor reads it. `payload_text` and `metadata_text` are
/// the texts Postgres returns for the stored jsonb (`payload::text`): they are hashed as
/// read, never re-serialized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub tenant_id: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_id: Uuid,
    pub recorded_at: DateTime<Utc>,
    pub event_type: String,
    pub event_version: String,
    pub payload_text: String,
    pub metadata_text: String,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

/// The fields of one event that its canonical bytes cover, borrowed: the group
/// committer computes them before the row exists.
#[derive(Debug, Clone, Copy)]
pub struct CanonicalFields<'a> {
    pub tenant_id: &'a str,
    pub aggregate_type: &'a str,
    pub aggregate_id: &'a str,
    pub sequence: i64,
    pub event_id: Uuid,
    /// Whole microseconds (what Postgres stores); finer digits are not printed.
    pub recorded_at: DateTime<Utc>,
    pub event_type: &'a str,
    pub event_version: &'a str,
    pub payload_text: &'a str,
    pub metadata_text: &'a str,
}

/// The bytes hashed for one event: [`CANONICAL_PREFIX`] then every field as `F(s)`,
/// a 4-byte big-endian length followed by the UTF-8 bytes.
pub fn canonical_bytes(event: &StoredEvent) -> Vec<u8> {
    canonical_bytes_of(&CanonicalFields {
        tenant_id: &event.tenant_id,
        aggregate_type: &event.aggregate_type,
        aggregate_id: &event.aggregate_id,
        sequence: event.sequence,
        event_id: event.event_id,
        recorded_at: event.recorded_at,
        event_type: &event.event_type,
        event_version: &event.event_version,
        payload_text: &event.payload_text,
        metadata_text: &event.metadata_text,
    })
}

/// [`canonical_bytes`] of borrowed fields.
pub fn canonical_bytes_of(event: &CanonicalFields<'_>) -> Vec<u8> {
    let sequence = event.sequence.to_string();
    let mut uuid_buffer = Uuid::encode_buffer();
    let event_id: &str = event.event_id.hyphenated().encode_lower(&mut uuid_buffer);
    let recorded_at = event.recorded_at.format(RECORDED_AT_FORMAT).to_string();
    let fields: [&str; 10] = [
        event.tenant_id,
        event.aggregate_type,
        event.aggregate_id,
        &sequence,
        event_id,
        &recorded_at,
        event.event_type,
        event.event_version,
        event.payload_text,
        event.metadata_text,
    ];
    let length = CANONICAL_PREFIX.len() + fields.iter().map(|f| 4 + f.len()).sum::<usize>();
    let mut canonical = Vec::with_capacity(length);
    canonical.extend_from_slice(CANONICAL_PREFIX);
    for field in fields {
        push_field(&mut canonical, field);
    }
    debug_assert_eq!(canonical.len(), length);
    canonical
}

fn push_field(canonical: &mut Vec<u8>, field: &str) {
    // Postgres values are at most 1 GB, so a field never needs more than 4 bytes of length.
    let length = u32::try_from(field.len()).expect("a stored field is shorter than 4 GiB");
    canonical.extend_from_slice(&length.to_be_bytes());
    canonical.extend_from_slice(field.as_bytes());
}

/// `SHA-256(prev ‖ canonical)`.
pub fn chain_hash(prev: &[u8], canonical: &[u8]) -> [u8; HASH_BYTES] {
    Sha256::new().chain_update(prev).chain_update(canonical).finalize().into()
}

/// What is wrong with one row of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViolationKind {
    /// The first row present is not sequence 1: leading rows were removed.
    StreamDoesNotStartAtOne,
    /// Sequences skip from `expected - 1` to this row: rows were removed.
    SequenceGap { expected: i64 },
    /// Another row already holds this sequence: a row was inserted.
    DuplicateSequence,
    /// `prev_hash` is not the hash of the previous row (or the genesis hash for
    /// sequence 1): a row before it was replaced, removed or inserted.
    PrevHashMismatch,
    /// `hash` is not `SHA-256(prev_hash ‖ canonical)`: the row's content changed.
    HashMismatch,
    /// The row's tenant is not the tenant of the stream's first row.
    TenantMismatch { stream_tenant: String, row_tenant: String },
}

impl ViolationKind {
    /// Stable snake_case name, also produced by the SQL audit query of the spec.
    pub fn code(&self) -> &'static str {
        match self {
            ViolationKind::StreamDoesNotStartAtOne => "stream_does_not_start_at_one",
            ViolationKind::SequenceGap { .. } => "sequence_gap",
            ViolationKind::DuplicateSequence => "duplicate_sequence",
            ViolationKind::PrevHashMismatch => "prev_hash_mismatch",
            ViolationKind::HashMismatch => "hash_mismatch",
            ViolationKind::TenantMismatch { .. } => "tenant_mismatch",
        }
    }
}

impl fmt::Display for ViolationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ViolationKind::StreamDoesNotStartAtOne => {
                write!(f, "stream does not start at seq 1 (rows removed)")
            }
            ViolationKind::SequenceGap { expected } => {
                write!(f, "sequence gap, expected seq {expected} (rows removed)")
            }
            ViolationKind::DuplicateSequence => write!(f, "duplicate sequence (row inserted)"),
            ViolationKind::PrevHashMismatch => {
                write!(f, "prev_hash does not link to the previous row (row removed, inserted or replaced)")
            }
            ViolationKind::HashMismatch => write!(f, "hash mismatch (row changed)"),
            ViolationKind::TenantMismatch { stream_tenant, row_tenant } => {
                write!(f, "tenant mismatch (row tenant {row_tenant:?}, stream tenant {stream_tenant:?})")
            }
        }
    }
}

/// One violation, naming the stream and the sequence of the offending row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainViolation {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub kind: ViolationKind,
}

impl ChainViolation {
    fn at(event: &StoredEvent, kind: ViolationKind) -> Self {
        ChainViolation {
            aggregate_type: event.aggregate_type.clone(),
            aggregate_id: event.aggregate_id.clone(),
            sequence: event.sequence,
            kind,
        }
    }
}

impl fmt::Display for ChainViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} seq {}: {}", self.aggregate_type, self.aggregate_id, self.sequence, self.kind)
    }
}

/// Checks one stream's rows, ordered by sequence, and reports every violation found
/// (an empty result means the stream is intact). Each row is checked on its own:
/// its position (start, gaps, duplicates), its link to the previous row, its own hash
/// and its tenant. A row after a gap has no known predecessor, so its link is not checked.
///
/// # Panics
/// If the rows belong to more than one stream or are not ordered by sequence: the
/// caller's query is wrong, not the data.
pub fn verify_stream(events: &[StoredEvent]) -> Vec<ChainViolation> {
    let Some(first) = events.first() else {
        return Vec::new();
    };
    let mut violations = Vec::new();
    let mut previous: Option<&[StoredEvent]> = None;
    // Rows sharing a sequence form one group; only a tampered table has groups of two.
    for group in events.chunk_by(|a, b| a.sequence == b.sequence) {
        let head = &group[0];
        assert_stream_order(first, previous, head);
        let links = expected_links(previous, head, &mut violations);
        for (index, event) in group.iter().enumerate() {
            if index > 0 {
                violations.push(ChainViolation::at(event, ViolationKind::DuplicateSequence));
            }
            check_row(first, event, links.as_deref(), &mut violations);
        }
        previous = Some(group);
    }
    violations
}

fn assert_stream_order(first: &StoredEvent, previous: Option<&[StoredEvent]>, head: &StoredEvent) {
    assert!(
        head.aggregate_type == first.aggregate_type && head.aggregate_id == first.aggregate_id,
        "verify_stream: {}/{} mixed into stream {}/{}",
        head.aggregate_type,
        head.aggregate_id,
        first.aggregate_type,
        first.aggregate_id
    );
    if let Some(previous) = previous {
        assert!(
            head.sequence > previous[0].sequence,
            "verify_stream: rows of {}/{} are not ordered by sequence",
            head.aggregate_type,
            head.aggregate_id
        );
    }
}

/// The hashes `head`'s group may link to, or `None` when its predecessor is missing
/// (the missing rows are reported here, once, on the group's first row).
fn expected_links<'a>(
    previous: Option<&'a [StoredEvent]>,
    head: &StoredEvent,
    violations: &mut Vec<ChainViolation>,
) -> Option<Vec<&'a [u8]>> {
    match previous {
        None if head.sequence == 1 => Some(vec![GENESIS_HASH.as_slice()]),
        None => {
            violations.push(ChainViolation::at(head, ViolationKind::StreamDoesNotStartAtOne));
            None
        }
        Some(previous) => {
            let expected = previous[0].sequence + 1;
            if head.sequence == expected {
                Some(previous.iter().map(|e| e.hash.as_slice()).collect())
            } else {
                violations.push(ChainViolation::at(head, ViolationKind::SequenceGap { expected }));
                None
            }
        }
    }
}

fn check_row(first: &StoredEvent, event: &StoredEvent, links: Option<&[&[u8]]>, violations: &mut Vec<ChainViolation>) {
    if let Some(links) = links {
        if !links.contains(&event.prev_hash.as_slice()) {
            violations.push(ChainViolation::at(event, ViolationKind::PrevHashMismatch));
        }
    }
    if chain_hash(&event.prev_hash, &canonical_bytes(event)).as_slice() != event.hash {
        violations.push(ChainViolation::at(event, ViolationKind::HashMismatch));
    }
    if event.tenant_id != first.tenant_id {
        let kind = ViolationKind::TenantMismatch {
            stream_tenant: first.tenant_id.clone(),
            row_tenant: event.tenant_id.clone(),
        };
        violations.push(ChainViolation::at(event, kind));
    }
}

/// One stream's rows as [`StoredEvent`]s, ordered by sequence. `$1` is the aggregate
/// type, `$2` the aggregate id.
pub const SELECT_STREAM_SQL: &str = "\
SELECT tenant_id, aggregate_type, aggregate_id, sequence, event_id, recorded_at, \
       event_type, event_version, payload::text AS payload_text, \
       metadata::text AS metadata_text, prev_hash, hash \
  FROM events \
 WHERE aggregate_type = $1 AND aggregate_id = $2 \
 ORDER BY sequence";

/// Reads one stream with [`SELECT_STREAM_SQL`], ready for [`verify_stream`].
pub async fn load_stream(
    pool: &PgPool,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let rows = sqlx::query(SELECT_STREAM_SQL).bind(aggregate_type).bind(aggregate_id).fetch_all(pool).await?;
    rows.iter().map(stored_event_from_row).collect()
}

fn stored_event_from_row(row: &PgRow) -> Result<StoredEvent, sqlx::Error> {
    Ok(StoredEvent {
        tenant_id: row.try_get("tenant_id")?,
        aggregate_type: row.try_get("aggregate_type")?,
        aggregate_id: row.try_get("aggregate_id")?,
        sequence: row.try_get("sequence")?,
        event_id: row.try_get("event_id")?,
        recorded_at: row.try_get("recorded_at")?,
        event_type: row.try_get("event_type")?,
        event_version: row.try_get("event_version")?,
        payload_text: row.try_get("payload_text")?,
        metadata_text: row.try_get("metadata_text")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// Event 1 of the worked example in schemas/event-hash-chain.md.
    fn example_event_1() -> StoredEvent {
        StoredEvent {
            tenant_id: "tenant-a".into(),
            aggregate_type: "member".into(),
            aggregate_id: "m-42".into(),
            sequence: 1,
            event_id: Uuid::parse_str("0190f3a4-7b1c-7d2e-8f3a-4b5c6d7e8f90").unwrap(),
            recorded_at: Utc.with_ymd_and_hms(2025, 3, 1, 8, 30, 15).unwrap() + chrono::Duration::microseconds(123_456),
            event_type: "MemberRegistered".into(),
            event_version: "1.0".into(),
            payload_text: r#"{"level": 1, "nickname": "小明"}"#.into(),
            metadata_text: r#"{"tenant_id": "tenant-a", "request_hash": "9f2c", "idempotency_key": "req-7"}"#.into(),
            prev_hash: GENESIS_HASH.to_vec(),
            hash: hex::decode("fd81b1b893e1db8e7e5b526ee4a2a1c2b77344a149e3c18ff309f886e234795a").unwrap(),
        }
    }

    /// Event 2 of the worked example.
    fn example_event_2() -> StoredEvent {
        StoredEvent {
            sequence: 2,
            event_id: Uuid::parse_str("0190f3a4-8c2d-7e3f-9a4b-5c6d7e8f9a01").unwrap(),
            recorded_at: Utc.with_ymd_and_hms(2025, 3, 1, 8, 31, 2).unwrap() + chrono::Duration::microseconds(500),
            event_type: "PointsGranted".into(),
            payload_text: r#"{"points": 100, "reason": "签到"}"#.into(),
            metadata_text: r#"{"tenant_id": "tenant-a", "request_hash": "77e1", "idempotency_key": "req-8"}"#.into(),
            prev_hash: example_event_1().hash,
            hash: hex::decode("c1fa0955600245753417604340c7ff997d85f87d340b4ed33f86c49dbd3f318d").unwrap(),
            ..example_event_1()
        }
    }

    /// Recomputes `hash` from the row's own `prev_hash`, as a careful forger would.
    fn reseal(mut event: StoredEvent) -> StoredEvent {
        event.hash = chain_hash(&event.prev_hash, &canonical_bytes(&event)).to_vec();
        event
    }

    /// An intact stream member/m-42 with sequences 1..=length.
    fn intact_stream(length: i64) -> Vec<StoredEvent> {
        let mut events: Vec<StoredEvent> = Vec::new();
        for sequence in 1..=length {
            let prev_hash = events.last().map_or(GENESIS_HASH.to_vec(), |e| e.hash.clone());
            events.push(reseal(StoredEvent {
                sequence,
                event_id: Uuid::from_u128(sequence as u128),
                payload_text: format!(r#"{{"points": {sequence}}}"#),
                prev_hash,
                ..example_event_1()
            }));
        }
        events
    }

    fn kinds(violations: &[ChainViolation]) -> Vec<(i64, ViolationKind)> {
        violations.iter().map(|v| (v.sequence, v.kind.clone())).collect()
    }

    #[test]
    fn worked_example_canonical_bytes_and_hashes_match_the_spec() {
        let event_1 = example_event_1();
        let canonical = canonical_bytes(&event_1);
        // The parts listed in the spec's worked example.
        let expected = [
            "7778636d2e6576656e742e7631",
            "00000008 74656e616e742d61",
            "00000006 6d656d626572",
            "00000004 6d2d3432",
            "00000001 31",
            "00000024 30313930663361342d376231632d376432652d386633612d346235633664376538663930",
            "0000001b 323032352d30332d30315430383a33303a31352e3132333435365a",
            "00000010 4d656d62657252656769737465726564",
            "00000003 312e30",
            "00000022 7b226c6576656c223a20312c20226e69636b6e616d65223a2022e5b08fe6988e227d",
            "0000004d 7b2274656e616e745f6964223a202274656e616e742d61222c2022726571756573745f68617368\
             223a202239663263222c20226964656d706f74656e63795f6b6579223a20227265712d37227d",
        ]
        .concat()
        .replace([' ', '\n'], "");
        assert_eq!(hex::encode(&canonical), expected);
        assert_eq!(canonical.len(), 265);
        assert_eq!(chain_hash(&GENESIS_HASH, &canonical).to_vec(), event_1.hash);
        let event_2 = example_event_2();
        assert_eq!(canonical_bytes(&event_2).len(), 263);
        assert_eq!(chain_hash(&event_1.hash, &canonical_bytes(&event_2)).to_vec(), event_2.hash);
        assert!(verify_stream(&[event_1, event_2]).is_empty());
    }

    #[test]
    fn length_prefix_counts_utf8_bytes_not_chars() {
        let mut canonical = Vec::new();
        push_field(&mut canonical, "小明");
        assert_eq!(canonical, [0, 0, 0, 6, 0xe5, 0xb0, 0x8f, 0xe6, 0x98, 0x8e]);
        let mut empty = Vec::new();
        push_field(&mut empty, "");
        assert_eq!(empty, [0, 0, 0, 0]);
    }

    #[test]
    fn recorded_at_always_has_six_fractional_digits() {
        let whole_second =
            StoredEvent { recorded_at: Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, 5).unwrap(), ..example_event_1() };
        let text = String::from_utf8_lossy(&canonical_bytes(&whole_second)).into_owned();
        assert!(text.contains("2025-01-02T03:04:05.000000Z"), "{text}");
        // Sub-microsecond digits cannot come from Postgres; they are dropped, not rounded.
        let nanos = StoredEvent {
            recorded_at: Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, 5).unwrap()
                + chrono::Duration::nanoseconds(999_999_999),
            ..example_event_1()
        };
        let text = String::from_utf8_lossy(&canonical_bytes(&nanos)).into_owned();
        assert!(text.contains("2025-01-02T03:04:05.999999Z"), "{text}");
    }

    #[test]
    fn every_field_is_covered_by_the_hash() {
        let base = example_event_1();
        let changed: Vec<StoredEvent> = vec![
            StoredEvent { tenant_id: "tenant-b".into(), ..base.clone() },
            StoredEvent { aggregate_type: "coupon".into(), ..base.clone() },
            StoredEvent { aggregate_id: "m-43".into(), ..base.clone() },
            StoredEvent { sequence: 2, ..base.clone() },
            StoredEvent { event_id: Uuid::nil(), ..base.clone() },
            StoredEvent { recorded_at: base.recorded_at + chrono::Duration::microseconds(1), ..base.clone() },
            StoredEvent { event_type: "MemberRenamed".into(), ..base.clone() },
            StoredEvent { event_version: "1.1".into(), ..base.clone() },
            StoredEvent { payload_text: r#"{"level": 2, "nickname": "小明"}"#.into(), ..base.clone() },
            StoredEvent { metadata_text: "{}".into(), ..base.clone() },
        ];
        for event in changed {
            assert_ne!(canonical_bytes(&event), canonical_bytes(&base), "{event:?}");
        }
        // Field boundaries are unambiguous: moving a byte between fields changes the bytes.
        let shifted = StoredEvent { aggregate_type: "memberm".into(), aggregate_id: "-42".into(), ..base.clone() };
        assert_ne!(canonical_bytes(&shifted), canonical_bytes(&base));
    }

    #[test]
    fn intact_and_empty_streams_have_no_violation() {
        assert!(verify_stream(&intact_stream(5)).is_empty());
        assert!(verify_stream(&[]).is_empty());
    }

    #[test]
    fn changed_row_breaks_its_own_hash_only() {
        let mut events = intact_stream(4);
        events[1].payload_text = r#"{"points": 9000}"#.into();
        assert_eq!(kinds(&verify_stream(&events)), [(2, ViolationKind::HashMismatch)]);
    }

    #[test]
    fn changed_and_resealed_row_breaks_the_next_link() {
        let mut events = intact_stream(4);
        events[1].payload_text = r#"{"points": 9000}"#.into();
        events[1] = reseal(events[1].clone());
        assert_eq!(kinds(&verify_stream(&events)), [(3, ViolationKind::PrevHashMismatch)]);
    }

    #[test]
    fn removed_middle_row_is_a_sequence_gap() {
        let mut events = intact_stream(4);
        events.remove(1);
        assert_eq!(kinds(&verify_stream(&events)), [(3, ViolationKind::SequenceGap { expected: 2 })]);
    }

    #[test]
    fn removed_first_row_means_the_stream_does_not_start_at_one() {
        let mut events = intact_stream(3);
        events.remove(0);
        assert_eq!(kinds(&verify_stream(&events)), [(2, ViolationKind::StreamDoesNotStartAtOne)]);
    }

    #[test]
    fn first_row_must_link_to_the_genesis_hash() {
        let mut events = intact_stream(2);
        events[0].prev_hash = vec![1; HASH_BYTES];
        events[0] = reseal(events[0].clone());
        events[1].prev_hash = events[0].hash.clone();
        events[1] = reseal(events[1].clone());
        assert_eq!(kinds(&verify_stream(&events)), [(1, ViolationKind::PrevHashMismatch)]);
    }

    #[test]
    fn duplicate_sequence_is_reported_without_blaming_the_next_row() {
        let mut events = intact_stream(3);
        let forged = reseal(StoredEvent {
            event_id: Uuid::from_u128(99),
            payload_text: r#"{"points": 9000}"#.into(),
            ..events[1].clone()
        });
        events.insert(2, forged);
        assert_eq!(kinds(&verify_stream(&events)), [(2, ViolationKind::DuplicateSequence)]);
    }

    #[test]
    fn row_of_another_tenant_is_reported() {
        let mut events = intact_stream(3);
        events[2].tenant_id = "tenant-b".into();
        events[2] = reseal(events[2].clone());
        assert_eq!(
            kinds(&verify_stream(&events)),
            [(3, ViolationKind::TenantMismatch { stream_tenant: "tenant-a".into(), row_tenant: "tenant-b".into() })]
        );
    }

    #[test]
    fn every_violation_is_reported_not_only_the_first() {
        let mut events = intact_stream(6);
        events[0].payload_text = "{}".into();
        events.remove(3);
        events[3].tenant_id = "tenant-b".into();
        assert_eq!(
            kinds(&verify_stream(&events)),
            [
                (1, ViolationKind::HashMismatch),
                (5, ViolationKind::SequenceGap { expected: 4 }),
                (5, ViolationKind::HashMismatch),
                (5, ViolationKind::TenantMismatch { stream_tenant: "tenant-a".into(), row_tenant: "tenant-b".into() }),
            ]
        );
    }

    #[test]
    fn display_names_the_stream_and_sequence() {
        let violation = ChainViolation {
            aggregate_type: "member".into(),
            aggregate_id: "abc".into(),
            sequence: 7,
            kind: ViolationKind::HashMismatch,
        };
        assert_eq!(violation.to_string(), "member/abc seq 7: hash mismatch (row changed)");
        let gap = ChainViolation { kind: ViolationKind::SequenceGap { expected: 5 }, ..violation };
        assert_eq!(gap.to_string(), "member/abc seq 7: sequence gap, expected seq 5 (rows removed)");
    }

    #[test]
    #[should_panic(expected = "mixed into stream")]
    fn rows_of_two_streams_are_a_caller_bug() {
        let mut events = intact_stream(2);
        events[1].aggregate_id = "m-43".into();
        verify_stream(&events);
    }

    #[test]
    #[should_panic(expected = "not ordered by sequence")]
    fn unordered_rows_are_a_caller_bug() {
        let mut events = intact_stream(3);
        events.swap(0, 2);
        verify_stream(&events);
    }
}
