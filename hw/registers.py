"""The register map: every parameter and status value, its fixed-point format and range."""

import math
from fractions import Fraction

from .fixed import WORD, Q, Register, RegisterMap, exact, from_fixed, to_fixed

__all__ = ["Q", "Register", "RegisterMap", "to_fixed", "from_fixed", "build_map", "REGISTERS",
           "MAGIC", "VERSION", "WORD", "kappa_term", "lev_lots", "LEV_LOTS_MAX"]

MAGIC = 0x0BC0_4E00   # value of the `id` register: a host checks it before anything else
VERSION = 1           # register-map version; bumped when an address or format changes


def kappa_term(gamma, k):
    """The A-S spread term ``(2/gamma) ln(1 + gamma/k)`` in ticks, for the `kappa_term` register.

    It depends only on parameters, so the controller computes it and writes it whenever
    `gamma` or `k` changes; the gateware never takes a logarithm.
    """
    gamma, k = float(exact(gamma)), float(exact(k))
    if gamma <= 0 or k <= 0:
        raise ValueError(f"gamma and k must be positive, not gamma={gamma!r}, k={k!r}")
    return (2.0 / gamma) * math.log1p(gamma / k)


LEV_LOTS_MAX = (1 << 32) - 1


def lev_lots(equity, lot_value):
    """Lots of position per 1x of leverage, ``floor(equity / lot_value)`` (capped at
    2^32 - 1), for the `lev_lots` register: the quoter caps |q| at L_safe x lev_lots.

    ``equity`` and ``lot_value`` (one lot's notional) are in account units; the controller
    writes the result with them whenever either changes, so the gateware never divides.
    ``equity`` 0 is the register's reset, "not written": no leverage cap (2^32 - 1, the
    reset of `lev_lots`), as `maint_margin` 0 reads as a safe margin.
    """
    equity, lot_value = exact(equity), exact(lot_value)
    if lot_value <= 0 or equity < 0:
        raise ValueError(f"lot_value must be positive and equity not negative, not "
                         f"equity={float(equity)!r}, lot_value={float(lot_value)!r}")
    return LEV_LOTS_MAX if equity == 0 else min(math.floor(equity / lot_value), LEV_LOTS_MAX)


def build_map(venues=2, levels=16, window=None):
    """The engine's register map for ``venues`` venues (1..16) and ``levels`` exact levels.

    ``window`` (a build with price ladders behind the books, ``docs/ladder.md``) appends the
    ladder's registers at the end, so every other address stays where it is."""
    if not (isinstance(venues, int) and 1 <= venues <= 16):
        raise ValueError(f"venues must be an integer 1..16, not {venues!r}")
    if not (isinstance(levels, int) and 1 <= levels <= 255):
        raise ValueError(f"levels must be an integer 1..255, not {levels!r}")
    U32, U16, U8, U1 = Q(32), Q(16), Q(8), Q(1)
    v = venues
    regs = [
        # system
        Register("id", U32, "ro", "identification constant 0x0BC04E00", reset=MAGIC,
                 const=True),
        Register("version", U16, "ro", "register-map version", reset=VERSION, const=True),
        Register("venues", U8, "ro", "number of venues the gateware was built with", reset=v,
                 const=True),
        Register("levels", U8, "ro", "top-N levels per side kept exact by each book",
                 reset=levels, const=True),
        Register("cycle", Q(64), "ro", "free-running clock-cycle counter", unit="cycles"),
        Register("commit", U1, "wo", "write 1: copy every staged rw register to the live "
                 "set in one cycle (atomic parameter change)"),
        Register("bus_errors", U32, "ro", "bus writes ignored: to ro registers or unmapped "
                 "addresses (saturates)"),
        # ingress and book status, one per venue
        Register("msg_count", U32, "ro", "feed messages accepted for the venue", count=v,
                 block="book", unit="msgs"),
        Register("malformed_count", U32, "ro", "messages rejected as malformed, all venues "
                 "(unknown kind, bad side/venue/flags, price or size out of range)",
                 block="book"),
        Register("gap_count", U32, "ro", "sequence gaps seen", count=v, block="book"),
        Register("missing_count", U32, "ro", "deletes of a level that is not in the book",
                 count=v, block="book"),
        Register("crossed_count", U32, "ro", "updates after which the book was crossed or "
                 "locked", count=v, block="book"),
        Register("capacity_count", U32, "ro", "updates that left the book short of exact top-N "
                 "levels after it dropped deep levels (resync from a snapshot)", count=v,
                 block="book"),
        Register("book_flags", Q(8), "w1c", "sticky flags, write 1 to clear: bit0 gap, "
                 "bit1 crossed, bit2 locked, bit3 capacity, bit4 missing",
                 count=v, block="book"),
        Register("best_bid", U32, "ro", "best bid price (0 when the side is empty)", count=v,
                 block="book", unit="ticks"),
        Register("best_ask", U32, "ro", "best ask price (0 when the side is empty)", count=v,
                 block="book", unit="ticks"),
        # market signals (hw/signals.py, docs/signals.md): parameters, then status
        Register("obi_touch_th", Q(1, 15), "rw", "touch-imbalance threshold theta: flag when "
                 "|Vb-Va| > theta (Vb+Va)", reset="0.8", lo=0, hi=1, count=v, block="signals",
                 unit="fraction"),
        Register("obi_depth_th", Q(1, 15), "rw", "depth-imbalance threshold theta: flag when "
                 "|Db-Da| > theta (Db+Da)", reset="0.6", lo=0, hi=1, count=v, block="signals",
                 unit="fraction"),
        Register("vol_fast_shift", U8, "rw", "fast EWMA: sigma2 += (x - sigma2) >> shift per "
                 "sample", reset=4, lo=0, hi=31, count=v, block="signals", unit="log2 samples"),
        Register("vol_slow_shift", U8, "rw", "slow EWMA shift, as vol_fast_shift", reset=12,
                 lo=0, hi=31, count=v, block="signals", unit="log2 samples"),
        Register("vol_fast_hi", Q(34, 16), "rw", "intraday vol is high when sigma2_fast > this",
                 reset=100, count=v, block="signals", unit="ticks^2"),
        Register("vol_slow_hi", Q(34, 16), "rw", "day-to-day vol is high when sigma2_slow > this",
                 reset=25, count=v, block="signals", unit="ticks^2"),
        Register("accel_max", U32, "rw", "spread acceleration S[t]-2S[t-1]+S[t-2] limit",
                 reset=100, count=v, block="signals", unit="ticks"),
        Register("depth_window", U8, "rw", "depth-drop window W: compare with the depth "
                 "sampled W ticks back", reset=8, lo=1, hi=16, count=v, block="signals",
                 unit="samples"),
        Register("depth_drop_th", Q(1, 15), "rw", "a side has dropped when it lost more than "
                 "this fraction of its depth over the window", reset="0.5", lo=0, hi=1,
                 count=v, block="signals", unit="fraction"),
        Register("depth_thin", Q(36), "rw", "the book is thin when min(Db, Da) < this",
                 reset=1, count=v, block="signals", unit="lots"),
        Register("leverage", Q(8, 8), "rw", "current leverage L, written by the controller",
                 reset=1, count=v, block="signals", unit="x"),
        Register("leverage_max", Q(8, 8), "rw", "leverage cap L_max", reset=10, count=v,
                 block="signals", unit="x"),
        Register("lvi_depth", U32, "rw", "1/LVI_max: thinner-side depth needed per 1x of "
                 "leverage; LVI over when L*lvi_depth > min(Db, Da)", reset=1, count=v,
                 block="signals", unit="lots"),
        Register("lsafe_k", Q(24, 8), "rw", "K of L_safe = min(L_max, K/(sigma risk)); over "
                 "when L sigma risk > K", reset=10000, count=v, block="signals",
                 unit="x ticks"),
        Register("liquidity_risk", Q(8, 8), "rw", "liquidity risk factor of L_safe", reset=1,
                 count=v, block="signals"),
        Register("xv_a", Q(8, 8), "rw", "Spread* = xv_a sigma + xv_b L + xv_c/Lambda: sigma "
                 "coefficient", count=v, block="signals", unit="1"),
        Register("xv_b", Q(16, 8), "rw", "Spread* leverage coefficient", count=v,
                 block="signals", unit="ticks/x"),
        Register("xv_c", Q(16, 8), "rw", "Spread* liquidity coefficient", count=v,
                 block="signals", unit="ticks"),
        Register("xv_inv_liq", Q(1, 15), "rw", "1/Lambda of Spread* (liquidity, controller "
                 "units)", reset=1, lo=0, hi=1, count=v, block="signals"),
        Register("misalign_max", Q(24, 8), "rw", "cross-venue alarm when |Misalign| > this",
                 reset=1000, block="signals", unit="ticks"),
        Register("sig_flags", Q(2), "w1c", "sticky saturation flags, write 1 to clear: bit0 "
                 "vol delta clamped, bit1 microprice spread clamped", count=v, block="signals"),
        Register("spread", Q(33, signed=True), "ro", "S = a - b (0 unless touch_valid)",
                 count=v, block="signals", unit="ticks"),
        Register("mid2", Q(33), "ro", "a + b, twice the mid (0 unless touch_valid)", count=v,
                 block="signals", unit="ticks"),
        Register("micro_num", Q(50, signed=True), "ro", "microprice = b + micro_num/micro_den;"
                 " micro_num = clamp(S, +-131071) Vb", count=v, block="signals",
                 unit="ticks lots"),
        Register("micro_den", Q(33), "ro", "Vb + Va (0 unless touch_valid)", count=v,
                 block="signals", unit="lots"),
        Register("sigma2_fast", Q(34, 16), "ro", "fast EWMA of (delta mid2)^2 per tick sample",
                 count=v, block="signals", unit="ticks^2"),
        Register("sigma2_slow", Q(34, 16), "ro", "slow EWMA of (delta mid2)^2 per tick sample",
                 count=v, block="signals", unit="ticks^2"),
        Register("sigma", Q(17, 8), "ro", "floor sqrt(max(sigma2_fast, sigma2_slow)), "
                 "sequential (see sigma_fresh)", count=v, block="signals", unit="ticks"),
        Register("accel", Q(35, signed=True), "ro", "S[t] - 2S[t-1] + S[t-2] over the last "
                 "three tick samples (0 unless accel_valid)", count=v, block="signals",
                 unit="ticks"),
        Register("spread_star", Q(26, 8), "ro", "fair spread Spread* of the venue", count=v,
                 block="signals", unit="ticks"),
        Register("regime", Q(4), "ro", "bits 0-1 vol regime (0 stable, 1 range, 2 trend, "
                 "3 crisis), bits 2-3 liquidity regime (0 normal, 1 wait, 2 no leverage "
                 "expansion, 3 withdraw)", count=v, block="signals"),
        Register("sig_status", Q(24), "ro", "signal valid and alarm bits, see docs/signals.md",
                 count=v, block="signals"),
        Register("misalign", Q(35, 8, signed=True), "ro", "(S_A - S*_A) - (S_B - S*_B), "
                 "venues 0 and 1 (0 unless both touch_valid)", block="signals", unit="ticks"),
        Register("xv_status", Q(2), "ro", "bit0 misalign valid, bit1 |misalign| > "
                 "misalign_max", block="signals"),
        # withdraw guard (hw/guard.py, docs/guard.md): commands, policy, thresholds, status
        Register("heartbeat", U1, "wo", "controller heartbeat: any write restarts the "
                 "heartbeat_timeout deadline", block="guard"),
        Register("arm", U1, "wo", "any write re-arms (pull falls guard.LATENCY + 1 cycles "
                 "after the strobe); refused and counted while an enabled trigger holds",
                 block="guard"),
        Register("kill", U1, "wo", "any write pulls every quote now, latched until arm",
                 block="guard"),
        Register("pull_enable", Q(23), "rw", "trigger enable mask, bits as pull_reasons; "
                 "reset and kill are always enabled", reset=(1 << 23) - 1, block="guard"),
        Register("auto_arm", U1, "rw", "1: re-arm by itself once every enabled trigger stayed "
                 "clear for cooldown + 1 cycles (never after reset or kill)", block="guard"),
        Register("cooldown", U32, "rw", "clear cycles before an automatic re-arm",
                 reset=1_000_000, block="guard", unit="cycles"),
        Register("heartbeat_timeout", U32, "rw", "pull when heartbeat writes are further "
                 "apart than this", reset=100_000_000, block="guard", unit="cycles"),
        Register("stale_timeout", U32, "rw", "pull when the venue's messages are further "
                 "apart than this", reset=10_000_000, count=v, block="guard", unit="cycles"),
        Register("spread_max", U32, "rw", "pull when best ask - best bid > this", reset=1000,
                 count=v, block="guard", unit="ticks"),
        Register("depth_min", Q(36), "rw", "pull when a side's top-N depth < this (both "
                 "sides: depth_both)", reset=1, count=v, block="guard", unit="lots"),
        Register("vol_fast_max", Q(34, 16), "rw", "pull when sigma2_fast > this",
                 reset=10000, count=v, block="guard", unit="ticks^2"),
        Register("vol_slow_max", Q(34, 16), "rw", "pull when sigma2_slow > this",
                 reset=2500, count=v, block="guard", unit="ticks^2"),
        Register("equity", U32, "rw", "account equity, written by the controller",
                 block="guard", unit="account units"),
        Register("maint_margin", U32, "rw", "maintenance margin, same units as equity (0: "
                 "no position, margin level infinite)", block="guard", unit="account units"),
        Register("margin_warn", Q(4, 12), "rw", "warning when margin level equity/maint_margin "
                 "< this", reset="0.5", block="guard", unit="fraction"),
        Register("margin_pull", Q(4, 12), "rw", "pull when margin level < this", reset="0.2",
                 block="guard", unit="fraction"),
        Register("range_size", Q(1, 15), "rw", "size scale in the range-bound vol regime "
                 "(the quoter's regime_size also scales by regime)", reset=1, lo=0, hi=1,
                 block="guard", unit="fraction"),
        Register("range_gamma", Q(3), "rw", "gamma boost (log2) in the range-bound regime",
                 reset=1, block="guard", unit="log2 x"),
        Register("trend_size", Q(1, 15), "rw", "size scale in the trending vol regime",
                 reset=1, lo=0, hi=1, block="guard", unit="fraction"),
        Register("trend_gamma", Q(3), "rw", "gamma boost (log2) in the trending regime",
                 block="guard", unit="log2 x"),
        Register("crisis_size", Q(1, 15), "rw", "size scale in the crisis vol regime",
                 reset=1, lo=0, hi=1, block="guard", unit="fraction"),
        Register("crisis_gamma", Q(3), "rw", "gamma boost (log2) in the crisis regime",
                 reset=3, block="guard", unit="log2 x"),
        Register("margin_size", Q(1, 15), "rw", "size scale while the margin level is under "
                 "margin_warn", reset="0.5", lo=0, hi=1, block="guard", unit="fraction"),
        Register("margin_gamma", Q(3), "rw", "gamma boost (log2) while under margin_warn",
                 reset=1, block="guard", unit="log2 x"),
        Register("pull_reasons", Q(23), "w1c", "sticky pull reasons, write 1 to clear (a "
                 "bit whose cause persists sets again): 0 reset, 1 kill, 2 heartbeat, 3 rate, "
                 "4 inventory, 5 margin, 6 misalign, 7 crossed, 8 spread, 9 depth_bid, "
                 "10 depth_ask, 11 depth_both, 12 stale, 13 gap, 14 capacity, 15 cliff, "
                 "16 obi_touch, 17 obi_depth, 18 accel, 19 vol_fast, 20 vol_slow, 21 lvi, "
                 "22 lsafe", reset=1, block="guard"),
        Register("pull_venues", Q(v), "w1c", "sticky: bit i, a trigger of venue i fired",
                 block="guard"),
        Register("pull_state", Q(6), "ro", "bit0 pulled, bit1 hold (reset/kill), bit2 a "
                 "trigger holds, bit3 last arm refused, bit4 cooling, bit5 margin warning",
                 block="guard"),
        Register("pull_first", Q(23), "ro", "reason bits of the cycle the latest pull began",
                 reset=1, block="guard"),
        Register("pull_count", U32, "ro", "pulls since reset (wraps)", block="guard"),
        Register("refused_count", U32, "ro", "arm writes refused (wraps)", block="guard"),
        Register("pull_cycle", Q(64), "ro", "cycle counter value when the latest pull began",
                 block="guard", unit="cycles"),
        # quoting parameters (Avellaneda-Stoikov, domain.md section 3)
        Register("gamma", Q(8, 24), "rw", "risk aversion gamma", reset="0.1",
                 lo=Fraction(1, 1 << 24), hi=255, block="quoter", unit="1/ticks"),
        Register("k", Q(8, 24), "rw", "order-arrival decay k of lambda(d) = A e^(-k d)",
                 reset="1.5", lo=Fraction(1, 1 << 24), hi=255, block="quoter", unit="1/ticks"),
        Register("kappa_term", Q(16, 16), "rw", "(2/gamma) ln(1 + gamma/k), written by the "
                 "controller whenever gamma or k changes", reset=round(kappa_term("0.1", "1.5"), 6),
                 block="quoter", unit="ticks"),
        Register("tau", Q(16, 16), "rw", "horizon T - t of the infinite-horizon variant",
                 reset=1, block="quoter", unit="time units"),
        Register("q_limit", Q(32, signed=True), "rw", "absolute net position limit",
                 reset=1000, lo=0, block="quoter", unit="lots"),
        # quote engine (hw/quoter.py, docs/quoter.md): prices, sizes, order rate, status
        Register("sigma_sel", Q(2), "rw", "sigma2 the quotes use: 0 sigma2_fast, 1 sigma2_slow, "
                 "2 or 3 the larger of the two", reset=2, block="quoter"),
        Register("min_spread", U16, "rw", "minimum quoted spread: ask - bid >= this", reset=1,
                 block="quoter", unit="ticks"),
        Register("allow_cross", U1, "rw", "1: skip the no-cross clamp (bid < best ask, "
                 "ask > best bid)", block="quoter"),
        Register("max_dist", U32, "rw", "a quote farther than this from the mid is not placed",
                 reset=100_000, block="quoter", unit="ticks"),
        Register("level_gap", U16, "rw", "element j-1: quote level j sits this much further "
                 "out than level j-1 (j = 1..3)", reset=1, count=3, block="quoter",
                 unit="ticks"),
        Register("base_size", U32, "rw", "quote size before depth, volatility, regime and "
                 "guard scaling", reset=100, hi=(1 << 31) - 1, block="quoter", unit="lots"),
        Register("depth_frac", Q(1, 15), "rw", "size <= depth_frac x min(Db, Da)",
                 reset="0.25", lo=0, hi=1, block="quoter", unit="fraction"),
        Register("vol_ref", Q(34, 16), "rw", "size halves each time the quotes' sigma2 "
                 "quadruples past this", reset=100, block="quoter", unit="ticks^2"),
        Register("regime_size", Q(64), "rw", "size factor of regime code i in bits 4i..4i+3, "
                 "in eighths (0: not quoted)", block="quoter", unit="1/8",
                 reset=sum(f << (4 * i) for i, f in enumerate(
                     (8, 8, 4, 1, 8, 8, 4, 1, 4, 4, 2, 0, 0, 0, 0, 0)))),
        Register("size_cap", U32, "rw", "size cap per quote (the position cap from L_safe "
                 "is lev_lots)",
                 reset=(1 << 31) - 1, hi=(1 << 31) - 1, block="quoter", unit="lots"),
        Register("size_min", U32, "rw", "a quote smaller than this is not placed", reset=1,
                 lo=1, hi=(1 << 31) - 1, block="quoter", unit="lots"),
        Register("requote_cycles", Q(24), "rw", "minimum spacing of a quote slot's orders "
                 "(CANCEL exempt; 2 at least)", reset=1000, block="quoter", unit="cycles"),
        Register("rate_tokens", Q(8, 8), "rw", "order-rate tokens added per TICK", reset=1,
                 block="quoter", unit="orders/tick"),
        Register("rate_depth", U16, "rw", "order-rate bucket depth: the largest burst",
                 reset=16, block="quoter", unit="orders"),
        Register("position", Q(32, signed=True), "ro", "inventory from own fills", count=v,
                 block="quoter", unit="lots"),
        Register("position_net", Q(32, signed=True), "ro", "net inventory q, all venues",
                 block="quoter", unit="lots"),
        Register("quote_flags", Q(5), "w1c", "sticky saturation flags, write 1 to clear: "
                 "bit0 sigma2, bit1 gain, bit2 risk, bit3 skew, bit4 position", block="quoter"),
        # horizon count-down and the L_safe position cap (docs/quoter.md); appended, so no
        # earlier address moves
        Register("tau_mode", U1, "rw", "0: the quotes use tau (infinite horizon); 1: tau_left, "
                 "counting down to 0 at the horizon end", block="quoter"),
        Register("horizon", U1, "wo", "any write starts a horizon: tau_left = tau",
                 block="quoter"),
        Register("tau_left", Q(16, 16), "ro", "time left in the horizon: tau at reset and "
                 "at each horizon write, minus 1 per TICK, down to 0", block="quoter",
                 unit="time units"),
        Register("lot_value", Q(24, 8), "rw", "notional of one lot (price x contract size), "
                 "controller side: with equity it gives lev_lots", reset=1,
                 lo=Fraction(1, 1 << 8), block="quoter", unit="account units"),
        Register("lev_lots", U32, "rw", "floor(equity / lot_value): position per 1x of "
                 "leverage; |q| is capped at floor(L_safe x lev_lots), L_safe = min(L_max, "
                 "K / (sigma liquidity_risk)), the smallest over the venues; written by the "
                 "controller with equity and lot_value (equity 0: no cap)", reset=LEV_LOTS_MAX,
                 block="quoter", unit="lots"),
    ]
    if window is not None:
        regs += [
            Register("window", U32, "ro", "price-ladder window per book side (0: no ladder)",
                     reset=window, const=True, block="book", unit="ticks"),
            Register("window_count", U32, "ro", "level updates outside the ladder's window, "
                     "both sides (wraps)", count=v, block="book", unit="msgs"),
            Register("ladder_flags", Q(6), "ro", "until the next snapshot or clear: bit0 bid "
                     "level refused before the window, bit1 beyond it, bit2 bid refill stuck "
                     "(the ladder could not be trusted: resync), bits 3-5 the same for asks",
                     count=v, block="book"),
        ]
    return RegisterMap(regs)


REGISTERS = build_map()
