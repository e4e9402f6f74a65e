"""Simulation speed: the native model, the cocotb path and the reference model on the same
messages, and a windowed replay's pauses clocked whole or settled."""

import time

import numpy as np

from ..hw.layouts import FeedKind, feed_array
from .engine import RUN_DRAIN, ModelEngine, open_engine
from .replay.cli import idle_cycles
from .replay.runner import BATCH
from .scenarios import SCENARIOS, generate

__all__ = ["measure", "settled", "lines"]


def _scenario_set(rng):
    """Every scenario once, each with a seed drawn from ``rng``: ``(seeds, messages)``."""
    seeds = {name: rng.randrange(99) for name in sorted(SCENARIOS)}
    return seeds, feed_array([m for name, seed in seeds.items() for _, m in generate(name, seed)])


def measure(rng, cocotb_messages, log):
    """Messages per second of the native model, the cocotb path and the reference model on
    the same messages (every scenario, seeds drawn from ``rng``), in this one run; then the
    windowed replay's pauses, whole and settled (:func:`settled`)."""
    seeds, msgs = _scenario_set(rng)
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
    log("simulation speed: pauses of a windowed replay (builds once per design)...")
    paused = settled(rng)
    return {"settled": paused, "native_msgs_per_s": native_rate, "model_msgs_per_s": model_rate,
            "native_batched_msgs_per_s": batched_rate, "native_batched_msgs_per_cpu_s":
            batched_cpu, "batch": BATCH,
            "native_msgs_per_cpu_s": native_cpu, "model_msgs_per_cpu_s": model_cpu,
            "cocotb": cocotb, "set": len(msgs), "seeds": seeds,
            "messages": len(big), "msgs_per_cycle": len(big) / cycles}


def settled(rng, levels=16, capacity=None, window=8192):
    """A windowed ``obcore replay``'s pauses, whole and settled (``run(..., settle=True)``):
    the scenarios (seeds from ``rng``) without their TICKs, as a replay without ``--tick-ns``
    has none, an update per scenario step (the messages between two TICKs) and a pause of
    ``RUN_DRAIN + idle_cycles(levels)`` after each, in calls of ``BATCH`` messages, on a
    Verilated build with price ladders ``window`` ticks wide. Per way: messages per CPU
    second, cycles and cycles per message. ``RuntimeError`` unless both give the same
    observations (but their cycle stamps) and telemetry."""
    seeds, msgs = _scenario_set(rng)
    tick = msgs["kind"] == FeedKind.TICK
    pauses = np.zeros(len(msgs), np.uint32)
    pauses[np.flatnonzero(tick[1:])] = RUN_DRAIN + idle_cycles(levels)   # before each TICK
    msgs, pauses = msgs[~tick], pauses[~tick]
    out, seen = {"levels": levels, "window": window, "messages": len(msgs),
                 "updates": int(np.count_nonzero(pauses))}, {}
    engine = open_engine("verilator", levels=levels, capacity=capacity, window=window)
    try:
        for way in ("whole", "settled"):
            engine.reset()
            start, obs, telem = engine.cycle, [], []
            cpu = time.process_time()
            for i in range(0, len(msgs), BATCH):
                obs.append(engine.run(msgs[i:i + BATCH], pauses=pauses[i:i + BATCH],
                                      settle=way == "settled")[0])
                telem.append(engine.last_telemetry)
            cpu = time.process_time() - cpu
            cycles = engine.cycle - start
            out[way] = {"msgs_per_cpu_s": len(msgs) / cpu, "cycles": cycles,
                        "cycles_per_msg": cycles / len(msgs)}
            seen[way] = [np.concatenate(obs), np.concatenate(telem)]
    finally:
        engine.close()
    for whole, settle in zip(seen["whole"], seen["settled"], strict=True):
        names = [n for n in whole.dtype.names if n != "cycle"]
        if not np.array_equal(whole[names], settle[names]):
            raise RuntimeError("settled pauses changed an observation or telemetry record")
    out["seeds"] = seeds
    return out


def lines(s):
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
            f"| Python reference model | {model:,.0f} | 1.0 | {model_cpu:,.0f} (1.0) |", "",
            *_settled_lines(s["settled"])]


def _settled_lines(s):
    whole, settle = s["whole"], s["settled"]
    return ["### A windowed replay's pauses", "",
            f"{s['messages']:,} messages of the scenarios without their TICKs in "
            f"{s['updates']:,} updates, each followed by a pause of at most "
            f"`RUN_DRAIN + idle_cycles({s['levels']})` cycles as `obcore replay` clocks them, "
            f"on the Verilated engine with price ladders {s['window']} ticks wide; settled "
            "pauses end when the top's `settling` reads 0 (docs/ladder.md). The observations "
            "and telemetry of both are the same (checked in the run).", "",
            "| pauses | messages per CPU second | cycles per message |", "|---|---|---|",
            f"| whole | {whole['msgs_per_cpu_s']:,.0f} | {whole['cycles_per_msg']:.2f} |",
            f"| settled | {settle['msgs_per_cpu_s']:,.0f} | {settle['cycles_per_msg']:.2f} |",
            ""]
