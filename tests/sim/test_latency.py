"""The latency probe measures what docs/book.md and docs/signals.md promise, output by output."""

import os
import random

from obcore.hw.book import BBO_LATENCY, STATUS_LATENCY
from obcore.hw.signals import IMB_LATENCY, SIGMA_LAG
from obcore.hw.signals import LATENCY as SIG_LATENCY
from obcore.sim.latency import PROBE_PARAMS, measure, random_messages

BBO = ("best_bid", "best_bid_qty", "best_ask", "best_ask_qty")
STATUS = ("bid_depth", "ask_depth", "bid_count", "ask_count")
# Registered SIG_LATENCY after the book's status (the BBO is delayed to meet it).
SIGNALS = ("spread", "mid2", "micro_num", "micro_den", "sigma2_fast", "sigma2_slow", "accel",
           "regime", "sig_status", "xv_status")
# Through the serial square root: sigma and what is computed from it.
ROOTED = ("sigma", "spread_star", "misalign", "xv_status")


def test_every_output_follows_a_message_by_its_documented_latency():
    seed = int(os.environ.get("LATENCY_SEED", random.randrange(1 << 30)))
    print(f"LATENCY_SEED={seed}")
    got = measure(*random_messages(seed, 60), PROBE_PARAMS)
    for name in (*BBO, *STATUS, "spread", "mid2", "micro_num", "obi_touch_q", "obi_depth_q",
                 "sig_status"):
        assert got[f"book.{name}" if name in BBO + STATUS else f"signals.{name}"], name
    for name in BBO:
        assert set(got[f"book.{name}"]) == {BBO_LATENCY}, name
    for name in STATUS:
        assert set(got[f"book.{name}"]) == {STATUS_LATENCY}, name
    signal = STATUS_LATENCY + SIG_LATENCY
    rooted = range(signal + 1, signal + SIGMA_LAG + 1)
    for name in SIGNALS:
        late = [n for n in got[f"signals.{name}"] if n != signal]
        assert name in ROOTED or not late, (name, late)
        assert all(n in rooted for n in late), (name, late)
    for name in ("obi_touch_q", "obi_depth_q"):
        assert set(got[f"signals.{name}"]) == {STATUS_LATENCY + IMB_LATENCY}, name
    for name in ("sigma", "spread_star"):
        assert all(n in rooted for n in got[f"signals.{name}"]), name
