"""A short soak on loopback: writers and subscribers while the server replays a scenario.

The long one, with its figures, is a section of `obcore bench`; this checks the invariants
only: every request answered and right, telemetry without gaps, memory flat, data flowing.
"""

from obcore.sim.control_bench import soak
from obcore.sim.engine import ModelEngine
from obcore.sim.publisher import ScenarioFeed

MIB = 1 << 20


def test_soak_answers_everything_with_continuous_telemetry_and_flat_memory(serve):
    feed = ScenarioFeed("calm", 5, "fast", repeat=True)
    with serve(ModelEngine(), feed=feed, telemetry_hz=500) as (srv, _):
        result = soak(srv.endpoint, seconds=3, writers=3, subscribers=2, samples=12)
    print(result)
    assert result["requests"] > 100 and result["replayed"] > 1000 and feed.runs >= 1
    assert (result["lost"], result["wrong"], result["errors"]) == (0, 0, 0)
    assert result["telemetry"] > 100 and result["missed"] == 0
    warm, end = result["rss"][2], result["rss"][-1]   # after a quarter of the run
    assert end - warm < 16 * MIB, [r // MIB for r in result["rss"]]
