"""cocotb bench for hw/signals.py: random and real-data books, bit-exact against the model.

Inputs change at the falling edge; the outputs read at a falling edge are compared with the
model's result for the inputs of ``LATENCY`` cycles before (the telemetry imbalance values:
``IMB_LATENCY`` cycles before, of a venue picked at random with the depths, sometimes none).
The BBO fields (``EARLY_FIELDS``) and ``tick`` of a cycle's
inputs go in ``BBO_LEAD`` = 1 cycle ahead of its depths, ``updated`` and parameters.
"""

import csv
import io
import os
import zipfile
from collections import Counter, deque
from pathlib import Path

import cocotb
from cocotb.triggers import FallingEdge
from tb import TB

from obcore.hw.layouts import FeedKind, Side
from obcore.hw.registers import REGISTERS, to_fixed
from obcore.hw.signals import (
    BBO_LEAD,
    CROSS_PARAMS,
    EARLY_FIELDS,
    IMB_LATENCY,
    IMB_OUTPUTS,
    LATENCY,
    SIGMA_LAG,
    STATUS,
    VENUE_PARAMS,
    port_layout,
)
from obcore.sim.model import BookModel
from obcore.sim.signals_model import (
    BOOK_FIELDS,
    EMPTY_BOOK,
    OUTPUT_PORTS,
    BookStimulus,
    SignalsModel,
    mismatches,
    random_params,
)

VENUES = 2                  # must match tests/cocotb/test_signals.py
CYCLES = int(os.environ.get("SIGNALS_CYCLES", "30000"))
DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
TARDIS = DATA / "tardis" / "tardis_binance_BTCUSDT_incremental_book_L2_2019-12-01_rows_1_2050.csv"
LOBSTER = DATA / "lobster" / "LOBSTER_SampleFile_AMZN_2012-06-21_5.zip"
LOBSTER_ROWS = 4000


class SignalsBench(TB):
    """Drives books, tick and parameters; steps the model; checks every output every cycle."""

    def __init__(self, dut):
        super().__init__(dut)
        self.model = SignalsModel(VENUES)
        self.books = [dict(EMPTY_BOOK) for _ in range(VENUES)]
        self.book_ports = [{f: getattr(dut, f"book__{i}__{f}") for f in BOOK_FIELDS}
                           for i in range(VENUES)]
        self.outputs = {p: getattr(dut, p) for p in OUTPUT_PORTS}
        self.imbalances = {p: getattr(dut, p) for p in IMB_OUTPUTS}
        self.driven = {}
        self.expected = deque(maxlen=IMB_LATENCY)     # model results, newest last
        self.ones = Counter()
        self.checked = self.fresh = self.skipped = 0
        # The inputs whose BBO and tick are in the block already: after reset its delayed
        # BBO holds an empty book without a tick.
        self.pending = ([dict(EMPTY_BOOK) for _ in range(VENUES)], False)
        self._drive(self.books, False, 0)

    def _set(self, handle, key, value):
        if self.driven.get(key) != value:
            handle.value = value
            self.driven[key] = value

    def _drive(self, books, tick, imb_venue):
        """The depths, ``updated``, parameters and ``imb_venue`` of the pending inputs; the
        BBO and tick of ``books``, ``tick`` (the next cycle's)."""
        assert BBO_LEAD == 1
        self._set(self.dut.imb_venue, "imb_venue", imb_venue)
        for i, (book, early) in enumerate(zip(self.pending[0], books, strict=True)):
            for f, handle in self.book_ports[i].items():
                self._set(handle, (i, f), int((early if f in EARLY_FIELDS else book)[f]))
        for name, values in self.model.params.items():
            if isinstance(values, list):
                width = port_layout(name).width
                values = sum(v << (i * width) for i, v in enumerate(values))
            self._set(getattr(self.dut, name), name, values)
        self._set(self.dut.tick, "tick", int(tick))

    async def start(self):
        await self.reset()
        await FallingEdge(self.clk)

    def check(self):
        if len(self.expected) == IMB_LATENCY:
            got = {p: h.value.to_unsigned() for p, h in self.imbalances.items()}
            errors = mismatches(got, self.expected[0], VENUES, IMB_OUTPUTS)
            assert not errors, f"imbalances, cycle {self.checked - IMB_LATENCY + LATENCY}: " \
                               f"{errors}"
            self.ones["imbalance"] += any(got.values())
        if len(self.expected) < LATENCY:
            return
        got = {p: h.value.to_unsigned() for p, h in self.outputs.items()}
        errors = mismatches(got, self.expected[-LATENCY], VENUES, OUTPUT_PORTS)
        assert not errors, f"cycle {self.checked}: {errors}"
        self.checked += 1
        for i in range(VENUES):
            status = got["sig_status"] >> (i * STATUS.size)
            for name, field in STATUS:
                self.ones[name] += status >> field.offset & 1
        self.fresh += all(got["sig_status"] >> (i * STATUS.size + STATUS["sigma_fresh"].offset)
                          & 1 for i in range(VENUES))
        self.ones["xv_over"] += got["xv_status"] >> 1 & 1

    async def cycle(self, books, tick):
        """Check the outputs due now, then present one cycle of inputs: the rest of the
        pending ones and the BBO and tick of ``books``, ``tick``, which become pending."""
        self.check()
        imb_venue = self.rng.choice((*range(VENUES), VENUES, 255))
        self._drive(books, tick, imb_venue)
        # ticks right after a volatility sample: no sample (at most one every other cycle)
        self.skipped += self.pending[1] and any(unit.sampled for unit in self.model.units)
        self.expected.append(self.model.step(*self.pending, imb_venue))
        self.pending = ([dict(b) for b in books], tick)
        await FallingEdge(self.clk)

    async def drain(self):
        for _ in range(BBO_LEAD + IMB_LATENCY):
            await self.cycle(self.books, False)


@cocotb.test()
async def random_books(dut):
    """Random, extreme, one-sided and empty books with random parameters and tick rates."""
    bench = SignalsBench(dut)
    rng = bench.rng
    await bench.start()
    stims = [BookStimulus(rng) for _ in range(VENUES)]
    tick_rate = 0.02
    for cycle in range(CYCLES):
        if cycle % 500 == 0:
            tick_rate = rng.choice((0.002, 0.01, 0.02, 0.05, 0.3))
        if rng.random() < 0.003:
            bench.model.params.update(random_params(rng, VENUES))
        elif rng.random() < 0.01:
            name = rng.choice((*VENUE_PARAMS, *CROSS_PARAMS))
            bench.model.params.update(random_params(rng, VENUES, names=[name]))
        for i in range(VENUES):
            update = rng.random() < 0.4
            bench.books[i] = stims[i].next() if update else {**bench.books[i], "updated": 0}
        await bench.cycle(bench.books, rng.random() < tick_rate)
    await bench.drain()
    dut._log.info(f"{bench.checked} cycles checked, {bench.fresh} with sigma fresh on both "
                  f"venues, {bench.skipped} ticks right after a volatility sample; status bits "
                  f"set: {dict(bench.ones)}")
    assert bench.fresh > CYCLES // 4 and bench.skipped > 0
    never = [name for name in (*(n for n, _ in STATUS), "xv_over", "imbalance")
             if bench.ones[name] == 0]
    always = [name for name, _ in STATUS if bench.ones[name] >= bench.checked * VENUES]
    assert not never and not always, f"status bits never set {never}, always set {always}"


def _tardis_messages(path):
    """Tardis incremental_book_L2 rows -> feed messages; a TICK per 100 ms of local time."""
    with path.open() as f:
        rows = list(csv.DictReader(f))
    out, last, snapshot = [], None, False
    for row in rows:
        stamp, is_snap = int(row["local_timestamp"]), row["is_snapshot"] == "true"
        if is_snap and not snapshot:
            out.append({"kind": FeedKind.SNAPSHOT_START})
        elif snapshot and not is_snap:
            out.append({"kind": FeedKind.SNAPSHOT_END})
        snapshot = is_snap
        if last is not None and stamp // 100_000 != last // 100_000:
            out.extend({"kind": FeedKind.TICK} for _ in range(min(3, (stamp - last) // 100_000
                                                                  + 1)))
        last = stamp
        price = round(float(row["price"]) * 100)          # 0.01 USDT ticks
        size = round(float(row["amount"]) * 1_000_000)    # 1e-6 BTC lots
        side = Side.BID if row["side"] == "bid" else Side.ASK
        kind = FeedKind.LEVEL_SET if size else FeedKind.LEVEL_DELETE
        out.append({"kind": kind, "side": side, "price": price, "size": size})
    return out


def _lobster_messages(path, rows):
    """LOBSTER orderbook rows -> level changes between consecutive rows (README recipe);
    row 0 is the snapshot. A TICK per 100 ms of message time."""
    with zipfile.ZipFile(path) as z:
        names = sorted(z.namelist())
        book_name = next(n for n in names if "orderbook" in n)
        msg_name = next(n for n in names if "message" in n)
        books = list(csv.reader(io.TextIOWrapper(z.open(book_name))))[:rows]
        times = [float(r[0]) for r in csv.reader(io.TextIOWrapper(z.open(msg_name)))][:rows]

    def levels(row):
        sides = ({}, {})
        for j in range(0, len(row), 4):
            for side, (price, size) in ((Side.ASK, row[j:j + 2]), (Side.BID, row[j + 2:j + 4])):
                if int(size) > 0:
                    sides[side][int(price) // 100] = int(size)     # 1 cent ticks
        return sides

    out = [{"kind": FeedKind.SNAPSHOT_START}]
    prev = ({}, {})
    for k, row in enumerate(books):
        now = levels(row)
        if k and int(times[k] * 10) != int(times[k - 1] * 10):
            out.append({"kind": FeedKind.TICK})
        for side in (Side.BID, Side.ASK):
            out.extend({"kind": FeedKind.LEVEL_DELETE, "side": side, "price": p}
                       for p in prev[side] if p not in now[side])
            out.extend({"kind": FeedKind.LEVEL_SET, "side": side, "price": p, "size": s}
                       for p, s in now[side].items() if prev[side].get(p) != s)
        if not k:
            out.append({"kind": FeedKind.SNAPSHOT_END})
        prev = now
    return out


def _feed(streams):
    """Interleave per-venue message lists into one sequenced feed (TICKs are global)."""
    seq, queues, out = [0] * len(streams), [deque(s) for s in streams], []
    while any(queues):
        for venue, queue in enumerate(queues):
            if queue:
                msg = {"venue": 0, "side": 0, "flags": 0, "seq": 0, "price": 0, "size": 0,
                       **queue.popleft()}
                if msg["kind"] != FeedKind.TICK:
                    seq[venue] += 1
                    msg.update(venue=venue, seq=seq[venue])
                out.append({k: int(v) for k, v in msg.items()})
    return out


@cocotb.test(skip=not (TARDIS.exists() and LOBSTER.exists()))
async def real_data(dut):
    """Venue 0: LOBSTER AMZN (1 cent ticks); venue 1: Tardis Binance BTCUSDT (0.01 USDT).
    The reference BookModel turns the recorded feed into book outputs, one message a cycle;
    after every fourth TICK the feed pauses long enough for sigma to settle, as real ticks
    (milliseconds apart) always do."""
    bench = SignalsBench(dut)
    params = {"obi_touch_th": "0.6", "obi_depth_th": "0.4", "vol_fast_shift": 2,
              "vol_slow_shift": 6, "vol_fast_hi": 4, "vol_slow_hi": 1, "accel_max": 2,
              "depth_window": 4, "depth_drop_th": "0.3", "depth_thin": 500, "leverage": 3,
              "lvi_depth": 100, "lsafe_k": 8, "liquidity_risk": 2, "xv_a": "0.5",
              "xv_b": "0.25", "xv_c": 2, "xv_inv_liq": "0.25"}
    for name, value in params.items():
        bench.model.params[name] = [to_fixed(REGISTERS[name], value)] * VENUES
    bench.model.params["misalign_max"] = to_fixed(REGISTERS["misalign_max"], 50)
    await bench.start()
    books = BookModel(venues=VENUES, levels=16, capacity=32)
    feed = _feed([_lobster_messages(LOBSTER, LOBSTER_ROWS), _tardis_messages(TARDIS)])
    ticks = 0
    for msg in feed:
        venue = books.step(msg)
        tick = msg["kind"] == FeedKind.TICK
        ticks += tick
        for i in range(VENUES):
            out = books.outputs(i)
            bench.books[i] = {f: int(out[f]) for f in BOOK_FIELDS if f != "updated"}
            bench.books[i]["updated"] = int(venue == i)
        await bench.cycle(bench.books, tick)
        if tick and ticks % 4 == 0:
            bench.books = [{**b, "updated": 0} for b in bench.books]
            for _ in range(SIGMA_LAG):
                await bench.cycle(bench.books, False)
    await bench.drain()
    dut._log.info(f"{len(feed)} messages ({ticks} ticks), {bench.checked} cycles checked, "
                  f"{bench.fresh} with sigma fresh on both venues; "
                  f"status bits set: {dict(bench.ones)}")
    assert books.malformed == 0 and ticks > 50 and bench.fresh > ticks
    assert bench.ones["touch_valid"] > len(feed)
