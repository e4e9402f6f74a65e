"""The UART and the bridge's frame codec in the Amaranth simulator."""

import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from obcore.control.board import FrameDecoder
from obcore.hw.boards.bridge import (
    BRIDGE_BASE,
    BRIDGE_ID,
    BRIDGE_REGS,
    ESC,
    SOF,
    Bridge,
    FrameReceiver,
    FrameSender,
    Op,
    crc16,
    encode_frame,
)
from obcore.hw.boards.uart import UARTRx, UARTTx, divisor_for
from obcore.hw.layouts import OrderKind, encode_order


def simulate(dut, *benches, processes=()):
    """Run ``benches`` to their end, with ``processes`` (monitors) running beside them."""
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for bench in benches:
        sim.add_testbench(bench)
    for process in processes:
        sim.add_testbench(process, background=True)
    sim.run()


class Loopback(wiring.Component):
    """A transmitter wired to a receiver, as over a cable."""

    def __init__(self, divisor):
        self.tx, self.rx = UARTTx(divisor), UARTRx(divisor)
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        m.submodules.tx, m.submodules.rx = self.tx, self.rx
        m.d.comb += self.rx.rx.eq(self.tx.tx)
        return m


@pytest.mark.parametrize("divisor", [4, 7])
def test_uart_loopback(divisor):
    dut = Loopback(divisor)
    data = [0x00, 0xFF, 0x55, 0xA5, SOF, ESC, 0x01, 0x80]
    got = []

    async def send(ctx):
        for byte in data:
            ctx.set(dut.tx.bytes.payload, byte)
            ctx.set(dut.tx.bytes.valid, 1)
            await ctx.tick().until(dut.tx.bytes.ready)
            ctx.set(dut.tx.bytes.valid, 0)

    async def receive(ctx):
        ctx.set(dut.rx.bytes.ready, 1)
        while len(got) < len(data):
            await ctx.tick()
            if ctx.get(dut.rx.bytes.valid):
                got.append(ctx.get(dut.rx.bytes.payload))
            assert not ctx.get(dut.rx.overrun) and not ctx.get(dut.rx.frame_error)

    simulate(dut, send, receive)
    assert got == data


async def drive_byte(ctx, pin, byte, divisor, stop=1):
    for level in [0, *((byte >> i) & 1 for i in range(8)), stop]:
        ctx.set(pin, level)
        await ctx.tick().repeat(divisor)


def test_uart_rx_frame_error_and_overrun():
    divisor = 5
    dut = UARTRx(divisor)
    events = {"frame_error": 0, "overrun": 0}

    async def watch(ctx):
        async for _, _, fe, ov in ctx.tick().sample(dut.frame_error, dut.overrun):
            events["frame_error"] += fe
            events["overrun"] += ov

    async def bench(ctx):
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(10)
        await drive_byte(ctx, dut.rx, 0x3C, divisor, stop=0)   # a zero stop bit
        ctx.set(dut.rx, 0)                                     # and the line held low
        await ctx.tick().repeat(40)
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(10)
        assert events == {"frame_error": 1, "overrun": 0} and not ctx.get(dut.bytes.valid)
        # Nobody takes the bytes: the first is held, the second overruns.
        await drive_byte(ctx, dut.rx, 0x12, divisor)
        await drive_byte(ctx, dut.rx, 0x34, divisor)
        await ctx.tick().repeat(divisor)
        assert events["overrun"] == 1
        assert ctx.get(dut.bytes.valid) and ctx.get(dut.bytes.payload) == 0x12

    simulate(dut, bench, processes=[watch])


def test_divisor_for():
    assert divisor_for(100_000_000, 3_000_000) == 33
    assert divisor_for(12_000_000, 1_000_000) == 12
    with pytest.raises(ValueError, match="at least 4 clocks"):
        divisor_for(12_000_000, 4_000_000)
    with pytest.raises(ValueError, match="off"):
        divisor_for(25_000_000, 4_000_000)     # 6.25 clocks per bit: 4% off
    with pytest.raises(ValueError, match="positive integer"):
        divisor_for(12_000_000, 0)


def test_crc_and_stuffing():
    assert crc16(b"123456789") == 0x29B1            # CRC-16/CCITT-FALSE check value
    frame = encode_frame(Op.WRITE, SOF, bytes([ESC, 1, 2, 3, 4, 5]))
    assert frame[0] == SOF and SOF not in frame[1:]
    assert frame[1:6] == bytes([Op.WRITE, ESC, SOF ^ 0x20, 6, ESC])


class Codec(wiring.Component):
    """A frame sender feeding a frame receiver byte by byte."""

    def __init__(self):
        self.snd, self.rcv = FrameSender(), FrameReceiver()
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        m.submodules.snd, m.submodules.rcv = self.snd, self.rcv
        wiring.connect(m, self.snd.bytes, self.rcv.bytes)
        return m


def test_sender_matches_encoder_and_receiver_checks():
    dut = Codec()
    payload = bytes([SOF, ESC, 0x20, 0x5E, 0x00, 0xFF, 0x7F, 0x11, 9, 8, 7, 6, 5, 4, 3, 2])
    wire = []

    async def tap(ctx):
        async for _, _, valid, ready, byte in ctx.tick().sample(
                dut.snd.bytes.valid, dut.snd.bytes.ready, dut.snd.bytes.payload):
            if valid and ready:
                wire.append(byte)

    async def bench(ctx):
        ctx.set(dut.snd.payload, int.from_bytes(payload, "little"))
        ctx.set(dut.snd.op, Op.FEED)
        ctx.set(dut.snd.tag, ESC)
        ctx.set(dut.snd.length, len(payload))
        ctx.set(dut.snd.start, 1)
        await ctx.tick()
        ctx.set(dut.snd.start, 0)
        await ctx.tick().until(dut.rcv.valid)
        assert ctx.get(dut.rcv.op) == Op.FEED and ctx.get(dut.rcv.tag) == ESC
        assert ctx.get(dut.rcv.length) == len(payload)
        assert ctx.get(dut.rcv.payload) == int.from_bytes(payload, "little")
        await ctx.tick().until(~dut.snd.busy)

    simulate(dut, bench, processes=[tap])
    assert bytes(wire) == encode_frame(Op.FEED, ESC, payload)


def test_receiver_rejects_and_resyncs():
    dut = FrameReceiver()
    good = encode_frame(Op.READ, 7, b"\x01\x00")
    bad_crc = bytearray(good)
    bad_crc[-1] ^= 1
    stream = (b"\x00\x13" + good[:5] + bytes(bad_crc) + encode_frame(Op.FEED, 1, bytes(17))
              + bytes([SOF]) + good)
    counts = dict.fromkeys(("good", "crc_error", "truncated", "oversize"), 0)

    async def watch(ctx):
        names = list(counts)
        async for _, _, *values in ctx.tick().sample(*(getattr(dut, n) for n in names)):
            for name, value in zip(names, values, strict=True):
                counts[name] += value

    async def bench(ctx):
        for byte in stream:
            ctx.set(dut.bytes.payload, byte)
            ctx.set(dut.bytes.valid, 1)
            await ctx.tick().until(dut.bytes.ready)
        ctx.set(dut.bytes.valid, 0)
        await ctx.tick()
        assert ctx.get(dut.valid) and ctx.get(dut.tag) == 7 and ctx.get(dut.payload) & 0xFFFF == 1

    simulate(dut, bench, processes=[watch])
    # good[:5] cut by bad_crc's SOF; the FEED frame is oversize; a lone SOF then the good frame.
    assert counts == {"good": 1, "crc_error": 1, "truncated": 1, "oversize": 1}


async def uart_decode(ctx, pin, divisor, out):
    """Collect the bytes sent on ``pin`` into ``out``, forever (a sampling monitor)."""
    count, byte = None, 0     # count: cycles since the start edge; None while idle
    async for _, _, level in ctx.tick().sample(pin):
        if count is None:
            count = None if level else 0
            continue
        count += 1
        step, left = divmod(count - divisor // 2, divisor)   # step 0: the start bit's middle
        if count > divisor // 2 and left == 0:
            if step <= 8:
                byte |= level << (step - 1)
            else:
                assert level == 1, "stop bit"
                out.append(byte)
                count, byte = None, 0


def test_bridge_sends_orders_between_requests():
    divisor = 4
    dut = Bridge(4, divisor, map_words=9)
    orders = [encode_order(OrderKind.NEW, venue=1, side=1, slot=2, seq=7, price=101, size=5),
              encode_order(OrderKind.CANCEL_ALL, seq=8)]
    wire = bytearray()
    frames = []

    async def engine_orders(ctx):
        for word in orders:
            ctx.set(dut.orders.payload.as_value(), word)
            ctx.set(dut.orders.valid, 1)
            await ctx.tick().until(dut.orders.ready)
            ctx.set(dut.orders.valid, 0)

    async def host(ctx):
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(4)
        addr = BRIDGE_BASE + BRIDGE_REGS.index("map_words")
        for byte in encode_frame(Op.READ, 0x5A, addr.to_bytes(2, "little")) + encode_frame(
                Op.READ, 0x5B, BRIDGE_BASE.to_bytes(2, "little")):
            await drive_byte(ctx, dut.rx, byte, divisor)
        decoder = FrameDecoder()
        for _ in range(100):   # 10,000 cycles: the four frames need about 3,000
            await ctx.tick().repeat(100)
            frames.extend(decoder.feed(bytes(wire)))
            wire.clear()

    async def listen(ctx):
        await uart_decode(ctx, dut.tx, divisor, wire)

    simulate(dut, host, engine_orders, processes=[listen])
    got = [f for f in frames if f[0] == Op.ORDER]
    assert [(op, tag, payload[:16]) for op, tag, payload in got] == [
        (Op.ORDER, i, word.to_bytes(16, "little")) for i, word in enumerate(orders)]
    stamps = [int.from_bytes(payload[16:], "little") for _, _, payload in got]
    assert len(got[0][2]) == 24 and stamps[0] < stamps[1]   # the first was taken at cycle 0
    assert [f for f in frames if f[0] == Op.DATA] == [
        (Op.DATA, 0x5A, (9).to_bytes(4, "little")),
        (Op.DATA, 0x5B, BRIDGE_ID.to_bytes(4, "little"))]
