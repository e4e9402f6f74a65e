"""cocotb bench for hw/books.py: feed words from ``encode_feed``, checked against ``BookModel``.

Inputs change at the falling edge, so the rising edge after it accepts them. At each falling
edge the bench reads what the DUT shows after the rising edge before: the BBO group of the
message accepted at that edge (``BBO_LATENCY`` = 1) and the status group, strobes and counters
of the message accepted one edge earlier (``STATUS_LATENCY`` = 2), and compares each with the
model's state right after that message. Configuration comes from the environment (set by
tests/cocotb/test_books.py): ``BOOKS_CONFIG`` = "venues,levels,capacity", ``BOOKS_MESSAGES``.
"""

import csv
import io
import os
import zipfile
from collections import Counter, deque
from dataclasses import dataclass
from decimal import Decimal
from itertools import islice
from pathlib import Path

import cocotb
from cocotb.triggers import FallingEdge
from tb import TB

from obcore.hw.book import BBO_LATENCY, STATUS_LATENCY, counter_layout, event_layout
from obcore.hw.ingress import COUNTER_WIDTH, PRICE_WIDTH, SIZE_WIDTH
from obcore.hw.layouts import FEED, FeedKind, Side, decode_feed, encode_feed
from obcore.sim.model import SIZE_MAX, BookModel

VENUES, LEVELS, CAPACITY = (int(x) for x in os.environ.get("BOOKS_CONFIG", "2,16,32").split(","))
MESSAGES = int(os.environ.get("BOOKS_MESSAGES", "100000"))
K = FeedKind
WRAP = (1 << COUNTER_WIDTH) - 1
PRICE_MAX = (1 << PRICE_WIDTH) - 1

BBO = ("best_bid", "best_bid_qty", "best_ask", "best_ask_qty", "bid_prices", "bid_sizes",
       "ask_prices", "ask_sizes", "valid", "exact", "synced")
STATUS = ("bid_depth", "ask_depth", "bid_count", "ask_count", "counters")
assert BBO_LATENCY == 1 and STATUS_LATENCY == 2, "the bench reads at these latencies"


def pack(values, width):
    return sum(v << (i * width) for i, v in enumerate(values))


def _show(name, value):
    """A packed port value, readable in an error message."""
    if name == "counters":
        return {f: value >> counter_layout[f].offset & WRAP for f in counter_layout.members}
    if name == "events":
        return [f for f in event_layout.members if value >> event_layout[f].offset & 1]
    if name.endswith(("_prices", "_sizes")):
        width = PRICE_WIDTH if name.endswith("_prices") else SIZE_WIDTH
        return [value >> (i * width) & ((1 << width) - 1) for i in range(LEVELS)]
    return value


@dataclass(frozen=True)
class Expect:
    """What the DUT must show for one cycle's input (``venue`` None: idle, TICK or malformed)."""
    venue: object
    bbo: tuple = ()
    status: tuple = ()
    events: int = 0
    malformed: int = 0
    malformed_count: int = 0


def expect(model, word):
    """Step ``model`` with ``word`` (None: an idle cycle) and return the :class:`Expect`."""
    if word is None:
        return Expect(None, malformed_count=model.malformed & WRAP)
    msg = decode_feed(word)
    before = model.malformed
    counts = {"gap": "gaps", "missing": "missing", "capacity": "capacity"}   # event: counter
    prior = {e: getattr(model.books[msg["venue"]].counters, c) for e, c in counts.items()
             } if msg["venue"] < VENUES else None
    venue = model.step(msg)
    if venue is None:
        return Expect(None, malformed=int(model.malformed != before),
                      malformed_count=model.malformed & WRAP)
    book = model.books[venue]
    out, bids, asks = book.outputs(), book.bids.top(LEVELS), book.asks.top(LEVELS)
    bbo = (out["best_bid"], out["best_bid_qty"], out["best_ask"], out["best_ask_qty"],
           pack([p for p, _ in bids], PRICE_WIDTH), pack([s for _, s in bids], SIZE_WIDTH),
           pack([p for p, _ in asks], PRICE_WIDTH), pack([s for _, s in asks], SIZE_WIDTH),
           int(out["valid"]), int(out["exact"]), int(out["synced"]))
    status = (out["bid_depth"], out["ask_depth"], out["bid_count"], out["ask_count"],
              pack([getattr(book.counters, f) & WRAP for f in counter_layout.members],
                   COUNTER_WIDTH))
    state = book.crossed_state()
    raised = {e for e, c in counts.items() if getattr(book.counters, c) != prior[e]}
    raised |= {state} if state else set()
    events = sum(1 << event_layout[name].offset for name in raised)
    return Expect(venue, bbo, status, events, malformed_count=model.malformed & WRAP)


class RandomFeed:
    """Random words with a purpose: churn around a drifting mid, deletes of the best and of
    absent levels (``model`` has seen every word sent), crowding past the capacity, snapshots,
    clears, trades, fills, ticks, sequence gaps and wrap, malformed words, edge prices."""

    def __init__(self, rng, model):
        self.rng, self.model = rng, model
        self.seq = [rng.randrange(1 << 32) for _ in range(VENUES)]
        self.seq[0] = (1 << 32) - 50                    # venue 0 wraps its sequence early
        self.mid = [rng.randrange(1 << 10, 1 << 24) for _ in range(VENUES)]
        self.script = [deque() for _ in range(VENUES)]  # queued (kind, side, price, size)
        self.gap_rate = 0.002

    def _word(self, kind, venue, side=Side.BID, price=0, size=0):
        seq = 0
        if kind not in (K.FILL, K.TICK):
            if self.rng.random() < self.gap_rate:     # lost, repeated or reordered numbers
                self.seq[venue] += self.rng.choice((1, 2, 7, 1000, -1, -3))
            seq = self.seq[venue] % (1 << 32)
            self.seq[venue] = seq + 1
        return encode_feed(kind, venue, side, seq, price, size)

    def _size(self):
        """Mostly small lots, some large, a few at the maximum (the depth sums' range)."""
        r = self.rng.random()
        top = SIZE_MAX + 1 if r < 0.02 else 100 if r < 0.7 else 1 << 20
        return self.rng.randrange(max(1, top - 3) if r < 0.02 else 1, top)

    def _price(self, venue, side, depth):
        """A price ``depth`` ticks behind the touch of ``side`` (negative: through the mid)."""
        mid = self.mid[venue]
        return max(1, mid - depth) if side == Side.BID else min(PRICE_MAX, mid + 1 + depth)

    def _malformed(self):
        rng = self.rng
        fields = {"kind": int(rng.choice(list(K))), "venue": rng.randrange(VENUES),
                  "side": rng.randrange(2), "flags": 0, "seq": rng.randrange(1 << 32),
                  "price": rng.randrange(1, 1 << 32), "size": rng.randrange(1, 1 << 31)}
        fields.update([rng.choice([
            ("kind", 0), ("kind", rng.randrange(9, 256)), ("flags", rng.randrange(1, 256)),
            ("side", rng.randrange(2, 256)), ("venue", rng.randrange(VENUES, 256)),
            ("price", 0), ("size", 0), ("size", rng.randrange(1 << 31, 1 << 32))])])
        if rng.random() < 0.1:              # any word at all
            fields = {f.name: rng.randrange(1 << f.bits) for f in FEED.fields}
        return encode_feed(**fields)

    def _crowd(self, venue):
        """More distinct levels on one side than it can hold, in a random order."""
        side, n = self.rng.choice(list(Side)), CAPACITY + self.rng.randrange(1, LEVELS + 4)
        depths = self.rng.sample(range(3 * n), n)
        self.script[venue].extend((K.LEVEL_SET, side, self._price(venue, side, d), self._size())
                                  for d in depths)

    def _snapshot(self, venue):
        """A snapshot of up to twice the capacity a side, sometimes with deletes inside it."""
        rng, script = self.rng, self.script[venue]
        script.append((K.SNAPSHOT_START, Side.BID, 0, 0))
        for side in Side:
            n = rng.randrange(2 * CAPACITY + LEVELS)
            depths = sorted(rng.sample(range(-2, 3 * n + 3), n))   # -2: it may pass crossed
            script.extend((K.LEVEL_SET, side, self._price(venue, side, d), self._size())
                          for d in depths)
            if rng.random() < 0.3:      # corrections: the best few go again (maybe short now)
                script.extend((K.LEVEL_DELETE, side, self._price(venue, side, d), 0)
                              for d in depths[:rng.randrange(CAPACITY)])
        script.append((K.SNAPSHOT_END, Side.BID, 0, 0))

    def next(self):
        """The next feed word."""
        rng = self.rng
        r = rng.random()
        if r < 0.01:
            return encode_feed(K.TICK)
        if r < 0.02:
            return self._malformed()
        v = rng.randrange(VENUES)
        if self.script[v] and rng.random() < 0.8:     # scripts interleave with the churn
            kind, side, price, size = self.script[v].popleft()
            return self._word(kind, v, side, price, size)
        if rng.random() < 0.05:
            self.mid[v] = min(max(self.mid[v] + rng.choice((-1, 1)), 1 << 8), PRICE_MAX >> 1)
        side, book = rng.choice(list(Side)), self.model.books[v]
        levels = book.side(side)
        r = rng.random()
        if r < 0.42:
            depth = rng.randrange(-2, 2 * CAPACITY) if rng.random() < 0.05 else \
                int(rng.expovariate(2 / CAPACITY))
            return self._word(K.LEVEL_SET, v, side, self._price(v, side, depth), self._size())
        if r < 0.72:
            if len(levels) and rng.random() < 0.85:
                i = 0 if rng.random() < 0.5 else rng.randrange(len(levels))
                price = levels.level(i)[0]                    # the best, or another held level
            else:
                price = self._price(v, side, rng.randrange(3 * CAPACITY))
            return self._word(K.LEVEL_DELETE, v, side, price)
        if r < 0.80:
            return self._word(rng.choice((K.TRADE, K.FILL)), v, side,
                              self._price(v, side, rng.randrange(-2, 3)), self._size())
        if r < 0.805:
            return self._word(K.CLEAR, v)
        if r < 0.81:
            self._snapshot(v)
        elif r < 0.818:
            self._crowd(v)
        elif r < 0.822:                                         # the extremes of the key range
            price = rng.choice((1, 2, PRICE_MAX - 1, PRICE_MAX))
            if rng.random() < 0.5:
                return self._word(K.LEVEL_SET, v, side, price, self._size())
            return self._word(K.LEVEL_DELETE, v, side, price)
        return self.next()


class BooksBench(TB):
    """Drives feed words, steps the model, checks every output due each cycle."""

    def __init__(self, dut):
        super().__init__(dut)
        self.model = BookModel(VENUES, LEVELS, CAPACITY)
        self.ports = [{name: getattr(dut, f"venue__{v}__{name}") for name in (
            *BBO, *STATUS, "updated", "events")} for v in range(VENUES)]
        self.globals = {"malformed": dut.malformed, "malformed_count": dut.malformed_count}
        self.due = deque([Expect(None), Expect(None)], maxlen=2)   # the last two cycles
        self.stats = Counter()
        self.sent = 0
        dut.feed__valid.value = 0

    async def start(self):
        await self.reset()
        await FallingEdge(self.clk)

    def _compare(self, names, ports, want, what):
        got = tuple(int(ports[n].value) for n in names)
        if got != want:
            diff = {n: (_show(n, g), _show(n, w))
                    for n, g, w in zip(names, got, want, strict=True) if g != w}
            raise AssertionError(f"{what}: (got, want) {diff}")

    def check(self):
        """The outputs due now: BBO of the last cycle's message, status of the one before."""
        now, older = self.due[-1], self.due[-2]
        where = f"after {self.sent} words (COCOTB_RANDOM_SEED={os.environ['COCOTB_RANDOM_SEED']})"
        if now.venue is not None:
            self._compare(BBO, self.ports[now.venue], now.bbo,
                          f"{where}: venue {now.venue} at +{BBO_LATENCY}")
        for v, ports in enumerate(self.ports):
            if older.venue == v:
                self._compare(("updated", "events", *STATUS), ports,
                              (1, older.events, *older.status),
                              f"{where}: venue {v} at +{STATUS_LATENCY}")
            else:
                self._compare(("updated", "events"), ports, (0, 0),
                              f"{where}: venue {v} untouched at +{STATUS_LATENCY}")
        self._compare(("malformed", "malformed_count"), self.globals,
                      (older.malformed, older.malformed_count), f"{where}: malformed")

    async def cycle(self, word):
        """Check what is due, then present ``word`` (None: idle) for one cycle."""
        self.check()
        if word is None:
            self.dut.feed__valid.value = 0
        else:
            self.dut.feed__valid.value = 1
            self.dut.feed__payload.value = word
            self.sent += 1
        e = expect(self.model, word)
        self.due.append(e)
        self._count(word, e)
        await FallingEdge(self.clk)

    def _count(self, word, e):
        """Coverage: how often each situation the bench is meant to reach was reached."""
        s = self.stats
        s["cycles"] += 1
        s["idle" if word is None else "malformed" if e.malformed else
          "tick" if e.venue is None else "venue"] += 1
        s.update(f for f in event_layout.members if e.events >> event_layout[f].offset & 1)
        if e.venue is not None:
            b, short = self.model.books[e.venue], not e.bbo[BBO.index("exact")]
            s.update({"truncated": b.bids.truncated or b.asks.truncated, "short": short,
                      "full": max(len(b.bids), len(b.asks)) == CAPACITY,
                      "unsynced": not b.synced, "short_in_snapshot": b.in_snapshot and short})

    async def drain(self):
        for _ in range(STATUS_LATENCY):
            await self.cycle(None)


@cocotb.test()
async def random_stream(dut):
    """MESSAGES random words over all venues, in bursts and with idle cycles between."""
    bench = BooksBench(dut)
    rng, feed = bench.rng, RandomFeed(bench.rng, bench.model)
    await bench.start()
    idle = 0.0
    while bench.sent < MESSAGES:
        if bench.sent % 256 == 0:             # alternate back-to-back bursts and idle stretches
            idle = rng.choice((0.0, 0.0, 0.2, 0.6))
        while rng.random() < idle:
            await bench.cycle(None)
        await bench.cycle(feed.next())
    await bench.drain()
    s = bench.stats
    dut._log.info(f"{bench.sent} words checked over {s['cycles']} cycles: {dict(s)}")
    rare = [name for name in (*event_layout.members, "malformed", "tick", "idle", "truncated",
                              "short", "full", "unsynced", "short_in_snapshot")
            if s[name] < MESSAGES // 2000]
    assert not rare, f"the stream hardly exercised {rare}"


@cocotb.test()
async def full_rate(dut):
    """Throughput: words back to back, one per cycle with no idle, each checked at its latency."""
    bench = BooksBench(dut)
    feed = RandomFeed(bench.rng, bench.model)
    await bench.start()
    n = max(MESSAGES // 10, 1000)
    for _ in range(n):
        assert int(dut.feed__ready.value) == 1, "the feed must never be stalled"
        await bench.cycle(feed.next())
    await bench.drain()
    s = bench.stats
    assert s["cycles"] == n + STATUS_LATENCY and s["idle"] == STATUS_LATENCY
    dut._log.info(f"{n} words in {n} cycles, all checked: {dict(s)}")


@cocotb.test()
async def latency(dut):
    """Measures, for one message after idle cycles, the cycles until each output changes."""
    bench = BooksBench(dut)
    await bench.start()
    for word in (encode_feed(K.LEVEL_SET, 0, Side.ASK, 1, 900, 5), None, None):
        await bench.cycle(word)
    ports = bench.ports[0]
    before = {name: int(h.value) for name, h in ports.items()}
    first = {}
    await bench.cycle(encode_feed(K.LEVEL_SET, 0, Side.BID, 2, 901, 7))   # crosses the book
    for cycle in range(1, 5):
        for name, h in ports.items():
            if int(h.value) != before[name]:
                first.setdefault(name, cycle)
        await bench.cycle(None)
    dut._log.info(f"cycles from acceptance to the first change: {first}")
    fast = ("best_bid", "best_bid_qty", "bid_prices", "bid_sizes", "valid")
    assert first == dict.fromkeys(fast, BBO_LATENCY) | dict.fromkeys(
        ("bid_depth", "bid_count", "updated", "events", "counters"), STATUS_LATENCY)

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
TARDIS = DATA / "tardis" / "tardis_binance_BTCUSDT_incremental_book_L2_2019-12-01_rows_1_2050.csv"
LOBSTER = DATA / "lobster" / "LOBSTER_SampleFile_AMZN_2012-06-21_5.zip"
LOBSTER_ROWS = int(os.environ.get("BOOKS_LOBSTER_ROWS", "10000"))


def _units(text, scale):
    """Decimal ``text`` times ``scale`` as an exact integer."""
    value = Decimal(text) * scale
    assert value == value.to_integral_value(), f"{text} is not a whole number of 1/{scale}"
    return int(value)


def tardis_messages(path):
    """Tardis incremental_book_L2 rows as (kind, side, price, size): 0.01 USDT, 1e-6 BTC; a
    switch of ``is_snapshot`` to true starts a snapshot (the book resets), to false ends it."""
    with path.open() as f:
        rows = list(csv.DictReader(f))
    out, snapshot = [], False
    for row in rows:
        if (row["is_snapshot"] == "true") != snapshot:
            snapshot = not snapshot
            out.append((K.SNAPSHOT_START if snapshot else K.SNAPSHOT_END, Side.BID, 0, 0))
        side = Side.BID if row["side"] == "bid" else Side.ASK
        price, size = _units(row["price"], 100), _units(row["amount"], 10 ** 6)
        out.append((K.LEVEL_SET if size else K.LEVEL_DELETE, side, price, size))
    return out


def lobster_messages(path, rows):
    """LOBSTER level-5 orderbook rows as level changes (row i - row i-1), 1-cent ticks.

    Returns the messages and, per message, the index of the orderbook row that is the true
    top 5 once it is applied (None inside a row's group). Executions become TRADEs.
    """
    with zipfile.ZipFile(path) as z:
        books, events = ([*islice(csv.reader(io.TextIOWrapper(z.open(name))), rows)]
                         for part in ("orderbook", "message")
                         for name in z.namelist() if part in name)
    out, truth, prev = [(K.SNAPSHOT_START, Side.BID, 0, 0)], [None], ({}, {})
    for i, (row, event) in enumerate(zip(books, events, strict=True)):
        now = lobster_levels(row)
        if event[1] in ("4", "5"):      # execution: aggressor opposite the resting order
            side = Side.ASK if event[5] == "1" else Side.BID
            out.append((K.TRADE, side, int(event[4]) // 100, int(event[3])))
        for side in Side:
            out.extend((K.LEVEL_DELETE, side, p, 0) for p in prev[side] if p not in now[side])
            out.extend((K.LEVEL_SET, side, p, s) for p, s in now[side].items()
                       if prev[side].get(p) != s)
        if not i:
            out.append((K.SNAPSHOT_END, Side.BID, 0, 0))
        truth.extend([None] * (len(out) - len(truth) - 1) + [i])
        prev = now
    return out, truth, books


def lobster_levels(row):
    """One orderbook row as ({bid price: size}, {ask price: size}) in 1-cent ticks."""
    sides = ({}, {})
    for j in range(0, len(row), 4):
        for side, (price, size) in ((Side.ASK, row[j:j + 2]), (Side.BID, row[j + 2:j + 4])):
            if int(size):
                assert int(price) % 100 == 0
                sides[side][int(price) // 100] = int(size)
    return sides


@cocotb.test(skip=not (TARDIS.exists() and LOBSTER.exists()))
async def real_data(dut):
    """Recorded feeds, interleaved: Tardis Binance BTCUSDT on venue 0 (a 1000-level snapshot:
    the bound rule at work), LOBSTER AMZN on venue 1. Besides DUT == model, the model equals the
    truth: LOBSTER's top 5 after every row, the full-depth book whenever it reads ``exact``."""
    bench = BooksBench(dut)
    full = BookModel(VENUES, LEVELS, capacity=None)
    lobster, truth, rows = lobster_messages(LOBSTER, LOBSTER_ROWS)
    queues = [deque((m, None) for m in tardis_messages(TARDIS)), deque(zip(lobster, truth,
                                                                         strict=True))]
    seq, n, seen = [7, (1 << 32) - 3], min(LEVELS, 5), Counter()   # LOBSTER has 5 levels
    await bench.start()
    while any(queues):
        venue = bench.rng.choice([v for v, q in enumerate(queues) if q])
        (kind, side, price, size), row = queues[venue].popleft()
        word = encode_feed(kind, venue, side, seq[venue], price, size)
        seq[venue] = (seq[venue] + 1) % (1 << 32)
        if bench.rng.random() < 0.3:
            await bench.cycle(None)
        await bench.cycle(word)
        full.step(decode_feed(word))
        book, deep = bench.model.books[venue], full.books[venue]
        exact = book.outputs()["exact"]
        assert not exact or (book.bids.top(LEVELS), book.asks.top(LEVELS)) == (
            deep.bids.top(LEVELS), deep.asks.top(LEVELS)), f"venue {venue}: {word:#x}"
        seen[f"{'exact' if exact else 'short'}_{venue}"] += 1
        if row is not None:
            bids, asks = lobster_levels(rows[row])
            want = [(held + [(0, 0)] * n)[:n] for held in (sorted(bids.items(), reverse=True),
                                                          sorted(asks.items()))]
            assert [book.bids.top(n), book.asks.top(n)] == want, f"LOBSTER row {row}"
            seen["truth_rows"] += 1
        seen["truncated_0"] += bench.model.books[0].asks.truncated
    await bench.drain()
    dut._log.info(f"{bench.sent} recorded messages checked: {dict(seen)}, {dict(bench.stats)}")
    assert seen["truth_rows"] == len(rows) and seen["truncated_0"] and not seen["short_1"]
