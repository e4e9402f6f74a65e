"""Bybit ``orderbook.N`` websocket records (JSON lines, zip or gzip) as native feed updates."""

import json

from .base import Scale, Sequencer, Stats, Update, integer, open_lines

__all__ = ["read_bybit", "DEFAULT_TICK", "DEFAULT_LOT"]

# XRPUSDT linear, from the sample: prices have 4 decimals, sizes are whole coins.
DEFAULT_TICK, DEFAULT_LOT = "0.0001", "1"


def read_bybit(paths, tick=None, lot=None, venue=0, stats=None):
    """Stream updates from Bybit order-book records; several paths continue one stream.

    A ``snapshot`` replaces the book; each ``delta`` must carry ``u`` = previous ``u`` + 1
    (sizes absolute, "0" deletes). A break is a ``"gap"`` update (a CLEAR one sequence number
    late, reported through ``stats``); deltas are then ``"unsynced"`` until the next snapshot,
    which Bybit sends after any fault on its side. ``exch_seq`` is ``u``, ``ts_ns`` the
    record's ``ts`` (exchange ms).
    """
    stats = Stats() if stats is None else stats
    scale = Scale(DEFAULT_TICK if tick is None else tick, DEFAULT_LOT if lot is None else lot)
    seq, last = Sequencer(venue), None     # last applied u; None while unsynced
    for path in paths:
        for lineno, line in open_lines(path):
            source = f"{path}:{lineno}"
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                kind, data = record["type"], record["data"]
                u, ts, bids, asks = data["u"], record["ts"], data["b"], data["a"]
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{source}: malformed record ({type(exc).__name__}: "
                                 f"{exc})") from None
            u, ts_ns = integer(u, "u", source), integer(ts, "ts", source) * 1_000_000
            bids, asks = scale.levels(bids, source), scale.levels(asks, source)
            if kind == "snapshot":
                last, out = u, ("snapshot", seq.snapshot(bids, asks))
            elif kind != "delta":
                raise ValueError(f"{source}: unknown record type {kind!r}")
            elif last is None:
                stats.unsynced += 1
                out = ("unsynced", [])
            elif u != last + 1:
                stats.gap(source, f"sequence gap: u={u} after u={last}; waiting for a snapshot")
                last, out = None, ("gap", seq.gap())
            else:
                last, out = u, ("delta", seq.changes(bids, asks))
            yield Update(venue, u, ts_ns, out[0], tuple(out[1]), source)
