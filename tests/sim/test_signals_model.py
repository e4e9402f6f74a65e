"""The signal reference model on hand-worked books: every number below is computed by hand."""

import math

import pytest

from obcore.hw.registers import REGISTERS, to_fixed
from obcore.hw.signals import (
    CLAMP_MAX,
    IMB_MAX,
    SHIFT_MAX,
    SIGMA_BITS,
    STATUS,
    VOL_STAGES,
    LiqRegime,
    VolRegime,
)
from obcore.sim.signals_model import EMPTY_BOOK, SignalsModel, imbalance, pack


def raw(name, value):
    return to_fixed(REGISTERS[name], value)


def book(bid=1000, ask=1004, vb=30, va=10, db=100, da=50):
    return {"best_bid": bid, "best_ask": ask, "best_bid_qty": vb if bid else 0,
            "best_ask_qty": va if ask else 0, "bid_depth": db if bid else 0,
            "ask_depth": da if ask else 0, "valid": int(bool(bid and ask)), "updated": 1}


def model(**params):
    """A one-venue model with the given parameters (real values)."""
    m = SignalsModel(venues=1)
    for name, value in params.items():
        m.params[name] = [raw(name, value)]
    return m


def step(m, b, tick=False):
    return m.step([b], tick)["venues"][0]


def settle(m, b):
    """Quiet cycles until the sequential root has caught up with sigma2 (sigma_fresh)."""
    for _ in range(3 * SIGMA_BITS):
        out = step(m, b)
        if out["status"]["sigma_fresh"]:
            return out
    raise AssertionError("sigma never became fresh")


@pytest.mark.parametrize(("theta", "over"), [("0.4", True), ("0.5", False), ("0.6", False)])
def test_touch_book_and_imbalance(theta, over):
    out = step(model(obi_touch_th=theta, obi_depth_th="0.3"), book())
    # S = 1004 - 1000, a + b = 2004; microprice (1000*10 + 1004*30)/40 = 1003 = b + 120/40.
    assert (out["spread"], out["mid2"], out["micro_num"], out["micro_den"]) == (4, 2004, 120, 40)
    assert 1000 + out["micro_num"] / out["micro_den"] == 1003
    s = out["status"]
    # (30 - 10)/40 = 0.5: strictly over 0.4 only; bid-heavy. Depth (100-50)/150 = 1/3 > 0.3.
    assert s["touch_valid"] and s["obi_touch_valid"] and s["obi_touch_bid"]
    assert s["obi_touch_over"] is over
    assert s["obi_depth_over"] and s["obi_depth_bid"]
    assert not step(model(obi_depth_th="0.34"), book())["status"]["obi_depth_over"]


def test_one_sided_and_empty_books_are_flagged_not_garbage():
    out = step(model(obi_touch_th="0.99"), book(ask=0))
    assert (out["spread"], out["mid2"], out["micro_num"], out["micro_den"]) == (0, 0, 0, 0)
    s = out["status"]
    assert not s["touch_valid"] and out["dev"] == 0 and not out["dev_valid"]
    # Only bids: OBI = (30 - 0)/30 = 1, defined and extreme.
    assert s["obi_touch_valid"] and s["obi_touch_over"] and s["obi_depth_over"]
    s = step(model(), dict(EMPTY_BOOK))["status"]
    assert not (s["obi_touch_valid"] or s["obi_depth_valid"] or s["obi_touch_over"])
    assert s["thin"] and s["lvi_over"]        # an empty side is as thin as it gets


def test_volatility_ewma_by_hand():
    m = model(vol_fast_shift=2, vol_slow_shift=4)
    out = step(m, book(), tick=True)                   # first sample only sets prev = 2004
    assert out["sigma2_fast"] == 0 and not out["status"]["vol_valid"]
    out = step(m, book(ask=1008), tick=False)          # no tick: nothing sampled
    assert out["sigma2_fast"] == 0
    out = step(m, book(ask=1008), tick=True)           # d = 2008 - 2004 = 4, x = 16
    # fast: 0 + (16 - 0)/4 = 4.0 ticks^2; slow: 16/16 = 1.0; sigma = sqrt(4) = 2.0
    assert out["sigma2_fast"] == 4 << 16 and out["sigma2_slow"] == 1 << 16
    assert out["status"]["vol_valid"] and not out["status"]["sigma_fresh"]
    assert settle(m, book(ask=1008))["sigma"] == 2 << 8
    out = step(m, book(ask=1008), tick=True)           # d = 0
    assert out["sigma2_fast"] == 3 << 16 and out["sigma2_slow"] == (1 << 16) - (1 << 12)
    step(m, book(ask=0), tick=True)                    # one-sided: no sample, prev kept
    out = step(m, book(ask=1008), tick=True)
    assert out["sigma2_fast"] == (3 << 16) - (3 << 14)


def test_ewma_floor_moves_down_to_the_sample():
    m = model(vol_fast_shift=1)
    m.units[0].sigma2_fast, m.units[0].prev, m.units[0].have_prev = 3, 2004, True
    out = step(m, book(), tick=True)                   # x = 0: 3 + floor(-3/2) = 1
    assert out["sigma2_fast"] == 1
    step(m, book())                                    # (a tick here would not sample)
    assert step(m, book(), tick=True)["sigma2_fast"] == 0


def test_at_most_one_vol_sample_every_other_cycle():
    """TICKs at cycles t, t+1, t+3: the one at t+1 (right after a sample) steps neither EWMA
    nor `prev`, so t+3 measures its change from t's mid; the rest of the tick still counts."""
    m = model(vol_fast_shift=0, vol_slow_shift=1)
    step(m, book(), tick=True)                         # first tick: prev = 2004, S = 4
    step(m, book())
    out = step(m, book(ask=1006), tick=True)           # t: d = 2, x = 4: fast 4, slow 2
    assert (out["sigma2_fast"], out["sigma2_slow"]) == (4 << 16, 2 << 16)
    out = step(m, book(ask=1010 + CLAMP_MAX), tick=True)    # t+1: skipped; d > CLAMP_MAX
    assert (out["sigma2_fast"], out["sigma2_slow"]) == (4 << 16, 2 << 16)
    assert not out["status"]["sat_vol"] and out["flags_set"]["vol"] is False   # not flagged
    # ... but the spread sample counts: S = 10 + CLAMP_MAX, accel = S - 2*6 + 4.
    assert out["accel"] == CLAMP_MAX + 2 and out["status"]["accel_valid"]
    step(m, book(ask=1012))                            # t+2: no tick
    out = step(m, book(ask=1012), tick=True)           # t+3: d = 2012 - 2006 = 6, x = 36
    # fast: 36; slow: 2 + (36 - 2)/2 = 19 (from t+1's mid it would be d = 2 + CLAMP_MAX).
    assert (out["sigma2_fast"], out["sigma2_slow"]) == (36 << 16, 19 << 16)
    out = step(m, book(ask=1000), tick=True)           # t+4: skipped again
    assert out["sigma2_fast"] == 36 << 16
    out = step(m, book(ask=1000), tick=True)           # t+5: d = 2000 - 2012 = -12
    assert out["sigma2_fast"] == 144 << 16


def test_ewma_shift_above_the_register_limit_acts_as_the_limit():
    """A raw shift over SHIFT_MAX (the CSR does not range-check) is SHIFT_MAX: the state moves
    by floor((X - state) / 2^SHIFT_MAX), not by the larger shift's -1."""
    m = model()
    m.params["vol_fast_shift"], m.params["vol_slow_shift"] = [SHIFT_MAX + 9] * 2, [255] * 2
    m.units[0].sigma2_fast = m.units[0].sigma2_slow = 5 << (SHIFT_MAX + 1)
    m.units[0].prev, m.units[0].have_prev = 2004, True
    out = step(m, book(), tick=True)                   # x = 0: 10 << 31 >> 31 off
    assert out["sigma2_fast"] == out["sigma2_slow"] == (5 << (SHIFT_MAX + 1)) - 10


def test_saturation_of_the_vol_delta_and_the_microprice_spread():
    m = model(vol_fast_shift=0)
    step(m, book(), tick=True)
    out = step(m, book(bid=1000 + CLAMP_MAX, ask=1004 + CLAMP_MAX), tick=True)
    # d = 2 CLAMP_MAX is clamped: x = CLAMP_MAX^2, and shift 0 takes x whole.
    assert out["sigma2_fast"] == CLAMP_MAX ** 2 << 16 and out["status"]["sat_vol"]
    assert out["flags_set"] == {"vol": True, "micro": False}
    out = step(m, book(ask=1000 + CLAMP_MAX + 7))
    assert out["spread"] == CLAMP_MAX + 7 and out["micro_num"] == CLAMP_MAX * 30
    assert out["status"]["sat_micro"] and not out["status"]["sat_vol"]
    out = step(m, book(bid=2000, ask=1000))            # crossed: S = -1000, no clamp
    assert out["spread"] == -1000 and out["micro_num"] == -30000
    assert not step(m, book(ask=0))["status"]["sat_micro"]     # undefined is not saturated


def test_spread_acceleration_by_hand():
    m = model(accel_max=1)
    for ask in (1004, 1006):                           # S = 4, 6
        assert not step(m, book(ask=ask), tick=True)["status"]["accel_valid"]
    out = step(m, book(ask=1010), tick=True)           # S = 10: 10 - 2*6 + 4 = 2 > 1
    assert out["accel"] == 2 and out["status"]["accel_valid"] and out["status"]["accel_over"]
    out = step(m, book(ask=1011), tick=True)           # 11 - 20 + 6 = -3
    assert out["accel"] == -3 and not out["status"]["accel_over"]
    out = step(m, book(ask=0), tick=True)              # a one-sided sample restarts the count
    assert out["accel"] == 0 and not out["status"]["accel_valid"]
    for ask in (1004, 1005):
        assert not step(m, book(ask=ask), tick=True)["status"]["accel_valid"]
    assert step(m, book(ask=1004), tick=True)["accel"] == -2


def test_depth_drop_window_and_the_cliff():
    m = model(depth_window=2, depth_drop_th="0.5")
    assert not step(m, book(db=1000, da=800), tick=True)["status"]["drop_valid"]
    s = step(m, book(db=1000, da=800), tick=True)["status"]   # two samples: window full
    assert s["drop_valid"] and not (s["bid_drop"] or s["ask_drop"])
    # Depth W=2 samples back (this tick counts) is 1000/800: bid lost 60%, ask 50% (not >).
    s = step(m, book(db=400, da=400))["status"]
    assert s["bid_drop"] and not s["ask_drop"] and not s["cliff"]
    s = step(m, book(db=30, va=10, da=10))["status"]          # both sides vanish: 1011 cliff
    assert s["bid_drop"] and s["ask_drop"] and s["cliff"]
    s = step(m, book(db=30, va=10, da=10), tick=True)["status"]   # now 1000 vs 30: still
    assert s["cliff"]
    s = step(m, book(db=30, va=10, da=10), tick=True)["status"]   # window holds 30/10 only
    assert not s["cliff"]
    m.params["depth_window"] = [1]                             # W = 1: the sample just taken,
    step(m, book(db=30, va=10, da=10))                         # from the next cycle on
    assert not step(m, book(db=5, va=5, da=5), tick=True)["status"]["cliff"]


def test_leverage_vulnerability_and_l_safe_without_dividing():
    # L = 2, 100 lots per 1x: needs 200 lots on the thinner side; min(100, 150) = 100.
    m = model(leverage=2, lvi_depth=100, leverage_max=10, liquidity_risk="1.5", lsafe_k=6,
              vol_fast_shift=0)
    assert step(m, book(db=100, da=150))["status"]["lvi_over"]
    assert not step(m, book(db=200, da=250))["status"]["lvi_over"]      # 200*2 = 400 not > 400
    step(m, book(), tick=True)
    step(m, book(ask=1006), tick=True)                 # d = 2: sigma2 = 4, sigma = 2
    out = settle(m, book(ask=1006))
    assert out["sigma"] == 2 << 8
    # L sigma risk = 2 * 2 * 1.5 = 6: not over K = 6; over K = 5.99 (K/(sigma risk) < L).
    assert not out["status"]["lsafe_over"] and not out["status"]["lmax_over"]
    m.params["lsafe_k"] = [raw("lsafe_k", "5.99")]
    assert step(m, book(ask=1006))["status"]["lsafe_over"]
    m.params["lsafe_k"], m.params["leverage_max"] = [raw("lsafe_k", 100)], [raw("leverage_max",
                                                                             "1.5")]
    s = step(m, book(ask=1006))["status"]
    assert s["lmax_over"] and s["lsafe_over"]


def test_regimes_from_fast_and_slow_vol():
    m = model(vol_fast_shift=0, vol_slow_shift=3, vol_fast_hi=10, vol_slow_hi=10,
              depth_thin=40)
    step(m, book(), tick=True)
    out = step(m, book(ask=1008), tick=True)           # x = 16: fast 16 > 10, slow 2
    assert out["regime"] == {"vol": VolRegime.RANGE.value, "liq": LiqRegime.WAIT.value}
    step(m, book(ask=1008))                            # samples are two cycles apart
    out = step(m, book(db=100, da=30, ask=1008), tick=True)   # thin: min depth 30 < 40
    assert out["sigma2_fast"] == 0 and out["regime"]["vol"] == VolRegime.STABLE.value
    assert out["regime"]["liq"] == LiqRegime.NO_EXPAND.value
    m.params["vol_slow_hi"] = [raw("vol_slow_hi", 1)]
    step(m, book(ask=1008, da=30))
    out = step(m, book(ask=1016, da=30), tick=True)    # x = 64: fast 64, slow 9.53 > 1
    assert out["regime"] == {"vol": VolRegime.CRISIS.value, "liq": LiqRegime.WITHDRAW.value}
    m.params["vol_fast_hi"] = [raw("vol_fast_hi", 100)]
    assert step(m, book(ask=1016))["regime"]["vol"] == VolRegime.TREND.value


def test_cross_venue_misalignment_by_hand():
    m = SignalsModel(venues=2)
    for name, values in {"xv_a": (1, 0), "xv_b": ("0.5", 0), "xv_c": (3, 0),
                         "xv_inv_liq": ("0.5", 0), "leverage": (2, 1), "vol_fast_shift": (0, 0),
                         }.items():
        m.params[name] = [raw(name, v) for v in values]
    m.params["misalign_max"] = raw("misalign_max", "4.5")
    m.step([book(), book(bid=1000, ask=1004)], tick=True)
    books = [book(ask=1006, bid=1000), book(bid=1000, ask=1004)]
    m.step(books, tick=True)
    res = [m.step(books) for _ in range(SIGMA_BITS + VOL_STAGES + 2)][-1]   # root caught up
    a, b = res["venues"]
    # A: sigma = 2 (d = 2); Spread* = 1*2 + 0.5*2 + 3*0.5 = 4.5 ticks; S_A - S*_A = 1.5.
    assert a["spread_star"] == int(4.5 * 256) and a["dev"] == int(1.5 * 256)
    # B: Spread* = 0, S_B = 4: Misalign = 1.5 - 4 = -2.5 ticks, under 4.5.
    assert b["dev"] == 4 << 8 and res["misalign"] == -int(2.5 * 256)
    assert res["xv_status"] == {"valid": True, "over": False}
    res = m.step([book(ask=1012), book(bid=1000, ask=1004)])   # 12 - 4.5 - 4 = 3.5
    assert res["misalign"] == int(3.5 * 256) and not res["xv_status"]["over"]
    res = m.step([book(ask=1013), book(bid=1000, ask=1004)])   # 4.5: not over (strict)
    assert not res["xv_status"]["over"]
    res = m.step([book(ask=1014), book(bid=1000, ask=1004)])
    assert res["xv_status"] == {"valid": True, "over": True}
    res = m.step([book(ask=1014), book(ask=0)])
    assert res["misalign"] == 0 and res["xv_status"] == {"valid": False, "over": False}


def test_sigma_is_the_floor_root_of_the_larger_ewma():
    m = model(vol_fast_shift=0, vol_slow_shift=0)
    step(m, book(), tick=True)
    step(m, book(ask=1007), tick=True)                  # d = 3: sigma2 = 9, sigma = 3
    assert settle(m, book(ask=1007))["sigma"] == 3 << 8
    m.units[0].sigma2_slow, m.units[0].dirty = 10 << 16, True   # as a tick leaves them
    out = settle(m, book(ask=1007))
    assert out["sigma"] == math.isqrt(10 << 16) == int(math.sqrt(10) * 256)


def test_sigma_follows_the_sequential_root_cycle_by_cycle():
    """A tick marks the root dirty; it starts when no tick is in flight and sigma2 has held a
    cycle (VOL_STAGES + 1 quiet cycles), takes SIGMA_BITS cycles, and a tick meanwhile queues
    one more root after it."""
    m = model(vol_fast_shift=0, vol_slow_shift=0)
    step(m, book(), tick=True)
    settle(m, book())
    step(m, book(ask=1008), tick=True)                  # sigma2 = 16: root 4 due
    outs = [step(m, book(ask=1008)) for _ in range(SIGMA_BITS + VOL_STAGES + 2)]
    # The cycles after the tick while its sample is in flight and the one sigma2 holds; then
    # the root starts; then SIGMA_BITS busy cycles; the cycle after shows the root.
    assert [o["sigma"] for o in outs] == [0] * (SIGMA_BITS + VOL_STAGES + 1) + [4 << 8]
    assert [o["status"]["sigma_fresh"] for o in outs] == [False] * (
        SIGMA_BITS + VOL_STAGES + 1) + [True]
    step(m, book(ask=1011), tick=True)                  # cycle 0, d = 3: sigma2 = 9
    for _ in range(5):                                  # the root starts in VOL_STAGES + 1
        step(m, book(ask=1011))
    step(m, book(ask=1014), tick=True)                  # cycle 6, busy: a second root queues
    outs = [step(m, book(ask=1014)) for _ in range(2 * SIGMA_BITS + 2)]   # cycles 7...
    first = VOL_STAGES + 2 + SIGMA_BITS                 # shows root 1; root 2 starts
    second = first + 1 + SIGMA_BITS
    fresh = [o["status"]["sigma_fresh"] for o in outs]
    assert fresh.index(True) == second - 7 and all(fresh[second - 7:])
    assert [o["sigma"] for o in outs[first - 8:first - 6]] == [4 << 8, 3 << 8]


@pytest.mark.parametrize(("diff", "total", "q"), [
    (20, 40, 1 << 14),              # 0.5
    (-20, 40, -(1 << 14)),
    (1, 3, 10922),                  # 1/3 = 0.33331..., truncated
    (-1, 3, -10922),                # toward zero, not floor
    (5, 5, IMB_MAX), (-5, 5, -IMB_MAX),   # one-sided: +-1 reads as +-(1 - 2^-15)
    (0, 0, 0), (0, 7, 0),
    ((1 << 37) - 2, (1 << 37) - 1, IMB_MAX),
])
def test_imbalance_value_by_hand(diff, total, q):
    assert imbalance(diff, total) == q


def test_imbalance_values_in_the_result():
    out = step(model(), book(vb=30, va=10, db=100, da=50))
    assert out["obi_touch_q"] == 1 << 14                # (30 - 10)/40 = 0.5
    assert out["obi_depth_q"] == 10922                  # 50/150 = 1/3
    out = step(model(), book(ask=0))                    # empty ask: Vb/Vb
    assert out["obi_touch_q"] == IMB_MAX and out["obi_depth_q"] == IMB_MAX


def test_status_packing_and_validation():
    out = step(model(), book())
    assert out["sig_status"] == pack(STATUS, out["status"])
    assert out["sig_status"] >> STATUS["touch_valid"].offset & 1
    with pytest.raises(ValueError, match="venues must be an integer 1..16, not 0"):
        SignalsModel(venues=0)
    with pytest.raises(ValueError, match="need 1 book"):
        SignalsModel(venues=1).step([book(), book()])
