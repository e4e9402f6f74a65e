"""Heartbeat loss pulls the quotes IN THE ENGINE: the Verilated gateware behind a real server,
the client's own heartbeat thread, real ZeroMQ sockets, the guard's deadline in cycles."""

import time

import numpy as np
import pytest

from obcore.control.client import EngineClient
from obcore.hw.guard import REASON
from obcore.hw.layouts import FeedKind, OrderKind, Side, feed_array
from obcore.sim.bench import arm_calm, filler
from obcore.sim.engine import RUN_DRAIN

HEARTBEAT = 1 << REASON["heartbeat"]
BATCH = 1000        # filler messages per feed request: BATCH + RUN_DRAIN cycles
DEADLINE = 20_000   # heartbeat_timeout, cycles: far more than the cycles between two beats
SEED = 8            # the calm book the engine is armed on


pytestmark = pytest.mark.parametrize("server", ["verilator"], indirect=True)


@pytest.fixture
def armed(server):
    """A client of the native engine armed on a calm book with the client's heartbeat
    running every 5 ms: ``(client, regs, orders fed so far, next seq, subscriber)``."""
    with EngineClient(server.endpoint, timeout=5000) as c:
        c.reset()
        regs = c.registers()
        sub = c.subscribe(("event",), hwm=100_000)
        orders = []
        regs.set("heartbeat_timeout", DEADLINE)
        c.start_heartbeat(5)

        def run(msgs):
            orders.append(c.feed(msgs, dump="orders")[1])

        seq = arm_calm(regs, run, SEED)
        orders.clear()   # from here on: what the armed engine sends
        yield c, regs, orders, seq, sub


def _beat_then_feed(client, run, seq, batches):
    """Feed ``batches`` filler batches, each only after a heartbeat arrived since the last."""
    for _ in range(batches):
        seen, deadline = client.heartbeats, time.monotonic() + 10
        while client.heartbeats == seen:
            assert time.monotonic() < deadline and client.heartbeat_error is None, (
                f"the heartbeat stopped: {client.heartbeat_error}")
            time.sleep(0.001)
        run(filler(seq, BATCH))
        seq += BATCH
    return seq


def _kinds(orders):
    return np.concatenate(orders)["kind"] if orders else np.zeros(0)


def test_heartbeats_keep_the_quotes_heartbeat_loss_pulls_them(armed):
    c, regs, orders, seq, sub = armed

    def run(msgs):
        orders.append(c.feed(msgs, dump="orders")[1])

    # Beating: three deadlines' worth of cycles pass, and the quotes stay: a move of the
    # best ask then re-quotes (REPLACE) instead of finding them pulled.
    seq = _beat_then_feed(c, run, seq, 3 * DEADLINE // BATCH)
    # The best ask goes (a spread of 1 leaves no room for a better bid): the mid moves up.
    run(feed_array([{"kind": FeedKind.LEVEL_DELETE, "venue": 0, "side": Side.ASK, "flags": 0,
                     "seq": seq, "price": regs.get_raw("best_ask", 0), "size": 0}]))
    seq += 1
    assert regs.get_raw("pull_state") & 1 == 0
    assert regs.get_raw("pull_reasons") & HEARTBEAT == 0
    kinds = _kinds(orders)
    assert OrderKind.REPLACE in kinds and OrderKind.CANCEL_ALL not in kinds

    # Silent: the deadline passes within the cycles fed, and the guard pulls.
    c.stop_heartbeat()
    stopped = regs.get("cycle")   # no heartbeat reaches the engine after this
    orders.clear()
    for _ in range(2 * DEADLINE // BATCH):
        run(filler(seq, BATCH))
        seq += BATCH
    assert regs.get_raw("pull_state") & 1
    assert regs.get_raw("pull_reasons") & HEARTBEAT
    assert regs.get_raw("pull_first") == HEARTBEAT   # the heartbeat, nothing else, pulled
    pulled = regs.get("pull_cycle") - stopped
    # The last beat came at most two batches (and a few register reads) before `stopped`.
    assert DEADLINE - 2 * (BATCH + RUN_DRAIN) - 200 < pulled <= DEADLINE + 16, pulled
    kinds = _kinds(orders)
    assert OrderKind.CANCEL_ALL in kinds

    # The same on the telemetry channel: the pull reason latched, the CANCEL_ALL counted.
    seen = {"flags": False, "orders": False}
    deadline = time.monotonic() + 10
    while not all(seen.values()) and time.monotonic() < deadline:
        msg = sub.recv(100)
        if msg is None:
            continue
        if msg["event"] == "flags" and msg["register"] == "pull_reasons":
            seen["flags"] |= bool(msg["new"] & HEARTBEAT and not msg["old"] & HEARTBEAT)
        if msg["event"] == "obs":
            seen["orders"] |= msg["order_kinds"].get("CANCEL_ALL", 0) > 0
    assert seen == {"flags": True, "orders": True} and sub.missed == 0
