# amaranth: UnusedElaboratable=no
"""Books with a price ladder behind every side, in the Amaranth simulator: hand-worked refills
(drain, refill timing, stale answers, window edges, stuck) and random streams against
``BookModel(window=...)``, every output compared after every cycle."""

import os
import random

import pytest
from amaranth.sim import Simulator

from obcore.hw.book import Book, counter_layout
from obcore.hw.books import Books
from obcore.hw.deep import REFILL_CYCLES
from obcore.hw.layouts import FeedKind, Side, encode_feed
from obcore.sim.model import BookModel

K, BID, ASK = FeedKind, Side.BID, Side.ASK
WRAP = (1 << 32) - 1
LADDER = ("out_of_window_count", "lost_better", "lost_worse", "stuck", "refilling")


class Feed:
    """Message dicts with contiguous per-venue sequence numbers."""

    def __init__(self):
        self.seq = {}

    def __call__(self, kind, venue=0, side=BID, price=0, size=0):
        seq = 0
        if kind not in (K.FILL, K.TICK):
            seq = self.seq[venue] = self.seq.get(venue, 0) + 1
        return {"kind": int(kind), "venue": venue, "side": int(side), "flags": 0, "seq": seq,
                "price": price, "size": size}


def word(msg):
    return encode_feed(msg["kind"], msg["venue"], msg["side"], msg["seq"], msg["price"],
                       msg["size"], msg["flags"])


def read(ctx, dut, venues, levels):
    """Everything visible now: per venue the outputs and both sides' ladder status."""
    out = []
    for v in range(venues):
        st, ladders = dut.venue[v], ctx.get(dut.ladders[v])
        o = {name: ctx.get(getattr(st, name)) for name in (
            "best_bid", "best_bid_qty", "best_ask", "best_ask_qty", "bid_depth", "ask_depth",
            "bid_count", "ask_count", "valid", "exact", "synced")}
        for side in ("bid", "ask"):
            prices, sizes = ctx.get(getattr(st, f"{side}_prices")), ctx.get(getattr(st,
                                                                                 f"{side}_sizes"))
            o[f"{side}s"] = [(prices[i], sizes[i]) for i in range(levels)]
        counters = ctx.get(st.counters)
        o["counters"] = {n: getattr(counters, n) for n in counter_layout.members}
        for side in (BID, ASK):
            o[side] = {n: getattr(ladders[side], n) for n in LADDER}
        out.append(o)
    return out


def simulate(cycles, venues, levels, capacity, window):
    """Drive ``cycles`` (message dicts or None) one per cycle; the trace after each edge."""
    dut, trace = Books(venues, levels, capacity, window), []

    async def bench(ctx):
        for msg in cycles:
            ctx.set(dut.feed.valid, msg is not None)
            ctx.set(dut.feed.payload.as_value(), word(msg) if msg is not None else 0)
            await ctx.tick()
            assert ctx.get(dut.feed.ready)
            trace.append(read(ctx, dut, venues, levels))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return trace


def model_trace(cycles, venues, levels, capacity, window):
    """The model's state after each cycle, in ``read``'s form."""
    ref, out = BookModel(venues, levels, capacity, window), []
    for msg in cycles:
        if msg is None:
            ref.idle()
        else:
            ref.step(msg)
        snap = []
        for book in ref.books:
            o = book.outputs()
            o["bids"], o["asks"] = book.bids.top(levels), book.asks.top(levels)
            o["counters"] = {n: getattr(book.counters, n) & WRAP for n in counter_layout.members}
            for side, unit in ((BID, book.bids), (ASK, book.asks)):
                lad = unit.ladder
                o[side] = {"out_of_window_count": lad.out_of_window,
                           "lost_better": lad.lost_better, "lost_worse": lad.lost_worse,
                           "stuck": unit.stuck, "refilling": not unit.settled}
            snap.append(o)
        out.append(snap)
    return out


# Latency 2 (docs/book.md): shown one cycle after the rest.
LATE = ("bid_depth", "ask_depth", "bid_count", "ask_count", "counters")


def check(cycles, venues=1, levels=2, capacity=3, window=64):
    """Hardware and model agree on every output after every cycle; returns the model trace
    (index c: after cycle c; the hardware's latency-1 outputs show it at c, the rest at c+1)."""
    cycles = list(cycles) + [None] * 2
    got = simulate(cycles, venues, levels, capacity, window)
    want = model_trace(cycles, venues, levels, capacity, window)
    for c in range(len(cycles)):
        for v in range(venues):
            early = {k: x for k, x in want[c][v].items() if k not in LATE}
            assert {k: got[c][v][k] for k in early} == early, f"cycle {c} venue {v}"
            if c:
                late = {k: want[c - 1][v][k] for k in LATE}
                assert {k: got[c][v][k] for k in LATE} == late, f"cycle {c} venue {v}"
    return want


def asks(f, prices):
    return [f(K.LEVEL_SET, side=ASK, price=p, size=p - 90) for p in prices]


def test_refill_after_the_best_levels_are_deleted():
    """levels 2, capacity 3, asks 100..105: the array keeps 100..102 and the bound 103. Two
    deletes of the best leave one level: short for 3 cycles, then 103 comes back, 104 four
    cycles later; the side is exact again as soon as it holds 2. It refills from the first
    delete until the array is full again: ``refilling`` for 2 x REFILL_CYCLES cycles."""
    f = Feed()
    cycles = [f(K.SNAPSHOT_START), *asks(f, range(100, 106)), f(K.SNAPSHOT_END),
              f(K.LEVEL_DELETE, side=ASK, price=100), f(K.LEVEL_DELETE, side=ASK, price=101)]
    t = len(cycles) - 1     # the second delete: the refill asks in this very cycle
    want = check(cycles + [None] * 12)
    assert want[t - 1][0]["asks"] == [(101, 11), (102, 12)] and want[t - 1][0]["exact"]
    for c in (t, t + 1, t + 2):
        assert want[c][0]["asks"] == [(102, 12), (0, 0)] and not want[c][0]["exact"]
    assert want[t + REFILL_CYCLES - 1][0]["asks"] == [(102, 12), (103, 13)]
    assert want[t + REFILL_CYCLES - 1][0]["exact"]
    refilling = [c for c in range(len(want)) if want[c][0][ASK]["refilling"]]
    assert refilling == list(range(t - 1, t - 1 + 2 * REFILL_CYCLES))
    ref = BookModel(1, 2, 3, 64)
    for msg in cycles + [None] * (2 * REFILL_CYCLES):
        ref.step(msg) if msg else ref.idle()
    assert ref.books[0].asks.top(3) == [(102, 12), (103, 13), (104, 14)]


def test_stale_answer_is_dropped():
    """The array holds 100..102 with the horizon at 103 (103 and 105 in the ladder). A DELETE
    of 103 while the query for the horizon is in flight: the answer (103, gone by then) is
    dropped and asked again, so 105 comes in one refill period later."""
    f = Feed()
    cycles = [f(K.SNAPSHOT_START), *asks(f, (100, 101, 102, 103, 105)), f(K.SNAPSHOT_END),
              f(K.LEVEL_DELETE, side=ASK, price=100), f(K.LEVEL_DELETE, side=ASK, price=101),
              f(K.LEVEL_DELETE, side=ASK, price=103)]
    t = len(cycles) - 2    # the query goes out with the second delete
    want = check(cycles + [None] * 12)
    assert want[t + REFILL_CYCLES - 1][0]["asks"] == [(102, 12), (0, 0)]    # dropped
    assert not want[t + REFILL_CYCLES - 1][0]["exact"]
    assert want[t + 2 * REFILL_CYCLES - 1][0]["asks"] == [(102, 12), (105, 15)]


def test_window_edges_and_stuck():
    """Asks, window 64 centred on the first SET (100): 68..131. A SET at 140 is refused
    (lost_worse); refills inside the window still work, but the ``none`` that would claim
    the side ends at 103 cannot be trusted: stuck, and short once it holds fewer than 2."""
    f = Feed()
    cycles = [f(K.SNAPSHOT_START), *asks(f, (100, 101, 102, 103)),
              f(K.LEVEL_SET, side=ASK, price=131, size=1), f(K.LEVEL_SET, side=ASK, price=140,
                                                              size=1),
              f(K.SNAPSHOT_END), f(K.LEVEL_DELETE, side=ASK, price=100),
              f(K.LEVEL_DELETE, side=ASK, price=101)]
    cycles += [None] * 12 + [f(K.LEVEL_DELETE, side=ASK, price=103)] + [None] * 12
    want = check(cycles)
    end = want[-1][0]
    assert end[ASK] == {"out_of_window_count": 1, "lost_better": False, "lost_worse": True,
                        "stuck": True, "refilling": False}
    assert end["asks"] == [(102, 12), (131, 1)] and end["exact"]
    f2 = Feed()
    cycles = [f2(K.SNAPSHOT_START), *asks(f2, (100, 101, 102, 103)), f2(K.SNAPSHOT_END),
              *[f2(K.LEVEL_DELETE, side=ASK, price=p) for p in (100, 101, 102)]]
    want = check(cycles + [None] * 12)
    end = want[-1][0]     # the ladder ran out with nothing lost: the side is whole, exact
    assert end["asks"] == [(103, 13), (0, 0)] and end["exact"] and not end[ASK]["stuck"]


def test_bids_and_the_window_before_the_best():
    """Bids centred on 1000 (window 64: 1032 down to 969). A bid at 1040 is refused
    (lost_better) but kept by the array; after deleting down to it the refill may not
    trust the ladder below the window only if the horizon is before the window."""
    f = Feed()
    cycles = [f(K.SNAPSHOT_START)]
    cycles += [f(K.LEVEL_SET, side=BID, price=p, size=1) for p in (1000, 999, 998, 997, 996)]
    cycles += [f(K.SNAPSHOT_END), f(K.LEVEL_SET, side=BID, price=1040, size=3),
               f(K.LEVEL_DELETE, side=BID, price=999), f(K.LEVEL_DELETE, side=BID, price=998)]
    want = check(cycles + [None] * 12)
    end = want[-1][0]
    assert end[BID]["lost_better"] and not end[BID]["stuck"]
    assert end["bids"] == [(1040, 3), (1000, 1)] and end["exact"]


def random_cycles(rng, venues, n, window, capacity):
    """Messages around a drifting mid (sometimes beyond the window), bursts and idle runs."""
    f, cycles, mids = Feed(), [], [10_000] * venues
    # First a drain faster than the refill (one level per 4 cycles), so every run sees a
    # side short of its levels, whatever the seed.
    for v in range(venues):
        cycles += [f(K.LEVEL_SET, v, BID, 9_999 - j, 1) for j in range(capacity + 2)]
        cycles += [f(K.LEVEL_DELETE, v, BID, 9_999 - j) for j in range(capacity)]
    for _ in range(n):
        if rng.random() < 0.25:
            cycles += [None] * rng.choice((1, 1, 2, 5, 20))
        v = rng.randrange(venues)
        mids[v] += rng.choice((-1, 0, 0, 1))
        r = rng.random()
        side = rng.choice((BID, ASK))
        spread = window if rng.random() < 0.05 else 3 * capacity
        off = rng.randrange(0, spread)
        price = mids[v] - 1 - off if side == BID else mids[v] + off
        if r < 0.02:   # a burst of deletes from the best down: drains the array
            cycles += [f(K.LEVEL_DELETE, v, side, mids[v] - 1 - j if side == BID else mids[v] + j)
                       for j in range(rng.randrange(2, 2 * capacity))]
        elif r < 0.55:
            cycles.append(f(K.LEVEL_SET, v, side, price, rng.randrange(1, 50)))
        elif r < 0.9:
            cycles.append(f(K.LEVEL_DELETE, v, side, price))
        elif r < 0.91:
            cycles.append(f(K.SNAPSHOT_START, v))
        elif r < 0.92:
            cycles.append(f(K.SNAPSHOT_END, v))
        elif r < 0.925:
            cycles.append(f(K.CLEAR, v))
        elif r < 0.93:
            cycles.append(f(K.TICK))
        else:
            cycles.append(f(K.TRADE, v, side, price, 1))
    return cycles


@pytest.mark.parametrize(("venues", "levels", "capacity", "window", "n"), [
    (1, 2, 3, 64, 2500), (2, 3, 5, 64, 2500), (2, 4, 8, 128, 1500)])
def test_random_against_model(venues, levels, capacity, window, n):
    seed = int(os.environ.get("BOOK_DEEP_SEED") or random.randrange(1 << 31))
    print(f"BOOK_DEEP_SEED={seed}")
    want = check(random_cycles(random.Random(seed), venues, n, window, capacity), venues, levels,
                 capacity, window)
    exact = [s[v]["exact"] for s in want for v in range(venues)]
    stuck = sum(s[v][side]["stuck"] for s in want for v in range(venues) for side in (BID, ASK))
    print(f"{len(exact) - sum(exact)} of {len(exact)} venue-cycles not exact, {stuck} side-"
          f"cycles stuck")
    assert not all(exact) and sum(exact) > len(exact) // 4    # both states were exercised


def test_window_argument():
    with pytest.raises(ValueError, match="window must be a power of two >= 64, not 100"):
        Book(4, 8, window=100)
    with pytest.raises(ValueError, match="window must be a power of two"):
        Books(1, 4, 8, window=True)
