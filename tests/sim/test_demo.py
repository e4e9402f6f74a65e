"""The main job runs end to end, its table is computed from the engine's observations, and
on the gateware it pulls in the event and re-arms by itself after it."""

import importlib.util

import numpy as np
import pytest

from obcore.control import params
from obcore.control.cli import main
from obcore.hw.layouts import OBS_DTYPE, ObsStatus, OrderKind, feed_array
from obcore.sim.demo import COOLDOWN, PARAMS, phase_table, simulate
from obcore.sim.fills import FillModel, fill_rng
from obcore.sim.scenarios import SCENARIOS, generate


def test_phase_table_hand_worked():
    obs = np.zeros(4, OBS_DTYPE)
    full = ObsStatus.APPLIED | ObsStatus.VALID | ObsStatus.EXACT
    for i, (bid, ask, bd, ad, status) in enumerate([(10, 12, 5, 7, full), (10, 14, 3, 9, full),
                                                    (0, 14, 0, 9, ObsStatus.APPLIED),
                                                    (20, 21, 50, 40, ObsStatus.APPLIED
                                                     | ObsStatus.VALID)]):
        for k, v in {"best_bid": bid, "best_ask": ask, "bid_depth": bd, "ask_depth": ad,
                     "status": int(status)}.items():
            obs[i][k] = v
    rows = dict(phase_table(np.array(["a", "a", "a", "b"]), obs))
    assert rows["a"] == {"messages": 3, "spread_mean": 3.0, "spread_max": 4, "depth_min": 3,
                         "depth_mean": 4.0, "one_sided": 1, "not_exact": 1}
    assert rows["b"]["not_exact"] == 1 and rows["b"]["depth_min"] == 40


def test_demo_on_the_reference_engine_prints_every_phase(tmp_path, capsys):
    png = tmp_path / "demo.png"
    assert main(["demo", "--engine", "model", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    for phase in ("calm", "cliff", "vacuum", "recovery"):
        assert f"\n{phase} " in out
    if importlib.util.find_spec("matplotlib") is None:   # the plot extra is optional
        assert not png.exists()
    else:
        assert png.exists() and png.stat().st_size > 10_000


@pytest.fixture(scope="module")
def native():
    from obcore.sim.engine import open_engine
    engine = open_engine("verilator")
    yield engine
    engine.close()


@pytest.mark.parametrize("name,seed", [("crisis", 1011), ("crisis", 7), ("cascade", 1011)])
def test_pulled_in_the_event_and_rearmed_automatically_after_it(native, name, seed):
    """Issue #6 in the demo: with the demo's auto re-arm, the engine pulls once in the event,
    sends nothing but cancels until it re-arms by itself in the recovery, no sooner than
    the cool-down after the pull, and quotes again; no trigger flickers afterwards."""
    tagged = list(generate(name, seed))
    phases = np.array([p for p, _ in tagged])
    values = params.load(PARAMS.with_name(SCENARIOS[name].params))
    values.update(auto_arm=1, cooldown=COOLDOWN)
    native.reset()
    run = simulate(native, feed_array([m for _, m in tagged]), phases, values,
                   FillModel(), fill_rng(seed), log=lambda *_: None)
    event = {"crisis": "cliff", "cascade": "burst"}[name]
    assert [p[0] for p in run.pulls] == [event], run.pulls
    assert [r[0] for r in run.rearms] == ["recovery"], run.rearms
    (_, pulled_at, _, cancel, _), (_, back) = run.pulls[0], run.rearms[0]
    assert cancel is not None and pulled_at <= cancel <= pulled_at + 2
    assert back > pulled_at + COOLDOWN
    kinds = run.orders["kind"]
    between = (run.cycles > cancel) & (run.cycles < back)
    assert not np.isin(kinds[between], (OrderKind.NEW, OrderKind.REPLACE)).any()
    assert (kinds[run.cycles >= back] == OrderKind.NEW).any()
    recovery = phases == "recovery"
    assert run.pulled[recovery].any() and not run.pulled[recovery][-100:].any()


def test_demo_on_the_gateware_reports_pull_rearm_and_account(tmp_path, capsys):
    png = tmp_path / "demo.png"
    assert main(["demo", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "PULL in phase cliff" in out and "CANCEL_ALL left at cycle" in out
    assert "RE-ARMED automatically in phase recovery" in out
    assert "own fills:" in out and "P&L" in out
    assert "engine position registers == host inventory at every phase end" in out
    assert png.exists() or importlib.util.find_spec("matplotlib") is None
