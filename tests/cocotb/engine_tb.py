"""cocotb driver for the whole engine (hw/top.py): feed, register bus and order stream, a cycle
at a time, with parameters written through the controller's own encoder."""

from cocotb.triggers import FallingEdge
from tb import TB

from obcore.control.registers import Registers
from obcore.hw.csr import READ_LATENCY
from obcore.hw.layouts import FeedKind, OrderKind, decode_order, encode_feed
from obcore.hw.registers import build_map

__all__ = ["VENUES", "LEVELS", "CAPACITY", "REGS", "BIDS", "ASKS", "SIZE", "EngineBench"]

VENUES, LEVELS, CAPACITY = 2, 4, 8          # must match tests/cocotb/test_engine_guard.py
REGS = build_map(VENUES, LEVELS)
BIDS, ASKS, SIZE = (999, 998, 997, 996), (1001, 1002, 1003, 1004), 200   # snapshot book


class _Recorder:
    """A bus for ``Registers`` that only records the writes the encoder makes."""

    def __init__(self):
        self.writes = []

    def read(self, addr):
        raise RuntimeError("reads go through EngineBench.read")

    def write(self, addr, word):
        self.writes.append((addr, word))


class EngineBench(TB):
    """Drives the feed and the register bus one cycle at a time; records every order."""

    def __init__(self, dut):
        super().__init__(dut)
        self.n = 0
        self.orders = []                     # (cycle, decoded order)
        self.seq = [0] * VENUES
        self.rec = _Recorder()
        self.regs = Registers(self.rec, REGS)
        self._last = {}

    def _set(self, name, value):
        if self._last.get(name) != value:
            getattr(self.dut, name).value = value
            self._last[name] = value

    async def start(self):
        for name in ("feed__valid", "bus__w_en", "bus__r_en", "bus__addr", "bus__w_data"):
            self._set(name, 0)
        self._set("orders__ready", 1)
        await self.reset()
        await FallingEdge(self.clk)

    async def step(self, feed=None, write=None, read=None):
        """One cycle: present ``feed`` (a word), a bus ``write`` (addr, word) or a ``read``
        (addr). Returns the cycle number the inputs were presented in."""
        now = self.n
        self._set("feed__valid", int(feed is not None))
        if feed is not None:
            self._set("feed__payload", feed)
            assert int(self.dut.feed__ready.value), "the feed is always ready"
        self._set("bus__w_en", int(write is not None))
        self._set("bus__r_en", int(read is not None))
        if write is not None:
            self._set("bus__addr", write[0])
            self._set("bus__w_data", write[1])
        elif read is not None:
            self._set("bus__addr", read)
        await FallingEdge(self.clk)
        self.n += 1
        if int(self.dut.orders__valid.value):
            self.orders.append((self.n, decode_order(int(self.dut.orders__payload.value))))
        return now

    async def idle(self, cycles):
        for _ in range(cycles):
            await self.step()

    async def flush(self):
        """Replay the recorded bus writes; returns the cycle of the last one."""
        last = None
        for addr, word in self.rec.writes:
            last = await self.step(write=(addr, word))
        self.rec.writes.clear()
        return last

    async def set_many(self, values):
        self.regs.set_many(values)
        return await self.flush()

    async def command(self, name):
        self.regs.set(name, 1)
        return await self.flush()

    async def clear_flags(self, name, mask):
        self.regs.clear_flags(name, mask)
        return await self.flush()

    async def read(self, name, index=0):
        """A register's raw value, word by word (the low word first), as the host reads."""
        reg = REGS[name]
        raw = 0
        for w in range(reg.words):
            await self.step(read=reg.element(index) + w)
            for _ in range(READ_LATENCY - 1):
                await self.step()
            assert int(self.dut.bus__r_valid.value)
            raw |= int(self.dut.bus__r_data.value) << (32 * w)
        return raw

    async def msg(self, kind, venue=0, side=0, price=0, size=0, seq=None):
        """Send one feed message (sequenced kinds get the venue's next seq unless given)."""
        if kind not in (FeedKind.FILL, FeedKind.TICK) and seq is None:
            seq = self.seq[venue]
        if seq is not None and kind not in (FeedKind.FILL, FeedKind.TICK):
            self.seq[venue] = seq + 1
        return await self.step(feed=encode_feed(kind, venue=venue if kind != FeedKind.TICK
                                                else 0, side=side, seq=seq or 0,
                                                price=price, size=size))

    async def level(self, venue, side, price, size):
        kind = FeedKind.LEVEL_SET if size else FeedKind.LEVEL_DELETE
        return await self.msg(kind, venue, side, price, size)

    async def snapshot(self, venue):
        await self.msg(FeedKind.SNAPSHOT_START, venue)
        for side, prices in ((0, BIDS), (1, ASKS)):
            for p in prices:
                await self.level(venue, side, p, SIZE)
        return await self.msg(FeedKind.SNAPSHOT_END, venue)

    def orders_since(self, cycle):
        return [(n, o) for n, o in self.orders if n >= cycle]

    async def wait_order(self, kind, after, limit=200):
        """The cycle of the first order of ``kind`` in or after cycle ``after``."""
        for _ in range(limit):
            hit = [n for n, o in self.orders_since(after) if o["kind"] == kind]
            if hit:
                return hit[0]
            await self.step()
        raise AssertionError(f"no {OrderKind(kind).name} within {limit} cycles of {after}")
