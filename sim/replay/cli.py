"""The ``obcore replay`` subcommand: recorded market data through an engine into a CSV."""

import csv
import os
import sys
import time
from pathlib import Path

from ..engine import ENGINES, open_engine
from .base import Stats, with_ticks
from .binance import read_binance
from .bybit import read_bybit
from .databento import read_databento
from .lobster import read_lobster
from .native import MAX_VENUES, read_native
from .runner import SIGNALS, counters, replay
from .tardis import read_tardis

__all__ = ["add_parser", "run", "FORMATS", "COLUMNS", "PROGRESS_S", "WINDOWS", "idle_cycles"]

FORMATS = {"native": read_native, "tardis": read_tardis, "binance": read_binance,
           "lobster": read_lobster, "bybit": read_bybit, "databento": read_databento}
# The first seven never change (issue 3); later columns are only ever appended.
COLUMNS = ("index", "venue", "exch_seq", "best_bid", "best_bid_qty", "best_ask",
           "best_ask_qty", "bid_depth", "ask_depth", "exact", "synced", *SIGNALS)
PROGRESS_S = 2.0     # seconds between progress lines on stderr
# Price-ladder window (ticks) per format by default: the deep books. Binance snapshots carry
# 1,000 levels a side and diffs delete dozens of the best at once, more than the array's
# slack; 8192 ticks hold the top 16 of both usdm captures (docs/ladder.md). A CME MBO book
# holds every resting order's price (~900 bid levels in the ES captures): with the plain
# arrays 43,945 of their 47,024 rows read not exact, with 8192 ticks none. The others replay
# through the plain arrays unless --window says otherwise.
WINDOWS = {"binance": 8192, "databento": 8192}


def idle_cycles(levels):
    """Idle cycles after each update for a ladder build: enough to refill the top ``levels``
    from an empty array (a level per ``REFILL_CYCLES``, plus one answer dropped as stale).
    Real updates are ~10^7 cycles apart; fewer idle cycles keep the model engine's replay
    (one Python step per cycle) affordable."""
    from ...hw.deep import REFILL_CYCLES
    return REFILL_CYCLES * (levels + 1)


def add_parser(sub):
    p = sub.add_parser(
        "replay", help="feed recorded market data through the engine and write a CSV",
        description="Replay recorded market data through the engine: one CSV row per input "
                    "update (truth-only records such as Binance bookTicker get none), prices "
                    "in integer ticks and sizes in integer lots, 0 for an empty side. After "
                    "the book columns come the venue's signals from its telemetry record, raw "
                    "fixed-point values as docs/feed.md gives their formats (spread ... "
                    "xv_status).")
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="input files; several continue one capture (e.g. consecutive days)")
    p.add_argument("--format", required=True, choices=list(FORMATS), help="input format")
    p.add_argument("--tick", help="price tick in the file's price units (default per format: "
                                  "binance spot 0.01 / usdm 0.1, bybit 0.0001, lobster 1, "
                                  "tardis by exchange, databento by symbol: ES 0.25)")
    p.add_argument("--lot", help="size lot in the file's size units (default per format: "
                                 "binance spot 0.000001 / usdm 0.001, bybit 1, lobster 1, "
                                 "databento 1)")
    p.add_argument("--instrument", metavar="ID|SYMBOL",
                   help="databento: the instrument to follow, by id or raw symbol (e.g. "
                        "ESM4; default: the first MBO record's; others are counted as "
                        "ignored)")
    p.add_argument("--venue", type=int, help="venue index of the messages (default 0; native "
                                             "files carry their own)")
    p.add_argument("--venues", type=int, default=2,
                   help="venues the engine is built with (default 2, the standard build)")
    p.add_argument("--levels", type=int, default=16, help="book levels per side (default 16)")
    p.add_argument("--capacity", type=int,
                   help="levels kept per side (default 2 x levels)")
    p.add_argument("--window", type=int, metavar="TICKS",
                   help="price ladder behind every book side, TICKS wide (a power of two >= "
                        "64; 0: the plain register arrays); default 8192 for binance and "
                        "databento, 0 for the other formats (docs/ladder.md)")
    p.add_argument("--idle", type=int, metavar="CYCLES",
                   help="the most cycles without a message after each update, on top of the "
                        "engine's drain; a pause ends once no book refills and no TICK moves "
                        "sigma any more (default with a window: 4 x (levels + 1), time to "
                        "refill the top levels; 0 without)")
    p.add_argument("--engine", choices=list(ENGINES), default="verilator",
                   help="verilator: the Verilated gateware (default; built once per "
                        "configuration); model: the Python reference model, cycle for cycle "
                        "the same and about 40x slower (see sim/engine.py)")
    p.add_argument("--tick-ns", type=int, default=0, metavar="NS",
                   help="also feed one TICK per NS nanoseconds of input time (default: off)")
    p.add_argument("--out", required=True, metavar="OUT.csv", help="CSV file to write")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(run=run)


def _warn(text):
    print(f"obcore replay: warning: {text}", file=sys.stderr)


def run(args):
    native = args.format == "native"
    venue = args.venue if native else args.venue or 0     # native records carry their venue
    venues = args.venues
    if not 1 <= venues <= MAX_VENUES:
        raise ValueError(f"--venues must be 1..{MAX_VENUES}, not {venues}")
    if venue is not None and not 0 <= venue < venues:
        raise ValueError(f"--venue must be 0..{venues - 1} (the engine has --venues {venues}), "
                         f"not {venue}")
    if args.instrument is not None and args.format != "databento":
        raise ValueError(f"--instrument selects a databento instrument; the {args.format} "
                         f"format has one instrument per file")
    for name in args.files:
        if not Path(name).is_file():
            raise FileNotFoundError(f"no such file: {name}")
    window = WINDOWS.get(args.format, 0) if args.window is None else args.window
    idle = (idle_cycles(args.levels) if window else 0) if args.idle is None else args.idle
    if idle < 0:
        raise ValueError(f"--idle must be >= 0, not {idle}")
    engine = open_engine(args.engine, venues, args.levels, args.capacity, window=window or None)
    try:
        stats = Stats(warn=_warn)
        chosen = {} if args.instrument is None else {"instrument": args.instrument}
        updates = FORMATS[args.format](args.files, tick=args.tick, lot=args.lot, venue=venue,
                                       stats=stats, **chosen)
        if args.tick_ns:
            updates = with_ticks(updates, args.tick_ns)
        out = Path(args.out)
        part = out.with_name(out.name + ".part")    # no half-written CSV is left under OUT
        try:
            with part.open("w", newline="") as fh:
                totals = _write(csv.writer(fh), replay(updates, engine, signals=True,
                                                       idle=idle), args.quiet)
            os.replace(part, out)
        finally:
            part.unlink(missing_ok=True)
        _summary(out, totals, stats, counters(engine, venues))
    finally:
        engine.close()
    return 0


def _write(writer, results, quiet):
    """Write the header and a row per non-reference update; returns the run's totals."""
    writer.writerow(COLUMNS)
    t = {"updates": 0, "rows": 0, "messages": 0, "not_exact": 0, "not_synced": 0,
         "start": time.monotonic()}
    shown = t["start"]
    for update, o, values in results:
        t["updates"] += 1
        t["messages"] += len(update.messages)
        if not update.reference:
            writer.writerow((t["rows"], update.venue, update.exch_seq, o["best_bid"],
                             o["best_bid_qty"], o["best_ask"], o["best_ask_qty"],
                             o["bid_depth"], o["ask_depth"], int(o["exact"]), int(o["synced"]),
                             *values))
            t["rows"] += 1
            t["not_exact"] += not o["exact"]
            t["not_synced"] += not o["synced"]
        if not quiet and t["updates"] % 1024 == 0 and time.monotonic() - shown >= PROGRESS_S:
            shown = time.monotonic()
            rate = t["updates"] / (shown - t["start"])
            print(f"obcore replay: {t['updates']} updates, {t['messages']} messages, "
                  f"{rate:,.0f} updates/s", file=sys.stderr)
    t["seconds"] = time.monotonic() - t["start"]
    return t


def _summary(out, t, stats, c):
    print(f"{out}: {t['rows']} rows ({t['updates'] - t['rows']} reference-only records had "
          f"none), {t['messages']} messages in {t['seconds']:.1f} s")
    print(f"gaps: {len(stats.gaps)} in the input, {c['gap']} counted by the engine; "
          f"updates not applied while unsynced: {stats.unsynced}; records ignored: "
          f"{stats.ignored}")
    print(f"missing deletes {c['missing']}, crossed/locked {c['crossed']}, capacity events "
          f"{c['capacity']}; rows not exact {t['not_exact']}, rows not synced "
          f"{t['not_synced']}")
    if "window" in c:
        print(f"price ladders: {c['window']} level updates outside the window (counted, the "
              f"side reads not exact once it needs them; resync from a snapshot)")
    if stats.unsynced:
        _warn(f"{stats.unsynced} book updates were not applied: no snapshot to sync from")
