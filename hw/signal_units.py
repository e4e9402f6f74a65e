"""Arithmetic units of the signals block, off its hot path: square root and imbalance divider."""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .registers import REGISTERS

__all__ = ["IMB_FRAC", "IMB_MAX", "IMB_STAGES", "SerialSqrt", "ImbalanceDivider"]

IMB_FRAC = REGISTERS["obi_touch_th"].fmt.frac_bits   # SQ1.15, like the thresholds' UQ1.15
IMB_MAX = (1 << IMB_FRAC) - 1  # +-1.0 (a one-sided touch) reads as +-IMB_MAX
# Restoring division, one quotient bit per step: the integer bit and IMB_FRAC fraction bits,
# 4 steps a cycle (39-bit compares: short enough for the clock target).
IMB_STAGES = (4, 4, 4, 4)
assert sum(IMB_STAGES) == IMB_FRAC + 1


class SerialSqrt(wiring.Component):
    """``root = floor(sqrt(radicand))``, one bit per cycle, off the hot path.

    ``start`` (ignored while ``busy``) latches ``radicand``; ``busy`` stays high for
    ``width/2`` cycles and ``root`` takes the result as it falls. ``root`` holds otherwise.
    """

    def __init__(self, width):
        if not (isinstance(width, int) and width >= 2 and width % 2 == 0):
            raise ValueError(f"width must be a positive even integer, not {width!r}")
        self._width = width
        super().__init__({"start": In(1), "radicand": In(width), "busy": Out(1),
                          "root": Out(width // 2)})

    def elaborate(self, platform):
        m = Module()
        half = self._width // 2
        rad = Signal(self._width)
        rem = Signal(half + 2)               # remainder < 2 root + 1 <= 2^(half+1)
        acc = Signal(half)                   # root bits found so far
        left = Signal(range(half + 1))
        shifted = Cat(rad[-2:], rem)         # (rem << 2) | next two radicand bits
        trial = Cat(Const(1, 2), acc)        # (acc << 2) | 1
        fits = shifted >= trial
        nxt = Cat(fits, acc)[:half]          # acc < 2^(half-1) until the last step
        with m.If(self.busy):
            m.d.sync += [rad.eq((rad << 2)[:self._width]), acc.eq(nxt), left.eq(left - 1),
                         rem.eq(Mux(fits, shifted - trial, shifted)[:half + 2])]
            with m.If(left == 1):
                m.d.sync += [self.busy.eq(0), self.root.eq(nxt)]
        with m.Elif(self.start):
            m.d.sync += [rad.eq(self.radicand), rem.eq(0), acc.eq(0), left.eq(half),
                         self.busy.eq(1)]
        return m


class ImbalanceDivider(wiring.Component):
    """``q = (num << IMB_FRAC) / den`` in SQ1.15, truncated toward 0, the magnitude limited
    to ``IMB_MAX``; 0 when ``den`` is 0. Needs ``|num| <= den`` (an imbalance: (Vb - Va) /
    (Vb + Va)). Pipelined restoring division: a result every cycle, ``len(IMB_STAGES)``
    cycles after its inputs. Off the hot path: thresholds compare by cross-multiplication.
    """

    def __init__(self, num_bits, den_bits):
        self._den_bits = den_bits
        super().__init__({"num": In(signed(num_bits)), "den": In(unsigned(den_bits)),
                          "q": Out(signed(IMB_FRAC + 1))})

    def elaborate(self, platform):
        m = Module()
        width = self._den_bits + 1            # remainder < den, doubled: < 2^(den_bits+1)
        rem, den = Signal(width, name="rem_in"), self.den
        neg, zero = self.num < 0, self.den == 0
        acc = Const(0, IMB_FRAC + 1)
        m.d.comb += rem.eq(abs(self.num))
        step = 0
        for stage, steps in enumerate(IMB_STAGES):
            for _ in range(steps):
                trial = rem if step == 0 else (rem << 1)[:width]   # the integer bit first
                fits = trial >= den
                rem = Mux(fits, trial - den, trial)[:width]
                acc = Cat(fits, acc)[:IMB_FRAC + 1]
                step += 1
            last = stage == len(IMB_STAGES) - 1
            if last:
                mag = Mux(acc > IMB_MAX, IMB_MAX, acc)
                m.d.sync += self.q.eq(Mux(zero, 0, Mux(neg, -mag, mag)))
            else:
                regs = [Signal(width, name=f"rem_{stage}"), Signal(len(den), name=f"den_{stage}"),
                        Signal(name=f"neg_{stage}"), Signal(name=f"zero_{stage}"),
                        Signal(IMB_FRAC + 1, name=f"acc_{stage}")]
                m.d.sync += [r.eq(v) for r, v in zip(regs, (rem, den, neg, zero, acc),
                                                     strict=True)]
                rem, den, neg, zero, acc = regs
        return m
