"""One venue's L2 book: two sorted register arrays with a truncation bound, events and counters.

Latency, in cycles after the edge that accepts a message (see ``docs/book.md``):

* ``BBO_LATENCY`` = 1: best bid/ask price and size, the top-N arrays, ``valid``, ``exact``,
  ``synced`` (all straight from registers, at most one gate).
* ``STATUS_LATENCY`` = 2: depth, counts, the event strobes, the counters and ``updated``.

Throughput is one message per cycle on any mix of venues; nothing stalls.
"""

import functools

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from ..sim.ladder_model import check_window
from .ingress import COUNTER_WIDTH, PRICE_WIDTH, SIZE_WIDTH, Op, op_layout
from .layouts import Side

__all__ = ["BBO_LATENCY", "STATUS_LATENCY", "SideOp", "side_cmd_layout", "event_layout",
           "counter_layout", "status_signature", "check_levels", "check_book_window",
           "depth_width", "BookSide", "Book"]

BBO_LATENCY = 1
STATUS_LATENCY = 2

# Bit i is the model's FLAG_* bit i, so the CSR can OR ``events`` into its sticky flags as is.
event_layout = data.StructLayout({"gap": 1, "crossed": 1, "locked": 1, "capacity": 1,
                                  "missing": 1})
# The model's VenueCounters, each wrapping modulo 2^32. ``crossed`` counts locked books too.
counter_layout = data.StructLayout(dict.fromkeys(
    ("msgs", "gaps", "missing", "crossed", "capacity"), COUNTER_WIDTH))


class SideOp(enum.Enum, shape=2):
    """What one side does this cycle."""
    NONE = 0
    SET = 1      # set the size of ``price``, inserting the level if absent
    DELETE = 2   # remove ``price``
    CLEAR = 3    # empty the side and forget the bound


def side_cmd_layout(price_width):
    return data.StructLayout({"op": SideOp, "price": price_width, "size": SIZE_WIDTH})


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def check_levels(levels, capacity):
    """Validate ``levels`` and ``capacity``; return the capacity (``None`` means 2 x levels)."""
    if not (_is_int(levels) and levels >= 1):
        raise ValueError(f"levels must be a positive integer, not {levels!r}")
    if capacity is None:
        return 2 * levels
    if not (_is_int(capacity) and capacity >= levels):
        raise ValueError(f"capacity must be an integer >= levels ({levels}), or None for "
                         f"2 x levels, not {capacity!r}")
    return capacity


def check_book_window(window):
    """Validate ``window``: ``None`` (no ladder) or a power of two >= 64 (ticks per side)."""
    return None if window is None else check_window(window)


def _deep():
    from . import deep  # deep.py builds on BookSide: imported when a Book needs it
    return deep


def depth_width(levels):
    """Bits of a sum of ``levels`` sizes below 2^31 (35 for 16 levels)."""
    return SIZE_WIDTH + (levels - 1).bit_length()


def status_signature(levels):
    """One venue's outputs: prices in ticks, sizes and depths in lots, 0 where a level is absent.

    Members down to ``synced`` follow a message by ``BBO_LATENCY`` cycles, the rest by
    ``STATUS_LATENCY``; ``updated`` pulses when all of them show that message.
    """
    return wiring.Signature({
        "best_bid": Out(PRICE_WIDTH), "best_bid_qty": Out(SIZE_WIDTH),
        "best_ask": Out(PRICE_WIDTH), "best_ask_qty": Out(SIZE_WIDTH),
        "bid_prices": Out(data.ArrayLayout(PRICE_WIDTH, levels)),   # best first
        "bid_sizes": Out(data.ArrayLayout(SIZE_WIDTH, levels)),
        "ask_prices": Out(data.ArrayLayout(PRICE_WIDTH, levels)),
        "ask_sizes": Out(data.ArrayLayout(SIZE_WIDTH, levels)),
        "valid": Out(1),    # both sides non-empty
        "exact": Out(1),    # neither side short: the top-N levels are the venue's true ones
        "synced": Out(1),   # no sequence gap since reset or the last snapshot no gap hit
        "bid_depth": Out(depth_width(levels)), "ask_depth": Out(depth_width(levels)),
        "bid_count": Out(range(levels + 1)), "ask_count": Out(range(levels + 1)),  # <= levels
        "updated": Out(1),                  # strobe: a message of this venue, fully shown
        "events": Out(event_layout),        # strobes, one cycle per message that raised them
        "counters": Out(counter_layout),
    })


class BookSide(wiring.Component):
    """One side's levels, best first, in ``capacity`` registers with the truncation bound.

    The cells hold a strictly sorted prefix of valid levels; empty cells read price 0, size 0.
    The sort key is the price for asks and its complement for bids (bit-inverted), so both
    sides share this code and "smaller key" means "better". A SET that must insert into a full
    side drops the worst level (possibly the new one): ``bound`` becomes the dropped key, and
    from then on any SET/DELETE at or beyond it is ignored, because the book there is unknown.
    Levels better than the bound are exact, so the top ``levels`` are exact unless the side is
    truncated and holds fewer than ``levels`` (``short``). CLEAR forgets the bound.

    Every cell compares the command's key with its own (``lt``, ``eq``) and decides from that,
    its left neighbour's ``lt`` and the broadcast operation alone: insert shifts right, delete
    shifts left, a SET of a present price rewrites that cell's size.

    Cells, ``nonempty``, ``short``, ``truncated`` follow ``cmd`` by 1 cycle; ``count`` and
    ``depth`` (a balanced adder tree over the top ``levels`` sizes) by 2. ``missing`` is
    combinational: this cycle's DELETE names a price that is absent (and not ignored).

    ``refill`` adds the ports a price ladder behind the side uses (``hw/deep.py``): ``fill``
    appends a level beyond the bound and moves the bound just past it, ``open`` removes the
    bound; ``full`` and ``disturb`` (this cycle's command moves the bound or reaches only
    beyond it) tell the refill when an answer may be used. Without it the design is unchanged.
    """

    def __init__(self, levels, capacity, side, price_width=PRICE_WIDTH, refill=False):
        capacity = check_levels(levels, capacity)
        if side not in (Side.BID, Side.ASK):
            raise ValueError(f"side must be Side.BID or Side.ASK, not {side!r}")
        if not (_is_int(price_width) and 1 <= price_width <= PRICE_WIDTH):
            raise ValueError(f"price_width must be an integer 1..{PRICE_WIDTH}, "
                             f"not {price_width!r}")
        self.levels, self.capacity, self.side = levels, capacity, Side(side)
        self.price_width = price_width
        self._level = data.StructLayout({"price": price_width, "size": SIZE_WIDTH, "valid": 1})
        # State, public so the formal proof can state invariants over every cell. ``bound`` is
        # the key of the best level ever dropped; its MSB is set while none was. One signal
        # per cell, not one array: Verilator copies a whole array signal for every cell's
        # update: 13% of the native model's instructions per cycle, 3% of its time.
        self.cells = [Signal(self._level, name=f"cell_{i}") for i in range(capacity)]
        self.bound = Signal(price_width + 1, init=(2 << price_width) - 1)
        self.refill = refill
        extra = {} if not refill else {
            # From the ladder (``hw.deep.DeepSide``), only in a cycle without ``cmd`` and
            # with the last cell empty: append the level at the end and move the bound (the
            # horizon) just past it. ``open``: the ladder holds nothing beyond, no bound.
            "fill": In(data.StructLayout({"valid": 1, "price": price_width,
                                          "size": SIZE_WIDTH})),
            "open": In(1),
            "full": Out(1),                  # the last cell holds a level
            "disturb": Out(1),   # this cycle's cmd moves the bound or reaches only beyond it
        }
        super().__init__({**extra,
            "cmd": In(side_cmd_layout(price_width)),
            "prices": Out(data.ArrayLayout(price_width, levels)),
            "sizes": Out(data.ArrayLayout(SIZE_WIDTH, levels)),
            "nonempty": Out(1),
            "truncated": Out(1),
            "short": Out(1),       # truncated with fewer than ``levels`` levels left
            "missing": Out(1),
            "count": Out(range(levels + 1)),
            "depth": Out(depth_width(levels)),
        })

    def _key(self, price, valid):
        """Sort key: ascending is best first; an empty cell sorts after every price."""
        mask = (1 << self.price_width) - 1 if self.side == Side.BID else 0
        return Cat(price ^ mask, ~valid)

    def elaborate(self, platform):
        m = Module()
        cells, cmd, n, cap = self.cells, self.cmd, self.levels, self.capacity

        if self.refill:   # a fill is a SET that the bound does not stop
            op, fill = Signal(SideOp), self.fill
            price, size = Signal(self.price_width), Signal(SIZE_WIDTH)
            m.d.comb += [op.eq(Mux(fill.valid, SideOp.SET, cmd.op)),
                         price.eq(Mux(fill.valid, fill.price, cmd.price)),
                         size.eq(Mux(fill.valid, fill.size, cmd.size))]
        else:
            op, price, size = cmd.op, cmd.price, cmd.size
        key = self._key(price, Const(1))
        # Everything a cell decides is qualified by an operation, so computing it under
        # ``active`` changes no logic; the Verilated model then skips a side that no command
        # touches (three of the four sides on most messages) instead of evaluating 32 compares
        # and source muxes for it every cycle. One 1-bit signal per cell and decision: bits of
        # a shared vector would each cost a read-modify-write of the whole vector.
        active = Signal()
        m.d.comb += active.eq(op != SideOp.NONE)
        lt = [Signal(name=f"lt_{i}") for i in range(cap)]   # command key before the cell's
        eq = [Signal(name=f"eq_{i}") for i in range(cap)]   # ... equal to it
        with m.If(active):
            for i, cell in enumerate(cells):
                cell_key = self._key(cell.price, cell.valid)
                m.d.comb += [lt[i].eq(key < cell_key), eq[i].eq(key == cell_key)]
        ignored = key >= self.bound   # the bound's MSB is set while the side is not truncated
        if self.refill:
            ignored = ignored & ~self.fill.valid
        hit = Cat(eq).any()
        insert = (op == SideOp.SET) & ~ignored & ~hit
        update = (op == SideOp.SET) & ~ignored & hit
        remove = (op == SideOp.DELETE) & ~ignored & hit
        m.d.comb += self.missing.eq((op == SideOp.DELETE) & ~ignored & ~hit)
        new = Signal(self._level)
        m.d.comb += [new.price.eq(price), new.size.eq(size), new.valid.eq(1)]

        for i, cell in enumerate(cells):
            # One source per cell, chosen from its own and its left neighbour's compare:
            # two wide muxes per bit and separate enables, so a size update costs no extra mux.
            from_left = Signal(name=f"from_left_{i}")    # the new level lands to my left
            from_right = Signal(name=f"from_right_{i}")  # the removed one is here or left
            take = Signal(name=f"take_{i}")              # ... or the new one lands here
            with m.If(active):
                m.d.comb += [from_left.eq(insert & lt[i - 1] if i else 0),
                             from_right.eq(remove & (lt[i] | eq[i])),
                             take.eq(from_left | from_right | (insert & lt[i]))]
                with m.If(op == SideOp.CLEAR):
                    m.d.sync += cell.eq(0)
                with m.Else():
                    # The source is picked inside each enable, not as a signal of its own: the
                    # same muxes, but the Verilated model picks only for a cell that changes.
                    def move(fields, i=i, cell=cell, from_left=from_left, from_right=from_right):
                        with m.If(from_left):
                            m.d.sync += [cell[f].eq(cells[i - 1][f]) for f in fields]
                        with m.Elif(from_right):
                            m.d.sync += [cell[f].eq(cells[i + 1][f] if i + 1 < cap else 0)
                                         for f in fields]
                        with m.Else():
                            m.d.sync += [cell[f].eq(new[f]) for f in fields]
                    with m.If(take):
                        move(("price", "valid"))
                    with m.If(take | (update & eq[i])):   # an update's source is ``new``
                        move(("size",))

        last = cells[cap - 1]
        with m.If(op == SideOp.CLEAR):
            m.d.sync += self.bound.eq(self.bound.init)
        with m.Elif(insert & last.valid):   # full: the worst of the cells and the new one drops
            m.d.sync += self.bound.eq(Mux(lt[-1], self._key(last.price, last.valid), key))
        if self.refill:
            with m.If(self.fill.valid):   # never full then: nothing drops
                m.d.sync += self.bound.eq(key + 1)
            with m.Elif(self.open):
                m.d.sync += self.bound.eq(self.bound.init)
            level_op = (cmd.op == SideOp.SET) | (cmd.op == SideOp.DELETE)
            m.d.comb += [self.full.eq(last.valid),
                         self.disturb.eq((level_op & ignored) | (cmd.op == SideOp.CLEAR)
                                         | (insert & last.valid))]

        m.d.comb += [
            self.nonempty.eq(cells[0].valid),
            self.truncated.eq(~self.bound[-1]),
            self.short.eq(self.truncated & ~cells[n - 1].valid),
        ]
        for i in range(n):
            m.d.comb += [self.prices[i].eq(cells[i].price), self.sizes[i].eq(cells[i].size)]

        # Count: the valid bits are a thermometer code, so find its edge and encode it.
        edges = [cells[i].valid & ~cells[i + 1].valid for i in range(n - 1)]
        edges.append(cells[n - 1].valid)
        count = Signal.like(self.count, name="count_next")
        for b in range(len(count)):
            m.d.comb += count[b].eq(Cat(e for i, e in enumerate(edges) if (i + 1) >> b & 1).any())
        # Depth: pairwise sums, log2(levels) adders deep, registered once.
        sums = [cells[i].size for i in range(n)]
        while len(sums) > 1:   # an odd one out moves up a level unchanged
            pairs = [a + b for a, b in zip(sums[0::2], sums[1::2], strict=False)]
            sums = pairs + sums[2 * len(pairs):]
        # The cells change only in a cycle with ``active`` (reset clears these too), so the
        # sums are recomputed only the cycle after one: the same values, less to simulate.
        changed = Signal()
        m.d.sync += changed.eq(active)
        with m.If(changed):
            m.d.sync += [self.count.eq(count), self.depth.eq(sums[0])]
        return m


class Book(wiring.Component):
    """One venue: both sides, snapshot and sync state, events and counters.

    ``op`` comes from :class:`obcore.hw.ingress.Ingress` (one accepted message per cycle);
    ``status`` is :func:`status_signature`. Event semantics are the model's: after every
    message of the venue, ``crossed``/``locked`` pulse if both sides are non-empty, no snapshot
    is in progress and best bid > / == best ask; ``capacity`` pulses if a side is short;
    ``gap`` and ``missing`` pulse for the message that caused them. With ``window`` each side
    is a :class:`obcore.hw.deep.DeepSide` and ``ladders[side]`` its ladder status.
    """

    def __init__(self, levels, capacity=None, window=None):
        self.capacity = check_levels(levels, capacity)
        self.levels, self.window = levels, check_book_window(window)
        ladders = {} if window is None else {
            "ladders": Out(data.ArrayLayout(_deep().ladder_status_layout, 2))}   # by Side
        super().__init__({
            "op": In(stream.Signature(op_layout, always_ready=True)),
            "status": Out(status_signature(levels)),
            **ladders,
        })

    def elaborate(self, platform):
        m = Module()
        if self.window is None:
            side = functools.partial(BookSide, self.levels, self.capacity)
        else:
            side = functools.partial(_deep().DeepSide, self.levels, self.capacity,
                                     window=self.window)
        m.submodules.bids = bids = side(Side.BID)
        m.submodules.asks = asks = side(Side.ASK)
        if self.window is not None:
            for unit in (bids, asks):
                status = self.ladders[unit.side]
                m.d.comb += [status[name].eq(getattr(unit, name))
                             for name in _deep().ladder_status_layout.members]
        valid, op, s = self.op.valid, self.op.payload, self.status

        clear = valid & ((op.op == Op.CLEAR) | (op.op == Op.SNAPSHOT_START))
        for side, unit in ((Side.BID, bids), (Side.ASK, asks)):
            mine = valid & (op.side == side)
            m.d.comb += [unit.cmd.price.eq(op.price), unit.cmd.size.eq(op.size)]
            with m.If(mine & (op.op == Op.SET)):
                m.d.comb += unit.cmd.op.eq(SideOp.SET)
            with m.Elif(mine & (op.op == Op.DELETE)):
                m.d.comb += unit.cmd.op.eq(SideOp.DELETE)
            with m.Elif(clear):
                m.d.comb += unit.cmd.op.eq(SideOp.CLEAR)

        in_snapshot = Signal()
        clean = Signal()   # a snapshot is in progress and no gap has hit it
        synced = Signal(init=1)
        with m.If(valid & (op.op == Op.SNAPSHOT_START)):   # never gapped: it resyncs the seq
            m.d.sync += [in_snapshot.eq(1), clean.eq(1)]
        with m.Elif(valid & (op.op == Op.SNAPSHOT_END)):
            # Only a snapshot that no gap hit (this END included) resyncs the book.
            m.d.sync += [in_snapshot.eq(0), clean.eq(0),
                         synced.eq((synced | clean) & ~op.gap)]
        with m.Elif(valid & op.gap):
            m.d.sync += [synced.eq(0), clean.eq(0)]

        best_bid, best_ask = bids.prices[0], asks.prices[0]
        m.d.comb += [
            s.best_bid.eq(best_bid), s.best_bid_qty.eq(bids.sizes[0]),
            s.best_ask.eq(best_ask), s.best_ask_qty.eq(asks.sizes[0]),
            s.bid_prices.eq(bids.prices), s.bid_sizes.eq(bids.sizes),
            s.ask_prices.eq(asks.prices), s.ask_sizes.eq(asks.sizes),
            s.valid.eq(bids.nonempty & asks.nonempty),
            s.exact.eq(~(bids.short | asks.short)),
            s.synced.eq(synced),
            s.bid_depth.eq(bids.depth), s.ask_depth.eq(asks.depth),
            s.bid_count.eq(bids.count), s.ask_count.eq(asks.count),
        ]

        # Cycle +1: the message's own events are registered; the book's state is now visible,
        # so the checks that the model makes after applying the message are evaluated here.
        applied, gapped, missed = Signal(), Signal(), Signal()
        m.d.sync += [applied.eq(valid), gapped.eq(valid & op.gap),
                     missed.eq(bids.missing | asks.missing)]
        checked = applied & ~in_snapshot & s.valid
        events = Signal(event_layout)
        m.d.comb += [
            events.gap.eq(gapped), events.missing.eq(missed),
            events.crossed.eq(checked & (best_bid > best_ask)),
            events.locked.eq(checked & (best_bid == best_ask)),
            events.capacity.eq(applied & ~s.exact),
        ]
        # Cycle +2: strobes and counters together.
        m.d.sync += [s.events.eq(events), s.updated.eq(applied)]
        for name, hit in (("msgs", applied), ("gaps", events.gap), ("missing", events.missing),
                          ("crossed", events.crossed | events.locked),
                          ("capacity", events.capacity)):
            with m.If(hit):
                m.d.sync += s.counters[name].eq(s.counters[name] + 1)
        return m
