"""Databento MBO records (DBN, plain or zstd) as native level updates, one per exchange event."""

import contextlib
from collections import namedtuple
from decimal import Decimal

import databento_dbn as dbn
import numpy as np
import zstandard

from ...hw.layouts import Side
from ..model import SIZE_MAX
from .base import _CACHE_MAX, Scale, Sequencer, Stats, Update

__all__ = ["read_databento", "MARKETS", "DEFAULT_LOT"]

# Default tick by the symbol's root (the CME product code, "ESH4" -> "ES"), in the price's
# own units: the E-mini and Micro E-mini S&P 500 and Nasdaq-100 futures trade in 0.25 points
# (the definition record of ESM4 in ../shared/data says min_price_increment 0.25).
MARKETS = {"ES": "0.25", "MES": "0.25", "NQ": "0.25", "MNQ": "0.25"}
DEFAULT_LOT = "1"       # contracts
_MONTHS = "FGHJKMNQUVXZ"
_ZSTD = b"\x28\xb5\x2f\xfd"
_CHUNK = 1 << 20
_SIDES = {"B": Side.BID, "A": Side.ASK}
# DBN: "DBN", a version byte and the metadata's length (u32), the metadata, then records,
# each led by its length in 32-bit words and its type. MBO records (type 0xA0) are 56 bytes
# in every DBN version. They are read here, with numpy, and databento-dbn decodes only the
# metadata: its record decoder aborts the process's Python with a Rust panic (not an
# exception) on a record shorter than its type, which a damaged file has.
_HEADER = 16
_METADATA_MAX = 1 << 26     # bytes; a file's symbol mappings take kilobytes
_MBO_RTYPE = 0xA0
_MBO = np.dtype([("length", "u1"), ("rtype", "u1"), ("publisher_id", "<u2"),
                 ("instrument_id", "<u4"), ("ts_event", "<u8"), ("order_id", "<u8"),
                 ("price", "<i8"), ("size", "<u4"), ("flags", "u1"), ("channel_id", "u1"),
                 ("action", "S1"), ("side", "S1"), ("ts_recv", "<u8"), ("ts_in_delta", "<i4"),
                 ("sequence", "<u4")])
_Mbo = namedtuple("_Mbo", "instrument_id ts_event order_id price size flags action side "
                          "ts_recv sequence")
_ACTIONS = {code.encode(): code for code in "ACMRTFN"}
_SIDE_CODES = {code.encode(): code for code in "ABN"}
_UNDEF_PRICE = (1 << 63) - 1


def _root(symbol):
    """"ESH4" -> "ES" (month code and year digit off), "ES.FUT" and "ES.c.0" (parent and
    continuous symbols) -> "ES"; other symbols unchanged."""
    symbol = symbol.split(".")[0]
    if len(symbol) > 2 and symbol[-2] in _MONTHS and symbol[-1].isdigit():
        return symbol[:-2]
    return symbol


def _records(path, stats):
    """The file's metadata (numbered None), then ``(record number from 0, MBO record)`` of a
    DBN file read a chunk at a time; records of other types are counted in ``stats``."""
    with contextlib.ExitStack() as stack:
        try:
            stream = _open(path, stack)
            yield None, _metadata(path, stream)
            buf, number = b"", 0
            while chunk := stream.read(_CHUNK):
                buf += chunk
                at, found = 0, []
                while at < len(buf):
                    size = buf[at] * 4
                    if size < _HEADER:
                        raise ValueError(f"{path}: record {number}: malformed record header "
                                         f"(length {size} bytes)")
                    if at + size > len(buf):
                        break
                    if buf[at + 1] == _MBO_RTYPE:
                        if size != _MBO.itemsize:
                            raise ValueError(f"{path}: record {number}: malformed MBO record "
                                             f"({size} bytes, not {_MBO.itemsize})")
                        found.append((number, at))
                    else:
                        stats.ignored += 1
                    at, number = at + size, number + 1
                if found:
                    rows = np.frombuffer(b"".join(buf[a:a + _MBO.itemsize] for _, a in found),
                                         _MBO)
                    for (n, _), row in zip(found, rows[list(_Mbo._fields)].tolist(),
                                           strict=True):
                        yield n, _record(row, path, n)
                buf = buf[at:]
        except zstandard.ZstdError as exc:
            raise ValueError(f"{path}: damaged zstd stream ({exc})") from None
        if buf:
            raise ValueError(f"{path}: record {number}: truncated file ({len(buf)} bytes of "
                             f"an incomplete record)")


def _open(path, stack):
    """The file's DBN bytes, decompressed if it is zstd; closed by ``stack``."""
    raw = stack.enter_context(open(path, "rb"))  # noqa: SIM115 (the stack closes it)
    if raw.peek(4)[:4] == _ZSTD:
        return stack.enter_context(zstandard.ZstdDecompressor().stream_reader(raw))
    return raw


def _metadata(path, stream):
    """The metadata at the start of ``stream`` ("DBN", version, u32 length, body)."""
    head = stream.read(8)
    if len(head) < 8 or head[:3] != b"DBN":
        raise ValueError(f"{path}: not DBN data (no DBN header)")
    size = int.from_bytes(head[4:], "little")
    if size > _METADATA_MAX:    # a damaged length: not a read of gigabytes
        raise ValueError(f"{path}: damaged DBN header (metadata of {size} bytes)")
    body = stream.read(size)
    decoder = dbn.DBNDecoder()
    try:
        decoder.write(head + body)
        found = decoder.decode()
    except dbn.DBNError as exc:
        raise ValueError(f"{path}: damaged DBN metadata ({exc})") from None
    if len(found) != 1 or not isinstance(found[0], dbn.Metadata):
        raise ValueError(f"{path}: damaged or truncated DBN metadata")
    return found[0]


def _record(row, path, number):
    """An MBO row (a tuple of ``_Mbo`` fields) with its action and side as text, checked."""
    inst, ts_event, oid, price, size, flags, action, side, ts_recv, sequence = row
    if action not in _ACTIONS or side not in _SIDE_CODES:
        raise ValueError(f"{path}: record {number}: malformed MBO record (action {action!r}, "
                         f"side {side!r})")
    return _Mbo(inst, ts_event, oid, price, size, flags, _ACTIONS[action], _SIDE_CODES[side],
                ts_recv, sequence)


class _Book:
    """The instrument's orders and the level sizes they add up to, in ticks and lots."""

    def __init__(self):
        self.orders = {}                  # order id -> (side, ticks, lots)
        self.levels = ({}, {})            # per side: ticks -> lots
        self.touched = (set(), set())     # per side: prices changed in the current event

    def add(self, oid, side, price, lots):
        if oid in self.orders:
            return f"add of order {oid}, which is already in the book"
        self.orders[oid] = (side, price, lots)
        self._level(side, price, lots)
        return None

    def cancel(self, oid, lots):
        if oid not in self.orders:
            return f"cancel of order {oid}, which is not in the book"
        side, price, held = self.orders[oid]
        if lots > held:
            return f"cancel of {lots} lots of order {oid}, which holds {held}"
        if lots == held:
            del self.orders[oid]
        else:
            self.orders[oid] = (side, price, held - lots)
        self._level(side, price, -lots)
        return None

    def modify(self, oid, side, price, lots):
        if oid not in self.orders:
            return f"modify of order {oid}, which is not in the book"
        old_side, old_price, held = self.orders.pop(oid)
        self._level(old_side, old_price, -held)
        if lots:
            self.orders[oid] = (side, price, lots)
            self._level(side, price, lots)
        return None

    def clear(self):
        for side, levels in enumerate(self.levels):
            self.touched[side].update(levels)
            levels.clear()
        self.orders.clear()

    def _level(self, side, price, lots):
        levels = self.levels[side]
        total = levels.get(price, 0) + lots
        if total:
            levels[price] = total
        else:
            del levels[price]
        self.touched[side].add(price)

    def changes(self, where):
        """The touched levels' sizes now (0: gone), per side; forgets the touches."""
        out = []
        for side, levels in enumerate(self.levels):
            out.append([(p, _lots(levels.get(p, 0), where)) for p in sorted(self.touched[side])])
            self.touched[side].clear()
        return out

    def sides(self, where):
        """Every level, best first: ``(bids, asks)``."""
        bids, asks = (sorted(levels.items(), reverse=side == Side.BID)
                      for side, levels in enumerate(self.levels))
        return ([(p, _lots(q, where)) for p, q in bids], [(p, _lots(q, where)) for p, q in asks])


def _lots(total, where):
    if not 0 <= total <= SIZE_MAX:
        raise ValueError(f"{where}: a level adds up to {total} lots, outside 0..{SIZE_MAX} "
                         f"(choose another --lot)")
    return total


def read_databento(paths, tick=None, lot=None, venue=0, stats=None, instrument=None):
    """Stream updates from Databento MBO files (order by order, e.g. CME Globex MDP 3.0);
    several paths continue one book (each file's snapshot replaces it).

    The orders are kept here and each exchange event (the records up to one flagged
    ``F_LAST``) becomes one update with the net change of every level it touched
    (``exch_seq`` = the event's ``sequence``, ``ts_ns`` = its ``ts_event``). A run of
    ``F_SNAPSHOT`` records is one ``"snapshot"`` update of the whole book (``ts_ns`` = its
    ``ts_recv``: the orders' own times are when they were entered); an event with a clear
    (``R``) is a ``"clear"`` update, the book it leaves as a snapshot. Add, cancel (``size``
    lots off the order) and modify (the order's new price and size) change the book; a
    trade (``T``) becomes a TRADE on the aggressor's side. Fills (``F``, the resting orders'
    side of a trade: the book change follows as a cancel or modify), side-less trades,
    ``N`` records, non-MBO records and other instruments than the one followed (a warning
    names each) are counted in ``stats.ignored``. An order record that does not fit the book
    (a cancel of an unknown order, ...) is a ``"gap"`` update (a CLEAR, reported through
    ``stats``); events are then ``"unsynced"`` until the next snapshot or clear, as before
    the first one; a snapshot that does not fit is an error.

    ``instrument``: an instrument id, or a raw symbol ("ESM4") looked up in each file's
    symbol mappings; by default the first MBO record's instrument. ``tick`` defaults by the
    symbol's root (:data:`MARKETS`), ``lot`` to 1.
    """
    state = _Replay(venue, Stats() if stats is None else stats)
    if isinstance(instrument, str) and instrument.isdigit():
        instrument = int(instrument)
    for path in paths:
        where = str(path)
        for number, rec in _records(path, state.stats):
            where = str(path) if number is None else f"{path}: record {number}"
            if number is None:
                if instrument is not None:      # else the first MBO record's, in any file
                    state.wanted = _wanted(rec, instrument, where)
                symbols = [instrument] if isinstance(instrument, str) else rec.symbols
                continue
            if state.wanted is None:
                state.wanted = {rec.instrument_id}
            if rec.instrument_id not in state.wanted:
                state.stats.ignored += 1
                if rec.instrument_id not in state.others and state.stats.warn is not None:
                    state.stats.warn(f"{where}: records of instrument {rec.instrument_id} "
                                     f"ignored: the replay follows "
                                     f"{_following(instrument, state.wanted)}")
                state.others.add(rec.instrument_id)
                continue
            if state.units is None:
                state.units = _Units(_scale(symbols, tick, lot, where))
            yield from state.feed(rec, where)
        if state.records:       # a file ending inside an event or a snapshot: what it holds
            yield state.close(where)


def _wanted(metadata, instrument, where):
    """The instrument ids a file's records are followed for; None: the first record's."""
    if instrument is None:
        return None
    if isinstance(instrument, int):
        return {instrument}
    ids = {int(i["symbol"]) for i in metadata.mappings.get(instrument, ())
           if str(i["symbol"]).isdigit()}
    if not ids:
        known = ", ".join(sorted(metadata.mappings)) or "none"
        raise ValueError(f"{where}: symbol {instrument!r} is not in the file's symbol "
                         f"mappings (it maps: {known}); give a raw symbol or an instrument id")
    return ids


def _following(instrument, wanted):
    ids = ", ".join(str(i) for i in sorted(wanted))
    if instrument is None:
        return f"instrument {ids}, the first in the data"
    return f"{instrument!r} (instrument {ids})" if isinstance(instrument, str) \
        else f"instrument {ids}"


class _Replay:
    """The replay's state across files: the book, whether it is known, the open event."""

    def __init__(self, venue, stats):
        self.venue, self.stats, self.seq, self.book = venue, stats, Sequencer(venue), _Book()
        self.units = None       # ticks and lots, from the first followed record's file
        self.wanted = None      # the instrument ids followed
        self.others = set()     # instruments ignored so far
        self.synced = self.in_snapshot = self.cleared = False
        self.records = []       # of the open event or snapshot

    def feed(self, rec, where):
        """The updates ``rec`` completes (none, one, or a snapshot's end and one)."""
        snapshot = bool(rec.flags & dbn.F_SNAPSHOT)
        if self.in_snapshot and not snapshot:     # the snapshot ended with its last record
            yield self.close(where)
        if snapshot and not self.in_snapshot:
            self.book, self.in_snapshot, self.synced = _Book(), True, True
        self.records.append(rec)
        if rec.action == "R":
            self.synced = self.cleared = True      # an empty book, known from here
        problem = _apply(self.book, rec, self.units, where) if self.synced else None
        if problem is not None:
            if self.in_snapshot:
                raise ValueError(f"{where}: snapshot record: {problem}")
            self.stats.gap(where, f"{problem}; waiting for a snapshot or clear")
            self.book, self.synced, self.cleared, self.records = _Book(), False, False, []
            yield Update(self.venue, rec.sequence, rec.ts_event, "gap", tuple(self.seq.gap()),
                         where)
        elif rec.flags & dbn.F_LAST:
            yield self.close(where)

    def close(self, where):
        """The update of the open event or snapshot."""
        records, self.records = self.records, []
        last = records[-1]
        if not self.synced:
            self.stats.unsynced += 1
            return Update(self.venue, last.sequence, last.ts_event, "unsynced", (), where)
        if self.in_snapshot or self.cleared:
            kind = "snapshot" if self.in_snapshot else "clear"
            messages = self.seq.snapshot(*self.book.sides(where))
            self.book.changes(where)        # the snapshot carries every level
            self.in_snapshot = self.cleared = False
        else:
            kind = "event"
            messages = self.seq.changes(*self.book.changes(where))
        for rec in records:
            if rec.action == "T" and rec.side in _SIDES:
                messages += self.seq.trade(_SIDES[rec.side], self.units.price(rec, where),
                                           self.units.size(rec, where))
                kind = "trade" if kind == "event" else kind
            elif rec.action in ("T", "F", "N"):
                self.stats.ignored += 1
        # A snapshot's time is when it was taken; its orders' ts_event, when they were entered.
        ts = last.ts_recv if kind == "snapshot" else last.ts_event
        return Update(self.venue, last.sequence, ts, kind, tuple(messages), where)


def _scale(symbols, tick, lot, where):
    if tick is None:
        roots = {_root(s) for s in symbols}
        if len(roots) != 1 or not roots <= MARKETS.keys():
            raise ValueError(f"{where}: no default tick for symbol(s) {sorted(symbols)} (known: "
                             f"{', '.join(MARKETS)}); give --tick in the price's units, "
                             f"e.g. 0.25 for ES")
        tick = MARKETS[roots.pop()]
    return Scale(tick, DEFAULT_LOT if lot is None else lot)


class _Units:
    """A record's price in ticks and size in lots, remembered per raw price (the DBN price is
    an integer of 1e-9 units: its decimal text is built once per distinct price)."""

    def __init__(self, scale):
        self.scale, self.prices = scale, {}

    def price(self, rec, where):
        ticks = self.prices.get(rec.price)
        if ticks is None:
            if rec.price == _UNDEF_PRICE:
                raise ValueError(f"{where}: {rec.action} record without a price")
            ticks = self.scale.price(str(Decimal(rec.price).scaleb(-9)), where)
            if len(self.prices) < _CACHE_MAX:
                self.prices[rec.price] = ticks
        return ticks

    def size(self, rec, where):
        return self.scale.size(str(rec.size), where)


def _apply(book, rec, units, where):
    """Apply one record to ``book``; the reason it cannot be, or None."""
    action = rec.action
    if action == "R":
        book.clear()
        return None
    if action not in "ACM":
        return None
    side = _SIDES.get(rec.side)
    if side is None:
        raise ValueError(f"{where}: {action} record of order {rec.order_id} without a side")
    lots = units.size(rec, where)
    if action == "C":
        return book.cancel(rec.order_id, lots)
    price = units.price(rec, where)
    if action == "A":
        if not lots:
            raise ValueError(f"{where}: add of order {rec.order_id} with size 0")
        return book.add(rec.order_id, side, price, lots)
    return book.modify(rec.order_id, side, price, lots)
