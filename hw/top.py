"""The engine top: feed in, books, signals and registers inside, observations and orders out."""

from amaranth.hdl import Cat, Module, Signal, Value
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .book import BBO_LATENCY, STATUS_LATENCY
from .books import Books
from .csr import CSR, CSRBus, addr_width
from .guard import Guard
from .layouts import OBS, TELEM, FeedKind, ObsStatus, feed_layout, order_layout
from .pipeline import delay, delay_line
from .quoter import Quoter
from .registers import build_map
from .signals import BBO_LEAD, EARLY_FIELDS, IMB_LATENCY, IMB_OUTPUTS, LATENCY, SIGMA_LAG, Signals

__all__ = ["Engine", "wire_registers", "OBS_LATENCY", "TELEM_LATENCY", "SETTLE_CYCLES"]

# Accept -> telemetry record: the book shows the message, the imbalance dividers finish, and
# one output register.
TELEM_LATENCY = STATUS_LATENCY + IMB_LATENCY + 1
OBS_LATENCY = STATUS_LATENCY + 1     # accept -> observation record: the book, one register
# A TICK or a bus write changes the signals in cycles without a message for at most this
# many cycles after it: the TICK reaches the tick port, the square root takes the new sigma2
# (SIGMA_LAG, counting a root under way) and the output stages show it.
SETTLE_CYCLES = STATUS_LATENCY - BBO_LEAD + SIGMA_LAG + LATENCY + 1
_TAGS = ("venue", "kind", "seq", "cycle")
_TELEM_SIGNALS = tuple(f.name for f in TELEM.fields if f.name not in (*_TAGS, "obi_touch",
                                                                      "obi_depth"))


def wire_registers(m, csr, block, regmap, names):
    """Connect ``block``'s ports named after registers to the CSR, by each register's access.

    rw: CSR live value -> block input; ro: block output -> CSR input; w1c: block
    ``<name>_set`` -> CSR set strobes; wo: a command, the CSR's ``<name>_stb`` -> block
    ``<name>`` (the value written is not used). An rw register the block has no port for is
    host-side state (`k` feeds the host's `kappa_term`); any other must have its port.
    """
    def connect(dst, src):
        m.d.comb += Value.cast(dst).eq(Value.cast(src))

    for name in names:
        access = regmap[name].access
        if access == "rw":
            if hasattr(block, name):
                connect(getattr(block, name), getattr(csr, name))
        elif access == "ro":
            connect(getattr(csr, name), getattr(block, name))
        elif access == "w1c":
            connect(getattr(csr, f"{name}_set"), getattr(block, f"{name}_set"))
        else:
            connect(getattr(block, name), getattr(csr, f"{name}_stb"))


class Engine(wiring.Component):
    """The whole engine for ``venues`` venues and ``levels`` exact book levels per side.

    Ports: ``feed`` (feed stream, always ready), ``bus`` (the register bus, see
    :class:`~obcore.hw.csr.CSRBus`), ``obs`` (one :data:`~obcore.hw.layouts.OBS` record per
    accepted feed message, ``obs_latency`` cycles after it, never stalls) and ``orders``
    (the quoter's order stream, ``slots`` quote levels per side and venue; the guard's pull
    makes it emit CANCEL_ALL) and ``telem`` (one :data:`~obcore.hw.layouts.TELEM` record per
    accepted feed message, ``telem_latency`` cycles after it, never stalls) and ``settling``:
    a cycle without a message may still change the books or the signals (a message in this
    cycle or the STATUS_LATENCY before, a book side with a ladder refill wanted or in flight,
    ``hw/deep.py``, or a TICK or bus write at most ``SETTLE_CYCLES`` ago). The native model's
    settled pauses end when it is 0; a board leaves it unconnected.
    """

    def __init__(self, venues=2, levels=16, capacity=None, slots=1, window=None):
        self.regmap = build_map(venues, levels, window)
        self.venues, self.levels, self.capacity, self.slots = venues, levels, capacity, slots
        self.window = window    # ticks of price ladder behind each book side; None: none
        self.obs_format = OBS
        self.obs_latency = OBS_LATENCY
        self.telem_format, self.telem_latency = TELEM, TELEM_LATENCY
        super().__init__({
            "feed": In(stream.Signature(feed_layout)),
            "bus": In(CSRBus(addr_width(self.regmap))),
            # valid/payload without ready: observations never stall, and an always-ready
            # stream's constant ready cannot be a top-level port.
            "obs": Out(wiring.Signature({"valid": Out(1), "payload": Out(OBS.layout())})),
            "orders": Out(stream.Signature(order_layout)),
            "telem": Out(wiring.Signature({"valid": Out(1), "payload": Out(TELEM.layout())})),
            "settling": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        regmap = self.regmap
        m.submodules.books = books = Books(self.venues, self.levels, self.capacity,
                                           self.window)
        m.submodules.csr = csr = CSR(regmap)
        m.submodules.signals = signals = Signals(self.venues)
        wiring.connect(m, wiring.flipped(self.feed), books.feed)
        wiring.connect(m, wiring.flipped(self.bus), csr.bus)

        cycle = Signal(64)
        m.d.sync += cycle.eq(cycle + 1)
        m.d.comb += csr.cycle.eq(cycle)

        # Book status into the registers and the signals. The BBO shows a message one cycle
        # before depth and `updated`; the signals take it BBO_LEAD cycles early.
        m.d.comb += csr.malformed_count.eq(books.malformed_count)
        refilling = []
        for v in range(self.venues):
            st = books.venue[v]
            for reg, counter in (("msg_count", "msgs"), ("gap_count", "gaps"),
                                 ("missing_count", "missing"), ("crossed_count", "crossed"),
                                 ("capacity_count", "capacity")):
                m.d.comb += getattr(csr, reg)[v].eq(getattr(st.counters, counter))
            m.d.comb += [csr.best_bid[v].eq(st.best_bid), csr.best_ask[v].eq(st.best_ask),
                         csr.book_flags_set[v].eq(st.events.as_value())]
            if self.window is not None:
                bid, ask = books.ladders[v][0], books.ladders[v][1]   # Side.BID, Side.ASK
                refilling.append(bid.refilling | ask.refilling)
                m.d.comb += [
                    csr.window_count[v].eq(bid.out_of_window_count + ask.out_of_window_count),
                    csr.ladder_flags[v].eq(Cat(bid.lost_better, bid.lost_worse, bid.stuck,
                                               ask.lost_better, ask.lost_worse, ask.stuck))]
            view = signals.book[v]
            lag = STATUS_LATENCY - BBO_LATENCY - BBO_LEAD
            for name in EARLY_FIELDS:
                m.d.comb += getattr(view, name).eq(delay(m, getattr(st, name), f"v{v}_{name}",
                                                         n=lag))
            m.d.comb += [view.bid_depth.eq(st.bid_depth), view.ask_depth.eq(st.ask_depth),
                         view.updated.eq(st.updated)]

        # A TICK is due when the book has shown everything before it; the signals take it
        # with the BBO, BBO_LEAD cycles early.
        msg = self.feed.payload
        accepted = self.feed.valid & self.feed.ready
        # Well formed as the ingress rules it (docs/feed.md): every field but seq is 0.
        is_tick = accepted & (msg.kind == FeedKind.TICK) & (msg.venue == 0) & (msg.side == 0) \
            & (msg.flags == 0) & (msg.price == 0) & (msg.size == 0)
        tick_early = delay(m, is_tick, "tick_early", n=STATUS_LATENCY - BBO_LEAD)
        tick = delay(m, tick_early, "tick", n=BBO_LEAD)
        m.d.comb += signals.tick.eq(tick_early)
        # `settling` shows this cycle's message at once: the native model plans the next
        # cycle from this one's outputs. Its effect on the books shows STATUS_LATENCY later.
        left = Signal(range(SETTLE_CYCLES + 1), name="settle_left")
        with m.If(is_tick | self.bus.w_en):
            m.d.sync += left.eq(SETTLE_CYCLES)
        with m.Elif(accepted & (left <= STATUS_LATENCY)):
            m.d.sync += left.eq(STATUS_LATENCY)
        with m.Elif(left != 0):
            m.d.sync += left.eq(left - 1)
        m.d.comb += self.settling.eq(Cat(*refilling, accepted, left != 0).any())
        # One venue has no cross-venue pair: its misalign registers stay 0 (never valid).
        cross = ("misalign", "xv_status") if self.venues == 1 else ()
        wire_registers(m, csr, signals, regmap,
                       [r.name for r in regmap.by_block("signals") if r.name not in cross])

        m.submodules.guard = guard = Guard(self.venues)
        m.submodules.quoter = quoter = Quoter(self.venues, self.slots)
        self._guard_and_quote(m, books, signals, guard, quoter, csr, cycle)
        wiring.connect(m, quoter.orders, wiring.flipped(self.orders))

        # Our own fills: a FILL the ingress accepted, when the ingress has ruled on it.
        is_fill = accepted & (msg.kind == FeedKind.FILL)
        fill = quoter.fill
        m.d.comb += [fill.valid.eq(delay(m, is_fill, "fill", n=STATUS_LATENCY)
                                   & ~books.malformed),
                     fill.venue.eq(delay(m, msg.venue, "fill_venue", n=STATUS_LATENCY)),
                     fill.side.eq(delay(m, msg.side[0], "fill_side", n=STATUS_LATENCY)),
                     fill.size.eq(delay(m, msg.size, "fill_size", n=STATUS_LATENCY)),
                     quoter.tick.eq(tick)]
        self._observe(m, books, msg, accepted, cycle)
        self._telemetry(m, signals, msg, accepted, cycle)
        return m

    def _telemetry(self, m, signals, msg, accepted, cycle):
        """One TELEM record per accepted message, ``TELEM_LATENCY`` cycles after it: the
        message's venue's signals as they show the message, waiting for its imbalances."""
        def at(port, v):
            return port if self.venues == 1 else port[v]

        # The signals divide the imbalances of the venue they show the message for.
        venue_book = delay(m, msg.venue, "telem_venue_b", n=STATUS_LATENCY)
        m.d.comb += signals.imb_venue.eq(venue_book)
        shown = STATUS_LATENCY + LATENCY              # the signal registers show the message
        venue_now = delay(m, venue_book, "telem_venue_s", n=LATENCY)
        now = Signal(TELEM.layout(), name="telem_now")
        with m.Switch(venue_now):
            for v in range(self.venues):
                with m.Case(v):
                    m.d.comb += [getattr(now, name).eq(Value.cast(at(getattr(signals, name), v)))
                                 for name in _TELEM_SIGNALS
                                 if name not in ("misalign", "xv_status")]
                    if self.venues >= 2:
                        m.d.comb += [now.misalign.eq(signals.misalign),
                                     now.xv_status.eq(Value.cast(signals.xv_status))]
        ready = STATUS_LATENCY + IMB_LATENCY          # the imbalances show it too
        # The record waits in RAM, not in ~6k flip-flops; telem.valid (reset) says when.
        late = delay_line(m, now, "telem_sig", ready - shown)
        tags = {k: delay_line(m, v, f"telem_{k}", ready) for k, v in (
            ("venue", msg.venue), ("kind", msg.kind), ("seq", msg.seq), ("cycle", cycle[:32]))}
        out = self.telem.payload
        m.d.sync += self.telem.valid.eq(delay(m, accepted, "telem_valid", n=ready))
        m.d.sync += [getattr(out, k).eq(v) for k, v in tags.items()]
        m.d.sync += [getattr(out, name).eq(getattr(late, name)) for name in _TELEM_SIGNALS]
        m.d.sync += [getattr(out, field).eq(getattr(signals, port)) for field, port in
                     zip(("obi_touch", "obi_depth"), IMB_OUTPUTS, strict=True)]

    def _guard_and_quote(self, m, books, signals, guard, quoter, csr, cycle):
        """The guard watches books, signals and the quoter; its pull stops the quoter."""
        regmap = self.regmap
        for v in range(self.venues):
            st = books.venue[v]

            def at(port, v=v):
                return port if self.venues == 1 else port[v]

            # The guard reads the book as soon as it shows (BBO at 1 cycle, depth at 2):
            # the cheapest triggers must not wait for the signals pipeline.
            for dst, src in (("best_bid", st.best_bid), ("best_ask", st.best_ask),
                             ("book_valid", st.valid), ("synced", st.synced),
                             ("exact", st.exact), ("bid_depth", st.bid_depth),
                             ("ask_depth", st.ask_depth), ("msg", st.updated)):
                m.d.comb += at(getattr(guard, dst)).eq(src)
            for dst, src in (("best_bid", st.best_bid), ("best_ask", st.best_ask),
                             ("book_valid", st.valid), ("bid_depth", st.bid_depth),
                             ("ask_depth", st.ask_depth)):
                m.d.comb += at(getattr(quoter, dst)).eq(src)
        for name in ("sig_status", "regime", "sigma2_fast", "sigma2_slow"):
            m.d.comb += Value.cast(getattr(guard, name)).eq(Value.cast(getattr(signals, name)))
        for name in ("regime", "sigma2_fast", "sigma2_slow", "sigma"):
            m.d.comb += Value.cast(getattr(quoter, name)).eq(Value.cast(getattr(signals, name)))
        if self.venues >= 2:
            m.d.comb += Value.cast(guard.xv_status).eq(Value.cast(signals.xv_status))
        for name in ("size_scale", "gamma_boost"):
            m.d.comb += Value.cast(getattr(quoter, name)).eq(Value.cast(getattr(guard, name)))
        m.d.comb += [guard.cycle.eq(cycle), guard.rate_exceeded.eq(quoter.rate_exceeded),
                     guard.inventory.eq(quoter.position_net), guard.q_limit.eq(csr.q_limit),
                     quoter.pull.eq(guard.pull), quoter.enable.eq(1)]
        wire_registers(m, csr, guard, regmap, [r.name for r in regmap.by_block("guard")])
        wire_registers(m, csr, quoter, regmap, [r.name for r in regmap.by_block("quoter")])
        # The L_safe position cap reads the signal block's L_safe registers too.
        wire_registers(m, csr, quoter, regmap, ("leverage_max", "lsafe_k", "liquidity_risk"))

    def _observe(self, m, books, msg, accepted, cycle):
        """One OBS record per accepted message, STATUS_LATENCY + 1 cycles after it."""
        tag = {"venue": msg.venue, "kind": msg.kind, "seq": msg.seq, "cycle": cycle[:32]}
        late = {k: delay(m, v, f"obs_{k}", n=STATUS_LATENCY) for k, v in tag.items()}
        valid = delay(m, accepted, "obs_valid", n=STATUS_LATENCY)
        # Flags that show at BBO_LATENCY are caught then, for the message's venue.
        venue1 = delay(m, msg.venue, "obs_venue1", n=BBO_LATENCY)
        early = {}
        for name in ("best_bid", "best_bid_qty", "best_ask", "best_ask_qty", "valid", "exact",
                     "synced"):
            now = Signal.like(getattr(books.venue[0], name), name=f"obs_{name}_at1")
            with m.Switch(venue1):
                for v in range(self.venues):
                    with m.Case(v):
                        m.d.comb += now.eq(getattr(books.venue[v], name))
            early[name] = delay(m, now, f"obs_{name}", n=STATUS_LATENCY - BBO_LATENCY)
        applied = Signal()
        m.d.comb += applied.eq(valid & (late["kind"] != FeedKind.TICK) & ~books.malformed)
        out = self.obs.payload
        m.d.sync += self.obs.valid.eq(valid)
        m.d.sync += [getattr(out, k).eq(v) for k, v in late.items()]
        m.d.sync += out.status.eq(0)
        with m.If(applied):
            m.d.sync += out.status.eq(
                ObsStatus.APPLIED | (early["valid"] * ObsStatus.VALID)
                | (early["exact"] * ObsStatus.EXACT) | (early["synced"] * ObsStatus.SYNCED))
            with m.Switch(late["venue"]):
                for v in range(self.venues):
                    st = books.venue[v]
                    with m.Case(v):
                        m.d.sync += [out.bid_depth.eq(st.bid_depth),
                                     out.ask_depth.eq(st.ask_depth),
                                     out.bid_count.eq(st.bid_count),
                                     out.ask_count.eq(st.ask_count)]
            m.d.sync += [getattr(out, k).eq(early[k]) for k in (
                "best_bid", "best_bid_qty", "best_ask", "best_ask_qty")]
        with m.Else():
            m.d.sync += [getattr(out, k).eq(0) for k in (
                "best_bid", "best_bid_qty", "best_ask", "best_ask_qty", "bid_depth",
                "ask_depth", "bid_count", "ask_count")]
