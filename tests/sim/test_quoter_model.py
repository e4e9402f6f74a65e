"""The quoter reference model on hand-worked books: every number below is computed by hand.

The calm setting: gamma = 1/64, tau = 1, sigma2 of a + b = 256 ticks^2 (the mid's: 64), so
gamma sigma^2 tau = 1 tick; kappa_term = 2 ticks, total spread 3 ticks. Book 999 990 /
1 000 010: s = 1 000 000. Size 100 lots (base 100; depth cap 0.25 x 1000 = 250).
"""

import pytest

from obcore.hw.layouts import OrderKind, decode_order
from obcore.hw.quoter import CAP_MAX, DIV_PERIOD, lev_quotient
from obcore.hw.registers import REGISTERS, lev_lots, to_fixed
from obcore.hw.signals import LiqRegime, VolRegime
from obcore.sim.fills import OwnQuotes
from obcore.sim.quoter_model import (
    WARMUP,
    QuoterModel,
    default_params,
    idle_inputs,
    market,
    quote_targets,
    slot_list,
)

BID, ASK = 0, 1
CALM = {"gamma": "0.015625", "tau": 1, "kappa_term": 2, "vol_ref": 1000, "requote_cycles": 2}


def raw(name, value):
    return to_fixed(REGISTERS[name], value)


def params(**real):
    """Raw parameters: the calm setting overridden by ``real`` (real values)."""
    out = default_params()
    for name, value in {**CALM, **real}.items():
        out[name] = [raw(name, v) for v in value] if isinstance(value, list) else raw(name, value)
    return out


def quotes(q=0, venues=1, levels=1, bid=999_990, ask=1_000_010, sigma2=256, depth=1000,
           regime=0, scale=None, boost=0, **real):
    """``{(venue, side, level): (price, size)}`` of the placed quotes, and the flags."""
    x = {**params(**real), **market(venues, bid, ask, depth, sigma2, regime), "q": q,
         "lev_quot": [CAP_MAX] * venues}
    if scale is not None:
        x["size_scale"] = [scale] * venues
    x["gamma_boost"] = [boost] * venues
    targets, flags = quote_targets(x, venues, levels)
    placed = {tuple(s): (price, size) for s, (ok, price, size)
              in zip(slot_list(venues, levels), targets, strict=True) if ok}
    return placed, flags


def touch(q=0, **kw):
    placed, _ = quotes(q, **kw)
    return placed.get((0, BID, 0)), placed.get((0, ASK, 0))


def test_flat_inventory_quotes_symmetric_around_the_mid():
    # bid = 1e6 - 1.5 -> floor 999 998; ask = 1e6 + 1.5 -> ceil 1 000 002.
    assert touch() == ((999_998, 100), (1_000_002, 100))


def test_long_inventory_lowers_both_quotes_short_raises_both():
    # q = 10: r = s - q gamma sigma^2 tau = 999 990; bid 999 988.5 -> 999 988,
    # ask 999 991.5 -> 999 992 (still above the best bid). Sizes: room 1000 - 10 and 1010.
    assert touch(10) == ((999_988, 100), (999_992, 100))
    assert touch(-10) == ((1_000_008, 100), (1_000_012, 100))


def test_rounding_is_outward_and_exact_prices_stay():
    # spread 3.5: 999 998.25 -> 999 998 and 1 000 001.75 -> 1 000 002.
    assert touch(kappa_term="2.5") == ((999_998, 100), (1_000_002, 100))
    # spread 4 on an odd a + b: s = 1 000 000.5, 2 each way: 999 998.5 / 1 000 002.5 ->
    # 999 998 / 1 000 003.
    assert touch(kappa_term=3, ask=1_000_011) == ((999_998, 100), (1_000_003, 100))
    # spread 3 on the odd mid: 999 999 and 1 000 002 exactly, no rounding.
    assert touch(ask=1_000_011) == ((999_999, 100), (1_000_002, 100))


def test_min_spread_clamp():
    assert touch(min_spread=10) == ((999_995, 100), (1_000_005, 100))
    assert touch(min_spread=3) == touch()     # 3 ticks is what the formula gives anyway


def test_no_cross_clamp_and_its_override():
    # q = 30: ask 999 971.5 -> 999 972 would cross the bid 999 990: held at 999 991.
    assert touch(30) == ((999_968, 100), (999_991, 100))
    assert touch(30, allow_cross=1) == ((999_968, 100), (999_972, 100))
    # q = -30: bid 1 000 028 would cross the ask 1 000 010: held at 1 000 009.
    assert touch(-30) == ((1_000_009, 100), (1_000_032, 100))


def test_large_gamma_moves_quotes_away_until_unplaced():
    # gamma = 255: gamma sigma^2 tau = 16 320 ticks, spread 16 322: 8 161 from the mid.
    assert touch(gamma=255, max_dist=8161) == ((991_839, 100), (1_008_161, 100))
    assert touch(gamma=255, max_dist=8160) == (None, None)
    distances = [1_000_000 - touch(gamma=g)[0][0] for g in ("0.015625", "0.25", 4, 64)]
    assert distances == sorted(distances) and distances[-1] == (64 * 64 + 2) // 2
    # G = gamma tau saturates (255 x 65535 > 4096) and the risk term with it: flagged.
    placed, flags = quotes(gamma=255, tau=65535)
    assert not placed and flags["gain"] and not flags["risk"]
    # 255 x 2^18 ticks^2 of the mid: the risk term saturates at 2^20 ticks.
    placed, flags = quotes(gamma=255, sigma2=1 << 20)
    assert not placed and flags["risk"] and not flags["gain"] and not flags["skew"]


def test_gamma_boost_is_a_power_of_two():
    # boost 2: gamma x 4, gamma sigma^2 tau = 4, spread 6: 999 997 / 1 000 003.
    assert quotes(boost=2)[0][(0, BID, 0)] == (999_997, 100)


def test_sigma_selection():
    # fast 256, slow 1024 (of a + b): slow or max gives risk 4, spread 6.
    x = {**params(), **market(1, 999_990, 1_000_010, sigma2=256), "q": 0,
         "lev_quot": [CAP_MAX]}
    x["sigma2_slow"] = [1024 << 16]
    prices = []
    for sel in range(4):
        targets, _ = quote_targets({**x, "sigma_sel": sel}, 1, 1)
        prices.append(targets[0][1])
    assert prices == [999_998, 999_997, 999_997, 999_997]


def test_a_side_whose_size_rounds_to_zero_is_not_quoted():
    # Guard scale 1/128: 100/128 -> 0 lots on both sides.
    assert touch(scale=1 << 8) == (None, None)
    assert touch(scale=1 << 13) == ((999_998, 25), (1_000_002, 25))
    # Regime: crisis with a thin book is never quoted; trend halves, crisis 1/8.
    code = VolRegime.CRISIS.value | LiqRegime.WITHDRAW.value << 2
    assert touch(regime=code) == (None, None)
    assert touch(regime=VolRegime.TREND.value)[0] == (999_998, 50)
    assert touch(regime=VolRegime.CRISIS.value)[0] == (999_998, 12)
    # At the position limit only the side that reduces the position is quoted.
    assert touch(1000) == (None, (999_991, 100))        # held above the best bid
    assert touch(950)[0] == (999_048, 50)                 # room 50 on the bid
    assert touch(-1000, size_min=101) == (None, None)     # the ask is room-capped, 100 < 101


def test_size_from_depth_and_volatility():
    assert touch(depth=200)[0] == (999_998, 50)          # 0.25 x 200
    # sigma2 1001 > vol_ref 1000: one halving (1001/4 <= 1000); 16 000: two; 16 001: three.
    assert touch(sigma2=1001)[0][1] == 50
    assert touch(sigma2=16_000)[0][1] == 25
    assert touch(sigma2=16_001)[0][1] == 12
    assert touch(size_cap=7)[0][1] == 7


def test_three_levels_share_the_position_room():
    placed, _ = quotes(levels=3, level_gap=[2, 5, 1], q_limit=250)
    # offsets 0, 2, 7; bid room 250 -> 100, 100, 50 lots; ask the same (q = 0).
    assert [placed[(0, BID, j)] for j in range(3)] == [
        (999_998, 100), (999_996, 100), (999_991, 50)]
    assert [placed[(0, ASK, j)] for j in range(3)] == [
        (1_000_002, 100), (1_000_004, 100), (1_000_009, 50)]
    # Two venues: level 0 of both venues first, then level 1 gets what is left.
    placed, _ = quotes(venues=2, levels=3, q_limit=250)
    assert [placed.get((v, BID, j), (0, 0))[1] for j in range(3) for v in range(2)] == [
        100, 100, 50, 0, 0, 0]


def run(model, inputs_at, cycles, ready=lambda c: True):
    """Step ``model``; returns the transferred orders as ``(cycle, fields)`` and the cycles
    in which ``rate_exceeded`` was high."""
    orders, exceeded = [], []
    for c in range(cycles):
        if model.outputs()["rate_exceeded"]:
            exceeded.append(c)
        word = model.step(inputs_at(c), ready(c))
        if word is not None:
            orders.append((c, decode_order(word)))
    return orders, exceeded


def calm_model(venues=1, levels=1, **real):
    m = QuoterModel(venues, levels)
    m.params.update(params(**real))
    return m


def armed(book=lambda c: (999_990, 1_000_010), **kw):
    """Inputs: the book ``book(c)``, armed after the warm-up; ``kw``: per-cycle extras."""
    def at(c):
        inputs = market(1, *book(c), sigma2=256)
        inputs["enable"] = int(c >= WARMUP)
        inputs.update({k: f(c) for k, f in kw.items()})
        return inputs
    return at


def kinds(orders):
    return [(o["kind"], o["side"], o["price"], o["size"]) for _, o in orders]


def test_orders_only_on_change_with_the_documented_latency():
    moved = WARMUP + 50
    orders, _ = run(calm_model(), armed(lambda c: (999_990 + 10 * (c >= moved),
                                                    1_000_010 + 10 * (c >= moved))), 200)
    # The mid jumps 10 ticks, more than the spread: the new bid (1 000 008) would cross our
    # resting ask (1 000 002), so the ask moves away first (self-cross guard).
    assert kinds(orders) == [(OrderKind.NEW, BID, 999_998, 100),
                             (OrderKind.NEW, ASK, 1_000_002, 100),
                             (OrderKind.REPLACE, ASK, 1_000_012, 100),
                             (OrderKind.REPLACE, BID, 1_000_008, 100)]
    assert_never_crossed(orders)
    # Book in cycle t: the order is on the stream (and taken) in cycle t + 6; enable: t + 3.
    assert orders[0][0] == WARMUP + 3 and orders[2][0] == moved + 6
    assert [o["seq"] for _, o in orders] == [0, 1, 2, 3]


def assert_never_crossed(orders):
    """Issue 6: after every order, our highest resting bid is below our lowest resting ask,
    per venue, over all levels."""
    first = OwnQuotes().apply(o for _, o in orders)
    assert first is None, f"our own quotes crossed after {first}"


# Three levels, gaps 2 and 5 (offsets 0, 2, 7). Book 999 990 / 1 000 010: bids 999 998,
# 999 996, 999 991; asks 1 000 002, 1 000 004, 1 000 009. The jump is 10 ticks.
JUMPS = [
    # Up, one level: bid 1 000 008 >= our ask 1 000 002, so the ask (moving away) goes first.
    (1, +10, [(ASK, 0, 1_000_012), (BID, 0, 1_000_008)]),
    # Down, one level: ask 999 992 <= our bid 999 998, so the bid goes first.
    (1, -10, [(BID, 0, 999_988), (ASK, 0, 999_992)]),
    # Up, three levels: new bids 1 000 008, 1 000 006, 1 000 001; asks 1 000 012, 1 000 014,
    # 1 000 019. t+6: bids 0 and 1 cross the ask 1 000 002, bid 2 does not; lowest eligible
    # slot: ask 0. t+7: bids 0, 1 still cross the ask 1 000 004: ask 1. t+8: lowest ask
    # 1 000 009 > 1 000 008: bid 0, t+9 bid 1 (slot 2), t+10 bid 2 (slot 4), t+11 ask 2.
    (3, +10, [(ASK, 0, 1_000_012), (ASK, 1, 1_000_014), (BID, 0, 1_000_008),
              (BID, 1, 1_000_006), (BID, 2, 1_000_001), (ASK, 2, 1_000_019)]),
    # Down, three levels: new bids 999 988, 999 986, 999 981; asks 999 992, 999 994,
    # 999 999. t+6: bid 0 (moving down never crosses). t+7: ask 0 crosses the bid 999 996:
    # bid 1. t+8: highest bid 999 991 < 999 992: ask 0, t+9 ask 1 (slot 3), t+10 bid 2,
    # t+11 ask 2.
    (3, -10, [(BID, 0, 999_988), (BID, 1, 999_986), (ASK, 0, 999_992), (ASK, 1, 999_994),
              (BID, 2, 999_981), (ASK, 2, 999_999)]),
]


@pytest.mark.parametrize(("levels", "jump", "want"), JUMPS)
def test_a_jump_beyond_the_spread_never_crosses_our_own_quotes(levels, jump, want):
    moved = WARMUP + 50
    book = armed(lambda c: (999_990 + jump * (c >= moved), 1_000_010 + jump * (c >= moved)),
                 tick=lambda c: 1)
    orders, exceeded = run(calm_model(levels=levels, level_gap=[2, 5, 1]), book, moved + 30)
    assert len(orders) == 2 * levels + len(want) and not exceeded
    after = [(c, o["side"], o["slot"], o["price"]) for c, o in orders if c > moved]
    assert after == [(moved + 6 + i, *w) for i, w in enumerate(want)]
    assert all(o["kind"] == OrderKind.REPLACE for c, o in orders if c > moved)
    assert_never_crossed(orders)


def test_a_crossing_order_waits_for_the_other_side_re_quote_interval():
    # Interval 40: the NEWs load in cycles W+2 (bid) and W+3 (ask), so the bid may re-quote
    # from the load in W+42, the ask from W+43. The book jumps up in W+10: the bid's
    # REPLACE (1 000 008) is due first but would cross our ask 1 000 002, so it is held
    # (not eligible: no rate_exceeded, nothing dropped) until the ask has moved away.
    moved = WARMUP + 10
    book = armed(lambda c: (999_990 + 10 * (c >= moved), 1_000_010 + 10 * (c >= moved)),
                 tick=lambda c: 1)
    orders, exceeded = run(calm_model(requote_cycles=40), book, WARMUP + 100)
    assert [(c, o["kind"], o["side"], o["price"]) for c, o in orders] == [
        (WARMUP + 3, OrderKind.NEW, BID, 999_998), (WARMUP + 4, OrderKind.NEW, ASK, 1_000_002),
        (WARMUP + 44, OrderKind.REPLACE, ASK, 1_000_012),
        (WARMUP + 45, OrderKind.REPLACE, BID, 1_000_008)]
    assert not exceeded


def test_a_target_crossing_our_own_other_side_is_held():
    # Spread 0 (gamma 2^-24: gamma sigma^2 tau rounds to 0; no kappa_term, no min_spread):
    # bid and ask targets are both the mid 1 000 000. The bid goes first; the ask would sit
    # on it, so it is held (not sent, not flagged) for as long as the targets cross.
    zero = calm_model(gamma="0.000000059604644775390625", kappa_term=0, min_spread=0)
    orders, exceeded = run(zero, armed(tick=lambda c: 1), 200)
    assert kinds(orders) == [(OrderKind.NEW, BID, 1_000_000, 100)]
    assert not exceeded


def test_rate_limit_flags_and_delays_without_dropping():
    m = calm_model(rate_depth=1, rate_tokens="0.5")
    tick_at = WARMUP + 100
    orders, exceeded = run(m, armed(tick=lambda c: int(c in (tick_at, tick_at + 1))), 300)
    assert kinds(orders) == [(OrderKind.NEW, BID, 999_998, 100),
                             (OrderKind.NEW, ASK, 1_000_002, 100)]
    # The bid takes the only token; the ask waits, flagged, until two half-token ticks.
    assert orders[1][0] == tick_at + 3
    assert exceeded == list(range(WARMUP + 3, tick_at + 2))


def test_requote_interval_spaces_a_slot_orders():
    still = 400                  # the book moves every cycle until here, then holds
    orders, _ = run(calm_model(requote_cycles=40), armed(
        lambda c: (999_990 + c % 7 * (c < still), 1_000_010 + c % 7 * (c < still)),
        tick=lambda c: 1), 600)
    for side, final in ((BID, 999_998), (ASK, 1_000_002)):
        mine = [(c, o) for c, o in orders if o["side"] == side]
        cycles = [c for c, _ in mine]
        gaps = [b - a for a, b in zip(cycles, cycles[1:], strict=False)]
        assert len(cycles) > 5 and min(gaps) >= 40
        # Nothing was dropped: the last order catches up with the book that held still
        # (a side whose REPLACE waited for the other to move away may already rest there).
        assert mine[-1][1]["price"] == final and cycles[-1] <= still + 6 + 40
    assert_never_crossed(orders)


def test_pull_emits_one_cancel_all_then_nothing_until_release():
    start, end = WARMUP + 30, WARMUP + 130
    moving = armed(lambda c: (999_990 + c % 5, 1_000_010 + c % 5),
                   pull=lambda c: int(start <= c < end), tick=lambda c: 1)
    orders, _ = run(calm_model(), moving, 300)
    during = [(c, o) for c, o in orders if start < c <= end]
    assert [o["kind"] for _, o in during] == [OrderKind.CANCEL_ALL]
    assert during[0][0] == start + 1                   # the cycle after pull rises
    assert during[0][1]["price"] == during[0][1]["size"] == during[0][1]["venue"] == 0
    after = [o["kind"] for c, o in orders if c > end]
    assert after[:2] == [OrderKind.NEW, OrderKind.NEW]     # resumed from an empty state


def test_pull_pulse_under_back_pressure_still_cancels_first():
    pulse = WARMUP + 10
    # The stream stalls until pulse + 20, with the bid's NEW already waiting on it: that
    # order cannot be withdrawn (stream rules), the CANCEL_ALL is next and cancels it.
    orders, _ = run(calm_model(), armed(pull=lambda c: int(c == pulse)), 200,
                    ready=lambda c: c >= pulse + 20)
    assert [(c, o["kind"], o["side"]) for c, o in orders] == [
        (pulse + 20, OrderKind.NEW, BID), (pulse + 21, OrderKind.CANCEL_ALL, BID),
        (pulse + 23, OrderKind.NEW, BID), (pulse + 24, OrderKind.NEW, ASK)]


def test_disarm_cancels_resting_quotes_and_cancels_skip_the_interval():
    m = calm_model(requote_cycles=1000)
    off = WARMUP + 20
    orders, _ = run(m, armed(enable=lambda c: int(c < off)), 100)
    assert kinds(orders) == [(OrderKind.NEW, BID, 999_998, 100),
                             (OrderKind.NEW, ASK, 1_000_002, 100),
                             (OrderKind.CANCEL, BID, 0, 0), (OrderKind.CANCEL, ASK, 0, 0)]


def test_fills_move_the_position_and_saturate_with_a_flag():
    m = QuoterModel(venues=2)
    fills = [(0, BID, 30), (1, ASK, 50), (0, ASK, 5), (2, BID, 7)]    # venue 2: ignored
    for venue, side, size in fills:
        inputs = idle_inputs(2)
        inputs["fill"] = {"valid": 1, "venue": venue, "side": side, "size": size}
        m.step(inputs)
    out = m.outputs()
    assert (out["position"], out["position_net"]) == ([25, -50], -25)
    inputs = idle_inputs(2)
    for _ in range(2):
        inputs["fill"] = {"valid": 1, "venue": 1, "side": ASK, "size": (1 << 31) - 1}
        m.step(inputs)
    assert m.outputs()["position"][1] == -(1 << 31) and m.outputs()["quote_flags_set"] == 16


@pytest.mark.parametrize("bad", [0, 5, "1", True])
def test_model_arguments_validated(bad):
    with pytest.raises(ValueError, match="must be an integer"):
        QuoterModel(levels=bad)


def test_lev_quotient_by_hand():
    # K = 2 x ticks (UQ24.8 raw 512) x lev_lots 1000 = 512 000 (UQ56.8); sigma 4 ticks
    # (UQ17.8 raw 1024) x liquidity risk 1 (raw 256) = 262 144 (UQ25.16):
    # L_safe = K / (sigma risk) = 0.5x, so 500 lots.
    assert lev_quotient(512 * 1000, 1024 * 256) == 500
    assert lev_quotient(512 * 1000, 768 * 256) == 666       # 2/3 x 1000 = 666.7: floor
    assert lev_quotient(0, 5) == 0                          # K = 0: no position at all
    assert lev_quotient(512 * 1000, 0) == CAP_MAX           # no volatility yet: no cap
    assert lev_quotient(1 << 40, 1) == CAP_MAX              # beyond q's range: no cap


def lsafe_sizes(q, lev_lots, lmax="10", quot=(CAP_MAX,), **real):
    """Sizes ``{(venue, side): lots}`` of level 0 with the L_safe inputs given."""
    venues = len(quot)
    x = {**params(lev_lots=lev_lots, **real), **market(venues, 999_990, 1_000_010, 1000, 256),
         "q": q, "lev_quot": list(quot)}
    x["leverage_max"] = [raw("leverage_max", lmax)] * venues
    targets, _ = quote_targets(x, venues, 1)
    return {(v, side): size for (v, side, _), (ok, _, size)
            in zip(slot_list(venues, 1), targets, strict=True) if ok}


def test_position_cap_from_l_max_and_equity():
    # L_max 1 x lev_lots 150 = 150 lots: flat, both sides quote the base 100; long 100,
    # the bid may add 50 and the ask 100 (room 250); long 150, no bid at all.
    assert lsafe_sizes(0, 150, lmax=1) == {(0, BID): 100, (0, ASK): 100}
    assert lsafe_sizes(100, 150, lmax=1) == {(0, BID): 50, (0, ASK): 100}
    assert lsafe_sizes(150, 150, lmax=1) == {(0, ASK): 100}
    assert lsafe_sizes(100, 60, lmax=2) == {(0, BID): 20, (0, ASK): 100}    # 120 lots
    assert lsafe_sizes(-30, 120, lmax="0.25") == {(0, BID): 60}            # cap 30: short 30
    # q_limit below the cap still rules.
    assert lsafe_sizes(0, 150, lmax=1, q_limit=40) == {(0, BID): 40, (0, ASK): 40}


def test_position_cap_from_k_over_sigma_is_the_smallest_venue():
    # The divider's quotients: venue 0 allows 500 lots, venue 1 40: |q| <= 40, shared in
    # slot order, so venue 0 takes the 40 lots of each side and venue 1 has no room.
    assert lsafe_sizes(0, 10 ** 6, quot=(500, 40)) == {(0, BID): 40, (0, ASK): 40}
    assert lsafe_sizes(0, 10 ** 6, quot=(30,)) == {(0, BID): 30, (0, ASK): 30}


def test_divider_publishes_every_period():
    """Phase 0 publishes the last run and loads the products registered the cycle before:
    a change of sigma shows in ``quot`` at most 2 DIV_PERIOD + 1 cycles later."""
    model = QuoterModel(1, 1)
    model.params["lev_lots"] = 1000
    inputs = {**idle_inputs(1), "sigma": [1024], "lsafe_k": [512], "liquidity_risk": [256]}
    seen = []
    for _ in range(2 * DIV_PERIOD + 2):
        seen.append(model.divider.quot[0])
        model.step(inputs)
    # cycle 0 runs on the reset products (0 / 0), cycle DIV_PERIOD on 512 000 / 262 144
    assert seen[:2 * DIV_PERIOD + 1] == [CAP_MAX] * (2 * DIV_PERIOD + 1)
    assert seen[2 * DIV_PERIOD + 1] == 500


def test_tau_left_counts_ticks_from_the_horizon_write():
    model = QuoterModel(1, 1)
    model.params["tau"] = raw("tau", "2.5")
    left = []
    for c in range(8):
        left.append(model.outputs()["tau_left"])
        model.step({**idle_inputs(1), "horizon": int(c == 1), "tick": int(c >= 2)})
    one = 1 << 16
    assert left == [one, one, 5 * one // 2, 3 * one // 2, one // 2, 0, 0, 0]


def test_lev_lots_is_derived_from_equity_and_lot_value():
    """The controller writes floor(equity / lot_value) with them, in one commit."""
    from obcore.control.params import ParamError, plan
    from obcore.control.registers import CSRModel, Registers

    regs = Registers(CSRModel())
    assert plan(regs, {"equity": 1_000_000, "lot_value": "3.5"})[("lev_lots", 0)] == 285_714
    assert plan(regs, {"equity": 7})[("lev_lots", 0)] == 7           # lot_value reset 1
    assert lev_lots(10, "0.00390625") == 2560
    # equity 0 (its reset: not written) gives the reset of lev_lots: no cap
    assert lev_lots(0, 1) == to_fixed(REGISTERS["lev_lots"], REGISTERS["lev_lots"].reset)
    with pytest.raises(ParamError, match="lev_lots is derived from equity and lot_value"):
        plan(regs, {"lev_lots": 5})
    with pytest.raises(ValueError, match="lot_value must be positive"):
        lev_lots(1, 0)
