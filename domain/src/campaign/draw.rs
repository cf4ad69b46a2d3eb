//! Verifiable draws, algorithm `wxcm-draw-v1`: the normative text is
//! `schemas/draws/SPEC.md`, the test vectors `schemas/draws/vectors.json`
//! (checked here and by the independent `schemas/draws/verify.py`).
//!
//! Everything here is a pure function of its inputs: the seed comes in from
//! the caller (a CSPRNG of the application layer), never from inside. No
//! `rand`: its shuffles and samplers are not value-stable across versions,
//! and a draw must be recomputable years later from the events alone.

use std::fmt;

use chacha20::cipher::{KeyIvInit, StreamCipher};
use chacha20::ChaCha20;
use hmac::{Hmac, KeyInit, Mac};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::MemberId;

/// Name and version of the algorithm, recorded on every draw event.
pub const ALGORITHM: &str = "wxcm-draw-v1";
/// Domain-separation tag of the beacon mixing (ASCII, no terminator).
pub const BEACON_TAG: &[u8] = b"wxcm-draw-v1/beacon";
/// Domain-separation tag of the entrant list hash (ASCII, no terminator).
pub const ENTRANTS_TAG: &[u8] = b"wxcm-draw-v1/entrants";
/// Entrants one list may hold.
pub const ENTRANTS_MAX: usize = 100_000;
/// Tickets one entrant may hold (a popularity lottery gives one per friend).
pub const TICKETS_PER_ENTRANT_MAX: u32 = 1_000_000;
/// Winners one draw may pick.
pub const WINNERS_MAX: u32 = 1_000;
/// Bytes of a beacon value (drand's randomness is 32, NIST's pulse 64).
pub const BEACON_BYTES_MAX: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DrawError {
    #[error("an entrant list holds at most {ENTRANTS_MAX} entrants")]
    TooManyEntrants,
    #[error("member {0} appears twice in the entrant list")]
    DuplicateEntrant(MemberId),
    #[error("an entrant holds at most {TICKETS_PER_ENTRANT_MAX} tickets")]
    TooManyTickets,
    #[error("a draw picks 1..={WINNERS_MAX} winners")]
    WinnersOutOfRange,
    #[error("the prize table has no weight in force")]
    EmptyTable,
    /// Practically unreachable (probability below 2^-1000): the stream or the
    /// re-hash counter ran out before an unbiased value came up.
    #[error("the random stream ran out before an unbiased value")]
    StreamExhausted,
}

/// 32 bytes written as 64 lowercase hex digits.
macro_rules! hex32 {
    ($(#[$doc:meta])* $name:ident, $what:literal, debug = $debug:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
        #[serde(try_from = "String", into = "String")]
        #[schemars(extend("pattern" = "^[0-9a-f]{64}$"))]
        pub struct $name([u8; 32]);

        impl $name {
            pub const fn from_bytes(bytes: [u8; 32]) -> Self {
                Self(bytes)
            }
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }
            /// 64 lowercase hex digits (uppercase is refused: one spelling per value).
            pub fn parse(s: &str) -> Result<Self, crate::IdError> {
                let invalid = crate::IdError::Charset { what: $what, allowed: "64 lowercase hex digits" };
                if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                    return Err(invalid);
                }
                let mut bytes = [0u8; 32];
                hex::decode_to_slice(s, &mut bytes).map_err(|_| invalid)?;
                Ok(Self(bytes))
            }
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
        }
        impl TryFrom<String> for $name {
            type Error = crate::IdError;
            fn try_from(s: String) -> Result<Self, crate::IdError> {
                Self::parse(&s)
            }
        }
        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.to_hex()
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                $debug(stringify!($name), &self.0, f)
            }
        }
    };
}

fn debug_hex(name: &str, bytes: &[u8; 32], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    write!(f, "{name}({})", hex::encode(bytes))
}

/// A seed is secret until its draw reveals it: commands carrying it may be
/// logged, so `Debug` never prints it.
fn debug_redacted(name: &str, _: &[u8; 32], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    write!(f, "{name}(<redacted>)")
}

hex32!(
    /// The secret seed of a draw: 32 bytes from the application's CSPRNG,
    /// sealed at rest until the draw reveals it.
    DrawSeed,
    "draw seed",
    debug = debug_redacted
);
hex32!(
    /// SHA-256 of a [`DrawSeed`], published before entries open.
    SeedCommitment,
    "seed commitment",
    debug = debug_hex
);
hex32!(
    /// SHA-256 of a canonical entrant list (see [`EntrantList::hash`]).
    EntrantsHash,
    "entrants hash",
    debug = debug_hex
);

impl DrawSeed {
    /// The commitment to this seed: SHA-256 of its 32 bytes.
    pub fn commitment(&self) -> SeedCommitment {
        SeedCommitment(Sha256::digest(self.0).into())
    }
}

impl SeedCommitment {
    /// Whether `seed` is the seed committed to.
    pub fn opens_to(&self, seed: &DrawSeed) -> bool {
        seed.commitment() == *self
    }
}

/// An external randomness beacon's value for a round fixed in advance
/// (1..=[`BEACON_BYTES_MAX`] bytes, lowercase hex).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "String", into = "String")]
#[schemars(extend("pattern" = "^([0-9a-f]{2}){1,64}$"))]
pub struct BeaconValue(Vec<u8>);

impl BeaconValue {
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, crate::IdError> {
        if bytes.is_empty() || bytes.len() > BEACON_BYTES_MAX {
            return Err(crate::IdError::Length {
                what: "beacon value",
                min: 1,
                max: BEACON_BYTES_MAX,
                len: bytes.len(),
            });
        }
        Ok(Self(bytes))
    }
    pub fn parse(s: &str) -> Result<Self, crate::IdError> {
        let invalid = crate::IdError::Charset { what: "beacon value", allowed: "lowercase hex digits, whole bytes" };
        if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(invalid);
        }
        Self::from_bytes(hex::decode(s).map_err(|_| invalid)?)
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl TryFrom<String> for BeaconValue {
    type Error = crate::IdError;
    fn try_from(s: String) -> Result<Self, crate::IdError> {
        Self::parse(&s)
    }
}

impl From<BeaconValue> for String {
    fn from(v: BeaconValue) -> String {
        hex::encode(v.0)
    }
}

/// One entrant of a draw and the tickets they hold (0 is allowed and never
/// wins: a popularity lottery's sharer whom no friend visited).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Entrant {
    pub member_id: MemberId,
    pub tickets: u32,
}

/// A frozen entrant list in canonical order: ascending by the member id's 16
/// bytes, each member once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntrantList(Vec<Entrant>);

impl EntrantList {
    /// Sorts `entrants` into the canonical order; refuses duplicates and
    /// lists or ticket counts past the limits.
    pub fn new(mut entrants: Vec<Entrant>) -> Result<Self, DrawError> {
        if entrants.len() > ENTRANTS_MAX {
            return Err(DrawError::TooManyEntrants);
        }
        if entrants.iter().any(|e| e.tickets > TICKETS_PER_ENTRANT_MAX) {
            return Err(DrawError::TooManyTickets);
        }
        entrants.sort_by_key(|e| *e.member_id.as_uuid().as_bytes());
        if let Some(pair) = entrants.windows(2).find(|w| w[0].member_id == w[1].member_id) {
            return Err(DrawError::DuplicateEntrant(pair[0].member_id));
        }
        Ok(Self(entrants))
    }

    pub fn entrants(&self) -> &[Entrant] {
        &self.0
    }

    pub fn total_tickets(&self) -> u64 {
        self.0.iter().map(|e| u64::from(e.tickets)).sum()
    }

    /// SHA-256(`ENTRANTS_TAG` ‖ u32be(count) ‖ for each entrant: member id
    /// (16 bytes) ‖ u32be(tickets)).
    pub fn hash(&self) -> EntrantsHash {
        let mut hasher = Sha256::new();
        hasher.update(ENTRANTS_TAG);
        // At most ENTRANTS_MAX entrants: the count fits.
        hasher.update(u32::try_from(self.0.len()).unwrap_or(u32::MAX).to_be_bytes());
        for e in &self.0 {
            hasher.update(e.member_id.as_uuid().as_bytes());
            hasher.update(e.tickets.to_be_bytes());
        }
        EntrantsHash(hasher.finalize().into())
    }
}

/// The ChaCha20 key of a draw: the seed itself, or with a beacon
/// SHA-256(`BEACON_TAG` ‖ seed ‖ beacon).
pub fn draw_key(seed: &DrawSeed, beacon: Option<&BeaconValue>) -> [u8; 32] {
    match beacon {
        None => seed.0,
        Some(beacon) => {
            let mut hasher = Sha256::new();
            hasher.update(BEACON_TAG);
            hasher.update(seed.0);
            hasher.update(&beacon.0);
            hasher.finalize().into()
        }
    }
}

/// `r` is accepted for a uniform value below `n` when `r < 2^64 − (2^64 mod n)`:
/// the accepted range is a whole number of copies of `0..n`, so `r mod n` is
/// unbiased.
fn unbiased(r: u64, n: u64) -> Option<u64> {
    let rem = (u64::MAX % n + 1) % n; // 2^64 mod n
    r.checked_add(rem).map(|_| r % n)
}

/// The keystream of ChaCha20 (RFC 8439: 20 rounds, 96-bit nonce of zeros,
/// block counter from 0) read as little-endian u64s.
struct KeyStream {
    cipher: ChaCha20,
    block: [u8; 64],
    used: usize,
}

impl KeyStream {
    fn new(key: [u8; 32]) -> Self {
        Self { cipher: ChaCha20::new(&key.into(), &[0u8; 12].into()), block: [0; 64], used: 64 }
    }

    fn next_u64(&mut self) -> Result<u64, DrawError> {
        if self.used == self.block.len() {
            self.block = [0; 64];
            self.cipher.try_apply_keystream(&mut self.block).map_err(|_| DrawError::StreamExhausted)?;
            self.used = 0;
        }
        let mut word = [0u8; 8];
        word.copy_from_slice(&self.block[self.used..self.used + 8]);
        self.used += 8;
        Ok(u64::from_le_bytes(word))
    }

    /// A uniform value in `0..n` (`n > 0`), rejecting biased words.
    fn below(&mut self, n: u64) -> Result<u64, DrawError> {
        loop {
            if let Some(v) = unbiased(self.next_u64()?, n) {
                return Ok(v);
            }
        }
    }
}

/// Cumulative ticket counts with removal, as a Fenwick tree: the same
/// selection as the spec's linear walk, in O(log n) per pick.
struct Tickets {
    tree: Vec<u64>,
    total: u64,
}

impl Tickets {
    fn new(entrants: &[Entrant]) -> Self {
        let n = entrants.len();
        let mut tree = vec![0u64; n + 1];
        for (i, e) in entrants.iter().enumerate() {
            let mut j = i + 1;
            while j <= n {
                tree[j] += u64::from(e.tickets);
                j += j & j.wrapping_neg();
            }
        }
        Self { tree, total: entrants.iter().map(|e| u64::from(e.tickets)).sum() }
    }

    /// The first index whose cumulative count (inclusive) exceeds `r < total`.
    fn find(&self, mut r: u64) -> usize {
        let n = self.tree.len() - 1;
        let mut pos = 0;
        let mut step = n.checked_next_power_of_two().unwrap_or(0).max(1);
        while step > 0 {
            let next = pos + step;
            if next <= n && self.tree[next] <= r {
                pos = next;
                r -= self.tree[next];
            }
            step /= 2;
        }
        pos
    }

    fn remove(&mut self, index: usize, tickets: u32) {
        let n = self.tree.len() - 1;
        let mut j = index + 1;
        while j <= n {
            self.tree[j] -= u64::from(tickets);
            j += j & j.wrapping_neg();
        }
        self.total -= u64::from(tickets);
    }
}

/// Up to `winners` distinct members, in draw order (rank 1 first), chance by
/// tickets, without replacement. Fewer when fewer entrants hold tickets.
pub fn draw_winners(
    seed: &DrawSeed,
    beacon: Option<&BeaconValue>,
    list: &EntrantList,
    winners: u32,
) -> Result<Vec<MemberId>, DrawError> {
    if winners == 0 || winners > WINNERS_MAX {
        return Err(DrawError::WinnersOutOfRange);
    }
    let mut stream = KeyStream::new(draw_key(seed, beacon));
    let mut tickets = Tickets::new(&list.0);
    let mut drawn = Vec::new();
    while drawn.len() < winners as usize && tickets.total > 0 {
        let r = stream.below(tickets.total)?;
        let index = tickets.find(r);
        let entrant = list.0[index];
        drawn.push(entrant.member_id);
        tickets.remove(index, entrant.tickets);
    }
    Ok(drawn)
}

/// An instant draw's roll: a uniform value in `0..total_weight` from
/// HMAC-SHA256(key = seed, member id (16 bytes) ‖ u64be(nonce) ‖ u32be(counter)),
/// counter 0, 1, … until the first 8 bytes (u64 big-endian) are unbiased.
pub fn shake_roll(seed: &DrawSeed, member: MemberId, nonce: u64, total_weight: u64) -> Result<u64, DrawError> {
    if total_weight == 0 {
        return Err(DrawError::EmptyTable);
    }
    for counter in 0..=u32::MAX {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&seed.0).map_err(|_| DrawError::StreamExhausted)?;
        mac.update(member.as_uuid().as_bytes());
        mac.update(&nonce.to_be_bytes());
        mac.update(&counter.to_be_bytes());
        let tag = mac.finalize().into_bytes();
        let mut word = [0u8; 8];
        word.copy_from_slice(&tag[..8]);
        if let Some(v) = unbiased(u64::from_be_bytes(word), total_weight) {
            return Ok(v);
        }
    }
    Err(DrawError::StreamExhausted)
}

/// The slot a roll lands on: the first slot (in table order) whose cumulative
/// weight exceeds `roll`. Slots of weight 0 (not in force) are never hit.
/// `None` when `roll` is not below the total.
pub fn slot_for_roll(weights: &[u64], roll: u64) -> Option<usize> {
    let mut cumulative = 0u64;
    for (i, w) in weights.iter().enumerate() {
        cumulative = cumulative.checked_add(*w)?;
        if roll < cumulative {
            return Some(i);
        }
    }
    None
}

#[cfg(test)]
#[path = "draw_tests.rs"]
mod tests;
