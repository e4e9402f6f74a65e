"""Wire formats of the feed and order streams, defined once for gateware, host and docs."""

import enum
from dataclasses import dataclass

import numpy as np
from amaranth.hdl import signed, unsigned
from amaranth.lib import data

__all__ = [
    "Field", "MessageFormat", "FeedKind", "OrderKind", "Side",
    "FEED", "ORDER", "OBS", "TELEM", "feed_layout", "order_layout", "FEED_DTYPE", "ORDER_DTYPE",
    "OBS_DTYPE", "TELEM_DTYPE", "ObsStatus",
    "encode_feed", "decode_feed", "encode_order", "decode_order", "feed_array",
]


class Side(enum.IntEnum):
    """Book side. For TRADE the aggressor's side, for FILL the side of our own order."""
    BID = 0
    ASK = 1


class FeedKind(enum.IntEnum):
    """Feed message kinds. 0 is never valid, so an all-zero word is flagged as malformed."""
    LEVEL_SET = 1       # set the size of level (side, price); inserts it if absent
    LEVEL_DELETE = 2    # remove level (side, price); size must be 0
    CLEAR = 3           # empty both sides of the venue's book
    SNAPSHOT_START = 4  # empty the book, resync the sequence; crossed checks wait for the end
    SNAPSHOT_END = 5    # the snapshot is complete: the book is synced again
    TRADE = 6           # a public trade: side = aggressor, price, size
    FILL = 7            # our own order filled: side of our order, price, size (no seq check)
    TICK = 8            # one engine time unit has passed (global: venue, price, size are 0)


class OrderKind(enum.IntEnum):
    """Order-stream kinds emitted by the quoter and the guard."""
    NEW = 1
    REPLACE = 2
    CANCEL = 3
    CANCEL_ALL = 4


class ObsStatus(enum.IntFlag):
    """Status bits of an observation record."""
    APPLIED = 1   # a well-formed venue message (not malformed, not TICK): book fields are set
    VALID = 2     # both sides of the venue's book are non-empty
    EXACT = 4     # the top N levels of both sides are known (see docs/book.md)
    SYNCED = 8    # no sequence gap since the last completed snapshot


@dataclass(frozen=True)
class Field:
    """One field of a fixed-size little-endian message: name, width in bits, meaning; a
    ``signed`` field is two's complement."""
    name: str
    bits: int
    unit: str
    doc: str
    signed: bool = False

    @property
    def range(self):
        """``(lowest, highest)`` value of the field."""
        if self.signed:
            return -(1 << (self.bits - 1)), (1 << (self.bits - 1)) - 1
        return 0, (1 << self.bits) - 1


@dataclass(frozen=True)
class MessageFormat:
    """A message as an ordered field list; fields are whole bytes so numpy can view them."""
    name: str
    fields: tuple

    def __post_init__(self):
        for f in self.fields:
            if f.bits not in (8, 16, 32, 64):
                raise ValueError(f"{self.name}.{f.name}: width must be 8, 16, 32 or 64, "
                                 f"not {f.bits!r}")

    @property
    def bits(self):
        return sum(f.bits for f in self.fields)

    @property
    def nbytes(self):
        return self.bits // 8

    def layout(self):
        """The ``amaranth.lib.data.StructLayout``: first field in the least significant bits."""
        return data.StructLayout({f.name: (signed if f.signed else unsigned)(f.bits)
                                  for f in self.fields})

    def dtype(self):
        """The matching packed little-endian numpy structured dtype."""
        return np.dtype([(f.name, f"<{'i' if f.signed else 'u'}{f.bits // 8}")
                         for f in self.fields])

    def offsets(self):
        """``{name: (bit offset, width)}`` in the packed word."""
        out, pos = {}, 0
        for f in self.fields:
            out[f.name] = (pos, f.bits)
            pos += f.bits
        return out

    def encode(self, **values):
        """Pack field values into the integer word; every field is range-checked."""
        word = 0
        unknown = set(values) - {f.name for f in self.fields}
        if unknown:
            raise ValueError(f"{self.name}: unknown field(s) {sorted(unknown)}")
        pos = 0
        for f in self.fields:
            value = values.get(f.name, 0)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                raise ValueError(f"{self.name}.{f.name} must be an integer, not {value!r}")
            value = int(value)
            lo, hi = f.range
            if not lo <= value <= hi:
                kind = "signed" if f.signed else "unsigned"
                raise ValueError(f"{self.name}.{f.name} = {value} is out of range "
                                 f"{lo}..{hi} ({f.bits}-bit {kind})")
            word |= (value & ((1 << f.bits) - 1)) << pos
            pos += f.bits
        return word

    def decode(self, word):
        """Unpack the integer word into ``{field: value}``."""
        if not 0 <= word < (1 << self.bits):
            raise ValueError(f"{self.name}: word does not fit in {self.bits} bits")
        out, pos = {}, 0
        for f in self.fields:
            raw = (word >> pos) & ((1 << f.bits) - 1)
            out[f.name] = raw - (1 << f.bits) if f.signed and raw >> (f.bits - 1) else raw
            pos += f.bits
        return out


FEED = MessageFormat("feed", (
    Field("kind", 8, "FeedKind", "message kind; unknown kinds are counted as malformed"),
    Field("venue", 8, "index", "venue index 0..venues-1 (0 for TICK)"),
    Field("side", 8, "Side", "0 bid, 1 ask; other values are malformed"),
    Field("flags", 8, "-", "reserved, must be 0"),
    Field("seq", 32, "count", "per-venue sequence number, +1 per venue message (mod 2^32); "
                              "FILL and TICK carry 0 and are not checked"),
    Field("price", 32, "ticks", "price in integer ticks, 1..2^32-1 (0 only where unused)"),
    Field("size", 32, "lots", "size in integer lots (0 for LEVEL_DELETE, 1.. for LEVEL_SET)"),
))

ORDER = MessageFormat("order", (
    Field("kind", 8, "OrderKind", "NEW, REPLACE, CANCEL, or CANCEL_ALL (all venues, all slots)"),
    Field("venue", 8, "index", "venue of the quote"),
    Field("side", 8, "Side", "0 bid, 1 ask"),
    Field("slot", 8, "index", "quote slot (level) on that side, 0 = closest to the mid"),
    Field("seq", 32, "count", "order-stream sequence number, +1 per order message"),
    Field("price", 32, "ticks", "quote price in ticks (0 for CANCEL/CANCEL_ALL)"),
    Field("size", 32, "lots", "quote size in lots (0 for CANCEL/CANCEL_ALL)"),
))

OBS = MessageFormat("obs", (
    Field("venue", 8, "index", "venue field of the message"),
    Field("kind", 8, "FeedKind", "kind field of the message"),
    Field("status", 8, "ObsStatus", "APPLIED, VALID, EXACT, SYNCED bits"),
    Field("bid_count", 8, "levels", "bid levels known, at most N"),
    Field("ask_count", 8, "levels", "ask levels known, at most N"),
    Field("reserved0", 8, "-", "0"),
    Field("reserved1", 16, "-", "0"),
    Field("seq", 32, "count", "seq field of the message"),
    Field("cycle", 32, "cycles", "low 32 bits of the cycle the message was accepted"),
    Field("best_bid", 32, "ticks", "best bid after the message (0: empty side)"),
    Field("best_bid_qty", 32, "lots", "size at the best bid"),
    Field("best_ask", 32, "ticks", "best ask after the message (0: empty side)"),
    Field("best_ask_qty", 32, "lots", "size at the best ask"),
    Field("bid_depth", 64, "lots", "summed size of the top N bid levels"),
    Field("ask_depth", 64, "lots", "summed size of the top N ask levels"),
))
"""One observation per accepted feed message, in order, at a fixed latency: what the engine
knew of the message's venue after applying it. Book fields are 0 unless APPLIED."""

TELEM = MessageFormat("telem", (
    Field("venue", 8, "index", "the venue shown: the message's venue field (0 for TICK, which "
                               "samples every venue); all other fields 0 if out of range"),
    Field("kind", 8, "FeedKind", "kind field of the message"),
    Field("regime", 8, "regime", "bits 0-1 vol regime (0 stable, 1 range, 2 trend, 3 crisis), "
                                 "bits 2-3 liquidity regime (0 normal, 1 wait, 2 no leverage "
                                 "expansion, 3 withdraw)"),
    Field("xv_status", 8, "-", "bit0 misalign valid, bit1 |misalign| > misalign_max"),
    Field("sig_status", 32, "-", "the venue's sig_status bits: valid, alarm and saturation "
                                 "bits (docs/signals.md)"),
    Field("seq", 32, "count", "seq field of the message"),
    Field("cycle", 32, "cycles", "low 32 bits of the cycle the message was accepted (as OBS)"),
    Field("obi_touch", 16, "SQ1.15", "(Vb - Va)/(Vb + Va) at the touch, truncated toward 0; "
                                     "+-1 reads +-(1 - 2^-15); 0 unless obi_touch_valid",
          signed=True),
    Field("obi_depth", 16, "SQ1.15", "(Db - Da)/(Db + Da) over the top N levels, as obi_touch; "
                                     "0 unless obi_depth_valid", signed=True),
    Field("spread", 64, "ticks", "S = a - b (0 unless touch_valid)", signed=True),
    Field("mid2", 64, "ticks", "a + b, twice the mid (0 unless touch_valid)"),
    Field("micro_num", 64, "ticks x lots", "microprice = b + micro_num/micro_den",
          signed=True),
    Field("micro_den", 64, "lots", "Vb + Va (0 unless touch_valid)"),
    Field("sigma2_fast", 64, "UQ34.16 ticks^2", "fast EWMA of (delta mid2)^2 per tick"),
    Field("sigma2_slow", 64, "UQ34.16 ticks^2", "slow EWMA of (delta mid2)^2 per tick"),
    Field("accel", 64, "ticks", "S[t] - 2S[t-1] + S[t-2] over ticks (0 unless accel_valid)",
          signed=True),
    Field("spread_star", 64, "UQ26.8 ticks", "fair spread Spread* of the venue"),
    Field("misalign", 64, "SQ35.8 ticks", "(S_A - S*_A) - (S_B - S*_B) of venues 0 and 1 "
                                          "(0 with one venue or unless valid)", signed=True),
    Field("sigma", 32, "UQ17.8 ticks", "floor sqrt(max(sigma2_fast, sigma2_slow)); lags "
                                       "until sigma_fresh"),
))
"""One telemetry record per accepted feed message, in order, at a fixed latency (the engine's
``telem_latency``): every signal of the venue the message names, after the message, as the
signal registers of that venue show them (same formats; a signed register sign-extended).
Emitted on its own port beside OBS so the observation stays small; index i of both streams
is the same message."""

feed_layout = FEED.layout()
order_layout = ORDER.layout()
FEED_DTYPE = FEED.dtype()
ORDER_DTYPE = ORDER.dtype()
OBS_DTYPE = OBS.dtype()
TELEM_DTYPE = TELEM.dtype()


def encode_feed(kind, venue=0, side=0, seq=0, price=0, size=0, flags=0):
    """One feed message as its 128-bit integer word."""
    return FEED.encode(kind=int(kind), venue=venue, side=int(side), flags=flags, seq=seq,
                       price=price, size=size)


def decode_feed(word):
    return FEED.decode(word)


def encode_order(kind, venue=0, side=0, slot=0, seq=0, price=0, size=0):
    """One order message as its 128-bit integer word."""
    return ORDER.encode(kind=int(kind), venue=venue, side=int(side), slot=slot, seq=seq,
                        price=price, size=size)


def decode_order(word):
    return ORDER.decode(word)


def feed_array(messages):
    """A ``FEED_DTYPE`` array from an iterable of ``{field: value}`` dicts or tuples."""
    rows = [tuple(m[f.name] for f in FEED.fields) if isinstance(m, dict) else tuple(m)
            for m in messages]
    return np.array(rows, dtype=FEED_DTYPE)
