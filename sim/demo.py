"""The main job: run a scenario through the engine, summarise it and plot it."""

import sys
import time
from pathlib import Path

import numpy as np

from ..control import params
from ..control.registers import Registers
from ..hw.guard import REASONS
from ..hw.layouts import FeedKind, ObsStatus, OrderKind, feed_array
from .engine import ENGINES, open_engine
from .scenarios import SCENARIOS, generate

PARAMS = Path(__file__).with_name("params") / "demo.toml"
ARM_RETRY = 20    # messages to wait between refused arm attempts

__all__ = ["add_parser", "run", "phase_table", "plot", "drive", "reasons"]


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


def _quotes(obs, orders, cycles):
    """Our resting bid and ask (slot 0, venue 0) at each observation; NaN when not quoted."""
    at = np.searchsorted(cycles, obs["cycle"].astype(np.uint64), side="right")
    resting = {0: np.nan, 1: np.nan}
    per_order = np.full((len(orders) + 1, 2), np.nan)
    for i, o in enumerate(orders):
        if o["kind"] in (OrderKind.NEW, OrderKind.REPLACE) and o["slot"] == 0:
            resting[int(o["side"])] = float(o["price"])
        elif o["kind"] == OrderKind.CANCEL and o["slot"] == 0:
            resting[int(o["side"])] = np.nan
        elif o["kind"] == OrderKind.CANCEL_ALL:
            resting = {0: np.nan, 1: np.nan}
        per_order[i + 1] = resting[0], resting[1]
    return per_order[at]


def plot(path, phases, obs, title, orders=None, cycles=None, pulled=None):
    """Mid, touch, own quotes and depth against message index, phases and pulls shaded."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    valid = (obs["status"] & ObsStatus.VALID) != 0
    x = np.nonzero(valid)[0]
    o = obs[valid]
    fig, (ax1, ax2) = plt.subplots(2, 1, sharex=True, figsize=(11, 6.5))
    ax1.plot(x, o["best_bid"], lw=0.8, label="best bid")
    ax1.plot(x, o["best_ask"], lw=0.8, label="best ask")
    if orders is not None and len(orders):
        quotes = _quotes(obs, orders, cycles)[valid]
        ax1.plot(x, quotes[:, 0], lw=1.4, color="C2", label="our bid")
        ax1.plot(x, quotes[:, 1], lw=1.4, color="C3", label="our ask")
    if pulled is not None:
        for ax in (ax1, ax2):
            ax.fill_between(np.arange(len(obs)), 0, 1, where=pulled, color="red", alpha=0.12,
                            transform=ax.get_xaxis_transform(), label="pulled")
    ax1.set_ylabel("price (ticks)")
    ax1.ticklabel_format(axis="y", style="plain", useOffset=False)
    ax1.legend(loc="upper right")
    ax1.set_title(title)
    ax2.plot(x, o["bid_depth"], lw=0.8, label="bid depth (top N)")
    ax2.plot(x, o["ask_depth"], lw=0.8, label="ask depth (top N)")
    ax2.set_ylabel("lots")
    ax2.set_xlabel("feed message")
    ax2.legend(loc="upper right")
    start = 0
    names = list(dict.fromkeys(phases))
    for i, name in enumerate(names):
        end = int(np.nonzero(phases == name)[0][-1]) + 1
        for ax in (ax1, ax2):
            ax.axvspan(start, end, color=f"C{i}", alpha=0.08)
        ax1.text((start + end) / 2, ax1.get_ylim()[1], name, ha="center", va="bottom",
                 fontsize=8)
        start = end
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def add_parser(sub):
    p = sub.add_parser("demo", help="run a synthetic scenario through the engine and report")
    p.add_argument("--scenario", default="crisis", choices=sorted(SCENARIOS),
                   help="scenario to run (default: crisis, the 1011 liquidity withdrawal)")
    p.add_argument("--seed", type=int, default=1011, help="scenario seed (default: 1011)")
    p.add_argument("--engine", choices=ENGINES, default="verilator",
                   help="verilator: the gateware, compiled once (default); model: the Python "
                        "reference model")
    p.add_argument("--params", default=str(PARAMS), metavar="TOML",
                   help="parameter set to load before arming (default: the demo's own)")
    p.add_argument("--plot", default="demo.png", metavar="PNG",
                   help="where to write the plot (default: demo.png; '' for none)")
    p.set_defaults(run=run)


def drive(engine, msgs, phases, values, log=print):
    """Run the scenario armed: load ``values``, arm after the snapshots (retrying while a
    trigger holds), then feed the rest. Returns ``(obs, orders, order cycles, pulled, pulls)``
    where ``pulled`` marks messages seen while quotes were pulled and ``pulls`` lists
    ``(phase, pull cycle, first reasons, CANCEL_ALL cycle, last message cycle before)``."""
    regs = Registers(engine)
    params.apply(regs, values)
    arm = regs.regmap["arm"].addr
    # Arm once every venue's opening snapshot is in: after the last one before the first TICK.
    first_tick = np.nonzero(msgs["kind"] == FeedKind.TICK)[0][0]
    end = int(np.nonzero(msgs["kind"][:first_tick] == FeedKind.SNAPSHOT_END)[0][-1]) + 1
    chunks = [engine.run(msgs[:end])]
    cycles = [engine.last_order_cycles]
    pulled = [np.ones(end, bool)]
    while True:
        regs.clear_flags("pull_reasons", (1 << len(REASONS)) - 1)
        engine.write(arm, 1)
        if not regs.get_raw("pull_state") & 1:
            log(f"armed at message {end} ({phases[end]})")
            break
        if end >= len(msgs):
            raise RuntimeError("the engine never accepted arm: "
                               f"{', '.join(reasons(regs.get_raw('pull_reasons')))}")
        log(f"arm refused at message {end}: "
            f"{', '.join(reasons(regs.get_raw('pull_reasons')))}; retrying")
        chunks.append(engine.run(msgs[end:end + ARM_RETRY]))
        cycles.append(engine.last_order_cycles)
        pulled.append(np.ones(len(msgs[end:end + ARM_RETRY]), bool))
        end += ARM_RETRY
    pulls = []
    for name in dict.fromkeys(phases[end:]):
        stop = end + int((phases[end:] == name).sum())
        count = regs.get_raw("pull_count")
        obs, orders = engine.run(msgs[end:stop])
        chunks.append((obs, orders))
        cycles.append(engine.last_order_cycles)
        pulled.append(obs["cycle"] >= regs.get_raw("pull_cycle")
                      if regs.get_raw("pull_count") != count or regs.get_raw("pull_state") & 1
                      else np.zeros(len(obs), bool))
        if regs.get_raw("pull_count") != count:
            at = regs.get_raw("pull_cycle")
            cancel = engine.last_order_cycles[orders["kind"] == OrderKind.CANCEL_ALL]
            before = obs["cycle"][obs["cycle"] < at]
            pulls.append((name, at, reasons(regs.get_raw("pull_first")),
                          int(cancel[0]) if len(cancel) else None,
                          int(before[-1]) if len(before) else None))
        end = stop
    obs = np.concatenate([c[0] for c in chunks])
    orders = np.concatenate([c[1] for c in chunks])
    return obs, orders, np.concatenate(cycles), np.concatenate(pulled), pulls


def run(args):
    scenario = SCENARIOS[args.scenario]
    print(f"scenario {scenario.name} (seed {args.seed}): {scenario.doc}")
    tagged = list(generate(args.scenario, args.seed))
    phases = np.array([phase for phase, _ in tagged])
    msgs = feed_array([msg for _, msg in tagged])
    values = params.load(args.params)
    engine = open_engine(args.engine)
    try:
        t0 = time.perf_counter()
        obs, orders, cycles, pulled, pulls = drive(engine, msgs, phases, values)
        dt = time.perf_counter() - t0
    finally:
        engine.close()
    print(f"engine: {args.engine}; {len(msgs)} messages in {dt * 1e3:.1f} ms; parameters "
          f"{args.params}")
    print(f"{'phase':<10} {'msgs':>6} {'spread mean':>11} {'spread max':>10} "
          f"{'depth min':>9} {'depth mean':>10} {'one-sided':>9} {'pulled':>7}")
    for name, st in phase_table(phases, obs):
        print(f"{name:<10} {st['messages']:>6} {st['spread_mean']:>11.1f} {st['spread_max']:>10}"
              f" {st['depth_min']:>9} {st['depth_mean']:>10.1f} {st['one_sided']:>9}"
              f" {int(pulled[phases == name].sum()):>7}")
    kinds = {k.name: int((orders["kind"] == k).sum()) for k in OrderKind}
    print("orders: " + ", ".join(f"{n} {c}" for n, c in kinds.items()))
    for phase, at, why, cancel, last in pulls:
        line = f"PULL in phase {phase} at cycle {at}: {', '.join(why)}"
        if cancel is not None:
            line += f"; CANCEL_ALL left at cycle {cancel}, {cancel - at} cycle(s) later"
            if last is not None:
                line += f", {cancel - last} after the last feed message before the trigger"
        print(line)
    if not pulls:
        print("no pull: quotes stayed up through the whole scenario")
    print("inventory: 0 lots throughout (no own fills in this scenario)")
    if args.plot:
        title = f"scenario {scenario.name}, seed {args.seed}, engine {args.engine}"
        if plot(Path(args.plot), phases, obs, title, orders, cycles, pulled):
            print(f"plot: {args.plot}")
        else:
            print("plot skipped: matplotlib is not installed (pip install -e '.[plot]')",
                  file=sys.stderr)
    return 0
