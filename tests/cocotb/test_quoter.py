"""The quoter as Verilog on Verilator: the cocotb bench in quoter_tb.py."""

import pytest
from harness import run_cocotb

from obcore.hw.quoter import Quoter


def test_quoter_cocotb():
    run_cocotb(Quoter(venues=2, levels=3), "quoter", "quoter_tb")


@pytest.mark.slow
def test_quoter_cocotb_soak():
    run_cocotb(Quoter(venues=2, levels=3), "quoter", "quoter_tb",
               extra_env={"QUOTER_CYCLES": "2000000"})
