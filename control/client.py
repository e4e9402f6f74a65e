"""Host side of the control protocol: requests, register access, heartbeat and telemetry."""

import itertools
import threading
import time
from contextlib import contextmanager

import numpy as np
import zmq
from zmq.utils.monitor import recv_monitor_message

from ..hw.layouts import OBS_DTYPE, ORDER_DTYPE
from ..hw.registers import VERSION as MAP_VERSION
from ..hw.registers import build_map
from . import protocol as proto
from .registers import IdentityError, Registers

__all__ = ["EngineClient", "EngineError", "EngineTimeoutError", "EngineRejectedError", "WordBus",
           "RemoteRegisters", "Telemetry"]

_MISMATCH = ("failed the security handshake (CURVE on one side only, or the wrong server "
             "key)")
_REFUSALS = {   # handshake failures the socket monitor reports, most telling first
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "refused this client's CURVE key (not in its clients/ "
                                     "folder)",
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: _MISMATCH,
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: _MISMATCH,   # the engine hung up mid-handshake
}
_CHANGES = {"write", "feed", "reset", *proto.GUARD}   # commands that change the engine


class EngineError(RuntimeError):
    """The engine answered a request with an error; the message is its one line."""


class EngineTimeoutError(TimeoutError):
    """The engine did not answer in time (not running, unreachable, or busy)."""


class EngineRejectedError(PermissionError):
    """The engine refused the connection in the security handshake."""


def _socket(ctx, kind, curve):
    """An unconnected socket; ``curve`` is ``(keydir, client name)`` or None."""
    keys = proto.client_keys(*curve) if curve is not None else None
    sock = ctx.socket(kind)
    sock.linger = 0
    if keys:
        sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = keys
    return sock


def _send(sock, frames, flags):
    """``sock.send_multipart(frames, flags)`` without its per-frame type checks."""
    for frame in frames[:-1]:
        sock.send(frame, flags | zmq.SNDMORE)
    sock.send(frames[-1], flags)


def _connect(sock, endpoint):
    try:
        sock.connect(endpoint)
    except zmq.ZMQError as exc:
        raise ValueError(f"cannot connect to {endpoint!r}: {exc}") from None


class EngineClient:
    """A connection to an engine (the sim server or the board bridge).

    ``timeout`` bounds each request, in milliseconds. ``curve`` is ``(keydir, name)``: the
    engine's public key and this client's pair from a keys folder (docs/protocol.md).
    ``pub_endpoint`` overrides the telemetry endpoint the engine announces in ``hello``.
    """

    def __init__(self, endpoint=proto.DEFAULT_ENDPOINT, pub_endpoint=None, timeout=1000,
                 curve=None, context=None):
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ValueError(f"timeout must be a positive number of ms, not {timeout!r}")
        self.endpoint, self.pub_endpoint, self.timeout, self.curve = (
            endpoint, pub_endpoint, timeout, curve)
        self._ctx, self._own_ctx = context or zmq.Context(), context is None
        self._ids = itertools.count(1)
        self._subs, self._heartbeat, self._sock = [], None, None
        self.heartbeats, self.heartbeat_error = 0, None
        self.info = None
        try:
            self._open()
        except BaseException:
            self._term()
            raise

    def _open(self):
        sock = _socket(self._ctx, zmq.DEALER, self.curve)
        sock.immediate = True    # queue nothing for an engine we are not connected to
        self._sock, self._mon = sock, sock.get_monitor_socket(sum(_REFUSALS))
        self._rcvtimeo = None    # the receive timeout set on the socket, ms
        try:
            _connect(sock, self.endpoint)
        except ValueError:
            self._close_socket()
            raise

    def _close_socket(self):
        if self._sock is not None:
            self._sock.disable_monitor()
            self._mon.close()
            self._sock.close()
            self._sock = None

    def _term(self):
        if self._own_ctx:
            self._ctx.term()
            self._own_ctx = False

    def close(self):
        """Stop the heartbeat, close subscriptions and the socket."""
        self.stop_heartbeat()
        for sub in self._subs:
            sub.close()
        self._subs = []
        self._close_socket()
        self._term()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def request(self, cmd, data=None, timeout=None, **args):
        """Send request ``cmd``; its reply as ``(result fields, binary frame or None)``.

        Raises :class:`EngineError` when the engine answers with an error,
        :class:`EngineTimeoutError` when it does not answer within ``timeout`` ms (then the
        socket is replaced, so the request cannot be delivered late),
        :class:`EngineRejectedError` when the security handshake failed.
        """
        timeout = self.timeout if timeout is None else timeout
        req_id = next(self._ids)
        frames = proto.encode_request(req_id, cmd, data, **args)
        deadline = time.monotonic() + timeout / 1000
        if self._sent(frames, timeout):
            # A blocking receive with a timeout rather than a poll and a receive: half the
            # calls into ZeroMQ (each asks the kernel whether its I/O thread signalled).
            wait = timeout
            while wait > 0:
                wait = max(1, int(wait))
                if wait != self._rcvtimeo:
                    self._sock.rcvtimeo = self._rcvtimeo = wait
                try:
                    reply = proto.decode_reply(self._sock.recv_multipart())
                except zmq.Again:
                    break
                if reply.id == req_id:
                    if not reply.ok:
                        raise EngineError(reply.error)
                    return reply.result, reply.data
                # A late answer to a request we gave up on: wait out what is left.
                wait = 1000 * (deadline - time.monotonic())
        events = set()
        while self._mon.poll(0):
            events.add(recv_monitor_message(self._mon)["event"])
        self._close_socket()
        self._open()
        for event, refusal in _REFUSALS.items():
            if event in events:
                raise EngineRejectedError(f"engine at {self.endpoint} {refusal}")
        applied = "; if the request arrived, it was applied whole" if cmd in _CHANGES else ""
        raise EngineTimeoutError(f"engine at {self.endpoint} did not answer within {timeout:g} "
                                 f"ms (is `obcore sim` running there?){applied}")

    def _sent(self, frames, timeout):
        """Send at once if the engine is connected, else wait up to ``timeout`` ms for it."""
        try:
            _send(self._sock, frames, zmq.NOBLOCK)
            return True
        except zmq.Again:
            if not self._sock.poll(timeout, zmq.POLLOUT):
                return False
        _send(self._sock, frames, 0)
        return True

    # One method per command.

    def hello(self):
        """The engine's identity (``hello`` reply fields); kept in ``info``."""
        self.info = self.request("hello")[0]
        return self.info

    def read(self, addrs):
        """Words at ``addrs``, read in order in one engine transaction."""
        return self.request("read", addrs=list(addrs))[0]["words"]

    def write(self, writes):
        """Write ``(addr, word)`` pairs in order in one engine transaction."""
        return self.request("write", writes=[[a, w] for a, w in writes])[0]["count"]

    def feed(self, msgs, dump="none"):
        """Run a ``FEED_DTYPE`` array in batches of at most ``MAX_FEED``.

        Returns ``(counts, records)``: summed ``count``, ``applied``, ``orders`` and the last
        ``cycle``; records are the ``OBS_DTYPE`` or ``ORDER_DTYPE`` array ``dump`` asks for.
        """
        msgs = np.ascontiguousarray(msgs)
        counts = {"count": 0, "applied": 0, "orders": 0, "cycle": None}
        dumps = []
        for start in range(0, len(msgs), proto.MAX_FEED):
            batch = msgs[start:start + proto.MAX_FEED]
            result, data = self.request("feed", batch.tobytes(), count=len(batch), dump=dump)
            for key in ("count", "applied", "orders"):
                counts[key] += result[key]
            counts["cycle"] = result["cycle"]
            dumps.append(data or b"")
        dtype = {"obs": OBS_DTYPE, "orders": ORDER_DTYPE}.get(dump)
        return counts, None if dtype is None else np.frombuffer(b"".join(dumps), dtype)

    def status(self):
        """The engine's status snapshot (``status`` reply fields)."""
        return self.request("status")[0]

    def reset(self):
        """Reset the engine: book, counters, registers to their reset values."""
        return self.request("reset")[0]

    def heartbeat(self):
        """Tell the guard the controller is alive (see :meth:`start_heartbeat`)."""
        return self.request("heartbeat")[0]

    def arm(self):
        """Allow quoting again after a pull (the guard may refuse: see ``pull_state``)."""
        return self.request("arm")[0]

    def kill(self):
        """Pull every quote now, latched until :meth:`arm`."""
        return self.request("kill")[0]

    def clear(self, mask=0xFFFF_FFFF):
        """Clear the guard's latched pull reasons where ``mask`` has 1s (default: all)."""
        return self.request("clear", value=mask)[0]

    # Host interfaces on top.

    def registers(self):
        """:class:`RemoteRegisters` for the engine, after checking its identity."""
        info = self.hello()
        if info["map_version"] != MAP_VERSION:
            raise IdentityError(f"register-map version mismatch: the engine has version "
                                f"{info['map_version']}, this host expects {MAP_VERSION}")
        regs = RemoteRegisters(WordBus(self), build_map(info["venues"], info["levels"]))
        regs.check_identity()
        return regs

    def start_heartbeat(self, period_ms=100):
        """Send ``heartbeat`` every ``period_ms`` from a thread with its own socket.

        The latest failure is kept in ``heartbeat_error``; an error answer (e.g. the gateware
        has no heartbeat register) stops the thread, a timeout does not.
        """
        if self._heartbeat is not None:
            raise RuntimeError("the heartbeat is already running")
        stop = threading.Event()

        def beat():
            with EngineClient(self.endpoint, timeout=self.timeout, curve=self.curve,
                              context=self._ctx) as hb:
                due = time.monotonic()
                while True:
                    try:
                        hb.heartbeat()
                        self.heartbeats += 1
                    except EngineError as exc:
                        self.heartbeat_error = exc
                        return
                    except (EngineTimeoutError, EngineRejectedError) as exc:
                        self.heartbeat_error = exc
                    due += period_ms / 1000   # a fixed rate, whatever each answer took
                    if stop.wait(max(0.0, due - time.monotonic())):
                        return

        thread = threading.Thread(target=beat, name="obcore-heartbeat", daemon=True)
        thread.start()
        self._heartbeat = (thread, stop)

    def stop_heartbeat(self):
        if self._heartbeat is not None:
            thread, stop = self._heartbeat
            stop.set()
            thread.join()
            self._heartbeat = None

    def subscribe(self, topics=tuple(proto.TOPICS), hwm=1000):
        """A :class:`Telemetry` subscriber to the engine's PUB (closed with the client)."""
        endpoint = self.pub_endpoint or (self.info or self.hello())["pub"]
        if endpoint is None:
            raise ValueError(f"the engine at {self.endpoint} publishes no telemetry")
        host = endpoint.split("://", 1)[1].rsplit(":", 1)[0]
        if host in ("0.0.0.0", "*", "[::]"):   # bound to every interface: use ours
            ours = self.endpoint.split("://", 1)[1].rsplit(":", 1)[0]
            endpoint = endpoint.replace(host, ours, 1)
        sub = Telemetry(endpoint, self.curve, topics, self._ctx, hwm)
        self._subs.append(sub)
        return sub


class WordBus:
    """Word ``read``/``write`` over an :class:`EngineClient`, the transport of Registers.

    Inside :meth:`batch` writes collect and go as ONE ``write`` request when the block ends
    (nothing is sent if it raises); inside :meth:`prefetch` reads come from one ``read``.
    """

    def __init__(self, client):
        self.client = client
        self._pending, self._cache = None, None
        self._batch = _Batch(self)

    def read(self, addr):
        if self._cache is not None and addr in self._cache:
            return self._cache[addr]
        return self.client.read([addr])[0]

    def write(self, addr, word):
        if self._pending is None:
            self.client.write([(addr, word)])
        else:
            self._pending.append((addr, word))

    def batch(self):
        return self._batch

    @property
    def prefetching(self):
        return self._cache is not None

    @contextmanager
    def prefetch(self, addrs):
        addrs = sorted(set(addrs))   # ascending: a wide register's low word latches first
        self._cache = dict(zip(addrs, self.client.read(addrs), strict=True))
        try:
            yield
        finally:
            self._cache = None


class _Batch:
    """The context of :meth:`WordBus.batch` (a class: cheaper than a generator per set)."""

    def __init__(self, bus):
        self.bus, self.depth = bus, 0

    def __enter__(self):
        if not self.depth:
            self.bus._pending = []
        self.depth += 1   # nested: the outermost batch sends

    def __exit__(self, kind, exc, tb):
        self.depth -= 1
        if self.depth:
            return
        pending, self.bus._pending = self.bus._pending, None
        if kind is None and pending:
            self.bus.client.write(pending)


class RemoteRegisters(Registers):
    """:class:`Registers` over the network: every set or set_many is ONE write request (the
    staged words and the commit together), and a wide register is read in one request."""

    def get_raw(self, name, index=0):
        reg = self.regmap[name]
        if reg.words == 1 or reg.access == "wo" or self.bus.prefetching:
            return super().get_raw(name, index)
        first = reg.element(index)
        with self.bus.prefetch(range(first, first + reg.words)):
            return super().get_raw(name, index)

    def get_many(self, keys):
        """``{(name, index): value}`` for ``(name, index)`` keys, read in one request."""
        regs = [(self.regmap[name], index) for name, index in keys]
        addrs = [r.element(i) + w for r, i in regs for w in range(r.words)]
        with self.bus.prefetch(addrs):
            return {(r.name, i): self.get(r.name, i) for r, i in regs}

    def set(self, name, value, index=0):
        with self.bus.batch():
            super().set(name, value, index)

    def set_many(self, values):
        with self.bus.batch():
            super().set_many(values)


class Telemetry:
    """A telemetry subscriber. ``missed`` counts messages lost in sequence gaps (per topic);
    a change of the server's ``run`` id restarts the count, as sequences start again."""

    def __init__(self, endpoint, curve=None, topics=tuple(proto.TOPICS), context=None,
                 hwm=1000):
        self._ctx, self._own_ctx, self._sock = context or zmq.Context(), context is None, None
        try:
            self._sock = _socket(self._ctx, zmq.SUB, curve)
            self._sock.rcvhwm = hwm
            for topic in topics:
                self._sock.subscribe(topic.encode())
            _connect(self._sock, endpoint)
        except BaseException:
            self.close()
            raise
        self.received, self.missed = 0, 0
        self._run, self._last = None, {}

    def recv(self, timeout=1000):
        """The next message (a dict) within ``timeout`` ms, else None."""
        if not self._sock.poll(timeout):
            return None
        return self.track(proto.decode_telemetry(self._sock.recv_multipart()))

    def track(self, msg):
        """Count ``msg`` and any gap before it; returns ``msg``."""
        if msg["run"] != self._run:
            self._run, self._last = msg["run"], {}
        last = self._last.get(msg["topic"])
        if last is not None and msg["seq"] > last + 1:
            self.missed += msg["seq"] - last - 1
        self._last[msg["topic"]] = msg["seq"]
        self.received += 1
        return msg

    def close(self):
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._own_ctx:
            self._ctx.term()
            self._own_ctx = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
