"""Parameter sets: checked as a whole, derived registers added, written in one commit; TOML."""

import difflib
import functools
import re
import tomllib
from decimal import Decimal, localcontext
from fractions import Fraction
from pathlib import Path

from ..hw.csr import word_table
from ..hw.registers import from_fixed, kappa_term, lev_lots, to_fixed

__all__ = ["ParamError", "DERIVED", "resolve", "label", "format_value", "describe_writes",
           "plan", "apply", "load", "save", "dumps"]

# register -> (the registers it is computed from, the function of their real values). The
# controller writes it in the same commit as its inputs, so the gateware never sees them
# disagree; nobody sets it directly.
DERIVED = {"kappa_term": (("gamma", "k"), kappa_term),
           "lev_lots": (("equity", "lot_value"), lev_lots)}
_KEY = re.compile(r"([A-Za-z_]\w*)(?:\[(\d+)\])?")
_WHY = {"ro": "it is a read-only (ro) status register",
        "w1c": "it holds sticky flags (w1c), which are cleared, not set",
        "wo": "it is a command strobe (wo)"}


class ParamError(ValueError):
    """Every problem found in a parameter set (``problems``); str() joins them on one line."""

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


def resolve(regmap, key):
    """``(register, element indices)`` for ``name`` (every element) or ``name[i]``.

    An unknown name raises ``ValueError`` suggesting close names.
    """
    m = _KEY.fullmatch(key) if isinstance(key, str) else None
    if m is None or m[1] not in regmap:
        word = m[1] if m else str(key)
        names = [r.name for r in regmap]
        close = difflib.get_close_matches(word, names, n=3, cutoff=0.6)
        close += [n for n in names if word and word in n and n not in close][:3]
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown register {key!r}{hint}")
    reg = regmap[m[1]]
    if m[2] is None:
        return reg, range(reg.count)
    if int(m[2]) >= reg.count:
        raise ValueError(f"{reg.name} has {reg.count} element(s): index 0..{reg.count - 1}, "
                         f"not {m[2]}")
    return reg, (int(m[2]),)


def label(reg, index):
    """``name`` or ``name[index]`` for an array register."""
    return f"{reg.name}[{index}]" if reg.count > 1 else reg.name


def format_value(reg, value):
    """A real value as text: exact for integers, 10 significant digits otherwise."""
    return str(value) if reg.fmt.frac_bits == 0 else format(float(value), ".10g")


@functools.lru_cache(maxsize=8)
def _words(regmap):
    return word_table(regmap)   # a map never changes once built


def describe_writes(regmap, pairs):
    """``name[index]=value`` (real units) for what a list of ``(addr, word)`` writes sets."""
    words, parts, pending = _words(regmap), [], {}
    for addr, word in pairs:
        w = words.get(addr)
        if w is None:
            parts.append(f"{addr:#x}:={word:#x}")
            continue
        key = (w.reg.name, w.index)
        raw, seen = pending.pop(key, (0, 0))
        raw, seen = raw | (word & ((1 << w.bits) - 1)) << w.lo, seen + 1
        if w.word < w.reg.words - 1:   # low words come first; the value is complete at the top
            pending[key] = (raw, seen)
        elif seen == w.reg.words:
            parts.append(f"{label(w.reg, w.index)}={format_value(w.reg, from_fixed(w.reg, raw))}")
        else:
            parts.append(f"{label(w.reg, w.index)}.w{w.word}={word:#x}")
    return " ".join(parts + [f"{name}[{i}] (low words only)" for name, i in pending])


def plan(regs, values):
    """Check a whole parameter set; return the ``{(name, index): value}`` to write.

    ``values`` maps ``name`` (every element; a list gives one value per element) or
    ``name[i]`` to a value in the register's unit (number or decimal string). Every name must
    be known and ``rw``, every value in range; derived registers are computed from the new
    (or, for inputs not given, the engine's current) values. Raises :class:`ParamError`
    listing every problem; nothing is read from the engine unless all else is fine.
    """
    problems, out = [], {}
    for key, value in values.items():
        try:
            reg, indices = resolve(regs.regmap, key)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        if reg.name in DERIVED:
            problems.append(f"{reg.name} is derived from {' and '.join(DERIVED[reg.name][0])}"
                            f" and written with them: set those instead")
            continue
        if reg.access != "rw":
            problems.append(f"cannot set {reg.name}: {_WHY[reg.access]}")
            continue
        if isinstance(value, list) and len(value) != len(indices):
            problems.append(f"{key}: {len(value)} values for {len(indices)} element(s)")
            continue
        for i, v in zip(indices, value if isinstance(value, list) else [value] * len(indices),
                        strict=True):
            try:
                to_fixed(reg, v)
            except ValueError as exc:
                problems.append(str(exc).replace(reg.name, label(reg, i), 1))
            out[reg.name, i] = v
    if problems:
        raise ParamError(problems)
    for name, (inputs, fn) in DERIVED.items():
        if name in regs.regmap and any((i, 0) in out for i in inputs):
            args = [out[i, 0] if (i, 0) in out else regs.get(i) for i in inputs]
            try:
                out[name, 0] = fn(*args)
                to_fixed(regs.regmap[name], out[name, 0])
            except ValueError as exc:
                given = ", ".join(f"{i}={format_value(regs.regmap[i], a)}"
                                  for i, a in zip(inputs, args, strict=True))
                problems.append(f"{given} gives {exc}")
    if problems:
        raise ParamError(problems)
    return out


def apply(regs, values):
    """:func:`plan`, then write everything with ONE ``set_many`` (one commit)."""
    planned = plan(regs, values)
    regs.set_many(planned)
    return planned


def load(path):
    """``{name: value}`` from a parameter file: a flat TOML table of ``name = value``."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    nested = [k for k, v in data.items() if isinstance(v, dict)]
    if nested:
        raise ValueError(f"{path}: tables are not allowed ({', '.join(nested)}); a parameter "
                         f"file is a flat list of name = value")
    return data


def _toml(reg, value):
    """Exact TOML: an integer, a float where one holds the value, else a decimal string."""
    if reg.fmt.frac_bits == 0:
        return str(value)
    if Fraction(float(value)) == value:
        return repr(float(value))
    with localcontext(prec=200):   # a fraction of 2^n has at most n decimals: exact
        return f'"{Decimal(value.numerator) / value.denominator}"'


def dumps(regmap, values):
    """TOML text for ``{(name, index): value}`` with each register's unit and range."""
    lines = ["# obcore parameters: values in each register's unit; derived registers "
             f"({', '.join(DERIVED)}) are computed when loaded.", ""]
    for reg in regmap:
        if (reg.name, 0) not in values:
            continue
        items = [_toml(reg, values[reg.name, i]) for i in range(reg.count)]
        text = items[0] if reg.count == 1 else f"[{', '.join(items)}]"
        lo, hi = reg.limits()
        lines.append(f"{reg.name} = {text}  # {reg.unit or 'no unit'}, "
                     f"{format_value(reg, lo)}..{format_value(reg, hi)}")
    return "\n".join(lines) + "\n"


def save(regs, path):
    """Write every settable (``rw``, not derived) register's current value to ``path``;
    ``regs`` is a :class:`~obcore.control.client.RemoteRegisters` (one read for all)."""
    keys = [(r.name, i) for r in regs.regmap if r.access == "rw" and r.name not in DERIVED
            for i in range(r.count)]
    values = regs.get_many(keys)
    Path(path).write_text(dumps(regs.regmap, values))
    return values
