"""Benchmarks: latency in cycles, throughput, simulation speed and control-plane round trips."""

import json
import os
import platform
import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from ..control import params
from ..control.registers import Registers
from ..hw.guard import REASON
from ..hw.layouts import FEED_DTYPE, FeedKind, OrderKind, Side, feed_array
from . import control_bench, latency
from .demo import PARAMS, drive, tick_chunks, trigger_cycle
from .engine import ModelEngine, open_engine
from .replay.runner import BATCH
from .scenarios import SCENARIOS, generate

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


def _speed(rng, cocotb_messages, log):
    """Messages per second of the native model, the cocotb path and the reference model on
    the same messages (every scenario, seeds drawn from ``rng``), in this one run."""
    seeds = {name: rng.randrange(99) for name in sorted(SCENARIOS)}
    msgs = feed_array([m for name, seed in seeds.items() for _, m in generate(name, seed)])
    native = open_engine("verilator", pgo=True)   # the fastest build: profile-guided
    try:
        big = np.concatenate([msgs] * 20)   # the same set 20 times: a long enough timing
        t0, cpu = time.perf_counter(), time.process_time()
        obs, _ = native.run(big)
        native_rate = len(big) / (time.perf_counter() - t0)
        native_cpu = len(big) / (time.process_time() - cpu)
        cycles = int(obs["cycle"][-1]) - int(obs["cycle"][0]) + 1
        # The same messages as `obcore replay` feeds them: one call per BATCH, each with its
        # drain cycles; no fresh output pages for the kernel to zero beyond a batch's.
        t0, cpu = time.perf_counter(), time.process_time()
        for i in range(0, len(big), BATCH):
            native.run(big[i:i + BATCH])
        batched_rate = len(big) / (time.perf_counter() - t0)
        batched_cpu = len(big) / (time.process_time() - cpu)
    finally:
        native.close()
    t0, cpu = time.perf_counter(), time.process_time()
    ModelEngine().run(msgs)
    model_rate = len(msgs) / (time.perf_counter() - t0)
    model_cpu = len(msgs) / (time.process_time() - cpu)
    log("simulation speed: cocotb path (builds once per design)...")
    try:
        from .cocotb_speed import measure as cocotb_measure
        part = msgs[:cocotb_messages] if cocotb_messages else msgs
        cocotb = cocotb_measure(part)
        if cocotb["obs"] != len(part):
            raise RuntimeError(f"the cocotb run observed {cocotb['obs']} of {len(part)} "
                               f"messages")
    except ImportError as exc:
        cocotb = {"error": f"not measured: {exc} (install the test extra)"}
    return {"native_msgs_per_s": native_rate, "model_msgs_per_s": model_rate,
            "native_batched_msgs_per_s": batched_rate, "native_batched_msgs_per_cpu_s":
            batched_cpu, "batch": BATCH,
            "native_msgs_per_cpu_s": native_cpu, "model_msgs_per_cpu_s": model_cpu,
            "cocotb": cocotb, "set": len(msgs), "seeds": seeds,
            "messages": len(big), "msgs_per_cycle": len(big) / cycles}


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
        out["speed"] = _speed(random.Random(f"{seed}:sim"), cocotb_messages, log)
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


def _speed_lines(s):
    c, model = s["cocotb"], s["model_msgs_per_s"]
    seeds = ", ".join(f"{name} seed {seed}" for name, seed in s["seeds"].items())
    cocotb = (f"| cocotb path (cocotb driving the Verilated engine a cycle at a time; "
              f"{c['messages']:,} messages of the set) | {c['msgs_per_s']:,.0f} | "
              f"{c['msgs_per_s'] / model:.2f} | |" if "error" not in c
              else f"| cocotb path | {c['error']} | | |")
    native, model_cpu = s["native_msgs_per_cpu_s"], s["model_msgs_per_cpu_s"]
    batched = s["native_batched_msgs_per_cpu_s"]
    return ["## Simulation speed (one run, same messages)", "",
            f"Message set: {s['set']:,} messages, the synthetic scenarios ({seeds}); the "
            f"native model ran it 20 times over. Per CPU second: messages over the process's "
            f"CPU time, which other jobs on the machine inflate less than the wall clock.", "",
            "| engine | messages/s | ratio to the reference model | messages per CPU second "
            "(ratio) |", "|---|---|---|---|",
            f"| native Verilator model (profile-guided build; ctypes, the set 20 times in "
            f"one call) | {s['native_msgs_per_s']:,.0f} | {s['native_msgs_per_s'] / model:.1f} | "
            f"{native:,.0f} ({native / model_cpu:.1f}) |",
            f"| the same, in calls of {s['batch']:,} messages as `obcore replay` feeds it | "
            f"{s['native_batched_msgs_per_s']:,.0f} | "
            f"{s['native_batched_msgs_per_s'] / model:.1f} | {batched:,.0f} "
            f"({batched / model_cpu:.1f}) |", cocotb,
            f"| Python reference model | {model:,.0f} | 1.0 | {model_cpu:,.0f} (1.0) |", ""]


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
                  + _order_line(result.get("orders")), ""] + _speed_lines(s)
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
