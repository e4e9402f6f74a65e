"""Bit-accurate Python reference model of the engine: the executable spec the gateware matches.

The book semantics here are the hardware's, message for message:

* Ingress rejects a malformed message whole (counted once, globally; no sequence or book
  change): unknown kind, ``flags != 0``, ``side > 1``, venue out of range, or a price/size that
  is impossible for its kind (see :func:`malformed`).
* Per venue, every message except FILL and TICK carries a sequence number. The first one after
  reset, and every SNAPSHOT_START, (re)syncs it; any other mismatch counts a gap, latches
  ``synced = False`` until the next SNAPSHOT_END that no gap hit since its SNAPSHOT_START,
  and the message is still applied.
* Each side keeps at most ``capacity`` levels, best first. Once it has dropped a level it is
  *truncated*: ``bound`` is the best price ever dropped, and messages at or beyond ``bound`` are
  ignored (that part of the book is unknown). Levels better than ``bound`` are exact, so the top
  ``levels`` are exact while ``count >= levels`` or the side is not truncated; otherwise the
  side is *short* and each update that leaves it so counts a capacity event.
* With ``capacity=None`` a side is unbounded: the full-depth truth the bounded book is checked
  against.
* With ``window`` every side is a :class:`obcore.sim.deep_model.DeepSide`: a price ladder
  behind the array refills it in cycles without a command for the side, so the model is then
  clocked cycle by cycle: :meth:`BookModel.step` is a cycle with a message, :meth:`BookModel.idle`
  one without.
"""

from bisect import bisect_left
from dataclasses import dataclass, field

from ..hw.layouts import FeedKind, Side
from .ladder_model import CLEAR, DELETE, SET, check_window

__all__ = ["BookSide", "VenueBook", "BookModel", "malformed", "VenueCounters",
           "FLAG_GAP", "FLAG_CROSSED", "FLAG_LOCKED", "FLAG_CAPACITY", "FLAG_MISSING",
           "SIZE_MAX"]

SIZE_MAX = (1 << 31) - 1     # sizes are < 2^31 lots so depth sums and signed math have room
FLAG_GAP, FLAG_CROSSED, FLAG_LOCKED, FLAG_CAPACITY, FLAG_MISSING = (1 << i for i in range(5))

# Kinds that belong to a venue's sequenced market-data stream.
_SEQUENCED = {FeedKind.LEVEL_SET, FeedKind.LEVEL_DELETE, FeedKind.CLEAR,
              FeedKind.SNAPSHOT_START, FeedKind.SNAPSHOT_END, FeedKind.TRADE}


def malformed(msg, venues):
    """True when ingress must reject ``msg`` (a dict of feed fields) for an engine of ``venues``."""
    kind, price, size = msg["kind"], msg["price"], msg["size"]
    if kind not in FeedKind.__members__.values() or msg["flags"] != 0 or msg["side"] > 1:
        return True
    if kind == FeedKind.TICK:
        return msg["venue"] != 0 or msg["side"] != 0 or price != 0 or size != 0
    if msg["venue"] >= venues:
        return True
    if kind in (FeedKind.LEVEL_SET, FeedKind.TRADE, FeedKind.FILL):
        return price == 0 or not 1 <= size <= SIZE_MAX
    if kind == FeedKind.LEVEL_DELETE:
        return price == 0 or size != 0
    return price != 0 or size != 0   # CLEAR, SNAPSHOT_START, SNAPSHOT_END carry no payload


class BookSide:
    """One side's levels, best first, with the hardware's capacity and truncation rule."""

    def __init__(self, side, capacity=None):
        self.side = Side(side)
        self.capacity = capacity
        self.clear()

    def clear(self):
        self._keys = []      # sort keys, ascending = best first (bids negated)
        self._sizes = []
        self.bound = None    # sort key of the best price ever dropped, when truncated

    def _key(self, price):
        return -price if self.side == Side.BID else price

    def _price(self, key):
        return -key if self.side == Side.BID else key

    @property
    def truncated(self):
        return self.bound is not None

    def __len__(self):
        return len(self._keys)

    def apply(self, price, size):
        """Set (``size > 0``) or delete (``size == 0``) a level.

        Returns ``"ignored"`` (beyond the bound), ``"missing"`` (delete of an absent level) or
        ``None``.
        """
        key = self._key(price)
        if self.bound is not None and key >= self.bound:
            return "ignored"
        i = bisect_left(self._keys, key)
        present = i < len(self._keys) and self._keys[i] == key
        if size == 0:
            if not present:
                return "missing"
            del self._keys[i], self._sizes[i]
        elif present:
            self._sizes[i] = size
        else:
            self._keys.insert(i, key)
            self._sizes.insert(i, size)
            if self.capacity is not None and len(self._keys) > self.capacity:
                self.bound = self._keys.pop()    # the worst level falls off the end
                self._sizes.pop()
        return None

    def level(self, i):
        """``(price, size)`` of level ``i`` (0 = best), ``(0, 0)`` when absent."""
        if i < len(self._keys):
            return self._price(self._keys[i]), self._sizes[i]
        return 0, 0

    def top(self, n):
        return [self.level(i) for i in range(n)]

    def depth(self, n):
        return sum(self._sizes[:n])

    def short(self, n):
        """True when the top ``n`` are not all known: truncated with fewer than ``n`` left."""
        return self.truncated and len(self._keys) < n


@dataclass
class VenueCounters:
    msgs: int = 0
    gaps: int = 0
    missing: int = 0
    crossed: int = 0
    capacity: int = 0
    flags: int = 0


@dataclass
class VenueBook:
    """One venue: both sides, sequence state and status."""
    levels: int
    capacity: object
    window: object = None
    bids: BookSide = None
    asks: BookSide = None
    seq_valid: bool = False
    expected: int = 0
    synced: bool = True
    in_snapshot: bool = False
    clean_snapshot: bool = False   # a snapshot is in progress and no gap has hit it
    counters: VenueCounters = field(default_factory=VenueCounters)

    def __post_init__(self):
        if self.window is None:
            self.bids = BookSide(Side.BID, self.capacity)
            self.asks = BookSide(Side.ASK, self.capacity)
        else:
            from .deep_model import DeepSide  # deep_model builds on BookSide
            self.bids = DeepSide(Side.BID, self.capacity, self.window)
            self.asks = DeepSide(Side.ASK, self.capacity, self.window)

    def side(self, side):
        return self.asks if side == Side.ASK else self.bids

    def clear(self):
        self.bids.clear()
        self.asks.clear()

    def crossed_state(self):
        """``"crossed"``, ``"locked"`` or ``None``; never during a snapshot or with a side empty."""
        if self.in_snapshot or not self.bids or not self.asks:
            return None
        bid, ask = self.bids.level(0)[0], self.asks.level(0)[0]
        return "crossed" if bid > ask else "locked" if bid == ask else None

    def outputs(self):
        """The book's output bundle after the latest message."""
        n = self.levels
        (bb, bbq), (ba, baq) = self.bids.level(0), self.asks.level(0)
        return {
            "best_bid": bb, "best_bid_qty": bbq, "best_ask": ba, "best_ask_qty": baq,
            "bid_depth": self.bids.depth(n), "ask_depth": self.asks.depth(n),
            "bid_count": min(len(self.bids), n), "ask_count": min(len(self.asks), n),
            "valid": bool(self.bids) and bool(self.asks),
            "exact": not (self.bids.short(n) or self.asks.short(n)),
            "synced": self.synced,
        }


class BookModel:
    """All venues' books plus ingress: feed messages in, per-venue outputs and counters out."""

    def __init__(self, venues=2, levels=16, capacity=32, window=None):
        if not (isinstance(venues, int) and 1 <= venues <= 16):
            raise ValueError(f"venues must be an integer 1..16, not {venues!r}")
        if not (isinstance(levels, int) and levels >= 1):
            raise ValueError(f"levels must be a positive integer, not {levels!r}")
        if capacity is not None and not (isinstance(capacity, int) and capacity >= levels):
            raise ValueError(f"capacity must be an integer >= levels ({levels}) or None, "
                             f"not {capacity!r}")
        if window is not None and capacity is None:
            raise ValueError("a book with a window needs a capacity")
        self.venues, self.levels, self.capacity = venues, levels, capacity
        self.window = window if window is None else check_window(window)
        self.books = [VenueBook(levels, capacity, self.window) for _ in range(venues)]
        self.malformed = 0
        self.events = 0   # FLAG_* bits the latest message raised (the hardware's set strobes)
        self.moved = set()   # venues whose cells a refill changed in the latest cycle

    @property
    def settled(self):
        """No book side has a ladder refill wanted or in flight (``refilling`` 0 on every
        side): cycles without a message change nothing. Always true without a window."""
        return self.window is None or all(unit.settled for book in self.books
                                          for unit in (book.bids, book.asks))

    def idle(self, cycles=1):
        """``cycles`` clock cycles without a message (only a book with a window does anything;
        ``moved`` then gathers them all). Cycles after every side has settled are skipped:
        they change nothing."""
        if self.window is None:
            return
        moved = set()
        for _ in range(cycles):
            self._clock()
            moved |= self.moved
            if self.settled:
                break
        self.moved = moved

    def _clock(self, venue=None, side=None, op=None, price=0, size=0):
        """One cycle of every deep side, ``op`` for ``(venue, side)``; returns its result."""
        result, self.moved = None, set()
        for v, book in enumerate(self.books):
            for s, unit in enumerate((book.bids, book.asks)):
                mine = v == venue and (s == side or op == CLEAR)
                if not mine and unit.settled:
                    continue
                out = unit.cycle(op, price, size) if mine else unit.cycle()
                if mine and op != CLEAR:
                    result = out
                if unit.moved:
                    self.moved.add(v)
        return result

    def step(self, msg):
        """Apply one feed message (a dict of feed fields). Returns the venue touched or None."""
        self.events = events = 0
        if malformed(msg, self.venues):
            self.malformed += 1
            self.idle()
            return None
        kind = FeedKind(msg["kind"])
        if kind == FeedKind.TICK:
            self.idle()
            return None
        book = self.books[msg["venue"]]
        c = book.counters
        c.msgs += 1
        if kind in _SEQUENCED:
            seq = msg["seq"]
            if book.seq_valid and kind != FeedKind.SNAPSHOT_START and seq != book.expected:
                c.gaps += 1
                events |= FLAG_GAP
                book.synced = False
                book.clean_snapshot = False
            book.seq_valid = True
            book.expected = (seq + 1) & 0xFFFF_FFFF
        deep, venue = self.window is not None, msg["venue"]
        if kind in (FeedKind.LEVEL_SET, FeedKind.LEVEL_DELETE):
            size = msg["size"] if kind == FeedKind.LEVEL_SET else 0
            if deep:
                result = self._clock(venue, msg["side"], SET if size else DELETE, msg["price"],
                                     size)
            else:
                result = book.side(msg["side"]).apply(msg["price"], size)
            if result == "missing":
                c.missing += 1
                events |= FLAG_MISSING
        elif kind in (FeedKind.CLEAR, FeedKind.SNAPSHOT_START):
            if deep:
                self._clock(venue, op=CLEAR)
            else:
                book.clear()
        elif deep:
            self.idle()
        if kind == FeedKind.SNAPSHOT_START:
            book.in_snapshot = True
            book.clean_snapshot = True
        elif kind == FeedKind.SNAPSHOT_END:
            # Only a snapshot that no gap hit resyncs the book: a gap inside it means levels
            # were lost between its START and END.
            book.synced = book.synced or book.clean_snapshot
            book.in_snapshot = False
            book.clean_snapshot = False
        state = book.crossed_state()
        if state is not None:
            c.crossed += 1
            events |= FLAG_CROSSED if state == "crossed" else FLAG_LOCKED
        if book.bids.short(self.levels) or book.asks.short(self.levels):
            c.capacity += 1
            events |= FLAG_CAPACITY
        c.flags |= events
        self.events = events
        return msg["venue"]

    def outputs(self, venue):
        return self.books[venue].outputs()
