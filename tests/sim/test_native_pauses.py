"""Pauses between messages on the Verilated engine and the reference engine: whole pauses
clock the cycles of one run per update, settled pauses end once the books and signals no
longer change (a build with price ladders)."""

import random

import numpy as np
import pytest
from engine_checks import mismatch

from obcore.hw.layouts import FeedKind, OrderKind, feed_array
from obcore.sim.engine import RUN_DRAIN, ModelEngine, open_engine
from obcore.sim.scenarios import generate


@pytest.fixture(scope="module")
def native():
    engine = open_engine("verilator")
    yield engine
    engine.close()


def _armed_start(engine, msgs):
    """Reset ``engine``, write the demo's parameters, run the opening snapshot, arm; the
    messages after the snapshot."""
    from obcore.control import params
    from obcore.control.registers import Registers
    from obcore.sim.demo import PARAMS, tick_chunks

    engine.reset()
    params.apply(Registers(engine), params.load(PARAMS))
    (_, start), *_ = tick_chunks(msgs)
    engine.run(msgs[:start])
    engine.write(engine.regmap["arm"].addr, 1)
    return msgs[start:]


def _per_update(engine, msgs, sizes, idle):
    """One ``run(update, idle=idle)`` per non-empty update: what pauses must reproduce."""
    outs, at = [], 0
    for size in sizes:
        if size:
            obs, orders = engine.run(msgs[at:at + size], idle=idle)
            outs.append((obs, engine.last_telemetry, orders, engine.last_order_cycles))
        at += size
    return [np.concatenate(parts) for parts in zip(*outs, strict=True)], engine.cycle


def _paused(engine, msgs, sizes, idle):
    """The same updates in one run: a pause of RUN_DRAIN + idle after each update's last
    message but the last update's (the run's own drain follows that one)."""
    ends = np.cumsum(sizes)
    pauses = np.zeros(len(msgs), np.int64)
    for end in ends[(ends > 0) & (ends < len(msgs))]:
        pauses[end - 1] = RUN_DRAIN + idle
    obs, orders = engine.run(msgs, idle=idle, pauses=pauses)
    return [obs, engine.last_telemetry, orders, engine.last_order_cycles], engine.cycle


def test_pauses_clock_the_cycles_of_one_run_per_update(native):
    """Updates of 0-4 messages (random), each followed by RUN_DRAIN + 5 idle cycles, as
    ``obcore replay`` feeds a book with price ladders: one run with pauses gives every
    observation, telemetry record, order and order cycle (and the final cycle count) of one
    run per update, on both engines, and the two engines agree."""
    seed = random.randrange(1 << 30)
    print(f"seed={seed}")
    rng = random.Random(seed)
    msgs = feed_array([m for _, m in generate("crisis", 1011)])
    sizes = []
    while sum(sizes) < 1200:
        sizes.append(rng.randrange(5))
    results = {}
    for name, engine in (("verilator", native), ("model", ModelEngine())):
        for how in (_per_update, _paused):
            rest = _armed_start(engine, msgs)[:sum(sizes)]
            results[name, how.__name__] = how(engine, rest, sizes, 5)
    want, want_cycle = results["model", "_per_update"]
    assert len(want[2]) > 2                      # the quoter placed orders meanwhile
    for key, (got, cycle) in results.items():
        for g, w, what in zip(got, want, ("observations", "telemetry", "orders",
                                          "order cycles"), strict=True):
            assert (msg := mismatch(g, w, None, f"{what} of {key}")) is None, msg
        assert cycle == want_cycle, key
    with pytest.raises(ValueError, match="pauses must be 3 integers, one per message"):
        native.run(msgs[:3], pauses=[1, 2])
    with pytest.raises(ValueError, match=r"pauses must be 0\.\.4294967295 cycles"):
        ModelEngine().run(msgs[:2], pauses=[0, -1])


@pytest.fixture(scope="module")
def deep():
    """A small build with price ladders (the replay's window, 4 of 8 levels shown)."""
    engine = open_engine("verilator", levels=4, capacity=8, window=8192)
    yield engine
    engine.close()


def test_settled_pauses_keep_the_books_and_signals(deep):
    """The crisis scenario on a build with price ladders, armed, with pauses as the
    windowed replay clocks them (RUN_DRAIN + idle_cycles(4)) after a random tenth of the
    messages, and SETTLE_CYCLES + 20 after every TICK. With ``settle`` both engines agree on
    every observation, telemetry record, order and cycle; against whole pauses every
    observation and telemetry record but its cycle stamp is the same (the orders follow the
    quoter's cycle timers), in fewer cycles: some pauses end after the message's own
    STATUS_LATENCY, some part-way through a refill."""
    from obcore.hw.book import STATUS_LATENCY
    from obcore.hw.top import SETTLE_CYCLES
    from obcore.sim.replay.cli import idle_cycles

    seed = random.randrange(1 << 30)
    print(f"seed={seed}")
    rng = random.Random(seed)
    msgs = feed_array([m for _, m in generate("crisis", seed)])
    pauses = np.zeros(len(msgs), np.int64)
    pauses[rng.sample(range(len(msgs)), len(msgs) // 10)] = RUN_DRAIN + idle_cycles(4)
    pauses[msgs["kind"] == FeedKind.TICK] = SETTLE_CYCLES + 20
    runs = {}
    for name, engine, settle in (("verilator", deep, True), ("model", ModelEngine(
            levels=4, capacity=8, window=8192), True), ("whole", deep, False)):
        rest = _armed_start(engine, msgs)
        start = engine.cycle
        obs, orders = engine.run(rest, pauses=pauses[-len(rest):], settle=settle)
        runs[name] = ([obs, engine.last_telemetry, orders, engine.last_order_cycles],
                      engine.cycle - start)
    (hw, hw_cycles), (ref, ref_cycles) = runs["verilator"], runs["model"]
    for g, w, what in zip(hw, ref, ("observations", "telemetry", "orders", "order cycles"),
                          strict=True):
        assert (msg := mismatch(g, w, None, what)) is None, msg
    assert hw_cycles == ref_cycles
    assert len(hw[2]) > 2 and (hw[2]["kind"] == OrderKind.NEW).any()
    whole, whole_cycles = runs["whole"]
    for g, w, what in zip(hw[:2], whole[:2], ("observations", "telemetry"), strict=True):
        names = [n for n in w.dtype.names if n != "cycle"]
        assert (msg := mismatch(g[names], w[names], None, what)) is None, msg
    asked = pauses[-len(hw[0]):-1]
    gaps = (np.diff(hw[0]["cycle"].astype(np.int64)) - 1)[asked > 0]
    least = STATUS_LATENCY + 1                 # the message's own cycle shows it, then its book
    part = np.count_nonzero((gaps > least) & (gaps < asked[asked > 0]))
    print(f"{len(gaps)} pauses: {np.count_nonzero(gaps == least)} ended at the least "
          f"{least} cycles, {part} later but early; {hw_cycles} cycles, {whole_cycles} whole")
    assert gaps.min() == least and part
    assert hw_cycles < whole_cycles
