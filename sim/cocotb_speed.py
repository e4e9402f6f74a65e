"""Simulation speed of the cocotb path: the engine's Verilog on Verilator, driven from cocotb.

:func:`measure` builds the engine for cocotb (cached under ``build/cocotb``) and runs
:func:`feed_speed` in cocotb's own process; the message set travels as a ``.npy`` file and
the figures come back as JSON. Only the driving loop is timed, as for the other engines.
"""

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from ..hw.layouts import FEED, FEED_DTYPE
from .engine import RUN_DRAIN
from .toolchain import ensure_verilator

__all__ = ["measure", "feed_speed"]

TOP = "bench_engine"
# As tests/cocotb/harness.py: fast model, no X pessimism (the gateware resets what it reads).
VERILATOR_ARGS = ["-O3", "--x-assign", "fast", "--x-initial", "fast", "-Wno-fatal"]


def measure(msgs, build_root="build/cocotb", venues=2, levels=16):
    """``{"msgs_per_s", "messages", "obs", "orders"}`` for a cocotb run over ``msgs``."""
    from amaranth.back import verilog
    from cocotb_tools.runner import get_runner

    from ..hw.top import Engine

    ensure_verilator()
    folder = Path(build_root).resolve() / TOP
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / f"{TOP}.v"
    text = verilog.convert(Engine(venues=venues, levels=levels), name=TOP, emit_src=False)
    if not source.exists() or source.read_text() != text:
        source.write_text(text)   # unchanged Verilog keeps Verilator's build cache valid
    np.save(folder / "msgs.npy", np.ascontiguousarray(msgs, dtype=FEED_DTYPE))
    result = folder / "speed.json"
    result.unlink(missing_ok=True)
    runner = get_runner("verilator")
    # The tools' output goes to logs, not to stdout, where `obcore bench` prints its markdown.
    runner.build(sources=[source], hdl_toplevel=TOP, build_dir=folder,
                 build_args=VERILATOR_ARGS, log_file=folder / "build.log")
    runner.test(hdl_toplevel=TOP, test_module=__name__, build_dir=folder, test_dir=folder,
                extra_env={"PYTHONPATH": os.pathsep.join(sys.path),
                           "OBCORE_SPEED_DIR": str(folder)}, log_file=folder / "test.log")
    if not result.exists():
        raise RuntimeError(f"the cocotb speed run wrote no result; see {folder}/test.log")
    return json.loads(result.read_text())


try:
    import cocotb
except ImportError:   # measure() says so when it is called
    cocotb = None

if cocotb is not None:
    from cocotb.clock import Clock
    from cocotb.triggers import ClockCycles, RisingEdge

    @cocotb.test()
    async def feed_speed(dut):
        """Feed every message, one per cycle; count observations and orders."""
        folder = Path(os.environ["OBCORE_SPEED_DIR"])
        msgs = np.load(folder / "msgs.npy")
        words = [FEED.encode(**dict(zip(FEED_DTYPE.names, map(int, m), strict=True)))
                 for m in msgs]
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
        dut.rst.value, dut.feed__valid.value, dut.orders__ready.value = 1, 0, 1
        dut.bus__w_en.value, dut.bus__r_en.value = 0, 0
        await ClockCycles(dut.clk, 4)
        dut.rst.value = 0
        edge = RisingEdge(dut.clk)
        await edge
        obs = orders = 0
        payload, valid = dut.feed__payload, dut.feed__valid
        obs_valid, orders_valid = dut.obs__valid, dut.orders__valid
        t0 = time.perf_counter()
        valid.value = 1
        for word in words:
            payload.value = word
            await edge
            obs += int(obs_valid.value)
            orders += int(orders_valid.value)
        valid.value = 0
        for _ in range(RUN_DRAIN):
            await edge
            obs += int(obs_valid.value)
            orders += int(orders_valid.value)
        elapsed = time.perf_counter() - t0
        (folder / "speed.json").write_text(json.dumps({
            "msgs_per_s": len(words) / elapsed, "messages": len(words), "obs": obs,
            "orders": orders}))
