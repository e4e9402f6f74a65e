"""Control-plane soak: several clients writing and subscribing while the server replays data."""

import os
import threading
import time

from ..control.client import EngineClient, EngineError, EngineTimeoutError

__all__ = ["SOAK_REGISTERS", "rss_bytes", "soak", "telemetry_rate"]

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


def _subscriber(client, stop, out):
    sub = client.subscribe(hwm=1 << 20)
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
        threads = [threading.Thread(target=_subscriber, args=(probe, stop, seen))
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


def telemetry_rate(endpoint, seconds):
    """Status messages per second one subscriber receives, and the replay's messages per
    second meanwhile (from the server's feed counter)."""
    with EngineClient(endpoint, timeout=5000) as client:
        sub = client.subscribe(("status",), hwm=1 << 20)
        while sub.recv(1000) is None:   # the subscription has taken
            pass
        start = client.status()["feed"]["messages"]
        t0, n = time.monotonic(), 0
        while (left := t0 + seconds - time.monotonic()) > 0:
            n += sub.recv(max(1, int(left * 1000))) is not None
        elapsed = time.monotonic() - t0
        replayed = client.status()["feed"]["messages"] - start
    return {"status_hz": n / elapsed, "replay_msgs_per_s": replayed / elapsed,
            "missed": sub.missed}
