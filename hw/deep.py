"""One deep book side: the sorted register array in front, a price ladder behind, refilled.

See ``docs/book.md`` (*Deep books*) and ``docs/ladder.md``. The array (:class:`BookSide`)
shows the top levels exactly as without a ladder; its bound becomes a *horizon* ``h``: the
cells hold exactly the side's true levels with a key below ``h``. Every SET/DELETE/CLEAR also
goes to the :class:`PriceLadder`, which keeps every level inside its window. While the array
is truncated and not full, the side asks the ladder for the best level at or beyond ``h``
(one query in flight, ``QUERY_LATENCY`` = 3 cycles) and appends the answer in a cycle in which
the side has no command, moving ``h`` just past it: one level per ``REFILL_CYCLES`` = 4 idle
cycles. The feed is never stalled.

Stale-answer rule: an answer describes the ladder before the query's cycle, so it is dropped
(and asked again) when any command from the query's cycle until the answer reached only the
ladder (at or beyond ``h``), cleared the side or moved ``h`` (an insert into a full array), or
when the side has a command in the answer's cycle or is full.

Trust rule: the ladder only holds its window. An answer is used only when nothing it skipped
can have been refused: not when ``lost_better`` is set and ``h`` lies before the window, and
a ``none`` not when ``lost_worse`` is set. An answer that fails this sets ``stuck``: no more
refills until CLEAR, and the side reads short (not exact) whenever it holds fewer than
``levels`` levels, exactly as a truncated side without a ladder. A trusted ``none`` means the
cells hold the whole side: ``h`` becomes infinite.

Window placement: the first SET after reset or CLEAR (SNAPSHOT_START clears) centres the
window on its price (``centre``); a snapshot lists the best level of each side first.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .book import BookSide, SideOp, depth_width, side_cmd_layout
from .ingress import COUNTER_WIDTH, PRICE_WIDTH
from .ladder import QUERY_LATENCY, LadderOp, PriceLadder
from .layouts import Side

__all__ = ["DeepSide", "REFILL_CYCLES", "ladder_status_layout"]

REFILL_CYCLES = QUERY_LATENCY + 1   # ask, wait for the answer, append: one level per 4 cycles
# One side's ladder status, as ``Book.ladders[side]`` shows it (``DeepSide``'s outputs).
ladder_status_layout = data.StructLayout({"out_of_window_count": COUNTER_WIDTH,
                                          "lost_better": 1, "lost_worse": 1, "stuck": 1,
                                          "refilling": 1})


class DeepSide(wiring.Component):
    """:class:`BookSide`'s ports and timing, plus the ladder's status (``window`` ticks).

    ``out_of_window`` (strobe), ``out_of_window_count`` (32-bit, wrapping), ``lost_better``
    and ``lost_worse`` (sticky until CLEAR) follow a command by 1 cycle; ``stuck`` (until
    CLEAR) by the refill that found the ladder could not be trusted. ``refilling``: a refill
    is wanted (truncated, not full, not stuck) or a query is in flight; while it is 0, cycles
    without a command change nothing.
    """

    def __init__(self, levels, capacity, side, window, price_width=PRICE_WIDTH):
        self.array = BookSide(levels, capacity, side, price_width, refill=True)
        self.ladder = PriceLadder(side, window, price_width)
        self.levels, self.capacity, self.side = levels, self.array.capacity, self.array.side
        self.window, self.price_width = window, price_width
        super().__init__({
            "cmd": In(side_cmd_layout(price_width)),
            "prices": Out(self.array.prices.shape()),
            "sizes": Out(self.array.sizes.shape()),
            "nonempty": Out(1), "truncated": Out(1), "short": Out(1), "missing": Out(1),
            "count": Out(range(levels + 1)),
            "depth": Out(depth_width(levels)),
            "out_of_window": Out(1),
            "out_of_window_count": Out(COUNTER_WIDTH),
            "lost_better": Out(1), "lost_worse": Out(1), "stuck": Out(1),
            "refilling": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.array = array = self.array
        m.submodules.ladder = ladder = self.ladder
        cmd, pw = self.cmd, self.price_width
        mask = (1 << pw) - 1 if self.side == Side.BID else 0   # bids: key = ~price
        m.d.comb += array.cmd.eq(cmd)
        for name in ("prices", "sizes", "nonempty", "truncated", "short", "missing", "count",
                     "depth"):
            m.d.comb += getattr(self, name).eq(getattr(array, name))
        for name in ("out_of_window", "out_of_window_count", "lost_better", "lost_worse"):
            m.d.comb += getattr(self, name).eq(getattr(ladder, name))

        # Every command goes to the ladder; the first SET after reset or CLEAR centres it.
        placed = Signal()
        up = ladder.update
        m.d.comb += [up.valid.eq(cmd.op != SideOp.NONE), up.payload.price.eq(cmd.price),
                     up.payload.size.eq(cmd.size), up.payload.centre.eq(~placed)]
        with m.Switch(cmd.op):
            with m.Case(SideOp.SET):
                m.d.comb += up.payload.op.eq(LadderOp.SET)
                m.d.sync += placed.eq(1)
            with m.Case(SideOp.DELETE):
                m.d.comb += up.payload.op.eq(LadderOp.DELETE)
            with m.Case(SideOp.CLEAR):
                m.d.comb += up.payload.op.eq(LadderOp.CLEAR)
                m.d.sync += placed.eq(0)

        # Refill: one query in flight; ``wait`` counts the cycles since it was asked.
        wait, stale = Signal(range(REFILL_CYCLES)), Signal()
        wants = array.truncated & ~array.full & ~self.stuck
        issue = (wait == 0) & wants
        m.d.comb += self.refilling.eq(wants | (wait != 0))
        q, a = ladder.query, ladder.answer
        m.d.comb += [q.valid.eq(issue), q.payload.price.eq(array.bound[:pw] ^ mask),
                     q.payload.inclusive.eq(1), a.ready.eq(1)]
        with m.If(issue):
            m.d.sync += [wait.eq(1), stale.eq(array.disturb)]
        with m.Elif(wait != 0):
            m.d.sync += [wait.eq(wait + 1), stale.eq(stale | array.disturb)]

        # The answer lands at wait == QUERY_LATENCY (``a.valid``: nothing else is in flight).
        ok = a.valid & ~stale & (cmd.op == SideOp.NONE) & ~array.full
        before = array.bound < (ladder.base ^ mask)   # h lies before the window
        trusted = ~(ladder.lost_better & before) & ~(a.payload.none & ladder.lost_worse)
        m.d.comb += [array.fill.valid.eq(ok & trusted & ~a.payload.none),
                     array.fill.price.eq(a.payload.price), array.fill.size.eq(a.payload.size),
                     array.open.eq(ok & trusted & a.payload.none)]
        with m.If(cmd.op == SideOp.CLEAR):
            m.d.sync += self.stuck.eq(0)
        with m.Elif(ok & ~trusted):
            m.d.sync += self.stuck.eq(1)
        return m

