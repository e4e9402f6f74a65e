"""LOBSTER: after update i the book is exactly orderbook row i, on every row of both samples."""


import pytest

from obcore.hw.layouts import FeedKind
from obcore.sim.model import BookModel
from obcore.sim.replay import read_lobster

SAMPLES = [("lobster/LOBSTER_SampleFile_AMZN_2012-06-21_1.zip", 1),
           ("lobster/LOBSTER_SampleFile_AMZN_2012-06-21_5.zip", 5)]


@pytest.mark.parametrize("sample, levels", SAMPLES, ids=["level1", "level5"])
def test_book_equals_orderbook_row_on_every_row(data, lobster_truth, sample, levels):
    """Full-depth and bounded books (tick = LOBSTER's $0.0001 unit, lot = 1 share) against
    the orderbook file, row by row; the whole file (57,515 and 155,935 rows)."""
    path = data(sample)
    full = BookModel(venues=1, levels=levels, capacity=None)
    bounded = BookModel(venues=1, levels=levels, capacity=2 * levels)
    rows, trades, last_ts = 0, 0, -1
    truth = lobster_truth(path, levels)
    for index, (update, (bids, asks)) in enumerate(zip(read_lobster([path]), truth,
                                                        strict=True)):
        assert update.exch_seq == index
        assert update.ts_ns >= last_ts       # exchange time never runs backwards here
        last_ts = update.ts_ns
        for msg in update.messages:
            full.step(msg)
            bounded.step(msg)
            trades += msg["kind"] == FeedKind.TRADE
        book = full.books[0]
        assert (book.bids.top(levels), book.asks.top(levels)) == (bids, asks), update.source
        # The feed is the top N only, so nothing is kept below it.
        assert len(book.bids) <= levels and len(book.asks) <= levels
        out = bounded.outputs(0)
        assert out["exact"] and out["synced"]
        assert (bounded.books[0].bids.top(levels), bounded.books[0].asks.top(levels)) == \
            (bids, asks)
        rows += 1
    counters = full.books[0].counters
    print(f"{sample}: {rows} rows equal, {trades} trades, {counters}")
    assert rows == {1: 57_515, 5: 155_935}[levels]
    assert trades == 8_974 + 2_445          # message types 4 and 5 in both samples
    assert (counters.gaps, counters.missing, counters.crossed) == (0, 0, 0)
