"""The registered DSP product on Verilator, in both forms: the ECP5 MULT18X18D instance (with
a behavioural model of the cell written here from Lattice's sysDSP guide, TN1267) and the
fabric register every other platform gets; the bench in dsp_tb.py."""

from amaranth.hdl import Module, Shape, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from harness import BUILD, run_cocotb

from obcore.hw.dsp import DSP_BITS, P_BITS, Product

# Operand pairs: full ports, mixed signedness (the unsigned one a bit short of a port) and
# narrow operands the DSP must extend, each by its own sign.
SHAPES = [(unsigned(18), unsigned(18)), (signed(18), signed(18)), (signed(18), unsigned(17)),
          (unsigned(17), signed(18)), (unsigned(5), signed(9)), (signed(3), signed(18)),
          (unsigned(1), unsigned(7))]


class Products(wiring.Component):
    """One :class:`Product` per pair of ``SHAPES``: ports ``a<i>``, ``b<i>``, ``p<i>``."""

    def __init__(self):
        ports = {}
        for i, (sa, sb) in enumerate(SHAPES):
            ports |= {f"a{i}": In(sa), f"b{i}": In(sb),
                      f"p{i}": Out(Shape(sa.width + sb.width, sa.signed or sb.signed))}
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        for i, (sa, sb) in enumerate(SHAPES):
            prod = m.submodules[f"prod{i}"] = Product(sa, sb)
            m.d.comb += [prod.a.eq(getattr(self, f"a{i}")), prod.b.eq(getattr(self, f"b{i}")),
                         getattr(self, f"p{i}").eq(prod.p)]
        return m


class ECP5:
    """Just enough of an ECP5 platform for :class:`Product` to instantiate the DSP."""
    family = "ecp5"


def mult18x18d_model():
    """The MULT18X18D ports and parameters hw/dsp.py uses: ``P = A × B``, a port read as
    signed when SIGNEDA/SIGNEDB is 1; with ``REG_OUTPUT_CLK = "CLK0"`` P is registered on
    CLK0's rising edge, enabled by CE0 and reset by RST0 (synchronous, RESETMODE "SYNC")."""
    ports = [f"{n}{i}" for n, k in (("A", DSP_BITS), ("B", DSP_BITS), ("C", DSP_BITS),
                                    ("CLK", 4), ("CE", 4), ("RST", 4)) for i in range(k)]
    ports += ["SIGNEDA", "SIGNEDB", "SOURCEA", "SOURCEB"]
    outs = [f"P{i}" for i in range(P_BITS)]
    params = ["REG_INPUTA_CLK", "REG_INPUTB_CLK", "REG_INPUTC_CLK", "REG_PIPELINE_CLK",
              "REG_OUTPUT_CLK", "REG_OUTPUT_CE", "REG_OUTPUT_RST", "RESETMODE", "GSR",
              "MULT_BYPASS", "SOURCEB_MODE"]
    bus = lambda n, k: "{" + ", ".join(f"{n}{i}" for i in reversed(range(k))) + "}"  # noqa: E731
    return "\n".join([
        f"module MULT18X18D({', '.join(ports + outs)});",
        *(f'  parameter {p} = "NONE";' for p in params),
        *(f"  input {p};" for p in ports), *(f"  output {p};" for p in outs),
        f"  wire [17:0] a = {bus('A', DSP_BITS)};",
        f"  wire [17:0] b = {bus('B', DSP_BITS)};",
        "  wire signed [18:0] ax = {SIGNEDA & a[17], a};",
        "  wire signed [18:0] bx = {SIGNEDB & b[17], b};",
        "  wire signed [37:0] prod = ax * bx;",
        "  reg [35:0] r = 36'd0;",
        "  always @(posedge CLK0) if (RST0) r <= 36'd0; else if (CE0) r <= prod[35:0];",
        f'  assign {bus("P", P_BITS)} = REG_OUTPUT_CLK == "CLK0" ? r : prod[35:0];',
        "endmodule", ""])


def shapes_env():
    return {"DSP_SHAPES": ",".join(f"{'s' if a.signed else 'u'}{a.width}*"
                                   f"{'s' if b.signed else 'u'}{b.width}" for a, b in SHAPES)}


def test_dsp_product_ecp5_instance():
    model = BUILD / "MULT18X18D.v"
    model.parent.mkdir(parents=True, exist_ok=True)
    model.write_text(mult18x18d_model())
    run_cocotb(Products(), "dsp_ecp5", "dsp_tb", platform=ECP5(), sources=[model],
               extra_env=shapes_env())


def test_dsp_product_fabric():
    run_cocotb(Products(), "dsp_fabric", "dsp_tb", extra_env=shapes_env())
