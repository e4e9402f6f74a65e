"""Binance websocket captures (gzip ``<local ts> <raw JSON>`` lines) as native feed updates."""

import json
from collections import deque
from dataclasses import dataclass

from ...hw.layouts import Side
from .base import REFERENCE, Book, Scale, Sequencer, Stats, Update, integer, open_lines

__all__ = ["read_binance", "MARKETS", "MAX_BUFFER"]

# Default (tick, lot) per market, from the BTCUSDT captures: spot prices have 2 decimals and
# level sizes up to 6 (finer than today's 0.00001 step: older resting orders), futures 1 and 3.
MARKETS = {"spot": ("0.01", "0.000001"), "usdm": ("0.1", "0.001")}
# Diffs held while waiting for a snapshot. A snapshot can only be bridged by a diff received
# shortly before it, so older ones are dropped (as unsynced) rather than held without bound.
MAX_BUFFER = 10_000
_WAIT, _BRIDGE, _LIVE = "wait", "bridge", "live"


@dataclass(frozen=True)
class _Diff:
    first: int       # U
    last: int        # u
    prev: object     # pu (futures only), else None
    bids: list
    asks: list
    ts_ns: int
    source: str


def _market(record):
    """``"usdm"`` or ``"spot"`` from one record: futures records carry fields spot lacks."""
    if "lastUpdateId" in record:
        return "usdm" if "T" in record else "spot"
    data = record.get("data", {})
    kind = data.get("e")
    if kind == "depthUpdate":
        return "usdm" if "pu" in data else "spot"
    if kind == "trade":
        return "spot" if "M" in data else "usdm"
    return "usdm" if kind else "spot"   # spot bookTicker has no "e"; markPrice is futures only


def _parse(line, source):
    stamp, _, body = line.partition(" ")
    try:
        ts = int(stamp)
        record = json.loads(body)
    except ValueError:
        raise ValueError(f"{source}: malformed line, expected '<local ts> <JSON>'") from None
    if not isinstance(record, dict):
        raise ValueError(f"{source}: malformed line, the JSON is not an object")
    # 2024 captures stamp nanoseconds, 2023 ones microseconds; 1e17 ns is 1973, 1e17 µs 5138.
    return (ts if ts >= 10**17 else ts * 1000), record


class _Sync:
    """Binance's documented book sync: buffer, snapshot, drop stale, bridge, then chain."""

    def __init__(self, seq, stats):
        self.seq, self.stats = seq, stats
        self.state, self.last = _WAIT, None
        self.buffer = deque()

    def _update(self, diff, kind, messages=()):
        return Update(self.seq.venue, diff.last, diff.ts_ns, kind, tuple(messages), diff.source)

    def _unsynced(self, diff):
        self.stats.unsynced += 1
        return self._update(diff, "unsynced")

    def diff(self, diff):
        if self.state != _WAIT:
            yield self._apply(diff)
            return
        self.buffer.append(diff)
        if len(self.buffer) > MAX_BUFFER:
            yield self._unsynced(self.buffer.popleft())

    def snapshot(self, last_id, bids, asks, ts_ns, source):
        yield Update(self.seq.venue, last_id, ts_ns, "snapshot",
                     tuple(self.seq.snapshot(bids, asks)), source)
        self.state, self.last = _BRIDGE, last_id
        buffered, self.buffer = self.buffer, deque()
        for diff in buffered:
            yield from self.diff(diff)      # after a gap among them, the rest wait again

    def finish(self):
        while self.buffer:
            yield self._unsynced(self.buffer.popleft())

    def _apply(self, d):
        spot = d.prev is None
        if self.state == _BRIDGE:
            # Spot: the snapshot already holds update lastUpdateId; futures: it may not.
            if d.last < self.last + spot:
                return self._update(d, "stale")
            if d.first > self.last + spot:
                return self._gap(d, f"diff U={d.first} u={d.last} does not bridge snapshot "
                                    f"lastUpdateId={self.last}")
        elif spot and d.first != self.last + 1:
            return self._gap(d, f"diff U={d.first} does not follow previous u={self.last}")
        elif not spot and d.prev != self.last:
            return self._gap(d, f"diff pu={d.prev} is not the previous u={self.last}")
        self.state, self.last = _LIVE, d.last
        return self._update(d, "diff", self.seq.changes(d.bids, d.asks))

    def _gap(self, d, text):
        # The book is unknown until a later snapshot; this diff cannot be trusted to bridge it.
        self.stats.gap(d.source, f"sequence gap: {text}; waiting for a snapshot")
        self.state = _WAIT
        return self._update(d, "gap", self.seq.gap())


def read_binance(paths, tick=None, lot=None, venue=0, stats=None):
    """Stream updates from Binance captures; several paths continue one capture.

    Depth diffs and the REST snapshot line go through Binance's sync procedure (see
    ``../shared/data/README.md``): diffs are buffered until the snapshot, stale ones become
    empty ``"stale"`` updates, and every break of the ``pu``/``U`` chain is a ``"gap"`` update
    (a CLEAR one sequence number late, reported through ``stats``) after which diffs are
    ``"unsynced"`` until the next snapshot. Updates come in the order the book changes, so
    diffs buffered before a snapshot follow it. ``trade`` becomes a TRADE whose side is the
    aggressor's: ``m`` (buyer is maker) means a seller hit the bid, so ASK. ``bookTicker`` is a
    ``REFERENCE`` update with Binance's best bid/ask at update id ``u`` as its truth. Other
    streams (markPrice, ...) are counted in ``stats.ignored``. Times are local receive times.

    ``tick``/``lot`` default to :data:`MARKETS` for the market recognised in the first record.
    """
    stats = Stats() if stats is None else stats
    seq, scale, sync = Sequencer(venue), None, None
    for path in paths:
        for lineno, line in open_lines(path):
            source = f"{path}:{lineno}"
            if not line.strip():
                continue
            ts, record = _parse(line, source)
            try:
                if scale is None:
                    market_tick, market_lot = MARKETS[_market(record)]
                    scale = Scale(market_tick if tick is None else tick,
                                  market_lot if lot is None else lot)
                    sync = _Sync(seq, stats)
                yield from _record(record, ts, source, scale, seq, sync, stats)
            except (KeyError, TypeError, IndexError, AttributeError) as exc:
                raise ValueError(f"{source}: malformed record ({type(exc).__name__}: "
                                 f"{exc})") from None
    if sync is not None:
        yield from sync.finish()


def _record(record, ts, source, scale, seq, sync, stats):
    if "lastUpdateId" in record:
        yield from sync.snapshot(integer(record["lastUpdateId"], "lastUpdateId", source),
                                 scale.levels(record["bids"], source),
                                 scale.levels(record["asks"], source), ts, source)
        return
    data = record["data"]
    kind = data.get("e") or ("bookTicker" if record["stream"].endswith("@bookTicker") else None)
    if kind == "depthUpdate":
        yield from sync.diff(_Diff(integer(data["U"], "U", source), integer(data["u"], "u", source),
                                   integer(data["pu"], "pu", source) if "pu" in data else None,
                                   scale.levels(data["b"], source),
                                   scale.levels(data["a"], source), ts, source))
    elif kind == "trade":
        size = scale.size(data["q"], source)
        if not size:
            raise ValueError(f"{source}: trade of size 0")
        side = Side.ASK if data["m"] else Side.BID
        yield Update(seq.venue, integer(data["t"], "t", source), ts, "trade",
                     tuple(seq.trade(side, scale.price(data["p"], source), size)), source)
    elif kind == "bookTicker":
        truth = Book(_touch(data["b"], data["B"], scale, source),
                     _touch(data["a"], data["A"], scale, source))
        yield Update(seq.venue, integer(data["u"], "u", source), ts, REFERENCE, (), source, truth)
    else:
        stats.ignored += 1


def _touch(price, size, scale, source):
    """A bookTicker side as a one-level tuple, empty when its size is 0 (an empty side)."""
    lots = scale.size(size, source)
    return ((scale.price(price, source), lots),) if lots else ()
