"""Host register access: conversions at the range ends, clear refusals, all-or-nothing writes."""

import queue
import random
import re
import threading
from decimal import Decimal
from fractions import Fraction

import pytest
from amaranth.hdl import Value
from amaranth.sim import Simulator

from obcore.control.registers import CSRModel, IdentityError, Registers
from obcore.hw.csr import CSR, READ_LATENCY
from obcore.hw.registers import MAGIC, Q, Register, RegisterMap, build_map, from_fixed, to_fixed

REGS = build_map(venues=2, levels=16)
WRITABLE = [r for r in REGS if r.access == "rw"]


class Recording:
    """A transport that logs every access and forwards it to a CSR model."""

    def __init__(self, regmap=REGS):
        self.model = CSRModel(regmap)
        self.log = []

    def read(self, addr):
        self.log.append(("r", addr))
        return self.model.read(addr)

    def write(self, addr, value):
        self.log.append(("w", addr, value))
        self.model.write(addr, value)

    def writes(self):
        return [entry for entry in self.log if entry[0] == "w"]


def host(regmap=REGS):
    bus = Recording(regmap)
    return Registers(bus, regmap), bus


def _step(reg):
    return Fraction(1, 1 << reg.fmt.frac_bits)


@pytest.mark.parametrize("reg", list(REGS), ids=lambda r: r.name)
def test_range_ends_round_trip(reg):
    for end in reg.limits():
        raw = to_fixed(reg, end)
        assert 0 <= raw < (1 << reg.fmt.width)
        if (end / _step(reg)).denominator == 1:           # representable: exact
            assert from_fixed(reg, raw) == end
        else:                                             # nearest step, still in range
            assert abs(from_fixed(reg, raw) - end) <= _step(reg) / 2


@pytest.mark.parametrize("reg", WRITABLE, ids=lambda r: r.name)
def test_set_and_get_at_range_ends(reg):
    regs, bus = host()
    for end in reg.limits():
        for index in range(reg.count):
            regs.set(reg.name, end, index)
            assert regs.get(reg.name, index) == end
            assert bus.model.live_value(reg.name, index) == end
    assert isinstance(regs.get(reg.name), int if reg.fmt.frac_bits == 0 else Fraction)


def test_random_values_round_trip_within_half_a_step():
    seed = random.randrange(1 << 30)
    print(f"seed={seed}")
    rng = random.Random(seed)
    regs, _ = host()
    for _ in range(500):
        reg = rng.choice(WRITABLE)
        lo, hi = reg.limits()
        value = lo + (hi - lo) * Fraction(rng.randrange(10**9), 10**9)
        regs.set(reg.name, value)
        assert abs(regs.get(reg.name) - value) <= _step(reg) / 2, (seed, reg.name, value)


def test_host_encoding_is_to_fixed():
    """Registers encodes ints, Fractions and floats in integer arithmetic: the same raw bits
    as hw.registers.to_fixed (the reference) for values in range, on the ties between two
    steps, at the ends and just beyond them (where both refuse with the same message)."""
    seed = random.randrange(1 << 30)
    print(f"seed={seed}")
    rng = random.Random(seed)
    regs, bus = host()
    for _ in range(3000):
        reg = rng.choice(WRITABLE)
        lo, hi = reg.limits()
        step = _step(reg)
        value = rng.choice([
            lo + (hi - lo) * Fraction(rng.randrange(10**9), 10**9),
            lo + step * rng.randrange(int((hi - lo) / step) + 1) + step / 2,   # a tie
            rng.choice([lo, hi, lo - step / 4, hi + step / 4, lo - 1, hi + 1])])
        for v in {value, float(value), int(value)}:
            try:
                want = to_fixed(reg, v)
            except ValueError as exc:
                with pytest.raises(ValueError, match=re.escape(str(exc))):
                    regs.set(reg.name, v)
                continue
            bus.log.clear()
            regs.set(reg.name, v)
            assert bus.writes()[0] == ("w", reg.element(0), want & 0xFFFF_FFFF), (seed, v)


@pytest.mark.parametrize("reg", WRITABLE, ids=lambda r: r.name)
def test_out_of_range_is_refused_before_any_write(reg):
    lo, hi = reg.limits()
    regs, bus = host()
    for bad in (hi + _step(reg), lo - _step(reg)):
        with pytest.raises(ValueError, match=rf"^{reg.name} = .* out of range: allowed "
                                             + re.escape(f"{float(lo):.10g}..{float(hi):.10g}")):
            regs.set(reg.name, bad)
    assert bus.log == []


@pytest.mark.parametrize("bad", ["abc", "", None, True, False, "nan", "inf", float("nan"),
                                 [1], object(), b"1"])
def test_wrong_types_are_refused_clearly(bad):
    regs, bus = host()
    with pytest.raises(ValueError, match=r"^gamma: .*; expected a number in .*1/ticks"):
        regs.set("gamma", bad)
    with pytest.raises(ValueError, match=r"^q_limit: "):
        regs.set_many({"gamma": "0.2", "q_limit": bad})
    assert bus.log == []


def test_accepted_number_types():
    regs, _ = host()
    for value in (2, Fraction(5, 2), Decimal("2.5"), 2.5, "2.5", " 2.5 "):
        regs.set("tau", value)
        assert regs.get("tau") == Fraction(value if not isinstance(value, str) else "2.5")


def test_set_many_is_all_or_nothing():
    regs, bus = host()
    before = dict(bus.model.staged), dict(bus.model.live)
    with pytest.raises(ValueError, match="k = 300 is out of range"):
        regs.set_many({"gamma": "0.5", "tau": 2, "k": 300, "q_limit": 10})
    with pytest.raises(ValueError, match="cannot set best_bid: .*read-only"):
        regs.set_many({"gamma": "0.5", ("best_bid", 1): 10})
    with pytest.raises(ValueError, match="gamma: index must be 0..0, not 1"):
        regs.set_many({"tau": "0.5", ("gamma", 1): 1})
    with pytest.raises(KeyError, match="unknown register 'gama'"):
        regs.set_many({"gama": "0.5"})
    assert bus.log == [] and (bus.model.staged, bus.model.live) == before

    regs.set_many({"gamma": "0.5", "tau": 2, "q_limit": 10})
    commit = REGS["commit"].addr
    assert bus.writes()[-1] == ("w", commit, 1)                    # one commit, last
    assert [w for w in bus.writes() if w[1] == commit] == [("w", commit, 1)]
    assert {n: bus.model.live_value(n) for n in ("gamma", "tau", "q_limit")} == \
        {"gamma": Fraction(1, 2), "tau": 2, "q_limit": 10}


def test_read_only_and_other_refusals():
    regs, bus = host()
    for name in ("id", "cycle", "msg_count", "bus_errors" if "bus_errors" in REGS else "id"):
        with pytest.raises(ValueError, match=rf"cannot set {name}: .*read-only \(ro\)"):
            regs.set(name, 1)
    with pytest.raises(ValueError, match="book_flags: .*clear_flags"):
        regs.set("book_flags", 1)
    with pytest.raises(ValueError, match="commit: .*command strobe"):
        regs.set_many({"commit": 1})
    with pytest.raises(ValueError, match="gamma: index must be 0..0, not True"):
        regs.set("gamma", 1, index=True)
    with pytest.raises(ValueError, match="best_bid: index must be 0..1, not 2"):
        regs.get("best_bid", 2)
    with pytest.raises(ValueError, match="write-only"):
        regs.get("commit")
    with pytest.raises(TypeError, match="dict"):
        regs.set_many([("gamma", 1)])
    with pytest.raises(TypeError, match="read.*write"):
        Registers(object())
    assert bus.log == []


def test_clear_flags():
    regs, bus = host()
    bus.model.raise_flags("book_flags", 0b10110, 1)
    assert regs.get("book_flags", 1) == 0b10110 and regs.get("book_flags", 0) == 0
    regs.clear_flags("book_flags", 0b00110, 1)
    assert regs.get("book_flags", 1) == 0b10000
    for bad in (-1, 256, True, "1", 1.0):
        with pytest.raises(ValueError, match=r"book_flags: mask must be an integer 0..0xff"):
            regs.clear_flags("book_flags", bad)
    with pytest.raises(ValueError, match="gamma is rw, not w1c"):
        regs.clear_flags("gamma", 1)


def test_wide_register_reads_low_word_first():
    regs, bus = host()
    bus.model.drive("cycle", 0x0123_4567_89AB_CDEF)
    bus.log.clear()
    assert regs.get("cycle") == 0x0123_4567_89AB_CDEF
    assert bus.log == [("r", REGS["cycle"].addr), ("r", REGS["cycle"].addr + 1)]


def test_wide_writes_low_word_first_and_strobe_on_top_word():
    wide = RegisterMap([Register("go", Q(40, 8), "wo", "wide command", hi=1 << 39),
                        Register("commit", Q(1), "wo", "commit")])
    regs, bus = host(wide)
    value = Fraction(0x12_3456_789A) + Fraction(1, 2)
    regs.set("go", value)
    raw = to_fixed(wide["go"], value)
    assert bus.writes() == [("w", 0, raw & 0xFFFF_FFFF), ("w", 1, raw >> 32)]
    assert bus.model.strobes == [("go", 0, raw)]


def test_check_identity():
    regs, bus = host()
    regs.check_identity()
    with pytest.raises(IdentityError, match="engine was built with venues=2 but this register "
                                            "map has venues=3: use build_map"):
        Registers(bus, build_map(venues=3)).check_identity()
    with pytest.raises(IdentityError, match="levels=16 .* levels=8"):
        Registers(bus, build_map(levels=8)).check_identity()

    class Answers:
        def __init__(self, words):
            self.words = words

        def read(self, addr):
            return self.words.get(addr, 0)

        def write(self, addr, value):
            raise AssertionError("check_identity must not write")

    with pytest.raises(IdentityError, match="no obcore engine on this bus: id reads "
                                            "0xffffffff, expected 0x0bc04e00"):
        Registers(Answers({0: 0xFFFF_FFFF})).check_identity()
    with pytest.raises(IdentityError, match="version mismatch: the engine has version 7"):
        Registers(Answers({0: MAGIC, 1: 7})).check_identity()


def test_host_class_against_the_simulated_csr():
    """Registers over a bridge into the Amaranth simulation of the real CSR."""
    dut = CSR(REGS)
    requests, replies, out = queue.Queue(), queue.Queue(), {}

    class Bridge:
        def read(self, addr):
            requests.put(("r", addr, 0))
            return replies.get(timeout=60)

        def write(self, addr, value):
            requests.put(("w", addr, value))
            replies.get(timeout=60)

    def controller():
        try:
            regs = Registers(Bridge(), REGS)
            regs.check_identity()
            regs.set_many({"gamma": "0.5", "k": 3, "q_limit": 250, "tau": "0.125"})
            out["cycle"] = regs.get("cycle")
            out["gamma"] = regs.get("gamma")
            with pytest.raises(ValueError, match="gamma"):
                regs.set_many({"k": 2, "gamma": 0})
            regs.clear_flags("book_flags", 0b1, index=1)
            out["flags"] = regs.get("book_flags", 1)
        except BaseException as exc:   # handed to the main thread, re-raised there
            out["error"] = exc
        finally:
            requests.put(None)

    async def bench(ctx):
        tick, changes, low_reads = 0, {}, []
        names = ("gamma", "k", "q_limit", "tau")
        last = {n: ctx.get(getattr(dut, n)) for n in names}
        ctx.set(Value.cast(dut.book_flags_set), 0b11 << 8)
        thread = threading.Thread(target=controller)
        thread.start()
        while (request := requests.get(timeout=60)) is not None:
            kind, addr, value = request
            ctx.set(dut.cycle, 0xFFFF_FFFF + tick * 0x8000_0001)   # carries on most ticks
            if kind == "r" and addr == REGS["cycle"].addr:
                low_reads.append(0xFFFF_FFFF + tick * 0x8000_0001)
            ctx.set(dut.bus.addr, addr)
            ctx.set(dut.bus.w_data, value)
            ctx.set(dut.bus.w_en if kind == "w" else dut.bus.r_en, 1)
            await ctx.tick()
            ctx.set(Value.cast(dut.book_flags_set), 0)
            ctx.set(dut.bus.w_en, 0)
            ctx.set(dut.bus.r_en, 0)
            for _ in range(READ_LATENCY - 1 if kind == "r" else 0):    # the word's way out
                await ctx.tick()
            tick += 1
            for n in names:
                if ctx.get(getattr(dut, n)) != last[n]:
                    changes.setdefault(n, []).append(tick)
                    last[n] = ctx.get(getattr(dut, n))
            replies.put(ctx.get(dut.bus.r_data) if kind == "r" else None)
        thread.join()
        out["changes"], out["low_reads"] = changes, low_reads

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    if "error" in out:
        raise out["error"]
    assert out["gamma"] == Fraction(1, 2) and out["flags"] == 0b10
    assert out["cycle"] == out["low_reads"][0]             # consistent across the carry
    changes = out["changes"]                               # tick numbers of live changes
    assert len(changes) == 4 and len({tuple(t) for t in changes.values()}) == 1, changes
