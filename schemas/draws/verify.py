#!/usr/bin/env python3
"""An independent implementation of wxcm-draw-v1 (schemas/draws/SPEC.md).

Written from the specification with Python's standard library only (hashlib,
hmac) and a pure-Python ChaCha20 (RFC 8439), which the standard library lacks.
It recomputes every vector in vectors.json and exits non-zero on any
difference.

    python3 schemas/draws/verify.py [path/to/vectors.json]
"""

import hashlib
import hmac
import json
import struct
import sys
import uuid
from pathlib import Path

ALGORITHM = "wxcm-draw-v1"
BEACON_TAG = b"wxcm-draw-v1/beacon"
ENTRANTS_TAG = b"wxcm-draw-v1/entrants"
MASK32 = 0xFFFFFFFF


# ---------------------------------------------------------------- ChaCha20 (RFC 8439 §2.1-2.4)

def _rotl(v, c):
    return ((v << c) & MASK32) | (v >> (32 - c))


def _quarter_round(s, a, b, c, d):
    s[a] = (s[a] + s[b]) & MASK32; s[d] = _rotl(s[d] ^ s[a], 16)
    s[c] = (s[c] + s[d]) & MASK32; s[b] = _rotl(s[b] ^ s[c], 12)
    s[a] = (s[a] + s[b]) & MASK32; s[d] = _rotl(s[d] ^ s[a], 8)
    s[c] = (s[c] + s[d]) & MASK32; s[b] = _rotl(s[b] ^ s[c], 7)


def chacha20_block(key, counter, nonce):
    """One 64-byte keystream block: 32-byte key, 32-bit counter, 12-byte nonce."""
    constants = (0x61707865, 0x3320646E, 0x79622D32, 0x6B206574)
    state = list(constants) + list(struct.unpack("<8I", key)) + [counter] + list(struct.unpack("<3I", nonce))
    working = state[:]
    for _ in range(10):  # 20 rounds: 10 column + 10 diagonal
        _quarter_round(working, 0, 4, 8, 12)
        _quarter_round(working, 1, 5, 9, 13)
        _quarter_round(working, 2, 6, 10, 14)
        _quarter_round(working, 3, 7, 11, 15)
        _quarter_round(working, 0, 5, 10, 15)
        _quarter_round(working, 1, 6, 11, 12)
        _quarter_round(working, 2, 7, 8, 13)
        _quarter_round(working, 3, 4, 9, 14)
    return struct.pack("<16I", *[(w + s) & MASK32 for w, s in zip(working, state)])


class KeyStream:
    """ChaCha20 keyed by the draw key, nonce of 12 zero bytes, counter from 0,
    read 8 bytes at a time as little-endian u64."""

    def __init__(self, key):
        self.key, self.counter, self.buf = key, 0, b""

    def next_u64(self):
        if not self.buf:
            self.buf = chacha20_block(self.key, self.counter, bytes(12))
            self.counter += 1
        word, self.buf = self.buf[:8], self.buf[8:]
        return int.from_bytes(word, "little")

    def below(self, n):
        # Accept r only when r < 2^64 - (2^64 mod n): whole copies of 0..n.
        limit = 2**64 - (2**64 % n)
        while True:
            r = self.next_u64()
            if r < limit:
                return r % n


# ---------------------------------------------------------------- the draw

def draw_key(seed, beacon):
    if beacon is None:
        return seed
    return hashlib.sha256(BEACON_TAG + seed + beacon).digest()


def canonical(entrants):
    """[(member_bytes, tickets)] sorted by the member id's 16 bytes; no duplicates."""
    rows = sorted((uuid.UUID(e["member_id"]).bytes, int(e["tickets"])) for e in entrants)
    assert len({m for m, _ in rows}) == len(rows), "duplicate entrant"
    return rows


def entrants_hash(rows):
    data = ENTRANTS_TAG + struct.pack(">I", len(rows))
    for member, tickets in rows:
        data += member + struct.pack(">I", tickets)
    return hashlib.sha256(data).hexdigest()


def draw_winners(seed, beacon, rows, n):
    stream = KeyStream(draw_key(seed, beacon))
    remaining = list(rows)
    winners = []
    while len(winners) < n:
        total = sum(t for _, t in remaining)
        if total == 0:
            break
        r = stream.below(total)
        cumulative = 0
        for i, (member, tickets) in enumerate(remaining):
            cumulative += tickets
            if cumulative > r:
                winners.append(str(uuid.UUID(bytes=member)))
                del remaining[i]  # removal keeps the others' order
                break
    return winners


# ---------------------------------------------------------------- instant draws

def shake_roll(seed, member, nonce, total):
    limit = 2**64 - (2**64 % total)
    counter = 0
    while True:
        msg = uuid.UUID(member).bytes + struct.pack(">Q", nonce) + struct.pack(">I", counter)
        r = int.from_bytes(hmac.new(seed, msg, hashlib.sha256).digest()[:8], "big")
        if r < limit:
            return r % total
        counter += 1


def slot_for_roll(weights, roll):
    cumulative = 0
    for i, w in enumerate(weights):
        cumulative += w
        if roll < cumulative:
            return i
    return None


# ---------------------------------------------------------------- checks

def main():
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("vectors.json")
    doc = json.loads(path.read_text())
    failures = []

    def check(what, got, expected):
        if got != expected:
            failures.append(f"{what}: got {got!r}, expected {expected!r}")

    check("algorithm", doc["algorithm"], ALGORITHM)
    # RFC 8439 appendix A.1, test vector #1.
    check("rfc8439 A.1", chacha20_block(bytes(32), 0, bytes(12)).hex()[:32], "76b8e0ada0f13d90405d6ae55386bd28")
    for v in doc["keystream"]:
        ks = KeyStream(bytes.fromhex(v["key"]))
        got = b"".join(ks.next_u64().to_bytes(8, "little") for _ in range(16)).hex()
        check(f"keystream {v['key'][:8]}", got, v["first_128_bytes"])
    for v in doc["periodic"]:
        name, e = v["name"], v["expected"]
        seed = bytes.fromhex(v["seed"])
        beacon = bytes.fromhex(v["beacon"]) if v["beacon"] is not None else None
        rows = canonical(v["entrants"])
        check(f"{name}: commitment", hashlib.sha256(seed).hexdigest(), e["commitment"])
        check(f"{name}: draw key", draw_key(seed, beacon).hex(), e["draw_key"])
        check(f"{name}: entrants hash", entrants_hash(rows), e["entrants_hash"])
        check(f"{name}: total tickets", sum(t for _, t in rows), e["total_tickets"])
        check(f"{name}: winners", draw_winners(seed, beacon, rows, v["winners"]), e["winners"])
    for i, v in enumerate(doc["shake"]):
        e = v["expected"]
        seed = bytes.fromhex(v["seed"])
        total = sum(v["weights"])
        check(f"shake {i}: commitment", hashlib.sha256(seed).hexdigest(), e["commitment"])
        check(f"shake {i}: total", total, e["total_weight"])
        roll = shake_roll(seed, v["member_id"], int(v["nonce"]), total)
        check(f"shake {i}: roll", roll, e["roll"])
        check(f"shake {i}: slot", slot_for_roll(v["weights"], roll), e["slot"])

    count = len(doc["keystream"]) + len(doc["periodic"]) + len(doc["shake"])
    if failures:
        print("\n".join(failures))
        print(f"{len(failures)} difference(s) in {count} vectors")
        sys.exit(1)
    print(f"all vectors agree ({count} vectors, {path})")


if __name__ == "__main__":
    main()
