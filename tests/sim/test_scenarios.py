"""Synthetic scenarios: reproducible, well-formed, never crossed; the crisis has its cliff and
the two-venue cascade has the shape of domain.md section 6, and trips the engine's
cross-venue misalignment trigger."""

from pathlib import Path

import numpy as np
import pytest

from obcore.control import params
from obcore.hw.layouts import FeedKind, feed_array
from obcore.sim.model import BookModel
from obcore.sim.scenarios import SCENARIOS, generate

PARAMS = Path(__file__).resolve().parents[2] / "sim" / "params"
SEEDS = range(6)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario_is_valid_feed(name):
    """Same seed, same stream; on the engine's bounded book (16 exact levels, capacity 32)
    no gap, no crossed or locked book, no delete of an absent level, never short."""
    msgs = list(generate(name, seed=7))
    assert msgs == list(generate(name, seed=7))
    assert msgs != list(generate(name, seed=8))
    model = BookModel(venues=2, levels=16, capacity=32)
    for _, m in msgs:
        model.step(m)
    assert model.malformed == 0
    for book in model.books[:SCENARIOS[name].venues]:
        c = book.counters
        assert c.msgs > 0 and c.gaps == c.crossed == c.missing == c.capacity == 0
    moved = [m["venue"] for _, m in generate(name, seed=7, venue=1) if m["kind"] != FeedKind.TICK]
    assert set(moved) == ({1} if SCENARIOS[name].venues == 1 else {0, 1})


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


def _ticks(name, seed):
    """Per TICK: (phase, [mid per venue], [spread per venue], [thinner-side depth per venue])."""
    model = BookModel(venues=2, levels=16, capacity=32)
    rows = []
    for phase, m in generate(name, seed):
        model.step(m)
        if m["kind"] == FeedKind.TICK:
            out = [model.outputs(v) for v in (0, 1)]
            assert all(o["valid"] for o in out)    # both books are two-sided at every tick
            rows.append((phase, [(o["best_bid"] + o["best_ask"]) / 2 for o in out],
                         [o["best_ask"] - o["best_bid"] for o in out],
                         [min(o["bid_depth"], o["ask_depth"]) for o in out]))
    return rows


@pytest.mark.parametrize("seed", SEEDS)
def test_cascade_shape(seed):
    """domain.md section 6: A (thin) falls first while B holds; B follows after the lag,
    less far; then A snaps back to B. A's book is the one that thins and widens."""
    scenario = SCENARIOS["cascade"]
    burst = next(p for p in scenario.phases if p.name == "burst")
    rows = _ticks("cascade", seed)
    mid = {v: np.array([r[1][v] for r in rows]) for v in (0, 1)}
    phase = np.array([r[0] for r in rows])
    start = mid[0][0]
    planned = -burst.venues[0].drift * burst.steps            # A's fall the burst asks for
    at = {name: np.nonzero(phase == name)[0] for name in dict.fromkeys(phase)}

    a_fall = start - mid[0][at["burst"][-1]]
    assert a_fall > planned / 2                                # A cascades in the burst...
    b_during = np.abs(mid[1][at["burst"]] - mid[1][at["burst"][0] - 1])
    assert b_during.max() < a_fall / 10                        # ...while B holds
    lead = {v: int(np.nonzero(mid[v] < start - planned / 4)[0][0]) for v in (0, 1)}
    assert lead[1] - lead[0] >= burst.steps // 2               # B follows after a lag
    trough = {v: mid[v].min() for v in (0, 1)}
    assert start - trough[1] > (start - trough[0]) / 4         # B follows a good part...
    assert trough[1] > trough[0] + planned / 4                 # ...but A overshoots
    gap = np.abs(mid[0] - mid[1])
    assert gap[at["snapback"][-1]] < gap.max() / 10            # A snaps back to B
    assert mid[0][at["snapback"][-1]] > trough[0] + (trough[1] - trough[0]) / 2
    for name in ("burst", "follow"):                           # A widens and thins, B not
        at_phase = [r for r in rows if r[0] == name]
        assert min(r[2][0] for r in at_phase) > max(r[2][1] for r in at_phase)
        assert max(r[3][0] for r in at_phase) < min(r[3][1] for r in at_phase)


def _misalign(spreads, values):
    """The engine's Misalign with xv_a = xv_b = 0: (S_A - c_A/L_A) - (S_B - c_B/L_B)."""
    inv = values.get("xv_inv_liq", [1, 1])
    star = [float(c) * float(i) for c, i in zip(values["xv_c"], inv, strict=True)]
    return (spreads[0] - star[0]) - (spreads[1] - star[1])


@pytest.mark.parametrize("seed", SEEDS)
def test_cascade_misalignment_is_the_event(seed):
    """With cascade.toml's Spread*, |Misalign| at every tick stays within misalign_max in
    calm and recovery and exceeds it through the burst on A."""
    values = params.load(PARAMS / SCENARIOS["cascade"].params)
    limit = float(values["misalign_max"])
    mis = {}
    for phase, _, spreads, _ in _ticks("cascade", seed):
        mis.setdefault(phase, []).append(abs(_misalign(spreads, values)))
    assert max(mis["calm"]) <= limit and max(mis["recovery"]) <= limit
    assert min(mis["burst"]) > limit


@pytest.fixture(scope="module")
def native():
    from obcore.sim.engine import open_engine
    engine = open_engine("verilator")
    yield engine
    engine.close()


@pytest.mark.parametrize("seed", (1011, 3))
def test_cascade_trips_the_engines_misalignment_trigger(native, seed):
    """Through the Verilated engine with cascade.toml: quoting through calm, the first pull
    comes in the burst with `misalign` among its first reasons, before A's fall is over."""
    from obcore.hw.layouts import OrderKind
    from obcore.sim.demo import drive

    tagged = list(generate("cascade", seed))
    phases = np.array([p for p, _ in tagged])
    native.reset()
    obs, orders, cycles, _, pulls = drive(
        native, feed_array([m for _, m in tagged]), phases,
        params.load(PARAMS / SCENARIOS["cascade"].params), log=lambda *_: None)
    quoted = cycles[orders["kind"] == OrderKind.NEW]
    assert len(quoted) and quoted[0] < obs["cycle"][phases == "burst"][0]   # quoted in calm
    phase, at, first, cancel, _ = pulls[0]
    assert phase == "burst" and "misalign" in first, pulls[0]
    burst = obs["cycle"][phases == "burst"]
    assert burst[0] <= at <= burst[len(burst) // 2] and cancel is not None and cancel <= at + 2
