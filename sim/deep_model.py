"""Reference model of one deep book side (``hw/deep.py``): the array, the ladder, the refill.

Cycle-exact: :meth:`DeepSide.cycle` is one clock cycle of the hardware side with the command
of that cycle (or none), so the outputs after every cycle, including the transient shortness
while a refill is pending, are the hardware's. The rules (``docs/book.md``, *Deep books*):

* The array keeps ``capacity`` levels with the plain book's rule; its bound is the horizon
  ``h``: the cells hold exactly the true levels with a key below ``h``.
* Every SET/DELETE/CLEAR also updates the ladder; the first SET after reset or CLEAR centres
  its window on that price.
* Refill: while truncated, not full and not ``stuck``, ask ``next(h, inclusive)`` (answered
  ``QUERY_LATENCY`` cycles later, from the ladder before the asking cycle). The answer is
  dropped when a command since the asking cycle disturbed ``h`` (reached only the ladder,
  cleared, or dropped a level), or the side has a command or is full when it lands; else,
  if trusted, appended with ``h = key + 1`` (``none``: no ``h``); if not trusted, ``stuck``.
"""

from ..hw.layouts import Side
from .ladder_model import CENTRE, CLEAR, DELETE, SET, LadderModel
from .model import BookSide

__all__ = ["DeepSide", "QUERY_LATENCY"]

QUERY_LATENCY = 3   # ``hw.ladder.QUERY_LATENCY``: a query's answer lands 3 cycles later


class DeepSide(BookSide):
    """One side with a ladder of ``window`` ticks; keys are the hardware's (bids inverted)."""

    def __init__(self, side, capacity, window, price_width=32):
        self.ladder = LadderModel(side, window, price_width)
        self._mask = (1 << price_width) - 1 if Side(side) == Side.BID else 0
        self._infinite = 1 << price_width     # h past every key: not truncated
        self.placed = self.stuck = self.stale = False
        self.wait, self.answer = 0, None
        self.moved = False     # the latest cycle's refill changed the cells or the horizon
        self.fills = 0         # levels refilled from the ladder since construction
        super().__init__(side, capacity)

    def _key(self, price):
        return price ^ self._mask

    def _price(self, key):
        return key ^ self._mask

    @property
    def settled(self):
        """True when cycles without commands change nothing until the next command."""
        return self.wait == 0 and not self._wants()

    def _wants(self):
        return self.bound is not None and len(self._keys) < self.capacity and not self.stuck

    def _disturbs(self, op, price):
        """Whether ``op`` at ``price`` moves ``h`` or reaches only the ladder (beyond ``h``)."""
        if op == CLEAR:
            return True
        if op is None:
            return False
        key = self._key(price)
        if self.bound is not None and key >= self.bound:
            return True
        return (op == SET and len(self._keys) == self.capacity
                and key not in self._keys)    # an insert into a full array drops a level

    def cycle(self, op=None, price=0, size=0):
        """One clock cycle with this side's command: ``SET``, ``DELETE``, ``CLEAR`` (the
        ladder model's codes) or ``None``. Returns ``BookSide.apply``'s result."""
        ladder, fill, opened = self.ladder, None, False
        if self.wait == QUERY_LATENCY and not self.stale and op is None \
                and len(self._keys) < self.capacity:
            before = self.bound < ladder.base_key
            none = self.answer is None
            if (ladder.lost_better and before) or (none and ladder.lost_worse):
                self.stuck = True
            elif none:
                opened = True
            else:
                fill = self.answer
        issue = self.wait == 0 and self._wants()
        answer = ladder.next(self._price(self.bound), True) if issue else None
        disturb = self._disturbs(op, price)

        result = None   # the clock edge: the ladder, the array, the refill
        if op == CLEAR:
            ladder.apply(CLEAR, 0)
            self.clear()
            self.placed = self.stuck = False
        elif op is not None:
            ladder.apply(op if op == DELETE or self.placed else CENTRE, price, size)
            self.placed |= op == SET
            result = self.apply(price, size if op == SET else 0)
        if fill is not None:
            key = self._key(fill[0])
            self._keys.append(key)
            self._sizes.append(fill[1])
            self.bound = key + 1 if key + 1 < self._infinite else None
            self.fills += 1
        elif opened:
            self.bound = None
        self.moved = fill is not None or opened
        if issue:
            self.wait, self.stale, self.answer = 1, disturb, answer
        elif self.wait:
            self.wait, self.stale = (self.wait + 1) % (QUERY_LATENCY + 1), self.stale or disturb
        return result
