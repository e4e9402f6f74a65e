"""The signal block as Verilog on Verilator: the cocotb bench in signals_tb.py."""

from harness import run_cocotb

from obcore.hw.signals import Signals


def test_signals_cocotb():
    run_cocotb(Signals(venues=2), "signals", "signals_tb")
