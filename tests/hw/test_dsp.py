# amaranth: UnusedElaboratable=no
"""The DSP product's forms: what it accepts, and that on ECP5 its register is the DSP's."""

import re

import pytest
from amaranth.back import rtlil
from amaranth.hdl import signed, unsigned

from obcore.hw.dsp import Product


class ECP5:
    family = "ecp5"


@pytest.mark.parametrize("sa,sb", [(unsigned(19), unsigned(2)), (signed(18), unsigned(18)),
                                   (unsigned(3), signed(19))])
def test_product_rejects_operands_wider_than_a_port(sa, sb):
    with pytest.raises(ValueError, match="must fit a 18-bit DSP port"):
        Product(sa, sb)


@pytest.mark.parametrize("platform,dsp", [(ECP5(), True), (None, False)])
def test_the_register_is_the_dsps_own_on_ecp5(platform, dsp):
    """On ECP5: one MULT18X18D with only its output register, on the sync clock and reset, and
    no fabric flip-flop; elsewhere: a fabric register and no vendor cell."""
    il = rtlil.convert(Product(signed(18), unsigned(9)), name="top", platform=platform)
    cells = re.findall(r"\n  cell \\?(\S+) ", il)
    assert ("MULT18X18D" in cells) == dsp
    assert any(c.startswith("$dff") or c.startswith("$adff") for c in cells) != dsp
    if dsp:
        params = dict(re.findall(r'parameter \\(\S+) "(\S*)"', il))
        assert params["REG_OUTPUT_CLK"] == "CLK0"
        assert all(params[f"REG_{r}_CLK"] == "NONE"
                   for r in ("INPUTA", "INPUTB", "INPUTC", "PIPELINE"))
        ports = dict(re.findall(r"connect \\(CLK0|RST0|CE0) (\S+)", il))
        assert ports == {"CLK0": "\\clk", "RST0": "\\rst", "CE0": "1'1"}
