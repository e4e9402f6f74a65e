"""Replay updates through an engine of the ``sim.engine`` contract, in message batches."""

import numpy as np

from ...control.registers import Registers
from ...hw.layouts import OBS_DTYPE, ObsStatus, feed_array

__all__ = ["replay", "counters", "BATCH", "COUNTERS"]

BATCH = 4096    # feed messages per engine.run call: bounded memory, few engine round trips
COUNTERS = ("msg", "gap", "missing", "crossed", "capacity")    # <name>_count registers
_BOOK = ("best_bid", "best_bid_qty", "best_ask", "best_ask_qty", "bid_depth", "ask_depth",
         "bid_count", "ask_count")
_FIELDS = {name: i for i, name in enumerate(OBS_DTYPE.names)}
# A venue no message has reached yet: the engine's reset state (empty, exact, synced).
_RESET = {**dict.fromkeys(_BOOK, 0), "valid": False, "exact": True, "synced": True}


def _outputs(record):
    """A venue's outputs from its latest applied observation (a tuple of OBS fields)."""
    status = record[_FIELDS["status"]]
    return {**{name: record[_FIELDS[name]] for name in _BOOK},
            "valid": bool(status & ObsStatus.VALID), "exact": bool(status & ObsStatus.EXACT),
            "synced": bool(status & ObsStatus.SYNCED)}


def replay(updates, engine, batch=BATCH):
    """Feed each update's messages to ``engine``; yield ``(update, outputs of its venue)``.

    ``outputs`` has the ``BookModel.outputs`` keys, taken from the engine's observation of the
    last applied message on that venue (unchanged by updates without one). Updates are
    gathered until ``batch`` messages are pending, so results come a batch at a time.
    """
    latest, pending, messages = {}, [], []
    for update in updates:
        pending.append(update)
        messages += update.messages
        if len(messages) >= batch:
            yield from _drain(engine, pending, messages, latest)
            pending, messages = [], []
    yield from _drain(engine, pending, messages, latest)


def _drain(engine, pending, messages, latest):
    obs = engine.run(feed_array(messages))[0] if messages else np.zeros(0, OBS_DTYPE)
    records, i = obs.tolist(), 0
    venue_at, status_at = _FIELDS["venue"], _FIELDS["status"]
    for update in pending:
        for record in records[i:i + len(update.messages)]:
            if record[status_at] & ObsStatus.APPLIED:
                latest[record[venue_at]] = record
        i += len(update.messages)
        record = latest.get(update.venue)
        yield update, (_outputs(record) if record is not None else dict(_RESET))


def counters(engine, venues):
    """``{name: total over venues}`` of the engine's ``<name>_count`` registers."""
    regs = Registers(engine, engine.regmap)
    return {name: sum(regs.get(f"{name}_count", v) for v in range(venues))
            for name in COUNTERS}
