"""Control-plane measurements: `obcore sim` as its own process, the bare transport's round
trip, telemetry rate, and the soak (several clients writing and subscribing during a replay)."""

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

from ..control.client import EngineClient, EngineError, EngineTimeoutError, percentiles

__all__ = ["SOAK_REGISTERS", "served", "transport_floor", "rss_bytes", "cpu_seconds", "soak",
           "telemetry_rate"]

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
