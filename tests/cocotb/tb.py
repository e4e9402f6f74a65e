"""cocotb building blocks: clock and reset, valid/ready stream drivers and monitors."""

import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge

__all__ = ["TB", "StreamSource", "StreamSink", "idle_never", "idle_random"]


def idle_never():
    """Generator of 'insert an idle cycle now?' answers: never (full rate)."""
    while True:
        yield False


def idle_random(p, rng):
    """Idle (or back-pressure) with probability ``p`` on each cycle."""
    while True:
        yield rng.random() < p


class StreamSource:
    """Drives ``<prefix>__valid/payload`` honouring ``<prefix>__ready`` (if the port has one)."""

    def __init__(self, dut, prefix, clk, idle=None):
        self.valid = getattr(dut, f"{prefix}__valid")
        self.payload = getattr(dut, f"{prefix}__payload")
        self.ready = getattr(dut, f"{prefix}__ready", None)
        self.clk = clk
        self.idle = idle or idle_never()
        self.valid.value = 0

    async def send(self, word):
        """Present ``word`` until it is accepted; returns when the transfer happened."""
        while next(self.idle):
            self.valid.value = 0
            await RisingEdge(self.clk)
        self.valid.value = 1
        self.payload.value = word
        while True:
            await RisingEdge(self.clk)
            if self.ready is None or int(self.ready.value):
                break
        self.valid.value = 0


class StreamSink:
    """Collects ``<prefix>__payload`` words on every transfer; random back-pressure optional."""

    def __init__(self, dut, prefix, clk, backpressure=None):
        self.valid = getattr(dut, f"{prefix}__valid")
        self.payload = getattr(dut, f"{prefix}__payload")
        self.ready = getattr(dut, f"{prefix}__ready", None)
        self.clk = clk
        self.backpressure = backpressure or idle_never()
        self.received = []
        cocotb.start_soon(self._run())

    async def _run(self):
        while True:
            if self.ready is not None:
                self.ready.value = 0 if next(self.backpressure) else 1
            await RisingEdge(self.clk)
            # Read right after the edge: the values the flops sampled, as cocotbext-axi does.
            if int(self.valid.value) and (self.ready is None or int(self.ready.value)):
                self.received.append(int(self.payload.value))


class TB:
    """Common test-bench state: a 10 ns clock on ``clk`` and a synchronous ``rst``."""

    def __init__(self, dut, period_ns=10):
        self.dut = dut
        self.clk = dut.clk
        self.rng = random.Random(cocotb.RANDOM_SEED)
        cocotb.start_soon(Clock(dut.clk, period_ns, unit="ns").start())

    async def reset(self, cycles=2, at_falling=False):
        """``rst`` high for ``cycles`` clock edges, then low. Returns after the first edge out
        of reset; with ``at_falling``, at the falling edge where the reset ends, before any
        edge out of it, for a bench whose model starts from the reset state at its cycle 0."""
        self.dut.rst.value = 1
        await ClockCycles(self.clk, cycles)
        if at_falling:
            await FallingEdge(self.clk)
        self.dut.rst.value = 0
        if not at_falling:
            await RisingEdge(self.clk)

    async def cycles(self, n):
        await ClockCycles(self.clk, n)
