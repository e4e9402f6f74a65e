"""Replay adapters on small crafted files: exact decimals, errors with file:line, sync, ticks."""

import gzip
import json
import zipfile

import pytest

import obcore.sim.replay.native as native_format
from obcore.hw.layouts import FeedKind, Side
from obcore.sim.model import BookModel
from obcore.sim.replay import (
    Scale,
    Stats,
    Update,
    read_binance,
    read_bybit,
    read_lobster,
    read_native,
    read_tardis,
    with_ticks,
    write_native,
)

K = FeedKind
TARDIS_HEADER = "exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount\n"


def _gz(path, records, stamp=1_723_161_253_000_000_000):
    """A Binance-style capture: ``<local ns> <JSON>`` per record (a str is written as is)."""
    with gzip.open(path, "wt") as fh:
        for i, record in enumerate(records):
            fh.write(f"{stamp + i} {record if isinstance(record, str) else json.dumps(record)}\n")
    return path


def _diff(first, last, bids=(), asks=(), prev=None):
    data = {"e": "depthUpdate", "E": 1, "s": "BTCUSDT", "U": first, "u": last,
            "b": [list(x) for x in bids], "a": [list(x) for x in asks]}
    if prev is not None:
        data["pu"] = prev
    return {"stream": "btcusdt@depth@100ms", "data": data}


def _snapshot(last_id, bids, asks, **extra):
    return {"lastUpdateId": last_id, **extra, "bids": [list(x) for x in bids],
            "asks": [list(x) for x in asks]}


def _lobster_zip(path, messages, rows):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("AMZN_2012-06-21_34200000_57600000_message_1.csv", "".join(messages))
        archive.writestr("AMZN_2012-06-21_34200000_57600000_orderbook_1.csv", "".join(rows))
    return path


def _feed(updates, levels=4, capacity=None):
    """Replay into a one-venue model; ``[(update, outputs)]``."""
    model = BookModel(venues=1, levels=levels, capacity=capacity)
    out = []
    for update in updates:
        for msg in update.messages:
            model.step(msg)
        out.append((update, model.outputs(0)))
    return model, out


def test_decimal_conversion_is_exact():
    scale = Scale("0.1", "0.001")
    assert scale.price("0.3", "f.csv:7") == 3           # 0.3 / 0.1 is not 3 in binary float
    assert scale.price("61737.60000000", "f.csv:7") == 617376
    assert scale.size("0.007", "f.csv:7") == 7 and scale.size("0", "f.csv:7") == 0
    assert Scale("0.000001", "1").price("0.000003", "x") == 3
    for text, error in (("0.35", "f.csv:7: price 0.35 is not a whole number of ticks of 0.1"),
                        ("abc", "f.csv:7: price 'abc' is not a decimal number"),
                        ("NaN", "not a decimal number"), ("0", "outside 1..4294967295"),
                        ("-0.1", "outside"), ("1e40", "outside"), ("1e70", "too large")):
        with pytest.raises(ValueError, match=error):
            scale.price(text, "f.csv:7")
    with pytest.raises(ValueError, match="f.csv:7: size 0.0005 is not a whole number of lots"):
        scale.size("0.0005", "f.csv:7")
    with pytest.raises(ValueError, match="outside 0..2147483647"):
        scale.size("2147483.648", "f.csv:7")
    with pytest.raises(ValueError, match="binary float"):
        scale.price(0.3, "f.csv:7")
    for bad in ("0", "-1", "x", "inf"):
        with pytest.raises(ValueError, match="tick must be a positive decimal"):
            Scale(bad, "1")


def test_malformed_lines_name_file_and_line(tmp_path):
    cases = [
        (read_binance, _gz(tmp_path / "b.gz", [_diff(1, 2), "{not json"]), "b.gz:2: malformed"),
        (read_binance, _gz(tmp_path / "c.gz", [_diff(1, 2, bids=[("1.001", "1")])]),
         "c.gz:1: price 1.001 is not a whole number of ticks of 0.01"),
        (read_binance, _gz(tmp_path / "d.gz", [_diff(1, 2), {"stream": "x"}]),
         "d.gz:2: malformed record"),
    ]
    (tmp_path / "t.csv").write_text(TARDIS_HEADER + "binance,B,1,1,true,bid,1.00,1\n"
                                    "binance,B,1,1,true,bid,oops,1\n")
    (tmp_path / "h.csv").write_text("price,amount\n")
    (tmp_path / "y.json").write_text('{"type":"snapshot","ts":1,"data":{"u":1,"b":[],"a":[]}}\n'
                                     '{"type":"delta","ts":2,"data":{"u":2,"b":[["1"]],"a":[]}}\n')
    cases += [(read_tardis, tmp_path / "t.csv", "t.csv:3: price 'oops' is not a decimal"),
              (read_tardis, tmp_path / "h.csv", "h.csv:1: not a Tardis"),
              (read_bybit, tmp_path / "y.json", r"y.json:2: malformed level \['1'\]")]
    lobster = _lobster_zip(tmp_path / "l.zip", ["34200.1,1,1,10,1000000,1\n"] * 2,
                           ["1000100,5,1000000,10\n", "1000100,5\n"])
    cases.append((read_lobster, lobster, "orderbook_1.csv:2: malformed orderbook row"))
    for read, path, error in cases:
        with pytest.raises(ValueError, match=error):
            list(read([path]))


def test_binance_spot_gap_is_reported_and_resynced(tmp_path):
    """Spot rules: drop u <= lastUpdateId, bridge U <= lastUpdateId + 1 <= u, then U = u + 1.
    The break (line 4) must show as a gap, and the book must come back at the next snapshot."""
    path = _gz(tmp_path / "spot.gz", [
        _diff(1, 5, bids=[("100.00", "1")]),                        # stale: before the snapshot
        _snapshot(6, bids=[("100.00", "2")], asks=[("101.00", "3")]),
        _diff(7, 8, bids=[("100.00", "4")]),                        # bridges 6
        _diff(10, 11, asks=[("100.50", "1")]),                      # U should be 9: a gap
        _diff(12, 13, bids=[("99.50", "1")]),                       # buffered for the resync
        {"stream": "btcusdt@bookTicker", "data": {"u": 13, "b": "99.50", "B": "1",
                                                  "a": "102.00", "A": "1"}},
        _snapshot(12, bids=[("99.00", "1")], asks=[("102.00", "1")]),
        _diff(14, 15, asks=[("102.00", "0")], bids=[("99.50", "5")]),
    ])
    warnings = []
    stats = Stats(warn=warnings.append)
    model, results = _feed(read_binance([path], stats=stats))
    kinds = [u.kind for u, _ in results]
    assert kinds == ["snapshot", "stale", "diff", "gap", "reference", "snapshot", "diff", "diff"]
    assert len(stats.gaps) == 1 and stats.gaps[0].startswith(f"{path}:4: sequence gap")
    assert warnings == stats.gaps
    outputs = {u.source.rsplit(":", 1)[1]: o for u, o in results if not u.reference}
    assert (outputs["3"]["best_bid"], outputs["3"]["best_bid_qty"]) == (10000, 4_000_000)
    assert not outputs["4"]["synced"] and not outputs["4"]["valid"]    # CLEAR, one seq late
    assert outputs["5"]["synced"] and outputs["5"]["best_bid"] == 9950  # diff 12..13 bridged
    assert (outputs["8"]["best_bid_qty"], outputs["8"]["best_ask"]) == (5_000_000, 0)
    assert model.books[0].counters.gaps == 1


def test_binance_futures_chain_and_bridge_before_snapshot(tmp_path):
    """Futures rules: drop u < lastUpdateId, bridge U <= lastUpdateId <= u (here the bridging
    diff comes before the snapshot line), then pu = previous u. Trades: m -> ASK aggressor."""
    trade = {"stream": "btcusdt@trade", "data": {"e": "trade", "T": 1, "t": 77, "p": "100.0",
                                                 "q": "0.005", "X": "MARKET", "m": True}}
    path = _gz(tmp_path / "usdm.gz", [
        _diff(90, 94, prev=80, bids=[("99.0", "1")]),               # stale
        _diff(95, 105, prev=94, bids=[("100.0", "1.5")]),            # bridges 100
        trade,
        _snapshot(100, bids=[("100.0", "1")], asks=[("100.1", "1")], T=1),
        _diff(106, 110, prev=105, asks=[("100.1", "0.25")]),
        _diff(111, 115, prev=109, asks=[("100.2", "1")]),            # pu should be 110
        _diff(116, 120, prev=115),                                   # never synced again
    ])
    stats = Stats()
    model, results = _feed(read_binance([path], stats=stats))
    assert [u.kind for u, _ in results] == ["trade", "snapshot", "stale", "diff", "diff", "gap",
                                            "unsynced"]
    assert results[0][0].messages[0]["side"] == Side.ASK and results[0][0].exch_seq == 77
    assert results[0][0].messages[0]["size"] == 5 and results[0][0].messages[0]["price"] == 1000
    assert (results[3][1]["best_bid"], results[3][1]["best_bid_qty"]) == (1000, 1500)
    assert results[4][1]["best_ask_qty"] == 250
    assert stats.unsynced == 1 and len(stats.gaps) == 1 and "pu=109" in stats.gaps[0]


def test_binance_gap_among_buffered_diffs_waits_for_the_next_snapshot(tmp_path):
    path = _gz(tmp_path / "usdm.gz", [
        _diff(95, 105, prev=94, bids=[("100.0", "1")]),             # bridges 100
        _diff(106, 110, prev=104),                                   # pu should be 105
        _diff(111, 115, prev=110, bids=[("100.0", "2")]),            # bridges the second one
        _snapshot(100, bids=[("100.0", "3")], asks=[("100.1", "1")], T=1),
        _snapshot(112, bids=[("99.9", "1")], asks=[("100.1", "1")], T=1),
    ])
    stats = Stats()
    _, results = _feed(read_binance([path], stats=stats))
    assert [(u.kind, u.exch_seq) for u, _ in results] == [
        ("snapshot", 100), ("diff", 105), ("gap", 110), ("snapshot", 112), ("diff", 115)]
    assert len(stats.gaps) == 1 and stats.unsynced == 0
    assert results[-1][1]["synced"] and results[-1][1]["best_bid_qty"] == 2000


def test_sequence_numbers_are_contiguous_per_venue(data):
    """Every sequenced message is +1 on its venue, TICKs carry 0 (Bybit sample, venue 3)."""
    updates = with_ticks(read_bybit([data("bybit/xrpusdt-ob500.data.zip")], venue=3),
                         tick_ns=10_000_000)
    seqs, ticks = [], 0
    for update in updates:
        for msg in update.messages:
            if msg["kind"] == K.TICK:
                ticks += 1
                assert (msg["seq"], msg["venue"]) == (0, 0)
            else:
                seqs.append(msg["seq"])
                assert msg["venue"] == 3 and msg["flags"] == 0
    assert seqs == list(range(1, len(seqs) + 1))
    assert ticks == (1_733_011_205_490 - 1_733_011_200_691) // 10     # ms of the file / 10 ms


def test_with_ticks_caps_a_pause_and_ignores_time_going_back():
    def update(ts):
        return Update(0, 0, ts, "x", ({"kind": 1},), "f:1")
    stamps = [0, 2_500, 2_600, 1_000_000_000, 500_000_000, 1_000_001_000, None]
    counts = [sum(m["kind"] == K.TICK for m in u.messages) for u in
              with_ticks(map(update, stamps), tick_ns=1_000, max_ticks=4)]
    assert counts == [0, 2, 0, 4, 0, 1, 0]
    with pytest.raises(ValueError, match="tick_ns must be a positive integer"):
        list(with_ticks([], 0))


def test_tardis_snapshot_over_several_groups_and_reset(tmp_path):
    rows = [(1, "false", "bid", "9", "1"),                      # before any snapshot: unsynced
            (2, "true", "bid", "10", "5"), (2, "true", "ask", "11", "5"),
            (3, "true", "ask", "12", "7"),                      # the same snapshot, next group
            (4, "false", "ask", "11", "0"), (4, "false", "ask", "11.5", "2"),
            (4, "false", "bid", "10.5", "3"), (4, "false", "bid", "10.5", "0"),  # last one wins
            (5, "true", "bid", "8", "1")]                       # false -> true: a new book
    path = tmp_path / "t.csv"
    path.write_text(TARDIS_HEADER + "".join(f"deribit,X,0,{ts},{snap},{side},{p},{q}\n"
                                            for ts, snap, side, p, q in rows))
    stats = Stats()
    updates = list(read_tardis([path], tick="0.5", stats=stats))
    kinds = [[K(m["kind"]).name for m in u.messages] for u in updates]
    assert kinds == [[], ["SNAPSHOT_START", "LEVEL_SET", "LEVEL_SET"],
                     ["LEVEL_SET", "SNAPSHOT_END"], ["LEVEL_DELETE", "LEVEL_DELETE", "LEVEL_SET"],
                     ["SNAPSHOT_START", "LEVEL_SET", "SNAPSHOT_END"]]
    assert [u.exch_seq for u in updates] == [0, 1, 2, 3, 4] and stats.unsynced == 1
    assert updates[1].ts_ns == 2_000 and updates[0].kind == "unsynced"
    model, _ = _feed(updates[:4])
    assert model.books[0].asks.top(3) == [(23, 2), (24, 7), (0, 0)]
    assert model.books[0].bids.top(2) == [(20, 5), (0, 0)]
    model, _ = _feed(updates)
    assert (model.books[0].bids.top(2), len(model.books[0].asks)) == ([(16, 1), (0, 0)], 0)


def test_lobster_groups_trades_and_times(tmp_path):
    path = _lobster_zip(tmp_path / "l.zip", [
        "34200.000000001,1,1,10,1000000,1\n", "34200.5,4,1,4,1000000,1\n",
        "34201,3,2,5,1000100,-1\n", "34201.000000002,5,0,3,1000050,-1\n"], [
        "1000100,5,1000000,10\n", "1000100,5,1000000,6\n", "9999999999,0,1000000,6\n",
        "9999999999,0,1000000,6\n"])
    updates = list(read_lobster([path]))
    assert [u.ts_ns for u in updates] == [34_200_000_000_001, 34_200_500_000_000,
                                          34_201_000_000_000, 34_201_000_000_002]
    assert [u.kind for u in updates] == ["snapshot", "execute", "delete", "hidden"]
    trade = updates[1].messages[-1]
    assert (trade["kind"], trade["side"], trade["price"], trade["size"]) == \
        (K.TRADE, Side.ASK, 1_000_000, 4)                   # a resting buy hit by a seller
    assert [(m["kind"], m["side"]) for m in updates[3].messages] == [(K.TRADE, Side.BID)]
    assert updates[2].truth.asks == () and updates[2].truth.bids == ((1_000_000, 6),)
    with pytest.raises(ValueError, match="not a whole number of ticks of 100"):
        list(read_lobster([path], tick="100"))              # the sub-penny hidden execution


def test_native_round_trip(tmp_path, data, monkeypatch):
    monkeypatch.setattr(native_format, "CHUNK", 100)     # many chunks, and a last short one
    updates = list(read_bybit([data("bybit/xrpusdt-ob500.data.zip")]))
    messages = [m for u in updates for m in u.messages]
    assert write_native(tmp_path / "feed.bin", messages) == len(messages) == 3968
    raw = (tmp_path / "feed.bin").read_bytes()
    assert len(raw) == 16 * len(messages)
    (tmp_path / "feed.bin.gz").write_bytes(gzip.compress(raw))
    for name in ("feed.bin", "feed.bin.gz"):
        back = list(read_native([tmp_path / name]))
        assert [u.messages[0] for u in back] == messages
        assert [u.exch_seq for u in back] == list(range(len(messages)))
    _, direct = _feed(updates, 16, 32)
    _, native = _feed(back, 16, 32)
    assert direct[-1][1] == native[-1][1]
    (tmp_path / "cut.bin").write_bytes(raw[:-5])
    with pytest.raises(ValueError, match="cut.bin: ends 11 bytes into record"):
        list(read_native([tmp_path / "cut.bin"]))
    with pytest.raises(ValueError, match="do not apply"):
        list(read_native([tmp_path / "feed.bin"], tick="1"))
