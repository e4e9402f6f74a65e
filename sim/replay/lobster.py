"""LOBSTER zips (message + orderbook CSV) as native feed updates, one per message line."""

import re
import zipfile
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from itertools import zip_longest

from ...hw.layouts import Side
from .base import Book, Scale, Sequencer, Update, open_lines

__all__ = ["read_lobster", "DEFAULT_TICK", "DEFAULT_LOT", "TYPES"]

# Prices are dollars x 10000. The tick is that unit ($0.0001), not the $0.01 of the book:
# hidden executions (type 5) print at sub-penny midpoints such as 2237950.
DEFAULT_TICK, DEFAULT_LOT = "1", "1"
TYPES = {1: "new", 2: "cancel", 3: "delete", 4: "execute", 5: "hidden", 7: "halt"}
_EMPTY = 9999999999     # LOBSTER's price of an unoccupied level (negative on the bid side)
_NS = Decimal("1e-9")


def _pairs(path):
    """``[(message member, orderbook member, levels), ...]`` of a LOBSTER zip, by name."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile:
        raise ValueError(f"{path}: not a zip file (LOBSTER samples are zips)") from None
    pairs = []
    for name in sorted(names):
        match = re.search(r"_message_(\d+)\.csv$", name)
        if match:
            book = name[:match.start()] + f"_orderbook_{match.group(1)}.csv"
            if book not in names:
                raise ValueError(f"{path}: {name} has no matching {book}")
            pairs.append((name, book, int(match.group(1))))
    if not pairs:
        raise ValueError(f"{path}: no LOBSTER *_message_N.csv file in the zip")
    return pairs


def _row(line, levels, scale, source):
    """An orderbook row as a :class:`Book` in ticks and lots, unoccupied levels left out."""
    cells = line.strip().split(",")
    if len(cells) != 4 * levels:
        raise ValueError(f"{source}: malformed orderbook row, expected {4 * levels} columns, "
                         f"got {len(cells)}")
    sides = ([], [])    # bids, asks
    for i in range(0, len(cells), 4):
        for side, j in ((Side.ASK, i), (Side.BID, i + 2)):
            level = _level(cells[j], cells[j + 1], scale, source)
            if level:
                sides[side].append(level)
    return Book(tuple(sides[0]), tuple(sides[1]))


def _level(price, size, scale, source):
    """``(ticks, lots)`` of an orderbook price and size, ``None`` for an unoccupied level."""
    try:
        if abs(int(price)) == _EMPTY:
            return None
    except ValueError:
        raise ValueError(f"{source}: malformed orderbook price {price!r}") from None
    return scale.price(price, source), scale.size(size, source)


def _message(line, source):
    cells = line.strip().split(",")
    try:
        if len(cells) != 6:
            raise ValueError
        kind, direction = int(cells[1]), int(cells[5])
        if kind not in TYPES or direction not in (1, -1):
            raise ValueError
    except ValueError:
        raise ValueError(f"{source}: malformed message line, expected 'time,type(1-5,7),id,"
                         f"size,price,direction(1/-1)'") from None
    return _time_ns(cells[0], source), kind, cells[3], cells[4], direction


def _time_ns(text, source):
    """Seconds after midnight -> ns. The files carry ns, but a few times went through a binary
    float on LOBSTER's side (line 67823 of the level-5 sample: 43002.632812672004), so the
    digits past the ns are rounded off; prices and sizes are never rounded."""
    try:
        seconds = Decimal(text).quantize(_NS, rounding=ROUND_HALF_EVEN)
        if not 0 <= seconds < 86_400:
            raise InvalidOperation
    except InvalidOperation:
        raise ValueError(f"{source}: time {text!r} is not seconds after midnight") from None
    return int(seconds.scaleb(9))


def _changes(old, new):
    """Level changes turning one side's levels into another's: removed ones get size 0."""
    before, after = dict(old), dict(new)
    return ([(p, 0) for p in before if p not in after]
            + [(p, q) for p, q in after.items() if before.get(p) != q])


def read_lobster(paths, tick=None, lot=None, venue=0, stats=None):
    """Stream updates from LOBSTER zips: one per message line, ``exch_seq`` its line from 0.

    The book is the orderbook file's: line 0 is a snapshot of orderbook row 0; line ``i``
    carries the level changes from row ``i-1`` to row ``i`` (a level leaving the top N is
    deleted, one entering is set), so after update ``i`` the book is exactly row ``i``,
    which is also its ``truth``. Executions (types 4, 5) add a TRADE on the aggressor's side,
    the opposite of the resting order's ``direction``. Times are ns after midnight (exchange
    time). Each message/orderbook pair (a day) starts with its own snapshot. ``stats`` is
    unused: the orderbook file has no gaps to report.
    """
    del stats
    scale = Scale(DEFAULT_TICK if tick is None else tick, DEFAULT_LOT if lot is None else lot)
    seq = Sequencer(venue)
    for path in paths:
        for msg_name, book_name, levels in _pairs(path):
            prev = None
            lines = zip_longest(open_lines(path, msg_name), open_lines(path, book_name))
            for index, (msg_line, book_line) in enumerate(lines):
                if msg_line is None or book_line is None:
                    raise ValueError(f"{path}: {msg_name} and {book_name} differ in length "
                                     f"(one ends at line {index + 1})")
                source = f"{path}:{msg_name}:{msg_line[0]}"
                ts_ns, kind, size, price, direction = _message(msg_line[1], source)
                book = _row(book_line[1], levels, scale, f"{path}:{book_name}:{book_line[0]}")
                if prev is None:
                    messages = seq.snapshot(book.bids, book.asks)
                else:
                    messages = seq.changes(_changes(prev.bids, book.bids),
                                           _changes(prev.asks, book.asks))
                if kind in (4, 5):
                    side = Side.ASK if direction == 1 else Side.BID
                    messages += seq.trade(side, scale.price(price, source),
                                          scale.size(size, source))
                yield Update(venue, index, ts_ns, "snapshot" if prev is None else TYPES[kind],
                             tuple(messages), source, book)
                prev = book
