//! The draw functions against the spec's vectors (`schemas/draws/vectors.json`,
//! also recomputed by the independent `schemas/draws/verify.py`), against a
//! naive transcription of the spec, and their properties.
//!
//! Regenerate the vectors after a deliberate change of the algorithm (which
//! needs a new algorithm version, never an edit of v1):
//! `WXCM_WRITE_DRAW_VECTORS=1 cargo test -p wxcm-domain draw_vectors`

use std::collections::BTreeSet;
use std::path::PathBuf;

use proptest::prelude::*;
use serde_json::{json, Value};
use uuid::Uuid;

use super::*;

fn sha(label: &str) -> [u8; 32] {
    Sha256::digest(label.as_bytes()).into()
}

fn seed(label: &str) -> DrawSeed {
    DrawSeed::from_bytes(sha(label))
}

fn member(n: u128) -> MemberId {
    MemberId::from_uuid(Uuid::from_u128(n))
}

/// A member id that does not sort like its label.
fn hashed_member(label: &str) -> MemberId {
    let bytes = sha(label);
    let mut id = [0u8; 16];
    id.copy_from_slice(&bytes[..16]);
    MemberId::from_uuid(Uuid::from_bytes(id))
}

fn list(entrants: &[(MemberId, u32)]) -> EntrantList {
    EntrantList::new(entrants.iter().map(|(m, t)| Entrant { member_id: *m, tickets: *t }).collect()).unwrap()
}

/// The spec's selection, transcribed literally: a linear walk over the
/// remaining entrants and removal from the list.
fn naive_draw(seed: &DrawSeed, beacon: Option<&BeaconValue>, list: &EntrantList, n: u32) -> Vec<MemberId> {
    let mut stream = KeyStream::new(draw_key(seed, beacon));
    let mut remaining: Vec<Entrant> = list.entrants().to_vec();
    let mut out = Vec::new();
    loop {
        let total: u64 = remaining.iter().map(|e| u64::from(e.tickets)).sum();
        if out.len() == n as usize || total == 0 {
            return out;
        }
        let r = stream.below(total).unwrap();
        let mut cumulative = 0;
        let index = remaining
            .iter()
            .position(|e| {
                cumulative += u64::from(e.tickets);
                cumulative > r
            })
            .unwrap();
        out.push(remaining.remove(index).member_id);
    }
}

// ---------------------------------------------------------------- building blocks

/// RFC 8439 appendix A.1, test vector #1: key and nonce of zeros, block 0.
#[test]
fn the_keystream_is_rfc_8439_chacha20_read_as_little_endian_words() {
    let mut stream = KeyStream::new([0; 32]);
    let expected = "76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7\
                    da41597c5157488d7724e03fb8d84a376a43b8f41518a11cc387b669b2ee6586";
    let words: Vec<u64> = (0..8).map(|_| stream.next_u64().unwrap()).collect();
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    assert_eq!(hex::encode(bytes), expected);
    // The next word comes from block 1.
    let mut block1 = ChaCha20::new(&[0u8; 32].into(), &[0u8; 12].into());
    let mut two = [0u8; 72];
    block1.apply_keystream(&mut two);
    assert_eq!(stream.next_u64().unwrap().to_le_bytes(), two[64..72]);
}

#[test]
fn the_rejection_rule_keeps_whole_copies_of_the_range() {
    // n = 3: 2^64 mod 3 = 1, so only u64::MAX is rejected.
    assert_eq!(unbiased(u64::MAX, 3), None);
    assert_eq!(unbiased(u64::MAX - 1, 3), Some((u64::MAX - 1) % 3));
    // A power of two rejects nothing.
    assert_eq!(unbiased(u64::MAX, 1 << 20), Some((1 << 20) - 1));
    assert_eq!(unbiased(u64::MAX, 1), Some(0));
    // n = 2^63 + 1: 2^64 mod n = 2^63 − 1, so only 0..n is kept (one copy).
    let n = (1u64 << 63) + 1;
    assert_eq!(unbiased(n - 1, n), Some(n - 1));
    assert_eq!(unbiased(n, n), None);
    assert_eq!(unbiased(u64::MAX, n), None);
}

#[test]
fn a_commitment_opens_only_to_its_seed() {
    let s = seed("a");
    let c = s.commitment();
    assert_eq!(c.as_bytes(), &<[u8; 32]>::from(Sha256::digest(s.as_bytes())));
    assert!(c.opens_to(&s));
    assert!(!c.opens_to(&seed("b")));
    assert_eq!(format!("{s:?}"), "DrawSeed(<redacted>)");
    assert!(format!("{c:?}").contains(&c.to_hex()));
}

#[test]
fn hex_values_have_one_spelling() {
    let s = seed("a").to_hex();
    assert_eq!(DrawSeed::parse(&s).unwrap(), seed("a"));
    assert!(DrawSeed::parse(&s.to_uppercase()).is_err());
    assert!(DrawSeed::parse(&s[..62]).is_err());
    assert!(DrawSeed::parse(&format!("{s}00")).is_err());
    assert!(serde_json::from_value::<SeedCommitment>(json!("zz")).is_err());
    assert!(BeaconValue::parse("").is_err());
    assert!(BeaconValue::parse("abc").is_err());
    assert!(BeaconValue::parse("AB").is_err());
    assert!(BeaconValue::parse(&"ab".repeat(BEACON_BYTES_MAX)).is_ok());
    assert!(BeaconValue::parse(&"ab".repeat(BEACON_BYTES_MAX + 1)).is_err());
}

#[test]
fn the_beacon_changes_the_key_and_its_absence_keeps_the_seed() {
    let s = seed("a");
    assert_eq!(draw_key(&s, None), *s.as_bytes());
    let beacon = BeaconValue::parse("00").unwrap();
    let mut expected = Sha256::new();
    expected.update(b"wxcm-draw-v1/beacon");
    expected.update(s.as_bytes());
    expected.update([0u8]);
    assert_eq!(draw_key(&s, Some(&beacon)), <[u8; 32]>::from(expected.finalize()));
}

#[test]
fn entrant_lists_are_canonical_and_bounded() {
    let a = list(&[(member(2), 1), (member(1), 3)]);
    let b = list(&[(member(1), 3), (member(2), 1)]);
    assert_eq!(a, b);
    assert_eq!(a.hash(), b.hash());
    assert_eq!(a.entrants()[0].member_id, member(1));
    assert_eq!(a.total_tickets(), 4);
    let twice = vec![Entrant { member_id: member(1), tickets: 1 }, Entrant { member_id: member(1), tickets: 2 }];
    assert_eq!(EntrantList::new(twice), Err(DrawError::DuplicateEntrant(member(1))));
    let heavy = vec![Entrant { member_id: member(1), tickets: TICKETS_PER_ENTRANT_MAX + 1 }];
    assert_eq!(EntrantList::new(heavy), Err(DrawError::TooManyTickets));
    assert!(list(&[(member(1), TICKETS_PER_ENTRANT_MAX)]).total_tickets() > 0);
    let many = (0..=ENTRANTS_MAX as u128).map(|n| Entrant { member_id: member(n), tickets: 1 }).collect();
    assert_eq!(EntrantList::new(many), Err(DrawError::TooManyEntrants));
    // The empty list has a hash too: tag ‖ u32be(0).
    let mut empty = Sha256::new();
    empty.update(b"wxcm-draw-v1/entrants");
    empty.update([0u8; 4]);
    assert_eq!(list(&[]).hash().as_bytes(), &<[u8; 32]>::from(empty.finalize()));
}

#[test]
fn a_draw_picks_one_to_a_thousand_winners() {
    let l = list(&[(member(1), 1)]);
    assert_eq!(draw_winners(&seed("a"), None, &l, 0), Err(DrawError::WinnersOutOfRange));
    assert_eq!(draw_winners(&seed("a"), None, &l, WINNERS_MAX + 1), Err(DrawError::WinnersOutOfRange));
    assert_eq!(draw_winners(&seed("a"), None, &l, WINNERS_MAX), Ok(vec![member(1)]));
    assert_eq!(draw_winners(&seed("a"), None, &list(&[]), 3), Ok(vec![]));
    assert_eq!(draw_winners(&seed("a"), None, &list(&[(member(1), 0)]), 3), Ok(vec![]));
}

#[test]
fn a_roll_lands_on_the_first_slot_whose_cumulative_weight_exceeds_it() {
    let weights = [3, 0, 2, 5];
    let slots: Vec<_> = (0..11).map(|r| slot_for_roll(&weights, r)).collect();
    let expected = [0, 0, 0, 2, 2, 3, 3, 3, 3, 3].map(Some);
    assert_eq!(&slots[..10], &expected);
    assert_eq!(slots[10], None, "a roll at the total matches no slot (the peers' off-by-one)");
    assert_eq!(shake_roll(&seed("a"), member(1), 1, 0), Err(DrawError::EmptyTable));
}

// ---------------------------------------------------------------- vectors

fn vectors_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../schemas/draws/vectors.json")
}

struct PeriodicCase {
    name: &'static str,
    seed: DrawSeed,
    beacon: Option<BeaconValue>,
    entrants: Vec<(MemberId, u32)>,
    winners: u32,
}

fn periodic_cases() -> Vec<PeriodicCase> {
    let members: Vec<MemberId> = (0..12).map(|i| hashed_member(&format!("member-{i}"))).collect();
    let tickets = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1];
    let weighted = [5, 1, 0, 1_000_000, 2, 1, 3, 0, 7, 1, 1, 40];
    let case = |name, seed_label: &str, beacon: Option<&str>, t: &[u32], n: usize, winners| PeriodicCase {
        name,
        seed: seed(seed_label),
        beacon: beacon.map(|b| BeaconValue::parse(b).unwrap()),
        entrants: members.iter().copied().zip(t.iter().copied()).take(n).collect(),
        winners,
    };
    let drand = "8c2c5ba4cd2b0ab6d6e6bbf4fa3e4d1bfbbb0c1be1a2b7e5f0a3d7ab2e4e9c11";
    vec![
        case("one ticket each, 3 of 12", "seed-1", None, &tickets, 12, 3),
        case("one ticket each, beacon mixed", "seed-1", Some(drand), &tickets, 12, 3),
        case("weights by tickets, zero tickets never win", "seed-2", None, &weighted, 12, 6),
        case("more winners than entrants: everyone with tickets, in draw order", "seed-3", None, &weighted, 12, 20),
        case("a single entrant", "seed-4", None, &tickets, 1, 1),
        case("nobody entered", "seed-5", None, &tickets, 0, 2),
        case("a one-byte beacon", "seed-6", Some("ff"), &weighted, 12, 4),
    ]
}

struct ShakeCase {
    seed: DrawSeed,
    member: MemberId,
    nonce: u64,
    weights: Vec<u64>,
}

fn shake_cases() -> Vec<ShakeCase> {
    let case = |seed_label: &str, member_label: &str, nonce, weights: &[u64]| ShakeCase {
        seed: seed(seed_label),
        member: hashed_member(member_label),
        nonce,
        weights: weights.to_vec(),
    };
    vec![
        case("shake-1", "member-0", 1, &[10, 20, 70]),
        case("shake-1", "member-0", 2, &[10, 20, 70]),
        case("shake-1", "member-1", 1, &[10, 20, 70]),
        // The same roll input after the first prize depleted: its weight left the table.
        case("shake-1", "member-0", 1, &[0, 20, 70]),
        case("shake-2", "member-2", 3, &[1, 1, 1, 1, 1, 1, 1, 1_000_000]),
        case("shake-2", "member-3", u64::MAX, &[7]),
        case("shake-3", "member-4", 4_294_967_296, &[1_000_000, 999_999, 3]),
    ]
}

fn generate_vectors() -> Value {
    let periodic: Vec<Value> = periodic_cases()
        .into_iter()
        .map(|c| {
            let l = list(&c.entrants);
            let winners = draw_winners(&c.seed, c.beacon.as_ref(), &l, c.winners).unwrap();
            // Entrants as an operator might list them (not canonical): the reader sorts.
            let mut entrants: Vec<_> = c.entrants.iter().map(|(m, t)| json!({"member_id": m, "tickets": t})).collect();
            entrants.reverse();
            json!({
                "name": c.name,
                "seed": c.seed.to_hex(),
                "beacon": c.beacon.clone().map(String::from),
                "entrants": entrants,
                "winners": c.winners,
                "expected": {
                    "commitment": c.seed.commitment().to_hex(),
                    "draw_key": hex::encode(draw_key(&c.seed, c.beacon.as_ref())),
                    "entrants_hash": l.hash().to_hex(),
                    "total_tickets": l.total_tickets(),
                    "winners": winners,
                },
            })
        })
        .collect();
    let shake: Vec<Value> = shake_cases()
        .into_iter()
        .map(|c| {
            let total: u64 = c.weights.iter().sum();
            let roll = shake_roll(&c.seed, c.member, c.nonce, total).unwrap();
            json!({
                "seed": c.seed.to_hex(),
                "member_id": c.member,
                "nonce": c.nonce.to_string(),
                "weights": c.weights,
                "expected": {
                    "commitment": c.seed.commitment().to_hex(),
                    "total_weight": total,
                    "roll": roll,
                    "slot": slot_for_roll(&c.weights, roll),
                },
            })
        })
        .collect();
    let keystream: Vec<Value> = ["seed-1", "seed-2"]
        .into_iter()
        .map(|label| {
            let mut stream = KeyStream::new(*seed(label).as_bytes());
            let bytes: Vec<u8> = (0..16).flat_map(|_| stream.next_u64().unwrap().to_le_bytes()).collect();
            json!({"key": seed(label).to_hex(), "first_128_bytes": hex::encode(bytes)})
        })
        .collect();
    json!({
        "algorithm": ALGORITHM,
        "specification": "schemas/draws/SPEC.md",
        "notes": "hex is lowercase; member ids are UUIDs whose 16 bytes are hashed in RFC 4122 order; \
                  entrants are listed in no particular order (sort them); nonce is a decimal string (u64)",
        "keystream": keystream,
        "periodic": periodic,
        "shake": shake,
    })
}

/// Reads the committed vectors and recomputes every one of them from the
/// inputs they state (not from the cases above), so the file is checked as
/// a third party would check it.
fn check_vectors(doc: &Value) {
    assert_eq!(doc["algorithm"], ALGORITHM);
    for v in doc["keystream"].as_array().unwrap() {
        let mut stream = KeyStream::new(*DrawSeed::parse(v["key"].as_str().unwrap()).unwrap().as_bytes());
        let bytes: Vec<u8> = (0..16).flat_map(|_| stream.next_u64().unwrap().to_le_bytes()).collect();
        assert_eq!(hex::encode(bytes), v["first_128_bytes"].as_str().unwrap());
    }
    for v in doc["periodic"].as_array().unwrap() {
        let seed = DrawSeed::parse(v["seed"].as_str().unwrap()).unwrap();
        let beacon = v["beacon"].as_str().map(|b| BeaconValue::parse(b).unwrap());
        let entrants: Vec<Entrant> = serde_json::from_value(v["entrants"].clone()).unwrap();
        let l = EntrantList::new(entrants).unwrap();
        let n = u32::try_from(v["winners"].as_u64().unwrap()).unwrap();
        let e = &v["expected"];
        let name = &v["name"];
        assert_eq!(seed.commitment().to_hex(), e["commitment"].as_str().unwrap(), "{name}");
        assert_eq!(hex::encode(draw_key(&seed, beacon.as_ref())), e["draw_key"].as_str().unwrap(), "{name}");
        assert_eq!(l.hash().to_hex(), e["entrants_hash"].as_str().unwrap(), "{name}");
        assert_eq!(l.total_tickets(), e["total_tickets"].as_u64().unwrap(), "{name}");
        let expected: Vec<MemberId> = serde_json::from_value(e["winners"].clone()).unwrap();
        assert_eq!(draw_winners(&seed, beacon.as_ref(), &l, n).unwrap(), expected, "{name}");
        assert_eq!(naive_draw(&seed, beacon.as_ref(), &l, n), expected, "{name}");
    }
    for v in doc["shake"].as_array().unwrap() {
        let seed = DrawSeed::parse(v["seed"].as_str().unwrap()).unwrap();
        let member: MemberId = serde_json::from_value(v["member_id"].clone()).unwrap();
        let nonce: u64 = v["nonce"].as_str().unwrap().parse().unwrap();
        let weights: Vec<u64> = serde_json::from_value(v["weights"].clone()).unwrap();
        let e = &v["expected"];
        let total: u64 = weights.iter().sum();
        assert_eq!(total, e["total_weight"].as_u64().unwrap());
        let roll = shake_roll(&seed, member, nonce, total).unwrap();
        assert_eq!(roll, e["roll"].as_u64().unwrap());
        assert_eq!(slot_for_roll(&weights, roll), e["slot"].as_u64().map(|s| s as usize));
    }
}

#[test]
fn draw_vectors_are_current_and_recompute() {
    let generated = generate_vectors();
    let path = vectors_path();
    if std::env::var_os("WXCM_WRITE_DRAW_VECTORS").is_some_and(|v| v == "1") {
        std::fs::write(&path, format!("{}\n", serde_json::to_string_pretty(&generated).unwrap())).unwrap();
    }
    let committed: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    check_vectors(&committed);
    assert_eq!(
        committed, generated,
        "schemas/draws/vectors.json differs from what wxcm-draw-v1 gives: v1 must never change"
    );
    // The vectors exercise what they claim to.
    let periodic = committed["periodic"].as_array().unwrap();
    assert!(periodic.iter().any(|v| v["beacon"].is_string()));
    assert!(periodic.iter().any(|v| v["entrants"].as_array().unwrap().iter().any(|e| e["tickets"] == 0)));
}

/// The independent implementation (Python's stdlib and a pure-Python
/// ChaCha20) agrees with every vector. Needs `python3`; fails loudly without.
#[test]
fn the_independent_python_verifier_agrees() {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../schemas/draws/verify.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(vectors_path())
        .output()
        .expect("python3 runs schemas/draws/verify.py (install python3)");
    assert!(
        out.status.success(),
        "verify.py failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("all vectors agree"));
}

// ---------------------------------------------------------------- properties

fn entrants() -> impl Strategy<Value = Vec<(MemberId, u32)>> {
    prop::collection::btree_map(0u128..400, prop_oneof![1 => Just(0u32), 6 => 1u32..5, 1 => 5u32..1000], 0..40)
        .prop_map(|m| m.into_iter().map(|(k, t)| (member(k), t)).collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn winners_are_distinct_ticket_holders_and_everyone_when_n_covers_them(
        s in any::<[u8; 32]>(),
        e in entrants(),
        n in 1u32..50,
        beacon in prop::option::of(prop::collection::vec(any::<u8>(), 1..=BEACON_BYTES_MAX)),
    ) {
        let seed = DrawSeed::from_bytes(s);
        let beacon = beacon.map(|b| BeaconValue::from_bytes(b).unwrap());
        let l = list(&e);
        let winners = draw_winners(&seed, beacon.as_ref(), &l, n).unwrap();
        let distinct: BTreeSet<_> = winners.iter().copied().collect();
        prop_assert_eq!(distinct.len(), winners.len(), "a member won twice");
        let holders: BTreeSet<_> = e.iter().filter(|(_, t)| *t > 0).map(|(m, _)| *m).collect();
        prop_assert!(distinct.is_subset(&holders), "a member with no ticket won");
        prop_assert_eq!(winners.len(), holders.len().min(n as usize));
        if n as usize >= holders.len() {
            prop_assert_eq!(distinct, holders);
        }
        // Deterministic, and the Fenwick tree selects what the spec's walk does.
        prop_assert_eq!(&draw_winners(&seed, beacon.as_ref(), &l, n).unwrap(), &winners);
        prop_assert_eq!(naive_draw(&seed, beacon.as_ref(), &l, n), winners.clone());
        // The input order does not matter: the list is canonical.
        let mut reversed = e.clone();
        reversed.reverse();
        prop_assert_eq!(draw_winners(&seed, beacon.as_ref(), &list(&reversed), n).unwrap(), winners.clone());
        // Fewer winners are a prefix of more: rank k does not depend on N.
        if n > 1 {
            let fewer = draw_winners(&seed, beacon.as_ref(), &l, n - 1).unwrap();
            prop_assert_eq!(&winners[..fewer.len()], &fewer[..]);
        }
    }

    #[test]
    fn changing_one_entrant_changes_the_list_hash(
        e in entrants().prop_filter("someone entered", |e| !e.is_empty()),
        pick in any::<prop::sample::Index>(),
        change in 0u8..3,
    ) {
        let before = list(&e).hash();
        let mut changed = e.clone();
        let i = pick.index(changed.len());
        match change {
            0 => changed[i].1 = changed[i].1.wrapping_add(1) % (TICKETS_PER_ENTRANT_MAX + 1),
            1 => changed[i].0 = member(10_000 + i as u128),
            _ => { changed.remove(i); }
        }
        prop_assert_ne!(list(&changed).hash(), before);
    }

    #[test]
    fn shake_rolls_are_below_the_total_and_land_on_a_slot_in_force(
        s in any::<[u8; 32]>(),
        m in any::<u128>(),
        nonce in any::<u64>(),
        weights in prop::collection::vec(prop_oneof![1 => Just(0u64), 3 => 1u64..1_000_000], 1..32)
            .prop_filter("some weight in force", |w| w.iter().any(|x| *x > 0)),
    ) {
        let total: u64 = weights.iter().sum();
        let roll = shake_roll(&DrawSeed::from_bytes(s), member(m), nonce, total).unwrap();
        prop_assert!(roll < total);
        let slot = slot_for_roll(&weights, roll).unwrap();
        prop_assert!(weights[slot] > 0, "a depleted slot was hit");
        prop_assert_eq!(shake_roll(&DrawSeed::from_bytes(s), member(m), nonce, total).unwrap(), roll);
    }
}
