"""Random quoter inputs for verifying the quote engine against its model, cycle by cycle."""

from amaranth.hdl import Shape

from ..hw.quoter import PARAMS, SCALE_ONE, SIGMA2_FRAC, VENUE_INIT
from ..hw.ratelimit import PRICE_BITS, param_shape
from .quoter_model import WARMUP, default_params, market

__all__ = ["Stimulus"]


class Stimulus:
    """Random quoter inputs for verification, one cycle per :meth:`next`: books near 1e6
    ticks with jumps, crossed, one-sided, empty and extreme books; sigma2, depths and fills
    from calm to saturating; regimes, guard scales and boosts; ticks, pull episodes and
    disarms; parameter changes (mostly plausible, sometimes any raw value); back-pressure."""

    def __init__(self, rng, venues):
        self.rng, self.venues = rng, venues
        self.mids = [rng.randrange(900_000, 1_100_000) for _ in range(venues)]
        self.inputs = market(venues, 0, 0)
        self.pull_left = self.off_left = 0
        self.tick_rate, self.busy = 0.05, 0.2
        self.cycle = 0                  # disarmed for the first WARMUP cycles
        self.net = 0                    # the net position the fills so far add up to

    def _log(self, bits, lo=0):
        return max(lo, int(2 ** self.rng.uniform(0, bits)) - 1)

    def param(self, name):
        """A raw value for parameter ``name``: plausible, or (1 in 20) any raw value."""
        rng, log = self.rng, self._log
        width = Shape.cast(param_shape(name)).width
        width_max = (1 << width) - 1
        if rng.random() < 0.05:
            value = rng.choice((0, (1 << width) - 1, rng.randrange(1 << width)))
            return [value & 0xFFFF] * 3 if name == "level_gap" else value
        plausible = {
            "gamma": lambda: log(28, 1 << 14),
            "tau": lambda: rng.choice((rng.randrange(1 << 14, 1 << 18), log(32),
                                       rng.randrange(1 << 28, 1 << 32))),
            "kappa_term": lambda: rng.randrange(10 << 16),
            "q_limit": lambda: rng.randrange(50, 5000),
            "sigma_sel": lambda: rng.randrange(4), "min_spread": lambda: rng.randrange(20),
            "allow_cross": lambda: int(rng.random() < 0.2), "max_dist": lambda: log(17, 8),
            "level_gap": lambda: [rng.randrange(6) for _ in range(3)],
            "base_size": lambda: log(12, 1), "depth_frac": lambda: rng.randrange(1 << 15),
            "vol_ref": lambda: rng.randrange(1 << 16, 5000 << 16),
            "regime_size": lambda: rng.randrange(1 << 64),
            "size_cap": lambda: rng.choice((log(31), (1 << 31) - 1)),
            "tau_mode": lambda: int(rng.random() < 0.3),
            "lev_lots": lambda: rng.choice((log(32), rng.randrange(20, 5000), width_max)),
            "size_min": lambda: log(4),
            "requote_cycles": lambda: rng.randrange(64),
            "rate_tokens": lambda: rng.choice((log(10), rng.randrange(256, 4096))),
            "rate_depth": lambda: rng.randrange(1, 32),
        }
        return plausible[name]()

    def _book(self, v):
        rng, inp = self.rng, self.inputs
        roll = rng.random()
        self.mids[v] += rng.randrange(-3000, 3001) if roll < 0.02 else rng.randrange(-4, 5)
        self.mids[v] = max(1, min((1 << PRICE_BITS) - 2, self.mids[v]))
        half = rng.choice((0, -1)) if roll > 0.98 else rng.randrange(1, 12)
        bid, ask = self.mids[v] - half, self.mids[v] + half + rng.randrange(2)
        if rng.random() < 0.01:
            bid, ask = rng.choice(((0, ask), (bid, 0), (1, 2), ((1 << 32) - 3, (1 << 32) - 1)))
        inp["best_bid"][v], inp["best_ask"][v] = max(bid, 0), min(max(ask, 0), (1 << 32) - 1)
        inp["book_valid"][v] = int(bid > 0 and ask > 0)
        for side in ("bid_depth", "ask_depth"):
            if rng.random() < 0.3:
                inp[side][v] = rng.choice((0, (1 << 36) - 1)) if rng.random() < 0.02 else (
                    self._log(20))
        if rng.random() < 0.05:
            sig2 = self._log(50) if rng.random() < 0.2 else rng.randrange(5000) << SIGMA2_FRAC
            inp[rng.choice(("sigma2_fast", "sigma2_slow"))][v] = sig2
        if rng.random() < 0.01:
            inp["regime"][v] = rng.randrange(16) if rng.random() < 0.5 else 0
            inp["size_scale"][v] = rng.choice((SCALE_ONE, SCALE_ONE, rng.randrange(1 << 16)))
            inp["gamma_boost"][v] = rng.choice((0, 0, 0, rng.randrange(8)))
        if rng.random() < 0.01:              # L_safe: sigma and the signal block's registers
            for name, bits in (("sigma", 25), ("leverage_max", 16), ("lsafe_k", 32),
                               ("liquidity_risk", 16)):
                inp[name][v] = rng.choice((VENUE_INIT.get(name, 0), self._log(bits),
                                           self._log(bits // 2 + 4)))

    def next(self, params):
        """The inputs of one cycle (``params`` may be changed in place) and ``ready``."""
        rng, inp = self.rng, self.inputs
        for v in range(self.venues):
            if rng.random() < 0.3:
                self._book(v)
        if rng.random() < 0.004:
            self.tick_rate = rng.choice((0.0, 0.01, 0.05, 0.3, 1.0))
            self.busy = rng.choice((0.0, 0.1, 0.3, 0.7, 0.95))
        if rng.random() < 0.01:
            name = rng.choice(PARAMS)
            params[name] = self.param(name)
        elif rng.random() < 0.0005:          # back to the resets, so quoting resumes
            params.update(default_params(), requote_cycles=self.param("requote_cycles"))
        fill = None
        if rng.random() < 0.02:
            size = (1 << 31) - 1 if rng.random() < 0.02 else self._log(10, 1)
            side = rng.randrange(2)
            if self.net and rng.random() < 0.2:      # flatten, so quoting comes back
                side, size = int(self.net > 0), min(abs(self.net), (1 << 31) - 1)
            venue = rng.randrange(self.venues + 1)     # venue == venues: not ours, ignored
            fill = {"valid": 1, "venue": venue, "side": side, "size": size}
            if venue < self.venues:
                self.net += -size if side else size
        if self.pull_left == 0 and rng.random() < 0.002:
            self.pull_left = rng.choice((1, 2, rng.randrange(1, 300)))
        if self.off_left == 0 and rng.random() < 0.001:
            self.off_left = rng.randrange(1, 200)
        inp.update(fill=fill, tick=int(rng.random() < self.tick_rate),
                   horizon=int(rng.random() < 0.002),
                   pull=int(self.pull_left > 0),
                   enable=int(self.off_left == 0 and self.cycle >= WARMUP))
        self.cycle += 1
        self.pull_left, self.off_left = max(self.pull_left - 1, 0), max(self.off_left - 1, 0)
        return {k: list(v) if isinstance(v, list) else v for k, v in inp.items()}, (
            rng.random() >= self.busy)

