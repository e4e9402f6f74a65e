"""Bit-accurate, cycle-exact reference model of the quote engine (hw/quoter.py, hw/ratelimit.py).

:func:`quote_targets` is the arithmetic: what every quote slot should rest, from one set of
inputs. :class:`QuoterModel` adds time: each cycle's targets use every input as it was
``DELAY[name]`` cycles before (the gateware's pipeline), and :class:`EmitterModel` turns the
targets into orders exactly as the gateware does, given the order stream's ``ready`` of each
cycle. After reset the targets equal :func:`quote_targets` once ``enable`` has been low for
``WARMUP`` cycles (the pipeline registers start at 0, the model's history does not).
"""

from collections import deque

from amaranth.hdl import Shape

from ..hw.layouts import OrderKind, encode_order
from ..hw.quoter import (
    CAP_MAX,
    DELAY,
    DEPTH_FRAC,
    DIV_PERIOD,
    FACTOR_FRAC,
    FACTOR_SHIFT,
    FLAGS,
    GAIN_SHIFT,
    LEV_FRAC,
    MUL_STAGES,
    OP_MAX,
    PARAMS,
    Q_BITS,
    RISK_FRAC,
    RISK_SHIFT,
    ROUND,
    SIG_SHIFT,
    SIGMA2_FRAC,
    SKEW_MAX,
    TAU_ONE,
    VENUE_INIT,
    VENUE_INPUTS,
    VOL_STEPS,
    check_build,
    lev_quotient,
)
from ..hw.ratelimit import (
    PRICE_BITS,
    SEQ_BITS,
    TOKEN_FRAC,
    TOKEN_ONE,
    TOKEN_RESET,
    Act,
    param_init,
    param_shape,
    slot_list,
)

__all__ = ["quote_targets", "EmitterModel", "CapDivider", "QuoterModel", "default_params",
           "idle_inputs", "WARMUP", "MARKET_FIELDS", "flags_word", "port_values", "market"]

WARMUP = max(DELAY.values()) + 1
MARKET_FIELDS = tuple(VENUE_INPUTS)
Q_MIN, Q_MAX = -(1 << (Q_BITS - 1)), (1 << (Q_BITS - 1)) - 1


def _clamp(value, lo, hi):
    return max(lo, min(hi, value))


def default_params():
    """Every quoter parameter at its register reset, raw (``level_gap``: a list)."""
    return {n: param_init(n) for n in PARAMS}


def idle_inputs(venues):
    """Inputs of a quiet cycle: empty books, neutral guard inputs, disarmed, no strobes."""
    inputs = {n: [VENUE_INIT.get(n, 0)] * venues for n in MARKET_FIELDS}
    return {**inputs, "fill": None, "tick": 0, "pull": 0, "enable": 0, "horizon": 0}


def market(venues, bid, ask, depth=1000, sigma2=0, regime=0):
    """Armed inputs with the same two-sided book on every venue: ``sigma2`` in ticks^2 of
    a + b (as the signal block reports it), depths in lots on both sides."""
    inputs = idle_inputs(venues)
    inputs.update({n: [value] * venues for n, value in (
        ("best_bid", bid), ("best_ask", ask), ("book_valid", 1), ("bid_depth", depth),
        ("ask_depth", depth), ("sigma2_fast", sigma2 << SIGMA2_FRAC),
        ("sigma2_slow", sigma2 << SIGMA2_FRAC), ("regime", regime))})
    inputs["enable"] = 1
    return inputs


def flags_word(flags):
    """The raw bits of a ``{flag: bool}`` dict in the :data:`FLAGS` layout."""
    return sum(int(flags[name]) << f.offset for name, f in FLAGS)


def port_values(inputs, params, venues):
    """Raw bits of every input port (``fill.valid`` style names for the fill members):
    per-venue inputs and array parameters packed element 0 first, signed ones masked."""
    ports = {}
    for name, shape in VENUE_INPUTS.items():
        width = Shape.cast(shape).width
        ports[name] = sum(e << (v * width) for v, e in enumerate(inputs[name][:venues]))
    fill = inputs.get("fill") or {"valid": 0, "venue": 0, "side": 0, "size": 0}
    ports.update({f"fill.{f}": int(fill[f]) for f in ("valid", "venue", "side", "size")})
    ports.update({n: int(inputs[n]) for n in ("tick", "pull", "enable", "horizon")})
    for name in PARAMS:
        width, value = Shape.cast(param_shape(name)).width, params[name]
        if isinstance(value, list):
            value = sum(e << (i * width // len(value)) for i, e in enumerate(value))
        ports[name] = value & ((1 << width) - 1)
    return ports


def _halvings(sig2, ref):
    """How many times the size halves: the first n with sig2 / 4^n <= ref (floor)."""
    return next((n for n in range(VOL_STEPS) if sig2 >> (2 * n) <= ref), VOL_STEPS)


def quote_targets(x, venues, levels):
    """Targets ``[(placed, price, size)]`` in slot order and the saturation flags.

    ``x`` maps every input, parameter and ``q`` (net position) to raw values (``q_limit``
    as a signed value or its two's-complement bits); per-venue inputs are lists. Unplaced
    targets read ``(False, 0, 0)``.
    """
    gain_w = (x["gamma"] * x["tau"]) >> GAIN_SHIFT
    gain = min(gain_w, OP_MAX)
    q = x["q"]
    flags = dict.fromkeys((name for name, _ in FLAGS), False)
    flags["gain"] = gain_w > OP_MAX
    offs = [sum(x["level_gap"][:j]) for j in range(levels)]
    limit = (x["q_limit"] + (1 << (Q_BITS - 1))) % (1 << Q_BITS) - (1 << (Q_BITS - 1))
    # |q| <= L_safe lev_lots too: min over venues of L_max lev_lots and the divider's quotient.
    limit = min(limit, *(min((lmax * x["lev_lots"]) >> LEV_FRAC, CAP_MAX, quot)
                         for lmax, quot in zip(x["leverage_max"][:venues], x["lev_quot"],
                                               strict=False)))
    room = (limit - q, limit + q)
    books, s4s = [], []
    for v in range(venues):
        def at(name, v=v):
            return x[name][v]
        f2, s2 = at("sigma2_fast"), at("sigma2_slow")
        sig2 = f2 if x["sigma_sel"] == 0 else s2 if x["sigma_sel"] == 1 else max(f2, s2)
        op_w = sig2 >> SIG_SHIFT
        risk_w = ((gain * min(op_w, OP_MAX)) >> RISK_SHIFT) << at("gamma_boost")
        risk = min(risk_w, OP_MAX)
        skew_p = q * risk
        skew = _clamp(skew_p, -SKEW_MAX, SKEW_MAX)
        spread = max(risk + x["kappa_term"], x["min_spread"] << RISK_FRAC)
        flags["sigma"] |= op_w > OP_MAX
        flags["risk"] |= risk_w > OP_MAX
        flags["skew"] |= skew != skew_p

        a, b = at("best_ask"), at("best_bid")
        mid2 = a + b
        bid = ((mid2 << RISK_FRAC) - 2 * skew - spread) >> ROUND
        ask = ((mid2 << RISK_FRAC) - 2 * skew + spread + (1 << ROUND) - 1) >> ROUND
        if not x["allow_cross"]:
            bid, ask = min(bid, a - 1), max(ask, b + 1)
        ok = bool(at("book_valid")) and a > b
        books.append((ok, bid, ask, (mid2 + 1) // 2 - x["max_dist"], mid2 // 2 + x["max_dist"]))

        dcap = x["depth_frac"] * min(at("bid_depth"), at("ask_depth"))
        s1 = min(dcap >> DEPTH_FRAC, x["base_size"])
        s2 = s1 >> _halvings(sig2, x["vol_ref"])
        f0 = x["regime_size"] >> (4 * at("regime")) & 0xF
        factor = (f0 * at("size_scale")) >> FACTOR_SHIFT
        s4s.append(min((s2 * factor) >> FACTOR_FRAC, x["size_cap"]))

    size_min = max(x["size_min"], 1)
    out = []
    for v, side, j in slot_list(venues, levels):
        rem = room[side] - (j * sum(s4s) + sum(s4s[:v]))
        s = s4s[v]
        size = min(s, rem) if s >= size_min and rem >= size_min else 0
        ok, bid, ask, lo, hi = books[v]
        price, near = (bid - offs[j], bid >= lo + offs[j]) if side == 0 else (
            ask + offs[j], ask <= hi - offs[j])
        placed = (ok and x["enable"] and not x["pull"] and size > 0 and near
                  and 1 <= price < 1 << PRICE_BITS)
        out.append((True, price, size) if placed else (False, 0, 0))
    return out, flags


class EmitterModel:
    """The order emitter (hw/ratelimit.py ``OrderEmitter``), one call of :meth:`step` per
    cycle; the attributes are its registers. A NEW/REPLACE that would cross one of our own
    quotes resting on the other side of its venue is held (:meth:`crosses`), so per venue
    our highest resting bid stays below our lowest resting ask after every order."""

    def __init__(self, slots):
        self.slots = slots
        n = len(slots)
        self.live, self.rest = [False] * n, [(0, 0)] * n
        self.act, self.act_ps = [Act.NONE] * n, [(0, 0)] * n
        self.just, self.timer = [False] * n, [0] * n
        self.tokens, self.sent, self.pend, self.seq = TOKEN_RESET, False, False, 0
        # The bucket's parameters as it uses them: those of the cycle before.
        self.rate, self.depth = param_init("rate_tokens"), param_init("rate_depth")
        self.valid, self.word = False, 0

    def crosses(self, k):
        """Whether slot ``k``'s pending price would cross a quote of ours resting on the
        other side of its venue: a bid at or above one of our asks, an ask at or below one of
        our bids. Such a NEW/REPLACE is held until the other side has moved away."""
        price, slot = self.act_ps[k][0], self.slots[k]
        return any(live and s.venue == slot.venue and s.side != slot.side
                   and (rest[0] <= price if slot.side == 0 else rest[0] >= price)
                   for s, live, rest in zip(self.slots, self.live, self.rest, strict=True))

    def eligible(self):
        return [a != Act.NONE and not j and (a == Act.CANCEL or (t == 0 and not self.crosses(k)))
                for k, (a, j, t) in enumerate(zip(self.act, self.just, self.timer, strict=True))]

    @property
    def rate_exceeded(self):
        return any(self.eligible()) and self.tokens < TOKEN_ONE

    def step(self, targets, pull, tick, ready, params):
        """Advance one clock edge; returns the order word taken this cycle, or None."""
        taken = self.word if self.valid and ready else None
        elig = self.eligible()
        cancels = [k for k, e in enumerate(elig) if e and self.act[k] == Act.CANCEL]
        pool = cancels or [k for k, e in enumerate(elig) if e]
        free = not self.valid or ready
        need_ca = self.pend or (pull and not self.sent)
        load_ca = need_ca and free
        load = not (pull or self.pend) and free and bool(pool) and self.tokens >= TOKEN_ONE

        new_act = []
        for (placed, price, size), live, rest in zip(targets, self.live, self.rest, strict=True):
            if placed:
                new_act.append(Act.NEW if not live else
                               Act.REPLACE if (price, size) != rest else Act.NONE)
            else:
                new_act.append(Act.CANCEL if live else Act.NONE)
        self.timer = [t - 1 if t else 0 for t in self.timer]
        self.just = [False] * len(self.slots)
        if load_ca:
            self.valid, self.word = True, encode_order(OrderKind.CANCEL_ALL, seq=self.seq)
            self.seq = (self.seq + 1) % (1 << SEQ_BITS)
            self.live = [False] * len(self.slots)
            self.timer = [0] * len(self.slots)
            self.just = [True] * len(self.slots)
        elif load:
            k = pool[0]
            kind, (price, size), slot = self.act[k], self.act_ps[k], self.slots[k]
            if kind == Act.CANCEL:
                price = size = 0
            self.valid = True
            self.word = encode_order(kind, venue=slot.venue, side=slot.side, slot=slot.level,
                                     seq=self.seq, price=price, size=size)
            self.seq = (self.seq + 1) % (1 << SEQ_BITS)
            self.live[k], self.rest[k] = kind != Act.CANCEL, self.act_ps[k]
            self.timer[k] = max(params["requote_cycles"] - 1, 0)
            self.just[k] = True
        elif ready:
            self.valid = False
        self.pend = need_ca and not load_ca
        self.sent = bool(pull) and (self.sent or load_ca)
        filled = self.tokens - (TOKEN_ONE if load else 0) + (self.rate if tick else 0)
        self.tokens = min(filled, self.depth << TOKEN_FRAC)
        self.rate, self.depth = params["rate_tokens"], params["rate_depth"]
        self.act = new_act
        self.act_ps = [(price, size) for _, price, size in targets]
        return taken


class CapDivider:
    """The L_safe divider per venue (hw/quoter.py ``_lev_cap``), one :meth:`step` a cycle:
    the products K lev_lots and sigma risk, ``MUL_STAGES`` cycles deep; every
    ``DIV_PERIOD`` cycles (phase 0) the result of the last run is published in ``quot`` and a
    run starts on the products then out of the pipeline."""

    def __init__(self, venues):
        self.quot = [CAP_MAX] * venues
        self.pending = [CAP_MAX] * venues
        zero = ([0] * venues, [0] * venues)
        self.products = deque([zero] * MUL_STAGES, maxlen=MUL_STAGES)   # (num, den), oldest first
        self.phase = 0

    def step(self, inputs, lev_lots):
        if self.phase == 0:
            self.quot = self.pending
            self.pending = [lev_quotient(n, d) for n, d in zip(*self.products[0], strict=True)]
        k, s, r = (inputs[n][:len(self.quot)] for n in ("lsafe_k", "sigma", "liquidity_risk"))
        self.products.append(([x * lev_lots for x in k],
                              [a * b for a, b in zip(s, r, strict=True)]))
        self.phase = (self.phase + 1) % DIV_PERIOD


class QuoterModel:
    """The whole quoter, cycle by cycle: ``params`` holds the live parameters (raw bits)."""

    def __init__(self, venues=1, levels=1):
        self.venues, self.levels = check_build(venues, levels)
        self.slots = slot_list(venues, levels)
        self.params = default_params()
        self.emitter = EmitterModel(self.slots)
        self.position, self.position_net = [0] * venues, 0
        self.history = deque(maxlen=max(DELAY.values()))    # newest (last cycle) first
        self.targets = [(False, 0, 0)] * len(self.slots)
        self.flags = dict.fromkeys((name for name, _ in FLAGS), False)
        self.position_sat = False
        self.divider = CapDivider(venues)
        self.tau_left = self.params["tau"]

    def outputs(self):
        """The output ports in the current cycle (all registered: no input affects them)."""
        e = self.emitter
        return {"valid": e.valid, "payload": e.word, "rate_exceeded": e.rate_exceeded,
                "quote_flags_set": flags_word({**self.flags, "position": self.position_sat}),
                "position": list(self.position), "position_net": self.position_net,
                "tau_left": self.tau_left}

    def _fill(self, fill):
        self.position_sat = False
        if not fill or not fill["valid"] or fill["venue"] >= self.venues:
            return
        delta = -fill["size"] if fill["side"] else fill["size"]
        v = fill["venue"]
        venue, net = self.position[v] + delta, self.position_net + delta
        self.position[v], self.position_net = _clamp(venue, Q_MIN, Q_MAX), _clamp(net, Q_MIN, Q_MAX)
        self.position_sat = not (Q_MIN <= venue <= Q_MAX and Q_MIN <= net <= Q_MAX)

    def step(self, inputs, ready=True):
        """One cycle: ``inputs`` as :func:`idle_inputs` returns; ``ready`` of ``orders``.

        Returns the order word transferred in this cycle, or None.
        """
        # Copies: callers may change their lists in place while the history still needs them.
        record = {k: list(v) if isinstance(v, list) else v
                  for k, v in {**self.params, **inputs}.items()}
        record["q"] = self.position_net
        record["lev_quot"] = self.divider.quot
        if self.params["tau_mode"] & 1:
            record["tau"] = self.tau_left      # the tau the quotes use
        taken = self.emitter.step(self.targets, inputs["pull"], inputs["tick"], ready,
                                  self.params)
        self._fill(inputs.get("fill"))
        self.divider.step(inputs, self.params["lev_lots"])
        if inputs.get("horizon"):
            self.tau_left = self.params["tau"]
        elif inputs["tick"]:
            self.tau_left = max(self.tau_left - TAU_ONE, 0)
        self.history.appendleft(record)
        last = len(self.history) - 1
        view = {name: self.history[min(d - 1, last)][name] for name, d in DELAY.items()}
        self.targets, self.flags = quote_targets(view, self.venues, self.levels)
        return taken

