"""``obcore replay`` end to end: the CSV rows, the summary, warnings and errors."""

import csv
import gzip
import json

from obcore.control.cli import main
from obcore.sim.engine import open_engine
from obcore.sim.model import BookModel
from obcore.sim.replay import read_bybit, replay
from obcore.sim.replay.runner import SIGNALS
from obcore.sim.signals_model import imbalance

# Issue 3: these come first and never change; signal columns are appended after them.
HEADER = ["index", "venue", "exch_seq", "best_bid", "best_bid_qty", "best_ask", "best_ask_qty",
          "bid_depth", "ask_depth", "exact", "synced"]


def _csv(path):
    with open(path, newline="") as fh:
        return list(csv.reader(fh))



def _replay(args):
    """``obcore replay`` on the reference model: these small files need no Verilator build."""
    return main(["replay", "--engine", "model", *args])

def test_bybit_csv_matches_the_model(data, tmp_path, capsys):
    src, out = data("bybit/xrpusdt-ob500.data.zip"), tmp_path / "bybit.csv"
    assert _replay([str(src), "--format", "bybit", "--venues", "3", "--venue", "2",
                 "--levels", "8", "--out", str(out), "--quiet"]) == 0
    rows = _csv(out)
    assert rows[0] == HEADER + list(SIGNALS) and len(rows) == 51
    model = BookModel(venues=3, levels=8, capacity=16)     # the default capacity: 2 x levels
    for i, update in enumerate(read_bybit([src], venue=2)):
        for msg in update.messages:
            model.step(msg)
        o = model.outputs(2)
        assert rows[i + 1][:len(HEADER)] == [str(v) for v in (
            i, 2, update.exch_seq, o["best_bid"], o["best_bid_qty"], o["best_ask"],
            o["best_ask_qty"], o["bid_depth"], o["ask_depth"], int(o["exact"]),
            int(o["synced"]))]
        # The signal columns describe the same book: S, a + b, Vb + Va, the SQ1.15 imbalances.
        sig = dict(zip(SIGNALS, map(int, rows[i + 1][len(HEADER):]), strict=True))
        bid, bq, ask, aq = o["best_bid"], o["best_bid_qty"], o["best_ask"], o["best_ask_qty"]
        assert (sig["spread"], sig["mid2"], sig["micro_den"]) == (
            (ask - bid, ask + bid, bq + aq) if o["valid"] else (0, 0, 0))
        assert sig["obi_touch"] == imbalance(bq - aq, bq + aq)
        assert sig["obi_depth"] == imbalance(o["bid_depth"] - o["ask_depth"],
                                             o["bid_depth"] + o["ask_depth"])
    assert rows[1][2:7] == ["20254869", "19531", "6203", "19532", "10480"]   # snapshot line
    summary = capsys.readouterr()
    assert "50 rows (0 reference-only records had none)" in summary.out and summary.err == ""


def test_batched_engine_run_matches_the_model_on_every_update(data):
    """``replay`` hands the engine many updates per ``run`` call; outputs must still be
    per update (batches of 97 messages split updates and snapshots anywhere)."""
    src = data("bybit/xrpusdt-ob500.data.zip")
    engine = open_engine("model", venues=1, levels=4, capacity=8)
    model = BookModel(venues=1, levels=4, capacity=8)
    count = 0
    for update, outputs in replay(read_bybit([src]), engine, batch=97):
        for msg in update.messages:
            model.step(msg)
        assert outputs == model.outputs(0), update.source
        count += 1
    assert count == 50


def test_idle_gaps_in_batches_give_what_one_run_per_update_does(data):
    """With ``idle`` (the price-ladder builds' refill time) updates still go in batches, each
    followed by a pause that ends once the books and signals have settled: the same outputs
    and signals as a batch of one update (a ``run`` each, its whole drain), in fewer cycles."""
    src = data("bybit/xrpusdt-ob500.data.zip")
    runs = {}
    for batch in (1, 97):
        engine = open_engine("model", venues=1, levels=4, capacity=8)
        runs[batch] = (list(replay(read_bybit([src]), engine, batch=batch, signals=True,
                                   idle=3)), engine.cycle)
    (one, one_cycles), (many, many_cycles) = runs[1], runs[97]
    assert many == one and len(one) == 50
    assert many_cycles < one_cycles


def test_gap_warning_summary_and_synced_column(tmp_path, capsys):
    src, out = tmp_path / "capture.gz", tmp_path / "out.csv"
    records = [{"lastUpdateId": 10, "bids": [["1.00", "1"]], "asks": [["2.00", "1"]]}]
    records += [{"stream": "s@depth", "data": {"e": "depthUpdate", "U": first, "u": first + 1,
                                               "b": [["1.00", "2"]], "a": []}}
                for first in (10, 12, 15)]                      # 15 should be 14: a gap
    records.append({"stream": "s@bookTicker", "data": {"u": 16, "b": "1.00", "B": "2",
                                                       "a": "2.00", "A": "1"}})
    with gzip.open(src, "wt") as fh:
        fh.writelines(f"{1_680_000_000_000_000 + i} {json.dumps(r)}\n"
                      for i, r in enumerate(records))
    assert _replay([str(src), "--format", "binance", "--out", str(out), "--quiet",
                 "--tick-ns", "1000"]) == 0
    rows = _csv(out)
    assert [r[2] for r in rows[1:]] == ["10", "11", "13", "16"]      # no row for bookTicker
    assert [r[HEADER.index("synced")] for r in rows[1:]] == ["1", "1", "1", "0"]
    assert rows[3][3:5] == ["100", "2000000"]                       # ticks of 0.01, lots 1e-6
    captured = capsys.readouterr()
    assert f"warning: {src}:4: sequence gap: diff U=15 does not follow previous u=13" \
        in captured.err
    assert "gaps: 1 in the input, 1 counted by the engine" in captured.out


def test_errors_are_one_line_and_leave_no_csv(tmp_path, capsys):
    bad, out = tmp_path / "bad.csv", tmp_path / "out.csv"
    bad.write_text("exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount\n"
                   "binance,X,1,1,true,bid,1.005,1\n")
    assert _replay([str(bad), "--format", "tardis", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"obcore replay: error: {bad}:2: price 1.005 is not a whole number")
    assert not out.exists() and list(tmp_path.iterdir()) == [bad]
    assert _replay([str(bad), "--format", "tardis", "--venue", "2",
                 "--out", str(out)]) == 2
    assert "--venue must be 0..1 (the engine has --venues 2), not 2" in capsys.readouterr().err
    assert _replay([str(tmp_path / "none.gz"), "--format", "binance",
                 "--out", str(out)]) == 2
    assert "no such file" in capsys.readouterr().err
    assert _replay([str(bad), "--format", "native", "--tick", "1", "--out",
                 str(out)]) == 2
    assert "do not apply" in capsys.readouterr().err


def test_window_refills_a_deep_binance_book(tmp_path, capsys):
    """A 40-level snapshot into 4 levels / capacity 8, then a diff deleting the 10 best bids:
    the plain arrays (``--window 0``) are short from then on; the default binance build
    (window 8192) is short only at that diff's own last message and refilled for the next."""
    src = tmp_path / "deep.gz"
    bids = [[f"{10000 - i}e-2", "1"] for i in range(40)]
    asks = [[f"{10001 + i}e-2", "1"] for i in range(40)]
    records = [{"lastUpdateId": 10, "bids": bids, "asks": asks},
               {"stream": "s@depth", "data": {"e": "depthUpdate", "U": 11, "u": 11,
                                              "b": [[p, "0"] for p, _ in bids[:10]], "a": []}},
               {"stream": "s@depth", "data": {"e": "depthUpdate", "U": 12, "u": 12, "b": [],
                                              "a": [[asks[0][0], "2"]]}}]
    with gzip.open(src, "wt") as fh:
        fh.writelines(f"{1_700_000_000_000_000_000 + i} {json.dumps(r)}\n"
                      for i, r in enumerate(records))
    rows = {}
    for window in ("0", None):
        out = tmp_path / f"out_{window}.csv"
        extra = ["--window", window] if window else []
        assert _replay([str(src), "--format", "binance", "--levels", "4", "--out",
                     str(out), "--quiet", *extra]) == 0
        rows[window] = [(r[3], r[HEADER.index("exact")]) for r in _csv(out)[1:]]
        summary = capsys.readouterr().out
        assert ("price ladders: 0 level updates outside the window" in summary) == (not window)
    assert rows["0"] == [("10000", "1"), ("0", "0"), ("0", "0")]
    assert rows[None] == [("10000", "1"), ("0", "0"), ("9990", "1")]
    assert _replay([str(src), "--format", "binance", "--window", "100", "--out",
                 str(tmp_path / "x.csv")]) == 2
    assert "window must be a power of two >= 64, not 100" in capsys.readouterr().err
