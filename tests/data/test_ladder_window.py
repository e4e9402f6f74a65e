"""Binance captures through price ladders: does a window fixed at the snapshot hold the top 16?

Measurement and check in one: the full-depth reference book and, per window size and side, a
``LadderModel`` placed at the snapshot (both sides' windows cover the same ``window`` ticks
centred on the snapshot's mid price) and fed every level message. After every applied depth
diff a side is *inside* when each of its true top 16 levels lies in the window; then the top
16 read from the ladder by chained ``next`` queries must equal the true ones. The figures
printed here are the ones in ``docs/ladder.md``.
"""

import math

import pytest

from obcore.hw.layouts import FeedKind, Side
from obcore.sim.ladder_model import DELETE, SET, LadderModel
from obcore.sim.model import BookModel
from obcore.sim.replay import Stats, read_binance

CAPTURES = {
    "spot_2024": ["binance/spot_btcusdt_20240808.gz", "binance/spot_btcusdt_20240809.gz"],
    "usdm_2024": ["binance/usdm_btcusdt_20240808.gz"],
    "usdm_2023": ["binance/usdm_btcusdt_20230404.dat.gz", "binance/usdm_btcusdt_20230405.dat.gz"],
}
WINDOWS = (4096, 8192, 16384)
LEVELS, CAPACITY = 16, 32     # BookSide's default top N and array capacity
SIDES = (Side.BID, Side.ASK)


def ladder_top(ladder, n):
    """The ladder's best ``n`` levels by chained ``next`` queries, ``(0, 0)`` when absent."""
    out, answer = [], ladder.next(ladder.base, inclusive=True)
    while answer is not None and len(out) < n:
        out.append(answer)
        answer = ladder.next(answer[0])
    return out + [(0, 0)] * (n - len(out))


def place(book, window):
    """Both sides' ladders over ``window`` ticks centred on the mid, loaded with the book."""
    mid = (book.bids.level(0)[0] + book.asks.level(0)[0]) // 2
    low = mid - window // 2
    ladders = {}
    for side, levels, base in ((Side.BID, book.bids, low + window - 1), (Side.ASK, book.asks,
                                                                          low)):
        ladder = ladders[side] = LadderModel(side, window)
        ladder.rebase(base)
        for i in range(len(levels)):
            ladder.apply(SET, *levels.level(i))
    return ladders


def measure(paths):
    """Replay a capture; per window: diffs, diffs with both sides inside, the first diff that
    is not (seconds after the snapshot), the least headroom (ticks between the top-16 span and
    the window's edges), refused level messages, and ``recentres``: how often the window was
    placed again, centred on the book of a diff that left it (as a resync would); plus the
    capture's figures: the most top-``CAPACITY`` levels one diff deletes, the most level
    messages in a diff, the widest top 16 of a side (``span``) and the farthest top-16 price
    from the snapshot's mid (``reach``: a centred window wider than ``2 * reach`` would always
    hold them), in ticks."""
    full = BookModel(venues=1, levels=LEVELS, capacity=None)
    book = full.books[0]
    ladders, start = {}, None
    res = {w: {"diffs": 0, "inside": 0, "first_out": None, "headroom": math.inf,
               "recentres": 0, "refused": 0}
           for w in WINDOWS}
    drain = {"diffs": 0, "max_deletes_in_top": 0, "max_level_msgs": 0, "reach": 0, "span": 0}
    stats = Stats()
    for update in read_binance(paths, stats=stats):
        if update.reference:
            continue
        deletes = 0
        for msg in update.messages:
            kind, side = msg["kind"], Side(msg["side"])
            levels = book.bids if side == Side.BID else book.asks
            held, worst = len(levels), levels.level(CAPACITY - 1)[0]
            full.step(msg)
            if kind in (FeedKind.LEVEL_SET, FeedKind.LEVEL_DELETE):
                for pair in ladders.values():
                    pair[side].apply(SET if kind == FeedKind.LEVEL_SET else DELETE,
                                     msg["price"], msg["size"])
                # A level removed from among the best CAPACITY: the array would need a refill.
                better = msg["price"] >= worst if side == Side.BID else msg["price"] <= worst
                deletes += len(levels) < held and (held < CAPACITY or better)
            elif kind == FeedKind.CLEAR:
                ladders = {}      # a gap: nothing is known until the next snapshot
        if update.kind == "snapshot":
            ladders = {w: place(book, w) for w in WINDOWS}
            mid = (book.bids.level(0)[0] + book.asks.level(0)[0]) // 2
            start = update.ts_ns
            continue
        if update.kind != "diff" or not ladders:
            continue
        drain["diffs"] += 1
        drain["max_deletes_in_top"] = max(drain["max_deletes_in_top"], deletes)
        drain["max_level_msgs"] = max(drain["max_level_msgs"], len(update.messages))
        truth = {Side.BID: book.bids.top(LEVELS), Side.ASK: book.asks.top(LEVELS)}
        for levels in truth.values():
            prices = [p for p, q in levels if q]
            drain["span"] = max(drain["span"], max(prices) - min(prices))
            drain["reach"] = max(drain["reach"], *(abs(p - mid) for p in prices))
        for w, pair in ladders.items():
            r, inside = res[w], True
            for side in SIDES:
                prices = [p for p, q in truth[side] if q]
                low = pair[Side.ASK].base if side == Side.ASK else pair[side].base - w + 1
                room = min(min(prices) - low, low + w - 1 - max(prices))
                r["headroom"] = min(r["headroom"], room)
                if room < 0:
                    inside = False
                else:
                    assert ladder_top(pair[side], LEVELS) == truth[side], update.source
            r["diffs"] += 1
            r["inside"] += inside
            if not inside:
                if r["first_out"] is None:
                    r["first_out"] = (update.ts_ns - start) / 1e9
                # A resync: the full-depth book stands in for a fresh snapshot.
                r["recentres"] += 1
                r["refused"] += sum(pair[s].out_of_window for s in SIDES)
                ladders[w] = place(book, w)
    for w, pair in ladders.items():
        res[w]["refused"] += sum(pair[s].out_of_window for s in SIDES)
    assert stats.gaps == []
    return res, drain


# The futures capture runs by default (~20 s); the other two with ``make test-slow``.
@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n == "usdm_2024" else
                                               pytest.mark.slow) for n in CAPTURES])
def test_fixed_window_holds_top_levels(data, name):
    """Every diff where the top 16 lie in the window: the ladder's top 16 are the true ones.
    Prints the measurement; asserts it compared something on every diff of the capture."""
    res, drain = measure([data(p) for p in CAPTURES[name]])
    for w, r in res.items():
        first = "never" if r["first_out"] is None else f"after {r['first_out']:.1f} s"
        print(f"{name}: window {w}: {r['inside']}/{r['diffs']} diffs inside, first out "
              f"{first}, least headroom {r['headroom']} ticks, {r['refused']} refused, "
              f"{r['recentres']} re-centres")
    print(f"{name}: {drain}")
    assert drain["diffs"] > 6000 and all(r["diffs"] == drain["diffs"] for r in res.values())
    assert res[16384]["inside"] >= res[8192]["inside"] >= res[4096]["inside"] > 0
