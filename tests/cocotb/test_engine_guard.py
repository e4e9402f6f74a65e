"""Every withdraw trigger on the whole engine, as Verilog on Verilator: engine_guard_tb.py."""

from harness import run_cocotb

from obcore.hw.top import Engine


def test_engine_triggers_cocotb():
    """One build; a cocotb test per trigger (cocotb.parametrize in the bench)."""
    run_cocotb(Engine(venues=2, levels=4, capacity=8, slots=1), "engine_guard",
               "engine_guard_tb")
