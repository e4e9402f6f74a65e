"""The UART bridge: framed, checksummed register, feed and observation traffic for a board.

Frame (both directions): ``SOF`` then, byte-stuffed, ``op tag length payload crc_hi crc_lo``.
Stuffing: a ``SOF`` or ``ESC`` byte inside a frame is sent as ``ESC, byte ^ 0x20``, so a raw
``SOF`` always starts a frame and the receiver resynchronises on it. The CRC is CRC-16/CCITT
(poly 0x1021, init 0xFFFF, no reflection) over the unstuffed ``op tag length payload``. See
docs/boards.md for the operations and their replies.
"""

import enum

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from ..csr import CSRBus
from ..layouts import FEED, OBS, ORDER, feed_layout, order_layout
from .uart import UARTRx, UARTTx

__all__ = ["SOF", "ESC", "ESC_XOR", "CRC_INIT", "CRC_POLY", "Op", "Nak", "REQUEST_LENGTH",
           "MAX_REQUEST", "MAX_REPLY", "ORDER_STAMP", "BRIDGE_BASE", "BRIDGE_ID", "BRIDGE_REGS",
           "COUNTERS", "crc16", "encode_frame", "OBS_PORT", "FrameReceiver", "FrameSender",
           "Bridge"]

SOF, ESC, ESC_XOR = 0x7E, 0x7D, 0x20
CRC_INIT, CRC_POLY = 0xFFFF, 0x1021


class Op(enum.IntEnum):
    """Frame operations: requests from the host, replies from the board (bit 7 set)."""
    READ = 0x01     # payload: addr (16-bit LE)                -> DATA (32-bit LE word)
    WRITE = 0x02    # payload: addr (16-bit LE), word (32 LE)  -> ACK
    FEED = 0x03     # payload: one 16-byte feed word           -> OBS (48-byte record)
    RESET = 0x04    # no payload: reset the engine             -> ACK
    ACK = 0x81
    DATA = 0x82
    OBS = 0x83
    ORDER = 0x84    # unsolicited: 16-byte order word, 8-byte cycle; tag = order count mod 256
    NAK = 0x85      # payload: one Nak reason byte; the request did nothing


class Nak(enum.IntEnum):
    """Why a well-formed frame (good CRC) was refused."""
    OP = 1          # unknown operation
    LENGTH = 2      # wrong payload length for the operation
    ADDRESS = 3     # outside the register map, or a write to the bridge's own registers
    NO_OBS = 4      # the engine gave no observation for a fed message (counted in obs_lost)


REQUEST_LENGTH = {Op.READ: 2, Op.WRITE: 6, Op.FEED: FEED.nbytes, Op.RESET: 0}
MAX_REQUEST = max(REQUEST_LENGTH.values())
MAX_REPLY = OBS.nbytes
ORDER_STAMP = 8   # bytes of cycle count after an ORDER frame's order word
# Bus addresses with bit 15 set read the bridge's own registers instead of the engine's.
BRIDGE_BASE = 0x8000
BRIDGE_ID = 0x0BC0_B001   # bridge protocol 1
COUNTERS = ("frames", "crc_errors", "truncated", "oversize", "rejected", "overruns",
            "frame_errors", "obs_lost")
BRIDGE_REGS = ("id", *COUNTERS, "clock_hz", "divisor", "rx_depth", "map_words")
RESET_CYCLES = 8


def crc16(data, crc=CRC_INIT):
    """CRC-16/CCITT of ``data`` (bytes), MSB first, as the gateware computes it."""
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ CRC_POLY if crc & 0x8000 else crc << 1) & 0xFFFF
    return crc


def encode_frame(op, tag, payload=b""):
    """One frame as it goes on the wire: SOF, then the stuffed body and CRC."""
    if not (0 <= tag <= 255 and len(payload) <= 255):
        raise ValueError(f"tag must be 0..255 and the payload at most 255 bytes, not {tag!r}, "
                         f"{len(payload)}")
    body = bytes([int(op), tag, len(payload)]) + bytes(payload)
    crc = crc16(body)
    out = bytearray([SOF])
    for byte in body + bytes([crc >> 8, crc & 0xFF]):
        out += bytes([ESC, byte ^ ESC_XOR]) if byte in (SOF, ESC) else bytes([byte])
    return bytes(out)


def _crc_step(crc, byte):
    """The CRC after one more byte, unrolled into XORs (one byte per cycle)."""
    for i in range(8):
        feedback = crc[15] ^ byte[7 - i]
        crc = Cat(Const(0, 1), crc[:15]) ^ Mux(feedback, CRC_POLY, 0)
    return crc


# The engine's observation port seen from the bridge: valid and payload, never stalls.
OBS_PORT = wiring.Signature({"valid": Out(1), "payload": Out(OBS.layout())})


class FrameReceiver(wiring.Component):
    """Host frames from a byte stream: de-stuffs, checks length and CRC, holds one frame.

    A checked frame shows on ``op``/``tag``/``length``/``payload`` with ``valid`` until
    ``done``; meanwhile ``bytes`` is not taken, so later bytes wait in the caller's FIFO. A
    ``SOF`` inside a frame drops it (``truncated``) and starts the next; a length over
    ``MAX_REQUEST`` drops it (``oversize``) and a bad CRC (``crc_error``) too, and the
    receiver hunts for the next ``SOF``. ``good`` strobes for each frame accepted.
    """

    bytes: In(stream.Signature(8))
    valid: Out(1)
    op: Out(8)
    tag: Out(8)
    length: Out(8)
    payload: Out(8 * MAX_REQUEST)
    done: In(1)
    good: Out(1)
    crc_error: Out(1)
    truncated: Out(1)
    oversize: Out(1)

    def elaborate(self, platform):
        m = Module()
        hunt, op, tag, length, body = range(5)
        state = Signal(range(5))
        esc = Signal()
        count = Signal(range(MAX_REQUEST + 3))
        crc = Signal(16)
        raw = self.bytes.payload
        byte = Signal(8)
        crc_next = Signal(16)
        m.d.comb += [byte.eq(raw ^ Mux(esc, ESC_XOR, 0)), crc_next.eq(_crc_step(crc, byte)),
                     self.bytes.ready.eq(~self.valid)]
        with m.If(self.done):
            m.d.sync += self.valid.eq(0)

        with m.If(self.bytes.valid & self.bytes.ready):
            with m.If(raw == SOF):
                # A SOF right after a SOF is an empty frame, not a cut one: the host may
                # send one to flush a receiver that is mid-frame after line noise.
                m.d.comb += self.truncated.eq((state != hunt) & (state != op))
                m.d.sync += [state.eq(op), crc.eq(CRC_INIT), esc.eq(0)]
            with m.Elif(raw == ESC):
                m.d.sync += esc.eq(state != hunt)
            with m.Elif(state != hunt):
                m.d.sync += [esc.eq(0), crc.eq(crc_next)]
                with m.Switch(state):
                    with m.Case(op):
                        m.d.sync += [self.op.eq(byte), state.eq(tag)]
                    with m.Case(tag):
                        m.d.sync += [self.tag.eq(byte), state.eq(length)]
                    with m.Case(length):
                        m.d.sync += [self.length.eq(byte), count.eq(0), state.eq(body)]
                        with m.If(byte > MAX_REQUEST):
                            m.d.comb += self.oversize.eq(1)
                            m.d.sync += state.eq(hunt)
                    with m.Case(body):
                        m.d.sync += count.eq(count + 1)
                        with m.If(count < self.length):
                            m.d.sync += self.payload.word_select(count[:4], 8).eq(byte)
                        with m.If(count == self.length + 1):   # the second CRC byte
                            m.d.sync += state.eq(hunt)
                            # CRC-16 over data and its own big-endian CRC leaves 0.
                            with m.If(crc_next == 0):
                                m.d.comb += self.good.eq(1)
                                m.d.sync += self.valid.eq(1)
                            with m.Else():
                                m.d.comb += self.crc_error.eq(1)
        return m


class FrameSender(wiring.Component):
    """Sends one frame at a time onto a byte stream, stuffing and appending the CRC.

    ``start`` (while not ``busy``) samples ``op``, ``tag`` and ``length``; ``payload`` is read
    byte by byte while ``busy``, so its owner keeps it unchanged until ``busy`` falls.
    """

    start: In(1)
    op: In(8)
    tag: In(8)
    length: In(8)
    payload: In(8 * MAX_REPLY)
    busy: Out(1)
    bytes: Out(stream.Signature(8))

    def elaborate(self, platform):
        m = Module()
        op, tag, length = Signal(8), Signal(8), Signal(8)
        index = Signal(range(MAX_REPLY + 5))
        crc = Signal(16)
        cur = Signal(8)
        escaped = Signal()
        out = self.bytes

        # The byte at `index`, registered before it is stuffed to keep the mux off the
        # stream's path.
        select = Signal(8)
        with m.If(index == 0):
            m.d.comb += select.eq(op)
        with m.Elif(index == 1):
            m.d.comb += select.eq(tag)
        with m.Elif(index == 2):
            m.d.comb += select.eq(length)
        with m.Elif(index < length + 3):
            m.d.comb += select.eq(self.payload.word_select((index - 3)[:6], 8))
        with m.Elif(index == length + 3):
            m.d.comb += select.eq(crc[8:])
        with m.Else():
            m.d.comb += select.eq(crc[:8])

        with m.FSM() as fsm:
            with m.State("IDLE"), m.If(self.start):
                m.d.sync += [op.eq(self.op), tag.eq(self.tag), length.eq(self.length),
                             index.eq(0), crc.eq(CRC_INIT)]
                m.next = "FLAG"
            with m.State("FLAG"):
                m.d.comb += [out.valid.eq(1), out.payload.eq(SOF)]
                with m.If(out.ready):
                    m.next = "FETCH"
            with m.State("FETCH"):
                m.d.sync += [cur.eq(select), escaped.eq(0)]
                m.next = "SEND"
            with m.State("SEND"):
                m.d.comb += out.valid.eq(1)
                with m.If(((cur == SOF) | (cur == ESC)) & ~escaped):
                    m.d.comb += out.payload.eq(ESC)
                    with m.If(out.ready):
                        m.d.sync += escaped.eq(1)
                with m.Else():
                    m.d.comb += out.payload.eq(cur ^ Mux(escaped, ESC_XOR, 0))
                    with m.If(out.ready):
                        with m.If(index < length + 3):
                            m.d.sync += crc.eq(_crc_step(crc, cur))
                        m.d.sync += index.eq(index + 1)
                        m.next = "FETCH"
                        with m.If(index == length + 4):
                            m.next = "IDLE"
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))
        return m


class Bridge(wiring.Component):
    """UART (``rx``/``tx``) to the engine's four ports, one request at a time, in order.

    - READ/WRITE drive ``bus`` (the engine's :class:`~obcore.hw.csr.CSRBus`) once; addresses
      from ``BRIDGE_BASE`` read ``BRIDGE_REGS`` (id, the error counters, the build's clock,
      divisor, RX FIFO depth and ``map_words``, the size of the core's register map, which
      tells a host the whole engine from the books-only core).
    - FEED puts the word on ``feed``, waits (at most ``obs_timeout`` cycles) for the one
      observation it gives on ``obs`` and sends it back as OBS with the request's tag. One
      message at a time: the UART, not the engine, limits the rate.
    - RESET holds ``engine_rst`` for ``RESET_CYCLES`` cycles, then ACKs.
    - ``orders`` is taken one word at a time while no request is pending, each sent as an
      ORDER frame with the cycle it was taken (``ORDER_STAMP`` bytes: a 64-bit count from
      the last engine reset, so the engine's own ``cycle`` register's count); its
      back-pressure holds the engine's order stream meanwhile.

    Received bytes wait in a ``rx_depth`` FIFO; the host keeps fewer requests outstanding
    than fit (docs/boards.md). Counters wrap at 2^32. ``error`` strobes on every counted
    error, for an LED.
    """

    def __init__(self, addr_width, divisor, *, clock_hz=0, map_words=0, rx_depth=512,
                 obs_timeout=256):
        if not (isinstance(addr_width, int) and 1 <= addr_width <= 15):
            raise ValueError(f"addr_width must be 1..15 (bit 15 selects the bridge), "
                             f"not {addr_width!r}")
        if not (isinstance(rx_depth, int) and rx_depth >= 64):
            raise ValueError(f"rx_depth must be an integer >= 64, not {rx_depth!r}")
        if not (isinstance(obs_timeout, int) and obs_timeout >= 1):
            raise ValueError(f"obs_timeout must be a positive integer, not {obs_timeout!r}")
        for name, value in (("clock_hz", clock_hz), ("map_words", map_words)):
            if not (isinstance(value, int) and 0 <= value < 1 << 32):
                raise ValueError(f"{name} must be an integer 0..2^32-1, not {value!r}")
        self._uart_rx, self._uart_tx = UARTRx(divisor), UARTTx(divisor)
        self.addr_width, self.divisor = addr_width, divisor
        self.clock_hz, self.map_words = clock_hz, map_words
        self.rx_depth, self.obs_timeout = rx_depth, obs_timeout
        super().__init__({
            "rx": In(1, init=1), "tx": Out(1, init=1),
            "bus": Out(CSRBus(addr_width)),
            "feed": Out(stream.Signature(feed_layout)),
            "obs": In(OBS_PORT),
            "orders": In(stream.Signature(order_layout)),
            "engine_rst": Out(1),
            "error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart_rx = urx = self._uart_rx
        m.submodules.uart_tx = utx = self._uart_tx
        m.submodules.rx_fifo = fifo = SyncFIFOBuffered(width=8, depth=self.rx_depth)
        m.submodules.receiver = rcv = FrameReceiver()
        m.submodules.sender = snd = FrameSender()
        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx)]
        wiring.connect(m, urx.bytes, fifo.w_stream)
        wiring.connect(m, snd.bytes, utx.bytes)
        # A register between the FIFO and the receiver: a block RAM's output is slow (5.8 ns
        # on the ECP5) and the receiver's decoding behind it set the clock. It halves the
        # byte rate from the FIFO, which still has 4 clocks per bit of slack at the least.
        staged = stream.Signature(8).create()
        m.d.comb += fifo.r_en.eq(~staged.valid)
        with m.If(staged.ready):
            m.d.sync += staged.valid.eq(0)
        with m.If(fifo.r_rdy & ~staged.valid):
            m.d.sync += [staged.payload.eq(fifo.r_data), staged.valid.eq(1)]
        wiring.connect(m, staged, rcv.bytes)

        reply = Signal(8 * MAX_REPLY)   # the payload the sender reads while busy
        m.d.comb += snd.payload.eq(reply)
        rejected, obs_lost = Signal(), Signal()

        counters = [Signal(32, name=f"count_{name}") for name in COUNTERS]
        strobes = [rcv.good, rcv.crc_error, rcv.truncated, rcv.oversize, rejected,
                   urx.overrun, urx.frame_error, obs_lost]
        for counter, strobe in zip(counters, strobes, strict=True):
            with m.If(strobe):
                m.d.sync += counter.eq(counter + 1)
        m.d.comb += self.error.eq(Cat(strobes[1:]).any())
        local = [BRIDGE_ID, *counters, self.clock_hz, self.divisor, self.rx_depth,
                 self.map_words]

        addr = rcv.payload[:16]
        in_map = addr[self.addr_width:] == 0
        m.d.comb += [self.bus.addr.eq(addr), self.bus.w_data.eq(rcv.payload[16:48]),
                     self.feed.payload.eq(rcv.payload)]

        def send(op, length, tag=rcv.tag):
            m.d.comb += [snd.start.eq(1), snd.op.eq(op), snd.tag.eq(tag),
                         snd.length.eq(length)]

        def answer(op, length):
            send(op, length)
            m.d.comb += rcv.done.eq(1)

        def refuse(reason):
            m.d.sync += reply[:8].eq(reason)
            m.d.comb += rejected.eq(1)
            answer(Op.NAK, 1)

        length_ok = Signal()   # the request's length is its operation's
        with m.Switch(rcv.op):
            for op, length in REQUEST_LENGTH.items():
                with m.Case(op):
                    m.d.comb += length_ok.eq(rcv.length == length)

        timer = Signal(range(max(self.obs_timeout, RESET_CYCLES) + 1))
        order_tag = Signal(8)
        # Counts as the engine's cycle register does: from 0 when its reset ends.
        cycle = Signal(8 * ORDER_STAMP)
        m.d.sync += cycle.eq(Mux(self.engine_rst, 0, cycle + 1))
        with m.FSM():
            with m.State("IDLE"):
                with m.If(rcv.valid & ~snd.busy):
                    with m.If(~rcv.op.matches(*REQUEST_LENGTH)):
                        refuse(Nak.OP)
                    with m.Elif(~length_ok):
                        refuse(Nak.LENGTH)
                    with m.Elif(rcv.op == Op.READ):
                        self._read(m, addr, in_map, local, reply, answer, refuse)
                    with m.Elif(rcv.op == Op.WRITE):
                        self._write(m, in_map, answer, refuse)
                    with m.Elif(rcv.op == Op.FEED):
                        m.next = "FEED"
                    with m.Else():   # RESET
                        m.d.sync += timer.eq(RESET_CYCLES - 1)
                        m.next = "RESET"
                # Orders go out between requests; requests come first so a flood of orders
                # cannot starve the host's reads (it can only slow the engine's order port).
                with m.Elif(~rcv.valid & ~snd.busy & self.orders.valid):
                    m.d.comb += self.orders.ready.eq(1)
                    m.d.sync += [reply[:ORDER.bits].eq(self.orders.payload),
                                 reply[ORDER.bits:][:64].eq(cycle),
                                 order_tag.eq(order_tag + 1)]
                    send(Op.ORDER, ORDER.nbytes + ORDER_STAMP, tag=order_tag)
            # The CSR answers READ_LATENCY cycles after r_en, with r_valid.
            with m.State("READ"), m.If(self.bus.r_valid):
                m.d.sync += reply[:32].eq(self.bus.r_data)
                answer(Op.DATA, 4)
                m.next = "IDLE"
            with m.State("FEED"):
                m.d.comb += self.feed.valid.eq(1)
                with m.If(self.feed.ready):
                    m.d.sync += timer.eq(self.obs_timeout - 1)
                    m.next = "OBS"
            with m.State("OBS"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(self.obs.valid):
                    m.d.sync += reply.eq(self.obs.payload)
                    answer(Op.OBS, OBS.nbytes)
                    m.next = "IDLE"
                with m.Elif(timer == 0):
                    m.d.comb += obs_lost.eq(1)
                    refuse(Nak.NO_OBS)
                    m.next = "IDLE"
            with m.State("RESET"):
                m.d.comb += self.engine_rst.eq(1)
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    answer(Op.ACK, 0)
                    m.next = "IDLE"
        return m

    def _read(self, m, addr, in_map, local, reply, answer, refuse):
        with m.If(addr[15]):
            with m.Switch(addr[:15]):
                for i, value in enumerate(local):
                    with m.Case(i):
                        m.d.sync += reply[:32].eq(value)
                with m.Default():
                    m.d.sync += reply[:32].eq(0)
            answer(Op.DATA, 4)
        with m.Elif(in_map):
            m.d.comb += self.bus.r_en.eq(1)
            m.next = "READ"
        with m.Else():
            refuse(Nak.ADDRESS)

    def _write(self, m, in_map, answer, refuse):
        with m.If(in_map):
            m.d.comb += self.bus.w_en.eq(1)
            answer(Op.ACK, 0)
        with m.Else():
            refuse(Nak.ADDRESS)
