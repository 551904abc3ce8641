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

Calls that time out keep running in the helper (a thread cannot be stopped
from outside). The channel counts these *abandoned* calls until their late
replies arrive, and bounds them: at most ``max_abandoned`` per entrypoint,
and once ``max_abandoned_total`` are outstanding, an entrypoint that already
has one is held back too. A held-back call waits up to its own timeout for a
slot, then raises :class:`~privsepd.errors.BusyError` having sent nothing.
The helper's other workers stay free for every other call.

The socket is closed only when no caller uses it any more: a thread that
restarts the helper must never close a descriptor that another thread is
polling or writing (the number could already belong to the next socket).

The helper side lives in :mod:`privsepd.channel.server`.
"""

from __future__ import annotations

import errno
import itertools
import logging
import select
import socket
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
from privsepd.channel.stream import RECV_SIZE, WriteQueue, set_kernel_timeout
from privsepd.errors import (
    BusyError,
    CallTimeout,
    CrossingError,
    HelperDiedError,
    PrivsepError,
    ProtocolError,
    exception_from_wire,
)

# Abandoned calls allowed per entrypoint before new calls to it are held back.
MAX_ABANDONED = 2
# ... and in all, per helper (the context passes half its worker count).
MAX_ABANDONED_TOTAL = 4


class NotSentError(HelperDiedError):
    """The helper is gone and no byte of this call reached it: safe to send again."""


class _Waiter:
    """One caller waiting for its reply, or to be handed the reader role.

    ``sent`` turns True just before bytes of the request are handed to the
    kernel, and back to False if the kernel took none of them: a call whose
    ``sent`` is False when the channel fails never reached the helper.
    A waiter with a ``slot`` is not a request: it waits for an abandoned call
    of that entrypoint to finish (and is then woken with ``freed``).
    """

    __slots__ = ("lock", "reply", "lead", "woken", "sent", "name", "slot", "freed")

    def __init__(self, name: str = "", slot: str | None = None) -> None:
        self.lock = threading.Lock()
        self.lock.acquire()
        self.reply: Reply | None = None
        self.lead = False
        self.woken = False
        self.sent = False
        self.name = name
        self.slot = slot
        self.freed = False

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
        max_abandoned: int = MAX_ABANDONED,
        max_abandoned_total: int = MAX_ABANDONED_TOTAL,
    ) -> None:
        self._sock = sock
        # Where helper log records go instead of ``logger`` (the oslo compat
        # layer re-emits them under their own logger names).
        self._log_sink = log_sink
        self._proto = protocol or ClientProtocol(context)
        self._logger = logger or logging.getLogger(f"privsepd.{context}")
        self._queue = WriteQueue()
        self._rcv_timeo: float | None = None  # SO_RCVTIMEO now set (reader only)
        self._mutex = threading.Lock()
        self._waiters: dict[int, _Waiter] = {}  # request ids > 0, slot waiters < 0
        self._reading = False
        self._reader: _Waiter | None = None
        self._failure: PrivsepError | None = None
        self._ids = itertools.count(1)
        self._slot_keys = itertools.count(-1, -1)
        self.max_abandoned = max(1, max_abandoned)
        self.max_abandoned_total = max(1, max_abandoned_total)
        self._abandoned: dict[int, str] = {}  # request id -> entrypoint, until its reply
        self._abandoned_per: dict[str, int] = {}
        self._users = 0  # callers inside call(): the socket stays open for them
        self._closing = False

    @property
    def failure(self) -> PrivsepError | None:
        """Why the channel is unusable, or None while it is healthy."""
        return self._failure

    @property
    def abandoned(self) -> dict[str, int]:
        """Calls that timed out and still run in the helper, per entrypoint."""
        with self._mutex:
            return dict(self._abandoned_per)

    @property
    def in_flight(self) -> int:
        """Calls sent or being sent whose callers still wait for the reply."""
        with self._mutex:
            return sum(1 for key in self._waiters if key > 0)

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
                except socket.timeout:  # TimeoutError from 3.10 on; not on 3.9
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
            self._failure = _fresh(exc)  # no traceback: it would hold this frame
            raise

    def call(self, op: str, name: str, args: Any, kwargs: dict, timeout: float) -> Any:
        """Send one request and wait for its reply; raise the remote error.

        Besides the error the call itself raised in the helper, only
        privsepd's documented errors leave here. A :class:`NotSentError` (a
        HelperDiedError) says the helper was found gone before any byte of
        this call reached it, so sending it to a new helper is safe.
        """
        if self._failure is not None:
            raise self._not_sent()
        rid = next(self._ids)
        try:
            data = self._proto.request(rid, op, name, args, kwargs)
        except CrossingError as exc:
            raise CrossingError(f"arguments of {name!r} cannot cross the channel: {exc}") from None
        deadline = time.monotonic() + timeout
        if self._abandoned_per and name in self._abandoned_per:
            try:
                self._await_slot(name, deadline, timeout)
            except HelperDiedError:
                raise self._not_sent() from None
        waiter = _Waiter(name)
        with self._mutex:
            if self._failure is not None:
                raise self._not_sent()
            self._users += 1
            self._waiters[rid] = waiter
            lead = not self._reading
            if lead:
                self._reading = True
                self._reader = waiter
        try:
            try:
                self._send(data, waiter, deadline, timeout)
            except CallTimeout:
                raise  # (a TimeoutError, hence an OSError) the channel is fine
            except OSError as exc:
                words = self._last_words(lead)
                self._fail(words or HelperDiedError(f"cannot send to helper: {exc}"))
                raise _fresh(self._failure) from None
            # (The reader role may have come to this caller while it wrote.)
            if self._reader is waiter:
                reply = self._lead(rid, deadline, timeout, own=waiter)
            else:
                reply = self._follow(rid, waiter, deadline, timeout)
        except HelperDiedError as exc:
            with self._mutex:
                self._give_up(rid, waiter)
            if not waiter.sent:
                raise NotSentError(str(exc)) from None
            raise
        except BaseException:
            # Whatever stopped this caller (a timeout, a signal handler's
            # exception, KeyboardInterrupt) must not leave it registered or
            # holding the reader role: the others would wait for nobody.
            with self._mutex:
                self._give_up(rid, waiter)
            raise
        finally:
            self._leave()
        if reply.ok:
            return reply.result
        raise exception_from_wire(*reply.error)

    def _not_sent(self) -> NotSentError:
        """The channel had failed before this call wrote anything."""
        return NotSentError(str(self._failure or "channel closed"))

    # -- abandoned calls -----------------------------------------------------

    def _give_up(self, rid: int, waiter: _Waiter) -> None:
        """Unregister a caller leaving without its reply (mutex held).

        A request that reached, or may have reached, the helper runs on there:
        it counts as abandoned until its late reply arrives. One still queued
        is taken out of the queue instead.
        """
        if self._waiters.pop(rid, None) is not None and rid > 0:
            if waiter.reply is None and self._failure is None:
                if waiter.sent or not self._queue.discard(waiter):
                    self._abandoned[rid] = waiter.name
                    self._abandoned_per[waiter.name] = self._abandoned_per.get(waiter.name, 0) + 1
        if self._reader is waiter:
            self._hand_over()

    def _slot_free(self, name: str) -> bool:
        """May a call to ``name`` be sent now? (mutex held)"""
        mine = self._abandoned_per.get(name, 0)
        if mine == 0:
            return True
        return mine < self.max_abandoned and len(self._abandoned) < self.max_abandoned_total

    def _release(self, rid: int) -> None:
        """A late reply arrived: its call no longer holds a helper worker (mutex held)."""
        name = self._abandoned.pop(rid, None)
        if name is None:
            return
        left = self._abandoned_per[name] - 1
        if left:
            self._abandoned_per[name] = left
        else:
            del self._abandoned_per[name]
        for waiter in self._waiters.values():
            if waiter.slot is not None and not waiter.woken:
                waiter.freed = True
                waiter.wake()

    def _await_slot(self, name: str, deadline: float, timeout: float) -> None:
        """Hold a call back while its entrypoint's abandoned calls fill the helper.

        The held-back caller reads the socket itself when nobody else does,
        so the late replies that free a slot are seen even by a lone caller.
        """
        while True:
            waiter = _Waiter(name, slot=name)
            with self._mutex:
                if self._failure is not None:
                    raise _fresh(self._failure)
                if self._slot_free(name):
                    return
                key = next(self._slot_keys)
                self._users += 1
                self._waiters[key] = waiter
                lead = not self._reading
                if lead:
                    self._reading = True
                    self._reader = waiter
            try:
                if lead:
                    self._lead(key, deadline, timeout, slot=name)
                else:
                    self._follow(key, waiter, deadline, timeout)
            except CallTimeout:
                with self._mutex:
                    held = self._abandoned_per.get(name, 0)
                    total = len(self._abandoned)
                raise BusyError(
                    f"{name!r} not sent: {held} abandoned call(s) of it ({total} in all) still "
                    f"run in the helper (limits: {self.max_abandoned} per entrypoint, "
                    f"{self.max_abandoned_total} in all) and none finished within {timeout:g}s"
                ) from None
            finally:
                with self._mutex:
                    self._waiters.pop(key, None)
                    if self._reader is waiter:
                        self._hand_over()
                self._leave()

    def _leave(self) -> None:
        """A caller is done with the socket; the last one out closes it if asked."""
        with self._mutex:
            self._users -= 1
            last = self._closing and self._users == 0
        if last:
            self._sock.close()

    # -- writing -------------------------------------------------------------

    def _send(self, data: bytes, waiter: _Waiter, deadline: float, timeout: float) -> None:
        """Write a request; requests queued meanwhile by other threads go along.

        The thread that finds no write in progress writes everything queued,
        so eight callers cost a few writes, not eight lock hand-offs. A
        write that cannot finish by the writer's deadline leaves the rest
        queued (the byte stream stays whole) and raises CallTimeout. When a
        write fails, requests of which the kernel took no byte are marked
        not sent.
        """
        if not self._queue.add(data, waiter):
            return
        try:
            while (taken := self._queue.take_tagged()) is not None:
                chunk, tags = taken
                for tag, _ in tags:
                    if tag is not None:
                        tag.sent = True  # before the kernel can take any of it
                try:
                    rest = self._write(chunk, deadline, waiter)
                except OSError as exc:
                    _mark_unsent(tags, getattr(exc, "written", 0))
                    raise
                if rest:
                    self._queue.put_back(rest, _unwritten(tags, len(chunk) - len(rest)))
                    raise CallTimeout(f"helper did not accept the request within {timeout:g}s")
        except CallTimeout:
            raise
        except BaseException:
            self._queue.reset()  # the dropped frames' callers keep sent False
            raise

    def _write(self, chunk: bytes, deadline: float, waiter: _Waiter) -> bytes:
        """Write ``chunk`` until done or ``deadline``; return what is left.

        The writer never blocks on the write alone while it holds the reader
        role: the helper may be blocked sending replies that nobody reads,
        and so stop reading our requests (both buffers full: before, eight
        threads echoing 64 KiB stalled until their timeouts). Writes are
        non-blocking; when the socket is full the writer polls for room and,
        if it is the reader, for replies, which it routes as the reader does.
        """
        view = memoryview(chunk)
        sock = self._sock
        while view:
            try:
                view = view[sock.send(view, socket.MSG_DONTWAIT) :]
                continue
            except BlockingIOError:
                pass
            except OSError as exc:
                exc.written = len(chunk) - len(view)  # type: ignore[attr-defined]
                raise
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return view.tobytes()
            if self._reader is waiter:
                ready = _poll(sock, select.POLLOUT | select.POLLIN, remaining)
                if ready & (select.POLLIN | select.POLLHUP | select.POLLERR):
                    self._pump()
            else:
                # The reader role may be handed to us meanwhile: look again soon.
                _poll(sock, select.POLLOUT, min(remaining, WRITER_RECHECK))
        return b""

    def _pump(self) -> None:
        """As the reader, in the middle of a write: route whatever has arrived."""
        try:
            data = self._sock.recv(RECV_SIZE, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError as exc:
            self._fail(HelperDiedError(self._lost_message(f"channel failed: {exc}")))
            raise _fresh(self._failure) from None
        try:
            if not data:
                raise HelperDiedError(self._lost_message("helper closed the channel"))
            events = self._proto.receive_data(data)
            with self._mutex:
                _, logs = self._route(events, 0)
        except PrivsepError as exc:
            self._fail(exc)
            raise _fresh(exc) from None
        for record in logs or ():
            self._emit_log(record)

    # -- reading -------------------------------------------------------------

    def _follow(self, rid: int, waiter: _Waiter, deadline: float, timeout: float) -> Reply | None:
        """Wait until the reader hands us our reply, the reader role, or a slot."""
        remaining = deadline - time.monotonic()
        woken = remaining > 0 and waiter.lock.acquire(timeout=remaining)
        if woken and waiter.reply is not None and not waiter.lead:
            # The common case, without the mutex: the reader set the reply
            # (under the mutex) before it woke us, and a waiter with a reply
            # is never handed the reader role (it is woken already).
            return waiter.reply
        with self._mutex:
            if waiter.reply is not None:
                if self._reader is waiter:
                    # Handed the reader role while its own reply was routed
                    # (by itself, writing): pass the role on.
                    self._hand_over()
                return waiter.reply
            if waiter.freed and not waiter.lead:
                return None
            if not waiter.lead:
                if not woken and self._failure is None:
                    self._give_up(rid, waiter)
                    raise CallTimeout(f"no reply from helper within {timeout:g}s")
                raise _fresh(self._failure or HelperDiedError("channel closed"))
        return self._lead(rid, deadline, timeout, slot=waiter.slot)

    def _route(self, events: list, rid: int) -> tuple[Reply | None, list | None]:
        """Hand each reply to its caller (mutex held); return reply ``rid`` and the logs."""
        mine = None
        logs = None
        for event in events:
            if type(event) is Reply:
                if event.id == 0 and not event.ok:
                    # The helper reports a fatal protocol violation before
                    # it closes the connection.
                    raise ProtocolError(f"helper closed the channel: {event.error[1]}")
                waiter = self._waiters.pop(event.id, None)
                if waiter is None:
                    self._release(event.id)  # a late reply to an abandoned call
                    continue
                if event.id == rid:
                    mine = event
                else:
                    waiter.reply = event
                    waiter.wake()
            else:
                logs = logs or []
                logs.append(event)
        return mine, logs

    def _lead(
        self,
        rid: int,
        deadline: float,
        timeout: float,
        slot: str | None = None,
        own: _Waiter | None = None,
    ) -> Reply | None:
        """Read the socket on behalf of every waiting caller until ``rid`` arrives.

        A slot waiter (``slot`` set, ``rid`` < 0) reads until a call of that
        entrypoint may be sent, and returns None. ``own`` is the caller's
        waiter when its reply may have been routed while it was writing.
        """
        sock = self._sock
        try:
            if own is not None and own.reply is not None:
                with self._mutex:
                    self._hand_over()
                return own.reply
            while True:
                if slot is not None:
                    with self._mutex:
                        if self._slot_free(slot):
                            self._waiters.pop(rid, None)
                            self._hand_over()
                            return None
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
                with self._mutex:
                    mine, logs = self._route(events, rid)
                    done = mine is not None or (slot is not None and self._slot_free(slot))
                    if done:
                        self._waiters.pop(rid, None)
                        self._hand_over()
                if logs:
                    for record in logs:
                        self._emit_log(record)
                if done:
                    return mine
        except TimeoutError:
            with self._mutex:
                waiter = self._waiters.get(rid)
                if waiter is not None:
                    self._give_up(rid, waiter)
                else:
                    self._hand_over()
            raise CallTimeout(f"no reply from helper within {timeout:g}s") from None
        except PrivsepError as exc:
            self._fail(exc)
            raise _fresh(exc) from None
        except OSError as exc:
            if exc.errno == errno.ECONNRESET:
                self._unread(rid)
            self._fail(HelperDiedError(self._lost_message(f"channel failed: {exc}")))
            raise _fresh(self._failure) from None

    def _unread(self, rid: int) -> None:
        """The helper died with bytes we sent still unread (ECONNRESET).

        When this call's request is the only one the helper has not answered
        (no other call in flight, none abandoned), the unread bytes are part
        of it: the helper never read all of it, so never ran it.
        """
        with self._mutex:
            waiter = self._waiters.get(rid)
            alone = sum(1 for key in self._waiters if key > 0) == 1 and not self._abandoned
            if waiter is not None and rid > 0 and alone:
                waiter.sent = False

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
        except (OSError, ValueError, PrivsepError):
            return None

    def _lost_message(self, what: str) -> str:
        n = sum(1 for key in self._waiters if key > 0)
        return f"{what}; {n} call(s) in flight lost"

    def _fail(self, exc: PrivsepError) -> None:
        with self._mutex:
            if self._failure is None:
                # A copy without traceback: the raised one holds the frames
                # that hold this channel, a cycle only a full collection frees.
                self._failure = _fresh(exc)
            self._reading = False
            self._reader = None
            for waiter in self._waiters.values():
                waiter.wake()
            self._waiters.clear()
            self._abandoned.clear()
            self._abandoned_per.clear()
            closing = self._closing
        if not closing:
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
        """Fail every caller now; the socket itself closes when the last one leaves."""
        self._fail(HelperDiedError("channel closed by client"))
        with self._mutex:
            if self._closing:
                return
            self._closing = True
            idle = self._users == 0
        if idle:
            self._sock.close()


def _set_kernel_timeout(sock: socket.socket, option: int, seconds: float) -> float:
    return set_kernel_timeout(sock, option, seconds)  # type: ignore[return-value]


def _mark_unsent(tags: list[tuple[Any, int]], written: int) -> None:
    """After a failed write of ``written`` bytes: frames not begun never left."""
    offset = 0
    for tag, length in tags:
        if offset >= written and tag is not None:
            tag.sent = False
        offset += length


def _unwritten(tags: list[tuple[Any, int]], written: int) -> list[tuple[Any, int]]:
    """The tags of what is left after ``written`` bytes; a frame cut in two loses its tag."""
    out = []
    offset = 0
    for tag, length in tags:
        end = offset + length
        if end > written:
            if offset < written:
                out.append((None, end - written))  # partly sent: not ours to drop
            else:
                out.append((tag, length))
        offset = end
    return out


# A writer that is not the reader polls for room at most this long at a time,
# then checks whether the reader role has come to it.
WRITER_RECHECK = 0.05


def _poll(sock: socket.socket, events: int, timeout: float) -> int:
    """Poll one socket; the events that are ready (0 on timeout)."""
    poller = select.poll()
    poller.register(sock, events)
    ready = poller.poll(max(0, int(timeout * 1000) + 1))
    return ready[0][1] if ready else 0


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
