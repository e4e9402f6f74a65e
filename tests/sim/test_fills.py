"""Own fills: the lambda(delta) model's hit rates, the quote book-keeping, the account, and the
closed loop through the Verilated engine (its position registers follow the host's fills)."""

import math
import random

import numpy as np
import pytest

from obcore.control import params
from obcore.hw.layouts import OrderKind, Side, feed_array
from obcore.sim.fills import Account, FillModel, OwnQuotes, fill_rng
from obcore.sim.scenarios import SCENARIOS, generate

SEEDS = range(5)


def test_probability_is_one_poisson_arrival_at_rate_lambda():
    m = FillModel(a=2.0, k=0.5, clip=3)
    assert m.rate(0) == 2.0 and m.rate(-3) == 2.0            # at or through the mid
    assert m.rate(4) == pytest.approx(2.0 * math.exp(-2.0))
    assert m.probability(0) == pytest.approx(1 - math.exp(-2.0))
    assert m.probability(4) == pytest.approx(1 - math.exp(-2.0 * math.exp(-2.0)))
    ps = [m.probability(d / 2) for d in range(20)]
    assert all(a > b for a, b in zip(ps, ps[1:], strict=False))


@pytest.mark.parametrize("bad", [{"a": 0}, {"k": -1.0}, {"a": float("nan")}, {"clip": 0},
                                 {"clip": 2.5}, {"clip": True}])
def test_bad_fill_parameters_are_refused_with_the_range(bad):
    with pytest.raises(ValueError, match="must be"):
        FillModel(**bad)


def _order(kind, venue=0, side=0, slot=0, price=0, size=0):
    return {"kind": int(kind), "venue": venue, "side": int(side), "slot": slot,
            "price": price, "size": size}


@pytest.mark.parametrize("seed", SEEDS)
def test_hit_rates_match_lambda(seed):
    """Quotes held at fixed distances from the mid for many ticks: the share of ticks each
    is hit stays within 4.5 binomial standard deviations of 1 - e^(-lambda(delta))."""
    print(f"seed={seed}")
    model, rng, ticks = FillModel(a=1.2, k=0.8, clip=1), fill_rng(seed), 4000
    mid2 = {0: 2001}                                   # mid 1000.5: half-tick distances
    prices = {(Side.BID, 1000): 0.5, (Side.BID, 998): 2.5, (Side.ASK, 1001): 0.5,
              (Side.ASK, 1004): 3.5, (Side.BID, 1002): -1.5}  # through the mid: as at 0
    hits = dict.fromkeys(prices, 0)
    quotes = OwnQuotes()
    for _ in range(ticks):
        quotes.apply([_order(OrderKind.NEW, 0, side, slot, price, 1_000_000)
                      for slot, (side, price) in enumerate(prices)])
        for d in quotes.draw(model, rng, mid2):
            assert d.delta == prices[d.side, d.price]
            hits[d.side, d.price] += d.size > 0
    for key, delta in prices.items():
        p = model.probability(delta)
        assert abs(hits[key] / ticks - p) < 4.5 * math.sqrt(p * (1 - p) / ticks), (key, hits)


def test_quotes_follow_the_order_stream_and_shrink_by_clip():
    quotes = OwnQuotes()
    quotes.apply([_order(OrderKind.NEW, 0, Side.BID, 0, 99, 25),
                  _order(OrderKind.NEW, 1, Side.ASK, 0, 105, 7)])
    always = FillModel(a=50.0, k=0.01, clip=10)        # p = 1 - e^-50: every tick
    sizes = [[d.size for d in quotes.draw(always, random.Random(1), {0: 200, 1: 200})]
             for _ in range(4)]
    assert sizes == [[10, 7], [10], [5], []]           # ask filled whole, bid 10 + 10 + 5
    quotes.apply([_order(OrderKind.NEW, 0, Side.BID, 0, 99, 5),
                  _order(OrderKind.REPLACE, 0, Side.ASK, 0, 101, 5)])
    assert quotes.resting == {(0, Side.BID, 0): [99, 5], (0, Side.ASK, 0): [101, 5]}
    quotes.apply([_order(OrderKind.CANCEL, 0, Side.BID, 0)])
    assert list(quotes.resting) == [(0, Side.ASK, 0)]
    assert not quotes.draw(always, random.Random(1), {})    # no mid yet: no draw
    quotes.apply([_order(OrderKind.CANCEL_ALL)])
    assert quotes.resting == {}


def test_apply_reports_the_first_order_that_crosses_our_own_quotes():
    """Per venue: a bid at or above our ask there crosses, one on another venue does not."""
    quotes = OwnQuotes()
    ask = _order(OrderKind.NEW, 0, Side.ASK, 0, 100, 5)
    assert quotes.apply([_order(OrderKind.NEW, 0, Side.BID, 0, 99, 5), ask,
                         _order(OrderKind.NEW, 1, Side.BID, 0, 120, 5)]) is None
    locked = _order(OrderKind.REPLACE, 0, Side.BID, 0, 100, 5)
    later = _order(OrderKind.NEW, 0, Side.BID, 1, 101, 5)
    assert quotes.apply([locked, later]) is locked
    assert quotes.apply([_order(OrderKind.CANCEL, 0, Side.ASK, 0),
                         _order(OrderKind.NEW, 0, Side.ASK, 1, 102, 5)]) is None
    assert quotes.apply([_order(OrderKind.CANCEL_ALL), ask]) is None

def test_pnl_hand_worked():
    """Buy 10 at 100, sell 4 at 103 on venue 0, sell 3 at 210 on venue 1. Marked at mids
    101 and 209.5: realised 4 x 3 = 12, open 6 x (101 - 100) = 6 and 3 x (210 - 209.5) =
    1.5; P&L 19.5 ticks x lots."""
    acct = Account(2)
    acct.fill(0, Side.BID, 100, 10)
    acct.fill(0, Side.ASK, 103, 4)
    acct.fill(1, Side.ASK, 210, 3)
    assert acct.q == [6, -3] and acct.cash == -1000 + 412 + 630
    assert acct.pnl({0: 202, 1: 419}) == 19.5


@pytest.fixture(scope="module")
def native():
    from obcore.sim.engine import open_engine
    engine = open_engine("verilator")
    yield engine
    engine.close()


@pytest.mark.parametrize("name,seed", [("crisis", 1011), ("crisis", 5), ("cascade", 1011)])
def test_closed_loop_through_the_engine(native, name, seed):
    """Fills drawn from the engine's own quotes go back as FILL messages: its position
    registers equal the host's inventory at every phase end; each fill is at a price we
    quoted; hit rates over every draw of the run match lambda(delta) in aggregate."""
    from obcore.sim.demo import PARAMS, simulate

    tagged = list(generate(name, seed))
    phases = np.array([p for p, _ in tagged])
    values = params.load(PARAMS.with_name(SCENARIOS[name].params))
    native.reset()
    model = FillModel(a=1.0, k=1.5, clip=10)
    run = simulate(native, feed_array([m for _, m in tagged]), phases, values, model,
                   fill_rng(seed), log=lambda *_: None)
    assert len(run.fills) > 10 and any(run.inventory)
    assert [c[0] for c in run.checks] == list(dict.fromkeys(phases))
    assert all(engine == host for _, engine, host in run.checks), run.checks
    assert run.checks[-1][2] == run.account.q
    quoted = {(int(o["venue"]), int(o["side"]), int(o["price"])) for o in run.orders
              if o["kind"] in (OrderKind.NEW, OrderKind.REPLACE)}
    assert {(f[2], f[3], f[4]) for f in run.fills} <= quoted
    p = np.array([d.probability for d in run.draws])
    hit = np.array([d.size > 0 for d in run.draws])
    assert abs(hit.sum() - p.sum()) < 4.5 * math.sqrt((p * (1 - p)).sum())
    for lo, hi in ((0, 1), (1, 2), (2, 100)):          # and per distance band
        band = (np.array([d.delta for d in run.draws]) >= lo) & (
            np.array([d.delta for d in run.draws]) < hi)
        if band.sum() >= 30:
            var = (p[band] * (1 - p[band])).sum()
            assert abs(hit[band].sum() - p[band].sum()) < 4.5 * math.sqrt(var) + 1, (lo, hi)
