"""The withdraw guard as Verilog on Verilator: the cocotb bench in guard_tb.py."""

import pytest
from harness import run_cocotb

from obcore.hw.guard import Guard


def test_guard_cocotb():
    """250k fuzzed cycles in the default suite; the soak below runs 5M (make test-slow)."""
    run_cocotb(Guard(venues=2), "guard", "guard_tb", extra_env={"GUARD_CYCLES": "250000"})


@pytest.mark.slow
def test_guard_cocotb_soak():
    run_cocotb(Guard(venues=2), "guard", "guard_tb", extra_env={"GUARD_CYCLES": "5000000"})
