"""The library front end: ``Context`` and its ``@entrypoint`` decorator.

A service declares what its helper may hold (capabilities, user, sandbox)
and which functions it may run, then calls those functions as usual; the
calls travel to the helper, are checked there, and run there.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from privsepd.audit import AuditLog
from privsepd.channel.client import ClientChannel, NotSentError
from privsepd.channel.protocol import OP_CALL, OP_EXEC, OP_PING, ClientProtocol, Limits
from privsepd.errors import HelperDiedError, PrivsepError
from privsepd.files import Files
from privsepd.helper.monitor import Entrypoint, Monitor
from privsepd.modes import HelperLink, StartMode, mode_for

F = TypeVar("F", bound=Callable[..., Any])

# True inside a helper process: entrypoints then run locally instead of
# sending themselves to a helper (so one entrypoint may call another).
_in_helper = False


class Context:
    """A named privilege scope and the functions that may run inside it."""

    def __init__(
        self,
        name: str,
        capabilities: Iterable[str] = (),
        *,
        user: str | None = None,
        group: str | None = None,
        stay_root: bool = False,
        umask: int = 0o077,
        timeout: float = 30.0,
        landlock: Any = None,
        seccomp_deny: Iterable[str] = (),
        files: Files | None = None,
        limits: Limits | None = None,
        max_frame: int | None = None,
        max_workers: int = 8,
        max_abandoned: int = 2,
        audit: str | None = None,
        logger: logging.Logger | None = None,
        command_runner: Callable[..., Callable[[list[Any], dict[str, Any]], Any]] | None = None,
        socket_path: str | None = None,
        helper_command: Sequence[str] | None = None,
        mode: StartMode | None = None,
    ) -> None:
        from privsepd.helper.scoping import parse_capabilities

        self.name = name
        self.capabilities = parse_capabilities(capabilities)
        self.user = user
        self.group = group
        self.stay_root = stay_root
        self.umask = umask
        self.timeout = timeout
        self.landlock = landlock
        self.seccomp_deny = tuple(seccomp_deny)
        # Files the helper may read/write despite their mode (privsepd.Files):
        # a DAC capability confined by Landlock to exactly those paths.
        self.files = _check_files(files)
        self.limits = limits or Limits()
        if max_frame is not None:
            # Both ends refuse a frame over it; in daemon and spawn mode the
            # helper takes its own from policy (context key ``max_frame``).
            self.limits = dataclasses.replace(self.limits, max_frame=int(max_frame))
        self.max_workers = max_workers
        # Timed-out calls still running in the helper, per entrypoint, before
        # new calls to it are held back (BusyError); half the helper's
        # workers in all. See privsepd.channel.client.
        self.max_abandoned = max_abandoned
        self.audit_target = audit
        self.logger = logger or logging.getLogger(f"privsepd.{name}")
        # Helper log records below this level are not sent (fork mode); a
        # log_sink, if set, receives the records instead of ``logger``.
        self.log_level = logging.INFO
        self.log_sink: Callable[[Any], None] | None = None
        self._command_runner_factory: Callable[..., Any] | None = command_runner
        # How the helper is reached (privsepd.modes): fork unless the
        # keywords ask for the daemon (socket_path) or sudo (helper_command).
        self.mode: StartMode = mode or mode_for(socket_path, helper_command)
        # False runs entrypoints in-process (unit tests of service code, like
        # oslo.privsep's set_client_mode(False)); never use it in production.
        self.client_mode = True
        self._entrypoints: dict[str, Entrypoint] = {}
        self._policy_functions: Mapping[str, Any] | None = None
        self._timeouts: dict[str, float | None] = {}
        self._lock = threading.Lock()
        self._helper: HelperLink | None = None
        self._channel: ClientChannel | None = None
        self._started_once = False

    # -- declaring ----------------------------------------------------------

    def entrypoint(
        self,
        func: F | None = None,
        /,
        *,
        timeout: float | None = None,
        strict: bool = False,
        **constraints: Any,
    ) -> Any:
        """Register ``func`` to run in the helper, with argument constraints.

        Usable bare (``@ctx.entrypoint``) or with options
        (``@ctx.entrypoint(mtu=IntRange(68, 9000), timeout=5)``). Must run
        before the helper starts: the helper's table is fixed at fork.
        """

        def register(fn: F) -> F:
            name = f"{fn.__module__}:{fn.__qualname__}"
            if self._started_once:
                raise PrivsepError(
                    f"cannot register {name}: context {self.name!r} already started its helper"
                )
            if name in self._entrypoints:
                raise PrivsepError(f"entrypoint {name} registered twice")
            entry = Entrypoint(name, fn, constraints, timeout, strict)
            self._entrypoints[name] = entry
            self._timeouts[name] = timeout

            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                if _in_helper or not self.client_mode:
                    return fn(*args, **kwargs)
                return self._call(OP_CALL, name, args, kwargs, self._timeouts.get(name))

            wrapper.privsepd_name = name  # type: ignore[attr-defined]
            wrapper.privsepd_entrypoint = entry  # type: ignore[attr-defined]
            return wrapper  # type: ignore[return-value]

        if func is not None:
            return register(func)
        return register

    @property
    def entrypoints(self) -> Mapping[str, Entrypoint]:
        return dict(self._entrypoints)

    def apply_policy(self, policy: Any) -> None:
        """Take this context's declaration from loaded, root-owned policy.

        Capabilities, identity, umask, timeout, audit sink and sandbox come
        from the policy's ``[context.NAME]``. From then on only functions the
        policy lists for this context can be called (their policy
        constraints are checked in addition to those declared in code), and
        ``execute`` runs only the policy's commands for this context.
        """
        from privsepd.errors import PolicyError
        from privsepd.helper.scoping import Landlock, parse_capabilities

        spec = policy.contexts.get(self.name)
        if spec is None:
            raise PolicyError(f"policy declares no context {self.name!r}")
        if self._helper is not None:
            raise PrivsepError(f"context {self.name!r} has a running helper; stop it first")
        self.capabilities = parse_capabilities(spec.capabilities)
        self.user, self.group, self.stay_root = spec.user, spec.group, spec.stay_root
        self.umask, self.timeout, self.audit_target = spec.umask, spec.timeout, spec.audit
        sandbox = spec.sandbox
        if sandbox.landlock_read or sandbox.landlock_write:
            self.landlock = Landlock(read=sandbox.landlock_read, write=sandbox.landlock_write)
        else:
            self.landlock = None
        self.seccomp_deny = tuple(sandbox.seccomp_deny)
        self.files = _check_files(spec.files)
        if getattr(spec, "max_frame", None):
            self.limits = dataclasses.replace(self.limits, max_frame=spec.max_frame)
        self._policy_functions = policy.functions_for(self.name)
        for name, fspec in self._policy_functions.items():
            if fspec.timeout is not None:
                self._timeouts[name] = fspec.timeout
        if policy.filters_for(self.name) and self._command_runner_factory is None:
            index = policy.index(self.name)
            self._command_runner_factory = _policy_runner(index, self.name)

    def _table(self) -> dict[str, Entrypoint]:
        """The helper's fixed function table: code entrypoints the policy allows."""
        if self._policy_functions is None:
            return dict(self._entrypoints)
        return entrypoint_table(self._entrypoints, self._policy_functions, self.logger)

    # -- lifecycle ----------------------------------------------------------

    def scope(self) -> Any:
        """The kernel scope the helper will enter (resolved now, at start)."""
        from privsepd.helper.scoping import Scope, refuse_root_identity, resolve_user

        if self.files is not None and self._command_runner_factory is not None:
            # Landlock grants no execute right to a files context: every
            # command would fail with EACCES. Say so before starting.
            from privsepd.errors import PolicyError

            raise PolicyError(
                f"context {self.name!r} declares files and commands: a helper confined "
                "to its declared files cannot execute programs; run the commands from "
                "another context"
            )

        if self.stay_root:
            uid = gid = None
            groups: tuple[int, ...] = ()
        else:
            uid, gid, groups = resolve_user(self.user, self.group)
            refuse_root_identity(self.name, self.user, self.group, uid, gid, groups)
        return Scope(
            capabilities=self.capabilities,
            uid=uid,
            gid=gid,
            groups=groups,
            umask=self.umask,
            landlock=self.landlock,
            seccomp_deny=self.seccomp_deny,
            files=self.files,
        )

    def start(self) -> None:
        """Fork and scope the helper now (instead of on the first call)."""
        with self._lock:
            if self._channel is None or self._channel.failure is not None:
                self._start_locked()

    def _start_locked(self) -> None:
        """Open a helper in this context's mode; keep it only if the handshake passes."""
        self._discard_locked()
        try:
            helper = self.mode.open(self)
        except OSError as exc:  # fork, socketpair: out of processes or descriptors
            raise HelperDiedError(f"cannot start a helper for {self.name!r}: {exc}") from None
        try:
            # The channel gets its own descriptor: it closes it only once no
            # caller is inside a send or poll on it, whoever stops the helper.
            sock = helper.sock.dup()
        except OSError as exc:
            helper.stop(timeout=1.0)
            raise HelperDiedError(f"cannot start a helper for {self.name!r}: {exc}") from None
        channel = ClientChannel(
            sock,
            self.name,
            ClientProtocol(self.name, self.limits),
            self.logger,
            self.log_sink,
            max_abandoned=self.max_abandoned,
            max_abandoned_total=max(1, self.max_workers // 2),
        )
        try:
            channel.handshake(timeout=max(self.timeout, self.mode.handshake_floor))
        except PrivsepError as exc:
            channel.close()
            helper.stop(timeout=1.0)
            # A spawned helper (sudo, privsepd helper) explains itself on
            # stderr; put that in the error rather than "connection reset".
            detail = getattr(helper, "failure_detail", None)
            if detail is not None:
                exc.args = (f"{exc}{detail()}",)
            raise
        self._helper = helper
        self._channel = channel

    def helper_monitor_factory(self, audit: AuditLog) -> Callable[[], Monitor]:
        """What a helper forked for this context builds its Monitor with.

        Fixes the function table now: entrypoints registered later are refused.
        """
        self._started_once = True
        return monitor_factory(self.name, self._table(), self._command_runner_factory, audit)

    def _discard_locked(self) -> None:
        if self._channel is not None:
            self._channel.close()
        if self._helper is not None:
            self._helper.stop()
        self._channel = None
        self._helper = None

    def stop(self) -> None:
        """Close the channel; the helper sees EOF and exits."""
        with self._lock:
            self._discard_locked()

    @property
    def helper_pid(self) -> int | None:
        helper = self._helper
        return helper.pid if helper is not None else None

    def __enter__(self) -> Context:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- calling ------------------------------------------------------------

    def _call(
        self, op: str, name: str, args: Any, kwargs: dict[str, Any], timeout: float | None = None
    ) -> Any:
        if _in_helper:
            raise PrivsepError("a helper cannot call its own context over the channel")
        for retry in (True, False):
            channel, helper = self._channel, self._helper
            if channel is None or channel.failure is not None:
                # Slow path only: (re)start under the lock. A healthy channel is
                # read without it, so concurrent callers do not queue up here.
                with self._lock:
                    if self._channel is None or self._channel.failure is not None:
                        self._start_locked()
                    channel, helper = self._channel, self._helper
            try:
                assert channel is not None  # _start_locked set it or raised
                return channel.call(op, name, args, kwargs, timeout or self.timeout)
            except NotSentError as exc:
                # The helper was gone (an idle helper killed, a daemon helper
                # drained) before any byte of this call reached it: start a
                # new helper and send the call there, once.
                if retry:
                    continue
                # (Only the text is kept: the exception holds this frame.)
                message = str(exc)
            except HelperDiedError as exc:
                message = str(exc)
            if helper is not None and helper.pid is not None and helper.poll(0.2) is not None:
                raise HelperDiedError(f"{message} ({helper.describe_exit()})") from None
            raise HelperDiedError(message) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def ping(self) -> str:
        reply: str = self._call(OP_PING, "", [], {})
        return reply

    def execute(
        self,
        argv: list[str],
        *,
        input: bytes | None = None,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
    ) -> tuple[int, bytes, bytes]:
        """Run ``argv`` in the helper after the command policy allows it."""
        kwargs: dict[str, Any] = {}
        if input is not None:
            kwargs["input"] = input
        if timeout is not None:
            kwargs["timeout"] = timeout
        if env:
            kwargs["env"] = dict(env)
        call_timeout = (timeout + 5.0) if timeout is not None else None
        rc, out, err = self._call(
            OP_EXEC, argv[0] if argv else "", list(argv), kwargs, call_timeout
        )
        return rc, out, err


def _check_files(files: Any) -> Files | None:
    """``files=`` must be a privsepd.Files (or None); an empty one means none."""
    if files is None:
        return None
    if not isinstance(files, Files):
        raise TypeError(f"files= takes privsepd.Files(read=[...], write=[...]), got {files!r}")
    return None if files.empty else files


def entrypoint_table(
    entrypoints: Mapping[str, Entrypoint],
    functions: Mapping[str, Any],
    logger: logging.Logger,
) -> dict[str, Entrypoint]:
    """Entrypoints that policy lists, each with code and policy constraints.

    Deny by default: a function registered in code but absent from policy is
    left out of the helper's table, so calling it is an unknown function.
    """
    from privsepd.errors import PolicyError

    table = {}
    for name, fspec in functions.items():
        entry = entrypoints.get(name)
        if entry is None:
            logger.warning("policy lists %s but no code registered it", name)
            continue
        constraints = dict(entry.constraints)
        for arg, constraint in fspec.constraints.items():
            mine = constraints.get(arg)
            constraints[arg] = constraint if mine is None else _Both(mine, constraint)
        try:
            table[name] = Entrypoint(
                name,
                entry.func,
                constraints,
                fspec.timeout or entry.timeout,
                strict=fspec.strict or entry.strict,
            )
        except TypeError as exc:
            source = getattr(fspec, "source", None)
            where = f" ({source.path}:{source.line})" if source is not None else ""
            raise PolicyError(f"function {name}{where}: {exc}") from None
    return table


class _Both:
    """Code and policy both constrain one argument: both must pass."""

    def __init__(self, first: Any, second: Any) -> None:
        self._checks = (first, second)

    def check(self, argument: str, value: object) -> None:
        for constraint in self._checks:
            constraint.check(argument, value)

    def describe(self) -> str:
        return " and ".join(c.describe() for c in self._checks)


def _policy_runner(
    index: Any, context: str
) -> Callable[[AuditLog], Callable[[list[Any], dict[str, Any]], Any]]:
    def factory(audit: AuditLog) -> Callable[[list[Any], dict[str, Any]], Any]:
        from privsepd.helper.execute import CommandRunner

        # The helper's own audit sink: opened before scoping, kept through it.
        return CommandRunner(index, context=context, audit=audit)

    return factory


def monitor_factory(
    name: str,
    entrypoints: Mapping[str, Entrypoint],
    runner_factory: Callable[..., Any] | None,
    audit: AuditLog,
    peer: dict[str, Any] | None = None,
) -> Callable[[], Monitor]:
    """What a freshly forked helper (any mode) calls to build its Monitor."""

    def build() -> Monitor:
        global _in_helper
        _in_helper = True
        runner = _make_runner(runner_factory, audit)
        return Monitor(name, entrypoints, runner, audit, peer)

    return build


def _make_runner(factory: Callable[..., Any] | None, audit: AuditLog) -> Any:
    """Build the helper's command runner; factories may take the audit sink."""
    if factory is None:
        return None
    try:
        wants_audit = len(inspect.signature(factory).parameters) > 0
    except (TypeError, ValueError):
        wants_audit = False
    return factory(audit) if wants_audit else factory()


def in_helper() -> bool:
    """True when running inside a helper process."""
    return _in_helper
