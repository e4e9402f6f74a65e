"""cocotb bench for hw/quoter.py: random markets, fills, parameters, pulls and back-pressure.

Every output is registered, so at each falling edge the bench reads the outputs of the
cycle, checks them against the model, then drives the cycle's inputs and ``ready`` and steps
the model. Orders are checked in order: the i-th order the gateware hands over must be the
model's i-th, field for field, and in the same cycle. Every order the gateware hands over
must also keep our own quotes uncrossed (issue 6): after it, per venue, the highest bid we
rest is below the lowest ask we rest, over all levels.
"""

import os
from collections import Counter

import cocotb
from amaranth.hdl import Shape
from cocotb.triggers import FallingEdge
from tb import TB

from obcore.hw.layouts import OrderKind, decode_order
from obcore.hw.quoter import CAP_MAX, FLAGS
from obcore.hw.ratelimit import Act, param_shape
from obcore.sim.quoter_model import QuoterModel, port_values
from obcore.sim.quoter_stimulus import Stimulus

VENUES, LEVELS = 2, 3              # must match tests/cocotb/test_quoter.py
CYCLES = int(os.environ.get("QUOTER_CYCLES", "60000"))
WIDTH = 32                         # position elements


class QuoterBench(TB):
    """Drives the stimulus and the order port's ``ready``; checks outputs every cycle."""

    def __init__(self, dut):
        super().__init__(dut)
        self.model = QuoterModel(VENUES, LEVELS)
        self.stim = Stimulus(self.rng, VENUES)
        self.driven = {}
        self.handles = {}
        self.got, self.want = [], []          # orders handed over: (cycle, word)
        self.seen = Counter()
        self.pulled = False                   # the pull input of the previous cycle
        self.owed = 0                         # CANCEL_ALLs due: pull rose, not yet taken
        self.waiting = False                  # an order presented when pull rose, not taken
        self.resting = {}                     # (venue, side, level): price, from the orders

    def _handle(self, name):
        if name not in self.handles:
            self.handles[name] = getattr(self.dut, name.replace(".", "__"))
        return self.handles[name]

    def _set(self, name, value):
        if self.driven.get(name) != value:
            self._handle(name).value = value
            self.driven[name] = value

    def _read(self, name):
        return int(self._handle(name).value)

    def check(self, n, ready):
        """Compare the registered outputs of cycle ``n`` with the model's."""
        want = self.model.outputs()
        valid = self._read("orders__valid")
        got = {"valid": valid, "rate_exceeded": self._read("rate_exceeded"),
               "quote_flags_set": self._read("quote_flags_set"),
               "position_net": self._read("position_net"),
               "tau_left": self._read("tau_left"),
               "position": self._read("position")}
        mask = (1 << WIDTH) - 1
        expect = {"valid": int(want["valid"]), "rate_exceeded": int(want["rate_exceeded"]),
                  "quote_flags_set": want["quote_flags_set"],
                  "position_net": want["position_net"] & mask, "tau_left": want["tau_left"],
                  "position": sum((q & mask) << (v * WIDTH)
                                  for v, q in enumerate(want["position"]))}
        if n < 16:                       # flags describe the pipeline: defined after warm-up
            got["quote_flags_set"] = expect["quote_flags_set"]
        errors = {k: (v, expect[k]) for k, v in got.items() if v != expect[k]}
        assert not errors, f"cycle {n}: gateware != model (got, want): {errors}"
        if valid and ready:
            word = self._read("orders__payload")
            self._pull_rules(n, decode_order(word))
            self._never_crossed(n, decode_order(word))
            self.got.append((n, word))
        self.seen["rate_exceeded"] += got["rate_exceeded"]
        self.seen["stalled"] += valid and not ready
        for name, field in FLAGS:
            self.seen[f"flag_{name}"] += got["quote_flags_set"] >> field.offset & 1

    def _pull_rules(self, n, order):
        """The PULL contract on the gateware's own output: after pull rises, the next order
        is CANCEL_ALL (only an order already presented may go first), then nothing while
        pull stays high; and seq counts every order."""
        if self.got:
            assert order["seq"] == (decode_order(self.got[-1][1])["seq"] + 1) % (1 << 32), n
        if order["kind"] == OrderKind.CANCEL_ALL:
            assert self.owed, f"cycle {n}: CANCEL_ALL without a pull"
            self.owed, self.waiting = self.owed - 1, False
        elif self.owed:
            assert self.waiting, f"cycle {n}: {order} before the CANCEL_ALL"
            self.waiting = False
        else:
            assert not self.pulled, f"cycle {n}: {order} while pulled"

    def _never_crossed(self, n, order):
        """Issue 6 on the gateware's own output: the resting quotes the orders so far leave
        never cross, per venue: max(our bids) < min(our asks)."""
        kind = order["kind"]
        if kind == OrderKind.CANCEL_ALL:
            self.resting = {}
            return
        key = (order["venue"], order["side"], order["slot"])
        if kind == OrderKind.CANCEL:
            self.resting.pop(key, None)
        else:
            self.resting[key] = order["price"]
        venue = order["venue"]
        bids = [p for (v, side, _), p in self.resting.items() if v == venue and side == 0]
        asks = [p for (v, side, _), p in self.resting.items() if v == venue and side == 1]
        assert not bids or not asks or max(bids) < min(asks), (
            f"cycle {n}: {order} crosses our own quotes: {self.resting}")

    def track_pull(self, pull, ready):
        """Called after the cycle's outputs were checked, with the cycle's pull and ready."""
        if pull and not self.pulled:
            held = bool(self._read("orders__valid")) and not ready
            kind = decode_order(self._read("orders__payload"))["kind"] if held else None
            # One CANCEL_ALL per rise, unless one is owed beyond a CANCEL_ALL held on the
            # port (rises while one waits to load, and the held one's next, share it).
            if self.owed == (kind == OrderKind.CANCEL_ALL):
                self.waiting = self.waiting or (held and not self.owed)
                self.owed += 1
        self.pulled = bool(pull)

    def compare_orders(self):
        """The in-order check: every order handed over so far, pairwise."""
        for i, ((cg, wg), (cw, ww)) in enumerate(zip(self.got, self.want, strict=False)):
            assert wg == ww and cg == cw, (
                f"order {i}: gateware {decode_order(wg)} in cycle {cg}, "
                f"model {decode_order(ww)} in cycle {cw}")
        assert len(self.got) == len(self.want), f"{len(self.got)} orders != {len(self.want)}"

    async def cycle(self, n):
        inputs, ready = self.stim.next(self.model.params)
        self.check(n, ready)
        self.track_pull(inputs["pull"], ready)
        for name, value in port_values(inputs, self.model.params, VENUES).items():
            self._set(name, value)
        self._set("orders__ready", int(ready))
        word = self.model.step(inputs, ready)
        if word is not None:
            self.want.append((n, word))
            self.seen[OrderKind(decode_order(word)["kind"]).name] += 1
        self.seen["pull"] += inputs["pull"]
        # the L_safe divider capping, and the horizon count-down under way in tau_mode 1
        self.seen["lsafe_cap"] += min(self.model.divider.quot) < CAP_MAX
        self.seen["tau_countdown"] += bool(self.model.params["tau_mode"] & 1
                                           and self.model.tau_left < self.model.params["tau"])
        e = self.model.emitter            # the self-cross guard holding an order back
        self.seen["cross_held"] += any(
            a in (Act.NEW, Act.REPLACE) and not j and t == 0 and e.crosses(k)
            for k, (a, j, t) in enumerate(zip(e.act, e.just, e.timer, strict=True)))
        await FallingEdge(self.clk)


def _force_tau_countdown(bench):
    bench.model.params.update(tau_mode=1, tau=bench.model.params["tau"] or 1 << 20)
    bench.stim.tick_rate = max(bench.stim.tick_rate, 0.05)


def _force_gain(bench):
    """gamma x tau over the risk path's operand: both at their raw maximum, tau fixed."""
    bench.model.params.update(tau_mode=0, **{name: (1 << Shape.cast(param_shape(name)).width)
                                             - 1 for name in ("gamma", "tau")})


# Rare in the random parameters (some seeds never get there): at these cycles, when no
# earlier cycle did, switched on as a parameter change would (the random changes go on).
FORCED = ((CYCLES // 2, "tau_countdown", _force_tau_countdown),
          (3 * CYCLES // 4, "flag_gain", _force_gain))


@cocotb.test()
async def random_quoting(dut):
    """Random markets, fills, parameters, pulls and back-pressure; every order in order."""
    bench = QuoterBench(dut)
    for name, value in port_values(bench.stim.inputs, bench.model.params, VENUES).items():
        bench._set(name, value)
    bench._set("orders__ready", 0)
    await bench.reset()
    # TB.reset ends on the first edge out of reset: the gateware has clocked one cycle of
    # these inputs already (the L_safe divider's phase counts it), so the model does too.
    bench.model.step(bench.stim.inputs, False)
    await FallingEdge(bench.clk)
    for n in range(CYCLES):
        for at, name, force in FORCED:
            if n == at and not bench.seen[name]:
                force(bench)
        await bench.cycle(n)
        if n % 4096 == 0:
            bench.compare_orders()
    bench.compare_orders()
    dut._log.info(f"{CYCLES} cycles, {len(bench.got)} orders checked in order; "
                  f"seen: {dict(bench.seen)}")
    needed = [k.name for k in OrderKind] + ["rate_exceeded", "stalled", "pull", "cross_held",
                                            "lsafe_cap", "tau_countdown"] + [
        f"flag_{name}" for name, _ in FLAGS]
    missing = [k for k in needed if bench.seen[k] == 0]
    assert not missing, f"never exercised: {missing}"
