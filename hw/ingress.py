"""Feed ingress: decode, reject malformed messages, check sequence numbers, route per venue."""

from amaranth.hdl import Module, Signal
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from ..sim.model import SIZE_MAX
from .layouts import FEED, FeedKind, feed_layout

__all__ = ["Op", "op_layout", "check_venues", "Ingress", "PRICE_WIDTH", "SEQ_WIDTH",
           "SIZE_WIDTH", "COUNTER_WIDTH", "MAX_VENUES"]

PRICE_WIDTH = FEED.offsets()["price"][1]   # ticks, as on the wire
SEQ_WIDTH = FEED.offsets()["seq"][1]       # sequence numbers wrap modulo 2^SEQ_WIDTH
SIZE_WIDTH = SIZE_MAX.bit_length()         # lots: a valid size is 1..2^31-1, so 31 bits hold it
COUNTER_WIDTH = 32                         # every event/message counter wraps modulo 2^32
MAX_VENUES = 16                            # the register map's limit (and the model's)


class Op(enum.Enum, shape=3):
    """What a venue's book does with an accepted message."""
    NONE = 0            # TRADE or FILL: counted and checked, the levels do not change
    SET = 1             # LEVEL_SET: set the size of (side, price), inserting it if absent
    DELETE = 2          # LEVEL_DELETE: remove (side, price)
    CLEAR = 3           # CLEAR: empty both sides
    SNAPSHOT_START = 4  # empty both sides and suspend the crossed/locked check
    SNAPSHOT_END = 5    # resume the check; the venue reads synced again


_OPS = {FeedKind.LEVEL_SET: Op.SET, FeedKind.LEVEL_DELETE: Op.DELETE, FeedKind.CLEAR: Op.CLEAR,
        FeedKind.SNAPSHOT_START: Op.SNAPSHOT_START, FeedKind.SNAPSHOT_END: Op.SNAPSHOT_END,
        FeedKind.TRADE: Op.NONE, FeedKind.FILL: Op.NONE}
assert set(_OPS) | {FeedKind.TICK} == set(FeedKind), "a new FeedKind must be routed on purpose"

# One accepted venue message. ``gap``: its sequence number was not the expected one.
op_layout = data.StructLayout({"op": Op, "side": 1, "price": PRICE_WIDTH, "size": SIZE_WIDTH,
                               "gap": 1})


def check_venues(venues):
    """Validate and return ``venues``: an integer 1..MAX_VENUES."""
    if not (isinstance(venues, int) and not isinstance(venues, bool)
            and 1 <= venues <= MAX_VENUES):
        raise ValueError(f"venues must be an integer 1..{MAX_VENUES}, not {venues!r}")
    return venues


class Ingress(wiring.Component):
    """Decodes the feed combinationally and hands each venue's book its messages.

    ``feed`` is always ready: one message per cycle, never a stall. A message is rejected whole
    when it is malformed by the rules of :func:`obcore.sim.model.malformed`; the global
    ``malformed`` strobe and the wrapping ``malformed_count`` follow 2 cycles after acceptance
    (the same latency as every book counter). Otherwise, unless it is a TICK, it appears on
    ``ops[venue]`` in the same cycle (``valid`` for exactly that cycle), so the book holds the
    result on the next edge.

    Sequence rule, per venue: every message except FILL carries a sequence number. The first
    one after reset and every SNAPSHOT_START set the expectation; any other mismatch sets
    ``gap`` in the op (the message is still applied). Either way the next one expected is
    ``seq + 1`` mod 2^32.
    """

    def __init__(self, venues):
        self.venues = check_venues(venues)
        super().__init__({
            "feed": In(stream.Signature(feed_layout)),
            "ops": Out(stream.Signature(op_layout, always_ready=True)).array(venues),
            "malformed": Out(1),                     # strobe, 2 cycles after the message
            "malformed_count": Out(COUNTER_WIDTH),   # messages rejected since reset
        })

    def elaborate(self, platform):
        m = Module()
        msg = self.feed.payload
        m.d.comb += self.feed.ready.eq(1)   # the books take a message every cycle

        price0, size0 = msg.price == 0, msg.size == 0
        venue_bad = msg.venue >= self.venues
        bad = Signal()
        op = Signal(Op)
        with m.Switch(msg.kind):
            with m.Case(FeedKind.TICK):     # global: no venue, side or payload
                m.d.comb += bad.eq((msg.venue != 0) | (msg.side != 0) | ~price0 | ~size0)
            with m.Case(FeedKind.LEVEL_SET, FeedKind.TRADE, FeedKind.FILL):
                m.d.comb += bad.eq(venue_bad | price0 | size0 | (msg.size > SIZE_MAX))
            with m.Case(FeedKind.LEVEL_DELETE):
                m.d.comb += bad.eq(venue_bad | price0 | ~size0)
            with m.Case(FeedKind.CLEAR, FeedKind.SNAPSHOT_START, FeedKind.SNAPSHOT_END):
                m.d.comb += bad.eq(venue_bad | ~price0 | ~size0)
            with m.Default():               # unknown kind
                m.d.comb += bad.eq(1)
        with m.Switch(msg.kind):
            for kind, decoded in _OPS.items():
                with m.Case(kind):
                    m.d.comb += op.eq(decoded)
        reject = bad | (msg.flags != 0) | (msg.side > 1)
        accept = self.feed.valid & ~reject & (msg.kind != FeedKind.TICK)
        sequenced = msg.kind != FeedKind.FILL

        for v, out in enumerate(self.ops):
            seq_valid = Signal(name=f"seq_valid_{v}")           # an expectation is set
            expected = Signal(SEQ_WIDTH, name=f"expected_{v}")          # the next sequence number
            mine = accept & (msg.venue == v)
            m.d.comb += [
                out.valid.eq(mine),
                out.payload.op.eq(op),
                out.payload.side.eq(msg.side[0]),
                out.payload.price.eq(msg.price),
                out.payload.size.eq(msg.size),   # < 2^31 whenever accepted with a size
                out.payload.gap.eq(sequenced & seq_valid & (msg.kind != FeedKind.SNAPSHOT_START)
                                   & (msg.seq != expected)),
            ]
            with m.If(mine & sequenced):
                m.d.sync += [seq_valid.eq(1), expected.eq(msg.seq + 1)]

        # Two register stages, like the book's events: strobe and count move together.
        rejected = Signal()
        m.d.sync += [rejected.eq(self.feed.valid & reject), self.malformed.eq(rejected)]
        with m.If(rejected):
            m.d.sync += self.malformed_count.eq(self.malformed_count + 1)
        return m

