"""cocotb bench, end to end: the host's BoardEngine <-> 8N1 bits <-> Bridge <-> Engine.

The host code runs unchanged in a thread started by ``cocotb.bridge``; its transport turns
bytes into UART bits on the DUT's ``rx`` pin and decodes the ``tx`` pin back into bytes, at
``DIVISOR`` clocks per bit. The simulator only advances while the host waits for bytes.
"""

import itertools
import os
import threading

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.task import bridge, resume
from cocotb.triggers import ClockCycles, Event, FallingEdge, First, Timer

from obcore.control import params
from obcore.control.board import BoardEngine, BoardError
from obcore.control.client import EngineClient, EngineError
from obcore.control.registers import Registers
from obcore.hw.boards.bridge import SOF, Nak, Op, encode_frame
from obcore.hw.boards.top import books_map
from obcore.hw.layouts import FeedKind, OrderKind, feed_array
from obcore.hw.registers import MAGIC
from obcore.sim.demo import PARAMS
from obcore.sim.engine import ModelEngine
from obcore.sim.scenarios import generate
from obcore.sim.server import Server

VENUES, LEVELS, DIVISOR = 2, 4, 4   # must match tests/cocotb/test_bridge.py
BOOKS = (1, 2)                       # venues, levels of the books-only core: the same
# test_bridge.py builds the engine, then the books-only core with BRIDGE_CORE=books.
ENGINE_RUN = os.environ.get("BRIDGE_CORE", "engine") == "engine"
PERIOD_NS = 10
BIT_NS = DIVISOR * PERIOD_NS
HOST_TIMEOUT_S = 60                  # wall clock: the simulation is far slower than a board
QUIET_S = 1.0                        # wall clock with no byte from the DUT: it has finished


def _bits(byte, stop=1):
    return [0, *((byte >> i) & 1 for i in range(8)), stop]


class Link:
    """The host's transport (``write``/``read``/``close``) on the DUT's UART pins."""

    def __init__(self, dut):
        self.dut, self.out, self.got = dut, bytearray(), bytearray()
        self.bad_stop = set()        # indices into `out` sent with a 0 stop bit
        self.queued, self.arrived = Event(), Event()
        dut.rx.value = 1
        cocotb.start_soon(self._drive())
        cocotb.start_soon(self._listen())

    async def _drive(self):
        while True:
            if not self.out:
                self.queued.clear()
                await self.queued.wait()
            byte = self.out.pop(0)
            stop = 0 if 0 in self.bad_stop else 1
            self.bad_stop = {i - 1 for i in self.bad_stop if i > 0}
            for level in _bits(byte, stop):
                self.dut.rx.value = level
                await Timer(BIT_NS, "ns")
            if not stop:   # let the receiver see an idle line before the next start bit
                self.dut.rx.value = 1
                await Timer(BIT_NS, "ns")

    async def _listen(self):
        while True:
            await FallingEdge(self.dut.tx)
            await Timer(BIT_NS * 3 // 2, "ns")   # the middle of bit 0
            byte = 0
            for i in range(8):
                byte |= int(self.dut.tx.value) << i
                await Timer(BIT_NS, "ns")
            assert int(self.dut.tx.value) == 1, "the bridge sent a 0 stop bit"
            self.got.append(byte)
            self.arrived.set()

    async def _put(self, data, bad_stop):
        self.bad_stop |= {len(self.out) + i for i in bad_stop}
        self.out += data
        self.queued.set()

    async def _take(self, size):
        if not self.got:
            self.arrived.clear()
            await First(self.arrived.wait(), Timer(200, "us"))
        data = bytes(self.got[:size])
        del self.got[:size]
        return data

    def write(self, data, bad_stop=()):
        resume(self._put)(bytes(data), set(bad_stop))

    def read(self, size):
        return resume(self._take)(size)

    def close(self):
        pass


async def start(dut):
    # The clock toggles in the simulator, not in Python: the bench wakes per UART bit only.
    cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns", impl="gpi").start())
    dut.rst.value = 1
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    return Link(dut)


def messages(count, seed=7):
    msgs = []
    for venue in range(VENUES):
        gen = generate("calm", seed + venue, venue=venue)
        msgs += [next(gen)[1] for _ in range(count // VENUES)]
    # A malformed message (kind 0) and a TICK: observed, not applied.
    msgs += [{"kind": 0, "venue": 0, "side": 0, "flags": 0, "seq": 0, "price": 0, "size": 0},
             {"kind": int(FeedKind.TICK), "venue": 0, "side": 0, "flags": 0, "seq": 0,
              "price": 0, "size": 0}]
    return feed_array(msgs)


def check_obs(got, msgs, venues=VENUES, levels=LEVELS):
    """The board's observations equal the reference model's, but for the cycle stamp;
    returns the model, which has run ``msgs``."""
    model = ModelEngine(venues, levels)
    want, _ = model.run(msgs)
    assert len(got) == len(want)
    for name in want.dtype.names:
        if name != "cycle":
            assert (got[name] == want[name]).all(), f"obs field {name} differs from the model"
    assert (got["cycle"][1:] > got["cycle"][:-1]).all()
    return model


@cocotb.test(skip=not ENGINE_RUN)
async def registers_feed_and_reset(dut):
    link = await start(dut)

    def host():
        eng = BoardEngine(link, timeout=HOST_TIMEOUT_S)
        assert (eng.core, eng.venues, eng.levels) == ("engine", VENUES, LEVELS)
        regs = Registers(eng, eng.regmap)
        assert regs.get_raw("id") == MAGIC
        regs.set("spread_max", 77, index=1)   # staged, then committed
        assert regs.get("spread_max", 1) == 77
        before = eng.cycle
        msgs = messages(40)
        obs, orders = eng.run(msgs)
        model = Registers(check_obs(obs, msgs), eng.regmap)
        assert len(orders) == 0 or set(orders["kind"]) <= {1, 2, 3, 4}
        assert eng.cycle > before
        for name, index in (("msg_count", 0), ("msg_count", 1), ("malformed_count", 0),
                            ("best_bid", 0), ("best_ask", 1), ("gap_count", 0)):
            assert regs.get(name, index) == model.get(name, index), name
        assert regs.get("malformed_count") == 1
        eng.reset()
        assert regs.get("msg_count", 0) == 0 and regs.get("spread_max", 1) != 77
        status = eng.bridge_status()
        assert status["board"]["frames"] > 0 and status["board"]["rejected"] == 0
        assert all(v == 0 for k, v in status["board"].items()
                   if k in ("crc_errors", "truncated", "oversize", "overruns", "frame_errors",
                            "obs_lost"))
        assert status["host"]["crc_errors"] == 0 and status["host"]["timeouts"] == 0

    await bridge(host)()


@cocotb.test(skip=not ENGINE_RUN)
async def bad_frames_are_rejected_and_counted(dut):
    link = await start(dut)

    def host():
        eng = BoardEngine(link, timeout=HOST_TIMEOUT_S)
        before = eng.bridge_status()["board"]
        read_id = encode_frame(Op.READ, 0x42, bytes(2))
        corrupt = bytearray(encode_frame(Op.READ, 0x43, bytes(2)))
        corrupt[4] ^= 0x10                                     # a payload bit flipped
        link.write(bytes(corrupt))                             # -> crc_errors
        link.write(read_id[:5])                                # cut short by the next SOF
        link.write(encode_frame(Op.WRITE, 0x44, bytes(40)))    # -> oversize
        link.write(b"\x00\x55", bad_stop=[0])                  # -> frame_errors
        link.write(bytes([SOF]) + read_id)                     # answered: resynchronised
        assert [(op, tag) for op, tag, _ in eng.receive(QUIET_S)] == [(Op.DATA, 0x42)]
        # Well-formed but refused: each gets a NAK with the reason, and counts as rejected.
        for op, payload, reason in ((0x33, b"", Nak.OP), (Op.READ, bytes(3), Nak.LENGTH),
                                    (Op.WRITE, bytes([0, 0x7F, 0, 0, 0, 0]), Nak.ADDRESS)):
            try:
                eng.request(op, payload)
            except BoardError as exc:
                assert reason.name in str(exc), exc
            else:
                raise AssertionError(f"{op} was not refused")
        after = eng.bridge_status()["board"]
        delta = {k: after[k] - before[k] for k in ("crc_errors", "truncated", "oversize",
                                                   "frame_errors", "rejected", "overruns")}
        assert delta == {"crc_errors": 1, "truncated": 1, "oversize": 1, "frame_errors": 1,
                         "rejected": 3, "overruns": 0}, delta
        # A flood past the RX FIFO: bytes are lost and counted; the link recovers.
        msgs = messages(40)
        link.write(b"".join(encode_frame(Op.FEED, i, m.tobytes()) for i, m in enumerate(msgs)))
        eng.receive(QUIET_S)                                   # what comes back of it
        assert eng.bridge("overruns") > 0
        eng.reset()
        obs, _ = eng.run(msgs)
        check_obs(obs, msgs)

    await bridge(host)()


@cocotb.test(skip=not ENGINE_RUN)
async def the_control_server_serves_the_board(dut):
    link = await start(dut)

    def host():
        eng = BoardEngine(link, timeout=HOST_TIMEOUT_S)
        server = Server(eng, "tcp://127.0.0.1:*", None, backend="cocotb", kind="board",
                        telemetry_hz=0)
        msgs, out = messages(12), {}

        def client():
            try:
                with EngineClient(server.endpoint, timeout=HOST_TIMEOUT_S * 1000) as c:
                    out["hello"] = c.hello()
                    out["counts"], out["obs"] = c.feed(msgs, dump="obs")
                    out["words"] = c.read([0, 2, 3])
            except Exception as exc:   # re-raised in the bench's thread below
                out["error"] = exc
            finally:
                server.stop()

        thread = threading.Thread(target=client)
        thread.start()
        server.serve()   # the engine calls happen here, in the bridged thread
        thread.join()
        if "error" in out:
            raise out["error"]
        assert out["hello"]["engine"] == "board" and out["hello"]["venues"] == VENUES
        assert out["words"] == [MAGIC, VENUES, LEVELS]
        assert out["counts"]["count"] == len(msgs)
        check_obs(out["obs"], msgs)

    await bridge(host)()


@cocotb.test(skip=not ENGINE_RUN)
async def an_armed_engines_orders_reach_the_host(dut):
    link = await start(dut)

    def host():
        eng = BoardEngine(link, timeout=HOST_TIMEOUT_S)
        eng.reset()
        regs = Registers(eng, eng.regmap)
        params.apply(regs, params.load(PARAMS))
        msgs = feed_array([m for _, m in itertools.islice(generate("calm", 7), 150)])
        end = int(np.nonzero(msgs["kind"] == FeedKind.SNAPSHOT_END)[0][0]) + 1
        eng.run(msgs[:end])
        regs.clear_flags("pull_reasons", (1 << regs.regmap["pull_reasons"].fmt.width) - 1)
        before = eng.cycle
        eng.write(regs.regmap["arm"].addr, 1)   # quotes may leave at once: the book is ready
        assert not regs.get_raw("pull_state") & 1, "arm refused"
        _, orders = eng.run(msgs[end:])
        # Every order the engine emitted, in order, each with the cycle the bridge took it.
        assert len(orders) and orders["kind"][0] == OrderKind.NEW
        assert (np.diff(orders["seq"].astype(np.int64)) == 1).all()
        stamps = eng.last_order_cycles.astype(np.int64)
        assert len(stamps) == len(orders) and (np.diff(stamps) > 0).all()
        assert before < stamps[0] and stamps[-1] < eng.cycle
        assert eng.counts["orders_lost"] == 0 and eng.decoder.counts["crc_errors"] == 0

    await bridge(host)()


@cocotb.test(skip=ENGINE_RUN)
async def books_core_over_the_bridge(dut):
    """The iCE40's core: the host finds the reduced map, absent registers stay absent."""
    link = await start(dut)

    def host():
        eng = BoardEngine(link, timeout=HOST_TIMEOUT_S)
        assert (eng.core, eng.venues, eng.levels) == ("books", *BOOKS)
        assert eng.regmap.size == books_map(*BOOKS).size and "kill" not in eng.regmap
        msgs = feed_array([m for _, m in itertools.islice(generate("calm", 7), 60)])
        obs, orders = eng.run(msgs)
        want = Registers(check_obs(obs, msgs, *BOOKS), eng.regmap)
        assert len(orders) == 0
        server = Server(eng, "tcp://127.0.0.1:*", None, backend="cocotb", kind="board",
                        telemetry_hz=0)
        out = {}

        def client():
            try:
                with EngineClient(server.endpoint, timeout=HOST_TIMEOUT_S * 1000) as c:
                    out["hello"], out["status"] = c.hello(), c.status()
                    try:
                        c.kill()
                    except EngineError as exc:
                        out["kill"] = str(exc)
            except Exception as exc:   # re-raised in the bench's thread below
                out["error"] = exc
            finally:
                server.stop()

        thread = threading.Thread(target=client)
        thread.start()
        server.serve()
        thread.join()
        if "error" in out:
            raise out["error"]
        assert out["hello"]["registers"] == len(eng.regmap)
        assert out["status"]["regs"]["msg_count"] == want.get("msg_count") > 0
        assert "not available" in out["kill"]

    await bridge(host)()
