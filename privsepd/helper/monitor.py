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

from privsepd.audit import AuditLog, RecordTemplate
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
    AuditError,
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
        # When every parameter is a plain positional one, a call that passes
        # each of them positionally binds without inspect (a few us per call).
        plain = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        positional = None
        if all(p.kind in plain for p in sig.parameters.values()):
            positional = tuple(sig.parameters)
        object.__setattr__(self, "_positional", positional)

    def bind_checked(self, args: list, kwargs: dict) -> tuple[Any, dict]:
        """:meth:`check`, as the arguments and keywords to call the function with."""
        positional = self._positional  # type: ignore[attr-defined]
        if positional is not None and not kwargs and len(args) == len(positional):
            # What signature.bind gives here: the arguments in parameter
            # order, each checked in that order, as check() does.
            constraints = self.constraints
            if constraints:
                for arg, value in zip(positional, args):
                    constraint = constraints.get(arg)
                    if constraint is not None:
                        constraint.check(arg, value)
            return args, {}
        bound = self.check(args, kwargs)
        return bound.args, bound.kwargs

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


class _Note:
    """What one dispatch has written to the audit log so far."""

    __slots__ = ("allowed", "delegated")

    def __init__(self) -> None:
        self.allowed = False  # the "allow" record is written: the operation may act
        self.delegated = False  # the command runner records this request itself


class Monitor:
    """The helper's single dispatch table. Every request passes through here.

    Invariant (fuzzed in tests/fuzz/test_dispatch_fuzz.py): :meth:`dispatch`
    never raises, whatever the request holds; every request gets a reply
    and at least one audit record; an operation acts only after its "allow"
    record was written, and is refused when that write fails.
    """

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
        self._peer = dict(peer or {})
        # Per entrypoint name: its "allow" record with the constant fields
        # encoded once (names come from the frozen table: bounded).
        self._templates: dict[str, RecordTemplate] = {}
        self._share_peer()
        self._operations: Mapping[str, Callable[[Request, float, _Note], Any]] = MappingProxyType(
            {
                OP_PING: self._op_ping,
                OP_CALL: self._op_call,
                OP_EXEC: self._op_exec,
            }
        )

    @property
    def peer(self) -> dict:
        """Peer fields (``peer_pid``, ``peer_uid``, ``peer_gid``) put in every record."""
        return dict(self._peer)

    def bind_peer(self, peer: Mapping[str, Any]) -> None:
        """Set the peer fields once the helper knows who it serves (before serving)."""
        if not self._peer:
            self._peer = dict(peer)
            self._templates = {}
            self._share_peer()

    def _share_peer(self) -> None:
        """A runner that writes its own command records names the same peer."""
        if self._peer and isinstance(getattr(self._run_command, "peer", None), dict):
            self._run_command.peer = dict(self._peer)  # type: ignore[union-attr]

    def dispatch(self, request: Request) -> tuple[bool, Any]:
        """Run one request; never raises. Returns (ok, result-or-error-triple)."""
        try:
            return self._dispatch(request)
        except BaseException as exc:  # a bug in the checks themselves: still answer
            reason = f"helper failed to handle the request: {type(exc).__name__}: {_text(exc)}"
            try:
                self._write(request, "error", time.monotonic(), reason)
            except BaseException:
                pass
            return False, ("RuntimeError", reason[:1024], None)

    def _dispatch(self, request: Request) -> tuple[bool, Any]:
        start = time.monotonic()
        note = _Note()
        try:
            op = request.op
            operation = self._operations.get(op) if type(op) is str else None
            if operation is None:  # the protocol layer already refuses these
                raise DeniedError(f"unknown operation {_short(op)}")
            result = operation(request, start, note)
            try:
                check_value(result)
            except ProtocolError as exc:
                raise CrossingError(
                    f"result of {_short(request.name)} cannot cross the channel: {exc}", "result"
                ) from None
        except BaseException as exc:
            if not isinstance(exc, Exception):
                # sys.exit() or argparse in an entrypoint must not kill the
                # worker thread (the caller would wait for a reply forever).
                exc = RuntimeError(f"entrypoint raised {type(exc).__name__}: {_text(exc)}")
            denied = isinstance(exc, DeniedError)
            if not note.delegated:
                decision = "deny" if denied and not note.allowed else "error"
                self._record(request, decision, start, exc)
            if not isinstance(exc, PrivsepError) and not denied:
                name = _short(request.name)
                log.warning("%s raised %s: %s", name, type(exc).__name__, _text(exc))
            return False, _to_wire(exc)
        return True, result

    def _allow(self, request: Request, start: float, note: _Note) -> None:
        """Record the decision before acting; a record that cannot be written refuses the call."""
        if self._audit.wants("allow"):
            try:
                if request.op == OP_CALL:
                    self._audit.record_from(
                        self._allow_template(request.name), request.args, request.kwargs
                    )
                else:
                    self._write(request, "allow", start, None)
            except AuditError as exc:
                raise DeniedError(f"refused: {exc}") from None
        note.allowed = True

    def _allow_template(self, name: str) -> RecordTemplate:
        """The "allow" record of a call to entrypoint ``name``: what :meth:`_write` writes."""
        template = self._templates.get(name)
        if template is None:
            before = {"context": self.context, "decision": "allow", "op": OP_CALL, "name": name}
            template = self._templates[name] = RecordTemplate(before, self._peer)
        return template

    def _record(self, request: Request, decision: str, start: float, exc: Exception) -> None:
        """A denial or error record; its own failure is logged, never raised."""
        try:
            self._write(request, decision, start, f"{type(exc).__name__}: {_text(exc)}")
        except AuditError as err:
            log.error("%s", err)

    def _write(self, request: Request, decision: str, start: float, error: str | None) -> None:
        fields: dict[str, Any] = {"context": self.context, "decision": decision, "op": request.op}
        args, kwargs = request.args, request.kwargs
        if request.op == OP_EXEC:
            if type(args) is list and args and all(type(a) is str for a in args):
                fields["argv"] = args
            else:
                fields["args"] = args
        else:
            fields["name"] = request.name
            fields["args"] = args
        if kwargs:
            fields["kwargs"] = kwargs
        if decision != "allow":
            fields["duration_ms"] = round((time.monotonic() - start) * 1000, 3)
        if error is not None:
            fields["error"] = error
        fields.update(self._peer)
        self._audit.record(**fields)

    # -- operations --------------------------------------------------------

    def _op_ping(self, request: Request, start: float, note: _Note) -> Any:
        self._allow(request, start, note)
        return "pong"

    def _op_call(self, request: Request, start: float, note: _Note) -> Any:
        name = request.name
        entrypoint = self._entrypoints.get(name) if type(name) is str else None
        if entrypoint is None:
            raise UnknownFunctionError(
                f"context {self.context!r} has no entrypoint named {_short(name)}"
            )
        args, kwargs = request.args, request.kwargs
        if type(args) is not list:
            raise DeniedError(f"{name}: arguments must be a list, not {type(args).__name__}")
        if type(kwargs) is not dict or not all(type(k) is str for k in kwargs):
            raise DeniedError(f"{name}: keyword arguments must be a map with str keys")
        call_args, call_kwargs = entrypoint.bind_checked(args, kwargs)
        self._allow(request, start, note)
        return entrypoint.func(*call_args, **call_kwargs)

    def _op_exec(self, request: Request, start: float, note: _Note) -> Any:
        if self._run_command is None:
            raise DeniedError(f"context {self.context!r} allows no commands")
        argv, options = request.args, request.kwargs
        if type(argv) is not list or not argv or not all(type(a) is str for a in argv):
            raise DeniedError("command must be a non-empty list of strings")
        if type(options) is not dict or not all(type(k) is str for k in options):
            raise DeniedError("command options must be a map with str keys")
        if getattr(self._run_command, "records_decisions", False) and (
            getattr(self._run_command, "audit", None) is self._audit
        ):
            # The runner knows the rule, user and capabilities: it writes the
            # decision (before running) and the outcome to this same sink.
            note.delegated = True
        else:
            self._allow(request, start, note)
        return self._run_command(argv, options)


def _text(exc: BaseException) -> str:
    """str(exc), bounded, even for an exception whose __str__ raises."""
    try:
        text = str(exc)
    except Exception:
        text = f"<{type(exc).__name__} with an unprintable message>"
    return text if len(text) <= 4096 else text[:4096] + f"...[+{len(text) - 4096} chars]"


def _short(value: Any, limit: int = 200) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _to_wire(exc: Exception) -> tuple:
    """exception_to_wire, bounded, and never raising (a hostile __str__, odd errno)."""
    try:
        name, message, errno, *detail = exception_to_wire(exc)
    except Exception:
        return type(exc).__name__, _text(exc), None
    if type(errno) is not int:
        errno = None
    if len(message) > 65536:
        message = message[:65536] + "..."
    return (name, message, errno, *detail)


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


def preload() -> None:
    """Import and bind, in the long-lived parent, what every helper needs at start.

    A module the parent has imported is in each forked helper for free; one
    the helper imports itself costs every helper again (fork mode: each
    start; daemon mode: each connection). Left to the helper, these took
    ~35 ms of a ~45 ms start (cffi's cdef for helper.memory alone ~18 ms; compiling
    helper.execute for scrub_environment ~8 ms).
    """
    from privsepd import paths
    from privsepd.channel import peer, server  # noqa: F401
    from privsepd.helper import execute, memory, process, scoping, spawn  # noqa: F401

    paths.warm_up()


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
        preload()
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        # Objects that exist now are shared copy-on-write with the helper;
        # freezing them keeps the collector from touching (and so copying)
        # those pages in either process.
        if hasattr(gc, "freeze"):  # CPython only; PyPy's collector has no such knob
            gc.freeze()
        # The helper must die with this process: name it before the fork, so
        # that a parent dying at once cannot leave the helper serving.
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child, reported via the socket
            status = 70
            try:
                parent_sock.close()
                status = _helper_main(child_sock, spec, monitor_factory, audit, parent=parent)
            finally:
                os._exit(status)
        if hasattr(gc, "unfreeze"):
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
    parent: int | None = None,
    stats: Any = None,
) -> int:
    """Scope this freshly forked process, then serve. Returns the exit status.

    ``parent`` is the pid the helper must die with (default: its parent now).
    """
    # Everything the helper will import, before scoping: afterwards the
    # interpreter's own files may be out of reach (another uid, Landlock).
    from privsepd.channel import server as _server  # noqa: F401
    from privsepd.channel.peer import peer_credentials
    from privsepd.helper import memory, spawn  # noqa: F401
    from privsepd.helper.process import scrub_environment
    from privsepd.helper.scoping import enter_scope

    protocol = ServerProtocol(spec.context, spec.limits)
    # Signals: the service's handlers make no sense here; the helper ends on
    # EOF or PR_SET_PDEATHSIG, and SIGINT from a terminal must not leave a
    # traceback in the middle of a privileged call.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    peer: dict = {}
    try:
        # Before the scrub below: python-prctl's set_proctitle reuses the
        # space of the original environment strings, which it must still find.
        _set_title(spec)
        # The service's environment (LD_PRELOAD, PYTHONPATH, BASH_ENV...) must
        # not reach what entrypoints start: keep only what a command gets.
        scrub_environment(spec.scope.uid if spec.scope.uid is not None else os.getuid())
        # Everything the helper runs after scoping is imported now: under
        # Landlock (landlock=, files=) it can no longer read Python's files.
        import privsepd.channel.server  # noqa: F401
        from privsepd import paths

        paths.warm_up()  # PathUnder.open() in an entrypoint needs ctypes bound

        # The service's working directory is none of the helper's business
        # (and may be somewhere the helper should not hold open): start from /.
        os.chdir("/")
        peer = peer_credentials(sock).fields()
        monitor = monitor_factory()
        monitor.bind_peer(peer)
        peer = monitor.peer
        enter_scope(spec.scope, keep_fds=[sock.fileno(), *audit.fds()], parent=parent)
    except Exception as exc:
        reason = f"helper for context {spec.context!r} refused to serve: {exc}"
        if not isinstance(exc, (ScopingError, ConstraintError)):
            reason = f"{reason} ({type(exc).__name__})"
        try:
            audit.record(context=spec.context, decision="fatal", error=reason, **peer)
        except AuditError as err:
            reason = f"{reason}; {err}"
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


def _set_title(spec: HelperSpec) -> None:
    """``ps`` shows ``privsepd-helper: CONTEXT [CAPS]`` (before any sandbox forbids prctl)."""
    from privsepd.helper.procinfo import helper_title, set_title

    try:
        set_title(helper_title(spec.context, spec.scope.capabilities))
    except OSError:
        pass  # cosmetic: never a reason to refuse to serve


def exec_parallel() -> int:
    """Fast commands the helper's server lets run at once.

    Libc posix_spawn releases the GIL while a child starts, so a command's
    worker is mostly off-CPU: more of them keep the CPUs busy. The other
    spawn paths hold the GIL until exec: one per CPU (at least two).
    """
    from privsepd.channel.server import EXEC_PARALLEL, EXEC_PARALLEL_GIL_FREE
    from privsepd.helper import spawn

    return EXEC_PARALLEL_GIL_FREE if spawn.AVAILABLE else EXEC_PARALLEL


def _make_server(sock, protocol, monitor, spec, audit, stats=None):
    from privsepd.channel.server import HelperServer
    from privsepd.helper import memory

    peer = monitor.peer

    def on_violation(reason: str) -> None:
        # Who broke the protocol matters as much as how.
        try:
            audit.record(context=spec.context, decision="protocol-violation", error=reason, **peer)
        except AuditError as err:
            log.error("%s", err)

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
        exec_parallel=exec_parallel(),
    )
