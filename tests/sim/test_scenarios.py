"""Synthetic scenarios: reproducible, well-formed, never crossed, and the crisis has its cliff."""

import pytest

from obcore.sim.model import BookModel
from obcore.sim.scenarios import SCENARIOS, generate


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario_is_valid_feed(name):
    msgs = list(generate(name, seed=7))
    assert msgs == list(generate(name, seed=7))
    assert msgs != list(generate(name, seed=8))
    model = BookModel(venues=1, levels=16, capacity=None)
    for _, m in msgs:
        model.step(m)
    c = model.books[0].counters
    assert model.malformed == 0 and c.gaps == 0 and c.crossed == 0 and c.missing == 0


def test_crisis_depth_cliff_precedes_price_fall():
    """Depth on both sides collapses in the cliff phase, before the vacuum's price move."""
    model = BookModel(venues=1, levels=16, capacity=None)
    depth, mids = {}, {}
    for phase, m in generate("crisis", seed=1011):
        if model.step(m) is None:
            continue
        out = model.outputs(0)
        if out["valid"]:
            depth.setdefault(phase, []).append(min(out["bid_depth"], out["ask_depth"]))
            mids.setdefault(phase, []).append(out["best_bid"] + out["best_ask"])
    calm = sum(depth["calm"]) / len(depth["calm"])
    assert depth["cliff"][-1] < calm / 20              # both sides vanished together
    assert max(mids["cliff"]) - min(mids["cliff"]) < 40  # before the price moved
    assert mids["vacuum"][-1] < mids["cliff"][-1] - 500  # then it fell through the vacuum
