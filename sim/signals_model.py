"""Bit-accurate reference model of the market-signal block (hw/signals.py) in plain Python ints.

Semantics are per clock cycle and latency-free: :meth:`SignalsModel.step` takes the book
outputs of one cycle, the ``tick`` strobe of that cycle and the live parameters (raw register
bits), and returns what the gateware shows ``LATENCY`` cycles later. Within a cycle the book
update comes first and the tick then samples the updated book. ``sigma`` follows the
gateware's sequential square root cycle for cycle: it lags ``sigma2`` after a tick (by at most
``SIGMA_LAG`` cycles) until ``sigma_fresh`` is set again (docs/signals.md). The volatility
EWMAs take at most one sample every other cycle (:meth:`VenueSignalsModel.step`). The telemetry
imbalances ``obi_touch_q`` / ``obi_depth_q`` are pure functions of the book, one venue's per
cycle (``imb_venue``); the gateware shows them ``IMB_LATENCY`` (not ``LATENCY``) cycles later.
"""

import math
from collections import deque

from ..hw.registers import REGISTERS, to_fixed
from ..hw.signals import (
    CLAMP_MAX,
    CROSS_OUTPUTS,
    CROSS_PARAMS,
    FRAC_BITS,
    IMB_FRAC,
    IMB_MAX,
    IMB_OUTPUTS,
    LEV_FRAC,
    LSAFE_SHIFT,
    SHIFT_MAX,
    SIGMA2_FRAC,
    SIGMA_BITS,
    STAR_FRAC,
    STAR_SHIFTS,
    STATUS,
    VENUE_OUTPUTS,
    VENUE_PARAMS,
    VOL_STAGES,
    WINDOW_MAX,
    WINDOW_RESET,
    port_layout,
)

__all__ = ["VenueSignalsModel", "SignalsModel", "default_params", "pack", "clamp",
           "BOOK_FIELDS", "EMPTY_BOOK", "OUTPUT_PORTS", "expected_ports", "mismatches",
           "BookStimulus", "random_params", "imbalance"]

BOOK_FIELDS = ("best_bid", "best_ask", "best_bid_qty", "best_ask_qty", "bid_depth",
               "ask_depth", "valid", "updated")
EMPTY_BOOK = dict.fromkeys(BOOK_FIELDS, 0)
OUTPUT_PORTS = (*VENUE_OUTPUTS, "sig_flags_set", *CROSS_OUTPUTS)   # LATENCY after the inputs


def clamp(value):
    """``value`` saturated to +-CLAMP_MAX, and whether it saturated."""
    limited = max(-CLAMP_MAX, min(CLAMP_MAX, value))
    return limited, limited != value


def imbalance(diff, total):
    """``(diff << IMB_FRAC) / total`` in SQ1.15 as the gateware's divider gives it: truncated
    toward 0, magnitude at most ``IMB_MAX``, 0 when ``total`` is 0 (``|diff| <= total``)."""
    if total == 0:
        return 0
    mag = min((abs(diff) << IMB_FRAC) // total, IMB_MAX)
    return -mag if diff < 0 else mag


def pack(layout, values):
    """The raw bits of ``values`` (a dict of field -> int/bool) in a struct ``layout``."""
    return sum(int(values[name]) << field.offset for name, field in layout)


def default_params(venues=2):
    """Every signal parameter at its register reset, as raw bits: lists per venue."""
    params = {n: [to_fixed(REGISTERS[n], REGISTERS[n].reset)] * venues for n in VENUE_PARAMS}
    params.update({n: to_fixed(REGISTERS[n], REGISTERS[n].reset) for n in CROSS_PARAMS})
    return params


class VenueSignalsModel:
    """One venue's signal state: previous mid, the EWMAs, spread and depth history."""

    def __init__(self):
        self.prev, self.have_prev = 0, False
        self.sampled = False                         # the last cycle took a volatility sample
        self.sigma2_fast = self.sigma2_slow = 0
        self.vol_valid = False
        self.s1 = self.s2 = self.seen = 0
        self.accel, self.accel_valid = 0, False
        self.history = deque(maxlen=WINDOW_MAX)      # (bid depth, ask depth), newest first
        self.window = WINDOW_RESET                   # the clamped depth_window of last cycle
        # The sequential root (hw SerialSqrt): one result bit per cycle while busy.
        self.root, self.radicand, self.left = 0, 0, 0
        self.dirty = False
        self.ticks_before = (False,) * VOL_STAGES         # newest first

    def _root_edge(self, tick):
        """The square-root unit's clock edge: start when no tick sample is in flight and sigma2
        has held a cycle (no tick in this cycle nor the VOL_STAGES before), finish after
        SIGMA_BITS cycles."""
        start = self.dirty and not self.left and not tick and not any(self.ticks_before)
        if self.left:
            self.left -= 1
            if not self.left:
                self.root = math.isqrt(self.radicand)
        elif start:
            self.radicand = max(self.sigma2_fast, self.sigma2_slow)
            self.left = SIGMA_BITS
        self.dirty = tick or (self.dirty and not start)
        self.ticks_before = (tick, *self.ticks_before[:-1])

    def _ewma(self, state, x, shift):
        # Floor shift of the signed step: the state moves toward x and never overshoots it.
        # Raw shifts above the register's limit act as the limit.
        return state + (((x << SIGMA2_FRAC) - state) >> min(shift, SHIFT_MAX))

    def step(self, book, tick, p):
        """Advance one cycle; ``p`` maps parameter names to this venue's raw values."""
        bid, ask = book["best_bid"], book["best_ask"]
        vb, va = book["best_bid_qty"], book["best_ask_qty"]
        db, da = book["bid_depth"], book["ask_depth"]
        ok = bool(book["valid"])
        spread, mid2 = ask - bid, ask + bid

        # At most one volatility sample every other cycle: a tick right after a sample steps
        # neither EWMA nor `prev`, so the next sample's change spans both intervals. The
        # gateware computes a sample's shifts a cycle before its EWMA step, from a state that
        # must not move in between (hw/signal_units.py ewma_step). Feeds never send TICKs on
        # consecutive cycles; everything else a tick does is unchanged.
        skip = self.sampled
        self.sampled = tick and ok and self.have_prev and not skip
        sat_vol = False
        if self.sampled:
            delta, sat_vol = clamp(mid2 - self.prev)
            x = delta * delta
            self.sigma2_fast = self._ewma(self.sigma2_fast, x, p["vol_fast_shift"])
            self.sigma2_slow = self._ewma(self.sigma2_slow, x, p["vol_slow_shift"])
            self.vol_valid = True
        if tick and ok:
            if not skip:
                self.prev, self.have_prev = mid2, True
            full = self.seen == 2
            self.accel = spread - 2 * self.s1 + self.s2 if full else 0
            self.accel_valid = full
            self.s1, self.s2, self.seen = spread, self.s1, min(self.seen + 1, 2)
        elif tick:
            self.seen, self.accel, self.accel_valid = 0, 0, False
        if tick:
            self.history.appendleft((db, da))

        # W takes effect a cycle after the other parameters (hw/signals.py registers it).
        window, self.window = self.window, min(max(p["depth_window"], 1), WINDOW_MAX)
        drop_valid = len(self.history) >= window
        then_b, then_a = self.history[window - 1] if drop_valid else (0, 0)
        bid_drop = drop_valid and ((then_b - db) << FRAC_BITS) > p["depth_drop_th"] * then_b
        ask_drop = drop_valid and ((then_a - da) << FRAC_BITS) > p["depth_drop_th"] * then_a

        sigma, fresh = self.root, not (self.left or self.dirty or tick)
        self._root_edge(tick)
        micro_s, micro_sat = clamp(spread)
        tsum, tdiff, dsum, ddiff = vb + va, vb - va, db + da, db - da
        dmin = min(db, da)
        lev = p["leverage"]
        lmax_over = lev > p["leverage_max"]
        sigma_over = lev * p["liquidity_risk"] * sigma > p["lsafe_k"] << LSAFE_SHIFT
        terms = (p["xv_a"] * sigma, p["xv_b"] * lev, p["xv_c"] * p["xv_inv_liq"])
        star = sum(t >> s for t, s in zip(terms, STAR_SHIFTS, strict=True))
        fast_hi = self.sigma2_fast > p["vol_fast_hi"]
        slow_hi = self.sigma2_slow > p["vol_slow_hi"]
        thin = dmin < p["depth_thin"]
        status = {
            "updated": bool(book["updated"]), "touch_valid": ok,
            "obi_touch_valid": tsum != 0, "obi_touch_bid": tdiff > 0,
            "obi_touch_over": tsum != 0 and abs(tdiff) << FRAC_BITS > p["obi_touch_th"] * tsum,
            "obi_depth_valid": dsum != 0, "obi_depth_bid": ddiff > 0,
            "obi_depth_over": dsum != 0 and abs(ddiff) << FRAC_BITS > p["obi_depth_th"] * dsum,
            "vol_valid": self.vol_valid, "sigma_fresh": fresh,
            "vol_fast_hi": fast_hi, "vol_slow_hi": slow_hi,
            "accel_valid": self.accel_valid,
            "accel_over": self.accel_valid and self.accel > p["accel_max"],
            "drop_valid": drop_valid, "bid_drop": bid_drop, "ask_drop": ask_drop,
            "cliff": bid_drop and ask_drop, "thin": thin,
            "lvi_over": lev * p["lvi_depth"] > dmin << LEV_FRAC,
            "lmax_over": lmax_over, "lsafe_over": lmax_over or sigma_over,
            "sat_vol": sat_vol, "sat_micro": ok and micro_sat,
        }
        return {
            "spread": spread if ok else 0, "mid2": mid2 if ok else 0,
            "micro_num": micro_s * vb if ok else 0, "micro_den": tsum if ok else 0,
            "sigma2_fast": self.sigma2_fast, "sigma2_slow": self.sigma2_slow, "sigma": sigma,
            "accel": self.accel, "spread_star": star,
            "regime": {"vol": fast_hi | slow_hi << 1, "liq": fast_hi | thin << 1},
            "status": status, "sig_status": pack(STATUS, status),
            "flags_set": {"vol": status["sat_vol"], "micro": status["sat_micro"]},
            "dev": (spread << STAR_FRAC) - star if ok else 0, "dev_valid": ok,
            "obi_touch_q": imbalance(tdiff, tsum), "obi_depth_q": imbalance(ddiff, dsum),
        }


class SignalsModel:
    """All venues plus the cross-venue misalignment of venues 0 and 1.

    ``params`` holds the live parameters as raw register bits: per-venue ones as lists.
    """

    def __init__(self, venues=2):
        if not (isinstance(venues, int) and not isinstance(venues, bool) and 1 <= venues <= 16):
            raise ValueError(f"venues must be an integer 1..16, not {venues!r}")
        self.venues = venues
        self.units = [VenueSignalsModel() for _ in range(venues)]
        self.params = default_params(venues)

    def step(self, books, tick=False, imb_venue=0):
        """One cycle: ``books`` is one book-output dict per venue (see ``BOOK_FIELDS``);
        ``imb_venue`` picks the venue whose imbalances the ``IMB_OUTPUTS`` show (none, 0,
        for one >= ``venues``)."""
        if len(books) != self.venues:
            raise ValueError(f"need {self.venues} book(s), not {len(books)}")
        outs = [unit.step(book, bool(tick), {n: self.params[n][i] for n in VENUE_PARAMS})
                for i, (unit, book) in enumerate(zip(self.units, books, strict=True))]
        result = {"venues": outs}
        result.update((port, outs[imb_venue][port] if imb_venue < self.venues else 0)
                      for port in IMB_OUTPUTS)
        if self.venues >= 2:
            a, b = outs[0], outs[1]
            valid = a["dev_valid"] and b["dev_valid"]
            mis = a["dev"] - b["dev"] if valid else 0
            limit = self.params["misalign_max"]
            result["misalign"] = mis
            result["xv_status"] = {"valid": valid, "over": valid and abs(mis) > limit}
        return result


def _width(port):
    layout = port_layout(port)
    return layout.size if hasattr(layout, "size") else layout.width


def expected_ports(result, venues):
    """The raw bits the gateware's output ports show for a :meth:`SignalsModel.step` result
    (per-venue ports packed venue 0 first, as ``data.ArrayLayout`` does): ``LATENCY``
    cycles after its inputs, the ``IMB_OUTPUTS`` ``IMB_LATENCY`` cycles after them."""
    outs, ports = result["venues"], {}
    for port in (*VENUE_OUTPUTS, "sig_flags_set"):
        layout, width = port_layout(port), _width(port)
        key = {"sig_flags_set": "flags_set"}.get(port, port)
        elems = [pack(layout, o[key]) if isinstance(o[key], dict) else o[key] for o in outs]
        ports[port] = sum((e & ((1 << width) - 1)) << (i * width) for i, e in enumerate(elems))
    for port in IMB_OUTPUTS:
        ports[port] = result[port] & ((1 << _width(port)) - 1)
    if venues >= 2:
        ports["misalign"] = result["misalign"] & ((1 << _width("misalign")) - 1)
        ports["xv_status"] = pack(port_layout("xv_status"), result["xv_status"])
    return ports


def mismatches(got, result, venues, ports=None):
    """Differences between the gateware's raw output ports ``got`` and the model's
    ``result`` for the same cycle's inputs (every port of ``expected_ports``, or ``ports``)."""
    want = expected_ports(result, venues)
    return [f"{port}: got {got[port]:#x}, model {want[port]:#x}"
            for port in (ports or want) if got[port] != want[port]]


class BookStimulus:
    """Random but self-consistent book outputs for one venue: a random-walk mid with
    jumps, crossed and locked books, one-sided and empty books, depth cliffs and the
    extreme values of every field."""

    def __init__(self, rng):
        self.rng = rng
        self.mid = rng.randrange(1000, 2_000_000)

    def _log(self, bits, lo=0):
        return max(lo, int(2 ** self.rng.uniform(0, bits)) - 1)

    def _side(self, price):
        rng = self.rng
        qty = (1 << 31) - 1 if rng.random() < 0.03 else self._log(31, 1)
        extra = (1 << 36) - 1 - qty if rng.random() < 0.03 else self._log(34)
        return price, qty, qty + extra

    def next(self):
        rng, roll = self.rng, self.rng.random()
        if roll < 0.03:
            self.mid = rng.choice((1, 2, (1 << 32) - 2, rng.randrange(1, 1 << 32)))
        elif roll < 0.08:
            self.mid += rng.choice((-1, 1)) * rng.randrange(CLAMP_MAX // 2, 4 * CLAMP_MAX)
        else:
            self.mid += rng.randrange(-40, 41)
        self.mid = max(1, min((1 << 32) - 2, self.mid))
        half = rng.choice((0, 0, -1, -3)) if rng.random() < 0.05 else self._log(6)
        if rng.random() < 0.02:
            half = rng.randrange(CLAMP_MAX, 1 << 31)
        bid, ask = self.mid - half, self.mid + half + rng.randrange(2)
        sides = [self._side(bid) if 1 <= bid < (1 << 32) else (0, 0, 0),
                 self._side(ask) if 1 <= ask < (1 << 32) else (0, 0, 0)]
        roll = rng.random()
        if roll < 0.06:
            sides[rng.randrange(2)] = (0, 0, 0)        # one-sided
        elif roll < 0.08:
            sides = [(0, 0, 0), (0, 0, 0)]             # empty
        elif roll < 0.12:
            sides = [(p, q, q) for p, q, _ in sides]   # depth collapses to the touch
        (bid, vb, db), (ask, va, da) = sides
        return {"best_bid": bid, "best_ask": ask, "best_bid_qty": vb, "best_ask_qty": va,
                "bid_depth": db, "ask_depth": da, "valid": int(bid != 0 and ask != 0),
                "updated": 1}


def random_params(rng, venues=2, names=None):
    """Random raw values for some (default all) parameters: log-uniform over each
    register's declared range, sometimes its ends, rarely any raw value at all (the CSR does
    not range-check, so the gateware must be defined for every bit pattern)."""
    params = {}
    for name in names or (*VENUE_PARAMS, *CROSS_PARAMS):
        reg = REGISTERS[name]
        lo, hi = (to_fixed(reg, v) for v in reg.limits())

        def one(reg=reg, lo=lo, hi=hi):
            roll = rng.random()
            if roll < 0.1:
                return rng.choice((lo, hi))
            if roll < 0.13:
                return rng.randrange(1 << reg.fmt.width)
            return min(hi, lo + int(2 ** rng.uniform(0, (hi - lo + 1).bit_length())) - 1)

        params[name] = one() if name in CROSS_PARAMS else [one() for _ in range(venues)]
    return params
