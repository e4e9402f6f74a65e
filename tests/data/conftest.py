"""Fixtures for the replay tests on the recorded data in ``../shared/data``."""

from pathlib import Path

import pytest

__all__ = ["DATA"]

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture(scope="session")
def data():
    """``data("binance/x.gz")``: the path of a recorded file, or skip the test without it."""
    def find(relative):
        path = DATA / relative
        if not path.is_file():
            pytest.skip(f"recorded data not found: {path} (expected next to the repository)")
        return path
    return find
