"""Shared replay machinery: updates, exact decimal scaling, sequence numbering, streams, ticks."""

import contextlib
import decimal
import gzip
import io
import zipfile
import zlib
from dataclasses import dataclass, field, replace
from decimal import Decimal

from ...hw.layouts import FeedKind, Side
from ..model import SIZE_MAX

__all__ = ["Update", "Book", "Stats", "Scale", "Sequencer", "REFERENCE", "PRICE_MAX",
           "integer", "open_lines", "open_stream", "to_units", "with_ticks", "MAX_TICKS_PER_GAP"]

PRICE_MAX = (1 << 32) - 1
REFERENCE = "reference"     # Update.kind of a record that only carries truth (no row, no book)
# A silent feed for longer than this many ticks is stale anyway; replaying every tick of a long
# pause would only cost time, so the rest of a pause is skipped (the clock jumps, see with_ticks).
MAX_TICKS_PER_GAP = 4096
_CACHE_MAX = 1 << 16     # conversions remembered per Scale


@dataclass(frozen=True)
class Book:
    """A reference book from the data: ``(price ticks, size lots)`` per level, best first."""
    bids: tuple = ()
    asks: tuple = ()


@dataclass(frozen=True)
class Update:
    """One input update: the native feed messages it became, with its id, time and truth.

    ``exch_seq`` is the exchange's own id (Binance/Bybit ``u``, Binance trade id, LOBSTER line
    from 0, Tardis row group from 0, native record index); ``ts_ns`` is nanoseconds (``None``
    when the format has no time); ``kind`` says what the record was; ``truth`` is a
    :class:`Book` where the format gives one; ``source`` is ``"file:line"``.
    """
    venue: int
    exch_seq: int
    ts_ns: object
    kind: str
    messages: tuple
    source: str
    truth: object = None

    @property
    def reference(self):
        """True for truth-only records: they change nothing and get no replay row."""
        return self.kind == REFERENCE


@dataclass
class Stats:
    """What an adapter noticed: sequence gaps (with where) and records it could not apply.

    ``warn`` is called with each gap's text as it happens (the CLI prints it on stderr).
    """
    gaps: list = field(default_factory=list)
    unsynced: int = 0       # book records dropped while waiting for a snapshot
    ignored: int = 0        # records of kinds the replay does not use (e.g. markPrice)
    warn: object = None

    def gap(self, source, text):
        self.gaps.append(f"{source}: {text}")
        if self.warn is not None:
            self.warn(f"{source}: {text}")


# High precision with every inexact or invalid result trapped: '1e70' fails loudly, never rounds.
_EXACT = decimal.Context(prec=60, traps=[decimal.InvalidOperation, decimal.Inexact,
                                         decimal.Overflow, decimal.DivisionByZero])


def to_units(text, unit, what, where, name="units"):
    """The integer number of ``unit`` (a ``Decimal``) in decimal ``text``, exactly."""
    if isinstance(text, float):
        raise ValueError(f"{where}: {what} {text!r} is a binary float, not decimal text")
    try:
        value = _EXACT.create_decimal(text)
        if not value.is_finite():
            raise decimal.InvalidOperation
    except (decimal.DecimalException, TypeError, ValueError):
        raise ValueError(f"{where}: {what} {text!r} is not a decimal number") from None
    try:
        whole, rest = _EXACT.divmod(value, unit)
    except decimal.DecimalException:
        raise ValueError(f"{where}: {what} {text} is too large") from None
    if rest:
        raise ValueError(f"{where}: {what} {text} is not a whole number of {name} of {unit}")
    return int(whole)


def integer(value, what, where):
    """An integer field of a record (a JSON integer or a string of digits)."""
    try:
        if isinstance(value, (bool, float)):
            raise TypeError
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {what} {value!r} is not an integer") from None


class Scale:
    """Exact decimal text -> integer ticks and lots (``Decimal`` throughout, never float)."""

    def __init__(self, tick, lot):
        self.tick = self._unit(tick, "tick")
        self.lot = self._unit(lot, "lot")
        self._prices, self._sizes = {}, {}

    @staticmethod
    def _unit(value, name):
        try:
            unit = Decimal(str(value))
        except decimal.InvalidOperation:
            unit = None
        if unit is None or not unit.is_finite() or unit <= 0:
            raise ValueError(f"{name} must be a positive decimal number, not {value!r}")
        return unit

    def price(self, text, where):
        """Ticks for price ``text``; must be 1..2^32-1."""
        ticks = self._prices.get(text)
        if ticks is None:
            ticks = to_units(text, self.tick, "price", where, "ticks")
            if not 1 <= ticks <= PRICE_MAX:
                raise ValueError(f"{where}: price {text} is {ticks} ticks of {self.tick}, "
                                 f"outside 1..{PRICE_MAX} (choose another --tick)")
            self._remember(self._prices, text, ticks)
        return ticks

    def size(self, text, where):
        """Lots for size ``text``; 0 (a delete) up to 2^31-1."""
        lots = self._sizes.get(text)
        if lots is None:
            lots = to_units(text, self.lot, "size", where, "lots")
            if not 0 <= lots <= SIZE_MAX:
                raise ValueError(f"{where}: size {text} is {lots} lots of {self.lot}, outside "
                                 f"0..{SIZE_MAX} (choose another --lot)")
            self._remember(self._sizes, text, lots)
        return lots

    @staticmethod
    def _remember(cache, text, value):
        # Prices and sizes repeat all the time; the cache is capped so memory stays bounded.
        if len(cache) < _CACHE_MAX and isinstance(text, str):
            cache[text] = value

    def levels(self, pairs, where):
        """``[[price text, size text], ...]`` -> ``[(ticks, lots), ...]``."""
        if not isinstance(pairs, (list, tuple)):
            raise ValueError(f"{where}: malformed levels {pairs!r}, expected a list")
        out = []
        for pair in pairs:
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
                raise ValueError(f"{where}: malformed level {pair!r}, expected [price, size]")
            out.append((self.price(pair[0], where), self.size(pair[1], where)))
        return out


class Sequencer:
    """Native messages for one venue, numbering its sequenced messages +1 each."""

    def __init__(self, venue=0):
        if not (isinstance(venue, int) and 0 <= venue <= 255):
            raise ValueError(f"venue must be an integer 0..255, not {venue!r}")
        self.venue = venue
        self.seq = 0

    def message(self, kind, side=Side.BID, price=0, size=0):
        self.seq = (self.seq + 1) & 0xFFFF_FFFF
        return {"kind": int(kind), "venue": self.venue, "side": int(side), "flags": 0,
                "seq": self.seq, "price": price, "size": size}

    def snapshot(self, bids, asks, start=True, end=True):
        """A book: SNAPSHOT_START, a LEVEL_SET per non-empty level, SNAPSHOT_END; a snapshot
        spread over several updates leaves out the start or end of its middle parts."""
        out = [self.message(FeedKind.SNAPSHOT_START)] if start else []
        for side, levels in ((Side.BID, bids), (Side.ASK, asks)):
            out += [self.message(FeedKind.LEVEL_SET, side, p, q) for p, q in levels if q]
        if end:
            out.append(self.message(FeedKind.SNAPSHOT_END))
        return out

    def changes(self, bids, asks):
        """Absolute level changes (size 0 deletes) as LEVEL_SET/LEVEL_DELETE messages.

        A repeated price keeps its last size. Deletes go first: every intermediate book is
        then a subset of the final one, so an uncrossed update never looks crossed midway.
        """
        final = [(side, dict(levels)) for side, levels in ((Side.BID, bids), (Side.ASK, asks))]
        out = [self.message(FeedKind.LEVEL_DELETE, side, p, 0)
               for side, levels in final for p, q in levels.items() if not q]
        out += [self.message(FeedKind.LEVEL_SET, side, p, q)
                for side, levels in final for p, q in levels.items() if q]
        return out

    def trade(self, side, price, size):
        return [self.message(FeedKind.TRADE, side, price, size)]

    def gap(self):
        """The book is lost: a CLEAR one sequence number late, so the engine counts the gap
        itself and reports ``synced = False`` until the next snapshot."""
        self.seq = (self.seq + 1) & 0xFFFF_FFFF
        return [self.message(FeedKind.CLEAR)]


def open_lines(path, member=None):
    """Stream ``(line number from 1, text line)`` from a plain, ``.gz`` or zip file.

    ``member`` names the zip member (default: the only one). Decoding and decompression
    errors become ``ValueError`` naming the file and line.
    """
    name = f"{path}:{member}" if member else str(path)
    lineno = 0
    try:
        with contextlib.ExitStack() as stack:
            text = io.TextIOWrapper(open_stream(path, member, stack), encoding="utf-8",
                                    newline="")
            for lineno, line in enumerate(text, 1):
                yield lineno, line
    except (EOFError, zlib.error, zipfile.BadZipFile, gzip.BadGzipFile) as exc:
        raise ValueError(f"{name}:{lineno + 1}: damaged or truncated file ({exc})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{name}:{lineno + 1}: not UTF-8 text") from None


def open_stream(path, member, stack):
    """A binary stream of the (decompressed) content, closed by ``stack``."""
    if zipfile.is_zipfile(path):
        archive = stack.enter_context(zipfile.ZipFile(path))
        if member is None:
            names = [n for n in archive.namelist() if not n.endswith("/")]
            if len(names) != 1:
                raise ValueError(f"{path}: zip holds {len(names)} files, expected one")
            member = names[0]
        return stack.enter_context(archive.open(member))
    raw = stack.enter_context(open(path, "rb"))  # noqa: SIM115 (the stack closes it)
    if raw.peek(2)[:2] == b"\x1f\x8b":
        return stack.enter_context(gzip.GzipFile(fileobj=raw, mode="rb"))
    return raw


def with_ticks(updates, tick_ns, max_ticks=MAX_TICKS_PER_GAP):
    """Prepend one TICK per ``tick_ns`` elapsed since the first update's time.

    At most ``max_ticks`` per update: the rest of a longer pause is skipped and the tick clock
    restarts at that update's time. Time that runs backwards (a local clock stepping) adds
    nothing until it passes the last tick again. Updates without a time pass unchanged.
    """
    if not (isinstance(tick_ns, int) and tick_ns > 0):
        raise ValueError(f"tick_ns must be a positive integer, not {tick_ns!r}")
    if not (isinstance(max_ticks, int) and max_ticks > 0):
        raise ValueError(f"max_ticks must be a positive integer, not {max_ticks!r}")
    tick = {"kind": int(FeedKind.TICK), "venue": 0, "side": 0, "flags": 0, "seq": 0,
            "price": 0, "size": 0}
    clock = None     # time of the last tick emitted, in ns
    for up in updates:
        if up.ts_ns is None or up.reference:
            yield up
            continue
        if clock is None:
            clock = up.ts_ns
        n = max(0, (up.ts_ns - clock) // tick_ns)
        if n > max_ticks:
            n, clock = max_ticks, up.ts_ns
        else:
            clock += n * tick_ns
        if n:
            up = replace(up, messages=tuple(dict(tick) for _ in range(n)) + up.messages)
        yield up
