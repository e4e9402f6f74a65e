# amaranth: UnusedElaboratable=no
"""PriceLadder in the Amaranth simulator: hand-worked cases, the hazard rule, latency, random
streams against the model and the dict property, back-pressure, arguments."""

import itertools
import os
import random

import pytest
from amaranth.sim import Simulator

from obcore.hw.ladder import QUERY_LATENCY, LadderOp, PriceLadder
from obcore.hw.layouts import Side
from obcore.sim.ladder_model import CENTRE, CLEAR, DELETE, REBASE, SET, LadderModel

BID, ASK = Side.BID, Side.ASK
STALL = 256   # cycles without progress after which ``simulate`` stops waiting for answers


def simulate(dut, plan, ready=None, tail=QUERY_LATENCY + 8):
    """Drive ``plan``: one ``(update, query)`` per cycle, each ``None`` or a tuple
    (``(op, price, size)``, ``(price, inclusive)``). A query is held until accepted; a later
    one waits behind it. ``ready`` is an iterator of ``answer.ready`` values (default 1).
    After the plan it runs until every accepted query is answered, then ``tail`` more cycles
    (so an extra answer shows); it gives up after ``STALL`` cycles with neither an acceptance
    nor an answer, so a lost answer fails the comparison instead of hanging.

    Returns ``(updates, accepted, answers, status)``: the update of each cycle, the query
    accepted in each cycle (or None), ``(cycle, answer)`` per answer transfer (``None`` for
    none), and the status outputs seen at the end of each cycle.
    """
    plan = list(plan)
    updates, accepted, answers, status = [], [], [], []
    waiting = []

    async def bench(ctx):
        c = idle = stalled = 0
        while c < len(plan) or waiting or idle < tail:
            update, query = plan[c] if c < len(plan) else (None, None)
            # Answers held by back-pressure can come out long after the last acceptance: the
            # drain's idle cycles count only once nothing is outstanding.
            outstanding = sum(q is not None for q in accepted) - len(answers)
            done = c >= len(plan) and not waiting and (outstanding == 0 or stalled >= STALL)
            idle = idle + 1 if done else 0
            if query is not None:
                waiting.append(query)
            ctx.set(dut.update.valid, update is not None)
            if update is not None:
                op, price, size = update
                ctx.set(dut.update.payload, {"op": LadderOp(SET if op == CENTRE else op),
                                             "price": price, "size": size,
                                             "centre": op == CENTRE})
            ctx.set(dut.query.valid, bool(waiting))
            if waiting:
                ctx.set(dut.query.payload, {"price": waiting[0][0], "inclusive": waiting[0][1]})
            take = 1 if ready is None else next(ready)
            ctx.set(dut.answer.ready, take)
            assert ctx.get(dut.update.ready)
            updates.append(update)
            accepted.append(waiting.pop(0) if waiting and ctx.get(dut.query.ready) else None)
            progress = accepted[-1] is not None or bool(take and ctx.get(dut.answer.valid))
            stalled = 0 if progress else stalled + 1
            if take and ctx.get(dut.answer.valid):
                a = ctx.get(dut.answer.payload)
                answers.append((c, None if a.none else (a.price, a.size)))
                if a.none:
                    assert (a.price, a.size) == (0, 0)
            await ctx.tick()
            status.append({name: ctx.get(getattr(dut, name)) for name in (
                "base", "out_of_window", "out_of_window_count", "lost_better", "lost_worse")})
            c += 1

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return updates, accepted, answers, status


def expected(model, updates, accepted):
    """The model's answers, in order, and its status after each cycle."""
    answers, status = [], []
    for update, query in zip(updates, accepted, strict=True):
        answer = model.cycle(update, query)
        if answer is not False:
            answers.append(answer)
        status.append({"base": model.base, "out_of_window_count": model.out_of_window,
                       "lost_better": model.lost_better, "lost_worse": model.lost_worse})
    return answers, status


def check(dut, plan, ready=None):
    """Simulate ``plan`` and compare every answer and status with the model; the answers."""
    updates, accepted, answers, status = simulate(dut, plan, ready)
    want, want_status = expected(LadderModel(dut.side, dut.window, dut.price_width),
                                 updates, accepted)
    assert [a for _, a in answers] == want
    for got, ref in zip(status, want_status, strict=True):
        assert {k: got[k] for k in ref} == ref
    return answers


def test_hand_worked_asks():
    """Asks, window 128 from 1000: two bitmap words, a search across them, both edges."""
    dut = PriceLadder(ASK, window=128)
    plan = [((REBASE, 1000, 0), None), ((SET, 1005, 7), None), ((SET, 1003, 2), None),
            ((SET, 1070, 9), None), ((SET, 1128, 1), None), ((SET, 999, 1), None),
            ((SET, 1127, 4), None), ((DELETE, 1500, 0), None), (None, None),
            (None, (1000, 1)), (None, (1003, 0)), (None, (1005, 0)), (None, (1070, 0)),
            (None, (1127, 0)), (None, (1127, 1)), (None, (5, 0)), ((DELETE, 1003, 0), None),
            (None, (5, 0)), ((SET, 1005, 3), None), (None, (1004, 1)), ((CLEAR, 0, 0), None),
            (None, (5, 0))]
    answers = check(dut, plan)
    assert [a for _, a in answers] == [(1003, 2), (1005, 7), (1070, 9), (1127, 4), None,
                                       (1127, 4), (1003, 2), (1005, 7), (1005, 3), None]
    _, _, _, status = simulate(PriceLadder(ASK, window=128), plan[:8])
    assert status[4]["out_of_window"] and status[5]["out_of_window"]   # 1128, 999: +1
    assert status[7]["out_of_window"] and not status[6]["out_of_window"]
    assert status[8]["out_of_window_count"] == 3
    assert status[8]["lost_better"] and status[8]["lost_worse"] and status[8]["base"] == 1000


def test_hand_worked_bids():
    """Bids, window 64 (one word) from 2000 down to 1937: higher is better."""
    dut = PriceLadder(BID, window=64)
    plan = [((REBASE, 2000, 0), None), ((SET, 1990, 5), None), ((SET, 1999, 1), None),
            ((SET, 1950, 8), None), ((SET, 1937, 2), None), ((SET, 1936, 6), None),
            ((SET, 2001, 6), None), (None, None), (None, (2000, 1)), (None, (1999, 0)),
            (None, (1990, 0)), (None, (1950, 0)), (None, (1937, 0)), (None, (2500, 0))]
    answers = check(dut, plan)
    assert [a for _, a in answers] == [(1999, 1), (1990, 5), (1950, 8), (1937, 2), None,
                                       (1999, 1)]


def test_centring_set():
    """A centring SET empties the ladder (levels and lost flags), puts its price at slot
    window / 2 and sets it, in one update; near key 0 the window starts at 0 instead."""
    dut = PriceLadder(BID, window=64)
    plan = [((REBASE, 500, 0), None), ((SET, 490, 4), None), ((SET, 600, 1), None),
            ((CENTRE, 2000, 7), None), ((SET, 2031, 1), None), ((SET, 1969, 2), None),
            ((SET, 1968, 3), None), ((SET, 2032, 3), None), (None, (3000, 0)),
            (None, (2031, 0)), (None, (2000, 0)), (None, (1969, 0))]
    answers = check(dut, plan)
    assert [a for _, a in answers] == [(2032, 3), (2000, 7), (1969, 2), None]   # 2032..1969
    asks = PriceLadder(ASK, window=64)
    plan = [((CENTRE, 10, 5), None), ((SET, 63, 1), None), ((SET, 64, 1), None), (None, (0, 1)),
            (None, (10, 0))]
    answers = check(asks, plan)
    assert [a for _, a in answers] == [(10, 5), (63, 1)]


def test_hazard_rule_and_latency():
    """A query sees updates of earlier cycles only: not the one in its own cycle, nor any
    while it is in flight; answers come QUERY_LATENCY cycles after acceptance."""
    dut = PriceLadder(ASK, window=64)
    plan = [((SET, 10, 1), None), ((SET, 5, 2), (0, 0)), (None, (0, 0)),
            ((SET, 5, 3), (0, 0)), ((DELETE, 5, 0), None), ((SET, 4, 9), None),
            (None, (0, 0)), ((DELETE, 4, 0), (0, 0)), (None, (0, 0))]
    updates, accepted, answers, _ = simulate(dut, plan)
    assert [a for _, a in answers] == [(10, 1), (5, 2), (5, 2), (4, 9), (4, 9), (10, 1)]
    asked = [c for c, q in enumerate(accepted) if q is not None]
    assert [c for c, _ in answers] == [c + QUERY_LATENCY for c in asked]


def test_full_rate():
    """A query and an update every cycle, answer always ready: nothing ever waits."""
    rng = random.Random(7)
    dut = PriceLadder(BID, window=128)
    plan = [((SET, rng.randrange(1, 129), rng.randrange(1, 9)), (rng.randrange(140), 0))
            for _ in range(200)]
    updates, accepted, answers, _ = simulate(dut, plan)
    assert all(q is not None for q in accepted[:200])
    assert [c for c, _ in answers] == [c + QUERY_LATENCY for c in range(200)]
    assert [a for _, a in answers] == expected(LadderModel(BID, 128), updates, accepted)[0]


def ladder_seed():
    """The random tests' seed: ``LADDER_SEED`` when set, else a fresh one; printed."""
    seed = int(os.environ.get("LADDER_SEED") or random.randrange(1 << 31))
    print(f"LADDER_SEED={seed}")
    return seed


def random_plan(rng, side, window, cycles, base):
    """Updates clustered on the window (a few outside), queries on and around it."""
    sign = -1 if side == BID else 1
    plan = []
    for _ in range(cycles):
        r, update, query = rng.random(), None, None
        offset = rng.randrange(-8, window + 8) if rng.random() < 0.1 else rng.randrange(window)
        price = base + sign * offset
        if r < 0.45:
            update = (SET, price, rng.randrange(1, 1 << 31))
        elif r < 0.8:
            update = (DELETE, price, 0)
        elif r < 0.803:
            update = (CLEAR, 0, 0)
        elif r < 0.806:
            base += sign * rng.randrange(-3, 4)
            update = (REBASE, base, 0)
        elif r < 0.809:   # centred on the price: the window's base moves by window / 2
            update = (CENTRE, price, rng.randrange(1, 1 << 31))
            base = price - sign * (window // 2)
        if rng.random() < 0.5:
            query = (base + sign * rng.randrange(-4, window + 4), rng.randrange(2))
        plan.append((update, query))
    return plan


@pytest.mark.parametrize(("side", "window", "backpressure"), [
    (ASK, 64, 0.0), (BID, 128, 0.3), (ASK, 256, 0.5), (BID, 4096, 0.2)])
def test_random_against_model(side, window, backpressure):
    """Random updates, queries and answer back-pressure; every answer and every status
    output equals the model's, cycle by cycle."""
    seed = ladder_seed()
    rng = random.Random(seed)
    base = 1 << 20
    cycles = 2000 if window < 4096 else 600
    plan = [((REBASE, base, 0), None)] + random_plan(rng, side, window, cycles, base)
    ready = iter(lambda: int(rng.random() >= backpressure), None)
    answers = check(PriceLadder(side, window=window), plan, ready)
    assert sum(a is not None for _, a in answers) > cycles // 10


@pytest.mark.parametrize("side", [ASK, BID])
def test_next_is_min_over_true_levels(side):
    """Property, apart from the model: with the window covering every price used, ``next``
    equals the best key in a dict of the true levels beyond the query price."""
    seed = ladder_seed()
    rng = random.Random(seed)
    window, base = 512, 50_000
    prices = [base - i if side == BID else base + i for i in range(window)]
    better = (lambda a, b: a > b) if side == BID else (lambda a, b: a < b)
    plan = [((REBASE, base, 0), None)]
    for _ in range(1500):
        price = rng.choice(prices[:64]) if rng.random() < 0.5 else rng.choice(prices)
        update = (SET, price, rng.randrange(1, 100)) if rng.random() < 0.6 else (DELETE, price, 0)
        plan.append((update, (rng.choice(prices), rng.randrange(2))))
    updates, accepted, answers, _ = simulate(PriceLadder(side, window=window), plan)
    truth, want = {}, []
    for update, query in zip(updates, accepted, strict=True):
        if query is not None:
            k, inclusive = query
            beyond = [p for p in truth if better(k, p) or (inclusive and p == k)]
            best = min(beyond, key=lambda p: -p if side == BID else p, default=None)
            want.append(None if best is None else (best, truth[best]))
        if update is not None and update[0] == SET:
            truth[update[1]] = update[2]
        elif update is not None and update[0] == DELETE:
            truth.pop(update[1], None)
    assert [a for _, a in answers] == want


def test_answer_held_under_backpressure():
    """Stream rule: an answer stays valid and unchanged until it is taken; none is lost."""
    dut = PriceLadder(ASK, window=64)
    plan = [((SET, p, p), None) for p in (3, 9, 17)] + [(None, (0, 1)), (None, (3, 0)),
                                                         (None, (9, 0)), (None, (17, 0))]
    ready = iter([1] * 10 + [0] * 6 + [1, 0, 0, 1] + [1] * 20)
    answers = check(dut, plan, ready)
    assert [a for _, a in answers] == [(3, 3), (9, 9), (17, 17), None]


def test_answers_drained_after_long_backpressure():
    """Regression (LADDER_SEED=1404266147, asks, window 256, back-pressure 0.5): answers still
    held in the FIFO well after the last query is accepted all come out, in order, once
    ``answer.ready`` rises; the drain used to stop QUERY_LATENCY + 8 cycles after the last
    acceptance and so missed the last answer, which neither the ladder nor the model lost."""
    dut = PriceLadder(ASK, window=64)
    plan = [((SET, p, p), None) for p in (3, 9, 17)] + [(None, (0, 1)), (None, (3, 0)),
                                                         (None, (9, 0)), (None, (17, 0))]
    held = 30   # cycles of answer.ready = 0 from the start: all four answers wait
    answers = check(dut, plan, itertools.chain([0] * held, itertools.repeat(1)))
    assert answers == [(held + i, a) for i, a in enumerate([(3, 3), (9, 9), (17, 17), None])]


@pytest.mark.parametrize(("kwargs", "text"), [
    ({"side": ASK, "window": 100}, "window must be a power of two >= 64, not 100"),
    ({"side": ASK, "window": 32}, "window must be a power of two >= 64, not 32"),
    ({"side": ASK, "window": True}, "window must be a power of two >= 64, not True"),
    ({"side": ASK, "window": "4096"}, "window must be a power of two >= 64, not '4096'"),
    ({"side": 2}, "side must be Side.BID or Side.ASK, not 2"),
    ({"side": BID, "price_width": 0}, "price_width must be an integer 1..32, not 0"),
    ({"side": BID, "window": 256, "price_width": 7}, "window 256 is wider than the 7-bit"),
])
def test_arguments_rejected(kwargs, text):
    with pytest.raises(ValueError, match=text):
        PriceLadder(**kwargs)
    if "price_width" not in kwargs:
        with pytest.raises(ValueError, match=text):
            LadderModel(**kwargs)
