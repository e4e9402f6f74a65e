"""Reference model of one side's price ladder (``hw/ladder.py``), cycle-exact in its answers.

The ladder holds every level whose price lies in a window of ``window`` ticks starting at the
side's ``base`` (asks: ``base .. base + window - 1``; bids: ``base`` down to
``base - window + 1``). Levels outside are refused, counted in ``out_of_window`` and remembered
in ``lost_better`` / ``lost_worse`` (a SET there), so a ``none`` answer is only conclusive while
``lost_worse`` is clear. ``next`` answers the best level strictly worse than a price (or at or
worse, ``inclusive``); a price better than the window asks for the window's best level.

Hazard rule (the hardware's): a query accepted in a cycle sees every update accepted in an
*earlier* cycle and none from the same or a later one. :meth:`LadderModel.cycle` applies it.
"""

from bisect import bisect_left, insort

from ..hw.layouts import Side

__all__ = ["LadderModel", "SET", "DELETE", "CLEAR", "REBASE", "CENTRE", "check_window"]

SET, DELETE, CLEAR, REBASE = range(4)   # the values of ``hw.ladder.LadderOp``
CENTRE = 4   # a SET with the hardware's ``centre`` bit: empty, centre the window, set
COUNTER_WRAP = (1 << 32) - 1


def check_window(window):
    """Validate and return ``window``: a power of two >= 64 (one bitmap word)."""
    if not (isinstance(window, int) and not isinstance(window, bool) and window >= 64
            and window & (window - 1) == 0):
        raise ValueError(f"window must be a power of two >= 64, not {window!r}")
    return window


class LadderModel:
    """One side: ``{key: size}`` over the window, keys ascending = best first (bids inverted)."""

    def __init__(self, side, window=4096, price_width=32):
        if side not in (Side.BID, Side.ASK):
            raise ValueError(f"side must be Side.BID or Side.ASK, not {side!r}")
        self.side, self.window = Side(side), check_window(window)
        self._mask = (1 << price_width) - 1 if self.side == Side.BID else 0
        self.base_key = 0               # the hardware's reset value
        self.out_of_window = 0          # SETs and DELETEs refused, modulo 2^32
        self.clear()

    def clear(self):
        self._keys, self._sizes = [], {}
        self.lost_better = self.lost_worse = False

    def key(self, price):
        return price ^ self._mask

    @property
    def base(self):
        """The price of the window's best slot."""
        return self.base_key ^ self._mask

    def rebase(self, price):
        """Empty the ladder and move the window's best slot to ``price``."""
        self.clear()
        self.base_key = self.key(price)

    def apply(self, op, price, size=0):
        """One update (``SET``, ``DELETE``, ``CLEAR``, ``REBASE``, ``CENTRE``); True if it was
        refused."""
        if op == CENTRE:   # slot window / 2, or the key itself when that is smaller
            self.rebase((self.key(price) - min(self.key(price), self.window // 2)) ^ self._mask)
            op = SET
        if op == CLEAR:
            self.clear()
            return False
        if op == REBASE:
            self.rebase(price)
            return False
        key = self.key(price)
        offset = key - self.base_key
        if not 0 <= offset < self.window:
            self.out_of_window = (self.out_of_window + 1) & COUNTER_WRAP
            if op == SET:
                self.lost_better |= offset < 0
                self.lost_worse |= offset >= 0
            return True
        if op == SET:
            if key not in self._sizes:
                insort(self._keys, key)
            self._sizes[key] = size
        elif key in self._sizes:
            del self._sizes[key]
            self._keys.remove(key)
        return False

    def next(self, price, inclusive=False):
        """``(price, size)`` of the best level worse than ``price`` (or equal, ``inclusive``)
        within the window, or ``None``."""
        start = self.key(price) + (not inclusive)
        i = bisect_left(self._keys, start)   # every held key is in the window
        if i == len(self._keys):
            return None
        key = self._keys[i]
        return key ^ self._mask, self._sizes[key]

    def levels(self):
        """Every held level, best first, as ``(price, size)``."""
        return [(k ^ self._mask, self._sizes[k]) for k in self._keys]

    def cycle(self, update=None, query=None):
        """One clock cycle: ``query`` ``(price, inclusive)`` is answered *before* ``update``
        ``(op, price, size)`` is applied. Returns the answer (``None`` if none, ``False`` when
        no query)."""
        answer = False if query is None else self.next(*query)
        if update is not None:
            self.apply(*update)
        return answer
