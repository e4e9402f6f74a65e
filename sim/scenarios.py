"""Seeded synthetic markets: calm, range, trending, the 1011 crisis and a two-venue cascade.

Every scenario is one process: each step draws, per venue, a *target* book around the
venue's current mid from the phase's regime, and the feed carries exactly the level changes
from the previous book to the target (sets and deletes), a few trades, and after every venue
one TICK. So the stream is a valid L2 diff feed whatever the parameters, and a regime is only
a row of numbers. Venues of one scenario quote the same asset: a regime's ``revert`` pulls a
venue's mid toward the others' (arbitrage), which is how venue B follows venue A in the
cascade and how A snaps back.
"""

import random
from dataclasses import dataclass

from ..hw.layouts import FeedKind, Side

__all__ = ["Regime", "Phase", "Scenario", "SCENARIOS", "generate", "venue_of"]


@dataclass(frozen=True)
class Regime:
    """How one venue's book behaves during a phase.

    ``drift`` and ``vol`` are the mid's mean and standard deviation per tick, in ticks;
    ``revert`` (0..1) the share of the gap to the other venues' mean mid the mid closes per
    tick; ``half_spread`` the touch's distance from the mid in ticks (>= 1); ``depth`` the mean
    size per level in lots; ``levels`` how many levels each side shows; ``churn`` the share of
    levels whose size is redrawn each tick.
    """
    drift: float = 0.0
    vol: float = 1.0
    revert: float = 0.0
    half_spread: int = 1
    depth: int = 50
    levels: int = 20
    churn: float = 0.3


@dataclass(frozen=True)
class Phase:
    """``steps`` time ticks with one :class:`Regime` per venue (venue A first)."""
    name: str
    steps: int
    venues: tuple


@dataclass(frozen=True)
class Scenario:
    """``params``: the parameter file in sim/params/ the demo loads for this scenario."""
    name: str
    doc: str
    phases: tuple
    start_mid: int = 1_000_000   # BTC at 100 000.0 with a 0.1 tick
    params: str = "demo.toml"

    @property
    def venues(self):
        return len(self.phases[0].venues)


def _one(name, steps, **regime):
    return Phase(name, steps, (Regime(**regime),))


# The cascade's venues: A thin and liquidation-prone (its spread is wider in calm, which its
# Spread* accounts for), B thick and stable. Arbitrage keeps their mids together in calm.
_A_CALM = Regime(vol=0.6, revert=0.3, half_spread=2, depth=25)
_B_CALM = Regime(vol=0.6, revert=0.3, half_spread=1, depth=80)

SCENARIOS = {s.name: s for s in (
    Scenario("calm", "low volatility, thick book, tight spread",
             (_one("calm", 400, vol=0.6, depth=80),)),
    Scenario("range", "high intraday volatility around a fixed level",
             (_one("range", 400, vol=3.0, half_spread=2, depth=60),)),
    Scenario("trending", "steady drift with a thinner book",
             (_one("trend", 400, drift=1.5, vol=1.0, depth=40),)),
    Scenario("crisis", "the 1011 pattern: calm, then depth vanishes on both sides at once, "
             "then the price falls through the vacuum, then a slow recovery",
             (_one("calm", 150, vol=0.6, depth=80),
              _one("cliff", 4, vol=0.6, half_spread=3, depth=2, levels=3, churn=1.0),
              _one("vacuum", 40, drift=-40.0, vol=15.0, half_spread=25, depth=2, levels=3,
                   churn=1.0),
              _one("recovery", 150, drift=0.5, vol=2.0, half_spread=3, depth=30))),
    Scenario("cascade", "two venues, one asset (domain.md section 6): forced liquidations "
             "crash the thin high-leverage venue A while B holds, B follows after a lag, "
             "then A snaps back to B",
             (Phase("calm", 120, (_A_CALM, _B_CALM)),
              Phase("burst", 15, (Regime(drift=-25.0, vol=5.0, half_spread=8, depth=3,
                                         levels=6, churn=1.0), Regime(vol=0.6, depth=80))),
              Phase("follow", 20, (Regime(drift=-3.0, vol=3.0, half_spread=6, depth=5,
                                          levels=8, churn=1.0),
                                   Regime(vol=1.5, revert=0.04, half_spread=2, depth=50))),
              Phase("snapback", 10, (Regime(vol=2.0, revert=0.35, half_spread=3, depth=12,
                                            levels=12, churn=0.6),
                                     Regime(vol=1.0, half_spread=2, depth=50))),
              Phase("recovery", 150, (_A_CALM, _B_CALM))),
             params="cascade.toml"),
)}


def venue_of(index, venue):
    """The engine venue of the scenario's venue ``index`` when venue A goes to ``venue``:
    two-venue scenarios use the pair (``venue``, ``venue ^ 1``)."""
    return venue ^ index


def _target(mid2, regime, rng, old):
    """The regime's book around ``mid2`` (twice the mid, in ticks): {side: {price: size}}."""
    bid0 = (mid2 - 2 * regime.half_spread) // 2
    ask0 = -(-(mid2 + 2 * regime.half_spread) // 2)
    book = {}
    for side, best, step in ((Side.BID, bid0, -1), (Side.ASK, ask0, 1)):
        levels = {}
        for i in range(regime.levels):
            price = best + step * i
            keep = old[side].get(price)
            if keep is not None and rng.random() > regime.churn:
                levels[price] = min(keep, 4 * regime.depth)
            else:
                levels[price] = max(1, int(rng.expovariate(1 / regime.depth)))
        book[side] = levels
    return book


class _Venue:
    """One venue's feed: its book, its mid and its sequence numbers."""

    def __init__(self, engine_venue, mid2):
        self.venue, self.mid2, self.seq = engine_venue, mid2, 0
        self.book = {Side.BID: {}, Side.ASK: {}}

    def msg(self, kind, side=0, price=0, size=0):
        self.seq += 1
        return {"kind": int(kind), "venue": self.venue, "side": int(side), "flags": 0,
                "seq": self.seq & 0xFFFF_FFFF, "price": price, "size": size}

    def snapshot(self, regime, rng):
        yield self.msg(FeedKind.SNAPSHOT_START)
        self.book = _target(self.mid2, regime, rng, self.book)
        for side in (Side.BID, Side.ASK):
            for price, size in self.book[side].items():
                yield self.msg(FeedKind.LEVEL_SET, side, price, size)
        yield self.msg(FeedKind.SNAPSHOT_END)

    def step(self, regime, rng, move):
        """Move the mid by ``move`` ticks (rounded) and emit the diff to the new book."""
        shift = 2 * round(move)
        self.mid2 += shift
        new = _target(self.mid2, regime, rng, self.book)
        # The side the move runs into goes first, and only its levels that would cross the
        # other side's new touch; then each side sets its new levels before it deletes its
        # stale ones. So no intermediate book is crossed, and a side only empties when the
        # move sweeps all of it: the touch moves as a real book's does, not through
        # artefacts of the diff order that would trip spread or depth triggers.
        ahead, behind = (Side.BID, Side.ASK) if shift <= 0 else (Side.ASK, Side.BID)
        if ahead == Side.BID:
            crossing = [p for p in self.book[Side.BID] if p >= min(new[Side.ASK])]
        else:
            crossing = [p for p in self.book[Side.ASK] if p <= max(new[Side.BID])]
        for price in sorted(crossing):
            del self.book[ahead][price]
            yield self.msg(FeedKind.LEVEL_DELETE, ahead, price)
        for side in (behind, ahead):
            for price, size in new[side].items():
                if self.book[side].get(price) != size:
                    yield self.msg(FeedKind.LEVEL_SET, side, price, size)
            for price in sorted(set(self.book[side]) - set(new[side])):
                yield self.msg(FeedKind.LEVEL_DELETE, side, price)
        self.book = new
        if rng.random() < 0.3:
            side = rng.choice((Side.BID, Side.ASK))
            touch = min(new[Side.ASK]) if side == Side.BID else max(new[Side.BID])
            yield self.msg(FeedKind.TRADE, side, touch, 1 + rng.randrange(5))


def generate(name, seed, venue=0):
    """Yield ``(phase name, message dict)`` for scenario ``name``; same seed, same stream.

    Venue A goes to engine venue ``venue``, a second venue to ``venue ^ 1``."""
    try:
        scenario = SCENARIOS[name]
    except KeyError:
        raise ValueError(f"unknown scenario {name!r}; choose one of "
                         f"{', '.join(SCENARIOS)}") from None
    rng = random.Random(seed)
    first = scenario.phases[0]
    venues = [_Venue(venue_of(i, venue), 2 * scenario.start_mid)
              for i in range(scenario.venues)]
    for v, regime in zip(venues, first.venues, strict=True):
        for m in v.snapshot(regime, rng):
            yield first.name, m
    tick = {"kind": int(FeedKind.TICK), "venue": 0, "side": 0, "flags": 0, "seq": 0,
            "price": 0, "size": 0}
    for phase in scenario.phases:
        for _ in range(phase.steps):
            # Every venue's move is drawn from the mids before this step: they move at once.
            mids = [v.mid2 / 2 for v in venues]
            for i, (v, regime) in enumerate(zip(venues, phase.venues, strict=True)):
                others = [m for j, m in enumerate(mids) if j != i]
                pull = regime.revert * (sum(others) / len(others) - mids[i]) if others else 0
                for m in v.step(regime, rng, rng.gauss(regime.drift, regime.vol) + pull):
                    yield phase.name, m
            yield phase.name, dict(tick)
