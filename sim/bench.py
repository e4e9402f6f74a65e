"""Benchmarks: latency in cycles, throughput, simulation speed and control-plane round trips."""

import json
import os
import platform
import random
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from ..control import params
from ..control.registers import Registers
from ..hw.guard import REASON
from ..hw.layouts import FEED_DTYPE, FeedKind, OrderKind, Side, feed_array
from . import control_bench, latency, speed_bench
from .demo import PARAMS, drive, tick_chunks, trigger_cycle
from .engine import open_engine
from .scenarios import generate

__all__ = ["SECTIONS", "add_parser", "run", "measure", "write", "arm_calm", "filler",
           "order_rate"]


def arm_calm(regs, run, seed, before_arm=None):
    """Load the demo parameters, replay a calm book with ``run(msgs)`` and arm (after
    ``before_arm()``, if given); returns the next feed sequence number.

    ``regs`` and ``run`` reach a freshly reset engine, directly or through a server.
    """
    params.apply(regs, params.load(PARAMS))
    msgs = feed_array([m for _, m in generate("calm", seed)][:400])
    run(msgs)
    seq = int(msgs["seq"].max()) + 1
    for _ in range(50):
        regs.clear_flags("pull_reasons", (1 << 23) - 1)
        if before_arm is not None:
            before_arm()
        regs.set("arm", 1)
        if not regs.get_raw("pull_state") & 1:
            return seq
        run(filler(seq, 1))
        seq += 1
    raise RuntimeError("the engine would not arm on a calm book: "
                       f"{regs.get_raw('pull_reasons'):#x}")


def filler(seq, count):
    """``count`` trades far from the book, from ``seq`` on: they take cycles, move nothing."""
    return feed_array([_msg(FeedKind.TRADE, Side.BID, 1_000_000, 1, seq + i)
                       for i in range(count)])


def _armed(engine, seed):
    """Reset, load the demo parameters, replay a calm book and arm; returns (regs, next seq)."""
    engine.reset()
    regs = Registers(engine)
    return regs, arm_calm(regs, engine.run, seed)


def _msg(kind, side, price, size, seq):
    return {"kind": int(kind), "venue": 0, "side": int(side), "flags": 0, "seq": seq,
            "price": price, "size": size}


def _cancel_latency(engine, regs, messages, reason):
    """Cycles from accepting the message among ``messages`` that raised ``reason`` (see
    :func:`~obcore.sim.demo.trigger_cycle`) to the CANCEL_ALL leaving."""
    obs, orders = engine.run(feed_array(messages))
    cancel = engine.last_order_cycles[orders["kind"] == OrderKind.CANCEL_ALL]
    if not len(cancel):
        raise RuntimeError(f"the {reason} trigger did not pull the quotes")
    cause = trigger_cycle(obs, reason, regs, regs.get_raw("pull_cycle"))
    if cause is None:
        raise RuntimeError(f"no message before the pull meets the {reason} condition")
    return int(cancel[0]) - cause


def _pull_latencies(engine, rng, trials):
    """Crossed-book and depth-collapse triggers on random calm books: cycles to cancel."""
    out = {"crossed book": [], "depth collapse": []}
    for _ in range(trials):
        regs, seq = _armed(engine, rng.randrange(1 << 30))
        ask = regs.get_raw("best_ask", 0)
        out["crossed book"].append(_cancel_latency(
            engine, regs, [_msg(FeedKind.LEVEL_SET, Side.BID, ask + 1, 5, seq)], "crossed"))
        regs, seq = _armed(engine, rng.randrange(1 << 30))
        bid = regs.get_raw("best_bid", 0)
        # Only the depth triggers: deleting the best bids also widens the spread, whose
        # trigger would otherwise pull first.
        regs.set("pull_enable", sum(1 << REASON[name]
                                    for name in ("depth_bid", "depth_ask", "depth_both")))
        out["depth collapse"].append(_cancel_latency(
            engine, regs, [_msg(FeedKind.LEVEL_DELETE, Side.BID, bid - i, 0, seq + i)
                           for i in range(40)], "depth_bid"))
    return out


def _quote_latency(engine, rng, trials):
    """Cycles from a message that moves the mid to the REPLACE of our quote."""
    found = []
    for _ in range(trials):
        regs, seq = _armed(engine, rng.randrange(1 << 30))
        idle = regs.get_raw("requote_cycles") + 16   # let every re-quote timer expire
        engine.run(filler(seq, idle))
        seq += idle
        bid = regs.get_raw("best_bid", 0)
        obs, orders = engine.run(feed_array([_msg(FeedKind.LEVEL_SET, Side.BID, bid + 1, 50,
                                                  seq)]))
        moved = engine.last_order_cycles[orders["kind"] == OrderKind.REPLACE]
        if len(moved):
            found.append(int(moved[0]) - int(obs["cycle"][-1]))
    return found


def _crisis_quotes(engine):
    """Cycles from each message of the crisis scenario (seed 1011) to the first NEW or
    REPLACE it causes. Each message runs alone, so the RUN_DRAIN idle cycles after it leave
    no doubt which message an order answers; three empty runs after a TICK take the late
    re-quote of its sigma (up to SIGMA_LAG cycles) away from the next message. Re-quotes are
    not throttled (requote_cycles 2, a full and deep rate bucket) and the pull triggers are
    off, so the quoter prices every move through the crisis."""
    msgs = feed_array([m for _, m in generate("crisis", 1011)])
    engine.reset()
    regs = Registers(engine)
    params.apply(regs, params.load(PARAMS))
    for name, value in (("requote_cycles", 2), ("rate_depth", 65535), ("rate_tokens", 255),
                        ("pull_enable", 0)):
        regs.set(name, value)
    # The rate bucket starts at its reset depth (16 orders): TICKs before the scenario fill
    # it, so no order waits for tokens (the book is empty: they sample no volatility).
    for _ in range(4):
        engine.run(feed_array([_msg(FeedKind.TICK, Side.BID, 0, 0, 0)]))
    (_, start), *_ = tick_chunks(msgs)          # the opening snapshots, then arm
    engine.run(msgs[:start])
    regs.set("arm", 1)
    empty = np.zeros(0, FEED_DTYPE)
    engine.run(empty)                            # the quotes the arm itself places
    found = []
    for i in range(start, len(msgs)):
        obs, orders = engine.run(msgs[i:i + 1])
        quoting = engine.last_order_cycles[np.isin(orders["kind"], (OrderKind.NEW,
                                                                    OrderKind.REPLACE))]
        if len(quoting):
            found.append(int(quoting[0]) - int(obs["cycle"][-1]))
        if msgs["kind"][i] == FeedKind.TICK:
            for _ in range(3):
                engine.run(empty)
    return found


def _synth(pulls, quotes, bbo=()):
    """Per board: Fmax and utilisation from its `obcore synth` report under build/ (None
    when not built), and the measured cycle latencies in ns at that Fmax: ``pulls`` and
    ``quotes`` (the engine core's), ``bbo`` (message → best bid/ask, every core's). Under
    "blocks": the `obcore synth --block` reports found, with the block's latency in ns."""
    from .synth import BOARDS
    from .synth_block import BLOCKS, block_folder
    cancel = [c for values in pulls.values() for c in values]
    rows, blocks = {}, {}
    for board in BOARDS:
        for block in BLOCKS:
            path = block_folder("build", board, block) / "report.json"
            if path.exists():
                blocks[f"{board}-{block}"] = _block_row(board, json.loads(path.read_text()))
        path = Path("build") / board / "report.json"
        if not path.exists():
            rows[board] = None
            continue
        rep = json.loads(path.read_text())
        clock, fmax = min(rep["fmax"].items(), key=lambda kv: kv[1]["achieved_mhz"])
        ns = 1000 / fmax["achieved_mhz"]
        cfg = rep["config"]
        engine = cfg["core"] == "engine"
        rows[board] = {"core": f"{cfg['core']}, {cfg['venues']} venue(s) × {cfg['levels']} "
                               f"levels", "clock": clock, "seed": cfg.get("seed"),
                       "fmax": fmax["achieved_mhz"], "pass": fmax["pass"],
                       "resources": rep["resources"],
                       "bbo_ns": [c * ns for c in bbo],
                       "cancel_ns": [c * ns for c in cancel] if engine else None,
                       "quote_ns": [q * ns for q in quotes] if engine else None}
    if blocks:
        rows["blocks"] = blocks
    return rows


def _block_row(board, rep):
    """One `obcore synth --block` report as a row: the lowest Fmax and the latency in ns."""
    fmax = min(f["achieved_mhz"] for f in rep["fmax"].values())
    cycles = rep["config"].get("latency_cycles")    # reports before it have none
    return {"board": board, "label": rep["config"]["label"], "fmax": fmax,
            "pass": all(f["pass"] for f in rep["fmax"].values()),
            "target": rep["config"]["clock_mhz"], "seed": rep["config"]["seed"],
            "resources": rep["resources"], "cycles": cycles,
            "latency_ns": None if cycles is None else cycles * 1000 / fmax}


SECTIONS = {"latency": "hardware latency in cycles (native model)",
            "outputs": "per-output latency (Amaranth simulator)",
            "sim": "simulation speed and throughput",
            "control": "control plane: round trips, telemetry, soak",
            "synth": "Fmax and utilisation from the synth reports under build/"}


def measure(seed, trials=10, roundtrips=2000, soak_s=30, cocotb_messages=0, log=print,
            only=tuple(SECTIONS)):
    """The figures of the sections in ``only`` (all by default), computed now: a dict for
    :func:`write`. Each section draws its randomness from ``seed`` alone, so a section run
    by itself measures what it measures in a full run."""
    unknown = set(only) - set(SECTIONS)
    if unknown:
        raise ValueError(f"unknown bench section(s) {', '.join(sorted(unknown))}; choose from "
                         f"{', '.join(SECTIONS)}")
    out = {"seed": seed, "cpus": os.cpu_count()}
    if "latency" in only:
        rng = random.Random(seed)
        log("native model (built once per design)...")
        engine = open_engine("verilator")
        try:
            log("latency: pull triggers...")
            out["pulls"] = _pull_latencies(engine, rng, trials)
            log("latency: quotes...")
            out["quotes"] = _quote_latency(engine, rng, trials)
            log("latency: crisis scenario...")
            tagged = list(generate("crisis", 1011))
            engine.reset()
            _, _, cycles, _, out["crisis"] = drive(
                engine, feed_array([m for _, m in tagged]), np.array([p for p, _ in tagged]),
                params.load(PARAMS), log=lambda *_: None)
            out["orders"] = order_rate(cycles)
            log("latency: crisis scenario, message by message to the quotes...")
            out["crisis_quotes"] = _crisis_quotes(engine)
        finally:
            engine.close()
    if "outputs" in only:
        out["outputs"] = _outputs(seed, log)
    if "sim" in only:
        log("simulation speed...")
        out["speed"] = speed_bench.measure(random.Random(f"{seed}:sim"), cocotb_messages, log)
    if "control" in only:
        out["control"] = control_bench.measure(roundtrips, soak_s, log)
    if "synth" in only:
        bbo = [c for run in out.get("outputs", {}).values()
               for name in ("book.best_bid", "book.best_ask") for c in run.get(name, [])]
        out["synth"] = _synth(out.get("pulls", {}), out.get("quotes", []), bbo)
    out["load"] = os.getloadavg()
    return out


def order_rate(cycles):
    """The order stream's rate from the cycles its orders left (ascending): their count,
    the cycles they span, the shortest gap between two (1: back to back) and the longest
    run of orders in consecutive cycles."""
    cycles = np.asarray(cycles, dtype=np.int64)
    if len(cycles) < 2:
        return {"orders": len(cycles), "span": len(cycles), "min_gap": None,
                "longest": len(cycles)}
    gaps = np.diff(cycles)
    # Runs of back-to-back orders: split the gaps at every one that is not 1.
    breaks = np.flatnonzero(gaps != 1)
    edges = np.concatenate(([-1], breaks, [len(gaps)]))
    return {"orders": len(cycles), "span": int(cycles[-1] - cycles[0]) + 1,
            "min_gap": int(gaps.min()), "longest": int(np.diff(edges).max())}


def _outputs(seed, log, messages=150, crisis=60):
    """Feed → every book output and signal, per output: ``{run: {output: [cycles]}}``."""
    log(f"latency: book outputs and signals, {messages} random messages (Amaranth "
        "simulator)...")
    runs = {f"random, seed {seed}": latency.measure(*latency.random_messages(seed, messages),
                                                    latency.PROBE_PARAMS)}
    log(f"latency: book outputs and signals, {crisis} messages of the crisis cliff...")
    runs[f"crisis cliff (seed 1011), first {crisis} messages"] = latency.measure(
        *latency.scenario_messages("crisis", 1011, "cliff", crisis), latency.PROBE_PARAMS)
    return runs


def _output_lines(runs):
    names = sorted({name for samples in runs.values() for name in samples})
    lines = ["### Feed message accepted → each output shows it", "",
             "Measured per output in the Amaranth simulator on the same gateware "
             "(`obcore.sim.latency`): each message is followed by idle cycles and the first "
             "cycle its output differs is its latency (1 = registered on the accepting "
             "edge). Min / max over the messages that changed it (their count); the vol "
             "EWMAs, acceleration and depth history change on TICK samples, sigma and "
             "Spread* after the serial root.", "",
             "| output | " + " | ".join(runs) + " |", "|---|" + "---|" * len(runs)]
    for name in names:
        cells = [f"{_span(s[name])} ({len(s[name])})" if s[name] else "not changed"
                 for s in runs.values()]
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return lines + [""]


def _span(values):
    return f"{min(values)} / {max(values)}" if values else "not measured"


def _ns(values):
    return f"{min(values):.1f} / {max(values):.1f}" if values else "not measured"


def _order_line(o):
    if o is None:
        return "Orders: not measured (the latency section's crisis run measures them)."
    if o["min_gap"] is None:
        return f"Orders: the crisis run (seed 1011) sent {o['orders']}, too few for a rate."
    return (f"Orders, from the cycle stamps of the crisis run (seed 1011): {o['orders']} "
            f"orders over {o['span']:,} cycles; the shortest gap between two was "
            f"{o['min_gap']} cycle(s), a peak rate of {1 / o['min_gap']:.2f} orders per "
            f"cycle, and the longest run back to back {o['longest']} orders.")


def _synth_lines(rows):
    lines = ["## Fmax and utilisation (from `obcore synth` reports under build/)", "",
             "| board | core | Fmax (MHz) | LUT | FF | DSP | BRAM | message → best bid/ask "
             "(ns) | trigger → CANCEL_ALL (ns) | message → REPLACE (ns) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    blocks = rows.get("blocks", {})
    for board, row in rows.items():
        if board == "blocks":
            continue
        if row is None:
            lines.append(f"| {board} | not built — run `make synth` (`obcore synth --board "
                         f"{board}`) | | | | | | | | |")
            continue
        seed = "" if row.get("seed") is None else f", seed {row['seed']}"
        lines.append(f"| {board} | {row['core']} | {row['fmax']:.1f} (`{row['clock']}`{seed}"
                     f"{'' if row['pass'] else ', FAILS its constraint'}) | "
                     f"{' | '.join(_resources(row))} | {_ns(row['bbo_ns'])} | "
                     f"{_ns(row['cancel_ns']) if row['cancel_ns'] is not None else '—'} | "
                     f"{_ns(row['quote_ns']) if row['quote_ns'] is not None else '—'} |")
    lines += ["", "Nanoseconds (min / max) are this run's cycle counts divided by the board's "
              "lowest achieved Fmax: message → best bid/ask from the per-output latencies "
              "(Amaranth simulator), the others from the native model of 2 venues × 16 "
              "levels (the books-only core has no guard or quoter)."]
    if not blocks:
        return lines + ["", "No block reports: `obcore synth --board ulx3s-85f --block NAME` "
                        "places and routes one block alone (docs/boards.md)."]
    lines += ["", "### Blocks placed and routed alone (`obcore synth --block`)", "",
              "| board | block | Fmax (MHz) | LUT | FF | DSP | BRAM | latency (cycles) | "
              "latency (ns) |", "|---|---|---|---|---|---|---|---|---|"]
    for row in blocks.values():
        verdict = "" if row["pass"] else f", FAILS {row['target']:g}"
        cycles, ns = ("—", "—") if row["cycles"] is None else (
            row["cycles"], f"{row['latency_ns']:.1f}")
        lines.append(f"| {row['board']} | `{row['label']}` | {row['fmax']:.1f} (seed "
                     f"{row['seed']}{verdict}) | {' | '.join(_resources(row))} | {cycles} | "
                     f"{ns} |")
    return lines + ["", "FF includes the harness's input and output shift registers."]


def _resources(row):
    return [f"{row['resources'][k]['used']} ({row['resources'][k]['percent']}%)"
            if k in row["resources"] else "—" for k in ("LUT", "FF", "DSP", "BRAM")]


def _cpu_name():
    """The processor's model name (Linux), else the architecture."""
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        names = []
    return f"{names[0]} ({platform.machine()})" if names else platform.machine()


def write(result, path, command):
    """The markdown of ``result`` (the sections it has) to ``path``, or only returned if
    ``path`` is None."""
    load = ", ".join(f"{x:.1f}" for x in result["load"])
    lines = [
        "<!-- Generated by `obcore bench`; every figure below was measured by that run. -->",
        "", "# Benchmarks", "",
        f"Command: `{command}` — seed {result['seed']}, {datetime.now(UTC):%Y-%m-%d %H:%M} "
        f"UTC. Machine: {_cpu_name()}, "
        f"{result['cpus']} CPUs, Python {platform.python_version()}; load average {load} "
        f"at the end of the run — a machine shared with other jobs, so wall-clock figures "
        f"(speeds, round trips) are lower bounds of an idle one. Data: the synthetic "
        f"scenarios.", ""]
    if "pulls" in result or "outputs" in result:
        lines += ["## Hardware latency (clock cycles, native Verilator model of the whole "
                  "engine)", ""]
    if "pulls" in result:
        lines += ["| path | min / max |", "|---|---|"]
        for name, values in result["pulls"].items():
            lines.append(f"| feed message accepted → CANCEL_ALL on the order stream, {name} "
                         f"trigger | {_span(values)} |")
        lines.append(f"| feed message accepted → REPLACE of our quote after a mid move | "
                     f"{_span(result['quotes'])} |")
        if "crisis_quotes" in result:
            lines.append(f"| crisis scenario (seed 1011), each message alone (re-quotes "
                         f"unthrottled, triggers off): feed message accepted → the first NEW or "
                         f"REPLACE it causes ({len(result['crisis_quotes'])} messages did) | "
                         f"{_span(result['crisis_quotes'])} |")
        for phase, at, why, cancel, cause in result["crisis"]:
            lines.append(f"| crisis scenario (seed 1011), pull in phase {phase} "
                         f"({', '.join(why)}): the message that raised it → CANCEL_ALL "
                         f"(`pull` → CANCEL_ALL) | "
                         f"{'—' if cause is None else cancel - cause} ({cancel - at}) |")
        lines.append("")
    if "outputs" in result:
        lines += _output_lines(result["outputs"])
    if "speed" in result:
        s = result["speed"]
        lines += ["## Throughput", "",
                  f"Feed: {s['msgs_per_cycle']:.3f} messages per cycle sustained over "
                  f"{s['messages']:,} messages (cycle stamps of the observations). "
                  + _order_line(result.get("orders")), ""] + speed_bench.lines(s)
    if "control" in result:
        lines += control_bench.markdown(result["control"])
    if "synth" in result:
        lines += _synth_lines(result["synth"])
    text = "\n".join(lines) + "\n"
    if path is not None:
        Path(path).write_text(text)
    return text


def add_parser(sub):
    p = sub.add_parser("bench", help="measure latency, throughput and speed; write the table")
    p.add_argument("--seed", type=int, help="random seed (default: a fresh one, printed)")
    p.add_argument("--trials", type=int, default=10, help="latency trials per path")
    p.add_argument("--soak", type=float, default=30, metavar="S",
                   help="seconds of the control-plane soak (default 30)")
    p.add_argument("--cocotb-messages", type=int, default=0, metavar="N",
                   help="time the cocotb path on the first N messages of the set (default: "
                        "all)")
    p.add_argument("--only", metavar="SECTIONS",
                   help="comma-separated sections to run: " + "; ".join(
                       f"{k} ({v})" for k, v in SECTIONS.items()) + " (default: all); the "
                   "markdown is printed, and written only with --out")
    p.add_argument("--out", help="markdown file to write (default: docs/benchmarks.md, "
                                 "unless --only)")
    p.set_defaults(run=run)


def run(args):
    only = tuple(SECTIONS) if args.only is None else tuple(
        x.strip() for x in args.only.split(",") if x.strip())
    out = args.out if args.out is not None or args.only is not None else "docs/benchmarks.md"
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    print(f"obcore bench: seed {seed}", file=sys.stderr)
    try:
        result = measure(seed, args.trials, soak_s=args.soak,
                         cocotb_messages=args.cocotb_messages,
                         log=lambda m: print(m, file=sys.stderr), only=only)
    except ValueError as exc:
        print(f"obcore bench: {exc}", file=sys.stderr)
        return 2
    command = (f"obcore bench --seed {seed} --trials {args.trials} --soak {args.soak:g}"
               + (f" --cocotb-messages {args.cocotb_messages}" if args.cocotb_messages else "")
               + (f" --only {','.join(only)}" if args.only is not None else ""))
    print(write(result, out, command))
    return 0
