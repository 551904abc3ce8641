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

import logging
import os
import queue
import shutil
import socket
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from privsepd.audit import AuditLog
from privsepd.errors import HandshakeError, HelperDiedError, ScopingError
from privsepd.helper.monitor import HelperProcess, HelperSpec

if TYPE_CHECKING:
    from privsepd.context import Context


class HelperLink(Protocol):
    """A connected helper as the context sees it, whatever started it."""

    @property
    def pid(self) -> int | None: ...

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
        scope = ctx.scope()
        check_fork_privileges(ctx.name, scope)
        spec = HelperSpec(ctx.name, scope, ctx.limits, ctx.max_workers, ctx.log_level)
        # The helper's own audit sink, opened before it scopes down.
        audit = AuditLog.open(ctx.audit_target)
        try:
            factory = ctx.helper_monitor_factory(audit)
            return _forker.run(lambda: HelperProcess.fork(spec, factory, audit))
        finally:
            audit.close()  # the helper has its own copy; one per restart would leak

    def __repr__(self) -> str:
        return "ForkMode()"


def check_fork_privileges(name: str, scope: Any) -> None:
    """Refuse, saying what to do instead, when this process cannot fork a helper.

    Scoping drops the bounding set and locks securebits (CAP_SETPCAP),
    switches user (CAP_SETUID, CAP_SETGID) and keeps the declared
    capabilities, which must be in this process's permitted set. Without
    this check an unprivileged caller got the helper's bare
    ``prctl(24): Operation not permitted``.
    """
    from privsepd.helper import kernel
    from privsepd.helper.scoping import _changes_identity

    eff, prm, _ = kernel.capget()
    need = {"CAP_SETPCAP"} | ({"CAP_SETUID", "CAP_SETGID"} if _changes_identity(scope) else set())
    missing = sorted(need - kernel.cap_names(eff))
    missing += sorted(set(scope.capabilities) - kernel.cap_names(prm) - set(missing))
    if not missing:
        return
    raise ScopingError(
        f"fork mode cannot start the helper of context {name!r}: this process (uid "
        f"{os.getuid()}) lacks {', '.join(missing)}. Fork mode needs root: call "
        "ctx.start() while the service still runs as root, before it drops its "
        "privileges. From a service that runs unprivileged, use daemon mode "
        f"(privsepd.Context({name!r}, socket_path='/run/privsepd/{name}.sock') with "
        "`privsepd serve`) or sudo (privsepd.Context("
        f"{name!r}, helper_command=['sudo', '-n', '/usr/local/bin/privsepd', 'helper']))"
    )


#: sudo options that take a value in the next argument (or attached: -uroot).
_SUDO_SHORT_WITH_VALUE = frozenset("CDghpRrTtUu")
_SUDO_LONG_WITH_VALUE = frozenset(
    {
        "--chdir",
        "--chroot",
        "--close-from",
        "--command-timeout",
        "--group",
        "--host",
        "--other-user",
        "--prompt",
        "--role",
        "--type",
        "--user",
    }
)


def _sudo_program_index(command: Sequence[str]) -> int | None:
    """Where the program sudo runs sits in ``command`` (None: not found)."""
    i = 1
    while i < len(command):
        arg = command[i]
        if arg == "--":
            return i + 1 if i + 1 < len(command) else None
        if arg.startswith("--"):
            i += 2 if arg in _SUDO_LONG_WITH_VALUE else 1
            continue
        if arg.startswith("-") and len(arg) > 1:
            i += 1
            for j, flag in enumerate(arg[1:], 2):
                if flag in _SUDO_SHORT_WITH_VALUE:
                    i += 0 if j < len(arg) else 1  # value attached, or the next argument
                    break
            continue
        return i
    return None


class SpawnMode:
    """Run ``command + ["--context", NAME]`` with the channel as its stdin.

    The helper's stdout and stderr go to a pipe this process drains: lines
    are logged to the context's logger, and the last few kilobytes are put
    into the error when the helper fails to start or dies.

    sudo looks the program up in its ``secure_path``, not in the caller's
    ``PATH``, so ``["sudo", "privsepd", "helper"]`` would not find a
    privsepd installed elsewhere (a virtualenv). A bare program name after
    sudo's options is therefore resolved in this process's ``PATH`` when the
    helper is started, and sudo is given the absolute path. This widens
    nothing: sudoers names the absolute paths it allows, and sudo refuses
    any other.
    """

    handshake_floor = 10.0

    def __init__(self, command: Sequence[str]) -> None:
        if not command:
            raise ValueError("helper_command must name a program")
        self.command = list(command)

    def argv(self, context: str) -> list[str]:
        """The command line run for ``context`` (sudo's program made absolute)."""
        command = [*self.command, "--context", context]
        if os.path.basename(command[0]) != "sudo":
            return command
        index = _sudo_program_index(command)
        if index is None or "/" in command[index]:
            return command
        program = command[index]
        found = shutil.which(program)
        if found is None:
            raise HelperDiedError(
                f"helper command {' '.join(self.command)!r}: sudo runs {program!r} from its "
                "secure_path, not from "
                f"this service's PATH, and {program!r} is not on this PATH either; give "
                "the absolute path of the privsepd console script, e.g. ['sudo', '-n', "
                "'/usr/local/bin/privsepd', 'helper'], the same path as in the sudoers line"
            )
        command[index] = os.path.abspath(found)
        return command

    def open(self, ctx: Context) -> HelperLink:
        command = self.argv(ctx.name)
        path = shutil.which(command[0])
        if path is None:
            raise HelperDiedError(f"helper command not found: {command[0]}")
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        out_r, out_w = os.pipe()
        try:
            pid = _spawn(
                path,
                command,
                {"PATH": os.defpath, "LANG": "C.UTF-8"},
                [(child_sock.fileno(), 0), (out_w, 1), (out_w, 2)],
            )
        except OSError as exc:
            parent_sock.close()
            os.close(out_r)
            raise HelperDiedError(f"cannot run helper command {command[0]}: {exc}") from None
        finally:
            child_sock.close()
            os.close(out_w)
        return SpawnedHelper(pid, parent_sock, out_r, ctx.logger)

    def __repr__(self) -> str:
        return f"SpawnMode({self.command!r})"


def _spawn(path: str, argv: list[str], env: dict[str, str], dups: list[tuple[int, int]]) -> int:
    """Start ``path`` with ``dups`` (from, to) applied; every other descriptor is close-on-exec.

    posix_spawn where the interpreter has it (vfork+exec: no Python runs in
    the child). PyPy 3.9's os lacks it: fork, then only dup2 and execve in
    the child, which reports a failed exec on its stderr and exits 127.
    """
    if hasattr(os, "posix_spawn"):
        actions = [(os.POSIX_SPAWN_DUP2, src, dst) for src, dst in dups]
        return os.posix_spawn(path, argv, env, file_actions=actions)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child execs or exits
        try:
            for src, dst in dups:
                os.dup2(src, dst)
            os.execve(path, argv, env)
        except BaseException as exc:
            try:
                os.write(2, f"cannot run {path}: {exc}\n".encode())
            finally:
                os._exit(127)
    return pid


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
                    uids.add(pwd.getpwnam(str(user)).pw_uid)
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


class SpawnedHelper(HelperProcess):
    """A spawned helper whose output this process drains and remembers the end of."""

    #: Bytes of output kept for error messages.
    TAIL_BYTES = 4096

    def __init__(self, pid: int, sock: socket.socket, output_fd: int, logger: logging.Logger):
        super().__init__(pid, sock)
        self._tail = bytearray()
        self._lock = threading.Lock()
        self._drained = threading.Event()
        # A helper writing to a pipe nobody reads would block once it is
        # full, so the pipe is read for as long as the helper keeps it open.
        threading.Thread(
            target=self._drain, args=(output_fd, logger), name=f"privsepd-spawn-{pid}", daemon=True
        ).start()

    def _drain(self, fd: int, logger: logging.Logger) -> None:
        pending = b""
        try:
            while True:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                with self._lock:
                    self._tail += chunk
                    del self._tail[: -self.TAIL_BYTES]
                lines = (pending + chunk).split(b"\n")
                pending = lines.pop()[-self.TAIL_BYTES :]
                for line in lines:
                    logger.warning("helper pid %d: %s", self.pid, _text(line))
            if pending:
                logger.warning("helper pid %d: %s", self.pid, _text(pending))
        except OSError:
            pass
        finally:
            os.close(fd)
            self._drained.set()

    def output_tail(self, wait: float = 0.0) -> str:
        """The end of what the helper wrote to stdout/stderr (waits for EOF up to *wait*)."""
        self._drained.wait(wait)
        with self._lock:
            return _text(bytes(self._tail)).strip()

    def failure_detail(self) -> str:
        """Added to a start error: how the helper ended and what it said."""
        status = HelperProcess.describe_exit(self)
        tail = self.output_tail(wait=1.0)
        if not tail:
            return f" ({status}, no output)"
        return f" ({status}); its output ends:\n" + _indent(tail)

    def describe_exit(self) -> str:
        text = super().describe_exit()
        if self.exit_status is None:
            return text
        tail = self.output_tail(wait=0.2)
        return f"{text}; its output ends: {tail}" if tail else text


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace").replace("\r", "")


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


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
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
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
        box: list[tuple[bool, Any]] = []
        self._jobs.put((job, box, done))
        done.wait()
        ok, value = box[0]
        if not ok:
            raise value
        helper: HelperProcess = value
        return helper

    def _serve(self) -> None:
        while True:
            job, box, done = self._jobs.get()
            try:
                box.append((True, job()))
            except BaseException as exc:
                box.append((False, exc))
            done.set()


_forker = _Forker()
