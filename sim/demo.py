"""The main job: run a scenario through the engine, summarise it and plot it."""

import argparse
import functools
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..control import params
from ..control.registers import Registers
from ..hw.guard import REASONS, STATE
from ..hw.layouts import FEED_DTYPE, FeedKind, ObsStatus, OrderKind, Side, feed_array
from ..hw.registers import REGISTERS
from .demoplot import plot
from .engine import ENGINES, open_engine
from .fills import Account, FillModel, OwnQuotes, fill_message, fill_rng
from .scenarios import SCENARIOS, generate

PARAMS = Path(__file__).with_name("params") / "demo.toml"
COOLDOWN = 600    # cycles clear before the demo re-arms by itself: about 17 ticks

__all__ = ["add_parser", "run", "phase_table", "simulate", "Run", "drive", "reasons",
           "trigger_cycle", "tick_chunks", "COOLDOWN"]


def _valid(obs):
    return (obs["status"] & ObsStatus.VALID) != 0


# The reasons whose condition the observation record shows (hw/guard.py's venue conditions):
# name -> (the venue's threshold register or None, the test on observations and threshold).
BOOK_CONDITIONS = {
    "crossed": (None, lambda o, _: _valid(o) & (o["best_bid"] >= o["best_ask"])),
    "spread": ("spread_max", lambda o, t: _valid(o) & (
        o["best_ask"].astype(np.int64) > o["best_bid"].astype(np.int64) + t)),
    "depth_bid": ("depth_min", lambda o, t: o["bid_depth"] < t),
    "depth_ask": ("depth_min", lambda o, t: o["ask_depth"] < t),
    "depth_both": ("depth_min", lambda o, t: (o["bid_depth"] < t) & (o["ask_depth"] < t)),
}


def phase_table(phases, obs):
    """Per-phase statistics from observations: ``[(phase, dict)]`` in scenario order.

    ``messages``; over updates with both sides present: mean and max spread (ticks), min and
    mean thinner-side depth over the top N (lots); ``one_sided`` updates; ``not_exact``.
    """
    applied = (obs["status"] & ObsStatus.APPLIED) != 0
    valid = applied & ((obs["status"] & ObsStatus.VALID) != 0)
    spread = obs["best_ask"].astype(np.int64) - obs["best_bid"].astype(np.int64)
    depth = np.minimum(obs["bid_depth"], obs["ask_depth"]).astype(np.int64)
    rows = []
    for name in dict.fromkeys(phases):
        at = phases == name
        v = at & valid
        rows.append((name, {
            "messages": int(at.sum()),
            "spread_mean": float(spread[v].mean()) if v.any() else 0.0,
            "spread_max": int(spread[v].max()) if v.any() else 0,
            "depth_min": int(depth[v].min()) if v.any() else 0,
            "depth_mean": float(depth[v].mean()) if v.any() else 0.0,
            "one_sided": int((at & applied & ~valid).sum()),
            "not_exact": int((at & applied & ((obs["status"] & ObsStatus.EXACT) == 0)).sum()),
        }))
    return rows


def reasons(bits):
    """Names of the guard's reason bits set in ``bits``."""
    return [r.name for i, r in enumerate(REASONS) if bits >> i & 1]


def trigger_cycle(obs, reason, regs, pull):
    """Acceptance cycle of the feed message that raised ``reason`` for the pull at cycle
    ``pull``: on the venue whose condition began first, the first of the applied messages in
    a row, up to the pull, whose observations meet it. None if the observations do not show
    ``reason`` (a signal, a deadline, a register) or the last one before the pull does not
    meet it."""
    if reason not in BOOK_CONDITIONS:
        return None
    register, test = BOOK_CONDITIONS[reason]
    seen = obs[((obs["status"] & ObsStatus.APPLIED) != 0) & (obs["cycle"] < pull)]
    onsets = []
    for venue in np.unique(seen["venue"]):
        mine = seen[seen["venue"] == venue]
        holds = test(mine, regs.get_raw(register, int(venue)) if register else None)
        if holds[-1]:
            clear = np.nonzero(~holds)[0]
            onsets.append(int(mine["cycle"][clear[-1] + 1 if len(clear) else 0]))
    return min(onsets, default=None)


@dataclass
class Run:
    """What :func:`simulate` saw. Per scenario message (fills excluded): ``obs``,
    ``pulled`` (quotes were pulled), ``inventory`` (net lots) and ``pnl`` (ticks x lots), the
    last two as the host's account stood after the message's tick. ``orders`` and
    ``cycles`` (the cycle each order left). ``pulls``: ``(phase, pull cycle, first reasons,
    CANCEL_ALL cycle, acceptance cycle of the message that raised the first reason, or None
    if the observations do not show it: see :func:`trigger_cycle`)``; ``rearms``: ``(phase,
    cycle)`` of each re-arm after a pull (the first quote's cycle, else the tick's end);
    ``fills``: ``(phase, index of the message it precedes, venue, side, price, lots)``;
    ``draws``: every :class:`~obcore.sim.fills.Draw`; ``checks``: ``(phase, engine position
    per venue, host inventory per venue)`` at each phase end."""
    obs: np.ndarray
    orders: np.ndarray
    cycles: np.ndarray
    pulled: np.ndarray
    inventory: np.ndarray
    pnl: np.ndarray
    account: Account
    pulls: list = field(default_factory=list)
    rearms: list = field(default_factory=list)
    fills: list = field(default_factory=list)
    draws: list = field(default_factory=list)
    checks: list = field(default_factory=list)


def tick_chunks(msgs):
    """``(start, stop)`` message ranges: the opening snapshots (up to the last SNAPSHOT_END
    before the first TICK), then one time tick each (ending with its TICK)."""
    ticks = np.nonzero(msgs["kind"] == FeedKind.TICK)[0]
    ends = np.nonzero(msgs["kind"][:ticks[0]] == FeedKind.SNAPSHOT_END)[0]
    bounds = [0, int(ends[-1]) + 1, *(int(t) + 1 for t in ticks[ticks > ends[-1]])]
    if bounds[-1] < len(msgs):
        bounds.append(len(msgs))
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def simulate(engine, msgs, phases, values, fills=None, rng=None, log=print):
    """Run a scenario through ``engine`` closed loop, one time tick per batch.

    Loads ``values``, arms once the opening snapshots are in (retrying each tick while
    refused), then feeds tick after tick. With a :class:`~obcore.sim.fills.FillModel`
    ``fills`` (and its ``rng``), our resting quotes are hit at each tick's end and the fills
    go to the engine as FILL messages at the start of the next batch. Returns a
    :class:`Run`. Each batch ends with RUN_DRAIN idle cycles and a few register reads, so
    a tick lasts about its message count + RUN_DRAIN + 4 cycles.
    """
    regs = Registers(engine)
    params.apply(regs, values)
    arm, refused = regs.regmap["arm"].addr, 1 << STATE["refused"].offset
    venues = regs.regmap["position"].count
    quotes, account = OwnQuotes(), Account(venues)
    chunks = tick_chunks(msgs)
    (lo, hi), chunks = chunks[0], chunks[1:]
    obs, orders = engine.run(msgs[lo:hi])
    parts = [(obs, orders, engine.last_order_cycles)]
    inventory, pnl = np.zeros(len(msgs), np.int64), np.zeros(len(msgs))
    pulled = np.ones(len(msgs), bool)
    run = Run(None, None, None, pulled, inventory, pnl, account)
    mid2, pending, armed = {}, [], False
    count, was_pulled = 0, True
    for lo, hi in chunks:
        if not armed:
            regs.clear_flags("pull_reasons", (1 << len(REASONS)) - 1)
            engine.write(arm, 1)
            armed = not regs.get_raw("pull_state") & refused
            why = ", ".join(reasons(regs.get_raw("pull_reasons")))
            log(f"armed at message {lo} ({phases[lo]})" if armed else
                f"arm refused at message {lo}: {why}; retrying next tick")
            count, was_pulled = regs.get_raw("pull_count"), not armed
        batch = np.concatenate([feed_array(pending), msgs[lo:hi]]) if pending else msgs[lo:hi]
        obs, orders = engine.run(batch)
        cycles, end = engine.last_order_cycles, engine.cycle
        obs = obs[len(pending):]
        pending = []
        parts.append((obs, orders, cycles))
        quotes.apply(orders)
        state, now = regs.get_raw("pull_state"), regs.get_raw("pull_count")
        quoting = cycles[np.isin(orders["kind"], (OrderKind.NEW, OrderKind.REPLACE))]
        if was_pulled and (now != count or not state & 1):
            # No quote in the batch: the re-arm came after its last cycle, during the
            # register reads, and its first orders come out with the next batch.
            back = int(quoting[0]) if len(quoting) else end
            run.rearms.append((phases[lo], back))
            pulled[lo:hi] = obs["cycle"] < back
        else:
            pulled[lo:hi] = was_pulled
        if now != count:
            at = regs.get_raw("pull_cycle")
            cancel = cycles[(orders["kind"] == OrderKind.CANCEL_ALL) & (cycles >= at)]
            why = reasons(regs.get_raw("pull_first"))
            seen = np.concatenate([p[0] for p in parts])
            cause = next((c for r in why if (c := trigger_cycle(seen, r, regs, at)) is not None),
                         None)
            run.pulls.append((phases[lo], at, why, int(cancel[0]) if len(cancel) else None,
                              cause))
            pulled[lo:hi] |= obs["cycle"] >= at
        count, was_pulled = now, bool(state & 1)
        for o in obs[(obs["status"] & ObsStatus.VALID) != 0]:
            mid2[int(o["venue"])] = int(o["best_bid"]) + int(o["best_ask"])
        phase_end = hi == len(msgs) or phases[hi] != phases[lo]
        if phase_end:
            run.checks.append((phases[lo], [regs.get("position", v) for v in range(venues)],
                               list(account.q)))
        if fills is not None and armed:
            for d in quotes.draw(fills, rng, mid2):
                run.draws.append(d)
                if d.size:
                    account.fill(d.venue, d.side, d.price, d.size)
                    pending.append(fill_message(d.venue, d.side, d.price, d.size))
                    run.fills.append((phases[lo], hi, d.venue, d.side, d.price, d.size))
        inventory[lo:hi] = sum(account.q)
        pnl[lo:hi] = account.pnl(mid2)
        if phase_end:
            log(f"  ... {phases[lo]} done at message {hi}: "
                f"{'pulled' if was_pulled else 'quoting'}, {len(run.pulls)} pull(s), "
                f"{len(run.fills)} fill(s), q {account.q}")
    # Collect what the hold kept back, and leave the order stream ready as a run does.
    parts.append((*engine.run(np.zeros(0, FEED_DTYPE)), engine.last_order_cycles))
    run.obs = np.concatenate([p[0] for p in parts])
    run.orders = np.concatenate([p[1] for p in parts])
    run.cycles = np.concatenate([p[2] for p in parts])
    return run


def drive(engine, msgs, phases, values, log=print):
    """:func:`simulate` without fills: ``(obs, orders, order cycles, pulled, pulls)``."""
    run = simulate(engine, msgs, phases, values, log=log)
    return run.obs, run.orders, run.cycles, run.pulled, run.pulls


def add_parser(sub):
    p = sub.add_parser("demo", help="run a synthetic scenario through the engine and report")
    p.add_argument("--scenario", default="crisis", choices=sorted(SCENARIOS),
                   help="scenario to run (default: crisis, the 1011 liquidity withdrawal)")
    p.add_argument("--seed", type=int, default=1011, help="scenario and fill seed "
                   "(default: 1011)")
    p.add_argument("--engine", choices=ENGINES, default="verilator",
                   help="verilator: the gateware, compiled once (default); model: the Python "
                        "reference model")
    p.add_argument("--params", metavar="TOML",
                   help="parameter set to load before arming (default: the scenario's own "
                        "in sim/params/)")
    p.add_argument("--cooldown", type=_cycles, default=COOLDOWN, metavar="CYCLES",
                   help="re-arm automatically once every trigger stayed clear this long "
                        f"(default: {COOLDOWN}; a tick lasts about 45 cycles)")
    p.add_argument("--no-auto-arm", dest="auto_arm", action="store_false",
                   help="arm once only; quotes stay pulled after the first pull")
    p.add_argument("--fill-rate", type=float, default=FillModel.a, metavar="A",
                   help="A of lambda(delta) = A e^(-k delta): fills per tick at the mid "
                        f"(default: {FillModel.a}; k is the parameter set's k)")
    p.add_argument("--fill-clip", type=int, default=FillModel.clip, metavar="LOTS",
                   help=f"lots one fill takes at most (default: {FillModel.clip})")
    p.add_argument("--plot", default="demo.png", metavar="PNG",
                   help="where to write the plot (default: demo.png; '' for none)")
    p.set_defaults(run=run)


def _cycles(text):
    value = int(text)
    if not 0 <= value <= 0xFFFF_FFFF:
        raise argparse.ArgumentTypeError(f"cooldown must be 0..4294967295 cycles, not {text}")
    return value


def _table(phases, run, venue):
    """The per-phase table of one venue's messages, with its fills and the account (all
    venues) at each phase end."""
    print(f"{'phase':<10} {'msgs':>6} {'spread mean':>11} {'spread max':>10} "
          f"{'depth min':>9} {'depth mean':>10} {'pulled':>7} {'fills':>5} {'q end':>6} "
          f"{'P&L end':>9}")
    mine = run.obs["venue"] == venue
    for name, st in phase_table(phases[mine], run.obs[mine]):
        at = mine & (phases == name)
        fills = sum(f[0] == name and f[2] == venue for f in run.fills)
        print(f"{name:<10} {st['messages']:>6} {st['spread_mean']:>11.1f} {st['spread_max']:>10}"
              f" {st['depth_min']:>9} {st['depth_mean']:>10.1f} {int(run.pulled[at].sum()):>7}"
              f" {fills:>5} {int(run.inventory[at][-1]):>6} {run.pnl[at][-1]:>9.1f}")


def _report(run, values):
    """When and why quotes were pulled and re-armed, and the account through the event."""
    for phase, at, why, cancel, cause in run.pulls:
        line = f"PULL in phase {phase} at cycle {at}: {', '.join(why)}"
        if cancel is not None:
            line += f"; CANCEL_ALL left at cycle {cancel}, {cancel - at} cycle(s) later"
            if cause is not None:
                line += (f", {cancel - cause} after the feed message that raised it "
                         f"(accepted at cycle {cause})")
        print(line)
    if not run.pulls:
        print("no pull: quotes stayed up through the whole scenario")
    for phase, cycle in run.rearms:
        print(f"RE-ARMED automatically in phase {phase}: quoting again at cycle {cycle}, "
              f"after every trigger stayed clear for {values.get('cooldown', '-')} cycles")
    if run.pulls and not run.rearms:
        print("not re-armed: quotes stayed pulled to the end")
    bought = sum(f[5] for f in run.fills if f[3] == Side.BID)
    print(f"own fills: {len(run.fills)} ({bought} lots bought, "
          f"{sum(f[5] for f in run.fills) - bought} sold); inventory {run.account.q} lots per "
          f"venue, |q| max {int(np.abs(run.inventory).max())}; P&L {run.pnl[-1]:.1f} ticks x "
          f"lots (min {run.pnl.min():.1f}, max {run.pnl.max():.1f})")
    agree = all(engine == host for _, engine, host in run.checks)
    print("engine position registers == host inventory at every phase end" if agree else
          "MISMATCH engine position vs host inventory: "
          + "; ".join(f"{p}: {e} vs {h}" for p, e, h in run.checks if e != h))
    return agree


def run(args):
    scenario = SCENARIOS[args.scenario]
    print(f"scenario {scenario.name} (seed {args.seed}): {scenario.doc}")
    tagged = list(generate(args.scenario, args.seed))
    phases = np.array([phase for phase, _ in tagged])
    msgs = feed_array([msg for _, msg in tagged])
    path = args.params or str(PARAMS.with_name(scenario.params))
    values = params.load(path)
    if args.auto_arm:
        values.update(auto_arm=1, cooldown=args.cooldown)
    k = float(values.get("k", REGISTERS["k"].reset))
    model = FillModel(args.fill_rate, k, args.fill_clip)
    print(f"opening the {args.engine} engine...", flush=True)
    engine = open_engine(args.engine)
    try:
        t0 = time.perf_counter()
        result = simulate(engine, msgs, phases, values, model, fill_rng(args.seed),
                          log=functools.partial(print, flush=True))
        dt = time.perf_counter() - t0
    finally:
        engine.close()
    print(f"engine: {args.engine}; {len(msgs)} messages + {len(result.fills)} fills in "
          f"{dt:.1f} s; parameters {path}; fills lambda(d) = {model.a} e^(-{model.k} d), "
          f"clip {model.clip} lots")
    for v in range(scenario.venues):
        if scenario.venues > 1:
            print(f"venue {v} ({'AB'[v]}):")
        _table(phases, result, v)
    kinds = {k.name: int((result.orders["kind"] == k).sum()) for k in OrderKind}
    print("orders: " + ", ".join(f"{n} {c}" for n, c in kinds.items()))
    agree = _report(result, values)
    if args.plot:
        title = (f"scenario {scenario.name}, seed {args.seed}, engine {args.engine}, "
                 f"fills A={model.a} k={model.k}")
        if plot(Path(args.plot), phases, result, title, scenario.venues):
            print(f"plot: {args.plot}")
        else:
            print("plot skipped: matplotlib is not installed (pip install -e '.[plot]')",
                  file=sys.stderr)
    return 0 if agree else 1
