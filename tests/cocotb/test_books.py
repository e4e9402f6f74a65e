"""The L2 books as Verilog on Verilator: the cocotb bench in books_tb.py."""

import pytest
from harness import run_cocotb

from obcore.hw.books import Books


def test_books_small_cocotb():
    """levels 4, capacity 8: capacity overflows often; the long randomized run."""
    run_cocotb(Books(venues=2, levels=4, capacity=8), "books_small", "books_tb",
               extra_env={"BOOKS_CONFIG": "2,4,8", "BOOKS_MESSAGES": "100000"})


def test_books_cocotb():
    """The default build: 2 venues, 16 levels, capacity 32."""
    run_cocotb(Books(), "books", "books_tb",
               extra_env={"BOOKS_CONFIG": "2,16,32", "BOOKS_MESSAGES": "20000"})


@pytest.mark.slow
def test_books_soak_cocotb():
    """A million random messages on the small build (make test-slow)."""
    run_cocotb(Books(venues=2, levels=4, capacity=8), "books_small", "books_tb",
               extra_env={"BOOKS_CONFIG": "2,4,8", "BOOKS_MESSAGES": "1000000"},
               testcase="random_stream")


def test_books_deep_cocotb():
    """Price ladders behind every side (window 64, levels 4, capacity 8): refills in idle
    cycles, every venue's outputs compared after every cycle (books_deep_tb.py)."""
    run_cocotb(Books(venues=2, levels=4, capacity=8, window=64), "books_deep", "books_deep_tb",
               extra_env={"BOOKS_CONFIG": "2,4,8", "BOOKS_WINDOW": "64",
                          "BOOKS_MESSAGES": "30000"})
