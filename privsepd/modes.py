"""How a context reaches its helper: fork, spawn (sudo) or daemon.

A :class:`~privsepd.context.Context` says *what* its helper holds; a start
mode says *how* the service gets a connected helper. Each mode's ``open``
returns a :class:`HelperLink` (the socket plus how to reap and describe the
helper); the context then does the handshake, the same for every mode.

- :class:`ForkMode`: the service still holds the privileges and forks the
  helper itself, which scopes down before serving.
- :class:`SpawnMode`: an unprivileged service runs a helper command (e.g.
  ``sudo privsepd helper``) with the channel socket as its standard input;
  the helper reads its declaration from root-owned policy.
- :class:`DaemonMode`: ``privsepd serve`` forks a scoped helper per
  connection on a Unix socket.
"""

from __future__ import annotations

import os
import queue
import shutil
import socket
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from privsepd.audit import AuditLog
from privsepd.errors import HandshakeError, HelperDiedError
from privsepd.helper.monitor import HelperProcess, HelperSpec

if TYPE_CHECKING:
    from privsepd.context import Context


class HelperLink(Protocol):
    """A connected helper as the context sees it, whatever started it."""

    pid: int | None
    sock: socket.socket

    def poll(self, wait: float = 0.0) -> int | None: ...

    def describe_exit(self) -> str: ...

    def stop(self, timeout: float = 1.0) -> None: ...


class StartMode(Protocol):
    """One way of getting a helper; ``open`` runs under the context's start lock."""

    #: The handshake may take this long at least (spawn includes sudo and
    #: an interpreter start).
    handshake_floor: float

    def open(self, ctx: Context) -> HelperLink: ...


class ForkMode:
    """Fork and scope the helper from this (still privileged) process."""

    handshake_floor = 5.0

    def open(self, ctx: Context) -> HelperLink:
        spec = HelperSpec(ctx.name, ctx.scope(), ctx.limits, ctx.max_workers)
        # The helper's own audit sink, opened before it scopes down.
        audit = AuditLog.open(ctx.audit_target)
        factory = ctx.helper_monitor_factory(audit)
        return _forker.run(lambda: HelperProcess.fork(spec, factory, audit))

    def __repr__(self) -> str:
        return "ForkMode()"


class SpawnMode:
    """Run ``command + ["--context", NAME]`` with the channel as its stdin."""

    handshake_floor = 10.0

    def __init__(self, command: Sequence[str]) -> None:
        if not command:
            raise ValueError("helper_command must name a program")
        self.command = list(command)

    def open(self, ctx: Context) -> HelperLink:
        command = [*self.command, "--context", ctx.name]
        path = shutil.which(command[0])
        if path is None:
            raise HelperDiedError(f"helper command not found: {command[0]}")
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            pid = os.posix_spawn(
                path,
                command,
                {"PATH": os.defpath, "LANG": "C.UTF-8"},
                file_actions=[(os.POSIX_SPAWN_DUP2, child_sock.fileno(), 0)],
            )
        except OSError as exc:
            parent_sock.close()
            raise HelperDiedError(f"cannot run helper command {command[0]}: {exc}") from None
        finally:
            child_sock.close()
        return HelperProcess(pid, parent_sock)

    def __repr__(self) -> str:
        return f"SpawnMode({self.command!r})"


class DaemonMode:
    """Connect to ``privsepd serve``, which forks a scoped helper per connection.

    Before a single byte is sent, the kernel's word on who listens
    (SO_PEERCRED) must be root or ``server_user``: anyone who could bind the
    path first (or swap the socket) would otherwise receive the calls.
    """

    handshake_floor = 5.0

    def __init__(self, socket_path: str, server_user: str | int | None = None) -> None:
        self.socket_path = socket_path
        self.server_user = server_user

    def server_uids(self) -> frozenset[int]:
        """uids a daemon socket may be served by: root, and ``server_user`` if set."""
        uids = {0}
        user = self.server_user
        if user is not None:
            if type(user) is int:
                uids.add(user)
            else:
                import pwd

                try:
                    uids.add(pwd.getpwnam(user).pw_uid)
                except KeyError:
                    raise HandshakeError(f"unknown daemon user {user!r}") from None
        return frozenset(uids)

    def open(self, ctx: Context) -> HelperLink:
        from privsepd.channel.peer import peer_credentials

        allowed = self.server_uids()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.socket_path)
            server = peer_credentials(sock)
        except OSError as exc:
            sock.close()
            raise HelperDiedError(
                f"cannot connect to privsepd daemon at {self.socket_path}: {exc.strerror}"
            ) from None
        if server.uid not in allowed:
            sock.close()
            expected = " or ".join(_describe_uid(uid) for uid in sorted(allowed))
            raise HandshakeError(
                f"{self.socket_path} is served by {_describe_uid(server.uid)} (pid "
                f"{server.pid}), not {expected}: refusing to send it anything"
            )
        return _DaemonLink(sock)

    def __repr__(self) -> str:
        return f"DaemonMode({self.socket_path!r})"


def _describe_uid(uid: int) -> str:
    import pwd

    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


def mode_for(socket_path: str | None, helper_command: Sequence[str] | None) -> StartMode:
    """The mode the ``Context`` keywords ask for (neither means fork)."""
    if socket_path is not None and helper_command:
        raise ValueError("socket_path (daemon mode) and helper_command (spawn mode) exclude")
    if socket_path is not None:
        return DaemonMode(socket_path)
    if helper_command:
        return SpawnMode(helper_command)
    return ForkMode()


class _DaemonLink:
    """Stands in for HelperProcess when the helper belongs to the daemon."""

    pid = None
    exit_status = None

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def poll(self, wait: float = 0.0) -> int | None:
        return None

    def describe_exit(self) -> str:
        return "daemon helper"

    def stop(self, timeout: float = 1.0) -> None:
        self.sock.close()


class _Forker:
    """Forks helpers from a thread that lives as long as the process.

    PR_SET_PDEATHSIG fires when the *thread* that forked the helper exits,
    not the process: a helper forked from a short-lived worker thread (the
    first call often comes from one) would be killed when that thread ends.
    The main thread forks directly; other threads hand the fork to this
    daemon thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def run(self, job: Callable[[], HelperProcess]) -> HelperProcess:
        if threading.current_thread() is threading.main_thread():
            return job()
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._serve, name="privsepd-forker", daemon=True
                )
                self._thread.start()
        done = threading.Event()
        box: list = []
        self._jobs.put((job, box, done))
        done.wait()
        ok, value = box[0]
        if not ok:
            raise value
        return value

    def _serve(self) -> None:
        while True:
            job, box, done = self._jobs.get()
            try:
                box.append((True, job()))
            except BaseException as exc:
                box.append((False, exc))
            done.set()


_forker = _Forker()
