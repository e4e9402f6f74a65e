"""The main job: run the crisis scenario through the engine and summarise what happened."""

import time
from collections import defaultdict

from .model import BookModel
from .scenarios import SCENARIOS, generate

__all__ = ["add_parser", "run", "summarise"]


def summarise(name, seed, levels=16):
    """Run scenario ``name`` through the reference book; per-phase statistics as a dict.

    For each phase: messages, mean and max spread (ticks), min and mean touch-to-N depth on
    each side (lots), and updates where the book was one-sided, crossed or short of levels.
    """
    model = BookModel(venues=1, levels=levels)
    stats = defaultdict(lambda: defaultdict(float))
    order = []
    for phase, msg in generate(name, seed):
        if phase not in stats:
            order.append(phase)
        st = stats[phase]
        st["messages"] += 1
        if model.step(msg) is None:
            continue
        out = model.outputs(0)
        st["updates"] += 1
        if not out["valid"]:
            st["one_sided"] += 1
            continue
        spread = out["best_ask"] - out["best_bid"]
        depth = min(out["bid_depth"], out["ask_depth"])
        st["spread_sum"] += spread
        st["spread_max"] = max(st["spread_max"], spread)
        st["depth_sum"] += depth
        st["depth_min"] = min(st.get("depth_min", depth), depth)
        st["valid"] += 1
    c = model.books[0].counters
    return {"order": order, "phases": stats, "crossed": c.crossed, "gaps": c.gaps,
            "malformed": model.malformed, "capacity": c.capacity}


def add_parser(sub):
    p = sub.add_parser("demo", help="run a synthetic scenario and print what the engine saw")
    p.add_argument("--scenario", default="crisis", choices=sorted(SCENARIOS),
                   help="scenario to run (default: crisis, the 1011 liquidity withdrawal)")
    p.add_argument("--seed", type=int, default=1011, help="scenario seed (default: 1011)")
    p.set_defaults(run=run)


def run(args):
    scenario = SCENARIOS[args.scenario]
    print(f"scenario {scenario.name} (seed {args.seed}): {scenario.doc}")
    print("engine: Python reference model (the Verilated engine replaces it when built)")
    t0 = time.perf_counter()
    result = summarise(args.scenario, args.seed)
    dt = time.perf_counter() - t0
    print(f"{'phase':<10} {'msgs':>6} {'spread mean':>11} {'spread max':>10} "
          f"{'depth min':>9} {'depth mean':>10} {'one-sided':>9}")
    for phase in result["order"]:
        st = result["phases"][phase]
        n = st["valid"] or 1
        print(f"{phase:<10} {int(st['messages']):>6} {st['spread_sum'] / n:>11.1f} "
              f"{int(st['spread_max']):>10} {int(st.get('depth_min', 0)):>9} "
              f"{st['depth_sum'] / n:>10.1f} {int(st['one_sided']):>9}")
    total = sum(st["messages"] for st in result["phases"].values())
    print(f"{int(total)} messages in {dt:.2f} s; crossed {result['crossed']}, gaps "
          f"{result['gaps']}, malformed {result['malformed']}, capacity {result['capacity']}")
    return 0
