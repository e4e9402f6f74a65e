"""The withdraw guard: every enabled trigger ORed into one latched `pull`, and the re-arm policy."""

from dataclasses import dataclass

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .registers import REGISTERS, build_map
from .signals import DEPTH_BITS, PRICE_BITS, REGIME, STATUS, XV_STATUS, VolRegime

__all__ = ["Reason", "REASONS", "REASON", "ALWAYS", "STATE", "WARNINGS", "LATENCY",
           "MARGIN_LATENCY", "MARGIN_FRAC", "AGE_MAX", "SIZE_ONE", "COMMANDS", "GLOBAL_INPUTS",
           "VENUE_INPUTS", "GLOBAL_PARAMS", "VENUE_PARAMS", "OUTPUTS", "VENUE_OUTPUTS", "Guard",
           "port_shape"]

LATENCY = 1          # cycles from a trigger input to `pull`: the trigger stage is registered
MARGIN_LATENCY = 3   # equity / margin registers -> margin conditions: a 3-stage pipeline


@dataclass(frozen=True)
class Reason:
    """One trigger: bit ``REASON[name]`` of ``pull_reasons``, ``pull_enable`` and ``pull_first``.

    ``scope``: ``hold`` (latched until ``arm``, cannot be disabled), ``global``, or ``venue``
    (evaluated per venue, ORed). ``status`` names the ``sig_status`` bit that is the
    condition, for triggers taken from the signal block as they are.
    """
    name: str
    scope: str
    doc: str
    status: str = ""


REASONS = (
    Reason("reset", "hold", "not armed since reset"),
    Reason("kill", "hold", "operator kill switch: `kill` written"),
    Reason("heartbeat", "global", "no `heartbeat` write within `heartbeat_timeout` cycles"),
    Reason("rate", "global", "the quoter's order-rate limit was exceeded (`rate_exceeded`)"),
    Reason("inventory", "global", "|q| > `q_limit`"),
    Reason("margin", "global", "margin level under its band: equity < margin_pull x maint"),
    Reason("misalign", "global", "cross-venue |misalign| > misalign_max (`xv_status.over`)"),
    Reason("crossed", "venue", "crossed or locked book: best bid >= best ask"),
    Reason("spread", "venue", "spread blow-out: best ask - best bid > `spread_max`"),
    Reason("depth_bid", "venue", "bid depth collapse: bid depth < `depth_min`"),
    Reason("depth_ask", "venue", "ask depth collapse: ask depth < `depth_min`"),
    Reason("depth_both", "venue", "both sides under `depth_min` at once"),
    Reason("stale", "venue", "stale feed: no message within `stale_timeout` cycles"),
    Reason("gap", "venue", "sequence gap: the book is not synced"),
    Reason("capacity", "venue", "book capacity exceeded: the top-N levels are not exact"),
    Reason("cliff", "venue", "depth drop on both sides over the window (the 1011 cliff)",
           "cliff"),
    Reason("obi_touch", "venue", "touch imbalance over `obi_touch_th`", "obi_touch_over"),
    Reason("obi_depth", "venue", "depth imbalance over `obi_depth_th`", "obi_depth_over"),
    Reason("accel", "venue", "liquidity acceleration over `accel_max`", "accel_over"),
    Reason("vol_fast", "venue", "short-term vol spike: sigma2_fast > `vol_fast_max`"),
    Reason("vol_slow", "venue", "long-term vol spike: sigma2_slow > `vol_slow_max`"),
    Reason("lvi", "venue", "leverage vulnerability index over its limit", "lvi_over"),
    Reason("lsafe", "venue", "leverage over L_safe", "lsafe_over"),
)
REASON = {r.name: i for i, r in enumerate(REASONS)}
ALWAYS = sum(1 << REASON[r.name] for r in REASONS if r.scope == "hold")   # not maskable
assert all(r.status in STATUS.members for r in REASONS if r.status)

STATE = data.StructLayout(dict.fromkeys((        # pull_state, bit 0 first
    "pulled",       # the `pull` output
    "hold",         # pulled by reset or kill: only `arm` releases it
    "active",       # an enabled trigger condition holds now
    "refused",      # the last `arm` was refused (cleared by an accepted one)
    "cooling",      # auto re-arm is counting the cool-down
    "margin_warn",  # margin level under `margin_warn`
), 1))

# Warning sources, below pull: (name, the vol regime that raises it, or None for the margin
# band). Registers <name>_size (UQ1.15) and <name>_gamma (log2 multiplier of gamma).
WARNINGS = (("range", VolRegime.RANGE), ("trend", VolRegime.TREND),
            ("crisis", VolRegime.CRISIS), ("margin", None))

AGE_BITS = 32
AGE_MAX = (1 << AGE_BITS) - 1       # deadline counters saturate here
SIZE_FRAC = REGISTERS["range_size"].fmt.frac_bits
SIZE_ONE = 1 << SIZE_FRAC           # size_scale 1.0: neutral
MARGIN_FRAC = REGISTERS["margin_pull"].fmt.frac_bits

COMMANDS = ("heartbeat", "arm", "kill")     # strobes: wire the CSR's <name>_stb
GLOBAL_PARAMS = ("pull_enable", "auto_arm", "cooldown", "heartbeat_timeout", "equity",
                 "maint_margin", "margin_warn", "margin_pull",
                 *(f"{name}_{kind}" for name, _ in WARNINGS for kind in ("size", "gamma")))
VENUE_PARAMS = ("stale_timeout", "spread_max", "depth_min", "vol_fast_max", "vol_slow_max")
OUTPUTS = ("pull", "pull_reasons_set", "pull_venues_set", "pull_state", "pull_first",
           "pull_count", "refused_count", "pull_cycle")
VENUE_OUTPUTS = ("size_scale", "gamma_boost")


def _raw(fmt):
    return signed(fmt.width) if fmt.signed else unsigned(fmt.width)


# Inputs that are not registers; per-venue ones become arrays like the per-venue registers.
GLOBAL_INPUTS = {"cycle": unsigned(64), "rate_exceeded": unsigned(1),
                 "inventory": _raw(REGISTERS["q_limit"].fmt),
                 "q_limit": _raw(REGISTERS["q_limit"].fmt)}
VENUE_INPUTS = {"best_bid": unsigned(PRICE_BITS), "best_ask": unsigned(PRICE_BITS),
                "book_valid": unsigned(1), "synced": unsigned(1), "exact": unsigned(1),
                "bid_depth": unsigned(DEPTH_BITS), "ask_depth": unsigned(DEPTH_BITS),
                "msg": unsigned(1), "sig_status": STATUS, "regime": REGIME,
                "sigma2_fast": _raw(REGISTERS["sigma2_fast"].fmt),
                "sigma2_slow": _raw(REGISTERS["sigma2_slow"].fmt)}
_SHAPES = {**dict.fromkeys((*COMMANDS, "pull"), unsigned(1)), **GLOBAL_INPUTS, **VENUE_INPUTS,
           **{n: _raw(REGISTERS[n].fmt) for n in (*GLOBAL_PARAMS, *VENUE_PARAMS, "pull_first",
                                                   "pull_count", "refused_count", "pull_cycle")},
           "pull_reasons_set": unsigned(len(REASONS)), "pull_state": STATE,
           "size_scale": _raw(REGISTERS["range_size"].fmt),
           "gamma_boost": _raw(REGISTERS["range_gamma"].fmt)}

assert REGISTERS["pull_reasons"].fmt.width == REGISTERS["pull_enable"].fmt.width == REGISTERS[
    "pull_first"].fmt.width == len(REASONS)
assert REGISTERS["pull_state"].fmt.width == STATE.size
assert all(REGISTERS[n].fmt.width <= AGE_BITS for n in ("cooldown", "heartbeat_timeout",
                                                       "stale_timeout"))


def port_shape(name):
    """The shape of one element of port ``name`` (``pull_venues_set``: one bit per venue)."""
    return _SHAPES[name]


def _expired(m, name, restart, timeout):
    """Whether ``timeout`` or more cycles have passed since the cycle after ``restart`` last
    pulsed (or since reset): a strobe at least every ``timeout`` cycles keeps it low."""
    age = Signal(AGE_BITS, name=f"{name}_age")
    with m.If(restart):
        m.d.sync += age.eq(0)
    with m.Elif(age != AGE_MAX):
        m.d.sync += age.eq(age + 1)
    return age >= timeout


class Guard(wiring.Component):
    """Pulls every quote on any enabled trigger ``LATENCY`` cycles after its input, and holds
    the pull.

    Ports (shapes in :func:`port_shape`; per-venue ones are ``data.ArrayLayout`` arrays,
    element ``v`` = venue ``v``, when ``venues > 1``, as the CSR's per-venue registers):

    - ``heartbeat``, ``arm``, ``kill``: command strobes (the CSR's ``<name>_stb``).
    - book, per venue, straight from hw/book.py: ``best_bid``, ``best_ask``, ``book_valid``,
      ``synced``, ``exact`` (BBO latency), ``bid_depth``, ``ask_depth`` (status latency),
      ``msg`` (a message of the venue, e.g. ``updated``).
    - signals, per venue: ``sig_status``, ``regime``, ``sigma2_fast``, ``sigma2_slow``;
      ``xv_status`` when ``venues >= 2``.
    - ``cycle`` (the 64-bit cycle counter), ``rate_exceeded`` (strobe from the quoter),
      ``inventory`` q and ``q_limit`` (lots, signed).
    - parameters named after their registers (:data:`GLOBAL_PARAMS`, :data:`VENUE_PARAMS`).
    - ``pull`` (level, ``LATENCY`` after the trigger inputs), ``size_scale`` (UQ1.15,
      1.0 neutral) and ``gamma_boost`` (gamma multiplier log2, 0 neutral) per venue, and
      the status registers' inputs ``pull_reasons_set``, ``pull_venues_set`` (w1c set
      strobes), ``pull_state``, ``pull_first``, ``pull_count``, ``refused_count``,
      ``pull_cycle``.

    Two stages: the trigger stage computes every condition and the warnings from the inputs
    and registers them with the enable mask and the ``arm``/``kill`` commands; the latch
    stage is the combinational guard of ``LATENCY`` cycles ago. Semantics are
    ``obcore.sim.guard_model.GuardModel``'s, cycle for cycle; docs/guard.md.
    """

    def __init__(self, venues=2):
        if not (isinstance(venues, int) and not isinstance(venues, bool) and 1 <= venues <= 16):
            raise ValueError(f"venues must be an integer 1..16, not {venues!r}")
        self._venues = venues
        regs = build_map(venues=venues)

        def each(shape):
            return shape if venues == 1 else data.ArrayLayout(shape, venues)

        members = {n: In(1) for n in COMMANDS}
        members.update({n: In(port_shape(n)) for n in (*GLOBAL_INPUTS, *GLOBAL_PARAMS)})
        members.update({n: In(each(port_shape(n))) for n in (*VENUE_INPUTS, *VENUE_PARAMS)})
        if venues >= 2:
            members["xv_status"] = In(XV_STATUS)
        members.update({n: Out(port_shape(n)) for n in OUTPUTS if n != "pull_venues_set"})
        members["pull_venues_set"] = Out(regs["pull_venues"].fmt.width)
        # Reset is a pull whose first reason is `reset`.
        members["pull_first"] = Out(port_shape("pull_first"), init=1 << REASON["reset"])
        members.update({n: Out(each(port_shape(n))) for n in VENUE_OUTPUTS})
        super().__init__(members)

    @property
    def venues(self):
        return self._venues

    def _at(self, name, v):
        port = getattr(self, name)
        return port if self._venues == 1 else port[v]

    def _venue_conditions(self, m, v):
        """Venue ``v``'s trigger conditions by reason name, straight from its inputs."""
        def at(name):
            return self._at(name, v)
        ok, bid, ask = at("book_valid"), at("best_bid"), at("best_ask")
        low_bid, low_ask = at("bid_depth") < at("depth_min"), at("ask_depth") < at("depth_min")
        conds = {
            "crossed": ok & (bid >= ask),
            "spread": ok & (ask > bid + at("spread_max")),
            "depth_bid": low_bid, "depth_ask": low_ask, "depth_both": low_bid & low_ask,
            "stale": _expired(m, f"stale{v}", at("msg"), at("stale_timeout")),
            "gap": ~at("synced"), "capacity": ~at("exact"),
            "vol_fast": at("sigma2_fast") > at("vol_fast_max"),
            "vol_slow": at("sigma2_slow") > at("vol_slow_max"),
        }
        conds.update({r.name: getattr(at("sig_status"), r.status) for r in REASONS if r.status})
        return conds

    def _global_conditions(self, m, margin_low):
        """The trigger conditions that are not per venue, by reason name."""
        conds = {
            "kill": self.kill,
            "heartbeat": _expired(m, "heartbeat", self.heartbeat, self.heartbeat_timeout),
            "rate": self.rate_exceeded,
            "inventory": abs(self.inventory) > self.q_limit,
            "margin": margin_low,
            "misalign": self.xv_status.over if self._venues >= 2 else Const(0),
        }
        assert set(conds) == {r.name for r in REASONS if r.scope == "global"} | {"kill"}
        return conds

    def _delay(self, m, value, name, init=0):
        """``value`` as it was ``LATENCY`` cycles ago (``init`` before that)."""
        for i in range(LATENCY):
            late = Signal.like(value, name=f"{name}_d{i + 1}", init=init)
            m.d.sync += late.eq(value)
            value = late
        return value

    def _warnings(self, margin_warn):
        """Per venue ``(size, boost)``: the smallest size and the largest gamma boost of the
        warning sources that apply. A venue is in one vol regime at a time, so of the
        regime sources one applies at most: a 4-way mux by the regime code, then one
        compare against the margin source."""
        one, zero = Const(SIZE_ONE, SIZE_FRAC + 1), Const(0, len(self.range_gamma))

        def source(name):                   # (size never above 1.0, boost)
            s = getattr(self, f"{name}_size")
            return Mux(s < one, s, one), getattr(self, f"{name}_gamma")

        by_code = [(one, zero)] * len(VolRegime)
        for name, regime in WARNINGS:
            if regime is not None:
                by_code[regime.value] = source(name)
        others = [source(name) for name, regime in WARNINGS if regime is None]
        out = []
        for v in range(self._venues):
            vol = self._at("regime", v).vol.as_value()
            size, boost = Array(s for s, _ in by_code)[vol], Array(g for _, g in by_code)[vol]
            for s, g in others:
                s, g = Mux(margin_warn, s, one), Mux(margin_warn, g, zero)
                size, boost = Mux(s < size, s, size), Mux(g > boost, g, boost)
            out.append((size, boost))
        return out

    def _margin(self, m):
        """``(margin_low, margin_warn)``: margin level = equity / maint under each band,
        compared without dividing, ``equity * 2^MARGIN_FRAC < band * maint``. Both sides are
        register values, so the compare is pipelined off the pull path, ``MARGIN_LATENCY``
        registers: copies of the inputs next to the multipliers, the partial products of
        each band with the two 16-bit halves of ``maint_margin`` (one 18x18 DSP each), and
        the sum and compare."""
        half = len(self.maint_margin) // 2
        regs = {n: Signal.like(getattr(self, n), name=f"{n}_in")
                for n in ("equity", "maint_margin", "margin_pull", "margin_warn")}
        m.d.sync += [r.eq(getattr(self, n)) for n, r in regs.items()]
        equity = Signal.like(regs["equity"], name="equity_pp")
        m.d.sync += equity.eq(regs["equity"])
        maint = regs["maint_margin"]
        out = []
        for band in ("margin_pull", "margin_warn"):
            lo, hi = (Signal(len(regs[band]) + half, name=f"{band}_pp{i}") for i in range(2))
            below = Signal(name=f"{band}_below")
            m.d.sync += [lo.eq(regs[band] * maint[:half]), hi.eq(regs[band] * maint[half:]),
                         below.eq((equity << MARGIN_FRAC) < (hi << half) + lo)]
            out.append(below)
        return out

    def elaborate(self, platform):
        m = Module()

        margin_low, margin_warn = self._margin(m)

        # Trigger stage: every condition of every reason (one per venue for venue reasons),
        # straight from the inputs. Its results (the raw condition bits, the enable mask, the
        # warnings) and the commands reach the latch stage LATENCY cycles later, all together:
        # the latch stage is the combinational guard of LATENCY cycles ago (its own
        # parameters auto_arm and cooldown act as they are).
        now = [self._global_conditions(m, margin_low)]
        for v in range(self._venues):
            now.append(self._venue_conditions(m, v))
            assert set(now[-1]) == {r.name for r in REASONS if r.scope == "venue"}
        late = self._delay(m, Cat(c for conds in now for c in conds.values()), "conds")
        bits = iter(late)
        late = [{name: next(bits) for name in conds} for conds in now]
        enabled = self._delay(m, self.pull_enable, "pull_enable") | ALWAYS
        arm, kill = self._delay(m, self.arm, "arm"), late[0]["kill"]
        warn = self._delay(m, margin_warn, "margin_warn")
        for v, (size, boost) in enumerate(self._warnings(margin_warn)):
            m.d.comb += [self._at("size_scale", v).eq(self._delay(m, size, f"size{v}",
                                                                  SIZE_ONE)),
                         self._at("gamma_boost", v).eq(self._delay(m, boost, f"boost{v}"))]

        # The one trigger mechanism: a table of reason -> conditions; reason bit i is live
        # when any of its conditions holds and it is enabled.
        table = {}
        for conds in late:
            for name, cond in conds.items():
                table.setdefault(name, []).append(cond)
        live = Signal(len(REASONS))
        m.d.comb += [live.eq(Cat(Cat(table.get(r.name, [])).any() for r in REASONS) & enabled),
                     self.pull_venues_set.eq(Cat(
                         Cat(c & enabled[REASON[name]] for name, c in conds.items()).any()
                         for conds in late[1:]))]
        active = live.any()

        # The latch: pull = latched | active, so it rises with the (registered) condition.
        latched, refused = Signal(init=1), Signal()
        hold_reset, hold_kill = Signal(init=1), Signal()    # released by an accepted arm only
        quiet = Signal(AGE_BITS)                            # clear cycles before this one
        hold = hold_reset | hold_kill
        accept, refuse = arm & ~active, arm & active
        cooling = self.auto_arm & latched & ~hold & ~active
        auto = cooling & (quiet >= self.cooldown)
        holds = Signal(len(REASONS))
        m.d.comb += [holds[REASON["reset"]].eq(hold_reset), holds[REASON["kill"]].eq(hold_kill),
                     self.pull.eq(latched | active), self.pull_reasons_set.eq(live | holds)]
        m.d.sync += [latched.eq(active | (latched & ~accept & ~auto)),
                     hold_reset.eq(hold_reset & ~accept),
                     hold_kill.eq(kill | (hold_kill & ~accept)),
                     quiet.eq(Mux(active, 0, Mux(quiet == AGE_MAX, quiet, quiet + 1)))]
        with m.If(~latched & active):                       # a pull begins
            m.d.sync += [self.pull_count.eq(self.pull_count + 1),
                         self.pull_cycle.eq(self.cycle), self.pull_first.eq(live)]
        with m.If(refuse):
            m.d.sync += [self.refused_count.eq(self.refused_count + 1), refused.eq(1)]
        with m.Elif(accept):
            m.d.sync += refused.eq(0)
        st = self.pull_state
        m.d.comb += [st.pulled.eq(self.pull), st.hold.eq(hold), st.active.eq(active),
                     st.refused.eq(refused), st.cooling.eq(cooling), st.margin_warn.eq(warn)]
        return m
