"""Host register access by name and in real units, plus a checked software model of the CSR."""

import math
from fractions import Fraction

from ..hw.csr import BUS_ERRORS, COMMIT, is_constant, word_table
from ..hw.registers import MAGIC, REGISTERS, VERSION, WORD, RegisterMap, from_fixed, to_fixed

__all__ = ["Registers", "CSRModel", "IdentityError"]

_MASK = (1 << WORD) - 1


class IdentityError(RuntimeError):
    """The thing at the other end of the bus is not the engine this register map describes."""


def _bounds(reg):
    """What :func:`_encode_fast` needs of ``reg``, constants of the map: the limits as integer
    ratios, the fraction bits, the raw clamp and the width mask."""
    (lo, hi), fmt = reg.limits(), reg.fmt
    return (lo.numerator, lo.denominator, hi.numerator, hi.denominator, fmt.frac_bits,
            fmt.raw_min, fmt.raw_max, (1 << fmt.width) - 1)


def _encode_fast(reg, bounds, value):
    """:func:`to_fixed` of an int, Fraction or finite float in range, in integer arithmetic
    (exactly: the value is a ratio n/d, the rounding is to nearest, ties to even, as
    ``round(Fraction)``); ``to_fixed`` itself, and its message, for anything else."""
    kind = type(value)
    if kind is int:
        n, d = value, 1
    elif kind is Fraction:
        n, d = value.numerator, value.denominator
    elif kind is float and math.isfinite(value):
        n, d = value.as_integer_ratio()
    else:
        return to_fixed(reg, value)
    lo_n, lo_d, hi_n, hi_d, frac, raw_min, raw_max, mask = bounds
    if not (lo_n * d <= n * lo_d and n * hi_d <= hi_n * d):   # d, lo_d, hi_d > 0
        return to_fixed(reg, value)
    raw, rest = divmod(n << frac, d)
    if 2 * rest > d or (2 * rest == d and raw & 1):
        raw += 1
    return max(raw_min, min(raw_max, raw)) & mask


def _check_index(reg, index):
    if isinstance(index, bool):
        raise ValueError(f"{reg.name}: index must be 0..{reg.count - 1}, not {index!r}")
    return reg.element(index)


class Registers:
    """Name-based, unit-aware register access over a word transport.

    ``bus`` is any object with ``read(addr) -> int`` and ``write(addr, value)`` for 32-bit
    words at word addresses (a bridge to the board, the simulator, or :class:`CSRModel`).
    Values are real numbers in the register's unit: ``get`` returns a ``Fraction`` (an
    ``int`` for plain integer formats), ``set`` accepts an int, Fraction, Decimal, float or
    decimal string and converts it with :func:`obcore.hw.registers.to_fixed`, the encoder
    the docs and tests use. Every check happens before the first bus write.

    Reads of an ``rw`` register return its STAGED value, which equals the live one after
    every :meth:`set`/:meth:`set_many`. If the transport fails in the middle of one, nothing
    went live but part of the change may be staged: redo the call (or set those registers
    again) before the next commit.
    """

    def __init__(self, bus, regmap=REGISTERS):
        if not (callable(getattr(bus, "read", None)) and callable(getattr(bus, "write", None))):
            raise TypeError(f"bus must have read(addr) and write(addr, value), "
                            f"not {type(bus).__name__}")
        if not isinstance(regmap, RegisterMap):
            raise TypeError(f"regmap must be a RegisterMap, not {type(regmap).__name__}")
        self.bus = bus
        self.regmap = regmap
        self._bounds = {}   # register name -> _bounds(register), made on first use

    # Raw words.

    def get_raw(self, name, index=0):
        """The raw bits of a register element; a wide one is read low word first."""
        reg = self.regmap[name]
        addr = _check_index(reg, index)
        if reg.access == "wo":
            raise ValueError(f"{name} is write-only (a command strobe); it reads as 0")
        raw = 0
        for w in range(reg.words):   # the low word latches the rest: read it first
            raw |= (self.bus.read(addr + w) & _MASK) << (w * WORD)
        return raw & ((1 << reg.fmt.width) - 1)

    def _write_raw(self, reg, index, raw):
        addr = reg.element(index)
        for w in range(reg.words):   # low word first; a wo strobe fires on the top word
            self.bus.write(addr + w, (raw >> (w * WORD)) & _MASK)

    # Real values.

    def get(self, name, index=0):
        """The real value of a register element (``Fraction``, or ``int`` for integers)."""
        reg = self.regmap[name]
        value = from_fixed(reg, self.get_raw(name, index))
        return int(value) if reg.fmt.frac_bits == 0 else value

    def _encode(self, key, value, allowed):
        if isinstance(key, tuple) and len(key) != 2:
            raise ValueError(f"a register key is a name or (name, index), not {key!r}")
        name, index = key if isinstance(key, tuple) else (key, 0)
        if not isinstance(name, str):
            raise ValueError(f"register name must be a string, not {name!r}")
        reg = self.regmap[name]
        if reg.access not in allowed:
            why = {"ro": "it is a read-only (ro) status register",
                   "w1c": "it holds sticky flags (w1c): use clear_flags()",
                   "wo": "it is a command strobe (wo): use set(), not set_many()"}
            raise ValueError(f"cannot set {name}: {why[reg.access]}")
        _check_index(reg, index)
        bounds = self._bounds.get(name)
        if bounds is None:
            bounds = self._bounds[name] = _bounds(reg)
        return reg, index, _encode_fast(reg, bounds, value)

    def set(self, name, value, index=0):
        """Set one register element. An ``rw`` parameter is staged and then committed, so it
        goes live at once; a ``wo`` register is written (its strobe fires)."""
        reg, index, raw = self._encode((name, index), value, ("rw", "wo"))
        if reg.access == "wo":
            self._write_raw(reg, index, raw)
        else:
            self._apply([(reg, index, raw)])

    def set_many(self, values):
        """Change several ``rw`` parameters atomically: ``{name or (name, index): value}``.

        Every value is checked first; only then are the staged values written, followed by
        one commit, so the gateware switches from the old set to the new one in one cycle
        and a bad value leaves everything (staged and live) untouched.
        """
        if not isinstance(values, dict):
            raise TypeError(f"set_many needs a dict of name: value, not {type(values).__name__}")
        self._apply([self._encode(key, value, ("rw",)) for key, value in values.items()])

    def _apply(self, encoded):
        if not encoded:
            return
        for reg, index, raw in encoded:
            self._write_raw(reg, index, raw)
        self.commit()

    def commit(self):
        """Make every staged ``rw`` value live in one cycle."""
        self._write_raw(self.regmap[COMMIT], 0, 1)

    def clear_flags(self, name, mask, index=0):
        """Clear the sticky bits of a ``w1c`` register where ``mask`` has a 1."""
        reg = self.regmap[name]
        if reg.access != "w1c":
            raise ValueError(f"{name} is {reg.access}, not w1c: it has no flags to clear")
        _check_index(reg, index)
        top = (1 << reg.fmt.width) - 1
        if isinstance(mask, bool) or not isinstance(mask, int) or not 0 <= mask <= top:
            raise ValueError(f"{name}: mask must be an integer 0..{top:#x}, not {mask!r}")
        self._write_raw(reg, index, mask)

    def check_identity(self):
        """Raise :class:`IdentityError` unless the bus reaches the engine this map describes.

        Checks ``id`` (is it obcore at all), ``version`` (same register layout) and, when the
        map has them, ``venues`` and ``levels`` (array addresses depend on them).
        """
        ident = self.get_raw("id")
        if ident != MAGIC:
            raise IdentityError(f"no obcore engine on this bus: id reads {ident:#010x}, "
                                f"expected {MAGIC:#010x}")
        version = self.get_raw("version")
        if version != VERSION:
            raise IdentityError(f"register-map version mismatch: the engine has version "
                                f"{version}, this host expects {VERSION}; update one side")
        for name in ("venues", "levels"):
            if name in self.regmap:
                have, want = self.get_raw(name), to_fixed(self.regmap[name],
                                                          self.regmap[name].reset)
                if have != want:
                    raise IdentityError(f"the engine was built with {name}={have} but this "
                                        f"register map has {name}={want}: use "
                                        f"build_map({name}={have}, ...)")


class CSRModel:
    """Transaction-level model of :class:`obcore.hw.csr.CSR`, usable as a ``bus``.

    It decodes addresses with the gateware's own :func:`~obcore.hw.csr.word_table` and is
    the reference the cocotb bench (tests/cocotb/csr_tb.py) checks the generated Verilog
    against cycle by cycle, so it cannot drift from the hardware unnoticed. Gateware-side
    events go through :meth:`drive` (ro inputs) and :meth:`raise_flags` (w1c sets); within
    one cycle the hardware order is: inputs, read, write, then sets (a set beats a clear).
    """

    def __init__(self, regmap=REGISTERS):
        if not isinstance(regmap, RegisterMap):
            raise TypeError(f"regmap must be a RegisterMap, not {type(regmap).__name__}")
        self.regmap = regmap
        self.words = word_table(regmap)
        self.staged, self.live, self.value, self.shadow = {}, {}, {}, {}
        self.strobes = []     # (name, index, raw) for every wo strobe, in order
        self.bus_errors = 0
        for reg in regmap:
            for i in range(reg.count):
                reset = to_fixed(reg, reg.reset)
                if reg.access == "rw":
                    self.staged[reg.name, i] = self.live[reg.name, i] = reset
                else:   # ro input or constant, w1c sticky bits, wo last data
                    keep = is_constant(reg) or reg.access == "w1c"
                    self.value[reg.name, i] = reset if keep else 0

    def _source(self, reg, index):
        if reg.access == "rw":
            return self.staged[reg.name, index]
        return self.bus_errors if reg.name == BUS_ERRORS else self.value[reg.name, index]

    def read(self, addr):
        """The word a bus read of ``addr`` returns (a wide register's low word latches)."""
        word = self.words.get(addr)
        if word is None or word.reg.access == "wo":
            return 0
        key = (word.reg.name, word.index)
        if word.reg.words == 1:
            return self._source(word.reg, word.index)
        if word.word == 0:
            value = self._source(word.reg, word.index)
            self.shadow[key] = value >> WORD
            return value & _MASK
        return (self.shadow.get(key, 0) >> (word.lo - WORD)) & _MASK

    def write(self, addr, value):
        """A bus write of the 32-bit word ``value`` to ``addr``."""
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MASK:
            raise ValueError(f"a bus word is an integer 0..{_MASK:#x}, not {value!r}")
        word = self.words.get(addr)
        if word is None or word.reg.access == "ro":
            self.bus_errors = min(self.bus_errors + 1, _MASK)
            return
        reg, key = word.reg, (word.reg.name, word.index)
        field = ((1 << word.bits) - 1) << word.lo
        bits = (value << word.lo) & field
        if reg.access == "rw":
            self.staged[key] = (self.staged[key] & ~field) | bits
        elif reg.access == "w1c":
            self.value[key] &= ~bits
        else:
            self.value[key] = (self.value[key] & ~field) | bits
            if word.word == reg.words - 1:
                self.strobes.append((reg.name, word.index, self.value[key]))
            if reg.name == COMMIT and value & 1:
                self.live.update(self.staged)

    def drive(self, name, raw, index=0):
        """The gateware drives ro input ``name`` to ``raw`` bits."""
        reg = self.regmap[name]
        if reg.access != "ro" or is_constant(reg) or name == BUS_ERRORS:
            raise ValueError(f"{name} is not a ro input port of the CSR")
        _check_index(reg, index)
        self.value[name, index] = raw & ((1 << reg.fmt.width) - 1)

    def raise_flags(self, name, bits, index=0):
        """The gateware pulses ``<name>_set`` with ``bits`` (after this cycle's write)."""
        reg = self.regmap[name]
        if reg.access != "w1c":
            raise ValueError(f"{name} is {reg.access}, not w1c")
        _check_index(reg, index)
        self.value[name, index] |= bits & ((1 << reg.fmt.width) - 1)

    def live_value(self, name, index=0):
        """The real value the gateware currently uses for ``rw`` register ``name``."""
        reg = self.regmap[name]
        return from_fixed(reg, self.live[name, index])

