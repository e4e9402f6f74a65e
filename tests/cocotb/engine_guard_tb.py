"""cocotb bench: every withdraw trigger on the WHOLE engine (hw/top.py), cycle-exact.

For each reason of hw/guard.py's ``REASONS`` (and a variant or two), on a fresh reset: the
parameters go in through the controller's own encoder (``control.registers.Registers``,
recorded and replayed on the bus), both venues get a book by snapshot, the engine is armed
and its four quotes rest. Then the condition is driven the way it arises (feed messages, or
the register writes the controller makes), and the bench asserts

- CANCEL_ALL is on the order stream in exactly the cycle the documented latency gives
  (docs/guard.md "Latency budget": the source's latency to the guard, + ``PULL``),
- the reason bit is latched in ``pull_reasons`` and ``pull_first`` (the trigger under test is
  the only one enabled, so it is the whole word), the venue in ``pull_venues``,
- no order at all leaves while pulled, an ``arm`` while the condition holds is refused and
  counted, and after the condition is cleared an ``arm`` is accepted and quotes come back.

Cycle convention: cycle ``n`` is the clock period the bench drives at its falling edge; a
feed word or bus access driven in cycle ``n`` is taken at the rising edge that ends it, and
an order "in cycle ``n``" was valid (and taken, ``ready`` is 1) in that period.
"""

import cocotb
from engine_tb import ASKS, BIDS, REGS, SIZE, VENUES, EngineBench

from obcore.hw.book import BBO_LATENCY, STATUS_LATENCY
from obcore.hw.csr import COMMIT_LATENCY
from obcore.hw.guard import LATENCY as GUARD_LATENCY
from obcore.hw.guard import MARGIN_LATENCY, REASON, REASONS, STATE
from obcore.hw.layouts import FeedKind, OrderKind
from obcore.hw.quoter import DELAY
from obcore.hw.quoter import LATENCY as QUOTE_LATENCY
from obcore.hw.ratelimit import PULL_LATENCY
from obcore.hw.registers import from_fixed
from obcore.hw.signals import LATENCY as SIG_LATENCY
from obcore.hw.signals import SIGMA_LAG

STROBE_LATENCY = 1       # a wo write in cycle w: its strobe in w + 1
PULL = GUARD_LATENCY + PULL_LATENCY   # a condition at the guard's inputs -> CANCEL_ALL
HOLD = 120               # cycles the condition is held after the pull
PULLED = 1 << STATE["pulled"].offset
ACTIVE = 1 << STATE["active"].offset
REFUSED = 1 << STATE["refused"].offset
ALL = (1 << len(REASONS)) - 1


# ---- the triggers: parameters, the drive, the expected latency, the clearing -------------

def _flat(values):
    """``{name: value}`` with per-venue registers given for venue 0 only (venue 1 keeps its
    reset value)."""
    return {(k if isinstance(k, tuple) else (k, 0)): v for k, v in values.items()}


class Trigger:
    """One case: ``reason`` (the bit), ``params`` set before arming; subclasses give
    ``drive`` (returns the cycle of the triggering event), ``latency`` (the documented
    cycles from it to CANCEL_ALL) and ``clear``."""

    def __init__(self, reason, params=None, venue=True, refuse=True):
        self.reason, self.params = reason, _flat(params or {})
        self.venue, self.refuse = venue, refuse


class Book(Trigger):
    """Conditions from feed messages on venue 0: ``pre`` messages, then the trigger message
    ``last``; ``undo`` messages clear it. ``latency``: from ``last`` to CANCEL_ALL."""

    def __init__(self, reason, latency, last, pre=(), undo=(), **kw):
        super().__init__(reason, **kw)
        self.latency, self.pre, self.last, self.undo = latency, pre, last, undo

    async def drive(self, tb):
        for m in self.pre:
            await tb.msg(*m)
        return await tb.msg(*self.last)

    async def clear(self, tb):
        for m in self.undo:
            if m == "snapshot":
                await tb.snapshot(0)
            else:
                await tb.msg(*m)


class Write(Trigger):
    """Conditions from register writes (as the controller makes them): ``values`` set in
    one commit; ``undo`` restores. ``latency``: from the commit's bus write."""

    def __init__(self, reason, latency, values, undo, pre=(), **kw):
        super().__init__(reason, **kw)
        self.latency, self.values, self.undo, self.pre = latency, _flat(values), _flat(undo), pre

    async def drive(self, tb):
        for m in self.pre:
            await tb.msg(*m)
        await tb.idle(SIGMA_LAG + 4)   # sigma (a serial root) settles after the messages
        return await tb.set_many(self.values)

    async def clear(self, tb):
        await tb.set_many(self.undo)


class Command(Trigger):
    """``kill``: a command strobe; it latches until arm, so no refusal case."""

    latency = STROBE_LATENCY + PULL

    async def drive(self, tb):
        return await tb.command("kill")

    async def clear(self, tb):
        pass


class Deadline(Trigger):
    """``heartbeat`` and ``stale``: the last strobe (a heartbeat write, a venue-0 message)
    in cycle t; the deadline counter restarts the cycle after the strobe reaches the guard
    and the trigger holds once it reaches the timeout."""

    TIMEOUT = 300

    def __init__(self, reason, strobe_latency, **kw):
        name = "heartbeat_timeout" if reason == "heartbeat" else "stale_timeout"
        super().__init__(reason, params={name: self.TIMEOUT}, **kw)
        self.latency = strobe_latency + 1 + self.TIMEOUT + PULL

    async def _strobe(self, tb):
        if self.reason == "heartbeat":
            return await tb.command("heartbeat")
        return await tb.level(0, 0, BIDS[-1], SIZE)       # the same size again: no change

    async def drive(self, tb):
        return await self._strobe(tb)

    async def clear(self, tb):
        await self._strobe(tb)


class Rate(Trigger):
    """The bucket holds exactly the four NEWs; a book change then makes a REPLACE due with
    no token: ``rate_exceeded``, so the CANCEL_ALL goes in the cycle the REPLACE would have.
    The condition ends with the pull (nothing is due while pulled), so an arm is accepted,
    and the NEWs it makes due pull again at once: still no quote leaves."""

    latency = BBO_LATENCY + DELAY["best_ask"] + QUOTE_LATENCY + GUARD_LATENCY

    def __init__(self):
        super().__init__("rate", params={"rate_tokens": 0, "rate_depth": 4,
                                         "requote_cycles": 2}, venue=False, refuse=False)

    async def drive(self, tb):
        return await tb.level(0, 0, 1000, SIZE)          # the ask target moves up a tick

    async def clear(self, tb):
        await tb.set_many({"rate_tokens": 1, "rate_depth": 16})
        for _ in range(8):
            await tb.msg(FeedKind.TICK)


SIGNAL = STATUS_LATENCY + SIG_LATENCY + PULL   # signals see the book at STATUS
LSET, LDEL, TICK, FILL = FeedKind.LEVEL_SET, FeedKind.LEVEL_DELETE, FeedKind.TICK, FeedKind.FILL


def _low(side, prices, size=1):
    return tuple((LSET, 0, side, p, size) for p in prices)


def _back(side, prices):
    return tuple((LSET, 0, side, p, SIZE) for p in prices)


TRIGGERS = {
    "crossed": Book("crossed", BBO_LATENCY + PULL, (LSET, 0, 0, 1002, 50),
                    undo=((LDEL, 0, 0, 1002, 0),)),
    "locked": Book("crossed", BBO_LATENCY + PULL, (LSET, 0, 0, 1001, 50),
                   undo=((LDEL, 0, 0, 1001, 0),)),
    "spread": Book("spread", BBO_LATENCY + PULL, (LDEL, 0, 1, 1001, 0),
                   params={"spread_max": 2}, undo=_back(1, (1001,))),
    "depth_bid": Book("depth_bid", STATUS_LATENCY + PULL, (LSET, 0, 0, 999, 50),
                      params={"depth_min": 700}, undo=_back(0, (999,))),
    "depth_ask": Book("depth_ask", STATUS_LATENCY + PULL, (LSET, 0, 1, 1001, 50),
                      params={"depth_min": 700}, undo=_back(1, (1001,))),
    "depth_both": Book("depth_both", STATUS_LATENCY + PULL, (LSET, 0, 0, 999, 50),
                       pre=((LSET, 0, 1, 1001, 50),), params={"depth_min": 700},
                       undo=_back(0, (999,))),
    "stale": Deadline("stale", STATUS_LATENCY),
    "gap": Book("gap", BBO_LATENCY + PULL, None, undo=("snapshot",)),
    # 9 bid levels in a side of 8: the worst falls off and the side is truncated; deleting
    # the best five leaves 3 < LEVELS known levels: not exact.
    "capacity": Book("capacity", BBO_LATENCY + PULL, (LDEL, 0, 0, 995, 0),
                     pre=(*_back(0, range(995, 990, -1)),
                          *((LDEL, 0, 0, p, 0) for p in BIDS)), undo=("snapshot",)),
    # A TICK samples the depths; both sides then lose over half of theirs.
    "cliff": Book("cliff", SIGNAL, (LSET, 0, 1, ASKS[2], 1),
                  pre=((TICK,), *_low(0, BIDS[:3]), *_low(1, ASKS[:2])),
                  params={"depth_window": 1}, undo=((TICK,),)),
    "obi_touch": Book("obi_touch", SIGNAL, (LSET, 0, 0, 999, 20000), undo=_back(0, (999,))),
    "obi_depth": Book("obi_depth", SIGNAL, (LSET, 0, 0, 997, 20000), undo=_back(0, (997,))),
    # Two TICKs sample spread 2; the spread widens to 4 and the third TICK sees
    # accel = 4 - 2*2 + 2 = 2 > accel_max = 1. The next TICK sees -2.
    "accel": Book("accel", SIGNAL, (TICK,), pre=((TICK,), (TICK,), (LDEL, 0, 1, 1001, 0),
                                                 (LDEL, 0, 0, 999, 0)),
                  params={"accel_max": 1}, undo=((TICK,),)),
    # With shift 0 the EWMA is the last sample: the mid moves 1 tick (a + b by 2), the TICK
    # samples 2^2 = 4 ticks^2 > 1; the next TICK samples 0.
    "vol_fast": Book("vol_fast", SIGNAL, (TICK,), pre=((TICK,), (TICK,), (LDEL, 0, 1, 1001, 0),
                                                       (LSET, 0, 0, 1000, SIZE)),
                     params={"vol_fast_shift": 0, "vol_fast_max": 1}, undo=((TICK,),)),
    "vol_slow": Book("vol_slow", SIGNAL, (TICK,), pre=((TICK,), (TICK,), (LDEL, 0, 1, 1001, 0),
                                                       (LSET, 0, 0, 1000, SIZE)),
                     params={"vol_slow_shift": 0, "vol_slow_max": 1}, undo=((TICK,),)),
    "lvi": Book("lvi", SIGNAL, (LSET, 0, 0, 999, 50), params={"lvi_depth": 700},
                undo=_back(0, (999,))),
    # Leverage over L_safe = min(L_max, K / (sigma risk)): over L_max by a leverage write,
    # and over K / (sigma risk) by a K write once sigma is 2 ticks (sigma2 = 4).
    "lsafe": Write("lsafe", COMMIT_LATENCY + SIG_LATENCY + PULL, {"leverage": 20},
                   {"leverage": 1}),
    "lsafe_k": Write("lsafe", COMMIT_LATENCY + SIG_LATENCY + PULL, {"lsafe_k": 1},
                     {"lsafe_k": 10000}, params={"vol_fast_shift": 0},
                     pre=((TICK,), (TICK,), (LDEL, 0, 1, 1001, 0), (LSET, 0, 0, 1000, SIZE),
                          (TICK,))),
    # Misalign = (S_A - S*_A) - (S_B - S*_B) with S* = 0 (xv coefficients 0): 3 - 2 > 0.5.
    "misalign": Book("misalign", SIGNAL, (LDEL, 0, 1, 1001, 0), params={"misalign_max": "0.5"},
                     undo=_back(1, (1001,)), venue=False),
    "heartbeat": Deadline("heartbeat", STROBE_LATENCY, venue=False),
    # Auto re-arm with no cool-down is on: it never releases a kill.
    "kill": Command("kill", params={"auto_arm": 1, "cooldown": 0}, venue=False, refuse=False),
    "rate": Rate(),
    # q_limit leaves room for both venues' bids (100 lots each); a fill of 300 exceeds it.
    "inventory": Book("inventory", STATUS_LATENCY + 1 + PULL, (FILL, 0, 0, 1000, 300),
                      params={"q_limit": 250}, undo=((FILL, 0, 1, 1000, 300),), venue=False),
    # Margin level 100 / 1000 = 0.1 < margin_pull 0.2; the products are registered.
    "margin": Write("margin", COMMIT_LATENCY + MARGIN_LATENCY + PULL, {"equity": 100},
                    {"equity": 1000}, params={"equity": 1000, "maint_margin": 1000},
                    venue=False),
}
assert {t.reason for t in TRIGGERS.values()} == {r.name for r in REASONS} - {"reset"}


async def _arm(tb, expect):
    """Write arm; check it was accepted (``expect``) or refused and counted. The strobe is
    in the cycle after the write, the guard's latch stage sees it ``GUARD_LATENCY`` later and
    ``pull`` falls in the cycle after that."""
    refused = await tb.read("refused_count")
    await tb.command("arm")
    await tb.idle(STROBE_LATENCY + GUARD_LATENCY)
    state = await tb.read("pull_state")
    assert bool(state & PULLED) != expect, f"arm {'refused' if expect else 'accepted'}: " \
        f"pull_state {state:#x}"
    assert await tb.read("refused_count") == refused + (not expect)
    assert bool(state & REFUSED) == (not expect)
    return state


async def _quoting(tb, since):
    """Wait until all four quotes rest: a NEW per venue and side."""
    want = {(v, s) for v in range(VENUES) for s in (0, 1)}
    for _ in range(100):
        got = {(o["venue"], o["side"]) for _, o in tb.orders_since(since)
               if o["kind"] == OrderKind.NEW}
        if got >= want:
            return
        await tb.step()
    raise AssertionError(f"quotes did not come up: {tb.orders_since(since)}")


@cocotb.test()
@cocotb.parametrize(case=list(TRIGGERS))
async def trigger_pulls_at_the_documented_cycle(dut, case):
    """One trigger end to end: arm, rest quotes, trigger, exact CANCEL_ALL cycle, reason,
    nothing while pulled, arm refused while the condition holds, re-arm after it clears."""
    trig, tb = TRIGGERS[case], EngineBench(dut)
    bit = 1 << REASON[trig.reason]
    await tb.start()
    await tb.set_many({("pull_enable", 0): bit, **trig.params})
    for v in range(VENUES):
        await tb.snapshot(v)
    await tb.msg(TICK)
    await tb.idle(max(DELAY.values()))     # the quoter's pipeline holds the whole book
    await tb.command("heartbeat")
    start = tb.n
    await _arm(tb, True)
    await _quoting(tb, start)
    await tb.clear_flags("pull_reasons", ALL)
    await tb.clear_flags("pull_venues", (1 << VENUES) - 1)
    await tb.idle(4)
    assert not [o for n, o in tb.orders_since(start) if o["kind"] == OrderKind.CANCEL_ALL]

    if case == "gap":         # a sequenced message whose seq skips one
        trig.last = (LSET, 0, 0, BIDS[-1], SIZE, tb.seq[0] + 1)
    at = await trig.drive(tb)
    want = at + trig.latency
    cancel = await tb.wait_order(OrderKind.CANCEL_ALL, at, limit=trig.latency + 50)
    assert cancel == want, (f"{case}: trigger in cycle {at}, CANCEL_ALL in {cancel}, "
                            f"documented {want} (+{trig.latency})")
    if case != "rate":
        await tb.idle(HOLD)
        assert await tb.read("pull_reasons") == bit, "the reason bit, and only it"
        assert await tb.read("pull_first") == bit
        assert await tb.read("pull_venues") == (1 if trig.venue else 0)
        state = await tb.read("pull_state")
        if trig.refuse:
            assert state & PULLED and state & ACTIVE, f"{case}: condition gone: {state:#x}"
            await _arm(tb, False)
        after = tb.orders_since(cancel + 1)
        assert not after, f"{case}: orders while pulled: {after}"
    else:                      # rate: the arm is accepted, and the first NEW due pulls again
        arm = tb.n
        refused = await tb.read("refused_count")
        await tb.command("arm")
        assert await tb.read("refused_count") == refused
        again = await tb.wait_order(OrderKind.CANCEL_ALL, arm)
        quotes = [o for n, o in tb.orders_since(cancel + 1) if o["kind"] != OrderKind.CANCEL_ALL]
        assert not quotes and again, f"rate: quotes with no tokens: {quotes}"
        assert await tb.read("pull_reasons") & bit

    await trig.clear(tb)
    await tb.idle(SIG_LATENCY + 4)
    state = await tb.read("pull_state")
    assert state & PULLED and not state & ACTIVE, f"{case}: latched, clear: {state:#x}"
    assert await tb.read("pull_reasons") & bit, "sticky after the condition cleared"
    assert not tb.orders_since(cancel + 1) or case == "rate"
    if case == "heartbeat":
        await tb.command("heartbeat")
    rearm = tb.n
    await _arm(tb, True)
    await _quoting(tb, rearm)
    n_count = from_fixed(REGS["pull_count"], await tb.read("pull_count"))
    dut._log.info(f"{case}: trigger cycle {at}, CANCEL_ALL {cancel} (+{trig.latency}), "
                  f"pulls {n_count}")
