# amaranth: UnusedElaboratable=no
"""The CSR decoder in the Amaranth simulator: reset values, commit, w1c, wo, ro, wide reads."""

import pytest
from amaranth.hdl import Value
from amaranth.sim import Simulator

from obcore.control.registers import CSRModel
from obcore.hw.csr import COMMIT_LATENCY, CSR, READ_LATENCY, CSRBus, addr_width, is_constant
from obcore.hw.registers import MAGIC, VERSION, Q, Register, RegisterMap, build_map, to_fixed

REGS = build_map(venues=2, levels=16)


def run(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def raw(ctx, port):
    """A port's raw bits as an unsigned int (arrays: element i at bits i*width)."""
    value = Value.cast(port)
    return ctx.get(value) & ((1 << len(value)) - 1)


def elem(ctx, port, reg, index=0):
    return (raw(ctx, port) >> (index * reg.fmt.width)) & ((1 << reg.fmt.width) - 1)


async def write(ctx, dut, addr, value):
    ctx.set(dut.bus.addr, addr)
    ctx.set(dut.bus.w_data, value)
    ctx.set(dut.bus.w_en, 1)
    await ctx.tick()
    ctx.set(dut.bus.w_en, 0)


async def read(ctx, dut, addr):
    ctx.set(dut.bus.addr, addr)
    ctx.set(dut.bus.r_en, 1)
    await ctx.tick()
    ctx.set(dut.bus.r_en, 0)
    for _ in range(READ_LATENCY - 1):
        assert ctx.get(dut.bus.r_valid) == 0
        await ctx.tick()
    assert ctx.get(dut.bus.r_valid) == 1
    return ctx.get(dut.bus.r_data)


def test_ports_and_bus_signature():
    dut = CSR(REGS)
    members = dut.signature.members
    assert members["bus"].signature == CSRBus(addr_width(REGS)).flip()
    assert 1 << (addr_width(REGS) - 1) < REGS.size <= 1 << addr_width(REGS)   # just wide enough
    assert "id" not in members and "version" not in members and "cycle" in members
    assert [name for name in members if name.endswith("_stb")] == \
        [f"{r.name}_stb" for r in REGS if r.access == "wo"]
    assert {"book_flags", "book_flags_set", "gamma", "q_limit", "bus_errors"} <= set(members)
    assert Value.cast(dut.q_limit).shape().signed
    assert [r.name for r in REGS if is_constant(r)] == ["id", "version", "venues", "levels"]


def test_reset_values_readable_and_live():
    dut, model = CSR(REGS), CSRModel(REGS)

    async def bench(ctx):
        assert ctx.get(dut.bus.r_valid) == 0
        for addr in range(1 << addr_width(REGS)):
            assert await read(ctx, dut, addr) == model.read(addr), f"address {addr}"
        assert await read(ctx, dut, REGS["id"].addr) == MAGIC
        assert await read(ctx, dut, REGS["version"].addr) == VERSION
        assert await read(ctx, dut, REGS["venues"].addr) == 2
        for reg in REGS:
            if reg.access == "rw":
                for i in range(reg.count):
                    assert elem(ctx, getattr(dut, reg.name), reg, i) == to_fixed(reg, reg.reset), \
                        f"{reg.name}[{i}]"
        await ctx.tick()
        assert ctx.get(dut.bus.r_valid) == 0   # r_valid is one cycle per read
    run(dut, bench)


def test_rw_staged_until_commit_then_all_live_in_one_cycle():
    dut = CSR(REGS)
    new = {"gamma": "0.25", "k": "2", "kappa_term": "0.9", "tau": "3.5", "q_limit": 17}
    old = {name: to_fixed(REGS[name], REGS[name].reset) for name in new}
    raws = {name: to_fixed(REGS[name], value) for name, value in new.items()}

    async def bench(ctx):
        def live():
            return {name: raw(ctx, getattr(dut, name)) for name in new}
        for name, value in raws.items():
            await write(ctx, dut, REGS[name].addr, value)
            assert live() == old
        for name, value in raws.items():    # reads return the staged value
            assert await read(ctx, dut, REGS[name].addr) == value
        await ctx.tick().repeat(5)
        assert live() == old
        await write(ctx, dut, REGS["commit"].addr, 0)   # bit 0 clear: a strobe, no commit
        assert ctx.get(dut.commit_stb) == 1
        assert live() == old
        ctx.set(dut.bus.addr, REGS["commit"].addr)
        ctx.set(dut.bus.w_data, 1)
        ctx.set(dut.bus.w_en, 1)
        await ctx.tick()                    # the commit's edge: cycle t ends
        ctx.set(dut.bus.w_en, 0)
        assert ctx.get(dut.commit_stb) == 1 and ctx.get(dut.commit) == 1
        for _ in range(COMMIT_LATENCY - 1):     # all old up to cycle t + COMMIT_LATENCY ...
            assert live() == old
            await ctx.tick()
        assert live() == raws               # ... then all new at once
        assert ctx.get(dut.commit_stb) == 0
        await ctx.tick()
        assert live() == raws
    run(dut, bench)


def test_commit_takes_the_staged_values_of_its_own_cycle():
    """A staged write in the cycle right after a commit (before the commit shows) is not
    part of it: it goes live with the next commit; back-to-back writes, as a host makes."""
    dut, reg = CSR(REGS), REGS["q_limit"]
    first, second = to_fixed(reg, 17), to_fixed(reg, 29)

    async def bench(ctx):
        await write(ctx, dut, reg.addr, first)
        await write(ctx, dut, REGS["commit"].addr, 1)
        await write(ctx, dut, reg.addr, second)
        await ctx.tick().repeat(COMMIT_LATENCY)
        assert raw(ctx, dut.q_limit) == first
        await write(ctx, dut, REGS["commit"].addr, 1)
        await write(ctx, dut, REGS["commit"].addr, 1)   # a second commit changes nothing
        await ctx.tick().repeat(COMMIT_LATENCY)
        assert raw(ctx, dut.q_limit) == second
    run(dut, bench)


def test_w1c_set_clear_and_set_wins():
    dut, reg = CSR(REGS), REGS["book_flags"]

    async def bench(ctx):
        set_port = Value.cast(dut.book_flags_set)
        ctx.set(set_port, 0b00101 | (0b10000 << 8))     # venue 0: bits 0, 2; venue 1: bit 4
        await ctx.tick()
        ctx.set(set_port, 0)
        await ctx.tick().repeat(3)
        assert await read(ctx, dut, reg.element(0)) == 0b00101   # sticky
        assert await read(ctx, dut, reg.element(1)) == 0b10000
        assert elem(ctx, dut.book_flags, reg, 1) == 0b10000
        await write(ctx, dut, reg.element(0), 0b00001)             # clear bit 0 only
        assert await read(ctx, dut, reg.element(0)) == 0b00100
        ctx.set(set_port, 0b00110)                                 # set bits 1, 2 ...
        await write(ctx, dut, reg.element(0), 0b11111111)          # ... while clearing all
        ctx.set(set_port, 0)
        assert elem(ctx, dut.book_flags, reg, 0) == 0b00110        # the sets survive
        assert await read(ctx, dut, reg.element(1)) == 0b10000     # the other venue kept
        await write(ctx, dut, reg.element(0), 0b110)
        assert await read(ctx, dut, reg.element(0)) == 0
        assert ctx.get(dut.bus_errors) == 0
    run(dut, bench)


def test_ro_inputs_read_live_and_writes_to_them_are_counted():
    dut = CSR(REGS)

    async def bench(ctx):
        ctx.set(Value.cast(dut.msg_count), 7 | (123456 << 32))
        ctx.set(Value.cast(dut.best_ask), 1001 << 32)
        ctx.set(dut.malformed_count, 0xFFFF_FFFF)
        assert await read(ctx, dut, REGS["msg_count"].element(1)) == 123456
        assert await read(ctx, dut, REGS["msg_count"].element(0)) == 7
        assert await read(ctx, dut, REGS["best_ask"].element(1)) == 1001
        assert await read(ctx, dut, REGS["malformed_count"].addr) == 0xFFFF_FFFF
        bad = [REGS["id"].addr, REGS["msg_count"].element(1), REGS["cycle"].addr + 1,
               REGS.size, (1 << addr_width(REGS)) - 1]
        for n, addr in enumerate(bad, 1):
            await write(ctx, dut, addr, 0xDEAD)
            assert ctx.get(dut.bus_errors) == n
        await write(ctx, dut, REGS["gamma"].addr, 5)             # good writes do not count
        await write(ctx, dut, REGS["commit"].addr, 1)
        assert ctx.get(dut.bus_errors) == len(bad)
        assert await read(ctx, dut, REGS["id"].addr) == MAGIC
        assert await read(ctx, dut, REGS.size) == 0               # unmapped reads as 0
        assert await read(ctx, dut, REGS["commit"].addr) == 0     # wo reads as 0
        assert ctx.get(dut.bus_errors) == len(bad)                # reads never count
        ctx.set(dut.bus_errors, 0xFFFF_FFFE)                      # jump near the top
        for _ in range(3):
            await write(ctx, dut, REGS.size, 0)
        assert ctx.get(dut.bus_errors) == 0xFFFF_FFFF             # it saturates
    run(dut, bench)


def test_64bit_read_is_consistent_across_a_carry():
    dut, lo = CSR(REGS), REGS["cycle"].addr

    async def bench(ctx):
        ctx.set(dut.cycle, 0x1_FFFF_FFFF)
        assert await read(ctx, dut, lo) == 0xFFFF_FFFF
        ctx.set(dut.cycle, 0x2_0000_0000)                  # carries between the two reads
        assert await read(ctx, dut, lo + 1) == 1           # the latched high word
        assert await read(ctx, dut, lo + 1) == 1           # until the low word is read again
        assert await read(ctx, dut, lo) == 0
        assert await read(ctx, dut, lo + 1) == 2
    run(dut, bench)


def test_read_and_write_in_one_cycle_reads_the_old_value():
    dut, addr = CSR(REGS), REGS["tau"].addr

    async def bench(ctx):
        ctx.set(dut.bus.addr, addr)
        ctx.set(dut.bus.w_data, 42)
        ctx.set(dut.bus.w_en, 1)
        ctx.set(dut.bus.r_en, 1)
        await ctx.tick()
        ctx.set(dut.bus.w_en, 0)
        ctx.set(dut.bus.r_en, 0)
        for _ in range(READ_LATENCY - 1):
            await ctx.tick()
        assert ctx.get(dut.bus.r_data) == to_fixed(REGS["tau"], 1)
        assert await read(ctx, dut, addr) == 42
    run(dut, bench)


WIDE = RegisterMap([
    Register("bus_errors", Q(32), "ro", "ignored writes"),
    Register("commit", Q(1), "wo", "commit"),
    Register("big", Q(40, 24), "rw", "a 64-bit parameter", reset="1.5"),
    Register("offs", Q(16, 0, signed=True), "rw", "signed array", reset=-3, count=3),
    Register("go", Q(40), "wo", "a wide command", count=2),
    Register("ev", Q(40), "w1c", "wide flags", reset=1 << 39),
    Register("tag", Q(8), "ro", "a constant", reset=9, const=True),
])


def test_generic_map_wide_signed_and_internal_bus_errors():
    dut, big, offs, go, ev = CSR(WIDE), WIDE["big"], WIDE["offs"], WIDE["go"], WIDE["ev"]
    assert "tag" not in dut.signature.members and "ev_set" in dut.signature.members

    async def bench(ctx):
        assert elem(ctx, dut.offs, offs, 2) == 0xFFFD                 # -3, signed port
        assert await read(ctx, dut, ev.addr) == 0                      # latches the top
        assert await read(ctx, dut, ev.addr + 1) == 0x80               # w1c reset value
        value = to_fixed(big, "123456.75")
        await write(ctx, dut, big.addr, value & 0xFFFF_FFFF)
        await write(ctx, dut, big.addr + 1, value >> 32)
        await write(ctx, dut, offs.element(1), 0xFFFF_8000)            # -32768; upper bits drop
        assert raw(ctx, dut.big) == to_fixed(big, "1.5")
        await write(ctx, dut, WIDE["commit"].addr, 1)
        await ctx.tick().repeat(COMMIT_LATENCY - 1)
        assert raw(ctx, dut.big) == value and elem(ctx, dut.offs, offs, 1) == 0x8000
        assert await read(ctx, dut, offs.element(1)) == 0x8000         # raw bits, no extension
        await write(ctx, dut, go.element(1), 0x89AB_CDEF)              # low word: no strobe
        assert ctx.get(dut.go_stb) == 0
        await write(ctx, dut, go.element(1) + 1, 0x67)                 # top word: strobe
        assert ctx.get(dut.go_stb) == 0b10
        assert elem(ctx, dut.go, go, 1) == 0x67_89AB_CDEF
        await ctx.tick()
        assert ctx.get(dut.go_stb) == 0
        ctx.set(dut.ev_set, 0xA5_0000_0001)
        await ctx.tick()
        ctx.set(dut.ev_set, 0)
        await write(ctx, dut, ev.addr + 1, 0x05)                        # clear bits 32, 34
        assert await read(ctx, dut, ev.addr) == 1
        assert await read(ctx, dut, ev.addr + 1) == 0xA0
        await write(ctx, dut, WIDE["tag"].addr, 1)
        await write(ctx, dut, WIDE["bus_errors"].addr, 1)
        assert await read(ctx, dut, WIDE["bus_errors"].addr) == 2      # the internal counter
        assert await read(ctx, dut, WIDE["tag"].addr) == 9
    run(dut, bench)


def test_constructor_rejects_bad_maps():
    with pytest.raises(TypeError, match="RegisterMap"):
        CSR([Register("x", Q(8), "rw", "x")])
    with pytest.raises(ValueError, match="at least one"):
        CSR(RegisterMap([]))
    with pytest.raises(ValueError, match="commit"):
        CSR(RegisterMap([Register("x", Q(8), "rw", "x")]))
    with pytest.raises(ValueError, match="'bus'"):
        CSR(RegisterMap([Register("bus", Q(8), "ro", "x")]))
    with pytest.raises(ValueError, match="'f_set' is already used"):
        CSR(RegisterMap([Register("f", Q(8), "w1c", "x"), Register("f_set", Q(8), "ro", "x")]))
    with pytest.raises(ValueError, match="bus_errors"):
        CSR(RegisterMap([Register("bus_errors", Q(16), "ro", "x")]))
    with pytest.raises(ValueError, match="addr_width"):
        CSRBus(0)
