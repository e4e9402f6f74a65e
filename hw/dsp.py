"""One registered DSP product: ``p = a * b`` a cycle later, on ECP5 in the DSP's own register."""

from amaranth.hdl import Cat, ClockSignal, Const, Instance, Module, ResetSignal, Shape, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["DSP_BITS", "P_BITS", "Product"]

DSP_BITS = 18          # one ECP5 MULT18X18D port, signed or unsigned
P_BITS = 36            # its product


class Product(wiring.Component):
    """``p`` = ``a × b`` registered once (reset 0, ``sync`` domain): the product of the
    operands of the cycle before.

    On an ECP5 platform (``platform.family == "ecp5"``) the register is the MULT18X18D's
    output register (``REG_OUTPUT_CLK``), so the multiplier (~4 ns) and the route from the DSP
    to the next stage fall in different cycles; a fabric register after the DSP is placed by
    its consumers, often far from the DSP (docs/boards.md). Elsewhere (simulation, iCE40) it is
    ``m.d.sync += p.eq(a * b)``. Both are one register with the same reset.

    ``a_shape``, ``b_shape``: the operands, each at most 18 bits; when their signedness
    differs the unsigned one must fit a signed port (17 bits), as the DSP sign-extends a
    signed port only.
    """

    def __init__(self, a_shape, b_shape):
        a_shape, b_shape = Shape.cast(a_shape), Shape.cast(b_shape)
        for s in (a_shape, b_shape):
            room = DSP_BITS - (not s.signed and a_shape.signed != b_shape.signed)
            if s.width > room:
                raise ValueError(f"operands must fit a {DSP_BITS}-bit DSP port (an unsigned one "
                                 f"17 bits beside a signed one), not {a_shape!r} × {b_shape!r}")
        self.a_shape, self.b_shape = a_shape, b_shape
        p_shape = Shape(a_shape.width + b_shape.width, a_shape.signed or b_shape.signed)
        super().__init__({"a": In(a_shape), "b": In(b_shape), "p": Out(p_shape)})

    def elaborate(self, platform):
        m = Module()
        if getattr(platform, "family", None) != "ecp5":
            m.d.sync += self.p.eq(self.a * self.b)
            return m
        signed = self.a_shape.signed or self.b_shape.signed
        # Both ports read as signed when either operand is: an unsigned operand is then
        # zero-extended into the signed port, which its width leaves room for (checked above).
        a, b = _port(self.a, signed), _port(self.b, signed)
        p = Signal(P_BITS, name="p36")
        m.submodules.mult = Instance(
            "MULT18X18D",
            p_REG_INPUTA_CLK="NONE", p_REG_INPUTB_CLK="NONE", p_REG_INPUTC_CLK="NONE",
            p_REG_PIPELINE_CLK="NONE", p_REG_OUTPUT_CLK="CLK0", p_REG_OUTPUT_CE="CE0",
            p_REG_OUTPUT_RST="RST0", p_RESETMODE="SYNC", p_GSR="DISABLED",
            p_MULT_BYPASS="DISABLED", p_SOURCEB_MODE="B_SHIFT",
            i_SIGNEDA=int(signed), i_SIGNEDB=int(signed), i_SOURCEA=0, i_SOURCEB=0,
            i_CLK0=ClockSignal("sync"), i_CE0=1, i_RST0=ResetSignal("sync"),
            **{f"i_{name}{i}": 0 for name in ("CLK", "CE", "RST") for i in (1, 2, 3)},
            **{f"i_A{i}": a[i] for i in range(DSP_BITS)},
            **{f"i_B{i}": b[i] for i in range(DSP_BITS)},
            **{f"i_C{i}": 0 for i in range(DSP_BITS)},
            **{f"o_P{i}": p[i] for i in range(P_BITS)})
        m.d.comb += self.p.eq(p[:len(self.p)])
        return m


def _port(value, signed):
    """``value`` extended to a DSP port: by its sign bit if it is signed, else with zeros."""
    pad = DSP_BITS - len(value)
    if value.shape().signed:
        return Cat(value, *([value[-1]] * pad))
    assert not signed or pad >= 1
    return Cat(value, Const(0, pad))
