"""The reference book: hand-worked cases and the bounded-vs-full-depth exactness property."""

import random

import pytest

from obcore.hw.layouts import FeedKind, Side
from obcore.sim.model import (
    FLAG_CAPACITY,
    FLAG_CROSSED,
    FLAG_GAP,
    FLAG_LOCKED,
    FLAG_MISSING,
    BookModel,
    malformed,
)

K = FeedKind


class Feed:
    """Builds messages with contiguous per-venue sequence numbers."""

    def __init__(self):
        self.seq = {}

    def __call__(self, kind, venue=0, side=0, price=0, size=0, seq=None):
        if seq is None:
            seq = self.seq.get(venue, 0) + 1
        if kind not in (K.FILL, K.TICK):
            self.seq[venue] = seq
        return {"kind": int(kind), "venue": venue, "side": int(side), "flags": 0,
                "seq": seq if kind not in (K.FILL, K.TICK) else 0, "price": price, "size": size}


def test_insert_update_delete_best():
    m, f = BookModel(venues=1, levels=3, capacity=4), Feed()
    for price, size in ((100, 5), (102, 7), (101, 1)):
        m.step(f(K.LEVEL_SET, side=Side.BID, price=price, size=size))
    m.step(f(K.LEVEL_SET, side=Side.ASK, price=105, size=2))
    side = m.books[0].bids
    assert side.top(3) == [(102, 7), (101, 1), (100, 5)]
    m.step(f(K.LEVEL_SET, side=Side.BID, price=101, size=9))
    assert side.top(3) == [(102, 7), (101, 9), (100, 5)]
    m.step(f(K.LEVEL_DELETE, side=Side.BID, price=102))
    out = m.outputs(0)
    assert (out["best_bid"], out["best_bid_qty"], out["best_ask"]) == (101, 9, 105)
    assert out["bid_depth"] == 14 and out["bid_count"] == 2 and out["valid"]


def test_missing_delete_counted_and_book_unchanged():
    m, f = BookModel(venues=1, levels=2), Feed()
    m.step(f(K.LEVEL_SET, side=Side.ASK, price=10, size=1))
    m.step(f(K.LEVEL_DELETE, side=Side.ASK, price=11))
    assert m.books[0].counters.missing == 1 and m.books[0].counters.flags == FLAG_MISSING
    assert m.books[0].asks.top(2) == [(10, 1), (0, 0)]


def test_capacity_bound_rule():
    """Capacity 3, levels 2: the dropped level sets the bound; beyond it is ignored."""
    m, f = BookModel(venues=1, levels=2, capacity=3), Feed()
    for p in (10, 11, 12, 13):               # asks: 13 falls off the end -> bound 13
        m.step(f(K.LEVEL_SET, side=Side.ASK, price=p, size=1))
    asks = m.books[0].asks
    assert asks.top(3) == [(10, 1), (11, 1), (12, 1)] and asks.bound == 13
    m.step(f(K.LEVEL_SET, side=Side.ASK, price=14, size=5))   # beyond the bound: unknown
    assert len(asks) == 3
    m.step(f(K.LEVEL_SET, side=Side.ASK, price=9, size=1))    # better: 12 falls off
    assert asks.bound == 12 and asks.top(3) == [(9, 1), (10, 1), (11, 1)]
    assert m.books[0].counters.capacity == 0 and m.outputs(0)["exact"]
    m.step(f(K.LEVEL_DELETE, side=Side.ASK, price=9))
    m.step(f(K.LEVEL_DELETE, side=Side.ASK, price=10))        # one known level < 2: short
    out = m.outputs(0)
    assert not out["exact"] and m.books[0].counters.capacity == 1
    assert m.books[0].counters.flags & FLAG_CAPACITY
    m.step(f(K.CLEAR))
    assert m.outputs(0)["exact"] and m.books[0].asks.bound is None


def test_crossed_locked_and_snapshot_suppression():
    m, f = BookModel(venues=1, levels=2), Feed()
    m.step(f(K.LEVEL_SET, side=Side.BID, price=10, size=1))
    m.step(f(K.LEVEL_SET, side=Side.ASK, price=10, size=1))
    assert m.books[0].counters.flags == FLAG_LOCKED
    m.step(f(K.LEVEL_SET, side=Side.ASK, price=9, size=1))
    assert m.books[0].counters.flags == FLAG_LOCKED | FLAG_CROSSED
    assert m.books[0].counters.crossed == 2
    m.step(f(K.SNAPSHOT_START))
    m.step(f(K.LEVEL_SET, side=Side.BID, price=20, size=1))
    m.step(f(K.LEVEL_SET, side=Side.ASK, price=19, size=1))
    assert m.books[0].counters.crossed == 2           # not checked inside a snapshot
    m.step(f(K.SNAPSHOT_END))
    assert m.books[0].counters.crossed == 3           # checked again at the end


def test_gap_unsyncs_until_snapshot_end_and_message_still_applies():
    m, f = BookModel(venues=2, levels=2), Feed()
    m.step(f(K.LEVEL_SET, venue=1, side=Side.BID, price=10, size=1))
    m.step(f(K.LEVEL_SET, venue=1, side=Side.BID, price=11, size=1, seq=5))   # gap
    b = m.books[1]
    assert b.counters.gaps == 1 and b.counters.flags & FLAG_GAP and not b.synced
    assert b.bids.level(0) == (11, 1)
    m.step(f(K.LEVEL_SET, venue=1, side=Side.BID, price=12, size=1))          # 6: in order
    assert b.counters.gaps == 1 and not b.synced
    m.step(f(K.SNAPSHOT_START, venue=1, seq=100))                              # resync
    m.step(f(K.SNAPSHOT_END, venue=1))
    assert b.synced and b.counters.gaps == 1 and m.books[0].counters.msgs == 0


def test_snapshot_hit_by_a_gap_does_not_resync():
    # Worked by hand: seq 1 in order; START 10 resyncs the sequence and opens a clean
    # snapshot; 12 (11 expected) is a gap inside it, so END 13 must leave synced False.
    m, f = BookModel(venues=1, levels=2), Feed()
    m.step(f(K.LEVEL_SET, side=Side.BID, price=10, size=1, seq=1))
    b = m.books[0]
    assert b.synced and not b.clean_snapshot
    m.step(f(K.SNAPSHOT_START, seq=10))
    assert b.synced and b.in_snapshot and b.clean_snapshot
    m.step(f(K.LEVEL_SET, side=Side.ASK, price=20, size=2, seq=12))   # gap inside
    assert not b.synced and not b.clean_snapshot and b.counters.gaps == 1
    m.step(f(K.SNAPSHOT_END, seq=13))
    assert not b.synced and not b.in_snapshot and not b.clean_snapshot
    assert b.asks.level(0) == (20, 2)   # the gapped message was still applied
    # A gap on the END itself spoils the snapshot too (START 20 clean, END 22 not 21).
    m.step(f(K.SNAPSHOT_START, seq=20))
    m.step(f(K.SNAPSHOT_END, seq=22))
    assert not b.synced and b.counters.gaps == 2
    # The next clean snapshot resyncs; a later clean END on a synced book keeps it synced.
    m.step(f(K.SNAPSHOT_START, seq=30))
    m.step(f(K.SNAPSHOT_END, seq=31))
    assert b.synced and b.counters.gaps == 2
    m.step(f(K.SNAPSHOT_END, seq=32))   # END without START: no snapshot, nothing changes
    assert b.synced and not b.clean_snapshot


@pytest.mark.parametrize("msg", [
    {"kind": 0}, {"kind": 9}, {"flags": 1}, {"side": 2}, {"venue": 2}, {"price": 0},
    {"size": 0}, {"size": 1 << 31}, {"kind": K.LEVEL_DELETE, "size": 1},
    {"kind": K.CLEAR, "price": 5, "size": 0}, {"kind": K.TICK, "venue": 1, "price": 0,
                                               "size": 0},
])
def test_malformed_rejected_whole(msg):
    base = {"kind": int(K.LEVEL_SET), "venue": 0, "side": 0, "flags": 0, "seq": 1,
            "price": 10, "size": 1}
    bad = {**base, **msg}
    assert malformed(bad, venues=2)
    m = BookModel(venues=2, levels=2)
    assert m.step(bad) is None and m.malformed == 1
    assert m.books[0].counters.msgs == 0 and not m.books[0].seq_valid


def test_bounded_book_exact_whenever_it_says_so():
    """Property: on a random walk, the bounded top N equals the full-depth top N if exact."""
    seed = random.randrange(1 << 30)
    print(f"seed={seed}")
    rng = random.Random(seed)
    levels = 4
    bounded = BookModel(venues=1, levels=levels, capacity=6)
    full = BookModel(venues=1, levels=levels, capacity=None)
    f = Feed()
    mid, exact_seen, short_seen = 1000, 0, 0
    for i in range(20000):
        if i % 2000 == 0:   # a resync: once a walk leaves the bound, nothing else recovers
            clear = f(K.CLEAR)
            bounded.step(clear)
            full.step(clear)
        mid += rng.choice((-1, 0, 1))
        side = rng.choice((Side.BID, Side.ASK))
        price = mid - rng.randrange(1, 15) if side == Side.BID else mid + rng.randrange(1, 15)
        kind = K.LEVEL_DELETE if rng.random() < 0.45 else K.LEVEL_SET
        msg = f(kind, side=side, price=price, size=0 if kind == K.LEVEL_DELETE else
                rng.randrange(1, 100))
        bounded.step(msg)
        full.step(msg)
        if bounded.outputs(0)["exact"]:
            exact_seen += 1
            for s in ("bids", "asks"):
                assert (getattr(bounded.books[0], s).top(levels)
                        == getattr(full.books[0], s).top(levels))
        else:
            short_seen += 1
    assert exact_seen > 1000 and short_seen > 0   # both regimes exercised
