"""Seeded synthetic markets: calm, range, trending and the 1011 liquidity-withdrawal crisis.

Every scenario is one process: each step draws a *target* book around the current mid from the
phase's parameters, and the feed carries exactly the level changes from the previous book to
the target (sets and deletes), a few trades, and one TICK. So the stream is a valid L2 diff
feed whatever the parameters, and a regime is only a row of numbers.
"""

import random
from dataclasses import dataclass

from ..hw.layouts import FeedKind, Side

__all__ = ["Phase", "Scenario", "SCENARIOS", "generate"]


@dataclass(frozen=True)
class Phase:
    """One regime for ``steps`` time ticks.

    ``drift`` and ``vol`` are the mid's mean and standard deviation per tick, in ticks;
    ``half_spread`` the touch's distance from the mid in ticks (>= 1); ``depth`` the mean size
    per level in lots; ``levels`` how many levels each side shows; ``churn`` the share of levels
    whose size is redrawn each tick.
    """
    name: str
    steps: int
    drift: float = 0.0
    vol: float = 1.0
    half_spread: int = 1
    depth: int = 50
    levels: int = 20
    churn: float = 0.3


@dataclass(frozen=True)
class Scenario:
    name: str
    doc: str
    phases: tuple
    start_mid: int = 1_000_000   # BTC at 100 000.0 with a 0.1 tick


SCENARIOS = {s.name: s for s in (
    Scenario("calm", "low volatility, thick book, tight spread",
             (Phase("calm", 400, vol=0.6, depth=80),)),
    Scenario("range", "high intraday volatility around a fixed level",
             (Phase("range", 400, vol=3.0, half_spread=2, depth=60),)),
    Scenario("trending", "steady drift with a thinner book",
             (Phase("trend", 400, drift=1.5, vol=1.0, depth=40),)),
    Scenario("crisis", "the 1011 pattern: calm, then depth vanishes on both sides at once, "
             "then the price falls through the vacuum, then a slow recovery",
             (Phase("calm", 150, vol=0.6, depth=80),
              Phase("cliff", 4, vol=0.6, half_spread=3, depth=2, levels=3, churn=1.0),
              Phase("vacuum", 40, drift=-40.0, vol=15.0, half_spread=25, depth=2, levels=3,
                    churn=1.0),
              Phase("recovery", 150, drift=0.5, vol=2.0, half_spread=3, depth=30))),
)}


def _target(mid2, phase, rng, old):
    """The phase's book around ``mid2`` (twice the mid, in ticks): {side: {price: size}}."""
    bid0 = (mid2 - 2 * phase.half_spread) // 2
    ask0 = -(-(mid2 + 2 * phase.half_spread) // 2)
    book = {}
    for side, best, step in ((Side.BID, bid0, -1), (Side.ASK, ask0, 1)):
        levels = {}
        for i in range(phase.levels):
            price = best + step * i
            keep = old[side].get(price)
            if keep is not None and rng.random() > phase.churn:
                levels[price] = min(keep, 4 * phase.depth)
            else:
                levels[price] = max(1, int(rng.expovariate(1 / phase.depth)))
        book[side] = levels
    return book


def generate(name, seed, venue=0):
    """Yield ``(phase name, message dict)`` for scenario ``name``; same seed, same stream."""
    try:
        scenario = SCENARIOS[name]
    except KeyError:
        raise ValueError(f"unknown scenario {name!r}; choose one of "
                         f"{', '.join(SCENARIOS)}") from None
    rng = random.Random(seed)
    seq = 0

    def msg(kind, side=0, price=0, size=0, sequenced=True):
        nonlocal seq
        fields = {"kind": int(kind), "venue": venue if kind != FeedKind.TICK else 0,
                  "side": int(side), "flags": 0, "seq": 0, "price": price, "size": size}
        if sequenced:
            seq += 1
            fields["seq"] = seq & 0xFFFF_FFFF
        return fields

    mid2 = 2 * scenario.start_mid
    book = {Side.BID: {}, Side.ASK: {}}
    first = scenario.phases[0]
    yield first.name, msg(FeedKind.SNAPSHOT_START)
    book = _target(mid2, first, rng, book)
    for side in (Side.BID, Side.ASK):
        for price, size in book[side].items():
            yield first.name, msg(FeedKind.LEVEL_SET, side, price, size)
    yield first.name, msg(FeedKind.SNAPSHOT_END)
    for phase in scenario.phases:
        for _ in range(phase.steps):
            mid2 += 2 * round(rng.gauss(phase.drift, phase.vol))
            new = _target(mid2, phase, rng, book)
            # Deletes on both sides first: what remains is a subset of the new, uncrossed
            # book, so no intermediate state of a big mid move is crossed.
            for side in (Side.BID, Side.ASK):
                for price in sorted(set(book[side]) - set(new[side])):
                    yield phase.name, msg(FeedKind.LEVEL_DELETE, side, price)
            for side in (Side.BID, Side.ASK):
                for price, size in new[side].items():
                    if book[side].get(price) != size:
                        yield phase.name, msg(FeedKind.LEVEL_SET, side, price, size)
            book = new
            if rng.random() < 0.3:
                side = rng.choice((Side.BID, Side.ASK))
                touch = min(book[Side.ASK]) if side == Side.BID else max(book[Side.BID])
                yield phase.name, msg(FeedKind.TRADE, side, touch, 1 + rng.randrange(5))
            yield phase.name, msg(FeedKind.TICK, sequenced=False)
