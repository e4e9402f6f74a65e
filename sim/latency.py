"""Output latencies of the engine's gateware, measured cycle by cycle in the Amaranth simulator.

The benchmark's figure 1 ("feed message accepted → best bid/ask updated; → every signal")
is a measurement, not the documented constants: :func:`measure` feeds the whole
:class:`~obcore.hw.top.Engine` one message at a time, ``GAP`` idle cycles apart, and records
for every watched output the first cycle at which it differs from its value before the
message. Cycle 1 is the clock edge that accepts the message (an output registered on that
edge has latency 1). A message that does not change an output gives no sample for it; an
output no message changed is reported as not exercised.
"""

import random

from amaranth.hdl import Value
from amaranth.sim import Simulator

from ..control import params
from ..control.registers import Registers
from ..hw.layouts import FeedKind, Side, encode_feed
from ..hw.signals import CROSS_OUTPUTS, IMB_OUTPUTS, SIGMA_LAG, VENUE_OUTPUTS
from ..hw.signals import LATENCY as SIG_LATENCY
from ..hw.top import Engine
from .scenarios import generate

__all__ = ["GAP", "BOOK_OUTPUTS", "PROBE_PARAMS", "measure", "random_messages", "scenario_messages"]

# Idle cycles after each message: longer than the slowest output (sigma's serial root).
GAP = SIGMA_LAG + 2 * SIG_LATENCY + 8
BOOK_OUTPUTS = ("best_bid", "best_bid_qty", "best_ask", "best_ask_qty", "bid_depth",
                "ask_depth", "bid_count", "ask_count")
_MID, _HALF = 100_000, 3
# Thresholds the random walk crosses, so the regime and alarm outputs change too.
PROBE_PARAMS = {"vol_fast_hi": 1, "vol_slow_hi": "0.25", "depth_thin": [300, 300],
                "xv_a": [1, 2], "misalign_max": 1}


class _Probed(Engine):
    """The engine, keeping its books and signals blocks so their outputs can be watched."""

    def elaborate(self, platform):
        m = super().elaborate(platform)
        self.probe = {"books": m.submodules.books, "signals": m.submodules.signals}
        return m


class _Feed:
    """Sequence numbers per venue, so every message is accepted and in order."""

    def __init__(self, venues):
        self.seq = [0] * venues

    def __call__(self, kind, venue=0, side=0, price=0, size=0):
        if kind in (FeedKind.TICK, FeedKind.FILL):
            return {"kind": int(kind), "venue": 0 if kind == FeedKind.TICK else venue,
                    "side": int(side), "seq": 0, "price": price, "size": size}
        self.seq[venue] += 1
        return {"kind": int(kind), "venue": venue, "side": int(side),
                "seq": self.seq[venue] - 1, "price": price, "size": size}


def random_messages(seed, count, venues=2):
    """``(warm-up, measured)`` message dicts: a snapshot per venue, then ``count`` random
    level sets and deletes at and near the touch, deletes of the best level and TICKs."""
    rng, feed = random.Random(seed), _Feed(venues)
    books = [{Side.BID: {}, Side.ASK: {}} for _ in range(venues)]
    warm = []
    for v in range(venues):
        warm.append(feed(FeedKind.SNAPSHOT_START, v))
        for i in range(1, 6):
            for side, price in ((Side.BID, _MID - _HALF - i), (Side.ASK, _MID + _HALF + i)):
                books[v][side][price] = 100
                warm.append(feed(FeedKind.LEVEL_SET, v, side, price, 100))
        warm.append(feed(FeedKind.SNAPSHOT_END, v))
    measured = []
    for _ in range(count):
        roll, v = rng.random(), rng.randrange(venues)
        side = rng.choice((Side.BID, Side.ASK))
        levels = books[v][side]
        best = (max if side == Side.BID else min)(levels) if levels else None
        if roll < 0.2:
            measured.append(feed(FeedKind.TICK))
        elif roll < 0.4 and len(levels) > 2:
            del levels[best]
            measured.append(feed(FeedKind.LEVEL_DELETE, v, side, best))
        else:
            # At the touch or up to 2 ticks inside or outside it, never through the other side.
            other = books[v][Side.ASK if side == Side.BID else Side.BID]
            step = rng.randrange(-2, 3)
            if side == Side.BID:
                price = min((best or _MID - _HALF) + step, min(other, default=_MID * 2) - 1)
            else:
                price = max((best or _MID + _HALF) - step, max(other, default=0) + 1)
            levels[price] = rng.randrange(1, 500)
            measured.append(feed(FeedKind.LEVEL_SET, v, side, price, levels[price]))
    return warm, measured


def scenario_messages(name, seed, phase, count):
    """``(warm-up, measured)``: scenario ``name``'s messages up to the first ``count`` of
    ``phase``, which are the measured ones."""
    warm, measured = [], []
    for ph, msg in generate(name, seed):
        if ph == phase:
            measured.append(msg)
            if len(measured) == count:
                break
        elif not measured:
            warm.append(msg)
    if not measured:
        raise ValueError(f"scenario {name!r} has no phase {phase!r}")
    return warm, measured


def _word(msg):
    return encode_feed(msg["kind"], msg["venue"], msg["side"], msg["seq"], msg["price"],
                       msg["size"])


class _Recorder:
    """A bus for ``Registers`` that keeps the words the controller's encoder writes."""

    def __init__(self):
        self.writes = []

    def read(self, addr):
        raise RuntimeError("the latency probe only writes registers")

    def write(self, addr, word):
        self.writes.append((addr, word))


def measure(warm, measured, values=None, venues=2, levels=16, gap=GAP):
    """``{output: [latency per message that changed it]}`` for the book outputs
    (``book.<name>``) and the signals (``signals.<name>``), venue by venue, with the
    parameters ``values`` (``{register: value}``, as a parameter file) written first."""
    dut = _Probed(venues=venues, levels=levels)
    bus = _Recorder()
    if values:
        params.apply(Registers(bus, dut.regmap), values)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    samples = {}

    def at(port, v):
        return port if venues == 1 else port[v]

    async def bench(ctx):
        books, signals = dut.probe["books"], dut.probe["signals"]
        watched = {}
        for v in range(venues):
            for name in BOOK_OUTPUTS:
                watched[f"book.{name}", v] = Value.cast(getattr(books.venue[v], name))
            for name in VENUE_OUTPUTS:
                watched[f"signals.{name}", v] = Value.cast(at(getattr(signals, name), v))
        for name in IMB_OUTPUTS:      # the message's venue's
            watched[f"signals.{name}", 0] = Value.cast(getattr(signals, name))
        if venues >= 2:
            for name in CROSS_OUTPUTS:
                watched[f"signals.{name}", 0] = Value.cast(getattr(signals, name))
        samples.update((name, []) for name, _ in watched)
        ctx.set(dut.orders.ready, 1)
        for addr, word in bus.writes:
            ctx.set(dut.bus.addr, addr)
            ctx.set(dut.bus.w_data, word)
            ctx.set(dut.bus.w_en, 1)
            await ctx.tick()
        ctx.set(dut.bus.w_en, 0)
        for msg in warm:
            ctx.set(dut.feed.payload.as_value(), _word(msg))
            ctx.set(dut.feed.valid, 1)
            await ctx.tick()
        ctx.set(dut.feed.valid, 0)
        await ctx.tick().repeat(gap)
        for msg in measured:
            before = {key: ctx.get(sig) for key, sig in watched.items()}
            ctx.set(dut.feed.payload.as_value(), _word(msg))
            ctx.set(dut.feed.valid, 1)
            await ctx.tick()
            ctx.set(dut.feed.valid, 0)
            pending = set(watched)
            for n in range(1, gap + 1):
                for key in [k for k in pending if ctx.get(watched[k]) != before[k]]:
                    samples[key[0]].append(n)
                    pending.discard(key)
                await ctx.tick()

    sim.add_testbench(bench)
    sim.run()
    return samples
