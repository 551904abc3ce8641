"""Socket I/O for the channel: the client multiplexer and the helper server.

All protocol decisions live in :mod:`privsepd.protocol`; this module only
moves bytes and threads.

Latency design, client side: there is no reader thread. A caller that sends
a request and finds nobody reading the socket becomes the reader itself
(leader/follower); it routes any other replies it reads to their waiting
callers and hands the reader role over when its own reply arrives. A single
thread therefore pays one send and one receive per call, no thread hop.

Helper side, the mirror image: a small pool of workers shares the socket;
the worker holding the read lock decodes a request, releases the lock (so an
idle worker becomes the next reader) and runs the call itself. New workers
are started only when a request arrives and no worker is idle, so a
single-threaded client is served by one thread with no hand-off, and a slow
call never blocks the others.
"""

from __future__ import annotations

import collections
import itertools
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from privsepd.errors import (
    CallTimeout,
    HelperDiedError,
    PrivsepError,
    ProtocolError,
    exception_from_wire,
)
from privsepd.protocol import (
    ClientProtocol,
    LogRecord,
    Reply,
    Request,
    ServerProtocol,
    Welcome,
)

RECV_SIZE = 256 * 1024


class ClientChannel:
    """One connection to a helper, shared by any number of caller threads."""

    def __init__(
        self,
        sock: socket.socket,
        context: str,
        protocol: ClientProtocol | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self._sock = sock
        self._proto = protocol or ClientProtocol(context)
        self._logger = logger or logging.getLogger(f"privsepd.{context}")
        self._send_lock = threading.Lock()
        self._cond = threading.Condition(threading.Lock())
        self._results: dict[int, Reply] = {}
        self._pending: set[int] = set()
        self._reading = False
        self._failure: PrivsepError | None = None
        self._ids = itertools.count(1)

    @property
    def failure(self) -> PrivsepError | None:
        """Why the channel is unusable, or None while it is healthy."""
        return self._failure

    def handshake(self, timeout: float) -> None:
        """Send hello and wait for the welcome; raise on refusal or EOF."""
        deadline = time.monotonic() + timeout
        try:
            try:
                self._sock.sendall(self._proto.hello())
            except OSError:
                # A peer that refuses us (daemon mode) may have closed already;
                # its refusal is still waiting to be read.
                pass
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CallTimeout(f"helper did not answer the handshake in {timeout:g}s")
                self._sock.settimeout(remaining)
                try:
                    data = self._sock.recv(RECV_SIZE)
                except TimeoutError:
                    continue
                if not data:
                    raise HelperDiedError("helper closed the channel during the handshake")
                for event in self._proto.receive_data(data):
                    if isinstance(event, LogRecord):
                        self._emit_log(event)
                    elif isinstance(event, Welcome):
                        return
                    else:
                        raise ProtocolError("helper sent a reply before the welcome")
        except OSError as exc:
            raise HelperDiedError(f"channel failed during the handshake: {exc}") from None
        except PrivsepError as exc:
            self._failure = exc
            raise

    def call(self, op: str, name: str, args: Any, kwargs: dict, timeout: float) -> Any:
        """Send one request and wait for its reply; raise the remote error."""
        if self._failure is not None:
            raise _fresh(self._failure)
        rid = next(self._ids)
        data = self._proto.request(rid, op, name, args, kwargs)
        deadline = time.monotonic() + timeout
        with self._cond:
            if self._failure is not None:
                raise _fresh(self._failure)
            self._pending.add(rid)
        try:
            with self._send_lock:
                self._sock.sendall(data)
        except OSError as exc:
            self._fail(self._last_words() or HelperDiedError(f"cannot send to helper: {exc}"))
            raise _fresh(self._failure) from None
        reply = self._wait(rid, deadline, timeout)
        if reply.ok:
            return reply.result
        raise exception_from_wire(*reply.error)

    def _wait(self, rid: int, deadline: float, timeout: float) -> Reply:
        with self._cond:
            while True:
                reply = self._results.pop(rid, None)
                if reply is not None:
                    return reply
                if self._failure is not None:
                    self._pending.discard(rid)
                    raise _fresh(self._failure)
                if not self._reading:
                    self._reading = True
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._pending.discard(rid)
                    raise CallTimeout(f"no reply from helper within {timeout:g}s")
                self._cond.wait(remaining)
        return self._lead(rid, deadline, timeout)

    def _lead(self, rid: int, deadline: float, timeout: float) -> Reply:
        """Read the socket on behalf of every waiting caller until ``rid`` arrives."""
        sock = self._sock
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                sock.settimeout(remaining)
                data = sock.recv(RECV_SIZE)
                if not data:
                    raise HelperDiedError(self._lost_message("helper closed the channel"))
                events = self._proto.receive_data(data)
                logs = []
                with self._cond:
                    for event in events:
                        if isinstance(event, Reply):
                            if event.id == 0 and not event.ok:
                                # The helper reports a fatal protocol violation
                                # before it closes the connection.
                                raise ProtocolError(f"helper closed the channel: {event.error[1]}")
                            if event.id in self._pending:
                                self._pending.discard(event.id)
                                self._results[event.id] = event
                            # else: a late reply to a call that timed out.
                        else:
                            logs.append(event)
                    mine = self._results.pop(rid, None)
                    if mine is not None:
                        self._reading = False
                    if mine is not None or self._results:
                        self._cond.notify_all()
                for record in logs:
                    self._emit_log(record)
                if mine is not None:
                    return mine
        except TimeoutError:
            with self._cond:
                self._reading = False
                self._pending.discard(rid)
                self._cond.notify_all()
            raise CallTimeout(f"no reply from helper within {timeout:g}s") from None
        except PrivsepError as exc:
            self._fail(exc)
            raise _fresh(exc) from None
        except OSError as exc:
            self._fail(HelperDiedError(self._lost_message(f"channel failed: {exc}")))
            raise _fresh(self._failure) from None

    def _last_words(self) -> PrivsepError | None:
        """After a failed send: did the helper say why it hung up?

        A helper that detects a protocol violation sends the reason and
        closes; a caller whose send then fails should see that reason rather
        than a bare broken pipe.
        """
        if not self._send_lock.acquire(timeout=0.1):
            return None
        try:
            with self._cond:
                if self._reading:
                    return None  # the active reader will report it
                self._reading = True
            self._sock.settimeout(0.1)
            while True:
                data = self._sock.recv(RECV_SIZE)
                if not data:
                    return None
                for event in self._proto.receive_data(data):
                    if isinstance(event, Reply) and event.id == 0 and not event.ok:
                        return ProtocolError(f"helper closed the channel: {event.error[1]}")
        except (OSError, PrivsepError):
            return None
        finally:
            with self._cond:
                self._reading = False
            self._send_lock.release()

    def _lost_message(self, what: str) -> str:
        n = len(self._pending)
        return f"{what}; {n} call(s) in flight lost"

    def _fail(self, exc: PrivsepError) -> None:
        with self._cond:
            if self._failure is None:
                self._failure = exc
            self._reading = False
            self._pending.clear()
            self._cond.notify_all()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _emit_log(self, record: LogRecord) -> None:
        self._logger.log(record.levelno, "[helper %s] %s", record.logger, record.message)

    def close(self) -> None:
        self._fail(HelperDiedError("channel closed by client"))
        self._sock.close()


def _fresh(exc: PrivsepError) -> PrivsepError:
    """A new exception of the same type, so tracebacks do not pile up."""
    new = type(exc).__new__(type(exc))
    Exception.__init__(new, *exc.args)
    return new


# ------------------------------------------------------------------ server

Dispatch = Callable[[Request], Any]


class HelperServer:
    """Serves one client connection from the helper process."""

    def __init__(
        self,
        sock: socket.socket,
        protocol: ServerProtocol,
        dispatch: Callable[[Request], tuple[bool, Any]],
        max_workers: int = 8,
        on_violation: Callable[[str], None] | None = None,
    ) -> None:
        self._sock = sock
        self._proto = protocol
        self._dispatch = dispatch
        self._max_workers = max(1, max_workers)
        self._on_violation = on_violation
        self._read_lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._backlog: collections.deque[Request] = collections.deque()
        self._workers = 0
        self._idle = 0
        self._closed = threading.Event()

    def send(self, data: bytes) -> None:
        """Write whole frames; a dead client ends the server."""
        try:
            with self._send_lock:
                self._sock.sendall(data)
        except OSError:
            self._closed.set()

    def serve_forever(self) -> None:
        """Handshake, then serve until the client goes away or misbehaves."""
        self._sock.settimeout(None)
        with self._state_lock:
            self._workers = 1
        self._work()
        self._closed.wait()

    def _next_request(self) -> Request | None:
        with self._state_lock:
            self._idle += 1
        with self._read_lock:
            with self._state_lock:
                self._idle -= 1
            while not self._backlog:
                if self._closed.is_set():
                    return None
                try:
                    data = self._sock.recv(RECV_SIZE)
                except OSError:
                    data = b""
                if not data:
                    self._closed.set()
                    return None
                try:
                    requests = self._proto.receive_data(data)
                except ProtocolError as exc:
                    self._violation(str(exc))
                    return None
                out = self._proto.take_output()
                if out:
                    self.send(out)
                self._backlog.extend(requests)
            request = self._backlog.popleft()
            self._maybe_add_worker()
            return request

    def _maybe_add_worker(self) -> None:
        with self._state_lock:
            if self._idle or self._workers >= self._max_workers:
                return
            self._workers += 1
        threading.Thread(target=self._work, name="privsepd-worker", daemon=True).start()

    def _work(self) -> None:
        while not self._closed.is_set():
            request = self._next_request()
            if request is None:
                break
            ok, payload = self._dispatch(request)
            proto = self._proto
            try:
                if ok:
                    frame = proto.reply_ok(request.id, payload)
                else:
                    frame = proto.reply_error(request.id, *payload)
            except ProtocolError as exc:
                frame = proto.reply_error(
                    request.id, "TypeError", f"result cannot cross the channel: {exc}", None
                )
            self.send(frame)
        with self._state_lock:
            self._workers -= 1

    def _violation(self, reason: str) -> None:
        """Close the connection with a logged reason the client can show."""
        if self._on_violation is not None:
            self._on_violation(reason)
        out = self._proto.take_output()
        try:
            frame = out or self._proto.reply_error(0, "ProtocolError", reason, None)
        except ProtocolError:
            frame = b""
        self.send(frame)
        self._closed.set()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    @property
    def closed(self) -> threading.Event:
        return self._closed
