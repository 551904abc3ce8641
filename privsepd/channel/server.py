"""Socket I/O for the helper side of the channel: one client connection.

All protocol decisions live in :mod:`privsepd.channel.protocol`; this module
only moves bytes and threads. The worker that reads a request keeps the
reader role and runs the call itself, so a single-threaded client is served
by one helper thread with no hand-off at all. Other workers are woken (or
started, up to a limit) only when one read brought several requests, or
when a call has been running for longer than ``SLOW_CALL`` -- then a watcher
takes the reader role away from the busy worker so that a slow call never
blocks the others. Replies from concurrent workers are written in batches.

Deadlines, so that no peer can hold a helper by saying little: the
handshake must be complete ``handshake_timeout`` seconds after serving
starts, however the bytes trickle in, and a frame once begun must be complete
within ``frame_timeout`` seconds. Both are enforced with SO_RCVTIMEO on the
reader's ``recv`` only (sends from other workers are not affected).

``drain`` (the helper's SIGTERM) stops reading new requests: the client's
next write fails at once (EPIPE, so it knows nothing of that call arrived),
calls already read run to the end and their replies go out, then the server
closes.
"""

from __future__ import annotations

import collections
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from privsepd.channel.protocol import OP_EXEC, Request, ServerProtocol, State
from privsepd.channel.stats import CallStats
from privsepd.channel.stream import RECV_SIZE, WriteQueue, set_kernel_timeout
from privsepd.errors import ProtocolError

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
# Commands (OP_EXEC) started within the last SLOW_CALL that may run at once
# when starting one holds the GIL until the child has exec'd (os.posix_spawn,
# Popen): one per CPU, and two on one CPU (one command's exec overlaps the
# next one's set-up). More only queue for the CPUs while their worker threads
# fight over the GIL. A command running longer than SLOW_CALL no longer
# counts, so slow commands always overlap.
_CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2
EXEC_PARALLEL = max(2, _CPUS)
# The same when starting a command releases the GIL (the helper's libc
# posix_spawn): a command's thread then spends most of its life off-CPU
# (waiting for the vfork'd child to exec, then for its pipes), so one per
# CPU leaves CPUs idle. Measured with 8 callers of /bin/true on 2 vCPUs:
# per command 0.85-1.5 ms at 2, 0.70-0.78 at 4, 0.62-0.67 at 8.
EXEC_PARALLEL_GIL_FREE = 4 * max(1, _CPUS)
# Extra workers exit after waiting this long with nothing to do.
WORKER_IDLE = 1.0
# A client must complete the handshake within this many seconds.
HANDSHAKE_TIMEOUT = 10.0
# A frame, once its first byte arrived, must be complete within this.
FRAME_TIMEOUT = 10.0
# A request or reply this large leaves the allocator holding memory; the
# server then calls ``on_large`` (the helper returns it to the kernel).
LARGE_FRAME = 1024 * 1024


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
        frame_timeout: float = FRAME_TIMEOUT,
        stats: CallStats | None = None,
        on_large: Callable[[], None] | None = None,
        exec_parallel: int | None = None,
    ) -> None:
        self._sock = sock
        self._proto = protocol
        self._dispatch = dispatch
        self._max_workers = max(1, max_workers)
        self._on_violation = on_violation
        self._handshake_timeout = handshake_timeout
        self._frame_timeout = frame_timeout
        self.stats = stats if stats is not None else CallStats(self._max_workers)
        self._on_large = on_large
        #: fast commands allowed to run at once (see EXEC_PARALLEL)
        self._exec_parallel = max(1, exec_parallel or EXEC_PARALLEL)
        self._handshake_deadline = 0.0
        self._frame_started: float | None = None  # first byte of an incomplete frame
        self._rcv_timeo: float | None = None  # SO_RCVTIMEO now set
        self._read_bytes = 0  # since the last complete request
        self._large: set[int] = set()  # ids of requests that arrived in a large frame
        self._slots = list(range(self._max_workers - 1, -1, -1))  # free stats slots
        self._running = 0
        self._commands: dict[int, float] = {}  # running OP_EXEC: request id -> start
        self._draining = False
        self._eof = False
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
        self._queue = WriteQueue()

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
        # A peer that connects and says little must not hold a helper for
        # long (daemon mode forks one per connection): one deadline for the
        # whole handshake, however slowly its bytes arrive.
        now = time.monotonic()
        self._handshake_deadline = now + self._handshake_timeout
        self.stats.start(now)
        with self._cond:
            self._workers = 1
        self._work()
        self._closed.wait()
        self._watch.set()

    def drain(self) -> None:
        """Read no new request; finish those read, send their replies, close.

        Safe from a signal handler: it only sets a flag and shuts the socket
        for reading, which wakes the reader with EOF once the bytes already
        received are consumed.
        """
        self._draining = True
        try:
            self._sock.shutdown(socket.SHUT_RD)
        except OSError:
            pass

    def _work(self) -> None:
        me = threading.get_ident()
        with self._cond:
            slot = self._slots.pop() if self._slots else self._max_workers
        try:
            while not self._closed.is_set():
                request = self._take(me)
                if request is None:
                    break
                rid = request.id
                self.stats.begin(slot, time.monotonic())
                ok, payload = self._dispatch(request)
                frame, heavy = self._reply_frame(request, ok, payload)
                del payload
                if self._large and request.id in self._large:
                    self._large.discard(request.id)
                    heavy = True
                del request
                with self._cond:
                    self._running -= 1
                    self._commands.pop(rid, None)
                    self.stats.end(slot, time.monotonic())
                    self._held.append(frame)
                    if self._reader == me:
                        self._busy_since = None
                    if self._reader != me or not self._backlog:
                        # (Else more of this batch is to run: one write for all.)
                        self._release_held()
                    if self._eof and not self._running and not self._backlog:
                        self._closed.set()  # drained: the last reply is out
                del frame
                if heavy and self._on_large is not None:
                    self._on_large()
        finally:
            with self._cond:
                self._workers -= 1
                if slot < self._max_workers:
                    self._slots.append(slot)
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
                capped = bool(self._backlog) and self._commands_full(self._backlog[0])
                if self._backlog and not capped:
                    if self._reader == me:
                        # Still the reader: a slow call from the backlog must
                        # be visible to the watcher like any other.
                        self._busy_since = time.monotonic()
                    return self._started(self._backlog.popleft())
                if self._reader is None or self._reader == me:
                    self._reader = me
                    # About to block reading: nothing may stay held.
                    self._release_held()
                    break
                self._idle += 1
                # Behind a full set of commands, the watcher wakes this worker
                # once one of them has run for SLOW_CALL; a finishing
                # command's worker takes the backlog itself.
                woke = self._cond.wait(WORKER_IDLE)
                self._idle -= 1
                if not woke and not capped and self._workers > 1 and self._reader is not None:
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
                if self._closed.is_set():
                    return None
                return self._started(self._backlog.popleft())
            first = self._started(requests[0])
            now = time.monotonic()
            if len(requests) > 1:
                # The reader runs the rest too (most calls are short); the
                # watcher brings in other workers if one of them is slow.
                self._backlog.extend(requests[1:])
                self._contended_until = now + CONTENDED_FOR
            self._last_call = now
            if (
                first.op == OP_EXEC
                and now < self._contended_until
                and not self._commands_full(first, own=True)
            ):
                # A command takes a fork, an exec and a wait (~0.5 ms): while
                # the client has several requests in flight, hand the reader
                # role on now rather than after SLOW_CALL so commands overlap.
                # (A lone caller would only pay for the hand-off.)
                self._reader = None
                self._busy_since = None
                self._summon(1 + self._runnable())
            else:
                self._busy_since = now
            if not self._watch.is_set():
                self._start_watch()
            return first

    def _started(self, request: Request) -> Request:
        """Count a request this worker is about to run (cond held)."""
        self._running += 1
        if request.op == OP_EXEC:
            self._commands[request.id] = time.monotonic()
        return request

    def _commands_full(self, request: Request, own: bool = False) -> bool:
        """True if ``request`` is a command and ``exec_parallel`` recent ones run (cond held).

        ``own``: ``request`` is already counted among them.
        """
        cap = self._exec_parallel
        if request.op != OP_EXEC or len(self._commands) - own < cap:
            return False
        recent = time.monotonic() - SLOW_CALL
        fresh = sum(start > recent for start in self._commands.values())
        return fresh - own >= cap

    def _runnable(self) -> int:
        """Backlog requests a woken worker may take now (cond held)."""
        if self._backlog and self._commands_full(self._backlog[0]):
            return 0
        return len(self._backlog)

    def _read(self) -> list[Request]:
        """Read until at least one request is complete (reader role held)."""
        proto = self._proto
        while True:
            deadline = self._read_deadline()
            try:
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        self._violation(self._late_reason())
                        return []
                    self._rcv_timeo = set_kernel_timeout(self._sock, socket.SO_RCVTIMEO, remaining)
                elif self._rcv_timeo is not None:
                    self._rcv_timeo = set_kernel_timeout(self._sock, socket.SO_RCVTIMEO, None)
                data = self._sock.recv(RECV_SIZE)
            except (BlockingIOError, socket.timeout):  # TimeoutError is socket.timeout from 3.10 on
                continue  # the deadline check above decides
            except OSError:
                data = b""
            if not data:
                self._end_of_input()
                return []
            try:
                requests = proto.receive_data(data)
            except ProtocolError as exc:
                self._violation(str(exc))
                return []
            self._read_bytes += len(data)
            if proto.buffered:
                if self._frame_started is None:
                    self._frame_started = time.monotonic()
            else:
                self._frame_started = None
            out = proto.take_output()
            if out:
                self.send(out)
            if requests:
                if self._read_bytes >= LARGE_FRAME:
                    self._large.update(r.id for r in requests)
                self._read_bytes = proto.buffered
                return requests

    def _read_deadline(self) -> float | None:
        """When the bytes now awaited must have arrived, or None (no bound)."""
        if self._proto.state is State.AWAIT_HELLO:
            return self._handshake_deadline
        if self._frame_started is not None:
            return self._frame_started + self._frame_timeout
        return None

    def _late_reason(self) -> str:
        if self._proto.state is State.AWAIT_HELLO:
            return f"no handshake within {self._handshake_timeout:g}s"
        return (
            f"frame not completed within {self._frame_timeout:g}s "
            f"({self._proto.buffered} bytes of it received)"
        )

    def _end_of_input(self) -> None:
        """EOF: the client left, or ``drain`` shut reading down."""
        if not self._draining:
            self._closed.set()
            return
        with self._cond:
            self._eof = True
            if not self._running and not self._backlog:
                self._release_held()
                self._closed.set()

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
                need = (self._reader is None) + self._runnable()
                if need > 0:
                    self._summon(need)
                elif busy is None and not self._backlog and now - self._last_call > WATCH_IDLE:
                    self._watch.clear()

    def _reply_frame(self, request: Request, ok: bool, payload: Any) -> tuple[bytes, bool]:
        """The reply frame, and whether building it touched a lot of memory."""
        proto = self._proto
        try:
            if ok:
                frame = proto.reply_ok(request.id, payload)
            else:
                frame = proto.reply_error(request.id, *payload)
            return frame, len(frame) >= LARGE_FRAME
        except ProtocolError as exc:
            # Too big, too deep, a foreign type, an int beyond 64 bits: the
            # caller gets the one documented error, naming the function.
            frame = proto.reply_error(
                request.id,
                "CrossingError",
                f"result of {request.name!r} cannot cross the channel: {exc}",
                None,
            )
            return frame, True

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

    @property
    def running(self) -> int:
        """Calls being run now."""
        return self._running
