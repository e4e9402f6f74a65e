"""The sim server's engine activity, telemetry and log: feed, status snapshots, log lines."""

import logging
import time

import numpy as np
import zmq

from ..control import protocol as proto
from ..hw.layouts import FeedKind, ObsStatus, OrderKind, feed_array
from .scenarios import SCENARIOS, generate

__all__ = ["ScenarioFeed", "Publisher", "LogWriter", "bulk_access", "FAST_BATCH", "FLUSH_S"]

FAST_BATCH = 512    # messages of the first engine call at pace "fast"
# Later calls are sized to take about FAST_BATCH_S of CPU time (wall time would shrink them
# on a busy machine): requests are answered and telemetry published between calls, so this
# bounds their wait while the feed runs flat out.
FAST_BATCH_S = 0.001
# With telemetry on, a fast batch also ends when the next snapshot is due (at the CPU time
# per message of the last batch), but is at least half the full size: the cost of a call
# (its drain cycles, the counting) stays small beside its messages when telemetry lags.
CATCH_UP_S = 0.05   # telemetry that falls further behind than this skips periods
# Telemetry re-reads a changed engine at most after REFRESH_SHARE times the last read took,
# so snapshots (a bus read per word, a clock cycle each) take at most 1/(1+REFRESH_SHARE) of
# the loop: the simulation and requests keep their pace.
REFRESH_SHARE = 49
# Longest a request's log line and event wait (plus a turn of the loop): what requests did
# is logged and published in batches (Server._note), and LogWriter writes in blocks.
FLUSH_S = 0.1
log = logging.getLogger("obcore.sim")
_KINDS = {int(k): k.name for k in OrderKind}
_LAST = ("best_bid", "best_ask", "bid_depth", "ask_depth", "status")


def bulk_access(engine):
    """``(read_many(addrs) -> words, write_many(pairs))`` for ``engine``: its own calls for
    many bus accesses at once where it has them, else one ``read``/``write`` per word."""
    read, write = getattr(engine, "read_many", None), getattr(engine, "write_many", None)
    return (read or (lambda addrs: [engine.read(a) for a in addrs]),
            write or (lambda pairs: [engine.write(a, w) for a, w in pairs]))


def _elements(value):
    return value if isinstance(value, list) else [value]


class ScenarioFeed:
    """A synthetic scenario the server feeds itself: one batch per TICK at ``tick_ms`` of
    wall-clock time (pace "realtime"), or as many messages per loop turn as the server asks
    for ("fast"). ``repeat``: when the scenario ends, replay it again (it opens with a
    snapshot, so the book resyncs), until the server stops."""

    def __init__(self, name, seed, pace="realtime", tick_ms=100.0, repeat=False):
        if name not in SCENARIOS:
            raise ValueError(f"unknown scenario {name!r}; choose one of {', '.join(SCENARIOS)}")
        if pace not in ("realtime", "fast") or not tick_ms > 0:
            raise ValueError(f"pace must be realtime or fast and tick_ms > 0, not {pace!r}, "
                             f"{tick_ms!r}")
        self.name, self.seed, self.pace, self.tick_s = name, seed, pace, tick_ms / 1000
        self.repeat, self.runs = repeat, 0
        self.sent, self.done, self.due = 0, False, None
        self._msgs, self._at = feed_array([]), 0

    def wait_s(self, now):
        """Seconds until the next batch is due; None when the scenario is over."""
        if self.done:
            return None
        return 0.0 if self.due is None else max(0.0, self.due - now)

    def next_batch(self, now, size=FAST_BATCH):
        """The batch due at ``now`` (monotonic seconds), else None; at pace "fast", ``size``
        messages (fewer at the end of a run)."""
        if self.wait_s(now) != 0.0:
            return None
        if self._at == len(self._msgs):
            if self.runs and not self.repeat:
                self.done = True
                return None
            if not self.runs:
                self._msgs = feed_array([m for _, m in generate(self.name, self.seed)])
            self._at, self.runs = 0, self.runs + 1
        if self.pace == "fast":
            end = min(len(self._msgs), self._at + size)
        else:   # through the next TICK
            ticks = np.flatnonzero(self._msgs["kind"][self._at:] == FeedKind.TICK)
            end = self._at + int(ticks[0]) + 1 if len(ticks) else len(self._msgs)
        batch, self._at = self._msgs[self._at:end], end
        self.sent += len(batch)
        if self.pace == "realtime":   # after a stall, resume the pace instead of bursting
            late = self.due is None or now - self.due > self.tick_s
            self.due = (now if late else self.due) + self.tick_s
        return batch

    def state(self):
        return {"scenario": self.name, "seed": self.seed, "pace": self.pace,
                "messages": self.sent, "runs": self.runs, "done": self.done}


class Publisher:
    """The engine's activity as the server's telemetry shows it.

    Runs feed batches (the server's own ``feed``, a :class:`ScenarioFeed` or None, and
    requests' batches) keeping the observation totals; keeps the status snapshot (read
    again after :meth:`changed`); publishes on ``pub`` (a PUB socket, or None: nothing is
    sent) with per-topic sequence numbers under ``run_id``, a snapshot every 1/``hz`` s.
    """

    def __init__(self, engine, pub, run_id, hz, feed=None):
        self.engine, self.pub, self.run_id, self.feed = engine, pub, run_id, feed
        self.period = 1 / hz if hz and pub is not None else None
        self.status_regs = [r for r in engine.regmap if r.access in ("ro", "w1c") and not r.const]
        self._addrs, self._plan = self._status_plan()
        self._read_many = bulk_access(engine)[0]
        self.snapshot, self._published, self._refresh_at = None, None, 0.0
        self._status_json = None   # the JSON of the snapshot last published
        self._seq = dict.fromkeys(proto.TOPICS, 0)
        self._fast, self._msg_s = FAST_BATCH, None
        self._next_tick = time.monotonic()
        self._obs = self._fresh_obs()

    def _status_plan(self):
        """Every status word's address (a wide register's low word first: it latches the
        rest), and per register its name, element count, and per element its word count
        and the width, sign and scale of its value."""
        addrs, plan = [], []
        for reg in self.status_regs:
            fmt = reg.fmt
            addrs += [reg.element(i) + w for i in range(reg.count) for w in range(reg.words)]
            plan.append((reg.name, reg.count, [(reg.words, fmt.width, fmt.signed,
                                                1 << fmt.frac_bits)] * reg.count))
        return addrs, plan

    def changed(self):
        """The engine changed: the next snapshot reads it again."""
        self.snapshot = None

    def status(self):
        """The status snapshot: every status register in real units, and the feed's state."""
        if self.snapshot is None:
            words, at, regs = self._read_many(self._addrs), 0, {}
            for name, count, elements in self._plan:
                values = []
                for n, width, signed, scale in elements:
                    raw = words[at]
                    for w in range(1, n):
                        raw |= words[at + w] << (32 * w)
                    at += n
                    raw &= (1 << width) - 1
                    if signed and raw >> (width - 1):
                        raw -= 1 << width
                    # As Registers.get, as a JSON number: exact int, or the nearest float
                    # (int / power of two rounds once, like float(Fraction)).
                    values.append(raw if scale == 1 else raw / scale)
                regs[name] = values if count > 1 else values[0]
            self.snapshot = {"regs": regs, "feed": self.feed.state() if self.feed else None}
        return self.snapshot

    @staticmethod
    def _fresh_obs():
        return {"messages": 0, "applied": 0, "orders": 0, "order_kinds": {}, "last": {}}

    def run(self, msgs):
        """``engine.run(msgs)``, counted into the next ``obs`` event."""
        obs, orders = self.engine.run(msgs)
        self.changed()
        acc = self._obs
        applied = np.flatnonzero(obs["status"] & ObsStatus.APPLIED)
        acc["messages"] += len(obs)
        acc["applied"] += len(applied)
        acc["orders"] += len(orders)
        kinds = acc["order_kinds"]
        for kind in orders["kind"].tolist():   # a few per batch: cheaper than np.unique
            name = _KINDS[kind]
            kinds[name] = kinds.get(name, 0) + 1
        if len(applied):   # per venue, its last applied message
            venues = obs["venue"][applied]
            for venue in range(int(venues.max()) + 1):
                at = np.flatnonzero(venues == venue)
                if len(at):
                    i = applied[at[-1]]
                    acc["last"][str(venue)] = {f: int(obs[f][i]) for f in _LAST}
        return obs, orders

    def wait_s(self, now):
        """Seconds until :meth:`step` has work (0: now), None if it never will."""
        waits = [w for w in (self._next_tick - now if self.period else None,
                             self.feed.wait_s(now) if self.feed else None) if w is not None]
        return max(0.0, min(waits)) if waits else None

    def step(self, now):
        """The feed's next batch if one is due, then telemetry if it is due."""
        if self.feed and not self.feed.done:
            self._feed_step(now)
            now = time.monotonic()
        if self.period and now >= self._next_tick:
            self._tick()
            # Keep the rate through short stalls; after a long one, skip ahead.
            self._next_tick = max(self._next_tick + self.period, now - CATCH_UP_S)

    def _feed_step(self, now):
        size = self._fast
        if self.period and self._msg_s:   # done when the next snapshot is due
            size = min(size, max(size // 2, int((self._next_tick - now) / self._msg_s)))
        batch, cpu = self.feed.next_batch(now, size), time.thread_time()
        if batch is not None:
            self.run(batch)
            took = time.thread_time() - cpu
            if len(batch) >= self._fast // 2 and took > 0:
                self._msg_s = took / len(batch)
            if len(batch) == self._fast and took > 0:   # a full fast batch: resize
                self._fast = max(16, min(1 << 14, round(self._fast * (
                    FAST_BATCH_S / took) ** 0.5)))
        elif self.feed.done:
            log.info("scenario %s done: %d messages", self.feed.name, self.feed.sent)
            self.publish("event", {"event": "feed", "state": "done", **self.feed.state()})
            self.changed()

    def publish(self, topic, body, **encoded):
        """Send ``body`` on ``topic`` with the topic's next sequence number (see
        :func:`~obcore.control.protocol.encode_telemetry` for ``encoded``)."""
        if self.pub is not None:
            self.pub.send_multipart(proto.encode_telemetry(topic, self._seq[topic],
                                                           self.run_id, body, **encoded),
                                    zmq.NOBLOCK)
            self._seq[topic] += 1

    def _tick(self):
        """One telemetry period: the status snapshot, then what changed since the last."""
        now, old = time.monotonic(), self._published
        if self.snapshot is None and (old is None or now >= self._refresh_at):
            self.status()
            self._refresh_at = time.monotonic() + REFRESH_SHARE * (time.monotonic() - now)
        new = self.snapshot or old
        if old is not new or self._status_json is None:
            self._status_json = proto.encode_json(new)
        self.publish("status", {}, status=self._status_json)
        if old is not None and old is not new:
            for reg in self.status_regs:
                before, after = _elements(old["regs"][reg.name]), _elements(
                    new["regs"][reg.name])
                for i, (b, a) in enumerate(zip(before, after, strict=True)):
                    if reg.access == "w1c" and b != a:
                        self.publish("event", {"event": "flags", "register": reg.name,
                                               "index": i, "old": b, "new": a})
            changed = {r.name: new["regs"][r.name] for r in self.status_regs
                       if r.name.endswith(("_count", "_errors"))
                       and old["regs"][r.name] != new["regs"][r.name]}
            if changed:
                self.publish("event", {"event": "counters", "changed": changed})
        self._published = new
        if self._obs["messages"]:
            self.publish("event", {"event": "obs", **self._obs})
            self._obs = self._fresh_obs()


class _Formatter(logging.Formatter):
    """The standard format, but the seconds of ``asctime`` are made once per second."""
    _sec, _text = None, ""

    def formatTime(self, record, datefmt=None):
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        sec = int(record.created)
        if sec != self._sec:
            self._sec, self._text = sec, time.strftime(self.default_time_format,
                                                       self.converter(record.created))
        return self.default_msec_format % (self._text, record.msecs)


class LogWriter(logging.Handler):
    """Log records formatted with ``fmt`` and written to ``stream`` in blocks.

    A record is formatted at once and kept; :meth:`flush_due` (the serving loop calls it
    after every turn) writes the kept lines once FLUSH_S has passed since the first of them,
    :meth:`flush` and :meth:`close` (a stop, logging's shutdown) write them all. So a burst
    of audited writes costs one write to the stream instead of one each, and a line is late
    by at most FLUSH_S plus a turn of the loop; only a killed process loses lines.
    """

    def __init__(self, stream, fmt):
        super().__init__()
        self.stream, self._lines, self._due = stream, [], None
        self.setFormatter(_Formatter(fmt))

    def emit(self, record):   # called with self.lock held
        try:
            self._lines.append(self.format(record))
        except Exception:
            self.handleError(record)
            return
        if self._due is None:
            self._due = time.monotonic() + FLUSH_S

    def flush_due(self, now=None):
        """Write the kept lines if they are due at ``now`` (monotonic s); None: now."""
        if self._due is None or (now is not None and now < self._due):
            return
        with self.lock:
            lines, self._lines, self._due = self._lines, [], None
        if lines:
            self.stream.write("\n".join(lines) + "\n")
            self.stream.flush()

    def flush(self):
        self.flush_due()

    def close(self):
        self.flush()
        super().close()
