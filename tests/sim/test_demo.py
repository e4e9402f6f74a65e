"""The main job runs end to end and its table is computed from the engine's observations."""

import importlib.util

import numpy as np

from obcore.control.cli import main
from obcore.hw.layouts import OBS_DTYPE, ObsStatus
from obcore.sim.demo import phase_table


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
