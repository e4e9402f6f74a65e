"""Arithmetic units of the signals block: square root, imbalance divider, the EWMA step."""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .pipeline import csa, delay
from .registers import REGISTERS

__all__ = ["IMB_FRAC", "IMB_MAX", "IMB_STAGES", "SIGMA2_FRAC", "SHIFT_MAX",
           "SerialSqrt", "ImbalanceDivider", "ewma_step"]

IMB_FRAC = REGISTERS["obi_touch_th"].fmt.frac_bits   # SQ1.15, like the thresholds' UQ1.15
SIGMA2_FRAC = REGISTERS["sigma2_fast"].fmt.frac_bits   # sigma2: UQ34.16 ticks^2
SHIFT_MAX = int(REGISTERS["vol_fast_shift"].limits()[1])   # EWMA shifts: larger ones act as it
assert REGISTERS["vol_slow_shift"].limits()[1] == SHIFT_MAX
IMB_MAX = (1 << IMB_FRAC) - 1  # +-1.0 (a one-sided touch) reads as +-IMB_MAX
# Restoring division in radix 2: one quotient bit per cycle (the integer bit and IMB_FRAC
# fraction bits) from one trial subtraction, then one cycle for the sign. One carry chain
# and a pick in a cycle: the clock target (radix 4, three subtractions side by side and the
# pick, was 11.8 ns routed), not the step count.
IMB_STAGES = IMB_FRAC + 2              # cycles from the divider's inputs to ``q``


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
    to ``IMB_MAX``; 0 when ``den`` is 0, where ``num`` is ``mag`` (unsigned), negated when
    ``neg``. Needs ``mag <= den`` (an imbalance: (Vb - Va) / (Vb + Va)). Pipelined radix-2
    restoring division: a result every cycle, ``IMB_STAGES`` cycles after its inputs. Off
    the hot path: thresholds compare by cross-multiplication.
    """

    def __init__(self, mag_bits, den_bits):
        self._den_bits = den_bits
        super().__init__({"mag": In(unsigned(mag_bits)), "neg": In(1),
                          "den": In(unsigned(den_bits)), "q": Out(signed(IMB_FRAC + 1))})

    def elaborate(self, platform):
        m = Module()
        width = self._den_bits + 1             # 2 x a remainder < den
        acc_bits = IMB_FRAC + 1
        rem, den, neg, zero = self.mag, self.den, self.neg, self.den == 0
        acc = Const(0, acc_bits)
        for bit in range(acc_bits):
            # Bit 0 is the integer bit: |num| <= den, so its trial is |num| itself.
            trial = rem if bit == 0 else (rem << 1)[:width]
            diff = trial - den                  # one carry chain: `fits` is its sign
            fits = ~diff[-1]
            regs = [Signal(width, name=f"rem_{bit}"), Signal(len(den), name=f"den_{bit}"),
                    Signal(name=f"neg_{bit}"), Signal(name=f"zero_{bit}"),
                    Signal(acc_bits, name=f"acc_{bit}")]
            vals = (Mux(fits, diff[:width], trial), den, neg, zero, Cat(fits, acc)[:acc_bits])
            m.d.sync += [r.eq(v) for r, v in zip(regs, vals, strict=True)]
            rem, den, neg, zero, acc = regs
        # The sign in a cycle of its own: a negation is one more carry chain.
        mag = Mux(acc > IMB_MAX, IMB_MAX, acc)
        m.d.sync += self.q.eq(Mux(zero, 0, Mux(neg, -mag, mag)))
        return m


def ewma_step(m, state, en, x, shift, hi, name):
    """One EWMA over two pipeline stages (B and C). When ``en`` (stage C), ``state``
    (unsigned, UQ34.16) takes ``state + ((X - state) >> k)``, X = ``x`` << SIGMA2_FRAC, a floor
    shift, k = ``shift`` clamped to SHIFT_MAX. Returns (comb, stage C) whether the state after
    this edge exceeds ``hi``. ``x`` (the square, registered behind its DSP) is a stage-B
    value; ``shift`` and ``hi`` (raw register bits) are stage-A values, registered here.

    The step is ``state + ~(state >> k) + (X >> k) + ~borrow`` modulo 2^width, borrow = [X
    mod 2^k < state mod 2^k] (the same integer, floor included). Everything but the last
    carry-save level and carry chain depends on the state and k only, and the state cannot
    move between a sample's stage B and its stage C (at most one sample every other cycle:
    signals.py), so stage B computes and registers the two shifts (each shifter with its own
    copy of the selects: one is registered inverted, which yosys does not merge), the borrow
    and the first sum of the threshold compare. The compare is the sign of ``new + ~hi`` (=
    new - hi - 1) two bits wider, ``(state + ~hi) + ~(state >> k) + (X >> k) + ~borrow``; in
    a cycle without a step it is the sign of ``state + ~hi`` from stage-C registers.
    """
    width = len(state)
    wide = width + 2
    ones, zeros = Const(-1, 2), Const(0, 2)
    big_x = x << SIGMA2_FRAC
    clamped = Mux(shift > SHIFT_MAX, SHIFT_MAX, shift)       # larger raw shifts act as it
    sel = delay(m, clamped, f"{name}_shift_s", range(SHIFT_MAX + 1))
    sel_n = delay(m, ~clamped, f"{name}_shift_x", unsigned(len(sel)))
    mask = delay(m, Cat(shift > i for i in range(SHIFT_MAX)), f"{name}_mask")   # 2^k - 1
    hi_b = delay(m, hi, f"{name}_hi_b")
    # Stage B: the shifts, the borrow and state - hi - 1, from the state one cycle early.
    state_n = delay(m, ~(state >> sel)[:width], f"{name}_state_n")
    xk = delay(m, (big_x >> ~sel_n)[:width], f"{name}_xk")
    no_borrow = delay(m, ~((big_x & mask) < (state & mask)), f"{name}_no_borrow")
    base_b = delay(m, (Cat(state, zeros) + Cat(~hi_b, ones))[:wide], f"{name}_base")
    # Stage C: one carry-save level, one carry chain; its free carry bit 0 takes ~borrow.
    terms = Cat(state_n, ones), Cat(xk, zeros)
    s1, c1 = csa(Cat(state, zeros), *terms)
    s2, c2 = csa(base_b, *terms)
    base_c = (Cat(state, zeros) + Cat(~delay(m, hi_b, f"{name}_hi_c"), ones))[:wide]
    with m.If(en):
        m.d.sync += state.eq((s1 + (c1 | no_borrow))[:width])
    return ~Mux(en, (s2 + (c2 | no_borrow))[wide - 1], base_c[-1])
