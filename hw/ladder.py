"""One side's price ladder: sizes by price in block RAM, a two-level bitmap, a next-level query.

See ``docs/ladder.md``. Slot ``j`` of the window holds the level whose sort key is
``base_key + j`` (key = price for asks, bit-inverted price for bids, so slot 0 is the best).
The occupancy bitmap is ``window / 64`` words of 64 bits in memory, with one *summary* bit per
word in registers: summary bit ``w`` is 1 exactly when word ``w`` holds a level. A word whose
summary bit is 0 reads as empty whatever the memory holds, so CLEAR and REBASE empty the whole
ladder in one cycle by clearing the summary register, and no size ever needs clearing.

Timing, in cycles after the cycle that accepts the transfer:

* ``update``: ``ready`` is always 1: one per cycle. The size is written at +2; the bitmap
  word is read at +0 (a port transparent to the bitmap's write port, so back-to-back updates
  of one word chain), modified and written at +1 with its summary bit.
* ``query``: answered on ``answer`` at ``QUERY_LATENCY`` = 3 when ``answer`` is not
  back-pressured; one per cycle. +1: summary search; +2: the two bitmap words; +3: the size.
  Hazard rule: an answer describes the ladder after every update accepted in an *earlier*
  cycle than its query, and none from the same or a later cycle. Each stage reads state
  written exactly that many updates behind (non-transparent ports), so no forwarding is needed.
* ``out_of_window``, ``out_of_window_count``, ``lost_better``, ``lost_worse``, ``base``: +1.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..sim.ladder_model import check_window
from .ingress import COUNTER_WIDTH, PRICE_WIDTH, SIZE_WIDTH
from .layouts import Side

__all__ = ["LadderOp", "QUERY_LATENCY", "WORD", "update_layout", "query_layout",
           "answer_layout", "PriceLadder", "first_set"]

QUERY_LATENCY = 3
WORD = 64          # bitmap bits per memory word (and per priority encoder)


class LadderOp(enum.Enum, shape=2):
    """An update of the ladder (the values of ``sim.ladder_model.SET`` ...)."""
    SET = 0      # the level at ``price`` has ``size`` (inserted if absent)
    DELETE = 1   # no level at ``price`` (absent already: nothing happens)
    CLEAR = 2    # empty the ladder; the window stays
    REBASE = 3   # empty the ladder and move the window's best slot to ``price``


def update_layout(price_width):
    """``centre`` with a SET: first empty the ladder and move the window so that ``price``
    sits at slot ``window / 2`` (slot 0 if that would put the window before key 0)."""
    return data.StructLayout({"op": LadderOp, "price": price_width, "size": SIZE_WIDTH,
                              "centre": 1})


def query_layout(price_width):
    """The best level worse than ``price`` (``inclusive``: at or worse)."""
    return data.StructLayout({"price": price_width, "inclusive": 1})


def answer_layout(price_width):
    """The level found, or ``none`` = 1 with price and size 0 (nothing in the window)."""
    return data.StructLayout({"price": price_width, "size": SIZE_WIDTH, "none": 1})


def first_set(m, value, name, en=1):
    """``(index, found)``: the lowest set bit of ``value``, without a priority chain; 0 and
    0 unless ``en`` (a stage without a query: nothing for a simulator to evaluate).

    ``value & -value`` isolates it (one carry chain), then each index bit is an OR.
    """
    n = len(value)
    onehot = Signal(n, name=f"{name}_onehot")
    index = Signal(range(max(n, 2)), name=f"{name}_index")
    found = Signal(name=f"{name}_found")
    with m.If(en):
        m.d.comb += [onehot.eq(value & (~value + 1)), found.eq(value.any())]
        for b in range(len(index)):
            m.d.comb += index[b].eq(Cat(onehot[i] for i in range(n) if i >> b & 1).any())
    return index, found


class PriceLadder(wiring.Component):
    """One side's levels indexed by price over ``window`` ticks (a power of two >= 64).

    ``update`` carries :class:`LadderOp` commands (prices in ticks, sizes in lots); a SET or
    DELETE outside the window changes nothing, pulses ``out_of_window`` and counts it
    (wrapping modulo 2^32); a refused SET also sets the sticky ``lost_better`` (before the
    window) or ``lost_worse`` (beyond it) until the next CLEAR or REBASE. ``query`` asks for
    the best level strictly worse than a price (``inclusive``: at or worse), a price better
    than the window meaning "the window's best"; ``answer`` returns them in order. ``base`` is
    the price of slot 0 (reset: 0 for asks, 2^price_width - 1 for bids). A SET with ``centre``
    empties the ladder, centres the window on its price and sets the level, in one update.
    """

    def __init__(self, side, window=4096, price_width=PRICE_WIDTH):
        if side not in (Side.BID, Side.ASK):
            raise ValueError(f"side must be Side.BID or Side.ASK, not {side!r}")
        if not (isinstance(price_width, int) and not isinstance(price_width, bool)
                and 1 <= price_width <= PRICE_WIDTH):
            raise ValueError(f"price_width must be an integer 1..{PRICE_WIDTH}, "
                             f"not {price_width!r}")
        self.side, self.window = Side(side), check_window(window)
        if window > 1 << price_width:
            raise ValueError(f"window {window} is wider than the {price_width}-bit price range")
        self.price_width = price_width
        self.words = window // WORD
        super().__init__({
            "update": In(stream.Signature(update_layout(price_width))),   # ready is 1
            "query": In(stream.Signature(query_layout(price_width))),
            "answer": Out(stream.Signature(answer_layout(price_width))),
            "base": Out(price_width),
            "out_of_window": Out(1),
            "out_of_window_count": Out(COUNTER_WIDTH),
            "lost_better": Out(1),
            "lost_worse": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        pw, window, words = self.price_width, self.window, self.words
        slot_bits = (window - 1).bit_length()
        word_bit = (WORD - 1).bit_length()
        mask = Const((1 << pw) - 1 if self.side == Side.BID else 0, pw)   # price <-> key

        base_key = Signal(pw)
        summary = Signal(words)   # bit w: bitmap word w holds a level
        m.d.comb += self.base.eq(base_key ^ mask)

        m.submodules.sizes = sizes = Memory(shape=SIZE_WIDTH, depth=window, init=[])
        m.submodules.bitmap = bitmap = Memory(shape=WORD, depth=words, init=[])
        size_write, size_read = sizes.write_port(), sizes.read_port()
        bits_write = bitmap.write_port()
        bits_update = bitmap.read_port(transparent_for=(bits_write,))
        bits_here, bits_next = bitmap.read_port(), bitmap.read_port()

        # Updates, +0: which slot; read its bitmap word.
        up, cmd = self.update.valid, self.update.payload
        m.d.comb += self.update.ready.eq(1)   # a top-level port, so not ``always_ready``
        is_set = cmd.op == LadderOp.SET
        key, centre = cmd.price ^ mask, is_set & cmd.centre
        centred = Mux(key < window // 2, 0, key - window // 2)[:pw]   # the centring's base
        offset = Signal(signed(pw + 1))
        m.d.comb += offset.eq(key - Mux(centre, centred, base_key))
        inside = (offset >= 0) & (offset < window)
        slot = offset[:slot_bits]
        level_op = up & (is_set | (cmd.op == LadderOp.DELETE))
        refused = level_op & ~inside
        emptied = up & ((cmd.op == LadderOp.CLEAR) | (cmd.op == LadderOp.REBASE) | centre)
        m.d.comb += bits_update.addr.eq(slot[word_bit:])

        u_valid, u_set, u_clear = Signal(), Signal(), Signal()
        u_word, u_bit = Signal(range(words)), Signal(word_bit)
        m.d.sync += [u_valid.eq(level_op & inside), u_set.eq(is_set), u_clear.eq(emptied),
                     u_word.eq(slot[word_bit:]), u_bit.eq(slot[:word_bit]),
                     self.out_of_window.eq(refused)]
        with m.If(refused):
            m.d.sync += self.out_of_window_count.eq(self.out_of_window_count + 1)
        with m.If(up & (cmd.op == LadderOp.REBASE)):
            m.d.sync += base_key.eq(key)
        with m.Elif(up & centre):
            m.d.sync += base_key.eq(centred)
        with m.If(emptied):
            m.d.sync += [self.lost_better.eq(0), self.lost_worse.eq(0)]
        with m.Elif(refused & is_set):
            with m.If(offset < 0):
                m.d.sync += self.lost_better.eq(1)
            with m.Else():
                m.d.sync += self.lost_worse.eq(1)

        # The size is written at +2, so a query's size read at its +2 sees the same updates as
        # its bitmap reads at +1 and its summary at +1: those of earlier cycles only.
        pending = data.StructLayout({"en": 1, "slot": slot_bits, "size": SIZE_WIDTH})
        size_1, size_2 = Signal(pending), Signal(pending)
        m.d.sync += [size_1.en.eq(up & is_set & inside), size_1.slot.eq(slot),
                     size_1.size.eq(cmd.size), size_2.eq(size_1)]
        m.d.comb += [size_write.en.eq(size_2.en), size_write.addr.eq(size_2.slot),
                     size_write.data.eq(size_2.size)]

        # Updates, +1: set or clear the bit; a word whose summary bit is 0 counts as empty, and
        # so does every word when the update also empties the ladder (a centring SET).
        old = Mux(summary.bit_select(u_word, 1) & ~u_clear, bits_update.data, 0)
        bit = (Const(1, WORD) << u_bit)[:WORD]
        new = Signal(WORD)
        m.d.comb += [new.eq(Mux(u_set, old | bit, old & ~bit)),
                     bits_write.en.eq(u_valid), bits_write.addr.eq(u_word),
                     bits_write.data.eq(new)]
        with m.If(u_clear):
            m.d.sync += summary.eq(Mux(u_valid, Const(1, words) << u_word, 0))
        with m.Elif(u_valid):
            m.d.sync += summary.bit_select(u_word, 1).eq(new.any())

        # Queries, +0: the first slot to search, 0..window (window: past the end).
        q, fifo_depth = self.query, QUERY_LATENCY + 1
        accept = q.valid & q.ready
        start = Signal(signed(pw + 2))
        m.d.comb += start.eq((q.payload.price ^ mask) + ~q.payload.inclusive - base_key)
        q1_valid, q1_start, q1_base = Signal(), Signal(range(window + 1)), Signal(pw)
        m.d.sync += [q1_valid.eq(accept), q1_base.eq(base_key),
                     q1_start.eq(Mux(start < 0, 0, Mux(start >= window, window, start)))]

        # +1: the start's word (bits from the start on) and the first non-empty word after it.
        word, past = q1_start[word_bit:], q1_start[slot_bits]
        after = Signal(words)
        with m.If(q1_valid):    # each stage computes only in a cycle with a query in it
            m.d.comb += after.eq(Cat(summary[i] & (word < i) for i in range(words)))
        next_word, found_next = first_set(m, after, "next_word", q1_valid)
        m.d.comb += [bits_here.addr.eq(word), bits_next.addr.eq(next_word)]
        q2_valid, q2_here, q2_found_next, q2_base = Signal(), Signal(), Signal(), Signal(pw)
        q2_word, q2_next, q2_bit = Signal(range(words)), Signal(range(words)), Signal(word_bit)
        m.d.sync += [q2_valid.eq(q1_valid), q2_base.eq(q1_base), q2_bit.eq(q1_start[:word_bit]),
                     q2_here.eq(summary.bit_select(word[:len(q2_word)], 1) & ~past),
                     q2_word.eq(word), q2_next.eq(next_word), q2_found_next.eq(found_next)]

        # +2: the first level from the start; read its size.
        here = Signal(WORD)
        with m.If(q2_valid):
            m.d.comb += here.eq(Cat(bits_here.data[i] & q2_here & (q2_bit <= i)
                                    for i in range(WORD)))
        bit_here, found_here = first_set(m, here, "bit_here", q2_valid)
        bit_next, _ = first_set(m, bits_next.data, "bit_next", q2_valid)
        found = Signal(slot_bits)
        m.d.comb += [found.eq(Mux(found_here, Cat(bit_here, q2_word), Cat(bit_next, q2_next))),
                     size_read.addr.eq(found)]
        none = ~found_here & ~q2_found_next
        q3_valid, q3_none, q3_price = Signal(), Signal(), Signal(pw)
        m.d.sync += q3_valid.eq(q2_valid)
        with m.If(q2_valid):
            m.d.sync += [q3_none.eq(none), q3_price.eq(Mux(none, 0, (q2_base + found)[:pw] ^ mask))]

        # +3: the answer, straight out unless ``answer`` is back-pressured or older answers
        # wait. Queries are accepted while every one in flight has a FIFO entry to fall into.
        result = Signal(answer_layout(pw))
        m.d.comb += [result.price.eq(q3_price), result.none.eq(q3_none),
                     result.size.eq(Mux(q3_none, 0, size_read.data))]
        m.submodules.waiting = fifo = SyncFIFO(width=len(result.as_value()), depth=fifo_depth)
        a = self.answer
        m.d.comb += [
            q.ready.eq(q1_valid + q2_valid + q3_valid + fifo.level < fifo_depth),
            a.valid.eq(fifo.r_rdy | q3_valid),
            a.payload.eq(Mux(fifo.r_rdy, fifo.r_data, result.as_value())),
            fifo.r_en.eq(a.ready),
            fifo.w_en.eq(q3_valid & (fifo.r_rdy | ~a.ready)),
            fifo.w_data.eq(result),
        ]
        return m
