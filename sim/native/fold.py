"""Amaranth's registers folded into their clocked blocks for Verilator: same logic, no copies."""

import collections
import re

__all__ = ["fold_registers"]

# Amaranth's Verilog (yosys ``write_verilog`` after ``proc -nomux``) gives every register
#
#     always @* begin                          always @(posedge clk)
#       if (\$auto$verilog_backend...) ...       q <= \$12 ;
#       \$12 = q;
#       if (en) \$12 = d;
#       if (rst) \$12 = 0;
#     end
#
# and Verilator evaluates the combinational block every cycle: a copy into ``\$12`` and one
# back for each register, changed or not (the native model's largest cost, architecture.md).
# Folded, the block's statements run at the edge with ``q <=`` for ``\$12 =``: the last
# non-blocking assignment to a bit wins as the last blocking one did, a bit assigned by none
# keeps its value as ``\$12 = q`` kept it, and every value read is the one before the edge, as
# the combinational block read it. A block is folded only when that argument holds on its text:
# it assigns nothing but the one next-state signal, first in whole, which has the register's
# declared type and is read nowhere else. Anything else is left as it was.
_FLOP = re.compile(r"^  always @\(posedge (\S+)\)\n    (\S+)\s+<= (\S+) ;\n", re.M)
_COMB = re.compile(r"^  always @\* begin\n(.*?)^  end\n", re.M | re.S)
_TRIGGER = re.compile(r"\A    if \(\\\$auto\$verilog_backend\S* \) begin end\n")
_LHS = re.compile(r"^\s*(\\\S+|[A-Za-z_][\w$]*)\s*(\[[^\]\n]*\])?\s*=(?!=)", re.M)
_DECL = re.compile(r"^  reg ((?:signed )?(?:\[\d+:\d+\] )?)(\\\S+ |[A-Za-z_][\w$]*)[ =;]", re.M)


# Every identifier: escaped ones run to the next space, simple ones are whole words.
_IDENT = re.compile(r"\\\S+(?=\s)|(?<![\w$\\])[A-Za-z_][\w$]*")


def _name(token):
    """A Verilog identifier as a regex that matches it whole (escaped ones end at a space)."""
    if token.startswith("\\"):
        return re.escape(token) + r"(?=\s)"
    return r"(?<![\w$\\])" + re.escape(token) + r"(?![\w$])"


def _fold_module(text):
    flops = {m.group(3): m for m in _FLOP.finditer(text)}
    types = {m.group(2).rstrip(): m.group(1) for m in _DECL.finditer(text)}
    uses = collections.Counter(_IDENT.findall(text))
    edits = []
    for block in _COMB.finditer(text):
        body = _TRIGGER.sub("", block.group(1))
        targets = _LHS.findall(body)
        nxt = targets[0][0] if targets else None
        if nxt not in flops or targets[0][1] or any(t != nxt for t, _ in targets):
            continue
        flop = flops[nxt]
        clock, reg = flop.group(1), flop.group(2)
        if types.get(nxt) is None or types.get(nxt) != types.get(reg):
            continue
        # Its declaration, the flop's read and one occurrence per assignment: read nowhere else.
        if uses[nxt] != 2 + len(targets):
            continue
        body = re.sub(r"\A    " + _name(nxt) + r"\s*= " + _name(reg) + r"\s*;\n", "", body)
        # `q [3:0]`, with a space: an escaped name would run into its slice.
        body = re.sub(r"^(\s*)" + _name(nxt) + r"\s*(\[[^\]\n]*\])?\s*=(?!=)",
                      lambda m, reg=reg: f"{m.group(1)}{reg} {m.group(2) or ''}".rstrip() + " <=",
                      body, flags=re.M)
        edits.append((block.start(), block.end(),
                      f"  always @(posedge {clock}) begin\n{body}  end\n"))
        edits.append((flop.start(), flop.end(), ""))
    out, pos = [], 0
    for start, end, new in sorted(edits):
        out += [text[pos:start], new]
        pos = end
    return "".join(out) + text[pos:], len(edits) // 2, len(flops)


def fold_registers(verilog):
    """``verilog`` (yosys ``write_verilog`` text) with each register's next-state block folded
    into its clocked block where that provably keeps its behaviour; returns the new text, the
    registers folded and the registers found."""
    folded = found = 0
    parts = []
    for module in re.split(r"(?=^module )", verilog, flags=re.M):
        text, n, total = _fold_module(module)
        parts.append(text)
        folded, found = folded + n, found + total
    return "".join(parts), folded, found
