"""The benchmark's measurements: the figure-1 trigger rows, and the order stream's rate."""

import os
import random

from obcore.hw import guard
from obcore.hw.book import BBO_LATENCY, STATUS_LATENCY
from obcore.hw.ratelimit import PULL_LATENCY
from obcore.sim.bench import _pull_latencies, order_rate
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


def test_order_rate_counts_gaps_and_back_to_back_runs():
    """Hand-worked: orders at cycles 10, 11, 12 (three back to back), 20, 23, 24."""
    rate = order_rate([10, 11, 12, 20, 23, 24])
    assert rate == {"orders": 6, "span": 15, "min_gap": 1, "longest": 3}
    assert order_rate([5, 9]) == {"orders": 2, "span": 5, "min_gap": 4, "longest": 1}
    assert order_rate([7])["min_gap"] is None


def test_crisis_quote_row_spans_the_quoters_input_paths():
    """Each crisis message's first NEW/REPLACE comes a fixed pipeline after it, set by the
    input that moved the quote (hw/quoter.py DELAY): the soonest is a BBO move (the book's
    BBO_LATENCY + DELAY["best_bid"] + the quoter's LATENCY), the latest at most a signal
    (STATUS_LATENCY + the signals' LATENCY) through the longest DELAY. On the native engine
    (the bench's), the whole scenario."""
    from obcore.hw import quoter, signals
    from obcore.sim.bench import _crisis_quotes
    from obcore.sim.engine import open_engine

    with open_engine("verilator") as engine:
        found = _crisis_quotes(engine)
    print(f"{len(found)} messages re-quoted, cycles {sorted(set(found))}")
    assert min(found) == BBO_LATENCY + quoter.DELAY["best_bid"] + quoter.LATENCY
    assert max(found) <= (STATUS_LATENCY + signals.LATENCY + max(quoter.DELAY.values())
                          + quoter.LATENCY)
    assert len(set(found)) > 1       # depth and TICK moves take the longer paths


def test_settled_pauses_row():
    """The bench's windowed-replay row on the small ladder build of the pause tests: whole
    pauses clock every cycle asked for (the messages, the pauses and each call's drain);
    settled ones fewer, and at least the message's STATUS_LATENCY + 1 after each update.
    ``settled`` itself raises if the two disagree on an observation or telemetry record."""
    from obcore.sim.engine import RUN_DRAIN
    from obcore.sim.replay.cli import idle_cycles
    from obcore.sim.replay.runner import BATCH
    from obcore.sim.speed_bench import settled

    seed = int(os.environ.get("BENCH_SEED", random.randrange(1 << 30)))
    print(f"BENCH_SEED={seed}")
    row = settled(random.Random(seed), levels=4, capacity=8)
    n, updates = row["messages"], row["updates"]
    calls = -(-n // BATCH)
    whole = n + updates * (RUN_DRAIN + idle_cycles(4)) + calls * RUN_DRAIN
    assert row["whole"]["cycles"] == whole
    least = n + updates * (STATUS_LATENCY + 1) + calls * RUN_DRAIN
    assert least <= row["settled"]["cycles"] < whole
    print(f"{n} messages, {updates} updates: {row['whole']['cycles_per_msg']:.2f} cycles a "
          f"message whole, {row['settled']['cycles_per_msg']:.2f} settled")
