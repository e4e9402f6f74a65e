"""Tardis and Bybit: the replayed book against a plain dict rebuild of the same files."""

import csv
import json
import zipfile
from decimal import Decimal
from itertools import groupby

import pytest

from obcore.sim.model import BookModel
from obcore.sim.replay import read_bybit, read_tardis

TARDIS = {"tardis/tardis_binance_BTCUSDT_incremental_book_L2_2019-12-01_rows_1_2050.csv":
          ("0.01", "0.000001", 8, 2050),
          "tardis/deribit_incremental_book_L2_BTC-PERPETUAL.csv": ("0.5", "1", 1, 15)}
BYBIT = "bybit/xrpusdt-ob500.data.zip"


def _sides(model):
    """Every level of the full-depth book, best first: ``(bids, asks)``."""
    book = model.books[0]
    return book.bids.top(len(book.bids)), book.asks.top(len(book.asks))


def _ticks(text, unit):
    value = Decimal(text) / Decimal(unit)
    assert value == value.to_integral_value(), text
    return int(value)


def _dict_sides(book, tick, lot):
    """The rebuild's ``{side: {price text: amount text}}`` in the model's form."""
    return tuple(sorted(((_ticks(p, tick), _ticks(q, lot)) for p, q in book[side].items()),
                        reverse=side == "bid")
                 for side in ("bid", "ask"))


@pytest.mark.parametrize("name", list(TARDIS))
def test_tardis_matches_dict_rebuild(data, name):
    """Group rows by local_timestamp, reset on a false->true is_snapshot switch, set or drop
    each level; after every group the replayed full-depth book must hold the same levels."""
    tick, lot, groups, rows = TARDIS[name]
    path = data(name)
    model = BookModel(venues=1, levels=16, capacity=None)
    bounded = BookModel(venues=1, levels=16, capacity=32)
    updates = read_tardis([path])    # default tick/lot by the exchange column
    book, was_snapshot, seen = {"bid": {}, "ask": {}}, False, 0
    with open(path, newline="") as fh:
        records = csv.DictReader(fh)
        for (_, snapshot), group in groupby(records, lambda r: (r["local_timestamp"],
                                                                r["is_snapshot"] == "true")):
            if snapshot and not was_snapshot:
                book = {"bid": {}, "ask": {}}
            was_snapshot = snapshot
            for r in group:
                seen += 1
                if Decimal(r["amount"]):
                    book[r["side"]][r["price"]] = r["amount"]
                else:
                    book[r["side"]].pop(r["price"], None)
            update = next(updates)
            for msg in update.messages:
                model.step(msg)
                bounded.step(msg)
            assert _sides(model) == _dict_sides(book, tick, lot), update.source
            if bounded.outputs(0)["exact"]:
                assert bounded.books[0].bids.top(16) == model.books[0].bids.top(16)
                assert bounded.books[0].asks.top(16) == model.books[0].asks.top(16)
    assert next(updates, None) is None
    assert (update.exch_seq + 1, seen) == (groups, rows)
    assert model.outputs(0)["synced"] and model.books[0].counters.gaps == 0


def test_bybit_matches_dict_rebuild_and_u_is_contiguous(data):
    """The sample is one snapshot then deltas with ``u`` + 1 each (checked on the raw file);
    after every record the replayed full-depth book equals a dict rebuild."""
    path = data(BYBIT)
    model = BookModel(venues=1, levels=16, capacity=None)
    bounded = BookModel(venues=1, levels=16, capacity=32)
    updates = read_bybit([path])
    book, last_u, records = None, None, 0
    with zipfile.ZipFile(path) as archive, archive.open(archive.namelist()[0]) as fh:
        for line in fh:
            records += 1
            record = json.loads(line)
            u = record["data"]["u"]
            if record["type"] == "snapshot":
                book = {"bid": {}, "ask": {}}
            else:
                assert u == last_u + 1
            last_u = u
            for side, key in (("bid", "b"), ("ask", "a")):
                for price, size in record["data"][key]:
                    if Decimal(size):
                        book[side][price] = size
                    else:
                        book[side].pop(price, None)
            update = next(updates)
            assert update.exch_seq == u and update.kind == record["type"]
            for msg in update.messages:
                model.step(msg)
                bounded.step(msg)
            assert _sides(model) == _dict_sides(book, "0.0001", "1"), update.source
            if bounded.outputs(0)["exact"]:
                assert bounded.books[0].bids.top(16) == model.books[0].bids.top(16)
                assert bounded.books[0].asks.top(16) == model.books[0].asks.top(16)
    assert next(updates, None) is None
    assert records == 50
    counters = model.books[0].counters
    assert (counters.gaps, counters.crossed) == (0, 0) and model.outputs(0)["synced"]
