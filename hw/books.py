"""Several venues' L2 books behind one feed: the ingress and one :class:`Book` per venue."""

from amaranth.hdl import Module
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .book import Book, check_book_window, check_levels, status_signature
from .deep import ladder_status_layout
from .ingress import COUNTER_WIDTH, Ingress, check_venues, feed_layout

__all__ = ["Books"]


class Books(wiring.Component):
    """The order books of ``venues`` venues, ``levels`` exact levels per side.

    Ports:

    * ``feed``: the feed stream (``feed_layout``), always ready, one message per cycle.
    * ``venue[v]``: :func:`obcore.hw.book.status_signature` for venue ``v``: BBO, top-N
      arrays, ``valid``/``exact``/``synced`` one cycle after the message; depth, counts,
      ``updated``, the ``events`` strobes (gap, crossed, locked, capacity, missing: the sticky
      CSR flags' set inputs) and the 32-bit wrapping ``counters`` two cycles after.
    * ``malformed`` (strobe) and ``malformed_count``: rejected messages, all venues, two
      cycles after.

    ``capacity`` registers per side (default ``2 * levels``) hold the levels; see
    ``docs/book.md`` for why that keeps the top ``levels`` exact and what happens beyond.
    ``window`` (ticks, a power of two >= 64) puts a price ladder behind every side that
    refills the array in idle cycles (``hw/deep.py``); ``ladders[v][side]`` is then its
    status. ``None`` (the default) builds the plain arrays.
    """

    def __init__(self, venues=2, levels=16, capacity=None, window=None):
        self.venues = check_venues(venues)
        self.capacity = check_levels(levels, capacity)
        self.levels, self.window = levels, check_book_window(window)
        ladders = {} if window is None else {
            "ladders": Out(data.ArrayLayout(ladder_status_layout, 2)).array(venues)}
        super().__init__({
            "feed": In(stream.Signature(feed_layout)),
            "venue": Out(status_signature(levels)).array(venues),
            "malformed": Out(1),
            "malformed_count": Out(COUNTER_WIDTH),
            **ladders,
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.ingress = ingress = Ingress(self.venues)
        wiring.connect(m, wiring.flipped(self.feed), ingress.feed)
        m.d.comb += [self.malformed.eq(ingress.malformed),
                     self.malformed_count.eq(ingress.malformed_count)]
        for v in range(self.venues):
            book = m.submodules[f"book{v}"] = Book(self.levels, self.capacity, self.window)
            wiring.connect(m, ingress.ops[v], book.op)
            wiring.connect(m, wiring.flipped(self.venue[v]), book.status)
            if self.window is not None:
                m.d.comb += self.ladders[v].eq(book.ladders)
        return m
