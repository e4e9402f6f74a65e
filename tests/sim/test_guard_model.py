"""The guard's reference model on hand-worked sequences: the spec the gateware is checked on."""

import random
import sys

import pytest

from obcore.hw.guard import LATENCY, MARGIN_LATENCY, REASONS, SIZE_ONE, STATE
from obcore.hw.signals import STATUS, VolRegime
from obcore.sim.guard_model import GuardModel, Stimulus, bit, default_inputs, pack, unpack


def calm(venues=2, **changes):
    inp = default_inputs(venues)
    inp.update(best_bid=[1000] * venues, best_ask=[1001] * venues, book_valid=[1] * venues,
               synced=[1] * venues, exact=[1] * venues, bid_depth=[100] * venues,
               ask_depth=[100] * venues, q_limit=1000)
    inp.update(changes)
    return inp


def state(out, name):
    return out["pull_state"] >> STATE[name].offset & 1


def run(model, n, **changes):
    return [model.step(calm(model.venues, **changes)) for _ in range(n)]


def late(model, inp):
    """Step ``inp``, then ``LATENCY`` calm cycles: the outputs of the cycle that shows it."""
    out = model.step(inp)
    for i in range(LATENCY):
        out = model.step(calm(model.venues, cycle=inp["cycle"] + i + 1))
    return out


def armed(venues=2, **params):
    """A model armed with ``params``: the arm has taken effect."""
    model = GuardModel(venues)
    model.params.update(params)
    late(model, calm(venues, arm=1))
    return model


def test_reset_is_a_hold_released_by_arm_only():
    model = GuardModel()
    model.params.update(auto_arm=1, cooldown=0)
    outs = run(model, 10)
    assert all(o["pull"] and state(o, "hold") for o in outs)
    assert outs[0]["pull_reasons_set"] == outs[0]["pull_first"] == bit("reset")
    out = model.step(calm(arm=1))
    assert out["pull"] and not state(out, "refused")
    out = run(model, LATENCY + 1)[-1]
    assert not out["pull"] and out["pull_reasons_set"] == 0 and out["pull_count"] == 0


def test_pull_is_latency_cycles_late_latched_and_recorded():
    model = armed()
    run(model, 3)
    out = late(model, calm(best_ask=[1001, 1000], cycle=77 - LATENCY))   # locked on venue 1
    assert out["pull"] and out["pull_reasons_set"] == bit("crossed")
    assert out["pull_venues_set"] == 0b10 and out["pull_count"] == 0
    outs = run(model, 5)
    assert all(o["pull"] and not o["pull_reasons_set"] for o in outs)
    assert outs[0]["pull_count"] == 1 and outs[0]["pull_cycle"] == 77
    assert outs[0]["pull_first"] == bit("crossed")


def test_arm_is_refused_while_a_trigger_holds():
    model = armed()
    model.step(calm(synced=[0, 1]))
    out = model.step(calm(synced=[0, 1], arm=1))
    assert out["pull"] and not state(out, "refused")
    out = run(model, LATENCY + 1, synced=[0, 1])[-1]
    assert out["pull"] and state(out, "refused") and out["refused_count"] == 1
    model.step(calm(arm=1))
    out = run(model, LATENCY + 1)[-1]
    assert not out["pull"] and not state(out, "refused") and out["refused_count"] == 1


def test_disabled_trigger_does_nothing_and_hold_bits_cannot_be_disabled():
    model = armed(pull_enable=0)
    out = late(model, calm(synced=[0, 0], rate_exceeded=1, best_bid=[2000, 2000]))
    assert not out["pull"] and out["pull_reasons_set"] == 0
    out = late(model, calm(kill=1))
    assert out["pull"] and out["pull_reasons_set"] == bit("kill")


def test_heartbeat_lost_timeout_plus_one_cycles_after_the_last_write():
    model = armed(heartbeat_timeout=4)
    model.step(calm(heartbeat=1))
    outs = run(model, 5 + LATENCY)
    assert [o["pull"] for o in outs] == [0] * (4 + LATENCY) + [1]
    assert outs[-1]["pull_reasons_set"] == bit("heartbeat")
    out = late(model, calm(heartbeat=1))
    assert out["pull_reasons_set"] == bit("heartbeat"), "the write counts from the next cycle"
    assert model.step(calm())["pull_reasons_set"] == 0


def test_cooldown_counts_clear_cycles_and_restarts_on_a_flicker():
    model = armed(auto_arm=1, cooldown=3)
    late(model, calm(rate_exceeded=1))
    outs = run(model, 5)
    assert [o["pull"] for o in outs] == [1, 1, 1, 1, 0]
    assert [state(o, "cooling") for o in outs] == [1, 1, 1, 1, 0]
    late(model, calm(rate_exceeded=1))
    run(model, 2 - LATENCY)
    assert late(model, calm(rate_exceeded=1))["pull"]        # a flicker restarts the count
    assert [o["pull"] for o in run(model, 5)] == [1, 1, 1, 1, 0]


def test_kill_holds_through_auto_arm_and_wins_over_a_same_cycle_arm():
    model = armed(auto_arm=1, cooldown=0)
    out = late(model, calm(kill=1, arm=1))
    assert out["pull"] and out["pull_reasons_set"] == bit("kill")
    outs = run(model, 20)
    assert all(o["pull"] and state(o, "hold") for o in outs)
    assert outs[0]["refused_count"] == 1 and outs[-1]["pull_reasons_set"] == bit("kill")
    model.step(calm(arm=1))
    assert not run(model, LATENCY + 1)[-1]["pull"]


@pytest.mark.parametrize("q,limit,over", [
    (1000, 1000, False), (-1000, 1000, False), (1001, 1000, True), (-1001, 1000, True),
    (-(1 << 31), (1 << 31) - 1, True), (0, 0, False), (0, -1, True)])
def test_inventory_is_signed(q, limit, over):
    model = armed()
    mask = (1 << 32) - 1
    out = late(model, calm(inventory=q & mask, q_limit=limit & mask))
    assert out["pull_reasons_set"] == (bit("inventory") if over else 0)


@pytest.mark.parametrize("bid,ask,smax,bits", [
    (1000, 2000, 1000, 0), (1000, 2001, 1000, bit("spread")),
    (1, (1 << 32) - 1, (1 << 32) - 1, 0), (1, (1 << 32) - 1, (1 << 32) - 3, bit("spread")),
    ((1 << 32) - 1, (1 << 32) - 1, 0, bit("crossed")), (5, 4, 0, bit("crossed"))])
def test_spread_and_crossed_at_the_32_bit_edges(bid, ask, smax, bits):
    model = armed()
    model.params["spread_max"] = [smax, 1000]
    out = late(model, calm(best_bid=[bid, 1000], best_ask=[ask, 1001]))
    assert out["pull_reasons_set"] == bits


def test_margin_level_compares_without_dividing():
    model = GuardModel()                  # level exactly margin_pull (0.19995): not under
    model.params.update(maint_margin=1 << 12, margin_pull=819, margin_warn=2048, equity=819)
    model.step(calm(arm=1))
    out = run(model, MARGIN_LATENCY + LATENCY)[-1]
    assert not out["pull"] and state(out, "margin_warn")
    assert out["size_scale"] == [SIZE_ONE // 2] * 2 and out["gamma_boost"] == [1, 1]
    model.params["equity"] = 818
    outs = run(model, MARGIN_LATENCY + LATENCY + 1)
    assert not any(o["pull"] for o in outs[:-1]), "the margin compare is pipelined"
    assert outs[-1]["pull_reasons_set"] == bit("margin")


def test_warnings_take_the_smallest_size_and_the_largest_boost():
    model = GuardModel(2)
    model.params.update(crisis_size=SIZE_ONE // 4, crisis_gamma=2, trend_size=0xFFFF,
                        trend_gamma=6)
    out = late(model, calm(regime=[VolRegime.CRISIS.value, VolRegime.TREND.value | 0b1100]))
    assert out["size_scale"] == [SIZE_ONE // 4, SIZE_ONE] and out["gamma_boost"] == [2, 6]
    out = late(model, calm(regime=[VolRegime.STABLE.value, VolRegime.RANGE.value]))
    assert out["size_scale"] == [SIZE_ONE] * 2 and out["gamma_boost"] == [0, 1]


def test_signal_status_bits_map_to_their_reasons():
    for r in REASONS:
        if r.status:
            model = armed()
            out = late(model, calm(sig_status=[0, 1 << STATUS[r.status].offset]))
            assert out["pull_reasons_set"] == bit(r.name) and out["pull_venues_set"] == 0b10


def test_pack_and_unpack():
    assert pack("best_bid", [1, 2]) == 1 | 2 << 32 and pack("pull_count", 5) == 5
    assert unpack("size_scale", pack("size_scale", [3, 0xFFFF]), 2) == [3, 0xFFFF]


@pytest.mark.parametrize("bad", [0, 17, True, "1"])
def test_venues_validated(bad):
    with pytest.raises(ValueError, match="venues must be an integer 1..16"):
        GuardModel(bad)


def test_stimulus_reaches_every_reason_and_both_re_arms():
    seed = random.randrange(1 << 31)
    print(f"seed={seed}", file=sys.stderr)
    stim, model = Stimulus(random.Random(seed), 2), GuardModel(2)
    seen, falls, prev = 0, 0, None
    for i in range(60000):
        if i % 10000 == 0:   # several parameter draws: one may leave a trigger out of reach
            stim.randomize_params(model.params)
        inp = stim.next(model.params)
        out = model.step(inp)
        seen |= out["pull_reasons_set"]
        falls += bool(prev and prev["pull"] and not out["pull"])
        prev = out
    assert seen == (1 << len(REASONS)) - 1, f"seed={seed}: {seen:b}"
    assert out["pull_count"] > 50 and out["refused_count"] > 50 and falls > 50, f"seed={seed}"
