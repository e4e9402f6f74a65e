"""The ``obcore sim`` server: an engine behind the control protocol, with telemetry and a feed."""

import gc
import logging
import math
import secrets
import signal
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import zmq
from zmq.auth.thread import ThreadAuthenticator

from ..control import protocol as proto
from ..control.params import describe_writes
from ..control.registers import Registers
from ..hw.layouts import FEED_DTYPE, ObsStatus
from .engine import ENGINES, open_engine
from .publisher import FLUSH_S, LogWriter, Publisher, ScenarioFeed, bulk_access
from .scenarios import SCENARIOS

__all__ = ["Server", "serve_until_stopped", "add_parser", "run"]

log = logging.getLogger("obcore.sim")
POLL_S = 0.05       # longest wait in the loop: how soon stop() and signals take effect
BURST = 64          # requests answered in a row before the feed and telemetry get a turn
WHO_CACHE = 4096    # connections whose `who` text is kept, and as many write descriptions


def _prop(frame, name):
    try:
        return frame.get(name) if frame is not None else None
    except zmq.ZMQError:   # no such property: not TCP, or no security mechanism
        return None


class Server:
    """Serves one engine on a ROUTER (requests) and a PUB (telemetry), single-threaded.

    The constructor binds, so ``endpoint`` and ``pub_endpoint`` are the real addresses (port
    ``*`` picks a free one). :meth:`serve` runs until :meth:`stop` (from any thread or a
    signal handler), then closes the sockets. Engine calls all happen in the serving thread.
    """

    def __init__(self, engine, bind=proto.DEFAULT_ENDPOINT, pub=proto.DEFAULT_PUB,
                 backend="model", telemetry_hz=10.0, curve=None, feed=None, kind="sim"):
        for endpoint in filter(None, (bind, pub)):
            if curve is None and not proto.is_loopback(endpoint):
                raise ValueError(f"{endpoint} is not a loopback address: serving it needs "
                                 f"--curve KEYDIR (encryption and client keys)")
        if not 0 <= telemetry_hz <= 10_000:
            raise ValueError(f"telemetry rate must be 0..10000 Hz, not {telemetry_hz!r}")
        self.engine, self.backend, self.kind, self.feed = engine, backend, kind, feed
        self.telemetry_hz, self.regs = telemetry_hz, Registers(engine, engine.regmap)
        self.run_id, self.requests = secrets.token_hex(4), 0   # run id: see docs/protocol.md
        self._read_many, self._write_many = bulk_access(engine)
        self._stop = threading.Event()
        self._ctx = zmq.Context()
        self._auth, self._names = None, {}
        self._whos = {}     # routing id -> who (see _who)
        self._whats = {}    # (who, *writes) -> (log line, event): see _audit
        self._notes, self._notes_due = [], None   # see _note
        # flush_log(now): called by the loop after each turn, and with None when it stops
        # (serve_until_stopped sets it: its log handler writes in blocks; see LogWriter).
        self.flush_log = None
        self._handlers = {cmd: self._guard if cmd in proto.GUARD else getattr(self, f"_{cmd}")
                          for cmd in proto.COMMANDS}
        self.router = self.pub = None
        try:
            if curve is not None:
                self._secure(curve)
            self.router = self._socket(zmq.ROUTER, bind, curve, maxmsgsize=proto.MAX_MESSAGE)
            self.pub = self._socket(zmq.PUB, pub, curve) if pub else None
        except BaseException:
            self.close()
            raise
        self.endpoint = self.router.last_endpoint.decode()
        self.pub_endpoint = self.pub.last_endpoint.decode() if self.pub else None
        self.curve = curve is not None
        self.out = Publisher(engine, self.pub, self.run_id, telemetry_hz, feed)

    def _secure(self, keydir):
        *self._keys, self._names = proto.server_keys(keydir)

        def allowed(domain, key):   # runs in the authenticator's thread
            ok = key.decode() in self._names
            if not ok:
                log.warning("refused a client with an unknown CURVE key %s", key.decode())
            return ok

        self._auth = ThreadAuthenticator(self._ctx)
        self._auth.start()
        self._auth.configure_curve_callback("*", SimpleNamespace(callback=allowed))

    def _socket(self, kind, endpoint, curve, **options):
        sock = self._ctx.socket(kind)
        sock.linger = 0
        for name, value in options.items():   # before bind: connections copy them then
            setattr(sock, name, value)
        if curve is not None:
            sock.curve_publickey, sock.curve_secretkey = self._keys
            sock.curve_server = True
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as exc:
            sock.close()
            raise OSError(f"cannot bind {endpoint}: {exc}") from None
        return sock

    def stop(self):
        """Ask :meth:`serve` to return (safe from another thread or a signal handler)."""
        self._stop.set()

    def close(self):
        """Close the sockets, the authenticator and the context (idempotent)."""
        for sock in (self.router, self.pub):
            if sock is not None:
                sock.close(linger=0)
        self.router = self.pub = None
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None

    @contextmanager
    def running(self):
        """Serve from a background thread for the length of a ``with`` block (tests, bench);
        the server is closed after it."""
        thread = threading.Thread(target=self.serve, name="obcore-sim", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.stop()
            thread.join()

    def serve(self):
        """Answer requests, run the feed and publish telemetry until stopped; then close."""
        period = self.out.period
        log.info("serving %s engine (%d venues, %d levels) on %s, telemetry on %s at %g Hz, "
                 "CURVE %s%s", self.backend, self.regs.get("venues"), self.regs.get("levels"),
                 self.endpoint, self.pub_endpoint or "(none)", self.telemetry_hz if period
                 else 0, "on" if self.curve else "off", "; feeding scenario {scenario} (seed "
                 "{seed}, pace {pace})".format(**self.feed.state()) if self.feed else "")
        if self.flush_log is not None:   # at once: a launcher waits for the endpoint
            self.flush_log(None)
        out, timeout = self.out, None
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                wait = out.wait_s(now)
                # A blocking receive with a timeout: no poller, and no readiness query per
                # request (each is a system call in ZeroMQ); 0 ms: just take what waits.
                # Whole ms, rounded up: work due in under one is not waited for spinning.
                ms = math.ceil(1000 * (POLL_S if wait is None else min(POLL_S, wait)))
                if ms != timeout:
                    self.router.rcvtimeo = timeout = ms
                # With nothing else due, one request a turn: the next receive takes the next
                # one at once (a receive that finds none costs an exception).
                self._answer_burst(BURST if ms == 0 else 1)
                now = time.monotonic()
                out.step(now)
                self._catch_up(now)
                if self.flush_log is not None:
                    self.flush_log(now)
        finally:
            self._catch_up()
            log.info("stopped after %d requests", self.requests)
            if self.flush_log is not None:
                self.flush_log(None)
            self.close()

    # Requests.

    def _answer_burst(self, most):
        """Answer the request that arrives within the receive timeout, then those already
        waiting, at most ``most`` in all."""
        router, flags = self.router, 0
        for _ in range(most):
            try:
                ident = router.recv(flags)
            except zmq.Again:
                return
            flags = zmq.NOBLOCK
            # A known connection's frames are copied out as bytes (cheapest for small
            # ones); a new one's are kept as frames, whose properties say who it is.
            known, frames = ident in self._whos, []
            while router.get(zmq.RCVMORE):
                frames.append(router.recv(copy=known))
            self._answer(ident, frames, known)

    def _who(self, ident, frame):
        """``name@address#routing-id``: the key's name under CURVE, else anonymous.

        A routing id names one connection, whose peer and key never change, so the text is
        made once per connection (the table is emptied when it grows past WHO_CACHE) from
        the properties of ``frame``, one of its messages' frames (None: unknown).
        """
        if len(self._whos) >= WHO_CACHE:
            self._whos.clear()
        user = (self._names.get(_prop(frame, "User-Id"), "?") if self.curve
                else "anonymous")
        who = self._whos[ident] = f"{user}@{_prop(frame, 'Peer-Address') or '?'}#{ident.hex()}"
        return who

    def _answer(self, ident, frames, known):
        """Answer one request: ``frames`` after the routing id, bytes if ``known`` (a
        connection seen before), else zmq frames."""
        self.requests += 1
        if known:
            who, body = self._whos[ident], frames
        else:
            who = self._who(ident, frames[-1] if frames else None)
            body = [f.bytes for f in frames]
        envelope = [b""] if body and body[0] == b"" else []   # a REQ client's delimiter
        body = body[len(envelope):]
        req_id = None
        try:
            req = proto.decode_request(body)
            req_id = req.id
            result, data = self._handlers[req.cmd](req, who)
            reply = proto.encode_reply(req_id, result, data)
        except proto.ProtocolError as exc:
            self._note(logging.WARNING, "bad request from %s: %s", who, exc)
            reply = proto.encode_reply(req_id if exc.req_id is None else exc.req_id,
                                       error=str(exc))
        except ValueError as exc:    # refused by the map or the engine: say why
            reply = proto.encode_reply(req_id, error=str(exc))
        except Exception as exc:     # an engine or server bug: report it and keep serving
            self._note(logging.ERROR, "request from %s failed", who, exc_info=sys.exc_info())
            reply = proto.encode_reply(req_id, error=f"internal error: "
                                                     f"{type(exc).__name__}: {exc}")
        try:
            parts = [ident, *envelope, *reply]
            for part in parts[:-1]:
                self.router.send(part, zmq.SNDMORE | zmq.NOBLOCK)
            self.router.send(parts[-1], zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # the client vanished or stopped reading
            self._note(logging.WARNING, "could not answer %s: %s", who, exc)

    def _note(self, level, msg, *args, event=None, exc_info=None):
        """Log ``msg % args`` at ``level`` and publish ``event``, stamped now, but later: in
        a batch within FLUSH_S (:meth:`_catch_up`). A request's reply does not wait for its
        audit, and a batch costs a fraction of as many records made one at a time between
        requests (their code long out of the cache). ``msg`` None: a write, ``args`` are
        ``(who, pairs)``, described in the batch."""
        self._notes.append((time.time(), level, msg, args, event, exc_info))
        if self._notes_due is None:
            self._notes_due = time.monotonic() + FLUSH_S

    def _catch_up(self, now=None):
        """Log and publish the noted records, in order, if due at ``now`` (monotonic s);
        None: now."""
        if self._notes_due is None or (now is not None and now < self._notes_due):
            return
        notes, self._notes, self._notes_due = self._notes, [], None
        for created, level, msg, args, event, exc_info in notes:
            if msg is None:
                msg, event = self._audit(*args)
                args = ()
            if log.isEnabledFor(level):
                record = log.makeRecord(log.name, level, __file__, 0, msg, args, exc_info)
                record.relativeCreated -= 1000 * (record.created - created)
                record.created, record.msecs = created, int(created % 1 * 1000) + 0.0
                log.handle(record)
            if event is not None:
                self.out.publish("event", event)
        if self.flush_log is not None:
            self.flush_log(None)

    def _check_addrs(self, addrs):
        for addr in addrs:
            if addr >= self.engine.regmap.size:
                raise ValueError(f"address {addr:#x} is outside the register map (0.."
                                 f"{self.engine.regmap.size - 1:#x})")

    def _hello(self, req, who):
        self._note(logging.INFO, "hello from %s", who)
        get = self.regs.get_raw
        return {"engine": self.kind, "backend": self.backend, "protocol": proto.VERSION,
                "map_version": get("version"), "venues": get("venues"),
                "levels": get("levels"), "registers": len(self.engine.regmap),
                "words": self.engine.regmap.size, "pub": self.pub_endpoint,
                "telemetry_hz": self.telemetry_hz, "you": who}, None

    def _read(self, req, who):
        self._check_addrs(req.args["addrs"])
        return {"words": self._read_many(req.args["addrs"])}, None

    def _write(self, req, who):
        pairs = req.args["writes"]
        self._check_addrs(a for a, _ in pairs)
        self._write_many(pairs)
        self.out.changed()
        self._note(logging.INFO, None, who, pairs)
        return {"count": len(pairs)}, None

    def _audit(self, who, pairs):
        """The log line and event of a write."""
        # The same writes again from the same client (a tuned value): both are known.
        key = (who, *map(tuple, pairs))
        known = self._whats.get(key)
        if known is None:
            if len(self._whats) >= WHO_CACHE:
                self._whats.clear()
            what = describe_writes(self.engine.regmap, pairs)
            known = self._whats[key] = (f"write from {who}: {what}",
                                        {"event": "write", "who": who, "what": what})
        return known

    def _feed(self, req, who):
        obs, orders = self.out.run(np.frombuffer(req.data, FEED_DTYPE))
        dump = {"obs": obs, "orders": orders}.get(req.args["dump"])
        applied = int(np.count_nonzero(obs["status"] & ObsStatus.APPLIED))
        return ({"count": len(obs), "applied": applied, "orders": len(orders),
                 "cycle": int(self.engine.cycle)}, None if dump is None else dump.tobytes())

    def _status(self, req, who):
        return self.out.status(), None

    def _reset(self, req, who):
        self.engine.reset()
        self.out.changed()
        self._note(logging.INFO, "reset by %s", who, event={"event": "reset", "who": who})
        return {"cycle": int(self.engine.cycle)}, None

    def _guard(self, req, who):
        name, value = proto.GUARD[req.cmd], req.args["value"]
        if name not in self.engine.regmap:
            raise ValueError(f"not available: this gateware has no `{name}` register")
        reg = self.engine.regmap[name]
        if reg.access == "w1c":   # a mask: bits beyond the register's width do not exist
            self.regs.clear_flags(name, value & ((1 << reg.fmt.width) - 1))
        else:
            self.regs.set(name, value)
        self.out.changed()
        if req.cmd != "heartbeat":
            self._note(logging.INFO, "%s from %s", req.cmd, who, event={
                "event": "write", "who": who, "what": f"{name}={value:#x}"})
        elif log.isEnabledFor(logging.DEBUG):
            self._note(logging.DEBUG, "heartbeat from %s", who)
        return {"register": name}, None


def add_parser(sub):
    p = sub.add_parser("sim", help="serve a simulated engine over ZeroMQ (docs/protocol.md) "
                                   "until SIGINT or SIGTERM")
    p.add_argument("--engine", choices=ENGINES, default="verilator",
                   help="verilator: the Verilated gateware (default); model: the reference")
    p.add_argument("--venues", type=int, default=2, help="venues to build (default 2)")
    p.add_argument("--levels", type=int, default=16, help="exact levels per side (default 16)")
    p.add_argument("--bind", default=proto.DEFAULT_ENDPOINT, metavar="ENDPOINT",
                   help=f"request endpoint (default {proto.DEFAULT_ENDPOINT}; port * picks one)")
    p.add_argument("--pub", default=proto.DEFAULT_PUB, metavar="ENDPOINT",
                   help=f"telemetry endpoint (default {proto.DEFAULT_PUB}; 'none': off)")
    p.add_argument("--scenario", choices=sorted(SCENARIOS),
                   help="feed this synthetic scenario into the engine")
    p.add_argument("--seed", type=int, default=1011, help="scenario seed (default 1011)")
    p.add_argument("--pace", choices=("realtime", "fast"), default="realtime",
                   help="realtime: one TICK per --tick-ms of wall-clock time (default); fast: "
                        "as fast as the engine runs")
    p.add_argument("--tick-ms", type=float, default=100.0, metavar="MS",
                   help="wall-clock milliseconds per TICK at realtime pace (default 100)")
    p.add_argument("--repeat", action="store_true",
                   help="replay the scenario with the next seed whenever it ends")
    p.add_argument("--telemetry-hz", type=float, default=10.0, metavar="F",
                   help="status snapshots per second on the telemetry channel (default 10)")
    p.add_argument("--curve", metavar="KEYDIR", type=Path,
                   help="CURVE encryption and client keys from KEYDIR (see docs/protocol.md); "
                        "required to bind a non-loopback address")
    p.add_argument("--verbose", action="store_true", help="also log heartbeats")
    p.set_defaults(run=run)


def serve_until_stopped(engine, args, label, verbose=False, **server_args):
    """Serve ``engine`` (already open; closed on return) on ``args.bind``/``args.pub`` until
    SIGINT/SIGTERM, logging to stderr as ``obcore <label>``; shared by ``obcore sim`` and
    ``obcore board``. Returns the exit status."""
    handler = LogWriter(sys.stderr, f"%(asctime)s obcore {label}: %(message)s")
    level = log.level
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    try:
        server = Server(engine, args.bind, None if args.pub == "none" else args.pub,
                        telemetry_hz=args.telemetry_hz, curve=args.curve, **server_args)
        server.flush_log = handler.flush_due
        previous = {s: signal.signal(s, lambda *_: server.stop())
                    for s in (signal.SIGINT, signal.SIGTERM)}
        # What exists now (the elaborated design, the engine) lives as long as the process:
        # out of the collector's way, a full collection no longer stalls a reply for ms.
        gc.freeze()
        try:
            server.serve()
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
    finally:
        engine.close()
        log.removeHandler(handler)
        handler.close()
        log.setLevel(level)
    return 0


def run(args):
    # Every write is logged, so a record must be cheap: no caller, thread or process lookup
    # (the "Optimization" switches of the logging HOWTO; this process only serves).
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    feed = (ScenarioFeed(args.scenario, args.seed, args.pace, args.tick_ms, args.repeat)
            if args.scenario else None)
    engine = open_engine(args.engine, args.venues, args.levels)
    return serve_until_stopped(engine, args, "sim", args.verbose, backend=args.engine,
                               feed=feed)
