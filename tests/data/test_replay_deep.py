"""Binance captures through the Verilated engine built with price ladders (window 8192).

Each applied update runs on its own, followed by ``RUN_DRAIN + idle_cycles(levels)`` cycles
without a message, as ``obcore replay`` does by default (real diffs are >= 100 ms = 10M
cycles apart). Checked on the whole capture:

- every observation of the Verilated engine (BBO, depths, counts, valid/exact/synced, one per
  message, including the transient shortness inside a diff) equals ``BookModel(window=...)``
  clocked the same way: the reference that ``tests/hw/test_book_deep.py`` and the cocotb
  bench hold the gateware to, cycle by cycle;
- after every update and its idle cycles, that model's top 16 on both sides equal the
  full-depth reference book's and it reads exact (usdm), or the not-exact updates are
  counted (spot, whose price leaves any fixed window);
- at every bookTicker pinned to an applied diff, the engine's best bid/ask (at the diff's last
  message) equal Binance's; a side the window lost entirely (spot) reads 0 and not exact.

All under ``slow`` (``make test-slow``): the windowed engine is a Verilator build of its own
(minutes), which the default suite leaves to the cocotb bench of ``Books(window=...)``.
"""

from itertools import islice

import numpy as np
import pytest

from obcore.hw.layouts import ObsStatus, feed_array
from obcore.sim.engine import RUN_DRAIN, ModelEngine, open_engine
from obcore.sim.model import BookModel
from obcore.sim.replay import Stats, read_binance
from obcore.sim.replay.cli import idle_cycles

CAPTURES = {
    "usdm_2024": ["binance/usdm_btcusdt_20240808.gz"],
    "usdm_2023": ["binance/usdm_btcusdt_20230404.dat.gz", "binance/usdm_btcusdt_20230405.dat.gz"],
    "spot_2024": ["binance/spot_btcusdt_20240808.gz", "binance/spot_btcusdt_20240809.gz"],
}
LEVELS, CAPACITY, WINDOW = 16, 32, 8192
IDLE = idle_cycles(LEVELS)    # obcore replay's default
BOOK = ("best_bid", "best_bid_qty", "best_ask", "best_ask_qty", "bid_depth", "ask_depth",
        "bid_count", "ask_count")


@pytest.fixture(scope="module")
def engine():
    e = open_engine("verilator", levels=LEVELS, window=WINDOW)
    yield e
    e.close()


@pytest.mark.slow
def test_engine_matches_the_reference_engine(engine, data):
    """The whole engine (books with ladders, signals, guard, quoter) against ``ModelEngine``
    with the same window: the first 300 updates of usdm 2024 (its 2,000-level snapshot and
    the diffs that drain the arrays), each with its idle cycles; observations, telemetry,
    orders, their cycles and every book register (``window_count``, ``ladder_flags``)."""
    updates = list(islice((u for u in read_binance([data(CAPTURES["usdm_2024"][0])])
                           if u.messages), 300))
    engine.reset()
    reference = ModelEngine(levels=LEVELS, window=WINDOW)
    for update in updates:
        msgs = feed_array(update.messages)
        hw, hw_orders = engine.run(msgs, idle=IDLE)
        ref, ref_orders = reference.run(msgs, idle=IDLE)
        for got, want, what in ((hw, ref, "observations"),
                                (engine.last_telemetry, reference.last_telemetry, "telemetry"),
                                (hw_orders, ref_orders, "orders"),
                                (engine.last_order_cycles, reference.last_order_cycles,
                                 "order cycles")):
            assert np.array_equal(got, want), f"{update.source}: {what} differ"
    regs = [r for r in engine.regmap if r.block in ("system", "book") and r.access != "wo"]
    words = [(r, i, w) for r in regs for i in range(r.count) for w in range(r.words)]
    got = [engine.read(r.element(i) + w) for r, i, w in words]
    assert got == [reference.read(r.element(i) + w) for r, i, w in words]
    names = {r.name for r in regs}
    assert {"window", "window_count", "ladder_flags"} <= names
    book = reference.book.books[0]
    assert book.asks.ladder.out_of_window > 0           # the snapshot's deep levels
    print(f"refilled levels: bids {book.bids.fills}, asks {book.asks.fills}")
    assert book.bids.fills > 20 and book.asks.fills > 20


def _observed(model, msg):
    """The model's observation fields after ``msg`` (as the engine's OBS record has them)."""
    venue = model.step(msg)
    o = model.outputs(venue)
    status = (ObsStatus.APPLIED | ObsStatus.VALID * o["valid"] | ObsStatus.EXACT * o["exact"]
              | ObsStatus.SYNCED * o["synced"])
    return (*(o[k] for k in BOOK), int(status))


def replay_capture(engine, paths):
    """Run a capture; returns the measurements (asserting the per-message agreement)."""
    engine.reset()
    stats = Stats()
    model = BookModel(venues=2, levels=LEVELS, capacity=CAPACITY, window=WINDOW)
    full = BookModel(venues=1, levels=LEVELS, capacity=None)
    r = {"updates": 0, "messages": 0, "transient": 0, "not_exact": 0, "wrong": 0,
         "tickers": 0, "ticker_diffs": {}}
    tickers = []
    for update in read_binance(paths, stats=stats):
        if update.reference:
            tickers.append((update.exch_seq, update.truth))
            continue
        if not update.messages:
            continue
        obs = engine.run(feed_array(update.messages), idle=IDLE, telemetry=False)[0]
        got = np.stack([obs[k].astype(np.int64) for k in (*BOOK, "status")], axis=1)
        want = [_observed(model, msg) for msg in update.messages]
        for msg in update.messages:
            full.step({**msg, "venue": 0})
        bad = np.nonzero((got != np.array(want, dtype=np.int64)).any(axis=1))[0]
        assert not len(bad), (f"{update.source}: message {bad[0]} {update.messages[bad[0]]}: "
                              f"verilator {got[bad[0]].tolist()}, model {want[bad[0]]}")
        r["transient"] += not want[-1][-1] & ObsStatus.EXACT
        model.idle(RUN_DRAIN + IDLE)
        book, truth = model.books[0], full.books[0]
        if not book.outputs()["exact"]:
            r["not_exact"] += 1
        elif (book.bids.top(LEVELS), book.asks.top(LEVELS)) != (truth.bids.top(LEVELS),
                                                                truth.asks.top(LEVELS)):
            r["wrong"] += 1
        if update.kind == "diff":
            r["ticker_diffs"][update.exch_seq] = (int(obs["best_bid"][-1]),
                                                  int(obs["best_ask"][-1]),
                                                  bool(obs["status"][-1] & ObsStatus.EXACT))
        r["updates"] += 1
        r["messages"] += len(update.messages)
    r["tickers_empty"] = 0
    for u, truth in tickers:
        if u in r["ticker_diffs"]:
            *shown, exact = r["ticker_diffs"][u]
            best = ((truth.bids or ((0, 0),))[0][0], (truth.asks or ((0, 0),))[0][0])
            for got, want in zip(shown, best, strict=True):
                if got == 0 and want:   # a side that lost every level: flagged, never wrong
                    assert not exact, f"bookTicker u={u}: an empty side reads exact"
                    r["tickers_empty"] += 1
                else:   # a side holding any level shows the true best, exact or short
                    assert got == want, f"bookTicker u={u}"
            r["tickers"] += 1
    r["window_count"] = sum(s.ladder.out_of_window for s in (model.books[0].bids,
                                                            model.books[0].asks))
    r["stuck"] = model.books[0].bids.stuck or model.books[0].asks.stuck
    assert stats.gaps == [] and stats.unsynced == 0
    del r["ticker_diffs"]
    return r


def _report(name, r):
    print(f"{name}: {r['updates']} updates, {r['messages']} messages, all observations equal "
          f"the model; after the idle cycles: {r['not_exact']} not exact, {r['wrong']} wrong; "
          f"{r['transient']} updates short at their last message; {r['tickers']} bookTickers "
          f"compared ({r['tickers_empty']} sides empty and flagged); {r['window_count']} "
          f"level updates outside the window")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["usdm_2024", "usdm_2023"])
def test_usdm_exact_after_every_update(engine, data, name):
    """Futures (tick 0.1): the top 16 stay exact on the whole capture."""
    r = replay_capture(engine, [data(p) for p in CAPTURES[name]])
    _report(name, r)
    assert r["wrong"] == 0 and r["not_exact"] == 0 and r["tickers_empty"] == 0
    assert r["tickers"] > 500 and r["updates"] > 5000


@pytest.mark.slow
def test_spot_window_exits_are_counted(engine, data):
    """Spot (tick 0.01) leaves a window of 8192 ticks: counted, never a wrong exact book."""
    r = replay_capture(engine, [data(p) for p in CAPTURES["spot_2024"]])
    _report("spot_2024", r)
    assert r["wrong"] == 0 and r["window_count"] > 0 and r["not_exact"] > 0
