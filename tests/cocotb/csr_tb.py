"""cocotb bench for the generated CSR: random bus traffic checked against CSRModel every cycle.

Inputs change at the falling edge and outputs are sampled at the next falling edge, so the
checks do not depend on when the simulator updates flops relative to a rising-edge trigger.
"""

from fractions import Fraction

import cocotb
from cocotb.triggers import FallingEdge
from tb import TB

from obcore.control.registers import CSRModel
from obcore.hw.csr import BUS_ERRORS, COMMIT_LATENCY, READ_LATENCY, addr_width, is_constant
from obcore.hw.registers import build_map, to_fixed

REGS = build_map()          # must match tests/cocotb/test_csr.py
CYCLES = 20_000
MASK = (1 << 32) - 1


def _vec(dut, name):
    value = getattr(dut, name).value      # a LogicArray, or a Logic for 1-bit ports
    return value.to_unsigned() if hasattr(value, "to_unsigned") else int(value)


def _pack(reg, values):
    return sum(v << (i * reg.fmt.width) for i, v in enumerate(values))


class CSRBench(TB):
    """A bus driver, the gateware-side stimulus and the model, stepped one cycle at a time."""

    def __init__(self, dut):
        super().__init__(dut)
        self.model = CSRModel(REGS)
        self.inputs = [r for r in REGS if r.access == "ro" and not is_constant(r)
                       and r.name != BUS_ERRORS]
        self.rw = [r for r in REGS if r.access == "rw"]
        self.w1c = [r for r in REGS if r.access == "w1c"]
        self.wo = [r for r in REGS if r.access == "wo"]
        self.pending_read = None                    # the read whose word is due now
        self.in_flight = [None] * (READ_LATENCY - 1)  # reads issued, words not out yet
        # The live values the rw ports show: the model's, COMMIT_LATENCY - 1 cycles late.
        self.live_due = [dict(self.model.live) for _ in range(COMMIT_LATENCY)]
        self.strobed = 0
        self.checks = {"reads": 0, "writes": 0, "commits": 0, "flag_sets": 0, "errors": 0}
        bus = "bus__"
        for name in ("w_en", "r_en", "addr", "w_data"):
            getattr(dut, bus + name).value = 0
        for reg in self.inputs + self.w1c:
            getattr(dut, reg.name + ("_set" if reg.access == "w1c" else "")).value = 0

    async def start(self):
        await self.reset()
        await FallingEdge(self.clk)

    def issue(self, read):
        """Issue ``read`` ((address, model word) or None) this cycle; the read issued
        ``READ_LATENCY`` - 1 cycles ago is the one checked at the next falling edge."""
        self.in_flight.append(read)
        self.pending_read = self.in_flight.pop(0)
        self.live_due.append(dict(self.model.live))
        self.live_due.pop(0)

    def check(self):
        """Compare every output with the model (at a falling edge)."""
        dut, model = self.dut, self.model
        if self.pending_read is None:
            assert int(dut.bus__r_valid.value) == 0
        else:
            addr, want = self.pending_read
            assert int(dut.bus__r_valid.value) == 1
            got = _vec(dut, "bus__r_data")
            assert got == want, f"read {addr:#x}: got {got:#x}, model says {want:#x}"
        for reg in self.rw:
            want = _pack(reg, [self.live_due[0][reg.name, i] for i in range(reg.count)])
            assert _vec(dut, reg.name) == want, f"live {reg.name}"
        for reg in self.w1c:
            want = _pack(reg, [model.value[reg.name, i] for i in range(reg.count)])
            assert _vec(dut, reg.name) == want, f"sticky {reg.name}"
        new = model.strobes[self.strobed:]
        self.strobed = len(model.strobes)
        for reg in self.wo:
            stb = sum(1 << i for name, i, _ in new if name == reg.name)
            assert _vec(dut, reg.name + "_stb") == stb, f"{reg.name}_stb"
            want = _pack(reg, [model.value[reg.name, i] for i in range(reg.count)])
            assert _vec(dut, reg.name) == want, f"wo data {reg.name}"
        assert _vec(dut, "bus_errors") == model.bus_errors

    def random_value(self, reg):
        """A legal raw value from a random real in the register's range, via to_fixed."""
        lo, hi = reg.limits()
        pick = self.rng.random()
        real = lo if pick < 0.1 else hi if pick < 0.2 else \
            lo + (hi - lo) * Fraction(self.rng.randrange(1 << 24), 1 << 24)
        return to_fixed(reg, real)

    def stimulus(self):
        """Choose and drive this cycle's inputs; tell the model in hardware order."""
        dut, model, rng = self.dut, self.model, self.rng
        for reg in self.inputs:                     # ro inputs: the model sees them first
            if rng.random() < 0.2:
                for i in range(reg.count):
                    value = rng.getrandbits(reg.fmt.width)
                    if reg.name == "cycle" and rng.random() < 0.5:
                        value = (rng.randrange(4) << 32) | (MASK - rng.randrange(3))
                    model.drive(reg.name, value, i)
                packed = [model.value[reg.name, i] for i in range(reg.count)]
                getattr(dut, reg.name).value = _pack(reg, packed)
        dut.bus__w_en.value = 0
        dut.bus__r_en.value = 0
        read = None
        op = rng.random()
        if op < 0.35:                               # read any address, mapped or not
            addr = rng.randrange(1 << addr_width(REGS))
            if rng.random() < 0.3:
                addr = REGS["cycle"].addr + rng.randrange(2)
            dut.bus__r_en.value, dut.bus__addr.value = 1, addr
            read = (addr, model.read(addr))
            self.checks["reads"] += 1
        elif op < 0.85:
            addr, value = self.random_write()
            dut.bus__w_en.value, dut.bus__addr.value, dut.bus__w_data.value = 1, addr, value
            errors = model.bus_errors
            model.write(addr, value)
            self.checks["writes"] += 1
            self.checks["errors"] += model.bus_errors - errors
        for reg in self.w1c:                        # sets land after this cycle's clear
            bits = [rng.getrandbits(reg.fmt.width) if rng.random() < 0.1 else 0
                    for _ in range(reg.count)]
            for i, b in enumerate(bits):
                model.raise_flags(reg.name, b, i)
            self.checks["flag_sets"] += any(bits)
            getattr(dut, reg.name + "_set").value = _pack(reg, bits)
        self.issue(read)

    def random_write(self):
        rng, pick = self.rng, self.rng.random()
        if pick < 0.45:                             # a legal parameter value, word by word
            reg = rng.choice(self.rw)
            index, raw = rng.randrange(reg.count), self.random_value(reg)
            word = rng.randrange(reg.words)
            return reg.element(index) + word, (raw >> (32 * word)) & MASK
        if pick < 0.6:
            self.checks["commits"] += 1
            return REGS["commit"].addr, rng.choice([1, 1, 1, 0, MASK, 2])
        if pick < 0.75:                             # clear flags
            reg = rng.choice(self.w1c)
            return reg.element(rng.randrange(reg.count)), rng.getrandbits(32)
        return rng.randrange(1 << addr_width(REGS)), rng.getrandbits(32)   # anything at all

    async def step(self):
        self.stimulus()
        await FallingEdge(self.clk)
        self.check()


@cocotb.test()
async def reset_values(dut):
    """Every address reads as the model's reset state; outputs are at their reset values."""
    bench = CSRBench(dut)
    await bench.start()
    bench.check()
    for addr in range(1 << addr_width(REGS)):
        dut.bus__r_en.value, dut.bus__addr.value = 1, addr
        bench.issue((addr, bench.model.read(addr)))
        await FallingEdge(bench.clk)
        bench.check()
    dut.bus__r_en.value = 0
    for _ in range(READ_LATENCY - 1):                # the last words on their way out
        bench.issue(None)
        await FallingEdge(bench.clk)
        bench.check()


@cocotb.test()
async def random_traffic(dut):
    """Random reads, legal and illegal writes, commits, flag sets and ro input changes."""
    bench = CSRBench(dut)
    dut._log.info(f"test seed {cocotb.RANDOM_SEED} (from COCOTB_RANDOM_SEED and the test name)")
    await bench.start()
    bench.check()
    for _ in range(CYCLES):
        await bench.step()
    dut._log.info(f"checked {CYCLES} cycles: {bench.checks}")
    assert bench.checks["commits"] > 100 and bench.checks["errors"] > 100
