"""Benchmarks: latency in cycles, throughput, simulation speed and control-plane round trips."""

import json
import platform
import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from ..control import params
from ..control.registers import Registers
from ..hw.layouts import FeedKind, OrderKind, Side, feed_array
from .demo import PARAMS, drive
from .engine import ModelEngine, open_engine
from .scenarios import SCENARIOS, generate

__all__ = ["add_parser", "run", "measure", "arm_calm", "filler"]


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


def _cancel_latency(engine, trigger):
    """Cycles from accepting the last message of ``trigger`` to CANCEL_ALL leaving."""
    obs, orders = engine.run(feed_array(trigger))
    cancel = engine.last_order_cycles[orders["kind"] == OrderKind.CANCEL_ALL]
    if not len(cancel):
        raise RuntimeError("the trigger did not pull the quotes")
    return int(cancel[0]) - int(obs["cycle"][-1])


def _pull_latencies(engine, rng, trials):
    """Crossed-book and depth-collapse triggers on random calm books: cycles to cancel."""
    out = {"crossed book": [], "depth collapse": []}
    for _ in range(trials):
        regs, seq = _armed(engine, rng.randrange(1 << 30))
        ask = regs.get_raw("best_ask", 0)
        out["crossed book"].append(_cancel_latency(
            engine, [_msg(FeedKind.LEVEL_SET, Side.BID, ask + 1, 5, seq)]))
        regs, seq = _armed(engine, rng.randrange(1 << 30))
        bid = regs.get_raw("best_bid", 0)
        deletes = [_msg(FeedKind.LEVEL_DELETE, Side.BID, bid - i, 0, seq + i) for i in range(40)]
        obs, orders = engine.run(feed_array(deletes))
        cancel = engine.last_order_cycles[orders["kind"] == OrderKind.CANCEL_ALL]
        if not len(cancel):
            raise RuntimeError("deleting the bids did not pull the quotes")
        # The trigger is the delete that took bid depth under depth_min: the last one
        # accepted before the pull rose.
        before = obs["cycle"][obs["cycle"] < regs.get_raw("pull_cycle")]
        out["depth collapse"].append(int(cancel[0]) - int(before[-1]))
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


def _speed(rng):
    """Messages per second of the native model and the reference model, same messages."""
    msgs = feed_array([m for s in sorted(SCENARIOS) for _, m in generate(s, rng.randrange(99))])
    native = open_engine("verilator")
    try:
        big = np.concatenate([msgs] * 20)
        t0 = time.perf_counter()
        obs, _ = native.run(big)
        native_rate = len(big) / (time.perf_counter() - t0)
        cycles = int(obs["cycle"][-1]) - int(obs["cycle"][0]) + 1
    finally:
        native.close()
    t0 = time.perf_counter()
    ModelEngine().run(msgs)
    model_rate = len(msgs) / (time.perf_counter() - t0)
    return {"native_msgs_per_s": native_rate, "model_msgs_per_s": model_rate,
            "messages": len(big), "msgs_per_cycle": len(big) / cycles}


def _control(n):
    """Register write round trip on loopback against a served reference engine."""
    from ..control.client import bench_roundtrip
    from .server import Server
    with Server(ModelEngine(), "tcp://127.0.0.1:*", None, telemetry_hz=0).running() as srv:
        return bench_roundtrip(srv.endpoint, n)


def _synth():
    """Fmax and utilisation from the latest `obcore synth` reports under build/."""
    found = {}
    for report in sorted(Path("build").glob("*/report.json")):
        found[report.parent.name] = json.loads(report.read_text())
    return found


def measure(seed, trials=10, roundtrips=2000, log=print):
    """Every figure, computed now: a dict for :func:`write`."""
    rng = random.Random(seed)
    log("native model (built once per design)...")
    engine = open_engine("verilator")
    try:
        log("latency: pull triggers...")
        pulls = _pull_latencies(engine, rng, trials)
        log("latency: quotes...")
        quotes = _quote_latency(engine, rng, trials)
        log("latency: crisis scenario...")
        tagged = list(generate("crisis", 1011))
        engine.reset()
        _, _, _, _, crisis = drive(engine, feed_array([m for _, m in tagged]),
                                   np.array([p for p, _ in tagged]), params.load(PARAMS),
                                   log=lambda *_: None)
    finally:
        engine.close()
    log("simulation speed...")
    speed = _speed(rng)
    log("control plane...")
    control = _control(roundtrips)
    return {"seed": seed, "pulls": pulls, "quotes": quotes, "crisis": crisis, "speed": speed,
            "control": control, "synth": _synth()}


def _span(values):
    return f"{min(values)} / {max(values)}" if values else "not measured"


def write(result, path, command):
    s, c = result["speed"], result["control"]
    lines = [
        "<!-- Generated by `obcore bench`; every figure below was measured by that run. -->",
        "", "# Benchmarks", "",
        f"Command: `{command}` — seed {result['seed']}, {datetime.now(UTC):%Y-%m-%d %H:%M} "
        f"UTC, {platform.machine()} {platform.processor() or ''} Python "
        f"{platform.python_version()}, data: the synthetic scenarios.", "",
        "## Hardware latency (clock cycles, native Verilator model of the whole engine)", "",
        "| path | min / max |", "|---|---|"]
    for name, values in result["pulls"].items():
        lines.append(f"| feed message accepted → CANCEL_ALL on the order stream, {name} "
                     f"trigger | {_span(values)} |")
    lines.append(f"| feed message accepted → REPLACE of our quote after a mid move | "
                 f"{_span(result['quotes'])} |")
    for phase, at, why, cancel, last in result["crisis"]:
        lines.append(f"| crisis scenario, pull in phase {phase} ({', '.join(why)}): trigger → "
                     f"CANCEL_ALL, last message → CANCEL_ALL | {cancel - at} / {cancel - last} "
                     f"|")
    lines += ["", "Book outputs follow a message by the documented constants of `hw/book.py` "
              "(checked cycle by cycle in tests/cocotb/books_tb.py), signals by 3 more "
              "(docs/signals.md).", "",
              "## Throughput", "",
              f"Feed: {s['msgs_per_cycle']:.3f} messages per cycle sustained over "
              f"{s['messages']:,} messages (cycle stamps of the observations). Orders: at most "
              "one per cycle (stream handshake).", "",
              "## Simulation speed (one run, same messages)", "",
              "| engine | messages/s | ratio |", "|---|---|---|",
              f"| native Verilator model | {s['native_msgs_per_s']:,.0f} | "
              f"{s['native_msgs_per_s'] / s['model_msgs_per_s']:.1f} |",
              f"| Python reference model | {s['model_msgs_per_s']:,.0f} | 1.0 |",
              "| cocotb path | not measured by this harness | |", "",
              "## Control plane (loopback, reference engine behind the server)", "",
              f"Register write round trip over {c['n']} writes: p50 {c['p50_us']:.0f} µs, "
              f"p99 {c['p99_us']:.0f} µs.", "", "## Fmax and utilisation", ""]
    if result["synth"]:
        for board, rep in result["synth"].items():
            lines.append(f"- {board}: `{json.dumps(rep)[:400]}`")
    else:
        lines.append("No synthesis report under build/: run `obcore synth --board ...` first.")
    Path(path).write_text("\n".join(lines) + "\n")


def add_parser(sub):
    p = sub.add_parser("bench", help="measure latency, throughput and speed; write the table")
    p.add_argument("--seed", type=int, help="random seed (default: a fresh one, printed)")
    p.add_argument("--trials", type=int, default=10, help="latency trials per path")
    p.add_argument("--out", default="docs/benchmarks.md", help="markdown file to write")
    p.set_defaults(run=run)


def run(args):
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    print(f"obcore bench: seed {seed}", file=sys.stderr)
    result = measure(seed, args.trials, log=lambda m: print(m, file=sys.stderr))
    write(result, args.out, f"obcore bench --seed {seed} --trials {args.trials}")
    print(Path(args.out).read_text())
    return 0
