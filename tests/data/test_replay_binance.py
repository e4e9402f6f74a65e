"""Binance captures: synced book vs Binance's own bookTicker, and bounded vs full-depth book."""

import pytest

from obcore.sim.model import BookModel
from obcore.sim.replay import Stats, read_binance

CAPTURES = {
    "spot_2024": ["binance/spot_btcusdt_20240808.gz", "binance/spot_btcusdt_20240809.gz"],
    "usdm_2024": ["binance/usdm_btcusdt_20240808.gz"],
    "usdm_2023": ["binance/usdm_btcusdt_20230404.dat.gz", "binance/usdm_btcusdt_20230405.dat.gz"],
}
# Comparisons observed on the whole captures (1072, 629, 1565): the floors keep the test from
# passing with nothing compared.
FLOORS = {"spot_2024": 1000, "usdm_2024": 600, "usdm_2023": 1500}
LEVELS = 16


def _run(paths, capacities):
    """Replay a whole capture into a full-depth book and bounded ones (``capacities``).

    Returns ``{u: (best bid, best ask)}`` after each applied diff, the bookTickers
    ``(u, truth)``,
    the adapter's stats and, per capacity, ``[non-exact updates, exact updates, exact ones
    whose top 16 differ from the full-depth book]``.
    """
    stats = Stats()
    full = BookModel(venues=1, levels=LEVELS, capacity=None)
    bounded = {c: BookModel(venues=1, levels=LEVELS, capacity=c) for c in capacities}
    diffs, tickers, exactness = {}, [], {c: [0, 0, 0] for c in capacities}
    for update in read_binance(paths, stats=stats):
        if update.reference:
            tickers.append((update.exch_seq, update.truth))
            continue
        for msg in update.messages:
            full.step(msg)
            for model in bounded.values():
                model.step(msg)
        book = full.books[0]
        if update.kind == "diff":
            diffs[update.exch_seq] = (book.bids.level(0), book.asks.level(0))
        top = None
        for c, model in bounded.items():
            if not model.outputs(0)["exact"]:
                exactness[c][0] += 1
                continue
            top = top or (book.bids.top(LEVELS), book.asks.top(LEVELS))
            exactness[c][1] += 1
            exactness[c][2] += (model.books[0].bids.top(LEVELS),
                                model.books[0].asks.top(LEVELS)) != top
    return diffs, tickers, stats, exactness


@pytest.fixture(scope="module", params=list(CAPTURES))
def capture(request, data):
    paths = [data(p) for p in CAPTURES[request.param]]
    return request.param, _run(paths, (32,))


def test_book_ticker_matches_synced_book(capture):
    """At every bookTicker whose update id ``u`` is the last id of an applied depth diff, the
    book is pinned to that diff, and Binance's best bid/ask must equal the full-depth book's.
    (Spot tickers inside a 100 ms diff's id range, and futures ones between two diffs, are
    not compared.) Whole captures, both days where there are two."""
    name, (diffs, tickers, stats, _) = capture
    assert stats.gaps == [] and stats.unsynced == 0
    compared = 0
    for u, truth in tickers:
        if u in diffs:
            best = ((truth.bids or ((0, 0),))[0], (truth.asks or ((0, 0),))[0])
            assert diffs[u] == best, f"bookTicker u={u}"
            compared += 1
    print(f"{name}: {compared} bookTicker comparisons, all equal ({len(tickers)} tickers)")
    assert compared > FLOORS[name]


def test_bounded_book_is_exact_when_it_says_so(capture):
    """The key property: whenever the bounded book (16 levels, capacity 32) reports ``exact``,
    its top 16 equal the full-depth book's, on every update of the capture."""
    name, (_, _, _, exactness) = capture
    not_exact, exact, wrong = exactness[32]
    print(f"{name}: capacity 32: {exact} exact updates, {not_exact} not exact")
    assert wrong == 0
    assert exact > 40       # the snapshot and the updates right after it, at least


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CAPTURES))
def test_capacity_measurement(data, name):
    """Measurement (``make test-slow``): non-exact updates for capacity 32, 48 and 64."""
    *_, exactness = _run([data(p) for p in CAPTURES[name]], (32, 48, 64))
    for c, (not_exact, exact, wrong) in exactness.items():
        print(f"{name}: capacity {c}: {not_exact} of {not_exact + exact} updates not exact")
        assert wrong == 0
