"""Socket I/O for the service side of the channel: the client multiplexer.

All protocol decisions live in :mod:`privsepd.channel.protocol`; this module only
moves bytes and threads. Thread hand-offs are the dominant cost of a call
(a wake-up across CPUs costs tens of microseconds), so both sides avoid them
on the common path:

Client: there is no reader thread. A caller that finds nobody reading the
socket becomes the reader itself (leader/follower). It routes other replies
straight to their callers, waking only the caller whose reply arrived, and
when its own reply arrives it hands the reader role to exactly one waiting
caller. A single thread pays one send and one receive per call.

The helper side lives in :mod:`privsepd.channel.server`.
"""

from __future__ import annotations

import itertools
import logging
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

from privsepd.channel.protocol import (
    ClientProtocol,
    LogRecord,
    Reply,
    Welcome,
)
from privsepd.channel.stream import RECV_SIZE, WriteQueue
from privsepd.errors import (
    CallTimeout,
    HelperDiedError,
    PrivsepError,
    ProtocolError,
    exception_from_wire,
)


class _Waiter:
    """One caller waiting for its reply, or to be handed the reader role."""

    __slots__ = ("lock", "reply", "lead", "woken")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lock.acquire()
        self.reply: Reply | None = None
        self.lead = False
        self.woken = False

    def wake(self) -> None:
        if not self.woken:
            self.woken = True
            self.lock.release()


class ClientChannel:
    """One connection to a helper, shared by any number of caller threads."""

    def __init__(
        self,
        sock: socket.socket,
        context: str,
        protocol: ClientProtocol | None = None,
        logger: logging.Logger | None = None,
        log_sink: Callable[[LogRecord], None] | None = None,
    ) -> None:
        self._sock = sock
        # Where helper log records go instead of ``logger`` (the oslo compat
        # layer re-emits them under their own logger names).
        self._log_sink = log_sink
        self._proto = protocol or ClientProtocol(context)
        self._logger = logger or logging.getLogger(f"privsepd.{context}")
        self._queue = WriteQueue()
        self._rcv_timeo: float | None = None  # SO_RCVTIMEO now set (reader only)
        self._snd_timeo: float | None = None  # SO_SNDTIMEO now set (flusher only)
        self._mutex = threading.Lock()
        self._waiters: dict[int, _Waiter] = {}
        self._reading = False
        self._reader: _Waiter | None = None
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
                welcome = False
                for event in self._proto.receive_data(data):
                    if isinstance(event, LogRecord):
                        self._emit_log(event)
                    elif isinstance(event, Welcome):
                        welcome = True
                    else:
                        raise ProtocolError("helper sent a reply before the welcome")
                if welcome:
                    # From here on the socket blocks in the kernel, bounded by
                    # SO_RCVTIMEO/SO_SNDTIMEO set from each caller's deadline:
                    # one syscall per receive and per send, no poll before them.
                    self._sock.settimeout(None)
                    return
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
        waiter = _Waiter()
        with self._mutex:
            if self._failure is not None:
                raise _fresh(self._failure)
            self._waiters[rid] = waiter
            lead = not self._reading
            if lead:
                self._reading = True
                self._reader = waiter
        try:
            try:
                self._send(data, deadline, timeout)
            except CallTimeout:
                raise  # (a TimeoutError, hence an OSError) the channel is fine
            except OSError as exc:
                words = self._last_words(lead)
                self._fail(words or HelperDiedError(f"cannot send to helper: {exc}"))
                raise _fresh(self._failure) from None
            if lead:
                reply = self._lead(rid, deadline, timeout)
            else:
                reply = self._follow(rid, waiter, deadline, timeout)
        except BaseException:
            # Whatever stopped this caller (a timeout, a signal handler's
            # exception, KeyboardInterrupt) must not leave it registered or
            # holding the reader role: the others would wait for nobody.
            self._abandon(rid, waiter)
            raise
        if reply.ok:
            return reply.result
        raise exception_from_wire(*reply.error)

    def _abandon(self, rid: int, waiter: _Waiter) -> None:
        with self._mutex:
            self._waiters.pop(rid, None)
            if self._reader is waiter:
                self._hand_over()

    def _send(self, data: bytes, deadline: float, timeout: float) -> None:
        """Write a request; requests queued meanwhile by other threads go along.

        The thread that finds no write in progress writes everything queued,
        so eight callers cost a few writes, not eight lock hand-offs. A
        write that cannot finish by the writer's deadline leaves the rest
        queued (the byte stream stays whole) and raises CallTimeout.
        """
        if not self._queue.add(data):
            return
        try:
            while (chunk := self._queue.take()) is not None:
                rest = self._write(chunk, deadline)
                if rest:
                    self._queue.put_back(rest)
                    raise CallTimeout(f"helper did not accept the request within {timeout:g}s")
        except CallTimeout:
            raise
        except BaseException:
            self._queue.reset()
            raise

    def _write(self, chunk: bytes, deadline: float) -> bytes:
        """Write ``chunk`` until done or ``deadline``; return what is left."""
        view = memoryview(chunk)
        sock = self._sock
        while view:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return view.tobytes()
            if self._snd_timeo is None or remaining < self._snd_timeo:
                self._snd_timeo = _set_kernel_timeout(sock, socket.SO_SNDTIMEO, remaining)
            try:
                view = view[sock.send(view) :]
            except BlockingIOError:
                self._snd_timeo = None  # woke early on a shorter caller's timeout
        return b""

    def _follow(self, rid: int, waiter: _Waiter, deadline: float, timeout: float) -> Reply:
        """Wait until the reader hands us our reply or the reader role."""
        remaining = deadline - time.monotonic()
        woken = remaining > 0 and waiter.lock.acquire(timeout=remaining)
        with self._mutex:
            if not woken and waiter.reply is None and not waiter.lead:
                if self._failure is None:
                    self._waiters.pop(rid, None)
                    raise CallTimeout(f"no reply from helper within {timeout:g}s")
            if waiter.reply is not None:
                return waiter.reply
            if not waiter.lead:
                raise _fresh(self._failure)
        return self._lead(rid, deadline, timeout)

    def _lead(self, rid: int, deadline: float, timeout: float) -> Reply:
        """Read the socket on behalf of every waiting caller until ``rid`` arrives."""
        sock = self._sock
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                if self._rcv_timeo is None or remaining < self._rcv_timeo:
                    self._rcv_timeo = _set_kernel_timeout(sock, socket.SO_RCVTIMEO, remaining)
                try:
                    data = sock.recv(RECV_SIZE)
                except BlockingIOError:
                    self._rcv_timeo = None  # woke early on a shorter caller's timeout
                    continue
                if not data:
                    raise HelperDiedError(self._lost_message("helper closed the channel"))
                events = self._proto.receive_data(data)
                mine = None
                logs = None
                with self._mutex:
                    for event in events:
                        if type(event) is Reply:
                            if event.id == 0 and not event.ok:
                                # The helper reports a fatal protocol violation
                                # before it closes the connection.
                                raise ProtocolError(f"helper closed the channel: {event.error[1]}")
                            waiter = self._waiters.pop(event.id, None)
                            if waiter is None:
                                continue  # a late reply to a call that timed out
                            if event.id == rid:
                                mine = event
                            else:
                                waiter.reply = event
                                waiter.wake()
                        else:
                            logs = logs or []
                            logs.append(event)
                    if mine is not None:
                        self._hand_over()
                if logs:
                    for record in logs:
                        self._emit_log(record)
                if mine is not None:
                    return mine
        except TimeoutError:
            with self._mutex:
                self._waiters.pop(rid, None)
                self._hand_over()
            raise CallTimeout(f"no reply from helper within {timeout:g}s") from None
        except PrivsepError as exc:
            self._fail(exc)
            raise _fresh(exc) from None
        except OSError as exc:
            self._fail(HelperDiedError(self._lost_message(f"channel failed: {exc}")))
            raise _fresh(self._failure) from None

    def _hand_over(self) -> None:
        """Give the reader role to one waiting caller (mutex held)."""
        for waiter in self._waiters.values():
            if not waiter.woken:
                waiter.lead = True
                self._reader = waiter
                waiter.wake()
                return
        self._reading = False
        self._reader = None

    def _last_words(self, lead: bool) -> PrivsepError | None:
        """After a failed send: did the helper say why it hung up?

        A helper that detects a protocol violation sends the reason and
        closes; a caller whose send then fails should see that reason rather
        than a bare broken pipe. Only a caller holding the reader role may
        read; otherwise the active reader will report it.
        """
        if not lead:
            with self._mutex:
                if self._reading:
                    return None
                self._reading = True
        try:
            while _wait(self._sock, select.POLLIN, 0.1):
                data = self._sock.recv(RECV_SIZE)
                if not data:
                    return None
                for event in self._proto.receive_data(data):
                    if isinstance(event, Reply) and event.id == 0 and not event.ok:
                        return ProtocolError(f"helper closed the channel: {event.error[1]}")
            return None
        except (OSError, PrivsepError):
            return None

    def _lost_message(self, what: str) -> str:
        n = len(self._waiters)
        return f"{what}; {n} call(s) in flight lost"

    def _fail(self, exc: PrivsepError) -> None:
        with self._mutex:
            if self._failure is None:
                self._failure = exc
            self._reading = False
            self._reader = None
            for waiter in self._waiters.values():
                waiter.wake()
            self._waiters.clear()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _emit_log(self, record: LogRecord) -> None:
        if self._log_sink is not None:
            self._log_sink(record)
            return
        self._logger.log(record.levelno, "[helper %s] %s", record.logger, record.message)

    def close(self) -> None:
        self._fail(HelperDiedError("channel closed by client"))
        self._sock.close()


_TIMEVAL = struct.Struct("@ll")


def _set_kernel_timeout(sock: socket.socket, option: int, seconds: float) -> float:
    """Bound blocking sends/receives in the kernel (0 would mean forever)."""
    seconds = max(seconds, 0.001)
    whole = int(seconds)
    sock.setsockopt(socket.SOL_SOCKET, option, _TIMEVAL.pack(whole, int((seconds - whole) * 1e6)))
    return seconds


def _wait(sock: socket.socket, events: int, timeout: float) -> bool:
    """Poll one socket; True when it is ready (or in error: the I/O will say)."""
    poller = select.poll()
    poller.register(sock, events)
    return bool(poller.poll(max(0, int(timeout * 1000) + 1)))


def _fresh(exc: PrivsepError) -> PrivsepError:
    """A new exception of the same type, so tracebacks do not pile up."""
    new = type(exc).__new__(type(exc))
    Exception.__init__(new, *exc.args)
    return new
