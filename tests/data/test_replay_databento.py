"""Databento MBO: the replayed book against the orders summed up afresh, hand-made files for
gaps, trades and bad input, and the CME captures through the windowed Verilated engine."""

import csv
import datetime
import random
from collections import Counter
from decimal import Decimal
from types import SimpleNamespace

import databento_dbn as dbn
import pytest
import zstandard

from obcore.control.cli import main
from obcore.hw.layouts import FeedKind, Side
from obcore.sim.model import BookModel
from obcore.sim.replay import Stats, read_databento

ES = ["databento/esh4-glbx-mdp3-20231224.mbo.dbn.zst",      # the snapshot alone
      "databento/esh4-glbx-mdp3-20231225.mbo.dbn.zst"]      # its snapshot again, then live
ESM4 = ["databento/orderbooks_mbo_2024-05-08T00-00-00_2024-05-08T00-00-02.dbn.zst"]
TICK = Decimal("0.25")
CHECK_EVERY = 97     # events between full comparisons (the snapshots and the last always)


def _raw(path):
    """The MBO records of a file, decoded whole by databento-dbn (not the adapter's reader)."""
    decoder = dbn.DBNDecoder(compression=dbn.Compression.ZSTD)
    decoder.write(path.read_bytes())
    return [r for r in decoder.decode() if isinstance(r, dbn.MBOMsg)]


def _boundaries(paths):
    """``(kind, orders)`` where the adapter documents an update: the end of a snapshot run
    and every record flagged F_LAST. ``orders`` is live (order id -> [side, price, size])."""
    for path in paths:
        orders, snapshot = {}, False
        for r in _raw(path):
            flagged = bool(r.flags & dbn.F_SNAPSHOT)
            if snapshot and not flagged:
                yield "snapshot", orders
                snapshot = False
            if flagged and not snapshot:
                orders, snapshot = {}, True
            if r.action == "R":
                orders.clear()
            elif r.action == "A":
                orders[r.order_id] = [str(r.side), r.price, r.size]
            elif r.action == "C":
                orders[r.order_id][2] -= r.size
                if not orders[r.order_id][2]:
                    del orders[r.order_id]
            elif r.action == "M":
                orders[r.order_id] = [str(r.side), r.price, r.size]
            if r.flags & dbn.F_LAST:
                yield ("snapshot" if snapshot else "event"), orders
                snapshot = False


def _ticks(price):
    value = Decimal(price).scaleb(-9) / TICK
    assert value == value.to_integral_value(), price
    return int(value)


def _summed(orders):
    """Every level from the orders, best first: ``(bids, asks)`` as the model's ``top``."""
    sums = {"B": Counter(), "A": Counter()}
    for side, price, size in orders.values():
        sums[side][_ticks(price)] += size
    return (sorted(sums["B"].items(), reverse=True), sorted(sums["A"].items()))


@pytest.mark.parametrize("names", [ES, ESM4], ids=["esh4", "esm4"])
def test_replayed_book_is_the_orders_summed_up(data, names):
    paths = [data(n) for n in names]
    stats = Stats()
    updates = read_databento(paths, stats=stats)
    model = BookModel(venues=1, levels=16, capacity=None)
    book = model.books[0]
    trades = Counter()
    events = 0
    for events, (kind, orders) in enumerate(_boundaries(paths), 1):
        update = next(updates)
        assert update.kind in ((kind,) if kind == "snapshot" else ("event", "trade"))
        for msg in update.messages:
            model.step(msg)
            if msg["kind"] == FeedKind.TRADE:
                trades[Side(msg["side"])] += 1
        if kind == "snapshot" or events % CHECK_EVERY == 0:
            assert (book.bids.top(len(book.bids)), book.asks.top(len(book.asks))) == \
                _summed(orders), update.source
    assert next(updates, None) is None
    assert (book.bids.top(len(book.bids)), book.asks.top(len(book.asks))) == _summed(orders)
    raw = [r for p in paths for r in _raw(p)]
    sided = Counter(str(r.side) for r in raw if r.action == "T")
    assert (trades[Side.BID], trades[Side.ASK]) == (sided["B"], sided["A"])
    assert stats.ignored == sum(r.action in ("F", "N") for r in raw) + sided["N"]
    assert (stats.gaps, stats.unsynced, book.counters.gaps) == ([], 0, 0)


def _file(path, records, symbols=("ESH4",), ids=None):
    """A DBN file of ``records``; ``ids`` maps raw symbols to instrument ids."""
    day = datetime.date(2024, 5, 8)
    mappings = [SimpleNamespace(raw_symbol=symbol, intervals=[SimpleNamespace(
        start_date=day, end_date=day + datetime.timedelta(days=1), symbol=str(i))])
        for symbol, i in (ids or {}).items()]
    meta = dbn.Metadata(dataset="GLBX.MDP3", schema=dbn.Schema.MBO, start=0,
                        stype_in=dbn.SType.RAW_SYMBOL, stype_out=dbn.SType.INSTRUMENT_ID,
                        symbols=list(symbols), partial=[], not_found=[], mappings=mappings)
    path.write_bytes(meta.encode() + b"".join(bytes(r) for r in records))
    return path


def _mbo(action, side="N", oid=0, points="0", size=0, last=True, instrument=7, seq=0,
         snapshot=False):
    price = int(Decimal(points).scaleb(9)) if points else dbn.UNDEF_PRICE
    flags = (dbn.F_LAST if last else 0) | (dbn.F_SNAPSHOT if snapshot else 0)
    return dbn.MBOMsg(publisher_id=1, instrument_id=instrument, ts_event=seq, ts_recv=seq,
                      order_id=oid, price=price, size=size, action=dbn.Action(action),
                      side=dbn.Side(side), flags=flags, sequence=seq)


def test_hand_worked_events_gap_and_resync(tmp_path):
    """Worked by hand: the book after each event, a trade on the aggressor's side, a cancel
    of an unknown order as a gap (a CLEAR), events unsynced until the next clear."""
    path = _file(tmp_path / "x.dbn", [
        _mbo("A", "B", 1, "4799.00", 5, seq=1),             # unsynced: no book known yet
        _mbo("R", points=None, seq=2),                       # a clear: the empty book, known
        _mbo("A", "B", 1, "4799.00", 5, seq=3),
        _mbo("A", "A", 2, "4799.50", 3, last=False, seq=4),  # one event of four records:
        _mbo("T", "A", 0, "4799.00", 2, last=False, seq=5),  # a seller hits the bid,
        _mbo("F", "B", 1, "4799.00", 2, last=False, seq=5),  # the resting order's fill,
        _mbo("C", "B", 1, "4799.00", 2, seq=5),              # and what it left
        _mbo("A", "B", 9, "4800.00", 1, instrument=8, seq=6),   # another instrument
        _mbo("M", "A", 2, "4799.25", 4, last=False, seq=7),  # price and size change,
        _mbo("C", "B", 1, "4799.00", 3, seq=7),              # the rest of order 1 cancelled
        _mbo("C", "B", 99, "4799.00", 1, seq=8),             # not in the book: a gap
        _mbo("A", "B", 3, "4798.00", 1, seq=9),              # unsynced
        _mbo("R", points=None, seq=10),
        _mbo("A", "B", 4, "4800.00", 2, seq=11),
    ])
    warned = []
    stats = Stats(warn=warned.append)
    updates = list(read_databento([path], stats=stats))
    assert [(u.kind, u.exch_seq) for u in updates] == [
        ("unsynced", 1), ("clear", 2), ("event", 3), ("trade", 5), ("event", 7), ("gap", 8),
        ("unsynced", 9), ("clear", 10), ("event", 11)]
    model = BookModel(venues=1, levels=4, capacity=None)
    seen = []
    for u in updates:
        for msg in u.messages:
            model.step(msg)
        book = model.books[0]
        seen.append((book.bids.top(len(book.bids)), book.asks.top(len(book.asks))))
    # 4799.00 is 19196 ticks of 0.25.
    assert seen[2] == ([(19196, 5)], [])
    assert seen[3] == ([(19196, 3)], [(19198, 3)])
    assert seen[4] == ([], [(19197, 4)])
    assert seen[5] == ([], [])                        # the CLEAR
    assert seen[8] == ([(19200, 2)], [])
    assert [m["kind"] for m in updates[7].messages] == [FeedKind.SNAPSHOT_START,
                                                        FeedKind.SNAPSHOT_END]
    assert model.outputs(0)["synced"]
    trade = [m for m in updates[3].messages if m["kind"] == FeedKind.TRADE]
    assert [(m["side"], m["price"], m["size"]) for m in trade] == [(Side.ASK, 19196, 2)]
    assert [m["kind"] for m in updates[5].messages] == [FeedKind.CLEAR]
    assert (stats.unsynced, stats.ignored) == (2, 2)   # the fill, the other instrument
    assert warned == [f"{path}: record 7: records of instrument 8 ignored: the replay follows "
                      f"instrument 7, the first in the data",
                      f"{path}: record 10: cancel of order 99, which is not in the book; "
                      f"waiting for a snapshot or clear"]
    assert model.books[0].counters.gaps == 1


def test_instrument_by_id_or_symbol(tmp_path, capsys):
    """Two contracts in one file: the first record's is followed by default; ``instrument``
    picks the other by id or raw symbol (the file's mappings), and obcore replay's
    --instrument too; an unknown symbol is an error naming what the file maps."""
    path = _file(tmp_path / "two.dbn", [
        _mbo("R", points=None, instrument=7), _mbo("R", points=None, instrument=8),
        _mbo("A", "B", 1, "4799.00", 5, instrument=7),
        _mbo("A", "B", 2, "4850.25", 3, instrument=8)],
        symbols=("ESH4", "ESM4"), ids={"ESH4": 7, "ESM4": 8})

    def best_bids(**chosen):
        warned = []
        updates = read_databento([path], stats=Stats(warn=warned.append), **chosen)
        bids = [m["price"] for u in updates for m in u.messages if m["kind"] ==
                FeedKind.LEVEL_SET]
        return bids, warned

    assert best_bids() == ([19196], [f"{path}: record 1: records of instrument 8 ignored: "
                                     f"the replay follows instrument 7, the first in the data"])
    for chosen in (8, "8", "ESM4"):
        bids, warned = best_bids(instrument=chosen)
        assert bids == [19401] and len(warned) == 1 and "instrument 7 ignored" in warned[0]
    assert "'ESM4' (instrument 8)" in best_bids(instrument="ESM4")[1][0]
    with pytest.raises(ValueError, match=r"symbol 'NQM4' is not in the file's symbol mappings "
                                         r"\(it maps: ESH4, ESM4\)"):
        best_bids(instrument="NQM4")
    out = tmp_path / "out.csv"
    assert main(["replay", "--engine", "model", "--format", "databento", str(path),
                 "--instrument", "ESM4", "--window", "0", "--out", str(out), "--quiet"]) == 0
    with open(out, newline="") as fh:
        assert [r["best_bid"] for r in csv.DictReader(fh)] == ["0", "19401"]
    assert main(["replay", "--engine", "model", "--format", "native", str(path),
                 "--instrument", "8", "--out", str(out)]) == 2
    assert "--instrument selects a databento instrument" in capsys.readouterr().err


@pytest.mark.parametrize(("records", "cut", "message"), [
    ([_mbo("R", points=None), _mbo("A", "B", 1, "4799.10", 1)], 0,
     r"record 1: price 4799\.100000000 is not a whole number of ticks of 0\.25"),
    ([_mbo("R", points=None), _mbo("A", "N", 1, "4799", 1)], 0,
     "record 1: A record of order 1 without a side"),
    ([_mbo("R", points=None), _mbo("A", "B", 1, "4799", 1)], 10, "record 1: truncated file"),
    ([], -1, r"damaged DBN header \(metadata of 4294967295 bytes\)"),
    ([_mbo("A", "B", 1, "4799", 1, last=False, snapshot=True)] * 2, 0,
     "record 1: snapshot record: add of order 1, which is already in the book"),
])
def test_bad_records_are_errors_naming_the_record(tmp_path, records, cut, message):
    path = _file(tmp_path / "x.dbn", records)
    if cut > 0:
        path.write_bytes(path.read_bytes()[:-cut])
    if cut < 0:     # the metadata length
        path.write_bytes(path.read_bytes()[:4] + b"\xff" * 4 + path.read_bytes()[8:])
    with pytest.raises(ValueError, match=message):
        list(read_databento([path]))


def test_damaged_files_are_errors_never_crashes(data, tmp_path):
    """Random bytes changed in the header or the records, cut short, recompressed and
    damaged again: every run ends, or stops with a ValueError naming the file (a record
    decoder that aborts the process, as databento-dbn's does on a short record, fails)."""
    seed = random.randrange(1 << 30)
    print(f"seed={seed}")
    rng = random.Random(seed)
    decoder = dbn.DBNDecoder(compression=dbn.Compression.ZSTD)
    decoder.write(data(ESM4[0]).read_bytes())
    meta, *records = decoder.decode()
    clean = meta.encode() + b"".join(bytes(r) for r in records[:2000])
    outcomes = Counter()
    for trial in range(60):
        damaged = bytearray(clean)
        for _ in range(rng.randrange(1, 12)):
            at = rng.randrange(200) if trial % 3 == 0 else rng.randrange(len(damaged))
            damaged[at] = rng.randrange(256)
        if rng.random() < 0.3:
            damaged = damaged[:rng.randrange(len(damaged))]
        if rng.random() < 0.3:
            damaged = bytearray(zstandard.ZstdCompressor().compress(bytes(damaged)))
            damaged[rng.randrange(len(damaged))] ^= 0xFF
        path = tmp_path / f"damaged{trial}.dbn"
        path.write_bytes(damaged)
        try:
            list(read_databento([path], tick="0.25"))
            outcomes["read"] += 1
        except ValueError as exc:
            assert str(exc).startswith(str(path)), exc
            outcomes["error"] += 1
    assert outcomes["error"] > 10, outcomes


def test_cli_errors_are_one_line_and_leave_no_csv(tmp_path, capsys):
    bad = tmp_path / "bad.dbn"
    bad.write_bytes(b"not a DBN file at all")
    unknown = _file(tmp_path / "zz.dbn", [_mbo("R", points=None)], symbols=("ZZZ9",))
    for path, text in ((bad, "not DBN data"),
                       (unknown, "no default tick for symbol(s) ['ZZZ9']")):
        out = tmp_path / "out.csv"
        assert main(["replay", "--engine", "model", "--format", "databento", str(path),
                     "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert text in err and len(err.splitlines()) == 1 and not out.exists()
    assert main(["replay", "--engine", "model", "--format", "databento", str(unknown),
                 "--tick", "0.5", "--window", "0", "--out", str(tmp_path / "ok.csv")]) == 0


@pytest.mark.slow
def test_es_through_the_windowed_engine_is_exact_on_every_row(data, tmp_path, capsys):
    """``obcore replay --format databento`` with its defaults (the Verilated engine, price
    ladders 8192 ticks wide): every row exact and synced, its best levels the orders'."""
    paths = [data(n) for n in ES]
    out = tmp_path / "es.csv"
    assert main(["replay", "--format", "databento", *map(str, paths), "--out", str(out),
                 "--quiet"]) == 0
    assert "rows not exact 0, rows not synced 0" in capsys.readouterr().out
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    boundaries = _boundaries(paths)
    for i, row in enumerate(rows):
        _, orders = next(boundaries)
        if i % CHECK_EVERY == 0 or i == len(rows) - 1:
            bids, asks = _summed(orders)
            assert (int(row["best_bid"]), int(row["best_bid_qty"])) == (bids[0] if bids
                                                                        else (0, 0)), i
            assert (int(row["best_ask"]), int(row["best_ask_qty"])) == (asks[0] if asks
                                                                        else (0, 0)), i
    assert next(boundaries, None) is None
