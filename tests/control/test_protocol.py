"""The control protocol: framing round trips, every malformed request refused, docs, keys."""

import json
from pathlib import Path

import pytest

from obcore.control import protocol as proto
from obcore.hw.layouts import FEED

DOCS = Path(__file__).resolve().parents[2] / "docs"


def frame(obj):
    return json.dumps(obj).encode()


def test_request_round_trip_fills_defaults():
    frames = proto.encode_request(7, "feed", b"\0" * FEED.nbytes * 2, count=2)
    req = proto.decode_request(frames)
    assert (req.id, req.cmd, req.args, len(req.data)) == (
        7, "feed", {"count": 2, "dump": "none"}, 2 * FEED.nbytes)
    req = proto.decode_request(proto.encode_request(8, "write", writes=[[1, 0xFFFF_FFFF]]))
    assert req.args == {"writes": [[1, 0xFFFF_FFFF]]} and req.data is None
    assert proto.decode_request(proto.encode_request(9, "kill")).args == {"value": 1}


@pytest.mark.parametrize("frames, error, req_id", [
    ([b"\xff\xfe garbage"], "not UTF-8 JSON", None),
    ([b"{not json"], "not UTF-8 JSON", None),
    ([b"[1, 2]"], "must be a JSON object", None),
    ([frame({"v": 99, "id": 3, "cmd": "hello"})], "version 99 is not supported", 3),
    ([frame({"id": 3, "cmd": "hello"})], "version None is not supported", 3),
    ([frame({"v": 1, "cmd": "hello"})], "no `id`", None),
    ([frame({"v": 1, "id": -1, "cmd": "hello"})], "no `id`", None),
    ([frame({"v": 1, "id": 4})], "unknown command None", 4),
    ([frame({"v": 1, "id": 4, "cmd": "launch"})], "unknown command 'launch'", 4),
    ([frame({"v": 1, "id": 5, "cmd": "read"})], "missing field `addrs`", 5),
    ([frame({"v": 1, "id": 5, "cmd": "read", "addrs": [1, "2"]})], "`addrs` must be", 5),
    ([frame({"v": 1, "id": 5, "cmd": "read", "addrs": [True]})], "`addrs` must be", 5),
    ([frame({"v": 1, "id": 5, "cmd": "read", "addrs": list(range(proto.MAX_WORDS + 1))})],
     "`addrs` must be", 5),
    ([frame({"v": 1, "id": 5, "cmd": "hello", "extra": 1})], "unknown field(s) extra", 5),
    ([frame({"v": 1, "id": 6, "cmd": "write", "writes": [[0, 1 << 32]]})], "`writes` must", 6),
    ([frame({"v": 1, "id": 6, "cmd": "write", "writes": [[0]]})], "`writes` must", 6),
    ([frame({"v": 1, "id": 7, "cmd": "feed", "count": 1})], "needs a binary frame", 7),
    ([frame({"v": 1, "id": 7, "cmd": "feed", "count": 2}), b"\0" * 17], "is 17 bytes", 7),
    ([frame({"v": 1, "id": 7, "cmd": "feed", "count": proto.MAX_FEED + 1}), b""],
     "`count` must be", 7),
    ([frame({"v": 1, "id": 7, "cmd": "feed", "count": 0, "dump": "all"}), b""],
     "`dump` must be", 7),
    ([frame({"v": 1, "id": 8, "cmd": "hello"}), b"x"], "takes no binary frame", 8),
    ([frame({"v": 1, "id": 8, "cmd": "hello"}), b"x", b"y"], "not 3 frames", None),
    ([], "not 0 frames", None),
    ([b"{" + b" " * proto.MAX_JSON + b"}"], "the limit is", None),
    ([frame({"v": 1, "id": 9, "cmd": "kill", "value": float("nan")})], "JSON number", None),
])
def test_malformed_requests_are_refused(frames, error, req_id):
    with pytest.raises(proto.ProtocolError) as info:
        proto.decode_request(frames)
    assert error in str(info.value)
    assert info.value.req_id == req_id
    assert "\n" not in str(info.value)


def test_the_host_checks_its_own_requests_too():
    with pytest.raises(proto.ProtocolError, match="unknown command"):
        proto.encode_request(1, "launch")
    with pytest.raises(proto.ProtocolError, match="missing field `addrs`"):
        proto.encode_request(1, "read")
    with pytest.raises(proto.ProtocolError, match="needs a binary frame"):
        proto.encode_request(1, "feed", count=0)


def test_replies_round_trip_and_errors_are_one_line():
    ok = proto.decode_reply(proto.encode_reply(3, {"words": [1, 2]}, b"abc"))
    assert (ok.id, ok.ok, ok.result, ok.data) == (3, True, {"words": [1, 2]}, b"abc")
    bad = proto.decode_reply(proto.encode_reply(None, error="two\nlines  here"))
    assert (bad.id, bad.ok, bad.error, bad.result) == (None, False, "two lines here", {})
    with pytest.raises(proto.ProtocolError, match="reply of protocol version 2"):
        proto.decode_reply([frame({"v": 2, "id": 1, "ok": True})])
    with pytest.raises(proto.ProtocolError, match="limit"):
        proto.encode_reply(1, {"x": "y" * proto.MAX_JSON})


def test_telemetry_round_trip():
    frames = proto.encode_telemetry("status", 41, "abcd", {"status": {"regs": {}}})
    assert frames[0] == b"status"
    msg = proto.decode_telemetry(frames)
    assert (msg["v"], msg["topic"], msg["seq"], msg["run"]) == (proto.VERSION, "status", 41,
                                                                 "abcd")
    assert msg["time"] > 0
    with pytest.raises(proto.ProtocolError):
        proto.decode_telemetry([b"event", frames[1]])   # topic frame and body disagree
    with pytest.raises(proto.ProtocolError):
        proto.decode_telemetry(frames[:1])



def test_telemetry_with_a_field_encoded_beforehand_reads_the_same():
    snapshot = {"regs": {"best_bid": [1000, 0], "gamma": 0.25}, "feed": None}
    plain = proto.decode_telemetry(proto.encode_telemetry("status", 3, "ab", {
        "status": snapshot, "n": 1}))
    spliced = proto.decode_telemetry(proto.encode_telemetry(
        "status", 3, "ab", {"n": 1}, status=proto.encode_json(snapshot)))
    assert spliced.pop("time") > 0 and plain.pop("time") > 0
    assert spliced == plain and spliced["status"] == snapshot


@pytest.mark.parametrize("endpoint, local", [
    ("tcp://127.0.0.1:5555", True), ("tcp://127.0.0.2:*", True), ("tcp://localhost:1", True),
    ("tcp://[::1]:5555", True), ("ipc:///tmp/obcore", True), ("inproc://x", True),
    ("tcp://0.0.0.0:5555", False), ("tcp://*:5555", False), ("tcp://10.0.0.5:5555", False),
    ("tcp://eth0:5555", False),
])
def test_loopback_detection(endpoint, local):
    assert proto.is_loopback(endpoint) is local


def test_key_folder_layout(tmp_path):
    proto.create_keys(tmp_path, "alice", "bob")
    public, secret, names = proto.server_keys(tmp_path)
    assert len(public) == len(secret) == 40
    assert sorted(names.values()) == ["alice", "bob"]
    server, alice_public, alice_secret = proto.client_keys(tmp_path, "alice")
    assert server == public and names[alice_public.decode()] == "alice"
    proto.create_keys(tmp_path)                 # the server pair is kept, not replaced
    assert proto.server_keys(tmp_path)[0] == public
    with pytest.raises(ValueError, match="cannot read CURVE key"):
        proto.client_keys(tmp_path, "mallory")


def test_protocol_doc_is_current_and_complete():
    text = proto.protocol_doc()
    assert (DOCS / "protocol.md").read_text() == text, "docs/protocol.md is stale"
    for name, command in proto.COMMANDS.items():
        assert f"### `{name}`" in text
        for arg in command.args:
            assert f"`{arg.name}`" in text
    for name in (*proto.TOPICS, *proto.EVENTS):
        assert f"`{name}`" in text
