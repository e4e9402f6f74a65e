"""Market signals from the book outputs: spread, imbalance, volatility, depth drop, leverage."""

import functools
import operator

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, enum, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .layouts import FEED
from .pipeline import csa, delay, magnitude, partial_sum, partials, truncated, weighted
from .registers import REGISTERS, build_map, to_fixed
from .signal_units import (
    IMB_FRAC,
    IMB_MAX,
    IMB_STAGES,
    SHIFT_MAX,
    SIGMA2_FRAC,
    ImbalanceDivider,
    SerialSqrt,
    ewma_step,
)

__all__ = ["BOOK_VIEW", "BBO_LEAD", "EARLY_FIELDS", "STATUS", "REGIME", "FLAGS", "XV_STATUS",
           "VolRegime", "LiqRegime",
           "VENUE_PARAMS", "VENUE_OUTPUTS", "CROSS_PARAMS", "CROSS_OUTPUTS", "LATENCY",
           "CLAMP_MAX", "SIGMA2_FRAC", "VOL_STAGES", "SHIFT_MAX", "SIGMA_LAG", "WINDOW_MAX",
           "WINDOW_RESET",
           "DEPTH_BITS", "IMB_FRAC", "IMB_MAX", "IMB_LATENCY", "IMB_OUTPUTS", "VENUE_BITS",
           "imb_operands", "VenueSignals", "Signals", "port_layout"]

LATENCY = 3                   # cycles from the book's depths to every registered output
# The BBO fields of BOOK_VIEW and `tick` arrive this many cycles before the depths and
# `updated` (as hw/book.py shows them): the mid change and its square are registered before
# stage A ends, so the EWMAs' shifts at stage B start from a register (docs/signals.md).
BBO_LEAD = 1
EARLY_FIELDS = ("best_bid", "best_ask", "best_bid_qty", "best_ask_qty", "valid")
# A tick's sample reaches sigma2 (the EWMA state, its own output register) this many cycles
# after the depths show its book: the EWMA shifts, the EWMA step. The root waits for it.
VOL_STAGES = LATENCY
PRICE_BITS = FEED.offsets()["price"][1]
QTY_BITS = FEED.offsets()["size"][1]
VENUE_BITS = FEED.offsets()["venue"][1]
DEPTH_BITS = 36               # 16 levels of sizes < 2^31 sum below 2^35; one bit to spare
CLAMP_BITS = 18               # a DSP operand: the vol delta and the microprice spread fit it
CLAMP_MAX = (1 << (CLAMP_BITS - 1)) - 1
SIGMA_BITS = REGISTERS["sigma"].fmt.width
# sigma lags sigma2: one root takes SIGMA_BITS cycles and a tick during it queues one more,
# so sigma is fresh at most this many cycles after the last tick.
SIGMA_LAG = 2 * SIGMA_BITS + 1
FRAC_BITS = REGISTERS["obi_touch_th"].fmt.frac_bits          # fractions theta and delta: UQ1.15
assert FRAC_BITS == REGISTERS["obi_depth_th"].fmt.frac_bits == REGISTERS[
    "depth_drop_th"].fmt.frac_bits
IMB_LATENCY = 1 + IMB_STAGES   # book inputs -> obi_touch_q / obi_depth_q, cycles
IMB_OUTPUTS = ("obi_touch_q", "obi_depth_q")
WINDOW_MAX = int(REGISTERS["depth_window"].limits()[1])
# The depth window the history read uses after reset: the register's reset value, clamped.
WINDOW_RESET = min(max(to_fixed(REGISTERS["depth_window"], REGISTERS["depth_window"].reset), 1),
                   WINDOW_MAX)
assert WINDOW_MAX & (WINDOW_MAX - 1) == 0, "the depth history wraps as a power of two"
# VenueSignals' port with each imbalance's operands, and their magnitude's bits (the
# denominator has one more): from Vb, Va and from Db, Da.
_IMB_OPERANDS = {"obi_touch_q": ("obi_touch_ops", QTY_BITS),
                 "obi_depth_q": ("obi_depth_ops", DEPTH_BITS)}


def imb_operands(name):
    """The layout of one venue's operands of imbalance ``name`` (an ``IMB_OUTPUTS`` member):
    ``mag`` = |num|, ``neg`` = num < 0, ``den`` >= ``mag`` (lots)."""
    bits = _IMB_OPERANDS[name][1]
    return data.StructLayout({"mag": bits, "neg": 1, "den": bits + 1})


def _frac(*names):
    return sum(REGISTERS[n].fmt.frac_bits for n in names)


# Binary points: each product is aligned to the format it is compared with or added to.
LEV_FRAC = _frac("leverage")
LSAFE_SHIFT = _frac("leverage", "liquidity_risk", "sigma") - _frac("lsafe_k")
STAR_SHIFTS = tuple(_frac(*pair) - _frac("spread_star") for pair in (
    ("xv_a", "sigma"), ("xv_b", "leverage"), ("xv_c", "xv_inv_liq")))
STAR_FRAC = _frac("spread_star")
# The EARLY_FIELDS (the BBO and `valid`) come BBO_LEAD cycles before the depths and
# `updated` of the same book.
BOOK_VIEW = wiring.Signature({
    "best_bid": Out(PRICE_BITS), "best_ask": Out(PRICE_BITS),        # ticks, 0 = side empty
    "best_bid_qty": Out(QTY_BITS), "best_ask_qty": Out(QTY_BITS),    # lots < 2^31
    "bid_depth": Out(DEPTH_BITS), "ask_depth": Out(DEPTH_BITS),      # top-N lots
    "valid": Out(1),      # both sides non-empty
    "updated": Out(1),    # strobe: the outputs above changed this cycle
})


class VolRegime(enum.Enum, shape=2):
    """domain.md section 4, from (intraday = fast, day-to-day = slow) vol vs thresholds."""
    STABLE = 0
    RANGE = 1     # fast high, slow low
    TREND = 2     # fast low, slow high
    CRISIS = 3


class LiqRegime(enum.Enum, shape=2):
    """domain.md section 4: intraday vol x book thickness."""
    NORMAL = 0
    WAIT = 1          # high vol, thick book: wait and see
    NO_EXPAND = 2     # low vol, thin book: no expansion of leverage
    WITHDRAW = 3      # high vol, thin book: minimum exposure


REGIME = data.StructLayout({"vol": VolRegime, "liq": LiqRegime})
FLAGS = data.StructLayout({"vol": 1, "micro": 1})          # sig_flags: what saturated
XV_STATUS = data.StructLayout({"valid": 1, "over": 1})
STATUS = data.StructLayout(dict.fromkeys((           # sig_status, bit 0 first
    "updated", "touch_valid", "obi_touch_valid", "obi_touch_over", "obi_touch_bid",
    "obi_depth_valid", "obi_depth_over", "obi_depth_bid", "vol_valid", "sigma_fresh",
    "vol_fast_hi", "vol_slow_hi", "accel_valid", "accel_over", "drop_valid", "bid_drop",
    "ask_drop", "cliff", "thin", "lvi_over", "lmax_over", "lsafe_over", "sat_vol",
    "sat_micro"), 1))
assert STATUS.size == REGISTERS["sig_status"].fmt.width
assert REGIME.size == REGISTERS["regime"].fmt.width and FLAGS.size == REGISTERS[
    "sig_flags"].fmt.width and XV_STATUS.size == REGISTERS["xv_status"].fmt.width

# Ports named after their registers (block "signals"); the top makes per-venue ones arrays.
VENUE_PARAMS = ("obi_touch_th", "obi_depth_th", "vol_fast_shift", "vol_slow_shift",
                "vol_fast_hi", "vol_slow_hi", "accel_max", "depth_window", "depth_drop_th",
                "depth_thin", "leverage", "leverage_max", "lvi_depth", "lsafe_k",
                "liquidity_risk", "xv_a", "xv_b", "xv_c", "xv_inv_liq")
VENUE_OUTPUTS = ("spread", "mid2", "micro_num", "micro_den", "sigma2_fast", "sigma2_slow",
                 "sigma", "accel", "spread_star", "regime", "sig_status")
CROSS_PARAMS = ("misalign_max",)
CROSS_OUTPUTS = ("misalign", "xv_status")
_LAYOUTS = {"regime": REGIME, "sig_status": STATUS, "sig_flags": FLAGS, "xv_status": XV_STATUS}
DEV_SHAPE = signed(REGISTERS["misalign"].fmt.width - 1)    # S - S*, SQ34.8


def _shape(name):
    """The port shape of register ``name``: its struct layout, else its raw fixed-point bits."""
    if name in _LAYOUTS:
        return _LAYOUTS[name]
    fmt = REGISTERS[name].fmt
    return signed(fmt.width) if fmt.signed else unsigned(fmt.width)


def _beyond(x):
    """``|x| > CLAMP_MAX`` for a signed ``x`` straight from a register: the bits from
    CLAMP_BITS - 1 up are not all copies of the sign, or ``x`` is -2^(CLAMP_BITS - 1). A test
    on the bits, in the cycle after the sum's carry chain (behind the chain in its own cycle:
    14.1 ns routed; as the signs of two more sums beside it, with the clamp's Mux, 12.0)."""
    top = x[CLAMP_BITS - 1:]
    return ~(top.all() | ~top.any()) | (top.all() & ~x[:CLAMP_BITS - 1].any())


def _exceeds(big, small):
    """``sum(big) > sum(small)`` as the sign of ``sum(small) + sum(~big) + len(big)`` (=
    ``sum(small) - sum(big)``, two's complement wide enough): carry-save levels down to two
    operands, then one carry chain. Not a sum and then a compare behind it, nor Python's
    ``sum`` (yosys chains one adder per operand: two chains in series, 12.35 ns routed)."""
    terms = [Value.cast(v) for v in (*big, *small)]
    width = max(len(v) for v in terms) + len(terms).bit_length() + 1

    def wide(v):
        return Cat(v, (v[-1] if v.shape().signed else Const(0, 1)).replicate(width - len(v)))
    ops = [wide(v) for v in small] + [~wide(v) for v in big] + [Const(len(big), width)]
    while len(ops) > 2:
        ops = [*ops[3:], *csa(*ops[:3])]
    return (ops[0] + ops[1])[width - 1]


class VenueSignals(wiring.Component):
    """One venue's signals; every output is registered, ``LATENCY`` cycles after its inputs.

    Inputs: ``book`` (:data:`BOOK_VIEW`), the global ``tick`` strobe (a feed TICK: one time
    sample; with the BBO, ``BBO_LEAD`` cycles before the depths of the book it samples), and
    the parameters named after their registers (raw register bits). Outputs
    as the registers of the same names, plus ``dev`` = S - Spread* (SQ34.8, 0 unless
    ``dev_valid``) two cycles after the inputs, for the cross-venue stage, and the operands of
    the imbalances, ``obi_touch_ops`` / ``obi_depth_ops``, one cycle after them. The exact
    arithmetic is ``obcore.sim.signals_model``; docs/signals.md explains it.
    """

    book: In(BOOK_VIEW)
    tick: In(1)
    obi_touch_th: In(_shape("obi_touch_th"))
    obi_depth_th: In(_shape("obi_depth_th"))
    vol_fast_shift: In(_shape("vol_fast_shift"))
    vol_slow_shift: In(_shape("vol_slow_shift"))
    vol_fast_hi: In(_shape("vol_fast_hi"))
    vol_slow_hi: In(_shape("vol_slow_hi"))
    accel_max: In(_shape("accel_max"))
    depth_window: In(_shape("depth_window"))
    depth_drop_th: In(_shape("depth_drop_th"))
    depth_thin: In(_shape("depth_thin"))
    leverage: In(_shape("leverage"))
    leverage_max: In(_shape("leverage_max"))
    lvi_depth: In(_shape("lvi_depth"))
    lsafe_k: In(_shape("lsafe_k"))
    liquidity_risk: In(_shape("liquidity_risk"))
    xv_a: In(_shape("xv_a"))
    xv_b: In(_shape("xv_b"))
    xv_c: In(_shape("xv_c"))
    xv_inv_liq: In(_shape("xv_inv_liq"))
    spread: Out(_shape("spread"))
    mid2: Out(_shape("mid2"))
    micro_num: Out(_shape("micro_num"))
    micro_den: Out(_shape("micro_den"))
    sigma2_fast: Out(_shape("sigma2_fast"))
    sigma2_slow: Out(_shape("sigma2_slow"))
    sigma: Out(_shape("sigma"))
    accel: Out(_shape("accel"))
    spread_star: Out(_shape("spread_star"))
    regime: Out(REGIME)
    sig_status: Out(STATUS)
    sig_flags_set: Out(FLAGS)
    dev: Out(DEV_SHAPE)
    dev_valid: Out(1)
    obi_touch_ops: Out(imb_operands("obi_touch_q"))
    obi_depth_ops: Out(imb_operands("obi_depth_q"))

    def elaborate(self, platform):
        m = Module()
        bk, p, st = self.book, self, self.sig_status
        # Stage E, the cycle before stage A: only the volatility sample uses the early BBO
        # and tick; everything else takes them delayed to the depths' cycle.
        tick_e, ok_e, ask_e, bid_e = self.tick, bk.valid, bk.best_ask, bk.best_bid
        tick, ok, ask, bid, va, vb = (delay(m, v, f"{n}_in", n=BBO_LEAD) for v, n in (
            (tick_e, "tick"), (ok_e, "ok"), (ask_e, "ask"), (bid_e, "bid"),
            (bk.best_ask_qty, "va"), (bk.best_bid_qty, "vb")))
        da, db = bk.ask_depth, bk.bid_depth

        # Stage E: the spread and the mid (to stage A's registers), and the mid change.
        # Stage A: differences of the inputs, the clamps; parameter-only products.
        spread = delay(m, ask_e - bid_e, "spread", signed(PRICE_BITS + 1))
        mid2 = Signal(PRICE_BITS + 1, name="mid2_e")
        m.d.comb += mid2.eq(ask_e + bid_e)
        ok_a, tick_a = delay(m, ok, "ok_a"), delay(m, tick, "tick_a")
        spread_a, mid2_a = delay(m, spread, "spread_a"), delay(m, mid2, "mid2_a", n=2)
        upd = delay(m, bk.updated, "upd", n=LATENCY - 1)

        # Volatility sample: tick with a two-sided book, not in the cycle after a sample (at
        # most one every other cycle: ewma_step computes a sample's shifts at stage B, so the
        # EWMA state must not move before its stage C). x = (delta mid2)^2 with delta clamped
        # to one DSP operand; the first sample after reset only sets `prev`. From the early
        # BBO: stage E registers the mid change, stage A squares its low bits (the DSP alone
        # in its cycle) and tests the clamp on its bits, stage B takes CLAMP_MAX^2 for a
        # clamped one and shifts it, stage C steps the EWMAs.
        prev, have_prev, sample_e = Signal(PRICE_BITS + 1), Signal(), Signal(name="sample_e")
        delta = Signal(signed(PRICE_BITS + 2), name="delta")
        # a + b - prev = a + b + ~prev + 1, a written-out carry-save level and one chain: yosys
        # otherwise reuses `a + b` (mid2) and subtracts after it (two chains: 14.8 ns routed).
        csa_sum, csa_carry = csa(*(Cat(v, Const(fill, len(delta) + 1 - len(v)))
                                   for v, fill in ((ask_e, 0), (bid_e, 0), (~prev, -1))))
        m.d.comb += delta.eq(csa_sum + (csa_carry | 1))
        sample = tick_e & ok_e & have_prev & ~sample_e
        with m.If(tick_e & ok_e & ~sample_e):
            m.d.sync += [prev.eq(mid2), have_prev.eq(1)]
        delta_e = delay(m, delta, "delta_e")
        m.d.sync += sample_e.eq(sample)
        delta_sat = _beyond(delta_e)
        sat_vol = delay(m, sample_e & delta_sat, "sat_vol", n=LATENCY - 1)
        low = delta_e[:CLAMP_BITS].as_signed()                              # exact unless clamped
        square_a = partial_sum(m, low, low, "square_a")[:2 * CLAMP_BITS - 2]  # <= CLAMP_MAX^2
        x_b = Mux(delay(m, delta_sat, "delta_sat_a"), CLAMP_MAX * CLAMP_MAX, square_a)
        sample_a = delay(m, sample_e, "sample_a")

        # The microprice's clamped spread (0 unless ok) and Vb + Va: stage A registers them,
        # from the spread and Vb + Va registered at stage E, so the registers at the DSPs'
        # inputs have no logic before them (a Mux between register and DSP, the DSP in the
        # same cycle: 11.44 ns routed).
        micro_sat = _beyond(spread)
        micro_s_a = delay(m, Mux(ok, Mux(micro_sat, Mux(spread[-1], -CLAMP_MAX, CLAMP_MAX),
                                         spread[:CLAMP_BITS].as_signed()), 0),
                          "micro_s_a", signed(CLAMP_BITS))
        vb_a = delay(m, vb, "vb_a")
        sat_micro = delay(m, ok & micro_sat, "sat_micro", n=LATENCY - 1)
        tmag_a, tneg_a, tbid_a = magnitude(m, vb, va, "t_a_")
        tsum_a = delay(m, bk.best_bid_qty + bk.best_ask_qty, "tsum", unsigned(QTY_BITS + 1),
                       n=BBO_LEAD + 1)
        dmag_a, dneg_a, dbid_a = magnitude(m, db, da, "d_a_")
        dsum_a = delay(m, db + da, "dsum_a", unsigned(DEPTH_BITS + 1))
        dmin_a = delay(m, Mux(db < da, db, da), "dmin_a", unsigned(DEPTH_BITS))
        # The imbalances' operands: Signals divides the ones of the venue telemetry shows.
        for port, mag, neg, total in ((self.obi_touch_ops, tmag_a, tneg_a, tsum_a),
                                      (self.obi_depth_ops, dmag_a, dneg_a, dsum_a)):
            m.d.comb += [port.mag.eq(mag), port.neg.eq(neg), port.den.eq(total)]

        # Depth history: one (Db, Da) sample per tick. `then` is the sample W ticks back,
        # counting this cycle's tick (W = 1 compares with the depth being sampled now).
        hist = Memory(shape=data.StructLayout({"bid": DEPTH_BITS, "ask": DEPTH_BITS}),
                      depth=WINDOW_MAX, init=[])
        m.submodules.hist = hist
        wr, rd = hist.write_port(), hist.read_port(domain="comb")
        wptr, count = Signal(range(WINDOW_MAX)), Signal(range(WINDOW_MAX + 1))
        # W is the register clamped to 1..WINDOW_MAX and registered: it takes effect a cycle
        # after the other parameters (the model does the same). The read address is a register
        # too, wptr + tick - W modulo the history (wptr + tick from the early tick): with the
        # parameter's clamp and subtraction in front of the memory the path was 13.5 ns routed.
        w = p.depth_window
        win = Signal(range(WINDOW_MAX + 1), init=WINDOW_RESET, name="hist_win")
        clamped = Mux(w == 0, 1, Mux(w > WINDOW_MAX, WINDOW_MAX, w))
        rd_addr = Signal.like(wptr, init=-WINDOW_RESET % WINDOW_MAX, name="hist_rd_addr")
        m.d.sync += [win.eq(clamped), rd_addr.eq((wptr + tick + tick_e - clamped)[:len(wptr)])]
        filled = Mux((count == WINDOW_MAX) | ~tick, count, count + 1)
        m.d.comb += [wr.addr.eq(wptr), wr.data.bid.eq(db), wr.data.ask.eq(da), wr.en.eq(tick),
                     rd.addr.eq(rd_addr)]
        with m.If(tick):
            m.d.sync += [wptr.eq((wptr + 1)[:len(wptr)]), count.eq(filled)]
        bypass = tick & (win == 1)
        then_b = delay(m, Mux(bypass, db, rd.data.bid), "then_b_a")
        then_a = delay(m, Mux(bypass, da, rd.data.ask), "then_a_a")
        now_b, now_a = delay(m, db, "now_b_a"), delay(m, da, "now_a_a")
        drop_valid_a = delay(m, filled >= win, "drop_valid_a")

        # Leverage: L*risk and L*lvi_depth depend on parameters only.
        risk_a = delay(m, p.leverage * p.liquidity_risk, "risk_a")             # UQ16.16
        lvi_prod_a = partials(m, p.leverage, p.lvi_depth, "lvi_prod_a_p")      # UQ40.8
        lmax_over = delay(m, p.leverage > p.leverage_max, "lmax_over", n=LATENCY - 1)

        # sigma = isqrt(max(sigma2)) runs once the tick samples in flight have landed and
        # sigma2 has held for a cycle: the larger one is picked by a registered compare (the
        # compare and the 50-bit pick in one cycle were 11.8 ns routed).
        sf, ss = Signal(_shape("sigma2_fast")), Signal(_shape("sigma2_slow"))
        m.submodules.sqrt = sqrt = SerialSqrt(2 * SIGMA_BITS)
        dirty = Signal()
        in_flight = [tick]                   # the ticks whose samples are not in sigma2 yet
        for i in range(1, VOL_STAGES + 1):
            in_flight.append(delay(m, in_flight[-1], f"tick_in{i}"))
        start = dirty & ~sqrt.busy & ~Cat(*in_flight).any()
        fast_larger = delay(m, sf > ss, "fast_larger")
        m.d.comb += [sqrt.start.eq(start), sqrt.radicand.eq(Mux(fast_larger, sf, ss))]
        with m.If(tick):
            m.d.sync += dirty.eq(1)
        with m.Elif(start):
            m.d.sync += dirty.eq(0)
        sigma_a = delay(m, sqrt.root, "sigma_a")
        fresh = delay(m, ~sqrt.busy & ~dirty & ~tick, "fresh", n=LATENCY - 1)
        # Spread* = a sigma + b L + c/Lambda, each product truncated to STAR_FRAC bits, from
        # registered partial products (UQ25.16, UQ24.16, UQ17.23): every slice offset but 0
        # is at least the truncation, so floor(product >> shift) is the sum of the partial
        # products shifted, the lowest one truncated. Stage B adds them all in one sum.
        star_terms = []
        for i, (x, y) in enumerate(((p.xv_a, sqrt.root), (p.xv_b, p.leverage),
                                    (p.xv_c, p.xv_inv_liq))):
            star_terms += truncated(partials(m, x, y, f"star{i}_a"), STAR_SHIFTS[i])
        # Stage B: products with data, acceleration.
        # Stages B, C: the EWMAs (hw/signal_units.py ewma_step) and their threshold compares.
        sample_b = delay(m, sample_a, "sample_b")
        vol_valid = Signal()
        above = {name: ewma_step(m, state, sample_b, x_b, shift, hi, name)
                 for state, shift, hi, name in ((sf, p.vol_fast_shift, p.vol_fast_hi, "fast"),
                                                (ss, p.vol_slow_shift, p.vol_slow_hi, "slow"))}
        with m.If(sample_a):
            m.d.sync += vol_valid.eq(1)

        s1, s2 = Signal.like(spread_a), Signal.like(spread_a)   # the two previous samples
        seen = Signal(range(3))                                 # consecutive, saturating
        accel, accel_valid = Signal(signed(PRICE_BITS + 3)), Signal()
        with m.If(tick_a & ok_a):
            m.d.sync += [s1.eq(spread_a), s2.eq(s1), seen.eq(Mux(seen == 2, 2, seen + 1)),
                         accel_valid.eq(seen == 2),
                         accel.eq(Mux(seen == 2, (spread_a - (s1 << 1) + s2)    # |.| < 2^34
                                      [:len(accel)].as_signed(), 0))]
        with m.Elif(tick_a):
            m.d.sync += [seen.eq(0), accel_valid.eq(0), accel.eq(0)]

        th_t, th_d = delay(m, p.obi_touch_th, "th_t_a"), delay(m, p.obi_depth_th, "th_d_a")
        drop_th, thin_th = delay(m, p.depth_drop_th, "drop_th_a"), delay(m, p.depth_thin, "thin_a")
        tmag_b = delay(m, tmag_a, "tmag_b")
        tprod_b = partials(m, th_t, tsum_a, "tprod_b_p")
        tvalid_b, tbid_b = delay(m, tsum_a != 0, "tvalid_b"), delay(m, tbid_a, "tbid_b")
        dmag_b = delay(m, dmag_a, "dmag_b")
        dprod_b = partials(m, th_d, dsum_a, "dprod_b_p")
        dvalid_b, dbid_b = delay(m, dsum_a != 0, "dvalid_b"), delay(m, dbid_a, "dbid_b")
        lost_b = delay(m, then_b - now_b, "lost_b_b", signed(DEPTH_BITS + 1))
        lost_a = delay(m, then_a - now_a, "lost_a_b", signed(DEPTH_BITS + 1))
        lim_b = partials(m, drop_th, then_b, "lim_b_b_p")
        lim_a = partials(m, drop_th, then_a, "lim_a_b_p")
        drop_valid_b = delay(m, drop_valid_a, "drop_valid_b")
        thin_b = delay(m, dmin_a < thin_th, "thin_b")
        lvi_b = delay(m, _exceeds(weighted(lvi_prod_a), [dmin_a << LEV_FRAC]), "lvi_b")
        lsafe_prod_b = partials(m, risk_a, sigma_a, "lsafe_prod_b_p")        # UQ33.24
        # micro_s is 0 unless ok: the product is the output's 0 then.
        micro_num_b = partial_sum(m, micro_s_a, vb_a, "micro_num_b_p")
        micro_den_b = delay(m, Mux(ok_a, tsum_a, 0), "micro_den_b", _shape("micro_den"))
        # dev sums the terms again rather than behind star: one sum, not two in a row.
        star_b = delay(m, sum(star_terms)[:len(self.spread_star)], "star_b")   # < 2^34: fits
        dev = spread_a << STAR_FRAC
        for term in star_terms:
            dev = dev - term
        m.d.sync += [self.dev.eq(Mux(ok_a, dev, 0)), self.dev_valid.eq(ok_a)]

        # Stage C: compares into the registered outputs.
        accel_max, lsafe_k = delay(m, p.accel_max, "accel_max", n=2), delay(m, p.lsafe_k,
                                                                          "lsafe_k", n=2)
        fast_hi, slow_hi = above["fast"], above["slow"]
        drop_b = drop_valid_b & _exceeds([lost_b << FRAC_BITS], weighted(lim_b))
        drop_a = drop_valid_b & _exceeds([lost_a << FRAC_BITS], weighted(lim_a))
        sig_over = _exceeds(weighted(lsafe_prod_b), [lsafe_k << LSAFE_SHIFT])
        m.d.sync += [
            self.spread.eq(delay(m, Mux(ok_a, spread_a, 0), "spread_b")),
            self.mid2.eq(delay(m, Mux(ok_a, mid2_a, 0), "mid2_b")),
            self.micro_num.eq(micro_num_b[:len(self.micro_num)]),
            self.micro_den.eq(micro_den_b),
            self.sigma.eq(delay(m, sigma_a, "sigma_b")), self.accel.eq(accel),
            self.spread_star.eq(star_b),
            self.regime.vol.eq(Cat(fast_hi, slow_hi)), self.regime.liq.eq(Cat(fast_hi, thin_b)),
            st.updated.eq(upd), st.touch_valid.eq(delay(m, ok_a, "ok_b")),
            st.obi_touch_valid.eq(tvalid_b), st.obi_touch_bid.eq(tvalid_b & tbid_b),
            st.obi_touch_over.eq(tvalid_b & _exceeds([tmag_b << FRAC_BITS], weighted(tprod_b))),
            st.obi_depth_valid.eq(dvalid_b), st.obi_depth_bid.eq(dvalid_b & dbid_b),
            st.obi_depth_over.eq(dvalid_b & _exceeds([dmag_b << FRAC_BITS], weighted(dprod_b))),
            st.vol_valid.eq(vol_valid), st.sigma_fresh.eq(fresh),
            st.vol_fast_hi.eq(fast_hi), st.vol_slow_hi.eq(slow_hi),
            st.accel_valid.eq(accel_valid), st.accel_over.eq(accel_valid & (accel > accel_max)),
            st.drop_valid.eq(drop_valid_b), st.bid_drop.eq(drop_b), st.ask_drop.eq(drop_a),
            st.cliff.eq(drop_b & drop_a), st.thin.eq(thin_b), st.lvi_over.eq(lvi_b),
            st.lmax_over.eq(lmax_over), st.lsafe_over.eq(lmax_over | sig_over),
            st.sat_vol.eq(sat_vol), st.sat_micro.eq(sat_micro),
        ]
        m.d.comb += [self.sig_flags_set.vol.eq(st.sat_vol), self.sigma2_fast.eq(sf),
                     self.sigma2_slow.eq(ss),
                     self.sig_flags_set.micro.eq(st.sat_micro)]
        return m


class Signals(wiring.Component):
    """Every venue's :class:`VenueSignals` plus the cross-venue misalignment of venues 0, 1.

    Ports are named after the registers, in the CSR's convention: a per-venue register is
    one ``data.ArrayLayout`` port (element ``i`` = venue ``i``) when ``venues > 1``.
    ``book`` is an array of :data:`BOOK_VIEW`; ``sig_flags_set`` pulses the w1c register's
    sticky bits; ``obi_touch_q`` / ``obi_depth_q`` (:data:`IMB_OUTPUTS`, not registers) are
    the imbalances as SQ1.15 values for telemetry, ``IMB_LATENCY`` cycles after the book, of
    venue ``imb_venue`` as it was with that book (0 for a venue >= ``venues``): telemetry
    shows one venue per message, so one divider pair serves them all. ``misalign``,
    ``xv_status`` and ``misalign_max`` exist when ``venues >= 2``.
    """

    def __init__(self, venues=2):
        if not (isinstance(venues, int) and not isinstance(venues, bool) and 1 <= venues <= 16):
            raise ValueError(f"venues must be an integer 1..16, not {venues!r}")
        self._venues = venues
        regs = build_map(venues=venues)

        def port(name, direction):
            shape = _shape(name)
            return direction(shape if regs[name].count == 1 else
                             data.ArrayLayout(shape, regs[name].count))

        members = {"book": In(BOOK_VIEW).array(venues), "tick": In(1),
                   "imb_venue": In(VENUE_BITS)}
        members.update({n: port(n, In) for n in VENUE_PARAMS})
        members.update({n: port(n, Out) for n in VENUE_OUTPUTS})
        members["sig_flags_set"] = port("sig_flags", Out)
        members.update({n: Out(signed(IMB_FRAC + 1)) for n in IMB_OUTPUTS})
        if venues >= 2:
            members.update({n: port(n, In) for n in CROSS_PARAMS})
            members.update({n: port(n, Out) for n in CROSS_OUTPUTS})
        super().__init__(members)

    @property
    def venues(self):
        return self._venues

    def _at(self, port, i):
        return port if self._venues == 1 else port[i]

    def elaborate(self, platform):
        m = Module()
        units = []
        for i in range(self._venues):
            unit = VenueSignals()
            m.submodules[f"venue{i}"] = unit
            units.append(unit)
            wiring.connect(m, wiring.flipped(self.book[i]), unit.book)
            m.d.comb += unit.tick.eq(self.tick)
            m.d.comb += [getattr(unit, n).eq(self._at(getattr(self, n), i))
                         for n in VENUE_PARAMS]
            m.d.comb += [self._at(getattr(self, n), i).eq(getattr(unit, n))
                         for n in VENUE_OUTPUTS]
            m.d.comb += self._at(self.sig_flags_set, i).eq(unit.sig_flags_set)
        # The imbalances of venue imb_venue: its operands (stage A) picked, then divided. The
        # pick is decoded before its register, so an AND-OR of registers feeds the divider.
        shown = [delay(m, self.imb_venue == i, f"imb_venue_a{i}") for i in range(len(units))]
        for name in IMB_OUTPUTS:
            ops = Signal(imb_operands(name), name=f"{name}_ops")   # 0 beyond the venues
            m.d.comb += ops.eq(functools.reduce(operator.or_, (
                Mux(hot, Value.cast(getattr(unit, _IMB_OPERANDS[name][0])), 0)
                for hot, unit in zip(shown, units, strict=True))))
            div = m.submodules[f"{name}_div"] = ImbalanceDivider(len(ops.mag), len(ops.den))
            m.d.comb += [div.mag.eq(ops.mag), div.neg.eq(ops.neg), div.den.eq(ops.den),
                         getattr(self, name).eq(div.q)]
        if self._venues >= 2:
            # Stage C of the cross-venue path: venue devs are registered at stage B.
            a, b = units[0], units[1]
            # |mis| > limit as the signs of two three-operand sums (~limit = -limit - 1)
            # beside the difference, not compares behind it: one carry chain each.
            limit = delay(m, self.misalign_max, "misalign_max")
            not_limit = delay(m, -limit - 1, "misalign_not_max", signed(len(limit) + 1))
            valid = a.dev_valid & b.dev_valid
            mis = Signal(_shape("misalign"))
            m.d.comb += mis.eq(a.dev - b.dev)
            above, below = a.dev - b.dev + not_limit, b.dev - a.dev + not_limit
            m.d.sync += [self.misalign.eq(Mux(valid, mis, 0)), self.xv_status.valid.eq(valid),
                         self.xv_status.over.eq(valid & ((above >= 0) | (below >= 0)))]
        return m


def port_layout(name):
    """The shape of one element of output or parameter port ``name``."""
    if name in IMB_OUTPUTS:
        return signed(IMB_FRAC + 1)
    return _shape("sig_flags" if name == "sig_flags_set" else name)
