"""Stopping a stalled router2 run: the watch on a hand-made iteration sequence, and a fake
tool that stalls, stopped by `run_steps` with the reason and without an orphaned process."""

import io
import os
import sys
import time

import pytest

from obcore.sim.synth_run import ROUTE_FLOOR, RouteWatch, run_steps


def router2(*overused, start=1):
    """nextpnr router2's iteration lines for the given overuse counts."""
    return b"".join(b"Info:     iter=%d wires=1000 overused=%d overuse=%d archfail=NA\n"
                    % (i, o, o + 7) for i, o in enumerate(overused, start))

# router2's overused wires per iteration, from two routes of the 2-venue quoter on the
# ECPIX-5 85F (session 10): seed 2 converged at iteration 148 after 61 iterations at 1-2
# wires; seed 1 stalled near 250 and rose (stopped by hand at iteration 85).
CONVERGED = (
    18437, 11281, 7288, 5088, 3570, 2654, 1966, 1582, 1346, 1100, 942, 770, 716, 590, 506,
    439, 428, 361, 327, 295, 231, 181, 170, 156, 138, 127, 127, 107, 90, 71, 62, 64, 48, 54,
    46, 40, 35, 40, 38, 39, 41, 44, 37, 34, 35, 34, 33, 33, 30, 25, 26, 22, 19, 20, 17, 19,
    17, 15, 19, 18, 19, 23, 21, 19, 19, 21, 15, 11, 11, 8, 6, 10, 7, 8, 7, 5, 6, 5, 6, 4, 5,
    6, 3, 4, 2, 2, 1, 1, 2, 1, 1, 1, 1, 1, 1, 1, 2, 1, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 0,
)

STALLED = (
    18062, 11206, 7260, 5132, 3691, 2805, 2199, 1768, 1395, 1100, 925, 889, 796, 672, 587,
    535, 460, 421, 407, 362, 374, 352, 309, 337, 298, 315, 326, 337, 383, 330, 325, 277, 296,
    272, 254, 268, 257, 289, 273, 265, 285, 301, 291, 284, 285, 291, 278, 252, 269, 258, 266,
    278, 296, 317, 321, 354, 357, 375, 435, 488, 493, 570, 568, 609, 556, 553, 598, 656, 729,
    773, 720, 752, 807, 867, 888, 894, 1105, 1110, 1179, 1191, 1295, 1316, 1369, 1410, 1443,
)


def test_the_measured_routes():
    """Default patience: the converged route runs to the end, the stall stops 20 iterations
    after its lowest count (252 at iteration 48), 17 before it was stopped by hand."""
    watch = RouteWatch()
    assert watch.feed(router2(*CONVERGED)) is None and watch.best == 0
    watch, stopped = RouteWatch(), None
    for i, over in enumerate(STALLED, 1):
        stopped = stopped or (watch.feed(router2(over, start=i)) and i)
    assert stopped == 68 and (watch.best, watch.best_at) == (252, 48)


def test_a_falling_route_never_stalls():
    watch = RouteWatch(patience=3)
    log = router2(900, 500, 501, 502, 300, 301, 302, 40, 41, 42, 0)
    for end in range(len(log.splitlines()) + 1):   # fed as it grows, repeats ignored
        assert watch.feed(b"\n".join(log.splitlines()[:end])) is None
    assert (watch.iteration, watch.best, watch.best_at) == (11, 0, 11)


def test_a_plateau_stalls_after_patience_iterations():
    watch = RouteWatch(patience=4)
    assert watch.feed(router2(900, 500, 520, 510, 505)) is None      # best 500 at 2, now 5
    reason = watch.feed(router2(530, start=6))                         # 4 without a new best
    assert reason.startswith("router2 stalled: 530 overused wires at iteration 6, none below "
                             "500 (iteration 2) for 4 iterations")
    assert "--seed" in reason
    assert watch.status() == ", iteration 6: 530 overused wires (lowest 500 at 2)"


def test_patience_zero_never_stops_and_bad_patience_is_refused():
    watch = RouteWatch(patience=0)
    assert watch.feed(router2(500, *[900] * 200)) is None
    watch = RouteWatch(patience=5)              # near convergence: at most ROUTE_FLOOR wires
    assert watch.feed(router2(ROUTE_FLOOR, *[2 * ROUTE_FLOOR] * 200)) is None
    for bad in (-1, 2.5, True, None):
        with pytest.raises(ValueError, match="route patience must be a non-negative integer"):
            RouteWatch(patience=bad)


STALLING_TOOL = """
import sys, time
with open("top.tim", "wb", buffering=0) as f:
    f.write(b"Info: Running placer...\\nInfo: Running router2...\\n")
    for i in range(1, 1000):
        f.write(b"Info:     iter=%d wires=10 overused=%d overuse=1 archfail=NA\\n"
                % (i, 1000 if i == 1 else 1500))
        time.sleep(0.05)
    time.sleep(60)
    open("finished", "w").close()
"""


def test_run_steps_stops_a_stalled_route(tmp_path):
    (tmp_path / "tool.py").write_text(STALLING_TOOL)
    out, start = io.StringIO(), time.monotonic()
    with pytest.raises(RuntimeError, match=r"stopped after \d+ s: router2 stalled: 1,500 "
                                           r"overused wires at iteration \d+, none below 1,000"):
        run_steps(tmp_path, [[sys.executable, "tool.py"]], dict(os.environ), start, out,
                  "fake build", patience=5)
    assert time.monotonic() - start < 30
    assert "route (nextpnr)" in out.getvalue() and "router2 stalled" in out.getvalue()
    time.sleep(0.5)
    assert not (tmp_path / "finished").exists()   # the tool was ended, not left running
