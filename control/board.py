"""A board over its UART as an engine (the engine contract), and ``obcore board`` to serve it."""

import logging
import time
from pathlib import Path

import numpy as np

from ..hw.boards.bridge import (
    BRIDGE_BASE,
    BRIDGE_ID,
    BRIDGE_REGS,
    ESC,
    ESC_XOR,
    MAX_REPLY,
    MAX_REQUEST,
    ORDER_STAMP,
    SOF,
    Nak,
    Op,
    crc16,
    encode_frame,
)
from ..hw.layouts import FEED_DTYPE, OBS, OBS_DTYPE, ORDER_DTYPE
from ..hw.registers import build_map
from . import protocol as proto
from .registers import Registers

__all__ = ["BoardError", "BoardTimeoutError", "FrameDecoder", "SerialTransport",
           "SocketTransport", "BoardEngine", "DEFAULT_BAUD", "add_parser", "run"]

log = logging.getLogger("obcore.board")
DEFAULT_BAUD = 3_000_000
# The longest request on the wire: every body and CRC byte stuffed, plus the SOF.
_WORST_REQUEST = 1 + 2 * (3 + MAX_REQUEST + 2)
# Identity registers have the same address in every build; this map finds them.
_IDENTITY = build_map()


def _enum(kind, value):
    """``kind(value)``, or the plain value when ``kind`` has no such member."""
    try:
        return kind(value)
    except ValueError:
        return value


def _name(op):
    op = _enum(Op, op)
    return op.name if isinstance(op, Op) else f"operation {op:#04x}"


class BoardError(RuntimeError):
    """The board did not answer as the bridge protocol says (lost, refused or garbled)."""


class BoardTimeoutError(BoardError):
    """No reply in time: the request or its reply was lost (or the board is gone)."""


class FrameDecoder:
    """Board-to-host frames from a byte stream, with the host's own error counts.

    :meth:`feed` returns the ``(op, tag, payload)`` of every complete frame with a good CRC.
    A SOF inside a frame counts ``truncated``, a length over ``MAX_REPLY`` ``oversize``, a
    bad CRC ``crc_errors``; the decoder then waits for the next SOF, as the gateware does.
    """

    def __init__(self):
        self.counts = dict.fromkeys(("frames", "crc_errors", "truncated", "oversize"), 0)
        self._body, self._inside, self._esc = bytearray(), False, False

    def feed(self, data):
        frames = []
        for raw in data:
            if raw == SOF:
                self.counts["truncated"] += self._inside and len(self._body) > 0
                self._body, self._inside, self._esc = bytearray(), True, False
            elif not self._inside:
                continue
            elif raw == ESC:
                self._esc = True
            else:
                self._body.append(raw ^ ESC_XOR if self._esc else raw)
                self._esc = False
                frame = self._complete()
                if frame is not None:
                    frames.append(frame)
        return frames

    def _complete(self):
        body = self._body
        if len(body) == 3 and body[2] > MAX_REPLY:
            self.counts["oversize"] += 1
            self._inside = False
        elif len(body) >= 3 and len(body) == body[2] + 5:
            self._inside = False
            if crc16(body) != 0:
                self.counts["crc_errors"] += 1
                return None
            self.counts["frames"] += 1
            return _enum(Op, body[0]), body[1], bytes(body[3:-2])
        return None


class SerialTransport:
    """A serial port through pyserial: ``read`` waits up to ``timeout`` for the first byte."""

    def __init__(self, port, baud=DEFAULT_BAUD, timeout=0.05):
        try:
            import serial
        except ImportError as exc:
            raise RuntimeError("pyserial is not installed; install the board extra: "
                               "pip install -e '.[board]'") from exc
        self.port = serial.Serial(port, baud, timeout=timeout)
        try:   # FTDI adapters otherwise hold received bytes for 16 ms
            self.port.set_low_latency_mode(True)
        except (AttributeError, NotImplementedError, OSError, ValueError):
            log.debug("low-latency mode not available on %s", port)

    def write(self, data):
        self.port.write(data)

    def read(self, size):
        first = self.port.read(1)
        return first + self.port.read(min(size - 1, self.port.in_waiting)) if first else first

    def close(self):
        self.port.close()


class SocketTransport:
    """A connected stream socket (a socket pair in tests, or a serial server over TCP)."""

    def __init__(self, sock, timeout=0.05):
        self.sock = sock
        self.sock.settimeout(timeout)

    def write(self, data):
        self.sock.sendall(data)

    def read(self, size):
        try:
            return self.sock.recv(size)
        except TimeoutError:
            return b""

    def close(self):
        self.sock.close()


class BoardEngine:
    """The engine contract (``regmap``, ``read``, ``write``, ``run``, ``cycle``, ``reset``,
    ``close``) over a bridge ``transport`` (``write(bytes)``, ``read(n) -> bytes`` that waits
    a short while and returns b"" when nothing came, ``close()``).

    Opening checks the bridge and the engine identity and picks the register map the build
    has: the whole engine's, or the books-only core's (``core``). A request waits ``timeout``
    seconds for its reply; reads are retried ``retries`` times (they have no side effect
    beyond the wide-register shadow, which a retry refreshes), other requests fail with
    :class:`BoardError`, since the board may or may not have done them.
    """

    def __init__(self, transport, *, timeout=1.0, retries=2):
        from ..hw.boards.top import books_map

        self.transport, self.timeout, self.retries = transport, timeout, retries
        self.decoder = FrameDecoder()
        self.counts = {"orders_lost": 0, "timeouts": 0, "stray": 0}
        self._tag, self._orders, self._order_tag = 0, [], None
        # End whatever a previous host left half sent, and drop what it left unread: a late
        # reply could carry a tag this host is about to use.
        self.transport.write(bytes([SOF]))
        self.receive(0.05)
        self._orders.clear()
        ident = self.bridge("id")
        if ident != BRIDGE_ID:
            raise BoardError(f"no obcore bridge answers: id reads {ident:#010x}, expected "
                             f"{BRIDGE_ID:#010x} (check the port and --baud)")
        self.window = max(1, min(64, self.bridge("rx_depth") // _WORST_REQUEST))
        venues, levels = (self.read(_IDENTITY[name].addr) & 0xFF for name in ("venues", "levels"))
        words = self.bridge("map_words")
        maps = {"engine": build_map(venues, levels), "books": books_map(venues, levels)}
        match = [name for name, regmap in maps.items() if regmap.size == words]
        if not match:
            raise BoardError(f"the board's register map has {words} words; neither the engine "
                             f"nor the books-only core with {venues} venue(s) and {levels} "
                             f"levels has that many (host and bitstream out of step?)")
        self.core, self.regmap = match[0], maps[match[0]]
        self.venues, self.levels, self.obs_format = venues, levels, OBS
        self.last_order_cycles = np.zeros(0, dtype=np.uint64)
        Registers(self, self.regmap).check_identity()

    # Frames.

    def _next_tag(self):
        self._tag = (self._tag + 1) & 0xFF
        return self._tag

    def _frames(self, deadline):
        """Frames as they arrive until ``deadline``; ORDER frames are kept for :meth:`run`."""
        while True:
            data = self.transport.read(4096)
            for op, tag, payload in self.decoder.feed(data):
                if op == Op.ORDER:
                    if self._order_tag is not None:
                        self.counts["orders_lost"] += (tag - self._order_tag - 1) & 0xFF
                    self._order_tag = tag
                    self._orders.append(payload)
                else:
                    yield op, tag, payload
            if time.monotonic() > deadline:
                return

    def request(self, op, payload=b""):
        """Send one request frame (any operation code, for diagnostics too); its reply's
        payload. A NAK raises :class:`BoardError` with the reason."""
        tag = self._next_tag()
        self.transport.write(encode_frame(op, tag, payload))
        return self._reply(op, tag)

    def receive(self, quiet_s):
        """The frames (but ORDER) that arrive until ``quiet_s`` seconds pass without one:
        what is left on the line after raw writes to the transport, or an interrupted run."""
        frames = []
        while batch := list(self._frames(time.monotonic() + quiet_s)):
            frames += batch
        return frames

    def _reply(self, op, tag):
        for got, got_tag, payload in self._frames(time.monotonic() + self.timeout):
            if got_tag != tag:
                self.counts["stray"] += 1   # a late reply to a request given up on
                continue
            if got == Op.NAK:
                reason = _enum(Nak, payload[0]) if payload else "no reason given"
                raise BoardError(f"the board refused {_name(op)}: {reason!r}")
            return payload
        self.counts["timeouts"] += 1
        raise BoardTimeoutError(f"no reply to {_name(op)} within {self.timeout:g} s (host frame "
                                f"counts {self.decoder.counts}); the link may have dropped "
                                f"the request or its reply")

    # The engine contract.

    def read(self, addr):
        for attempt in range(self.retries + 1):
            try:
                return int.from_bytes(self.request(Op.READ, addr.to_bytes(2, "little")),
                                      "little")
            except BoardTimeoutError:
                if attempt == self.retries:
                    raise

    def write(self, addr, word):
        self.request(Op.WRITE, addr.to_bytes(2, "little") + (word & 0xFFFF_FFFF).to_bytes(
            4, "little"))

    @property
    def cycle(self):
        addr = self.regmap["cycle"].addr
        low = self.read(addr)   # the low word latches the high one
        return low | self.read(addr + 1) << 32

    def reset(self):
        self.request(Op.RESET)
        self._orders.clear()

    def run(self, msgs):
        """Feed ``msgs`` one request each, ``window`` in flight; returns ``(obs, orders)``:
        one observation per message and the orders the board sent meanwhile (also those
        that came between runs). ``last_order_cycles`` then holds the cycle the bridge took
        each order, counted from the last reset like the ``cycle`` register."""
        msgs = np.ascontiguousarray(msgs, dtype=FEED_DTYPE)
        obs = np.zeros(len(msgs), dtype=OBS_DTYPE)
        tags, sent = [], 0
        for i in range(len(msgs)):
            while sent < len(msgs) and sent - i < self.window:
                tags.append(self._next_tag())
                self.transport.write(encode_frame(Op.FEED, tags[-1], msgs[sent].tobytes()))
                sent += 1
            obs[i] = np.frombuffer(self._reply(Op.FEED, tags[i]), OBS_DTYPE)[0]
        frames = b"".join(self._orders)
        self._orders.clear()
        stamped = np.dtype([("order", ORDER_DTYPE), ("cycle", f"<u{ORDER_STAMP}")])
        got = np.frombuffer(frames, stamped)
        self.last_order_cycles = got["cycle"].astype(np.uint64)
        return obs, got["order"].copy()

    def close(self):
        self.transport.close()

    # The bridge itself.

    def bridge(self, name):
        """One of the bridge's own registers (``BRIDGE_REGS``) by name."""
        return self.read(BRIDGE_BASE + BRIDGE_REGS.index(name))

    def bridge_status(self):
        """Everything the bridge and this host counted, by name."""
        return {"board": {name: self.bridge(name) for name in BRIDGE_REGS},
                "host": {**self.decoder.counts, **self.counts}}


def add_parser(sub):
    p = sub.add_parser("board", help="serve a board on a serial port over ZeroMQ, exactly as "
                                     "`obcore sim` serves the simulation (docs/boards.md)")
    p.add_argument("--port", required=True, help="serial device, e.g. /dev/ttyUSB0")
    p.add_argument("--baud", type=int, default=DEFAULT_BAUD,
                   help=f"UART rate the bitstream was built with (default {DEFAULT_BAUD})")
    p.add_argument("--timeout", type=float, default=1.0, metavar="S",
                   help="seconds to wait for each reply (default 1)")
    p.add_argument("--check", action="store_true",
                   help="print the board's identity and link counters, then exit")
    p.add_argument("--bind", default=proto.DEFAULT_ENDPOINT, metavar="ENDPOINT",
                   help=f"request endpoint (default {proto.DEFAULT_ENDPOINT})")
    p.add_argument("--pub", default=proto.DEFAULT_PUB, metavar="ENDPOINT",
                   help=f"telemetry endpoint (default {proto.DEFAULT_PUB}; 'none': off)")
    p.add_argument("--telemetry-hz", type=float, default=2.0, metavar="F",
                   help="status snapshots per second (default 2: each reads every status "
                        "register over the UART)")
    p.add_argument("--curve", metavar="KEYDIR", type=Path,
                   help="CURVE keys, as for `obcore sim`; required for a non-loopback bind")
    p.set_defaults(run=run)


def run(args):
    from ..sim.server import serve_until_stopped

    engine = BoardEngine(SerialTransport(args.port, args.baud), timeout=args.timeout)
    if not args.check:
        return serve_until_stopped(engine, args, "board", backend=f"{engine.core}@{args.port}",
                                   kind="board")
    try:
        print(f"{engine.core} core: {engine.venues} venue(s), {engine.levels} levels, "
              f"{len(engine.regmap)} registers; window {engine.window} messages")
        for side, counts in engine.bridge_status().items():
            print(f"{side}: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    finally:
        engine.close()
    return 0

