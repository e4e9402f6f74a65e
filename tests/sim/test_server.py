"""The sim server over real loopback sockets: every command, bad input, vanished clients,
telemetry, CURVE authentication, and `obcore sim` as a process."""

import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from contextlib import contextmanager

import numpy as np
import pytest
import zmq

from obcore.control import protocol as proto
from obcore.control.client import EngineClient, EngineError, EngineRejectedError
from obcore.hw.layouts import FEED_DTYPE, FeedKind, feed_array
from obcore.hw.registers import RegisterMap
from obcore.sim.engine import ModelEngine, open_engine
from obcore.sim.publisher import FLUSH_S, LogWriter, ScenarioFeed
from obcore.sim.scenarios import generate
from obcore.sim.server import Server

LOCAL = "tcp://127.0.0.1:*"
SCENARIO = feed_array([m for _, m in generate("calm", 3)][:600])


def test_hello_identifies_the_engine(server, client):
    info = client.hello()
    regmap = server.engine.regmap
    assert info["engine"] == "sim" and info["backend"] == server.backend
    assert (info["protocol"], info["map_version"]) == (proto.VERSION, 1)
    assert (info["venues"], info["levels"]) == (2, 16)
    assert (info["registers"], info["words"]) == (len(regmap), regmap.size)
    assert info["pub"] == server.pub_endpoint
    assert re.fullmatch(r"anonymous@127\.0\.0\.1#[0-9a-f]+", info["you"])


def test_read_write_feed_status_reset(server, client):
    regmap = server.engine.regmap
    tau = regmap["tau"].addr
    assert client.write([(tau, 5 << 16), (regmap["commit"].addr, 1)]) == 2
    assert client.read([tau, regmap["id"].addr]) == [5 << 16, 0x0BC0_4E00]

    counts, obs = client.feed(SCENARIO, dump="obs")
    reference = open_engine("model")
    expected, _ = reference.run(SCENARIO)
    reference.close()
    assert counts["count"] == len(SCENARIO) and counts["applied"] == int(
        np.count_nonzero(expected["status"] & 1))
    assert np.array_equal(obs[["best_bid", "best_ask", "bid_depth", "ask_depth", "status"]],
                          expected[["best_bid", "best_ask", "bid_depth", "ask_depth",
                                    "status"]])
    _, orders = client.feed(SCENARIO[:0], dump="orders")
    assert orders.dtype.names[0] == "kind" and len(orders) == 0

    regs = client.status()["regs"]
    venue_msgs = int(np.count_nonzero(SCENARIO["kind"] != FeedKind.TICK))
    assert regs["msg_count"] == [venue_msgs, 0]
    assert regs["best_bid"][0] == int(expected["best_bid"][-1]) > 0
    client.reset()
    assert client.status()["regs"]["msg_count"] == [0, 0]
    assert client.read([tau]) == [1 << 16]   # registers back to their reset values


def test_native_engine_serves_what_the_reference_model_serves(serve):
    """The Verilated engine behind the server (its bulk bus reads and writes) against the
    reference model behind another: same words read, same status snapshot, cycle for cycle."""
    replies = []
    for kind in ("verilator", "model"):
        engine = open_engine(kind)
        regmap = engine.regmap
        with serve(engine, pub=False) as (_, c):
            c.write([(regmap["tau"].addr, 7 << 16), (regmap["commit"].addr, 1)])
            c.feed(SCENARIO)
            words = c.read(range(regmap.size))
            replies.append((words, c.status()["regs"], c.read([regmap["cycle"].addr])))
        engine.close()
    (words, status, cycle), reference = replies
    assert words[regmap["tau"].addr] == 7 << 16 and status["msg_count"][0] > 0
    assert (words, status, cycle) == reference


@pytest.mark.parametrize("command", list(proto.GUARD))
def test_guard_commands_need_their_register(server, client, command):
    register = proto.GUARD[command]
    if register in server.engine.regmap:   # the guard gateware is in this build
        assert client.request(command)[0] == {"register": register}
    else:
        with pytest.raises(EngineError, match=rf"^not available: this gateware has no "
                                              rf"`{register}` register$"):
            client.request(command)


def test_guard_commands_say_not_available_on_a_map_without_the_guard(serve):
    engine = ModelEngine()
    engine.regmap = RegisterMap([r for r in engine.regmap if r.name not in
                                 proto.GUARD.values()])
    engine.reset()
    with serve(engine, pub=False) as (_, c):
        for command, register in proto.GUARD.items():
            with pytest.raises(EngineError) as info:
                c.request(command)
            assert str(info.value) == (f"not available: this gateware has no `{register}` "
                                       f"register")
        assert c.hello()["registers"] == len(engine.regmap)   # and it keeps serving


def test_writes_are_validated_whole_and_logged(server, client, caplog):
    regmap = server.engine.regmap
    tau = regmap["tau"].addr
    with pytest.raises(EngineError, match="outside the register map"):
        client.write([(tau, 7), (regmap.size, 1)])
    assert client.read([tau]) == [1 << 16]   # the good word before the bad one was not written
    gamma, commit = regmap["gamma"].addr, regmap["commit"].addr
    with caplog.at_level(logging.INFO, logger="obcore.sim"):
        before = time.time()
        client.write([(gamma, 1 << 23), (commit, 1)])
        client.write([(regmap["cycle"].addr + 1, 3)])
        after = time.time()
        # Logged in a batch after the replies, within FLUSH_S and a turn of the loop.
        deadline = time.monotonic() + 10
        while (len(records := [r for r in caplog.records if r.name == "obcore.sim" and
                               r.getMessage().startswith("write from")]) < 2
               and time.monotonic() < deadline):
            time.sleep(0.01)
    lines = [r.getMessage() for r in records]
    assert re.fullmatch(r"write from anonymous@127\.0\.0\.1#[0-9a-f]+: gamma=0\.5 commit=1",
                        lines[0]), lines
    assert lines[1].endswith(": cycle.w1=0x3"), lines
    # Each stamped with the time of its request, not of the batch.
    assert before <= records[0].created <= records[1].created <= after


@contextmanager
def raw_socket(server, kind=zmq.DEALER):
    ctx = zmq.Context()
    sock = ctx.socket(kind)
    sock.linger = 0
    sock.connect(server.endpoint)
    try:
        yield sock
    finally:
        sock.close()
        ctx.term()


def ask(sock, frames, timeout=2000):
    sock.send_multipart(frames)
    assert sock.poll(timeout), "no reply"
    return proto.decode_reply(sock.recv_multipart())


def wait_for(sub, predicate, timeout=20.0):
    """The first telemetry message satisfying ``predicate`` within ``timeout`` seconds (generous:
    a loaded 2-core CI machine delays the server's periodic snapshots; a pass returns at once)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = sub.recv(50)
        if msg is not None and predicate(msg):
            return msg
    raise AssertionError("no such telemetry message")


@pytest.mark.parametrize("frames, error", [
    ([b"\x00\xff garbage"], "not UTF-8 JSON"),
    ([b'{"v": 1, "id": 1, "cmd": "hello"'], "not UTF-8 JSON"),
    ([json.dumps({"v": 2, "id": 1, "cmd": "hello"}).encode()], "version 2 is not supported"),
    ([json.dumps({"v": 1, "id": 1}).encode()], "unknown command None"),
    ([json.dumps({"v": 1, "id": 1, "cmd": "format_disk"}).encode()], "unknown command"),
    ([json.dumps({"v": 1, "id": 1, "cmd": "read"}).encode()], "missing field `addrs`"),
    ([json.dumps({"v": 1, "id": 1, "cmd": "read", "addrs": [1 << 20]}).encode()],
     "outside the register map"),
    ([json.dumps({"v": 1, "id": 1, "cmd": "hello"}).encode()] * 3, "not 3 frames"),
    ([json.dumps({"v": 1, "id": 1, "cmd": "feed", "count": 3}).encode(), b"\0" * 47],
     "is 47 bytes, but 3 messages are 48"),
    ([json.dumps({"v": 1, "id": 1, "cmd": "feed", "count": 1}).encode(), b"\0" * (20 << 20)],
     "is 20971520 bytes"),
    ([b" " * (proto.MAX_JSON + 1)], "the limit is"),
])
def test_malformed_requests_get_errors_and_the_server_keeps_serving(server, frames, error):
    with raw_socket(server) as sock:
        reply = ask(sock, frames)
        assert not reply.ok and error in reply.error and "\n" not in reply.error
        assert ask(sock, proto.encode_request(2, "hello")).ok


def test_a_message_over_the_transport_limit_drops_only_its_connection(server, client):
    with raw_socket(server) as sock:
        sock.send_multipart([b"{}", bytes(proto.MAX_MESSAGE + 1)])
        assert not sock.poll(300)   # no reply: the engine hung up before reading it
    assert client.hello()["engine"] == "sim"


def test_req_clients_are_answered_too(server):
    with raw_socket(server, zmq.REQ) as sock:
        reply = ask(sock, proto.encode_request(1, "hello"))
        assert reply.ok and reply.id == 1


def test_a_client_killed_mid_request_does_not_wedge_the_server(server, client):
    script = textwrap.dedent(f"""
        import os, signal, zmq
        sock = zmq.Context().socket(zmq.DEALER)
        sock.connect({server.endpoint!r})
        head = b'{{"v": 1, "id": 1, "cmd": "feed", "count": 600}}'
        for _ in range(20):
            sock.send_multipart([head, bytes({len(SCENARIO) * FEED_DTYPE.itemsize})])
        sock.poll(5000)                      # the server has started answering
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert client.hello()["engine"] == "sim"
    assert client.status()["regs"]["malformed_count"] > 0   # its zero messages did arrive


def test_telemetry_is_sequenced_and_reports_events(server, client):
    regmap = server.engine.regmap
    sub = client.subscribe()
    first = wait_for(sub, lambda m: m["topic"] == "status")   # the subscription has taken
    client.feed(SCENARIO)
    client.write([(regmap["tau"].addr, 9), (regmap["commit"].addr, 1)])
    checks = {"obs": lambda m: m["messages"] == len(SCENARIO),
              "write": lambda m: m["what"] == "tau=0.0001373291016 commit=1",
              "counters": lambda m: m["changed"].get("msg_count", [0])[0] > 0}
    events = {}

    def wanted(msg):   # in any order: a write within FLUSH_S, the rest per period
        kind = msg.get("event")
        if kind in checks and kind not in events and checks[kind](msg):
            events[kind] = msg
        return len(events) == len(checks)

    wait_for(sub, wanted)
    assert events["obs"]["last"]["0"]["best_bid"] > 0
    assert events["write"]["who"].startswith("anonymous@127.0.0.1#")
    last = wait_for(sub, lambda m: m["topic"] == "status")
    assert last["seq"] > first["seq"] and last["run"] == first["run"] == server.run_id
    assert sub.missed == 0 and set(last["status"]["regs"]) >= {"msg_count", "book_flags"}


def test_flag_changes_are_published(client):
    sub = client.subscribe()
    wait_for(sub, lambda m: m["topic"] == "status")
    gap = feed_array([{"kind": FeedKind.LEVEL_SET, "venue": 1, "side": 0, "flags": 0,
                       "seq": s, "price": 100, "size": 1} for s in (1, 5)])
    client.feed(gap)
    flags = wait_for(sub, lambda m: m.get("event") == "flags")
    assert (flags["register"], flags["index"], flags["old"], flags["new"] & 1) == (
        "book_flags", 1, 0, 1)


def test_curve_known_key_works_unknown_key_gets_nothing(tmp_path):
    proto.create_keys(tmp_path, "alice")
    proto.create_keys(tmp_path / "elsewhere", "mallory")   # a valid key the engine never saw
    (tmp_path / "mallory.key_secret").write_bytes(
        (tmp_path / "elsewhere" / "mallory.key_secret").read_bytes())
    engine = open_engine("model")
    tau = engine.regmap["tau"].addr
    try:
        with pytest.raises(ValueError, match="not a loopback address: serving it needs --curve"):
            Server(engine, "tcp://0.0.0.0:*", None)
        with Server(engine, LOCAL, LOCAL, curve=tmp_path).running() as srv, \
                EngineClient(srv.endpoint, timeout=2000, curve=(tmp_path, "alice")) as alice:
            assert alice.hello()["you"].startswith("alice@127.0.0.1#")
            with EngineClient(srv.endpoint, srv.pub_endpoint, timeout=300,
                              curve=(tmp_path, "mallory")) as mallory:
                with pytest.raises(EngineRejectedError, match="refused this client's "
                                                              "CURVE key"):
                    mallory.write([(tau, 0)])
                sub = mallory.subscribe()
                assert sub.recv(300) is None and sub.received == 0
            with EngineClient(srv.endpoint, timeout=300) as plain, \
                    pytest.raises(EngineRejectedError, match="security handshake"):
                plain.read([tau])
            assert alice.read([tau]) == [1 << 16]
            assert alice.subscribe().recv(2000)["topic"] == "status"   # telemetry is CURVE too
    finally:
        engine.close()


def test_scenario_feed_paces_one_batch_per_tick():
    feed = ScenarioFeed("calm", 1, "realtime", tick_ms=10)
    first = feed.next_batch(100.0)
    assert first["kind"][-1] == FeedKind.TICK and FeedKind.TICK not in first["kind"][:-1]
    assert feed.next_batch(100.005) is None and feed.wait_s(100.005) == pytest.approx(0.005)
    assert feed.next_batch(100.010) is not None
    assert feed.next_batch(105.0) is not None and feed.due == pytest.approx(105.010)  # no burst
    fast = ScenarioFeed("calm", 1, "fast")
    total = 0
    while (batch := fast.next_batch(0.0)) is not None:
        total += len(batch)
    assert fast.done and total == fast.sent == len(list(generate("calm", 1)))
    again = ScenarioFeed("calm", 1, "fast", repeat=True)
    first = [again.next_batch(0.0, 4096) for _ in range(2)]
    second = again.next_batch(0.0, 10)   # the run again, from its snapshot
    calm = feed_array([m for _, m in generate("calm", 1)])
    assert np.array_equal(np.concatenate(first), calm) and np.array_equal(second, calm[:10])
    assert (again.runs, again.done) == (2, False)
    with pytest.raises(ValueError, match="unknown scenario"):
        ScenarioFeed("tsunami", 1)


def test_obcore_sim_serves_a_scenario_and_stops_on_sigterm():
    cmd = [sys.executable, "-m", "obcore.control.cli", "sim", "--engine", "model", "--bind",
           LOCAL, "--pub", LOCAL, "--scenario", "calm", "--pace", "realtime", "--tick-ms", "2",
           "--telemetry-hz", "50"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONWARNINGS": "error"})
    try:
        line = proc.stderr.readline()
        endpoint = re.search(r"on (tcp://\S+),", line)[1]
        with EngineClient(endpoint, timeout=3000) as c:
            before = c.status()["regs"]["msg_count"][0]
            time.sleep(0.1)
            assert before < c.status()["regs"]["msg_count"][0]   # the feed runs at its pace
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        assert time.monotonic() - started < 2
        assert "stopped after" in proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()


def test_log_writer_holds_lines_until_due_and_writes_all_on_close():
    """The server's log handler: the standard Formatter's text, written in one block once
    FLUSH_S has passed (or on close), nothing before and nothing lost."""
    fmt = "%(asctime)s obcore sim: %(message)s"
    stream = io.StringIO()
    handler = LogWriter(stream, fmt)
    records = [logging.LogRecord("obcore.sim", logging.INFO, __file__, 1, "write from %s: %s",
                                 ("a@b#01", f"tau={i}"), None) for i in range(4)]
    # Time stamps within one second and across seconds: the cached seconds must follow.
    for record, created in zip(records, (1e9 + 0.25, 1e9 + 0.75, 1e9 + 1.5, 1e9 + 61.0),
                               strict=True):
        record.created, record.msecs = created, int(created % 1 * 1000)
    expected = [logging.Formatter(fmt).format(r) for r in records]
    start = time.monotonic()
    for record in records[:3]:
        handler.handle(record)
    handler.flush_due(start)
    assert stream.getvalue() == ""   # not due yet
    handler.flush_due(time.monotonic() + FLUSH_S)
    assert stream.getvalue().splitlines() == expected[:3]
    handler.handle(records[3])
    handler.close()
    assert stream.getvalue().splitlines() == expected
