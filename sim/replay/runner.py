"""Replay updates through an engine of the ``sim.engine`` contract, in message batches."""

import numpy as np

from ...control.registers import Registers
from ...hw.layouts import OBS_DTYPE, TELEM_DTYPE, ObsStatus, feed_array
from ..engine import RUN_DRAIN

__all__ = ["replay", "counters", "BATCH", "COUNTERS", "SIGNALS"]

BATCH = 4096    # feed messages per engine.run call: bounded memory, few engine round trips
COUNTERS = ("msg", "gap", "missing", "crossed", "capacity")    # <name>_count registers
_BOOK = ("best_bid", "best_bid_qty", "best_ask", "best_ask_qty", "bid_depth", "ask_depth",
         "bid_count", "ask_count")
_FIELDS = {name: i for i, name in enumerate(OBS_DTYPE.names)}
# The telemetry fields replay reports per update, raw (formats in docs/feed.md).
SIGNALS = ("spread", "mid2", "micro_num", "micro_den", "obi_touch", "obi_depth", "sigma2_fast",
           "sigma2_slow", "sigma", "accel", "spread_star", "misalign", "regime", "sig_status",
           "xv_status")
_TELEM = [TELEM_DTYPE.names.index(name) for name in SIGNALS]
_TELEM_VENUE = TELEM_DTYPE.names.index("venue")
# A venue no message has reached yet: the engine's reset state (empty, exact, synced).
_RESET = {**dict.fromkeys(_BOOK, 0), "valid": False, "exact": True, "synced": True}
# The status bits as plain ints: an IntFlag operation costs a microsecond, and replay does
# four per update.
_APPLIED, _VALID, _EXACT, _SYNCED = (int(f) for f in (ObsStatus.APPLIED, ObsStatus.VALID,
                                                       ObsStatus.EXACT, ObsStatus.SYNCED))


def _outputs(record):
    """A venue's outputs from its latest applied observation (a tuple of OBS fields)."""
    status = record[_FIELDS["status"]]
    return {**{name: record[_FIELDS[name]] for name in _BOOK},
            "valid": bool(status & _VALID), "exact": bool(status & _EXACT),
            "synced": bool(status & _SYNCED)}


def replay(updates, engine, batch=BATCH, signals=False, idle=0):
    """Feed each update's messages to ``engine``; yield ``(update, outputs of its venue)``.

    ``outputs`` has the ``BookModel.outputs`` keys, taken from the engine's observation of the
    last applied message on that venue (unchanged by updates without one). Updates are
    gathered until ``batch`` messages are pending, so results come a batch at a time. With
    ``signals`` it yields ``(update, outputs, values)``: ``values`` the ``SIGNALS`` of the
    venue's latest telemetry record (after the update's last message on it; a TICK's record
    counts for venue 0), all 0 before its first.

    ``idle`` > 0 follows each update with up to ``RUN_DRAIN + idle`` cycles without a message
    (time for a book with price ladders to refill, as the real gaps between updates give it),
    ending as soon as no book side is refilling and no TICK is still moving sigma (the
    engines' ``settle``): every later cycle would change no book and no signal, so the
    outputs are those of a whole pause, as one ``run(update, idle=idle)`` per update gives
    them, in a fraction of the cycles. The batch's last update is followed by the run's whole
    drain. The outputs are still those of the update's last message.
    """
    state = {"obs": {}, "telem": {}}
    pending, messages = [], []
    for update in updates:
        pending.append(update)
        messages += update.messages
        if len(messages) >= batch:
            yield from _drain(engine, pending, messages, state, signals, idle)
            pending, messages = [], []
    yield from _drain(engine, pending, messages, state, signals, idle)


def _pauses(pending, n, idle):
    """Per message: ``RUN_DRAIN + idle`` after each update's last but the batch's last."""
    pauses = np.zeros(n, np.uint32)
    ends = np.cumsum([len(u.messages) for u in pending])
    ends = np.unique(ends[(ends > 0) & (ends < n)])
    pauses[ends - 1] = RUN_DRAIN + idle
    return pauses


def _drain(engine, pending, messages, state, signals, idle=0):
    if not messages:
        obs = np.zeros(0, OBS_DTYPE)
    elif idle:
        obs = engine.run(feed_array(messages), idle=idle,
                         pauses=_pauses(pending, len(messages), idle), settle=True)[0]
    else:
        obs = engine.run(feed_array(messages))[0]
    records, i = obs.tolist(), 0
    telem = engine.last_telemetry.tolist() if signals and messages else []
    venue_at, status_at = _FIELDS["venue"], _FIELDS["status"]
    latest, values = state["obs"], state["telem"]
    for update in pending:
        end = i + len(update.messages)
        for record in records[i:end]:
            if record[status_at] & _APPLIED:
                latest[record[venue_at]] = record
        for record in telem[i:end]:
            values[record[_TELEM_VENUE]] = record
        i = end
        record = latest.get(update.venue)
        outputs = _outputs(record) if record is not None else dict(_RESET)
        if signals:
            shown = values.get(update.venue)
            yield update, outputs, (tuple(shown[k] for k in _TELEM) if shown is not None
                                    else (0,) * len(SIGNALS))
        else:
            yield update, outputs


def counters(engine, venues):
    """``{name: total over venues}`` of the engine's ``<name>_count`` registers (``window``
    too in a build with price ladders)."""
    regs = Registers(engine, engine.regmap)
    names = COUNTERS + (("window",) if "window_count" in engine.regmap else ())
    return {name: sum(regs.get(f"{name}_count", v) for v in range(venues)) for name in names}
