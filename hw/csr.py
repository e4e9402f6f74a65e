"""The CSR decoder: a 32-bit word bus onto the register map, with atomic staged parameters."""

from dataclasses import dataclass

from amaranth.hdl import Const, Module, Signal, Value, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .registers import WORD, Register, RegisterMap, to_fixed

__all__ = ["CSRBus", "CSR", "Word", "word_table", "addr_width", "is_constant",
           "BUS_ERRORS", "COMMIT", "READ_LATENCY", "READ_GROUP", "COMMIT_LATENCY"]

COMMIT = "commit"           # the wo register whose bit 0 makes every staged rw value live
BUS_ERRORS = "bus_errors"   # a ro register of this name reads the CSR's own error counter
READ_LATENCY = 2            # r_en in cycle t -> r_valid and r_data in cycle t + 2
READ_GROUP = 16             # words per first-stage read mux (a power of two)
COMMIT_LATENCY = 2          # commit written in cycle t -> staged values on the rw ports in t + 2
_MASK = (1 << WORD) - 1


@dataclass(frozen=True)
class Word:
    """One bus word: word ``word`` (0 = least significant) of element ``index`` of ``reg``."""
    addr: int
    reg: Register
    index: int
    word: int

    @property
    def lo(self):
        """The first raw bit of the register this word carries."""
        return self.word * WORD

    @property
    def bits(self):
        """How many raw bits this word carries (the top word of a register may be partial)."""
        return min(WORD, self.reg.fmt.width - self.lo)


def word_table(regmap):
    """``{address: Word}`` for every mapped word, shared by the gateware and the host model."""
    return {reg.element(i) + w: Word(reg.element(i) + w, reg, i, w)
            for reg in regmap for i in range(reg.count) for w in range(reg.words)}


def addr_width(regmap):
    """Bits of a word address that reaches every register of ``regmap``."""
    return max(1, (regmap.size - 1).bit_length())


def is_constant(reg):
    """Whether a register is a build-time constant (``const``) the CSR drives itself."""
    return reg.const


class CSRBus(wiring.Signature):
    """The register bus, seen from its initiator (the host bridge); one word per access.

    Write: ``w_en`` with ``addr`` and ``w_data`` for one cycle; the write takes effect at
    that clock edge. Read: ``r_en`` with ``addr`` for one cycle; the word is the register's
    value at that clock edge, and ``r_valid`` is high and ``r_data`` holds it
    ``READ_LATENCY`` (2) cycles later (``r_data`` then holds until the next read's word).
    A read and a write in the same cycle go to the same address; the read returns the value
    from before the write. Reads and writes may be issued on every cycle (reads are
    pipelined: one word per cycle).
    """

    def __init__(self, addr_width):
        if not (isinstance(addr_width, int) and addr_width >= 1):
            raise ValueError(f"addr_width must be a positive integer, not {addr_width!r}")
        self.addr_width = addr_width
        super().__init__({"addr": Out(addr_width), "w_en": Out(1), "w_data": Out(WORD),
                          "r_en": Out(1), "r_data": In(WORD), "r_valid": In(1)})

    def __eq__(self, other):
        return type(other) is CSRBus and other.addr_width == self.addr_width

    def __hash__(self):
        return hash((CSRBus, self.addr_width))

    def __repr__(self):
        return f"CSRBus({self.addr_width})"


def _shape(reg, *, force_unsigned=False):
    width = reg.fmt.width
    elem = signed(width) if reg.fmt.signed and not force_unsigned else unsigned(width)
    return elem if reg.count == 1 else data.ArrayLayout(elem, reg.count)


class CSR(wiring.Component):
    """Control/status registers generated from a :class:`RegisterMap` at elaboration time.

    Ports, named after the registers (an array register is one ``data.ArrayLayout`` port,
    element ``i`` in bits ``i*width ..``; signed formats have signed ports):

    - ``bus``: :class:`CSRBus` (see there for the timing). Registers wider than 32 bits
      take consecutive words, low word first. Reading the LOW word of a wide register also
      latches its upper words into a per-register shadow, and reads of the upper words
      return the shadow: read low then high for a consistent 64-bit value.
    - ``rw`` -> ``<name>`` output: the LIVE value the gateware uses. Bus writes go to a
      separate STAGED copy, and bus reads of an rw register return the staged value. Writing
      the ``commit`` register with bit 0 set copies every staged value to live at one clock
      edge, so the gateware never sees half of a parameter change: the edge after the
      write's (the commit is registered first), so a commit written in cycle t shows on the
      ``rw`` ports in cycle t + ``COMMIT_LATENCY`` (2). A write in cycle t + 1 is not
      part of that commit. Both copies reset
      to ``to_fixed(reg, reg.reset)``. The CSR does not range-check: the host does, with
      ``to_fixed``, before it writes.
    - ``ro`` -> ``<name>`` input the gateware drives, read as is; no port for constants
      (see :func:`is_constant`), which read as their reset value, nor for ``bus_errors``.
    - ``w1c`` -> ``<name>_set`` input: per-bit set strobes; ``<name>`` output: the sticky
      bits, which reset to the register's reset value. A bus write of 1 clears a bit; a set
      and a clear of one bit at the same edge leave it SET, because the event arrived after
      the value the host read: dropping it would lose an event, keeping it costs at most
      one more read-and-clear.
    - ``wo`` -> ``<name>`` output holding the last value written and ``<name>_stb`` (one bit
      per element): high for one cycle, the cycle after the write of the register's top
      word (write the low words first). Reads return 0.
    - ``bus_errors`` output: writes to ro registers and to unmapped addresses, which are
      otherwise ignored; it saturates at 2^32-1. A ro register named ``bus_errors`` in the
      map reads this counter. Unmapped reads return 0 and are not counted.

    Timing (the default map, 2 venues, 188 words, alone on the LFE5U-85F-6,
    ``obcore synth --board ulx3s-85f --block csr``, seed 1): the single-cycle read (a
    188-way one-hot mux per data bit, every register converging on ``r_data``, with decode
    nets of fan-out ~100 across the block) did not route: router2 stalled at ~840 overused
    wires, 5,756 LUT / 8,852 FF. Read as a two-stage tree (:meth:`_reads`,
    ``READ_LATENCY`` 2) it routes, 5,553 LUT / 9,240 FF, at 69.8 MHz, limited by the commit:
    ``addr`` -> decode -> the clock enable of all 2,162 live flip-flops (8.1 ns on that one
    net). With the commit registered first (``COMMIT_LATENCY`` 2): 76.2 MHz, 5,571 LUT /
    9,241 FF; the critical path is now the read address: ``addr`` -> a shared decode LUT
    -> 7.6 ns of routing to a first-stage group mux -> four LUT levels into the group
    register (13.1 ns, 11.4 of it routing). Next: the address registered per group before
    its mux (a third read cycle) and the shadow latch enables decoded beside each group.
    """

    def __init__(self, regmap):
        if not isinstance(regmap, RegisterMap):
            raise TypeError(f"CSR needs a RegisterMap (see obcore.hw.registers.build_map), "
                            f"not {type(regmap).__name__}")
        if not len(regmap):
            raise ValueError("CSR needs a register map with at least one register")
        if any(r.access == "rw" for r in regmap) and not (
                COMMIT in regmap and (regmap[COMMIT].access, regmap[COMMIT].count,
                                      regmap[COMMIT].words) == ("wo", 1, 1)):
            raise ValueError(f"a map with rw registers needs a one-word wo {COMMIT!r} "
                             f"register to make staged values live")
        if BUS_ERRORS in regmap:
            reg = regmap[BUS_ERRORS]
            if reg.access != "ro" or reg.count != 1 or reg.fmt.width != WORD or reg.fmt.signed:
                raise ValueError(f"{BUS_ERRORS!r} must be a single unsigned 32-bit ro register")
        self._map = regmap
        members = {"bus": In(CSRBus(addr_width(regmap))), BUS_ERRORS: Out(WORD)}

        def add(reg, name, member):
            if name in members:
                raise ValueError(f"register {reg.name!r}: port name {name!r} is already used")
            members[name] = member

        for reg in regmap:
            if reg.access == "rw":
                add(reg, reg.name, Out(_shape(reg)))
            elif reg.access == "ro" and not is_constant(reg) and reg.name != BUS_ERRORS:
                add(reg, reg.name, In(_shape(reg)))
            elif reg.access == "w1c":
                add(reg, f"{reg.name}_set", In(_shape(reg, force_unsigned=True)))
                add(reg, reg.name, Out(_shape(reg, force_unsigned=True)))
            elif reg.access == "wo":
                add(reg, reg.name, Out(_shape(reg)))
                add(reg, f"{reg.name}_stb", Out(reg.count))
        super().__init__(members)

    @property
    def regmap(self):
        return self._map

    def _port(self, name, reg, index):
        """Raw bits of element ``index`` of port ``name`` (assignable for outputs)."""
        value = Value.cast(getattr(self, name))
        width = reg.fmt.width
        return value[index * width:(index + 1) * width] if reg.count > 1 else value

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        table = word_table(self._map)

        # Per-element state, raw unsigned bits.
        staged, live, sticky, clear, wo_data, wo_next, shadow = {}, {}, {}, {}, {}, {}, {}
        for reg in self._map:
            for i in range(reg.count):
                key, width, tag = (reg.name, i), reg.fmt.width, f"{reg.name}_{i}"
                if reg.access == "rw":
                    reset = to_fixed(reg, reg.reset)
                    staged[key] = Signal(width, name=f"{tag}_staged", init=reset)
                    live[key] = Signal(width, name=f"{tag}_live", init=reset)
                    m.d.comb += self._port(reg.name, reg, i).eq(live[key])
                elif reg.access == "w1c":
                    sticky[key] = Signal(width, name=f"{tag}_sticky",
                                         init=to_fixed(reg, reg.reset))
                    clear[key] = Signal(width, name=f"{tag}_clear")
                    m.d.sync += sticky[key].eq((sticky[key] & ~clear[key])
                                               | self._port(f"{reg.name}_set", reg, i))
                    m.d.comb += self._port(reg.name, reg, i).eq(sticky[key])
                elif reg.access == "wo":
                    wo_data[key] = self._port(reg.name, reg, i)
                    wo_next[key] = Signal(name=f"{tag}_stb_next")
                    m.d.sync += Value.cast(getattr(self, f"{reg.name}_stb"))[i].eq(wo_next[key])
                if reg.words > 1 and reg.access != "wo":
                    shadow[key] = Signal((reg.words - 1) * WORD, name=f"{tag}_shadow")

        def source(reg, i):
            """The raw value a read of element ``i`` of ``reg`` sees (None: reads as 0)."""
            if reg.access == "rw":
                return staged[(reg.name, i)]
            if reg.access == "w1c":
                return sticky[(reg.name, i)]
            if reg.access == "wo":
                return None
            if reg.name == BUS_ERRORS:
                return self.bus_errors
            if is_constant(reg):
                return Const(to_fixed(reg, reg.reset), reg.fmt.width)
            return self._port(reg.name, reg, i)

        # Writes. A commit is registered before it enables every live flip-flop, so the
        # address decode and that fan-out are in different cycles (COMMIT_LATENCY).
        error, commit, committing = Signal(), Signal(), Signal()
        with m.If(bus.w_en), m.Switch(bus.addr):
            for addr, word in table.items():
                reg, key, lo, n = word.reg, (word.reg.name, word.index), word.lo, word.bits
                with m.Case(addr):
                    if reg.access == "rw":
                        m.d.sync += staged[key][lo:lo + n].eq(bus.w_data[:n])
                    elif reg.access == "w1c":
                        m.d.comb += clear[key][lo:lo + n].eq(bus.w_data[:n])
                    elif reg.access == "wo":
                        m.d.sync += wo_data[key][lo:lo + n].eq(bus.w_data[:n])
                        if word.word == reg.words - 1:
                            m.d.comb += wo_next[key].eq(1)
                        if reg.name == COMMIT:
                            m.d.comb += commit.eq(bus.w_data[0])
                    else:
                        m.d.comb += error.eq(1)
            with m.Default():
                m.d.comb += error.eq(1)
        m.d.sync += committing.eq(commit)
        with m.If(committing):
            m.d.sync += [live[k].eq(staged[k]) for k in live]
        with m.If(error & (self.bus_errors != _MASK)):
            m.d.sync += self.bus_errors.eq(self.bus_errors + 1)

        self._reads(m, table, source, shadow)
        return m

    def _reads(self, m, table, source, shadow):
        """The read mux as a two-stage tree, so no cycle has to gather every register to one
        place: at the ``r_en`` edge each group of ``READ_GROUP`` consecutive words registers
        the word its low address bits pick (next to its sources, so the wide decode stays
        local); one cycle later the group the high bits pick goes to ``r_data``."""
        bus = self.bus
        low = READ_GROUP.bit_length() - 1
        groups = {}
        for addr, word in table.items():
            groups.setdefault(addr >> low, {})[addr & (READ_GROUP - 1)] = word
        picked = {g: Signal(WORD, name=f"read_group{g}") for g in groups}
        high, valid = Signal(max(1, len(bus.addr) - low), name="read_high"), Signal()
        m.d.sync += [valid.eq(bus.r_en), bus.r_valid.eq(valid)]
        with m.If(bus.r_en):
            m.d.sync += high.eq(bus.addr[low:])
            for g, words in groups.items():
                with m.Switch(bus.addr[:low]):
                    for offset, word in words.items():
                        reg, key = word.reg, (word.reg.name, word.index)
                        value = source(reg, word.index)
                        if value is None:
                            continue
                        with m.Case(offset):
                            if reg.words == 1:
                                m.d.sync += picked[g].eq(value)
                            elif word.word == 0:
                                m.d.sync += picked[g].eq(value[:WORD])
                                with m.If(bus.addr[low:] == g):
                                    m.d.sync += shadow[key].eq(value[WORD:])
                            else:
                                m.d.sync += picked[g].eq(shadow[key][word.lo - WORD:][:WORD])
                    with m.Default():
                        m.d.sync += picked[g].eq(0)
        with m.If(valid), m.Switch(high):
            for g in groups:
                with m.Case(g):
                    m.d.sync += bus.r_data.eq(picked[g])
            with m.Default():
                m.d.sync += bus.r_data.eq(0)
