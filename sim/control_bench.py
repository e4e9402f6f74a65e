"""Control-plane measurements: `obcore sim` as its own process, the bare transport's round
trip, telemetry rate, and the soak (several clients writing and subscribing during a replay)."""

import gc
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from contextlib import contextmanager

import zmq

from ..control import protocol as proto
from ..control.client import EngineClient, EngineError, EngineTimeoutError

__all__ = ["SOAK_REGISTERS", "bench_roundtrip", "percentiles", "served", "transport_floor",
           "rss_bytes", "cpu_seconds", "soak", "telemetry_rate", "measure", "markdown"]

LOCAL = "tcp://127.0.0.1:*"
# A bare ROUTER echo: the round trip of the sockets alone, no protocol, no engine.
_ECHO = textwrap.dedent("""
    import sys, zmq
    router = zmq.Context().socket(zmq.ROUTER)
    router.bind("tcp://127.0.0.1:*")
    print(router.last_endpoint.decode(), flush=True)
    while (frames := router.recv_multipart())[-1] != b"stop":
        router.send_multipart(frames)
""")


def bench_roundtrip(endpoint=proto.DEFAULT_ENDPOINT, n=1000, curve=None, register="tau"):
    """Round trip of one register write (a ``write`` of the staged words and the commit),
    measured ``n`` times: ``{"n", "p50_us", "p99_us"}`` in microseconds, and
    ``client_cpu_us``: this process's CPU time per write (its ZeroMQ I/O thread included)."""
    with EngineClient(endpoint, timeout=5000, curve=curve) as client:
        regs = client.registers()
        value = regs.get(register)
        for _ in range(min(n, 50)):   # warm-up: connection, caches
            regs.set(register, value)
        times, cpu = [], time.process_time()
        for _ in range(n):
            t0 = time.perf_counter_ns()
            regs.set(register, value)
            times.append(time.perf_counter_ns() - t0)
        cpu = time.process_time() - cpu
    return {**percentiles(times), "client_cpu_us": 1e6 * cpu / max(1, n)}


def percentiles(times_ns):
    """``{"n", "p50_us", "p99_us"}`` of round-trip times given in nanoseconds."""
    times, n = sorted(times_ns), len(times_ns)
    return {"n": n, "p50_us": times[n // 2] / 1000,
            "p99_us": times[min(n - 1, n * 99 // 100)] / 1000}


@contextmanager
def served(*args, startup_s=300):
    """``obcore sim ARGS`` on loopback in its own process: yields ``(endpoint, pid)``.

    Its log goes to a temporary file (read for the endpoint), so a full pipe never stalls it.
    """
    cmd = [sys.executable, "-m", "obcore.control.cli", "sim", "--bind", LOCAL, *args]
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, stderr=log, stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + startup_s
            while not (found := re.search(r" on (tcp://\S+), telemetry", _text(log))):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"obcore sim did not start: {_text(log)[-2000:]}")
                time.sleep(0.05)
            yield found[1], proc.pid
        finally:
            proc.terminate()
            proc.wait()


def _text(log):
    log.seek(0)
    return log.read()


def transport_floor(n):
    """Round trip of a bare DEALER to a ROUTER echo in another process, ``n`` times; with
    the CPU time per round trip of the echo process and of this one (``server_cpu_us``,
    ``client_cpu_us``)."""
    proc = subprocess.Popen([sys.executable, "-c", _ECHO], stdout=subprocess.PIPE, text=True)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    try:
        sock.connect(proc.stdout.readline().strip())
        frame = b'{"v":1,"id":1,"cmd":"write","writes":[[1,65536],[0,1]]}'
        times = []
        for i in range(n + 50):   # the first 50: warm-up
            if i == 50:
                cpu, server_cpu = time.process_time(), cpu_seconds(proc.pid)
            t0 = time.perf_counter_ns()
            sock.send(frame)
            sock.recv()
            if i >= 50:
                times.append(time.perf_counter_ns() - t0)
        cpu, server_cpu = time.process_time() - cpu, cpu_seconds(proc.pid) - server_cpu
        sock.send(b"stop")
        proc.wait(timeout=10)
    finally:
        sock.close()
        ctx.term()
        proc.kill()
        proc.stdout.close()
    return {**percentiles(times), "server_cpu_us": 1e6 * server_cpu / max(1, n),
            "client_cpu_us": 1e6 * cpu / max(1, n)}

# rw registers the soak's writers own, one each (venue 1's thresholds: the scenarios only feed
# venue 0), so every read-back has one right answer.
SOAK_REGISTERS = (("spread_max", 1), ("stale_timeout", 1), ("vol_fast_max", 1),
                  ("vol_slow_max", 1), ("depth_min", 1), ("lvi_depth", 1))


def rss_bytes(pid=None):
    """Resident set size of process ``pid`` (default: this one), from /proc."""
    with open(f"/proc/{pid or os.getpid()}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc status")


def _writer(endpoint, key, stop, out):
    """Set ``key`` to a new value, read it back, repeat; count what came back and how."""
    name, index = key
    counts = {"requests": 0, "lost": 0, "wrong": 0, "errors": 0}
    with EngineClient(endpoint, timeout=5000) as client:
        regs = client.registers()
        lo, hi = regs.regmap[name].limits()
        value = int(lo)
        while not stop.is_set():
            value = int(lo) + (value + 1 - int(lo)) % (min(int(hi), 1 << 20) - int(lo) + 1)
            try:
                regs.set(name, value, index)
                got = regs.get(name, index)
            except EngineTimeoutError:
                counts["lost"] += 1
                continue
            except EngineError:
                counts["errors"] += 1
                continue
            finally:
                counts["requests"] += 2
            counts["wrong"] += got != value
    out.append(counts)


def _subscriber(sub, stop, out):
    status = 0
    while not stop.is_set():
        msg = sub.recv(50)
        status += msg is not None and msg["topic"] == "status"
    out.append({"received": sub.received, "missed": sub.missed, "status": status})


def soak(endpoint, seconds, writers=4, subscribers=2, pid=None, samples=20):
    """Run ``writers`` register writers and ``subscribers`` telemetry subscribers against the
    server at ``endpoint`` for ``seconds``; sample the RSS of process ``pid`` (the server;
    default this process) ``samples`` times. Returns the counts and the RSS samples."""
    if not 1 <= writers <= len(SOAK_REGISTERS):
        raise ValueError(f"writers must be 1..{len(SOAK_REGISTERS)}, not {writers}")
    stop, results, seen = threading.Event(), [], []
    with EngineClient(endpoint, timeout=5000) as probe:
        before = probe.status()["feed"]
        # Subscribed here (a client's request socket serves one thread), read in threads.
        threads = [threading.Thread(target=_subscriber, args=(probe.subscribe(hwm=1 << 20),
                                                              stop, seen))
                   for _ in range(subscribers)]
        threads += [threading.Thread(target=_writer, args=(endpoint, key, stop, results))
                    for key in SOAK_REGISTERS[:writers]]
        for thread in threads:
            thread.start()
        rss, t0 = [], time.monotonic()
        for i in range(samples):
            time.sleep(max(0.0, t0 + seconds * (i + 1) / samples - time.monotonic()))
            rss.append(rss_bytes(pid))
        stop.set()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - t0
        after = probe.status()["feed"]
    total = {k: sum(r[k] for r in results) for k in ("requests", "lost", "wrong", "errors")}
    return {**total, "seconds": elapsed, "writers": writers, "subscribers": subscribers,
            "telemetry": sum(s["received"] for s in seen),
            "missed": sum(s["missed"] for s in seen),
            "status_hz": sum(s["status"] for s in seen) / max(1, len(seen)) / elapsed,
            "replayed": (after or {}).get("messages", 0) - (before or {}).get("messages", 0),
            "rss": rss}


def cpu_seconds(pid):
    """User plus system CPU seconds process ``pid`` has used, from /proc."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def telemetry_rate(endpoint, pid, seconds, subscribe=True):
    """Status messages per second one subscriber receives (if ``subscribe``), the replay's
    messages per second meanwhile (from the server's feed counter), and the server process
    ``pid``'s CPU: its share of one CPU, and microseconds per replayed message (which a
    loaded machine does not inflate the way it does wall-clock rates)."""
    with EngineClient(endpoint, timeout=5000) as client:
        sub = client.subscribe(("status",), hwm=1 << 20) if subscribe else None
        while sub is not None and sub.recv(1000) is None:   # the subscription has taken
            pass
        start, cpu0 = client.status()["feed"]["messages"], cpu_seconds(pid)
        t0, n = time.monotonic(), 0
        while (left := t0 + seconds - time.monotonic()) > 0:
            if sub is None:
                time.sleep(left)
            else:
                n += sub.recv(max(1, int(left * 1000))) is not None
        elapsed, cpu = time.monotonic() - t0, cpu_seconds(pid) - cpu0
        replayed = client.status()["feed"]["messages"] - start
    return {"status_hz": n / elapsed, "replay_msgs_per_s": replayed / elapsed,
            "missed": sub.missed if sub else 0, "cpu_share": cpu / elapsed,
            "cpu_us_per_msg": 1e6 * cpu / max(1, replayed)}


def measure(roundtrips=2000, soak_s=30, log=print):
    """Round trips, telemetry and the soak against `obcore sim` (native engine) in its own
    process, as an operator runs it; the bare transport's round trip for comparison."""
    fast = ["--engine", "verilator", "--scenario", "calm", "--pace", "fast", "--repeat"]
    out = {}
    log("control plane: round trips...")
    gc.freeze()   # this process's engines and designs: not the client's garbage to collect
    with served("--engine", "verilator", "--pub", "none") as (endpoint, pid):
        cpu = cpu_seconds(pid)
        out["roundtrip"] = bench_roundtrip(endpoint, roundtrips)
        # Per write, the 50 warm-up writes and the identity check included.
        out["roundtrip"]["server_cpu_us"] = 1e6 * (cpu_seconds(pid) - cpu) / roundtrips
    out["floor"] = transport_floor(roundtrips)
    log("control plane: telemetry rate...")
    for hz in (0, 1000):
        with served(*fast, "--pub", LOCAL, "--telemetry-hz", str(hz)) as (endpoint,
                                                                                  pid):
            out[f"telemetry_{hz}"] = telemetry_rate(endpoint, pid, 5, subscribe=hz > 0)
    log(f"control plane: {soak_s} s soak...")
    with served(*fast, "--pub", LOCAL, "--telemetry-hz", "1000") as (endpoint, pid):
        out["soak"] = soak(endpoint, soak_s, writers=4, subscribers=2, pid=pid)
    return out


def markdown(c):
    """The control-plane section of docs/benchmarks.md from :func:`measure`'s figures."""
    rt, floor, soak = c["roundtrip"], c["floor"], c["soak"]
    off, on = c["telemetry_0"], c["telemetry_1000"]
    met = "met" if rt["p50_us"] <= 200 and rt["p99_us"] <= 1000 else "NOT met"
    rss = [r / (1 << 20) for r in soak["rss"]]
    return ["## Control plane (loopback; `obcore sim --engine verilator` in its own process)",
            "", f"Register write round trip (`RemoteRegisters.set`: staged words and the "
            f"commit in one `write` request), {rt['n']} writes to an idle server: p50 "
            f"{rt['p50_us']:.0f} µs, p99 {rt['p99_us']:.0f} µs (target p50 ≤ 200 µs, p99 ≤ "
            f"1 ms: {met}); CPU per write: server process {rt['server_cpu_us']:.0f} µs, "
            f"client {rt['client_cpu_us']:.0f} µs (each with its ZeroMQ I/O thread). The bare "
            f"transport in the same run (a DEALER to a ROUTER echo in another process, no "
            f"protocol, no engine): p50 {floor['p50_us']:.0f} µs, p99 {floor['p99_us']:.0f} "
            f"µs; CPU per round trip: echo process {floor['server_cpu_us']:.0f} µs, client "
            f"{floor['client_cpu_us']:.0f} µs. Round trip over the bare transport's, p50: "
            f"{rt['p50_us'] / floor['p50_us']:.2f}.", "",
            f"Telemetry: replaying the calm scenario at fast pace with `--telemetry-hz "
            f"1000`, a subscriber received {on['status_hz']:,.0f} status messages/s "
            f"({on['missed']} missed) while the server process had {on['cpu_share']:.2f} "
            f"of a CPU; the replay ran at {on['replay_msgs_per_s']:,.0f} messages/s "
            f"against {off['replay_msgs_per_s']:,.0f} with telemetry off ({off['cpu_share']:.2f}"
            f" of a CPU). Server CPU per replayed message: {on['cpu_us_per_msg']:.1f} µs with "
            f"telemetry, {off['cpu_us_per_msg']:.1f} µs without (ratio "
            f"{on['cpu_us_per_msg'] / off['cpu_us_per_msg']:.2f}).", "",
            f"Soak: {soak['seconds']:.0f} s, {soak['writers']} clients each setting its own "
            f"register and reading it back, {soak['subscribers']} subscribers, the replay "
            f"and 1 kHz telemetry running: {soak['requests']:,} requests, "
            f"{soak['lost']} lost replies, {soak['wrong']} wrong read-backs, "
            f"{soak['errors']} errors; {soak['telemetry']:,} telemetry messages, "
            f"{soak['missed']} missed (sequence gaps), {soak['status_hz']:,.0f} status/s per "
            f"subscriber; {soak['replayed']:,} messages replayed. Server RSS: "
            f"{rss[0]:.1f} MiB at {100 // len(rss)}% of the run, {rss[len(rss) // 4]:.1f} "
            f"at a quarter, {rss[-1]:.1f} at the end (max {max(rss):.1f}).", ""]
