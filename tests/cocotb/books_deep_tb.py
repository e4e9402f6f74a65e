"""cocotb bench for hw/books.py with price ladders (``window``): every venue, every cycle.

With a ladder behind each side the books change in cycles without a message of their venue
(the refill), so this bench compares *every* venue's outputs after *every* cycle with
``BookModel(window=...)`` clocked the same way: the BBO group and the ladder status at +1, the
depths, counts and counters at +2 (``docs/book.md``). The words come from books_tb's
``RandomFeed`` (the same configuration variables, plus ``BOOKS_WINDOW``), in back-to-back
bursts and idle stretches long enough for refills to complete.
"""

import os
from collections import Counter, deque

import cocotb
from books_tb import BBO, CAPACITY, LEVELS, MESSAGES, STATUS, VENUES, RandomFeed, _show, pack
from cocotb.triggers import FallingEdge
from tb import TB

from obcore.hw.book import STATUS_LATENCY, counter_layout
from obcore.hw.deep import ladder_status_layout
from obcore.hw.ingress import COUNTER_WIDTH, PRICE_WIDTH, SIZE_WIDTH
from obcore.hw.layouts import decode_feed
from obcore.sim.model import BookModel

WINDOW = int(os.environ.get("BOOKS_WINDOW", "64"))
WRAP = (1 << COUNTER_WIDTH) - 1
LADDER_BITS = ladder_status_layout.size


def ladder_word(book):
    """``ladders[v]`` as the DUT packs it: the bid side's status, then the ask side's."""
    word = 0
    for i, unit in enumerate((book.bids, book.asks)):
        lad = unit.ladder
        fields = {"out_of_window_count": lad.out_of_window, "lost_better": lad.lost_better,
                  "lost_worse": lad.lost_worse, "stuck": unit.stuck,
                  "refilling": not unit.settled}
        for name, value in fields.items():
            word |= int(value) << (i * LADDER_BITS + ladder_status_layout[name].offset)
    return word


def snapshot(model):
    """Per venue: (BBO group + ladder status, status group) after the model's latest cycle."""
    out = []
    for book in model.books:
        o, bids, asks = book.outputs(), book.bids.top(LEVELS), book.asks.top(LEVELS)
        bbo = (o["best_bid"], o["best_bid_qty"], o["best_ask"], o["best_ask_qty"],
               pack([p for p, _ in bids], PRICE_WIDTH), pack([s for _, s in bids], SIZE_WIDTH),
               pack([p for p, _ in asks], PRICE_WIDTH), pack([s for _, s in asks], SIZE_WIDTH),
               int(o["valid"]), int(o["exact"]), int(o["synced"]), ladder_word(book))
        status = (o["bid_depth"], o["ask_depth"], o["bid_count"], o["ask_count"],
                  pack([getattr(book.counters, f) & WRAP for f in counter_layout.members],
                       COUNTER_WIDTH))
        out.append((bbo, status))
    return out


class DeepBench(TB):
    def __init__(self, dut):
        super().__init__(dut)
        self.model = BookModel(VENUES, LEVELS, CAPACITY, WINDOW)
        self.ports = [{name: getattr(dut, f"venue__{v}__{name}") for name in (*BBO, *STATUS)}
                      for v in range(VENUES)]
        for v, ports in enumerate(self.ports):
            ports["ladders"] = getattr(dut, f"ladders__{v}")
        self.due = deque([snapshot(self.model)] * 2, maxlen=2)
        self.stats, self.sent = Counter(), 0
        dut.feed__valid.value = 0

    def _compare(self, names, ports, want, what):
        got = tuple(int(ports[n].value) for n in names)
        if got != want:
            diff = {n: (_show(n, g), _show(n, w))
                    for n, g, w in zip(names, got, want, strict=True) if g != w}
            raise AssertionError(f"{what}: (got, want) {diff}")

    def check(self):
        where = f"after {self.sent} words (COCOTB_RANDOM_SEED={os.environ['COCOTB_RANDOM_SEED']})"
        for v, ports in enumerate(self.ports):
            self._compare((*BBO, "ladders"), ports, self.due[-1][v][0], f"{where}: venue {v} +1")
            self._compare(STATUS, ports, self.due[-2][v][1], f"{where}: venue {v} +2")

    async def cycle(self, word):
        """Check what is due, then present ``word`` (None: idle) for one cycle."""
        self.check()
        self.dut.feed__valid.value = word is not None
        if word is None:
            self.model.idle()
        else:
            self.dut.feed__payload.value = word
            self.model.step(decode_feed(word))
            self.sent += 1
        self.due.append(snapshot(self.model))
        s = self.stats
        s["cycles"] += 1
        s["refills"] += len(self.model.moved)
        for book in self.model.books:
            for unit in (book.bids, book.asks):
                s["short"] += unit.short(LEVELS)
                s["stuck"] += unit.stuck
                s["lost"] += unit.ladder.lost_better or unit.ladder.lost_worse
        await FallingEdge(self.clk)


@cocotb.test()
async def random_stream(dut):
    """MESSAGES random words, bursts and idle runs (up to 4 x capacity cycles: full refills)."""
    bench = DeepBench(dut)
    rng, feed = bench.rng, RandomFeed(bench.rng, bench.model)
    await bench.reset()
    await FallingEdge(bench.clk)
    while bench.sent < MESSAGES:
        if rng.random() < 0.02:
            for _ in range(rng.randrange(4 * CAPACITY + 8)):
                await bench.cycle(None)
        await bench.cycle(feed.next())
    for _ in range(STATUS_LATENCY):
        await bench.cycle(None)
    s = bench.stats
    dut._log.info(f"{bench.sent} words over {s['cycles']} cycles, every venue checked each "
                  f"cycle: {dict(s)}")
    rare = [name for name in ("refills", "short", "stuck", "lost") if s[name] < MESSAGES // 500]
    assert not rare, f"the stream hardly exercised {rare}"
