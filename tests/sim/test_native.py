"""The Verilated engine against the reference engine, message for message, and against truth."""

import gc
import random
from itertools import islice

import numpy as np
import pytest
from engine_checks import mismatch

from obcore.hw.layouts import OBS_DTYPE, TELEM, FeedKind, ObsStatus, OrderKind, Side, feed_array
from obcore.hw.signals import IMB_MAX, STATUS
from obcore.sim.engine import (
    RUN_DRAIN,
    ModelEngine,
    _convert,
    _engine_design,
    _sources_digest,
    open_engine,
)
from obcore.sim.fills import OwnQuotes
from obcore.sim.replay import read_binance, read_lobster
from obcore.sim.replay.base import with_ticks
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


def _same_run(native, reference, msgs):
    """Run ``msgs`` through both engines; assert observations, telemetry, orders and the
    orders' cycles agree. Returns the reference's ``(obs, orders)``."""
    hw, hw_orders = native.run(msgs)
    ref, ref_orders = reference.run(msgs)
    for got, want, what in ((hw, ref, "observations"),
                            (native.last_telemetry, reference.last_telemetry, "telemetry"),
                            (hw_orders, ref_orders, "orders"),
                            (native.last_order_cycles, reference.last_order_cycles,
                             "order cycles")):
        msg = mismatch(got, want, msgs if what in ("observations", "telemetry") else None,
                        what)
        assert msg is None, msg
    return ref, ref_orders


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
        _same_run(native, reference, batch[lo:lo + 5000])
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
    path = data("binance/usdm_btcusdt_20240808.gz")
    msgs = feed_array(list(islice((m for u in read_binance([path]) for m in u.messages),
                                  100_000)))
    native.reset()
    reference = ModelEngine()
    hw, _ = native.run(msgs)
    ref, _ = reference.run(msgs)
    assert (msg := mismatch(hw, ref, msgs)) is None, msg
    assert (msg := mismatch(native.last_telemetry, reference.last_telemetry, msgs,
                             "telemetry")) is None, msg
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
    # The power-up pull's CANCEL_ALL (it leaves while the parameters are written), then it
    # was quoting before the fall.
    assert list(orders["kind"][:2]) == [OrderKind.CANCEL_ALL, OrderKind.NEW]


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_no_quote_while_pulled_and_never_crossed(native, name):
    """System invariants on the whole engine: after a CANCEL_ALL nothing but cancels leaves
    until the engine is re-armed (the demo never re-arms), and on each venue our bid stays
    below our ask (venues' prices differ, so a bid on one may sit above an ask on another)."""
    _, (_, orders, _, _, _) = _drive(native, name, 7)
    own, pulled = OwnQuotes(), False
    assert orders["kind"][0] == OrderKind.CANCEL_ALL and orders["seq"][0] == 0   # power-up
    for o in orders[1:]:          # the demo arms once, after the power-up pull
        kind = OrderKind(int(o["kind"]))
        pulled |= kind == OrderKind.CANCEL_ALL
        assert not (pulled and kind in (OrderKind.NEW, OrderKind.REPLACE)), o
        assert own.apply([o]) is None, o


class _Recording:
    """An engine whose runs also keep their telemetry records (drive returns the rest)."""

    def __init__(self, engine):
        self.engine, self.telemetry = engine, []

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def run(self, msgs):
        out = self.engine.run(msgs)
        self.telemetry.append(self.engine.last_telemetry)
        return out


def _registers(engine, blocks=("system", "book", "signals", "guard", "quoter")):
    """Every readable word of the registers of ``blocks``."""
    regs = [r for r in engine.regmap if r.block in blocks and r.access != "wo"]
    return {(r.name, i, w): engine.read(r.element(i) + w)
            for r in regs for i in range(r.count) for w in range(r.words)}


def _demo_flow(engine, name, seed):
    """The demo's flow of scenario ``name`` through ``engine``: (observations, orders, order
    cycles, telemetry, pulls, every register at the end)."""
    from obcore.control import params
    from obcore.sim.demo import PARAMS, drive

    tagged = list(generate(name, seed))
    phases, msgs = np.array([p for p, _ in tagged]), feed_array([m for _, m in tagged])
    engine.reset()
    rec = _Recording(engine)
    result = drive(rec, msgs, phases, params.load(PARAMS), log=lambda *_: None)
    return (*result[:3], np.concatenate(rec.telemetry), result[4], _registers(engine))


def _assert_same_flow(got, want):
    for g, w, what in zip(got[:4], want[:4], ("observations", "orders", "order cycles",
                                              "telemetry"), strict=True):
        assert (msg := mismatch(g, w, None, what)) is None, msg
    assert got[4:] == want[4:]


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_armed_scenarios_match_the_reference_message_for_message(native, name):
    """The demo's flow through both engines (its parameters written, arm after the snapshot,
    retried while a trigger holds, the phases run one by one with register reads between):
    every observation, telemetry record, order and order cycle agrees, and so does every
    register at the end."""
    seed = random.randrange(1 << 30)
    print(f"seed={seed}")
    hw = _demo_flow(native, name, seed)
    _assert_same_flow(hw, _demo_flow(ModelEngine(), name, seed))
    hw_orders, hw_tel = hw[1], hw[3]
    assert len(hw_orders) > 2 and (hw_orders["kind"] == OrderKind.NEW).any()
    assert (hw_tel["sig_status"] >> STATUS["vol_valid"].offset & 1).any()


def test_real_data_slice_matches_the_reference(native, data):
    """Recorded data: LOBSTER AMZN on venue 0 with a TICK per 100 ms of its time, Binance
    USDⓈ-M BTCUSDT on venue 1, interleaved; the demo's parameters, armed after both
    snapshots. Observations, telemetry, orders and every register agree."""
    from obcore.control import params
    from obcore.control.registers import Registers
    from obcore.sim.demo import PARAMS

    seed = random.randrange(1 << 30)
    print(f"seed={seed}")
    lobster = with_ticks(read_lobster([data("lobster/LOBSTER_SampleFile_AMZN_2012-06-21_5.zip")]),
                         100_000_000)
    binance = read_binance([data("binance/usdm_btcusdt_20240808.gz")], venue=1)
    msgs = feed_array(_interleave(random.Random(seed),
                                  islice((m for u in lobster for m in u.messages), 12_000),
                                  islice((m for u in binance for m in u.messages), 12_000)))
    reference = ModelEngine()
    native.reset()
    for engine in (native, reference):
        params.apply(Registers(engine), params.load(PARAMS))
    _same_run(native, reference, msgs[:4000])
    arm = native.regmap["arm"].addr
    for engine in (native, reference):
        engine.write(arm, 1)
    for lo in range(4000, len(msgs), 5000):
        _same_run(native, reference, msgs[lo:lo + 5000])
    assert _registers(native) == _registers(reference)
    tel = reference.last_telemetry
    assert (msgs["kind"] == FeedKind.TICK).sum() > 20 and (tel["misalign"] != 0).any()


def _by_hand(*fields):
    keys = ("kind", "venue", "side", "seq", "price", "size")
    return {**dict(zip(keys, fields, strict=True)), "flags": 0}


@pytest.mark.parametrize("kind", ["model", "verilator"])
def test_telemetry_by_hand(native, kind):
    """Telemetry of hand-worked books: S, a + b, microprice terms and the SQ1.15 imbalances."""
    engine = native if kind == "verilator" else ModelEngine()
    engine.reset()
    set_, bid, ask = FeedKind.LEVEL_SET, Side.BID, Side.ASK
    msgs = feed_array([
        _by_hand(FeedKind.SNAPSHOT_START, 0, 0, 1, 0, 0),
        _by_hand(set_, 0, bid, 2, 1000, 30), _by_hand(set_, 0, ask, 3, 1004, 10),
        _by_hand(FeedKind.SNAPSHOT_END, 0, 0, 4, 0, 0),
        _by_hand(set_, 0, bid, 5, 999, 50),            # depth 80 / 10
        _by_hand(set_, 1, bid, 1, 2000, 7),            # venue 1: one-sided
        _by_hand(FeedKind.TICK, 0, 0, 0, 0, 0),
        _by_hand(set_, 7, bid, 1, 2000, 7),            # malformed: no such venue
    ])
    obs, _ = engine.run(msgs)
    tel = engine.last_telemetry
    assert list(tel["cycle"]) == list(obs["cycle"]) and list(tel["seq"]) == list(msgs["seq"])
    t = TELEM.decode(int.from_bytes(tel[4].tobytes(), "little"))
    assert (t["venue"], t["spread"], t["mid2"], t["micro_num"], t["micro_den"]) == (
        0, 4, 2004, 4 * 30, 40)
    # (30 - 10)/40 = 0.5; (80 - 10)/90 = 0.7777... -> floor(70 * 2^15 / 90) = 25486
    assert (t["obi_touch"], t["obi_depth"]) == (1 << 14, 25486)
    bits = {name for name, f in STATUS if t["sig_status"] >> f.offset & 1}
    assert {"touch_valid", "obi_touch_valid", "obi_touch_bid", "obi_depth_valid"} <= bits
    one_sided = tel[5]
    assert (one_sided["venue"], one_sided["spread"], one_sided["obi_touch"]) == (1, 0, IMB_MAX)
    assert not one_sided["sig_status"] >> STATUS["touch_valid"].offset & 1
    assert tel[6]["venue"] == 0 and tel[6]["spread"] == 4          # a TICK shows venue 0
    bad = tel[7]
    assert bad["venue"] == 7 and all(bad[f] == 0 for f in TELEM.dtype().names
                                     if f not in ("venue", "kind", "seq", "cycle"))


@pytest.mark.slow   # a profile-guided build compiles twice: minutes
def test_profile_guided_build_is_the_same_model(native):
    """open_engine(pgo=True) (the benchmark's build): the crisis demo flow agrees with the
    plain build in every output and register."""
    seed = random.randrange(1 << 30)
    print(f"seed={seed}")
    with open_engine("verilator", pgo=True) as fast:
        got = _demo_flow(fast, "crisis", seed)
    _assert_same_flow(got, _demo_flow(native, "crisis", seed))


@pytest.mark.slow   # a second, traced Verilator build: minutes
def test_fst_trace_covers_its_window(tmp_path):
    """A trace build dumps exactly the cycles asked for: the FST header's time range is the
    window (two time steps per cycle, counted from the engine's power-up)."""
    import struct

    try:
        engine = open_engine("verilator", levels=4, trace=True)
    except RuntimeError as exc:     # the build's own message says what to install
        if "development headers" not in str(exc):
            raise
        pytest.skip(str(exc).splitlines()[0])
    try:
        engine.reset()
        path = tmp_path / "window.fst"
        engine.trace(path, 100, 200)
        msgs = feed_array([m for _, m in islice(generate("calm", 3), 300)])
        engine.run(msgs)
        assert engine.cycle >= 200 + RUN_DRAIN
        blob = path.read_bytes()
        assert len(blob) > 1000 and blob[0] == 0          # FST_BL_HDR first
        start, end = struct.unpack(">QQ", blob[9:25])
        first = 2 * (100 + engine._cycle0)
        assert (start, end) == (first, first + 2 * 100 - 1)
        with pytest.raises(ValueError, match="first_cycle < last_cycle"):
            engine.trace(tmp_path / "bad.fst", 5, 5)
    finally:
        engine.close()


def test_trace_without_a_trace_build_is_a_clear_error(native, tmp_path):
    with pytest.raises(RuntimeError, match="built without FST tracing.*trace=True"):
        native.trace(tmp_path / "x.fst", 0, 10)
    assert not (tmp_path / "x.fst").exists()


def test_bulk_writes_are_single_writes_cycle_for_cycle(native):
    """``write_many`` (each word's inputs loaded by the previous word's edge) against one
    ``write`` per word on a second engine: same cycles, same words read back, and the same
    observations and orders from a replay afterwards."""
    seed = random.randrange(1 << 30)
    print(f"seed={seed}")
    rng = random.Random(seed)
    regmap = native.regmap
    # rw parameters (then a commit), and ro words: bus errors, counted by the gateware.
    targets = [r for r in regmap if r.access in ("rw", "ro")]
    pairs = []
    for _ in range(60):
        reg = rng.choice(targets)
        pairs.append((reg.element(rng.randrange(reg.count)) + rng.randrange(reg.words),
                      rng.randrange(1 << 32)))
    pairs.append((regmap["commit"].addr, 1))
    other = open_engine("verilator")
    try:
        native.reset()
        other.reset()
        native.write_many(pairs)
        for addr, word in pairs:
            other.write(addr, word)
        assert native.cycle == other.cycle
        addrs = [r.element(i) + w for r in regmap if r.access != "wo"
                 for i in range(r.count) for w in range(r.words)]
        assert native.read_many(addrs) == other.read_many(addrs)
        msgs = feed_array([m for _, m in generate("calm", seed % 1000)][:300])
        (obs, orders), (ref, ref_orders) = native.run(msgs), other.run(msgs)
        assert np.array_equal(obs, ref) and np.array_equal(orders, ref_orders)
    finally:
        other.close()
        native.reset()


def test_design_conversion_leaves_no_cyclic_garbage():
    """The Verilog conversion's ~1M objects in reference cycles are collected before the
    design is handed out, not in a later, random 0.5 s garbage collection (a paced server)."""
    from obcore.hw.top import Engine

    top = Engine(venues=1, levels=3, capacity=None)
    gc.collect()                        # earlier tests' garbage
    _convert(top)
    assert gc.collect() < 10_000


def test_converted_verilog_is_kept_per_sources_and_parameters(tmp_path, monkeypatch):
    """A second process (here: the per-process cache cleared) reads the Verilog the first
    converted; other sources or parameters convert anew."""
    import obcore.sim.engine as engine_module

    monkeypatch.setenv("OBCORE_BUILD", str(tmp_path))
    _engine_design.cache_clear()
    _, text = _engine_design(1, 3, None)
    assert text.count("module top(") == 1

    def refuse(top):
        top._MustUse__used = True       # not elaborated on purpose: no Amaranth warning
        raise AssertionError("converted again")
    monkeypatch.setattr(engine_module, "_convert", refuse)
    _engine_design.cache_clear()
    assert _engine_design(1, 3, None)[1] == text
    _engine_design.cache_clear()
    with pytest.raises(AssertionError, match="converted again"):
        _engine_design(1, 4, None)
    monkeypatch.setattr(engine_module, "_sources_key", lambda: "an edited gateware")
    _engine_design.cache_clear()
    with pytest.raises(AssertionError, match="converted again"):
        _engine_design(1, 3, None)
    _engine_design.cache_clear()


def test_sources_digest_follows_every_file(tmp_path):
    (tmp_path / "hw").mkdir()
    (tmp_path / "sim" / "sub").mkdir(parents=True)
    (tmp_path / "hw" / "a.py").write_text("A = 1\n")
    (tmp_path / "sim" / "sub" / "b.py").write_text("B = 2\n")
    (tmp_path / "hw" / "notes.txt").write_text("not a source")
    seen = {_sources_digest(tmp_path, ("hw", "sim"))}
    (tmp_path / "hw" / "notes.txt").write_text("still not a source")
    assert _sources_digest(tmp_path, ("hw", "sim")) in seen
    for step in (lambda: (tmp_path / "sim" / "sub" / "b.py").write_text("B = 3\n"),
                 lambda: (tmp_path / "hw" / "c.py").write_text(""),
                 lambda: (tmp_path / "hw" / "c.py").rename(tmp_path / "hw" / "d.py"),
                 lambda: (tmp_path / "sim" / "sub" / "b.py").unlink()):
        step()
        digest = _sources_digest(tmp_path, ("hw", "sim"))
        assert digest not in seen
        seen.add(digest)
