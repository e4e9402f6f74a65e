# amaranth: UnusedElaboratable=no
"""Books in the Amaranth simulator: hand-worked cases, latencies, malformed input, arguments."""

import dataclasses
import random

import pytest
from amaranth.sim import Simulator

from obcore.hw.book import BBO_LATENCY, STATUS_LATENCY, Book, BookSide, counter_layout, event_layout
from obcore.hw.books import Books
from obcore.hw.ingress import Ingress, Op
from obcore.hw.layouts import FeedKind, Side, encode_feed
from obcore.sim import model
from obcore.sim.model import BookModel

K, BID, ASK = FeedKind, Side.BID, Side.ASK
WRAP = (1 << 32) - 1


class Feed:
    """Builds message dicts with contiguous per-venue sequence numbers (as the model tests)."""

    def __init__(self):
        self.seq = {}

    def __call__(self, kind, venue=0, side=BID, price=0, size=0, seq=None, flags=0):
        if kind in (K.FILL, K.TICK):
            seq = 0
        elif seq is None:
            seq = self.seq.get(venue, 0) + 1
        if kind not in (K.FILL, K.TICK):
            self.seq[venue] = seq
        return {"kind": int(kind), "venue": venue, "side": int(side), "flags": flags,
                "seq": seq, "price": price, "size": size}


def word(msg):
    return encode_feed(msg["kind"], msg["venue"], msg["side"], msg["seq"], msg["price"],
                       msg["size"], msg["flags"])


def read_venue(ctx, st, levels):
    """One venue's outputs as plain Python values (names as in ``VenueBook.outputs``)."""
    out = {name: ctx.get(getattr(st, name)) for name in (
        "best_bid", "best_bid_qty", "best_ask", "best_ask_qty", "bid_depth", "ask_depth",
        "bid_count", "ask_count", "valid", "exact", "synced", "updated")}
    for side in ("bid", "ask"):
        prices = ctx.get(getattr(st, f"{side}_prices"))
        sizes = ctx.get(getattr(st, f"{side}_sizes"))
        out[f"{side}s"] = [(prices[i], sizes[i]) for i in range(levels)]
    events, counters = ctx.get(st.events), ctx.get(st.counters)
    out["events"] = {name for name in event_layout.members if getattr(events, name)}
    out["counters"] = {name: getattr(counters, name) for name in counter_layout.members}
    return out


def simulate(cycles, venues=2, levels=3, capacity=4):
    """Drive ``cycles`` (a feed word or None for idle, one per cycle) into ``Books``.

    Returns the trace: entry ``c`` is everything visible after the edge that ends cycle ``c``,
    so a message sent in cycle ``c`` shows in ``trace[c + latency - 1]``.
    """
    dut, trace = Books(venues, levels, capacity), []

    async def bench(ctx):
        for w in cycles:
            ctx.set(dut.feed.valid, w is not None)
            ctx.set(dut.feed.payload.as_value(), w or 0)
            await ctx.tick()
            assert ctx.get(dut.feed.ready)
            trace.append({"malformed": ctx.get(dut.malformed),
                          "malformed_count": ctx.get(dut.malformed_count),
                          "venue": [read_venue(ctx, dut.venue[v], levels)
                                    for v in range(venues)]})

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return trace


def run(messages, **kw):
    """Send each message followed by an idle cycle; the state after each (all outputs)."""
    cycles = [w for msg in messages for w in (word(msg), None)]
    trace = simulate(cycles + [None], **kw)
    return [trace[2 * i + STATUS_LATENCY - 1] for i in range(len(messages))]


def agrees_with_model(messages, states, venues=2, levels=3, capacity=4):
    """Every state's touched venue equals the model's outputs, events and counters."""
    ref = BookModel(venues, levels, capacity)
    for msg, state in zip(messages, states, strict=True):
        before = [dataclasses.replace(b.counters) for b in ref.books]
        venue = ref.step(msg)
        assert state["malformed_count"] == ref.malformed
        if venue is None:
            continue
        got, book = state["venue"][venue], ref.books[venue]
        want = book.outputs()
        assert {k: got[k] for k in want} == want, msg
        assert got["bids"] == book.bids.top(levels) and got["asks"] == book.asks.top(levels)
        assert got["counters"] == {f: getattr(book.counters, f) & WRAP
                                   for f in counter_layout.members}
        assert got["updated"]
        rose = {f for f in counter_layout.members
                if getattr(book.counters, f) != getattr(before[venue], f)}
        state = book.crossed_state()
        want = {e for e, c in (("gap", "gaps"), ("missing", "missing"), ("capacity", "capacity"))
                if c in rose} | ({state} if state else set())
        assert got["events"] == want, msg


def test_insert_in_and_out_of_order_then_update_in_place():
    f = Feed()
    msgs = [f(K.LEVEL_SET, side=BID, price=p, size=s) for p, s in ((100, 5), (102, 7), (101, 1))]
    msgs += [f(K.LEVEL_SET, side=ASK, price=p, size=1) for p in (107, 106, 105)]
    msgs.append(f(K.LEVEL_SET, side=BID, price=101, size=9))
    out = run(msgs)
    v = out[2]["venue"][0]
    assert v["bids"] == [(102, 7), (101, 1), (100, 5)] and v["bid_count"] == 3
    assert v["bid_depth"] == 13 and not v["valid"] and v["exact"]
    v = out[-1]["venue"][0]
    assert v["asks"] == [(105, 1), (106, 1), (107, 1)] and v["valid"]
    assert v["bids"] == [(102, 7), (101, 9), (100, 5)] and v["bid_depth"] == 21
    assert (v["best_bid"], v["best_bid_qty"], v["best_ask"], v["best_ask_qty"]) == (102, 7, 105, 1)
    assert v["counters"]["msgs"] == 7 and out[-1]["venue"][1]["counters"]["msgs"] == 0
    agrees_with_model(msgs, out)


def test_delete_of_the_best_moves_the_next_level_up():
    f = Feed()
    msgs = [f(K.LEVEL_SET, side=ASK, price=p, size=p - 200) for p in (203, 201, 202)]
    msgs += [f(K.LEVEL_DELETE, side=ASK, price=201), f(K.LEVEL_DELETE, side=ASK, price=203)]
    out = run(msgs)
    v = out[3]["venue"][0]
    assert v["asks"] == [(202, 2), (203, 3), (0, 0)] and v["best_ask"] == 202
    assert v["ask_depth"] == 5 and v["ask_count"] == 2 and not v["events"]
    v = out[4]["venue"][0]
    assert v["asks"] == [(202, 2), (0, 0), (0, 0)] and v["ask_count"] == 1
    agrees_with_model(msgs, out)


def test_delete_of_an_absent_level_is_a_missing_event_and_changes_nothing():
    f = Feed()
    msgs = [f(K.LEVEL_SET, side=ASK, price=10, size=1), f(K.LEVEL_DELETE, side=ASK, price=11),
            f(K.LEVEL_DELETE, side=BID, price=10), f(K.TRADE, side=BID, price=10, size=1)]
    out = run(msgs)
    assert [o["venue"][0]["events"] for o in out] == [set(), {"missing"}, {"missing"}, set()]
    v = out[-1]["venue"][0]
    assert v["asks"][0] == (10, 1) and v["counters"]["missing"] == 2
    assert v["counters"]["msgs"] == 4
    agrees_with_model(msgs, out)


def test_capacity_overflow_and_the_bound_rule():
    """levels 2, capacity 3 (the model's hand-worked case, then the short side)."""
    f, kw = Feed(), {"levels": 2, "capacity": 3}
    msgs = [f(K.LEVEL_SET, side=ASK, price=p, size=1) for p in (10, 11, 12, 13)]   # 13 drops
    msgs += [f(K.LEVEL_SET, side=ASK, price=14, size=5),      # beyond the bound: ignored
             f(K.LEVEL_DELETE, side=ASK, price=13),           # at the bound: ignored, not missing
             f(K.LEVEL_SET, side=ASK, price=9, size=1),       # better: 12 drops, bound 12
             f(K.LEVEL_DELETE, side=ASK, price=9),
             f(K.LEVEL_DELETE, side=ASK, price=10),           # one known level < 2: short
             f(K.TRADE, side=ASK, price=11, size=1),          # still short: counted again
             f(K.LEVEL_SET, side=ASK, price=12, size=3),      # at the bound: still unknown
             f(K.CLEAR)]
    out = run(msgs, **kw)
    v = out[5]["venue"][0]
    assert v["asks"] == [(10, 1), (11, 1)] and v["exact"] and not v["events"]
    assert v["counters"]["missing"] == 0 and v["ask_count"] == 2
    v = out[6]["venue"][0]
    assert v["asks"] == [(9, 1), (10, 1)] and v["exact"] and v["ask_depth"] == 2
    v = out[8]["venue"][0]
    assert v["asks"] == [(11, 1), (0, 0)] and not v["exact"] and v["ask_count"] == 1
    assert v["events"] == {"capacity"} and v["counters"]["capacity"] == 1
    assert out[9]["venue"][0]["counters"]["capacity"] == 2
    v = out[10]["venue"][0]
    assert v["asks"] == [(11, 1), (0, 0)] and v["counters"]["capacity"] == 3
    v = out[11]["venue"][0]
    assert v["exact"] and v["asks"] == [(0, 0), (0, 0)] and not v["events"]
    agrees_with_model(msgs, out, **kw)


def test_a_full_side_drops_a_new_worst_level_itself():
    f, kw = Feed(), {"levels": 1, "capacity": 2}
    msgs = [f(K.LEVEL_SET, side=BID, price=p, size=1) for p in (50, 49, 48)]   # 48 drops
    msgs += [f(K.LEVEL_SET, side=BID, price=48, size=1), f(K.LEVEL_SET, side=BID, price=47,
                                                            size=1),
             f(K.LEVEL_DELETE, side=BID, price=50), f(K.LEVEL_DELETE, side=BID, price=49)]
    out = run(msgs, **kw)
    assert [o["venue"][0]["bids"] for o in out] == [[(50, 1)]] * 5 + [[(49, 1)], [(0, 0)]]
    assert out[5]["venue"][0]["exact"] and not out[6]["venue"][0]["exact"]
    assert out[6]["venue"][0]["events"] == {"capacity"}
    agrees_with_model(msgs, out, **kw)


def test_crossed_and_locked():
    f = Feed()
    msgs = [f(K.LEVEL_SET, side=BID, price=10, size=1), f(K.LEVEL_SET, side=ASK, price=10, size=2),
            f(K.LEVEL_SET, side=ASK, price=9, size=1), f(K.FILL, side=BID, price=9, size=1),
            f(K.LEVEL_DELETE, side=ASK, price=9), f(K.LEVEL_DELETE, side=ASK, price=10),
            f(K.TRADE, side=BID, price=10, size=1)]
    out = run(msgs)
    assert [o["venue"][0]["events"] for o in out] == [
        set(), {"locked"}, {"crossed"}, {"crossed"}, {"locked"}, set(), set()]
    assert out[-1]["venue"][0]["counters"]["crossed"] == 4
    assert out[2]["venue"][0]["valid"] and not out[-1]["venue"][0]["valid"]
    agrees_with_model(msgs, out)


def test_snapshot_suppresses_the_crossed_check_until_its_end():
    f = Feed()
    msgs = [f(K.LEVEL_SET, side=BID, price=10, size=1), f(K.LEVEL_SET, side=ASK, price=11, size=1),
            f(K.SNAPSHOT_START), f(K.LEVEL_SET, side=BID, price=20, size=1),
            f(K.LEVEL_SET, side=ASK, price=19, size=1), f(K.SNAPSHOT_END),
            f(K.LEVEL_SET, side=ASK, price=21, size=1)]
    out = run(msgs)
    v = out[2]["venue"][0]
    assert v["bids"][0] == (0, 0) and v["asks"][0] == (0, 0) and not v["valid"]
    assert [o["venue"][0]["events"] for o in out[3:]] == [set(), set(), {"crossed"},
                                                          {"crossed"}]
    assert out[4]["venue"][0]["valid"] and out[4]["venue"][0]["counters"]["crossed"] == 0
    agrees_with_model(msgs, out)


def test_gap_unsyncs_until_a_clean_snapshot_end_and_the_message_still_applies():
    f = Feed()
    msgs = [f(K.LEVEL_SET, venue=1, side=BID, price=10, size=1, seq=77),   # first: syncs
            f(K.LEVEL_SET, venue=1, side=BID, price=11, size=1, seq=80),   # gap
            f(K.FILL, venue=1, side=BID, price=11, size=1),                # FILL: no seq check
            f(K.LEVEL_SET, venue=1, side=BID, price=12, size=1),           # 81: in order
            f(K.LEVEL_SET, venue=0, side=ASK, price=5, size=1, seq=3),     # venue 0 unaffected
            f(K.SNAPSHOT_START, venue=1, seq=500),                         # resync, no gap
            f(K.LEVEL_SET, venue=1, side=ASK, price=30, size=1),
            f(K.SNAPSHOT_END, venue=1, seq=600),                           # gap: still not
            f(K.SNAPSHOT_START, venue=1, seq=700),
            f(K.LEVEL_SET, venue=1, side=ASK, price=31, size=1, seq=702),  # gap in it
            f(K.SNAPSHOT_END, venue=1),                                    # hit: still not
            f(K.SNAPSHOT_START, venue=1, seq=800),
            f(K.SNAPSHOT_END, venue=1)]                                    # clean: synced
    out = run(msgs)
    v = [o["venue"][1] for o in out]
    assert [x["synced"] for x in v] == [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
    assert [x["events"] for x in v[:4]] == [set(), {"gap"}, set(), set()]
    assert v[1]["bids"][0] == (11, 1) and v[3]["bids"][0] == (12, 1)
    assert not v[5]["events"] and v[7]["events"] == {"gap"} and v[7]["counters"]["gaps"] == 2
    assert out[4]["venue"][0]["synced"] and out[4]["venue"][0]["counters"]["gaps"] == 0
    agrees_with_model(msgs, out)


GOOD = {"kind": int(K.LEVEL_SET), "venue": 0, "side": 0, "flags": 0, "seq": 1, "price": 10,
        "size": 1}
MALFORMED = [
    {"kind": 0}, {"kind": 9}, {"kind": 255}, {"flags": 1}, {"flags": 0x80}, {"side": 2},
    {"side": 255}, {"venue": 2}, {"venue": 255}, {"price": 0}, {"size": 0},
    {"size": 1 << 31}, {"size": WRAP},
    {"kind": int(K.LEVEL_DELETE), "size": 1}, {"kind": int(K.LEVEL_DELETE), "price": 0,
                                                "size": 0},
    {"kind": int(K.TRADE), "size": 0}, {"kind": int(K.FILL), "price": 0},
    {"kind": int(K.CLEAR), "price": 5, "size": 0}, {"kind": int(K.CLEAR), "price": 0},
    {"kind": int(K.SNAPSHOT_START), "price": 0, "size": 7},
    {"kind": int(K.SNAPSHOT_END), "price": 1, "size": 0},
    {"kind": int(K.TICK), "venue": 1, "price": 0, "size": 0},
    {"kind": int(K.TICK), "side": 1, "price": 0, "size": 0},
    {"kind": int(K.TICK), "price": 0, "size": 1},
]


@pytest.mark.parametrize("bad", MALFORMED, ids=lambda b: ",".join(f"{k}={v}" for k, v in b.items()))
def test_each_malformed_kind_is_counted_and_not_applied(bad):
    msg = {**GOOD, **bad}
    assert model.malformed(msg, venues=2)
    follow = {**GOOD, "seq": 40, "price": 11}      # not a gap: the bad one set no sequence
    trace = simulate([word(msg), word(msg), None, word(follow), None, None])
    assert [t["malformed"] for t in trace] == [0, 1, 1, 0, 0, 0]
    assert [t["malformed_count"] for t in trace] == [0, 1, 2, 2, 2, 2]
    for t in trace[:3]:
        for v in t["venue"]:
            assert v["counters"]["msgs"] == 0 and v["bids"][0] == (0, 0) and not v["updated"]
    v = trace[4]["venue"][0]
    assert v["bids"][0] == (11, 1) and not v["events"] and v["counters"]["msgs"] == 1


def test_tick_is_neither_malformed_nor_a_venue_message():
    tick = {**GOOD, "kind": int(K.TICK), "seq": 0, "price": 0, "size": 0}
    trace = simulate([word(tick), None, None])
    assert all(t["malformed_count"] == 0 for t in trace)
    assert all(not v["updated"] and v["counters"]["msgs"] == 0
               for t in trace for v in t["venue"])


def test_latencies_and_one_message_per_cycle():
    """BBO at +1, the rest at +2, ``updated``/events one cycle each; back to back, mixed venues."""
    f = Feed()
    msgs = [f(K.LEVEL_SET, venue=0, side=BID, price=10, size=4),
            f(K.LEVEL_SET, venue=0, side=ASK, price=10, size=2),    # locked
            f(K.LEVEL_SET, venue=1, side=ASK, price=20, size=3),
            f(K.LEVEL_DELETE, venue=0, side=ASK, price=10)]
    trace = simulate([word(m) for m in msgs] + [None] * 3)
    assert BBO_LATENCY == 1 and STATUS_LATENCY == 2
    v0 = [t["venue"][0] for t in trace]
    assert [x["best_ask"] for x in v0] == [0, 10, 10, 0, 0, 0, 0]            # +1
    assert [x["ask_count"] for x in v0] == [0, 0, 1, 1, 0, 0, 0]             # +2
    assert [x["ask_depth"] for x in v0] == [0, 0, 2, 2, 0, 0, 0]
    assert [x["valid"] for x in v0] == [0, 1, 1, 0, 0, 0, 0]
    assert [x["updated"] for x in v0] == [0, 1, 1, 0, 1, 0, 0]
    assert [x["events"] for x in v0] == [set(), set(), {"locked"}, set(), set(), set(), set()]
    assert [x["counters"]["msgs"] for x in v0] == [0, 1, 2, 2, 3, 3, 3]
    v1 = [t["venue"][1] for t in trace]
    assert [x["best_ask"] for x in v1] == [0, 0, 20, 20, 20, 20, 20]
    assert [x["updated"] for x in v1] == [0, 0, 0, 1, 0, 0, 0]


def test_random_walk_agrees_with_the_model():
    seed = random.randrange(1 << 30)
    print(f"seed={seed}")
    rng, f, msgs = random.Random(seed), Feed(), []
    for _ in range(300):
        venue, side = rng.randrange(2), rng.choice((BID, ASK))
        price = 100 - rng.randrange(1, 8) if side == BID else 100 + rng.randrange(-1, 8)
        r = rng.random()
        if r < 0.5:
            msgs.append(f(K.LEVEL_SET, venue=venue, side=side, price=price,
                          size=rng.randrange(1, 50)))
        elif r < 0.9:
            msgs.append(f(K.LEVEL_DELETE, venue=venue, side=side, price=price))
        elif r < 0.95:
            msgs.append(f(K.SNAPSHOT_START if rng.random() < 0.5 else K.SNAPSHOT_END,
                          venue=venue))
        else:
            msgs.append(f(K.TRADE, venue=venue, side=side, price=price, size=1,
                          seq=rng.randrange(5)))
    agrees_with_model(msgs, run(msgs, levels=2, capacity=3), levels=2, capacity=3)


def test_counters_wrap_at_32_bits():
    dut = Book(2)

    async def bench(ctx):
        for name in counter_layout.members:
            ctx.set(dut.status.counters[name], WRAP)
        ctx.set(dut.op.valid, 1)
        ctx.set(dut.op.payload.op, Op.DELETE)      # absent: missing, and gap set by hand
        ctx.set(dut.op.payload.price, 5)
        ctx.set(dut.op.payload.gap, 1)
        await ctx.tick()
        ctx.set(dut.op.valid, 0)
        await ctx.tick()
        c = ctx.get(dut.status.counters)
        assert (c.msgs, c.gaps, c.missing, c.crossed, c.capacity) == (0, 0, 0, WRAP, WRAP)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def test_layouts_match_the_model():
    assert [1 << event_layout[name].offset for name in (
        "gap", "crossed", "locked", "capacity", "missing")] == [
        model.FLAG_GAP, model.FLAG_CROSSED, model.FLAG_LOCKED, model.FLAG_CAPACITY,
        model.FLAG_MISSING]
    fields = [f.name for f in dataclasses.fields(model.VenueCounters) if f.name != "flags"]
    assert list(counter_layout.members) == fields


@pytest.mark.parametrize(("make", "message"), [
    (lambda: Books(venues=0), "venues must be an integer 1..16, not 0"),
    (lambda: Books(venues=17), "venues must be an integer 1..16, not 17"),
    (lambda: Books(venues=True), "venues must be an integer 1..16, not True"),
    (lambda: Books(levels=0), "levels must be a positive integer, not 0"),
    (lambda: Books(levels="16"), "levels must be a positive integer, not '16'"),
    (lambda: Books(levels=4, capacity=3), r"capacity must be an integer >= levels \(4\)"),
    (lambda: Book(2, capacity=2.5), r"capacity must be an integer >= levels \(2\)"),
    (lambda: Ingress(1.0), "venues must be an integer 1..16, not 1.0"),
    (lambda: BookSide(2, None, side=2), "side must be Side.BID or Side.ASK, not 2"),
    (lambda: BookSide(2, None, BID, price_width=33), "price_width must be an integer 1..32"),
])
def test_arguments_are_validated(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_default_capacity_is_twice_the_levels():
    books = Books()
    assert (books.venues, books.levels, books.capacity) == (2, 16, 32)
    assert Book(3, capacity=3).capacity == 3
