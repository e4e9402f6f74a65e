"""Folding next-state blocks into clocked ones: exactly where it keeps the behaviour."""

from obcore.sim.engine import _engine_design
from obcore.sim.native.fold import fold_registers

HEAD = """module top(clk, rst, en, d, q, r);
  reg \\$auto$verilog_backend.cc:2355:dump_module$1  = 0;
  input clk;
  wire clk;
  input rst;
  input en;
  input [7:0] d;
  output [7:0] q;
  reg [7:0] q = 8'h00;
  output [7:0] r;
  reg [7:0] r = 8'h00;
  reg [7:0] \\$1 ;
  reg [7:0] \\$2 ;
"""
# A register with an enable and a synchronous reset, as Amaranth writes it.
FLOP = """  always @(posedge clk)
    q <= \\$1 ;
"""
NEXT = """  always @* begin
    if (\\$auto$verilog_backend.cc:2355:dump_module$1 ) begin end
    \\$1  = q;
    if (en) begin
      \\$1 [3:0] = d[3:0];
    end
    if (rst) begin
      \\$1  = 8'h00;
    end
  end
"""
FOLDED = """  always @(posedge clk) begin
    if (en) begin
      q [3:0] <= d[3:0];
    end
    if (rst) begin
      q <= 8'h00;
    end
  end
"""


def test_a_register_folds_into_its_clocked_block():
    text, folded, found = fold_registers(HEAD + NEXT + FLOP + "endmodule\n")
    assert (folded, found) == (1, 1)
    assert text == HEAD + FOLDED + "endmodule\n"


def test_a_next_state_read_elsewhere_is_left_alone():
    src = HEAD + NEXT + FLOP + "  assign r = \\$1 ;\nendmodule\n"
    assert fold_registers(src) == (src, 0, 1)


def test_a_block_that_assigns_another_signal_is_left_alone():
    src = HEAD + NEXT.replace("      \\$1 [3:0] = d[3:0];\n",
                              "      \\$1 [3:0] = d[3:0];\n      \\$2  = d;\n") + FLOP
    assert fold_registers(src + "endmodule\n") == (src + "endmodule\n", 0, 1)


def test_a_next_state_of_another_type_is_left_alone():
    src = HEAD.replace("reg [7:0] \\$1 ;", "reg [8:0] \\$1 ;") + NEXT + FLOP + "endmodule\n"
    assert fold_registers(src) == (src, 0, 1)


def test_a_partial_first_assignment_is_left_alone():
    # The block must start from a whole value: a bit it never assigned would differ.
    src = HEAD + NEXT.replace("    \\$1  = q;\n", "    \\$1 [7:4] = q[7:4];\n") + FLOP
    assert fold_registers(src + "endmodule\n") == (src + "endmodule\n", 0, 1)


ESCAPED = """module top(clk, en, d);
  input clk;
  wire clk;
  input en;
  input [7:0] d;
  reg [7:0] \\a.q  = 8'h00;
  reg [7:0] \\$1 ;
  always @(posedge clk)
    \\a.q  <= \\$1 ;
  always @* begin
    \\$1  = \\a.q ;
    if (en) begin
      \\$1 [3:0] = d[3:0];
    end
  end
endmodule
"""


def test_an_escaped_register_name_is_kept_apart_from_its_slice():
    # Written `\\a.q[3:0]`, the slice would be part of the escaped name.
    text, folded, found = fold_registers(ESCAPED)
    assert (folded, found) == (1, 1)
    assert ("  always @(posedge clk) begin\n    if (en) begin\n"
            "      \\a.q [3:0] <= d[3:0];\n    end\n  end\n") in text
    assert "\\$1  =" not in text and "<= \\$1" not in text


def test_modules_are_folded_each_in_its_own_names():
    # The same next-state name in two modules: each is folded against its own register.
    one = HEAD + NEXT + FLOP + "endmodule\n"
    text, folded, found = fold_registers(one + one.replace("module top(", "module sub("))
    assert (folded, found) == (2, 2)
    assert text.count(FOLDED) == 2


def test_the_engine_verilog_has_almost_every_register_folded():
    # The native model's speed rests on this; a change in Amaranth's or yosys's Verilog
    # that defeats the patterns shows here, not only as a slower benchmark.
    _, verilog = _engine_design(2, 4, None)
    _, folded, found = fold_registers(verilog)
    assert found > 500 and folded >= 0.97 * found, (folded, found)
