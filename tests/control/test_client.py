"""The host client against a real server: atomic writes, timeouts, late replies, heartbeat,
telemetry gap counting, and the guard commands once the map has their registers."""

import threading
import time

import pytest
import zmq

from obcore.control import protocol as proto
from obcore.control.client import EngineClient, EngineError, EngineTimeoutError, Telemetry
from obcore.control.params import ParamError, apply
from obcore.hw.layouts import feed_array
from obcore.hw.registers import RegisterMap, to_fixed
from obcore.sim.control_bench import bench_roundtrip
from obcore.sim.engine import ModelEngine
from obcore.sim.scenarios import generate


class Counting:
    """Wraps a client's ``read``/``write`` to count the requests they send."""

    def __init__(self, client, monkeypatch):
        self.writes, self.reads = [], []
        read, write = client.read, client.write
        monkeypatch.setattr(client, "read", lambda addrs: self.reads.append(addrs) or read(addrs))
        monkeypatch.setattr(client, "write",
                            lambda pairs: self.writes.append(list(pairs)) or write(pairs))


def test_set_many_is_one_request_ending_in_commit(client, monkeypatch):
    regs = client.registers()
    seen = Counting(client, monkeypatch)
    regs.set_many({"gamma": "0.25", "q_limit": 40, ("leverage", 1): 3})
    assert len(seen.writes) == 1
    assert seen.writes[0][-1] == (regs.regmap["commit"].addr, 1)
    assert len(seen.writes[0]) == 4
    regs.set("tau", 2)
    assert len(seen.writes) == 2 and seen.writes[1][-1][0] == regs.regmap["commit"].addr
    assert (regs.get("gamma"), regs.get("q_limit"), regs.get("leverage", 1)) == (0.25, 40, 3)


def test_a_bad_value_writes_nothing(client, monkeypatch):
    regs = client.registers()
    before = regs.get_many([("gamma", 0), ("k", 0), ("kappa_term", 0), ("tau", 0)])
    seen = Counting(client, monkeypatch)
    with pytest.raises(ValueError, match="q_limit = -1 is out of range"):
        regs.set_many({"gamma": "0.3", "q_limit": -1})
    with pytest.raises(ParamError) as info:
        apply(regs, {"gamma": "0.3", "k": "x", "tau": 1e9, "nope": 1})
    assert len(info.value.problems) == 3
    assert seen.writes == []
    assert regs.get_many(list(before)) == before


def test_wide_registers_are_read_in_one_request(client, monkeypatch):
    regs = client.registers()
    seen = Counting(client, monkeypatch)
    cycle = regs.get("cycle")
    assert cycle > 0 and len(seen.reads) == 1 and len(seen.reads[0]) == 2


def test_an_absent_engine_times_out_with_a_clear_message():
    with EngineClient("tcp://127.0.0.1:9", timeout=150) as c:
        with pytest.raises(TimeoutError, match=r"^engine at tcp://127\.0\.0\.1:9 did not "
                                               r"answer within 150 ms"):
            c.hello()
        with pytest.raises(EngineTimeoutError):   # and again: the client is still usable
            c.status()
    with pytest.raises(ValueError, match="cannot connect"):
        EngineClient("nonsense://x")


def test_late_replies_are_discarded():
    """A fake engine answers request 1 after the client gave up, and request 2 twice."""
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.linger = 0
    port = router.bind_to_random_port("tcp://127.0.0.1")

    def fake():
        for _ in range(2):
            ident, head = router.recv_multipart()
            req = proto.decode_request([head])
            if req.id == 1:
                continue   # never answered in time
            for rid in (1, 999, req.id):
                router.send_multipart([ident, *proto.encode_reply(rid, {"n": rid})])

    thread = threading.Thread(target=fake)
    thread.start()
    try:
        with EngineClient(f"tcp://127.0.0.1:{port}", timeout=300) as c:
            with pytest.raises(EngineTimeoutError):
                c.request("hello", timeout=100)
            assert c.request("hello")[0] == {"n": 2}
    finally:
        thread.join(timeout=5)
        router.close()
        ctx.term()


def test_feed_splits_big_batches(client, monkeypatch):
    msgs = feed_array([m for _, m in generate("calm", 5)][:250])
    monkeypatch.setattr(proto, "MAX_FEED", 100)
    counts, obs = client.feed(msgs, dump="obs")
    assert counts["count"] == 250 and len(obs) == 250
    expected, _ = ModelEngine().run(msgs)
    fields = ["venue", "kind", "seq", "status", "best_bid", "best_ask", "bid_depth",
              "ask_depth"]
    assert (obs[fields] == expected[fields]).all()


def test_gap_detection_counts_missed_messages():
    telemetry = Telemetry("tcp://127.0.0.1:9")
    try:
        def msg(topic, seq, run="a"):
            return {"topic": topic, "seq": seq, "run": run}
        for m in (msg("status", 0), msg("status", 1), msg("event", 7), msg("status", 4),
                  msg("event", 8), msg("event", 12)):
            telemetry.track(m)
        assert (telemetry.received, telemetry.missed) == (6, 2 + 3)
        telemetry.track(msg("status", 0, run="b"))   # the server restarted: no gap
        assert telemetry.missed == 5
    finally:
        telemetry.close()


def test_telemetry_from_a_live_server_has_no_gaps(server, client):
    sub = client.subscribe(topics=("status",))
    seqs = []
    while len(seqs) < 5:
        msg = sub.recv(1000)
        assert msg is not None, "no telemetry"
        seqs.append(msg["seq"])
    assert seqs == list(range(seqs[0], seqs[0] + 5)) and sub.missed == 0


def test_heartbeat_stops_on_a_map_without_the_register(serve):
    engine = ModelEngine()
    engine.regmap = RegisterMap([r for r in engine.regmap if r.name != "heartbeat"])
    engine.reset()
    with serve(engine, pub=False) as (_, c):
        c.start_heartbeat(10)
        c._heartbeat[0].join(timeout=5)
        assert isinstance(c.heartbeat_error, EngineError) and c.heartbeats == 0
        assert str(c.heartbeat_error) == "not available: this gateware has no `heartbeat` register"
        c.stop_heartbeat()


def test_guard_commands_reach_the_guard(serve):
    """heartbeat, kill, arm and clear as the reference engine's guard sees them."""
    engine = ModelEngine()
    engine.reset()
    engine.csr.raise_flags("pull_reasons", 0b1010)
    names = {r.element(0): r.name for r in engine.regmap if r.access == "wo"}
    written, write = [], engine.write
    engine.write = lambda addr, word: (written.append(names.get(addr)), write(addr, word))[1]
    with serve(engine, pub=False) as (_, c):
        c.start_heartbeat(5)
        for _ in range(200):
            if c.heartbeats >= 3:
                break
            time.sleep(0.01)
        c.stop_heartbeat()
        assert c.heartbeats >= 3 and c.heartbeat_error is None
        assert c.kill() == {"register": "kill"}
        c.arm()
        regs = c.registers()
        before = regs.get("pull_reasons")
        # Bit 3 (rate) was raised by hand, its condition is gone: a clear sticks. Bit 1 (kill)
        # still holds (the arm is refused on the empty book), so it latches again at once.
        assert before & 0b1010 == 0b1010
        assert c.clear(0b1000) == {"register": "pull_reasons"}
        assert regs.get("pull_reasons") == before & ~0b1000
        c.clear()
        assert regs.get("pull_reasons") & 0b1010 == 0b10
        with pytest.raises(EngineError, match="out of range"):
            c.request("kill", value=2)
    commands = [name for name in written if name in ("heartbeat", "kill", "arm")]
    assert commands.count("heartbeat") >= 3 and commands[-2:] == ["kill", "arm"]


def test_bench_roundtrip_reports_percentiles(server):
    result = bench_roundtrip(server.endpoint, n=50)
    assert result["n"] == 50 and 0 < result["p50_us"] <= result["p99_us"]
    assert result["client_cpu_us"] > 0   # the writes and their replies took CPU here


def test_values_travel_exactly(client):
    regs = client.registers()
    for name in ("gamma", "k", "tau", "misalign_max"):
        reg = regs.regmap[name]
        lo, hi = reg.limits()
        for value in (lo, hi):
            regs.set(name, value)
            assert to_fixed(reg, regs.get(name)) == to_fixed(reg, value)
