"""The generated CSR as Verilog on Verilator: the cocotb bench in csr_tb.py."""

from harness import run_cocotb

from obcore.hw.csr import CSR
from obcore.hw.registers import build_map


def test_csr_cocotb():
    run_cocotb(CSR(build_map()), "csr", "csr_tb")
