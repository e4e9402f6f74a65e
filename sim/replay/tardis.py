"""Tardis ``incremental_book_L2`` CSV as native feed updates, one per local-timestamp group."""

from ...hw.layouts import Side
from .base import Scale, Sequencer, Stats, Update, open_lines

__all__ = ["read_tardis", "EXCHANGES", "COLUMNS"]

COLUMNS = ("exchange", "symbol", "timestamp", "local_timestamp", "is_snapshot", "side",
           "price", "amount")
# Default (tick, lot) by the ``exchange`` column, from the sample files: Binance BTCUSDT spot
# quotes 2 price and 6 amount decimals; Deribit BTC-PERPETUAL a 0.5 tick and whole-USD amounts.
EXCHANGES = {"binance": ("0.01", "0.000001"), "deribit": ("0.5", "1")}
_SIDES = {"bid": Side.BID, "ask": Side.ASK}
_FLAGS = {"true": True, "false": False}


class _Group:
    """Rows sharing ``local_timestamp`` and ``is_snapshot``: one update."""

    def __init__(self, key, source):
        self.key, self.source = key, source
        self.levels = ([], [])    # bids, asks: (ticks, lots) in row order


def _header(line, source):
    names = tuple(line.strip().split(","))
    if names != COLUMNS:
        raise ValueError(f"{source}: not a Tardis incremental_book_L2 header; expected "
                         f"{','.join(COLUMNS)}")


def _scale(exchange, tick, lot, source):
    if tick is not None and lot is not None:
        return Scale(tick, lot)
    if exchange not in EXCHANGES:
        raise ValueError(f"{source}: no default tick/lot for exchange {exchange!r}; "
                         f"give --tick and --lot")
    default_tick, default_lot = EXCHANGES[exchange]
    return Scale(default_tick if tick is None else tick, default_lot if lot is None else lot)


def read_tardis(paths, tick=None, lot=None, venue=0, stats=None):
    """Stream updates from Tardis CSV files; several paths continue one book.

    Consecutive rows with the same ``local_timestamp`` and ``is_snapshot`` form one update
    (``exch_seq`` = its number from 0, ``ts_ns`` = the local timestamp). A run of snapshot rows
    (a switch from false to true, or the file's start) is one snapshot, SNAPSHOT_START in its
    first update and SNAPSHOT_END in its last; ``amount`` is absolute and 0 deletes. Rows before
    the first snapshot cannot be applied to a known book: they become ``"unsynced"`` updates
    (counted in ``stats``). ``tick``/``lot`` default from :data:`EXCHANGES`.
    """
    stats = Stats() if stats is None else stats
    seq, scale, state = Sequencer(venue), None, {"synced": False, "in_snapshot": False}
    number, group = 0, None
    for path in paths:
        for lineno, line in open_lines(path):
            source = f"{path}:{lineno}"
            if lineno == 1:
                _header(line, source)
                continue
            if not line.strip():
                continue
            cells = line.rstrip("\r\n").split(",")
            if len(cells) != len(COLUMNS) or cells[4] not in _FLAGS or cells[5] not in _SIDES:
                raise ValueError(f"{source}: malformed row, expected {len(COLUMNS)} columns "
                                 f"with is_snapshot true/false and side bid/ask")
            try:
                key = (int(cells[3]), _FLAGS[cells[4]])
            except ValueError:
                raise ValueError(f"{source}: malformed local_timestamp {cells[3]!r}") from None
            if scale is None:
                scale = _scale(cells[0], tick, lot, source)
            if group is not None and key != group.key:
                yield _finish(group, number, key[1], seq, state, stats)
                number, group = number + 1, None
            if group is None:
                group = _Group(key, source)
            group.levels[_SIDES[cells[5]]].append((scale.price(cells[6], source),
                                                   scale.size(cells[7], source)))
    if group is not None:
        yield _finish(group, number, False, seq, state, stats)


def _finish(group, number, next_is_snapshot, seq, state, stats):
    """The update for a complete group; ``next_is_snapshot`` tells if its snapshot goes on."""
    (local_us, snapshot), (bids, asks) = group.key, group.levels
    if snapshot:
        messages = seq.snapshot(bids, asks, start=not state["in_snapshot"],
                                end=not next_is_snapshot)
        state.update(synced=True, in_snapshot=next_is_snapshot)
        kind = "snapshot"
    elif state["synced"]:
        messages, kind = seq.changes(bids, asks), "update"
    else:
        stats.unsynced += 1
        messages, kind = [], "unsynced"
    return Update(seq.venue, number, local_us * 1000, kind, tuple(messages), group.source)
