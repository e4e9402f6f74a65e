"""The Verilated engine against the reference engine, message for message, and against truth."""

import random

import numpy as np
import pytest

from obcore.hw.layouts import OBS_DTYPE, FeedKind, ObsStatus, OrderKind, Side, feed_array
from obcore.sim.engine import ModelEngine, open_engine
from obcore.sim.replay import read_lobster
from obcore.sim.scenarios import SCENARIOS, generate


@pytest.fixture(scope="module")
def native():
    engine = open_engine("verilator")
    yield engine
    engine.close()


def _interleave(rng, *streams):
    """Merge message streams in random order, keeping each stream's own order."""
    streams = [list(s) for s in streams]
    pos = [0] * len(streams)
    out = []
    while any(p < len(s) for p, s in zip(pos, streams, strict=True)):
        i = rng.choice([i for i, s in enumerate(streams) if pos[i] < len(s)])
        out.append(streams[i][pos[i]])
        pos[i] += 1
    return out


def _mismatch(hw, ref, msgs):
    bad = np.nonzero(hw != ref)[0]
    if not len(bad):
        return None
    i = bad[0]
    return (f"{len(bad)} of {len(hw)} observations differ; first at {i}: message "
            f"{msgs[i]}\n  verilator {hw[i]}\n  reference {ref[i]}")


def _book_registers(engine):
    """Every word of the system and book registers (the blocks both engines implement)."""
    regs = [r for r in engine.regmap if r.block in ("system", "book") and r.access != "wo"]
    return {(r.name, i, w): engine.read(r.element(i) + w)
            for r in regs for i in range(r.count) for w in range(r.words)}


def test_scenarios_on_two_venues_match_the_reference(native):
    """All scenarios, venue 0 and venue 1 interleaved, with malformed words mixed in."""
    seed = random.randrange(1 << 30)
    print(f"seed={seed}")
    rng = random.Random(seed)
    msgs = []
    for name in sorted(SCENARIOS):
        a = (m for _, m in generate(name, rng.randrange(1 << 30), venue=0))
        b = (m for _, m in generate(name, rng.randrange(1 << 30), venue=1))
        msgs += _interleave(rng, a, b)
    for _ in range(200):   # malformed: bad kind, flags, side, venue, size
        bad = dict(rng.choice(msgs))
        key, value = rng.choice([("kind", 0), ("kind", 12), ("flags", 1), ("side", 2),
                                 ("venue", 7), ("size", 1 << 31)])
        bad[key] = value
        msgs.insert(rng.randrange(len(msgs)), bad)
    batch = feed_array(msgs)
    native.reset()
    reference = ModelEngine()
    for lo in range(0, len(batch), 5000):   # several runs: state carries across batches
        hw, _ = native.run(batch[lo:lo + 5000])
        ref, _ = reference.run(batch[lo:lo + 5000])
        assert (msg := _mismatch(hw, ref, batch[lo:lo + 5000])) is None, msg
    assert _book_registers(native) == _book_registers(reference)
    assert reference.book.malformed >= 150


def test_observation_latency_and_rate(native):
    """One observation per message, one message per cycle: the cycle stamps count up by 1."""
    native.reset()
    msgs = feed_array([m for _, m in generate("calm", 5)])
    obs, _ = native.run(msgs)
    assert len(obs) == len(msgs)
    assert np.array_equal(np.diff(obs["cycle"].astype(np.int64)), np.ones(len(msgs) - 1))
    assert list(obs["seq"]) == list(msgs["seq"])


def test_lobster_through_the_verilated_book_equals_the_orderbook_file(native, data,
                                                                      lobster_truth):
    """AMZN level 5: every row's best bid/ask, sizes, depth and level counts as LOBSTER says."""
    path = data("lobster/LOBSTER_SampleFile_AMZN_2012-06-21_5.zip")
    native.reset()
    updates = list(read_lobster([path]))
    msgs = feed_array([m for u in updates for m in u.messages])
    obs = np.zeros(0, OBS_DTYPE)
    for lo in range(0, len(msgs), 65536):
        obs = np.concatenate([obs, native.run(msgs[lo:lo + 65536])[0]])
    assert not (obs["status"] & ObsStatus.APPLIED == 0)[msgs["kind"] != FeedKind.TICK].any()
    ends = np.cumsum([len(u.messages) for u in updates]) - 1
    checked = 0
    for update, end, (bids, asks) in zip(updates, ends, lobster_truth(path, 5), strict=True):
        o = obs[end]
        want = (bids[0][0], bids[0][1], asks[0][0], asks[0][1], sum(q for _, q in bids),
                sum(q for _, q in asks), sum(1 for _, q in bids if q),
                sum(1 for _, q in asks if q))
        got = tuple(int(o[k]) for k in ("best_bid", "best_bid_qty", "best_ask", "best_ask_qty",
                                        "bid_depth", "ask_depth", "bid_count", "ask_count"))
        assert got == want, update.source
        assert o["status"] & ObsStatus.EXACT and o["status"] & ObsStatus.SYNCED
        checked += 1
    assert checked == 155_935


def test_binance_futures_match_the_reference(native, data):
    """The first 100k messages of a Binance USDⓈ-M capture: sync, diffs, missing deletes and
    the bounded book going short, record for record and in every book register."""
    from itertools import islice

    from obcore.sim.replay import read_binance

    path = data("binance/usdm_btcusdt_20240808.gz")
    msgs = feed_array(list(islice((m for u in read_binance([path]) for m in u.messages),
                                  100_000)))
    native.reset()
    reference = ModelEngine()
    hw, _ = native.run(msgs)
    ref, _ = reference.run(msgs)
    assert (msg := _mismatch(hw, ref, msgs)) is None, msg
    assert _book_registers(native) == _book_registers(reference)
    assert reference.book.books[0].counters.capacity > 0      # the short-book path ran
    assert reference.book.books[0].counters.missing > 0


def _drive(native, name, seed):
    from obcore.control import params
    from obcore.sim.demo import PARAMS, drive

    tagged = list(generate(name, seed))
    phases = np.array([p for p, _ in tagged])
    native.reset()
    result = drive(native, feed_array([m for _, m in tagged]), phases, params.load(PARAMS),
                   log=lambda *_: None)
    return phases, result


def test_1011_pattern_pulls_before_the_price_moves(native):
    """Depth vanishes on both sides, then price falls through the vacuum: the engine must
    have cancelled everything before the first message of the fall."""
    phases, (obs, orders, cycles, _, pulls) = _drive(native, "crisis", 1011)
    cancels = cycles[orders["kind"] == OrderKind.CANCEL_ALL]
    fall = obs["cycle"][np.nonzero(phases == "vacuum")[0][0]]
    assert len(cancels) and cancels[0] < fall
    assert pulls and pulls[0][0] == "cliff"
    assert len(orders) and orders["kind"][0] == OrderKind.NEW   # it was quoting before


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_no_quote_while_pulled_and_never_crossed(native, name):
    """System invariants on the whole engine: after a CANCEL_ALL nothing but cancels leaves
    until the engine is re-armed (the demo never re-arms), and on each venue our bid stays
    below our ask (venues' prices differ, so a bid on one may sit above an ask on another)."""
    _, (_, orders, _, _, _) = _drive(native, name, 7)
    resting = {}
    pulled = False
    for o in orders:
        kind = OrderKind(int(o["kind"]))
        if kind == OrderKind.CANCEL_ALL:
            pulled, resting = True, {}
            continue
        assert not (pulled and kind in (OrderKind.NEW, OrderKind.REPLACE)), o
        key = (int(o["venue"]), int(o["slot"]))
        if kind == OrderKind.CANCEL:
            resting.pop((*key, int(o["side"])), None)
        else:
            resting[(*key, int(o["side"]))] = int(o["price"])
        bids = [p for (v, s, side), p in resting.items() if side == Side.BID and v == key[0]]
        asks = [p for (v, s, side), p in resting.items() if side == Side.ASK and v == key[0]]
        assert not bids or not asks or max(bids) < min(asks), o
