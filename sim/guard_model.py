"""Cycle-accurate reference model of the withdraw guard (hw/guard.py) in plain Python ints.

:meth:`GuardModel.step` takes one cycle's inputs (raw port bits; per-venue ports as lists)
with the live parameters in ``params``, returns the outputs of that same cycle and advances
one clock edge. The trigger stage (conditions, enable mask, warnings, the ``arm`` and
``kill`` commands) reaches the latch and the outputs ``LATENCY`` cycles later.
:class:`Stimulus` makes random cycles for the benches that compare the two.
"""

from amaranth.hdl import Shape

from ..hw.guard import (
    AGE_MAX,
    ALWAYS,
    COMMANDS,
    GLOBAL_INPUTS,
    GLOBAL_PARAMS,
    LATENCY,
    MARGIN_FRAC,
    MARGIN_LATENCY,
    REASON,
    REASONS,
    SIZE_ONE,
    STATE,
    VENUE_INPUTS,
    VENUE_PARAMS,
    WARNINGS,
    port_shape,
)
from ..hw.registers import REGISTERS, to_fixed
from ..hw.signals import REGIME, STATUS, XV_STATUS

__all__ = ["GuardModel", "Stimulus", "default_params", "default_inputs", "pack", "unpack",
           "bit"]

_STATUS_BITS = tuple((1 << REASON[r.name], STATUS[r.status].offset) for r in REASONS
                     if r.status)
_VOL = REGIME["vol"].offset
_XV_OVER = XV_STATUS["over"].offset
_STATE = {name: field.offset for name, field in STATE}


def bit(name):
    """The mask of reason ``name`` in pull_reasons / pull_enable / pull_first."""
    return 1 << REASON[name]


def _signed(raw, width):
    return raw - (1 << width) if raw >> (width - 1) else raw


def default_params(venues=2):
    """Every guard parameter at its register reset, raw; per-venue ones as lists."""
    params = {n: to_fixed(REGISTERS[n], REGISTERS[n].reset) for n in GLOBAL_PARAMS}
    params.update({n: [to_fixed(REGISTERS[n], REGISTERS[n].reset)] * venues
                   for n in VENUE_PARAMS})
    return params


def default_inputs(venues=2):
    """All inputs 0 (an empty, synced-low book), as the gateware sees them after reset."""
    inputs = dict.fromkeys((*COMMANDS, *GLOBAL_INPUTS, "xv_status"), 0)
    inputs.update({n: [0] * venues for n in VENUE_INPUTS})
    return inputs


def _width(name):
    return Shape.cast(port_shape(name)).width


def pack(name, values):
    """Raw bits of port ``name``: one value, or a per-venue list packed venue 0 first."""
    if not isinstance(values, list):
        return values
    width = _width(name)
    mask = (1 << width) - 1
    return sum((v & mask) << (i * width) for i, v in enumerate(values))


def unpack(name, raw, venues):
    """The per-venue list of port ``name``'s values from its raw bits."""
    width = _width(name)
    return [raw >> (i * width) & ((1 << width) - 1) for i in range(venues)]


class GuardModel:
    """The guard's state machine: the pull latch, holds, deadlines, counters, cool-down."""

    def __init__(self, venues=2):
        if not (isinstance(venues, int) and not isinstance(venues, bool) and 1 <= venues <= 16):
            raise ValueError(f"venues must be an integer 1..16, not {venues!r}")
        self.venues = venues
        self.params = default_params(venues)
        self.reset()

    def reset(self):
        self.latched, self.hold_reset, self.hold_kill, self.refused = True, True, False, False
        self.quiet = self.pull_count = self.refused_count = self.pull_cycle = 0
        self.pull_first = bit("reset")
        self.heartbeat_age, self.stale_age = 0, [0] * self.venues
        self.margin_low = self.margin_warn = False
        self.margin = [(False, False)] * (MARGIN_LATENCY - 1)   # the margin pipeline
        # The trigger stage's registers: LATENCY stages, as after reset.
        self.stages = [{"live": 0, "venues_set": 0, "arm": False, "kill": False,
                        "margin_warn": False, "sizes": [SIZE_ONE] * self.venues,
                        "boosts": [0] * self.venues} for _ in range(LATENCY)]

    def _venue_conditions(self, inp, v):
        """Venue ``v``'s raw condition bits (before the enable mask)."""
        p, c = self.params, 0
        bid, ask = inp["best_bid"][v], inp["best_ask"][v]
        if inp["book_valid"][v]:
            c |= bit("crossed") if bid >= ask else 0
            c |= bit("spread") if ask - bid > p["spread_max"][v] else 0
        low_bid = inp["bid_depth"][v] < p["depth_min"][v]
        low_ask = inp["ask_depth"][v] < p["depth_min"][v]
        c |= (bit("depth_bid") if low_bid else 0) | (bit("depth_ask") if low_ask else 0)
        c |= bit("depth_both") if low_bid and low_ask else 0
        c |= bit("stale") if self.stale_age[v] >= p["stale_timeout"][v] else 0
        c |= (0 if inp["synced"][v] else bit("gap")) | (0 if inp["exact"][v] else
                                                          bit("capacity"))
        c |= bit("vol_fast") if inp["sigma2_fast"][v] > p["vol_fast_max"][v] else 0
        c |= bit("vol_slow") if inp["sigma2_slow"][v] > p["vol_slow_max"][v] else 0
        status = inp["sig_status"][v]
        for mask, offset in _STATUS_BITS:
            c |= mask if status >> offset & 1 else 0
        return c

    def _warnings(self, inp):
        """``(size_scale, gamma_boost)`` lists: the smallest size, the largest boost."""
        sizes, boosts = [], []
        for v in range(self.venues):
            vol = inp["regime"][v] >> _VOL & 3
            size, boost = SIZE_ONE, 0
            for name, regime in WARNINGS:
                if (self.margin_warn if regime is None else vol == regime.value):
                    size = min(size, self.params[f"{name}_size"])
                    boost = max(boost, self.params[f"{name}_gamma"])
            sizes.append(size)
            boosts.append(boost)
        return sizes, boosts

    def _trigger_stage(self, inp):
        """The trigger stage's results for this cycle's inputs and parameters."""
        p, width = self.params, GLOBAL_INPUTS["inventory"].width
        enabled = p["pull_enable"] | ALWAYS
        cond = bit("kill") if inp["kill"] else 0
        cond |= bit("heartbeat") if self.heartbeat_age >= p["heartbeat_timeout"] else 0
        cond |= bit("rate") if inp["rate_exceeded"] else 0
        cond |= bit("inventory") if abs(_signed(inp["inventory"], width)) > _signed(
            inp["q_limit"], width) else 0
        cond |= bit("margin") if self.margin_low else 0
        if self.venues >= 2:
            cond |= bit("misalign") if inp["xv_status"] >> _XV_OVER & 1 else 0
        venues_set = 0
        for v in range(self.venues):
            c = self._venue_conditions(inp, v)
            cond |= c
            venues_set |= (1 << v) if c & enabled else 0
        sizes, boosts = self._warnings(inp)
        return {"live": cond & enabled, "venues_set": venues_set, "arm": bool(inp["arm"]),
                "kill": bool(inp["kill"]), "margin_warn": self.margin_warn, "sizes": sizes,
                "boosts": boosts}

    def step(self, inp):
        """One cycle: the outputs for inputs ``inp`` (see :func:`default_inputs`), then the
        clock edge."""
        p = self.params
        self.stages.append(self._trigger_stage(inp))
        s = self.stages.pop(0)        # the trigger stage of LATENCY cycles ago
        live = s["live"]
        active = live != 0
        hold = self.hold_reset or self.hold_kill
        accept, refuse = s["arm"] and not active, s["arm"] and active
        cooling = bool(p["auto_arm"] & 1) and self.latched and not hold and not active
        auto = cooling and self.quiet >= p["cooldown"]
        pull = self.latched or active
        state = {"pulled": pull, "hold": hold, "active": active, "refused": self.refused,
                 "cooling": cooling, "margin_warn": s["margin_warn"]}
        out = {"pull": int(pull),
               "pull_reasons_set": live | (bit("reset") if self.hold_reset else 0)
               | (bit("kill") if self.hold_kill else 0),
               "pull_venues_set": s["venues_set"],
               "pull_state": sum(int(bool(x)) << _STATE[k] for k, x in state.items()),
               "pull_first": self.pull_first, "pull_count": self.pull_count,
               "refused_count": self.refused_count, "pull_cycle": self.pull_cycle,
               "size_scale": s["sizes"], "gamma_boost": s["boosts"]}

        # The clock edge.
        if not self.latched and active:
            self.pull_count = (self.pull_count + 1) & 0xFFFF_FFFF
            self.pull_cycle, self.pull_first = inp["cycle"], live
        if refuse:
            self.refused_count = (self.refused_count + 1) & 0xFFFF_FFFF
        self.refused = True if refuse else False if accept else self.refused
        self.latched = active or (self.latched and not accept and not auto)
        self.hold_reset = self.hold_reset and not accept
        self.hold_kill = s["kill"] or (self.hold_kill and not accept)
        self.quiet = 0 if active else min(self.quiet + 1, AGE_MAX)
        self.heartbeat_age = 0 if inp["heartbeat"] else min(self.heartbeat_age + 1, AGE_MAX)
        self.stale_age = [0 if inp["msg"][v] else min(age + 1, AGE_MAX)
                          for v, age in enumerate(self.stale_age)]
        equity = p["equity"] << MARGIN_FRAC
        self.margin.append((equity < p["margin_pull"] * p["maint_margin"],
                            equity < p["margin_warn"] * p["maint_margin"]))
        self.margin_low, self.margin_warn = self.margin.pop(0)
        return out


# Fault sources the stimulus switches on and off: per venue, then global.
_VENUE_FAULTS = ("crossed", "spread", "one_sided", "depth_bid", "depth_ask", "depth_both", "gap",
                 "capacity", "quiet_feed", "vol_fast", "vol_slow",
                 *(r.name for r in REASONS if r.status))
_GLOBAL_FAULTS = ("inventory", "misalign", "margin", "heartbeat_dead")
_PRICE_TOP = 1 << VENUE_INPUTS["best_bid"].width
_DEPTH_TOP = 1 << VENUE_INPUTS["bid_depth"].width
_SIGMA2_TOP = 1 << VENUE_INPUTS["sigma2_fast"].width
_Q_WIDTH = GLOBAL_INPUTS["inventory"].width


class Stimulus:
    """Random guard inputs and parameter writes for the model-checked benches.

    Calm markets with trigger episodes: each fault (a venue's crossed book, a dead feed, an
    imbalance bit, margin under its band, ...) switches on rarely and off quickly, so every
    trigger fires, all of them are often clear at once, and arms are both accepted and
    refused. Values sit on the compare edges often. :meth:`next` mutates ``params`` now and
    then and returns the next cycle's inputs. ``dirty`` collects the names of the inputs that
    changed and ``params_dirty`` says the parameters did; the user resets them.
    A fault starts with probability ``start_rate`` per cycle and lasts ``1/end_rate`` cycles
    on average; a random venue's calm values are redrawn now and then.
    """

    def __init__(self, rng, venues=2, start_rate=0.005, end_rate=0.02):
        self.rng, self.venues = rng, venues
        self.start_rate, self.end_rate = start_rate, end_rate
        self.faults = set()
        self.inputs = default_inputs(venues)
        self.due = {"heartbeat": 1, "msg": [1] * venues}
        self.dirty = set(self.inputs)
        self.params_dirty = True

    def randomize_params(self, params):
        rng, venues = self.rng, self.venues
        full = (1 << len(REASONS)) - 1
        params.update(
            pull_enable=full if rng.random() < 0.7 else rng.randrange(full + 1),
            auto_arm=rng.randrange(2), cooldown=rng.choice((0, 1, rng.randrange(40))),
            heartbeat_timeout=rng.randrange(1, 80), margin_pull=rng.randrange(1, 1 << 13),
            margin_warn=rng.randrange(1 << 14), equity=rng.randrange(1 << 20),
            maint_margin=rng.choice((0, rng.randrange(1 << 20))))
        for name, _ in WARNINGS:
            params[f"{name}_size"] = rng.choice((0, SIZE_ONE, rng.randrange(1 << 16)))
            params[f"{name}_gamma"] = rng.randrange(8)
        for name, top in (("spread_max", _PRICE_TOP), ("depth_min", 1000),
                          ("vol_fast_max", _SIGMA2_TOP), ("vol_slow_max", _SIGMA2_TOP)):
            params[name] = [rng.choice((1, top - 1, rng.randrange(1, top)))
                            for _ in range(venues)]
        params["stale_timeout"] = [rng.randrange(2, 80) for _ in range(venues)]
        self.params_dirty = True
        for v in range(venues):
            self._render(params, v)
        self._render_global(params)

    def _render(self, p, v):
        """Venue ``v``'s book and signal inputs from its faults: edges likely."""
        rng, f, inp = self.rng, self.faults, self.inputs
        on = {name for name, venue in f if venue == v}
        smax = p["spread_max"][v]
        if "crossed" in on:
            spread = -rng.choice((0, 1, rng.randrange(1000)))
        elif "spread" in on and smax < _PRICE_TOP - 1001:
            spread = smax + rng.choice((1, rng.randrange(1, 1000)))
        else:
            spread = rng.choice((1, max(1, smax), rng.randrange(1, max(2, smax))))
        spread = min(spread, _PRICE_TOP - 1001)        # the ask fits its 32 bits
        bid = rng.randrange(1000, _PRICE_TOP - max(spread, 0))
        inp["best_bid"][v], inp["best_ask"][v] = bid, bid + spread
        inp["book_valid"][v] = int("one_sided" not in on)
        dmin = p["depth_min"][v]
        for side in ("bid", "ask"):
            low = bool(on & {f"depth_{side}", "depth_both"}) and dmin > 0
            inp[f"{side}_depth"][v] = (rng.choice((0, dmin - 1, rng.randrange(dmin))) if low
                                       else min(_DEPTH_TOP - 1, dmin + rng.choice((0, 1, 500))))
        inp["synced"][v], inp["exact"][v] = int("gap" not in on), int("capacity" not in on)
        for name in ("fast", "slow"):
            top = p[f"vol_{name}_max"][v]
            over = f"vol_{name}" in on and top < _SIGMA2_TOP - 1
            inp[f"sigma2_{name}"][v] = (rng.randrange(top + 1, _SIGMA2_TOP) if over
                                        else rng.choice((top, rng.randrange(top + 1))))
        status = rng.randrange(1 << STATUS.size)      # bits the guard ignores stay random
        for r in REASONS:
            if r.status:
                off = STATUS[r.status].offset
                status = status & ~(1 << off) | (int(r.name in on) << off)
        inp["sig_status"][v], inp["regime"][v] = status, rng.randrange(1 << REGIME.size)
        self.dirty.update(VENUE_INPUTS)

    def _render_global(self, p):
        rng, inp, on = self.rng, self.inputs, {n for n, v in self.faults if v is None}
        limit = rng.choice((0, 1, rng.randrange(1 << (_Q_WIDTH - 1))))
        if "inventory" in on:
            q = rng.choice((limit + 1, rng.randrange(limit + 1, 1 << (_Q_WIDTH - 1)),
                            -(1 << (_Q_WIDTH - 1))))
            q = -q if rng.random() < 0.5 and q > 0 else q
        else:
            q = rng.choice((limit, -limit, rng.randrange(-limit, limit + 1)))
        mask = (1 << _Q_WIDTH) - 1
        inp["inventory"], inp["q_limit"] = q & mask, limit
        inp["xv_status"] = rng.randrange(2) | int("misalign" in on) << _XV_OVER
        edge = -(-p["margin_pull"] * p["maint_margin"] >> MARGIN_FRAC)  # least calm equity
        if "margin" in on and edge:
            p["equity"] = rng.choice((0, edge - 1, rng.randrange(edge)))
        elif p["equity"] < edge or rng.random() < 0.2:
            p["equity"] = edge
        self.params_dirty = True
        self.dirty.update(("inventory", "q_limit", "xv_status"))

    def _strobe(self, key, v, timeout, dead):
        """A strobe at most ``timeout`` cycles after the previous one, unless ``dead``."""
        due = self.due[key] if v is None else self.due[key][v]
        fire = not dead and due <= 1
        due = self.rng.randrange(1, max(2, timeout + 1)) if fire else due - (not dead)
        if v is None:
            self.due[key] = due
        else:
            self.due[key][v] = due
        return int(fire)

    def next(self, params):
        rng, inp = self.rng, self.inputs
        self.dirty.update(("arm", "kill", "rate_exceeded", "heartbeat", "msg", "cycle"))
        if rng.random() < 0.002:
            self.randomize_params(params)
        changed = {key for key in self.faults if rng.random() < self.end_rate}
        self.faults -= changed
        if rng.random() < self.start_rate:
            v = rng.randrange(self.venues + 1)
            key = ((rng.choice(_VENUE_FAULTS), v) if v < self.venues
                   else (rng.choice(_GLOBAL_FAULTS), None))
            self.faults.add(key)
            changed.add(key)
        if rng.random() < 0.02:
            changed.add((None, rng.randrange(self.venues)))
        for v in {v for _, v in changed}:
            if v is None:
                self._render_global(params)
            else:
                self._render(params, v)
        dead = {name for name, v in self.faults if v is None}
        inp["heartbeat"] = self._strobe("heartbeat", None, params["heartbeat_timeout"],
                                        "heartbeat_dead" in dead)
        inp["msg"] = [self._strobe("msg", v, params["stale_timeout"][v],
                                   ("quiet_feed", v) in self.faults) for v in range(self.venues)]
        inp["arm"] = int(rng.random() < 0.02)
        inp["kill"] = int(rng.random() < 0.0005)
        inp["rate_exceeded"] = int(rng.random() < 0.001)
        inp["cycle"] += 1
        return inp
