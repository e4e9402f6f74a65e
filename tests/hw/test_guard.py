# amaranth: UnusedElaboratable=no
"""The withdraw guard in the Amaranth simulator: every trigger, the latch, re-arm, warnings.

Every cycle of every test is also checked against ``obcore.sim.guard_model`` (``Bench``).
"""

import random
import sys

import pytest
from amaranth.hdl import Value
from amaranth.sim import Simulator

from obcore.hw.guard import (
    COMMANDS,
    GLOBAL_INPUTS,
    GLOBAL_PARAMS,
    LATENCY,
    MARGIN_LATENCY,
    OUTPUTS,
    REASONS,
    SIZE_ONE,
    STATE,
    VENUE_INPUTS,
    VENUE_OUTPUTS,
    VENUE_PARAMS,
    Guard,
)
from obcore.hw.registers import REGISTERS, build_map, to_fixed
from obcore.hw.signals import STATUS, XV_STATUS, VolRegime
from obcore.sim.guard_model import GuardModel, Stimulus, bit, default_inputs, pack, unpack

VENUES = 2
ALL = (1 << len(REASONS)) - 1


def calm(venues=VENUES):
    """Inputs under which no trigger holds with the reset parameters."""
    inp = default_inputs(venues)
    inp.update(best_bid=[1000] * venues, best_ask=[1001] * venues, book_valid=[1] * venues,
               synced=[1] * venues, exact=[1] * venues, bid_depth=[100] * venues,
               ask_depth=[100] * venues, q_limit=1000)
    return inp


class Bench:
    """Drives the gateware and the model with the same inputs; checks every output."""

    def __init__(self, ctx, dut, venues=VENUES):
        self.ctx, self.dut, self.venues = ctx, dut, venues
        self.model = GuardModel(venues)
        self.inp = calm(venues)
        self.cycles = 0

    def param(self, name, value):
        """Set a parameter (raw; one value for every venue of a per-venue one)."""
        self.model.params[name] = [value] * self.venues if name in VENUE_PARAMS else value

    async def cycle(self, **changes):
        """One cycle with ``changes`` on top of the standing inputs (strobes last one cycle);
        returns the outputs of that cycle after checking them against the model."""
        inp = {**self.inp, **changes, "cycle": self.cycles + (1 << 40)}
        for name in (*COMMANDS, "rate_exceeded"):
            inp.setdefault(name, 0)
        ctx, dut = self.ctx, self.dut
        for name, value in {**inp, **self.model.params}.items():
            if name == "xv_status" and self.venues < 2:
                continue
            ctx.set(Value.cast(getattr(dut, name)), pack(name, value))
        want = self.model.step(inp)
        got = {n: ctx.get(Value.cast(getattr(dut, n))) for n in (*OUTPUTS, *VENUE_OUTPUTS)}
        for name in VENUE_OUTPUTS:
            got[name] = unpack(name, got[name], self.venues)
        assert got == want, f"cycle {self.cycles}: gateware {got} != model {want}"
        await ctx.tick()
        self.cycles += 1
        return got

    async def hold(self, n, **changes):
        return [await self.cycle(**changes) for _ in range(n)][-1]

    async def then(self, **changes):
        """One cycle with ``changes``, then ``LATENCY`` cycles without: the outputs of the
        last, the cycle the guard shows the first one's inputs."""
        out = await self.cycle(**changes)
        for _ in range(LATENCY):
            out = await self.cycle()
        return out

    async def arm(self, **changes):
        """Arm with ``changes``; asserts it was accepted: pull is low ``LATENCY`` + 1 cycles
        later."""
        await self.cycle(arm=1, **changes)
        out = await self.hold(LATENCY + 1, **changes)
        assert not out["pull"] and not state(out, "refused")


def state(out, name):
    return out["pull_state"] >> STATE[name].offset & 1


def run(bench, venues=VENUES):
    dut = Guard(venues)
    sim = Simulator(dut)
    sim.add_clock(1e-8)

    async def testbench(ctx):
        await bench(Bench(ctx, dut, venues))
    sim.add_testbench(testbench)
    sim.run()


def test_ports_follow_the_register_map():
    regs = {r.name: r for r in build_map(venues=VENUES).by_block("guard")}
    dut = Guard(VENUES)
    members = dut.signature.members
    ports = {**{n: n for n in (*GLOBAL_PARAMS, *VENUE_PARAMS, *COMMANDS, "pull_state",
                               "pull_first", "pull_count", "refused_count", "pull_cycle")},
             "pull_reasons_set": "pull_reasons", "pull_venues_set": "pull_venues"}
    assert set(ports.values()) == set(regs)
    for port, name in ports.items():
        reg = regs[name]
        flow = "In" if reg.access in ("rw", "wo") else "Out"
        assert members[port].flow.name == flow, port
        width = 1 if reg.access == "wo" else reg.fmt.width * reg.count
        assert Value.cast(getattr(dut, port)).shape().width == width, port
    assert "xv_status" not in Guard(1).signature.members
    assert {*GLOBAL_INPUTS, *VENUE_INPUTS} <= set(members)


def test_register_docs_list_the_reason_bits():
    text = REGISTERS["pull_reasons"].doc
    assert all(f"{i} {r.name}," in text + "," for i, r in enumerate(REASONS))
    assert REGISTERS["pull_reasons"].reset == REGISTERS["pull_first"].reset == bit("reset")


@pytest.mark.parametrize("bad", [0, 17, "2", 2.0, True])
def test_venues_validated(bad):
    with pytest.raises(ValueError, match="venues must be an integer 1..16"):
        Guard(venues=bad)


def test_reset_starts_disarmed():
    async def bench(b):
        out = await b.cycle()
        assert out["pull"] and state(out, "hold") and not state(out, "active")
        assert out["pull_reasons_set"] == out["pull_first"] == bit("reset")
        assert out["pull_count"] == out["refused_count"] == out["pull_cycle"] == 0
        b.param("auto_arm", 1)
        b.param("cooldown", 0)
        assert (await b.hold(20))["pull"], "reset is a hold: no automatic re-arm"
        await b.arm()
        out = await b.cycle()
        assert not out["pull"] and out["pull_reasons_set"] == 0 and not state(out, "hold")
    run(bench)


def _status(name):
    return [0, 1 << STATUS[name].offset]


def _over(name):
    return [0, to_fixed(REGISTERS[name], REGISTERS[name].reset) + 1]


# reason -> (inputs that raise it on venue 1 (or globally), the reason bits they raise)
TRIGGERS = {
    "rate": ({"rate_exceeded": 1}, ()),
    "inventory": ({"inventory": (-1001) & 0xFFFF_FFFF}, ()),
    "misalign": ({"xv_status": 1 << XV_STATUS["over"].offset}, ()),
    "crossed": ({"best_bid": [1000, 1002]}, ()),
    "spread": ({"best_ask": [1001, 2001]}, ()),
    "depth_bid": ({"bid_depth": [100, 0]}, ()),
    "depth_ask": ({"ask_depth": [100, 0]}, ()),
    "depth_both": ({"bid_depth": [100, 0], "ask_depth": [100, 0]}, ("depth_bid", "depth_ask")),
    "gap": ({"synced": [1, 0]}, ()),
    "capacity": ({"exact": [1, 0]}, ()),
    "vol_fast": ({"sigma2_fast": _over("vol_fast_max")}, ()),
    "vol_slow": ({"sigma2_slow": _over("vol_slow_max")}, ()),
    **{r.name: ({"sig_status": _status(r.status)}, ()) for r in REASONS if r.status},
}
assert set(TRIGGERS) | {"reset", "kill", "heartbeat", "stale", "margin"} == {
    r.name for r in REASONS}


@pytest.mark.parametrize("reason", sorted(TRIGGERS))
def test_trigger(reason):
    """Pull LATENCY cycles after the input, its reason, the latch, refusal while it holds,
    arm after, disable."""
    on, implied = TRIGGERS[reason]
    bits = bit(reason) | sum(bit(r) for r in implied)
    venue = next(r for r in REASONS if r.name == reason).scope == "venue"

    async def bench(b):
        await b.arm()
        await b.hold(2)
        out = await b.then(**on)
        assert out["pull"] and state(out, "active") and out["pull_reasons_set"] == bits
        assert out["pull_venues_set"] == (0b10 if venue else 0)
        out = await b.cycle()                               # cleared: still pulled
        assert out["pull"] and not state(out, "active") and out["pull_reasons_set"] == 0
        assert out["pull_first"] == bits and out["pull_count"] == 1
        assert out["pull_cycle"] == (1 << 40) + 4 + 2 * LATENCY   # the cycle pull rose
        assert (await b.hold(30))["pull"]
        out = await b.cycle(arm=1, **on)                    # refused while it holds
        assert out["pull"]
        out = await b.hold(LATENCY + 1)
        assert out["pull"] and state(out, "refused") and out["refused_count"] == 1
        await b.arm()
        assert not state(await b.cycle(), "refused")
        b.param("pull_enable", ALL & ~bits)                 # disabled: nothing happens
        out = await b.hold(5, **on)
        assert not out["pull"] and out["pull_reasons_set"] == 0 and out["pull_count"] == 1
    run(bench)


def test_crossed_covers_locked_and_ignores_one_sided_books():
    async def bench(b):
        await b.arm()
        out = await b.then(best_bid=[1000, 5000], book_valid=[1, 0])
        assert not out["pull"]
        out = await b.then(best_bid=[1001, 1000])           # locked: bid == ask
        assert out["pull"] and out["pull_reasons_set"] == bit("crossed")
        assert out["pull_venues_set"] == 0b01
    run(bench)


def test_kill_latches_until_arm():
    async def bench(b):
        b.param("auto_arm", 1)
        b.param("cooldown", 0)
        await b.arm()
        out = await b.then(kill=1)
        assert out["pull"] and out["pull_reasons_set"] == bit("kill")
        b.param("pull_enable", 0)                           # kill cannot be disabled
        out = await b.hold(50)
        assert out["pull"] and state(out, "hold") and not state(out, "cooling")
        assert out["pull_reasons_set"] == bit("kill") and out["pull_first"] == bit("kill")
        out = await b.cycle(arm=1, kill=1)                  # a kill in the arm's cycle wins
        assert (await b.hold(LATENCY + 1))["refused_count"] == 1
        await b.arm()
        out = await b.then(kill=1)
        assert out["pull"] and (await b.cycle())["pull_count"] == 2
    run(bench)


def test_heartbeat_deadline():
    timeout = 10

    async def bench(b):
        b.param("heartbeat_timeout", timeout)
        await b.arm(heartbeat=1)
        for _ in range(5):                                  # a write every `timeout` cycles
            out = await b.cycle(heartbeat=1)
            assert not (await b.hold(timeout - 1))["pull"]
        assert not (await b.cycle(heartbeat=1))["pull"]
        for _ in range(timeout + LATENCY):
            assert not (await b.cycle())["pull"]
        out = await b.cycle()               # timeout + 1 (+ LATENCY) after the last write
        assert out["pull"] and out["pull_reasons_set"] == bit("heartbeat")
        await b.cycle(arm=1)
        out = await b.then(heartbeat=1)
        assert out["pull"] and out["refused_count"] == 1
        await b.arm()
    run(bench)


def test_stale_feed_deadline_per_venue():
    timeout = 6

    async def bench(b):
        b.param("stale_timeout", timeout)
        await b.arm(msg=[1, 1])
        for _ in range(timeout + 3):                        # venue 0 talks, venue 1 does not
            out = await b.cycle(msg=[1, 0])
            if out["pull"]:
                break
        assert out["pull_reasons_set"] == bit("stale") and out["pull_venues_set"] == 0b10
        assert b.cycles == 2 + timeout + 1 + 2 * LATENCY    # the arm took LATENCY too
        await b.cycle(msg=[1, 1])
        await b.arm(msg=[1, 1])
        out = await b.hold(timeout, msg=[0, 0])
        assert not out["pull"] and (await b.hold(LATENCY + 1))["pull_venues_set"] == 0b11
    run(bench)


def test_margin_bands_without_a_divider():
    async def bench(b):
        await b.arm()
        b.param("maint_margin", 1000)                       # margin level 10 %: under 20 %
        b.param("equity", 100)
        out = await b.cycle()
        assert not out["pull"], "the margin products are registered"
        out = await b.hold(MARGIN_LATENCY + LATENCY)
        assert out["pull"] and out["pull_reasons_set"] == bit("margin")
        assert state(out, "margin_warn")
        b.param("equity", 410)                              # 41 %: warning band only
        await b.hold(MARGIN_LATENCY + 1)
        await b.arm()
        out = await b.cycle()
        assert not out["pull"] and state(out, "margin_warn")
        assert out["size_scale"] == [SIZE_ONE // 2] * 2 and out["gamma_boost"] == [1, 1]
        b.param("equity", 500)                              # 50 %: not under the band
        out = await b.hold(MARGIN_LATENCY + LATENCY + 1)
        assert not state(out, "margin_warn") and out["size_scale"] == [SIZE_ONE] * 2
        b.param("maint_margin", 0)                          # no position: infinitely safe
        b.param("equity", 0)
        assert not state(await b.hold(2 + LATENCY), "margin_warn")
    run(bench)


def test_auto_rearm_after_cooldown_restarts_on_flicker():
    cooldown = 8

    async def bench(b):
        b.param("auto_arm", 1)
        b.param("cooldown", cooldown)
        await b.arm()
        await b.then(synced=[1, 0])
        outs = [await b.cycle() for _ in range(cooldown + 2)]
        assert [o["pull"] for o in outs] == [1] * (cooldown + 1) + [0]
        assert all(state(o, "cooling") for o in outs[:-1])
        await b.then(synced=[0, 1])
        outs = [await b.cycle() for _ in range(cooldown - 2 - LATENCY)]
        out = await b.then(exact=[0, 1])                    # a flicker restarts the count
        assert out["pull"] and not state(out, "cooling")
        outs = [await b.cycle() for _ in range(cooldown + 2)]
        assert [o["pull"] for o in outs] == [1] * (cooldown + 1) + [0]
        assert outs[-1]["pull_count"] == 2 and outs[-1]["refused_count"] == 0
    run(bench)


def test_warnings_follow_regime_and_margin():
    async def bench(b):
        b.param("crisis_size", SIZE_ONE // 8)
        b.param("trend_size", SIZE_ONE // 2)
        regimes = [VolRegime.CRISIS.value, VolRegime.TREND.value]
        out = await b.then(regime=regimes)
        assert out["size_scale"] == [SIZE_ONE // 8, SIZE_ONE // 2]
        assert out["gamma_boost"] == [3, 0]
        out = await b.then(regime=[VolRegime.RANGE.value, VolRegime.STABLE.value])
        assert out["size_scale"] == [SIZE_ONE] * 2 and out["gamma_boost"] == [1, 0]
        b.param("range_size", 0xFFFF)                       # above 1.0: never enlarges
        b.param("margin_gamma", 5)
        b.param("maint_margin", 100)
        b.param("equity", 30)
        out = await b.hold(MARGIN_LATENCY + LATENCY + 2, regime=[VolRegime.RANGE.value, 0])
        assert out["size_scale"] == [SIZE_ONE // 2] * 2 and out["gamma_boost"] == [5, 5]
    run(bench)


@pytest.mark.parametrize("venues,cycles", [(2, 3000), (1, 1500)])
def test_random_cycles_match_the_model(venues, cycles):
    seed = random.randrange(1 << 31)
    print(f"seed={seed}", file=sys.stderr)
    rng = random.Random(seed)

    async def bench(b):
        stim = Stimulus(rng, venues, start_rate=0.02, end_rate=0.05)
        stim.randomize_params(b.model.params)
        falls, out = 0, {"pull": 1}
        for _ in range(cycles):
            inp = stim.next(b.model.params)
            b.inp = {k: v for k, v in inp.items() if k not in (*COMMANDS, "rate_exceeded")}
            before = out["pull"]
            out = await b.cycle(**{k: inp[k] for k in (*COMMANDS, "rate_exceeded")})
            falls += before and not out["pull"]
        assert min(out["pull_count"], falls) >= 2, f"seed={seed}"   # >= 3 in 300 seeds
    run(bench, venues)
