"""The privileged helper: a fixed table of operations, and how it is forked.

In the spirit of OpenSSH's ``monitor.c``: every request the helper will ever
serve goes through :class:`Monitor`'s one dispatch table, each operation
checks its input before acting, and anything that fails to parse or check is
refused. The entrypoint table is frozen when the helper starts; nothing is
imported, resolved or unpickled because a client asked.
"""

from __future__ import annotations

import gc
import inspect
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from privsepd.audit import AuditLog, summarize
from privsepd.channel.protocol import (
    OP_CALL,
    OP_EXEC,
    OP_PING,
    Limits,
    Request,
    ServerProtocol,
    check_value,
)
from privsepd.errors import (
    ConstraintError,
    CrossingError,
    DeniedError,
    PrivsepError,
    ProtocolError,
    ScopingError,
    UnknownFunctionError,
    exception_to_wire,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entrypoint:
    """A function the helper may run, with the checks its arguments must pass."""

    name: str
    func: Callable[..., Any]
    constraints: Mapping[str, Any] = field(default_factory=dict)
    timeout: float | None = None
    strict: bool = False

    def __post_init__(self) -> None:
        sig = inspect.signature(self.func)
        unknown = set(self.constraints) - set(sig.parameters)
        if unknown:
            raise TypeError(f"{self.name}: constraints name unknown arguments {sorted(unknown)}")
        if self.strict:
            free = [p for p in sig.parameters if p not in self.constraints]
            if free:
                raise TypeError(f"{self.name}: strict entrypoint leaves {free} unconstrained")
        object.__setattr__(self, "signature", sig)

    def check(self, args: list, kwargs: dict) -> inspect.BoundArguments:
        """Bind the call to the signature and run every declared constraint."""
        try:
            bound = self.signature.bind(*args, **kwargs)  # type: ignore[attr-defined]
        except TypeError as exc:
            raise DeniedError(f"{self.name}: arguments do not fit the signature: {exc}") from None
        params = self.signature.parameters  # type: ignore[attr-defined]
        for arg, value in bound.arguments.items():
            constraint = self.constraints.get(arg)
            if constraint is None:
                continue
            kind = params[arg].kind
            if kind is inspect.Parameter.VAR_POSITIONAL:
                for i, item in enumerate(value):
                    constraint.check(f"{arg}[{i}]", item)
            elif kind is inspect.Parameter.VAR_KEYWORD:
                for key, item in value.items():
                    constraint.check(f"{arg}[{key!r}]", item)
            else:
                constraint.check(arg, value)
        return bound


CommandRunner = Callable[[list, dict], Any]


class Monitor:
    """The helper's single dispatch table. Every request passes through here."""

    def __init__(
        self,
        context: str,
        entrypoints: Mapping[str, Entrypoint],
        run_command: CommandRunner | None = None,
        audit: AuditLog | None = None,
        peer: dict | None = None,
    ) -> None:
        self.context = context
        self._entrypoints = MappingProxyType(dict(entrypoints))
        self._run_command = run_command
        self._audit = audit or AuditLog()
        self._peer = peer or {}
        self._operations: Mapping[str, Callable[[Request], Any]] = MappingProxyType(
            {
                OP_PING: self._op_ping,
                OP_CALL: self._op_call,
                OP_EXEC: self._op_exec,
            }
        )

    def dispatch(self, request: Request) -> tuple[bool, Any]:
        """Run one request; never raises. Returns (ok, result-or-error-triple)."""
        start = time.monotonic()
        operation = self._operations.get(request.op)
        try:
            if operation is None:  # the protocol layer already refuses these
                raise DeniedError(f"unknown operation {request.op!r}")
            result = operation(request)
            try:
                check_value(result)
            except ProtocolError as exc:
                raise CrossingError(
                    f"result of {request.name!r} cannot cross the channel: {exc}", "result"
                ) from None
        except BaseException as exc:
            if not isinstance(exc, Exception):
                # sys.exit() or argparse in an entrypoint must not kill the
                # worker thread (the caller would wait for a reply forever).
                exc = RuntimeError(f"entrypoint raised {type(exc).__name__}: {exc}")
            denied = isinstance(exc, DeniedError)
            self._record(request, "deny" if denied else "error", start, exc)
            if not isinstance(exc, PrivsepError) and not denied:
                log.warning("%s raised %s: %s", request.name, type(exc).__name__, exc)
            return False, exception_to_wire(exc)
        if request.op != OP_PING and self._audit.wants("allow"):
            self._record(request, "allow", start, None)
        return True, result

    def _record(self, request: Request, decision: str, start: float, exc: Exception | None) -> None:
        fields = {
            "context": self.context,
            "decision": decision,
            "op": request.op,
            "name": request.args[0] if request.op == OP_EXEC and request.args else request.name,
            "args": summarize([request.args, request.kwargs] if request.kwargs else request.args),
            "duration_ms": round((time.monotonic() - start) * 1000, 3),
            **self._peer,
        }
        if exc is not None:
            fields["error"] = f"{type(exc).__name__}: {exc}"
        self._audit.record(**fields)

    # -- operations --------------------------------------------------------

    def _op_ping(self, request: Request) -> Any:
        return "pong"

    def _op_call(self, request: Request) -> Any:
        entrypoint = self._entrypoints.get(request.name)
        if entrypoint is None:
            raise UnknownFunctionError(
                f"context {self.context!r} has no entrypoint named {request.name!r}"
            )
        bound = entrypoint.check(request.args, request.kwargs)
        return entrypoint.func(*bound.args, **bound.kwargs)

    def _op_exec(self, request: Request) -> Any:
        if self._run_command is None:
            raise DeniedError(f"context {self.context!r} allows no commands")
        argv = request.args
        if not argv or not all(isinstance(a, str) for a in argv):
            raise DeniedError("command must be a non-empty list of strings")
        return self._run_command(argv, request.kwargs)


# ------------------------------------------------------------------ fork mode


class _ForwardHandler(logging.Handler):
    """Sends helper log records to the client as ``log`` frames."""

    def __init__(self, server: Any, protocol: ServerProtocol) -> None:
        super().__init__()
        self._server = server
        self._protocol = protocol

    def emit(self, record: logging.LogRecord) -> None:
        try:
            frame = self._protocol.log(record.levelno, record.name, record.getMessage())
            self._server.send(frame)
        except Exception:  # a log line must never take the helper down
            pass


@dataclass(frozen=True)
class HelperSpec:
    """Everything a helper is fixed to at start."""

    context: str
    scope: Any  # privsepd.scoping.Scope
    limits: Limits = Limits()
    max_workers: int = 8
    log_level: int = logging.INFO
    handshake_timeout: float = 10.0  # the whole handshake, from serving start
    frame_timeout: float = 10.0  # a frame once begun


class HelperProcess:
    """A forked helper: its pid and the service's end of the socket."""

    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid = pid
        self.sock = sock
        self.exit_status: int | None = None

    @classmethod
    def fork(
        cls, spec: HelperSpec, monitor_factory: Callable[[], Monitor], audit: AuditLog
    ) -> HelperProcess:
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        # Objects that exist now are shared copy-on-write with the helper;
        # freezing them keeps the collector from touching (and so copying)
        # those pages in either process.
        gc.freeze()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child, reported via the socket
            status = 70
            try:
                parent_sock.close()
                status = _helper_main(child_sock, spec, monitor_factory, audit)
            finally:
                os._exit(status)
        gc.unfreeze()
        child_sock.close()
        return cls(pid, parent_sock)

    def poll(self, wait: float = 0.0) -> int | None:
        """Reap the helper if it has exited (waiting up to ``wait`` seconds)."""
        if self.exit_status is not None:
            return self.exit_status
        deadline = time.monotonic() + wait
        while True:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self.exit_status = -1
                return self.exit_status
            if pid:
                self.exit_status = status
                return status
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.005)

    def describe_exit(self) -> str:
        status = self.exit_status
        if status is None:
            return f"helper pid {self.pid} still running"
        if status == -1:
            return f"helper pid {self.pid} exited"
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            return f"helper pid {self.pid} killed by {signal.Signals(sig).name}"
        return f"helper pid {self.pid} exited with status {os.WEXITSTATUS(status)}"

    def stop(self, timeout: float = 1.0) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
        if self.poll(timeout) is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.poll(timeout)


def _helper_main(
    sock: socket.socket,
    spec: HelperSpec,
    monitor_factory: Callable[[], Monitor],
    audit: AuditLog,
    stats: Any = None,
) -> int:
    """Scope this freshly forked process, then serve. Returns the exit status."""
    # Everything the helper will import, before scoping: afterwards the
    # interpreter's own files may be out of reach (another uid, Landlock).
    from privsepd.channel import server as _server  # noqa: F401
    from privsepd.helper import memory  # noqa: F401
    from privsepd.helper.scoping import enter_scope

    protocol = ServerProtocol(spec.context, spec.limits)
    # Signals: the service's handlers make no sense here; the helper ends on
    # EOF or PR_SET_PDEATHSIG, and SIGINT from a terminal must not leave a
    # traceback in the middle of a privileged call.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    try:
        # The service's working directory is none of the helper's business
        # (and may be somewhere the helper should not hold open): start from /.
        os.chdir("/")
        monitor = monitor_factory()
        enter_scope(spec.scope, keep_fds=[sock.fileno(), *audit.fds()])
    except Exception as exc:
        reason = f"helper for context {spec.context!r} refused to serve: {exc}"
        if not isinstance(exc, (ScopingError, ConstraintError)):
            reason = f"{reason} ({type(exc).__name__})"
        audit.record(context=spec.context, decision="fatal", error=reason)
        try:
            sock.sendall(protocol.reject(reason))
        except OSError:
            pass
        return 70
    server = _make_server(sock, protocol, monitor, spec, audit, stats)
    # SIGTERM drains: calls already read finish and answer, then the helper
    # exits (the daemon's stop and idle eviction; a client's next write
    # fails at once, so it knows that call never arrived).
    signal.signal(signal.SIGTERM, lambda *_: server.drain())
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(_ForwardHandler(server, protocol))
    root.setLevel(spec.log_level)
    server.serve_forever()
    return 0


def _make_server(sock, protocol, monitor, spec, audit, stats=None):
    from privsepd.channel.server import HelperServer
    from privsepd.helper import memory

    def on_violation(reason: str) -> None:
        audit.record(context=spec.context, decision="protocol-violation", error=reason)

    memory.configure()
    return HelperServer(
        sock,
        protocol,
        monitor.dispatch,
        spec.max_workers,
        on_violation,
        handshake_timeout=spec.handshake_timeout,
        frame_timeout=spec.frame_timeout,
        stats=stats,
        on_large=memory.release,
    )
