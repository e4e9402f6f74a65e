"""cocotb bench for hw/guard.py: random inputs and register writes, checked against the model.

Inputs change at the falling edge; once they settle (``ReadOnly``) the outputs of that cycle
are compared with the model's for the same inputs, and the invariants are asserted on the
gateware's own outputs (the latch stage sees an ``arm`` ``LATENCY`` cycles after its input).
"""

import os

import cocotb
from cocotb.triggers import FallingEdge, ReadOnly
from tb import TB

from obcore.hw.guard import GLOBAL_PARAMS, LATENCY, REASONS, STATE, VENUE_OUTPUTS, VENUE_PARAMS
from obcore.sim.guard_model import GuardModel, Stimulus, bit, pack, unpack

VENUES = 2                    # must match tests/cocotb/test_guard.py
CYCLES = int(os.environ.get("GUARD_CYCLES", "1000000"))
HOLDS = bit("reset") | bit("kill")
ACTIVE = 1 << STATE["active"].offset
# Outputs that only change at a clock edge and rarely; read when the model says they changed
# and every CHECK_EVERY cycles (a divergence is state, so it persists until it is read).
RARE = ("pull_first", "pull_count", "refused_count", "pull_cycle")
CHECK_EVERY = 16


class GuardBench(TB):
    """Drives the stimulus, steps the model, checks outputs and invariants every cycle."""

    def __init__(self, dut):
        super().__init__(dut)
        self.model = GuardModel(VENUES)
        self.stim = Stimulus(self.rng, VENUES)
        self.stim.randomize_params(self.model.params)
        self.stim.inputs["cycle"] = self.rng.randrange(1 << 63)   # the upper words matter
        self.handles = {n: getattr(dut, n) for n in (*self.stim.inputs, *GLOBAL_PARAMS,
                                                     *VENUE_PARAMS)}
        self.out = {n: getattr(dut, n) for n in ("pull", "pull_reasons_set", "pull_state",
                                                 "pull_venues_set", *RARE, *VENUE_OUTPUTS)}
        self.seen = dict.fromkeys(("pulls", "refused", "armed", "auto", "cycles"), 0)
        self.reasons = 0
        self.prev = None
        self.arms = [0] * LATENCY     # arm inputs on their way to the latch stage

    def _drive(self, names, values):
        for name in names:
            self.handles[name].value = pack(name, values[name])

    def _read(self, name):
        return int(self.out[name].value)

    async def cycle(self, n):
        inp = self.stim.next(self.model.params)
        self._drive(self.stim.dirty, inp)
        if self.stim.params_dirty:
            self._drive((*GLOBAL_PARAMS, *VENUE_PARAMS), self.model.params)
        self.stim.dirty, self.stim.params_dirty = set(), False
        want = self.model.step(inp)
        await ReadOnly()
        got = {n: self._read(n) for n in ("pull", "pull_reasons_set", "pull_state")}
        rare = n % CHECK_EVERY == 0 or self.prev is None or any(
            want[k] != self.prev[1][k] for k in RARE)
        names = ("pull_venues_set", *RARE, *VENUE_OUTPUTS) if rare else ("pull_venues_set",)
        got.update((k, self._read(k)) for k in names)
        for k in VENUE_OUTPUTS:
            if k in got:
                got[k] = unpack(k, got[k], VENUES)
        errors = {k: (v, want[k]) for k, v in got.items() if v != want[k]}
        assert not errors, f"cycle {n}: gateware != model (got, want): {errors}"
        self._invariants(n, inp, got)
        self.arms.append(inp["arm"])
        self.prev = (self.arms.pop(0), want)     # the arm the latch stage saw
        await FallingEdge(self.clk)

    def _invariants(self, n, inp, got):
        """The guarantees the guard exists for, on the gateware's own outputs."""
        pull, live, active = got["pull"], got["pull_reasons_set"], got["pull_state"] & ACTIVE
        assert pull or not (live & ~HOLDS or active), f"cycle {n}: a trigger holds, no pull"
        if self.prev is not None:
            arm, before = self.prev
            was_active = before["pull_state"] & ACTIVE
            assert pull or not was_active, f"cycle {n}: re-armed while a trigger held"
            if arm and not was_active:
                assert pull == bool(active), f"cycle {n}: an accepted arm did not re-arm"
                self.seen["armed"] += before["pull"] and not pull
            elif before["pull"] and not pull:
                self.seen["auto"] += 1
        self.reasons |= live
        self.seen["cycles"] += 1


@cocotb.test()
async def random_guard(dut):
    """Random triggers, strobes, arms, kills and register writes, every cycle checked."""
    bench = GuardBench(dut)
    dut._log.info(f"COCOTB_RANDOM_SEED={os.environ.get('COCOTB_RANDOM_SEED')} (this test's "
                  f"seed {cocotb.RANDOM_SEED}), {CYCLES} cycles")
    # No edge between the reset and cycle 0: the guard's ages would count one the model does
    # not see (a heartbeat_timeout of 1 then pulled at cycle 1, COCOTB_RANDOM_SEED=1800789849).
    await bench.reset(at_falling=True)
    for n in range(CYCLES):
        await bench.cycle(n)
    final = bench.model.step(dict(bench.stim.inputs, arm=0, kill=0))
    bench.seen.update(pulls=final["pull_count"], refused=final["refused_count"])
    dut._log.info(f"COCOTB_RANDOM_SEED={os.environ.get('COCOTB_RANDOM_SEED')}: {bench.seen}")
    missing = [r.name for r in REASONS if not bench.reasons & bit(r.name)]
    assert not missing, f"reasons never raised: {missing}"
    assert min(bench.seen[k] for k in ("pulls", "refused", "armed", "auto")) >= CYCLES // 2000
