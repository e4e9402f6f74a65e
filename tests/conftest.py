"""Shared fixtures: the recorded market data in ``../shared/data`` and its own truth."""

import csv
import io
import zipfile
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def data():
    """``data("binance/x.gz")``: the path of a recorded file, or skip the test without it."""
    def find(relative):
        path = DATA / relative
        if not path.is_file():
            pytest.skip(f"recorded data not found: {path} (expected next to the repository)")
        return path
    return find


def lobster_rows(path, levels):
    """Orderbook rows parsed here, apart from the adapter: ``(bids, asks)`` as the model's
    ``top(levels)`` lists, an unoccupied level (±9999999999, 0) as ``(0, 0)``."""
    with zipfile.ZipFile(path) as archive:
        name = next(n for n in archive.namelist() if n.endswith(f"_orderbook_{levels}.csv"))
        with archive.open(name) as raw:
            for cells in csv.reader(io.TextIOWrapper(raw, encoding="ascii")):
                values = [int(c) for c in cells]
                side = [[(p, q) if q else (0, 0) for p, q in zip(values[i::4], values[i + 1::4],
                                                                   strict=True)]
                        for i in (2, 0)]
                yield side[0], side[1]


@pytest.fixture(scope="session")
def lobster_truth():
    """``lobster_truth(zip path, levels)`` iterates the orderbook rows, parsed independently."""
    return lobster_rows
