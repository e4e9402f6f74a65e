"""Own fills from the fill-probability model lambda(delta) = A e^(-k delta), and their account.

The engine's order stream says where our quotes rest; once per time tick each resting quote
is hit with the probability that at least one market order reaches it in that tick, for
order arrivals at rate ``lambda(delta)`` per tick (Poisson): ``1 - exp(-lambda(delta))``.
``delta`` is the quote's distance from the venue's mid in ticks (through the mid counts as
0). A hit fills ``min(clip, resting size)`` lots at the quote's price; the host sends it to
the engine as a FILL feed message, so the gateware's inventory q moves as the host's does.
"""

import math
import random
from dataclasses import dataclass, field

from ..hw.layouts import FeedKind, OrderKind, Side

__all__ = ["FillModel", "OwnQuotes", "Account", "Draw", "fill_message", "fill_rng"]


@dataclass(frozen=True)
class FillModel:
    """``a``: order arrivals per tick at the mid (> 0); ``k``: their decay per tick of
    distance (> 0, domain.md section 3's k); ``clip``: lots one hit takes at most (>= 1)."""
    a: float = 1.0
    k: float = 1.5
    clip: int = 10

    def __post_init__(self):
        for name, lo in (("a", 0), ("k", 0)):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > lo):
                raise ValueError(f"fill model {name} must be a finite number > {lo}, "
                                 f"not {value!r}")
        if isinstance(self.clip, bool) or not isinstance(self.clip, int) or self.clip < 1:
            raise ValueError(f"fill model clip must be an integer >= 1 lot, not {self.clip!r}")

    def rate(self, delta):
        """lambda(delta) = a e^(-k max(delta, 0)): arrivals per tick."""
        return self.a * math.exp(-self.k * max(delta, 0.0))

    def probability(self, delta):
        """Probability of at least one hit in one tick: 1 - e^(-lambda(delta))."""
        return -math.expm1(-self.rate(delta))


@dataclass(frozen=True)
class Draw:
    """One quote's chance in one tick: its distance from the mid in ticks (negative: through
    the mid), the probability, and the lots filled (0 when not hit)."""
    venue: int
    side: int
    price: int
    delta: float
    probability: float
    size: int


def fill_message(venue, side, price, size):
    """The FILL feed message for our order on ``side`` (unsequenced: seq 0)."""
    return {"kind": int(FeedKind.FILL), "venue": venue, "side": int(side), "flags": 0,
            "seq": 0, "price": price, "size": size}


class OwnQuotes:
    """Our resting quotes as the order stream leaves them: ``{(venue, side, slot): [price,
    lots left]}``. A fill shrinks a quote; one filled whole rests no more until the engine
    places it again."""

    def __init__(self):
        self.resting = {}

    def apply(self, orders):
        """Follow ``orders`` in order; return the first one that left us crossed on its
        venue (our highest resting bid at or above our lowest resting ask), or None."""
        first = None
        for o in orders:
            kind, key = int(o["kind"]), (int(o["venue"]), int(o["side"]), int(o["slot"]))
            if kind in (OrderKind.NEW, OrderKind.REPLACE):
                self.resting[key] = [int(o["price"]), int(o["size"])]
                if first is None and self.crossed(key[0]):
                    first = o
            elif kind == OrderKind.CANCEL:
                self.resting.pop(key, None)
            elif kind == OrderKind.CANCEL_ALL:
                self.resting.clear()
        return first

    def crossed(self, venue):
        """Whether our highest resting bid on ``venue`` is at or above our lowest ask there."""
        bids = [p for (v, s, _), (p, _) in self.resting.items() if v == venue and s == Side.BID]
        asks = [p for (v, s, _), (p, _) in self.resting.items() if v == venue and s == Side.ASK]
        return bool(bids and asks and max(bids) >= min(asks))

    def draw(self, model, rng, mid2):
        """One tick of fills: a :class:`Draw` per resting quote on a venue with a mid
        (``mid2[venue]`` = twice the mid in ticks, None when unknown), in key order."""
        draws = []
        for key in sorted(self.resting):
            venue, side, _ = key
            if mid2.get(venue) is None:
                continue
            price, left = self.resting[key]
            delta = (mid2[venue] - 2 * price if side == Side.BID
                     else 2 * price - mid2[venue]) / 2
            p = model.probability(delta)
            size = min(model.clip, left) if rng.random() < p else 0
            if size == left:
                del self.resting[key]
            elif size:
                self.resting[key][1] = left - size
            draws.append(Draw(venue, side, price, delta, p, size))
        return draws


@dataclass
class Account:
    """Inventory per venue (lots, long > 0) and cash (ticks x lots) from our fills."""
    venues: int
    q: list = field(default_factory=list)
    cash: int = 0

    def __post_init__(self):
        self.q = [0] * self.venues

    def fill(self, venue, side, price, size):
        """Our bid filled: we bought ``size`` at ``price``; our ask: we sold."""
        sign = 1 if side == Side.BID else -1
        self.q[venue] += sign * size
        self.cash -= sign * price * size

    def pnl(self, mid2):
        """Cash plus inventory marked at each venue's mid: ticks x lots (may be a half)."""
        return self.cash + sum(q * mid2[v] for v, q in enumerate(self.q) if q) / 2


def fill_rng(seed):
    """The fill draws' own random stream for scenario seed ``seed`` (apart from the market's)."""
    return random.Random(f"fills:{seed}")
