//! The tenant digest: one hash over every stream head, recomputable with `psql`.

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::hashchain::StoredEvent;

/// The head of a stream: its last sequence and that row's hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamHead {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub hash: String,
}

impl StreamHead {
    pub fn of(rows: &[StoredEvent]) -> Option<Self> {
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
