"""cocotb bench for hw/dsp.py: random and edge operands every cycle; each product must be the
operands' product one cycle later, and 0 after a reset."""

import os

import cocotb
from cocotb.triggers import FallingEdge, ReadOnly
from tb import TB

CYCLES = 4000


def shapes():
    """``[(signed, width), (signed, width)]`` per product, from ``DSP_SHAPES`` (test_dsp.py)."""
    return [tuple((op[0] == "s", int(op[1:])) for op in pair.split("*"))
            for pair in os.environ["DSP_SHAPES"].split(",")]


def edges(signed, width):
    lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if signed else (0, (1 << width) - 1)
    return [lo, hi, 0, 1, lo + 1, hi - 1, -1 if signed else hi]


@cocotb.test()
async def products_are_registered_products(dut):
    tb = TB(dut)
    pairs = shapes()
    dut.rst.value = 0
    await tb.reset()
    want = [0] * len(pairs)
    for n in range(CYCLES):
        await FallingEdge(tb.clk)
        ops = []
        for i, ((sa, wa), (sb, wb)) in enumerate(pairs):
            ea, eb = edges(sa, wa), edges(sb, wb)
            # the first cycles walk every edge pair; then random operands, edges one in four
            if n < len(ea) * len(eb):
                x, y = ea[n % len(ea)], eb[n // len(ea) % len(eb)]
            else:
                x, y = (tb.rng.choice(e) if tb.rng.random() < 0.25 else
                        tb.rng.randint(min(e), max(e)) for e in (ea, eb))
            getattr(dut, f"a{i}").value = x & ((1 << wa) - 1)
            getattr(dut, f"b{i}").value = y & ((1 << wb) - 1)
            ops.append(x * y)
        await ReadOnly()
        for i, ((_, wa), (_, wb)) in enumerate(pairs):
            got = int(getattr(dut, f"p{i}").value)
            assert got == want[i] & ((1 << (wa + wb)) - 1), (n, i, got, want[i])
        want = ops
    # a reset clears the product register, whatever the operands
    await FallingEdge(tb.clk)
    dut.rst.value = 1
    await FallingEdge(tb.clk)
    dut.rst.value = 0
    await ReadOnly()
    for i in range(len(pairs)):
        assert int(getattr(dut, f"p{i}").value) == 0, i
