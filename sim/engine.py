"""Engines behind one interface: the Verilated gateware, or the reference model in Python.

An engine has ``regmap``, ``read(addr)`` / ``write(addr, word)`` for 32-bit bus words,
``run(msgs) -> (obs, orders)`` for a ``FEED_DTYPE`` batch (one ``OBS_DTYPE`` record per
message, in order; ``last_order_cycles`` then gives the cycle each order left), ``cycle``,
``reset()`` and ``close()``. The simulation server, replay and
the benchmarks take either, so the reference model is a drop-in check of the hardware.
"""

import numpy as np

from ..control.registers import CSRModel
from ..hw.layouts import FEED, OBS_DTYPE, ORDER_DTYPE, ObsStatus
from ..hw.registers import build_map
from .model import BookModel

__all__ = ["ModelEngine", "open_engine", "ENGINES", "RUN_DRAIN"]

ENGINES = ("verilator", "model")
# Cycles every engine clocks after a batch's last message so its observations come out; with
# one cycle per message and one per bus access, every engine counts cycles alike.
RUN_DRAIN = 8
_COUNTERS = (("msg_count", "msgs"), ("gap_count", "gaps"), ("missing_count", "missing"),
             ("crossed_count", "crossed"), ("capacity_count", "capacity"))


class ModelEngine:
    """The bit-accurate reference model behind the engine interface (one message a cycle)."""

    def __init__(self, venues=2, levels=16, capacity=None):
        self.regmap = build_map(venues, levels)
        self.venues, self.levels = venues, levels
        self.capacity = 2 * levels if capacity is None else capacity
        self.reset()

    def reset(self):
        self.book = BookModel(self.venues, self.levels, self.capacity)
        self.csr = CSRModel(self.regmap)
        self.cycle = 0
        self._events = [0] * self.venues   # flag events not yet passed to the CSR
        self._sync_status()

    def close(self):
        pass

    def _sync_status(self):
        """Mirror the model's status into the CSR's ro inputs and w1c sets."""
        drive = self.csr.drive
        drive("cycle", self.cycle)
        drive("malformed_count", self.book.malformed & 0xFFFF_FFFF)
        for v, vb in enumerate(self.book.books):
            for reg, attr in _COUNTERS:
                drive(reg, getattr(vb.counters, attr) & 0xFFFF_FFFF, v)
            drive("best_bid", vb.bids.level(0)[0], v)
            drive("best_ask", vb.asks.level(0)[0], v)
            if self._events[v]:
                self.csr.raise_flags("book_flags", self._events[v], v)
                self._events[v] = 0

    def read(self, addr):
        """A bus read takes one cycle and sees the state of that cycle, as the CSR does."""
        self._sync_status()
        word = self.csr.read(addr)
        self.cycle += 1
        return word

    def write(self, addr, word):
        self.cycle += 1
        self.csr.write(addr, word)

    def _observe(self, msg):
        rec = {"venue": msg["venue"], "kind": msg["kind"], "seq": msg["seq"],
               "cycle": self.cycle & 0xFFFF_FFFF}
        if self.book.step(msg) is not None:
            self._events[msg["venue"]] |= self.book.events
            out = self.book.outputs(msg["venue"])
            status = (ObsStatus.APPLIED | ObsStatus.VALID * out["valid"]
                      | ObsStatus.EXACT * out["exact"] | ObsStatus.SYNCED * out["synced"])
            rec.update(status=int(status), **{k: out[k] for k in (
                "best_bid", "best_bid_qty", "best_ask", "best_ask_qty", "bid_depth",
                "ask_depth", "bid_count", "ask_count")})
        return rec

    def run(self, msgs):
        obs = np.zeros(len(msgs), dtype=OBS_DTYPE)
        names = FEED.dtype().names
        for i, row in enumerate(np.asarray(msgs)):
            rec = self._observe(dict(zip(names, map(int, row), strict=True)))
            for key, value in rec.items():
                obs[i][key] = value
            self.cycle += 1
        self.cycle += RUN_DRAIN
        self._sync_status()
        self.last_order_cycles = np.zeros(0, dtype=np.uint64)
        return obs, np.zeros(0, dtype=ORDER_DTYPE)


def open_engine(kind="verilator", venues=2, levels=16, capacity=None, trace=False):
    """An engine of ``kind`` ("verilator" or "model") for the given build parameters."""
    if kind == "model":
        return ModelEngine(venues, levels, capacity)
    if kind == "verilator":
        from ..hw.top import Engine
        from .native import NativeEngine
        return NativeEngine(Engine(venues=venues, levels=levels, capacity=capacity),
                            trace=trace)
    raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {kind!r}")

