"""The engine control protocol over ZeroMQ, defined once: framing, commands, telemetry, keys."""

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import zmq
import zmq.auth

from ..hw.layouts import FEED

__all__ = ["VERSION", "DEFAULT_ENDPOINT", "DEFAULT_PUB", "MAX_JSON", "MAX_WORDS", "MAX_FEED",
           "MAX_MESSAGE", "DUMPS", "GUARD", "TOPICS", "EVENTS", "Arg", "Command", "COMMANDS",
           "ProtocolError", "Request", "Reply", "encode_request", "decode_request",
           "encode_reply", "decode_reply", "encode_json", "encode_telemetry", "decode_telemetry",
           "create_keys", "server_keys", "client_keys", "is_loopback", "one_line",
           "protocol_doc"]

VERSION = 1                            # protocol version: every message carries it as `v`
DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"
DEFAULT_PUB = "tcp://127.0.0.1:5556"
MAX_JSON = 1 << 20                     # bytes in a JSON frame
MAX_WORDS = 4096                       # addresses in one `read`, words in one `write`
MAX_FEED = 1 << 16                     # feed messages in one `feed` batch (1 MiB of FEED_DTYPE)
MAX_MESSAGE = 32 << 20                 # zmq MAXMSGSIZE: a larger message drops the connection
DUMPS = ("none", "obs", "orders")
# Guard commands and the register each one writes (hw/guard.py: strobes, and the w1c latched
# reasons). The engine answers "not available" while its register map lacks the register and
# serves the command as soon as the map has it.
GUARD = {"heartbeat": "heartbeat", "arm": "arm", "kill": "kill", "clear": "pull_reasons"}
TOPICS = {"status": "a status snapshot at the telemetry rate (`status` field as in the "
                    "`status` reply); after a change the engine is re-read at most as often "
                    "as keeps those reads under a fiftieth of the server's time",
          "event": "something happened; `event` says what (below)"}
EVENTS = {"obs": "observations since the last period: `messages`, `applied`, `orders`, "
                 "`order_kinds` ({NEW, REPLACE, CANCEL, CANCEL_ALL: count} of those that "
                 "occurred), and `last` per venue (best bid/ask, depths, status bits of its "
                 "last applied message)",
          "flags": "a w1c flag register element changed: `register`, `index`, `old`, `new`",
          "counters": "counters (`*_count`, `*_errors`) changed: `changed` {name: values}",
          "write": "registers were written: `who`, `what` (names and real values)",
          "reset": "the engine was reset: `who`",
          "feed": "the server's own scenario feed ended: `state` (done), `scenario`, `seed`, "
                  "`pace`, `messages`"}


class ProtocolError(ValueError):
    """A message that breaks the protocol; ``req_id`` is the request's id when it was read."""

    def __init__(self, message, req_id=None):
        super().__init__(message)
        self.req_id = req_id


def one_line(text):
    """``text`` on one line (errors travel and print as one line)."""
    return " ".join(str(text).split())


def _uint(x):
    return type(x) is int and x >= 0


def _word(x):
    return _uint(x) and x <= 0xFFFF_FFFF


_KINDS = {   # argument kind -> (what the docs call it, check)
    "uint": ("integer ≥ 0", _uint),
    "word": ("integer 0 … 2^32−1", _word),
    "count": (f"integer 0 … {MAX_FEED}", lambda x: _uint(x) and x <= MAX_FEED),
    "addrs": (f"list of at most {MAX_WORDS} word addresses",
              lambda x: type(x) is list and len(x) <= MAX_WORDS and all(map(_uint, x))),
    "writes": (f"list of at most {MAX_WORDS} `[address, word]` pairs",
               lambda x: type(x) is list and len(x) <= MAX_WORDS and all(
                   type(p) is list and len(p) == 2 and _uint(p[0]) and _word(p[1]) for p in x)),
    "dump": (" or ".join(f'"{d}"' for d in DUMPS), lambda x: x in DUMPS),
}


@dataclass(frozen=True)
class Arg:
    """A request argument: JSON field ``name`` of ``kind`` (a key of the kinds table)."""
    name: str
    kind: str
    doc: str
    default: object = None   # None: required


@dataclass(frozen=True)
class Command:
    """A request kind: its arguments, reply fields, and binary frames in and out."""
    name: str
    doc: str
    args: tuple = ()
    reply: tuple = ()            # (field, meaning) pairs
    data_in: str = ""            # what the request's binary frame holds ("" = none allowed)
    data_out: str = ""           # what the reply's binary frame holds, if any


def _guard(name, doc, value=("word written", 1)):
    return Command(name, f"{doc}: writes `value` to the `{GUARD[name]}` register",
                   args=(Arg("value", "word", *value),),
                   reply=(("register", "the register written"),))


COMMANDS = {c.name: c for c in (
    Command("hello", "identify the engine; a host checks this before anything else",
            reply=(("engine", '"sim" or "board"'), ("backend", "what runs the gateware"),
                   ("protocol", "protocol version"), ("map_version", "register-map version "
                   "read from the engine"), ("venues", "venues built"), ("levels", "exact "
                   "levels per side"), ("registers", "registers in the map"), ("words",
                   "32-bit words in the map"), ("pub", "telemetry endpoint or null"),
                   ("telemetry_hz", "status snapshots per second"), ("you", "who the engine "
                   "thinks you are (key name, address, routing id)"))),
    Command("read", "read bus words, in the order given, in one engine transaction (the "
            "host resolves names and converts units with the map `hello` identifies)",
            args=(Arg("addrs", "addrs", "word addresses"),),
            reply=(("words", "the words read, in order"),)),
    Command("write", "write bus words in order in one engine transaction, nothing in between "
            "(the host's `set_many` sends staged words and the `commit` strobe in ONE write)",
            args=(Arg("writes", "writes", "words to write"),),
            reply=(("count", "words written"),)),
    Command("feed", "run a batch of feed messages through the engine",
            args=(Arg("count", "count", "messages in the binary frame"),
                  Arg("dump", "dump", "binary frame to return", "none")),
            reply=(("count", "messages run"), ("applied", "observations with APPLIED set"),
                   ("orders", "order messages emitted"), ("cycle", "engine cycle after")),
            data_in=f"`count` raw `FEED_DTYPE` records ({FEED.nbytes} bytes each)",
            data_out="raw `OBS_DTYPE` (`dump` obs) or `ORDER_DTYPE` (`dump` orders) records"),
    Command("status", "a snapshot of every status (ro, w1c) register in real units",
            reply=(("regs", "{name: value, or [value per element] for an array}"),
                   ("feed", "the server's own feed: scenario, messages sent, done"))),
    Command("reset", "reset the engine (book, counters, registers to reset values)",
            reply=(("cycle", "engine cycle after"),)),
    _guard("heartbeat", "tell the guard the controller is alive (restarts its deadline)"),
    _guard("arm", "allow quoting again after a pull (the guard may refuse)"),
    _guard("kill", "pull every quote now, latched until `arm`"),
    _guard("clear", "clear latched pull reasons", ("bits to clear (default all)", 0xFFFF_FFFF)),
)}
_ENVELOPE = {"v", "id", "cmd"}
_ARG_NAMES = {c.name: frozenset(a.name for a in c.args) for c in COMMANDS.values()}


class Request(NamedTuple):   # a tuple: made per message, cheaper than a dataclass
    id: int
    cmd: str
    args: dict
    data: bytes = None


class Reply(NamedTuple):
    id: object
    ok: bool
    result: dict
    error: str = ""
    data: bytes = None


def _dumps(obj):
    text = "".join(_encode(obj, 0)).encode()
    if len(text) > MAX_JSON:
        raise ProtocolError(f"message is {len(text)} bytes of JSON; the limit is {MAX_JSON}")
    return text


def _no_constant(name):
    raise ValueError(f"{name} is not a JSON number here")


def _not_json(obj):
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


# One coder each, made once: json.dumps/loads with options build a new one per call, and
# JSONEncoder.encode its C encoder too. This is that encoder: compact, no NaN or infinity,
# and no check for circular containers (a protocol message is a tree).
_encode = json.encoder.c_make_encoder(None, _not_json, json.encoder.encode_basestring_ascii,
                                      None, ":", ",", False, False, False)
_DECODER = json.JSONDecoder(parse_constant=_no_constant)


def _loads(frame, what):
    if len(frame) > MAX_JSON:
        raise ProtocolError(f"{what} frame is {len(frame)} bytes; the limit is {MAX_JSON}")
    try:
        text = str(frame, "utf-8")
        try:   # the C scanner alone: a message without surrounding white space
            obj, end = _DECODER.scan_once(text, 0)
        except (StopIteration, ValueError):
            end = None
        if end != len(text):   # JSONDecoder.decode: white space, or the error to report
            obj = _DECODER.decode(text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"{what} is not UTF-8 JSON: {one_line(exc)}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"{what} must be a JSON object, not {type(obj).__name__}")
    return obj


def _check_args(cmd, args, req_id=None):
    """``args`` with defaults filled in, or a ProtocolError naming the first problem."""
    spec = COMMANDS[cmd]
    if not _ARG_NAMES[cmd].issuperset(args):
        unknown = sorted(set(args) - _ARG_NAMES[cmd])
        raise ProtocolError(f"{cmd}: unknown field(s) {', '.join(unknown)}", req_id)
    out = {}
    for arg in spec.args:
        if arg.name not in args:
            if arg.default is None:
                raise ProtocolError(f"{cmd}: missing field `{arg.name}`", req_id)
            out[arg.name] = arg.default
            continue
        what, check = _KINDS[arg.kind]
        if not check(args[arg.name]):
            raise ProtocolError(f"{cmd}: `{arg.name}` must be a {what}", req_id)
        out[arg.name] = args[arg.name]
    return out


def _check_data(cmd, data, req_id):
    if data is not None and not COMMANDS[cmd].data_in:
        raise ProtocolError(f"{cmd} takes no binary frame", req_id)
    if data is None and COMMANDS[cmd].data_in:
        raise ProtocolError(f"{cmd} needs a binary frame: {COMMANDS[cmd].data_in}", req_id)


def encode_request(req_id, cmd, data=None, **args):
    """The frames of request ``cmd`` (checked against its spec like the engine will)."""
    if cmd not in COMMANDS:
        raise ProtocolError(f"unknown command {cmd!r}; known: {', '.join(COMMANDS)}")
    _check_args(cmd, args)
    _check_data(cmd, data, req_id)
    head = _dumps({"v": VERSION, "id": req_id, "cmd": cmd, **args})
    return [head] if data is None else [head, bytes(data)]


def decode_request(frames):
    """A checked :class:`Request` from a request's frames (routing envelope removed)."""
    if not 1 <= len(frames) <= 2:
        raise ProtocolError(f"a request is 1 JSON frame plus an optional binary frame, not "
                            f"{len(frames)} frames")
    obj = _loads(frames[0], "request")
    req_id = obj.get("id") if _uint(obj.get("id")) else None
    if obj.get("v") != VERSION:
        raise ProtocolError(f"protocol version {obj.get('v')!r} is not supported; this engine "
                            f"speaks version {VERSION}", req_id)
    if req_id is None:
        raise ProtocolError("request has no `id` (an integer ≥ 0)")
    cmd = obj.get("cmd")
    if cmd not in COMMANDS:
        raise ProtocolError(f"unknown command {cmd!r}; known: {', '.join(COMMANDS)}", req_id)
    data = bytes(frames[1]) if len(frames) == 2 else None
    _check_data(cmd, data, req_id)
    args = _check_args(cmd, {k: v for k, v in obj.items() if k not in _ENVELOPE}, req_id)
    if cmd == "feed" and len(data) != args["count"] * FEED.nbytes:
        raise ProtocolError(f"feed: the binary frame is {len(data)} bytes, but {args['count']} "
                            f"messages are {args['count'] * FEED.nbytes}", req_id)
    return Request(req_id, cmd, args, data)


def encode_reply(req_id, result=None, data=None, error=None):
    """The frames of a reply: ok with ``result`` fields (and ``data``), or a one-line error."""
    head = {"v": VERSION, "id": req_id, "ok": error is None}
    head.update({"error": one_line(error)} if error is not None else (result or {}))
    return [_dumps(head)] + ([] if data is None else [bytes(data)])


def decode_reply(frames):
    """A :class:`Reply` from a reply's frames; ProtocolError if the engine broke the rules."""
    if not 1 <= len(frames) <= 2:
        raise ProtocolError(f"a reply is 1 JSON frame plus an optional binary frame, not "
                            f"{len(frames)} frames")
    obj = _loads(frames[0], "reply")
    if obj.get("v") != VERSION or not isinstance(obj.get("ok"), bool):
        raise ProtocolError(f"reply of protocol version {obj.get('v')!r} (this host speaks "
                            f"{VERSION}) or without `ok`")
    result = {k: v for k, v in obj.items() if k not in ("v", "id", "ok", "error")}
    return Reply(obj.get("id"), obj["ok"], result, str(obj.get("error", "")),
                 bytes(frames[1]) if len(frames) == 2 else None)


def encode_json(obj):
    """``obj`` as compact JSON bytes, within the frame limit (for :func:`encode_telemetry`)."""
    return _dumps(obj)


def encode_telemetry(topic, seq, run, body, **encoded):
    """A PUB message: ``[topic, JSON]`` with version, per-topic sequence number and run id.

    ``encoded`` holds fields whose JSON the caller already has (from :func:`encode_json`),
    spliced in as they are: a snapshot published unchanged many times is encoded once.
    """
    text = _dumps({"v": VERSION, "topic": topic, "seq": seq, "run": run, "time": time.time(),
                   **body})
    if encoded:
        text = text[:-1] + b"".join(b',"%s":%s' % (name.encode(), value)
                                    for name, value in encoded.items()) + b"}"
    return [topic.encode(), text]


def decode_telemetry(frames):
    """The JSON body of a PUB message (with ``topic``, ``seq``, ``run``), checked."""
    if len(frames) != 2:
        raise ProtocolError(f"a telemetry message is 2 frames, not {len(frames)}")
    obj = _loads(frames[1], "telemetry")
    if obj.get("v") != VERSION or obj.get("topic") != bytes(frames[0]).decode(errors="replace") \
            or not _uint(obj.get("seq")):
        raise ProtocolError("telemetry message without this version, its topic or a `seq`")
    return obj


# CURVE keys. Layout of a keys folder (zmq.auth certificate files):
#   server.key, server.key_secret    the engine's pair (clients need server.key)
#   clients/NAME.key                 public keys the engine accepts; NAME is logged as who
#   NAME.key_secret                  a client's own pair (keep it on the client's machine)

def create_keys(keydir, *clients):
    """Create the server pair (if missing) and a pair per client name, authorised."""
    keydir = Path(keydir)
    (keydir / "clients").mkdir(parents=True, exist_ok=True)
    if not (keydir / "server.key_secret").exists():
        zmq.auth.create_certificates(keydir, "server")
    for name in clients:
        public, _ = zmq.auth.create_certificates(keydir, name)
        Path(public).replace(keydir / "clients" / f"{name}.key")


def _load(path, secret):
    try:
        public, sec = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read CURVE key {path}: {one_line(exc)}") from None
    if secret and sec is None:
        raise ValueError(f"{path} holds no secret key")
    return public, sec


def server_keys(keydir):
    """``(public, secret, {client public key (z85 str): name})`` from a keys folder."""
    keydir = Path(keydir)
    public, secret = _load(keydir / "server.key_secret", True)
    names = {_load(p, False)[0].decode(): p.stem
             for p in sorted((keydir / "clients").glob("*.key"))}
    return public, secret, names


def client_keys(keydir, name):
    """``(server public, own public, own secret)`` for client ``name`` from a keys folder."""
    keydir = Path(keydir)
    return (_load(keydir / "server.key", False)[0],) + _load(keydir / f"{name}.key_secret", True)


def is_loopback(endpoint):
    """Whether a ZMQ endpoint is reachable only from this machine (loopback, ipc, inproc)."""
    transport, _, rest = endpoint.partition("://")
    if transport in ("ipc", "inproc"):
        return True
    host = rest.rsplit(":", 1)[0].strip("[]")
    return host == "localhost" or host.startswith("127.") or host == "::1"


def protocol_doc():
    """Markdown for docs/protocol.md, generated from the tables above."""
    out = ["<!-- Generated by `obcore docs` from control/protocol.py; do not edit by hand. -->",
           "", "# Engine control protocol", "",
           f"Version {VERSION}. The sim server (`obcore sim`) and the board bridge speak it; a "
           "host never knows which one it talks to.", "",
           "## Channels", "",
           f"- **Requests**: the engine binds a ROUTER (default `{DEFAULT_ENDPOINT}`), a client "
           "connects a DEALER, so a client can time out, drop its socket and retry. A request "
           "is one UTF-8 JSON frame `{\"v\": 1, \"id\": N, \"cmd\": NAME, ...arguments}` plus, "
           "for `feed`, one binary frame. The reply carries the same `v` and `id` and `\"ok\": "
           "true` with the result fields (plus a binary frame where stated), or `\"ok\": false` "
           "with `error`, one line. A client discards replies whose `id` it is not waiting for "
           "(late answers to requests it gave up on). REQ clients work too: an empty delimiter "
           "frame is echoed.",
           f"- **Telemetry**: the engine binds a PUB (default `{DEFAULT_PUB}`). Each message is "
           "`[topic, JSON]`; the JSON has `v`, `topic`, `seq` (+1 per message on that topic, "
           "from 0), `run` (changes when the server restarts) and `time` (Unix seconds). A "
           "subscriber counts a jump in `seq` as missed messages.", "",
           "## Limits", "",
           f"- JSON frame: {MAX_JSON} bytes; `read`/`write`: {MAX_WORDS} words; `feed`: "
           f"{MAX_FEED} messages. A request over a limit gets an error reply.",
           f"- A message over {MAX_MESSAGE} bytes drops the sender's connection (zmq "
           "`MAXMSGSIZE`) without a reply, so a runaway client cannot exhaust the engine's "
           "memory.",
           "- Malformed requests (not JSON, wrong version, unknown command, missing or "
           "mistyped fields, wrong frame count or binary size) get an error reply; the engine "
           "keeps serving.", "",
           "## Commands", "",
           "| command | arguments | reply fields | binary in / out |", "|---|---|---|---|"]
    out += [f"| `{c.name}` | {', '.join(f'`{a.name}`' for a in c.args) or '—'} | "
            f"{', '.join(f'`{name}`' for name, _ in c.reply)} | "
            f"{'feed records' if c.data_in else '—'} / {'records' if c.data_out else '—'} |"
            for c in COMMANDS.values()]
    out.append("")
    for c in COMMANDS.values():
        out += [f"### `{c.name}`", "", c.doc[0].upper() + c.doc[1:] + ".", ""]
        if c.args:
            out += ["| argument | type | default | meaning |", "|---|---|---|---|"]
            out += [f"| `{a.name}` | {_KINDS[a.kind][0]} | "
                    f"{'required' if a.default is None else json.dumps(a.default)} | {a.doc} |"
                    for a in c.args]
            out.append("")
        out += ["| reply field | meaning |", "|---|---|"]
        out += [f"| `{name}` | {doc} |" for name, doc in c.reply] + [""]
        out += [f"Binary frame in: {c.data_in}.", ""] if c.data_in else []
        out += [f"Binary frame out: {c.data_out}.", ""] if c.data_out else []
    out += ["Guard commands write their register through the register map (a `wo` strobe or "
            "`rw` parameter is set to `value`, a `w1c` register is cleared where `value` has "
            "1s). While the map has no such register the reply is the error `not available: "
            "this gateware has no `NAME` register`.", "",
            "## Telemetry topics", "", "| topic | meaning |", "|---|---|"]
    out += [f"| `{t}` | {d} |" for t, d in TOPICS.items()]
    out += ["", "| event | meaning |", "|---|---|"]
    out += [f"| `{e}` | {d} |" for e, d in EVENTS.items()]
    out += ["", "## Security", "",
            "Endpoints bind to loopback by default. `--curve KEYDIR` turns on CURVE encryption "
            "and client authentication on both channels; it is required to bind anything "
            "else. The keys folder holds `server.key`/`server.key_secret` (the engine's pair), "
            "`clients/NAME.key` (the public keys it accepts) and each client's "
            "`NAME.key_secret`. A client whose key is not in `clients/` fails the handshake "
            "and can neither read, write nor subscribe. Writes and guard commands are logged "
            "with who (key name, peer address, routing id) and what (register names and "
            "values), each stamped with the time of its request; the log lines and their "
            "`write`/`reset` events follow the replies, in batches, within about 0.1 s.", ""]
    return "\n".join(out)

