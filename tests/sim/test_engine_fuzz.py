"""System fuzz of the whole Verilated engine: random feed and register writes, invariants checked.

Batches of random feed traffic on both venues (books walking around a mid, crossed and
locked levels, sequence gaps, snapshots, clears, silences long enough to go stale, TICKs, own
fills, malformed words) with random parameter changes and arm attempts between batches, all
through the controller's own register encoder. A Python checker, independent of the
gateware, asserts on the order stream, the observations and the registers:

- **never a quote out while an enabled trigger holds**: every book-level condition it
  recomputes from the observations (crossed or locked, spread over `spread_max`, depth under
  `depth_min` per side and both, gap, capacity) has begun a pull no later than the book
  latency plus the guard's `LATENCY` after its message; and after any pull (whatever its
  reason) the CANCEL_ALL leaves in the cycle after `pull_cycle` and no NEW or REPLACE leaves
  until the next accepted arm;
- **never a crossed own quote**: per venue, max(our resting bids) < min(our resting asks);
- **no lock-up**: every few batches, with the market calm again, an arm is accepted and all
  four quotes come back.

Seeded (``ENGINE_FUZZ_SEED``) and printed; the default run is 1M feed cycles.
"""

import os
import random
import sys

import numpy as np
import pytest

from obcore.control.registers import Registers
from obcore.hw.book import BBO_LATENCY, STATUS_LATENCY
from obcore.hw.guard import LATENCY as GUARD_LATENCY
from obcore.hw.guard import REASON, REASONS, STATE
from obcore.hw.layouts import FEED_DTYPE, FeedKind, ObsStatus, OrderKind, feed_array
from obcore.hw.ratelimit import PULL_LATENCY
from obcore.sim.engine import open_engine
from obcore.sim.fills import OwnQuotes

VENUES, BATCH, RECOVER_EVERY = 2, 5000, 8
PULLED = 1 << STATE["pulled"].offset
ALL = (1 << len(REASONS)) - 1
# The arm is the bus phase's last write, in the cycle before the batch's first message; its
# strobe reaches the guard in that message's cycle, its latch stage GUARD_LATENCY cycles
# later, which releases the latch one cycle after that.
ARM_RELEASE = GUARD_LATENCY + 1
# Triggers the checker recomputes from the observations: reason -> latency to `pull`.
BOOK_TRIGGERS = {name: book + GUARD_LATENCY for name, book in (
    ("crossed", BBO_LATENCY), ("spread", BBO_LATENCY), ("gap", BBO_LATENCY),
    ("capacity", BBO_LATENCY), ("depth_bid", STATUS_LATENCY), ("depth_ask", STATUS_LATENCY),
    ("depth_both", STATUS_LATENCY))}
# Left out of the recovery's enable mask: conditions that live in signal history (EWMAs,
# windows) and need not clear within the recovery's few messages.
HISTORY = ("vol_fast", "vol_slow", "cliff", "accel", "lvi", "lsafe", "misalign")
CALM_MASK = ALL & ~sum(1 << REASON[n] for n in HISTORY)
LSET, LDEL = FeedKind.LEVEL_SET, FeedKind.LEVEL_DELETE


class Feed:
    """Random feed traffic for two venues: calm books around a fixed mid per venue, with
    rare fault episodes (a level through the mid: crossed or locked; a sequence gap; a
    clear; a silence long enough to go stale; a thin book) that the next snapshot ends."""

    def __init__(self, rng):
        self.rng = rng
        self.mid = [1_000_000, 2_000_000]
        self.seq = [0, 0]
        self.quiet = [0, 0]                     # messages left in a silence of the venue
        self.levels = [[[], []] for _ in range(VENUES)]
        self.q = 0                              # net position the fills add up to

    def _msg(self, kind, venue=0, side=0, price=0, size=0, seq=None):
        """A feed row in FEED field order: kind, venue, side, flags, seq, price, size."""
        if seq is None and kind not in (FeedKind.TICK, FeedKind.FILL):
            seq = self.seq[venue]
            self.seq[venue] += 1
        return (int(kind), venue, side, 0, seq or 0, price, size)

    def _set(self, v, side, offset, size):
        price = self.mid[v] + (offset if side else -offset)
        held = self.levels[v][side]
        if price not in held:
            held.append(price)
        return self._msg(LSET, v, side, price, size)

    def snapshot(self, v, depth=6):
        """A calm two-sided book of ``depth`` levels per side around the venue's mid."""
        out = [self._msg(FeedKind.SNAPSHOT_START, v)]
        self.levels[v] = [[], []]
        out += [self._set(v, side, k, self.rng.randrange(100, 400))
                for side in (0, 1) for k in range(1, depth + 1)]
        return out + [self._msg(FeedKind.SNAPSHOT_END, v)]

    def message(self):
        rng, r = self.rng, self.rng.random      # r() * n: cheaper than randrange, per message
        roll = r()
        if roll < 0.01:
            return [self._msg(FeedKind.TICK)]
        if roll < 0.013:                        # own fills, drifting back to flat
            size = 1 + int(r() * 299)
            side = int(self.q > 0) if r() < 0.7 else int(r() * 2)
            self.q += -size if side else size
            return [self._msg(FeedKind.FILL, int(r() * VENUES), side, self.mid[0], size)]
        if roll < 0.0135:                       # malformed: the ingress drops it whole
            bad = list(self._msg(LSET, 0, 0, self.mid[0], 5, seq=0))
            bad[rng.choice((0, 1, 2, 3))] = rng.choice((0, 9, 200))
            return [tuple(bad)]
        v = int(r() * VENUES)
        if self.quiet[v]:
            self.quiet[v] -= 1
            v = 1 - v
            if self.quiet[v]:
                return [self._msg(FeedKind.TICK)]
        roll = r()
        if roll < 0.0003:                       # fault episodes
            return self._fault(v, rng.randrange(5))
        if roll < 0.0008:
            return self.snapshot(v, rng.randrange(2, 20))
        side = int(r() * 2)
        held = self.levels[v][side]
        if len(held) > 3 and r() < 0.4 + 0.01 * len(held):
            price = held.pop(int(r() * len(held)))
            return [self._msg(LDEL, v, side, price)]
        return [self._set(v, side, 1 + int(r() * 29), 1 + int(r() * 499))]

    def _fault(self, v, fault):
        rng = self.rng
        if fault == 0:
            self.quiet[v] = rng.randrange(1000, 4000)       # beyond a short stale_timeout
            return []
        if fault == 1:
            self.levels[v] = [[], []]
            return [self._msg(FeedKind.CLEAR, v)]
        if fault == 2:                           # the next message has a gap
            self.seq[v] += 1
            return []
        side = rng.randrange(2)
        if fault == 3:                           # through the mid: crossed or locked
            return [self._set(v, side, -rng.randrange(0, 3), rng.randrange(1, 50))]
        out = [self._msg(LDEL, v, side, p) for p in self.levels[v][side][1:]]
        self.levels[v][side] = self.levels[v][side][:1]     # the thinnest of books
        return out


def _random_params(rng):
    """A parameter change, as a controller would make it (real values)."""
    values = {}
    if rng.random() < 0.5:
        values["pull_enable"] = rng.choice((ALL, CALM_MASK, rng.randrange(ALL + 1)))
    for v in range(VENUES):
        values[("spread_max", v)] = rng.choice((8, 20, 60, 1000))
        values[("depth_min", v)] = rng.choice((0, 1, 50, 300, 1000))
        values[("stale_timeout", v)] = rng.choice((800, 3000, 10_000_000))
    values["q_limit"] = rng.choice((50, 300, 2000))
    values["requote_cycles"] = rng.choice((2, 10, 100))
    values["rate_tokens"] = rng.choice((0, "0.5", 4))
    values["rate_depth"] = rng.choice((1, 4, 16))
    values["heartbeat_timeout"] = rng.choice((3000, 100_000_000))
    values["maint_margin"], values["equity"] = rng.choice(((0, 0), (1000, 500), (1000, 100)))
    return values


class Checker:
    """The invariants, on what the engine emits and reports."""

    def __init__(self):
        self.own = OwnQuotes()
        self.counts = dict.fromkeys(("batches", "pulls", "must_pull", "quotes", "armed",
                                     "refused", "recovered", "continued"), 0)

    def crossed_own(self, orders):
        first = self.own.apply(orders)
        assert first is None, (first, self.own.resting)

    @staticmethod
    def first_condition(obs, live):
        """The earliest cycle by which an enabled book trigger must have pulled, or None."""
        enable = live["pull_enable", 0]
        applied = (obs["status"] & ObsStatus.APPLIED) != 0
        valid = (obs["status"] & ObsStatus.VALID) != 0
        bid, ask = obs["best_bid"].astype(np.int64), obs["best_ask"].astype(np.int64)
        venue = obs["venue"].astype(np.int64) % VENUES
        spread_max = np.array([live["spread_max", v] for v in range(VENUES)])[venue]
        depth_min = np.array([live["depth_min", v] for v in range(VENUES)])[venue]
        low_bid = obs["bid_depth"].astype(np.int64) < depth_min
        low_ask = obs["ask_depth"].astype(np.int64) < depth_min
        conds = {"crossed": valid & (bid >= ask), "spread": valid & (ask - bid > spread_max),
                 "gap": (obs["status"] & ObsStatus.SYNCED) == 0,
                 "capacity": (obs["status"] & ObsStatus.EXACT) == 0,
                 "depth_bid": low_bid, "depth_ask": low_ask, "depth_both": low_bid & low_ask}
        due = None
        for name, hit in conds.items():
            hit = hit & applied
            if enable >> REASON[name] & 1 and hit.any():
                at = int(obs["cycle"][np.argmax(hit)]) + BOOK_TRIGGERS[name]
                due = at if due is None else min(due, at)
        return due

    def batch(self, obs, orders, cycles, armed, pulls, pull_cycle, live):
        """One batch (with its drain): ``armed`` whether it started armed, ``pulls`` how many
        pulls began in it, ``pull_cycle`` when the latest began."""
        self.counts["batches"] += 1
        quotes = np.isin(orders["kind"], (OrderKind.NEW, OrderKind.REPLACE))
        self.counts["quotes"] += int(quotes.sum())
        if not armed:
            assert not quotes.any(), f"quotes while pulled: {orders[quotes][:3]}"
            assert pulls == 0, "a pull began while pulled"
            return
        due = self.first_condition(obs, live)
        if pulls == 0:
            assert due is None, f"a book trigger due by cycle {due} did not pull"
            return
        assert pulls == 1, f"{pulls} pulls in a batch with no arm"
        self.counts["pulls"] += 1
        p = pull_cycle
        if due is not None:
            self.counts["must_pull"] += 1
            assert p <= due, f"book trigger due by cycle {due}, pull began in {p}"
        late = cycles >= p + PULL_LATENCY
        assert not (quotes & late).any(), f"quote after the pull: {orders[quotes & late][:3]}"
        if p == int(obs["cycle"][0]) + ARM_RELEASE and not (cycles < p + PULL_LATENCY).any():
            # The arm's release and the trigger in one cycle: `pull` never fell, nothing was
            # quoted since the last CANCEL_ALL, so none is owed (docs/guard.md).
            self.counts["continued"] += 1
            assert not late.any(), orders[late][:3]
            return
        assert late.any() and orders["kind"][late][0] == OrderKind.CANCEL_ALL, orders[late][:3]
        assert cycles[late][0] == p + PULL_LATENCY, (cycles[late][0], p)


class Session:
    """The engine, the controller's register access and the checker.

    Orders are seen only inside ``run`` (bus accesses clock the engine unobserved), so a
    bus phase never lets one out unseen: a batch ends with idle cycles until no order can
    still be due (past the longest re-quote interval), then ``kill`` is the first write
    (its CANCEL_ALL, if it began a pull, is seen in the idle cycles after it), the status
    reads follow after a few idle cycles (pulls cannot begin while killed), and ``arm`` is
    the last write: its
    NEWs come at least 3 cycles into the next batch. A batch is checked in the next bus
    phase, once the status after it is known.
    """

    DRAIN = 16          # runs of RUN_DRAIN idle cycles: > the longest requote_cycles

    def __init__(self, native, rng):
        self.native, self.rng = native, rng
        self.regs = Registers(native, native.regmap)
        self.feed, self.check = Feed(rng), Checker()
        self.live = {}
        self.pending = None

    def run(self, msgs):
        """Feed ``msgs`` and drain; check our quotes never cross; the batch waits for its
        status."""
        obs, orders = self.native.run(np.array(msgs, dtype=FEED_DTYPE))
        parts, cycles = [orders], [self.native.last_order_cycles]
        for _ in range(self.DRAIN):
            parts.append(self.native.run(feed_array([]))[1])
            cycles.append(self.native.last_order_cycles)
        orders = np.concatenate(parts)
        self.check.crossed_own(orders)
        self.pending.update(obs=obs, orders=orders,
                            cycles=np.concatenate(cycles).astype(np.int64))
        return orders

    def status(self):
        regs = self.regs
        return {"count": regs.get_raw("pull_count"), "cycle": regs.get_raw("pull_cycle"),
                "refused": regs.get_raw("refused_count")}

    def bus_phase(self, values, arm=True):
        """Kill, settle the last batch, set ``values``, heartbeat, clear reasons, arm."""
        self.regs.set("kill", 1)
        orders = self.native.run(feed_array([]))[1]     # idle: the kill takes effect
        self.check.crossed_own(orders)
        # The kill began a pull (so its CANCEL_ALL left) unless the engine was pulled.
        killed = bool((orders["kind"] == OrderKind.CANCEL_ALL).any())
        assert not np.isin(orders["kind"], (OrderKind.NEW, OrderKind.REPLACE)).any(), orders
        st = self.status()
        armed = None
        if self.pending is not None and "obs" in self.pending:
            p = self.pending
            armed = p["arm"] and st["refused"] == p["refused"]
            pulls = st["count"] - p["count"] - killed
            self.check.batch(p["obs"], p["orders"], p["cycles"], armed, pulls, st["cycle"],
                             p["live"])
        self.regs.set_many(values)
        self.live.update({k if isinstance(k, tuple) else (k, 0): v for k, v in values.items()})
        self.regs.set("heartbeat", 1)
        self.regs.clear_flags("pull_reasons", ALL)
        if arm:
            self.regs.set("arm", 1)
        self.pending = {"arm": arm, "refused": st["refused"], "count": st["count"],
                        "live": dict(self.live)}
        return armed


def _reasons(regs):
    bits = regs.get_raw("pull_reasons")
    return [r.name for r in REASONS if bits >> REASON[r.name] & 1]


def _fuzz(native, seed, cycles):
    print(f"ENGINE_FUZZ_SEED={seed}  (set it to reproduce this run)", file=sys.stderr)
    rng = random.Random(seed)
    native.reset()
    session = Session(native, rng)
    feed, check = session.feed, session.check
    calm = {"pull_enable": CALM_MASK, "q_limit": (1 << 31) - 1, "requote_cycles": 2,
            "rate_tokens": 4, "rate_depth": 16, "maint_margin": 0,
            "heartbeat_timeout": 100_000_000,
            **{(n, v): x for v in range(VENUES) for n, x in (
                ("spread_max", 1000), ("depth_min", 1), ("stale_timeout", 10_000_000))}}
    done = n = 0
    recovering = False
    while done < cycles:
        if n % RECOVER_EVERY == 0:              # no lock-up: calm market, arm, quotes back
            feed.quiet = [0, 0]
            armed = session.bus_phase(calm, arm=False)
            session.run([m for v in range(VENUES) for m in feed.snapshot(v)]
                        + [feed._msg(FeedKind.TICK)] * 4)
            session.bus_phase({})
            orders = session.run([feed._msg(FeedKind.TICK)] * 40)
            sides = {(int(o["venue"]), int(o["side"])) for o in orders
                     if o["kind"] == OrderKind.NEW}
            recovering = True
        msgs = []
        while len(msgs) < BATCH:
            msgs += feed.message()
        armed = session.bus_phase(_random_params(rng) if rng.random() < 0.5 else {})
        if recovering:
            assert armed, f"batch {n}: arm refused in a calm market: {_reasons(session.regs)}"
            assert len(sides) == 2 * VENUES, f"batch {n}: quotes did not come back: {orders}"
            check.counts["recovered"] += 1
            recovering = False
        elif armed is not None:
            check.counts["armed" if armed else "refused"] += 1
        session.run(msgs)
        done += len(msgs)
        n += 1
    session.bus_phase({}, arm=False)           # settles the last batch
    print(f"seed {seed}: {done} feed cycles, {check.counts}", file=sys.stderr)
    return check.counts


@pytest.fixture(scope="module")
def native():
    engine = open_engine("verilator")
    yield engine
    engine.close()


def test_engine_fuzz(native):
    """1M feed cycles: every invariant on every batch, the checker's coverage asserted."""
    seed = int(os.environ.get("ENGINE_FUZZ_SEED") or random.randrange(1 << 31))
    counts = _fuzz(native, seed, int(os.environ.get("ENGINE_FUZZ_CYCLES", 1_000_000)))
    assert counts["pulls"] >= 20 and counts["must_pull"] >= 10 and counts["quotes"] >= 100
    assert counts["recovered"] >= 20 and counts["armed"] >= 10 and counts["refused"] >= 5


@pytest.mark.slow
def test_engine_fuzz_soak(native):
    """10M feed cycles (make test-slow)."""
    seed = int(os.environ.get("ENGINE_FUZZ_SEED") or random.randrange(1 << 31))
    counts = _fuzz(native, seed, 10_000_000)
    assert counts["pulls"] >= 200 and counts["recovered"] >= 200
