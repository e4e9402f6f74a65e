"""Running the synthesis tools: progress from their logs, errors, and stopping a stalled route."""

import contextlib
import os
import re
import shlex
import signal
import subprocess
import threading
import time

__all__ = ["ROUTE_PATIENCE", "ROUTE_FLOOR", "RouteWatch", "run_steps"]

# Iterations of nextpnr's router2 without a new lowest count of overused wires, that count
# still above ROUTE_FLOOR, before a build is stopped as stalled. Measured on this project's
# logs: the routes that converged went up to 61 iterations without a new low, but only at
# 15 overused wires or fewer; the stalls sat at 250-400 and more for 37 iterations while
# the count rose to 5x (docs/boards.md).
ROUTE_PATIENCE = 20
ROUTE_FLOOR = 100
_ROUTER2 = re.compile(rb"iter=(\d+) wires=\d+ overused=(\d+)")


class RouteWatch:
    """Follows router2's iterations; says when it has stopped making progress.

    ``patience``: iterations without a new lowest overuse, the lowest above
    :data:`ROUTE_FLOOR`, before :meth:`feed` reports a stall (0: never)."""

    def __init__(self, patience=ROUTE_PATIENCE):
        if not (isinstance(patience, int) and not isinstance(patience, bool) and patience >= 0):
            raise ValueError(f"route patience must be a non-negative integer, not {patience!r}")
        self.patience = patience
        self.iteration, self.overused = 0, None
        self.best, self.best_at = None, 0

    def feed(self, text):
        """Take router2 lines from ``text`` (bytes; repeats are ignored). Returns why the
        route counts as stalled, or None."""
        for it, over in _ROUTER2.findall(text):
            it, over = int(it), int(over)
            if it <= self.iteration:
                continue
            self.iteration, self.overused = it, over
            if self.best is None or over < self.best:
                self.best, self.best_at = over, it
        if (self.patience and self.best is not None and self.best > ROUTE_FLOOR
                and self.iteration - self.best_at >= self.patience):
            return (f"router2 stalled: {self.overused:,} overused wires at iteration "
                    f"{self.iteration}, none below {self.best:,} (iteration {self.best_at}) "
                    f"for {self.iteration - self.best_at} iterations; this netlist does not "
                    f"route at this seed: try another --seed or a smaller configuration "
                    f"(--route-patience 0 never stops)")
        return None

    def status(self):
        """A short progress note, or "" before the first iteration."""
        if self.overused is None:
            return ""
        return (f", iteration {self.iteration}: {self.overused:,} overused wires "
                f"(lowest {self.best:,} at {self.best_at})")


class _Progress:
    """Prints the build's stage and elapsed time, read from the tails of the tools' logs."""

    # In the order they happen; a stage is reached when its log's tail shows the marker.
    _STAGES = (("top.rpt", b"", "synthesis (yosys)"),
               ("top.rpt", b"ABC", "synthesis: technology mapping (yosys)"),
               ("top.tim", b"Info:", "pack (nextpnr)"),
               ("top.tim", b"lacer", "place (nextpnr)"),
               ("top.tim", b"oute", "route (nextpnr)"))
    _ROUTE = len(_STAGES) - 1
    _TAIL = 16384

    def __init__(self, folder, start, out, patience):
        self.folder, self.start, self.out = folder, start, out
        self.stage, self.done = -1, threading.Event()
        self.route = RouteWatch(patience)
        self.stalled, self.process = None, None

    def say(self, what):
        elapsed = time.monotonic() - self.start
        print(f"[{int(elapsed) // 60:3d}:{int(elapsed) % 60:02d}] {what}", file=self.out,
              flush=True)

    def _tail(self, name):
        path = self.folder / name
        if not path.exists():
            return None
        with open(path, "rb") as f:
            f.seek(max(0, path.stat().st_size - self._TAIL))
            return f.read()

    def watch(self):
        last_note = time.monotonic()
        while not self.done.wait(2.0):
            reached = self.stage
            for i in range(self.stage + 1, len(self._STAGES)):
                name, marker, _ = self._STAGES[i]
                tail = self._tail(name)
                if tail is not None and marker in tail:
                    reached = i
            if reached != self.stage:
                self.stage = reached
                self.say(self._STAGES[reached][2])
                last_note = time.monotonic()
            if self.stage == self._ROUTE and self.stalled is None:
                self.stalled = self.route.feed(self._tail("top.tim") or b"")
                if self.stalled is not None:
                    self.say(self.stalled)
                    _stop(self.process)
            if time.monotonic() - last_note > 60:
                stage = self._STAGES[self.stage][2] if self.stage >= 0 else "starting"
                route = self.route.status() if self.stage == self._ROUTE else ""
                self.say(f"{stage}: still running{route}")
                last_note = time.monotonic()


def _stop(process):
    """End a step's tools: they run in a session of their own (``sh`` and its children)."""
    if process is not None and process.poll() is None:
        with contextlib.suppress(ProcessLookupError):   # ended meanwhile
            os.killpg(process.pid, signal.SIGTERM)


def _errors(folder):
    found = []
    for name in ("top.rpt", "top.tim", "build.log"):
        path = folder / name
        if path.exists():
            found += [line.strip() for line in path.read_text(errors="replace").splitlines()
                      if line.startswith("ERROR") or "ERROR:" in line]
    return found[-5:]


def run_steps(folder, steps, env, start, log, what, patience=ROUTE_PATIENCE):
    """Run ``steps`` (argument lists) in ``folder``, output to ``build.log``, printing ``what``
    and then the stage reached every minute (router2's iteration and overuse while routing);
    raise with the logs' errors if one fails, or with the reason if the route stalls
    (``patience``: :class:`RouteWatch`)."""
    for stale in ("top.rpt", "top.tim"):
        (folder / stale).unlink(missing_ok=True)
    progress = _Progress(folder, start, log, patience)
    progress.say(what)
    watcher = threading.Thread(target=progress.watch, daemon=True)
    watcher.start()
    try:
        with open(folder / "build.log", "w") as sink:
            for step in steps:
                progress.process = subprocess.Popen(step, cwd=folder, env=env, stdout=sink,
                                                    stderr=subprocess.STDOUT,
                                                    start_new_session=True)
                failed = progress.process.wait()
                if progress.stalled is not None:
                    raise RuntimeError(f"stopped after {time.monotonic() - start:.0f} s: "
                                       f"{progress.stalled} (logs in {folder})")
                if failed:
                    detail = "\n  ".join(_errors(folder)) or f"see {folder / 'build.log'}"
                    raise RuntimeError(f"`{shlex.join(step)}` failed after "
                                       f"{time.monotonic() - start:.0f} s (logs in {folder}):"
                                       f"\n  {detail}")
    finally:
        _stop(progress.process)   # interrupted (Ctrl-C): no orphaned tools
        progress.done.set()
        watcher.join()
    progress.say("done")
