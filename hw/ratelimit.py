"""Order emission: quote slots to NEW/REPLACE/CANCEL orders under a rate limit, and PULL."""

from collections import namedtuple
from functools import reduce
from operator import or_

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .layouts import ORDER, OrderKind, order_layout
from .registers import REGISTERS, to_fixed

__all__ = ["Slot", "slot_list", "TARGET", "Act", "EMITTER_PARAMS", "TOKEN_FRAC", "TOKEN_ONE",
           "TOKEN_RESET", "PULL_LATENCY", "PRICE_BITS", "SIZE_BITS", "SEQ_BITS", "param_init",
           "param_shape", "OrderEmitter"]

PRICE_BITS = ORDER.offsets()["price"][1]
SIZE_BITS = ORDER.offsets()["size"][1]
SEQ_BITS = ORDER.offsets()["seq"][1]
TOKEN_FRAC = REGISTERS["rate_tokens"].fmt.frac_bits
TOKEN_ONE = 1 << TOKEN_FRAC                    # one order's worth of tokens
TOKEN_BITS = REGISTERS["rate_depth"].fmt.width + TOKEN_FRAC
TIMER_BITS = REGISTERS["requote_cycles"].fmt.width
EMITTER_PARAMS = ("requote_cycles", "rate_tokens", "rate_depth")
# The bucket starts full at the reset depth, so quoting can begin before the first TICK.
TOKEN_RESET = to_fixed(REGISTERS["rate_depth"], REGISTERS["rate_depth"].reset) << TOKEN_FRAC

PULL_LATENCY = 1      # `pull` first high in cycle p (port free): CANCEL_ALL valid in p + 1

TARGET = data.StructLayout({"placed": 1, "price": PRICE_BITS, "size": SIZE_BITS})
"""What one quote slot should rest: ``price`` (ticks) and ``size`` (lots) when ``placed``."""

Slot = namedtuple("Slot", "venue side level")


class Act:
    """A slot's pending action; the codes are the ``OrderKind`` values they emit."""
    NONE = 0
    NEW = OrderKind.NEW
    REPLACE = OrderKind.REPLACE
    CANCEL = OrderKind.CANCEL


assert (Act.NEW, Act.REPLACE, Act.CANCEL) == (1, 2, 3), "act codes must fit 2 bits"


def slot_list(venues, levels):
    """The quote slots in index (and priority) order: level-major, then venue, bid first."""
    return tuple(Slot(v, side, j) for j in range(levels) for v in range(venues)
                 for side in (0, 1))


def param_shape(name):
    """The port shape of quoter register ``name``: raw bits, an array if it has elements."""
    reg = REGISTERS[name]
    elem = signed(reg.fmt.width) if reg.fmt.signed else unsigned(reg.fmt.width)
    return elem if reg.count == 1 else data.ArrayLayout(elem, reg.count)


def param_init(name):
    """The reset value of register ``name`` as port init (a list for an array)."""
    reg = REGISTERS[name]
    raw = to_fixed(reg, reg.reset)
    if reg.fmt.signed and raw >> (reg.fmt.width - 1):
        raw -= 1 << reg.fmt.width
    return raw if reg.count == 1 else [raw] * reg.count


class OrderEmitter(wiring.Component):
    """Turns per-slot targets into orders on ``orders``, one per cycle at most.

    Cycle contract (``obcore.sim.quoter_model.EmitterModel`` is the executable spec):

    - stage A registers, per slot, the action its target in ``target`` needs against what
      rests: NEW (placed, nothing rests), REPLACE (placed, price or size differs), CANCEL
      (not placed, something rests) or none; the target's price and size ride along.
    - a slot is eligible when its action is not none, it was not loaded in the previous
      cycle (its stage A value is stale then), and either the action is CANCEL, or its
      re-quote timer is 0 and its price does not cross one of our own quotes resting on the
      other side of its venue (self-cross guard: a bid at or above a resting ask, an ask at
      or below a resting bid is held until that quote has moved away or been cancelled, so
      at every point of the order stream our highest bid is below our lowest ask per
      venue; the side moving away is never held by this, so it goes first).
      The port loads when it is free (empty, or its order is taken this cycle):
      the lowest eligible CANCEL slot, else the lowest eligible slot, if the bucket holds a
      whole token (one is spent). A loaded slot rests what it sent and its timer restarts
      at ``max(requote_cycles - 1, 0)``, counting down each cycle.
    - ``rate_exceeded`` (a function of registers only): a slot is eligible and the bucket
      holds less than one token. Nothing is dropped: the slot stays pending (as does one
      held by the self-cross guard, which needs no token until it could go).
    - bucket: ``+rate_tokens`` per cycle with ``tick``, capped at ``rate_depth`` tokens;
      both parameters as they were the cycle before (the bucket registers them).
    - ``pull`` (level): the next order loaded is one CANCEL_ALL (venue, side, slot, price,
      size 0), in the cycle after ``pull`` is first seen high if the port is free, else as
      soon as it is; it bypasses the bucket, every slot is forgotten (empty, timers 0) and
      nothing else loads while ``pull`` is high or the CANCEL_ALL still waits. One pull
      episode gives exactly one CANCEL_ALL, however short the pulse.
    - ``seq`` is +1 per order loaded, from 0 after reset.

    Timing: every decision of a cycle starts at flip-flops. Eligibility, the self-cross
    test and timer == 0 are registers computed the cycle before for each state that
    cycle's load can leave (the load only selects), and the bucket's four candidate levels
    and whether each holds a whole token are tested against registered bounds (the token
    bit is a register too), so the loop elig -> grant -> load -> registers holds no
    compare or carry chain.
    """

    def __init__(self, slots):
        if not (isinstance(slots, tuple) and slots and all(isinstance(s, Slot) for s in slots)):
            raise ValueError(f"slots must be a non-empty tuple of Slot, not {slots!r}")
        self._slots = slots
        members = {"target": In(data.ArrayLayout(TARGET, len(slots))), "tick": In(1),
                   "pull": In(1), "orders": Out(stream.Signature(order_layout)),
                   "rate_exceeded": Out(1)}
        members.update({n: In(param_shape(n), init=param_init(n)) for n in EMITTER_PARAMS})
        super().__init__(members)

    @property
    def slots(self):
        return self._slots

    def elaborate(self, platform):
        m = Module()
        n, out = len(self._slots), self.orders
        live = Signal(n)                           # resting per slot
        rest_price = [Signal(PRICE_BITS, name=f"rest_price_{k}") for k in range(n)]
        rest_size = [Signal(SIZE_BITS, name=f"rest_size_{k}") for k in range(n)]
        act = [Signal(2, name=f"act_{k}") for k in range(n)]
        act_price = [Signal(PRICE_BITS, name=f"act_price_{k}") for k in range(n)]
        act_size = [Signal(SIZE_BITS, name=f"act_size_{k}") for k in range(n)]
        timer = [Signal(TIMER_BITS, name=f"timer_{k}") for k in range(n)]
        idle = [Signal(init=1, name=f"idle_{k}") for k in range(n)]     # timer == 0
        tokens = Signal(TOKEN_BITS, init=TOKEN_RESET)
        sent, pend = Signal(), Signal()        # CANCEL_ALL loaded this episode; still owed
        seq = Signal(SEQ_BITS)

        # Stage A: the action each target needs against what rests now.
        need = []
        for k in range(n):
            t = self.target[k]
            changed = (t.price != rest_price[k]) | (t.size != rest_size[k])
            need.append(Mux(t.placed,
                            Mux(~live[k], Act.NEW, Mux(changed, Act.REPLACE, Act.NONE)),
                            Mux(live[k], Act.CANCEL, Act.NONE)))
            m.d.sync += [act[k].eq(need[k]), act_price[k].eq(t.price),
                         act_size[k].eq(t.size)]

        # Eligibility is a register: each slot's is computed in the cycle before from every
        # state the load of that cycle may leave (which slot loads only selects), so the
        # selection starts from flip-flops: elig -> grant -> load -> the loaded registers.
        elig, cancels = Signal(n), Signal(n)          # eligible; eligible CANCELs
        pool, grant = Signal(n), Signal(n)
        m.d.comb += pool.eq(Mux(cancels.any(), cancels, elig))
        # The lowest set bit, as plain logic (pool & -pool would be a carry chain).
        m.d.comb += [grant[k].eq(pool[k] & ~pool[:k].any()) for k in range(n)]

        def pick(values, width):
            """The value of the granted slot (an AND-OR multiplexer, one-hot select)."""
            sig = Signal(width)
            m.d.comb += sig.eq(reduce(or_, (Mux(grant[k], v, 0) for k, v in enumerate(values))))
            return sig

        kind = pick(act, 2)
        # A CANCEL carries price and size 0: masked per slot, beside the selection.
        price, size = (pick([Mux(a == Act.CANCEL, 0, v) for a, v in zip(act, values, strict=True)],
                            width) for values, width in ((act_price, PRICE_BITS),
                                                         (act_size, SIZE_BITS)))
        has_token = Signal(init=TOKEN_RESET >= TOKEN_ONE)    # tokens >= 1, a register
        m.d.comb += self.rate_exceeded.eq(elig.any() & ~has_token)

        free = ~out.valid | out.ready
        need_ca = pend | (self.pull & ~sent)
        load_ca = need_ca & free
        load = ~(self.pull | pend) & free & elig.any() & has_token
        loaded = [load & g for g in grant]

        req = self.requote_cycles
        for k, sk in enumerate(self._slots):
            # Next cycle's timer == 0, and the self-cross guard: the pending price (this
            # target) against our quotes that will rest on the other side of its venue (a
            # bid at or above one of our asks, an ask at or below a bid): each opposite slot
            # rests what it rests now, or what it loads.
            idle_n = load_ca | Mux(loaded[k], req <= 1, timer[k] <= 1)
            pending = self.target[k].price
            crosses = [Mux(loaded[i], (act[i] != Act.CANCEL) & over,
                           live[i] & (rest_price[i] <= pending if sk.side == 0
                                      else rest_price[i] >= pending))
                       for i, si in enumerate(self._slots)
                       if si.venue == sk.venue and si.side != sk.side
                       for over in [act_price[i] <= pending if sk.side == 0
                                    else act_price[i] >= pending]]
            cross_n = reduce(or_, crosses, 0)
            go = (need[k] != Act.NONE) & ~load_ca & ~loaded[k] & (     # not loaded now
                (need[k] == Act.CANCEL) | (idle_n & ~cross_n))
            m.d.sync += [idle[k].eq(idle_n), timer[k].eq(timer[k] - ~idle[k]),
                         elig[k].eq(go), cancels[k].eq(go & (need[k] == Act.CANCEL))]

        with m.If(load_ca):
            m.d.sync += [out.valid.eq(1), out.payload.eq(0), seq.eq(seq + 1),
                         out.payload.kind.eq(OrderKind.CANCEL_ALL), out.payload.seq.eq(seq),
                         live.eq(0)]
            m.d.sync += [t.eq(0) for t in timer]
        with m.Elif(load):
            p = out.payload
            m.d.sync += [
                out.valid.eq(1), seq.eq(seq + 1), p.kind.eq(kind), p.seq.eq(seq),
                p.venue.eq(pick([s.venue for s in self._slots], p.venue.shape().width)),
                p.side.eq(pick([s.side for s in self._slots], 1)),
                p.slot.eq(pick([s.level for s in self._slots], p.slot.shape().width)),
                p.price.eq(price), p.size.eq(size),
            ]
            for k in range(n):
                with m.If(grant[k]):
                    m.d.sync += [live[k].eq(act[k] != Act.CANCEL),
                                 rest_price[k].eq(act_price[k]), rest_size[k].eq(act_size[k]),
                                 timer[k].eq(Mux(req != 0, req - 1, 0))]
        with m.Elif(out.ready):
            m.d.sync += out.valid.eq(0)
        m.d.sync += [pend.eq(need_ca & ~load_ca), sent.eq(self.pull & (sent | load_ca))]

        # The bucket: rate_tokens and rate_depth act through registers (a change one cycle
        # later) that also hold every bound a next level is tested against, so each candidate
        # level (tick or not, load or not) is one carry chain with its cap test beside it,
        # both from registers only, and tick and the load (the end of the slot selection)
        # only pick one.
        cap = Signal(TOKEN_BITS, init=TOKEN_RESET)
        rate = Signal.like(self.rate_tokens, init=param_init("rate_tokens"))
        wide = signed(TOKEN_BITS + 2)
        # bounds[t][s]: tokens above it make tokens + t rate - s ONE exceed the cap.
        bounds = [[Signal(wide, name=f"bound_{t}{s}", init=TOKEN_RESET - t * rate.init
                          + s * TOKEN_ONE) for s in (0, 1)] for t in (0, 1)]
        rate_m1 = Signal(wide, init=rate.init - TOKEN_ONE)
        depth = self.rate_depth << TOKEN_FRAC
        m.d.sync += [bounds[t][s].eq(depth - t * self.rate_tokens + s * TOKEN_ONE)
                     for t in (0, 1) for s in (0, 1)]
        m.d.sync += [cap.eq(depth), rate.eq(self.rate_tokens),
                     rate_m1.eq(self.rate_tokens - TOKEN_ONE)]
        # [tick][load]: each level and its cap test from registers only; tick and load pick.
        levels = [[tokens, tokens - TOKEN_ONE], [tokens + rate, tokens + rate_m1]]
        capped = [[Mux(tokens > bounds[t][s], cap, levels[t][s]) for s in (0, 1)]
                  for t in (0, 1)]
        m.d.sync += tokens.eq(Mux(load, Mux(self.tick, capped[1][1], capped[0][1]),
                                  Mux(self.tick, capped[1][0], capped[0][0])))
        # Whether each candidate level holds a whole token, the same way: tokens + t rate -
        # s ONE >= ONE is tokens >= (1 + s) ONE - t rate, or the cap's when it is capped.
        floor_1 = [Signal(wide, name=f"floor_1{s}", init=(1 + s) * TOKEN_ONE - rate.init)
                   for s in (0, 1)]
        m.d.sync += [floor_1[s].eq((1 + s) * TOKEN_ONE - self.rate_tokens) for s in (0, 1)]
        floors = [[TOKEN_ONE, 2 * TOKEN_ONE], floor_1]
        cap_whole = cap[TOKEN_FRAC:] != 0
        whole = [[Mux(tokens > bounds[t][s], cap_whole, tokens >= floors[t][s])
                  for s in (0, 1)] for t in (0, 1)]
        m.d.sync += has_token.eq(Mux(load, Mux(self.tick, whole[1][1], whole[0][1]),
                                     Mux(self.tick, whole[1][0], whole[0][0])))
        return m
