"""Fixed-point formats, register descriptors and the host's value <-> raw conversions."""

import math
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction

__all__ = ["WORD", "Q", "Register", "RegisterMap", "to_fixed", "from_fixed", "exact"]

WORD = 32             # bus data width; wider registers take several consecutive words


@dataclass(frozen=True)
class Q:
    """Fixed-point format: ``int_bits`` integer + ``frac_bits`` fraction bits, optional sign.

    ``Q(8, 24)`` is unsigned Q8.24 (32 bits, step 2^-24); ``Q(16, 16, signed=True)`` is
    two's-complement with the sign counted inside ``int_bits``.
    """
    int_bits: int
    frac_bits: int = 0
    signed: bool = False

    @property
    def width(self):
        return self.int_bits + self.frac_bits

    @property
    def raw_min(self):
        return -(1 << (self.width - 1)) if self.signed else 0

    @property
    def raw_max(self):
        return (1 << (self.width - 1)) - 1 if self.signed else (1 << self.width) - 1

    def __str__(self):
        base = f"Q{self.int_bits}.{self.frac_bits}" if self.frac_bits else f"{self.width}-bit"
        return ("S" if self.signed else "U") + base


@dataclass(frozen=True)
class Register:
    """One register (or an array of ``count`` of them, e.g. one per venue).

    ``lo``/``hi`` bound what a writer may set, in real units (inclusive); ``reset`` is real.
    ``access``: ``rw`` read/write, ``ro`` status, ``w1c`` status with write-1-to-clear bits,
    ``wo`` a command strobe (reads as 0).
    """
    name: str
    fmt: Q
    access: str
    doc: str
    unit: str = ""
    reset: object = 0
    lo: object = None
    hi: object = None
    count: int = 1
    block: str = "system"
    const: bool = False   # ro only: a build-time constant (its reset); the CSR drives it
    addr: int = field(default=-1, compare=False)

    @property
    def words(self):
        return -(-self.fmt.width // WORD)

    @property
    def writable(self):
        return self.access in ("rw", "w1c", "wo")

    def limits(self):
        """The allowed real range ``(lo, hi)``: the declared one, or all the format holds."""
        step = Fraction(1, 1 << self.fmt.frac_bits)
        lo = exact(self.lo) if self.lo is not None else self.fmt.raw_min * step
        hi = exact(self.hi) if self.hi is not None else self.fmt.raw_max * step
        return lo, hi

    def element(self, index):
        """The bus address of element ``index`` (0..count-1)."""
        if not (isinstance(index, int) and 0 <= index < self.count):
            raise ValueError(f"{self.name}: index must be 0..{self.count - 1}, not {index!r}")
        return self.addr + index * self.words


def exact(value):
    """An exact rational from an int, a decimal string, a Decimal, a Fraction or a float."""
    if isinstance(value, bool):
        raise TypeError("a boolean is not a number here")
    if isinstance(value, (int, Fraction)):
        return Fraction(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not a finite number")
        return Fraction(value)
    if isinstance(value, (str, Decimal)):
        try:
            d = Decimal(value)
        except ArithmeticError:
            raise ValueError(f"{value!r} is not a number") from None
        if not d.is_finite():
            raise ValueError(f"{value!r} is not a finite number")
        return Fraction(d)
    raise TypeError(f"{value!r} is not a number")


def _fmt_real(value):
    return format(float(value), ".10g")


def to_fixed(reg, value):
    """Real value -> raw two's-complement bus bits, rounded to nearest (ties to even).

    Raises ``ValueError`` naming the register and its allowed range when out of range.
    """
    try:
        real = exact(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{reg.name}: {exc}; expected a number in "
                         f"{_fmt_real(reg.limits()[0])}..{_fmt_real(reg.limits()[1])}"
                         f"{' ' + reg.unit if reg.unit else ''}") from None
    lo, hi = reg.limits()
    if not lo <= real <= hi:
        raise ValueError(f"{reg.name} = {_fmt_real(real)} is out of range: allowed "
                         f"{_fmt_real(lo)}..{_fmt_real(hi)}{' ' + reg.unit if reg.unit else ''}"
                         f" ({reg.fmt})")
    raw = round(real * (1 << reg.fmt.frac_bits))
    raw = max(reg.fmt.raw_min, min(reg.fmt.raw_max, raw))
    return raw & ((1 << reg.fmt.width) - 1)


def from_fixed(reg, raw):
    """Raw bus bits -> exact real value as a ``Fraction`` (sign-extended if signed)."""
    width = reg.fmt.width
    if not 0 <= raw < (1 << width):
        raise ValueError(f"{reg.name}: raw value {raw!r} does not fit in {width} bits")
    if reg.fmt.signed and raw >> (width - 1):
        raw -= 1 << width
    return Fraction(raw, 1 << reg.fmt.frac_bits)


class RegisterMap:
    """Registers with word addresses assigned in order; look-up by name."""

    def __init__(self, registers):
        self._regs = {}
        addr = 0
        for reg in registers:
            if reg.name in self._regs:
                raise ValueError(f"duplicate register name {reg.name!r}")
            if reg.access not in ("rw", "ro", "w1c", "wo"):
                raise ValueError(f"{reg.name}: access must be rw, ro, w1c or wo, "
                                 f"not {reg.access!r}")
            if reg.const and reg.access != "ro":
                raise ValueError(f"{reg.name}: only ro registers can be constants")
            if reg.count < 1:
                raise ValueError(f"{reg.name}: count must be a positive integer")
            placed = Register(**{**reg.__dict__, "addr": addr})
            lo, hi = placed.limits()
            step = Fraction(1, 1 << reg.fmt.frac_bits)
            if lo < reg.fmt.raw_min * step or hi > reg.fmt.raw_max * step or lo > hi:
                raise ValueError(f"{reg.name}: range {lo}..{hi} does not fit {reg.fmt}")
            to_fixed(placed, reg.reset)   # the reset value must itself be legal
            self._regs[reg.name] = placed
            addr += placed.words * placed.count
        self.size = addr

    def __iter__(self):
        return iter(self._regs.values())

    def __len__(self):
        return len(self._regs)

    def __contains__(self, name):
        return name in self._regs

    def __getitem__(self, name):
        try:
            return self._regs[name]
        except KeyError:
            close = [n for n in self._regs if name.split("_")[0] in n][:5]
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise KeyError(f"unknown register {name!r}{hint}") from None

    def by_block(self, block):
        return [r for r in self if r.block == block]
