"""The quote engine: Avellaneda-Stoikov quotes and sizes from book, signals and own fills."""

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .layouts import order_layout
from .pipeline import DSP_BITS, delay, partials, replicas
from .ratelimit import (
    EMITTER_PARAMS,
    PRICE_BITS,
    SIZE_BITS,
    TARGET,
    OrderEmitter,
    param_init,
    param_shape,
    slot_list,
)
from .registers import REGISTERS, to_fixed
from .signals import DEPTH_BITS, REGIME

__all__ = ["FILL", "FLAGS", "PARAMS", "VENUE_INPUTS", "DELAY", "LATENCY", "VENUES_MAX",
           "LEVELS_MAX", "Q_BITS", "OP_BITS", "OP_MAX", "SIGMA2_FRAC", "SIG_SHIFT", "GAIN_SHIFT",
           "RISK_SHIFT", "RISK_FRAC", "ROUND", "SKEW_MAX", "DEPTH_FRAC", "REGIME_FRAC",
           "SCALE_ONE", "FACTOR_SHIFT", "FACTOR_FRAC", "VOL_STEPS", "TAU_ONE", "LEV_FRAC",
           "LEV_SHIFT", "CAP_MAX", "DIV_BITS", "DIV_PERIOD", "MUL_STAGES", "lev_quotient",
           "check_build", "Quoter"]

VENUES_MAX = 4
LEVELS_MAX = REGISTERS["level_gap"].count + 1
Q_BITS = REGISTERS["position_net"].fmt.width
SIGMA2_FRAC = REGISTERS["sigma2_fast"].fmt.frac_bits
OP_BITS = 36                     # risk-path multiplier operands: two 18-bit DSP inputs each
MUL_STAGES = 3                   # a product wider than one tile: partials, middle sum, sum
OP_MAX = (1 << OP_BITS) - 1
VAR_FRAC = 12                    # the mid's sigma2 operand: UQ24.12 ticks^2
GAIN_FRAC = 24                   # G = gamma tau: UQ12.24
RISK_FRAC = REGISTERS["kappa_term"].fmt.frac_bits      # risk, spread, skew: kappa's format
# sigma2 is the variance of a + b = 2 s: the mid's is a quarter of it, i.e. 2 more fraction bits.
SIG_SHIFT = SIGMA2_FRAC + 2 - VAR_FRAC
GAIN_SHIFT = REGISTERS["gamma"].fmt.frac_bits + REGISTERS["tau"].fmt.frac_bits - GAIN_FRAC
RISK_SHIFT = GAIN_FRAC + VAR_FRAC - RISK_FRAC
SKEW_BITS = 50                   # |q r| saturates at 2^33 ticks: beyond any 32-bit price
SKEW_MAX = (1 << (SKEW_BITS - 1)) - 1
ROUND = RISK_FRAC + 1            # prices carry one more fraction bit: the half spread
WIDE = PRICE_BITS + 4            # rounded prices before the range check, signed
DEPTH_FRAC = REGISTERS["depth_frac"].fmt.frac_bits
REGIME_FRAC = 3                  # regime_size entries are eighths
SCALE_FRAC = 15                  # size_scale: UQ1.15
SCALE_ONE = 1 << SCALE_FRAC
FACTOR_FRAC = 16                 # the size factor: UQ2.16, one 18-bit DSP input
FACTOR_SHIFT = REGIME_FRAC + SCALE_FRAC - FACTOR_FRAC
BOOST_BITS = 3                   # gamma_boost: log2 of the gamma multiplier, 0..7
BOOST_MAX = (1 << BOOST_BITS) - 1
VOL_STEPS = 16                   # at most 16 halvings of the size for volatility
TAU_ONE = 1 << REGISTERS["tau"].fmt.frac_bits          # one TICK off tau_left per TICK
# The L_safe position cap: floor(L_max lev_lots) and floor(K lev_lots / (sigma risk)) lots.
LEV_FRAC = REGISTERS["leverage_max"].fmt.frac_bits     # L_max lev_lots: UQ40.8
# K lev_lots (UQ56.8) over sigma risk (UQ25.16): the dividend gains this many fraction bits.
LEV_SHIFT = (REGISTERS["sigma"].fmt.frac_bits + REGISTERS["liquidity_risk"].fmt.frac_bits
             - REGISTERS["lsafe_k"].fmt.frac_bits)
DIV_BITS = Q_BITS - 1            # quotient bits: a cap fits the positive range of q
CAP_MAX = (1 << DIV_BITS) - 1    # no cap (also: sigma risk = 0, or a quotient that big)
DIV_PERIOD = DIV_BITS + 1        # the serial divider: load, then one bit per cycle

PARAMS = ("gamma", "tau", "tau_mode", "kappa_term", "q_limit", "sigma_sel", "min_spread",
          "allow_cross", "max_dist", "level_gap", "base_size", "depth_frac", "vol_ref",
          "regime_size", "size_cap", "size_min", "lev_lots", *EMITTER_PARAMS)
VENUE_INPUTS = {"best_bid": unsigned(PRICE_BITS), "best_ask": unsigned(PRICE_BITS),
                "book_valid": unsigned(1), "bid_depth": unsigned(DEPTH_BITS),
                "ask_depth": unsigned(DEPTH_BITS),
                "sigma2_fast": unsigned(REGISTERS["sigma2_fast"].fmt.width),
                "sigma2_slow": unsigned(REGISTERS["sigma2_slow"].fmt.width),
                "regime": REGIME, "size_scale": unsigned(16), "gamma_boost": unsigned(BOOST_BITS),
                "sigma": unsigned(REGISTERS["sigma"].fmt.width),
                # the signal block's L_safe registers, per venue
                **{n: unsigned(REGISTERS[n].fmt.width)
                   for n in ("leverage_max", "lsafe_k", "liquidity_risk")}}
# Neutral guard inputs (scale 1.0, boost 0); the L_safe registers at their resets.
VENUE_INIT = {"size_scale": SCALE_ONE, **{n: to_fixed(REGISTERS[n], REGISTERS[n].reset)
                                          for n in ("leverage_max", "lsafe_k", "liquidity_risk")}}
FILL = wiring.Signature({"valid": Out(1), "venue": Out(8), "side": Out(1),
                         "size": Out(SIZE_BITS)})
FLAGS = data.StructLayout(dict.fromkeys(("sigma", "gain", "risk", "skew", "position"), 1))
assert FLAGS.size == REGISTERS["quote_flags"].fmt.width

# Pipeline depth per input: the targets of cycle c use each input as it was in cycle
# c - DELAY[name] (q: the net position register). Orders follow the targets by LATENCY.
# tau is the tau the quotes use (tau_left when tau_mode is 1); lev_quot the divider's
# registered K lev_lots / (sigma risk) per venue (sigma, lsafe_k, liquidity_risk and lev_lots
# reach it through the serial divider: docs/quoter.md).
DELAY = {"best_bid": 4, "best_ask": 4, "book_valid": 4, "bid_depth": 14, "ask_depth": 14,
         "sigma2_fast": 13, "sigma2_slow": 13, "sigma_sel": 13, "regime": 11, "regime_size": 11,
         "depth_frac": 13, "gamma": 17, "tau": 17, "tau_mode": 17, "base_size": 10,
         "vol_ref": 11, "size_scale": 10, "gamma_boost": 9, "q": 9, "kappa_term": 6,
         "leverage_max": 10, "lev_lots": 10, "min_spread": 5, "size_cap": 5, "lev_quot": 6,
         "q_limit": 4, "max_dist": 4, "level_gap": 3, "allow_cross": 2, "size_min": 3,
         "enable": 1, "pull": 1}
LATENCY = 2        # targets -> first cycle the order is valid on `orders` (stage A, load)


def check_build(venues, levels):
    """``(venues, levels)`` if both are integers in range (1..VENUES_MAX, 1..LEVELS_MAX),
    else ``ValueError`` saying which is wrong: the gateware's and the model's one check."""
    for name, value, top in (("venues", venues, VENUES_MAX), ("levels", levels, LEVELS_MAX)):
        if not (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= top):
            raise ValueError(f"{name} must be an integer 1..{top}, not {value!r}")
    return venues, levels


def lev_quotient(num, den):
    """The divider's result: ``floor(num 2^LEV_SHIFT / den)`` lots, ``CAP_MAX`` when that
    does not fit ``DIV_BITS`` bits (``den`` = 0 included). ``num`` = K lev_lots (raw
    UQ56.8), ``den`` = sigma liquidity_risk (raw UQ25.16)."""
    wide = num << LEV_SHIFT
    return CAP_MAX if wide >= den << DIV_BITS else wide // den


def _min(a, b):
    return Mux(a < b, a, b)


def _product(m, a, b, name):
    """``a b`` (unsigned, each at most two DSP operands wide) in ``MUL_STAGES`` registered
    stages: the 18 x 18 partial products (one MULT18X18D tile each), the sum of the middle
    ones, then the whole sum, so no cycle holds a DSP and a carry chain, nor two chains."""
    weights = partials(m, a.as_unsigned(), b.as_unsigned(), f"{name}_pp")
    assert len(weights) > 1 and max(weights) <= 2 * DSP_BITS, f"{name}: not a two-stage product"
    # The lowest and the highest partial products do not overlap: one word, one add.
    high = weights.get(2 * DSP_BITS)
    ends = delay(m, Cat(weights[0][0], high[0]) if high else weights[0][0], f"{name}_ends")
    middle = delay(m, sum(weights[DSP_BITS], 0), f"{name}_mid")
    return delay(m, ends + (middle << DSP_BITS), name, unsigned(len(a) + len(b)))


class Quoter(wiring.Component):
    """Quotes ``levels`` price levels per side on each of ``venues`` venues.

    Ports (per-venue ones are ``data.ArrayLayout`` arrays when ``venues > 1``, as the
    signal block's and the guard's):

    - per venue: ``best_bid``, ``best_ask`` (ticks), ``book_valid``, ``bid_depth``,
      ``ask_depth`` (lots), ``sigma2_fast``, ``sigma2_slow`` (UQ34.16 ticks^2 of a + b),
      ``regime``, and from the guard ``size_scale`` (UQ1.15, init 1.0) and ``gamma_boost``
      (log2 of a gamma multiplier, 0..7, init 0).
    - ``fill`` (:data:`FILL`): own fill strobe with venue, side (0: our bid was hit, q +=
      size) and size (lots). ``tick``: one TICK (the rate bucket's clock). ``pull`` (level,
      from the guard) and ``enable`` (armed).
    - parameters named after their registers (:data:`PARAMS`, raw bits, init = reset).
    - ``orders``: the order stream (:class:`~obcore.hw.ratelimit.OrderEmitter`: orders only
      on change, and never one that crosses our own quotes resting on its venue);
      ``rate_exceeded``: strobe; ``position`` (per venue) and
      ``position_net`` (S32 lots); ``quote_flags_set`` (:data:`FLAGS` strobes).

    ``obcore.sim.quoter_model.QuoterModel`` is the cycle-exact spec; docs/quoter.md.
    """

    def __init__(self, venues=1, levels=1):
        self._venues, self._levels = check_build(venues, levels)

        def each(shape):
            return shape if venues == 1 else data.ArrayLayout(shape, venues)

        members = {}
        for name, shape in VENUE_INPUTS.items():
            init = VENUE_INIT.get(name)
            if init is not None and venues > 1:
                init = [init] * venues
            members[name] = In(each(shape), init=init)
        members.update({"fill": In(FILL), "tick": In(1), "pull": In(1), "enable": In(1),
                        "horizon": In(1)})
        members.update({n: In(param_shape(n), init=param_init(n)) for n in PARAMS})
        members.update({"orders": Out(stream.Signature(order_layout)), "rate_exceeded": Out(1),
                        "position": Out(each(signed(Q_BITS))),
                        "position_net": Out(signed(Q_BITS)), "quote_flags_set": Out(FLAGS),
                        "tau_left": Out(param_shape("tau"), init=param_init("tau"))})
        super().__init__(members)

    @property
    def venues(self):
        return self._venues

    @property
    def levels(self):
        return self._levels

    @property
    def slots(self):
        return slot_list(self._venues, self._levels)

    def _at(self, name, v):
        port = getattr(self, name)
        return port if self._venues == 1 else port[v]

    def _inventory(self, m):
        """Saturating position registers per venue and net; returns the saturation strobe."""
        fill, lo, hi = self.fill, -(1 << (Q_BITS - 1)), (1 << (Q_BITS - 1)) - 1
        ours = fill.valid & (fill.venue < self._venues)
        hit = Signal(name="position_sat")

        def add(q, when):
            # Both sums at once, each saturated on the only side it can leave the range by,
            # and the side picks one: q +- size fits Q_BITS + 2 bits, and it is in range
            # when the bits from the sign bit of Q_BITS up all agree.
            up, down = q + fill.size, q - fill.size
            over = ~up[-1] & (up[Q_BITS - 1:-1] != 0)
            under = down[-1] & ~down[Q_BITS - 1:-1].all()
            with m.If(when):
                m.d.sync += q.eq(Mux(fill.side, Mux(under, lo, down), Mux(over, hi, up)))
            return when & Mux(fill.side, under, over)

        sats = [add(self._at("position", v), ours & (fill.venue == v))
                for v in range(self._venues)]
        sats.append(add(self.position_net, ours))
        m.d.sync += hit.eq(Cat(*sats).any())
        return hit

    # Stage comments "dN": the register is loaded N cycles before the targets (d1), the
    # same N as the DELAY of the inputs consumed there.

    def _risk(self, m, v, gain, qmag, qneg):
        """Venue ``v``'s risk path: r = gamma sigma2 tau, the skew |q| r (``qneg``: q < 0)
        and the spread, as the price offsets (d13 .. d4). Returns the offsets, sigma2 (for
        the size path) and the saturations."""
        p, at = self, lambda name: self._at(name, v)
        fast, slow, sel = at("sigma2_fast"), at("sigma2_slow"), p.sigma_sel
        faster = fast > slow

        def choose(f, s):
            return Mux(sel == 0, f, Mux(sel == 1, s, Mux(faster, f, s)))
        # Each candidate's saturation beside the compare, picked with it.
        sig2 = Signal.like(fast, name=f"sig2_{v}")
        sat_sig = Signal(name=f"sat_sig_{v}")
        m.d.comb += [sig2.eq(choose(fast, slow)),
                     sat_sig.eq(choose(*((x >> (SIG_SHIFT + OP_BITS)) != 0 for x in (fast, slow))))]
        sig2_r = delay(m, sig2, f"sig2r_{v}")                                     # d13
        sig2op = delay(m, Mux(sat_sig, OP_MAX, sig2 >> SIG_SHIFT), f"sig2op_{v}",
                       unsigned(OP_BITS))
        risk_p = _product(m, gain, sig2op, f"risk_p_{v}")                   # d12 .. d10
        # (x << boost) >= 2^OP_BITS: x's bits from OP_BITS - boost up, per boost value.
        x = risk_p >> RISK_SHIFT
        tops = Cat(*((x[OP_BITS - b:] != 0) for b in range(BOOST_MAX + 1)))
        sat_risk = tops.bit_select(at("gamma_boost"), 1)
        risk = delay(m, Mux(sat_risk, OP_MAX, x << at("gamma_boost")), f"risk_{v}",
                     unsigned(OP_BITS))                                           # d9
        skew_p = _product(m, qmag, risk, f"skew_p_{v}")                     # d8 .. d6
        spread = delay(m, delay(m, risk, f"risk2_{v}", n=2) + p.kappa_term, f"spread_{v}",
                       unsigned(OP_BITS + 1))                                     # d6
        sat_skew = (skew_p >> (SKEW_BITS - 1)) != 0                   # |q| r > SKEW_MAX
        skew = delay(m, Mux(sat_skew, SKEW_MAX, skew_p), f"skew_{v}",             # d5: |skew|
                     unsigned(SKEW_BITS - 1))
        floor, wider = p.min_spread << RISK_FRAC, spread > p.min_spread << RISK_FRAC
        spread_e = delay(m, Mux(wider, spread, floor), f"spread_e_{v}", unsigned(OP_BITS + 1))
        # In units of 2^-ROUND ticks bid = mid2/2 - skew - spread/2; the ask's ceiling is a
        # floor after adding one unit less than a tick (added here, before the skew).
        up = (1 << ROUND) - 1
        spread_c = delay(m, Mux(wider, spread + up, floor + up), f"spread_c_{v}",
                         unsigned(OP_BITS + 2))
        # Both offsets are ready before the book arrives, so the book path has a single
        # add; each is one add of the skew's magnitude, the sign of q picks which.
        off_bid = delay(m, Mux(qneg, spread_e - (skew << 1), spread_e + (skew << 1)),
                        f"off_bid_{v}", signed(SKEW_BITS + 3))
        off_ask = delay(m, Mux(qneg, spread_c + (skew << 1), spread_c - (skew << 1)),
                        f"off_ask_{v}", signed(SKEW_BITS + 3))                  # d4
        return off_bid, off_ask, sig2_r, (sat_sig, sat_risk, sat_skew)

    def _book(self, m, v, off_bid, off_ask, offsets, dist):
        """Venue ``v``'s price path (d4 .. d2): the book rounded outward, the no-cross clamp
        and the max_dist bounds per level (``dist``: max_dist and 2 max_dist - 1, d4).
        Returns (ok, bid, ask, bid floors, ask ceilings)."""
        p, at = self, lambda name: self._at(name, v)
        a, b = at("best_ask"), at("best_bid")
        mid2 = delay(m, a + b, f"mid2_{v}", unsigned(PRICE_BITS + 1))              # d4
        ok1 = delay(m, at("book_valid") & (a > b), f"ok1_{v}")
        a1, b1 = delay(m, a, f"a1_{v}"), delay(m, b, f"b1_{v}")
        wide = mid2 << RISK_FRAC
        bid = delay(m, (wide - off_bid) >> ROUND, f"bid_{v}", signed(WIDE))         # d3
        ask = delay(m, (wide + off_ask) >> ROUND, f"ask_{v}", signed(WIDE))
        below = delay(m, a1 - 1, f"below_{v}", unsigned(PRICE_BITS))   # wraps only if not ok
        above = delay(m, b1 + 1, f"above_{v}", unsigned(PRICE_BITS + 1))
        # ceil(mid2 / 2) - max_dist = floor((mid2 - (2 max_dist - 1)) / 2): one add.
        lo = delay(m, (mid2 - dist[1]) >> 1, f"lo_{v}", signed(PRICE_BITS + 2))
        hi = delay(m, (mid2 >> 1) + dist[0], f"hi_{v}", unsigned(PRICE_BITS + 2))
        ok2 = delay(m, ok1, f"ok2_{v}")
        clamp = ~p.allow_cross                                                     # d2
        bid_c = delay(m, Mux(clamp & (bid > below), below, bid), f"bid_c_{v}", signed(WIDE))
        ask_c = delay(m, Mux(clamp & (ask < above), above, ask), f"ask_c_{v}", signed(WIDE))
        # Bounds per level, so that the last stage compares without adding first.
        los = [delay(m, lo + o, f"lo{j}_{v}", signed(WIDE)) for j, o in enumerate(offsets)]
        his = [delay(m, hi - o, f"hi{j}_{v}", signed(WIDE)) for j, o in enumerate(offsets)]
        return delay(m, ok2, f"ok3_{v}"), bid_c, ask_c, los, his

    def _size(self, m, v, sig2_r):
        """Venue ``v``'s size before the position cap (d14 .. d5): base capped by depth,
        halved per 4x sigma2, scaled by the regime and the guard, capped by size_cap."""
        p, at = self, lambda name: self._at(name, v)
        db, da = at("bid_depth"), at("ask_depth")
        dmin = delay(m, _min(db, da), f"dmin_{v}")                                  # d14
        dcap = _product(m, p.depth_frac, dmin, f"dcap_{v}")                   # d13 .. d11
        s1 = delay(m, _min(dcap >> DEPTH_FRAC, p.base_size), f"s1_{v}",            # d10
                   unsigned(SIZE_BITS))
        # floor(x / 4^i) <= ref for integers is x <= ref 4^i: no wide product needed. The
        # compares, then the first that holds.
        sig2_s = delay(m, sig2_r, f"sig2s_{v}")                                    # d12
        calm = delay(m, Cat(*((sig2_s >> (2 * i)) <= p.vol_ref for i in range(VOL_STEPS))),
                     f"calm_{v}")                                                   # d11
        halvings = VOL_STEPS
        for i in reversed(range(VOL_STEPS)):
            halvings = Mux(calm[i], i, halvings)
        n = delay(m, halvings, f"halvings_{v}", unsigned(5))                        # d10
        f0 = delay(m, p.regime_size.word_select(at("regime").as_value(), 4), f"f0_{v}")
        f1 = delay(m, f0 * at("size_scale"), f"f1_{v}")                # one tile: d10
        s2 = delay(m, s1 >> n, f"s2_{v}")                                           # d9
        factor = delay(m, f1 >> FACTOR_SHIFT, f"factor_{v}", unsigned(FACTOR_FRAC + 2))
        prod = _product(m, s2, factor, f"prod_{v}")                           # d8 .. d6
        return delay(m, _min(prod >> FACTOR_FRAC, p.size_cap), f"s4_{v}",           # d5
                     unsigned(SIZE_BITS))

    def _tau(self, m):
        """The tau of the quotes: ``tau``, or (``tau_mode``) ``tau_left``, which a horizon
        write loads with ``tau`` and each TICK lowers by one time unit, down to 0."""
        left = self.tau_left
        with m.If(self.horizon):
            m.d.sync += left.eq(self.tau)
        with m.Elif(self.tick):
            m.d.sync += left.eq(Mux(left > TAU_ONE, left - TAU_ONE, 0))
        return Mux(self.tau_mode[0], left, self.tau)

    def _lev_cap(self, m):
        """The position cap from L_safe (d10 .. d5): min over venues of floor(L_max lev_lots)
        and the serial divider's floor(K lev_lots / (sigma risk)), in lots, <= CAP_MAX."""
        p, caps = self, []
        phase = Signal(range(DIV_PERIOD), name="div_phase")
        m.d.sync += phase.eq(Mux(phase == DIV_PERIOD - 1, 0, phase + 1))
        for v in range(self._venues):
            def at(name, v=v):
                return self._at(name, v)
            num = _product(m, at("lsafe_k"), p.lev_lots, f"div_num_{v}")
            den = _product(m, at("sigma"), at("liquidity_risk"), f"div_den_{v}")
            wide = num << LEV_SHIFT
            d = Signal.like(den, name=f"div_d_{v}")
            rem = Signal(len(den) + 1, name=f"div_rem_{v}")
            low, quo = Signal(DIV_BITS, name=f"div_low_{v}"), Signal(DIV_BITS, name=f"div_q_{v}")
            sat = Signal(init=1, name=f"div_sat_{v}")
            quot = Signal(DIV_BITS, init=CAP_MAX, name=f"lev_quot_{v}")
            step = Cat(low[-1], rem)                      # (rem << 1) | the next dividend bit
            with m.If(phase == 0):                        # publish the last run, load the next
                m.d.sync += [quot.eq(Mux(sat, CAP_MAX, quo)), d.eq(den), quo.eq(0),
                             sat.eq(wide >= (den << DIV_BITS)), rem.eq(wide >> DIV_BITS),
                             low.eq(wide[:DIV_BITS])]
            with m.Else():                                # restoring division, one bit
                ge = step >= d
                m.d.sync += [rem.eq(Mux(ge, step - d, step)), low.eq(low << 1),
                             quo.eq(Cat(ge, quo))]
            lmax_p = _product(m, at("leverage_max"), p.lev_lots, f"lmax_p_{v}")  # d10 .. d8
            high = lmax_p[LEV_FRAC + DIV_BITS:] != 0                     # > CAP_MAX lots
            lmax = delay(m, Mux(high, CAP_MAX, lmax_p[LEV_FRAC:]), f"lmax_{v}",      # d7
                         unsigned(DIV_BITS))
            caps.append(delay(m, _min(lmax, quot), f"lev_cap_{v}"))                  # d6
        cap = caps[0]
        for c in caps[1:]:
            cap = _min(cap, c)
        return delay(m, cap, "lev_cap", unsigned(DIV_BITS))                           # d5

    def elaborate(self, platform):
        m = Module()
        V, M, p, slots = self._venues, self._levels, self, self.slots
        m.submodules.emitter = emitter = OrderEmitter(slots)
        pos_sat = self._inventory(m)
        q = self.position_net

        # Parameter-only stages: G = gamma tau and the level offsets.
        # The operands registered first (tau_mode picks tau): nothing before the DSPs.
        gain_p = _product(m, delay(m, p.gamma, "gamma_q"), delay(m, self._tau(m), "tau_q"),
                          "gain_p")                                   # d17; d16 .. d14
        gain_w = gain_p >> GAIN_SHIFT
        sat_gain = (gain_w >> OP_BITS) != 0
        gain = delay(m, Mux(sat_gain, OP_MAX, gain_w), "gain", unsigned(OP_BITS))  # d13
        gaps = [p.level_gap[j] for j in range(LEVELS_MAX - 1)]
        off2 = [delay(m, sum(gaps[:j], 0), f"off{j}", unsigned(18)) for j in range(M)]  # d3
        off1 = [delay(m, o, f"off{j}_p4") for j, o in enumerate(off2)]
        # The skew multiplies |q| (d9); the sign picks the offsets' adds (d4).
        qneg = delay(m, q < 0, "qneg", n=5)
        qmag = delay(m, Mux(q < 0, -q, q), "qmag", unsigned(Q_BITS))
        q4 = delay(m, q, "q4", n=5)                    # the q of the skew (d9), for the room
        cap = self._lev_cap(m)
        # |q| <= min(q_limit, L_safe lev_lots): both rooms of both limits, the compare picks.
        lower = p.q_limit < cap
        room = [delay(m, Mux(lower, p.q_limit - q4, cap - q4), "room_bid", signed(Q_BITS + 2)),
                delay(m, Mux(lower, p.q_limit + q4, cap + q4), "room_ask",        # d4
                      signed(Q_BITS + 2))]
        dist = [delay(m, p.max_dist, "max_dist"),
                delay(m, (p.max_dist << 1) - 1, "max_dist2", signed(PRICE_BITS + 2))]

        books, s4s, sats = [], [], []
        for v in range(V):
            off_bid, off_ask, sig2_r, sat = self._risk(m, v, gain, qmag, qneg)
            books.append(self._book(m, v, off_bid, off_ask, off2, dist))
            s4s.append(self._size(m, v, sig2_r))
            sats.append(sat)

        # The room is shared in slot order (level-major, then venue), d4 .. d2.
        total = sum(s4s, 0)
        # The last stage gives each slot its own copy of its venue's size: the compares behind
        # it sit by each slot's target register, across the die from one another.
        copies = [iter(replicas(m, delay(m, s, f"s4_1_{v}"), f"s4_2_{v}", 2 * M))
                  for v, s in enumerate(s4s)]
        s4_2 = [next(copies[slot.venue]) for slot in slots]
        used = {(j, v): delay(m, total * j + sum(s4s[:v], 0), f"used{j}_{v}", unsigned(40))
                for j in range(M) for v in range(V)}
        min_size = delay(m, Mux(p.size_min == 0, 1, p.size_min), "min_size")          # d3
        target = Signal(data.ArrayLayout(TARGET, len(slots)))
        for k, (v, side, j) in enumerate(slots):
            rem = delay(m, room[side] - used[(j, v)], f"rem{k}", signed(42))           # d3
            s = s4_2[k]
            fits = (s >= min_size) & (rem >= min_size)
            size = delay(m, Mux(fits, _min(s, rem), 0), f"size{k}", unsigned(SIZE_BITS))
            sized = delay(m, fits, f"sized{k}")                                        # d2
            ok3, bid_c, ask_c, los, his = books[v]
            if side == 0:
                price, near = bid_c - off1[j], bid_c >= los[j]
            else:
                price, near = ask_c + off1[j], ask_c <= his[j]
            in_range = (price[PRICE_BITS:] == 0) & (price[:PRICE_BITS] != 0)
            placed = ok3 & p.enable & ~p.pull & sized & near & in_range
            m.d.sync += [target[k].placed.eq(placed), target[k].price.eq(price[:PRICE_BITS]),
                         target[k].size.eq(size)]                                    # d1

        # Flags travel with the data they describe: they strobe with the targets.
        sigma, risk, skew = (Cat(*bits).any() for bits in zip(*sats, strict=True))
        flags = self.quote_flags_set
        m.d.comb += [flags.sigma.eq(delay(m, sigma, "flag_sigma", n=13)),
                     flags.gain.eq(delay(m, sat_gain, "flag_gain", n=13)),
                     flags.risk.eq(delay(m, risk, "flag_risk", n=9)),
                     flags.skew.eq(delay(m, skew, "flag_skew", n=5)),
                     flags.position.eq(pos_sat)]
        m.d.comb += [emitter.target.eq(target), emitter.tick.eq(p.tick),
                     emitter.pull.eq(p.pull), self.rate_exceeded.eq(emitter.rate_exceeded)]
        m.d.comb += [getattr(emitter, n).eq(getattr(p, n)) for n in EMITTER_PARAMS]
        wiring.connect(m, emitter.orders, wiring.flipped(self.orders))
        return m
