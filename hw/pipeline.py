"""Pipeline helpers shared by the blocks: register chains, DSP partial products, magnitudes."""

from amaranth.hdl import Cat, Const, Mux, Signal, Value
from amaranth.lib.memory import Memory

__all__ = ["DSP_BITS", "delay", "replicas", "delay_line", "dsp_slices", "partials", "weighted",
           "truncated", "partial_sum", "csa", "magnitude"]

DSP_BITS = 18          # one ECP5 MULT18X18D port, signed or unsigned


def delay(m, value, name, shape=None, n=1):
    """``value`` through ``n`` registers (reset 0), cast to ``shape`` at the first one."""
    for i in range(n):
        reg = Signal(shape if shape is not None else value.shape(), name=f"{name}_{i + 1}")
        m.d.sync += reg.eq(value)
        value, shape = reg, None
    return value


def replicas(m, value, name, count):
    """``count`` copies of ``value``, each registered once (reset 0), for a value whose loads
    are far apart: each copy can sit beside its own. The copies carry the ``keep`` attribute,
    which ``obcore synth`` turns into one flip-flop per copy (``sim.synth.KEEP_REPLICAS``);
    a flow without that step merges them back into one."""
    copies = [Signal(value.shape(), name=f"{name}_{i}", attrs={"keep": 1})
              for i in range(count)]
    m.d.sync += [copy.eq(value) for copy in copies]
    return copies


def delay_line(m, value, name, n):
    """``value`` ``n`` cycles later through a memory of ``n - 1`` entries (``n`` > 2; else
    :func:`delay`): one write and one read a cycle instead of ``n`` registers of the full
    width, so a wide record goes to LUT or block RAM. The entries are not reset: for values
    shown only under a valid bit delayed by :func:`delay` (reset), ``n`` cycles or more."""
    if n <= 2:
        return delay(m, value, name, n=n)
    mem = m.submodules[f"{name}_mem"] = Memory(shape=value.shape(), depth=n - 1, init=[])
    # The read is not transparent: at the pointer it returns the entry written n - 1
    # writes ago, before this cycle's write replaces it; the read port adds the last cycle.
    wr, rd = mem.write_port(), mem.read_port()
    ptr = Signal(range(n - 1), name=f"{name}_ptr")
    m.d.sync += ptr.eq(Mux(ptr == n - 2, 0, ptr + 1))
    m.d.comb += [wr.addr.eq(ptr), wr.data.eq(value), wr.en.eq(1), rd.addr.eq(ptr)]
    return rd.data


def dsp_slices(a, b):
    """``a`` and ``b`` cut for :func:`partials`: lists of ``(offset, slice)`` such that any
    slice of one times any slice of the other is one MULT18X18D. A slice is ``DSP_BITS``
    wide, or ``DSP_BITS - 1`` (unsigned) when the other operand is signed: an unsigned
    operand must fit a signed port then. A signed operand's top slice keeps its sign."""
    a, b = Value.cast(a), Value.cast(b)
    mixed = a.shape().signed != b.shape().signed

    def cut(value):
        signed = value.shape().signed
        step = DSP_BITS - 1 if mixed or signed else DSP_BITS
        if len(value) <= (DSP_BITS if signed else step):
            return [(0, value)]
        return [(lo, value[lo:lo + step].as_signed() if signed and lo + step >= len(value)
                 else value[lo:lo + step]) for lo in range(0, len(value), step)]
    return cut(a), cut(b)


def partials(m, a, b, name):
    """``a * b`` as registered partial products, one MULT18X18D each (:func:`dsp_slices`),
    as ``{shift: [term]}``: the sum of every ``term << shift`` is ``a * b`` one cycle later.
    Nothing but the DSP lies between the operands and the register: an adder behind a DSP
    in its cycle is what makes wide products slow."""
    terms = {}
    cuts_a, cuts_b = dsp_slices(a, b)
    for i, x in cuts_a:
        for j, y in cuts_b:
            terms.setdefault(i + j, []).append(delay(m, x * y, f"{name}{i}_{j}"))
    return terms


def weighted(parts):
    """The terms of :func:`partials` ``parts``, each shifted to its weight."""
    return [term << shift for shift, group in parts.items() for term in group]


def truncated(parts, shift):
    """``floor(a * b / 2^shift)`` as terms of :func:`partials` ``parts``, to be summed: every
    offset but 0 is at least ``shift`` (asserted), so only the lowest term is truncated."""
    assert all(offset == 0 or offset >= shift for offset in parts)
    return [term >> shift if offset == 0 else term << (offset - shift)
            for offset, group in parts.items() for term in group]


def partial_sum(m, a, b, name):
    """``a * b`` one cycle later: the sum of :func:`partials`, left to the next stage."""
    return sum(weighted(partials(m, a, b, name)))


def csa(x, y, z):
    """One carry-save level: ``x + y + z`` = sum + carry modulo 2^len(x), all three as wide as
    ``x``; the carry's bit 0 is 0, free for a carry-in (``carry | 1`` adds one)."""
    return x ^ y ^ z, Cat(Const(0, 1), ((x & y) | (x & z) | (y & z))[:len(x) - 1])


def magnitude(m, a, b, name):
    """Registered ``|a - b|``, ``a < b`` and ``a > b`` for unsigned ``a``, ``b``: both
    differences side by side and the sign of one picks, so no negation (a second carry
    chain) follows a difference, here or in whatever takes the magnitude."""
    ab, ba = a - b, b - a
    mag = delay(m, Mux(ab[-1], ba, ab)[:max(len(a), len(b))], f"{name}mag")
    return mag, delay(m, ab[-1], f"{name}neg"), delay(m, ba[-1], f"{name}bid")
