"""Socket I/O for the channel: the client multiplexer and the helper server.

All protocol decisions live in :mod:`privsepd.channel.protocol`; this module only
moves bytes and threads. Thread hand-offs are the dominant cost of a call
(a wake-up across CPUs costs tens of microseconds), so both sides avoid them
on the common path:

Client: there is no reader thread. A caller that finds nobody reading the
socket becomes the reader itself (leader/follower). It routes other replies
straight to their callers, waking only the caller whose reply arrived, and
when its own reply arrives it hands the reader role to exactly one waiting
caller. A single thread pays one send and one receive per call.

Helper: the worker that reads a request keeps the reader role and runs the
call itself, so a single-threaded client is served by one helper thread with
no hand-off at all. Other workers are woken (or started, up to a limit) only
when one read brought several requests, or when a call has been running for
longer than ``SLOW_CALL`` -- then a watcher takes the reader role away from
the busy worker so that a slow call never blocks the others. Replies from
concurrent workers are written in batches.
"""

from __future__ import annotations

import collections
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
    OP_EXEC,
    ClientProtocol,
    LogRecord,
    Reply,
    Request,
    ServerProtocol,
    Welcome,
)
from privsepd.errors import (
    CallTimeout,
    HelperDiedError,
    PrivsepError,
    ProtocolError,
    exception_from_wire,
)

RECV_SIZE = 64 * 1024


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


class _WriteQueue:
    """Coalesces frames from concurrent threads into single writes.

    ``add`` queues a frame and tells the caller whether it must flush (no
    flush is running); the flushing thread then ``take``s everything queued
    until nothing is left, so N concurrent senders cost a few writes.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._frames: list[bytes] = []
        self._flushing = False

    def add(self, data: bytes) -> bool:
        with self._lock:
            self._frames.append(data)
            if self._flushing:
                return False
            self._flushing = True
            return True

    def take(self) -> bytes | None:
        with self._lock:
            if not self._frames:
                self._flushing = False
                return None
            frames = self._frames
            self._frames = []
        return b"".join(frames) if len(frames) > 1 else frames[0]

    def put_back(self, rest: bytes) -> None:
        """Unwritten bytes go first, for the next flusher: the stream stays whole."""
        with self._lock:
            self._frames.insert(0, rest)
            self._flushing = False

    def reset(self) -> None:
        with self._lock:
            self._frames.clear()
            self._flushing = False


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
        self._queue = _WriteQueue()
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


# ------------------------------------------------------------------ server

# A call running longer than this loses the reader role to another worker,
# and replies held for a batch are sent without waiting for the batch. It is
# also the watcher's tick while calls flow: at 1 ms the wake-ups alone cost
# ~10 us per call on a 2-vCPU VM; at 5 ms they are lost in the noise.
SLOW_CALL = 0.005
# The watcher parks itself after this long without calls.
WATCH_IDLE = 0.05
# After a read brings several requests at once, commands hand the reader
# role on at once for this long.
CONTENDED_FOR = 0.05
# Extra workers exit after waiting this long with nothing to do.
WORKER_IDLE = 1.0
# A client must complete the handshake within this many seconds.
HANDSHAKE_TIMEOUT = 10.0


class HelperServer:
    """Serves one client connection from the helper process."""

    def __init__(
        self,
        sock: socket.socket,
        protocol: ServerProtocol,
        dispatch: Callable[[Request], tuple[bool, Any]],
        max_workers: int = 8,
        on_violation: Callable[[str], None] | None = None,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
    ) -> None:
        self._sock = sock
        self._proto = protocol
        self._dispatch = dispatch
        self._max_workers = max(1, max_workers)
        self._on_violation = on_violation
        self._handshake_timeout = handshake_timeout
        self._cond = threading.Condition(threading.Lock())
        self._backlog: collections.deque[Request] = collections.deque()
        self._held: list[bytes] = []  # replies of the current batch, not yet sent
        self._reader: int | None = None  # ident of the worker holding the role
        self._busy_since: float | None = None  # reader's call start, if running
        self._last_call = 0.0
        self._contended_until = 0.0  # several requests arrived together recently
        self._workers = 0
        self._idle = 0
        self._closed = threading.Event()
        self._watch = threading.Event()
        self._watcher: threading.Thread | None = None
        self._queue = _WriteQueue()

    # -- output --------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Queue whole frames; whoever finds no flush running writes them all."""
        if not self._queue.add(data):
            return
        while (chunk := self._queue.take()) is not None:
            try:
                self._sock.sendall(chunk)
            except OSError:
                self._closed.set()
                self._queue.reset()
                return

    def _release_held(self) -> None:
        """Send the replies held for a batch (call with the cond held)."""
        if self._held:
            frames, self._held = self._held, []
            self.send(b"".join(frames))

    # -- serving -------------------------------------------------------------

    def serve_forever(self) -> None:
        """Handshake, then serve until the client goes away or misbehaves."""
        # A peer that connects and says nothing must not hold a helper
        # forever (daemon mode forks one per connection).
        self._sock.settimeout(self._handshake_timeout)
        with self._cond:
            self._workers = 1
        self._work()
        self._closed.wait()
        self._watch.set()

    def _work(self) -> None:
        me = threading.get_ident()
        try:
            while not self._closed.is_set():
                request = self._take(me)
                if request is None:
                    break
                ok, payload = self._dispatch(request)
                frame = self._reply_frame(request, ok, payload)
                with self._cond:
                    if self._reader == me:
                        self._busy_since = None
                        if self._backlog:
                            # More of this batch to run: one write for all.
                            self._held.append(frame)
                            continue
                    self._held.append(frame)
                    self._release_held()
        finally:
            with self._cond:
                self._workers -= 1
                if self._reader == me:
                    self._reader = None
                    self._release_held()
                self._cond.notify_all()

    def _take(self, me: int) -> Request | None:
        """The next request for this worker: from the backlog or the socket."""
        with self._cond:
            while True:
                if self._closed.is_set():
                    return None
                if self._backlog:
                    if self._reader == me:
                        # Still the reader: a slow call from the backlog must
                        # be visible to the watcher like any other.
                        self._busy_since = time.monotonic()
                    return self._backlog.popleft()
                if self._reader is None or self._reader == me:
                    self._reader = me
                    # About to block reading: nothing may stay held.
                    self._release_held()
                    break
                self._idle += 1
                woke = self._cond.wait(WORKER_IDLE)
                self._idle -= 1
                if not woke and self._workers > 1 and self._reader is not None:
                    if not self._backlog:
                        return None  # surplus worker retires
        requests = self._read()
        with self._cond:
            if not requests:
                self._reader = None
                self._cond.notify_all()
                return None
            if self._reader != me:
                # The role moved while we read (only possible if a call was
                # marked busy): queue everything for whoever runs next.
                self._backlog.extend(requests)
                self._cond.notify(len(requests))
                return None if self._closed.is_set() else self._backlog.popleft()
            now = time.monotonic()
            if len(requests) > 1:
                # The reader runs the rest too (most calls are short); the
                # watcher brings in other workers if one of them is slow.
                self._backlog.extend(requests[1:])
                self._contended_until = now + CONTENDED_FOR
            first = requests[0]
            self._last_call = now
            if first.op == OP_EXEC and now < self._contended_until:
                # A command takes a fork, an exec and a wait (~0.5 ms): while
                # the client has several requests in flight, hand the reader
                # role on now rather than after SLOW_CALL so commands overlap.
                # (A lone caller would only pay for the hand-off.)
                self._reader = None
                self._busy_since = None
                self._summon(1 + len(self._backlog))
            else:
                self._busy_since = now
            if not self._watch.is_set():
                self._start_watch()
            return first

    def _read(self) -> list[Request]:
        """Read until at least one request is complete (reader role held)."""
        from privsepd.channel.protocol import State

        while True:
            try:
                data = self._sock.recv(RECV_SIZE)
            except TimeoutError:
                self._violation(f"no handshake within {self._handshake_timeout:g}s")
                return []
            except OSError:
                data = b""
            if not data:
                self._closed.set()
                return []
            try:
                requests = self._proto.receive_data(data)
            except ProtocolError as exc:
                self._violation(str(exc))
                return []
            if self._proto.state is State.READY and self._sock.gettimeout() is not None:
                self._sock.settimeout(None)
            out = self._proto.take_output()
            if out:
                self.send(out)
            if requests:
                return requests

    def _summon(self, n: int) -> None:
        """Get ``n`` more workers onto the backlog / reader role (cond held)."""
        wake = min(n, self._idle)
        if wake:
            self._cond.notify(wake)
        for _ in range(n - wake):
            if self._workers >= self._max_workers:
                break
            self._workers += 1
            threading.Thread(target=self._work, name="privsepd-worker", daemon=True).start()

    def _start_watch(self) -> None:
        self._watch.set()
        if self._watcher is None:
            self._watcher = threading.Thread(
                target=self._watch_loop, name="privsepd-watch", daemon=True
            )
            self._watcher.start()

    def _watch_loop(self) -> None:
        """Free the reader role, and held replies, from a worker in a slow call."""
        while not self._closed.is_set():
            self._watch.wait()
            time.sleep(SLOW_CALL)
            with self._cond:
                now = time.monotonic()
                busy = self._busy_since
                if busy is not None and now - busy >= SLOW_CALL:
                    self._release_held()
                    if self._reader is not None:
                        self._reader = None
                        self._busy_since = None
                # Someone must read the socket and someone must run each
                # queued request: wake idle workers first, then start more.
                need = (self._reader is None) + len(self._backlog)
                if need > 0:
                    self._summon(need)
                elif busy is None and now - self._last_call > WATCH_IDLE:
                    self._watch.clear()

    def _reply_frame(self, request: Request, ok: bool, payload: Any) -> bytes:
        proto = self._proto
        try:
            if ok:
                return proto.reply_ok(request.id, payload)
            return proto.reply_error(request.id, *payload)
        except ProtocolError as exc:
            return proto.reply_error(
                request.id, "TypeError", f"result cannot cross the channel: {exc}", None
            )

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
