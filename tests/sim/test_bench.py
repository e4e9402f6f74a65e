"""The benchmark's figure-1 trigger rows measure the documented per-trigger latencies."""

import os
import random

from obcore.hw import guard
from obcore.hw.book import BBO_LATENCY, STATUS_LATENCY
from obcore.hw.ratelimit import PULL_LATENCY
from obcore.sim.bench import _pull_latencies
from obcore.sim.engine import ModelEngine


def test_pull_rows_count_from_the_triggering_message():
    """Crossed book: the crossing message; depth collapse: the first delete that took bid
    depth under ``depth_min`` (not the last message before ``pull`` rose). Each row is the
    formula of docs/guard.md's table, on the reference engine."""
    seed = int(os.environ.get("BENCH_SEED", random.randrange(1 << 30)))
    print(f"BENCH_SEED={seed}")
    rows = _pull_latencies(ModelEngine(), random.Random(seed), 2)
    assert rows["crossed book"] == [BBO_LATENCY + guard.LATENCY + PULL_LATENCY] * 2
    assert rows["depth collapse"] == [STATUS_LATENCY + guard.LATENCY + PULL_LATENCY] * 2
