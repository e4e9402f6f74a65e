"""``obcore synth --block``: one gateware block placed and routed alone, for its Fmax."""

import datetime
import importlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from amaranth.hdl import Cat, Const, Elaboratable, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import Flow

from .synth import (
    _ECP5_MAP,
    BOARDS,
    KEEP_REPLICAS,
    parse_nextpnr_log,
    parse_yosys_stat,
    summarise,
    timing_tables,
    tool_versions,
)
from .synth_run import ROUTE_PATIENCE, run_steps
from .toolchain import yowasp_env

__all__ = ["BLOCKS", "BlockHarness", "make_block", "block_latency", "block_folder", "build_block",
           "clock_lpf", "render_block_markdown"]


@dataclass(frozen=True)
class _Block:
    """How to build one block from a configuration, and what the engine uses it with."""
    make: object          # (venues, levels, capacity) -> wiring.Component
    label: str            # the configuration as the report shows it, from the same numbers
    uses: tuple           # which of venues / levels / capacity it takes
    latency: str = ""     # "module.CONSTANT": the block's documented latency in cycles


def _signals(venues, levels, capacity):
    from ..hw.signals import Signals
    return Signals(venues)


def _quoter(venues, levels, capacity):
    from ..hw.quoter import Quoter
    return Quoter(venues, 1)           # Engine(slots=1), the default


def _guard(venues, levels, capacity):
    from ..hw.guard import Guard
    return Guard(venues)


def _books(venues, levels, capacity):
    from ..hw.books import Books
    return Books(venues, levels, capacity)


def _ingress(venues, levels, capacity):
    from ..hw.ingress import Ingress
    return Ingress(venues)


def _csr(venues, levels, capacity):
    from ..hw.csr import CSR
    from ..hw.registers import build_map
    return CSR(build_map(venues, levels))


BLOCKS = {
    "signals": _Block(_signals, "Signals(venues={venues})", ("venues",), "signals.LATENCY"),
    "quoter": _Block(_quoter, "Quoter(venues={venues}, levels=1)", ("venues",),
                     "quoter.LATENCY"),
    "guard": _Block(_guard, "Guard(venues={venues})", ("venues",), "guard.LATENCY"),
    "books": _Block(_books, "Books(venues={venues}, levels={levels}, capacity={capacity})",
                    ("venues", "levels", "capacity"), "book.STATUS_LATENCY"),
    "ingress": _Block(_ingress, "Ingress(venues={venues})", ("venues",)),
    "csr": _Block(_csr, "CSR(build_map(venues={venues}, levels={levels}))",
                  ("venues", "levels")),
}


def make_block(name, venues, levels, capacity=None):
    """``(component, configuration label)`` of block ``name`` (a key of :data:`BLOCKS`)."""
    if name not in BLOCKS:
        raise ValueError(f"unknown block {name!r}; choose one of {', '.join(BLOCKS)}")
    spec = BLOCKS[name]
    component = spec.make(venues, levels, capacity)
    if capacity is None and "capacity" in spec.uses:
        capacity = component.capacity
    return component, spec.label.format(venues=venues, levels=levels, capacity=capacity)


class BlockHarness(Elaboratable):
    """A component between registers, for timing it alone, on five pins (clock and reset too).

    Every input port bit is a flip-flop of one shift register fed from the ``si`` pin; every
    output port is captured (``cap`` high) into a shift register that shifts out on ``so``.
    So each path inside the block starts and ends at a register, no output can be optimised
    away, no input is a constant, and only the clock's pin is fixed (:func:`clock_lpf`).
    """

    def __init__(self, block):
        if not isinstance(block, wiring.Component):
            self._MustUse__silence = True     # refused: not an unused design
            raise TypeError(f"the harness needs a wiring.Component, not {type(block).__name__}")
        self.block = block
        self.si, self.cap, self.so = Signal(name="si"), Signal(name="cap"), Signal(name="so")
        members = list(block.signature.flatten(block))
        # An always-ready stream's `ready` is a constant: nothing to drive.
        self.inputs = [value for _, member, value in members
                       if member.flow == Flow.In and not isinstance(value, Const)]
        self.outputs = [value for _, member, value in members if member.flow == Flow.Out]
        if not self.inputs or not self.outputs:
            self._MustUse__silence = True
            raise ValueError("the block needs at least one input and one output port")

    @property
    def ports(self):
        return [self.si, self.cap, self.so]

    def elaborate(self, platform):
        m = Module()
        m.submodules.block = self.block
        ins = Cat(*self.inputs)
        chain = Signal(len(ins), name="in_chain")
        m.d.sync += chain.eq(Cat(self.si, chain[:-1]))
        m.d.comb += ins.eq(chain)
        outs = Cat(*self.outputs)
        shift = Signal(len(outs), name="out_chain")
        with m.If(self.cap):
            m.d.sync += shift.eq(outs)
        with m.Else():
            m.d.sync += shift.eq(shift << 1)
        m.d.comb += self.so.eq(shift[-1])
        return m


def block_latency(name):
    """Block ``name``'s latency in cycles as its module declares it, or None."""
    where = BLOCKS[name].latency
    if not where:
        return None
    module, constant = where.rsplit(".", 1)
    return getattr(importlib.import_module(f"..hw.{module}", __package__), constant)


def block_folder(out, board_name, block):
    """Where a block build's files go: ``OUT/<board>-<block>``."""
    return Path(out) / f"{board_name}-{block}"


def render_block_markdown(report):
    """A readable summary of one block build's report."""
    cfg = report["config"]
    lines = [f"# {cfg['label']} alone on the {report['board']} ({report['device']})", "",
             f"Built {report['date']} in {report['elapsed_s']:.0f} s, seed {cfg['seed']}: "
             f"`{report['command']}`", "", *timing_tables(report)]
    lines += ["", f"Harness: {cfg['harness_ffs']} flip-flops of input/output shift registers "
              "are counted in FF (not the block's own).", "",
              "Tools: " + ", ".join(f"{k} {v}" for k, v in report["tools"].items()) + "."]
    for clock, path in report["critical_paths"].items():
        if clock in report["fmax"]:
            lines += ["", f"Critical path of `{clock}` (nextpnr):", "", "```", path, "```"]
    return "\n".join(lines) + "\n"


def clock_lpf(platform):
    """The harness's constraints: its clock on the board's clock pin. Left to the placer, the
    clock can land on a pin with no route to a global clock (seed 2 on the ECPIX-5 85F did:
    `Failed to route arc ... to G_CLKI_TDCC0`); the other ports stay free."""
    pin, = platform.lookup(platform.default_clk, 0).ios[0].names
    return f'LOCATE COMP "clk" SITE "{pin}";\n'


def build_block(board_name, block, *, venues=None, levels=None, capacity=None, freq_mhz=None,
                out="build", seed=1, command="", log=None, patience=ROUTE_PATIENCE):
    """Place and route one block in a :class:`BlockHarness` on an ECP5 board's device; write
    ``OUT/<board>-<block>/report.json`` and ``report.md``; return the report. ``patience``:
    as for :func:`obcore.sim.synth.build`.
    ``log``: the progress lines' stream (None: ``sys.stdout`` as it is when called)."""
    from amaranth.back import rtlil

    log = sys.stdout if log is None else log
    if board_name not in BOARDS:
        raise ValueError(f"unknown board {board_name!r}; choose one of {', '.join(BOARDS)}")
    board = BOARDS[board_name]
    if board.family != "ecp5":
        raise ValueError(f"--block builds for ECP5 boards only; {board_name} is {board.family}")
    platform = getattr(importlib.import_module(board.module), board.platform)()
    venues, levels = venues or board.venues, levels or board.levels
    freq_mhz = freq_mhz or board.clock_mhz
    component, label = make_block(block, venues, levels, capacity)
    top = BlockHarness(component)
    folder = block_folder(out, board_name, block)
    folder.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    # Elaborated for the board's platform, as a board build elaborates the engine.
    (folder / "top.il").write_text(rtlil.convert(top, name="top", ports=top.ports,
                                                 platform=platform))
    harness_ffs = len(Cat(*top.inputs)) + len(Cat(*top.outputs))
    (folder / "top.ys").write_text("\n".join([
        "read_rtlil top.il", KEEP_REPLICAS, "synth_ecp5 -top top -run begin:map_luts", *_ECP5_MAP,
        "tee -q -o top.stat stat", "write_json top.json", ""]))
    (folder / "top.lpf").write_text(clock_lpf(platform))
    env = {**os.environ, **yowasp_env()}
    device = (f"{platform._nextpnr_device_options[platform.device]} --package "
              f"{platform._nextpnr_package_options[platform.package].upper()} "
              f"--speed {platform.speed}")
    # router2, as for the boards: router1 spent most of a signals build on its last arcs.
    steps = [[env["YOSYS"], "-q", "-l", "top.rpt", "top.ys"],
             [env["NEXTPNR_ECP5"], *device.split(), "--json", "top.json", "--freq",
              f"{freq_mhz:g}", "--seed", str(seed), "--timing-allow-fail", "--router", "router2",
              "--lpf", "top.lpf", "--lpf-allow-unconstrained", "--log", "top.tim"]]
    run_steps(folder, steps, env, start, log,
              f"block {label} on {board_name} ({platform.device}), {freq_mhz:g} MHz, "
              f"seed {seed}", patience)
    pnr = parse_nextpnr_log((folder / "top.tim").read_text(errors="replace"))
    cells = parse_yosys_stat((folder / "top.stat").read_text(errors="replace"))
    report = {
        "board": board_name, "block": block,
        "device": f"{platform.device}-{platform.speed} {platform.package}", "family": "ecp5",
        "config": {"label": label, "venues": venues, "levels": levels, "capacity": capacity,
                   "clock_mhz": freq_mhz, "seed": seed, "harness_ffs": harness_ffs,
                   "latency_cycles": block_latency(block),
                   "latency_source": BLOCKS[block].latency or None},
        "date": datetime.date.today().isoformat(),
        "elapsed_s": round(time.monotonic() - start, 1),
        "command": command or f"obcore synth --board {board_name} --block {block}",
        "tools": tool_versions(), "fmax": pnr["fmax"],
        "resources": summarise("ecp5", pnr, cells), "utilisation": pnr["utilisation"],
        "critical_paths": pnr["critical_paths"],
    }
    (folder / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    text = render_block_markdown(report)
    (folder / "report.md").write_text(text)
    print(text, file=log)
    return report
