"""The engine top compiled by Verilator into a native library, driven from Python in batches."""

import ctypes
import fcntl
import hashlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ...hw.layouts import FEED_DTYPE, ORDER_DTYPE, feed_array
from ..engine import RUN_DRAIN, pause_array
from ..toolchain import ensure_verilator
from .fold import fold_registers

__all__ = ["build_library", "NativeEngine", "cache_root"]

_CPP = Path(__file__).with_name("engine.cpp")
# -O3 and no X pessimism: the gateware resets every register it reads (architecture.md).
# The model is the wrapper (see _wrap), its C++ classes still named Vtop. The C++ compiler's
# -O3 (rather than -O2) makes the engine a sixth faster; -march=native gains nothing
# measurable and would tie a cached build to one CPU. -fno-dfg keeps the gateware's "only
# when active" branches (hw/book.py): the DFG optimiser's peepholes turn `if (active) x = f;`
# into `x = f & active`, evaluated every cycle (470k against 370k messages/s with only its
# peepholes off), and on the folded registers (fold.py) the whole pass costs more than it
# saves: 537k -> 600k messages/s without it, against -fno-dfg-peephole alone.
_VERILATOR_ARGS = ["-O3", "--x-assign", "fast", "--x-initial", "fast", "-Wno-fatal",
                   "-fno-dfg",
                   "--top-module", "simtop", "--prefix", "Vtop",
                   "-CFLAGS", "-fPIC -O3", "-LDFLAGS", "-shared"]
# Profile-guided builds (build_library's pgo): instrumented, then optimised with the profile.
_PGO_GENERATE = ["-CFLAGS", "-fprofile-generate -fprofile-update=single",
                 "-LDFLAGS", "-fprofile-generate"]
_PGO_USE = ["-CFLAGS", "-fprofile-use -fprofile-partial-training -Wno-missing-profile"]
_HEADER = re.compile(r"^module top\(([^)]*)\);", re.M)
_SUBPROGRAM = re.compile(r"^\s*(function|task)\b.*?^\s*end\1\b", re.M | re.S)
_PORT = re.compile(r"^\s*(input|output)\s+(?:reg\s+)?(\[\d+:\d+\]\s+)?\\?(\S+)\s*;", re.M)


def cache_root():
    """Where builds are cached: $OBCORE_BUILD, else ./build/native."""
    return Path(os.environ.get("OBCORE_BUILD") or Path.cwd() / "build" / "native")


def _verilator_version():
    ensure_verilator()
    out = subprocess.run(["verilator", "--version"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def _wrap(verilog):
    """``verilog`` (module ``top``) and the module ``simtop`` around it: the same ports plus
    ``clk_in``, each input reaching ``top`` through a register clocked by ``clk_in``.

    Verilator evaluates logic fed by a model input twice per cycle (before and after the
    edge); fed by registers, once. engine.cpp loads each cycle's inputs before its edge.
    """
    header = _HEADER.search(verilog)
    if header is None:
        raise ValueError("the Verilog has no `module top(...);` header")
    body = verilog[header.end():]
    body = body[:body.index("endmodule")]
    names = {name.strip() for name in header[1].split(",")}
    # A function's or a task's arguments are declared like ports: not theirs.
    body = _SUBPROGRAM.sub("", body)
    ports = [port for port in _PORT.findall(body) if port[2] in names]
    missing = names - {name for _, _, name in ports}
    if missing or len(ports) != len(names):
        raise ValueError(f"the ports of module top do not match their input/output "
                         f"declarations: {sorted(missing) or 'a port declared twice'}")
    lines = ["module simtop(clk_in, " + ", ".join(name for _, _, name in ports) + ");",
             "  input clk_in;"]
    conns = []
    for direction, width, name in ports:
        lines.append(f"  {direction} {width}{name};")
        if direction == "input" and name != "clk":
            lines += [f"  reg {width}{name}_q;",
                      f"  always @(posedge clk_in) {name}_q <= {name};"]
            conns.append(f".{name}({name}_q)")
        else:
            conns.append(f".{name}({name})")
    lines += ["  top core(" + ", ".join(conns) + ");", "endmodule", ""]
    return verilog + "\n".join(lines)


def build_library(verilog, trace=False, log=None, pgo=False):
    """Compile top-level Verilog (module ``top``) into ``libengine.so``; return its path.

    The build folder is named by a hash of the Verilog, the C++ driver, the flags and the
    Verilator version, so an unchanged design reuses its library and a change rebuilds.
    ``pgo``: compile twice, the second time optimised with the profile of the first running
    the scenarios (:func:`_train`): about a tenth faster, twice the build time. ``log``:
    the progress lines' stream (None: ``sys.stderr`` as it is when called).
    """
    log = sys.stderr if log is None else log
    args = _VERILATOR_ARGS + (["--trace-fst"] if trace else [])
    verilog = _wrap(fold_registers(verilog)[0])
    key = hashlib.sha256("\0".join([verilog, _CPP.read_text(), " ".join(args),
                                    _verilator_version(), "pgo" * pgo]).encode()).hexdigest()[:16]
    folder = cache_root() / key
    lib = folder / "libengine.so"
    if lib.exists():   # published by a rename once whole: never a half-written library
        return lib
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "build.lock", "w") as lock:
        # One build per design: another process (a test worker, a second `obcore sim`)
        # asking for it meanwhile waits here and then loads the library this one published.
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another process building the native model in {folder}...",
                  file=log, flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        if lib.exists():
            return lib
        (folder / "top.v").write_text(verilog)
        print(f"building the native model in {folder} (once per design; about a minute"
              f"{', twice: profile-guided' if pgo else ''})...", file=log, flush=True)
        t0 = time.monotonic()
        part = folder / "libengine.part.so"
        if pgo:
            _verilate(folder, part, args + _PGO_GENERATE, trace)
            subprocess.run([sys.executable, "-c", f"from {__name__} import _train; "
                            f"_train({str(part)!r})"], check=True)
            for old in (folder / "obj").glob("*.[oa]"):   # make would keep them: flags are not deps
                old.unlink()
            part.unlink()
            args = args + _PGO_USE
        _verilate(folder, part, args, trace)
        part.replace(lib)
        print(f"built in {time.monotonic() - t0:.0f} s", file=log, flush=True)
    return lib


def _verilate(folder, lib, args, trace):
    cmd = ["verilator", "--cc", "top.v", str(_CPP), "--exe", "--build", "-j",
           str(os.cpu_count() or 1), "-Mdir", "obj", "-o", str(lib), *args]
    proc = subprocess.run(cmd, cwd=folder, capture_output=True, text=True)
    if proc.returncode != 0 or not lib.exists():
        (folder / "build.log").write_text(proc.stdout + proc.stderr)
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        if trace and any(f"{h}: No such file" in proc.stderr for h in ("lz4.h", "zlib.h")):
            raise RuntimeError("FST tracing needs the lz4 and zlib development headers, which "
                               "Verilator's FST writer compiles against (Debian/Ubuntu: apt "
                               f"install liblz4-dev zlib1g-dev); full log: {folder / 'build.log'}")
        raise RuntimeError(f"Verilator build failed (full log: {folder / 'build.log'}):\n{tail}")


def _train(lib):
    """Run every scenario through the profiling build ``lib``; the profile is written when
    this process exits."""
    from ..scenarios import SCENARIOS, generate
    msgs = feed_array([m for name in sorted(SCENARIOS) for _, m in generate(name, 1)])
    dll = ctypes.CDLL(lib)
    dll.ob_new.restype = ctypes.c_void_p
    h = ctypes.c_void_p(dll.ob_new())
    dll.ob_reset(h, ctypes.c_uint32(4))
    n = len(msgs)
    obs, telem = (np.zeros(n * size, np.uint8) for size in (dll.ob_obs_bytes(),
                                                            dll.ob_telem_bytes()))
    orders = np.zeros((4 * n + 64) * ORDER_DTYPE.itemsize, np.uint8)
    cycles = np.zeros(4 * n + 64, np.uint64)
    counts = (ctypes.c_uint64 * 2)()
    dll.ob_run(h, _bytes(msgs), None, ctypes.c_uint32(0), ctypes.c_uint64(n),
               ctypes.c_uint32(RUN_DRAIN), _bytes(obs), _bytes(telem), ctypes.c_uint64(n),
               _bytes(orders), _bytes(cycles), ctypes.c_uint64(len(cycles)),
               ctypes.byref(counts, 0), ctypes.byref(counts, 8))
    dll.ob_free(h)


def _bytes(array):
    return array.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8))


class NativeEngine:
    """The Verilated engine: ``run`` a batch of feed messages, read and write registers.

    ``top`` is an ``hw.top.Engine`` and ``verilog`` its Verilog; its ``obs_format`` and
    ``telem_format`` give the observation and telemetry records (one each per accepted feed
    message, in order).
    """

    def __init__(self, top, verilog, trace=False, log=None, pgo=False):
        self.regmap = top.regmap
        self.obs_format = top.obs_format
        self.obs_dtype = self.obs_format.dtype()
        self.telem_format = top.telem_format
        self.telem_dtype = self.telem_format.dtype()
        # A record of the batch's last message comes out within the run's drain cycles.
        if max(top.obs_latency, top.telem_latency) > RUN_DRAIN:
            raise ValueError(f"output latencies {top.obs_latency}, {top.telem_latency} "
                             f"exceed RUN_DRAIN {RUN_DRAIN}")
        self.traced = trace
        lib = build_library(verilog, trace, log, pgo)
        self._lib = ctypes.CDLL(str(lib))
        self._bind()
        sizes = (self._lib.ob_feed_bytes(), self._lib.ob_obs_bytes(),
                 self._lib.ob_telem_bytes(), self._lib.ob_order_bytes())
        want = (FEED_DTYPE.itemsize, self.obs_dtype.itemsize, self.telem_dtype.itemsize,
                ORDER_DTYPE.itemsize)
        if sizes != want:
            raise RuntimeError(f"native model port sizes {sizes} do not match the layouts "
                               f"{want}")
        self._h = self._lib.ob_new()
        self.reset()

    def _bind(self):
        lib, vp, u8p = self._lib, ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint8)
        u32, u64 = ctypes.c_uint32, ctypes.c_uint64
        u32p = ctypes.POINTER(u32)
        for name, res, argt in (
            ("ob_feed_bytes", u32, []), ("ob_obs_bytes", u32, []), ("ob_order_bytes", u32, []),
            ("ob_telem_bytes", u32, []), ("ob_held", u64, [vp]),
            ("ob_new", vp, []), ("ob_free", None, [vp]), ("ob_cycle", u64, [vp]),
            ("ob_reset", None, [vp, u32]), ("ob_write", None, [vp, u32, u32]),
            ("ob_read", u32, [vp, u32]), ("ob_trace", ctypes.c_int, [vp, ctypes.c_char_p,
                                                                     u64, u64]),
            ("ob_read_many", None, [vp, u32p, u64, u32p]),
            ("ob_write_many", None, [vp, u32p, u32p, u64]),
            ("ob_run", u64, [vp, u8p, u32p, u32, u64, u32, u8p, u8p, u64, u8p,
                             ctypes.POINTER(u64), u64, ctypes.POINTER(u64),
                             ctypes.POINTER(u64)]),
        ):
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = res, argt

    def close(self):
        if getattr(self, "_h", None):
            self._lib.ob_free(self._h)
            self._h = None

    def __del__(self):
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def cycle(self):
        """Cycles since the last reset: the gateware's own `cycle` register count."""
        return self._lib.ob_cycle(self._h) - self._cycle0

    def reset(self, cycles=4):
        self._lib.ob_reset(self._h, cycles)
        self._cycle0 = self._lib.ob_cycle(self._h)   # the gateware's cycle counter restarts

    def write(self, addr, value):
        self._lib.ob_write(self._h, addr, value & 0xFFFF_FFFF)

    def read(self, addr):
        return self._lib.ob_read(self._h, addr)

    def read_many(self, addrs):
        """The words at ``addrs``, read in order (as ``read`` each, in one native call)."""
        n = len(addrs)
        words = (ctypes.c_uint32 * n)()
        self._lib.ob_read_many(self._h, (ctypes.c_uint32 * n)(*addrs), n, words)
        return words[:]

    def write_many(self, pairs):
        """Write ``(addr, word)`` pairs in order (as ``write`` each, in one native call)."""
        n = len(pairs)
        if n:
            words = ctypes.c_uint32 * n
            addrs, values = zip(*pairs, strict=True)
            self._lib.ob_write_many(self._h, words(*addrs),
                                    words(*(w & 0xFFFF_FFFF for w in values)), n)

    def trace(self, path, first_cycle, last_cycle):
        """Dump cycles [first_cycle, last_cycle) (counted as :attr:`cycle` counts them) to an
        FST file, two time steps per cycle; the file is complete once the engine has run
        past ``last_cycle`` (or is closed). Needs a build with ``trace=True``."""
        if not self.traced:
            raise RuntimeError("this native model was built without FST tracing; open it "
                               "with open_engine('verilator', trace=True)")
        if not 0 <= first_cycle < last_cycle:
            raise ValueError(f"the trace window needs 0 <= first_cycle < last_cycle, not "
                             f"[{first_cycle}, {last_cycle})")
        if not self._lib.ob_trace(self._h, str(path).encode(), first_cycle + self._cycle0,
                                  last_cycle + self._cycle0):
            raise RuntimeError("this native model was built without FST tracing")

    def run(self, msgs, max_orders=None, telemetry=True, idle=0, pauses=None, settle=False):
        """Feed ``msgs`` (a ``FEED_DTYPE`` array) one per cycle, each followed by its
        ``pauses`` cycles without a message (:func:`~obcore.sim.engine.pause_array`; none by
        default); drain the pipeline, then ``idle`` more cycles without a message (time for a
        book's ladder refill). ``settle``: a pause ends as soon as the top's ``settling`` is 0
        (see :meth:`obcore.sim.engine.ModelEngine.run`).

        Returns ``(obs, orders)``: one observation per accepted message (``obs_dtype``) and the
        orders emitted meanwhile (``ORDER_DTYPE``). ``last_order_cycles`` then holds the cycle
        each order left the engine (the clock count of ``obs["cycle"]``, not truncated) and
        ``last_telemetry`` one telemetry record per message (``telem_dtype``), or None when
        ``telemetry`` is False (not copied out: a little faster).
        """
        msgs = np.ascontiguousarray(msgs, dtype=FEED_DTYPE)
        n = len(msgs)
        obs = np.zeros(n, dtype=self.obs_dtype)
        telem = np.zeros(n, dtype=self.telem_dtype) if telemetry else None
        pauses = pause_array(pauses, n)
        # Room for every order, so the stream is never back-pressured: 4 per message and 64
        # for the drain; a pause, a drain in the middle of the batch, adds its length and 64.
        cap = 4 * n + 64 + self._lib.ob_held(self._h)
        if pauses is not None:
            cap += int(pauses.sum(dtype=np.uint64)) + 64 * int(np.count_nonzero(pauses))
        cap = cap if max_orders is None else max_orders
        orders = np.zeros(cap, dtype=ORDER_DTYPE)
        cycles = np.zeros(cap, dtype=np.uint64)
        n_telem, n_orders = ctypes.c_uint64(0), ctypes.c_uint64(0)
        got = self._lib.ob_run(self._h, _bytes(msgs),
                               None if pauses is None else pauses.ctypes.data_as(
                                   ctypes.POINTER(ctypes.c_uint32)),
                               int(bool(settle)), n, RUN_DRAIN + idle, _bytes(obs),
                               _bytes(telem) if telemetry else None, n, _bytes(orders),
                               cycles.ctypes.data_as(ctypes.POINTER(ctypes.c_uint64)), cap,
                               ctypes.byref(n_telem), ctypes.byref(n_orders))
        if got != n or n_telem.value != n:
            raise RuntimeError(f"native model produced {got} observations and "
                               f"{n_telem.value} telemetry records for {n} messages")
        self.last_order_cycles = cycles[:n_orders.value] - self._cycle0
        self.last_telemetry = telem
        return obs, orders[:n_orders.value]
