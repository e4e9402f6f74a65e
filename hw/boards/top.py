"""Board tops: an engine core behind the UART bridge, with its clock, reset and status LEDs."""

from amaranth.build import ResourceError
from amaranth.hdl import (
    ClockDomain,
    ClockSignal,
    DomainRenamer,
    Instance,
    Module,
    ResetInserter,
    ResetSignal,
    Signal,
)
from amaranth.lib import io, stream, wiring
from amaranth.lib.cdc import ResetSynchronizer
from amaranth.lib.wiring import In, Out

from ..book import STATUS_LATENCY
from ..books import Books
from ..csr import CSR, CSRBus, addr_width
from ..layouts import OBS, feed_layout, order_layout
from ..registers import RegisterMap, build_map
from ..top import Engine
from .bridge import OBS_PORT, Bridge
from .uart import divisor_for

__all__ = ["CORES", "BOOK_BLOCKS", "books_map", "BooksEngine", "make_core", "ecp5_pll",
           "BridgedCore", "BoardTop"]

CORES = ("engine", "books")
BOOK_BLOCKS = ("system", "book")
_COUNTERS = (("msg_count", "msgs"), ("gap_count", "gaps"), ("missing_count", "missing"),
             ("crossed_count", "crossed"), ("capacity_count", "capacity"))


def books_map(venues, levels):
    """The register map of the books-only core: the full map's system and book registers.

    They come first in the full map, so every one of them keeps its address.
    """
    full = build_map(venues, levels)
    regmap = RegisterMap([r for r in full if r.block in BOOK_BLOCKS])
    assert all(r.addr == full[r.name].addr for r in regmap)
    return regmap


class BooksEngine(Engine):
    """The engine without signals, quoter and guard: books, CSR and observations only.

    For devices the whole engine does not fit (the iCE40 UP5K). Same four ports as
    :class:`~obcore.hw.top.Engine`, with :func:`books_map` behind ``bus``: the registers of
    the missing blocks do not exist, so a host sees them as absent, not as zeros. ``orders``
    stays idle. Observations are the Engine's own (its ``_observe``), so they match the
    simulation bit for bit.
    """

    def __init__(self, venues=1, levels=2, capacity=None):
        # Engine's own constructor would give the full map's bus; this core has a smaller one.
        self.regmap = books_map(venues, levels)
        self.venues, self.levels, self.capacity = venues, levels, capacity
        self.slots = 0   # no quoter
        self.obs_format = OBS
        self._books = Books(venues, levels, capacity)
        self.obs_latency = STATUS_LATENCY + 1   # as Engine: the observation's pipeline
        wiring.Component.__init__(self, {
            "feed": In(stream.Signature(feed_layout)),
            "bus": In(CSRBus(addr_width(self.regmap))),
            "obs": Out(OBS_PORT),
            "orders": Out(stream.Signature(order_layout)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.books = books = self._books
        m.submodules.csr = csr = CSR(self.regmap)
        wiring.connect(m, wiring.flipped(self.feed), books.feed)
        wiring.connect(m, wiring.flipped(self.bus), csr.bus)
        cycle = Signal(64)
        m.d.sync += cycle.eq(cycle + 1)
        m.d.comb += [csr.cycle.eq(cycle), csr.malformed_count.eq(books.malformed_count)]
        def element(port, v):
            # A one-venue map has plain registers: indexing their port would take a bit.
            return getattr(csr, port)[v] if self.venues > 1 else getattr(csr, port)

        for v in range(self.venues):
            st = books.venue[v]
            for reg, counter in _COUNTERS:
                m.d.comb += element(reg, v).eq(getattr(st.counters, counter))
            m.d.comb += [element("best_bid", v).eq(st.best_bid),
                         element("best_ask", v).eq(st.best_ask),
                         element("book_flags_set", v).eq(st.events.as_value())]
        msg = self.feed.payload
        self._observe(m, books, msg, self.feed.valid & self.feed.ready, cycle)
        m.d.comb += self.orders.valid.eq(0)
        return m


def make_core(core, venues, levels, capacity=None):
    """The engine core a board top wraps: ``engine`` (the whole Engine) or ``books``."""
    if core == "engine":
        return Engine(venues, levels, capacity)
    if core == "books":
        return BooksEngine(venues, levels, capacity)
    raise ValueError(f"core must be one of {', '.join(CORES)}, not {core!r}")


def ecp5_pll(fin, fout):
    """EHXPLLL dividers ``(clki_div, clkfb_div, clkop_div, achieved_hz)`` closest to ``fout``.

    CLKOP feeds back, so CLKOP = fin / clki_div * clkfb_div; the limits are the datasheet's
    (PFD 3.125-400 MHz, VCO 400-800 MHz, output 10-400 MHz).
    """
    best = None
    for clki in range(1, 129):
        pfd = fin / clki
        if not 3.125e6 <= pfd <= 400e6:
            continue
        for fb in range(1, 81):
            out = pfd * fb
            if not 10e6 <= out <= 400e6:
                continue
            op = -(-400e6 // out)   # the smallest output divider that lifts the VCO to 400 MHz
            if out * op > 800e6:
                continue
            if best is None or abs(out - fout) < abs(best[3] - fout):
                best = (clki, fb, int(op), out)
    if best is None or abs(best[3] - fout) > 0.01 * fout:
        raise ValueError(f"the ECP5 PLL cannot make {fout / 1e6:g} MHz from {fin / 1e6:g} MHz")
    return best


def _ecp5_global(m, signal):
    """``signal`` through an ECP5 DCCA: nextpnr routes its output on a global net."""
    out = Signal(name="core_rst_global")
    m.submodules.core_rst_dcca = Instance("DCCA", i_CLKI=signal, i_CE=1, o_CLKO=out)
    return out


class BridgedCore(wiring.Component):
    """``core`` behind a :class:`~obcore.hw.boards.bridge.Bridge` on the UART pins ``rx`` and
    ``tx``: everything of a board top but its clock and pins (so a test bench can run it).

    The bridge's RESET request resets only the core. Event strobes for LEDs: ``fed`` (a
    message entered the core), ``ordered`` (an order left it), ``error`` (the bridge counted
    an error).

    ``reset_buffer(m, rst)``, if given, returns ``rst`` through a global buffer of the
    device: the core then runs in a domain of its own on the ``sync`` clock whose one reset
    is that buffered signal (the ``sync`` reset or the bridge's RESET), so the reset of every
    core flip-flop (~20,000 with 2 venues) takes the global network, not fabric routing
    (docs/boards.md). Hardware only: the simulators see the two clocks a delta apart.
    """

    rx: In(1, init=1)
    tx: Out(1, init=1)
    fed: Out(1)
    ordered: Out(1)
    error: Out(1)

    def __init__(self, core, divisor, *, clock_hz=0, reset_buffer=None):
        self.core, self.reset_buffer = core, reset_buffer
        self.bridge = Bridge(addr_width(core.regmap), divisor, clock_hz=clock_hz,
                             map_words=core.regmap.size)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        core, bridge = self.core, self.bridge
        m.submodules.bridge = bridge
        if self.reset_buffer is None:
            m.submodules.core = ResetInserter({"sync": bridge.engine_rst})(core)
        else:
            m.domains.core = cd = ClockDomain("core", local=True)
            m.d.comb += [cd.clk.eq(ClockSignal("sync")),
                         cd.rst.eq(self.reset_buffer(m, ResetSignal("sync") | bridge.engine_rst))]
            m.submodules.core = DomainRenamer({"sync": "core"})(core)
        wiring.connect(m, bridge.feed, core.feed)
        wiring.connect(m, bridge.bus, core.bus)
        wiring.connect(m, core.obs, bridge.obs)
        wiring.connect(m, core.orders, bridge.orders)
        m.d.comb += [bridge.rx.eq(self.rx), self.tx.eq(bridge.tx),
                     self.fed.eq(bridge.feed.valid & core.feed.ready),
                     self.ordered.eq(core.orders.valid & bridge.orders.ready),
                     self.error.eq(bridge.error)]
        return m


class BoardTop(wiring.Component):
    """A platform top: a :class:`BridgedCore` on the board's ``uart`` resource at ``baud``.

    ``pll="ecp5"`` makes the ``sync`` clock of ``clock_hz`` from the board clock with an
    EHXPLLL, held in reset until it locks, and puts the core's reset on a global net (a
    DCCA, see :class:`BridgedCore`); ``pll=None`` runs ``sync`` on the board clock
    (``clock_hz`` must be its frequency). LEDs (as many as the board has, in this order):
    heartbeat (1 Hz), feed activity, order activity, bridge error; each event lights its LED
    for 50 ms so a single message shows.
    """

    def __init__(self, core, *, clock_hz, baud, pll=None):
        if pll not in (None, "ecp5"):
            raise ValueError(f"pll must be None or 'ecp5', not {pll!r}")
        self.core, self.pll, self.baud = core, pll, baud
        self.clock_hz = int(clock_hz)
        self.divisor = divisor_for(self.clock_hz, baud)
        super().__init__({})

    def _clock(self, m, platform):
        if self.pll is None:
            if abs(platform.default_clk_frequency - self.clock_hz) > 1:
                raise ValueError(f"without a PLL the clock is the board's "
                                 f"{platform.default_clk_frequency / 1e6:g} MHz")
            return
        clki, fb, op, achieved = ecp5_pll(platform.default_clk_frequency, self.clock_hz)
        m.submodules.clk_in = clk = io.Buffer("i", platform.request(platform.default_clk, 0,
                                                                    dir="-"))
        m.domains.sync = cd = ClockDomain("sync")
        locked = Signal()
        m.submodules.pll = Instance(
            "EHXPLLL",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_CLKOP_ENABLE="ENABLED",
            p_CLKI_DIV=clki, p_CLKFB_DIV=fb, p_CLKOP_DIV=op, p_CLKOP_CPHASE=op // 2,
            p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
            i_CLKI=clk.i, i_CLKFB=cd.clk, i_RST=0, i_STDBY=0, i_PHASESEL0=0, i_PHASESEL1=0,
            i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1, i_PLLWAKESYNC=0, i_ENCLKOP=0,
            o_CLKOP=cd.clk, o_LOCK=locked)
        m.submodules.reset_sync = ResetSynchronizer(~locked, domain="sync")
        platform.add_clock_constraint(cd.clk, achieved)

    def elaborate(self, platform):
        m = Module()
        self._clock(m, platform)
        m.submodules.bridged = bridged = BridgedCore(
            self.core, self.divisor, clock_hz=self.clock_hz,
            reset_buffer=_ecp5_global if self.pll == "ecp5" else None)
        uart = platform.request("uart", 0, dir="-")
        m.submodules.uart_rx = rx = io.Buffer("i", uart.rx)
        m.submodules.uart_tx = tx = io.Buffer("o", uart.tx)
        m.d.comb += [bridged.rx.eq(rx.i), tx.o.eq(bridged.tx)]

        heartbeat = Signal()
        count = Signal(range(self.clock_hz // 2))
        m.d.sync += count.eq(count - 1)
        with m.If(count == 0):
            m.d.sync += [count.eq(self.clock_hz // 2 - 1), heartbeat.eq(~heartbeat)]
        events = [bridged.fed, bridged.ordered, bridged.error]
        lights = [heartbeat, *(self._stretch(m, e, i) for i, e in enumerate(events))]
        for i, light in enumerate(lights):
            try:
                led = platform.request("led", i, dir="-")
            except ResourceError:
                break
            m.submodules[f"led{i}"] = buf = io.Buffer("o", led)
            m.d.comb += buf.o.eq(light)
        return m

    def _stretch(self, m, event, index):
        """``event`` held for 50 ms, so a single strobe is visible."""
        hold = Signal(range(self.clock_hz // 20 + 1), name=f"led{index + 1}_hold")
        with m.If(event):
            m.d.sync += hold.eq(self.clock_hz // 20)
        with m.Elif(hold != 0):
            m.d.sync += hold.eq(hold - 1)
        return hold != 0
