"""The native model's build: the wrapper around the top, and the cache (one build per design,
however many processes ask for it)."""

import io
import re
import subprocess
import threading
import time

import pytest

import obcore.sim.native as native
from obcore.sim.toolchain import ensure_verilator

VERILOG = "module top(clk, x);\n  input clk;\n  input x;\nendmodule\n"


@pytest.fixture
def fake_build(tmp_path, monkeypatch):
    """Replace the compiler with a slow fake that writes its output the way the linker does:
    first an empty file, the bytes a while later. Returns the list of its builds."""
    monkeypatch.setenv("OBCORE_BUILD", str(tmp_path))
    monkeypatch.setattr(native, "_verilator_version", lambda: "Verilator (fake)")
    builds = []

    def verilate(folder, lib, args, trace):
        builds.append(lib)
        lib.write_bytes(b"")
        time.sleep(0.3)
        lib.write_bytes(b"library")
    monkeypatch.setattr(native, "_verilate", verilate)
    return builds


def _ask(results, logs):
    log = io.StringIO()
    lib = native.build_library(VERILOG, log=log)
    # What a caller would load at once: the library whole, or no path at all.
    results.append(lib.read_bytes())
    logs.append(log.getvalue())


def test_concurrent_requests_build_once_and_see_only_a_whole_library(fake_build):
    results, logs = [], []
    first = threading.Thread(target=_ask, args=(results, logs))
    first.start()
    time.sleep(0.1)                 # the first is now inside its build
    second = threading.Thread(target=_ask, args=(results, logs))
    second.start()
    for t in (first, second):
        t.join(timeout=30)
    assert len(fake_build) == 1
    assert results == [b"library", b"library"]
    assert sum("waiting for another process" in log for log in logs) == 1


def test_a_failed_build_publishes_nothing_and_the_next_request_builds(fake_build, monkeypatch):
    good = native._verilate

    def broken(folder, lib, args, trace):
        lib.write_bytes(b"half")
        raise RuntimeError("Verilator build failed")
    monkeypatch.setattr(native, "_verilate", broken)
    with pytest.raises(RuntimeError, match="build failed"):
        native.build_library(VERILOG, log=io.StringIO())
    monkeypatch.setattr(native, "_verilate", good)
    results, logs = [], []
    _ask(results, logs)
    assert results == [b"library"] and len(fake_build) == 1


# A function inside the top declares `input`s like a port does; one of them shares a port's
# name with another width.
FUNCTION_TOP = """module top(clk, a, b, y);
  input clk;
  input [3:0] a;
  input b;
  output [3:0] y;
  function [3:0] pick;
    input [3:0] x;
    input [7:0] b;
    pick = b[0] ? x : 4'd0;
  endfunction
  assign y = pick(a, {7'd0, b});
endmodule
"""


def test_the_wrapper_takes_the_ports_from_the_module_header(tmp_path):
    wrapped = native._wrap(FUNCTION_TOP)
    simtop = wrapped[wrapped.index("module simtop"):]
    assert re.search(r"module simtop\(clk_in, (.*)\);", simtop)[1].split(", ") == \
        ["clk", "a", "b", "y"]
    assert "  input b;\n" in simtop and "[7:0] b" not in simtop and " x" not in simtop
    # The wrapper elaborates: every port of top connected once, at its own width (the
    # function's shadowing `b` is the case made on purpose).
    (tmp_path / "w.v").write_text(wrapped)
    ensure_verilator()
    lint = subprocess.run(["verilator", "--lint-only", "-Wall", "-Wno-DECLFILENAME",
                           "-Wno-UNUSEDSIGNAL", "-Wno-VARHIDDEN", "--top-module", "simtop", "w.v"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stderr


def test_the_wrapper_rejects_a_port_without_a_declaration():
    with pytest.raises(ValueError, match=r"\['y'\]"):
        native._wrap(FUNCTION_TOP.replace("  output [3:0] y;\n", ""))
