"""Socket I/O for the helper side of the channel: one client connection.

All protocol decisions live in :mod:`privsepd.channel.protocol`; this module
only moves bytes and threads. The worker that reads a request keeps the
reader role and runs the call itself, so a single-threaded client is served
by one helper thread with no hand-off at all. Other workers are woken (or
started, up to a limit) only when one read brought several requests, or
when a call has been running for longer than ``SLOW_CALL`` -- then a watcher
takes the reader role away from the busy worker so that a slow call never
blocks the others. Replies from concurrent workers are written in batches.
"""

from __future__ import annotations

import collections
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from privsepd.channel.protocol import OP_EXEC, Request, ServerProtocol
from privsepd.channel.stream import RECV_SIZE, WriteQueue
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
            except socket.timeout:  # TimeoutError from 3.10 on; not on 3.9
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
