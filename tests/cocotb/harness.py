"""Pytest glue: export an Amaranth component to Verilog and run cocotb tests on Verilator."""

import os
import random
import sys
from pathlib import Path

from amaranth.back import verilog

from obcore.sim.toolchain import ensure_verilator

__all__ = ["run_cocotb", "test_seed"]

HERE = Path(__file__).resolve().parent
BUILD = HERE.parents[1] / "build" / "cocotb"

# Fast model, no X pessimism: the gateware resets every register it reads.
VERILATOR_ARGS = ["-O3", "--x-assign", "fast", "--x-initial", "fast", "-Wno-fatal"]


def test_seed():
    """The seed for this run: COCOTB_RANDOM_SEED if set, else a fresh one. Always printed."""
    seed = int(os.environ.get("COCOTB_RANDOM_SEED") or random.randrange(1 << 31))
    print(f"COCOTB_RANDOM_SEED={seed}  (set it to reproduce this run)", file=sys.stderr)
    return seed


def run_cocotb(component, name, test_module, *, extra_env=None, testcase=None):
    """Build ``component`` as Verilog top ``name`` and run cocotb ``test_module`` against it.

    Each ``name`` gets its own build folder, so differently parameterised tops coexist.
    Fails the calling pytest test if any cocotb test fails.
    """
    from cocotb_tools.runner import get_runner

    ensure_verilator()
    build_dir = BUILD / name
    build_dir.mkdir(parents=True, exist_ok=True)
    source = build_dir / f"{name}.v"
    text = verilog.convert(component, name=name, emit_src=False)
    if not source.exists() or source.read_text() != text:
        source.write_text(text)   # unchanged Verilog keeps Verilator's build cache valid
    runner = get_runner("verilator")
    runner.build(sources=[source], hdl_toplevel=name, build_dir=build_dir,
                 build_args=VERILATOR_ARGS)
    env = {"PYTHONPATH": os.pathsep.join([str(HERE), *sys.path])}
    env.update(extra_env or {})
    runner.test(hdl_toplevel=name, test_module=test_module, build_dir=build_dir,
                test_dir=build_dir, seed=test_seed(), extra_env=env, testcase=testcase)
